#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "base/format.h"

namespace cc {
namespace {

std::atomic<int> gLogLevel{static_cast<int>(LogLevel::Warn)};

}  // namespace

LogLevel logLevel() { return static_cast<LogLevel>(gLogLevel.load(std::memory_order_relaxed)); }
void setLogLevel(LogLevel level) { gLogLevel.store(static_cast<int>(level)); }

void logMessage(LogLevel level, const char* fmt, ...) {
  static const char* names[] = {"WARN", "INFO", "TRACE"};
  va_list args;
  va_start(args, fmt);
  std::string text = formatV(fmt, args);
  va_end(args);
  char host[64] = {0};
  gethostname(host, sizeof(host) - 1);
  std::fprintf(stderr, "%s:%d [cc %s] %s\n", host, static_cast<int>(getpid()),
               names[static_cast<int>(level)], text.c_str());
}

}  // namespace cc
