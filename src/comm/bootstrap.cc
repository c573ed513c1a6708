// Bootstrap, client side: the unique id, choosing the root's address, and the
// StoreClient every rank uses to meet the others. The server is in
// store_server.cc; the wire protocol in store_protocol.h; docs/bootstrap.md
// describes both.
#include "comm/bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include <gloo/common/error.h>

#include "base/error.h"
#include "base/log.h"
#include "comm/store_protocol.h"

namespace cc {
namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Unique id layout (128 bytes, every integer little-endian unless noted):
//   0  char[8]  magic "CCBOOTID"
//   8  u16      format version (kIdVersion)
//  10  u8       flags: bit 0 = fromEnvironment; other bits zero
//  11  u8       address family: 4 = IPv4, 6 = IPv6 (not the host's AF_* values)
//  12  u16      port, network byte order
//  14  u16      zero
//  16  u8[16]   address (IPv4 in the first 4 bytes, the rest zero)
//  32  u32      IPv6 scope id (link-local addresses), else zero
//  36  u32      zero
//  40  u64      nonce
//  48  ...      zero up to the checksum
// 124  u32      FNV-1a 32 of bytes 0..123: catches ids corrupted in transit
// ---------------------------------------------------------------------------
constexpr char kIdMagic[8] = {'C', 'C', 'B', 'O', 'O', 'T', 'I', 'D'};
constexpr uint16_t kIdVersion = 1;
constexpr size_t kIdVersionAt = 8;
constexpr size_t kIdFlagsAt = 10;
constexpr size_t kIdFamilyAt = 11;
constexpr size_t kIdPortAt = 12;
constexpr size_t kIdAddressAt = 16;
constexpr size_t kIdScopeAt = 32;
constexpr size_t kIdNonceAt = 40;
constexpr size_t kIdChecksumAt = 124;
constexpr uint8_t kIdFlagFromEnvironment = 1;
static_assert(kIdChecksumAt + 4 == CC_UNIQUE_ID_BYTES, "the checksum ends the id");

uint32_t fnv1a32(const unsigned char* data, size_t size) {
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 16777619u;
  return hash;
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char ch : text) hash = (hash ^ ch) * 1099511628211ull;
  return hash;
}

void putLittle(unsigned char* at, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) at[i] = static_cast<unsigned char>(value >> (8 * i));
}

uint64_t getLittle(const unsigned char* at, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(at[i]) << (8 * i);
  return value;
}

void encodeUniqueId(const RootAddress& root, cc_unique_id_t* id) {
  unsigned char bytes[CC_UNIQUE_ID_BYTES] = {};
  std::memcpy(bytes, kIdMagic, sizeof(kIdMagic));
  putLittle(bytes + kIdVersionAt, kIdVersion, 2);
  bytes[kIdFlagsAt] = root.fromEnvironment ? kIdFlagFromEnvironment : 0;
  uint16_t port = store::sockaddrPort(root.addr);
  bytes[kIdPortAt] = static_cast<unsigned char>(port >> 8);
  bytes[kIdPortAt + 1] = static_cast<unsigned char>(port);
  if (root.addr.ss_family == AF_INET) {
    sockaddr_in in;
    std::memcpy(&in, &root.addr, sizeof(in));
    bytes[kIdFamilyAt] = 4;
    std::memcpy(bytes + kIdAddressAt, &in.sin_addr, 4);
  } else {
    sockaddr_in6 in6;
    std::memcpy(&in6, &root.addr, sizeof(in6));
    bytes[kIdFamilyAt] = 6;
    std::memcpy(bytes + kIdAddressAt, &in6.sin6_addr, 16);
    putLittle(bytes + kIdScopeAt, in6.sin6_scope_id, 4);
  }
  putLittle(bytes + kIdNonceAt, root.nonce, 8);
  putLittle(bytes + kIdChecksumAt, fnv1a32(bytes, kIdChecksumAt), 4);
  std::memcpy(id->internal, bytes, CC_UNIQUE_ID_BYTES);
}

sockaddr_storage loopbackIPv4() {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sockaddr_storage addr{};
  std::memcpy(&addr, &in, sizeof(in));
  return addr;
}

void setPort(sockaddr_storage* addr, uint16_t port) {
  if (addr->ss_family == AF_INET) {
    sockaddr_in in;
    std::memcpy(&in, addr, sizeof(in));
    in.sin_port = htons(port);
    std::memcpy(addr, &in, sizeof(in));
  } else if (addr->ss_family == AF_INET6) {
    sockaddr_in6 in6;
    std::memcpy(&in6, addr, sizeof(in6));
    in6.sin6_port = htons(port);
    std::memcpy(addr, &in6, sizeof(in6));
  }
}

bool isLinkLocalIPv6(const sockaddr_storage& addr) {
  if (addr.ss_family != AF_INET6) return false;
  sockaddr_in6 in6;
  std::memcpy(&in6, &addr, sizeof(in6));
  return IN6_IS_ADDR_LINKLOCAL(&in6.sin6_addr);
}

// Lower is better: IPv4 first (what clusters route), then routable IPv6, then
// link-local IPv6 (usable, but only together with its scope id).
int addressPreference(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) return 0;
  return isLinkLocalIPv6(addr) ? 2 : 1;
}

bool copyInterfaceAddress(const ifaddrs* ifa, sockaddr_storage* out) {
  if (ifa->ifa_addr == nullptr) return false;
  int family = ifa->ifa_addr->sa_family;
  if (family != AF_INET && family != AF_INET6) return false;
  *out = sockaddr_storage{};
  std::memcpy(out, ifa->ifa_addr, family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
  setPort(out, 0);
  return true;
}

// "lo (127.0.0.1, ::1), eth0 (10.0.0.2)": for messages about CC_SOCKET_IFNAME.
std::string describeInterfaces(const ifaddrs* list) {
  std::map<std::string, std::vector<std::string>> byName;
  for (const ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    auto& addresses = byName[ifa->ifa_name];
    sockaddr_storage addr;
    if (copyInterfaceAddress(ifa, &addr)) addresses.push_back(sockaddrToString(addr, false));
  }
  std::string text;
  for (const auto& entry : byName) {
    if (!text.empty()) text += ", ";
    text += entry.first;
    std::string addresses;
    for (const auto& a : entry.second) addresses += (addresses.empty() ? "" : ", ") + a;
    text += " (" + (addresses.empty() ? std::string("no address") : addresses) + ")";
  }
  return text.empty() ? std::string("none") : text;
}

// The address the root listens on when the user named no interface.
cc_result_t defaultHostAddress(sockaddr_storage* addr) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return setError(CC_SYSTEM_ERROR, "getifaddrs failed while choosing the bootstrap address: %s",
                    store::errnoText(errno).c_str());
  }
  bool found = false;
  int best = INT_MAX;
  for (const ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    if (!(ifa->ifa_flags & IFF_UP) || (ifa->ifa_flags & IFF_LOOPBACK)) continue;
    sockaddr_storage candidate;
    if (!copyInterfaceAddress(ifa, &candidate)) continue;
    int preference = addressPreference(candidate);
    // Container and VM bridges are up on many hosts but not reachable from
    // other hosts (NCCL skips docker* by default too): a last resort only.
    std::string name = ifa->ifa_name;
    if (name.rfind("docker", 0) == 0 || name.rfind("virbr", 0) == 0) preference += 3;
    if (preference < best) {  // strict: the first interface wins a tie
      best = preference;
      *addr = candidate;
      found = true;
    }
  }
  freeifaddrs(list);
  // A host without a network still runs single-node jobs over loopback.
  if (!found) *addr = loopbackIPv4();
  return CC_SUCCESS;
}

cc_result_t randomNonce(uint64_t* nonce) {
  uint64_t value = 0;
  // Zero is what a RootAddress that was never decoded carries; never issue it.
  while (value == 0) {
    ssize_t got = getrandom(&value, sizeof(value), 0);
    if (got == static_cast<ssize_t>(sizeof(value))) continue;
    if (got < 0 && errno == EINTR) continue;
    // Kernels before 3.17 have no getrandom; random_device reads /dev/urandom.
    try {
      std::random_device device;
      value = (static_cast<uint64_t>(device()) << 32) ^ device();
    } catch (const std::exception& error) {
      return setError(CC_SYSTEM_ERROR, "no source of randomness for the unique id's nonce: %s",
                      error.what());
    }
  }
  *nonce = value;
  return CC_SUCCESS;
}

// CC_COMM_ID=host:port, IPv4:port or [IPv6]:port.
cc_result_t parseCommId(const std::string& text, RootAddress* root) {
  auto malformed = [&](const std::string& why) {
    return setError(CC_INVALID_ARGUMENT,
                    "CC_COMM_ID='%s' is malformed (%s); expected host:port, IPv4:port or "
                    "[IPv6]:port with a port in 1..65535",
                    text.c_str(), why.c_str());
  };
  std::string host;
  std::string portText;
  bool bracketed = false;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) return malformed("no ']' after the IPv6 address");
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return malformed("expected ':' and a port after ']'");
    }
    host = text.substr(1, close - 1);
    portText = text.substr(close + 2);
    bracketed = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return malformed("no port");
    if (text.find(':') != colon) {
      return malformed("an IPv6 address must be written in brackets, e.g. [::1]:29500");
    }
    host = text.substr(0, colon);
    portText = text.substr(colon + 1);
  }
  if (host.empty()) return malformed("empty host");
  bool digits = !portText.empty() && portText.size() <= 5 &&
                std::all_of(portText.begin(), portText.end(),
                            [](char ch) { return ch >= '0' && ch <= '9'; });
  long port = digits ? std::strtol(portText.c_str(), nullptr, 10) : 0;
  if (port < 1 || port > 65535) return malformed("port '" + portText + "' is not in 1..65535");

  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
  // Bracketed text must be a literal; resolving it as a name would hide typos.
  if (bracketed) hints.ai_flags = AI_NUMERICHOST;
  addrinfo* results = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &results);
  if (rc != 0) {
    if (bracketed) return malformed("'" + host + "' is not an IPv6 address");
    return setError(rc == EAI_AGAIN ? CC_SYSTEM_ERROR : CC_INVALID_ARGUMENT,
                    "CC_COMM_ID='%s': cannot resolve host '%s': %s", text.c_str(), host.c_str(),
                    gai_strerror(rc));
  }
  // Every rank resolves the text itself, so prefer the family that resolves
  // the same everywhere most often: IPv4, then IPv6, each in resolver order.
  const addrinfo* chosen = nullptr;
  for (const addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      chosen = ai;
      break;
    }
    if (ai->ai_family == AF_INET6 && chosen == nullptr) chosen = ai;
  }
  if (chosen == nullptr) {
    freeaddrinfo(results);
    return setError(CC_INVALID_ARGUMENT, "CC_COMM_ID='%s': host '%s' has no IPv4 or IPv6 address",
                    text.c_str(), host.c_str());
  }
  *root = RootAddress{};
  std::memcpy(&root->addr, chosen->ai_addr, chosen->ai_addrlen);
  root->addrLen = static_cast<socklen_t>(chosen->ai_addrlen);
  freeaddrinfo(results);
  setPort(&root->addr, static_cast<uint16_t>(port));
  root->nonce = fnv1a64(text);
  if (root->nonce == 0) root->nonce = 1;  // zero is reserved for "not decoded"
  root->fromEnvironment = true;
  return CC_SUCCESS;
}

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

}  // namespace

std::string sockaddrToString(const sockaddr_storage& addr, bool withPort) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    sockaddr_in in;
    std::memcpy(&in, &addr, sizeof(in));
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
    std::string out = text;
    return withPort ? out + ":" + std::to_string(ntohs(in.sin_port)) : out;
  }
  if (addr.ss_family == AF_INET6) {
    sockaddr_in6 in6;
    std::memcpy(&in6, &addr, sizeof(in6));
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
    std::string out = text;
    if (in6.sin6_scope_id != 0) {
      char name[IF_NAMESIZE] = {0};
      out += "%";
      out += if_indextoname(in6.sin6_scope_id, name) != nullptr ? std::string(name)
                                                                 : std::to_string(in6.sin6_scope_id);
    }
    return withPort ? "[" + out + "]:" + std::to_string(ntohs(in6.sin6_port)) : out;
  }
  return "<address family " + std::to_string(addr.ss_family) + ">";
}

std::string RootAddress::str() const { return sockaddrToString(addr, true); }

cc_result_t interfaceAddress(const std::string& ifname, sockaddr_storage* addr) {
  if (addr == nullptr) return setError(CC_INVALID_ARGUMENT, "interfaceAddress: addr is NULL");
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return setError(CC_SYSTEM_ERROR, "getifaddrs failed while looking up interface '%s': %s",
                    ifname.c_str(), store::errnoText(errno).c_str());
  }
  bool exists = false;
  bool found = false;
  int best = INT_MAX;
  for (const ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    if (ifname != ifa->ifa_name) continue;
    exists = true;
    sockaddr_storage candidate;
    if (!copyInterfaceAddress(ifa, &candidate)) continue;
    int preference = addressPreference(candidate);
    if (preference < best) {
      best = preference;
      *addr = candidate;
      found = true;
    }
  }
  std::string known = found ? std::string() : describeInterfaces(list);
  freeifaddrs(list);
  if (found) return CC_SUCCESS;
  if (exists) {
    return setError(CC_SYSTEM_ERROR,
                    "interface '%s' has no IPv4 or IPv6 address; the interfaces are: %s",
                    ifname.c_str(), known.c_str());
  }
  return setError(CC_SYSTEM_ERROR, "there is no interface named '%s'; the interfaces are: %s",
                  ifname.c_str(), known.c_str());
}

cc_result_t createUniqueId(cc_unique_id_t* id) {
  if (id == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_get_unique_id: id is NULL");
  RootAddress root;
  const char* commId = std::getenv("CC_COMM_ID");
  if (commId != nullptr && commId[0] != '\0') {
    // Every rank computes the same id from the same text; rank 0 serves the
    // store at init, so nothing is started here.
    CC_CHECK(parseCommId(commId, &root));
    encodeUniqueId(root, id);
    return CC_SUCCESS;
  }
  sockaddr_storage addr{};
  const char* ifname = std::getenv("CC_SOCKET_IFNAME");
  if (ifname != nullptr && ifname[0] != '\0') {
    cc_result_t rc = interfaceAddress(ifname, &addr);
    if (rc != CC_SUCCESS) return addErrorContext(rc, "CC_SOCKET_IFNAME=%s", ifname);
  } else {
    CC_CHECK(defaultHostAddress(&addr));
  }
  CC_CHECK(randomNonce(&root.nonce));
  CC_CHECK(store::listenAndServe(addr, root.nonce, /*reuseAddress=*/false, &root.addr));
  root.addrLen = store::sockaddrLength(root.addr);
  root.fromEnvironment = false;
  CC_INFO("cc_get_unique_id: bootstrap store listening on %s", root.str().c_str());
  encodeUniqueId(root, id);
  return CC_SUCCESS;
}

cc_result_t decodeUniqueId(const cc_unique_id_t& id, RootAddress* root) {
  if (root == nullptr) return setError(CC_INVALID_ARGUMENT, "decodeUniqueId: root is NULL");
  unsigned char bytes[CC_UNIQUE_ID_BYTES];
  std::memcpy(bytes, id.internal, CC_UNIQUE_ID_BYTES);
  auto reject = [](const char* why) {
    return setError(CC_INVALID_ARGUMENT, "the unique id was not made by cc_get_unique_id: %s", why);
  };
  if (std::memcmp(bytes, kIdMagic, sizeof(kIdMagic)) != 0) {
    return reject("it does not start with the id magic (uninitialised, or not passed on whole?)");
  }
  uint64_t version = getLittle(bytes + kIdVersionAt, 2);
  if (version != kIdVersion) {
    return setError(CC_INVALID_ARGUMENT,
                    "the unique id was not made by cc_get_unique_id of this library version: id "
                    "format %u, this library reads format %u",
                    static_cast<unsigned>(version), static_cast<unsigned>(kIdVersion));
  }
  if (getLittle(bytes + kIdChecksumAt, 4) != fnv1a32(bytes, kIdChecksumAt)) {
    return reject("its checksum does not match (corrupted in transit?)");
  }
  uint8_t flags = bytes[kIdFlagsAt];
  uint8_t family = bytes[kIdFamilyAt];
  uint16_t port = static_cast<uint16_t>((bytes[kIdPortAt] << 8) | bytes[kIdPortAt + 1]);
  if ((flags & ~kIdFlagFromEnvironment) != 0 || (family != 4 && family != 6) || port == 0) {
    return reject("its flags, address family or port are invalid");
  }
  RootAddress decoded;
  if (family == 4) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    std::memcpy(&in.sin_addr, bytes + kIdAddressAt, 4);
    std::memcpy(&decoded.addr, &in, sizeof(in));
    decoded.addrLen = sizeof(in);
  } else {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(port);
    std::memcpy(&in6.sin6_addr, bytes + kIdAddressAt, 16);
    in6.sin6_scope_id = static_cast<uint32_t>(getLittle(bytes + kIdScopeAt, 4));
    std::memcpy(&decoded.addr, &in6, sizeof(in6));
    decoded.addrLen = sizeof(in6);
  }
  decoded.nonce = getLittle(bytes + kIdNonceAt, 8);
  decoded.fromEnvironment = (flags & kIdFlagFromEnvironment) != 0;
  *root = decoded;
  return CC_SUCCESS;
}

// ---------------------------------------------------------------------------
// StoreClient
// ---------------------------------------------------------------------------

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
                                   int timeoutMs, const std::string& what, std::string* payload) {
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
  request.u8(static_cast<uint8_t>(store::Op::Get)).str(key);
  std::string payload;
  std::lock_guard<std::mutex> lock(mutex_);
  CC_CHECK(roundTrip(request.finish(), Clock::now() + std::chrono::milliseconds(timeoutMs_),
                     timeoutMs_, "get of key '" + store::printableKey(key) + "'", &payload));
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

cc_result_t StoreClient::waitForKeys(const std::vector<std::string>& keys, int timeoutMs) {
  if (keys.empty()) return CC_SUCCESS;
  if (keys.size() > store::kMaxWaitKeys) {
    return setError(CC_INVALID_ARGUMENT, "cannot wait for %zu keys at once (the limit is %zu)",
                    keys.size(), store::kMaxWaitKeys);
  }
  store::FrameWriter request;
  request.u8(static_cast<uint8_t>(store::Op::Wait)).u32(static_cast<uint32_t>(keys.size()));
  for (const auto& key : keys) {
    CC_CHECK(checkKey(key));
    request.str(key);
  }
  std::string payload;
  std::lock_guard<std::mutex> lock(mutex_);
  return roundTrip(request.finish(), Clock::now() + std::chrono::milliseconds(timeoutMs), timeoutMs,
                   "a wait for key(s) " + describeKeys(keys), &payload);
}

// A counter per barrier name; the generation (arrivals / nranks) names the
// release key, so the same name can be reused for the next barrier.
cc_result_t StoreClient::barrier(const std::string& name) {
  const std::string counterKey = "cc/barrier/" + name;
  int64_t arrived = 0;
  cc_result_t rc = tryAdd(counterKey, 1, &arrived);
  if (rc == CC_SUCCESS) {
    int64_t generation = (arrived - 1) / nranks_;
    std::string releaseKey = counterKey + "/release/" + std::to_string(generation);
    if (arrived % nranks_ == 0) rc = trySet(releaseKey, {});
    if (rc == CC_SUCCESS) rc = waitForKeys({releaseKey}, timeoutMs_);
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
