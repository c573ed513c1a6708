// The AVX-512 path of the nat codec (F, BW, DQ, VL), chosen at run time
// over the AVX2 path where the CPU has it. Output is bit-identical to
// nat_scalar.cc, in-place use included (every block is read before it is
// written); the tests compare the three.
//
// Where the time goes: Philox4x32-10 is most of the encoder's work. Here it
// keeps one Philox word per 64-bit lane, so vpmuludq yields a round's high
// and low halves in one instruction per multiplier; a vpshufd (not a
// shift: shifts of 512-bit registers share port 0 with the multiplies)
// brings the high half down, and one vpternlogd does both XORs of a round:
// 6 instructions per round for 8 Philox calls (32 values). Four blocks run
// interleaved so that the 10-round chains overlap. Masks replace the AVX2
// path's blends and movemasks, and masked loads handle the tail block.
// The switch's nat fixed point (accumulate, re-encode) is here too, beside
// the Philox words and block layout it shares with the encoder.
//
// This file alone is compiled with AVX-512 flags; as in nat_avx2.cc it has
// internal linkage only and calls no inline function of a shared header, so
// no AVX-512 copy of such a function can replace the baseline one.
#include <string.h>

// GCC 12's _mm512_undefined_epi32 is `__m512i __Y = __Y;`, which
// -Wmaybe-uninitialized (and, in sanitizer builds, -Wuninitialized) reports
// wherever an intrinsic uses it (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "codec/nat_kernels.h"
#include "cuda/philox.h"

namespace cc {
namespace {

constexpr size_t kValuesPerBlock = 32;
constexpr size_t kBytesPerBlock = 36;
// Blocks whose Philox chains run interleaved: a round is 7 cycles of
// latency and about 3 cycles of throughput for one block.
constexpr size_t kBlocksPerStep = 4;

struct PhiloxRoundKeys {
  __m512i key0[kPhilox4x32Rounds];
  __m512i key1[kPhilox4x32Rounds];

  explicit PhiloxRoundKeys(uint64_t seed) {
    uint32_t k0 = static_cast<uint32_t>(seed);
    uint32_t k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < kPhilox4x32Rounds; ++round) {
      key0[round] = _mm512_set1_epi32(static_cast<int>(k0));
      key1[round] = _mm512_set1_epi32(static_cast<int>(k1));
      k0 += kPhilox4x32W0;
      k1 += kPhilox4x32W1;
    }
  }
};

// One Philox round for the 8 groups of each block.
template <int Blocks>
inline void philoxRound(__m512i x[Blocks][4], __m512i key0, __m512i key1) {
  const __m512i m0 = _mm512_set1_epi64(kPhilox4x32M0);
  const __m512i m1 = _mm512_set1_epi64(kPhilox4x32M1);
#pragma GCC unroll 4
  for (int b = 0; b < Blocks; ++b) {
    const __m512i product0 = _mm512_mul_epu32(x[b][0], m0);  // (lo0, hi0) per qword
    const __m512i product1 = _mm512_mul_epu32(x[b][2], m1);
    const __m512i hi0 = _mm512_shuffle_epi32(product0, _MM_PERM_CDAB);
    const __m512i hi1 = _mm512_shuffle_epi32(product1, _MM_PERM_CDAB);
    x[b][0] = _mm512_ternarylogic_epi32(hi1, x[b][1], key0, 0x96);  // a ^ b ^ c
    x[b][1] = product1;
    x[b][2] = _mm512_ternarylogic_epi32(hi0, x[b][3], key1, 0x96);
    x[b][3] = product0;
  }
}

// The random words of `Blocks` consecutive blocks in value order: words[2b]
// holds values 0..15 of block b, words[2b + 1] values 16..31.
//
// Qword lane g of x[b][w] runs group 8b + g (its low dword is Philox word w;
// the high dword carries garbage that vpmuludq ignores and the final
// permutes drop).
//
// Of the counter only word 0 differs between the lanes (and blocks): words
// 2 and 3 are the stream, word 1 the group's high half. So the first round's
// second multiply, and with it the next round's first, is the same for every
// lane; where all blocks share the high half (every step but one in 2^32
// groups) they are computed once per step.
template <int Blocks>
inline void blockRandomWords(const PhiloxRoundKeys& keys, uint64_t firstGroup, uint64_t stream,
                             __m512i words[2 * Blocks]) {
  const __m512i m0 = _mm512_set1_epi64(kPhilox4x32M0);
  const __m512i m1 = _mm512_set1_epi64(kPhilox4x32M1);
  const __m512i laneGroup = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i streamLow = _mm512_set1_epi64(static_cast<long long>(stream & 0xffffffffu));
  const __m512i streamHigh = _mm512_set1_epi64(static_cast<long long>(stream >> 32));
  const uint64_t lastGroup = firstGroup + 8 * Blocks - 1;
  __m512i x[Blocks][4];
  for (int b = 0; b < Blocks; ++b) {
    // Each block's first group is a multiple of 8, so adding 0..7 never
    // carries into the high counter word.
    const uint64_t group = firstGroup + 8 * static_cast<uint64_t>(b);
    x[b][0] = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(group & 0xffffffffu)), laneGroup);
    x[b][1] = _mm512_set1_epi64(static_cast<long long>(group >> 32));
    x[b][2] = streamLow;
    x[b][3] = streamHigh;
  }
  if ((firstGroup >> 32) == (lastGroup >> 32)) {
    // Round 0's (x2 * M1) half, and round 1's (x0 * M0) half, shared.
    const __m512i product1 = _mm512_mul_epu32(streamLow, m1);
    const __m512i x0AfterRound0 =
        _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(product1, _MM_PERM_CDAB), x[0][1], keys.key0[0], 0x96);
    const __m512i product0OfRound1 = _mm512_mul_epu32(x0AfterRound0, m0);
    const __m512i hi0OfRound1 = _mm512_shuffle_epi32(product0OfRound1, _MM_PERM_CDAB);
#pragma GCC unroll 4
    for (int b = 0; b < Blocks; ++b) {
      const __m512i product0 = _mm512_mul_epu32(x[b][0], m0);
      const __m512i x2AfterRound0 =
          _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(product0, _MM_PERM_CDAB), streamHigh, keys.key1[0], 0x96);
      const __m512i productOfRound1 = _mm512_mul_epu32(x2AfterRound0, m1);
      x[b][0] = _mm512_ternarylogic_epi32(_mm512_shuffle_epi32(productOfRound1, _MM_PERM_CDAB), product1,
                                          keys.key0[1], 0x96);
      x[b][1] = productOfRound1;
      x[b][2] = _mm512_ternarylogic_epi32(hi0OfRound1, product0, keys.key1[1], 0x96);
      x[b][3] = product0OfRound1;
    }
  } else {
    philoxRound<Blocks>(x, keys.key0[0], keys.key1[0]);
    philoxRound<Blocks>(x, keys.key0[1], keys.key1[1]);
  }
#pragma GCC unroll 8
  for (int round = 2; round < kPhilox4x32Rounds; ++round) philoxRound<Blocks>(x, keys.key0[round], keys.key1[round]);
  // (w0, w1) and (w2, w3) of each group side by side, then the groups'
  // pairs interleaved into value order.
  const __m512i pairLowDwords = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
  const __m512i firstHalf = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
  const __m512i secondHalf = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  for (int b = 0; b < Blocks; ++b) {
    const __m512i words01 = _mm512_permutex2var_epi32(x[b][0], pairLowDwords, x[b][1]);
    const __m512i words23 = _mm512_permutex2var_epi32(x[b][2], pairLowDwords, x[b][3]);
    words[2 * b] = _mm512_permutex2var_epi64(words01, firstHalf, words23);
    words[2 * b + 1] = _mm512_permutex2var_epi64(words01, secondHalf, words23);
  }
}

// natEncodeExponent and natEncodedSign of nat_math.h, 16 lanes. u < m for
// u = word >> 9 and m the 23-bit mantissa is word < (bits << 9): the shift
// drops the sign and exponent. E < 254 and NaN are compares of |x|.
inline __m512i natExponents16(__m512i floatBits, __m512i randomWords, __mmask16* signs) {
  const __m512i magnitude = _mm512_and_si512(floatBits, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 notNan = _mm512_cmple_epu32_mask(magnitude, _mm512_set1_epi32(0x7f800000));
  const __mmask16 canRoundUp = _mm512_cmplt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f000000));
  const __mmask16 roundsUp = _mm512_mask_cmplt_epu32_mask(canRoundUp, randomWords, _mm512_slli_epi32(floatBits, 9));
  __m512i exponent = _mm512_maskz_srli_epi32(notNan, magnitude, 23);
  exponent = _mm512_mask_add_epi32(exponent, roundsUp, exponent, _mm512_set1_epi32(1));
  const __mmask16 nonZero = _mm512_test_epi32_mask(exponent, exponent);
  *signs = _kor_mask16(_kand_mask16(_mm512_movepi32_mask(floatBits), nonZero), _knot_mask16(notNan));
  return exponent;
}

// natDecodeBits of nat_math.h, 16 lanes: exponent << 23 with the sign bit,
// and the canonical NaN where the exponent is 0 and the sign set.
inline __m512i natDecoded16(__m512i exponent, __mmask16 signs) {
  const __m512i bits = _mm512_slli_epi32(exponent, 23);
  const __m512i signed_ = _mm512_mask_or_epi32(bits, signs, bits, _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __mmask16 isNan = _mm512_mask_testn_epi32_mask(signs, exponent, exponent);
  return _mm512_mask_mov_epi32(signed_, isNan, _mm512_set1_epi32(0x7fc00000));
}

// One block: the sign mask (x86 is little-endian, as the format is), then
// the 32 exponents narrowed to bytes.
inline void storeBlock(__mmask16 signsLow, __mmask16 signsHigh, __m512i exponentsLow, __m512i exponentsHigh,
                       uint8_t* out) {
  const uint32_t signMask = _cvtmask16_u32(signsLow) | (_cvtmask16_u32(signsHigh) << 16);
  memcpy(out, &signMask, 4);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4), _mm512_cvtepi32_epi8(exponentsLow));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 20), _mm512_cvtepi32_epi8(exponentsHigh));
}

// A block's exponents and signs, lanes at or past `valid` read as +0 (the
// pads of a tail block, whatever they hold).
inline void loadBlock(const uint8_t* in, __mmask32 valid, __m512i exponents[2], __mmask16 signs[2]) {
  uint32_t signMask;
  memcpy(&signMask, in, 4);
  signMask &= _cvtmask32_u32(valid);
  for (int half = 0; half < 2; ++half) {
    const __mmask16 lanes = static_cast<__mmask16>(_cvtmask32_u32(valid) >> (16 * half));
    exponents[half] =
        _mm512_maskz_cvtepu8_epi32(lanes, _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 4 + 16 * half)));
    signs[half] = static_cast<__mmask16>(signMask >> (16 * half));
  }
}

// 16 values of the user's type as float32 bits (widening is exact); masked
// lanes read as +0 and are not touched in memory.
template <ElementType Type>
inline __m512i loadValues(const void* values, size_t first, __mmask16 lanes);

template <>
inline __m512i loadValues<ElementType::F32>(const void* values, size_t first, __mmask16 lanes) {
  return _mm512_maskz_loadu_epi32(lanes, static_cast<const float*>(values) + first);
}

template <>
inline __m512i loadValues<ElementType::BF16>(const void* values, size_t first, __mmask16 lanes) {
  const __m256i raw = _mm256_maskz_loadu_epi16(lanes, static_cast<const uint16_t*>(values) + first);
  return _mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16);
}

template <>
inline __m512i loadValues<ElementType::F16>(const void* values, size_t first, __mmask16 lanes) {
  const __m256i raw = _mm256_maskz_loadu_epi16(lanes, static_cast<const uint16_t*>(values) + first);
  return _mm512_castps_si512(_mm512_cvtph_ps(raw));
}

// 16 decoded nat values (powers of two, ±0, ±Inf, NaN) stored in the
// user's type. bf16 truncation is exact (the low 16 bits are zero, and the
// canonical NaN keeps its quiet bit); vcvtps2ph rounds to nearest even, the
// rule of nat_math.h's floatBitsToHalf.
template <ElementType Type>
inline void storeValues(__m512i floatBits, void* values, size_t first, __mmask16 lanes);

template <>
inline void storeValues<ElementType::F32>(__m512i floatBits, void* values, size_t first, __mmask16 lanes) {
  _mm512_mask_storeu_epi32(static_cast<float*>(values) + first, lanes, floatBits);
}

template <>
inline void storeValues<ElementType::BF16>(__m512i floatBits, void* values, size_t first, __mmask16 lanes) {
  const __m256i bf16 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(floatBits, 16));
  _mm256_mask_storeu_epi16(static_cast<uint16_t*>(values) + first, lanes, bf16);
}

template <>
inline void storeValues<ElementType::F16>(__m512i floatBits, void* values, size_t first, __mmask16 lanes) {
  const __m256i half = _mm512_cvtps_ph(_mm512_castsi512_ps(floatBits), _MM_FROUND_TO_NEAREST_INT);
  _mm256_mask_storeu_epi16(static_cast<uint16_t*>(values) + first, lanes, half);
}

inline __mmask16 halfOf(__mmask32 valid, int half) {
  return static_cast<__mmask16>(_cvtmask32_u32(valid) >> (16 * half));
}

constexpr __mmask32 kWholeBlock = 0xffffffffu;

inline __mmask32 firstLanes(size_t count) { return static_cast<__mmask32>((1ull << count) - 1u); }

template <ElementType Type>
inline void encodeBlock(const void* local, size_t first, __mmask32 valid, const __m512i randomWords[2], uint8_t* out) {
  __m512i exponents[2];
  __mmask16 signs[2];
  for (int half = 0; half < 2; ++half) {
    const __m512i floatBits = loadValues<Type>(local, first + 16 * half, halfOf(valid, half));
    exponents[half] = natExponents16(floatBits, randomWords[half], &signs[half]);
  }
  storeBlock(signs[0], signs[1], exponents[0], exponents[1], out);
}

template <ElementType Type>
void encodeTyped(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, uint8_t* out) {
  const PhiloxRoundKeys keys(rs.seed);
  const uint64_t firstGroup = firstIndex / 4;
  const size_t fullBlocks = count / kValuesPerBlock;
  size_t block = 0;
  for (; block + kBlocksPerStep <= fullBlocks; block += kBlocksPerStep) {
    __m512i randomWords[2 * kBlocksPerStep];
    blockRandomWords<kBlocksPerStep>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    for (size_t b = 0; b < kBlocksPerStep; ++b) {
      encodeBlock<Type>(local, (block + b) * kValuesPerBlock, kWholeBlock, randomWords + 2 * b,
                        out + (block + b) * kBytesPerBlock);
    }
  }
  const size_t blocks = (count + kValuesPerBlock - 1) / kValuesPerBlock;
  for (; block < blocks; ++block) {
    const size_t first = block * kValuesPerBlock;
    const __mmask32 valid = block < fullBlocks ? kWholeBlock : firstLanes(count - first);
    __m512i randomWords[2];
    blockRandomWords<1>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    encodeBlock<Type>(local, first, valid, randomWords, out + block * kBytesPerBlock);
  }
}

template <ElementType Type>
void decodeTyped(const uint8_t* in, size_t count, void* out) {
  const size_t blocks = (count + kValuesPerBlock - 1) / kValuesPerBlock;
  for (size_t block = 0; block < blocks; ++block) {
    const size_t first = block * kValuesPerBlock;
    const __mmask32 valid = count - first >= kValuesPerBlock ? kWholeBlock : firstLanes(count - first);
    __m512i exponents[2];
    __mmask16 signs[2];
    loadBlock(in + block * kBytesPerBlock, valid, exponents, signs);
    for (int half = 0; half < 2; ++half) {
      storeValues<Type>(natDecoded16(exponents[half], signs[half]), out, first + 16 * half, halfOf(valid, half));
    }
  }
}

// One fused hop block: sum = D(in) + local in fp32, divided when this is the
// last hop of AVG, encoded; optionally also D(encoded) in the user's type.
template <ElementType Type>
inline void decodeAddEncodeBlock(const __m512i randomWords[2], const uint8_t* in, const void* local, size_t first,
                                 __mmask32 valid, bool divides, __m512 divisor, uint8_t* out, void* decodedOut) {
  __m512i inExponents[2], exponents[2];
  __mmask16 inSigns[2], signs[2];
  loadBlock(in, valid, inExponents, inSigns);
  for (int half = 0; half < 2; ++half) {
    const __m512i localBits = loadValues<Type>(local, first + 16 * half, halfOf(valid, half));
    __m512 sum = _mm512_add_ps(_mm512_castsi512_ps(natDecoded16(inExponents[half], inSigns[half])),
                               _mm512_castsi512_ps(localBits));
    if (divides) sum = _mm512_div_ps(sum, divisor);
    exponents[half] = natExponents16(_mm512_castps_si512(sum), randomWords[half], &signs[half]);
  }
  storeBlock(signs[0], signs[1], exponents[0], exponents[1], out);
  if (decodedOut != nullptr) {
    for (int half = 0; half < 2; ++half) {
      storeValues<Type>(natDecoded16(exponents[half], signs[half]), decodedOut, first + 16 * half,
                        halfOf(valid, half));
    }
  }
}

template <ElementType Type>
void decodeAddEncodeTyped(const uint8_t* in, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                          uint32_t divisor, uint8_t* out, void* decodedOut) {
  const PhiloxRoundKeys keys(rs.seed);
  const uint64_t firstGroup = firstIndex / 4;
  const bool divides = divisor > 1;
  const __m512 divisorVector = _mm512_set1_ps(static_cast<float>(divisor));
  const size_t fullBlocks = count / kValuesPerBlock;
  size_t block = 0;
  for (; block + kBlocksPerStep <= fullBlocks; block += kBlocksPerStep) {
    __m512i randomWords[2 * kBlocksPerStep];
    blockRandomWords<kBlocksPerStep>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    for (size_t b = 0; b < kBlocksPerStep; ++b) {
      decodeAddEncodeBlock<Type>(randomWords + 2 * b, in + (block + b) * kBytesPerBlock, local,
                                 (block + b) * kValuesPerBlock, kWholeBlock, divides, divisorVector,
                                 out + (block + b) * kBytesPerBlock, decodedOut);
    }
  }
  const size_t blocks = (count + kValuesPerBlock - 1) / kValuesPerBlock;
  for (; block < blocks; ++block) {
    const size_t first = block * kValuesPerBlock;
    const __mmask32 valid = block < fullBlocks ? kWholeBlock : firstLanes(count - first);
    __m512i randomWords[2];
    blockRandomWords<1>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    decodeAddEncodeBlock<Type>(randomWords, in + block * kBytesPerBlock, local, first, valid, divides, divisorVector,
                               out + block * kBytesPerBlock, decodedOut);
  }
}

bool isNatType(ElementType type) {
  return type == ElementType::F32 || type == ElementType::BF16 || type == ElementType::F16;
}

// natEncodeFixed's rule for 16 sums whose codes are all normal (the AVX2
// path's fixedCodes8): p = floor(log2 |S|) from the float conversion,
// corrected where it rounded up to the next power; up when
// (u & (2^p - 1)) < |S| - 2^p. Zero sums give code 0, non-finite sums
// (INT32_MIN) code 0 with the sign bit: NaN.
inline __m512i fixedCodes16(__m512i sums, __m512i words, __m512i floor, __mmask16* signs) {
  const __m512i one = _mm512_set1_epi32(1);
  const __mmask16 nonFinite = _mm512_cmpeq_epi32_mask(sums, _mm512_set1_epi32(INT32_MIN));
  const __m512i magnitude = _mm512_abs_epi32(sums);
  const __mmask16 nonZero = _mm512_test_epi32_mask(magnitude, magnitude);
  const __m512i rounded = _mm512_castps_si512(_mm512_cvtepi32_ps(magnitude));
  const __m512i pRounded = _mm512_sub_epi32(_mm512_srli_epi32(rounded, 23), _mm512_set1_epi32(127));
  const __mmask16 tooHigh = _mm512_cmpgt_epu32_mask(_mm512_sllv_epi32(one, pRounded), magnitude);
  const __m512i p = _mm512_mask_sub_epi32(pRounded, tooHigh, pRounded, one);
  const __m512i lower = _mm512_sllv_epi32(one, p);
  const __m512i draw = _mm512_and_si512(words, _mm512_sub_epi32(lower, one));
  const __mmask16 up = _mm512_cmpgt_epi32_mask(_mm512_sub_epi32(magnitude, lower), draw);
  __m512i exponents = _mm512_add_epi32(p, floor);
  exponents = _mm512_mask_add_epi32(exponents, up, exponents, one);
  *signs = _mm512_movepi32_mask(sums);
  return _mm512_maskz_mov_epi32(_kandn_mask16(nonFinite, nonZero), exponents);
}

inline void encodeFixedBlock(const int32_t* sums, const __m512i words[2], __m512i floor, uint8_t* out) {
  __m512i exponents[2];
  __mmask16 signs[2];
  for (int half = 0; half < 2; ++half) {
    exponents[half] = fixedCodes16(_mm512_loadu_si512(sums + 16 * half), words[half], floor, &signs[half]);
  }
  storeBlock(signs[0], signs[1], exponents[0], exponents[1], out);
}

}  // namespace

void natEncodeAvx512(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                     void* packed) {
  if (count == 0 || !isNatType(type)) return;
  if (firstIndex % kValuesPerBlock != 0) return natEncodeScalar(type, local, count, firstIndex, rs, packed);
  uint8_t* out = static_cast<uint8_t*>(packed);
  switch (type) {
    case ElementType::F32:
      return encodeTyped<ElementType::F32>(local, count, firstIndex, rs, out);
    case ElementType::BF16:
      return encodeTyped<ElementType::BF16>(local, count, firstIndex, rs, out);
    default:
      return encodeTyped<ElementType::F16>(local, count, firstIndex, rs, out);
  }
}

void natDecodeAvx512(ElementType type, const void* packed, size_t count, void* out) {
  if (count == 0 || !isNatType(type)) return;
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  switch (type) {
    case ElementType::F32:
      return decodeTyped<ElementType::F32>(in, count, out);
    case ElementType::BF16:
      return decodeTyped<ElementType::BF16>(in, count, out);
    default:
      return decodeTyped<ElementType::F16>(in, count, out);
  }
}

void natDecodeAccumulateAvx512(const void* packed, size_t count, float* acc) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const size_t blocks = (count + kValuesPerBlock - 1) / kValuesPerBlock;
  for (size_t block = 0; block < blocks; ++block) {
    const size_t first = block * kValuesPerBlock;
    const __mmask32 valid = count - first >= kValuesPerBlock ? kWholeBlock : firstLanes(count - first);
    __m512i exponents[2];
    __mmask16 signs[2];
    loadBlock(in + block * kBytesPerBlock, valid, exponents, signs);
    for (int half = 0; half < 2; ++half) {
      const __mmask16 lanes = halfOf(valid, half);
      float* target = acc + first + 16 * half;
      const __m512 sum =
          _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, target), _mm512_castsi512_ps(natDecoded16(exponents[half], signs[half])));
      _mm512_mask_storeu_ps(target, lanes, sum);
    }
  }
}

void natDecodeAddEncodeAvx512(ElementType type, const void* packedIn, const void* local, size_t count,
                              uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                              void* decodedOut) {
  if (count == 0 || !isNatType(type)) return;
  if (firstIndex % kValuesPerBlock != 0) {
    return natDecodeAddEncodeScalar(type, packedIn, local, count, firstIndex, rs, divisor, packedOut, decodedOut);
  }
  const uint8_t* in = static_cast<const uint8_t*>(packedIn);
  uint8_t* out = static_cast<uint8_t*>(packedOut);
  switch (type) {
    case ElementType::F32:
      return decodeAddEncodeTyped<ElementType::F32>(in, local, count, firstIndex, rs, divisor, out, decodedOut);
    case ElementType::BF16:
      return decodeAddEncodeTyped<ElementType::BF16>(in, local, count, firstIndex, rs, divisor, out, decodedOut);
    default:
      return decodeAddEncodeTyped<ElementType::F16>(in, local, count, firstIndex, rs, divisor, out, decodedOut);
  }
}

bool natAccumulateFixedAvx512(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const __m512i floorVector = _mm512_set1_epi32(floor);
  const __m512i maxShiftVector = _mm512_set1_epi32(maxShift);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i minValue = _mm512_set1_epi32(INT32_MIN);
  const __m512i nonFiniteCode = _mm512_set1_epi32(255);
  __mmask16 bad = 0;
  const size_t blocks = (count + kValuesPerBlock - 1) / kValuesPerBlock;
  for (size_t block = 0; block < blocks; ++block) {
    const size_t first32 = block * kValuesPerBlock;
    const __mmask32 valid = count - first32 >= kValuesPerBlock ? kWholeBlock : firstLanes(count - first32);
    __m512i exponents[2];
    __mmask16 signs[2];
    loadBlock(in + block * kBytesPerBlock, valid, exponents, signs);
    for (int half = 0; half < 2; ++half) {
      // A code e with sign s adds (-1)^s 2^(e - F) when 0 <= e - F <= M; 0
      // adds nothing; 255 and NaN (0 with the sign) make the sum INT32_MIN
      // for good; any other code is left out and reported.
      const __mmask16 lanes = halfOf(valid, half);
      const __m512i e = exponents[half];
      const __mmask16 negative = signs[half];
      const __mmask16 codeZero = _mm512_testn_epi32_mask(e, e);
      const __mmask16 nonFinite =
          _kor_mask16(_mm512_cmpeq_epi32_mask(e, nonFiniteCode), _kand_mask16(codeZero, negative));
      const __mmask16 special = _kor_mask16(codeZero, nonFinite);
      const __m512i shift = _mm512_sub_epi32(e, floorVector);
      const __mmask16 inRange = _mm512_mask_cmple_epi32_mask(_mm512_cmpge_epi32_mask(shift, _mm512_setzero_si512()),
                                                             shift, maxShiftVector);
      bad = _kor_mask16(bad, _kandn_mask16(_kor_mask16(inRange, special), lanes));
      __m512i q = _mm512_maskz_sllv_epi32(_kandn_mask16(special, inRange), one, shift);
      q = _mm512_mask_sub_epi32(q, negative, _mm512_setzero_si512(), q);
      int32_t* target = acc + first32 + 16 * half;
      __m512i sum = q;
      __mmask16 sticky = nonFinite;
      if (!first) {
        const __m512i before = _mm512_maskz_loadu_epi32(lanes, target);
        sum = _mm512_add_epi32(before, q);
        sticky = _kor_mask16(sticky, _mm512_cmpeq_epi32_mask(before, minValue));
      }
      _mm512_mask_storeu_epi32(target, lanes, _mm512_mask_mov_epi32(sum, sticky, minValue));
    }
  }
  return bad == 0;
}

void natEncodeFixedAvx512(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                          void* packed) {
  uint8_t* out = static_cast<uint8_t*>(packed);
  const PhiloxRoundKeys keys(rs.seed);
  const uint64_t firstGroup = firstIndex / 4;
  const __m512i floorVector = _mm512_set1_epi32(floor);
  const size_t fullBlocks = count / kValuesPerBlock;
  size_t block = 0;
  for (; block + kBlocksPerStep <= fullBlocks; block += kBlocksPerStep) {
    __m512i randomWords[2 * kBlocksPerStep];
    blockRandomWords<kBlocksPerStep>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    for (size_t b = 0; b < kBlocksPerStep; ++b) {
      encodeFixedBlock(sums + (block + b) * kValuesPerBlock, randomWords + 2 * b, floorVector,
                       out + (block + b) * kBytesPerBlock);
    }
  }
  for (; block < fullBlocks; ++block) {
    __m512i randomWords[2];
    blockRandomWords<1>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    encodeFixedBlock(sums + block * kValuesPerBlock, randomWords, floorVector, out + block * kBytesPerBlock);
  }
  const size_t tail = count - fullBlocks * kValuesPerBlock;
  if (tail == 0) return;
  alignas(64) int32_t padded[kValuesPerBlock] = {};
  memcpy(padded, sums + fullBlocks * kValuesPerBlock, tail * sizeof(int32_t));
  __m512i randomWords[2];
  blockRandomWords<1>(keys, firstGroup + 8 * fullBlocks, rs.stream, randomWords);
  encodeFixedBlock(padded, randomWords, floorVector, out + fullBlocks * kBytesPerBlock);
}

}  // namespace cc

#pragma GCC diagnostic pop
