#include "api/config.h"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "base/log.h"
#include "prims/prims.h"

namespace cc {
namespace {

// The config field if set, else the environment variable, else nullptr.
const char* pick(const char* field, const char* envName) {
  if (field != nullptr) return field;
  const char* env = std::getenv(envName);
  return (env != nullptr && env[0] != '\0') ? env : nullptr;
}

bool equalsIgnoreCase(const char* a, const char* b) { return strcasecmp(a, b) == 0; }

cc_result_t parseTransport(const char* text, const char* source, TransportKind* out) {
  if (equalsIgnoreCase(text, "tcp") || equalsIgnoreCase(text, "gloo")) *out = TransportKind::Tcp;
  else if (equalsIgnoreCase(text, "ibverbs")) *out = TransportKind::Ibverbs;
  else if (equalsIgnoreCase(text, "local")) *out = TransportKind::Local;
  else {
    return setError(CC_INVALID_ARGUMENT,
                    "%s: unknown transport '%s' (valid: tcp, ibverbs, local)", source, text);
  }
  return CC_SUCCESS;
}

cc_result_t parseDebug(const char* text, const char* source, LogLevel* out) {
  if (equalsIgnoreCase(text, "WARN")) *out = LogLevel::Warn;
  else if (equalsIgnoreCase(text, "INFO")) *out = LogLevel::Info;
  else if (equalsIgnoreCase(text, "TRACE")) *out = LogLevel::Trace;
  else return setError(CC_INVALID_ARGUMENT, "%s: unknown debug level '%s' (valid: WARN, INFO, TRACE)", source, text);
  return CC_SUCCESS;
}

// Unsigned integer with an optional K/M/G (binary) suffix; decimal or 0x hex.
cc_result_t parseSize(const char* text, const char* source, uint64_t* out) {
  errno = 0;
  char* end = nullptr;
  unsigned long long value = std::strtoull(text, &end, 0);
  if (end == text || errno != 0 || text[0] == '-') {
    return setError(CC_INVALID_ARGUMENT, "%s: '%s' is not a non-negative integer", source, text);
  }
  unsigned shift = 0;
  if (*end == 'k' || *end == 'K') shift = 10, ++end;
  else if (*end == 'm' || *end == 'M') shift = 20, ++end;
  else if (*end == 'g' || *end == 'G') shift = 30, ++end;
  if (*end != '\0') {
    return setError(CC_INVALID_ARGUMENT, "%s: '%s' has trailing characters (expected a number with an optional K, M or G)", source, text);
  }
  if (shift && value > (~0ull >> shift)) {
    return setError(CC_INVALID_ARGUMENT, "%s: '%s' is too large", source, text);
  }
  *out = value << shift;
  return CC_SUCCESS;
}

}  // namespace

cc_result_t parseAlgo(const char* text, const char* source, AlgoId* out) {
  if (algorithmByName(text, out)) return CC_SUCCESS;
  return setError(CC_INVALID_ARGUMENT, "%s: unknown algorithm '%s' (valid: %s)", source, text,
                  algorithmChoices().c_str());
}

cc_result_t resolveConfig(const cc_config_t* config, ResolvedConfig* out) {
  static const cc_config_t unset = CC_CONFIG_INITIALIZER;
  if (config == nullptr) {
    config = &unset;
  } else {
    // A caller built against version 1 or 2 of the header has a config that
    // ends before switch_addr or compress_min_bytes: it is read up to there.
    const bool current = config->version == CC_CONFIG_VERSION && config->size == sizeof(cc_config_t);
    const bool version1 = config->version == 1 && config->size == offsetof(cc_config_t, switch_addr);
    const bool version2 = config->version == 2 && config->size == offsetof(cc_config_t, compress_min_bytes);
    if (config->magic != CC_CONFIG_MAGIC || !(current || version1 || version2)) {
      return setError(CC_INVALID_ARGUMENT,
                      "config was not initialised with CC_CONFIG_INITIALIZER (size %zu, magic "
                      "0x%08x, version %u; expected %zu, 0x%08x, %u, or a version 1 or 2 config of %zu "
                      "or %zu bytes)",
                      config->size, config->magic, config->version, sizeof(cc_config_t),
                      CC_CONFIG_MAGIC, CC_CONFIG_VERSION, offsetof(cc_config_t, switch_addr),
                      offsetof(cc_config_t, compress_min_bytes));
    }
  }
  ResolvedConfig resolved;
  if (const char* text = pick(config->debug, "CC_DEBUG")) {
    CC_CHECK(parseDebug(text, config->debug ? "config.debug" : "CC_DEBUG", &resolved.debug));
  }
  if (const char* text = pick(config->codec, "CC_CODEC")) {
    cc_result_t result = parseCodecSpec(text, &resolved.codec);
    if (result != CC_SUCCESS) return addErrorContext(result, "%s", config->codec ? "config.codec" : "CC_CODEC");
  }
  if (const char* text = pick(config->master_codec, "CC_MASTER_CODEC")) {
    const char* source = config->master_codec ? "config.master_codec" : "CC_MASTER_CODEC";
    cc_result_t result = parseCodecSpec(text, &resolved.masterCodec);
    if (result != CC_SUCCESS) return addErrorContext(result, "%s", source);
    if (resolved.masterCodec.selector != Selector::None || !resolved.masterCodec.hopReencodable()) {
      return setError(CC_INVALID_ARGUMENT,
                      "%s: '%s' cannot be a master codec: the owner encodes one chunk of its shard at a "
                      "time, so it takes a quantizer of bucket scope (none, nat, nat_det, dither_nat, "
                      "dither_std, qsgd, terngrad), without randk or topk",
                      source, text);
    }
    resolved.hasMasterCodec = true;
  }
  if (const char* text = pick(config->algo, "CC_ALGO")) {
    CC_CHECK(parseAlgo(text, config->algo ? "config.algo" : "CC_ALGO", &resolved.algo));
  }
  if (const char* text = pick(config->transport, "CC_TRANSPORT")) {
    CC_CHECK(parseTransport(text, config->transport ? "config.transport" : "CC_TRANSPORT",
                            &resolved.transport));
  }
  if (const char* text = pick(config->socket_ifname, "CC_SOCKET_IFNAME")) resolved.socketIfname = text;
  // Older configs (version 1) end before switch_addr.
  const char* switchField = config->version >= 2 ? config->switch_addr : nullptr;
  if (const char* text = pick(switchField, "CC_SWITCH_ADDR")) resolved.switchAddress = text;
  if (const char* text = pick(config->ib_device, "CC_IB_DEVICE")) resolved.ibDevice = text;
  if (config->has_seed) {
    resolved.hasSeed = true;
    resolved.seed = config->seed;
  } else if (const char* text = pick(nullptr, "CC_SEED")) {
    CC_CHECK(parseSize(text, "CC_SEED", &resolved.seed));
    resolved.hasSeed = true;
  }
  if (config->timeout_ms != CC_CONFIG_UNSET_INT) {
    if (config->timeout_ms <= 0) {
      return setError(CC_INVALID_ARGUMENT, "config.timeout_ms must be positive, got %d", config->timeout_ms);
    }
    resolved.timeoutMs = config->timeout_ms;
  } else if (const char* text = pick(nullptr, "CC_TIMEOUT_MS")) {
    uint64_t value = 0;
    CC_CHECK(parseSize(text, "CC_TIMEOUT_MS", &value));
    if (value == 0 || value > 0x7fffffffull) {
      return setError(CC_INVALID_ARGUMENT, "CC_TIMEOUT_MS must be in [1, 2147483647], got '%s'", text);
    }
    resolved.timeoutMs = static_cast<int>(value);
  }
  uint64_t chunkBytes = kDefaultChunkBytes;
  const char* chunkSource = nullptr;
  if (config->chunk_bytes != CC_CONFIG_UNSET_INT) {
    if (config->chunk_bytes <= 0) {
      return setError(CC_INVALID_ARGUMENT, "config.chunk_bytes must be positive, got %lld", config->chunk_bytes);
    }
    chunkBytes = static_cast<uint64_t>(config->chunk_bytes);
    chunkSource = "config.chunk_bytes";
  } else if (const char* text = pick(nullptr, "CC_CHUNK_BYTES")) {
    CC_CHECK(parseSize(text, "CC_CHUNK_BYTES", &chunkBytes));
    chunkSource = "CC_CHUNK_BYTES";
  }
  if (chunkSource && (chunkBytes < kMinChunkBytes || chunkBytes > (1ull << 30))) {
    return setError(CC_INVALID_ARGUMENT, "%s must be between %zu and 1 GiB, got %llu", chunkSource,
                    kMinChunkBytes, static_cast<unsigned long long>(chunkBytes));
  }
  resolved.chunkBytes = static_cast<size_t>(chunkBytes);
  resolved.chunkBytesGiven = chunkSource != nullptr;
  if (const char* text = pick(nullptr, "CC_CHECK_CALLS")) {
    if (std::strcmp(text, "0") != 0 && std::strcmp(text, "1") != 0) {
      return setError(CC_INVALID_ARGUMENT, "CC_CHECK_CALLS must be 0 or 1, got '%s'", text);
    }
    resolved.checkCalls = text[0] == '1';
  }
  if (const char* text = pick(nullptr, "CC_AUTO_TRIALS")) {
    uint64_t trials = 0;
    CC_CHECK(parseSize(text, "CC_AUTO_TRIALS", &trials));
    if (trials > static_cast<uint64_t>(kMaxAutoTrials)) {
      return setError(CC_INVALID_ARGUMENT, "CC_AUTO_TRIALS must be between 0 and %d, got '%s'", kMaxAutoTrials,
                      text);
    }
    resolved.autoTrials = static_cast<int>(trials);
  }
  if (const char* text = pick(nullptr, "CC_CODEC_ISA")) {
    bool known = false;
    for (CodecIsa isa : {CodecIsa::Scalar, CodecIsa::Avx2, CodecIsa::Avx512}) {
      if (std::strcmp(text, codecIsaName(isa)) == 0) {
        resolved.codecIsa = isa;
        known = true;
      }
    }
    if (!known) return setError(CC_INVALID_ARGUMENT, "CC_CODEC_ISA must be scalar, avx2 or avx512, got '%s'", text);
    resolved.limitsCodecIsa = true;
  }
  // Older configs (versions 1 and 2) end before compress_min_bytes.
  const long long compressMinField = config->version >= 3 ? config->compress_min_bytes : CC_CONFIG_UNSET_INT;
  if (compressMinField != CC_CONFIG_UNSET_INT) {
    if (compressMinField < 0) {
      return setError(CC_INVALID_ARGUMENT, "config.compress_min_bytes must be 0 or more, got %lld", compressMinField);
    }
    resolved.compressMinBytes = static_cast<int64_t>(compressMinField);
  } else if (const char* text = pick(nullptr, "CC_COMPRESS_MIN_BYTES")) {
    uint64_t bytes = 0;
    CC_CHECK(parseSize(text, "CC_COMPRESS_MIN_BYTES", &bytes));
    if (bytes > static_cast<uint64_t>(INT64_MAX)) {
      return setError(CC_INVALID_ARGUMENT, "CC_COMPRESS_MIN_BYTES is too large: '%s'", text);
    }
    resolved.compressMinBytes = static_cast<int64_t>(bytes);
  }
  *out = resolved;
  return CC_SUCCESS;
}

}  // namespace cc
