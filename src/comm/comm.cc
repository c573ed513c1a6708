// The communicator's own work: connect the ranks, agree on the settings,
// open the transport and the channels the configured algorithm may need,
// hand calls down, break the links when a call fails half-way. What a call
// does below that is the algorithm layer's (algo/call/allreduce_call.h).
#include "comm/comm.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "algo/auto/calibration.h"
#include "algo/call/dispatch.h"
#include "base/error.h"
#include "base/log.h"
#include "comm/bootstrap.h"
#include "transports/rendezvous.h"
#ifdef CC_HAVE_CUDA
#include "cuda/device_runtime.h"
#endif

namespace cc {
namespace {

// What every rank must agree on; rank 0's record is the reference.
struct InitRecord {
  uint32_t magic;
  uint32_t codecHash;
  uint8_t algo;
  uint8_t transport;
  uint8_t hasMasterCodec;
  uint8_t checkCalls;
  uint32_t masterCodecHash;
  uint32_t autoTrials;
  int64_t compressMinBytes;
  uint64_t chunkBytes;
  uint64_t seed;
  uint64_t commKey;
  uint32_t switchHash;  // FNV-1a of CC_SWITCH_ADDR's text (0: unset)
  uint32_t reserved;
};
// "CCI6": the record carries the switch address's hash and
// CC_COMPRESS_MIN_BYTES. "CCI5" was a record with only one of them (two
// builds of the same week); "CCI4": the algorithm byte became an AlgoId, a
// row of the algorithm table, ring 0, auto 0xff.
constexpr uint32_t kInitMagic = 0x43434936u;

uint32_t textHash(const std::string& text) {
  if (text.empty()) return 0;
  uint32_t hash = 2166136261u;
  for (unsigned char c : text) hash = (hash ^ c) * 16777619u;
  return hash == 0 ? 1 : hash;
}

uint64_t random64() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

std::vector<char> toBytes(const std::string& text) { return std::vector<char>(text.begin(), text.end()); }

// Rank 0 publishes its settings and a fresh seed; every rank checks its own
// settings against them, and all ranks fail together if any rank disagrees.
cc_result_t agreeOnSettings(RendezvousStore& store, int rank, const ResolvedConfig& config,
                            InitRecord* agreed) {
  InitRecord mine{};
  mine.magic = kInitMagic;
  mine.codecHash = config.codec.hash;
  mine.algo = static_cast<uint8_t>(config.algo);
  mine.transport = static_cast<uint8_t>(config.transport);
  mine.hasMasterCodec = config.hasMasterCodec ? 1 : 0;
  mine.masterCodecHash = config.hasMasterCodec ? config.masterCodec.hash : 0;
  mine.chunkBytes = config.chunkBytes;
  mine.checkCalls = config.checkCalls ? 1 : 0;
  mine.autoTrials = static_cast<uint32_t>(config.autoTrials);
  mine.switchHash = textHash(config.switchAddress);
  mine.compressMinBytes = config.compressMinBytes;
  if (rank == 0) {
    mine.seed = config.hasSeed ? config.seed : random64();
    mine.commKey = random64();
    std::vector<char> bytes(sizeof(mine));
    std::memcpy(bytes.data(), &mine, sizeof(mine));
    CC_CHECK(store.trySet("cc/init", bytes));
    CC_CHECK(store.trySet("cc/init/codec", toBytes(config.codec.canonical)));
    CC_CHECK(store.trySet("cc/init/switch", toBytes(config.switchAddress)));
  }
  std::vector<char> bytes;
  CC_CHECK(store.tryGet("cc/init", &bytes));
  if (bytes.size() != sizeof(InitRecord)) {
    return setError(CC_REMOTE_ERROR, "rank 0 published a %zu-byte init record, expected %zu",
                    bytes.size(), sizeof(InitRecord));
  }
  std::memcpy(agreed, bytes.data(), sizeof(InitRecord));
  std::string mismatch;
  if (agreed->magic != kInitMagic) {
    mismatch = "rank 0 runs an incompatible libcompressedcoll";
  } else if (agreed->codecHash != mine.codecHash) {
    std::vector<char> theirs;
    CC_CHECK(store.tryGet("cc/init/codec", &theirs));
    mismatch = "codec " + config.codec.canonical + " differs from rank 0's " + std::string(theirs.begin(), theirs.end());
  } else if (agreed->hasMasterCodec != mine.hasMasterCodec || agreed->masterCodecHash != mine.masterCodecHash) {
    mismatch = "master codec " + (config.hasMasterCodec ? config.masterCodec.canonical : std::string("(unset)")) +
               " differs from rank 0's";
  } else if (agreed->algo != mine.algo) {
    mismatch = std::string("algorithm ") + algoName(static_cast<AlgoId>(mine.algo)) +
               " differs from rank 0's " + algoName(static_cast<AlgoId>(agreed->algo));
  } else if (agreed->transport != mine.transport) {
    mismatch = std::string("transport ") + transportName(static_cast<TransportKind>(mine.transport)) +
               " differs from rank 0's " +
               transportName(static_cast<TransportKind>(agreed->transport));
  } else if (agreed->chunkBytes != mine.chunkBytes) {
    mismatch = "chunk bytes " + std::to_string(mine.chunkBytes) + " differ from rank 0's " +
               std::to_string(agreed->chunkBytes);
  } else if (agreed->checkCalls != mine.checkCalls) {
    mismatch = std::string("CC_CHECK_CALLS=") + (mine.checkCalls ? "1" : "0") + " differs from rank 0's " +
               (agreed->checkCalls ? "1" : "0");
  } else if (agreed->switchHash != mine.switchHash) {
    std::vector<char> theirs;
    CC_CHECK(store.tryGet("cc/init/switch", &theirs));
    mismatch = "switch address '" + config.switchAddress + "' (CC_SWITCH_ADDR) differs from rank 0's '" +
               std::string(theirs.begin(), theirs.end()) + "'";
  } else if (agreed->autoTrials != mine.autoTrials) {
    // Ranks whose trial blocks differ in length would run different algorithms in one call.
    mismatch = "CC_AUTO_TRIALS=" + std::to_string(mine.autoTrials) + " differs from rank 0's " +
               std::to_string(agreed->autoTrials);
  } else if (agreed->compressMinBytes != mine.compressMinBytes) {
    // Ranks would take different paths (exact or compressed) in one call.
    auto show = [](int64_t bytes) { return bytes == kCompressWherePays ? std::string("unset") : std::to_string(bytes); };
    mismatch = "CC_COMPRESS_MIN_BYTES=" + show(mine.compressMinBytes) + " differs from rank 0's " +
               show(agreed->compressMinBytes);
  }
  if (config.hasSeed && rank != 0 && config.seed != agreed->seed) {
    CC_WARN("rank %d: CC_SEED %llu differs from rank 0's; rank 0's seed is used", rank,
            static_cast<unsigned long long>(config.seed));
  }
  int64_t failures = 0;
  if (!mismatch.empty()) {
    CC_CHECK(store.trySet("cc/init/mismatch", toBytes("rank " + std::to_string(rank) + ": " + mismatch)));
  }
  CC_CHECK(store.tryAdd("cc/init/failures", mismatch.empty() ? 0 : 1, &failures));
  CC_CHECK(store.barrier("cc/init/checked"));
  CC_CHECK(store.tryAdd("cc/init/failures", 0, &failures));
  if (failures > 0) {
    std::vector<char> reason;
    CC_CHECK(store.tryGet("cc/init/mismatch", &reason));
    const std::string verdict(reason.begin(), reason.end());
    // The store usually lives in rank 0's process, which exits once its init
    // failed: it must not go before every rank has read why.
    if (store.barrier("cc/init/verdict") != CC_SUCCESS) {
      CC_WARN("rank %d: not every rank read why init failed", rank);
    }
    return setError(CC_INVALID_USAGE, "ranks disagree on the communicator's settings: %s", verdict.c_str());
  }
  return CC_SUCCESS;
}

cc_result_t createTransport(const ResolvedConfig& config, const TransportSetup& setup,
                            std::unique_ptr<Transport>* out) {
  switch (config.transport) {
    case TransportKind::Local: return createLocalTransport(setup, out);
    case TransportKind::Tcp: return createGlooTransport(setup, false, out);
    case TransportKind::Ibverbs: return createGlooTransport(setup, true, out);
  }
  return setError(CC_INTERNAL_ERROR, "unknown transport kind %d", static_cast<int>(config.transport));
}

}  // namespace

cc_result_t commInit(cc_comm_t* out, int nranks, const cc_unique_id_t& id, int rank, const ResolvedConfig& config) {
  auto comm = std::make_unique<cc_comm>();
  comm->rank = rank;
  comm->nranks = nranks;
  comm->settings = config;
  comm->openedWith = config.algo;
  setLogLevel(config.debug);
  if (config.limitsCodecIsa) limitCodecIsa(config.codecIsa);

  RootAddress root;
  CC_CHECK(decodeUniqueId(id, &root));
  if (rank == 0 && root.fromEnvironment) CC_CHECK(serveStore(root));
  std::unique_ptr<StoreClient> store;
  CC_CHECK(StoreClient::connect(root, rank, nranks, config.timeoutMs, &store));

  InitRecord agreed{};
  CC_CHECK(agreeOnSettings(*store, rank, config, &agreed));
  comm->seed = agreed.seed;

  TransportSetup setup;
  setup.rank = rank;
  setup.nranks = nranks;
  setup.timeoutMs = config.timeoutMs;
  setup.nonce = agreed.commKey;
  setup.store = store.get();
  setup.socketIfname = config.socketIfname;
  setup.ibDevice = config.ibDevice;
  CC_CHECK(createTransport(config, setup, &comm->transport));
  ChannelContext channels;
  channels.store = store.get();
  channels.timeoutMs = config.timeoutMs;
  channels.nonce = agreed.commKey;
  CC_CHECK(openCollectiveChannels(*comm, channels));
  // Every receive slot is registered before anyone sends into it.
  CC_CHECK(store->barrier("cc/init/ready"));
#ifdef CC_HAVE_CUDA
  DeviceSetup device;
  device.transport = setup;
  device.chunkBytes = config.chunkBytes;
  device.sameProcess = config.transport == TransportKind::Local;
  CC_CHECK(deviceInit(device, *store, &comm->device));
#endif
  if (nranks > 1 && config.algo == AlgoId::Auto) CC_CHECK(calibrateCostModel(*store, *comm));
  CC_INFO("rank %d/%d ready: codec %s (%s), algorithm %s, transport %s via %s, chunk %zu bytes, "
          "seed %llu",
          rank, nranks, config.codec.canonical.c_str(), natImplementationName(), algoName(config.algo),
          transportName(config.transport), store->localAddressString().c_str(), config.chunkBytes,
          static_cast<unsigned long long>(comm->seed));
  *out = comm.release();
  return CC_SUCCESS;
}

cc_result_t commSpec(cc_comm_t comm, const char* specText, const CodecSpec** spec) {
  std::lock_guard<std::mutex> lock(comm->callMutex);
  SpecCodecs* codecs = nullptr;
  CC_CHECK(comm->specCodecs(specText, &codecs));
  *spec = &codecs->spec;
  return CC_SUCCESS;
}

cc_result_t commAllreduce(cc_comm_t comm, const TensorCall* tensors, size_t ntensors, cc_datatype_t datatype,
                          cc_red_op_t op, const char* specText) {
  std::lock_guard<std::mutex> lock(comm->callMutex);
  if (comm->asyncError.load() != CC_SUCCESS) {
    return setError(CC_INVALID_USAGE,
                    "the communicator is broken by an earlier %s; create a new one",
                    resultName(static_cast<cc_result_t>(comm->asyncError.load())));
  }
  bool broken = false;
  const cc_result_t result = runAllreduce(*comm, tensors, ntensors, datatype, op, specText, &broken);
  if (result != CC_SUCCESS && broken) {
    // A collective that failed half-way leaves peers waiting: break the links
    // so they fail now instead of at their timeout.
    comm->asyncError.store(result);
    comm->transport->abort();
    abortAlgorithmChannels(*comm, lastErrorMessage().c_str());
  }
  return result;
}

cc_result_t commForceAlgorithm(cc_comm_t comm, AlgoId algo, bool checkCalls) {
  if (comm == nullptr) return setError(CC_INVALID_ARGUMENT, "comm is NULL");
  if (comm->openedWith != AlgoId::Auto) {
    return setError(CC_INVALID_USAGE, "forcing algorithm %s: the communicator was opened with %s, not auto",
                    algoName(algo), algoName(comm->openedWith));
  }
  if (checkCalls && comm->nranks > 1 && comm->announceToNext == nullptr) {
    return setError(CC_INVALID_USAGE, "checking calls: the communicator was opened without CC_CHECK_CALLS=1");
  }
  comm->settings.algo = algo;
  comm->settings.checkCalls = checkCalls;
  return CC_SUCCESS;
}

void commAbort(cc_comm_t comm) {
  comm->aborted.store(true);
  int expected = CC_SUCCESS;
  comm->asyncError.compare_exchange_strong(expected, CC_REMOTE_ERROR);
  if (comm->transport) comm->transport->abort();
  const std::string reason = "cc_comm_abort on rank " + std::to_string(comm->rank);
  abortAlgorithmChannels(*comm, reason.c_str());
#ifdef CC_HAVE_CUDA
  if (comm->device) deviceAbort(*comm->device);
#endif
}

}  // namespace cc
