#include "algo/auto/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "algo/algo.h"
#include "algo/call/collectives.h"
#include "algo/call/dispatch.h"
#include "base/clock.h"
#include "base/error.h"
#include "base/log.h"
#include "transports/rendezvous.h"

namespace cc {
namespace {

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
// cost of each further message in a burst, and the bandwidth of full slots
// (every slot of the channel filled once).
cc_result_t measureLink(SendChannel& toNext, RecvChannel& fromPrev, int slots, int rank, int nranks,
                        LinkCosts* out) {
  const int prev = (rank + nranks - 1) % nranks;
  auto exchange = [&](size_t bytes, int messages, double* elapsed) -> cc_result_t {
    auto receiveOne = [&]() -> cc_result_t {
      void* slot = nullptr;
      cc_result_t result = fromPrev.wait(&slot);
      if (result != CC_SUCCESS) return addErrorContext(result, "measuring the link from rank %d", prev);
      return fromPrev.release();
    };
    // A rank receives once it has as many messages out as the channel has
    // slots, so no rank waits for a slot its successor cannot free.
    const double start = nowSeconds();
    int received = 0;
    for (int m = 0; m < messages; ++m) {
      void* slot = nullptr;
      CC_CHECK(toNext.acquire(&slot));
      std::memset(slot, 0, std::min<size_t>(bytes, 64));
      CC_CHECK(toNext.post(bytes));
      if (m + 1 - received >= slots) {
        CC_CHECK(receiveOne());
        ++received;
      }
    }
    for (; received < messages; ++received) CC_CHECK(receiveOne());
    *elapsed = nowSeconds() - start;
    return CC_SUCCESS;
  };
  constexpr int kRounds = 7;
  std::vector<double> single, burst, bulk;
  // Bulk messages of at most 1 MiB: Gloo's tcp pair raises SO_SNDBUF to
  // its largest message, and on a slow link a larger send buffer queues
  // bursts that stalled later calls (ring calls of 256 KiB at 1 Gbit/s took
  // up to 27 ms instead of 3.3 after 2 MiB bulk messages).
  const size_t bulkBytes = std::min(toNext.slotBytes(), kFrameHeaderBytes + (size_t{1} << 20));
  const int bulkMessages = kSlotsPerChannel;
  double elapsed = 0;
  CC_CHECK(exchange(64, 1, &elapsed));  // warm-up: connections, first-touch
  CC_CHECK(exchange(bulkBytes, bulkMessages, &elapsed));
  for (int round = 0; round < kRounds; ++round) {
    CC_CHECK(exchange(64, 1, &elapsed));
    single.push_back(elapsed);
    CC_CHECK(exchange(64, kSlotsPerChannel, &elapsed));
    burst.push_back(elapsed);
  }
  for (int round = 0; round < 3; ++round) {
    CC_CHECK(exchange(bulkBytes, bulkMessages, &elapsed));
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
  out->bytesPerSecond = static_cast<double>(bulkBytes) * bulkMessages / bulkSeconds;

  return CC_SUCCESS;
}

// The cost of a message to or from another peer: every rank sends one small
// message to each peer and waits for one from each, on direct's shard
// channels (direct's pattern); each peer beyond the first costs a send and a
// receive, on another connection.
cc_result_t measureFanOut(const DirectChannels& channels, int rank, int nranks, double latency, double* perMessage) {
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

// The algorithms auto may pick on this communicator, in table order: those
// calibrated.
std::vector<AlgoId> candidates(const CollectiveState& state) {
  std::vector<AlgoId> ids;
  const unsigned available = availableAlgorithms(state);
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId id = static_cast<AlgoId>(i);
    if (findAlgorithm(id)->autoCandidate && (available & bitOf(id)) != 0) ids.push_back(id);
  }
  return ids;
}

// How the model sees the calls its bursts and shares are fitted to.
struct CalibrationShapes {
  CallShape burst;  // kBurstCalibrationValues
  CallShape rate;   // kRateCalibrationValues
};

// Times calls of nat float32 SUM on every candidate into `mine`'s
// fixedSeconds and calibration seconds.
cc_result_t measureAlgorithmCalls(CollectiveState& state, CostModel* mine, CalibrationShapes* shapes) {
  SpecCodecs* codecs = nullptr;
  CC_CHECK(state.specCodecs("nat", &codecs));
  const std::vector<AlgoId> algos = candidates(state);
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
  auto timeCalls = [&](size_t count, int rounds, int timed, double* seconds) -> cc_result_t {
    std::vector<float> input(count, 1.0f), output(count);
    const size_t offsets[2] = {0, count};
    AlgorithmRun run{input.data(), output.data(), count, CC_FLOAT32, CC_SUM, nullptr, TensorLayout{count, offsets, 1}};
    std::vector<std::vector<double>> times(algos.size());
    for (int round = 0; round < rounds; ++round) {
      for (size_t a = 0; a < algos.size(); ++a) {
        for (int i = 0; i <= timed; ++i) {
          const double start = nowSeconds();
          cc_result_t result = runAlgorithm(state, *codecs, algos[a], true, run);
          if (result != CC_SUCCESS) {
            return addErrorContext(result, "timing %s at init (%zu values)", algoName(algos[a]), count);
          }
          if (i > 0) times[a].push_back(nowSeconds() - start);
        }
      }
    }
    for (size_t a = 0; a < algos.size(); ++a) {
      std::sort(times[a].begin(), times[a].end());
      const size_t trimmed = times[a].size() / 8;
      const size_t kept = times[a].size() - 2 * trimmed;
      seconds[indexOf(algos[a])] = std::accumulate(times[a].begin() + trimmed, times[a].end() - trimmed, 0.0) / kept;
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
    CC_CHECK(collectiveArgs(state, *codecs, true, shapeOnly, &args));
    const Prims sizing(args);
    *shape = callShape(state, sizing, args, ~0u);
    return CC_SUCCESS;
  };
  CC_CHECK(shapeOf(kBurstCalibrationValues, &shapes->burst));
  return shapeOf(kRateCalibrationValues, &shapes->rate);
}

// "ring 1.0, direct 2.0, tree 3.0": one figure per candidate, for the INFO line.
std::string perCandidate(const CollectiveState& state, const double* figures, double scale, const char* format) {
  std::string text;
  for (AlgoId id : candidates(state)) {
    char figure[64];
    std::snprintf(figure, sizeof(figure), format, figures[indexOf(id)] * scale);
    text += (text.empty() ? "" : ", ") + std::string(algoName(id)) + " " + figure;
  }
  return text;
}

}  // namespace

size_t ringPayloadForLink(const LinkCosts& link, size_t slotPayloadBytes) {
  const double linkBytes = link.bytesPerSecond * kRingMessageSeconds;
  size_t payload = kMinRingPayloadBytes;
  while (static_cast<double>(2 * payload) <= linkBytes && 2 * payload < slotPayloadBytes) payload *= 2;
  return 2 * payload < slotPayloadBytes ? payload : 0;
}

cc_result_t calibrateCostModel(RendezvousStore& store, CollectiveState& state) {
  CostModel mine;
  CalibrationShapes shapes;
  CC_CHECK(measureAlgorithmCalls(state, &mine, &shapes));
  CC_CHECK(measureLink(*state.toNext, *state.fromPrev, kSlotsPerChannel, state.rank, state.nranks, &mine.link));
  if (const DirectChannels* direct = directChannelsOf(state.algorithmChannels[indexOf(AlgoId::Direct)].get())) {
    CC_CHECK(measureFanOut(*direct, state.rank, state.nranks, mine.link.latency, &mine.link.perMessage));
  }
  const CodecSpec& configured = state.settings.codec;
  const CodecSpec dither = configured.isDither() && configured.scope == Scope::Bucket ? configured
                                                                                      : simpleCodecSpec("dither_nat");
  mine.codec[static_cast<int>(CodecId::None)] = measureCodec(simpleCodecSpec("none"));
  mine.codec[static_cast<int>(CodecId::Nat)] = measureCodec(simpleCodecSpec("nat"));
  mine.codec[static_cast<int>(CodecId::NatDet)] = measureCodec(simpleCodecSpec("nat_det"));
  mine.codec[static_cast<int>(CodecId::Dither)] = measureCodec(dither);
  mine.codec[static_cast<int>(CodecId::TopK)] = mine.codec[static_cast<int>(CodecId::Nat)];

  std::vector<char> bytes(sizeof(CostModel));
  std::memcpy(bytes.data(), &mine, sizeof(mine));
  CC_CHECK(store.trySet("cc/cost/" + std::to_string(state.rank), bytes));
  CostModel& model = state.costModel;
  model = mine;
  for (int peer = 0; peer < state.nranks; ++peer) {
    std::vector<char> theirs;
    CC_CHECK(store.tryGet("cc/cost/" + std::to_string(peer), &theirs));
    if (theirs.size() != sizeof(CostModel)) {
      return setError(CC_REMOTE_ERROR, "rank %d published a %zu-byte cost model, expected %zu", peer,
                      theirs.size(), sizeof(CostModel));
    }
    CostModel other;
    std::memcpy(&other, theirs.data(), sizeof(other));
    if (peer == 0) model = other;
    model.link.latency = std::max(model.link.latency, other.link.latency);
    model.link.perMessage = std::max(model.link.perMessage, other.link.perMessage);
    model.link.bytesPerSecond = std::min(model.link.bytesPerSecond, other.link.bytesPerSecond);
    for (int a = 0; a < kMaxAlgorithms; ++a) {
      model.fixedSeconds[a] = std::max(model.fixedSeconds[a], other.fixedSeconds[a]);
      model.burstCalibrationSeconds[a] = std::max(model.burstCalibrationSeconds[a], other.burstCalibrationSeconds[a]);
      model.rateCalibrationSeconds[a] = std::max(model.rateCalibrationSeconds[a], other.rateCalibrationSeconds[a]);
    }
    for (int f = 0; f < kCodecFamilies; ++f) {
      CodecCosts& agreed = model.codec[f];
      agreed.encode = std::max(agreed.encode, other.codec[f].encode);
      agreed.decode = std::max(agreed.decode, other.codec[f].decode);
      agreed.decodeAccumulate = std::max(agreed.decodeAccumulate, other.codec[f].decodeAccumulate);
      agreed.fused = std::max(agreed.fused, other.codec[f].fused);
    }
  }
  // Every rank fits the same agreed figures alike, so the fits agree too.
  for (AlgoId id : candidates(state)) {
    const int a = indexOf(id);
    fitLinkUse(&model, id, MeasuredCall{shapes.burst, model.burstCalibrationSeconds[a]},
               MeasuredCall{shapes.rate, model.rateCalibrationSeconds[a]});
  }
  // The timing calls ran on every rank alike; the user's first collective is #0.
  state.collectiveSeq = 0;
  // An explicit CC_CHUNK_BYTES is the message size asked for.
  state.ringPayloadBytes = state.settings.chunkBytesGiven
                               ? 0
                               : ringPayloadForLink(model.link, state.toNext->slotBytes() - kFrameHeaderBytes);
  if (logLevel() >= LogLevel::Info) {
    const LinkCosts& link = model.link;
    CC_INFO("rank %d: auto's model: latency %.1f us, %.1f us per message, %.3f GB/s; bursts %s KiB; link shares %s; "
            "minimal call %s; ring messages of %zu KiB",
            state.rank, link.latency * 1e6, link.perMessage * 1e6, link.bytesPerSecond * 1e-9,
            perCandidate(state, model.burstBytes, 1.0 / 1024, "%.0f").c_str(),
            perCandidate(state, model.linkShare, 1.0, "%.2f").c_str(),
            perCandidate(state, model.fixedSeconds, 1e6, "%.1f us").c_str(),
            (state.ringPayloadBytes != 0 ? state.ringPayloadBytes : state.toNext->slotBytes() - kFrameHeaderBytes) /
                1024);
  }
  return CC_SUCCESS;
}

}  // namespace cc
