// Faults and misuse (label `fault`): dead, stopped and aborting peers, a
// communicator aborted or destroyed while a call is blocked, handles used
// after they died. Ranks are processes (fork) over Gloo TCP on loopback;
// every process keeps SIGPIPE at its default disposition, so a write to a
// dead peer that raised it would kill a survivor (seen as a signal in its
// wait status) instead of returning an error.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "test_helpers.h"

using namespace cctest;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr int kMaxRanks = 8;

struct RankReport {
  int result = -1;     // the failing call's cc_result_t, 0 if every call succeeded
  double seconds = 0;  // from the failing call's start to its return
  char message[600] = {};
};

struct Shared {
  RankReport rank[kMaxRanks];
};

struct Outcome {
  int exitStatus[kMaxRanks];  // waitpid's status
  Shared* shared;
};

// Forks one process per rank running body(rank, id, report), each with
// SIGPIPE at its default action; kills all after `deadlineSeconds`, and
// `killLast` (a rank that never ends by itself) once the others ended.
template <typename Body>
Outcome runRankProcesses(int nranks, int deadlineSeconds, Body body, int killLast = -1) {
  Outcome outcome{};
  void* memory = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  outcome.shared = new (memory) Shared();
  cc_unique_id_t id;
  if (cc_get_unique_id(&id) != CC_SUCCESS) {
    ADD_FAILURE() << cc_get_last_error(nullptr);
    return outcome;
  }
  std::vector<pid_t> children;
  for (int rank = 0; rank < nranks; ++rank) {
    pid_t pid = fork();
    if (pid == 0) {
      signal(SIGPIPE, SIG_DFL);
      body(rank, id, &outcome.shared->rank[rank]);
      std::fflush(nullptr);
      _exit(0);
    }
    children.push_back(pid);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(deadlineSeconds);
  for (int index = 0; index < nranks; ++index) {
    // The rank to kill goes last.
    int rank = killLast < 0 ? index : (index == nranks - 1 ? killLast : index + (index >= killLast ? 1 : 0));
    if (rank == killLast) kill(children[rank], SIGKILL);
    int status = 0;
    while (waitpid(children[rank], &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        for (pid_t other : children) kill(other, SIGKILL);
      }
      usleep(10000);
    }
    outcome.exitStatus[rank] = status;
  }
  return outcome;
}

bool initRank(int rank, int nranks, const cc_unique_id_t& id, const char* codec, const char* algo, int timeoutMs,
              RankReport* report, cc_comm_t* comm) {
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "tcp";
  config.codec = codec;
  config.algo = algo;
  config.timeout_ms = timeoutMs;
  if (cc_comm_init_rank(comm, nranks, id, rank, &config) != CC_SUCCESS) {
    std::snprintf(report->message, sizeof(report->message), "init: %s", cc_get_last_error(nullptr));
    return false;
  }
  return true;
}

std::string describeExit(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "exit " + std::to_string(WEXITSTATUS(status));
}

// --------------------------------------------------------------- peer death

struct PeerDeathCase {
  const char* algo;
  const char* codec;
};

class PeerDeath : public ::testing::TestWithParam<PeerDeathCase> {};

// Every rank reduces 4 Mi floats in a loop; the last rank kills itself in
// its third call. The survivors, mid-write towards it, must return an error
// (not die of SIGPIPE, not wait out the timeout).
TEST_P(PeerDeath, SurvivorsReturnAnErrorAndLive) {
  const PeerDeathCase c = GetParam();
  constexpr int n = 4;
  constexpr int timeoutMs = 30000;
  Outcome outcome = runRankProcesses(n, 120, [&](int rank, const cc_unique_id_t& id, RankReport* report) {
    cc_comm_t comm = nullptr;
    if (!initRank(rank, n, id, c.codec, c.algo, timeoutMs, report, &comm)) return;
    std::vector<float> values(size_t{4} << 20, 1.0f + rank);
    for (int call = 0; call < 50; ++call) {
      if (rank == n - 1 && call == 2) {
        std::thread([] {
          usleep(20000);  // inside the call, mid-transfer
          raise(SIGKILL);
        }).detach();
      }
      const auto start = Clock::now();
      const cc_result_t result =
          compressed_allreduce(values.data(), values.data(), values.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
      if (result != CC_SUCCESS) {
        report->result = result;
        report->seconds = secondsSince(start);
        std::snprintf(report->message, sizeof(report->message), "%s", cc_get_last_error(nullptr));
        break;
      }
    }
    cc_comm_abort(comm);
  });
  EXPECT_TRUE(WIFSIGNALED(outcome.exitStatus[n - 1])) << "the victim should have died";
  for (int rank = 0; rank < n - 1; ++rank) {
    const RankReport& report = outcome.shared->rank[rank];
    EXPECT_TRUE(WIFEXITED(outcome.exitStatus[rank]) && WEXITSTATUS(outcome.exitStatus[rank]) == 0)
        << "survivor rank " << rank << " " << describeExit(outcome.exitStatus[rank]) << "; " << report.message;
    EXPECT_NE(report.result, CC_SUCCESS) << "rank " << rank << " never saw the peer die";
    EXPECT_NE(report.result, CC_TIMEOUT) << "rank " << rank << ": " << report.message;
    EXPECT_LT(report.seconds, 10.0) << "rank " << rank << ": " << report.message;
  }
}

INSTANTIATE_TEST_SUITE_P(Algorithms, PeerDeath,
                         ::testing::Values(PeerDeathCase{"ring", "nat"}, PeerDeathCase{"direct", "nat"},
                                           PeerDeathCase{"tree", "nat"},
                                           PeerDeathCase{"allgather", "topk:ratio=0.01+nat"},
                                           PeerDeathCase{"auto", "nat"}, PeerDeathCase{"ring", "none"}),
                         [](const ::testing::TestParamInfo<PeerDeathCase>& info) {
                           std::string name = std::string(info.param.algo) + "_" +
                                              (std::strcmp(info.param.codec, "nat") == 0    ? "nat"
                                               : std::strcmp(info.param.codec, "none") == 0 ? "none"
                                                                                             : "topk");
                           return name;
                         });

// A stopped peer neither answers nor closes: the others run into the
// timeout, and each message names the peer it waited for.
TEST(PeerStopped, OthersTimeOutNamingThePeer) {
  constexpr int n = 3;
  constexpr int timeoutMs = 2000;
  Outcome outcome = runRankProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, RankReport* report) {
    cc_comm_t comm = nullptr;
    if (!initRank(rank, n, id, "nat", "ring", timeoutMs, report, &comm)) return;
    if (rank == 1) raise(SIGSTOP);
    std::vector<float> values(size_t{1} << 20, 1.0f);
    const auto start = Clock::now();
    report->result =
        compressed_allreduce(values.data(), values.data(), values.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
    report->seconds = secondsSince(start);
    std::snprintf(report->message, sizeof(report->message), "%s", cc_get_last_error(nullptr));
    cc_comm_abort(comm);
  }, /*killLast=*/1);
  for (int rank : {0, 2}) {
    const RankReport& report = outcome.shared->rank[rank];
    EXPECT_EQ(report.result, CC_TIMEOUT) << "rank " << rank << ": " << report.message;
    EXPECT_GE(report.seconds, 1.5) << report.message;
    EXPECT_LT(report.seconds, 6.0) << report.message;
    // The ring's predecessor is the peer each survivor waited for: rank 2 waits on the stopped
    // rank 1, and rank 0 on rank 2, which waits on rank 1.
    const std::string waitedFor = "from rank " + std::to_string((rank + n - 1) % n);
    EXPECT_NE(std::strstr(report.message, waitedFor.c_str()), nullptr) << report.message;
  }
}

// --------------------------------------------------------- abort and destroy

// Rank 1 never calls; rank 0 blocks in a call waiting for it, and another
// thread of rank 0 aborts (or first tries to destroy) the communicator.
void abortWhileBlocked(bool destroyFirst) {
  constexpr int n = 2;
  Outcome outcome = runRankProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, RankReport* report) {
    cc_comm_t comm = nullptr;
    if (!initRank(rank, n, id, "nat", "ring", 30000, report, &comm)) return;
    if (rank == 1) {
      std::this_thread::sleep_for(std::chrono::seconds(3));  // never calls
      cc_comm_abort(comm);
      return;
    }
    std::atomic<int> destroyResult{-1};
    std::atomic<bool> aborted{false};
    Clock::time_point abortedAt;
    std::thread other([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      if (destroyFirst) destroyResult = cc_comm_destroy(comm);
      abortedAt = Clock::now();
      aborted = true;
      cc_comm_abort(comm);
    });
    std::vector<float> values(size_t{1} << 20, 1.0f);
    report->result =
        compressed_allreduce(values.data(), values.data(), values.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
    report->seconds = aborted ? secondsSince(abortedAt) : -1.0;
    std::snprintf(report->message, sizeof(report->message), "%s%s", cc_get_last_error(nullptr),
                  destroyFirst && destroyResult != CC_INVALID_USAGE ? " [destroy was not refused]" : "");
    other.join();
  });
  const RankReport& report = outcome.shared->rank[0];
  EXPECT_TRUE(WIFEXITED(outcome.exitStatus[0])) << describeExit(outcome.exitStatus[0]);
  EXPECT_EQ(report.result, CC_INVALID_USAGE) << report.message;
  EXPECT_NE(std::strstr(report.message, "aborted"), nullptr) << report.message;
  EXPECT_EQ(std::strstr(report.message, "not refused"), nullptr) << report.message;
  EXPECT_GE(report.seconds, 0.0) << "the call returned before the abort: " << report.message;
  EXPECT_LT(report.seconds, 0.1) << "the call took " << report.seconds << " s after the abort: " << report.message;
}

TEST(AbortWhileBlocked, TheCallReturnsWithin100ms) { abortWhileBlocked(false); }

TEST(AbortWhileBlocked, DestroyIsRefusedAndAbortStillUnblocks) { abortWhileBlocked(true); }

// ------------------------------------------------------------- dead handles

TEST(DeadHandles, DoubleDestroyAndCallsAfterDestroyAreRefused) {
  RankOptions options;
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  cc_config_t config = makeConfig(options);
  cc_comm_t comm = nullptr;
  ASSERT_EQ(cc_comm_init_rank(&comm, 1, id, 0, &config), CC_SUCCESS) << cc_get_last_error(nullptr);
  float value = 1.0f;
  ASSERT_EQ(cc_comm_destroy(comm), CC_SUCCESS);
  EXPECT_EQ(cc_comm_destroy(comm), CC_INVALID_USAGE);
  EXPECT_NE(std::strstr(cc_get_last_error(nullptr), "not a live communicator"), nullptr) << cc_get_last_error(nullptr);
  EXPECT_EQ(compressed_allreduce(&value, &value, 1, CC_FLOAT32, CC_SUM, comm, nullptr), CC_INVALID_USAGE);
  EXPECT_EQ(cc_comm_abort(comm), CC_INVALID_USAGE);
  int count = 0;
  EXPECT_EQ(cc_comm_count(comm, &count), CC_INVALID_USAGE);
  cc_result_t async = CC_SUCCESS;
  EXPECT_EQ(cc_comm_get_async_error(comm, &async), CC_INVALID_USAGE);
  EXPECT_EQ(cc_comm_finalize(comm), CC_INVALID_USAGE);
}

TEST(DeadHandles, AGroupQueuedBeforeDestroyFailsAtItsEnd) {
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  cc_config_t config = makeConfig(RankOptions{});
  cc_comm_t comm = nullptr;
  ASSERT_EQ(cc_comm_init_rank(&comm, 1, id, 0, &config), CC_SUCCESS) << cc_get_last_error(nullptr);
  float value = 1.0f;
  ASSERT_EQ(cc_group_start(), CC_SUCCESS);
  ASSERT_EQ(compressed_allreduce(&value, &value, 1, CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS);
  ASSERT_EQ(cc_comm_destroy(comm), CC_SUCCESS);
  EXPECT_EQ(cc_group_end(), CC_INVALID_USAGE);
  EXPECT_NE(std::strstr(cc_get_last_error(nullptr), "not a live communicator"), nullptr) << cc_get_last_error(nullptr);
}

TEST(DeadHandles, AbortAfterAbortIsRefused) {
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  cc_config_t config = makeConfig(RankOptions{});
  cc_comm_t comm = nullptr;
  ASSERT_EQ(cc_comm_init_rank(&comm, 1, id, 0, &config), CC_SUCCESS) << cc_get_last_error(nullptr);
  EXPECT_EQ(cc_comm_abort(comm), CC_SUCCESS);
  EXPECT_EQ(cc_comm_abort(comm), CC_INVALID_USAGE);
  EXPECT_EQ(cc_comm_destroy(comm), CC_INVALID_USAGE);
}

}  // namespace
