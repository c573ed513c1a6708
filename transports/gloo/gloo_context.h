// A Gloo context connected in a full mesh through our rendezvous store: what
// the Gloo transport runs on, and what the benchmark's baseline
// (gloo::allreduce, the engine's own uncompressed allreduce) runs on, so both
// use the same device, interface and timeout.
#pragma once

#include <gloo/rendezvous/context.h>

#include <memory>

#include "transports/transport.h"

namespace cc {

cc_result_t connectGlooContext(const TransportSetup& setup, bool ibverbs,
                               std::shared_ptr<gloo::rendezvous::Context>* context,
                               std::shared_ptr<gloo::transport::Device>* device, double* linkGbps);

}  // namespace cc
