// Writing a call's output when it is far larger than the caches. A plain
// store first reads the line it writes (read for ownership); for an output
// that is evicted long before anyone reads it again, that read is wasted
// memory traffic, and on a host whose cores all run ranks, memory traffic is
// what a large call waits for. Streaming (non-temporal) stores skip it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cc {

class Codec;

// Calls whose output has at least this many bytes decode with streaming
// stores (docs/algorithms.md, "Streaming stores"; measured in
// docs/results.md). Below it the output may still be in cache when the
// caller reads it.
constexpr size_t kStreamingStoreMinBytes = size_t{32} << 20;

// values[i] / divisor for every i, the rounding of float32 division (by a
// power of two as a product with its inverse: the same correctly rounded
// number, and cheaper).
void divideInPlace(float* values, size_t count, uint32_t divisor);

// dst[0..bytes) <- src[0..bytes), the cache lines wholly inside dst with
// streaming stores, then a store fence, so that the bytes are visible to any
// thread that is told of them afterwards.
void copyStreaming(void* dst, const void* src, size_t bytes);

// out[0..count) <- D(packed), `elementBytes` a value, the same bytes as
// codec.decode; divisor > 1 (float32 outputs only) then divides as
// divideInPlace. A concatenable codec decodes in tiles that stay in the
// first-level cache and are streamed out; any other decodes in one piece
// with plain stores.
void decodeStreaming(const Codec& codec, const void* packed, size_t count, size_t elementBytes, uint32_t divisor,
                     void* out);

}  // namespace cc
