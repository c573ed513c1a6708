// Scalar math of the nat format (docs/wire-format.md) and the 16-bit float
// conversions it needs, shared by the host reference codec and the CUDA
// kernels so both produce the same bits. Integer-only where it matters: the
// result must not depend on compiler flags such as -ffast-math or FTZ.
// Keep this file free of the C++ standard library (nvcc device code).
#pragma once

#include <stdint.h>
#include <string.h>

#include "cuda/philox.h"

namespace cc {

constexpr uint32_t kNatBlockValues = 32;          // values per nat block
constexpr uint32_t kNatBlockBytes = 4 + 32;       // sign mask + 32 exponent bytes
constexpr uint32_t kNatNonFiniteExponent = 255;   // with the sign bit: ±Inf
constexpr uint32_t kNatSaturatingExponent = 254;  // 2^127: rounding up stops here
// Exponent 0 with the sign bit set is NaN (zero is always sent with sign 0);
// it decodes to the canonical quiet NaN.
constexpr uint32_t kNatCanonicalNanBits = 0x7fc00000u;

// MAX and MIN of the exact path, host and device alike: a NaN operand wins
// (the first one when both are), so host and device agree bit for bit.
template <typename Float>
CC_HOST_DEVICE inline Float maxPropagatingNan(Float a, Float b) {
  if (a != a) return a;
  if (b != b) return b;
  return b > a ? b : a;
}

template <typename Float>
CC_HOST_DEVICE inline Float minPropagatingNan(Float a, Float b) {
  if (a != a) return a;
  if (b != b) return b;
  return b < a ? b : a;
}

CC_HOST_DEVICE inline uint32_t floatToBits(float value) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(value);
#else
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

CC_HOST_DEVICE inline float bitsToFloat(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

CC_HOST_DEVICE inline uint32_t natIsNan(uint32_t floatBits) {
  return static_cast<uint32_t>((floatBits & 0x7fffffffu) > 0x7f800000u);
}

// Stochastic rounding of a float32 to a power of two, returning the nat
// exponent byte. With biased exponent E and mantissa m, the value lies in
// [2^(E-127), 2^(E-126)) (or [0, 2^-126) for E = 0) at fraction m / 2^23 of
// the way up, so rounding up when 23 uniform bits u < m is unbiased. E = 254
// cannot go up (255 means ±Inf), so it saturates at 2^127; Inf stays 255
// because the E < 254 test fails; NaN gives 0 (natEncodedSign sets its sign).
CC_HOST_DEVICE inline uint8_t natEncodeExponent(uint32_t floatBits, uint32_t randomWord) {
  const uint32_t biasedExponent = (floatBits >> 23) & 0xffu;
  const uint32_t mantissa = floatBits & 0x7fffffu;
  const uint32_t uniform23 = randomWord >> 9;  // the top bits are the best mixed
  const uint32_t roundsUp =
      static_cast<uint32_t>(uniform23 < mantissa) & static_cast<uint32_t>(biasedExponent < kNatSaturatingExponent);
  return static_cast<uint8_t>((biasedExponent + roundsUp) & (natIsNan(floatBits) - 1u));
}

// The sign bit sent with a value encoded to `exponent`: 1 for NaN, the
// value's own sign for everything that stays nonzero (±Inf included), and 0
// where the value encodes to zero (-0 and negative values rounding to zero
// send +0), which keeps exponent 0 with sign 1 free to mean NaN. IEEE 754
// leaves the sign of a NaN result unspecified (x86 gives -NaN for Inf - Inf,
// CUDA a positive canonical NaN); it is never sent, so host and device agree.
CC_HOST_DEVICE inline uint32_t natEncodedSign(uint32_t floatBits, uint32_t exponent) {
  return natIsNan(floatBits) | ((floatBits >> 31) & static_cast<uint32_t>((exponent & 0xffu) != 0));
}

// Decode: the exponent byte is the float32 biased exponent and the mantissa
// is zero, so 0 gives +0 and 255 gives ±Inf; exponent 0 with the sign bit is
// NaN.
CC_HOST_DEVICE inline uint32_t natDecodeBits(uint32_t sign, uint32_t expByte) {
  const uint32_t bits = ((sign & 1u) << 31) | ((expByte & 0xffu) << 23);
  return bits == 0x80000000u ? kNatCanonicalNanBits : bits;
}

// bfloat16 is the top half of a float32: widening is exact.
CC_HOST_DEVICE inline uint32_t bf16ToFloatBits(uint16_t bf16) { return static_cast<uint32_t>(bf16) << 16; }

// float32 -> bfloat16, round to nearest even. NaN stays NaN (quieted, so a
// payload living only in the low half cannot truncate to Inf); overflow
// rounds to Inf through the carry into the exponent.
CC_HOST_DEVICE inline uint16_t floatBitsToBf16(uint32_t bits) {
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t roundingBias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + roundingBias) >> 16);
}

// float16 -> float32, exact. Subnormal halves are normalised through an
// int -> float conversion of the 10-bit mantissa (exact under any rounding
// mode) whose exponent then moves down by 24. NaNs come out quiet with the
// payload kept, as F16C's vcvtph2ps does.
CC_HOST_DEVICE inline uint32_t halfToFloatBits(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1fu) {
    const uint32_t quietBit = mantissa != 0 ? 0x00400000u : 0u;
    return sign | 0x7f800000u | quietBit | (mantissa << 13);
  }
  if (exponent == 0) {
    if (mantissa == 0) return sign;
    return sign | (floatToBits(static_cast<float>(mantissa)) - (24u << 23));
  }
  return sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
}

// float32 -> float16, round to nearest even, with half subnormals, overflow
// to Inf (from 65520 up, the midpoint above the largest half 65504) and NaN
// kept as a quiet NaN with the top payload bits (vcvtps2ph's result).
CC_HOST_DEVICE inline uint16_t floatBitsToHalf(uint32_t bits) {
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) {
    return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (magnitude >= 0x38800000u) {  // a normal half: rebias, then round the 13 dropped bits
    const uint32_t rebiased = magnitude - ((127u - 15u) << 23);
    const uint32_t roundingBias = 0xfffu + ((rebiased >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rebiased + roundingBias) >> 13));
  }
  // A half subnormal counts units of 2^-24; below 2^-25 everything rounds to
  // zero (2^-25 itself is a tie that goes to the even 0).
  const uint32_t biasedExponent = magnitude >> 23;
  if (biasedExponent < 102) return sign;
  const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - biasedExponent;  // 14..24
  uint32_t units = significand >> shift;
  const uint32_t remainder = significand & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (units & 1u) != 0)) ++units;
  return static_cast<uint16_t>(sign | units);  // units == 0x400 is the smallest normal: correct
}

}  // namespace cc
