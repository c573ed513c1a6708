// The ring: every value is encoded n times (n - 1 partial sums and the
// owner's final sum), each hop one fused decode-add-encode; the packed
// results then travel around once more, forwarded unchanged.
#include <algorithm>

#include "algo/algo.h"
#include "algo/auto/cost_model.h"
#include "base/error.h"

namespace cc {

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

namespace {

// The bytes of one ring message: a whole slot, or less where auto chose a
// smaller payload for this link (AutoState::ringPayloadBytes).
size_t ringMessageBytes(const CollectiveArgs& args, size_t slotBytes) {
  const size_t chosen = kFrameHeaderBytes + args.ringPayloadBytes;
  return args.ringPayloadBytes != 0 && chosen < slotBytes ? chosen : slotBytes;
}

}  // namespace

cc_result_t ringAllreduce(RingPrims& prims, const CollectiveArgs& args, const RingChannels& channels) {
  const int n = args.nranks;
  const int rank = args.rank;
  const int prev = (rank + n - 1) % n;
  SendChannel& toNext = *channels.toNext;
  RecvChannel& fromPrev = *channels.fromPrev;
  const size_t chunkValues = prims.chunkValues(ringMessageBytes(args, toNext.slotBytes()));
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

namespace {

// Exact calls of at least this many bytes run their allgather through
// regions where the transport carries them (Prims::mayUseRegions): below it
// the header's message of its own costs more than the copy it saves.
constexpr size_t kRegionMinBytes = size_t{1} << 20;

cc_result_t runRing(const AlgorithmCall& call) {
  Prims& prims = call.prims;
  if (!prims.mayUseRegions(kRegionMinBytes)) return ringAllreduce(prims, call.args, call.ring);
  // The receiving end first: the predecessor sends into it only after this
  // rank's first send of the call has gone round the ring.
  CC_CHECK(call.ring.fromPrev->openRegion(call.args.recvbuf, prims.outputBytes()));
  cc_result_t result = call.ring.toNext->openRegion(call.args.recvbuf, prims.outputBytes());
  if (result == CC_SUCCESS) {
    prims.useRegions(true);
    result = ringAllreduce(prims, call.args, call.ring);
    prims.useRegions(false);
  }
  const bool complete = result == CC_SUCCESS;
  const cc_result_t sendClosed = call.ring.toNext->closeRegion(complete);
  const cc_result_t recvClosed = call.ring.fromPrev->closeRegion(complete);
  CC_CHECK(result);
  CC_CHECK(sendClosed);
  return recvClosed;
}

size_t ringChunkValues(const Prims& sizing, const RingChannels& ring, const AlgorithmChannels*) {
  return ring.toNext != nullptr ? sizing.chunkValues(ringMessageBytes(sizing.args(), ring.toNext->slotBytes())) : 0;
}

// Every segment moves at once, so every link is busy from the start: no fill.
bool ringPipeline(const CostModel& model, const CallShape& call, size_t chunkValues, Pipeline* p) {
  const double n = call.nranks;
  const CodecCosts& w = model.codec[static_cast<int>(call.worker)];
  const double segment = static_cast<double>(call.count) / n;  // values each rank owns
  p->iterations = ceilDiv(segment, static_cast<double>(chunkValues));
  p->hops = 2 * (n - 1);
  p->messages = 4 * (n - 1);
  p->wireBytes = 2 * (n - 1) * segment * call.workerBytesPerValue;
  // one encode, n - 1 fused hops (the last one the owner's), n - 1 decodes
  p->computeSeconds = segment * (w.encode + (n - 1) * w.fused + (n - 1) * w.decode);
  return true;
}

}  // namespace

const AlgorithmRow& ringAlgorithm() {
  static const AlgorithmRow row = [] {
    AlgorithmRow r;
    r.name = "ring";
    r.cannotCarry = cannotCarryOnChunks;  // and every exact reduction, of any type and op
    r.memoryKinds = kHostMemory | kDeviceMemory;
    r.run = runRing;
    r.runOnDevice = ringAllreduce;
    r.chunkValues = ringChunkValues;
    r.autoCandidate = true;
    // One flow per link, no idle levels: between communicators on a loaded
    // host its fitted figures vary least (docs/algorithms.md).
    r.autoDefault = true;
    r.pipeline = ringPipeline;
    return r;
  }();
  return row;
}

}  // namespace cc
