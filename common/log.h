// A small JSON-lines logger: one JSON object per line on stderr.
//
//   Log(LogLevel::kInfo, "listening", {{"addr", addr}, {"port", port}});
//
// Every line carries "ts" (RFC 3339, UTC), "level" and "msg"; fields follow in
// the order given. Lines below the global level are dropped. Thread-safe: a
// line is written with one write(2) call, so lines never interleave.
#ifndef CONVEYOR_COMMON_LOG_H_
#define CONVEYOR_COMMON_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace conveyor {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// A field value: strings are JSON-escaped, numbers and booleans written bare.
class LogValue {
 public:
  LogValue(const char* s) : text_(Quote(s)) {}                  // NOLINT
  LogValue(const std::string& s) : text_(Quote(s)) {}           // NOLINT
  LogValue(std::string_view s) : text_(Quote(s)) {}             // NOLINT
  LogValue(int v) : text_(std::to_string(v)) {}                 // NOLINT
  LogValue(long v) : text_(std::to_string(v)) {}                // NOLINT
  LogValue(long long v) : text_(std::to_string(v)) {}           // NOLINT
  LogValue(unsigned v) : text_(std::to_string(v)) {}            // NOLINT
  LogValue(unsigned long v) : text_(std::to_string(v)) {}       // NOLINT
  LogValue(unsigned long long v) : text_(std::to_string(v)) {}  // NOLINT
  LogValue(double v);                                           // NOLINT
  LogValue(bool v) : text_(v ? "true" : "false") {}             // NOLINT
  LogValue(const absl::Status& s) : text_(Quote(s.ToString())) {}  // NOLINT

  const std::string& json() const { return text_; }
  static std::string Quote(std::string_view s);

 private:
  std::string text_;
};

using LogField = std::pair<std::string_view, LogValue>;

// Sets the lowest level written (default kInfo).
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning" or "error".
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool LogEnabled(LogLevel level);

void Log(LogLevel level, std::string_view msg,
         std::initializer_list<LogField> fields = {});

inline void LogInfo(std::string_view msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarning(std::string_view msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kWarning, msg, f);
}
inline void LogError(std::string_view msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kError, msg, f);
}
inline void LogDebug(std::string_view msg, std::initializer_list<LogField> f = {}) {
  if (LogEnabled(LogLevel::kDebug)) Log(LogLevel::kDebug, msg, f);
}

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_LOG_H_
