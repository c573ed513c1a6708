// A communicator's settings: the caller's cc_config_t, its unset fields filled
// from the environment, then from the defaults.
#pragma once

#include <cstdint>
#include <string>

#include "algo/algo.h"
#include "base/error.h"
#include "base/log.h"
#include "codec/codec.h"
#include "codec/spec.h"

namespace cc {

enum class TransportKind : uint8_t { Tcp = 0, Ibverbs = 1, Local = 2 };
const char* transportName(TransportKind kind);

constexpr int kDefaultTimeoutMs = 300000;
constexpr size_t kDefaultChunkBytes = 1u << 20;
constexpr size_t kMinChunkBytes = 4096;
constexpr int kSlotsPerChannel = 4;
constexpr int kDefaultAutoTrials = 2;
constexpr int kMaxAutoTrials = 64;

// "ring", "direct", "tree", "allgather" or "auto" (any case); `source` names
// where the text came from in the error.
cc_result_t parseAlgo(const char* text, const char* source, AlgoId* out);

struct ResolvedConfig {
  CodecSpec codec = simpleCodecSpec("nat");
  // direct's master codec C_M (CC_MASTER_CODEC); unset: the call's own spec.
  bool hasMasterCodec = false;
  CodecSpec masterCodec;
  AlgoId algo = AlgoId::Auto;
  TransportKind transport = TransportKind::Tcp;
  std::string socketIfname;
  std::string ibDevice;
  LogLevel debug = LogLevel::Warn;
  bool hasSeed = false;
  uint64_t seed = 0;
  int timeoutMs = kDefaultTimeoutMs;
  size_t chunkBytes = kDefaultChunkBytes;  // wire bytes per message (one slot)
  // CC_CHECK_CALLS=1: under auto every call names its algorithm to the next
  // rank, so ranks whose calls differ fail at once instead of at the timeout.
  bool checkCalls = false;
  // CC_AUTO_TRIALS: the fewest timed calls in each block of auto's trials
  // (algo.h, AutoTrialPlan); 0: no trials, the cost model alone decides.
  int autoTrials = kDefaultAutoTrials;
};

// CC_INVALID_ARGUMENT with a message for a config not made by
// CC_CONFIG_INITIALIZER, or a field / environment variable with an unknown
// value (the message lists the valid ones).
cc_result_t resolveConfig(const cc_config_t* config, ResolvedConfig* out);

}  // namespace cc
