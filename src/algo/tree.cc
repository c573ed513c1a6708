// Double binary tree (NCCL's construction): two trees over the same ranks,
// each reducing half of the vector, so every rank sends and receives about
// one vector's worth while a message crosses only 2 log2 n links. Interior
// nodes re-encode their partial sums (log2 n encodes on the longest path);
// the root's encode is broadcast unchanged.
#include <algorithm>
#include <cmath>
#include <memory>

#include "algo/algo.h"
#include "algo/auto/cost_model.h"
#include "base/error.h"

namespace cc {
namespace {

constexpr uint32_t kUpStep = 1;    // partial sums, child to parent
constexpr uint32_t kDownStep = 2;  // the root's packed result, parent to child
// Chunks a rank reduces before it waits for the result of the oldest one:
// below the slots per channel, so a parent never waits for a slot its child
// can only free after the parent moved on.
constexpr size_t kTreeLag = 2;
constexpr int kTreeTag[2] = {3, 4};  // channels of tree 0 and tree 1

// The in-order binary tree rooted at 0 (NCCL's ncclGetBtree): the lowest set
// bit of a rank gives its level; leaves are the odd ranks.
TreeNode binaryTree(int nranks, int rank) {
  TreeNode node;
  if (nranks <= 1) return node;
  int bit = 1;
  while (bit < nranks && (bit & rank) == 0) bit <<= 1;
  if (rank == 0) {
    node.child[0] = bit >> 1;  // here bit is the power of two at or above nranks
    return node;
  }
  int up = (rank ^ bit) | (bit << 1);
  if (up >= nranks) up = rank ^ bit;
  node.parent = up;
  int lowbit = bit >> 1;
  if (lowbit != 0) {
    node.child[0] = rank - lowbit;
    int down = rank + lowbit;
    while (down >= nranks) {
      lowbit >>= 1;
      down = lowbit == 0 ? -1 : rank + lowbit;
    }
    node.child[1] = down;
  }
  return node;
}

// A tree chunk holds as many values as the slot holds float32 values,
// whatever the codec: an exact float32 chunk fills the slot, a compressed
// one a part of it. A chunk is received whole at every level before it goes
// on, so its bytes set the pipeline's fill; the chunks' count sets its
// latency, since each pipeline iteration waits on chains of messages
// through both trees (on 4 emulated hosts with 10 Gbit/s links, 3-6 ms an
// iteration whatever its size: exact chunks of 128 KiB took a 1 MiB call to
// 14.6 ms, chunks of 512 KiB to 3.7; docs/results.md, part 4).
size_t treeChunkValuesFor(const Prims& prims, size_t slotBytes) {
  const size_t fits = prims.chunkValues(slotBytes);
  const size_t alignment = prims.args().codec->alignmentValues();
  const size_t cap = (slotBytes - kFrameHeaderBytes) / sizeof(float) / alignment * alignment;
  return cap == 0 ? fits : std::min(fits, cap);
}

TreeNode mapTree(const TreeNode& node, int (*map)(int, int), int nranks) {
  TreeNode out;
  out.parent = node.parent < 0 ? -1 : map(node.parent, nranks);
  for (int c = 0; c < 2; ++c) out.child[c] = node.child[c] < 0 ? -1 : map(node.child[c], nranks);
  return out;
}

int mirrorRank(int rank, int nranks) { return nranks - 1 - rank; }
int shiftUp(int rank, int nranks) { return (rank + 1) % nranks; }

}  // namespace

void doubleBinaryTree(int nranks, int rank, TreeNode trees[2]) {
  trees[0] = binaryTree(nranks, rank);
  if (nranks % 2 == 1) {
    trees[1] = mapTree(binaryTree(nranks, (rank - 1 + nranks) % nranks), shiftUp, nranks);
  } else {
    trees[1] = mapTree(binaryTree(nranks, mirrorRank(rank, nranks)), mirrorRank, nranks);
  }
}

cc_result_t treeAllreduce(Prims& prims, const CollectiveArgs& args, const TreeNode trees[2],
                          const TreeChannels& channels, float* scratch) {
  const size_t chunkValues = treeChunkValuesFor(prims, channels.slotBytes);
  if (chunkValues == 0) {
    return setError(CC_INVALID_ARGUMENT,
                    "tree: one codec unit (%zu values) does not fit a %zu-byte message; raise CC_CHUNK_BYTES or "
                    "use a smaller bucket",
                    args.codec->alignmentValues(), channels.slotBytes - kFrameHeaderBytes);
  }
  // Half t of the vector goes through tree t.
  const RingLayout halves(args.count, 2, chunkValues, args.codec->alignmentValues());

  auto up = [&](int t, size_t iteration) -> cc_result_t {
    size_t first = 0, count = 0;
    halves.range(t, iteration, &first, &count);
    if (count == 0) return CC_SUCCESS;
    const TreeNode& node = trees[t];
    const bool root = node.parent < 0;
    int children[2], from[2], nchildren = 0;
    SendChannel* targets[2];
    for (int c = 0; c < 2; ++c) {
      if (node.child[c] < 0) continue;
      children[nchildren] = node.child[c];
      from[nchildren] = c;
      targets[nchildren] = channels.toChild[t][c];
      ++nchildren;
    }
    SendChannel* const* to = root ? targets : &channels.up[t];
    const int nto = root ? nchildren : 1;
    const uint32_t step = root ? kDownStep : kUpStep;
    if (nchildren == 0) return prims.encodeSend(*channels.up[t], first, count, kUpStep);
    const float* base = nullptr;
    if (nchildren == 2) {
      prims.loadLocal(first, count, scratch);
      CC_CHECK(prims.recvDecodeAccumulate(*channels.fromChild[t][from[0]], children[0], kUpStep, scratch, first,
                                          count));
      base = scratch;
    }
    const int last = nchildren - 1;
    return prims.recvReduceEncodeSend(*channels.fromChild[t][from[last]], children[last], kUpStep, base, to, nto,
                                      first, count, step, root);
  };
  auto down = [&](int t, size_t iteration) -> cc_result_t {
    const TreeNode& node = trees[t];
    if (node.parent < 0) return CC_SUCCESS;  // the root decoded its result on the way up
    size_t first = 0, count = 0;
    halves.range(t, iteration, &first, &count);
    if (count == 0) return CC_SUCCESS;
    SendChannel* targets[2];
    int nto = 0;
    for (int c = 0; c < 2; ++c) {
      if (node.child[c] >= 0) targets[nto++] = channels.toChild[t][c];
    }
    return prims.recvForwardDecode(*channels.down[t], node.parent, targets, nto, first, count, kDownStep,
                                   kDownStep, Stage::Worker);
  };

  for (size_t iteration = 0; iteration < halves.iterations + kTreeLag; ++iteration) {
    if (iteration < halves.iterations) {
      for (int t = 0; t < 2; ++t) CC_CHECK(up(t, iteration));
    }
    if (iteration >= kTreeLag) {
      for (int t = 0; t < 2; ++t) CC_CHECK(down(t, iteration - kTreeLag));
    }
  }
  return CC_SUCCESS;
}

namespace {

// This rank's place in both trees and the channels to its parents and children.
class TreeLinks : public AlgorithmChannels {
 public:
  TreeNode trees[2];
  std::unique_ptr<SendChannel> up[2], toChild[2][2];
  std::unique_ptr<RecvChannel> down[2], fromChild[2][2];
  TreeChannels view{};
};

// Slots of CC_CHUNK_BYTES / 2 bytes: chunks (treeChunkValuesFor) of
// CC_CHUNK_BYTES / 8 values, 128 K values at the default 1 MiB (512 KiB
// exact, 144 KiB of nat codes).
cc_result_t openTreeChannels(const ChannelSetup& setup, std::unique_ptr<AlgorithmChannels>* out) {
  Transport& transport = *setup.transport;
  auto links = std::make_unique<TreeLinks>();
  const size_t slot = kFrameHeaderBytes + std::max(kMinChunkBytes, setup.chunkBytes / 2 / 64 * 64);
  doubleBinaryTree(setup.nranks, setup.rank, links->trees);
  links->view.slotBytes = slot;
  for (int t = 0; t < 2; ++t) {
    const TreeNode& node = links->trees[t];
    if (node.parent >= 0) {
      CC_CHECK(transport.openSend(node.parent, kTreeTag[t], slot, kSlotsPerChannel, &links->up[t]));
      CC_CHECK(transport.openRecv(node.parent, kTreeTag[t], slot, kSlotsPerChannel, &links->down[t]));
    }
    for (int c = 0; c < 2; ++c) {
      if (node.child[c] < 0) continue;
      CC_CHECK(transport.openRecv(node.child[c], kTreeTag[t], slot, kSlotsPerChannel, &links->fromChild[t][c]));
      CC_CHECK(transport.openSend(node.child[c], kTreeTag[t], slot, kSlotsPerChannel, &links->toChild[t][c]));
    }
    links->view.up[t] = links->up[t].get();
    links->view.down[t] = links->down[t].get();
    for (int c = 0; c < 2; ++c) {
      links->view.fromChild[t][c] = links->fromChild[t][c].get();
      links->view.toChild[t][c] = links->toChild[t][c].get();
    }
  }
  *out = std::move(links);
  return CC_SUCCESS;
}

const TreeLinks* treeLinksOf(const AlgorithmChannels* own) { return dynamic_cast<const TreeLinks*>(own); }

cc_result_t runTree(const AlgorithmCall& call) {
  const TreeLinks& links = *treeLinksOf(call.own);
  return treeAllreduce(call.prims, call.args, links.trees, links.view, call.chunkScratch);
}

size_t treeChunkValues(const Prims& sizing, const RingChannels&, const AlgorithmChannels* own) {
  const TreeLinks* links = treeLinksOf(own);
  return links != nullptr ? treeChunkValuesFor(sizing, links->view.slotBytes) : 0;
}

bool treePipeline(const CostModel& model, const CallShape& call, size_t chunkValues, Pipeline* p) {
  const double n = call.nranks;
  const CodecCosts& w = model.codec[static_cast<int>(call.worker)];
  const double half = static_cast<double>(call.count) / 2;
  const double chunk = std::min<double>(half, static_cast<double>(chunkValues));
  const double depth = std::ceil(std::log2(n));
  p->iterations = ceilDiv(half, chunk);
  p->hops = 2 * depth;
  // interior in one tree (two children), a leaf in the other
  p->messages = 8;
  // per value of each half: up twice (once per tree) and down to two
  // children, so 4 packed values leave the busiest rank
  p->wireBytes = 4 * half * call.workerBytesPerValue;
  p->computeSeconds = half * (w.decodeAccumulate + w.fused + 2 * w.decode + w.encode);
  // a chunk is received whole before it goes on: up and down the tree
  p->fillBytes = (p->hops - 1) * chunk * call.workerBytesPerValue;
  return true;
}

}  // namespace

const AlgorithmRow& treeAlgorithm() {
  static const AlgorithmRow row = [] {
    AlgorithmRow r;
    r.name = "tree";
    r.cannotCarry = cannotCarryOnFloat32Chunks;  // interior nodes sum in float32
    r.run = runTree;
    r.openChannels = openTreeChannels;
    r.chunkValues = treeChunkValues;
    r.chunkScratch = true;  // a node's float32 sum of its first child and itself
    r.autoCandidate = true;
    r.pipeline = treePipeline;
    return r;
  }();
  return row;
}

}  // namespace cc
