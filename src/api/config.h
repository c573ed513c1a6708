// A communicator's settings from the C API: the caller's cc_config_t, its
// unset fields filled from the environment, then from the defaults
// (comm/settings.h holds what they resolve to).
#pragma once

#include "algo/registry.h"
#include "base/error.h"
#include "comm/settings.h"

namespace cc {

// An algorithm of the table (algo/registry.h) or "auto", in any case;
// `source` names where the text came from in the error, which lists the
// valid names.
cc_result_t parseAlgo(const char* text, const char* source, AlgoId* out);

// CC_INVALID_ARGUMENT with a message for a config not made by
// CC_CONFIG_INITIALIZER, or a field / environment variable with an unknown
// value (the message lists the valid ones).
cc_result_t resolveConfig(const cc_config_t* config, ResolvedConfig* out);

}  // namespace cc
