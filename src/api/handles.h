// Which communicator handles are live, and the calls inside each.
//
// A handle is live from cc_comm_init_rank until cc_comm_destroy or
// cc_comm_abort. Every entry point enters the communicator through a
// CommEntry, which looks the handle up and counts the call in one step under
// one lock, so a destroyed handle (a double destroy, a call after destroy, a
// group queued before destroy) is refused with CC_INVALID_USAGE instead of
// touching freed memory, and abort can never free a communicator between
// another thread's check and its call. The memory of a destroyed handle may
// be reused by a later communicator: a stale handle then names that one (as
// a dangling pointer does in any C API).
#pragma once

#include "compressedcoll.h"

namespace cc {

// Makes `comm` live; it was just created.
void registerComm(cc_comm_t comm);

// One API call inside a communicator.
class CommEntry {
 public:
  // `call` names the entry point in the error.
  CommEntry(cc_comm_t comm, const char* call);
  ~CommEntry();
  CommEntry(const CommEntry&) = delete;
  CommEntry& operator=(const CommEntry&) = delete;
  // CC_SUCCESS when the handle was live (the call is counted), else the error.
  cc_result_t result() const { return result_; }

 private:
  cc_comm_t comm_;
  cc_result_t result_;
};

// cc_comm_destroy: ends the handle's life and frees it; refused while a call
// is inside (use abort from another thread) and for a handle not live.
cc_result_t destroyComm(cc_comm_t comm);
// cc_comm_abort: ends the handle's life, breaks its connections (calls
// inside return promptly with an error saying so) and frees it when the last
// call inside has returned.
cc_result_t abortComm(cc_comm_t comm);

}  // namespace cc
