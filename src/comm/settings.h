// What a communicator is opened with: the settings its collectives follow
// (CallSettings, algo/call/collectives.h) and what only init reads. The C API
// fills them from cc_config_t, the environment and the defaults
// (api/config.h); ranks agree on them at init (comm.cc).
#pragma once

#include <cstdint>
#include <string>

#include "algo/call/collectives.h"
#include "base/log.h"
#include "codec/codec.h"

namespace cc {

enum class TransportKind : uint8_t { Tcp = 0, Ibverbs = 1, Local = 2 };
const char* transportName(TransportKind kind);

constexpr int kDefaultTimeoutMs = 300000;

// A base rather than a member, so that every setting reads the same
// (config.algo, config.transport) wherever it is used.
struct ResolvedConfig : CallSettings {
  TransportKind transport = TransportKind::Tcp;
  std::string socketIfname;
  std::string ibDevice;
  LogLevel debug = LogLevel::Warn;
  bool hasSeed = false;
  uint64_t seed = 0;
  int timeoutMs = kDefaultTimeoutMs;
  // CC_CODEC_ISA: the highest instruction set the codecs may use, for the
  // whole process (the codecs' choice is per process, not per communicator).
  bool limitsCodecIsa = false;
  CodecIsa codecIsa = CodecIsa::Avx512;
};

}  // namespace cc
