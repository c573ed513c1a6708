// NCCL for device memory: ncclSend/ncclRecv on the collective's stream, one
// process (and one GPU) per rank, the NCCL communicator created from our
// bootstrap (rank 0's ncclUniqueId travels through the store).
//
// Slots are staging buffers on the GPU, allocated once when a channel opens.
// Everything is stream-ordered, so a slot is free again once the stream has
// passed the operation that used it, and no credit flows back. A send does
// not go out at post(): NCCL's point-to-point calls complete only when both
// ends run them, so two ranks that each sent before receiving would wait for
// each other. Sends are held until this rank's next receive and enqueued with
// it in one NCCL group (a ring hop is then "send to next, receive from
// previous" on every rank at once), or at flush() when the collective ends.
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "transports/rendezvous.h"
#include "transports/transport.h"

namespace cc {
namespace {

cc_result_t ncclFailure(ncclResult_t status, ncclComm_t comm, const char* what, int peer) {
  const char* detail = comm != nullptr ? ncclGetLastError(comm) : "";
  const cc_result_t code = status == ncclRemoteError || status == ncclSystemError ? CC_REMOTE_ERROR
                           : status == ncclUnhandledCudaError                   ? CC_CUDA_ERROR
                           : status == ncclInvalidArgument || status == ncclInvalidUsage ? CC_INVALID_USAGE
                                                                                          : CC_SYSTEM_ERROR;
  const std::string with = peer >= 0 ? " with rank " + std::to_string(peer) : std::string();
  return setError(code, "nccl transport: %s%s: %s%s%s", what, with.c_str(), ncclGetErrorString(status),
                  detail && detail[0] ? ": " : "", detail ? detail : "");
}

struct PendingSend {
  const void* data;
  size_t bytes;
  int peer;
};

class NcclTransport;

// What both ends of a channel hold: the peer and the channel's GPU slots,
// used in turn (message k in slot k % numSlots).
class NcclChannelEnd {
 protected:
  NcclChannelEnd(NcclTransport& transport, int peer, size_t slotBytes, int numSlots, unsigned char* memory)
      : transport_(transport), peer_(peer), slotBytes_(slotBytes), numSlots_(numSlots), memory_(memory) {}
  ~NcclChannelEnd() { cudaFree(memory_); }
  NcclChannelEnd(const NcclChannelEnd&) = delete;
  NcclChannelEnd& operator=(const NcclChannelEnd&) = delete;

  unsigned char* slotOf(uint64_t message) const {
    return memory_ + (message % static_cast<uint64_t>(numSlots_)) * slotBytes_;
  }
  cc_result_t checkFits(size_t bytes) const {
    if (bytes > slotBytes_) {
      return setError(CC_INTERNAL_ERROR, "message of %zu bytes exceeds the %zu-byte slot", bytes, slotBytes_);
    }
    return CC_SUCCESS;
  }

  NcclTransport& transport_;
  int peer_;
  size_t slotBytes_;
  int numSlots_;
  unsigned char* memory_;
};

class NcclSendChannel : public SendChannel, private NcclChannelEnd {
 public:
  NcclSendChannel(NcclTransport& transport, int peer, size_t slotBytes, int numSlots, unsigned char* memory)
      : NcclChannelEnd(transport, peer, slotBytes, numSlots, memory) {}

  cc_result_t acquire(void** slot) override {
    *slot = slotOf(next_);
    return CC_SUCCESS;
  }
  cc_result_t post(size_t bytes) override;
  // Sends straight from the receive slot: it is not rewritten before this
  // send ran, since the stream passes the send's group first.
  cc_result_t forward(RecvChannel& from, const void* slot, size_t bytes) override;
  size_t slotBytes() const override { return slotBytes_; }

 private:
  uint64_t next_ = 0;
};

class NcclRecvChannel : public RecvChannel, private NcclChannelEnd {
 public:
  NcclRecvChannel(NcclTransport& transport, int peer, size_t slotBytes, int numSlots, unsigned char* memory)
      : NcclChannelEnd(transport, peer, slotBytes, numSlots, memory) {}

  cc_result_t wait(void**) override {
    return setError(CC_INTERNAL_ERROR, "nccl transport: a receive from rank %d must name its size (waitBytes)", peer_);
  }
  cc_result_t waitBytes(size_t bytes, void** slot) override;
  cc_result_t release() override {
    ++received_;
    return CC_SUCCESS;
  }
  size_t slotBytes() const override { return slotBytes_; }

 private:
  uint64_t received_ = 0;
};

class NcclTransport : public Transport {
 public:
  NcclTransport(int rank, int nranks, ncclComm_t comm) : rank_(rank), nranks_(nranks), comm_(comm) {}
  ~NcclTransport() override {
    if (comm_ != nullptr && !aborted_) ncclCommDestroy(comm_);
  }

  TransportProperties properties() const override { return {"nccl", false, true, 0.0}; }
  int rank() const override { return rank_; }
  int nranks() const override { return nranks_; }

  cc_result_t openSend(int peer, int, size_t slotBytes, int numSlots, std::unique_ptr<SendChannel>* out) override {
    unsigned char* memory = nullptr;
    CC_CHECK(allocate(slotBytes, numSlots, peer, &memory));
    out->reset(new NcclSendChannel(*this, peer, slotBytes, numSlots, memory));
    return CC_SUCCESS;
  }
  cc_result_t openRecv(int peer, int, size_t slotBytes, int numSlots, std::unique_ptr<RecvChannel>* out) override {
    unsigned char* memory = nullptr;
    CC_CHECK(allocate(slotBytes, numSlots, peer, &memory));
    out->reset(new NcclRecvChannel(*this, peer, slotBytes, numSlots, memory));
    return CC_SUCCESS;
  }

  void abort() override {
    if (comm_ != nullptr && !aborted_.exchange(true)) ncclCommAbort(comm_);
  }
  void setStream(void* stream) override { stream_ = static_cast<cudaStream_t>(stream); }

  cc_result_t flush() override { return enqueueGroup(nullptr, 0, -1); }

  void holdSend(const void* data, size_t bytes, int peer) { pending_.push_back(PendingSend{data, bytes, peer}); }

  // One group: the held sends, then the receive (when `into` is not null).
  cc_result_t enqueueGroup(void* into, size_t bytes, int from) {
    if (aborted_) return setError(CC_REMOTE_ERROR, "nccl transport: the communicator was aborted");
    if (pending_.empty() && into == nullptr) return CC_SUCCESS;
    ncclResult_t status = ncclGroupStart();
    if (status != ncclSuccess) return ncclFailure(status, comm_, "ncclGroupStart", -1);
    cc_result_t result = CC_SUCCESS;
    for (const PendingSend& send : pending_) {
      status = ncclSend(send.data, send.bytes, ncclUint8, send.peer, comm_, stream_);
      if (status != ncclSuccess) {
        result = ncclFailure(status, comm_, "ncclSend", send.peer);
        break;
      }
    }
    pending_.clear();
    if (result == CC_SUCCESS && into != nullptr) {
      status = ncclRecv(into, bytes, ncclUint8, from, comm_, stream_);
      if (status != ncclSuccess) result = ncclFailure(status, comm_, "ncclRecv", from);
    }
    status = ncclGroupEnd();
    if (result == CC_SUCCESS && status != ncclSuccess) result = ncclFailure(status, comm_, "ncclGroupEnd", -1);
    return result;
  }

  // The engine's own asynchronous errors (a peer that died, a network error).
  cc_result_t asyncError() {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t status = ncclCommGetAsyncError(comm_, &async);
    if (status != ncclSuccess) return ncclFailure(status, comm_, "ncclCommGetAsyncError", -1);
    if (async != ncclSuccess && async != ncclInProgress) return ncclFailure(async, comm_, "asynchronous error", -1);
    return CC_SUCCESS;
  }

 private:
  cc_result_t allocate(size_t slotBytes, int numSlots, int peer, unsigned char** memory) {
    const cudaError_t status = cudaMalloc(memory, slotBytes * static_cast<size_t>(numSlots));
    if (status != cudaSuccess) {
      return setError(CC_CUDA_ERROR, "nccl transport: cudaMalloc of %d x %zu bytes for the channel with rank %d: %s",
                      numSlots, slotBytes, peer, cudaGetErrorString(status));
    }
    return CC_SUCCESS;
  }

  int rank_;
  int nranks_;
  ncclComm_t comm_;
  std::atomic<bool> aborted_{false};  // abort may come from another thread
  cudaStream_t stream_ = nullptr;
  std::vector<PendingSend> pending_;
};

cc_result_t NcclSendChannel::post(size_t bytes) {
  CC_CHECK(checkFits(bytes));
  transport_.holdSend(slotOf(next_), bytes, peer_);
  ++next_;
  return CC_SUCCESS;
}

cc_result_t NcclSendChannel::forward(RecvChannel&, const void* slot, size_t bytes) {
  transport_.holdSend(slot, bytes, peer_);
  return CC_SUCCESS;
}

cc_result_t NcclRecvChannel::waitBytes(size_t bytes, void** slot) {
  CC_CHECK(checkFits(bytes));
  unsigned char* into = slotOf(received_);
  CC_CHECK(transport_.enqueueGroup(into, bytes, peer_));
  *slot = into;
  return CC_SUCCESS;
}

}  // namespace

cc_result_t createNcclTransport(const TransportSetup& setup, std::unique_ptr<Transport>* out) {
  if (setup.store == nullptr) return setError(CC_INTERNAL_ERROR, "nccl transport: no store to exchange the NCCL id");
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  const std::string key = "cc/nccl/id";
  if (setup.rank == 0) {
    const ncclResult_t status = ncclGetUniqueId(&id);
    if (status != ncclSuccess) return ncclFailure(status, nullptr, "ncclGetUniqueId", -1);
    CC_CHECK(setup.store->trySet(key, std::vector<char>(id.internal, id.internal + sizeof(id.internal))));
  } else {
    std::vector<char> bytes;
    CC_CHECK(setup.store->tryGet(key, &bytes));
    if (bytes.size() != sizeof(id.internal)) {
      return setError(CC_REMOTE_ERROR, "nccl transport: rank 0 published an NCCL id of %zu bytes, expected %zu",
                      bytes.size(), sizeof(id.internal));
    }
    std::memcpy(id.internal, bytes.data(), bytes.size());
  }
  ncclComm_t comm = nullptr;
  const ncclResult_t status = ncclCommInitRank(&comm, setup.nranks, id, setup.rank);
  if (status != ncclSuccess) return ncclFailure(status, comm, "ncclCommInitRank", -1);
  out->reset(new NcclTransport(setup.rank, setup.nranks, comm));
  return CC_SUCCESS;
}

cc_result_t ncclTransportAsyncError(Transport& transport) {
  return static_cast<NcclTransport&>(transport).asyncError();
}

}  // namespace cc
