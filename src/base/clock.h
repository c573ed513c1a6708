// Time for measurements: seconds on the steady clock (never jumps with the
// wall clock, so intervals stay right across NTP adjustments).
#pragma once

#include <chrono>

namespace cc {

inline double nowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace cc
