// The communicator: bootstrap, transport, the ring's channels, and the
// sequence number that keys each collective's randomness.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "api/config.h"
#include "codec/codec.h"
#include "compressedcoll.h"
#include "transports/transport.h"

struct cc_comm {
  int rank = 0;
  int nranks = 1;
  cc::ResolvedConfig config;
  uint64_t seed = 0;
  std::unique_ptr<cc::Transport> transport;
  std::unique_ptr<cc::SendChannel> toNext;
  std::unique_ptr<cc::RecvChannel> fromPrev;
  uint64_t collectiveSeq = 0;  // collectives issued so far; identical on every rank
  // Codecs by (datatype, op), made on first use so calls allocate nothing.
  std::unique_ptr<cc::Codec> codecs[CC_NUM_DATATYPES][CC_NUM_OPS];
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
cc_result_t commAllreduce(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count,
                          cc_datatype_t datatype, cc_red_op_t op);
void commAbort(cc_comm_t comm);
const char* datatypeName(cc_datatype_t datatype);
const char* opName(cc_red_op_t op);

}  // namespace cc
