// Results and error text, the ground floor every layer stands on. A failing
// function records a message for the calling thread and returns the code up
// the stack; the public header's cc_result_t is the code.
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

}  // namespace cc

#define CC_CHECK(expr)                           \
  do {                                           \
    cc_result_t cc_check_result_ = (expr);       \
    if (cc_check_result_ != CC_SUCCESS) return cc_check_result_; \
  } while (0)
