// The paper's Algorithm 1 with the master role spread over all ranks: rank j
// owns shard j. Two encodes per value whatever n is (C_W at the worker, C_M
// at the owner), so the error does not grow with n as ring's does; the price
// is n - 1 messages per rank and step instead of one.
#include <algorithm>
#include <memory>
#include <numeric>
#include <vector>

#include "algo/algo.h"
#include "algo/auto/cost_model.h"
#include "base/error.h"

namespace cc {
namespace {

constexpr uint32_t kShardStep = 0;  // worker encodes of the shards, towards their owners
constexpr uint32_t kSumStep = 1;    // the owners' encodes of the sums, towards everyone
constexpr int kShardTag = 1;        // channels: worker shards to their owners
constexpr int kSumTag = 2;          // owners' sums to everyone

// The channels to and from every peer, and the views directAllreduce takes.
class DirectLinks : public AlgorithmChannels {
 public:
  std::vector<std::unique_ptr<SendChannel>> shardTo, sumTo;      // [peer]
  std::vector<std::unique_ptr<RecvChannel>> shardFrom, sumFrom;  // [peer]
  std::vector<SendChannel*> shardToView, sumToView, sumToOthers;
  std::vector<RecvChannel*> shardFromView, sumFromView;
  DirectChannels view{};
};

}  // namespace

cc_result_t directAllreduce(Prims& prims, const CollectiveArgs& args, const DirectChannels& channels,
                            float* scratch) {
  const int n = args.nranks;
  const int rank = args.rank;
  const size_t chunkValues = prims.chunkValuesBothStages(channels.slotBytes);
  const size_t alignment = std::lcm(args.codec->alignmentValues(), args.masterF32Codec->alignmentValues());
  if (chunkValues == 0) {
    return setError(CC_INVALID_ARGUMENT,
                    "direct: one unit of the worker and master codecs (%zu values) does not fit a %zu-byte "
                    "message; raise CC_CHUNK_BYTES",
                    alignment, channels.slotBytes - kFrameHeaderBytes);
  }
  const RingLayout shards(args.count, n, chunkValues, alignment);
  float* sum = scratch;
  float* decoded = scratch + chunkValues;

  // Peers are visited from rank + 1 on, so that no rank is everyone's first
  // destination; all sends are posted before any wait, so they overlap.
  auto scatter = [&](size_t iteration) -> cc_result_t {
    for (int k = 1; k < n; ++k) {
      const int owner = (rank + k) % n;
      size_t first = 0, count = 0;
      shards.range(owner, iteration, &first, &count);
      if (count) CC_CHECK(prims.encodeSend(*channels.shardTo[owner], first, count, kShardStep));
    }
    return CC_SUCCESS;
  };
  auto reduceOwnShard = [&](size_t iteration) -> cc_result_t {
    size_t first = 0, count = 0;
    shards.range(rank, iteration, &first, &count);
    if (count == 0) return CC_SUCCESS;
    prims.loadLocal(first, count, sum);
    for (int k = 1; k < n; ++k) {
      const int worker = (rank - k + n) % n;
      CC_CHECK(prims.recvDecodeAccumulate(*channels.shardFrom[worker], worker, kShardStep, sum, first, count));
    }
    return prims.encodeSumSendDecode(sum, first, count, kSumStep, channels.sumToOthers, n - 1, decoded);
  };
  auto gatherSums = [&](size_t iteration) -> cc_result_t {
    for (int k = 1; k < n; ++k) {
      const int owner = (rank - k + n) % n;
      size_t first = 0, count = 0;
      shards.range(owner, iteration, &first, &count);
      if (count) {
        CC_CHECK(prims.recvForwardDecode(*channels.sumFrom[owner], owner, nullptr, 0, first, count, kSumStep,
                                         kSumStep, Stage::Master));
      }
    }
    return CC_SUCCESS;
  };

  // The sums of chunk i are collected after the shards of chunk i + 1 went
  // out, so the links carry the next chunk while owners finish this one.
  for (size_t iteration = 0; iteration < shards.iterations; ++iteration) {
    CC_CHECK(scatter(iteration));
    if (iteration > 0) CC_CHECK(gatherSums(iteration - 1));
    CC_CHECK(reduceOwnShard(iteration));
  }
  if (shards.iterations > 0) CC_CHECK(gatherSums(shards.iterations - 1));
  return CC_SUCCESS;
}

const DirectChannels* directChannelsOf(const AlgorithmChannels* own) {
  const DirectLinks* links = dynamic_cast<const DirectLinks*>(own);
  return links != nullptr ? &links->view : nullptr;
}

namespace {

// direct sends n - 1 messages per step, so its slots are a 1/(n - 1) share
// of the chunk (not below the minimum chunk): its memory stays near one ring
// channel's whatever n is.
cc_result_t openDirectChannels(const ChannelSetup& setup, std::unique_ptr<AlgorithmChannels>* out) {
  const int n = setup.nranks, rank = setup.rank;
  Transport& transport = *setup.transport;
  auto links = std::make_unique<DirectLinks>();
  const size_t payload = std::max(kMinChunkBytes, (setup.chunkBytes / static_cast<size_t>(n - 1) + 63) / 64 * 64);
  const size_t slot = kFrameHeaderBytes + payload;
  links->shardTo.resize(n);
  links->sumTo.resize(n);
  links->shardFrom.resize(n);
  links->sumFrom.resize(n);
  for (int k = 1; k < n; ++k) {
    const int peer = (rank + k) % n;
    CC_CHECK(transport.openSend(peer, kShardTag, slot, kSlotsPerChannel, &links->shardTo[peer]));
    CC_CHECK(transport.openRecv(peer, kShardTag, slot, kSlotsPerChannel, &links->shardFrom[peer]));
    CC_CHECK(transport.openSend(peer, kSumTag, slot, kSlotsPerChannel, &links->sumTo[peer]));
    CC_CHECK(transport.openRecv(peer, kSumTag, slot, kSlotsPerChannel, &links->sumFrom[peer]));
    links->sumToOthers.push_back(links->sumTo[peer].get());
  }
  for (int peer = 0; peer < n; ++peer) {
    links->shardToView.push_back(links->shardTo[peer].get());
    links->sumToView.push_back(links->sumTo[peer].get());
    links->shardFromView.push_back(links->shardFrom[peer].get());
    links->sumFromView.push_back(links->sumFrom[peer].get());
  }
  links->view = DirectChannels{slot,
                               links->shardToView.data(),
                               links->shardFromView.data(),
                               links->sumToView.data(),
                               links->sumFromView.data(),
                               links->sumToOthers.data()};
  *out = std::move(links);
  return CC_SUCCESS;
}

cc_result_t runDirect(const AlgorithmCall& call) {
  return directAllreduce(call.prims, call.args, *directChannelsOf(call.own), call.chunkScratch);
}

size_t directChunkValues(const Prims& sizing, const RingChannels&, const AlgorithmChannels* own) {
  const DirectChannels* channels = directChannelsOf(own);
  return channels != nullptr ? sizing.chunkValuesBothStages(channels->slotBytes) : 0;
}

bool directPipeline(const CostModel& model, const CallShape& call, size_t chunkValues, Pipeline* p) {
  const double n = call.nranks;
  const CodecCosts& w = model.codec[static_cast<int>(call.worker)];
  const CodecCosts& m = model.codec[static_cast<int>(call.master)];
  const double segment = static_cast<double>(call.count) / n;  // values each rank owns
  p->iterations = ceilDiv(segment, static_cast<double>(chunkValues));
  p->hops = 2;
  p->messages = 4 * (n - 1);
  p->wireBytes = (n - 1) * segment * (call.workerBytesPerValue + call.masterBytesPerValue);
  p->computeSeconds = segment * ((n - 1) * (w.encode + w.decodeAccumulate + m.decode) + m.encode);
  return true;
}

}  // namespace

const AlgorithmRow& directAlgorithm() {
  static const AlgorithmRow row = [] {
    AlgorithmRow r;
    r.name = "direct";
    r.cannotCarry = cannotCarryOnFloat32Chunks;  // the owner sums in float32
    r.run = runDirect;
    r.openChannels = openDirectChannels;
    r.chunkValues = directChunkValues;
    r.chunkScratch = true;  // the owner's sum and its decoded form
    r.autoCandidate = true;
    r.pipeline = directPipeline;
    return r;
  }();
  return row;
}

}  // namespace cc
