// compressed_allreduce with ranks as threads: codec x transport x nranks x
// count, exact and compressed paths, in place, AVG, non-float types, error
// paths (timeouts, mismatches, abort), groups.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <tuple>

#include "algo/algo.h"
#include "comm/comm.h"
#include "test_helpers.h"

using namespace cctest;

namespace {

struct Case {
  const char* transport;
  const char* codec;
  int nranks;
  size_t count;
};

std::string caseName(const testing::TestParamInfo<Case>& info) {
  return std::string(info.param.transport) + "_" + info.param.codec + "_n" +
         std::to_string(info.param.nranks) + "_count" + std::to_string(info.param.count);
}

class AllreduceSweep : public testing::TestWithParam<Case> {};

TEST_P(AllreduceSweep, AllRanksBitIdenticalAndWithinBound) {
  const Case c = GetParam();
  RankOptions options;
  options.transport = c.transport;
  options.codec = c.codec;
  options.chunkBytes = 4096;  // several chunks per segment even for small counts
  // The error bound holds in expectation: with few values, average the
  // squared error over several calls (fresh randomness each).
  const int calls = c.count < 50000 ? 16 : 1;
  std::vector<std::vector<std::vector<float>>> outputs(calls, std::vector<std::vector<float>>(c.nranks));
  const std::vector<double> exact = exactSum(c.count, c.nranks);
  runRanks(c.nranks, options, [&](int rank, cc_comm_t comm) {
    auto input = makeInput(c.count, rank);
    for (int call = 0; call < calls; ++call) {
      auto& output = outputs[call][rank];
      output.assign(c.count, -1.0f);
      ASSERT_EQ(compressed_allreduce(input.data(), output.data(), c.count, CC_FLOAT32, CC_SUM, comm,
                                     nullptr), CC_SUCCESS) << cc_get_last_error(comm);
    }
  });
  // Expected squared error of the ring, value by value: the encode of partial
  // sum S_k adds variance <= w (S_k^2 + Var_{k-1}) (w = 1/8), so
  // Var_k = (1 + w) Var_{k-1} + w S_k^2 over the n encodes, with the partial
  // sums taken in ring order: segment j starts at rank j + 1 and ends at j.
  double expectedSquaredError = 0, exactNorm = 0;
  {
    std::vector<std::vector<float>> inputs;
    for (int rank = 0; rank < c.nranks; ++rank) inputs.push_back(makeInput(c.count, rank));
    const cc::RingLayout layout(c.count, c.nranks, 1 << 20);
    for (size_t i = 0; i < c.count; ++i) {
      const int owner = static_cast<int>(i / std::max<size_t>(layout.segmentValues, 1));
      double partial = 0, variance = 0;
      for (int hop = 1; hop <= c.nranks; ++hop) {
        partial += inputs[(owner + hop) % c.nranks][i];
        variance = 1.125 * variance + 0.125 * partial * partial;
      }
      expectedSquaredError += variance;
      exactNorm += exact[i] * exact[i];
    }
  }
  double meanSquaredError = 0;
  for (int call = 0; call < calls && c.count > 0; ++call) {
    for (int rank = 1; rank < c.nranks; ++rank) {
      ASSERT_EQ(0, std::memcmp(outputs[call][rank].data(), outputs[call][0].data(), c.count * sizeof(float)))
          << "rank " << rank << " differs from rank 0 in call " << call;
    }
    const double error = relativeError(outputs[call][0], exact);
    meanSquaredError += error * error / calls;
    if (std::string(c.codec) == "nat" && c.nranks > 1) {
      for (float value : outputs[call][0]) ASSERT_TRUE(isPowerOfTwoOrZero(value)) << value;
    }
  }
  if (c.count == 0) return;
  const double error = std::sqrt(meanSquaredError);
  if (std::string(c.codec) == "none" || c.nranks == 1) {
    EXPECT_LT(error, 1e-6);  // one rank: the input itself
  } else {
    // The variance recursion above bounds the expectation; a sample mean over
    // 16 calls of few values can exceed it by a fraction.
    const double expected = std::sqrt(expectedSquaredError / exactNorm);
    EXPECT_LE(error, (c.count < 1000 ? 1.5 : 1.1) * expected) << "n = " << c.nranks;
    // With many i.i.d. values the partial sums grow like k/n of the total and
    // the bound becomes sqrt((1/8)(n+1)/2).
    if (c.count >= 4096) {
      EXPECT_LE(error, ringNatErrorBound(c.nranks)) << "n = " << c.nranks;
    }
  }
}

std::vector<Case> sweepCases() {
  std::vector<Case> cases;
  for (const char* codec : {"none", "nat"}) {
    for (int nranks : {1, 2, 3, 4, 5}) {
      for (size_t count : {size_t(0), size_t(1), size_t(31), size_t(32), size_t(33), size_t(127),
                           size_t(4099), size_t(100003)}) {
        cases.push_back({"local", codec, nranks, count});
      }
    }
    for (int nranks : {2, 3, 4}) {
      for (size_t count : {size_t(1), size_t(33), size_t(100003)}) {
        cases.push_back({"tcp", codec, nranks, count});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, AllreduceSweep, testing::ValuesIn(sweepCases()), caseName);

TEST(Allreduce, InPlaceEqualsOutOfPlace) {
  const int n = 3;
  const size_t count = 5000;
  std::vector<std::vector<float>> outOfPlace(n), inPlace(n);
  RankOptions options;
  // Two communicators compared bit for bit: auto may pick differently from
  // timings measured at each init, so the algorithm is fixed.
  options.algo = "ring";
  runRanks(n, options, [&](int rank, cc_comm_t comm) {
    auto input = makeInput(count, rank);
    outOfPlace[rank].resize(count);
    ASSERT_EQ(compressed_allreduce(input.data(), outOfPlace[rank].data(), count, CC_FLOAT32, CC_SUM,
                                   comm, nullptr), CC_SUCCESS) << cc_get_last_error(comm);
  });
  runRanks(n, options, [&](int rank, cc_comm_t comm) {
    inPlace[rank] = makeInput(count, rank);
    ASSERT_EQ(compressed_allreduce(inPlace[rank].data(), inPlace[rank].data(), count, CC_FLOAT32,
                                   CC_SUM, comm, nullptr), CC_SUCCESS) << cc_get_last_error(comm);
  });
  for (int rank = 0; rank < n; ++rank) {
    ASSERT_EQ(0, std::memcmp(inPlace[rank].data(), outOfPlace[rank].data(), count * sizeof(float)));
  }
}

// On tcp the exact ring's allgather of a call of 1 MiB or more lands in the
// output through regions (transport.h) instead of slots: every rank ends
// with the same bits as the slot path gives, in place or not, for sums,
// averages and integers, and with segments of uneven length.
TEST(Allreduce, RegionsCarryTheExactRingsAllgather) {
  struct RegionCase {
    int nranks;
    size_t count;
    cc_red_op_t op;
  };
  for (const RegionCase c : {RegionCase{4, (size_t{1} << 18) + 4099, CC_SUM}, RegionCase{3, 700001, CC_AVG},
                             RegionCase{2, 300000, CC_MAX}}) {
    SCOPED_TRACE("n = " + std::to_string(c.nranks) + ", count " + std::to_string(c.count));
    auto reduce = [&](const char* transport, bool inPlace, std::vector<std::vector<float>>* out,
                      std::vector<std::vector<int32_t>>* outInt, bool* regions) {
      RankOptions options;
      options.transport = transport;
      options.codec = "none";
      options.algo = "ring";
      out->assign(c.nranks, {});
      outInt->assign(c.nranks, {});
      runRanks(c.nranks, options, [&](int rank, cc_comm_t comm) {
        std::vector<float> input = makeInput(c.count, rank);
        std::vector<float>& result = (*out)[rank];
        result = inPlace ? input : std::vector<float>(c.count, -1.0f);
        ASSERT_EQ(compressed_allreduce(inPlace ? result.data() : input.data(), result.data(), c.count, CC_FLOAT32,
                                       c.op, comm, nullptr), CC_SUCCESS) << cc_get_last_error(comm);
        if (rank == 0) regions[0] = comm->lastCallRegions;
        std::vector<int32_t> integers(c.count);
        for (size_t i = 0; i < c.count; ++i) integers[i] = static_cast<int32_t>(input[i] * 1000) + rank;
        std::vector<int32_t>& sums = (*outInt)[rank];
        sums.assign(c.count, -1);
        ASSERT_EQ(compressed_allreduce(integers.data(), sums.data(), c.count, CC_INT32, CC_SUM, comm, nullptr),
                  CC_SUCCESS) << cc_get_last_error(comm);
        if (rank == 0) regions[1] = comm->lastCallRegions;
      });
    };
    std::vector<std::vector<float>> slots, direct, directInPlace;
    std::vector<std::vector<int32_t>> slotsInt, directInt, unused;
    bool slotRegions[2] = {true, true}, tcpRegions[2] = {false, false}, inPlaceRegions[2] = {false, false};
    reduce("local", false, &slots, &slotsInt, slotRegions);
    reduce("tcp", false, &direct, &directInt, tcpRegions);
    reduce("tcp", true, &directInPlace, &unused, inPlaceRegions);
    EXPECT_FALSE(slotRegions[0] || slotRegions[1]) << "the local transport carries no regions";
    EXPECT_TRUE(tcpRegions[0] && tcpRegions[1] && inPlaceRegions[0]) << "tcp calls of 1 MiB and more use them";
    for (int rank = 0; rank < c.nranks; ++rank) {
      ASSERT_EQ(0, std::memcmp(direct[rank].data(), slots[0].data(), c.count * sizeof(float))) << "rank " << rank;
      ASSERT_EQ(0, std::memcmp(directInPlace[rank].data(), slots[0].data(), c.count * sizeof(float)))
          << "rank " << rank << ", in place";
      ASSERT_EQ(0, std::memcmp(directInt[rank].data(), slotsInt[0].data(), c.count * sizeof(int32_t)))
          << "rank " << rank << ", int32";
    }
  }
  // Below 1 MiB the allgather stays in the slots.
  RankOptions options;
  options.transport = "tcp";
  options.codec = "none";
  options.algo = "ring";
  runRanks(2, options, [&](int rank, cc_comm_t comm) {
    std::vector<float> values = makeInput(1000, rank);
    ASSERT_EQ(compressed_allreduce(values.data(), values.data(), values.size(), CC_FLOAT32, CC_SUM, comm, nullptr),
              CC_SUCCESS) << cc_get_last_error(comm);
    EXPECT_FALSE(comm->lastCallRegions);
  });
}

TEST(Allreduce, EveryCallDrawsFreshRandomnessAndTheMeanIsUnbiased) {
  const int n = 4;
  const size_t count = 2048;
  const int calls = 64;
  const std::vector<double> exact = exactSum(count, n);
  std::vector<std::vector<float>> results(calls);
  RankOptions options;
  runRanks(n, options, [&](int rank, cc_comm_t comm) {
    auto input = makeInput(count, rank);
    std::vector<float> output(count);
    for (int call = 0; call < calls; ++call) {
      ASSERT_EQ(compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm,
                                     nullptr), CC_SUCCESS) << cc_get_last_error(comm);
      if (rank == 0) results[call] = output;
    }
  });
  EXPECT_NE(0, std::memcmp(results[0].data(), results[1].data(), count * sizeof(float)))
      << "two calls on the same input produced the same bits";
  std::vector<float> mean(count, 0.0f);
  double singleError = 0;
  for (int call = 0; call < calls; ++call) {
    singleError += relativeError(results[call], exact) / calls;
    for (size_t i = 0; i < count; ++i) mean[i] += results[call][i] / calls;
  }
  const double meanError = relativeError(mean, exact);
  // Independent unbiased draws: the error of the mean shrinks like 1/sqrt(64)
  // = 1/8; allow 1/4 of the single-call error.
  EXPECT_LT(meanError, singleError / 4) << "single " << singleError << " mean " << meanError;
}

TEST(Allreduce, AverageIsSumOverRanks) {
  const int n = 4;
  const size_t count = 10000;
  std::vector<double> exactMean(count, 0.0);
  for (int rank = 0; rank < n; ++rank) {
    auto input = makeInput(count, rank);
    for (size_t i = 0; i < count; ++i) exactMean[i] += input[i] / n;
  }
  for (const char* codec : {"none", "nat"}) {
    std::vector<float> result;
    RankOptions options;
    options.codec = codec;
    runRanks(n, options, [&](int rank, cc_comm_t comm) {
      auto input = makeInput(count, rank);
      std::vector<float> output(count);
      ASSERT_EQ(compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_AVG, comm,
                                     nullptr), CC_SUCCESS) << cc_get_last_error(comm);
      if (rank == 0) result = output;
    });
    const double bound = std::string(codec) == "none" ? 1e-6 : ringNatErrorBound(n);
    EXPECT_LE(relativeError(result, exactMean), bound) << codec;
  }
}

// bfloat16 and float16 are compressed too; ranks must still agree bit for bit.
template <typename Convert>
void checkHalfType(cc_datatype_t datatype, Convert toHalf) {
  const int n = 3;
  const size_t count = 777;
  std::vector<std::vector<uint16_t>> outputs(n);
  RankOptions options;
  runRanks(n, options, [&](int rank, cc_comm_t comm) {
    auto input = makeInput(count, rank);
    std::vector<uint16_t> half(count);
    for (size_t i = 0; i < count; ++i) half[i] = toHalf(input[i]);
    outputs[rank].resize(count);
    ASSERT_EQ(compressed_allreduce(half.data(), outputs[rank].data(), count, datatype, CC_SUM, comm,
                                   nullptr), CC_SUCCESS) << cc_get_last_error(comm);
  });
  for (int rank = 1; rank < n; ++rank) EXPECT_EQ(outputs[rank], outputs[0]);
}

uint16_t floatToBf16Truncate(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return static_cast<uint16_t>(bits >> 16);
}

TEST(Allreduce, Bfloat16AndFloat16AreCompressedAndAgree) {
  checkHalfType(CC_BFLOAT16, floatToBf16Truncate);
  // float16 1.0 = 0x3c00; small integers keep the test independent of rounding.
  checkHalfType(CC_FLOAT16, [](float value) {
    int k = static_cast<int>(std::fabs(value)) % 4;
    static const uint16_t table[4] = {0x3c00, 0x4000, 0x4200, 0x4400};
    return static_cast<uint16_t>(table[k] | (value < 0 ? 0x8000 : 0));
  });
}

TEST(Allreduce, ExactPathForOtherOpsAndTypes) {
  const int n = 4;
  const size_t count = 1001;
  RankOptions options;  // codec nat, which must not touch these
  runRanks(n, options, [&](int rank, cc_comm_t comm) {
    std::vector<int32_t> ints(count), out(count);
    for (size_t i = 0; i < count; ++i) ints[i] = static_cast<int32_t>(i * 7 + rank * 1000 - 3000);
    ASSERT_EQ(compressed_allreduce(ints.data(), out.data(), count, CC_INT32, CC_SUM, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], static_cast<int32_t>(4 * (i * 7) + 6000 - 12000));
    ASSERT_EQ(compressed_allreduce(ints.data(), out.data(), count, CC_INT32, CC_MAX, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], static_cast<int32_t>(i * 7 + 3000 - 3000));
    ASSERT_EQ(compressed_allreduce(ints.data(), out.data(), count, CC_INT32, CC_MIN, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], static_cast<int32_t>(i * 7 - 3000));
    ASSERT_EQ(compressed_allreduce(ints.data(), out.data(), count, CC_INT32, CC_AVG, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], static_cast<int32_t>((4 * (i * 7) - 6000) / 4));

    std::vector<double> doubles(count), doubleOut(count);
    for (size_t i = 0; i < count; ++i) doubles[i] = 0.5 * i + rank;
    ASSERT_EQ(compressed_allreduce(doubles.data(), doubleOut.data(), count, CC_FLOAT64, CC_SUM, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(doubleOut[i], 2.0 * i + 6);

    // float32 PROD and MAX are exact even with codec nat.
    std::vector<float> floats(count), floatOut(count);
    for (size_t i = 0; i < count; ++i) floats[i] = 1.0f + 0.25f * static_cast<float>(rank) + static_cast<float>(i % 3);
    ASSERT_EQ(compressed_allreduce(floats.data(), floatOut.data(), count, CC_FLOAT32, CC_MAX, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(floatOut[i], 1.75f + static_cast<float>(i % 3));

    std::vector<uint8_t> bytes(count, static_cast<uint8_t>(rank + 1)), byteOut(count);
    ASSERT_EQ(compressed_allreduce(bytes.data(), byteOut.data(), count, CC_UINT8, CC_PROD, comm, nullptr), CC_SUCCESS);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(byteOut[i], 24);
  });
}

TEST(Allreduce, GroupedCallsRunAtGroupEnd) {
  const int n = 2;
  RankOptions options;
  options.codec = "none";
  runRanks(n, options, [&](int rank, cc_comm_t comm) {
    std::vector<float> a(100, 1.0f + rank), b(50, 2.0f * rank), outA(100, 0), outB(50, 0);
    ASSERT_EQ(cc_group_start(), CC_SUCCESS);
    ASSERT_EQ(compressed_allreduce(a.data(), outA.data(), a.size(), CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS);
    ASSERT_EQ(compressed_allreduce(b.data(), outB.data(), b.size(), CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS);
    EXPECT_EQ(outA[0], 0.0f) << "a grouped call ran before cc_group_end";
    ASSERT_EQ(cc_group_end(), CC_SUCCESS) << cc_get_last_error(comm);
    EXPECT_EQ(outA[99], 3.0f);
    EXPECT_EQ(outB[49], 2.0f);
  });
  EXPECT_EQ(cc_group_end(), CC_INVALID_USAGE);
}

TEST(Allreduce, ArgumentErrorsNameTheProblem) {
  RankOptions options;
  runRanks(1, options, [&](int, cc_comm_t comm) {
    float x[4] = {1, 2, 3, 4};
    EXPECT_EQ(compressed_allreduce(x, x, 4, CC_FLOAT32, CC_SUM, nullptr, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("comm is NULL"), std::string::npos);
    EXPECT_EQ(compressed_allreduce(nullptr, x, 4, CC_FLOAT32, CC_SUM, comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_NE(std::string(cc_get_last_error(comm)).find("sendbuf is NULL"), std::string::npos);
    EXPECT_EQ(compressed_allreduce(x, nullptr, 4, CC_FLOAT32, CC_SUM, comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_EQ(compressed_allreduce(x, x, 4, static_cast<cc_datatype_t>(42), CC_SUM, comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_NE(std::string(cc_get_last_error(comm)).find("unknown datatype 42"), std::string::npos);
    EXPECT_EQ(compressed_allreduce(x, x, 4, CC_FLOAT32, static_cast<cc_red_op_t>(-1), comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_EQ(compressed_allreduce(x, x, SIZE_MAX / 2, CC_FLOAT32, CC_SUM, comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_NE(std::string(cc_get_last_error(comm)).find("overflows size_t for datatype float32"), std::string::npos)
        << cc_get_last_error(comm);
    EXPECT_EQ(compressed_allreduce(x, x + 1, 2, CC_FLOAT32, CC_SUM, comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_EQ(compressed_allreduce(nullptr, nullptr, 0, CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS);
  });
}

TEST(Allreduce, MissingRankTimesOutWithClearError) {
  RankOptions options;
  options.timeoutMs = 500;
  std::vector<cc_result_t> results(3, CC_SUCCESS);
  std::vector<std::string> messages(3);
  auto start = std::chrono::steady_clock::now();
  runRanks(3, options, [&](int rank, cc_comm_t comm) {
    if (rank == 2) return;  // never joins the collective
    std::vector<float> x(1000, 1.0f);
    results[rank] = compressed_allreduce(x.data(), x.data(), x.size(), CC_FLOAT32, CC_SUM, comm, nullptr);
    messages[rank] = cc_get_last_error(comm);
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(results[rank] == CC_TIMEOUT || results[rank] == CC_REMOTE_ERROR) << messages[rank];
    EXPECT_NE(messages[rank].find("rank"), std::string::npos) << messages[rank];
  }
  EXPECT_TRUE(results[0] == CC_TIMEOUT || results[1] == CC_TIMEOUT);
}

TEST(Allreduce, MismatchedCountIsReportedNotHung) {
  RankOptions options;
  options.timeoutMs = 2000;
  std::vector<cc_result_t> results(2);
  std::vector<std::string> messages(2);
  runRanks(2, options, [&](int rank, cc_comm_t comm) {
    std::vector<float> x(1000, 1.0f);
    results[rank] = compressed_allreduce(x.data(), x.data(), rank == 0 ? 1000 : 999, CC_FLOAT32,
                                         CC_SUM, comm, nullptr);
    messages[rank] = cc_get_last_error(comm);
  });
  for (int rank = 0; rank < 2; ++rank) EXPECT_NE(results[rank], CC_SUCCESS);
  EXPECT_TRUE(messages[0].find("count") != std::string::npos ||
              messages[1].find("count") != std::string::npos)
      << messages[0] << " | " << messages[1];
}

// With regions open the payloads land in the receiver's output: counts that
// differ must still end in an error on every rank, never in bytes beyond a
// rank's output (which would kill the process in Gloo's device thread).
TEST(Allreduce, MismatchedCountWithRegionsIsReportedNotHung) {
  for (const size_t larger : {size_t{400000}, size_t{1} << 20}) {
    RankOptions options;
    options.transport = "tcp";
    options.codec = "none";
    options.algo = "ring";
    options.timeoutMs = 5000;
    const int n = 3;
    std::vector<cc_result_t> results(n);
    std::vector<std::string> messages(n);
    runRanks(n, options, [&](int rank, cc_comm_t comm) {
      const size_t count = rank == 1 ? larger : 300000;
      std::vector<float> x(count, 1.0f);
      results[rank] = compressed_allreduce(x.data(), x.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr);
      messages[rank] = cc_get_last_error(comm);
    });
    for (int rank = 0; rank < n; ++rank) EXPECT_NE(results[rank], CC_SUCCESS) << "rank " << rank;
    bool named = false;
    for (const std::string& message : messages) named = named || message.find("count") != std::string::npos;
    EXPECT_TRUE(named) << messages[0] << " | " << messages[1] << " | " << messages[2];
  }
}

TEST(Allreduce, MismatchedCodecFailsInitOnEveryRank) {
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  std::vector<cc_result_t> results(2);
  std::vector<std::string> messages(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      cc_config_t config = CC_CONFIG_INITIALIZER;
      config.transport = "local";
      config.codec = rank == 0 ? "nat" : "none";
      config.timeout_ms = 10000;
      cc_comm_t comm = nullptr;
      results[rank] = cc_comm_init_rank(&comm, 2, id, rank, &config);
      messages[rank] = cc_get_last_error(nullptr);
      if (comm) cc_comm_destroy(comm);
    });
  }
  for (auto& thread : threads) thread.join();
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(results[rank], CC_INVALID_USAGE) << messages[rank];
    EXPECT_NE(messages[rank].find("codec none differs from rank 0's nat"), std::string::npos) << messages[rank];
  }
}

TEST(Allreduce, AbortWakesPeers) {
  RankOptions options;
  options.timeoutMs = 60000;
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  std::vector<cc_comm_t> comms(2, nullptr);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      cc_config_t config = makeConfig(options);
      ASSERT_EQ(cc_comm_init_rank(&comms[rank], 2, id, rank, &config), CC_SUCCESS);
    });
  }
  for (auto& thread : threads) thread.join();
  auto start = std::chrono::steady_clock::now();
  cc_result_t result = CC_SUCCESS;
  std::thread waiter([&] {
    std::vector<float> x(100000, 1.0f);
    result = compressed_allreduce(x.data(), x.data(), x.size(), CC_FLOAT32, CC_SUM, comms[0], nullptr);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(cc_comm_abort(comms[1]), CC_SUCCESS);
  waiter.join();
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  cc_result_t asyncError = CC_SUCCESS;
  ASSERT_EQ(cc_comm_get_async_error(comms[0], &asyncError), CC_SUCCESS);
  EXPECT_NE(asyncError, CC_SUCCESS);
  EXPECT_EQ(cc_comm_destroy(comms[0]), CC_SUCCESS);
}

TEST(RingLayout, CoversEveryValueOnceWithoutOverflowBeyond2To31Bytes) {
  for (size_t count : {size_t(1), size_t(33), size_t(1) << 31, (size_t(1) << 33) + 7}) {
    for (int n : {1, 3, 8}) {
      const size_t chunk = 1 << 18;
      cc::RingLayout layout(count, n, chunk);
      size_t covered = 0, expectedNext = 0;
      for (int segment = 0; segment < n; ++segment) {
        for (size_t iteration = 0; iteration < layout.iterations; ++iteration) {
          size_t first, len;
          layout.range(segment, iteration, &first, &len);
          if (len == 0) continue;
          ASSERT_EQ(first, expectedNext);
          ASSERT_EQ(first % cc::kBlockValues, 0u);
          expectedNext = first + len;
          covered += len;
        }
      }
      EXPECT_EQ(covered, count) << "count " << count << " n " << n;
    }
  }
}

}  // namespace

namespace {

// Buffers past 2^31 bytes: every offset in the layout, prims and codec must be
// 64-bit. float32 through nat (index math in the codec) with 2 ranks in place.
TEST(Allreduce, BufferLargerThan2GiB) {
  if (std::getenv("CC_TEST_SKIP_LARGE")) GTEST_SKIP() << "CC_TEST_SKIP_LARGE is set";
  const size_t count = (size_t(1) << 29) + 33;  // 2 GiB + 132 bytes of float32
  std::vector<std::vector<float>> buffers(2);
  RankOptions options;
  runRanks(2, options, [&](int rank, cc_comm_t comm) {
    buffers[rank].resize(count);
    for (size_t i = 0; i < count; ++i) buffers[rank][i] = static_cast<float>(i % 7) + 0.5f * rank;
    ASSERT_EQ(compressed_allreduce(buffers[rank].data(), buffers[rank].data(), count, CC_FLOAT32,
                                   CC_SUM, comm, nullptr), CC_SUCCESS) << cc_get_last_error(comm);
  });
  ASSERT_EQ(0, std::memcmp(buffers[0].data(), buffers[1].data(), count * sizeof(float)));
  // The tail beyond 2^31 bytes holds a sum of the right size, not garbage.
  double diff = 0, norm = 0;
  for (size_t i = count - (1 << 20); i < count; ++i) {
    const double exact = 2.0 * (i % 7) + 0.5;
    diff += (buffers[0][i] - exact) * (buffers[0][i] - exact);
    norm += exact * exact;
  }
  EXPECT_LE(std::sqrt(diff / norm), ringNatErrorBound(2));
}

}  // namespace

namespace {

// CC_TRANSPORT=ibverbs takes the same Gloo code path as tcp; without an RDMA
// device it must fail at init with a message saying so.
TEST(Allreduce, IbverbsWithoutADeviceFailsClearly) {
  std::error_code error;
  if (std::filesystem::exists("/sys/class/infiniband", error) &&
      !std::filesystem::is_empty("/sys/class/infiniband", error)) {
    GTEST_SKIP() << "this host has an ibverbs device";
  }
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "ibverbs";
  config.timeout_ms = 5000;
  cc_comm_t comm = nullptr;
  EXPECT_EQ(cc_comm_init_rank(&comm, 1, id, 0, &config), CC_SYSTEM_ERROR);
  EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("no ibverbs device"), std::string::npos)
      << cc_get_last_error(nullptr);
  EXPECT_EQ(comm, nullptr);
}

}  // namespace
