// auto's watch over a settled kind of call (docs/algorithms.md, "Watch").
// Trials see about a second of a kind's first calls; on a shared host an
// algorithm's speed shifts between levels over tens of seconds (the tree at
// 4 KiB on 4 emulated hosts with 100 us links: 1416 us a call in its trials,
// 2023 us over the benchmark's rounds that followed, where direct took
// 1486). So the settled algorithm's calls are timed in windows, agreed like
// the trials' blocks. A window above kChallengeFactor times the runner-up's
// latest time makes the runner-up run one window (the challenge), then the
// settled algorithm one more; the runner-up takes over where it beat both of
// the settled algorithm's windows by kSwitchFactor, so that one stalled
// window alone does not swap them. Windows span kWatchFirstWindowSeconds of
// calls after a challenge and double after each quiet one up to
// kWatchLongestWindowSeconds, so that a kind that keeps its speed pays one
// agreement (one exact call of a double) every few seconds. A window has at
// least kFewestWatchWindowCalls timed calls: one call of 64 MiB on 4
// emulated hosts is too noisy to decide on (ring 302 ms, direct 272, ring
// 334 in three one-call windows switched to direct, which the rounds then
// measured at 1.06x ring).
#pragma once

#include <cstdint>

#include "algo/registry.h"
#include "compressedcoll.h"

namespace cc {

struct CollectiveState;
struct AutoTrials;

constexpr double kWatchFirstWindowSeconds = 0.25, kWatchLongestWindowSeconds = 4.0;
constexpr int kFewestWatchWindowCalls = 3;
constexpr double kChallengeFactor = 1.1, kSwitchFactor = 1.05;
// Timed calls in a window of `windowSeconds` of calls taking `callSeconds`:
// at least kFewestWatchWindowCalls.
int watchWindowCalls(double windowSeconds, double callSeconds);
bool shouldChallenge(double settledWindowSeconds, double runnerUpSeconds);
bool challengerWins(double settledBeforeSeconds, double challengerSeconds, double settledAfterSeconds);

// Which window runs now.
enum class WatchStage {
  Settled,       // the settled algorithm's calls, until one window is slow
  Challenger,    // the runner-up's window
  SettledAgain,  // the settled algorithm's window after it
};
struct AutoWatch {
  AlgoId runnerUp = AlgoId::Auto;
  double settledSeconds = 0, runnerUpSeconds = 0;  // each one's latest agreed mean call
  WatchStage stage = WatchStage::Settled;
  double windowSpan = 0;     // of the Settled windows
  int timedCalls = 0;        // in the current window
  int timedLeft = 0;
  double ownSeconds = 0;     // this rank's timed calls of the window so far
  double settledBeforeSeconds = 0, challengerSeconds = 0;  // agreed, of the challenge under way
  uint64_t windows = 0;      // ended so far
};

// The communicator's latest collective as the watch sees it: its sequence
// number, the kind whose trials or watch timed it (null where none did: a
// forced algorithm, an agreement, a call the model decides alone) and the
// algorithm it ran.
struct TimedCall {
  uint64_t seq = 0;
  const AutoTrials* kind = nullptr;
  AlgoId algo = AlgoId::Auto;
};
// Whether a settled kind's call `seq` on `ran` counts in its watch, after
// `previous`: only right after a call auto timed, of another kind on any
// algorithm or of this kind on the same one. A call after any other
// collective (the watch's own agreement, a forced algorithm, a caller's
// barrier) or after its own kind's call on another algorithm absorbs what
// that left in flight or idle, as a trial block's first call does. Calls of
// other timed kinds in between count as in the trials: DDP's buckets take
// turns, and a bucket that only ever followed another size would not be
// watched (docs/algorithms.md, "Watch").
bool watchCounts(const TimedCall& previous, const AutoTrials* kind, AlgoId ran, uint64_t seq);

// The next window of the watch: enough timed calls of `callSeconds` to span `span`.
void beginWindow(AutoWatch& watch, double span, double callSeconds);
// A call of a settled kind that took `seconds` and counts in its watch
// (watchCounts): at the end of a window the ranks agree on its time and the
// watch moves on.
cc_result_t recordWatch(CollectiveState& state, AutoTrials* trial, double seconds);

}  // namespace cc
