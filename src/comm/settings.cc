#include "comm/settings.h"

namespace cc {

const char* transportName(TransportKind kind) {
  switch (kind) {
    case TransportKind::Tcp: return "tcp";
    case TransportKind::Ibverbs: return "ibverbs";
    case TransportKind::Local: return "local";
  }
  return "unknown";
}

}  // namespace cc
