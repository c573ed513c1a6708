#include "codec/fused_layout.h"

namespace cc {

void fusedTensorOffsets(const size_t* counts, size_t ntensors, std::vector<size_t>* offsets) {
  offsets->assign(1, 0);
  for (size_t t = 0; t < ntensors; ++t) {
    size_t end = offsets->back() + counts[t];
    if (t + 1 < ntensors) end = (end + kTensorAlignmentValues - 1) / kTensorAlignmentValues * kTensorAlignmentValues;
    offsets->push_back(end);
  }
}

}  // namespace cc
