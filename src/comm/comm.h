// The communicator: bootstrap, transport, the ring's channels, the codecs of
// each spec in use, and the sequence number that keys each collective's
// randomness.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "algo/algo.h"
#include "api/config.h"
#include "base/datatypes.h"
#include "codec/codec.h"
#include "codec/spec.h"
#include "compressedcoll.h"
#include "transports/transport.h"

struct cc_residual {
  size_t count = 0;
  cc_datatype_t datatype = CC_FLOAT32;
  std::vector<float> values;
  // Device collectives keep the residual on the GPU (cuda/device_runtime.cc):
  // while deviceCurrent, deviceValues holds the current values, not `values`.
  std::shared_ptr<float> deviceValues;
  bool deviceCurrent = false;
};

namespace cc {

// The codecs of one spec, made on first use so that calls allocate nothing.
struct SpecCodecs {
  CodecSpec spec;
  std::unique_ptr<Codec> block[CC_NUM_DATATYPES][CC_NUM_OPS];
  std::unique_ptr<VectorCodec> vector;
  bool loggedBiased = false;
};

// Buffers reused from call to call (grown, never shrunk).
struct CallScratch {
  std::vector<size_t> offsets;             // where each tensor starts
  std::vector<unsigned char> fusedValues;  // grouped calls, concatenated
  std::vector<float> fusedResidual;
  std::vector<float> compact;              // randk: the kept values
  std::vector<float> compactResidual;
  std::vector<uint64_t> kept;              // randk: their positions
  std::vector<float> vectorValues;         // allgather: p = x + e in float32
  std::vector<float> vectorSum;
  std::vector<unsigned char> encodings;    // allgather: every rank's encoding
  std::vector<float> chunkSums;            // direct and tree: a chunk's float32 sums
};

// The channels of direct and tree, opened at init when the configured
// algorithm may use them (auto, direct, tree).
struct AlgorithmChannels {
  size_t directSlotBytes = 0;
  std::vector<std::unique_ptr<SendChannel>> shardTo, sumTo;      // [peer]
  std::vector<std::unique_ptr<RecvChannel>> shardFrom, sumFrom;  // [peer]
  std::vector<SendChannel*> shardToView, sumToView, sumToOthers;
  std::vector<RecvChannel*> shardFromView, sumFromView;
  size_t treeSlotBytes = 0;
  TreeNode trees[2];
  std::unique_ptr<SendChannel> treeUp[2], treeToChild[2][2];
  std::unique_ptr<RecvChannel> treeDown[2], treeFromChild[2][2];
  bool open = false;
};

// The GPU path of a communicator (cuda/device_runtime.cc; CUDA builds).
struct DeviceState;

// auto's trials of one kind of call (runAlgorithm): calls of one spec, master
// spec, datatype and op whose counts share a power of two.
using AutoCallKind = std::tuple<uint64_t, uint64_t, int, int, int>;
// The watch over a settled kind (algo.h, kChallengeFactor): which window
// runs now.
enum class WatchStage {
  Settled,       // the settled algorithm's calls, until one window is slow
  Challenger,    // the runner-up's window
  SettledAgain,  // the settled algorithm's window after it
};
struct AutoWatch {
  AlgoId runnerUp = AlgoId::Auto;
  double settledSeconds = 0, runnerUpSeconds = 0;  // each one's latest agreed mean call
  WatchStage stage = WatchStage::Settled;
  double windowSpan = 0;     // of the Settled windows
  int timedCalls = 0;        // in the current window
  int timedLeft = 0;
  double ownSeconds = 0;     // this rank's timed calls of the window so far
  double settledBeforeSeconds = 0, challengerSeconds = 0;  // agreed, of the challenge under way
  // The kind's previous call: a call counts only right after one of the
  // same algorithm and kind, as the communicator's previous collective
  // (Auto: none yet, since a call always runs a concrete algorithm).
  uint64_t previousSeq = 0;
  AlgoId previousAlgo = AlgoId::Auto;
};
struct AutoTrials {
  AutoTrialPlan plan;
  int block = 0;                   // the block of the next trial call
  int callInBlock = 0;             // its place there (0: the untimed call)
  double blockSeconds = 0;         // this rank's timed calls of the block so far
  std::vector<double> ownBlockSeconds;  // this rank's mean call time in each finished block
  AlgoId settled = AlgoId::Auto;   // Auto: trials run, or the model decides (one candidate)
  AutoWatch watch;                 // once settled
  std::string kindName;            // for CC_DEBUG=INFO: codec and counts
};

// One tensor of a (possibly fused) call.
struct TensorCall {
  const void* sendbuf;
  void* recvbuf;
  size_t count;
  cc_residual_t residual;
};

}  // namespace cc

struct cc_comm {
  int rank = 0;
  int nranks = 1;
  cc::ResolvedConfig config;
  cc::AlgoId openedWith = cc::AlgoId::Auto;  // config.algo at init (benchmarks may force another)
  uint64_t seed = 0;
  std::unique_ptr<cc::Transport> transport;
  std::unique_ptr<cc::SendChannel> toNext;
  std::unique_ptr<cc::RecvChannel> fromPrev;
  // auto's announcements under CC_CHECK_CALLS=1 (prims.h): every call's
  // algorithm, to the next rank
  std::unique_ptr<cc::SendChannel> announceToNext;
  std::unique_ptr<cc::RecvChannel> announceFromPrev;
  cc::AlgorithmChannels channels;
  std::shared_ptr<cc::DeviceState> device;  // CUDA builds: device transport, codecs, channels
  cc::CostModel costModel;     // what auto decides with; identical on every rank
  uint64_t collectiveSeq = 0;  // collectives issued so far; identical on every rank
  // Specs by the text callers gave ("" = the communicator's own).
  std::map<std::string, std::unique_ptr<cc::SpecCodecs>> specs;
  cc::CallScratch scratch;
  std::string lastAlgorithm;   // which algorithm the last collective ran (perf tool)
  std::set<std::pair<size_t, cc::CodecId>> autoLogged;  // call shapes whose choice INFO showed
  std::map<cc::AutoCallKind, cc::AutoTrials> autoTrials;
  // For the perf tool: calls so far that were auto's trials, and whether the
  // last call's kind is still in its trials (the same on every rank).
  uint64_t autoTrialCalls = 0;
  bool autoTrialsPending = false;
  // The watch's challenges so far: decided, won by the runner-up, and the
  // calls the runner-up ran in them.
  uint64_t autoChallenges = 0;
  uint64_t autoSwitches = 0;
  uint64_t autoChallengeCalls = 0;
  double autoWatchFirstWindowSeconds = cc::kWatchFirstWindowSeconds;  // tests shorten the windows
  std::mutex callMutex;        // collectives on one communicator run one at a time
  std::atomic<int> asyncError{CC_SUCCESS};
  std::atomic<bool> finalized{false};
  std::atomic<bool> aborted{false};
  // API calls inside the communicator; abort frees it when the last one leaves.
  std::atomic<int> callsInside{0};
  std::atomic<bool> freeWhenIdle{false};
};

namespace cc {

cc_result_t commInit(cc_comm_t* comm, int nranks, const cc_unique_id_t& id, int rank,
                     const cc_config_t* config);
// One collective over `tensors` (more than one: fused, see cc_group_end).
// `specText` null or empty: the communicator's codec.
cc_result_t commAllreduce(cc_comm_t comm, const TensorCall* tensors, size_t ntensors,
                          cc_datatype_t datatype, cc_red_op_t op, const char* specText);
// Parses (and caches) a per-call spec; for argument checks before queueing.
cc_result_t commSpec(cc_comm_t comm, const char* specText, const CodecSpec** spec);
void commAbort(cc_comm_t comm);
// For benchmarks that compare algorithms on one communicator (so that every
// algorithm runs on the same connections and threads): the following calls
// run `algo` as a communicator configured with it would, and under auto
// announce themselves when `checkCalls` (CC_CHECK_CALLS). Every rank must
// force the same before the same call. Only on a communicator opened with
// auto, whose channels every algorithm can use; `checkCalls` also needs one
// opened with CC_CHECK_CALLS=1.
cc_result_t commForceAlgorithm(cc_comm_t comm, AlgoId algo, bool checkCalls);

}  // namespace cc
