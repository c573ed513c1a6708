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

// The ring's message payload for a link: large messages cost fewer wake-ups
// and system calls, which a CPU-bound link needs (4 x 10 Gbit/s on two
// cores, 64 MiB of nat: 1 MiB messages 1.87x over Gloo, 4 MiB 2.06x, 256
// KiB 1.43x); on a slow link they leave the start and the end of the
// pipeline exposed longer (4 x 1 Gbit/s: 128-256 KiB 245 ms, 1 MiB 260 ms,
// 4 MiB 276 ms; docs/results.md). So a message gets about
// kRingMessageSeconds of the link: the largest power of two from
// kMinRingPayloadBytes up that the link moves in that time. 0 (a whole
// slot) where that is half a slot's payload or more: the CPU-bound links'
// calibrated bandwidth (0.45-0.61 GB/s at 10 Gbit/s) straddles the 1 MiB /
// 2 MiB boundary, and both of those links are faster with 2 MiB.
constexpr double kRingMessageSeconds = 4e-3;
constexpr size_t kMinRingPayloadBytes = size_t{128} << 10;
size_t ringPayloadForLink(const LinkCosts& link, size_t slotPayloadBytes);

}  // namespace cc
