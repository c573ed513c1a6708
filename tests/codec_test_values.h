// Values in a codec's element type, shared by the codec unit tests.
#pragma once

#include <cstdint>
#include <vector>

#include "codec/elements.h"

namespace cc {

using Bytes = std::vector<uint8_t>;

inline uint32_t bitsOf(float value) { return floatToBits(value); }
inline float floatOf(uint32_t bits) { return bitsToFloat(bits); }

// Float32 values in the codec's element type (rounded to nearest even; the
// tests pick values representable in it where they need exactness).
inline Bytes valuesAs(ElementType type, const std::vector<float>& values) {
  Bytes out(values.size() * elementBytes(type));
  for (size_t i = 0; i < values.size(); ++i) storeFloatBits(type, out.data(), i, bitsOf(values[i]));
  return out;
}

// The float32 bits of values[i], widened exactly.
inline uint32_t floatBitsAt(ElementType type, const Bytes& values, size_t i) {
  return loadFloatBits(type, values.data(), i);
}

// The datatype whose element type is `type`, and its name for messages.
inline cc_datatype_t datatypeOf(ElementType type) {
  static const cc_datatype_t datatypes[] = {CC_FLOAT32, CC_BFLOAT16, CC_FLOAT16, CC_FLOAT64, CC_INT8,
                                            CC_UINT8,   CC_INT32,    CC_UINT32,  CC_INT64,   CC_UINT64};
  return datatypes[static_cast<int>(type)];
}
inline const char* typeName(ElementType type) {
  static const char* names[] = {"F32", "BF16", "F16", "F64", "I8", "U8", "I32", "U32", "I64", "U64"};
  return names[static_cast<int>(type)];
}

}  // namespace cc
