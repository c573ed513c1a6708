// Shared by the collective tests: run ranks as threads, reference sums,
// error norms.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "compressedcoll.h"

namespace cctest {

// Sets (or unsets, for nullptr) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    hadValue_ = old != nullptr;
    if (hadValue_) oldValue_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (hadValue_) {
      setenv(name_.c_str(), oldValue_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
 private:
  std::string name_;
  bool hadValue_ = false;
  std::string oldValue_;
};


struct RankOptions {
  const char* transport = "local";
  const char* codec = "nat";
  const char* algo = nullptr;  // nullptr: CC_ALGO, else auto
  const char* masterCodec = nullptr;  // direct's C_M; nullptr: CC_MASTER_CODEC, else the call's spec
  int timeoutMs = 60000;
  long long chunkBytes = CC_CONFIG_UNSET_INT;
  bool hasSeed = true;
  unsigned long long seed = 1234;
};

inline cc_config_t makeConfig(const RankOptions& options) {
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = options.transport;
  config.codec = options.codec;
  config.algo = options.algo;
  config.master_codec = options.masterCodec;
  config.timeout_ms = options.timeoutMs;
  config.chunk_bytes = options.chunkBytes;
  config.has_seed = options.hasSeed ? 1 : 0;
  config.seed = options.seed;
  return config;
}

// Runs `body(rank, comm)` on nranks threads sharing one communicator.
// Returns the init results so callers can check failures.
inline void runRanks(int nranks, const RankOptions& options,
                     const std::function<void(int, cc_comm_t)>& body) {
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS) << cc_get_last_error(nullptr);
  std::vector<std::thread> threads;
  std::vector<std::string> failures(nranks);
  for (int rank = 0; rank < nranks; ++rank) {
    threads.emplace_back([&, rank] {
      cc_config_t config = makeConfig(options);
      cc_comm_t comm = nullptr;
      if (cc_comm_init_rank(&comm, nranks, id, rank, &config) != CC_SUCCESS) {
        failures[rank] = cc_get_last_error(nullptr);
        return;
      }
      body(rank, comm);
      if (cc_comm_destroy(comm) != CC_SUCCESS) failures[rank] = cc_get_last_error(nullptr);
    });
  }
  for (auto& thread : threads) thread.join();
  for (int rank = 0; rank < nranks; ++rank) {
    EXPECT_TRUE(failures[rank].empty()) << "rank " << rank << ": " << failures[rank];
  }
}

// Deterministic inputs that differ per rank: Gaussian-like via a small LCG.
inline std::vector<float> makeInput(size_t count, int rank, uint64_t salt = 0) {
  std::vector<float> values(count);
  uint64_t state = 0x9E3779B97F4A7C15ull * (rank + 1) + salt * 0xD1B54A32D192ED03ull + 1;
  for (size_t i = 0; i < count; ++i) {
    double sum = 0;
    for (int k = 0; k < 4; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      sum += static_cast<double>(state >> 11) / 9007199254740992.0;
    }
    values[i] = static_cast<float>((sum - 2.0) * 1.7);
  }
  return values;
}

// The exact sum over `nranks` ranks of makeInput(count, rank, salt).
inline std::vector<double> exactSum(size_t count, int nranks, uint64_t salt = 0) {
  std::vector<double> exact(count, 0.0);
  for (int rank = 0; rank < nranks; ++rank) {
    const std::vector<float> input = makeInput(count, rank, salt);
    for (size_t i = 0; i < count; ++i) exact[i] += input[i];
  }
  return exact;
}

// bfloat16 by truncation, and back.
inline uint16_t toBfloat16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return static_cast<uint16_t>(bits >> 16);
}
inline float fromBfloat16(uint16_t raw) {
  const uint32_t bits = static_cast<uint32_t>(raw) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// FNV-1a over bytes: a digest to compare ranks' outputs.
inline uint64_t fnv64(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

// ||a - b|| / ||b||
inline double relativeError(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

inline bool isPowerOfTwoOrZero(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return (bits & 0x7fffffu) == 0;
}

// The ring's relative error bound: sqrt((1/8)(n+1)/2).
inline double ringNatErrorBound(int nranks) { return std::sqrt(0.125 * (nranks + 1) / 2.0); }

}  // namespace cctest
