#include "algo/auto/compression.h"

#include <limits>
#include <tuple>

#include "algo/auto/cost_model.h"
#include "algo/call/dispatch.h"
#include "base/datatypes.h"
#include "base/error.h"
#include "base/log.h"

namespace cc {
namespace {

// The predicted seconds of the cheapest algorithm auto may pick for `run`
// with `codecs` (exact when !compresses); infinite when none can carry it.
cc_result_t cheapestSeconds(CollectiveState& state, SpecCodecs& codecs, bool compresses, const AlgorithmRun& run,
                            double* seconds, AlgoId* algo) {
  *seconds = std::numeric_limits<double>::infinity();
  *algo = AlgoId::Ring;
  const unsigned candidates = autoCandidatesFor(CallTraits{codecs.spec, compresses, run.datatype, run.op}, availableAlgorithms(state));
  if (candidates == 0) return CC_SUCCESS;
  CollectiveArgs args;
  CC_CHECK(collectiveArgs(state, codecs, compresses, run, &args));
  const Prims sizing(args);
  const CallShape call = callShape(state, sizing, args, candidates);
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId id = static_cast<AlgoId>(i);
    if ((candidates & bitOf(id)) == 0) continue;
    const double predicted = estimateSeconds(state.costModel, call, id);
    if (predicted < *seconds) {
      *seconds = predicted;
      *algo = id;
    }
  }
  return CC_SUCCESS;
}

// Caches stay small for the long tail of call sizes a framework can issue.
constexpr size_t kMaxRememberedShapes = 4096;

}  // namespace

cc_result_t compressionPays(CollectiveState& state, SpecCodecs& codecs, const AlgorithmRun& run, bool* pays) {
  const CodecSpec& spec = codecs.spec;
  const size_t bytes = run.count * elementBytes(elementTypeOf(run.datatype));
  const auto shape = std::make_tuple(static_cast<uint64_t>(spec.hash), static_cast<int>(run.datatype),
                                     static_cast<int>(run.op), run.count);
  const bool logIt = logLevel() >= LogLevel::Info && state.rank == 0 &&
                     state.compressionLogged.size() < 64 && state.compressionLogged.insert(shape).second;
  if (state.settings.compressMinBytes != kCompressWherePays) {
    *pays = bytes >= static_cast<uint64_t>(state.settings.compressMinBytes);
    if (logIt) {
      CC_INFO("auto: %zu bytes of %s: %s (CC_COMPRESS_MIN_BYTES=%lld)", bytes, spec.canonical.c_str(),
              *pays ? "compressed" : "exact path", static_cast<long long>(state.settings.compressMinBytes));
    }
    return CC_SUCCESS;
  }
  if (spec.selector != Selector::None) {
    *pays = true;
    return CC_SUCCESS;
  }
  auto known = state.compressionPays.find(shape);
  if (known != state.compressionPays.end()) {
    *pays = known->second;
    return CC_SUCCESS;
  }
  double compressedSeconds = 0, exactSeconds = 0;
  AlgoId compressedAlgo = AlgoId::Ring, exactAlgo = AlgoId::Ring;
  CC_CHECK(cheapestSeconds(state, codecs, true, run, &compressedSeconds, &compressedAlgo));
  SpecCodecs* exact = nullptr;
  CC_CHECK(state.specCodecs("none", &exact));
  CC_CHECK(cheapestSeconds(state, *exact, false, run, &exactSeconds, &exactAlgo));
  // Ties go to the exact path: as fast, and without the codec's error.
  *pays = compressedSeconds < exactSeconds;
  if (state.compressionPays.size() >= kMaxRememberedShapes) state.compressionPays.clear();
  state.compressionPays.emplace(shape, *pays);
  if (logIt) {
    CC_INFO("auto: %zu bytes of %s: predicted compressed %.1f us (%s), exact %.1f us (%s): %s", bytes,
            spec.canonical.c_str(), compressedSeconds * 1e6, algoName(compressedAlgo), exactSeconds * 1e6,
            algoName(exactAlgo), *pays ? "compressed" : "exact path");
  }
  return CC_SUCCESS;
}

}  // namespace cc
