// The bounds of REFERENCE.md next to what this library's own encoders do.
//
// One row per codec: the theoretical (omega + 1) of an unbiased codec or delta
// of a biased one (codec/theory.h), the bits per value the papers count, the
// speedup 32 / (bits * (omega+1)^theta) at theta = 1 and theta = 0 (REFERENCE,
// "Iterations and the speedup table"), and beside them what our encoders
// measure on d float32 values from three distributions: the mean over R
// independent draws of ||C(x)||^2 / ||x||^2 (unbiased) or
// 1 / (1 - mean ||C(x) - x||^2 / ||x||^2) (biased), and the bits per value on
// our wire (8 * encoded bytes / d).
//
// The program checks itself: at d = 10^6 it exits 1 when a theory value of
// the five rows REFERENCE prints (C_nat, S^q, C_nat o S^q, D_sta best s,
// D_nat best s) differs from the printed number by more than 1% (relative).
//
//   cc_theory [--d N] [--reps R] [--seed S] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/randk.h"
#include "codec/spec.h"
#include "codec/theory.h"
#include "perf/perf_text.h"

namespace {

constexpr size_t kReferenceD = 1000000;
constexpr int kMaxSearchS = 20;

struct Options {
  size_t d = kReferenceD;
  int reps = 20;
  uint64_t seed = 1;
  std::string json;
};

void usage(const char* program) {
  std::fprintf(stderr, "usage: %s [--d N] [--reps R] [--seed S] [--json FILE]\n", program);
}

bool parseOptions(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool hasValue = i + 1 < argc;
    if (arg == "--d" && hasValue) {
      options->d = std::strtoull(argv[++i], nullptr, 0);
    } else if (arg == "--reps" && hasValue) {
      options->reps = std::atoi(argv[++i]);
    } else if (arg == "--seed" && hasValue) {
      options->seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (arg == "--json" && hasValue) {
      options->json = argv[++i];
    } else {
      return false;
    }
  }
  return options->d >= 32 && options->reps >= 1;
}

// ---------------------------------------------------------------------------
// Inputs

struct Input {
  const char* name;
  std::vector<float> values;
  double normSquared = 0;
};

constexpr int kInputs = 3;

std::vector<Input> makeInputs(size_t d, uint64_t seed) {
  std::vector<Input> inputs(kInputs);
  inputs[0].name = "gauss";
  inputs[1].name = "unif";
  inputs[2].name = "t2";
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + 12345);
  std::normal_distribution<double> gaussian(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::student_t_distribution<double> student(2.0);
  for (Input& input : inputs) input.values.resize(d);
  for (size_t i = 0; i < d; ++i) {
    inputs[0].values[i] = static_cast<float>(gaussian(rng));
    inputs[1].values[i] = static_cast<float>(uniform(rng));
    inputs[2].values[i] = static_cast<float>(student(rng));
  }
  for (Input& input : inputs) {
    double sum = 0;
    for (float v : input.values) sum += static_cast<double>(v) * v;
    input.normSquared = sum;
  }
  return inputs;
}

// ---------------------------------------------------------------------------
// Measurement: C(x) from our encoders, as the library applies them.

struct Measurement {
  bool ok = false;
  std::string error;
  double ratio[kInputs] = {0, 0, 0};  // (omega+1) or delta per input
  double stdError[kInputs] = {0, 0, 0};  // of ratio, from the spread of the R draws
  double bits = 0;                    // mean over draws and inputs
  const char* path = "";
};

// ||C(x)||^2 and ||C(x) - x||^2, accumulated in double.
struct Moments {
  double squared = 0;
  double error = 0;
};

Moments momentsOf(const std::vector<float>& x, const std::vector<float>& c) {
  Moments m;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ci = c[i];
    const double diff = ci - static_cast<double>(x[i]);
    m.squared += ci * ci;
    m.error += diff * diff;
  }
  return m;
}

// One draw of C(x) into `out` (d values); returns the encoded bytes.
using DrawFunction = size_t (*)(const cc::CodecSpec&, const void* state, const std::vector<float>&, uint64_t seed,
                                uint64_t stream, std::vector<float>& out);

struct VectorState {
  std::unique_ptr<cc::VectorCodec> codec;
  mutable std::vector<uint8_t> encoded;
  mutable std::string error;
};

size_t drawVector(const cc::CodecSpec&, const void* opaque, const std::vector<float>& x, uint64_t seed,
                  uint64_t stream, std::vector<float>& out) {
  const VectorState& state = *static_cast<const VectorState*>(opaque);
  const size_t d = x.size();
  const size_t offsets[2] = {0, d};
  const cc::TensorLayout layout{d, offsets, 1};
  const size_t bytes = state.codec->encodedBytes(layout);
  state.encoded.assign(bytes, 0);
  state.codec->encode(x.data(), layout, cc::RandomStream{seed, stream}, state.encoded.data(), nullptr);
  std::fill(out.begin(), out.end(), 0.0f);
  if (state.codec->decodeAccumulate(state.encoded.data(), layout, out.data()) != CC_SUCCESS) {
    state.error = "decodeAccumulate failed: " + cc::lastErrorMessage();
  }
  return bytes;
}

struct RandKState {
  std::unique_ptr<cc::Codec> inner;
  mutable std::vector<uint64_t> kept;
  mutable std::vector<float> compact, decoded;
  mutable std::vector<uint8_t> packed;
};

// runRandK (src/algo/call/allreduce_call.cc) on one rank: the shared-seed mask, the kept
// values gathered and scaled by 1/ratio, the inner quantizer on the compact
// vector; D scatters them back. Only the inner packed bytes travel.
size_t drawRandK(const cc::CodecSpec& spec, const void* opaque, const std::vector<float>& x, uint64_t seed,
                 uint64_t stream, std::vector<float>& out) {
  const RandKState& state = *static_cast<const RandKState*>(opaque);
  const size_t d = x.size();
  const float scale = static_cast<float>(1.0 / spec.ratio);
  state.kept.resize(d);
  const size_t k = cc::randkKeptPositions(seed, stream, spec.ratio, d, state.kept.data());
  state.compact.resize(k);
  for (size_t j = 0; j < k; ++j) state.compact[j] = x[state.kept[j]] * scale;
  const size_t bytes = state.inner->packedBytes(k);
  state.packed.assign(bytes, 0);
  state.decoded.assign(k, 0.0f);
  if (k != 0) {
    state.inner->encode(state.compact.data(), k, 0, cc::RandomStream{seed, stream}, state.packed.data());
    state.inner->decode(state.packed.data(), k, state.decoded.data());
  }
  std::fill(out.begin(), out.end(), 0.0f);
  for (size_t j = 0; j < k; ++j) out[state.kept[j]] = state.decoded[j];
  return bytes;
}

Measurement measure(const cc::CodecSpec& spec, const std::vector<Input>& inputs, const Options& options) {
  Measurement result;
  VectorState vectorState;
  RandKState randkState;
  const void* state = nullptr;
  DrawFunction draw = nullptr;
  if (spec.selector == cc::Selector::RandK) {
    randkState.inner = cc::makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
    if (!randkState.inner) {
      result.error = "makeBlockCodec: " + cc::lastErrorMessage();
      return result;
    }
    state = &randkState;
    draw = drawRandK;
    result.path = "mask+block";
  } else {
    vectorState.codec = cc::makeVectorCodec(spec);
    if (!vectorState.codec) {
      result.error = "makeVectorCodec: " + cc::lastErrorMessage();
      return result;
    }
    state = &vectorState;
    draw = drawVector;
    result.path = "vector";
  }
  const size_t d = options.d;
  std::vector<float> out(d);
  double bitsSum = 0;
  for (int in = 0; in < kInputs; ++in) {
    const Input& input = inputs[static_cast<size_t>(in)];
    double squaredRatio = 0, errorRatio = 0, squaredSquares = 0, errorSquares = 0;
    for (int r = 0; r < options.reps; ++r) {
      // Fresh Philox streams per draw: RandomStream{seed, stream r}.
      const size_t bytes = draw(spec, state, input.values, options.seed, static_cast<uint64_t>(r), out);
      if (!vectorState.error.empty()) {
        result.error = vectorState.error;
        return result;
      }
      const Moments m = momentsOf(input.values, out);
      squaredRatio += m.squared / input.normSquared;
      errorRatio += m.error / input.normSquared;
      squaredSquares += (m.squared / input.normSquared) * (m.squared / input.normSquared);
      errorSquares += (m.error / input.normSquared) * (m.error / input.normSquared);
      bitsSum += 8.0 * static_cast<double>(bytes) / static_cast<double>(d);
    }
    const double reps = options.reps;
    squaredRatio /= reps;
    errorRatio /= reps;
    // Standard error of a mean of R draws (0 for R = 1 and for deterministic codecs).
    auto stdErrorOf = [&](double mean, double sumSquares) {
      if (options.reps < 2) return 0.0;
      const double variance = std::max(0.0, (sumSquares - reps * mean * mean) / (reps - 1));
      return std::sqrt(variance / reps);
    };
    if (spec.unbiased()) {
      result.ratio[in] = squaredRatio;
      result.stdError[in] = stdErrorOf(squaredRatio, squaredSquares);
    } else {
      // delta = 1 / (1 - e): its standard error by the delta method.
      result.ratio[in] = errorRatio < 1 ? 1.0 / (1.0 - errorRatio) : INFINITY;
      result.stdError[in] = stdErrorOf(errorRatio, errorSquares) * result.ratio[in] * result.ratio[in];
    }
  }
  result.bits = bitsSum / (kInputs * options.reps);
  result.ok = true;
  return result;
}

// ---------------------------------------------------------------------------
// Theory

struct Theory {
  double factor = 1;  // (omega+1) or delta
  double bits = 32;
  double speedup1 = 1;  // theta = 1
  double speedup0 = 1;  // theta = 0
};

Theory theoryOf(const cc::CodecSpec& spec, size_t d) {
  Theory t;
  // Norms and selections span scopeValues: a bucket, or the whole vector.
  const size_t scope = cc::scopeValues(spec, d);
  t.factor = spec.unbiased() ? cc::theoreticalOmega(spec, scope) + 1 : cc::theoreticalDelta(spec, scope);
  // A quantizer's norm bits are shared by its scope; a selector's index bits count log2 d.
  t.bits = cc::paperBitsPerValue(spec, spec.selector == cc::Selector::None ? scope : d);
  t.speedup1 = 32.0 / (t.bits * t.factor);
  t.speedup0 = 32.0 / t.bits;
  return t;
}

// ---------------------------------------------------------------------------
// Rows

struct Row {
  std::string name;
  std::string specText;  // as a user writes it
  cc::CodecSpec spec;
  bool formulaOnly = false;
  bool unbiased = true;
  Theory theory;
  Measurement measured;
  std::string note;  // "best at theta = 1", ...
  // Formula-only rows print these cells instead.
  std::string factorText, bitsText, speedup1Text, speedup0Text;
};

bool parseSpec(const std::string& text, cc::CodecSpec* spec) {
  if (cc::parseCodecSpec(text, spec) != CC_SUCCESS) {
    std::fprintf(stderr, "cc_theory: %s\n", cc::lastErrorMessage().c_str());
    return false;
  }
  return true;
}

// A dithering spec over the whole vector (one norm) with s levels: D_sta's
// u = 2^(s-1), D_nat's s.
cc::CodecSpec ditherWithS(const cc::CodecSpec& base, int s) {
  cc::CodecSpec spec = base;
  spec.dither.levels = base.quantizer == cc::Quantizer::DitherStd ? (1u << (s - 1)) : static_cast<uint32_t>(s);
  return spec;
}

std::string ditherSpecText(const cc::CodecSpec& spec, int s) {
  if (spec.quantizer == cc::Quantizer::DitherStd) {
    return "dither_std:p=2,u=" + std::to_string(1u << (s - 1)) + ",scope=tensor";
  }
  return std::string("dither_nat:p=2,s=") + std::to_string(s) + (spec.dither.natNorm ? ",norm=nat" : "") +
         ",scope=tensor";
}

struct BestS {
  int sTheta1 = 0, sTheta0 = 0;
  double speedup1 = 0, speedup0 = 0;
};

BestS searchS(const cc::CodecSpec& base, size_t d) {
  BestS best;
  for (int s = 1; s <= kMaxSearchS; ++s) {
    const Theory t = theoryOf(ditherWithS(base, s), d);
    if (t.speedup1 > best.speedup1) {
      best.speedup1 = t.speedup1;
      best.sTheta1 = s;
    }
    if (t.speedup0 > best.speedup0) {
      best.speedup0 = t.speedup0;
      best.sTheta0 = s;
    }
  }
  return best;
}

std::string format(const char* fmt, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), fmt, value);
  return text;
}

// 3 significant digits, like REFERENCE's table.
std::string sig3(double value) {
  if (!std::isfinite(value)) return "inf";
  if (value == 0) return "0";
  const double magnitude = std::fabs(value);
  if (magnitude >= 100) return format("%.0f", value);
  if (magnitude >= 10) return format("%.1f", value);
  if (magnitude >= 1) return format("%.2f", value);
  if (magnitude >= 0.1) return format("%.3f", value);
  return format("%.3g", value);
}

std::string factorCell(double value) {
  if (!std::isfinite(value)) return "inf";
  if (value >= 1000) return format("%.0f", value);
  if (value >= 100) return format("%.1f", value);
  return format("%.4f", value);
}

bool near(double computed, double printed) { return std::fabs(computed - printed) <= 0.01 * std::fabs(printed); }

std::string jsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  char text[64];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parseOptions(argc, argv, &options)) {
    usage(argv[0]);
    return 2;
  }
  const size_t d = options.d;
  const auto start = std::chrono::steady_clock::now();

  std::vector<Row> rows;
  auto addRow = [&](const std::string& name, const std::string& text, const std::string& note = "") -> Row* {
    Row row;
    row.name = name;
    row.specText = text;
    row.note = note;
    if (!parseSpec(text, &row.spec)) return nullptr;
    row.unbiased = row.spec.unbiased();
    row.theory = theoryOf(row.spec, d);
    rows.push_back(row);
    return &rows.back();
  };

  bool ok = addRow("baseline", "none") && addRow("C_nat", "nat") && addRow("nat_det", "nat_det") &&
            addRow("S^q", "randk:ratio=0.1") && addRow("C_nat o S^q", "randk:ratio=0.1+nat");

  // Best s of standard and natural dithering, one norm for the d values.
  cc::CodecSpec staBase, natBase;
  ok = ok && parseSpec("dither_std:p=2,u=1,scope=tensor", &staBase) &&
       parseSpec("dither_nat:p=2,s=1,norm=nat,scope=tensor", &natBase);
  if (!ok) return 2;
  const BestS sta = searchS(staBase, d);
  const BestS nat = searchS(natBase, d);
  auto addBest = [&](const char* family, const cc::CodecSpec& base, const BestS& best) {
    const std::string row1 = std::string(family) + " best s, th=1";
    const std::string row0 = std::string(family) + " best s, th=0";
    addRow(row1, ditherSpecText(base, best.sTheta1), "s=" + std::to_string(best.sTheta1) + " maximises S(th=1)");
    addRow(row0, ditherSpecText(base, best.sTheta0), "s=" + std::to_string(best.sTheta0) + " maximises S(th=0)");
  };
  addBest("D_sta", staBase, sta);
  addBest("D_nat nat-norm", natBase, nat);

  // Dithering as used in practice.
  // The bucket size trade-off behind the default of 512 (docs/results.md):
  // smaller buckets lower omega, larger ones spend fewer bits on norms.
  for (const char* bucket : {"64", "128", "256"}) {
    addRow(std::string("D_nat s=8 bucket ") + bucket, std::string("dither_nat:p=2,s=8,bucket=") + bucket);
  }
  ok = addRow("D_nat s=8 bucket 512", "dither_nat:p=2,s=8,bucket=512") &&
       addRow("D_nat s=8 bucket 1024", "dither_nat:p=2,s=8,bucket=1024") &&
       addRow("D_nat s=8 bucket 4096", "dither_nat:p=2,s=8,bucket=4096") &&
       addRow("D_nat s=8 tensor", "dither_nat:p=2,s=8,scope=tensor") &&
       addRow("D_sta s=3 (u=4) bkt", "dither_std:s=3") && addRow("QSGD s=16 bucket", "qsgd:s=16") &&
       addRow("TernGrad bucket", "terngrad") && addRow("D_nat s=8 nat-norm", "dither_nat:p=2,s=8,norm=nat") &&
       addRow("top-k 1%", "topk:ratio=0.01") && addRow("C_nat o top-k 1%", "topk:ratio=0.01+nat");
  if (!ok) return 2;

  // Bidirectional C_nat: worker and master both send 9 bits instead of 32.
  {
    Row row;
    row.name = "bidirectional C_nat";
    row.specText = "nat both ways";
    row.formulaOnly = true;
    row.factorText = "(9/8)|(9/8)^2";
    row.bitsText = "2x9";
    row.theory.speedup1 = (64.0 / 18.0) / (9.0 / 8.0);
    row.theory.speedup0 = (64.0 / 18.0) / ((9.0 / 8.0) * (9.0 / 8.0));
    row.speedup1Text = sig3(row.theory.speedup1);
    row.speedup0Text = sig3(row.theory.speedup0);
    row.note = "formula only: (64/18)/(9/8) and (64/18)/(9/8)^2";
    rows.push_back(row);
  }

  // Measurements.
  const std::vector<Input> inputs = makeInputs(d, options.seed);
  bool measuredAll = true;
  for (Row& row : rows) {
    if (row.formulaOnly) continue;
    row.measured = measure(row.spec, inputs, options);
    if (!row.measured.ok) {
      std::fprintf(stderr, "cc_theory: %s (%s): %s\n", row.name.c_str(), row.specText.c_str(),
                   row.measured.error.c_str());
      measuredAll = false;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The table.
  std::printf("cc_theory: d = %zu, R = %d draws per input, seed %llu, %.1f s\n\n", d, options.reps,
              static_cast<unsigned long long>(options.seed), seconds);
  const char* header = "%-27s %-41s %-3s %13s %7s %7s %7s | %10s %10s %10s %6s %7s %7s %7s\n";
  std::printf(header, "", "", "", "theory", "paper", "S", "S", "ours", "ours", "ours", "max", "ours", "ours S",
              "ours S");
  std::printf(header, "row", "spec", "", "(w+1)|delta", "bits/v", "th=1", "th=0", "gauss", "unif", "t2", "s.e.%",
              "bits/v", "th=1", "th=0");
  std::printf("%s\n", std::string(190, '-').c_str());
  int aboveTheory = 0;  // measured cells more than 3 standard errors above the theory
  for (const Row& row : rows) {
    const char* kind = row.formulaOnly ? "w+1" : row.unbiased ? "w+1" : "dlt";
    std::string factor = row.formulaOnly ? row.factorText : factorCell(row.theory.factor);
    std::string bits = row.formulaOnly ? row.bitsText : format("%.3f", row.theory.bits);
    std::string s1 = row.formulaOnly ? row.speedup1Text : sig3(row.theory.speedup1);
    std::string s0 = row.formulaOnly ? row.speedup0Text : sig3(row.theory.speedup0);
    std::printf("%-27s %-41s %-3s %13s %7s %7s %7s |", row.name.c_str(), row.specText.c_str(), kind, factor.c_str(),
                bits.c_str(), s1.c_str(), s0.c_str());
    if (row.formulaOnly || !row.measured.ok) {
      std::printf(" %10s %10s %10s %6s %7s %7s %7s", "-", "-", "-", "-", "-", "-", "-");
    } else {
      double worst = 1, relativeError = 0;
      for (int in = 0; in < kInputs; ++in) {
        const double value = row.measured.ratio[in];
        const double error = row.measured.stdError[in];
        // Above the bound: '~' within 3 standard errors (noise), '!' beyond.
        const double bound = row.theory.factor * (1 + 1e-9);
        const char* flag = value <= bound ? " " : value - 3 * error <= bound ? "~" : "!";
        if (*flag == '!') ++aboveTheory;
        std::printf(" %9s%s", factorCell(value).c_str(), flag);
        worst = std::max(worst, value);
        if (value > 0) relativeError = std::max(relativeError, error / value);
      }
      std::printf(" %6.2f %7.3f %7s %7s", 100 * relativeError, row.measured.bits,
                  sig3(32.0 / (row.measured.bits * worst)).c_str(), sig3(32.0 / row.measured.bits).c_str());
    }
    std::printf("%s%s\n", row.note.empty() ? "" : "  ", row.note.c_str());
  }

  std::printf("\nSummary (theory, d = %zu): D_sta best s: %s (s = %d) ... %s (s = %d); "
              "D_nat best s, C_nat norm: %s (s = %d) ... %s (s = %d)\n",
              d, format("%.2f", sta.speedup1).c_str(), sta.sTheta1, format("%.2f", sta.speedup0).c_str(), sta.sTheta0,
              format("%.2f", nat.speedup1).c_str(), nat.sTheta1, format("%.2f", nat.speedup0).c_str(), nat.sTheta0);

  std::printf(
      "\nColumns:\n"
      "  w+1 / dlt: unbiased rows give (omega+1) with E||C(x)||^2 <= (omega+1)||x||^2; biased rows (dlt) give delta\n"
      "    with E||C(x)-x||^2 <= (1-1/delta)||x||^2, used in place of (omega+1) in the speedup.\n"
      "  theory: codec/theory.cc (REFERENCE formulas); omega of a bucket-scope spec uses d = bucket values.\n"
      "  paper bits/v: paperBitsPerValue, bits per value as the papers count them (31-bit norm per scope, 32-bit\n"
      "    values, (33 + log2 d) bits per value kept by S^q, 10 + log2 d with C_nat; top-k: value + log2 d index bits).\n"
      "  S th=1 ... th=0: speedup 32 / (bits * (w+1 or delta)^theta), the lower and upper bound of REFERENCE.\n"
      "  ours gauss / unif / t2: our encoders on d float32 values drawn from N(0,1), U(-1,1) and Student-t with 2\n"
      "    degrees of freedom (heavy-tailed, not clipped); unbiased rows: mean over R draws of ||C(x)||^2/||x||^2\n"
      "    (measured omega+1), biased rows: 1 / (1 - mean ||C(x)-x||^2/||x||^2) (measured delta). Each draw uses a\n"
      "    fresh Philox stream, RandomStream{seed, r}, r = 0..R-1.\n"
      "  ~ / !: the measured mean is above the theoretical bound, by less (~, sampling noise) or more (!) than 3\n"
      "    standard errors of the mean. max s.e.%%: the largest standard error of the three means, in percent.\n"
      "    A tensor-scope spec with a C_nat norm rounds its one norm up or down once per draw (Nt^2/N^2 is about\n"
      "    0.8 or 3.2 for these inputs), so its mean over R draws is noisy: raise --reps to see it settle.\n"
      "  ours bits/v: 8 * encoded bytes / d on our wire format (float32 norms, sign + level bit-planes, nat codes of\n"
      "    9 bits, top-k: uint32 index + value per kept value), mean over draws.\n"
      "  ours S: 32 / (ours bits * worst measured (w+1 or delta) of the three inputs), and 32 / ours bits.\n"
      "Paths: top-k, nat, nat_det, none and dithering: makeVectorCodec with one tensor of d values (encode, then\n"
      "  decodeAccumulate into zeros). S^q rows (randk): the library's shared-seed mask (Philox stream\n"
      "  (seed ^ 0x72616e646b6d736b, r); value i kept iff its word < ratio * 2^32), kept values scaled by 1/ratio\n"
      "  and encoded by the inner block codec (none or nat); C(x) is the decode scattered back. No indices travel\n"
      "  (every rank draws the same mask), so our S^q bits are the inner packed bytes of the kept values alone:\n"
      "  that is why they are below the paper's (33 + log2 d) q bits.\n"
      "Bidirectional C_nat: worker and master both compress (2 x 9 bits instead of 2 x 32): (64/18)/(9/8) = 3.16\n"
      "  with one (9/8) factor and (64/18)/(9/8)^2 = 2.81 with both; formula only.\n");

  std::printf("\nMeasured means above their theoretical bound by more than 3 standard errors: %d%s\n", aboveTheory,
              aboveTheory == 0 ? "" : " (marked !)");

  // Self-check against REFERENCE's printed numbers (they are for d = 10^6).
  int failures = 0;
  if (d == kReferenceD) {
    struct Check {
      const char* what;
      double computed;
      double printed;
    };
    auto find = [&](const std::string& name) -> const Row& {
      for (const Row& row : rows) {
        if (row.name == name) return row;
      }
      return rows.front();
    };
    const std::vector<Check> checks = {
        {"C_nat th=1", find("C_nat").theory.speedup1, 3.16},
        {"C_nat th=0", find("C_nat").theory.speedup0, 3.56},
        {"S^q th=1", find("S^q").theory.speedup1, 0.605},
        {"S^q th=0", find("S^q").theory.speedup0, 6.05},
        {"C_nat o S^q th=1", find("C_nat o S^q").theory.speedup1, 0.950},
        {"C_nat o S^q th=0", find("C_nat o S^q").theory.speedup0, 10.7},
        {"D_sta best th=1", sta.speedup1, 2.01},
        {"D_sta best th=0", sta.speedup0, 10.67},
        {"D_sta best s th=1", static_cast<double>(sta.sTheta1), 13},
        {"D_sta best s th=0", static_cast<double>(sta.sTheta0), 1},
        {"D_nat best th=1", nat.speedup1, 4.30},
        {"D_nat best th=0", nat.speedup0, 16.0},
        {"D_nat best s th=1", static_cast<double>(nat.sTheta1), 14},
        {"D_nat best s th=0", static_cast<double>(nat.sTheta0), 1},
        {"bidirectional one factor", (64.0 / 18.0) / (9.0 / 8.0), 3.16},
        {"bidirectional both", (64.0 / 18.0) / (81.0 / 64.0), 2.81},
        {"baseline", find("baseline").theory.speedup1, 1.0},
    };
    std::printf("\nREFERENCE check (relative tolerance 0.01):");
    for (const Check& check : checks) {
      if (!near(check.computed, check.printed)) {
        std::printf("\n  FAIL %s: computed %.6g, REFERENCE prints %g", check.what, check.computed, check.printed);
        ++failures;
      }
    }
    std::printf(failures == 0 ? " all %zu values match\n" : "\n  %zu values checked\n", checks.size());
  } else {
    std::printf("\nREFERENCE check skipped: its numbers are for d = %zu\n", kReferenceD);
  }

  if (!options.json.empty()) {
    FILE* file = std::fopen(options.json.c_str(), "w");
    if (file == nullptr) {
      std::fprintf(stderr, "cc_theory: cannot write %s\n", options.json.c_str());
      return 2;
    }
    std::fprintf(file, "{\n  \"d\": %zu,\n  \"reps\": %d,\n  \"seed\": %llu,\n  \"inputs\": [\"gauss N(0,1)\", "
                       "\"uniform U(-1,1)\", \"student-t nu=2\"],\n  \"rows\": [\n",
                 d, options.reps, static_cast<unsigned long long>(options.seed));
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& row = rows[i];
      std::fprintf(file, "    {\"row\": \"%s\", \"spec\": \"%s\", \"canonical\": \"%s\", \"biased\": %s, ",
                   ccperf::jsonEscape(row.name).c_str(), ccperf::jsonEscape(row.specText).c_str(),
                   ccperf::jsonEscape(row.formulaOnly ? "" : row.spec.canonical).c_str(),
                   !row.formulaOnly && !row.unbiased ? "true" : "false");
      std::fprintf(file, "\"theory_factor\": %s, \"paper_bits\": %s, \"speedup_theta1\": %s, \"speedup_theta0\": %s",
                   row.formulaOnly ? "null" : jsonNumber(row.theory.factor).c_str(),
                   row.formulaOnly ? "18" : jsonNumber(row.theory.bits).c_str(), jsonNumber(row.theory.speedup1).c_str(),
                   jsonNumber(row.theory.speedup0).c_str());
      if (!row.formulaOnly && row.measured.ok) {
        std::fprintf(file,
                     ", \"measured\": {\"gauss\": %s, \"unif\": %s, \"t2\": %s, \"std_error\": [%s, %s, %s], "
                     "\"bits\": %s, \"path\": \"%s\"}",
                     jsonNumber(row.measured.ratio[0]).c_str(), jsonNumber(row.measured.ratio[1]).c_str(),
                     jsonNumber(row.measured.ratio[2]).c_str(), jsonNumber(row.measured.stdError[0]).c_str(),
                     jsonNumber(row.measured.stdError[1]).c_str(), jsonNumber(row.measured.stdError[2]).c_str(),
                     jsonNumber(row.measured.bits).c_str(), row.measured.path);
      }
      if (!row.note.empty()) std::fprintf(file, ", \"note\": \"%s\"", ccperf::jsonEscape(row.note).c_str());
      std::fprintf(file, "}%s\n", i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(file, "  ],\n  \"reference_check_failures\": %d\n}\n", failures);
    std::fclose(file);
  }

  if (failures != 0) return 1;
  return measuredAll ? 0 : 2;
}
