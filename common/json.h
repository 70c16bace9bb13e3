// JSON string literals, for the few places that write JSON by hand (the
// logger, the fan-in document, exec batch lines, `conveyord --verify`).
// Messages go through protobuf's JSON mapping instead.
#ifndef CONVEYOR_COMMON_JSON_H_
#define CONVEYOR_COMMON_JSON_H_

#include <string>
#include <string_view>

namespace conveyor {

// Appends `s` as a JSON string literal, quotes included: '"', '\\' and
// control characters are escaped, other bytes are copied as they are
// (callers pass UTF-8).
void AppendJsonString(std::string_view s, std::string* out);

// The same, as a new string.
std::string JsonQuote(std::string_view s);

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_JSON_H_
