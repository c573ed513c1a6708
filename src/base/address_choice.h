// Which of a resolver's answers to use: every rank resolves a host name
// itself, so prefer the family that resolves the same everywhere most often:
// IPv4, then IPv6, each in resolver order. Null when there is neither.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

namespace cc {

inline const addrinfo* preferredAddress(const addrinfo* results) {
  const addrinfo* chosen = nullptr;
  for (const addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) return ai;
    if (ai->ai_family == AF_INET6 && chosen == nullptr) chosen = ai;
  }
  return chosen;
}

}  // namespace cc
