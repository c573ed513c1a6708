// Natural and standard dithering on device memory (docs/wire-format.md,
// "dither"): dither_nat, dither_std, qsgd and terngrad with either norm,
// float32 or nat-byte norms, clipping, any bucket size or one bucket per call,
// bit-identical to src/codec/dither.cc and to the error-feedback passes of
// src/codec/residual.cc.
//
// Work split. A warp takes 32-value groups, lane i = value 32g + i, so the
// sign word and each plane word of a group are one __ballot_sync each, and
// the lane that loads word k of an incoming group is the lane that stores
// word k of the outgoing one (an in-place hop needs no barrier). The bucket
// norm has one order (wire-format.md, "Bucket norm"): lane i accumulates the
// squares of values i, i + 32, i + 64, ... of the bucket in ascending order,
// then a __shfl_down_sync tree by 16, 8, 4, 2, 1 — the host's 32 lane
// accumulators and pairwise tree, operation for operation.
//  - Buckets up to kWarpBucketValues: one warp per bucket, fused: it measures
//    the bucket (one pass, two with clipping), stores the norm, then
//    quantises 4 groups at a time (one Philox call per lane serves the 128
//    values: lane L runs call L of the 32, the words move by shuffles).
//  - Larger buckets (and one bucket per call past that size): a block per
//    bucket measures it (31 warps stage the clipped magnitudes of 186 groups
//    into shared memory while warp 0 runs the 32 accumulation chains over
//    the previous tile: the chains are sequential by definition, so one
//    bucket's norm runs on one SM), writes the norm and a small per-bucket state to a
//    stream-ordered scratch (cudaMallocAsync), and a grid-wide kernel then
//    quantises every 4-group quad in parallel.
//
// Arithmetic: __fmul_rn / __fadd_rn / __fdiv_rn / __fsqrt_rn (never
// contracted into an FMA, no FTZ), truncating conversions as the host's
// casts, the level values as the host's table (dither_nat from exponent bits,
// dither_std as (float)j / (float)u). Sums whose bits reach an output
// (decodeAccumulate, residuals) keep NaNs the x86 way (cuda/device_float.cuh);
// everything that only feeds a bucket's norm needs no such care, since a NaN
// makes the bucket a NaN bucket, stored canonically.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/dither.h"
#include "codec/spec.h"
#include "cuda/device_codec.h"
#include "cuda/device_float.cuh"
#include "cuda/device_launch.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"

namespace cc {
namespace {

constexpr uint32_t kFullWarp = 0xffffffffu;
constexpr uint32_t kLanes = 32;
using namespace dither;

constexpr size_t kWarpBucketValues = 4096;  // buckets up to this size: one warp each, fused
constexpr unsigned kWarpThreads = 128;      // fused and quantising kernels: 4 warps a block
constexpr unsigned kQuadGroups = 4;         // groups per Philox round of a warp (128 values)
constexpr unsigned kStageLoaderWarps = 31;  // staged measurement: warp 0 accumulates, 31 warps load
constexpr unsigned kStageGroupsPerLoader = 6;  // groups each loader warp has in flight per tile
constexpr unsigned kStageTileGroups = kStageLoaderWarps * kStageGroupsPerLoader;  // per shared-memory tile
constexpr unsigned kStageThreads = kLanes * (1 + kStageLoaderWarps);
constexpr uint32_t kConsumeBatch = 16;  // staged groups warp 0 loads before adding them

enum BucketKind : uint32_t { kFinite = 0, kZero = 1, kInfinite = 2, kNotANumber = 3 };

enum class Mode { Encode, Hop, EncodeResidual, HopResidual };

__host__ __device__ constexpr bool isHop(Mode mode) { return mode == Mode::Hop || mode == Mode::HopResidual; }
__host__ __device__ constexpr bool isResidual(Mode mode) {
  return mode == Mode::EncodeResidual || mode == Mode::HopResidual;
}

// The codec's constants (DitherScalars, as plain words for the kernels).
struct Params {
  uint32_t nat;      // DitherNat, else DitherStd
  uint32_t l2;       // NormKind::L2, else Max
  uint32_t natNorm;  // one nat byte per norm
  float clip;        // > 0: clipping
  uint32_t levels;   // s or u
  uint32_t levelBits;
  uint32_t natLowBits;  // DitherNat: float bits of 2^(1-s)
  float natLowLevel;    // DitherNat: 2^(1-s)
  float natLowScale;    // DitherNat: 2^(s-1)
  float stdLevels;      // DitherStd: (float)u
};

// What one bucket's quantisation needs.
struct BucketState {
  uint32_t kind;
  float norm;         // N (finite buckets)
  float clipAt;       // magnitudes above it are clipped (+Inf without clipping)
  uint32_t ntBits;    // the transmitted norm Nt
  uint32_t inNtBits;  // hop: the incoming bucket's Nt
};

// One call.
struct Call {
  const void* local;     // count values of the user's type
  const uint8_t* in;     // hop: the incoming message
  uint8_t* out;          // the outgoing message
  float* residual;       // residual modes
  void* decoded;         // hop: D(out) in the user's type, or null
  BucketState* states;   // staged path: one per bucket
  size_t count;
  size_t bucket;         // values per bucket (> 0; the count for one bucket per call)
  size_t buckets;
  size_t normBytes;
  size_t groupBytes;
  uint64_t firstIndex;
  uint64_t stream;
  uint32_t key[2];
  float divisor;         // (float)divisor
  uint32_t divides;      // divisor > 1
  uint32_t wordsAligned;  // in and out 4-byte aligned
};

// ---------------------------------------------------------------------------
// Small helpers

__device__ __forceinline__ size_t minSize(size_t a, size_t b) { return a < b ? a : b; }

__device__ __forceinline__ bool finiteBits(uint32_t bits) { return (bits & kInfBits) != kInfBits; }

__device__ __forceinline__ float absOf(float value) { return bitsToFloat(floatToBits(value) & kAbsMask); }

__device__ __forceinline__ uint32_t loadWord(const uint8_t* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const uint32_t*>(p);
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

__device__ __forceinline__ void storeWord(uint8_t* p, uint32_t value, bool aligned) {
  if (aligned) {
    *reinterpret_cast<uint32_t*>(p) = value;
    return;
  }
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(value >> (8 * i));
}

template <ElementType Type>
__device__ __forceinline__ uint32_t loadElementBitsDevice(const void* values, size_t i) {
  if constexpr (Type == ElementType::F32) {
    return static_cast<const uint32_t*>(values)[i];
  } else if constexpr (Type == ElementType::BF16) {
    return bf16ToFloatBits(static_cast<const uint16_t*>(values)[i]);
  } else {
    return halfToFloatBits(static_cast<const uint16_t*>(values)[i]);
  }
}

template <ElementType Type>
__device__ __forceinline__ void storeElementBitsDevice(void* values, size_t i, uint32_t bits) {
  if constexpr (Type == ElementType::F32) {
    static_cast<uint32_t*>(values)[i] = bits;
  } else if constexpr (Type == ElementType::BF16) {
    static_cast<uint16_t*>(values)[i] = floatBitsToBf16(bits);
  } else {
    static_cast<uint16_t*>(values)[i] = floatBitsToHalf(bits);
  }
}

// ℓ(j): the host's level table, an index above `levels` reading the top level.
__device__ __forceinline__ float levelValue(const Params& p, uint32_t index) {
  const uint32_t level = index < p.levels ? index : p.levels;
  if (p.nat) return level == 0 ? 0.0f : bitsToFloat((127u + level - p.levels) << 23);
  return __fdiv_rn(static_cast<float>(level), p.stdLevels);
}

// The bits of bucket b's Nt as a decoder reads them.
__device__ __forceinline__ uint32_t readNormBits(const Params& p, const uint8_t* packed, size_t b, bool aligned) {
  if (p.natNorm) return natDecodeBits(0, packed[b]);
  return loadWord(packed + 4 * b, aligned);
}

// Word `lane` of a group (the sign word, then the planes) for lanes 0 .. L.
__device__ __forceinline__ uint32_t loadGroupWord(const Params& p, const uint8_t* group, uint32_t lane, bool aligned) {
  return lane <= p.levelBits ? loadWord(group + 4 * lane, aligned) : 0u;
}

// The float32 bits this lane's value decodes to; `word` is loadGroupWord's.
// Every lane of the warp must call it.
__device__ __forceinline__ uint32_t decodeLane(const Params& p, uint32_t ntBits, uint32_t word, uint32_t lane) {
  const uint32_t signWord = __shfl_sync(kFullWarp, word, 0);
  uint32_t index = 0;
  for (uint32_t plane = 0; plane < p.levelBits; ++plane) {
    const uint32_t planeWord = __shfl_sync(kFullWarp, word, static_cast<int>(plane + 1));
    index |= ((planeWord >> lane) & 1u) << plane;
  }
  if (!finiteBits(ntBits)) return ntBits;
  const float magnitude = __fmul_rn(bitsToFloat(ntBits), levelValue(p, index));
  return floatToBits(magnitude) ^ (((signWord >> lane) & 1u) << 31);
}

// The lane-0 result of the host's pairwise tree over the 32 lane sums, on every lane.
__device__ __forceinline__ float warpTreeSum(float acc) {
  for (int width = kLanes / 2; width > 0; width /= 2) acc = __fadd_rn(acc, __shfl_down_sync(kFullWarp, acc, width));
  return __shfl_sync(kFullWarp, acc, 0);
}

__device__ __forceinline__ uint32_t warpMax(uint32_t value) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    const uint32_t other = __shfl_xor_sync(kFullWarp, value, width);
    value = other > value ? other : value;
  }
  return value;
}

// ---------------------------------------------------------------------------
// The values that get quantised (wire-format.md, "The values that get
// quantised"; residual.cc for the error-feedback modes)

struct Value {
  float v;    // the value to quantise
  float sum;  // residual modes: p = local + e, or the hop's s (before the division)
};

// What a lane reads from memory for its value of a group: the local
// element's bits, the residual, and (hop) word `lane` of the incoming group.
// Split from finishValue so that loops can have several groups' loads in
// flight before the first one is used.
struct Raw {
  uint32_t local;
  float residual;
  uint32_t word;
};

template <ElementType Type, Mode M>
__device__ __forceinline__ Raw loadRaw(const Params& p, const Call& c, size_t g, uint32_t lane) {
  const size_t i = g * kLanes + lane;
  Raw raw{0u, 0.0f, 0u};
  if constexpr (isHop(M)) {
    raw.word = loadGroupWord(p, c.in + c.normBytes + g * c.groupBytes, lane, c.wordsAligned != 0);
  }
  if (i < c.count) {
    raw.local = loadElementBitsDevice<Type>(c.local, i);
    if constexpr (isResidual(M)) raw.residual = c.residual[i];
  }
  return raw;
}

// The value of this lane in group g of the call (+0 past count). Every lane
// of the warp must call it (the hop decodes the incoming group with shuffles).
template <ElementType Type, Mode M>
__device__ __forceinline__ Value finishValue(const Params& p, const Call& c, size_t g, uint32_t lane,
                                             uint32_t inNtBits, const Raw& raw) {
  const size_t i = g * kLanes + lane;
  uint32_t inBits = 0;
  if constexpr (isHop(M)) inBits = decodeLane(p, inNtBits, raw.word, lane);
  Value value{0.0f, 0.0f};
  if (i >= c.count) return value;
  const float x = bitsToFloat(raw.local);
  if constexpr (M == Mode::Encode) {
    value.v = x;
  } else if constexpr (M == Mode::Hop) {
    // dither.cc's HopSource: D(in) + local, then / divisor.
    const float sum = __fadd_rn(bitsToFloat(inBits), x);
    value.v = c.divides ? __fdiv_rn(sum, c.divisor) : sum;
  } else if constexpr (M == Mode::EncodeResidual) {
    // residual.cc: p = e; p += local.
    value.sum = x86Add(raw.residual, x);
    value.v = value.sum;
  } else {
    // residual.cc: sum = D(in); sum += e; sum += local; encoded: sum / divisor.
    value.sum = x86Add(x86Add(bitsToFloat(inBits), raw.residual), x);
    value.v = c.divides ? __fdiv_rn(value.sum, c.divisor) : value.sum;
  }
  return value;
}

template <ElementType Type, Mode M>
__device__ __forceinline__ Value sourceValue(const Params& p, const Call& c, size_t g, uint32_t lane,
                                             uint32_t inNtBits) {
  return finishValue<Type, M>(p, c, g, lane, inNtBits, loadRaw<Type, M>(p, c, g, lane));
}

__device__ __forceinline__ float clippedMagnitude(float value, float clipAt) {
  const float magnitude = absOf(value);
  return magnitude > clipAt ? clipAt : magnitude;  // a NaN stays NaN
}

// ---------------------------------------------------------------------------
// The bucket norm (wire-format.md, "Bucket norm")

__device__ __forceinline__ BucketState classify(uint32_t normBits, float clipAt) {
  BucketState state{kZero, 0.0f, clipAt, 0u, 0u};
  if ((normBits & kAbsMask) > kInfBits) {
    state.kind = kNotANumber;
  } else if (normBits == kInfBits) {
    state.kind = kInfinite;
  } else if (normBits < kMinNormalBits) {
    state.kind = kZero;
  } else {
    state.kind = kFinite;
    state.norm = bitsToFloat(normBits);
  }
  return state;
}

// The stored norm (float32 bits or the nat byte) of a classified bucket;
// sets state->ntBits. Uniform across the calling threads.
__device__ __forceinline__ uint32_t storedNorm(const Params& p, const Call& c, uint64_t bucketFirstIndex,
                                               BucketState* state) {
  uint32_t bits = 0;
  switch (state->kind) {
    case kInfinite:
      bits = kInfBits;
      break;
    case kNotANumber:
      bits = kCanonicalNanBits;
      break;
    case kFinite:
      bits = floatToBits(state->norm);
      break;
    default:
      bits = 0;
      break;
  }
  if (!p.natNorm) {
    state->ntBits = bits;
    return bits;
  }
  uint32_t exponent = 0;
  if (state->kind == kFinite) {
    uint32_t counter[4];
    philoxCounterForGroup(bucketFirstIndex / 4, c.stream ^ kNormStreamBit, counter);
    const uint32_t word = philox4x32_10(counter, c.key).v[bucketFirstIndex % 4];
    exponent = natEncodeExponent(bits, word);
  } else if (state->kind != kZero) {
    exponent = kNatNonFiniteExponent;
  }
  state->ntBits = natDecodeBits(0, exponent);
  return exponent;
}

// Writes bucket b's norm slot (and, for the last bucket, the zero bytes up to
// normBytes). One thread.
__device__ __forceinline__ void writeNorm(const Params& p, const Call& c, size_t b, uint32_t stored) {
  if (p.natNorm) {
    c.out[b] = static_cast<uint8_t>(stored);
  } else {
    storeWord(c.out + 4 * b, stored, c.wordsAligned != 0);
  }
  if (b + 1 == c.buckets) {
    const size_t normSize = p.natNorm ? 1 : 4;
    for (size_t byte = c.buckets * normSize; byte < c.normBytes; ++byte) c.out[byte] = 0;
  }
}

// ---------------------------------------------------------------------------
// Quantisation (wire-format.md, "Quantisation"), dither.cc's quantizeGroup
// for one lane.

__device__ __forceinline__ uint32_t quantizeLevel(const Params& p, float magnitude, float inverse, uint32_t word) {
  float y = __fmul_rn(magnitude, inverse);
  y = y < 1.0f ? y : 1.0f;
  if (p.nat) {
    const uint32_t yBits = floatToBits(y);
    const uint32_t mantissa = yBits & 0x7fffffu;
    const uint32_t upper = (yBits >> 23) + p.levels - 127u + static_cast<uint32_t>((word >> 9) < mantissa);
    const float lowY = y < p.natLowLevel ? y : p.natLowLevel;
    const uint32_t threshold =
        static_cast<uint32_t>(__float2int_rz(__fmul_rn(__fmul_rn(lowY, p.natLowScale), kTwoPow24)));
    const uint32_t lower = static_cast<uint32_t>((word >> 8) < threshold);
    return yBits >= p.natLowBits ? upper : lower;
  }
  const float z = __fmul_rn(y, p.stdLevels);
  uint32_t floorZ = static_cast<uint32_t>(__float2int_rz(z));
  floorZ = floorZ < p.levels - 1 ? floorZ : p.levels - 1;
  const float fraction = __fsub_rn(z, __int2float_rn(static_cast<int>(floorZ)));
  const uint32_t threshold = static_cast<uint32_t>(__float2int_rz(__fmul_rn(fraction, kTwoPow24)));
  return floorZ + static_cast<uint32_t>((word >> 8) < threshold);
}

// Quantises group g (of the call) of a measured bucket and writes its words,
// D(out) into `decoded` and the residual. `word` is this lane's random word.
template <ElementType Type, Mode M>
__device__ __forceinline__ void emitGroup(const Params& p, const Call& c, const BucketState& state, float inverse,
                                          size_t g, uint32_t lane, uint32_t word) {
  const size_t i = g * kLanes + lane;
  const bool valid = i < c.count;
  const Value value = sourceValue<Type, M>(p, c, g, lane, state.inNtBits);
  uint32_t level = 0;
  uint32_t sign = 0;
  if (state.kind == kFinite && valid) {
    level = quantizeLevel(p, clippedMagnitude(value.v, state.clipAt), inverse, word);
    sign = (floatToBits(value.v) >> 31) & static_cast<uint32_t>(level != 0);
  }
  // Lane 0 keeps the sign word, lane k + 1 plane word k: the lanes that
  // loaded the incoming group's words store the outgoing ones.
  uint32_t mine = __ballot_sync(kFullWarp, sign != 0);
  for (uint32_t plane = 0; plane < p.levelBits; ++plane) {
    const uint32_t planeWord = __ballot_sync(kFullWarp, ((level >> plane) & 1u) != 0);
    if (lane == plane + 1) mine = planeWord;
  }
  if (lane <= p.levelBits) storeWord(c.out + c.normBytes + g * c.groupBytes + 4 * lane, mine, c.wordsAligned != 0);
  if constexpr (!isResidual(M)) {
    if (c.decoded == nullptr) return;
  }
  if (!valid) return;
  // D(out) of this lane, as decodeGroup computes it from the stored words.
  uint32_t decodedBits = state.ntBits;
  if (finiteBits(state.ntBits)) {
    decodedBits = floatToBits(__fmul_rn(bitsToFloat(state.ntBits), levelValue(p, level))) ^ (sign << 31);
  }
  if (c.decoded != nullptr) storeElementBitsDevice<Type>(c.decoded, i, decodedBits);
  if constexpr (M == Mode::EncodeResidual) {
    c.residual[i] = x86Sub(value.sum, bitsToFloat(decodedBits));  // e = p - D(packed)
  } else if constexpr (M == Mode::HopResidual) {
    c.residual[i] = x86Sub(value.sum, x86Mul(bitsToFloat(decodedBits), c.divisor));  // e = s - div * D(out)
  }
}

// Groups g0 .. g0 + groups - 1 (at most kQuadGroups) of one bucket. One
// Philox call per lane gives the words of all 128 values: lane L runs call
// (first / 4 + L), whose word k belongs to value first + 4L + k.
template <ElementType Type, Mode M>
__device__ __forceinline__ void emitQuad(const Params& p, const Call& c, const BucketState& state, size_t g0,
                                         uint32_t groups, uint32_t lane) {
  const bool finite = state.kind == kFinite;
  const float inverse = finite ? __fdiv_rn(1.0f, state.norm) : 0.0f;
  const uint64_t first = c.firstIndex + static_cast<uint64_t>(g0) * kLanes;
  // A firstIndex that is not a multiple of 4 (never produced by the library)
  // takes one Philox call per value, as the host's fallback.
  const bool wordAligned = (c.firstIndex & 3u) == 0;
  Philox4x32 words{};
  if (finite && wordAligned) {
    uint32_t counter[4];
    philoxCounterForGroup(first / 4 + lane, c.stream, counter);
    words = philox4x32_10(counter, c.key);
  }
  for (uint32_t q = 0; q < groups; ++q) {
    uint32_t word = 0;
    if (finite) {
      if (wordAligned) {
        const int source = static_cast<int>(8 * q + lane / 4);
        const uint32_t w0 = __shfl_sync(kFullWarp, words.v[0], source);
        const uint32_t w1 = __shfl_sync(kFullWarp, words.v[1], source);
        const uint32_t w2 = __shfl_sync(kFullWarp, words.v[2], source);
        const uint32_t w3 = __shfl_sync(kFullWarp, words.v[3], source);
        const uint32_t k = lane & 3u;
        word = k == 0 ? w0 : k == 1 ? w1 : k == 2 ? w2 : w3;
      } else {
        const uint64_t index = first + static_cast<uint64_t>(q) * kLanes + lane;
        uint32_t counter[4];
        philoxCounterForGroup(index / 4, c.stream, counter);
        word = philox4x32_10(counter, c.key).v[index % 4];
      }
    }
    emitGroup<Type, M>(p, c, state, inverse, g0 + q, lane, word);
  }
}

// ---------------------------------------------------------------------------
// Fused path: one warp per bucket

template <ElementType Type, Mode M>
__device__ __forceinline__ float warpSumOfSquares(const Params& p, const Call& c, size_t firstGroup, size_t groups,
                                                  uint32_t lane, uint32_t inNtBits, float clipAt) {
  float acc = 0.0f;
#pragma unroll 4
  for (size_t g = 0; g < groups; ++g) {
    const float magnitude = clippedMagnitude(sourceValue<Type, M>(p, c, firstGroup + g, lane, inNtBits).v, clipAt);
    acc = __fadd_rn(acc, __fmul_rn(magnitude, magnitude));
  }
  return warpTreeSum(acc);
}

template <ElementType Type, Mode M>
__global__ void __launch_bounds__(kWarpThreads) ditherBucketWarps(Params p, Call c) {
  const uint32_t lane = threadIdx.x % kLanes;
  const size_t warps = static_cast<size_t>(gridDim.x) * (blockDim.x / kLanes);
  for (size_t b = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes; b < c.buckets; b += warps) {
    const size_t start = b * c.bucket;
    const size_t n = minSize(c.bucket, c.count - start);
    const size_t firstGroup = start / kLanes;
    const size_t groups = (n + kLanes - 1) / kLanes;
    uint32_t inNtBits = 0;
    if constexpr (isHop(M)) {
      // Lane 0 reads the incoming norm and later writes the outgoing one (in place).
      inNtBits = __shfl_sync(kFullWarp, lane == 0 ? readNormBits(p, c.in, b, c.wordsAligned != 0) : 0u, 0);
    }
    float clipAt = bitsToFloat(kInfBits);
    bool notANumber = false;
    if (p.clip > 0.0f) {
      const float sumOfSquares = warpSumOfSquares<Type, M>(p, c, firstGroup, groups, lane, inNtBits, clipAt);
      if (sumOfSquares != sumOfSquares) {
        notANumber = true;
      } else {
        const float rms = __fsqrt_rn(__fdiv_rn(sumOfSquares, static_cast<float>(n)));
        clipAt = __fmul_rn(p.clip, rms);
      }
    }
    BucketState state{kNotANumber, 0.0f, clipAt, 0u, 0u};
    if (!notANumber) {
      uint32_t normBits;
      if (p.l2) {
        normBits = floatToBits(__fsqrt_rn(warpSumOfSquares<Type, M>(p, c, firstGroup, groups, lane, inNtBits, clipAt)));
      } else {
        uint32_t maxBits = 0;
#pragma unroll 4
        for (size_t g = 0; g < groups; ++g) {
          const uint32_t bits =
              floatToBits(clippedMagnitude(sourceValue<Type, M>(p, c, firstGroup + g, lane, inNtBits).v, clipAt));
          maxBits = bits > maxBits ? bits : maxBits;
        }
        normBits = warpMax(maxBits);
      }
      state = classify(normBits, clipAt);
    }
    state.inNtBits = inNtBits;
    const uint32_t stored = storedNorm(p, c, c.firstIndex + start, &state);
    if (lane == 0) writeNorm(p, c, b, stored);
    for (size_t q = 0; q < groups; q += kQuadGroups) {
      emitQuad<Type, M>(p, c, state, firstGroup + q, static_cast<uint32_t>(minSize(kQuadGroups, groups - q)), lane);
    }
  }
}

// ---------------------------------------------------------------------------
// Staged path: a block measures each bucket, the grid quantises

// One pass over a bucket: loader warps stage the clipped magnitudes of
// kStageTileGroups groups at a time; warp 0 adds their squares (or takes the
// maximum of their bits) lane by lane in group order, one tile behind. Returns the sum's bits
// (squares) or the maximum, on every thread.
template <ElementType Type, Mode M>
__device__ uint32_t stagedPass(const Params& p, const Call& c, float (*stage)[kStageTileGroups * kLanes],
                               uint32_t* result, size_t firstGroup, size_t groups, uint32_t inNtBits, float clipAt,
                               bool squares) {
  const uint32_t warp = threadIdx.x / kLanes;
  const uint32_t lane = threadIdx.x % kLanes;
  const size_t tiles = (groups + kStageTileGroups - 1) / kStageTileGroups;
  // Software pipeline: a loader warp holds the raw loads of tile t + 2 in
  // registers (in flight across the barrier) while it finishes tile t + 1
  // into shared memory and warp 0 consumes tile t.
  Raw raw[kStageGroupsPerLoader];
  auto groupOf = [&](size_t tile, uint32_t k) {
    return tile * kStageTileGroups + (warp - 1) + k * kStageLoaderWarps;
  };
  auto issue = [&](size_t tile) {
#pragma unroll
    for (uint32_t k = 0; k < kStageGroupsPerLoader; ++k) {
      const size_t g = groupOf(tile, k);
      if (g < groups) raw[k] = loadRaw<Type, M>(p, c, firstGroup + g, lane);
    }
  };
  auto finish = [&](size_t tile, unsigned buffer) {
#pragma unroll
    for (uint32_t k = 0; k < kStageGroupsPerLoader; ++k) {
      const size_t g = groupOf(tile, k);
      if (g < groups) {
        stage[buffer][((warp - 1) + k * kStageLoaderWarps) * kLanes + lane] =
            clippedMagnitude(finishValue<Type, M>(p, c, firstGroup + g, lane, inNtBits, raw[k]).v, clipAt);
      }
    }
  };
  if (warp != 0) {
    issue(0);
    finish(0, 0);
    if (tiles > 1) issue(1);
  }
  __syncthreads();
  float acc = 0.0f;
  uint32_t maxBits = 0;
  for (size_t tile = 0; tile < tiles; ++tile) {
    if (warp != 0) {
      if (tile + 1 < tiles) {
        finish(tile + 1, static_cast<unsigned>((tile + 1) & 1));
        if (tile + 2 < tiles) issue(tile + 2);
      }
    } else {
      const float* staged = stage[tile & 1];
      const uint32_t inTile = static_cast<uint32_t>(minSize(kStageTileGroups, groups - tile * kStageTileGroups));
      // Shared-memory loads kConsumeBatch groups ahead of the adds, which
      // stay one dependent chain in group order.
      uint32_t j = 0;
      for (; j + kConsumeBatch <= inTile; j += kConsumeBatch) {
        float batch[kConsumeBatch];
#pragma unroll
        for (uint32_t u = 0; u < kConsumeBatch; ++u) batch[u] = staged[(j + u) * kLanes + lane];
        if (squares) {
#pragma unroll
          for (uint32_t u = 0; u < kConsumeBatch; ++u) acc = __fadd_rn(acc, __fmul_rn(batch[u], batch[u]));
        } else {
#pragma unroll
          for (uint32_t u = 0; u < kConsumeBatch; ++u) {
            const uint32_t bits = floatToBits(batch[u]);
            maxBits = bits > maxBits ? bits : maxBits;
          }
        }
      }
      for (; j < inTile; ++j) {
        const float magnitude = staged[j * kLanes + lane];
        if (squares) {
          acc = __fadd_rn(acc, __fmul_rn(magnitude, magnitude));
        } else {
          const uint32_t bits = floatToBits(magnitude);
          maxBits = bits > maxBits ? bits : maxBits;
        }
      }
    }
    __syncthreads();
  }
  if (warp == 0) {
    const uint32_t bits = squares ? floatToBits(warpTreeSum(acc)) : warpMax(maxBits);
    if (lane == 0) *result = bits;
  }
  __syncthreads();
  return *result;
}

template <ElementType Type, Mode M>
__global__ void __launch_bounds__(kStageThreads) ditherMeasureBlocks(Params p, Call c) {
  __shared__ float stage[2][kStageTileGroups * kLanes];
  __shared__ uint32_t shared;
  for (size_t b = blockIdx.x; b < c.buckets; b += gridDim.x) {
    const size_t start = b * c.bucket;
    const size_t n = minSize(c.bucket, c.count - start);
    const size_t firstGroup = start / kLanes;
    const size_t groups = (n + kLanes - 1) / kLanes;
    // Thread 0 reads the incoming norm and later writes the outgoing one (in place).
    if (threadIdx.x == 0) shared = isHop(M) ? readNormBits(p, c.in, b, c.wordsAligned != 0) : 0u;
    __syncthreads();
    const uint32_t inNtBits = shared;
    __syncthreads();
    float clipAt = bitsToFloat(kInfBits);
    bool notANumber = false;
    if (p.clip > 0.0f) {
      const float sumOfSquares =
          bitsToFloat(stagedPass<Type, M>(p, c, stage, &shared, firstGroup, groups, inNtBits, clipAt, true));
      if (sumOfSquares != sumOfSquares) {
        notANumber = true;
      } else {
        const float rms = __fsqrt_rn(__fdiv_rn(sumOfSquares, static_cast<float>(n)));
        clipAt = __fmul_rn(p.clip, rms);
      }
    }
    uint32_t normBits = 0;
    if (!notANumber) {
      normBits = stagedPass<Type, M>(p, c, stage, &shared, firstGroup, groups, inNtBits, clipAt, p.l2 != 0);
      if (p.l2) normBits = floatToBits(__fsqrt_rn(bitsToFloat(normBits)));
    }
    if (threadIdx.x == 0) {
      BucketState state{kNotANumber, 0.0f, clipAt, 0u, 0u};
      if (!notANumber) state = classify(normBits, clipAt);
      state.inNtBits = inNtBits;
      const uint32_t stored = storedNorm(p, c, c.firstIndex + start, &state);
      writeNorm(p, c, b, stored);
      c.states[b] = state;
    }
    __syncthreads();  // `shared` is rewritten for the next bucket
  }
}

// Work item = (bucket, quad of 4 groups); a warp per item.
template <ElementType Type, Mode M>
__global__ void __launch_bounds__(kWarpThreads) ditherQuantizeQuads(Params p, Call c, size_t quadsPerBucket) {
  const uint32_t lane = threadIdx.x % kLanes;
  const size_t warps = static_cast<size_t>(gridDim.x) * (blockDim.x / kLanes);
  const size_t items = c.buckets * quadsPerBucket;
  for (size_t item = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes; item < items;
       item += warps) {
    const size_t b = item / quadsPerBucket;
    const size_t quad = item % quadsPerBucket;
    const size_t start = b * c.bucket;
    const size_t groups = (minSize(c.bucket, c.count - start) + kLanes - 1) / kLanes;
    const size_t q = quad * kQuadGroups;
    if (q >= groups) continue;
    const BucketState state = c.states[b];
    emitQuad<Type, M>(p, c, state, start / kLanes + q, static_cast<uint32_t>(minSize(kQuadGroups, groups - q)), lane);
  }
}

// ---------------------------------------------------------------------------
// Decoding: a warp per group

template <ElementType Type, bool Accumulate>
__global__ void __launch_bounds__(kWarpThreads)
    ditherDecodeGroups(Params p, const uint8_t* in, size_t count, size_t bucket, size_t normBytes, size_t groupBytes,
                       uint32_t wordsAligned, void* out, float* acc) {
  const uint32_t lane = threadIdx.x % kLanes;
  const size_t warps = static_cast<size_t>(gridDim.x) * (blockDim.x / kLanes);
  const size_t groups = (count + kLanes - 1) / kLanes;
  for (size_t g = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes; g < groups; g += warps) {
    const size_t b = g * kLanes / bucket;
    const uint32_t ntBits =
        __shfl_sync(kFullWarp, lane == 0 ? readNormBits(p, in, b, wordsAligned != 0) : 0u, 0);
    const uint32_t word = loadGroupWord(p, in + normBytes + g * groupBytes, lane, wordsAligned != 0);
    const uint32_t bits = decodeLane(p, ntBits, word, lane);
    const size_t i = g * kLanes + lane;
    if (i >= count) continue;
    if constexpr (Accumulate) {
      acc[i] = x86Add(acc[i], bitsToFloat(bits));  // dither.cc: target + value
    } else {
      storeElementBitsDevice<Type>(out, i, bits);
    }
  }
}

// ---------------------------------------------------------------------------
// The codec

size_t pad4(size_t bytes) { return (bytes + 3) & ~static_cast<size_t>(3); }

bool misaligned(const void* pointer, size_t alignment) {
  return pointer != nullptr && reinterpret_cast<uintptr_t>(pointer) % alignment != 0;
}

class DeviceDitherCodec final : public DeviceCodec {
 public:
  DeviceDitherCodec(const Params& params, ElementType type, size_t bucketValues)
      : params_(params), type_(type), bucket_(bucketValues) {}

  CodecId id() const override { return CodecId::Dither; }
  size_t alignmentValues() const override { return bucket_ == 0 ? kBlockValues : bucket_; }
  size_t packedBytes(size_t count) const override {
    return pad4(bucketCount(count) * normSize()) + (count + kLanes - 1) / kLanes * groupBytes();
  }

  cc_result_t encode(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed,
                     void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    CC_CHECK(checkValues("encode", local, nullptr));
    Call c = makeCall(count, firstIndex, rs, nullptr, packed);
    c.local = local;
    return dispatchEncode(Mode::Encode, c, stream);
  }

  cc_result_t decode(const void* packed, size_t count, void* out, void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    CC_CHECK(checkValues("decode", out, nullptr));
    switch (type_) {
      case ElementType::F32:
        return launchDecode<ElementType::F32, false>(packed, count, out, nullptr, stream);
      case ElementType::BF16:
        return launchDecode<ElementType::BF16, false>(packed, count, out, nullptr, stream);
      default:
        return launchDecode<ElementType::F16, false>(packed, count, out, nullptr, stream);
    }
  }

  cc_result_t decodeAccumulate(const void* packed, size_t count, float* acc, void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    if (misaligned(acc, 4)) {
      return setError(CC_INVALID_ARGUMENT, "dither device decodeAccumulate: acc is not 4-byte aligned");
    }
    return launchDecode<ElementType::F32, true>(packed, count, nullptr, acc, stream);
  }

  cc_result_t decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t firstIndex,
                              RandomStream rs, uint32_t divisor, void* packedOut, void* decodedOut,
                              void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    CC_CHECK(checkValues("decodeAddEncode", local, decodedOut));
    Call c = makeCall(count, firstIndex, rs, packedIn, packedOut);
    c.local = local;
    c.decoded = decodedOut;
    setDivisor(&c, divisor);
    return dispatchEncode(Mode::Hop, c, stream);
  }

  cc_result_t encodeWithResidual(const void* local, float* residual, size_t count, uint64_t firstIndex,
                                 RandomStream rs, void* packed, void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    CC_CHECK(checkValues("encodeWithResidual", local, nullptr));
    if (misaligned(residual, 4)) {
      return setError(CC_INVALID_ARGUMENT, "dither device encodeWithResidual: residual is not 4-byte aligned");
    }
    Call c = makeCall(count, firstIndex, rs, nullptr, packed);
    c.local = local;
    c.residual = residual;
    return dispatchEncode(Mode::EncodeResidual, c, stream);
  }

  cc_result_t decodeAddEncodeWithResidual(const void* packedIn, const void* local, float* residual, size_t count,
                                          uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                                          void* decodedOut, void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    CC_CHECK(checkValues("decodeAddEncodeWithResidual", local, decodedOut));
    if (misaligned(residual, 4)) {
      return setError(CC_INVALID_ARGUMENT,
                      "dither device decodeAddEncodeWithResidual: residual is not 4-byte aligned");
    }
    Call c = makeCall(count, firstIndex, rs, packedIn, packedOut);
    c.local = local;
    c.residual = residual;
    c.decoded = decodedOut;
    setDivisor(&c, divisor);
    return dispatchEncode(Mode::HopResidual, c, stream);
  }

 private:
  size_t normSize() const { return params_.natNorm ? 1 : 4; }
  size_t groupBytes() const { return 4 * (1 + static_cast<size_t>(params_.levelBits)); }
  size_t bucketCount(size_t count) const {
    if (count == 0) return 0;
    return bucket_ == 0 ? 1 : (count + bucket_ - 1) / bucket_;
  }

  // Element arrays must be aligned to their type (any cudaMalloc'd array is);
  // packed messages may sit at any byte.
  cc_result_t checkValues(const char* method, const void* values, const void* decoded) const {
    const size_t alignment = elementBytes(type_);
    if (misaligned(values, alignment) || misaligned(decoded, alignment)) {
      return setError(CC_INVALID_ARGUMENT, "dither device %s: value arrays must be %zu-byte aligned", method,
                      alignment);
    }
    return CC_SUCCESS;
  }

  Call makeCall(size_t count, uint64_t firstIndex, RandomStream rs, const void* in, void* out) const {
    Call c{};
    c.in = static_cast<const uint8_t*>(in);
    c.out = static_cast<uint8_t*>(out);
    c.count = count;
    c.bucket = bucket_ == 0 ? count : bucket_;
    c.buckets = bucketCount(count);
    c.normBytes = pad4(c.buckets * normSize());
    c.groupBytes = groupBytes();
    c.firstIndex = firstIndex;
    c.stream = rs.stream;
    philoxKeyFromSeed(rs.seed, c.key);
    c.divisor = 1.0f;
    c.divides = 0;
    c.wordsAligned = ((reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(out)) & 3u) == 0 ? 1u : 0u;
    return c;
  }

  static void setDivisor(Call* c, uint32_t divisor) {
    c->divisor = static_cast<float>(divisor);
    c->divides = divisor > 1 ? 1u : 0u;
  }

  cc_result_t dispatchEncode(Mode mode, const Call& c, void* stream) const {
    switch (type_) {
      case ElementType::F32:
        return dispatchMode<ElementType::F32>(mode, c, stream);
      case ElementType::BF16:
        return dispatchMode<ElementType::BF16>(mode, c, stream);
      default:
        return dispatchMode<ElementType::F16>(mode, c, stream);
    }
  }

  template <ElementType Type>
  cc_result_t dispatchMode(Mode mode, const Call& c, void* stream) const {
    switch (mode) {
      case Mode::Encode:
        return launchEncode<Type, Mode::Encode>(c, stream, "encode");
      case Mode::Hop:
        return launchEncode<Type, Mode::Hop>(c, stream, "decodeAddEncode");
      case Mode::EncodeResidual:
        return launchEncode<Type, Mode::EncodeResidual>(c, stream, "encodeWithResidual");
      default:
        return launchEncode<Type, Mode::HopResidual>(c, stream, "decodeAddEncodeWithResidual");
    }
  }

  template <ElementType Type, Mode M>
  cc_result_t launchEncode(Call c, void* stream, const char* method) const {
    const cudaStream_t s = asCudaStream(stream);
    if (c.bucket <= kWarpBucketValues) {
      ditherBucketWarps<Type, M><<<gridFor(c.buckets, kWarpThreads / kLanes), kWarpThreads, 0, s>>>(params_, c);
      return launched("ditherBucketWarps", method);
    }
    void* scratch = nullptr;
    cudaError_t status = cudaMallocAsync(&scratch, c.buckets * sizeof(BucketState), s);
    if (status != cudaSuccess) {
      return setError(CC_CUDA_ERROR, "dither device %s: cudaMallocAsync of %zu bucket states failed: %s", method,
                      c.buckets, cudaGetErrorString(status));
    }
    c.states = static_cast<BucketState*>(scratch);
    ditherMeasureBlocks<Type, M><<<gridFor(c.buckets, 1), kStageThreads, 0, s>>>(params_, c);
    cc_result_t result = launched("ditherMeasureBlocks", method);
    if (result == CC_SUCCESS) {
      const size_t groupsPerBucket = (c.bucket + kLanes - 1) / kLanes;  // one bucket per call: any count
      const size_t quadsPerBucket = (groupsPerBucket + kQuadGroups - 1) / kQuadGroups;
      ditherQuantizeQuads<Type, M>
          <<<gridFor(c.buckets * quadsPerBucket, kWarpThreads / kLanes), kWarpThreads, 0, s>>>(params_, c,
                                                                                             quadsPerBucket);
      result = launched("ditherQuantizeQuads", method);
    }
    status = cudaFreeAsync(scratch, s);
    if (status != cudaSuccess && result == CC_SUCCESS) {
      result = setError(CC_CUDA_ERROR, "dither device %s: cudaFreeAsync failed: %s", method,
                        cudaGetErrorString(status));
    }
    return result;
  }

  template <ElementType Type, bool Accumulate>
  cc_result_t launchDecode(const void* packed, size_t count, void* out, float* acc, void* stream) const {
    const size_t buckets = bucketCount(count);
    const size_t groups = (count + kLanes - 1) / kLanes;
    const uint32_t aligned = (reinterpret_cast<uintptr_t>(packed) & 3u) == 0 ? 1u : 0u;
    ditherDecodeGroups<Type, Accumulate>
        <<<gridFor(groups, kWarpThreads / kLanes), kWarpThreads, 0, asCudaStream(stream)>>>(
            params_, static_cast<const uint8_t*>(packed), count, bucket_ == 0 ? count : bucket_,
            pad4(buckets * normSize()), groupBytes(), aligned, out, acc);
    return launched("ditherDecodeGroups", Accumulate ? "decodeAccumulate" : "decode");
  }

  static cc_result_t launched(const char* kernel, const char* method) {
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) {
      return setError(CC_CUDA_ERROR, "%s (dither device %s): launch failed: %s", kernel, method,
                      cudaGetErrorString(status));
    }
    return CC_SUCCESS;
  }

  Params params_;
  ElementType type_;
  size_t bucket_;  // 0: one bucket per call
};

}  // namespace

std::unique_ptr<DeviceCodec> makeDeviceDitherCodec(Quantizer quantizer, const DitherParams& params, ElementType type,
                                                   size_t bucketValues) {
  // The host factory's checks and constants (dither.cc), so both accept the same specs.
  DitherScalars scalars;
  if (ditherScalars(quantizer, params, type, bucketValues, &scalars) != CC_SUCCESS) {
    addErrorContext(CC_INVALID_ARGUMENT, "dither device codec");
    return nullptr;
  }
  Params p{};
  p.nat = scalars.nat ? 1u : 0u;
  p.l2 = scalars.l2 ? 1u : 0u;
  p.natNorm = scalars.natNorm ? 1u : 0u;
  p.clip = scalars.clip;
  p.levels = scalars.levels;
  p.levelBits = scalars.levelBits;
  p.natLowBits = scalars.natLowBits;
  p.natLowLevel = scalars.natLowLevel;
  p.natLowScale = scalars.natLowScale;
  p.stdLevels = scalars.stdLevels;
  return std::make_unique<DeviceDitherCodec>(p, type, bucketValues);
}

}  // namespace cc
