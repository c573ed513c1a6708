#include "cuda/device_runtime.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "algo/algo.h"
#include "base/error.h"
#include "base/log.h"
#include "comm/comm.h"
#include "cuda/device_codec.h"
#include "cuda/device_prims.h"
#include "transports/rendezvous.h"
#include "transports/transport.h"

namespace cc {

namespace {

// Device messages are larger than host ones: a kernel launch per hop costs
// microseconds, so chunks of a few MiB keep launches out of the time.
constexpr size_t kMinDeviceSlotBytes = 4u << 20;
constexpr int kDeviceSlots = 2;  // stream order frees a slot once the next hop is enqueued
constexpr int kDeviceRingTag = 16;

cc_result_t cudaFailure(cudaError_t status, const char* what) {
  return setError(CC_CUDA_ERROR, "%s: %s", what, cudaGetErrorString(status));
}

struct DeviceCodecs {
  std::unique_ptr<Codec> host;  // sizes and alignment
  std::unique_ptr<DeviceCodec> device;
};

}  // namespace

struct DeviceState {
  ~DeviceState() {
    if (done != nullptr) {
      cudaEventSynchronize(done);
      cudaEventDestroy(done);
    }
  }

  // Why device collectives cannot run here ("" when they can).
  std::string unavailable;
  int device = -1;  // the GPU of this rank, fixed at its first device call (local) or init (NCCL)
  bool nccl = false;
  TransportSetup setup;  // for the local device transport, made at the first device call
  std::unique_ptr<Transport> transport;
  std::unique_ptr<SendChannel> toNext;
  std::unique_ptr<RecvChannel> fromPrev;
  // By spec (the communicator keeps each parsed spec for its lifetime), datatype, op.
  std::map<std::tuple<const CodecSpec*, int, int>, DeviceCodecs> codecs;
  cudaEvent_t done = nullptr;  // recorded after each device collective
  std::vector<unsigned char> staging;  // host copy of staged calls
  std::set<std::string> stagedReasons;  // logged once each
};

namespace {

cc_result_t cudaDeviceOfThisThread(int* device) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();
    return setError(CC_UNSUPPORTED, "no CUDA device (%s)",
                    status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
  }
  status = cudaGetDevice(device);
  if (status != cudaSuccess) return cudaFailure(status, "cudaGetDevice");
  return CC_SUCCESS;
}

// The UUID of this rank's GPU, or "none": ranks agree on NCCL only when every
// one has a GPU of its own (NCCL refuses two ranks on one GPU).
std::string deviceIdentity(int* device) {
  if (cudaDeviceOfThisThread(device) != CC_SUCCESS) {
    clearLastError();
    return "none";
  }
  cudaDeviceProp properties;
  if (cudaGetDeviceProperties(&properties, *device) != cudaSuccess) {
    cudaGetLastError();
    return "none";
  }
  char text[2 * sizeof(properties.uuid.bytes) + 1];
  for (size_t i = 0; i < sizeof(properties.uuid.bytes); ++i) {
    std::snprintf(text + 2 * i, 3, "%02x", static_cast<unsigned char>(properties.uuid.bytes[i]));
  }
  return text;
}

// Opens the ring's channels on the device transport at the first device
// collective (every rank makes it, so the opens meet).
cc_result_t ensureRing(cc_comm_t comm, DeviceState& state) {
  if (!state.transport) {
    CC_CHECK(cudaDeviceOfThisThread(&state.device));
    CC_CHECK(createLocalDeviceTransport(state.setup, &state.transport));
  }
  if (!state.toNext) {
    const int n = comm->nranks;
    const size_t slotBytes = std::max(kMinDeviceSlotBytes, comm->config.chunkBytes);
    CC_CHECK(state.transport->openSend((comm->rank + 1) % n, kDeviceRingTag, slotBytes, kDeviceSlots, &state.toNext));
    CC_CHECK(state.transport->openRecv((comm->rank + n - 1) % n, kDeviceRingTag, slotBytes, kDeviceSlots,
                                       &state.fromPrev));
  }
  if (state.done == nullptr) {
    const cudaError_t status = cudaEventCreateWithFlags(&state.done, cudaEventDisableTiming);
    if (status != cudaSuccess) return cudaFailure(status, "cudaEventCreateWithFlags");
  }
  return CC_SUCCESS;
}

cc_result_t codecsFor(DeviceState& state, const CodecSpec& spec, cc_datatype_t datatype, cc_red_op_t op,
                      DeviceCodecs** out) {
  DeviceCodecs& codecs = state.codecs[std::make_tuple(&spec, static_cast<int>(datatype), static_cast<int>(op))];
  if (!codecs.device) {
    codecs.host = makeBlockCodec(spec, datatype, op);
    if (!codecs.host) return addErrorContext(CC_INTERNAL_ERROR, "no host codec for %s", spec.canonical.c_str());
    codecs.device = makeDeviceBlockCodec(spec, datatype, op);
    if (!codecs.device) {
      return addErrorContext(CC_UNSUPPORTED, "no device codec for %s on %s %s", spec.canonical.c_str(),
                             datatypeName(datatype), opName(op));
    }
  }
  *out = &codecs;
  return CC_SUCCESS;
}

// The residual's float32 values on the GPU, copied there on first use.
cc_result_t residualOnDevice(cc_residual* residual, float** out) {
  if (!residual->deviceValues) {
    float* memory = nullptr;
    const cudaError_t status = cudaMalloc(&memory, std::max<size_t>(1, residual->count) * sizeof(float));
    if (status != cudaSuccess) return cudaFailure(status, "cudaMalloc (error-feedback residual)");
    residual->deviceValues = std::shared_ptr<float>(memory, [](float* p) { cudaFree(p); });
  }
  if (!residual->deviceCurrent) {
    const cudaError_t status = cudaMemcpy(residual->deviceValues.get(), residual->values.data(),
                                          residual->count * sizeof(float), cudaMemcpyHostToDevice);
    if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpy (residual to the GPU)");
    residual->deviceCurrent = true;
  }
  *out = residual->deviceValues.get();
  return CC_SUCCESS;
}

// Why a call cannot run natively on the GPU (the ring on block codecs, over a
// device transport), or an empty string when it can. Such calls are staged
// through host memory instead.
std::string nativeObstacle(cc_comm_t comm, const DeviceState& state, const CodecSpec& spec, bool compresses,
                           const cc_residual* residual) {
  if (!state.unavailable.empty()) return state.unavailable;
  if (comm->config.algo != AlgoId::Auto && comm->config.algo != AlgoId::Ring) {
    return std::string("algorithm ") + algoName(comm->config.algo) + " has no device path yet";
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
cc_result_t runStaged(cc_comm_t comm, DeviceState& state, const void* sendbuf, void* recvbuf, size_t count,
                      cc_datatype_t datatype, cc_red_op_t op, const char* specText, cc_residual* residual,
                      cudaStream_t stream) {
  const size_t bytes = count * elementBytes(elementTypeOf(datatype));
  cudaError_t status = cudaStreamSynchronize(stream);
  if (status != cudaSuccess) return cudaFailure(status, "cudaStreamSynchronize (staging)");
  if (state.staging.size() < bytes) state.staging.resize(bytes);
  status = cudaMemcpy(state.staging.data(), sendbuf, bytes, cudaMemcpyDeviceToHost);
  if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpy (staging the input)");
  if (residual != nullptr) CC_CHECK(residualToHost(residual));
  const TensorCall call{state.staging.data(), state.staging.data(), count, residual};
  CC_CHECK(commAllreduce(comm, &call, 1, datatype, op, specText));
  status = cudaMemcpy(recvbuf, state.staging.data(), bytes, cudaMemcpyHostToDevice);
  if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpy (staging the result)");
  return CC_SUCCESS;
}

cc_result_t runDeviceCollective(cc_comm_t comm, DeviceState& state, const void* sendbuf, void* recvbuf, size_t count,
                                cc_datatype_t datatype, cc_red_op_t op, const CodecSpec& spec, cc_residual* residual,
                                cudaStream_t stream) {
  if (comm->nranks == 1) {
    CC_CHECK(cudaDeviceOfThisThread(&state.device));
    if (sendbuf != recvbuf) {
      const cudaError_t status = cudaMemcpyAsync(recvbuf, sendbuf, count * elementBytes(elementTypeOf(datatype)),
                                                 cudaMemcpyDeviceToDevice, stream);
      if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpyAsync (one rank)");
    }
    comm->lastAlgorithm = "none";
    ++comm->collectiveSeq;
    return CC_SUCCESS;
  }
  CC_CHECK(ensureRing(comm, state));
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != state.device) {
    return setError(CC_INVALID_USAGE,
                    "this rank's device collectives run on GPU %d, but GPU %d is current (cudaSetDevice(%d) "
                    "before the call)",
                    state.device, current, state.device);
  }
  DeviceCodecs* codecs = nullptr;
  CC_CHECK(codecsFor(state, spec, datatype, op, &codecs));
  float* residualValues = nullptr;
  if (residual != nullptr) CC_CHECK(residualOnDevice(residual, &residualValues));

  CollectiveArgs args{sendbuf, recvbuf, count, datatype, op, codecs->host.get(),
                      comm->seed, comm->collectiveSeq, comm->rank, comm->nranks};
  args.specHash = spec.hash;
  args.residual = residualValues;
  state.transport->setStream(stream);
  DevicePrims prims(args, *codecs->device, stream);
  CC_CHECK(ringAllreduce(prims, args, RingChannels{state.toNext.get(), state.fromPrev.get()}));
  CC_CHECK(state.transport->flush());
  const cudaError_t status = cudaEventRecord(state.done, stream);
  if (status != cudaSuccess) return cudaFailure(status, "cudaEventRecord (collective done)");
  comm->lastAlgorithm = "ring";
  ++comm->collectiveSeq;
  return CC_SUCCESS;
}

}  // namespace

cc_result_t deviceInit(cc_comm_t comm, RendezvousStore& store, const TransportSetup& setup) {
  auto state = std::make_shared<DeviceState>();
  state->setup = setup;
  state->setup.store = nullptr;  // the init store is gone after init
  if (comm->config.transport == TransportKind::Local || comm->nranks == 1) {
    comm->device = state;
    return CC_SUCCESS;
  }
  // Gloo between processes: NCCL when every rank has a GPU of its own.
  const std::string mine = deviceIdentity(&state->device);
  const std::string prefix = "cc/device/";
  CC_CHECK(store.trySet(prefix + std::to_string(comm->rank), std::vector<char>(mine.begin(), mine.end())));
  std::vector<std::string> identities(comm->nranks);
  for (int r = 0; r < comm->nranks; ++r) {
    std::vector<char> bytes;
    CC_CHECK(store.tryGet(prefix + std::to_string(r), &bytes));
    identities[r].assign(bytes.begin(), bytes.end());
  }
  for (int r = 0; r < comm->nranks && state->unavailable.empty(); ++r) {
    if (identities[r] == "none") {
      state->unavailable = "rank " + std::to_string(r) + " has no CUDA device";
      break;
    }
    for (int s = 0; s < r; ++s) {
      if (identities[s] == identities[r]) {
        state->unavailable = "ranks " + std::to_string(s) + " and " + std::to_string(r) +
                             " share one GPU, and NCCL needs a GPU per rank (cudaSetDevice before "
                             "cc_comm_init_rank, or the local transport for ranks that share a GPU)";
        break;
      }
    }
  }
#ifdef CC_HAVE_NCCL
  if (state->unavailable.empty()) {
    TransportSetup ncclSetup = setup;
    ncclSetup.store = &store;
    if (createNcclTransport(ncclSetup, &state->transport) == CC_SUCCESS) {
      state->nccl = true;
    } else {
      // The host path still works: device calls are staged through it.
      state->unavailable = lastErrorMessage();
      CC_WARN("rank %d: device collectives will be staged through host memory: %s", comm->rank,
              state->unavailable.c_str());
      clearLastError();
    }
  }
#else
  if (state->unavailable.empty()) state->unavailable = "this build has no NCCL (nccl.h was not found when it was configured)";
#endif
  if (!state->unavailable.empty()) CC_INFO("rank %d: no device collectives: %s", comm->rank, state->unavailable.c_str());
  comm->device = state;
  return CC_SUCCESS;
}

bool isDeviceMemory(const void* pointer) {
  if (pointer == nullptr) return false;
  cudaPointerAttributes attributes;
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
    cudaGetLastError();  // no driver, or memory CUDA never saw: host memory
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

cc_result_t deviceAllreduce(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count, cc_datatype_t datatype,
                            cc_red_op_t op, const char* specText, cc_residual* residual, void* stream) {
  const CodecSpec* spec = nullptr;
  CC_CHECK(commSpec(comm, specText, &spec));
  std::unique_lock<std::mutex> lock(comm->callMutex);
  if (comm->asyncError.load() != CC_SUCCESS) {
    return setError(CC_INVALID_USAGE, "the communicator is broken by an earlier %s; create a new one",
                    resultName(static_cast<cc_result_t>(comm->asyncError.load())));
  }
  DeviceState& state = *comm->device;
  cudaStream_t cudaStream = static_cast<cudaStream_t>(stream);
  const std::string obstacle =
      nativeObstacle(comm, state, *spec, specCompresses(*spec, datatype, op), residual);
  if (!obstacle.empty()) {
    if (state.stagedReasons.insert(obstacle).second) {
      CC_INFO("rank %d: device buffers staged through host memory: %s", comm->rank, obstacle.c_str());
    }
    lock.unlock();  // the host path takes the call lock itself
    return runStaged(comm, state, sendbuf, recvbuf, count, datatype, op, specText, residual, cudaStream);
  }
  const uint64_t seq = comm->collectiveSeq;
  cc_result_t result = runDeviceCollective(comm, state, sendbuf, recvbuf, count, datatype, op, *spec, residual,
                                           cudaStream);
  if (result == CC_SUCCESS && stream == nullptr) {
    const cudaError_t status = cudaStreamSynchronize(nullptr);
    if (status != cudaSuccess) result = cudaFailure(status, "cudaStreamSynchronize (default stream)");
  }
  if (result != CC_SUCCESS) {
    if (result != CC_UNSUPPORTED && result != CC_INVALID_USAGE) {
      comm->asyncError.store(result);
      if (state.transport) state.transport->abort();
    }
    return addErrorContext(result, "compressed_allreduce #%llu on device buffers (%zu x %s, %s, codec %s) on rank %d",
                           static_cast<unsigned long long>(seq), count, datatypeName(datatype), opName(op),
                           spec->canonical.c_str(), comm->rank);
  }
  return CC_SUCCESS;
}

cc_result_t synchronizeStream(void* stream) {
  const cudaError_t status = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  if (status != cudaSuccess) return cudaFailure(status, "cudaStreamSynchronize (host buffers after the stream's work)");
  return CC_SUCCESS;
}

cc_result_t residualToHost(cc_residual* residual) {
  if (!residual->deviceCurrent) return CC_SUCCESS;
  // The last collective that updated it may be on any stream.
  cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess) return cudaFailure(status, "cudaDeviceSynchronize (residual from the GPU)");
  status = cudaMemcpy(residual->values.data(), residual->deviceValues.get(),
                                        residual->count * sizeof(float), cudaMemcpyDeviceToHost);
  if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpy (residual from the GPU)");
  residual->deviceCurrent = false;
  return CC_SUCCESS;
}

cc_result_t deviceFinalize(cc_comm_t comm) {
  if (!comm->device || comm->device->done == nullptr) return CC_SUCCESS;
  const cudaError_t status = cudaEventSynchronize(comm->device->done);
  if (status != cudaSuccess) return cudaFailure(status, "cudaEventSynchronize (finalize)");
  return CC_SUCCESS;
}

void deviceAbort(cc_comm_t comm) {
  if (comm->device && comm->device->transport) comm->device->transport->abort();
}

cc_result_t deviceAsyncError(cc_comm_t comm) {
#ifdef CC_HAVE_NCCL
  if (comm->device && comm->device->nccl && comm->device->transport) {
    return ncclTransportAsyncError(*comm->device->transport);
  }
#else
  (void)comm;
#endif
  return CC_SUCCESS;
}

}  // namespace cc
