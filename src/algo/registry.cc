#include "algo/registry.h"

#include <strings.h>

#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "base/error.h"
#include "codec/spec.h"

namespace cc {
namespace {

// Readers (every call's dispatch) take a row without a lock: a row is
// written before the count that publishes it, and never changes after.
class AlgorithmTable {
 public:
  AlgorithmTable() {
#define CC_ADD_BUILTIN_ROW(name) rows_[count_++] = &name##Algorithm();
    CC_ALGORITHM_TABLE(CC_ADD_BUILTIN_ROW)
#undef CC_ADD_BUILTIN_ROW
    published_.store(count_, std::memory_order_release);
  }

  int count() const { return published_.load(std::memory_order_acquire); }
  const AlgorithmRow* row(int index) const { return index >= 0 && index < count() ? rows_[index] : nullptr; }

  cc_result_t add(const AlgorithmRow& row, AlgoId* id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (row.name == nullptr || row.name[0] == '\0') {
      return setError(CC_INVALID_ARGUMENT, "registering an algorithm: it has no name");
    }
    if (std::strlen(row.name) >= kMaxAlgorithmNameBytes) {
      return setError(CC_INVALID_ARGUMENT, "registering algorithm '%s': names have at most %zu characters",
                      row.name, kMaxAlgorithmNameBytes - 1);
    }
    AlgoId taken = AlgoId::Auto;
    if (algorithmByName(row.name, &taken)) {
      return setError(CC_INVALID_ARGUMENT, "registering algorithm '%s': the name is taken", row.name);
    }
    if (row.run == nullptr || row.cannotCarry == nullptr) {
      return setError(CC_INVALID_ARGUMENT, "registering algorithm '%s': it needs an entry point and a carry check",
                      row.name);
    }
    if (row.autoCandidate && row.pipeline == nullptr) {
      return setError(CC_INVALID_ARGUMENT,
                      "registering algorithm '%s': auto can pick only algorithms its cost model has a pipeline for",
                      row.name);
    }
    if ((row.memoryKinds & kDeviceMemory) != 0 && row.runOnDevice == nullptr) {
      return setError(CC_INVALID_ARGUMENT, "registering algorithm '%s': device memory needs runOnDevice", row.name);
    }
    if (count_ == kMaxAlgorithms) {
      return setError(CC_UNSUPPORTED, "registering algorithm '%s': the table holds %d algorithms", row.name,
                      kMaxAlgorithms);
    }
    owned_.push_back(Owned{std::string(row.name), row});
    Owned& copy = owned_.back();
    copy.row.name = copy.name.c_str();
    rows_[count_] = &copy.row;
    *id = static_cast<AlgoId>(count_);
    published_.store(++count_, std::memory_order_release);
    return CC_SUCCESS;
  }

 private:
  struct Owned {
    std::string name;
    AlgorithmRow row;
  };
  std::array<const AlgorithmRow*, kMaxAlgorithms> rows_{};
  int count_ = 0;  // under mutex_
  std::atomic<int> published_{0};
  std::deque<Owned> owned_;  // a deque: rows stay where they are as it grows
  std::mutex mutex_;
};

AlgorithmTable& table() {
  static AlgorithmTable instance;
  return instance;
}

}  // namespace

int algorithmCount() { return table().count(); }

const AlgorithmRow* findAlgorithm(AlgoId id) { return table().row(indexOf(id)); }

bool algorithmByName(const char* name, AlgoId* id) {
  if (strcasecmp(name, "auto") == 0) {
    *id = AlgoId::Auto;
    return true;
  }
  for (int i = 0; i < algorithmCount(); ++i) {
    if (strcasecmp(name, table().row(i)->name) == 0) {
      *id = static_cast<AlgoId>(i);
      return true;
    }
  }
  return false;
}

const char* algoName(AlgoId id) {
  if (id == AlgoId::Auto) return "auto";
  const AlgorithmRow* row = findAlgorithm(id);
  return row != nullptr ? row->name : "unknown";
}

std::string algorithmNames(bool (*keep)(const AlgorithmRow& row)) {
  std::string names;
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgorithmRow& row = *table().row(i);
    if (keep != nullptr && !keep(row)) continue;
    names += (names.empty() ? "" : ", ") + std::string(row.name);
  }
  return names;
}

std::string algorithmChoices() {
  std::string text = algorithmNames([](const AlgorithmRow& row) { return row.requires == nullptr; });
  text += (text.empty() ? "" : ", ") + std::string("auto");
  // Rows that need a setting, grouped by it, in table order.
  std::vector<std::string> settings;
  for (int i = 0; i < algorithmCount(); ++i) {
    const AlgorithmRow& row = *table().row(i);
    if (row.requires == nullptr) continue;
    bool seen = false;
    for (const std::string& setting : settings) seen |= setting == row.requires;
    if (!seen) settings.push_back(row.requires);
  }
  for (const std::string& setting : settings) {
    std::string names;
    for (int i = 0; i < algorithmCount(); ++i) {
      const AlgorithmRow& row = *table().row(i);
      if (row.requires != nullptr && setting == row.requires) names += (names.empty() ? "" : ", ") + std::string(row.name);
    }
    text += "; with " + setting + " set: " + names;
  }
  return text;
}

unsigned rowsNeedingNoSetting() {
  unsigned rows = 0;
  for (int i = 0; i < algorithmCount(); ++i) {
    if (table().row(i)->requires == nullptr) rows |= 1u << i;
  }
  return rows;
}

cc_result_t registerAlgorithm(const AlgorithmRow& row, AlgoId* id) { return table().add(row, id); }

const char* cannotCarryOnChunks(const CallTraits& call) {
  if (!call.compresses || call.spec.hopReencodable()) return nullptr;
  return call.spec.selector == Selector::TopK ? "chunks would have to carry the growing union of the ranks' indices"
                                              : "its norm spans a whole tensor or model, more than a chunk";
}

const char* cannotSumInFloat32(const CallTraits& call) {
  const bool sums = call.op == CC_SUM || call.op == CC_AVG;
  if (sums && (call.compresses || call.datatype == CC_FLOAT32)) return nullptr;
  return "it sums in float32, which carries SUM and AVG of compressed types and of exact float32 only";
}

const char* cannotCarryOnFloat32Chunks(const CallTraits& call) {
  if (const char* why = cannotCarryOnChunks(call)) return why;
  return cannotSumInFloat32(call);
}

}  // namespace cc
