// The algorithm table: one row per algorithm, each row defined in its
// algorithm's file. Dispatch, CC_ALGO's parsing, the messages that list
// algorithms, the channels opened at init, auto's candidates and cost model,
// and the GPU path all read the table, so an algorithm is its own file plus
// one line of CC_ALGORITHM_TABLE (docs/architecture.md shows one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "compressedcoll.h"
#include "prims/prims.h"

namespace cc {

struct CodecSpec;
struct SpecCodecs;
struct CallScratch;
struct AlgorithmRun;
struct CostModel;
struct CallShape;
struct Pipeline;
class Transport;
class RendezvousStore;

// An algorithm's number is its row's place in the table. The built-in rows
// come first, in this order (code that names an algorithm, such as auto's
// model and the tests, uses these values); rows registered at run time get
// the next numbers. Auto is no row: it picks one per call.
enum class AlgoId : uint8_t { Ring = 0, Direct = 1, Tree = 2, Allgather = 3, Switch = 4, Auto = 0xff };
constexpr int kMaxAlgorithms = 16;
inline int indexOf(AlgoId id) { return static_cast<int>(id); }
inline unsigned bitOf(AlgoId id) { return 1u << indexOf(id); }

// Where a call's buffers live (AlgorithmRow::memoryKinds).
enum MemoryKind : unsigned { kHostMemory = 1u << 0, kDeviceMemory = 1u << 1 };

// A call as a row's carry check sees it.
struct CallTraits {
  const CodecSpec& spec;
  bool compresses;  // specCompresses(spec, datatype, op); false: the exact path
  cc_datatype_t datatype;
  cc_red_op_t op;
};

// An algorithm's own channels, made at init by its row's openChannels.
class AlgorithmChannels {
 public:
  virtual ~AlgorithmChannels() = default;
  // The communicator is broken (a collective failed half-way, or
  // cc_comm_abort): channels whose peers would otherwise wait until their
  // timeout tell them now. `reason` says why. From any thread.
  virtual void abort(const char* reason) { (void)reason; }
};

struct ChannelSetup {
  Transport* transport = nullptr;
  int rank = 0;
  int nranks = 1;
  size_t chunkBytes = 0;  // CC_CHUNK_BYTES: the payload of one ring message
  // What algorithms that meet more than their peers need at init (the
  // switch: its address, a job admitted through the store).
  RendezvousStore* store = nullptr;
  AlgoId configured = AlgoId::Auto;  // CC_ALGO: a row it names must open or fail
  std::string switchAddress;         // CC_SWITCH_ADDR ("" when unset)
  int timeoutMs = 300000;
  uint64_t seed = 0;                 // the communicator's agreed seed
  uint64_t nonce = 0;                // the communicator's key, the same on every rank
};

// What a row's entry point gets for one call on host memory.
struct AlgorithmCall {
  Prims& prims;
  const CollectiveArgs& args;
  RingChannels ring;        // the communicator's ring
  AlgorithmChannels* own;   // the row's own channels; null when it opens none
  float* chunkScratch;      // 2 x the row's chunkValues floats, where it asks for them
  // The call as the user's buffers hold it, the codecs of its spec and
  // buffers reused between calls: for algorithms that encode whole vectors
  // (allgather) rather than chunks through the prims.
  const AlgorithmRun& run;
  SpecCodecs& codecs;
  CallScratch& scratch;
};

// Hooks left null are capabilities the algorithm does not have.
struct AlgorithmRow {
  // CC_ALGO's name, matched in any case; at most kMaxAlgorithmNameBytes - 1
  // characters, since CC_CHECK_CALLS announcements carry it in 16 bytes.
  const char* name = nullptr;
  // Null when the algorithm can carry `call`, else why not. A compressed
  // call the configured algorithm cannot carry fails with CC_UNSUPPORTED
  // naming the algorithms that can; an exact one runs on the ring, which
  // carries every exact reduction.
  const char* (*cannotCarry)(const CallTraits& call) = nullptr;
  unsigned memoryKinds = kHostMemory;
  // The entry point on host memory.
  cc_result_t (*run)(const AlgorithmCall& call) = nullptr;
  // The entry point on device memory (memoryKinds has kDeviceMemory): the
  // ring's verbs, which device prims implement.
  cc_result_t (*runOnDevice)(RingPrims& prims, const CollectiveArgs& args, const RingChannels& ring) = nullptr;
  // Channels of its own, opened at init on every rank wherever the
  // algorithm may run (CC_ALGO names it, or auto may pick it). Null: the
  // ring's channels are all it uses.
  cc_result_t (*openChannels)(const ChannelSetup& setup, std::unique_ptr<AlgorithmChannels>* out) = nullptr;
  // Values per pipelined chunk of a call whose codecs `sizing` holds; 0
  // without the channels it needs. Auto's model reads it, and with
  // chunkScratch the call gets 2 x that many floats of scratch.
  size_t (*chunkValues)(const Prims& sizing, const RingChannels& ring, const AlgorithmChannels* own) = nullptr;
  bool chunkScratch = false;
  // auto: whether it may pick the algorithm, which takes a pipeline in the
  // cost model (docs/algorithms.md, "auto: the cost model").
  bool autoCandidate = false;
  // The algorithm auto keeps unless another is predicted clearly cheaper.
  bool autoDefault = false;
  // Set for a row that runs only where a setting it needs is given (the
  // switch: "CC_SWITCH_ADDR"): its openChannels opens nothing without it,
  // auto then leaves it out, and messages list it apart, naming the setting.
  const char* requires = nullptr;
  // The row carries exact calls only approximately (the switch's int32
  // fixed point): an explicit CC_ALGO gets it, auto leaves exact calls to
  // the other rows.
  bool roundsExactCalls = false;
  // `chunkValues`: the call's chunks on this algorithm (its chunkValues hook).
  bool (*pipeline)(const CostModel& model, const CallShape& call, size_t chunkValues, Pipeline* out) = nullptr;
};

constexpr size_t kMaxAlgorithmNameBytes = 16;

// The built-in rows, in AlgoId order: each is `const AlgorithmRow&
// <name>Algorithm()` in src/algo/<name>.cc. A new algorithm adds its line at
// the end (rows keep their numbers; auto breaks ties between equal
// predictions in this order).
#define CC_ALGORITHM_TABLE(ROW) \
  ROW(ring)                     \
  ROW(direct)                   \
  ROW(tree)                     \
  ROW(allgather)                \
  ROW(switch)

#define CC_DECLARE_ALGORITHM_ROW(name) const AlgorithmRow& name##Algorithm();
CC_ALGORITHM_TABLE(CC_DECLARE_ALGORITHM_ROW)
#undef CC_DECLARE_ALGORITHM_ROW

// Rows in the table: built-in ones and those registered so far. Ids run
// from 0 to algorithmCount() - 1.
int algorithmCount();
// The row of `id`; null for Auto and for numbers no row has.
const AlgorithmRow* findAlgorithm(AlgoId id);
// The id of the row named `name` (any case), or of auto for "auto".
bool algorithmByName(const char* name, AlgoId* id);
// "auto", the row's name, or "unknown".
const char* algoName(AlgoId id);
// The names of the rows for which `keep` is true (all when null), in table
// order, joined by ", ".
std::string algorithmNames(bool (*keep)(const AlgorithmRow& row) = nullptr);
// "ring, direct, tree, allgather, auto; with CC_SWITCH_ADDR set: switch":
// every name CC_ALGO takes, rows that need a setting listed apart.
std::string algorithmChoices();
// The rows (bitOf) that need no setting (AlgorithmRow::requires): what a
// call may run on when nothing says which settings this communicator has.
unsigned rowsNeedingNoSetting();

// Adds a row after the others, for algorithms outside the library (tests,
// experiments); returns its id. The row is copied, its name too. Register
// before opening communicators, the same rows in the same order on every
// process (ranks agree on the algorithm by its id). CC_INVALID_ARGUMENT for
// a row without a name or entry point, a name taken or too long, or an auto
// candidate without a pipeline; CC_UNSUPPORTED when the table is full.
cc_result_t registerAlgorithm(const AlgorithmRow& row, AlgoId* id);

// Carry checks that rows share. What no chunked algorithm (ring, direct,
// tree) can carry: a compressed call whose spec a hop cannot re-encode.
const char* cannotCarryOnChunks(const CallTraits& call);
// What no algorithm that sums in float32 (direct, tree, allgather) can
// carry: exact reductions other than SUM or AVG of float32.
const char* cannotSumInFloat32(const CallTraits& call);
// Both: direct's and tree's.
const char* cannotCarryOnFloat32Chunks(const CallTraits& call);

}  // namespace cc
