#include "comm/comm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "algo/algo.h"
#include "base/clock.h"
#include "base/log.h"
#include "codec/elements.h"
#include "codec/randk.h"
#include "comm/bootstrap.h"
#include "prims/prims.h"
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
  uint64_t chunkBytes;
  uint64_t seed;
  uint64_t commKey;
};
constexpr uint32_t kInitMagic = 0x43434933u;

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
  mine.codecHash = config.codec.hash;
  mine.algo = static_cast<uint8_t>(config.algo);
  mine.transport = static_cast<uint8_t>(config.transport);
  mine.hasMasterCodec = config.hasMasterCodec ? 1 : 0;
  mine.masterCodecHash = config.hasMasterCodec ? config.masterCodec.hash : 0;
  mine.chunkBytes = config.chunkBytes;
  mine.checkCalls = config.checkCalls ? 1 : 0;
  mine.autoTrials = static_cast<uint32_t>(config.autoTrials);
  if (rank == 0) {
    mine.seed = config.hasSeed ? config.seed : random64();
    mine.commKey = random64();
    std::vector<char> bytes(sizeof(mine));
    std::memcpy(bytes.data(), &mine, sizeof(mine));
    CC_CHECK(store.trySet("cc/init", bytes));
    CC_CHECK(store.trySet("cc/init/codec", toBytes(config.codec.canonical)));
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
  } else if (agreed->autoTrials != mine.autoTrials) {
    // Ranks whose trial blocks differ in length would run different algorithms in one call.
    mismatch = "CC_AUTO_TRIALS=" + std::to_string(mine.autoTrials) + " differs from rank 0's " +
               std::to_string(agreed->autoTrials);
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

constexpr int kRingTag = 0;
constexpr int kShardTag = 1;  // direct: worker shards to their owners
constexpr int kSumTag = 2;    // direct: owners' sums to everyone
constexpr int kTreeTag[2] = {3, 4};
constexpr int kAnnounceTag = 5;  // auto with CC_CHECK_CALLS: each call's algorithm, to the next rank
// Many small slots: the gloo transport then returns them in batches of 8, so
// an announcement costs one message.
constexpr int kAnnounceSlots = 64;
constexpr size_t kAnnounceSlotBytes = kFrameHeaderBytes + 64;

// Opens direct's and tree's channels. direct sends n - 1 messages per step,
// so its slots are a 1/(n - 1) share of the chunk (not below the minimum
// chunk): its memory stays near one ring channel's whatever n is.
cc_result_t openAlgorithmChannels(Transport& transport, int rank, int nranks, size_t chunkBytes,
                                  AlgorithmChannels* channels) {
  const int n = nranks;
  const size_t directPayload = std::max(kMinChunkBytes, (chunkBytes / static_cast<size_t>(n - 1) + 63) / 64 * 64);
  channels->directSlotBytes = kFrameHeaderBytes + directPayload;
  channels->shardTo.resize(n);
  channels->sumTo.resize(n);
  channels->shardFrom.resize(n);
  channels->sumFrom.resize(n);
  for (int k = 1; k < n; ++k) {
    const int peer = (rank + k) % n;
    const size_t slot = channels->directSlotBytes;
    CC_CHECK(transport.openSend(peer, kShardTag, slot, kSlotsPerChannel, &channels->shardTo[peer]));
    CC_CHECK(transport.openRecv(peer, kShardTag, slot, kSlotsPerChannel, &channels->shardFrom[peer]));
    CC_CHECK(transport.openSend(peer, kSumTag, slot, kSlotsPerChannel, &channels->sumTo[peer]));
    CC_CHECK(transport.openRecv(peer, kSumTag, slot, kSlotsPerChannel, &channels->sumFrom[peer]));
    channels->sumToOthers.push_back(channels->sumTo[peer].get());
  }
  for (int peer = 0; peer < n; ++peer) {
    channels->shardToView.push_back(channels->shardTo[peer].get());
    channels->sumToView.push_back(channels->sumTo[peer].get());
    channels->shardFromView.push_back(channels->shardFrom[peer].get());
    channels->sumFromView.push_back(channels->sumFrom[peer].get());
  }

  // Tree chunks are received whole at every level before they go on, so they
  // are smaller than ring's: the pipeline fills in 1/8 of the time.
  channels->treeSlotBytes = kFrameHeaderBytes + std::max(kMinChunkBytes, chunkBytes / 8 / 64 * 64);
  doubleBinaryTree(n, rank, channels->trees);
  for (int t = 0; t < 2; ++t) {
    const TreeNode& node = channels->trees[t];
    const size_t slot = channels->treeSlotBytes;
    if (node.parent >= 0) {
      CC_CHECK(transport.openSend(node.parent, kTreeTag[t], slot, kSlotsPerChannel, &channels->treeUp[t]));
      CC_CHECK(transport.openRecv(node.parent, kTreeTag[t], slot, kSlotsPerChannel, &channels->treeDown[t]));
    }
    for (int c = 0; c < 2; ++c) {
      if (node.child[c] < 0) continue;
      CC_CHECK(transport.openRecv(node.child[c], kTreeTag[t], slot, kSlotsPerChannel, &channels->treeFromChild[t][c]));
      CC_CHECK(transport.openSend(node.child[c], kTreeTag[t], slot, kSlotsPerChannel, &channels->treeToChild[t][c]));
    }
  }
  channels->open = true;
  return CC_SUCCESS;
}

// ---- auto's measurements -------------------------------------------------

// The codec passes of one family on values like gradients, best of a few
// runs. All ranks measure at once, so a machine shared by several ranks
// shows in the figures.
CodecCosts measureCodec(const CodecSpec& spec) {
  constexpr size_t kValues = 1 << 16;
  constexpr int kRuns = 3;
  std::unique_ptr<Codec> codec = makeBlockCodec(spec, CC_FLOAT32, CC_SUM);
  std::vector<float> values(kValues), sum(kValues), out(kValues);
  std::vector<unsigned char> packed(codec->packedBytes(kValues)), packedOut(packed.size());
  std::mt19937 generator(12345);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& value : values) value = normal(generator);
  const RandomStream rs{1, 1};
  double best[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
  for (int run = 0; run < kRuns; ++run) {
    double t0 = nowSeconds();
    codec->encode(values.data(), kValues, 0, rs, packed.data());
    double t1 = nowSeconds();
    codec->decode(packed.data(), kValues, out.data());
    double t2 = nowSeconds();
    std::fill(sum.begin(), sum.end(), 0.0f);
    double t3 = nowSeconds();
    codec->decodeAccumulate(packed.data(), kValues, sum.data());
    double t4 = nowSeconds();
    codec->decodeAddEncode(packed.data(), values.data(), kValues, 0, rs, 1, packedOut.data(), nullptr);
    double t5 = nowSeconds();
    best[0] = std::min(best[0], t1 - t0);
    best[1] = std::min(best[1], t2 - t1);
    best[2] = std::min(best[2], t4 - t3);
    best[3] = std::min(best[3], t5 - t4);
  }
  CodecCosts costs;
  costs.encode = best[0] / kValues;
  costs.decode = best[1] / kValues;
  costs.decodeAccumulate = best[2] / kValues;
  costs.fused = best[3] / kValues;
  return costs;
}

// Link figures on the ring channels: the latency of one small message, the
// cost of each further message in a burst, and the bandwidth of full slots.
cc_result_t measureLink(SendChannel& toNext, RecvChannel& fromPrev, int rank, int nranks, LinkCosts* out) {
  const int prev = (rank + nranks - 1) % nranks;
  auto exchange = [&](size_t bytes, int messages, double* elapsed) -> cc_result_t {
    // Every rank posts `messages` (at most the slots of a channel) before it
    // waits, so no rank waits for a slot.
    const double start = nowSeconds();
    for (int m = 0; m < messages; ++m) {
      void* slot = nullptr;
      CC_CHECK(toNext.acquire(&slot));
      std::memset(slot, 0, std::min<size_t>(bytes, 64));
      CC_CHECK(toNext.post(bytes));
    }
    for (int m = 0; m < messages; ++m) {
      void* slot = nullptr;
      cc_result_t result = fromPrev.wait(&slot);
      if (result != CC_SUCCESS) return addErrorContext(result, "measuring the link from rank %d", prev);
      CC_CHECK(fromPrev.release());
    }
    *elapsed = nowSeconds() - start;
    return CC_SUCCESS;
  };
  constexpr int kRounds = 7;
  std::vector<double> single, burst, bulk;
  const size_t bulkBytes = toNext.slotBytes();
  double elapsed = 0;
  CC_CHECK(exchange(64, 1, &elapsed));  // warm-up: connections, first-touch
  CC_CHECK(exchange(bulkBytes, kSlotsPerChannel, &elapsed));
  for (int round = 0; round < kRounds; ++round) {
    CC_CHECK(exchange(64, 1, &elapsed));
    single.push_back(elapsed);
    CC_CHECK(exchange(64, kSlotsPerChannel, &elapsed));
    burst.push_back(elapsed);
  }
  for (int round = 0; round < 3; ++round) {
    CC_CHECK(exchange(bulkBytes, kSlotsPerChannel, &elapsed));
    bulk.push_back(elapsed);
  }
  auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  out->latency = median(single);
  // each further message of a burst: one more send and one more receive here
  out->perMessage = std::max(0.0, (median(burst) - out->latency) / (2.0 * (kSlotsPerChannel - 1)));
  const double bulkSeconds = std::max(1e-9, median(bulk) - out->latency);
  out->bytesPerSecond = static_cast<double>(bulkBytes) * kSlotsPerChannel / bulkSeconds;

  return CC_SUCCESS;
}

// Measures, publishes and agrees: every rank ends with the slowest rank's
// figure for every entry, so every rank's auto decides alike.
// The cost of a message to or from another peer: every rank sends one small
// message to each peer and waits for one from each (direct's pattern); each
// peer beyond the first costs a send and a receive, on another connection.
cc_result_t measureFanOut(const AlgorithmChannels& channels, int rank, int nranks, double latency, double* perMessage) {
  if (nranks < 3) return CC_SUCCESS;
  std::vector<double> rounds;
  for (int round = 0; round < 8; ++round) {
    const double start = nowSeconds();
    for (int k = 1; k < nranks; ++k) {
      SendChannel& to = *channels.shardTo[(rank + k) % nranks];
      void* slot = nullptr;
      CC_CHECK(to.acquire(&slot));
      std::memset(slot, 0, 64);
      CC_CHECK(to.post(64));
    }
    for (int k = 1; k < nranks; ++k) {
      const int peer = (rank - k + nranks) % nranks;
      RecvChannel& from = *channels.shardFrom[peer];
      void* slot = nullptr;
      cc_result_t result = from.wait(&slot);
      if (result != CC_SUCCESS) return addErrorContext(result, "measuring the links to every peer (rank %d)", peer);
      CC_CHECK(from.release());
    }
    if (round > 0) rounds.push_back(nowSeconds() - start);  // the first one warms connections up
  }
  std::sort(rounds.begin(), rounds.end());
  const double fan = rounds[rounds.size() / 2];
  *perMessage = std::max(*perMessage, (fan - latency) / (2.0 * (nranks - 2)));
  return CC_SUCCESS;
}

// How the model sees the calls its bursts and shares are fitted to.
struct CalibrationShapes {
  CallShape burst;  // kBurstCalibrationValues
  CallShape rate;   // kRateCalibrationValues
};
// Times calls of nat float32 SUM on ring, direct and tree into `mine`'s
// fixedSeconds and calibration seconds. Defined below with the algorithms'
// driver.
cc_result_t measureAlgorithmCalls(cc_comm& comm, CostModel* mine, CalibrationShapes* shapes);

cc_result_t measureCostModel(StoreClient& store, cc_comm& comm, CostModel* model) {
  CostModel mine;
  CalibrationShapes shapes;
  CC_CHECK(measureAlgorithmCalls(comm, &mine, &shapes));
  CC_CHECK(measureLink(*comm.toNext, *comm.fromPrev, comm.rank, comm.nranks, &mine.link));
  CC_CHECK(measureFanOut(comm.channels, comm.rank, comm.nranks, mine.link.latency, &mine.link.perMessage));
  const CodecSpec& configured = comm.config.codec;
  const CodecSpec dither = configured.isDither() && configured.scope == Scope::Bucket ? configured
                                                                                      : simpleCodecSpec("dither_nat");
  mine.codec[static_cast<int>(CodecId::None)] = measureCodec(simpleCodecSpec("none"));
  mine.codec[static_cast<int>(CodecId::Nat)] = measureCodec(simpleCodecSpec("nat"));
  mine.codec[static_cast<int>(CodecId::NatDet)] = measureCodec(simpleCodecSpec("nat_det"));
  mine.codec[static_cast<int>(CodecId::Dither)] = measureCodec(dither);
  mine.codec[static_cast<int>(CodecId::TopK)] = mine.codec[static_cast<int>(CodecId::Nat)];

  std::vector<char> bytes(sizeof(CostModel));
  std::memcpy(bytes.data(), &mine, sizeof(mine));
  CC_CHECK(store.trySet("cc/cost/" + std::to_string(comm.rank), bytes));
  *model = mine;
  for (int peer = 0; peer < comm.nranks; ++peer) {
    std::vector<char> theirs;
    CC_CHECK(store.tryGet("cc/cost/" + std::to_string(peer), &theirs));
    if (theirs.size() != sizeof(CostModel)) {
      return setError(CC_REMOTE_ERROR, "rank %d published a %zu-byte cost model, expected %zu", peer,
                      theirs.size(), sizeof(CostModel));
    }
    CostModel other;
    std::memcpy(&other, theirs.data(), sizeof(other));
    if (peer == 0) *model = other;
    model->link.latency = std::max(model->link.latency, other.link.latency);
    model->link.perMessage = std::max(model->link.perMessage, other.link.perMessage);
    model->link.bytesPerSecond = std::min(model->link.bytesPerSecond, other.link.bytesPerSecond);
    for (int a = 0; a < 3; ++a) {
      model->fixedSeconds[a] = std::max(model->fixedSeconds[a], other.fixedSeconds[a]);
      model->burstCalibrationSeconds[a] =
          std::max(model->burstCalibrationSeconds[a], other.burstCalibrationSeconds[a]);
      model->rateCalibrationSeconds[a] = std::max(model->rateCalibrationSeconds[a], other.rateCalibrationSeconds[a]);
    }
    for (int f = 0; f < kCodecFamilies; ++f) {
      CodecCosts& agreed = model->codec[f];
      agreed.encode = std::max(agreed.encode, other.codec[f].encode);
      agreed.decode = std::max(agreed.decode, other.codec[f].decode);
      agreed.decodeAccumulate = std::max(agreed.decodeAccumulate, other.codec[f].decodeAccumulate);
      agreed.fused = std::max(agreed.fused, other.codec[f].fused);
    }
  }
  // Every rank fits the same agreed figures alike, so the fits agree too.
  const AlgoId algos[3] = {AlgoId::Ring, AlgoId::Direct, AlgoId::Tree};
  for (int a = 0; a < 3; ++a) {
    fitLinkUse(model, algos[a], MeasuredCall{shapes.burst, model->burstCalibrationSeconds[a]},
               MeasuredCall{shapes.rate, model->rateCalibrationSeconds[a]});
  }
  return CC_SUCCESS;
}

}  // namespace

cc_result_t commInit(cc_comm_t* out, int nranks, const cc_unique_id_t& id, int rank,
                     const cc_config_t* userConfig) {
  auto comm = std::make_unique<cc_comm>();
  comm->rank = rank;
  comm->nranks = nranks;
  CC_CHECK(resolveConfig(userConfig, &comm->config));
  const ResolvedConfig& config = comm->config;
  comm->openedWith = config.algo;
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

  const bool mayUseDirectOrTree =
      config.algo == AlgoId::Auto || config.algo == AlgoId::Direct || config.algo == AlgoId::Tree;
  if (nranks > 1) {
    const size_t slotBytes = kFrameHeaderBytes + config.chunkBytes;
    CC_CHECK(comm->transport->openSend((rank + 1) % nranks, kRingTag, slotBytes, kSlotsPerChannel,
                                       &comm->toNext));
    CC_CHECK(comm->transport->openRecv((rank + nranks - 1) % nranks, kRingTag, slotBytes,
                                       kSlotsPerChannel, &comm->fromPrev));
    if (mayUseDirectOrTree) {
      CC_CHECK(openAlgorithmChannels(*comm->transport, rank, nranks, config.chunkBytes, &comm->channels));
    }
    if (config.algo == AlgoId::Auto && config.checkCalls) {
      CC_CHECK(comm->transport->openSend((rank + 1) % nranks, kAnnounceTag, kAnnounceSlotBytes, kAnnounceSlots,
                                         &comm->announceToNext));
      CC_CHECK(comm->transport->openRecv((rank + nranks - 1) % nranks, kAnnounceTag, kAnnounceSlotBytes,
                                         kAnnounceSlots, &comm->announceFromPrev));
    }
  }
  // Every receive slot is registered before anyone sends into it.
  CC_CHECK(store->barrier("cc/init/ready"));
#ifdef CC_HAVE_CUDA
  CC_CHECK(deviceInit(comm.get(), *store, setup));
#endif
  if (nranks > 1 && config.algo == AlgoId::Auto) {
    CC_CHECK(measureCostModel(*store, *comm, &comm->costModel));
    // The timing calls ran on every rank alike; the user's first collective is #0.
    comm->collectiveSeq = 0;
    const LinkCosts& link = comm->costModel.link;
    const double* fixed = comm->costModel.fixedSeconds;
    const double* burst = comm->costModel.burstBytes;
    const double* share = comm->costModel.linkShare;
    CC_INFO("rank %d: auto's model: latency %.1f us, %.1f us per message, %.3f GB/s; bursts ring %.0f, direct %.0f, "
            "tree %.0f KiB; link shares ring %.2f, direct %.2f, tree %.2f; minimal call ring %.1f us, "
            "direct %.1f us, tree %.1f us",
            rank, link.latency * 1e6, link.perMessage * 1e6, link.bytesPerSecond * 1e-9, burst[0] / 1024,
            burst[1] / 1024, burst[2] / 1024, share[0], share[1], share[2], fixed[0] * 1e6, fixed[1] * 1e6,
            fixed[2] * 1e6);
  }
  CC_INFO("rank %d/%d ready: codec %s (%s), algorithm %s, transport %s via %s, chunk %zu bytes, "
          "seed %llu",
          rank, nranks, config.codec.canonical.c_str(), natImplementationName(), algoName(config.algo),
          transportName(config.transport), store->localAddressString().c_str(), config.chunkBytes,
          static_cast<unsigned long long>(comm->seed));
  *out = comm.release();
  return CC_SUCCESS;
}

namespace {

constexpr size_t kTensorAlignmentValues = kBlockValues;

// Where each tensor of a fused call starts: block-aligned, so that codec
// blocks never straddle two tensors.
std::vector<size_t>& fusedOffsets(cc_comm_t comm, const TensorCall* tensors, size_t ntensors) {
  std::vector<size_t>& offsets = comm->scratch.offsets;
  offsets.assign(1, 0);
  for (size_t t = 0; t < ntensors; ++t) {
    size_t end = offsets.back() + tensors[t].count;
    if (t + 1 < ntensors) end = (end + kTensorAlignmentValues - 1) / kTensorAlignmentValues * kTensorAlignmentValues;
    offsets.push_back(end);
  }
  return offsets;
}

cc_result_t specFor(cc_comm_t comm, const char* specText, SpecCodecs** out) {
  const std::string key = specText == nullptr ? std::string() : std::string(specText);
  auto it = comm->specs.find(key);
  if (it == comm->specs.end()) {
    auto codecs = std::make_unique<SpecCodecs>();
    if (key.empty()) {
      codecs->spec = comm->config.codec;
    } else {
      CC_CHECK(parseCodecSpec(key, &codecs->spec));
    }
    if (codecs->spec.selector == Selector::RandK && codecs->spec.isDither() &&
        codecs->spec.scope != Scope::Bucket) {
      return setError(CC_UNSUPPORTED,
                      "codec spec '%s': randk composes with dithering of bucket scope only (the "
                      "norm's scope would be the compacted vector)",
                      codecs->spec.canonical.c_str());
    }
    it = comm->specs.emplace(key, std::move(codecs)).first;
  }
  *out = it->second.get();
  return CC_SUCCESS;
}

cc_result_t blockCodec(SpecCodecs& codecs, cc_datatype_t datatype, cc_red_op_t op, const Codec** out) {
  std::unique_ptr<Codec>& codec = codecs.block[datatype][op];
  if (!codec) codec = makeBlockCodec(codecs.spec, datatype, op);
  if (!codec) return addErrorContext(CC_INTERNAL_ERROR, "no codec for %s %s", datatypeName(datatype), opName(op));
  *out = codec.get();
  return CC_SUCCESS;
}

cc_result_t vectorCodec(SpecCodecs& codecs, const VectorCodec** out) {
  if (!codecs.vector) codecs.vector = makeVectorCodec(codecs.spec);
  if (!codecs.vector) return addErrorContext(CC_INTERNAL_ERROR, "no whole-vector codec for %s", codecs.spec.canonical.c_str());
  *out = codecs.vector.get();
  return CC_SUCCESS;
}

template <typename T>
T* grow(std::vector<T>& buffer, size_t size) {
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

// Whether direct and tree can carry a call: they sum in float32, so SUM or
// AVG of a type whose packed form the float32 codec shares (any compressed
// float type; float32 when exact). Other exact reductions run on ring.
bool float32SumPath(cc_datatype_t datatype, cc_red_op_t op, bool compresses) {
  return (op == CC_SUM || op == CC_AVG) && (compresses || datatype == CC_FLOAT32);
}

// The algorithm a spec runs on before the call's size is known;
// CC_UNSUPPORTED names the ones that can. Auto stays Auto here.
cc_result_t checkAlgorithm(const CodecSpec& spec, bool compresses, AlgoId requested, AlgoId* out) {
  const bool chunked = !compresses || spec.hopReencodable();
  if (!chunked && requested != AlgoId::Auto && requested != AlgoId::Allgather) {
    return setError(CC_UNSUPPORTED,
                    "codec spec '%s' cannot run on %s: %s; algorithms that can: allgather "
                    "(CC_ALGO=allgather or auto)",
                    spec.canonical.c_str(), algoName(requested),
                    spec.selector == Selector::TopK
                        ? "chunks would have to carry the growing union of the ranks' indices"
                        : "its norm spans a whole tensor or model, more than a chunk");
  }
  *out = chunked ? requested : AlgoId::Allgather;
  return CC_SUCCESS;
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

// The call as auto's cost model sees it.
CallShape callShape(cc_comm_t comm, const Prims& prims, const CollectiveArgs& args) {
  CallShape call;
  call.nranks = comm->nranks;
  call.count = args.count;
  call.worker = args.codec->id();
  call.master = args.masterF32Codec->id();
  constexpr size_t kProbeValues = 1 << 16;
  call.workerBytesPerValue = static_cast<double>(args.codec->packedBytes(kProbeValues)) / kProbeValues;
  call.masterBytesPerValue = static_cast<double>(args.masterF32Codec->packedBytes(kProbeValues)) / kProbeValues;
  call.ringChunkValues = prims.chunkValues(comm->toNext->slotBytes());
  call.directChunkValues = prims.chunkValuesBothStages(comm->channels.directSlotBytes);
  call.treeChunkValues = prims.chunkValues(comm->channels.treeSlotBytes);
  return call;
}

// The primitives' view of one run as the next collective of `comm`.
cc_result_t collectiveArgs(cc_comm_t comm, SpecCodecs& codecs, bool compresses, const AlgorithmRun& run,
                           CollectiveArgs* out) {
  const Codec* codec = nullptr;
  CC_CHECK(blockCodec(codecs, run.datatype, run.op, &codec));
  const Codec* f32Codec = nullptr;
  CC_CHECK(blockCodec(codecs, CC_FLOAT32, run.op, &f32Codec));
  CollectiveArgs args{run.input, run.output, run.count, run.datatype, run.op, codec,
                      comm->seed, comm->collectiveSeq, comm->rank, comm->nranks};
  args.specHash = compresses ? codecs.spec.hash : 0;
  args.residual = run.residual;
  args.f32Codec = f32Codec;
  args.masterF32Codec = f32Codec;
  args.masterSpecHash = args.specHash;
  if (compresses && comm->config.hasMasterCodec) {
    SpecCodecs* master = nullptr;
    CC_CHECK(specFor(comm, comm->config.masterCodec.canonical.c_str(), &master));
    CC_CHECK(blockCodec(*master, CC_FLOAT32, run.op, &args.masterF32Codec));
    args.masterSpecHash = master->spec.hash;
  }
  *out = args;
  return CC_SUCCESS;
}

// The algorithm's own part of runAlgorithm, once `algo` is known.
cc_result_t runChosenAlgorithm(cc_comm_t comm, SpecCodecs& codecs, AlgoId algo, const AlgorithmRun& run,
                               const CollectiveArgs& args, Prims& prims, float* chunkSums);

// auto's algorithm for `call` (docs/algorithms.md, "Trials" and "Watch");
// `trial` is set where the call's time counts: in its kind's trials, which
// recordTrial takes, or once settled in its watch, which recordWatch takes.
AlgoId autoChoice(cc_comm_t comm, const CallShape& call, const CollectiveArgs& args, AutoTrials** trial);
cc_result_t recordTrial(cc_comm_t comm, AutoTrials* trial, double seconds);
cc_result_t recordWatch(cc_comm_t comm, AutoTrials* trial, AlgoId ran, uint64_t seq, double seconds);

cc_result_t runAlgorithm(cc_comm_t comm, SpecCodecs& codecs, AlgoId algo, bool compresses, const AlgorithmRun& run) {
  CollectiveArgs args;
  CC_CHECK(collectiveArgs(comm, codecs, compresses, run, &args));

  // direct and tree sum in float32: other exact reductions stay on ring.
  const bool float32Sums = float32SumPath(run.datatype, run.op, compresses);
  if (!float32Sums && algo != AlgoId::Ring) algo = AlgoId::Ring;
  AutoTrials* trial = nullptr;
  if (algo == AlgoId::Auto) {
    const Prims sizing(args);
    const CallShape call = callShape(comm, sizing, args);
    algo = autoChoice(comm, call, args, &trial);
    if (logLevel() >= LogLevel::Info && comm->rank == 0 && comm->autoLogged.size() < 64 &&
        comm->autoLogged.emplace(call.count, call.worker).second) {
      CC_INFO("auto: %zu values of %s: predicted ring %.1f us, direct %.1f us, tree %.1f us: model picks %s, "
              "runs %s%s",
              call.count, codecName(call.worker), estimateSeconds(comm->costModel, call, AlgoId::Ring) * 1e6,
              estimateSeconds(comm->costModel, call, AlgoId::Direct) * 1e6,
              estimateSeconds(comm->costModel, call, AlgoId::Tree) * 1e6,
              algoName(cheapestAlgorithm(comm->costModel, call)), algoName(algo), trial ? " (a trial)" : "");
    }
  }
  float* chunkSums = nullptr;
  if (algo == AlgoId::Direct || algo == AlgoId::Tree) {
    if (!comm->channels.open) {
      return setError(CC_INTERNAL_ERROR, "%s channels were not opened at init (algorithm %s)", algoName(algo),
                      algoName(comm->config.algo));
    }
    const Prims sizing(args);
    const size_t chunk = std::max(sizing.chunkValues(comm->channels.treeSlotBytes),
                                  sizing.chunkValuesBothStages(comm->channels.directSlotBytes));
    chunkSums = grow(comm->scratch.chunkSums, 2 * chunk);
    args.masterScratch = chunkSums + chunk;
  }
  ++comm->collectiveSeq;
  Prims prims(args);
  comm->lastAlgorithm = algoName(algo);
  const bool autoChose = comm->config.algo == AlgoId::Auto;
  if (autoChose && comm->config.checkCalls && comm->announceFromPrev != nullptr) {
    prims.expectAnnouncement(*comm->announceFromPrev, (comm->rank + comm->nranks - 1) % comm->nranks,
                             algoName(algo), comm->announceToNext.get());
  }
  const double start = nowSeconds();
  cc_result_t result = runChosenAlgorithm(comm, codecs, algo, run, args, prims, chunkSums);
  if (result == CC_TIMEOUT && autoChose && !comm->config.checkCalls) {
    return addErrorContext(result,
                           "auto ran %s; ranks whose calls differ (count, datatype, op or spec) may choose "
                           "different algorithms and wait for each other: CC_CHECK_CALLS=1 names such a "
                           "disagreement at once",
                           algoName(algo));
  }
  CC_CHECK(result);
  CC_CHECK(prims.settleAnnouncement());
  if (trial != nullptr && trial->settled == AlgoId::Auto) {
    ++comm->autoTrialCalls;
    CC_CHECK(recordTrial(comm, trial, nowSeconds() - start));
  } else if (trial != nullptr) {
    if (trial->watch.stage == WatchStage::Challenger) ++comm->autoChallengeCalls;
    CC_CHECK(recordWatch(comm, trial, algo, args.collectiveSeq, nowSeconds() - start));
  }
  comm->autoTrialsPending = trial != nullptr && trial->settled == AlgoId::Auto;
  return CC_SUCCESS;
}

AlgoId autoChoice(cc_comm_t comm, const CallShape& call, const CollectiveArgs& args, AutoTrials** trial) {
  *trial = nullptr;
  if (comm->config.autoTrials == 0) return cheapestAlgorithm(comm->costModel, call);
  const int sizeClass = call.count == 0 ? -1 : 63 - __builtin_clzll(static_cast<unsigned long long>(call.count));
  const AutoCallKind kind{args.specHash, args.masterSpecHash, static_cast<int>(args.datatype),
                          static_cast<int>(args.op), sizeClass};
  auto [it, added] = comm->autoTrials.try_emplace(kind);
  AutoTrials& trials = it->second;
  if (added) {
    trials.plan = planAutoTrials(comm->costModel, call, comm->config.autoTrials);
    char name[96];
    std::snprintf(name, sizeof(name), "%s %s, %llu to %llu values", codecName(call.worker),
                  datatypeName(args.datatype), sizeClass < 0 ? 0ull : 1ull << sizeClass,
                  sizeClass < 0 ? 0ull : (2ull << sizeClass) - 1);
    trials.kindName = name;
  }
  // Where the model is sure (no other algorithm within the factor), it keeps
  // deciding call by call.
  if (trials.plan.candidateCount == 1) return cheapestAlgorithm(comm->costModel, call);
  *trial = &trials;
  if (trials.settled != AlgoId::Auto) {
    return trials.watch.stage == WatchStage::Challenger ? trials.watch.runnerUp : trials.settled;
  }
  return trials.plan.candidates[trials.plan.candidateOfBlock(trials.block)];
}

// Every rank decides alike on the slowest rank's times: one exact ring call
// (MAX) of this rank's `own` into `agreed`.
cc_result_t agreeOnSlowest(cc_comm_t comm, const double* own, double* agreed, size_t count, const char* what) {
  SpecCodecs* exact = nullptr;
  CC_CHECK(specFor(comm, "none", &exact));
  const size_t offsets[2] = {0, count};
  const AlgorithmRun run{own, agreed, count, CC_FLOAT64, CC_MAX, nullptr, TensorLayout{count, offsets, 1}};
  const std::string autoRan = comm->lastAlgorithm;
  const cc_result_t result = runAlgorithm(comm, *exact, AlgoId::Ring, false, run);
  comm->lastAlgorithm = autoRan;
  return result == CC_SUCCESS ? result : addErrorContext(result, "agreeing on %s", what);
}

// The next window of the watch: enough timed calls of `callSeconds` to span `span`.
void beginWindow(AutoWatch& watch, double span, double callSeconds) {
  watch.timedCalls = watchWindowCalls(span, callSeconds);
  watch.timedLeft = watch.timedCalls;
  watch.ownSeconds = 0;
}

cc_result_t recordTrial(cc_comm_t comm, AutoTrials* trial, double seconds) {
  const AutoTrialPlan& plan = trial->plan;
  if (trial->callInBlock > 0) trial->blockSeconds += seconds;
  if (++trial->callInBlock < plan.callsOfBlock(trial->block)) return CC_SUCCESS;
  trial->ownBlockSeconds.push_back(trial->blockSeconds / plan.timedCalls[plan.candidateOfBlock(trial->block)]);
  trial->blockSeconds = 0;
  trial->callInBlock = 0;
  if (++trial->block < plan.blockCount()) return CC_SUCCESS;
  const size_t count = trial->ownBlockSeconds.size();
  std::vector<double> agreed(count);
  CC_CHECK(agreeOnSlowest(comm, trial->ownBlockSeconds.data(), agreed.data(), count, "auto's trial times"));
  trial->settled = fastestInTrials(plan, agreed.data());
  AutoWatch& watch = trial->watch;
  watch.runnerUp = runnerUpInTrials(plan, agreed.data(), trial->settled);
  for (int c = 0; c < plan.candidateCount; ++c) {
    const double seconds = candidateSeconds(plan, agreed.data(), c);
    if (plan.candidates[c] == trial->settled) watch.settledSeconds = seconds;
    if (plan.candidates[c] == watch.runnerUp) watch.runnerUpSeconds = seconds;
  }
  watch.windowSpan = comm->autoWatchFirstWindowSeconds;
  beginWindow(watch, watch.windowSpan, watch.settledSeconds);
  if (logLevel() >= LogLevel::Info && comm->rank == 0) {
    std::string means;
    for (int c = 0; c < plan.candidateCount; ++c) {
      char text[64];
      std::snprintf(text, sizeof(text), "%s%s %.1f us (%d calls; blocks", c ? ", " : "", algoName(plan.candidates[c]),
                    candidateSeconds(plan, agreed.data(), c) * 1e6, plan.timedCalls[c]);
      means += text;
      for (int block = c; block < plan.blockCount(); block += plan.candidateCount) {
        std::snprintf(text, sizeof(text), " %.0f", agreed[block] * 1e6);
        means += text;
      }
      means += ")";
    }
    CC_INFO("auto: %s: mean call over its blocks: %s: settles on %s", trial->kindName.c_str(), means.c_str(),
            algoName(trial->settled));
  }
  return CC_SUCCESS;
}

cc_result_t recordWatch(cc_comm_t comm, AutoTrials* trial, AlgoId ran, uint64_t seq, double seconds) {
  AutoWatch& watch = trial->watch;
  // A call right after another collective (another algorithm, another kind,
  // the watch's own agreement, a caller's barrier) absorbs what that left in
  // flight or idle, as a trial block's first call does: it does not count.
  // A benchmark that takes turns between algorithms on one communicator
  // would otherwise charge the first call of each of auto's rounds, after
  // other algorithms left their connections idle, to auto's windows.
  const bool follows = ran == watch.previousAlgo && seq == watch.previousSeq + 1;
  watch.previousSeq = seq;
  watch.previousAlgo = ran;
  if (!follows) return CC_SUCCESS;
  watch.ownSeconds += seconds;
  if (--watch.timedLeft > 0) return CC_SUCCESS;
  const double own = watch.ownSeconds / watch.timedCalls;
  double agreed = 0;
  CC_CHECK(agreeOnSlowest(comm, &own, &agreed, 1, "auto's watch window"));
  switch (watch.stage) {
    case WatchStage::Settled:
      if (!shouldChallenge(agreed, watch.runnerUpSeconds)) {
        watch.settledSeconds = agreed;
        const double longestOverFirst = kWatchLongestWindowSeconds / kWatchFirstWindowSeconds;
        watch.windowSpan = std::min(2 * watch.windowSpan, longestOverFirst * comm->autoWatchFirstWindowSeconds);
        beginWindow(watch, watch.windowSpan, watch.settledSeconds);
        return CC_SUCCESS;
      }
      watch.settledBeforeSeconds = agreed;
      watch.stage = WatchStage::Challenger;
      beginWindow(watch, comm->autoWatchFirstWindowSeconds, watch.runnerUpSeconds);
      return CC_SUCCESS;
    case WatchStage::Challenger:
      watch.challengerSeconds = agreed;
      watch.stage = WatchStage::SettledAgain;
      beginWindow(watch, comm->autoWatchFirstWindowSeconds, watch.settledSeconds);
      return CC_SUCCESS;
    case WatchStage::SettledAgain: {
      const AlgoId was = trial->settled;
      const bool switches = challengerWins(watch.settledBeforeSeconds, watch.challengerSeconds, agreed);
      if (logLevel() >= LogLevel::Info && comm->rank == 0) {
        CC_INFO("auto: %s: %s's calls took %.1f us, over %.2fx %s's latest %.1f us: %s then took %.1f us and %s "
                "%.1f us: %s %s",
                trial->kindName.c_str(), algoName(was), watch.settledBeforeSeconds * 1e6, kChallengeFactor,
                algoName(watch.runnerUp), watch.runnerUpSeconds * 1e6, algoName(watch.runnerUp),
                watch.challengerSeconds * 1e6, algoName(was), agreed * 1e6,
                switches ? "switches to" : "keeps", algoName(switches ? watch.runnerUp : was));
      }
      ++comm->autoChallenges;
      if (switches) {
        trial->settled = watch.runnerUp;
        watch.runnerUp = was;
        watch.settledSeconds = watch.challengerSeconds;
        watch.runnerUpSeconds = agreed;
        ++comm->autoSwitches;
      } else {
        watch.settledSeconds = agreed;
        watch.runnerUpSeconds = watch.challengerSeconds;
      }
      watch.stage = WatchStage::Settled;
      watch.windowSpan = comm->autoWatchFirstWindowSeconds;
      beginWindow(watch, watch.windowSpan, watch.settledSeconds);
      return CC_SUCCESS;
    }
  }
  return CC_SUCCESS;
}

cc_result_t runChosenAlgorithm(cc_comm_t comm, SpecCodecs& codecs, AlgoId algo, const AlgorithmRun& run,
                               const CollectiveArgs& args, Prims& prims, float* chunkSums) {
  const RingChannels channels{comm->toNext.get(), comm->fromPrev.get()};
  if (algo == AlgoId::Ring) return ringAllreduce(prims, args, channels);
  const AlgorithmChannels& open = comm->channels;
  if (algo == AlgoId::Direct) {
    const DirectChannels direct{open.directSlotBytes, open.shardToView.data(), open.shardFromView.data(),
                                open.sumToView.data(),  open.sumFromView.data(),  open.sumToOthers.data()};
    return directAllreduce(prims, args, direct, chunkSums);
  }
  if (algo == AlgoId::Tree) {
    TreeChannels tree{};
    tree.slotBytes = open.treeSlotBytes;
    for (int t = 0; t < 2; ++t) {
      tree.up[t] = open.treeUp[t].get();
      tree.down[t] = open.treeDown[t].get();
      for (int c = 0; c < 2; ++c) {
        tree.fromChild[t][c] = open.treeFromChild[t][c].get();
        tree.toChild[t][c] = open.treeToChild[t][c].get();
      }
    }
    return treeAllreduce(prims, args, open.trees, tree, chunkSums);
  }
  if (codecs.spec.selector == Selector::TopK && run.count > 0xffffffffull) {
    return setError(CC_UNSUPPORTED, "topk carries 32-bit indices: a call of %zu values is too large; split it",
                    run.count);
  }
  const VectorCodec* vector = nullptr;
  CC_CHECK(vectorCodec(codecs, &vector));
  CallScratch& scratch = comm->scratch;
  // The codec reads float32 p = x + e and the sum is float32: float32 calls
  // without a residual use the user's buffers as they are (the input is
  // encoded before the sum is written, so in place works too).
  const ElementType type = elementTypeOf(run.datatype);
  const bool direct = type == ElementType::F32;
  const float* values = static_cast<const float*>(run.input);
  if (!direct || run.residual != nullptr) {
    float* p = grow(scratch.vectorValues, run.count);
    for (size_t i = 0; i < run.count; ++i) {
      p[i] = loadFloat(type, run.input, i) + (run.residual ? run.residual[i] : 0.0f);
    }
    values = p;
  }
  VectorCall call;
  call.codec = vector;
  call.layout = run.layout;
  call.values = values;
  call.residual = run.residual;
  call.sum = direct ? static_cast<float*>(run.output) : grow(scratch.vectorSum, run.count);
  const size_t encoded = vector->encodedBytes(run.layout);
  call.encodings = grow(scratch.encodings, encoded * static_cast<size_t>(comm->nranks));
  CC_CHECK(allgatherAllreduce(prims, args, channels, call));
  if (!direct) {
    for (size_t i = 0; i < run.count; ++i) storeFloat(type, run.output, i, call.sum[i]);
  }
  return CC_SUCCESS;
}

cc_result_t measureAlgorithmCalls(cc_comm& comm, CostModel* mine, CalibrationShapes* shapes) {
  SpecCodecs* codecs = nullptr;
  CC_CHECK(specFor(&comm, "nat", &codecs));
  const AlgoId algos[3] = {AlgoId::Ring, AlgoId::Direct, AlgoId::Tree};
  // Per algorithm, the mean of `rounds` x `timed` calls of `count` values
  // without their slowest and fastest eighths. The algorithms take turns by
  // rounds, so a spell of load on a shared host hits them alike; within a
  // round each first runs an untimed call, which absorbs what the previous
  // algorithm left in flight (credits, the engine's queues). A mean, because
  // on a loaded host call times are bimodal (minimal calls on 4 emulated
  // hosts sharing 2 cores: about 1 ms or about 4.5 ms, a scheduler slice,
  // a third to three fifths of ring's in the slow one), so a median jumps
  // between the modes from one communicator to the next, and what a run of
  // calls costs is their mean; trimmed, because a rare stall of 10 ms and
  // more would move it.
  auto timeCalls = [&](size_t count, int rounds, int timed, double seconds[3]) -> cc_result_t {
    std::vector<float> input(count, 1.0f), output(count);
    const size_t offsets[2] = {0, count};
    AlgorithmRun run{input.data(), output.data(), count, CC_FLOAT32, CC_SUM, nullptr, TensorLayout{count, offsets, 1}};
    std::vector<double> times[3];
    for (int round = 0; round < rounds; ++round) {
      for (int a = 0; a < 3; ++a) {
        for (int i = 0; i <= timed; ++i) {
          const double start = nowSeconds();
          cc_result_t result = runAlgorithm(&comm, *codecs, algos[a], true, run);
          if (result != CC_SUCCESS) {
            return addErrorContext(result, "timing %s at init (%zu values)", algoName(algos[a]), count);
          }
          if (i > 0) times[a].push_back(nowSeconds() - start);
        }
      }
    }
    for (int a = 0; a < 3; ++a) {
      std::sort(times[a].begin(), times[a].end());
      const size_t trimmed = times[a].size() / 8;
      const size_t kept = times[a].size() - 2 * trimmed;
      seconds[a] = std::accumulate(times[a].begin() + trimmed, times[a].end() - trimmed, 0.0) / kept;
    }
    return CC_SUCCESS;
  };
  CC_CHECK(timeCalls(1024, 8, 3, mine->fixedSeconds));
  CC_CHECK(timeCalls(kBurstCalibrationValues, 5, 2, mine->burstCalibrationSeconds));
  CC_CHECK(timeCalls(kRateCalibrationValues, 5, 2, mine->rateCalibrationSeconds));
  auto shapeOf = [&](size_t count, CallShape* shape) -> cc_result_t {
    std::vector<float> values(1);
    const size_t offsets[2] = {0, count};
    const AlgorithmRun shapeOnly{values.data(), values.data(), count, CC_FLOAT32, CC_SUM,
                                 nullptr, TensorLayout{count, offsets, 1}};
    CollectiveArgs args;
    CC_CHECK(collectiveArgs(&comm, *codecs, true, shapeOnly, &args));
    const Prims sizing(args);
    *shape = callShape(&comm, sizing, args);
    return CC_SUCCESS;
  };
  CC_CHECK(shapeOf(kBurstCalibrationValues, &shapes->burst));
  return shapeOf(kRateCalibrationValues, &shapes->rate);
}

// Random sparsification with a mask every rank draws alike from the shared
// seed: the kept values are gathered (scaled by d/q) into a dense vector that
// the inner quantizer reduces position-wise; no indices travel.
cc_result_t runRandK(cc_comm_t comm, SpecCodecs& codecs, AlgoId algo, const AlgorithmRun& run) {
  CallScratch& scratch = comm->scratch;
  const CodecSpec& spec = codecs.spec;
  const ElementType type = elementTypeOf(run.datatype);
  const float scale = static_cast<float>(1.0 / spec.ratio);
  uint64_t* kept = grow(scratch.kept, run.count);
  const size_t keptCount = randkKeptPositions(comm->seed, comm->collectiveSeq, spec.ratio, run.count, kept);
  float* compact = grow(scratch.compact, keptCount);
  for (size_t j = 0; j < keptCount; ++j) {
    const size_t i = kept[j];
    compact[j] = (loadFloat(type, run.input, i) + (run.residual ? run.residual[i] : 0.0f)) * scale;
  }
  float* compactResidual = nullptr;
  if (run.residual != nullptr) {
    compactResidual = grow(scratch.compactResidual, keptCount);
    std::memset(compactResidual, 0, keptCount * sizeof(float));
  }
  const size_t offsets[2] = {0, keptCount};
  AlgorithmRun inner{compact, compact, keptCount, CC_FLOAT32, run.op, compactResidual, TensorLayout{keptCount, offsets, 1}};
  if (keptCount != 0 && comm->nranks > 1) {
    CC_CHECK(runAlgorithm(comm, codecs, algo, true, inner));
  } else {
    ++comm->collectiveSeq;
  }
  // Scatter. Per position the residual is read before the output is written,
  // so in-place calls work. A kept value entered the sum as scale * p: what
  // this rank lost there is p - scale * p plus the inner encodes' loss.
  if (run.residual == nullptr) {
    std::memset(run.output, 0, run.count * elementBytes(type));
    for (size_t j = 0; j < keptCount; ++j) storeFloat(type, run.output, kept[j], compact[j]);
    return CC_SUCCESS;
  }
  size_t j = 0;
  for (size_t i = 0; i < run.count; ++i) {
    const bool isKept = j < keptCount && kept[j] == i;
    const float p = loadFloat(type, run.input, i) + run.residual[i];
    run.residual[i] = isKept ? p - scale * p + compactResidual[j] : p;
    storeFloat(type, run.output, i, isKept ? compact[j] : 0.0f);
    if (isKept) ++j;
  }
  return CC_SUCCESS;
}

// out = x + e rounded to the user's type; e keeps the rounding. What an
// encode that loses nothing leaves behind (one rank, or an exact spec).
void foldResidual(ElementType type, const void* input, float* residual, size_t count, void* out) {
  for (size_t i = 0; i < count; ++i) {
    const float p = loadFloat(type, input, i) + residual[i];
    storeFloat(type, out, i, p);
    residual[i] = p - loadFloat(type, out, i);
  }
}

// A one-rank collective: the input, with the residual folded in.
void runSingleRank(const AlgorithmRun& run, size_t elementSize) {
  if (run.residual == nullptr || !isFloatType(run.datatype)) {
    if (run.output != run.input) std::memcpy(run.output, run.input, run.count * elementSize);
    return;
  }
  foldResidual(elementTypeOf(run.datatype), run.input, run.residual, run.count, run.output);
}

}  // namespace

cc_result_t commSpec(cc_comm_t comm, const char* specText, const CodecSpec** spec) {
  std::lock_guard<std::mutex> lock(comm->callMutex);
  SpecCodecs* codecs = nullptr;
  CC_CHECK(specFor(comm, specText, &codecs));
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
  SpecCodecs* codecs = nullptr;
  CC_CHECK(specFor(comm, specText, &codecs));
  const CodecSpec& spec = codecs->spec;
  const bool compresses = specCompresses(spec, datatype, op);
  AlgoId algo = AlgoId::Ring;
  CC_CHECK(checkAlgorithm(spec, compresses, comm->config.algo, &algo));
  bool anyResidual = false;
  for (size_t t = 0; t < ntensors; ++t) anyResidual |= tensors[t].residual != nullptr;
  if (compresses && !spec.unbiased() && !anyResidual && !codecs->loggedBiased) {
    codecs->loggedBiased = true;
    CC_INFO("codec %s is biased and runs without error feedback (pass a cc_residual_t to "
            "compressed_allreduce_ex to restore convergence)",
            spec.canonical.c_str());
  }

  // The working vector: the user's buffers for one tensor, else the
  // concatenation of the tensors, each starting on a block boundary.
  const size_t elementSize = elementBytes(elementTypeOf(datatype));
  AlgorithmRun run{};
  run.datatype = datatype;
  run.op = op;
  std::vector<size_t>& offsets = fusedOffsets(comm, tensors, ntensors);
  const bool fused = ntensors > 1;
  CallScratch& scratch = comm->scratch;
  if (!fused) {
    run.input = tensors[0].sendbuf;
    run.output = tensors[0].recvbuf;
    run.count = tensors[0].count;
    run.residual = tensors[0].residual ? tensors[0].residual->values.data() : nullptr;
  } else {
    run.count = offsets.back();
    unsigned char* values = grow(scratch.fusedValues, run.count * elementSize);
    std::memset(values, 0, run.count * elementSize);
    float* residual = anyResidual ? grow(scratch.fusedResidual, run.count) : nullptr;
    if (residual) std::memset(residual, 0, run.count * sizeof(float));
    for (size_t t = 0; t < ntensors; ++t) {
      std::memcpy(values + offsets[t] * elementSize, tensors[t].sendbuf, tensors[t].count * elementSize);
      if (residual && tensors[t].residual) {
        std::memcpy(residual + offsets[t], tensors[t].residual->values.data(), tensors[t].count * sizeof(float));
      }
    }
    run.input = values;
    run.output = values;
    run.residual = residual;
  }
  run.layout = TensorLayout{run.count, offsets.data(), offsets.size() - 1};

  const uint64_t firstSeq = comm->collectiveSeq;
  cc_result_t result = CC_SUCCESS;
  if (comm->nranks == 1) {
    runSingleRank(run, elementSize);
    comm->lastAlgorithm = "none";
    ++comm->collectiveSeq;
  } else if (!compresses && run.residual != nullptr) {
    // An exact spec loses nothing: fold the residual into the input (rounded
    // to the user's type; the rounding stays behind) and reduce exactly.
    unsigned char* staging = fused ? static_cast<unsigned char*>(run.output) : grow(scratch.fusedValues, run.count * elementSize);
    foldResidual(elementTypeOf(datatype), run.input, run.residual, run.count, staging);
    AlgorithmRun exact = run;
    exact.input = staging;
    exact.residual = nullptr;
    result = runAlgorithm(comm, *codecs, algo, false, exact);
  } else if (compresses && spec.selector == Selector::RandK) {
    result = runRandK(comm, *codecs, algo, run);
  } else {
    result = runAlgorithm(comm, *codecs, algo, compresses, run);
  }
  if (result != CC_SUCCESS) {
    // A collective that failed half-way leaves peers waiting: break the links
    // so they fail now instead of at their timeout.
    comm->asyncError.store(result);
    comm->transport->abort();
    return addErrorContext(result, "compressed_allreduce #%llu (%zu x %s, %s, codec %s, %s) on rank %d",
                           static_cast<unsigned long long>(firstSeq), run.count, datatypeName(datatype),
                           opName(op), compresses ? spec.canonical.c_str() : "none",
                           // runAlgorithm names what auto resolved to
                           algo == AlgoId::Auto ? comm->lastAlgorithm.c_str() : algoName(algo), comm->rank);
  }
  if (fused) {
    const unsigned char* values = static_cast<const unsigned char*>(run.output);
    for (size_t t = 0; t < ntensors; ++t) {
      std::memcpy(tensors[t].recvbuf, values + offsets[t] * elementSize, tensors[t].count * elementSize);
      if (run.residual && tensors[t].residual) {
        std::memcpy(tensors[t].residual->values.data(), run.residual + offsets[t], tensors[t].count * sizeof(float));
      }
    }
  }
  return CC_SUCCESS;
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
  comm->config.algo = algo;
  comm->config.checkCalls = checkCalls;
  return CC_SUCCESS;
}

void commAbort(cc_comm_t comm) {
  comm->aborted.store(true);
  int expected = CC_SUCCESS;
  comm->asyncError.compare_exchange_strong(expected, CC_REMOTE_ERROR);
  if (comm->transport) comm->transport->abort();
#ifdef CC_HAVE_CUDA
  deviceAbort(comm);
#endif
}

}  // namespace cc
