// auto's cost model (docs/algorithms.md, "auto: the cost model"). Its inputs
// are measured at init on every rank and the slowest rank's figures are
// agreed (calibration.h), so every rank makes the same choice for the same
// call. Each algorithm describes itself to the model as a pipeline (its
// row's `pipeline` hook, in the algorithm's own file); the model turns a
// pipeline into seconds.
#pragma once

#include <cmath>
#include <cstddef>

#include "algo/registry.h"
#include "codec/codec.h"

namespace cc {

struct LinkCosts {
  double latency = 50e-6;        // seconds: one small message, one hop, sender to receiver
  double perMessage = 10e-6;     // seconds of a rank's time per message sent or received
  double bytesPerSecond = 1e9;   // one rank's link, each direction
};
// Seconds per value of one rank's codec passes (float32).
struct CodecCosts {
  double encode = 1e-9;
  double decode = 1e-9;
  double decodeAccumulate = 1e-9;
  double fused = 2e-9;  // decode-add-encode
};
constexpr int kCodecFamilies = 5;  // indexed by CodecId
// Per-algorithm entries are indexed by AlgoId; those of algorithms auto
// does not pick stay at their defaults.
struct CostModel {
  LinkCosts link;
  CodecCosts codec[kCodecFamilies];
  // Seconds of one call of 1024 nat values on each candidate, measured at
  // init: each algorithm's fixed cost (its hops, messages and wake-ups on
  // this transport and machine). 0: use hops x latency.
  double fixedSeconds[kMaxAlgorithms] = {};
  // Per algorithm, the bytes its busiest link passes in one call before the
  // link's rate applies: a shaped link (a token bucket such as tc's tbf, a
  // switch port's buffer) lets a burst through at once and refills while the
  // link waits on other hops, which helps the tree (idle between levels) more
  // than ring or direct (busy throughout). 0 on an unshaped link.
  double burstBytes[kMaxAlgorithms] = {};
  // Per algorithm, the share of the link's measured rate its flows reach
  // once the burst is spent: ring's one flow per link gets about all of it;
  // direct's n - 1 flows into every host and out of it less. Fitted with the
  // burst (fitLinkUse) to the calls of kBurstCalibrationValues and
  // kRateCalibrationValues.
  double linkShare[kMaxAlgorithms] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  // The seconds of those calls (trimmed means), as measured at init.
  double burstCalibrationSeconds[kMaxAlgorithms] = {};
  double rateCalibrationSeconds[kMaxAlgorithms] = {};
};
static_assert(kMaxAlgorithms == 16, "linkShare's initializer has one 1 per algorithm");

// One call as the model sees it.
struct CallShape {
  int nranks = 2;
  size_t count = 0;
  CodecId worker = CodecId::Nat, master = CodecId::Nat;
  double workerBytesPerValue = 4, masterBytesPerValue = 4;
  size_t chunkValues[kMaxAlgorithms] = {};  // per algorithm (its row's chunkValues)
  // The algorithms (bitOf) that can carry the call; dispatch sets those this
  // communicator has (the switch only with its address). Unset: every row
  // that needs no setting.
  unsigned candidates = rowsNeedingNoSetting();
  size_t& chunkValuesOf(AlgoId algo) { return chunkValues[indexOf(algo)]; }
  size_t chunkValuesOf(AlgoId algo) const { return chunkValues[indexOf(algo)]; }
};

// An algorithm as the model sees it: a call is `iterations` chunks deep; in
// steady state a rank is busy with the larger of its wire time and its codec
// time, plus a fixed cost per message it sends or receives; a tree also
// waits for its first chunk to be stored and forwarded up and down before
// every link is busy.
struct Pipeline {
  double hops = 0;            // sequential link crossings per chunk
  double iterations = 0;      // chunks, one after another
  double messages = 0;        // sent + received by one rank per iteration
  double wireBytes = 0;       // through one rank's busiest direction, whole call
  double computeSeconds = 0;  // one rank's codec passes, whole call
  double fillBytes = 0;       // store-and-forward of the first chunk beyond its first link
};
// ceil(a / b), 0 for an empty divisor: the chunks of a pipeline.
inline double ceilDiv(double a, double b) { return b <= 0 ? 0 : std::ceil(a / b); }

// Predicted seconds of `algo` for `call`; infinite for algorithms without a
// pipeline.
double estimateSeconds(const CostModel& model, const CallShape& call, AlgoId algo);
// The cheapest of the call's candidates that auto may pick: the default
// algorithm (ring) unless another is predicted more than 10% cheaper.
AlgoId cheapestAlgorithm(const CostModel& model, const CallShape& call);
// The burst (model.burstBytes of `algo`) with which the model, at the
// algorithm's linkShare, predicts `measuredSeconds` for `call`: 0 when even
// no burst predicts less, the call's whole wire bytes when even those
// predict more.
double fitBurst(const CostModel& model, const CallShape& call, AlgoId algo, double measuredSeconds);
// A measured call, as the model sees it.
struct MeasuredCall {
  CallShape call;
  double seconds = 0;
};
// Sets the burst and link share of `algo` in `model` with which it predicts
// both calls (`shorter` mostly within the burst, `longer` mostly past it);
// the share stays within [kMinLinkShare, kMaxLinkShare], so a noisy
// measurement cannot make the link free or useless.
void fitLinkUse(CostModel* model, AlgoId algo, const MeasuredCall& shorter, const MeasuredCall& longer);
constexpr double kMinLinkShare = 0.25, kMaxLinkShare = 2.0;
// Values of the calls the bursts and shares are fitted to: the first past a
// typical burst on every algorithm's busiest link (about 150-300 KB of nat at
// n = 4..16), the second twice that, where the rate decides; ring and direct
// cross near it (1 MiB of float32 on 4 and 8 emulated 1 Gbit/s hosts), so
// the model is fitted where the choice is closest.
constexpr size_t kBurstCalibrationValues = size_t(1) << 17;
constexpr size_t kRateCalibrationValues = size_t(1) << 18;

}  // namespace cc
