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
// Bit 63 stays clear: streams with it set belong to per-bucket draws that are
// not values (dithering's nat-rounded norms), so the sequence number wraps
// after 2^31 collectives.
inline uint64_t makeStreamId(uint64_t collectiveSeq, uint32_t rank, uint32_t step) {
  return ((collectiveSeq & 0x7fffffffu) << 32) | (static_cast<uint64_t>(rank & 0xffffu) << 16) | (step & 0xffffu);
}

// The kind of a packed form; frames carry it (with the spec's hash) so that a
// receiver can name what it got.
enum class CodecId : uint8_t { None = 0, Nat = 1, NatDet = 2, Dither = 3, TopK = 4 };
const char* codecName(CodecId id);
// Parses a parameterless codec name (none, nat, nat_det); on failure returns
// CC_INVALID_ARGUMENT with a message that lists the valid names. Full specs
// with parameters and compositions go through parseCodecSpec (codec/spec.h).
cc_result_t parseCodecName(const std::string& text, CodecId* id);

// The element type of the user's buffer as the codec sees it.
enum class ElementType : uint8_t { F32, BF16, F16, F64, I8, U8, I32, U32, I64, U64 };
ElementType elementTypeOf(cc_datatype_t dtype);
size_t elementBytes(ElementType type);

class Codec {
 public:
  virtual ~Codec() = default;
  virtual CodecId id() const = 0;
  // Every range handed to the codec starts at a multiple of this many values
  // (a multiple of kBlockValues): a dithering bucket, a nat block.
  virtual size_t alignmentValues() const { return kBlockValues; }
  // Whether the packed form of [a, c) is the packed form of [a, b) followed by
  // that of [b, c) for every b on the alignment (nat, exact: yes; dithering,
  // whose norms lead each message: no). Error feedback works in cache-sized
  // tiles when it is.
  virtual bool concatenable() const { return true; }
  // Bytes of the packed form of `count` values (a deterministic function of
  // count: sender and receiver agree on message sizes without telling).
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

struct CodecSpec;

// The block codec of a spec's quantizer (nat, nat_det, dithering with bucket
// scope, or exact) for one (datatype, op): the codec that ring hops use. A
// dithering spec with tensor or model scope gets a codec whose bucket is the
// whole range of each encode call. Returns nullptr with CC_INVALID_ARGUMENT
// set for an invalid datatype or op.
std::unique_ptr<Codec> makeBlockCodec(const CodecSpec& spec, cc_datatype_t dtype, cc_red_op_t op);

// The codec for one call. nat applies to SUM/AVG on F32/BF16/F16; every other
// combination gets the exact codec (packed form = the raw values, hop = op).
std::unique_ptr<Codec> makeCodec(CodecId requested, cc_datatype_t dtype, cc_red_op_t op);
// Whether `requested` compresses this (dtype, op) or falls back to exact.
bool codecCompresses(CodecId requested, cc_datatype_t dtype, cc_red_op_t op);

// Whether a spec compresses this (dtype, op): SUM and AVG on F32/BF16/F16,
// any spec but none.
bool specCompresses(const CodecSpec& spec, cc_datatype_t dtype, cc_red_op_t op);

// ---------------------------------------------------------------------------
// Whole-vector codecs: the path of algorithms that encode each rank's vector
// once and move it unchanged (allgather). They take float32 input and may
// use any scope; sizes are deterministic functions of the layout, so every
// rank knows every message size.

// Where the tensors of a (possibly fused) call begin: offsets[0] = 0 <
// offsets[1] < ... < offsets[tensors] = count, each a multiple of
// kBlockValues except the last. Scope::Tensor takes one norm or selection
// per tensor, Scope::Model one for the whole call.
struct TensorLayout {
  size_t count = 0;
  const size_t* offsets = nullptr;  // tensors + 1 entries
  size_t tensors = 0;
};

class VectorCodec {
 public:
  virtual ~VectorCodec() = default;
  virtual CodecId id() const = 0;
  virtual size_t encodedBytes(const TensorLayout& layout) const = 0;
  // out <- C(values[0..count)), encodedBytes(layout) bytes. When `residual`
  // is not null it receives values - D(out) (error feedback).
  virtual void encode(const float* values, const TensorLayout& layout, RandomStream rs, void* out,
                      float* residual) const = 0;
  // acc[0..count) += D(in). Input from the network is checked: an index out
  // of range or out of order fails with CC_REMOTE_ERROR and a message.
  virtual cc_result_t decodeAccumulate(const void* in, const TensorLayout& layout, float* acc) const = 0;
};

// The whole-vector codec of a spec for float32 values: top-k, or a block
// quantizer applied per scope (bucket, tensor or model).
std::unique_ptr<VectorCodec> makeVectorCodec(const CodecSpec& spec);

// ---------------------------------------------------------------------------
// Error feedback (EF-SGD) fused into the encode pass: the residual e holds what
// earlier encodes of this rank lost. `residual` is float32, indexed like
// `local`, whose values have type `type` (F32, BF16 or F16); `f32Codec` is
// the same codec for float32 values, which encodes the float32 sums (the
// packed forms of both are the same format).
struct ResidualCodecs {
  const Codec* codec;     // for the user's type: decodes into the output
  const Codec* f32Codec;  // for float32: encodes p and decodes it back
  ElementType type;
};

// p = local + e; packed = C(p); e = p - D(packed).
void encodeWithResidual(const ResidualCodecs& codecs, const void* local, float* residual, size_t count,
                        uint64_t firstIndex, RandomStream rs, void* packed);
// s = D(packedIn) + local + e; packedOut = C(s / divisor); e = s - divisor * D(packedOut);
// decodedOut (when not null) receives D(packedOut) in the user's type.
void decodeAddEncodeWithResidual(const ResidualCodecs& codecs, const void* packedIn, const void* local,
                                 float* residual, size_t count, uint64_t firstIndex, RandomStream rs,
                                 uint32_t divisor, void* packedOut, void* decodedOut);

// The instruction sets the codecs have paths for, in increasing order. The
// nat codec has all three; the others stop at AVX2 and take it wherever the
// nat codec runs AVX2 or AVX-512.
enum class CodecIsa { Scalar, Avx2, Avx512 };
const char* codecIsaName(CodecIsa isa);
// The best this CPU runs, whatever limitCodecIsa says.
CodecIsa bestCodecIsa();
// Which implementation the nat codec uses now ("avx512", "avx2" or "scalar").
const char* natImplementationName();
// Whether the codecs take their AVX2 paths: the CPU has AVX2 + F16C and no
// limit below AVX2 is in effect. Every codec follows this one rule.
bool useAvx2Codecs();
// Whether they take their AVX-512 paths (the CPU has AVX-512 F/BW/DQ/VL and
// no limit below it is in effect); only where a path exists.
bool useAvx512Codecs();
// Tests and benchmarks cap the implementation to compare the paths:
// limitCodecIsa(Avx2) on an AVX-512 CPU runs the AVX2 path; the default is
// the best the CPU has. forceScalarCodecs(true) caps at Scalar, (false)
// lifts the cap.
void limitCodecIsa(CodecIsa ceiling);
void forceScalarCodecs(bool force);

}  // namespace cc
