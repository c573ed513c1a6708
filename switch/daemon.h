// cc_switchd's event loop: one socket, one thread; recvmmsg batches into the
// dataplane, sendmmsg batches of its answers. A class, so that tests and the
// benchmark run the daemon in a thread of their own process.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "switch/dataplane.h"
#include "transports/udp/udp_socket.h"

namespace cc {
namespace switchd {

class Daemon {
 public:
  explicit Daemon(const Options& options);
  // Binds the listening address (port 0: any free port).
  cc_result_t start();
  // "127.0.0.1:40123": the address bound.
  std::string address() const;
  // Runs until stop() (or `signalFd` reports SIGTERM/SIGINT; SIGUSR1 prints
  // the counters). Returns CC_SUCCESS on a clean stop.
  cc_result_t run(int signalFd = -1);
  // From any thread.
  void stop();
  // Copies taken after every batch, readable from any thread.
  Counters counters() const;
  int jobs() const;
  int slotsFree() const;
  std::string countersLine() const;

 private:
  void publish();
  void flush(std::vector<Outgoing>& out);

  Options options_;
  UdpSocket socket_;
  Dataplane dataplane_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  Counters snapshot_;
  int jobsSnapshot_ = 0;
  int slotsFreeSnapshot_ = 0;
};

}  // namespace switchd
}  // namespace cc
