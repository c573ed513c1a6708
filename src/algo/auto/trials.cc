#include "algo/auto/trials.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "algo/auto/agreement.h"
#include "algo/call/collectives.h"
#include "base/error.h"
#include "base/log.h"

namespace cc {

AutoTrialPlan planAutoTrials(const CostModel& model, const CallShape& call, int minTimedCalls) {
  AutoTrialPlan plan;
  const AlgoId chosen = cheapestAlgorithm(model, call);
  const double chosenSeconds = estimateSeconds(model, call, chosen);
  auto add = [&](AlgoId algo, double predicted) {
    const double fitting = predicted > 0 ? std::ceil(kTrialBlockSeconds / predicted) : kMaxTimedCallsPerBlock;
    plan.timedCalls[plan.candidateCount] =
        std::max(minTimedCalls, static_cast<int>(std::min<double>(kMaxTimedCallsPerBlock, fitting)));
    plan.candidates[plan.candidateCount++] = algo;
  };
  plan.rounds = chosenSeconds < kTrialBlockSeconds ? kShortCallTrialRounds : kLongCallTrialRounds;
  add(chosen, chosenSeconds);
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId other = static_cast<AlgoId>(i);
    if (other == chosen || !findAlgorithm(other)->autoCandidate || (call.candidates & bitOf(other)) == 0) continue;
    const double predicted = estimateSeconds(model, call, other);
    if (predicted <= kTrialCandidateFactor * chosenSeconds) add(other, predicted);
  }
  return plan;
}

int AutoTrialPlan::totalCalls() const {
  int calls = 0;
  for (int block = 0; block < blockCount(); ++block) calls += callsOfBlock(block);
  return calls;
}

double candidateSeconds(const AutoTrialPlan& plan, const double* agreedBlockSeconds, int candidate) {
  double sum = 0;
  int blocks = 0;
  for (int block = candidate; block < plan.blockCount(); block += plan.candidateCount) {
    sum += agreedBlockSeconds[block];
    ++blocks;
  }
  return blocks > 0 ? sum / blocks : INFINITY;
}

AlgoId fastestInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds) {
  AlgoId fastest = plan.candidates[0];
  double fastestSeconds = INFINITY;
  for (int c = 0; c < plan.candidateCount; ++c) {
    const double seconds = candidateSeconds(plan, agreedBlockSeconds, c);
    if (seconds < fastestSeconds) {
      fastest = plan.candidates[c];
      fastestSeconds = seconds;
    }
  }
  const double modelsChoiceSeconds = candidateSeconds(plan, agreedBlockSeconds, 0);
  return kTrialTieFactor * fastestSeconds < modelsChoiceSeconds ? fastest : plan.candidates[0];
}

AlgoId runnerUpInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds, AlgoId settled) {
  AlgoId runnerUp = AlgoId::Auto;
  double runnerUpSeconds = INFINITY;
  for (int c = 0; c < plan.candidateCount; ++c) {
    const double seconds = candidateSeconds(plan, agreedBlockSeconds, c);
    if (plan.candidates[c] != settled && (runnerUp == AlgoId::Auto || seconds < runnerUpSeconds)) {
      runnerUp = plan.candidates[c];
      runnerUpSeconds = seconds;
    }
  }
  return runnerUp;
}

cc_result_t recordTrial(CollectiveState& state, AutoTrials* trial, double seconds) {
  const AutoTrialPlan& plan = trial->plan;
  if (trial->callInBlock > 0) trial->blockSeconds += seconds;
  if (++trial->callInBlock < plan.callsOfBlock(trial->block)) return CC_SUCCESS;
  trial->ownBlockSeconds.push_back(trial->blockSeconds / plan.timedCalls[plan.candidateOfBlock(trial->block)]);
  trial->blockSeconds = 0;
  trial->callInBlock = 0;
  if (++trial->block < plan.blockCount()) return CC_SUCCESS;
  const size_t count = trial->ownBlockSeconds.size();
  std::vector<double> agreed(count);
  CC_CHECK(agreeOnSlowest(state, trial->ownBlockSeconds.data(), agreed.data(), count, "auto's trial times"));
  trial->settled = fastestInTrials(plan, agreed.data());
  AutoWatch& watch = trial->watch;
  watch.runnerUp = runnerUpInTrials(plan, agreed.data(), trial->settled);
  for (int c = 0; c < plan.candidateCount; ++c) {
    const double seconds = candidateSeconds(plan, agreed.data(), c);
    if (plan.candidates[c] == trial->settled) watch.settledSeconds = seconds;
    if (plan.candidates[c] == watch.runnerUp) watch.runnerUpSeconds = seconds;
  }
  watch.windowSpan = state.autoWatchFirstWindowSeconds;
  beginWindow(watch, watch.windowSpan, watch.settledSeconds);
  if (logLevel() >= LogLevel::Info && state.rank == 0) {
    std::string means;
    for (int c = 0; c < plan.candidateCount; ++c) {
      char text[64];
      std::snprintf(text, sizeof(text), "%s%s %.1f us (%d calls; blocks", c ? ", " : "", algoName(plan.candidates[c]),
                    candidateSeconds(plan, agreed.data(), c) * 1e6, plan.timedCalls[c]);
      means += text;
      for (int block = c; block < plan.blockCount(); block += plan.candidateCount) {
        std::snprintf(text, sizeof(text), " %.0f", agreed[block] * 1e6);
        means += text;
      }
      means += ")";
    }
    CC_INFO("auto: %s: mean call over its blocks: %s: settles on %s", trial->kindName.c_str(), means.c_str(),
            algoName(trial->settled));
  }
  return CC_SUCCESS;
}

}  // namespace cc
