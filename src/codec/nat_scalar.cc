// The scalar reference of the nat codec: one value at a time, written to be
// obviously equal to docs/wire-format.md. The AVX2 path and the CUDA kernels
// are checked against this file, bit for bit.
#include <cstring>

#include "codec/elements.h"
#include "codec/nat_kernels.h"
#include "codec/random_words.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"

namespace cc {
namespace {

// One packed block: the little-endian sign mask, then the exponent bytes.
// Written byte by byte so the layout does not depend on the host's order.
void storeBlock(uint32_t signMask, const uint8_t exponents[kNatBlockValues], uint8_t* block) {
  for (int byte = 0; byte < 4; ++byte) block[byte] = static_cast<uint8_t>(signMask >> (8 * byte));
  std::memcpy(block + 4, exponents, kNatBlockValues);
}

uint32_t loadSignMask(const uint8_t* block) {
  return static_cast<uint32_t>(block[0]) | (static_cast<uint32_t>(block[1]) << 8) |
         (static_cast<uint32_t>(block[2]) << 16) | (static_cast<uint32_t>(block[3]) << 24);
}

uint32_t decodedBitsAt(const uint8_t* block, uint32_t signMask, size_t lane) {
  return natDecodeBits((signMask >> lane) & 1u, block[4 + lane]);
}

size_t valuesInBlock(size_t count, size_t block) {
  const size_t remaining = count - block * kNatBlockValues;
  return remaining < kNatBlockValues ? remaining : kNatBlockValues;
}

// Pad lanes of a tail block keep sign 0 and exponent 0 (+0), whatever the
// input's pad held: the format says the tail is zero-padded.
template <ElementType Type>
void encodeTyped(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed) {
  ValueRandomness randomness(rs);
  uint8_t* out = static_cast<uint8_t*>(packed);
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    const size_t valid = valuesInBlock(count, block);
    uint32_t signMask = 0;
    uint8_t exponents[kNatBlockValues] = {};
    for (size_t lane = 0; lane < valid; ++lane) {
      const size_t i = block * kNatBlockValues + lane;
      const uint32_t bits = loadElementBits<Type>(local, i);
      exponents[lane] = natEncodeExponent(bits, randomness.wordFor(firstIndex + i));
      signMask |= natEncodedSign(bits, exponents[lane]) << lane;
    }
    storeBlock(signMask, exponents, out + block * kNatBlockBytes);
  }
}

template <ElementType Type>
void decodeTyped(const void* packed, size_t count, void* out) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    const uint8_t* blockIn = in + block * kNatBlockBytes;
    const uint32_t signMask = loadSignMask(blockIn);
    const size_t valid = valuesInBlock(count, block);
    for (size_t lane = 0; lane < valid; ++lane) {
      storeElementBits<Type>(out, block * kNatBlockValues + lane, decodedBitsAt(blockIn, signMask, lane));
    }
  }
}

template <ElementType Type>
void decodeAddEncodeTyped(const void* packedIn, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                          uint32_t divisor, void* packedOut, void* decodedOut) {
  ValueRandomness randomness(rs);
  const uint8_t* in = static_cast<const uint8_t*>(packedIn);
  uint8_t* out = static_cast<uint8_t*>(packedOut);
  const bool divides = divisor > 1;
  const float divisorAsFloat = static_cast<float>(divisor);
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    const uint8_t* blockIn = in + block * kNatBlockBytes;
    const uint32_t inSignMask = loadSignMask(blockIn);
    const size_t valid = valuesInBlock(count, block);
    uint32_t outSignMask = 0;
    uint8_t exponents[kNatBlockValues] = {};
    for (size_t lane = 0; lane < valid; ++lane) {
      const size_t i = block * kNatBlockValues + lane;
      float sum =
          bitsToFloat(decodedBitsAt(blockIn, inSignMask, lane)) + bitsToFloat(loadElementBits<Type>(local, i));
      if (divides) sum = sum / divisorAsFloat;
      const uint32_t sumBits = floatToBits(sum);
      const uint8_t exponent = natEncodeExponent(sumBits, randomness.wordFor(firstIndex + i));
      const uint32_t sign = natEncodedSign(sumBits, exponent);
      outSignMask |= sign << lane;
      exponents[lane] = exponent;
      if (decodedOut != nullptr) storeElementBits<Type>(decodedOut, i, natDecodeBits(sign, exponent));
    }
    storeBlock(outSignMask, exponents, out + block * kNatBlockBytes);
  }
}

}  // namespace

void natEncodeScalar(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                     void* packed) {
  switch (type) {
    case ElementType::F32:
      return encodeTyped<ElementType::F32>(local, count, firstIndex, rs, packed);
    case ElementType::BF16:
      return encodeTyped<ElementType::BF16>(local, count, firstIndex, rs, packed);
    case ElementType::F16:
      return encodeTyped<ElementType::F16>(local, count, firstIndex, rs, packed);
    default:
      return;  // makeCodec never builds a nat codec for other types
  }
}

void natDecodeScalar(ElementType type, const void* packed, size_t count, void* out) {
  switch (type) {
    case ElementType::F32:
      return decodeTyped<ElementType::F32>(packed, count, out);
    case ElementType::BF16:
      return decodeTyped<ElementType::BF16>(packed, count, out);
    case ElementType::F16:
      return decodeTyped<ElementType::F16>(packed, count, out);
    default:
      return;
  }
}

void natDecodeAccumulateScalar(const void* packed, size_t count, float* acc) {
  const uint8_t* in = static_cast<const uint8_t*>(packed);
  const size_t blocks = (count + kNatBlockValues - 1) / kNatBlockValues;
  for (size_t block = 0; block < blocks; ++block) {
    const uint8_t* blockIn = in + block * kNatBlockBytes;
    const uint32_t signMask = loadSignMask(blockIn);
    const size_t valid = valuesInBlock(count, block);
    for (size_t lane = 0; lane < valid; ++lane) {
      acc[block * kNatBlockValues + lane] += bitsToFloat(decodedBitsAt(blockIn, signMask, lane));
    }
  }
}

void natDecodeAddEncodeScalar(ElementType type, const void* packedIn, const void* local, size_t count,
                              uint64_t firstIndex, RandomStream rs, uint32_t divisor, void* packedOut,
                              void* decodedOut) {
  switch (type) {
    case ElementType::F32:
      return decodeAddEncodeTyped<ElementType::F32>(packedIn, local, count, firstIndex, rs, divisor, packedOut,
                                                    decodedOut);
    case ElementType::BF16:
      return decodeAddEncodeTyped<ElementType::BF16>(packedIn, local, count, firstIndex, rs, divisor, packedOut,
                                                     decodedOut);
    case ElementType::F16:
      return decodeAddEncodeTyped<ElementType::F16>(packedIn, local, count, firstIndex, rs, divisor, packedOut,
                                                    decodedOut);
    default:
      return;
  }
}

}  // namespace cc
