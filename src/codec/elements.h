// Element access in the user's type for the codecs' scalar paths: values are
// widened to float32 exactly and narrowed from float32 with round to nearest
// even (the integer conversions of cuda/nat_math.h, so FTZ/DAZ or fast-math
// cannot change results).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "codec/codec.h"
#include "cuda/nat_math.h"

namespace cc {

// Float32 bits of values[i] for a type known at compile time (F32, BF16 or
// F16). Always inlined so that the AVX2 clones of the codecs' kernels get
// them compiled for their target.
template <ElementType Type>
inline __attribute__((always_inline)) uint32_t loadElementBits(const void* values, size_t i) {
  const char* bytes = static_cast<const char*>(values);
  if constexpr (Type == ElementType::F32) {
    uint32_t bits;
    std::memcpy(&bits, bytes + 4 * i, 4);
    return bits;
  } else {
    uint16_t raw;
    std::memcpy(&raw, bytes + 2 * i, 2);
    if constexpr (Type == ElementType::BF16) {
      return bf16ToFloatBits(raw);
    } else {
      return halfToFloatBits(raw);
    }
  }
}

template <ElementType Type>
inline __attribute__((always_inline)) void storeElementBits(void* values, size_t i, uint32_t bits) {
  char* bytes = static_cast<char*>(values);
  if constexpr (Type == ElementType::F32) {
    std::memcpy(bytes + 4 * i, &bits, 4);
  } else {
    const uint16_t raw = Type == ElementType::BF16 ? floatBitsToBf16(bits) : floatBitsToHalf(bits);
    std::memcpy(bytes + 2 * i, &raw, 2);
  }
}

// The same for a type known at run time.
inline uint32_t loadFloatBits(ElementType type, const void* values, size_t i) {
  if (type == ElementType::F32) return loadElementBits<ElementType::F32>(values, i);
  if (type == ElementType::BF16) return loadElementBits<ElementType::BF16>(values, i);
  return loadElementBits<ElementType::F16>(values, i);
}

inline float loadFloat(ElementType type, const void* values, size_t i) {
  return bitsToFloat(loadFloatBits(type, values, i));
}

inline void storeFloatBits(ElementType type, void* values, size_t i, uint32_t bits) {
  if (type == ElementType::F32) return storeElementBits<ElementType::F32>(values, i, bits);
  if (type == ElementType::BF16) return storeElementBits<ElementType::BF16>(values, i, bits);
  storeElementBits<ElementType::F16>(values, i, bits);
}

inline void storeFloat(ElementType type, void* values, size_t i, float value) {
  storeFloatBits(type, values, i, floatToBits(value));
}

// Little-endian 32-bit words in packed buffers, independent of host order.
inline uint32_t loadLe32(const void* bytes) {
  const uint8_t* b = static_cast<const uint8_t*>(bytes);
  return static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) |
         (static_cast<uint32_t>(b[2]) << 16) | (static_cast<uint32_t>(b[3]) << 24);
}

inline void storeLe32(void* bytes, uint32_t value) {
  uint8_t* b = static_cast<uint8_t*>(bytes);
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace cc
