// auto's state in one communicator: the agreed cost model, each kind of
// call's trials and watch, and counters the benchmark reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "algo/auto/cost_model.h"
#include "algo/auto/trials.h"
#include "algo/auto/watch.h"
#include "codec/codec.h"

namespace cc {

// A kind of call for auto's trials: calls of one spec, master spec,
// datatype and op whose counts share a power of two.
using AutoCallKind = std::tuple<uint64_t, uint64_t, int, int, int>;

// The model's view of one call shape: the predicted seconds of each path on
// each algorithm auto may pick for it (infinite where it may not), and each
// path's cheapest.
struct CompressionPrediction {
  double exactSeconds[kMaxAlgorithms] = {}, compressedSeconds[kMaxAlgorithms] = {};
  AlgoId exactAlgo = AlgoId::Ring, compressedAlgo = AlgoId::Ring;
  double bestExact() const { return exactSeconds[indexOf(exactAlgo)]; }
  double bestCompressed() const { return compressedSeconds[indexOf(compressedAlgo)]; }
  // Ties go to the exact path: as fast, and without the codec's error.
  bool pays() const { return bestCompressed() < bestExact(); }
};

struct AutoState {
  CostModel costModel;  // what auto decides with; identical on every rank
  // The ring's message payload, chosen from the agreed link at init
  // (ringPayloadForLink); 0: a whole slot of the ring (dispatch.cc).
  size_t ringPayloadBytes = 0;
  std::set<std::pair<size_t, CodecId>> autoLogged;  // call shapes whose choice INFO showed
  std::map<AutoCallKind, AutoTrials> autoTrials;
  // The model's exact/compressed prediction per call shape (spec, datatype,
  // op, count), kept so that a shape asks it once.
  std::map<std::tuple<uint64_t, int, int, size_t>, CompressionPrediction> compressionPredictions;
  // The exact/compressed trials per kind (spec, datatype, op, the count's
  // power of two), where the model's two predictions were close.
  std::map<std::tuple<uint64_t, int, int, int>, CompressionTrials> compressionTrials;
  // The shapes whose exact/compressed choice INFO showed.
  std::set<std::tuple<uint64_t, int, int, size_t>> compressionLogged;
  // For the perf tool: calls so far that were auto's trials, and whether the
  // last call's kind is still in its trials (the same on every rank).
  uint64_t autoTrialCalls = 0;
  bool autoTrialsPending = false;
  // The watch's challenges so far: decided, won by the runner-up, and the
  // calls the runner-up ran in them.
  uint64_t autoChallenges = 0;
  uint64_t autoSwitches = 0;
  uint64_t autoChallengeCalls = 0;
  double autoWatchFirstWindowSeconds = kWatchFirstWindowSeconds;  // tests shorten the windows
  TimedCall previousTimedCall;  // the watch's view of the latest collective
};

}  // namespace cc
