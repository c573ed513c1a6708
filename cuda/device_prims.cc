#include "cuda/device_prims.h"

#include "base/error.h"

namespace cc {

DevicePrims::DevicePrims(const CollectiveArgs& args, const DeviceCodec& codec, void* stream)
    : args_(args), codec_(codec), stream_(stream), elementBytes_(elementBytes(elementTypeOf(args.datatype))) {}

// The same streams as the host prims: a value's draw depends on the
// collective, the rank, the step and its index, never on the chunking, so the
// device ring leaves the bits the host ring leaves.
RandomStream DevicePrims::randomFor(uint32_t step) const {
  return RandomStream{args_.seed, makeStreamId(args_.collectiveSeq, static_cast<uint32_t>(args_.rank), step)};
}

// Device frames are the payload alone; the host codec has the device codec's sizes.
size_t DevicePrims::chunkValues(size_t slotBytes) const { return valuesFitting(*args_.codec, slotBytes); }

const unsigned char* DevicePrims::local(size_t firstIndex) const {
  return static_cast<const unsigned char*>(args_.sendbuf) + firstIndex * elementBytes_;
}

unsigned char* DevicePrims::output(size_t firstIndex) const {
  return static_cast<unsigned char*>(args_.recvbuf) + firstIndex * elementBytes_;
}

cc_result_t DevicePrims::encodeSend(SendChannel& to, size_t firstIndex, size_t count, uint32_t step) {
  void* slot = nullptr;
  CC_CHECK(to.acquire(&slot));
  if (args_.residual != nullptr) {
    CC_CHECK(codec_.encodeWithResidual(local(firstIndex), args_.residual + firstIndex, count, firstIndex,
                                       randomFor(step), slot, stream_));
  } else {
    CC_CHECK(codec_.encode(local(firstIndex), count, firstIndex, randomFor(step), slot, stream_));
  }
  return to.post(codec_.packedBytes(count));
}

cc_result_t DevicePrims::fusedHop(RecvChannel& from, SendChannel& to, size_t firstIndex, size_t count, uint32_t step,
                                  uint32_t divisor, void* decodedOut) {
  const size_t payload = codec_.packedBytes(count);
  void* in = nullptr;
  CC_CHECK(from.waitBytes(payload, &in));
  void* out = nullptr;
  CC_CHECK(to.acquire(&out));
  if (args_.residual != nullptr) {
    CC_CHECK(codec_.decodeAddEncodeWithResidual(in, local(firstIndex), args_.residual + firstIndex, count, firstIndex,
                                                randomFor(step), divisor, out, decodedOut, stream_));
  } else {
    CC_CHECK(codec_.decodeAddEncode(in, local(firstIndex), count, firstIndex, randomFor(step), divisor, out,
                                    decodedOut, stream_));
  }
  CC_CHECK(from.release());
  return to.post(payload);
}

cc_result_t DevicePrims::recvDecodeAddEncodeSend(RecvChannel& from, int, SendChannel& to, size_t firstIndex,
                                                 size_t count, uint32_t step) {
  return fusedHop(from, to, firstIndex, count, step, 1, nullptr);
}

cc_result_t DevicePrims::recvDecodeAddEncodeSendDecode(RecvChannel& from, int, SendChannel& to, size_t firstIndex,
                                                       size_t count, uint32_t step) {
  const uint32_t divisor = args_.op == CC_AVG ? static_cast<uint32_t>(args_.nranks) : 1;
  return fusedHop(from, to, firstIndex, count, step, divisor, output(firstIndex));
}

cc_result_t DevicePrims::recvForwardDecode(RecvChannel& from, int, SendChannel* to, size_t firstIndex, size_t count,
                                           uint32_t) {
  const size_t payload = codec_.packedBytes(count);
  void* in = nullptr;
  CC_CHECK(from.waitBytes(payload, &in));
  if (to != nullptr) CC_CHECK(to->forward(from, in, payload));
  CC_CHECK(codec_.decode(in, count, output(firstIndex), stream_));
  return from.release();
}

}  // namespace cc
