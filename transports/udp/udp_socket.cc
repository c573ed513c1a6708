#include "transports/udp/udp_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "base/address_choice.h"
#include "base/error.h"

namespace cc {

cc_result_t resolveUdpAddress(const std::string& text, const char* what, bool allowPortZero, sockaddr_storage* out,
                              socklen_t* length) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return setError(CC_INVALID_ARGUMENT, "%s: '%s' is not host:port, IPv4:port or [IPv6]:port", what, text.c_str());
  }
  std::string host = text.substr(0, colon);
  const std::string portText = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) {
      return setError(CC_INVALID_ARGUMENT, "%s: '%s' has an unclosed '[' (expected [IPv6]:port)", what, text.c_str());
    }
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return setError(CC_INVALID_ARGUMENT, "%s: '%s': an IPv6 address goes in brackets, [IPv6]:port", what,
                    text.c_str());
  }
  char* end = nullptr;
  errno = 0;
  const long port = std::strtol(portText.c_str(), &end, 10);
  if (*end != '\0' || errno != 0 || port < (allowPortZero ? 0 : 1) || port > 65535) {
    return setError(CC_INVALID_ARGUMENT, "%s: '%s' has no valid port (%d..65535)", what, text.c_str(),
                    allowPortZero ? 0 : 1);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const int rc = getaddrinfo(host.c_str(), portText.c_str(), &hints, &results);
  if (rc != 0) {
    return setError(rc == EAI_AGAIN ? CC_SYSTEM_ERROR : CC_INVALID_ARGUMENT, "%s: cannot resolve '%s': %s", what,
                    host.c_str(), gai_strerror(rc));
  }
  const addrinfo* chosen = preferredAddress(results);
  if (chosen == nullptr) {
    freeaddrinfo(results);
    return setError(CC_INVALID_ARGUMENT, "%s: '%s' resolves to no IPv4 or IPv6 address", what, host.c_str());
  }
  std::memset(out, 0, sizeof(*out));
  std::memcpy(out, chosen->ai_addr, chosen->ai_addrlen);
  *length = chosen->ai_addrlen;
  freeaddrinfo(results);
  return CC_SUCCESS;
}

std::string udpAddressString(const sockaddr* address) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (address->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  if (address->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6->sin6_port));
  }
  return "(address family " + std::to_string(address->sa_family) + ")";
}

bool sameUdpAddress(const sockaddr* a, const sockaddr* b) {
  if (a->sa_family != b->sa_family) return false;
  if (a->sa_family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(a);
    const auto* y = reinterpret_cast<const sockaddr_in*>(b);
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(a);
    const auto* y = reinterpret_cast<const sockaddr_in6*>(b);
    return x->sin6_port == y->sin6_port && std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0;
  }
  return false;
}

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) ::close(fd_);
  if (wakeFd_ >= 0) ::close(wakeFd_);
}

cc_result_t UdpSocket::open(int family) {
  fd_ = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd_ < 0) return setError(CC_SYSTEM_ERROR, "socket(UDP): %s", std::strerror(errno));
  wakeFd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd_ < 0) return setError(CC_SYSTEM_ERROR, "eventfd: %s", std::strerror(errno));
  return CC_SUCCESS;
}

cc_result_t UdpSocket::bind(const sockaddr* local, socklen_t length) {
  CC_CHECK(open(local->sa_family));
  if (::bind(fd_, local, length) != 0) {
    return setError(CC_SYSTEM_ERROR, "cannot bind UDP %s: %s", udpAddressString(local).c_str(), std::strerror(errno));
  }
  return CC_SUCCESS;
}

cc_result_t UdpSocket::connect(const sockaddr* remote, socklen_t length) {
  CC_CHECK(open(remote->sa_family));
  if (::connect(fd_, remote, length) != 0) {
    return setError(CC_SYSTEM_ERROR, "cannot reach UDP %s: %s", udpAddressString(remote).c_str(),
                    std::strerror(errno));
  }
  return CC_SUCCESS;
}

void UdpSocket::setBuffers(int bytes, int* granted) {
  // Root may exceed net.core.[rw]mem_max; others get what the limits allow.
  for (int option : {SO_RCVBUF, SO_SNDBUF}) {
    const int force = option == SO_RCVBUF ? SO_RCVBUFFORCE : SO_SNDBUFFORCE;
    if (setsockopt(fd_, SOL_SOCKET, force, &bytes, sizeof(bytes)) != 0) {
      setsockopt(fd_, SOL_SOCKET, option, &bytes, sizeof(bytes));
    }
  }
  if (granted != nullptr) {
    int value = 0;
    socklen_t length = sizeof(value);
    getsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &value, &length);
    *granted = value;
  }
}

sockaddr_storage UdpSocket::localAddress() const {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
  return address;
}

int UdpSocket::pathMtu() const {
  int mtu = 0;
  socklen_t length = sizeof(mtu);
  const sockaddr_storage local = localAddress();
  if (local.ss_family == AF_INET6) {
    if (getsockopt(fd_, IPPROTO_IPV6, IPV6_MTU, &mtu, &length) != 0) return 0;
  } else if (getsockopt(fd_, IPPROTO_IP, IP_MTU, &mtu, &length) != 0) {
    return 0;
  }
  return mtu;
}

cc_result_t UdpSocket::receive(Datagram* batch, int n, int* received) {
  *received = 0;
  if (n <= 0) return CC_SUCCESS;
  mmsghdr messages[64];
  iovec vectors[64];
  if (n > 64) n = 64;
  for (int i = 0; i < n; ++i) {
    vectors[i] = iovec{batch[i].data, batch[i].capacity};
    std::memset(&messages[i], 0, sizeof(messages[i]));
    messages[i].msg_hdr.msg_iov = &vectors[i];
    messages[i].msg_hdr.msg_iovlen = 1;
    messages[i].msg_hdr.msg_name = &batch[i].peer;
    messages[i].msg_hdr.msg_namelen = sizeof(batch[i].peer);
  }
  int got;
  do {
    got = ::recvmmsg(fd_, messages, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    // ICMP errors of a connected socket surface here: the caller retries
    // and reports them at its timeout.
    if (errno == EAGAIN || errno == EWOULDBLOCK) return CC_SUCCESS;
    if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) {
      softError_ = errno;
      return CC_SUCCESS;
    }
    return setError(CC_SYSTEM_ERROR, "recvmmsg: %s", std::strerror(errno));
  }
  for (int i = 0; i < got; ++i) {
    batch[i].bytes = messages[i].msg_len;
    batch[i].truncated = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    batch[i].peerLength = messages[i].msg_hdr.msg_namelen;
  }
  *received = got;
  return CC_SUCCESS;
}

cc_result_t UdpSocket::send(Datagram* batch, int n, bool connected, int* sent) {
  *sent = 0;
  while (*sent < n) {
    mmsghdr messages[64];
    iovec vectors[64];
    const int chunk = n - *sent < 64 ? n - *sent : 64;
    for (int i = 0; i < chunk; ++i) {
      Datagram& d = batch[*sent + i];
      vectors[i] = iovec{d.data, d.bytes};
      std::memset(&messages[i], 0, sizeof(messages[i]));
      messages[i].msg_hdr.msg_iov = &vectors[i];
      messages[i].msg_hdr.msg_iovlen = 1;
      if (!connected) {
        messages[i].msg_hdr.msg_name = &d.peer;
        messages[i].msg_hdr.msg_namelen = d.peerLength;
      }
    }
    const int done = ::sendmmsg(fd_, messages, static_cast<unsigned>(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (done < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return CC_SUCCESS;
      // A datagram the kernel refuses (an unreachable peer of an
      // unconnected socket, a refused one of a connected socket) is dropped
      // like a lost packet: the protocol recovers or times out.
      if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH || errno == EPERM ||
          errno == EINVAL || errno == EMSGSIZE || errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT) {
        softError_ = errno;
        ++*sent;
        continue;
      }
      return setError(CC_SYSTEM_ERROR, "sendmmsg: %s", std::strerror(errno));
    }
    *sent += done;
    if (done < chunk) return CC_SUCCESS;  // the buffer filled up
  }
  return CC_SUCCESS;
}

cc_result_t UdpSocket::wait(int timeoutMs, bool write, bool* readable, bool* writable) {
  pollfd fds[2] = {{fd_, static_cast<short>(POLLIN | (write ? POLLOUT : 0)), 0}, {wakeFd_, POLLIN, 0}};
  int rc;
  do {
    rc = ::poll(fds, 2, timeoutMs);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return setError(CC_SYSTEM_ERROR, "poll: %s", std::strerror(errno));
  *readable = (fds[0].revents & (POLLIN | POLLERR)) != 0;
  if (writable != nullptr) *writable = (fds[0].revents & POLLOUT) != 0;
  return CC_SUCCESS;
}

void UdpSocket::interrupt() {
  if (wakeFd_ < 0) return;
  const uint64_t one = 1;
  ssize_t ignored = ::write(wakeFd_, &one, sizeof(one));
  (void)ignored;
}

bool UdpSocket::interrupted() const {
  if (wakeFd_ < 0) return false;
  pollfd fd{wakeFd_, POLLIN, 0};
  return ::poll(&fd, 1, 0) > 0;
}

}  // namespace cc
