// GPU tests skip where no CUDA device is present: they print why and exit
// with ctest's SKIP_RETURN_CODE.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>

namespace cctest {

constexpr int kSkipExitCode = 77;

// False (after printing "SKIP: ...") where the process sees no CUDA device.
inline bool haveCudaDevice() {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return false;
  }
  return true;
}

}  // namespace cctest
