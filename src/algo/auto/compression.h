// Compress only where it pays (docs/algorithms.md, "Exact or compressed").
// Under auto a call its spec would compress may run on the exact path
// instead: when CC_COMPRESS_MIN_BYTES says it is too small, or else when the
// cost model predicts the exact path at least as fast. The model and the
// call are the same on every rank, so every rank takes the same path.
#pragma once

#include "algo/call/collectives.h"
#include "codec/spec_codecs.h"

namespace cc {

// Whether `run`, which `codecs` would compress, should be compressed. Only
// dense quantizers (nat, nat_det, dithering, QSGD, TernGrad) are weighed by
// the model; sparsifiers are always compressed unless CC_COMPRESS_MIN_BYTES
// says otherwise.
cc_result_t compressionPays(CollectiveState& state, SpecCodecs& codecs, const AlgorithmRun& run, bool* pays);

}  // namespace cc
