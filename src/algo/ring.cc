#include "algo/algo.h"

#include <algorithm>

#include "base/error.h"

namespace cc {

const char* algoName(AlgoId id) {
  switch (id) {
    case AlgoId::Auto: return "auto";
    case AlgoId::Ring: return "ring";
    case AlgoId::Allgather: return "allgather";
    case AlgoId::Direct: return "direct";
    case AlgoId::Tree: return "tree";
  }
  return "unknown";
}


RingLayout::RingLayout(size_t count, int nranks, size_t chunkValues, size_t alignmentValues)
    : count_(count), chunkValues_(chunkValues) {
  const size_t perRank = count / static_cast<size_t>(nranks) + (count % static_cast<size_t>(nranks) != 0);
  segmentValues = (perRank + alignmentValues - 1) / alignmentValues * alignmentValues;
  iterations = segmentValues == 0 ? 0 : (segmentValues + chunkValues - 1) / chunkValues;
}

void RingLayout::range(int segment, size_t iteration, size_t* first, size_t* count) const {
  // Segments are block-aligned, so late segments may be short or empty.
  const size_t segmentBegin = std::min(count_, static_cast<size_t>(segment) * segmentValues);
  const size_t segmentEnd = std::min(count_, segmentBegin + segmentValues);
  const size_t begin = std::min(segmentEnd, segmentBegin + iteration * chunkValues_);
  *first = begin;
  *count = std::min(segmentEnd, begin + chunkValues_) - begin;
}

cc_result_t ringAllreduce(RingPrims& prims, const CollectiveArgs& args, const RingChannels& channels) {
  const int n = args.nranks;
  const int rank = args.rank;
  const int prev = (rank + n - 1) % n;
  SendChannel& toNext = *channels.toNext;
  RecvChannel& fromPrev = *channels.fromPrev;
  const size_t chunkValues = prims.chunkValues(toNext.slotBytes());
  if (chunkValues == 0) {
    return setError(CC_INVALID_ARGUMENT,
                    "one codec unit (%zu values, %zu bytes) does not fit a %zu-byte message; raise "
                    "CC_CHUNK_BYTES or use a smaller bucket",
                    args.codec->alignmentValues(), args.codec->packedBytes(args.codec->alignmentValues()),
                    toNext.slotBytes() - kFrameHeaderBytes);
  }
  const RingLayout layout(args.count, n, chunkValues, args.codec->alignmentValues());
  auto segment = [&](int offset) { return ((rank + offset) % n + n) % n; };
  const uint32_t lastStep = static_cast<uint32_t>(2 * n - 2);

  for (size_t iteration = 0; iteration < layout.iterations; ++iteration) {
    size_t first = 0, count = 0;
    // Reduce-scatter: segment j starts at rank j + 1 and is complete at rank j.
    layout.range(segment(-1), iteration, &first, &count);
    if (count) CC_CHECK(prims.encodeSend(toNext, first, count, 0));
    for (int step = 1; step <= n - 2; ++step) {
      layout.range(segment(-1 - step), iteration, &first, &count);
      if (count) {
        CC_CHECK(prims.recvDecodeAddEncodeSend(fromPrev, prev, toNext, first, count,
                                               static_cast<uint32_t>(step)));
      }
    }
    layout.range(rank, iteration, &first, &count);
    if (count) {
      CC_CHECK(prims.recvDecodeAddEncodeSendDecode(fromPrev, prev, toNext, first, count,
                                                   static_cast<uint32_t>(n - 1)));
    }
    // Allgather: packed bytes travel on unchanged; every rank decodes them.
    for (int step = 1; step <= n - 1; ++step) {
      layout.range(segment(-step), iteration, &first, &count);
      if (count) {
        const uint32_t wireStep = static_cast<uint32_t>(n - 1 + step);
        CC_CHECK(prims.recvForwardDecode(fromPrev, prev, wireStep == lastStep ? nullptr : &toNext,
                                         first, count, wireStep));
      }
    }
  }
  return CC_SUCCESS;
}

}  // namespace cc
