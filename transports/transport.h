// The transport interface: per-peer, one-directional channels, each a FIFO of
// fixed-size slots in registered memory (modelled on NCCL's net plugin plus
// its connector FIFOs). Prims encode straight into a send slot and decode
// straight out of a receive slot, so no byte is copied between the codec and
// the wire. Credits flow back from receiver to sender, so a slot is never
// overwritten before the receiver released it.
//
// Every wait honours the communicator's timeout and reports which peer it was
// waiting for; after abort() every pending and future wait fails promptly on
// this rank where the engine allows it, and peers see a broken connection.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include "base/error.h"
#include "compressedcoll.h"

namespace cc {

class RendezvousStore;

struct TransportProperties {
  const char* name;    // "local", "tcp", "ibverbs"
  bool hostMemory;     // slots live in host memory
  bool deviceMemory;   // slots live in GPU memory
  double linkGbps;     // nominal link speed, 0 when unknown (cost model input)
  // Channels can carry payloads between regions of the callers' own memory
  // (SendChannel::openRegion), so an exact allgather lands in the output
  // without a copy out of a slot.
  bool regions = false;
};

class RecvChannel;

class SendChannel {
 public:
  virtual ~SendChannel() = default;
  // Waits until the next slot may be written (the receiver released it and the
  // engine finished reading the previous message from it), returns it.
  virtual cc_result_t acquire(void** slot) = 0;
  // Sends the first `bytes` of the slot returned by the last acquire().
  virtual cc_result_t post(size_t bytes) = 0;
  // Sends the first `bytes` of `from`'s current slot (returned by its last
  // wait(), not yet released) as this channel's next message. Returns once
  // the slot may be released. Engines that can send from registered receive
  // memory do so without a copy; the default copies into a send slot.
  virtual cc_result_t forward(RecvChannel& from, const void* slot, size_t bytes);
  virtual size_t slotBytes() const = 0;

  // Regions (TransportProperties::regions): for one collective, payloads go
  // from [base, base + bytes) of this rank straight into the receiver's
  // region (RecvChannel::openRegion), each after its frame header through a
  // slot. Both ends open and close a region in the same collective.
  virtual cc_result_t openRegion(const void* base, size_t bytes);
  // Posts the first `headerBytes` of the slot of the last acquire(), then
  // base[offset, offset + bytes) into the receiver's region at `offset`. The
  // first post waits until the receiver opened its region, and fails if the
  // range does not fit it.
  virtual cc_result_t postRegion(size_t headerBytes, size_t offset, size_t bytes);
  // Waits until every payload left. `complete`: the collective ran to its end
  // (else the engine breaks the link: bytes may still be on their way).
  virtual cc_result_t closeRegion(bool complete);
};

class RecvChannel {
 public:
  virtual ~RecvChannel() = default;
  // Waits for the next message and returns its slot; it stays valid, and the
  // receiver may rewrite it, until release(). Messages arrive in the order
  // they were posted.
  virtual cc_result_t wait(void** slot) = 0;
  // wait() for engines that must be told a message's size before it arrives
  // (NCCL's ncclRecv): the caller knows it, since sizes are a deterministic
  // function of the call. Other engines ignore it.
  virtual cc_result_t waitBytes(size_t bytes, void** slot) {
    (void)bytes;
    return wait(slot);
  }
  // Hands the slot of the last wait() back to the sender.
  virtual cc_result_t release() = 0;
  virtual size_t slotBytes() const = 0;

  // The receiving end of SendChannel::openRegion: the sender's payloads land
  // in [base, base + bytes) until closeRegion.
  virtual cc_result_t openRegion(void* base, size_t bytes);
  // Waits for the payload of the frame whose header the last wait() returned.
  virtual cc_result_t waitRegion();
  virtual cc_result_t closeRegion(bool complete);
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual TransportProperties properties() const = 0;
  virtual int rank() const = 0;
  virtual int nranks() const = 0;
  // Both ends open their halves of a channel with the same (tag, slotBytes,
  // numSlots); a channel is identified by (sender, receiver, tag).
  virtual cc_result_t openSend(int peer, int tag, size_t slotBytes, int numSlots,
                               std::unique_ptr<SendChannel>* out) = 0;
  virtual cc_result_t openRecv(int peer, int tag, size_t slotBytes, int numSlots,
                               std::unique_ptr<RecvChannel>* out) = 0;
  // Breaks every connection; waits on this rank and on peers fail instead of
  // running into the timeout.
  virtual void abort() = 0;

  // Transports of device memory are stream-ordered: acquire, post, wait and
  // release enqueue on the stream of the collective in progress (a
  // cudaStream_t) and return without waiting for the GPU, and a slot is ready
  // for the next kernel enqueued on that stream. Host transports ignore both.
  virtual void setStream(void* stream) { (void)stream; }
  // Enqueues whatever the engine still holds back (NCCL's sends wait for the
  // next receive, to go out in one group with it); called at the end of a
  // collective.
  virtual cc_result_t flush() { return CC_SUCCESS; }
};

inline cc_result_t regionsUnsupported() {
  return setError(CC_INTERNAL_ERROR, "this transport's channels carry no regions (TransportProperties::regions)");
}
inline cc_result_t SendChannel::openRegion(const void*, size_t) { return regionsUnsupported(); }
inline cc_result_t SendChannel::postRegion(size_t, size_t, size_t) { return regionsUnsupported(); }
inline cc_result_t SendChannel::closeRegion(bool) { return CC_SUCCESS; }
inline cc_result_t RecvChannel::openRegion(void*, size_t) { return regionsUnsupported(); }
inline cc_result_t RecvChannel::waitRegion() { return regionsUnsupported(); }
inline cc_result_t RecvChannel::closeRegion(bool) { return CC_SUCCESS; }

inline cc_result_t SendChannel::forward(RecvChannel&, const void* slot, size_t bytes) {
  void* out = nullptr;
  cc_result_t result = acquire(&out);
  if (result != CC_SUCCESS) return result;
  std::memcpy(out, slot, bytes);
  return post(bytes);
}

struct TransportSetup {
  int rank = 0;
  int nranks = 1;
  int timeoutMs = 300000;
  uint64_t nonce = 0;               // the communicator's id: local ranks meet by it
  RendezvousStore* store = nullptr;  // rendezvous for the engines' own connections
  std::string socketIfname;         // CC_SOCKET_IFNAME ("" = the interface reaching the root)
  std::string ibDevice;             // CC_IB_DEVICE ("" = first device)
};

// Ranks as threads of one process.
cc_result_t createLocalTransport(const TransportSetup& setup, std::unique_ptr<Transport>* out);
// Ranks as threads of one process on device memory: slots on the GPU,
// ordered across the ranks' streams by CUDA events (several ranks may share
// one GPU). Needs a CUDA build; CC_UNSUPPORTED otherwise.
cc_result_t createLocalDeviceTransport(const TransportSetup& setup, std::unique_ptr<Transport>* out);
// NCCL on device memory, one GPU per rank; the NCCL communicator is made
// from rank 0's id, passed through the store. Builds with NCCL only.
cc_result_t createNcclTransport(const TransportSetup& setup, std::unique_ptr<Transport>* out);
// NCCL's asynchronous error for a transport made by createNcclTransport.
cc_result_t ncclTransportAsyncError(Transport& transport);
// Gloo's tcp or ibverbs device, both through bound buffers.
cc_result_t createGlooTransport(const TransportSetup& setup, bool ibverbs,
                                std::unique_ptr<Transport>* out);

}  // namespace cc
