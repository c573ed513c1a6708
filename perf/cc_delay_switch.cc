// Userspace delay switch for perf/cluster.sh --delay on kernels without the
// netem qdisc (CONFIG_NET_SCH_NETEM). See docs/cluster.md, "Delay switch".
//
// An L2 learning switch over TAP devices: it creates one TAP device per port
// (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, TSO/checksum offload) in its own
// network namespace; the caller then moves each device into a host namespace
// (the open file descriptor stays bound to the device) where it becomes that
// host's eth0. Every Ethernet frame a host sends is read here, timestamped,
// and written to the destination port (the learned one; every other port for
// broadcast, multicast and unknown destinations) no earlier than arrival +
// DELAY: a one-way host-to-host delay. Optionally each output port is paced
// by a token bucket (the switch-to-host link rate, like tbf behind netem) and
// frames are dropped at random (loss per one-way path, drawn once at ingress).
//
//   cc_delay_switch --ports NAME[,NAME...] [--delay-ns NS | --delay-us US]
//                   [--rate BITS_PER_S --burst BYTES] [--limit BYTES]
//                   [--mtu BYTES] [--loss PCT] [--spin-us US] [--poll-us US]
//                   [--rt PRIO] [--no-offload] [--seed N]
//
// Two threads: a reader (epoll over the TAP fds) that learns source MACs and
// appends each frame with its arrival time to a bounded single-producer /
// single-consumer byte ring per output port, and a writer that sleeps until
// shortly before the earliest head is due (ppoll with 1 ns timer slack; the
// lead adapts to how late sleeps wake here), busy-waits the rest and writes
// it. Frames of one output port leave in order. A frame that does not fit in
// its queue (--limit wire bytes) is dropped and counted. "ready" is printed
// on stdout once every port exists; on SIGTERM/SIGINT/SIGHUP the threads stop,
// counters (and how late frames left) go to stderr, exit 0. SIGUSR1 prints
// the counters without stopping.
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int kMaxPorts = 1024;
constexpr size_t kReadBuf = 262144;  // larger than any frame a TAP hands us (64 KiB GSO)
// struct virtio_net_hdr of <linux/virtio_net.h> (which C++ cannot include: a
// member there is named `class`); little-endian on the hosts this runs on.
struct virtio_net_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
static_assert(sizeof(virtio_net_hdr) == 10, "virtio_net_hdr is 10 bytes");
constexpr uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_NONE = 0;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV6 = 4;
constexpr uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

constexpr int64_t kMaxSleepNs = 200000;  // longest timed sleep of the writer
constexpr int kReadBatch = 64;      // frames per port per epoll round (fairness)

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

[[noreturn]] void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("cc_delay_switch: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::exit(2);
}

struct Options {
  std::vector<std::string> ports;
  int64_t delayNs = 0;
  double rateBits = 0;      // 0: no pacing
  int64_t burst = 0;        // token bucket depth, bytes (0: one max frame)
  int64_t limit = 4 << 20;  // per-port queue, bytes
  bool offload = true;  // IFF_VNET_HDR + TSO/checksum offload
  int mtu = 1500;
  double lossPct = 0;
  int64_t spinNs = -1;  // -1: adaptive
  int64_t pollNs = 0;
  int rtPriority = 0;  // SCHED_FIFO priority of the reader and writer, 0: off
  uint64_t seed = 0;
};

// Bounded single-producer (reader) / single-consumer (writer) queue of
// variable-length records in a ring of bytes. A record (header + frame,
// padded to 16 bytes) never wraps: where it does not fit before the end of
// the ring, a skip marker fills the rest and the record starts at 0.
class FrameQueue {
 public:
  struct Rec {
    int64_t t;      // arrival time
    uint32_t len;   // bytes of data (kSkip: skip to the ring's start)
    uint32_t wire;  // bytes on the wire (a GSO frame counts every segment's headers)
  };
  static constexpr uint32_t kSkip = 0xffffffffu;

  FrameQueue(int64_t limitBytes, size_t maxRecord) : limit_(limitBytes) {
    size_t need = size_t(limitBytes) + 2 * (maxRecord + sizeof(Rec) + 16);
    cap_ = 4096;
    while (cap_ < need) cap_ *= 2;
    // Not value-initialised: pages are touched only when used.
    mem_.reset(new unsigned char[cap_]);
  }

  // Producer side. False when full: queued frames would exceed the byte
  // limit (counted in wire bytes, like tbf's limit), or no room in the ring.
  bool push(const unsigned char* data, uint32_t len, uint32_t wire, int64_t t) {
    if (bytes_.load(std::memory_order_relaxed) + int64_t(wire) > limit_) return false;
    uint64_t tail = tail_.load(std::memory_order_relaxed);
    uint64_t head = head_.load(std::memory_order_acquire);
    size_t rec = (sizeof(Rec) + len + 15) & ~size_t(15);
    size_t pos = size_t(tail & (cap_ - 1));
    size_t pad = cap_ - pos < rec ? cap_ - pos : 0;
    if (cap_ - (tail - head) < pad + rec) return false;
    if (pad) {
      Rec skip{0, kSkip, 0};
      std::memcpy(mem_.get() + pos, &skip, sizeof skip);
      tail += pad;
      pos = 0;
    }
    Rec r{t, len, wire};
    std::memcpy(mem_.get() + pos, &r, sizeof r);
    std::memcpy(mem_.get() + pos + sizeof(Rec), data, len);
    bytes_.fetch_add(wire, std::memory_order_relaxed);
    tail_.store(tail + rec, std::memory_order_release);
    return true;
  }

  // Consumer side: the head record, or false when empty.
  bool front(Rec* r, const unsigned char** data) {
    for (;;) {
      uint64_t head = head_.load(std::memory_order_relaxed);
      if (head == tail_.load(std::memory_order_acquire)) return false;
      size_t pos = size_t(head & (cap_ - 1));
      std::memcpy(r, mem_.get() + pos, sizeof *r);
      if (r->len == kSkip) {
        head_.store(head + (cap_ - pos), std::memory_order_release);
        continue;
      }
      *data = mem_.get() + pos + sizeof(Rec);
      return true;
    }
  }
  void pop(const Rec& r) {
    bytes_.fetch_sub(r.wire, std::memory_order_relaxed);
    size_t rec = (sizeof(Rec) + r.len + 15) & ~size_t(15);
    head_.store(head_.load(std::memory_order_relaxed) + rec, std::memory_order_release);
  }

 private:
  const int64_t limit_;
  size_t cap_ = 0;  // a power of two
  std::unique_ptr<unsigned char[]> mem_;
  alignas(64) std::atomic<uint64_t> head_{0};
  alignas(64) std::atomic<uint64_t> tail_{0};
  alignas(64) std::atomic<int64_t> bytes_{0};
};

struct PortStats {
  // Written by the reader thread only.
  uint64_t rxFrames = 0, rxBytes = 0, runts = 0, oversize = 0, lost = 0, filtered = 0,
           flooded = 0, readErrors = 0;
  // Written by the writer thread only.
  uint64_t txFrames = 0, txBytes = 0, writeErrors = 0, paced = 0;
  // Written by the reader thread only (drops at this port's output queue).
  uint64_t queueDrops = 0;
};

struct Port {
  std::string name;
  int fd = -1;
  std::unique_ptr<FrameQueue> q;
  PortStats st;
  // Writer-only pacing state.
  double tokens = 0;
  int64_t tokensAt = 0;
  bool headPaced = false;  // the head frame waited for tokens
};

// Lateness of each written frame: write time - due time.
struct Lateness {
  static constexpr int kBuckets = 8;
  static constexpr int64_t kEdgesUs[kBuckets - 1] = {2, 5, 10, 20, 50, 100, 1000};
  uint64_t count[kBuckets] = {};
  uint64_t n = 0;
  double sumNs = 0;
  int64_t maxNs = 0;
  void add(int64_t ns) {
    int b = 0;
    while (b < kBuckets - 1 && ns > kEdgesUs[b] * 1000) ++b;
    ++count[b];
    ++n;
    sumNs += double(ns);
    maxNs = std::max(maxNs, ns);
  }
};
constexpr int64_t Lateness::kEdgesUs[];

class Switch {
 public:
  explicit Switch(const Options& o) : o_(o) {
    // Ethernet header + one VLAN tag; with offloads, GSO frames up to 64 KiB.
    maxFrame_ = o.offload ? kReadBuf - 1 : size_t(o.mtu) + 18;
    vnet_ = o.offload ? sizeof(virtio_net_hdr) : 0;
    if (o.rateBits > 0) {
      bytesPerNs_ = o.rateBits / 8e9;
      burst_ = double(std::max<int64_t>(o.burst, int64_t(o.mtu) + 18));
    }
    if (o.lossPct > 0) lossThreshold_ = uint64_t(std::ldexp(std::min(o.lossPct, 100.0) / 100, 64) - 1);
    rng_ = o.seed ? o.seed : (uint64_t(nowNs()) * 0x9E3779B97F4A7C15ull) | 1;
    wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    stopFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakeFd_ < 0 || stopFd_ < 0) die("eventfd: %s", std::strerror(errno));
    for (const std::string& name : o.ports) {
      auto p = std::make_unique<Port>();
      p->name = name;
      p->fd = openTap(name, o.offload);
      p->q = std::make_unique<FrameQueue>(o.limit, maxFrame_);
      p->tokens = burst_;
      ports_.push_back(std::move(p));
    }
  }

  void start() {
    reader_ = std::thread([this] { readerLoop(); });
    writer_ = std::thread([this] { writerLoop(); });
    if (o_.rtPriority > 0) {
      sched_param sp{};
      sp.sched_priority = o_.rtPriority;
      for (std::thread* t : {&reader_, &writer_}) {
        int err = pthread_setschedparam(t->native_handle(), SCHED_FIFO, &sp);
        if (err) std::fprintf(stderr, "cc_delay_switch: SCHED_FIFO %d: %s (running without)\n", o_.rtPriority, std::strerror(err));
      }
    }
  }

  void stop() {
    stop_.store(true);
    uint64_t one = 1;
    if (write(stopFd_, &one, sizeof one) < 0) {}
    if (write(wakeFd_, &one, sizeof one) < 0) {}
    reader_.join();
    writer_.join();
  }

  // Safe while running: counters are plain integers read racily (approximate).
  void printStats(FILE* f) const {
    PortStats tot;
    std::fprintf(f,
                 "cc_delay_switch: delay %.3f us, rate %s, %zu ports\n"
                 "%-10s %10s %12s %10s %12s %8s %8s %8s %8s %8s\n",
                 double(o_.delayNs) / 1000,
                 bytesPerNs_ > 0 ? (std::to_string(int64_t(o_.rateBits)) + " bit/s").c_str() : "unpaced",
                 ports_.size(), "port", "rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "q_drops",
                 "lost", "oversize", "wr_err", "flooded");
    for (const auto& p : ports_) {
      const PortStats& s = p->st;
      std::fprintf(f, "%-10s %10" PRIu64 " %12" PRIu64 " %10" PRIu64 " %12" PRIu64 " %8" PRIu64
                      " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 "\n",
                   p->name.c_str(), s.rxFrames, s.rxBytes, s.txFrames, s.txBytes, s.queueDrops, s.lost,
                   s.oversize + s.runts, s.writeErrors, s.flooded);
      tot.rxFrames += s.rxFrames;
      tot.rxBytes += s.rxBytes;
      tot.txFrames += s.txFrames;
      tot.txBytes += s.txBytes;
      tot.queueDrops += s.queueDrops;
      tot.lost += s.lost;
      tot.oversize += s.oversize + s.runts;
      tot.writeErrors += s.writeErrors;
      tot.paced += s.paced;
      tot.readErrors += s.readErrors;
    }
    const Lateness& l = late_;
    std::fprintf(f,
                 "cc_delay_switch: total rx %" PRIu64 " frames, tx %" PRIu64 " frames, queue drops %" PRIu64
                 ", lost %" PRIu64 ", oversize/runt %" PRIu64 ", write errors %" PRIu64 ", read errors %" PRIu64
                 ", held by the rate %" PRIu64 "; the others' lateness after arrival + delay: mean %.1f us, max %.1f us"
                 "; spin margin %.1f us\n",
                 tot.rxFrames, tot.txFrames, tot.queueDrops, tot.lost, tot.oversize, tot.writeErrors,
                 tot.readErrors, tot.paced, l.n ? l.sumNs / double(l.n) / 1000 : 0.0, double(l.maxNs) / 1000, double(margin()) / 1000);
    if (l.n) {
      std::fprintf(f, "cc_delay_switch: lateness histogram:");
      for (int b = 0; b < Lateness::kBuckets; ++b) {
        if (b < Lateness::kBuckets - 1)
          std::fprintf(f, " <=%" PRId64 "us %.2f%%", Lateness::kEdgesUs[b], 100.0 * double(l.count[b]) / double(l.n));
        else
          std::fprintf(f, " >%" PRId64 "us %.2f%%", Lateness::kEdgesUs[b - 1], 100.0 * double(l.count[b]) / double(l.n));
      }
      std::fputc('\n', f);
    }
    std::fflush(f);
  }

 private:
  static int openTap(const std::string& name, bool offload) {
    if (name.empty() || name.size() >= IFNAMSIZ) die("bad port name '%s'", name.c_str());
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun: %s", std::strerror(errno));
    ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF %s: %s", name.c_str(), std::strerror(errno));
    if (offload) {
      // Every frame carries a virtio_net_hdr; the host's stack may hand us
      // TCP segments of up to 64 KiB with the checksum left to do (and the
      // receiving stack takes them as they are): ~40x fewer frames.
      int sz = int(sizeof(virtio_net_hdr));
      if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) die("TUNSETVNETHDRSZ %s: %s", name.c_str(), std::strerror(errno));
      if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0)
        die("TUNSETOFFLOAD %s: %s (try --no-offload)", name.c_str(), std::strerror(errno));
    }
    return fd;
  }

  uint64_t nextRandom() {  // xorshift64*
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 0x2545F4914F6CDD1Dull;
  }

  static uint64_t macKey(const unsigned char* m) {
    uint64_t k = 0;
    for (int i = 0; i < 6; ++i) k = (k << 8) | m[i];
    return k;
  }

  // Bytes on the wire of an Ethernet frame f of len bytes: a GSO frame
  // counts the headers of every segment it will be cut into (as tbf does).
  static uint32_t wireBytes(const virtio_net_hdr* vh, const unsigned char* f, size_t len) {
    if (!vh || vh->gso_type == VIRTIO_NET_HDR_GSO_NONE || vh->gso_size == 0) return uint32_t(len);
    size_t hl = vh->hdr_len;
    if (vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      size_t l4 = vh->csum_start;
      uint8_t type = vh->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
      if ((type == VIRTIO_NET_HDR_GSO_TCPV4 || type == VIRTIO_NET_HDR_GSO_TCPV6) && l4 + 13 < len)
        hl = l4 + size_t(f[l4 + 12] >> 4) * 4;
      else
        hl = l4 + 8;
    }
    if (hl == 0 || hl >= len) return uint32_t(len);
    size_t segs = (len - hl + vh->gso_size - 1) / vh->gso_size;
    return uint32_t(len + (segs - 1) * hl);
  }

  // Reader thread: one frame (with its virtio_net_hdr when offloading) of
  // len bytes from port `in`, arrived at time t.
  bool handleFrame(int in, const unsigned char* pkt, size_t len, int64_t t) {
    PortStats& s = ports_[in]->st;
    ++s.rxFrames;
    if (len < vnet_ + 14) {
      ++s.runts;
      return false;
    }
    if (len - vnet_ > maxFrame_) {
      ++s.oversize;
      return false;
    }
    virtio_net_hdr vh;
    if (vnet_) std::memcpy(&vh, pkt, sizeof vh);
    const unsigned char* f = pkt + vnet_;
    uint32_t wire = wireBytes(vnet_ ? &vh : nullptr, f, len - vnet_);
    s.rxBytes += wire;
    if (!(f[6] & 1)) macTable_[macKey(f + 6)] = in;  // learn unicast sources
    if (lossThreshold_ && nextRandom() <= lossThreshold_) {
      ++s.lost;
      return false;
    }
    int out = -1;
    if (!(f[0] & 1)) {
      auto it = macTable_.find(macKey(f));
      if (it != macTable_.end()) out = it->second;
    }
    bool queued = false;
    auto enqueue = [&](int p) {
      if (ports_[p]->q->push(pkt, uint32_t(len), wire, t))
        queued = true;
      else
        ++ports_[p]->st.queueDrops;
    };
    if (out == in) {
      ++s.filtered;
    } else if (out >= 0) {
      enqueue(out);
    } else {
      ++s.flooded;
      for (int p = 0; p < int(ports_.size()); ++p)
        if (p != in) enqueue(p);
    }
    return queued;
  }

  void wakeWriter(int64_t due) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    int64_t d = writerDeadline_.load(std::memory_order_relaxed);
    if (due < d && writerDeadline_.compare_exchange_strong(d, 0)) {
      uint64_t one = 1;
      if (write(wakeFd_, &one, sizeof one) < 0) {}
    }
  }

  void readerLoop() {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = uint32_t(ports_.size());
    if (epoll_ctl(ep, EPOLL_CTL_ADD, stopFd_, &ev) < 0) die("epoll_ctl: %s", std::strerror(errno));
    for (size_t i = 0; i < ports_.size(); ++i) {
      ev.data.u32 = uint32_t(i);
      if (epoll_ctl(ep, EPOLL_CTL_ADD, ports_[i]->fd, &ev) < 0) die("epoll_ctl: %s", std::strerror(errno));
    }
    std::vector<unsigned char> buf(kReadBuf);
    std::vector<epoll_event> evs(ports_.size() + 1);
    int64_t lastFrame = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      // Busy-poll for --poll-us after the last frame, then block.
      bool polling = o_.pollNs > 0 && nowNs() - lastFrame < o_.pollNs;
      int n = epoll_wait(ep, evs.data(), int(evs.size()), polling ? 0 : -1);
      if (n == 0) cpuRelax();
      if (n < 0) {
        if (errno == EINTR) continue;
        die("epoll_wait: %s", std::strerror(errno));
      }
      for (int k = 0; k < n; ++k) {
        uint32_t i = evs[k].data.u32;
        if (i >= ports_.size()) continue;  // stop
        Port& p = *ports_[i];
        bool any = false;
        int64_t firstT = 0;
        for (int r = 0; r < kReadBatch; ++r) {
          ssize_t len = read(p.fd, buf.data(), buf.size());
          if (len < 0) {
            if (errno != EAGAIN && errno != EINTR) ++p.st.readErrors;
            break;
          }
          int64_t t = nowNs();
          lastFrame = t;
          if (handleFrame(int(i), buf.data(), size_t(len), t) && !any) {
            any = true;
            firstT = t;
            wakeWriter(firstT + o_.delayNs);  // wake per frame only if it sleeps too long
          }
        }
      }
    }
    close(ep);
  }

  // Writer: due time of port p's head frame (len bytes on the wire, arrived
  // at t), now = now.
  int64_t dueOf(Port& p, int64_t t, uint32_t len, int64_t now) {
    int64_t due = t + o_.delayNs;
    if (bytesPerNs_ > 0) {
      if (now > p.tokensAt) {
        p.tokens = std::min(burst_, p.tokens + double(now - p.tokensAt) * bytesPerNs_);
        p.tokensAt = now;
      }
      if (p.tokens < double(len)) {
        due = std::max(due, now + int64_t(std::ceil((double(len) - p.tokens) / bytesPerNs_)));
        p.headPaced = true;
      }
    }
    return due;
  }

  // Writes every due frame; returns the earliest due time of what is left.
  int64_t flushDue() {
    int64_t earliest = kNever;
    int64_t now = nowNs();
    for (auto& pp : ports_) {
      Port& p = *pp;
      FrameQueue::Rec r;
      const unsigned char* data;
      while (p.q->front(&r, &data)) {
        int64_t due = dueOf(p, r.t, r.wire, now);
        if (due > now) {
          earliest = std::min(earliest, due);
          break;
        }
        // The frame leaves the switch now. Lateness counts only frames the
        // rate did not hold back (their wait is queueing, not the delay).
        if (p.headPaced)
          ++p.st.paced;
        else
          late_.add(now - due);
        p.headPaced = false;
        ssize_t w = write(p.fd, data, r.len);
        now = nowNs();
        if (w == ssize_t(r.len)) {
          ++p.st.txFrames;
          p.st.txBytes += r.wire;
        } else {
          ++p.st.writeErrors;
        }
        if (bytesPerNs_ > 0) p.tokens -= double(r.wire);
        p.q->pop(r);
      }
    }
    return earliest;
  }

  int64_t earliestHead() {
    int64_t earliest = kNever, now = nowNs();
    for (auto& pp : ports_) {
      FrameQueue::Rec r;
      const unsigned char* data;
      if (pp->q->front(&r, &data)) earliest = std::min(earliest, dueOf(*pp, r.t, r.wire, now));
    }
    return earliest;
  }

  // How long before a due time the writer stops sleeping and busy-waits:
  // --spin-us, or (adaptive) the 90th percentile of how late the last 128
  // timed sleeps ended, plus 3 us, within [3 us, 150 us] (timer wake-ups in
  // VMs can end 30-100 us late).
  int64_t margin() const { return o_.spinNs >= 0 ? o_.spinNs : margin_; }
  void noteOvershoot(int64_t ns) {
    if (o_.spinNs >= 0) return;
    overshoot_[nOvershoot_++ % kOvershoots] = std::max<int64_t>(ns, 0);
    if (nOvershoot_ % 16 != 0) return;
    size_t n = std::min<size_t>(nOvershoot_, kOvershoots);
    int64_t v[kOvershoots];
    std::copy(overshoot_, overshoot_ + n, v);
    std::nth_element(v, v + n * 9 / 10, v + n);
    margin_ = std::min<int64_t>(std::max<int64_t>(v[n * 9 / 10] + 3000, 3000), 150000);
  }

  void writerLoop() {
    while (!stop_.load(std::memory_order_relaxed)) {
      int64_t e = flushDue();
      int64_t now = nowNs();
      if (e != kNever && e - now <= margin()) {
        cpuRelax();  // the last few microseconds: busy-wait
        continue;
      }
      // Publish how long we sleep; the reader wakes us for anything due
      // earlier. Re-check after publishing so no frame is missed.
      for (;;) {
        writerDeadline_.store(e, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        int64_t e2 = earliestHead();
        if (e2 >= e) break;
        e = e2;
      }
      now = nowNs();
      if (e == kNever || e - now > margin()) {
        pollfd pfd{wakeFd_, POLLIN, 0};
        if (e == kNever) {
          ppoll(&pfd, 1, nullptr, nullptr);
        } else {
          // At most kMaxSleepNs at a time: after long sleeps the (virtual)
          // CPU wakes later still (measured here: p50 65 us late after 1 ms,
          // 40 us after 200 us chunks).
          int64_t target = std::min(e - margin(), now + kMaxSleepNs);
          int64_t ns = target - now;
          timespec ts{time_t(ns / 1000000000), long(ns % 1000000000)};
          if (ppoll(&pfd, 1, &ts, nullptr) == 0) noteOvershoot(nowNs() - target);
        }
        uint64_t v;
        if (read(wakeFd_, &v, sizeof v) < 0) {}
      }
      writerDeadline_.store(0, std::memory_order_relaxed);
    }
  }

  const Options o_;
  size_t maxFrame_ = 0;  // longest Ethernet frame forwarded
  size_t vnet_ = 0;      // virtio_net_hdr bytes before each frame
  double bytesPerNs_ = 0;
  double burst_ = 0;
  uint64_t lossThreshold_ = 0;
  uint64_t rng_ = 1;
  int wakeFd_ = -1, stopFd_ = -1;
  std::vector<std::unique_ptr<Port>> ports_;
  std::unordered_map<uint64_t, int> macTable_;  // reader thread only
  Lateness late_;                                // writer thread only
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> writerDeadline_{0};  // 0: awake; kNever: idle
  // Writer only: the adaptive spin margin and its samples.
  static constexpr size_t kOvershoots = 128;
  int64_t margin_ = 50000;
  int64_t overshoot_[kOvershoots] = {};
  size_t nOvershoot_ = 0;
  std::thread reader_, writer_;
};

void usage(FILE* f) {
  std::fputs(
      "usage: cc_delay_switch --ports NAME[,NAME...] [options]\n"
      "Creates one TAP device per NAME and forwards Ethernet frames between them\n"
      "(MAC learning, flooding) after a fixed one-way delay.\n"
      "  --ports LIST        comma-separated TAP device names to create (1..1024)\n"
      "  --delay-ns NS       one-way delay in nanoseconds (default 0)\n"
      "  --delay-us US       one-way delay in microseconds (may be fractional)\n"
      "  --rate BITS         pace each output port at BITS bit/s (token bucket; default off)\n"
      "  --burst BYTES       token bucket depth (default: one frame)\n"
      "  --limit BYTES       per-port queue limit in wire bytes (default 4194304)\n"
      "  --mtu BYTES         the devices' MTU (default 1500): with --no-offload longer\n"
      "                      frames are dropped; the smallest token bucket\n"
      "  --no-offload        no virtio_net_hdr / TSO / checksum offload: every frame\n"
      "                      is at most MTU long (many more frames, more CPU)\n"
      "  --loss PCT          drop this percentage of frames at ingress (default 0)\n"
      "  --spin-us US        busy-wait the last US microseconds before a due time\n"
      "                      (default: adaptive, how late timed sleeps end here + 5 us)\n"
      "  --poll-us US        reader busy-polls the ports for US microseconds after each\n"
      "                      frame before it blocks (default 0)\n"
      "  --rt PRIO           run the reader and writer SCHED_FIFO at PRIO (1..99): wake-ups\n"
      "                      preempt busy ranks at once; the spin then takes a CPU from them\n"
      "  --seed N            loss random seed (default: from the clock)\n"
      "Prints 'ready' on stdout when every device exists; counters on stderr at exit\n"
      "(SIGTERM, SIGINT) and on SIGUSR1.\n",
      f);
}

double parseNum(const char* opt, const char* s, double lo, double hi) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) die("%s: bad value '%s'", opt, s);
  return v;
}

Options parseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    }
    if (a == "--no-offload") {
      o.offload = false;
      continue;
    }
    if (i + 1 >= argc) die("unknown option or missing value: '%s' (try --help)", a.c_str());
    const char* v = argv[++i];
    if (a == "--ports") {
      std::string s = v;
      size_t pos = 0;
      while (pos <= s.size()) {
        size_t c = s.find(',', pos);
        if (c == std::string::npos) c = s.size();
        o.ports.push_back(s.substr(pos, c - pos));
        pos = c + 1;
      }
    } else if (a == "--delay-ns") {
      o.delayNs = int64_t(parseNum(a.c_str(), v, 0, 1e11));
    } else if (a == "--delay-us") {
      o.delayNs = std::llround(parseNum(a.c_str(), v, 0, 1e8) * 1000);
    } else if (a == "--rate") {
      o.rateBits = parseNum(a.c_str(), v, 0, 1e15);
    } else if (a == "--burst") {
      o.burst = int64_t(parseNum(a.c_str(), v, 0, 1e10));
    } else if (a == "--limit") {
      o.limit = int64_t(parseNum(a.c_str(), v, 2048, 1e10));
    } else if (a == "--mtu") {
      o.mtu = int(parseNum(a.c_str(), v, 68, 65535));
    } else if (a == "--loss") {
      o.lossPct = parseNum(a.c_str(), v, 0, 100);
    } else if (a == "--spin-us") {
      o.spinNs = std::llround(parseNum(a.c_str(), v, 0, 1e6) * 1000);
    } else if (a == "--rt") {
      o.rtPriority = int(parseNum(a.c_str(), v, 0, 99));
    } else if (a == "--poll-us") {
      o.pollNs = std::llround(parseNum(a.c_str(), v, 0, 1e6) * 1000);
    } else if (a == "--seed") {
      o.seed = uint64_t(parseNum(a.c_str(), v, 0, 1.8e19));
    } else {
      die("unknown option '%s' (try --help)", a.c_str());
    }
  }
  if (o.ports.empty() || o.ports.size() > size_t(kMaxPorts)) die("--ports needs 1..%d names", kMaxPorts);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parseArgs(argc, argv);

  // Signals go to the main thread's sigwait only (blocked in every thread).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  // Sleeps must end on time: the default timer slack is 50 us.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  Switch sw(o);
  sw.start();
  std::printf("ready\n");
  std::fflush(stdout);

  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      sw.printStats(stderr);
      continue;
    }
    break;
  }
  sw.stop();
  sw.printStats(stderr);
  return 0;
}
