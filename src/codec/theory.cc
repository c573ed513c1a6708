#include "codec/theory.h"

#include <algorithm>
#include <cmath>

namespace cc {
namespace {

constexpr double kNatOmega = 1.0 / 8.0;

// Dithering's omega for d values (REFERENCE, "Dithering"); r = min(p, 2) = 2
// for both p = 2 and p = inf.
double ditherOmega(const CodecSpec& spec, size_t d) {
  const double root = std::sqrt(static_cast<double>(d));
  double omega = 0;
  if (spec.quantizer == Quantizer::DitherStd) {
    const double step = 1.0 / spec.dither.levels;  // 2^(1-s) with u = 2^(s-1)
    omega = std::min(1.0, root * step) * root * step;
  } else {
    const double step = std::ldexp(1.0, 1 - static_cast<int>(spec.dither.levels));
    omega = kNatOmega + root * step * std::min(1.0, root * step);
  }
  if (spec.dither.natNorm) omega = (omega + 1) * (1 + kNatOmega) - 1;
  return omega;
}

double quantizerOmega(const CodecSpec& spec, size_t d) {
  switch (spec.quantizer) {
    case Quantizer::Exact: return 0;
    case Quantizer::Nat: return kNatOmega;
    case Quantizer::NatDet: return 0;  // biased: see theoreticalDelta
    case Quantizer::DitherNat:
    case Quantizer::DitherStd: return ditherOmega(spec, d);
  }
  return 0;
}

double keptFraction(const CodecSpec& spec, size_t d) {
  if (spec.selector == Selector::TopK && spec.topK != 0) {
    return std::min(1.0, static_cast<double>(spec.topK) / static_cast<double>(d));
  }
  return spec.ratio;
}

}  // namespace

size_t scopeValues(const CodecSpec& spec, size_t count) {
  if (spec.scope == Scope::Bucket && (spec.isDither() || spec.selector == Selector::TopK)) {
    return std::min(count, spec.bucketValues);
  }
  return count;
}

double theoreticalOmega(const CodecSpec& spec, size_t d) {
  const double inner = quantizerOmega(spec, d);
  if (spec.selector == Selector::RandK) return (inner + 1) / spec.ratio - 1;  // omega12 = w1 w2 + w1 + w2
  return inner;
}

double theoreticalDelta(const CodecSpec& spec, size_t d) {
  if (spec.selector == Selector::TopK) {
    const double delta = 1.0 / keptFraction(spec, d);
    return spec.quantizer == Quantizer::Nat ? (1 + kNatOmega) * delta : delta;  // C2 o C1 / zeta: zeta delta
  }
  if (spec.quantizer == Quantizer::NatDet) return 9.0 / 8.0;  // (b+1)^2 / (4b), b = 2
  return 1.0;
}

double paperBitsPerValue(const CodecSpec& spec, size_t d) {
  const double log2d = std::log2(static_cast<double>(d));
  const double n = static_cast<double>(d);
  double valueBits = 32;
  switch (spec.quantizer) {
    case Quantizer::Exact: valueBits = 32; break;
    case Quantizer::Nat:
    case Quantizer::NatDet: valueBits = 9; break;
    case Quantizer::DitherStd: {
      const double s = std::log2(static_cast<double>(spec.dither.levels)) + 1;  // u = 2^(s-1)
      valueBits = (spec.dither.natNorm ? 8 : 31) / n + 2 + s;
      break;
    }
    case Quantizer::DitherNat:
      valueBits = (spec.dither.natNorm ? 8 : 31) / n + 2 + std::log2(static_cast<double>(spec.dither.levels));
      break;
  }
  if (spec.selector == Selector::None) return valueBits;
  // Sparse: each kept value carries its index; REFERENCE counts one more bit
  // per kept value for S^q and C_nat o S^q ((33 + log2 d) q, (10 + log2 d) q).
  // It gives no count for top-k: value and index.
  const double kept = keptFraction(spec, d);
  const double extraBit = spec.selector == Selector::RandK ? 1 : 0;
  return kept * (valueBits + extraBit + log2d);
}

}  // namespace cc
