#include "client/cli_io.h"

#include <sysexits.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "client/format.h"
#include "common/grpc_util.h"

namespace conveyor::client {

void Write(FILE* out, absl::string_view text) { std::fwrite(text.data(), 1, text.size(), out); }

void Diagnose(absl::string_view message) {
  Write(stderr, absl::StrCat("conveyor: ", message, "\n"));
}

int CallFailed(const Invocation& inv, const absl::Status& status) {
  Diagnose(absl::StrCat(inv.command->name, ": ", absl::StatusCodeToString(status.code()), ": ",
                        status.message()));
  return ExitCodeFor(status);
}

int UsageFailed(absl::string_view topic, absl::string_view message) {
  Diagnose(message);
  Write(stderr, ShortUsage(topic));
  return EX_USAGE;
}

int Print(const Invocation& inv, const google::protobuf::Message& message, absl::string_view text) {
  if (inv.globals.output == OutputFormat::kJson) {
    absl::StatusOr<std::string> json = ToJson(message);
    if (!json.ok()) return CallFailed(inv, json.status());
    Write(stdout, absl::StrCat(*json, "\n"));
  } else {
    Write(stdout, text);
  }
  return EX_OK;
}

bool PrintJsonLine(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = ToJson(message);
  if (!json.ok()) {
    Diagnose(json.status().message());
    return false;
  }
  Write(stdout, absl::StrCat(*json, "\n"));
  return true;
}

absl::StatusOr<std::string> ReadAll(FILE* in, absl::string_view name) {
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), in)) > 0) data.append(buf, n);
  if (std::ferror(in)) {
    return absl::DataLossError(absl::StrCat("reading ", name, ": ", std::strerror(errno)));
  }
  return data;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat(flag, " ", path, ": ", std::strerror(errno)));
  }
  absl::StatusOr<std::string> data = ReadAll(f, path);
  std::fclose(f);
  return data;
}

void ProgressLine::Update(absl::string_view line) {
  Write(out_, absl::StrCat("\r\033[K", line));
  std::fflush(out_);
  drawn_ = true;
}

void ProgressLine::Finish() {
  if (drawn_) Write(out_, "\n");
  drawn_ = false;
}

}  // namespace conveyor::client
