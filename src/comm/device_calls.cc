#include "comm/device_calls.h"

#include <mutex>
#include <string>

#include "algo/registry.h"
#include "base/datatypes.h"
#include "base/error.h"
#include "base/log.h"
#include "codec/residual.h"
#include "cuda/device_prims.h"
#include "cuda/device_runtime.h"

namespace cc {
namespace {

// The algorithm a device call runs: the configured one, or under auto the
// first with a device entry point (auto's model measures host calls only).
const AlgorithmRow* deviceAlgorithm(AlgoId configured) {
  if (configured != AlgoId::Auto) return findAlgorithm(configured);
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgorithmRow* row = findAlgorithm(static_cast<AlgoId>(i));
    if ((row->memoryKinds & kDeviceMemory) != 0) return row;
  }
  return nullptr;
}

// Why a call cannot run natively on the GPU, or an empty string when it
// can. Such calls are staged through host memory instead.
std::string nativeObstacle(cc_comm_t comm, const CodecSpec& spec, bool compresses, const cc_residual* residual) {
  if (!deviceUnavailable(*comm->device).empty()) return deviceUnavailable(*comm->device);
  const AlgorithmRow* row = deviceAlgorithm(comm->settings.algo);
  if (row == nullptr || (row->memoryKinds & kDeviceMemory) == 0) {
    return std::string("algorithm ") + algoName(comm->settings.algo) + " has no device path yet";
  }
  if (compresses && (spec.selector != Selector::None || !spec.hopReencodable())) {
    return "codec spec '" + spec.canonical + "' has no device kernels yet";
  }
  if (residual != nullptr && (!compresses || comm->nranks == 1)) {
    return "error feedback that loses nothing (an exact spec, or one rank) folds the residual on the host";
  }
  return std::string();
}

// The same collective through host memory: wait for the stream, copy the
// input down, run the host path, copy the result up. Correct for every
// codec and algorithm, bit-identical to a host call, but it synchronises.
cc_result_t runStaged(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count, cc_datatype_t datatype,
                      cc_red_op_t op, const char* specText, cc_residual* residual, void* stream) {
  const size_t bytes = count * elementBytes(elementTypeOf(datatype));
  void* host = nullptr;
  CC_CHECK(stageToHost(*comm->device, sendbuf, bytes, stream, &host));
  if (residual != nullptr) CC_CHECK(residualToHost(residual));
  const TensorCall call{host, host, count, residual};
  CC_CHECK(commAllreduce(comm, &call, 1, datatype, op, specText));
  return stageFromHost(host, recvbuf, bytes);
}

cc_result_t runNative(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count, cc_datatype_t datatype,
                      cc_red_op_t op, const CodecSpec& spec, cc_residual* residual, void* stream) {
  DeviceState& state = *comm->device;
  if (comm->nranks == 1) {
    CC_CHECK(deviceCopyOneRank(state, sendbuf, recvbuf, count * elementBytes(elementTypeOf(datatype)), stream));
    comm->lastAlgorithm = "none";
    ++comm->collectiveSeq;
    return CC_SUCCESS;
  }
  const AlgorithmRow& row = *deviceAlgorithm(comm->settings.algo);
  DeviceRing ring;
  CC_CHECK(beginDeviceRing(state, comm->rank, comm->nranks, spec, datatype, op, residual, stream, &ring));
  CollectiveArgs args{sendbuf, recvbuf, count, datatype, op, ring.hostCodec,
                      comm->seed, comm->collectiveSeq, comm->rank, comm->nranks};
  args.specHash = spec.hash;
  args.residual = ring.residual;
  DevicePrims prims(args, *ring.deviceCodec, stream);
  CC_CHECK(row.runOnDevice(prims, args, ring.channels));
  CC_CHECK(endDeviceRing(state, stream));
  comm->lastAlgorithm = row.name;
  ++comm->collectiveSeq;
  return CC_SUCCESS;
}

}  // namespace

cc_result_t commDeviceAllreduce(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count,
                                cc_datatype_t datatype, cc_red_op_t op, const char* specText, cc_residual_t residual,
                                void* stream) {
  const CodecSpec* spec = nullptr;
  CC_CHECK(commSpec(comm, specText, &spec));
  std::unique_lock<std::mutex> lock(comm->callMutex);
  if (comm->asyncError.load() != CC_SUCCESS) {
    return setError(CC_INVALID_USAGE, "the communicator is broken by an earlier %s; create a new one",
                    resultName(static_cast<cc_result_t>(comm->asyncError.load())));
  }
  if (residual != nullptr && specCompresses(*spec, datatype, op)) CC_CHECK(checkFeedbackConverges(*spec, count));
  const std::string obstacle = nativeObstacle(comm, *spec, specCompresses(*spec, datatype, op), residual);
  if (!obstacle.empty()) {
    if (firstStagingFor(*comm->device, obstacle)) {
      CC_INFO("rank %d: device buffers staged through host memory: %s", comm->rank, obstacle.c_str());
    }
    lock.unlock();  // the host path takes the call lock itself
    return runStaged(comm, sendbuf, recvbuf, count, datatype, op, specText, residual, stream);
  }
  const uint64_t seq = comm->collectiveSeq;
  cc_result_t result = runNative(comm, sendbuf, recvbuf, count, datatype, op, *spec, residual, stream);
  if (result == CC_SUCCESS && stream == nullptr) result = synchronizeDefaultStream();
  if (result != CC_SUCCESS) {
    if (result != CC_UNSUPPORTED && result != CC_INVALID_USAGE) {
      comm->asyncError.store(result);
      deviceAbort(*comm->device);
    }
    return addErrorContext(result, "compressed_allreduce #%llu on device buffers (%zu x %s, %s, codec %s) on rank %d",
                           static_cast<unsigned long long>(seq), count, datatypeName(datatype), opName(op),
                           spec->canonical.c_str(), comm->rank);
  }
  return CC_SUCCESS;
}

cc_result_t commDeviceFinalize(cc_comm_t comm) { return comm->device ? deviceFinalize(*comm->device) : CC_SUCCESS; }

cc_result_t commDeviceAsyncError(cc_comm_t comm) {
  return comm->device ? deviceAsyncError(*comm->device) : CC_SUCCESS;
}

}  // namespace cc
