// The top-k vector codec and the nat_det block codec (docs/wire-format.md,
// "topk" and "nat_det"): the REFERENCE.md test vectors, the formats byte for
// byte, the selection against a brute-force sort, the biased bounds
// (delta = d/k, (9/8) d/k and 9/8) on several distributions and scopes, error
// feedback bookkeeping, malformed input, and nat_det's fused hop.
//
// Every random input comes from a fixed seed; the one expectation over nat's
// randomness (topk+nat) is checked both analytically and against a Monte Carlo
// mean with a 6-sigma margin, so nothing here can flake.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/nat_kernels.h"
#include "codec/spec.h"
#include "codec/topk.h"
#include "cuda/nat_math.h"

#include "codec_test_values.h"

namespace cc {
namespace {


constexpr RandomStream kStream{0x0123456789abcdefull, 0x42ull};
constexpr uint8_t kGuard = 0xa5;
constexpr size_t kGuardBytes = 64;
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();


uint32_t le32(const uint8_t* bytes) {
  return static_cast<uint32_t>(bytes[0]) | (static_cast<uint32_t>(bytes[1]) << 8) |
         (static_cast<uint32_t>(bytes[2]) << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
}

void putLe32(uint8_t* bytes, uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
}

// ---------------------------------------------------------------------------
// Inputs

enum class Distribution { Gaussian, Uniform, HeavyTailed };
const Distribution kDistributions[] = {Distribution::Gaussian, Distribution::Uniform, Distribution::HeavyTailed};

const char* distributionName(Distribution distribution) {
  switch (distribution) {
    case Distribution::Gaussian:
      return "gaussian";
    case Distribution::Uniform:
      return "uniform";
    case Distribution::HeavyTailed:
      return "heavy-tailed";
  }
  return "?";
}

// Heavy tails: a Student t with 1.5 degrees of freedom (infinite variance,
// finite mean), made from a normal and a chi-squared draw.
std::vector<float> makeValues(Distribution distribution, size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::chi_squared_distribution<double> chiSquared(1.5);
  std::vector<float> values(count);
  for (float& value : values) {
    switch (distribution) {
      case Distribution::Gaussian:
        value = static_cast<float>(normal(rng));
        break;
      case Distribution::Uniform:
        value = static_cast<float>(uniform(rng));
        break;
      case Distribution::HeavyTailed:
        value = static_cast<float>(normal(rng) / std::sqrt(chiSquared(rng) / 1.5 + 1e-12));
        break;
    }
  }
  return values;
}

double squaredNorm(const std::vector<float>& values, size_t begin, size_t end) {
  double sum = 0.0;
  for (size_t i = begin; i < end; ++i) sum += static_cast<double>(values[i]) * values[i];
  return sum;
}

double squaredError(const std::vector<float>& a, const std::vector<float>& b, size_t begin, size_t end) {
  double sum = 0.0;
  for (size_t i = begin; i < end; ++i) {
    const double difference = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sum += difference * difference;
  }
  return sum;
}

// ---------------------------------------------------------------------------
// top-k helpers

CodecSpec topKSpec(Quantizer quantizer, Scope scope, double ratio, uint64_t k = 0, size_t bucketValues = 512) {
  CodecSpec spec;
  spec.selector = Selector::TopK;
  spec.quantizer = quantizer;
  spec.scope = scope;
  spec.ratio = ratio;
  spec.topK = k;
  spec.bucketValues = bucketValues;
  spec.canonical = std::string("topk-test");
  return spec;
}

const char* scopeName(Scope scope) {
  switch (scope) {
    case Scope::Bucket:
      return "bucket";
    case Scope::Tensor:
      return "tensor";
    case Scope::Model:
      return "model";
  }
  return "?";
}

// A layout that owns its offsets.
struct Layout {
  std::vector<size_t> offsets;
  TensorLayout view() const {
    TensorLayout layout;
    layout.count = offsets.back();
    layout.offsets = offsets.data();
    layout.tensors = offsets.size() - 1;
    return layout;
  }
};

struct ScopeRange {
  size_t begin;
  size_t end;
};

// The scopes as the format defines them, written independently of topk.cc.
std::vector<ScopeRange> scopesOf(const CodecSpec& spec, const Layout& layout) {
  const size_t count = layout.offsets.back();
  std::vector<ScopeRange> scopes;
  if (count == 0) return scopes;
  switch (spec.scope) {
    case Scope::Bucket:
      for (size_t begin = 0; begin < count; begin += spec.bucketValues) {
        scopes.push_back({begin, std::min(count, begin + spec.bucketValues)});
      }
      break;
    case Scope::Tensor:
      for (size_t t = 0; t + 1 < layout.offsets.size(); ++t) scopes.push_back({layout.offsets[t], layout.offsets[t + 1]});
      break;
    case Scope::Model:
      scopes.push_back({0, count});
      break;
  }
  return scopes;
}

// The selection key of the format: |x| bits, every NaN equal and above Inf.
uint32_t keyOf(float value) {
  if (std::isnan(value)) return 0x7f800001u;
  return bitsOf(value) & 0x7fffffffu;
}

// Brute force: sort the scope by (key descending, index ascending), keep k,
// sort the kept indices.
std::vector<uint32_t> referenceSelection(const CodecSpec& spec, const Layout& layout, const std::vector<float>& values) {
  std::vector<uint32_t> kept;
  for (const ScopeRange& scope : scopesOf(spec, layout)) {
    std::vector<uint32_t> order(scope.end - scope.begin);
    std::iota(order.begin(), order.end(), static_cast<uint32_t>(scope.begin));
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      const uint32_t keyA = keyOf(values[a]);
      const uint32_t keyB = keyOf(values[b]);
      return keyA != keyB ? keyA > keyB : a < b;
    });
    order.resize(topKKeptValues(spec, scope.end - scope.begin));
    std::sort(order.begin(), order.end());
    kept.insert(kept.end(), order.begin(), order.end());
  }
  return kept;
}

size_t referenceKept(const CodecSpec& spec, const Layout& layout) {
  size_t kept = 0;
  for (const ScopeRange& scope : scopesOf(spec, layout)) kept += topKKeptValues(spec, scope.end - scope.begin);
  return kept;
}

size_t referenceBytes(const CodecSpec& spec, const Layout& layout) {
  const size_t kept = referenceKept(spec, layout);
  return 4 * kept + (spec.quantizer == Quantizer::Nat ? 36 * ((kept + 31) / 32) : 4 * kept);
}

struct Encoded {
  Bytes bytes;  // exactly encodedBytes(layout) bytes
  std::vector<float> residual;
};

// Encodes into a buffer with guard bytes after the message and checks that
// they are untouched.
Encoded encodeChecked(const VectorCodec& codec, const std::vector<float>& values, const Layout& layout,
                      RandomStream rs = kStream, uint8_t fill = 0xee) {
  const TensorLayout view = layout.view();
  const size_t size = codec.encodedBytes(view);
  Bytes buffer(size + kGuardBytes, fill);
  std::fill(buffer.begin() + static_cast<std::ptrdiff_t>(size), buffer.end(), kGuard);
  Encoded encoded;
  encoded.residual.assign(values.size(), 12345.0f);
  codec.encode(values.data(), view, rs, buffer.data(), encoded.residual.data());
  for (size_t i = size; i < buffer.size(); ++i) {
    EXPECT_EQ(buffer[i], kGuard) << "encode wrote past encodedBytes at byte " << i;
  }
  buffer.resize(size);
  encoded.bytes = std::move(buffer);
  return encoded;
}

// D(message), with acc starting at -0 (the additive identity, so every
// decoded value comes out bit for bit).
std::vector<float> decodeChecked(const VectorCodec& codec, const Bytes& bytes, const Layout& layout) {
  std::vector<float> acc(layout.offsets.back(), -0.0f);
  const cc_result_t result = codec.decodeAccumulate(bytes.data(), layout.view(), acc.data());
  EXPECT_EQ(result, CC_SUCCESS) << lastErrorMessage();
  return acc;
}

std::vector<uint32_t> indicesOf(const Bytes& bytes, size_t kept) {
  std::vector<uint32_t> indices(kept);
  for (size_t j = 0; j < kept; ++j) indices[j] = le32(bytes.data() + 4 * j);
  return indices;
}

Layout singleTensor(size_t count) { return Layout{{0, count}}; }

// ---------------------------------------------------------------------------
// topKKeptValues and the factory

TEST(TopKCodec, KeptValuesFormula) {
  const CodecSpec ratio = topKSpec(Quantizer::Exact, Scope::Model, 0.01);
  EXPECT_EQ(topKKeptValues(ratio, 0), 0u);
  EXPECT_EQ(topKKeptValues(ratio, 1), 1u);
  EXPECT_EQ(topKKeptValues(ratio, 50), 1u);    // ceil(0.5)
  EXPECT_EQ(topKKeptValues(ratio, 1000), 10u);
  EXPECT_EQ(topKKeptValues(ratio, 1001), 11u);  // ceil(10.01)
  EXPECT_EQ(topKKeptValues(topKSpec(Quantizer::Exact, Scope::Model, 0.25), 10), 3u);
  EXPECT_EQ(topKKeptValues(topKSpec(Quantizer::Exact, Scope::Model, 0.0), 10), 1u);
  EXPECT_EQ(topKKeptValues(topKSpec(Quantizer::Exact, Scope::Model, 1.0), 10), 10u);
  EXPECT_EQ(topKKeptValues(topKSpec(Quantizer::Exact, Scope::Model, 3.0), 10), 10u);
  EXPECT_EQ(topKKeptValues(topKSpec(Quantizer::Exact, Scope::Model, kNaN), 10), 1u);
  const CodecSpec absolute = topKSpec(Quantizer::Exact, Scope::Model, 0.5, 5);  // k wins over ratio
  EXPECT_EQ(topKKeptValues(absolute, 0), 0u);
  EXPECT_EQ(topKKeptValues(absolute, 3), 3u);
  EXPECT_EQ(topKKeptValues(absolute, 100), 5u);
}

TEST(TopKCodec, FactoryChecksTheSpec) {
  auto codec = makeTopKVectorCodec(topKSpec(Quantizer::Exact, Scope::Model, 0.1));
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->id(), CodecId::TopK);
  ASSERT_NE(makeTopKVectorCodec(topKSpec(Quantizer::Nat, Scope::Tensor, 0.1)), nullptr);

  CodecSpec notTopK = topKSpec(Quantizer::Nat, Scope::Model, 0.1);
  notTopK.selector = Selector::RandK;
  EXPECT_EQ(makeTopKVectorCodec(notTopK), nullptr);
  EXPECT_NE(lastErrorMessage().find("CC_INVALID_ARGUMENT"), std::string::npos) << lastErrorMessage();
  EXPECT_EQ(makeTopKVectorCodec(topKSpec(Quantizer::DitherNat, Scope::Model, 0.1)), nullptr);
  EXPECT_EQ(makeTopKVectorCodec(topKSpec(Quantizer::NatDet, Scope::Model, 0.1)), nullptr);
}

// ---------------------------------------------------------------------------
// REFERENCE.md: x = (3, -1, 0.5, 0), k = 1

TEST(TopKCodec, ReferenceTop1Vector) {
  const std::vector<float> x = {3.0f, -1.0f, 0.5f, 0.0f};
  const Layout layout = singleTensor(4);
  for (const Scope scope : {Scope::Model, Scope::Tensor, Scope::Bucket}) {
    auto codec = makeTopKVectorCodec(topKSpec(Quantizer::Exact, scope, 0.0, 1));
    ASSERT_NE(codec, nullptr);
    const Encoded encoded = encodeChecked(*codec, x, layout);
    ASSERT_EQ(encoded.bytes.size(), 8u);
    EXPECT_EQ(le32(encoded.bytes.data()), 0u);
    EXPECT_EQ(le32(encoded.bytes.data() + 4), bitsOf(3.0f));
    const std::vector<float> decoded = decodeChecked(*codec, encoded.bytes, layout);
    EXPECT_EQ(decoded, (std::vector<float>{3.0f, 0.0f, 0.0f, 0.0f}));
    const double error = squaredError(decoded, x, 0, 4);
    EXPECT_EQ(error, 1.25);
    EXPECT_EQ(squaredNorm(x, 0, 4), 10.25);
    EXPECT_LE(error, (1.0 - 1.0 / 4.0) * 10.25);
    EXPECT_EQ(encoded.residual, (std::vector<float>{0.0f, -1.0f, 0.5f, 0.0f}));
  }
  // The same vector with ratio 0.25 (ceil(0.25 * 4) = 1) and nat values:
  // 3 = 1.5 * 2 goes to 2 or 4 and decodes scaled by 8/9.
  auto nat = makeTopKVectorCodec(topKSpec(Quantizer::Nat, Scope::Model, 0.25));
  const Encoded encoded = encodeChecked(*nat, x, layout);
  ASSERT_EQ(encoded.bytes.size(), 4u + 36u);
  EXPECT_EQ(le32(encoded.bytes.data()), 0u);
  const std::vector<float> decoded = decodeChecked(*nat, encoded.bytes, layout);
  EXPECT_TRUE(decoded[0] == 2.0f * (8.0f / 9.0f) || decoded[0] == 4.0f * (8.0f / 9.0f)) << decoded[0];
  EXPECT_EQ(decoded[1], 0.0f);
}

// ---------------------------------------------------------------------------
// Selection against the brute-force sort: ties, signed zeros, non-finite
// values, small scopes (nth_element) and large ones (radix select).

std::vector<float> tieHeavyValues(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(0, 99);
  const float palette[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 0.5f, 1e-40f, -3.0f, 3.0f};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) {
    const int r = pick(rng);
    if (r < 50) {
      value = palette[r % 10];
    } else if (r == 50) {
      value = kNaN;
    } else if (r == 51) {
      value = -kNaN;
    } else if (r == 52) {
      value = (rng() & 1u) ? kInf : -kInf;
    } else if (r == 53) {
      value = floatOf(0x7f800123u);  // a NaN with another payload ties with the others
    } else {
      value = normal(rng);
    }
  }
  return values;
}

// Gaussian values; tie-heavy ones; and narrow ones, whose magnitudes all
// share the top radix digit (exponent and 3 mantissa bits), so that the
// select runs its second and third digits.
enum class InputKind { Gaussian, TieHeavy, Narrow };

std::vector<float> selectionInputs(InputKind kind, size_t count, uint32_t seed) {
  switch (kind) {
    case InputKind::Gaussian:
      return makeValues(Distribution::Gaussian, count, seed);
    case InputKind::TieHeavy:
      return tieHeavyValues(count, seed);
    case InputKind::Narrow:
      break;
  }
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> mantissa(0, (1u << 20) - 1);
  std::vector<float> values(count);
  for (float& value : values) {
    const uint32_t bits = ((rng() & 1u) << 31) | (127u << 23) | (rng() % 8 == 0 ? 0x1234u : mantissa(rng));
    value = floatOf(bits);  // in [1, 1.125), an eighth of them equal
  }
  return values;
}

TEST(TopKCodec, SelectionMatchesBruteForce) {
  const std::vector<Layout> layouts = {singleTensor(1),    singleTensor(31),   singleTensor(100),
                                       singleTensor(4096), singleTensor(4097), singleTensor(20000),
                                       Layout{{0, 64, 96, 1000}}, Layout{{0, 4096, 4128, 13000, 13001}}};
  const std::vector<std::pair<double, uint64_t>> amounts = {{0.001, 0}, {0.01, 0}, {0.1, 0}, {0.5, 0},
                                                            {0.99, 0},  {1.0, 0},  {0.0, 1}, {0.0, 7},
                                                            {0.0, 5000}};
  uint32_t seed = 1;
  for (const Layout& layout : layouts) {
    for (const InputKind kind : {InputKind::Gaussian, InputKind::TieHeavy, InputKind::Narrow}) {
      const size_t count = layout.offsets.back();
      const std::vector<float> values = selectionInputs(kind, count, seed++);
      for (const Scope scope : {Scope::Bucket, Scope::Tensor, Scope::Model}) {
        for (const auto& amount : amounts) {
          const CodecSpec spec = topKSpec(Quantizer::Exact, scope, amount.first, amount.second, 96);
          auto codec = makeTopKVectorCodec(spec);
          const Encoded encoded = encodeChecked(*codec, values, layout);
          const size_t kept = referenceKept(spec, layout);
          ASSERT_EQ(encoded.bytes.size(), 8 * kept);
          const std::vector<uint32_t> expected = referenceSelection(spec, layout, values);
          ASSERT_EQ(indicesOf(encoded.bytes, kept), expected)
              << "count " << count << " scope " << scopeName(scope) << " ratio " << amount.first << " k "
              << amount.second << " input kind " << static_cast<int>(kind);
          for (size_t j = 0; j < kept; ++j) {
            ASSERT_EQ(le32(encoded.bytes.data() + 4 * (kept + j)), bitsOf(values[expected[j]]));
          }
        }
      }
    }
  }
}

// Scopes of 65536 values and more count the top digit into four
// interleaved histograms; 70001 also leaves a remainder for the plain loop.
TEST(TopKCodec, LargeScopeSelectionMatchesBruteForce) {
  const std::vector<Layout> layouts = {singleTensor(70001), Layout{{0, 65536, 70001}}};
  uint32_t seed = 900;
  for (const Layout& layout : layouts) {
    for (const InputKind kind : {InputKind::Gaussian, InputKind::TieHeavy, InputKind::Narrow}) {
      const std::vector<float> values = selectionInputs(kind, layout.offsets.back(), seed++);
      for (const Scope scope : {Scope::Tensor, Scope::Model}) {
        for (const auto& amount : std::vector<std::pair<double, uint64_t>>{{0.01, 0}, {0.0, 1}, {0.0, 3000}}) {
          const CodecSpec spec = topKSpec(Quantizer::Exact, scope, amount.first, amount.second);
          auto codec = makeTopKVectorCodec(spec);
          const Encoded encoded = encodeChecked(*codec, values, layout);
          ASSERT_EQ(indicesOf(encoded.bytes, referenceKept(spec, layout)), referenceSelection(spec, layout, values))
              << "scope " << scopeName(scope) << " ratio " << amount.first << " k " << amount.second
              << " input kind " << static_cast<int>(kind);
        }
      }
    }
  }
}

TEST(TopKCodec, TiesGoToTheLowerIndex) {
  auto codec = makeTopKVectorCodec(topKSpec(Quantizer::Exact, Scope::Model, 0.0, 3));
  const std::vector<float> alternating = {1.0f, -1.0f, 1.0f, -1.0f, 1.0f, -1.0f};
  EXPECT_EQ(indicesOf(encodeChecked(*codec, alternating, singleTensor(6)).bytes, 3),
            (std::vector<uint32_t>{0, 1, 2}));
  const std::vector<float> zeros = {0.0f, -0.0f, 0.0f, -0.0f, 0.0f};
  EXPECT_EQ(indicesOf(encodeChecked(*codec, zeros, singleTensor(5)).bytes, 3), (std::vector<uint32_t>{0, 1, 2}));
  const std::vector<float> oneLarger = {1.0f, -1.0f, 1.0f, -2.0f, 1.0f};
  EXPECT_EQ(indicesOf(encodeChecked(*codec, oneLarger, singleTensor(5)).bytes, 3),
            (std::vector<uint32_t>{0, 1, 3}));

  // The radix path: 10000 equal magnitudes and three larger values; the
  // remaining two slots go to indices 0 and 1.
  std::vector<float> large(10000, 0.75f);
  for (size_t i = 1; i < large.size(); i += 2) large[i] = -0.75f;
  large[9000] = 1.0f;
  large[5000] = -1.0f;
  large[7] = 0.7500001f;
  auto five = makeTopKVectorCodec(topKSpec(Quantizer::Exact, Scope::Model, 0.0, 5));
  EXPECT_EQ(indicesOf(encodeChecked(*five, large, singleTensor(large.size())).bytes, 5),
            (std::vector<uint32_t>{0, 1, 7, 5000, 9000}));
}

TEST(TopKCodec, NonFiniteValuesAreSelectedFirst) {
  for (const size_t count : {size_t{200}, size_t{9000}}) {  // nth_element and radix paths
    std::vector<float> values = makeValues(Distribution::HeavyTailed, count, 77);
    values[3] = kInf;
    values[7] = -kNaN;
    values[100] = -kInf;
    values[150] = 3.0e38f;
    const Layout layout = singleTensor(count);
    const std::vector<std::pair<uint64_t, std::vector<uint32_t>>> cases = {
        {1, {7}}, {2, {3, 7}}, {3, {3, 7, 100}}, {4, {3, 7, 100, 150}}};
    for (const auto& c : cases) {
      auto exact = makeTopKVectorCodec(topKSpec(Quantizer::Exact, Scope::Model, 0.0, c.first));
      const Encoded encoded = encodeChecked(*exact, values, layout);
      EXPECT_EQ(indicesOf(encoded.bytes, c.first), c.second) << "k = " << c.first;
      const std::vector<float> decoded = decodeChecked(*exact, encoded.bytes, layout);
      EXPECT_TRUE(std::isnan(decoded[7]));
      if (c.first >= 2) {
        EXPECT_EQ(decoded[3], kInf);
      }
      if (c.first >= 3) {
        EXPECT_EQ(decoded[100], -kInf);
      }
      EXPECT_TRUE(std::isnan(encoded.residual[7]));  // NaN - NaN
    }
    // With nat values NaN stays NaN and ±Inf keep their sign.
    auto nat = makeTopKVectorCodec(topKSpec(Quantizer::Nat, Scope::Model, 0.0, 3));
    const Encoded encoded = encodeChecked(*nat, values, layout);
    const std::vector<float> decoded = decodeChecked(*nat, encoded.bytes, layout);
    EXPECT_EQ(decoded[3], kInf);
    EXPECT_TRUE(std::isnan(decoded[7]));  // a NaN with its sign bit set
    EXPECT_EQ(decoded[100], -kInf);
  }
}

// ---------------------------------------------------------------------------
// Sizes and bytes

TEST(TopKCodec, EncodedBytesMatchTheFormatAndEveryByteIsWritten) {
  const std::vector<Layout> layouts = {singleTensor(0), singleTensor(1), singleTensor(33),
                                       Layout{{0, 64, 96, 1000}}, Layout{{0, 32, 64, 65}}, singleTensor(5000)};
  for (const Quantizer quantizer : {Quantizer::Exact, Quantizer::Nat}) {
    for (const Scope scope : {Scope::Bucket, Scope::Tensor, Scope::Model}) {
      for (const double ratio : {0.01, 0.3, 1.0}) {
        const CodecSpec spec = topKSpec(quantizer, scope, ratio, 0, 64);
        auto codec = makeTopKVectorCodec(spec);
        for (const Layout& layout : layouts) {
          const std::vector<float> values = makeValues(Distribution::Gaussian, layout.offsets.back(), 5);
          ASSERT_EQ(codec->encodedBytes(layout.view()), referenceBytes(spec, layout));
          // Two different fills give the same message: no byte is left over.
          const Encoded a = encodeChecked(*codec, values, layout, kStream, 0x00);
          const Encoded b = encodeChecked(*codec, values, layout, kStream, 0xff);
          EXPECT_EQ(a.bytes, b.bytes);
        }
      }
    }
  }
}

TEST(TopKCodec, NatValuesAreTheNatEncodingOfTheKeptValues) {
  const Layout layout{{0, 64, 96, 1000}};
  const std::vector<float> values = makeValues(Distribution::Gaussian, 1000, 9);
  const CodecSpec spec = topKSpec(Quantizer::Nat, Scope::Tensor, 0.1);
  auto codec = makeTopKVectorCodec(spec);
  const RandomStream rs{0xfeedull, makeStreamId(3, 1, 0)};
  const Encoded encoded = encodeChecked(*codec, values, layout, rs);
  const std::vector<uint32_t> indices = referenceSelection(spec, layout, values);
  const size_t kept = indices.size();
  ASSERT_EQ(kept, 7u + 4u + 91u);
  EXPECT_EQ(indicesOf(encoded.bytes, kept), indices);
  std::vector<float> keptValues;
  for (const uint32_t index : indices) keptValues.push_back(values[index]);
  Bytes expected(natPackedBytes(kept));
  natEncodeScalar(ElementType::F32, keptValues.data(), kept, 0, rs, expected.data());
  EXPECT_EQ(Bytes(encoded.bytes.begin() + static_cast<std::ptrdiff_t>(4 * kept), encoded.bytes.end()), expected);
  // The decoder adds D(nat) * float32(8/9), one rounding.
  const std::vector<float> decoded = decodeChecked(*codec, encoded.bytes, layout);
  std::vector<float> natDecoded(kept);
  natDecodeScalar(ElementType::F32, expected.data(), kept, natDecoded.data());
  for (size_t j = 0; j < kept; ++j) {
    EXPECT_EQ(bitsOf(decoded[indices[j]]), bitsOf(natDecoded[j] * floatOf(0x3f638e39u)));
  }
}

TEST(TopKCodec, EmptyCall) {
  auto codec = makeTopKVectorCodec(topKSpec(Quantizer::Nat, Scope::Model, 0.5));
  TensorLayout layout;
  EXPECT_EQ(codec->encodedBytes(layout), 0u);
  codec->encode(nullptr, layout, kStream, nullptr, nullptr);
  EXPECT_EQ(codec->decodeAccumulate(nullptr, layout, nullptr), CC_SUCCESS);
}

// ---------------------------------------------------------------------------
// Error feedback: residual = values - D(C(values)), as the decoder computes it

TEST(TopKCodec, ResidualIsValuesMinusDecoded) {
  const Layout layout{{0, 64, 96, 1000}};
  std::vector<float> values = makeValues(Distribution::HeavyTailed, 1000, 21);
  values[10] = kInf;
  values[500] = -0.0f;
  for (const Quantizer quantizer : {Quantizer::Exact, Quantizer::Nat}) {
    for (const Scope scope : {Scope::Bucket, Scope::Tensor, Scope::Model}) {
      const CodecSpec spec = topKSpec(quantizer, scope, 0.2, 0, 128);
      auto codec = makeTopKVectorCodec(spec);
      const Encoded encoded = encodeChecked(*codec, values, layout);
      const std::vector<float> decoded = decodeChecked(*codec, encoded.bytes, layout);
      const std::vector<uint32_t> indices = indicesOf(encoded.bytes, referenceKept(spec, layout));
      std::vector<bool> kept(values.size(), false);
      for (const uint32_t index : indices) kept[index] = true;
      for (size_t i = 0; i < values.size(); ++i) {
        if (kept[i]) {
          const float expected = values[i] - decoded[i];
          if (std::isnan(expected)) {
            EXPECT_TRUE(std::isnan(encoded.residual[i])) << i;
          } else {
            EXPECT_EQ(bitsOf(encoded.residual[i]), bitsOf(expected)) << i;
          }
          if (quantizer == Quantizer::Exact && std::isfinite(values[i])) {
            EXPECT_EQ(encoded.residual[i], 0.0f);
          }
        } else {
          EXPECT_EQ(bitsOf(encoded.residual[i]), bitsOf(values[i])) << i;
          EXPECT_EQ(bitsOf(decoded[i]), bitsOf(-0.0f)) << i;  // nothing was added
        }
      }
      // In place: residual == values.
      std::vector<float> inPlace = values;
      Bytes bytes(codec->encodedBytes(layout.view()));
      codec->encode(inPlace.data(), layout.view(), kStream, bytes.data(), inPlace.data());
      EXPECT_EQ(bytes, encoded.bytes);
      for (size_t i = 0; i < values.size(); ++i) {
        const bool bothNan = std::isnan(inPlace[i]) && std::isnan(encoded.residual[i]);
        if (!bothNan) {
          EXPECT_EQ(bitsOf(inPlace[i]), bitsOf(encoded.residual[i])) << i;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The biased bounds

struct BoundCase {
  Layout layout;
  Scope scope;
  double ratio;
  uint64_t k;
};

std::vector<BoundCase> boundCases() {
  std::vector<BoundCase> cases;
  const Layout multi{{0, 64, 96, 1000}};
  const Layout large{{0, 64, 96, 1000, 6000}};
  for (const Layout& layout : {multi, large}) {
    for (const Scope scope : {Scope::Bucket, Scope::Tensor, Scope::Model}) {
      for (const double ratio : {0.001, 0.01, 0.1, 0.5}) cases.push_back({layout, scope, ratio, 0});
      cases.push_back({layout, scope, 0.0, 3});
    }
  }
  return cases;
}

TEST(TopKCodec, DeterministicBoundOfExactTopK) {
  uint32_t seed = 100;
  for (const Distribution distribution : kDistributions) {
    for (const BoundCase& c : boundCases()) {
      const CodecSpec spec = topKSpec(Quantizer::Exact, c.scope, c.ratio, c.k, 128);
      auto codec = makeTopKVectorCodec(spec);
      const std::vector<float> x = makeValues(distribution, c.layout.offsets.back(), seed++);
      const std::vector<float> decoded = decodeChecked(*codec, encodeChecked(*codec, x, c.layout).bytes, c.layout);
      for (const ScopeRange& scope : scopesOf(spec, c.layout)) {
        const double d = static_cast<double>(scope.end - scope.begin);
        const double k = static_cast<double>(topKKeptValues(spec, scope.end - scope.begin));
        const double error = squaredError(decoded, x, scope.begin, scope.end);
        EXPECT_LE(error, (1.0 - k / d) * squaredNorm(x, scope.begin, scope.end))
            << distributionName(distribution) << " " << scopeName(c.scope) << " ratio " << c.ratio << " d " << d;
      }
    }
  }
}

// nat's two outcomes of t: the powers of two around |t| and P(up) = m / 2^23
// (exact for the normal values these tests use).
void natOutcomes(float t, double* lo, double* hi, double* probabilityUp) {
  const uint32_t bits = bitsOf(t);
  const uint32_t exponent = (bits >> 23) & 0xffu;
  const double sign = (bits >> 31) ? -1.0 : 1.0;
  *lo = sign * std::ldexp(1.0, static_cast<int>(exponent) - 127);
  *hi = 2.0 * *lo;
  *probabilityUp = static_cast<double>(bits & 0x7fffffu) / 8388608.0;
}

TEST(TopKCodec, ExpectedBoundOfTopKWithNat) {
  constexpr int kTrials = 64;
  const double scale = static_cast<double>(8.0f / 9.0f);
  uint32_t seed = 500;
  for (const Distribution distribution : kDistributions) {
    for (const BoundCase& c : boundCases()) {
      const CodecSpec spec = topKSpec(Quantizer::Nat, c.scope, c.ratio, c.k, 128);
      auto codec = makeTopKVectorCodec(spec);
      const std::vector<float> x = makeValues(distribution, c.layout.offsets.back(), seed++);
      const std::vector<ScopeRange> scopes = scopesOf(spec, c.layout);
      std::vector<double> sum(scopes.size(), 0.0);
      for (int trial = 0; trial < kTrials; ++trial) {
        const RandomStream rs{0x5eedull + static_cast<uint64_t>(trial), makeStreamId(static_cast<uint64_t>(trial), 0, 0)};
        const std::vector<float> decoded =
            decodeChecked(*codec, encodeChecked(*codec, x, c.layout, rs).bytes, c.layout);
        for (size_t s = 0; s < scopes.size(); ++s) {
          const double error = squaredError(decoded, x, scopes[s].begin, scopes[s].end);
          sum[s] += error;
        }
      }
      const std::vector<uint32_t> kept = referenceSelection(spec, c.layout, x);
      std::vector<bool> isKept(x.size(), false);
      for (const uint32_t index : kept) isKept[index] = true;
      for (size_t s = 0; s < scopes.size(); ++s) {
        const ScopeRange scope = scopes[s];
        // The exact expectation: unkept values contribute x^2, a kept value
        // the mean of its two scaled outcomes' squared errors. The kept
        // values round independently, so the variance of one trial's error
        // is the sum of their Bernoulli variances.
        double expected = 0.0;
        double variance = 0.0;
        for (size_t i = scope.begin; i < scope.end; ++i) {
          if (!isKept[i]) {
            expected += static_cast<double>(x[i]) * x[i];
            continue;
          }
          double lo, hi, p;
          natOutcomes(x[i], &lo, &hi, &p);
          const double errorLo = lo * scale - x[i];
          const double errorHi = hi * scale - x[i];
          expected += (1.0 - p) * errorLo * errorLo + p * errorHi * errorHi;
          const double spread = errorHi * errorHi - errorLo * errorLo;
          variance += p * (1.0 - p) * spread * spread;
        }
        const double d = static_cast<double>(scope.end - scope.begin);
        const double k = static_cast<double>(topKKeptValues(spec, scope.end - scope.begin));
        const double delta = (9.0 / 8.0) * d / k;
        const double bound = (1.0 - 1.0 / delta) * squaredNorm(x, scope.begin, scope.end);
        const std::string where = std::string(distributionName(distribution)) + " " + scopeName(c.scope) +
                                  " ratio " + std::to_string(c.ratio) + " scope " + std::to_string(s);
        EXPECT_LE(expected, bound) << where;
        const double mean = sum[s] / kTrials;
        const double sigma = std::sqrt(variance / kTrials);  // of the mean of kTrials trials
        EXPECT_LE(mean, bound) << where;
        EXPECT_NEAR(mean, expected, 6.0 * sigma + 1e-9 * expected) << where;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Malformed input

struct Malformed {
  const char* name;
  size_t position;
  uint32_t index;
};

TEST(TopKCodec, MalformedIndicesFailCleanly) {
  const Layout layout{{0, 64, 96, 1000}};
  const std::vector<float> values = makeValues(Distribution::Gaussian, 1000, 3);
  for (const Quantizer quantizer : {Quantizer::Exact, Quantizer::Nat}) {
    const CodecSpec spec = topKSpec(quantizer, Scope::Tensor, 0.05);  // k = 4, 2, 46
    auto codec = makeTopKVectorCodec(spec);
    const Bytes good = encodeChecked(*codec, values, layout).bytes;
    const std::vector<uint32_t> indices = indicesOf(good, 52);
    ASSERT_EQ(indices.size(), 52u);
    const std::vector<Malformed> cases = {
        {"index >= count", 10, 1000},
        {"index far out of range", 51, 0xffffffffu},
        {"descending", 1, indices[0] > 0 ? indices[0] - 1 : 0},
        {"duplicate", 8, indices[7]},
        {"outside its scope (tensor 1 holds 64..95)", 4, 10},
        {"outside its scope (in the next tensor)", 3, 70},
    };
    for (const Malformed& m : cases) {
      Bytes bad = good;
      putLe32(bad.data() + 4 * m.position, m.index);
      std::vector<float> acc(1000, 1.0f);
      clearLastError();
      EXPECT_EQ(codec->decodeAccumulate(bad.data(), layout.view(), acc.data()), CC_REMOTE_ERROR) << m.name;
      const std::string message = lastErrorMessage();
      EXPECT_NE(message.find("CC_REMOTE_ERROR"), std::string::npos) << message;
      EXPECT_NE(message.find("position " + std::to_string(m.position)), std::string::npos) << message;
      EXPECT_NE(message.find("index " + std::to_string(m.index)), std::string::npos) << message;
      EXPECT_EQ(acc, std::vector<float>(1000, 1.0f)) << "a malformed message must leave acc unchanged: " << m.name;
    }
  }
}

TEST(TopKCodec, RandomMessagesNeverCrash) {
  const Layout layout{{0, 64, 96, 1000}};
  std::mt19937 rng(4242);
  for (const Quantizer quantizer : {Quantizer::Exact, Quantizer::Nat}) {
    for (const Scope scope : {Scope::Bucket, Scope::Tensor, Scope::Model}) {
      auto codec = makeTopKVectorCodec(topKSpec(quantizer, scope, 0.02, 0, 64));
      const size_t size = codec->encodedBytes(layout.view());
      int failures = 0;
      for (int trial = 0; trial < 300; ++trial) {
        Bytes bytes(size);
        for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(rng());
        if (trial % 2 == 1) {  // small indices: some messages pass, most do not
          for (size_t j = 0; j + 4 <= size / 2; j += 4) putLe32(bytes.data() + j, rng() % 1100);
        }
        std::vector<float> acc(1000, 0.0f);
        const cc_result_t result = codec->decodeAccumulate(bytes.data(), layout.view(), acc.data());
        ASSERT_TRUE(result == CC_SUCCESS || result == CC_REMOTE_ERROR);
        failures += result == CC_REMOTE_ERROR ? 1 : 0;
      }
      EXPECT_GT(failures, 0);
    }
  }
}

// ===========================================================================
// nat_det

const ElementType kNatTypes[] = {ElementType::F32, ElementType::BF16, ElementType::F16};

// The format's rule, written from the table rather than from bit 22: the
// exponent byte of the nearest power of two (ties up), saturating at 254.
uint32_t referenceDetExponent(float value) {
  if (std::isnan(value)) return 0;  // with the sign bit: NaN
  if (std::isinf(value)) return 255;
  const double magnitude = std::fabs(static_cast<double>(value));
  if (magnitude == 0.0) return 0;
  const double smallestNormal = std::ldexp(1.0, -126);
  if (magnitude < smallestNormal) return magnitude >= smallestNormal / 2 ? 1 : 0;
  int exponent = 0;
  std::frexp(magnitude, &exponent);  // magnitude in [2^(exponent-1), 2^exponent)
  const uint32_t biased = static_cast<uint32_t>(exponent - 1 + 127);
  if (biased == 254) return 254;
  return magnitude >= 1.5 * std::ldexp(1.0, exponent - 1) ? biased + 1 : biased;
}



uint32_t signOf(const Bytes& packed, size_t i) { return (le32(packed.data() + 36 * (i / 32)) >> (i % 32)) & 1u; }
uint32_t exponentOf(const Bytes& packed, size_t i) { return packed[36 * (i / 32) + 4 + i % 32]; }
uint32_t codeOf(const Bytes& packed, size_t i) { return signOf(packed, i) * 256 + exponentOf(packed, i); }

Bytes detEncode(ElementType type, const std::vector<float>& values, RandomStream rs = kStream,
                uint64_t firstIndex = 0) {
  auto codec = makeNatDetCodec(type);
  Bytes local = valuesAs(type, values);
  Bytes packed(codec->packedBytes(values.size()) + kGuardBytes, kGuard);
  codec->encode(local.data(), values.size(), firstIndex, rs, packed.data());
  for (size_t i = codec->packedBytes(values.size()); i < packed.size(); ++i) EXPECT_EQ(packed[i], kGuard);
  packed.resize(codec->packedBytes(values.size()));
  return packed;
}

std::vector<float> detRoundTrip(const std::vector<float>& values) {
  auto codec = makeNatDetCodec(ElementType::F32);
  const Bytes packed = detEncode(ElementType::F32, values);
  std::vector<float> out(values.size());
  codec->decode(packed.data(), values.size(), out.data());
  return out;
}

TEST(NatDetCodec, Identity) {
  auto codec = makeNatDetCodec(ElementType::F32);
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->id(), CodecId::NatDet);
  EXPECT_EQ(codec->alignmentValues(), 32u);
  for (const size_t n : {size_t{0}, size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{1007}}) {
    EXPECT_EQ(codec->packedBytes(n), 36 * ((n + 31) / 32));
  }
  EXPECT_NE(makeNatDetCodec(ElementType::BF16), nullptr);
  EXPECT_NE(makeNatDetCodec(ElementType::F16), nullptr);
  EXPECT_EQ(makeNatDetCodec(ElementType::F64), nullptr);
  EXPECT_EQ(makeNatDetCodec(ElementType::I32), nullptr);
}

TEST(NatDetCodec, PowersOfTwoAreExact) {
  std::vector<float> values;
  for (int k = -126; k <= 127; ++k) {
    values.push_back(std::ldexp(1.0f, k));
    values.push_back(-std::ldexp(1.0f, k));
  }
  EXPECT_EQ(detRoundTrip(values), values);
  // In the 16-bit types, over each type's normal range.
  for (const ElementType type : {ElementType::BF16, ElementType::F16}) {
    std::vector<float> typed;
    const int lowest = type == ElementType::F16 ? -14 : -126;
    const int highest = type == ElementType::F16 ? 15 : 127;
    for (int k = lowest; k <= highest; ++k) typed.push_back(std::ldexp(k % 2 ? -1.0f : 1.0f, k));
    auto codec = makeNatDetCodec(type);
    const Bytes packed = detEncode(type, typed);
    Bytes out(typed.size() * 2);
    codec->decode(packed.data(), typed.size(), out.data());
    EXPECT_EQ(out, valuesAs(type, typed)) << typeName(type);
  }
}

TEST(NatDetCodec, RoundsToTheNearestPowerOfTwoTiesUp) {
  // REFERENCE's nat table, rounded deterministically.
  const std::vector<float> in = {3.0f, 1.5f, 5.0f, 2.5f, 0.1f, 4.0f / 3.0f, 4.0f, -3.0f, 6.0f, 0.75f};
  const std::vector<float> out = {4.0f, 2.0f, 4.0f, 2.0f, 0.125f, 1.0f, 4.0f, -4.0f, 8.0f, 1.0f};
  EXPECT_EQ(detRoundTrip(in), out);
  for (int k = -126; k <= 126; ++k) {
    const float midpoint = 1.5f * std::ldexp(1.0f, k);
    const float below = std::nextafter(midpoint, 0.0f);
    const std::vector<float> got = detRoundTrip({midpoint, below, -midpoint, -below});
    EXPECT_EQ(got[0], std::ldexp(1.0f, k + 1)) << k;
    EXPECT_EQ(got[1], std::ldexp(1.0f, k)) << k;
    EXPECT_EQ(got[2], -std::ldexp(1.0f, k + 1)) << k;
    EXPECT_EQ(got[3], -std::ldexp(1.0f, k)) << k;
  }
}

TEST(NatDetCodec, NineBitCodes) {
  const Bytes packed = detEncode(ElementType::F32, {2.0f, 4.0f, -2.0f, 3.0f, 2.9f, -0.0f});
  EXPECT_EQ(codeOf(packed, 0), 0x080u);
  EXPECT_EQ(codeOf(packed, 1), 0x081u);
  EXPECT_EQ(codeOf(packed, 2), 0x180u);
  EXPECT_EQ(codeOf(packed, 3), 0x081u);  // 3 = 1.5 * 2 goes up to 4
  EXPECT_EQ(codeOf(packed, 4), 0x080u);
  EXPECT_EQ(codeOf(packed, 5), 0x000u);  // -0 is sent as +0: 0x100 is NaN
}

TEST(NatDetCodec, SpecialValues) {
  const float smallestNormal = std::ldexp(1.0f, -126);
  const std::vector<float> values = {
      0.0f,
      -0.0f,
      std::ldexp(1.0f, -149),                           // smallest subnormal -> 0
      std::nextafter(std::ldexp(1.0f, -127), 0.0f),     // just below half of 2^-126 -> 0
      std::ldexp(1.0f, -127),                           // m = 2^22 -> 2^-126
      -std::nextafter(smallestNormal, 0.0f),            // largest subnormal -> -2^-126
      std::numeric_limits<float>::max(),                // E = 254 saturates at 2^127
      -1.5f * std::ldexp(1.0f, 127),
      std::ldexp(1.0f, 127),
      1.5f * std::ldexp(1.0f, 126),                     // E = 253 rounds up to 2^127
      kInf,
      -kInf,
      kNaN,
      -kNaN,
      floatOf(0x7f800001u),                             // signalling NaN payload
  };
  const std::vector<uint32_t> codes = {0x000, 0x000, 0x000, 0x000, 0x001, 0x101, 0x0fe, 0x1fe,
                                       0x0fe, 0x0fe, 0x0ff, 0x1ff, 0x100, 0x100, 0x100};
  const Bytes packed = detEncode(ElementType::F32, values);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(codeOf(packed, i), codes[i]) << "value " << i;
    EXPECT_EQ(exponentOf(packed, i), referenceDetExponent(values[i])) << "value " << i;
  }
}

TEST(NatDetCodec, MatchesTheReferenceRuleOnEveryExponent) {
  std::mt19937 rng(99);
  std::vector<float> values;
  for (int i = 0; i < 20000; ++i) values.push_back(floatOf(static_cast<uint32_t>(rng())));
  const Bytes packed = detEncode(ElementType::F32, values);
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(exponentOf(packed, i), referenceDetExponent(values[i])) << values[i];
    const uint32_t expectedSign = std::isnan(values[i]) ? 1u : exponentOf(packed, i) == 0 ? 0u : bitsOf(values[i]) >> 31;
    ASSERT_EQ(signOf(packed, i), expectedSign) << values[i];
  }
}

TEST(NatDetCodec, IgnoresRandomnessAndPosition) {
  const std::vector<float> values = makeValues(Distribution::Gaussian, 1000, 8);
  const Bytes a = detEncode(ElementType::F32, values, kStream, 0);
  EXPECT_EQ(detEncode(ElementType::F32, values, RandomStream{1, 2}, 0), a);
  EXPECT_EQ(detEncode(ElementType::F32, values, RandomStream{3, 4}, 4096), a);
}

TEST(NatDetCodec, TailIsZeroPadded) {
  for (const ElementType type : kNatTypes) {
    for (const size_t n : {size_t{1}, size_t{31}, size_t{33}, size_t{97}}) {
      std::vector<float> values(n, -3.0f);
      const Bytes packed = detEncode(type, values);
      for (size_t lane = n % 32; lane != 0 && lane < 32; ++lane) {
        const size_t i = 32 * (n / 32) + lane;
        EXPECT_EQ(signOf(packed, i), 0u);
        EXPECT_EQ(exponentOf(packed, i), 0u);
      }
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(codeOf(packed, i), 0x181u);
    }
  }
}

TEST(NatDetCodec, BiasedBoundWithDeltaNineEighths) {
  for (const Distribution distribution : kDistributions) {
    for (const uint32_t seed : {1u, 2u, 3u}) {
      const std::vector<float> x = makeValues(distribution, 10000, seed);
      const std::vector<float> c = detRoundTrip(x);
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_LE(std::fabs(static_cast<double>(c[i]) - x[i]), std::fabs(static_cast<double>(x[i])) / 3.0) << x[i];
      }
      const double error = squaredError(c, x, 0, x.size());
      EXPECT_LE(error, (1.0 - 8.0 / 9.0) * squaredNorm(x, 0, x.size())) << distributionName(distribution);
    }
  }
  // The worst case is attained: x = 1.5 * 2^k gives exactly 1/9.
  for (const int k : {-100, -3, 0, 1, 7, 100}) {
    const std::vector<float> x(64, 1.5f * std::ldexp(1.0f, k));
    const std::vector<float> c = detRoundTrip(x);
    const double error = squaredError(c, x, 0, x.size());
    EXPECT_EQ(9.0 * error, squaredNorm(x, 0, x.size())) << k;
  }
}

TEST(NatDetCodec, DecodeIsNatDecode) {
  std::mt19937 rng(5);
  Bytes packed(36 * 4);
  for (uint8_t& byte : packed) byte = static_cast<uint8_t>(rng());
  auto codec = makeNatDetCodec(ElementType::F32);
  std::vector<float> out(120), expected(120);
  codec->decode(packed.data(), 120, out.data());
  natDecodeScalar(ElementType::F32, packed.data(), 120, expected.data());
  EXPECT_EQ(Bytes(reinterpret_cast<uint8_t*>(out.data()), reinterpret_cast<uint8_t*>(out.data()) + 480),
            Bytes(reinterpret_cast<uint8_t*>(expected.data()), reinterpret_cast<uint8_t*>(expected.data()) + 480));
  std::vector<float> acc(120, 1.0f), expectedAcc(120, 1.0f);
  codec->decodeAccumulate(packed.data(), 120, acc.data());
  natDecodeAccumulateScalar(packed.data(), 120, expectedAcc.data());
  for (size_t i = 0; i < 120; ++i) {
    if (!(std::isnan(acc[i]) && std::isnan(expectedAcc[i]))) {
      EXPECT_EQ(bitsOf(acc[i]), bitsOf(expectedAcc[i]));
    }
  }
}

// Inputs for the hop: every special value and a spread of magnitudes
// (including ones that overflow F16 and that are subnormal in it).
std::vector<float> hopInputs(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-30, 20);
  const float specials[] = {0.0f, -0.0f, kInf, -kInf, kNaN, -kNaN, 1e-40f, 70000.0f, 3.0f, -1.5f};
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = i % 13 == 5 ? specials[(i / 13) % 10] : std::ldexp(normal(rng), exponent(rng));
  }
  return values;
}

TEST(NatDetCodec, FusedHopIsDecodeAddEncode) {
  auto f32 = makeNatDetCodec(ElementType::F32);
  for (const ElementType type : kNatTypes) {
    auto codec = makeNatDetCodec(type);
    const size_t bytesPerValue = elementBytes(type);
    for (const size_t n : {size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{97}, size_t{1007}}) {
      for (const uint32_t divisor : {1u, 3u}) {
        // Incoming message: nat_det of some values, then garbage in the pad
        // lanes of its tail block (read as +0).
        const std::vector<float> incoming = hopInputs(n, 11);
        Bytes packedIn = detEncode(ElementType::F32, incoming);
        for (size_t lane = n % 32; lane != 0 && lane < 32; ++lane) {
          packedIn[36 * (n / 32) + 4 + lane] = 0x99;
          packedIn[36 * (n / 32) + lane / 8] |= static_cast<uint8_t>(1u << (lane % 8));
        }
        const Bytes local = valuesAs(type, hopInputs(n, 12));

        // Reference: decode, add in fp32, divide, encode the fp32 sums with
        // the F32 codec.
        std::vector<float> decodedIn(n);
        f32->decode(packedIn.data(), n, decodedIn.data());
        std::vector<float> sums(n);
        for (size_t i = 0; i < n; ++i) {
          float sum = decodedIn[i] + floatOf(floatBitsAt(type, local, i));
          if (divisor > 1) sum = sum / static_cast<float>(divisor);
          sums[i] = sum;
        }
        Bytes expected(f32->packedBytes(n));
        f32->encode(sums.data(), n, 0, kStream, expected.data());
        Bytes expectedDecoded(n * bytesPerValue);
        codec->decode(expected.data(), n, expectedDecoded.data());

        // Out of place, with guards.
        Bytes packedOut(codec->packedBytes(n) + kGuardBytes, kGuard);
        Bytes decodedOut(n * bytesPerValue + kGuardBytes, kGuard);
        codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, kStream, divisor, packedOut.data(),
                               decodedOut.data());
        for (size_t i = codec->packedBytes(n); i < packedOut.size(); ++i) ASSERT_EQ(packedOut[i], kGuard);
        for (size_t i = n * bytesPerValue; i < decodedOut.size(); ++i) ASSERT_EQ(decodedOut[i], kGuard);
        packedOut.resize(codec->packedBytes(n));
        decodedOut.resize(n * bytesPerValue);
        EXPECT_EQ(packedOut, expected) << typeName(type) << " n " << n << " divisor " << divisor;
        EXPECT_EQ(decodedOut, expectedDecoded) << typeName(type) << " n " << n;

        // In place: packedIn == packedOut and decodedOut == local.
        Bytes inPlacePacked = packedIn;
        Bytes inPlaceLocal = local;
        codec->decodeAddEncode(inPlacePacked.data(), inPlaceLocal.data(), n, 64, RandomStream{7, 8}, divisor,
                               inPlacePacked.data(), inPlaceLocal.data());
        EXPECT_EQ(inPlacePacked, expected) << typeName(type) << " in place, n " << n;
        EXPECT_EQ(inPlaceLocal, expectedDecoded) << typeName(type) << " in place, n " << n;

        // Without decodedOut.
        Bytes noDecoded(codec->packedBytes(n));
        codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, kStream, divisor, noDecoded.data(), nullptr);
        EXPECT_EQ(noDecoded, expected);
      }
    }
  }
}

TEST(NatDetCodec, InfKeepsItsSignAndNaNStaysNaN) {
  for (const ElementType type : kNatTypes) {
    const Bytes packed = detEncode(type, {kInf, -kInf, kNaN, -kNaN});
    EXPECT_EQ(codeOf(packed, 0), 0x0ffu) << typeName(type);
    EXPECT_EQ(codeOf(packed, 1), 0x1ffu) << typeName(type);
    EXPECT_EQ(codeOf(packed, 2), 0x100u) << typeName(type);  // NaN of either sign
    EXPECT_EQ(codeOf(packed, 3), 0x100u) << typeName(type);
  }
  // Inf - Inf in the hop is NaN; Inf plus a finite value keeps its sign.
  auto codec = makeNatDetCodec(ElementType::F32);
  const Bytes packedIn = detEncode(ElementType::F32, {kInf, -kInf, -kInf});
  const std::vector<float> local = {-kInf, kInf, 3.0f};
  Bytes packedOut(36);
  codec->decodeAddEncode(packedIn.data(), local.data(), 3, 0, kStream, 1, packedOut.data(), nullptr);
  EXPECT_EQ(codeOf(packedOut, 0), 0x100u);
  EXPECT_EQ(codeOf(packedOut, 1), 0x100u);
  EXPECT_EQ(codeOf(packedOut, 2), 0x1ffu);
}

TEST(NatDetCodec, BaselineAndAvx2ClonesAgree) {
  for (const ElementType type : kNatTypes) {
    auto codec = makeNatDetCodec(type);
    const size_t n = 1007;
    const Bytes local = valuesAs(type, hopInputs(n, 31));
    const Bytes packedIn = detEncode(ElementType::F32, hopInputs(n, 32));
    Bytes encoded[2], hopped[2], decoded[2];
    for (int scalar = 0; scalar < 2; ++scalar) {
      forceScalarCodecs(scalar == 1);
      encoded[scalar].resize(codec->packedBytes(n));
      codec->encode(local.data(), n, 0, kStream, encoded[scalar].data());
      hopped[scalar].resize(codec->packedBytes(n));
      decoded[scalar].resize(n * elementBytes(type));
      codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, kStream, 3, hopped[scalar].data(),
                             decoded[scalar].data());
    }
    forceScalarCodecs(false);
    EXPECT_EQ(encoded[0], encoded[1]) << typeName(type);
    EXPECT_EQ(hopped[0], hopped[1]) << typeName(type);
    EXPECT_EQ(decoded[0], decoded[1]) << typeName(type);
  }
}

}  // namespace
}  // namespace cc
