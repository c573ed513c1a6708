// Ranks as threads of one process, on device memory. A channel is a ring of
// slots in GPU memory; the sender's kernels write straight into the
// receiver's slot. Nothing waits for the GPU: the host threads exchange, under
// a mutex, CUDA events that order the two ranks' streams (a post records an
// event the receiver's stream waits for; a release records one the sender's
// stream waits for before it rewrites the slot), so a collective enqueues and
// returns like NCCL's. Host-side waits are only for the peer's thread to have
// enqueued its half, and they honour the timeout.
//
// Ranks may share one GPU (single-GPU testing) or use several with peer
// access between them.
#include <cuda_runtime.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "base/error.h"
#include "transports/local/local_fabric.h"
#include "transports/transport.h"

namespace cc {
namespace {

cc_result_t cudaFailure(cudaError_t status, const char* what) {
  return setError(CC_CUDA_ERROR, "local device transport: %s: %s", what, cudaGetErrorString(status));
}

struct DeviceLink {
  DeviceLink(size_t slotBytes_, int numSlots_) : slotBytes(slotBytes_), numSlots(numSlots_) {}
  ~DeviceLink() {
    for (cudaEvent_t event : postEvents) cudaEventDestroy(event);
    for (cudaEvent_t event : releaseEvents) cudaEventDestroy(event);
    if (memory) cudaFree(memory);
  }
  DeviceLink(const DeviceLink&) = delete;
  DeviceLink& operator=(const DeviceLink&) = delete;

  const size_t slotBytes;
  const int numSlots;
  unsigned char* memory = nullptr;
  int memoryDevice = -1;
  // Each slot's last post (recorded on the sender's stream) and last release
  // (on the receiver's): a slot's event is recorded again only after the
  // other side waited for it, since the counters hold the slot until then.
  std::vector<cudaEvent_t> postEvents, releaseEvents;
  std::mutex mutex;
  std::condition_variable changed;
  uint64_t posted = 0;
  uint64_t released = 0;
};

using DeviceFabric = LocalFabric<DeviceLink>;

// A link's slots live on the GPU of whichever end opens it first.
auto makeDeviceLink(int sender, int receiver, size_t slotBytes, int numSlots, int device) {
  return [=](std::shared_ptr<DeviceLink>* link) {
    auto created = std::make_shared<DeviceLink>(slotBytes, numSlots);
    const cudaError_t status = cudaMalloc(&created->memory, slotBytes * static_cast<size_t>(numSlots));
    if (status != cudaSuccess) {
      return setError(CC_CUDA_ERROR, "local device transport: cudaMalloc of %d x %zu bytes for channel %d->%d: %s",
                      numSlots, slotBytes, sender, receiver, cudaGetErrorString(status));
    }
    created->memoryDevice = device;
    created->postEvents.resize(numSlots, nullptr);
    created->releaseEvents.resize(numSlots, nullptr);
    *link = created;
    return CC_SUCCESS;
  };
}

// The link of (sender, receiver, tag); the end on another GPU than the slots
// gets peer access to them.
cc_result_t openDeviceLink(DeviceFabric& fabric, int sender, int receiver, int tag, size_t slotBytes, int numSlots,
                           std::shared_ptr<DeviceLink>* out) {
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return cudaFailure(status, "cudaGetDevice");
  CC_CHECK(fabric.link(sender, receiver, tag, slotBytes, numSlots,
                       makeDeviceLink(sender, receiver, slotBytes, numSlots, device), out));
  const int memoryDevice = (*out)->memoryDevice;
  if (memoryDevice == device) return CC_SUCCESS;
  int canAccess = 0;
  status = cudaDeviceCanAccessPeer(&canAccess, device, memoryDevice);
  if (status != cudaSuccess) return cudaFailure(status, "cudaDeviceCanAccessPeer");
  if (!canAccess) {
    return setError(CC_UNSUPPORTED,
                    "local device transport: channel %d->%d: GPU %d cannot access GPU %d (no peer access between "
                    "them); put both ranks on one GPU or use one process per GPU",
                    sender, receiver, device, memoryDevice);
  }
  status = cudaDeviceEnablePeerAccess(memoryDevice, 0);
  if (status == cudaErrorPeerAccessAlreadyEnabled) {
    cudaGetLastError();
  } else if (status != cudaSuccess) {
    return cudaFailure(status, "cudaDeviceEnablePeerAccess");
  }
  return CC_SUCCESS;
}

// Creates the events of one side of a link on this thread's device (an event
// must be recorded on a stream of its own device).
cc_result_t createEvents(std::vector<cudaEvent_t>* events, std::mutex& mutex) {
  std::lock_guard<std::mutex> lock(mutex);
  for (cudaEvent_t& event : *events) {
    if (event != nullptr) continue;
    const cudaError_t status = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
    if (status != cudaSuccess) return cudaFailure(status, "cudaEventCreateWithFlags");
  }
  return CC_SUCCESS;
}

// The rank's stream for the collective in progress, shared by its channels.
struct StreamHolder {
  cudaStream_t stream = nullptr;
};

class DeviceChannelEnd {
 protected:
  DeviceChannelEnd(std::shared_ptr<DeviceFabric> fabric, std::shared_ptr<DeviceLink> link, int peer, int timeoutMs,
                   std::shared_ptr<StreamHolder> stream)
      : fabric_(std::move(fabric)), link_(std::move(link)), peer_(peer), timeoutMs_(timeoutMs),
        stream_(std::move(stream)) {}

  template <typename Ready>
  cc_result_t waitUntil(std::unique_lock<std::mutex>& lock, Ready ready, const char* what) {
    return waitOnLocalLink(*fabric_, *link_, lock, timeoutMs_, ready, what, peer_, "local device transport");
  }
  int slotIndex(uint64_t message) const { return static_cast<int>(message % static_cast<uint64_t>(link_->numSlots)); }
  unsigned char* slotOf(uint64_t message) const { return link_->memory + slotIndex(message) * link_->slotBytes; }

  std::shared_ptr<DeviceFabric> fabric_;
  std::shared_ptr<DeviceLink> link_;
  int peer_;
  int timeoutMs_;
  std::shared_ptr<StreamHolder> stream_;
};

class LocalDeviceSendChannel : public SendChannel, private DeviceChannelEnd {
 public:
  LocalDeviceSendChannel(std::shared_ptr<DeviceFabric> fabric, std::shared_ptr<DeviceLink> link, int peer, int timeoutMs,
                            std::shared_ptr<StreamHolder> stream)
      : DeviceChannelEnd(std::move(fabric), std::move(link), peer, timeoutMs, std::move(stream)) {}

  cc_result_t acquire(void** slot) override {
    std::unique_lock<std::mutex> lock(link_->mutex);
    CC_CHECK(waitUntil(
        lock, [&] { return link_->posted - link_->released < static_cast<uint64_t>(link_->numSlots); },
        "waiting for a free slot towards"));
    if (link_->posted >= static_cast<uint64_t>(link_->numSlots)) {
      // The receiver's kernels must be done with the slot before ours rewrite it.
      const cudaError_t status = cudaStreamWaitEvent(stream_->stream, link_->releaseEvents[slotIndex(link_->posted)], 0);
      if (status != cudaSuccess) return cudaFailure(status, "cudaStreamWaitEvent (slot released)");
    }
    *slot = slotOf(link_->posted);
    return CC_SUCCESS;
  }

  cc_result_t post(size_t bytes) override {
    if (bytes > link_->slotBytes) {
      return setError(CC_INTERNAL_ERROR, "message of %zu bytes exceeds the %zu-byte slot", bytes, link_->slotBytes);
    }
    std::lock_guard<std::mutex> lock(link_->mutex);
    const cudaError_t status = cudaEventRecord(link_->postEvents[slotIndex(link_->posted)], stream_->stream);
    if (status != cudaSuccess) return cudaFailure(status, "cudaEventRecord (post)");
    ++link_->posted;
    link_->changed.notify_all();
    return CC_SUCCESS;
  }

  // The packed bytes move GPU to GPU on this rank's stream.
  cc_result_t forward(RecvChannel&, const void* slot, size_t bytes) override {
    void* out = nullptr;
    CC_CHECK(acquire(&out));
    const cudaError_t status = cudaMemcpyAsync(out, slot, bytes, cudaMemcpyDeviceToDevice, stream_->stream);
    if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpyAsync (forward)");
    return post(bytes);
  }

  size_t slotBytes() const override { return link_->slotBytes; }
};

class LocalDeviceRecvChannel : public RecvChannel, private DeviceChannelEnd {
 public:
  LocalDeviceRecvChannel(std::shared_ptr<DeviceFabric> fabric, std::shared_ptr<DeviceLink> link, int peer, int timeoutMs,
                            std::shared_ptr<StreamHolder> stream)
      : DeviceChannelEnd(std::move(fabric), std::move(link), peer, timeoutMs, std::move(stream)) {}

  cc_result_t wait(void** slot) override {
    std::unique_lock<std::mutex> lock(link_->mutex);
    CC_CHECK(waitUntil(lock, [&] { return link_->posted > link_->released; }, "waiting for data from"));
    const cudaError_t status = cudaStreamWaitEvent(stream_->stream, link_->postEvents[slotIndex(link_->released)], 0);
    if (status != cudaSuccess) return cudaFailure(status, "cudaStreamWaitEvent (data posted)");
    *slot = slotOf(link_->released);
    return CC_SUCCESS;
  }

  cc_result_t release() override {
    std::lock_guard<std::mutex> lock(link_->mutex);
    if (link_->released == link_->posted) {
      return setError(CC_INTERNAL_ERROR, "release() without a message from rank %d", peer_);
    }
    const cudaError_t status = cudaEventRecord(link_->releaseEvents[slotIndex(link_->released)], stream_->stream);
    if (status != cudaSuccess) return cudaFailure(status, "cudaEventRecord (release)");
    ++link_->released;
    link_->changed.notify_all();
    return CC_SUCCESS;
  }

  size_t slotBytes() const override { return link_->slotBytes; }
};

class LocalDeviceTransport : public Transport {
 public:
  explicit LocalDeviceTransport(const TransportSetup& setup)
      : rank_(setup.rank), nranks_(setup.nranks), timeoutMs_(setup.timeoutMs),
        fabric_(joinLocalFabric<DeviceLink>(setup.nonce)), stream_(std::make_shared<StreamHolder>()) {}

  TransportProperties properties() const override { return {"local", false, true, 0.0}; }
  int rank() const override { return rank_; }
  int nranks() const override { return nranks_; }

  cc_result_t openSend(int peer, int tag, size_t slotBytes, int numSlots, std::unique_ptr<SendChannel>* out) override {
    std::shared_ptr<DeviceLink> link;
    CC_CHECK(openDeviceLink(*fabric_, rank_, peer, tag, slotBytes, numSlots, &link));
    CC_CHECK(createEvents(&link->postEvents, link->mutex));
    out->reset(new LocalDeviceSendChannel(fabric_, link, peer, timeoutMs_, stream_));
    return CC_SUCCESS;
  }

  cc_result_t openRecv(int peer, int tag, size_t slotBytes, int numSlots, std::unique_ptr<RecvChannel>* out) override {
    std::shared_ptr<DeviceLink> link;
    CC_CHECK(openDeviceLink(*fabric_, peer, rank_, tag, slotBytes, numSlots, &link));
    CC_CHECK(createEvents(&link->releaseEvents, link->mutex));
    out->reset(new LocalDeviceRecvChannel(fabric_, link, peer, timeoutMs_, stream_));
    return CC_SUCCESS;
  }

  void abort() override { fabric_->abort(rank_); }
  void setStream(void* stream) override { stream_->stream = static_cast<cudaStream_t>(stream); }

 private:
  int rank_;
  int nranks_;
  int timeoutMs_;
  std::shared_ptr<DeviceFabric> fabric_;
  std::shared_ptr<StreamHolder> stream_;
};

}  // namespace

cc_result_t createLocalDeviceTransport(const TransportSetup& setup, std::unique_ptr<Transport>* out) {
  out->reset(new LocalDeviceTransport(setup));
  return CC_SUCCESS;
}

}  // namespace cc
