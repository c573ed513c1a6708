// Ranks as threads of one process: a channel is a ring of slots in ordinary
// memory shared by the two threads, with counters under a mutex.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "base/error.h"
#include "transports/local/local_fabric.h"
#include "transports/transport.h"

namespace cc {
namespace {

struct LocalLink {
  LocalLink(size_t slotBytes_, int numSlots_)
      : slotBytes(slotBytes_), numSlots(numSlots_), memory(slotBytes_ * numSlots_) {}
  const size_t slotBytes;
  const int numSlots;
  std::vector<unsigned char> memory;
  std::mutex mutex;
  std::condition_variable changed;
  uint64_t posted = 0;    // messages the sender made visible
  uint64_t released = 0;  // messages the receiver handed back
};

using Fabric = LocalFabric<LocalLink>;

// What both ends of a local channel share: the link and how to wait on it.
class LocalChannelEnd {
 protected:
  LocalChannelEnd(std::shared_ptr<Fabric> fabric, std::shared_ptr<LocalLink> link, int peer, int timeoutMs)
      : fabric_(std::move(fabric)), link_(std::move(link)), peer_(peer), timeoutMs_(timeoutMs) {}

  template <typename Ready>
  cc_result_t waitUntil(std::unique_lock<std::mutex>& lock, Ready ready, const char* what) {
    return waitOnLocalLink(*fabric_, *link_, lock, timeoutMs_, ready, what, peer_, "local transport");
  }
  unsigned char* slotOf(uint64_t message) const {
    return link_->memory.data() + (message % link_->numSlots) * link_->slotBytes;
  }

  std::shared_ptr<Fabric> fabric_;
  std::shared_ptr<LocalLink> link_;
  int peer_;
  int timeoutMs_;
};

class LocalSendChannel : public SendChannel, private LocalChannelEnd {
 public:
  LocalSendChannel(std::shared_ptr<Fabric> fabric, std::shared_ptr<LocalLink> link, int peer, int timeoutMs)
      : LocalChannelEnd(std::move(fabric), std::move(link), peer, timeoutMs) {}

  cc_result_t acquire(void** slot) override {
    std::unique_lock<std::mutex> lock(link_->mutex);
    CC_CHECK(waitUntil(
        lock, [&] { return link_->posted - link_->released < static_cast<uint64_t>(link_->numSlots); },
        "waiting for a free slot towards"));
    *slot = slotOf(link_->posted);
    return CC_SUCCESS;
  }

  cc_result_t post(size_t bytes) override {
    if (bytes > link_->slotBytes) {
      return setError(CC_INTERNAL_ERROR, "message of %zu bytes exceeds the %zu-byte slot", bytes,
                      link_->slotBytes);
    }
    std::lock_guard<std::mutex> lock(link_->mutex);
    ++link_->posted;
    link_->changed.notify_all();
    return CC_SUCCESS;
  }

  size_t slotBytes() const override { return link_->slotBytes; }
};

class LocalRecvChannel : public RecvChannel, private LocalChannelEnd {
 public:
  LocalRecvChannel(std::shared_ptr<Fabric> fabric, std::shared_ptr<LocalLink> link, int peer, int timeoutMs)
      : LocalChannelEnd(std::move(fabric), std::move(link), peer, timeoutMs) {}

  cc_result_t wait(void** slot) override {
    std::unique_lock<std::mutex> lock(link_->mutex);
    CC_CHECK(waitUntil(lock, [&] { return link_->posted > link_->released; }, "waiting for data from"));
    *slot = slotOf(link_->released);
    return CC_SUCCESS;
  }

  cc_result_t release() override {
    std::lock_guard<std::mutex> lock(link_->mutex);
    if (link_->released == link_->posted) {
      return setError(CC_INTERNAL_ERROR, "release() without a message from rank %d", peer_);
    }
    ++link_->released;
    link_->changed.notify_all();
    return CC_SUCCESS;
  }

  size_t slotBytes() const override { return link_->slotBytes; }
};

auto makeLink(size_t slotBytes, int numSlots) {
  return [slotBytes, numSlots](std::shared_ptr<LocalLink>* link) {
    *link = std::make_shared<LocalLink>(slotBytes, numSlots);
    return CC_SUCCESS;
  };
}

class LocalTransport : public Transport {
 public:
  LocalTransport(const TransportSetup& setup)
      : rank_(setup.rank), nranks_(setup.nranks), timeoutMs_(setup.timeoutMs),
        fabric_(joinLocalFabric<LocalLink>(setup.nonce)) {}

  TransportProperties properties() const override { return {"local", true, false, 0.0}; }
  int rank() const override { return rank_; }
  int nranks() const override { return nranks_; }

  cc_result_t openSend(int peer, int tag, size_t slotBytes, int numSlots,
                       std::unique_ptr<SendChannel>* out) override {
    std::shared_ptr<LocalLink> link;
    CC_CHECK(fabric_->link(rank_, peer, tag, slotBytes, numSlots, makeLink(slotBytes, numSlots), &link));
    out->reset(new LocalSendChannel(fabric_, link, peer, timeoutMs_));
    return CC_SUCCESS;
  }

  cc_result_t openRecv(int peer, int tag, size_t slotBytes, int numSlots,
                       std::unique_ptr<RecvChannel>* out) override {
    std::shared_ptr<LocalLink> link;
    CC_CHECK(fabric_->link(peer, rank_, tag, slotBytes, numSlots, makeLink(slotBytes, numSlots), &link));
    out->reset(new LocalRecvChannel(fabric_, link, peer, timeoutMs_));
    return CC_SUCCESS;
  }

  void abort() override { fabric_->abort(rank_); }

 private:
  int rank_;
  int nranks_;
  int timeoutMs_;
  std::shared_ptr<Fabric> fabric_;
};

}  // namespace

cc_result_t createLocalTransport(const TransportSetup& setup, std::unique_ptr<Transport>* out) {
  out->reset(new LocalTransport(setup));
  return CC_SUCCESS;
}

}  // namespace cc
