// Natural and standard dithering (docs/wire-format.md, "dither"): per bucket a
// norm (float32, or one nat exponent byte), per value a sign and a level
// index stored as bit-planes of 32-value groups.
#pragma once

#include <cstddef>
#include <memory>

#include "codec/codec.h"
#include "codec/spec.h"

namespace cc {

// Bits of one level index: ceil(log2(number of levels)), the levels counting 0.
unsigned ditherLevelBits(Quantizer quantizer, const DitherParams& params);

// quantizer is DitherNat or DitherStd; type is F32, BF16 or F16.
// bucketValues: values per norm, a multiple of kBlockValues; 0 means one
// norm for the whole range of each encode call (tensor and model scope,
// whole-vector path only).
std::unique_ptr<Codec> makeDitherCodec(Quantizer quantizer, const DitherParams& params, ElementType type,
                                       size_t bucketValues);

}  // namespace cc
