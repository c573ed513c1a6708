#include "algo/call/allreduce_call.h"

#include <cstring>

#include "algo/auto/compression.h"
#include "algo/call/dispatch.h"
#include "base/clock.h"
#include "base/datatypes.h"
#include "base/error.h"
#include "base/log.h"
#include "codec/elements.h"
#include "codec/fused_layout.h"
#include "codec/randk.h"
#include "codec/residual.h"

namespace cc {
namespace {

// Random sparsification with a mask every rank draws alike from the shared
// seed: the kept values are gathered (scaled by d/q) into a dense vector that
// the inner quantizer reduces position-wise; no indices travel.
cc_result_t runRandK(CollectiveState& state, SpecCodecs& codecs, AlgoId algo, const AlgorithmRun& run) {
  CallScratch& scratch = state.scratch;
  const CodecSpec& spec = codecs.spec;
  const ElementType type = elementTypeOf(run.datatype);
  const float scale = static_cast<float>(1.0 / spec.ratio);
  uint64_t* kept = grow(scratch.kept, run.count);
  const size_t keptCount = randkKeptPositions(state.seed, state.collectiveSeq, spec.ratio, run.count, kept);
  float* compact = grow(scratch.compact, keptCount);
  for (size_t j = 0; j < keptCount; ++j) {
    const size_t i = kept[j];
    compact[j] = (loadFloat(type, run.input, i) + (run.residual ? run.residual[i] : 0.0f)) * scale;
  }
  float* compactResidual = nullptr;
  if (run.residual != nullptr) {
    compactResidual = grow(scratch.compactResidual, keptCount);
    std::memset(compactResidual, 0, keptCount * sizeof(float));
  }
  const size_t offsets[2] = {0, keptCount};
  AlgorithmRun inner{compact, compact, keptCount, CC_FLOAT32, run.op, compactResidual, TensorLayout{keptCount, offsets, 1}};
  if (keptCount != 0 && state.nranks > 1) {
    CC_CHECK(runAlgorithm(state, codecs, algo, true, inner));
  } else {
    ++state.collectiveSeq;
  }
  // Scatter. Per position the residual is read before the output is written,
  // so in-place calls work. A kept value entered the sum as scale * p: what
  // this rank lost there is p - scale * p plus the inner encodes' loss.
  if (run.residual == nullptr) {
    std::memset(run.output, 0, run.count * elementBytes(type));
    for (size_t j = 0; j < keptCount; ++j) storeFloat(type, run.output, kept[j], compact[j]);
    return CC_SUCCESS;
  }
  size_t j = 0;
  for (size_t i = 0; i < run.count; ++i) {
    const bool isKept = j < keptCount && kept[j] == i;
    const float p = loadFloat(type, run.input, i) + run.residual[i];
    run.residual[i] = isKept ? p - scale * p + compactResidual[j] : p;
    storeFloat(type, run.output, i, isKept ? compact[j] : 0.0f);
    if (isKept) ++j;
  }
  return CC_SUCCESS;
}

// out = x + e rounded to the user's type; e keeps the rounding. What an
// encode that loses nothing leaves behind (one rank, or an exact spec).
void foldResidual(ElementType type, const void* input, float* residual, size_t count, void* out) {
  for (size_t i = 0; i < count; ++i) {
    const float p = loadFloat(type, input, i) + residual[i];
    storeFloat(type, out, i, p);
    residual[i] = p - loadFloat(type, out, i);
  }
}

// A one-rank collective: the input, with the residual folded in.
void runSingleRank(const AlgorithmRun& run, size_t elementSize) {
  if (run.residual == nullptr || !isFloatType(run.datatype)) {
    if (run.output != run.input) std::memcpy(run.output, run.input, run.count * elementSize);
    return;
  }
  foldResidual(elementTypeOf(run.datatype), run.input, run.residual, run.count, run.output);
}

}  // namespace

cc_result_t runAllreduce(CollectiveState& state, const TensorCall* tensors, size_t ntensors, cc_datatype_t datatype,
                         cc_red_op_t op, const char* specText, bool* broken) {
  *broken = false;
  SpecCodecs* codecs = nullptr;
  CC_CHECK(state.specCodecs(specText, &codecs));
  const CodecSpec& spec = codecs->spec;
  bool compresses = specCompresses(spec, datatype, op);
  AlgoId algo = AlgoId::Ring;
  CC_CHECK(algorithmForCall(CallTraits{spec, compresses, datatype, op}, state.settings.algo,
                            availableAlgorithms(state), &algo));
  bool anyResidual = false;
  for (size_t t = 0; t < ntensors; ++t) anyResidual |= tensors[t].residual != nullptr;
  for (size_t t = 0; t < ntensors && compresses; ++t) {
    if (tensors[t].residual != nullptr) CC_CHECK(checkFeedbackConverges(spec, tensors[t].count));
  }
  if (compresses && !spec.unbiased() && !anyResidual && !codecs->loggedBiased) {
    codecs->loggedBiased = true;
    CC_INFO("codec %s is biased and runs without error feedback (pass a cc_residual_t to "
            "compressed_allreduce_ex to restore convergence)",
            spec.canonical.c_str());
  }

  // The working vector: the user's buffers for one tensor, else the
  // concatenation of the tensors, each starting on a block boundary.
  const size_t elementSize = elementBytes(elementTypeOf(datatype));
  AlgorithmRun run{};
  run.datatype = datatype;
  run.op = op;
  CallScratch& scratch = state.scratch;
  std::vector<size_t>& counts = scratch.counts;
  counts.resize(ntensors);
  for (size_t t = 0; t < ntensors; ++t) counts[t] = tensors[t].count;
  std::vector<size_t>& offsets = scratch.offsets;
  fusedTensorOffsets(counts.data(), ntensors, &offsets);
  const bool fused = ntensors > 1;
  if (!fused) {
    run.input = tensors[0].sendbuf;
    run.output = tensors[0].recvbuf;
    run.count = tensors[0].count;
    run.residual = tensors[0].residual ? tensors[0].residual->values.data() : nullptr;
  } else {
    run.count = offsets.back();
    unsigned char* values = grow(scratch.fusedValues, run.count * elementSize);
    std::memset(values, 0, run.count * elementSize);
    float* residual = anyResidual ? grow(scratch.fusedResidual, run.count) : nullptr;
    if (residual) std::memset(residual, 0, run.count * sizeof(float));
    for (size_t t = 0; t < ntensors; ++t) {
      std::memcpy(values + offsets[t] * elementSize, tensors[t].sendbuf, tensors[t].count * elementSize);
      if (residual && tensors[t].residual) {
        std::memcpy(residual + offsets[t], tensors[t].residual->values.data(), tensors[t].count * sizeof(float));
      }
    }
    run.input = values;
    run.output = values;
    run.residual = residual;
  }
  run.layout = TensorLayout{run.count, offsets.data(), offsets.size() - 1};

  // Under auto, a call with the communicator's codec that is too small for
  // it to pay runs exact; a fixed CC_ALGO and a spec given with the call keep
  // the codec asked for.
  state.lastCallExact = false;
  const bool specOfTheCall = specText != nullptr && specText[0] != '\0';
  CompressionDecision compression;
  if (compresses && !specOfTheCall && state.settings.algo == AlgoId::Auto && state.nranks > 1) {
    CC_CHECK(decideCompression(state, *codecs, run, &compression));
    if (!compression.pays) {
      CC_CHECK(state.specCodecs("none", &codecs));
      compresses = false;
      state.lastCallExact = true;
    }
    // A trial compares the two paths, each on the model's algorithm for it.
    if (compression.trial != nullptr) algo = compression.algorithm;
  }

  const uint64_t firstSeq = state.collectiveSeq;
  const double start = nowSeconds();
  cc_result_t result = CC_SUCCESS;
  if (state.nranks == 1) {
    runSingleRank(run, elementSize);
    state.lastAlgorithm = "none";
    ++state.collectiveSeq;
  } else if (!compresses && run.residual != nullptr) {
    // An exact spec loses nothing: fold the residual into the input (rounded
    // to the user's type; the rounding stays behind) and reduce exactly.
    unsigned char* staging = fused ? static_cast<unsigned char*>(run.output) : grow(scratch.fusedValues, run.count * elementSize);
    foldResidual(elementTypeOf(datatype), run.input, run.residual, run.count, staging);
    AlgorithmRun exact = run;
    exact.input = staging;
    exact.residual = nullptr;
    result = runAlgorithm(state, *codecs, algo, false, exact);
  } else if (compresses && spec.selector == Selector::RandK) {
    result = runRandK(state, *codecs, algo, run);
  } else {
    result = runAlgorithm(state, *codecs, algo, compresses, run);
  }
  if (result != CC_SUCCESS) {
    *broken = true;
    return addErrorContext(result, "compressed_allreduce #%llu (%zu x %s, %s, codec %s, %s) on rank %d",
                           static_cast<unsigned long long>(firstSeq), run.count, datatypeName(datatype),
                           opName(op), compresses ? spec.canonical.c_str() : "none",
                           // runAlgorithm names what auto resolved to
                           algo == AlgoId::Auto ? state.lastAlgorithm.c_str() : algoName(algo), state.rank);
  }
  if (compression.trial != nullptr) {
    CC_CHECK(recordCompressionTrial(state, compression.trial, nowSeconds() - start));
    // Pending until a call after them says otherwise: the path they settle
    // on may have algorithm trials of its own to run.
    state.autoTrialsPending = true;
  }
  if (fused) {
    const unsigned char* values = static_cast<const unsigned char*>(run.output);
    for (size_t t = 0; t < ntensors; ++t) {
      std::memcpy(tensors[t].recvbuf, values + offsets[t] * elementSize, tensors[t].count * elementSize);
      if (run.residual && tensors[t].residual) {
        std::memcpy(tensors[t].residual->values.data(), run.residual + offsets[t], tensors[t].count * sizeof(float));
      }
    }
  }
  return CC_SUCCESS;
}

}  // namespace cc
