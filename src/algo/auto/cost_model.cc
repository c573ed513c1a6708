// The model's arithmetic: a pipeline's seconds, the cheapest candidate, and
// the fits of each algorithm's burst and link share to measured calls.
#include "algo/auto/cost_model.h"

#include <algorithm>
#include <cmath>

namespace cc {
namespace {

// `fixed`: the measured time of a minimal call, when there is one; it
// replaces the hops' latency and the first chunk's messages. `burst`: the
// bytes the busiest link passes before its rate applies; `share`: the part
// of that rate the algorithm's flows reach.
double seconds(const LinkCosts& link, const Pipeline& p, double fixed, double burst, double share) {
  if (p.iterations <= 0) return 0;
  const double rate = link.bytesPerSecond * share;
  const double rated = std::max(0.0, p.wireBytes - burst);
  const double busy = std::max(rated / rate, p.computeSeconds);
  // Store-and-forward waits on the rate only for the share of the bytes
  // beyond the burst.
  const double fill = p.wireBytes > 0 ? p.fillBytes / rate * (rated / p.wireBytes) : 0;
  const double perMessages = p.messages * link.perMessage;
  if (fixed > 0) return fixed + fill + busy + (p.iterations - 1) * perMessages;
  return p.hops * link.latency + fill + busy + p.iterations * perMessages;
}

// The pipeline of `algo` for `call`; false for algorithms the model does not know.
bool pipelineOf(const CostModel& model, const CallShape& call, AlgoId algo, Pipeline* out) {
  const AlgorithmRow* row = findAlgorithm(algo);
  return row != nullptr && row->pipeline != nullptr && row->pipeline(model, call, call.chunkValuesOf(algo), out);
}

}  // namespace

double estimateSeconds(const CostModel& model, const CallShape& call, AlgoId algo) {
  Pipeline p;
  if (!pipelineOf(model, call, algo, &p)) return INFINITY;
  const int index = indexOf(algo);
  return seconds(model.link, p, model.fixedSeconds[index], model.burstBytes[index], model.linkShare[index]);
}

double fitBurst(const CostModel& model, const CallShape& call, AlgoId algo, double measuredSeconds) {
  Pipeline p;
  if (!pipelineOf(model, call, algo, &p)) return 0;
  const int index = indexOf(algo);
  auto predict = [&](double burst) {
    return seconds(model.link, p, model.fixedSeconds[index], burst, model.linkShare[index]);
  };
  // The prediction falls as the burst grows: bisect.
  double low = 0, high = p.wireBytes;
  if (predict(low) <= measuredSeconds) return low;
  if (predict(high) >= measuredSeconds) return high;
  for (int i = 0; i < 50; ++i) {
    const double middle = 0.5 * (low + high);
    (predict(middle) > measuredSeconds ? low : high) = middle;
  }
  return 0.5 * (low + high);
}

void fitLinkUse(CostModel* model, AlgoId algo, const MeasuredCall& shorter, const MeasuredCall& longer) {
  const int index = indexOf(algo);
  // How much slower than measured the model predicts the longer call when
  // the shorter one fixes the burst. A larger share lowers the fitted burst
  // by as many bytes as the shorter call gains, and the longer call has more
  // bytes past it, so this falls as the share grows: bisect (in log space,
  // since shares are ratios).
  auto longerExcess = [&](double share) {
    model->linkShare[index] = share;
    model->burstBytes[index] = fitBurst(*model, shorter.call, algo, shorter.seconds);
    return estimateSeconds(*model, longer.call, algo) - longer.seconds;
  };
  double low = std::log(kMinLinkShare), high = std::log(kMaxLinkShare);
  double share = 0;
  if (longerExcess(std::exp(low)) <= 0) {
    share = std::exp(low);
  } else if (longerExcess(std::exp(high)) >= 0) {
    share = std::exp(high);
  } else {
    for (int i = 0; i < 40; ++i) {
      const double middle = 0.5 * (low + high);
      (longerExcess(std::exp(middle)) > 0 ? low : high) = middle;
    }
    share = std::exp(0.5 * (low + high));
  }
  longerExcess(share);
}

AlgoId cheapestAlgorithm(const CostModel& model, const CallShape& call) {
  AlgoId fallback = AlgoId::Auto, best = AlgoId::Auto;
  double bestSeconds = INFINITY;
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId id = static_cast<AlgoId>(i);
    const AlgorithmRow& row = *findAlgorithm(id);
    if (!row.autoCandidate || (call.candidates & bitOf(id)) == 0) continue;
    if (row.autoDefault) {
      if (fallback == AlgoId::Auto) fallback = id;
      continue;
    }
    const double predicted = estimateSeconds(model, call, id);
    if (best == AlgoId::Auto || predicted < bestSeconds) {
      best = id;
      bestSeconds = predicted;
    }
  }
  if (fallback == AlgoId::Auto) return best == AlgoId::Auto ? AlgoId::Ring : best;
  if (best == AlgoId::Auto) return fallback;
  // Ring keeps one flow per link; direct's n - 1 flows into each host and the
  // tree's uneven load cost more than the model sees when wire time decides
  // (measured on the emulated cluster, docs/results.md). So ring runs unless
  // another algorithm is clearly cheaper: by more than the model's margin.
  constexpr double kMargin = 0.9;
  return bestSeconds < kMargin * estimateSeconds(model, call, fallback) ? best : fallback;
}

}  // namespace cc
