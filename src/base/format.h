// printf-style formatting into a std::string, for error text and log lines.
#pragma once

#include <cstdarg>
#include <string>

namespace cc {

std::string formatV(const char* fmt, va_list args);

}  // namespace cc
