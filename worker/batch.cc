#include "worker/batch.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace conveyor::worker {

absl::Status ValidateBatchOptions(const BatchOptions& options) {
  if (options.max_size < 1 || options.max_size > kMaxBatchSize) {
    return absl::InvalidArgumentError(absl::StrCat("batch max_size ", options.max_size,
                                                   ": must be 1 to ", kMaxBatchSize));
  }
  if (options.linger < absl::ZeroDuration() || options.linger > kMaxBatchLinger) {
    return absl::InvalidArgumentError(absl::StrCat("batch linger ",
                                                   absl::FormatDuration(options.linger),
                                                   ": must be 0 to ",
                                                   absl::FormatDuration(kMaxBatchLinger)));
  }
  return absl::OkStatus();
}

absl::StatusOr<BatchSpec> ParseBatchSpec(absl::string_view text) {
  auto bad = [text](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--batch \"", text, "\": ", why, "; expected TYPE=N[:LINGER], e.g. thumbs=32:100ms"));
  };
  const size_t eq = text.rfind('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return bad("no TYPE=N");
  }
  BatchSpec spec;
  spec.type = std::string(text.substr(0, eq));
  if (spec.type.find_first_of(" \t\n") != std::string::npos) {
    return bad(absl::StrCat("the type \"", spec.type, "\" holds a space"));
  }
  absl::string_view value = text.substr(eq + 1);
  absl::string_view size_text = value;
  const size_t colon = value.find(':');
  if (colon != absl::string_view::npos) {
    size_text = value.substr(0, colon);
    absl::string_view linger_text = absl::StripAsciiWhitespace(value.substr(colon + 1));
    if (!absl::ParseDuration(linger_text, &spec.options.linger)) {
      return bad(absl::StrCat("the linger \"", linger_text, "\" is not a duration such as 50ms"));
    }
  }
  size_text = absl::StripAsciiWhitespace(size_text);
  uint64_t size = 0;
  if (size_text.empty() || !absl::ascii_isdigit(static_cast<unsigned char>(size_text[0])) ||
      !absl::SimpleAtoi(size_text, &size)) {
    return bad(absl::StrCat("the size \"", size_text, "\" is not a whole number"));
  }
  spec.options.max_size = static_cast<size_t>(std::min<uint64_t>(size, kMaxBatchSize + 1));
  if (absl::Status s = ValidateBatchOptions(spec.options); !s.ok()) {
    return bad(s.message());
  }
  return spec;
}

namespace {

absl::Time EarliestDeadline(const std::vector<TaskInfo>& tasks) {
  absl::Time earliest = absl::InfiniteFuture();
  for (const TaskInfo& t : tasks) earliest = std::min(earliest, t.deadline);
  return earliest;
}

}  // namespace

BatchContext::BatchContext(std::string type, const std::vector<TaskInfo>& tasks,
                           std::vector<const Cancellation*> task_cancels,
                           std::vector<ProgressSink> progress, const Cancellation* cancel,
                           absl::Time deadline)
    : type_(std::move(type)), tasks_(tasks), cancel_(cancel), deadline_(deadline) {
  contexts_.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    const Cancellation* c = i < task_cancels.size() && task_cancels[i] != nullptr
                                ? task_cancels[i]
                                : cancel;
    ProgressSink sink = i < progress.size() ? std::move(progress[i]) : ProgressSink();
    contexts_.push_back(std::make_unique<HandlerContext>(tasks[i], c, std::move(sink)));
  }
}

BatchContext::BatchContext(const std::vector<TaskInfo>& tasks, const Cancellation* cancel)
    : BatchContext(tasks.empty() ? std::string() : tasks.front().type, tasks, {}, {}, cancel,
                   EarliestDeadline(tasks)) {}

BatchContext::~BatchContext() = default;

void BatchContext::ReportProgress(double percent, absl::string_view message) {
  for (const auto& ctx : contexts_) ctx->ReportProgress(percent, message);
}

absl::Status WrongAnswerCount(size_t got, size_t want) {
  return WithReason(
      absl::InternalError(absl::StrCat(
          "the batch handler returned ", got, got == 1 ? " answer" : " answers", " for ", want,
          want == 1 ? " task" : " tasks",
          " (it must return one per task, in order); every task of the batch fails")),
      "batch_answers");
}

}  // namespace conveyor::worker
