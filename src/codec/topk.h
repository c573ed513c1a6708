// Top-k sparsification (biased, indices travel) and deterministic
// nearest-power-of-two rounding (nat_det, biased, the nat format).
#pragma once

#include <memory>

#include "codec/codec.h"
#include "codec/spec.h"

namespace cc {

// spec.selector == Selector::TopK; spec.quantizer is Exact (float32 values)
// or Nat (values as nat codes, scaled by 1/(omega+1) = 8/9 on decode).
std::unique_ptr<VectorCodec> makeTopKVectorCodec(const CodecSpec& spec);

// Values kept by top-k in one scope of `scopeValues` values.
size_t topKKeptValues(const CodecSpec& spec, size_t scopeValues);

// nat_det on F32, BF16 or F16: the nat wire format, deterministic rounding.
std::unique_ptr<Codec> makeNatDetCodec(ElementType type);

}  // namespace cc
