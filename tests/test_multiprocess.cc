// Ranks as processes over Gloo TCP on loopback: the acceptance run of the
// spine (4 processes, 16 M float32 values), plus bootstrap failures seen
// through the C API.
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

#include "codec/spec.h"
#include "codec_bounds.h"
#include "test_helpers.h"

using namespace cctest;

namespace {

constexpr int kMaxRanks = 8;

struct SharedResults {
  int status[kMaxRanks];
  uint64_t digest[kMaxRanks];
  double singleError;
  double meanError;
  char message[kMaxRanks][512];
};

uint64_t fnv64(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

// Forks one process per rank, runs `body` in each, waits (killing stragglers
// after the deadline) and returns the shared results.
template <typename Body>
SharedResults* runProcesses(int nranks, int deadlineSeconds, Body body) {
  void* memory = mmap(nullptr, sizeof(SharedResults), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  auto* results = new (memory) SharedResults();
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

bool initTcp(int rank, int nranks, const cc_unique_id_t& id, const char* codec, cc_comm_t* comm,
             SharedResults* results) {
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "tcp";
  config.codec = codec;
  config.timeout_ms = 120000;
  if (cc_comm_init_rank(comm, nranks, id, rank, &config) != CC_SUCCESS) {
    std::snprintf(results->message[rank], sizeof(results->message[rank]), "%s",
                  cc_get_last_error(nullptr));
    return false;
  }
  return true;
}

void expectAllRanksSucceeded(const SharedResults* results, int nranks) {
  ASSERT_NE(results, nullptr);
  for (int rank = 0; rank < nranks; ++rank) {
    EXPECT_EQ(results->status[rank], 0) << "rank " << rank << ": " << results->message[rank];
  }
}

// Each of n processes runs `calls` SUM allreduces of its makeInput(count);
// every rank records the digest of its first output, rank 0 the first call's
// relative error and that of the mean over all calls. The codec comes from
// the config, or from CC_CODEC when `fromEnvironment`.
SharedResults* runRepeatedAllreduce(int n, size_t count, int calls, int deadlineSeconds, const char* codec,
                                    bool fromEnvironment) {
  return runProcesses(n, deadlineSeconds, [&](int rank, const cc_unique_id_t& id, SharedResults* shared) {
    if (fromEnvironment) setenv("CC_CODEC", codec, 1);
    cc_comm_t comm = nullptr;
    if (!initTcp(rank, n, id, fromEnvironment ? nullptr : codec, &comm, shared)) return false;
    std::vector<float> input = makeInput(count, rank), output(count);
    std::vector<double> exact, meanOutput;
    if (rank == 0) {
      exact.assign(count, 0.0);
      for (int r = 0; r < n; ++r) {
        auto other = makeInput(count, r);
        for (size_t i = 0; i < count; ++i) exact[i] += other[i];
      }
      meanOutput.assign(count, 0.0);
    }
    for (int call = 0; call < calls; ++call) {
      if (compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr) != CC_SUCCESS) {
        std::snprintf(shared->message[rank], sizeof(shared->message[rank]), "%s", cc_get_last_error(comm));
        return false;
      }
      if (call == 0) {
        shared->digest[rank] = fnv64(output.data(), count * sizeof(float));
        if (rank == 0) shared->singleError = relativeError(output, exact);
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
  SharedResults* results = runRepeatedAllreduce(n, size_t(16) << 20, calls, 900, "nat", false);
  expectAllRanksSucceeded(results, n);
  for (int rank = 1; rank < n; ++rank) EXPECT_EQ(results->digest[rank], results->digest[0]) << "rank " << rank;
  EXPECT_LE(results->singleError, ringNatErrorBound(n));
  EXPECT_LT(results->meanError, results->singleError / 4);
  std::printf("4 processes x 16M float32, nat ring: relative error %.4f (bound %.4f), mean of %d calls %.4f\n",
              results->singleError, ringNatErrorBound(n), calls, results->meanError);
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
      std::vector<double> exact(count, 0.0);
      for (int r = 0; r < n; ++r) {
        auto other = makeInput(count, r);
        for (size_t i = 0; i < count; ++i) exact[i] += other[i];
      }
      shared->singleError = relativeError(buffer, exact);
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
  const std::string algo = spec.hopReencodable() ? "ring" : "allgather";
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
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS) << cc_get_last_error(nullptr);
  unsetenv("CC_COMM_ID");
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
