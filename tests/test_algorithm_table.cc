// The algorithm table from outside the library: a test-only algorithm,
// defined in this one file and added to the table as one row, runs by name
// (cc_config_t.algo and CC_ALGO) over the local transport, shows wherever
// the table is listed, and stays out of auto's choices.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "algo/registry.h"
#include "api/config.h"
#include "comm/comm.h"
#include "test_helpers.h"

using namespace cctest;

namespace {

// ---- the toy algorithm: its whole file would be this section ------------

// An exact allreduce out of allgather's primitives: every rank's float32
// vector travels around the ring as a byte stream, forwarded unchanged, and
// every rank sums the n vectors in rank order, so all finish bit-identical.
cc_result_t toyAllgatherSum(const cc::AlgorithmCall& call) {
  const cc::CollectiveArgs& args = call.args;
  const int n = args.nranks, rank = args.rank, prev = (rank + n - 1) % n;
  const size_t bytes = args.count * sizeof(float);
  std::vector<unsigned char> vectors(static_cast<size_t>(n) * bytes);
  auto vectorOf = [&](int origin) { return vectors.data() + static_cast<size_t>(origin) * bytes; };
  std::memcpy(vectorOf(rank), args.sendbuf, bytes);
  const size_t fragment = call.prims.fragmentBytes(call.ring.toNext->slotBytes());
  for (size_t offset = 0; offset < bytes; offset += fragment) {
    const size_t length = std::min(fragment, bytes - offset);
    CC_CHECK(call.prims.sendFragment(*call.ring.toNext, vectorOf(rank), offset, length, bytes, 0));
    for (int step = 1; step < n; ++step) {
      const int origin = (rank - step + n) % n;
      CC_CHECK(call.prims.recvForwardFragment(*call.ring.fromPrev, prev, step == n - 1 ? nullptr : call.ring.toNext,
                                              vectorOf(origin), offset, length, bytes, static_cast<uint32_t>(step)));
    }
  }
  float* out = static_cast<float*>(args.recvbuf);
  for (size_t i = 0; i < args.count; ++i) {
    float sum = 0.0f;
    for (int origin = 0; origin < n; ++origin) sum += reinterpret_cast<const float*>(vectorOf(origin))[i];
    out[i] = args.op == CC_AVG ? sum / static_cast<float>(n) : sum;
  }
  return CC_SUCCESS;
}

const char* toyCannotCarry(const cc::CallTraits& call) {
  if (call.compresses) return "the toy moves float32 values as they are";
  if (call.datatype != CC_FLOAT32 || (call.op != CC_SUM && call.op != CC_AVG)) return "the toy sums float32";
  return nullptr;
}

// The row: a name, what it carries, its entry point; no channels of its own,
// no device path, and auto may not pick it (no pipeline in its model).
cc::AlgorithmRow toyRow() {
  cc::AlgorithmRow row;
  row.name = "toy";
  row.cannotCarry = toyCannotCarry;
  row.run = toyAllgatherSum;
  return row;
}

// ---- end of the toy -----------------------------------------------------

// Each test runs in a process of its own; the row joins the table once.
cc::AlgoId toyId() {
  static const cc::AlgoId id = [] {
    cc::AlgoId added = cc::AlgoId::Auto;
    EXPECT_EQ(cc::registerAlgorithm(toyRow(), &added), CC_SUCCESS) << cc_get_last_error(nullptr);
    return added;
  }();
  return id;
}

// The sum of makeInput over the ranks in rank order, in float32: the toy's.
std::vector<float> rankOrderSum(size_t count, int nranks, bool average) {
  std::vector<float> sum(count, 0.0f);
  for (int rank = 0; rank < nranks; ++rank) {
    const std::vector<float> input = makeInput(count, rank);
    for (size_t i = 0; i < count; ++i) sum[i] += input[i];
  }
  if (average) {
    for (float& value : sum) value /= static_cast<float>(nranks);
  }
  return sum;
}

}  // namespace

TEST(AlgorithmTable, ToyAlgorithmOfOneFileAndOneRowRunsByName) {
  const cc::AlgoId toy = toyId();
  EXPECT_EQ(cc::indexOf(toy), cc::algorithmCount() - 1);
  EXPECT_STREQ(cc::algoName(toy), "toy");
  const int n = 3;
  // Several fragments of a 4096-byte slot, and a tail.
  const size_t count = 5000;
  for (const bool fromEnvironment : {false, true}) {
    SCOPED_TRACE(fromEnvironment ? "CC_ALGO=Toy" : "config.algo = toy");
    ScopedEnv algo("CC_ALGO", fromEnvironment ? "Toy" : nullptr);
    RankOptions options;
    options.codec = "none";
    options.algo = fromEnvironment ? nullptr : "toy";
    options.chunkBytes = 4096;
    std::vector<std::vector<float>> sums(n), averages(n);
    std::vector<std::string> ran(n);
    runRanks(n, options, [&](int rank, cc_comm_t comm) {
      const std::vector<float> input = makeInput(count, rank);
      sums[rank].resize(count);
      ASSERT_EQ(compressed_allreduce(input.data(), sums[rank].data(), count, CC_FLOAT32, CC_SUM, comm, nullptr),
                CC_SUCCESS)
          << cc_get_last_error(comm);
      ran[rank] = comm->lastAlgorithm;
      averages[rank] = input;  // in place
      ASSERT_EQ(compressed_allreduce(averages[rank].data(), averages[rank].data(), count, CC_FLOAT32, CC_AVG, comm,
                                     nullptr),
                CC_SUCCESS)
          << cc_get_last_error(comm);
    });
    const std::vector<float> sum = rankOrderSum(count, n, false), average = rankOrderSum(count, n, true);
    for (int rank = 0; rank < n; ++rank) {
      EXPECT_EQ(ran[rank], "toy") << "rank " << rank;
      EXPECT_EQ(sums[rank], sum) << "rank " << rank;
      EXPECT_EQ(averages[rank], average) << "rank " << rank;
    }
  }
}

TEST(AlgorithmTable, ToyRowShowsWhereverTheTableIsListed) {
  const cc::AlgoId toy = toyId();
  cc::AlgoId parsed = cc::AlgoId::Auto;
  ASSERT_EQ(cc::parseAlgo("TOY", "test", &parsed), CC_SUCCESS);
  EXPECT_EQ(parsed, toy);
  EXPECT_EQ(cc::parseAlgo("no-such", "CC_ALGO", &parsed), CC_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("valid: ring, direct, tree, allgather, toy, auto"),
            std::string::npos)
      << cc_get_last_error(nullptr);

  RankOptions options;
  options.codec = "nat";
  options.algo = "toy";
  runRanks(2, options, [&](int, cc_comm_t comm) {
    std::vector<float> values(100, 1.0f);
    // A compressed call the row cannot carry: refused, naming who can.
    EXPECT_EQ(compressed_allreduce(values.data(), values.data(), 100, CC_FLOAT32, CC_SUM, comm, nullptr),
              CC_UNSUPPORTED);
    const std::string message = cc_get_last_error(comm);
    EXPECT_NE(message.find("cannot run on toy: the toy moves float32 values as they are"), std::string::npos)
        << message;
    EXPECT_NE(message.find("algorithms that can: ring, direct, tree, allgather (CC_ALGO=ring or auto)"),
              std::string::npos)
        << message;
    // An exact reduction the row cannot carry runs on the ring.
    std::vector<int32_t> ints(100, 2);
    ASSERT_EQ(compressed_allreduce(ints.data(), ints.data(), 100, CC_INT32, CC_MAX, comm, nullptr), CC_SUCCESS)
        << cc_get_last_error(comm);
    EXPECT_EQ(comm->lastAlgorithm, "ring");
    EXPECT_EQ(ints, std::vector<int32_t>(100, 2));
  });
}

TEST(AlgorithmTable, AutoNeverPicksARowThatIsNoCandidate) {
  toyId();
  RankOptions options;
  options.codec = "none";
  options.algo = "auto";
  runRanks(3, options, [&](int rank, cc_comm_t comm) {
    for (size_t count : {size_t(10), size_t(100000)}) {
      const std::vector<float> input = makeInput(count, rank);
      std::vector<float> output(count);
      ASSERT_EQ(compressed_allreduce(input.data(), output.data(), count, CC_FLOAT32, CC_SUM, comm, nullptr),
                CC_SUCCESS)
          << cc_get_last_error(comm);
      EXPECT_NE(comm->lastAlgorithm, "toy");
      EXPECT_NE(comm->lastAlgorithm, "allgather");
    }
  });
}

TEST(AlgorithmTable, BuiltinRowsKeepTheirNumbersAndRegistrationChecksRows) {
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Ring), "ring");
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Direct), "direct");
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Tree), "tree");
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Allgather), "allgather");
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Auto), "auto");
  for (int i = 0; i < cc::algorithmCount(); ++i) {
    const cc::AlgorithmRow& row = *cc::findAlgorithm(static_cast<cc::AlgoId>(i));
    EXPECT_LT(std::strlen(row.name), cc::kMaxAlgorithmNameBytes) << row.name;
    EXPECT_TRUE(row.run != nullptr && row.cannotCarry != nullptr) << row.name;
    EXPECT_TRUE(!row.autoCandidate || row.pipeline != nullptr) << row.name;
    EXPECT_TRUE((row.memoryKinds & cc::kDeviceMemory) == 0 || row.runOnDevice != nullptr) << row.name;
  }
  toyId();
  cc::AlgoId id = cc::AlgoId::Auto;
  cc::AlgorithmRow again = toyRow();
  EXPECT_EQ(cc::registerAlgorithm(again, &id), CC_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("the name is taken"), std::string::npos);
  cc::AlgorithmRow tooLong = toyRow();
  tooLong.name = "a-name-of-twenty-chars";
  EXPECT_EQ(cc::registerAlgorithm(tooLong, &id), CC_INVALID_ARGUMENT);
  cc::AlgorithmRow unmodelled = toyRow();
  unmodelled.name = "toy2";
  unmodelled.autoCandidate = true;
  EXPECT_EQ(cc::registerAlgorithm(unmodelled, &id), CC_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cc_get_last_error(nullptr)).find("pipeline"), std::string::npos);
}
