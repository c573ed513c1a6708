// The switch's dataplane driven packet by packet, without a network
// (docs/switch-protocol.md, "Slots, shadow sets, bitmap and rounds"): the
// sums are exact integer sums whatever is duplicated, reordered or stale;
// shadow sets alternate; jobs do not mix; overflow is flagged; bad packets
// are counted and never reach an accumulator.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/fixed_point.h"
#include "switch/dataplane.h"
#include "transports/udp/switch_protocol.h"

namespace cc {
namespace {

using swp::Header;

sockaddr_in addressOf(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(0x7f000001u);
  return a;
}

struct Answer {
  Header header;
  std::vector<uint8_t> payload;
  int port = 0;
};

// A dataplane with one or more jobs of int32 workers whose addresses are
// 127.0.0.1:(base + rank).
class Harness {
 public:
  explicit Harness(switchd::Options options = switchd::Options()) : options_(quiet(options)), plane_(options_) {}

  static switchd::Options quiet(switchd::Options options) {
    options.quiet = true;
    return options;
  }

  // Delivers one datagram from 127.0.0.1:port; returns the answers.
  std::vector<Answer> send(const std::vector<uint8_t>& bytes, int port) {
    const sockaddr_in from = addressOf(port);
    std::vector<switchd::Outgoing> out;
    plane_.handle(bytes.data(), bytes.size(), false, reinterpret_cast<const sockaddr*>(&from), sizeof(from), now_,
                  &out);
    std::vector<Answer> answers;
    for (const switchd::Outgoing& o : out) {
      Answer a;
      EXPECT_EQ(swp::parseHeader(o.data, o.bytes, &a.header), swp::ParseResult::Ok);
      a.payload.assign(o.data + swp::kHeaderBytes, o.data + o.bytes);
      a.port = ntohs(reinterpret_cast<const sockaddr_in*>(&o.to)->sin_port);
      answers.push_back(a);
    }
    plane_.sent();
    return answers;
  }

  struct Job {
    uint8_t id = 0;
    uint32_t key = 0;
    int nranks = 0;
    int base = 0;
    uint16_t window = 0;
  };

  Job admit(int nranks, int base, uint16_t window = 4, uint8_t mode = swp::makeMode(swp::kInt32, swp::kInt32),
            uint64_t nonce = 77) {
    swp::AdmitRequest request;
    request.nonce = nonce;
    request.seed = 5;
    request.timeoutMs = 1000;
    request.nranks = static_cast<uint16_t>(nranks);
    request.window = window;
    request.count = 64;
    request.mode = mode;
    for (int r = 0; r < nranks; ++r) {
      request.ranks[r].family = 4;
      request.ranks[r].port = static_cast<uint16_t>(base + r);
      const uint32_t loopback = htonl(0x7f000001u);
      std::memcpy(request.ranks[r].address, &loopback, 4);
    }
    std::vector<uint8_t> packet(swp::kHeaderBytes + swp::admitPayloadBytes(nranks));
    Header h;
    h.type = swp::kAdmit;
    h.mode = mode;
    swp::writeHeader(h, packet.data());
    swp::writeAdmit(request, packet.data() + swp::kHeaderBytes);
    const std::vector<Answer> answers = send(packet, base);
    Job job;
    if (answers.size() != 1 || answers[0].header.type != swp::kAdmitted) {
      ADD_FAILURE() << "no ADMITTED";
      return job;
    }
    swp::AdmitReply reply;
    EXPECT_TRUE(swp::readAdmitted(answers[0].payload.data(), answers[0].payload.size(), &reply));
    job.id = answers[0].header.job;
    job.key = answers[0].header.key;
    job.nranks = nranks;
    job.base = base;
    job.window = reply.window;
    return job;
  }

  // An int32 DATA packet of `values` for slot/round.
  static std::vector<uint8_t> data(const Job& job, int rank, uint16_t slot, uint32_t round,
                                   const std::vector<int32_t>& values, uint8_t flags = 0, uint8_t expCur = 120,
                                   uint64_t offset = 0) {
    Header h;
    h.type = swp::kData;
    h.flags = static_cast<uint8_t>(flags | ((round & 1u) ? swp::kFlagSet : 0));
    h.job = job.id;
    h.key = job.key;
    h.rank = static_cast<uint16_t>(rank);
    h.slot = slot;
    h.round = round;
    h.count = static_cast<uint16_t>(values.size());
    h.mode = swp::makeMode(swp::kInt32, swp::kInt32);
    h.expCur = expCur;
    h.expNext = expCur;
    h.offset = offset;
    std::vector<uint8_t> packet(swp::kHeaderBytes + 4 * values.size());
    swp::writeHeader(h, packet.data());
    if (!values.empty()) std::memcpy(packet.data() + swp::kHeaderBytes, values.data(), 4 * values.size());
    return packet;
  }

  static std::vector<int32_t> sums(const Answer& a) {
    std::vector<int32_t> v(a.payload.size() / 4);
    if (!v.empty()) std::memcpy(v.data(), a.payload.data(), a.payload.size());
    return v;
  }

  switchd::Dataplane& plane() { return plane_; }
  const switchd::Counters& counters() const { return plane_.counters(); }
  void advance(double seconds) { now_ += seconds; }
  double now() const { return now_; }

 private:
  switchd::Options options_;
  switchd::Dataplane plane_;
  double now_ = 100.0;
};

std::vector<int32_t> valuesOf(int rank, uint32_t round, size_t count = 32) {
  std::vector<int32_t> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = static_cast<int32_t>((rank + 1) * 1000 + round * 7 + i) * (i % 2 ? -1 : 1);
  return v;
}

std::vector<int32_t> expectedSum(int nranks, uint32_t round, size_t count = 32) {
  std::vector<int32_t> sum(count, 0);
  for (int r = 0; r < nranks; ++r) {
    const std::vector<int32_t> v = valuesOf(r, round, count);
    for (size_t i = 0; i < count; ++i) sum[i] += v[i];
  }
  return sum;
}

TEST(SwitchDataplane, SumsExactlyAndSendsTheSameBytesToEveryRank) {
  Harness h;
  const Harness::Job job = h.admit(3, 2000);
  ASSERT_NE(job.id, 0);
  std::vector<Answer> last;
  for (int r = 0; r < 3; ++r) {
    last = h.send(Harness::data(job, r, 0, 0, valuesOf(r, 0)), job.base + r);
    if (r < 2) {
      EXPECT_TRUE(last.empty());
    }
  }
  ASSERT_EQ(last.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(last[r].port, job.base + r);
    EXPECT_EQ(last[r].header.type, swp::kResult);
    EXPECT_EQ(last[r].payload, last[0].payload);
  }
  EXPECT_EQ(Harness::sums(last[0]), expectedSum(3, 0));
  EXPECT_EQ(h.counters().rounds, 1u);
}

TEST(SwitchDataplane, TheLastPacketOfACallMayEndMidBlock) {
  Harness h;
  const Harness::Job job = h.admit(2, 2050);
  h.send(Harness::data(job, 0, 3, 0, valuesOf(0, 0, 5), 0, 120, 96), 2050);
  const std::vector<Answer> a = h.send(Harness::data(job, 1, 3, 0, valuesOf(1, 0, 5), 0, 120, 96), 2051);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].header.count, 5);
  EXPECT_EQ(a[0].header.offset, 96u);
  EXPECT_EQ(Harness::sums(a[0]), expectedSum(2, 0, 5));
}

TEST(SwitchDataplane, DuplicatesAreNotCountedTwiceAndRetransmissionsGetStatus) {
  Harness h;
  const Harness::Job job = h.admit(2, 2100);
  EXPECT_TRUE(h.send(Harness::data(job, 0, 1, 0, valuesOf(0, 0)), 2100).empty());
  EXPECT_TRUE(h.send(Harness::data(job, 0, 1, 0, valuesOf(0, 0)), 2100).empty());
  const std::vector<Answer> status = h.send(Harness::data(job, 0, 1, 0, valuesOf(0, 0), swp::kFlagRetx), 2100);
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].header.type, swp::kStatus);
  uint64_t bitmap = 0;
  uint16_t n = 0;
  ASSERT_TRUE(swp::readStatus(status[0].payload.data(), status[0].payload.size(), &bitmap, &n));
  EXPECT_EQ(bitmap, 1u);  // rank 0 is in, rank 1 missing
  EXPECT_EQ(n, 2);
  EXPECT_EQ(h.counters().duplicates, 2u);
  const std::vector<Answer> result = h.send(Harness::data(job, 1, 1, 0, valuesOf(1, 0)), 2101);
  ASSERT_EQ(result.size(), 2u);
  EXPECT_EQ(Harness::sums(result[0]), expectedSum(2, 0));
  // A lost result: the retransmission is answered from the stored copy,
  // the same bytes, to that rank only.
  const std::vector<Answer> again = h.send(Harness::data(job, 1, 1, 0, valuesOf(1, 0), swp::kFlagRetx), 2101);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].port, 2101);
  EXPECT_EQ(again[0].payload, result[0].payload);
  EXPECT_EQ(h.counters().resent, 1u);
  EXPECT_EQ(h.counters().values, 64u);  // two contributions of 32, nothing more
}

TEST(SwitchDataplane, ReorderedRanksAndSlotsSumTheSame) {
  Harness h;
  const Harness::Job job = h.admit(3, 2200);
  // Slots 0..3, ranks arriving in a different order in every slot.
  std::vector<std::vector<int32_t>> results(4);
  const int orders[4][3] = {{2, 0, 1}, {1, 2, 0}, {0, 1, 2}, {2, 1, 0}};
  for (int step = 0; step < 3; ++step) {
    for (int slot = 3; slot >= 0; --slot) {
      const int r = orders[slot][step];
      const std::vector<Answer> a = h.send(Harness::data(job, r, static_cast<uint16_t>(slot), 0, valuesOf(r, 0)),
                                           job.base + r);
      if (step == 2) {
        ASSERT_EQ(a.size(), 3u);
        results[slot] = Harness::sums(a[0]);
      }
    }
  }
  for (int slot = 0; slot < 4; ++slot) EXPECT_EQ(results[slot], expectedSum(3, 0)) << "slot " << slot;
}

TEST(SwitchDataplane, ShadowSetsAlternateAndStaleRoundsAreDropped) {
  Harness h;
  const Harness::Job job = h.admit(2, 2300);
  // Round 0 of slot 2 completes.
  h.send(Harness::data(job, 0, 2, 0, valuesOf(0, 0)), 2300);
  const std::vector<Answer> r0 = h.send(Harness::data(job, 1, 2, 0, valuesOf(1, 0)), 2301);
  ASSERT_EQ(r0.size(), 2u);
  // Round 1 starts in the other set while round 0's result stays readable.
  EXPECT_TRUE(h.send(Harness::data(job, 0, 2, 1, valuesOf(0, 1)), 2300).empty());
  const std::vector<Answer> late = h.send(Harness::data(job, 1, 2, 0, valuesOf(1, 0), swp::kFlagRetx), 2301);
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].header.round, 0u);
  EXPECT_EQ(late[0].payload, r0[0].payload);
  // Round 2 cannot start before round 1 completes (early: it would
  // overwrite round 0's set while a worker may still lack round 0).
  EXPECT_TRUE(h.send(Harness::data(job, 0, 2, 2, valuesOf(0, 2)), 2300).empty());
  EXPECT_EQ(h.counters().early, 1u);
  const std::vector<Answer> r1 = h.send(Harness::data(job, 1, 2, 1, valuesOf(1, 1)), 2301);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(Harness::sums(r1[0]), expectedSum(2, 1));
  EXPECT_EQ(r1[0].header.flags & swp::kFlagSet, swp::kFlagSet);
  // Round 2 reuses round 0's set; a stale retransmission of round 0 is
  // then dropped, not added to round 2.
  EXPECT_TRUE(h.send(Harness::data(job, 0, 2, 2, valuesOf(0, 2)), 2300).empty());
  EXPECT_TRUE(h.send(Harness::data(job, 1, 2, 0, valuesOf(1, 0), swp::kFlagRetx), 2301).empty());
  EXPECT_EQ(h.counters().stale, 1u);
  const std::vector<Answer> r2 = h.send(Harness::data(job, 1, 2, 2, valuesOf(1, 2)), 2301);
  ASSERT_EQ(r2.size(), 2u);
  EXPECT_EQ(Harness::sums(r2[0]), expectedSum(2, 2));
  EXPECT_EQ(r2[0].header.flags & swp::kFlagSet, 0);
  // A SET bit that disagrees with the round is malformed.
  std::vector<uint8_t> wrongSet = Harness::data(job, 0, 2, 3, valuesOf(0, 3));
  wrongSet[4] &= static_cast<uint8_t>(~swp::kFlagSet);
  const uint64_t malformed = h.counters().malformed;
  EXPECT_TRUE(h.send(wrongSet, 2300).empty());
  EXPECT_EQ(h.counters().malformed, malformed + 1);
}

TEST(SwitchDataplane, TwoJobsDoNotMix) {
  Harness h;
  const Harness::Job a = h.admit(2, 2400, 4, swp::makeMode(swp::kInt32, swp::kInt32), 1);
  const Harness::Job b = h.admit(2, 2500, 4, swp::makeMode(swp::kInt32, swp::kInt32), 2);
  ASSERT_NE(a.id, b.id);
  EXPECT_EQ(h.plane().jobs(), 2);
  EXPECT_EQ(h.plane().slotsFree(), 512 - 8);
  h.send(Harness::data(a, 0, 0, 0, valuesOf(0, 0)), 2400);
  h.send(Harness::data(b, 0, 0, 0, valuesOf(5, 0)), 2500);
  // Job a's key from job b's rank: foreign, dropped.
  Harness::Job forged = a;
  forged.key = b.key;
  EXPECT_TRUE(h.send(Harness::data(forged, 1, 0, 0, valuesOf(9, 0)), 2401).empty());
  EXPECT_TRUE(h.send(Harness::data(a, 1, 0, 0, valuesOf(9, 0)), 2501).empty());  // right key, wrong sender
  EXPECT_EQ(h.counters().foreignJob, 2u);
  const std::vector<Answer> ra = h.send(Harness::data(a, 1, 0, 0, valuesOf(1, 0)), 2401);
  const std::vector<Answer> rb = h.send(Harness::data(b, 1, 0, 0, valuesOf(6, 0)), 2501);
  ASSERT_EQ(ra.size(), 2u);
  ASSERT_EQ(rb.size(), 2u);
  EXPECT_EQ(Harness::sums(ra[0]), expectedSum(2, 0));
  std::vector<int32_t> sumB = valuesOf(5, 0);
  const std::vector<int32_t> six = valuesOf(6, 0);
  for (size_t i = 0; i < sumB.size(); ++i) sumB[i] += six[i];
  EXPECT_EQ(Harness::sums(rb[0]), sumB);
  EXPECT_EQ(ra[0].port, 2400);
  EXPECT_EQ(rb[0].port, 2500);
}

TEST(SwitchDataplane, OverflowIsFlaggedNeverWrapped) {
  Harness h;
  const Harness::Job job = h.admit(4, 2600);
  const int32_t limit = 1 << fixedMaxShift(4);
  std::vector<int32_t> big(32, limit);
  big[3] = limit + 1;  // outside the agreed scale
  for (int r = 0; r < 3; ++r) h.send(Harness::data(job, r, 0, 0, std::vector<int32_t>(32, limit)), job.base + r);
  const std::vector<Answer> a = h.send(Harness::data(job, 3, 0, 0, big), job.base + 3);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_NE(a[0].header.flags & swp::kFlagOverflow, 0);
  EXPECT_EQ(h.counters().overflow, 1u);
  // Four contributions at the limit sum without wrapping.
  for (int32_t s : Harness::sums(a[0])) EXPECT_GT(s, 0);

  // nat: a code above B + 1 is outside the scale too.
  const Harness::Job nat = h.admit(2, 2700, 4, swp::makeMode(swp::kNat, swp::kNat), 9);
  std::vector<uint8_t> packet(swp::kHeaderBytes + 36, 0);
  Header d;
  d.type = swp::kData;
  d.job = nat.id;
  d.key = nat.key;
  d.count = 32;
  d.mode = swp::makeMode(swp::kNat, swp::kNat);
  d.expCur = 120;
  for (int r = 0; r < 2; ++r) {
    d.rank = static_cast<uint16_t>(r);
    swp::writeHeader(d, packet.data());
    packet[swp::kHeaderBytes + 4] = r == 0 ? 121 : 122;  // 122 > B + 1
    const std::vector<Answer> res = h.send(packet, 2700 + r);
    if (r == 1) {
      ASSERT_EQ(res.size(), 2u);
      EXPECT_NE(res[0].header.flags & swp::kFlagOverflow, 0);
    }
  }
}

TEST(SwitchDataplane, MismatchedPacketsOfOneRoundAreFlagged) {
  Harness h;
  const Harness::Job job = h.admit(2, 2800);
  h.send(Harness::data(job, 0, 0, 0, valuesOf(0, 0), 0, 120), 2800);
  const std::vector<Answer> a = h.send(Harness::data(job, 1, 0, 0, valuesOf(1, 0), 0, 121), 2801);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_NE(a[0].header.flags & swp::kFlagMismatch, 0);
}

TEST(SwitchDataplane, JobsEndOnLeaveAbortAndStallAndFreeTheirSlots) {
  Harness h;
  const Harness::Job job = h.admit(2, 2900, 16);
  EXPECT_EQ(h.plane().slotsFree(), 512 - 16);
  Header leave;
  leave.type = swp::kLeave;
  leave.job = job.id;
  leave.key = job.key;
  std::vector<uint8_t> packet(swp::kHeaderBytes);
  for (int r = 0; r < 2; ++r) {
    leave.rank = static_cast<uint16_t>(r);
    swp::writeHeader(leave, packet.data());
    const std::vector<Answer> a = h.send(packet, 2900 + r);
    ASSERT_EQ(a.size(), 1u);
    EXPECT_EQ(a[0].header.type, swp::kLeft);
  }
  EXPECT_EQ(h.plane().jobs(), 0);
  EXPECT_EQ(h.plane().slotsFree(), 512);
  // A late packet of the ended job hears GONE with the reason.
  const std::vector<Answer> gone = h.send(Harness::data(job, 0, 0, 0, valuesOf(0, 0)), 2900);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].header.type, swp::kGone);

  // A stalled round: rank 1 never sends; the job ends after 2 x its timeout.
  const Harness::Job stalled = h.admit(2, 3000, 8, swp::makeMode(swp::kInt32, swp::kInt32), 11);
  h.send(Harness::data(stalled, 0, 0, 0, valuesOf(0, 0)), 3000);
  h.advance(1.5);
  h.plane().tick(h.now());
  EXPECT_EQ(h.plane().jobs(), 1);
  h.advance(1.0);
  h.plane().tick(h.now());
  EXPECT_EQ(h.plane().jobs(), 0);
  EXPECT_EQ(h.counters().jobsTimedOut, 1u);
  const std::vector<Answer> why = h.send(Harness::data(stalled, 0, 0, 0, valuesOf(0, 0)), 3000);
  ASSERT_EQ(why.size(), 1u);
  const std::string reason(why[0].payload.begin(), why[0].payload.end());
  EXPECT_NE(reason.find("no contribution from rank(s) 1"), std::string::npos) << reason;

  // An ABORT ends the job at once.
  const Harness::Job aborted = h.admit(2, 3100, 8, swp::makeMode(swp::kInt32, swp::kInt32), 12);
  Header abort;
  abort.type = swp::kAbort;
  abort.job = aborted.id;
  abort.key = aborted.key;
  abort.rank = 1;
  std::vector<uint8_t> abortPacket(swp::kHeaderBytes + 4);
  swp::writeHeader(abort, abortPacket.data());
  std::memcpy(abortPacket.data() + swp::kHeaderBytes, "oops", 4);
  h.send(abortPacket, 3101);
  EXPECT_EQ(h.plane().jobs(), 0);
  EXPECT_EQ(h.plane().slotsFree(), 512);
}

TEST(SwitchDataplane, LossInjectionIsSeededPerDirection) {
  switchd::Options options;
  options.lossUp = 50;
  Harness h(options);
  const Harness::Job job = h.admit(1, 3200);
  int results = 0;
  for (uint32_t round = 0; round < 200; round += 2) {
    // One rank: every DATA that arrives completes its round; retransmit
    // until it does (rounds 0, 2, 4, ... of slot 0 need round r-1 of
    // slot 0 complete, so use both parities in turn).
    for (uint32_t r = round; r < round + 2; ++r) {
      for (int attempt = 0; attempt < 64; ++attempt) {
        const std::vector<Answer> a = h.send(Harness::data(job, 0, 0, r, valuesOf(0, r)), 3200);
        if (!a.empty()) {
          ++results;
          EXPECT_EQ(Harness::sums(a[0]), expectedSum(1, r));
          break;
        }
      }
    }
  }
  EXPECT_EQ(results, 200);
  EXPECT_GT(h.counters().lossUp, 100u);
  EXPECT_LT(h.counters().lossUp, 300u);
  EXPECT_EQ(h.counters().lossDown, 0u);
}

// Packets that are wrong by construction, one defect each, against a live
// job: every one is counted once as bad and none reaches a sum; a clean
// round afterwards sums exactly.
TEST(SwitchDataplane, FuzzedPacketsAreCountedAndNeverSummed) {
  Harness h;
  const Harness::Job job = h.admit(2, 3300);
  std::mt19937_64 random(42);
  auto bad = [&]() {
    const switchd::Counters& c = h.counters();
    return c.truncated + c.malformed + c.foreignVersion + c.foreignJob + c.stale + c.early;
  };
  const uint64_t valuesBefore = h.counters().values;
  for (int i = 0; i < 20000; ++i) {
    const int rank = static_cast<int>(random() % 2);
    std::vector<uint8_t> p = Harness::data(job, rank, static_cast<uint16_t>(random() % 4), 0, valuesOf(rank, 0));
    int port = 3300 + rank;
    switch (random() % 14) {
      case 0: p.resize(random() % swp::kHeaderBytes); break;            // shorter than a header
      case 1: p.resize(swp::kHeaderBytes + 1 + random() % 127); break;   // payload of the wrong size
      case 2: p.push_back(static_cast<uint8_t>(random())); break;         // one byte too many
      case 3: p[0] ^= static_cast<uint8_t>(1 + random() % 255); break;    // magic
      case 4: p[2] = static_cast<uint8_t>(2 + random() % 254); break;     // version
      case 5: p[3] = static_cast<uint8_t>(11 + random() % 245); break;    // type
      case 6: p[4] |= static_cast<uint8_t>(0x10 << (random() % 4)); break;  // unknown flag
      case 7: p[23] = static_cast<uint8_t>(1 + random() % 255); break;    // reserved
      case 8: p[16] ^= static_cast<uint8_t>(1 + random() % 255); break;   // key
      case 9: port = 4000 + static_cast<int>(random() % 1000); break;     // sender not registered
      case 10: p[8] = static_cast<uint8_t>(4 + random() % 200); break;    // slot past the window
      case 11: p[6] = static_cast<uint8_t>(2 + random() % 200); break;    // rank past n
      case 12: p[11] = static_cast<uint8_t>(1 + random() % 255); break;   // count past the slot's capacity
      case 13: {  // random bytes with a valid magic and version
        p.assign(swp::kHeaderBytes + random() % 200, 0);
        for (uint8_t& b : p) b = static_cast<uint8_t>(random());
        p[0] = 0x43;
        p[1] = 0x53;
        p[2] = swp::kVersion;
        p[3] = swp::kData;
        p[5] = static_cast<uint8_t>(random() % 2 ? job.id : random());
        break;
      }
    }
    const uint64_t before = bad();
    const std::vector<Answer> answers = h.send(p, port);
    // Random bytes can form a valid ADMIT-free DATA of the job only with
    // the right key (32 random bits): not within 20000 tries.
    ASSERT_EQ(bad(), before + 1) << "case packet " << i << " not counted as bad";
    for (const Answer& a : answers) EXPECT_NE(a.header.type, swp::kResult);
  }
  EXPECT_EQ(h.counters().values, valuesBefore);
  EXPECT_EQ(h.counters().rounds, 0u);
  h.send(Harness::data(job, 0, 0, 0, valuesOf(0, 0)), 3300);
  const std::vector<Answer> a = h.send(Harness::data(job, 1, 0, 0, valuesOf(1, 0)), 3301);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(Harness::sums(a[0]), expectedSum(2, 0));
  // Pure noise: never a crash, nothing summed.
  for (int i = 0; i < 50000; ++i) {
    std::vector<uint8_t> p(random() % 9100);
    for (uint8_t& b : p) b = static_cast<uint8_t>(random());
    if (random() % 2 && p.size() >= 4) {
      p[0] = 0x43;
      p[1] = 0x53;
      p[2] = swp::kVersion;
    }
    h.send(p, 3300 + static_cast<int>(random() % 3));
  }
  EXPECT_EQ(h.counters().rounds, 1u);
  EXPECT_EQ(h.counters().values, valuesBefore + 64);
}

}  // namespace
}  // namespace cc
