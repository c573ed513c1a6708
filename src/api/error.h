// Errors and logging shared by every layer. A failing function records a
// message for the calling thread and returns the code up the stack.
#pragma once

#include <cstdarg>
#include <string>

#include "compressedcoll.h"

namespace cc {

// Records "CC_<CODE>: <message>" as the calling thread's last error and
// returns `code`, so failures read `return setError(CC_TIMEOUT, "...", ...)`.
cc_result_t setError(cc_result_t code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
cc_result_t setErrorV(cc_result_t code, const char* fmt, va_list args);
// Prefixes the calling thread's current message with context, keeping its code.
cc_result_t addErrorContext(cc_result_t code, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
const std::string& lastErrorMessage();
void clearLastError();
// Puts back a message saved from lastErrorMessage() (the first of several failures).
void restoreLastError(const std::string& message);
const char* resultName(cc_result_t code);

enum class LogLevel { Warn = 0, Info = 1, Trace = 2 };
LogLevel logLevel();
void setLogLevel(LogLevel level);
void logMessage(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace cc

#define CC_CHECK(expr)                           \
  do {                                           \
    cc_result_t cc_check_result_ = (expr);       \
    if (cc_check_result_ != CC_SUCCESS) return cc_check_result_; \
  } while (0)

#define CC_WARN(...) ::cc::logMessage(::cc::LogLevel::Warn, __VA_ARGS__)
#define CC_INFO(...)                                                              \
  do {                                                                            \
    if (::cc::logLevel() >= ::cc::LogLevel::Info) ::cc::logMessage(::cc::LogLevel::Info, __VA_ARGS__); \
  } while (0)
#define CC_TRACE(...)                                                             \
  do {                                                                            \
    if (::cc::logLevel() >= ::cc::LogLevel::Trace) ::cc::logMessage(::cc::LogLevel::Trace, __VA_ARGS__); \
  } while (0)
