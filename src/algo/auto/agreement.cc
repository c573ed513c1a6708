#include "algo/auto/agreement.h"

#include <string>

#include "algo/call/collectives.h"
#include "algo/call/dispatch.h"
#include "base/error.h"

namespace cc {

cc_result_t agreeOnSlowest(CollectiveState& state, const double* own, double* agreed, size_t count, const char* what) {
  SpecCodecs* exact = nullptr;
  CC_CHECK(state.specCodecs("none", &exact));
  const size_t offsets[2] = {0, count};
  const AlgorithmRun run{own, agreed, count, CC_FLOAT64, CC_MAX, nullptr, TensorLayout{count, offsets, 1}};
  // The agreement is auto's business, not the caller's: the perf tool and
  // error messages keep naming the algorithm the call ran.
  const std::string autoRan = state.lastAlgorithm;
  const cc_result_t result = runAlgorithm(state, *exact, AlgoId::Ring, false, run);
  state.lastAlgorithm = autoRan;
  return result == CC_SUCCESS ? result : addErrorContext(result, "agreeing on %s", what);
}

}  // namespace cc
