// cc_allreduce_perf: compressed allreduce benchmark in the style of
// nccl-tests' all_reduce_perf. In one run it measures the engine's own
// uncompressed allreduce (gloo::allreduce on host memory), our exact path
// (codec none) and each requested codec, and prints the nccl-tests columns
// plus the codec, bytes on the wire per value, the relative error against the
// exact sum and the speedups against both baselines.
//
//   cc_allreduce_perf --ranks 4 -b 1K -e 64M -f 4                # 4 local processes over Gloo TCP
//   cc_allreduce_perf --cluster 4 --link 1gbit -b 64M -e 64M      # 4 emulated hosts (perf/cluster.sh)
//   CC_RANK=r CC_NRANKS=n CC_COMM_ID=host:port cc_allreduce_perf  # one rank under a launcher
#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "api/config.h"
#include "codec/codec.h"
#include "codec/spec.h"
#include "comm/comm.h"
#include "comm/bootstrap.h"
#include "compressedcoll.h"
#include "transports/gloo/gloo_context.h"
#include "perf/perf_text.h"

#ifndef CC_SOURCE_DIR
#define CC_SOURCE_DIR "."
#endif

namespace {

constexpr const char* kGlooBaseline = "gloo";

struct Options {
  int ranks = 4;
  size_t minBytes = 1 << 10;
  size_t maxBytes = 64 << 20;
  double factor = 4;
  int iters = 10;
  int warmup = 3;
  int rounds = 1;           // --rounds: every engine measured this many times, turn by turn
  enum class RoundStat { Min, Median, Trimmed };
  RoundStat stat = RoundStat::Min;  // --stat: which of an engine's rounds is reported
  double minSeconds = 0;    // --min-time: short sizes repeat until a timing spans this long
  std::vector<std::string> codecs = {"nat", "none"};
  std::vector<std::string> algos = {"auto"};
  std::string transport = "tcp";
  bool check = true;
  bool verify = false;
  bool glooBaseline = true;
  // Algorithms of one codec share one communicator unless --comm-per-algo.
  bool commPerAlgo = false;
  std::string jsonPath;
  int clusterHosts = 0;
  std::string link = "1gbit", delay, loss, mtu;
  // switch rows (docs/switch-protocol.md): codecs nat and none on CC_ALGO=switch
  // against a cc_switchd; --switch-loss P: the daemon's loss injection, each way.
  bool switchRows = false;
  std::string switchLoss;
  // --ef: compressing engines keep an error-feedback residual across calls.
  bool errorFeedback = false;
};

[[noreturn]] void usage(const char* message) {
  if (message) std::fprintf(stderr, "cc_allreduce_perf: %s\n", message);
  std::fprintf(stderr,
               "usage: cc_allreduce_perf [--ranks N | --cluster N --link RATE [--delay D] [--loss P]]\n"
               "         [--mtu BYTES] [--switch [--switch-loss P]]\n"
               "         [-b MINBYTES] [-e MAXBYTES] [-f FACTOR] [-n ITERS] [-w WARMUP] [--rounds R] [--min-time S]\n"
               "         [--stat min|median|trimmed]\n"
               "         [--codec 'nat;none;qsgd:s=16;topk:ratio=0.01+nat'] [--algo 'ring;direct;tree;auto']\n"
               "         [--transport tcp|ibverbs]\n"
               "         [--no-gloo] [--no-check] [--verify] [--json FILE] [--comm-per-algo] [--ef]\n"
               "Sizes take K, M, G suffixes. --ranks N forks N local processes over loopback;\n"
               "--cluster N runs N emulated hosts with shaped links (perf/cluster.sh, needs root).\n"
               "--switch adds rows of algorithm switch for codecs nat (nat down, and int32 down:\n"
               "switch-i32) and none (int32): with --cluster a cc_switchd runs on the bridge's address,\n"
               "--switch-loss P drops P%% of its packets each way; else CC_SWITCH_ADDR names a daemon.\n"
               "Under a launcher (CC_RANK/CC_NRANKS/CC_COMM_ID, or OMPI_COMM_WORLD_RANK/SIZE,\n"
               "PMI_RANK/SIZE, SLURM_PROCID/NTASKS with CC_COMM_ID and CC_COMM_SECRET) it joins as one rank; its\n"
               "communicators use CC_COMM_ID's port, port+1, ...\n"
               "--verify exits non-zero unless every rank ends bit-identical and the error is\n"
               "within the codec's bound.\n"
               "Engines take turns for --rounds rounds; --stat picks each one's fastest round (min,\n"
               "the default), its median round, or the mean of its rounds without the slowest and\n"
               "fastest eighths (trimmed). Several --algo values share one communicator per\n"
               "codec, each call forcing its algorithm; --comm-per-algo gives each algorithm a\n"
               "communicator of its own. Algorithm auto+check is auto with CC_CHECK_CALLS=1; the\n"
               "tool sets CC_CHECK_CALLS itself, so plain auto runs without the check. auto's trials\n"
               "(its first calls of a size) run after the first warm-up call, before timing.\n"
               "--ef gives every compressing engine an error-feedback residual (compressed_allreduce_ex),\n"
               "kept across its calls of a size as a training job keeps one per tensor; --verify\n"
               "then allows three times the codec's error, the residual carrying the last call's.\n");
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

// Specs are separated by ';' (a spec's own parameters use ','); a list of
// plain names may also use ',' ("nat,none").
std::vector<std::string> splitCodecs(const std::string& text) {
  if (text.find(';') != std::string::npos || text.find(':') != std::string::npos) return ccperf::splitOn(text, ';');
  return ccperf::splitOn(text, ',');
}

// Bytes on the wire per value of one rank's contribution.
double wireBytesPerValue(const std::string& engine, size_t count) {
  cc::CodecSpec spec;
  if (engine == kGlooBaseline || cc::parseCodecSpec(engine, &spec) != CC_SUCCESS) return 4.0;
  if (spec.selector == cc::Selector::TopK) {
    const size_t offsets[2] = {0, count};
    return static_cast<double>(cc::makeVectorCodec(spec)->encodedBytes(cc::TensorLayout{count, offsets, 1})) / count;
  }
  const auto codec = cc::makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
  if (spec.selector == cc::Selector::RandK) {
    const size_t kept = static_cast<size_t>(spec.ratio * static_cast<double>(count));
    return static_cast<double>(codec->packedBytes(kept)) / count;
  }
  return static_cast<double>(codec->packedBytes(count)) / count;
}

// Parses argv; the cluster options are removed from `forwarded`, which is
// what each emulated host runs.
Options parseOptions(int argc, char** argv, std::vector<std::string>* forwarded) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const int optionStart = i;
    std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    bool clusterOption = true;
    if (arg == "--cluster") options.clusterHosts = std::atoi(value());
    else if (arg == "--link") options.link = value();
    else if (arg == "--delay") options.delay = value();
    else if (arg == "--loss") options.loss = value();
    else if (arg == "--switch-loss") options.switchLoss = value();
    else if (arg == "--mtu") options.mtu = value();
    else {
      clusterOption = false;
      if (arg == "--ranks") options.ranks = std::atoi(value());
      else if (arg == "-b" || arg == "--minbytes") options.minBytes = parseBytes(value());
      else if (arg == "-e" || arg == "--maxbytes") options.maxBytes = parseBytes(value());
      else if (arg == "-f" || arg == "--stepfactor") options.factor = std::atof(value());
      else if (arg == "-n" || arg == "--iters") options.iters = std::atoi(value());
      else if (arg == "-w" || arg == "--warmup_iters") options.warmup = std::atoi(value());
      else if (arg == "--rounds") options.rounds = std::max(1, std::atoi(value()));
      else if (arg == "--stat") {
        const std::string stat = value();
        if (stat != "min" && stat != "median" && stat != "trimmed") usage("--stat takes min, median or trimmed");
        options.stat = stat == "median"    ? Options::RoundStat::Median
                       : stat == "trimmed" ? Options::RoundStat::Trimmed
                                           : Options::RoundStat::Min;
      }
      else if (arg == "--min-time") options.minSeconds = std::atof(value());
      else if (arg == "--codec") options.codecs = splitCodecs(value());
      else if (arg == "--algo") {
        const std::string text = value();
        options.algos = ccperf::splitOn(text, text.find(';') != std::string::npos ? ';' : ',');
      }
      else if (arg == "--transport") options.transport = value();
      else if (arg == "--no-check") options.check = false;
      else if (arg == "--verify") options.verify = true;
      else if (arg == "--no-gloo") options.glooBaseline = false;
      else if (arg == "--comm-per-algo") options.commPerAlgo = true;
      else if (arg == "--ef") options.errorFeedback = true;
      else if (arg == "--switch") options.switchRows = true;
      else if (arg == "--json") options.jsonPath = value();
      else if (arg == "-h" || arg == "--help") usage(nullptr);
      else usage(("unknown option " + arg).c_str());
    }
    if (!clusterOption) {
      // Keep this option and its value (if it took one) for the hosts.
      for (int k = optionStart; k <= i; ++k) forwarded->push_back(argv[k]);
    }
  }
  if (options.ranks < 1 || options.factor <= 1 || options.iters < 1 || options.warmup < 0 ||
      options.minBytes > options.maxBytes || options.codecs.empty() || options.clusterHosts < 0) {
    usage("inconsistent options");
  }
  if (options.verify) options.check = true;
  if (!options.switchLoss.empty() && !options.switchRows) usage("--switch-loss goes with --switch");
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

uint64_t fnv64(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

// One allreduce implementation under test.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual void run(const float* input, float* output, size_t count) = 0;
  // auto's trials (docs/algorithms.md, "Trials"): whether the last call's
  // kind is still in them, and how many calls were trials so far; the same
  // on every rank.
  virtual bool trialsPending() const { return false; }
  virtual uint64_t trialCalls() const { return 0; }
  // auto's watch once settled (docs/algorithms.md, "Watch"): challenges
  // decided so far, those the runner-up won, and the calls it ran in them.
  struct Watch {
    uint64_t challenges = 0, switches = 0, challengeCalls = 0;
  };
  virtual Watch watch() const { return {}; }
  std::string name;  // codec name, or "gloo" for the baseline
  std::string requestedAlgo;  // what the communicator was configured with
};

bool isAuto(const std::string& algo) { return algo.compare(0, 4, "auto") == 0; }

// A communicator, destroyed with the last engine that runs on it.
using SharedComm = std::shared_ptr<cc_comm>;

class CompressedEngine : public Engine {
 public:
  // `forced`: the algorithm each call forces on a communicator that several
  // engines share (opened with auto); Auto runs auto's own choice.
  CompressedEngine(SharedComm comm, bool shared, cc::AlgoId forced, bool checkCalls)
      : comm_(std::move(comm)), shared_(shared), forced_(forced), checkCalls_(checkCalls) {}
  ~CompressedEngine() override {
    if (residual_ != nullptr) cc_residual_destroy(residual_);
  }
  CompressedEngine(const CompressedEngine&) = delete;
  CompressedEngine& operator=(const CompressedEngine&) = delete;
  void enableErrorFeedback() { errorFeedback_ = true; }
  // Which algorithm this engine's last call ran (auto picks per spec).
  const std::string& algorithm() const { return ran_; }
  // Whether auto sent the last call on the exact path (too small to pay).
  bool exact() const { return exact_; }
  bool trialsPending() const override { return comm_->autoTrialsPending; }
  uint64_t trialCalls() const override { return comm_->autoTrialCalls; }
  Watch watch() const override { return {comm_->autoChallenges, comm_->autoSwitches, comm_->autoChallengeCalls}; }
  void run(const float* input, float* output, size_t count) override {
    if (shared_ && cc::commForceAlgorithm(comm_.get(), forced_, checkCalls_) != CC_SUCCESS) {
      fail(("forcing algorithm " + requestedAlgo).c_str(), comm_.get());
    }
    if (errorFeedback_ && residualCount_ != count) {
      // One residual per size, as a job keeps one per tensor.
      if (residual_ != nullptr) cc_residual_destroy(residual_);
      residual_ = nullptr;
      if (cc_residual_create(&residual_, count, CC_FLOAT32) != CC_SUCCESS) fail("cc_residual_create", nullptr);
      residualCount_ = count;
    }
    if (compressed_allreduce_ex(input, output, count, CC_FLOAT32, CC_SUM, comm_.get(), nullptr, nullptr,
                                residual_) != CC_SUCCESS) {
      fail(("compressed_allreduce (codec " + name + ")").c_str(), comm_.get());
    }
    ran_ = comm_->lastAlgorithm;
    exact_ = comm_->lastCallExact;
  }

 private:
  SharedComm comm_;
  bool shared_;
  cc::AlgoId forced_;
  bool checkCalls_;
  std::string ran_;
  bool exact_ = false;
  bool errorFeedback_ = false;
  cc_residual_t residual_ = nullptr;
  size_t residualCount_ = 0;
};

// gloo::allreduce on host memory: what a Gloo user runs today.
class GlooEngine : public Engine {
 public:
  explicit GlooEngine(std::shared_ptr<gloo::rendezvous::Context> context)
      : context_(std::move(context)) {}
  void run(const float* input, float* output, size_t count) override {
    gloo::AllreduceOptions options(context_);
    options.setInput(const_cast<float*>(input), count);
    options.setOutput(output, count);
    options.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    options.setTag(tag_++);
    try {
      gloo::allreduce(options);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "cc_allreduce_perf: gloo::allreduce: %s\n", error.what());
      std::exit(1);
    }
  }

 private:
  std::shared_ptr<gloo::rendezvous::Context> context_;
  uint32_t tag_ = 0;
};

struct Launch {
  int rank = 0;
  int nranks = 1;
  std::vector<cc_unique_id_t> ids;  // one per engine: the baseline first when measured
};

std::unique_ptr<Engine> connectGloo(const Launch& launch, const cc_unique_id_t& id,
                                    const Options& options) {
  cc::RootAddress root;
  std::unique_ptr<cc::StoreClient> store;
  if (cc::decodeUniqueId(id, &root) != CC_SUCCESS) fail("baseline id", nullptr);
  if (launch.rank == 0 && root.fromEnvironment && cc::serveStore(root) != CC_SUCCESS) {
    fail("serving the baseline's store", nullptr);
  }
  const int timeoutMs = 300000;
  if (cc::StoreClient::connect(root, launch.rank, launch.nranks, timeoutMs, &store) != CC_SUCCESS) {
    fail("joining the baseline's store", nullptr);
  }
  cc::TransportSetup setup;
  setup.rank = launch.rank;
  setup.nranks = launch.nranks;
  setup.timeoutMs = timeoutMs;
  setup.store = store.get();
  if (const char* ifname = std::getenv("CC_SOCKET_IFNAME")) setup.socketIfname = ifname;
  if (const char* device = std::getenv("CC_IB_DEVICE")) setup.ibDevice = device;
  std::shared_ptr<gloo::rendezvous::Context> context;
  std::shared_ptr<gloo::transport::Device> device;
  double linkGbps = 0;
  if (cc::connectGlooContext(setup, options.transport == "ibverbs", &context, &device, &linkGbps) != CC_SUCCESS) {
    fail("connecting the gloo::allreduce baseline", nullptr);
  }
  auto engine = std::make_unique<GlooEngine>(std::move(context));
  engine->name = kGlooBaseline;
  return engine;
}

constexpr const char* kCheckedSuffix = "+check";

struct SwitchRow {
  const char* label;
  const char* master;  // the downlink (nullptr: the codec's own)
};

std::vector<SwitchRow> switchRowsFor(const std::string& codec, const Options& options) {
  if (!options.switchRows) return {};
  if (codec == "nat") return {{"switch", nullptr}, {"switch-i32", "none"}};
  if (codec == "none") return {{"switch", nullptr}};
  return {};
}

// The daemon: the one perf/cluster.sh started, else CC_SWITCH_ADDR.
std::string switchAddress() {
  const char* cluster = std::getenv("CC_CLUSTER_SWITCH_ADDR");
  if (cluster != nullptr && cluster[0] != '\0') return cluster;
  const char* address = std::getenv("CC_SWITCH_ADDR");
  if (address != nullptr && address[0] != '\0') return address;
  usage("--switch needs a cc_switchd: --cluster starts one, else set CC_SWITCH_ADDR=host:port");
}

SharedComm openComm(const Launch& launch, const cc_unique_id_t& id, const std::string& codec,
                    const std::string& algo, bool checkCalls, const Options& options) {
  // CC_CHECK_CALLS has no config field: the environment of this init decides.
  setenv("CC_CHECK_CALLS", checkCalls ? "1" : "0", 1);
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.codec = codec.c_str();
  config.algo = algo.c_str();
  config.transport = options.transport.c_str();
  cc_comm_t comm = nullptr;
  if (cc_comm_init_rank(&comm, launch.nranks, id, launch.rank, &config) != CC_SUCCESS) {
    fail("cc_comm_init_rank", nullptr);
  }
  return SharedComm(comm, cc_comm_destroy);
}

// The engines of one codec, one per algorithm. Sharing one communicator
// (opened with auto, whose channels every algorithm can use) puts every
// algorithm on the same connections, threads and buffers: on a shared
// machine two communicators running the same algorithm can differ by more
// than the algorithms do (docs/results.md), which would decide a comparison
// that should be about the algorithms.
void connectCodec(const Launch& launch, const cc_unique_id_t* ids, size_t* idIndex, const std::string& codec,
                  const Options& options, std::vector<std::unique_ptr<Engine>>* engines) {
  const bool share = !options.commPerAlgo && options.algos.size() > 1;
  cc::CodecSpec spec;
  const bool errorFeedback = options.errorFeedback && cc::parseCodecSpec(codec, &spec) == CC_SUCCESS &&
                             cc::specCompresses(spec, CC_FLOAT32, CC_SUM);
  auto checked = [](const std::string& algo) {
    return algo.size() > std::strlen(kCheckedSuffix) &&
           algo.compare(algo.size() - std::strlen(kCheckedSuffix), std::string::npos, kCheckedSuffix) == 0;
  };
  SharedComm shared;
  if (share) {
    bool anyChecked = false;
    for (const auto& algo : options.algos) anyChecked |= checked(algo);
    shared = openComm(launch, ids[(*idIndex)++], codec, "auto", anyChecked, options);
  }
  for (const auto& algo : options.algos) {
    const bool checkCalls = checked(algo);
    const std::string base = checkCalls ? algo.substr(0, algo.size() - std::strlen(kCheckedSuffix)) : algo;
    cc::AlgoId forced = cc::AlgoId::Auto;
    if (cc::parseAlgo(base.c_str(), "--algo", &forced) != CC_SUCCESS) fail("--algo", nullptr);
    if (checkCalls && forced != cc::AlgoId::Auto) usage("+check goes with auto only");
    SharedComm comm = share ? shared : openComm(launch, ids[(*idIndex)++], codec, base, checkCalls, options);
    auto engine = std::make_unique<CompressedEngine>(std::move(comm), share, forced, checkCalls);
    if (errorFeedback) engine->enableErrorFeedback();
    engine->name = codec;
    engine->requestedAlgo = algo;
    engines->push_back(std::move(engine));
  }
  // The switch on a communicator of its own (its address is a setting of
  // the communicator; the shared one stays without it, so auto there is
  // unchanged). nat goes down as nat and as int32; none is int32 both ways.
  for (const SwitchRow& row : switchRowsFor(codec, options)) {
    setenv("CC_CHECK_CALLS", "0", 1);
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.codec = codec.c_str();
    config.algo = "switch";
    config.master_codec = row.master;
    config.transport = options.transport.c_str();
    const std::string address = switchAddress();
    config.switch_addr = address.c_str();
    cc_comm_t comm = nullptr;
    if (cc_comm_init_rank(&comm, launch.nranks, ids[(*idIndex)++], launch.rank, &config) != CC_SUCCESS) {
      fail("cc_comm_init_rank (switch)", nullptr);
    }
    auto engine = std::make_unique<CompressedEngine>(SharedComm(comm, cc_comm_destroy), false, cc::AlgoId::Switch,
                                                     false);
    if (errorFeedback) engine->enableErrorFeedback();
    engine->name = codec;
    engine->requestedAlgo = row.label;
    engines->push_back(std::move(engine));
  }
}

struct Measurement {
  double seconds = 0;
  double relativeError = -1;
  size_t nonFiniteValues = 0;  // in rank 0's result, where the input had none
  bool identical = true;
  int trialCalls = 0;  // auto's trial calls run before timing
  Engine::Watch watch;  // auto's challenges during the round (warm-up included)
};

// The last engine is ours, so it can reduce timings and hashes across ranks.
struct Reducer {
  cc_comm_t comm;
  double maxOf(double value) const {
    double result = value;
    if (compressed_allreduce(&value, &result, 1, CC_FLOAT64, CC_MAX, comm, nullptr) != CC_SUCCESS) {
      fail("reducing timings", comm);
    }
    return result;
  }
  bool sameOnAllRanks(uint64_t value) const {
    uint64_t low = value, high = value;
    if (compressed_allreduce(&value, &low, 1, CC_UINT64, CC_MIN, comm, nullptr) != CC_SUCCESS ||
        compressed_allreduce(&value, &high, 1, CC_UINT64, CC_MAX, comm, nullptr) != CC_SUCCESS) {
      fail("comparing results", comm);
    }
    return low == high;
  }
};

Measurement measure(Engine& engine, const Reducer& reducer, const Launch& launch, size_t count,
                    const std::vector<double>& exact, const Options& options) {
  std::vector<float> input = makeInput(count, launch.rank), output(count);
  // auto's first calls of a size are its trials of the close algorithms
  // (docs/algorithms.md, "Trials"); after the first warm-up call they go on
  // here, before timing, so that the rounds measure what it settled on (a
  // call of 256 MiB makes few calls per round, and the trials would span
  // several rounds). How many calls were trials is reported.
  const uint64_t trialCallsBefore = engine.trialCalls();
  const Engine::Watch watchBefore = engine.watch();
  for (int i = 0; i < options.warmup || (i > 0 && engine.trialsPending()); ++i) {
    engine.run(input.data(), output.data(), count);
  }
  const int trialCalls = static_cast<int>(engine.trialCalls() - trialCallsBefore);
  // Short calls repeat until a timing spans at least options.minSeconds, so
  // one scheduling hiccup does not decide a small size; every rank agrees on
  // the count (the slowest rank's first call sets it).
  int iters = options.iters;
  if (options.minSeconds > 0) {
    reducer.maxOf(0.0);
    auto probeStart = std::chrono::steady_clock::now();
    engine.run(input.data(), output.data(), count);
    const double probe = reducer.maxOf(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - probeStart).count());
    iters = std::max(iters, std::min(2000, static_cast<int>(std::ceil(options.minSeconds / std::max(probe, 1e-6)))));
  }
  reducer.maxOf(0.0);  // line the ranks up before timing
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) engine.run(input.data(), output.data(), count);
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Measurement result;
  result.seconds = reducer.maxOf(elapsed / iters);
  result.trialCalls = trialCalls;
  const Engine::Watch watchAfter = engine.watch();
  result.watch = {watchAfter.challenges - watchBefore.challenges, watchAfter.switches - watchBefore.switches,
                  watchAfter.challengeCalls - watchBefore.challengeCalls};
  if (options.check) {
    result.identical = reducer.sameOnAllRanks(fnv64(output.data(), count * sizeof(float)));
    if (launch.rank == 0) {
      double diff = 0, norm = 0;
      for (size_t i = 0; i < count; ++i) result.nonFiniteValues += std::isfinite(output[i]) ? 0 : 1;
      for (size_t i = 0; i < count; ++i) {
        diff += (output[i] - exact[i]) * (output[i] - exact[i]);
        norm += exact[i] * exact[i];
      }
      result.relativeError = norm > 0 ? std::sqrt(diff / norm) : 0;
    }
  }
  return result;
}

// The error a correct implementation stays under: the exact paths only round,
// the nat ring encodes every value n times (docs/algorithms.md).
// Other codecs get a sanity bound here; their exact bounds are asserted by
// the unit and multi-process tests.
double errorBound(const std::string& engine, int nranks, size_t count) {
  cc::CodecSpec spec;
  if (engine == kGlooBaseline || cc::parseCodecSpec(engine, &spec) != CC_SUCCESS ||
      !cc::specCompresses(spec, CC_FLOAT32, CC_SUM)) {
    return 1e-5;
  }
  if (spec.canonical == "nat") {
    const double expected = std::sqrt(0.125 * (nranks + 1) / 2.0);
    return count >= 4096 ? expected : 2 * expected;  // few values: the sample error fluctuates
  }
  return spec.unbiased() ? 10.0 : 1.5;
}

std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& part : parts) out += (out.empty() ? "" : ",") + part;
  return out;
}

int runRank(const Launch& launch, const Options& options) {
  const int rank = launch.rank, nranks = launch.nranks;
  std::vector<std::unique_ptr<Engine>> engines;
  size_t idIndex = 0;
  if (options.glooBaseline) engines.push_back(connectGloo(launch, launch.ids[idIndex++], options));
  // Every algorithm runs each size side by side, so their ratios are taken
  // under the same load.
  for (const auto& codec : options.codecs) {
    connectCodec(launch, launch.ids.data(), &idIndex, codec, options, &engines);
  }
  Reducer reducer{nullptr};
  {
    // Timings and hashes are reduced over the last communicator (always ours).
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.codec = "none";
    config.algo = "ring";  // its calls are a few values: no cost model to measure at init
    config.transport = options.transport.c_str();
    setenv("CC_CHECK_CALLS", "0", 1);
    if (cc_comm_init_rank(&reducer.comm, nranks, launch.ids[idIndex], rank, &config) != CC_SUCCESS) {
      fail("cc_comm_init_rank (control)", nullptr);
    }
  }
  auto indexOf = [&](const char* name) {
    for (size_t e = 0; e < engines.size(); ++e) {
      if (engines[e]->name == name) return static_cast<int>(e);
    }
    return -1;
  };
  const int glooIndex = indexOf(kGlooBaseline), noneIndex = indexOf("none");
  const char* link = std::getenv("CC_CLUSTER_LINK");
  std::FILE* json = nullptr;
  if (rank == 0) {
    std::printf("# cc_allreduce_perf: %d ranks, transport %s, algorithm %s, nat implementation %s%s%s\n",
                nranks, options.transport.c_str(), joined(options.algos).c_str(), cc::natImplementationName(),
                link ? ", links " : "", link ? link : "");
    std::printf("# %12s %12s %6s %5s %6s %14s %11s %8s %8s %8s %9s %8s %8s\n", "size(B)", "count",
                "type", "redop", "engine", "algo", "time(us)", "algbw", "busbw", "wire", "rel.err",
                "speedup", "speedup");
    std::printf("# %12s %12s %6s %5s %6s %14s %11s %8s %8s %8s %9s %8s %8s\n", "", "", "", "", "",
                "", "", "(GB/s)", "(GB/s)", "(B/val)", "", "vs gloo", "vs none");
    if (!options.jsonPath.empty()) {
      json = std::fopen(options.jsonPath.c_str(), "w");
      if (!json) {
        std::perror(options.jsonPath.c_str());
        return 1;
      }
      std::fprintf(json, "[\n");
    }
  }
  bool verified = true, firstRow = true;
  size_t sizesDone = 0, sizesTotal = 0;
  for (size_t bytes = options.minBytes; bytes <= options.maxBytes;
       bytes = std::max(bytes + 1, static_cast<size_t>(bytes * options.factor))) {
    ++sizesTotal;
  }
  const auto runStart = std::chrono::steady_clock::now();
  for (size_t bytes = options.minBytes; bytes <= options.maxBytes;
       bytes = std::max(bytes + 1, static_cast<size_t>(bytes * options.factor))) {
    const size_t count = std::max<size_t>(1, bytes / sizeof(float));
    std::vector<double> exact;
    if (options.check && rank == 0) {
      exact.assign(count, 0.0);
      for (int r = 0; r < nranks; ++r) {
        std::vector<float> other = makeInput(count, r);
        for (size_t i = 0; i < count; ++i) exact[i] += other[i];
      }
    }
    // Engines take turns, round after round: a burst of load on this shared
    // machine hits one round of one engine, not a whole column. Each round
    // starts one engine later, so no engine always follows the same one (and
    // finds what it left on the links and in the caches). Each keeps its
    // fastest round, or with --stat its median round or trimmed mean. Where
    // round times are bimodal (calls of emulated hosts sharing 2 cores: a
    // scheduler slice or not), a median jumps between the modes from one
    // engine to the next, and a trimmed mean moves with their proportion.
    std::vector<Measurement> rows(engines.size());
    std::vector<std::vector<double>> roundSeconds(engines.size());
    std::vector<int> trialCalls(engines.size(), 0);
    std::vector<Engine::Watch> watches(engines.size());
    for (int round = 0; round < options.rounds; ++round) {
      for (size_t turn = 0; turn < engines.size(); ++turn) {
        const size_t e = (turn + static_cast<size_t>(round)) % engines.size();
        Measurement m = measure(*engines[e], reducer, launch, count, exact, options);
        roundSeconds[e].push_back(m.seconds);
        trialCalls[e] += m.trialCalls;
        watches[e].challenges += m.watch.challenges;
        watches[e].switches += m.watch.switches;
        watches[e].challengeCalls += m.watch.challengeCalls;
        if (round == 0 || m.seconds < rows[e].seconds) {
          const bool identical = round == 0 ? m.identical : rows[e].identical && m.identical;
          rows[e] = m;
          rows[e].identical = identical;
        }
      }
    }
    for (size_t e = 0; e < engines.size() && options.stat != Options::RoundStat::Min; ++e) {
      std::vector<double> times = roundSeconds[e];  // a sorted copy: auto's paired ratios need round order
      std::sort(times.begin(), times.end());
      if (options.stat == Options::RoundStat::Median) {
        const size_t middle = times.size() / 2;
        rows[e].seconds = times.size() % 2 ? times[middle] : 0.5 * (times[middle - 1] + times[middle]);
      } else {
        const size_t trimmed = times.size() / 8;
        rows[e].seconds = std::accumulate(times.begin() + trimmed, times.end() - trimmed, 0.0) /
                          static_cast<double>(times.size() - 2 * trimmed);
      }
    }
    ++sizesDone;
    if (rank != 0) continue;
    for (size_t e = 0; e < engines.size(); ++e) {
      const std::string& name = engines[e]->name;
      const auto* compressed = dynamic_cast<const CompressedEngine*>(engines[e].get());
      // A call auto sent on the exact path carried raw float32 values.
      const double wire = compressed && compressed->exact() ? wireBytesPerValue("none", count)
                                                            : wireBytesPerValue(name, count);
      const double algbw = count * sizeof(float) / rows[e].seconds / 1e9;
      const double busbw = algbw * 2.0 * (nranks - 1) / nranks;
      const double vsGloo = glooIndex >= 0 ? rows[glooIndex].seconds / rows[e].seconds : 0;
      int sameAlgoNone = noneIndex;
      for (size_t other = 0; other < engines.size(); ++other) {
        if (engines[other]->name == "none" && engines[other]->requestedAlgo == engines[e]->requestedAlgo) {
          sameAlgoNone = static_cast<int>(other);
        }
      }
      const double vsNone = sameAlgoNone >= 0 ? rows[sameAlgoNone].seconds / rows[e].seconds : 0;
      char error[32] = "-", gloo[32] = "-", none[32] = "-";
      if (rows[e].nonFiniteValues > 0) {
        std::snprintf(error, sizeof(error), "nonfinite");
      } else if (rows[e].relativeError >= 0) {
        std::snprintf(error, sizeof(error), "%.3e", rows[e].relativeError);
      }
      if (vsGloo > 0) std::snprintf(gloo, sizeof(gloo), "%.2fx", vsGloo);
      if (vsNone > 0) std::snprintf(none, sizeof(none), "%.2fx", vsNone);
      std::string algoName = compressed ? compressed->algorithm() : "gloo";
      if (compressed && engines[e]->requestedAlgo.compare(0, 6, "switch") == 0) algoName = engines[e]->requestedAlgo;
      if (compressed && isAuto(engines[e]->requestedAlgo)) algoName = engines[e]->requestedAlgo + ":" + algoName;
      if (compressed && compressed->exact()) algoName += ",exact";
      const char* algo = algoName.c_str();
      std::printf("  %12zu %12zu %6s %5s %6s %14s %11.1f %8.3f %8.3f %8.3f %9s %8s %8s\n",
                  count * sizeof(float), count, "float", "sum", name.c_str(), algo,
                  rows[e].seconds * 1e6, algbw, busbw, wire, error, gloo, none);
      if (options.verify) {
        const double bound = errorBound(name, nranks, count) * (options.errorFeedback ? 3 : 1);
        if (!rows[e].identical) {
          std::fprintf(stderr, "VERIFY FAILED: %s: ranks finished with different results at %zu values\n",
                       name.c_str(), count);
          verified = false;
        }
        if (rows[e].nonFiniteValues > 0) {
          std::fprintf(stderr, "VERIFY FAILED: %s: %zu non-finite values from finite inputs at %zu values\n",
                       name.c_str(), rows[e].nonFiniteValues, count);
          verified = false;
        } else if (rows[e].relativeError > bound) {
          std::fprintf(stderr, "VERIFY FAILED: %s: relative error %.4f exceeds %.4f at %zu values\n",
                       name.c_str(), rows[e].relativeError, bound, count);
          verified = false;
        }
      }
      if (json) {
        // JSON has no NaN: a result with non-finite values has no error figure.
        char jsonError[32] = "null";
        if (rows[e].nonFiniteValues == 0 && std::isfinite(rows[e].relativeError)) {
          std::snprintf(jsonError, sizeof(jsonError), "%.6g", rows[e].relativeError);
        }
        std::fprintf(json,
                     "%s  {\"bytes\": %zu, \"count\": %zu, \"type\": \"float\", \"redop\": \"sum\", "
                     "\"engine\": \"%s\", \"algo\": \"%s\", \"nranks\": %d, \"transport\": \"%s\", "
                     "\"link\": \"%s\", \"time_us\": %.3f, \"algbw_gbs\": %.6f, \"busbw_gbs\": %.6f, "
                     "\"wire_bytes_per_value\": %.4f, \"relative_error\": %s, "
                     "\"speedup_vs_gloo\": %.4f, \"speedup_vs_none\": %.4f, \"identical\": %s}",
                     firstRow ? "" : ",\n", count * sizeof(float), count, ccperf::jsonEscape(name).c_str(),
                     algo, nranks, options.transport.c_str(), link ? ccperf::jsonEscape(link).c_str() : "loopback",
                     rows[e].seconds * 1e6, algbw, busbw, wire, jsonError, vsGloo, vsNone,
                     rows[e].identical ? "true" : "false");
        firstRow = false;
      }
    }
    // auto against the best algorithm measured beside it, per codec.
    for (size_t e = 0; e < engines.size(); ++e) {
      if (!isAuto(engines[e]->requestedAlgo)) continue;
      int best = -1;
      for (size_t other = 0; other < engines.size(); ++other) {
        if (engines[other]->name != engines[e]->name || engines[other]->requestedAlgo.empty() ||
            isAuto(engines[other]->requestedAlgo)) {
          continue;
        }
        if (best < 0 || rows[other].seconds < rows[best].seconds) best = static_cast<int>(other);
      }
      if (best >= 0) {
        const std::string ran = static_cast<const CompressedEngine*>(engines[e].get())->algorithm();
        // The choice alone: the forced run of the algorithm auto ran, against
        // the best (auto's own run adds its per-call work and its rounds' noise).
        // Its per-call work alone: auto's round against the same round of the
        // forced run of what it ran. Both ran within one round, under the
        // same spell of load, which columns of trimmed means do not cancel.
        char chosen[64] = "", paired[128] = "";
        for (size_t other = 0; other < engines.size(); ++other) {
          if (engines[other]->name == engines[e]->name && engines[other]->requestedAlgo == ran) {
            std::snprintf(chosen, sizeof(chosen), "; chosen/best %.3f", rows[other].seconds / rows[best].seconds);
            if (options.rounds >= 4) {
              std::vector<double> ratios(roundSeconds[e].size());
              for (size_t r = 0; r < ratios.size(); ++r) ratios[r] = roundSeconds[e][r] / roundSeconds[other][r];
              std::sort(ratios.begin(), ratios.end());
              const auto quantile = [&](double q) {
                return ratios[static_cast<size_t>(q * static_cast<double>(ratios.size() - 1) + 0.5)];
              };
              std::snprintf(paired, sizeof(paired), "; auto/%s round by round: median %.3f, quartiles %.3f-%.3f",
                            ran.c_str(), quantile(0.5), quantile(0.25), quantile(0.75));
            }
          }
        }
        char trials[64] = "", watch[128] = "";
        if (trialCalls[e] > 0) std::snprintf(trials, sizeof(trials), "; %d trial calls before timing", trialCalls[e]);
        // Challenges run inside the rounds and count in auto's time.
        const Engine::Watch& w = watches[e];
        if (w.challenges > 0 || w.challengeCalls > 0) {
          using ull = unsigned long long;
          std::snprintf(watch, sizeof(watch), "; in its rounds %llu challenges (%llu calls), %llu switches",
                        static_cast<ull>(w.challenges), static_cast<ull>(w.challengeCalls), static_cast<ull>(w.switches));
        }
        std::printf("# %s/best %s %zu B: %.3f (auto ran %s; best %s%s%s%s%s)\n", engines[e]->requestedAlgo.c_str(),
                    engines[e]->name.c_str(), count * sizeof(float), rows[e].seconds / rows[best].seconds, ran.c_str(),
                    engines[best]->requestedAlgo.c_str(), chosen, paired, trials, watch);
      }
    }
    std::fflush(stdout);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - runStart).count();
    std::fprintf(stderr, "# progress: %zu/%zu sizes, %.0f s elapsed\n", sizesDone, sizesTotal, elapsed);
  }
  if (json) {
    std::fprintf(json, "\n]\n");
    std::fclose(json);
  }
  engines.clear();
  cc_comm_destroy(reducer.comm);
  if (options.verify && rank == 0) std::printf("# verify: %s\n", verified ? "passed" : "FAILED");
  return verified ? 0 : 3;
}

// Rank and size from our variables, OpenMPI's, PMI's or Slurm's.
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

// Every engine plus the control communicator needs its own id.
size_t idsNeeded(const Options& options) {
  size_t switchComms = 0;
  for (const auto& codec : options.codecs) switchComms += switchRowsFor(codec, options).size();
  return options.codecs.size() * options.algos.size() + switchComms + (options.glooBaseline ? 1 : 0) + 1;
}

int runCluster(const Options& options, const std::vector<std::string>& forwarded) {
  const char* script = std::getenv("CC_CLUSTER_SCRIPT");
  std::string path = script ? script : std::string(CC_SOURCE_DIR) + "/perf/cluster.sh";
  std::vector<std::string> args = {path, "--hosts", std::to_string(options.clusterHosts), "--link",
                                   options.link};
  if (!options.delay.empty()) args.insert(args.end(), {"--delay", options.delay});
  if (!options.loss.empty()) args.insert(args.end(), {"--loss", options.loss});
  if (!options.mtu.empty()) args.insert(args.end(), {"--mtu", options.mtu});
  if (options.switchRows) {
    const char* daemon = std::getenv("CC_SWITCHD");
    args.insert(args.end(), {"--switchd", daemon != nullptr ? daemon : CC_SWITCHD_PATH});
    std::string daemonArgs = "--quiet";
    if (!options.switchLoss.empty()) daemonArgs += " --loss-up " + options.switchLoss + " --loss-down " + options.switchLoss;
    args.insert(args.end(), {"--switchd-args", daemonArgs});
  }
  args.push_back("--");
  char self[4096];
  ssize_t length = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (length <= 0) {
    std::perror("readlink /proc/self/exe");
    return 1;
  }
  self[length] = '\0';
  args.push_back(self);
  args.insert(args.end(), forwarded.begin(), forwarded.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  execv(path.c_str(), argv.data());
  std::perror(("cannot run " + path).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> forwarded;
  Options options = parseOptions(argc, argv, &forwarded);
  Launch launch;
  if (launcherRank(&launch.rank, &launch.nranks)) {
    const char* commId = std::getenv("CC_COMM_ID");
    if (!commId) usage("under a launcher CC_COMM_ID=host:port must name rank 0's address");
    std::string text = commId;
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) usage("CC_COMM_ID must be host:port");
    int port = std::atoi(text.c_str() + colon + 1);
    for (size_t k = 0; k < idsNeeded(options); ++k) {
      std::string id = text.substr(0, colon + 1) + std::to_string(port + static_cast<int>(k));
      setenv("CC_COMM_ID", id.c_str(), 1);
      cc_unique_id_t uniqueId;
      if (cc_get_unique_id(&uniqueId) != CC_SUCCESS) fail("cc_get_unique_id", nullptr);
      launch.ids.push_back(uniqueId);
    }
    setenv("CC_COMM_ID", commId, 1);
    return runRank(launch, options);
  }
  if (options.clusterHosts > 0) return runCluster(options, forwarded);
  // Default: this process serves the bootstrap and forks one process per rank.
  // All ranks are on this host, so they meet on loopback.
  setenv("CC_SOCKET_IFNAME", "lo", 0);
  launch.nranks = options.ranks;
  for (size_t k = 0; k < idsNeeded(options); ++k) {
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
      int code = runRank(launch, options);
      std::fflush(nullptr);
      _exit(code);
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
