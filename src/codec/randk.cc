#include "codec/randk.h"

#include <cmath>

#include "cuda/philox.h"

namespace cc {
namespace {

// The mask has its own Philox key, so no encode's stream can coincide with it.
constexpr uint64_t kRandKMaskKey = 0x72616e646b6d736bull;  // "randkmsk"

}  // namespace

size_t randkKeptPositions(uint64_t seed, uint64_t collectiveSeq, double ratio, size_t count, uint64_t* kept) {
  const uint64_t threshold = static_cast<uint64_t>(std::ldexp(ratio, 32));
  uint32_t key[2];
  philoxKeyFromSeed(seed ^ kRandKMaskKey, key);
  size_t keptCount = 0;
  // One Philox call gives the words of 4 positions.
  for (size_t group = 0; group * 4 < count; ++group) {
    uint32_t counter[4];
    philoxCounterForGroup(group, collectiveSeq, counter);
    const Philox4x32 words = philox4x32_10(counter, key);
    const size_t lanes = count - group * 4 < 4 ? count - group * 4 : 4;
    for (size_t lane = 0; lane < lanes; ++lane) {
      if (words.v[lane] < threshold) kept[keptCount++] = group * 4 + lane;
    }
  }
  return keptCount;
}

}  // namespace cc
