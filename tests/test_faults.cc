// Faults and misuse (label `fault`): dead, stopped and aborting peers, a
// communicator aborted or destroyed while a call is blocked, handles used
// after they died. Ranks are processes (fork) over Gloo TCP on loopback;
// every process keeps SIGPIPE at its default disposition, so a write to a
// dead peer that raised it would kill a survivor (seen as a signal in its
// wait status) instead of returning an error.
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/bootstrap.h"
#include "comm/store_protocol.h"
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
  std::atomic<int> finished{0};  // ranks done with their call, for those that wait on each other
};

// The running runRankProcesses' shared page (its rank processes see it too).
Shared* currentShared = nullptr;

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
  currentShared = outcome.shared;
  cc_unique_id_t id;
  if (cc_get_unique_id(&id) != CC_SUCCESS) {
    ADD_FAILURE() << cc_get_last_error(nullptr);
    return outcome;
  }
  std::fflush(nullptr);  // or every child would print the parent's pending output again
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
    // docs/reliability.md quotes these lines.
    std::printf("%s %s: survivor rank %d after %.3f s: %s\n", c.algo, c.codec, rank, report.seconds, report.message);
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
    // A survivor that timed out first must not close its connections while
    // the other still waits: that one would see them close instead of its
    // own timeout.
    currentShared->finished.fetch_add(1);
    while (currentShared->finished.load() < n - 1 && secondsSince(start) < 30) usleep(10000);
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
    std::printf("rank %d after %.3f s: %s\n", rank, report.seconds, report.message);
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
  std::printf("%.3f s after the abort: %s\n", report.seconds, report.message);
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

// ------------------------------------------------------- failed init, root

// The root fails its init (one rank's codec differs) and exits at once; every
// other rank must still learn why, not that the store went away. 20 runs.
TEST(InitFailure, EveryRankGetsTheCauseWhenTheRootExitsAtOnce) {
  constexpr int n = 4;
  for (int run = 0; run < 20; ++run) {
    SCOPED_TRACE("run " + std::to_string(run));
    Outcome outcome = runRankProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, RankReport* report) {
      cc_comm_t comm = nullptr;
      cc_config_t config = CC_CONFIG_INITIALIZER;
      config.transport = "tcp";
      config.codec = rank == 2 ? "none" : "nat";
      config.timeout_ms = 20000;
      report->result = cc_comm_init_rank(&comm, n, id, rank, &config);
      std::snprintf(report->message, sizeof(report->message), "%s", cc_get_last_error(nullptr));
      if (rank == 0) _exit(0);  // the root leaves right after its failed init
    });
    for (int rank = 0; rank < n; ++rank) {
      const RankReport& report = outcome.shared->rank[rank];
      EXPECT_EQ(report.result, CC_INVALID_USAGE) << "rank " << rank << ": " << report.message;
      EXPECT_NE(std::strstr(report.message, "codec none differs from rank 0's nat"), nullptr)
          << "rank " << rank << ": " << report.message;
      if (run == 0) std::printf("rank %d: %s\n", rank, report.message);
    }
  }
}

// A rank that never starts: the others' init times out naming it.
TEST(InitFailure, ATimeoutNamesTheRanksThatNeverJoined) {
  constexpr int n = 3;
  Outcome outcome = runRankProcesses(n, 60, [&](int rank, const cc_unique_id_t& id, RankReport* report) {
    if (rank == 2) return;  // never joins
    cc_comm_t comm = nullptr;
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.transport = "tcp";
    config.timeout_ms = 1000;
    const auto start = Clock::now();
    report->result = cc_comm_init_rank(&comm, n, id, rank, &config);
    report->seconds = secondsSince(start);
    std::snprintf(report->message, sizeof(report->message), "%s", cc_get_last_error(nullptr));
  });
  for (int rank : {0, 1}) {
    const RankReport& report = outcome.shared->rank[rank];
    EXPECT_EQ(report.result, CC_TIMEOUT) << report.message;
    EXPECT_LT(report.seconds, 5.0) << report.message;
    EXPECT_NE(std::strstr(report.message, "never joined the bootstrap store: 2"), nullptr) << report.message;
    std::printf("rank %d after %.3f s: %s\n", rank, report.seconds, report.message);
  }
}

// ------------------------------------------------------- hostile bootstrap

// A store served by a child process, for measuring what hostile clients cost
// it: its id, pid, and what it wrote to stderr.
class StoreProcess {
 public:
  // `maxFds`: the child's RLIMIT_NOFILE (0 leaves it).
  explicit StoreProcess(rlim_t maxFds = 0) {
    int idPipe[2];
    EXPECT_EQ(pipe(idPipe), 0);
    stderrPath_ = "/tmp/cc-fault-store-" + std::to_string(getpid()) + "-" + std::to_string(counter_++) + ".log";
    pid_ = fork();
    if (pid_ == 0) {
      close(idPipe[0]);
      if (std::freopen(stderrPath_.c_str(), "w", stderr) != nullptr) setvbuf(stderr, nullptr, _IONBF, 0);
      if (maxFds != 0) {
        rlimit limit{maxFds, maxFds};
        setrlimit(RLIMIT_NOFILE, &limit);
      }
      setenv("CC_SOCKET_IFNAME", "lo", 1);
      unsetenv("CC_COMM_ID");
      cc_unique_id_t id;
      if (cc_get_unique_id(&id) != CC_SUCCESS) _exit(3);
      if (write(idPipe[1], &id, sizeof(id)) != static_cast<ssize_t>(sizeof(id))) _exit(4);
      for (;;) pause();  // the store thread serves
    }
    close(idPipe[1]);
    EXPECT_EQ(read(idPipe[0], &id_, sizeof(id_)), static_cast<ssize_t>(sizeof(id_)));
    close(idPipe[0]);
    EXPECT_EQ(cc::decodeUniqueId(id_, &root_), CC_SUCCESS);
  }
  ~StoreProcess() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    std::remove(stderrPath_.c_str());
  }
  const cc::RootAddress& root() const { return root_; }
  // Peak resident memory so far (VmHWM), in KiB.
  long peakKiB() const { return statusField("VmHWM:"); }
  long residentKiB() const { return statusField("VmRSS:"); }
  // User + system CPU seconds so far.
  double cpuSeconds() const {
    std::ifstream stat("/proc/" + std::to_string(pid_) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream fields(text.substr(text.rfind(')') + 2));
    std::string field;
    long ticks = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i == 14 || i == 15) ticks += std::stol(field);
    }
    return static_cast<double>(ticks) / sysconf(_SC_CLK_TCK);
  }
  std::vector<std::string> stderrLines() const {
    std::ifstream log(stderrPath_);
    std::vector<std::string> lines;
    for (std::string line; std::getline(log, line);) lines.push_back(line);
    return lines;
  }

 private:
  long statusField(const char* name) const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind(name, 0) == 0) return std::stol(line.substr(std::strlen(name)));
    }
    return -1;
  }
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  cc_unique_id_t id_{};
  cc::RootAddress root_;
  std::string stderrPath_;
};

int connectTo(const cc::RootAddress& root) {
  int fd = socket(root.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&root.addr), cc::store::sockaddrLength(root.addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True when the store closed `fd` within `timeoutMs`.
bool closedByStore(int fd, int timeoutMs = 5000) {
  const auto start = Clock::now();
  char buf[4096];
  while (secondsSince(start) * 1000 < timeoutMs) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 50) <= 0) continue;
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got <= 0) return true;
  }
  return false;
}

std::vector<char> joinFrame(const cc::RootAddress& root, const uint8_t* secret, int rank, int nranks) {
  cc::store::FrameWriter frame;
  frame.u8(static_cast<uint8_t>(cc::store::Op::Join))
      .u32(cc::store::kProtocolMagic)
      .u16(cc::store::kProtocolVersion)
      .u64(root.nonce)
      .raw(reinterpret_cast<const char*>(secret), cc::store::kSecretBytes)
      .i32(rank)
      .i32(nranks);
  return frame.finish();
}

// The one rank of the store's job joins and passes a barrier with the real secret.
void expectARankCanStillJoin(const cc::RootAddress& root, int timeoutMs = 10000) {
  std::unique_ptr<cc::StoreClient> client;
  EXPECT_EQ(cc::StoreClient::connect(root, 0, 1, timeoutMs, &client), CC_SUCCESS) << cc::lastErrorMessage();
  if (client) {
    EXPECT_EQ(client->barrier("after-the-attack"), CC_SUCCESS) << cc::lastErrorMessage();
  }
}

// Four connections announce maximum-length frames and start sending them:
// before joining, nothing beyond a JOIN's 64 bytes is buffered for them.
TEST(HostileBootstrap, MaxLengthFramesBeforeJoinCostNoMemory) {
  StoreProcess store;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const long idleKiB = store.residentKiB();
  std::vector<int> fds;
  std::vector<char> chunk(1 << 20, 'x');
  for (int i = 0; i < 4; ++i) {
    int fd = connectTo(store.root());
    ASSERT_GE(fd, 0);
    const uint32_t length = static_cast<uint32_t>(cc::store::kMaxFrameBytes);
    char header[4] = {static_cast<char>(length), static_cast<char>(length >> 8), static_cast<char>(length >> 16),
                      static_cast<char>(length >> 24)};
    send(fd, header, sizeof(header), MSG_NOSIGNAL);
    // As much of the body as the socket takes in a moment.
    for (int k = 0; k < 64; ++k) {
      if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT) <= 0) break;
    }
    fds.push_back(fd);
  }
  for (int fd : fds) EXPECT_TRUE(closedByStore(fd)) << "a max-length frame before JOIN was not refused";
  const long peakKiB = store.peakKiB();
  EXPECT_LT(peakKiB - idleKiB, 16 * 1024) << "idle " << idleKiB << " KiB, peak " << peakKiB << " KiB";
  RecordProperty("store_idle_kib", std::to_string(idleKiB));
  RecordProperty("store_peak_kib", std::to_string(peakKiB));
  std::printf("store resident: idle %ld KiB, peak under 4 max-length frames %ld KiB\n", idleKiB, peakKiB);
  for (int fd : fds) close(fd);
  expectARankCanStillJoin(store.root());
}

// A JOIN with the right nonce but not the secret is refused, and the job
// goes on; so are the other forged and malformed JOINs.
TEST(HostileBootstrap, ForgedJoinsWithoutTheSecretAreRefused) {
  StoreProcess store;
  const cc::RootAddress& root = store.root();
  uint8_t wrong[cc::store::kSecretBytes];
  std::memcpy(wrong, root.secret, sizeof(wrong));
  wrong[7] ^= 0x01;  // one bit off
  int fd = connectTo(root);
  ASSERT_GE(fd, 0);
  std::vector<char> frame = joinFrame(root, wrong, 0, 2);
  send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
  char reply[512] = {};
  pollfd pfd{fd, POLLIN, 0};
  ASSERT_GT(poll(&pfd, 1, 5000), 0);
  ssize_t got = recv(fd, reply, sizeof(reply) - 1, 0);
  ASSERT_GT(got, 5);
  EXPECT_EQ(reply[4], static_cast<char>(cc::store::Status::Error));
  EXPECT_NE(std::string(reply + 5, got - 5).find("secret does not match"), std::string::npos);
  EXPECT_TRUE(closedByStore(fd));
  close(fd);
  // The real rank 0 of that job still joins: the forged JOIN took nothing.
  expectARankCanStillJoin(root);
}

// Random bytes, truncated and garbled frames, from many connections: the
// store drops them all, writes at most a line a second per kind, and the
// job's ranks join as if nothing happened.
TEST(HostileBootstrap, FuzzedClientsAreDroppedAndRanksStillJoin) {
  StoreProcess store;
  const cc::RootAddress& root = store.root();
  std::mt19937 random(2026);
  for (int client = 0; client < 300; ++client) {
    int fd = connectTo(root);
    ASSERT_GE(fd, 0);
    std::vector<char> bytes;
    switch (client % 4) {
      case 0:  // noise
        bytes.resize(random() % 200);
        for (char& b : bytes) b = static_cast<char>(random());
        break;
      case 1:  // a real JOIN, cut short
        bytes = joinFrame(root, root.secret, 0, 2);
        bytes.resize(random() % bytes.size());
        break;
      case 2: {  // a real JOIN with one byte of its header, nonce or secret flipped
        bytes = joinFrame(root, root.secret, 1, 2);
        const size_t credentialsEnd = 4 + 1 + 4 + 2 + 8 + cc::store::kSecretBytes;
        bytes[random() % credentialsEnd] ^= static_cast<char>(1 + random() % 255);
        break;
      }
      default: {  // a JOIN with a random secret
        uint8_t guess[cc::store::kSecretBytes];
        for (uint8_t& b : guess) b = static_cast<uint8_t>(random());
        bytes = joinFrame(root, guess, 1, 2);
      }
    }
    if (!bytes.empty()) send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    close(fd);
  }
  expectARankCanStillJoin(root);
  // Every warning line of the store carries its kind in the text before the
  // peer's address; count repeats of a kind within one second of each other.
  std::map<std::string, int> perKind;
  for (const std::string& line : store.stderrLines()) {
    const size_t from = line.find(": closing the connection from ");
    if (from != std::string::npos) ++perKind["closing"];
    if (line.find("refused a JOIN") != std::string::npos) ++perKind["refused"];
  }
  for (const auto& [kind, lines] : perKind) {
    EXPECT_LE(lines, 5) << lines << " '" << kind << "' lines for 300 hostile connections in about a second";
  }
}

// Connections that never JOIN: at most 64 wait at once (the 65th pushes the
// oldest out), and each is closed 10 s after it connected; a rank joins
// meanwhile as if they were not there.
TEST(HostileBootstrap, StrangersAreCappedAndClosedAtTheJoinDeadline) {
  StoreProcess store;
  const cc::RootAddress& root = store.root();
  std::vector<int> fds;
  const auto start = Clock::now();
  for (int i = 0; i < 65; ++i) {
    int fd = connectTo(root);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  EXPECT_TRUE(closedByStore(fds[0], 2000)) << "the oldest of 65 waiting connections was kept";
  // The job's one rank joins while they wait, and stays (once every rank has
  // come and gone, the store stops and closes everything). Its connection is
  // the 65th waiting one for a moment: it pushes out the next oldest, fds[1].
  std::unique_ptr<cc::StoreClient> rank;
  ASSERT_EQ(cc::StoreClient::connect(root, 0, 1, 5000, &rank), CC_SUCCESS) << cc::lastErrorMessage();
  // The others go at their deadline, 10 s after connecting, not before.
  EXPECT_FALSE(closedByStore(fds.back(), 8000 - static_cast<int>(secondsSince(start) * 1000)))
      << "closed before the JOIN deadline";
  for (size_t i = 1; i < fds.size(); ++i) {
    EXPECT_TRUE(closedByStore(fds[i], 4000)) << "connection " << i << " outlived the JOIN deadline";
  }
  std::printf("65 connections that never joined: the oldest closed at once, the rest %.1f s after connecting\n",
              secondsSince(start));
  for (int fd : fds) close(fd);
}

// 150 idle connections against a store limited to 48 descriptors: accept()
// fails with EMFILE. The store must not spin or flood its log, and a rank
// must still get in.
TEST(HostileBootstrap, DescriptorExhaustionNeitherSpinsNorLocksRanksOut) {
  StoreProcess store(48);
  const cc::RootAddress& root = store.root();
  std::vector<int> fds;
  for (int i = 0; i < 150; ++i) {
    int fd = connectTo(root);  // the kernel's backlog accepts them for the store
    if (fd >= 0) fds.push_back(fd);
  }
  const double cpuBefore = store.cpuSeconds();

  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double cpu = store.cpuSeconds() - cpuBefore;
  EXPECT_LT(cpu, 0.5) << "the store burned " << cpu << " s of CPU in 3 s of EMFILE";
  size_t acceptLines = 0;
  for (const std::string& line : store.stderrLines()) acceptLines += line.find("accept failed") != std::string::npos;
  EXPECT_LE(acceptLines, 5u) << acceptLines << " accept warnings in about 3 s";
  const auto start = Clock::now();
  expectARankCanStillJoin(root, 20000);
  std::printf("EMFILE: %.3f s of store CPU in 3 s, %zu accept warnings, a rank joined after %.2f s\n", cpu,
              acceptLines, secondsSince(start));
  for (int fd : fds) close(fd);
}

}  // namespace
