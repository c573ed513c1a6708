// Philox4x32-10 against the published Random123 known-answer vectors, and
// the library's counter layout on top of it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <set>

#include "cuda/philox.h"

namespace cc {
namespace {

struct KnownAnswer {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

// From Random123's kat_vectors ("philox4x32 10" lines): counter, key, result.
const KnownAnswer kPhilox4x32_10KnownAnswers[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},  // digits of pi
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

TEST(Philox, MatchesRandom123KnownAnswers) {
  for (const KnownAnswer& kat : kPhilox4x32_10KnownAnswers) {
    const Philox4x32 out = philox4x32_10(kat.counter, kat.key);
    for (int word = 0; word < 4; ++word) {
      EXPECT_EQ(out.v[word], kat.expected[word]) << "word " << word << " of counter " << std::hex << kat.counter[0];
    }
  }
}

TEST(Philox, MulHiLoGivesTheFullProduct) {
  const uint32_t samples[] = {0u,         1u, 2u, 0x7fffffffu, 0x80000000u, 0xffffffffu, kPhilox4x32M0, kPhilox4x32M1,
                              0x12345678u};
  for (uint32_t a : samples) {
    for (uint32_t b : samples) {
      uint32_t hi = 0, lo = 0;
      mulHiLo32(a, b, &hi, &lo);
      const uint64_t product = static_cast<uint64_t>(a) * b;
      EXPECT_EQ(hi, static_cast<uint32_t>(product >> 32));
      EXPECT_EQ(lo, static_cast<uint32_t>(product));
    }
  }
}

TEST(Philox, SeedAndCounterLayout) {
  uint32_t key[2];
  philoxKeyFromSeed(0x0123456789abcdefull, key);
  EXPECT_EQ(key[0], 0x89abcdefu);
  EXPECT_EQ(key[1], 0x01234567u);

  uint32_t counter[4];
  philoxCounterForGroup(0x1111222233334444ull, 0x5555666677778888ull, counter);
  EXPECT_EQ(counter[0], 0x33334444u);
  EXPECT_EQ(counter[1], 0x11112222u);
  EXPECT_EQ(counter[2], 0x77778888u);
  EXPECT_EQ(counter[3], 0x55556666u);
}

TEST(Philox, ValueIndexUsesWordOfItsGroup) {
  const uint64_t seed = 0xfeedfacecafebeefull;
  const uint64_t stream = 0x0000000500000003ull;
  uint32_t key[2];
  philoxKeyFromSeed(seed, key);
  for (uint64_t group : {0ull, 1ull, 7ull, 0x100000000ull, 0x3fffffffffffffffull}) {
    uint32_t counter[4];
    philoxCounterForGroup(group, stream, counter);
    const Philox4x32 words = philox4x32_10(counter, key);
    for (uint64_t word = 0; word < 4; ++word) {
      EXPECT_EQ(philoxRandomWordForValue(seed, stream, group * 4 + word), words.v[word]);
    }
  }
}

// A smoke test of the output distribution: every bit of the words is set
// about half the time, and neighbouring counters do not collide. Bounds are
// 6 standard deviations (never flaky).
TEST(Philox, OutputBitsLookUniform) {
  const int kCalls = 4096;
  int bitCounts[32] = {};
  std::set<uint32_t> seen;
  uint32_t key[2] = {0x243f6a88u, 0x85a308d3u};
  for (int call = 0; call < kCalls; ++call) {
    const uint32_t counter[4] = {static_cast<uint32_t>(call), 0, 0, 0};
    const Philox4x32 out = philox4x32_10(counter, key);
    for (uint32_t word : out.v) {
      seen.insert(word);
      for (int bit = 0; bit < 32; ++bit) bitCounts[bit] += (word >> bit) & 1u;
    }
  }
  const double draws = 4.0 * kCalls;
  const double sigma = std::sqrt(draws * 0.25);
  for (int bit = 0; bit < 32; ++bit) {
    EXPECT_NEAR(bitCounts[bit], draws / 2, 6 * sigma) << "bit " << bit;
  }
  // 16384 uniform 32-bit words collide with probability about 3%; more than
  // a handful would mean correlated outputs.
  EXPECT_GE(seen.size(), static_cast<size_t>(draws) - 4);
}

}  // namespace
}  // namespace cc
