// Gloo underneath: a full mesh of Gloo pairs (tcp or ibverbs device) and, per
// channel, two bound buffers on the pair: the data slots (written by the
// sender at the slot's offset in the receiver's registered memory) and a
// credit buffer through which the receiver returns each slot. Bound buffers
// are the one buffer kind both Gloo devices support, so one code path serves
// tcp and ibverbs. On tcp a channel also carries regions (transport.h): per
// collective a bound buffer over the receiver's output, whose size the
// receiver sends first through a fourth buffer. (On ibverbs such a buffer
// would register the caller's memory with the NIC on every collective.)
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/ibverbs/device.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/tcp/pair.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "transports/gloo/gloo_context.h"
#include "transports/rendezvous.h"
#include "transports/transport.h"

namespace cc {
namespace {

constexpr size_t kSlotAlignment = 4096;
constexpr size_t kCreditBytes = 8;

// The communicator's health as its channels see it.
struct LinkState {
  // Set once any channel failed or the communicator was aborted: from then on
  // teardown does not wait for peers.
  std::atomic<bool> broken{false};
  // Set by abort(), before it wakes the waits: their errors then say so.
  std::atomic<bool> aborted{false};
};
using BrokenFlag = std::shared_ptr<LinkState>;

// Gloo keeps the hook that fails a tcp pair's waits (its device thread's own,
// used when a read fails) protected; a pointer to it taken through a derived
// class calls it on any pair. Never constructed.
struct TcpPairWaker : gloo::transport::tcp::Pair {
  static void wake(gloo::transport::tcp::Pair& pair, const std::string& why) {
    (pair.*(&TcpPairWaker::signalExceptionExternal))(why);
  }
};

// Gloo reports failures by exceptions; turn them into results naming the peer.
cc_result_t glooFailure(const std::exception& error, const char* what, int peer,
                        const BrokenFlag& broken) {
  broken->broken.store(true);
  if (broken->aborted.load()) {
    return setError(CC_INVALID_USAGE, "the communicator was aborted (cc_comm_abort) while %s rank %d", what,
                    peer);
  }
  const char* text = error.what();
  bool timedOut = std::strstr(text, "imeout") != nullptr;
  return setError(timedOut ? CC_TIMEOUT : CC_REMOTE_ERROR, "%s rank %d failed: %s", what, peer,
                  text);
}

struct AlignedMemory {
  explicit AlignedMemory(size_t bytes)
      : size(bytes), data(static_cast<unsigned char*>(std::aligned_alloc(
                         kSlotAlignment, (bytes + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment))) {
    if (data) std::memset(data, 0, size);
  }
  ~AlignedMemory() { std::free(data); }
  AlignedMemory(const AlignedMemory&) = delete;
  AlignedMemory& operator=(const AlignedMemory&) = delete;
  size_t size;
  unsigned char* data;
};

// A channel (sender -> receiver, tag) owns four Gloo slots on their pair: data,
// credits, and for regions the receiver's size and the region itself. The
// slots of the two directions differ, because destroying a tcp send buffer
// unregisters whatever receive buffer holds the same slot number on the pair
// (n = 2 puts both ring directions on one pair).
enum SlotKind { kDataSlot = 0, kCreditSlot = 1, kRegionSizeSlot = 2, kRegionSlot = 3 };
int channelSlot(int sender, int receiver, int tag, SlotKind kind) {
  return 8 * tag + (sender < receiver ? 0 : 4) + kind;
}
int dataSlot(int sender, int receiver, int tag) { return channelSlot(sender, receiver, tag, kDataSlot); }
int creditSlot(int sender, int receiver, int tag) { return channelSlot(sender, receiver, tag, kCreditSlot); }

// A collective that failed with a region open may leave bytes on their way
// into memory its caller owns again once it returns, and Gloo's device thread
// may be in the middle of one; closing the pair first stops both. The
// communicator is broken by the failure anyway (comm.cc).
void breakPair(gloo::transport::Pair& pair, const char* why) {
  try {
    auto* tcpPair = dynamic_cast<gloo::transport::tcp::Pair*>(&pair);
    if (tcpPair != nullptr) TcpPairWaker::wake(*tcpPair, why);
  } catch (const std::exception& error) {
    CC_WARN("closing a pair with an open region: %s", error.what());
  }
}

// What both ends of a channel hold: the slots, an 8-byte credit word, an
// 8-byte region size, and a Gloo buffer over each. The sender sends data and
// receives credits and sizes; the receiver the other way round.
class GlooChannelEnd {
 protected:
  GlooChannelEnd(int peer, size_t slotBytes, int numSlots, bool regions, BrokenFlag broken)
      : broken_(std::move(broken)), peer_(peer), slotBytes_(slotBytes), numSlots_(numSlots),
        creditBatch_(numSlots >= 16 ? numSlots / 8 : 1), regions_(regions), slots_(slotBytes * numSlots),
        credits_(kCreditBytes), regionSize_(kCreditBytes) {}

  cc_result_t registerBuffers(gloo::transport::Pair& pair, bool sender, int self, int tag) {
    if (!slots_.data || !credits_.data || !regionSize_.data) {
      return setError(CC_SYSTEM_ERROR, "cannot allocate %zu bytes of channel slots for rank %d",
                      slots_.size, peer_);
    }
    pair_ = &pair;
    self_ = self;
    tag_ = tag;
    const int from = sender ? self : peer_, to = sender ? peer_ : self;
    try {
      if (sender) {
        data_ = pair.createSendBuffer(dataSlot(from, to, tag), slots_.data, slots_.size);
        creditBuffer_ = pair.createRecvBuffer(creditSlot(from, to, tag), credits_.data, credits_.size);
        // Registered now: the receiver's sizes may come before this rank
        // opens its side of a region.
        if (regions_) {
          regionSizeBuffer_ = pair.createRecvBuffer(channelSlot(from, to, tag, kRegionSizeSlot), regionSize_.data,
                                                    regionSize_.size);
        }
      } else {
        data_ = pair.createRecvBuffer(dataSlot(from, to, tag), slots_.data, slots_.size);
        creditBuffer_ = pair.createSendBuffer(creditSlot(from, to, tag), credits_.data, credits_.size);
        if (regions_) {
          regionSizeBuffer_ = pair.createSendBuffer(channelSlot(from, to, tag, kRegionSizeSlot), regionSize_.data,
                                                    regionSize_.size);
        }
      }
    } catch (const std::exception& error) {
      return failed(error, "registering channel slots with");
    }
    return CC_SUCCESS;
  }

  cc_result_t checkRegions() const {
    if (regions_) return CC_SUCCESS;
    return setError(CC_INTERNAL_ERROR, "Gloo's ibverbs channels carry no regions");
  }

  size_t offsetOf(uint64_t message) const { return (message % numSlots_) * slotBytes_; }
  cc_result_t checkFits(size_t bytes) const {
    if (bytes <= slotBytes_) return CC_SUCCESS;
    return setError(CC_INTERNAL_ERROR, "message of %zu bytes exceeds the %zu-byte slot", bytes,
                    slotBytes_);
  }
  cc_result_t failed(const std::exception& error, const char* what) {
    return glooFailure(error, what, peer_, broken_);
  }
  void breakLink() {
    broken_->broken.store(true);
    breakPair(*pair_, "a collective failed with a region open");
  }

  BrokenFlag broken_;
  int peer_;
  size_t slotBytes_;
  int numSlots_;
  // Slots one credit returns: 1 for the few-slot channels that pipeline
  // chunks, more for channels of many small messages (auto's
  // announcements), which then cost one message each instead of two.
  int creditBatch_;
  bool regions_;  // tcp: a bound buffer over the caller's memory per collective
  gloo::transport::Pair* pair_ = nullptr;
  int self_ = 0;
  int tag_ = 0;
  AlignedMemory slots_;
  AlignedMemory credits_;
  AlignedMemory regionSize_;  // the receiver's region size, receiver -> sender
  std::unique_ptr<gloo::transport::Buffer> data_;
  std::unique_ptr<gloo::transport::Buffer> creditBuffer_;
  std::unique_ptr<gloo::transport::Buffer> regionSizeBuffer_;
  std::unique_ptr<gloo::transport::Buffer> region_;
};

class GlooRecvChannel : public RecvChannel, private GlooChannelEnd {
 public:
  GlooRecvChannel(int peer, size_t slotBytes, int numSlots, bool regions, BrokenFlag broken)
      : GlooChannelEnd(peer, slotBytes, numSlots, regions, std::move(broken)) {}

  cc_result_t open(gloo::transport::Pair& pair, int self, int tag) {
    return registerBuffers(pair, false, self, tag);
  }

  ~GlooRecvChannel() override {
    if (broken_->broken.load()) return;
    try {
      while (creditSendsDone_ < creditsSent_) {
        creditBuffer_->waitSend();
        ++creditSendsDone_;
      }
      while (sizeSendsDone_ < sizesSent_) {
        regionSizeBuffer_->waitSend();
        ++sizeSendsDone_;
      }
    } catch (const std::exception&) {
    }
  }

  // The region is registered before this rank sends anything in the
  // collective, and the sender learns its size before its first payload:
  // Gloo's tcp device thread spins on bytes for an unregistered buffer and
  // fails an enforce (uncaught, in its own thread) on bytes beyond one.
  cc_result_t openRegion(void* base, size_t bytes) override {
    CC_CHECK(checkRegions());
    if (region_) return setError(CC_INTERNAL_ERROR, "a region from rank %d is open already", peer_);
    try {
      while (sizeSendsDone_ < sizesSent_) {
        regionSizeBuffer_->waitSend();
        ++sizeSendsDone_;
      }
      region_ = pair_->createRecvBuffer(channelSlot(peer_, self_, tag_, kRegionSlot), base, bytes);
      const uint64_t size = bytes;
      std::memcpy(regionSize_.data, &size, sizeof(size));
      regionSizeBuffer_->send(0, sizeof(size), 0);
      ++sizesSent_;
    } catch (const std::exception& error) {
      return failed(error, "opening a region for");
    }
    return CC_SUCCESS;
  }

  cc_result_t waitRegion() override {
    if (!region_) return setError(CC_INTERNAL_ERROR, "no region from rank %d is open", peer_);
    try {
      region_->waitRecv();
    } catch (const std::exception& error) {
      return failed(error, "waiting for data from");
    }
    return CC_SUCCESS;
  }

  cc_result_t closeRegion(bool complete) override {
    if (!region_) return CC_SUCCESS;
    if (!complete) breakLink();
    region_.reset();
    return CC_SUCCESS;
  }

  cc_result_t wait(void** slot) override {
    if (!holding_) {
      try {
        data_->waitRecv();
      } catch (const std::exception& error) {
        return failed(error, "waiting for data from");
      }
      holding_ = true;
    }
    *slot = slots_.data + offsetOf(released_);
    return CC_SUCCESS;
  }

  cc_result_t release() override {
    if (!holding_) {
      return setError(CC_INTERNAL_ERROR, "release() without a message from rank %d", peer_);
    }
    holding_ = false;
    ++released_;
    if (released_ % creditBatch_ != 0) return CC_SUCCESS;
    try {
      // The credit's content is irrelevant (the sender counts arrivals), so
      // credits in flight may share the same 8 bytes. Bound how many are
      // outstanding so the engine's queues stay short.
      while (creditsSent_ - creditSendsDone_ >= static_cast<uint64_t>(numSlots_)) {
        creditBuffer_->waitSend();
        ++creditSendsDone_;
      }
      creditBuffer_->send(0, kCreditBytes, 0);
      ++creditsSent_;
    } catch (const std::exception& error) {
      return failed(error, "returning a slot to");
    }
    return CC_SUCCESS;
  }

  size_t slotBytes() const override { return slotBytes_; }

  // The registered memory behind the slots, for sends straight out of it.
  unsigned char* slotMemory() const { return slots_.data; }
  size_t slotMemoryBytes() const { return slots_.size; }

 private:
  uint64_t released_ = 0;
  uint64_t creditsSent_ = 0;
  uint64_t creditSendsDone_ = 0;
  uint64_t sizesSent_ = 0;
  uint64_t sizeSendsDone_ = 0;
  bool holding_ = false;
};

class GlooSendChannel : public SendChannel, private GlooChannelEnd {
 public:
  GlooSendChannel(int peer, size_t slotBytes, int numSlots, bool regions, BrokenFlag broken)
      : GlooChannelEnd(peer, slotBytes, numSlots, regions, std::move(broken)), slotDataSend_(numSlots, 0) {}

  cc_result_t open(gloo::transport::Pair& pair, int self, int tag) {
    return registerBuffers(pair, true, self, tag);
  }

  ~GlooSendChannel() override {
    // Credits of the last messages may still be on their way; a credit that
    // arrives for an unregistered buffer would stall Gloo's event loop, so
    // collect them while the peer is healthy. Errors here only end the wait.
    if (broken_->broken.load()) return;
    try {
      while (dataSendsDone_ < dataSends_) {
        data_->waitSend();
        ++dataSendsDone_;
      }
      while (creditsReceived_ < posted_ / creditBatch_) {
        creditBuffer_->waitRecv();
        ++creditsReceived_;
      }
    } catch (const std::exception&) {
    }
  }

  cc_result_t acquire(void** slot) override {
    CC_CHECK(waitForCredit());
    // Our slot is free once the engine finished sending the message that last
    // left from it (forwarded messages never used it).
    const size_t index = posted_ % numSlots_;
    try {
      while (dataSendsDone_ < slotDataSend_[index]) {
        data_->waitSend();
        ++dataSendsDone_;
      }
    } catch (const std::exception& error) {
      return failed(error, "waiting for a free slot towards");
    }
    *slot = slots_.data + offsetOf(posted_);
    return CC_SUCCESS;
  }

  cc_result_t post(size_t bytes) override {
    CC_CHECK(checkFits(bytes));
    try {
      data_->send(offsetOf(posted_), bytes, offsetOf(posted_));
    } catch (const std::exception& error) {
      return failed(error, "sending to");
    }
    slotDataSend_[posted_ % numSlots_] = ++dataSends_;
    ++posted_;
    return CC_SUCCESS;
  }

  // Sends straight out of the receive channel's registered slots: the
  // allgather's forwarded bytes are never copied.
  cc_result_t forward(RecvChannel& from, const void* slot, size_t bytes) override {
    auto* source = dynamic_cast<GlooRecvChannel*>(&from);
    if (source == nullptr) return SendChannel::forward(from, slot, bytes);
    CC_CHECK(checkFits(bytes));
    CC_CHECK(waitForCredit());
    try {
      if (forwardSource_ != source) {
        forwardBuffer_ = pair_->createSendBuffer(dataSlot(self_, peer_, tag_), source->slotMemory(),
                                                 source->slotMemoryBytes());
        forwardSource_ = source;
      }
      const size_t offset = static_cast<const unsigned char*>(slot) - source->slotMemory();
      forwardBuffer_->send(offset, bytes, offsetOf(posted_));
      forwardBuffer_->waitSend();
    } catch (const std::exception& error) {
      return failed(error, "forwarding to");
    }
    ++posted_;
    return CC_SUCCESS;
  }

  size_t slotBytes() const override { return slotBytes_; }

  cc_result_t openRegion(const void* base, size_t bytes) override {
    CC_CHECK(checkRegions());
    if (region_) return setError(CC_INTERNAL_ERROR, "a region towards rank %d is open already", peer_);
    try {
      // Gloo's send buffers only read their memory.
      region_ = pair_->createSendBuffer(channelSlot(self_, peer_, tag_, kRegionSlot), const_cast<void*>(base), bytes);
    } catch (const std::exception& error) {
      return failed(error, "opening a region towards");
    }
    localRegionBytes_ = bytes;
    receiverRegionKnown_ = false;
    return CC_SUCCESS;
  }

  cc_result_t postRegion(size_t headerBytes, size_t offset, size_t bytes) override {
    if (!region_) return setError(CC_INTERNAL_ERROR, "no region towards rank %d is open", peer_);
    if (offset > localRegionBytes_ || bytes > localRegionBytes_ - offset) {
      return setError(CC_INTERNAL_ERROR, "bytes %zu to %zu are outside this rank's %zu-byte region", offset,
                      offset + bytes, localRegionBytes_);
    }
    CC_CHECK(learnReceiverRegion());
    if (offset > receiverRegionBytes_ || bytes > receiverRegionBytes_ - offset) {
      return setError(CC_REMOTE_ERROR,
                      "rank %d's output holds %llu bytes, and this rank's call sends it bytes %zu to %zu: do the "
                      "ranks' counts differ?",
                      peer_, static_cast<unsigned long long>(receiverRegionBytes_), offset, offset + bytes);
    }
    CC_CHECK(post(headerBytes));
    try {
      region_->send(offset, bytes, offset);
    } catch (const std::exception& error) {
      return failed(error, "sending to");
    }
    ++regionSends_;
    return CC_SUCCESS;
  }

  cc_result_t closeRegion(bool complete) override {
    if (!region_) return CC_SUCCESS;
    cc_result_t result = CC_SUCCESS;
    if (complete) {
      try {
        for (; regionSends_ > 0; --regionSends_) region_->waitSend();
      } catch (const std::exception& error) {
        result = failed(error, "sending to");
      }
      // The receiver sent its size once for this region: take it, sends or
      // not, so that the next region's is the next one read.
      if (result == CC_SUCCESS) result = learnReceiverRegion();
    }
    if (!complete || result != CC_SUCCESS) breakLink();
    regionSends_ = 0;
    region_.reset();
    return result;
  }

 private:
  cc_result_t learnReceiverRegion() {
    if (receiverRegionKnown_) return CC_SUCCESS;
    try {
      regionSizeBuffer_->waitRecv();
    } catch (const std::exception& error) {
      return failed(error, "waiting for the region of");
    }
    uint64_t size = 0;
    std::memcpy(&size, regionSize_.data, sizeof(size));
    receiverRegionBytes_ = size;
    receiverRegionKnown_ = true;
    return CC_SUCCESS;
  }

  // Message m goes to the receiver's slot m % numSlots, free once the
  // receiver released message m - numSlots (each credit returns creditBatch_).
  cc_result_t waitForCredit() {
    const uint64_t needed = posted_ + 1 > static_cast<uint64_t>(numSlots_) ? posted_ + 1 - numSlots_ : 0;
    try {
      while (creditsReceived_ * creditBatch_ < needed) {
        creditBuffer_->waitRecv();
        ++creditsReceived_;
      }
    } catch (const std::exception& error) {
      return failed(error, "waiting for a free slot towards");
    }
    return CC_SUCCESS;
  }

  uint64_t posted_ = 0;
  uint64_t creditsReceived_ = 0;
  uint64_t dataSends_ = 0;
  uint64_t dataSendsDone_ = 0;
  std::vector<uint64_t> slotDataSend_;  // per slot: the data send that last used it
  const GlooRecvChannel* forwardSource_ = nullptr;
  std::unique_ptr<gloo::transport::Buffer> forwardBuffer_;
  size_t localRegionBytes_ = 0;
  uint64_t receiverRegionBytes_ = 0;
  bool receiverRegionKnown_ = false;
  uint64_t regionSends_ = 0;
};

class GlooTransport : public Transport {
 public:
  GlooTransport(int rank, int nranks, bool ibverbs, double linkGbps,
                std::shared_ptr<gloo::transport::Device> device,
                std::shared_ptr<gloo::rendezvous::Context> context)
      : rank_(rank), nranks_(nranks), ibverbs_(ibverbs), linkGbps_(linkGbps),
        device_(std::move(device)), context_(std::move(context)) {}

  ~GlooTransport() override = default;

  TransportProperties properties() const override {
    return {ibverbs_ ? "ibverbs" : "tcp", true, false, linkGbps_, !ibverbs_};
  }
  int rank() const override { return rank_; }
  int nranks() const override { return nranks_; }

  cc_result_t openSend(int peer, int tag, size_t slotBytes, int numSlots,
                       std::unique_ptr<SendChannel>* out) override {
    CC_CHECK(checkPeer(peer));
    auto channel = std::make_unique<GlooSendChannel>(peer, slotBytes, numSlots, !ibverbs_, broken_);
    CC_CHECK(channel->open(*context_->getPair(peer), rank_, tag));
    *out = std::move(channel);
    return CC_SUCCESS;
  }

  cc_result_t openRecv(int peer, int tag, size_t slotBytes, int numSlots,
                       std::unique_ptr<RecvChannel>* out) override {
    CC_CHECK(checkPeer(peer));
    auto channel = std::make_unique<GlooRecvChannel>(peer, slotBytes, numSlots, !ibverbs_, broken_);
    CC_CHECK(channel->open(*context_->getPair(peer), rank_, tag));
    *out = std::move(channel);
    return CC_SUCCESS;
  }

  void abort() override {
    broken_->aborted.store(true);
    broken_->broken.store(true);
    // A tcp pair's exception wakes every wait on its buffers (the caller's
    // included, which close() alone leaves to its timeout) and closes its
    // socket, so peers blocked on us fail at once too. ibverbs pairs keep
    // that hook private: there the waits end at the timeout.
    for (int peer = 0; peer < nranks_; ++peer) {
      if (peer == rank_) continue;
      try {
        auto* tcpPair = dynamic_cast<gloo::transport::tcp::Pair*>(context_->getPair(peer).get());
        if (tcpPair != nullptr) TcpPairWaker::wake(*tcpPair, "the communicator was aborted");
      } catch (const std::exception& error) {
        CC_WARN("waking the waits on rank %d during abort: %s", peer, error.what());
      }
    }
    try {
      context_->closeConnections();
    } catch (const std::exception& error) {
      CC_WARN("closing Gloo connections during abort: %s", error.what());
    }
  }

 private:
  cc_result_t checkPeer(int peer) const {
    if (peer < 0 || peer >= nranks_ || peer == rank_) {
      return setError(CC_INTERNAL_ERROR, "no Gloo pair from rank %d to rank %d", rank_, peer);
    }
    return CC_SUCCESS;
  }

  int rank_;
  int nranks_;
  bool ibverbs_;
  double linkGbps_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
  BrokenFlag broken_ = std::make_shared<LinkState>();
};

cc_result_t createDevice(const TransportSetup& setup, bool ibverbs,
                         std::shared_ptr<gloo::transport::Device>* device, double* linkGbps) {
  try {
    if (ibverbs) {
      auto names = gloo::transport::ibverbs::getDeviceNames();
      if (names.empty()) {
        return setError(CC_SYSTEM_ERROR,
                        "CC_TRANSPORT=ibverbs but this host has no ibverbs device");
      }
      gloo::transport::ibverbs::attr attr;
      attr.name = setup.ibDevice.empty() ? names.front() : setup.ibDevice;
      if (std::find(names.begin(), names.end(), attr.name) == names.end()) {
        std::string known;
        for (const auto& name : names) known += (known.empty() ? "" : ", ") + name;
        return setError(CC_INVALID_ARGUMENT, "CC_IB_DEVICE=%s is not an ibverbs device (have: %s)",
                        attr.name.c_str(), known.c_str());
      }
      attr.port = 1;
      attr.index = 0;
      *device = gloo::transport::ibverbs::CreateDevice(attr);
      *linkGbps = 0.0;
    } else {
      gloo::transport::tcp::attr attr;
      if (!setup.socketIfname.empty()) {
        attr.iface = setup.socketIfname;
      } else {
        attr.hostname = setup.store->localHost();
      }
      *device = gloo::transport::tcp::CreateDevice(attr);
      int mbps = (*device)->getInterfaceSpeed();
      *linkGbps = mbps > 0 ? mbps / 1000.0 : 0.0;
    }
  } catch (const std::exception& error) {
    return setError(CC_SYSTEM_ERROR, "creating the Gloo %s device failed: %s",
                    ibverbs ? "ibverbs" : "tcp", error.what());
  }
  return CC_SUCCESS;
}

// Gloo's tcp pair sets SO_SNDBUF to the size of the first message it sends
// and raises it only for larger ones, and setting it switches the kernel's
// autotuning off. A pair whose first messages are small (a minimal call, a
// credit, the slots of CC_CHUNK_BYTES=4096) is left with the kernel's
// minimum, 4.6 KB: each write then waits for the peer's acknowledgement
// (ring calls of 128 K values with 4 KiB slots took 0.54 s on loopback). One
// message of this size on every pair at init sets a buffer that holds
// several slots of every channel on it. Its bytes are never read, so every
// peer's message lands in the same memory.
constexpr size_t kPairSendBufferBytes = size_t(512) << 10;
constexpr int kSendBufferSizingTag = 1 << 12;  // beyond every channel's tag

cc_result_t sizePairSendBuffers(gloo::rendezvous::Context& context, int rank, int nranks) {
  if (nranks < 2) return CC_SUCCESS;
  AlignedMemory outgoing(kPairSendBufferBytes);
  AlignedMemory incoming(kPairSendBufferBytes);
  if (!outgoing.data || !incoming.data) {
    return setError(CC_SYSTEM_ERROR, "cannot allocate %zu bytes to size the tcp send buffers",
                    2 * kPairSendBufferBytes);
  }
  std::vector<std::unique_ptr<gloo::transport::Buffer>> sends(nranks), recvs(nranks);
  int peer = -1;
  try {
    for (peer = 0; peer < nranks; ++peer) {
      if (peer == rank) continue;
      gloo::transport::Pair& pair = *context.getPair(peer);
      recvs[peer] = pair.createRecvBuffer(dataSlot(peer, rank, kSendBufferSizingTag),
                                          incoming.data, kPairSendBufferBytes);
      sends[peer] = pair.createSendBuffer(dataSlot(rank, peer, kSendBufferSizingTag), outgoing.data,
                                          kPairSendBufferBytes);
    }
    for (peer = 0; peer < nranks; ++peer) {
      if (peer != rank) sends[peer]->send(0, kPairSendBufferBytes, 0);
    }
    for (peer = 0; peer < nranks; ++peer) {
      if (peer == rank) continue;
      sends[peer]->waitSend();
      recvs[peer]->waitRecv();
    }
  } catch (const std::exception& error) {
    bool timedOut = std::strstr(error.what(), "imeout") != nullptr;
    return setError(timedOut ? CC_TIMEOUT : CC_REMOTE_ERROR, "sizing the tcp send buffer towards rank %d failed: %s",
                    peer, error.what());
  }
  return CC_SUCCESS;
}

}  // namespace

cc_result_t connectGlooContext(const TransportSetup& setup, bool ibverbs,
                               std::shared_ptr<gloo::rendezvous::Context>* context,
                               std::shared_ptr<gloo::transport::Device>* device, double* linkGbps) {
  if (setup.store == nullptr) {
    return setError(CC_INTERNAL_ERROR, "a Gloo context needs the rendezvous store");
  }
  CC_CHECK(createDevice(setup, ibverbs, device, linkGbps));
  auto connected = std::make_shared<gloo::rendezvous::Context>(setup.rank, setup.nranks);
  try {
    connected->setTimeout(std::chrono::milliseconds(setup.timeoutMs));
    connected->connectFullMesh(*setup.store, *device);
  } catch (const std::exception& error) {
    bool timedOut = std::strstr(error.what(), "imeout") != nullptr;
    return setError(timedOut ? CC_TIMEOUT : CC_REMOTE_ERROR,
                    "Gloo could not connect rank %d to its %d peers: %s", setup.rank,
                    setup.nranks - 1, error.what());
  }
  *context = std::move(connected);
  return CC_SUCCESS;
}

cc_result_t createGlooTransport(const TransportSetup& setup, bool ibverbs,
                                std::unique_ptr<Transport>* out) {
  std::shared_ptr<gloo::rendezvous::Context> context;
  std::shared_ptr<gloo::transport::Device> device;
  double linkGbps = 0.0;
  CC_CHECK(connectGlooContext(setup, ibverbs, &context, &device, &linkGbps));
  if (!ibverbs) CC_CHECK(sizePairSendBuffers(*context, setup.rank, setup.nranks));
  out->reset(new GlooTransport(setup.rank, setup.nranks, ibverbs, linkGbps, std::move(device),
                               std::move(context)));
  return CC_SUCCESS;
}

}  // namespace cc
