// The nat codec (docs/wire-format.md) and the exact codec: the format, the
// REFERENCE.md test vectors, the statistics of stochastic rounding, the
// scalar reference against the AVX2 and AVX-512 paths bit for bit, and the exact
// reductions of every (datatype, op).
//
// Statistical tests use fixed seeds and bounds of 6 standard deviations, so
// they are deterministic and would only fail for a real bias.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/nat_kernels.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"

#include "codec_test_values.h"

namespace cc {
namespace {


constexpr RandomStream kStream{0x0123456789abcdefull, 0x42ull};

// ---------------------------------------------------------------------------
// Helpers

const ElementType kNatTypes[] = {ElementType::F32, ElementType::BF16, ElementType::F16};

uint32_t signMaskOfBlock(const Bytes& packed, size_t block) {
  uint32_t mask = 0;
  for (int byte = 0; byte < 4; ++byte) mask |= static_cast<uint32_t>(packed[36 * block + byte]) << (8 * byte);
  return mask;
}

uint32_t signAt(const Bytes& packed, size_t i) { return (signMaskOfBlock(packed, i / 32) >> (i % 32)) & 1u; }
uint8_t exponentAt(const Bytes& packed, size_t i) { return packed[36 * (i / 32) + 4 + i % 32]; }
uint32_t nineBitCodeAt(const Bytes& packed, size_t i) { return signAt(packed, i) * 256 + exponentAt(packed, i); }
float decodedAt(const Bytes& packed, size_t i) {
  return floatOf(natDecodeBits(signAt(packed, i), exponentAt(packed, i)));
}

enum class Impl { Scalar, Avx2, Avx512 };
const char* implName(Impl impl) {
  return impl == Impl::Scalar ? "scalar" : impl == Impl::Avx2 ? "avx2" : "avx512";
}

// The fast paths this CPU runs, each compared with the scalar reference.
std::vector<Impl> fastImpls() {
  std::vector<Impl> impls;
  if (natAvx2Supported()) impls.push_back(Impl::Avx2);
  if (natAvx512Supported()) impls.push_back(Impl::Avx512);
  return impls;
}

Bytes natEncode(Impl impl, ElementType type, const Bytes& local, size_t count, uint64_t firstIndex,
                RandomStream rs = kStream) {
  Bytes packed(natPackedBytes(count), 0xCD);  // garbage: every byte must be written
  if (impl == Impl::Scalar) {
    natEncodeScalar(type, local.data(), count, firstIndex, rs, packed.data());
  } else if (impl == Impl::Avx2) {
    natEncodeAvx2(type, local.data(), count, firstIndex, rs, packed.data());
  } else {
    natEncodeAvx512(type, local.data(), count, firstIndex, rs, packed.data());
  }
  return packed;
}

Bytes natDecode(Impl impl, ElementType type, const Bytes& packed, size_t count) {
  Bytes out(count * elementBytes(type) + 8, 0xEE);  // the guard bytes must survive
  if (impl == Impl::Scalar) {
    natDecodeScalar(type, packed.data(), count, out.data());
  } else if (impl == Impl::Avx2) {
    natDecodeAvx2(type, packed.data(), count, out.data());
  } else {
    natDecodeAvx512(type, packed.data(), count, out.data());
  }
  for (size_t i = count * elementBytes(type); i < out.size(); ++i) EXPECT_EQ(out[i], 0xEE) << "decode overran";
  out.resize(count * elementBytes(type));
  return out;
}

std::vector<float> natDecodeAccumulate(Impl impl, const Bytes& packed, std::vector<float> acc) {
  if (impl == Impl::Scalar) {
    natDecodeAccumulateScalar(packed.data(), acc.size(), acc.data());
  } else if (impl == Impl::Avx2) {
    natDecodeAccumulateAvx2(packed.data(), acc.size(), acc.data());
  } else {
    natDecodeAccumulateAvx512(packed.data(), acc.size(), acc.data());
  }
  return acc;
}

struct HopResult {
  Bytes packed;
  Bytes decoded;
};

HopResult natHop(Impl impl, ElementType type, const Bytes& packedIn, const Bytes& local, size_t count,
                 uint64_t firstIndex, uint32_t divisor, bool wantDecoded, RandomStream rs = kStream) {
  HopResult result;
  result.packed.assign(natPackedBytes(count), 0xCD);
  if (wantDecoded) result.decoded.assign(count * elementBytes(type), 0xCD);
  void* decoded = wantDecoded ? result.decoded.data() : nullptr;
  if (impl == Impl::Scalar) {
    natDecodeAddEncodeScalar(type, packedIn.data(), local.data(), count, firstIndex, rs, divisor, result.packed.data(),
                             decoded);
  } else if (impl == Impl::Avx2) {
    natDecodeAddEncodeAvx2(type, packedIn.data(), local.data(), count, firstIndex, rs, divisor, result.packed.data(),
                           decoded);
  } else {
    natDecodeAddEncodeAvx512(type, packedIn.data(), local.data(), count, firstIndex, rs, divisor,
                             result.packed.data(), decoded);
  }
  return result;
}

// Interesting float32 bit patterns: zeros, subnormals, the E = 254
// saturation range, infinities, NaNs (quiet, signalling, negative).
const uint32_t kSpecialF32[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x00000100u, 0x00400000u,
                                0x007fffffu, 0x807fffffu, 0x00800000u, 0x00800001u, 0x3f800000u, 0xbf800000u,
                                0x3f800001u, 0x3fffffffu, 0x40400000u, 0xc0400000u, 0x7f000000u, 0x7f400000u,
                                0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                0x7f800001u, 0xff800001u, 0x7fffffffu, 0x3dcccccdu};
const uint16_t kSpecial16[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x3c01, 0x7bff, 0x7f7f,
                               0xff7f, 0x7c00, 0xfc00, 0x7f80, 0xff80, 0x7e00, 0x7c01, 0xfe00, 0x7fc0, 0x7f81, 0xffff};

// Local values for the bit-identity tests: a mix of raw random bit patterns
// (every exponent, NaNs included), ordinary magnitudes, and the specials.
Bytes mixedValues(ElementType type, size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gaussian(0.0, 1.0);
  Bytes out(count * elementBytes(type));
  for (size_t i = 0; i < count; ++i) {
    const uint64_t pick = rng() % 8;
    uint32_t bits32;
    if (pick < 3) {
      bits32 = static_cast<uint32_t>(rng());
    } else if (pick < 7) {
      bits32 = bitsOf(static_cast<float>(std::ldexp(gaussian(rng), static_cast<int>(rng() % 41) - 20)));
    } else {
      bits32 = type == ElementType::F32 ? kSpecialF32[rng() % (sizeof kSpecialF32 / sizeof kSpecialF32[0])]
                                        : static_cast<uint32_t>(kSpecial16[rng() % (sizeof kSpecial16 / 2)]) << 16;
    }
    if (type == ElementType::F32) {
      std::memcpy(out.data() + 4 * i, &bits32, 4);
      continue;
    }
    // 16-bit types: random and special values are raw 16-bit patterns
    // (every half/bf16 NaN, infinity and subnormal); ordinary magnitudes are
    // rounded from the float.
    const bool rawPattern = pick < 3 || pick == 7;
    const uint16_t value = rawPattern                  ? static_cast<uint16_t>(pick < 3 ? bits32 : bits32 >> 16)
                           : type == ElementType::BF16 ? floatBitsToBf16(bits32)
                                                       : floatBitsToHalf(bits32);
    std::memcpy(out.data() + 2 * i, &value, 2);
  }
  return out;
}

Bytes randomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes out(size);
  for (auto& byte : out) byte = static_cast<uint8_t>(rng());
  return out;
}

#define SKIP_WITHOUT_AVX2() \
  if (!natAvx2Supported()) GTEST_SKIP() << "this CPU has no AVX2+F16C: the fast path cannot run"

// 1007 = 31 blocks + 15: the AVX-512 path's 4-block steps, its single
// blocks and a tail.
const size_t kCounts[] = {0, 1, 31, 32, 33, 97, 1000 + 7};
// The third puts a non-zero value in the high word of the group counter;
// from the fourth the group counter's low word wraps within a few blocks
// (inside one of the AVX-512 path's 4-block steps).
const uint64_t kFirstIndices[] = {0, 32 * 777, 32 * ((1ull << 35) + 3), 4 * ((1ull << 32) - 16)};

// ---------------------------------------------------------------------------
// Format

TEST(NatFormat, PackedBytesIs36PerStartedBlock) {
  const auto codec = makeCodec(CodecId::Nat, CC_FLOAT32, CC_SUM);
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->packedBytes(0), 0u);
  EXPECT_EQ(codec->packedBytes(1), 36u);
  EXPECT_EQ(codec->packedBytes(31), 36u);
  EXPECT_EQ(codec->packedBytes(32), 36u);
  EXPECT_EQ(codec->packedBytes(33), 72u);
  EXPECT_EQ(codec->packedBytes(97), 144u);
  EXPECT_EQ(codec->packedBytes(1007), 36u * 32);
  for (ElementType type : kNatTypes) {
    EXPECT_EQ(makeCodec(CodecId::Nat, datatypeOf(type), CC_AVG)->packedBytes(1000), 36u * 32);
  }
}

TEST(NatFormat, NineBitCodesOfPowersOfTwo) {
  for (ElementType type : kNatTypes) {
    const Bytes local = valuesAs(type, {2.0f, 4.0f, -2.0f, 1.0f, 0.5f});
    const Bytes packed = natEncode(Impl::Scalar, type, local, 5, 0);
    EXPECT_EQ(nineBitCodeAt(packed, 0), 0x080u) << typeName(type);
    EXPECT_EQ(nineBitCodeAt(packed, 1), 0x081u) << typeName(type);
    EXPECT_EQ(nineBitCodeAt(packed, 2), 0x180u) << typeName(type);
    EXPECT_EQ(nineBitCodeAt(packed, 3), 0x07fu) << typeName(type);
    EXPECT_EQ(nineBitCodeAt(packed, 4), 0x07eu) << typeName(type);
  }
}

TEST(NatFormat, BlockLayoutAndZeroPaddedTail) {
  // 33 values: a full block of -1 (sign mask all ones), then one 8.0 and 31
  // pad lanes that must read as +0.
  std::vector<float> values(33, -1.0f);
  values[32] = 8.0f;
  const Bytes packed = natEncode(Impl::Scalar, ElementType::F32, valuesAs(ElementType::F32, values), 33, 0);
  ASSERT_EQ(packed.size(), 72u);
  EXPECT_EQ(signMaskOfBlock(packed, 0), 0xffffffffu);
  for (int lane = 0; lane < 32; ++lane) EXPECT_EQ(packed[4 + lane], 127) << lane;
  EXPECT_EQ(signMaskOfBlock(packed, 1), 0u);
  EXPECT_EQ(packed[36 + 4], 130);
  for (int lane = 1; lane < 32; ++lane) EXPECT_EQ(packed[36 + 4 + lane], 0) << "pad lane " << lane;
}

TEST(NatFormat, DecodeIsSignAndExponentBits) {
  for (uint32_t sign = 0; sign < 2; ++sign) {
    for (uint32_t e = 0; e < 256; ++e) {
      const float value = floatOf(natDecodeBits(sign, e));
      if (e == 0 && sign == 0) {
        EXPECT_EQ(natDecodeBits(sign, e), 0u);  // +0
      } else if (e == 0) {
        EXPECT_EQ(natDecodeBits(sign, e), 0x7fc00000u);  // NaN, canonical
      } else if (e == 255) {
        EXPECT_TRUE(std::isinf(value));
        EXPECT_EQ(std::signbit(value), sign == 1);
      } else {
        EXPECT_EQ(value, (sign ? -1.0f : 1.0f) * std::ldexp(1.0f, static_cast<int>(e) - 127));
      }
    }
  }
}

TEST(NatFormat, ZerosAreSentPositive) {
  // -0 and negative values that round to zero are sent as +0: exponent 0
  // with the sign bit is NaN.
  const Bytes local = valuesAs(ElementType::F32, {0.0f, -0.0f, -1e-45f});
  for (uint64_t stream = 0; stream < 16; ++stream) {
    const Bytes packed = natEncode(Impl::Scalar, ElementType::F32, local, 3, 0, {11, stream});
    EXPECT_EQ(nineBitCodeAt(packed, 0), 0x000u);
    EXPECT_EQ(nineBitCodeAt(packed, 1), 0x000u);
    EXPECT_TRUE(nineBitCodeAt(packed, 2) == 0x000u || nineBitCodeAt(packed, 2) == 0x101u) << nineBitCodeAt(packed, 2);
    EXPECT_EQ(natDecodeBits(signAt(packed, 1), exponentAt(packed, 1)), 0u);
  }
}

TEST(NatFormat, NanStaysNanAndInfinitiesKeepTheirSign) {
  const uint32_t inputs[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fffffffu};
  const uint32_t codes[] = {0x0ffu, 0x1ffu, 0x100u, 0x100u, 0x100u, 0x100u};  // sign << 8 | exponent
  Bytes local(sizeof inputs);
  std::memcpy(local.data(), inputs, sizeof inputs);
  const size_t count = sizeof inputs / 4;
  for (Impl impl : {Impl::Scalar, Impl::Avx2}) {
    if (impl == Impl::Avx2 && !natAvx2Supported()) continue;
    for (RandomStream rs : {kStream, RandomStream{1, 2}, RandomStream{~0ull, ~0ull}}) {
      const Bytes packed = natEncode(impl, ElementType::F32, local, count, 0, rs);
      for (size_t i = 0; i < count; ++i) {
        EXPECT_EQ(nineBitCodeAt(packed, i), codes[i]) << implName(impl) << " " << i;
        const float decoded = decodedAt(packed, i);
        if (codes[i] == 0x100u) {
          EXPECT_TRUE(std::isnan(decoded)) << i;
        } else {
          EXPECT_EQ(decoded, floatOf(inputs[i])) << i;  // ±Inf
        }
      }
    }
  }
  // A sum that overflows fp32 in the fused hop is +Inf.
  const Bytes maxFloat = valuesAs(ElementType::F32, {std::numeric_limits<float>::max()});
  const Bytes packedMax = natEncode(Impl::Scalar, ElementType::F32, maxFloat, 1, 0);  // 2^127
  const HopResult hop = natHop(Impl::Scalar, ElementType::F32, packedMax, maxFloat, 1, 0, 1, true);
  EXPECT_EQ(nineBitCodeAt(hop.packed, 0), 0x0ffu);

  // In the fused hop, Inf - Inf and a NaN operand of either sign give NaN in
  // both paths, whatever sign the hardware gave the NaN; Inf plus a finite
  // value keeps the Inf's sign.
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Bytes incoming =
      natEncode(Impl::Scalar, ElementType::F32, valuesAs(ElementType::F32, {inf, -inf, 1.0f, -1.0f, -inf, 2.0f}), 6, 0);
  const Bytes hopLocal = valuesAs(ElementType::F32, {-inf, inf, -nan, nan, 1.0f, -inf});
  const uint32_t hopCodes[] = {0x100u, 0x100u, 0x100u, 0x100u, 0x1ffu, 0x1ffu};
  for (Impl impl : {Impl::Scalar, Impl::Avx2}) {
    if (impl == Impl::Avx2 && !natAvx2Supported()) continue;
    const HopResult nanHop = natHop(impl, ElementType::F32, incoming, hopLocal, 6, 0, 1, true);
    for (size_t i = 0; i < 6; ++i) {
      EXPECT_EQ(nineBitCodeAt(nanHop.packed, i), hopCodes[i]) << implName(impl) << " " << i;
      const float decoded = floatOf(floatBitsAt(ElementType::F32, nanHop.decoded, i));
      if (hopCodes[i] == 0x100u) {
        EXPECT_EQ(bitsOf(decoded), 0x7fc00000u) << i;
      } else {
        EXPECT_EQ(decoded, -inf) << i;
      }
    }
  }
}

TEST(NatFormat, LargestExponentSaturatesAt2To127) {
  // E = 254 with any mantissa: rounding up would mean 255 (non-finite), so
  // the codec keeps 2^127 (the documented bias).
  const uint32_t inputs[] = {0x7f000000u, 0x7f000001u, 0x7f400000u, 0x7f7fffffu, 0xff7fffffu};
  const size_t count = sizeof inputs / 4;
  Bytes local(sizeof inputs);
  std::memcpy(local.data(), inputs, sizeof inputs);
  for (uint64_t stream = 0; stream < 64; ++stream) {
    const Bytes packed = natEncode(Impl::Scalar, ElementType::F32, local, count, 0, {7, stream});
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(exponentAt(packed, i), 254) << i;
      EXPECT_EQ(std::fabs(decodedAt(packed, i)), std::ldexp(1.0f, 127));
    }
  }
}

// ---------------------------------------------------------------------------
// REFERENCE.md C_nat test vectors: the two outputs exactly, and the
// probability of the upper one within 6 standard deviations over 200k draws.

constexpr size_t kDraws = 200000;

// Encodes kDraws copies of `bits` and checks every output is lo or hi and
// that hi shows up with probability pHi.
void checkTwoPointOutputs(ElementType type, uint32_t bits, float lo, float hi, double pHi, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << typeName(type) << " input 0x" << std::hex << bits << std::dec << " ("
                                    << floatOf(bits) << ")");
  const Bytes local = valuesAs(type, std::vector<float>(kDraws, floatOf(bits)));
  const auto codec = makeCodec(CodecId::Nat, datatypeOf(type), CC_SUM);
  Bytes packed(codec->packedBytes(kDraws));
  codec->encode(local.data(), kDraws, 0, {seed, 99}, packed.data());
  size_t highCount = 0;
  size_t unexpected = 0;
  for (size_t i = 0; i < kDraws; ++i) {
    const uint32_t outBits = bitsOf(decodedAt(packed, i));
    if (outBits == bitsOf(hi)) {
      ++highCount;
    } else if (outBits != bitsOf(lo)) {
      ++unexpected;
    }
  }
  EXPECT_EQ(unexpected, 0u) << "outputs other than " << lo << " and " << hi;
  const double expected = pHi * kDraws;
  const double sigma = std::sqrt(kDraws * pHi * (1 - pHi));
  EXPECT_NEAR(static_cast<double>(highCount), expected, 6 * sigma + 1e-9) << "P(" << hi << ") != " << pHi;
}

// P(up) = m / 2^23 exactly for the float32 nearest to t; the table's
// probabilities are those of the real t.
double probabilityUp(uint32_t bits) { return static_cast<double>(bits & 0x7fffff) / 8388608.0; }

TEST(NatReferenceVectors, OutputsAndProbabilities) {
  struct Vector {
    float t;
    float lo;
    float hi;
    double tableProbabilityHi;
  };
  const Vector vectors[] = {
      {3.0f, 2.0f, 4.0f, 0.5},  {1.5f, 1.0f, 2.0f, 0.5},      {5.0f, 4.0f, 8.0f, 0.25},
      {2.5f, 2.0f, 4.0f, 0.25}, {0.1f, 0.0625f, 0.125f, 0.6}, {4.0f / 3.0f, 1.0f, 2.0f, 1.0 / 3.0},
      {4.0f, 4.0f, 8.0f, 0.0},  {-3.0f, -2.0f, -4.0f, 0.5},
  };
  uint64_t seed = 1000;
  for (const Vector& v : vectors) {
    const uint32_t bits = bitsOf(v.t);
    const double p = probabilityUp(bits);
    EXPECT_NEAR(p, v.tableProbabilityHi, 1e-6) << v.t;  // 0.1 and 4/3 are not exact in fp32
    checkTwoPointOutputs(ElementType::F32, bits, v.lo, v.hi, p, seed++);
    // bf16 and f16 hold the exactly representable ones unchanged.
    if (v.t == 3.0f || v.t == 1.5f || v.t == 5.0f || v.t == 2.5f || v.t == 4.0f || v.t == -3.0f) {
      checkTwoPointOutputs(ElementType::BF16, bits, v.lo, v.hi, p, seed++);
      checkTwoPointOutputs(ElementType::F16, bits, v.lo, v.hi, p, seed++);
    }
  }
}

TEST(NatReferenceVectors, SubnormalsRoundToZeroOr2ToMinus126) {
  const float smallestNormal = std::ldexp(1.0f, -126);
  const uint32_t subnormals[] = {0x00400000u, 0x00300000u, 0x00000100u, 0x80400000u};
  uint64_t seed = 77;
  for (uint32_t bits : subnormals) {
    const bool negative = (bits >> 31) != 0;
    // |x| / 2^-126 = m / 2^23: the same formula as for normals; zero is sent as +0.
    checkTwoPointOutputs(ElementType::F32, bits, 0.0f, negative ? -smallestNormal : smallestNormal,
                         probabilityUp(bits), seed++);
  }
  // F16 inputs are never float32 subnormals; a half subnormal is a normal
  // float32 and follows the ordinary rule.
  checkTwoPointOutputs(ElementType::F16, halfToFloatBits(0x0003), std::ldexp(1.0f, -23), std::ldexp(1.0f, -22), 0.5,
                       seed++);
}

// ---------------------------------------------------------------------------
// Unbiasedness and the second-moment bound E||C(x)||^2 <= 9/8 ||x||^2.

// The two powers of two around |x| (lo = hi for a power of two).
void neighbours(float x, double* lo, double* hi) {
  const uint32_t bits = bitsOf(x);
  const uint32_t biasedExponent = (bits >> 23) & 0xff;
  if (biasedExponent == 0) {
    *lo = 0.0;
    *hi = std::ldexp(1.0, -126);
  } else {
    *lo = std::ldexp(1.0, static_cast<int>(biasedExponent) - 127);
    *hi = (bits & 0x7fffff) == 0 ? *lo : 2 * *lo;
  }
}

void checkUnbiasedWithBoundedSecondMoment(const std::vector<float>& x, const char* name) {
  SCOPED_TRACE(name);
  const size_t d = x.size();
  const int kStreams = 256;
  const auto codec = makeCodec(CodecId::Nat, CC_FLOAT32, CC_SUM);
  Bytes packed(codec->packedBytes(d));
  std::vector<float> decoded(d);
  std::vector<double> sums(d, 0.0);
  double normSquared = 0;
  for (float v : x) normSquared += static_cast<double>(v) * v;
  std::vector<double> ratios;
  for (int s = 0; s < kStreams; ++s) {
    codec->encode(x.data(), d, 0, {2024, static_cast<uint64_t>(s)}, packed.data());
    codec->decode(packed.data(), d, decoded.data());
    double compressedNormSquared = 0;
    for (size_t i = 0; i < d; ++i) {
      sums[i] += decoded[i];
      compressedNormSquared += static_cast<double>(decoded[i]) * decoded[i];
    }
    ratios.push_back(compressedNormSquared / normSquared);
  }

  // Per coordinate, C(x_i) takes lo or hi with variance (hi-|x|)(|x|-lo);
  // the standardised squared errors of the means sum to a chi-square-like
  // statistic with mean d and variance sum(2 + kurtosis_i / S).
  double chiSquare = 0, chiSquareVariance = 0, totalVariance = 0, totalError = 0, expectedNormSquared = 0;
  size_t randomCoordinates = 0;
  for (size_t i = 0; i < d; ++i) {
    double lo, hi;
    neighbours(x[i], &lo, &hi);
    const double magnitude = std::fabs(static_cast<double>(x[i]));
    const double variance = (hi - magnitude) * (magnitude - lo);
    const double mean = sums[i] / kStreams;
    expectedNormSquared += magnitude * magnitude + variance;
    totalError += mean - x[i];
    if (variance == 0) {
      EXPECT_EQ(mean, x[i]) << "a power of two must encode exactly, index " << i;
      continue;
    }
    const double p = (magnitude - lo) / (hi - lo);
    const double excessKurtosis = (1 - 6 * p * (1 - p)) / (p * (1 - p));
    chiSquare += (mean - x[i]) * (mean - x[i]) / (variance / kStreams);
    chiSquareVariance += 2 + excessKurtosis / kStreams;
    totalVariance += variance / kStreams;
    ++randomCoordinates;
  }
  EXPECT_LE(chiSquare, randomCoordinates + 6 * std::sqrt(chiSquareVariance)) << "per-coordinate means are biased";
  EXPECT_LE(std::fabs(totalError), 6 * std::sqrt(totalVariance)) << "the sum of the means is biased";

  // The exact expectation satisfies the bound (coordinate by coordinate),
  // and the measured one sits within 6 standard errors of it.
  EXPECT_LE(expectedNormSquared, 1.125 * normSquared * (1 + 1e-12));
  double ratioMean = 0, ratioVariance = 0;
  for (double r : ratios) ratioMean += r / kStreams;
  for (double r : ratios) ratioVariance += (r - ratioMean) * (r - ratioMean) / (kStreams - 1);
  const double standardError = std::sqrt(ratioVariance / kStreams);
  EXPECT_NEAR(ratioMean, expectedNormSquared / normSquared, 6 * standardError + 1e-12);
  EXPECT_LE(ratioMean, 1.125 + 6 * standardError);
  EXPECT_GE(ratioMean, 1.0 - 6 * standardError);
}

TEST(NatStatistics, UnbiasedAndSecondMomentWithinNineEighths) {
  const size_t d = 2048;
  std::mt19937_64 rng(31337);
  std::normal_distribution<double> gaussian(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::cauchy_distribution<double> cauchy(0.0, 1.0);
  std::lognormal_distribution<double> lognormal(0.0, 2.0);
  std::vector<float> values(d);

  for (auto& v : values) v = static_cast<float>(gaussian(rng));
  checkUnbiasedWithBoundedSecondMoment(values, "gaussian");
  for (auto& v : values) v = static_cast<float>(uniform(rng));
  checkUnbiasedWithBoundedSecondMoment(values, "uniform");
  for (auto& v : values) v = static_cast<float>(cauchy(rng));
  checkUnbiasedWithBoundedSecondMoment(values, "cauchy");
  for (auto& v : values) v = static_cast<float>(lognormal(rng) * (rng() % 2 ? 1 : -1));
  checkUnbiasedWithBoundedSecondMoment(values, "lognormal");
  // The worst case of the 9/8 bound: every |x| = 4/3 of a power of two.
  for (size_t i = 0; i < d; ++i) values[i] = std::ldexp(4.0f / 3.0f, static_cast<int>(i % 20) - 10);
  checkUnbiasedWithBoundedSecondMoment(values, "four thirds");
}

// ---------------------------------------------------------------------------
// Randomness: the counter layout, streams and chunking.

TEST(NatRandomness, ValueIDrawsWordIMod4OfGroupIDiv4) {
  for (ElementType type : kNatTypes) {
    const size_t count = 200;
    const Bytes local = mixedValues(type, count, 5);
    for (uint64_t firstIndex : kFirstIndices) {
      for (Impl impl : {Impl::Scalar, Impl::Avx2}) {
        if (impl == Impl::Avx2 && !natAvx2Supported()) continue;
        const Bytes packed = natEncode(impl, type, local, count, firstIndex);
        for (size_t i = 0; i < count; ++i) {
          const uint32_t bits = floatBitsAt(type, local, i);
          const uint32_t word = philoxRandomWordForValue(kStream.seed, kStream.stream, firstIndex + i);
          ASSERT_EQ(exponentAt(packed, i), natEncodeExponent(bits, word))
              << typeName(type) << " " << implName(impl) << " value " << i << " firstIndex " << firstIndex;
          ASSERT_EQ(signAt(packed, i), natEncodedSign(bits, exponentAt(packed, i)));
        }
      }
    }
  }
}

TEST(NatRandomness, SameIndexSameBitsRegardlessOfChunking) {
  const size_t count = 1007;
  const Bytes local = valuesAs(ElementType::F32, std::vector<float>(count, 3.0f));
  const auto codec = makeCodec(CodecId::Nat, CC_FLOAT32, CC_SUM);
  Bytes whole(codec->packedBytes(count));
  codec->encode(local.data(), count, 0, kStream, whole.data());
  // [0,64) == [0,32) + [32,64), and an uneven split of the whole range.
  for (size_t split : {32u, 64u, 320u, 992u}) {
    Bytes parts(codec->packedBytes(count));
    codec->encode(local.data(), split, 0, kStream, parts.data());
    codec->encode(local.data() + 4 * split, count - split, split, kStream, parts.data() + 36 * (split / 32));
    EXPECT_EQ(parts, whole) << "split at " << split;
  }
  Bytes again(codec->packedBytes(count));
  codec->encode(local.data(), count, 0, kStream, again.data());
  EXPECT_EQ(again, whole);
}

TEST(NatRandomness, DifferentStreamsAndSeedsDrawDifferentBits) {
  // 3.0 rounds either way with probability 1/2: two independent encodes of
  // 1024 copies agree with probability 2^-1024.
  const size_t count = 1024;
  const Bytes local = valuesAs(ElementType::F32, std::vector<float>(count, 3.0f));
  const Bytes base = natEncode(Impl::Scalar, ElementType::F32, local, count, 0, {1, 1});
  EXPECT_NE(natEncode(Impl::Scalar, ElementType::F32, local, count, 0, {1, 2}), base);
  EXPECT_NE(natEncode(Impl::Scalar, ElementType::F32, local, count, 0, {2, 1}), base);
  EXPECT_NE(natEncode(Impl::Scalar, ElementType::F32, local, count, 0, {1, 1ull << 32}), base);
  EXPECT_NE(natEncode(Impl::Scalar, ElementType::F32, local, count, 0, {1ull << 32, 1}), base);
  EXPECT_NE(natEncode(Impl::Scalar, ElementType::F32, local, count, count, {1, 1}), base);
  // Stream ids of different ranks and steps differ.
  EXPECT_NE(makeStreamId(5, 0, 1), makeStreamId(5, 1, 1));
  EXPECT_NE(makeStreamId(5, 0, 1), makeStreamId(5, 0, 2));
  EXPECT_NE(makeStreamId(5, 0, 1), makeStreamId(6, 0, 1));
}

// ---------------------------------------------------------------------------
// Scalar reference vs the fast paths (AVX2, AVX-512), bit for bit.

TEST(NatFastPaths, EncodeMatchesScalar) {
  SKIP_WITHOUT_AVX2();
  for (Impl impl : fastImpls()) {
    for (ElementType type : kNatTypes) {
      for (size_t count : kCounts) {
        const Bytes local = mixedValues(type, count, 100 + count);
        for (uint64_t firstIndex : kFirstIndices) {
          EXPECT_EQ(natEncode(impl, type, local, count, firstIndex),
                    natEncode(Impl::Scalar, type, local, count, firstIndex))
              << implName(impl) << " " << typeName(type) << " count " << count << " firstIndex " << firstIndex;
        }
      }
    }
  }
}

TEST(NatFastPaths, DecodeMatchesScalar) {
  SKIP_WITHOUT_AVX2();
  for (Impl impl : fastImpls()) {
    for (ElementType type : kNatTypes) {
      for (size_t count : kCounts) {
        // Arbitrary bytes: every exponent 0..255 with both signs, garbage pads.
        const Bytes packed = randomBytes(natPackedBytes(count), 200 + count);
        EXPECT_EQ(natDecode(impl, type, packed, count), natDecode(Impl::Scalar, type, packed, count))
            << implName(impl) << " " << typeName(type) << " count " << count;
        std::vector<float> acc(count);
        std::mt19937 rng(static_cast<unsigned>(count));
        for (auto& a : acc) {
          a = std::ldexp(static_cast<float>(rng() % 2000) - 1000.0f, static_cast<int>(rng() % 60) - 30);
        }
        const std::vector<float> scalar = natDecodeAccumulate(Impl::Scalar, packed, acc);
        const std::vector<float> fast = natDecodeAccumulate(impl, packed, acc);
        for (size_t i = 0; i < count; ++i) {
          ASSERT_EQ(bitsOf(scalar[i]), bitsOf(fast[i]))
              << implName(impl) << " decodeAccumulate, count " << count << " index " << i;
        }
      }
    }
  }
}

TEST(NatFastPaths, DecodeEveryExponentIntoEachType) {
  SKIP_WITHOUT_AVX2();
  // 512 values: exponent e with sign 0, then with sign 1. Covers the f16
  // underflow tie (2^-25 -> 0), the smallest subnormal (2^-24) and overflow
  // (2^16 -> Inf).
  Bytes packed(natPackedBytes(512));
  for (size_t i = 0; i < 512; ++i) {
    packed[36 * (i / 32) + 4 + i % 32] = static_cast<uint8_t>(i % 256);
    if (i >= 256) packed[36 * (i / 32) + (i % 32) / 8] |= static_cast<uint8_t>(1u << (i % 8));
  }
  for (ElementType type : kNatTypes) {
    const Bytes scalar = natDecode(Impl::Scalar, type, packed, 512);
    for (Impl impl : fastImpls()) {
      EXPECT_EQ(natDecode(impl, type, packed, 512), scalar) << implName(impl) << " " << typeName(type);
    }
    if (type == ElementType::F16) {
      auto halfAt = [&](size_t i) {
        uint16_t h;
        std::memcpy(&h, scalar.data() + 2 * i, 2);
        return h;
      };
      EXPECT_EQ(halfAt(127 - 25), 0x0000);  // 2^-25: tie, to even
      EXPECT_EQ(halfAt(127 - 24), 0x0001);
      EXPECT_EQ(halfAt(127 + 15), 0x7800);
      EXPECT_EQ(halfAt(127 + 16), 0x7c00);
      EXPECT_EQ(halfAt(256 + 255), 0xfc00);
    }
  }
}

TEST(NatFastPaths, DecodeAddEncodeMatchesScalar) {
  SKIP_WITHOUT_AVX2();
  for (Impl impl : fastImpls()) {
    for (ElementType type : kNatTypes) {
      for (size_t count : kCounts) {
        const Bytes local = mixedValues(type, count, 300 + count);
        // Arbitrary incoming bytes, pads included: both paths read pads as +0.
        const Bytes packedIn = randomBytes(natPackedBytes(count), 400 + count);
        for (uint64_t firstIndex : kFirstIndices) {
          for (uint32_t divisor : {1u, 3u, 8u}) {
            for (bool wantDecoded : {false, true}) {
              const HopResult scalar =
                  natHop(Impl::Scalar, type, packedIn, local, count, firstIndex, divisor, wantDecoded);
              const HopResult fast = natHop(impl, type, packedIn, local, count, firstIndex, divisor, wantDecoded);
              EXPECT_EQ(fast.packed, scalar.packed)
                  << implName(impl) << " " << typeName(type) << " count " << count << " divisor " << divisor;
              EXPECT_EQ(fast.decoded, scalar.decoded)
                  << implName(impl) << " " << typeName(type) << " count " << count << " divisor " << divisor;
            }
          }
        }
      }
    }
  }
}

// The fast paths in place (packedIn == packedOut, decodedOut == local), as
// the ring's last hop uses them.
TEST(NatFastPaths, InPlaceHopMatchesScalar) {
  SKIP_WITHOUT_AVX2();
  const size_t count = 1000 + 7;
  for (Impl impl : fastImpls()) {
    for (ElementType type : kNatTypes) {
      const Bytes local = mixedValues(type, count, 500);
      const Bytes packedIn = randomBytes(natPackedBytes(count), 600);
      const HopResult expected = natHop(Impl::Scalar, type, packedIn, local, count, 32 * 5, 4, true);
      Bytes packed = packedIn;
      Bytes values = local;
      if (impl == Impl::Avx2) {
        natDecodeAddEncodeAvx2(type, packed.data(), values.data(), count, 32 * 5, kStream, 4, packed.data(),
                               values.data());
      } else {
        natDecodeAddEncodeAvx512(type, packed.data(), values.data(), count, 32 * 5, kStream, 4, packed.data(),
                                 values.data());
      }
      EXPECT_EQ(packed, expected.packed) << implName(impl) << " " << typeName(type);
      EXPECT_EQ(values, expected.decoded) << implName(impl) << " " << typeName(type);
    }
  }
}

TEST(NatFastPaths, ForceScalarSelectsTheReference) {
  const auto codec = makeCodec(CodecId::Nat, CC_FLOAT32, CC_SUM);
  const size_t count = 97;
  const Bytes local = mixedValues(ElementType::F32, count, 9);
  Bytes viaCodec(codec->packedBytes(count));
  forceScalarCodecs(true);
  EXPECT_STREQ(natImplementationName(), "scalar");
  codec->encode(local.data(), count, 0, kStream, viaCodec.data());
  EXPECT_EQ(viaCodec, natEncode(Impl::Scalar, ElementType::F32, local, count, 0));
  limitCodecIsa(CodecIsa::Avx2);
  EXPECT_STREQ(natImplementationName(), natAvx2Supported() ? "avx2" : "scalar");
  codec->encode(local.data(), count, 0, kStream, viaCodec.data());
  EXPECT_EQ(viaCodec, natEncode(Impl::Scalar, ElementType::F32, local, count, 0));
  forceScalarCodecs(false);
  EXPECT_STREQ(natImplementationName(), natAvx512Supported() ? "avx512" : natAvx2Supported() ? "avx2" : "scalar");
  EXPECT_STREQ(natImplementationName(), codecIsaName(bestCodecIsa()));
  codec->encode(local.data(), count, 0, kStream, viaCodec.data());
  EXPECT_EQ(viaCodec, natEncode(Impl::Scalar, ElementType::F32, local, count, 0));
}

// ---------------------------------------------------------------------------
// The fused hop equals its definition computed step by step.

TEST(NatHop, EqualsDecodeAddDivideEncode) {
  for (Impl impl : {Impl::Scalar, Impl::Avx2}) {
    if (impl == Impl::Avx2 && !natAvx2Supported()) continue;
    for (ElementType type : kNatTypes) {
      for (size_t count : kCounts) {
        const Bytes local = mixedValues(type, count, 500 + count);
        // A well-formed incoming message: another rank's encode.
        const Bytes packedIn = natEncode(Impl::Scalar, type, mixedValues(type, count, 600 + count), count, 0, {3, 4});
        for (uint32_t divisor : {1u, 3u, 4u}) {
          const uint64_t firstIndex = 32 * 5;
          const HopResult hop = natHop(impl, type, packedIn, local, count, firstIndex, divisor, true);
          // D(in) in fp32: accumulate into -0, the additive identity that
          // keeps the sign of a decoded -0.
          std::vector<float> sum = natDecodeAccumulate(Impl::Scalar, packedIn, std::vector<float>(count, -0.0f));
          for (size_t i = 0; i < count; ++i) {
            sum[i] = sum[i] + floatOf(floatBitsAt(type, local, i));
            if (divisor > 1) sum[i] = sum[i] / static_cast<float>(divisor);
          }
          Bytes sumBytes(4 * count);
          for (size_t i = 0; i < count; ++i) {
            const uint32_t bits = bitsOf(sum[i]);
            std::memcpy(sumBytes.data() + 4 * i, &bits, 4);
          }
          const Bytes expected = natEncode(Impl::Scalar, ElementType::F32, sumBytes, count, firstIndex);
          EXPECT_EQ(hop.packed, expected) << implName(impl) << " " << typeName(type) << " count " << count;
          EXPECT_EQ(hop.decoded, natDecode(Impl::Scalar, type, hop.packed, count))
              << implName(impl) << " " << typeName(type) << " count " << count;
        }
      }
    }
  }
}

TEST(NatHop, InPlaceEqualsOutOfPlace) {
  // packedIn == packedOut and decodedOut == local, as a ring's last hop may
  // use them.
  for (Impl impl : {Impl::Scalar, Impl::Avx2}) {
    if (impl == Impl::Avx2 && !natAvx2Supported()) continue;
    for (ElementType type : kNatTypes) {
      for (size_t count : {size_t{33}, size_t{1000 + 7}}) {
        const Bytes local = mixedValues(type, count, 700 + count);
        const Bytes packedIn = natEncode(Impl::Scalar, type, mixedValues(type, count, 800 + count), count, 0, {3, 4});
        const HopResult expected = natHop(impl, type, packedIn, local, count, 64, 3, true);
        Bytes packed = packedIn, values = local;
        if (impl == Impl::Scalar) {
          natDecodeAddEncodeScalar(type, packed.data(), values.data(), count, 64, kStream, 3, packed.data(),
                                   values.data());
        } else {
          natDecodeAddEncodeAvx2(type, packed.data(), values.data(), count, 64, kStream, 3, packed.data(),
                                 values.data());
        }
        EXPECT_EQ(packed, expected.packed) << implName(impl) << " " << typeName(type) << " " << count;
        EXPECT_EQ(values, expected.decoded) << implName(impl) << " " << typeName(type) << " " << count;
      }
    }
  }
}

TEST(NatHop, ThroughTheCodecInterface) {
  // SUM of two ranks' 3.0 on a 2-rank AVG last hop: (D(in) + 3) / 2 with
  // D(in) in {2, 4} gives 2.5 or 3.5, each rounding to 2 or 4.
  const auto codec = makeCodec(CodecId::Nat, CC_FLOAT32, CC_AVG);
  const size_t count = 64;
  const std::vector<float> local(count, 3.0f);
  Bytes packedIn(codec->packedBytes(count)), packedOut(codec->packedBytes(count));
  std::vector<float> decoded(count), check(count);
  codec->encode(local.data(), count, 0, {1, 1}, packedIn.data());
  codec->decodeAddEncode(packedIn.data(), local.data(), count, 0, {1, 2}, 2, packedOut.data(), decoded.data());
  codec->decode(packedOut.data(), count, check.data());
  for (size_t i = 0; i < count; ++i) {
    EXPECT_TRUE(decoded[i] == 2.0f || decoded[i] == 4.0f) << decoded[i];
    EXPECT_EQ(decoded[i], check[i]);
  }
  // Without decodedOut, the same packed bytes.
  Bytes packedOnly(codec->packedBytes(count));
  codec->decodeAddEncode(packedIn.data(), local.data(), count, 0, {1, 2}, 2, packedOnly.data(), nullptr);
  EXPECT_EQ(packedOnly, packedOut);
}

// ---------------------------------------------------------------------------
// 16-bit float conversions of nat_math.h.

#ifdef __FLT16_MANT_DIG__
uint16_t compilerHalf(float value) {
  const _Float16 half = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &half, 2);
  return bits;
}
#endif

TEST(HalfConversion, WideningIsExact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint32_t bits = halfToFloatBits(static_cast<uint16_t>(h));
    const uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    const double magnitude = exponent == 0 ? std::ldexp(static_cast<double>(mantissa), -24)
                                           : std::ldexp(1024.0 + mantissa, static_cast<int>(exponent) - 25);
    if (exponent == 0x1f && mantissa != 0) {
      EXPECT_TRUE(std::isnan(floatOf(bits))) << h;
      EXPECT_EQ(bits >> 31, h >> 15);
      EXPECT_EQ(bits & 0x003fe000u, (mantissa << 13) & 0x003fe000u) << "payload of " << h;
    } else if (exponent == 0x1f) {
      EXPECT_TRUE(std::isinf(floatOf(bits)));
      EXPECT_EQ(bits >> 31, h >> 15);
    } else {
      EXPECT_EQ(static_cast<double>(floatOf(bits)), (h >> 15 ? -1 : 1) * magnitude) << h;
      EXPECT_EQ(floatBitsToHalf(bits), h) << "round trip of " << h;
    }
  }
}

TEST(HalfConversion, NarrowingRoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    // The midpoint between h and h + 1 (exact in fp32), and its neighbours.
    const uint32_t loBits = halfToFloatBits(static_cast<uint16_t>(h));
    const uint32_t hiBits = halfToFloatBits(static_cast<uint16_t>(h + 1));  // 0x7c00: Inf, as 2^16
    const double lo = floatOf(loBits);
    const double hi = h + 1 == 0x7c00 ? 65536.0 : static_cast<double>(floatOf(hiBits));
    const float midpoint = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(midpoint), (lo + hi) / 2);
    const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    EXPECT_EQ(floatBitsToHalf(bitsOf(midpoint)), even) << h;
    EXPECT_EQ(floatBitsToHalf(bitsOf(midpoint) - 1), h) << h;
    EXPECT_EQ(floatBitsToHalf(bitsOf(midpoint) + 1), h + 1) << h;
    EXPECT_EQ(floatBitsToHalf(bitsOf(-midpoint)), even | 0x8000) << h;
  }
  EXPECT_EQ(floatBitsToHalf(bitsOf(std::numeric_limits<float>::infinity())), 0x7c00);
  EXPECT_EQ(floatBitsToHalf(bitsOf(1e30f)), 0x7c00);
  EXPECT_EQ(floatBitsToHalf(bitsOf(std::ldexp(1.0f, -25))), 0x0000);
  EXPECT_EQ(floatBitsToHalf(0x33000001u), 0x0001);  // just above 2^-25
  EXPECT_EQ(floatBitsToHalf(0x00000001u), 0x0000);
  EXPECT_EQ(floatBitsToHalf(0x7fc00000u) & 0x7e00, 0x7e00);
  EXPECT_EQ(floatBitsToHalf(0xff800001u), 0xfe00);  // a signalling NaN comes out quiet
#ifdef __FLT16_MANT_DIG__
  std::mt19937 rng(12);
  for (int i = 0; i < 300000; ++i) {
    // Magnitudes around the half range, from deep underflow to overflow.
    const uint32_t bits = (rng() & 0x80000000u) | ((rng() % (160u << 23)) + (40u << 23));
    EXPECT_EQ(floatBitsToHalf(bits), compilerHalf(floatOf(bits))) << std::hex << bits;
  }
#endif
}

// An independent bf16 rounding: compare the distances to the two
// neighbours in double (0x7f80 stands for 2^128 when rounding).
uint16_t referenceBf16(float value) {
  const uint32_t bits = bitsOf(value);
  const uint16_t toward0 = static_cast<uint16_t>(bits >> 16);
  const uint16_t away = static_cast<uint16_t>(toward0 + 1);
  auto valueOf = [](uint16_t b) {
    const double sign = (b & 0x8000) ? -1.0 : 1.0;
    if ((b & 0x7fff) == 0x7f80) return sign * std::ldexp(1.0, 128);
    return static_cast<double>(floatOf(static_cast<uint32_t>(b) << 16));
  };
  const double x = value;
  const double dTowards = std::fabs(x - valueOf(toward0)), dAway = std::fabs(valueOf(away) - x);
  if (dTowards < dAway) return toward0;
  if (dAway < dTowards) return away;
  return (toward0 & 1) ? away : toward0;
}

TEST(Bf16Conversion, NarrowingRoundsToNearestEven) {
  std::mt19937 rng(7);
  for (int i = 0; i < 300000; ++i) {
    const uint32_t bits = static_cast<uint32_t>(rng());
    if ((bits & 0x7f800000u) == 0x7f800000u) continue;  // Inf/NaN checked below
    EXPECT_EQ(floatBitsToBf16(bits), referenceBf16(floatOf(bits))) << std::hex << bits;
  }
  for (uint32_t b = 0; b < 0x7f80; ++b) {
    const uint32_t midpoint = (b << 16) | 0x8000u;
    const uint16_t even = (b & 1) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b);
    EXPECT_EQ(floatBitsToBf16(midpoint), even) << b;
  }
  EXPECT_EQ(floatBitsToBf16(0x7f7fffffu), 0x7f80);  // FLT_MAX rounds up to Inf
  EXPECT_EQ(floatBitsToBf16(0x7f800000u), 0x7f80);
  EXPECT_EQ(floatBitsToBf16(0xff800000u), 0xff80);
  EXPECT_EQ(floatBitsToBf16(0x7f800001u), 0x7fc0);  // NaN stays NaN
  EXPECT_EQ(floatBitsToBf16(0xffffffffu), 0xffff);
  EXPECT_EQ(bf16ToFloatBits(0x3f80), 0x3f800000u);
}

// ---------------------------------------------------------------------------
// Names, selection, element types.

TEST(CodecSelection, NamesParseAndPrint) {
  CodecId id = CodecId::Nat;
  EXPECT_EQ(parseCodecName("none", &id), CC_SUCCESS);
  EXPECT_EQ(id, CodecId::None);
  EXPECT_EQ(parseCodecName("nat", &id), CC_SUCCESS);
  EXPECT_EQ(id, CodecId::Nat);
  EXPECT_STREQ(codecName(CodecId::None), "none");
  EXPECT_STREQ(codecName(CodecId::Nat), "nat");
  clearLastError();
  EXPECT_EQ(parseCodecName("zstd", &id), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastErrorMessage().find("unknown codec 'zstd' (valid: none, nat, nat_det)"), std::string::npos)
      << lastErrorMessage();
  EXPECT_EQ(parseCodecName("", &id), CC_INVALID_ARGUMENT);
  EXPECT_EQ(parseCodecName("NAT", &id), CC_INVALID_ARGUMENT);
}

TEST(CodecSelection, NatOnlyForSumAndAvgOfFloat32Bf16Fp16) {
  for (int dtype = 0; dtype < CC_NUM_DATATYPES; ++dtype) {
    for (int op = 0; op < CC_NUM_OPS; ++op) {
      const auto d = static_cast<cc_datatype_t>(dtype);
      const auto o = static_cast<cc_red_op_t>(op);
      const bool floatType = d == CC_FLOAT32 || d == CC_BFLOAT16 || d == CC_FLOAT16;
      const bool expected = floatType && (o == CC_SUM || o == CC_AVG);
      EXPECT_EQ(codecCompresses(CodecId::Nat, d, o), expected) << dtype << " " << op;
      EXPECT_FALSE(codecCompresses(CodecId::None, d, o));
      const auto nat = makeCodec(CodecId::Nat, d, o);
      ASSERT_NE(nat, nullptr);
      EXPECT_EQ(nat->id(), expected ? CodecId::Nat : CodecId::None);
      const auto none = makeCodec(CodecId::None, d, o);
      ASSERT_NE(none, nullptr);
      EXPECT_EQ(none->id(), CodecId::None);
      EXPECT_EQ(none->packedBytes(10), 10 * elementBytes(elementTypeOf(d)));
    }
  }
  EXPECT_EQ(makeCodec(CodecId::Nat, static_cast<cc_datatype_t>(99), CC_SUM), nullptr);
  EXPECT_EQ(makeCodec(CodecId::Nat, CC_FLOAT32, static_cast<cc_red_op_t>(99)), nullptr);
}

TEST(CodecSelection, ElementTypesAndSizes) {
  EXPECT_EQ(elementTypeOf(CC_INT8), ElementType::I8);
  EXPECT_EQ(elementTypeOf(CC_UINT8), ElementType::U8);
  EXPECT_EQ(elementTypeOf(CC_INT32), ElementType::I32);
  EXPECT_EQ(elementTypeOf(CC_UINT32), ElementType::U32);
  EXPECT_EQ(elementTypeOf(CC_INT64), ElementType::I64);
  EXPECT_EQ(elementTypeOf(CC_UINT64), ElementType::U64);
  EXPECT_EQ(elementTypeOf(CC_FLOAT16), ElementType::F16);
  EXPECT_EQ(elementTypeOf(CC_FLOAT32), ElementType::F32);
  EXPECT_EQ(elementTypeOf(CC_FLOAT64), ElementType::F64);
  EXPECT_EQ(elementTypeOf(CC_BFLOAT16), ElementType::BF16);
  EXPECT_EQ(elementBytes(ElementType::I8), 1u);
  EXPECT_EQ(elementBytes(ElementType::U8), 1u);
  EXPECT_EQ(elementBytes(ElementType::F16), 2u);
  EXPECT_EQ(elementBytes(ElementType::BF16), 2u);
  EXPECT_EQ(elementBytes(ElementType::F32), 4u);
  EXPECT_EQ(elementBytes(ElementType::I32), 4u);
  EXPECT_EQ(elementBytes(ElementType::U32), 4u);
  EXPECT_EQ(elementBytes(ElementType::F64), 8u);
  EXPECT_EQ(elementBytes(ElementType::I64), 8u);
  EXPECT_EQ(elementBytes(ElementType::U64), 8u);
}

// ---------------------------------------------------------------------------
// The exact codec.

template <typename T>
std::vector<T> exactHop(cc_datatype_t dtype, cc_red_op_t op, const std::vector<T>& in, const std::vector<T>& local,
                        uint32_t divisor) {
  const auto codec = makeCodec(CodecId::None, dtype, op);
  EXPECT_EQ(codec->id(), CodecId::None);
  std::vector<T> out(in.size()), decoded(in.size());
  codec->decodeAddEncode(in.data(), local.data(), in.size(), 0, kStream, divisor, out.data(), decoded.data());
  EXPECT_EQ(std::memcmp(out.data(), decoded.data(), sizeof(T) * in.size()), 0) << "decodedOut != packedOut";
  return out;
}

// Wrapping arithmetic of an N-bit integer, computed independently through
// 64-bit unsigned values and a two's-complement reinterpretation.
template <typename T>
T wrapped(uint64_t value) {
  T out;
  std::memcpy(&out, &value, sizeof(T));  // little-endian: the low bytes
  return out;
}

template <typename T>
void checkIntegerType(cc_datatype_t dtype) {
  SCOPED_TRACE(typeName(elementTypeOf(dtype)));
  std::mt19937_64 rng(static_cast<uint64_t>(dtype));
  const size_t count = 41;
  std::vector<T> a(count), b(count);
  for (size_t i = 0; i < count; ++i) {
    a[i] = wrapped<T>(rng());
    b[i] = wrapped<T>(rng());
  }
  a[0] = std::numeric_limits<T>::max();
  b[0] = 1;
  a[1] = std::numeric_limits<T>::min();
  b[1] = static_cast<T>(-1);  // all ones: wraps the minimum of signed types downward
  a[2] = std::numeric_limits<T>::max();
  b[2] = std::numeric_limits<T>::max();

  const std::vector<T> sum = exactHop(dtype, CC_SUM, a, b, 1);
  const std::vector<T> product = exactHop(dtype, CC_PROD, a, b, 1);
  const std::vector<T> maximum = exactHop(dtype, CC_MAX, a, b, 1);
  const std::vector<T> minimum = exactHop(dtype, CC_MIN, a, b, 1);
  const std::vector<T> average = exactHop(dtype, CC_AVG, a, b, 3);
  const std::vector<T> averageFirstHops = exactHop(dtype, CC_AVG, a, b, 1);
  for (size_t i = 0; i < count; ++i) {
    uint64_t ua = 0, ub = 0;
    std::memcpy(&ua, &a[i], sizeof(T));
    std::memcpy(&ub, &b[i], sizeof(T));
    const T expectedSum = wrapped<T>(ua + ub);
    EXPECT_EQ(sum[i], expectedSum) << i;
    EXPECT_EQ(averageFirstHops[i], expectedSum) << i;
    EXPECT_EQ(product[i], wrapped<T>(ua * ub)) << i;
    EXPECT_EQ(maximum[i], a[i] > b[i] ? a[i] : b[i]) << i;
    EXPECT_EQ(minimum[i], a[i] < b[i] ? a[i] : b[i]) << i;
    // Truncation toward zero of the wrapped sum.
    bool negative = false;
    if constexpr (std::numeric_limits<T>::is_signed) negative = expectedSum < 0;
    const uint64_t magnitude = negative ? static_cast<uint64_t>(-(static_cast<int64_t>(expectedSum) + 1)) + 1
                                        : static_cast<uint64_t>(expectedSum);
    const uint64_t quotient = magnitude / 3;
    const T expectedAverage = negative ? static_cast<T>(-static_cast<int64_t>(quotient)) : static_cast<T>(quotient);
    EXPECT_EQ(average[i], expectedAverage) << i;
  }
  if (std::numeric_limits<T>::is_signed) {
    EXPECT_EQ(sum[0], std::numeric_limits<T>::min());  // max + 1 wraps
    EXPECT_EQ(exactHop<T>(dtype, CC_AVG, {static_cast<T>(-7)}, {0}, 2)[0], static_cast<T>(-3));
  } else {
    EXPECT_EQ(sum[0], T(0));
  }
  EXPECT_EQ(exactHop<T>(dtype, CC_AVG, {7}, {0}, 2)[0], T(3));
}

TEST(ExactCodec, IntegerTypesWrapAndTruncate) {
  checkIntegerType<int8_t>(CC_INT8);
  checkIntegerType<uint8_t>(CC_UINT8);
  checkIntegerType<int32_t>(CC_INT32);
  checkIntegerType<uint32_t>(CC_UINT32);
  checkIntegerType<int64_t>(CC_INT64);
  checkIntegerType<uint64_t>(CC_UINT64);
  EXPECT_EQ(exactHop<int8_t>(CC_INT8, CC_PROD, {100}, {100}, 1)[0], static_cast<int8_t>(16));  // 10000 mod 256
  EXPECT_EQ(exactHop<uint8_t>(CC_UINT8, CC_SUM, {250}, {10}, 1)[0], 4);
}

template <typename T>
void checkNativeFloatType(cc_datatype_t dtype) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const T inf = std::numeric_limits<T>::infinity();
  const std::vector<T> a = {1.5, -2.0, 1e30, 0.1, nan, 3.0, inf, 7.0};
  const std::vector<T> b = {2.25, 0.5, 1e30, 0.2, 1.0, nan, -inf, 2.0};
  const auto sum = exactHop(dtype, CC_SUM, a, b, 1);
  const auto product = exactHop(dtype, CC_PROD, a, b, 1);
  const auto maximum = exactHop(dtype, CC_MAX, a, b, 1);
  const auto minimum = exactHop(dtype, CC_MIN, a, b, 1);
  const auto average = exactHop(dtype, CC_AVG, a, b, 3);
  for (size_t i = 0; i < a.size(); ++i) {
    const bool anyNan = std::isnan(a[i]) || std::isnan(b[i]);
    if (anyNan) {
      EXPECT_TRUE(std::isnan(sum[i]) && std::isnan(product[i]) && std::isnan(maximum[i]) && std::isnan(minimum[i]) &&
                  std::isnan(average[i]))
          << "NaN must propagate through every op, index " << i;
      continue;
    }
    if (std::isinf(a[i]) && std::isinf(b[i])) {
      EXPECT_TRUE(std::isnan(sum[i]));
    } else {
      EXPECT_EQ(sum[i], a[i] + b[i]) << i;
      EXPECT_EQ(average[i], (a[i] + b[i]) / T(3)) << i;
    }
    EXPECT_EQ(product[i], a[i] * b[i]) << i;
    EXPECT_EQ(maximum[i], std::max(a[i], b[i])) << i;
    EXPECT_EQ(minimum[i], std::min(a[i], b[i])) << i;
  }
}

TEST(ExactCodec, NativeFloatTypes) {
  checkNativeFloatType<float>(CC_FLOAT32);
  checkNativeFloatType<double>(CC_FLOAT64);
}

// 16-bit floats: computed in fp32, rounded to nearest even once per hop.
TEST(ExactCodec, HalfAndBfloatRoundOncePerHop) {
  // f16: 1 + 2^-11 is the midpoint of 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_SUM, {0x3c00}, {0x1000}, 1)[0], 0x3c00);
  // (1 + 2^-10) + 2^-11: midpoint of 0x3c01 and 0x3c02: to even 0x3c02.
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_SUM, {0x3c01}, {0x1000}, 1)[0], 0x3c02);
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_SUM, {0x7bff}, {0x7bff}, 1)[0], 0x7c00);  // 65504 * 2: Inf
  // AVG divides the fp32 sum and rounds once: (1 + 1) / 3 = 0.6667 -> 0x3955.
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_AVG, {0x3c00}, {0x3c00}, 3)[0], 0x3955);
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_MAX, {0x3c00}, {0xbc00}, 1)[0], 0x3c00);
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_MIN, {0x3c00}, {0xbc00}, 1)[0], 0xbc00);
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_PROD, {0x4000}, {0xc200}, 1)[0], 0xc600);          // 2 * -3 = -6
  EXPECT_EQ(exactHop<uint16_t>(CC_FLOAT16, CC_MAX, {0x3c00}, {0x7e00}, 1)[0] & 0x7e00, 0x7e00);  // NaN wins
  // bf16: 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7: to even (1).
  EXPECT_EQ(exactHop<uint16_t>(CC_BFLOAT16, CC_SUM, {0x3f80}, {0x3b80}, 1)[0], 0x3f80);
  EXPECT_EQ(exactHop<uint16_t>(CC_BFLOAT16, CC_SUM, {0x3f81}, {0x3b80}, 1)[0], 0x3f82);
  // (1 + 1) / 3 = 0.66667 -> bf16 0x3f2b (0.66796875, the nearer neighbour).
  EXPECT_EQ(exactHop<uint16_t>(CC_BFLOAT16, CC_AVG, {0x3f80}, {0x3f80}, 3)[0], 0x3f2b);
  EXPECT_EQ(exactHop<uint16_t>(CC_BFLOAT16, CC_PROD, {0x4000}, {0xc040}, 1)[0], 0xc0c0);  // -6

#ifdef __FLT16_MANT_DIG__
  // Random f16 sums against the compiler's own fp32 -> f16 rounding.
  std::mt19937 rng(3);
  std::vector<uint16_t> a(500), b(500);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint16_t>(rng() & 0xfbffu);  // finite halves only
    b[i] = static_cast<uint16_t>(rng() & 0xfbffu);
  }
  const auto sum = exactHop(CC_FLOAT16, CC_SUM, a, b, 1);
  const auto average = exactHop(CC_FLOAT16, CC_AVG, a, b, 5);
  for (size_t i = 0; i < a.size(); ++i) {
    const float fa = floatOf(halfToFloatBits(a[i])), fb = floatOf(halfToFloatBits(b[i]));
    EXPECT_EQ(sum[i], compilerHalf(fa + fb)) << i;
    EXPECT_EQ(average[i], compilerHalf((fa + fb) / 5.0f)) << i;
  }
#endif
}

TEST(ExactCodec, EncodeDecodeCopyAndAccumulateWidens) {
  const size_t count = 5;
  {
    const std::vector<int64_t> values = {1, -2, 1ll << 40, 7, -9};
    const auto codec = makeCodec(CodecId::None, CC_INT64, CC_SUM);
    std::vector<int64_t> packed(count), decoded(count);
    codec->encode(values.data(), count, 0, kStream, packed.data());
    EXPECT_EQ(packed, values);
    codec->decode(packed.data(), count, decoded.data());
    EXPECT_EQ(decoded, values);
    std::vector<float> acc(count, 0.5f);
    codec->decodeAccumulate(packed.data(), count, acc.data());
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(acc[i], 0.5f + static_cast<float>(values[i]));
  }
  {
    const std::vector<uint16_t> halves = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x3555};
    const auto codec = makeCodec(CodecId::None, CC_FLOAT16, CC_MAX);
    std::vector<float> acc(count, 1.0f);
    codec->decodeAccumulate(halves.data(), count, acc.data());
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(acc[i], 1.0f + floatOf(halfToFloatBits(halves[i])));
  }
  {
    const std::vector<uint8_t> bytes = {0, 1, 128, 255, 7};
    const auto codec = makeCodec(CodecId::Nat, CC_UINT8, CC_SUM);  // falls back to exact
    EXPECT_EQ(codec->id(), CodecId::None);
    std::vector<float> acc(count, 0.0f);
    codec->decodeAccumulate(bytes.data(), count, acc.data());
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(acc[i], static_cast<float>(bytes[i]));
  }
  // count == 0 touches nothing, null pointers included.
  for (int dtype = 0; dtype < CC_NUM_DATATYPES; ++dtype) {
    for (CodecId id : {CodecId::None, CodecId::Nat}) {
      const auto codec = makeCodec(id, static_cast<cc_datatype_t>(dtype), CC_SUM);
      codec->encode(nullptr, 0, 0, kStream, nullptr);
      codec->decode(nullptr, 0, nullptr);
      codec->decodeAccumulate(nullptr, 0, nullptr);
      codec->decodeAddEncode(nullptr, nullptr, 0, 0, kStream, 1, nullptr, nullptr);
    }
  }
}

}  // namespace
}  // namespace cc
