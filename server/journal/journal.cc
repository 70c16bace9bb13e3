#include "server/journal/journal.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace conveyor::server::journal {

std::string FsyncPolicy::ToString() const {
  switch (mode) {
    case Mode::kAlways: return "always";
    case Mode::kNever: return "never";
    case Mode::kInterval:
      return absl::StrCat("interval:", absl::ToInt64Milliseconds(interval));
  }
  return "always";
}

absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view text) {
  FsyncPolicy policy;
  if (text == "always") return policy;
  if (text == "never") {
    policy.mode = FsyncPolicy::Mode::kNever;
    return policy;
  }
  absl::string_view ms_text = text;
  int64_t ms = 0;
  if (absl::ConsumePrefix(&ms_text, "interval:") && !ms_text.empty() &&
      ms_text[0] != '+' && absl::SimpleAtoi(ms_text, &ms) && ms >= 1 &&
      ms <= 3'600'000) {
    policy.mode = FsyncPolicy::Mode::kInterval;
    policy.interval = absl::Milliseconds(ms);
    return policy;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "fsync policy \"", text,
      "\" is not one of always, never, interval:<ms> (1 to 3600000)"));
}

}  // namespace conveyor::server::journal
