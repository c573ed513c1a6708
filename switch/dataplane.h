// The aggregation switch's dataplane (docs/switch-protocol.md): jobs, their
// slots with two shadow sets each, bitmaps, integer accumulators, and the
// answers each packet gets. No sockets here: `handle` takes one datagram
// and queues the datagrams to send, so the logic can be driven and checked
// without a network (the benchmark feeds it directly). One thread.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "transports/udp/switch_protocol.h"

namespace cc {
namespace switchd {

struct Options {
  std::string listen;          // ADDR:PORT
  int slots = 512;             // the pool all jobs share
  double lossUp = 0;           // percent of DATA dropped on arrival
  double lossDown = 0;         // percent of RESULT / STATUS copies dropped on sending
  uint64_t seed = 1;           // of the loss injection
  double statsEvery = 0;       // seconds; 0: only on SIGUSR1 and at exit
  double jobIdleSeconds = 3600;
  int coalesceMicros = 50;     // pause after a wake-up's work, so packets gather
  bool quiet = false;
};

struct Counters {
  uint64_t rx = 0, rxBytes = 0, tx = 0, txBytes = 0;
  uint64_t values = 0, rounds = 0, results = 0, resent = 0;
  uint64_t duplicates = 0, stale = 0, early = 0, status = 0;
  uint64_t lossUp = 0, lossDown = 0;
  uint64_t truncated = 0, malformed = 0, foreignVersion = 0, foreignJob = 0;
  uint64_t overflow = 0, mismatch = 0;
  uint64_t jobsAdmitted = 0, jobsRefused = 0, jobsLeft = 0, jobsAborted = 0, jobsTimedOut = 0;
  uint64_t txDropped = 0;  // answers the socket would not take
};

// "rx=... tx=... ..." (docs/switch-protocol.md, "Counters").
std::string formatCounters(const Counters& counters, int jobs, int slotsFree);

// A datagram to send: `data` stays valid until Dataplane::sent().
struct Outgoing {
  const uint8_t* data;
  size_t bytes;
  sockaddr_storage to;
  socklen_t toLength;
};

class Dataplane {
 public:
  explicit Dataplane(const Options& options);
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // One received datagram (`truncated`: longer than the receive buffer).
  // Answers are appended to `out`. `now` in seconds (steady clock).
  void handle(const uint8_t* data, size_t bytes, bool truncated, const sockaddr* from, socklen_t fromLength,
              double now, std::vector<Outgoing>* out);
  // Ends jobs that stalled or idled past their limits.
  void tick(double now);
  // The answers queued so far have left (or were given up): their buffers
  // may be reused and ended jobs' memory freed.
  void sent();

  const Counters& counters() const { return counters_; }
  Counters& mutableCounters() { return counters_; }
  int jobs() const;
  int slotsFree() const { return slotsFree_; }
  std::string countersLine() const { return formatCounters(counters_, jobs(), slotsFree_); }

 private:
  struct Set;
  struct Job;
  struct Ended {
    uint8_t id;
    uint32_t key;
    std::string reason;
  };

  void handleData(const swp::Header& h, const uint8_t* payload, size_t payloadBytes, const sockaddr* from,
                  socklen_t fromLength, double now, std::vector<Outgoing>* out);
  void handleAdmit(const swp::Header& h, const uint8_t* payload, size_t payloadBytes, const sockaddr* from,
                   socklen_t fromLength, double now, std::vector<Outgoing>* out);
  void handleLeaveOrAbort(const swp::Header& h, const uint8_t* payload, size_t payloadBytes, const sockaddr* from,
                          socklen_t fromLength, std::vector<Outgoing>* out);
  // The job a worker packet names, if the key, rank and sender match;
  // answers GONE for a job that ended. Counts what it refuses.
  Job* jobOf(const swp::Header& h, const sockaddr* from, socklen_t fromLength, std::vector<Outgoing>* out);
  void complete(Job& job, uint16_t slot, Set& set, std::vector<Outgoing>* out);
  void endJob(uint8_t id, const std::string& reason);
  // Queues a copy of `data` (scratch) or the stored packet `data` to `to`;
  // `droppable`: subject to the downlink loss.
  void queue(const uint8_t* data, size_t bytes, const sockaddr* to, socklen_t toLength, bool droppable,
             std::vector<Outgoing>* out);
  uint8_t* scratch(size_t bytes);
  bool drop(double percent);

  Options options_;
  Counters counters_;
  std::array<std::unique_ptr<Job>, 256> jobs_;
  int slotsFree_;
  uint8_t lastJobId_ = 0;
  std::deque<Ended> ended_;  // the last 64, newest last
  std::vector<std::unique_ptr<Job>> retired_;    // freed by sent()
  std::vector<std::unique_ptr<uint8_t[]>> scratch_;  // control answers of this batch
  uint64_t lossState_;
};

}  // namespace switchd
}  // namespace cc
