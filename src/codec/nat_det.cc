// nat_det (docs/wire-format.md, "nat_det"): the nat wire format with
// deterministic rounding to the nearest power of two (the midpoint 1.5 * 2^k
// goes up). Biased, delta = 9/8; no random word, so the bytes of a value depend
// on that value alone.
//
// The block kernels are plain C++ loops written for the vectoriser; they are
// compiled twice, for the baseline target and (in a target("avx2") clone) for
// AVX2, and the clone is chosen at run time with nat's rule. Integer code plus
// the hop's IEEE add and division only, so both clones give the same bytes.
// Decoding is nat's (same format), through nat's own dispatch.
#include <cstdint>
#include <cstring>
#include <memory>

#include "codec/elements.h"
#include "codec/nat_kernels.h"
#include "codec/topk.h"
#include "cuda/nat_math.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CC_NAT_DET_AVX2_CLONE 1
#define CC_NAT_DET_INLINE inline __attribute__((always_inline))
#else
#define CC_NAT_DET_AVX2_CLONE 0
#define CC_NAT_DET_INLINE inline
#endif

namespace cc {
namespace {

// e = E + 1 when the mantissa's top bit is set (|x| >= 1.5 * 2^(E-127)) and
// E < 254; E = 254 saturates at 2^127, Inf stays 255 and NaN gives 0 (its
// sign bit marks it, natEncodedSign). Subnormals (E = 0) go to 2^-126 (e = 1)
// from 2^-127 up, else to 0. Written with shifts only ((x << 1) >> 24 is E,
// (x << 9) >> 31 is bit 22): GCC 12 does not vectorise the equivalent
// (x >> 23) & 0xff narrowed to a byte.
CC_NAT_DET_INLINE uint32_t natDetEncodeExponent(uint32_t floatBits) {
  const uint32_t biasedExponent = (floatBits << 1) >> 24;
  const uint32_t roundsUp = ((floatBits << 9) >> 31) & static_cast<uint32_t>(biasedExponent < kNatSaturatingExponent);
  const uint32_t notNan = static_cast<uint32_t>((floatBits << 1) <= 0xff000000u);
  return (biasedExponent + roundsUp) & (0u - notNan);
}

// Float32 bits of element i of a buffer of Type (exact widening).
// Bit `lane` of a block's sign mask, as a table so that the mask is an AND
// and an OR reduction the vectoriser handles with any instruction set.
constexpr uint32_t kLaneBits[kNatBlockValues] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

// 32 float32 bit patterns, bitsOf(lane) for lane 0..31, into one 36-byte
// block: separate loops for the sign mask (all-ones where negative, AND the
// lane's bit, OR together) and the exponent bytes, each a straight vector
// loop. bitsOf reads the source directly: staging the values in a local
// array costs a store-forwarding stall per block.
template <typename BitsOf>
CC_NAT_DET_INLINE void encodeBlockFrom(BitsOf bitsOf, uint8_t* block) {
  uint32_t signMask = 0;
  for (uint32_t lane = 0; lane < kNatBlockValues; ++lane) {
    const uint32_t bits = bitsOf(lane);
    signMask |= (0u - natEncodedSign(bits, natDetEncodeExponent(bits))) & kLaneBits[lane];
  }
  for (uint32_t lane = 0; lane < kNatBlockValues; ++lane) {
    block[4 + lane] = static_cast<uint8_t>(natDetEncodeExponent(bitsOf(lane)));
  }
  storeLe32(block, signMask);
}

// One full block: values first .. first + 31 of `local` into 36 bytes.
template <ElementType Type>
CC_NAT_DET_INLINE void encodeBlock(const void* local, size_t first, uint8_t* block) {
  encodeBlockFrom([local, first](uint32_t lane) { return loadElementBits<Type>(local, first + lane); }, block);
}

template <ElementType Type>
CC_NAT_DET_INLINE void encodeKernel(const void* local, size_t count, void* packed) {
  uint8_t* out = static_cast<uint8_t*>(packed);
  const size_t fullBlocks = count / kNatBlockValues;
  for (size_t block = 0; block < fullBlocks; ++block) {
    encodeBlock<Type>(local, block * kNatBlockValues, out + block * kNatBlockBytes);
  }
  const size_t tail = count - fullBlocks * kNatBlockValues;
  if (tail != 0) {
    // Zero-padded copy: pad lanes encode +0 (sign 0, exponent 0).
    constexpr size_t kBytes = Type == ElementType::F32 ? 4 : 2;
    uint8_t padded[kNatBlockValues * kBytes] = {};
    std::memcpy(padded, static_cast<const uint8_t*>(local) + fullBlocks * kNatBlockValues * kBytes, tail * kBytes);
    encodeBlock<Type>(padded, 0, out + fullBlocks * kNatBlockBytes);
  }
}

// One full block of the hop. Everything read from `in` and `local` is read
// before `out` and `decoded` are written, so both may alias their inputs.
template <ElementType Type, bool Divides>
CC_NAT_DET_INLINE void hopBlock(const uint8_t* in, const void* local, size_t first, float divisor, uint8_t* out,
                                void* decoded) {
  const uint32_t inSignMask = loadLe32(in);
  uint32_t bits[kNatBlockValues];
  for (uint32_t lane = 0; lane < kNatBlockValues; ++lane) {
    const uint32_t sign = static_cast<uint32_t>((inSignMask & kLaneBits[lane]) != 0);  // no variable shift
    float sum = bitsToFloat(natDecodeBits(sign, in[4 + lane])) + bitsToFloat(loadElementBits<Type>(local, first + lane));
    if constexpr (Divides) sum = sum / divisor;
    bits[lane] = floatToBits(sum);
  }
  if (decoded != nullptr) {
    for (uint32_t lane = 0; lane < kNatBlockValues; ++lane) {
      const uint32_t exponent = natDetEncodeExponent(bits[lane]);
      storeElementBits<Type>(decoded, first + lane, natDecodeBits(natEncodedSign(bits[lane], exponent), exponent));
    }
  }
  encodeBlockFrom([&bits](uint32_t lane) { return bits[lane]; }, out);
}

template <ElementType Type>
CC_NAT_DET_INLINE void hopBlock(const uint8_t* in, const void* local, size_t first, bool divides, float divisor,
                                uint8_t* out, void* decoded) {
  if (divides) {
    hopBlock<Type, true>(in, local, first, divisor, out, decoded);
  } else {
    hopBlock<Type, false>(in, local, first, divisor, out, decoded);
  }
}

template <ElementType Type>
CC_NAT_DET_INLINE void hopKernel(const void* packedIn, const void* local, size_t count, uint32_t divisor,
                                 void* packedOut, void* decodedOut) {
  const uint8_t* in = static_cast<const uint8_t*>(packedIn);
  uint8_t* out = static_cast<uint8_t*>(packedOut);
  const bool divides = divisor > 1;
  const float divisorAsFloat = static_cast<float>(divisor);
  const size_t fullBlocks = count / kNatBlockValues;
  for (size_t block = 0; block < fullBlocks; ++block) {
    hopBlock<Type>(in + block * kNatBlockBytes, local, block * kNatBlockValues, divides, divisorAsFloat,
                   out + block * kNatBlockBytes, decodedOut);
  }
  const size_t tail = count - fullBlocks * kNatBlockValues;
  if (tail == 0) return;
  // The tail block runs on copies: pad lanes of the incoming block read as +0
  // whatever they hold, local pad lanes are +0, and only `tail` decoded values
  // go back to the caller.
  constexpr size_t kBytes = Type == ElementType::F32 ? 4 : 2;
  const size_t first = fullBlocks * kNatBlockValues;
  uint8_t inBlock[kNatBlockBytes] = {};
  std::memcpy(inBlock + 4, in + fullBlocks * kNatBlockBytes + 4, tail);
  storeLe32(inBlock, loadLe32(in + fullBlocks * kNatBlockBytes) & ((1u << tail) - 1u));
  uint8_t localBlock[kNatBlockValues * kBytes] = {};
  std::memcpy(localBlock, static_cast<const uint8_t*>(local) + first * kBytes, tail * kBytes);
  uint8_t outBlock[kNatBlockBytes];
  uint8_t decodedBlock[kNatBlockValues * kBytes];
  hopBlock<Type>(inBlock, localBlock, 0, divides, divisorAsFloat, outBlock,
                 decodedOut != nullptr ? decodedBlock : nullptr);
  std::memcpy(out + fullBlocks * kNatBlockBytes, outBlock, kNatBlockBytes);
  if (decodedOut != nullptr) {
    std::memcpy(static_cast<uint8_t*>(decodedOut) + first * kBytes, decodedBlock, tail * kBytes);
  }
}

// The two compilations of each kernel.
template <ElementType Type>
void encodeBaseline(const void* local, size_t count, void* packed) {
  encodeKernel<Type>(local, count, packed);
}
template <ElementType Type>
void hopBaseline(const void* packedIn, const void* local, size_t count, uint32_t divisor, void* packedOut,
                 void* decodedOut) {
  hopKernel<Type>(packedIn, local, count, divisor, packedOut, decodedOut);
}

#if CC_NAT_DET_AVX2_CLONE
template <ElementType Type>
__attribute__((target("avx2"))) void encodeAvx2(const void* local, size_t count, void* packed) {
  encodeKernel<Type>(local, count, packed);
}
template <ElementType Type>
__attribute__((target("avx2"))) void hopAvx2(const void* packedIn, const void* local, size_t count,
                                             uint32_t divisor, void* packedOut, void* decodedOut) {
  hopKernel<Type>(packedIn, local, count, divisor, packedOut, decodedOut);
}
#endif


template <ElementType Type>
class NatDetCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::NatDet; }
  size_t packedBytes(size_t count) const override { return natPackedBytes(count); }

  void encode(const void* local, size_t count, uint64_t, RandomStream, void* packed) const override {
    if (count == 0) return;
#if CC_NAT_DET_AVX2_CLONE
    if (useAvx2Codecs()) return encodeAvx2<Type>(local, count, packed);
#endif
    encodeBaseline<Type>(local, count, packed);
  }

  void decode(const void* packed, size_t count, void* out) const override { natDecode(Type, packed, count, out); }

  void decodeAccumulate(const void* packed, size_t count, float* acc) const override {
    natDecodeAccumulate(packed, count, acc);
  }

  void decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t, RandomStream,
                       uint32_t divisor, void* packedOut, void* decodedOut) const override {
    if (count == 0) return;
#if CC_NAT_DET_AVX2_CLONE
    if (useAvx2Codecs()) return hopAvx2<Type>(packedIn, local, count, divisor, packedOut, decodedOut);
#endif
    hopBaseline<Type>(packedIn, local, count, divisor, packedOut, decodedOut);
  }
};

}  // namespace

std::unique_ptr<Codec> makeNatDetCodec(ElementType type) {
  switch (type) {
    case ElementType::F32:
      return std::make_unique<NatDetCodec<ElementType::F32>>();
    case ElementType::BF16:
      return std::make_unique<NatDetCodec<ElementType::BF16>>();
    case ElementType::F16:
      return std::make_unique<NatDetCodec<ElementType::F16>>();
    default:
      return nullptr;  // nat_det applies to the float types only
  }
}

}  // namespace cc
