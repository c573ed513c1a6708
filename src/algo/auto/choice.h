// auto's decision for one call, and what the call's time teaches it: where
// the model is sure it decides alone; else a kind of call runs its trials,
// settles, and its watch keeps timing the settled algorithm
// (docs/algorithms.md, "Trials" and "Watch").
#pragma once

#include <cstdint>

#include "algo/auto/cost_model.h"
#include "algo/auto/trials.h"
#include "algo/registry.h"
#include "prims/prims.h"

namespace cc {

struct CollectiveState;

// The algorithm for `call` (args: the collective's spec hashes, datatype
// and op, which with the count's power of two make its kind). `*trial` is
// set where the call's time counts, in its kind's trials or watch: hand it
// to recordAutoCall with the time.
AlgoId autoChoice(CollectiveState& state, const CallShape& call, const CollectiveArgs& args, AutoTrials** trial);
// After every collective: `trial` (null when the call's time does not
// count) takes the `seconds` of collective `seq`, which ran `ran`.
cc_result_t recordAutoCall(CollectiveState& state, AutoTrials* trial, AlgoId ran, uint64_t seq, double seconds);

}  // namespace cc
