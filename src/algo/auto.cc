// auto: predicts each algorithm's time from measured link and codec costs
// and runs the cheapest. The model (docs/algorithms.md) is a pipeline: a
// call is `iterations` chunks deep; each chunk crosses `hops` sequential
// links (a latency each, paid once as the pipeline fills), and in steady
// state a rank is busy, per chunk, with the larger of its wire time and its
// compute time, plus a fixed cost per message it sends or receives.
#include <algorithm>
#include <cmath>

#include "algo/algo.h"

namespace cc {
namespace {

struct Pipeline {
  double hops = 0;        // sequential link crossings per chunk
  double iterations = 0;  // chunks, one after another
  double messages = 0;    // sent + received by one rank per iteration
  double wireBytes = 0;   // through one rank's busiest direction per iteration
  double computeSeconds = 0;  // one rank's codec passes per iteration
  double fillSeconds = 0;     // store-and-forward of the first chunk beyond its first link
};

// `fixed`: the measured time of a minimal call, when there is one; it
// replaces the fill latency and the first chunk's messages.
double seconds(const LinkCosts& link, const Pipeline& p, double fixed) {
  if (p.iterations <= 0) return 0;
  const double busy = std::max(p.wireBytes / link.bytesPerSecond, p.computeSeconds);
  const double perMessages = p.messages * link.perMessage;
  if (fixed > 0) return fixed + p.fillSeconds + p.iterations * busy + (p.iterations - 1) * perMessages;
  return p.hops * link.latency + p.fillSeconds + p.iterations * (busy + perMessages);
}

int fixedIndex(AlgoId algo) { return algo == AlgoId::Ring ? 0 : algo == AlgoId::Direct ? 1 : 2; }

constexpr double kManyFlowsCost = 1.15;

double ceilDiv(double a, double b) { return b <= 0 ? 0 : std::ceil(a / b); }

}  // namespace

double estimateSeconds(const CostModel& model, const CallShape& call, AlgoId algo) {
  const double n = call.nranks;
  const double count = static_cast<double>(call.count);
  const CodecCosts& w = model.codec[static_cast<int>(call.worker)];
  const CodecCosts& m = model.codec[static_cast<int>(call.master)];
  const double segment = count / n;  // values each rank owns
  Pipeline p;
  switch (algo) {
    case AlgoId::Ring: {
      const double chunk = std::min<double>(segment, static_cast<double>(call.ringChunkValues));
      p.iterations = ceilDiv(segment, chunk);
      p.hops = 2 * (n - 1);
      p.messages = 4 * (n - 1);
      p.wireBytes = 2 * (n - 1) * chunk * call.workerBytesPerValue;
      // one encode, n - 1 fused hops (the last one the owner's), n - 1 decodes
      p.computeSeconds = chunk * (w.encode + (n - 1) * w.fused + (n - 1) * w.decode);
      break;
    }
    case AlgoId::Direct: {
      const double chunk = std::min<double>(segment, static_cast<double>(call.directChunkValues));
      p.iterations = ceilDiv(segment, chunk);
      p.hops = 2;
      p.messages = 4 * (n - 1);
      // n - 1 concurrent flows into each shaped host link reach less of it
      // than ring's one: 1.15x the bytes, measured on the emulated cluster
      // (docs/results.md, 1-4 MiB at 4 x 1 Gbit/s)
      p.wireBytes = kManyFlowsCost * (n - 1) * chunk * (call.workerBytesPerValue + call.masterBytesPerValue);
      p.computeSeconds = chunk * ((n - 1) * (w.encode + w.decodeAccumulate + m.decode) + m.encode);
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
      // per chunk of each half: 4 messages out (up twice, down to two
      // children) and 4 in
      p.wireBytes = 4 * chunk * call.workerBytesPerValue;
      p.computeSeconds = chunk * (w.decodeAccumulate + w.fused + 2 * w.decode + w.encode);
      // a chunk is received whole before it goes on: up and down the tree
      p.fillSeconds = (p.hops - 1) * chunk * call.workerBytesPerValue / model.link.bytesPerSecond;
      break;
    }
    default:
      return INFINITY;
  }
  return seconds(model.link, p, model.fixedSeconds[fixedIndex(algo)]);
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

}  // namespace cc
