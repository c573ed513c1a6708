// Compress only where it pays (docs/algorithms.md, "Exact or compressed").
// Under auto a call its spec would compress may run on the exact path
// instead: when CC_COMPRESS_MIN_BYTES says it is too small, or else when the
// cost model predicts the exact path at least as fast. Where the model's
// two predictions lie within kCompressionTrialFactor of each other it is not
// trusted: near the break-even it has mispredicted by 2x (a shaped link's
// burst it did not see), so the first calls of the kind time both paths, in
// blocks that take turns, and the kind settles on the faster. The model and
// the agreed trial times are the same on every rank, so every rank takes the
// same path.
#pragma once

#include "algo/auto/trials.h"
#include "algo/call/collectives.h"
#include "codec/spec_codecs.h"

namespace cc {

constexpr double kCompressionTrialFactor = 3.0;
// The compressed path wins the trials only when its fastest candidate beats
// the exact path's fastest by more than this: it costs accuracy, so it must
// buy a clear gain, and below a millisecond two paths' trial times on a
// shared host differ by up to 10% from one run to the next (loopback, 4
// KiB: compressed on direct settled at 279 us a call against the exact
// path's 250 us on tree in the benchmark that followed).
constexpr double kCompressionTieFactor = 1.10;
// Which path the agreed block times favour: true for the compressed one.
bool compressedWinsTrials(const AutoTrialPlan& plan, const bool* exact, const double* agreedBlockSeconds);

// What a call does: compressed or exact; during a trial, on which
// algorithm, and `trial` set so that the call's time is recorded.
struct CompressionDecision {
  bool pays = true;
  AlgoId algorithm = AlgoId::Auto;
  CompressionTrials* trial = nullptr;
};

// Whether `run`, which `codecs` would compress, should be compressed. Only
// dense quantizers (nat, nat_det, dithering, QSGD, TernGrad) are weighed;
// sparsifiers are always compressed unless CC_COMPRESS_MIN_BYTES says
// otherwise.
cc_result_t decideCompression(CollectiveState& state, SpecCodecs& codecs, const AlgorithmRun& run,
                              CompressionDecision* decision);
// A trial call (decision.trial) that took `seconds`: after the last block
// the ranks agree on the blocks' times and the kind settles.
cc_result_t recordCompressionTrial(CollectiveState& state, CompressionTrials* trial, double seconds);

}  // namespace cc
