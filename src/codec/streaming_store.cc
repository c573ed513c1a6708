#include "codec/streaming_store.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "codec/codec.h"

namespace cc {
namespace {

constexpr size_t kCacheLineBytes = 64;
// Values per tile: 8 KiB of float32, well inside a first-level cache.
constexpr size_t kTileValues = 2048;

}  // namespace

void divideInPlace(float* values, size_t count, uint32_t divisor) {
  if (divisor <= 1) return;
  if ((divisor & (divisor - 1)) == 0) {
    const float inverse = 1.0f / static_cast<float>(divisor);
    for (size_t i = 0; i < count; ++i) values[i] *= inverse;
  } else {
    const float n = static_cast<float>(divisor);
    for (size_t i = 0; i < count; ++i) values[i] /= n;
  }
}

void copyStreaming(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  auto* to = static_cast<unsigned char*>(dst);
  const auto* from = static_cast<const unsigned char*>(src);
  const size_t misalignment = reinterpret_cast<uintptr_t>(to) % kCacheLineBytes;
  const size_t head = std::min(bytes, misalignment == 0 ? 0 : kCacheLineBytes - misalignment);
  std::memcpy(to, from, head);
  to += head;
  from += head;
  bytes -= head;
  for (; bytes >= kCacheLineBytes; bytes -= kCacheLineBytes, to += kCacheLineBytes, from += kCacheLineBytes) {
    for (size_t part = 0; part < kCacheLineBytes; part += 16) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + part),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + part)));
    }
  }
  std::memcpy(to, from, bytes);
  _mm_sfence();
#else
  std::memcpy(dst, src, bytes);
#endif
}

void decodeStreaming(const Codec& codec, const void* packed, size_t count, size_t elementBytes, uint32_t divisor,
                     void* out) {
  const size_t alignment = codec.alignmentValues();
  const size_t tile = std::max(alignment, kTileValues / alignment * alignment);
  if (!codec.concatenable() || tile > kTileValues) {
    codec.decode(packed, count, out);
    if (divisor > 1) divideInPlace(static_cast<float*>(out), count, divisor);
    return;
  }
  alignas(kCacheLineBytes) unsigned char buffer[kTileValues * sizeof(float)];
  const size_t tileValues = std::min(tile, sizeof(buffer) / elementBytes);
  const auto* in = static_cast<const unsigned char*>(packed);
  auto* to = static_cast<unsigned char*>(out);
  for (size_t first = 0; first < count; first += tileValues) {
    const size_t n = std::min(tileValues, count - first);
    codec.decode(in + codec.packedBytes(first), n, buffer);
    if (divisor > 1) divideInPlace(reinterpret_cast<float*>(buffer), n, divisor);
    copyStreaming(to + first * elementBytes, buffer, n * elementBytes);
  }
}

}  // namespace cc
