// Double binary tree (NCCL's construction): two trees over the same ranks,
// each reducing half of the vector, so every rank sends and receives about
// one vector's worth while a message crosses only 2 log2 n links. Interior
// nodes re-encode their partial sums (log2 n encodes on the longest path);
// the root's encode is broadcast unchanged.
#include "algo/algo.h"
#include "base/error.h"

namespace cc {
namespace {

constexpr uint32_t kUpStep = 1;    // partial sums, child to parent
constexpr uint32_t kDownStep = 2;  // the root's packed result, parent to child
// Chunks a rank reduces before it waits for the result of the oldest one:
// below the slots per channel, so a parent never waits for a slot its child
// can only free after the parent moved on.
constexpr size_t kTreeLag = 2;

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
  const size_t chunkValues = prims.chunkValues(channels.slotBytes);
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

}  // namespace cc
