// UDP sockets for the switch protocol: address parsing, batched receive and
// send (recvmmsg / sendmmsg) on non-blocking sockets, and waits with a
// timeout that another thread can interrupt. Used by the workers
// (switch_client.h) and by the daemon (switch/).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "compressedcoll.h"

namespace cc {

// Resolves "host:port", "IPv4:port" or "[IPv6]:port" (port 0..65535 when
// `allowPortZero`, else 1..65535); IPv4 results are preferred. `what` names
// the setting in messages (e.g. "CC_SWITCH_ADDR").
cc_result_t resolveUdpAddress(const std::string& text, const char* what, bool allowPortZero, sockaddr_storage* out,
                              socklen_t* length);
// "10.0.0.1:9000" or "[::1]:9000".
std::string udpAddressString(const sockaddr* address);
bool sameUdpAddress(const sockaddr* a, const sockaddr* b);

// One datagram of a batch: where it is, how long, and (for unconnected
// sockets) its peer.
struct Datagram {
  void* data = nullptr;
  size_t bytes = 0;         // receive: capacity in, length out; send: length
  size_t capacity = 0;
  bool truncated = false;   // receive: longer than the capacity (MSG_TRUNC)
  sockaddr_storage peer{};  // receive: the sender; send: the destination (unconnected sockets)
  socklen_t peerLength = 0;
};

class UdpSocket {
 public:
  UdpSocket() = default;
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  // A socket bound to `local` (the daemon).
  cc_result_t bind(const sockaddr* local, socklen_t length);
  // A socket connected to `remote` (a worker): the kernel picks the local
  // address and port, and the socket receives only from `remote`.
  cc_result_t connect(const sockaddr* remote, socklen_t length);
  // Asks for buffers of `bytes` each way, past the system's limits where
  // the process may (SO_*BUFFORCE); returns what the kernel granted.
  void setBuffers(int bytes, int* granted = nullptr);

  int fd() const { return fd_; }
  sockaddr_storage localAddress() const;
  // The path MTU towards the connected peer (the interface's MTU), 0 when unknown.
  int pathMtu() const;

  // Receives up to `n` datagrams without waiting; returns how many (0 when
  // none is queued). Errors other than "nothing there" fail.
  cc_result_t receive(Datagram* batch, int n, int* received);
  // Sends the datagrams; stops early when the socket's buffer is full
  // (`sent` < n: wait for writability and send the rest).
  cc_result_t send(Datagram* batch, int n, bool connected, int* sent);
  // Waits until the socket is readable (or writable too, when `write`), the
  // timeout passes or interrupt() is called; `ready` says whether the socket
  // is ready. A negative timeout waits without end.
  cc_result_t wait(int timeoutMs, bool write, bool* readable, bool* writable);
  // Wakes every wait() now and later, from any thread.
  void interrupt();
  bool interrupted() const;
  // The last error the kernel reported for a datagram and that receive()
  // and send() passed over (ICMP port unreachable on a connected socket:
  // ECONNREFUSED), 0 when none: for messages at a timeout.
  int softError() const { return softError_; }

 private:
  cc_result_t open(int family);
  int fd_ = -1;
  int wakeFd_ = -1;
  int softError_ = 0;
};

}  // namespace cc
