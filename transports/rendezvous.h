// What transports need of the bootstrap: a key-value store that every rank
// of the communicator reaches. Gloo connects its full mesh through it (it is
// a gloo::rendezvous::Store); NCCL's unique id travels on it. The interface
// lives here, in the transport layer, so that transports never reach up into
// the communicator: the bootstrap's StoreClient (comm/bootstrap.h)
// implements it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "compressedcoll.h"

namespace cc {

// The gloo::rendezvous::Store overrides throw (Gloo expects that); the try*
// calls return a cc_result_t with a message instead.
class RendezvousStore : public gloo::rendezvous::Store {
 public:
  virtual cc_result_t trySet(const std::string& key, const std::vector<char>& value) = 0;
  // Waits until the key exists (or the timeout), then returns its value.
  virtual cc_result_t tryGet(const std::string& key, std::vector<char>* value) = 0;
  // Atomically adds delta to the integer stored at key (0 when absent).
  virtual cc_result_t tryAdd(const std::string& key, int64_t delta, int64_t* result) = 0;
  // Returns when every rank has entered the barrier of this name.
  virtual cc_result_t barrier(const std::string& name) = 0;
  // This rank's numeric address towards the store's host: the interface
  // that reaches the other ranks, which Gloo listens on unless
  // CC_SOCKET_IFNAME names another.
  virtual std::string localHost() const = 0;
};

}  // namespace cc
