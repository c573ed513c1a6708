#include "base/error.h"

#include "base/format.h"
#include "base/log.h"

namespace cc {
namespace {

thread_local std::string tlsLastError;

}  // namespace

const char* resultName(cc_result_t code) {
  switch (code) {
    case CC_SUCCESS: return "CC_SUCCESS";
    case CC_INVALID_ARGUMENT: return "CC_INVALID_ARGUMENT";
    case CC_INVALID_USAGE: return "CC_INVALID_USAGE";
    case CC_SYSTEM_ERROR: return "CC_SYSTEM_ERROR";
    case CC_REMOTE_ERROR: return "CC_REMOTE_ERROR";
    case CC_TIMEOUT: return "CC_TIMEOUT";
    case CC_UNSUPPORTED: return "CC_UNSUPPORTED";
    case CC_CUDA_ERROR: return "CC_CUDA_ERROR";
    case CC_INTERNAL_ERROR: return "CC_INTERNAL_ERROR";
    case CC_IN_PROGRESS: return "CC_IN_PROGRESS";
  }
  return "CC_UNKNOWN_RESULT";
}

cc_result_t setErrorV(cc_result_t code, const char* fmt, va_list args) {
  tlsLastError = std::string(resultName(code)) + ": " + formatV(fmt, args);
  if (logLevel() >= LogLevel::Info) logMessage(LogLevel::Info, "%s", tlsLastError.c_str());
  return code;
}

cc_result_t setError(cc_result_t code, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  setErrorV(code, fmt, args);
  va_end(args);
  return code;
}

cc_result_t addErrorContext(cc_result_t code, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string context = formatV(fmt, args);
  va_end(args);
  std::string prefix = std::string(resultName(code)) + ": ";
  std::string detail = tlsLastError.compare(0, prefix.size(), prefix) == 0
                           ? tlsLastError.substr(prefix.size())
                           : tlsLastError;
  tlsLastError = prefix + context + (detail.empty() ? "" : ": " + detail);
  return code;
}

const std::string& lastErrorMessage() { return tlsLastError; }
void clearLastError() { tlsLastError.clear(); }
void restoreLastError(const std::string& message) { tlsLastError = message; }

}  // namespace cc
