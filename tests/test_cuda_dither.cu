// The device dithering codec (cuda/dither_kernels.cu) against the host one
// (src/codec/dither.cc) and the host error-feedback passes, bit for bit:
// every method, dither_nat / dither_std / qsgd / terngrad with both norms,
// float32 and nat-byte norms, clipping, F32 / BF16 / F16, buckets of 32, 512,
// 8192 (the staged path) and one bucket per call, counts 0 .. 100003, inputs
// with zeros, subnormals, Inf, NaN and sums that overflow, messages of random
// bytes (corrupted indices, NaN norms with payloads), in-place hops, packed
// buffers at odd addresses. Outputs are poisoned (0xAB) before every run on
// both sides. Skips (exit 77) without a GPU.
//
// fp32 outputs that are arithmetic results (decodeAccumulate's sums, the
// residuals) must match bit for bit except where both sides hold a NaN made
// from two NaN operands: x86 then returns the first operand, and which one
// that is depends on how the host compiler ordered a commutative add; such
// differences are counted and reported, never anything else.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/dither.h"
#include "codec/elements.h"
#include "codec/spec.h"
#include "cuda/device_codec.h"
#include "cuda_test_device.h"

namespace {

constexpr int kMaxFailures = 20;
constexpr unsigned char kPoison = 0xAB;

int failures = 0;
size_t checks = 0;
size_t nanPayloadDifferences = 0;

bool cudaOk(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return true;
  std::fprintf(stderr, "FAILED: %s: %s\n", what, cudaGetErrorString(status));
  ++failures;
  return false;
}

void fail(const std::string& context, const char* what) {
  std::fprintf(stderr, "FAILED: %s: %s\n", context.c_str(), what);
  ++failures;
}

// A device allocation of `bytes` (at least 1) with host copies in and out.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    cudaOk(cudaMalloc(&base_, bytes_ + 8), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // offset: bytes past the allocation's start (an odd address for packed tests).
  void* at(size_t offset = 0) const { return static_cast<unsigned char*>(base_) + offset; }
  void poison() const { cudaOk(cudaMemset(base_, kPoison, bytes_ + 8), "cudaMemset"); }
  void upload(const void* host, size_t bytes, size_t offset = 0) const {
    if (bytes != 0) cudaOk(cudaMemcpy(at(offset), host, bytes, cudaMemcpyHostToDevice), "copy in");
  }
  std::vector<unsigned char> download(size_t bytes, size_t offset = 0) const {
    std::vector<unsigned char> out(bytes);
    if (bytes != 0) cudaOk(cudaMemcpy(out.data(), at(offset), bytes, cudaMemcpyDeviceToHost), "copy out");
    return out;
  }

 private:
  void* base_ = nullptr;
  size_t bytes_;
};

void compareBytes(const std::string& context, const char* what, const std::vector<unsigned char>& host,
                  const std::vector<unsigned char>& device) {
  ++checks;
  if (host.size() != device.size()) {
    fail(context, "size mismatch");
    return;
  }
  for (size_t i = 0; i < host.size(); ++i) {
    if (host[i] != device[i]) {
      char text[256];
      std::snprintf(text, sizeof text, "%s: byte %zu of %zu differs: host 0x%02x device 0x%02x", what, i,
                    host.size(), host[i], device[i]);
      fail(context, text);
      return;
    }
  }
}

bool isNanBits(uint32_t bits) { return (bits & 0x7fffffffu) > 0x7f800000u; }

// fp32 arrays that are sums: bit for bit, except a NaN from two NaN operands.
void compareSums(const std::string& context, const char* what, const std::vector<unsigned char>& host,
                 const std::vector<unsigned char>& device) {
  ++checks;
  if (host.size() != device.size()) {
    fail(context, "size mismatch");
    return;
  }
  for (size_t i = 0; i + 4 <= host.size(); i += 4) {
    uint32_t h, d;
    std::memcpy(&h, host.data() + i, 4);
    std::memcpy(&d, device.data() + i, 4);
    if (h == d) continue;
    if (isNanBits(h) && isNanBits(d)) {
      if (nanPayloadDifferences++ < 3 && std::getenv("CC_TEST_VERBOSE") != nullptr) {
        std::printf("tolerated: %s: %s: value %zu: host 0x%08x device 0x%08x\n", context.c_str(), what, i / 4, h, d);
      }
      continue;
    }
    char text[256];
    std::snprintf(text, sizeof text, "%s: value %zu differs: host 0x%08x device 0x%08x", what, i / 4, h, d);
    fail(context, text);
    return;
  }
}

template <class T>
std::vector<unsigned char> bytesOf(const std::vector<T>& values) {
  std::vector<unsigned char> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// ---------------------------------------------------------------------------
// Inputs

float randomValue(std::mt19937_64& rng) {
  const uint64_t r = rng();
  const uint32_t kind = static_cast<uint32_t>(r % 100);
  const float sign = (r >> 8) & 1 ? -1.0f : 1.0f;
  if (kind < 4) return sign * 0.0f;
  if (kind < 7) return sign * std::ldexp(static_cast<float>((r >> 9) % 1000 + 1), -140);  // subnormal
  const float mantissa = 1.0f + static_cast<float>((r >> 16) % 8388608) / 8388608.0f;
  const int exponent = static_cast<int>((r >> 40) % 24) - 12;
  return sign * std::ldexp(mantissa, exponent);
}

// Values of the user's type: random, plus (special) NaN, Inf, overflowing,
// all-zero and all-subnormal stretches at positions that hit several buckets.
std::vector<unsigned char> makeLocal(cc::ElementType type, size_t count, uint64_t seed, bool special) {
  std::mt19937_64 rng(seed);
  std::vector<float> values(count);
  for (float& value : values) value = randomValue(rng);
  if (special) {
    auto set = [&](size_t i, float value) {
      if (i < count) values[i] = value;
    };
    auto fill = [&](size_t from, size_t to, float value) {
      for (size_t i = from; i < to && i < count; ++i) values[i] = value;
    };
    set(40, NAN);
    set(70, INFINITY);
    fill(96, 128, 0.0f);
    fill(128, 160, 1e-41f);
    fill(160, 192, 1e30f);  // p = 2: the sum of squares overflows
    set(200, INFINITY);
    set(201, -INFINITY);
    set(5000, -NAN);
    set(9000, -INFINITY);
    fill(20000, 21100, 0.0f);     // bucket 40 of 512 values
    fill(30720, 31744, 1e-42f);   // buckets 60, 61 of 512
    fill(40960, 41472, 3e38f);    // bucket 80: finite, but the sum overflows
    set(99999, NAN);
  }
  std::vector<unsigned char> out(count * cc::elementBytes(type));
  for (size_t i = 0; i < count; ++i) cc::storeFloat(type, out.data(), i, values[i]);
  return out;
}

std::vector<float> makeResidual(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> residual(count);
  for (float& value : residual) value = randomValue(rng) * 0.01f;
  // NaNs with payloads, where the hop's incoming value, the local value or
  // neither is a NaN too (makeLocal's special positions 40, 5000, 99999).
  const uint32_t nans[] = {0x7fc0000bu, 0xffc0000bu, 0x7fa00000u};
  const size_t at[] = {40, 5000, 7};
  for (int k = 0; k < 3; ++k) {
    if (at[k] < count) std::memcpy(&residual[at[k]], &nans[k], 4);
  }
  return residual;
}

std::vector<unsigned char> randomBytes(size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> out(bytes);
  for (unsigned char& byte : out) byte = static_cast<unsigned char>(rng() >> 56);
  return out;
}

// ---------------------------------------------------------------------------
// Host references of the error-feedback passes. The dither codec must be
// handled as one message (residual.cc: "dithering, whose norms lead the
// message, works on the whole message at once"; docs/wire-format.md, "Error
// feedback"); residual.cc does that when the codec says it is not
// concatenable. When the host codec still says it is, the reference below is
// residual.cc's code with one tile.

bool residualHelpersUsable(const cc::Codec& f32) { return !f32.concatenable(); }

// residual.cc's float operations, out of line so that the first operand of
// each x86 instruction is the left operand as written there (inlined, the
// compiler may swap a commutative add, which changes which NaN comes out
// when both operands are NaNs).
__attribute__((noinline)) float hostAdd(float a, float b) { return a + b; }
__attribute__((noinline)) float hostSub(float a, float b) { return a - b; }
__attribute__((noinline)) float hostMul(float a, float b) { return a * b; }
__attribute__((noinline)) float hostDiv(float a, float b) { return a / b; }

void hostEncodeWithResidual(const cc::Codec& codec, const cc::Codec& f32, cc::ElementType type, const void* local,
                            float* residual, size_t count, uint64_t firstIndex, cc::RandomStream rs, void* packed) {
  if (residualHelpersUsable(f32)) {
    cc::encodeWithResidual(cc::ResidualCodecs{&codec, &f32, type}, local, residual, count, firstIndex, rs, packed);
    return;
  }
  if (count == 0) return;
  std::vector<float> p(count), decoded(count);
  std::memcpy(p.data(), residual, count * sizeof(float));
  for (size_t i = 0; i < count; ++i) p[i] = hostAdd(p[i], cc::loadFloat(type, local, i));
  f32.encode(p.data(), count, firstIndex, rs, packed);
  f32.decode(packed, count, decoded.data());
  for (size_t i = 0; i < count; ++i) residual[i] = hostSub(p[i], decoded[i]);
}

void hostHopWithResidual(const cc::Codec& codec, const cc::Codec& f32, cc::ElementType type, const void* packedIn,
                         const void* local, float* residual, size_t count, uint64_t firstIndex, cc::RandomStream rs,
                         uint32_t divisor, void* packedOut, void* decodedOut) {
  if (residualHelpersUsable(f32)) {
    cc::decodeAddEncodeWithResidual(cc::ResidualCodecs{&codec, &f32, type}, packedIn, local, residual, count,
                                    firstIndex, rs, divisor, packedOut, decodedOut);
    return;
  }
  if (count == 0) return;
  std::vector<float> sum(count), decoded(count);
  const float divisorAsFloat = static_cast<float>(divisor);
  f32.decode(packedIn, count, sum.data());
  for (size_t i = 0; i < count; ++i) sum[i] = hostAdd(sum[i], residual[i]);
  for (size_t i = 0; i < count; ++i) sum[i] = hostAdd(sum[i], cc::loadFloat(type, local, i));
  if (divisor > 1) {
    for (size_t i = 0; i < count; ++i) decoded[i] = hostDiv(sum[i], divisorAsFloat);
    f32.encode(decoded.data(), count, firstIndex, rs, packedOut);
  } else {
    f32.encode(sum.data(), count, firstIndex, rs, packedOut);
  }
  f32.decode(packedOut, count, decoded.data());
  for (size_t i = 0; i < count; ++i) residual[i] = hostSub(sum[i], hostMul(decoded[i], divisorAsFloat));
  if (decodedOut != nullptr) codec.decode(packedOut, count, decodedOut);
}

// ---------------------------------------------------------------------------
// One configuration

struct Variant {
  std::string name;
  cc::Quantizer quantizer;
  cc::DitherParams params;
};

const char* typeName(cc::ElementType type) {
  return type == cc::ElementType::F32 ? "f32" : type == cc::ElementType::BF16 ? "bf16" : "f16";
}

struct Case {
  const Variant* variant;
  cc::ElementType type;
  size_t bucket;
  size_t count;
  bool special;
  uint64_t seed;
};

std::string describe(const Case& c, const char* op) {
  char text[512];
  std::snprintf(text, sizeof text, "%s %s B=%zu count=%zu %s: %s", c.variant->name.c_str(), typeName(c.type),
                c.bucket, c.count, c.special ? "special" : "plain", op);
  return text;
}

bool sync(cudaStream_t stream) { return cudaOk(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }

bool ran(const std::string& context, cc_result_t result) {
  if (result == CC_SUCCESS) return true;
  fail(context, cc::lastErrorMessage().c_str());
  return false;
}

void runCase(const Case& c, cudaStream_t cudaStream) {
  void* stream = cudaStream;
  const Variant& v = *c.variant;
  auto host = cc::makeDitherCodec(v.quantizer, v.params, c.type, c.bucket);
  auto f32 = cc::makeDitherCodec(v.quantizer, v.params, cc::ElementType::F32, c.bucket);
  auto device = cc::makeDeviceDitherCodec(v.quantizer, v.params, c.type, c.bucket);
  if (!host || !f32 || !device) {
    fail(describe(c, "make"), cc::lastErrorMessage().c_str());
    return;
  }
  const size_t count = c.count;
  const size_t packed = host->packedBytes(count);
  const size_t valueBytes = count * cc::elementBytes(c.type);
  if (device->packedBytes(count) != packed || device->alignmentValues() != host->alignmentValues() ||
      device->id() != cc::CodecId::Dither) {
    fail(describe(c, "packedBytes / alignmentValues / id"), "differ from the host codec");
    return;
  }
  ++checks;
  const uint64_t firstIndex = 3 * host->alignmentValues();
  const cc::RandomStream rs{c.seed * 0x9E3779B97F4A7C15ull + 1, cc::makeStreamId(c.seed, 2, 5)};
  const cc::RandomStream rsIn{rs.seed, cc::makeStreamId(c.seed, 1, 4)};

  const std::vector<unsigned char> local = makeLocal(c.type, count, c.seed, c.special);
  const std::vector<unsigned char> other = makeLocal(c.type, count, c.seed + 7, c.special);
  DeviceBuffer dLocal(valueBytes), dPacked(packed), dPackedIn(packed), dOut(valueBytes), dAcc(count * 4),
      dResidual(count * 4);
  dLocal.upload(local.data(), valueBytes);

  // encode
  std::vector<unsigned char> hPacked(packed, kPoison);
  host->encode(local.data(), count, firstIndex, rs, hPacked.data());
  dPacked.poison();
  if (!ran(describe(c, "encode"), device->encode(dLocal.at(), count, firstIndex, rs, dPacked.at(), stream)) ||
      !sync(cudaStream)) {
    return;
  }
  compareBytes(describe(c, "encode"), "packed", hPacked, dPacked.download(packed));

  // Messages to decode: the host's, and random bytes (corrupted indices, any norm).
  const std::vector<unsigned char> noise = randomBytes(packed, c.seed + 99);
  std::mt19937_64 rng(c.seed + 5);
  std::vector<float> acc0(count);
  for (float& value : acc0) value = randomValue(rng);
  for (size_t i = 17; i < count; i += 1021) {  // NaN sums with payloads, some inside NaN buckets
    const uint32_t nan = 0x7f800000u | static_cast<uint32_t>(i) | (i % 2 == 0 ? 0x80000000u : 0u);
    std::memcpy(&acc0[i], &nan, 4);
  }
  if (count > 40) acc0[40] = -INFINITY;
  if (count > 70) acc0[70] = -INFINITY;  // + Inf: the invalid operation's default NaN
  for (int m = 0; m < 2; ++m) {
    const std::vector<unsigned char>& message = m == 0 ? hPacked : noise;
    const char* label = m == 0 ? "decode" : "decode (random bytes)";
    dPackedIn.upload(message.data(), packed);
    std::vector<unsigned char> hOut(valueBytes, kPoison);
    host->decode(message.data(), count, hOut.data());
    dOut.poison();
    if (!ran(describe(c, label), device->decode(dPackedIn.at(), count, dOut.at(), stream)) || !sync(cudaStream)) {
      return;
    }
    compareBytes(describe(c, label), "out", hOut, dOut.download(valueBytes));

    std::vector<float> hAcc = acc0;
    host->decodeAccumulate(message.data(), count, hAcc.data());
    dAcc.upload(acc0.data(), count * 4);
    if (!ran(describe(c, label), device->decodeAccumulate(dPackedIn.at(), count, static_cast<float*>(dAcc.at()),
                                                          stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareSums(describe(c, label), "decodeAccumulate", bytesOf(hAcc), dAcc.download(count * 4));
  }

  // The fused hop: the incoming message is another rank's encode (or noise).
  std::vector<unsigned char> incoming(packed, kPoison);
  {
    auto hostOther = cc::makeDitherCodec(v.quantizer, v.params, c.type, c.bucket);
    hostOther->encode(other.data(), count, firstIndex, rsIn, incoming.data());
  }
  struct HopRun {
    uint32_t divisor;
    bool decoded;
    bool noise;
  };
  const HopRun hops[] = {{1, false, false}, {1, true, false}, {3, false, false}, {3, true, false}, {1, true, true}};
  for (const HopRun& hop : hops) {
    char label[96];
    std::snprintf(label, sizeof label, "decodeAddEncode div=%u%s%s", hop.divisor, hop.decoded ? " decodedOut" : "",
                  hop.noise ? " (random-byte input)" : "");
    const std::vector<unsigned char>& in = hop.noise ? noise : incoming;
    std::vector<unsigned char> hOut(packed, kPoison), hDecoded(valueBytes, kPoison);
    host->decodeAddEncode(in.data(), local.data(), count, firstIndex, rs, hop.divisor, hOut.data(),
                          hop.decoded ? hDecoded.data() : nullptr);
    dPackedIn.upload(in.data(), packed);
    dPacked.poison();
    dOut.poison();
    if (!ran(describe(c, label),
             device->decodeAddEncode(dPackedIn.at(), dLocal.at(), count, firstIndex, rs, hop.divisor, dPacked.at(),
                                     hop.decoded ? dOut.at() : nullptr, stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareBytes(describe(c, label), "packedOut", hOut, dPacked.download(packed));
    compareBytes(describe(c, label), "decodedOut", hDecoded, dOut.download(valueBytes));
  }

  // In place: packedIn == packedOut, decodedOut == local.
  {
    std::vector<unsigned char> hMessage = incoming, hValues = local;
    host->decodeAddEncode(hMessage.data(), hValues.data(), count, firstIndex, rs, 3, hMessage.data(),
                          hValues.data());
    dPacked.upload(incoming.data(), packed);
    dOut.upload(local.data(), valueBytes);
    const std::string context = describe(c, "decodeAddEncode in place");
    if (!ran(context, device->decodeAddEncode(dPacked.at(), dOut.at(), count, firstIndex, rs, 3, dPacked.at(),
                                              dOut.at(), stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareBytes(context, "packed", hMessage, dPacked.download(packed));
    compareBytes(context, "values", hValues, dOut.download(valueBytes));
  }

  // Error feedback.
  const std::vector<float> residual0 = makeResidual(count, c.seed + 11);
  {
    std::vector<float> hResidual = residual0;
    std::vector<unsigned char> hOut(packed, kPoison);
    hostEncodeWithResidual(*host, *f32, c.type, local.data(), hResidual.data(), count, firstIndex, rs, hOut.data());
    dResidual.upload(residual0.data(), count * 4);
    dPacked.poison();
    const std::string context = describe(c, "encodeWithResidual");
    if (!ran(context, device->encodeWithResidual(dLocal.at(), static_cast<float*>(dResidual.at()), count, firstIndex,
                                                 rs, dPacked.at(), stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareBytes(context, "packed", hOut, dPacked.download(packed));
    compareSums(context, "residual", bytesOf(hResidual), dResidual.download(count * 4));
  }
  const HopRun residualHops[] = {{1, false, false}, {1, true, false}, {3, false, false}, {3, true, false}};
  for (const HopRun& hop : residualHops) {
    char label[96];
    std::snprintf(label, sizeof label, "decodeAddEncodeWithResidual div=%u%s", hop.divisor,
                  hop.decoded ? " decodedOut" : "");
    std::vector<float> hResidual = residual0;
    std::vector<unsigned char> hOut(packed, kPoison), hDecoded(valueBytes, kPoison);
    hostHopWithResidual(*host, *f32, c.type, incoming.data(), local.data(), hResidual.data(), count, firstIndex, rs,
                        hop.divisor, hOut.data(), hop.decoded ? hDecoded.data() : nullptr);
    dPackedIn.upload(incoming.data(), packed);
    dResidual.upload(residual0.data(), count * 4);
    dPacked.poison();
    dOut.poison();
    const std::string context = describe(c, label);
    if (!ran(context, device->decodeAddEncodeWithResidual(dPackedIn.at(), dLocal.at(),
                                                          static_cast<float*>(dResidual.at()), count, firstIndex, rs,
                                                          hop.divisor, dPacked.at(), hop.decoded ? dOut.at() : nullptr,
                                                          stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareBytes(context, "packedOut", hOut, dPacked.download(packed));
    compareBytes(context, "decodedOut", hDecoded, dOut.download(valueBytes));
    compareSums(context, "residual", bytesOf(hResidual), dResidual.download(count * 4));
  }
}

// Packed messages at an odd address, and a firstIndex that is not a multiple
// of 4 (outside the library's contract, but the host defines it).
void runOddCases(const Variant& v, cudaStream_t cudaStream) {
  void* stream = cudaStream;
  const size_t count = 513;
  const cc::ElementType type = cc::ElementType::F32;
  auto host = cc::makeDitherCodec(v.quantizer, v.params, type, 32);
  auto device = cc::makeDeviceDitherCodec(v.quantizer, v.params, type, 32);
  const size_t packed = host->packedBytes(count);
  const std::vector<unsigned char> local = makeLocal(type, count, 4242, true);
  DeviceBuffer dLocal(count * 4), dPacked(packed + 4), dOut(count * 4);
  dLocal.upload(local.data(), count * 4);
  const cc::RandomStream rs{0x5eed, cc::makeStreamId(9, 0, 1)};
  for (uint64_t firstIndex : {uint64_t{64}, uint64_t{2}}) {
    const std::string context = v.name + " odd address / firstIndex " + std::to_string(firstIndex);
    std::vector<unsigned char> hPacked(packed, kPoison);
    host->encode(local.data(), count, firstIndex, rs, hPacked.data());
    dPacked.poison();
    if (!ran(context, device->encode(dLocal.at(), count, firstIndex, rs, dPacked.at(1), stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareBytes(context, "encode", hPacked, dPacked.download(packed, 1));
    std::vector<unsigned char> hOut(count * 4, kPoison);
    host->decode(hPacked.data(), count, hOut.data());
    dOut.poison();
    if (!ran(context, device->decode(dPacked.at(1), count, dOut.at(), stream)) || !sync(cudaStream)) return;
    compareBytes(context, "decode", hOut, dOut.download(count * 4));
    std::vector<unsigned char> hHop = hPacked, hDecoded(count * 4, kPoison);
    host->decodeAddEncode(hPacked.data(), local.data(), count, firstIndex, rs, 3, hHop.data(), hDecoded.data());
    dOut.poison();
    if (!ran(context, device->decodeAddEncode(dPacked.at(1), dLocal.at(), count, firstIndex, rs, 3, dPacked.at(1),
                                              dOut.at(), stream)) ||
        !sync(cudaStream)) {
      return;
    }
    compareBytes(context, "hop in place", hHop, dPacked.download(packed, 1));
    compareBytes(context, "hop decodedOut", hDecoded, dOut.download(count * 4));
  }
}

// CC_DITHER_BENCH=1: device throughput of each method on 64M float32 values
// (not a test; prints milliseconds and GB/s of float32 input).
void benchmark(cudaStream_t cudaStream) {
  void* stream = cudaStream;
  const size_t count = size_t{1} << 26;
  struct Spec {
    const char* text;
    size_t bucket;
  };
  const Spec specs[] = {{"dither_nat", 512}, {"qsgd", 512}, {"terngrad:clip=2.5", 512}, {"dither_nat", 0}};
  DeviceBuffer local(count * 4), packed(count * 4), out(count * 4), residual(count * 4);
  std::vector<float> values(count);
  std::mt19937_64 rng(3);
  for (float& value : values) value = randomValue(rng);
  local.upload(values.data(), count * 4);
  cudaMemset(residual.at(), 0, count * 4);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (const Spec& spec : specs) {
    cc::CodecSpec parsed;
    cc::parseCodecSpec(spec.text, &parsed);
    auto device = cc::makeDeviceDitherCodec(parsed.quantizer, parsed.dither, cc::ElementType::F32, spec.bucket);
    const cc::RandomStream rs{1, 2};
    device->encode(local.at(), count, 0, rs, packed.at(), stream);
    auto time = [&](const char* name, auto&& call) {
      call();
      cudaEventRecord(start, cudaStream);
      const int iterations = spec.bucket == 0 ? 2 : 10;
      for (int i = 0; i < iterations; ++i) call();
      cudaEventRecord(stop, cudaStream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      ms /= static_cast<float>(iterations);
      std::printf("bench %-18s B=%-4zu %-28s %8.3f ms %7.1f GB/s\n", spec.text, spec.bucket, name, ms,
                  count * 4 / (ms * 1e6));
    };
    time("encode", [&] { device->encode(local.at(), count, 0, rs, packed.at(), stream); });
    time("decode", [&] { device->decode(packed.at(), count, out.at(), stream); });
    time("decodeAccumulate",
         [&] { device->decodeAccumulate(packed.at(), count, static_cast<float*>(out.at()), stream); });
    time("decodeAddEncode (in place)",
         [&] { device->decodeAddEncode(packed.at(), local.at(), count, 0, rs, 1, packed.at(), nullptr, stream); });
    time("encodeWithResidual", [&] {
      device->encodeWithResidual(local.at(), static_cast<float*>(residual.at()), count, 0, rs, packed.at(), stream);
    });
    cudaOk(cudaStreamSynchronize(cudaStream), "benchmark");
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void checkFactoryErrors() {
  cc::DitherParams params;
  struct Bad {
    cc::Quantizer quantizer;
    cc::ElementType type;
    size_t bucket;
    uint32_t levels;
  };
  const Bad bad[] = {{cc::Quantizer::Nat, cc::ElementType::F32, 512, 8},
                     {cc::Quantizer::DitherNat, cc::ElementType::I32, 512, 8},
                     {cc::Quantizer::DitherNat, cc::ElementType::F32, 33, 8},
                     {cc::Quantizer::DitherNat, cc::ElementType::F32, 512, 127},
                     {cc::Quantizer::DitherStd, cc::ElementType::F32, 512, 0}};
  for (const Bad& b : bad) {
    params.levels = b.levels;
    cc::clearLastError();
    ++checks;
    if (cc::makeDeviceDitherCodec(b.quantizer, params, b.type, b.bucket) != nullptr ||
        cc::lastErrorMessage().find("CC_INVALID_ARGUMENT") == std::string::npos) {
      fail("factory", "an invalid configuration did not fail with CC_INVALID_ARGUMENT");
    }
  }
}

std::vector<Variant> makeVariants() {
  const char* specs[] = {
      "dither_nat",                  // s = 8, p = 2
      "dither_nat:s=3,p=inf",        //
      "dither_nat:s=126,norm=nat",   // L = 7
      "dither_nat:s=1,p=inf,norm=nat",
      "dither_std",                  // u = 4
      "dither_std:u=65535,p=inf",    // L = 16
      "dither_std:u=5,norm=nat",
      "qsgd",                        // s = 16
      "qsgd:s=1,norm=nat",
      "terngrad",
      "terngrad:clip=2.5",
      "terngrad:clip=1,norm=nat",
  };
  std::vector<Variant> variants;
  for (const char* text : specs) {
    cc::CodecSpec spec;
    if (cc::parseCodecSpec(text, &spec) != CC_SUCCESS) {
      fail(text, cc::lastErrorMessage().c_str());
      continue;
    }
    variants.push_back(Variant{text, spec.quantizer, spec.dither});
  }
  // Clipping with p = 2 (the format allows it for any p; no spec spells it).
  cc::DitherParams clipped;
  clipped.norm = cc::NormKind::L2;
  clipped.levels = 4;
  clipped.clip = 1.5f;
  variants.push_back(Variant{"dither_std:u=4,p=2,clip=1.5", cc::Quantizer::DitherStd, clipped});
  clipped.levels = 5;
  clipped.clip = 2.0f;
  clipped.natNorm = true;
  variants.push_back(Variant{"dither_nat:s=5,p=2,clip=2,norm=nat", cc::Quantizer::DitherNat, clipped});
  return variants;
}

}  // namespace

int main() {
  if (!cctest::haveCudaDevice()) return cctest::kSkipExitCode;
  cudaStream_t stream = nullptr;
  if (!cudaOk(cudaStreamCreate(&stream), "cudaStreamCreate")) return 1;

  const char* bench = std::getenv("CC_DITHER_BENCH");
  if (bench != nullptr && bench[0] != '\0' && bench[0] != '0') {
    benchmark(stream);
    return failures == 0 ? 0 : 1;
  }
  checkFactoryErrors();
  const std::vector<Variant> variants = makeVariants();
  {
    auto probe = cc::makeDitherCodec(cc::Quantizer::DitherNat, cc::DitherParams{}, cc::ElementType::F32, 512);
    if (!residualHelpersUsable(*probe)) {
      std::printf(
          "NOTE: the host dither codec reports concatenable() == true, so residual.cc would encode it in "
          "4096-value tiles, each its own message; the residual references use the whole-message rule of "
          "docs/wire-format.md instead\n");
    }
  }
  const cc::ElementType types[] = {cc::ElementType::F32, cc::ElementType::BF16, cc::ElementType::F16};
  const size_t buckets[] = {32, 512, 8192, 0};
  const size_t counts[] = {0, 1, 31, 33, 512, 513, 8193, 100003};  // 8193: a staged single bucket with a short group
  uint64_t seed = 1;
  size_t cases = 0;
  for (const Variant& variant : variants) {
    for (cc::ElementType type : types) {
      for (size_t bucket : buckets) {
        for (size_t count : counts) {
          for (int special = 0; special < 2; ++special) {
            if (special == 1 && count < 33) continue;
            runCase(Case{&variant, type, bucket, count, special == 1, seed++}, stream);
            ++cases;
            if (failures >= kMaxFailures) {
              std::fprintf(stderr, "stopping after %d failures\n", failures);
              return 1;
            }
          }
        }
      }
    }
    runOddCases(variant, stream);
  }
  // The host's scalar reference too (the runs above use its AVX2 clone where
  // the CPU has one; the two are bit-identical by the host's own tests).
  cc::forceScalarCodecs(true);
  for (const Variant& variant : variants) {
    for (size_t bucket : {size_t{512}, size_t{0}}) {
      for (size_t count : {size_t{513}, size_t{8193}}) {
        runCase(Case{&variant, cc::ElementType::BF16, bucket, count, true, seed++}, stream);
        ++cases;
        if (failures >= kMaxFailures) {
          std::fprintf(stderr, "stopping after %d failures\n", failures);
          return 1;
        }
      }
    }
  }
  cc::forceScalarCodecs(false);
  cudaStreamDestroy(stream);
  if (failures != 0) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf(
      "device dithering is bit-identical to the host codec: %zu cases, %zu comparisons (%zu NaN-from-two-NaNs "
      "payload differences in fp32 sums tolerated)\n",
      cases, checks, nanPayloadDifferences);
  return 0;
}
