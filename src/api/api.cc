// The C entry points: argument checks, the group queue, error strings.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "api/config.h"
#include "api/handles.h"
#include "base/datatypes.h"
#include "base/error.h"
#include "base/sigpipe.h"
#include "codec/codec.h"
#include "codec/residual.h"
#include "comm/bootstrap.h"
#include "comm/comm.h"
#ifdef CC_HAVE_CUDA
#include "comm/device_calls.h"
#include "cuda/device_runtime.h"
#endif

namespace cc {
namespace {

constexpr int kMaxRanks = 1 << 16;  // the rank field of the Philox stream id is 16 bits

struct PendingAllreduce {
  const void* sendbuf;
  void* recvbuf;
  size_t count;
  cc_datatype_t datatype;
  cc_red_op_t op;
  cc_comm_t comm;
  std::string spec;  // "" = the communicator's codec
  cc_residual_t residual;
  bool onDevice = false;  // device buffers: enqueued on `stream`, never fused
  void* stream = nullptr;
};

thread_local int tlsGroupDepth = 0;
thread_local std::vector<PendingAllreduce> tlsGroupQueue;

// After CommEntry found the handle live: the states in which it takes no call.
cc_result_t checkUsable(cc_comm_t comm, const char* call) {
  if (comm->aborted.load()) return setError(CC_INVALID_USAGE, "%s: the communicator was aborted", call);
  if (comm->finalized.load()) {
    return setError(CC_INVALID_USAGE, "%s: the communicator was finalized", call);
  }
  return CC_SUCCESS;
}

cc_result_t checkAllreduceArgs(const void* sendbuf, void* recvbuf, size_t count,
                               cc_datatype_t datatype, cc_red_op_t op, cc_comm_t comm,
                               void* stream) {
  if (comm == nullptr) return setError(CC_INVALID_ARGUMENT, "compressed_allreduce: comm is NULL");
  if (static_cast<int>(datatype) < 0 || static_cast<int>(datatype) >= CC_NUM_DATATYPES) {
    return setError(CC_INVALID_ARGUMENT,
                    "compressed_allreduce: unknown datatype %d (valid: CC_INT8 = 0 .. CC_BFLOAT16 = 9)",
                    static_cast<int>(datatype));
  }
  if (static_cast<int>(op) < 0 || static_cast<int>(op) >= CC_NUM_OPS) {
    return setError(CC_INVALID_ARGUMENT,
                    "compressed_allreduce: unknown reduction op %d (valid: CC_SUM, CC_PROD, CC_MAX, "
                    "CC_MIN, CC_AVG)",
                    static_cast<int>(op));
  }
  const size_t bytesPerValue = elementBytes(elementTypeOf(datatype));
  if (count > SIZE_MAX / bytesPerValue) {
    return setError(CC_INVALID_ARGUMENT,
                    "compressed_allreduce: count %zu overflows size_t for datatype %s", count,
                    datatypeName(datatype));
  }
#ifndef CC_HAVE_CUDA
  if (stream != nullptr) {
    return setError(CC_UNSUPPORTED,
                    "compressed_allreduce: this build has no CUDA, so no streams; pass "
                    "stream = NULL with host buffers");
  }
#else
  (void)stream;
#endif
  if (count == 0) return CC_SUCCESS;
  if (sendbuf == nullptr) return setError(CC_INVALID_ARGUMENT, "compressed_allreduce: sendbuf is NULL");
  if (recvbuf == nullptr) return setError(CC_INVALID_ARGUMENT, "compressed_allreduce: recvbuf is NULL");
  const size_t bytes = count * bytesPerValue;
  const uintptr_t send = reinterpret_cast<uintptr_t>(sendbuf);
  const uintptr_t recv = reinterpret_cast<uintptr_t>(recvbuf);
  if (send != recv && send < recv + bytes && recv < send + bytes) {
    return setError(CC_INVALID_ARGUMENT,
                    "compressed_allreduce: sendbuf and recvbuf overlap without being equal (in "
                    "place needs sendbuf == recvbuf)");
  }
  return CC_SUCCESS;
}

cc_result_t checkResidual(cc_residual_t residual, size_t count, cc_datatype_t datatype, cc_red_op_t op) {
  if (residual == nullptr) return CC_SUCCESS;
  if (!isFloatType(datatype)) {
    return setError(CC_INVALID_ARGUMENT,
                    "compressed_allreduce_ex: error feedback needs float32, float16 or bfloat16, not %s",
                    datatypeName(datatype));
  }
  if (op != CC_SUM && op != CC_AVG) {
    return setError(CC_INVALID_ARGUMENT, "compressed_allreduce_ex: error feedback needs op SUM or AVG, not %s",
                    opName(op));
  }
  if (residual->count != count || residual->datatype != datatype) {
    return setError(CC_INVALID_ARGUMENT,
                    "compressed_allreduce_ex: the residual was created for %zu x %s, the call has %zu x %s",
                    residual->count, datatypeName(residual->datatype), count, datatypeName(datatype));
  }
  return CC_SUCCESS;
}

bool sameCollective(const PendingAllreduce& a, const PendingAllreduce& b) {
  return !a.onDevice && !b.onDevice && a.comm == b.comm && a.datatype == b.datatype && a.op == b.op &&
         a.spec == b.spec;
}

// Where a call's buffers live: device buffers take the GPU path (pointer
// attributes decide, as in NCCL-based frameworks), host buffers the host path.
cc_result_t locateBuffers(const void* sendbuf, void* recvbuf, size_t count, bool* onDevice) {
  *onDevice = false;
#ifdef CC_HAVE_CUDA
  if (count == 0) return CC_SUCCESS;
  const bool sendOnDevice = isDeviceMemory(sendbuf);
  const bool recvOnDevice = sendbuf == recvbuf ? sendOnDevice : isDeviceMemory(recvbuf);
  if (sendOnDevice != recvOnDevice) {
    return setError(CC_INVALID_ARGUMENT, "compressed_allreduce: sendbuf is %s memory but recvbuf %s memory",
                    sendOnDevice ? "device" : "host", recvOnDevice ? "device" : "host");
  }
  *onDevice = sendOnDevice;
#else
  (void)sendbuf;
  (void)recvbuf;
  (void)count;
#endif
  return CC_SUCCESS;
}

// Runs `calls` (same communicator, datatype, op and spec) as one collective.
cc_result_t runFused(const std::vector<const PendingAllreduce*>& calls) {
  std::vector<TensorCall> tensors;
  for (const PendingAllreduce* call : calls) {
    if (call->count != 0) tensors.push_back(TensorCall{call->sendbuf, call->recvbuf, call->count, call->residual});
  }
  if (tensors.empty()) return CC_SUCCESS;
  const PendingAllreduce& first = *calls.front();
  // A group's calls were queued before now: the handle may have died since.
  CommEntry entry(first.comm, "compressed_allreduce");
  CC_CHECK(entry.result());
  CC_CHECK(checkUsable(first.comm, "compressed_allreduce"));
#ifdef CC_HAVE_CUDA
  if (first.onDevice) {
    return commDeviceAllreduce(first.comm, first.sendbuf, first.recvbuf, first.count, first.datatype, first.op,
                               first.spec.empty() ? nullptr : first.spec.c_str(), first.residual, first.stream);
  }
  // Host buffers after work on a stream (a copy into pinned memory, say) wait
  // for it; an error-feedback residual last used on the GPU comes back.
  for (const PendingAllreduce* call : calls) {
    if (call->stream != nullptr) CC_CHECK(synchronizeStream(call->stream));
    if (call->residual != nullptr) CC_CHECK(residualToHost(call->residual));
  }
#endif
  return commAllreduce(first.comm, tensors.data(), tensors.size(), first.datatype, first.op,
                       first.spec.empty() ? nullptr : first.spec.c_str());
}

cc_result_t submitAllreduce(const void* sendbuf, void* recvbuf, size_t count, cc_datatype_t datatype,
                            cc_red_op_t op, cc_comm_t comm, void* stream, const char* spec,
                            cc_residual_t residual) {
  CC_CHECK(checkAllreduceArgs(sendbuf, recvbuf, count, datatype, op, comm, stream));
  {
    CommEntry entry(comm, "compressed_allreduce");
    CC_CHECK(entry.result());
    CC_CHECK(checkUsable(comm, "compressed_allreduce"));
    CC_CHECK(checkResidual(residual, count, datatype, op));
    if (spec != nullptr && spec[0] != '\0') {
      // A bad spec fails here, at the call, not later at cc_group_end.
      const CodecSpec* parsed = nullptr;
      CC_CHECK(commSpec(comm, spec, &parsed));
    }
  }
  PendingAllreduce call{sendbuf, recvbuf, count, datatype, op, comm, spec ? std::string(spec) : std::string(), residual};
  CC_CHECK(locateBuffers(sendbuf, recvbuf, count, &call.onDevice));
  call.stream = stream;
  if (tlsGroupDepth > 0) {
    tlsGroupQueue.push_back(call);
    return CC_SUCCESS;
  }
  return runFused({&call});
}

}  // namespace
}  // namespace cc

using namespace cc;

extern "C" {

cc_result_t cc_get_version(int* version) {
  if (version == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_get_version: version is NULL");
  *version = CC_VERSION_CODE;
  return CC_SUCCESS;
}

const char* cc_get_error_string(cc_result_t result) {
  switch (result) {
    case CC_SUCCESS: return "no error";
    case CC_INVALID_ARGUMENT: return "invalid argument";
    case CC_INVALID_USAGE: return "invalid usage";
    case CC_SYSTEM_ERROR: return "system error (socket, memory or device)";
    case CC_REMOTE_ERROR: return "remote error (a peer failed, disconnected or sent bad data)";
    case CC_TIMEOUT: return "timeout";
    case CC_UNSUPPORTED: return "unsupported";
    case CC_CUDA_ERROR: return "CUDA error";
    case CC_INTERNAL_ERROR: return "internal error";
    case CC_IN_PROGRESS: return "operation in progress";
  }
  return "unknown result code";
}

const char* cc_get_last_error(cc_comm_t comm) {
  (void)comm;  // the text is per thread, whichever communicator failed
  return lastErrorMessage().c_str();
}

cc_result_t cc_get_unique_id(cc_unique_id_t* id) {
  if (id == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_get_unique_id: id is NULL");
  return createUniqueId(id);
}

cc_result_t cc_get_unique_id_from_address(const char* address, const char* secret, cc_unique_id_t* id) {
  if (address == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_get_unique_id_from_address: address is NULL");
  if (id == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_get_unique_id_from_address: id is NULL");
  return uniqueIdFromAddress(address, secret, "cc_get_unique_id_from_address: address", id);
}

cc_result_t cc_comm_init_rank(cc_comm_t* comm, int nranks, cc_unique_id_t id, int rank,
                              const cc_config_t* config) {
  if (comm == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_comm_init_rank: comm is NULL");
  *comm = nullptr;
  if (nranks < 1 || nranks > kMaxRanks) {
    return setError(CC_INVALID_ARGUMENT, "cc_comm_init_rank: nranks %d is outside [1, %d]", nranks,
                    kMaxRanks);
  }
  if (rank < 0 || rank >= nranks) {
    return setError(CC_INVALID_ARGUMENT, "cc_comm_init_rank: rank %d is outside [0, %d)", rank, nranks);
  }
  // Gloo's loop thread, started inside, inherits the blocked SIGPIPE for good.
  SigpipeBlock sigpipe;
  ResolvedConfig resolved;
  cc_result_t result = resolveConfig(config, &resolved);
  if (result == CC_SUCCESS) result = commInit(comm, nranks, id, rank, resolved);
  if (result != CC_SUCCESS) return addErrorContext(result, "cc_comm_init_rank (rank %d of %d)", rank, nranks);
  registerComm(*comm);
  return CC_SUCCESS;
}

cc_result_t compressed_allreduce(const void* sendbuf, void* recvbuf, size_t count,
                                 cc_datatype_t datatype, cc_red_op_t op, cc_comm_t comm,
                                 void* stream) {
  SigpipeBlock sigpipe;
  return submitAllreduce(sendbuf, recvbuf, count, datatype, op, comm, stream, nullptr, nullptr);
}

cc_result_t compressed_allreduce_ex(const void* sendbuf, void* recvbuf, size_t count, cc_datatype_t datatype,
                                    cc_red_op_t op, cc_comm_t comm, void* stream, const char* spec,
                                    cc_residual_t residual) {
  SigpipeBlock sigpipe;
  return submitAllreduce(sendbuf, recvbuf, count, datatype, op, comm, stream, spec, residual);
}

cc_result_t cc_residual_create(cc_residual_t* residual, size_t count, cc_datatype_t datatype) {
  if (residual == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_residual_create: residual is NULL");
  *residual = nullptr;
  if (!isFloatType(datatype)) {
    return setError(CC_INVALID_ARGUMENT,
                    "cc_residual_create: error feedback needs float32, float16 or bfloat16, not %s",
                    datatypeName(datatype));
  }
  if (count > SIZE_MAX / sizeof(float)) {
    return setError(CC_INVALID_ARGUMENT, "cc_residual_create: count %zu overflows size_t for float32", count);
  }
  try {
    auto created = std::make_unique<cc_residual>();
    created->count = count;
    created->datatype = datatype;
    created->values.assign(count, 0.0f);
    *residual = created.release();
  } catch (const std::bad_alloc&) {
    return setError(CC_SYSTEM_ERROR, "cc_residual_create: cannot allocate %zu float32 values", count);
  }
  return CC_SUCCESS;
}

cc_result_t cc_residual_destroy(cc_residual_t residual) {
  if (residual == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_residual_destroy: residual is NULL");
  delete residual;
  return CC_SUCCESS;
}

cc_result_t cc_residual_get(cc_residual_t residual, float* values) {
  if (residual == nullptr || (values == nullptr && residual->count != 0)) {
    return setError(CC_INVALID_ARGUMENT, "cc_residual_get: %s is NULL", residual == nullptr ? "residual" : "values");
  }
#ifdef CC_HAVE_CUDA
  CC_CHECK(residualToHost(residual));
#endif
  if (residual->count != 0) std::memcpy(values, residual->values.data(), residual->count * sizeof(float));
  return CC_SUCCESS;
}

cc_result_t cc_residual_set(cc_residual_t residual, const float* values) {
  if (residual == nullptr || (values == nullptr && residual->count != 0)) {
    return setError(CC_INVALID_ARGUMENT, "cc_residual_set: %s is NULL", residual == nullptr ? "residual" : "values");
  }
  if (residual->count != 0) std::memcpy(residual->values.data(), values, residual->count * sizeof(float));
  residual->deviceCurrent = false;
  return CC_SUCCESS;
}

cc_result_t cc_residual_reset(cc_residual_t residual) {
  if (residual == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_residual_reset: residual is NULL");
  std::fill(residual->values.begin(), residual->values.end(), 0.0f);
  residual->deviceCurrent = false;
  return CC_SUCCESS;
}

cc_result_t cc_group_start(void) {
  ++tlsGroupDepth;
  return CC_SUCCESS;
}

cc_result_t cc_group_end(void) {
  if (tlsGroupDepth == 0) {
    return setError(CC_INVALID_USAGE, "cc_group_end without a matching cc_group_start");
  }
  if (--tlsGroupDepth > 0) return CC_SUCCESS;
  SigpipeBlock sigpipe;
  std::vector<PendingAllreduce> queue;
  queue.swap(tlsGroupQueue);
  // Calls that can share a collective are fused, in the order of each
  // collective's first call, so every rank issues the same sequence.
  std::vector<bool> done(queue.size(), false);
  cc_result_t first = CC_SUCCESS;
  std::string firstMessage;
  for (size_t i = 0; i < queue.size(); ++i) {
    if (done[i]) continue;
    std::vector<const PendingAllreduce*> fused;
    for (size_t j = i; j < queue.size(); ++j) {
      if (!done[j] && sameCollective(queue[i], queue[j])) {
        fused.push_back(&queue[j]);
        done[j] = true;
      }
    }
    cc_result_t result = runFused(fused);
    if (result != CC_SUCCESS && first == CC_SUCCESS) {
      first = result;
      firstMessage = lastErrorMessage();
    }
  }
  if (first != CC_SUCCESS) restoreLastError(firstMessage);
  return first;
}

cc_result_t cc_comm_count(cc_comm_t comm, int* nranks) {
  CommEntry entry(comm, "cc_comm_count");
  CC_CHECK(entry.result());
  if (nranks == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_comm_count: nranks is NULL");
  *nranks = comm->nranks;
  return CC_SUCCESS;
}

cc_result_t cc_comm_user_rank(cc_comm_t comm, int* rank) {
  CommEntry entry(comm, "cc_comm_user_rank");
  CC_CHECK(entry.result());
  if (rank == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_comm_user_rank: rank is NULL");
  *rank = comm->rank;
  return CC_SUCCESS;
}

cc_result_t cc_comm_finalize(cc_comm_t comm) {
  SigpipeBlock sigpipe;
  CommEntry entry(comm, "cc_comm_finalize");
  CC_CHECK(entry.result());
  CC_CHECK(checkUsable(comm, "cc_comm_finalize"));
  // Host collectives complete before they return; device ones are waited for.
  std::lock_guard<std::mutex> lock(comm->callMutex);
#ifdef CC_HAVE_CUDA
  CC_CHECK(commDeviceFinalize(comm));
#endif
  comm->finalized.store(true);
  return CC_SUCCESS;
}

cc_result_t cc_comm_destroy(cc_comm_t comm) {
  SigpipeBlock sigpipe;  // teardown still writes to peers (credits, the last sends)
  return destroyComm(comm);
}

cc_result_t cc_comm_abort(cc_comm_t comm) {
  SigpipeBlock sigpipe;
  return abortComm(comm);
}

cc_result_t cc_comm_get_async_error(cc_comm_t comm, cc_result_t* async_error) {
  CommEntry entry(comm, "cc_comm_get_async_error");
  CC_CHECK(entry.result());
  if (async_error == nullptr) {
    return setError(CC_INVALID_ARGUMENT, "cc_comm_get_async_error: async_error is NULL");
  }
  *async_error = static_cast<cc_result_t>(comm->asyncError.load());
#ifdef CC_HAVE_CUDA
  if (*async_error == CC_SUCCESS) {
    const cc_result_t engine = commDeviceAsyncError(comm);
    if (engine != CC_SUCCESS) {
      int expected = CC_SUCCESS;
      comm->asyncError.compare_exchange_strong(expected, engine);
      *async_error = engine;
    }
  }
#endif
  return CC_SUCCESS;
}

}  // extern "C"
