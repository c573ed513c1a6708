// auto's calibration at init (docs/algorithms.md, "auto: the cost model"):
// every rank measures its codecs, the ring's links, the fan-out to every
// peer and calls of each candidate algorithm; all ranks publish their
// figures through the rendezvous store and take the slowest rank's, then fit
// each algorithm's burst and link share, so every rank holds the same model.
#pragma once

#include "algo/auto/cost_model.h"
#include "compressedcoll.h"

namespace cc {

struct CollectiveState;
class RendezvousStore;

// Collective over the communicator's ranks, whose channels are open: fills
// state.costModel; the timing calls leave the collective sequence at 0.
cc_result_t calibrateCostModel(RendezvousStore& store, CollectiveState& state);

}  // namespace cc
