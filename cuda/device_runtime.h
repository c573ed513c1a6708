// The GPU path as the communicator and the C API see it: plain C++, so that
// src/ stays free of CUDA types. Present in CUDA builds (CC_HAVE_CUDA).
//
// A communicator's device state is made at init: with the local transport a
// local device transport (ranks as threads sharing GPUs, no CUDA call until
// the first device collective); with Gloo, when every rank has a GPU of its
// own, an NCCL communicator made from our bootstrap. Device collectives run
// the ring on device codecs, enqueued on the caller's stream.
#pragma once

#include <cstddef>
#include <memory>

#include "compressedcoll.h"

struct cc_residual;

namespace cc {

class RendezvousStore;
struct TransportSetup;

// Collective at init; `store` is the init store (NCCL's id travels on it).
// Never fails for want of a GPU: device calls then say why they cannot run.
cc_result_t deviceInit(cc_comm_t comm, RendezvousStore& store, const TransportSetup& setup);

// Whether `pointer` is GPU (or managed) memory, by its CUDA attributes.
bool isDeviceMemory(const void* pointer);

// One collective on device buffers: the ring on device codecs, enqueued on
// `stream` (a cudaStream_t; null: the default stream, and the call blocks
// until done). What has no native device path yet (other algorithms, top-k,
// randk, norms of tensor or model scope, no device transport) is staged
// through host memory: the stream is synchronised and the host path runs.
cc_result_t deviceAllreduce(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count,
                            cc_datatype_t datatype, cc_red_op_t op, const char* specText,
                            cc_residual* residual, void* stream);

// Host collectives handed a stream wait for the work already on it.
cc_result_t synchronizeStream(void* stream);
// Brings an error-feedback residual last updated on the GPU back to `values`.
cc_result_t residualToHost(cc_residual* residual);
// Waits for the device collectives this communicator enqueued (finalize).
cc_result_t deviceFinalize(cc_comm_t comm);
// Breaks the device transport's connections too (cc_comm_abort).
void deviceAbort(cc_comm_t comm);
// The GPU engine's asynchronous error (NCCL), CC_SUCCESS when none.
cc_result_t deviceAsyncError(cc_comm_t comm);

}  // namespace cc
