// The exact codec (`none`) on device memory: packed = the raw values, the hop
// applies the reduction op (docs/wire-format.md, "Exact codec"). Mirrors the
// ExactCodec of src/codec/codec.cc per element type, bit for bit:
//   - integers compute in the unsigned type of the same width (SUM and PROD
//     wrap), MAX/MIN compare as the signed or unsigned type, AVG's last hop
//     divides the wrapped sum by the 64-bit-widened divisor, truncating;
//   - F32/F64 compute natively, F16/BF16 widen to fp32, compute once and
//     round back to nearest even (nat_math.h's integer conversions);
//   - float MAX/MIN return the NaN operand itself; sums, products and
//     quotients give the host's (x86) NaN bits (cuda/device_float.cuh);
//   - the divisor applies to SUM and AVG when > 1; PROD, MAX, MIN ignore it.
// Error feedback (float32 only: the library folds the residual into the
// input before an exact reduction, so it never reaches this codec otherwise)
// follows src/codec/residual.cc with the float32 exact codec.
#include <cstring>
#include <memory>
#include <type_traits>

#include "base/error.h"
#include "cuda/device_codec.h"
#include "cuda/device_float.cuh"
#include "cuda/device_launch.h"
#include "cuda/nat_math.h"

namespace cc {
namespace {

constexpr unsigned kThreads = 256;

// ---------------------------------------------------------------------------
// Reductions per element type (device twins of codec.cc's).

template <typename Int>
struct IntegerReduction {
  using Storage = Int;
  using Unsigned = std::make_unsigned_t<Int>;
  __device__ static Int sum(Int a, Int b) {
    return static_cast<Int>(static_cast<Unsigned>(static_cast<Unsigned>(a) + static_cast<Unsigned>(b)));
  }
  __device__ static Int product(Int a, Int b) {
    return static_cast<Int>(static_cast<Unsigned>(static_cast<Unsigned>(a) * static_cast<Unsigned>(b)));
  }
  __device__ static Int max(Int a, Int b) { return b > a ? b : a; }
  __device__ static Int min(Int a, Int b) { return b < a ? b : a; }
  __device__ static Int sumDivided(Int a, Int b, uint32_t divisor) {
    const Int total = sum(a, b);
    if constexpr (std::is_signed<Int>::value) {
      return static_cast<Int>(static_cast<int64_t>(total) / static_cast<int64_t>(divisor));
    } else {
      return static_cast<Int>(static_cast<uint64_t>(total) / static_cast<uint64_t>(divisor));
    }
  }
  __device__ static float toFloat(Int value) { return static_cast<float>(value); }  // round to nearest
};

template <typename Float>
struct NativeFloatReduction {
  using Storage = Float;
  __device__ static Float sum(Float a, Float b) { return x86Add(a, b); }
  __device__ static Float product(Float a, Float b) { return x86Mul(a, b); }
  __device__ static Float max(Float a, Float b) { return maxPropagatingNan(a, b); }
  __device__ static Float min(Float a, Float b) { return minPropagatingNan(a, b); }
  __device__ static Float sumDivided(Float a, Float b, uint32_t divisor) {
    return x86Div(x86Add(a, b), static_cast<Float>(divisor));
  }
  __device__ static float toFloat(Float value) {
    if constexpr (std::is_same<Float, double>::value) {
      return x86DoubleToFloat(value);
    } else {
      return value;
    }
  }
};

template <bool Bf16>
struct HalfFloatReduction {
  using Storage = uint16_t;
  __device__ static float widen(uint16_t value) {
    return __uint_as_float(Bf16 ? bf16ToFloatBits(value) : halfToFloatBits(value));
  }
  __device__ static uint16_t narrow(float value) {
    return Bf16 ? floatBitsToBf16(__float_as_uint(value)) : floatBitsToHalf(__float_as_uint(value));
  }
  __device__ static uint16_t sum(uint16_t a, uint16_t b) { return narrow(x86Add(widen(a), widen(b))); }
  __device__ static uint16_t product(uint16_t a, uint16_t b) { return narrow(x86Mul(widen(a), widen(b))); }
  __device__ static uint16_t max(uint16_t a, uint16_t b) { return narrow(maxPropagatingNan(widen(a), widen(b))); }
  __device__ static uint16_t min(uint16_t a, uint16_t b) { return narrow(minPropagatingNan(widen(a), widen(b))); }
  __device__ static uint16_t sumDivided(uint16_t a, uint16_t b, uint32_t divisor) {
    return narrow(x86Div(x86Add(widen(a), widen(b)), __uint2float_rn(divisor)));
  }
  __device__ static float toFloat(uint16_t value) { return widen(value); }
};

enum class HopOp { Sum, SumDivided, Product, Max, Min };

template <typename Reduction, HopOp Op>
__device__ __forceinline__ typename Reduction::Storage reduce(typename Reduction::Storage a,
                                                              typename Reduction::Storage b, uint32_t divisor) {
  if constexpr (Op == HopOp::Sum) return Reduction::sum(a, b);
  if constexpr (Op == HopOp::SumDivided) return Reduction::sumDivided(a, b, divisor);
  if constexpr (Op == HopOp::Product) return Reduction::product(a, b);
  if constexpr (Op == HopOp::Max) return Reduction::max(a, b);
  if constexpr (Op == HopOp::Min) return Reduction::min(a, b);
}

// ---------------------------------------------------------------------------
// Kernels: each thread takes 16 bytes of every buffer (Vector: all of them
// 16-byte aligned) or one element; grid-stride loops.

template <typename Storage, bool Vector>
__host__ __device__ constexpr size_t elementsPerThread() {
  return Vector ? 16 / sizeof(Storage) : 1;
}

template <typename Reduction, HopOp Op, bool Vector>
__global__ void __launch_bounds__(kThreads)
    exactHopKernel(const void* packedIn, const void* local, size_t count, uint32_t divisor, void* packedOut,
                   void* decodedOut) {
  using Storage = typename Reduction::Storage;
  constexpr size_t kPer = elementsPerThread<Storage, Vector>();
  const Storage* in = static_cast<const Storage*>(packedIn);
  const Storage* mine = static_cast<const Storage*>(local);
  Storage* out = static_cast<Storage*>(packedOut);
  Storage* decoded = static_cast<Storage*>(decodedOut);
  const size_t items = (count + kPer - 1) / kPer;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t item = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < items; item += stride) {
    const size_t first = item * kPer;
    if (Vector && first + kPer <= count) {
      const uint4 a = *reinterpret_cast<const uint4*>(in + first);
      const uint4 b = *reinterpret_cast<const uint4*>(mine + first);
      Storage x[kPer], y[kPer], r[kPer];
      memcpy(x, &a, sizeof a);
      memcpy(y, &b, sizeof b);
#pragma unroll
      for (size_t k = 0; k < kPer; ++k) r[k] = reduce<Reduction, Op>(x[k], y[k], divisor);
      uint4 result;
      memcpy(&result, r, sizeof result);
      *reinterpret_cast<uint4*>(out + first) = result;
      if (decoded != nullptr) *reinterpret_cast<uint4*>(decoded + first) = result;
    } else {
      const size_t end = first + kPer < count ? first + kPer : count;
      for (size_t i = first; i < end; ++i) {
        const Storage result = reduce<Reduction, Op>(in[i], mine[i], divisor);
        out[i] = result;
        if (decoded != nullptr) decoded[i] = result;
      }
    }
  }
}

template <typename Reduction, bool Vector>
__global__ void __launch_bounds__(kThreads)
    exactDecodeAccumulateKernel(const void* packed, size_t count, float* acc) {
  using Storage = typename Reduction::Storage;
  constexpr size_t kPer = Vector ? 4 : 1;  // 4 floats of acc = 16 bytes
  const Storage* in = static_cast<const Storage*>(packed);
  const size_t items = (count + kPer - 1) / kPer;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t item = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < items; item += stride) {
    const size_t first = item * kPer;
    if (Vector && first + kPer <= count) {
      float4 sum = *reinterpret_cast<const float4*>(acc + first);
      sum.x = x86Add(sum.x, Reduction::toFloat(in[first + 0]));
      sum.y = x86Add(sum.y, Reduction::toFloat(in[first + 1]));
      sum.z = x86Add(sum.z, Reduction::toFloat(in[first + 2]));
      sum.w = x86Add(sum.w, Reduction::toFloat(in[first + 3]));
      *reinterpret_cast<float4*>(acc + first) = sum;
    } else {
      const size_t end = first + kPer < count ? first + kPer : count;
      for (size_t i = first; i < end; ++i) acc[i] = x86Add(acc[i], Reduction::toFloat(in[i]));
    }
  }
}

// Error feedback with the float32 exact codec (residual.cc):
//   p = e + x; packed = p; e = p - p.
__global__ void __launch_bounds__(kThreads)
    exactEncodeResidualKernel(const float* local, float* residual, size_t count, float* packed) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const float p = x86Add(residual[i], local[i]);
    packed[i] = p;
    residual[i] = x86Sub(p, p);
  }
}

//   s = in + e + x; out = divides ? s / divisor : s; e = s - out * divisor.
__global__ void __launch_bounds__(kThreads)
    exactHopResidualKernel(const float* packedIn, const float* local, float* residual, size_t count, bool divides,
                           float divisor, float* packedOut, float* decodedOut) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const float s = x86Add(x86Add(packedIn[i], residual[i]), local[i]);
    const float out = divides ? x86Div(s, divisor) : s;
    packedOut[i] = out;
    residual[i] = x86Sub(s, x86Mul(out, divisor));
    if (decodedOut != nullptr) decodedOut[i] = out;
  }
}

// ---------------------------------------------------------------------------
// Launching

bool alignedTo(const void* pointer, size_t alignment) {
  return reinterpret_cast<uintptr_t>(pointer) % alignment == 0;
}

cc_result_t launched(const char* kernel, ElementType type, size_t count) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return CC_SUCCESS;
  return setError(CC_CUDA_ERROR, "%s (exact, element type %d, %zu values): launch failed: %s", kernel,
                  static_cast<int>(type), count, cudaGetErrorString(status));
}

cc_result_t copyAsync(void* target, const void* source, size_t bytes, void* stream, const char* what) {
  if (bytes == 0 || target == source) return CC_SUCCESS;
  const cudaError_t status = cudaMemcpyAsync(target, source, bytes, cudaMemcpyDeviceToDevice, asCudaStream(stream));
  if (status == cudaSuccess) return CC_SUCCESS;
  return setError(CC_CUDA_ERROR, "cudaMemcpyAsync (exact %s, %zu bytes): %s", what, bytes, cudaGetErrorString(status));
}

template <typename Reduction>
class DeviceExactCodec final : public DeviceCodec {
  using Storage = typename Reduction::Storage;

 public:
  DeviceExactCodec(ElementType type, cc_red_op_t op) : type_(type), op_(op) {}

  CodecId id() const override { return CodecId::None; }
  size_t alignmentValues() const override { return kBlockValues; }
  size_t packedBytes(size_t count) const override { return count * sizeof(Storage); }

  cc_result_t encode(const void* local, size_t count, uint64_t, RandomStream, void* packed,
                     void* stream) const override {
    return copyAsync(packed, local, count * sizeof(Storage), stream, "encode");
  }

  cc_result_t decode(const void* packed, size_t count, void* out, void* stream) const override {
    return copyAsync(out, packed, count * sizeof(Storage), stream, "decode");
  }

  cc_result_t decodeAccumulate(const void* packed, size_t count, float* acc, void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    const bool vector = alignedTo(acc, 16);
    const unsigned grid = gridFor(vector ? (count + 3) / 4 : count, kThreads);
    if (vector) {
      exactDecodeAccumulateKernel<Reduction, true><<<grid, kThreads, 0, asCudaStream(stream)>>>(packed, count, acc);
    } else {
      exactDecodeAccumulateKernel<Reduction, false><<<grid, kThreads, 0, asCudaStream(stream)>>>(packed, count, acc);
    }
    return launched("exactDecodeAccumulateKernel", type_, count);
  }

  // The divisor applies to SUM and AVG (it is 1 except on AVG's last hop);
  // PROD, MAX and MIN ignore it.
  cc_result_t decodeAddEncode(const void* packedIn, const void* local, size_t count, uint64_t, RandomStream,
                              uint32_t divisor, void* packedOut, void* decodedOut, void* stream) const override {
    if (count == 0) return CC_SUCCESS;
    switch (op_) {
      case CC_SUM:
      case CC_AVG:
        if (divisor > 1) return hop<HopOp::SumDivided>(packedIn, local, count, divisor, packedOut, decodedOut, stream);
        return hop<HopOp::Sum>(packedIn, local, count, divisor, packedOut, decodedOut, stream);
      case CC_PROD:
        return hop<HopOp::Product>(packedIn, local, count, divisor, packedOut, decodedOut, stream);
      case CC_MAX:
        return hop<HopOp::Max>(packedIn, local, count, divisor, packedOut, decodedOut, stream);
      case CC_MIN:
        return hop<HopOp::Min>(packedIn, local, count, divisor, packedOut, decodedOut, stream);
    }
    return setError(CC_INVALID_ARGUMENT, "exact device codec: invalid op %d", static_cast<int>(op_));
  }

  cc_result_t encodeWithResidual(const void* local, float* residual, size_t count, uint64_t, RandomStream,
                                 void* packed, void* stream) const override {
    CC_CHECK(residualSupported());
    if (count == 0) return CC_SUCCESS;
    exactEncodeResidualKernel<<<gridFor(count, kThreads), kThreads, 0, asCudaStream(stream)>>>(
        static_cast<const float*>(local), residual, count, static_cast<float*>(packed));
    return launched("exactEncodeResidualKernel", type_, count);
  }

  cc_result_t decodeAddEncodeWithResidual(const void* packedIn, const void* local, float* residual, size_t count,
                                          uint64_t, RandomStream, uint32_t divisor, void* packedOut,
                                          void* decodedOut, void* stream) const override {
    CC_CHECK(residualSupported());
    if (count == 0) return CC_SUCCESS;
    exactHopResidualKernel<<<gridFor(count, kThreads), kThreads, 0, asCudaStream(stream)>>>(
        static_cast<const float*>(packedIn), static_cast<const float*>(local), residual, count, divisor > 1,
        static_cast<float>(divisor), static_cast<float*>(packedOut), static_cast<float*>(decodedOut));
    return launched("exactHopResidualKernel", type_, count);
  }

 private:
  template <HopOp Op>
  cc_result_t hop(const void* packedIn, const void* local, size_t count, uint32_t divisor, void* packedOut,
                  void* decodedOut, void* stream) const {
    const bool vector = alignedTo(packedIn, 16) && alignedTo(local, 16) && alignedTo(packedOut, 16) &&
                        alignedTo(decodedOut, 16);
    if (vector) {
      const unsigned grid = gridFor((count + 16 / sizeof(Storage) - 1) / (16 / sizeof(Storage)), kThreads);
      exactHopKernel<Reduction, Op, true>
          <<<grid, kThreads, 0, asCudaStream(stream)>>>(packedIn, local, count, divisor, packedOut, decodedOut);
    } else {
      exactHopKernel<Reduction, Op, false><<<gridFor(count, kThreads), kThreads, 0, asCudaStream(stream)>>>(
          packedIn, local, count, divisor, packedOut, decodedOut);
    }
    return launched("exactHopKernel", type_, count);
  }

  // residual.cc with the float32 exact codec writes float32 values, 4 bytes
  // each: for any other type that exceeds packedBytes(count), so only float32
  // is offered (the library folds residuals into the input for exact specs).
  cc_result_t residualSupported() const {
    if (type_ == ElementType::F32) return CC_SUCCESS;
    return setError(CC_UNSUPPORTED,
                    "exact device codec: error feedback needs float32 values (element type %d); fold the "
                    "residual into the input instead",
                    static_cast<int>(type_));
  }

  ElementType type_;
  cc_red_op_t op_;
};

}  // namespace

std::unique_ptr<DeviceCodec> makeDeviceExactCodec(ElementType type, cc_red_op_t op) {
  if (static_cast<int>(op) < 0 || static_cast<int>(op) >= CC_NUM_OPS) {
    setError(CC_INVALID_ARGUMENT, "exact device codec: invalid op %d", static_cast<int>(op));
    return nullptr;
  }
  switch (type) {
    case ElementType::F32:
      return std::make_unique<DeviceExactCodec<NativeFloatReduction<float>>>(type, op);
    case ElementType::F64:
      return std::make_unique<DeviceExactCodec<NativeFloatReduction<double>>>(type, op);
    case ElementType::BF16:
      return std::make_unique<DeviceExactCodec<HalfFloatReduction<true>>>(type, op);
    case ElementType::F16:
      return std::make_unique<DeviceExactCodec<HalfFloatReduction<false>>>(type, op);
    case ElementType::I8:
      return std::make_unique<DeviceExactCodec<IntegerReduction<int8_t>>>(type, op);
    case ElementType::U8:
      return std::make_unique<DeviceExactCodec<IntegerReduction<uint8_t>>>(type, op);
    case ElementType::I32:
      return std::make_unique<DeviceExactCodec<IntegerReduction<int32_t>>>(type, op);
    case ElementType::U32:
      return std::make_unique<DeviceExactCodec<IntegerReduction<uint32_t>>>(type, op);
    case ElementType::I64:
      return std::make_unique<DeviceExactCodec<IntegerReduction<int64_t>>>(type, op);
    case ElementType::U64:
      return std::make_unique<DeviceExactCodec<IntegerReduction<uint64_t>>>(type, op);
  }
  setError(CC_INVALID_ARGUMENT, "exact device codec: invalid element type %d", static_cast<int>(type));
  return nullptr;
}

}  // namespace cc
