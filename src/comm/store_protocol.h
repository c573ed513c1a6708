// Wire protocol of the bootstrap store, shared by the client (bootstrap.cc)
// and the server (store_server.cc). docs/bootstrap.md describes it for humans.
//
// Every message is a frame: a little-endian uint32 body length, then the body.
// Requests start with an opcode byte; replies with a status byte. Integers are
// little-endian; strings are a uint32 length followed by the bytes. The
// protocol is strictly request/reply: a client sends one request and waits
// for its reply, which lets the server bound what it buffers per client.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "compressedcoll.h"

namespace cc {
namespace store {

// A JOIN from something that is not our client (a port scanner, another
// service's client) is recognised by this word and dropped without a reply.
constexpr uint32_t kProtocolMagic = 0x54534343u;  // "CCST"
// 2: JOIN carries the job's secret; GET and WAIT carry their timeout, past
// which the store answers Timeout saying what is missing.
constexpr uint16_t kProtocolVersion = 2;
constexpr size_t kSecretBytes = 16;

// Caps that keep one misbehaving client from exhausting the root's memory.
constexpr size_t kMaxKeyBytes = 4096;
constexpr size_t kMaxValueBytes = size_t{64} << 20;
constexpr size_t kMaxWaitKeys = 65536;
constexpr size_t kMaxFrameBytes = kMaxValueBytes + kMaxKeyBytes + 64;
constexpr size_t kMaxStoreBytes = size_t{1} << 30;  // all keys and values together
constexpr size_t kFrameHeaderBytes = 4;
// Until a connection has joined (and shown the secret) it may send one frame
// of at most this many bytes: a JOIN is 39. Nothing larger is buffered for it.
constexpr size_t kMaxJoinFrameBytes = 64;

enum class Op : uint8_t {
  Join = 1,  // u32 magic, u16 version, u64 nonce, u8[16] secret, i32 rank, i32 nranks
  Set = 2,   // str key, str value
  Get = 3,   // u32 timeout ms, str key; answered once the key exists, with its value
  Add = 4,   // str key, i64 delta; answered with the new value (i64)
  Wait = 5,  // u32 timeout ms, u32 count, count x str key; answered once every key exists
};

enum class Status : uint8_t {
  Ok = 0,     // payload depends on the request (GET: the value, ADD: an i64)
  Error = 1,  // payload: the reason as text
  // A GET or WAIT whose keys were not all set within its timeout. Payload:
  // u32 keys missing, then up to kMaxReportedKeys of them (str); i32 nranks
  // (0: no rank joined yet), u32 ranks that never joined, then up to
  // kMaxReportedRanks of them (i32).
  Timeout = 2,
};
constexpr size_t kMaxReportedKeys = 16;
constexpr size_t kMaxReportedRanks = 64;

// Builds one frame; the length prefix is patched in by finish().
class FrameWriter {
 public:
  FrameWriter() : buf_(kFrameHeaderBytes, 0) {}
  FrameWriter& u8(uint8_t v) {
    buf_.push_back(static_cast<char>(v));
    return *this;
  }
  FrameWriter& u16(uint16_t v) { return little(v, 2); }
  FrameWriter& u32(uint32_t v) { return little(v, 4); }
  FrameWriter& u64(uint64_t v) { return little(v, 8); }
  FrameWriter& i32(int32_t v) { return u32(static_cast<uint32_t>(v)); }
  FrameWriter& i64(int64_t v) { return u64(static_cast<uint64_t>(v)); }
  FrameWriter& str(const char* data, size_t size) {
    u32(static_cast<uint32_t>(size));
    return raw(data, size);
  }
  FrameWriter& str(const std::string& s) { return str(s.data(), s.size()); }
  FrameWriter& raw(const char* data, size_t size) {
    buf_.insert(buf_.end(), data, data + size);
    return *this;
  }
  std::vector<char> finish() {
    uint64_t body = buf_.size() - kFrameHeaderBytes;
    for (size_t i = 0; i < kFrameHeaderBytes; ++i) buf_[i] = static_cast<char>(body >> (8 * i));
    return std::move(buf_);
  }

 private:
  FrameWriter& little(uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) buf_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  std::vector<char> buf_;
};

// Reads a frame body. Any read past the end makes ok() false (and returns
// zeros), so a parser checks once at the end instead of after every field.
class FrameReader {
 public:
  FrameReader(const char* data, size_t size) : p_(data), left_(size) {}
  uint8_t u8() { return static_cast<uint8_t>(little(1)); }
  uint16_t u16() { return static_cast<uint16_t>(little(2)); }
  uint32_t u32() { return static_cast<uint32_t>(little(4)); }
  uint64_t u64() { return little(8); }
  int32_t i32() { return static_cast<int32_t>(u32()); }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  // A length-prefixed string of at most maxBytes.
  std::string str(size_t maxBytes) {
    uint32_t size = u32();
    if (!ok_ || size > maxBytes || size > left_) {
      ok_ = false;
      return std::string();
    }
    std::string s(p_, size);
    p_ += size;
    left_ -= size;
    return s;
  }
  // Everything not read yet.
  std::string rest() {
    std::string s(p_, left_);
    p_ += left_;
    left_ = 0;
    return s;
  }
  bool ok() const { return ok_; }
  // Well formed: every field was present and nothing trails them.
  bool complete() const { return ok_ && left_ == 0; }

 private:
  uint64_t little(size_t bytes) {
    if (!ok_ || left_ < bytes) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(p_[i])) << (8 * i);
    }
    p_ += bytes;
    left_ -= bytes;
    return v;
  }
  const char* p_;
  size_t left_;
  bool ok_ = true;
};

// strerror is not thread-safe; this is (GNU strerror_r returns the text).
inline std::string errnoText(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

inline socklen_t sockaddrLength(const sockaddr_storage& addr) {
  return addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

// The port in host byte order (0 for other families). Copies instead of
// casting, which would break strict aliasing.
inline uint16_t sockaddrPort(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    sockaddr_in in;
    std::memcpy(&in, &addr, sizeof(in));
    return ntohs(in.sin_port);
  }
  if (addr.ss_family == AF_INET6) {
    sockaddr_in6 in6;
    std::memcpy(&in6, &addr, sizeof(in6));
    return ntohs(in6.sin6_port);
  }
  return 0;
}

inline uint32_t frameLength(const char* header) {
  uint32_t v = 0;
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
    v |= static_cast<uint32_t>(static_cast<unsigned char>(header[i])) << (8 * i);
  }
  return v;
}

// Server entry point used by createUniqueId and serveStore: binds a listening
// socket to `addr` (port 0 picks a free port), starts the store thread that
// admits ranks presenting `nonce` and `secret`, and returns the bound address (with its
// port) in *bound. reuseAddress sets SO_REUSEADDR (a fixed CC_COMM_ID port
// must be rebindable right after the previous job's root exited).
cc_result_t listenAndServe(const sockaddr_storage& addr, uint64_t nonce, const uint8_t (&secret)[kSecretBytes],
                           bool reuseAddress, sockaddr_storage* bound);

// Key text fit for an error message: printable ASCII as is, other bytes as
// \xNN, long keys shortened.
std::string printableKey(const std::string& key);

}  // namespace store
}  // namespace cc
