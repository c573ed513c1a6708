// The bounds of REFERENCE.md as functions of a spec: the variance parameter
// omega of unbiased codecs, delta of biased ones, and the bits per value the
// papers count. perf/cc_theory prints them next to measurements of our own
// encoders; tests derive their statistical bounds from them.
#pragma once

#include <cstddef>

#include "codec/spec.h"

namespace cc {

// The number of values that share one norm or selection when a call of
// `count` values is encoded (a bucket, or the whole call for tensor/model scope).
size_t scopeValues(const CodecSpec& spec, size_t count);

// omega with E||C(x)||^2 <= (omega + 1)||x||^2, for an unbiased spec whose
// norms span `d` values (randk: d is irrelevant to the mask).
double theoreticalOmega(const CodecSpec& spec, size_t d);
// delta with E||C(x) - x||^2 <= (1 - 1/delta)||x||^2, for a biased spec.
double theoreticalDelta(const CodecSpec& spec, size_t d);
// Bits per value as the papers count them for a vector of d values
// (31-bit norms, log2(d)-bit indices; REFERENCE's speedup table).
double paperBitsPerValue(const CodecSpec& spec, size_t d);

}  // namespace cc
