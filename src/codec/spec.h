// Compression specs: the text a user writes in CC_CODEC, cc_config_t.codec or
// compressed_allreduce_ex's per-call spec, parsed into what the codecs need.
//
// Grammar (docs/wire-format.md, "Codec specs"):
//   spec      := component ('+' component)*
//   component := name (':' key '=' value (',' key '=' value)*)?
// Accepted shapes:
//   quantizer                       none | nat | nat_det | dither_nat | dither_std | qsgd | terngrad
//   randk[:ratio=r] ['+' quantizer] shared-seed mask, no indices travel
//   topk[:ratio=r|k=n] ['+' nat]    per-rank selection, indices travel
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "compressedcoll.h"

namespace cc {

enum class Quantizer : uint8_t { Exact = 0, Nat = 1, NatDet = 2, DitherNat = 3, DitherStd = 4 };
enum class Selector : uint8_t { None = 0, RandK = 1, TopK = 2 };
enum class NormKind : uint8_t { L2 = 0, Max = 1 };  // p = 2 | p = inf
// The set of values that shares one norm (dithering) or one selection (top-k).
enum class Scope : uint8_t { Bucket = 0, Tensor = 1, Model = 2 };

// Values per bucket when a dithering spec names no bucket (docs/results.md
// has the measurement behind it).
constexpr size_t kDefaultDitherBucketValues = 512;

struct DitherParams {
  NormKind norm = NormKind::L2;
  // dither_nat: s, levels {0, 2^(1-s), ..., 1/2, 1} (s + 1 of them).
  // dither_std: u, levels {0, 1/u, ..., 1} (u + 1 of them).
  uint32_t levels = 8;
  bool natNorm = false;  // the norm travels as one nat exponent byte instead of a float32
  // terngrad's optional clipping: |x| is clipped to clip * (RMS of the bucket)
  // before the norm is taken; 0 = no clipping.
  float clip = 0.0f;
};

struct CodecSpec {
  Selector selector = Selector::None;
  double ratio = 0.0;    // randk: q/d; topk: k / (values in scope), when k == 0
  uint64_t topK = 0;     // topk: an absolute k per scope instead of a ratio
  Quantizer quantizer = Quantizer::Nat;
  DitherParams dither;
  Scope scope = Scope::Bucket;
  size_t bucketValues = kDefaultDitherBucketValues;  // Scope::Bucket; a multiple of 32
  std::string label;      // the component names as written, e.g. "qsgd", "randk+nat"
  std::string canonical;  // every parameter spelled out; equal specs have equal text
  uint32_t hash = 0;      // FNV-1a of `canonical`, carried in every frame

  bool isDither() const { return quantizer == Quantizer::DitherNat || quantizer == Quantizer::DitherStd; }
  // E[C(x)] = x: nat, dithering, randk (and compositions of them), exact.
  // (terngrad's clipping biases it.)
  bool unbiased() const {
    return selector != Selector::TopK && quantizer != Quantizer::NatDet && !(isDither() && dither.clip > 0.0f);
  }
  // Whether a hop of ring (or tree) can re-encode a partial sum with this
  // spec: fixed-size, position-aligned blocks. Top-k cannot (the union of
  // indices grows hop by hop), nor can a norm whose scope is larger than a
  // pipelined chunk.
  bool hopReencodable() const {
    return selector != Selector::TopK && (!isDither() || scope == Scope::Bucket);
  }
};

// Parses `text`; on failure returns CC_INVALID_ARGUMENT with a message naming
// the problem and giving the grammar and the valid names and keys.
cc_result_t parseCodecSpec(const std::string& text, CodecSpec* spec);

// The spec of a parameterless name ("none", "nat", "nat_det"), for callers that
// need no parsing; any other name is a programming error and yields "nat".
CodecSpec simpleCodecSpec(const char* name);

}  // namespace cc
