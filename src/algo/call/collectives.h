// What the collectives of one communicator read and advance: the settings
// calls follow, the ring and each algorithm's channels, the codecs of each
// spec, buffers reused between calls, auto's state, and the sequence number
// that keys each collective's randomness. The communicator (comm/comm.h) is
// this plus its bootstrap and lifecycle: the algorithm layer works on this
// part and never sees the communicator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "algo/auto/auto_state.h"
#include "algo/registry.h"
#include "codec/codec.h"
#include "codec/spec.h"
#include "codec/spec_codecs.h"
#include "prims/prims.h"
#include "transports/transport.h"

namespace cc {

constexpr size_t kDefaultChunkBytes = 1u << 20;
constexpr int kDefaultAutoTrials = 2;
constexpr int kMaxAutoTrials = 64;

// The settings collectives follow (the communicator's own, comm/settings.h,
// add what only init reads). Every rank agrees on them at init.
constexpr int64_t kCompressWherePays = -1;

struct CallSettings {
  CodecSpec codec = simpleCodecSpec("nat");
  // direct's master codec C_M (CC_MASTER_CODEC); unset: the call's own spec.
  bool hasMasterCodec = false;
  CodecSpec masterCodec;
  AlgoId algo = AlgoId::Auto;
  size_t chunkBytes = kDefaultChunkBytes;  // wire bytes per message (one slot)
  bool chunkBytesGiven = false;            // CC_CHUNK_BYTES or config.chunk_bytes set it
  // CC_CHECK_CALLS=1: under auto every call names its algorithm to the next
  // rank, so ranks whose calls differ fail at once instead of at the timeout.
  bool checkCalls = false;
  // CC_AUTO_TRIALS: the fewest timed calls in each block of auto's trials
  // (auto/trials.h); 0: no trials, the cost model alone decides.
  int autoTrials = kDefaultAutoTrials;
  // CC_SWITCH_ADDR / cc_config_t.switch_addr: a cc_switchd's host:port
  // ("" = none; the switch algorithm then does not run).
  std::string switchAddress;
  // CC_COMPRESS_MIN_BYTES: under auto, calls of fewer bytes take the exact
  // path and larger ones are compressed; kCompressWherePays: auto's cost
  // model decides per call (algo/auto/compression.h).
  int64_t compressMinBytes = kCompressWherePays;
};

// Buffers reused from call to call (grown, never shrunk), so that calls in
// the steady state allocate nothing.
struct CallScratch {
  std::vector<size_t> counts;              // fused calls: each tensor's count
  std::vector<size_t> offsets;             // where each tensor starts
  std::vector<unsigned char> fusedValues;  // grouped calls, concatenated
  std::vector<float> fusedResidual;
  std::vector<float> compact;              // randk: the kept values
  std::vector<float> compactResidual;
  std::vector<uint64_t> kept;              // randk: their positions
  std::vector<float> vectorValues;         // allgather: p = x + e in float32
  std::vector<float> vectorSum;
  std::vector<unsigned char> encodings;    // allgather: every rank's encoding
  std::vector<float> chunkSums;            // rows with chunkScratch: a chunk's float32 sums
};

template <typename T>
T* grow(std::vector<T>& buffer, size_t size) {
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

// One run of an algorithm over a vector of `count` values of `datatype`.
struct AlgorithmRun {
  const void* input;
  void* output;
  size_t count;
  cc_datatype_t datatype;
  cc_red_op_t op;
  float* residual;
  TensorLayout layout;
};

// Auto's state is a base rather than a member so that the fields keep the
// names tests and the benchmark read (comm->costModel, comm->autoTrials).
struct CollectiveState : AutoState {
  int rank = 0;
  int nranks = 1;
  uint64_t seed = 0;
  uint64_t collectiveSeq = 0;  // collectives issued so far; identical on every rank
  CallSettings settings;
  // The transport first: members are destroyed in reverse order, so every
  // channel below is closed before the transport under it.
  std::unique_ptr<Transport> transport;
  std::unique_ptr<SendChannel> toNext;
  std::unique_ptr<RecvChannel> fromPrev;
  // auto's announcements under CC_CHECK_CALLS=1 (prims.h): every call's
  // algorithm, to the next rank
  std::unique_ptr<SendChannel> announceToNext;
  std::unique_ptr<RecvChannel> announceFromPrev;
  // Each row's own channels, by AlgoId (AlgorithmRow::openChannels).
  std::unique_ptr<AlgorithmChannels> algorithmChannels[kMaxAlgorithms];
  SpecCodecCache specs;
  CallScratch scratch;
  std::string lastAlgorithm;  // which algorithm the last collective ran (perf tool, tests)
  bool lastCallExact = false;  // whether auto sent the last call, compressible, on the exact path
  bool lastCallRegions = false;  // whether the last collective's allgather ran through regions (tests)

  RingChannels ring() const { return RingChannels{toNext.get(), fromPrev.get()}; }
  // The codecs of the spec `text` (null or "": the communicator's codec).
  cc_result_t specCodecs(const char* text, SpecCodecs** out) { return specs.find(text, settings.codec, out); }
};

}  // namespace cc
