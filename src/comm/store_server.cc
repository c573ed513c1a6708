// The bootstrap store server: one thread per store, poll() over the listening
// socket, a wake-up eventfd and the client sockets, all non-blocking, so one
// slow or hostile client can never stall the ranks that are behaving.
//
// Lifetime: a store stops by itself once every rank joined and every joined
// rank disconnected again (nothing can ask it anything useful after that), or
// when the process exits (an atexit handler stops and joins every store thread,
// so no thread outlives main()). A fork()ed child inherits a copy of the
// registry but not the threads: it closes its copies of the stores' sockets
// (so the parent's clients still see the parent's store close) and never
// touches those stores again, which it recognises by their owner pid.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "comm/bootstrap.h"
#include "comm/store_protocol.h"

namespace cc {
namespace store {

std::string printableKey(const std::string& key) {
  constexpr size_t kShown = 80;
  std::string out;
  for (size_t i = 0; i < key.size() && i < kShown; ++i) {
    unsigned char ch = static_cast<unsigned char>(key[i]);
    if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
      out += static_cast<char>(ch);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", ch);
      out += hex;
    }
  }
  if (key.size() > kShown) out += "...(" + std::to_string(key.size()) + " bytes)";
  return out;
}

}  // namespace store

namespace {

using store::FrameReader;
using store::FrameWriter;
using store::Op;
using store::Status;

using Clock = std::chrono::steady_clock;

// The server re-checks its stop flag at least this often, so a lost wake-up
// can delay shutdown but never prevent it.
constexpr int kPollIntervalMs = 1000;
// One request in flight plus its header: a client that sends more before
// reading the reply breaks the request/reply protocol. Before its JOIN a
// connection gets room for one JOIN only.
constexpr size_t kMaxBufferedInput = store::kFrameHeaderBytes + store::kMaxFrameBytes;
constexpr size_t kMaxBufferedBeforeJoin = store::kFrameHeaderBytes + store::kMaxJoinFrameBytes;
// A rank sends its JOIN as soon as it connects; a connection that has not
// joined by then is dropped, and at most this many wait for their JOIN at
// once (the oldest makes room), so idle or hostile connections hold neither
// descriptors nor memory for long.
constexpr int kJoinDeadlineMs = 10000;
constexpr size_t kMaxUnjoinedClients = 64;
// accept() failing for want of descriptors (EMFILE, ENFILE) is retried after
// this pause, doubling up to the second, instead of at once.
constexpr int kFirstAcceptBackoffMs = 10;
constexpr int kMaxAcceptBackoffMs = 1000;

// Warnings that hostile traffic can repeat (drops, accept failures) are
// written at most once a second per kind; the next one says how many were
// left out.
class LogLimiter {
 public:
  // True when a message of `kind` may be written now; *suppressed is how many
  // of that kind were left out since the last one written.
  bool allow(int kind, uint64_t* suppressed) {
    Entry& entry = entries_[kind];
    const Clock::time_point now = Clock::now();
    if (entry.last != Clock::time_point() && now - entry.last < std::chrono::seconds(1)) {
      ++entry.suppressed;
      return false;
    }
    entry.last = now;
    *suppressed = entry.suppressed;
    entry.suppressed = 0;
    return true;
  }

 private:
  struct Entry {
    Clock::time_point last;
    uint64_t suppressed = 0;
  };
  std::unordered_map<int, Entry> entries_;
};
enum LogKind { kLogDropJoined = 1, kLogDropUnjoined, kLogAcceptFailed, kLogRefused };

// Equal in time independent of where the bytes differ.
bool sameSecret(const uint8_t* a, const uint8_t* b, size_t size) {
  volatile uint8_t difference = 0;
  for (size_t i = 0; i < size; ++i) difference = static_cast<uint8_t>(difference | (a[i] ^ b[i]));
  return difference == 0;
}
// Buffers that grew for a large value are released instead of kept per client.
constexpr size_t kKeepBufferCapacity = size_t{1} << 20;

struct Client {
  int fd = -1;
  std::string peer;  // "address:port" of the client, for log messages
  std::vector<char> in;
  std::vector<char> out;
  size_t outSent = 0;
  int rank = -1;  // -1 until its JOIN was accepted
  Clock::time_point acceptedAt;
  bool closeAfterReply = false;
  bool dead = false;
  // A GET or WAIT whose keys do not all exist yet. The client is synchronous,
  // so while it waits it has no other request to serve.
  bool waiting = false;
  Op waitOp = Op::Get;
  std::string getKey;
  std::vector<std::string> missingKeys;
  size_t keysAskedFor = 0;
  Clock::time_point waitDeadline;  // the request's timeout; Clock::time_point() for none

  bool hasOutput() const { return outSent < out.size(); }
};

class StoreServer {
 public:
  StoreServer(int listenFd, int wakeFd, uint64_t nonce, const uint8_t (&secret)[store::kSecretBytes],
              std::string address)
      : listenFd_(listenFd),
        wakeFd_(wakeFd),
        nonce_(nonce),
        address_(std::move(address)),
        ownerPid_(getpid()),
        ownedFds_{listenFd, wakeFd} {
    std::memcpy(secret_, secret, sizeof(secret_));
  }

  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  void start() { thread_ = std::thread([this] { run(); }); }

  void requestStop() {
    stop_.store(true);
    uint64_t one = 1;
    // Failure only means the counter is saturated: a wake-up is pending anyway.
    ssize_t ignored = write(wakeFd_, &one, sizeof(one));
    (void)ignored;
  }

  // Joins the thread and releases the wake-up descriptor, which the thread
  // leaves open so that requestStop() never writes to a recycled number.
  void join() {
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(fdMutex_);
    closeOwnedLocked(wakeFd_);
  }

  bool finished() const { return finished_.load(); }
  bool ownedByThisProcess() const { return ownerPid_ == getpid(); }
  std::mutex& fdMutex() { return fdMutex_; }

  // In a fork()ed child, with fdMutex held since the prepare handler: the
  // descriptors are the child's copies of the parent's sockets.
  void closeInheritedFdsInChild() {
    for (int fd : ownedFds_) close(fd);
    ownedFds_.clear();
  }

 private:
  void run();
  void serve();
  void acceptClients();
  void readFrom(Client& c);
  void flush(Client& c);
  bool pump(Client& c);
  void handleRequest(Client& c, const char* body, size_t size);
  void handleJoin(Client& c, FrameReader& r);
  void handleSet(Client& c, FrameReader& r);
  void handleGet(Client& c, FrameReader& r);
  void handleAdd(Client& c, FrameReader& r);
  void handleWait(Client& c, FrameReader& r);
  void keyWasSet(const std::string& key);
  void replyOk(Client& c, const std::string& payload = std::string());
  void replyError(Client& c, const std::string& reason, bool thenClose);
  void replyTimeout(Client& c);
  void expireWaitsAndJoins(Clock::time_point now);
  int pollTimeoutMs(Clock::time_point now) const;
  void makeRoomForUnjoined();
  void drop(Client& c, const std::string& reason);
  void disconnect(Client& c);
  bool storeBytesAllow(const std::string& key, size_t newValueBytes, std::string* reason) const;
  bool everyRankCameAndLeft() const {
    return nranks_ > 0 && static_cast<int>(joined_.size()) == nranks_ && connectedRanks_ == 0;
  }
  void closeOwnedLocked(int& fd) {
    if (fd < 0) return;
    close(fd);
    ownedFds_.erase(std::remove(ownedFds_.begin(), ownedFds_.end(), fd), ownedFds_.end());
    fd = -1;
  }

  int listenFd_;
  int wakeFd_;
  const uint64_t nonce_;
  uint8_t secret_[store::kSecretBytes];
  const std::string address_;
  const pid_t ownerPid_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};

  // Every descriptor this store has open, guarded so that a fork() (whose
  // prepare handler takes this mutex) sees a consistent list.
  std::mutex fdMutex_;
  std::vector<int> ownedFds_;

  // State below is touched by the store thread only.
  std::vector<std::unique_ptr<Client>> clients_;
  std::unordered_map<std::string, std::string> data_;
  size_t dataBytes_ = 0;
  int nranks_ = 0;  // 0 until the first rank joined
  int firstRank_ = -1;
  std::unordered_set<int> joined_;
  int connectedRanks_ = 0;
  size_t unjoinedClients_ = 0;
  Clock::time_point acceptPausedUntil_;
  int acceptBackoffMs_ = kFirstAcceptBackoffMs;
  LogLimiter logLimiter_;
};

void StoreServer::run() {
  try {
    serve();
  } catch (const std::exception& error) {
    // Only allocation failures can land here; the ranks see their connection
    // close instead of the process dying.
    CC_WARN("bootstrap store %s: stopping after an internal error: %s", address_.c_str(),
            error.what());
  }
  std::lock_guard<std::mutex> lock(fdMutex_);
  for (auto& c : clients_) closeOwnedLocked(c->fd);
  closeOwnedLocked(listenFd_);
  finished_.store(true);
}

void StoreServer::serve() {
  CC_INFO("bootstrap store %s: serving", address_.c_str());
  std::vector<pollfd> fds;
  while (!stop_.load()) {
    fds.clear();
    fds.push_back({wakeFd_, POLLIN, 0});
    // While accept() is paused for want of descriptors the listening socket
    // is left out, so a full backlog cannot spin the loop.
    const bool accepting = Clock::now() >= acceptPausedUntil_;
    fds.push_back({listenFd_, static_cast<short>(accepting ? POLLIN : 0), 0});
    for (const auto& c : clients_) {
      fds.push_back({c->fd, static_cast<short>(POLLIN | (c->hasOutput() ? POLLOUT : 0)), 0});
    }
    int ready = poll(fds.data(), fds.size(), pollTimeoutMs(Clock::now()));
    if (ready < 0) {
      if (errno == EINTR) continue;
      CC_WARN("bootstrap store %s: poll failed (%s), stopping", address_.c_str(),
              store::errnoText(errno).c_str());
      return;
    }
    if (fds[0].revents != 0) {
      uint64_t count;
      ssize_t ignored = read(wakeFd_, &count, sizeof(count));
      (void)ignored;
      continue;  // re-check the stop flag first
    }
    // New clients are appended, so the indices below still match fds.
    size_t polledClients = fds.size() - 2;
    if (fds[1].revents & POLLIN) acceptClients();
    for (size_t i = 0; i < polledClients; ++i) {
      Client& c = *clients_[i];
      short revents = fds[i + 2].revents;
      if (c.dead || revents == 0) continue;
      if (revents & (POLLIN | POLLHUP | POLLERR)) readFrom(c);
      if (!c.dead && (revents & POLLOUT)) flush(c);
    }
    // Serving one client's request can complete another's GET or WAIT, so
    // go round until nobody can make progress.
    bool progress = true;
    while (progress) {
      progress = false;
      for (size_t i = 0; i < clients_.size(); ++i) progress |= pump(*clients_[i]);
    }
    expireWaitsAndJoins(Clock::now());
    for (size_t i = 0; i < clients_.size(); ++i) pump(*clients_[i]);
    clients_.erase(std::remove_if(clients_.begin(), clients_.end(),
                                  [](const std::unique_ptr<Client>& c) { return c->dead; }),
                   clients_.end());
    if (everyRankCameAndLeft()) {
      CC_INFO("bootstrap store %s: all %d ranks joined and left, stopping", address_.c_str(),
              nranks_);
      return;
    }
  }
}

void StoreServer::acceptClients() {
  // Bounded so that a connection flood cannot starve the existing clients.
  for (int accepted = 0; accepted < 64; ++accepted) {
    sockaddr_storage peer{};
    socklen_t peerLen = sizeof(peer);
    int fd;
    {
      std::lock_guard<std::mutex> lock(fdMutex_);
      fd = accept4(listenFd_, reinterpret_cast<sockaddr*>(&peer), &peerLen,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) ownedFds_.push_back(fd);
    }
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EMFILE || err == ENFILE) {
        // Out of descriptors: an idle connection that never joined gives one
        // back, and the next accept waits instead of failing in a tight loop.
        makeRoomForUnjoined();
        acceptPausedUntil_ = Clock::now() + std::chrono::milliseconds(acceptBackoffMs_);
        acceptBackoffMs_ = std::min(2 * acceptBackoffMs_, kMaxAcceptBackoffMs);
      }
      uint64_t suppressed = 0;
      if (logLimiter_.allow(kLogAcceptFailed, &suppressed)) {
        CC_WARN("bootstrap store %s: accept failed: %s (retrying in %d ms; %" PRIu64 " more failures since "
                "the last warning)",
                address_.c_str(), store::errnoText(err).c_str(),
                err == EMFILE || err == ENFILE ? acceptBackoffMs_ / 2 : 0, suppressed);
      }
      return;
    }
    acceptBackoffMs_ = kFirstAcceptBackoffMs;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_unique<Client>();
    c->fd = fd;
    c->peer = sockaddrToString(peer, true);
    c->acceptedAt = Clock::now();
    CC_TRACE("bootstrap store %s: connection from %s", address_.c_str(), c->peer.c_str());
    if (unjoinedClients_ >= kMaxUnjoinedClients) makeRoomForUnjoined();
    ++unjoinedClients_;
    clients_.push_back(std::move(c));
  }
}

// Drops the connection that has waited longest for its JOIN.
void StoreServer::makeRoomForUnjoined() {
  Client* oldest = nullptr;
  for (auto& c : clients_) {
    if (!c->dead && c->rank < 0 && (oldest == nullptr || c->acceptedAt < oldest->acceptedAt)) oldest = c.get();
  }
  if (oldest != nullptr) drop(*oldest, "too many connections are waiting to join; the oldest goes");
}

int StoreServer::pollTimeoutMs(Clock::time_point now) const {
  Clock::time_point next = now + std::chrono::milliseconds(kPollIntervalMs);
  if (acceptPausedUntil_ > now) next = std::min(next, acceptPausedUntil_);
  for (const auto& c : clients_) {
    if (c->dead) continue;
    if (c->rank < 0) next = std::min(next, c->acceptedAt + std::chrono::milliseconds(kJoinDeadlineMs));
    if (c->waiting && c->waitDeadline != Clock::time_point()) next = std::min(next, c->waitDeadline);
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::max<long long>(0, ms) + 1);
}

void StoreServer::expireWaitsAndJoins(Clock::time_point now) {
  for (auto& c : clients_) {
    if (c->dead) continue;
    if (c->rank < 0 && now - c->acceptedAt >= std::chrono::milliseconds(kJoinDeadlineMs)) {
      drop(*c, "it did not join within " + std::to_string(kJoinDeadlineMs) + " ms of connecting");
      continue;
    }
    if (c->waiting && c->waitDeadline != Clock::time_point() && now >= c->waitDeadline) replyTimeout(*c);
  }
}

void StoreServer::readFrom(Client& c) {
  char buf[64 * 1024];
  for (;;) {
    // Asking for one byte more than allowed tells an overflowing client apart
    // from one that exactly filled its allowance.
    const size_t allowance = c.rank < 0 ? kMaxBufferedBeforeJoin : kMaxBufferedInput;
    size_t room = allowance > c.in.size() ? allowance - c.in.size() : 0;
    ssize_t n = recv(c.fd, buf, std::min(sizeof(buf), room + 1), 0);
    if (n > 0) {
      if (static_cast<size_t>(n) > room) {
        drop(c, c.rank < 0 ? "it sent more than one JOIN's worth of bytes before joining"
                           : "it sent another request before reading the reply to the previous one");
        return;
      }
      c.in.insert(c.in.end(), buf, buf + n);
      if (c.in.size() >= store::kFrameHeaderBytes) {
        uint32_t length = store::frameLength(c.in.data());
        const size_t limit = c.rank < 0 ? store::kMaxJoinFrameBytes : store::kMaxFrameBytes;
        if (length > limit) {
          drop(c, "it announced a message of " + std::to_string(length) + " bytes (the limit is " +
                      std::to_string(limit) + (c.rank < 0 ? " before joining)" : ")"));
          return;
        }
      }
      continue;
    }
    if (n == 0) {
      disconnect(c);
      return;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (c.rank >= 0) {
      CC_WARN("bootstrap store %s: lost rank %d (%s): %s", address_.c_str(), c.rank,
              c.peer.c_str(), store::errnoText(err).c_str());
    }
    disconnect(c);
    return;
  }
}

void StoreServer::flush(Client& c) {
  while (c.hasOutput()) {
    ssize_t n = send(c.fd, c.out.data() + c.outSent, c.out.size() - c.outSent, MSG_NOSIGNAL);
    if (n > 0) {
      c.outSent += static_cast<size_t>(n);
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (c.rank >= 0) {
      CC_WARN("bootstrap store %s: lost rank %d (%s) while replying: %s", address_.c_str(),
              c.rank, c.peer.c_str(), store::errnoText(err).c_str());
    }
    disconnect(c);
    return;
  }
  if (c.out.capacity() > kKeepBufferCapacity) {
    std::vector<char>().swap(c.out);
  } else {
    c.out.clear();
  }
  c.outSent = 0;
  if (c.closeAfterReply) disconnect(c);
}

// Moves one client forward by one step; true when something happened.
bool StoreServer::pump(Client& c) {
  if (c.dead) return false;
  if (c.hasOutput()) {
    size_t before = c.outSent;
    flush(c);
    bool moved = c.dead || c.outSent != before || !c.hasOutput();
    if (c.dead || c.hasOutput()) return moved;
  }
  if (c.waiting || c.closeAfterReply) return false;
  if (c.in.size() < store::kFrameHeaderBytes) return false;
  size_t frame = store::kFrameHeaderBytes + store::frameLength(c.in.data());
  if (c.in.size() < frame) return false;
  handleRequest(c, c.in.data() + store::kFrameHeaderBytes, frame - store::kFrameHeaderBytes);
  if (c.dead) return true;
  c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(frame));
  if (c.in.empty() && c.in.capacity() > kKeepBufferCapacity) std::vector<char>().swap(c.in);
  return true;
}

void StoreServer::handleRequest(Client& c, const char* body, size_t size) {
  FrameReader r(body, size);
  uint8_t opcode = r.u8();
  if (!r.ok()) {
    drop(c, "it sent an empty message");
    return;
  }
  Op op = static_cast<Op>(opcode);
  bool known = op == Op::Join || op == Op::Set || op == Op::Get || op == Op::Add || op == Op::Wait;
  if (!known) {
    drop(c, "it sent unknown operation " + std::to_string(opcode));
    return;
  }
  if (op != Op::Join && c.rank < 0) {
    replyError(c, "the first request on a connection must be JOIN", true);
    return;
  }
  switch (op) {
    case Op::Join: handleJoin(c, r); break;
    case Op::Set: handleSet(c, r); break;
    case Op::Get: handleGet(c, r); break;
    case Op::Add: handleAdd(c, r); break;
    case Op::Wait: handleWait(c, r); break;
  }
}

void StoreServer::handleJoin(Client& c, FrameReader& r) {
  uint32_t magic = r.u32();
  uint16_t version = r.u16();
  if (!r.ok() || magic != store::kProtocolMagic) {
    drop(c, "its JOIN is malformed (not a compressedcoll bootstrap client?)");
    return;
  }
  auto refuse = [&](const std::string& reason) {
    uint64_t suppressed = 0;
    if (logLimiter_.allow(kLogRefused, &suppressed)) {
      CC_INFO("bootstrap store %s: refused a JOIN from %s: %s (%" PRIu64 " more refused since the last message)",
              address_.c_str(), c.peer.c_str(), reason.c_str(), suppressed);
    }
    replyError(c, reason, true);
  };
  if (version != store::kProtocolVersion) {
    refuse("store protocol version " + std::to_string(version) + " is not supported (the root speaks " +
           std::to_string(store::kProtocolVersion) + "); every rank must run the same library");
    return;
  }
  uint64_t nonce = r.u64();
  uint8_t secret[store::kSecretBytes];
  for (uint8_t& byte : secret) byte = r.u8();
  int32_t rank = r.i32();
  int32_t nranks = r.i32();
  if (!r.complete()) {
    drop(c, "its JOIN is malformed (not a compressedcoll bootstrap client?)");
    return;
  }
  if (c.rank >= 0) {
    refuse("this connection already joined as rank " + std::to_string(c.rank));
    return;
  }
  if (nonce != nonce_) {
    refuse("this store serves another communicator (the unique id's nonce does not match; was "
           "the id of another job or an older cc_get_unique_id call used?)");
    return;
  }
  if (!sameSecret(secret, secret_, sizeof(secret_))) {
    refuse("the secret does not match (with CC_COMM_ID every rank must set the same CC_COMM_SECRET; "
           "otherwise pass every rank the id that cc_get_unique_id made)");
    return;
  }
  if (nranks < 1) {
    refuse("nranks must be at least 1, got " + std::to_string(nranks));
    return;
  }
  if (rank < 0 || rank >= nranks) {
    refuse("rank " + std::to_string(rank) + " is outside [0, " + std::to_string(nranks) + ")");
    return;
  }
  if (nranks_ != 0 && nranks != nranks_) {
    refuse("nranks mismatch: rank " + std::to_string(rank) + " says " + std::to_string(nranks) +
           " ranks but rank " + std::to_string(firstRank_) + " (the first to join) said " +
           std::to_string(nranks_));
    return;
  }
  if (joined_.count(rank) != 0) {
    refuse("rank " + std::to_string(rank) + " joined twice");
    return;
  }
  if (nranks_ == 0) {
    nranks_ = nranks;
    firstRank_ = rank;
  }
  joined_.insert(rank);
  ++connectedRanks_;
  --unjoinedClients_;
  c.rank = rank;
  CC_INFO("bootstrap store %s: rank %d of %d joined from %s (%zu joined)", address_.c_str(), rank,
          nranks, c.peer.c_str(), joined_.size());
  replyOk(c);
}

bool StoreServer::storeBytesAllow(const std::string& key, size_t newValueBytes,
                                  std::string* reason) const {
  auto it = data_.find(key);
  size_t oldBytes = it == data_.end() ? 0 : key.size() + it->second.size();
  size_t after = dataBytes_ - oldBytes + key.size() + newValueBytes;
  if (after <= store::kMaxStoreBytes) return true;
  *reason = "the store is full (" + std::to_string(store::kMaxStoreBytes) +
            " bytes of keys and values)";
  return false;
}

void StoreServer::handleSet(Client& c, FrameReader& r) {
  std::string key = r.str(store::kMaxKeyBytes);
  std::string value = r.str(store::kMaxValueBytes);
  if (!r.complete()) {
    drop(c, "its SET is malformed or exceeds the key/value size limits");
    return;
  }
  std::string reason;
  if (!storeBytesAllow(key, value.size(), &reason)) {
    replyError(c, reason, false);
    return;
  }
  auto it = data_.find(key);
  if (it != data_.end()) dataBytes_ -= key.size() + it->second.size();
  dataBytes_ += key.size() + value.size();
  data_[key] = std::move(value);
  CC_TRACE("bootstrap store %s: rank %d set '%s'", address_.c_str(), c.rank,
           store::printableKey(key).c_str());
  replyOk(c);
  keyWasSet(key);
}

void StoreServer::handleGet(Client& c, FrameReader& r) {
  const uint32_t timeoutMs = r.u32();
  std::string key = r.str(store::kMaxKeyBytes);
  if (!r.complete()) {
    drop(c, "its GET is malformed or its key exceeds the size limit");
    return;
  }
  auto it = data_.find(key);
  if (it != data_.end()) {
    replyOk(c, it->second);
    return;
  }
  c.waiting = true;
  c.waitOp = Op::Get;
  c.getKey = key;
  c.missingKeys.assign(1, key);
  c.keysAskedFor = 1;
  c.waitDeadline = timeoutMs == 0 ? Clock::time_point() : Clock::now() + std::chrono::milliseconds(timeoutMs);
}

void StoreServer::handleWait(Client& c, FrameReader& r) {
  const uint32_t timeoutMs = r.u32();
  uint32_t count = r.u32();
  if (!r.ok() || count > store::kMaxWaitKeys) {
    drop(c, "its WAIT is malformed or names more than " + std::to_string(store::kMaxWaitKeys) +
                " keys");
    return;
  }
  std::vector<std::string> missing;
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    std::string key = r.str(store::kMaxKeyBytes);
    if (r.ok() && data_.count(key) == 0) missing.push_back(std::move(key));
  }
  if (!r.complete()) {
    drop(c, "its WAIT is malformed or a key exceeds the size limit");
    return;
  }
  if (missing.empty()) {
    replyOk(c);
    return;
  }
  c.waiting = true;
  c.waitOp = Op::Wait;
  c.missingKeys = std::move(missing);
  c.keysAskedFor = count;
  c.waitDeadline = timeoutMs == 0 ? Clock::time_point() : Clock::now() + std::chrono::milliseconds(timeoutMs);
}

// Counters are decimal text (as in PyTorch's TCPStore), so GET of a counter
// is readable and SET can initialise one.
bool parseInt64(const std::string& text, int64_t* value) {
  if (text.empty() || text.size() > 20) return false;
  size_t i = text[0] == '-' ? 1 : 0;
  if (i == text.size()) return false;
  uint64_t magnitude = 0;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (magnitude > (UINT64_MAX - digit) / 10) return false;
    magnitude = magnitude * 10 + digit;
  }
  bool negative = text[0] == '-';
  uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  if (magnitude > limit) return false;
  *value = negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
  return true;
}

void StoreServer::handleAdd(Client& c, FrameReader& r) {
  std::string key = r.str(store::kMaxKeyBytes);
  int64_t delta = r.i64();
  if (!r.complete()) {
    drop(c, "its ADD is malformed or its key exceeds the size limit");
    return;
  }
  int64_t current = 0;
  auto it = data_.find(key);
  if (it != data_.end() && !parseInt64(it->second, &current)) {
    replyError(c, "the value of key '" + store::printableKey(key) + "' is not a decimal integer",
               false);
    return;
  }
  int64_t sum;
  if (__builtin_add_overflow(current, delta, &sum)) {
    replyError(c, "adding " + std::to_string(delta) + " to key '" + store::printableKey(key) +
                      "' (" + std::to_string(current) + ") overflows int64",
               false);
    return;
  }
  std::string text = std::to_string(sum);
  std::string reason;
  if (!storeBytesAllow(key, text.size(), &reason)) {
    replyError(c, reason, false);
    return;
  }
  if (it != data_.end()) dataBytes_ -= key.size() + it->second.size();
  dataBytes_ += key.size() + text.size();
  data_[key] = std::move(text);
  FrameWriter reply;
  reply.u8(static_cast<uint8_t>(Status::Ok)).i64(sum);
  std::vector<char> frame = reply.finish();
  c.out.insert(c.out.end(), frame.begin(), frame.end());
  keyWasSet(key);
}

void StoreServer::keyWasSet(const std::string& key) {
  for (auto& waiter : clients_) {
    Client& w = *waiter;
    if (w.dead || !w.waiting) continue;
    auto& missing = w.missingKeys;
    missing.erase(std::remove(missing.begin(), missing.end(), key), missing.end());
    if (!missing.empty()) continue;
    w.waiting = false;
    if (w.waitOp == Op::Get) {
      auto it = data_.find(w.getKey);
      replyOk(w, it == data_.end() ? std::string() : it->second);
      w.getKey.clear();
    } else {
      replyOk(w);
    }
  }
}

void StoreServer::replyOk(Client& c, const std::string& payload) {
  FrameWriter reply;
  reply.u8(static_cast<uint8_t>(Status::Ok)).raw(payload.data(), payload.size());
  std::vector<char> frame = reply.finish();
  c.out.insert(c.out.end(), frame.begin(), frame.end());
}

void StoreServer::replyError(Client& c, const std::string& reason, bool thenClose) {
  FrameWriter reply;
  reply.u8(static_cast<uint8_t>(Status::Error)).raw(reason.data(), reason.size());
  std::vector<char> frame = reply.finish();
  c.out.insert(c.out.end(), frame.begin(), frame.end());
  if (thenClose) c.closeAfterReply = true;
}

// What is still missing, and which ranks never joined: the waiting rank
// turns it into a message naming them.
void StoreServer::replyTimeout(Client& c) {
  FrameWriter reply;
  reply.u8(static_cast<uint8_t>(Status::Timeout)).u32(static_cast<uint32_t>(c.missingKeys.size()));
  const size_t shownKeys = std::min(c.missingKeys.size(), store::kMaxReportedKeys);
  for (size_t i = 0; i < shownKeys; ++i) reply.str(c.missingKeys[i]);
  std::vector<int32_t> absent;
  for (int rank = 0; rank < nranks_; ++rank) {
    if (joined_.count(rank) == 0) absent.push_back(rank);
  }
  reply.i32(nranks_).u32(static_cast<uint32_t>(absent.size()));
  for (size_t i = 0; i < absent.size() && i < store::kMaxReportedRanks; ++i) reply.i32(absent[i]);
  std::vector<char> frame = reply.finish();
  c.out.insert(c.out.end(), frame.begin(), frame.end());
  c.waiting = false;
  c.missingKeys.clear();
  c.getKey.clear();
}

void StoreServer::drop(Client& c, const std::string& reason) {
  uint64_t suppressed = 0;
  if (c.rank >= 0) {
    if (logLimiter_.allow(kLogDropJoined, &suppressed)) {
      CC_WARN("bootstrap store %s: closing the connection of rank %d (%s): %s (%" PRIu64
              " similar closes since the last warning)",
              address_.c_str(), c.rank, c.peer.c_str(), reason.c_str(), suppressed);
    }
  } else if (logLimiter_.allow(kLogDropUnjoined, &suppressed)) {
    CC_WARN("bootstrap store %s: closing the connection from %s: %s (%" PRIu64
            " similar closes since the last warning)",
            address_.c_str(), c.peer.c_str(), reason.c_str(), suppressed);
  }
  disconnect(c);
}

void StoreServer::disconnect(Client& c) {
  if (c.dead) return;
  {
    std::lock_guard<std::mutex> lock(fdMutex_);
    closeOwnedLocked(c.fd);
  }
  c.dead = true;
  c.waiting = false;
  if (c.rank >= 0) {
    --connectedRanks_;
    CC_TRACE("bootstrap store %s: rank %d left", address_.c_str(), c.rank);
  } else {
    --unjoinedClients_;
  }
}

// All stores of this process (and, after fork(), copies of the parent's).
// Deliberately leaked: the atexit handler and fork handlers may run after
// static destructors would have destroyed it.
struct Registry {
  std::mutex mutex;
  std::vector<std::unique_ptr<StoreServer>> servers;
};

Registry& registry() {
  static Registry* instance = new Registry;
  return *instance;
}

void stopAllStoresAtExit() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  for (auto& server : reg.servers) {
    if (server->ownedByThisProcess()) server->requestStop();
  }
  for (auto& server : reg.servers) {
    if (server->ownedByThisProcess()) server->join();
  }
}

void reapFinishedStoresLocked(Registry& reg);

// fork() handlers: hold every lock across the fork so the child's copy of the
// registry is consistent, then in the child close the copied sockets.
// Finished stores are joined first, so no child inherits the record of a
// thread that ended but was never joined (which it could never join).
void lockStoresBeforeFork() {
  registry().mutex.lock();
  reapFinishedStoresLocked(registry());
  for (auto& server : registry().servers) server->fdMutex().lock();
}

void unlockStoresInParent() {
  for (auto& server : registry().servers) server->fdMutex().unlock();
  registry().mutex.unlock();
}

void closeParentStoresInChild() {
  for (auto& server : registry().servers) {
    server->closeInheritedFdsInChild();
    server->fdMutex().unlock();
  }
  registry().mutex.unlock();
}

void installProcessHooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork(lockStoresBeforeFork, unlockStoresInParent, closeParentStoresInChild);
    std::atexit(stopAllStoresAtExit);
  });
}

// Joins the stores that stopped by themselves, so that a process creating
// many communicators does not accumulate finished threads.
void reapFinishedStoresLocked(Registry& reg) {
  auto& servers = reg.servers;
  for (auto it = servers.begin(); it != servers.end();) {
    if ((*it)->ownedByThisProcess() && (*it)->finished()) {
      (*it)->join();
      it = servers.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

namespace store {

cc_result_t listenAndServe(const sockaddr_storage& addr, uint64_t nonce, const uint8_t (&secret)[kSecretBytes],
                           bool reuseAddress, sockaddr_storage* bound) {
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) {
    return setError(CC_INVALID_ARGUMENT, "the bootstrap store needs an IPv4 or IPv6 address");
  }
  std::string where = sockaddrToString(addr, true);
  installProcessHooks();
  Registry& reg = registry();
  // Held while the descriptors are created, so that a concurrent fork() either
  // happens before they exist or sees them registered (and closes them).
  std::lock_guard<std::mutex> lock(reg.mutex);
  reapFinishedStoresLocked(reg);

  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return setError(CC_SYSTEM_ERROR, "cannot create a socket for the bootstrap store on %s: %s",
                    where.c_str(), errnoText(errno).c_str());
  }
  int one = 1;
  if (reuseAddress) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sockaddrLength(addr)) != 0) {
    int err = errno;
    close(fd);
    return setError(CC_SYSTEM_ERROR, "cannot bind the bootstrap store to %s: %s%s", where.c_str(),
                    errnoText(err).c_str(),
                    err == EADDRINUSE ? " (another job or an earlier communicator uses this port?)"
                    : err == EADDRNOTAVAIL ? " (the address is not one of this host's)"
                                           : "");
  }
  if (listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    close(fd);
    return setError(CC_SYSTEM_ERROR, "cannot listen for bootstrap clients on %s: %s", where.c_str(),
                    errnoText(err).c_str());
  }
  sockaddr_storage actual{};
  socklen_t actualLen = sizeof(actual);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&actual), &actualLen) != 0) {
    int err = errno;
    close(fd);
    return setError(CC_SYSTEM_ERROR, "getsockname on the bootstrap store socket %s failed: %s",
                    where.c_str(), errnoText(err).c_str());
  }
  int wakeFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd < 0) {
    int err = errno;
    close(fd);
    return setError(CC_SYSTEM_ERROR, "eventfd for the bootstrap store failed: %s",
                    errnoText(err).c_str());
  }
  std::string address = sockaddrToString(actual, true);
  auto server = std::make_unique<StoreServer>(fd, wakeFd, nonce, secret, address);
  try {
    server->start();
  } catch (const std::exception& error) {
    close(fd);
    close(wakeFd);
    return setError(CC_SYSTEM_ERROR, "cannot start the bootstrap store thread for %s: %s",
                    address.c_str(), error.what());
  }
  reg.servers.push_back(std::move(server));
  *bound = actual;
  return CC_SUCCESS;
}

}  // namespace store

cc_result_t serveStore(const RootAddress& root) {
  if (store::sockaddrPort(root.addr) == 0) {
    return setError(CC_INVALID_ARGUMENT,
                    "serveStore needs the IPv4 or IPv6 address and port of a decoded unique id");
  }
  sockaddr_storage bound{};
  return store::listenAndServe(root.addr, root.nonce, root.secret, /*reuseAddress=*/true, &bound);
}

}  // namespace cc
