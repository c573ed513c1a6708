// Dispatch: how one run reaches an algorithm. The table (registry.h) says
// which algorithms can carry a call; auto (auto/) picks among those it may
// pick; the chosen row's entry point runs on the primitives. Also the
// channels every rank opens at init for the algorithms that may run.
#pragma once

#include "algo/call/collectives.h"
#include "algo/registry.h"
#include "codec/spec_codecs.h"
#include "prims/prims.h"

namespace cc {

// Opens, on every rank alike, the ring's channels, the own channels of each
// algorithm that may run (the configured one, or every one auto may pick)
// and, under auto with CC_CHECK_CALLS=1, the announcements' channels.
cc_result_t openCollectiveChannels(CollectiveState& state);

// The algorithm a call starts on, before its size is known: `requested`
// (settings.algo) where its row can carry the call or the call is exact (an
// exact reduction it cannot carry then runs on the ring); under auto, auto
// where any algorithm it may pick can carry it, else the first row that can
// (allgather for top-k). CC_UNSUPPORTED, naming the algorithms that can,
// for a compressed call the requested algorithm cannot carry.
cc_result_t algorithmForCall(const CallTraits& traits, AlgoId requested, AlgoId* out);

// The algorithms auto may pick that can carry `traits` (bitOf).
unsigned autoCandidatesFor(const CallTraits& traits);

// The primitives' view of one run as the next collective of `state`.
cc_result_t collectiveArgs(CollectiveState& state, SpecCodecs& codecs, bool compresses, const AlgorithmRun& run,
                           CollectiveArgs* out);
// The call as auto's cost model sees it; `candidates`: the algorithms (bitOf)
// that can carry it.
CallShape callShape(const CollectiveState& state, const Prims& sizing, const CollectiveArgs& args,
                    unsigned candidates);

// Runs `run` as the next collective of `state` on `algo` (Auto: auto picks
// among the candidates that can carry it), timing it for auto's trials and
// watch where they count it.
cc_result_t runAlgorithm(CollectiveState& state, SpecCodecs& codecs, AlgoId algo, bool compresses,
                         const AlgorithmRun& run);

}  // namespace cc
