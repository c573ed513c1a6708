// Single-thread throughput of every codec next to memcpy of the same float32
// input, measured in the same run so the ratio says how close a codec gets to
// the memory system. One table, a row per operation, codec and
// implementation: nat (encode, decode, the fused hop and the ring's last hop,
// in --dtype) and then every spec of --specs on float32 (encode, the fused
// hop where a ring can re-encode it, decode), each at every instruction-set
// path its codec has. Each operation runs over the whole buffer (larger than
// the caches by default) several times; the median repetition is reported.
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
  bool natRows = true;
  // Every codec besides nat's own rows: the block path (nat_det, bucket-scope
  // dithering, randk's inner nat) and the whole-vector path (top-k,
  // tensor-scope dithering).
  std::string specs =
      "none;nat_det;dither_nat:s=8,bucket=512;dither_nat:s=8,scope=tensor;dither_nat:s=8,norm=nat;"
      "dither_std:s=3;qsgd:s=16;terngrad;randk:ratio=0.1+nat;topk:ratio=0.01;topk:ratio=0.01+nat";
};

void usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--count N] [--iters K] [--impl scalar|avx2|avx512|all] [--dtype f32|bf16|f16] "
               "[--cpu C | --no-pin] [--specs 'a;b;c' | --specs ''] [--no-nat-table]\n"
               "  --specs: codec specs (';'-separated) measured on float32 after nat; '' leaves them out\n"
               "  --no-nat-table: leave out nat's own rows (every implementation, in --dtype)\n",
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
      options->natRows = false;
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

// One row of the table: an operation of one codec on one implementation.
struct Row {
  std::string op;
  std::string codec;
  std::string impl;
  double seconds;
  double inputBytesPerValue;    // bytes of the input vector per value
  double trafficBytesPerValue;  // bytes the operation must move per value
};

struct Table {
  size_t values = 0;
  double memcpySeconds = 0;
  std::vector<Row> rows;
  std::vector<std::string> notes;  // bits per value, errors
  uint64_t checksum = 0;
  bool ok = true;
};

cc_datatype_t datatypeOf(const std::string& name) {
  if (name == "bf16") return CC_BFLOAT16;
  if (name == "f16") return CC_FLOAT16;
  return CC_FLOAT32;
}

// The implementations --impl asks for, up to `widest` and to what this CPU runs.
std::vector<cc::CodecIsa> implementationsUpTo(const Options& options, cc::CodecIsa widest) {
  std::vector<cc::CodecIsa> impls;
  for (cc::CodecIsa isa : {cc::CodecIsa::Scalar, cc::CodecIsa::Avx2, cc::CodecIsa::Avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(widest)) break;
    if (options.impl != "all" && options.impl != cc::codecIsaName(isa)) continue;
    if (static_cast<int>(isa) <= static_cast<int>(cc::bestCodecIsa())) impls.push_back(isa);
  }
  return impls;
}

// The widest instruction set a spec's per-value work has a path for: nat's
// dispatch (codec.cc) goes to AVX-512, nat_det's and dithering's (nat_det.cc,
// dither.cc) to AVX2. A row per implementation the codec does not have would
// repeat a narrower path under a wider name.
cc::CodecIsa widestPathOf(const cc::CodecSpec& spec) {
  switch (spec.quantizer) {
    case cc::Quantizer::Nat: return cc::CodecIsa::Avx512;
    case cc::Quantizer::NatDet:
    case cc::Quantizer::DitherNat:
    case cc::Quantizer::DitherStd: return cc::CodecIsa::Avx2;
    case cc::Quantizer::Exact: return cc::CodecIsa::Scalar;
  }
  return cc::CodecIsa::Scalar;
}

std::string bitsPerValueNote(const std::string& codec, double bits, const char* how) {
  char text[64];
  std::snprintf(text, sizeof text, ": %.3f bits/value", bits);
  return codec + text + how;
}

// nat in --dtype: encode, decode, the fused hop and the ring's last hop.
void addNatRows(const Options& options, Table* table) {
  const size_t n = options.count;
  const cc_datatype_t dtype = datatypeOf(options.dtype);
  const size_t valueBytes = cc::elementBytes(cc::elementTypeOf(dtype));
  const auto codec = cc::makeCodec(cc::CodecId::Nat, dtype, CC_SUM);
  const size_t packedBytes = codec->packedBytes(n);
  const double packed = static_cast<double>(packedBytes) / static_cast<double>(n);
  const double local = static_cast<double>(valueBytes);

  // Gaussian gradients in the benchmarked type.
  std::vector<uint8_t> values(n * valueBytes), decoded(n * valueBytes, 0);
  std::vector<uint8_t> packedIn(packedBytes), packedOut(packedBytes, 0);
  {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> gaussian(0.0f, 1e-3f);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t bits = cc::floatToBits(gaussian(rng));
      if (valueBytes == 4) {
        std::memcpy(values.data() + 4 * i, &bits, 4);
      } else {
        const uint16_t narrow = dtype == CC_BFLOAT16 ? cc::floatBitsToBf16(bits) : cc::floatBitsToHalf(bits);
        std::memcpy(values.data() + 2 * i, &narrow, 2);
      }
    }
  }
  codec->encode(values.data(), n, 0, {7, 1}, packedIn.data());  // another rank's message

  const std::string name = options.dtype == "f32" ? "nat" : "nat (" + options.dtype + ")";
  uint64_t call = 1;
  for (cc::CodecIsa isa : implementationsUpTo(options, cc::CodecIsa::Avx512)) {
    cc::limitCodecIsa(isa);
    const std::string impl = cc::codecIsaName(isa);
    auto add = [&](const char* op, double traffic, const std::function<void()>& body) {
      table->rows.push_back({op, name, impl, medianSeconds(options.iters, body), local, traffic});
    };
    add("encode", local + packed, [&] { codec->encode(values.data(), n, 0, {7, ++call}, packedOut.data()); });
    add("decode", packed + local, [&] { codec->decode(packedIn.data(), n, decoded.data()); });
    add("hop (decodeAddEncode)", packed + local + packed, [&] {
      codec->decodeAddEncode(packedIn.data(), values.data(), n, 0, {7, ++call}, 1, packedOut.data(), nullptr);
    });
    add("last hop (+ decodedOut, /4)", packed + local + packed + local, [&] {
      codec->decodeAddEncode(packedIn.data(), values.data(), n, 0, {7, ++call}, 4, packedOut.data(), decoded.data());
    });
  }
  cc::forceScalarCodecs(false);
  table->notes.push_back(bitsPerValueNote(name, 8.0 * packed, ""));
  // Keep the outputs observable so no pass can be optimised away.
  for (size_t i = 0; i < n; i += 4096) table->checksum += packedOut[(i / 32) * 36] + decoded[i * valueBytes];
}

constexpr uint64_t kSeed = 7;

// runRandK's sender side on one rank: the library's shared-seed mask, the
// kept values gathered and scaled by 1/ratio.
size_t maskAndGather(const cc::CodecSpec& spec, const float* input, size_t n, uint64_t collectiveSeq,
                     uint64_t* kept, float* compact) {
  const float scale = static_cast<float>(1.0 / spec.ratio);
  const size_t keptCount = cc::randkKeptPositions(kSeed, collectiveSeq, spec.ratio, n, kept);
  for (size_t j = 0; j < keptCount; ++j) compact[j] = input[kept[j]] * scale;
  return keptCount;
}

// One spec on float32 values, at every implementation its codec has:
// encode, the fused hop where a ring can re-encode it, decode.
void addSpecRows(const Options& options, const std::string& text, const std::vector<float>& input, Table* table) {
  cc::CodecSpec spec;
  if (cc::parseCodecSpec(text, &spec) != CC_SUCCESS) {
    table->notes.push_back(text + ": error: " + cc::lastErrorMessage());
    table->ok = false;
    return;
  }
  const size_t n = input.size();
  const int iters = options.iters;
  uint64_t call = 1;
  auto fail = [&](const std::string& what) {
    table->notes.push_back(text + ": error: " + what);
    table->ok = false;
  };
  auto bitsNote = [&](const std::string& name, double bytes, const char* how) {
    table->notes.push_back(bitsPerValueNote(name, 8.0 * bytes / static_cast<double>(n), how));
  };

  if (spec.selector == cc::Selector::RandK) {
    // The inner block codec on the kept values, as runRandK drives it.
    const auto inner = cc::makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
    if (!inner) return fail(cc::lastErrorMessage());
    std::vector<uint64_t> kept(n), keptIn(n);
    std::vector<float> compact(n), compactIn(n), compactDecoded(n), output(n);
    std::vector<uint8_t> packedIn(inner->packedBytes(n)), packedOut(inner->packedBytes(n), 0);
    // Another rank's message of collective 1, whose mask every rank shares.
    const size_t keptCount = maskAndGather(spec, input.data(), n, 1, keptIn.data(), compactIn.data());
    inner->encode(compactIn.data(), keptCount, 0, {kSeed, 1}, packedIn.data());
    const double packed = static_cast<double>(inner->packedBytes(keptCount)) / static_cast<double>(n);
    const std::string name = text + " (randk)";
    bitsNote(name, static_cast<double>(inner->packedBytes(keptCount)), ", the kept values' codes (no indices travel)");
    for (cc::CodecIsa isa : implementationsUpTo(options, widestPathOf(spec))) {
      cc::limitCodecIsa(isa);
      const std::string impl = cc::codecIsaName(isa);
      // Encode: a fresh mask per collective, gather, inner encode.
      table->rows.push_back({"encode", name, impl, medianSeconds(iters, [&] {
                               ++call;
                               const size_t k = maskAndGather(spec, input.data(), n, call, kept.data(), compact.data());
                               inner->encode(compact.data(), k, 0, {kSeed, call}, packedOut.data());
                             }),
                             4, 4 + packed});
      // A ring hop works on the compact kept values only.
      table->rows.push_back({"hop (decodeAddEncode)", name, impl, medianSeconds(iters, [&] {
                               inner->decodeAddEncode(packedIn.data(), compactIn.data(), keptCount, 0,
                                                      {kSeed, ++call}, 1, packedOut.data(), nullptr);
                             }),
                             4, packed + 4 * spec.ratio + packed});
      // Decode: inner decode of the kept values, then the scatter into n outputs.
      table->rows.push_back({"decode", name, impl, medianSeconds(iters, [&] {
                               inner->decode(packedIn.data(), keptCount, compactDecoded.data());
                               size_t j = 0;
                               for (size_t i = 0; i < n; ++i) {
                                 const bool isKept = j < keptCount && keptIn[j] == i;
                                 output[i] = isKept ? compactDecoded[j] : 0.0f;
                                 if (isKept) ++j;
                               }
                             }),
                             4, packed + 4});
    }
    cc::forceScalarCodecs(false);
    table->checksum += packedOut[0] + cc::floatToBits(output[keptIn[keptCount / 2]]);
    return;
  }

  if (spec.selector == cc::Selector::TopK || !spec.hopReencodable()) {
    const auto codec = cc::makeVectorCodec(spec);
    if (!codec) return fail(cc::lastErrorMessage());
    const size_t offsets[2] = {0, n};
    const cc::TensorLayout layout{n, offsets, 1};
    const size_t bytes = codec->encodedBytes(layout);
    std::vector<uint8_t> encodedIn(bytes), encodedOut(bytes, 0);
    std::vector<float> acc(n, 0.0f);
    codec->encode(input.data(), layout, {kSeed, 1}, encodedIn.data(), nullptr);
    const double packed = static_cast<double>(bytes) / static_cast<double>(n);
    const std::string name = text + " (vector)";
    bitsNote(name, static_cast<double>(bytes), "");
    // Top-k's decode touches only the kept values of the sum.
    const double touched = spec.selector != cc::Selector::TopK ? 1.0
                           : spec.topK != 0 ? std::min(1.0, static_cast<double>(spec.topK) / static_cast<double>(n))
                                            : spec.ratio;
    for (cc::CodecIsa isa : implementationsUpTo(options, widestPathOf(spec))) {
      cc::limitCodecIsa(isa);
      const std::string impl = cc::codecIsaName(isa);
      table->rows.push_back({"encode", name, impl, medianSeconds(iters, [&] {
                               codec->encode(input.data(), layout, {kSeed, ++call}, encodedOut.data(), nullptr);
                             }),
                             4, 4 + packed});
      cc_result_t status = CC_SUCCESS;
      table->rows.push_back({"decode (accumulate)", name, impl, medianSeconds(iters, [&] {
                               const cc_result_t result = codec->decodeAccumulate(encodedIn.data(), layout, acc.data());
                               if (result != CC_SUCCESS) status = result;
                             }),
                             4, packed + 8 * touched});
      if (status != CC_SUCCESS) fail("decodeAccumulate: " + cc::lastErrorMessage());
    }
    cc::forceScalarCodecs(false);
    table->checksum += (bytes ? encodedOut[bytes / 2] : 0) + cc::floatToBits(acc[n / 2]);
    return;
  }

  const auto codec = cc::makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
  if (!codec) return fail(cc::lastErrorMessage());
  const size_t bytes = codec->packedBytes(n);
  std::vector<uint8_t> packedIn(bytes), packedOut(bytes, 0);
  std::vector<float> decoded(n, 0.0f);
  codec->encode(input.data(), n, 0, {kSeed, 1}, packedIn.data());  // another rank's message
  const double packed = static_cast<double>(bytes) / static_cast<double>(n);
  bitsNote(text, static_cast<double>(bytes), "");
  for (cc::CodecIsa isa : implementationsUpTo(options, widestPathOf(spec))) {
    cc::limitCodecIsa(isa);
    const std::string impl = cc::codecIsaName(isa);
    table->rows.push_back({"encode", text, impl, medianSeconds(iters, [&] {
                             codec->encode(input.data(), n, 0, {kSeed, ++call}, packedOut.data());
                           }),
                           4, 4 + packed});
    table->rows.push_back({"decode", text, impl,
                           medianSeconds(iters, [&] { codec->decode(packedIn.data(), n, decoded.data()); }), 4,
                           packed + 4});
    table->rows.push_back({"hop (decodeAddEncode)", text, impl, medianSeconds(iters, [&] {
                             codec->decodeAddEncode(packedIn.data(), input.data(), n, 0, {kSeed, ++call}, 1,
                                                    packedOut.data(), nullptr);
                           }),
                           4, packed + 4 + packed});
  }
  cc::forceScalarCodecs(false);
  table->checksum += packedOut[bytes / 2] + cc::floatToBits(decoded[n / 2]);
}

void printTable(const Options& options, const Table& table) {
  const size_t n = table.values;
  std::printf("cc_codec_bench: %zu values (%.1f MiB of float32), median of %d, %s%s\n", n, n * 4.0 / (1 << 20),
              options.iters, options.pin ? ("pinned to CPU " + std::to_string(options.cpu)).c_str() : "unpinned",
              options.dtype == "f32" ? "" : ("; nat's rows in " + options.dtype).c_str());
  std::printf("impl: the codec's path under that instruction-set cap (CC_CODEC_ISA); a codec has rows only for\n"
              "the paths it has. input GB/s counts the input type's bytes per value; traffic GB/s counts every\n"
              "byte read and written: memcpy 4+4; encode input + packed; decode packed + output; hop packed in +\n"
              "local + packed out; last hop adds the decoded output; decode (accumulate) reads and writes the\n"
              "float32 sum. vs memcpy = memcpy time / operation time, the same float32 values in this run.\n\n");
  std::printf("%-28s %-38s %-7s %10s %10s %12s %14s %10s\n", "operation", "codec", "impl", "time ms", "Gvalue/s",
              "input GB/s", "traffic GB/s", "vs memcpy");
  std::vector<Row> rows = table.rows;
  rows.insert(rows.begin(), Row{"memcpy f32", "-", "-", table.memcpySeconds, 4.0, 8.0});
  for (const Row& row : rows) {
    const double valuesPerSecond = static_cast<double>(n) / row.seconds;
    std::printf("%-28s %-38s %-7s %10.2f %10.3f %12.2f %14.2f %9.2fx\n", row.op.c_str(), row.codec.c_str(),
                row.impl.c_str(), row.seconds * 1e3, valuesPerSecond / 1e9, valuesPerSecond * row.inputBytesPerValue / 1e9,
                valuesPerSecond * row.trafficBytesPerValue / 1e9, table.memcpySeconds / row.seconds);
  }
  std::printf("\n");
  for (const std::string& note : table.notes) std::printf("%s\n", note.c_str());
  std::printf(
      "\nA codec without a suffix runs its block codec over the whole buffer (hop = decodeAddEncode of another\n"
      "  rank's message and the local values, divisor 1, no decoded output; decode into float32).\n"
      "(vector): makeVectorCodec, one tensor of all values; no hop: top-k and tensor-scope norms cannot be\n"
      "  re-encoded hop by hop (they run on allgather). Top-k's selection is scalar in every row.\n"
      "(randk): as runRandK does it: encode = shared-seed mask (four values per Philox call) + gather of the\n"
      "  kept values times 1/ratio + inner encode of them; hop = the inner decodeAddEncode of the kept values\n"
      "  (what a ring hop does); decode = inner decode + scatter into all values. Rates count all values\n"
      "  of the vector, kept or not.\n");
  std::printf("\n(checksum %llu)\n", static_cast<unsigned long long>(table.checksum));
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parseOptions(argc, argv, &options)) {
    usage(argv[0]);
    return 2;
  }
  pinToOneCpu(&options);
  for (cc::CodecIsa isa : {cc::CodecIsa::Avx2, cc::CodecIsa::Avx512}) {
    if (options.impl == cc::codecIsaName(isa) && static_cast<int>(isa) > static_cast<int>(cc::bestCodecIsa())) {
      std::fprintf(stderr, "note: this CPU cannot run the %s path; it has no rows\n", cc::codecIsaName(isa));
    }
  }
  Table table;
  table.values = options.count;
  std::vector<float> input(options.count), memcpyOut(options.count, 0.0f);
  {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> gaussian(0.0f, 1e-3f);
    for (float& value : input) value = gaussian(rng);
  }
  table.memcpySeconds =
      medianSeconds(options.iters, [&] { std::memcpy(memcpyOut.data(), input.data(), options.count * 4); });
  table.checksum = cc::floatToBits(memcpyOut[options.count / 2]);
  if (options.natRows) addNatRows(options, &table);
  for (const std::string& text : ccperf::splitOn(options.specs, ';')) addSpecRows(options, text, input, &table);
  printTable(options, table);
  return table.ok ? 0 : 1;
}
