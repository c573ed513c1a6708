// cc_gpu_kernel_bench: the device codec kernels (cuda/device_codec.h) on one
// GPU against its device-to-device copy bandwidth.
//
// Each kernel runs on buffers of --count values (default 64M: 256 MB of
// float32, far beyond any L2), rotating among --sets buffer sets, and is
// timed with CUDA events: the median of --reps runs after warm-up. GB/s count
// the bytes a kernel must move per value (nat packed = 1.125 B/value):
//   copy (cudaMemcpyAsync D2D)   4 read + 4 written
//   nat encode f32               4 + 1.125
//   nat decode f32               1.125 + 4
//   nat decodeAccumulate         1.125 + 4 + 4 (acc read and written)
//   nat hop f32                  1.125 + 4 + 1.125
//   nat hop f32 + decodedOut     1.125 + 4 + 1.125 + 4
//   nat hop f32 + residual       1.125 + 4 + 4 + 4 + 1.125
//   nat encode f32 + residual    4 + 4 + 4 + 1.125
//   nat encode / hop bf16        2 + 1.125 / 1.125 + 2 + 1.125
//   nat_det hop f32, exact hop f32 (sum: 4 + 4 + 4)
// Options: --count N, --reps R, --sets S, --json FILE, --check (exit 1 when
// the f32 nat hop or encode is below 80% of copy bandwidth). Exits 77 without
// a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/spec.h"
#include "cuda/device_codec.h"

namespace {

constexpr int kSkip = 77;
constexpr double kCheckFraction = 0.80;

struct Options {
  size_t count = size_t{64} << 20;
  int reps = 30;
  int sets = 2;
  std::string json;
  bool check = false;
};

void usage() {
  std::fprintf(stderr,
               "usage: cc_gpu_kernel_bench [--count N] [--reps R] [--sets S] [--json FILE] [--check]\n"
               "  --count N   values per buffer (default 67108864)\n"
               "  --reps R    timed runs per kernel, median reported (default 30, at least 20 recommended)\n"
               "  --sets S    buffer sets rotated between runs (default 2)\n"
               "  --json FILE also write the results as JSON\n"
               "  --check     exit 1 unless the f32 nat hop and encode reach 80%% of copy bandwidth\n");
}

bool parseOptions(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", name);
        return nullptr;
      }
      return argv[++i];
    };
    if (arg == "--count") {
      const char* v = value("--count");
      if (v == nullptr) return false;
      options->count = std::strtoull(v, nullptr, 0);
    } else if (arg == "--reps") {
      const char* v = value("--reps");
      if (v == nullptr) return false;
      options->reps = std::atoi(v);
    } else if (arg == "--sets") {
      const char* v = value("--sets");
      if (v == nullptr) return false;
      options->sets = std::atoi(v);
    } else if (arg == "--json") {
      const char* v = value("--json");
      if (v == nullptr) return false;
      options->json = v;
    } else if (arg == "--check") {
      options->check = true;
    } else if (arg == "--help" || arg == "-h") {
      usage();
      std::exit(0);
    } else {
      std::fprintf(stderr, "unknown option '%s'\n", arg.c_str());
      usage();
      return false;
    }
  }
  if (options->count == 0 || options->reps < 1 || options->sets < 1) {
    std::fprintf(stderr, "--count, --reps and --sets must be positive\n");
    return false;
  }
  return true;
}

#define CUDA_CHECK(expr)                                                                            \
  do {                                                                                              \
    const cudaError_t status_ = (expr);                                                             \
    if (status_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(status_)); \
      std::exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

void ccCheck(cc_result_t result, const char* what) {
  if (result != CC_SUCCESS) {
    std::fprintf(stderr, "%s: %s\n", what, cc::lastErrorMessage().c_str());
    std::exit(1);
  }
}

// Gradient-like values: sign and magnitude 2^-12 .. 2^4 from a hash of the index.
__global__ void fillValues(float* values, size_t count, uint32_t salt) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9e3779b9u ^ static_cast<uint32_t>(i >> 32) ^ salt;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    const uint32_t exponent = 127 - 12 + (h >> 24) % 17;
    values[i] = __uint_as_float((h & 0x80000000u) | (exponent << 23) | (h & 0x7fffffu));
  }
}

__global__ void floatToBf16(const float* values, size_t count, uint16_t* out) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    out[i] = static_cast<uint16_t>(__float_as_uint(values[i]) >> 16);
  }
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { CUDA_CHECK(cudaMalloc(&ptr, bytes)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* f() const { return static_cast<float*>(ptr); }
};

// One set of buffers for every kernel.
struct BufferSet {
  std::unique_ptr<DeviceBuffer> local, localBf16, residual, acc, packedIn, packedInBf16, packedOut, decoded, other;
};

struct Result {
  std::string name;
  double bytesPerValue;
  double ms;
  double gbps;
};

double median(std::vector<float> samples) {
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  return n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parseOptions(argc, argv, &options)) return 2;
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return kSkip;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t n = options.count;
  const cc::CodecSpec natSpec = cc::simpleCodecSpec("nat");
  const auto natF32 = cc::makeDeviceBlockCodec(natSpec, CC_FLOAT32, CC_SUM);
  const auto natBf16 = cc::makeDeviceBlockCodec(natSpec, CC_BFLOAT16, CC_SUM);
  const auto natDetF32 = cc::makeDeviceBlockCodec(cc::simpleCodecSpec("nat_det"), CC_FLOAT32, CC_SUM);
  const auto exactF32 = cc::makeDeviceBlockCodec(cc::simpleCodecSpec("none"), CC_FLOAT32, CC_SUM);
  if (!natF32 || !natBf16 || !natDetF32 || !exactF32) {
    std::fprintf(stderr, "no device codec: %s\n", cc::lastErrorMessage().c_str());
    return 1;
  }
  const size_t packed = natF32->packedBytes(n);
  std::printf("# cc_gpu_kernel_bench: %s (%d SMs), %zu values, %d reps (median), %d buffer sets\n", prop.name,
              prop.multiProcessorCount, n, options.reps, options.sets);

  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<BufferSet> sets(static_cast<size_t>(options.sets));
  const cc::RandomStream rs{0x0123456789abcdefull, cc::makeStreamId(1, 0, 1)};
  for (size_t s = 0; s < sets.size(); ++s) {
    BufferSet& set = sets[s];
    set.local = std::make_unique<DeviceBuffer>(n * 4);
    set.localBf16 = std::make_unique<DeviceBuffer>(n * 2);
    set.residual = std::make_unique<DeviceBuffer>(n * 4);
    set.acc = std::make_unique<DeviceBuffer>(n * 4);
    set.packedIn = std::make_unique<DeviceBuffer>(packed);
    set.packedInBf16 = std::make_unique<DeviceBuffer>(packed);
    set.packedOut = std::make_unique<DeviceBuffer>(std::max(packed, n * 4));
    set.decoded = std::make_unique<DeviceBuffer>(n * 4);
    set.other = std::make_unique<DeviceBuffer>(n * 4);
    const unsigned grid = 4 * static_cast<unsigned>(prop.multiProcessorCount);
    fillValues<<<grid, 256, 0, stream>>>(set.local->f(), n, 17u + static_cast<uint32_t>(s));
    fillValues<<<grid, 256, 0, stream>>>(set.other->f(), n, 91u + static_cast<uint32_t>(s));
    fillValues<<<grid, 256, 0, stream>>>(set.acc->f(), n, 7u + static_cast<uint32_t>(s));
    floatToBf16<<<grid, 256, 0, stream>>>(set.local->f(), n, static_cast<uint16_t*>(set.localBf16->ptr));
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemsetAsync(set.residual->ptr, 0, n * 4, stream));
    ccCheck(natF32->encode(set.other->ptr, n, 0, rs, set.packedIn->ptr, stream), "encode");
    ccCheck(natBf16->encode(set.other->ptr, n, 0, rs, set.packedInBf16->ptr, stream), "encode");
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));

  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<Result> results;
  auto measure = [&](const char* name, double bytesPerValue, const std::function<void(BufferSet&)>& body) {
    for (int warm = 0; warm < 3; ++warm) body(sets[static_cast<size_t>(warm) % sets.size()]);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<float> samples;
    for (int rep = 0; rep < options.reps; ++rep) {
      BufferSet& set = sets[static_cast<size_t>(rep + 1) % sets.size()];
      CUDA_CHECK(cudaEventRecord(start, stream));
      body(set);
      CUDA_CHECK(cudaEventRecord(stop, stream));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      samples.push_back(ms);
    }
    const double ms = median(samples);
    results.push_back(Result{name, bytesPerValue, ms, bytesPerValue * static_cast<double>(n) / (ms * 1e6)});
  };
  const double p = 36.0 / 32.0;  // nat bytes per value
  measure("copy d2d (cudaMemcpyAsync)", 8.0, [&](BufferSet& s) {
    CUDA_CHECK(cudaMemcpyAsync(s.decoded->ptr, s.local->ptr, n * 4, cudaMemcpyDeviceToDevice, stream));
  });
  measure("nat encode f32", 4 + p, [&](BufferSet& s) {
    ccCheck(natF32->encode(s.local->ptr, n, 0, rs, s.packedOut->ptr, stream), "encode");
  });
  measure("nat decode f32", p + 4, [&](BufferSet& s) {
    ccCheck(natF32->decode(s.packedIn->ptr, n, s.decoded->ptr, stream), "decode");
  });
  measure("nat decodeAccumulate", p + 8, [&](BufferSet& s) {
    ccCheck(natF32->decodeAccumulate(s.packedIn->ptr, n, s.acc->f(), stream), "decodeAccumulate");
  });
  measure("nat hop f32", p + 4 + p, [&](BufferSet& s) {
    ccCheck(natF32->decodeAddEncode(s.packedIn->ptr, s.local->ptr, n, 0, rs, 1, s.packedOut->ptr, nullptr, stream),
            "hop");
  });
  measure("nat hop f32 +decodedOut /4", p + 4 + p + 4, [&](BufferSet& s) {
    ccCheck(natF32->decodeAddEncode(s.packedIn->ptr, s.local->ptr, n, 0, rs, 4, s.packedOut->ptr, s.decoded->ptr,
                                    stream),
            "hop");
  });
  measure("nat hop f32 +residual", p + 4 + 8 + p, [&](BufferSet& s) {
    ccCheck(natF32->decodeAddEncodeWithResidual(s.packedIn->ptr, s.local->ptr, s.residual->f(), n, 0, rs, 1,
                                                s.packedOut->ptr, nullptr, stream),
            "hop residual");
  });
  measure("nat encode f32 +residual", 4 + 8 + p, [&](BufferSet& s) {
    ccCheck(natF32->encodeWithResidual(s.local->ptr, s.residual->f(), n, 0, rs, s.packedOut->ptr, stream),
            "encode residual");
  });
  measure("nat encode bf16", 2 + p, [&](BufferSet& s) {
    ccCheck(natBf16->encode(s.localBf16->ptr, n, 0, rs, s.packedOut->ptr, stream), "encode bf16");
  });
  measure("nat hop bf16", p + 2 + p, [&](BufferSet& s) {
    ccCheck(natBf16->decodeAddEncode(s.packedInBf16->ptr, s.localBf16->ptr, n, 0, rs, 1, s.packedOut->ptr, nullptr,
                                     stream),
            "hop bf16");
  });
  measure("nat_det hop f32", p + 4 + p, [&](BufferSet& s) {
    ccCheck(natDetF32->decodeAddEncode(s.packedIn->ptr, s.local->ptr, n, 0, rs, 1, s.packedOut->ptr, nullptr,
                                       stream),
            "nat_det hop");
  });
  measure("exact hop f32 (sum)", 12.0, [&](BufferSet& s) {
    ccCheck(exactF32->decodeAddEncode(s.other->ptr, s.local->ptr, n, 0, rs, 1, s.packedOut->ptr, nullptr, stream),
            "exact hop");
  });
  CUDA_CHECK(cudaGetLastError());

  const double copy = results[0].gbps;
  std::printf("%-30s %10s %10s %10s %10s\n", "kernel", "B/value", "ms", "GB/s", "% of copy");
  for (const Result& r : results) {
    std::printf("%-30s %10.3f %10.3f %10.1f %9.1f%%\n", r.name.c_str(), r.bytesPerValue, r.ms, r.gbps,
                100.0 * r.gbps / copy);
  }
  auto percentOf = [&](const char* name) {
    for (const Result& r : results) {
      if (r.name == name) return r.gbps / copy;
    }
    return 0.0;
  };
  const double hop = percentOf("nat hop f32"), encode = percentOf("nat encode f32");
  const bool passed = hop >= kCheckFraction && encode >= kCheckFraction;

  if (!options.json.empty()) {
    FILE* out = std::fopen(options.json.c_str(), "w");
    if (out == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", options.json.c_str());
      return 1;
    }
    std::fprintf(out, "{\n  \"device\": \"%s\",\n  \"count\": %zu,\n  \"reps\": %d,\n  \"sets\": %d,\n", prop.name, n,
                 options.reps, options.sets);
    std::fprintf(out, "  \"copy_gbps\": %.3f,\n  \"kernels\": [\n", copy);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(out,
                   "    {\"name\": \"%s\", \"bytes_per_value\": %.4f, \"ms\": %.4f, \"gbps\": %.3f, "
                   "\"percent_of_copy\": %.2f}%s\n",
                   r.name.c_str(), r.bytesPerValue, r.ms, r.gbps, 100.0 * r.gbps / copy,
                   i + 1 < results.size() ? "," : "");
    }
    std::fprintf(out, "  ],\n  \"check\": {\"threshold_percent\": %.0f, \"hop_percent\": %.2f, \"encode_percent\": %.2f, "
                 "\"passed\": %s}\n}\n",
                 100.0 * kCheckFraction, 100.0 * hop, 100.0 * encode, passed ? "true" : "false");
    std::fclose(out);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  if (options.check) {
    std::printf("check: nat hop f32 %.1f%%, nat encode f32 %.1f%% of copy (need %.0f%%): %s\n", 100.0 * hop,
                100.0 * encode, 100.0 * kCheckFraction, passed ? "PASSED" : "FAILED");
    return passed ? 0 : 1;
  }
  return 0;
}
