// Algorithms, one file each, written against the primitives. Each file
// also defines its row of the algorithm table (registry.h): what it can
// carry, its entry point, its channels and its pipeline in auto's model.
// Declared here: what tests, benchmarks and auto's calibration reach.
#pragma once

#include "algo/registry.h"
#include "prims/prims.h"

namespace cc {

// Bandwidth-optimal ring: reduce-scatter with a fused decode-add-encode per
// hop, the owner's final encode, then an allgather that forwards packed bytes.
// Chunks of `chunkValues` pipeline through the slots of each link.
cc_result_t ringAllreduce(RingPrims& prims, const CollectiveArgs& args, const RingChannels& channels);

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

// The channels of `direct`: to and from every peer (null at this rank's own
// index), one set for the shards going to their owners (worker codec) and one
// for the owners' packed sums coming back (master codec).
struct DirectChannels {
  size_t slotBytes;
  SendChannel* const* shardTo;     // [peer]
  RecvChannel* const* shardFrom;   // [peer]
  SendChannel* const* sumTo;       // [peer]
  RecvChannel* const* sumFrom;     // [peer]
  SendChannel* const* sumToOthers; // the n - 1 sumTo channels, from rank + 1 on
};

// The paper's Algorithm 1 with every rank the master of one shard: each rank
// encodes each peer's shard once (worker codec C_W) and sends it to its owner;
// the owner decodes the n - 1 shards, adds its own values in fp32, encodes the
// sum once (master codec C_M) and sends the packed bytes to every peer. Two
// encodes whatever n is. `scratch` holds 2 * chunk values (the owner's sum
// and, with error feedback, its decoded form).
cc_result_t directAllreduce(Prims& prims, const CollectiveArgs& args, const DirectChannels& channels,
                            float* scratch);
// direct's channels as its row opened them (`own`), or null: auto measures
// the fan-out to every peer on them.
const DirectChannels* directChannelsOf(const AlgorithmChannels* own);

// One rank's place in a binary tree: parent and up to two children (-1: none).
struct TreeNode {
  int parent = -1;
  int child[2] = {-1, -1};
};
// NCCL's double binary tree: tree 0 is the in-order binary tree rooted at
// rank 0 (leaves are the odd ranks), tree 1 its mirror (n even) or its shift
// by one rank (n odd), so that a rank interior in one tree is a leaf in the
// other (for even n; with odd n rank 0 is interior in both) and every link
// carries about half of the vector each way.
void doubleBinaryTree(int nranks, int rank, TreeNode trees[2]);

struct TreeChannels {
  size_t slotBytes;
  // Per tree: towards the parent (up: partial sums; down: the result).
  SendChannel* up[2];
  RecvChannel* down[2];
  // Per tree and child slot: from the child (partial sums), to it (result).
  RecvChannel* fromChild[2][2];
  SendChannel* toChild[2][2];
};

// Double binary tree: each tree reduces half of the vector towards its root,
// re-encoding at every interior node; the root encodes the sum once more and
// the packed bytes travel down unchanged. Chunks pipeline through both trees
// at once. `scratch` holds one chunk of values.
cc_result_t treeAllreduce(Prims& prims, const CollectiveArgs& args, const TreeNode trees[2],
                          const TreeChannels& channels, float* scratch);

}  // namespace cc
