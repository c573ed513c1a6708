// The switch's fixed point on AVX2 (codec/fixed_point.h has the rules and
// the scalar references, which these match bit for bit): nat codes into
// integer accumulators, float32 to int32 and back, the block exponent.
// Compiled for AVX2 alone; called only where useAvx2Codecs() is true. The
// nat downlink's encoder (natEncodeFixedAvx2) lives in nat_avx2.cc, beside
// the Philox words and block packing it shares with the nat encoder.
#include <immintrin.h>
#include <string.h>

#include "codec/fixed_point.h"
#include "codec/nat_kernels.h"

namespace cc {
namespace {

constexpr size_t kValuesPerBlock = 32;
constexpr size_t kBytesPerBlock = 36;

// The switch's fixed point, 8 lanes (fixed_point.cc has the scalar rule).
// A nat code e with sign s adds (-1)^s * 2^(e - F) when 0 <= e - F <= M;
// 0 adds nothing, 255 and NaN make the accumulator INT32_MIN for good, and any
// other code is left out and reported.
inline void accumulateFixed8(__m256i exponents, __m256i negative, __m256i floor, __m256i maxShiftPlusOne,
                             bool first, __m256i laneUsed, int32_t* acc, __m256i* bad) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i minValue = _mm256_set1_epi32(INT32_MIN);
  const __m256i shift = _mm256_sub_epi32(exponents, floor);
  const __m256i isCodeZero = _mm256_cmpeq_epi32(exponents, _mm256_setzero_si256());
  // 0 with the sign bit is NaN: non-finite like 255 (±Inf).
  const __m256i isZero = _mm256_andnot_si256(negative, isCodeZero);
  const __m256i isNonFinite =
      _mm256_or_si256(_mm256_cmpeq_epi32(exponents, _mm256_set1_epi32(255)), _mm256_and_si256(isCodeZero, negative));
  const __m256i inRange = _mm256_and_si256(_mm256_cmpgt_epi32(shift, _mm256_set1_epi32(-1)),
                                           _mm256_cmpgt_epi32(maxShiftPlusOne, shift));
  const __m256i valid = _mm256_or_si256(inRange, _mm256_or_si256(isZero, isNonFinite));
  *bad = _mm256_or_si256(*bad, _mm256_andnot_si256(valid, laneUsed));
  const __m256i adds = _mm256_andnot_si256(_mm256_or_si256(isZero, isNonFinite), inRange);
  __m256i q = _mm256_and_si256(_mm256_sllv_epi32(one, shift), adds);
  q = _mm256_sub_epi32(_mm256_xor_si256(q, negative), negative);
  __m256i* target = reinterpret_cast<__m256i*>(acc);
  __m256i sum = q;
  __m256i sticky = isNonFinite;
  if (!first) {
    const __m256i before = _mm256_loadu_si256(target);
    sum = _mm256_add_epi32(before, q);
    sticky = _mm256_or_si256(sticky, _mm256_cmpeq_epi32(before, minValue));
  }
  _mm256_storeu_si256(target, _mm256_blendv_epi8(sum, minValue, sticky));
}

// natEncodeFixed's rule for 8 sums whose codes are all normal (1 <= F and
// F + 31 <= 254): p = floor(log2 |S|) from the float conversion (which may
// round up to the next power: corrected by comparing 2^p with |S| as
// unsigned), up when (u & (2^p - 1)) < |S| - 2^p. Returns the exponent
// bytes as lanes; `signBits` gets each lane's sign in bit 31.

}  // namespace

void fixedEncodeF32Avx2(const float* values, size_t count, int floor, int32_t* out) {
  const __m256 scale = _mm256_castsi256_ps(_mm256_set1_epi32((254 - floor) << 23));  // 2^(127 - F)
  const __m256i field = _mm256_set1_epi32(0x7f800000);
  const __m256 top = _mm256_set1_ps(2147483648.0f);
  const __m256i minValue = _mm256_set1_epi32(INT32_MIN);
  const __m256i maxValue = _mm256_set1_epi32(INT32_MAX);
  const __m256i negativeMax = _mm256_set1_epi32(-INT32_MAX);
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 x = _mm256_loadu_ps(values + i);
    const __m256i nonFinite = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(x), field), field);
    const __m256 scaled = _mm256_mul_ps(x, scale);
    __m256i q = _mm256_cvtps_epi32(scaled);  // to nearest, ties to even (MXCSR's default)
    // Past the int32 range: clamped as the scalar path clamps.
    q = _mm256_blendv_epi8(q, maxValue, _mm256_castps_si256(_mm256_cmp_ps(scaled, top, _CMP_GE_OQ)));
    q = _mm256_blendv_epi8(q, negativeMax,
                           _mm256_castps_si256(_mm256_cmp_ps(scaled, _mm256_sub_ps(_mm256_setzero_ps(), top), _CMP_LE_OQ)));
    q = _mm256_blendv_epi8(q, minValue, nonFinite);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), q);
  }
  if (i < count) fixedEncodeScalar(ElementType::F32, values + i, nullptr, count - i, floor, out + i);
}

void fixedDecodeF32Avx2(const int32_t* sums, size_t count, int floor, float* out) {
  const __m256 scale = _mm256_castsi256_ps(_mm256_set1_epi32(floor << 23));  // 2^(F - 127)
  const __m256i minValue = _mm256_set1_epi32(INT32_MIN);
  const __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + i));
    const __m256 value = _mm256_mul_ps(_mm256_cvtepi32_ps(s), scale);
    _mm256_storeu_ps(out + i, _mm256_blendv_ps(value, nan, _mm256_castsi256_ps(_mm256_cmpeq_epi32(s, minValue))));
  }
  if (i < count) fixedDecodeScalar(sums + i, count - i, floor, 1, ElementType::F32, out + i);
}

uint8_t blockExponentF32Avx2(const float* values, size_t count) {
  const __m256i field = _mm256_set1_epi32(0xff);
  __m256i best = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + i));
    const __m256i exponent = _mm256_and_si256(_mm256_srli_epi32(bits, 23), field);
    // 255 (Inf, NaN) bounds no finite value: it counts as 0.
    best = _mm256_max_epu32(best, _mm256_andnot_si256(_mm256_cmpeq_epi32(exponent, field), exponent));
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), best);
  uint32_t result = 0;
  for (uint32_t lane : lanes) result = lane > result ? lane : result;
  for (; i < count; ++i) {
    uint32_t bits;
    memcpy(&bits, values + i, 4);
    const uint32_t exponent = (bits >> 23) & 0xffu;
    if (exponent != 0xffu && exponent > result) result = exponent;
  }
  return static_cast<uint8_t>(result);
}

uint8_t blockExponentF32ResidualAvx2(const float* values, const float* residual, size_t count) {
  const __m256i field = _mm256_set1_epi32(0xff);
  __m256i best = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 p = _mm256_add_ps(_mm256_loadu_ps(values + i), _mm256_loadu_ps(residual + i));
    const __m256i exponent = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(p), 23), field);
    best = _mm256_max_epu32(best, _mm256_andnot_si256(_mm256_cmpeq_epi32(exponent, field), exponent));
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), best);
  uint32_t result = 0;
  for (uint32_t lane : lanes) result = lane > result ? lane : result;
  for (; i < count; ++i) {
    const float p = values[i] + residual[i];
    uint32_t bits;
    memcpy(&bits, &p, 4);
    const uint32_t exponent = (bits >> 23) & 0xffu;
    if (exponent != 0xffu && exponent > result) result = exponent;
  }
  return static_cast<uint8_t>(result);
}

bool natAccumulateFixedAvx2(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const __m256i floorVector = _mm256_set1_epi32(floor);
  const __m256i maxShiftPlusOne = _mm256_set1_epi32(maxShift + 1);
  const __m256i allLanes = _mm256_set1_epi32(-1);
  __m256i bad = _mm256_setzero_si256();
  // Lane l of group j tests bit 8j + l of the block's sign mask.
  __m256i signBit[4];
  for (int j = 0; j < 4; ++j) {
    signBit[j] = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_setr_epi32(8 * j, 8 * j + 1, 8 * j + 2, 8 * j + 3,
                                                                           8 * j + 4, 8 * j + 5, 8 * j + 6, 8 * j + 7));
  }
  const size_t blocks = (count + kValuesPerBlock - 1) / kValuesPerBlock;
  for (size_t block = 0; block < blocks; ++block) {
    const uint8_t* blockIn = in + block * kBytesPerBlock;
    uint32_t signMask;
    memcpy(&signMask, blockIn, 4);
    const __m256i maskInEveryLane = _mm256_set1_epi32(static_cast<int>(signMask));
    const size_t valid = count - block * kValuesPerBlock;
    for (int j = 0; j < 4; ++j) {
      const __m256i bits = signBit[j];
      const __m256i negative = _mm256_cmpeq_epi32(_mm256_and_si256(maskInEveryLane, bits), bits);
      const __m256i exponents =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blockIn + 4 + 8 * j)));
      // Pad lanes of a tail block are scratch: not checked.
      __m256i laneUsed = allLanes;
      if (valid < kValuesPerBlock) {
        const __m256i laneIndex = _mm256_setr_epi32(8 * j, 8 * j + 1, 8 * j + 2, 8 * j + 3, 8 * j + 4, 8 * j + 5,
                                                    8 * j + 6, 8 * j + 7);
        laneUsed = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), laneIndex);
      }
      accumulateFixed8(exponents, negative, floorVector, maxShiftPlusOne, first, laneUsed,
                       acc + block * kValuesPerBlock + 8 * j, &bad);
    }
  }
  return _mm256_testz_si256(bad, bad) != 0;
}

}  // namespace cc
