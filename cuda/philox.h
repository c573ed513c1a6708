// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3",
// SC'11), the counter-based generator behind every stochastic rounding in the
// library. One header serves the host and the device so that both draw the
// same bits for the same (key, counter): host and GPU encoders must emit
// identical bytes. Keep this file free of the C++ standard library: nvcc
// device code has no std:: functions.
#pragma once

#include <stdint.h>

#ifndef CC_HOST_DEVICE
#ifdef __CUDACC__
#define CC_HOST_DEVICE __host__ __device__
#else
#define CC_HOST_DEVICE
#endif
#endif

namespace cc {

// Round multipliers and Weyl key increments of Philox4x32 (Random123).
constexpr uint32_t kPhilox4x32M0 = 0xD2511F53u;
constexpr uint32_t kPhilox4x32M1 = 0xCD9E8D57u;
constexpr uint32_t kPhilox4x32W0 = 0x9E3779B9u;
constexpr uint32_t kPhilox4x32W1 = 0xBB67AE85u;
constexpr int kPhilox4x32Rounds = 10;

struct Philox4x32 {
  uint32_t v[4];
};

// The full 64-bit product of two 32-bit words, split into halves. On the
// device nvcc turns the 64-bit multiply into one mul.wide.u32.
CC_HOST_DEVICE inline void mulHiLo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

// One Philox4x32 round: two multiplies, a Feistel-like swap and the key mix.
CC_HOST_DEVICE inline void philox4x32Round(uint32_t x[4], uint32_t key0, uint32_t key1) {
  uint32_t hi0, lo0, hi1, lo1;
  mulHiLo32(kPhilox4x32M0, x[0], &hi0, &lo0);
  mulHiLo32(kPhilox4x32M1, x[2], &hi1, &lo1);
  const uint32_t next0 = hi1 ^ x[1] ^ key0;
  const uint32_t next2 = hi0 ^ x[3] ^ key1;
  x[0] = next0;
  x[1] = lo1;
  x[2] = next2;
  x[3] = lo0;
}

// Philox4x32 with 10 rounds, the variant the Random123 known-answer vectors
// call philox4x32_10. The key is bumped by the Weyl constants between rounds
// (not before the first).
CC_HOST_DEVICE inline Philox4x32 philox4x32_10(const uint32_t counter[4], const uint32_t key[2]) {
  uint32_t x[4] = {counter[0], counter[1], counter[2], counter[3]};
  uint32_t key0 = key[0];
  uint32_t key1 = key[1];
  for (int round = 0; round < kPhilox4x32Rounds; ++round) {
    if (round > 0) {
      key0 += kPhilox4x32W0;
      key1 += kPhilox4x32W1;
    }
    philox4x32Round(x, key0, key1);
  }
  Philox4x32 out;
  out.v[0] = x[0];
  out.v[1] = x[1];
  out.v[2] = x[2];
  out.v[3] = x[3];
  return out;
}

// The library's counter layout (docs/wire-format.md, "Randomness"): key =
// the 64-bit seed split low/high; counter = (group index low, group index
// high, stream low, stream high), where a group is 4 consecutive values that
// share one Philox call.
CC_HOST_DEVICE inline void philoxKeyFromSeed(uint64_t seed, uint32_t key[2]) {
  key[0] = static_cast<uint32_t>(seed);
  key[1] = static_cast<uint32_t>(seed >> 32);
}

CC_HOST_DEVICE inline void philoxCounterForGroup(uint64_t groupIndex, uint64_t stream, uint32_t counter[4]) {
  counter[0] = static_cast<uint32_t>(groupIndex);
  counter[1] = static_cast<uint32_t>(groupIndex >> 32);
  counter[2] = static_cast<uint32_t>(stream);
  counter[3] = static_cast<uint32_t>(stream >> 32);
}

// The 32 random bits that value `valueIndex` (global index in the user's
// buffer) of stream (seed, stream) draws: word valueIndex % 4 of the Philox
// call for group valueIndex / 4. A full Philox call per value: for tests and
// reference code, not for loops (those reuse one call for 4 values).
CC_HOST_DEVICE inline uint32_t philoxRandomWordForValue(uint64_t seed, uint64_t stream, uint64_t valueIndex) {
  uint32_t key[2];
  uint32_t counter[4];
  philoxKeyFromSeed(seed, key);
  philoxCounterForGroup(valueIndex / 4, stream, counter);
  return philox4x32_10(counter, key).v[valueIndex % 4];
}

}  // namespace cc
