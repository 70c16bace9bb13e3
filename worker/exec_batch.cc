#include "worker/exec_batch.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/json.h"
#include "worker/json_line.h"

namespace conveyor::worker {
namespace {

// Room per answer line beyond its base64 result: the JSON around it and an
// error message.
constexpr size_t kAnswerOverheadBytes = 64 << 10;
// How much of a bad line an error message quotes.
constexpr size_t kSnippetBytes = 80;

// "2s", "500ms" or a number of seconds; nullopt otherwise.
std::optional<absl::Duration> ParseDelay(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  absl::Duration d;
  if (absl::ParseDuration(text, &d) && d >= absl::ZeroDuration() &&
      d != absl::InfiniteDuration()) {
    return d;
  }
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds) && seconds >= 0) {
    d = absl::Seconds(seconds);
    if (d != absl::InfiniteDuration()) return d;
  }
  return std::nullopt;
}

std::string Snippet(absl::string_view line) {
  if (line.size() <= kSnippetBytes) return absl::CHexEscape(line);
  return absl::StrCat(absl::CHexEscape(line.substr(0, kSnippetBytes)), "...");
}

// One answer line, read.
struct Answer {
  std::string id;
  std::optional<bool> ok;
  std::string result;  // decoded
  std::string error;
  std::optional<bool> retryable;
  bool throttled = false;
  std::string retry_after;
};

// A line read: `id` is set whenever the line names one, even if the rest of
// it is wrong (then `answer` says what, and the task fails with it).
struct ReadLine {
  std::string id;
  absl::StatusOr<Answer> answer;
};

absl::Status FieldError(absl::string_view key, const JsonScalar& v, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("\"", key, "\" must be ", want, ", not ", JsonKindName(v.kind)));
}

ReadLine ParseAnswerLine(absl::string_view line) {
  ReadLine read{std::string(), absl::InternalError("unset")};
  absl::StatusOr<JsonFields> fields = ParseFlatJsonObject(line);
  if (!fields.ok()) {
    read.answer = absl::InvalidArgumentError(
        absl::StrCat("not a JSON answer (", fields.status().message(), ")"));
    return read;
  }
  for (const auto& [key, v] : *fields) {
    if (key != "id") continue;
    if (v.kind != JsonScalar::Kind::kString) {
      read.answer = FieldError(key, v, "a string");
      return read;
    }
    read.id = v.text;
  }
  if (read.id.empty()) {
    read.answer = absl::InvalidArgumentError("no \"id\"");
    return read;
  }
  Answer a;
  a.id = read.id;
  for (const auto& [key, v] : *fields) {
    if (key == "id" || v.kind == JsonScalar::Kind::kNull) continue;  // null: absent
    const bool is_bool = v.kind == JsonScalar::Kind::kBool;
    const bool is_string = v.kind == JsonScalar::Kind::kString;
    if (key == "ok" || key == "retryable" || key == "throttled") {
      if (!is_bool) {
        read.answer = FieldError(key, v, "true or false");
        return read;
      }
      if (key == "ok") a.ok = v.boolean;
      if (key == "retryable") a.retryable = v.boolean;
      if (key == "throttled") a.throttled = v.boolean;
    } else if (key == "result" || key == "error" || key == "retry_after") {
      if (!is_string) {
        read.answer = FieldError(key, v, "a string");
        return read;
      }
      if (key == "error") a.error = v.text;
      if (key == "retry_after") a.retry_after = v.text;
      if (key == "result" && !absl::Base64Unescape(v.text, &a.result) &&
          !absl::WebSafeBase64Unescape(v.text, &a.result)) {
        read.answer = absl::InvalidArgumentError("\"result\" is not base64");
        return read;
      }
    } else {
      read.answer = absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", absl::CHexEscape(key),
          "\" (an answer has id, ok, result, error, retryable, throttled, retry_after)"));
      return read;
    }
  }
  if (!a.ok.has_value()) {
    read.answer = absl::InvalidArgumentError("no \"ok\" (true or false)");
    return read;
  }
  read.answer = std::move(a);
  return read;
}

// What one answer line says for its task.
absl::StatusOr<std::string> AnswerStatus(Answer& a, int line, size_t max_result_bytes) {
  if (*a.ok) {
    if (a.result.size() > max_result_bytes) {
      return WithReason(absl::UnknownError(absl::StrCat(
                            "the result on stdout line ", line, " is ", a.result.size(),
                            " bytes, over the limit of ", max_result_bytes, " (--max-output-bytes)")),
                        "output_limit");
    }
    return std::move(a.result);
  }
  const std::string error =
      a.error.empty() ? std::string("the batch command answered ok=false without an error")
                      : a.error;
  if (a.throttled) {
    absl::Duration delay = absl::ZeroDuration();
    if (!a.retry_after.empty()) {
      std::optional<absl::Duration> parsed = ParseDelay(a.retry_after);
      if (!parsed.has_value()) {
        return WithReason(
            absl::UnknownError(absl::StrCat("stdout line ", line, ": \"retry_after\" \"",
                                            absl::CHexEscape(a.retry_after),
                                            "\" is not a delay such as 2s, 500ms or 1.5")),
            "bad_output");
      }
      delay = *parsed;
    }
    return Throttled(delay, a.error);
  }
  if (a.retryable.has_value() && !*a.retryable) return absl::FailedPreconditionError(error);
  return absl::UnknownError(error);
}

struct Decoded {
  std::vector<std::optional<absl::StatusOr<std::string>>> answers;
  size_t answered = 0;
  // The first line that answered no task, and how many such lines.
  std::string first_bad;
  size_t bad_lines = 0;
  // Exit 76: the delay a bare line gave.
  absl::Duration throttle_delay = absl::ZeroDuration();
};

Decoded Decode(const std::vector<TaskInfo>& tasks, const ExecResult& result,
               size_t max_result_bytes) {
  Decoded d;
  d.answers.resize(tasks.size());
  absl::flat_hash_map<absl::string_view, size_t> index;
  for (size_t i = 0; i < tasks.size(); ++i) index.emplace(tasks[i].id, i);
  std::vector<int> answered_on(tasks.size(), 0);
  auto bad = [&d](int line, absl::string_view text, absl::string_view why) {
    if (d.bad_lines++ == 0) {
      d.first_bad = absl::StrCat("stdout line ", line, " (\"", Snippet(text),
                                 "\") is not a valid answer: ", why);
    }
  };
  const bool throttled = result.outcome == ExecResult::Outcome::kThrottled;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(result.output, '\n')) {
    ++line_no;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty()) continue;
    if (throttled && line.front() != '{') {
      if (std::optional<absl::Duration> delay = ParseDelay(line); delay.has_value()) {
        d.throttle_delay = *delay;
        continue;
      }
    }
    ReadLine read = ParseAnswerLine(line);
    if (read.id.empty()) {
      bad(line_no, line, read.answer.status().message());
      continue;
    }
    auto it = index.find(read.id);
    if (it == index.end()) {
      bad(line_no, line,
          absl::StrCat("task \"", absl::CHexEscape(read.id), "\" is not in the batch"));
      continue;
    }
    const size_t i = it->second;
    if (answered_on[i] != 0) {
      d.answers[i] = WithReason(
          absl::UnknownError(absl::StrCat("the batch command answered this task twice (stdout lines ",
                                          answered_on[i], " and ", line_no, ")")),
          "bad_output");
      continue;
    }
    answered_on[i] = line_no;
    ++d.answered;
    if (!read.answer.ok()) {
      d.answers[i] = WithReason(
          absl::UnknownError(absl::StrCat("the answer on stdout line ", line_no, " (\"",
                                          Snippet(line), "\") is not valid: ",
                                          read.answer.status().message())),
          "bad_output");
      continue;
    }
    d.answers[i] = AnswerStatus(*read.answer, line_no, max_result_bytes);
  }
  return d;
}

}  // namespace

std::string EncodeBatchInput(const std::vector<TaskInfo>& tasks) {
  std::string out;
  for (const TaskInfo& t : tasks) {
    out.append("{\"id\":");
    AppendJsonString(t.id, &out);
    out.append(",\"queue\":");
    AppendJsonString(t.queue, &out);
    absl::StrAppend(&out, ",\"payload\":\"", absl::Base64Escape(t.payload), "\",\"attempt\":",
                    t.attempt, ",\"max_attempts\":", t.max_attempts, ",\"headers\":{");
    bool first = true;
    for (const auto& [name, value] : t.headers) {
      if (!first) out.push_back(',');
      first = false;
      AppendJsonString(name, &out);
      out.push_back(':');
      AppendJsonString(value, &out);
    }
    out.append("}}\n");
  }
  return out;
}

BatchAnswers DecodeBatchOutput(const std::vector<TaskInfo>& tasks, const ExecResult& result,
                               size_t max_result_bytes) {
  Decoded d = Decode(tasks, result, max_result_bytes);
  std::string note;
  if (d.bad_lines > 0) {
    note = absl::StrCat("; ", d.first_bad);
    if (d.bad_lines > 1) absl::StrAppend(&note, " (and ", d.bad_lines - 1, " more such lines)");
  }
  const std::string tally =
      absl::StrCat(d.answered, " of ", tasks.size(), " tasks answered");
  BatchAnswers answers;
  answers.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (d.answers[i].has_value()) {
      answers.push_back(std::move(*d.answers[i]));
      continue;
    }
    if (result.outcome == ExecResult::Outcome::kSucceeded) {
      answers.push_back(WithReason(
          absl::UnknownError(absl::StrCat("the batch command exited 0 without answering this task (",
                                          tally, ")", note)),
          d.bad_lines > 0 ? "bad_output" : "missing_answer"));
      continue;
    }
    // The exit code (or the timeout, the cancel) decides, as for a single
    // command.
    ExecResult unanswered;
    unanswered.outcome = result.outcome;
    unanswered.exit_code = result.exit_code;
    unanswered.term_signal = result.term_signal;
    unanswered.retry_after = d.throttle_delay;
    unanswered.error = absl::StrCat("no answer for this task (", tally, "): ", result.error, note);
    answers.push_back(ExecAnswer(std::move(unanswered)));
  }
  return answers;
}

std::vector<std::pair<std::string, std::string>> ExecBatchEnvironment(const BatchContext& batch) {
  std::vector<std::pair<std::string, std::string>> env = {
      {"CONVEYOR_TASK_TYPE", batch.type()},
      {"CONVEYOR_BATCH_SIZE", absl::StrCat(batch.size())},
  };
  const std::vector<TaskInfo>& tasks = batch.tasks();
  if (!tasks.empty() && std::all_of(tasks.begin(), tasks.end(), [&](const TaskInfo& t) {
        return t.queue == tasks.front().queue;
      })) {
    env.emplace_back("CONVEYOR_QUEUE", tasks.front().queue);
  }
  if (batch.deadline() != absl::InfiniteFuture() && batch.deadline() != absl::InfinitePast()) {
    env.emplace_back("CONVEYOR_DEADLINE",
                     absl::FormatTime(absl::RFC3339_full, batch.deadline(), absl::UTCTimeZone()));
  }
  return env;
}

BatchHandler MakeExecBatchHandler(std::string command, ExecHandlerOptions options) {
  return [command = std::move(command), options](BatchContext& batch) -> BatchAnswers {
    ExecRequest request;
    request.command = command;
    request.payload = EncodeBatchInput(batch.tasks());
    request.env = ExecBatchEnvironment(batch);
    request.deadline = batch.deadline();
    request.kill_grace = options.kill_grace;
    // Each answer may carry a whole result in base64, plus the line around it.
    const size_t per_task = (options.max_output_bytes + 2) / 3 * 4 + kAnswerOverheadBytes;
    request.max_output_bytes = per_task * batch.size();
    absl::StatusOr<ExecResult> result =
        RunCommand(request, &batch.cancellation(), [&batch](double percent, std::string message) {
          batch.ReportProgress(percent, message);
        });
    if (!result.ok()) {
      absl::Status failed =
          result.status().code() == absl::StatusCode::kInvalidArgument
              ? WithReason(result.status(), "spawn")
              : WithReason(absl::UnavailableError(absl::StrCat("cannot run the batch command: ",
                                                               result.status().message())),
                           "spawn");
      return BatchAnswers(batch.size(), failed);
    }
    BatchAnswers answers = DecodeBatchOutput(batch.tasks(), *result, options.max_output_bytes);
    return answers;
  };
}

}  // namespace conveyor::worker
