// Codecs on device memory: the CUDA counterparts of the host block codecs
// (codec/codec.h), with the same packed formats and the same Philox draws, so
// that a device encode emits the bytes the host encode emits for the same
// seed, stream and indices. Every call enqueues kernels on `stream` (a
// cudaStream_t; null = the legacy default stream) and returns without
// synchronising; a launch failure comes back as CC_CUDA_ERROR naming the
// kernel. All pointers are device pointers.
//
// This header is plain C++ (no CUDA types) so that host code of the library
// can hold device codecs; the kernels live in cuda/*.cu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "codec/codec.h"
#include "codec/spec.h"
#include "compressedcoll.h"

namespace cc {

class DeviceCodec {
 public:
  virtual ~DeviceCodec() = default;
  virtual CodecId id() const = 0;
  // As Codec: ranges start at multiples of this many values.
  virtual size_t alignmentValues() const = 0;
  // As Codec::packedBytes; equal to the host codec's for the same spec.
  virtual size_t packedBytes(size_t count) const = 0;

  // packed <- C(local[0..count)); firstIndex is the global index of local[0].
  virtual cc_result_t encode(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed,
                             void* stream) const = 0;
  // out[0..count) <- D(packed), in the user's element type.
  virtual cc_result_t decode(const void* packed, size_t count, void* out, void* stream) const = 0;
  // acc[0..count) += D(packed), in fp32.
  virtual cc_result_t decodeAccumulate(const void* packed, size_t count, float* acc, void* stream) const = 0;
  // The fused hop, one pass: packedOut <- C((D(packedIn) (op) local) / divisor);
  // decodedOut (when not null) also receives D(packedOut) in the user's type.
  virtual cc_result_t decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t firstIndex,
                                      RandomStream rs, uint32_t divisor, void* packedOut, void* decodedOut,
                                      void* stream) const = 0;

  // Error feedback fused into the same passes (residual: float32, indexed
  // like local), bit-identical to encodeWithResidual and
  // decodeAddEncodeWithResidual of codec/codec.h:
  //   p = local + e; packed = C(p); e = p - D(packed).
  virtual cc_result_t encodeWithResidual(const void* local, float* residual, size_t count, uint64_t firstIndex,
                                         RandomStream rs, void* packed, void* stream) const = 0;
  //   s = D(packedIn) + local + e; packedOut = C(s / divisor); e = s - divisor * D(packedOut).
  virtual cc_result_t decodeAddEncodeWithResidual(const void* packedIn, const void* local, float* residual,
                                                  size_t count, uint64_t firstIndex, RandomStream rs,
                                                  uint32_t divisor, void* packedOut, void* decodedOut,
                                                  void* stream) const = 0;
};

// The device codec of a spec's block quantizer for one (datatype, op): the
// counterpart of makeBlockCodec. Returns nullptr with CC_UNSUPPORTED set
// (naming the spec) for what has no device kernels, or CC_INVALID_ARGUMENT
// for an invalid datatype or op.
std::unique_ptr<DeviceCodec> makeDeviceBlockCodec(const CodecSpec& spec, cc_datatype_t dtype, cc_red_op_t op);

// Per-family factories behind makeDeviceBlockCodec (one .cu file each).
std::unique_ptr<DeviceCodec> makeDeviceExactCodec(ElementType type, cc_red_op_t op);
std::unique_ptr<DeviceCodec> makeDeviceNatCodec(ElementType type);
std::unique_ptr<DeviceCodec> makeDeviceNatDetCodec(ElementType type);
// bucketValues 0: the bucket is the whole range of each call (tensor or model scope).
std::unique_ptr<DeviceCodec> makeDeviceDitherCodec(Quantizer quantizer, const DitherParams& params, ElementType type,
                                                   size_t bucketValues);

}  // namespace cc
