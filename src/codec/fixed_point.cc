#include "codec/fixed_point.h"

#include <cmath>
#include <cstring>

#include "codec/elements.h"
#include "codec/nat_kernels.h"
#include "codec/random_words.h"

namespace cc {
namespace {

uint32_t loadSignMask(const uint8_t* block) { return loadLe32(block); }

size_t valuesInBlock(size_t count, size_t block) {
  const size_t remaining = count - block * kNatBlockValues;
  return remaining < kNatBlockValues ? remaining : kNatBlockValues;
}

// 2^k as a double, for |k| well inside the double range.
double powerOfTwo(int k) { return std::ldexp(1.0, k); }

// One nat code of a fixed-point sum (natEncodeFixed's rule).
uint8_t natCodeOfFixed(int32_t sum, int floor, uint32_t word, uint32_t* sign) {
  if (sum == kFixedNonFinite) {
    // The accumulator cannot tell +Inf + -Inf from one Inf: NaN is the
    // only answer that is right for every mix (nat's NaN: 0 with the sign).
    *sign = 1;
    return 0;
  }
  *sign = sum < 0 ? 1u : 0u;
  const uint32_t a = sum < 0 ? 0u - static_cast<uint32_t>(sum) : static_cast<uint32_t>(sum);
  if (a == 0) return 0;
  const int p = 31 - __builtin_clz(a);
  const int e = p + floor;
  if (e >= static_cast<int>(kNatNonFiniteExponent)) return kNatNonFiniteExponent;
  if (e <= 0) {
    // Below 2^-126: nat rounds to 0 or 2^-126 with P(up) = v / 2^-126 =
    // a / 2^(1 - F), and a < 2^(1 - F) here.
    const int bits = 1 - floor;
    const uint32_t u = bits >= 32 ? word : (word & ((1u << bits) - 1u));
    return u < a ? 1 : 0;
  }
  const uint32_t power = 1u << p;
  const bool up = (word & (power - 1u)) < a - power;
  if (up && e < static_cast<int>(kNatSaturatingExponent)) return static_cast<uint8_t>(e + 1);
  return static_cast<uint8_t>(e);
}

// acc <- q (first) or acc + q, non-finite sticky.
inline int32_t accumulateOne(int32_t acc, int32_t q, bool nonFinite, bool first) {
  if (nonFinite || (!first && acc == kFixedNonFinite)) return kFixedNonFinite;
  return first ? q : acc + q;
}

template <ElementType Type>
uint8_t blockExponentTyped(const void* values, const float* residual, size_t count) {
  uint32_t best = 0;
  if (residual == nullptr) {
    for (size_t i = 0; i < count; ++i) {
      const uint32_t e = (loadElementBits<Type>(values, i) >> 23) & 0xffu;
      const uint32_t finite = e == 0xffu ? 0u : e;
      best = finite > best ? finite : best;
    }
  } else {
    for (size_t i = 0; i < count; ++i) {
      const float p = bitsToFloat(loadElementBits<Type>(values, i)) + residual[i];
      const uint32_t e = (floatToBits(p) >> 23) & 0xffu;
      const uint32_t finite = e == 0xffu ? 0u : e;
      best = finite > best ? finite : best;
    }
  }
  return static_cast<uint8_t>(best);
}

}  // namespace

int fixedMaxShift(int nranks) {
  if (nranks < 1) nranks = 1;
  int shift = 0;
  while (static_cast<int64_t>(nranks) << (shift + 1) <= 0x7fffffffLL) ++shift;
  return shift;
}

uint8_t blockExponentOf(ElementType type, const void* values, const float* residual, size_t count) {
  // Once per packet on the worker's critical path, as long as its encode.
  if (type == ElementType::F32 && useAvx2Codecs()) {
    const float* floats = static_cast<const float*>(values);
    return residual == nullptr ? blockExponentF32Avx2(floats, count)
                               : blockExponentF32ResidualAvx2(floats, residual, count);
  }
  switch (type) {
    case ElementType::F32: return blockExponentTyped<ElementType::F32>(values, residual, count);
    case ElementType::BF16: return blockExponentTyped<ElementType::BF16>(values, residual, count);
    case ElementType::F16: return blockExponentTyped<ElementType::F16>(values, residual, count);
    default: return 0;
  }
}

size_t natApplyFloor(void* packed, size_t count, int floor, uint64_t firstIndex, RandomStream rs, float* residual) {
  if (floor <= 1 || count == 0) return 0;
  uint8_t* bytes = static_cast<uint8_t*>(packed);
  const uint8_t belowFloor = static_cast<uint8_t>(floor > 255 ? 254 : floor - 1);  // codes 1..floor-1
  ValueRandomness randomness(rs);
  size_t changed = 0;
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    uint8_t* blockBytes = bytes + block * kNatBlockBytes;
    uint8_t* exponents = blockBytes + 4;
    // Most blocks have no code below the floor: one pass the compiler
    // vectorizes decides that.
    unsigned any = 0;
    for (size_t lane = 0; lane < kNatBlockValues; ++lane) {
      any |= static_cast<uint8_t>(exponents[lane] - 1u) < belowFloor ? 1u : 0u;
    }
    if (!any) continue;
    uint32_t signMask = loadSignMask(blockBytes);
    const size_t valid = valuesInBlock(count, block);
    for (size_t lane = 0; lane < valid; ++lane) {
      const uint32_t e = exponents[lane];
      if (e == 0 || static_cast<int>(e) >= floor) continue;
      const size_t i = block * kNatBlockValues + lane;
      const int gap = floor - static_cast<int>(e);
      const uint32_t word = randomness.wordFor(firstIndex + i);
      const bool up = gap < 32 && (word & ((1u << gap) - 1u)) == 0;
      const uint32_t sign = (signMask >> lane) & 1u;
      const uint8_t code = up ? static_cast<uint8_t>(floor) : 0;
      if (residual != nullptr) {
        // A zero code is +0 whatever the value's sign: code 0 with the sign
        // bit is the NaN code, and decoding it would poison the residual.
        const float kept = code == 0 ? 0.0f : bitsToFloat(natDecodeBits(sign, code));
        residual[i] += bitsToFloat(natDecodeBits(sign, e)) - kept;
      }
      exponents[lane] = code;
      if (code == 0) signMask &= ~(1u << lane);  // a zero code keeps sign 0, as the encoder writes zeros
      ++changed;
    }
    storeLe32(blockBytes, signMask);
  }
  return changed;
}

void fixedEncode(ElementType type, const void* values, float* residual, size_t count, int floor, int32_t* out) {
  // The vector path gives the same integers (a power-of-two scale is exact
  // in float as in double, and both round to nearest even), where the scale
  // is a normal float.
  if (type == ElementType::F32 && residual == nullptr && floor >= 1 && floor <= 253 && useAvx2Codecs()) {
    return fixedEncodeF32Avx2(static_cast<const float*>(values), count, floor, out);
  }
  fixedEncodeScalar(type, values, residual, count, floor, out);
}

void fixedEncodeScalar(ElementType type, const void* values, float* residual, size_t count, int floor,
                       int32_t* out) {
  const double scale = powerOfTwo(127 - floor);
  const double unscale = powerOfTwo(floor - 127);
  for (size_t i = 0; i < count; ++i) {
    float p = loadFloat(type, values, i);
    if (residual != nullptr) p += residual[i];
    int32_t q;
    if (!std::isfinite(p)) {
      q = kFixedNonFinite;
    } else {
      double scaled = std::nearbyint(static_cast<double>(p) * scale);
      if (scaled > 2147483647.0) scaled = 2147483647.0;
      if (scaled < -2147483647.0) scaled = -2147483647.0;
      q = static_cast<int32_t>(scaled);
    }
    out[i] = q;
    if (residual != nullptr) {
      residual[i] = q == kFixedNonFinite ? 0.0f : static_cast<float>(static_cast<double>(p) - q * unscale);
    }
  }
}

void fixedDecode(const int32_t* sums, size_t count, int floor, uint32_t divisor, ElementType type, void* out) {
  // One rounding either way where every nonzero result is a normal float
  // (|sum| * 2^(F-127) in [2^-126, 2^128)): the int-to-float conversion
  // rounds the 31-bit sum once and the power-of-two scale is exact.
  if (type == ElementType::F32 && divisor <= 1 && floor >= 1 && floor <= 223 && useAvx2Codecs()) {
    return fixedDecodeF32Avx2(sums, count, floor, static_cast<float*>(out));
  }
  fixedDecodeScalar(sums, count, floor, divisor, type, out);
}

void fixedDecodeScalar(const int32_t* sums, size_t count, int floor, uint32_t divisor, ElementType type,
                       void* out) {
  const double scale = powerOfTwo(floor - 127) / static_cast<double>(divisor == 0 ? 1 : divisor);
  for (size_t i = 0; i < count; ++i) {
    const float value = sums[i] == kFixedNonFinite ? NAN : static_cast<float>(static_cast<double>(sums[i]) * scale);
    storeFloat(type, out, i, value);
  }
}

bool natAccumulateFixedScalar(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  bool ok = true;
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    const uint8_t* blockBytes = in + block * kNatBlockBytes;
    const uint32_t signMask = loadSignMask(blockBytes);
    const size_t valid = valuesInBlock(count, block);
    for (size_t lane = 0; lane < valid; ++lane) {
      const int e = blockBytes[4 + lane];
      const size_t i = block * kNatBlockValues + lane;
      const bool negative = ((signMask >> lane) & 1u) != 0;
      int32_t q = 0;
      // ±Inf (255) and NaN (0 with the sign bit) both make the sum non-finite.
      const bool nonFinite = e == static_cast<int>(kNatNonFiniteExponent) || (e == 0 && negative);
      if (e != 0 && !nonFinite) {
        const int shift = e - floor;
        if (shift < 0 || shift > maxShift) {
          ok = false;
        } else {
          q = static_cast<int32_t>(1u << shift);
          if (negative) q = -q;
        }
      }
      acc[i] = accumulateOne(acc[i], q, nonFinite, first);
    }
  }
  return ok;
}

bool natAccumulateFixed(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc) {
  if (count == 0) return true;
  if (useAvx512Codecs()) return natAccumulateFixedAvx512(packed, count, floor, maxShift, first, acc);
  if (useAvx2Codecs()) return natAccumulateFixedAvx2(packed, count, floor, maxShift, first, acc);
  return natAccumulateFixedScalar(packed, count, floor, maxShift, first, acc);
}

bool fixedAccumulate(const void* values, size_t count, int maxShift, bool first, int32_t* acc) {
  const int32_t limit = static_cast<int32_t>(1u << maxShift);
  const uint8_t* bytes = static_cast<const uint8_t*>(values);
  bool ok = true;
  for (size_t i = 0; i < count; ++i) {
    int32_t q;
    std::memcpy(&q, bytes + 4 * i, 4);
    const bool nonFinite = q == kFixedNonFinite;
    const bool outside = !nonFinite && (q > limit || q < -limit);
    ok &= !outside;
    if (outside || nonFinite) q = 0;
    acc[i] = accumulateOne(acc[i], q, nonFinite, first);
  }
  return ok;
}

void natEncodeFixedScalar(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                          void* packed) {
  ValueRandomness randomness(rs);
  uint8_t* out = static_cast<uint8_t*>(packed);
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    uint8_t* blockBytes = out + block * kNatBlockBytes;
    uint32_t signMask = 0;
    uint8_t exponents[kNatBlockValues] = {};
    const size_t valid = valuesInBlock(count, block);
    for (size_t lane = 0; lane < valid; ++lane) {
      const size_t i = block * kNatBlockValues + lane;
      uint32_t sign = 0;
      exponents[lane] = natCodeOfFixed(sums[i], floor, randomness.wordFor(firstIndex + i), &sign);
      if (exponents[lane] != 0 || sums[i] == kFixedNonFinite) signMask |= sign << lane;
    }
    storeLe32(blockBytes, signMask);
    std::memcpy(blockBytes + 4, exponents, kNatBlockValues);
  }
}

void natEncodeFixed(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                    void* packed) {
  if (count == 0) return;
  // The vector path covers every floor whose codes are all normal
  // (1 <= p + F + 1 <= 254 for p in 0..30); the rest is rare and scalar.
  if (useAvx2Codecs() && floor >= 1 && floor <= 223 && firstIndex % kNatBlockValues == 0) {
    if (useAvx512Codecs()) return natEncodeFixedAvx512(sums, count, floor, firstIndex, rs, packed);
    return natEncodeFixedAvx2(sums, count, floor, firstIndex, rs, packed);
  }
  natEncodeFixedScalar(sums, count, floor, firstIndex, rs, packed);
}

}  // namespace cc
