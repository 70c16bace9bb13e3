#include "worker/handler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/text.h"

namespace conveyor::worker {
namespace {

// The broker refuses progress messages over 1 KiB.
constexpr size_t kMaxProgressMessageBytes = 1024;
constexpr absl::string_view kReasonPayloadUrl = "type.conveyor.dev/worker.reason";

// [0, kMaxRetryAfter]: the broker refuses a longer pause (INVALID_ARGUMENT
// for the item, which the reporter would retry in vain).
absl::Duration ClampRetryAfter(absl::Duration d) {
  return std::clamp(d, absl::ZeroDuration(), kMaxRetryAfter);
}

}  // namespace

HandlerContext::HandlerContext(const TaskInfo& task, const Cancellation* cancel,
                               ProgressSink progress)
    : task_(task), cancel_(cancel), progress_(std::move(progress)) {}

std::string HandlerContext::header(absl::string_view key) const {
  auto it = task_.headers.find(std::string(key));
  return it == task_.headers.end() ? std::string() : it->second;
}

void HandlerContext::ReportProgress(double percent, absl::string_view message) {
  if (!progress_) return;
  if (std::isnan(percent)) percent = 0;
  percent = std::clamp(percent, 0.0, 100.0);
  progress_(percent, ValidUtf8(message, kMaxProgressMessageBytes));
}

absl::Status WithReason(absl::Status status, absl::string_view reason) {
  if (status.ok()) return status;
  status.SetPayload(kReasonPayloadUrl, absl::Cord(reason));
  return status;
}

std::string ReasonOf(const absl::Status& status) {
  auto reason = status.GetPayload(kReasonPayloadUrl);
  return reason.has_value() ? std::string(*reason) : std::string();
}

absl::Status Throttled(absl::Duration retry_after, absl::string_view message) {
  retry_after = ClampRetryAfter(retry_after);
  std::string text(message);
  if (text.empty()) {
    // The broker prefixes the reason: "throttled: retry after 2s".
    text = retry_after == absl::ZeroDuration()
               ? std::string("retry after the broker's default delay")
               : absl::StrCat("retry after ", absl::FormatDuration(retry_after));
  }
  absl::Status status = absl::ResourceExhaustedError(text);
  status.SetPayload(kRetryAfterPayloadUrl,
                    absl::Cord(absl::StrCat(absl::ToInt64Microseconds(retry_after))));
  return status;
}

std::optional<absl::Duration> RetryAfterOf(const absl::Status& status) {
  auto payload = status.GetPayload(kRetryAfterPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  int64_t micros = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &micros)) return std::nullopt;
  return ClampRetryAfter(absl::Microseconds(micros));
}

}  // namespace conveyor::worker
