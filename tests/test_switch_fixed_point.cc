// The switch's fixed point (codec/fixed_point.h), the part both the workers
// and the daemon run: nat codes and float32 to integers and back, exactly;
// the AVX2 paths give the scalar references' bits; non-finite values stay
// non-finite; the nat downlink is unbiased.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "codec/codec.h"
#include "codec/fixed_point.h"

namespace cc {
namespace {

TEST(SwitchFixedPoint, BlockExponentIsTheLargestFiniteExponentField) {
  std::vector<float> values(1000 + 3, 0.0f);
  EXPECT_EQ(blockExponentOf(ElementType::F32, values.data(), nullptr, values.size()), 0);
  values[7] = 3.0f;  // exponent field 128
  values[1001] = -70000.0f;  // 2^16 * 1.07: 143, in the scalar tail
  values[500] = INFINITY;
  values[501] = NAN;
  EXPECT_EQ(blockExponentOf(ElementType::F32, values.data(), nullptr, values.size()), 143);
  EXPECT_EQ(blockExponentOf(ElementType::F32, values.data(), nullptr, 1000), 128);
  std::vector<float> residual(values.size(), 0.0f);
  EXPECT_EQ(blockExponentOf(ElementType::F32, values.data(), residual.data(), values.size()), 143);
}

// With a residual the exponent is that of values + residual, added in
// float32: every path agrees with that sum's field, sums that overflow to
// Inf and NaN inputs counting as 0.
TEST(SwitchFixedPoint, BlockExponentWithAResidualIsThatOfTheSumOnEveryIsa) {
  std::mt19937 random(23);
  const size_t count = 1000 + 7;
  std::vector<float> values(count), residual(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = std::ldexp(static_cast<float>(static_cast<int32_t>(random())) / 2147483648.0f,
                           static_cast<int>(random() % 20) - 10);
    residual[i] = -values[i] * (static_cast<float>(random() % 1000) / 999.0f);
  }
  values[3] = 3e38f;  // + 3e38 overflows to Inf
  residual[3] = 3e38f;
  values[4] = NAN;
  residual[5] = INFINITY;
  const auto reference = [&](size_t n) {
    uint32_t best = 0;
    for (size_t i = 0; i < n; ++i) {
      const float p = values[i] + residual[i];
      uint32_t bits;
      std::memcpy(&bits, &p, 4);
      const uint32_t e = (bits >> 23) & 0xffu;
      if (e != 0xffu && e > best) best = e;
    }
    return static_cast<uint8_t>(best);
  };
  std::vector<CodecIsa> paths{CodecIsa::Scalar};
  if (bestCodecIsa() != CodecIsa::Scalar) paths.push_back(CodecIsa::Avx2);
  for (CodecIsa isa : paths) {
    limitCodecIsa(isa);
    // The largest sum sits in the vector body, then only in the scalar tail.
    for (size_t n : {count, size_t{8}, size_t{13}, size_t{0}}) {
      EXPECT_EQ(blockExponentOf(ElementType::F32, values.data(), residual.data(), n), reference(n))
          << codecIsaName(isa) << ", " << n << " values";
    }
    values[count - 1] = 1e20f;
    EXPECT_EQ(blockExponentOf(ElementType::F32, values.data(), residual.data(), count), reference(count))
        << codecIsaName(isa);
    values[count - 1] = 0.0f;
  }
  limitCodecIsa(bestCodecIsa());
}

TEST(SwitchFixedPoint, Int32EncodeAndDecodeMatchTheScalarReference) {
  std::mt19937 random(11);
  const size_t count = 4096 + 5;
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = std::ldexp(static_cast<float>(static_cast<int32_t>(random())) / 2147483648.0f,
                           static_cast<int>(random() % 40) - 30);
  }
  values[1] = INFINITY;
  values[2] = -NAN;
  values[3] = 1e30f;    // far outside the scale: clamped
  values[4] = -1e30f;
  values[5] = 0.5f + std::ldexp(1.0f, -24);  // ties and near-ties
  for (int floor : {1, 60, 100, 127, 200, 253}) {
    std::vector<int32_t> fast(count), slow(count);
    fixedEncode(ElementType::F32, values.data(), nullptr, count, floor, fast.data());
    fixedEncodeScalar(ElementType::F32, values.data(), nullptr, count, floor, slow.data());
    ASSERT_EQ(fast, slow) << "floor " << floor;
  }
  std::vector<int32_t> sums(count);
  for (size_t i = 0; i < count; ++i) sums[i] = static_cast<int32_t>(random()) >> (random() % 31);
  sums[7] = kFixedNonFinite;
  sums[8] = INT32_MAX;
  sums[9] = -INT32_MAX;
  for (int floor : {1, 96, 127, 223}) {
    std::vector<float> fast(count), slow(count);
    fixedDecode(sums.data(), count, floor, 1, ElementType::F32, fast.data());
    fixedDecodeScalar(sums.data(), count, floor, 1, ElementType::F32, slow.data());
    ASSERT_EQ(std::memcmp(fast.data(), slow.data(), count * sizeof(float)), 0) << "floor " << floor;
  }
}

// The fixed point both sides use: nat codes shift exactly, the switch's
// nat downlink is unbiased and the vector path gives the scalar bytes.
TEST(SwitchFixedPoint, NatCodesSumExactlyAndReencodeLikeTheScalarReference) {
  const int maxShift = fixedMaxShift(4);
  EXPECT_EQ(maxShift, 28);
  EXPECT_EQ(fixedMaxShift(2), 29);
  EXPECT_EQ(fixedMaxShift(8), 27);
  const int floor = fixedFloor(130, maxShift);
  std::mt19937 random(3);
  const size_t count = 32 * 40 + 32;
  std::vector<uint8_t> packed(36 * (count / 32), 0);
  for (size_t b = 0; b < count / 32; ++b) {
    uint32_t mask = random();
    std::memcpy(&packed[36 * b], &mask, 4);
    for (int l = 0; l < 32; ++l) packed[36 * b + 4 + l] = static_cast<uint8_t>(floor + random() % (maxShift + 1));
  }
  std::vector<int32_t> fast(count), slow(count);
  EXPECT_TRUE(natAccumulateFixed(packed.data(), count, floor, maxShift, true, fast.data()));
  EXPECT_TRUE(natAccumulateFixedScalar(packed.data(), count, floor, maxShift, true, slow.data()));
  EXPECT_EQ(fast, slow);
  EXPECT_TRUE(natAccumulateFixed(packed.data(), count, floor, maxShift, false, fast.data()));
  for (size_t i = 0; i < count; ++i) {
    const uint32_t mask = static_cast<uint32_t>(packed[36 * (i / 32)]) | packed[36 * (i / 32) + 1] << 8 |
                          packed[36 * (i / 32) + 2] << 16 | static_cast<uint32_t>(packed[36 * (i / 32) + 3]) << 24;
    const int e = packed[36 * (i / 32) + 4 + i % 32];
    const int32_t q = static_cast<int32_t>(1u << (e - floor)) * (((mask >> (i % 32)) & 1u) ? -1 : 1);
    ASSERT_EQ(fast[i], 2 * q) << i;
  }
  // A NaN code (0 with the sign bit) and an Inf code make the sum non-finite.
  std::vector<uint8_t> special(36, 0);
  special[0] = 1;           // lane 0: sign set, exponent 0: NaN
  special[4 + 1] = 255;     // lane 1: Inf
  std::vector<int32_t> acc(32, 5);
  EXPECT_TRUE(natAccumulateFixed(special.data(), 32, floor, maxShift, false, acc.data()));
  EXPECT_EQ(acc[0], kFixedNonFinite);
  EXPECT_EQ(acc[1], kFixedNonFinite);
  EXPECT_EQ(acc[2], 5);

  std::vector<int32_t> sums(count);
  for (size_t i = 0; i < count; ++i) sums[i] = static_cast<int32_t>(random()) >> (random() % 31);
  sums[5] = kFixedNonFinite;
  sums[6] = 0;
  const RandomStream rs{99, 7};
  std::vector<uint8_t> a(36 * (count / 32)), b(36 * (count / 32));
  natEncodeFixed(sums.data(), count, floor, 64, rs, a.data());
  natEncodeFixedScalar(sums.data(), count, floor, 64, rs, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[4 + 5], 0);           // NaN: exponent 0 ...
  EXPECT_EQ((a[0] >> 5) & 1, 1);    // ... with the sign bit
  EXPECT_EQ((a[0] >> 6) & 1, 0);    // zero keeps sign 0

  // Unbiased: the mean of many encodes of one sum is the sum.
  const int32_t sum = 1000003;
  double mean = 0;
  const int draws = 20000;
  std::vector<int32_t> one(32, sum);
  std::vector<uint8_t> code(36);
  for (int d = 0; d < draws; ++d) {
    natEncodeFixed(one.data(), 32, floor, 32 * static_cast<uint64_t>(d), rs, code.data());
    for (int l = 0; l < 32; ++l) mean += std::ldexp(1.0, code[4 + l] - floor);
  }
  mean /= 32.0 * draws;
  EXPECT_NEAR(mean / sum, 1.0, 0.003);
}

// The floor on a rank's own codes with error feedback: a negative value
// rounded to a zero code leaves its whole value in the residual (a zero
// code with the sign bit is the NaN code, and must not be decoded as one).
TEST(SwitchFixedPoint, FlooredNegativeValuesLeaveFiniteResiduals) {
  const int floor = 102;
  std::vector<uint8_t> packed(36 * 4);
  for (int b = 0; b < 4; ++b) {
    const uint32_t allNegative = 0xffffffffu;
    std::memcpy(&packed[36 * b], &allNegative, 4);
    for (int l = 0; l < 32; ++l) packed[36 * b + 4 + l] = static_cast<uint8_t>(floor - 1 - l % 3);
  }
  const std::vector<uint8_t> before = packed;
  std::vector<float> residual(128, 0.0f);
  ASSERT_EQ(natApplyFloor(packed.data(), 128, floor, 0, RandomStream{5, 6}, residual.data()), 128u);
  int zeros = 0;
  for (int i = 0; i < 128; ++i) {
    const int b = i / 32, l = i % 32;
    const int code = packed[36 * b + 4 + l];
    uint32_t signs;
    std::memcpy(&signs, &packed[36 * b], 4);
    const float value = -std::ldexp(1.0f, before[36 * b + 4 + l] - 127);
    if (code == 0) {
      ++zeros;
      EXPECT_EQ(signs >> l & 1u, 0u) << i;
      EXPECT_EQ(residual[i], value) << i;
    } else {
      ASSERT_EQ(code, floor) << i;
      EXPECT_EQ(signs >> l & 1u, 1u) << i;
      EXPECT_EQ(residual[i], value + std::ldexp(1.0f, floor - 127)) << i;
    }
    EXPECT_TRUE(std::isfinite(residual[i])) << i;
  }
  EXPECT_GT(zeros, 64);  // most round down: up with probability 1/2, 1/4, 1/8
}

// Every vector path against the scalar references, on random codes with
// out-of-range, NaN and Inf codes mixed in, ragged tails and several
// floors: the same accumulators (within the count), the same verdict, the
// same bytes re-encoded.
TEST(SwitchFixedPoint, EveryIsaAccumulatesAndReencodesLikeTheScalarReference) {
  const int maxShift = fixedMaxShift(4);
  std::mt19937 random(17);
  std::vector<CodecIsa> paths;
  if (bestCodecIsa() == CodecIsa::Avx512) paths.push_back(CodecIsa::Avx512);
  if (bestCodecIsa() != CodecIsa::Scalar) paths.push_back(CodecIsa::Avx2);
  for (CodecIsa isa : paths) {
    limitCodecIsa(isa);
    for (size_t count : {size_t{32}, size_t{32 * 7 + 17}, size_t{4096 + 31}, size_t{5}}) {
      const size_t blocks = (count + 31) / 32;
      for (int floor : {1, 40, 102, 200}) {
        for (bool withBadCodes : {false, true}) {
          std::vector<uint8_t> packed(36 * blocks);
          for (size_t b = 0; b < blocks; ++b) {
            const uint32_t mask = random();
            std::memcpy(&packed[36 * b], &mask, 4);
            for (int l = 0; l < 32; ++l) {
              const uint32_t pick = random() % 100;
              int e = floor + static_cast<int>(random() % (maxShift + 1));
              if (pick < 5) e = 0;
              if (pick == 5) e = 255;
              if (withBadCodes && pick == 6) e = floor + maxShift + 1 + static_cast<int>(random() % 3);
              if (withBadCodes && pick == 7 && floor > 1) e = floor - 1;
              packed[36 * b + 4 + l] = static_cast<uint8_t>(std::min(e, 255));
            }
          }
          // Room for whole blocks: a vector path may use a tail block's pads as scratch.
          std::vector<int32_t> fast(32 * blocks, 3), slow(32 * blocks, 3);
          for (bool first : {true, false}) {
            const bool fastOk = natAccumulateFixed(packed.data(), count, floor, maxShift, first, fast.data());
            const bool slowOk = natAccumulateFixedScalar(packed.data(), count, floor, maxShift, first, slow.data());
            ASSERT_EQ(fastOk, slowOk) << codecIsaName(isa) << ", " << count << " values, floor " << floor;
            ASSERT_TRUE(std::equal(fast.begin(), fast.begin() + count, slow.begin()))
                << codecIsaName(isa) << ", " << count << " values, floor " << floor << (first ? ", first" : "");
          }
          if (floor > 223) continue;  // the vector encoders' range: the rest is scalar anyway
          std::vector<int32_t> sums(count);
          for (size_t i = 0; i < count; ++i) {
            sums[i] = static_cast<int32_t>(random()) >> (random() % 32);
            if (random() % 50 == 0) sums[i] = kFixedNonFinite;
            if (random() % 50 == 0) sums[i] = 0;
          }
          if (count > 3) {
            sums[1] = INT32_MAX;
            sums[2] = -INT32_MAX;
            sums[3] = 1 << 30;
          }
          const RandomStream rs{1234, 99};
          for (uint64_t firstIndex : {uint64_t{0}, uint64_t{32} * 1000003}) {
            std::vector<uint8_t> a(36 * blocks), b(36 * blocks);
            natEncodeFixed(sums.data(), count, floor, firstIndex, rs, a.data());
            natEncodeFixedScalar(sums.data(), count, floor, firstIndex, rs, b.data());
            ASSERT_EQ(a, b) << codecIsaName(isa) << ", " << count << " values, floor " << floor << ", first index "
                            << firstIndex;
          }
        }
      }
    }
  }
  limitCodecIsa(CodecIsa::Avx512);
}

}  // namespace
}  // namespace cc
