// Text helpers the perf tools share: option lists and JSON strings.
#pragma once

#include <string>
#include <vector>

namespace ccperf {

// The non-empty parts of `text` between `separator`s.
inline std::vector<std::string> splitOn(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(separator, start);
    if (end == std::string::npos) end = text.size();
    if (end > start) parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// `text` with quotes and backslashes escaped for a JSON string.
inline std::string jsonEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace ccperf
