// The communicator: it connects its ranks (bootstrap, settings agreement,
// transport, channels), hands each call to the algorithm layer
// (algo/call/allreduce_call.h) and keeps the lifecycle the C API exposes
// (finalize, abort, asynchronous errors). What collectives read and advance
// is its base, CollectiveState (algo/call/collectives.h).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "algo/call/allreduce_call.h"
#include "algo/call/collectives.h"
#include "codec/spec.h"
#include "comm/settings.h"
#include "compressedcoll.h"

namespace cc {

// The GPU path of a communicator (cuda/device_runtime.h; CUDA builds).
struct DeviceState;

}  // namespace cc

struct cc_comm : cc::CollectiveState {
  cc::AlgoId openedWith = cc::AlgoId::Auto;  // settings.algo at init (benchmarks may force another)
  std::shared_ptr<cc::DeviceState> device;  // CUDA builds: device transport, codecs, channels
  std::mutex callMutex;        // collectives on one communicator run one at a time
  std::atomic<int> asyncError{CC_SUCCESS};
  std::atomic<bool> finalized{false};
  std::atomic<bool> aborted{false};
  // API calls inside the communicator; abort frees it when the last one leaves.
  std::atomic<int> callsInside{0};
  std::atomic<bool> freeWhenIdle{false};
};

namespace cc {

// Collective over the `nranks` ranks of `id`: connects them, agrees on
// `config` and opens every channel the configured algorithm may need.
cc_result_t commInit(cc_comm_t* comm, int nranks, const cc_unique_id_t& id, int rank, const ResolvedConfig& config);
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
