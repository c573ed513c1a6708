// The shared host/device nat math on a GPU: a reference encode kernel built
// from cuda/philox.h and cuda/nat_math.h must emit the same bytes as the host
// codec for the same seed, stream and indices. Skips (exit 77) without a GPU.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "codec/codec.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"
#include "cuda_test_device.h"

namespace {


// One thread per nat block: sign mask then 32 exponent bytes.
__global__ void encodeBlocks(const float* values, size_t count, uint64_t seed, uint64_t stream,
                             unsigned char* packed) {
  const size_t block = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t first = block * cc::kNatBlockValues;
  if (first >= count) return;
  uint32_t signs = 0;
  unsigned char* out = packed + block * cc::kNatBlockBytes;
  for (uint32_t lane = 0; lane < cc::kNatBlockValues; ++lane) {
    const size_t index = first + lane;
    uint8_t exponent = 0;
    if (index < count) {
      const uint32_t bits = cc::floatToBits(values[index]);
      exponent = cc::natEncodeExponent(bits, cc::philoxRandomWordForValue(seed, stream, index));
      signs |= cc::natEncodedSign(bits, exponent) << lane;
    }
    out[4 + lane] = exponent;
  }
  for (int byte = 0; byte < 4; ++byte) out[byte] = static_cast<unsigned char>(signs >> (8 * byte));
}

bool check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    return false;
  }
  return true;
}

}  // namespace

int main() {
  if (!cctest::haveCudaDevice()) return cctest::kSkipExitCode;
  const size_t count = 100003;
  const uint64_t seed = 0x1234567890abcdefull, stream = cc::makeStreamId(7, 3, 2);
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>((i * 2654435761u) % 10007) * 0.013f - 60.0f;
  values[5] = 0.0f;
  values[6] = -0.0f;
  values[7] = 1e-40f;  // subnormal
  values[8] = 3.0e38f;  // saturates

  auto codec = cc::makeCodec(cc::CodecId::Nat, CC_FLOAT32, CC_SUM);
  std::vector<unsigned char> host(codec->packedBytes(count)), device(host.size());
  codec->encode(values.data(), count, 0, cc::RandomStream{seed, stream}, host.data());

  float* deviceValues = nullptr;
  unsigned char* devicePacked = nullptr;
  if (!check(cudaMalloc(&deviceValues, count * sizeof(float)), "cudaMalloc") ||
      !check(cudaMalloc(&devicePacked, device.size()), "cudaMalloc") ||
      !check(cudaMemcpy(deviceValues, values.data(), count * sizeof(float), cudaMemcpyHostToDevice), "copy in")) {
    return 1;
  }
  const size_t blocks = (count + 31) / 32;
  encodeBlocks<<<static_cast<unsigned>((blocks + 127) / 128), 128>>>(deviceValues, count, seed, stream, devicePacked);
  if (!check(cudaGetLastError(), "launch") ||
      !check(cudaMemcpy(device.data(), devicePacked, device.size(), cudaMemcpyDeviceToHost), "copy out")) {
    return 1;
  }
  cudaFree(deviceValues);
  cudaFree(devicePacked);
  if (std::memcmp(host.data(), device.data(), host.size()) != 0) {
    for (size_t i = 0; i < host.size(); ++i) {
      if (host[i] != device[i]) {
        std::fprintf(stderr, "FAILED: byte %zu differs: host 0x%02x device 0x%02x\n", i, host[i], device[i]);
        break;
      }
    }
    return 1;
  }
  std::printf("device nat encode of %zu values is bit-identical to the host codec\n", count);
  return 0;
}
