// Bootstrap, the client: the StoreClient every rank uses to meet the others
// (connect with retries, join, and the store's requests, each under the
// communicator's timeout). docs/bootstrap.md describes the protocol.
#include "comm/bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include <gloo/common/error.h>

#include "base/error.h"
#include "base/log.h"
#include "comm/store_protocol.h"

namespace cc {
namespace {

using Clock = std::chrono::steady_clock;

int millisecondsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  // Round up so a wait never ends just before its deadline and spins.
  return static_cast<int>(std::min<long long>(left + 1, INT_MAX));
}

// Waits for `events` on fd until the deadline: 0 when ready, ETIMEDOUT, or errno.
int pollUntil(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd pfd{fd, events, 0};
    int left = millisecondsUntil(deadline);
    int rc = poll(&pfd, 1, left);
    if (rc > 0) return 0;  // errors and hang-ups surface in the following call
    if (rc == 0) {
      if (Clock::now() >= deadline) return ETIMEDOUT;
      continue;
    }
    if (errno != EINTR) return errno;
  }
}

constexpr int kPeerClosed = -1;

// 0, ETIMEDOUT, kPeerClosed or errno.
int sendAll(int fd, const char* data, size_t size, Clock::time_point deadline) {
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EPIPE || err == ECONNRESET) return kPeerClosed;
    if (err != EAGAIN && err != EWOULDBLOCK) return err;
    int waited = pollUntil(fd, POLLOUT, deadline);
    if (waited != 0) return waited;
  }
  return 0;
}

int recvAll(int fd, char* data, size_t size, Clock::time_point deadline) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = recv(fd, data + got, size - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return kPeerClosed;
    int err = errno;
    if (err == EINTR) continue;
    if (err == ECONNRESET) return kPeerClosed;
    if (err != EAGAIN && err != EWOULDBLOCK) return err;
    int waited = pollUntil(fd, POLLIN, deadline);
    if (waited != 0) return waited;
  }
  return 0;
}

// Errors that mean "the root is not (yet) there": worth another attempt
// while the root process may still be starting or its network coming up.
bool isTransientConnectError(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
    case EADDRNOTAVAIL:  // no free local port right now
    case EAGAIN:
      return true;
    default:
      return false;
  }
}

bool sameEndpoint(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (store::sockaddrPort(a) != store::sockaddrPort(b)) return false;
  return sockaddrToString(a, false) == sockaddrToString(b, false);
}

// Retrying connects to a free loopback port can end in TCP simultaneous open
// with itself (source port == destination port); that is not the root.
bool isSelfConnection(int fd) {
  sockaddr_storage local{};
  sockaddr_storage peer{};
  socklen_t localLen = sizeof(local);
  socklen_t peerLen = sizeof(peer);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &localLen) != 0) return false;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peerLen) != 0) return false;
  return sameEndpoint(local, peer);
}

// One connection attempt: 0, ETIMEDOUT (deadline) or the connect error.
int connectOnce(int fd, const sockaddr_storage& addr, Clock::time_point deadline) {
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), store::sockaddrLength(addr)) == 0) {
    return isSelfConnection(fd) ? ECONNREFUSED : 0;
  }
  int err = errno;
  // After EINTR a non-blocking connect continues in the background, as after
  // EINPROGRESS.
  if (err != EINPROGRESS && err != EINTR) return err;
  int waited = pollUntil(fd, POLLOUT, deadline);
  if (waited != 0) return waited;
  int soError = 0;
  socklen_t len = sizeof(soError);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) != 0) return errno;
  if (soError != 0) return soError;
  return isSelfConnection(fd) ? ECONNREFUSED : 0;
}

cc_result_t connectToRoot(const sockaddr_storage& addr, const std::string& rootText, int timeoutMs,
                          Clock::time_point deadline, int* outFd) {
  std::string lastError = "none";
  auto backoff = std::chrono::milliseconds(10);
  for (;;) {
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return setError(CC_SYSTEM_ERROR, "cannot create a socket to reach the bootstrap root %s: %s",
                      rootText.c_str(), store::errnoText(errno).c_str());
    }
    int err = connectOnce(fd, addr, deadline);
    if (err == 0) {
      *outFd = fd;
      return CC_SUCCESS;
    }
    close(fd);
    lastError = store::errnoText(err);
    if (!isTransientConnectError(err)) {
      return setError(CC_SYSTEM_ERROR, "cannot connect to the bootstrap root %s: %s",
                      rootText.c_str(), lastError.c_str());
    }
    int left = millisecondsUntil(deadline);
    if (left <= 0) {
      return setError(CC_TIMEOUT, "could not reach the bootstrap root %s within %d ms (last error: %s)",
                      rootText.c_str(), timeoutMs, lastError.c_str());
    }
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(
        backoff, std::chrono::milliseconds(left)));
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::milliseconds(200));
  }
}

std::string describeKeys(const std::vector<std::string>& keys) {
  std::string text;
  for (size_t i = 0; i < keys.size() && i < 4; ++i) {
    text += (i == 0 ? "'" : ", '") + store::printableKey(keys[i]) + "'";
  }
  if (keys.size() > 4) text += " and " + std::to_string(keys.size() - 4) + " more";
  return text;
}

cc_result_t checkKey(const std::string& key) {
  if (key.size() > store::kMaxKeyBytes) {
    return setError(CC_INVALID_ARGUMENT, "store key of %zu bytes exceeds the limit of %zu bytes",
                    key.size(), store::kMaxKeyBytes);
  }
  return CC_SUCCESS;
}

int clampTimeout(const std::chrono::milliseconds& timeout) {
  return static_cast<int>(std::min<long long>(timeout.count(), INT_MAX));
}

// A GET or WAIT is answered by the store when its timeout passes; the client
// waits this much longer for that answer before it gives up on the store.
constexpr std::chrono::milliseconds kReplyGrace{2000};

}  // namespace

StoreClient::StoreClient(int fd, int rank, int nranks, int timeoutMs, const sockaddr_storage& local)
    : fd_(fd), rank_(rank), nranks_(nranks), timeoutMs_(timeoutMs), local_(local) {}

StoreClient::~StoreClient() {
  if (fd_ >= 0) close(fd_);
}

cc_result_t StoreClient::connect(const RootAddress& root, int rank, int nranks, int timeoutMs,
                                 std::unique_ptr<StoreClient>* out) {
  if (out == nullptr) return setError(CC_INVALID_ARGUMENT, "StoreClient::connect: out is NULL");
  if (timeoutMs <= 0) {
    return setError(CC_INVALID_ARGUMENT, "the bootstrap timeout must be positive, got %d ms",
                    timeoutMs);
  }
  if (nranks < 1) return setError(CC_INVALID_ARGUMENT, "nranks must be at least 1, got %d", nranks);
  if (store::sockaddrPort(root.addr) == 0) {
    return setError(CC_INVALID_ARGUMENT,
                    "the bootstrap root has no IPv4/IPv6 address and port (was the id decoded?)");
  }
  const std::string rootText = root.str();
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  int fd = -1;
  CC_CHECK(connectToRoot(root.addr, rootText, timeoutMs, deadline, &fd));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_storage local{};
  socklen_t localLen = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &localLen) != 0) {
    int err = errno;
    close(fd);
    return setError(CC_SYSTEM_ERROR, "getsockname on the connection to %s failed: %s",
                    rootText.c_str(), store::errnoText(err).c_str());
  }
  std::unique_ptr<StoreClient> client(new StoreClient(fd, rank, nranks, timeoutMs, local));
  client->root_ = rootText;

  store::FrameWriter join;
  join.u8(static_cast<uint8_t>(store::Op::Join))
      .u32(store::kProtocolMagic)
      .u16(store::kProtocolVersion)
      .u64(root.nonce)
      .raw(reinterpret_cast<const char*>(root.secret), sizeof(root.secret))
      .i32(rank)
      .i32(nranks);
  std::string what = "the join of rank " + std::to_string(rank) + " of " + std::to_string(nranks);
  std::string payload;
  CC_CHECK(client->roundTrip(join.finish(), deadline, timeoutMs, what, &payload));
  *out = std::move(client);
  return CC_SUCCESS;
}

cc_result_t StoreClient::failConnection(cc_result_t code) {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  failure_ = code;
  failureMessage_ = lastErrorMessage();
  return code;
}

cc_result_t StoreClient::roundTrip(const std::vector<char>& request, Clock::time_point deadline,
                                   int timeoutMs, const std::string& what, std::string* payload,
                                   WaitReport* report) {
  if (fd_ < 0) {
    return setError(failure_, "the connection to the bootstrap store at %s was closed by an earlier "
                    "failure (%s)", root_.c_str(), failureMessage_.c_str());
  }
  auto ioFailure = [&](int err) {
    if (err == ETIMEDOUT) {
      return failConnection(setError(CC_TIMEOUT,
                                     "timed out after %d ms waiting for the bootstrap store at %s "
                                     "to answer %s",
                                     timeoutMs, root_.c_str(), what.c_str()));
    }
    if (err == kPeerClosed) {
      return failConnection(setError(CC_REMOTE_ERROR,
                                     "the bootstrap store at %s closed the connection during %s "
                                     "(did the root process exit?)",
                                     root_.c_str(), what.c_str()));
    }
    return failConnection(setError(CC_SYSTEM_ERROR, "I/O with the bootstrap store at %s failed during %s: %s",
                                   root_.c_str(), what.c_str(), store::errnoText(err).c_str()));
  };
  int err = sendAll(fd_, request.data(), request.size(), deadline);
  if (err != 0) return ioFailure(err);
  char header[store::kFrameHeaderBytes];
  err = recvAll(fd_, header, sizeof(header), deadline);
  if (err != 0) return ioFailure(err);
  uint32_t length = store::frameLength(header);
  if (length == 0 || length > store::kMaxFrameBytes) {
    return failConnection(setError(CC_REMOTE_ERROR,
                                   "the bootstrap root %s sent a malformed reply to %s (length %u); "
                                   "is it a compressedcoll store?",
                                   root_.c_str(), what.c_str(), length));
  }
  std::vector<char> body(length);
  err = recvAll(fd_, body.data(), body.size(), deadline);
  if (err != 0) return ioFailure(err);
  store::FrameReader reader(body.data(), body.size());
  uint8_t status = reader.u8();
  if (status == static_cast<uint8_t>(store::Status::Ok)) {
    *payload = reader.rest();
    return CC_SUCCESS;
  }
  if (status == static_cast<uint8_t>(store::Status::Error)) {
    std::string reason = reader.rest();
    return setError(CC_INVALID_USAGE, "the bootstrap store at %s refused %s: %s", root_.c_str(),
                    what.c_str(), reason.c_str());
  }
  if (status == static_cast<uint8_t>(store::Status::Timeout)) {
    WaitReport parsed;
    parsed.received = true;
    parsed.missingCount = reader.u32();
    for (uint32_t i = 0; i < parsed.missingCount && i < store::kMaxReportedKeys && reader.ok(); ++i) {
      parsed.missing.push_back(reader.str(store::kMaxKeyBytes));
    }
    parsed.nranks = reader.i32();
    parsed.absentCount = reader.u32();
    for (uint32_t i = 0; i < parsed.absentCount && i < store::kMaxReportedRanks && reader.ok(); ++i) {
      parsed.absent.push_back(reader.i32());
    }
    if (!reader.complete()) {
      return failConnection(setError(CC_REMOTE_ERROR, "the bootstrap store at %s sent a malformed timeout reply to %s",
                                     root_.c_str(), what.c_str()));
    }
    std::string missing;
    for (const auto& key : parsed.missing) missing += (missing.empty() ? "'" : ", '") + store::printableKey(key) + "'";
    if (parsed.missingCount > parsed.missing.size()) missing += ", ...";
    std::string absent;
    for (int rank : parsed.absent) absent += (absent.empty() ? "" : ", ") + std::to_string(rank);
    if (parsed.absentCount > parsed.absent.size()) absent += ", ...";
    std::string who = parsed.nranks == 0 ? "; no rank has joined the store yet"
                      : parsed.absentCount == 0
                          ? "; every rank joined the store"
                          : "; ranks that never joined the store: " + absent + " (of " + std::to_string(parsed.nranks) + ")";
    if (report != nullptr) *report = std::move(parsed);
    return setError(CC_TIMEOUT, "timed out after %d ms waiting for %s at the bootstrap store %s: %u key(s) never set: %s%s",
                    timeoutMs, what.c_str(), root_.c_str(), report != nullptr ? report->missingCount : 0u,
                    missing.c_str(), who.c_str());
  }
  return failConnection(setError(CC_REMOTE_ERROR,
                                 "the bootstrap root %s sent a reply with unknown status %u to %s",
                                 root_.c_str(), status, what.c_str()));
}

std::string StoreClient::localAddressString() const { return sockaddrToString(local_, false); }

cc_result_t StoreClient::trySet(const std::string& key, const std::vector<char>& value) {
  CC_CHECK(checkKey(key));
  if (value.size() > store::kMaxValueBytes) {
    return setError(CC_INVALID_ARGUMENT, "store value of %zu bytes exceeds the limit of %zu bytes",
                    value.size(), store::kMaxValueBytes);
  }
  store::FrameWriter request;
  request.u8(static_cast<uint8_t>(store::Op::Set)).str(key).str(value.data(), value.size());
  std::string payload;
  std::lock_guard<std::mutex> lock(mutex_);
  return roundTrip(request.finish(), Clock::now() + std::chrono::milliseconds(timeoutMs_),
                   timeoutMs_, "set of key '" + store::printableKey(key) + "'", &payload);
}

cc_result_t StoreClient::tryGet(const std::string& key, std::vector<char>* value) {
  if (value == nullptr) return setError(CC_INVALID_ARGUMENT, "StoreClient::tryGet: value is NULL");
  CC_CHECK(checkKey(key));
  store::FrameWriter request;
  request.u8(static_cast<uint8_t>(store::Op::Get)).u32(static_cast<uint32_t>(timeoutMs_)).str(key);
  std::string payload;
  std::lock_guard<std::mutex> lock(mutex_);
  CC_CHECK(roundTrip(request.finish(), Clock::now() + std::chrono::milliseconds(timeoutMs_) + kReplyGrace,
                     timeoutMs_, "key '" + store::printableKey(key) + "'", &payload));
  value->assign(payload.begin(), payload.end());
  return CC_SUCCESS;
}

cc_result_t StoreClient::tryAdd(const std::string& key, int64_t delta, int64_t* result) {
  CC_CHECK(checkKey(key));
  store::FrameWriter request;
  request.u8(static_cast<uint8_t>(store::Op::Add)).str(key).i64(delta);
  std::string payload;
  std::string what = "add to key '" + store::printableKey(key) + "'";
  std::lock_guard<std::mutex> lock(mutex_);
  CC_CHECK(roundTrip(request.finish(), Clock::now() + std::chrono::milliseconds(timeoutMs_),
                     timeoutMs_, what, &payload));
  store::FrameReader reader(payload.data(), payload.size());
  int64_t sum = reader.i64();
  if (!reader.complete()) {
    return failConnection(setError(CC_REMOTE_ERROR, "the bootstrap store at %s sent a malformed reply to %s",
                                   root_.c_str(), what.c_str()));
  }
  if (result != nullptr) *result = sum;
  return CC_SUCCESS;
}

cc_result_t StoreClient::waitForKeys(const std::vector<std::string>& keys, int timeoutMs, WaitReport* report) {
  if (keys.empty()) return CC_SUCCESS;
  if (keys.size() > store::kMaxWaitKeys) {
    return setError(CC_INVALID_ARGUMENT, "cannot wait for %zu keys at once (the limit is %zu)",
                    keys.size(), store::kMaxWaitKeys);
  }
  store::FrameWriter request;
  request.u8(static_cast<uint8_t>(store::Op::Wait))
      .u32(static_cast<uint32_t>(timeoutMs))
      .u32(static_cast<uint32_t>(keys.size()));
  for (const auto& key : keys) {
    CC_CHECK(checkKey(key));
    request.str(key);
  }
  std::string payload;
  std::lock_guard<std::mutex> lock(mutex_);
  return roundTrip(request.finish(), Clock::now() + std::chrono::milliseconds(timeoutMs) + kReplyGrace, timeoutMs,
                   "key(s) " + describeKeys(keys), &payload, report);
}

// Each rank leaves an arrival key and bumps the generation's counter; the
// last to arrive sets the release key. Only a barrier that times out asks
// which arrival keys are missing, so the message names the ranks that never
// came while a barrier costs O(1) per rank. Ranks pass barriers of a name in
// the same order, so each counts the generations itself.
cc_result_t StoreClient::barrier(const std::string& name) {
  const std::string prefix = "cc/barrier/" + name + "/" + std::to_string(barrierGenerations_[name]++);
  int64_t arrived = 0;
  cc_result_t rc = trySet(prefix + "/" + std::to_string(rank_), {});
  if (rc == CC_SUCCESS) rc = tryAdd(prefix + "/count", 1, &arrived);
  if (rc == CC_SUCCESS && arrived == nranks_) rc = trySet(prefix + "/release", {});
  if (rc == CC_SUCCESS) rc = waitForKeys({prefix + "/release"}, timeoutMs_);
  if (rc == CC_TIMEOUT) {
    const std::string original = lastErrorMessage();
    std::vector<std::string> arrivals;
    for (int rank = 0; rank < nranks_ && arrivals.size() < store::kMaxWaitKeys; ++rank) {
      arrivals.push_back(prefix + "/" + std::to_string(rank));
    }
    WaitReport report;
    if (waitForKeys(arrivals, 1, &report) == CC_TIMEOUT && report.received) {
      std::string late;
      for (const auto& key : report.missing) late += (late.empty() ? "" : ", ") + key.substr(prefix.size() + 1);
      if (report.missingCount > report.missing.size()) late += ", ...";
      std::string absent;
      for (int rank : report.absent) absent += (absent.empty() ? "" : ", ") + std::to_string(rank);
      if (report.absentCount > report.absent.size()) absent += ", ...";
      return setError(CC_TIMEOUT,
                      "barrier '%s' of %d ranks (rank %d): timed out after %d ms; ranks that did not reach it: %s%s%s",
                      name.c_str(), nranks_, rank_, timeoutMs_, late.c_str(),
                      report.absentCount == 0 ? "" : "; of them never joined the bootstrap store: ",
                      absent.c_str());
    }
    restoreLastError(original);
  }
  if (rc != CC_SUCCESS) {
    return addErrorContext(rc, "barrier '%s' of %d ranks (rank %d)", name.c_str(), nranks_, rank_);
  }
  return CC_SUCCESS;
}

void StoreClient::set(const std::string& key, const std::vector<char>& data) {
  if (trySet(key, data) != CC_SUCCESS) throw gloo::IoException(lastErrorMessage());
}

std::vector<char> StoreClient::get(const std::string& key) {
  std::vector<char> value;
  if (tryGet(key, &value) != CC_SUCCESS) throw gloo::IoException(lastErrorMessage());
  return value;
}

void StoreClient::wait(const std::vector<std::string>& keys) {
  if (waitForKeys(keys, timeoutMs_) != CC_SUCCESS) throw gloo::IoException(lastErrorMessage());
}

void StoreClient::wait(const std::vector<std::string>& keys,
                       const std::chrono::milliseconds& timeout) {
  // Gloo passes kNoTimeout (zero) for "no limit"; ours is the store's timeout.
  int timeoutMs = timeout.count() > 0 ? clampTimeout(timeout) : timeoutMs_;
  if (waitForKeys(keys, timeoutMs) != CC_SUCCESS) throw gloo::IoException(lastErrorMessage());
}

}  // namespace cc
