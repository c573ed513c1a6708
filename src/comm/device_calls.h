// Collectives on device buffers (CUDA builds): the communicator assembles
// the GPU path's pieces (cuda/device_runtime.h). A call runs natively where
// the algorithm table gives its algorithm a device entry point and its codec
// has kernels, enqueued on the caller's stream; anything else is staged
// through host memory and the host path.
#pragma once

#include <cstddef>

#include "comm/comm.h"
#include "compressedcoll.h"

namespace cc {

// One collective on device buffers, enqueued on `stream` (a cudaStream_t;
// null: the default stream, and the call blocks until done).
cc_result_t commDeviceAllreduce(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count,
                                cc_datatype_t datatype, cc_red_op_t op, const char* specText, cc_residual_t residual,
                                void* stream);
// Waits for the device collectives the communicator enqueued (finalize).
cc_result_t commDeviceFinalize(cc_comm_t comm);
// The GPU engine's asynchronous error (NCCL), CC_SUCCESS when none.
cc_result_t commDeviceAsyncError(cc_comm_t comm);

}  // namespace cc
