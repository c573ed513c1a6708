// cc_allreduce_perf: compressed allreduce benchmark in the style of
// nccl-tests' all_reduce_perf, with the codec, bytes on the wire per value,
// relative error against the exact sum, and the speedup against the exact
// path (codec none) measured in the same run.
//
//   cc_allreduce_perf --ranks 4 -b 1K -e 64M -f 4          # 4 local processes over Gloo TCP
//   CC_RANK=r CC_NRANKS=n CC_COMM_ID=host:port cc_allreduce_perf ...   # one rank under a launcher
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "compressedcoll.h"

namespace {

struct Options {
  int ranks = 4;
  size_t minBytes = 1 << 10;
  size_t maxBytes = 64 << 20;
  double factor = 4;
  int iters = 10;
  int warmup = 3;
  std::vector<std::string> codecs = {"nat", "none"};
  std::string algo = "ring";
  std::string transport = "tcp";
  bool check = true;
};

[[noreturn]] void usage(const char* message) {
  if (message) std::fprintf(stderr, "cc_allreduce_perf: %s\n", message);
  std::fprintf(stderr,
               "usage: cc_allreduce_perf [--ranks N] [-b MINBYTES] [-e MAXBYTES] [-f FACTOR]\n"
               "         [-n ITERS] [-w WARMUP] [--codec nat,none] [--algo ring] [--transport tcp|local]\n"
               "         [--no-check]\n"
               "Sizes take K, M, G suffixes. Under a launcher (CC_RANK/CC_NRANKS/CC_COMM_ID, or\n"
               "OMPI_COMM_WORLD_RANK/SIZE, or SLURM_PROCID/NTASKS with CC_COMM_ID) it joins as one\n"
               "rank; its k communicators use CC_COMM_ID's port, port+1, ... port+k-1.\n");
  std::exit(2);
}

size_t parseBytes(const char* text) {
  char* end = nullptr;
  double value = std::strtod(text, &end);
  if (end == text || value < 0) usage("bad size");
  switch (*end) {
    case 'k': case 'K': value *= 1024; break;
    case 'm': case 'M': value *= 1024 * 1024; break;
    case 'g': case 'G': value *= 1024.0 * 1024 * 1024; break;
    case '\0': break;
    default: usage("bad size suffix");
  }
  return static_cast<size_t>(value);
}

std::vector<std::string> splitComma(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) parts.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

Options parseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--ranks") options.ranks = std::atoi(value());
    else if (arg == "-b" || arg == "--minbytes") options.minBytes = parseBytes(value());
    else if (arg == "-e" || arg == "--maxbytes") options.maxBytes = parseBytes(value());
    else if (arg == "-f" || arg == "--stepfactor") options.factor = std::atof(value());
    else if (arg == "-n" || arg == "--iters") options.iters = std::atoi(value());
    else if (arg == "-w" || arg == "--warmup_iters") options.warmup = std::atoi(value());
    else if (arg == "--codec") options.codecs = splitComma(value());
    else if (arg == "--algo") options.algo = value();
    else if (arg == "--transport") options.transport = value();
    else if (arg == "--no-check") options.check = false;
    else if (arg == "-h" || arg == "--help") usage(nullptr);
    else usage(("unknown option " + arg).c_str());
  }
  if (options.ranks < 1 || options.factor <= 1 || options.iters < 1 || options.warmup < 0 ||
      options.minBytes > options.maxBytes || options.codecs.empty()) {
    usage("inconsistent options");
  }
  return options;
}

void fail(const char* what, cc_comm_t comm) {
  std::fprintf(stderr, "cc_allreduce_perf: %s: %s\n", what, cc_get_last_error(comm));
  std::exit(1);
}

std::vector<float> makeInput(size_t count, int rank) {
  std::mt19937_64 generator(0x5eedull + static_cast<uint64_t>(rank) * 7919);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (auto& value : values) value = normal(generator);
  return values;
}

double maxOverRanks(double value, cc_comm_t comm) {
  double result = value;
  if (compressed_allreduce(&value, &result, 1, CC_FLOAT64, CC_MAX, comm, nullptr) != CC_SUCCESS) {
    fail("timing reduction", comm);
  }
  return result;
}

struct Row {
  double seconds = 0;
  double relativeError = -1;
};

Row measure(cc_comm_t comm, int rank, int nranks, size_t count, const Options& options) {
  std::vector<float> input = makeInput(count, rank), output(count);
  for (int i = 0; i < options.warmup; ++i) {
    if (compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr) != CC_SUCCESS) {
      fail("compressed_allreduce", comm);
    }
  }
  maxOverRanks(0.0, comm);  // line the ranks up before timing
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < options.iters; ++i) {
    if (compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr) != CC_SUCCESS) {
      fail("compressed_allreduce", comm);
    }
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Row row;
  row.seconds = maxOverRanks(elapsed / options.iters, comm);
  if (options.check && rank == 0) {
    std::vector<double> exact(count, 0.0);
    for (int r = 0; r < nranks; ++r) {
      std::vector<float> other = makeInput(count, r);
      for (size_t i = 0; i < count; ++i) exact[i] += other[i];
    }
    double diff = 0, norm = 0;
    for (size_t i = 0; i < count; ++i) {
      diff += (output[i] - exact[i]) * (output[i] - exact[i]);
      norm += exact[i] * exact[i];
    }
    row.relativeError = norm > 0 ? std::sqrt(diff / norm) : 0;
  }
  return row;
}

struct Launch {
  int rank;
  int nranks;
  std::vector<cc_unique_id_t> ids;  // one per codec
};

void runRank(const Launch& launch, const Options& options) {
  const int rank = launch.rank, nranks = launch.nranks;
  std::vector<cc_comm_t> comms;
  for (size_t c = 0; c < options.codecs.size(); ++c) {
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.codec = options.codecs[c].c_str();
    config.algo = options.algo.c_str();
    config.transport = options.transport.c_str();
    cc_comm_t comm = nullptr;
    if (cc_comm_init_rank(&comm, nranks, launch.ids[c], rank, &config) != CC_SUCCESS) {
      fail("cc_comm_init_rank", nullptr);
    }
    comms.push_back(comm);
  }
  // Speedups are against codec none when it is in the run.
  int baseline = -1;
  for (size_t c = 0; c < options.codecs.size(); ++c) {
    if (options.codecs[c] == "none") baseline = static_cast<int>(c);
  }
  if (rank == 0) {
    std::printf("# cc_allreduce_perf: %d ranks, transport %s, algorithm %s, nat implementation %s\n",
                nranks, options.transport.c_str(), options.algo.c_str(), cc::natImplementationName());
    std::printf("# %12s %12s %8s %6s %6s %6s %12s %10s %10s %9s %10s %8s\n", "size(B)", "count",
                "type", "redop", "codec", "algo", "time(us)", "algbw", "busbw", "wire B/v",
                "rel.err", "speedup");
    std::printf("# %12s %12s %8s %6s %6s %6s %12s %10s %10s %9s %10s %8s\n", "", "", "", "", "",
                "", "", "(GB/s)", "(GB/s)", "", "", "vs none");
  }
  for (size_t bytes = options.minBytes; bytes <= options.maxBytes;
       bytes = std::max(bytes + 1, static_cast<size_t>(bytes * options.factor))) {
    const size_t count = std::max<size_t>(1, bytes / sizeof(float));
    std::vector<Row> rows;
    for (cc_comm_t comm : comms) rows.push_back(measure(comm, rank, nranks, count, options));
    if (rank != 0) continue;
    for (size_t c = 0; c < comms.size(); ++c) {
      cc::CodecId codecId = cc::CodecId::None;
      cc::parseCodecName(options.codecs[c], &codecId);  // validated by cc_comm_init_rank
      auto codec = cc::makeCodec(codecId, CC_FLOAT32, CC_SUM);
      const double algbw = count * sizeof(float) / rows[c].seconds / 1e9;
      const double busbw = algbw * 2.0 * (nranks - 1) / nranks;
      const double wire = static_cast<double>(codec->packedBytes(count)) / count;
      char error[32] = "-", speedup[32] = "-";
      if (rows[c].relativeError >= 0) std::snprintf(error, sizeof(error), "%.3e", rows[c].relativeError);
      if (baseline >= 0) std::snprintf(speedup, sizeof(speedup), "%.2fx", rows[baseline].seconds / rows[c].seconds);
      std::printf("  %12zu %12zu %8s %6s %6s %6s %12.1f %10.3f %10.3f %9.3f %10s %8s\n",
                  count * sizeof(float), count, "float", "sum", options.codecs[c].c_str(),
                  options.algo.c_str(), rows[c].seconds * 1e6, algbw, busbw, wire, error, speedup);
    }
    std::fflush(stdout);
  }
  for (cc_comm_t comm : comms) cc_comm_destroy(comm);
}

// Rank and size from our variables, OpenMPI's or Slurm's; -1 when absent.
bool launcherRank(int* rank, int* nranks) {
  const char* pairs[][2] = {{"CC_RANK", "CC_NRANKS"},
                            {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                            {"PMI_RANK", "PMI_SIZE"},
                            {"SLURM_PROCID", "SLURM_NTASKS"}};
  for (auto& pair : pairs) {
    const char* r = std::getenv(pair[0]);
    const char* n = std::getenv(pair[1]);
    if (r && n) {
      *rank = std::atoi(r);
      *nranks = std::atoi(n);
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parseOptions(argc, argv);
  Launch launch;
  if (launcherRank(&launch.rank, &launch.nranks)) {
    const char* commId = std::getenv("CC_COMM_ID");
    if (!commId) usage("under a launcher CC_COMM_ID=host:port must name rank 0's address");
    std::string text = commId;
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) usage("CC_COMM_ID must be host:port");
    int port = std::atoi(text.c_str() + colon + 1);
    for (size_t c = 0; c < options.codecs.size(); ++c) {
      std::string id = text.substr(0, colon + 1) + std::to_string(port + static_cast<int>(c));
      setenv("CC_COMM_ID", id.c_str(), 1);
      cc_unique_id_t uniqueId;
      if (cc_get_unique_id(&uniqueId) != CC_SUCCESS) fail("cc_get_unique_id", nullptr);
      launch.ids.push_back(uniqueId);
    }
    setenv("CC_COMM_ID", commId, 1);
    runRank(launch, options);
    return 0;
  }
  // Default: this process serves the bootstrap and forks one process per rank.
  // All ranks are on this host, so they meet on loopback.
  setenv("CC_SOCKET_IFNAME", "lo", 0);
  launch.nranks = options.ranks;
  for (size_t c = 0; c < options.codecs.size(); ++c) {
    cc_unique_id_t uniqueId;
    if (cc_get_unique_id(&uniqueId) != CC_SUCCESS) fail("cc_get_unique_id", nullptr);
    launch.ids.push_back(uniqueId);
  }
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (int rank = 0; rank < options.ranks; ++rank) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      return 1;
    }
    if (pid == 0) {
      launch.rank = rank;
      runRank(launch, options);
      std::fflush(stdout);
      _exit(0);
    }
    children.push_back(pid);
  }
  int exitCode = 0;
  for (pid_t child : children) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) exitCode = 1;
  }
  return exitCode;
}
