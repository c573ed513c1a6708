// The C API's datatypes and reduction ops as every layer names them in
// messages, and which datatypes are floating point (compressible, and what
// error feedback takes).
#pragma once

#include "compressedcoll.h"

namespace cc {

const char* datatypeName(cc_datatype_t datatype);
const char* opName(cc_red_op_t op);
// float32, float16 or bfloat16.
inline bool isFloatType(cc_datatype_t datatype) {
  return datatype == CC_FLOAT32 || datatype == CC_FLOAT16 || datatype == CC_BFLOAT16;
}

}  // namespace cc
