// The AVX2 + F16C path of the nat codec. The unit of work is one nat block
// (32 values): Philox4x32-10 runs for the block's 8 groups at once, one
// 256-bit register per Philox word; the sign mask comes from movemask and
// the exponent bytes from two packs and one cross-lane permute. Loops take
// two blocks per iteration so that two Philox chains overlap. Output is
// bit-identical to nat_scalar.cc (the tests compare the two), including
// in-place use (packedIn == packedOut, decodedOut == local): every block is
// read before it is written.
//
// This file alone is compiled with -mavx2 -mfma -mf16c. Everything here has
// internal linkage and the file calls no inline function of a shared header
// (nat_math.h, <algorithm>, ...): the linker keeps one copy of such a
// function for the whole program, and if it kept the AVX2-compiled copy the
// scalar fallback would die with SIGILL on a CPU without AVX2.
#include <immintrin.h>
#include <string.h>

#include "codec/nat_kernels.h"
#include "cuda/philox.h"

namespace cc {
namespace {

constexpr size_t kValuesPerBlock = 32;
constexpr size_t kBytesPerBlock = 36;
// Blocks whose Philox chains run interleaved (see blockRandomWords).
constexpr size_t kBlocksPerStep = 2;

size_t bytesPerValue(ElementType type) { return type == ElementType::F32 ? 4 : 2; }

// The key of every Philox round, broadcast once per call.
struct PhiloxRoundKeys {
  __m256i key0[kPhilox4x32Rounds];
  __m256i key1[kPhilox4x32Rounds];

  explicit PhiloxRoundKeys(uint64_t seed) {
    uint32_t k0 = static_cast<uint32_t>(seed);
    uint32_t k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < kPhilox4x32Rounds; ++round) {
      key0[round] = _mm256_set1_epi32(static_cast<int>(k0));
      key1[round] = _mm256_set1_epi32(static_cast<int>(k1));
      k0 += kPhilox4x32W0;
      k1 += kPhilox4x32W1;
    }
  }
};

// 32x32 -> 64-bit products of 8 lanes: vpmuludq multiplies the even lanes
// only, so the odd lanes go through a second multiply after a shift; the
// high and low halves are then blended back into lane order.
inline void mulHiLo8(__m256i a, __m256i multiplier, __m256i* hi, __m256i* lo) {
  const __m256i evenProducts = _mm256_mul_epu32(a, multiplier);
  const __m256i oddProducts = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), multiplier);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(evenProducts, 32), oddProducts, 0xAA);
  *lo = _mm256_blend_epi32(evenProducts, _mm256_slli_epi64(oddProducts, 32), 0xAA);
}

// Philox rounds FirstRound..9 for the 8 groups of each block.
template <int Blocks, int FirstRound>
inline void philoxRounds(const PhiloxRoundKeys& keys, __m256i x[Blocks][4]) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhilox4x32M0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhilox4x32M1));
#pragma GCC unroll 10
  for (int round = FirstRound; round < kPhilox4x32Rounds; ++round) {
#pragma GCC unroll 4
    for (int b = 0; b < Blocks; ++b) {
      __m256i hi0, lo0, hi1, lo1;
      mulHiLo8(x[b][0], m0, &hi0, &lo0);
      mulHiLo8(x[b][2], m1, &hi1, &lo1);
      x[b][0] = _mm256_xor_si256(_mm256_xor_si256(hi1, x[b][1]), keys.key0[round]);
      x[b][1] = lo1;
      x[b][2] = _mm256_xor_si256(_mm256_xor_si256(hi0, x[b][3]), keys.key1[round]);
      x[b][3] = lo0;
    }
  }
}

// The random words of `Blocks` consecutive blocks (8 Philox groups = 32
// values each), in value order: words[4b + j] lane l belongs to value
// 8j + l of block b.
//
// Lane L of the Philox registers computes group kGroupOfLane[L] of its
// block. That order makes the in-lane 4x4 transposes below land every
// group's 4 words next to each other in value order, with no cross-lane
// permute: after the transpose, register j holds (lane j's group | lane
// j+4's group) = (group 2j | group 2j+1) = values 8j .. 8j+7.
//
// A Philox call is a chain of 10 dependent rounds; computing two blocks in
// one loop gives the out-of-order core two independent chains to overlap.
//
// Only counter word 0 differs between the lanes and blocks (words 2 and 3
// are the stream, word 1 the group's high half), so round 0's second
// multiply and round 1's first are computed once where the blocks share the
// high half (every step but one in 2^32 groups).
template <int Blocks>
inline void blockRandomWords(const PhiloxRoundKeys& keys, uint64_t firstGroup, uint64_t stream,
                             __m256i words[4 * Blocks]) {
  const __m256i kGroupOfLane = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhilox4x32M0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhilox4x32M1));
  const __m256i streamLow = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  const __m256i streamHigh = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  __m256i x[Blocks][4];
  for (int b = 0; b < Blocks; ++b) {
    // Each block's first group is a multiple of 8, so adding 0..7 never
    // carries into the high counter word.
    const uint64_t group = firstGroup + 8 * static_cast<uint64_t>(b);
    x[b][0] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(group))), kGroupOfLane);
    x[b][1] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(group >> 32)));
    x[b][2] = streamLow;
    x[b][3] = streamHigh;
  }
  const uint64_t lastGroup = firstGroup + 8 * Blocks - 1;
  if ((firstGroup >> 32) == (lastGroup >> 32)) {
    __m256i hi1, lo1, hi0OfRound1, lo0OfRound1;
    mulHiLo8(streamLow, m1, &hi1, &lo1);
    const __m256i x0AfterRound0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x[0][1]), keys.key0[0]);
    mulHiLo8(x0AfterRound0, m0, &hi0OfRound1, &lo0OfRound1);
#pragma GCC unroll 4
    for (int b = 0; b < Blocks; ++b) {
      __m256i hi0, lo0, hi1OfRound1, lo1OfRound1;
      mulHiLo8(x[b][0], m0, &hi0, &lo0);
      const __m256i x2AfterRound0 = _mm256_xor_si256(_mm256_xor_si256(hi0, streamHigh), keys.key1[0]);
      mulHiLo8(x2AfterRound0, m1, &hi1OfRound1, &lo1OfRound1);
      x[b][0] = _mm256_xor_si256(_mm256_xor_si256(hi1OfRound1, lo1), keys.key0[1]);
      x[b][1] = lo1OfRound1;
      x[b][2] = _mm256_xor_si256(_mm256_xor_si256(hi0OfRound1, lo0), keys.key1[1]);
      x[b][3] = lo0OfRound1;
    }
    philoxRounds<Blocks, 2>(keys, x);
  } else {
    philoxRounds<Blocks, 0>(keys, x);
  }
  for (int b = 0; b < Blocks; ++b) {
    const __m256i words01Low = _mm256_unpacklo_epi32(x[b][0], x[b][1]);   // lanes 0,1 (| 4,5): words 0,1
    const __m256i words01High = _mm256_unpackhi_epi32(x[b][0], x[b][1]);  // lanes 2,3 (| 6,7): words 0,1
    const __m256i words23Low = _mm256_unpacklo_epi32(x[b][2], x[b][3]);
    const __m256i words23High = _mm256_unpackhi_epi32(x[b][2], x[b][3]);
    words[4 * b + 0] = _mm256_unpacklo_epi64(words01Low, words23Low);    // groups 0 | 1
    words[4 * b + 1] = _mm256_unpackhi_epi64(words01Low, words23Low);    // groups 2 | 3
    words[4 * b + 2] = _mm256_unpacklo_epi64(words01High, words23High);  // groups 4 | 5
    words[4 * b + 3] = _mm256_unpackhi_epi64(words01High, words23High);  // groups 6 | 7
  }
}

// natEncodeExponent and natEncodedSign of nat_math.h, 8 lanes: the exponent
// E + ((u < m) && (E < 254)), 0 for NaN; the sign lane (top bit) is the
// value's sign where the exponent is nonzero, set for NaN, clear for zero.
// u and m are below 2^23, and |x| below 2^31, so the signed compares are
// unsigned ones.
inline __m256i natExponents8(__m256i floatBits, __m256i randomWords, __m256i* signLanes) {
  const __m256i exponent = _mm256_and_si256(_mm256_srli_epi32(floatBits, 23), _mm256_set1_epi32(0xff));
  const __m256i mantissa = _mm256_and_si256(floatBits, _mm256_set1_epi32(0x7fffff));
  const __m256i uniform23 = _mm256_srli_epi32(randomWords, 9);
  const __m256i roundsUp =
      _mm256_and_si256(_mm256_cmpgt_epi32(mantissa, uniform23), _mm256_cmpgt_epi32(_mm256_set1_epi32(254), exponent));
  const __m256i magnitude = _mm256_and_si256(floatBits, _mm256_set1_epi32(0x7fffffff));
  const __m256i isNan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000));
  const __m256i rounded = _mm256_andnot_si256(isNan, _mm256_sub_epi32(exponent, roundsUp));  // roundsUp is -1 where true
  const __m256i nonZero = _mm256_cmpgt_epi32(rounded, _mm256_setzero_si256());
  *signLanes = _mm256_or_si256(_mm256_and_si256(floatBits, nonZero), isNan);
  return rounded;
}

uint32_t signMaskOf(const __m256i signLanes[4]) {
  uint32_t mask = 0;
  for (int j = 0; j < 4; ++j) {
    mask |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(signLanes[j]))) << (8 * j);
  }
  return mask;
}

// natDecodeBits of nat_math.h, 8 lanes: exponent << 23 | sign, and the
// canonical NaN where the exponent is 0 and the sign set.
inline __m256i natDecoded8(__m256i exponent, __m256i sign) {
  const __m256i bits = _mm256_or_si256(_mm256_slli_epi32(exponent, 23), sign);
  const __m256i isNan = _mm256_cmpeq_epi32(bits, _mm256_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7fc00000), isNan);
}

// Writes one block: the sign mask (x86 is little-endian, as the format is),
// then the 32 exponents narrowed to bytes. The packs work inside 128-bit
// lanes, leaving 4-byte runs in the order (v0-3, v8-11, v16-19, v24-27 |
// v4-7, v12-15, v20-23, v28-31); one vpermd puts them back in value order.
inline void storeBlock(uint32_t signMask, const __m256i exponents[4], uint8_t* out) {
  const __m256i words01 = _mm256_packs_epi32(exponents[0], exponents[1]);
  const __m256i words23 = _mm256_packs_epi32(exponents[2], exponents[3]);
  const __m256i bytes = _mm256_packus_epi16(words01, words23);
  const __m256i inValueOrder = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  memcpy(out, &signMask, 4);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4), inValueOrder);
}

// natDecodeBits, 32 lanes: lane l of register j takes bit 8j + l of the
// mask, shifted up to bit 31, as its sign.
inline void loadDecodedBlock(const uint8_t* in, __m256i floatBits[4]) {
  uint32_t signMask;
  memcpy(&signMask, in, 4);
  const __m256i maskInEveryLane = _mm256_set1_epi32(static_cast<int>(signMask));
  const __m256i signBit = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  for (int j = 0; j < 4; ++j) {
    const int top = 31 - 8 * j;
    const __m256i shiftToSign = _mm256_setr_epi32(top, top - 1, top - 2, top - 3, top - 4, top - 5, top - 6, top - 7);
    const __m256i sign = _mm256_and_si256(_mm256_sllv_epi32(maskInEveryLane, shiftToSign), signBit);
    const __m256i exponent = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + 4 + 8 * j)));
    floatBits[j] = natDecoded8(exponent, sign);
  }
}

// 32 values of the user's type as float32 bits (widening is exact).
template <ElementType Type>
inline void loadValues(const void* values, size_t first, __m256i floatBits[4]);

template <>
inline void loadValues<ElementType::F32>(const void* values, size_t first, __m256i floatBits[4]) {
  const float* p = static_cast<const float*>(values) + first;
  for (int j = 0; j < 4; ++j) floatBits[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8 * j));
}

template <>
inline void loadValues<ElementType::BF16>(const void* values, size_t first, __m256i floatBits[4]) {
  const uint16_t* p = static_cast<const uint16_t*>(values) + first;
  for (int j = 0; j < 4; ++j) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * j));
    floatBits[j] = _mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16);
  }
}

template <>
inline void loadValues<ElementType::F16>(const void* values, size_t first, __m256i floatBits[4]) {
  const uint16_t* p = static_cast<const uint16_t*>(values) + first;
  for (int j = 0; j < 4; ++j) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * j));
    floatBits[j] = _mm256_castps_si256(_mm256_cvtph_ps(raw));
  }
}

// 32 decoded nat values (powers of two, ±0, ±Inf) stored in the user's
// type. bf16 truncation is exact (the low 16 bits are zero); F16C rounds to
// nearest even, which is the rule of nat_math.h's floatBitsToHalf for
// values outside the half range.
template <ElementType Type>
inline void storeValues(const __m256i floatBits[4], void* values, size_t first);

template <>
inline void storeValues<ElementType::F32>(const __m256i floatBits[4], void* values, size_t first) {
  float* p = static_cast<float*>(values) + first;
  for (int j = 0; j < 4; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 8 * j), floatBits[j]);
}

template <>
inline void storeValues<ElementType::BF16>(const __m256i floatBits[4], void* values, size_t first) {
  uint16_t* p = static_cast<uint16_t*>(values) + first;
  for (int j = 0; j < 4; j += 2) {
    // packus works per 128-bit lane: (a0-3, b0-3 | a4-7, b4-7); the qword
    // permute restores (a0-7, b0-7).
    const __m256i packed =
        _mm256_packus_epi32(_mm256_srli_epi32(floatBits[j], 16), _mm256_srli_epi32(floatBits[j + 1], 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 8 * j), _mm256_permute4x64_epi64(packed, 0xD8));
  }
}

template <>
inline void storeValues<ElementType::F16>(const __m256i floatBits[4], void* values, size_t first) {
  uint16_t* p = static_cast<uint16_t*>(values) + first;
  for (int j = 0; j < 4; ++j) {
    const __m128i half = _mm256_cvtps_ph(_mm256_castsi256_ps(floatBits[j]), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 8 * j), half);
  }
}

// The partial last block goes through the same block code via zero-padded
// copies: pad values are +0 and encode to sign 0, exponent 0, as the
// format requires.
struct TailScratch {
  alignas(32) uint8_t values[kValuesPerBlock * 4];
  alignas(32) uint8_t packed[kBytesPerBlock];
  alignas(32) uint8_t decoded[kValuesPerBlock * 4];
};

template <ElementType Type>
inline void encodeBlock(const void* local, size_t first, const __m256i randomWords[4], uint8_t* out) {
  __m256i floatBits[4], exponents[4], signLanes[4];
  loadValues<Type>(local, first, floatBits);
  for (int j = 0; j < 4; ++j) exponents[j] = natExponents8(floatBits[j], randomWords[j], &signLanes[j]);
  storeBlock(signMaskOf(signLanes), exponents, out);
}

template <ElementType Type>
void encodeTyped(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, uint8_t* out) {
  const PhiloxRoundKeys keys(rs.seed);
  const uint64_t firstGroup = firstIndex / 4;
  const size_t fullBlocks = count / kValuesPerBlock;
  size_t block = 0;
  for (; block + kBlocksPerStep <= fullBlocks; block += kBlocksPerStep) {
    __m256i randomWords[4 * kBlocksPerStep];
    blockRandomWords<kBlocksPerStep>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    for (size_t b = 0; b < kBlocksPerStep; ++b) {
      encodeBlock<Type>(local, (block + b) * kValuesPerBlock, randomWords + 4 * b, out + (block + b) * kBytesPerBlock);
    }
  }
  for (; block < fullBlocks; ++block) {
    __m256i randomWords[4];
    blockRandomWords<1>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    encodeBlock<Type>(local, block * kValuesPerBlock, randomWords, out + block * kBytesPerBlock);
  }
  const size_t tail = count - fullBlocks * kValuesPerBlock;
  if (tail == 0) return;
  TailScratch scratch = {};
  const size_t elementSize = bytesPerValue(Type);
  memcpy(scratch.values, static_cast<const uint8_t*>(local) + fullBlocks * kValuesPerBlock * elementSize,
         tail * elementSize);
  __m256i randomWords[4];
  blockRandomWords<1>(keys, firstGroup + 8 * fullBlocks, rs.stream, randomWords);
  encodeBlock<Type>(scratch.values, 0, randomWords, out + fullBlocks * kBytesPerBlock);
}

template <ElementType Type>
void decodeTyped(const uint8_t* in, size_t count, void* out) {
  const size_t fullBlocks = count / kValuesPerBlock;
  for (size_t block = 0; block < fullBlocks; ++block) {
    __m256i floatBits[4];
    loadDecodedBlock(in + block * kBytesPerBlock, floatBits);
    storeValues<Type>(floatBits, out, block * kValuesPerBlock);
  }
  const size_t tail = count - fullBlocks * kValuesPerBlock;
  if (tail == 0) return;
  TailScratch scratch;
  __m256i floatBits[4];
  loadDecodedBlock(in + fullBlocks * kBytesPerBlock, floatBits);
  storeValues<Type>(floatBits, scratch.decoded, 0);
  const size_t elementSize = bytesPerValue(Type);
  memcpy(static_cast<uint8_t*>(out) + fullBlocks * kValuesPerBlock * elementSize, scratch.decoded, tail * elementSize);
}

// One fused hop block: sum = D(in) + local in fp32, divided when this is the
// last hop of AVG, encoded; optionally also D(encoded) in the user's type.
template <ElementType Type>
inline void decodeAddEncodeBlock(const __m256i randomWords[4], const uint8_t* in, const void* local, size_t first,
                                 bool divides, __m256 divisor, uint8_t* out, void* decodedOut) {
  __m256i inBits[4], localBits[4], sumBits[4], exponents[4], signLanes[4];
  loadDecodedBlock(in, inBits);
  loadValues<Type>(local, first, localBits);
  for (int j = 0; j < 4; ++j) {
    __m256 sum = _mm256_add_ps(_mm256_castsi256_ps(inBits[j]), _mm256_castsi256_ps(localBits[j]));
    if (divides) sum = _mm256_div_ps(sum, divisor);
    sumBits[j] = _mm256_castps_si256(sum);
  }
  for (int j = 0; j < 4; ++j) exponents[j] = natExponents8(sumBits[j], randomWords[j], &signLanes[j]);
  storeBlock(signMaskOf(signLanes), exponents, out);
  if (decodedOut != nullptr) {
    const __m256i signBit = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    __m256i decodedBits[4];
    for (int j = 0; j < 4; ++j) decodedBits[j] = natDecoded8(exponents[j], _mm256_and_si256(signLanes[j], signBit));
    storeValues<Type>(decodedBits, decodedOut, first);
  }
}

template <ElementType Type>
void decodeAddEncodeTyped(const uint8_t* in, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                          uint32_t divisor, uint8_t* out, void* decodedOut) {
  const PhiloxRoundKeys keys(rs.seed);
  const uint64_t firstGroup = firstIndex / 4;
  const bool divides = divisor > 1;
  const __m256 divisorVector = _mm256_set1_ps(static_cast<float>(divisor));
  const size_t fullBlocks = count / kValuesPerBlock;
  size_t block = 0;
  for (; block + kBlocksPerStep <= fullBlocks; block += kBlocksPerStep) {
    __m256i randomWords[4 * kBlocksPerStep];
    blockRandomWords<kBlocksPerStep>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    for (size_t b = 0; b < kBlocksPerStep; ++b) {
      decodeAddEncodeBlock<Type>(randomWords + 4 * b, in + (block + b) * kBytesPerBlock, local,
                                 (block + b) * kValuesPerBlock, divides, divisorVector,
                                 out + (block + b) * kBytesPerBlock, decodedOut);
    }
  }
  for (; block < fullBlocks; ++block) {
    __m256i randomWords[4];
    blockRandomWords<1>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    decodeAddEncodeBlock<Type>(randomWords, in + block * kBytesPerBlock, local, block * kValuesPerBlock, divides,
                               divisorVector, out + block * kBytesPerBlock, decodedOut);
  }
  const size_t tail = count - fullBlocks * kValuesPerBlock;
  if (tail == 0) return;
  // Pad lanes of the incoming tail block are read as +0 whatever they hold,
  // as the scalar reference does.
  TailScratch scratch = {};
  const size_t elementSize = bytesPerValue(Type);
  const size_t firstTailValue = fullBlocks * kValuesPerBlock;
  const uint8_t* tailIn = in + fullBlocks * kBytesPerBlock;
  uint32_t signMask;
  memcpy(&signMask, tailIn, 4);
  signMask &= (1u << tail) - 1u;  // tail < 32
  memcpy(scratch.packed, &signMask, 4);
  memcpy(scratch.packed + 4, tailIn + 4, tail);
  memcpy(scratch.values, static_cast<const uint8_t*>(local) + firstTailValue * elementSize, tail * elementSize);
  __m256i randomWords[4];
  blockRandomWords<1>(keys, firstGroup + 8 * fullBlocks, rs.stream, randomWords);
  decodeAddEncodeBlock<Type>(randomWords, scratch.packed, scratch.values, 0, divides, divisorVector,
                             out + fullBlocks * kBytesPerBlock, decodedOut != nullptr ? scratch.decoded : nullptr);
  if (decodedOut != nullptr) {
    memcpy(static_cast<uint8_t*>(decodedOut) + firstTailValue * elementSize, scratch.decoded, tail * elementSize);
  }
}

inline __m256i fixedCodes8(__m256i sums, __m256i words, __m256i floor, __m256i* signBits) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i minValue = _mm256_set1_epi32(INT32_MIN);
  const __m256i nonFinite = _mm256_cmpeq_epi32(sums, minValue);
  const __m256i magnitude = _mm256_abs_epi32(sums);
  const __m256i isZero = _mm256_cmpeq_epi32(magnitude, _mm256_setzero_si256());
  const __m256i rounded = _mm256_castps_si256(_mm256_cvtepi32_ps(magnitude));
  const __m256i pRounded = _mm256_sub_epi32(_mm256_srli_epi32(rounded, 23), _mm256_set1_epi32(127));
  const __m256i power = _mm256_sllv_epi32(one, pRounded);
  const __m256i tooHigh =
      _mm256_cmpgt_epi32(_mm256_xor_si256(power, minValue), _mm256_xor_si256(magnitude, minValue));
  const __m256i p = _mm256_add_epi32(pRounded, tooHigh);
  const __m256i lower = _mm256_sllv_epi32(one, p);
  const __m256i fraction = _mm256_sub_epi32(magnitude, lower);
  const __m256i draw = _mm256_and_si256(words, _mm256_sub_epi32(lower, one));
  const __m256i up = _mm256_cmpgt_epi32(fraction, draw);
  __m256i exponents = _mm256_sub_epi32(_mm256_add_epi32(p, floor), up);
  exponents = _mm256_andnot_si256(isZero, exponents);
  // A non-finite sum becomes NaN (code 0; INT32_MIN's own sign bit is set).
  exponents = _mm256_andnot_si256(nonFinite, exponents);
  *signBits = sums;
  return exponents;
}

inline void encodeFixedBlock(const int32_t* sums, const __m256i words[4], __m256i floor, uint8_t* out) {
  __m256i exponents[4], signBits[4];
  for (int j = 0; j < 4; ++j) {
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + 8 * j));
    exponents[j] = fixedCodes8(s, words[j], floor, &signBits[j]);
  }
  storeBlock(signMaskOf(signBits), exponents, out);
}

bool isNatType(ElementType type) {
  return type == ElementType::F32 || type == ElementType::BF16 || type == ElementType::F16;
}

}  // namespace

void natEncodeAvx2(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
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

void natDecodeAvx2(ElementType type, const void* packed, size_t count, void* out) {
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

void natDecodeAccumulateAvx2(const void* packed, size_t count, float* acc) {
  if (count == 0) return;
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const size_t fullBlocks = count / kValuesPerBlock;
  for (size_t block = 0; block < fullBlocks; ++block) {
    __m256i floatBits[4];
    loadDecodedBlock(in + block * kBytesPerBlock, floatBits);
    float* target = acc + block * kValuesPerBlock;
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_ps(target + 8 * j,
                       _mm256_add_ps(_mm256_loadu_ps(target + 8 * j), _mm256_castsi256_ps(floatBits[j])));
    }
  }
  const size_t tail = count - fullBlocks * kValuesPerBlock;
  if (tail == 0) return;
  __m256i floatBits[4];
  loadDecodedBlock(in + fullBlocks * kBytesPerBlock, floatBits);
  alignas(32) float decoded[kValuesPerBlock];
  for (int j = 0; j < 4; ++j) _mm256_store_ps(decoded + 8 * j, _mm256_castsi256_ps(floatBits[j]));
  float* target = acc + fullBlocks * kValuesPerBlock;
  for (size_t lane = 0; lane < tail; ++lane) target[lane] += decoded[lane];
}

void natDecodeAddEncodeAvx2(ElementType type, const void* packedIn, const void* local, size_t count,
                            uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut, void* decodedOut) {
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

void natEncodeFixedAvx2(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                        void* packed) {
  uint8_t* out = static_cast<uint8_t*>(packed);
  const PhiloxRoundKeys keys(rs.seed);
  const uint64_t firstGroup = firstIndex / 4;
  const __m256i floorVector = _mm256_set1_epi32(floor);
  const size_t fullBlocks = count / kValuesPerBlock;
  size_t block = 0;
  for (; block + kBlocksPerStep <= fullBlocks; block += kBlocksPerStep) {
    __m256i randomWords[4 * kBlocksPerStep];
    blockRandomWords<kBlocksPerStep>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    for (size_t b = 0; b < kBlocksPerStep; ++b) {
      encodeFixedBlock(sums + (block + b) * kValuesPerBlock, randomWords + 4 * b, floorVector,
                       out + (block + b) * kBytesPerBlock);
    }
  }
  for (; block < fullBlocks; ++block) {
    __m256i randomWords[4];
    blockRandomWords<1>(keys, firstGroup + 8 * block, rs.stream, randomWords);
    encodeFixedBlock(sums + block * kValuesPerBlock, randomWords, floorVector, out + block * kBytesPerBlock);
  }
  const size_t tail = count - fullBlocks * kValuesPerBlock;
  if (tail == 0) return;
  alignas(32) int32_t padded[kValuesPerBlock] = {};
  memcpy(padded, sums + fullBlocks * kValuesPerBlock, tail * sizeof(int32_t));
  __m256i randomWords[4];
  blockRandomWords<1>(keys, firstGroup + 8 * fullBlocks, rs.stream, randomWords);
  encodeFixedBlock(padded, randomWords, floorVector, out + fullBlocks * kBytesPerBlock);
}

}  // namespace cc
