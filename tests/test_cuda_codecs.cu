// The device codecs (cuda/device_codec.h) against the host codecs, bit for
// bit: nat, nat_det and exact on float32, bfloat16 and float16 (and exact on
// every other element type and op) for encode, decode, decodeAccumulate, the
// fused hop (divisor 1 and 4, with and without decodedOut, in place) and the
// error-feedback passes. Inputs are fresh random values with every special
// (zeros of both signs, subnormals, saturating magnitudes, infinities, NaNs
// of both signs with payloads); every buffer, inputs included, is compared
// whole after the call, plus a guard of poisoned bytes behind it, so a byte
// written where the host writes none fails as much as a wrong byte.
// Skips (exit 77) without a CUDA device.
#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/elements.h"
#include "codec/spec.h"
#include "cuda/device_codec.h"
#include "cuda/nat_math.h"

#include "codec_test_values.h"
#include "cuda_test_device.h"

namespace {

using cc::ElementType;
using Bytes = std::vector<uint8_t>;

constexpr uint8_t kPoison = 0xab;
constexpr size_t kGuardBytes = 64;

int gChecks = 0;
int gFailures = 0;

void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char* fmt, ...) {
  ++gFailures;
  if (gFailures > 40) return;
  va_list args;
  va_start(args, fmt);
  std::fprintf(stderr, "FAILED: ");
  std::vfprintf(stderr, fmt, args);
  std::fprintf(stderr, "\n");
  va_end(args);
}

bool cudaOk(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return true;
  fail("%s: %s", what, cudaGetErrorString(status));
  return false;
}

// ---------------------------------------------------------------------------
// Random values with every special.

class Values {
 public:
  explicit Values(uint64_t seed) : rng_(seed) {}

  uint64_t next() { return rng_(); }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }

  uint32_t float32Bits() {
    const uint32_t sign = static_cast<uint32_t>(rng_() & 1u) << 31;
    const uint32_t mantissa = static_cast<uint32_t>(rng_()) & 0x7fffffu;
    const uint32_t pick = below(100);
    uint32_t exponent;
    uint32_t m = mantissa;
    if (pick < 50) {
      exponent = 127 - 20 + below(41);
    } else if (pick < 56) {
      exponent = 1 + below(253);
    } else if (pick < 60) {
      exponent = 0, m = 0;  // ±0
    } else if (pick < 66) {
      exponent = 0, m = mantissa | 1u;  // subnormal
    } else if (pick < 70) {
      exponent = 254;  // saturates
    } else if (pick < 72) {
      exponent = 253;
    } else if (pick < 75) {
      exponent = 255, m = 0;  // ±Inf
    } else if (pick < 80) {
      exponent = 255, m = mantissa | (below(2) ? 0x400000u : 1u);  // quiet or signalling NaN
    } else if (pick < 90) {
      exponent = 127 - 20 + below(41), m = 0;  // a power of two
    } else {
      exponent = 127 - 20 + below(41);
      const uint32_t edges[4] = {0x400000u, 0x3fffffu, 0x7fffffu, 1u};  // nat_det's midpoint and neighbours
      m = edges[below(4)];
    }
    return sign | (exponent << 23) | m;
  }

  uint16_t halfBits() {
    const uint16_t sign = static_cast<uint16_t>((rng_() & 1u) << 15);
    const uint16_t mantissa = static_cast<uint16_t>(rng_() & 0x3ffu);
    const uint32_t pick = below(100);
    uint16_t exponent;
    uint16_t m = mantissa;
    if (pick < 55) {
      exponent = static_cast<uint16_t>(15 - 8 + below(17));
    } else if (pick < 62) {
      exponent = static_cast<uint16_t>(1 + below(30));
    } else if (pick < 66) {
      exponent = 0, m = 0;
    } else if (pick < 74) {
      exponent = 0, m = static_cast<uint16_t>(mantissa | 1u);
    } else if (pick < 80) {
      exponent = 30;
    } else if (pick < 84) {
      exponent = 31, m = 0;
    } else if (pick < 89) {
      exponent = 31, m = static_cast<uint16_t>(mantissa | (below(2) ? 0x200u : 1u));
    } else {
      exponent = static_cast<uint16_t>(15 - 8 + below(17)), m = 0;
    }
    return static_cast<uint16_t>(sign | (exponent << 10) | m);
  }

  uint64_t float64Bits() {
    const uint64_t sign = (rng_() & 1u) << 63;
    const uint64_t mantissa = rng_() & 0xfffffffffffffull;
    const uint32_t pick = below(100);
    uint64_t exponent;
    uint64_t m = mantissa;
    if (pick < 60) {
      exponent = 1023 - 40 + below(81);
    } else if (pick < 66) {
      exponent = 1 + below(2046);
    } else if (pick < 70) {
      exponent = 0, m = 0;
    } else if (pick < 75) {
      exponent = 0, m = mantissa | 1u;
    } else if (pick < 80) {
      exponent = 2046;
    } else if (pick < 84) {
      exponent = 2047, m = 0;
    } else if (pick < 90) {
      exponent = 2047, m = mantissa | (below(2) ? 0x8000000000000ull : 1u);
    } else {
      exponent = 1023 - 40 + below(81), m = 0;
    }
    return sign | (exponent << 52) | m;
  }

  // count values of `type` (floats with specials, integers uniform or small).
  Bytes elements(ElementType type, size_t count) {
    Bytes out(count * cc::elementBytes(type));
    for (size_t i = 0; i < count; ++i) {
      uint8_t* at = out.data() + i * cc::elementBytes(type);
      switch (type) {
        case ElementType::F32: {
          const uint32_t bits = float32Bits();
          std::memcpy(at, &bits, 4);
          break;
        }
        case ElementType::BF16: {
          const uint16_t bits = static_cast<uint16_t>(float32Bits() >> 16);
          std::memcpy(at, &bits, 2);
          break;
        }
        case ElementType::F16: {
          const uint16_t bits = halfBits();
          std::memcpy(at, &bits, 2);
          break;
        }
        case ElementType::F64: {
          const uint64_t bits = float64Bits();
          std::memcpy(at, &bits, 8);
          break;
        }
        default: {
          uint64_t bits = rng_();
          if (below(4) == 0) bits = static_cast<uint64_t>(static_cast<int64_t>(below(21)) - 10);  // small
          std::memcpy(at, &bits, cc::elementBytes(type));
          break;
        }
      }
    }
    return out;
  }

 private:
  std::mt19937_64 rng_;
};

bool isFloatType(ElementType type) {
  return type == ElementType::F32 || type == ElementType::BF16 || type == ElementType::F16 || type == ElementType::F64;
}

bool isNanAt(ElementType type, const Bytes& values, size_t i) {
  if (type == ElementType::F64) {
    uint64_t bits;
    std::memcpy(&bits, values.data() + 8 * i, 8);
    return (bits & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
  }
  if (!isFloatType(type)) return false;
  return (cc::loadFloatBits(type, values.data(), i) & 0x7fffffffu) > 0x7f800000u;
}

// Where the host's NaN result depends on which of two NaN operands its
// compiler put first (see cuda/device_float.cuh), make the second one finite.
void separateNans(ElementType type, const Bytes& first, Bytes* second) {
  const size_t count = second->size() / cc::elementBytes(type);
  for (size_t i = 0; i < count; ++i) {
    if (isNanAt(type, first, i) && isNanAt(type, *second, i)) {
      if (type == ElementType::F64) {
        const double one = 1.0;
        std::memcpy(second->data() + 8 * i, &one, 8);
      } else {
        cc::storeFloatBits(type, second->data(), i, 0x3f800000u);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// One comparison: the same buffers on host and device, the same call on both.

struct Slot {
  Bytes init;             // initial contents (shorter: the rest is poison)
  size_t bytes;           // the region a codec may touch; a guard follows
  size_t deviceMisalign;  // byte offset of the device pointer from an aligned allocation
};

struct Run {
  std::string name;
  std::vector<Slot> slots;
  // nullptr entries: pass nullptr for that slot (e.g. decodedOut absent).
  std::function<void(const std::vector<void*>&)> host;
  std::function<cc_result_t(const std::vector<void*>&, void*)> device;
  cc_result_t expectDevice = CC_SUCCESS;  // CC_UNSUPPORTED: nothing may change
};

Bytes initialContents(const Slot& slot) {
  Bytes contents(slot.bytes + kGuardBytes, kPoison);
  std::memcpy(contents.data(), slot.init.data(), std::min(slot.init.size(), slot.bytes));
  return contents;
}

void runCompare(const Run& run, cudaStream_t stream) {
  ++gChecks;
  const size_t n = run.slots.size();
  std::vector<Bytes> host(n);
  std::vector<void*> hostPointers(n), devicePointers(n), allocations(n, nullptr);
  for (size_t s = 0; s < n; ++s) {
    host[s] = initialContents(run.slots[s]);
    hostPointers[s] = host[s].data();
    const Bytes contents = initialContents(run.slots[s]);
    if (!cudaOk(cudaMalloc(&allocations[s], contents.size() + 256), "cudaMalloc")) return;
    devicePointers[s] = static_cast<uint8_t*>(allocations[s]) + run.slots[s].deviceMisalign;
    if (!cudaOk(cudaMemcpy(devicePointers[s], contents.data(), contents.size(), cudaMemcpyHostToDevice), "copy in")) {
      return;
    }
  }
  // A pageable cudaMemcpy may return before its DMA lands, and `stream` does
  // not wait for the legacy stream: finish the copies before the call.
  if (!cudaOk(cudaDeviceSynchronize(), "synchronize")) return;
  const cc_result_t result = run.device(devicePointers, stream);
  if (result != run.expectDevice) {
    fail("%s: device call returned %d, expected %d (%s)", run.name.c_str(), static_cast<int>(result),
         static_cast<int>(run.expectDevice), cc::lastErrorMessage().c_str());
  }
  if (run.expectDevice == CC_SUCCESS) run.host(hostPointers);
  cudaOk(cudaStreamSynchronize(stream), (run.name + ": stream").c_str());
  for (size_t s = 0; s < n; ++s) {
    Bytes device(host[s].size());
    cudaOk(cudaMemcpy(device.data(), devicePointers[s], device.size(), cudaMemcpyDeviceToHost), "copy out");
    cudaFree(allocations[s]);
    if (device == host[s]) continue;
    for (size_t i = 0; i < device.size(); ++i) {
      if (device[i] != host[s][i]) {
        size_t mismatches = 0;
        for (size_t j = i; j < device.size(); ++j) mismatches += device[j] != host[s][j];
        fail("%s: buffer %zu byte %zu%s: host 0x%02x device 0x%02x (%zu bytes differ)", run.name.c_str(), s, i,
             i >= run.slots[s].bytes ? " (guard)" : "", host[s][i], device[i], mismatches);
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Block codecs of float types: nat, nat_det, exact.

struct Codecs {
  std::unique_ptr<cc::Codec> host;
  std::unique_ptr<cc::Codec> hostF32;
  std::unique_ptr<cc::DeviceCodec> device;
};

using cc::datatypeOf;
using cc::typeName;

bool makeCodecs(const char* spec, ElementType type, cc_red_op_t op, Codecs* out) {
  const cc::CodecSpec parsed = cc::simpleCodecSpec(spec);
  out->host = cc::makeBlockCodec(parsed, datatypeOf(type), op);
  out->hostF32 = cc::makeBlockCodec(parsed, CC_FLOAT32, op);
  out->device = cc::makeDeviceBlockCodec(parsed, datatypeOf(type), op);
  if (!out->host || !out->hostF32 || !out->device) {
    fail("%s %s: no codec (%s)", spec, typeName(type), cc::lastErrorMessage().c_str());
    return false;
  }
  ++gChecks;
  if (out->host->id() != out->device->id() || out->host->packedBytes(1000003) != out->device->packedBytes(1000003) ||
      out->host->alignmentValues() != out->device->alignmentValues()) {
    fail("%s %s: device codec id/packedBytes/alignment differ from the host's", spec, typeName(type));
    return false;
  }
  return true;
}

// A packed message of `count` values for the hop and the decoders: the host
// encoding of random values, with random bytes in a few blocks and garbage in
// the pad lanes of the tail block (which decoders and the hop must ignore).
Bytes packedInput(const Codecs& codecs, ElementType type, size_t count, uint64_t firstIndex, Values& values,
                  bool nat) {
  const Bytes source = values.elements(type, count);
  Bytes packed(codecs.host->packedBytes(count));
  codecs.host->encode(source.data(), count, firstIndex, cc::RandomStream{values.next(), values.next()},
                      packed.data());
  if (nat) {
    const size_t blocks = packed.size() / cc::kNatBlockBytes;
    for (size_t b = 0; b < blocks; ++b) {
      if (values.below(8) != 0) continue;
      for (size_t i = 0; i < cc::kNatBlockBytes; ++i) {
        packed[b * cc::kNatBlockBytes + i] = static_cast<uint8_t>(values.next());
      }
    }
    const size_t tail = count % cc::kNatBlockValues;
    if (tail != 0) {
      uint8_t* block = packed.data() + (blocks - 1) * cc::kNatBlockBytes;
      uint32_t mask = cc::loadLe32(block) | (0xffffffffu << tail);
      cc::storeLe32(block, mask);
      for (size_t lane = tail; lane < cc::kNatBlockValues; ++lane) block[4 + lane] = static_cast<uint8_t>(values.next() | 1u);
    }
  }
  return packed;
}

// Local values for a hop whose input decodes to `decodedIn`: random, and on
// a few positions exactly minus the decoded input (sums of ±0); NaN pairs
// separated.
Bytes hopLocal(ElementType type, size_t count, const Bytes& decodedIn, Values& values) {
  Bytes local = values.elements(type, count);
  for (size_t i = 0; i < count; ++i) {
    if (values.below(30) == 0) {
      const uint32_t bits = cc::loadFloatBits(type, decodedIn.data(), i) ^ 0x80000000u;
      cc::storeFloatBits(type, local.data(), i, bits);
    }
  }
  separateNans(type, decodedIn, &local);
  return local;
}

// Residuals: float32 with specials, non-finite only where none of `others`
// (values of `type` that meet the residual in a sum) is NaN. An Inf residual
// can meet an Inf of the other sign (D(in) + e = NaN) before the local NaN
// is added: two NaN operands again, whose result the host's compiler decides
// (for bf16/f16 locals GCC puts the local first, for f32 the sum).
Bytes residualFor(ElementType type, const std::vector<const Bytes*>& others, size_t count, Values& values) {
  Bytes residual = values.elements(ElementType::F32, count);
  for (size_t i = 0; i < count; ++i) {
    if ((cc::loadFloatBits(ElementType::F32, residual.data(), i) & 0x7f800000u) != 0x7f800000u) continue;
    for (const Bytes* other : others) {
      if (isNanAt(type, *other, i)) cc::storeFloatBits(ElementType::F32, residual.data(), i, 0x3f800000u);
    }
  }
  return residual;
}

void testBlockCodec(const char* spec, ElementType type, size_t count, uint64_t firstIndex, bool misaligned,
                    Values& values, cudaStream_t stream) {
  Codecs codecs;
  if (!makeCodecs(spec, type, CC_SUM, &codecs)) return;
  const bool nat = codecs.host->id() != cc::CodecId::None;
  const size_t elementBytes = cc::elementBytes(type);
  const size_t valueBytes = count * elementBytes;
  const size_t packedBytes = codecs.host->packedBytes(count);
  const size_t f32Bytes = count * 4;
  // Device pointers off the 16-byte alignment when misaligned: values by one
  // element, packed nat bytes by one byte (exact: one element).
  const size_t valueShift = misaligned ? elementBytes : 0;
  const size_t packedShift = misaligned ? (nat ? 1 : elementBytes) : 0;
  const size_t f32Shift = misaligned ? 4 : 0;
  const cc::RandomStream rs{values.next(), values.next()};
  char label[160];
  std::snprintf(label, sizeof label, "%s %s count=%zu firstIndex=%llu%s", spec, typeName(type), count,
                static_cast<unsigned long long>(firstIndex), misaligned ? " misaligned" : "");
  const std::string name(label);
  const cc::Codec* host = codecs.host.get();
  const cc::Codec* hostF32 = codecs.hostF32.get();
  const cc::DeviceCodec* device = codecs.device.get();
  const cc::ResidualCodecs residualCodecs{host, hostF32, type};

  // encode
  {
    Run run;
    run.name = name + " encode";
    run.slots = {{values.elements(type, count), valueBytes, valueShift}, {{}, packedBytes, packedShift}};
    run.host = [=](const std::vector<void*>& p) { host->encode(p[0], count, firstIndex, rs, p[1]); };
    run.device = [=](const std::vector<void*>& p, void* s) {
      return device->encode(p[0], count, firstIndex, rs, p[1], s);
    };
    runCompare(run, stream);
  }
  const Bytes packed = packedInput(codecs, type, count, firstIndex, values, nat);
  // decode
  {
    Run run;
    run.name = name + " decode";
    run.slots = {{packed, packedBytes, packedShift}, {{}, valueBytes, valueShift}};
    run.host = [=](const std::vector<void*>& p) { host->decode(p[0], count, p[1]); };
    run.device = [=](const std::vector<void*>& p, void* s) { return device->decode(p[0], count, p[1], s); };
    runCompare(run, stream);
  }
  // decodeAccumulate
  {
    Run run;
    run.name = name + " decodeAccumulate";
    Bytes acc = values.elements(ElementType::F32, count);
    if (!nat) {  // exact: the decoded value may be NaN too
      Bytes decoded(f32Bytes);
      for (size_t i = 0; i < count; ++i) cc::storeFloatBits(ElementType::F32, decoded.data(), i, cc::loadFloatBits(type, packed.data(), i));
      separateNans(ElementType::F32, decoded, &acc);
    }
    run.slots = {{packed, packedBytes, packedShift}, {acc, f32Bytes, f32Shift}};
    run.host = [=](const std::vector<void*>& p) { host->decodeAccumulate(p[0], count, static_cast<float*>(p[1])); };
    run.device = [=](const std::vector<void*>& p, void* s) {
      return device->decodeAccumulate(p[0], count, static_cast<float*>(p[1]), s);
    };
    runCompare(run, stream);
  }
  // decodeAddEncode: divisor 1 and 4, with and without decodedOut, and in place.
  Bytes decodedIn(valueBytes);
  if (count != 0) host->decode(packed.data(), count, decodedIn.data());
  const Bytes local = hopLocal(type, count, decodedIn, values);
  for (uint32_t divisor : {1u, 4u}) {
    for (int variant = 0; variant < 3; ++variant) {  // 0: no decodedOut, 1: decodedOut, 2: in place
      Run run;
      run.name = name + " decodeAddEncode divisor=" + std::to_string(divisor) +
                 (variant == 0 ? "" : variant == 1 ? " decodedOut" : " in-place");
      run.slots = {{packed, packedBytes, packedShift},
                   {local, valueBytes, valueShift},
                   {{}, packedBytes, packedShift},
                   {{}, valueBytes, valueShift}};
      run.host = [=](const std::vector<void*>& p) {
        host->decodeAddEncode(p[0], p[1], count, firstIndex, rs, divisor, p[2], variant == 0 ? nullptr : p[3]);
        if (variant == 2) {  // what the in-place device call leaves: out in p[0], decoded in p[1]
          std::memcpy(p[0], p[2], packedBytes);
          std::memcpy(p[1], p[3], valueBytes);
          std::memset(p[2], kPoison, packedBytes);
          std::memset(p[3], kPoison, valueBytes);
        }
      };
      run.device = [=](const std::vector<void*>& p, void* s) {
        if (variant == 2) return device->decodeAddEncode(p[0], p[1], count, firstIndex, rs, divisor, p[0], p[1], s);
        return device->decodeAddEncode(p[0], p[1], count, firstIndex, rs, divisor, p[2],
                                       variant == 0 ? nullptr : p[3], s);
      };
      runCompare(run, stream);
    }
  }
  // Error feedback: supported by nat and nat_det for every float type, by
  // exact for float32 only (exact writes float32 values).
  const bool residualSupported = nat || type == ElementType::F32;
  {
    Run run;
    run.name = name + " encodeWithResidual";
    const Bytes localValues = values.elements(type, count);
    run.slots = {{localValues, valueBytes, valueShift},
                 {residualFor(type, {&localValues}, count, values), f32Bytes, f32Shift},
                 {{}, packedBytes, packedShift}};
    run.host = [=](const std::vector<void*>& p) {
      cc::encodeWithResidual(residualCodecs, p[0], static_cast<float*>(p[1]), count, firstIndex, rs, p[2]);
    };
    run.device = [=](const std::vector<void*>& p, void* s) {
      return device->encodeWithResidual(p[0], static_cast<float*>(p[1]), count, firstIndex, rs, p[2], s);
    };
    run.expectDevice = residualSupported ? CC_SUCCESS : CC_UNSUPPORTED;
    runCompare(run, stream);
  }
  const Bytes residual = residualFor(type, {&local, &decodedIn}, count, values);
  for (uint32_t divisor : {1u, 4u}) {
    for (int variant = 0; variant < 2; ++variant) {
      Run run;
      run.name = name + " decodeAddEncodeWithResidual divisor=" + std::to_string(divisor) +
                 (variant == 0 ? "" : " decodedOut");
      run.slots = {{packed, packedBytes, packedShift},
                   {local, valueBytes, valueShift},
                   {residual, f32Bytes, f32Shift},
                   {{}, packedBytes, packedShift},
                   {{}, valueBytes, valueShift}};
      run.host = [=](const std::vector<void*>& p) {
        cc::decodeAddEncodeWithResidual(residualCodecs, p[0], p[1], static_cast<float*>(p[2]), count, firstIndex, rs,
                                        divisor, p[3], variant == 0 ? nullptr : p[4]);
      };
      run.device = [=](const std::vector<void*>& p, void* s) {
        return device->decodeAddEncodeWithResidual(p[0], p[1], static_cast<float*>(p[2]), count, firstIndex, rs,
                                                   divisor, p[3], variant == 0 ? nullptr : p[4], s);
      };
      run.expectDevice = residualSupported ? CC_SUCCESS : CC_UNSUPPORTED;
      runCompare(run, stream);
    }
  }
}

// ---------------------------------------------------------------------------
// The exact codec on every element type and op.

void testExact(ElementType type, cc_red_op_t op, size_t count, Values& values, cudaStream_t stream) {
  Codecs codecs;
  if (!makeCodecs("none", type, op, &codecs)) return;
  const size_t bytes = count * cc::elementBytes(type);
  const cc::Codec* host = codecs.host.get();
  const cc::DeviceCodec* device = codecs.device.get();
  const Bytes in = values.elements(type, count);
  Bytes local = values.elements(type, count);
  separateNans(type, in, &local);
  char label[120];
  std::snprintf(label, sizeof label, "exact %s op=%d count=%zu", typeName(type), static_cast<int>(op), count);
  for (uint32_t divisor : {1u, 4u}) {
    for (int variant = 0; variant < 2; ++variant) {
      Run run;
      run.name = std::string(label) + " decodeAddEncode divisor=" + std::to_string(divisor) +
                 (variant ? " decodedOut" : "");
      run.slots = {{in, bytes, 0}, {local, bytes, 0}, {{}, bytes, 0}, {{}, bytes, 0}};
      run.host = [=](const std::vector<void*>& p) {
        host->decodeAddEncode(p[0], p[1], count, 0, cc::RandomStream{0, 0}, divisor, p[2], variant ? p[3] : nullptr);
      };
      run.device = [=](const std::vector<void*>& p, void* s) {
        return device->decodeAddEncode(p[0], p[1], count, 0, cc::RandomStream{0, 0}, divisor, p[2],
                                       variant ? p[3] : nullptr, s);
      };
      runCompare(run, stream);
    }
  }
  if (op != CC_SUM) return;
  {
    Run run;
    run.name = std::string(label) + " encode+decode";
    run.slots = {{in, bytes, 0}, {{}, bytes, 0}, {{}, bytes, 0}};
    run.host = [=](const std::vector<void*>& p) {
      host->encode(p[0], count, 0, cc::RandomStream{0, 0}, p[1]);
      host->decode(p[1], count, p[2]);
    };
    run.device = [=](const std::vector<void*>& p, void* s) {
      const cc_result_t result = device->encode(p[0], count, 0, cc::RandomStream{0, 0}, p[1], s);
      return result != CC_SUCCESS ? result : device->decode(p[1], count, p[2], s);
    };
    runCompare(run, stream);
  }
  {
    Run run;
    run.name = std::string(label) + " decodeAccumulate";
    Bytes acc = values.elements(ElementType::F32, count);
    if (isFloatType(type)) {  // keep NaN pairs apart (the converted value keeps NaN-ness)
      for (size_t i = 0; i < count; ++i) {
        if (isNanAt(type, in, i)) cc::storeFloatBits(ElementType::F32, acc.data(), i, 0x3f800000u);
      }
    }
    run.slots = {{in, bytes, 0}, {acc, count * 4, 0}};
    run.host = [=](const std::vector<void*>& p) { host->decodeAccumulate(p[0], count, static_cast<float*>(p[1])); };
    run.device = [=](const std::vector<void*>& p, void* s) {
      return device->decodeAccumulate(p[0], count, static_cast<float*>(p[1]), s);
    };
    runCompare(run, stream);
  }
}

void testFactory() {
  ++gChecks;
  const cc::CodecSpec nat = cc::simpleCodecSpec("nat");
  auto exactForInt = cc::makeDeviceBlockCodec(nat, CC_INT32, CC_SUM);
  auto exactForMax = cc::makeDeviceBlockCodec(nat, CC_FLOAT32, CC_MAX);
  auto natDet = cc::makeDeviceBlockCodec(cc::simpleCodecSpec("nat_det"), CC_BFLOAT16, CC_AVG);
  if (!exactForInt || exactForInt->id() != cc::CodecId::None || !exactForMax ||
      exactForMax->id() != cc::CodecId::None || !natDet || natDet->id() != cc::CodecId::NatDet) {
    fail("makeDeviceBlockCodec picks a different codec than makeBlockCodec");
  }
  cc::clearLastError();
  if (cc::makeDeviceBlockCodec(nat, static_cast<cc_datatype_t>(42), CC_SUM) != nullptr ||
      cc::lastErrorMessage().find("CC_INVALID_ARGUMENT") == std::string::npos) {
    fail("makeDeviceBlockCodec accepts an invalid datatype (%s)", cc::lastErrorMessage().c_str());
  }
}

}  // namespace

int main() {
  if (!cctest::haveCudaDevice()) return cctest::kSkipExitCode;
  std::random_device entropy;
  const uint64_t seed = (static_cast<uint64_t>(entropy()) << 32) | entropy();
  std::printf("test_cuda_codecs: seed 0x%016llx, host nat path %s\n", static_cast<unsigned long long>(seed),
              cc::natImplementationName());
  Values values(seed);
  cudaStream_t stream = nullptr;
  if (!cudaOk(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate")) return 1;

  testFactory();
  const size_t counts[] = {0, 1, 31, 32, 33, 1000003};
  // A multiple of 32 whose group indices (index / 4) need the counter's high word.
  const uint64_t bigFirstIndex = (1ull << 36) + 32ull * 12345;
  for (const char* spec : {"nat", "nat_det", "none"}) {
    for (ElementType type : {ElementType::F32, ElementType::BF16, ElementType::F16}) {
      for (size_t count : counts) {
        testBlockCodec(spec, type, count, 32 * 7, false, values, stream);
        testBlockCodec(spec, type, count, bigFirstIndex, false, values, stream);
      }
      testBlockCodec(spec, type, 1000003, 64, true, values, stream);
      testBlockCodec(spec, type, 77, 5, true, values, stream);  // firstIndex off the 4-value groups
      testBlockCodec(spec, type, 4099, 37, false, values, stream);
    }
  }
  const ElementType allTypes[] = {ElementType::F32, ElementType::BF16, ElementType::F16, ElementType::F64,
                                  ElementType::I8,  ElementType::U8,   ElementType::I32, ElementType::U32,
                                  ElementType::I64, ElementType::U64};
  for (ElementType type : allTypes) {
    for (cc_red_op_t op : {CC_SUM, CC_PROD, CC_MAX, CC_MIN, CC_AVG}) {
      for (size_t count : {size_t{0}, size_t{1}, size_t{33}, size_t{100003}}) testExact(type, op, count, values, stream);
    }
  }
  cudaStreamDestroy(stream);
  if (gFailures != 0) {
    std::printf("test_cuda_codecs: %d of %d checks FAILED (seed 0x%016llx)\n", gFailures, gChecks,
                static_cast<unsigned long long>(seed));
    return 1;
  }
  std::printf("test_cuda_codecs: all %d checks passed: device codecs are bit-identical to the host codecs\n", gChecks);
  return 0;
}
