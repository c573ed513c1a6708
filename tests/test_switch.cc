// CC_ALGO=switch end to end in one process: a cc_switchd dataplane on a
// thread (switch/daemon.h) on loopback UDP, ranks as threads. Every rank
// ends with the same bytes; the int32 path sums exactly; loss in either
// direction changes nothing in the result; jobs share the daemon; a missing
// rank makes the others fail naming it while the daemon frees the job.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "switch/daemon.h"
#include "test_helpers.h"

using namespace cctest;

namespace {

// A daemon on 127.0.0.1, on its own thread, for the test's lifetime.
class LocalSwitch {
 public:
  explicit LocalSwitch(double lossUp = 0, double lossDown = 0, uint64_t seed = 1) {
    cc::switchd::Options options;
    options.listen = "127.0.0.1:0";
    options.lossUp = lossUp;
    options.lossDown = lossDown;
    options.seed = seed;
    options.quiet = true;
    daemon_ = std::make_unique<cc::switchd::Daemon>(options);
    started_ = daemon_->start() == CC_SUCCESS;
    if (started_) thread_ = std::thread([this] { daemon_->run(); });
  }
  ~LocalSwitch() {
    daemon_->stop();
    if (thread_.joinable()) thread_.join();
  }
  bool started() const { return started_; }
  std::string address() const { return daemon_->address(); }
  cc::switchd::Counters counters() const { return daemon_->counters(); }
  int jobs() const { return daemon_->jobs(); }
  // The daemon publishes its figures when quiet: wait until `ready` holds.
  template <typename Predicate>
  bool waitFor(Predicate ready, int milliseconds = 5000) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(milliseconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (ready()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return ready();
  }

 private:
  std::unique_ptr<cc::switchd::Daemon> daemon_;
  std::thread thread_;
  bool started_ = false;
};

struct SwitchRun {
  const char* codec = "nat";
  const char* master = nullptr;
  const char* algo = "switch";
  std::string address;
  int timeoutMs = 20000;
  unsigned long long seed = 4321;
};

cc_config_t configOf(const SwitchRun& run) {
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "local";
  config.codec = run.codec;
  config.algo = run.algo;
  config.master_codec = run.master;
  config.timeout_ms = run.timeoutMs;
  config.has_seed = 1;
  config.seed = run.seed;
  config.switch_addr = run.address.empty() ? nullptr : run.address.c_str();
  return config;
}

// Ranks as threads; body(rank, comm) per rank; returns each rank's init
// result and message.
struct InitOutcome {
  std::vector<cc_result_t> codes;
  std::vector<std::string> messages;
};

InitOutcome runSwitchRanks(int nranks, const SwitchRun& run, const std::function<void(int, cc_comm_t)>& body) {
  cc_unique_id_t id;
  EXPECT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  InitOutcome outcome;
  outcome.codes.assign(nranks, CC_SUCCESS);
  outcome.messages.assign(nranks, "");
  std::vector<std::thread> threads;
  for (int rank = 0; rank < nranks; ++rank) {
    threads.emplace_back([&, rank] {
      cc_config_t config = configOf(run);
      cc_comm_t comm = nullptr;
      outcome.codes[rank] = cc_comm_init_rank(&comm, nranks, id, rank, &config);
      if (outcome.codes[rank] != CC_SUCCESS) {
        outcome.messages[rank] = cc_get_last_error(nullptr);
        return;
      }
      body(rank, comm);
      cc_comm_destroy(comm);
    });
  }
  for (auto& thread : threads) thread.join();
  return outcome;
}

// Per rank, the result of one allreduce of makeInput(count, rank, salt).
std::vector<std::vector<float>> allreduce(int nranks, const SwitchRun& run, size_t count, uint64_t salt = 0) {
  std::vector<std::vector<float>> outputs(nranks, std::vector<float>(count, -1.0f));
  const InitOutcome init = runSwitchRanks(nranks, run, [&](int rank, cc_comm_t comm) {
    const std::vector<float> input = makeInput(count, rank, salt);
    EXPECT_EQ(compressed_allreduce(input.data(), outputs[rank].data(), count, CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS)
        << "rank " << rank << ": " << cc_get_last_error(nullptr);
  });
  for (int rank = 0; rank < nranks; ++rank) {
    EXPECT_EQ(init.codes[rank], CC_SUCCESS) << "rank " << rank << ": " << init.messages[rank];
  }
  return outputs;
}

double relativeError(const std::vector<float>& out, const std::vector<double>& exact) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    num += (out[i] - exact[i]) * (out[i] - exact[i]);
    den += exact[i] * exact[i];
  }
  return std::sqrt(num / den);
}

void expectIdentical(const std::vector<std::vector<float>>& outputs) {
  for (size_t r = 1; r < outputs.size(); ++r) {
    ASSERT_EQ(std::memcmp(outputs[r].data(), outputs[0].data(), outputs[0].size() * sizeof(float)), 0)
        << "rank " << r << " differs from rank 0";
  }
}

constexpr size_t kCount = 100000 + 17;  // many packets and a ragged tail

TEST(SwitchAllreduce, NatUpNatDownIsBitIdenticalAndUnbiasedlyClose) {
  LocalSwitch daemon;
  ASSERT_TRUE(daemon.started());
  SwitchRun run;
  run.address = daemon.address();
  const auto outputs = allreduce(4, run, kCount);
  expectIdentical(outputs);
  const double error = relativeError(outputs[0], exactSum(kCount, 4));
  EXPECT_LT(error, 0.6);   // two nat encodes (omega 1/8 each)
  EXPECT_GT(error, 0.01);  // it did go through nat
  EXPECT_GT(daemon.counters().rounds, kCount / 7936);
}

TEST(SwitchAllreduce, Int32FixedPointIsBitIdenticalAndNearFloat) {
  LocalSwitch daemon;
  SwitchRun run;
  run.codec = "none";
  run.address = daemon.address();
  const auto outputs = allreduce(4, run, kCount);
  expectIdentical(outputs);
  EXPECT_LT(relativeError(outputs[0], exactSum(kCount, 4)), 1e-6);
}

// Values that fixed point holds exactly: the int32 path returns the exact sum.
std::vector<std::vector<float>> integerAllreduce(int nranks, const SwitchRun& run, size_t count) {
  std::vector<std::vector<float>> outputs(nranks, std::vector<float>(count));
  const InitOutcome init = runSwitchRanks(nranks, run, [&](int rank, cc_comm_t comm) {
    std::vector<float> input(count);
    for (size_t i = 0; i < count; ++i) input[i] = static_cast<float>(static_cast<int>((i * 7 + rank * 13) % 201) - 100);
    EXPECT_EQ(compressed_allreduce(input.data(), outputs[rank].data(), count, CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS)
        << cc_get_last_error(nullptr);
  });
  for (int rank = 0; rank < nranks; ++rank) EXPECT_EQ(init.codes[rank], CC_SUCCESS) << init.messages[rank];
  return outputs;
}

void expectExactIntegerSums(const std::vector<std::vector<float>>& outputs, size_t count) {
  const int nranks = static_cast<int>(outputs.size());
  for (size_t i = 0; i < count; ++i) {
    int sum = 0;
    for (int r = 0; r < nranks; ++r) sum += static_cast<int>((i * 7 + r * 13) % 201) - 100;
    for (int r = 0; r < nranks; ++r) ASSERT_EQ(outputs[r][i], static_cast<float>(sum)) << "value " << i << " rank " << r;
  }
}

TEST(SwitchAllreduce, IntegerValuesSumExactly) {
  LocalSwitch daemon;
  SwitchRun run;
  run.codec = "none";
  run.address = daemon.address();
  expectExactIntegerSums(integerAllreduce(3, run, kCount), kCount);
}

TEST(SwitchAllreduce, SmallDatagramsCarryTheSameSums) {
  LocalSwitch daemon;
  ScopedEnv packet("CC_SWITCH_PACKET_BYTES", "600");  // 16 nat blocks or 128 int32 values a packet
  SwitchRun run;
  run.codec = "none";
  run.address = daemon.address();
  expectExactIntegerSums(integerAllreduce(3, run, 20000 + 3), 20000 + 3);
}

// AVG is the same sums divided on the way out: x / n for every value,
// whether n is a power of two (a product there) or not.
TEST(SwitchAllreduce, AvgIsTheSumDividedByTheRanks) {
  LocalSwitch daemon;
  SwitchRun run;
  run.address = daemon.address();
  for (int nranks : {4, 3}) {
    std::vector<std::vector<float>> sums(nranks, std::vector<float>(kCount)), averages = sums;
    const InitOutcome init = runSwitchRanks(nranks, run, [&](int rank, cc_comm_t comm) {
      const std::vector<float> input = makeInput(kCount, rank);
      EXPECT_EQ(compressed_allreduce(input.data(), sums[rank].data(), kCount, CC_FLOAT32, CC_SUM, comm, nullptr),
                CC_SUCCESS);
      EXPECT_EQ(compressed_allreduce(input.data(), averages[rank].data(), kCount, CC_FLOAT32, CC_AVG, comm, nullptr),
                CC_SUCCESS);
    });
    ASSERT_EQ(init.codes, std::vector<cc_result_t>(nranks, CC_SUCCESS)) << init.messages[0];
    // Two calls of one communicator draw different random streams: compare
    // each AVG with a SUM of a fresh communicator's second call instead.
    std::vector<std::vector<float>> reference(nranks, std::vector<float>(kCount));
    runSwitchRanks(nranks, run, [&](int rank, cc_comm_t comm) {
      const std::vector<float> input = makeInput(kCount, rank);
      std::vector<float> first(kCount);
      EXPECT_EQ(compressed_allreduce(input.data(), first.data(), kCount, CC_FLOAT32, CC_SUM, comm, nullptr),
                CC_SUCCESS);
      EXPECT_EQ(compressed_allreduce(input.data(), reference[rank].data(), kCount, CC_FLOAT32, CC_SUM, comm, nullptr),
                CC_SUCCESS);
    });
    expectIdentical(averages);
    for (int rank = 0; rank < nranks; ++rank) {
      for (size_t i = 0; i < kCount; ++i) {
        const float expected = reference[rank][i] / static_cast<float>(nranks);
        ASSERT_EQ(std::memcmp(&averages[rank][i], &expected, sizeof(float)), 0)
            << nranks << " ranks, rank " << rank << ", value " << i << ": " << averages[rank][i] << " against "
            << reference[rank][i] << " / " << nranks;
      }
    }
  }
}

// A rank's nat packet depends on its values, its index and the agreed
// exponent, not on when the rank encodes it (a window ahead, or when sent):
// a window of 1 packet and the default give the same sums and, with error
// feedback, the same residuals. The downlink is int32 (exact sums of the
// uplink's codes): a nat downlink's rounding is keyed by slot and round,
// which the window changes.
TEST(SwitchAllreduce, UplinkCodesAndResidualsDoNotDependOnTheWindow) {
  LocalSwitch daemon;
  SwitchRun run;
  run.master = "none";
  run.address = daemon.address();
  constexpr int kRanks = 3;
  struct Outcome {
    std::vector<std::vector<float>> outputs, residuals;
  };
  auto runWith = [&](const char* window, bool errorFeedback) {
    ScopedEnv windowSetting("CC_SWITCH_WINDOW", window);
    Outcome outcome;
    outcome.outputs.assign(kRanks, std::vector<float>(kCount));
    outcome.residuals.assign(kRanks, std::vector<float>(kCount));
    const InitOutcome init = runSwitchRanks(kRanks, run, [&](int rank, cc_comm_t comm) {
      cc_residual_t residual = nullptr;
      if (errorFeedback) {
        ASSERT_EQ(cc_residual_create(&residual, kCount, CC_FLOAT32), CC_SUCCESS);
      }
      for (uint64_t call = 0; call < 2; ++call) {  // the second call starts from the first's residual
        const std::vector<float> input = makeInput(kCount, rank, call);
        EXPECT_EQ(compressed_allreduce_ex(input.data(), outcome.outputs[rank].data(), kCount, CC_FLOAT32, CC_SUM,
                                          comm, nullptr, nullptr, residual),
                  CC_SUCCESS)
            << cc_get_last_error(comm);
      }
      if (residual != nullptr) {
        EXPECT_EQ(cc_residual_get(residual, outcome.residuals[rank].data()), CC_SUCCESS);
        cc_residual_destroy(residual);
      }
    });
    EXPECT_EQ(init.codes, std::vector<cc_result_t>(kRanks, CC_SUCCESS)) << init.messages[0];
    return outcome;
  };
  for (bool errorFeedback : {false, true}) {
    const Outcome one = runWith("1", errorFeedback), many = runWith("64", errorFeedback);
    expectIdentical(many.outputs);
    for (int rank = 0; rank < kRanks; ++rank) {
      EXPECT_EQ(std::memcmp(one.outputs[rank].data(), many.outputs[rank].data(), kCount * sizeof(float)), 0)
          << "rank " << rank << (errorFeedback ? ", with error feedback" : "");
      EXPECT_EQ(std::memcmp(one.residuals[rank].data(), many.residuals[rank].data(), kCount * sizeof(float)), 0)
          << "rank " << rank << (errorFeedback ? ", with error feedback" : "");
    }
    if (errorFeedback) {
      double norm = 0;
      for (float r : many.residuals[0]) norm += static_cast<double>(r) * r;
      EXPECT_GT(norm, 0.0) << "the encodes lost nothing: the residual was not kept";
    }
  }
}

// Error feedback over many calls of the same input, as a training job's
// buckets: every output stays finite and within the codec's reach of the
// exact sum, on every rank alike, with either downlink.
TEST(SwitchAllreduce, ErrorFeedbackOverManyCallsStaysFinite) {
  LocalSwitch daemon;
  constexpr int kRanks = 4, kCalls = 24;
  constexpr size_t kValues = 1 << 20;
  std::vector<double> exact(kValues, 0.0);
  for (int rank = 0; rank < kRanks; ++rank) {
    const std::vector<float> input = makeInput(kValues, rank, 7);
    for (size_t i = 0; i < kValues; ++i) exact[i] += input[i];
  }
  for (const char* master : {"nat", "none"}) {
    SCOPED_TRACE(std::string("downlink ") + master);
    SwitchRun run;
    run.master = master;
    run.address = daemon.address();
    std::vector<std::vector<float>> outputs(kRanks, std::vector<float>(kValues));
    std::vector<size_t> nonFinite(kRanks, 0);
    const InitOutcome init = runSwitchRanks(kRanks, run, [&](int rank, cc_comm_t comm) {
      cc_residual_t residual = nullptr;
      ASSERT_EQ(cc_residual_create(&residual, kValues, CC_FLOAT32), CC_SUCCESS);
      const std::vector<float> input = makeInput(kValues, rank, 7);
      for (int call = 0; call < kCalls; ++call) {
        EXPECT_EQ(compressed_allreduce_ex(input.data(), outputs[rank].data(), kValues, CC_FLOAT32, CC_SUM, comm,
                                          nullptr, nullptr, residual),
                  CC_SUCCESS)
            << cc_get_last_error(comm);
        for (float value : outputs[rank]) nonFinite[rank] += std::isfinite(value) ? 0 : 1;
      }
      cc_residual_destroy(residual);
    });
    EXPECT_EQ(init.codes, std::vector<cc_result_t>(kRanks, CC_SUCCESS)) << init.messages[0];
    EXPECT_EQ(nonFinite, std::vector<size_t>(kRanks, 0));
    expectIdentical(outputs);
    EXPECT_LT(relativeError(outputs[0], exact), 1.0);
  }
}

// Loss in each direction (the daemon's injection): the retransmissions
// recover everything, nothing is counted twice, and the result bytes are
// those of a run without loss (the switch encodes each round once).
class SwitchLoss : public ::testing::TestWithParam<double> {};

TEST_P(SwitchLoss, ResultsAreThoseWithoutLoss) {
  const double loss = GetParam();
  const size_t count = 400000 + 5;
  LocalSwitch clean;
  LocalSwitch lossy(loss, loss, 7);
  for (const char* codec : {"nat", "none"}) {
    SwitchRun run;
    run.codec = codec;
    run.address = clean.address();
    const auto reference = allreduce(3, run, count);
    run.address = lossy.address();
    const auto outputs = allreduce(3, run, count);
    expectIdentical(outputs);
    ASSERT_EQ(std::memcmp(outputs[0].data(), reference[0].data(), count * sizeof(float)), 0)
        << codec << " at " << loss << "% loss differs from the run without loss";
    if (std::string(codec) == "none") expectExactIntegerSums(integerAllreduce(3, run, count), count);
  }
  const cc::switchd::Counters c = lossy.counters();
  if (loss > 0) {
    EXPECT_GT(c.lossUp, 0u);
    EXPECT_GT(c.lossDown, 0u);
    EXPECT_GT(c.resent + c.duplicates, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Percent, SwitchLoss, ::testing::Values(0.0, 1.0, 5.0));

TEST(SwitchAllreduce, TwoJobsShareTheDaemon) {
  LocalSwitch daemon;
  SwitchRun run;
  run.codec = "none";
  run.address = daemon.address();
  std::vector<std::vector<float>> a, b;
  std::thread first([&] { a = integerAllreduce(2, run, 40000); });
  std::thread second([&] { b = integerAllreduce(3, run, 30000); });
  first.join();
  second.join();
  expectExactIntegerSums(a, 40000);
  expectExactIntegerSums(b, 30000);
  EXPECT_EQ(daemon.counters().jobsAdmitted, 2u);
  EXPECT_TRUE(daemon.waitFor([&] { return daemon.jobs() == 0; }));
}

TEST(SwitchAllreduce, OtherCodecsAreUnsupportedNamingTheOnesThatWork) {
  LocalSwitch daemon;
  SwitchRun run;
  run.codec = "qsgd:s=16";
  run.address = daemon.address();
  runSwitchRanks(2, run, [&](int, cc_comm_t comm) {
    std::vector<float> x(1000, 1.0f), y(1000);
    EXPECT_EQ(compressed_allreduce(x.data(), y.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr), CC_UNSUPPORTED);
    const std::string message = cc_get_last_error(nullptr);
    EXPECT_NE(message.find("nat"), std::string::npos) << message;
    EXPECT_NE(message.find("none"), std::string::npos) << message;
  });
  // A downlink other than nat or none, too.
  run.codec = "nat";
  run.master = "qsgd:s=16";
  runSwitchRanks(2, run, [&](int, cc_comm_t comm) {
    std::vector<float> x(1000, 1.0f), y(1000);
    EXPECT_EQ(compressed_allreduce(x.data(), y.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr), CC_UNSUPPORTED);
    EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("nat"), std::string::npos);
  });
}

TEST(SwitchAllreduce, WithoutAnAddressSwitchIsRefusedAndAutoLeavesItOut) {
  SwitchRun run;
  InitOutcome init = runSwitchRanks(2, run, [](int, cc_comm_t) {});
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(init.codes[r], CC_SUCCESS);
    EXPECT_NE(init.messages[r].find("CC_SWITCH_ADDR"), std::string::npos) << init.messages[r];
  }
  run.algo = "auto";
  const auto outputs = allreduce(2, run, 5000);
  expectIdentical(outputs);
}

TEST(SwitchAllreduce, AutoConsidersTheSwitchWhenAnAddressIsSet) {
  LocalSwitch daemon;
  SwitchRun run;
  run.algo = "auto";
  run.address = daemon.address();
  const auto outputs = allreduce(3, run, 200000);
  expectIdentical(outputs);
  EXPECT_EQ(daemon.counters().jobsAdmitted, 1u);
  EXPECT_GT(daemon.counters().rounds, 0u);  // auto's calibration timed it
}

TEST(SwitchAllreduce, BadSwitchSettingsAreRefusedNamingThem) {
  LocalSwitch daemon;
  for (const char* name : {"CC_SWITCH_WINDOW", "CC_SWITCH_COALESCE_US", "CC_SWITCH_PACKET_BYTES"}) {
    ScopedEnv env(name, "lots");
    SwitchRun run;
    run.address = daemon.address();
    const InitOutcome init = runSwitchRanks(2, run, [](int, cc_comm_t) {});
    EXPECT_NE(init.codes[0], CC_SUCCESS);
    EXPECT_NE(init.messages[0].find(name), std::string::npos) << init.messages[0];
  }
  SwitchRun run;
  run.address = "127.0.0.1:notaport";
  const InitOutcome init = runSwitchRanks(2, run, [](int, cc_comm_t) {});
  EXPECT_EQ(init.codes[0], CC_INVALID_ARGUMENT);
  EXPECT_NE(init.messages[0].find("CC_SWITCH_ADDR"), std::string::npos) << init.messages[0];
}

TEST(SwitchAllreduce, AnUnreachableOrSilentSwitchIsATimeoutNamingIt) {
  // Nothing listens on a port just closed; a bound socket that never reads is silent.
  int silent = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(0x7f000001u);
  ASSERT_EQ(bind(silent, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t length = sizeof(address);
  getsockname(silent, reinterpret_cast<sockaddr*>(&address), &length);
  const std::string silentAddress = "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  std::string closedAddress;
  {
    LocalSwitch gone;
    closedAddress = gone.address();
  }
  for (const std::string& target : {silentAddress, closedAddress}) {
    SwitchRun run;
    run.address = target;
    run.timeoutMs = 1500;
    const auto start = std::chrono::steady_clock::now();
    const InitOutcome init = runSwitchRanks(2, run, [](int, cc_comm_t) {});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 10.0);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(init.codes[r], CC_TIMEOUT) << init.messages[r];
      EXPECT_NE(init.messages[r].find(target), std::string::npos) << init.messages[r];
    }
  }
  close(silent);
}

TEST(SwitchAllreduce, AMissingRankFailsTheOthersNamingItAndTheDaemonServesTheNextJob) {
  LocalSwitch daemon;
  SwitchRun run;
  run.codec = "none";
  run.address = daemon.address();
  run.timeoutMs = 1500;
  std::atomic<int> othersDone{0};
  const InitOutcome init = runSwitchRanks(3, run, [&](int rank, cc_comm_t comm) {
    std::vector<float> x(50000, 1.0f), y(50000);
    ASSERT_EQ(compressed_allreduce(x.data(), y.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS);
    if (rank == 2) {
      // Rank 2 "dies": it never makes the second call.
      while (othersDone.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    const cc_result_t result = compressed_allreduce(x.data(), y.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string message = cc_get_last_error(nullptr);
    EXPECT_TRUE(result == CC_TIMEOUT || result == CC_REMOTE_ERROR) << message;
    EXPECT_NE(message.find("rank(s) 2"), std::string::npos) << message;
    EXPECT_LT(seconds, 1.5 + 2.0);
    othersDone.fetch_add(1);
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(init.codes[r], CC_SUCCESS) << init.messages[r];
  EXPECT_TRUE(daemon.waitFor([&] { return daemon.jobs() == 0; }, 5000));
  EXPECT_GE(daemon.counters().jobsAborted + daemon.counters().jobsTimedOut, 1u);
  run.timeoutMs = 20000;
  expectExactIntegerSums(integerAllreduce(2, run, 20000), 20000);
}

}  // namespace
