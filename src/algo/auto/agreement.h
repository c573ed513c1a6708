// How auto's ranks decide alike: each rank's own times go through one exact
// ring call with MAX, so every rank holds the slowest rank's and draws the
// same conclusions from them.
#pragma once

#include <cstddef>

#include "compressedcoll.h"

namespace cc {

struct CollectiveState;

// agreed[0..count) <- the largest of every rank's own[0..count); `what`
// names the figures in an error.
cc_result_t agreeOnSlowest(CollectiveState& state, const double* own, double* agreed, size_t count, const char* what);

}  // namespace cc
