// The random word of each global value index (docs/wire-format.md,
// "Randomness"), calling Philox once per group of 4 values instead of once
// per value. Shared by the scalar encoders of every stochastic codec.
#pragma once

#include <cstdint>

#include "codec/codec.h"
#include "cuda/philox.h"

namespace cc {

class ValueRandomness {
 public:
  explicit ValueRandomness(RandomStream rs) : stream_(rs.stream) { philoxKeyFromSeed(rs.seed, key_); }

  uint32_t wordFor(uint64_t valueIndex) {
    const uint64_t group = valueIndex / 4;
    if (!haveGroup_ || group != group_) {
      uint32_t counter[4];
      philoxCounterForGroup(group, stream_, counter);
      words_ = philox4x32_10(counter, key_);
      group_ = group;
      haveGroup_ = true;
    }
    return words_.v[valueIndex % 4];
  }

 private:
  uint32_t key_[2];
  uint64_t stream_;
  uint64_t group_ = 0;
  bool haveGroup_ = false;
  Philox4x32 words_{};
};

}  // namespace cc
