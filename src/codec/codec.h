// Codecs on host memory. A codec turns a range of local values into packed
// bytes and back; the fused hop reads packed input and local values and writes
// packed output in one pass, never materialising the partial sum.
//
// Every range handed to a codec starts at a global value index that is a
// multiple of kBlockValues, so block boundaries and Philox counters depend only
// on a value's position in the user's buffer, not on how it was chunked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "compressedcoll.h"

namespace cc {

constexpr size_t kBlockValues = 32;  // values per nat block; chunking granularity

// Where stochastic rounding draws its bits: Philox4x32-10 keyed by the
// communicator seed, counter = (value index / 4 as 64 bits, stream as 64 bits).
struct RandomStream {
  uint64_t seed;
  uint64_t stream;
};

// The stream id of one encode: unique per (collective, rank, algorithm step),
// so ranks draw independent bits and every call draws fresh ones. The value
// index inside the counter separates chunks of one step.
inline uint64_t makeStreamId(uint64_t collectiveSeq, uint32_t rank, uint32_t step) {
  return (collectiveSeq << 32) | (static_cast<uint64_t>(rank & 0xffffu) << 16) | (step & 0xffffu);
}

enum class CodecId : uint8_t { None = 0, Nat = 1 };
const char* codecName(CodecId id);
// Parses a codec name; on failure returns CC_INVALID_ARGUMENT with a message
// that lists the valid names.
cc_result_t parseCodecName(const std::string& text, CodecId* id);

// The element type of the user's buffer as the codec sees it.
enum class ElementType : uint8_t { F32, BF16, F16, F64, I8, U8, I32, U32, I64, U64 };
ElementType elementTypeOf(cc_datatype_t dtype);
size_t elementBytes(ElementType type);

class Codec {
 public:
  virtual ~Codec() = default;
  virtual CodecId id() const = 0;
  // Bytes of the packed form of `count` values.
  virtual size_t packedBytes(size_t count) const = 0;
  // packed <- C(local[0..count)); firstIndex is the global index of local[0].
  virtual void encode(const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                      void* packed) const = 0;
  // out[0..count) <- D(packed), in the user's element type.
  virtual void decode(const void* packed, size_t count, void* out) const = 0;
  // acc[0..count) += D(packed), in fp32 (the owner-side sum of `direct`).
  virtual void decodeAccumulate(const void* packed, size_t count, float* acc) const = 0;
  // The fused hop: packedOut <- C((D(packedIn) (op) local) / divisor).
  // divisor is 1 except on the last hop of AVG. When decodedOut is not null it
  // also receives D(packedOut) in the user's element type (the owner's own
  // result), saving a second pass over the chunk.
  virtual void decodeAddEncode(const void* packedIn, const void* local, size_t count,
                               uint64_t firstIndex, RandomStream rs, uint32_t divisor,
                               void* packedOut, void* decodedOut) const = 0;
};

// The codec for one call. nat applies to SUM/AVG on F32/BF16/F16; every other
// combination gets the exact codec (packed form = the raw values, hop = op).
std::unique_ptr<Codec> makeCodec(CodecId requested, cc_datatype_t dtype, cc_red_op_t op);
// Whether `requested` compresses this (dtype, op) or falls back to exact.
bool codecCompresses(CodecId requested, cc_datatype_t dtype, cc_red_op_t op);

// Which implementation the nat codec uses on this CPU ("avx2" or "scalar").
const char* natImplementationName();
// Tests force the scalar reference to compare it with the fast path.
void forceScalarCodecs(bool force);

}  // namespace cc
