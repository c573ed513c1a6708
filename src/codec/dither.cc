// Natural and standard dithering (docs/wire-format.md, "dither"): per bucket
// a norm (float32, or one nat exponent byte), per value a sign bit and a level
// index, stored as bit-planes of 32-value groups.
//
// The kernels are C++ loops over 32-value groups, compiled twice: for the
// baseline target and, in a target("avx2") clone, for AVX2 (chosen at run
// time with nat's rule). In the clone the per-group work (Philox, the
// quantisation, the bit planes, decoding) is AVX2 intrinsics. Both use only
// the float32 operations the format lists (IEEE add, multiply, division,
// square root; no FMA: neither clone enables it, and each square is rounded
// in its own statement), so both produce the same bytes (the tests compare
// them with a reference written from the document).
#include "codec/dither.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "base/error.h"
#include "codec/elements.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define CC_DITHER_AVX2_CLONE 1
#define CC_DITHER_INLINE inline __attribute__((always_inline))
// Functions that use AVX2 intrinsics; only the target("avx2") clone calls
// them. The group functions are real calls (one per 32 values): a
// default-target always_inline kernel cannot inline an AVX2 function.
#define CC_DITHER_AVX2_INLINE inline __attribute__((always_inline, target("avx2")))
#define CC_DITHER_AVX2_FUNCTION __attribute__((target("avx2")))
#else
#define CC_DITHER_AVX2_CLONE 0
#define CC_DITHER_INLINE inline
#endif

namespace cc {
namespace {

constexpr uint32_t kLanes = 32;  // values per group
using namespace dither;
constexpr size_t kStackBucketValues = 4096;  // hop buckets up to this size are buffered on the stack
constexpr size_t kWordChunkGroups = 8;       // random words are drawn for this many groups at a time
constexpr uint32_t kMaxNatLevels = 126;
constexpr uint32_t kMaxStdLevels = 65535;

// The codec's parameters, fixed at construction.
struct DitherConfig : DitherScalars {
  size_t bucket = 0;                  // B; 0 = one bucket per call
  const float* levelValue = nullptr;  // 2^levelBits entries; indices above `levels` read the top level

  size_t normSize() const { return natNorm ? 1 : 4; }
  size_t groupBytes() const { return 4 * (1 + static_cast<size_t>(levelBits)); }
};

size_t pad4(size_t bytes) { return (bytes + 3) & ~static_cast<size_t>(3); }

size_t groupsOf(size_t values) { return (values + kLanes - 1) / kLanes; }

// Values of the call in bucket b: [start, start + n).
struct BucketRange {
  size_t start;
  size_t n;
};

size_t bucketCount(const DitherConfig& config, size_t count) {
  if (count == 0) return 0;
  return config.bucket == 0 ? 1 : (count + config.bucket - 1) / config.bucket;
}

BucketRange bucketRange(const DitherConfig& config, size_t count, size_t b) {
  if (config.bucket == 0) return {0, count};
  const size_t start = b * config.bucket;
  const size_t left = count - start;
  return {start, left < config.bucket ? left : config.bucket};
}

CC_DITHER_INLINE float absOf(float value) { return bitsToFloat(floatToBits(value) & kAbsMask); }

CC_DITHER_INLINE bool isFiniteBits(uint32_t bits) { return (bits & kInfBits) != kInfBits; }

// ---------------------------------------------------------------------------
// Element access in the user's type

template <ElementType Type>
CC_DITHER_INLINE float loadValue(const void* values, size_t i) {
  return bitsToFloat(loadElementBits<Type>(values, i));
}

// ---------------------------------------------------------------------------
// Randomness: the 32 words of the values first .. first + 31 (wire-format.md,
// "Randomness"). Eight Philox calls computed side by side (structure of
// arrays) so that the vectoriser can run them in parallel.

// The Philox key of a call and the key of every round.
struct PhiloxKeys {
  uint32_t key[2];
  uint32_t round0[kPhilox4x32Rounds];
  uint32_t round1[kPhilox4x32Rounds];

  explicit PhiloxKeys(uint64_t seed) {
    philoxKeyFromSeed(seed, key);
    uint32_t k0 = key[0];
    uint32_t k1 = key[1];
    for (int round = 0; round < kPhilox4x32Rounds; ++round) {
      round0[round] = k0;
      round1[round] = k1;
      k0 += kPhilox4x32W0;
      k1 += kPhilox4x32W1;
    }
  }
};

CC_DITHER_INLINE void groupRandomWords(const uint32_t key[2], uint64_t stream, uint64_t first, uint32_t words[kLanes]) {
  if ((first & 3u) != 0) {  // never produced by the library: one Philox call per value
    for (uint32_t lane = 0; lane < kLanes; ++lane) {
      uint32_t counter[4];
      philoxCounterForGroup((first + lane) / 4, stream, counter);
      words[lane] = philox4x32_10(counter, key).v[(first + lane) % 4];
    }
    return;
  }
  constexpr uint32_t kCalls = kLanes / 4;
  uint32_t x0[kCalls], x1[kCalls], x2[kCalls], x3[kCalls];
  const uint64_t firstGroup = first / 4;
  for (uint32_t call = 0; call < kCalls; ++call) {
    const uint64_t group = firstGroup + call;
    x0[call] = static_cast<uint32_t>(group);
    x1[call] = static_cast<uint32_t>(group >> 32);
    x2[call] = static_cast<uint32_t>(stream);
    x3[call] = static_cast<uint32_t>(stream >> 32);
  }
  uint32_t key0 = key[0];
  uint32_t key1 = key[1];
  for (int round = 0; round < kPhilox4x32Rounds; ++round) {
    if (round > 0) {
      key0 += kPhilox4x32W0;
      key1 += kPhilox4x32W1;
    }
    for (uint32_t call = 0; call < kCalls; ++call) {
      const uint64_t product0 = static_cast<uint64_t>(kPhilox4x32M0) * x0[call];
      const uint64_t product1 = static_cast<uint64_t>(kPhilox4x32M1) * x2[call];
      const uint32_t next0 = static_cast<uint32_t>(product1 >> 32) ^ x1[call] ^ key0;
      const uint32_t next2 = static_cast<uint32_t>(product0 >> 32) ^ x3[call] ^ key1;
      x0[call] = next0;
      x1[call] = static_cast<uint32_t>(product1);
      x2[call] = next2;
      x3[call] = static_cast<uint32_t>(product0);
    }
  }
  for (uint32_t call = 0; call < kCalls; ++call) {
    words[4 * call + 0] = x0[call];
    words[4 * call + 1] = x1[call];
    words[4 * call + 2] = x2[call];
    words[4 * call + 3] = x3[call];
  }
}

// ---------------------------------------------------------------------------
// Decoding one group

struct DecodedNorm {
  float value;  // Nt
  bool finite;  // false: every value of the bucket decodes to Nt
};

CC_DITHER_INLINE DecodedNorm readNorm(const DitherConfig& config, const uint8_t* norms, size_t b) {
  uint32_t bits;
  if (config.natNorm) {
    bits = natDecodeBits(0, norms[b]);
  } else {
    bits = loadLe32(norms + 4 * b);
  }
  return {bitsToFloat(bits), isFiniteBits(bits)};
}

// Float32 bits of the `valid` decoded values of one group.
CC_DITHER_INLINE void decodeGroup(const DitherConfig& config, const uint8_t* group, DecodedNorm norm, uint32_t valid,
                                  uint32_t out[kLanes]) {
  if (!norm.finite) {
    const uint32_t bits = floatToBits(norm.value);
    for (uint32_t lane = 0; lane < kLanes; ++lane) out[lane] = bits;
    return;
  }
  const uint32_t signWord = loadLe32(group);
  uint32_t index[kLanes] = {};
  for (unsigned plane = 0; plane < config.levelBits; ++plane) {
    const uint32_t word = loadLe32(group + 4 + 4 * plane);
    for (uint32_t lane = 0; lane < kLanes; ++lane) index[lane] |= ((word >> lane) & 1u) << plane;
  }
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    const float magnitude = norm.value * config.levelValue[index[lane]];
    out[lane] = floatToBits(magnitude) ^ (((signWord >> lane) & 1u) << 31);
  }
  // Pad lanes read as +0 whatever the message holds.
  for (uint32_t lane = valid; lane < kLanes; ++lane) out[lane] = 0;
}

// ---------------------------------------------------------------------------
// The bucket norm (wire-format.md, "Bucket norm")

// The fixed-order sum of squares: lane accumulators, then a pairwise tree.
CC_DITHER_INLINE void accumulateSquares(const float magnitudes[kLanes], float acc[kLanes]) {
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    const float square = magnitudes[lane] * magnitudes[lane];
    acc[lane] = acc[lane] + square;
  }
}

CC_DITHER_INLINE float reduceLanes(float acc[kLanes]) {
  for (uint32_t width = kLanes / 2; width > 0; width /= 2) {
    for (uint32_t lane = 0; lane < width; ++lane) acc[lane] = acc[lane] + acc[lane + width];
  }
  return acc[0];
}

enum class BucketKind { Finite, Zero, Infinite, NotANumber };

struct BucketNorm {
  BucketKind kind = BucketKind::Zero;
  float norm = 0.0f;    // N (finite buckets)
  float clipAt = 0.0f;  // magnitudes above it are clipped (+Inf without clipping)
};

// Magnitudes of a loaded group after clipping at `clipAt` (+Inf: none).
CC_DITHER_INLINE void clippedMagnitudes(const float values[kLanes], float clipAt, float magnitudes[kLanes]) {
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    const float magnitude = absOf(values[lane]);
    magnitudes[lane] = magnitude > clipAt ? clipAt : magnitude;  // a NaN stays NaN
  }
}

// One pass (two with clipping) over the bucket's groups; `source.load(g,
// scratch)` returns the 32 values of group g of the bucket (pad lanes +0),
// in `scratch` or in memory of its own.
template <class Source>
CC_DITHER_INLINE BucketNorm measureBucket(const DitherConfig& config, Source& source, size_t n) {
  const size_t groups = groupsOf(n);
  float scratch[kLanes];
  float magnitudes[kLanes];
  BucketNorm result;
  result.clipAt = bitsToFloat(kInfBits);
  if (config.clip > 0.0f) {
    float acc[kLanes] = {};
    for (size_t g = 0; g < groups; ++g) {
      const float* values = source.load(g, scratch);
      for (uint32_t lane = 0; lane < kLanes; ++lane) magnitudes[lane] = absOf(values[lane]);
      accumulateSquares(magnitudes, acc);
    }
    const float sumOfSquares = reduceLanes(acc);
    if (std::isnan(sumOfSquares)) {
      result.kind = BucketKind::NotANumber;
      return result;
    }
    const float rms = std::sqrt(sumOfSquares / static_cast<float>(n));
    result.clipAt = config.clip * rms;
  }
  uint32_t normBits;
  if (config.l2) {
    float acc[kLanes] = {};
    for (size_t g = 0; g < groups; ++g) {
      clippedMagnitudes(source.load(g, scratch), result.clipAt, magnitudes);
      accumulateSquares(magnitudes, acc);
    }
    normBits = floatToBits(std::sqrt(reduceLanes(acc)));
  } else {
    uint32_t maxBits[kLanes] = {};
    for (size_t g = 0; g < groups; ++g) {
      clippedMagnitudes(source.load(g, scratch), result.clipAt, magnitudes);
      for (uint32_t lane = 0; lane < kLanes; ++lane) {
        const uint32_t bits = floatToBits(magnitudes[lane]);
        maxBits[lane] = bits > maxBits[lane] ? bits : maxBits[lane];
      }
    }
    normBits = 0;
    for (uint32_t lane = 0; lane < kLanes; ++lane) normBits = maxBits[lane] > normBits ? maxBits[lane] : normBits;
  }
  if ((normBits & kAbsMask) > kInfBits) {
    result.kind = BucketKind::NotANumber;
  } else if (normBits == kInfBits) {
    result.kind = BucketKind::Infinite;
  } else if (normBits < kMinNormalBits) {
    result.kind = BucketKind::Zero;
  } else {
    result.kind = BucketKind::Finite;
    result.norm = bitsToFloat(normBits);
  }
  return result;
}

// Writes the bucket's norm slot and returns the transmitted norm.
CC_DITHER_INLINE DecodedNorm storeNorm(const DitherConfig& config, const BucketNorm& bucket, const uint32_t key[2],
                                       uint64_t stream, uint64_t bucketFirstIndex, uint8_t* norms, size_t b) {
  uint32_t bits = 0;
  switch (bucket.kind) {
    case BucketKind::Zero:
      bits = 0;
      break;
    case BucketKind::Infinite:
      bits = kInfBits;
      break;
    case BucketKind::NotANumber:
      bits = kCanonicalNanBits;
      break;
    case BucketKind::Finite:
      bits = floatToBits(bucket.norm);
      break;
  }
  if (config.natNorm) {
    uint32_t exponent = 0;
    if (bucket.kind == BucketKind::Finite) {
      uint32_t counter[4];
      philoxCounterForGroup(bucketFirstIndex / 4, stream ^ kNormStreamBit, counter);
      const uint32_t word = philox4x32_10(counter, key).v[bucketFirstIndex % 4];
      exponent = natEncodeExponent(bits, word);
    } else if (bucket.kind != BucketKind::Zero) {
      exponent = kNatNonFiniteExponent;
    }
    norms[b] = static_cast<uint8_t>(exponent);
    bits = natDecodeBits(0, exponent);
  } else {
    storeLe32(norms + 4 * b, bits);
  }
  return {bitsToFloat(bits), isFiniteBits(bits)};
}

// ---------------------------------------------------------------------------
// Quantisation of one group (wire-format.md, "Quantisation")

template <bool Nat>
CC_DITHER_INLINE void quantizeGroup(const DitherConfig& config, const float values[kLanes], float clipAt, float inverse,
                                    const uint32_t words[kLanes], uint32_t index[kLanes], uint32_t* signWord) {
  float magnitudes[kLanes];
  clippedMagnitudes(values, clipAt, magnitudes);
  uint32_t signs = 0;
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    float y = magnitudes[lane] * inverse;
    y = y < 1.0f ? y : 1.0f;
    const uint32_t word = words[lane];
    uint32_t level;
    if constexpr (Nat) {
      const uint32_t yBits = floatToBits(y);
      const uint32_t mantissa = yBits & 0x7fffffu;
      // y >= 2^(1-s): between the powers of two 2^(E-127) and 2^(E-126).
      const uint32_t upper = (yBits >> 23) + config.levels - 127u + static_cast<uint32_t>((word >> 9) < mantissa);
      // y < 2^(1-s): between 0 and 2^(1-s); both multiplications are exact.
      const float lowY = y < config.natLowLevel ? y : config.natLowLevel;
      const uint32_t threshold = static_cast<uint32_t>(static_cast<int32_t>((lowY * config.natLowScale) * kTwoPow24));
      const uint32_t lower = static_cast<uint32_t>((word >> 8) < threshold);
      level = yBits >= config.natLowBits ? upper : lower;
    } else {
      const float z = y * config.stdLevels;
      uint32_t floorZ = static_cast<uint32_t>(static_cast<int32_t>(z));
      floorZ = floorZ < config.levels - 1 ? floorZ : config.levels - 1;
      const float fraction = z - static_cast<float>(static_cast<int32_t>(floorZ));
      const uint32_t threshold = static_cast<uint32_t>(static_cast<int32_t>(fraction * kTwoPow24));
      level = floorZ + static_cast<uint32_t>((word >> 8) < threshold);
    }
    index[lane] = level;
    signs |= ((floatToBits(values[lane]) >> 31) & static_cast<uint32_t>(level != 0)) << lane;
  }
  *signWord = signs;
}

CC_DITHER_INLINE void storeGroup(const DitherConfig& config, uint32_t signWord, const uint32_t index[kLanes],
                                 uint8_t* group) {
  storeLe32(group, signWord);
  for (unsigned plane = 0; plane < config.levelBits; ++plane) {
    uint32_t word = 0;
    for (uint32_t lane = 0; lane < kLanes; ++lane) word |= ((index[lane] >> plane) & 1u) << lane;
    storeLe32(group + 4 + 4 * plane, word);
  }
}

// ---------------------------------------------------------------------------
// The same group operations with AVX2 intrinsics (the target("avx2") clone
// only). Every lane computes exactly the scalar operations above: the same
// IEEE multiplies, minimum (minps(a, b) = a < b ? a : b, as the scalar
// ternaries), truncating conversions and integer compares (operands below
// 2^31, so signed compares are unsigned ones).

#if CC_DITHER_AVX2_CLONE
// 32x32 -> 64-bit products of 8 lanes (vpmuludq takes the even lanes; the odd
// ones go through a second multiply after a shift), split into halves.
CC_DITHER_AVX2_INLINE void mulHiLo8(__m256i a, __m256i multiplier, __m256i* hi, __m256i* lo) {
  const __m256i evenProducts = _mm256_mul_epu32(a, multiplier);
  const __m256i oddProducts = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), multiplier);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(evenProducts, 32), oddProducts, 0xAA);
  *lo = _mm256_blend_epi32(evenProducts, _mm256_slli_epi64(oddProducts, 32), 0xAA);
}

// The random words of `Chains` consecutive groups of 32 values, the first at
// `first` (a multiple of 32), in value order. Lane L of the Philox registers
// runs Philox call (0, 2, 4, 6, 1, 3, 5, 7)[L] of its group's 8, so that the
// in-lane transposes at the end give value order without a cross-lane
// permute (the arrangement of nat_avx2.cc); first / 4 is a multiple of 8, so
// adding 0..7 never carries into the counter's high word. A Philox call is a
// chain of 10 dependent rounds: two groups per step give the core two
// independent chains to overlap.
template <int Chains>
CC_DITHER_AVX2_INLINE void groupRandomWordsAvx2(const PhiloxKeys& keys, uint64_t stream, uint64_t first,
                                                uint32_t* words) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhilox4x32M0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhilox4x32M1));
  __m256i x[Chains][4];
  for (int c = 0; c < Chains; ++c) {
    const uint64_t firstGroup = first / 4 + 8 * static_cast<uint64_t>(c);
    x[c][0] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(firstGroup))),
                               _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    x[c][1] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(firstGroup >> 32)));
    x[c][2] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
    x[c][3] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  }
#pragma GCC unroll 10
  for (int round = 0; round < kPhilox4x32Rounds; ++round) {
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(keys.round0[round]));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int>(keys.round1[round]));
#pragma GCC unroll 2
    for (int c = 0; c < Chains; ++c) {
      __m256i hi0, lo0, hi1, lo1;
      mulHiLo8(x[c][0], m0, &hi0, &lo0);
      mulHiLo8(x[c][2], m1, &hi1, &lo1);
      x[c][0] = _mm256_xor_si256(_mm256_xor_si256(hi1, x[c][1]), key0);
      x[c][1] = lo1;
      x[c][2] = _mm256_xor_si256(_mm256_xor_si256(hi0, x[c][3]), key1);
      x[c][3] = lo0;
    }
  }
  for (int c = 0; c < Chains; ++c) {
    const __m256i words01Low = _mm256_unpacklo_epi32(x[c][0], x[c][1]);
    const __m256i words01High = _mm256_unpackhi_epi32(x[c][0], x[c][1]);
    const __m256i words23Low = _mm256_unpacklo_epi32(x[c][2], x[c][3]);
    const __m256i words23High = _mm256_unpackhi_epi32(x[c][2], x[c][3]);
    __m256i* out = reinterpret_cast<__m256i*>(words + kLanes * c);
    _mm256_storeu_si256(out + 0, _mm256_unpacklo_epi64(words01Low, words23Low));    // calls 0 | 1
    _mm256_storeu_si256(out + 1, _mm256_unpackhi_epi64(words01Low, words23Low));    // calls 2 | 3
    _mm256_storeu_si256(out + 2, _mm256_unpacklo_epi64(words01High, words23High));  // calls 4 | 5
    _mm256_storeu_si256(out + 3, _mm256_unpackhi_epi64(words01High, words23High));  // calls 6 | 7
  }
}

// The words of `groups` consecutive groups from value `first` on.
CC_DITHER_AVX2_FUNCTION void randomWordsAvx2(const PhiloxKeys& keys, uint64_t stream, uint64_t first, size_t groups,
                                             uint32_t* words) {
  if ((first & 31u) != 0) {  // never produced by the library
    for (size_t g = 0; g < groups; ++g) groupRandomWords(keys.key, stream, first + g * kLanes, words + g * kLanes);
    return;
  }
  size_t g = 0;
  for (; g + 2 <= groups; g += 2) groupRandomWordsAvx2<2>(keys, stream, first + g * kLanes, words + g * kLanes);
  if (g < groups) groupRandomWordsAvx2<1>(keys, stream, first + g * kLanes, words + g * kLanes);
}

// quantizeGroup + storeGroup, 8 lanes at a time.
template <bool Nat>
CC_DITHER_AVX2_FUNCTION void encodeGroupAvx2(const DitherConfig& config, const uint32_t words[kLanes],
                                             const float values[kLanes], float clipAt, float inverse, uint8_t* group) {
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(kAbsMask)));
  const __m256 clip = _mm256_set1_ps(clipAt);
  const __m256 inv = _mm256_set1_ps(inverse);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 twoPow24 = _mm256_set1_ps(kTwoPow24);
  uint32_t signWord = 0;
  uint32_t planes[16] = {};
  for (int q = 0; q < 4; ++q) {
    const __m256 value = _mm256_loadu_ps(values + 8 * q);
    __m256 magnitude = _mm256_and_ps(value, absMask);
    magnitude = _mm256_blendv_ps(magnitude, clip, _mm256_cmp_ps(magnitude, clip, _CMP_GT_OQ));
    const __m256 y = _mm256_min_ps(_mm256_mul_ps(magnitude, inv), one);
    const __m256i word = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + 8 * q));
    __m256i level;
    if constexpr (Nat) {
      const __m256i yBits = _mm256_castps_si256(y);
      const __m256i mantissa = _mm256_and_si256(yBits, _mm256_set1_epi32(0x7fffff));
      const __m256i upper = _mm256_sub_epi32(
          _mm256_add_epi32(_mm256_srli_epi32(yBits, 23), _mm256_set1_epi32(static_cast<int>(config.levels) - 127)),
          _mm256_cmpgt_epi32(mantissa, _mm256_srli_epi32(word, 9)));
      const __m256 lowY = _mm256_min_ps(y, _mm256_set1_ps(config.natLowLevel));
      const __m256i threshold =
          _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_mul_ps(lowY, _mm256_set1_ps(config.natLowScale)), twoPow24));
      const __m256i lower = _mm256_srli_epi32(_mm256_cmpgt_epi32(threshold, _mm256_srli_epi32(word, 8)), 31);
      const __m256i isLow = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(config.natLowBits)), yBits);
      level = _mm256_blendv_epi8(upper, lower, isLow);
    } else {
      const __m256 z = _mm256_mul_ps(y, _mm256_set1_ps(config.stdLevels));
      const __m256i floorZ =
          _mm256_min_epu32(_mm256_cvttps_epi32(z), _mm256_set1_epi32(static_cast<int>(config.levels - 1)));
      const __m256 fraction = _mm256_sub_ps(z, _mm256_cvtepi32_ps(floorZ));
      const __m256i threshold = _mm256_cvttps_epi32(_mm256_mul_ps(fraction, twoPow24));
      level = _mm256_sub_epi32(floorZ, _mm256_cmpgt_epi32(threshold, _mm256_srli_epi32(word, 8)));
    }
    const __m256i isZero = _mm256_cmpeq_epi32(level, _mm256_setzero_si256());
    const __m256i signs = _mm256_andnot_si256(isZero, _mm256_castps_si256(value));
    signWord |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(signs))) << (8 * q);
    __m256i shifted = _mm256_slli_epi32(level, 31);  // bit k of the index moves to bit 31
    for (unsigned plane = 0; plane < config.levelBits; ++plane) {
      planes[plane] |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(shifted))) << (8 * q);
      level = _mm256_srli_epi32(level, 1);
      shifted = _mm256_slli_epi32(level, 31);
    }
  }
  storeLe32(group, signWord);
  for (unsigned plane = 0; plane < config.levelBits; ++plane) storeLe32(group + 4 + 4 * plane, planes[plane]);
}

// decodeGroup, 8 lanes at a time.
CC_DITHER_AVX2_FUNCTION void decodeGroupAvx2(const DitherConfig& config, const uint8_t* group, DecodedNorm norm,
                                             uint32_t valid, uint32_t out[kLanes]) {
  if (!norm.finite) {
    const uint32_t bits = floatToBits(norm.value);
    for (uint32_t lane = 0; lane < kLanes; ++lane) out[lane] = bits;
    return;
  }
  const __m256i signs = _mm256_set1_epi32(static_cast<int>(loadLe32(group)));
  __m256i planes[16];
  for (unsigned plane = 0; plane < config.levelBits; ++plane) {
    planes[plane] = _mm256_set1_epi32(static_cast<int>(loadLe32(group + 4 + 4 * plane)));
  }
  const __m256 scale = _mm256_set1_ps(norm.value);
  const __m256i one = _mm256_set1_epi32(1);
  for (int q = 0; q < 4; ++q) {
    const __m256i shift = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * q));
    __m256i index = _mm256_setzero_si256();
    for (unsigned plane = 0; plane < config.levelBits; ++plane) {
      const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(planes[plane], shift), one);
      index = _mm256_or_si256(index, _mm256_sllv_epi32(bit, _mm256_set1_epi32(static_cast<int>(plane))));
    }
    // The level table's values, computed (a gather is slow): dither_nat
    // 2^(min(j, s) - s) with 0 for j = 0, dither_std (float)min(j, u) / (float)u.
    __m256 level;
    if (config.nat) {
      const __m256i top = _mm256_min_epu32(index, _mm256_set1_epi32(static_cast<int>(config.levels)));
      const __m256i bits =
          _mm256_slli_epi32(_mm256_add_epi32(top, _mm256_set1_epi32(127 - static_cast<int>(config.levels))), 23);
      level = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpeq_epi32(index, _mm256_setzero_si256()), bits));
    } else {
      const __m256i top = _mm256_min_epu32(index, _mm256_set1_epi32(static_cast<int>(config.levels)));
      level = _mm256_div_ps(_mm256_cvtepi32_ps(top), _mm256_set1_ps(config.stdLevels));
    }
    const __m256i sign = _mm256_slli_epi32(_mm256_srlv_epi32(signs, shift), 31);
    const __m256i bits = _mm256_xor_si256(_mm256_castps_si256(_mm256_mul_ps(scale, level)), sign);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * q), bits);
  }
  for (uint32_t lane = valid; lane < kLanes; ++lane) out[lane] = 0;
}
#endif

// The group operations of one clone.
template <bool Avx2>
CC_DITHER_INLINE void decodeGroupOf(const DitherConfig& config, const uint8_t* group, DecodedNorm norm, uint32_t valid,
                                    uint32_t out[kLanes]) {
#if CC_DITHER_AVX2_CLONE
  if constexpr (Avx2) {
    decodeGroupAvx2(config, group, norm, valid, out);
    return;
  }
#endif
  decodeGroup(config, group, norm, valid, out);
}

// The random words of `groups` consecutive groups, the first at value `first`.
template <bool Avx2>
CC_DITHER_INLINE void randomWordsOf(const PhiloxKeys& keys, uint64_t stream, uint64_t first, size_t groups,
                                    uint32_t* words) {
#if CC_DITHER_AVX2_CLONE
  if constexpr (Avx2) {
    randomWordsAvx2(keys, stream, first, groups, words);
    return;
  }
#endif
  for (size_t g = 0; g < groups; ++g) groupRandomWords(keys.key, stream, first + g * kLanes, words + g * kLanes);
}

template <bool Nat, bool Avx2>
CC_DITHER_INLINE void encodeGroupOf(const DitherConfig& config, const uint32_t words[kLanes],
                                    const float values[kLanes], float clipAt, float inverse, uint8_t* group) {
#if CC_DITHER_AVX2_CLONE
  if constexpr (Avx2) {
    encodeGroupAvx2<Nat>(config, words, values, clipAt, inverse, group);
    return;
  }
#endif
  uint32_t index[kLanes];
  uint32_t signWord;
  quantizeGroup<Nat>(config, values, clipAt, inverse, words, index, &signWord);
  storeGroup(config, signWord, index, group);
}

// ---------------------------------------------------------------------------
// Encoding one bucket from a source of values

// Where a bucket's output goes.
struct BucketOutput {
  uint8_t* norms;       // the call's norm area
  size_t bucket;        // b
  uint8_t* groups;      // the bucket's first group
  uint64_t firstIndex;  // global index of the bucket's first value
  void* decoded;        // D(output) in the user's type, or null
  size_t decodedStart;  // index of the bucket's first value in `decoded`
};

template <ElementType Type, bool Nat, bool Avx2, class Source>
CC_DITHER_INLINE void encodeBucket(const DitherConfig& config, Source& source, size_t n, const PhiloxKeys& keys,
                                   uint64_t stream, const BucketOutput& out) {
  const BucketNorm bucket = measureBucket(config, source, n);
  const DecodedNorm transmitted = storeNorm(config, bucket, keys.key, stream, out.firstIndex, out.norms, out.bucket);
  const size_t groups = groupsOf(n);
  const size_t groupBytes = config.groupBytes();
  if (bucket.kind != BucketKind::Finite) {
    // Every value: sign 0, index 0; decodes to +0 (zero bucket) or to Nt.
    std::memset(out.groups, 0, groups * groupBytes);
    if (out.decoded != nullptr) {
      const uint32_t bits = transmitted.finite ? 0u : floatToBits(transmitted.value);
      for (size_t i = 0; i < n; ++i) storeElementBits<Type>(out.decoded, out.decodedStart + i, bits);
    }
    return;
  }
  const float inverse = 1.0f / bucket.norm;
  float scratch[kLanes];
  uint32_t words[kWordChunkGroups * kLanes];
  for (size_t g = 0; g < groups; ++g) {
    const size_t inChunk = g % kWordChunkGroups;
    if (inChunk == 0) {
      const size_t left = groups - g;
      randomWordsOf<Avx2>(keys, stream, out.firstIndex + g * kLanes, left < kWordChunkGroups ? left : kWordChunkGroups,
                          words);
    }
    const float* values = source.load(g, scratch);
    uint8_t* group = out.groups + g * groupBytes;
    encodeGroupOf<Nat, Avx2>(config, words + inChunk * kLanes, values, bucket.clipAt, inverse, group);
    if (out.decoded != nullptr) {
      // The owner's result is the decoded output group, so it equals decode().
      const size_t left = n - g * kLanes;
      const uint32_t valid = left < kLanes ? static_cast<uint32_t>(left) : kLanes;
      uint32_t bits[kLanes];
      decodeGroupOf<Avx2>(config, group, transmitted, valid, bits);
      for (uint32_t lane = 0; lane < valid; ++lane) {
        storeElementBits<Type>(out.decoded, out.decodedStart + g * kLanes + lane, bits[lane]);
      }
    }
  }
}

// The values of a bucket of `local`, widened.
template <ElementType Type>
struct LocalSource {
  const void* local;
  size_t start;
  size_t n;

  CC_DITHER_INLINE const float* load(size_t g, float values[kLanes]) const {
    const size_t first = start + g * kLanes;
    const size_t left = n - g * kLanes;
    if (left >= kLanes) {
      // memcpy, not a float pointer into `local`: the buffer need not be aligned.
      if constexpr (Type == ElementType::F32) {
        std::memcpy(values, static_cast<const char*>(local) + 4 * first, sizeof(float) * kLanes);
        return values;
      }
      for (uint32_t lane = 0; lane < kLanes; ++lane) values[lane] = loadValue<Type>(local, first + lane);
      return values;
    }
    for (uint32_t lane = 0; lane < kLanes; ++lane)
      values[lane] = lane < left ? loadValue<Type>(local, first + lane) : 0.0f;
    return values;
  }
};

// The hop's values (D(in) + local) / divisor of a bucket, recomputed on each load.
template <ElementType Type, bool Avx2>
struct HopSource {
  const DitherConfig* config;
  const uint8_t* inGroups;  // the bucket's first incoming group
  DecodedNorm inNorm;
  const void* local;
  size_t start;
  size_t n;
  bool divides;
  float divisor;

  CC_DITHER_INLINE const float* load(size_t g, float values[kLanes]) const {
    const size_t first = start + g * kLanes;
    const size_t left = n - g * kLanes;
    const uint32_t valid = left < kLanes ? static_cast<uint32_t>(left) : kLanes;
    uint32_t decoded[kLanes];
    decodeGroupOf<Avx2>(*config, inGroups + g * config->groupBytes(), inNorm, valid, decoded);
    float localValues[kLanes];
    if (valid == kLanes) {
      for (uint32_t lane = 0; lane < kLanes; ++lane) localValues[lane] = loadValue<Type>(local, first + lane);
    } else {
      // Pad lanes: decoded is +0 there, and so is the local value.
      for (uint32_t lane = 0; lane < kLanes; ++lane) {
        localValues[lane] = lane < valid ? loadValue<Type>(local, first + lane) : 0.0f;
      }
    }
    for (uint32_t lane = 0; lane < kLanes; ++lane) values[lane] = bitsToFloat(decoded[lane]) + localValues[lane];
    if (divides) {
      for (uint32_t lane = 0; lane < kLanes; ++lane) values[lane] = values[lane] / divisor;
    }
    return values;
  }
};

// A bucket already computed into memory (32 values per group, pad lanes +0).
struct ArraySource {
  const float* values;

  CC_DITHER_INLINE const float* load(size_t g, float*) const { return values + g * kLanes; }
};

// ---------------------------------------------------------------------------
// Whole calls

template <ElementType Type, bool Nat, bool Avx2>
CC_DITHER_INLINE void encodeKernel(const DitherConfig& config, const void* local, size_t count, uint64_t firstIndex,
                                   RandomStream rs, void* packed) {
  uint8_t* out = static_cast<uint8_t*>(packed);
  const PhiloxKeys keys(rs.seed);
  const size_t buckets = bucketCount(config, count);
  const size_t normBytes = pad4(buckets * config.normSize());
  std::memset(out + buckets * config.normSize(), 0, normBytes - buckets * config.normSize());
  for (size_t b = 0; b < buckets; ++b) {
    const BucketRange range = bucketRange(config, count, b);
    LocalSource<Type> source{local, range.start, range.n};
    const BucketOutput output{
        out, b, out + normBytes + (range.start / kLanes) * config.groupBytes(), firstIndex + range.start, nullptr, 0};
    encodeBucket<Type, Nat, Avx2>(config, source, range.n, keys, rs.stream, output);
  }
}

template <ElementType Type, bool Nat, bool Avx2>
CC_DITHER_INLINE void hopKernel(const DitherConfig& config, const void* packedIn, const void* local, size_t count,
                                uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                                void* decodedOut) {
  const uint8_t* in = static_cast<const uint8_t*>(packedIn);
  uint8_t* out = static_cast<uint8_t*>(packedOut);
  const PhiloxKeys keys(rs.seed);
  const size_t buckets = bucketCount(config, count);
  const size_t normBytes = pad4(buckets * config.normSize());
  for (size_t b = 0; b < buckets; ++b) {
    const BucketRange range = bucketRange(config, count, b);
    const size_t groupOffset = normBytes + (range.start / kLanes) * config.groupBytes();
    // The incoming norm is read before the outgoing one overwrites it (in place).
    HopSource<Type, Avx2> source{&config, in + groupOffset, readNorm(config, in, b),    local, range.start,
                                 range.n, divisor > 1,      static_cast<float>(divisor)};
    const BucketOutput output{out, b, out + groupOffset, firstIndex + range.start, decodedOut, range.start};
    if (range.n <= kStackBucketValues) {
      float values[kStackBucketValues];
      const size_t groups = groupsOf(range.n);
      for (size_t g = 0; g < groups; ++g) source.load(g, values + g * kLanes);
      ArraySource buffered{values};
      encodeBucket<Type, Nat, Avx2>(config, buffered, range.n, keys, rs.stream, output);
    } else {
      encodeBucket<Type, Nat, Avx2>(config, source, range.n, keys, rs.stream, output);
    }
  }
  std::memset(out + buckets * config.normSize(), 0, normBytes - buckets * config.normSize());
}

// Decodes every 32-value group of a message and hands the decoded float32
// bits to sink(firstValue, valid, bits).
template <bool Avx2, typename Sink>
CC_DITHER_INLINE void forEachDecodedGroup(const DitherConfig& config, const void* packed, size_t count, Sink sink) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const size_t buckets = bucketCount(config, count);
  const size_t normBytes = pad4(buckets * config.normSize());
  const size_t groupBytes = config.groupBytes();
  for (size_t b = 0; b < buckets; ++b) {
    const BucketRange range = bucketRange(config, count, b);
    const DecodedNorm norm = readNorm(config, in, b);
    const uint8_t* groups = in + normBytes + (range.start / kLanes) * groupBytes;
    for (size_t g = 0; g < groupsOf(range.n); ++g) {
      const size_t left = range.n - g * kLanes;
      const uint32_t valid = left < kLanes ? static_cast<uint32_t>(left) : kLanes;
      uint32_t bits[kLanes];
      decodeGroupOf<Avx2>(config, groups + g * groupBytes, norm, valid, bits);
      sink(range.start + g * kLanes, valid, bits);
    }
  }
}

template <ElementType Type, bool Avx2>
CC_DITHER_INLINE void decodeKernel(const DitherConfig& config, const void* packed, size_t count, void* out) {
  forEachDecodedGroup<Avx2>(config, packed, count, [out](size_t first, uint32_t valid, const uint32_t* bits) {
    for (uint32_t lane = 0; lane < valid; ++lane) storeElementBits<Type>(out, first + lane, bits[lane]);
  });
}

template <bool Avx2>
CC_DITHER_INLINE void decodeAccumulateKernel(const DitherConfig& config, const void* packed, size_t count, float* acc) {
  forEachDecodedGroup<Avx2>(config, packed, count, [acc](size_t first, uint32_t valid, const uint32_t* bits) {
    float* target = acc + first;
    for (uint32_t lane = 0; lane < valid; ++lane) target[lane] = target[lane] + bitsToFloat(bits[lane]);
  });
}

// ---------------------------------------------------------------------------
// The two compilations of each kernel

template <ElementType Type, bool Nat>
void encodeBaseline(const DitherConfig& config, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                    void* packed) {
  encodeKernel<Type, Nat, false>(config, local, count, firstIndex, rs, packed);
}
template <ElementType Type, bool Nat>
void hopBaseline(const DitherConfig& config, const void* packedIn, const void* local, size_t count, uint64_t firstIndex,
                 RandomStream rs, uint32_t divisor, void* packedOut, void* decodedOut) {
  hopKernel<Type, Nat, false>(config, packedIn, local, count, firstIndex, rs, divisor, packedOut, decodedOut);
}
template <ElementType Type>
void decodeBaseline(const DitherConfig& config, const void* packed, size_t count, void* out) {
  decodeKernel<Type, false>(config, packed, count, out);
}
void decodeAccumulateBaseline(const DitherConfig& config, const void* packed, size_t count, float* acc) {
  decodeAccumulateKernel<false>(config, packed, count, acc);
}

#if CC_DITHER_AVX2_CLONE
template <ElementType Type, bool Nat>
__attribute__((target("avx2"))) void encodeAvx2(const DitherConfig& config, const void* local, size_t count,
                                                uint64_t firstIndex, RandomStream rs, void* packed) {
  encodeKernel<Type, Nat, true>(config, local, count, firstIndex, rs, packed);
}
template <ElementType Type, bool Nat>
__attribute__((target("avx2"))) void hopAvx2(const DitherConfig& config, const void* packedIn, const void* local,
                                             size_t count, uint64_t firstIndex, RandomStream rs, uint32_t divisor,
                                             void* packedOut, void* decodedOut) {
  hopKernel<Type, Nat, true>(config, packedIn, local, count, firstIndex, rs, divisor, packedOut, decodedOut);
}
template <ElementType Type>
__attribute__((target("avx2"))) void decodeAvx2(const DitherConfig& config, const void* packed, size_t count,
                                                void* out) {
  decodeKernel<Type, true>(config, packed, count, out);
}
__attribute__((target("avx2"))) void decodeAccumulateAvx2(const DitherConfig& config, const void* packed, size_t count,
                                                          float* acc) {
  decodeAccumulateKernel<true>(config, packed, count, acc);
}
#endif

// nat's rule: the AVX2 clone when the CPU has it, unless forceScalarCodecs(true).
bool useAvx2() {
#if CC_DITHER_AVX2_CLONE
  return useAvx2Codecs();
#else
  return false;
#endif
}

template <ElementType Type, bool Nat>
class DitherCodec final : public Codec {
 public:
  DitherCodec(const DitherConfig& config, std::vector<float> levelValues)
      : config_(config), levelValues_(std::move(levelValues)) {
    config_.levelValue = levelValues_.data();
  }

  CodecId id() const override { return CodecId::Dither; }
  size_t alignmentValues() const override { return config_.bucket == 0 ? kBlockValues : config_.bucket; }
  // Every message leads with the norms of all its buckets, so two messages
  // end to end are not one message (error feedback must encode whole ones).
  bool concatenable() const override { return false; }

  size_t packedBytes(size_t count) const override {
    return pad4(bucketCount(config_, count) * config_.normSize()) + groupsOf(count) * config_.groupBytes();
  }

  void encode(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed) const override {
    if (count == 0) return;
#if CC_DITHER_AVX2_CLONE
    if (useAvx2()) return encodeAvx2<Type, Nat>(config_, local, count, firstIndex, rs, packed);
#endif
    encodeBaseline<Type, Nat>(config_, local, count, firstIndex, rs, packed);
  }

  void decode(const void* packed, size_t count, void* out) const override {
    if (count == 0) return;
#if CC_DITHER_AVX2_CLONE
    if (useAvx2()) return decodeAvx2<Type>(config_, packed, count, out);
#endif
    decodeBaseline<Type>(config_, packed, count, out);
  }

  void decodeAccumulate(const void* packed, size_t count, float* acc) const override {
    if (count == 0) return;
#if CC_DITHER_AVX2_CLONE
    if (useAvx2()) return decodeAccumulateAvx2(config_, packed, count, acc);
#endif
    decodeAccumulateBaseline(config_, packed, count, acc);
  }

  void decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                       uint32_t divisor, void* packedOut, void* decodedOut) const override {
    if (count == 0) return;
#if CC_DITHER_AVX2_CLONE
    if (useAvx2()) {
      return hopAvx2<Type, Nat>(config_, packedIn, local, count, firstIndex, rs, divisor, packedOut, decodedOut);
    }
#endif
    hopBaseline<Type, Nat>(config_, packedIn, local, count, firstIndex, rs, divisor, packedOut, decodedOut);
  }

 private:
  DitherConfig config_;
  std::vector<float> levelValues_;
};

template <ElementType Type>
std::unique_ptr<Codec> makeTyped(bool nat, const DitherConfig& config, std::vector<float> levelValues) {
  if (nat) return std::make_unique<DitherCodec<Type, true>>(config, std::move(levelValues));
  return std::make_unique<DitherCodec<Type, false>>(config, std::move(levelValues));
}

}  // namespace

unsigned ditherLevelBits(Quantizer, const DitherParams& params) {
  const uint64_t levels = static_cast<uint64_t>(params.levels) + 1;  // level indices 0 .. levels
  unsigned bits = 1;
  while ((uint64_t{1} << bits) < levels) ++bits;
  return bits;
}

cc_result_t ditherScalars(Quantizer quantizer, const DitherParams& params, ElementType type, size_t bucketValues,
                          DitherScalars* out) {
  const bool nat = quantizer == Quantizer::DitherNat;
  if (!nat && quantizer != Quantizer::DitherStd) {
    return setError(CC_INVALID_ARGUMENT, "dither codec: quantizer %d is not dither_nat or dither_std",
                    static_cast<int>(quantizer));
  }
  const uint32_t maxLevels = nat ? kMaxNatLevels : kMaxStdLevels;
  if (params.levels < 1 || params.levels > maxLevels) {
    return setError(CC_INVALID_ARGUMENT, "dither codec: %s=%u is out of range (1..%u)", nat ? "s" : "u",
                    params.levels, maxLevels);
  }
  if (params.norm != NormKind::L2 && params.norm != NormKind::Max) {
    return setError(CC_INVALID_ARGUMENT, "dither codec: unknown norm kind %d", static_cast<int>(params.norm));
  }
  if (!(params.clip >= 0.0f) || std::isinf(params.clip)) {
    return setError(CC_INVALID_ARGUMENT, "dither codec: clip=%g must be finite and >= 0",
                    static_cast<double>(params.clip));
  }
  if (bucketValues % kBlockValues != 0) {
    return setError(CC_INVALID_ARGUMENT, "dither codec: bucket=%zu is not a multiple of %zu", bucketValues,
                    kBlockValues);
  }
  if (type != ElementType::F32 && type != ElementType::BF16 && type != ElementType::F16) {
    return setError(CC_INVALID_ARGUMENT, "dither codec: element type %d is not F32, BF16 or F16",
                    static_cast<int>(type));
  }
  DitherScalars scalars;
  scalars.nat = nat;
  scalars.l2 = params.norm == NormKind::L2;
  scalars.natNorm = params.natNorm;
  scalars.clip = params.clip;
  scalars.levels = params.levels;
  scalars.levelBits = ditherLevelBits(quantizer, params);
  if (nat) {
    scalars.natLowBits = (128u - params.levels) << 23;
    scalars.natLowLevel = bitsToFloat(scalars.natLowBits);
    scalars.natLowScale = bitsToFloat((126u + params.levels) << 23);
  } else {
    scalars.stdLevels = static_cast<float>(params.levels);
  }
  *out = scalars;
  return CC_SUCCESS;
}

std::unique_ptr<Codec> makeDitherCodec(Quantizer quantizer, const DitherParams& params, ElementType type,
                                       size_t bucketValues) {
  DitherConfig config;
  if (ditherScalars(quantizer, params, type, bucketValues, &config) != CC_SUCCESS) return nullptr;
  config.bucket = bucketValues;
  const bool nat = config.nat;
  // Level values for every index the planes can hold; corrupted indices above
  // `levels` read the top level.
  std::vector<float> levelValues(size_t{1} << config.levelBits);
  for (size_t j = 0; j < levelValues.size(); ++j) {
    const uint32_t level = j < params.levels ? static_cast<uint32_t>(j) : params.levels;
    if (nat) {
      levelValues[j] = level == 0 ? 0.0f : bitsToFloat((127u + level - params.levels) << 23);
    } else {
      levelValues[j] = static_cast<float>(level) / static_cast<float>(params.levels);
    }
  }
  switch (type) {
    case ElementType::F32:
      return makeTyped<ElementType::F32>(nat, config, std::move(levelValues));
    case ElementType::BF16:
      return makeTyped<ElementType::BF16>(nat, config, std::move(levelValues));
    case ElementType::F16:
      return makeTyped<ElementType::F16>(nat, config, std::move(levelValues));
    default:
      return nullptr;  // ditherScalars refused it
  }
}

}  // namespace cc
