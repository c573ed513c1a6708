// What every .cu file of the device codecs needs around a launch: the stream
// type behind the plain-C++ `void* stream` of cuda/device_codec.h, and a
// launch check that turns a CUDA error into CC_CUDA_ERROR naming the kernel.
#pragma once

#include <cuda_runtime.h>

#include "base/error.h"

namespace cc {

inline cudaStream_t asCudaStream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline cc_result_t checkLaunch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    return setError(CC_CUDA_ERROR, "%s: launch failed: %s", kernel, cudaGetErrorString(status));
  }
  return CC_SUCCESS;
}

// Grid size for `items` work items of `perBlock` each, capped where a grid-
// stride loop takes over (enough blocks to fill any current GPU many times).
inline unsigned gridFor(size_t items, unsigned perBlock) {
  const size_t blocks = (items + perBlock - 1) / perBlock;
  const size_t cap = 65535u * 8u;
  return static_cast<unsigned>(blocks == 0 ? 1 : (blocks < cap ? blocks : cap));
}

}  // namespace cc
