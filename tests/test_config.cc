// Config resolution: the initializer, environment filling unset fields,
// explicit fields winning, and refusals that list the valid values.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <string>
#include <utility>

#include "api/config.h"
#include "compressedcoll.h"
#include "test_helpers.h"

using cctest::ScopedEnv;

namespace {


std::string lastError() { return cc_get_last_error(nullptr); }

TEST(Config, DefaultsWhenNothingIsSet) {
  cc::ResolvedConfig resolved;
  ASSERT_EQ(cc::resolveConfig(nullptr, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.codec.canonical, "nat");
  EXPECT_EQ(resolved.algo, cc::AlgoId::Auto);
  EXPECT_EQ(resolved.transport, cc::TransportKind::Tcp);
  EXPECT_FALSE(resolved.hasSeed);
  EXPECT_FALSE(resolved.limitsCodecIsa);
  EXPECT_EQ(resolved.timeoutMs, cc::kDefaultTimeoutMs);
}

TEST(Config, ConfigNotMadeByTheInitializerIsRefused) {
  cc_config_t config;
  std::memset(&config, 0, sizeof(config));
  cc::ResolvedConfig resolved;
  EXPECT_EQ(cc::resolveConfig(&config, &resolved), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("CC_CONFIG_INITIALIZER"), std::string::npos) << lastError();
  EXPECT_EQ(lastError().rfind("CC_INVALID_ARGUMENT: ", 0), 0u) << lastError();

  // Through the C API too.
  cc_unique_id_t id;
  ASSERT_EQ(cc_get_unique_id(&id), CC_SUCCESS);
  cc_comm_t comm = nullptr;
  EXPECT_EQ(cc_comm_init_rank(&comm, 1, id, 0, &config), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("CC_CONFIG_INITIALIZER"), std::string::npos) << lastError();
}

TEST(Config, EnvironmentFillsUnsetFields) {
  ScopedEnv codec("CC_CODEC", "none");
  ScopedEnv algo("CC_ALGO", "ring");
  ScopedEnv transport("CC_TRANSPORT", "local");
  ScopedEnv seed("CC_SEED", "0x1234");
  ScopedEnv timeout("CC_TIMEOUT_MS", "1500");
  ScopedEnv chunk("CC_CHUNK_BYTES", "256K");
  ScopedEnv checkCalls("CC_CHECK_CALLS", "1");
  ScopedEnv autoTrials("CC_AUTO_TRIALS", "0");
  ScopedEnv codecIsa("CC_CODEC_ISA", "avx2");
  cc::ResolvedConfig resolved;
  ASSERT_EQ(cc::resolveConfig(nullptr, &resolved), CC_SUCCESS) << lastError();
  EXPECT_TRUE(resolved.limitsCodecIsa);
  EXPECT_EQ(resolved.codecIsa, cc::CodecIsa::Avx2);
  EXPECT_TRUE(resolved.checkCalls);
  EXPECT_EQ(resolved.autoTrials, 0);
  EXPECT_EQ(resolved.codec.canonical, "none");
  EXPECT_EQ(resolved.algo, cc::AlgoId::Ring);
  EXPECT_EQ(resolved.transport, cc::TransportKind::Local);
  EXPECT_TRUE(resolved.hasSeed);
  EXPECT_EQ(resolved.seed, 0x1234u);
  EXPECT_EQ(resolved.timeoutMs, 1500);
  EXPECT_EQ(resolved.chunkBytes, 256u * 1024u);
}

TEST(Config, ExplicitFieldsWinOverTheEnvironment) {
  ScopedEnv codec("CC_CODEC", "none");
  ScopedEnv timeout("CC_TIMEOUT_MS", "1500");
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.codec = "nat";
  config.timeout_ms = 99;
  cc::ResolvedConfig resolved;
  ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.codec.canonical, "nat");
  EXPECT_EQ(resolved.timeoutMs, 99);
}

TEST(Config, CompressMinBytesFromTheFieldOrTheEnvironment) {
  ScopedEnv env("CC_COMPRESS_MIN_BYTES", "1M");
  cc::ResolvedConfig resolved;
  ASSERT_EQ(cc::resolveConfig(nullptr, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.compressMinBytes, 1 << 20);
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.compress_min_bytes = 4096;
  ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.compressMinBytes, 4096);
  config.compress_min_bytes = 0;
  ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.compressMinBytes, 0);
  config.compress_min_bytes = -5;
  EXPECT_EQ(cc::resolveConfig(&config, &resolved), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("config.compress_min_bytes must be 0 or more, got -5"), std::string::npos)
      << lastError();
}

// Callers built against older headers pass shorter configs; the fields they
// lack come from the environment.
TEST(Config, VersionOneAndTwoConfigsAreReadUpToTheirEnd) {
  ScopedEnv compressMin("CC_COMPRESS_MIN_BYTES", "64K");
  ScopedEnv switchAddr("CC_SWITCH_ADDR", "10.0.0.1:9000");
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.compress_min_bytes = 4096;  // beyond a version 2 config's end: not read
  config.switch_addr = "10.0.0.2:9000";
  config.version = 2;
  config.size = offsetof(cc_config_t, compress_min_bytes);
  cc::ResolvedConfig resolved;
  ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.compressMinBytes, 64 << 10);
  EXPECT_EQ(resolved.switchAddress, "10.0.0.2:9000");
  config.version = 1;
  config.size = offsetof(cc_config_t, switch_addr);
  ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
  EXPECT_EQ(resolved.switchAddress, "10.0.0.1:9000");
  config.version = 2;  // a version 2 config of version 1's size
  EXPECT_EQ(cc::resolveConfig(&config, &resolved), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("CC_CONFIG_INITIALIZER"), std::string::npos) << lastError();
}

TEST(Config, UnknownValuesListTheValidOnes) {
  cc::ResolvedConfig resolved;
  {
    ScopedEnv env("CC_CODEC", "zstd");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("CC_CODEC"), std::string::npos) << lastError();
    EXPECT_NE(lastError().find("none, nat"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_ALGO", "butterfly");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("valid: ring, direct, tree, allgather, auto"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_TRANSPORT", "carrier-pigeon");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("valid: tcp, ibverbs, local"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_DEBUG", "LOUD");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("WARN, INFO, TRACE"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_TIMEOUT_MS", "soon");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("CC_TIMEOUT_MS"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_SEED", "-5");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
  }
  {
    ScopedEnv env("CC_CHUNK_BYTES", "12");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("between"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_CHECK_CALLS", "yes");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("CC_CHECK_CALLS must be 0 or 1, got 'yes'"), std::string::npos) << lastError();
  }
  {
    ScopedEnv env("CC_AUTO_TRIALS", "65");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("CC_AUTO_TRIALS must be between 0 and 64, got '65'"), std::string::npos)
        << lastError();
  }
  {
    ScopedEnv env("CC_CODEC_ISA", "sse2");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("CC_CODEC_ISA must be scalar, avx2 or avx512, got 'sse2'"), std::string::npos)
        << lastError();
  }
  {
    ScopedEnv env("CC_AUTO_TRIALS", "some");
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastError().find("CC_AUTO_TRIALS"), std::string::npos) << lastError();
  }
}

TEST(Config, AlgorithmsByName) {
  const std::pair<const char*, cc::AlgoId> names[] = {{"ring", cc::AlgoId::Ring},
                                                       {"direct", cc::AlgoId::Direct},
                                                       {"tree", cc::AlgoId::Tree},
                                                       {"allgather", cc::AlgoId::Allgather},
                                                       {"auto", cc::AlgoId::Auto},
                                                       {"DIRECT", cc::AlgoId::Direct}};
  for (const auto& [name, id] : names) {
    cc::ResolvedConfig resolved;
    {
      ScopedEnv env("CC_ALGO", name);
      ASSERT_EQ(cc::resolveConfig(nullptr, &resolved), CC_SUCCESS) << lastError();
      EXPECT_EQ(resolved.algo, id) << name;
    }
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.algo = name;
    ScopedEnv env("CC_ALGO", "ring");  // the field wins
    ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
    EXPECT_EQ(resolved.algo, id) << name;
  }
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Direct), "direct");
  EXPECT_STREQ(cc::algoName(cc::AlgoId::Tree), "tree");
}

TEST(Config, MasterCodecFromTheFieldOrTheEnvironment) {
  cc::ResolvedConfig resolved;
  ASSERT_EQ(cc::resolveConfig(nullptr, &resolved), CC_SUCCESS) << lastError();
  EXPECT_FALSE(resolved.hasMasterCodec);  // unset: the call's own spec
  {
    ScopedEnv env("CC_MASTER_CODEC", "qsgd:s=64");
    ASSERT_EQ(cc::resolveConfig(nullptr, &resolved), CC_SUCCESS) << lastError();
    EXPECT_TRUE(resolved.hasMasterCodec);
    cc::CodecSpec expected;
    ASSERT_EQ(cc::parseCodecSpec("qsgd:s=64", &expected), CC_SUCCESS);
    EXPECT_EQ(resolved.masterCodec.canonical, expected.canonical);
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.master_codec = "nat";
    ASSERT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << lastError();
    EXPECT_EQ(resolved.masterCodec.canonical, "nat");
  }
  for (const char* master : {"none", "nat", "nat_det", "dither_nat:s=4", "dither_std:s=3", "terngrad"}) {
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.master_codec = master;
    EXPECT_EQ(cc::resolveConfig(&config, &resolved), CC_SUCCESS) << master << ": " << lastError();
    EXPECT_TRUE(resolved.hasMasterCodec);
  }
}

TEST(Config, MasterCodecsThatCannotEncodeAChunkAreRefused) {
  cc::ResolvedConfig resolved;
  for (const char* master : {"topk:ratio=0.1", "topk:ratio=0.01+nat", "randk:ratio=0.5+nat", "randk:ratio=0.25",
                             "dither_nat:s=4,scope=tensor", "qsgd:s=8,scope=model"}) {
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.master_codec = master;
    EXPECT_EQ(cc::resolveConfig(&config, &resolved), CC_INVALID_ARGUMENT) << master;
    EXPECT_NE(lastError().find("config.master_codec"), std::string::npos) << lastError();
    EXPECT_NE(lastError().find(master), std::string::npos) << lastError();
    EXPECT_NE(lastError().find("cannot be a master codec"), std::string::npos) << lastError();
    ScopedEnv env("CC_MASTER_CODEC", master);
    EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT) << master;
    EXPECT_NE(lastError().find("CC_MASTER_CODEC"), std::string::npos) << lastError();
  }
  ScopedEnv env("CC_MASTER_CODEC", "zstd");
  EXPECT_EQ(cc::resolveConfig(nullptr, &resolved), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("CC_MASTER_CODEC"), std::string::npos) << lastError();
}

TEST(Config, VersionAndErrorStrings) {
  int version = 0;
  ASSERT_EQ(cc_get_version(&version), CC_SUCCESS);
  EXPECT_EQ(version, CC_VERSION_CODE);
  EXPECT_EQ(cc_get_version(nullptr), CC_INVALID_ARGUMENT);
  EXPECT_STREQ(cc_get_error_string(CC_SUCCESS), "no error");
  EXPECT_STREQ(cc_get_error_string(CC_TIMEOUT), "timeout");
  EXPECT_STREQ(cc_get_error_string(static_cast<cc_result_t>(77)), "unknown result code");
}

TEST(Config, LastErrorIsPerThread) {
  cc::setError(CC_TIMEOUT, "main thread error");
  std::string other;
  std::thread thread([&] {
    cc::setError(CC_REMOTE_ERROR, "other thread error");
    other = cc_get_last_error(nullptr);
  });
  thread.join();
  EXPECT_EQ(lastError(), "CC_TIMEOUT: main thread error");
  EXPECT_EQ(other, "CC_REMOTE_ERROR: other thread error");
}

}  // namespace
