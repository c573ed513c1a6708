// Accuracy of ring, direct, tree and switch against the number of ranks.
//
// For every n, algorithm and codec: one float32 SUM allreduce of `count`
// i.i.d. Gaussian values per rank (N(0, 1), fresh data for each of K calls;
// every algorithm and codec sees the same data), and the relative error
// ||out - exact|| / ||exact|| of rank 0's result against the sum taken in
// double. Ranks are threads on the local transport. Beside the mean and the
// spread over the K calls, two lines of the same error model (variances in
// units of one rank's ||x||^2; the exact sum of m ranks has ||.||^2 ~ m):
//
//   ring:   Var_k = (1 + w) Var_{k-1} + w k, k = 1..n;       rel = sqrt(Var_n / n)
//   direct: Var = w_W (n - 1) + w_M (n + w_W (n - 1));        rel = sqrt(Var / n)
//   switch: Var = w_W n + w_M (n + w_W n)  (every rank encodes, the switch re-encodes the sum)
//   tree:   Var_v = S + w (m_v + S), S = sum of the children's Var, m_v the
//           subtree size of v (a leaf: Var = w); per tree of doubleBinaryTree,
//           each carrying half of the vector: rel = sqrt(mean_t Var_root(t) / n)
//
// "bound" takes w from REFERENCE.md (codec/theory.h: theoreticalOmega over
// the values that share a norm): an upper bound on the expected squared error.
// "pred" takes the w this codec measures on one rank's data (one encode and
// decode with the block codec the algorithms use, averaged over a few draws):
// the model's prediction of the expected error, so meas/pred near 1 says the
// algorithm errs exactly as its encode count predicts. A mean above its bound
// is flagged (and the exit status is 1): for an unbiased codec it cannot
// happen by chance at these sizes.
//
//   cc_algo_accuracy [--ranks 2-16|2,4,8] [--algos ring,direct,tree]
//                    [--codecs 'nat;dither_nat:s=8,norm=nat;qsgd:s=16'] [--master SPEC]
//                    [--count N] [--calls K] [--seed S] [--omega-draws R] [--csv FILE] [--same-data]
//
// switch runs against a cc_switchd dataplane started on a thread of this
// process (127.0.0.1); --master is its downlink too. --same-data gives every
// call the first call's data (fresh draws still): "mean.err" is then the
// error of the mean of the K outputs, which falls as 1/sqrt(K) for an
// unbiased scheme and stops at its bias otherwise.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "algo/algo.h"
#include "base/error.h"
#include "codec/codec.h"
#include "codec/spec.h"
#include "codec/theory.h"
#include "comm/comm.h"
#include "compressedcoll.h"
#include "perf/perf_text.h"
#include "switch/daemon.h"

namespace {

struct Options {
  std::vector<int> ranks;
  std::vector<std::string> algos = {"ring", "direct", "tree"};
  std::vector<std::string> codecs = {"nat", "dither_nat:s=8,norm=nat", "qsgd:s=16"};
  std::string master;  // direct's master codec; empty: the call's own codec
  size_t count = size_t{1} << 18;
  int calls = 8;
  uint64_t seed = 1;
  int omegaDraws = 8;
  std::string csvPath;
  bool sameData = false;
};

[[noreturn]] void usage(const char* message) {
  if (message) std::fprintf(stderr, "cc_algo_accuracy: %s\n", message);
  std::fprintf(stderr,
               "usage: cc_algo_accuracy [--ranks 2-16|2,4,8] [--algos ring,direct,tree]\n"
               "                        [--codecs 'a;b;...'] [--master SPEC] [--count N] [--calls K]\n"
               "                        [--seed S] [--omega-draws R] [--csv FILE] [--same-data]\n");
  std::exit(2);
}

// "2-16", "2,4,8" or a mix: "2-4,8,16".
std::vector<int> parseRanks(const std::string& text) {
  std::vector<int> ranks;
  for (const std::string& part : ccperf::splitOn(text, ',')) {
    const size_t dash = part.find('-');
    const int lo = std::atoi(part.substr(0, dash).c_str());
    const int hi = dash == std::string::npos ? lo : std::atoi(part.substr(dash + 1).c_str());
    if (lo < 1 || hi < lo || hi > 1024) usage(("bad rank range " + part).c_str());
    for (int n = lo; n <= hi; ++n) ranks.push_back(n);
  }
  return ranks;
}

Options parse(int argc, char** argv) {
  Options options;
  options.ranks = parseRanks("2-16");
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--ranks") options.ranks = parseRanks(value());
    else if (arg == "--algos") options.algos = ccperf::splitOn(value(), ',');
    else if (arg == "--codecs") options.codecs = ccperf::splitOn(value(), ';');
    else if (arg == "--master") options.master = value();
    else if (arg == "--count") options.count = std::strtoull(value(), nullptr, 0);
    else if (arg == "--calls") options.calls = std::atoi(value());
    else if (arg == "--seed") options.seed = std::strtoull(value(), nullptr, 0);
    else if (arg == "--omega-draws") options.omegaDraws = std::atoi(value());
    else if (arg == "--csv") options.csvPath = value();
    else if (arg == "--same-data") options.sameData = true;
    else if (arg == "-h" || arg == "--help") usage(nullptr);
    else usage(("unknown option " + arg).c_str());
  }
  if (options.ranks.empty() || options.algos.empty() || options.codecs.empty() || options.count == 0 ||
      options.calls < 1 || options.omegaDraws < 1) {
    usage("bad values");
  }
  for (const std::string& algo : options.algos) {
    if (algo != "ring" && algo != "direct" && algo != "tree" && algo != "switch") {
      usage(("unknown algorithm " + algo).c_str());
    }
  }
  return options;
}

// ---------------------------------------------------------------------------
// The error model.

double ringVariance(double omega, int n) {
  double variance = 0;
  for (int k = 1; k <= n; ++k) variance = (1 + omega) * variance + omega * k;
  return variance;
}

double switchVariance(double omegaWorker, double omegaMaster, int n) {
  const double workers = omegaWorker * n;
  return workers + omegaMaster * (n + workers);
}

double directVariance(double omegaWorker, double omegaMaster, int n) {
  const double workers = omegaWorker * (n - 1);
  return workers + omegaMaster * (n + workers);
}

// Var of the root of tree t of doubleBinaryTree(n): the mean over both trees.
double treeVariance(double omega, int n) {
  if (n == 1) return 0;
  double total = 0;
  for (int t = 0; t < 2; ++t) {
    std::vector<cc::TreeNode> nodes(n);
    for (int rank = 0; rank < n; ++rank) {
      cc::TreeNode both[2];
      cc::doubleBinaryTree(n, rank, both);
      nodes[rank] = both[t];
    }
    int root = -1;
    for (int rank = 0; rank < n; ++rank) {
      if (nodes[rank].parent < 0) root = rank;
    }
    // (subtree size, Var) of a node, recursively.
    std::function<std::pair<int, double>(int)> visit = [&](int v) {
      int size = 1;
      double children = 0;
      for (int c = 0; c < 2; ++c) {
        if (nodes[v].child[c] < 0) continue;
        const auto sub = visit(nodes[v].child[c]);
        size += sub.first;
        children += sub.second;
      }
      return std::make_pair(size, children + omega * (size + children));
    };
    const auto top = visit(root);
    if (top.first != n) {
      std::fprintf(stderr, "cc_algo_accuracy: tree %d of n = %d spans %d ranks\n", t, n, top.first);
      std::exit(1);
    }
    total += top.second;
  }
  return total / 2;
}

double relativeError(const std::string& algo, double omegaWorker, double omegaMaster, int n) {
  double variance = 0;
  if (algo == "ring") variance = ringVariance(omegaWorker, n);
  else if (algo == "direct") variance = directVariance(omegaWorker, omegaMaster, n);
  else if (algo == "switch") variance = switchVariance(omegaWorker, omegaMaster, n);
  else variance = treeVariance(omegaWorker, n);
  return std::sqrt(variance / n);
}

// Encodes per value on the longest path (the reader's shape of each model).
int encodesOnPath(const std::string& algo, int n) {
  if (algo == "ring") return n;
  if (algo == "direct" || algo == "switch") return 2;
  int depth = 0;  // levels of the deeper tree, the root included
  for (int t = 0; t < 2; ++t) {
    for (int rank = 0; rank < n; ++rank) {
      int levels = 1, v = rank;
      while (true) {
        cc::TreeNode node[2];
        cc::doubleBinaryTree(n, v, node);
        if (node[t].parent < 0) break;
        v = node[t].parent;
        ++levels;
      }
      depth = std::max(depth, levels);
    }
  }
  return depth;
}

// ---------------------------------------------------------------------------
// Codecs: the theory's omega and the measured one.

struct CodecInfo {
  std::string text;
  cc::CodecSpec spec;
  double omegaTheory = 0;
  double omegaMeasured = 0;
  double omegaMeasuredSd = 0;
};

// Mean over `draws` independent encodes of ||D(C(x)) - x||^2 / ||x||^2.
void measureOmega(CodecInfo& info, const std::vector<float>& x, uint64_t seed, int draws) {
  std::unique_ptr<cc::Codec> codec = cc::makeBlockCodec(info.spec, CC_FLOAT32, CC_SUM);
  if (!codec) {
    std::fprintf(stderr, "cc_algo_accuracy: no block codec for '%s'\n", info.text.c_str());
    std::exit(1);
  }
  std::vector<uint8_t> packed(codec->packedBytes(x.size()));
  std::vector<float> decoded(x.size());
  double norm = 0;
  for (float v : x) norm += static_cast<double>(v) * v;
  std::vector<double> ratios;
  for (int draw = 0; draw < draws; ++draw) {
    codec->encode(x.data(), x.size(), 0, cc::RandomStream{seed, 0x1000u + static_cast<uint64_t>(draw)},
                  packed.data());
    codec->decode(packed.data(), x.size(), decoded.data());
    double error = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double d = static_cast<double>(decoded[i]) - x[i];
      error += d * d;
    }
    ratios.push_back(error / norm);
  }
  double mean = 0, sq = 0;
  for (double r : ratios) mean += r / draws;
  for (double r : ratios) sq += (r - mean) * (r - mean);
  info.omegaMeasured = mean;
  info.omegaMeasuredSd = draws > 1 ? std::sqrt(sq / (draws - 1)) : 0;
}

CodecInfo codecInfo(const std::string& text, size_t count) {
  CodecInfo info;
  info.text = text;
  if (cc::parseCodecSpec(text, &info.spec) != CC_SUCCESS) {
    std::fprintf(stderr, "cc_algo_accuracy: bad codec '%s': %s\n", text.c_str(), cc_get_last_error(nullptr));
    std::exit(2);
  }
  if (!info.spec.unbiased() || !info.spec.hopReencodable() || info.spec.selector != cc::Selector::None) {
    std::fprintf(stderr,
                 "cc_algo_accuracy: '%s': the study takes unbiased block quantizers (nat, dithering with "
                 "bucket scope) that ring, direct and tree can all re-encode\n",
                 text.c_str());
    std::exit(2);
  }
  info.omegaTheory = cc::theoreticalOmega(info.spec, cc::scopeValues(info.spec, count));
  return info;
}

// ---------------------------------------------------------------------------
// Inputs: K calls of n ranks, i.i.d. N(0, 1); the exact sums in double.

struct Inputs {
  std::vector<std::vector<std::vector<float>>> values;  // [call][rank]
  std::vector<std::vector<double>> exact;               // [call]
  std::vector<double> exactNorm;                        // ||exact||^2 per call
};

std::vector<float> gaussian(size_t count, uint64_t seed, int call, int rank) {
  std::mt19937_64 generator(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(call) * 1000003u +
                            static_cast<uint64_t>(rank));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& v : values) v = normal(generator);
  return values;
}

// Rank r's data of call c does not depend on n: every n extends the same ranks.
Inputs makeInputs(int n, const Options& options) {
  Inputs inputs;
  inputs.values.assign(options.calls, std::vector<std::vector<float>>(n));
  inputs.exact.assign(options.calls, std::vector<double>(options.count, 0.0));
  inputs.exactNorm.assign(options.calls, 0.0);
  std::vector<std::thread> workers;
  const int threads = 2;
  for (int w = 0; w < threads; ++w) {
    workers.emplace_back([&, w] {
      for (int job = w; job < options.calls * n; job += threads) {
        inputs.values[job / n][job % n] = gaussian(options.count, options.seed, job / n, job % n);
      }
    });
  }
  for (auto& worker : workers) worker.join();
  for (int c = 0; c < options.calls; ++c) {
    std::vector<double>& exact = inputs.exact[c];
    for (int r = 0; r < n; ++r) {
      const std::vector<float>& x = inputs.values[c][r];
      for (size_t i = 0; i < options.count; ++i) exact[i] += x[i];
    }
    double norm = 0;
    for (double v : exact) norm += v * v;
    inputs.exactNorm[c] = norm;
  }
  return inputs;
}

// ---------------------------------------------------------------------------
// One (n, algorithm, codec): K calls on one communicator.

struct Run {
  std::vector<double> errors;  // per call, rank 0's relative error
  double meanError = -1;       // --same-data: the error of the mean output
  bool identical = true;       // every rank's output bit-identical, every call
  std::string algorithm;       // what the library reports it ran
  double seconds = 0;
  std::string failure;
};

uint64_t hashOf(const std::vector<float>& values) {
  uint64_t hash = 1469598103934665603ull;
  for (float v : values) {
    uint32_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    hash = (hash ^ bits) * 1099511628211ull;
  }
  return hash;
}

Run runOne(int n, const std::string& algo, const std::string& codec, const std::string& master,
           const Options& options, const Inputs& inputs, const std::string& switchAddress) {
  Run run;
  cc_unique_id_t id;
  if (cc_get_unique_id(&id) != CC_SUCCESS) {
    run.failure = cc_get_last_error(nullptr);
    return run;
  }
  std::vector<std::string> failures(n), algorithms(n);
  std::vector<std::vector<uint64_t>> hashes(n, std::vector<uint64_t>(options.calls, 0));
  run.errors.assign(options.calls, 0.0);
  std::vector<double> outputSum(options.sameData ? options.count : 0, 0.0);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      cc_config_t config = CC_CONFIG_INITIALIZER;
      config.codec = codec.c_str();
      config.algo = algo.c_str();
      config.master_codec = algo != "ring" && algo != "tree" && !master.empty() ? master.c_str() : nullptr;
      config.switch_addr = algo == "switch" ? switchAddress.c_str() : nullptr;
      config.transport = "local";
      config.has_seed = 1;
      config.seed = options.seed;
      cc_comm_t comm = nullptr;
      if (cc_comm_init_rank(&comm, n, id, rank, &config) != CC_SUCCESS) {
        failures[rank] = cc_get_last_error(nullptr);
        return;
      }
      std::vector<float> out(options.count);
      for (int c = 0; c < options.calls; ++c) {
        const int data = options.sameData ? 0 : c;
        if (compressed_allreduce(inputs.values[data][rank].data(), out.data(), options.count, CC_FLOAT32, CC_SUM,
                                 comm, nullptr) != CC_SUCCESS) {
          failures[rank] = cc_get_last_error(comm);
          break;
        }
        hashes[rank][c] = hashOf(out);
        if (rank == 0) {
          double error = 0;
          const std::vector<double>& exact = inputs.exact[data];
          for (size_t i = 0; i < options.count; ++i) {
            const double d = out[i] - exact[i];
            error += d * d;
          }
          run.errors[c] = std::sqrt(error / inputs.exactNorm[data]);
          for (size_t i = 0; i < outputSum.size(); ++i) outputSum[i] += out[i];
        }
      }
      algorithms[rank] = comm->lastAlgorithm;
      if (!failures[rank].empty()) {
        cc_comm_abort(comm);
      } else {
        cc_comm_destroy(comm);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int rank = 0; rank < n; ++rank) {
    if (!failures[rank].empty()) {
      run.failure = "rank " + std::to_string(rank) + ": " + failures[rank];
      return run;
    }
    if (hashes[rank] != hashes[0]) run.identical = false;
  }
  run.algorithm = algorithms[0];
  if (options.sameData) {
    double error = 0;
    for (size_t i = 0; i < options.count; ++i) {
      const double d = outputSum[i] / options.calls - inputs.exact[0][i];
      error += d * d;
    }
    run.meanError = std::sqrt(error / inputs.exactNorm[0]);
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  if (!std::getenv("CC_SOCKET_IFNAME")) setenv("CC_SOCKET_IFNAME", "lo", 1);
  const auto start = std::chrono::steady_clock::now();

  // Every codec's omega, and the master codec's (direct) when one is given.
  const std::vector<float> probe = gaussian(options.count, options.seed, 0, 0);
  std::vector<CodecInfo> codecs;
  for (const std::string& text : options.codecs) {
    codecs.push_back(codecInfo(text, options.count));
    measureOmega(codecs.back(), probe, options.seed, options.omegaDraws);
  }
  CodecInfo master;
  if (!options.master.empty()) {
    master = codecInfo(options.master, options.count);
    measureOmega(master, probe, options.seed, options.omegaDraws);
  }

  std::printf("# cc_algo_accuracy: float32 SUM of %zu i.i.d. N(0,1) values per rank, %d calls each (fresh data "
              "and draws), local transport, seed %llu\n",
              options.count, options.calls, static_cast<unsigned long long>(options.seed));
  for (const CodecInfo& info : codecs) {
    std::printf("# omega %-28s theory %.4f (d = %zu), measured %.4f +- %.4f (%d encodes of one rank's data)\n",
                info.text.c_str(), info.omegaTheory, cc::scopeValues(info.spec, options.count),
                info.omegaMeasured, info.omegaMeasuredSd, options.omegaDraws);
  }
  if (!options.master.empty()) {
    std::printf("# master codec of direct: %s, omega theory %.4f, measured %.4f\n", master.text.c_str(),
                master.omegaTheory, master.omegaMeasured);
  }
  // switch: a daemon of our own on loopback.
  std::unique_ptr<cc::switchd::Daemon> daemon;
  std::thread daemonLoop;
  std::string switchAddress;
  if (std::find(options.algos.begin(), options.algos.end(), "switch") != options.algos.end()) {
    cc::switchd::Options daemonOptions;
    daemonOptions.listen = "127.0.0.1:0";
    daemonOptions.quiet = true;
    daemon = std::make_unique<cc::switchd::Daemon>(daemonOptions);
    if (daemon->start() != CC_SUCCESS) {
      std::fprintf(stderr, "cc_algo_accuracy: cc_switchd: %s\n", cc::lastErrorMessage().c_str());
      return 2;
    }
    switchAddress = daemon->address();
    daemonLoop = std::thread([&] { daemon->run(); });
  }
  std::printf("# %3s %-7s %-26s %3s %10s %9s %10s %10s %9s %5s %7s%s\n", "n", "algo", "codec", "enc", "rel.err",
              "sd", "bound", "pred", "meas/pred", "same", "s", options.sameData ? "   mean.err" : "");

  std::FILE* csv = nullptr;
  if (!options.csvPath.empty()) {
    csv = std::fopen(options.csvPath.c_str(), "w");
    if (!csv) {
      std::fprintf(stderr, "cc_algo_accuracy: cannot write %s\n", options.csvPath.c_str());
      return 2;
    }
    std::fprintf(csv,
                 "n,algo,codec,master_codec,count,calls,encodes_on_path,rel_err_mean,rel_err_sd,rel_err_min,"
                 "rel_err_max,bound,omega_theory,predicted,omega_measured,master_omega_theory,"
                 "master_omega_measured,identical,seconds\n");
  }

  int status = 0;
  for (int n : options.ranks) {
    const Inputs inputs = makeInputs(n, options);
    for (const CodecInfo& info : codecs) {
      for (const std::string& algo : options.algos) {
        const bool ownMaster = (algo == "direct" || algo == "switch") && !options.master.empty();
        const double masterTheory = ownMaster ? master.omegaTheory : info.omegaTheory;
        const double masterMeasured = ownMaster ? master.omegaMeasured : info.omegaMeasured;
        const Run run = runOne(n, algo, info.text, ownMaster ? options.master : "", options, inputs, switchAddress);
        if (!run.failure.empty()) {
          std::printf("  %3d %-7s %-26s failed: %s\n", n, algo.c_str(), info.text.c_str(), run.failure.c_str());
          status = 1;
          continue;
        }
        double mean = 0, sq = 0;
        for (double e : run.errors) mean += e / run.errors.size();
        for (double e : run.errors) sq += (e - mean) * (e - mean);
        const double sd = run.errors.size() > 1 ? std::sqrt(sq / (run.errors.size() - 1)) : 0;
        const double lo = *std::min_element(run.errors.begin(), run.errors.end());
        const double hi = *std::max_element(run.errors.begin(), run.errors.end());
        const double bound = relativeError(algo, info.omegaTheory, masterTheory, n);
        const double predicted = relativeError(algo, info.omegaMeasured, masterMeasured, n);
        const bool above = mean > bound;
        const bool wrongAlgo = run.algorithm != algo;
        if (above || wrongAlgo || !run.identical) status = 1;
        const std::string label = ownMaster ? info.text + "/" + options.master : info.text;
        char meanError[32] = "";
        if (run.meanError >= 0) std::snprintf(meanError, sizeof(meanError), " %10.5f", run.meanError);
        std::printf("  %3d %-7s %-26s %3d %10.5f %9.5f %10.4g %10.5f %9.3f %5s %7.2f%s%s%s\n", n, algo.c_str(),
                    label.c_str(), encodesOnPath(algo, n), mean, sd, bound, predicted, mean / predicted,
                    run.identical ? "yes" : "NO", run.seconds, meanError, above ? "  ABOVE BOUND" : "",
                    wrongAlgo ? ("  ran " + run.algorithm).c_str() : "");
        std::fflush(stdout);
        if (csv) {
          std::fprintf(csv, "%d,%s,\"%s\",\"%s\",%zu,%d,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.3f\n",
                       n, algo.c_str(), info.text.c_str(), algo == "direct" ? (ownMaster ? options.master.c_str()
                                                                                         : info.text.c_str())
                                                                            : "",
                       options.count, options.calls, encodesOnPath(algo, n), mean, sd, lo, hi, bound,
                       info.omegaTheory, predicted, info.omegaMeasured, algo == "direct" ? masterTheory : 0.0,
                       algo == "direct" ? masterMeasured : 0.0, run.identical ? 1 : 0, run.seconds);
          std::fflush(csv);
        }
      }
    }
  }
  if (csv) std::fclose(csv);
  if (daemon) {
    daemon->stop();
    daemonLoop.join();
  }
  std::printf("# enc: encodes per value on the longest path (ring n, direct 2, tree: depth of the deeper tree);\n"
              "# rel.err, sd: mean and standard deviation over the calls of ||out - exact|| / ||exact|| (rank 0);\n"
              "# bound: the error model with REFERENCE's omega; pred: the same model with the measured omega;\n"
              "# same: every rank bit-identical on every call; s: wall seconds of the row (init included).\n");
  std::printf("# total %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return status;
}
