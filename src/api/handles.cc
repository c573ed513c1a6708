#include "api/handles.h"

#include <mutex>
#include <unordered_set>

#include "base/error.h"
#include "comm/comm.h"

namespace cc {
namespace {

std::mutex& registryMutex() {
  static std::mutex mutex;
  return mutex;
}

// Never destroyed: calls may still enter from threads running at exit.
std::unordered_set<cc_comm_t>& liveComms() {
  static auto* live = new std::unordered_set<cc_comm_t>();
  return *live;
}

cc_result_t notLive(cc_comm_t comm, const char* call) {
  if (comm == nullptr) return setError(CC_INVALID_ARGUMENT, "%s: comm is NULL", call);
  return setError(CC_INVALID_USAGE,
                  "%s: comm %p is not a live communicator (destroyed or aborted already, or never made by "
                  "cc_comm_init_rank)",
                  call, static_cast<void*>(comm));
}

// Drops one call; true when the communicator is then to be freed.
bool leave(cc_comm_t comm) {
  std::lock_guard<std::mutex> lock(registryMutex());
  return --comm->callsInside == 0 && comm->freeWhenIdle;
}

}  // namespace

void registerComm(cc_comm_t comm) {
  std::lock_guard<std::mutex> lock(registryMutex());
  liveComms().insert(comm);
}

CommEntry::CommEntry(cc_comm_t comm, const char* call) : comm_(comm), result_(CC_SUCCESS) {
  std::lock_guard<std::mutex> lock(registryMutex());
  if (comm == nullptr || liveComms().count(comm) == 0) {
    comm_ = nullptr;
    result_ = notLive(comm, call);
    return;
  }
  ++comm->callsInside;
}

CommEntry::~CommEntry() {
  if (comm_ != nullptr && leave(comm_)) delete comm_;
}

cc_result_t destroyComm(cc_comm_t comm) {
  {
    std::lock_guard<std::mutex> lock(registryMutex());
    if (comm == nullptr || liveComms().count(comm) == 0) return notLive(comm, "cc_comm_destroy");
    if (comm->callsInside > 0) {
      return setError(CC_INVALID_USAGE,
                      "cc_comm_destroy: a collective is still running on this communicator (use "
                      "cc_comm_abort from another thread)");
    }
    liveComms().erase(comm);
  }
  delete comm;
  return CC_SUCCESS;
}

cc_result_t abortComm(cc_comm_t comm) {
  {
    std::lock_guard<std::mutex> lock(registryMutex());
    if (comm == nullptr || liveComms().count(comm) == 0) return notLive(comm, "cc_comm_abort");
    liveComms().erase(comm);
    comm->freeWhenIdle = true;
    ++comm->callsInside;  // abort's own, so that no call frees it under commAbort
  }
  commAbort(comm);
  if (leave(comm)) delete comm;
  return CC_SUCCESS;
}

}  // namespace cc
