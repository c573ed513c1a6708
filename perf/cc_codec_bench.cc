// Single-thread throughput of the nat codec next to memcpy of the same
// float32 input, measured in the same run so the ratio says how close the
// codec gets to the memory system. Each operation runs over the whole
// buffer (larger than the caches by default) several times; the median
// repetition is reported.
//
// A second table does the same for every codec spec of a list (float32, the
// fastest implementation this CPU has): encode, the fused hop where the spec
// has a block codec, decode, and the bits per value on the wire.
//
//   cc_codec_bench [--count N] [--iters K] [--impl scalar|avx2|avx512|all]
//                  [--dtype f32|bf16|f16] [--cpu C | --no-pin]
//                  [--specs 'a;b;c' | --specs ''] [--no-nat-table]
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/randk.h"
#include "codec/spec.h"
#include "cuda/nat_math.h"
#include "perf/perf_text.h"

namespace {

struct Options {
  size_t count = size_t{16} << 20;
  int iters = 7;
  std::string impl = "all";
  std::string dtype = "f32";
  int cpu = -1;  // -1: the CPU the benchmark starts on
  bool pin = true;
  bool natTable = true;
  // Every codec: the block path (nat family, bucket-scope dithering, randk's
  // inner nat) and the whole-vector path (top-k, tensor-scope dithering).
  std::string specs =
      "none;nat;nat_det;dither_nat:s=8,bucket=512;dither_nat:s=8,scope=tensor;dither_nat:s=8,norm=nat;"
      "dither_std:s=3;qsgd:s=16;terngrad;randk:ratio=0.1+nat;topk:ratio=0.01;topk:ratio=0.01+nat";
};

void usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--count N] [--iters K] [--impl scalar|avx2|avx512|all] [--dtype f32|bf16|f16] "
               "[--cpu C | --no-pin] [--specs 'a;b;c' | --specs ''] [--no-nat-table]\n"
               "  --specs: codec specs (';'-separated) for the per-spec table; '' skips it\n"
               "  --no-nat-table: skip the nat table (scalar vs avx2, --dtype)\n",
               program);
}

bool parseOptions(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool hasValue = i + 1 < argc;
    if (arg == "--count" && hasValue) {
      options->count = std::strtoull(argv[++i], nullptr, 0);
    } else if (arg == "--iters" && hasValue) {
      options->iters = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--impl" && hasValue) {
      options->impl = argv[++i];
    } else if (arg == "--dtype" && hasValue) {
      options->dtype = argv[++i];
    } else if (arg == "--cpu" && hasValue) {
      options->cpu = std::atoi(argv[++i]);
    } else if (arg == "--no-pin") {
      options->pin = false;
    } else if (arg == "--specs" && hasValue) {
      options->specs = argv[++i];
    } else if (arg == "--no-nat-table") {
      options->natTable = false;
    } else {
      return false;
    }
  }
  const bool implOk = options->impl == "scalar" || options->impl == "avx2" || options->impl == "avx512" ||
                      options->impl == "all";
  const bool dtypeOk = options->dtype == "f32" || options->dtype == "bf16" || options->dtype == "f16";
  return implOk && dtypeOk && options->count > 0;
}

// Migrations between cores would show up as noise in the timings.
void pinToOneCpu(Options* options) {
  if (!options->pin) return;
  if (options->cpu < 0) options->cpu = sched_getcpu();
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(options->cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    std::fprintf(stderr, "warning: could not pin to CPU %d; running unpinned\n", options->cpu);
    options->pin = false;
  }
}

double medianSeconds(int iters, const std::function<void()>& body) {
  body();  // warm-up: page faults, caches, branch predictors
  std::vector<double> seconds;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    const auto stop = std::chrono::steady_clock::now();
    seconds.push_back(std::chrono::duration<double>(stop - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

struct Row {
  std::string op;
  std::string impl;
  double seconds;
  double trafficBytesPerValue;  // bytes the operation must move per value
};

cc_datatype_t datatypeOf(const std::string& name) {
  if (name == "bf16") return CC_BFLOAT16;
  if (name == "f16") return CC_FLOAT16;
  return CC_FLOAT32;
}

// The nat table: scalar and AVX2 side by side, in --dtype.
void natTable(const Options& options) {
  const size_t n = options.count;
  const cc_datatype_t dtype = datatypeOf(options.dtype);
  const size_t valueBytes = cc::elementBytes(cc::elementTypeOf(dtype));
  const auto codec = cc::makeCodec(cc::CodecId::Nat, dtype, CC_SUM);
  const size_t packedBytes = codec->packedBytes(n);
  const double packedPerValue = static_cast<double>(packedBytes) / static_cast<double>(n);

  // Gaussian gradients, in the benchmarked type; a float32 copy for memcpy.
  std::vector<float> input(n), memcpyOut(n);
  std::vector<uint8_t> local(n * valueBytes), decoded(n * valueBytes);
  std::vector<uint8_t> packedIn(packedBytes), packedOut(packedBytes);
  {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> gaussian(0.0f, 1e-3f);
    for (size_t i = 0; i < n; ++i) {
      input[i] = gaussian(rng);
      const uint32_t bits = cc::floatToBits(input[i]);
      if (valueBytes == 4) {
        std::memcpy(local.data() + 4 * i, &bits, 4);
      } else {
        const uint16_t narrow = dtype == CC_BFLOAT16 ? cc::floatBitsToBf16(bits) : cc::floatBitsToHalf(bits);
        std::memcpy(local.data() + 2 * i, &narrow, 2);
      }
    }
  }
  std::memset(memcpyOut.data(), 0, n * 4);
  std::memset(decoded.data(), 0, decoded.size());
  codec->encode(local.data(), n, 0, {7, 1}, packedIn.data());  // another rank's message
  std::memset(packedOut.data(), 0, packedBytes);

  std::vector<cc::CodecIsa> impls;
  for (cc::CodecIsa isa : {cc::CodecIsa::Scalar, cc::CodecIsa::Avx2, cc::CodecIsa::Avx512}) {
    if (options.impl != "all" && options.impl != cc::codecIsaName(isa)) continue;
    if (static_cast<int>(isa) <= static_cast<int>(cc::bestCodecIsa())) {
      impls.push_back(isa);
    } else {
      std::fprintf(stderr, "note: this CPU cannot run the %s path; skipping it\n", cc::codecIsaName(isa));
    }
  }

  std::vector<Row> rows;
  const double memcpySeconds =
      medianSeconds(options.iters, [&] { std::memcpy(memcpyOut.data(), input.data(), n * 4); });
  rows.push_back({"memcpy f32", "-", memcpySeconds, 8.0});

  const double localPerValue = static_cast<double>(valueBytes);
  uint64_t call = 0;
  for (cc::CodecIsa isa : impls) {
    cc::limitCodecIsa(isa);
    const std::string impl = cc::codecIsaName(isa);
    rows.push_back({"encode", impl,
                    medianSeconds(options.iters,
                                  [&] {
                                    codec->encode(local.data(), n, 0, {7, ++call}, packedOut.data());
                                  }),
                    localPerValue + packedPerValue});
    rows.push_back({"decode", impl,
                    medianSeconds(options.iters, [&] { codec->decode(packedIn.data(), n, decoded.data()); }),
                    packedPerValue + localPerValue});
    rows.push_back(
        {"hop (decodeAddEncode)", impl,
         medianSeconds(
             options.iters,
             [&] {
               codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, {7, ++call}, 1, packedOut.data(), nullptr);
             }),
         packedPerValue + localPerValue + packedPerValue});
    rows.push_back({"last hop (+ decodedOut, /4)", impl,
                    medianSeconds(options.iters,
                                  [&] {
                                    codec->decodeAddEncode(packedIn.data(), local.data(), n, 0, {7, ++call}, 4,
                                                           packedOut.data(), decoded.data());
                                  }),
                    packedPerValue + localPerValue + packedPerValue + localPerValue});
  }
  cc::forceScalarCodecs(false);

  // Keep the outputs observable so no pass can be optimised away.
  uint64_t checksum = 0;
  for (size_t i = 0; i < n; i += 4096) {
    checksum += cc::floatToBits(memcpyOut[i]) + packedOut[(i / 32) * 36] + decoded[i * valueBytes];
  }

  std::printf("cc_codec_bench: %zu %s values (%.1f MiB in, %.1f MiB packed), median of %d, %s\n", n,
              options.dtype.c_str(), n * 4.0 / (1 << 20) * valueBytes / 4, packedBytes / double(1 << 20), options.iters,
              options.pin ? ("pinned to CPU " + std::to_string(options.cpu)).c_str() : "unpinned");
  std::printf("input GB/s counts %zu B per value (memcpy: the same float32 values, 4 B/value);\n", valueBytes);
  std::printf("traffic GB/s counts every byte read and written: memcpy 4+4, encode %.0f+%.3f, decode %.3f+%.0f,\n",
              localPerValue, packedPerValue, packedPerValue, localPerValue);
  std::printf("hop %.3f packed in + %.0f local + %.3f packed out; last hop adds %.0f decoded out.\n\n", packedPerValue,
              localPerValue, packedPerValue, localPerValue);
  std::printf("%-28s %-7s %10s %10s %12s %14s %10s\n", "operation", "impl", "time ms", "Gvalue/s", "input GB/s",
              "traffic GB/s", "vs memcpy");
  for (const Row& row : rows) {
    const double valuesPerSecond = n / row.seconds;
    const double inputBytes = row.op == "memcpy f32" ? 4.0 : localPerValue;
    std::printf("%-28s %-7s %10.2f %10.3f %12.2f %14.2f %9.2fx\n", row.op.c_str(), row.impl.c_str(), row.seconds * 1e3,
                valuesPerSecond / 1e9, valuesPerSecond * inputBytes / 1e9,
                valuesPerSecond * row.trafficBytesPerValue / 1e9, memcpySeconds / row.seconds);
  }
  std::printf("\n(checksum %llu)\n", static_cast<unsigned long long>(checksum));
}

// ---------------------------------------------------------------------------
// The per-spec table: every codec on float32 values, the fastest
// implementation this CPU has, each operation over the whole buffer.

constexpr uint64_t kSeed = 7;

enum class SpecPath { Block, Vector, RandK };

const char* pathName(SpecPath path) {
  switch (path) {
    case SpecPath::Block: return "block";
    case SpecPath::Vector: return "vector";
    case SpecPath::RandK: return "randk";
  }
  return "?";
}

struct SpecRow {
  std::string text;
  SpecPath path = SpecPath::Block;
  double bitsPerValue = 0;
  double encode = 0, hop = 0, decode = 0;  // median seconds; hop 0: not applicable
  std::string error;
};

// runRandK's sender side on one rank: the library's shared-seed mask, the
// kept values gathered and scaled by 1/ratio.
size_t maskAndGather(const cc::CodecSpec& spec, const float* input, size_t n, uint64_t collectiveSeq,
                     uint64_t* kept, float* compact) {
  const float scale = static_cast<float>(1.0 / spec.ratio);
  const size_t keptCount = cc::randkKeptPositions(kSeed, collectiveSeq, spec.ratio, n, kept);
  for (size_t j = 0; j < keptCount; ++j) compact[j] = input[kept[j]] * scale;
  return keptCount;
}

SpecRow benchSpec(const Options& options, const std::string& text, const std::vector<float>& input,
                  uint64_t* checksum) {
  SpecRow row;
  row.text = text;
  cc::CodecSpec spec;
  if (cc::parseCodecSpec(text, &spec) != CC_SUCCESS) {
    row.error = cc::lastErrorMessage();
    return row;
  }
  const size_t n = input.size();
  const int iters = options.iters;
  uint64_t call = 1;
  if (spec.selector == cc::Selector::RandK) {
    row.path = SpecPath::RandK;
  } else if (spec.selector == cc::Selector::TopK || !spec.hopReencodable()) {
    row.path = SpecPath::Vector;
  }

  if (row.path == SpecPath::Block) {
    const auto codec = cc::makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
    if (!codec) {
      row.error = cc::lastErrorMessage();
      return row;
    }
    const size_t bytes = codec->packedBytes(n);
    std::vector<uint8_t> packedIn(bytes), packedOut(bytes, 0);
    std::vector<float> decoded(n, 0.0f);
    codec->encode(input.data(), n, 0, {kSeed, 1}, packedIn.data());  // another rank's message
    row.bitsPerValue = 8.0 * static_cast<double>(bytes) / static_cast<double>(n);
    row.encode = medianSeconds(iters, [&] { codec->encode(input.data(), n, 0, {kSeed, ++call}, packedOut.data()); });
    row.hop = medianSeconds(iters, [&] {
      codec->decodeAddEncode(packedIn.data(), input.data(), n, 0, {kSeed, ++call}, 1, packedOut.data(), nullptr);
    });
    row.decode = medianSeconds(iters, [&] { codec->decode(packedIn.data(), n, decoded.data()); });
    *checksum += packedOut[bytes / 2] + cc::floatToBits(decoded[n / 2]);
    return row;
  }

  if (row.path == SpecPath::Vector) {
    const auto codec = cc::makeVectorCodec(spec);
    if (!codec) {
      row.error = cc::lastErrorMessage();
      return row;
    }
    const size_t offsets[2] = {0, n};
    const cc::TensorLayout layout{n, offsets, 1};
    const size_t bytes = codec->encodedBytes(layout);
    std::vector<uint8_t> encodedIn(bytes), encodedOut(bytes, 0);
    std::vector<float> acc(n, 0.0f);
    codec->encode(input.data(), layout, {kSeed, 1}, encodedIn.data(), nullptr);
    row.bitsPerValue = 8.0 * static_cast<double>(bytes) / static_cast<double>(n);
    row.encode = medianSeconds(
        iters, [&] { codec->encode(input.data(), layout, {kSeed, ++call}, encodedOut.data(), nullptr); });
    cc_result_t status = CC_SUCCESS;
    row.decode = medianSeconds(iters, [&] {
      const cc_result_t result = codec->decodeAccumulate(encodedIn.data(), layout, acc.data());
      if (result != CC_SUCCESS) status = result;
    });
    if (status != CC_SUCCESS) row.error = "decodeAccumulate: " + cc::lastErrorMessage();
    *checksum += (bytes ? encodedOut[bytes / 2] : 0) + cc::floatToBits(acc[n / 2]);
    return row;
  }

  // randk: the inner block codec on the kept values, as runRandK drives it.
  const auto inner = cc::makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
  if (!inner) {
    row.error = cc::lastErrorMessage();
    return row;
  }
  std::vector<uint64_t> kept(n), keptIn(n);
  std::vector<float> compact(n), compactIn(n), compactDecoded(n), output(n);
  std::vector<uint8_t> packedIn(inner->packedBytes(n)), packedOut(inner->packedBytes(n), 0);
  // Another rank's message of collective 1, whose mask every rank shares.
  const size_t keptCount = maskAndGather(spec, input.data(), n, 1, keptIn.data(), compactIn.data());
  inner->encode(compactIn.data(), keptCount, 0, {kSeed, 1}, packedIn.data());
  row.bitsPerValue = 8.0 * static_cast<double>(inner->packedBytes(keptCount)) / static_cast<double>(n);
  // Encode: a fresh mask per collective, gather, inner encode.
  row.encode = medianSeconds(iters, [&] {
    ++call;
    const size_t k = maskAndGather(spec, input.data(), n, call, kept.data(), compact.data());
    inner->encode(compact.data(), k, 0, {kSeed, call}, packedOut.data());
  });
  // A ring hop works on the compact kept values only (the local side is this
  // rank's gathered vector of the same collective).
  row.hop = medianSeconds(iters, [&] {
    inner->decodeAddEncode(packedIn.data(), compactIn.data(), keptCount, 0, {kSeed, ++call}, 1, packedOut.data(),
                           nullptr);
  });
  // Decode: inner decode of the kept values, then the scatter into n outputs.
  row.decode = medianSeconds(iters, [&] {
    inner->decode(packedIn.data(), keptCount, compactDecoded.data());
    size_t j = 0;
    for (size_t i = 0; i < n; ++i) {
      const bool isKept = j < keptCount && keptIn[j] == i;
      output[i] = isKept ? compactDecoded[j] : 0.0f;
      if (isKept) ++j;
    }
  });
  *checksum += packedOut[0] + cc::floatToBits(output[keptIn[keptCount / 2]]);
  return row;
}

// Returns false when a spec failed.
bool specTable(const Options& options) {
  const std::vector<std::string> specs = ccperf::splitOn(options.specs, ';');
  if (specs.empty()) return true;
  const size_t n = options.count;
  cc::forceScalarCodecs(false);

  std::vector<float> input(n), memcpyOut(n, 0.0f);
  {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> gaussian(0.0f, 1e-3f);
    for (size_t i = 0; i < n; ++i) input[i] = gaussian(rng);
  }
  const double memcpySeconds =
      medianSeconds(options.iters, [&] { std::memcpy(memcpyOut.data(), input.data(), n * 4); });
  uint64_t checksum = cc::floatToBits(memcpyOut[n / 2]);
  std::vector<SpecRow> rows;
  for (const std::string& text : specs) rows.push_back(benchSpec(options, text, input, &checksum));

  std::printf("\ncc_codec_bench specs: %zu float32 values (%.1f MiB), median of %d, %s, codecs %s\n", n,
              n * 4.0 / (1 << 20), options.iters,
              options.pin ? ("pinned to CPU " + std::to_string(options.cpu)).c_str() : "unpinned",
              cc::natImplementationName());
  std::printf("Gval/s = values of the float32 vector per second; GB/s = 4 B per such value; x mcp = memcpy time /\n"
              "operation time (memcpy of the same %zu float32 values, this run); bits/v = 8 * wire bytes / values.\n\n",
              n);
  const char* header = "%-30s %-6s %7s | %8s %7s %7s %6s | %8s %7s %7s %6s | %8s %7s %7s %6s\n";
  std::printf(header, "", "", "", "encode", "", "", "", "hop", "", "", "", "decode", "", "", "");
  std::printf(header, "spec", "path", "bits/v", "ms", "Gval/s", "GB/s", "x mcp", "ms", "Gval/s", "GB/s", "x mcp", "ms",
              "Gval/s", "GB/s", "x mcp");
  auto cells = [&](double seconds) {
    if (seconds <= 0) {
      std::printf(" | %8s %7s %7s %6s", "-", "-", "-", "-");
      return;
    }
    const double rate = static_cast<double>(n) / seconds;
    std::printf(" | %8.2f %7.3f %7.2f %6.2f", seconds * 1e3, rate / 1e9, rate * 4 / 1e9, memcpySeconds / seconds);
  };
  std::printf("%-30s %-6s %7s", "memcpy f32", "-", "32.000");
  cells(memcpySeconds);
  cells(memcpySeconds);
  cells(memcpySeconds);
  std::printf("\n");
  bool ok = true;
  for (const SpecRow& row : rows) {
    if (!row.error.empty()) {
      std::printf("%-30s error: %s\n", row.text.c_str(), row.error.c_str());
      ok = false;
      continue;
    }
    std::printf("%-30s %-6s %7.3f", row.text.c_str(), pathName(row.path), row.bitsPerValue);
    cells(row.encode);
    cells(row.hop);
    cells(row.decode);
    std::printf("\n");
  }
  std::printf(
      "\npath block: the spec's block codec over the whole buffer (encode; hop = decodeAddEncode of another\n"
      "  rank's message and the local values, divisor 1, no decoded output; decode into float32).\n"
      "path vector: makeVectorCodec, one tensor of all values (encode; decode = decodeAccumulate into float32);\n"
      "  no hop: top-k and tensor-scope norms cannot be re-encoded hop by hop (they run on allgather).\n"
      "path randk: as runRandK does it: encode = shared-seed mask (one Philox word per value) + gather of the\n"
      "  kept values times 1/ratio + inner encode of them; hop = the inner decodeAddEncode of the kept values\n"
      "  (what a ring hop does); decode = inner decode + scatter into all values. Rates count all values\n"
      "  of the vector, kept or not; bits/v: the inner packed bytes of the kept values (no indices travel).\n");
  std::printf("\n(checksum %llu)\n", static_cast<unsigned long long>(checksum));
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parseOptions(argc, argv, &options)) {
    usage(argv[0]);
    return 2;
  }
  pinToOneCpu(&options);
  if (options.natTable) natTable(options);
  return specTable(options) ? 0 : 1;
}
