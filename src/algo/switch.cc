// In-network aggregation: every rank streams its vector once to a switch
// (cc_switchd, docs/switch-protocol.md), which sums the ranks' packets in
// integers and sends every rank the same result bytes. One encode up (the
// call's codec: nat codes, or float32 as int32 fixed point for none) and,
// with a nat downlink (the master codec), one more at the switch: like
// direct, two encodes per value whatever n is; the wire carries the vector
// once up and once down per rank instead of ring's 2(n-1)/n each way.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "algo/algo.h"
#include "algo/auto/cost_model.h"
#include "base/error.h"
#include "base/log.h"
#include "codec/elements.h"
#include "codec/fixed_point.h"
#include "codec/spec.h"
#include "codec/streaming_store.h"
#include "transports/rendezvous.h"
#include "transports/udp/switch_client.h"

namespace cc {
namespace {

// Packets in flight per rank. Past what keeps the link busy, more only
// stands in the link's queue: every round trip, and with it every loss's
// recovery, waits behind it. 16 jumbo packets (143 KB, 1.1 ms at 1 Gbit/s)
// ran a 64 MiB nat/nat call in 163-168 ms against 194-204 ms with 64 on
// 4 x 1 Gbit/s; on 10 Gbit/s, where the switch is bound by the hosts' CPUs
// and the ring is faster, 64 does better (docs/results.md, "Switch").
constexpr int kDefaultWindow = 16;
constexpr uint32_t kEncodeStep = 0;  // the Philox stream of the ranks' encodes
constexpr uint32_t kFloorStep = 1;   // and of the rounding of codes below the floor

// The job this communicator holds at the switch, and its client.
class SwitchLink : public AlgorithmChannels {
 public:
  ~SwitchLink() override {
    if (!client) return;
    const SwitchStats& s = client->stats();
    CC_INFO("switch %s: %llu packets sent, %llu results and %llu status received, %llu resent (%llu on later "
            "results, %llu on the timer), %llu stale",
            client->address().c_str(), static_cast<unsigned long long>(s.sent),
            static_cast<unsigned long long>(s.received), static_cast<unsigned long long>(s.status),
            static_cast<unsigned long long>(s.retransmitted), static_cast<unsigned long long>(s.fastRetransmits),
            static_cast<unsigned long long>(s.timeouts), static_cast<unsigned long long>(s.staleResults));
    client->leave();
  }
  void abort(const char* reason) override {
    if (client) client->abort(reason);
  }
  std::unique_ptr<SwitchClient> client;
  // Scratch of the communicator's calls, which run one at a time.
  mutable std::vector<float> scratch;  // one packet's values, for decodes that go through float32
  // Per slot, a nat packet encoded a window ahead (Stream::exponentOf) and
  // the packet it holds (kNoPacket: free).
  mutable std::vector<uint8_t> staged;
  mutable std::vector<size_t> stagedPacket;
  size_t stagedBytes = 0;  // per slot
};

constexpr size_t kNoPacket = SIZE_MAX;

const SwitchLink* linkOf(const AlgorithmChannels* own) { return dynamic_cast<const SwitchLink*>(own); }

// The per-rank record published in the store: the address the switch sees
// and the largest datagram of this rank's path.
constexpr size_t kRankRecordBytes = swp::kRankAddressBytes + 4;

cc_result_t windowFromEnvironment(int* window) {
  *window = kDefaultWindow;
  const char* text = std::getenv("CC_SWITCH_WINDOW");
  if (text == nullptr || text[0] == '\0') return CC_SUCCESS;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < 1 || value > swp::kMaxWindow) {
    return setError(CC_INVALID_ARGUMENT, "CC_SWITCH_WINDOW must be a number of packets in 1..%d, got '%s'",
                    swp::kMaxWindow, text);
  }
  *window = static_cast<int>(value);
  return CC_SUCCESS;
}

// The job record rank 0 publishes: 'J' and the job, or 'E', the result
// code and rank 0's message.
std::vector<char> jobRecord(const SwitchJob& job) {
  std::vector<char> bytes(1 + 16);
  bytes[0] = 'J';
  bytes[1] = static_cast<char>(job.id);
  std::memcpy(bytes.data() + 2, &job.key, 4);
  std::memcpy(bytes.data() + 6, &job.window, 2);
  std::memcpy(bytes.data() + 8, &job.capacity, 2);
  std::memcpy(bytes.data() + 10, &job.datagramBytes, 4);
  return bytes;
}

std::vector<char> failureRecord(cc_result_t code, const std::string& message) {
  std::vector<char> bytes(2 + message.size());
  bytes[0] = 'E';
  bytes[1] = static_cast<char>(code);
  if (!message.empty()) std::memcpy(bytes.data() + 2, message.data(), message.size());
  return bytes;
}

cc_result_t openSwitchChannels(const ChannelSetup& setup, std::unique_ptr<AlgorithmChannels>* out) {
  const bool requested = setup.configured == AlgoId::Switch;
  if (setup.switchAddress.empty()) {
    if (!requested) return CC_SUCCESS;  // auto without a switch: not a candidate here
    return setError(CC_INVALID_ARGUMENT,
                    "CC_ALGO=switch needs the address of a running cc_switchd: CC_SWITCH_ADDR=host:port or "
                    "cc_config_t.switch_addr (docs/switch-protocol.md)");
  }
  if (setup.nranks > swp::kMaxRanks) {
    if (!requested) {
      CC_INFO("the switch at %s aggregates up to %d ranks; auto leaves it out for %d ranks",
              setup.switchAddress.c_str(), swp::kMaxRanks, setup.nranks);
      return CC_SUCCESS;
    }
    return setError(CC_UNSUPPORTED, "the switch aggregates up to %d ranks (a 64-bit bitmap per slot); this "
                    "communicator has %d", swp::kMaxRanks, setup.nranks);
  }
  if (setup.store == nullptr) return setError(CC_INTERNAL_ERROR, "the switch's channels need the bootstrap store");
  int window = kDefaultWindow;
  CC_CHECK(windowFromEnvironment(&window));
  RendezvousStore& store = *setup.store;
  auto link = std::make_unique<SwitchLink>();
  CC_CHECK(SwitchClient::open(setup.switchAddress, setup.timeoutMs, &link->client));
  SwitchClient& client = *link->client;

  std::vector<char> mine(kRankRecordBytes);
  swp::writeRankAddress(client.localAddress(), reinterpret_cast<uint8_t*>(mine.data()));
  const uint32_t datagram = client.datagramBytes();
  std::memcpy(mine.data() + swp::kRankAddressBytes, &datagram, 4);
  CC_CHECK(store.trySet("cc/switch/addr/" + std::to_string(setup.rank), mine));

  if (setup.rank == 0) {
    swp::AdmitRequest request;
    request.nonce = setup.nonce;
    request.seed = setup.seed;
    request.timeoutMs = static_cast<uint32_t>(setup.timeoutMs);
    request.nranks = static_cast<uint16_t>(setup.nranks);
    request.window = static_cast<uint16_t>(window);
    request.mode = swp::makeMode(swp::kNat, swp::kNat);
    uint32_t smallest = swp::kMaxDatagramBytes;
    cc_result_t result = CC_SUCCESS;
    for (int r = 0; r < setup.nranks && result == CC_SUCCESS; ++r) {
      std::vector<char> theirs;
      result = store.tryGet("cc/switch/addr/" + std::to_string(r), &theirs);
      if (result != CC_SUCCESS) break;
      uint32_t bytes = 0;
      if (theirs.size() != kRankRecordBytes ||
          !swp::readRankAddress(reinterpret_cast<const uint8_t*>(theirs.data()), &request.ranks[r])) {
        result = setError(CC_REMOTE_ERROR, "rank %d published a malformed switch address record", r);
        break;
      }
      std::memcpy(&bytes, theirs.data() + swp::kRankAddressBytes, 4);
      smallest = std::min(smallest, bytes);
    }
    // The slot's capacity: the most values any mode puts in one packet
    // (nat both ways) on the narrowest rank's path.
    SwitchJob job;
    if (result == CC_SUCCESS) {
      request.count = static_cast<uint16_t>(swp::valuesFitting(request.mode, smallest));
      if (request.count == 0) {
        result = setError(CC_UNSUPPORTED, "a %u-byte datagram holds no 32-value packet", smallest);
      } else {
        result = client.admit(request, &job);
      }
    }
    if (result != CC_SUCCESS) {
      const std::string message = lastErrorMessage();
      store.trySet("cc/switch/job", failureRecord(result, message));
      restoreLastError(message);
      return result;
    }
    job.datagramBytes = smallest;
    CC_CHECK(store.trySet("cc/switch/job", jobRecord(job)));
  }
  std::vector<char> record;
  CC_CHECK(store.tryGet("cc/switch/job", &record));
  SwitchJob job;
  if (record.size() >= 2 && record[0] == 'E') {
    const cc_result_t code = static_cast<cc_result_t>(static_cast<unsigned char>(record[1]));
    return setError(code == CC_SUCCESS ? CC_REMOTE_ERROR : code, "rank 0 could not admit the job at the switch: %.*s",
                    static_cast<int>(record.size() - 2), record.data() + 2);
  }
  if (record.size() != 17 || record[0] != 'J') {
    return setError(CC_REMOTE_ERROR, "rank 0 published a malformed switch job record (%zu bytes)", record.size());
  }
  job.id = static_cast<uint8_t>(record[1]);
  std::memcpy(&job.key, record.data() + 2, 4);
  std::memcpy(&job.window, record.data() + 6, 2);
  std::memcpy(&job.capacity, record.data() + 8, 2);
  std::memcpy(&job.datagramBytes, record.data() + 10, 4);
  job.nranks = setup.nranks;
  job.rank = setup.rank;
  client.setJob(job);
  link->scratch.resize(job.capacity);
  link->stagedBytes = swp::payloadBytes(swp::kNat, job.capacity);
  link->staged.resize(static_cast<size_t>(job.window) * link->stagedBytes);
  link->stagedPacket.assign(job.window, kNoPacket);
  CC_INFO("rank %d: switch %s, job %u, window %u, %u values per packet at most, %u-byte datagrams", setup.rank,
          setup.switchAddress.c_str(), job.id, job.window, job.capacity, job.datagramBytes);
  *out = std::move(link);
  return CC_SUCCESS;
}

// One collective's packets: the rank's values in, the switch's sums out.
class Stream : public SwitchStream {
 public:
  Stream(const CollectiveArgs& args, const Prims& prims, size_t valuesPerPacket, swp::Encoding up,
         swp::Encoding down, const SwitchLink& link)
      : args_(args),
        type_(elementTypeOf(args.datatype)),
        elementBytes_(elementBytes(type_)),
        k_(valuesPerPacket),
        up_(up),
        down_(down),
        maxShift_(fixedMaxShift(args.nranks)),
        encodeStream_(prims.randomFor(kEncodeStep)),
        floorStream_(prims.randomFor(kFloorStep)),
        streamsOutput_(args.count * elementBytes_ >= kStreamingStoreMinBytes),
        link_(link) {
    std::fill(link_.stagedPacket.begin(), link_.stagedPacket.end(), kNoPacket);
  }

  // A nat packet is encoded here, right after the pass that found its
  // exponent, while its values are in cache; encode() then only applies the
  // agreed floor. Without this the values come from memory twice, a window
  // apart. The exponent comes first: with a residual it is that of
  // values + residual before the encode updates the residual.
  uint8_t exponentOf(size_t packet) override {
    const size_t first = packet * k_, count = countOf(packet);
    const uint8_t exponent = blockExponentOf(type_, input(first), residual(first), count);
    if (up_ == swp::kNat && !link_.stagedPacket.empty()) {
      size_t& held = link_.stagedPacket[packet % link_.stagedPacket.size()];
      if (held == kNoPacket) {
        encodeNat(first, count, stagedBytesOf(packet));
        held = packet;
      }
    }
    return exponent;
  }

  size_t encode(size_t packet, uint8_t expCur, uint8_t* payload) override {
    const size_t first = packet * k_, count = countOf(packet);
    const int floor = fixedFloor(expCur, maxShift_);
    if (up_ == swp::kInt32) {
      fixedEncode(type_, input(first), residual(first), count, floor, reinterpret_cast<int32_t*>(payload));
      return swp::payloadBytes(swp::kInt32, count);
    }
    const size_t bytes = swp::payloadBytes(swp::kNat, count);
    size_t* held = link_.stagedPacket.empty() ? nullptr : &link_.stagedPacket[packet % link_.stagedPacket.size()];
    if (held != nullptr && *held == packet) {
      std::memcpy(payload, stagedBytesOf(packet), bytes);
      *held = kNoPacket;
    } else {
      encodeNat(first, count, payload);  // not staged: its slot held another packet
    }
    natApplyFloor(payload, count, floor, first, floorStream_, residual(first));
    return bytes;
  }

  cc_result_t deliver(size_t packet, const swp::Header& header, const uint8_t* payload) override {
    const size_t first = packet * k_, count = countOf(packet);
    const uint32_t divisor = args_.op == CC_AVG ? static_cast<uint32_t>(args_.nranks) : 1;
    unsigned char* out = static_cast<unsigned char*>(args_.recvbuf) + first * elementBytes_;
    if (down_ == swp::kInt32) {
      fixedDecode(reinterpret_cast<const int32_t*>(payload), count, fixedFloor(header.expCur, maxShift_), divisor,
                  type_, out);
      return CC_SUCCESS;
    }
    if (type_ == ElementType::F32 && streamsOutput_) {
      decodeStreaming(*args_.masterF32Codec, payload, count, sizeof(float), divisor, out);
      return CC_SUCCESS;
    }
    if (type_ == ElementType::F32) {
      args_.masterF32Codec->decode(payload, count, out);
      divideInPlace(reinterpret_cast<float*>(out), count, divisor);
      return CC_SUCCESS;
    }
    float* scratch = link_.scratch.data();
    args_.masterF32Codec->decode(payload, count, scratch);
    divideInPlace(scratch, count, divisor);
    for (size_t i = 0; i < count; ++i) storeFloat(type_, out, i, scratch[i]);
    return CC_SUCCESS;
  }

 private:
  size_t countOf(size_t packet) const { return std::min(k_, args_.count - packet * k_); }
  const void* input(size_t first) const {
    return static_cast<const unsigned char*>(args_.sendbuf) + first * elementBytes_;
  }
  float* residual(size_t first) const { return args_.residual != nullptr ? args_.residual + first : nullptr; }
  uint8_t* stagedBytesOf(size_t packet) const {
    return link_.staged.data() + (packet % link_.stagedPacket.size()) * link_.stagedBytes;
  }
  void encodeNat(size_t first, size_t count, uint8_t* out) const {
    if (args_.residual != nullptr) {
      encodeWithResidual(ResidualCodecs{args_.codec, args_.f32Codec, type_}, input(first), residual(first), count,
                         first, encodeStream_, out);
    } else {
      args_.codec->encode(input(first), count, first, encodeStream_, out);
    }
  }

  const CollectiveArgs& args_;
  const ElementType type_;
  const size_t elementBytes_;
  const size_t k_;
  const swp::Encoding up_, down_;
  const int maxShift_;
  const RandomStream encodeStream_, floorStream_;
  const bool streamsOutput_;
  const SwitchLink& link_;
};

cc_result_t encodingOf(const Codec& codec, const char* role, swp::Encoding* out) {
  if (codec.id() == CodecId::Nat) *out = swp::kNat;
  else if (codec.id() == CodecId::None) *out = swp::kInt32;
  else {
    return setError(CC_UNSUPPORTED,
                    "the switch's %s is nat or none (int32 fixed point), not %s%s", role, codecName(codec.id()),
                    std::strcmp(role, "downlink") == 0 ? " (CC_MASTER_CODEC / cc_config_t.master_codec)" : "");
  }
  return CC_SUCCESS;
}

cc_result_t runSwitch(const AlgorithmCall& call) {
  const SwitchLink* link = linkOf(call.own);
  if (link == nullptr) return setError(CC_INTERNAL_ERROR, "the switch's channels are missing");
  const CollectiveArgs& args = call.args;
  swp::Encoding up = swp::kNat, down = swp::kNat;
  CC_CHECK(encodingOf(*args.codec, "uplink", &up));
  CC_CHECK(encodingOf(*args.masterF32Codec, "downlink", &down));
  const uint8_t mode = swp::makeMode(up, down);
  SwitchClient& client = *link->client;
  const size_t k = std::min<size_t>(swp::valuesFitting(mode, client.job().datagramBytes), client.job().capacity);
  Stream stream(args, call.prims, k, up, down, *link);
  const cc_result_t result = client.run(args.count, k, mode, stream);
  if (result != CC_SUCCESS) return addErrorContext(result, "switch job %u", client.job().id);
  return CC_SUCCESS;
}

const char* cannotCarryOnSwitch(const CallTraits& call) {
  const bool floatType = call.datatype == CC_FLOAT32 || call.datatype == CC_FLOAT16 || call.datatype == CC_BFLOAT16;
  if (!floatType || (call.op != CC_SUM && call.op != CC_AVG)) {
    return "the switch sums float32, float16 and bfloat16 values (SUM, AVG) only";
  }
  const CodecSpec& spec = call.spec;
  const bool nat = spec.selector == Selector::None && spec.quantizer == Quantizer::Nat;
  const bool none = !call.compresses || (spec.selector == Selector::None && spec.quantizer == Quantizer::Exact);
  if (nat || none) return nullptr;
  return "the switch adds nat codes (codec nat) or int32 fixed point (codec none) only";
}

size_t switchChunkValues(const Prims&, const RingChannels&, const AlgorithmChannels* own) {
  const SwitchLink* link = linkOf(own);
  return link != nullptr ? static_cast<size_t>(link->client->job().window) * link->client->job().capacity : 0;
}

// A window of packets is the pipeline's chunk; each link carries the vector
// once up and once down, so its busier direction sets the wire time; the
// switch's own work runs on its own core, outside the rank's.
bool switchPipeline(const CostModel& model, const CallShape& call, size_t chunkValues, Pipeline* p) {
  const double values = static_cast<double>(call.count);
  const CodecCosts& w = model.codec[static_cast<int>(call.worker)];
  const CodecCosts& m = model.codec[static_cast<int>(call.master)];
  p->iterations = ceilDiv(values, static_cast<double>(chunkValues));
  p->hops = 2;
  p->messages = 2;  // a batch of sends and one of receives per window
  p->wireBytes = values * std::max(call.workerBytesPerValue, call.masterBytesPerValue);
  p->computeSeconds = values * (w.encode + m.decode);
  return true;
}

}  // namespace

const AlgorithmRow& switchAlgorithm() {
  static const AlgorithmRow row = [] {
    AlgorithmRow r;
    r.name = "switch";
    r.cannotCarry = cannotCarryOnSwitch;
    r.run = runSwitch;
    r.openChannels = openSwitchChannels;
    r.chunkValues = switchChunkValues;
    r.autoCandidate = true;
    r.pipeline = switchPipeline;
    r.requires = "CC_SWITCH_ADDR";
    r.roundsExactCalls = true;
    return r;
  }();
  return row;
}

}  // namespace cc
