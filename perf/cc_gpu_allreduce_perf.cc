// compressed_allreduce on device buffers, ranks as threads sharing one GPU
// through the local device transport: time per call, bus bandwidth, relative
// error against the exact sum, and the speedup over codec none (our exact
// path on the same ranks), measured in the same run. The ranks share one
// GPU's memory system, so this measures the path's cost, not a link.
//
//   cc_gpu_allreduce_perf [--ranks N] [-b 1M] [-e 256M] [-f 4] [--codec nat,none] [-n 20] [-w 3]
//
// Exits 77 without a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "compressedcoll.h"
#include "perf_text.h"

namespace {

struct Options {
  int ranks = 4;
  size_t minBytes = 1u << 20;
  size_t maxBytes = 256u << 20;
  size_t factor = 4;
  std::vector<std::string> codecs{"nat", "none"};
  int iterations = 20;
  int warmup = 3;
};

size_t parseSize(const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  const std::string suffix(end);
  if (suffix == "K") value *= 1024;
  if (suffix == "M") value *= 1024 * 1024;
  if (suffix == "G") value *= 1024.0 * 1024 * 1024;
  return static_cast<size_t>(value);
}

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "%s\nusage: cc_gpu_allreduce_perf [--ranks N] [-b MIN] [-e MAX] [-f FACTOR] [--codec a,b] [-n ITERS] "
               "[-w WARMUP]\n",
               problem);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--ranks") options.ranks = std::atoi(value().c_str());
    else if (arg == "-b") options.minBytes = parseSize(value());
    else if (arg == "-e") options.maxBytes = parseSize(value());
    else if (arg == "-f") options.factor = static_cast<size_t>(std::atoi(value().c_str()));
    else if (arg == "--codec") options.codecs = ccperf::splitOn(value(), ',');
    else if (arg == "-n") options.iterations = std::atoi(value().c_str());
    else if (arg == "-w") options.warmup = std::atoi(value().c_str());
    else usage(("unknown option " + arg).c_str());
  }
  if (options.ranks < 2 || options.factor < 2 || options.iterations < 1 || options.minBytes < 4) {
    usage("need --ranks >= 2, -f >= 2, -n >= 1, -b >= 4");
  }
  return options;
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "cc_gpu_allreduce_perf: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

float inputValue(int rank, size_t i) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(rank) + 1) * 0xD1B54A32D192ED03ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// A reusable barrier for the rank threads (std::barrier is C++20).
class Barrier {
 public:
  explicit Barrier(int parties) : parties_(parties) {}
  void arriveAndWait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == parties_) {
      arrived_ = 0;
      ++generation_;
      changed_.notify_all();
      return;
    }
    changed_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int parties_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

struct Result {
  double seconds = 0;
  double relativeError = 0;
};

// One codec at one size: every rank times its own calls (stream synchronised
// after each); the slowest rank's median is the call's time.
Result measure(const Options& options, const cc_unique_id_t& id, const std::string& codec, size_t count) {
  const int n = options.ranks;
  std::vector<std::vector<double>> times(n);
  std::vector<float> rank0Output(count);
  Barrier sync(n);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      check(cudaSetDevice(0), "cudaSetDevice");
      cc_config_t config = CC_CONFIG_INITIALIZER;
      config.transport = "local";
      config.codec = codec.c_str();
      config.algo = "ring";
      config.has_seed = 1;
      config.seed = 7;
      cc_comm_t comm = nullptr;
      if (cc_comm_init_rank(&comm, n, id, rank, &config) != CC_SUCCESS) {
        std::fprintf(stderr, "cc_gpu_allreduce_perf: rank %d: %s\n", rank, cc_get_last_error(nullptr));
        std::exit(1);
      }
      std::vector<float> host(count);
      for (size_t i = 0; i < count; ++i) host[i] = inputValue(rank, i);
      float *send = nullptr, *recv = nullptr;
      cudaStream_t stream = nullptr;
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
      check(cudaMalloc(&send, count * sizeof(float)), "cudaMalloc");
      check(cudaMalloc(&recv, count * sizeof(float)), "cudaMalloc");
      check(cudaMemcpy(send, host.data(), count * sizeof(float), cudaMemcpyHostToDevice), "copy in");
      for (int i = 0; i < options.warmup + options.iterations; ++i) {
        sync.arriveAndWait();
        const auto start = std::chrono::steady_clock::now();
        if (compressed_allreduce(send, recv, count, CC_FLOAT32, CC_SUM, comm, stream) != CC_SUCCESS) {
          std::fprintf(stderr, "cc_gpu_allreduce_perf: rank %d: %s\n", rank, cc_get_last_error(comm));
          std::exit(1);
        }
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (i >= options.warmup) times[rank].push_back(seconds);
      }
      if (rank == 0) check(cudaMemcpy(rank0Output.data(), recv, count * sizeof(float), cudaMemcpyDeviceToHost), "copy out");
      cudaFree(send);
      cudaFree(recv);
      cudaStreamDestroy(stream);
      cc_comm_destroy(comm);
    });
  }
  for (auto& thread : threads) thread.join();
  Result result;
  for (int rank = 0; rank < n; ++rank) {
    std::sort(times[rank].begin(), times[rank].end());
    result.seconds = std::max(result.seconds, times[rank][times[rank].size() / 2]);
  }
  double errorSquares = 0, normSquares = 0;
  for (size_t i = 0; i < count; ++i) {
    double exact = 0;
    for (int rank = 0; rank < n; ++rank) exact += inputValue(rank, i);
    errorSquares += (rank0Output[i] - exact) * (rank0Output[i] - exact);
    normSquares += exact * exact;
  }
  result.relativeError = normSquares > 0 ? std::sqrt(errorSquares / normSquares) : 0;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  cudaDeviceProp properties;
  check(cudaGetDeviceProperties(&properties, 0), "cudaGetDeviceProperties");
  std::printf("# %d ranks as threads on one %s (local device transport, ring), float32 SUM, median of %d\n",
              options.ranks, properties.name, options.iterations);
  std::printf("%12s %12s %8s %10s %10s %10s %9s\n", "size", "count", "codec", "time(us)", "busbw(GB/s)", "rel.err",
              "vs none");
  for (size_t bytes = options.minBytes; bytes <= options.maxBytes; bytes *= options.factor) {
    const size_t count = bytes / sizeof(float);
    std::vector<Result> results;
    double noneSeconds = 0;
    for (const std::string& codec : options.codecs) {
      cc_unique_id_t id;
      if (cc_get_unique_id(&id) != CC_SUCCESS) {
        std::fprintf(stderr, "cc_gpu_allreduce_perf: %s\n", cc_get_last_error(nullptr));
        return 1;
      }
      results.push_back(measure(options, id, codec, count));
      if (codec == "none") noneSeconds = results.back().seconds;
    }
    for (size_t c = 0; c < options.codecs.size(); ++c) {
      const double busbw = 2.0 * (options.ranks - 1) / options.ranks * bytes / results[c].seconds * 1e-9;
      char speedup[32] = "-";
      if (noneSeconds > 0) std::snprintf(speedup, sizeof speedup, "%.2fx", noneSeconds / results[c].seconds);
      std::printf("%12zu %12zu %8s %10.1f %10.1f %10.2e %9s\n", bytes, count, options.codecs[c].c_str(),
                  results[c].seconds * 1e6, busbw, results[c].relativeError, speedup);
    }
  }
  return 0;
}
