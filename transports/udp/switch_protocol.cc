#include "transports/udp/switch_protocol.h"

namespace cc {
namespace swp {
namespace {

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint16_t get16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

const char* typeName(uint8_t type) {
  switch (type) {
    case kData: return "DATA";
    case kResult: return "RESULT";
    case kStatus: return "STATUS";
    case kAdmit: return "ADMIT";
    case kAdmitted: return "ADMITTED";
    case kRefused: return "REFUSED";
    case kLeave: return "LEAVE";
    case kLeft: return "LEFT";
    case kAbort: return "ABORT";
    case kGone: return "GONE";
    default: return "unknown";
  }
}

const char* encodingName(Encoding encoding) { return encoding == kNat ? "nat" : "int32"; }

void writeHeader(const Header& h, void* out) {
  uint8_t* p = static_cast<uint8_t*>(out);
  put16(p + 0, kMagic);
  p[2] = kVersion;
  p[3] = h.type;
  p[4] = h.flags;
  p[5] = h.job;
  put16(p + 6, h.rank);
  put16(p + 8, h.slot);
  put16(p + 10, h.count);
  put32(p + 12, h.round);
  put32(p + 16, h.key);
  p[20] = h.mode;
  p[21] = h.expCur;
  p[22] = h.expNext;
  p[23] = 0;
  put64(p + 24, h.offset);
}

ParseResult parseHeader(const void* datagram, size_t bytes, Header* out) {
  if (bytes < kHeaderBytes) return ParseResult::Truncated;
  const uint8_t* p = static_cast<const uint8_t*>(datagram);
  if (get16(p) != kMagic) return ParseResult::Malformed;
  if (p[2] != kVersion) return ParseResult::ForeignVersion;
  if (p[3] < kData || p[3] > kGone || (p[4] & ~kKnownFlags) != 0 || p[23] != 0) return ParseResult::Malformed;
  Header& h = *out;
  h.type = p[3];
  h.flags = p[4];
  h.job = p[5];
  h.rank = get16(p + 6);
  h.slot = get16(p + 8);
  h.count = get16(p + 10);
  h.round = get32(p + 12);
  h.key = get32(p + 16);
  h.mode = p[20];
  h.expCur = p[21];
  h.expNext = p[22];
  h.offset = get64(p + 24);
  return ParseResult::Ok;
}

size_t valuesFitting(uint8_t mode, size_t datagramBytes) {
  if (datagramBytes > kMaxDatagramBytes) datagramBytes = kMaxDatagramBytes;
  if (datagramBytes <= kHeaderBytes) return 0;
  const size_t budget = datagramBytes - kHeaderBytes;
  size_t blocks = 0xffff / kBlockValues;  // count is 16 bits
  for (Encoding e : {upOf(mode), downOf(mode)}) {
    const size_t perBlock = e == kNat ? 36 : 4 * kBlockValues;
    if (budget / perBlock < blocks) blocks = budget / perBlock;
  }
  return blocks * kBlockValues;
}

void writeRankAddress(const RankAddress& a, uint8_t* out) {
  out[0] = a.family;
  out[1] = 0;
  put16(out + 2, a.port);
  std::memcpy(out + 4, a.address, 16);
}

bool readRankAddress(const uint8_t* in, RankAddress* out) {
  if ((in[0] != 4 && in[0] != 6) || in[1] != 0) return false;
  out->family = in[0];
  out->port = get16(in + 2);
  std::memcpy(out->address, in + 4, 16);
  if (out->family == 4) {
    for (int i = 4; i < 16; ++i) {
      if (out->address[i] != 0) return false;
    }
  }
  return out->port != 0;
}

size_t writeAdmit(const AdmitRequest& r, uint8_t* out) {
  put64(out + 0, r.nonce);
  put64(out + 8, r.seed);
  put32(out + 16, r.timeoutMs);
  put16(out + 20, r.nranks);
  put16(out + 22, r.window);
  put16(out + 24, r.count);
  out[26] = r.mode;
  out[27] = 0;
  for (int i = 0; i < r.nranks && i < kMaxRanks; ++i) writeRankAddress(r.ranks[i], out + kAdmitFixedBytes + kRankAddressBytes * i);
  return admitPayloadBytes(r.nranks);
}

bool readAdmit(const uint8_t* in, size_t bytes, AdmitRequest* out, std::string* why) {
  if (bytes < kAdmitFixedBytes) {
    *why = "an ADMIT payload shorter than its fixed part";
    return false;
  }
  AdmitRequest& r = *out;
  r.nonce = get64(in + 0);
  r.seed = get64(in + 8);
  r.timeoutMs = get32(in + 16);
  r.nranks = get16(in + 20);
  r.window = get16(in + 22);
  r.count = get16(in + 24);
  r.mode = in[26];
  if (in[27] != 0) {
    *why = "a nonzero reserved byte";
    return false;
  }
  if (r.nranks < 1 || r.nranks > kMaxRanks) {
    *why = "n = " + std::to_string(r.nranks) + " is outside 1.." + std::to_string(kMaxRanks);
    return false;
  }
  if (bytes != admitPayloadBytes(r.nranks)) {
    *why = "an ADMIT payload of " + std::to_string(bytes) + " bytes for " + std::to_string(r.nranks) + " ranks";
    return false;
  }
  if (r.window < 1 || r.window > kMaxWindow) {
    *why = "window " + std::to_string(r.window) + " is outside 1.." + std::to_string(kMaxWindow);
    return false;
  }
  if (!validMode(r.mode)) {
    *why = "unknown mode " + std::to_string(r.mode);
    return false;
  }
  if (r.count == 0 || r.count % kBlockValues != 0 || r.count > valuesFitting(r.mode, kMaxDatagramBytes)) {
    *why = "count " + std::to_string(r.count) + " is not a multiple of 32 whose packets fit " +
           std::to_string(kMaxDatagramBytes) + "-byte datagrams in mode " + encodingName(upOf(r.mode)) + "/" +
           encodingName(downOf(r.mode));
    return false;
  }
  if (r.timeoutMs == 0) {
    *why = "a timeout of 0 ms";
    return false;
  }
  for (int i = 0; i < r.nranks; ++i) {
    if (!readRankAddress(in + kAdmitFixedBytes + kRankAddressBytes * i, &r.ranks[i])) {
      *why = "a bad address for rank " + std::to_string(i);
      return false;
    }
  }
  return true;
}

void writeAdmitted(const AdmitReply& r, uint8_t* out) {
  put64(out + 0, r.nonce);
  put16(out + 8, r.window);
  put16(out + 10, r.count);
  put32(out + 12, r.slotsFree);
}

bool readAdmitted(const uint8_t* in, size_t bytes, AdmitReply* out) {
  if (bytes != kAdmittedBytes) return false;
  out->nonce = get64(in + 0);
  out->window = get16(in + 8);
  out->count = get16(in + 10);
  out->slotsFree = get32(in + 12);
  return true;
}

void writeStatus(uint64_t bitmap, uint16_t nranks, uint8_t* out) {
  std::memset(out, 0, kStatusBytes);
  put64(out, bitmap);
  put16(out + 8, nranks);
}

bool readStatus(const uint8_t* in, size_t bytes, uint64_t* bitmap, uint16_t* nranks) {
  if (bytes != kStatusBytes) return false;
  *bitmap = get64(in);
  *nranks = get16(in + 8);
  return true;
}

size_t writeReason(const std::string& reason, uint8_t* out) {
  const size_t n = reason.size() < kMaxReasonBytes ? reason.size() : kMaxReasonBytes;
  std::memcpy(out, reason.data(), n);
  return n;
}

std::string readReason(const uint8_t* in, size_t bytes) {
  if (bytes > kMaxReasonBytes) bytes = kMaxReasonBytes;
  std::string text(reinterpret_cast<const char*>(in), bytes);
  for (char& c : text) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return text;
}

}  // namespace swp
}  // namespace cc
