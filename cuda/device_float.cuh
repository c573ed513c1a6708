// IEEE arithmetic on the device with the host's (x86 SSE/AVX) NaN results,
// for the device codecs whose outputs carry the bits of an fp32/fp64 sum:
// the exact codec's hop, decodeAccumulate, and the error-feedback passes
// (whose residuals and encoded signs keep a NaN's sign).
//
// IEEE 754 leaves the sign and payload of a NaN result open. x86 returns the
// first NaN operand, quieted (an SNaN gets its quiet bit), else, for an
// invalid operation (Inf - Inf, 0 * Inf), the negative default NaN
// 0xffc00000 (0xfff8000000000000 for double). CUDA returns the positive
// canonical NaN 0x7fffffff whatever the operands. The functions below do the
// rounded IEEE operation (the __f*_rn / __d*_rn intrinsics: never contracted
// into an FMA, no FTZ) and, only when the result is NaN, replace it with the
// x86 result; the first operand is the one written first in the host's C++
// expression. When both operands are NaN the host's result depends on the
// operand order its compiler picked (a commutative add may be swapped), so
// only that case is not guaranteed to match.
#pragma once

#include <stdint.h>

namespace cc {

constexpr uint32_t kX86DefaultNan32 = 0xffc00000u;
constexpr uint64_t kX86DefaultNan64 = 0xfff8000000000000ull;

__device__ __forceinline__ bool isNanBits32(uint32_t bits) { return (bits & 0x7fffffffu) > 0x7f800000u; }
__device__ __forceinline__ bool isNanBits64(uint64_t bits) {
  return (bits & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}

// The x86 NaN of an operation on a and b whose IEEE result is NaN.
__device__ __forceinline__ uint32_t x86NanResult32(uint32_t a, uint32_t b) {
  if (isNanBits32(a)) return a | 0x00400000u;
  if (isNanBits32(b)) return b | 0x00400000u;
  return kX86DefaultNan32;
}

__device__ __forceinline__ uint64_t x86NanResult64(uint64_t a, uint64_t b) {
  if (isNanBits64(a)) return a | 0x0008000000000000ull;
  if (isNanBits64(b)) return b | 0x0008000000000000ull;
  return kX86DefaultNan64;
}

__device__ __forceinline__ float x86Fix32(float result, float a, float b) {
  const uint32_t bits = __float_as_uint(result);
  if (!isNanBits32(bits)) return result;
  return __uint_as_float(x86NanResult32(__float_as_uint(a), __float_as_uint(b)));
}

__device__ __forceinline__ double x86Fix64(double result, double a, double b) {
  const uint64_t bits = static_cast<uint64_t>(__double_as_longlong(result));
  if (!isNanBits64(bits)) return result;
  return __longlong_as_double(static_cast<long long>(
      x86NanResult64(static_cast<uint64_t>(__double_as_longlong(a)), static_cast<uint64_t>(__double_as_longlong(b)))));
}

__device__ __forceinline__ float x86Add(float a, float b) { return x86Fix32(__fadd_rn(a, b), a, b); }
__device__ __forceinline__ float x86Sub(float a, float b) { return x86Fix32(__fsub_rn(a, b), a, b); }
__device__ __forceinline__ float x86Mul(float a, float b) { return x86Fix32(__fmul_rn(a, b), a, b); }
__device__ __forceinline__ float x86Div(float a, float b) { return x86Fix32(__fdiv_rn(a, b), a, b); }

__device__ __forceinline__ double x86Add(double a, double b) { return x86Fix64(__dadd_rn(a, b), a, b); }
__device__ __forceinline__ double x86Mul(double a, double b) { return x86Fix64(__dmul_rn(a, b), a, b); }
__device__ __forceinline__ double x86Div(double a, double b) { return x86Fix64(__ddiv_rn(a, b), a, b); }

// (float)double as cvtsd2ss: round to nearest; a NaN keeps its sign and the
// top 23 payload bits and comes out quiet.
__device__ __forceinline__ float x86DoubleToFloat(double value) {
  const uint64_t bits = static_cast<uint64_t>(__double_as_longlong(value));
  if (!isNanBits64(bits)) return __double2float_rn(value);
  const uint32_t sign = static_cast<uint32_t>(bits >> 32) & 0x80000000u;
  const uint32_t payload = static_cast<uint32_t>((bits & 0x000fffffffffffffull) >> 29);
  return __uint_as_float(sign | 0x7fc00000u | payload);
}

}  // namespace cc
