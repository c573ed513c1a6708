// Internal entry points of the nat codec, shared by codec.cc (dispatch),
// nat_scalar.cc (the reference) and nat_avx2.cc (the fast path). Both
// implementations take the same arguments and must produce the same bytes
// for every input; the tests compare them.
//
// `type` is F32, BF16 or F16; local, out and decoded buffers hold values of
// that type; packed buffers hold natPackedBytes(count) bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/codec.h"

namespace cc {

inline size_t natPackedBytes(size_t count) { return 36 * ((count + 31) / 32); }

// The scalar reference: any count, any firstIndex.
void natEncodeScalar(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                     void* packed);
void natDecodeScalar(ElementType type, const void* packed, size_t count, void* out);
void natDecodeAccumulateScalar(const void* packed, size_t count, float* acc);
void natDecodeAddEncodeScalar(ElementType type, const void* packedIn, const void* local, size_t count,
                              uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                              void* decodedOut);

// The nat encoder and decoders, AVX-512, AVX2 or scalar (codec.h's
// CodecIsa); shared by every codec
// that emits the nat format (nat, nat_det).
void natEncode(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed);
void natDecode(ElementType type, const void* packed, size_t count, void* out);
void natDecodeAccumulate(const void* packed, size_t count, float* acc);

// The AVX2 + F16C path. Call only where natAvx2Supported() is true. A range
// whose firstIndex is not a multiple of 32 (never produced by the library)
// is handed to the scalar reference.
bool natAvx2Supported();
void natEncodeAvx2(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                   void* packed);
void natDecodeAvx2(ElementType type, const void* packed, size_t count, void* out);
void natDecodeAccumulateAvx2(const void* packed, size_t count, float* acc);
void natDecodeAddEncodeAvx2(ElementType type, const void* packedIn, const void* local, size_t count,
                            uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut, void* decodedOut);
// The AVX-512 (F, BW, DQ, VL) path, the same contract as the AVX2 one. Call
// only where natAvx512Supported() is true.
bool natAvx512Supported();
void natEncodeAvx512(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                     void* packed);
void natDecodeAvx512(ElementType type, const void* packed, size_t count, void* out);
void natDecodeAccumulateAvx512(const void* packed, size_t count, float* acc);
void natDecodeAddEncodeAvx512(ElementType type, const void* packedIn, const void* local, size_t count,
                              uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                              void* decodedOut);
// The switch's fixed point (codec/fixed_point.h) on the same path: the nat
// codes' integers into accumulators, and sums back to nat codes (a floor in
// 1..223 and a firstIndex that is a multiple of 32; the caller checks).
// fixed_point.h's fixedEncode (floor 1..253, no residual) and fixedDecode
// (floor 1..223, no divisor) for float32.
void fixedEncodeF32Avx2(const float* values, size_t count, int floor, int32_t* out);
void fixedDecodeF32Avx2(const int32_t* sums, size_t count, int floor, float* out);
// fixed_point.h's blockExponentOf for float32 values, without a residual and
// with one (the exponent of values + residual, added in float32 as the
// scalar reference adds them).
uint8_t blockExponentF32Avx2(const float* values, size_t count);
uint8_t blockExponentF32ResidualAvx2(const float* values, const float* residual, size_t count);
bool natAccumulateFixedAvx2(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc);
void natEncodeFixedAvx2(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                        void* packed);
bool natAccumulateFixedAvx512(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc);
void natEncodeFixedAvx512(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                          void* packed);

}  // namespace cc
