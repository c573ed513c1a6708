// Natural and standard dithering (docs/wire-format.md, "dither"): per bucket a
// norm (float32, or one nat exponent byte), per value a sign and a level
// index stored as bit-planes of 32-value groups.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "codec/codec.h"
#include "codec/spec.h"

namespace cc {

// Bit patterns and streams the host codec and the device kernels must share
// to produce the same bytes.
namespace dither {
constexpr uint64_t kNormStreamBit = 0x8000000000000000ull;  // the norm's stream: rs.stream ^ this
constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfBits = 0x7f800000u;
constexpr uint32_t kCanonicalNanBits = 0x7fc00000u;
constexpr uint32_t kMinNormalBits = 0x00800000u;  // 2^-126: smaller norms make a zero bucket
constexpr float kTwoPow24 = 16777216.0f;
}  // namespace dither

// Bits of one level index: ceil(log2(number of levels)), the levels counting 0.
unsigned ditherLevelBits(Quantizer quantizer, const DitherParams& params);

// A dithering codec's constants, derived from its parameters once: the host
// codec and the device codec (cuda/dither_kernels.cu) both start from these.
struct DitherScalars {
  bool nat = true;       // DitherNat, else DitherStd
  bool l2 = true;        // NormKind::L2, else Max
  bool natNorm = false;  // one nat byte per norm instead of a float32
  float clip = 0.0f;     // > 0: TernGrad clipping
  uint32_t levels = 1;   // s or u
  unsigned levelBits = 1;
  uint32_t natLowBits = 0;   // DitherNat: float bits of 2^(1-s)
  float natLowLevel = 0.0f;  // DitherNat: 2^(1-s)
  float natLowScale = 0.0f;  // DitherNat: 2^(s-1)
  float stdLevels = 0.0f;    // DitherStd: (float)u
};

// Checks a dithering codec's parameters (CC_INVALID_ARGUMENT naming the one
// out of range) and derives its constants.
cc_result_t ditherScalars(Quantizer quantizer, const DitherParams& params, ElementType type, size_t bucketValues,
                          DitherScalars* out);

// quantizer is DitherNat or DitherStd; type is F32, BF16 or F16.
// bucketValues: values per norm, a multiple of kBlockValues; 0 means one
// norm for the whole range of each encode call (tensor and model scope,
// whole-vector path only).
std::unique_ptr<Codec> makeDitherCodec(Quantizer quantizer, const DitherParams& params, ElementType type,
                                       size_t bucketValues);

}  // namespace cc
