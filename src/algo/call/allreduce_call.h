// The call path of one compressed_allreduce below the communicator: the
// spec's codecs and the algorithm the table allows, the tensors of a fused
// call concatenated, then one of the paths (one rank; an exact spec with a
// residual folded in; randk's compacted vector; the algorithm itself), and
// the results handed back to each tensor.
#pragma once

#include <cstddef>

#include "algo/call/collectives.h"
#include "compressedcoll.h"

namespace cc {

// One tensor of a (possibly fused) call.
struct TensorCall {
  const void* sendbuf;
  void* recvbuf;
  size_t count;
  cc_residual_t residual;
};

// One collective over `tensors` (more than one: fused, see cc_group_end) as
// the next collective of `state`; `specText` null or empty: the
// communicator's codec. On failure `*broken` says whether the collective had
// begun, so that peers may be waiting on this rank and the communicator must
// break its links; a call refused before it began leaves it usable.
cc_result_t runAllreduce(CollectiveState& state, const TensorCall* tensors, size_t ntensors, cc_datatype_t datatype,
                         cc_red_op_t op, const char* specText, bool* broken);

}  // namespace cc
