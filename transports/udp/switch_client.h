// A worker of the switch protocol (docs/switch-protocol.md): admission, the
// window of slots, the exponent agreement one window ahead, retransmission
// and its timer, and the errors a switch can cause. It moves packets and
// knows nothing of codecs: the algorithm (src/algo/switch.cc) fills each
// packet's payload and consumes each result through SwitchStream.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "compressedcoll.h"
#include "transports/udp/switch_protocol.h"
#include "transports/udp/udp_socket.h"

namespace cc {

// A job as admitted, the same on every rank (rank 0 admits it and the
// others read it from the bootstrap store).
struct SwitchJob {
  uint8_t id = 0;
  uint32_t key = 0;
  uint16_t window = 0;         // W slots
  uint16_t capacity = 0;       // values per packet the switch holds per slot
  uint32_t datagramBytes = 0;  // the largest datagram every rank's path takes
  int nranks = 0;
  int rank = 0;
};

// One collective's packets: packet j carries values [j*k, min((j+1)*k, N)).
class SwitchStream {
 public:
  virtual ~SwitchStream() = default;
  // B of packet j's values (codec/fixed_point.h: blockExponentOf). Called
  // once per packet, a window ahead of its encode: for packet j + W, right
  // after packet j (the same slot's) was encoded, so a stream may prepare
  // packet j + W's bytes now, while its values are in cache.
  virtual uint8_t exponentOf(size_t packet) = 0;
  // Writes packet j's payload, its values scaled by the agreed exponent
  // `expCur`, and returns its size in bytes. Called once per packet.
  virtual size_t encode(size_t packet, uint8_t expCur, uint8_t* payload) = 0;
  // Packet j's result (its header checked against what was sent, its size
  // against the mode); CC_SUCCESS or a failure that ends the collective.
  virtual cc_result_t deliver(size_t packet, const swp::Header& header, const uint8_t* payload) = 0;
};

struct SwitchStats {
  uint64_t sent = 0, received = 0, retransmitted = 0, fastRetransmits = 0, timeouts = 0;
  uint64_t staleResults = 0, foreign = 0, status = 0;
};

class SwitchClient {
 public:
  // A socket connected to the switch at `address` (host:port); waits honour
  // `timeoutMs`. Fails for an address that does not resolve.
  static cc_result_t open(const std::string& address, int timeoutMs, std::unique_ptr<SwitchClient>* out);
  ~SwitchClient();

  const std::string& address() const { return address_; }
  // This socket's address as the switch sees it (the rank map's entry).
  swp::RankAddress localAddress() const;
  // The largest datagram this rank's path takes: CC_SWITCH_PACKET_BYTES, or
  // the path MTU less the IP and UDP headers, at most 8972.
  uint32_t datagramBytes() const;

  // Rank 0: asks for a job, for half the timeout (the others wait for the
  // answer in the store). CC_TIMEOUT when the switch does not answer,
  // CC_REMOTE_ERROR (with its reason) when it refuses.
  cc_result_t admit(const swp::AdmitRequest& request, SwitchJob* job);
  void setJob(const SwitchJob& job);
  const SwitchJob& job() const { return job_; }

  // One collective of `values` values, `valuesPerPacket` (k) at a time,
  // encoded in `mode`.
  cc_result_t run(size_t values, size_t valuesPerPacket, uint8_t mode, SwitchStream& stream);

  // Done with the job: LEAVE, waiting a little for LEFT. Best effort.
  void leave();
  // The job is broken (a failed collective, cc_comm_abort): ABORT so that
  // the switch ends it and the peers hear GONE, and any run() in progress
  // returns. From any thread.
  void abort(const std::string& reason);

  const SwitchStats& stats() const { return stats_; }
  // Test hook: drop every outgoing packet for which `drop` returns true
  // (counted as sent): lets a test lose a rank's packets selectively.
  void setSendFilter(bool (*drop)(const swp::Header& header, void* context), void* context) {
    sendFilter_ = drop;
    sendFilterContext_ = context;
  }

 private:
  SwitchClient() = default;
  struct Slot;
  cc_result_t sendControl(const swp::Header& header, const uint8_t* payload, size_t bytes);
  cc_result_t flushSends();
  std::string noAnswer(int milliseconds) const;

  std::string address_;
  int timeoutMs_ = 0;
  // CC_SWITCH_COALESCE_US: the pause before waiting again after a pass that
  // found only a few results (measured on 4 emulated hosts sharing 2 cores:
  // 200 us made nat/nat 1.8x faster than waking for every result).
  int coalesceMicros_ = 200;
  long packetBytes_ = 0;  // CC_SWITCH_PACKET_BYTES; 0: from the path MTU
  UdpSocket socket_;
  SwitchJob job_;
  std::vector<uint32_t> rounds_;  // per slot: the next round
  std::vector<Datagram> pending_; // sends not yet taken by the socket
  std::vector<uint8_t> receiveArena_;
  std::vector<Datagram> receiveBatch_;
  SwitchStats stats_;
  std::atomic<bool> aborted_{false};
  std::mutex abortMutex_;
  std::string abortReason_;
  bool (*sendFilter_)(const swp::Header&, void*) = nullptr;
  void* sendFilterContext_ = nullptr;
  // RFC 6298's estimator over the job's round trips (kept across collectives).
  double srtt_ = 0, rttvar_ = 0;
  bool haveRtt_ = false;
};

}  // namespace cc
