#include "algo/auto/choice.h"

#include <cstdio>
#include <string>

#include "algo/call/collectives.h"
#include "base/datatypes.h"
#include "base/error.h"
#include "base/log.h"

namespace cc {
namespace {

AlgoId choose(CollectiveState& state, const CallShape& call, const CollectiveArgs& args, AutoTrials** trial) {
  *trial = nullptr;
  if (state.settings.autoTrials == 0) return cheapestAlgorithm(state.costModel, call);
  const int sizeClass = trialSizeClass(call.count);
  const AutoCallKind kind{args.specHash, args.masterSpecHash, static_cast<int>(args.datatype),
                          static_cast<int>(args.op), sizeClass};
  auto [it, added] = state.autoTrials.try_emplace(kind);
  AutoTrials& trials = it->second;
  if (added) {
    trials.plan = planAutoTrials(state.costModel, call, state.settings.autoTrials);
    trials.kindName = trialKindName(codecName(call.worker), datatypeName(args.datatype), sizeClass);
  }
  // Where the model is sure (no other algorithm within the factor), it keeps
  // deciding call by call.
  if (trials.plan.candidateCount == 1) return cheapestAlgorithm(state.costModel, call);
  *trial = &trials;
  if (trials.settled != AlgoId::Auto) {
    return trials.watch.stage == WatchStage::Challenger ? trials.watch.runnerUp : trials.settled;
  }
  return trials.plan.candidates[trials.progress.candidate(trials.plan)];
}

}  // namespace

AlgoId autoChoice(CollectiveState& state, const CallShape& call, const CollectiveArgs& args, AutoTrials** trial) {
  const AlgoId algo = choose(state, call, args, trial);
  if (logLevel() >= LogLevel::Info && state.rank == 0 && state.autoLogged.size() < 64 &&
      state.autoLogged.emplace(call.count, call.worker).second) {
    std::string predicted;
    for (int i = 0; i < algorithmCount(); ++i) {
      const AlgoId id = static_cast<AlgoId>(i);
      if (!findAlgorithm(id)->autoCandidate || (call.candidates & bitOf(id)) == 0) continue;
      char text[64];
      std::snprintf(text, sizeof(text), "%s%s %.1f us", predicted.empty() ? "" : ", ", algoName(id),
                    estimateSeconds(state.costModel, call, id) * 1e6);
      predicted += text;
    }
    CC_INFO("auto: %zu values of %s: predicted %s: model picks %s, runs %s%s", call.count, codecName(call.worker),
            predicted.c_str(), algoName(cheapestAlgorithm(state.costModel, call)), algoName(algo),
            *trial ? " (a trial)" : "");
  }
  return algo;
}

cc_result_t recordAutoCall(CollectiveState& state, AutoTrials* trial, AlgoId ran, uint64_t seq, double seconds) {
  // Taken first: an agreement inside the bookkeeping below is a collective too.
  const TimedCall previous = state.previousTimedCall;
  state.previousTimedCall = TimedCall{seq, trial, ran};
  if (trial != nullptr && trial->settled == AlgoId::Auto) {
    ++state.autoTrialCalls;
    CC_CHECK(recordTrial(state, trial, seconds));
  } else if (trial != nullptr) {
    if (trial->watch.stage == WatchStage::Challenger) ++state.autoChallengeCalls;
    if (watchCounts(previous, trial, ran, seq)) CC_CHECK(recordWatch(state, trial, seconds));
  }
  state.autoTrialsPending = trial != nullptr && trial->settled == AlgoId::Auto;
  return CC_SUCCESS;
}

}  // namespace cc
