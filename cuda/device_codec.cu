// makeDeviceBlockCodec: the device twin of makeBlockCodec (src/codec/codec.cc),
// the same choice of codec for every (spec, datatype, op), so that a device
// rank and a host rank of one collective use the same packed format.
#include <memory>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/spec.h"
#include "cuda/device_codec.h"

namespace cc {

std::unique_ptr<DeviceCodec> makeDeviceBlockCodec(const CodecSpec& spec, cc_datatype_t dtype, cc_red_op_t op) {
  if (static_cast<int>(dtype) < 0 || static_cast<int>(dtype) >= CC_NUM_DATATYPES || static_cast<int>(op) < 0 ||
      static_cast<int>(op) >= CC_NUM_OPS) {
    setError(CC_INVALID_ARGUMENT, "no device codec for datatype %d and op %d", static_cast<int>(dtype),
             static_cast<int>(op));
    return nullptr;
  }
  const ElementType type = elementTypeOf(dtype);
  if (!specCompresses(spec, dtype, op)) return makeDeviceExactCodec(type, op);
  switch (spec.quantizer) {
    case Quantizer::Exact:
      return makeDeviceExactCodec(type, op);
    case Quantizer::Nat:
      return makeDeviceNatCodec(type);
    case Quantizer::NatDet:
      return makeDeviceNatDetCodec(type);
    case Quantizer::DitherNat:
    case Quantizer::DitherStd:
      return makeDeviceDitherCodec(spec.quantizer, spec.dither, type,
                                   spec.scope == Scope::Bucket ? spec.bucketValues : 0);
  }
  setError(CC_UNSUPPORTED, "no device kernels for codec spec '%s'", spec.canonical.c_str());
  return nullptr;
}

}  // namespace cc
