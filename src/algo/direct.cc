// The paper's Algorithm 1 with the master role spread over all ranks: rank j
// owns shard j. Two encodes per value whatever n is (C_W at the worker, C_M
// at the owner), so the error does not grow with n as ring's does; the price
// is n - 1 messages per rank and step instead of one.
#include <numeric>

#include "algo/algo.h"
#include "base/error.h"

namespace cc {
namespace {

constexpr uint32_t kShardStep = 0;  // worker encodes of the shards, towards their owners
constexpr uint32_t kSumStep = 1;    // the owners' encodes of the sums, towards everyone

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

}  // namespace cc
