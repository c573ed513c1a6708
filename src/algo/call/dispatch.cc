#include "algo/call/dispatch.h"

#include "algo/auto/choice.h"
#include "base/clock.h"
#include "base/error.h"

namespace cc {
namespace {

// Channel tags: the ring's and the announcements' here; algorithms that open
// channels of their own take theirs in their files (direct 1-2, tree 3-4;
// the device ring, cuda/device_runtime.cc, 16).
constexpr int kRingTag = 0;
constexpr int kAnnounceTag = 5;  // auto with CC_CHECK_CALLS: each call's algorithm, to the next rank
// Many small slots: the gloo transport then returns them in batches of 8, so
// an announcement costs one message.
constexpr int kAnnounceSlots = 64;
constexpr size_t kAnnounceSlotBytes = kFrameHeaderBytes + 64;

bool mayRun(const CallSettings& settings, AlgoId id) {
  return settings.algo == id || (settings.algo == AlgoId::Auto && findAlgorithm(id)->autoCandidate);
}

}  // namespace

unsigned autoCandidatesFor(const CallTraits& traits, unsigned available) {
  unsigned candidates = 0;
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId id = static_cast<AlgoId>(i);
    const AlgorithmRow& row = *findAlgorithm(id);
    if ((available & bitOf(id)) == 0 || (row.roundsExactCalls && !traits.compresses)) continue;
    if (row.autoCandidate && row.cannotCarry(traits) == nullptr) candidates |= bitOf(id);
  }
  return candidates;
}

unsigned availableAlgorithms(const CollectiveState& state) {
  unsigned available = 0;
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgorithmRow& row = *findAlgorithm(static_cast<AlgoId>(i));
    if (row.requires == nullptr || state.algorithmChannels[i] != nullptr) available |= 1u << i;
  }
  return available;
}

void abortAlgorithmChannels(CollectiveState& state, const char* reason) {
  for (auto& channels : state.algorithmChannels) {
    if (channels) channels->abort(reason);
  }
}

cc_result_t openCollectiveChannels(CollectiveState& state, const ChannelContext& context) {
  const int rank = state.rank, n = state.nranks;
  if (n < 2) return CC_SUCCESS;
  Transport& transport = *state.transport;
  const CallSettings& settings = state.settings;
  const bool ringSlotsAsGiven = settings.chunkBytesGiven || !transport.properties().hostMemory;
  const size_t ringSlotBytes = kFrameHeaderBytes + settings.chunkBytes * (ringSlotsAsGiven ? 1 : kRingSlotScale);
  CC_CHECK(transport.openSend((rank + 1) % n, kRingTag, ringSlotBytes, kSlotsPerChannel, &state.toNext));
  CC_CHECK(transport.openRecv((rank + n - 1) % n, kRingTag, ringSlotBytes, kSlotsPerChannel, &state.fromPrev));
  ChannelSetup setup;
  setup.transport = &transport;
  setup.rank = rank;
  setup.nranks = n;
  setup.chunkBytes = settings.chunkBytes;
  setup.store = context.store;
  setup.configured = settings.algo;
  setup.switchAddress = settings.switchAddress;
  setup.timeoutMs = context.timeoutMs;
  setup.seed = state.seed;
  setup.nonce = context.nonce;
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgoId id = static_cast<AlgoId>(i);
    const AlgorithmRow& row = *findAlgorithm(id);
    if (row.openChannels == nullptr || !mayRun(settings, id)) continue;
    cc_result_t result = row.openChannels(setup, &state.algorithmChannels[i]);
    if (result != CC_SUCCESS) return addErrorContext(result, "opening %s's channels", row.name);
  }
  if (settings.algo == AlgoId::Auto && settings.checkCalls) {
    CC_CHECK(transport.openSend((rank + 1) % n, kAnnounceTag, kAnnounceSlotBytes, kAnnounceSlots,
                                &state.announceToNext));
    CC_CHECK(transport.openRecv((rank + n - 1) % n, kAnnounceTag, kAnnounceSlotBytes, kAnnounceSlots,
                                &state.announceFromPrev));
  }
  return CC_SUCCESS;
}

cc_result_t algorithmForCall(const CallTraits& traits, AlgoId requested, unsigned available, AlgoId* out) {
  auto canCarry = [&](AlgoId id) {
    return (available & bitOf(id)) != 0 && findAlgorithm(id)->cannotCarry(traits) == nullptr;
  };
  if (requested == AlgoId::Auto) {
    *out = AlgoId::Auto;
    if (autoCandidatesFor(traits, available) != 0) return CC_SUCCESS;
    for (int i = 0; i < algorithmCount(); ++i) {
      if (canCarry(static_cast<AlgoId>(i))) {
        *out = static_cast<AlgoId>(i);
        return CC_SUCCESS;
      }
    }
    return setError(CC_UNSUPPORTED, "codec spec '%s': no algorithm can carry it", traits.spec.canonical.c_str());
  }
  const AlgorithmRow* row = findAlgorithm(requested);
  if (row == nullptr) return setError(CC_INTERNAL_ERROR, "no algorithm has number %d", indexOf(requested));
  const char* why = row->cannotCarry(traits);
  if (why == nullptr || !traits.compresses) {
    *out = requested;
    return CC_SUCCESS;
  }
  std::string able;
  for (int i = 0; i < algorithmCount(); ++i) {
    if (canCarry(static_cast<AlgoId>(i))) able += (able.empty() ? "" : ", ") + std::string(algoName(static_cast<AlgoId>(i)));
  }
  if (able.empty()) {
    return setError(CC_UNSUPPORTED, "codec spec '%s' cannot run on %s: %s; no algorithm can",
                    traits.spec.canonical.c_str(), row->name, why);
  }
  const std::string first = able.substr(0, able.find(','));
  return setError(CC_UNSUPPORTED, "codec spec '%s' cannot run on %s: %s; algorithms that can: %s (CC_ALGO=%s or auto)",
                  traits.spec.canonical.c_str(), row->name, why, able.c_str(), first.c_str());
}

cc_result_t collectiveArgs(CollectiveState& state, SpecCodecs& codecs, bool compresses, const AlgorithmRun& run,
                           CollectiveArgs* out) {
  const Codec* codec = nullptr;
  CC_CHECK(blockCodec(codecs, run.datatype, run.op, &codec));
  const Codec* f32Codec = nullptr;
  CC_CHECK(blockCodec(codecs, CC_FLOAT32, run.op, &f32Codec));
  CollectiveArgs args{run.input, run.output, run.count, run.datatype, run.op, codec,
                      state.seed, state.collectiveSeq, state.rank, state.nranks};
  args.specHash = compresses ? codecs.spec.hash : 0;
  args.residual = run.residual;
  args.f32Codec = f32Codec;
  args.masterF32Codec = f32Codec;
  args.masterSpecHash = args.specHash;
  args.ringPayloadBytes = state.ringPayloadBytes;
  args.regions = state.transport != nullptr && state.transport->properties().regions;
  if (compresses && state.settings.hasMasterCodec) {
    SpecCodecs* master = nullptr;
    CC_CHECK(state.specCodecs(state.settings.masterCodec.canonical.c_str(), &master));
    CC_CHECK(blockCodec(*master, CC_FLOAT32, run.op, &args.masterF32Codec));
    args.masterSpecHash = master->spec.hash;
  }
  *out = args;
  return CC_SUCCESS;
}

CallShape callShape(const CollectiveState& state, const Prims& sizing, const CollectiveArgs& args,
                    unsigned candidates) {
  CallShape call;
  call.nranks = state.nranks;
  call.count = args.count;
  call.worker = args.codec->id();
  call.master = args.masterF32Codec->id();
  constexpr size_t kProbeValues = 1 << 16;
  call.workerBytesPerValue = static_cast<double>(args.codec->packedBytes(kProbeValues)) / kProbeValues;
  call.masterBytesPerValue = static_cast<double>(args.masterF32Codec->packedBytes(kProbeValues)) / kProbeValues;
  const RingChannels ring = state.ring();
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgorithmRow& row = *findAlgorithm(static_cast<AlgoId>(i));
    if (row.chunkValues != nullptr) call.chunkValues[i] = row.chunkValues(sizing, ring, state.algorithmChannels[i].get());
  }
  call.candidates = candidates;
  return call;
}

cc_result_t runAlgorithm(CollectiveState& state, SpecCodecs& codecs, AlgoId algo, bool compresses,
                         const AlgorithmRun& run) {
  CollectiveArgs args;
  CC_CHECK(collectiveArgs(state, codecs, compresses, run, &args));

  const CallTraits traits{codecs.spec, compresses, run.datatype, run.op};
  AutoTrials* trial = nullptr;
  if (algo != AlgoId::Auto) {
    const AlgorithmRow* row = findAlgorithm(algo);
    if (row == nullptr) return setError(CC_INTERNAL_ERROR, "no algorithm has number %d", indexOf(algo));
    // algorithmForCall let only exact calls through that the algorithm
    // cannot carry: the ring carries every exact reduction.
    if (row->cannotCarry(traits) != nullptr) algo = AlgoId::Ring;
  } else {
    const unsigned candidates = autoCandidatesFor(traits, availableAlgorithms(state));
    if (candidates == 0 || (candidates & (candidates - 1)) == 0) {
      // One candidate (ring, for exact reductions that direct and tree cannot
      // carry): nothing to decide.
      algo = candidates == 0 ? AlgoId::Ring : static_cast<AlgoId>(__builtin_ctz(candidates));
    } else {
      const Prims sizing(args);
      algo = autoChoice(state, callShape(state, sizing, args, candidates), args, &trial);
    }
  }
  const AlgorithmRow& row = *findAlgorithm(algo);
  AlgorithmChannels* own = state.algorithmChannels[indexOf(algo)].get();
  if (row.openChannels != nullptr && own == nullptr) {
    return setError(CC_INTERNAL_ERROR, "%s channels were not opened at init (algorithm %s)", row.name,
                    algoName(state.settings.algo));
  }
  const RingChannels ring = state.ring();
  float* chunkScratch = nullptr;
  if (row.chunkScratch) {
    const Prims sizing(args);
    const size_t chunk = row.chunkValues(sizing, ring, own);
    chunkScratch = grow(state.scratch.chunkSums, 2 * chunk);
    args.masterScratch = chunkScratch + chunk;
  }
  ++state.collectiveSeq;
  Prims prims(args);
  state.lastAlgorithm = row.name;
  const bool autoChose = state.settings.algo == AlgoId::Auto;
  if (autoChose && state.settings.checkCalls && state.announceFromPrev != nullptr) {
    prims.expectAnnouncement(*state.announceFromPrev, (state.rank + state.nranks - 1) % state.nranks, row.name,
                             state.announceToNext.get());
  }
  const double start = nowSeconds();
  cc_result_t result = row.run(AlgorithmCall{prims, args, ring, own, chunkScratch, run, codecs, state.scratch});
  state.lastCallRegions = prims.ranWithRegions();
  if (result == CC_TIMEOUT && autoChose && !state.settings.checkCalls) {
    return addErrorContext(result,
                           "auto ran %s; ranks whose calls differ (count, datatype, op or spec) may choose "
                           "different algorithms and wait for each other: CC_CHECK_CALLS=1 names such a "
                           "disagreement at once",
                           row.name);
  }
  CC_CHECK(result);
  CC_CHECK(prims.settleAnnouncement());
  return recordAutoCall(state, trial, algo, args.collectiveSeq, nowSeconds() - start);
}

}  // namespace cc
