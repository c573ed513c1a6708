#include "switch/dataplane.h"

#include <netinet/in.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "codec/fixed_point.h"
#include "transports/udp/udp_socket.h"

namespace cc {
namespace switchd {

using swp::Header;

// One shadow set of a slot: the round it serves, who contributed, the sum so
// far, and once complete the result packet exactly as sent.
struct Dataplane::Set {
  uint32_t round = 0;
  uint64_t bitmap = 0;
  uint16_t contributions = 0;
  bool complete = false;
  uint8_t flags = 0;
  uint8_t expCur = 0;
  uint8_t expNext = 0;
  uint8_t mode = 0;  // of the round's first contribution; the others must agree
  uint16_t count = 0;
  uint64_t offset = 0;
  int32_t* acc = nullptr;     // the job's k values (rounded up to 32)
  uint8_t* result = nullptr;  // header + payload
  size_t resultBytes = 0;
};

struct Dataplane::Job {
  uint8_t id = 0;
  uint32_t key = 0;
  uint64_t nonce = 0;
  uint64_t seed = 0;
  uint32_t timeoutMs = 0;
  int nranks = 0;
  int maxShift = 0;
  uint8_t mode = 0;
  uint16_t count = 0;   // k
  uint16_t window = 0;  // W
  std::vector<sockaddr_storage> ranks;
  std::vector<socklen_t> rankLengths;
  uint64_t left = 0;  // ranks that sent LEAVE
  std::vector<Set> sets;  // 2 per slot
  std::vector<int32_t> accumulators;
  std::vector<uint8_t> results;
  int pendingRounds = 0;     // sets started, not complete
  double lastProgress = 0;   // a round completed, or work began
  double lastPacket = 0;
  uint8_t admittedReply[swp::kHeaderBytes + swp::kAdmittedBytes] = {};
};

namespace {

constexpr size_t kRememberedJobs = 64;

bool sameAddress(const sockaddr* a, const sockaddr_storage& b) {
  return sameUdpAddress(a, reinterpret_cast<const sockaddr*>(&b));
}

sockaddr_storage toSockaddr(const swp::RankAddress& address, socklen_t* length) {
  sockaddr_storage storage{};
  if (address.family == 4) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(address.port);
    std::memcpy(&v4->sin_addr, address.address, 4);
    *length = sizeof(sockaddr_in);
  } else {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(address.port);
    std::memcpy(&v6->sin6_addr, address.address, 16);
    *length = sizeof(sockaddr_in6);
  }
  return storage;
}

std::string rankList(uint64_t bitmap, int nranks, bool present) {
  std::string text;
  for (int r = 0; r < nranks; ++r) {
    if ((((bitmap >> r) & 1u) != 0) == present) text += (text.empty() ? "" : ", ") + std::to_string(r);
  }
  return text.empty() ? "none" : text;
}

uint32_t randomKey() {
  std::random_device device;
  uint32_t key = 0;
  while (key == 0) key = device();
  return key;
}

}  // namespace

Dataplane::Dataplane(const Options& options)
    : options_(options), slotsFree_(options.slots), lossState_(options.seed * 0x9E3779B97F4A7C15ull + 1) {
  if (lossState_ == 0) lossState_ = 1;
}

Dataplane::~Dataplane() = default;

int Dataplane::jobs() const {
  int n = 0;
  for (const auto& job : jobs_) n += job != nullptr;
  return n;
}

bool Dataplane::drop(double percent) {
  if (percent <= 0) return false;
  // xorshift64*: seeded, one draw per packet and direction.
  lossState_ ^= lossState_ >> 12;
  lossState_ ^= lossState_ << 25;
  lossState_ ^= lossState_ >> 27;
  const uint64_t draw = (lossState_ * 0x2545F4914F6CDD1Dull) >> 11;  // 53 bits
  return static_cast<double>(draw) * (100.0 / 9007199254740992.0) < percent;
}

uint8_t* Dataplane::scratch(size_t bytes) {
  scratch_.emplace_back(new uint8_t[bytes]);
  return scratch_.back().get();
}

void Dataplane::queue(const uint8_t* data, size_t bytes, const sockaddr* to, socklen_t toLength, bool droppable,
                      std::vector<Outgoing>* out) {
  if (droppable && drop(options_.lossDown)) {
    ++counters_.lossDown;
    return;
  }
  Outgoing o;
  o.data = data;
  o.bytes = bytes;
  std::memset(&o.to, 0, sizeof(o.to));
  std::memcpy(&o.to, to, toLength);
  o.toLength = toLength;
  out->push_back(o);
}

void Dataplane::sent() {
  scratch_.clear();
  retired_.clear();
}

void Dataplane::endJob(uint8_t id, const std::string& reason) {
  std::unique_ptr<Job>& job = jobs_[id];
  if (!job) return;
  slotsFree_ += job->window;
  ended_.push_back(Ended{id, job->key, reason});
  while (ended_.size() > kRememberedJobs) ended_.pop_front();
  if (!options_.quiet) {
    std::fprintf(stderr, "cc_switchd: job %u ended: %s\n", id, reason.c_str());
  }
  // Queued answers may still point into its packets: freed after sending.
  retired_.push_back(std::move(job));
}

Dataplane::Job* Dataplane::jobOf(const Header& h, const sockaddr* from, socklen_t fromLength,
                                 std::vector<Outgoing>* out) {
  Job* job = jobs_[h.job].get();
  if (job == nullptr || job->key != h.key) {
    for (const Ended& ended : ended_) {
      if (ended.id == h.job && ended.key == h.key && h.job != 0) {
        if (h.type == swp::kLeave) {
          // Leaving a job that already ended is done.
          Header reply;
          reply.type = swp::kLeft;
          reply.job = h.job;
          reply.key = h.key;
          reply.rank = h.rank;
          uint8_t* packet = scratch(swp::kHeaderBytes);
          swp::writeHeader(reply, packet);
          queue(packet, swp::kHeaderBytes, from, fromLength, false, out);
          return nullptr;
        }
        if (h.type == swp::kAbort) return nullptr;
        Header reply;
        reply.type = swp::kGone;
        reply.job = h.job;
        reply.key = h.key;
        reply.rank = h.rank;
        reply.slot = h.slot;
        reply.round = h.round;
        uint8_t* packet = scratch(swp::kHeaderBytes + swp::kMaxReasonBytes);
        swp::writeHeader(reply, packet);
        const size_t n = swp::writeReason(ended.reason, packet + swp::kHeaderBytes);
        queue(packet, swp::kHeaderBytes + n, from, fromLength, false, out);
        return nullptr;
      }
    }
    ++counters_.foreignJob;
    return nullptr;
  }
  if (h.rank >= job->nranks) {
    ++counters_.malformed;
    return nullptr;
  }
  if (!sameAddress(from, job->ranks[h.rank])) {
    ++counters_.foreignJob;  // a packet for the job from somewhere else: forged or misrouted
    return nullptr;
  }
  return job;
}

void Dataplane::handle(const uint8_t* data, size_t bytes, bool truncated, const sockaddr* from,
                       socklen_t fromLength, double now, std::vector<Outgoing>* out) {
  ++counters_.rx;
  counters_.rxBytes += bytes;
  if (truncated) {
    ++counters_.truncated;
    return;
  }
  Header h;
  switch (swp::parseHeader(data, bytes, &h)) {
    case swp::ParseResult::Ok: break;
    case swp::ParseResult::Truncated: ++counters_.truncated; return;
    case swp::ParseResult::Malformed: ++counters_.malformed; return;
    case swp::ParseResult::ForeignVersion: ++counters_.foreignVersion; return;
  }
  const uint8_t* payload = data + swp::kHeaderBytes;
  const size_t payloadBytes = bytes - swp::kHeaderBytes;
  switch (h.type) {
    case swp::kData:
      return handleData(h, payload, payloadBytes, from, fromLength, now, out);
    case swp::kAdmit:
      return handleAdmit(h, payload, payloadBytes, from, fromLength, now, out);
    case swp::kLeave:
    case swp::kAbort:
      return handleLeaveOrAbort(h, payload, payloadBytes, from, fromLength, out);
    default:
      // Switch-to-worker types have no business arriving here.
      ++counters_.malformed;
      return;
  }
}

void Dataplane::handleData(const Header& h, const uint8_t* payload, size_t payloadBytes, const sockaddr* from,
                           socklen_t fromLength, double now, std::vector<Outgoing>* out) {
  Job* job = jobOf(h, from, fromLength, out);
  if (job == nullptr) return;
  // The mode is per packet: one job carries calls of codec nat and none
  // alike (the slot holds the widest packet, nat both ways, admitted).
  if (h.slot >= job->window || h.count > job->count || !swp::validMode(h.mode) ||
      h.count > swp::valuesFitting(h.mode, swp::kMaxDatagramBytes) ||
      ((h.flags & swp::kFlagSet) != 0) != ((h.round & 1u) != 0) ||
      (h.flags & (swp::kFlagOverflow | swp::kFlagMismatch)) != 0 || h.offset % swp::kBlockValues != 0) {
    ++counters_.malformed;
    return;
  }
  if (payloadBytes != swp::payloadBytes(swp::upOf(h.mode), h.count)) {
    ++counters_.truncated;
    return;
  }
  job->lastPacket = now;
  if (drop(options_.lossUp)) {
    ++counters_.lossUp;
    return;
  }
  const uint64_t bit = 1ull << h.rank;
  Set& cur = job->sets[2 * h.slot + (h.round & 1u)];
  Set& other = job->sets[2 * h.slot + ((h.round & 1u) ^ 1u)];
  if (cur.round != h.round) {
    if (cur.round + 2 == h.round && other.round + 1 == h.round && other.complete) {
      // Round r starts; the set last served r - 2, whose result every
      // worker had (they all sent r - 1, which completed).
      cur.round = h.round;
      cur.bitmap = 0;
      cur.contributions = 0;
      cur.complete = false;
      cur.flags = 0;
    } else if (swp::roundBefore(h.round, cur.round)) {
      ++counters_.stale;
      return;
    } else {
      ++counters_.early;
      return;
    }
  }
  if (cur.complete) {
    ++counters_.resent;
    ++counters_.results;
    queue(cur.result, cur.resultBytes, from, fromLength, true, out);
    return;
  }
  if ((cur.bitmap & bit) != 0) {
    ++counters_.duplicates;
    if ((h.flags & swp::kFlagRetx) != 0) {
      // Whoever retransmits learns who the round still waits for.
      Header reply;
      reply.type = swp::kStatus;
      reply.job = job->id;
      reply.key = job->key;
      reply.rank = h.rank;
      reply.slot = h.slot;
      reply.round = h.round;
      reply.mode = job->mode;
      uint8_t* packet = scratch(swp::kHeaderBytes + swp::kStatusBytes);
      swp::writeHeader(reply, packet);
      swp::writeStatus(cur.bitmap, static_cast<uint16_t>(job->nranks), packet + swp::kHeaderBytes);
      ++counters_.status;
      queue(packet, swp::kHeaderBytes + swp::kStatusBytes, from, fromLength, true, out);
    }
    return;
  }
  const bool first = cur.contributions == 0;
  if (first) {
    cur.offset = h.offset;
    cur.count = h.count;
    cur.expCur = h.expCur;
    cur.expNext = h.expNext;
    cur.mode = h.mode;
    if (job->pendingRounds++ == 0) job->lastProgress = now;
  } else {
    if (h.offset != cur.offset || h.count != cur.count || h.expCur != cur.expCur || h.mode != cur.mode) {
      cur.flags |= swp::kFlagMismatch;
    }
    if (h.expNext > cur.expNext) cur.expNext = h.expNext;
  }
  // A mismatched packet's values are not added (their count may differ).
  if ((cur.flags & swp::kFlagMismatch) == 0 || first) {
    const int floor = fixedFloor(cur.expCur, job->maxShift);
    const bool inScale =
        swp::upOf(cur.mode) == swp::kNat
            ? natAccumulateFixed(payload, h.count, floor, job->maxShift, first, cur.acc)
            : fixedAccumulate(payload, h.count, job->maxShift, first, cur.acc);
    if (!inScale) cur.flags |= swp::kFlagOverflow;
    counters_.values += h.count;
  }
  cur.bitmap |= bit;
  if (++cur.contributions == job->nranks) complete(*job, h.slot, cur, out);
  (void)now;
}

void Dataplane::complete(Job& job, uint16_t slot, Set& set, std::vector<Outgoing>* out) {
  set.complete = true;
  --job.pendingRounds;
  ++counters_.rounds;
  if (set.flags & swp::kFlagOverflow) ++counters_.overflow;
  if (set.flags & swp::kFlagMismatch) ++counters_.mismatch;
  Header h;
  h.type = swp::kResult;
  h.flags = static_cast<uint8_t>(set.flags | ((set.round & 1u) ? swp::kFlagSet : 0));
  h.job = job.id;
  h.rank = swp::kAllRanks;
  h.slot = slot;
  h.count = set.count;
  h.round = set.round;
  h.key = job.key;
  h.mode = set.mode;
  h.expCur = set.expCur;
  h.expNext = set.expNext;
  h.offset = set.offset;
  swp::writeHeader(h, set.result);
  uint8_t* payload = set.result + swp::kHeaderBytes;
  const int floor = fixedFloor(set.expCur, job.maxShift);
  if (swp::downOf(set.mode) == swp::kNat) {
    // Encoded once; every worker and every retransmission gets these bytes.
    const RandomStream rs{job.seed, (1ull << 62) | (static_cast<uint64_t>(slot) << 32) | set.round};
    natEncodeFixed(set.acc, set.count, floor, set.offset, rs, payload);
  } else {
    std::memcpy(payload, set.acc, 4 * static_cast<size_t>(set.count));
  }
  set.resultBytes = swp::kHeaderBytes + swp::payloadBytes(swp::downOf(set.mode), set.count);
  for (int r = 0; r < job.nranks; ++r) {
    ++counters_.results;
    queue(set.result, set.resultBytes, reinterpret_cast<const sockaddr*>(&job.ranks[r]), job.rankLengths[r], true,
          out);
  }
}

void Dataplane::handleAdmit(const Header& h, const uint8_t* payload, size_t payloadBytes, const sockaddr* from,
                            socklen_t fromLength, double now, std::vector<Outgoing>* out) {
  swp::AdmitRequest request;
  std::string why;
  auto refuse = [&](const std::string& reason) {
    ++counters_.jobsRefused;
    Header reply;
    reply.type = swp::kRefused;
    uint8_t* packet = scratch(swp::kHeaderBytes + 8 + swp::kMaxReasonBytes);
    swp::writeHeader(reply, packet);
    std::memcpy(packet + swp::kHeaderBytes, &request.nonce, 8);
    const size_t n = swp::writeReason(reason, packet + swp::kHeaderBytes + 8);
    queue(packet, swp::kHeaderBytes + 8 + n, from, fromLength, false, out);
  };
  if (h.job != 0 || h.key != 0 || h.slot != 0 || h.count != 0 || h.round != 0 || h.offset != 0 || h.flags != 0) {
    ++counters_.malformed;
    return;
  }
  if (payloadBytes < 8) {
    ++counters_.truncated;
    return;
  }
  std::memcpy(&request.nonce, payload, 8);
  if (!swp::readAdmit(payload, payloadBytes, &request, &why)) {
    ++counters_.malformed;
    return refuse("bad ADMIT: " + why);
  }
  // A repeated request (its answer was lost) gets the same answer.
  for (const auto& job : jobs_) {
    if (job && job->nonce == request.nonce && sameAddress(from, job->ranks[0])) {
      queue(job->admittedReply, sizeof(job->admittedReply), from, fromLength, false, out);
      return;
    }
  }
  std::vector<sockaddr_storage> ranks(request.nranks);
  std::vector<socklen_t> lengths(request.nranks);
  for (int r = 0; r < request.nranks; ++r) ranks[r] = toSockaddr(request.ranks[r], &lengths[r]);
  if (!sameAddress(from, ranks[0])) {
    ++counters_.foreignJob;
    return refuse("ADMIT came from " + udpAddressString(from) + ", not from rank 0's address " +
                  udpAddressString(reinterpret_cast<const sockaddr*>(&ranks[0])));
  }
  for (int r = 0; r < request.nranks; ++r) {
    for (int s = 0; s < r; ++s) {
      if (sameAddress(reinterpret_cast<const sockaddr*>(&ranks[r]), ranks[s])) {
        return refuse("ranks " + std::to_string(s) + " and " + std::to_string(r) + " have the same address " +
                      udpAddressString(reinterpret_cast<const sockaddr*>(&ranks[r])));
      }
    }
  }
  const int minimum = request.window < 8 ? request.window : 8;
  if (slotsFree_ < minimum) {
    return refuse("the slot pool is full: " + std::to_string(slotsFree_) + " of " + std::to_string(options_.slots) +
                  " slots free, " + std::to_string(jobs()) + " jobs running");
  }
  uint8_t id = 0;
  for (int step = 1; step <= 255; ++step) {
    const uint8_t candidate = static_cast<uint8_t>((lastJobId_ + step - 1) % 255 + 1);
    if (!jobs_[candidate]) {
      id = candidate;
      break;
    }
  }
  if (id == 0) return refuse("255 jobs are running, the most the job id allows");
  lastJobId_ = id;

  auto job = std::make_unique<Job>();
  job->id = id;
  job->key = randomKey();
  job->nonce = request.nonce;
  job->seed = request.seed;
  job->timeoutMs = request.timeoutMs;
  job->nranks = request.nranks;
  job->maxShift = fixedMaxShift(request.nranks);
  job->mode = request.mode;
  job->count = request.count;
  job->window = static_cast<uint16_t>(request.window < slotsFree_ ? request.window : slotsFree_);
  job->ranks = std::move(ranks);
  job->rankLengths = std::move(lengths);
  job->lastPacket = now;
  job->lastProgress = now;
  const size_t accValues = (job->count + swp::kBlockValues - 1) / swp::kBlockValues * swp::kBlockValues;
  // Any mode's result of at most `count` values fits a datagram (the
  // packet checks in handleData).
  const size_t resultBytes = swp::kMaxDatagramBytes;
  const size_t sets = 2 * static_cast<size_t>(job->window);
  job->sets.resize(sets);
  job->accumulators.assign(sets * accValues, 0);
  job->results.assign(sets * resultBytes, 0);
  for (size_t s = 0; s < sets; ++s) {
    Set& set = job->sets[s];
    set.acc = job->accumulators.data() + s * accValues;
    set.result = job->results.data() + s * resultBytes;
    // Set 0 of a slot serves round 0 (empty), set 1 round -1 (complete),
    // so round 0 starts without a special case.
    set.round = (s & 1) ? 0xffffffffu : 0u;
    set.complete = (s & 1) != 0;
  }
  slotsFree_ -= job->window;

  Header reply;
  reply.type = swp::kAdmitted;
  reply.job = id;
  reply.key = job->key;
  reply.mode = job->mode;
  swp::writeHeader(reply, job->admittedReply);
  swp::AdmitReply admitted;
  admitted.nonce = request.nonce;
  admitted.window = job->window;
  admitted.count = job->count;
  admitted.slotsFree = static_cast<uint32_t>(slotsFree_);
  swp::writeAdmitted(admitted, job->admittedReply + swp::kHeaderBytes);
  ++counters_.jobsAdmitted;
  if (!options_.quiet) {
    std::fprintf(stderr, "cc_switchd: job %u admitted: %d ranks, window %u, %u values per packet, %s up, %s down\n",
                 id, job->nranks, job->window, job->count, swp::encodingName(swp::upOf(job->mode)),
                 swp::encodingName(swp::downOf(job->mode)));
  }
  jobs_[id] = std::move(job);
  queue(jobs_[id]->admittedReply, sizeof(jobs_[id]->admittedReply), from, fromLength, false, out);
}

void Dataplane::handleLeaveOrAbort(const Header& h, const uint8_t* payload, size_t payloadBytes,
                                   const sockaddr* from, socklen_t fromLength, std::vector<Outgoing>* out) {
  if (h.type == swp::kLeave && payloadBytes != 0) {
    ++counters_.truncated;
    return;
  }
  Job* job = jobOf(h, from, fromLength, out);
  if (job == nullptr) return;
  if (h.type == swp::kAbort) {
    ++counters_.jobsAborted;
    endJob(job->id, "rank " + std::to_string(h.rank) + " aborted: " + swp::readReason(payload, payloadBytes));
    return;
  }
  job->left |= 1ull << h.rank;
  Header reply;
  reply.type = swp::kLeft;
  reply.job = job->id;
  reply.key = job->key;
  reply.rank = h.rank;
  uint8_t* packet = scratch(swp::kHeaderBytes);
  swp::writeHeader(reply, packet);
  queue(packet, swp::kHeaderBytes, from, fromLength, false, out);
  const uint64_t everyone = job->nranks == 64 ? ~0ull : (1ull << job->nranks) - 1;
  if (job->left == everyone) {
    ++counters_.jobsLeft;
    endJob(job->id, "every rank left");
  }
}

void Dataplane::tick(double now) {
  for (auto& slot : jobs_) {
    Job* job = slot.get();
    if (job == nullptr) continue;
    const double stallLimit = 2.0 * job->timeoutMs / 1000.0;
    if (job->pendingRounds > 0 && now - job->lastProgress > stallLimit) {
      // Name who the oldest unfinished round waits for.
      std::string detail;
      for (size_t s = 0; s < job->sets.size() && detail.empty(); ++s) {
        const Set& set = job->sets[s];
        if (!set.complete && set.contributions > 0) {
          detail = "slot " + std::to_string(s / 2) + " round " + std::to_string(set.round) + " has no contribution from rank(s) " +
                   rankList(set.bitmap, job->nranks, false);
        }
      }
      ++counters_.jobsTimedOut;
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%.1f", stallLimit);
      endJob(job->id, std::string("timed out: no round finished for ") + seconds + " s; " + detail);
    } else if (now - job->lastPacket > options_.jobIdleSeconds) {
      ++counters_.jobsTimedOut;
      endJob(job->id, "idle: no packet for " + std::to_string(static_cast<long long>(options_.jobIdleSeconds)) + " s");
    }
  }
}

std::string formatCounters(const Counters& c, int jobs, int slotsFree) {
  char line[1024];
  std::snprintf(line, sizeof(line),
                "rx=%llu rx_bytes=%llu tx=%llu tx_bytes=%llu values=%llu rounds=%llu results=%llu resent=%llu "
                "duplicates=%llu stale=%llu early=%llu status=%llu loss_up=%llu loss_down=%llu truncated=%llu "
                "malformed=%llu foreign_version=%llu foreign_job=%llu overflow=%llu mismatch=%llu "
                "jobs_admitted=%llu jobs_refused=%llu jobs_left=%llu jobs_aborted=%llu jobs_timed_out=%llu "
                "tx_dropped=%llu jobs=%d slots_free=%d",
                (unsigned long long)c.rx, (unsigned long long)c.rxBytes, (unsigned long long)c.tx,
                (unsigned long long)c.txBytes, (unsigned long long)c.values, (unsigned long long)c.rounds,
                (unsigned long long)c.results, (unsigned long long)c.resent, (unsigned long long)c.duplicates,
                (unsigned long long)c.stale, (unsigned long long)c.early, (unsigned long long)c.status,
                (unsigned long long)c.lossUp, (unsigned long long)c.lossDown, (unsigned long long)c.truncated,
                (unsigned long long)c.malformed, (unsigned long long)c.foreignVersion,
                (unsigned long long)c.foreignJob, (unsigned long long)c.overflow, (unsigned long long)c.mismatch,
                (unsigned long long)c.jobsAdmitted, (unsigned long long)c.jobsRefused,
                (unsigned long long)c.jobsLeft, (unsigned long long)c.jobsAborted,
                (unsigned long long)c.jobsTimedOut, (unsigned long long)c.txDropped, jobs, slotsFree);
  return line;
}

}  // namespace switchd
}  // namespace cc
