// Ranks as processes over Gloo TCP on loopback: the acceptance run of the
// spine (4 processes, 16 M float32 values), every algorithm x codec at up to
// 16 processes, plus bootstrap failures seen through the C API.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstring>

#include <memory>
#include <new>
#include <string>
#include <vector>

#include "codec/spec.h"
#include "codec_bounds.h"
#include "comm/comm.h"
#include "test_helpers.h"

using namespace cctest;

namespace {

constexpr int kMaxRanks = 16;

struct SharedResults {
  int status[kMaxRanks];
  uint64_t digest[kMaxRanks];
  double singleError;
  double meanError;
  char message[kMaxRanks][512];
  char ran[16];  // rank 0: the algorithm of the first call (whose error singleError is)
};

// Forks one process per rank, runs `body` in each, waits (killing stragglers
// after the deadline) and returns the shared results (any struct with a
// `status` per rank).
template <typename Results = SharedResults, typename Body>
Results* runProcesses(int nranks, int deadlineSeconds, Body body) {
  void* memory = mmap(nullptr, sizeof(Results), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  auto* results = new (memory) Results();
  cc_unique_id_t id;
  if (cc_get_unique_id(&id) != CC_SUCCESS) return nullptr;
  std::vector<pid_t> children;
  for (int rank = 0; rank < nranks; ++rank) {
    pid_t pid = fork();
    if (pid == 0) {
      results->status[rank] = body(rank, id, results) ? 0 : 1;
      std::fflush(nullptr);
      _exit(0);
    }
    children.push_back(pid);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadlineSeconds);
  for (pid_t child : children) {
    int status = 0;
    while (waitpid(child, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        for (pid_t other : children) kill(other, SIGKILL);
      }
      usleep(20000);
    }
  }
  return results;
}

// `algo` null: CC_ALGO, else auto.
template <typename Results = SharedResults>
bool initTcp(int rank, int nranks, const cc_unique_id_t& id, const char* codec, cc_comm_t* comm,
             Results* results, const char* algo = nullptr) {
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "tcp";
  config.codec = codec;
  config.algo = algo;
  config.timeout_ms = 120000;
  if (cc_comm_init_rank(comm, nranks, id, rank, &config) != CC_SUCCESS) {
    std::snprintf(results->message[rank], sizeof(results->message[rank]), "%s",
                  cc_get_last_error(nullptr));
    return false;
  }
  return true;
}

template <typename Results = SharedResults>
void expectAllRanksSucceeded(const Results* results, int nranks) {
  ASSERT_NE(results, nullptr);
  for (int rank = 0; rank < nranks; ++rank) {
    EXPECT_EQ(results->status[rank], 0) << "rank " << rank << ": " << results->message[rank];
  }
}

// Each of n processes runs `calls` SUM allreduces of its makeInput(count);
// every rank records the digest of its first output, rank 0 the first call's
// relative error and that of the mean over all calls. The codec comes from
// the config, or from CC_CODEC when `fromEnvironment`; the algorithm from
// `algo` (null: CC_ALGO, else auto), and rank 0 records which one the first
// call ran (under auto, later calls may run others: its trials).
SharedResults* runRepeatedAllreduce(int n, size_t count, int calls, int deadlineSeconds, const char* codec,
                                    bool fromEnvironment, const char* algo = nullptr) {
  return runProcesses(n, deadlineSeconds, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    if (fromEnvironment) setenv("CC_CODEC", codec, 1);
    cc_comm_t comm = nullptr;
    if (!initTcp(rank, n, id, fromEnvironment ? nullptr : codec, &comm, shared, algo)) return false;
    std::vector<float> input = makeInput(count, rank), output(count);
    std::vector<double> exact, meanOutput;
    if (rank == 0) {
      exact = exactSum(count, n);
      meanOutput.assign(count, 0.0);
    }
    for (int call = 0; call < calls; ++call) {
      if (compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr) != CC_SUCCESS) {
        std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "%s", cc_get_last_error(comm));
        return false;
      }
      if (call == 0) {
        shared->digest[rank] = fnv64(output.data(), count * sizeof(float));
        if (rank == 0) {
          shared->singleError = relativeError(output, exact);
          std::snprintf(shared->ran, sizeof(shared->ran), "%s", comm->lastAlgorithm.c_str());
        }
      }
      if (rank == 0) for (size_t i = 0; i < count; ++i) meanOutput[i] += output[i] / calls;
    }
    if (rank == 0) {
      double diff = 0, norm = 0;
      for (size_t i = 0; i < count; ++i) {
        diff += (meanOutput[i] - exact[i]) * (meanOutput[i] - exact[i]);
        norm += exact[i] * exact[i];
      }
      shared->meanError = std::sqrt(diff / norm);
    }
    return cc_comm_destroy(comm) == CC_SUCCESS;
  });
}

TEST(MultiProcess, FourRanks16MFloatsNatRing) {
  const int n = 4;
  const int calls = 64;
  SharedResults* results = runRepeatedAllreduce(n, size_t(16) << 20, calls, 900, "nat", false, "ring");
  expectAllRanksSucceeded(results, n);
  for (int rank = 1; rank < n; ++rank) EXPECT_EQ(results->digest[rank], results->digest[0]) << "rank " << rank;
  EXPECT_EQ(std::string(results->ran), "ring");
  EXPECT_LE(results->singleError, ringNatErrorBound(n));
  EXPECT_LT(results->meanError, results->singleError / 4);
  std::printf("4 processes x 16M float32, nat ring: relative error %.4f (bound %.4f), mean of %d calls %.4f\n",
              results->singleError, ringNatErrorBound(n), calls, results->meanError);
}

// Gloo channels of many slots return them in batches (auto's announcement
// channel): 1000 messages in a ring of 3 processes arrive whole and in order,
// a sender that runs ahead waits for the batched credits, and teardown
// collects them without hanging.
TEST(MultiProcess, GlooChannelsOfManySlotsKeepOrderWithBatchedCredits) {
  const int n = 3;
  SharedResults* results = runProcesses(n, 120, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    cc_comm_t comm = nullptr;
    if (!initTcp(rank, n, id, "nat", &comm, shared, "ring")) return false;
    auto fail = [&](const std::string& what) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "%s", what.c_str());
      return false;
    };
    constexpr int kTag = 9, kSlots = 64, kMessages = 1000;
    constexpr size_t kSlotBytes = 128;
    {
      std::unique_ptr<cc::SendChannel> to;
      std::unique_ptr<cc::RecvChannel> from;
      if (comm->transport->openSend((rank + 1) % n, kTag, kSlotBytes, kSlots, &to) != CC_SUCCESS ||
          comm->transport->openRecv((rank + n - 1) % n, kTag, kSlotBytes, kSlots, &from) != CC_SUCCESS) {
        return fail(std::string("open: ") + cc_get_last_error(nullptr));
      }
      // Rank 0 sends everything, then receives; the others receive
      // everything, then send. Senders run out of slots after 64 and wait
      // for the credits their peer batches.
      int received = 0;
      auto receiveOne = [&]() {
        void* slot = nullptr;
        if (from->wait(&slot) != CC_SUCCESS) return fail(std::string("wait: ") + cc_get_last_error(nullptr));
        uint64_t value = 0;
        std::memcpy(&value, static_cast<unsigned char*>(slot) + 40, sizeof(value));
        const uint64_t expected = 1000003ull * received + 7 * ((rank + n - 1) % n);
        if (value != expected) {
          return fail("message " + std::to_string(received) + " carries " + std::to_string(value));
        }
        ++received;
        return from->release() == CC_SUCCESS || fail(std::string("release: ") + cc_get_last_error(nullptr));
      };
      while (rank != 0 && received < kMessages) {
        if (!receiveOne()) return false;
      }
      for (int m = 0; m < kMessages; ++m) {
        void* slot = nullptr;
        if (to->acquire(&slot) != CC_SUCCESS) return fail(std::string("acquire: ") + cc_get_last_error(nullptr));
        const uint64_t value = 1000003ull * m + 7 * rank;
        std::memset(slot, 0xab, kSlotBytes);
        std::memcpy(static_cast<unsigned char*>(slot) + 40, &value, sizeof(value));
        if (to->post(kSlotBytes) != CC_SUCCESS) return fail(std::string("post: ") + cc_get_last_error(nullptr));
      }
      while (received < kMessages) {
        if (!receiveOne()) return false;
      }
    }
    return cc_comm_destroy(comm) == CC_SUCCESS || fail(cc_get_last_error(nullptr));
  });
  expectAllRanksSucceeded(results, n);
}

TEST(MultiProcess, FourRanks16MFloatsExactPath) {
  const int n = 4;
  const size_t count = size_t(16) << 20;
  SharedResults* results = runProcesses(n, 600, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    cc_comm_t comm = nullptr;
    if (!initTcp(rank, n, id, "none", &comm, shared)) return false;
    std::vector<float> buffer = makeInput(count, rank);
    if (compressed_allreduce(buffer.data(), buffer.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr) != CC_SUCCESS) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "%s", cc_get_last_error(comm));
      return false;
    }
    shared->digest[rank] = fnv64(buffer.data(), count * sizeof(float));
    if (rank == 0) {
      shared->singleError = relativeError(buffer, exactSum(count, n));
    }
    return cc_comm_destroy(comm) == CC_SUCCESS;
  });
  expectAllRanksSucceeded(results, n);
  for (int rank = 1; rank < n; ++rank) EXPECT_EQ(results->digest[rank], results->digest[0]);
  EXPECT_LT(results->singleError, 1e-6);
}

// The codec family passes the same checks as nat through CC_CODEC: every rank
// bit-identical, the mean of independent calls converging on the exact sum
// (unbiased specs), one call's error within REFERENCE's bound.
class MultiProcessCodec : public testing::TestWithParam<const char*> {};

TEST_P(MultiProcessCodec, FourRanksBitIdenticalUnbiasedAndBounded) {
  const char* specText = GetParam();
  cc::CodecSpec spec;
  ASSERT_EQ(cc::parseCodecSpec(specText, &spec), CC_SUCCESS);
  const int n = 4;
  const size_t count = size_t(1) << 20;
  const int calls = 16;
  SharedResults* results = runRepeatedAllreduce(n, count, calls, 600, specText, true);
  expectAllRanksSucceeded(results, n);
  for (int rank = 1; rank < n; ++rank) EXPECT_EQ(results->digest[rank], results->digest[0]) << "rank " << rank;
  // auto: allgather for what a hop cannot re-encode, else the cheapest of
  // ring, direct and tree; the bound is that of the algorithm the first call
  // (whose error is checked) ran.
  const std::string algo = results->ran;
  if (spec.hopReencodable()) {
    EXPECT_TRUE(algo == "ring" || algo == "direct" || algo == "tree") << algo;
  } else {
    EXPECT_EQ(algo, "allgather");
  }
  const double bound = relativeErrorBound(spec, algo, n, count);
  EXPECT_LE(results->singleError, 1.1 * bound);
  // Unbiased: 16 independent calls average to an error 4x smaller (3x asserted).
  if (spec.unbiased()) {
    EXPECT_LT(results->meanError, results->singleError / 3);
  }
  std::printf("4 processes x 1M float32, %s on %s: relative error %.4f (bound %.4f), mean of %d calls %.4f\n",
              specText, algo.c_str(), results->singleError, bound, calls, results->meanError);
}

INSTANTIATE_TEST_SUITE_P(Specs, MultiProcessCodec,
                         testing::Values("dither_nat:p=2,s=8,norm=nat", "qsgd:s=16", "randk:ratio=0.5+nat",
                                         "terngrad", "nat_det", "topk:ratio=0.01+nat"),
                         [](const testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

// Every algorithm x codec over processes: for each (algorithm, n) one group
// of n processes whose communicator forces the algorithm through the config's
// `algo` field runs every codec through compressed_allreduce_ex: ranks
// bit-identical, the mean of independent calls converging on the exact sum
// (unbiased specs), and the RMS error within the algorithm's bound.
const char* const kAlgorithmSpecs[] = {"nat",      "dither_nat:p=2,s=8,norm=nat", "qsgd:s=16", "randk:ratio=0.5+nat",
                                       "terngrad", "nat_det",                     "topk:ratio=0.01+nat"};
constexpr int kAlgorithmSpecCount = sizeof(kAlgorithmSpecs) / sizeof(kAlgorithmSpecs[0]);

struct AlgorithmResults {
  int status[kMaxRanks];
  char message[kMaxRanks][512];
  uint64_t digest[kAlgorithmSpecCount][kMaxRanks];  // over all calls' outputs
  double rmsError[kAlgorithmSpecCount];              // rank 0: RMS over calls of the relative error
  double meanError[kAlgorithmSpecCount];             // rank 0: relative error of the mean output
  char ran[kAlgorithmSpecCount][16];                 // rank 0: the algorithm of the last call
  // rank 0: of the algorithms its calls ran (auto's trials run several), the
  // one with the loosest error bound
  char loosest[kAlgorithmSpecCount][16];
};

struct AlgorithmCase {
  const char* algo;
  int nranks;
};

// Which specs an algorithm runs here: top-k only on allgather (and auto, which
// picks allgather for it); allgather runs top-k and nat.
bool runsOn(const std::string& algo, const cc::CodecSpec& spec) {
  if (algo == "allgather") return !spec.hopReencodable() || spec.canonical == "nat";
  return spec.hopReencodable() || algo == "auto";
}

class MultiProcessAlgorithms : public testing::TestWithParam<AlgorithmCase> {};

TEST_P(MultiProcessAlgorithms, EveryCodecBitIdenticalUnbiasedAndBounded) {
  const AlgorithmCase& c = GetParam();
  const int n = c.nranks;
  const std::string algo = c.algo;
  const size_t count = size_t(1) << 16;
  const int calls = 8;
  std::vector<cc::CodecSpec> specs(kAlgorithmSpecCount);
  std::vector<bool> selected(kAlgorithmSpecCount);
  for (int s = 0; s < kAlgorithmSpecCount; ++s) {
    ASSERT_EQ(cc::parseCodecSpec(kAlgorithmSpecs[s], &specs[s]), CC_SUCCESS);
    selected[s] = runsOn(algo, specs[s]);
  }
  const auto start = std::chrono::steady_clock::now();
  AlgorithmResults* results =
      runProcesses<AlgorithmResults>(n, 300, [&](int rank, const cc_unique_id_t& id, AlgorithmResults* shared) {
        cc_comm_t comm = nullptr;
        if (!initTcp(rank, n, id, "nat", &comm, shared, c.algo)) return false;
        std::vector<float> input = makeInput(count, rank), output(count);
        std::vector<double> exact, meanOutput;
        if (rank == 0) exact = exactSum(count, n);
        for (int s = 0; s < kAlgorithmSpecCount; ++s) {
          if (!selected[s]) continue;
          uint64_t digest = 0;
          double squared = 0, loosestBound = -1;
          meanOutput.assign(rank == 0 ? count : 0, 0.0);
          for (int call = 0; call < calls; ++call) {
            if (compressed_allreduce_ex(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr,
                                        kAlgorithmSpecs[s], nullptr) != CC_SUCCESS) {
              std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "%s: %s", kAlgorithmSpecs[s],
                            cc_get_last_error(comm));
              return false;
            }
            digest = digest * 1099511628211ull ^ fnv64(output.data(), count * sizeof(float));
            if (rank == 0) {
              const double error = relativeError(output, exact);
              squared += error * error / calls;
              const double callBound = relativeErrorBound(specs[s], comm->lastAlgorithm, n, count);
              if (callBound > loosestBound) {
                loosestBound = callBound;
                std::snprintf(shared->loosest[s], sizeof(shared->loosest[s]), "%s", comm->lastAlgorithm.c_str());
              }
              for (size_t i = 0; i < count; ++i) meanOutput[i] += output[i] / calls;
            }
          }
          shared->digest[s][rank] = digest;
          if (rank == 0) {
            shared->rmsError[s] = std::sqrt(squared);
            std::vector<float> mean(meanOutput.begin(), meanOutput.end());
            shared->meanError[s] = relativeError(mean, exact);
            std::snprintf(shared->ran[s], sizeof(shared->ran[s]), "%s", comm->lastAlgorithm.c_str());
          }
        }
        return cc_comm_destroy(comm) == CC_SUCCESS;
      });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  expectAllRanksSucceeded(results, n);
  for (int s = 0; s < kAlgorithmSpecCount; ++s) {
    if (!selected[s]) continue;
    const cc::CodecSpec& spec = specs[s];
    const std::string where = std::string(kAlgorithmSpecs[s]) + " on " + algo + ", " + std::to_string(n) + " processes";
    for (int rank = 1; rank < n; ++rank) {
      EXPECT_EQ(results->digest[s][rank], results->digest[s][0]) << where << ": rank " << rank;
    }
    const std::string ran = results->ran[s];
    if (algo == "auto") {
      if (spec.hopReencodable()) {
        EXPECT_TRUE(ran == "ring" || ran == "direct" || ran == "tree") << where << ": " << ran;
      } else {
        EXPECT_EQ(ran, "allgather") << where;
      }
    } else {
      EXPECT_EQ(ran, algo) << where;
    }
    const double bound = relativeErrorBound(spec, results->loosest[s], n, count);
    EXPECT_LE(results->rmsError[s], 1.15 * bound) << where << " (loosest bound: " << results->loosest[s] << ")";
    EXPECT_GT(results->rmsError[s], 0.0) << where;
    // Unbiased: 8 independent calls average to an error sqrt(8) = 2.8x
    // smaller (2x asserted).
    if (spec.unbiased()) {
      EXPECT_LT(results->meanError[s], results->rmsError[s] / 2) << where;
    }
    std::printf("%2d processes x 64K float32, %-28s on %-9s (ran %-9s): relative error %.4f (bound %.4f), mean of %d "
                "calls %.4f\n",
                n, kAlgorithmSpecs[s], algo.c_str(), ran.c_str(), results->rmsError[s], bound, calls,
                results->meanError[s]);
  }
  std::printf("%s with %d processes: %.1f s\n", algo.c_str(), n, seconds);
}

std::vector<AlgorithmCase> multiProcessAlgorithmCases() {
  std::vector<AlgorithmCase> cases;
  for (const char* algo : {"ring", "direct", "tree", "auto", "allgather"}) {
    for (int n : {2, 5, 8, 16}) cases.push_back({algo, n});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Algorithms, MultiProcessAlgorithms, testing::ValuesIn(multiProcessAlgorithmCases()),
                         [](const testing::TestParamInfo<AlgorithmCase>& info) {
                           return std::string(info.param.algo) + "_n" + std::to_string(info.param.nranks);
                         });

// top-k cannot run on the chunked algorithms: forced, the call fails with
// CC_UNSUPPORTED naming allgather, on every rank alike, and the communicator
// goes on working.
TEST(MultiProcessAlgorithmSupport, TopkForcedOnDirectIsUnsupported) {
  const int n = 3;
  SharedResults* results = runProcesses(n, 120, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    cc_comm_t comm = nullptr;
    if (!initTcp(rank, n, id, "topk:ratio=0.01+nat", &comm, shared, "direct")) return false;
    std::vector<float> values = makeInput(4096, rank);
    const cc_result_t refused =
        compressed_allreduce(values.data(), values.data(), values.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
    const std::string message = cc_get_last_error(comm);
    if (refused != CC_UNSUPPORTED || message.find("cannot run on direct") == std::string::npos ||
        message.find("allgather") == std::string::npos) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "expected CC_UNSUPPORTED naming allgather, got %d: %s",
                    static_cast<int>(refused), message.c_str());
      return false;
    }
    if (compressed_allreduce_ex(values.data(), values.data(), values.size(), CC_FLOAT32, CC_SUM, comm, nullptr, "nat",
                                nullptr) != CC_SUCCESS) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "%s", cc_get_last_error(comm));
      return false;
    }
    shared->digest[rank] = fnv64(values.data(), values.size() * sizeof(float));
    return cc_comm_destroy(comm) == CC_SUCCESS;
  });
  expectAllRanksSucceeded(results, n);
  for (int rank = 1; rank < n; ++rank) EXPECT_EQ(results->digest[rank], results->digest[0]) << "rank " << rank;
}

// CC_CHECK_CALLS decides whether auto's calls announce themselves, so ranks
// must agree on it: a rank that expects announcements its predecessor never
// sends would wait until the timeout. Init fails on every rank instead.
TEST(MultiProcess, RanksThatDisagreeOnCheckCallsFailInit) {
  const int n = 2;
  SharedResults* results = runProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    setenv("CC_CHECK_CALLS", rank == 1 ? "1" : "0", 1);
    cc_comm_t comm = nullptr;
    if (initTcp(rank, n, id, "nat", &comm, shared, "auto")) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "init succeeded");
      cc_comm_destroy(comm);
      return false;
    }
    return std::strstr(shared->message[rank], "CC_CHECK_CALLS=1 differs from rank 0's 0") != nullptr;
  });
  expectAllRanksSucceeded(results, n);
}

// CC_AUTO_TRIALS sets the length of auto's trial blocks, so ranks that
// differ would run different algorithms in one call: init fails instead.
TEST(MultiProcess, RanksThatDisagreeOnAutoTrialsFailInit) {
  const int n = 2;
  SharedResults* results = runProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    setenv("CC_AUTO_TRIALS", rank == 1 ? "5" : "3", 1);
    cc_comm_t comm = nullptr;
    if (initTcp(rank, n, id, "nat", &comm, shared, "auto")) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "init succeeded");
      cc_comm_destroy(comm);
      return false;
    }
    return std::strstr(shared->message[rank], "CC_AUTO_TRIALS=5 differs from rank 0's 3") != nullptr;
  });
  expectAllRanksSucceeded(results, n);
}

// Ranks with different CC_COMPRESS_MIN_BYTES would send one call exact on
// some and compressed on others.
TEST(MultiProcess, RanksThatDisagreeOnCompressMinBytesFailInit) {
  const int n = 2;
  SharedResults* results = runProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    if (rank == 1) {
      setenv("CC_COMPRESS_MIN_BYTES", "8K", 1);
    } else {
      unsetenv("CC_COMPRESS_MIN_BYTES");
    }
    cc_comm_t comm = nullptr;
    if (initTcp(rank, n, id, "nat", &comm, shared, "auto")) {
      std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "init succeeded");
      cc_comm_destroy(comm);
      return false;
    }
    return std::strstr(shared->message[rank], "CC_COMPRESS_MIN_BYTES=8192 differs from rank 0's unset") != nullptr;
  });
  expectAllRanksSucceeded(results, n);
}

TEST(MultiProcess, UnreachableRootFailsWithinTheTimeout) {
  // A port nobody listens on: bind one, read its number, close it.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  std::string commId = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  setenv("CC_COMM_ID", commId.c_str(), 1);
  setenv("CC_COMM_SECRET", "unreachable-root-secret", 1);
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS) << cc_get_last_error(nullptr);
  unsetenv("CC_COMM_ID");
  unsetenv("CC_COMM_SECRET");
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.timeout_ms = 500;
  cc_comm_t comm = nullptr;
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(cc_comm_init_rank(&comm, 2, id, 1, &config), CC_TIMEOUT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(std::string(cc_get_last_error(nullptr)).find(commId), std::string::npos)
      << cc_get_last_error(nullptr);
  EXPECT_EQ(comm, nullptr);
}

TEST(MultiProcess, WrongRankArgumentsAreRefused) {
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  cc_comm_t comm = nullptr;
  EXPECT_EQ(cc_comm_init_rank(&comm, 4, id, 4, nullptr), CC_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("rank 4 is outside [0, 4)"), std::string::npos);
  EXPECT_EQ(cc_comm_init_rank(&comm, 0, id, 0, nullptr), CC_INVALID_ARGUMENT);
  EXPECT_EQ(cc_comm_init_rank(nullptr, 2, id, 0, nullptr), CC_INVALID_ARGUMENT);
  cc_unique_id_t garbage;
  std::memset(&garbage, 0x5a, sizeof(garbage));
  EXPECT_EQ(cc_comm_init_rank(&comm, 2, garbage, 0, nullptr), CC_INVALID_ARGUMENT);
}

TEST(MultiProcess, DuplicateRankIsRefused) {
  const int n = 2;
  SharedResults* results = runProcesses(3, 60, [&](int process, const cc_unique_id_t& id, SharedResults* shared) {
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.transport = "tcp";
    config.timeout_ms = 3000;
    cc_comm_t comm = nullptr;
    const int rank = process == 2 ? 1 : process;  // two processes claim rank 1
    // Rank 0 joins last, so both claimants of rank 1 meet the store while it
    // is still gathering ranks.
    if (process == 0) usleep(300000);
    cc_result_t result = cc_comm_init_rank(&comm, n, id, rank, &config);
    std::snprintf(shared->message[process], sizeof(shared->message[process]), "%s",
                  result == CC_SUCCESS ? "" : cc_get_last_error(nullptr));
    if (comm) cc_comm_destroy(comm);
    return result == CC_SUCCESS;
  });
  ASSERT_NE(results, nullptr);
  bool sawDuplicate = false;
  for (int process = 0; process < 3; ++process) {
    if (std::string(results->message[process]).find("joined twice") != std::string::npos) sawDuplicate = true;
  }
  EXPECT_TRUE(sawDuplicate) << results->message[0] << " | " << results->message[1] << " | "
                            << results->message[2];
}

}  // namespace
