#include "cuda/device_runtime.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "base/datatypes.h"
#include "base/error.h"
#include "base/log.h"
#include "codec/residual.h"
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
  DeviceSetup setup;  // for the local device transport, made at the first device call
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
cc_result_t ensureRing(DeviceState& state, int rank, int nranks) {
  if (!state.transport) {
    CC_CHECK(cudaDeviceOfThisThread(&state.device));
    CC_CHECK(createLocalDeviceTransport(state.setup.transport, &state.transport));
  }
  if (!state.toNext) {
    const size_t slotBytes = std::max(kMinDeviceSlotBytes, state.setup.chunkBytes);
    CC_CHECK(state.transport->openSend((rank + 1) % nranks, kDeviceRingTag, slotBytes, kDeviceSlots, &state.toNext));
    CC_CHECK(state.transport->openRecv((rank + nranks - 1) % nranks, kDeviceRingTag, slotBytes, kDeviceSlots,
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

}  // namespace

cc_result_t deviceInit(const DeviceSetup& setup, RendezvousStore& store, std::shared_ptr<DeviceState>* out) {
  auto state = std::make_shared<DeviceState>();
  state->setup = setup;
  state->setup.transport.store = nullptr;  // the init store is gone after init
  const int rank = setup.transport.rank, nranks = setup.transport.nranks;
  if (setup.sameProcess || nranks == 1) {
    *out = state;
    return CC_SUCCESS;
  }
  // Gloo between processes: NCCL when every rank has a GPU of its own.
  const std::string mine = deviceIdentity(&state->device);
  const std::string prefix = "cc/device/";
  CC_CHECK(store.trySet(prefix + std::to_string(rank), std::vector<char>(mine.begin(), mine.end())));
  std::vector<std::string> identities(nranks);
  for (int r = 0; r < nranks; ++r) {
    std::vector<char> bytes;
    CC_CHECK(store.tryGet(prefix + std::to_string(r), &bytes));
    identities[r].assign(bytes.begin(), bytes.end());
  }
  for (int r = 0; r < nranks && state->unavailable.empty(); ++r) {
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
    TransportSetup ncclSetup = setup.transport;
    ncclSetup.store = &store;
    if (createNcclTransport(ncclSetup, &state->transport) == CC_SUCCESS) {
      state->nccl = true;
    } else {
      // The host path still works: device calls are staged through it.
      state->unavailable = lastErrorMessage();
      CC_WARN("rank %d: device collectives will be staged through host memory: %s", rank,
              state->unavailable.c_str());
      clearLastError();
    }
  }
#else
  if (state->unavailable.empty()) state->unavailable = "this build has no NCCL (nccl.h was not found when it was configured)";
#endif
  if (!state->unavailable.empty()) CC_INFO("rank %d: no device collectives: %s", rank, state->unavailable.c_str());
  *out = state;
  return CC_SUCCESS;
}

const std::string& deviceUnavailable(const DeviceState& state) { return state.unavailable; }

bool firstStagingFor(DeviceState& state, const std::string& reason) {
  return state.stagedReasons.insert(reason).second;
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

cc_result_t deviceCopyOneRank(DeviceState& state, const void* sendbuf, void* recvbuf, size_t bytes, void* stream) {
  CC_CHECK(cudaDeviceOfThisThread(&state.device));
  if (sendbuf != recvbuf) {
    const cudaError_t status =
        cudaMemcpyAsync(recvbuf, sendbuf, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream));
    if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpyAsync (one rank)");
  }
  return CC_SUCCESS;
}

cc_result_t beginDeviceRing(DeviceState& state, int rank, int nranks, const CodecSpec& spec, cc_datatype_t datatype,
                            cc_red_op_t op, cc_residual* residual, void* stream, DeviceRing* ring) {
  CC_CHECK(ensureRing(state, rank, nranks));
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != state.device) {
    return setError(CC_INVALID_USAGE,
                    "this rank's device collectives run on GPU %d, but GPU %d is current (cudaSetDevice(%d) "
                    "before the call)",
                    state.device, current, state.device);
  }
  DeviceCodecs* codecs = nullptr;
  CC_CHECK(codecsFor(state, spec, datatype, op, &codecs));
  ring->hostCodec = codecs->host.get();
  ring->deviceCodec = codecs->device.get();
  ring->residual = nullptr;
  if (residual != nullptr) CC_CHECK(residualOnDevice(residual, &ring->residual));
  ring->channels = RingChannels{state.toNext.get(), state.fromPrev.get()};
  state.transport->setStream(stream);
  return CC_SUCCESS;
}

cc_result_t endDeviceRing(DeviceState& state, void* stream) {
  CC_CHECK(state.transport->flush());
  const cudaError_t status = cudaEventRecord(state.done, static_cast<cudaStream_t>(stream));
  if (status != cudaSuccess) return cudaFailure(status, "cudaEventRecord (collective done)");
  return CC_SUCCESS;
}

cc_result_t stageToHost(DeviceState& state, const void* sendbuf, size_t bytes, void* stream, void** host) {
  cudaError_t status = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  if (status != cudaSuccess) return cudaFailure(status, "cudaStreamSynchronize (staging)");
  if (state.staging.size() < bytes) state.staging.resize(bytes);
  status = cudaMemcpy(state.staging.data(), sendbuf, bytes, cudaMemcpyDeviceToHost);
  if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpy (staging the input)");
  *host = state.staging.data();
  return CC_SUCCESS;
}

cc_result_t stageFromHost(const void* host, void* recvbuf, size_t bytes) {
  const cudaError_t status = cudaMemcpy(recvbuf, host, bytes, cudaMemcpyHostToDevice);
  if (status != cudaSuccess) return cudaFailure(status, "cudaMemcpy (staging the result)");
  return CC_SUCCESS;
}

cc_result_t synchronizeDefaultStream() {
  const cudaError_t status = cudaStreamSynchronize(nullptr);
  if (status != cudaSuccess) return cudaFailure(status, "cudaStreamSynchronize (default stream)");
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

cc_result_t deviceFinalize(DeviceState& state) {
  if (state.done == nullptr) return CC_SUCCESS;
  const cudaError_t status = cudaEventSynchronize(state.done);
  if (status != cudaSuccess) return cudaFailure(status, "cudaEventSynchronize (finalize)");
  return CC_SUCCESS;
}

void deviceAbort(DeviceState& state) {
  if (state.transport) state.transport->abort();
}

cc_result_t deviceAsyncError(DeviceState& state) {
#ifdef CC_HAVE_NCCL
  if (state.nccl && state.transport) return ncclTransportAsyncError(*state.transport);
#else
  (void)state;
#endif
  return CC_SUCCESS;
}

}  // namespace cc
