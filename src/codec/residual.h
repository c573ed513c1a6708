// The storage behind a cc_residual_t handle: one tensor's error-feedback
// residual e, float32 whatever the tensor's type (the encodes that use it
// live in residual.cc). Codec-level, so that the call path and the GPU path
// share it without either reaching into the other.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "codec/spec.h"
#include "compressedcoll.h"

struct cc_residual {
  size_t count = 0;
  cc_datatype_t datatype = CC_FLOAT32;
  std::vector<float> values;
  // Device collectives keep the residual on the GPU (cuda/device_runtime.cc):
  // while deviceCurrent, deviceValues holds the current values, not `values`.
  std::shared_ptr<float> deviceValues;
  bool deviceCurrent = false;
};

namespace cc {

// Error feedback needs a compressor that loses less than it is given: with
// E||C(p) - p||^2 = omega ||p||^2, a residual stays bounded only for omega < 1
// (an unbiased C is then a contraction). Past it the residuals grow every step
// until they overflow: randk:ratio=0.1+nat (omega 10.2; a kept value leaves
// p - p/ratio) and qsgd:s=4, dither_nat:s=3, dither_std:s=3 or terngrad on
// their 512-value buckets (omega 5.7 to 22.6 by REFERENCE's bounds) reached
// relative errors of 60 to 10^7, and non-finite values, within tens of
// calls. Biased selections (topk, nat_det) are contractions by construction.
// The bound is REFERENCE's worst case over inputs, so a spec is refused from
// omega = 1 on even where typical inputs would stay bounded (qsgd:s=16: 1.41).
// CC_INVALID_ARGUMENT, naming omega, for a residual on `count` values of
// `spec` that would diverge.
cc_result_t checkFeedbackConverges(const CodecSpec& spec, size_t count);

}  // namespace cc
