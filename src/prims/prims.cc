#include "prims/prims.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "codec/elements.h"

#include "base/error.h"

namespace cc {
uint32_t frameHeaderChecksum(const FrameHeader& header) {
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&header);
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < offsetof(FrameHeader, checksum); ++i) {
    hash = (hash ^ bytes[i]) * 16777619u;
  }
  return hash;
}

namespace {

unsigned char* payloadOf(void* slot) { return static_cast<unsigned char*>(slot) + kFrameHeaderBytes; }

}  // namespace

Prims::Prims(const CollectiveArgs& args)
    : args_(args), elementBytes_(elementBytes(elementTypeOf(args.datatype))) {
  if (args_.masterF32Codec == nullptr) {
    args_.masterF32Codec = args_.f32Codec;
    args_.masterSpecHash = args_.specHash;
  }
}

size_t valuesFitting(const Codec& codec, size_t payloadBytes) {
  const size_t alignment = codec.alignmentValues();
  size_t units = payloadBytes / codec.packedBytes(alignment);
  // Formats with a per-message prefix (dithering's norms) may need a unit less.
  while (units > 0 && codec.packedBytes(units * alignment) > payloadBytes) --units;
  return units * alignment;
}

size_t Prims::chunkValues(size_t slotBytes) const { return valuesFitting(*args_.codec, slotBytes - kFrameHeaderBytes); }

const unsigned char* Prims::local(size_t firstIndex) const {
  return static_cast<const unsigned char*>(args_.sendbuf) + firstIndex * elementBytes_;
}

unsigned char* Prims::output(size_t firstIndex) const {
  return static_cast<unsigned char*>(args_.recvbuf) + firstIndex * elementBytes_;
}

ResidualCodecs Prims::residualCodecs() const {
  return ResidualCodecs{args_.codec, args_.f32Codec, elementTypeOf(args_.datatype)};
}

RandomStream Prims::randomFor(uint32_t step) const {
  return RandomStream{args_.seed,
                      makeStreamId(args_.collectiveSeq, static_cast<uint32_t>(args_.rank), step)};
}

void Prims::writeHeader(void* slot, size_t firstIndex, size_t count, uint32_t step,
                        size_t payloadBytes, size_t streamBytes, Stage stage) const {
  FrameHeader header;
  std::memset(&header, 0, sizeof(header));
  header.magic = kFrameMagic;
  header.version = kFrameVersion;
  header.codec = static_cast<uint8_t>(codecOf(stage).id());
  header.datatype = static_cast<uint8_t>(args_.datatype);
  header.op = static_cast<uint8_t>(args_.op);
  header.senderRank = static_cast<uint32_t>(args_.rank);
  header.step = step;
  header.collectiveSeq = args_.collectiveSeq;
  header.totalCount = args_.count;
  header.firstIndex = firstIndex;
  header.count = static_cast<uint32_t>(count);
  header.payloadBytes = static_cast<uint32_t>(payloadBytes);
  header.streamBytes = streamBytes;
  header.specHash = hashOf(stage);
  header.checksum = frameHeaderChecksum(header);
  std::memcpy(slot, &header, sizeof(header));
}

cc_result_t Prims::checkHeader(const void* slot, size_t slotBytes, int fromRank, size_t firstIndex,
                               size_t count, uint32_t step, size_t expectedPayload,
                               size_t streamBytes, Stage stage) const {
  FrameHeader header;
  std::memcpy(&header, slot, sizeof(header));
  if (header.magic != kFrameMagic || header.version != kFrameVersion) {
    return setError(CC_REMOTE_ERROR,
                    "message from rank %d is not a libcompressedcoll frame (magic 0x%08x, version "
                    "%u; expected 0x%08x, %u)",
                    fromRank, header.magic, header.version, kFrameMagic, kFrameVersion);
  }
  if (header.checksum != frameHeaderChecksum(header)) {
    return setError(CC_REMOTE_ERROR, "frame header from rank %d is corrupted (checksum mismatch)",
                    fromRank);
  }
  if (header.senderRank != static_cast<uint32_t>(fromRank)) {
    return setError(CC_REMOTE_ERROR, "frame on the link from rank %d claims to come from rank %u",
                    fromRank, header.senderRank);
  }
  if (header.collectiveSeq != args_.collectiveSeq) {
    return setError(CC_REMOTE_ERROR,
                    "rank %d is in collective #%llu but this rank is in collective #%llu (ranks "
                    "called compressed_allreduce a different number of times?)",
                    fromRank, static_cast<unsigned long long>(header.collectiveSeq),
                    static_cast<unsigned long long>(args_.collectiveSeq));
  }
  if (header.totalCount != args_.count || header.datatype != args_.datatype ||
      header.op != args_.op || header.codec != static_cast<uint8_t>(codecOf(stage).id()) ||
      header.specHash != hashOf(stage)) {
    return setError(CC_REMOTE_ERROR,
                    "rank %d called compressed_allreduce with count %llu, datatype %u, op %u, "
                    "codec %s (spec hash 0x%08x) but this rank with count %zu, datatype %d, op %d, "
                    "codec %s (spec hash 0x%08x)",
                    fromRank, static_cast<unsigned long long>(header.totalCount), header.datatype,
                    header.op, codecName(static_cast<CodecId>(header.codec)), header.specHash,
                    args_.count, static_cast<int>(args_.datatype), static_cast<int>(args_.op),
                    codecName(codecOf(stage).id()), hashOf(stage));
  }
  if ((header.step == kAnnouncementStep) != (step == kAnnouncementStep)) {
    return announcementMismatch(header, slot, slotBytes, fromRank, step);
  }
  if (header.step != step || header.firstIndex != firstIndex || header.count != count ||
      header.payloadBytes != expectedPayload || header.streamBytes != streamBytes ||
      kFrameHeaderBytes + expectedPayload > slotBytes) {
    return setError(CC_REMOTE_ERROR,
                    "frame from rank %d carries step %u, range [%llu, +%u), %u payload bytes, stream "
                    "%llu bytes; expected step %u, range [%zu, +%zu), %zu bytes, stream %zu bytes",
                    fromRank, header.step, static_cast<unsigned long long>(header.firstIndex),
                    header.count, header.payloadBytes,
                    static_cast<unsigned long long>(header.streamBytes), step, firstIndex, count,
                    expectedPayload, streamBytes);
  }
  return CC_SUCCESS;
}

cc_result_t Prims::encodeSend(SendChannel& to, size_t firstIndex, size_t count, uint32_t step) {
  void* slot = nullptr;
  CC_CHECK(to.acquire(&slot));
  if (args_.residual != nullptr) {
    encodeWithResidual(residualCodecs(), local(firstIndex), args_.residual + firstIndex, count, firstIndex,
                       randomFor(step), payloadOf(slot));
  } else {
    args_.codec->encode(local(firstIndex), count, firstIndex, randomFor(step), payloadOf(slot));
  }
  const size_t payload = args_.codec->packedBytes(count);
  writeHeader(slot, firstIndex, count, step, payload);
  return to.post(kFrameHeaderBytes + payload);
}

cc_result_t Prims::fusedHop(RecvChannel& from, int fromRank, SendChannel& to, size_t firstIndex,
                            size_t count, uint32_t step, uint32_t divisor, void* decodedOut) {
  void* in = nullptr;
  CC_CHECK(receive(from, &in));
  const size_t payload = args_.codec->packedBytes(count);
  CC_CHECK(checkHeader(in, from.slotBytes(), fromRank, firstIndex, count, step - 1, payload));
  void* out = nullptr;
  CC_CHECK(to.acquire(&out));
  if (args_.residual != nullptr) {
    decodeAddEncodeWithResidual(residualCodecs(), payloadOf(in), local(firstIndex), args_.residual + firstIndex,
                                count, firstIndex, randomFor(step), divisor, payloadOf(out), decodedOut);
  } else if (decodedOut != nullptr && streamsOutput()) {
    // D(packed sum) goes out with streaming stores, from the packed bytes
    // still in cache: the same bytes the fused kernel would store.
    args_.codec->decodeAddEncode(payloadOf(in), local(firstIndex), count, firstIndex, randomFor(step), divisor,
                                 payloadOf(out), nullptr);
    decodeStreaming(*args_.codec, payloadOf(out), count, elementBytes_, 1, decodedOut);
  } else {
    args_.codec->decodeAddEncode(payloadOf(in), local(firstIndex), count, firstIndex, randomFor(step), divisor,
                                 payloadOf(out), decodedOut);
  }
  writeHeader(out, firstIndex, count, step, payload);
  CC_CHECK(from.release());
  return to.post(kFrameHeaderBytes + payload);
}

cc_result_t Prims::recvDecodeAddEncodeSend(RecvChannel& from, int fromRank, SendChannel& to,
                                           size_t firstIndex, size_t count, uint32_t step) {
  return fusedHop(from, fromRank, to, firstIndex, count, step, 1, nullptr);
}

cc_result_t Prims::recvDecodeAddEncodeSendDecode(RecvChannel& from, int fromRank, SendChannel& to,
                                                 size_t firstIndex, size_t count, uint32_t step) {
  const uint32_t divisor = args_.op == CC_AVG ? static_cast<uint32_t>(args_.nranks) : 1;
  if (!regions_) return fusedHop(from, fromRank, to, firstIndex, count, step, divisor, output(firstIndex));
  void* in = nullptr;
  CC_CHECK(receive(from, &in));
  const size_t payload = args_.codec->packedBytes(count);
  CC_CHECK(checkHeader(in, from.slotBytes(), fromRank, firstIndex, count, step - 1, payload));
  void* header = nullptr;
  CC_CHECK(to.acquire(&header));
  // Exact: the packed sum is the output's own bytes.
  args_.codec->decodeAddEncode(payloadOf(in), local(firstIndex), count, firstIndex, randomFor(step), divisor,
                               output(firstIndex), nullptr);
  writeHeader(header, firstIndex, count, step, payload);
  CC_CHECK(from.release());
  return to.postRegion(kFrameHeaderBytes, firstIndex * elementBytes_, payload);
}

bool Prims::mayUseRegions(size_t minBytes) const {
  return args_.regions && args_.codec->id() == CodecId::None && args_.residual == nullptr &&
         args_.codec->packedBytes(args_.count) == outputBytes() && outputBytes() >= minBytes;
}

cc_result_t Prims::recvForwardDecode(RecvChannel& from, int fromRank, SendChannel* to,
                                     size_t firstIndex, size_t count, uint32_t step) {
  if (regions_) {
    void* in = nullptr;
    CC_CHECK(receive(from, &in));
    const size_t payload = args_.codec->packedBytes(count);
    // The slot holds the header alone; the payload is in the output once
    // waitRegion returns.
    CC_CHECK(checkHeader(in, kFrameHeaderBytes + payload, fromRank, firstIndex, count, step - 1, payload));
    CC_CHECK(from.waitRegion());
    if (to != nullptr) {
      void* header = nullptr;
      CC_CHECK(to->acquire(&header));
      writeHeader(header, firstIndex, count, step, payload);
      CC_CHECK(to->postRegion(kFrameHeaderBytes, firstIndex * elementBytes_, payload));
    }
    return from.release();
  }
  SendChannel* const targets[1] = {to};
  return recvForwardDecode(from, fromRank, targets, to != nullptr ? 1 : 0, firstIndex, count, step - 1, step,
                           Stage::Worker);
}

size_t Prims::chunkValuesBothStages(size_t slotBytes) const {
  const size_t alignment = std::lcm(args_.codec->alignmentValues(), args_.masterF32Codec->alignmentValues());
  const size_t payload = slotBytes - kFrameHeaderBytes;
  auto fits = [&](size_t values) {
    return args_.codec->packedBytes(values) <= payload && args_.masterF32Codec->packedBytes(values) <= payload;
  };
  size_t units = payload / std::max(args_.codec->packedBytes(alignment), args_.masterF32Codec->packedBytes(alignment));
  while (units > 0 && !fits(units * alignment)) --units;
  return units * alignment;
}

void Prims::loadLocal(size_t firstIndex, size_t count, float* acc) const {
  const ElementType type = elementTypeOf(args_.datatype);
  if (type == ElementType::F32) {
    std::memcpy(acc, local(firstIndex), count * sizeof(float));
    return;
  }
  const unsigned char* values = local(firstIndex);
  for (size_t i = 0; i < count; ++i) acc[i] = loadFloat(type, values, i);
}

cc_result_t Prims::postToAll(SendChannel* const* to, int nto, void* first, size_t frameBytes) {
  // Copies are made before the first slot is posted: once posted, a slot of
  // the local transport belongs to its receiver.
  for (int k = 1; k < nto; ++k) {
    void* slot = nullptr;
    CC_CHECK(to[k]->acquire(&slot));
    std::memcpy(slot, first, frameBytes);
    CC_CHECK(to[k]->post(frameBytes));
  }
  return to[0]->post(frameBytes);
}

cc_result_t Prims::recvReduceEncodeSend(RecvChannel& from, int fromRank, uint32_t expectedStep,
                                        const float* baseF32, SendChannel* const* to, int nto,
                                        size_t firstIndex, size_t count, uint32_t step, bool final) {
  void* in = nullptr;
  CC_CHECK(receive(from, &in));
  const size_t payload = args_.codec->packedBytes(count);
  CC_CHECK(checkHeader(in, from.slotBytes(), fromRank, firstIndex, count, expectedStep, payload));
  void* out = nullptr;
  CC_CHECK(to[0]->acquire(&out));
  const uint32_t divisor = final && args_.op == CC_AVG ? static_cast<uint32_t>(args_.nranks) : 1;
  const ElementType type = elementTypeOf(args_.datatype);
  // A float32 base goes through the float32 codec (same packed format); its
  // decoded result lands in the output directly only for float32 users.
  const ResidualCodecs codecs = baseF32 ? ResidualCodecs{args_.f32Codec, args_.f32Codec, ElementType::F32}
                                        : residualCodecs();
  const void* base = baseF32 ? static_cast<const void*>(baseF32) : static_cast<const void*>(local(firstIndex));
  void* decodedOut = final && (baseF32 == nullptr || type == ElementType::F32) ? output(firstIndex) : nullptr;
  if (args_.residual != nullptr) {
    decodeAddEncodeWithResidual(codecs, payloadOf(in), base, args_.residual + firstIndex, count, firstIndex,
                                randomFor(step), divisor, payloadOf(out), decodedOut);
  } else {
    codecs.codec->decodeAddEncode(payloadOf(in), base, count, firstIndex, randomFor(step), divisor,
                                  payloadOf(out), decodedOut);
  }
  if (final && decodedOut == nullptr) args_.codec->decode(payloadOf(out), count, output(firstIndex));
  writeHeader(out, firstIndex, count, step, payload);
  CC_CHECK(from.release());
  return postToAll(to, nto, out, kFrameHeaderBytes + payload);
}

cc_result_t Prims::recvDecodeAccumulate(RecvChannel& from, int fromRank, uint32_t expectedStep, float* acc,
                                        size_t firstIndex, size_t count) {
  void* in = nullptr;
  CC_CHECK(receive(from, &in));
  const size_t payload = args_.codec->packedBytes(count);
  CC_CHECK(checkHeader(in, from.slotBytes(), fromRank, firstIndex, count, expectedStep, payload));
  args_.codec->decodeAccumulate(payloadOf(in), count, acc);
  return from.release();
}

cc_result_t Prims::encodeSumSendDecode(float* sum, size_t firstIndex, size_t count, uint32_t step,
                                       SendChannel* const* to, int nto, float* decodedScratch) {
  const float divisor = args_.op == CC_AVG ? static_cast<float>(args_.nranks) : 1.0f;
  float* residual = args_.residual ? args_.residual + firstIndex : nullptr;
  if (residual != nullptr || divisor != 1.0f) {
    for (size_t i = 0; i < count; ++i) sum[i] = (sum[i] + (residual ? residual[i] : 0.0f)) / divisor;
  }
  void* out = nullptr;
  CC_CHECK(to[0]->acquire(&out));
  const Codec& master = *args_.masterF32Codec;
  master.encode(sum, count, firstIndex, randomFor(step), payloadOf(out));
  const size_t payload = master.packedBytes(count);
  if (residual != nullptr) {
    master.decode(payloadOf(out), count, decodedScratch);
    for (size_t i = 0; i < count; ++i) residual[i] = divisor * (sum[i] - decodedScratch[i]);
  }
  decodeMaster(payloadOf(out), firstIndex, count);
  writeHeader(out, firstIndex, count, step, payload, 0, Stage::Master);
  return postToAll(to, nto, out, kFrameHeaderBytes + payload);
}

cc_result_t Prims::recvForwardDecode(RecvChannel& from, int fromRank, SendChannel* const* to, int nto,
                                     size_t firstIndex, size_t count, uint32_t expectedStep, uint32_t step,
                                     Stage stage) {
  void* in = nullptr;
  CC_CHECK(receive(from, &in));
  const Codec& codec = codecOf(stage);
  const size_t payload = codec.packedBytes(count);
  CC_CHECK(checkHeader(in, from.slotBytes(), fromRank, firstIndex, count, expectedStep, payload, 0, stage));
  if (nto > 0) {
    // The packed bytes go on as they came; only the header names this hop.
    writeHeader(in, firstIndex, count, step, payload, 0, stage);
    for (int k = 0; k < nto; ++k) CC_CHECK(to[k]->forward(from, in, kFrameHeaderBytes + payload));
  }
  if (stage == Stage::Master) {
    decodeMaster(payloadOf(in), firstIndex, count);
  } else {
    decodeToOutput(codec, payloadOf(in), firstIndex, count);
  }
  return from.release();
}

void Prims::decodeToOutput(const Codec& codec, const void* packed, size_t firstIndex, size_t count) {
  if (streamsOutput()) {
    decodeStreaming(codec, packed, count, elementBytes_, 1, output(firstIndex));
  } else {
    codec.decode(packed, count, output(firstIndex));
  }
}

void Prims::decodeMaster(const void* packed, size_t firstIndex, size_t count) {
  const ElementType type = elementTypeOf(args_.datatype);
  if (type == ElementType::F32) {
    decodeToOutput(*args_.masterF32Codec, packed, firstIndex, count);
    return;
  }
  args_.masterF32Codec->decode(packed, count, args_.masterScratch);
  unsigned char* out = output(firstIndex);
  for (size_t i = 0; i < count; ++i) storeFloat(type, out, i, args_.masterScratch[i]);
}

size_t Prims::fragmentBytes(size_t slotBytes) const { return slotBytes - kFrameHeaderBytes; }

cc_result_t Prims::sendFragment(SendChannel& to, const void* stream, size_t offset, size_t bytes,
                                size_t streamBytes, uint32_t step) {
  void* slot = nullptr;
  CC_CHECK(to.acquire(&slot));
  std::memcpy(payloadOf(slot), static_cast<const unsigned char*>(stream) + offset, bytes);
  writeHeader(slot, offset, bytes, step, bytes, streamBytes);
  return to.post(kFrameHeaderBytes + bytes);
}

cc_result_t Prims::recvForwardFragment(RecvChannel& from, int fromRank, SendChannel* to, void* stream,
                                       size_t offset, size_t bytes, size_t streamBytes, uint32_t step) {
  void* in = nullptr;
  CC_CHECK(receive(from, &in));
  CC_CHECK(checkHeader(in, from.slotBytes(), fromRank, offset, bytes, step - 1, bytes, streamBytes));
  std::memcpy(static_cast<unsigned char*>(stream) + offset, payloadOf(in), bytes);
  if (to != nullptr) {
    writeHeader(in, offset, bytes, step, bytes, streamBytes);
    CC_CHECK(to->forward(from, in, kFrameHeaderBytes + bytes));
  }
  return from.release();
}

namespace {

constexpr size_t kAnnouncementNameBytes = 16;

// The algorithm named in an announcement's payload, or "?" when it does not fit.
std::string announcedName(const FrameHeader& header, const void* slot, size_t slotBytes) {
  if (header.payloadBytes != kAnnouncementNameBytes || kFrameHeaderBytes + kAnnouncementNameBytes > slotBytes) {
    return "?";
  }
  const char* name = reinterpret_cast<const char*>(payloadOf(const_cast<void*>(slot)));
  return std::string(name, strnlen(name, kAnnouncementNameBytes));
}

}  // namespace

cc_result_t Prims::announce(SendChannel& to, const char* algorithm) {
  algorithm_ = algorithm;
  void* slot = nullptr;
  CC_CHECK(to.acquire(&slot));
  std::memset(payloadOf(slot), 0, kAnnouncementNameBytes);
  std::memcpy(payloadOf(slot), algorithm, strnlen(algorithm, kAnnouncementNameBytes - 1));
  writeHeader(slot, 0, 0, kAnnouncementStep, kAnnouncementNameBytes);
  return to.post(kFrameHeaderBytes + kAnnouncementNameBytes);
}

void Prims::expectAnnouncement(RecvChannel& from, int fromRank, const char* algorithm, SendChannel* announceTo) {
  algorithm_ = algorithm;
  announcementFrom_ = &from;
  announcementRank_ = fromRank;
  announceTo_ = announceTo;
}

cc_result_t Prims::settleAnnouncement() {
  if (announceTo_ != nullptr) {
    SendChannel& to = *announceTo_;
    announceTo_ = nullptr;
    CC_CHECK(announce(to, algorithm_));
  }
  if (announcementFrom_ == nullptr) return CC_SUCCESS;
  RecvChannel& from = *announcementFrom_;
  announcementFrom_ = nullptr;
  void* in = nullptr;
  CC_CHECK(from.wait(&in));
  CC_CHECK(checkHeader(in, from.slotBytes(), announcementRank_, 0, 0, kAnnouncementStep, kAnnouncementNameBytes));
  FrameHeader header;
  std::memcpy(&header, in, sizeof(header));
  const std::string theirs = announcedName(header, in, from.slotBytes());
  if (theirs != algorithm_) {
    return setError(CC_REMOTE_ERROR,
                    "rank %d runs %s for collective #%llu but this rank runs %s: auto chose differently for the "
                    "same call (count %zu, codec spec hash 0x%08x)",
                    announcementRank_, theirs.c_str(), static_cast<unsigned long long>(args_.collectiveSeq),
                    algorithm_, args_.count, args_.specHash);
  }
  return from.release();
}

cc_result_t Prims::receive(RecvChannel& from, void** slot) {
  CC_CHECK(settleAnnouncement());
  return from.wait(slot);
}

cc_result_t Prims::announcementMismatch(const FrameHeader& header, const void* slot, size_t slotBytes,
                                        int fromRank, uint32_t expectedStep) const {
  const unsigned long long seq = static_cast<unsigned long long>(args_.collectiveSeq);
  if (expectedStep == kAnnouncementStep) {
    return setError(CC_REMOTE_ERROR,
                    "rank %d sent a data frame (step %u) for collective #%llu where this rank, running %s, "
                    "expected its announcement of the algorithm",
                    fromRank, header.step, seq, algorithm_ ? algorithm_ : "?");
  }
  return setError(CC_REMOTE_ERROR,
                  "rank %d sent its announcement of %s for collective #%llu where this rank expected a data frame "
                  "of step %u",
                  fromRank, announcedName(header, slot, slotBytes).c_str(), seq, expectedStep);
}

void Prims::copyInputToOutput() {
  if (args_.sendbuf != args_.recvbuf) {
    std::memcpy(args_.recvbuf, args_.sendbuf, args_.count * elementBytes_);
  }
}

}  // namespace cc
