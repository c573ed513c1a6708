// Natural and standard dithering (docs/wire-format.md, "dither"): sizes and
// layout, a reference encoder written from the document compared byte for
// byte, the REFERENCE.md test vectors, unbiasedness and the variance bounds,
// chunking invariance, the fused hop against decode + add + encode, and the
// special values (zeros, Inf, NaN, overflow, corrupted indices).
//
// Statistical tests use fixed seeds and bounds of at least 6 standard
// deviations (or a 25x margin on a chi-square-like sum), so they are
// deterministic and would only fail for a real bias.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/dither.h"
#include "codec/spec.h"
#include "cuda/nat_math.h"
#include "cuda/philox.h"

#include "codec_test_values.h"

namespace cc {
namespace {


constexpr RandomStream kStream{0x0123456789abcdefull, 0x42ull};
constexpr uint64_t kNormStreamBit = 0x8000000000000000ull;

// ---------------------------------------------------------------------------
// Configurations

struct Config {
  Quantizer quantizer = Quantizer::DitherNat;
  DitherParams params;
  size_t bucket = 512;

  std::string name() const {
    std::string text = quantizer == Quantizer::DitherNat ? "nat s=" : "std u=";
    text += std::to_string(params.levels);
    text += params.norm == NormKind::L2 ? " p=2" : " p=inf";
    if (params.natNorm) text += " natnorm";
    if (params.clip > 0) text += " clip=" + std::to_string(params.clip);
    text += " B=" + std::to_string(bucket);
    return text;
  }
};

Config makeConfig(Quantizer quantizer, uint32_t levels, NormKind norm, bool natNorm, size_t bucket, float clip = 0.0f) {
  Config config;
  config.quantizer = quantizer;
  config.params.levels = levels;
  config.params.norm = norm;
  config.params.natNorm = natNorm;
  config.params.clip = clip;
  config.bucket = bucket;
  return config;
}

std::unique_ptr<Codec> codecFor(const Config& config, ElementType type = ElementType::F32) {
  auto codec = makeDitherCodec(config.quantizer, config.params, type, config.bucket);
  EXPECT_NE(codec, nullptr) << config.name() << ": " << lastErrorMessage();
  return codec;
}

// Level bits as the document defines them, computed independently.
unsigned levelBitsOf(const Config& config) {
  unsigned bits = 1;
  while ((1u << bits) < config.params.levels + 1) ++bits;
  return bits;
}

size_t normSizeOf(const Config& config) { return config.params.natNorm ? 1 : 4; }
size_t bucketsOf(const Config& config, size_t count) {
  if (count == 0) return 0;
  return config.bucket == 0 ? 1 : (count + config.bucket - 1) / config.bucket;
}
size_t normAreaOf(const Config& config, size_t count) {
  return (bucketsOf(config, count) * normSizeOf(config) + 3) / 4 * 4;
}
size_t groupBytesOf(const Config& config) { return 4 * (1 + levelBitsOf(config)); }
size_t formulaBytes(const Config& config, size_t count) {
  return normAreaOf(config, count) + (count + 31) / 32 * groupBytesOf(config);
}

// ---------------------------------------------------------------------------
// Values


// Deterministic generator (splitmix64) and distributions built on it, so the
// inputs do not depend on the standard library's distribution code.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) / 9007199254740992.0; }  // [0, 1)
  double gaussian() {
    const double u1 = 1.0 - uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double studentT3() {
    const double z = gaussian();
    double chi = 0;
    for (int k = 0; k < 3; ++k) {
      const double g = gaussian();
      chi += g * g;
    }
    return z / std::sqrt(chi / 3.0);
  }
  double cauchyClipped() {
    const double value = std::tan(3.141592653589793 * (uniform() - 0.5));
    return std::max(-100.0, std::min(100.0, value));
  }
};

enum class Distribution { Gaussian, Uniform, StudentT, Cauchy };
const char* distributionName(Distribution d) {
  switch (d) {
    case Distribution::Gaussian:
      return "gaussian";
    case Distribution::Uniform:
      return "uniform";
    case Distribution::StudentT:
      return "student-t(3)";
    case Distribution::Cauchy:
      return "cauchy clipped";
  }
  return "?";
}

std::vector<float> drawValues(Distribution d, size_t count, uint64_t seed) {
  Rng rng{seed * 0x2545F4914F6CDD1Dull + 7};
  std::vector<float> values(count);
  for (auto& value : values) {
    switch (d) {
      case Distribution::Gaussian:
        value = static_cast<float>(rng.gaussian());
        break;
      case Distribution::Uniform:
        value = static_cast<float>(2.0 * rng.uniform() - 1.0);
        break;
      case Distribution::StudentT:
        value = static_cast<float>(rng.studentT3());
        break;
      case Distribution::Cauchy:
        value = static_cast<float>(rng.cauchyClipped());
        break;
    }
  }
  return values;
}


// The float32 values a buffer of the element type holds (exact widening).
std::vector<float> widen(ElementType type, const Bytes& values) {
  const size_t count = values.size() / elementBytes(type);
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (type == ElementType::F32) {
      std::memcpy(&out[i], values.data() + 4 * i, 4);
    } else {
      uint16_t narrow;
      std::memcpy(&narrow, values.data() + 2 * i, 2);
      out[i] = floatOf(type == ElementType::BF16 ? bf16ToFloatBits(narrow) : halfToFloatBits(narrow));
    }
  }
  return out;
}

uint32_t le32(const uint8_t* bytes) {
  return static_cast<uint32_t>(bytes[0]) | (static_cast<uint32_t>(bytes[1]) << 8) |
         (static_cast<uint32_t>(bytes[2]) << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
}
void putLe32(uint8_t* bytes, uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
}

// ---------------------------------------------------------------------------
// Calling the codec

constexpr uint8_t kGuard = 0xA5;
constexpr size_t kGuardBytes = 16;

Bytes encodeWith(const Codec& codec, ElementType type, const Bytes& local, uint64_t firstIndex,
                 RandomStream rs = kStream) {
  const size_t count = local.size() / elementBytes(type);
  const size_t bytes = codec.packedBytes(count);
  Bytes packed(bytes + kGuardBytes, 0xCD);  // garbage: every byte must be written
  std::fill(packed.begin() + bytes, packed.end(), kGuard);
  codec.encode(local.data(), count, firstIndex, rs, packed.data());
  for (size_t i = bytes; i < packed.size(); ++i) EXPECT_EQ(packed[i], kGuard) << "encode overran at byte " << i;
  packed.resize(bytes);
  return packed;
}

Bytes encodeF32(const Codec& codec, const std::vector<float>& values, uint64_t firstIndex = 0,
                RandomStream rs = kStream) {
  return encodeWith(codec, ElementType::F32, valuesAs(ElementType::F32, values), firstIndex, rs);
}

Bytes decodeWith(const Codec& codec, ElementType type, const Bytes& packed, size_t count) {
  const size_t bytes = count * elementBytes(type);
  Bytes out(bytes + kGuardBytes, kGuard);
  codec.decode(packed.data(), count, out.data());
  for (size_t i = bytes; i < out.size(); ++i) EXPECT_EQ(out[i], kGuard) << "decode overran at byte " << i;
  out.resize(bytes);
  return out;
}

std::vector<float> decodeF32(const Codec& codec, const Bytes& packed, size_t count) {
  return widen(ElementType::F32, decodeWith(codec, ElementType::F32, packed, count));
}

// The float32 values of D(packed), through decodeAccumulate into +0.
std::vector<float> decodeExact(const Codec& codec, const Bytes& packed, size_t count) {
  std::vector<float> acc(count + 4, 0.0f);
  acc[count] = 12345.0f;  // guard: decodeAccumulate must not touch it
  codec.decodeAccumulate(packed.data(), count, acc.data());
  EXPECT_EQ(acc[count], 12345.0f);
  acc.resize(count);
  return acc;
}

// ---------------------------------------------------------------------------
// A reference encoder and decoder written from the document, one value at a
// time and as literally as possible (Philox word per value, the nat rounding
// as p = (y - lo) / (hi - lo) rather than through natEncodeExponent).

float refSumOfSquares(const std::vector<float>& w) {
  float acc[32] = {};
  for (size_t k = 0; 32 * k < w.size(); ++k) {
    for (size_t i = 0; i < 32 && 32 * k + i < w.size(); ++i) {
      const float square = w[32 * k + i] * w[32 * k + i];
      acc[i] = acc[i] + square;
    }
  }
  for (int width = 16; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) acc[i] = acc[i] + acc[i + width];
  }
  return acc[0];
}

struct RefValue {
  uint32_t sign;
  uint32_t index;
};

Bytes refEncode(const Config& config, const std::vector<float>& v, uint64_t firstIndex, RandomStream rs) {
  const size_t count = v.size();
  const unsigned bits = levelBitsOf(config);
  const size_t normArea = normAreaOf(config, count);
  Bytes out(formulaBytes(config, count), 0);
  std::vector<RefValue> coded(count, RefValue{0, 0});
  const uint32_t s = config.params.levels;
  for (size_t b = 0; b < bucketsOf(config, count); ++b) {
    const size_t start = config.bucket == 0 ? 0 : b * config.bucket;
    const size_t n = config.bucket == 0 ? count : std::min(config.bucket, count - start);
    std::vector<float> a(n);
    for (size_t i = 0; i < n; ++i) a[i] = std::fabs(v[start + i]);
    bool nanBucket = false;
    if (config.params.clip > 0) {
      const float s0 = refSumOfSquares(a);
      if (std::isnan(s0)) {
        nanBucket = true;
      } else {
        const float rms = std::sqrt(s0 / static_cast<float>(n));
        const float c = config.params.clip * rms;
        for (auto& x : a) x = x > c ? c : x;
      }
    }
    float norm = 0;
    if (!nanBucket) {
      if (config.params.norm == NormKind::L2) {
        norm = std::sqrt(refSumOfSquares(a));
      } else {
        uint32_t best = 0;
        for (float x : a) best = std::max(best, bitsOf(x));
        norm = floatOf(best);
      }
    }
    uint32_t stored;  // float32 norm bits
    bool finite = false;
    if (nanBucket || std::isnan(norm)) {
      stored = 0x7fc00000u;
    } else if (std::isinf(norm)) {
      stored = 0x7f800000u;
    } else if (norm < std::ldexp(1.0f, -126)) {
      stored = 0;
    } else {
      stored = bitsOf(norm);
      finite = true;
    }
    if (config.params.natNorm) {
      uint8_t byte = 0;
      if (finite) {
        const uint32_t word = philoxRandomWordForValue(rs.seed, rs.stream ^ kNormStreamBit, firstIndex + start);
        byte = natEncodeExponent(stored, word);
      } else if (stored != 0) {
        byte = 255;
      }
      out[b] = byte;
    } else {
      putLe32(out.data() + 4 * b, stored);
    }
    if (!finite) continue;
    const float inverse = 1.0f / norm;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t r = philoxRandomWordForValue(rs.seed, rs.stream, firstIndex + start + i);
      const float y = std::min(a[i] * inverse, 1.0f);
      uint32_t index = 0;
      if (config.quantizer == Quantizer::DitherNat) {
        const float lowest = std::ldexp(1.0f, 1 - static_cast<int>(s));
        if (y >= lowest) {
          const float lo = floatOf(bitsOf(y) & 0x7f800000u);  // 2^floor(log2 y)
          const float p = (y - lo) / (2.0f * lo - lo);
          const uint32_t t = static_cast<uint32_t>(p * 16777216.0f);
          index = static_cast<uint32_t>(std::ilogb(lo) + static_cast<int>(s)) + ((r >> 8) < t ? 1 : 0);
        } else {
          const float p = y / lowest;
          const uint32_t t = static_cast<uint32_t>(p * 16777216.0f);
          index = (r >> 8) < t ? 1 : 0;
        }
      } else {
        const uint32_t u = s;
        const float z = y * static_cast<float>(u);
        const uint32_t j0 = std::min(static_cast<uint32_t>(std::floor(z)), u - 1);
        const float p = z - static_cast<float>(j0);
        const uint32_t t = static_cast<uint32_t>(p * 16777216.0f);
        index = j0 + ((r >> 8) < t ? 1 : 0);
      }
      coded[start + i] = RefValue{index != 0 && std::signbit(v[start + i]) ? 1u : 0u, index};
    }
  }
  for (size_t g = 0; g < (count + 31) / 32; ++g) {
    uint8_t* group = out.data() + normArea + g * groupBytesOf(config);
    uint32_t sign = 0;
    std::vector<uint32_t> planes(bits, 0);
    for (size_t lane = 0; lane < 32 && 32 * g + lane < count; ++lane) {
      const RefValue value = coded[32 * g + lane];
      sign |= value.sign << lane;
      for (unsigned k = 0; k < bits; ++k) planes[k] |= ((value.index >> k) & 1u) << lane;
    }
    putLe32(group, sign);
    for (unsigned k = 0; k < bits; ++k) putLe32(group + 4 + 4 * k, planes[k]);
  }
  return out;
}

float refLevel(const Config& config, uint32_t index) {
  const uint32_t top = config.params.levels;
  index = std::min(index, top);
  if (config.quantizer == Quantizer::DitherNat) {
    return index == 0 ? 0.0f : std::ldexp(1.0f, static_cast<int>(index) - static_cast<int>(top));
  }
  return static_cast<float>(index) / static_cast<float>(top);
}

std::vector<float> refDecode(const Config& config, const Bytes& packed, size_t count) {
  std::vector<float> out(count);
  const size_t normArea = normAreaOf(config, count);
  const unsigned bits = levelBitsOf(config);
  for (size_t i = 0; i < count; ++i) {
    const size_t b = config.bucket == 0 ? 0 : i / config.bucket;
    const float norm = config.params.natNorm ? floatOf(natDecodeBits(0, packed[b])) : floatOf(le32(&packed[4 * b]));
    if (!std::isfinite(norm)) {
      out[i] = norm;
      continue;
    }
    const uint8_t* group = packed.data() + normArea + (i / 32) * groupBytesOf(config);
    const uint32_t lane = i % 32;
    uint32_t index = 0;
    for (unsigned k = 0; k < bits; ++k) index |= ((le32(group + 4 + 4 * k) >> lane) & 1u) << k;
    const float magnitude = norm * refLevel(config, index);
    out[i] = ((le32(group) >> lane) & 1u) ? -magnitude : magnitude;
  }
  return out;
}

void expectSameBits(const std::vector<float>& actual, const std::vector<float>& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_EQ(bitsOf(actual[i]), bitsOf(expected[i]))
        << what << " at " << i << ": " << actual[i] << " vs " << expected[i];
  }
}

void expectSameBytes(const Bytes& actual, const Bytes& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_EQ(actual[i], expected[i]) << what << " at byte " << i;
  }
}

// Runs `body` with the run-time chosen implementation (the AVX2 clone where
// the CPU has AVX2) and with the baseline clone forced; both must follow the
// document.
template <class Body>
void forEachImplementation(Body&& body) {
  for (bool scalar : {false, true}) {
    SCOPED_TRACE(scalar ? "baseline clone" : natImplementationName());
    forceScalarCodecs(scalar);
    body();
    forceScalarCodecs(false);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// Many configurations for the byte-level tests.
std::vector<Config> byteLevelConfigs() {
  std::vector<Config> configs;
  for (size_t bucket : {size_t{32}, size_t{64}, size_t{512}, size_t{0}}) {
    for (bool natNorm : {false, true}) {
      for (NormKind norm : {NormKind::L2, NormKind::Max}) {
        for (uint32_t s : {1u, 3u, 8u, 126u})
          configs.push_back(makeConfig(Quantizer::DitherNat, s, norm, natNorm, bucket));
        for (uint32_t u : {1u, 4u, 7u, 16u, 65535u}) {
          configs.push_back(makeConfig(Quantizer::DitherStd, u, norm, natNorm, bucket));
        }
      }
      configs.push_back(makeConfig(Quantizer::DitherStd, 1, NormKind::Max, natNorm, bucket, 1.0f));
      configs.push_back(makeConfig(Quantizer::DitherNat, 4, NormKind::L2, natNorm, bucket, 2.5f));
    }
  }
  return configs;
}

// Ordinary values mixed with zeros, tiny, huge and subnormal ones; no Inf/NaN.
std::vector<float> mixedFiniteValues(size_t count, uint64_t seed) {
  std::vector<float> values = drawValues(Distribution::StudentT, count, seed);
  Rng rng{seed};
  for (size_t i = 0; i < count; ++i) {
    const uint64_t pick = rng.next() % 16;
    if (pick == 0) values[i] = 0.0f;
    if (pick == 1) values[i] = -0.0f;
    if (pick == 2) values[i] *= 1e-30f;
    if (pick == 3) values[i] = floatOf(static_cast<uint32_t>(rng.next() & 0x807fffffu));  // subnormal
    if (pick == 4) values[i] *= 1e15f;
  }
  return values;
}

// ---------------------------------------------------------------------------
// Parameters and sizes

TEST(DitherCodec, LevelBits) {
  auto bits = [](Quantizer q, uint32_t levels) {
    DitherParams params;
    params.levels = levels;
    return ditherLevelBits(q, params);
  };
  EXPECT_EQ(bits(Quantizer::DitherNat, 1), 1u);
  EXPECT_EQ(bits(Quantizer::DitherNat, 2), 2u);
  EXPECT_EQ(bits(Quantizer::DitherNat, 3), 2u);
  EXPECT_EQ(bits(Quantizer::DitherNat, 4), 3u);
  EXPECT_EQ(bits(Quantizer::DitherNat, 7), 3u);
  EXPECT_EQ(bits(Quantizer::DitherNat, 8), 4u);
  EXPECT_EQ(bits(Quantizer::DitherNat, 126), 7u);
  EXPECT_EQ(bits(Quantizer::DitherStd, 1), 1u);
  EXPECT_EQ(bits(Quantizer::DitherStd, 4), 3u);
  EXPECT_EQ(bits(Quantizer::DitherStd, 16), 5u);
  EXPECT_EQ(bits(Quantizer::DitherStd, 65535), 16u);
}

TEST(DitherCodec, InvalidParametersGiveNoCodec) {
  DitherParams params;
  params.levels = 0;
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherNat, params, ElementType::F32, 512), nullptr);
  params.levels = 127;
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherNat, params, ElementType::F32, 512), nullptr);
  params.levels = 65536;
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherStd, params, ElementType::F32, 512), nullptr);
  params.levels = 4;
  EXPECT_EQ(makeDitherCodec(Quantizer::Nat, params, ElementType::F32, 512), nullptr);
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherStd, params, ElementType::F64, 512), nullptr);
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherStd, params, ElementType::F32, 100), nullptr);
  params.clip = -1.0f;
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherStd, params, ElementType::F32, 512), nullptr);
  params.clip = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherStd, params, ElementType::F32, 512), nullptr);
  params.clip = 0.0f;
  auto codec = makeDitherCodec(Quantizer::DitherStd, params, ElementType::BF16, 512);
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->id(), CodecId::Dither);
}

TEST(DitherCodec, AlignmentIsTheBucket) {
  DitherParams params;
  for (size_t bucket : {size_t{32}, size_t{512}, size_t{4096}}) {
    EXPECT_EQ(makeDitherCodec(Quantizer::DitherNat, params, ElementType::F32, bucket)->alignmentValues(), bucket);
  }
  EXPECT_EQ(makeDitherCodec(Quantizer::DitherNat, params, ElementType::F32, 0)->alignmentValues(), kBlockValues);
}

TEST(DitherCodec, PackedBytesFollowTheFormulaAndEncodeWritesExactlyThem) {
  const size_t counts[] = {0, 1, 31, 32, 33, 511, 512, 513, 1000};
  for (size_t bucket : {size_t{32}, size_t{512}, size_t{0}}) {
    for (bool natNorm : {false, true}) {
      for (const Config& config : {makeConfig(Quantizer::DitherNat, 8, NormKind::L2, natNorm, bucket),
                                   makeConfig(Quantizer::DitherNat, 3, NormKind::Max, natNorm, bucket),
                                   makeConfig(Quantizer::DitherStd, 1, NormKind::Max, natNorm, bucket),
                                   makeConfig(Quantizer::DitherStd, 65535, NormKind::L2, natNorm, bucket)}) {
        for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
          auto codec = codecFor(config, type);
          for (size_t count : counts) {
            SCOPED_TRACE(config.name() + " count=" + std::to_string(count));
            EXPECT_EQ(codec->packedBytes(count), formulaBytes(config, count));
            const Bytes local = valuesAs(type, drawValues(Distribution::Gaussian, count, count + 1));
            const Bytes packed = encodeWith(*codec, type, local, 0);  // checks the guard bytes
            decodeWith(*codec, type, packed, count);                  // checks the guard bytes
            decodeExact(*codec, packed, count);
          }
        }
      }
    }
  }
  // Worked examples of the document.
  auto nat8 = codecFor(makeConfig(Quantizer::DitherNat, 8, NormKind::L2, false, 512));
  EXPECT_EQ(nat8->packedBytes(512), 324u);
  EXPECT_EQ(nat8->packedBytes(4096), 32u + 2560u);
  auto nat8n = codecFor(makeConfig(Quantizer::DitherNat, 8, NormKind::L2, true, 512));
  EXPECT_EQ(nat8n->packedBytes(512), 324u);
  EXPECT_EQ(nat8n->packedBytes(4096), 8u + 2560u);
}

// ---------------------------------------------------------------------------
// Bytes against the reference encoder

TEST(DitherCodec, EncodeMatchesTheReferenceByteForByte) {
  forEachImplementation([] {
    uint64_t seed = 1;
    for (const Config& config : byteLevelConfigs()) {
      auto codec = codecFor(config);
      for (size_t count : {size_t{1}, size_t{45}, size_t{700}, size_t{1111}}) {
        for (uint64_t firstIndex : {uint64_t{0}, uint64_t{4096} * 3}) {
          SCOPED_TRACE(config.name() + " count=" + std::to_string(count) + " first=" + std::to_string(firstIndex));
          const std::vector<float> values = mixedFiniteValues(count, ++seed);
          const RandomStream rs{seed * 77, seed};
          const Bytes packed = encodeF32(*codec, values, firstIndex, rs);
          expectSameBytes(packed, refEncode(config, values, firstIndex, rs), "encode");
          expectSameBits(decodeF32(*codec, packed, count), refDecode(config, packed, count), "decode");
          expectSameBits(decodeExact(*codec, packed, count), refDecode(config, packed, count), "decodeAccumulate");
        }
      }
    }
  });
}

TEST(DitherCodec, SpecialValuesAndSixteenBitTypesMatchTheReference) {
  // Inf, NaN, huge values (L2 overflow) in some buckets; BF16 and F16 inputs
  // encode as their exact float32 widening does.
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  forEachImplementation([&] {
    uint64_t seed = 500;
    for (const Config& config : byteLevelConfigs()) {
      for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
        SCOPED_TRACE(config.name() + " type=" + std::to_string(static_cast<int>(type)));
        auto codec = codecFor(config, type);
        std::vector<float> values = mixedFiniteValues(700, ++seed);
        Rng rng{seed};
        for (int k = 0; k < 6; ++k) {
          const size_t i = rng.next() % values.size();
          const uint64_t pick = rng.next() % 4;
          values[i] = pick == 0 ? inf : pick == 1 ? -inf : pick == 2 ? nan : 3e19f;
        }
        const Bytes local = valuesAs(type, values);
        const Bytes packed = encodeWith(*codec, type, local, 1024, kStream);
        expectSameBytes(packed, refEncode(config, widen(type, local), 1024, kStream), "encode");
        expectSameBits(decodeExact(*codec, packed, values.size()), refDecode(config, packed, values.size()), "decode");
      }
    }
  });
}

TEST(DitherCodec, UnalignedFirstIndexStillFollowsTheReference) {
  // The library never does this (calls start at multiples of the bucket),
  // but the codec draws per position anyway.
  const Config config = makeConfig(Quantizer::DitherStd, 5, NormKind::L2, true, 64);
  auto codec = codecFor(config);
  const std::vector<float> values = mixedFiniteValues(300, 5);
  forEachImplementation([&] {
    for (uint64_t firstIndex : {uint64_t{1}, uint64_t{6}, uint64_t{33}, uint64_t{36}}) {
      expectSameBytes(encodeF32(*codec, values, firstIndex), refEncode(config, values, firstIndex, kStream), "encode");
    }
  });
}

TEST(DitherCodec, BaselineAndAvx2ClonesGiveTheSameBytes) {
  if (!useAvx2Codecs()) GTEST_SKIP() << "no AVX2 on this CPU";
  uint64_t seed = 100;
  for (const Config& config : byteLevelConfigs()) {
    for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
      auto codec = codecFor(config, type);
      const size_t count = 777;
      const Bytes local = valuesAs(type, mixedFiniteValues(count, ++seed));
      const Bytes other = valuesAs(type, mixedFiniteValues(count, ++seed));
      const Bytes fast = encodeWith(*codec, type, local, 64);
      Bytes fastHop(codec->packedBytes(count)), fastDecoded(local.size());
      codec->decodeAddEncode(fast.data(), other.data(), count, 64, kStream, 3, fastHop.data(), fastDecoded.data());
      forceScalarCodecs(true);
      const Bytes slow = encodeWith(*codec, type, local, 64);
      Bytes slowHop(codec->packedBytes(count)), slowDecoded(local.size());
      codec->decodeAddEncode(slow.data(), other.data(), count, 64, kStream, 3, slowHop.data(), slowDecoded.data());
      const Bytes slowDecode = decodeWith(*codec, type, fastHop, count);
      forceScalarCodecs(false);
      SCOPED_TRACE(config.name());
      expectSameBytes(fast, slow, "encode");
      expectSameBytes(fastHop, slowHop, "hop");
      expectSameBytes(fastDecoded, slowDecoded, "hop decoded");
      expectSameBytes(decodeWith(*codec, type, fastHop, count), slowDecode, "decode");
    }
  }
}

// ---------------------------------------------------------------------------
// REFERENCE.md test vectors

// Frequencies of each decoded value of x over `trials` independent draws
// (one bucket of x per draw, each at its own position, so the Philox words
// differ), plus the mean of ||C(x)||^2.
struct Frequencies {
  std::vector<std::vector<std::pair<float, size_t>>> counts;  // per coordinate: (value, count)
  double meanSquaredNorm = 0;
};

Frequencies sample(const Config& config, const std::vector<float>& x, size_t trials) {
  auto codec = codecFor(config);
  std::vector<float> tiled;
  for (size_t t = 0; t < trials; ++t) {
    tiled.insert(tiled.end(), x.begin(), x.end());
    tiled.resize((t + 1) * config.bucket, 0.0f);  // one bucket per trial
  }
  Frequencies result;
  result.counts.resize(x.size());
  double total = 0;
  // Several streams and seeds, so the draws do not all come from one key.
  const size_t calls = 4;
  for (size_t call = 0; call < calls; ++call) {
    const RandomStream rs{0x1234 + call * 0x9E3779B97F4A7C15ull, makeStreamId(call, 1, 2)};
    const std::vector<float> decoded = decodeExact(*codec, encodeF32(*codec, tiled, 0, rs), tiled.size());
    for (size_t t = 0; t < trials; ++t) {
      for (size_t i = 0; i < x.size(); ++i) {
        const float value = decoded[t * config.bucket + i];
        total += static_cast<double>(value) * value;
        auto& list = result.counts[i];
        auto it = std::find_if(list.begin(), list.end(), [&](const auto& entry) { return entry.first == value; });
        if (it == list.end()) {
          list.emplace_back(value, 1);
        } else {
          ++it->second;
        }
      }
    }
  }
  for (auto& list : result.counts) std::sort(list.begin(), list.end());
  result.meanSquaredNorm = total / static_cast<double>(trials * calls);
  return result;
}

// Checks that coordinate i takes exactly the given values with the given
// probabilities, within 6 standard deviations.
void expectOutcomes(const Frequencies& f, size_t i, const std::vector<std::pair<float, double>>& expected,
                    size_t draws) {
  size_t seen = 0;
  for (const auto& entry : f.counts[i]) {
    auto it = std::find_if(expected.begin(), expected.end(), [&](const auto& e) { return e.first == entry.first; });
    ASSERT_NE(it, expected.end()) << "coordinate " << i << " took the unexpected value " << entry.first;
    const double p = it->second;
    const double frequency = static_cast<double>(entry.second) / static_cast<double>(draws);
    const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(draws));
    EXPECT_NEAR(frequency, p, 6 * sigma + 1e-12) << "coordinate " << i << " value " << entry.first;
    seen += entry.second;
  }
  EXPECT_EQ(seen, draws);
  for (const auto& e : expected) {
    if (e.second == 0) continue;
    const bool present =
        std::any_of(f.counts[i].begin(), f.counts[i].end(), [&](const auto& entry) { return entry.first == e.first; });
    EXPECT_TRUE(present) << "coordinate " << i << " never took " << e.first;
  }
}

TEST(DitherCodec, ReferenceVectorNaturalDithering) {
  // x = (3, 4), p = 2, s = 3: levels 0, 1/4, 1/2, 1 of ||x|| = 5.
  const Config config = makeConfig(Quantizer::DitherNat, 3, NormKind::L2, false, 32);
  const size_t trials = 5000;
  const Frequencies f = sample(config, {3.0f, 4.0f}, trials);
  expectOutcomes(f, 0, {{5.0f, 0.2}, {2.5f, 0.8}}, 4 * trials);
  expectOutcomes(f, 1, {{5.0f, 0.6}, {2.5f, 0.4}}, 4 * trials);
}

TEST(DitherCodec, ReferenceVectorQsgd) {
  // One level, p = 2: 5 w.p. 0.6 and 0.8, else 0; omega = 35/25 - 1 = 0.4.
  const Config config = makeConfig(Quantizer::DitherStd, 1, NormKind::L2, false, 32);
  const size_t trials = 5000;
  const Frequencies f = sample(config, {3.0f, 4.0f}, trials);
  expectOutcomes(f, 0, {{5.0f, 0.6}, {0.0f, 0.4}}, 4 * trials);
  expectOutcomes(f, 1, {{5.0f, 0.8}, {0.0f, 0.2}}, 4 * trials);
  // ||C||^2 = 25 (B1 + B2), B_i independent Bernoulli(0.6), (0.8): variance 625 (0.24 + 0.16).
  const double omega = f.meanSquaredNorm / 25.0 - 1.0;
  const double sigma = std::sqrt(625.0 * 0.4 / (4.0 * trials)) / 25.0;
  EXPECT_NEAR(omega, 0.4, 6 * sigma);
}

TEST(DitherCodec, ReferenceVectorTernGrad) {
  // p = inf, one level, x = (3, -4): first 4 w.p. 3/4 else 0, second -4 always.
  const Config config = makeConfig(Quantizer::DitherStd, 1, NormKind::Max, false, 32);
  const size_t trials = 5000;
  const Frequencies f = sample(config, {3.0f, -4.0f}, trials);
  expectOutcomes(f, 0, {{4.0f, 0.75}, {0.0f, 0.25}}, 4 * trials);
  expectOutcomes(f, 1, {{-4.0f, 1.0}}, 4 * trials);
}

TEST(DitherCodec, TernGradClipping) {
  // clip = 4 on a bucket of 32 values, x = (3, -4, 0, ...): rms = sqrt(25 / 32),
  // c = 4 rms = 3.54, so x is clipped to (3, -c), N = c, and the first value
  // is c w.p. 3/c, the second -c always.
  const Config config = makeConfig(Quantizer::DitherStd, 1, NormKind::Max, false, 32, 4.0f);
  const size_t trials = 5000;
  const float c = 4.0f * std::sqrt(25.0f / 32.0f);
  const Frequencies f = sample(config, {3.0f, -4.0f}, trials);
  const double p = 3.0 / static_cast<double>(c);
  expectOutcomes(f, 0, {{c, p}, {0.0f, 1 - p}}, 4 * trials);
  expectOutcomes(f, 1, {{-c, 1.0}}, 4 * trials);
}

// ---------------------------------------------------------------------------
// Unbiasedness and the variance bound

// REFERENCE.md's omega for d values (r = min(p, 2) = 2 for both norms).
double omegaBound(const Config& config, size_t d) {
  const double root = std::sqrt(static_cast<double>(d));
  double omega;
  if (config.quantizer == Quantizer::DitherNat) {
    const double step = std::ldexp(1.0, 1 - static_cast<int>(config.params.levels));  // 2^(1-s)
    omega = 1.0 / 8.0 + root * step * std::min(1.0, root * step);
  } else {
    // u levels: 2^(1-s) = 1/u.
    const double u = config.params.levels;
    omega = std::min(1.0, root / u) * root / u;
  }
  if (config.params.natNorm) omega = (omega + 1.0) * 9.0 / 8.0 - 1.0;
  return omega;
}

// The variance and the range of C(x)_i, from the levels around |x_i| / N
// (and nat's rounding of N with natNorm), in double precision.
struct Moments {
  double variance;
  double range;
};

Moments expectedMoments(const Config& config, const std::vector<float>& x, size_t i) {
  double norm = 0;
  for (float value : x) {
    if (config.params.norm == NormKind::L2) {
      norm += static_cast<double>(value) * value;
    } else {
      norm = std::max(norm, std::fabs(static_cast<double>(value)));
    }
  }
  if (config.params.norm == NormKind::L2) norm = std::sqrt(norm);
  const double y = std::min(1.0, std::fabs(static_cast<double>(x[i])) / norm);
  double lo, hi;
  if (config.quantizer == Quantizer::DitherNat) {
    const double lowest = std::ldexp(1.0, 1 - static_cast<int>(config.params.levels));
    if (y < lowest) {
      lo = 0;
      hi = lowest;
    } else {
      lo = std::ldexp(1.0, std::ilogb(y));
      hi = std::min(1.0, 2 * lo);
    }
  } else {
    const double u = config.params.levels;
    lo = std::min(std::floor(y * u), u - 1) / u;
    hi = lo + 1 / u;
  }
  const double levelVariance = std::max(0.0, (hi - y) * (y - lo));
  if (!config.params.natNorm) return {norm * norm * levelVariance, norm * (hi - lo)};
  const double normLo = std::ldexp(1.0, std::ilogb(norm));
  const double up = norm / normLo - 1;
  const double normSquared = normLo * normLo * (1 + 3 * up);  // E[Nt^2]
  return {normSquared * (y * y + levelVariance) - norm * norm * y * y, 2 * normLo * hi};
}

TEST(DitherCodec, UnbiasedWithinTheVarianceBound) {
  const size_t d = 128;
  const size_t trials = 1500;
  uint64_t seed = 7;
  for (Distribution dist :
       {Distribution::Gaussian, Distribution::Uniform, Distribution::StudentT, Distribution::Cauchy}) {
    for (NormKind norm : {NormKind::L2, NormKind::Max}) {
      for (bool natNorm : {false, true}) {
        std::vector<Config> configs;
        for (uint32_t s : {2u, 4u, 8u}) configs.push_back(makeConfig(Quantizer::DitherNat, s, norm, natNorm, d));
        for (uint32_t u : {1u, 4u, 16u}) configs.push_back(makeConfig(Quantizer::DitherStd, u, norm, natNorm, d));
        for (const Config& config : configs) {
          SCOPED_TRACE(config.name() + " " + distributionName(dist));
          auto codec = codecFor(config);
          const std::vector<float> x = drawValues(dist, d, ++seed);
          std::vector<float> tiled;
          for (size_t t = 0; t < trials; ++t) tiled.insert(tiled.end(), x.begin(), x.end());
          const RandomStream rs{seed, makeStreamId(seed, 3, 1)};
          const std::vector<float> decoded = decodeExact(*codec, encodeF32(*codec, tiled, 0, rs), tiled.size());
          double normX = 0;
          for (float value : x) normX += static_cast<double>(value) * value;
          std::vector<double> sum(d, 0.0), sumSquares(d, 0.0);
          std::vector<double> ratio(trials, 0.0);
          for (size_t t = 0; t < trials; ++t) {
            double squared = 0;
            for (size_t i = 0; i < d; ++i) {
              const double value = decoded[t * d + i];
              sum[i] += value;
              sumSquares[i] += value * value;
              squared += value * value;
            }
            ratio[t] = squared / normX;
          }
          // Per coordinate: Bernstein's inequality with the exact variance and
          // range of C(x)_i, at a failure probability of about e^-28 (rare
          // round-ups make a Gaussian bound unsafe), plus float rounding.
          double biasSquared = 0;
          for (size_t i = 0; i < d; ++i) {
            const double mean = sum[i] / trials;
            const Moments moments = expectedMoments(config, x, i);
            const double t = 28.0;
            const double slack = std::sqrt(2.0 * moments.variance * t / trials) +
                                 2.0 / 3.0 * moments.range * t / trials + 1e-5 * std::sqrt(normX);
            EXPECT_NEAR(mean, x[i], slack) << "coordinate " << i << " variance " << moments.variance;
            biasSquared += (mean - x[i]) * (mean - x[i]);
          }
          // The whole vector: E||mean - x||^2 = omega ||x||^2 / trials.
          const double bound = omegaBound(config, d);
          EXPECT_LE(biasSquared, 25.0 * bound * normX / trials + 1e-9 * normX);
          // omega: the mean of ||C(x)||^2 / ||x||^2 - 1 within the bound plus 6 standard errors.
          double meanRatio = 0;
          for (double r : ratio) meanRatio += r;
          meanRatio /= trials;
          double varianceRatio = 0;
          for (double r : ratio) varianceRatio += (r - meanRatio) * (r - meanRatio);
          varianceRatio /= trials - 1;
          const double omega = meanRatio - 1.0;
          EXPECT_LE(omega, bound + 6.0 * std::sqrt(varianceRatio / trials)) << "bound " << bound;
          EXPECT_GT(omega, -6.0 * std::sqrt(varianceRatio / trials) - 1e-6);
        }
      }
    }
  }
}

TEST(DitherCodec, NatNormIsUnbiasedAndCostsAtMostNineEighths) {
  // Every value at a level (x = N * levels) quantises deterministically, so the
  // only randomness is the norm's: E[Nt] = N and E[Nt^2] <= 9/8 N^2, the worst
  // case being N = 4/3 * 2^k.
  const Config config = makeConfig(Quantizer::DitherNat, 4, NormKind::Max, true, 32);
  auto codec = codecFor(config);
  const float n = 4.0f / 3.0f;
  const std::vector<float> x = {n, -n / 2, n / 4, n / 8, 0.0f};
  const size_t trials = 20000;
  std::vector<float> tiled;
  for (size_t t = 0; t < trials; ++t) {
    tiled.insert(tiled.end(), x.begin(), x.end());
    tiled.resize((t + 1) * 32, 0.0f);
  }
  const std::vector<float> decoded = decodeExact(*codec, encodeF32(*codec, tiled), tiled.size());
  double sum = 0, sumSquares = 0;
  for (size_t t = 0; t < trials; ++t) {
    const float nt = decoded[t * 32];
    EXPECT_TRUE(nt == 1.0f || nt == 2.0f) << nt;
    EXPECT_EQ(decoded[t * 32 + 1], -nt / 2);
    EXPECT_EQ(decoded[t * 32 + 2], nt / 4);
    EXPECT_EQ(decoded[t * 32 + 3], nt / 8);
    EXPECT_EQ(bitsOf(decoded[t * 32 + 4]), 0u);
    sum += nt;
    sumSquares += static_cast<double>(nt) * nt;
  }
  const double mean = sum / trials;
  // Nt is 1 w.p. 2/3 and 2 w.p. 1/3: variance 2/9.
  EXPECT_NEAR(mean, n, 6 * std::sqrt(2.0 / 9.0 / trials));
  EXPECT_NEAR(sumSquares / trials / (n * n), 9.0 / 8.0, 6 * std::sqrt(4.0 * 2.0 / 9.0 / trials) / (n * n) * 2);
}

// ---------------------------------------------------------------------------
// Positions, not chunking

TEST(DitherCodec, ChunkingDoesNotChangeTheBits) {
  const size_t count = 1000;
  for (size_t bucket : {size_t{64}, size_t{512}}) {
    for (bool natNorm : {false, true}) {
      const Config config = makeConfig(Quantizer::DitherNat, 5, NormKind::L2, natNorm, bucket);
      auto codec = codecFor(config);
      const std::vector<float> values = drawValues(Distribution::Gaussian, count, bucket + natNorm);
      const Bytes whole = encodeF32(*codec, values, 0);
      const size_t wholeNorms = normAreaOf(config, count);
      const size_t normSize = normSizeOf(config);
      for (size_t split = bucket; split < count; split += bucket) {
        SCOPED_TRACE(config.name() + " split=" + std::to_string(split));
        const std::vector<float> head(values.begin(), values.begin() + split);
        const std::vector<float> tail(values.begin() + split, values.end());
        const Bytes first = encodeF32(*codec, head, 0);
        const Bytes second = encodeF32(*codec, tail, split);
        const size_t firstNorms = normAreaOf(config, head.size());
        const size_t secondNorms = normAreaOf(config, tail.size());
        const size_t headBuckets = bucketsOf(config, head.size());
        // Norms: the head's buckets, then the tail's.
        for (size_t b = 0; b < bucketsOf(config, count); ++b) {
          const uint8_t* expected = whole.data() + b * normSize;
          const uint8_t* actual =
              b < headBuckets ? first.data() + b * normSize : second.data() + (b - headBuckets) * normSize;
          ASSERT_EQ(std::memcmp(expected, actual, normSize), 0) << "norm of bucket " << b;
        }
        // Groups: the same bytes in the same order.
        Bytes groups(first.begin() + firstNorms, first.end());
        groups.insert(groups.end(), second.begin() + secondNorms, second.end());
        expectSameBytes(groups, Bytes(whole.begin() + wholeNorms, whole.end()), "groups");
      }
    }
  }
}

TEST(DitherCodec, TensorScopeIsOneBucketPerCall) {
  // B = 0: the norm covers the call; a call of <= B values equals bucket B.
  const std::vector<float> values = drawValues(Distribution::Uniform, 300, 3);
  auto whole = codecFor(makeConfig(Quantizer::DitherStd, 4, NormKind::L2, false, 0));
  auto bucketed = codecFor(makeConfig(Quantizer::DitherStd, 4, NormKind::L2, false, 512));
  expectSameBytes(encodeF32(*whole, values, 1024), encodeF32(*bucketed, values, 1024), "B=0 vs B=512");
}

// ---------------------------------------------------------------------------
// The fused hop

struct HopOutput {
  Bytes packed;
  Bytes decoded;
};

HopOutput hop(const Codec& codec, ElementType type, const Bytes& packedIn, const Bytes& local, uint64_t firstIndex,
              RandomStream rs, uint32_t divisor, bool inPlace) {
  const size_t count = local.size() / elementBytes(type);
  const size_t bytes = codec.packedBytes(count);
  HopOutput out;
  if (inPlace) {
    out.packed = packedIn;
    out.packed.resize(bytes + kGuardBytes, kGuard);
    out.decoded = local;
    out.decoded.resize(local.size() + kGuardBytes, kGuard);
    codec.decodeAddEncode(out.packed.data(), out.decoded.data(), count, firstIndex, rs, divisor, out.packed.data(),
                          out.decoded.data());
  } else {
    out.packed.assign(bytes + kGuardBytes, 0xCD);
    std::fill(out.packed.begin() + bytes, out.packed.end(), kGuard);
    out.decoded.assign(local.size() + kGuardBytes, 0xCD);
    std::fill(out.decoded.begin() + local.size(), out.decoded.end(), kGuard);
    codec.decodeAddEncode(packedIn.data(), local.data(), count, firstIndex, rs, divisor, out.packed.data(),
                          out.decoded.data());
  }
  for (size_t i = bytes; i < out.packed.size(); ++i) EXPECT_EQ(out.packed[i], kGuard) << "hop overran packedOut";
  for (size_t i = local.size(); i < out.decoded.size(); ++i) EXPECT_EQ(out.decoded[i], kGuard) << "hop overran decoded";
  out.packed.resize(bytes);
  out.decoded.resize(local.size());
  return out;
}

// decode + add (+ divide) + encode, done separately: the sum is computed in
// float32 and encoded by an F32 codec of the same parameters (the bytes
// depend only on the float32 values).
HopOutput separateHop(const Config& config, ElementType type, const Bytes& packedIn, const Bytes& local,
                      uint64_t firstIndex, RandomStream rs, uint32_t divisor) {
  auto codec = codecFor(config, type);
  auto f32 = codecFor(config, ElementType::F32);
  const std::vector<float> localValues = widen(type, local);
  const size_t count = localValues.size();
  std::vector<float> sum = decodeExact(*codec, packedIn, count);
  for (size_t i = 0; i < count; ++i) {
    sum[i] = sum[i] + localValues[i];
    if (divisor > 1) sum[i] = sum[i] / static_cast<float>(divisor);
  }
  HopOutput out;
  out.packed = encodeF32(*f32, sum, firstIndex, rs);
  out.decoded = decodeWith(*codec, type, out.packed, count);
  return out;
}

TEST(DitherCodec, FusedHopEqualsDecodeAddEncodeBitForBit) {
  forEachImplementation([] {
    std::vector<Config> configs = {
        makeConfig(Quantizer::DitherNat, 8, NormKind::L2, false, 512),
        makeConfig(Quantizer::DitherNat, 3, NormKind::Max, true, 64),
        makeConfig(Quantizer::DitherStd, 16, NormKind::L2, true, 512),
        makeConfig(Quantizer::DitherStd, 1, NormKind::Max, false, 32, 1.5f),
        makeConfig(Quantizer::DitherNat, 5, NormKind::L2, false, 0),
        makeConfig(Quantizer::DitherStd, 7, NormKind::L2, false, 8192),        // unbuffered passes
        makeConfig(Quantizer::DitherNat, 6, NormKind::Max, true, 8192, 2.0f),  // three passes
    };
    uint64_t seed = 40;
    for (const Config& config : configs) {
      for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
        auto codec = codecFor(config, type);
        for (size_t count : {size_t{1}, size_t{500}, size_t{1000}, size_t{10000}}) {
          for (uint32_t divisor : {1u, 3u}) {
            SCOPED_TRACE(config.name() + " count=" + std::to_string(count) + " divisor=" + std::to_string(divisor) +
                         " type=" + std::to_string(static_cast<int>(type)));
            const uint64_t firstIndex = config.bucket == 0 ? 96 : config.bucket * 2;
            const Bytes first = valuesAs(type, drawValues(Distribution::Gaussian, count, ++seed));
            const Bytes local = valuesAs(type, drawValues(Distribution::StudentT, count, ++seed));
            const RandomStream inStream{seed, makeStreamId(seed, 0, 0)};
            const RandomStream outStream{seed, makeStreamId(seed, 1, 1)};
            const Bytes packedIn = encodeWith(*codec, type, first, firstIndex, inStream);
            const HopOutput expected = separateHop(config, type, packedIn, local, firstIndex, outStream, divisor);
            for (bool inPlace : {false, true}) {
              const HopOutput actual = hop(*codec, type, packedIn, local, firstIndex, outStream, divisor, inPlace);
              expectSameBytes(actual.packed, expected.packed, inPlace ? "in place packed" : "packed");
              expectSameBytes(actual.decoded, expected.decoded, inPlace ? "in place decoded" : "decoded");
            }
            // Without decodedOut.
            Bytes packedOut(codec->packedBytes(count));
            codec->decodeAddEncode(packedIn.data(), local.data(), count, firstIndex, outStream, divisor,
                                   packedOut.data(), nullptr);
            expectSameBytes(packedOut, expected.packed, "no decodedOut");
          }
        }
      }
    }
  });
}

// Error feedback encodes a dithering message whole: its norms lead the
// message, so tiles encoded one after the other would not be one message
// (and, with one-byte norms, would run past packedBytes).
TEST(DitherCodec, ErrorFeedbackEncodesOneWholeMessage) {
  const std::vector<Config> configs = {
      makeConfig(Quantizer::DitherNat, 8, NormKind::L2, false, 512),
      makeConfig(Quantizer::DitherStd, 4, NormKind::Max, true, 96),
      makeConfig(Quantizer::DitherNat, 5, NormKind::L2, false, 0),
  };
  uint64_t seed = 900;
  for (const Config& config : configs) {
    SCOPED_TRACE(config.name());
    auto codec = codecFor(config, ElementType::F32);
    const size_t count = 16512;  // several of residual.cc's 4096-value tiles
    const uint64_t firstIndex = config.bucket == 0 ? 64 : config.bucket * 3;
    const std::vector<float> local = drawValues(Distribution::Gaussian, count, ++seed);
    const RandomStream stream{seed, makeStreamId(seed, 2, 3)};
    const size_t guard = 64;
    std::vector<unsigned char> withResidual(codec->packedBytes(count) + guard, 0xab);
    std::vector<float> residual(count, 0.0f);
    encodeWithResidual(ResidualCodecs{codec.get(), codec.get(), ElementType::F32}, local.data(), residual.data(), count,
                       firstIndex, stream, withResidual.data());
    std::vector<unsigned char> plain(codec->packedBytes(count));
    codec->encode(local.data(), count, firstIndex, stream, plain.data());
    // A zero residual adds nothing: the bytes are those of a plain encode.
    EXPECT_EQ(0, std::memcmp(withResidual.data(), plain.data(), plain.size()));
    for (size_t i = plain.size(); i < withResidual.size(); ++i) {
      ASSERT_EQ(withResidual[i], 0xab) << "byte " << i - plain.size() << " past packedBytes was written";
    }
  }
}

TEST(DitherCodec, HopReadsPadLanesAsZero) {
  const Config config = makeConfig(Quantizer::DitherNat, 4, NormKind::L2, false, 64);
  auto codec = codecFor(config);
  const size_t count = 45;
  const Bytes local = valuesAs(ElementType::F32, drawValues(Distribution::Gaussian, count, 1));
  Bytes packedIn = encodeF32(*codec, drawValues(Distribution::Gaussian, count, 2));
  const HopOutput clean = hop(*codec, ElementType::F32, packedIn, local, 0, kStream, 1, false);
  // Garbage in the pad lanes of the incoming tail group (lanes 13..31).
  const size_t group = normAreaOf(config, count) + groupBytesOf(config);
  for (size_t word = 0; word < 1 + levelBitsOf(config); ++word) {
    putLe32(&packedIn[group + 4 * word], le32(&packedIn[group + 4 * word]) | 0xffffe000u);
  }
  const HopOutput dirty = hop(*codec, ElementType::F32, packedIn, local, 0, kStream, 1, false);
  expectSameBytes(dirty.packed, clean.packed, "packed");
  expectSameBytes(dirty.decoded, clean.decoded, "decoded");
}

// ---------------------------------------------------------------------------
// decodeAccumulate, zeros, special values

TEST(DitherCodec, DecodeAccumulateAddsExactlyTheDecodedValues) {
  for (const Config& config : {makeConfig(Quantizer::DitherNat, 8, NormKind::L2, true, 512),
                               makeConfig(Quantizer::DitherStd, 3, NormKind::Max, false, 32)}) {
    auto codec = codecFor(config);
    const size_t count = 1500;
    const Bytes packed = encodeF32(*codec, drawValues(Distribution::Cauchy, count, 9));
    const std::vector<float> decoded = decodeF32(*codec, packed, count);
    std::vector<float> acc = drawValues(Distribution::Gaussian, count, 10);
    std::vector<float> expected(count);
    for (size_t i = 0; i < count; ++i) expected[i] = acc[i] + decoded[i];
    codec->decodeAccumulate(packed.data(), count, acc.data());
    expectSameBits(acc, expected, config.name());
  }
}

TEST(DitherCodec, ZerosAndZeroBuckets) {
  const Config config = makeConfig(Quantizer::DitherNat, 8, NormKind::L2, false, 32);
  auto codec = codecFor(config);
  // Bucket 0 all zeros (with -0), bucket 1 ordinary, bucket 2 zeros except a
  // -0 and subnormal squares that round to 0, bucket 3 ordinary with -0 values.
  std::vector<float> values(128, 0.0f);
  for (size_t i = 0; i < 32; i += 2) values[i] = -0.0f;
  for (size_t i = 32; i < 64; ++i) values[i] = static_cast<float>(i) - 40.0f;
  values[70] = -0.0f;
  values[71] = 1e-40f;   // subnormal: its square rounds to 0
  values[72] = -2e-23f;  // square 4e-46 rounds to 0 as well
  for (size_t i = 96; i < 128; ++i) values[i] = (i % 3 == 0) ? -0.0f : 1.0f;
  const Bytes packed = encodeF32(*codec, values);
  EXPECT_EQ(le32(&packed[0]), 0u);
  EXPECT_EQ(le32(&packed[8]), 0u);
  for (size_t g : {size_t{0}, size_t{2}}) {
    for (size_t byte = 0; byte < groupBytesOf(config); ++byte) {
      EXPECT_EQ(packed[normAreaOf(config, 128) + g * groupBytesOf(config) + byte], 0) << "group " << g;
    }
  }
  const std::vector<float> decoded = decodeF32(*codec, packed, 128);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(bitsOf(decoded[i]), 0u) << i;
  for (size_t i = 64; i < 96; ++i) EXPECT_EQ(bitsOf(decoded[i]), 0u) << i;
  // -0 never travels with a sign bit.
  const uint32_t sign3 = le32(&packed[normAreaOf(config, 128) + 3 * groupBytesOf(config)]);
  EXPECT_EQ(sign3, 0u);
  for (size_t i = 96; i < 128; ++i) {
    if (i % 3 == 0) {
      EXPECT_EQ(bitsOf(decoded[i]), 0u) << i;
    }
  }
  // p = inf: a bucket of float32 subnormals has N < 2^-126 and is a zero bucket.
  auto maxCodec = codecFor(makeConfig(Quantizer::DitherNat, 8, NormKind::Max, true, 32));
  std::vector<float> tiny(32, 0.0f);
  tiny[3] = 1e-39f;
  tiny[4] = -5e-40f;
  const Bytes tinyPacked = encodeF32(*maxCodec, tiny);
  EXPECT_EQ(tinyPacked[0], 0);
  for (float value : decodeF32(*maxCodec, tinyPacked, 32)) EXPECT_EQ(bitsOf(value), 0u);
}

TEST(DitherCodec, NonFiniteBucketsDecodeNonFinite) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (NormKind norm : {NormKind::L2, NormKind::Max}) {
    for (bool natNorm : {false, true}) {
      for (float clip : {0.0f, 1.0f}) {
        const Config config = makeConfig(Quantizer::DitherStd, 4, norm, natNorm, 32, clip);
        SCOPED_TRACE(config.name());
        for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
          auto codec = codecFor(config, type);
          // Buckets: 0 has -Inf, 1 ordinary, 2 has NaN (and an Inf), 3 has
          // -NaN, 4 (short) has +Inf.
          std::vector<float> values = drawValues(Distribution::Gaussian, 140, 4);
          values[5] = -inf;
          values[70] = nan;
          values[71] = inf;
          values[100] = -nan;
          values[139] = inf;
          const Bytes local = valuesAs(type, values);
          const Bytes packed = encodeWith(*codec, type, local, 0);
          const uint32_t storedInf = natNorm ? 255u : 0x7f800000u;
          const uint32_t storedNan = natNorm ? 255u : 0x7fc00000u;
          auto stored = [&](size_t b) { return natNorm ? uint32_t{packed[b]} : le32(&packed[4 * b]); };
          EXPECT_EQ(stored(0), storedInf);
          EXPECT_EQ(stored(2), storedNan);
          EXPECT_EQ(stored(3), storedNan);
          EXPECT_EQ(stored(4), storedInf);
          const std::vector<float> decoded = decodeExact(*codec, packed, 140);
          const std::vector<float> inType = widen(type, decodeWith(*codec, type, packed, 140));
          for (size_t i = 0; i < 140; ++i) {
            const size_t b = i / 32;
            if (b == 1) {
              EXPECT_TRUE(std::isfinite(decoded[i])) << i;
            } else if (b == 0 || b == 4 || natNorm) {
              EXPECT_EQ(bitsOf(decoded[i]), 0x7f800000u) << i;
              EXPECT_EQ(bitsOf(inType[i]), 0x7f800000u) << i;
            } else {
              EXPECT_EQ(bitsOf(decoded[i]), 0x7fc00000u) << i;
              EXPECT_TRUE(std::isnan(inType[i])) << i;
            }
          }
        }
      }
    }
  }
}

TEST(DitherCodec, SumOfSquaresOverflowIsNonFinite) {
  // p = 2: squares of 1e20 overflow float32, so the bucket is an Inf bucket;
  // p = inf has no sum and keeps a finite norm.
  std::vector<float> values(64, 1.0f);
  values[3] = 1e20f;
  auto l2 = codecFor(makeConfig(Quantizer::DitherNat, 4, NormKind::L2, false, 32));
  const Bytes packed = encodeF32(*l2, values);
  EXPECT_EQ(le32(&packed[0]), 0x7f800000u);
  EXPECT_EQ(le32(&packed[4]), bitsOf(std::sqrt(32.0f)));
  auto max = codecFor(makeConfig(Quantizer::DitherNat, 4, NormKind::Max, false, 32));
  EXPECT_EQ(le32(&encodeF32(*max, values)[0]), bitsOf(1e20f));
}

TEST(DitherCodec, HopWithNonFiniteSums) {
  // Inf + (-Inf) = NaN in the hop: the bucket becomes a NaN bucket.
  const Config config = makeConfig(Quantizer::DitherNat, 4, NormKind::L2, false, 32);
  auto codec = codecFor(config);
  std::vector<float> first = drawValues(Distribution::Gaussian, 64, 1);
  std::vector<float> second = drawValues(Distribution::Gaussian, 64, 2);
  first[3] = std::numeric_limits<float>::infinity();
  second[3] = -std::numeric_limits<float>::infinity();
  const Bytes packedIn = encodeF32(*codec, first);
  const HopOutput out =
      hop(*codec, ElementType::F32, packedIn, valuesAs(ElementType::F32, second), 0, kStream, 2, false);
  EXPECT_EQ(le32(&out.packed[0]), 0x7fc00000u);
  EXPECT_TRUE(std::isfinite(floatOf(le32(&out.packed[4]))));
  const std::vector<float> decoded = widen(ElementType::F32, out.decoded);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(bitsOf(decoded[i]), 0x7fc00000u) << i;
}

TEST(DitherCodec, CorruptedLevelIndexDecodesAsTheTopLevel) {
  // s = 4: 5 levels in 3 bits, indices 5..7 are invalid; u = 5: 6..7.
  forEachImplementation([] {
    for (const Config& config : {makeConfig(Quantizer::DitherNat, 4, NormKind::Max, false, 32),
                                 makeConfig(Quantizer::DitherStd, 5, NormKind::Max, false, 32)}) {
      auto codec = codecFor(config);
      Bytes packed(codec->packedBytes(32), 0);
      putLe32(&packed[0], bitsOf(3.0f));
      // Lane i gets index i % 8, lanes 16.. are negative.
      putLe32(&packed[4], 0xffff0000u);
      for (unsigned k = 0; k < 3; ++k) {
        uint32_t plane = 0;
        for (uint32_t lane = 0; lane < 32; ++lane) plane |= (((lane % 8) >> k) & 1u) << lane;
        putLe32(&packed[8 + 4 * k], plane);
      }
      const std::vector<float> decoded = decodeF32(*codec, packed, 32);
      for (uint32_t lane = 0; lane < 32; ++lane) {
        const float magnitude = 3.0f * refLevel(config, lane % 8);
        EXPECT_EQ(bitsOf(decoded[lane]), bitsOf(lane >= 16 ? -magnitude : magnitude)) << config.name() << " " << lane;
        if (lane % 8 > config.params.levels) {
          EXPECT_EQ(std::fabs(decoded[lane]), 3.0f);
        }
      }
    }
  });
}

TEST(DitherCodec, LevelValuesRoundTripExactlyInEveryType) {
  // p = inf and values at levels of the max: the quantisation is deterministic
  // and the decoded values are the inputs, in every element type.
  for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
    auto nat = codecFor(makeConfig(Quantizer::DitherNat, 8, NormKind::Max, false, 32), type);
    const std::vector<float> natValues = {8.0f, -4.0f, 2.0f, 1.0f, -0.5f, 0.25f, 0.125f, 0.0625f, 0.0f, -8.0f};
    const Bytes natLocal = valuesAs(type, natValues);
    expectSameBytes(decodeWith(*nat, type, encodeWith(*nat, type, natLocal, 0), natValues.size()), natLocal,
                    "nat levels");
    auto uniform = codecFor(makeConfig(Quantizer::DitherStd, 4, NormKind::Max, false, 32), type);
    const std::vector<float> stdValues = {-6.0f, 4.5f, 3.0f, -1.5f, 0.0f, 6.0f};
    const Bytes stdLocal = valuesAs(type, stdValues);
    expectSameBytes(decodeWith(*uniform, type, encodeWith(*uniform, type, stdLocal, 0), stdValues.size()), stdLocal,
                    "std levels");
  }
}

TEST(DitherCodec, SixteenBitDecodesRoundTheFloat32Values) {
  for (ElementType type : {ElementType::BF16, ElementType::F16}) {
    const Config config = makeConfig(Quantizer::DitherStd, 7, NormKind::L2, true, 64);
    auto codec = codecFor(config, type);
    const size_t count = 333;
    const Bytes packed = encodeWith(*codec, type, valuesAs(type, drawValues(Distribution::Gaussian, count, 5)), 0);
    const std::vector<float> exact = decodeExact(*codec, packed, count);
    expectSameBytes(decodeWith(*codec, type, packed, count), valuesAs(type, exact), "rounded");
  }
}

}  // namespace
}  // namespace cc
