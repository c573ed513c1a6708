// The switch with everything in processes of its own: the installed daemon
// binary (cc_switchd) and ranks as processes over Gloo TCP on loopback.
// A rank killed with SIGKILL makes the others fail naming it within their
// timeout; the daemon ends the job, frees its slots and serves the next one;
// SIGUSR1 prints its counters and SIGTERM ends it cleanly.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_helpers.h"

using namespace cctest;

namespace {

constexpr int kMaxRanks = 8;

struct Shared {
  int status[kMaxRanks];
  uint64_t digest[kMaxRanks];
  double error;
  double seconds[kMaxRanks];
  char message[kMaxRanks][512];
};

uint64_t fnv64(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

// cc_switchd as a child process; its stderr (counters, job lines) in a file.
class DaemonProcess {
 public:
  DaemonProcess() {
    char logTemplate[] = "/tmp/cc_switchd_test_XXXXXX";
    const int logFd = mkstemp(logTemplate);
    log_ = logTemplate;
    int out[2];
    if (logFd < 0 || pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(logFd, 2);
      close(out[0]);
      execl(CC_SWITCHD_PATH, CC_SWITCHD_PATH, "--listen", "127.0.0.1:0", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    close(logFd);
    // "cc_switchd: listening on 127.0.0.1:PORT (...)" then "ready".
    std::string text;
    char c;
    while (text.find("ready\n") == std::string::npos && read(out[0], &c, 1) == 1) text += c;
    close(out[0]);
    const std::string marker = "listening on ";
    const size_t at = text.find(marker);
    if (at != std::string::npos) {
      const size_t end = text.find(' ', at + marker.size());
      address_ = text.substr(at + marker.size(), end - at - marker.size());
    }
  }
  ~DaemonProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    unlink(log_.c_str());
  }
  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // The last counters line after SIGUSR1 (or at exit).
  std::string counters(bool signal = true) const {
    const size_t before = log().size();
    if (signal) kill(pid_, SIGUSR1);
    for (int i = 0; i < 200; ++i) {
      const std::string text = log();
      const size_t line = text.rfind("cc_switchd: rx=");
      if (line != std::string::npos && (line >= before || !signal)) return text.substr(line, text.find('\n', line) - line);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return "";
  }
  int terminate() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string address_;
  std::string log_;
};

uint64_t counter(const std::string& line, const std::string& name) {
  const size_t at = line.find(" " + name + "=");
  if (at == std::string::npos) return ~0ull;
  return std::strtoull(line.c_str() + at + name.size() + 2, nullptr, 10);
}

// Forks nranks processes running body(rank, id, shared); waits for them.
template <typename Body>
Shared* runProcesses(int nranks, Body body) {
  void* memory = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  auto* shared = new (memory) Shared();
  cc_unique_id_t id;
  if (cc_get_unique_id(&id) != CC_SUCCESS) return nullptr;
  std::vector<pid_t> children;
  for (int rank = 0; rank < nranks; ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      alarm(120);  // never outlive the test
      shared->status[rank] = body(rank, id, shared) ? 0 : 1;
      std::fflush(nullptr);
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t child : children) waitpid(child, nullptr, 0);
  return shared;
}

cc_config_t configFor(const std::string& address, const char* codec, int timeoutMs) {
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "tcp";
  config.codec = codec;
  config.algo = "switch";
  config.switch_addr = address.c_str();
  config.timeout_ms = timeoutMs;
  config.has_seed = 1;
  config.seed = 99;
  return config;
}

bool allreduceOnce(int rank, int nranks, const cc_unique_id_t& id, const std::string& address, const char* codec,
                   size_t count, Shared* shared) {
  cc_config_t config = configFor(address, codec, 30000);
  cc_comm_t comm = nullptr;
  if (cc_comm_init_rank(&comm, nranks, id, rank, &config) != CC_SUCCESS) {
    std::snprintf(shared->message[rank], 512, "init: %s", cc_get_last_error(nullptr));
    return false;
  }
  const std::vector<float> input = makeInput(count, rank);
  std::vector<float> output(count);
  const cc_result_t result = compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr);
  if (result != CC_SUCCESS) std::snprintf(shared->message[rank], 512, "%s", cc_get_last_error(comm));
  shared->digest[rank] = fnv64(output.data(), count * sizeof(float));
  if (rank == 0) {
    const std::vector<double> exact = exactSum(count, nranks);
    double num = 0, den = 0;
    for (size_t i = 0; i < count; ++i) {
      num += (output[i] - exact[i]) * (output[i] - exact[i]);
      den += exact[i] * exact[i];
    }
    shared->error = std::sqrt(num / den);
  }
  cc_comm_destroy(comm);
  return result == CC_SUCCESS;
}

TEST(SwitchProcesses, RanksAsProcessesGetIdenticalBytes) {
  DaemonProcess daemon;
  ASSERT_FALSE(daemon.address().empty()) << daemon.log();
  for (const char* codec : {"nat", "none"}) {
    const int nranks = 4;
    const size_t count = 1 << 20;
    Shared* shared = runProcesses(nranks, [&](int rank, const cc_unique_id_t& id, Shared* s) {
      return allreduceOnce(rank, nranks, id, daemon.address(), codec, count, s);
    });
    ASSERT_NE(shared, nullptr);
    for (int r = 0; r < nranks; ++r) {
      EXPECT_EQ(shared->status[r], 0) << codec << " rank " << r << ": " << shared->message[r];
      EXPECT_EQ(shared->digest[r], shared->digest[0]) << codec << " rank " << r;
    }
    EXPECT_LT(shared->error, std::string(codec) == "nat" ? 0.6 : 1e-6) << codec;
    munmap(shared, sizeof(Shared));
  }
  const std::string line = daemon.counters();
  EXPECT_EQ(counter(line, "jobs_admitted"), 2u) << line;
  EXPECT_EQ(counter(line, "jobs_left"), 2u) << line;
  EXPECT_EQ(counter(line, "jobs"), 0u) << line;
  EXPECT_EQ(counter(line, "slots_free"), 512u) << line;
  EXPECT_EQ(daemon.terminate(), 0);  // WIFEXITED with status 0
  EXPECT_NE(daemon.log().find("cc_switchd: rx="), std::string::npos);
}

TEST(SwitchProcesses, AKilledRankFailsTheOthersNamingItAndTheDaemonServesTheNextJob) {
  DaemonProcess daemon;
  ASSERT_FALSE(daemon.address().empty()) << daemon.log();
  const int nranks = 3, timeoutMs = 2000;
  Shared* shared = runProcesses(nranks, [&](int rank, const cc_unique_id_t& id, Shared* s) {
    cc_config_t config = configFor(daemon.address(), "nat", timeoutMs);
    cc_comm_t comm = nullptr;
    if (cc_comm_init_rank(&comm, nranks, id, rank, &config) != CC_SUCCESS) {
      std::snprintf(s->message[rank], 512, "init: %s", cc_get_last_error(nullptr));
      return false;
    }
    std::vector<float> x(200000, 1.0f), y(200000);
    if (compressed_allreduce(x.data(), y.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr) != CC_SUCCESS) {
      std::snprintf(s->message[rank], 512, "first call: %s", cc_get_last_error(comm));
      return false;
    }
    if (rank == 2) raise(SIGKILL);
    const auto start = std::chrono::steady_clock::now();
    const cc_result_t result = compressed_allreduce(x.data(), y.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
    s->seconds[rank] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::snprintf(s->message[rank], 512, "%s", cc_get_last_error(comm));
    cc_comm_destroy(comm);
    return result == CC_TIMEOUT || result == CC_REMOTE_ERROR;
  });
  ASSERT_NE(shared, nullptr);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(shared->status[r], 0) << "rank " << r << ": " << shared->message[r];
    EXPECT_NE(std::string(shared->message[r]).find("rank(s) 2"), std::string::npos) << shared->message[r];
    EXPECT_LT(shared->seconds[r], timeoutMs / 1000.0 + 2.0) << "rank " << r;
  }
  munmap(shared, sizeof(Shared));
  // The job ended (ABORT from the first rank that gave up, or the stall
  // limit) and its slots are back in the pool.
  std::string line;
  for (int i = 0; i < 50; ++i) {
    line = daemon.counters();
    if (counter(line, "jobs") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(counter(line, "jobs"), 0u) << line;
  EXPECT_EQ(counter(line, "slots_free"), 512u) << line;
  EXPECT_GE(counter(line, "jobs_aborted") + counter(line, "jobs_timed_out"), 1u) << line;
  Shared* next = runProcesses(2, [&](int rank, const cc_unique_id_t& id, Shared* s) {
    return allreduceOnce(rank, 2, id, daemon.address(), "none", 100000, s);
  });
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->status[0], 0) << next->message[0];
  EXPECT_EQ(next->status[1], 0) << next->message[1];
  EXPECT_EQ(next->digest[0], next->digest[1]);
  munmap(next, sizeof(Shared));
  EXPECT_EQ(daemon.terminate(), 0);
}

TEST(SwitchProcesses, DaemonRejectsBadOptions) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{}, {"--listen", "nowhere"}, {"--listen", "127.0.0.1:0", "--loss-up", "101"},
        {"--listen", "127.0.0.1:0", "--bogus"}}) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv{const_cast<char*>(CC_SWITCHD_PATH)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      dup2(devnull, 1);
      execv(CC_SWITCHD_PATH, argv.data());
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_NE(WEXITSTATUS(status), 0);
    EXPECT_NE(WEXITSTATUS(status), 127);
  }
}

}  // namespace
