// The aggregation switch's own speed: values aggregated per second on one
// core (docs/results.md, "Switch").
//
//   cc_switch_bench [--ranks N] [--values V] [--seconds S]
//
// Two figures per mode (nat up/nat down, nat up/int32 down, int32/int32) and
// packet size (a 1500-byte and a 9000-byte path):
// - dataplane: cc_switchd's dataplane fed prebuilt datagrams in this thread
//   (no sockets): the per-packet work alone, on one core;
// - loopback: cc_switchd's event loop on a thread with N workers
//   (SwitchClient, the library's worker side, its payloads prebuilt) on
//   threads of their own over loopback UDP: what the daemon sustains with
//   recvmmsg/sendmmsg, sharing the machine's cores with its workers.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "codec/codec.h"
#include "base/error.h"
#include "codec/fixed_point.h"
#include "switch/daemon.h"
#include "transports/udp/switch_client.h"

namespace {

using cc::swp::Header;

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Payloads of typical values: nat codes one to eight binades below the block's top.
std::vector<uint8_t> payloadOf(cc::swp::Encoding up, size_t count, uint8_t blockExponent, int maxShift, int rank) {
  std::vector<uint8_t> payload(cc::swp::payloadBytes(up, count));
  if (up == cc::swp::kNat) {
    for (size_t b = 0; b < count / 32; ++b) {
      const uint32_t mask = 0x9e3779b9u * static_cast<uint32_t>(b + 1 + rank);
      std::memcpy(&payload[36 * b], &mask, 4);
      for (int l = 0; l < 32; ++l) payload[36 * b + 4 + l] = static_cast<uint8_t>(blockExponent + 1 - ((b + l + rank) % 8));
    }
  } else {
    for (size_t i = 0; i < count; ++i) {
      const int32_t q = static_cast<int32_t>(((i * 2654435761u + rank) % (1u << maxShift))) - (1 << (maxShift - 1));
      std::memcpy(&payload[4 * i], &q, 4);
    }
  }
  return payload;
}

struct Mode {
  const char* name;
  uint8_t mode;
};

const Mode kModes[] = {{"nat/nat", cc::swp::makeMode(cc::swp::kNat, cc::swp::kNat)},
                       {"nat/int32", cc::swp::makeMode(cc::swp::kNat, cc::swp::kInt32)},
                       {"int32/int32", cc::swp::makeMode(cc::swp::kInt32, cc::swp::kInt32)}};

// The dataplane alone: rounds of every slot from every rank, as datagrams.
double dataplaneRate(int nranks, const Mode& mode, size_t datagram, double budget) {
  cc::switchd::Options options;
  options.quiet = true;
  cc::switchd::Dataplane plane(options);
  const uint16_t window = 64;
  const size_t count = cc::swp::valuesFitting(mode.mode, datagram);
  // Admission.
  cc::swp::AdmitRequest request;
  request.nonce = 1;
  request.seed = 2;
  request.timeoutMs = 10000;
  request.nranks = static_cast<uint16_t>(nranks);
  request.window = window;
  request.count = static_cast<uint16_t>(count);
  request.mode = mode.mode;
  std::vector<sockaddr_in> addresses(nranks);
  for (int r = 0; r < nranks; ++r) {
    addresses[r] = sockaddr_in{};
    addresses[r].sin_family = AF_INET;
    addresses[r].sin_port = htons(static_cast<uint16_t>(20000 + r));
    addresses[r].sin_addr.s_addr = htonl(0x7f000001u);
    request.ranks[r].family = 4;
    request.ranks[r].port = static_cast<uint16_t>(20000 + r);
    std::memcpy(request.ranks[r].address, &addresses[r].sin_addr, 4);
  }
  std::vector<uint8_t> admit(cc::swp::kHeaderBytes + cc::swp::admitPayloadBytes(nranks));
  Header h;
  h.type = cc::swp::kAdmit;
  h.mode = mode.mode;
  cc::swp::writeHeader(h, admit.data());
  cc::swp::writeAdmit(request, admit.data() + cc::swp::kHeaderBytes);
  std::vector<cc::switchd::Outgoing> out;
  plane.handle(admit.data(), admit.size(), false, reinterpret_cast<const sockaddr*>(&addresses[0]),
               sizeof(sockaddr_in), 0, &out);
  if (out.size() != 1) return 0;
  Header reply;
  cc::swp::parseHeader(out[0].data, out[0].bytes, &reply);
  out.clear();
  plane.sent();
  // One prebuilt datagram per rank; the header's slot and round are patched.
  const int maxShift = cc::fixedMaxShift(nranks);
  std::vector<std::vector<uint8_t>> packets(nranks);
  for (int r = 0; r < nranks; ++r) {
    const std::vector<uint8_t> payload = payloadOf(cc::swp::upOf(mode.mode), count, 120, maxShift, r);
    packets[r].resize(cc::swp::kHeaderBytes + payload.size());
    std::memcpy(packets[r].data() + cc::swp::kHeaderBytes, payload.data(), payload.size());
  }
  Header d;
  d.type = cc::swp::kData;
  d.job = reply.job;
  d.key = reply.key;
  d.count = static_cast<uint16_t>(count);
  d.mode = mode.mode;
  d.expCur = 120;
  d.expNext = 120;
  const double start = seconds();
  double now = start;
  uint32_t round = 0;
  out.reserve(4 * nranks);
  while (now - start < budget) {
    for (uint16_t slot = 0; slot < window; ++slot) {
      for (int r = 0; r < nranks; ++r) {
        d.rank = static_cast<uint16_t>(r);
        d.slot = slot;
        d.round = round;
        d.flags = (round & 1u) ? cc::swp::kFlagSet : 0;
        d.offset = (static_cast<uint64_t>(round) * window + slot) * count;
        cc::swp::writeHeader(d, packets[r].data());
        plane.handle(packets[r].data(), packets[r].size(), false, reinterpret_cast<const sockaddr*>(&addresses[r]),
                     sizeof(sockaddr_in), now, &out);
      }
      out.clear();
      plane.sent();
    }
    ++round;
    now = seconds();
  }
  if (plane.counters().rounds != static_cast<uint64_t>(round) * window) {
    std::fprintf(stderr, "cc_switch_bench: %llu rounds completed of %llu\n",
                 static_cast<unsigned long long>(plane.counters().rounds),
                 static_cast<unsigned long long>(round) * window);
    return 0;
  }
  return static_cast<double>(plane.counters().values) / (now - start);
}

// The worker side's payloads, prebuilt: the loop measures the switch.
class PrebuiltStream : public cc::SwitchStream {
 public:
  PrebuiltStream(cc::swp::Encoding up, size_t k, size_t values, int maxShift, int rank)
      : up_(up), k_(k), values_(values), payload_(payloadOf(up, k, 120, maxShift, rank)) {}
  uint8_t exponentOf(size_t) override { return 120; }
  size_t encode(size_t packet, uint8_t, uint8_t* payload) override {
    const size_t bytes = cc::swp::payloadBytes(up_, std::min(k_, values_ - packet * k_));
    std::memcpy(payload, payload_.data(), bytes);
    return bytes;
  }
  cc::swp::Header last;
  cc_result_t deliver(size_t, const cc::swp::Header& header, const uint8_t*) override {
    last = header;
    return CC_SUCCESS;
  }

 private:
  cc::swp::Encoding up_;
  size_t k_, values_;
  std::vector<uint8_t> payload_;
};

double loopbackRate(int nranks, const Mode& mode, size_t datagram, size_t values, double budget) {
  cc::switchd::Options options;
  options.listen = "127.0.0.1:0";
  options.quiet = true;
  cc::switchd::Daemon daemon(options);
  if (daemon.start() != CC_SUCCESS) return 0;
  std::thread loop([&] { daemon.run(); });
  std::vector<std::unique_ptr<cc::SwitchClient>> clients(nranks);
  cc::swp::AdmitRequest request;
  request.nonce = 3;
  request.seed = 4;
  request.timeoutMs = 10000;
  request.nranks = static_cast<uint16_t>(nranks);
  request.window = 64;
  const size_t k = cc::swp::valuesFitting(mode.mode, datagram);
  request.count = static_cast<uint16_t>(k);
  request.mode = mode.mode;
  bool ok = true;
  for (int r = 0; r < nranks && ok; ++r) {
    ok = cc::SwitchClient::open(daemon.address(), 10000, &clients[r]) == CC_SUCCESS;
    if (ok) request.ranks[r] = clients[r]->localAddress();
  }
  cc::SwitchJob job;
  ok = ok && clients[0]->admit(request, &job) == CC_SUCCESS;
  double rate = 0;
  if (ok) {
    job.nranks = nranks;
    for (int r = 0; r < nranks; ++r) {
      job.rank = r;
      clients[r]->setJob(job);
    }
    std::atomic<bool> failed{false};
    const double start = seconds();
    int calls = 0;
    while (seconds() - start < budget && !failed.load()) {
      std::vector<std::thread> workers;
      for (int r = 0; r < nranks; ++r) {
        workers.emplace_back([&, r] {
          PrebuiltStream stream(cc::swp::upOf(mode.mode), k, values, cc::fixedMaxShift(nranks), r);
          if (clients[r]->run(values, k, mode.mode, stream) != CC_SUCCESS) {
            std::fprintf(stderr, "cc_switch_bench: rank %d: %s\n", r, cc::lastErrorMessage().c_str());
            failed.store(true);
          }
        });
      }
      for (auto& worker : workers) worker.join();
      ++calls;
    }
    const double elapsed = seconds() - start;
    if (!failed.load()) rate = static_cast<double>(values) * calls * nranks / elapsed;
  }
  for (auto& client : clients) {
    if (client) client->leave();
  }
  daemon.stop();
  loop.join();
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  int nranks = 4;
  size_t values = 4u << 20;
  double budget = 1.0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--ranks" && i + 1 < argc) nranks = std::atoi(argv[++i]);
    else if (arg == "--values" && i + 1 < argc) values = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--seconds" && i + 1 < argc) budget = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: cc_switch_bench [--ranks N] [--values V] [--seconds S]\n");
      return 2;
    }
  }
  if (nranks < 1 || nranks > cc::swp::kMaxRanks || values == 0 || budget <= 0) {
    std::fprintf(stderr, "cc_switch_bench: --ranks 1..64, --values > 0, --seconds > 0\n");
    return 2;
  }
  std::printf("# cc_switch_bench: %d ranks, nat implementation %s; values aggregated per second\n", nranks,
              cc::natImplementationName());
  std::printf("# %-12s %9s %8s %16s %16s\n", "mode", "datagram", "values", "dataplane(1core)", "loopback");
  for (const Mode& mode : kModes) {
    for (size_t datagram : {size_t{1472}, cc::swp::kMaxDatagramBytes}) {
      const double plane = dataplaneRate(nranks, mode, datagram, budget);
      const double loop = loopbackRate(nranks, mode, datagram, values, budget);
      std::printf("  %-12s %9zu %8zu %16.3e %16.3e\n", mode.name, datagram,
                  cc::swp::valuesFitting(mode.mode, datagram), plane, loop);
      std::fflush(stdout);
      if (plane <= 0 || loop <= 0) return 1;
    }
  }
  return 0;
}
