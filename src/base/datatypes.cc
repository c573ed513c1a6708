#include "base/datatypes.h"

namespace cc {

const char* datatypeName(cc_datatype_t datatype) {
  static const char* names[CC_NUM_DATATYPES] = {"int8",    "uint8",   "int32",   "uint32",  "int64",
                                                "uint64",  "float16", "float32", "float64", "bfloat16"};
  int index = static_cast<int>(datatype);
  return index >= 0 && index < CC_NUM_DATATYPES ? names[index] : "unknown";
}

const char* opName(cc_red_op_t op) {
  static const char* names[CC_NUM_OPS] = {"sum", "prod", "max", "min", "avg"};
  int index = static_cast<int>(op);
  return index >= 0 && index < CC_NUM_OPS ? names[index] : "unknown";
}

}  // namespace cc
