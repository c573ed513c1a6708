// compressed_allreduce on device buffers: 4 ranks as threads sharing one GPU
// through the local device transport. The device ring draws the same bits as
// the host ring (same seed, collective and step; chunking never changes a
// value's draw), so every device result must equal the host result for the
// same inputs bit for bit, on every rank. Exits 77 (skip) without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec_test_values.h"
#include "cuda_test_device.h"
#include "test_helpers.h"

namespace {

using cctest::RankOptions;
using cctest::runRanks;

constexpr int kRanks = 4;

// Per-rank inputs in the call's type: makeInput's values (rounded to nearest
// for 16-bit floats), or for int32 the same values scaled by 1000.
std::vector<unsigned char> inputFor(size_t count, int rank, cc_datatype_t datatype, uint64_t salt) {
  std::vector<float> values = cctest::makeInput(count, rank, salt);
  if (datatype == CC_INT32) {
    std::vector<unsigned char> bytes(count * 4);
    for (size_t i = 0; i < count; ++i) {
      const int32_t value = static_cast<int32_t>(values[i] * 1000.0f);
      std::memcpy(&bytes[4 * i], &value, 4);
    }
    return bytes;
  }
  if (datatype == CC_FLOAT16) {
    for (float& value : values) value *= 0.25f;  // well inside float16's range
  }
  return cc::valuesAs(cc::elementTypeOf(datatype), values);
}

bool cudaOk(cudaError_t status, const char* what, std::string* failure) {
  if (status == cudaSuccess) return true;
  *failure = std::string(what) + ": " + cudaGetErrorString(status);
  return false;
}

struct Case {
  const char* codec;
  cc_datatype_t datatype;
  cc_red_op_t op;
  size_t count;
  const char* algo = "ring";
};

std::string describe(const Case& c) {
  return std::string(c.codec) + " on " + c.algo + " datatype " + std::to_string(c.datatype) + " op " +
         std::to_string(c.op) + " count " + std::to_string(c.count);
}

// One collective on every rank, host buffers or device buffers (on a stream
// of each rank's own, non-blocking so nothing orders it by accident).
// Returns each rank's output; failures are reported through gtest.
std::vector<std::vector<unsigned char>> runCase(const Case& c, bool onDevice, uint64_t salt = 1) {
  std::vector<std::vector<unsigned char>> outputs(kRanks);
  RankOptions options;
  options.codec = c.codec;
  options.algo = c.algo;
  std::mutex failuresMutex;
  std::vector<std::string> failures;
  runRanks(kRanks, options, [&](int rank, cc_comm_t comm) {
    std::string failure;
    const std::vector<unsigned char> input = inputFor(c.count, rank, c.datatype, salt);
    std::vector<unsigned char>& output = outputs[rank];
    output.assign(input.size(), 0xab);
    if (!onDevice) {
      if (compressed_allreduce(input.data(), output.data(), c.count, c.datatype, c.op, comm, nullptr) != CC_SUCCESS) {
        failure = cc_get_last_error(comm);
      }
    } else {
      void* send = nullptr;
      void* recv = nullptr;
      cudaStream_t stream = nullptr;
      const size_t bytes = input.size();
      if (cudaOk(cudaSetDevice(0), "cudaSetDevice", &failure) &&
          cudaOk(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate", &failure) &&
          cudaOk(cudaMalloc(&send, bytes + 1), "cudaMalloc", &failure) &&
          cudaOk(cudaMalloc(&recv, bytes + 1), "cudaMalloc", &failure) &&
          cudaOk(cudaMemsetAsync(recv, 0xab, bytes, stream), "cudaMemsetAsync", &failure) &&
          cudaOk(cudaMemcpyAsync(send, input.data(), bytes, cudaMemcpyHostToDevice, stream), "copy in", &failure)) {
        if (compressed_allreduce(send, recv, c.count, c.datatype, c.op, comm, stream) != CC_SUCCESS) {
          failure = cc_get_last_error(comm);
        } else if (cudaOk(cudaMemcpyAsync(output.data(), recv, bytes, cudaMemcpyDeviceToHost, stream), "copy out",
                          &failure)) {
          cudaOk(cudaStreamSynchronize(stream), "cudaStreamSynchronize", &failure);
        }
      }
      cudaFree(send);
      cudaFree(recv);
      if (stream) cudaStreamDestroy(stream);
    }
    if (!failure.empty()) {
      std::lock_guard<std::mutex> lock(failuresMutex);
      failures.push_back("rank " + std::to_string(rank) + ": " + failure);
    }
  });
  for (const std::string& failure : failures) ADD_FAILURE() << describe(c) << (onDevice ? " (device) " : " (host) ") << failure;
  return outputs;
}

void expectDeviceEqualsHost(const Case& c) {
  const auto host = runCase(c, false);
  const auto device = runCase(c, true);
  for (int rank = 0; rank < kRanks; ++rank) {
    ASSERT_EQ(host[rank].size(), device[rank].size());
    size_t firstDiff = host[rank].size();
    for (size_t i = 0; i < host[rank].size(); ++i) {
      if (host[rank][i] != device[rank][i]) {
        firstDiff = i;
        break;
      }
    }
    EXPECT_EQ(firstDiff, host[rank].size()) << describe(c) << ": rank " << rank << " device output differs from the host's at byte "
                                            << firstDiff;
    EXPECT_EQ(0, std::memcmp(device[rank].data(), device[0].data(), device[0].size()))
        << describe(c) << ": ranks 0 and " << rank << " differ on the device";
  }
}

TEST(GpuAllreduce, DeviceRingEqualsHostRingBitForBit) {
  const size_t counts[] = {1, 33, 4097, 1000003};
  const char* codecs[] = {"nat", "nat_det", "none", "qsgd", "dither_nat"};
  for (const char* codec : codecs) {
    for (cc_datatype_t datatype : {CC_FLOAT32, CC_BFLOAT16, CC_FLOAT16}) {
      for (cc_red_op_t op : {CC_SUM, CC_AVG}) {
        for (size_t count : counts) expectDeviceEqualsHost(Case{codec, datatype, op, count});
      }
    }
  }
}

// Several chunks per segment: 4 ranks x 3 chunks of a 4 MiB slot.
TEST(GpuAllreduce, ManyChunksEqualHost) {
  expectDeviceEqualsHost(Case{"nat", CC_FLOAT32, CC_SUM, 12 * 1000 * 1000 + 7});
  expectDeviceEqualsHost(Case{"none", CC_FLOAT32, CC_AVG, 5 * 1000 * 1000 + 3});
}

TEST(GpuAllreduce, ExactReductionsOfOtherTypes) {
  expectDeviceEqualsHost(Case{"nat", CC_INT32, CC_MAX, 100003});
  expectDeviceEqualsHost(Case{"nat", CC_INT32, CC_SUM, 4097});
}

// Error feedback: three steps with a residual on device buffers leave the
// outputs and the residual the host path leaves.
TEST(GpuAllreduce, ErrorFeedbackMatchesHost) {
  const size_t count = 70001;
  std::vector<std::vector<float>> outputs[2], residuals[2];
  for (int onDevice = 0; onDevice < 2; ++onDevice) {
    outputs[onDevice].assign(kRanks, {});
    residuals[onDevice].assign(kRanks, {});
    RankOptions options;
    options.codec = "nat";
    options.algo = "ring";
    runRanks(kRanks, options, [&](int rank, cc_comm_t comm) {
      cc_residual_t residual = nullptr;
      ASSERT_EQ(cc_residual_create(&residual, count, CC_FLOAT32), CC_SUCCESS);
      std::vector<float> output(count);
      float* send = nullptr;
      float* recv = nullptr;
      if (onDevice) {
        ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&send, count * 4), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&recv, count * 4), cudaSuccess);
      }
      for (int step = 0; step < 3; ++step) {
        const std::vector<float> input = cctest::makeInput(count, rank, 10 + step);
        if (onDevice) {
          ASSERT_EQ(cudaMemcpy(send, input.data(), count * 4, cudaMemcpyHostToDevice), cudaSuccess);
          ASSERT_EQ(compressed_allreduce_ex(send, recv, count, CC_FLOAT32, CC_AVG, comm, nullptr, "nat", residual),
                    CC_SUCCESS)
              << cc_get_last_error(comm);
          ASSERT_EQ(cudaMemcpy(output.data(), recv, count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        } else {
          ASSERT_EQ(compressed_allreduce_ex(input.data(), output.data(), count, CC_FLOAT32, CC_AVG, comm, nullptr,
                                            "nat", residual),
                    CC_SUCCESS)
              << cc_get_last_error(comm);
        }
      }
      outputs[onDevice][rank] = output;
      residuals[onDevice][rank].resize(count);
      ASSERT_EQ(cc_residual_get(residual, residuals[onDevice][rank].data()), CC_SUCCESS);
      cc_residual_destroy(residual);
      cudaFree(send);
      cudaFree(recv);
    });
  }
  for (int rank = 0; rank < kRanks; ++rank) {
    EXPECT_EQ(0, std::memcmp(outputs[0][rank].data(), outputs[1][rank].data(), count * 4)) << "rank " << rank;
    EXPECT_EQ(0, std::memcmp(residuals[0][rank].data(), residuals[1][rank].data(), count * 4)) << "rank " << rank;
  }
}

// In place, on the default stream (the call then blocks), and the sum is
// within nat's bound of the exact one.
TEST(GpuAllreduce, InPlaceOnTheDefaultStream) {
  const size_t count = 50000;
  const std::vector<double> exact = cctest::exactSum(count, kRanks, 3);
  std::vector<std::vector<float>> outputs(kRanks);
  RankOptions options;
  runRanks(kRanks, options, [&](int rank, cc_comm_t comm) {
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    const std::vector<float> input = cctest::makeInput(count, rank, 3);
    float* buffer = nullptr;
    ASSERT_EQ(cudaMalloc(&buffer, count * 4), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(buffer, input.data(), count * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(compressed_allreduce(buffer, buffer, count, CC_FLOAT32, CC_SUM, comm, nullptr), CC_SUCCESS)
        << cc_get_last_error(comm);
    outputs[rank].resize(count);
    ASSERT_EQ(cudaMemcpy(outputs[rank].data(), buffer, count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(buffer);
  });
  double errorSquares = 0, normSquares = 0;
  for (size_t i = 0; i < count; ++i) {
    errorSquares += (outputs[0][i] - exact[i]) * (outputs[0][i] - exact[i]);
    normSquares += exact[i] * exact[i];
  }
  // nat's variance factor is 1/8 per encode and the ring encodes each value
  // kRanks times: the relative error stays far below 1.
  EXPECT_LT(std::sqrt(errorSquares / normSquares), 0.75);
  for (int rank = 1; rank < kRanks; ++rank) EXPECT_EQ(0, std::memcmp(outputs[0].data(), outputs[rank].data(), count * 4));
}

// Host buffers with a stream keep the host path (after the stream's work).
TEST(GpuAllreduce, HostBuffersWithAStreamTakeTheHostPath) {
  const Case c{"nat", CC_FLOAT32, CC_SUM, 1025};
  const auto reference = runCase(c, false);
  std::vector<std::vector<float>> outputs(kRanks);
  RankOptions options;
  options.algo = "ring";
  runRanks(kRanks, options, [&](int rank, cc_comm_t comm) {
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    const std::vector<unsigned char> input = inputFor(c.count, rank, c.datatype, 1);
    outputs[rank].resize(c.count);
    ASSERT_EQ(compressed_allreduce(input.data(), outputs[rank].data(), c.count, c.datatype, c.op, comm, stream),
              CC_SUCCESS)
        << cc_get_last_error(comm);
    cudaStreamDestroy(stream);
  });
  for (int rank = 0; rank < kRanks; ++rank) {
    EXPECT_EQ(0, std::memcmp(outputs[rank].data(), reference[rank].data(), c.count * 4)) << "rank " << rank;
  }
}

// What has no device kernels or no device algorithm yet is staged through
// host memory: the host path's bits, on device buffers.
TEST(GpuAllreduce, StagedCallsEqualHost) {
  expectDeviceEqualsHost(Case{"nat", CC_FLOAT32, CC_SUM, 100003, "tree"});
  expectDeviceEqualsHost(Case{"nat", CC_BFLOAT16, CC_AVG, 100003, "direct"});
  expectDeviceEqualsHost(Case{"topk:ratio=0.01+nat", CC_FLOAT32, CC_SUM, 100003, "auto"});
  expectDeviceEqualsHost(Case{"randk:ratio=0.1+nat", CC_FLOAT32, CC_AVG, 100003, "ring"});
  expectDeviceEqualsHost(Case{"dither_nat:scope=tensor", CC_FLOAT32, CC_SUM, 100003, "auto"});
}

TEST(GpuAllreduce, MixedHostAndDeviceBuffersAreRefused) {
  RankOptions options;
  runRanks(kRanks, options, [&](int, cc_comm_t comm) {
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    float* buffer = nullptr;
    ASSERT_EQ(cudaMalloc(&buffer, 1024 * 4), cudaSuccess);
    std::vector<float> host(1024);
    EXPECT_EQ(compressed_allreduce(buffer, host.data(), 1024, CC_FLOAT32, CC_SUM, comm, nullptr), CC_INVALID_ARGUMENT);
    EXPECT_NE(std::string(cc_get_last_error(comm)).find("device"), std::string::npos) << cc_get_last_error(comm);
    cudaFree(buffer);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (!cctest::haveCudaDevice()) return cctest::kSkipExitCode;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
