// Whole-vector codecs for algorithms that encode each rank's vector once and
// move it unchanged: top-k (topk.cc), or a block quantizer applied once per
// scope. A scope is a bucket (the block codec's own buckets over the whole
// call), a tensor (one encode call per tensor, one norm each) or the model
// (one encode call, one norm for everything).
#include <vector>

#include "codec/codec.h"
#include "codec/spec.h"
#include "codec/topk.h"

namespace cc {
namespace {

class BlockVectorCodec final : public VectorCodec {
 public:
  BlockVectorCodec(std::unique_ptr<Codec> codec, Scope scope) : codec_(std::move(codec)), scope_(scope) {}

  CodecId id() const override { return codec_->id(); }

  size_t encodedBytes(const TensorLayout& layout) const override {
    if (scope_ != Scope::Tensor) return codec_->packedBytes(layout.count);
    size_t bytes = 0;
    for (size_t t = 0; t < layout.tensors; ++t) bytes += codec_->packedBytes(tensorValues(layout, t));
    return bytes;
  }

  void encode(const float* values, const TensorLayout& layout, RandomStream rs, void* out,
              float* residual) const override {
    unsigned char* bytes = static_cast<unsigned char*>(out);
    forEachPart(layout, [&](size_t first, size_t count) {
      codec_->encode(values + first, count, first, rs, bytes);
      if (residual != nullptr) {
        codec_->decode(bytes, count, residual + first);
        for (size_t i = first; i < first + count; ++i) residual[i] = values[i] - residual[i];
      }
      bytes += codec_->packedBytes(count);
    });
  }

  cc_result_t decodeAccumulate(const void* in, const TensorLayout& layout, float* acc) const override {
    const unsigned char* bytes = static_cast<const unsigned char*>(in);
    forEachPart(layout, [&](size_t first, size_t count) {
      codec_->decodeAccumulate(bytes, count, acc + first);
      bytes += codec_->packedBytes(count);
    });
    return CC_SUCCESS;
  }

 private:
  static size_t tensorValues(const TensorLayout& layout, size_t t) { return layout.offsets[t + 1] - layout.offsets[t]; }

  // One encode call per tensor for Scope::Tensor, one for the whole call otherwise.
  template <typename Body>
  void forEachPart(const TensorLayout& layout, Body body) const {
    if (scope_ != Scope::Tensor || layout.tensors == 0) {
      if (layout.count != 0) body(0, layout.count);
      return;
    }
    for (size_t t = 0; t < layout.tensors; ++t) {
      if (tensorValues(layout, t) != 0) body(layout.offsets[t], tensorValues(layout, t));
    }
  }

  std::unique_ptr<Codec> codec_;
  Scope scope_;
};

}  // namespace

std::unique_ptr<VectorCodec> makeVectorCodec(const CodecSpec& spec) {
  if (spec.selector == Selector::TopK) return makeTopKVectorCodec(spec);
  std::unique_ptr<Codec> codec = makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
  if (!codec) return nullptr;
  return std::make_unique<BlockVectorCodec>(std::move(codec), spec.scope);
}

}  // namespace cc
