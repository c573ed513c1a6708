#include "transports/udp/switch_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "base/error.h"

namespace cc {
namespace {

constexpr int kBatch = 64;
constexpr size_t kReceiveBytes = 9216;
// Ranks and the daemon share cores with everything else on a host: a
// round trip stretched by a scheduler slice must not look like loss, since
// a spurious retransmission costs a whole result on the downlink. Losses
// are recovered by the fast retransmission, within about one round trip;
// the timer is the fallback (the last packets of a call, a silent switch).
constexpr double kInitialRto = 0.050;
constexpr double kMinRto = 0.010;
constexpr double kMaxRto = 0.500;
// A result for a packet sent this many sends after an outstanding one
// means the outstanding one (or its result) was lost.
constexpr uint64_t kReorderSends = 3;
constexpr int kSocketBufferBytes = 8 << 20;

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string rankList(uint64_t bitmap, int nranks, bool present) {
  std::string text;
  for (int r = 0; r < nranks; ++r) {
    if ((((bitmap >> r) & 1u) != 0) == present) text += (text.empty() ? "" : ", ") + std::to_string(r);
  }
  return text.empty() ? "none" : text;
}

}  // namespace

// The packet a slot has in flight, kept as sent until its result arrives.
struct SwitchClient::Slot {
  bool busy = false;
  bool prologue = false;
  size_t packet = 0;       // data packet index (when !prologue)
  uint8_t agreedExp = 0;   // for this slot's next data packet
  uint8_t expCur = 0;      // of the packet in flight
  uint32_t round = 0;
  uint64_t offset = 0;
  uint16_t count = 0;
  std::vector<uint8_t> packetBytes;
  size_t bytes = 0;
  double firstSent = 0, lastSent = 0;
  uint64_t firstSendSeq = 0;  // when this packet was first sent, counted in sends
  uint64_t sendSeq = 0;       // when it was last sent
  int retransmissions = 0;
  bool haveStatus = false;
  uint64_t status = 0;
  bool contributed = false;  // a STATUS showed this rank's bit: the round waits for others
};

cc_result_t SwitchClient::open(const std::string& address, int timeoutMs, std::unique_ptr<SwitchClient>* out) {
  std::unique_ptr<SwitchClient> client(new SwitchClient());
  client->address_ = address;
  client->timeoutMs_ = timeoutMs;
  if (const char* text = std::getenv("CC_SWITCH_PACKET_BYTES")) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || value < 512 || value > 65507) {
      return setError(CC_INVALID_ARGUMENT, "CC_SWITCH_PACKET_BYTES must be a datagram size in 512..65507, got '%s'",
                      text);
    }
    client->packetBytes_ = value;
  }
  if (const char* text = std::getenv("CC_SWITCH_COALESCE_US")) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || value < 0 || value > 100000) {
      return setError(CC_INVALID_ARGUMENT, "CC_SWITCH_COALESCE_US must be microseconds in 0..100000, got '%s'", text);
    }
    client->coalesceMicros_ = static_cast<int>(value);
  }
  sockaddr_storage remote;
  socklen_t length = 0;
  CC_CHECK(resolveUdpAddress(address, "the switch address (CC_SWITCH_ADDR)", false, &remote, &length));
  CC_CHECK(client->socket_.connect(reinterpret_cast<const sockaddr*>(&remote), length));
  client->socket_.setBuffers(kSocketBufferBytes);
  client->receiveArena_.resize(kBatch * kReceiveBytes);
  client->receiveBatch_.resize(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    client->receiveBatch_[i].data = client->receiveArena_.data() + i * kReceiveBytes;
    client->receiveBatch_[i].capacity = kReceiveBytes;
  }
  *out = std::move(client);
  return CC_SUCCESS;
}

SwitchClient::~SwitchClient() = default;

swp::RankAddress SwitchClient::localAddress() const {
  const sockaddr_storage local = socket_.localAddress();
  swp::RankAddress address;
  if (local.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&local);
    address.family = 4;
    address.port = ntohs(v4->sin_port);
    std::memcpy(address.address, &v4->sin_addr, 4);
  } else {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&local);
    address.family = 6;
    address.port = ntohs(v6->sin6_port);
    std::memcpy(address.address, &v6->sin6_addr, 16);
  }
  return address;
}

uint32_t SwitchClient::datagramBytes() const {
  if (packetBytes_ > 0) return static_cast<uint32_t>(std::min<long>(packetBytes_, swp::kMaxDatagramBytes));
  const int mtu = socket_.pathMtu();
  const int ipHeader = socket_.localAddress().ss_family == AF_INET6 ? 40 : 20;
  if (mtu <= ipHeader + 8 + 512) return 1472;
  return static_cast<uint32_t>(std::min<int>(mtu - ipHeader - 8, swp::kMaxDatagramBytes));
}

void SwitchClient::setJob(const SwitchJob& job) {
  job_ = job;
  rounds_.assign(job.window, 0);
}

std::string SwitchClient::noAnswer(int milliseconds) const {
  std::string text = "the switch at " + address_ + " answered nothing for " + std::to_string(milliseconds) +
                     " ms (is cc_switchd running there?";
  if (socket_.softError() != 0) text += std::string(" last socket error: ") + std::strerror(socket_.softError());
  return text + ")";
}

cc_result_t SwitchClient::sendControl(const swp::Header& header, const uint8_t* payload, size_t bytes) {
  uint8_t packet[swp::kMaxDatagramBytes];
  swp::writeHeader(header, packet);
  if (bytes > 0) std::memcpy(packet + swp::kHeaderBytes, payload, bytes);
  Datagram d;
  d.data = packet;
  d.bytes = swp::kHeaderBytes + bytes;
  int sent = 0;
  return socket_.send(&d, 1, true, &sent);
}

cc_result_t SwitchClient::admit(const swp::AdmitRequest& request, SwitchJob* job) {
  uint8_t payload[swp::kMaxDatagramBytes];
  const size_t bytes = swp::writeAdmit(request, payload);
  swp::Header header;
  header.type = swp::kAdmit;
  header.mode = request.mode;
  // Half the timeout: the other ranks wait for rank 0's verdict in the
  // store under the whole timeout, and must read it rather than time out
  // themselves with a message that does not name the switch.
  const int budgetMs = std::max(1, timeoutMs_ / 2);
  const double deadline = now() + budgetMs / 1000.0;
  double interval = 0.020;
  while (true) {
    CC_CHECK(sendControl(header, payload, bytes));
    const double retryAt = std::min(deadline, now() + interval);
    interval = std::min(1.0, interval * 2);
    while (true) {
      const double left = retryAt - now();
      if (left <= 0) break;
      bool readable = false;
      CC_CHECK(socket_.wait(static_cast<int>(left * 1000) + 1, false, &readable, nullptr));
      if (aborted_.load()) return setError(CC_REMOTE_ERROR, "the admission at the switch %s was aborted", address_.c_str());
      if (!readable) continue;
      int received = 0;
      CC_CHECK(socket_.receive(receiveBatch_.data(), kBatch, &received));
      for (int i = 0; i < received; ++i) {
        const Datagram& d = receiveBatch_[i];
        swp::Header reply;
        if (d.truncated || swp::parseHeader(d.data, d.bytes, &reply) != swp::ParseResult::Ok) continue;
        const uint8_t* body = static_cast<const uint8_t*>(d.data) + swp::kHeaderBytes;
        const size_t bodyBytes = d.bytes - swp::kHeaderBytes;
        if (reply.type == swp::kAdmitted) {
          swp::AdmitReply admitted;
          if (!swp::readAdmitted(body, bodyBytes, &admitted) || admitted.nonce != request.nonce) continue;
          if (reply.job == 0 || reply.key == 0 || admitted.window == 0 || admitted.window > request.window ||
              admitted.count != request.count) {
            return setError(CC_REMOTE_ERROR, "the switch at %s admitted the job with impossible terms (job %u, window %u, count %u)",
                            address_.c_str(), reply.job, admitted.window, admitted.count);
          }
          job->id = reply.job;
          job->key = reply.key;
          job->window = admitted.window;
          job->capacity = admitted.count;
          job->nranks = request.nranks;
          return CC_SUCCESS;
        }
        if (reply.type == swp::kRefused && bodyBytes >= 8) {
          uint64_t nonce = 0;
          std::memcpy(&nonce, body, 8);
          if (nonce != request.nonce) continue;
          return setError(CC_REMOTE_ERROR, "the switch at %s refused the job: %s", address_.c_str(),
                          swp::readReason(body + 8, bodyBytes - 8).c_str());
        }
      }
    }
    if (now() >= deadline) {
      return setError(CC_TIMEOUT, "admission: %s", noAnswer(budgetMs).c_str());
    }
  }
}

cc_result_t SwitchClient::flushSends() {
  size_t done = 0;
  while (done < pending_.size()) {
    int sent = 0;
    CC_CHECK(socket_.send(pending_.data() + done, static_cast<int>(pending_.size() - done), true, &sent));
    if (sent == 0) break;
    done += static_cast<size_t>(sent);
  }
  stats_.sent += done;
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(done));
  return CC_SUCCESS;
}

cc_result_t SwitchClient::run(size_t values, size_t valuesPerPacket, uint8_t mode, SwitchStream& stream) {
  if (values == 0) return CC_SUCCESS;
  if (aborted_.load()) {
    std::lock_guard<std::mutex> lock(abortMutex_);
    return setError(CC_REMOTE_ERROR, "the switch job was aborted earlier: %s", abortReason_.c_str());
  }
  const size_t k = valuesPerPacket;
  const size_t packets = (values + k - 1) / k;
  const size_t window = job_.window;
  const size_t used = std::min(window, packets);
  const swp::Encoding down = swp::downOf(mode);
  std::vector<Slot> slots(used);
  uint64_t sendSeq = 0;
  size_t done = 0;

  auto packetCount = [&](size_t packet) { return static_cast<uint16_t>(std::min(k, values - packet * k)); };
  // Builds and queues the slot's packet: the prologue, or data packet `packet`.
  auto post = [&](size_t slotIndex, bool prologue, size_t packet) {
    Slot& slot = slots[slotIndex];
    // A resend of the slot's previous packet not yet taken by the socket
    // would carry the new bytes under the old length: it is moot now.
    if (!slot.packetBytes.empty()) {
      const void* buffer = slot.packetBytes.data();
      pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                    [&](const Datagram& d) { return d.data == buffer; }),
                     pending_.end());
    }
    slot.busy = true;
    slot.prologue = prologue;
    slot.packet = packet;
    slot.round = rounds_[slotIndex];
    slot.retransmissions = 0;
    slot.haveStatus = false;
    slot.contributed = false;
    slot.packetBytes.resize(swp::kMaxDatagramBytes);
    swp::Header h;
    h.type = swp::kData;
    h.flags = static_cast<uint8_t>((slot.round & 1u) ? swp::kFlagSet : 0);
    h.job = job_.id;
    h.rank = static_cast<uint16_t>(job_.rank);
    h.slot = static_cast<uint16_t>(slotIndex);
    h.round = slot.round;
    h.key = job_.key;
    h.mode = mode;
    size_t payload = 0;
    if (prologue) {
      h.count = 0;
      h.offset = 0;
      h.expCur = 0;
      h.expNext = stream.exponentOf(slotIndex);
    } else {
      h.count = packetCount(packet);
      h.offset = packet * k;
      h.expCur = slot.agreedExp;
      payload = stream.encode(packet, h.expCur, slot.packetBytes.data() + swp::kHeaderBytes);
      h.expNext = packet + window < packets ? stream.exponentOf(packet + window) : 0;
    }
    slot.expCur = h.expCur;
    slot.offset = h.offset;
    slot.count = h.count;
    swp::writeHeader(h, slot.packetBytes.data());
    slot.bytes = swp::kHeaderBytes + payload;
    slot.firstSent = slot.lastSent = now();
    slot.firstSendSeq = slot.sendSeq = ++sendSeq;
    if (sendFilter_ != nullptr && sendFilter_(h, sendFilterContext_)) return;
    Datagram d;
    d.data = slot.packetBytes.data();
    d.bytes = slot.bytes;
    pending_.push_back(d);
  };
  auto resend = [&](Slot& slot, double at) {
    slot.packetBytes[4] |= swp::kFlagRetx;
    slot.lastSent = at;
    slot.sendSeq = ++sendSeq;
    ++slot.retransmissions;
    ++stats_.retransmitted;
    swp::Header h;
    swp::parseHeader(slot.packetBytes.data(), slot.bytes, &h);
    if (sendFilter_ != nullptr && sendFilter_(h, sendFilterContext_)) return;
    Datagram d;
    d.data = slot.packetBytes.data();
    d.bytes = slot.bytes;
    pending_.push_back(d);
  };
  auto rto = [&]() { return haveRtt_ ? std::clamp(srtt_ + 4 * rttvar_, kMinRto, kMaxRto) : kInitialRto; };

  pending_.clear();
  for (size_t i = 0; i < used; ++i) post(i, true, 0);
  int lastPassResults = 0;
  double lastProgress = now();
  const double limit = timeoutMs_ / 1000.0;

  while (done < packets) {
    CC_CHECK(flushSends());
    double t = now();
    // The next retransmission deadline.
    double next = lastProgress + limit;
    const double base = rto();
    for (Slot& slot : slots) {
      if (!slot.busy) continue;
      const double timeout = std::min(kMaxRto, std::ldexp(base, std::min(slot.retransmissions, 16)));
      next = std::min(next, slot.lastSent + timeout);
    }
    bool readable = false, writable = false;
    if (coalesceMicros_ > 0 && lastPassResults > 0 && lastPassResults < kBatch && pending_.empty()) {
      // Results come back a window at a time: waking for each one costs a
      // context switch on a shared core; a short pause gathers them.
      const timespec pause{0, static_cast<long>(coalesceMicros_) * 1000};
      nanosleep(&pause, nullptr);
    }
    lastPassResults = 0;
    const int waitMs = std::max(0, static_cast<int>(std::ceil((next - t) * 1000)));
    CC_CHECK(socket_.wait(waitMs, !pending_.empty(), &readable, &writable));
    if (aborted_.load()) {
      std::lock_guard<std::mutex> lock(abortMutex_);
      return setError(CC_REMOTE_ERROR, "the switch job was aborted: %s", abortReason_.c_str());
    }
    if (readable) {
      for (int batches = 0; batches < 16; ++batches) {
        int received = 0;
        CC_CHECK(socket_.receive(receiveBatch_.data(), kBatch, &received));
        stats_.received += static_cast<uint64_t>(received);
        lastPassResults += received;
        for (int i = 0; i < received; ++i) {
          const Datagram& d = receiveBatch_[i];
          swp::Header h;
          if (d.truncated || swp::parseHeader(d.data, d.bytes, &h) != swp::ParseResult::Ok || h.job != job_.id ||
              h.key != job_.key) {
            ++stats_.foreign;
            continue;
          }
          const uint8_t* body = static_cast<const uint8_t*>(d.data) + swp::kHeaderBytes;
          const size_t bodyBytes = d.bytes - swp::kHeaderBytes;
          if (h.type == swp::kGone) {
            return setError(CC_REMOTE_ERROR, "the switch at %s ended job %u: %s", address_.c_str(), job_.id,
                            swp::readReason(body, bodyBytes).c_str());
          }
          if (h.slot >= used) {
            if (h.type == swp::kResult || h.type == swp::kStatus) ++stats_.staleResults;  // a slot of an earlier, larger call
            else ++stats_.foreign;
            continue;
          }
          Slot& slot = slots[h.slot];
          if (!slot.busy || h.round != slot.round) {
            ++stats_.staleResults;
            continue;
          }
          if (h.type == swp::kStatus) {
            uint64_t bitmap = 0;
            uint16_t n = 0;
            if (swp::readStatus(body, bodyBytes, &bitmap, &n)) {
              slot.haveStatus = true;
              slot.status = bitmap;
              slot.contributed = ((bitmap >> job_.rank) & 1u) != 0;
              ++stats_.status;
            }
            continue;
          }
          if (h.type != swp::kResult) {
            ++stats_.foreign;
            continue;
          }
          if (h.offset != slot.offset || h.count != slot.count || h.expCur != slot.expCur || h.mode != mode ||
              bodyBytes != swp::payloadBytes(down, h.count)) {
            return setError(CC_REMOTE_ERROR,
                            "the switch at %s sent a result for slot %u round %u that does not match the packet "
                            "sent (offset %llu/%llu, count %u/%u, exponent %u/%u, mode %u/%u, %zu payload bytes)",
                            address_.c_str(), h.slot, h.round, static_cast<unsigned long long>(h.offset),
                            static_cast<unsigned long long>(slot.offset), h.count, slot.count, h.expCur, slot.expCur,
                            h.mode, mode, bodyBytes);
          }
          if ((h.flags & (swp::kFlagOverflow | swp::kFlagMismatch)) != 0) {
            return setError(CC_REMOTE_ERROR,
                            "the switch at %s flagged values [%llu, %llu): %s%s%s", address_.c_str(),
                            static_cast<unsigned long long>(h.offset),
                            static_cast<unsigned long long>(h.offset + h.count),
                            (h.flags & swp::kFlagOverflow) ? "fixed-point overflow (a contribution outside the agreed scale)" : "",
                            (h.flags & swp::kFlagOverflow) && (h.flags & swp::kFlagMismatch) ? "; " : "",
                            (h.flags & swp::kFlagMismatch) ? "ranks disagree on the packet (offset, count or scale): their calls differ" : "");
          }
          const double arrived = now();
          if (slot.retransmissions == 0) {
            // RFC 6298, with Karn's rule: only packets sent once give samples.
            const double sample = arrived - slot.firstSent;
            if (!haveRtt_) {
              srtt_ = sample;
              rttvar_ = sample / 2;
              haveRtt_ = true;
            } else {
              rttvar_ = 0.75 * rttvar_ + 0.25 * std::fabs(srtt_ - sample);
              srtt_ = 0.875 * srtt_ + 0.125 * sample;
            }
          }
          const uint64_t deliveredSeq = slot.firstSendSeq;
          const bool wasPrologue = slot.prologue;
          const size_t packet = slot.packet;
          slot.busy = false;
          ++rounds_[h.slot];
          lastProgress = arrived;
          if (!wasPrologue) {
            CC_CHECK(stream.deliver(packet, h, body));
            ++done;
          }
          slot.agreedExp = h.expNext;
          const size_t nextPacket = wasPrologue ? h.slot : packet + window;
          if (nextPacket < packets) post(h.slot, false, nextPacket);
          // Results come back in send order unless something was lost: an
          // outstanding packet last sent well before this one was first
          // sent is resent now (RACK's rule, counted in sends).
          for (Slot& other : slots) {
            // Not where this rank's contribution is known to be in: resending
            // it would only fetch another STATUS.
            if (other.busy && !other.contributed && other.sendSeq + kReorderSends < deliveredSeq) {
              ++stats_.fastRetransmits;
              resend(other, arrived);
            }
          }
        }
        CC_CHECK(flushSends());
        if (received < kBatch) break;
      }
    }
    t = now();
    // One timer for the window, as TCP's: when it fires, only the packet
    // waiting longest is resent, and the others' clocks restart, so that a
    // stall of the switch or of this process (every packet "late" at once)
    // costs one retransmission, not a window of them.
    const double timeoutBase = rto();
    Slot* overdue = nullptr;
    for (Slot& slot : slots) {
      if (!slot.busy) continue;
      const double timeout = std::min(kMaxRto, std::ldexp(timeoutBase, std::min(slot.retransmissions, 16)));
      if (t - slot.lastSent >= timeout && (overdue == nullptr || slot.lastSent < overdue->lastSent)) overdue = &slot;
    }
    if (overdue != nullptr) {
      ++stats_.timeouts;
      for (Slot& slot : slots) {
        if (slot.busy && &slot != overdue) slot.lastSent = std::max(slot.lastSent, t - timeoutBase / 2);
      }
      resend(*overdue, t);
    }
    if (done < packets && t - lastProgress > limit) {
      // Name who the oldest waiting slot's round lacks.
      const Slot* oldest = nullptr;
      for (const Slot& slot : slots) {
        if (slot.busy && (oldest == nullptr || slot.firstSent < oldest->firstSent)) oldest = &slot;
      }
      const size_t index = oldest != nullptr ? static_cast<size_t>(oldest - slots.data()) : 0;
      if (oldest != nullptr && oldest->haveStatus) {
        // The missing ranks come first: an ABORT carries only 200 bytes of this.
        return setError(CC_TIMEOUT,
                        "no contribution from rank(s) %s to slot %zu round %u at the switch %s within %d ms (it "
                        "holds those of rank(s) %s)",
                        rankList(oldest->status, job_.nranks, false).c_str(), index, oldest->round,
                        address_.c_str(), timeoutMs_, rankList(oldest->status, job_.nranks, true).c_str());
      }
      return setError(CC_TIMEOUT, "slot %zu round %u: %s", index, oldest != nullptr ? oldest->round : 0,
                      noAnswer(timeoutMs_).c_str());
    }
  }
  return flushSends();
}

void SwitchClient::leave() {
  if (job_.id == 0 || aborted_.load()) return;
  swp::Header h;
  h.type = swp::kLeave;
  h.job = job_.id;
  h.key = job_.key;
  h.rank = static_cast<uint16_t>(job_.rank);
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (sendControl(h, nullptr, 0) != CC_SUCCESS) return;
    const double deadline = now() + 0.020;
    while (now() < deadline) {
      bool readable = false;
      if (socket_.wait(static_cast<int>((deadline - now()) * 1000) + 1, false, &readable, nullptr) != CC_SUCCESS) {
        return;
      }
      if (!readable) continue;
      int received = 0;
      if (socket_.receive(receiveBatch_.data(), kBatch, &received) != CC_SUCCESS) return;
      for (int i = 0; i < received; ++i) {
        swp::Header reply;
        const Datagram& d = receiveBatch_[i];
        if (!d.truncated && swp::parseHeader(d.data, d.bytes, &reply) == swp::ParseResult::Ok &&
            (reply.type == swp::kLeft || reply.type == swp::kGone) && reply.job == job_.id && reply.key == job_.key) {
          return;
        }
      }
    }
  }
}

void SwitchClient::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(abortMutex_);
    if (aborted_.load()) return;
    abortReason_ = reason;
    aborted_.store(true);
  }
  if (job_.id != 0) {
    swp::Header h;
    h.type = swp::kAbort;
    h.job = job_.id;
    h.key = job_.key;
    h.rank = static_cast<uint16_t>(job_.rank);
    uint8_t text[swp::kMaxReasonBytes];
    const size_t bytes = swp::writeReason(reason, text);
    // Twice: a lost ABORT only delays the peers until their own timeout.
    sendControl(h, text, bytes);
    sendControl(h, text, bytes);
  }
  socket_.interrupt();
}

}  // namespace cc
