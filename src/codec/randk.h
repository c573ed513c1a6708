// randk's shared mask (docs/wire-format.md, "randk"): every rank draws the
// same positions from the communicator's seed and the collective's sequence
// number, so kept values line up without sending indices.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cc {

// Writes the kept positions of [0, count), ascending, to `kept` (room for
// count entries) and returns how many there are: position i is kept iff its
// Philox word under key seed ^ kRandKMaskKey, stream collectiveSeq, is below
// ratio * 2^32.
size_t randkKeptPositions(uint64_t seed, uint64_t collectiveSeq, double ratio, size_t count, uint64_t* kept);

}  // namespace cc
