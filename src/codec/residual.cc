// Error feedback in the encode pass. The codecs' own encoders stay untouched:
// each tile of values is formed in a small float32 buffer (p = local + e, or
// the hop's sum), encoded, decoded back and subtracted while the tile is in
// cache. For concatenable formats (nat, nat_det, exact) tiles of kTileValues
// keep it one pass over memory; dithering, whose norms lead the message,
// works on the whole message at once.
#include <cstring>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/elements.h"
#include "codec/residual.h"
#include "codec/theory.h"

namespace cc {
namespace {

constexpr size_t kTileValues = 4096;

size_t tileValuesFor(const Codec& codec, size_t count) {
  if (!codec.concatenable()) return count;
  const size_t alignment = codec.alignmentValues();
  const size_t tile = (kTileValues + alignment - 1) / alignment * alignment;
  return tile < count ? tile : count;
}

// Per-thread scratch, kept between calls so the steady state allocates nothing.
float* scratch(int which, size_t values) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& buffer = buffers[which];
  if (buffer.size() < values) buffer.resize(values);
  return buffer.data();
}

const void* offsetValues(ElementType type, const void* values, size_t first) {
  return static_cast<const char*>(values) + first * elementBytes(type);
}

void addWidened(ElementType type, const void* local, size_t count, float* inout) {
  for (size_t i = 0; i < count; ++i) inout[i] += loadFloat(type, local, i);
}

}  // namespace

void encodeWithResidual(const ResidualCodecs& codecs, const void* local, float* residual, size_t count,
                        uint64_t firstIndex, RandomStream rs, void* packed) {
  const Codec& f32 = *codecs.f32Codec;
  const size_t tile = tileValuesFor(f32, count);
  float* p = scratch(0, tile);
  float* decoded = scratch(1, tile);
  unsigned char* out = static_cast<unsigned char*>(packed);
  for (size_t first = 0; first < count; first += tile) {
    const size_t n = count - first < tile ? count - first : tile;
    std::memcpy(p, residual + first, n * sizeof(float));
    addWidened(codecs.type, offsetValues(codecs.type, local, first), n, p);
    f32.encode(p, n, firstIndex + first, rs, out);
    f32.decode(out, n, decoded);
    for (size_t i = 0; i < n; ++i) residual[first + i] = p[i] - decoded[i];
    out += f32.packedBytes(n);
  }
}

void decodeAddEncodeWithResidual(const ResidualCodecs& codecs, const void* packedIn, const void* local,
                                 float* residual, size_t count, uint64_t firstIndex, RandomStream rs,
                                 uint32_t divisor, void* packedOut, void* decodedOut) {
  const Codec& f32 = *codecs.f32Codec;
  const size_t tile = tileValuesFor(f32, count);
  float* sum = scratch(0, tile);
  float* decoded = scratch(1, tile);
  const unsigned char* in = static_cast<const unsigned char*>(packedIn);
  unsigned char* out = static_cast<unsigned char*>(packedOut);
  const float divisorAsFloat = static_cast<float>(divisor);
  for (size_t first = 0; first < count; first += tile) {
    const size_t n = count - first < tile ? count - first : tile;
    const size_t packed = f32.packedBytes(n);
    f32.decode(in, n, sum);
    for (size_t i = 0; i < n; ++i) sum[i] += residual[first + i];
    addWidened(codecs.type, offsetValues(codecs.type, local, first), n, sum);
    // The scaled sum is encoded; the residual stays in sum units, so that the
    // output times the divisor plus every rank's residual is the exact sum.
    if (divisor > 1) {
      for (size_t i = 0; i < n; ++i) decoded[i] = sum[i] / divisorAsFloat;
      f32.encode(decoded, n, firstIndex + first, rs, out);
    } else {
      f32.encode(sum, n, firstIndex + first, rs, out);
    }
    f32.decode(out, n, decoded);
    for (size_t i = 0; i < n; ++i) residual[first + i] = sum[i] - decoded[i] * divisorAsFloat;
    if (decodedOut != nullptr) {
      codecs.codec->decode(out, n, static_cast<char*>(decodedOut) + first * elementBytes(codecs.type));
    }
    in += packed;
    out += packed;
  }
}

cc_result_t checkFeedbackConverges(const CodecSpec& spec, size_t count) {
  if (spec.selector == Selector::TopK || spec.quantizer == Quantizer::NatDet || count == 0) return CC_SUCCESS;
  const size_t scope = scopeValues(spec, count);
  const double omega = theoreticalOmega(spec, scope);
  if (omega < 1.0) return CC_SUCCESS;
  return setError(CC_INVALID_ARGUMENT,
                  "error feedback with %s diverges: its variance bound omega is %.3g on %zu values (>= 1), so the "
                  "residuals would grow every step until they overflow; use a spec with omega < 1 (nat, dither_nat "
                  "with more levels or smaller buckets, randk with ratio above (omega_q + 1) / 2), topk (biased, "
                  "made for error feedback), or no residual",
                  spec.canonical.c_str(), omega, scope);
}

}  // namespace cc
