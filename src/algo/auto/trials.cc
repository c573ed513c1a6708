#include "algo/auto/trials.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "algo/auto/agreement.h"
#include "algo/call/collectives.h"
#include "base/error.h"
#include "base/log.h"

namespace cc {

int trialRoundsFor(double seconds) {
  return seconds < kTrialBlockSeconds ? kShortCallTrialRounds : kLongCallTrialRounds;
}

void addTrialCandidate(AutoTrialPlan* plan, AlgoId algo, double predictedSeconds, int minTimedCalls) {
  const double fitting =
      predictedSeconds > 0 ? std::ceil(kTrialBlockSeconds / predictedSeconds) : kMaxTimedCallsPerBlock;
  plan->timedCalls[plan->candidateCount] =
      std::max(minTimedCalls, static_cast<int>(std::min<double>(kMaxTimedCallsPerBlock, fitting)));
  plan->candidates[plan->candidateCount++] = algo;
}

AutoTrialPlan planAutoTrials(const CostModel& model, const CallShape& call, int minTimedCalls) {
  AutoTrialPlan plan;
  const AlgoId chosen = cheapestAlgorithm(model, call);
  const double chosenSeconds = estimateSeconds(model, call, chosen);
  plan.rounds = trialRoundsFor(chosenSeconds);
  addTrialCandidate(&plan, chosen, chosenSeconds, minTimedCalls);
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId other = static_cast<AlgoId>(i);
    if (other == chosen || !findAlgorithm(other)->autoCandidate || (call.candidates & bitOf(other)) == 0) continue;
    const double predicted = estimateSeconds(model, call, other);
    if (predicted <= kTrialCandidateFactor * chosenSeconds) addTrialCandidate(&plan, other, predicted, minTimedCalls);
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

bool clearlyFaster(const AutoTrialPlan& plan, const double* agreedBlockSeconds, int faster, int slower) {
  const int rounds = plan.rounds;
  if (rounds <= 0) return false;
  const auto gainIn = [&](int round) {
    const double* blocks = agreedBlockSeconds + round * plan.candidateCount;
    return blocks[slower] - blocks[faster];
  };
  double sum = 0;
  for (int r = 0; r < rounds; ++r) sum += gainIn(r);
  const double mean = sum / rounds;
  if (rounds == 1) return mean > 0;
  double squares = 0;
  for (int r = 0; r < rounds; ++r) squares += (gainIn(r) - mean) * (gainIn(r) - mean);
  const double standardError = std::sqrt(squares / (rounds - 1) / rounds);
  return mean > kTrialSignificance * standardError;
}

AlgoId fastestInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds) {
  int fastest = 0;
  double fastestSeconds = INFINITY;
  for (int c = 0; c < plan.candidateCount; ++c) {
    const double seconds = candidateSeconds(plan, agreedBlockSeconds, c);
    if (seconds < fastestSeconds) {
      fastest = c;
      fastestSeconds = seconds;
    }
  }
  const double modelsChoiceSeconds = candidateSeconds(plan, agreedBlockSeconds, 0);
  const bool beatsTheModel = kTrialTieFactor * fastestSeconds < modelsChoiceSeconds &&
                             clearlyFaster(plan, agreedBlockSeconds, fastest, 0);
  return plan.candidates[beatsTheModel ? fastest : 0];
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

std::string trialTimesText(const AutoTrialPlan& plan, const double* agreedBlockSeconds, const char* const* names) {
  std::string text;
  for (int c = 0; c < plan.candidateCount; ++c) {
    char part[64];
    std::snprintf(part, sizeof(part), "%s%s %.1f us (%d calls; blocks", c ? ", " : "", names[c],
                  candidateSeconds(plan, agreedBlockSeconds, c) * 1e6, plan.timedCalls[c]);
    text += part;
    for (int block = c; block < plan.blockCount(); block += plan.candidateCount) {
      std::snprintf(part, sizeof(part), " %.0f", agreedBlockSeconds[block] * 1e6);
      text += part;
    }
    text += ")";
  }
  return text;
}

int trialSizeClass(size_t count) {
  return count == 0 ? -1 : 63 - __builtin_clzll(static_cast<unsigned long long>(count));
}

std::string trialKindName(const char* codec, const char* datatype, int sizeClass) {
  char name[128];
  std::snprintf(name, sizeof(name), "%s %s, %llu to %llu values", codec, datatype,
                sizeClass < 0 ? 0ull : 1ull << sizeClass, sizeClass < 0 ? 0ull : (2ull << sizeClass) - 1);
  return name;
}

bool TrialProgress::add(const AutoTrialPlan& plan, double seconds) {
  if (callInBlock > 0) blockSeconds += seconds;
  if (++callInBlock < plan.callsOfBlock(block)) return false;
  ownBlockSeconds.push_back(blockSeconds / plan.timedCalls[plan.candidateOfBlock(block)]);
  blockSeconds = 0;
  callInBlock = 0;
  return ++block >= plan.blockCount();
}

cc_result_t recordTrial(CollectiveState& state, AutoTrials* trial, double seconds) {
  const AutoTrialPlan& plan = trial->plan;
  if (!trial->progress.add(plan, seconds)) return CC_SUCCESS;
  const std::vector<double>& own = trial->progress.ownBlockSeconds;
  std::vector<double> agreed(own.size());
  CC_CHECK(agreeOnSlowest(state, own.data(), agreed.data(), own.size(), "auto's trial times"));
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
    const char* names[kMaxAlgorithms] = {};
    for (int c = 0; c < plan.candidateCount; ++c) names[c] = algoName(plan.candidates[c]);
    const std::string means = trialTimesText(plan, agreed.data(), names);
    CC_INFO("auto: %s: mean call over its blocks: %s: settles on %s", trial->kindName.c_str(), means.c_str(),
            algoName(trial->settled));
  }
  return CC_SUCCESS;
}

}  // namespace cc
