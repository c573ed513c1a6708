// Allgather of whole-vector encodings: one encode per rank (the worker codec
// C_W only), no re-encoding, so it carries what a ring hop cannot (top-k,
// whose union of indices grows; norms over a whole tensor or model). Each
// rank's encoding moves around the ring in fragments, forwarded unchanged;
// then every rank decodes the n encodings in rank order.
#include <cstring>

#include "algo/algo.h"
#include "algo/call/collectives.h"
#include "base/error.h"
#include "codec/elements.h"
#include "codec/spec_codecs.h"

namespace cc {

cc_result_t allgatherAllreduce(Prims& prims, const CollectiveArgs& args, const RingChannels& channels,
                               const VectorCall& call) {
  const int n = args.nranks;
  const int rank = args.rank;
  const int prev = (rank + n - 1) % n;
  const size_t streamBytes = call.codec->encodedBytes(call.layout);
  auto encodingOf = [&](int origin) { return call.encodings + static_cast<size_t>(origin) * streamBytes; };

  call.codec->encode(call.values, call.layout, prims.randomFor(0), encodingOf(rank), call.residual);

  const size_t fragment = prims.fragmentBytes(channels.toNext->slotBytes());
  const size_t fragments = (streamBytes + fragment - 1) / fragment;
  // Fragment f of every origin moves before fragment f + 1 of any, so each
  // link holds at most one fragment per origin in flight, as in ring's allgather.
  for (size_t f = 0; f < fragments; ++f) {
    const size_t offset = f * fragment;
    const size_t bytes = streamBytes - offset < fragment ? streamBytes - offset : fragment;
    if (n > 1) CC_CHECK(prims.sendFragment(*channels.toNext, encodingOf(rank), offset, bytes, streamBytes, 0));
    for (int step = 1; step <= n - 1; ++step) {
      const int origin = ((rank - step) % n + n) % n;
      CC_CHECK(prims.recvForwardFragment(*channels.fromPrev, prev, step == n - 1 ? nullptr : channels.toNext,
                                         encodingOf(origin), offset, bytes, streamBytes,
                                         static_cast<uint32_t>(step)));
    }
  }

  std::memset(call.sum, 0, call.layout.count * sizeof(float));
  for (int origin = 0; origin < n; ++origin) {
    cc_result_t result = call.codec->decodeAccumulate(encodingOf(origin), call.layout, call.sum);
    if (result != CC_SUCCESS) return addErrorContext(result, "the encoding of rank %d", origin);
  }
  if (args.op == CC_AVG) {
    const float divisor = static_cast<float>(n);
    for (size_t i = 0; i < call.layout.count; ++i) call.sum[i] /= divisor;
  }
  return CC_SUCCESS;
}

namespace {

// The whole vector in float32 p = x + e, encoded once per rank.
cc_result_t runAllgather(const AlgorithmCall& call) {
  const AlgorithmRun& run = call.run;
  if (call.codecs.spec.selector == Selector::TopK && run.count > 0xffffffffull) {
    return setError(CC_UNSUPPORTED, "topk carries 32-bit indices: a call of %zu values is too large; split it",
                    run.count);
  }
  const VectorCodec* vector = nullptr;
  CC_CHECK(vectorCodec(call.codecs, &vector));
  CallScratch& scratch = call.scratch;
  // The codec reads float32 p = x + e and the sum is float32: float32 calls
  // without a residual use the user's buffers as they are (the input is
  // encoded before the sum is written, so in place works too).
  const ElementType type = elementTypeOf(run.datatype);
  const bool direct = type == ElementType::F32;
  const float* values = static_cast<const float*>(run.input);
  if (!direct || run.residual != nullptr) {
    float* p = grow(scratch.vectorValues, run.count);
    for (size_t i = 0; i < run.count; ++i) {
      p[i] = loadFloat(type, run.input, i) + (run.residual ? run.residual[i] : 0.0f);
    }
    values = p;
  }
  VectorCall vectorCall;
  vectorCall.codec = vector;
  vectorCall.layout = run.layout;
  vectorCall.values = values;
  vectorCall.residual = run.residual;
  vectorCall.sum = direct ? static_cast<float*>(run.output) : grow(scratch.vectorSum, run.count);
  const size_t encoded = vector->encodedBytes(run.layout);
  vectorCall.encodings = grow(scratch.encodings, encoded * static_cast<size_t>(call.args.nranks));
  CC_CHECK(allgatherAllreduce(call.prims, call.args, call.ring, vectorCall));
  if (!direct) {
    for (size_t i = 0; i < run.count; ++i) storeFloat(type, run.output, i, vectorCall.sum[i]);
  }
  return CC_SUCCESS;
}

}  // namespace

// Not one of auto's candidates: auto runs it only for what no chunked
// algorithm can carry (top-k, norms over a tensor or the model).
const AlgorithmRow& allgatherAlgorithm() {
  static const AlgorithmRow row = [] {
    AlgorithmRow r;
    r.name = "allgather";
    // Any codec: the whole-vector codec takes every scope, and top-k.
    r.cannotCarry = cannotSumInFloat32;
    r.run = runAllgather;
    return r;
  }();
  return row;
}

}  // namespace cc
