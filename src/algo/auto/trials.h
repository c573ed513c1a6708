// auto's trials: where the model's margin is too thin to trust, the first
// calls of a kind run each close algorithm for a block of calls, timed, and
// the kind then settles on the fastest (docs/algorithms.md, "Trials"). The
// candidates are the model's choice, first, and every algorithm it predicts
// within kTrialCandidateFactor of that choice's time. The candidates' blocks
// take turns for several rounds, so that a spell of load on a shared host
// hits some blocks, not one candidate: kShortCallTrialRounds where the
// model's choice is predicted shorter than kTrialBlockSeconds (such calls
// are the noisiest, and their rounds cheap), else kLongCallTrialRounds. A
// block starts with an untimed call, which absorbs what the previous
// algorithm left in flight, then runs enough timed calls to span about
// kTrialBlockSeconds by the model, at least the configured number
// (CC_AUTO_TRIALS) and at most kMaxTimedCallsPerBlock.
#pragma once

#include <string>
#include <vector>

#include "algo/auto/cost_model.h"
#include "algo/auto/watch.h"
#include "algo/registry.h"

namespace cc {

struct CollectiveState;

constexpr double kTrialCandidateFactor = 3.0;
constexpr int kShortCallTrialRounds = 5, kLongCallTrialRounds = 3;
constexpr double kTrialBlockSeconds = 0.05;
constexpr int kMaxTimedCallsPerBlock = 64;
struct AutoTrialPlan {
  AlgoId candidates[kMaxAlgorithms] = {};
  int candidateCount = 0;
  int timedCalls[kMaxAlgorithms] = {};  // per block of each candidate
  int rounds = 0;
  int blockCount() const { return rounds * candidateCount; }
  int candidateOfBlock(int block) const { return block % candidateCount; }
  int callsOfBlock(int block) const { return 1 + timedCalls[candidateOfBlock(block)]; }
  int totalCalls() const;
};
AutoTrialPlan planAutoTrials(const CostModel& model, const CallShape& call, int minTimedCalls);
// The pieces of a plan, for trials of other choices than the algorithm
// (compression.h): the rounds for calls predicted at `seconds`, and a
// candidate whose blocks span about kTrialBlockSeconds at `predictedSeconds`
// a call (at least minTimedCalls, at most kMaxTimedCallsPerBlock).
int trialRoundsFor(double seconds);
void addTrialCandidate(AutoTrialPlan* plan, AlgoId algo, double predictedSeconds, int minTimedCalls);
// One candidate's time: the mean of its blocks' mean call times (every block
// has as many calls), stalls included: an algorithm that stalls now and then
// costs its calls the stalls, which a median of blocks hid (direct on 8
// emulated hosts at 4 MiB: blocks of 32 to 121 ms, a median block of 33 ms
// where the benchmark's rounds took 43 ms; docs/algorithms.md, "Trials").
// `agreedBlockSeconds` holds plan.blockCount() of them in the order of the
// blocks (each the slowest rank's).
double candidateSeconds(const AutoTrialPlan& plan, const double* agreedBlockSeconds, int candidate);
// The candidate with the lowest time, where it beats the model's choice (the
// first candidate) by more than kTrialTieFactor and by more than
// kTrialSignificance standard errors of their paired differences (block of
// round r against block of round r, neighbours in time); else the model's
// choice. Trials within a few percent are noise on a shared host: at 1 MiB
// on 4 emulated hosts with 100 us links they put direct at 4902 us a call
// against ring's 4937, and the rounds then took 5006 against 4434. Inside
// DDP a bucket's calls share the cores with backward: at 16 MiB on 4
// emulated hosts the switch's blocks spread over 96-135 ms, the ring's over
// 103-108, means 3% apart, and the ring settled on that noise; the switch's
// whole step was then the faster (docs/algorithms.md, "Trials").
constexpr double kTrialTieFactor = 1.03;
constexpr double kTrialSignificance = 1.0;
// Whether candidate `faster`'s blocks beat candidate `slower`'s by more than
// kTrialSignificance standard errors of the rounds' paired differences (with
// one round: whether its block is shorter).
bool clearlyFaster(const AutoTrialPlan& plan, const double* agreedBlockSeconds, int faster, int slower);
AlgoId fastestInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds);
// The runner-up: the candidate other than `settled` with the lowest time
// (Auto where there is none).
AlgoId runnerUpInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds, AlgoId settled);

// For CC_DEBUG=INFO: each candidate (named by names[c]) with its time, its
// timed calls per block and its blocks' times.
std::string trialTimesText(const AutoTrialPlan& plan, const double* agreedBlockSeconds, const char* const* names);

// A kind of call groups counts that share a power of two: the class is
// that power (-1 for 0 values); the name, for CC_DEBUG=INFO, says the codec,
// the type and the counts.
int trialSizeClass(size_t count);
std::string trialKindName(const char* codec, const char* datatype, int sizeClass);

// How far a kind's trials went, on this rank.
struct TrialProgress {
  int block = 0;                   // the block of the next trial call
  int callInBlock = 0;             // its place there (0: the untimed call)
  double blockSeconds = 0;         // this rank's timed calls of the block so far
  std::vector<double> ownBlockSeconds;  // this rank's mean call time in each finished block
  // Counts a trial call of `seconds`; true once it ended the plan's last block.
  bool add(const AutoTrialPlan& plan, double seconds);
  int candidate(const AutoTrialPlan& plan) const { return plan.candidateOfBlock(block); }
};

// The trials of one kind of call, then its watch.
struct AutoTrials {
  AutoTrialPlan plan;
  TrialProgress progress;
  AlgoId settled = AlgoId::Auto;   // Auto: trials run, or the model decides (one candidate)
  AutoWatch watch;                 // once settled
  std::string kindName;            // for CC_DEBUG=INFO: codec and counts
};

// The exact/compressed trials of one kind of call (spec, datatype, op, and
// the count's power of two). Each candidate is a path on an algorithm:
// plan.candidates[c] is the algorithm, exact[c] whether the path is exact.
struct CompressionTrials {
  AutoTrialPlan plan;
  bool exact[kMaxAlgorithms] = {};
  TrialProgress progress;
  bool settled = false;
  bool compresses = false;  // the settled path
  std::string kindName;
};

// A trial call that took `seconds`: after the last block the ranks agree on
// the blocks' times and the kind settles.
cc_result_t recordTrial(CollectiveState& state, AutoTrials* trial, double seconds);

}  // namespace cc
