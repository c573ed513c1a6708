// Compressed primitives: the few calls every algorithm is written in. They
// hide the codec (encode / fused decode-add-encode / decode), the transport
// (slots in registered memory, credits) and the framing that lets a receiver
// check each message against what it expected.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/codec.h"
#include "codec/streaming_store.h"
#include "transports/transport.h"

namespace cc {

// Every message starts with this header; the payload follows at offset 64.
struct FrameHeader {
  uint32_t magic;
  uint8_t version;
  uint8_t codec;
  uint8_t datatype;
  uint8_t op;
  uint32_t senderRank;
  uint32_t step;
  uint64_t collectiveSeq;
  uint64_t totalCount;
  uint64_t firstIndex;
  uint32_t count;
  uint32_t payloadBytes;
  uint64_t streamBytes;  // byte-stream frames: the whole stream's length; 0 otherwise
  uint32_t specHash;     // the codec spec's hash: ranks must use the same spec
  uint32_t checksum;     // over the bytes above, so a torn or foreign header is caught
};
static_assert(sizeof(FrameHeader) == 64, "frame header is 64 bytes");
constexpr size_t kFrameHeaderBytes = sizeof(FrameHeader);
constexpr uint32_t kFrameMagic = 0x31464343u;  // "CCF1"
constexpr uint8_t kFrameVersion = 2;

// Channels hold this many slots (credits in flight), and a slot's payload
// is at least kMinChunkBytes (CC_CHUNK_BYTES' floor).
constexpr int kSlotsPerChannel = 4;
constexpr size_t kMinChunkBytes = 4096;

// The ring's slots on host memory are kRingSlotScale times CC_CHUNK_BYTES,
// unless CC_CHUNK_BYTES was given (then they are as asked). On links the CPU
// binds, messages of 2 MiB against 1 MiB took the exact ring from 0.75-0.90x
// of Gloo to 0.93-1.03x and the nat ring from 1.31-1.91x to 1.57-2.08x
// (docs/results.md). They stay kSlotsPerChannel: two slots of 2 MiB were as
// fast there, but on 4 x 1 Gbit/s their 256 KiB messages stalled between
// calls of other algorithms (ring calls of 256 KiB took up to 58 ms in auto's
// trials against 3.3 ms with four slots). Device transports keep
// CC_CHUNK_BYTES: unmeasured there.
constexpr size_t kRingSlotScale = 2;

// The channels of the ring: to (rank + 1) % n and from (rank - 1 + n) % n.
// Every communicator of more than one rank has them; the ring, allgather,
// auto's agreements and its link measurements run on them.
struct RingChannels {
  SendChannel* toNext;
  RecvChannel* fromPrev;
};
// FNV-1a over the header up to its checksum field.
uint32_t frameHeaderChecksum(const FrameHeader& header);

// One collective's view of the primitives.
struct CollectiveArgs {
  const void* sendbuf;
  void* recvbuf;
  size_t count;
  cc_datatype_t datatype;
  cc_red_op_t op;
  const Codec* codec;
  uint64_t seed;
  uint64_t collectiveSeq;
  int rank;
  int nranks;
  uint32_t specHash = 0;
  // Error feedback: when not null, every encode of this rank folds the
  // residual in and leaves what it lost there (indexed like sendbuf).
  float* residual = nullptr;
  const Codec* f32Codec = nullptr;  // the codec for float32 values (same packed format)
  // The master codec C_M of `direct`'s owners for float32 (the worker's
  // f32Codec when unset), and its spec's hash.
  const Codec* masterF32Codec = nullptr;
  uint32_t masterSpecHash = 0;
  // float32 values of one chunk: master-stage decodes into other types go
  // through it (the master stage packs float32 sums with masterF32Codec).
  float* masterScratch = nullptr;
  // The ring's message payload where auto chose one below a slot's (0: a
  // whole slot); every rank holds the same.
  size_t ringPayloadBytes = 0;
  // The transport's channels carry regions (TransportProperties::regions).
  bool regions = false;
};

// Which codec packed a frame: the worker codec C_W (every encode of ring and
// tree, the shards of direct) or the master codec C_M (direct's owner sums).
enum class Stage : uint8_t { Worker, Master };

// The most values, a multiple of the codec's alignment, whose packed form
// fits `payloadBytes`.
size_t valuesFitting(const Codec& codec, size_t payloadBytes);

// The verbs of the ring: Prims runs them on host memory, DevicePrims
// (cuda/device_prims.h) on device memory, enqueued on a CUDA stream.
class RingPrims {
 public:
  virtual ~RingPrims() = default;
  // Values per chunk such that a chunk's packed form fits a slot.
  virtual size_t chunkValues(size_t slotBytes) const = 0;
  // encode local chunk, send it
  virtual cc_result_t encodeSend(SendChannel& to, size_t firstIndex, size_t count, uint32_t step) = 0;
  // one reduce-scatter hop, fused: packed in + local -> packed out
  virtual cc_result_t recvDecodeAddEncodeSend(RecvChannel& from, int fromRank, SendChannel& to, size_t firstIndex,
                                              size_t count, uint32_t step) = 0;
  // the last hop: the full sum (divided for AVG) encoded once more, sent on,
  // and decoded by this rank from its own packed bytes so that every rank
  // ends with the same values
  virtual cc_result_t recvDecodeAddEncodeSendDecode(RecvChannel& from, int fromRank, SendChannel& to,
                                                    size_t firstIndex, size_t count, uint32_t step) = 0;
  // an allgather hop: forward the packed bytes unchanged (when `to` is not
  // null) and decode them into the output
  virtual cc_result_t recvForwardDecode(RecvChannel& from, int fromRank, SendChannel* to, size_t firstIndex,
                                        size_t count, uint32_t step) = 0;
};

class Prims : public RingPrims {
 public:
  // The Philox stream of this rank's encodes at `step`.
  RandomStream randomFor(uint32_t step) const;

  explicit Prims(const CollectiveArgs& args);
  const CollectiveArgs& args() const { return args_; }

  // The ring's verbs (RingPrims). Each call moves one chunk: `firstIndex` is
  // the chunk's global value index (a multiple of kBlockValues) and `count`
  // its length; `step` is the algorithm step, which keys the randomness and is
  // checked by the receiver.
  size_t chunkValues(size_t slotBytes) const override;
  cc_result_t encodeSend(SendChannel& to, size_t firstIndex, size_t count, uint32_t step) override;
  cc_result_t recvDecodeAddEncodeSend(RecvChannel& from, int fromRank, SendChannel& to,
                                      size_t firstIndex, size_t count, uint32_t step) override;
  cc_result_t recvDecodeAddEncodeSendDecode(RecvChannel& from, int fromRank, SendChannel& to,
                                            size_t firstIndex, size_t count, uint32_t step) override;
  cc_result_t recvForwardDecode(RecvChannel& from, int fromRank, SendChannel* to,
                                size_t firstIndex, size_t count, uint32_t step) override;

  // The same hop for trees and direct: expects a frame of `expectedStep`
  // from `fromRank`; the sum D(in) + base is encoded once (step `step`) and
  // the same packed bytes go to every channel of `to` (at least one). `base`
  // is this rank's values when `baseF32` is null, else baseF32 (float32: this
  // rank's values plus other inputs already decoded). When `final`, the sum
  // is divided for AVG and also decoded into the output.
  cc_result_t recvReduceEncodeSend(RecvChannel& from, int fromRank, uint32_t expectedStep, const float* baseF32,
                                   SendChannel* const* to, int nto, size_t firstIndex, size_t count,
                                   uint32_t step, bool final);
  // acc[0..count) += D(in) for a worker-codec frame of `expectedStep`.
  cc_result_t recvDecodeAccumulate(RecvChannel& from, int fromRank, uint32_t expectedStep, float* acc,
                                   size_t firstIndex, size_t count);
  // acc[0..count) <- this rank's values as float32 (without the residual).
  void loadLocal(size_t firstIndex, size_t count, float* acc) const;
  // direct's owner: sum (float32, this rank's values plus the decoded shards)
  // -> C_M((sum + residual) / divisor), sent to every channel of `to` and
  // decoded into the output; the residual keeps what C_M lost. `sum` is
  // overwritten; `decodedScratch` holds `count` floats.
  cc_result_t encodeSumSendDecode(float* sum, size_t firstIndex, size_t count, uint32_t step,
                                  SendChannel* const* to, int nto, float* decodedScratch);
  // Receives a packed result of `stage` at `expectedStep`, forwards it
  // unchanged (as step `step`) to every channel of `to` (may be none) and
  // decodes it into the output.
  cc_result_t recvForwardDecode(RecvChannel& from, int fromRank, SendChannel* const* to, int nto,
                                size_t firstIndex, size_t count, uint32_t expectedStep, uint32_t step,
                                Stage stage);
  // Values per chunk such that a chunk's packed form fits a slot for both
  // codecs (direct), at the common alignment.
  size_t chunkValuesBothStages(size_t slotBytes) const;

  // Byte streams (the allgather of whole-vector encodings): a stream of
  // `streamBytes` bytes travels in fragments of at most fragmentBytes(slot);
  // `offset` is the fragment's place in the stream.
  size_t fragmentBytes(size_t slotBytes) const;
  cc_result_t sendFragment(SendChannel& to, const void* stream, size_t offset, size_t bytes,
                           size_t streamBytes, uint32_t step);
  // Receives the fragment into stream + offset and forwards it unchanged
  // (when `to` is not null).
  cc_result_t recvForwardFragment(RecvChannel& from, int fromRank, SendChannel* to, void* stream,
                                  size_t offset, size_t bytes, size_t streamBytes, uint32_t step);

  // The output of a one-rank collective: the input, unchanged.
  void copyInputToOutput();

  // The exact ring through regions (transport.h): the owner's final sum is
  // written straight into the output and sent from there, and every
  // allgather hop receives into the output and forwards from it, so no
  // payload is copied out of a slot. A call may where the transport carries
  // regions, the codec is exact (its packed bytes are the values), no
  // residual is folded in and the output holds at least `minBytes`.
  bool mayUseRegions(size_t minBytes) const;
  size_t outputBytes() const { return args_.count * elementBytes_; }
  void useRegions(bool on) {
    regions_ = on;
    ranWithRegions_ = ranWithRegions_ || on;
  }
  bool ranWithRegions() const { return ranWithRegions_; }

  // auto picks an algorithm per call from the call's count and codec, so
  // ranks given different calls may pick algorithms whose channels never meet
  // and would wait for each other until the timeout. Under auto with
  // CC_CHECK_CALLS=1, every call therefore announces its algorithm to the
  // next rank (a frame of step kAnnouncementStep naming it, on a channel of
  // its own), and every rank checks its predecessor's before its first
  // receive: ranks that disagree
  // have two neighbours that disagree, and the call fails at once with
  // CC_REMOTE_ERROR.
  static constexpr uint32_t kAnnouncementStep = 0xfffffff0u;
  cc_result_t announce(SendChannel& to, const char* algorithm);
  // The announcement `from` must deliver before this rank's first receive.
  // With `announceTo`, this rank's own announcement goes out then too: after
  // the algorithm's first sends, so that it does not delay them, and before
  // any wait, so that a rank that disagrees always gets it.
  void expectAnnouncement(RecvChannel& from, int fromRank, const char* algorithm, SendChannel* announceTo = nullptr);
  // Sends and checks the announcements now if no receive did yet.
  cc_result_t settleAnnouncement();

 private:
  const unsigned char* local(size_t firstIndex) const;
  unsigned char* output(size_t firstIndex) const;
  ResidualCodecs residualCodecs() const;
  cc_result_t fusedHop(RecvChannel& from, int fromRank, SendChannel& to, size_t firstIndex,
                       size_t count, uint32_t step, uint32_t divisor, void* decodedOut);
  // The master stage packs and unpacks with the float32 codec: the owner's
  // sum is float32, and an exact master keeps float32 on the wire.
  const Codec& codecOf(Stage stage) const { return stage == Stage::Master ? *args_.masterF32Codec : *args_.codec; }
  void decodeMaster(const void* packed, size_t firstIndex, size_t count);
  // output[firstIndex, +count) <- D(packed), with streaming stores for a
  // call whose output is far larger than the caches (codec/streaming_store.h).
  void decodeToOutput(const Codec& codec, const void* packed, size_t firstIndex, size_t count);
  bool streamsOutput() const { return outputBytes() >= kStreamingStoreMinBytes; }
  uint32_t hashOf(Stage stage) const { return stage == Stage::Master ? args_.masterSpecHash : args_.specHash; }
  void writeHeader(void* slot, size_t firstIndex, size_t count, uint32_t step, size_t payloadBytes,
                   size_t streamBytes = 0, Stage stage = Stage::Worker) const;
  cc_result_t checkHeader(const void* slot, size_t slotBytes, int fromRank, size_t firstIndex,
                          size_t count, uint32_t step, size_t expectedPayload, size_t streamBytes = 0,
                          Stage stage = Stage::Worker) const;
  // Copies the frame in `first` into a fresh slot of each further channel and
  // posts them all.
  cc_result_t postToAll(SendChannel* const* to, int nto, void* first, size_t frameBytes);
  // Every receive of a frame: the pending announcement first, then `from`.
  cc_result_t receive(RecvChannel& from, void** slot);
  // What a frame that does not belong to this rank's algorithm says instead
  // of a step mismatch.
  cc_result_t announcementMismatch(const FrameHeader& header, const void* slot, size_t slotBytes, int fromRank,
                                   uint32_t expectedStep) const;

  CollectiveArgs args_;
  size_t elementBytes_;
  RecvChannel* announcementFrom_ = nullptr;  // pending until the first receive
  SendChannel* announceTo_ = nullptr;        // likewise
  int announcementRank_ = -1;
  const char* algorithm_ = nullptr;  // set when this rank announced itself
  bool regions_ = false;
  bool ranWithRegions_ = false;
};

}  // namespace cc
