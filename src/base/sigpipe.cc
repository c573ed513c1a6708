#include "base/sigpipe.h"

#include <pthread.h>

#include <cerrno>
#include <ctime>

namespace cc {

SigpipeBlock::SigpipeBlock() {
  sigset_t pipe, previous;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  if (pthread_sigmask(SIG_BLOCK, &pipe, &previous) == 0) blockedHere_ = !sigismember(&previous, SIGPIPE);
}

SigpipeBlock::~SigpipeBlock() {
  if (!blockedHere_) return;
  sigset_t pipe, pending;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  // A SIGPIPE raised by this thread's writes is pending for this thread (it
  // is thread-directed); take it so that unblocking does not deliver it.
  if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
    const timespec now{0, 0};
    while (sigtimedwait(&pipe, nullptr, &now) == -1 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_UNBLOCK, &pipe, nullptr);
}

}  // namespace cc
