// Layer-wise against entire-model compression on the same data: a synthetic
// model whose layers have different sizes and gradient scales (as real
// networks do: small normalisation layers, large fully connected ones) is
// reduced as one grouped call per step (cc_group_start, one
// compressed_allreduce per layer, cc_group_end) with scope=tensor (a norm or
// top-k selection per layer) and scope=model (one over all layers), and with
// buckets. Ranks are threads; every spec sees the same gradients.
//
//   cc_granularity [--ranks N] [--steps K] [--scale S] [--transport local|tcp]
//                  [--specs 'a;b;...'] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "compressedcoll.h"
#include "comm/comm.h"
#include "perf/perf_text.h"

namespace {

struct Options {
  int ranks = 4;
  int steps = 5;
  double scale = 1.0;
  std::string transport = "local";
  std::vector<std::string> specs = {
      "topk:ratio=0.01,scope=tensor",   "topk:ratio=0.01,scope=model",   "topk:ratio=0.01,bucket=512",
      "dither_nat:s=8,scope=tensor",    "dither_nat:s=8,scope=model",    "dither_nat:s=8",
      "qsgd:s=16,scope=tensor",         "qsgd:s=16,scope=model",         "qsgd:s=16",
      "nat",                            "none"};
  std::string jsonPath;
};

// A ResNet-50-like mix of layer shapes, scaled: (values, gradient scale).
struct Layer {
  size_t count;
  float scale;
};

std::vector<Layer> syntheticModel(double scale) {
  const struct {
    size_t count;
    float gradientScale;
  } shapes[] = {{9408, 0.5f},   {64, 0.02f},     {4096, 0.3f},   {36864, 0.2f},   {64, 0.01f},
                {16384, 0.25f}, {256, 0.03f},    {32768, 0.2f},  {147456, 0.1f},  {128, 0.01f},
                {65536, 0.15f}, {512, 0.02f},    {131072, 0.1f}, {589824, 0.05f}, {256, 0.005f},
                {262144, 0.08f}, {1024, 0.01f},  {524288, 0.06f}, {2359296, 0.03f}, {512, 0.004f},
                {1048576, 0.05f}, {2048, 0.008f}, {2048000, 0.4f}, {1000, 0.5f}};
  std::vector<Layer> layers;
  for (const auto& shape : shapes) {
    layers.push_back({std::max<size_t>(1, static_cast<size_t>(shape.count * scale)), shape.gradientScale});
  }
  return layers;
}

[[noreturn]] void usage(const char* message) {
  if (message) std::fprintf(stderr, "cc_granularity: %s\n", message);
  std::fprintf(stderr,
               "usage: cc_granularity [--ranks N] [--steps K] [--scale S] [--transport local|tcp]\n"
               "                      [--specs 'a;b;...'] [--json FILE]\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--ranks") options.ranks = std::atoi(value());
    else if (arg == "--steps") options.steps = std::atoi(value());
    else if (arg == "--scale") options.scale = std::atof(value());
    else if (arg == "--transport") options.transport = value();
    else if (arg == "--specs") options.specs = ccperf::splitOn(value(), ';');
    else if (arg == "--json") options.jsonPath = value();
    else if (arg == "-h" || arg == "--help") usage(nullptr);
    else usage(("unknown option " + arg).c_str());
  }
  if (options.ranks < 1 || options.steps < 1 || options.scale <= 0 || options.specs.empty()) usage("bad values");
  return options;
}

struct Result {
  double secondsPerStep = 0;
  double overallError = 0;
  double meanLayerError = 0;
  double worstLayerError = 0;
  int emptyLayers = 0;
  std::string algorithm;
  bool identical = true;
  std::string failure;
};

Result runSpec(const std::string& spec, const Options& options, const std::vector<Layer>& layers,
               const std::vector<std::vector<std::vector<float>>>& gradients,
               const std::vector<std::vector<double>>& exact) {
  const int n = options.ranks;
  std::vector<std::vector<std::vector<float>>> outputs(n);
  std::vector<double> seconds(n, 0.0);
  std::vector<std::string> failures(n), algorithms(n);
  cc_unique_id_t id;
  if (cc_get_unique_id(&id) != CC_SUCCESS) return Result{0, 0, 0, 0, 0, "", false, cc_get_last_error(nullptr)};
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      cc_config_t config = CC_CONFIG_INITIALIZER;
      config.codec = spec.c_str();
      config.transport = options.transport.c_str();
      config.has_seed = 1;
      config.seed = 42;
      cc_comm_t comm = nullptr;
      if (cc_comm_init_rank(&comm, n, id, rank, &config) != CC_SUCCESS) {
        failures[rank] = cc_get_last_error(nullptr);
        return;
      }
      outputs[rank].resize(layers.size());
      for (size_t l = 0; l < layers.size(); ++l) outputs[rank][l].resize(layers[l].count);
      auto start = std::chrono::steady_clock::now();
      for (int step = 0; step < options.steps && failures[rank].empty(); ++step) {
        cc_group_start();
        for (size_t l = 0; l < layers.size(); ++l) {
          compressed_allreduce(gradients[rank][l].data(), outputs[rank][l].data(), layers[l].count, CC_FLOAT32,
                               CC_SUM, comm, nullptr);
        }
        if (cc_group_end() != CC_SUCCESS) failures[rank] = cc_get_last_error(comm);
      }
      seconds[rank] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      algorithms[rank] = comm->lastAlgorithm;
      cc_comm_destroy(comm);
    });
  }
  for (auto& thread : threads) thread.join();
  Result result;
  for (int rank = 0; rank < n; ++rank) {
    if (!failures[rank].empty()) {
      result.failure = "rank " + std::to_string(rank) + ": " + failures[rank];
      return result;
    }
    result.secondsPerStep = std::max(result.secondsPerStep, seconds[rank] / options.steps);
    if (outputs[rank] != outputs[0]) result.identical = false;
  }
  result.algorithm = algorithms[0];
  double diff = 0, norm = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    double layerDiff = 0, layerNorm = 0;
    bool empty = true;
    for (size_t i = 0; i < layers[l].count; ++i) {
      const double d = outputs[0][l][i] - exact[l][i];
      layerDiff += d * d;
      layerNorm += exact[l][i] * exact[l][i];
      empty &= outputs[0][l][i] == 0.0f;
    }
    diff += layerDiff;
    norm += layerNorm;
    const double layerError = std::sqrt(layerDiff / layerNorm);
    result.meanLayerError += layerError / layers.size();
    result.worstLayerError = std::max(result.worstLayerError, layerError);
    result.emptyLayers += empty ? 1 : 0;
  }
  result.overallError = std::sqrt(diff / norm);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  if (!std::getenv("CC_SOCKET_IFNAME")) setenv("CC_SOCKET_IFNAME", "lo", 1);
  // It compares the codecs' granularities: every layer compressed, however small.
  setenv("CC_COMPRESS_MIN_BYTES", "0", 0);
  const std::vector<Layer> layers = syntheticModel(options.scale);
  size_t total = 0, smallest = SIZE_MAX, largest = 0;
  for (const Layer& layer : layers) {
    total += layer.count;
    smallest = std::min(smallest, layer.count);
    largest = std::max(largest, layer.count);
  }
  std::vector<std::vector<std::vector<float>>> gradients(options.ranks);
  std::vector<std::vector<double>> exact(layers.size());
  for (int rank = 0; rank < options.ranks; ++rank) {
    std::mt19937_64 generator(1000 + rank);
    std::normal_distribution<float> gaussian(0.0f, 1.0f);
    for (size_t l = 0; l < layers.size(); ++l) {
      std::vector<float> values(layers[l].count);
      for (float& v : values) v = gaussian(generator) * layers[l].scale;
      gradients[rank].push_back(values);
    }
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    exact[l].assign(layers[l].count, 0.0);
    for (int rank = 0; rank < options.ranks; ++rank) {
      for (size_t i = 0; i < layers[l].count; ++i) exact[l][i] += gradients[rank][l][i];
    }
  }
  std::printf("# cc_granularity: %d ranks (%s), %zu layers, %zu values (%zu to %zu per layer), %d grouped steps\n",
              options.ranks, options.transport.c_str(), layers.size(), total, smallest, largest, options.steps);
  std::printf("# %-34s %-9s %10s %10s %10s %10s %6s %5s\n", "spec", "algo", "ms/step", "rel.err", "mean.layer",
              "worst.layer", "empty", "same");
  std::FILE* json = options.jsonPath.empty() ? nullptr : std::fopen(options.jsonPath.c_str(), "w");
  if (json) std::fprintf(json, "[\n");
  int status = 0;
  for (size_t s = 0; s < options.specs.size(); ++s) {
    const std::string& spec = options.specs[s];
    const Result result = runSpec(spec, options, layers, gradients, exact);
    if (!result.failure.empty()) {
      std::printf("  %-34s failed: %s\n", spec.c_str(), result.failure.c_str());
      status = 1;
      continue;
    }
    std::printf("  %-34s %-9s %10.2f %10.4f %10.4f %10.4f %6d %5s\n", spec.c_str(), result.algorithm.c_str(),
                result.secondsPerStep * 1e3, result.overallError, result.meanLayerError, result.worstLayerError,
                result.emptyLayers, result.identical ? "yes" : "NO");
    if (!result.identical) status = 1;
    if (json) {
      std::fprintf(json,
                   "%s  {\"spec\": \"%s\", \"algo\": \"%s\", \"ranks\": %d, \"ms_per_step\": %.3f, "
                   "\"relative_error\": %.6g, \"mean_layer_error\": %.6g, \"worst_layer_error\": %.6g, "
                   "\"empty_layers\": %d}",
                   s ? ",\n" : "", spec.c_str(), result.algorithm.c_str(), options.ranks,
                   result.secondsPerStep * 1e3, result.overallError, result.meanLayerError,
                   result.worstLayerError, result.emptyLayers);
    }
  }
  if (json) {
    std::fprintf(json, "\n]\n");
    std::fclose(json);
  }
  std::printf("# rel.err: ||sum - exact|| / ||exact|| over the model; mean.layer / worst.layer: the same per layer;\n"
              "# empty: layers whose reduced gradient is all zero; same: every rank bit-identical.\n");
  return status;
}
