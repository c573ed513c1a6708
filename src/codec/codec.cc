// Codec selection, the nat codec's dispatch between the scalar reference and
// the AVX2 path, and the exact codec (packed form = the raw values).
#include "codec/codec.h"

#include <atomic>
#include <cstring>
#include <type_traits>

#include "base/error.h"
#include "codec/dither.h"
#include "codec/nat_kernels.h"
#include "codec/spec.h"
#include "codec/topk.h"
#include "cuda/nat_math.h"

namespace cc {

// ---------------------------------------------------------------------------
// Names and element types

const char* codecName(CodecId id) {
  switch (id) {
    case CodecId::None:
      return "none";
    case CodecId::Nat:
      return "nat";
    case CodecId::NatDet:
      return "nat_det";
    case CodecId::Dither:
      return "dither";
    case CodecId::TopK:
      return "topk";
  }
  return "unknown";
}

cc_result_t parseCodecName(const std::string& text, CodecId* id) {
  if (text == "none") {
    *id = CodecId::None;
    return CC_SUCCESS;
  }
  if (text == "nat") {
    *id = CodecId::Nat;
    return CC_SUCCESS;
  }
  if (text == "nat_det") {
    *id = CodecId::NatDet;
    return CC_SUCCESS;
  }
  return setError(CC_INVALID_ARGUMENT, "unknown codec '%s' (valid: none, nat, nat_det)", text.c_str());
}

ElementType elementTypeOf(cc_datatype_t dtype) {
  switch (dtype) {
    case CC_INT8:
      return ElementType::I8;
    case CC_UINT8:
      return ElementType::U8;
    case CC_INT32:
      return ElementType::I32;
    case CC_UINT32:
      return ElementType::U32;
    case CC_INT64:
      return ElementType::I64;
    case CC_UINT64:
      return ElementType::U64;
    case CC_FLOAT16:
      return ElementType::F16;
    case CC_FLOAT32:
      return ElementType::F32;
    case CC_FLOAT64:
      return ElementType::F64;
    case CC_BFLOAT16:
      return ElementType::BF16;
  }
  // Callers validate dtype first (makeCodec refuses an invalid one); bytes
  // are the safest answer for a value that slipped through.
  return ElementType::U8;
}

size_t elementBytes(ElementType type) {
  switch (type) {
    case ElementType::I8:
    case ElementType::U8:
      return 1;
    case ElementType::BF16:
    case ElementType::F16:
      return 2;
    case ElementType::F32:
    case ElementType::I32:
    case ElementType::U32:
      return 4;
    case ElementType::F64:
    case ElementType::I64:
    case ElementType::U64:
      return 8;
  }
  return 1;
}

namespace {

bool isValidDatatype(cc_datatype_t dtype) {
  return static_cast<int>(dtype) >= 0 && static_cast<int>(dtype) < CC_NUM_DATATYPES;
}

bool isValidOp(cc_red_op_t op) { return static_cast<int>(op) >= 0 && static_cast<int>(op) < CC_NUM_OPS; }

bool natApplies(cc_datatype_t dtype, cc_red_op_t op) {
  const bool floatType = dtype == CC_FLOAT32 || dtype == CC_BFLOAT16 || dtype == CC_FLOAT16;
  return floatType && (op == CC_SUM || op == CC_AVG);
}

// ---------------------------------------------------------------------------
// nat

std::atomic<CodecIsa> gIsaCeiling{CodecIsa::Avx512};

CodecIsa bestIsa() {
  static const CodecIsa best = natAvx512Supported() ? CodecIsa::Avx512
                               : natAvx2Supported() ? CodecIsa::Avx2
                                                    : CodecIsa::Scalar;
  return best;
}

CodecIsa activeIsa() {
  const CodecIsa ceiling = gIsaCeiling.load(std::memory_order_relaxed);
  return static_cast<int>(ceiling) < static_cast<int>(bestIsa()) ? ceiling : bestIsa();
}

class NatCodec final : public Codec {
 public:
  explicit NatCodec(ElementType type) : type_(type) {}

  CodecId id() const override { return CodecId::Nat; }
  size_t packedBytes(size_t count) const override { return natPackedBytes(count); }

  void encode(const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed) const override {
    natEncode(type_, local, count, firstIndex, rs, packed);
  }

  void decode(const void* packed, size_t count, void* out) const override { natDecode(type_, packed, count, out); }

  void decodeAccumulate(const void* packed, size_t count, float* acc) const override {
    natDecodeAccumulate(packed, count, acc);
  }

  void decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t firstIndex, RandomStream rs,
                       uint32_t divisor, void* packedOut, void* decodedOut) const override {
    if (count == 0) return;
    switch (activeIsa()) {
      case CodecIsa::Avx512:
        return natDecodeAddEncodeAvx512(type_, packedIn, local, count, firstIndex, rs, divisor, packedOut,
                                        decodedOut);
      case CodecIsa::Avx2:
        return natDecodeAddEncodeAvx2(type_, packedIn, local, count, firstIndex, rs, divisor, packedOut, decodedOut);
      case CodecIsa::Scalar:
        return natDecodeAddEncodeScalar(type_, packedIn, local, count, firstIndex, rs, divisor, packedOut,
                                        decodedOut);
    }
  }

 private:
  ElementType type_;
};

// ---------------------------------------------------------------------------
// exact: packed = raw values, the hop applies the reduction op.
//
// Each element type says how it reduces. Integers compute in the unsigned
// type of the same width, where overflow wraps by definition (signed
// overflow would be UB); 16-bit floats compute in fp32 and round back to
// nearest even once per hop. Float MAX/MIN propagate NaN, so a non-finite
// input never turns into a silent finite result.

template <typename Value>
Value loadValue(const void* values, size_t i) {
  Value value;
  std::memcpy(&value, static_cast<const char*>(values) + sizeof(Value) * i, sizeof(Value));
  return value;
}

template <typename Value>
void storeValue(void* values, size_t i, Value value) {
  std::memcpy(static_cast<char*>(values) + sizeof(Value) * i, &value, sizeof(Value));
}

template <typename Int>
struct IntegerReduction {
  using Storage = Int;
  using Unsigned = std::make_unsigned_t<Int>;
  // Promotion keeps 8-bit products inside int (255 * 255 fits), and the
  // 32/64-bit types multiply as unsigned: no path overflows a signed type.
  static Int sum(Int a, Int b) {
    return static_cast<Int>(static_cast<Unsigned>(static_cast<Unsigned>(a) + static_cast<Unsigned>(b)));
  }
  static Int product(Int a, Int b) {
    return static_cast<Int>(static_cast<Unsigned>(static_cast<Unsigned>(a) * static_cast<Unsigned>(b)));
  }
  static Int max(Int a, Int b) { return b > a ? b : a; }
  static Int min(Int a, Int b) { return b < a ? b : a; }
  // Integer AVG divides the wrapped sum, truncating toward zero. The divisor
  // (a rank count below 2^32) is widened so the division cannot overflow.
  static Int sumDivided(Int a, Int b, uint32_t divisor) {
    const Int total = sum(a, b);
    if constexpr (std::is_signed<Int>::value) {
      return static_cast<Int>(static_cast<int64_t>(total) / static_cast<int64_t>(divisor));
    } else {
      return static_cast<Int>(static_cast<uint64_t>(total) / static_cast<uint64_t>(divisor));
    }
  }
  static float toFloat(Int value) { return static_cast<float>(value); }
};

template <typename Float>
struct NativeFloatReduction {
  using Storage = Float;
  static Float sum(Float a, Float b) { return a + b; }
  static Float product(Float a, Float b) { return a * b; }
  static Float max(Float a, Float b) { return maxPropagatingNan(a, b); }
  static Float min(Float a, Float b) { return minPropagatingNan(a, b); }
  static Float sumDivided(Float a, Float b, uint32_t divisor) { return (a + b) / static_cast<Float>(divisor); }
  static float toFloat(Float value) { return static_cast<float>(value); }
};

// bf16 / f16 stored as their 16-bit patterns.
template <uint32_t (*ToFloatBits)(uint16_t), uint16_t (*FromFloatBits)(uint32_t)>
struct HalfFloatReduction {
  using Storage = uint16_t;
  static float widen(uint16_t value) { return bitsToFloat(ToFloatBits(value)); }
  static uint16_t narrow(float value) { return FromFloatBits(floatToBits(value)); }
  static uint16_t sum(uint16_t a, uint16_t b) { return narrow(widen(a) + widen(b)); }
  static uint16_t product(uint16_t a, uint16_t b) { return narrow(widen(a) * widen(b)); }
  static uint16_t max(uint16_t a, uint16_t b) { return narrow(maxPropagatingNan(widen(a), widen(b))); }
  static uint16_t min(uint16_t a, uint16_t b) { return narrow(minPropagatingNan(widen(a), widen(b))); }
  static uint16_t sumDivided(uint16_t a, uint16_t b, uint32_t divisor) {
    return narrow((widen(a) + widen(b)) / static_cast<float>(divisor));
  }
  static float toFloat(uint16_t value) { return widen(value); }
};

using Bf16Reduction = HalfFloatReduction<bf16ToFloatBits, floatBitsToBf16>;
using F16Reduction = HalfFloatReduction<halfToFloatBits, floatBitsToHalf>;

template <typename Reduction>
class ExactCodec final : public Codec {
  using Storage = typename Reduction::Storage;

 public:
  explicit ExactCodec(cc_red_op_t op) : op_(op) {}

  CodecId id() const override { return CodecId::None; }
  size_t packedBytes(size_t count) const override { return count * sizeof(Storage); }

  void encode(const void* local, size_t count, uint64_t, RandomStream, void* packed) const override {
    if (count != 0 && packed != local) std::memcpy(packed, local, count * sizeof(Storage));
  }

  void decode(const void* packed, size_t count, void* out) const override {
    if (count != 0 && out != packed) std::memcpy(out, packed, count * sizeof(Storage));
  }

  void decodeAccumulate(const void* packed, size_t count, float* acc) const override {
    for (size_t i = 0; i < count; ++i) acc[i] += Reduction::toFloat(loadValue<Storage>(packed, i));
  }

  // The divisor applies to SUM and AVG (it is 1 except on AVG's last hop);
  // PROD, MAX and MIN ignore it.
  void decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t, RandomStream, uint32_t divisor,
                       void* packedOut, void* decodedOut) const override {
    switch (op_) {
      case CC_SUM:
      case CC_AVG:
        if (divisor > 1) {
          return apply(packedIn, local, count, packedOut, decodedOut,
                       [divisor](Storage a, Storage b) { return Reduction::sumDivided(a, b, divisor); });
        }
        return apply(packedIn, local, count, packedOut, decodedOut, Reduction::sum);
      case CC_PROD:
        return apply(packedIn, local, count, packedOut, decodedOut, Reduction::product);
      case CC_MAX:
        return apply(packedIn, local, count, packedOut, decodedOut, Reduction::max);
      case CC_MIN:
        return apply(packedIn, local, count, packedOut, decodedOut, Reduction::min);
    }
  }

 private:
  template <typename Op>
  static void apply(const void* packedIn, const void* local, size_t count, void* packedOut, void* decodedOut, Op op) {
    for (size_t i = 0; i < count; ++i) {
      const Storage result = op(loadValue<Storage>(packedIn, i), loadValue<Storage>(local, i));
      storeValue<Storage>(packedOut, i, result);
      if (decodedOut != nullptr) storeValue<Storage>(decodedOut, i, result);
    }
  }

  cc_red_op_t op_;
};

std::unique_ptr<Codec> makeExactCodec(ElementType type, cc_red_op_t op) {
  switch (type) {
    case ElementType::F32:
      return std::make_unique<ExactCodec<NativeFloatReduction<float>>>(op);
    case ElementType::F64:
      return std::make_unique<ExactCodec<NativeFloatReduction<double>>>(op);
    case ElementType::BF16:
      return std::make_unique<ExactCodec<Bf16Reduction>>(op);
    case ElementType::F16:
      return std::make_unique<ExactCodec<F16Reduction>>(op);
    case ElementType::I8:
      return std::make_unique<ExactCodec<IntegerReduction<int8_t>>>(op);
    case ElementType::U8:
      return std::make_unique<ExactCodec<IntegerReduction<uint8_t>>>(op);
    case ElementType::I32:
      return std::make_unique<ExactCodec<IntegerReduction<int32_t>>>(op);
    case ElementType::U32:
      return std::make_unique<ExactCodec<IntegerReduction<uint32_t>>>(op);
    case ElementType::I64:
      return std::make_unique<ExactCodec<IntegerReduction<int64_t>>>(op);
    case ElementType::U64:
      return std::make_unique<ExactCodec<IntegerReduction<uint64_t>>>(op);
  }
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------
// Selection

bool natAvx2Supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

// libgcc sets the avx512 bits only where the OS saves the ZMM state (XCR0).
bool natAvx512Supported() {
  __builtin_cpu_init();
  return natAvx2Supported() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

const char* codecIsaName(CodecIsa isa) {
  switch (isa) {
    case CodecIsa::Avx512:
      return "avx512";
    case CodecIsa::Avx2:
      return "avx2";
    case CodecIsa::Scalar:
      return "scalar";
  }
  return "scalar";
}

CodecIsa bestCodecIsa() { return bestIsa(); }

const char* natImplementationName() { return codecIsaName(activeIsa()); }

bool useAvx2Codecs() { return activeIsa() != CodecIsa::Scalar; }

bool useAvx512Codecs() { return activeIsa() == CodecIsa::Avx512; }

void natEncode(ElementType type, const void* local, size_t count, uint64_t firstIndex, RandomStream rs, void* packed) {
  if (count == 0) return;
  switch (activeIsa()) {
    case CodecIsa::Avx512:
      return natEncodeAvx512(type, local, count, firstIndex, rs, packed);
    case CodecIsa::Avx2:
      return natEncodeAvx2(type, local, count, firstIndex, rs, packed);
    case CodecIsa::Scalar:
      return natEncodeScalar(type, local, count, firstIndex, rs, packed);
  }
}

void natDecode(ElementType type, const void* packed, size_t count, void* out) {
  if (count == 0) return;
  switch (activeIsa()) {
    case CodecIsa::Avx512:
      return natDecodeAvx512(type, packed, count, out);
    case CodecIsa::Avx2:
      return natDecodeAvx2(type, packed, count, out);
    case CodecIsa::Scalar:
      return natDecodeScalar(type, packed, count, out);
  }
}

void natDecodeAccumulate(const void* packed, size_t count, float* acc) {
  if (count == 0) return;
  switch (activeIsa()) {
    case CodecIsa::Avx512:
      return natDecodeAccumulateAvx512(packed, count, acc);
    case CodecIsa::Avx2:
      return natDecodeAccumulateAvx2(packed, count, acc);
    case CodecIsa::Scalar:
      return natDecodeAccumulateScalar(packed, count, acc);
  }
}

void limitCodecIsa(CodecIsa ceiling) { gIsaCeiling.store(ceiling, std::memory_order_relaxed); }

void forceScalarCodecs(bool force) { limitCodecIsa(force ? CodecIsa::Scalar : CodecIsa::Avx512); }

bool codecCompresses(CodecId requested, cc_datatype_t dtype, cc_red_op_t op) {
  return (requested == CodecId::Nat || requested == CodecId::NatDet) && natApplies(dtype, op);
}

bool specCompresses(const CodecSpec& spec, cc_datatype_t dtype, cc_red_op_t op) {
  const bool compresses = spec.quantizer != Quantizer::Exact || spec.selector != Selector::None;
  return compresses && natApplies(dtype, op);
}

std::unique_ptr<Codec> makeCodec(CodecId requested, cc_datatype_t dtype, cc_red_op_t op) {
  if (requested != CodecId::None && requested != CodecId::Nat && requested != CodecId::NatDet) {
    setError(CC_INVALID_ARGUMENT, "codec id %d needs a spec with parameters (parameterless: none, nat, nat_det)",
             static_cast<int>(requested));
    return nullptr;
  }
  return makeBlockCodec(simpleCodecSpec(codecName(requested)), dtype, op);
}

std::unique_ptr<Codec> makeBlockCodec(const CodecSpec& spec, cc_datatype_t dtype, cc_red_op_t op) {
  if (!isValidDatatype(dtype) || !isValidOp(op)) {
    setError(CC_INVALID_ARGUMENT, "no codec for datatype %d and op %d", static_cast<int>(dtype), static_cast<int>(op));
    return nullptr;
  }
  const ElementType type = elementTypeOf(dtype);
  if (!specCompresses(spec, dtype, op)) return makeExactCodec(type, op);
  switch (spec.quantizer) {
    case Quantizer::Exact:
      return makeExactCodec(type, op);
    case Quantizer::Nat:
      return std::make_unique<NatCodec>(type);
    case Quantizer::NatDet:
      return makeNatDetCodec(type);
    case Quantizer::DitherNat:
    case Quantizer::DitherStd:
      return makeDitherCodec(spec.quantizer, spec.dither, type, spec.scope == Scope::Bucket ? spec.bucketValues : 0);
  }
  return nullptr;
}

}  // namespace cc
