// Logging to stderr at the level CC_DEBUG sets (WARN, INFO, TRACE).
#pragma once

namespace cc {

enum class LogLevel { Warn = 0, Info = 1, Trace = 2 };
LogLevel logLevel();
void setLogLevel(LogLevel level);
void logMessage(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace cc

#define CC_WARN(...) ::cc::logMessage(::cc::LogLevel::Warn, __VA_ARGS__)
// INFO and TRACE test the level first, so that arguments that cost something
// to format cost nothing when the level is off.
#define CC_INFO(...)                                                              \
  do {                                                                            \
    if (::cc::logLevel() >= ::cc::LogLevel::Info) ::cc::logMessage(::cc::LogLevel::Info, __VA_ARGS__); \
  } while (0)
#define CC_TRACE(...)                                                             \
  do {                                                                            \
    if (::cc::logLevel() >= ::cc::LogLevel::Trace) ::cc::logMessage(::cc::LogLevel::Trace, __VA_ARGS__); \
  } while (0)
