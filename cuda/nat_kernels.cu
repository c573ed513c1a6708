// The nat and nat_det codecs on device memory (docs/wire-format.md, "nat",
// "nat_det"), bit-identical to src/codec/nat_scalar.cc, nat_det.cc and the
// error-feedback passes of src/codec/residual.cc.
//
// Work split: one thread takes kGroups Philox groups of 4 consecutive values
// (4 * kGroups values: 8, or 16 for the 16-bit encoding passes), so a
// 32-value nat block is 8 / kGroups consecutive lanes of a warp and one
// Philox call serves the 4 values that share it, as on the host. A thread
// loads its values with 16-byte loads, its kGroups exponent words (4 bytes
// each) and the block's sign mask word, and draws its Philox words while the
// loads are in flight; its sign bits are ORed across the block's lanes with
// __shfl_xor_sync, the block's first lane stores the mask and every lane its
// exponent words, so a warp writes whole blocks, contiguous bytes. Grid-stride
// loops step whole warps, so every lane reaches every shuffle.
//
// Two kernels per pass: the fast one takes the full blocks when the buffers
// are aligned for those accesses and firstIndex is a multiple of 4; a generic
// one (bounds-tested scalar and byte accesses, a Philox call per value when
// the range is off the 4-value groups) takes the tail block, or everything
// when the fast one cannot.
//
// Arithmetic follows the host operation for operation: the hop's
// decoded + local and / divisor in fp32 with __fadd_rn / __fdiv_rn (never
// contracted, no FTZ); a NaN result is sent as NaN whatever its sign
// (natEncodedSign); the error-feedback passes keep NaN signs the host way
// (cuda/device_float.cuh), since their residuals carry them.
#include <cstdio>
#include <memory>
#include <type_traits>

#include "base/error.h"
#include "codec/nat_kernels.h"
#include "cuda/device_codec.h"
#include "cuda/device_float.cuh"
#include "cuda/device_launch.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"

// Philox groups per thread: 2 (8 values; two independent Philox chains, two
// 16-byte loads of float32), 4 for the 16-bit encoding passes (measured on an
// H100: +7..10% there, where the Philox arithmetic, not memory, is the limit;
// the decoders and float32 are fastest with 2).
#ifndef CC_NAT_GROUPS_PER_THREAD
#define CC_NAT_GROUPS_PER_THREAD 2
#endif
#ifndef CC_NAT_HALF_ENCODE_GROUPS_PER_THREAD
#define CC_NAT_HALF_ENCODE_GROUPS_PER_THREAD 4
#endif

namespace cc {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kFullWarp = 0xffffffffu;

struct NatParams {
  const uint8_t* packedIn;  // Hop*, Decode*
  const void* local;        // Encode*, Hop*: count values of the user's type
  float* residual;          // *Residual: the residual; DecodeAccumulate: the accumulator
  uint8_t* packedOut;       // Encode*, Hop*
  void* decoded;            // Decode: the output; Hop*: decodedOut (may be null)
  size_t count;
  uint64_t firstIndex;
  uint64_t stream;
  uint32_t key0, key1;
  float divisor;  // (float)divisor, as the host computes it
  bool divides;   // divisor > 1
};

// ---------------------------------------------------------------------------
// Element types: raw storage <-> float32 bits, nat_math.h's conversions.

template <ElementType Type>
struct Element;

template <>
struct Element<ElementType::F32> {
  static constexpr int kBytes = 4;
  __device__ static uint32_t widen(uint32_t raw) { return raw; }
  __device__ static uint32_t narrow(uint32_t bits) { return bits; }
};

template <>
struct Element<ElementType::BF16> {
  static constexpr int kBytes = 2;
  __device__ static uint32_t widen(uint32_t raw) { return bf16ToFloatBits(static_cast<uint16_t>(raw)); }
  __device__ static uint32_t narrow(uint32_t bits) { return floatBitsToBf16(bits); }
};

template <>
struct Element<ElementType::F16> {
  static constexpr int kBytes = 2;
  __device__ static uint32_t widen(uint32_t raw) { return halfToFloatBits(static_cast<uint16_t>(raw)); }
  __device__ static uint32_t narrow(uint32_t bits) { return floatBitsToHalf(bits); }
};

enum class Rounding { Stochastic, Nearest };
enum class Pass { Encode, EncodeResidual, Hop, HopResidual, Decode, DecodeAccumulate };

template <ElementType Type, Pass P>
__host__ __device__ constexpr int groupsPerThread() {
  return Type != ElementType::F32 && (P == Pass::Encode || P == Pass::Hop) ? CC_NAT_HALF_ENCODE_GROUPS_PER_THREAD
                                                                           : CC_NAT_GROUPS_PER_THREAD;
}

// Raw elements [first, first + N) as one word each, by vector loads (the
// caller checked the alignment: N elements are 8 or a multiple of 16 bytes).
template <int Bytes, int N>
__device__ __forceinline__ void loadRawVector(const void* base, size_t first, uint32_t (&raw)[N]) {
  if constexpr (Bytes == 4) {
    const uint4* source = reinterpret_cast<const uint4*>(static_cast<const uint32_t*>(base) + first);
#pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      const uint4 v = source[q];
      raw[4 * q + 0] = v.x;
      raw[4 * q + 1] = v.y;
      raw[4 * q + 2] = v.z;
      raw[4 * q + 3] = v.w;
    }
  } else if constexpr (N >= 8) {
    const uint4* source = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + first);
#pragma unroll
    for (int q = 0; q < N / 8; ++q) {
      const uint4 v = source[q];
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        raw[8 * q + 2 * w] = words[w] & 0xffffu;
        raw[8 * q + 2 * w + 1] = words[w] >> 16;
      }
    }
  } else {
    const uint2 v = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(base) + first);
    raw[0] = v.x & 0xffffu;
    raw[1] = v.x >> 16;
    raw[2] = v.y & 0xffffu;
    raw[3] = v.y >> 16;
  }
}

template <int Bytes, int N>
__device__ __forceinline__ void storeRawVector(void* base, size_t first, const uint32_t (&raw)[N]) {
  if constexpr (Bytes == 4) {
    uint4* target = reinterpret_cast<uint4*>(static_cast<uint32_t*>(base) + first);
#pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      target[q] = make_uint4(raw[4 * q], raw[4 * q + 1], raw[4 * q + 2], raw[4 * q + 3]);
    }
  } else if constexpr (N >= 8) {
    uint4* target = reinterpret_cast<uint4*>(static_cast<uint16_t*>(base) + first);
#pragma unroll
    for (int q = 0; q < N / 8; ++q) {
      uint32_t words[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) words[w] = (raw[8 * q + 2 * w] & 0xffffu) | (raw[8 * q + 2 * w + 1] << 16);
      target[q] = make_uint4(words[0], words[1], words[2], words[3]);
    }
  } else {
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(base) + first) =
        make_uint2((raw[0] & 0xffffu) | (raw[1] << 16), (raw[2] & 0xffffu) | (raw[3] << 16));
  }
}

template <int Bytes>
__device__ __forceinline__ uint32_t loadRawScalar(const void* base, size_t i) {
  if constexpr (Bytes == 4) {
    return static_cast<const uint32_t*>(base)[i];
  } else {
    return static_cast<const uint16_t*>(base)[i];
  }
}

template <int Bytes>
__device__ __forceinline__ void storeRawScalar(void* base, size_t i, uint32_t raw) {
  if constexpr (Bytes == 4) {
    static_cast<uint32_t*>(base)[i] = raw;
  } else {
    static_cast<uint16_t*>(base)[i] = static_cast<uint16_t>(raw);
  }
}

// Little-endian words of a packed buffer: 4-byte accesses when the buffer is
// 4-byte aligned (every block starts on a multiple of 36 bytes), else bytes.
template <bool Aligned>
__device__ __forceinline__ uint32_t loadPackedWord(const uint8_t* packed, size_t offset) {
  if constexpr (Aligned) {
    return *reinterpret_cast<const uint32_t*>(packed + offset);
  } else {
    return static_cast<uint32_t>(packed[offset]) | (static_cast<uint32_t>(packed[offset + 1]) << 8) |
           (static_cast<uint32_t>(packed[offset + 2]) << 16) | (static_cast<uint32_t>(packed[offset + 3]) << 24);
  }
}

template <bool Aligned>
__device__ __forceinline__ void storePackedWord(uint8_t* packed, size_t offset, uint32_t word) {
  if constexpr (Aligned) {
    *reinterpret_cast<uint32_t*>(packed + offset) = word;
  } else {
#pragma unroll
    for (int b = 0; b < 4; ++b) packed[offset + b] = static_cast<uint8_t>(word >> (8 * b));
  }
}

// The rounding of one float32 (bits x) to a power of two, as `x << 1` with 1
// added to its top byte where the value rounds up: the top byte is then the
// exponent byte (E, or E + 1; 0 for NaN). Equal to natEncodeExponent
// (stochastic: up when (r >> 9) < mantissa) and to nat_det's rule (up when
// bit 22 is set), both only while E < 254 (x << 1 below 0xfe000000).
template <Rounding R>
__device__ __forceinline__ uint32_t roundedExponentTop(uint32_t x, uint32_t random) {
  const uint32_t shifted = x << 1;
  bool up;
  if constexpr (R == Rounding::Stochastic) {
    up = (random >> 9) < (x & 0x7fffffu);
  } else {
    up = (x & 0x00400000u) != 0;
  }
  up = up && shifted < (kNatSaturatingExponent << 24);
  // NaN encodes to exponent 0 (its sign bit marks it, natEncodedSign).
  if (shifted > 0xff000000u) return 0u;
  return shifted + (up ? 0x01000000u : 0u);
}

// The top bytes of four words as one little-endian word (a's first).
__device__ __forceinline__ uint32_t packTopBytes(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  const uint32_t low = __byte_perm(a, b, 0x0073u);
  const uint32_t high = __byte_perm(c, d, 0x0073u);
  return __byte_perm(low, high, 0x5410u);
}

// Float32 bits of lane k of a thread's values: sign bit k of `signs`, byte
// k % 4 of `exponentWord` (natDecodeBits: exponent 0 with the sign is NaN).
template <int K>
__device__ __forceinline__ uint32_t decodedBits(uint32_t signs, uint32_t exponentWord) {
  const uint32_t top = __byte_perm(exponentWord, 0u, ((K % 4) << 12) | 0x0444u);  // the byte in bits 24..31
  const uint32_t bits = (top >> 1) | ((signs << (31 - K)) & 0x80000000u);
  return bits == 0x80000000u ? kNatCanonicalNanBits : bits;
}

__device__ __forceinline__ uint32_t philoxWord(const Philox4x32& words, uint32_t which) {
  const uint32_t low = (which & 1u) ? words.v[1] : words.v[0];
  const uint32_t high = (which & 1u) ? words.v[3] : words.v[2];
  return (which & 2u) ? high : low;
}

__device__ __forceinline__ Philox4x32 philoxGroup(const NatParams& p, uint64_t group) {
  uint32_t counter[4];
  philoxCounterForGroup(group, p.stream, counter);
  const uint32_t key[2] = {p.key0, p.key1};
  return philox4x32_10(counter, key);
}

template <int N, typename F>
__device__ __forceinline__ void unrolled(F&& f) {
  if constexpr (N > 0) {
    unrolled<N - 1>(f);
    f(std::integral_constant<int, N - 1>());
  }
}

// ---------------------------------------------------------------------------
// The kernels behind every pass. For the fast one the caller checked that
// `local` and `decoded` are aligned to 16 bytes, `residual` too, the packed
// buffers to 4 bytes, and (stochastic rounding) that firstIndex % 4 == 0.

template <ElementType Type, Pass P>
struct PassTraits {
  static constexpr int kGroups = groupsPerThread<Type, P>();
  static constexpr int kValues = 4 * kGroups;              // values per thread
  static constexpr unsigned kLanesPerBlock = 8 / kGroups;  // threads per nat block
  static constexpr bool kResidual = P == Pass::EncodeResidual || P == Pass::HopResidual;
  static constexpr bool kHop = P == Pass::Hop || P == Pass::HopResidual;
  static constexpr bool kEncodes = kHop || P == Pass::Encode || P == Pass::EncodeResidual;
  static constexpr bool kReadsPacked = kHop || P == Pass::Decode || P == Pass::DecodeAccumulate;
};

// One thread's values [first, first + valid): everything but the block's
// sign mask, which needs the other lanes (the caller ORs `signs` across
// them).
//   Fast:    valid == kValues, the buffers aligned for vector loads and packed
//            words, firstIndex a multiple of 4 (one Philox call per group).
//   generic: bounds-tested scalar and byte accesses, any firstIndex; serves
//            the tail block, misaligned buffers and odd ranges.
// The Fast path issues its loads first and draws the Philox words while they
// are in flight.
template <ElementType Type, Pass P, Rounding R, bool Divides, bool Fast>
__device__ __forceinline__ void natThread(const NatParams& p, size_t first, size_t blockByte, unsigned shift,
                                          unsigned valid, uint32_t& signs,
                                          uint32_t (&exponentWords)[PassTraits<Type, P>::kGroups]) {
  using T = PassTraits<Type, P>;
  using E = Element<Type>;
  constexpr int kGroups = T::kGroups;
  constexpr int kValues = T::kValues;
  auto inRange = [&](int k) { return Fast || static_cast<unsigned>(k) < valid; };

  // Loads: the packed words, the local values, the residual or accumulator.
  uint32_t inSigns = 0;
  uint32_t inExponents[kGroups];
#pragma unroll
  for (int g = 0; g < kGroups; ++g) inExponents[g] = 0;
  if constexpr (T::kReadsPacked) {
    if (Fast || valid != 0) {
      inSigns = loadPackedWord<Fast>(p.packedIn, blockByte) >> shift;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        inExponents[g] = loadPackedWord<Fast>(p.packedIn, blockByte + 4 + shift + 4 * g);
      }
    }
  }
  uint32_t local[kValues];
  if constexpr (T::kEncodes) {
    if constexpr (Fast) {
      uint32_t raw[kValues];
      loadRawVector<E::kBytes>(p.local, first, raw);
#pragma unroll
      for (int k = 0; k < kValues; ++k) local[k] = E::widen(raw[k]);
    } else {
#pragma unroll
      for (int k = 0; k < kValues; ++k) {
        local[k] = inRange(k) ? E::widen(loadRawScalar<E::kBytes>(p.local, first + k)) : 0u;
      }
    }
  }
  uint32_t state[kValues];
  if constexpr (T::kResidual || P == Pass::DecodeAccumulate) {
    if constexpr (Fast) {
      loadRawVector<4>(p.residual, first, state);
    } else {
#pragma unroll
      for (int k = 0; k < kValues; ++k) state[k] = inRange(k) ? loadRawScalar<4>(p.residual, first + k) : 0u;
    }
  }

  // The random words of this thread's values.
  uint32_t random[kValues];
#pragma unroll
  for (int k = 0; k < kValues; ++k) random[k] = 0;
  if constexpr (T::kEncodes && R == Rounding::Stochastic) {
    const uint64_t globalFirst = p.firstIndex + first;
    if (Fast || (p.firstIndex & 3u) == 0) {
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        const Philox4x32 words = philoxGroup(p, globalFirst / 4 + g);
        random[4 * g + 0] = words.v[0];
        random[4 * g + 1] = words.v[1];
        random[4 * g + 2] = words.v[2];
        random[4 * g + 3] = words.v[3];
      }
    } else {  // a range not on a group boundary (never from the library): a call per value
#pragma unroll
      for (int k = 0; k < kValues; ++k) {
        const uint64_t index = globalFirst + k;
        random[k] = philoxWord(philoxGroup(p, index / 4), static_cast<uint32_t>(index & 3u));
      }
    }
  }

  // Incoming packed values, pad lanes read as +0 whatever they hold.
  uint32_t decoded[kValues];
  if constexpr (T::kReadsPacked) {
    unrolled<kValues>([&](auto kc) {
      constexpr int k = decltype(kc)::value;
      const uint32_t bits = decodedBits<k>(inSigns, inExponents[k / 4]);
      decoded[k] = inRange(k) ? bits : 0u;
    });
  }

  auto storeFloat32 = [&](void* base, const uint32_t(&bits)[kValues]) {
    if constexpr (Fast) {
      storeRawVector<4>(base, first, bits);
    } else {
#pragma unroll
      for (int k = 0; k < kValues; ++k) {
        if (inRange(k)) storeRawScalar<4>(base, first + k, bits[k]);
      }
    }
  };
  auto storeElements = [&](void* base, const uint32_t(&bits)[kValues]) {
    uint32_t raw[kValues];
#pragma unroll
    for (int k = 0; k < kValues; ++k) raw[k] = E::narrow(bits[k]);
    if constexpr (Fast) {
      storeRawVector<E::kBytes>(base, first, raw);
    } else {
#pragma unroll
      for (int k = 0; k < kValues; ++k) {
        if (inRange(k)) storeRawScalar<E::kBytes>(base, first + k, raw[k]);
      }
    }
  };

  if constexpr (P == Pass::Decode) {
    storeElements(p.decoded, decoded);
  } else if constexpr (P == Pass::DecodeAccumulate) {
    // acc[i] += D(packed)[i]: the host's IEEE add (acc first).
#pragma unroll
    for (int k = 0; k < kValues; ++k) {
      state[k] = __float_as_uint(x86Add(__uint_as_float(state[k]), __uint_as_float(decoded[k])));
    }
    storeFloat32(p.residual, state);
  } else {
    // The float32 value each lane encodes (and the sums the residual needs).
    uint32_t value[kValues];
    float sum[kValues];
    uint32_t sign = 0;  // the encoded sign bits, bit k for lane k
#pragma unroll
    for (int k = 0; k < kValues; ++k) {
      if constexpr (P == Pass::Encode) {
        value[k] = local[k];
      } else if constexpr (P == Pass::EncodeResidual) {
        // p = e; p += local (residual.cc), so e is the first operand.
        sum[k] = x86Add(__uint_as_float(state[k]), __uint_as_float(local[k]));
        value[k] = __float_as_uint(sum[k]);
      } else if constexpr (P == Pass::Hop) {
        float s = __fadd_rn(__uint_as_float(decoded[k]), __uint_as_float(local[k]));
        if constexpr (Divides) s = __fdiv_rn(s, p.divisor);
        value[k] = __float_as_uint(s);
      } else {  // HopResidual: sum = D(in); sum += e; sum += local; encode sum / divisor
        sum[k] = x86Add(x86Add(__uint_as_float(decoded[k]), __uint_as_float(state[k])), __uint_as_float(local[k]));
        value[k] = __float_as_uint(Divides ? x86Div(sum[k], p.divisor) : sum[k]);
      }
    }

    uint32_t tops[kValues];  // exponent byte in bits 24..31
#pragma unroll
    for (int k = 0; k < kValues; ++k) {
      tops[k] = roundedExponentTop<R>(value[k], random[k]);
      sign |= natEncodedSign(value[k], tops[k] >> 24) << k;
    }
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      exponentWords[g] = packTopBytes(tops[4 * g], tops[4 * g + 1], tops[4 * g + 2], tops[4 * g + 3]);
    }
    signs = sign;

    // D(C(value)) as float32 bits, for the residual and decodedOut.
    auto rounded = [&](uint32_t (&out)[kValues]) {
#pragma unroll
      for (int k = 0; k < kValues; ++k) out[k] = natDecodeBits(sign >> k, tops[k] >> 24);
    };
    if constexpr (T::kResidual) {
      uint32_t back[kValues];
      rounded(back);
#pragma unroll
      for (int k = 0; k < kValues; ++k) {
        if constexpr (P == Pass::EncodeResidual) {
          state[k] = __float_as_uint(x86Sub(sum[k], __uint_as_float(back[k])));  // e = p - D(C(p))
        } else {  // e = s - D(C(s / divisor)) * divisor, the multiply by 1 included
          state[k] = __float_as_uint(x86Sub(sum[k], x86Mul(__uint_as_float(back[k]), p.divisor)));
        }
      }
      storeFloat32(p.residual, state);
      if constexpr (T::kHop) {
        if (p.decoded != nullptr) storeElements(p.decoded, back);
      }
    } else if constexpr (T::kHop) {
      if (p.decoded != nullptr) {
        uint32_t back[kValues];
        rounded(back);
        storeElements(p.decoded, back);
      }
    }
  }
}

// Fast: blocks [0, count / 32), every one full (see natThread). Otherwise
// (generic) blocks [blockStart, ceil(count / 32)).
template <ElementType Type, Pass P, Rounding R, bool Divides, bool Fast>
__global__ void __launch_bounds__(kThreads) natKernel(const NatParams p, size_t blockStart) {
  using T = PassTraits<Type, P>;
  constexpr unsigned kLanesPerBlock = T::kLanesPerBlock;
  const size_t endBlock = Fast ? p.count / kNatBlockValues : (p.count + kNatBlockValues - 1) / kNatBlockValues;
  const size_t items = (endBlock - blockStart) * kLanesPerBlock;
  const unsigned lane = threadIdx.x & 31u;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t warpBase = static_cast<size_t>(blockIdx.x) * blockDim.x + (threadIdx.x - lane); warpBase < items;
       warpBase += stride) {
    const size_t item = warpBase + lane;
    const bool active = item < items;  // lanes past the end still join the shuffles
    const size_t block = blockStart + item / kLanesPerBlock;
    const unsigned part = static_cast<unsigned>(item % kLanesPerBlock);
    const unsigned shift = part * T::kValues;  // this thread's first lane in the block
    const size_t first = block * kNatBlockValues + shift;
    const size_t blockByte = block * kNatBlockBytes;
    unsigned valid = T::kValues;
    if constexpr (!Fast) {
      valid = !active || first >= p.count ? 0u
                                          : (p.count - first >= T::kValues ? T::kValues
                                                                            : static_cast<unsigned>(p.count - first));
    }

    uint32_t signs = 0;
    uint32_t exponentWords[T::kGroups];
    if (!Fast || active) {  // (the generic path's inactive lanes have valid == 0)
      natThread<Type, P, R, Divides, Fast>(p, first, blockByte, shift, valid, signs, exponentWords);
    }

    if constexpr (T::kEncodes) {
      // The block's sign mask from its lanes, stored by the first of them.
      uint32_t mask = signs << shift;
#pragma unroll
      for (unsigned offset = 1; offset < kLanesPerBlock; offset <<= 1) {
        mask |= __shfl_xor_sync(kFullWarp, mask, offset);
      }
      if (active) {
        if (part == 0) storePackedWord<Fast>(p.packedOut, blockByte, mask);
#pragma unroll
        for (int g = 0; g < T::kGroups; ++g) {
          storePackedWord<Fast>(p.packedOut, blockByte + 4 + shift + 4 * g, exponentWords[g]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Launching

bool alignedTo(const void* pointer, size_t alignment) {
  return reinterpret_cast<uintptr_t>(pointer) % alignment == 0;
}

const char* typeName(ElementType type) {
  switch (type) {
    case ElementType::F32:
      return "f32";
    case ElementType::BF16:
      return "bf16";
    case ElementType::F16:
      return "f16";
    default:
      return "?";
  }
}

const char* passName(Pass pass) {
  switch (pass) {
    case Pass::Encode:
      return "encode";
    case Pass::EncodeResidual:
      return "encodeWithResidual";
    case Pass::Hop:
      return "decodeAddEncode";
    case Pass::HopResidual:
      return "decodeAddEncodeWithResidual";
    case Pass::Decode:
      return "decode";
    case Pass::DecodeAccumulate:
      return "decodeAccumulate";
  }
  return "?";
}

template <ElementType Type, Pass P, Rounding R, bool Divides>
void launchKernels(const NatParams& p, cudaStream_t stream) {
  using T = PassTraits<Type, P>;
  constexpr size_t kThreadBytes = T::kValues * Element<Type>::kBytes;
  const size_t valueAlignment = kThreadBytes < 16 ? kThreadBytes : 16;
  const bool fast = alignedTo(p.local, valueAlignment) && alignedTo(p.decoded, valueAlignment) &&
                    alignedTo(p.residual, 16) && alignedTo(p.packedIn, 4) && alignedTo(p.packedOut, 4) &&
                    (R == Rounding::Nearest || (p.firstIndex & 3u) == 0);
  const size_t fullBlocks = p.count / kNatBlockValues;
  const size_t blocks = (p.count + kNatBlockValues - 1) / kNatBlockValues;
  if (!fast) {
    natKernel<Type, P, R, Divides, false>
        <<<gridFor(blocks * T::kLanesPerBlock, kThreads), kThreads, 0, stream>>>(p, 0);
    return;
  }
  if (fullBlocks != 0) {
    natKernel<Type, P, R, Divides, true>
        <<<gridFor(fullBlocks * T::kLanesPerBlock, kThreads), kThreads, 0, stream>>>(p, 0);
  }
  if (blocks != fullBlocks) natKernel<Type, P, R, Divides, false><<<1, 32, 0, stream>>>(p, fullBlocks);
}

template <ElementType Type, Pass P, Rounding R>
cc_result_t launchTyped(const NatParams& p, void* stream) {
  constexpr bool kDivisible = P == Pass::Hop || P == Pass::HopResidual;
  if (kDivisible && p.divides) {
    launchKernels<Type, P, R, kDivisible>(p, asCudaStream(stream));
  } else {
    launchKernels<Type, P, R, false>(p, asCudaStream(stream));
  }
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return CC_SUCCESS;
  return setError(CC_CUDA_ERROR, "%s %s kernel (%s, %zu values): launch failed: %s",
                  R == Rounding::Stochastic ? "nat" : "nat_det", passName(P), typeName(Type), p.count,
                  cudaGetErrorString(status));
}

template <Pass P, Rounding R>
cc_result_t launch(ElementType type, const NatParams& p, void* stream) {
  if (p.count == 0) return CC_SUCCESS;
  switch (type) {
    case ElementType::F32:
      return launchTyped<ElementType::F32, P, R>(p, stream);
    case ElementType::BF16:
      return launchTyped<ElementType::BF16, P, R>(p, stream);
    case ElementType::F16:
      return launchTyped<ElementType::F16, P, R>(p, stream);
    default:
      return setError(CC_INVALID_ARGUMENT, "nat device codec: element type %d is not a float type",
                      static_cast<int>(type));
  }
}

template <Rounding R>
class DeviceNatCodec final : public DeviceCodec {
 public:
  explicit DeviceNatCodec(ElementType type) : type_(type) {}

  CodecId id() const override { return R == Rounding::Stochastic ? CodecId::Nat : CodecId::NatDet; }
  size_t alignmentValues() const override { return kBlockValues; }
  size_t packedBytes(size_t count) const override { return natPackedBytes(count); }

  cc_result_t encode(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed,
                     void* stream) const override {
    NatParams p = params(count, firstIndex, rs, 1);
    p.local = local;
    p.packedOut = static_cast<uint8_t*>(packed);
    return launch<Pass::Encode, R>(type_, p, stream);
  }

  cc_result_t decode(const void* packed, size_t count, void* out, void* stream) const override {
    NatParams p = params(count, 0, RandomStream{0, 0}, 1);
    p.packedIn = static_cast<const uint8_t*>(packed);
    p.decoded = out;
    return launch<Pass::Decode, R>(type_, p, stream);
  }

  cc_result_t decodeAccumulate(const void* packed, size_t count, float* acc, void* stream) const override {
    NatParams p = params(count, 0, RandomStream{0, 0}, 1);
    p.packedIn = static_cast<const uint8_t*>(packed);
    p.residual = acc;
    // Independent of the user's type: one instantiation serves all three.
    return launch<Pass::DecodeAccumulate, R>(ElementType::F32, p, stream);
  }

  cc_result_t decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t firstIndex,
                              RandomStream rs, uint32_t divisor, void* packedOut, void* decodedOut,
                              void* stream) const override {
    NatParams p = params(count, firstIndex, rs, divisor);
    p.packedIn = static_cast<const uint8_t*>(packedIn);
    p.local = local;
    p.packedOut = static_cast<uint8_t*>(packedOut);
    p.decoded = decodedOut;
    return launch<Pass::Hop, R>(type_, p, stream);
  }

  cc_result_t encodeWithResidual(const void* local, float* residual, size_t count, uint64_t firstIndex,
                                 RandomStream rs, void* packed, void* stream) const override {
    NatParams p = params(count, firstIndex, rs, 1);
    p.local = local;
    p.residual = residual;
    p.packedOut = static_cast<uint8_t*>(packed);
    return launch<Pass::EncodeResidual, R>(type_, p, stream);
  }

  cc_result_t decodeAddEncodeWithResidual(const void* packedIn, const void* local, float* residual, size_t count,
                                          uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                                          void* decodedOut, void* stream) const override {
    NatParams p = params(count, firstIndex, rs, divisor);
    p.packedIn = static_cast<const uint8_t*>(packedIn);
    p.local = local;
    p.residual = residual;
    p.packedOut = static_cast<uint8_t*>(packedOut);
    p.decoded = decodedOut;
    return launch<Pass::HopResidual, R>(type_, p, stream);
  }

 private:
  static NatParams params(size_t count, uint64_t firstIndex, RandomStream rs, uint32_t divisor) {
    NatParams p{};
    p.count = count;
    p.firstIndex = firstIndex;
    p.stream = rs.stream;
    uint32_t key[2];
    philoxKeyFromSeed(rs.seed, key);
    p.key0 = key[0];
    p.key1 = key[1];
    p.divisor = static_cast<float>(divisor);  // the host's divisorAsFloat
    p.divides = divisor > 1;
    return p;
  }

  ElementType type_;
};

bool isNatType(ElementType type) {
  return type == ElementType::F32 || type == ElementType::BF16 || type == ElementType::F16;
}

}  // namespace

std::unique_ptr<DeviceCodec> makeDeviceNatCodec(ElementType type) {
  if (!isNatType(type)) {
    setError(CC_INVALID_ARGUMENT, "nat device codec: element type %d is not float32, bfloat16 or float16",
             static_cast<int>(type));
    return nullptr;
  }
  return std::make_unique<DeviceNatCodec<Rounding::Stochastic>>(type);
}

std::unique_ptr<DeviceCodec> makeDeviceNatDetCodec(ElementType type) {
  if (!isNatType(type)) {
    setError(CC_INVALID_ARGUMENT, "nat_det device codec: element type %d is not float32, bfloat16 or float16",
             static_cast<int>(type));
    return nullptr;
  }
  return std::make_unique<DeviceNatCodec<Rounding::Nearest>>(type);
}

}  // namespace cc
