// Bootstrap, the unique id: its layout, choosing the root's address (or
// CC_COMM_ID's), and the address helpers the store client and server share.
// The client is in store_client.cc, the server in store_server.cc, the wire
// protocol in store_protocol.h; docs/bootstrap.md describes them all.
#include "comm/bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "base/address_choice.h"
#include "base/error.h"
#include "base/log.h"
#include "comm/store_protocol.h"

namespace cc {
namespace {

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
//  48  u8[16]   secret: random, or derived from CC_COMM_SECRET (format 2)
//  64  ...      zero up to the checksum
// 124  u32      FNV-1a 32 of bytes 0..123: catches ids corrupted in transit
// ---------------------------------------------------------------------------
constexpr char kIdMagic[8] = {'C', 'C', 'B', 'O', 'O', 'T', 'I', 'D'};
constexpr uint16_t kIdVersion = 2;
constexpr size_t kIdVersionAt = 8;
constexpr size_t kIdFlagsAt = 10;
constexpr size_t kIdFamilyAt = 11;
constexpr size_t kIdPortAt = 12;
constexpr size_t kIdAddressAt = 16;
constexpr size_t kIdScopeAt = 32;
constexpr size_t kIdNonceAt = 40;
constexpr size_t kIdSecretAt = 48;
constexpr size_t kIdChecksumAt = 124;
constexpr uint8_t kIdFlagFromEnvironment = 1;
static_assert(kIdChecksumAt + 4 == CC_UNIQUE_ID_BYTES, "the checksum ends the id");

uint32_t fnv1a32(const unsigned char* data, size_t size) {
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 16777619u;
  return hash;
}

uint64_t fnv1a64(const std::string& text, uint64_t hash = 14695981039346656037ull) {
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
  std::memcpy(bytes + kIdSecretAt, root.secret, sizeof(root.secret));
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

// Random bytes from the kernel (getrandom), else std::random_device.
cc_result_t randomBytes(void* out, size_t size, const char* what) {
  unsigned char* at = static_cast<unsigned char*>(out);
  size_t done = 0;
  while (done < size) {
    ssize_t got = getrandom(at + done, size - done, 0);
    if (got > 0) {
      done += static_cast<size_t>(got);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    // Kernels before 3.17 have no getrandom; random_device reads /dev/urandom.
    try {
      std::random_device device;
      for (; done < size; ++done) at[done] = static_cast<unsigned char>(device());
    } catch (const std::exception& error) {
      return setError(CC_SYSTEM_ERROR, "no source of randomness for %s: %s", what, error.what());
    }
  }
  return CC_SUCCESS;
}

// The fewest characters CC_COMM_SECRET may have: a token every rank shares is
// the only thing keeping other processes out of a CC_COMM_ID job.
constexpr size_t kMinSecretChars = 16;

// The id's 16 secret bytes from the shared token: the token is the secret,
// this only gives it a fixed size (it is never sent, and a hash of it is
// worth no more than the token's own randomness).
cc_result_t secretFromToken(const char* token, const char* source, uint8_t (&secret)[16]) {
  if (token == nullptr || token[0] == '\0') {
    return setError(CC_INVALID_ARGUMENT,
                    "%s needs a secret: set CC_COMM_SECRET (or pass one) to a token that every rank of the "
                    "job shares and nobody else knows, at least %zu characters (e.g. the output of "
                    "`head -c16 /dev/urandom | od -An -tx1 | tr -d ' \\n'`), so that no other process "
                    "can join the job",
                    source, kMinSecretChars);
  }
  const std::string text(token);
  if (text.size() < kMinSecretChars) {
    return setError(CC_INVALID_ARGUMENT, "CC_COMM_SECRET has %zu characters; it needs at least %zu (a random token)",
                    text.size(), kMinSecretChars);
  }
  putLittle(secret, fnv1a64(text, 0xcbf29ce484222325ull ^ 0x5345435245543031ull), 8);
  putLittle(secret + 8, fnv1a64(text, 0xcbf29ce484222325ull ^ 0x5345435245543032ull), 8);
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

// host:port, IPv4:port or [IPv6]:port, from CC_COMM_ID or the caller
// (`source` names which in messages).
cc_result_t parseCommId(const std::string& text, const char* source, RootAddress* root) {
  auto malformed = [&](const std::string& why) {
    return setError(CC_INVALID_ARGUMENT,
                    "%s='%s' is malformed (%s); expected host:port, IPv4:port or "
                    "[IPv6]:port with a port in 1..65535",
                    source, text.c_str(), why.c_str());
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
                    "%s='%s': cannot resolve host '%s': %s", source, text.c_str(), host.c_str(),
                    gai_strerror(rc));
  }
  const addrinfo* chosen = preferredAddress(results);
  if (chosen == nullptr) {
    freeaddrinfo(results);
    return setError(CC_INVALID_ARGUMENT, "%s='%s': host '%s' has no IPv4 or IPv6 address", source,
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

cc_result_t uniqueIdFromAddress(const char* address, const char* secret, const char* source, cc_unique_id_t* id) {
  // Every rank computes the same id from the same text and token; rank 0
  // serves the store at init, so nothing is started here.
  RootAddress root;
  CC_CHECK(parseCommId(address, source, &root));
  if (secret == nullptr) secret = std::getenv("CC_COMM_SECRET");
  CC_CHECK(secretFromToken(secret, source, root.secret));
  encodeUniqueId(root, id);
  return CC_SUCCESS;
}

cc_result_t createUniqueId(cc_unique_id_t* id) {
  if (id == nullptr) return setError(CC_INVALID_ARGUMENT, "cc_get_unique_id: id is NULL");
  const char* commId = std::getenv("CC_COMM_ID");
  if (commId != nullptr && commId[0] != '\0') return uniqueIdFromAddress(commId, nullptr, "CC_COMM_ID", id);
  RootAddress root;
  sockaddr_storage addr{};
  const char* ifname = std::getenv("CC_SOCKET_IFNAME");
  if (ifname != nullptr && ifname[0] != '\0') {
    cc_result_t rc = interfaceAddress(ifname, &addr);
    if (rc != CC_SUCCESS) return addErrorContext(rc, "CC_SOCKET_IFNAME=%s", ifname);
  } else {
    CC_CHECK(defaultHostAddress(&addr));
  }
  CC_CHECK(randomNonce(&root.nonce));
  CC_CHECK(randomBytes(root.secret, sizeof(root.secret), "the unique id's secret"));
  CC_CHECK(store::listenAndServe(addr, root.nonce, root.secret, /*reuseAddress=*/false, &root.addr));
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
  std::memcpy(decoded.secret, bytes + kIdSecretAt, sizeof(decoded.secret));
  decoded.fromEnvironment = (flags & kIdFlagFromEnvironment) != 0;
  *root = decoded;
  return CC_SUCCESS;
}

}  // namespace cc
