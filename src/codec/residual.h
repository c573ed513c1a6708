// The storage behind a cc_residual_t handle: one tensor's error-feedback
// residual e, float32 whatever the tensor's type (the encodes that use it
// live in residual.cc). Codec-level, so that the call path and the GPU path
// share it without either reaching into the other.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

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
