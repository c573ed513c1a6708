// Algorithms, one file each, written against the primitives.
#pragma once

#include "prims/prims.h"

namespace cc {

enum class AlgoId : uint8_t { Auto = 0, Ring = 1, Allgather = 2, Direct = 3, Tree = 4 };
const char* algoName(AlgoId id);

// The channels of the ring: to (rank + 1) % n and from (rank - 1 + n) % n.
struct RingChannels {
  SendChannel* toNext;
  RecvChannel* fromPrev;
};

// Bandwidth-optimal ring: reduce-scatter with a fused decode-add-encode per
// hop, the owner's final encode, then an allgather that forwards packed bytes.
// Chunks of `chunkValues` pipeline through the slots of each link.
cc_result_t ringAllreduce(RingPrims& prims, const CollectiveArgs& args, const RingChannels& channels);

// How the ring splits `count` values into one segment per rank and chunks;
// exposed for tests (sizes beyond 2^31 are checked without allocating).
struct RingLayout {
  // Segments and chunks start on multiples of `alignmentValues`.
  RingLayout(size_t count, int nranks, size_t chunkValues, size_t alignmentValues = kBlockValues);
  size_t segmentValues;  // a multiple of alignmentValues
  size_t iterations;     // chunks per segment
  // The values of segment `segment` handled in iteration `iteration`.
  void range(int segment, size_t iteration, size_t* first, size_t* count) const;

 private:
  size_t count_;
  size_t chunkValues_;
};

// Whole-vector path: every rank encodes its float32 vector once with a
// VectorCodec (any scope; top-k included), the encodings travel around the
// ring unchanged, and every rank decodes all n of them in rank order, so all
// ranks sum the same values in the same order and finish bit-identical.
struct VectorCall {
  const VectorCodec* codec;
  TensorLayout layout;
  const float* values;  // this rank's contribution, layout.count values
  float* residual;      // error feedback (may be null): values - D(C(values))
  float* sum;           // out: the decoded sum (divided by n for AVG)
  unsigned char* encodings;  // scratch: nranks * encodedBytes(layout) bytes
};
cc_result_t allgatherAllreduce(Prims& prims, const CollectiveArgs& args, const RingChannels& channels,
                               const VectorCall& call);

// The channels of `direct`: to and from every peer (null at this rank's own
// index), one set for the shards going to their owners (worker codec) and one
// for the owners' packed sums coming back (master codec).
struct DirectChannels {
  size_t slotBytes;
  SendChannel* const* shardTo;     // [peer]
  RecvChannel* const* shardFrom;   // [peer]
  SendChannel* const* sumTo;       // [peer]
  RecvChannel* const* sumFrom;     // [peer]
  SendChannel* const* sumToOthers; // the n - 1 sumTo channels, from rank + 1 on
};

// The paper's Algorithm 1 with every rank the master of one shard: each rank
// encodes each peer's shard once (worker codec C_W) and sends it to its owner;
// the owner decodes the n - 1 shards, adds its own values in fp32, encodes the
// sum once (master codec C_M) and sends the packed bytes to every peer. Two
// encodes whatever n is. `scratch` holds 2 * chunk values (the owner's sum
// and, with error feedback, its decoded form).
cc_result_t directAllreduce(Prims& prims, const CollectiveArgs& args, const DirectChannels& channels,
                            float* scratch);

// One rank's place in a binary tree: parent and up to two children (-1: none).
struct TreeNode {
  int parent = -1;
  int child[2] = {-1, -1};
};
// NCCL's double binary tree: tree 0 is the in-order binary tree rooted at
// rank 0 (leaves are the odd ranks), tree 1 its mirror (n even) or its shift
// by one rank (n odd), so that a rank interior in one tree is a leaf in the
// other (for even n; with odd n rank 0 is interior in both) and every link
// carries about half of the vector each way.
void doubleBinaryTree(int nranks, int rank, TreeNode trees[2]);

struct TreeChannels {
  size_t slotBytes;
  // Per tree: towards the parent (up: partial sums; down: the result).
  SendChannel* up[2];
  RecvChannel* down[2];
  // Per tree and child slot: from the child (partial sums), to it (result).
  RecvChannel* fromChild[2][2];
  SendChannel* toChild[2][2];
};

// Double binary tree: each tree reduces half of the vector towards its root,
// re-encoding at every interior node; the root encodes the sum once more and
// the packed bytes travel down unchanged. Chunks pipeline through both trees
// at once. `scratch` holds one chunk of values.
cc_result_t treeAllreduce(Prims& prims, const CollectiveArgs& args, const TreeNode trees[2],
                          const TreeChannels& channels, float* scratch);

// ---------------------------------------------------------------------------
// auto: a cost model (docs/algorithms.md). Its inputs are measured at init on
// every rank and the slowest rank's figures are agreed, so every rank makes
// the same choice for the same call.

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
struct CostModel {
  LinkCosts link;
  CodecCosts codec[kCodecFamilies];
  // Seconds of one call of 1024 nat values on ring, direct and tree,
  // measured at init: each algorithm's fixed cost (its hops, messages and
  // wake-ups on this transport and machine). 0: use hops x latency.
  double fixedSeconds[3] = {0, 0, 0};
  // Per algorithm, the bytes its busiest link passes in one call before the
  // link's rate applies: a shaped link (a token bucket such as tc's tbf, a
  // switch port's buffer) lets a burst through at once and refills while the
  // link waits on other hops, which helps the tree (idle between levels) more
  // than ring or direct (busy throughout). 0 on an unshaped link.
  double burstBytes[3] = {0, 0, 0};
  // Per algorithm, the share of the link's measured rate its flows reach
  // once the burst is spent: ring's one flow per link gets about all of it;
  // direct's n - 1 flows into every host and out of it less. Fitted with the
  // burst (fitLinkUse) to the calls of kBurstCalibrationValues and
  // kRateCalibrationValues.
  double linkShare[3] = {1, 1, 1};
  // The seconds of those calls (trimmed means), as measured at init.
  double burstCalibrationSeconds[3] = {0, 0, 0};
  double rateCalibrationSeconds[3] = {0, 0, 0};
};

// One call as the model sees it.
struct CallShape {
  int nranks = 2;
  size_t count = 0;
  CodecId worker = CodecId::Nat, master = CodecId::Nat;
  double workerBytesPerValue = 4, masterBytesPerValue = 4;
  size_t ringChunkValues = 0, directChunkValues = 0, treeChunkValues = 0;
};

// Predicted seconds of `algo` (Ring, Direct or Tree) for `call`.
double estimateSeconds(const CostModel& model, const CallShape& call, AlgoId algo);
// The cheapest of ring, direct and tree.
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
constexpr double kTrialCandidateFactor = 3.0;
constexpr int kShortCallTrialRounds = 5, kLongCallTrialRounds = 3;
constexpr double kTrialBlockSeconds = 0.05;
constexpr int kMaxTimedCallsPerBlock = 64;
struct AutoTrialPlan {
  AlgoId candidates[3] = {AlgoId::Ring, AlgoId::Ring, AlgoId::Ring};
  int candidateCount = 0;
  int timedCalls[3] = {0, 0, 0};  // per block of each candidate
  int rounds = 0;
  int blockCount() const { return rounds * candidateCount; }
  int candidateOfBlock(int block) const { return block % candidateCount; }
  int callsOfBlock(int block) const { return 1 + timedCalls[candidateOfBlock(block)]; }
  int totalCalls() const;
};
AutoTrialPlan planAutoTrials(const CostModel& model, const CallShape& call, int minTimedCalls);
// One candidate's time: the mean of its blocks' mean call times (every block
// has as many calls), stalls included: an algorithm that stalls now and then
// costs its calls the stalls, which a median of blocks hid (direct on 8
// emulated hosts at 4 MiB: blocks of 32 to 121 ms, a median block of 33 ms
// where the benchmark's rounds took 43 ms; docs/algorithms.md, "Trials").
// `agreedBlockSeconds` holds plan.blockCount() of them in the order of the
// blocks (each the slowest rank's).
double candidateSeconds(const AutoTrialPlan& plan, const double* agreedBlockSeconds, int candidate);
// The candidate with the lowest time, where it beats the model's choice (the
// first candidate) by more than kTrialTieFactor; else the model's choice.
// Trials within a few percent are noise on a shared host: at 1 MiB on 4
// emulated hosts with 100 us links they put direct at 4902 us a call
// against ring's 4937, and the rounds then took 5006 against 4434.
constexpr double kTrialTieFactor = 1.03;
AlgoId fastestInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds);
// The runner-up: the candidate other than `settled` with the lowest time
// (Auto where there is none).
AlgoId runnerUpInTrials(const AutoTrialPlan& plan, const double* agreedBlockSeconds, AlgoId settled);

// auto's watch over a settled kind (docs/algorithms.md, "Watch"). Trials see
// about a second of a kind's first calls; on a shared host an algorithm's
// speed shifts between levels over tens of seconds (the tree at 4 KiB on 4
// emulated hosts with 100 us links: 1416 us a call in its trials, 2023 us
// over the benchmark's rounds that followed, where direct took 1486). So the
// settled algorithm's calls are timed in windows, agreed like the trials'
// blocks. A window above kChallengeFactor times the runner-up's latest time
// makes the runner-up run one window (the challenge), then the settled
// algorithm one more; the runner-up takes over where it beat both of the
// settled algorithm's windows by kSwitchFactor, so that one stalled window
// alone does not swap them. Windows span kWatchFirstWindowSeconds of calls
// after a challenge and double after each quiet one up to
// kWatchLongestWindowSeconds, so that a kind that keeps its speed pays one
// agreement (one exact call of a double) every few seconds. A window has at
// least kFewestWatchWindowCalls timed calls: one call of 64 MiB on 4
// emulated hosts is too noisy to decide on (ring 302 ms, direct 272, ring
// 334 in three one-call windows switched to direct, which the rounds then
// measured at 1.06x ring).
constexpr double kWatchFirstWindowSeconds = 0.25, kWatchLongestWindowSeconds = 4.0;
constexpr int kFewestWatchWindowCalls = 3;
constexpr double kChallengeFactor = 1.1, kSwitchFactor = 1.05;
// Timed calls in a window of `windowSeconds` of calls taking `callSeconds`:
// at least kFewestWatchWindowCalls.
int watchWindowCalls(double windowSeconds, double callSeconds);
bool shouldChallenge(double settledWindowSeconds, double runnerUpSeconds);
bool challengerWins(double settledBeforeSeconds, double challengerSeconds, double settledAfterSeconds);

}  // namespace cc
