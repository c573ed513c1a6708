// The ring's primitives on device memory. Each verb enqueues one kernel of
// the device codec (encode, the fused hop, decode) on the collective's stream
// and moves the packed chunk through a stream-ordered transport (local device
// or NCCL): nothing waits for the GPU, so compressed_allreduce enqueues and
// returns like ncclAllReduce.
//
// Device frames carry no header: their engines deliver whole messages between
// fixed peers in order, and reading a header on the host would synchronise
// with the GPU on every hop. The price: ranks that give the device path
// different calls are not told apart from a good call (docs/gpu.md, "What
// is not checked on the device").
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/device_codec.h"
#include "prims/prims.h"

namespace cc {

class DevicePrims : public RingPrims {
 public:
  // args.sendbuf, recvbuf and residual are device pointers; args.codec is the
  // host codec of the same spec (sizes and alignment only).
  DevicePrims(const CollectiveArgs& args, const DeviceCodec& codec, void* stream);

  size_t chunkValues(size_t slotBytes) const override;
  cc_result_t encodeSend(SendChannel& to, size_t firstIndex, size_t count, uint32_t step) override;
  cc_result_t recvDecodeAddEncodeSend(RecvChannel& from, int fromRank, SendChannel& to, size_t firstIndex,
                                      size_t count, uint32_t step) override;
  cc_result_t recvDecodeAddEncodeSendDecode(RecvChannel& from, int fromRank, SendChannel& to, size_t firstIndex,
                                            size_t count, uint32_t step) override;
  cc_result_t recvForwardDecode(RecvChannel& from, int fromRank, SendChannel* to, size_t firstIndex, size_t count,
                                uint32_t step) override;

 private:
  RandomStream randomFor(uint32_t step) const;
  const unsigned char* local(size_t firstIndex) const;
  unsigned char* output(size_t firstIndex) const;
  cc_result_t fusedHop(RecvChannel& from, SendChannel& to, size_t firstIndex, size_t count, uint32_t step,
                       uint32_t divisor, void* decodedOut);

  CollectiveArgs args_;
  const DeviceCodec& codec_;
  void* stream_;
  size_t elementBytes_;
};

}  // namespace cc
