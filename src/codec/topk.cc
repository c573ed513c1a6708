// Top-k sparsification (docs/wire-format.md, "topk"): per scope the k values
// of largest magnitude (NaN above Inf above every finite value, ties to the
// lower index), sent as uint32 indices followed by the values, exact float32
// or nat codes scaled by 8/9 on decode.
//
// Selection is O(n) per scope without a sort: the k-th largest key T comes
// from a radix select (finished by std::nth_element once few candidates are
// left), then one pass in index order emits every index with a key above T
// and the first ones equal to T, already ascending.
#include "codec/topk.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "base/error.h"
#include "codec/elements.h"
#include "codec/nat_kernels.h"
#include "cuda/nat_math.h"

namespace cc {
namespace {

// Indices travel as uint32: a call covers at most this many values.
constexpr uint64_t kMaxTopKCount = 0xffffffffull;

// D(nat code) is multiplied by float32(8/9) = 0x3f638e39: nat(topk(x)) / zeta
// with zeta = omega + 1 = 9/8 (REFERENCE, "biased then unbiased").
constexpr float kTopKNatScale = 8.0f / 9.0f;

// Magnitude order with every NaN equal and above +-Inf (0x7f800000).
inline uint32_t selectionKey(float value) {
  const uint32_t magnitude = floatToBits(value) & 0x7fffffffu;
  return magnitude > 0x7f800000u ? 0x7f800001u : magnitude;
}

// The decoded value of one kept value in the nat form: what the receiver adds.
inline float natKeptValue(const uint8_t* natPacked, size_t j) {
  const uint8_t* block = natPacked + (j / kNatBlockValues) * kNatBlockBytes;
  const uint32_t lane = static_cast<uint32_t>(j % kNatBlockValues);
  const uint32_t sign = (loadLe32(block) >> lane) & 1u;
  return bitsToFloat(natDecodeBits(sign, block[4 + lane])) * kTopKNatScale;
}

// Calls visit(scopeNumber, begin, end) for every scope in wire order until it
// returns false; returns false when stopped. A malformed local layout is
// clamped to [0, count) so that no range can leave the buffer.
bool forEachScope(const CodecSpec& spec, const TensorLayout& layout,
                  const std::function<bool(size_t, size_t, size_t)>& visit) {
  const size_t count = layout.count;
  if (count == 0) return true;
  if (spec.scope == Scope::Bucket && spec.bucketValues != 0) {
    size_t scope = 0;
    for (size_t begin = 0; begin < count; begin += spec.bucketValues, ++scope) {
      const size_t end = count - begin < spec.bucketValues ? count : begin + spec.bucketValues;
      if (!visit(scope, begin, end)) return false;
    }
    return true;
  }
  if (spec.scope == Scope::Tensor && layout.offsets != nullptr && layout.tensors != 0) {
    for (size_t t = 0; t < layout.tensors; ++t) {
      const size_t begin = std::min(layout.offsets[t], count);
      const size_t end = std::min(std::max(layout.offsets[t + 1], begin), count);
      if (!visit(t, begin, end)) return false;
    }
    return true;
  }
  return visit(0, 0, count);  // Scope::Model, a bucket of 0, a layout without offsets
}

size_t keptTotal(const CodecSpec& spec, const TensorLayout& layout) {
  size_t total = 0;
  forEachScope(spec, layout, [&](size_t, size_t begin, size_t end) {
    total += topKKeptValues(spec, end - begin);
    return true;
  });
  return total;
}

// The k-th largest key of a scope and how many values with exactly that key
// are kept (the first ones in index order): k minus the count of larger keys.
struct Threshold {
  uint32_t key = 0;
  size_t tiesKept = 0;
};

// From bin `top` down, the bin holding the k-th largest key; `above`
// accumulates the values in the bins above it. The bins hold >= k values.
uint32_t pickBin(const uint32_t* histogram, uint32_t top, size_t k, size_t* above) {
  uint32_t bin = top;
  for (;; --bin) {
    if (*above + histogram[bin] >= k) return bin;
    *above += histogram[bin];
  }
}

// Scratch space of the selection, reused by every scope and, per thread, by
// every call (the steady state allocates nothing). The histogram is all zeros
// between uses.
struct SelectionScratch {
  std::vector<uint32_t> histogram = std::vector<uint32_t>(4 * 2048, 0u);  // 4 interleaved copies
  std::vector<uint32_t> candidates;
  std::vector<uint32_t> keptIndex;
  std::vector<float> keptValues;
};

// Scopes from this size count the top digit into 4 histograms, values i % 4
// into copy i % 4: consecutive values falling into the same bin (the common
// case: a few bins hold most values) then do not wait on each other's
// increment. Smaller scopes use one copy, whose clearing is cheaper.
constexpr size_t kInterleavedHistogramValues = 65536;

// Candidate sets up to this size finish with std::nth_element, larger ones
// with two more radix digits.
constexpr size_t kNthElementCandidates = 4096;

// Radix select on the 31-bit keys: a histogram of the top digit (bits
// 20..30: exponent and 3 mantissa bits) over the scope, then the keys of the
// chosen bin are gathered and finished either by std::nth_element or by
// histograms of bits 9..19 and 0..8. O(n) whatever the data; counts fit
// uint32 since a scope holds fewer than 2^32 values.
Threshold findThreshold(const float* values, size_t n, size_t k, SelectionScratch& scratch) {
  uint32_t* histogram = scratch.histogram.data();
  uint32_t lowestBin = 2047;
  uint32_t highestBin = 0;
  size_t i = 0;
  if (n >= kInterleavedHistogramValues) {
    for (; i + 4 <= n; i += 4) {
      for (size_t copy = 0; copy < 4; ++copy) {
        const uint32_t bin = selectionKey(values[i + copy]) >> 20;
        ++histogram[copy * 2048 + bin];
        lowestBin = std::min(lowestBin, bin);
        highestBin = std::max(highestBin, bin);
      }
    }
    for (uint32_t bin = lowestBin; bin <= highestBin; ++bin) {
      for (size_t copy = 1; copy < 4; ++copy) {
        histogram[bin] += histogram[copy * 2048 + bin];
        histogram[copy * 2048 + bin] = 0;
      }
    }
  }
  for (; i < n; ++i) {
    const uint32_t bin = selectionKey(values[i]) >> 20;
    ++histogram[bin];
    lowestBin = std::min(lowestBin, bin);
    highestBin = std::max(highestBin, bin);
  }
  size_t above = 0;
  const uint32_t high = pickBin(histogram, highestBin, k, &above);
  const size_t inBin = histogram[high];
  std::fill(histogram + lowestBin, histogram + highestBin + 1, 0u);

  std::vector<uint32_t>& candidates = scratch.candidates;
  candidates.resize(inBin);
  size_t gathered = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t key = selectionKey(values[i]);
    if ((key >> 20) == high) candidates[gathered++] = key;
  }
  const size_t wanted = k - above;  // 1 .. inBin keys of this bin are kept

  Threshold threshold;
  if (inBin <= kNthElementCandidates) {
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(wanted - 1),
                     candidates.end(), std::greater<uint32_t>());
    threshold.key = candidates[wanted - 1];
    size_t larger = 0;
    for (const uint32_t key : candidates) larger += key > threshold.key ? 1 : 0;
    threshold.tiesKept = wanted - larger;
    return threshold;
  }

  for (const uint32_t key : candidates) ++histogram[(key >> 9) & 0x7ffu];
  const uint32_t middle = pickBin(histogram, 2047, k, &above);
  std::fill(histogram, histogram + 2048, 0u);
  for (const uint32_t key : candidates) {
    if (((key >> 9) & 0x7ffu) == middle) ++histogram[key & 0x1ffu];
  }
  const uint32_t low = pickBin(histogram, 511, k, &above);
  std::fill(histogram, histogram + 512, 0u);

  threshold.key = (high << 20) | (middle << 9) | low;
  threshold.tiesKept = k - above;
  return threshold;
}

class TopKVectorCodec final : public VectorCodec {
 public:
  explicit TopKVectorCodec(const CodecSpec& spec) : spec_(spec), natValues_(spec.quantizer == Quantizer::Nat) {}

  CodecId id() const override { return CodecId::TopK; }

  size_t encodedBytes(const TensorLayout& layout) const override {
    const size_t kept = keptTotal(spec_, layout);
    return 4 * kept + (natValues_ ? natPackedBytes(kept) : 4 * kept);
  }

  void encode(const float* values, const TensorLayout& layout, RandomStream rs, void* out,
              float* residual) const override {
    const size_t count = layout.count;
    if (residual != nullptr && residual != values && count != 0) {
      std::memcpy(residual, values, count * sizeof(float));
    }
    uint8_t* bytes = static_cast<uint8_t*>(out);
    if (count > kMaxTopKCount) {
      // Callers refuse such counts (indices are uint32); should one slip
      // through, send nothing: every receiver rejects the call's count.
      std::memset(bytes, 0, encodedBytes(layout));
      return;
    }
    const size_t kept = keptTotal(spec_, layout);
    if (kept == 0) return;
    uint8_t* valueBytes = bytes + 4 * kept;

    thread_local SelectionScratch scratch;
    if (scratch.keptIndex.size() < kept) scratch.keptIndex.resize(kept);
    if (natValues_ && scratch.keptValues.size() < kept) scratch.keptValues.resize(kept);
    std::vector<uint32_t>& keptIndex = scratch.keptIndex;
    std::vector<float>& keptValues = scratch.keptValues;
    size_t position = 0;
    forEachScope(spec_, layout, [&](size_t, size_t begin, size_t end) {
      const size_t n = end - begin;
      const size_t k = topKKeptValues(spec_, n);
      if (k == 0) return true;
      const float* scope = values + begin;
      Threshold threshold;  // k == n keeps everything: key >= 0 always holds
      threshold.tiesKept = n;
      if (k < n) threshold = findThreshold(scope, n, k, scratch);
      size_t ties = 0;
      size_t emitted = 0;
      for (size_t i = 0; i < n; ++i) {
        const uint32_t key = selectionKey(scope[i]);
        if (key < threshold.key) continue;
        if (key == threshold.key) {
          if (ties == threshold.tiesKept) continue;
          ++ties;
        }
        const uint32_t index = static_cast<uint32_t>(begin + i);
        keptIndex[position] = index;
        storeLe32(bytes + 4 * position, index);
        if (natValues_) {
          keptValues[position] = scope[i];
        } else {
          storeLe32(valueBytes + 4 * position, floatToBits(scope[i]));
        }
        ++position;
        if (++emitted == k) break;  // the rest of the scope cannot be kept
      }
      return true;
    });

    if (natValues_) {
      natEncode(ElementType::F32, keptValues.data(), kept, 0, rs, valueBytes);
    }
    if (residual == nullptr) return;
    for (size_t j = 0; j < kept; ++j) {
      const uint32_t index = keptIndex[j];
      const float decoded = natValues_ ? natKeptValue(valueBytes, j) : bitsToFloat(loadLe32(valueBytes + 4 * j));
      residual[index] = values[index] - decoded;
    }
  }

  cc_result_t decodeAccumulate(const void* in, const TensorLayout& layout, float* acc) const override {
    const size_t count = layout.count;
    if (count > kMaxTopKCount) {
      return setError(CC_INVALID_ARGUMENT, "topk: %zu values in one call, at most %llu (indices are uint32)", count,
                      static_cast<unsigned long long>(kMaxTopKCount));
    }
    const uint8_t* bytes = static_cast<const uint8_t*>(in);
    // Every index is checked before anything is added, so a malformed
    // message leaves acc unchanged.
    size_t position = 0;
    cc_result_t result = CC_SUCCESS;
    forEachScope(spec_, layout, [&](size_t scope, size_t begin, size_t end) {
      const size_t k = topKKeptValues(spec_, end - begin);
      for (size_t j = 0; j < k; ++j, ++position) {
        const uint32_t index = loadLe32(bytes + 4 * position);
        if (index >= count) {
          result = setError(CC_REMOTE_ERROR,
                            "malformed topk message: index %u at position %zu is out of range (the call has %zu "
                            "values)",
                            index, position, count);
          return false;
        }
        if (index < begin || index >= end) {
          result = setError(CC_REMOTE_ERROR,
                            "malformed topk message: index %u at position %zu lies outside its scope %zu, values "
                            "[%zu, %zu)",
                            index, position, scope, begin, end);
          return false;
        }
        if (j != 0) {
          const uint32_t previous = loadLe32(bytes + 4 * (position - 1));
          if (index <= previous) {
            result = setError(CC_REMOTE_ERROR,
                              "malformed topk message: index %u at position %zu %s the previous index %u of scope "
                              "%zu (indices must be strictly ascending)",
                              index, position, index == previous ? "repeats" : "is below", previous, scope);
            return false;
          }
        }
      }
      return true;
    });
    if (result != CC_SUCCESS) return result;

    const size_t kept = position;
    const uint8_t* valueBytes = bytes + 4 * kept;
    if (natValues_) {
      for (size_t j = 0; j < kept; ++j) acc[loadLe32(bytes + 4 * j)] += natKeptValue(valueBytes, j);
    } else {
      for (size_t j = 0; j < kept; ++j) acc[loadLe32(bytes + 4 * j)] += bitsToFloat(loadLe32(valueBytes + 4 * j));
    }
    return CC_SUCCESS;
  }

 private:
  CodecSpec spec_;
  bool natValues_;
};

}  // namespace

size_t topKKeptValues(const CodecSpec& spec, size_t scopeValues) {
  if (scopeValues == 0) return 0;
  if (spec.topK > 0) return spec.topK < scopeValues ? static_cast<size_t>(spec.topK) : scopeValues;
  if (!(spec.ratio > 0.0)) return 1;  // ratio <= 0 or NaN: the minimum of one value
  const double wanted = std::ceil(spec.ratio * static_cast<double>(scopeValues));
  if (!(wanted < static_cast<double>(scopeValues))) return scopeValues;
  return wanted < 1.0 ? 1 : static_cast<size_t>(wanted);
}

std::unique_ptr<VectorCodec> makeTopKVectorCodec(const CodecSpec& spec) {
  if (spec.selector != Selector::TopK) {
    setError(CC_INVALID_ARGUMENT, "makeTopKVectorCodec: the spec '%s' selects no top-k", spec.canonical.c_str());
    return nullptr;
  }
  if (spec.quantizer != Quantizer::Exact && spec.quantizer != Quantizer::Nat) {
    setError(CC_INVALID_ARGUMENT, "topk: the values travel exact (topk) or as nat codes (topk+nat), not '%s'",
             spec.canonical.c_str());
    return nullptr;
  }
  return std::make_unique<TopKVectorCodec>(spec);
}

}  // namespace cc
