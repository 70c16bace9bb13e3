// What every `conveyor` command shares (client/cli.cc, client/cli_workflows.cc):
// writing data to stdout and diagnostics to stderr, the exit code of a failed
// call or a usage error, printing text or protobuf JSON, reading input, and a
// progress line redrawn in place on a terminal.
//
// Thread-safety: none needed; the CLI runs its command on one thread.
#ifndef CONVEYOR_CLIENT_CLI_IO_H_
#define CONVEYOR_CLIENT_CLI_IO_H_

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli_args.h"
#include "google/protobuf/message.h"

namespace conveyor::client {

// A watched task, or an item of a map or member of a watched group, ended
// other than SUCCEEDED or FALLBACK (or the group was canceled).
inline constexpr int kExitTaskFailed = 1;

void Write(FILE* out, absl::string_view text);
// "conveyor: MESSAGE" on stderr.
void Diagnose(absl::string_view message);
// "conveyor: COMMAND: CODE: message" on stderr; returns the sysexits code.
int CallFailed(const Invocation& inv, const absl::Status& status);
// The message and the topic's short usage on stderr; returns 64.
int UsageFailed(absl::string_view topic, absl::string_view message);
// Prints `message` as one line of JSON (-o json), or `text` (already
// formatted) in text mode. EX_OK, or the code of a failed JSON encoding.
int Print(const Invocation& inv, const google::protobuf::Message& message, absl::string_view text);
// One JSON line per message (watch streams, map items); false if encoding
// failed (reported on stderr).
bool PrintJsonLine(const google::protobuf::Message& message);

// All of `in`; DATA_LOSS on a read error naming `name`.
absl::StatusOr<std::string> ReadAll(FILE* in, absl::string_view name);
// A whole file; NOT_FOUND (any open error) naming `flag` and the path.
absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag);

// A progress line redrawn in place on a terminal: Update draws the line,
// Finish ends it with a newline if anything was drawn.
class ProgressLine {
 public:
  explicit ProgressLine(FILE* out) : out_(out) {}
  void Update(absl::string_view line);
  void Finish();

 private:
  FILE* out_;
  bool drawn_ = false;
};

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_CLI_IO_H_
