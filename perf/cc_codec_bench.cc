// Single-thread throughput of the nat codec next to memcpy of the same
// float32 input, measured in the same run so the ratio says how close the
// codec gets to the memory system. Each operation runs over the whole
// buffer (larger than the caches by default) several times; the median
// repetition is reported.
//
//   cc_codec_bench [--count N] [--iters K] [--impl scalar|avx2|both]
//                  [--dtype f32|bf16|f16] [--cpu C | --no-pin]
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "cuda/nat_math.h"

namespace {

struct Options {
  size_t count = size_t{16} << 20;
  int iters = 7;
  std::string impl = "both";
  std::string dtype = "f32";
  int cpu = -1;  // -1: the CPU the benchmark starts on
  bool pin = true;
};

void usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--count N] [--iters K] [--impl scalar|avx2|both] [--dtype f32|bf16|f16] "
               "[--cpu C | --no-pin]\n",
               program);
}

bool parseOptions(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool hasValue = i + 1 < argc;
    if (arg == "--count" && hasValue) {
      options->count = std::strtoull(argv[++i], nullptr, 0);
    } else if (arg == "--iters" && hasValue) {
      options->iters = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--impl" && hasValue) {
      options->impl = argv[++i];
    } else if (arg == "--dtype" && hasValue) {
      options->dtype = argv[++i];
    } else if (arg == "--cpu" && hasValue) {
      options->cpu = std::atoi(argv[++i]);
    } else if (arg == "--no-pin") {
      options->pin = false;
    } else {
      return false;
    }
  }
  const bool implOk = options->impl == "scalar" || options->impl == "avx2" || options->impl == "both";
  const bool dtypeOk = options->dtype == "f32" || options->dtype == "bf16" || options->dtype == "f16";
  return implOk && dtypeOk && options->count > 0;
}

// Migrations between cores would show up as noise in the timings.
void pinToOneCpu(Options* options) {
  if (!options->pin) return;
  if (options->cpu < 0) options->cpu = sched_getcpu();
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(options->cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    std::fprintf(stderr, "warning: could not pin to CPU %d; running unpinned\n", options->cpu);
    options->pin = false;
  }
}

double medianSeconds(int iters, const std::function<void()>& body) {
  body();  // warm-up: page faults, caches, branch predictors
  std::vector<double> seconds;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    const auto stop = std::chrono::steady_clock::now();
    seconds.push_back(std::chrono::duration<double>(stop - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

struct Row {
  std::string op;
  std::string impl;
  double seconds;
  double trafficBytesPerValue;  // bytes the operation must move per value
};

cc_datatype_t datatypeOf(const std::string& name) {
  if (name == "bf16") return CC_BFLOAT16;
  if (name == "f16") return CC_FLOAT16;
  return CC_FLOAT32;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parseOptions(argc, argv, &options)) {
    usage(argv[0]);
    return 2;
  }
  pinToOneCpu(&options);

  const size_t n = options.count;
  const cc_datatype_t dtype = datatypeOf(options.dtype);
  const size_t valueBytes = cc::elementBytes(cc::elementTypeOf(dtype));
  const auto codec = cc::makeCodec(cc::CodecId::Nat, dtype, CC_SUM);
  const size_t packedBytes = codec->packedBytes(n);
  const double packedPerValue = static_cast<double>(packedBytes) / static_cast<double>(n);

  // Gaussian gradients, in the benchmarked type; a float32 copy for memcpy.
  std::vector<float> input(n), memcpyOut(n);
  std::vector<uint8_t> local(n * valueBytes), decoded(n * valueBytes);
  std::vector<uint8_t> packedIn(packedBytes), packedOut(packedBytes);
  {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> gaussian(0.0f, 1e-3f);
    for (size_t i = 0; i < n; ++i) {
      input[i] = gaussian(rng);
      const uint32_t bits = cc::floatToBits(input[i]);
      if (valueBytes == 4) {
        std::memcpy(local.data() + 4 * i, &bits, 4);
      } else {
        const uint16_t narrow = dtype == CC_BFLOAT16 ? cc::floatBitsToBf16(bits) : cc::floatBitsToHalf(bits);
        std::memcpy(local.data() + 2 * i, &narrow, 2);
      }
    }
  }
  std::memset(memcpyOut.data(), 0, n * 4);
  std::memset(decoded.data(), 0, decoded.size());
  codec->encode(local.data(), n, 0, {7, 1}, packedIn.data());  // another rank's message
  std::memset(packedOut.data(), 0, packedBytes);

  std::vector<std::string> impls;
  if (options.impl == "both" || options.impl == "scalar") impls.push_back("scalar");
  if (options.impl == "both" || options.impl == "avx2") {
    cc::forceScalarCodecs(false);
    if (std::strcmp(cc::natImplementationName(), "avx2") == 0) {
      impls.push_back("avx2");
    } else {
      std::fprintf(stderr, "note: this CPU has no AVX2+F16C; skipping the avx2 path\n");
    }
  }

  std::vector<Row> rows;
  const double memcpySeconds =
      medianSeconds(options.iters, [&] { std::memcpy(memcpyOut.data(), input.data(), n * 4); });
  rows.push_back({"memcpy f32", "-", memcpySeconds, 8.0});

  const double localPerValue = static_cast<double>(valueBytes);
  uint64_t call = 0;
  for (const std::string& impl : impls) {
    cc::forceScalarCodecs(impl == "scalar");
    rows.push_back({"encode", impl,
                    medianSeconds(options.iters,
                                  [&] {
                                    codec->encode(local.data(), n, 0, {7, ++call}, packedOut.data());
                                  }),
                    localPerValue + packedPerValue});
    rows.push_back({"decode", impl,
                    medianSeconds(options.iters, [&] { codec->decode(packedIn.data(), n, decoded.data()); }),
                    packedPerValue + localPerValue});
    rows.push_back(
        {"hop (decodeAddEncode)", impl,
         medianSeconds(
             options.iters,
             [&] {
               codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, {7, ++call}, 1, packedOut.data(), nullptr);
             }),
         packedPerValue + localPerValue + packedPerValue});
    rows.push_back({"last hop (+ decodedOut, /4)", impl,
                    medianSeconds(options.iters,
                                  [&] {
                                    codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, {7, ++call}, 4,
                                                           packedOut.data(), decoded.data());
                                  }),
                    packedPerValue + localPerValue + packedPerValue + localPerValue});
  }
  cc::forceScalarCodecs(false);

  // Keep the outputs observable so no pass can be optimised away.
  uint64_t checksum = 0;
  for (size_t i = 0; i < n; i += 4096) {
    checksum += cc::floatToBits(memcpyOut[i]) + packedOut[(i / 32) * 36] + decoded[i * valueBytes];
  }

  std::printf("cc_codec_bench: %zu %s values (%.1f MiB in, %.1f MiB packed), median of %d, %s\n", n,
              options.dtype.c_str(), n * 4.0 / (1 << 20) * valueBytes / 4, packedBytes / double(1 << 20), options.iters,
              options.pin ? ("pinned to CPU " + std::to_string(options.cpu)).c_str() : "unpinned");
  std::printf("input GB/s counts %zu B per value (memcpy: the same float32 values, 4 B/value);\n", valueBytes);
  std::printf("traffic GB/s counts every byte read and written: memcpy 4+4, encode %.0f+%.3f, decode %.3f+%.0f,\n",
              localPerValue, packedPerValue, packedPerValue, localPerValue);
  std::printf("hop %.3f packed in + %.0f local + %.3f packed out; last hop adds %.0f decoded out.\n\n", packedPerValue,
              localPerValue, packedPerValue, localPerValue);
  std::printf("%-28s %-7s %10s %10s %12s %14s %10s\n", "operation", "impl", "time ms", "Gvalue/s", "input GB/s",
              "traffic GB/s", "vs memcpy");
  for (const Row& row : rows) {
    const double valuesPerSecond = n / row.seconds;
    const double inputBytes = row.op == "memcpy f32" ? 4.0 : localPerValue;
    std::printf("%-28s %-7s %10.2f %10.3f %12.2f %14.2f %9.2fx\n", row.op.c_str(), row.impl.c_str(), row.seconds * 1e3,
                valuesPerSecond / 1e9, valuesPerSecond * inputBytes / 1e9,
                valuesPerSecond * row.trafficBytesPerValue / 1e9, memcpySeconds / row.seconds);
  }
  std::printf("\n(checksum %llu)\n", static_cast<unsigned long long>(checksum));
  return 0;
}
