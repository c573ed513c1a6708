// The switch's fixed point (docs/switch-protocol.md, "Fixed point"): float32
// values and nat codes to integers a switch can add, and the sums back. The
// workers (src/algo/switch.cc) and the daemon (switch/) both use this file,
// so the two sides scale by the same rule.
//
// A block of values has the agreed block exponent B (the largest biased
// float32 exponent field of a finite value over every worker's block), the
// job has M = fixedMaxShift(n), and the floor exponent is F = B + 1 - M. A
// value v is the integer q = v * 2^(127 - F); every contribution has
// |q| <= 2^M, so n of them cannot overflow an int32. INT32_MIN marks a
// non-finite value.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/codec.h"

namespace cc {

constexpr int32_t kFixedNonFinite = INT32_MIN;

// The largest M with n * 2^M <= 2^31 - 1 (n >= 1).
int fixedMaxShift(int nranks);
// F = B + 1 - M.
inline int fixedFloor(uint8_t blockExponent, int maxShift) { return static_cast<int>(blockExponent) + 1 - maxShift; }

// B of p_i = values_i (+ residual_i when not null): the largest biased
// exponent field of a finite p_i, 0 when there is none. `type` is F32,
// BF16 or F16.
uint8_t blockExponentOf(ElementType type, const void* values, const float* residual, size_t count);

// --------------------------------------------------------------- workers

// nat up: after the codec encoded a block, codes below the floor
// (1 <= e < F) are rounded to F with probability 2^(e - F), else to 0
// (unbiased), with the random word of value firstIndex + i in `rs` (all
// zero in the low F - e bits: up). Returns how many codes it changed. With
// `residual`, it receives D(old) - D(new) for every changed value (so error
// feedback keeps what the floor took).
size_t natApplyFloor(void* packed, size_t count, int floor, uint64_t firstIndex, RandomStream rs, float* residual);

// int32 up: out_i = round(p_i * 2^(127 - F)) to nearest, ties to even (in
// double precision); non-finite p_i gives INT32_MIN; magnitudes beyond the
// int32 range clamp to +-(2^31 - 1) (only a wrong F gets there, and the
// switch flags it). p_i = values_i + residual_i when `residual` is not null,
// which then keeps p_i - out_i * 2^(F - 127).
void fixedEncode(ElementType type, const void* values, float* residual, size_t count, int floor, int32_t* out);

// int32 down: out_i = sums_i * 2^(F - 127) / divisor, computed in double and
// rounded once to the user's type; INT32_MIN gives NaN.
void fixedDecode(const int32_t* sums, size_t count, int floor, uint32_t divisor, ElementType type, void* out);

// --------------------------------------------------------------- switch

// acc_i = q_i (first) or acc_i + q_i, q_i the nat code's integer
// (-1)^s * 2^(e - F), 0 for e = 0, non-finite for e = 255 (±Inf) and for
// e = 0 with the sign bit (NaN): the accumulator stays INT32_MIN once
// non-finite. A code outside [F, F + maxShift] (other
// than 0 and 255) is not added and the call returns false: a contribution
// outside the agreed scale. `acc` holds count rounded up to 32 values.
bool natAccumulateFixed(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc);
// The same for int32 contributions (little-endian, any alignment):
// |q| <= 2^maxShift or INT32_MIN.
bool fixedAccumulate(const void* values, size_t count, int maxShift, bool first, int32_t* acc);

// nat down: each sum S as a nat code of S * 2^(F - 127), rounded exactly and
// unbiased with the random word of value firstIndex + i in `rs`: for |S| in
// [2^p, 2^(p+1)), up to 2^(p+1) iff (u mod 2^p) < |S| - 2^p. Below 2^-126
// nat's subnormal rule, past 2^127 nat's saturation, past float32's range
// non-finite; INT32_MIN encodes as NaN (code 0 with the sign bit): the sum
// of non-finite values may be +Inf, -Inf or NaN, and only NaN never lies.
void natEncodeFixed(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                    void* packed);

// The scalar references of the fast paths (the tests compare them, bit for bit).
void fixedEncodeScalar(ElementType type, const void* values, float* residual, size_t count, int floor,
                       int32_t* out);
void fixedDecodeScalar(const int32_t* sums, size_t count, int floor, uint32_t divisor, ElementType type,
                       void* out);
bool natAccumulateFixedScalar(const void* packed, size_t count, int floor, int maxShift, bool first, int32_t* acc);
void natEncodeFixedScalar(const int32_t* sums, size_t count, int floor, uint64_t firstIndex, RandomStream rs,
                          void* packed);

}  // namespace cc
