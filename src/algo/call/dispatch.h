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

// What opening channels needs beyond the state: the bootstrap's store
// (algorithms that meet a switch admit a job through it), the timeout and
// the communicator's key.
struct ChannelContext {
  RendezvousStore* store = nullptr;
  int timeoutMs = 300000;
  uint64_t nonce = 0;
};

// Opens, on every rank alike, the ring's channels, the own channels of each
// algorithm that may run (the configured one, or every one auto may pick)
// and, under auto with CC_CHECK_CALLS=1, the announcements' channels.
cc_result_t openCollectiveChannels(CollectiveState& state, const ChannelContext& context = ChannelContext());

// The rows (bitOf) that can run on this communicator: every row, except
// those that need a setting (AlgorithmRow::requires) and opened nothing.
unsigned availableAlgorithms(const CollectiveState& state);
// Breaks every algorithm's own channels (AlgorithmChannels::abort).
void abortAlgorithmChannels(CollectiveState& state, const char* reason);

// The algorithm a call starts on, before its size is known: `requested`
// (settings.algo) where its row can carry the call or the call is exact (an
// exact reduction it cannot carry then runs on the ring); under auto, auto
// where any algorithm it may pick can carry it, else the first row that can
// (allgather for top-k). CC_UNSUPPORTED, naming the algorithms that can,
// for a compressed call the requested algorithm cannot carry.
// `available`: availableAlgorithms() (messages name only rows that can run here).
cc_result_t algorithmForCall(const CallTraits& traits, AlgoId requested, unsigned available, AlgoId* out);

// The algorithms auto may pick that can carry `traits` (bitOf), of those
// `available` (availableAlgorithms()).
unsigned autoCandidatesFor(const CallTraits& traits, unsigned available);

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
