// Algorithms, one file each, written against the primitives.
#pragma once

#include "prims/prims.h"

namespace cc {

enum class AlgoId : uint8_t { Auto = 0, Ring = 1, Allgather = 2 };
const char* algoName(AlgoId id);

// The channels of the ring: to (rank + 1) % n and from (rank - 1 + n) % n.
struct RingChannels {
  SendChannel* toNext;
  RecvChannel* fromPrev;
};

// Bandwidth-optimal ring: reduce-scatter with a fused decode-add-encode per
// hop, the owner's final encode, then an allgather that forwards packed bytes.
// Chunks of `chunkValues` pipeline through the slots of each link.
cc_result_t ringAllreduce(Prims& prims, const CollectiveArgs& args, const RingChannels& channels);

// How the ring splits `count` values into one segment per rank and chunks;
// exposed for tests (sizes beyond 2^31 are checked without allocating).
struct RingLayout {
  // Segments and chunks start on multiples of `alignmentValues`.
  RingLayout(size_t count, int nranks, size_t chunkValues, size_t alignmentValues = kBlockValues);
  size_t segmentValues;  // a multiple of alignmentValues
  size_t iterations;     // chunks per segment
  // The values of segment `segment` handled in iteration `iteration`.
  void range(int segment, size_t iteration, size_t* first, size_t* count) const;

 private:
  size_t count_;
  size_t chunkValues_;
};

// Whole-vector path: every rank encodes its float32 vector once with a
// VectorCodec (any scope; top-k included), the encodings travel around the
// ring unchanged, and every rank decodes all n of them in rank order, so all
// ranks sum the same values in the same order and finish bit-identical.
struct VectorCall {
  const VectorCodec* codec;
  TensorLayout layout;
  const float* values;  // this rank's contribution, layout.count values
  float* residual;      // error feedback (may be null): values - D(C(values))
  float* sum;           // out: the decoded sum (divided by n for AVG)
  unsigned char* encodings;  // scratch: nranks * encodedBytes(layout) bytes
};
cc_result_t allgatherAllreduce(Prims& prims, const CollectiveArgs& args, const RingChannels& channels,
                               const VectorCall& call);

}  // namespace cc
