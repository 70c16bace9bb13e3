// Just enough JSON for the --exec-batch line format (worker/exec_batch.h):
// writing string literals, and reading one flat object per line. Not a
// general JSON library: a value nested in an object or array is refused (the
// answers a command writes hold none). Strict where laxness would hide a
// bug: no duplicate keys, no trailing text, no raw control characters in
// strings, lone UTF-16 surrogates refused.
//
// Thread-safe (pure functions).
#ifndef CONVEYOR_WORKER_JSON_LINE_H_
#define CONVEYOR_WORKER_JSON_LINE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace conveyor::worker {

struct JsonScalar {
  enum class Kind { kString, kNumber, kBool, kNull };
  Kind kind = Kind::kNull;
  // kString: the decoded string (escapes resolved, \u as UTF-8); kNumber:
  // the number as written.
  std::string text;
  // kBool.
  bool boolean = false;
};
// "a string", "a number", "true or false", "null".
const char* JsonKindName(JsonScalar::Kind kind);

using JsonFields = std::vector<std::pair<std::string, JsonScalar>>;

// Parses `text`: one JSON object whose values are strings, numbers, true,
// false or null, with nothing but whitespace around it. Its fields, in
// order. INVALID_ARGUMENT saying what is wrong and where ("at column 12").
absl::StatusOr<JsonFields> ParseFlatJsonObject(absl::string_view text);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_JSON_LINE_H_
