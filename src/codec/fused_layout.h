// The layout of a fused call (cc_group_end): its tensors concatenated into
// one vector, each after the first starting on a block boundary, so that
// codec blocks, dithering buckets and Philox counters never straddle two
// tensors and a tensor's values encode as they would alone at that offset.
#pragma once

#include <cstddef>
#include <vector>

#include "codec/codec.h"

namespace cc {

constexpr size_t kTensorAlignmentValues = kBlockValues;

// offsets <- where each of the `ntensors` tensors of `counts` starts, then
// the vector's length (ntensors + 1 entries; TensorLayout's offsets).
void fusedTensorOffsets(const size_t* counts, size_t ntensors, std::vector<size_t>* offsets);

}  // namespace cc
