// The GPU path's pieces, which the communicator assembles into device
// collectives (comm/device_calls.cc): plain C++, so that src/ stays free of
// CUDA types. Present in CUDA builds (CC_HAVE_CUDA). This layer knows
// nothing of the communicator: what it needs arrives as arguments.
//
// A communicator's device state is made at init: with the local transport a
// local device transport (ranks as threads sharing GPUs, no CUDA call until
// the first device collective); with Gloo, when every rank has a GPU of its
// own, an NCCL communicator made from our bootstrap.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "codec/codec.h"
#include "codec/spec.h"
#include "compressedcoll.h"
#include "cuda/device_codec.h"
#include "prims/prims.h"
#include "transports/transport.h"

struct cc_residual;

namespace cc {

class RendezvousStore;

// One communicator's device transport, channels, codecs and completion event.
struct DeviceState;

struct DeviceSetup {
  TransportSetup transport;  // the host transport's (its store is read at init only)
  size_t chunkBytes = 0;     // CC_CHUNK_BYTES: device slots are at least 4 MiB
  bool sameProcess = false;  // ranks are threads of one process (the local transport)
};

// Collective at init; `store` is the init store (NCCL's id travels on it).
// Never fails for want of a GPU: device calls then say why they cannot run.
cc_result_t deviceInit(const DeviceSetup& setup, RendezvousStore& store, std::shared_ptr<DeviceState>* out);
// Why device collectives cannot run natively ("" when they can).
const std::string& deviceUnavailable(const DeviceState& state);
// Whether `reason` for staging a call is news on this communicator (it is
// then remembered, so that it is logged once).
bool firstStagingFor(DeviceState& state, const std::string& reason);

// Whether `pointer` is GPU (or managed) memory, by its CUDA attributes.
bool isDeviceMemory(const void* pointer);

// A one-rank collective on the GPU: the input, copied on `stream`.
cc_result_t deviceCopyOneRank(DeviceState& state, const void* sendbuf, void* recvbuf, size_t bytes, void* stream);

// One native collective on the device ring: beginDeviceRing opens the
// ring's device channels at the first call (every rank makes it, so the
// opens meet), checks that this rank's GPU is current, and readies the
// codecs of (spec, datatype, op), the residual on the GPU and the
// transport's stream; the caller runs the ring on DevicePrims
// (cuda/device_prims.h) made of them; endDeviceRing flushes the transport
// and records the collective's completion.
struct DeviceRing {
  const Codec* hostCodec = nullptr;          // sizes and alignment (CollectiveArgs::codec)
  const DeviceCodec* deviceCodec = nullptr;  // the kernels
  float* residual = nullptr;                 // the residual's values on the GPU, or null
  RingChannels channels{};
};
cc_result_t beginDeviceRing(DeviceState& state, int rank, int nranks, const CodecSpec& spec, cc_datatype_t datatype,
                            cc_red_op_t op, cc_residual* residual, void* stream, DeviceRing* ring);
cc_result_t endDeviceRing(DeviceState& state, void* stream);

// Staging a call through host memory: waits for `stream`, copies `bytes`
// of the input into a host buffer of the state's (*host), and back.
cc_result_t stageToHost(DeviceState& state, const void* sendbuf, size_t bytes, void* stream, void** host);
cc_result_t stageFromHost(const void* host, void* recvbuf, size_t bytes);

// Waits for the whole default stream (a call without a stream blocks).
cc_result_t synchronizeDefaultStream();
// Host collectives handed a stream wait for the work already on it.
cc_result_t synchronizeStream(void* stream);
// Brings an error-feedback residual last updated on the GPU back to `values`.
cc_result_t residualToHost(cc_residual* residual);
// Waits for the device collectives this state enqueued (finalize).
cc_result_t deviceFinalize(DeviceState& state);
// Breaks the device transport's connections too (abort, or a failed call).
void deviceAbort(DeviceState& state);
// The GPU engine's asynchronous error (NCCL), CC_SUCCESS when none.
cc_result_t deviceAsyncError(DeviceState& state);

}  // namespace cc
