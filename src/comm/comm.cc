#include "comm/comm.h"

#include <cstring>
#include <random>

#include "algo/algo.h"
#include "comm/bootstrap.h"
#include "prims/prims.h"

namespace cc {
namespace {

// What every rank must agree on; rank 0's record is the reference.
struct InitRecord {
  uint32_t magic;
  uint8_t codec;
  uint8_t algo;
  uint8_t transport;
  uint8_t reserved;
  uint64_t chunkBytes;
  uint64_t seed;
  uint64_t commKey;
};
constexpr uint32_t kInitMagic = 0x43434931u;

uint64_t random64() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

std::vector<char> toBytes(const std::string& text) { return std::vector<char>(text.begin(), text.end()); }

// Rank 0 publishes its settings and a fresh seed; every rank checks its own
// settings against them, and all ranks fail together if any rank disagrees.
cc_result_t agreeOnSettings(StoreClient& store, int rank, const ResolvedConfig& config,
                            InitRecord* agreed) {
  InitRecord mine{};
  mine.magic = kInitMagic;
  mine.codec = static_cast<uint8_t>(config.codec);
  mine.algo = static_cast<uint8_t>(config.algo);
  mine.transport = static_cast<uint8_t>(config.transport);
  mine.chunkBytes = config.chunkBytes;
  if (rank == 0) {
    mine.seed = config.hasSeed ? config.seed : random64();
    mine.commKey = random64();
    std::vector<char> bytes(sizeof(mine));
    std::memcpy(bytes.data(), &mine, sizeof(mine));
    CC_CHECK(store.trySet("cc/init", bytes));
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
  } else if (agreed->codec != mine.codec) {
    mismatch = std::string("codec ") + codecName(static_cast<CodecId>(mine.codec)) +
               " differs from rank 0's " + codecName(static_cast<CodecId>(agreed->codec));
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
    return setError(CC_INVALID_USAGE, "ranks disagree on the communicator's settings: %.*s",
                    static_cast<int>(reason.size()), reason.data());
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

const char* datatypeName(cc_datatype_t datatype) {
  static const char* names[CC_NUM_DATATYPES] = {"int8",    "uint8",   "int32",   "uint32",  "int64",
                                                "uint64",  "float16", "float32", "float64", "bfloat16"};
  int index = static_cast<int>(datatype);
  return index >= 0 && index < CC_NUM_DATATYPES ? names[index] : "unknown";
}

const char* opName(cc_red_op_t op) {
  static const char* names[CC_NUM_OPS] = {"sum", "prod", "max", "min", "avg"};
  int index = static_cast<int>(op);
  return index >= 0 && index < CC_NUM_OPS ? names[index] : "unknown";
}

cc_result_t commInit(cc_comm_t* out, int nranks, const cc_unique_id_t& id, int rank,
                     const cc_config_t* userConfig) {
  auto comm = std::make_unique<cc_comm>();
  comm->rank = rank;
  comm->nranks = nranks;
  CC_CHECK(resolveConfig(userConfig, &comm->config));
  const ResolvedConfig& config = comm->config;
  setLogLevel(config.debug);

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

  if (nranks > 1) {
    const size_t slotBytes = kFrameHeaderBytes + config.chunkBytes;
    constexpr int kRingTag = 0;
    CC_CHECK(comm->transport->openSend((rank + 1) % nranks, kRingTag, slotBytes, kSlotsPerChannel,
                                       &comm->toNext));
    CC_CHECK(comm->transport->openRecv((rank + nranks - 1) % nranks, kRingTag, slotBytes,
                                       kSlotsPerChannel, &comm->fromPrev));
  }
  // Every receive slot is registered before anyone sends into it.
  CC_CHECK(store->barrier("cc/init/ready"));
  CC_INFO("rank %d/%d ready: codec %s (%s), algorithm %s, transport %s via %s, chunk %zu bytes, "
          "seed %llu",
          rank, nranks, codecName(config.codec), natImplementationName(), algoName(config.algo),
          transportName(config.transport), store->localAddressString().c_str(), config.chunkBytes,
          static_cast<unsigned long long>(comm->seed));
  *out = comm.release();
  return CC_SUCCESS;
}

cc_result_t commAllreduce(cc_comm_t comm, const void* sendbuf, void* recvbuf, size_t count,
                          cc_datatype_t datatype, cc_red_op_t op) {
  std::lock_guard<std::mutex> lock(comm->callMutex);
  if (comm->asyncError.load() != CC_SUCCESS) {
    return setError(CC_INVALID_USAGE,
                    "the communicator is broken by an earlier %s; create a new one",
                    resultName(static_cast<cc_result_t>(comm->asyncError.load())));
  }
  std::unique_ptr<Codec>& codec = comm->codecs[datatype][op];
  if (!codec) codec = makeCodec(comm->config.codec, datatype, op);
  if (!codec) return addErrorContext(CC_INTERNAL_ERROR, "no codec for %s %s", datatypeName(datatype), opName(op));
  CollectiveArgs args{sendbuf, recvbuf,   count,      datatype,      op,
                      codec.get(), comm->seed, comm->collectiveSeq, comm->rank, comm->nranks};
  ++comm->collectiveSeq;
  Prims prims(args);
  if (comm->nranks == 1) {
    prims.copyInputToOutput();
    return CC_SUCCESS;
  }
  cc_result_t result = ringAllreduce(prims, args, RingChannels{comm->toNext.get(), comm->fromPrev.get()});
  if (result != CC_SUCCESS) {
    // A collective that failed half-way leaves peers waiting: break the links
    // so they fail now instead of at their timeout.
    comm->asyncError.store(result);
    comm->transport->abort();
    return addErrorContext(result, "compressed_allreduce #%llu (%zu x %s, %s, codec %s, ring) on rank %d",
                           static_cast<unsigned long long>(args.collectiveSeq), count,
                           datatypeName(datatype), opName(op), codecName(codec->id()), comm->rank);
  }
  return CC_SUCCESS;
}

void commAbort(cc_comm_t comm) {
  comm->aborted.store(true);
  int expected = CC_SUCCESS;
  comm->asyncError.compare_exchange_strong(expected, CC_REMOTE_ERROR);
  if (comm->transport) comm->transport->abort();
}

}  // namespace cc
