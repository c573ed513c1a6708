#include "switch/daemon.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "base/error.h"

namespace cc {
namespace switchd {
namespace {

constexpr int kBatch = 64;
constexpr size_t kReceiveBytes = 9216;  // above any datagram we accept: longer ones come back truncated
constexpr int kSocketBufferBytes = 64 << 20;

double nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

Daemon::Daemon(const Options& options) : options_(options), dataplane_(options) {}

cc_result_t Daemon::start() {
  sockaddr_storage address;
  socklen_t length = 0;
  CC_CHECK(resolveUdpAddress(options_.listen, "--listen", true, &address, &length));
  CC_CHECK(socket_.bind(reinterpret_cast<const sockaddr*>(&address), length));
  int granted = 0;
  socket_.setBuffers(kSocketBufferBytes, &granted);
  if (granted < (8 << 20) && !options_.quiet) {
    std::fprintf(stderr,
                 "cc_switchd: the receive buffer is %d bytes (net.core.rmem_max; run as root or raise it): bursts "
                 "beyond it are lost and retransmitted\n",
                 granted);
  }
  publish();
  return CC_SUCCESS;
}

std::string Daemon::address() const {
  const sockaddr_storage local = socket_.localAddress();
  return udpAddressString(reinterpret_cast<const sockaddr*>(&local));
}

void Daemon::stop() {
  stopping_.store(true);
  socket_.interrupt();
}

void Daemon::publish() {
  std::lock_guard<std::mutex> lock(mutex_);
  snapshot_ = dataplane_.counters();
  jobsSnapshot_ = dataplane_.jobs();
  slotsFreeSnapshot_ = dataplane_.slotsFree();
}

Counters Daemon::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return snapshot_;
}

int Daemon::jobs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return jobsSnapshot_;
}

int Daemon::slotsFree() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slotsFreeSnapshot_;
}

std::string Daemon::countersLine() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return formatCounters(snapshot_, jobsSnapshot_, slotsFreeSnapshot_);
}

void Daemon::flush(std::vector<Outgoing>& out) {
  std::vector<Datagram> batch(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    batch[i].data = const_cast<uint8_t*>(out[i].data);
    batch[i].bytes = out[i].bytes;
    batch[i].peer = out[i].to;
    batch[i].peerLength = out[i].toLength;
  }
  Counters& counters = dataplane_.mutableCounters();
  size_t done = 0;
  int stalls = 0;
  while (done < batch.size()) {
    int sent = 0;
    if (socket_.send(batch.data() + done, static_cast<int>(batch.size() - done), false, &sent) != CC_SUCCESS) {
      sent = 1;  // a datagram the kernel refused outright: dropped, like a lost one
    }
    for (int i = 0; i < sent; ++i) {
      ++counters.tx;
      counters.txBytes += batch[done + i].bytes;
    }
    done += static_cast<size_t>(sent);
    if (done < batch.size()) {
      // The socket's buffer is full: wait a little for it, but never let
      // one slow port stall the whole switch.
      bool readable = false, writable = false;
      if (++stalls > 10 || socket_.wait(10, true, &readable, &writable) != CC_SUCCESS || !writable) {
        counters.txDropped += batch.size() - done;
        break;
      }
    }
  }
  out.clear();
  dataplane_.sent();
}

cc_result_t Daemon::run(int signalFd) {
  std::vector<uint8_t> buffers(kBatch * kReceiveBytes);
  std::vector<Datagram> batch(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    batch[i].data = buffers.data() + i * kReceiveBytes;
    batch[i].capacity = kReceiveBytes;
  }
  std::vector<Outgoing> out;
  out.reserve(4 * kBatch * 8);
  double nextStats = options_.statsEvery > 0 ? nowSeconds() + options_.statsEvery : 0;
  double nextTick = nowSeconds() + 0.1;
  double lastPublish = 0;
  while (!stopping_.load()) {
    double now = nowSeconds();
    int timeoutMs = static_cast<int>((nextTick - now) * 1000) + 1;
    if (nextStats > 0 && (nextStats - now) * 1000 + 1 < timeoutMs) timeoutMs = static_cast<int>((nextStats - now) * 1000) + 1;
    if (timeoutMs < 0) timeoutMs = 0;
    pollfd fds[2] = {{socket_.fd(), POLLIN, 0}, {signalFd, POLLIN, 0}};
    // The socket's wake-up eventfd is checked by stop() through stopping_;
    // poll wakes within the tick at worst, and stop() also interrupts.
    bool readable = false;
    if (signalFd >= 0) {
      const int rc = ::poll(fds, 2, timeoutMs);
      if (rc < 0 && errno != EINTR) return setError(CC_SYSTEM_ERROR, "poll: %s", std::strerror(errno));
      readable = rc > 0 && (fds[0].revents & (POLLIN | POLLERR)) != 0;
      if (rc > 0 && (fds[1].revents & POLLIN) != 0) {
        signalfd_siginfo info;
        while (::read(signalFd, &info, sizeof(info)) == sizeof(info)) {
          if (info.ssi_signo == SIGUSR1) {
            std::fprintf(stderr, "cc_switchd: %s\n", dataplane_.countersLine().c_str());
          } else {
            stopping_.store(true);
          }
        }
      }
    } else {
      CC_CHECK(socket_.wait(timeoutMs, false, &readable, nullptr));
    }
    if (readable) {
      // Drain what is queued, a bounded number of batches between timer checks.
      for (int round = 0; round < 64 && !stopping_.load(); ++round) {
        int received = 0;
        CC_CHECK(socket_.receive(batch.data(), kBatch, &received));
        if (received == 0) break;
        now = nowSeconds();
        for (int i = 0; i < received; ++i) {
          dataplane_.handle(static_cast<const uint8_t*>(batch[i].data), batch[i].bytes, batch[i].truncated,
                            reinterpret_cast<const sockaddr*>(&batch[i].peer), batch[i].peerLength, now, &out);
        }
        flush(out);
        if (received < kBatch) break;
      }
      // Let the next packets gather before the next wake-up (interrupt
      // moderation): on shared cores a wake-up per datagram costs more than
      // the datagram; a window of jumbo packets spans milliseconds of
      // link time, so --coalesce-us of delay costs nothing there.
      if (options_.coalesceMicros > 0 && dataplane_.jobs() > 0) {
        const timespec pause{0, static_cast<long>(options_.coalesceMicros) * 1000};
        nanosleep(&pause, nullptr);
      }
    }
    now = nowSeconds();
    if (now >= nextTick) {
      dataplane_.tick(now);
      flush(out);
      nextTick = now + 0.1;
    }
    if (nextStats > 0 && now >= nextStats) {
      std::fprintf(stderr, "cc_switchd: %s\n", dataplane_.countersLine().c_str());
      nextStats = now + options_.statsEvery;
    }
    // Readers (tests) see figures at most a millisecond old, or exact ones
    // once the daemon is quiet; the busy path does not pay for a copy per wake-up.
    if (!readable || now - lastPublish > 1e-3) {
      publish();
      lastPublish = now;
    }
  }
  publish();
  return CC_SUCCESS;
}

}  // namespace switchd
}  // namespace cc
