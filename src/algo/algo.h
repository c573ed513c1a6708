// Algorithms, one file each, written against the primitives.
#pragma once

#include "prims/prims.h"

namespace cc {

enum class AlgoId : uint8_t { Auto = 0, Ring = 1 };
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
  RingLayout(size_t count, int nranks, size_t chunkValues);
  size_t segmentValues;  // a multiple of kBlockValues
  size_t iterations;     // chunks per segment
  // The values of segment `segment` handled in iteration `iteration`.
  void range(int segment, size_t iteration, size_t* first, size_t* count) const;

 private:
  size_t count_;
  size_t chunkValues_;
};

}  // namespace cc
