#include "algo/auto/watch.h"

#include <algorithm>
#include <cmath>

#include "algo/auto/agreement.h"
#include "algo/auto/trials.h"
#include "algo/call/collectives.h"
#include "base/error.h"
#include "base/log.h"

namespace cc {

int watchWindowCalls(double windowSeconds, double callSeconds) {
  constexpr double kMostCalls = 1 << 20;  // a call timed at (almost) nothing must not make a window endless
  if (!(callSeconds > 0)) return static_cast<int>(kMostCalls);
  const double calls = std::ceil(windowSeconds / callSeconds);
  return static_cast<int>(std::clamp(calls, double{kFewestWatchWindowCalls}, kMostCalls));
}

bool shouldChallenge(double settledWindowSeconds, double runnerUpSeconds) {
  return settledWindowSeconds > kChallengeFactor * runnerUpSeconds;
}

bool challengerWins(double settledBeforeSeconds, double challengerSeconds, double settledAfterSeconds) {
  return kSwitchFactor * challengerSeconds < std::min(settledBeforeSeconds, settledAfterSeconds);
}

void beginWindow(AutoWatch& watch, double span, double callSeconds) {
  watch.timedCalls = watchWindowCalls(span, callSeconds);
  watch.timedLeft = watch.timedCalls;
  watch.ownSeconds = 0;
}

bool watchCounts(const TimedCall& previous, const AutoTrials* kind, AlgoId ran, uint64_t seq) {
  if (previous.kind == nullptr || seq != previous.seq + 1) return false;
  return previous.kind != kind || previous.algo == ran;
}

cc_result_t recordWatch(CollectiveState& state, AutoTrials* trial, double seconds) {
  AutoWatch& watch = trial->watch;
  watch.ownSeconds += seconds;
  if (--watch.timedLeft > 0) return CC_SUCCESS;
  const double own = watch.ownSeconds / watch.timedCalls;
  double agreed = 0;
  CC_CHECK(agreeOnSlowest(state, &own, &agreed, 1, "auto's watch window"));
  ++watch.windows;
  switch (watch.stage) {
    case WatchStage::Settled:
      if (!shouldChallenge(agreed, watch.runnerUpSeconds)) {
        watch.settledSeconds = agreed;
        const double longestOverFirst = kWatchLongestWindowSeconds / kWatchFirstWindowSeconds;
        watch.windowSpan = std::min(2 * watch.windowSpan, longestOverFirst * state.autoWatchFirstWindowSeconds);
        beginWindow(watch, watch.windowSpan, watch.settledSeconds);
        return CC_SUCCESS;
      }
      watch.settledBeforeSeconds = agreed;
      watch.stage = WatchStage::Challenger;
      beginWindow(watch, state.autoWatchFirstWindowSeconds, watch.runnerUpSeconds);
      return CC_SUCCESS;
    case WatchStage::Challenger:
      watch.challengerSeconds = agreed;
      watch.stage = WatchStage::SettledAgain;
      beginWindow(watch, state.autoWatchFirstWindowSeconds, watch.settledSeconds);
      return CC_SUCCESS;
    case WatchStage::SettledAgain: {
      const AlgoId was = trial->settled;
      const bool switches = challengerWins(watch.settledBeforeSeconds, watch.challengerSeconds, agreed);
      if (logLevel() >= LogLevel::Info && state.rank == 0) {
        CC_INFO("auto: %s: %s's calls took %.1f us, over %.2fx %s's latest %.1f us: %s then took %.1f us and %s "
                "%.1f us: %s %s",
                trial->kindName.c_str(), algoName(was), watch.settledBeforeSeconds * 1e6, kChallengeFactor,
                algoName(watch.runnerUp), watch.runnerUpSeconds * 1e6, algoName(watch.runnerUp),
                watch.challengerSeconds * 1e6, algoName(was), agreed * 1e6,
                switches ? "switches to" : "keeps", algoName(switches ? watch.runnerUp : was));
      }
      ++state.autoChallenges;
      if (switches) {
        trial->settled = watch.runnerUp;
        watch.runnerUp = was;
        watch.settledSeconds = watch.challengerSeconds;
        watch.runnerUpSeconds = agreed;
        ++state.autoSwitches;
      } else {
        watch.settledSeconds = agreed;
        watch.runnerUpSeconds = watch.challengerSeconds;
      }
      watch.stage = WatchStage::Settled;
      watch.windowSpan = state.autoWatchFirstWindowSeconds;
      beginWindow(watch, watch.windowSpan, watch.settledSeconds);
      return CC_SUCCESS;
    }
  }
  return CC_SUCCESS;
}

}  // namespace cc
