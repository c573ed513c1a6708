#include "codec/spec_codecs.h"

#include "base/datatypes.h"
#include "base/error.h"

namespace cc {

cc_result_t blockCodec(SpecCodecs& codecs, cc_datatype_t datatype, cc_red_op_t op, const Codec** out) {
  std::unique_ptr<Codec>& codec = codecs.block[datatype][op];
  if (!codec) codec = makeBlockCodec(codecs.spec, datatype, op);
  if (!codec) return addErrorContext(CC_INTERNAL_ERROR, "no codec for %s %s", datatypeName(datatype), opName(op));
  *out = codec.get();
  return CC_SUCCESS;
}

cc_result_t vectorCodec(SpecCodecs& codecs, const VectorCodec** out) {
  if (!codecs.vector) codecs.vector = makeVectorCodec(codecs.spec);
  if (!codecs.vector) return addErrorContext(CC_INTERNAL_ERROR, "no whole-vector codec for %s", codecs.spec.canonical.c_str());
  *out = codecs.vector.get();
  return CC_SUCCESS;
}

cc_result_t SpecCodecCache::find(const char* text, const CodecSpec& ownSpec, SpecCodecs** out) {
  const std::string key = text == nullptr ? std::string() : std::string(text);
  auto it = specs_.find(key);
  if (it == specs_.end()) {
    auto codecs = std::make_unique<SpecCodecs>();
    if (key.empty()) {
      codecs->spec = ownSpec;
    } else {
      CC_CHECK(parseCodecSpec(key, &codecs->spec));
    }
    if (codecs->spec.selector == Selector::RandK && codecs->spec.isDither() &&
        codecs->spec.scope != Scope::Bucket) {
      return setError(CC_UNSUPPORTED,
                      "codec spec '%s': randk composes with dithering of bucket scope only (the "
                      "norm's scope would be the compacted vector)",
                      codecs->spec.canonical.c_str());
    }
    it = specs_.emplace(key, std::move(codecs)).first;
  }
  *out = it->second.get();
  return CC_SUCCESS;
}

}  // namespace cc
