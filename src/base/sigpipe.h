// Keeps SIGPIPE from killing the process while this thread writes to sockets.
//
// A write to a socket whose peer is gone raises SIGPIPE in the writing
// thread, and its default action ends the process. Gloo's tcp pairs write
// with writev, which takes no MSG_NOSIGNAL, from the calling thread and from
// the device loop thread a communicator starts; a library must not change the
// process's disposition either. So every entry point that may reach a socket
// blocks SIGPIPE in its own thread for the duration of the call (threads it
// starts meanwhile, such as Gloo's loop, inherit the blocked mask for good),
// and a SIGPIPE the call raised is taken off this thread's pending set before
// the mask is restored: the failed write returns EPIPE, which the transport
// turns into CC_REMOTE_ERROR. If the caller already blocks SIGPIPE, nothing
// is touched (its pending signals are its own).
#pragma once

#include <signal.h>

namespace cc {

class SigpipeBlock {
 public:
  SigpipeBlock();
  ~SigpipeBlock();
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  bool blockedHere_ = false;
};

}  // namespace cc
