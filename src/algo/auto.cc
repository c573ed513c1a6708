// auto: predicts each algorithm's time from measured link and codec costs
// and runs the cheapest. The model (docs/algorithms.md) is a pipeline: a
// call is `iterations` chunks deep; in steady state a rank is busy with the
// larger of its wire time and its codec time, plus a fixed cost per message
// it sends or receives; a tree also waits for its first chunk to be stored
// and forwarded up and down before every link is busy.
#include <algorithm>
#include <cmath>

#include "algo/algo.h"

namespace cc {
namespace {

struct Pipeline {
  double hops = 0;            // sequential link crossings per chunk
  double iterations = 0;      // chunks, one after another
  double messages = 0;        // sent + received by one rank per iteration
  double wireBytes = 0;       // through one rank's busiest direction, whole call
  double computeSeconds = 0;  // one rank's codec passes, whole call
  double fillBytes = 0;       // store-and-forward of the first chunk beyond its first link
};

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

int modelIndex(AlgoId algo) { return algo == AlgoId::Ring ? 0 : algo == AlgoId::Direct ? 1 : 2; }

double ceilDiv(double a, double b) { return b <= 0 ? 0 : std::ceil(a / b); }

// The pipeline of `algo` for `call`; false for algorithms the model does not know.
bool pipelineOf(const CostModel& model, const CallShape& call, AlgoId algo, Pipeline* out) {
  const double n = call.nranks;
  const double count = static_cast<double>(call.count);
  const CodecCosts& w = model.codec[static_cast<int>(call.worker)];
  const CodecCosts& m = model.codec[static_cast<int>(call.master)];
  const double segment = count / n;  // values each rank owns
  Pipeline p;
  switch (algo) {
    case AlgoId::Ring: {
      // Every segment moves at once, so every link is busy from the start: no fill.
      p.iterations = ceilDiv(segment, static_cast<double>(call.ringChunkValues));
      p.hops = 2 * (n - 1);
      p.messages = 4 * (n - 1);
      p.wireBytes = 2 * (n - 1) * segment * call.workerBytesPerValue;
      // one encode, n - 1 fused hops (the last one the owner's), n - 1 decodes
      p.computeSeconds = segment * (w.encode + (n - 1) * w.fused + (n - 1) * w.decode);
      break;
    }
    case AlgoId::Direct: {
      p.iterations = ceilDiv(segment, static_cast<double>(call.directChunkValues));
      p.hops = 2;
      p.messages = 4 * (n - 1);
      p.wireBytes = (n - 1) * segment * (call.workerBytesPerValue + call.masterBytesPerValue);
      p.computeSeconds = segment * ((n - 1) * (w.encode + w.decodeAccumulate + m.decode) + m.encode);
      break;
    }
    case AlgoId::Tree: {
      const double half = count / 2;
      const double chunk = std::min<double>(half, static_cast<double>(call.treeChunkValues));
      const double depth = std::ceil(std::log2(n));
      p.iterations = ceilDiv(half, chunk);
      p.hops = 2 * depth;
      // interior in one tree (two children), a leaf in the other
      p.messages = 8;
      // per value of each half: up twice (once per tree) and down to two
      // children, so 4 packed values leave the busiest rank
      p.wireBytes = 4 * half * call.workerBytesPerValue;
      p.computeSeconds = half * (w.decodeAccumulate + w.fused + 2 * w.decode + w.encode);
      // a chunk is received whole before it goes on: up and down the tree
      p.fillBytes = (p.hops - 1) * chunk * call.workerBytesPerValue;
      break;
    }
    default:
      return false;
  }
  *out = p;
  return true;
}

}  // namespace

double estimateSeconds(const CostModel& model, const CallShape& call, AlgoId algo) {
  Pipeline p;
  if (!pipelineOf(model, call, algo, &p)) return INFINITY;
  const int index = modelIndex(algo);
  return seconds(model.link, p, model.fixedSeconds[index], model.burstBytes[index], model.linkShare[index]);
}

double fitBurst(const CostModel& model, const CallShape& call, AlgoId algo, double measuredSeconds) {
  Pipeline p;
  if (!pipelineOf(model, call, algo, &p)) return 0;
  const int index = modelIndex(algo);
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
  const int index = modelIndex(algo);
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
  AlgoId best = AlgoId::Direct;
  double bestSeconds = estimateSeconds(model, call, AlgoId::Direct);
  const double tree = estimateSeconds(model, call, AlgoId::Tree);
  if (tree < bestSeconds) {
    best = AlgoId::Tree;
    bestSeconds = tree;
  }
  // Ring keeps one flow per link; direct's n - 1 flows into each host and the
  // tree's uneven load cost more than the model sees when wire time decides
  // (measured on the emulated cluster, docs/results.md). So ring runs unless
  // another algorithm is clearly cheaper: by more than the model's margin.
  constexpr double kMargin = 0.9;
  return bestSeconds < kMargin * estimateSeconds(model, call, AlgoId::Ring) ? best : AlgoId::Ring;
}

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
  for (AlgoId other : {AlgoId::Ring, AlgoId::Direct, AlgoId::Tree}) {
    const double predicted = estimateSeconds(model, call, other);
    if (other != chosen && predicted <= kTrialCandidateFactor * chosenSeconds) add(other, predicted);
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

}  // namespace cc
