#include "algo/auto/compression.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include "algo/auto/agreement.h"
#include "algo/auto/cost_model.h"
#include "algo/call/dispatch.h"
#include "base/datatypes.h"
#include "base/error.h"
#include "base/log.h"

namespace cc {
namespace {

// The predicted seconds of `run` with `codecs` (exact when !compresses) on
// every algorithm auto may pick for it, infinite on the others; `cheapest`
// the fastest of them (ring when none can carry it).
cc_result_t predictPath(CollectiveState& state, SpecCodecs& codecs, bool compresses, const AlgorithmRun& run,
                        double* seconds, AlgoId* cheapest) {
  std::fill(seconds, seconds + kMaxAlgorithms, std::numeric_limits<double>::infinity());
  *cheapest = AlgoId::Ring;
  const unsigned candidates = autoCandidatesFor(CallTraits{codecs.spec, compresses, run.datatype, run.op}, availableAlgorithms(state));
  if (candidates == 0) return CC_SUCCESS;
  CollectiveArgs args;
  CC_CHECK(collectiveArgs(state, codecs, compresses, run, &args));
  const Prims sizing(args);
  const CallShape call = callShape(state, sizing, args, candidates);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId id = static_cast<AlgoId>(i);
    if ((candidates & bitOf(id)) == 0) continue;
    seconds[i] = estimateSeconds(state.costModel, call, id);
    if (seconds[i] < best) {
      best = seconds[i];
      *cheapest = id;
    }
  }
  return CC_SUCCESS;
}

cc_result_t predict(CollectiveState& state, SpecCodecs& codecs, const AlgorithmRun& run, CompressionPrediction* out) {
  CC_CHECK(predictPath(state, codecs, true, run, out->compressedSeconds, &out->compressedAlgo));
  SpecCodecs* exact = nullptr;
  CC_CHECK(state.specCodecs("none", &exact));
  return predictPath(state, *exact, false, run, out->exactSeconds, &out->exactAlgo);
}

// Whether the model's two paths are too close to trust.
bool closeCall(const CompressionPrediction& p) {
  const double faster = std::min(p.bestExact(), p.bestCompressed());
  const double slower = std::max(p.bestExact(), p.bestCompressed());
  return slower <= kCompressionTrialFactor * faster;
}

// Every path on every algorithm the model puts within kCompressionTrialFactor
// of the fastest: the paths are compared on the algorithms each would run,
// not on the model's pick alone (on loopback at 4 KiB the exact path ran
// 9% faster on direct than nat on tree, while on the model's tree it lost).
// The exact path always tries auto's default row (the ring) too: its
// allgather through regions saves copies the model does not price (on
// loopback at 1 MiB it predicted the exact ring at 8.5 ms, which ran 1.9 ms,
// the fastest of every path).
CompressionTrials newTrials(const CompressionPrediction& p, int minTimedCalls, const std::string& kind) {
  CompressionTrials trials;
  const double fastest = std::min(p.bestExact(), p.bestCompressed());
  trials.plan.rounds = trialRoundsFor(fastest);
  auto add = [&](bool exact, AlgoId algo, double seconds) {
    trials.exact[trials.plan.candidateCount] = exact;
    addTrialCandidate(&trials.plan, algo, seconds, minTimedCalls);
  };
  add(true, p.exactAlgo, p.bestExact());
  for (const bool exact : {true, false}) {
    const double* seconds = exact ? p.exactSeconds : p.compressedSeconds;
    for (int i = 0; i < algorithmCount(); ++i) {
      const AlgoId algo = static_cast<AlgoId>(i);
      if (exact && algo == p.exactAlgo) continue;
      const bool exactDefault = exact && findAlgorithm(algo)->autoDefault && std::isfinite(seconds[i]);
      if ((seconds[i] <= kCompressionTrialFactor * fastest || exactDefault) &&
          trials.plan.candidateCount < kMaxAlgorithms) {
        add(exact, algo, seconds[i]);
      }
    }
  }
  trials.kindName = kind;
  return trials;
}

// Caches stay small for the long tail of call sizes a framework can issue.
constexpr size_t kMaxRememberedShapes = 4096;

}  // namespace

cc_result_t decideCompression(CollectiveState& state, SpecCodecs& codecs, const AlgorithmRun& run,
                              CompressionDecision* decision) {
  *decision = CompressionDecision{};
  const CodecSpec& spec = codecs.spec;
  const size_t bytes = run.count * elementBytes(elementTypeOf(run.datatype));
  const auto shape = std::make_tuple(static_cast<uint64_t>(spec.hash), static_cast<int>(run.datatype),
                                     static_cast<int>(run.op), run.count);
  const bool logIt = logLevel() >= LogLevel::Info && state.rank == 0 &&
                     state.compressionLogged.size() < 64 && state.compressionLogged.insert(shape).second;
  if (state.settings.compressMinBytes != kCompressWherePays) {
    decision->pays = bytes >= static_cast<uint64_t>(state.settings.compressMinBytes);
    if (logIt) {
      CC_INFO("auto: %zu bytes of %s: %s (CC_COMPRESS_MIN_BYTES=%lld)", bytes, spec.canonical.c_str(),
              decision->pays ? "compressed" : "exact path", static_cast<long long>(state.settings.compressMinBytes));
    }
    return CC_SUCCESS;
  }
  if (spec.selector != Selector::None) return CC_SUCCESS;

  auto known = state.compressionPredictions.find(shape);
  if (known == state.compressionPredictions.end()) {
    CompressionPrediction prediction;
    CC_CHECK(predict(state, codecs, run, &prediction));
    if (state.compressionPredictions.size() >= kMaxRememberedShapes) state.compressionPredictions.clear();
    known = state.compressionPredictions.emplace(shape, prediction).first;
  }
  const CompressionPrediction& prediction = known->second;
  decision->pays = prediction.pays();
  const char* why = "the model";
  if (state.settings.autoTrials > 0 && closeCall(prediction)) {
    const int sizeClass = trialSizeClass(run.count);
    const auto kind = std::make_tuple(static_cast<uint64_t>(spec.hash), static_cast<int>(run.datatype),
                                      static_cast<int>(run.op), sizeClass);
    auto found = state.compressionTrials.find(kind);
    if (found == state.compressionTrials.end()) {
      const std::string name = trialKindName(spec.canonical.c_str(), datatypeName(run.datatype), sizeClass);
      found = state.compressionTrials.emplace(kind, newTrials(prediction, state.settings.autoTrials, name)).first;
    }
    CompressionTrials& trials = found->second;
    if (trials.settled) {
      decision->pays = trials.compresses;
      why = "its kind's trials";
    } else {
      const int candidate = trials.progress.candidate(trials.plan);
      decision->pays = !trials.exact[candidate];
      decision->algorithm = trials.plan.candidates[candidate];
      decision->trial = &trials;
      why = "a trial";
    }
  }
  if (logIt) {
    CC_INFO("auto: %zu bytes of %s: predicted compressed %.1f us (%s), exact %.1f us (%s): %s (%s)", bytes,
            spec.canonical.c_str(), prediction.bestCompressed() * 1e6, algoName(prediction.compressedAlgo),
            prediction.bestExact() * 1e6, algoName(prediction.exactAlgo),
            decision->pays ? "compressed" : "exact path", why);
  }
  return CC_SUCCESS;
}

bool compressedWinsTrials(const AutoTrialPlan& plan, const bool* exact, const double* agreedBlockSeconds) {
  double fastest[2] = {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
  for (int c = 0; c < plan.candidateCount; ++c) {
    double& path = fastest[exact[c] ? 0 : 1];
    path = std::min(path, candidateSeconds(plan, agreedBlockSeconds, c));
  }
  return kCompressionTieFactor * fastest[1] < fastest[0];
}

cc_result_t recordCompressionTrial(CollectiveState& state, CompressionTrials* trial, double seconds) {
  ++state.autoTrialCalls;
  const AutoTrialPlan& plan = trial->plan;
  if (!trial->progress.add(plan, seconds)) return CC_SUCCESS;
  const std::vector<double>& own = trial->progress.ownBlockSeconds;
  std::vector<double> agreed(own.size());
  CC_CHECK(agreeOnSlowest(state, own.data(), agreed.data(), own.size(), "auto's exact/compressed trial times"));
  trial->settled = true;
  trial->compresses = compressedWinsTrials(plan, trial->exact, agreed.data());
  if (logLevel() >= LogLevel::Info && state.rank == 0) {
    std::string names[kMaxAlgorithms];
    const char* namePointers[kMaxAlgorithms] = {};
    for (int c = 0; c < plan.candidateCount; ++c) {
      names[c] = std::string(trial->exact[c] ? "exact on " : "compressed on ") + algoName(plan.candidates[c]);
      namePointers[c] = names[c].c_str();
    }
    CC_INFO("auto: %s: mean call over its blocks: %s: settles on the %s path", trial->kindName.c_str(),
            trialTimesText(plan, agreed.data(), namePointers).c_str(),
            trial->compresses ? "compressed" : "exact");
  }
  return CC_SUCCESS;
}

}  // namespace cc
