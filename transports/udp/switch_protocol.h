// The switch protocol's packets (docs/switch-protocol.md): the 32-byte
// header, the packet types, the payload sizes and the control payloads.
// Shared by the workers (switch_client.h) and the daemon (switch/), so both
// read and write the same bytes. Pure functions on byte buffers: no sockets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace cc {
namespace swp {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the switch protocol is little-endian and payloads are copied as they are");

constexpr uint16_t kMagic = 0x5343;  // bytes 'C', 'S'
constexpr uint8_t kVersion = 1;
constexpr size_t kHeaderBytes = 32;
// The largest datagram either side sends or accepts: a 9000-byte jumbo frame
// less the IPv4 and UDP headers.
constexpr size_t kMaxDatagramBytes = 8972;
constexpr size_t kMaxPayloadBytes = kMaxDatagramBytes - kHeaderBytes;
constexpr int kMaxRanks = 64;          // the bitmap is 64 bits
constexpr int kMaxWindow = 4096;
constexpr uint16_t kAllRanks = 0xffff;  // `rank` of switch packets sent to every worker
constexpr size_t kMaxReasonBytes = 200;
constexpr size_t kBlockValues = 32;     // offsets and counts are whole nat blocks

enum Type : uint8_t {
  kData = 1,
  kResult = 2,
  kStatus = 3,
  kAdmit = 4,
  kAdmitted = 5,
  kRefused = 6,
  kLeave = 7,
  kLeft = 8,
  kAbort = 9,
  kGone = 10,
};
const char* typeName(uint8_t type);

enum Flag : uint8_t {
  kFlagSet = 1u << 0,
  kFlagRetx = 1u << 1,
  kFlagOverflow = 1u << 2,
  kFlagMismatch = 1u << 3,
};
constexpr uint8_t kKnownFlags = 0x0f;

// Encodings of the mode byte: bits 0-3 up, bits 4-7 down.
enum Encoding : uint8_t { kInt32 = 0, kNat = 1 };
inline uint8_t makeMode(Encoding up, Encoding down) { return static_cast<uint8_t>(up | (down << 4)); }
inline Encoding upOf(uint8_t mode) { return static_cast<Encoding>(mode & 0x0f); }
inline Encoding downOf(uint8_t mode) { return static_cast<Encoding>(mode >> 4); }
inline bool validMode(uint8_t mode) { return upOf(mode) <= kNat && downOf(mode) <= kNat; }
const char* encodingName(Encoding encoding);

struct Header {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint8_t job = 0;
  uint16_t rank = 0;
  uint16_t slot = 0;
  uint16_t count = 0;
  uint32_t round = 0;
  uint32_t key = 0;
  uint8_t mode = 0;
  uint8_t expCur = 0;
  uint8_t expNext = 0;
  uint64_t offset = 0;
};

// Writes the 32 header bytes (magic and version included).
void writeHeader(const Header& header, void* out);

enum class ParseResult { Ok, Truncated, Malformed, ForeignVersion };
// Reads a header from a datagram of `bytes` bytes: Truncated below 32 bytes,
// Malformed for a wrong magic, an unknown type, unknown flags or a nonzero
// reserved byte, ForeignVersion for another version. The payload is not
// checked here (its size depends on the job).
ParseResult parseHeader(const void* datagram, size_t bytes, Header* out);

// Payload bytes of `count` values in `encoding`.
inline size_t payloadBytes(Encoding encoding, size_t count) {
  return encoding == kNat ? 36 * ((count + 31) / 32) : 4 * count;
}
// The most values (a multiple of 32) whose DATA and RESULT both fit a
// datagram of `datagramBytes` bytes in `mode`; 0 when not even one block fits.
size_t valuesFitting(uint8_t mode, size_t datagramBytes);

// Serial-number comparison of rounds (RFC 1982 style): a is before b.
inline bool roundBefore(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }

// ---------------------------------------------------------------- control

// A rank's address as the switch sees it.
struct RankAddress {
  uint8_t family = 0;  // 4 or 6
  uint16_t port = 0;
  uint8_t address[16] = {};
};
constexpr size_t kRankAddressBytes = 20;
void writeRankAddress(const RankAddress& address, uint8_t* out);
bool readRankAddress(const uint8_t* in, RankAddress* out);

struct AdmitRequest {
  uint64_t nonce = 0;
  uint64_t seed = 0;
  uint32_t timeoutMs = 0;
  uint16_t nranks = 0;
  uint16_t window = 0;
  uint16_t count = 0;
  uint8_t mode = 0;
  RankAddress ranks[kMaxRanks];
};
constexpr size_t kAdmitFixedBytes = 28;
inline size_t admitPayloadBytes(int nranks) { return kAdmitFixedBytes + kRankAddressBytes * static_cast<size_t>(nranks); }
// Writes the payload; returns its size.
size_t writeAdmit(const AdmitRequest& request, uint8_t* out);
// Reads and checks a payload; false (with `why`) for a bad one.
bool readAdmit(const uint8_t* in, size_t bytes, AdmitRequest* out, std::string* why);

struct AdmitReply {
  uint64_t nonce = 0;
  uint16_t window = 0;
  uint16_t count = 0;
  uint32_t slotsFree = 0;
};
constexpr size_t kAdmittedBytes = 16;
void writeAdmitted(const AdmitReply& reply, uint8_t* out);
bool readAdmitted(const uint8_t* in, size_t bytes, AdmitReply* out);

constexpr size_t kStatusBytes = 16;
void writeStatus(uint64_t bitmap, uint16_t nranks, uint8_t* out);
bool readStatus(const uint8_t* in, size_t bytes, uint64_t* bitmap, uint16_t* nranks);

// Text payloads (REFUSED after its nonce, ABORT, GONE): at most
// kMaxReasonBytes, printable ASCII on reading (anything else becomes '?').
size_t writeReason(const std::string& reason, uint8_t* out);
std::string readReason(const uint8_t* in, size_t bytes);

}  // namespace swp
}  // namespace cc
