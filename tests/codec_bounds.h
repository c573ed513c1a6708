// Expected relative errors of compressed allreduce for i.i.d. inputs of equal
// variance on every rank, derived from REFERENCE.md's omega (unbiased) and
// delta (biased) bounds. Tests compare measured errors against these.
//
// Variances are in units of one rank's ||x||^2 (zero-mean i.i.d. inputs: the
// exact sum of m ranks has m units); an encode of y with variance parameter w
// adds w (||y||^2 + the noise y already carries).
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "algo/algo.h"
#include "codec/spec.h"
#include "codec/theory.h"

namespace cctest {

// Ring: the encode of partial sum S_k adds variance <= w (||S_k||^2 + Var_{k-1}),
// so Var_k = (1 + w) Var_{k-1} + w k (in units of one rank's ||x||^2), and the
// exact sum has n units.
inline double ringRelativeErrorBound(double omega, int nranks) {
  double variance = 0;
  for (int k = 1; k <= nranks; ++k) variance = (1 + omega) * variance + omega * k;
  return std::sqrt(variance / nranks);
}

// Allgather: every rank encodes once: Var = w n units.
inline double allgatherRelativeErrorBound(double omega, int nranks) {
  return std::sqrt(omega * nranks / nranks);
}

// Direct (the paper's Algorithm 1): the owner's own shard is exact, the other
// n - 1 shards are encoded once by C_W, then C_M encodes the sum (n units plus
// the workers' noise): Var = w_W (n - 1) + w_M (n + w_W (n - 1)).
inline double directRelativeErrorBound(double workerOmega, double masterOmega, int nranks) {
  if (nranks <= 1) return 0;
  const double n = nranks;
  const double workers = workerOmega * (n - 1);
  return std::sqrt((workers + masterOmega * (n + workers)) / n);
}
inline double directRelativeErrorBound(double omega, int nranks) {
  return directRelativeErrorBound(omega, omega, nranks);
}

// Tree `t` of the double binary tree as parent / children arrays.
inline std::vector<cc::TreeNode> binaryTreeNodes(int nranks, int t) {
  std::vector<cc::TreeNode> nodes(nranks);
  for (int rank = 0; rank < nranks; ++rank) {
    cc::TreeNode trees[2];
    cc::doubleBinaryTree(nranks, rank, trees);
    nodes[rank] = trees[t];
  }
  return nodes;
}

// One tree: node v with subtree size m_v re-encodes D(children) + its own
// values: Var_v = sum_c Var_c + w (m_v + sum_c Var_c) (a leaf: w); the root's
// encode is the result. Returns the root's variance.
inline double treeRootVariance(double omega, int nranks, int t) {
  if (nranks <= 1) return 0;
  const std::vector<cc::TreeNode> nodes = binaryTreeNodes(nranks, t);
  std::function<void(int, int*, double*)> walk = [&](int v, int* size, double* variance) {
    int m = 1;
    double children = 0;
    for (int c : nodes[v].child) {
      if (c < 0) continue;
      int childSize = 0;
      double childVariance = 0;
      walk(c, &childSize, &childVariance);
      m += childSize;
      children += childVariance;
    }
    *size = m;
    *variance = children + omega * (m + children);
  };
  for (int v = 0; v < nranks; ++v) {
    if (nodes[v].parent < 0) {
      int size = 0;
      double variance = 0;
      walk(v, &size, &variance);
      return variance;
    }
  }
  return INFINITY;  // no root: not a tree
}

// Each tree carries half of the vector: the worse of the two.
inline double treeRelativeErrorBound(double omega, int nranks) {
  if (nranks <= 1) return 0;
  const double worst = std::max(treeRootVariance(omega, nranks, 0), treeRootVariance(omega, nranks, 1));
  return std::sqrt(worst / nranks);
}

// The bound of an unbiased spec's quantizer stage on `algo` ("ring",
// "allgather", "direct", "tree"); direct's owners use `masterOmega`.
inline double algorithmRelativeErrorBound(const std::string& algo, double omega, double masterOmega, int nranks) {
  if (algo == "ring") return ringRelativeErrorBound(omega, nranks);
  if (algo == "direct") return directRelativeErrorBound(omega, masterOmega, nranks);
  if (algo == "tree") return treeRelativeErrorBound(omega, nranks);
  return allgatherRelativeErrorBound(omega, nranks);
}

// The bound for `spec` on `algo` ("ring", "allgather", "direct" or "tree")
// with n ranks and `count` values per call; `master` is direct's C_M (the
// spec itself when the communicator sets none; randk's master is its inner
// quantizer).
inline double relativeErrorBound(const cc::CodecSpec& spec, const cc::CodecSpec& master, const std::string& algo,
                                 int nranks, size_t count) {
  const size_t d = cc::scopeValues(spec, count);
  if (!spec.unbiased()) {
    // ||C(x) - x|| <= sqrt(1 - 1/delta) ||x|| per rank; the errors add at most
    // linearly: n sqrt(1 - 1/delta) units of ||x||, against sqrt(n) for the sum.
    const double perRank = std::sqrt(1 - 1 / cc::theoreticalDelta(spec, d));
    return perRank * std::sqrt(static_cast<double>(nranks)) + 1e-6;
  }
  double masterOmega = 0;
  double masterBiased = 0;  // sqrt(1 - 1/delta_M) of a biased master
  const bool separateMaster = algo == "direct" && master.canonical != spec.canonical;
  if (separateMaster) {
    const size_t dm = cc::scopeValues(master, count);
    if (master.unbiased()) {
      masterOmega = cc::theoreticalOmega(master, dm);
    } else {
      masterBiased = std::sqrt(1 - 1 / cc::theoreticalDelta(master, dm));
    }
  }
  auto withBiasedMaster = [&](double bound) {
    // The master's deterministic loss is at most masterBiased of the sum it
    // encodes (exact sum plus the workers' noise): the triangle inequality.
    return bound + masterBiased * (1 + bound);
  };
  if (spec.selector == cc::Selector::RandK) {
    // The shared mask errs once on the exact sum (d/q - 1); the inner
    // quantizer then runs on values scaled by d/q, kept with probability q/d.
    cc::CodecSpec inner = spec;
    inner.selector = cc::Selector::None;
    const double innerOmega = cc::theoreticalOmega(inner, cc::scopeValues(inner, count));
    const double innerBound = withBiasedMaster(
        algorithmRelativeErrorBound(algo, innerOmega, separateMaster ? masterOmega : innerOmega, nranks));
    const double scale = 1 / spec.ratio;
    return std::sqrt(scale - 1 + scale * innerBound * innerBound);
  }
  const double omega = cc::theoreticalOmega(spec, d);
  return withBiasedMaster(algorithmRelativeErrorBound(algo, omega, separateMaster ? masterOmega : omega, nranks));
}

inline double relativeErrorBound(const cc::CodecSpec& spec, const std::string& algo, int nranks, size_t count) {
  return relativeErrorBound(spec, spec, algo, nranks, count);
}

}  // namespace cctest
