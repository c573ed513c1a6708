// Expected relative errors of compressed allreduce for i.i.d. inputs of equal
// variance on every rank, derived from REFERENCE.md's omega (unbiased) and
// delta (biased) bounds. Tests compare measured errors against these.
#pragma once

#include <cmath>
#include <string>

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

// The bound for `spec` on `algo` ("ring" or "allgather") with n ranks and
// `count` values per call.
inline double relativeErrorBound(const cc::CodecSpec& spec, const std::string& algo, int nranks, size_t count) {
  const size_t d = cc::scopeValues(spec, count);
  if (!spec.unbiased()) {
    // ||C(x) - x|| <= sqrt(1 - 1/delta) ||x|| per rank; the errors add at most
    // linearly: n sqrt(1 - 1/delta) units of ||x||, against sqrt(n) for the sum.
    const double perRank = std::sqrt(1 - 1 / cc::theoreticalDelta(spec, d));
    return perRank * std::sqrt(static_cast<double>(nranks)) + 1e-6;
  }
  if (spec.selector == cc::Selector::RandK) {
    // The shared mask errs once on the exact sum (d/q - 1); the inner
    // quantizer then runs on values scaled by d/q, kept with probability q/d.
    cc::CodecSpec inner = spec;
    inner.selector = cc::Selector::None;
    const double innerOmega = cc::theoreticalOmega(inner, cc::scopeValues(inner, count));
    const double innerBound = algo == "ring" ? ringRelativeErrorBound(innerOmega, nranks)
                                             : allgatherRelativeErrorBound(innerOmega, nranks);
    const double scale = 1 / spec.ratio;
    return std::sqrt(scale - 1 + scale * innerBound * innerBound);
  }
  const double omega = cc::theoreticalOmega(spec, d);
  return algo == "ring" ? ringRelativeErrorBound(omega, nranks) : allgatherRelativeErrorBound(omega, nranks);
}

}  // namespace cctest
