#include "worker/handler.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "worker/text.h"

namespace conveyor::worker {
namespace {

// The broker refuses progress messages over 1 KiB.
constexpr size_t kMaxProgressMessageBytes = 1024;
constexpr absl::string_view kReasonPayloadUrl = "type.conveyor.dev/worker.reason";

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

}  // namespace conveyor::worker
