#include "client/workflow_args.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc_util.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace conveyor::client {
namespace {

constexpr char kThenSyntax[] =
    "queue=Q,type=T[,priority=N][,timeout=DUR][,max-attempts=N][,delay=DUR]";

absl::string_view KindOf(const google::protobuf::Value& value) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return "null";
    case google::protobuf::Value::kNumberValue:
      return "a number";
    case google::protobuf::Value::kBoolValue:
      return "a boolean";
    case google::protobuf::Value::kStructValue:
      return "an object";
    case google::protobuf::Value::kListValue:
      return "an array";
    default:
      return "not a string";
  }
}

absl::StatusOr<uint32_t> PriorityOf(std::optional<uint64_t> priority, absl::string_view name) {
  if (!priority.has_value()) return 0u;
  if (*priority > 9) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be 0-9, got ", *priority));
  }
  return static_cast<uint32_t>(*priority);
}

absl::StatusOr<std::optional<uint32_t>> AttemptsOf(std::optional<uint64_t> n,
                                                   absl::string_view name) {
  if (!n.has_value()) return std::optional<uint32_t>();
  if (*n == 0 || *n > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be at least 1 (attempts in all, the first included), got ", *n));
  }
  return std::optional<uint32_t>(static_cast<uint32_t>(*n));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseItems(absl::string_view input, bool json_array) {
  std::vector<std::string> items;
  if (!json_array) {
    if (input.empty()) return items;
    if (input.back() == '\n') input.remove_suffix(1);
    for (absl::string_view line : absl::StrSplit(input, '\n')) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      items.emplace_back(line);
    }
    return items;
  }
  google::protobuf::ListValue list;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(input.data(), input.size()), &list);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--json-array: the input is not a JSON array of strings: ", status.ToString()));
  }
  items.reserve(static_cast<size_t>(list.values_size()));
  for (int i = 0; i < list.values_size(); ++i) {
    const google::protobuf::Value& value = list.values(i);
    if (value.kind_case() != google::protobuf::Value::kStringValue) {
      return absl::InvalidArgumentError(absl::StrCat("--json-array: element ", i, " is ",
                                                     KindOf(value), ", not a string"));
    }
    items.push_back(value.string_value());
  }
  return items;
}

absl::StatusOr<v1::TaskSpec> ParseThenStage(absl::string_view text) {
  auto bad = [&](absl::string_view problem) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": ", problem, " (use ", kThenSyntax, ")"));
  };
  if (text.empty()) return bad("empty stage");
  v1::TaskSpec spec;
  absl::flat_hash_set<std::string> seen;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos) {
      return bad(absl::StrCat("\"", part, "\" is not KEY=VALUE"));
    }
    const std::string key(part.substr(0, eq));
    const absl::string_view value = part.substr(eq + 1);
    if (key.empty()) return bad(absl::StrCat("\"", part, "\" has no key"));
    if (value.empty()) return bad(absl::StrCat(key, " has no value"));
    if (!seen.insert(key).second) return bad(absl::StrCat(key, " is given twice"));
    if (key == "queue") {
      spec.set_queue(std::string(value));
    } else if (key == "type") {
      spec.set_type(std::string(value));
    } else if (key == "priority") {
      uint64_t n;
      if (value[0] == '-' || !absl::SimpleAtoi(value, &n) || n > 9) {
        return bad(absl::StrCat("priority must be 0-9, got \"", value, "\""));
      }
      spec.set_priority(static_cast<uint32_t>(n));
    } else if (key == "timeout" || key == "delay") {
      absl::Duration d;
      if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration() ||
          d == absl::InfiniteDuration()) {
        return bad(absl::StrCat(key, " must be a duration such as 30s or 5m, got \"", value, "\""));
      }
      ToProto(d, key == "timeout" ? spec.mutable_timeout() : spec.mutable_delay());
    } else if (key == "max-attempts") {
      uint64_t n;
      if (value[0] == '-' || !absl::SimpleAtoi(value, &n) || n == 0 ||
          n > std::numeric_limits<uint32_t>::max()) {
        return bad(absl::StrCat("max-attempts must be a whole number of at least 1, got \"", value,
                                "\""));
      }
      spec.mutable_retry()->set_max_attempts(static_cast<uint32_t>(n));
    } else {
      return bad(absl::StrCat("unknown key \"", key,
                              "\" (keys: queue, type, priority, timeout, max-attempts, delay)"));
    }
  }
  if (spec.queue().empty()) return bad("queue is required");
  if (spec.type().empty()) return bad("type is required");
  return spec;
}

absl::Status ApplyThenFlags(const Invocation& inv, v1::TaskSpec* spec) {
  const std::vector<std::string> stages = inv.Strings("then");
  if (static_cast<int>(stages.size()) > kMaxThenStages) {
    return absl::InvalidArgumentError(absl::StrCat("--then: at most ", kMaxThenStages,
                                                   " stages, got ", stages.size()));
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    absl::StatusOr<v1::TaskSpec> stage = ParseThenStage(stages[i]);
    if (!stage.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--then #", i + 1, " ", stage.status().message()));
    }
    *spec->add_then() = *std::move(stage);
  }
  return absl::OkStatus();
}

absl::StatusOr<MapOptions> BuildMapOptions(const Invocation& inv) {
  MapOptions options;
  options.queue = inv.String("queue").value_or("");
  options.type = inv.String("type").value_or("");
  if (options.queue.empty()) return absl::InvalidArgumentError("--queue is required");
  if (options.type.empty()) return absl::InvalidArgumentError("--type is required");
  absl::StatusOr<uint32_t> priority = PriorityOf(inv.Uint("priority"), "--priority");
  if (!priority.ok()) return priority.status();
  options.priority = *priority;
  if (std::optional<absl::Duration> d = inv.Duration("task-timeout")) options.timeout = *d;
  absl::StatusOr<std::optional<uint32_t>> attempts =
      AttemptsOf(inv.Uint("max-attempts"), "--max-attempts");
  if (!attempts.ok()) return attempts.status();
  options.max_attempts = *attempts;
  if (std::optional<std::string> fallback = inv.String("fallback")) {
    options.fallback_result = *fallback;
  }
  if (std::optional<absl::Duration> d = inv.Duration("deadline")) {
    if (*d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--deadline must be a positive duration");
    }
    options.deadline = *d;
  }
  options.idempotency_key = inv.String("idempotency-key").value_or("");
  return options;
}

absl::StatusOr<v1::SubmitGroupRequest> BuildSubmitGroupRequest(
    const Invocation& inv, const std::vector<std::string>& items) {
  absl::StatusOr<MapOptions> options = BuildMapOptions(inv);
  if (!options.ok()) return options.status();
  const std::optional<std::string> callback_queue = inv.String("callback-queue");
  const std::optional<std::string> callback_type = inv.String("callback-type");
  if (callback_queue.has_value() != callback_type.has_value()) {
    return absl::InvalidArgumentError("--callback-queue and --callback-type go together");
  }
  if (inv.Has("callback-payload") && !callback_queue.has_value()) {
    return absl::InvalidArgumentError(
        "--callback-payload needs --callback-queue and --callback-type");
  }
  if (callback_queue.has_value() && (callback_queue->empty() || callback_type->empty())) {
    return absl::InvalidArgumentError("--callback-queue and --callback-type must not be empty");
  }
  v1::SubmitGroupRequest request;
  request.mutable_tasks()->Reserve(static_cast<int>(items.size()));
  for (const std::string& item : items) *request.add_tasks() = MapMemberSpec(*options, item);
  if (callback_queue.has_value()) {
    v1::TaskSpec* callback = request.mutable_callback();
    callback->set_queue(*callback_queue);
    callback->set_type(*callback_type);
    callback->set_payload(inv.String("callback-payload").value_or(""));
  }
  request.set_idempotency_key(options->idempotency_key);
  return request;
}

absl::StatusOr<v1::MisfirePolicy> ParseMisfire(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "skip") return v1::MISFIRE_POLICY_SKIP;
  if (lower == "run-once" || lower == "run_once") return v1::MISFIRE_POLICY_RUN_ONCE;
  return absl::InvalidArgumentError(
      absl::StrCat("--misfire must be skip or run-once, got \"", text, "\""));
}

absl::StatusOr<v1::Schedule> BuildSchedule(const Invocation& inv, std::string payload,
                                           absl::Time now) {
  if (inv.args.empty()) return absl::InvalidArgumentError("expected NAME");
  v1::Schedule schedule;
  schedule.set_name(inv.args[0]);
  const std::optional<std::string> cron = inv.String("cron");
  if (!cron.has_value() || cron->empty()) return absl::InvalidArgumentError("--cron is required");
  schedule.set_cron(*cron);
  if (std::optional<std::string> tz = inv.String("tz")) {
    if (tz->empty()) return absl::InvalidArgumentError("--tz must not be empty");
    schedule.set_time_zone(*tz);
  }
  if (std::optional<std::string> misfire = inv.String("misfire")) {
    absl::StatusOr<v1::MisfirePolicy> policy = ParseMisfire(*misfire);
    if (!policy.ok()) return policy.status();
    schedule.set_misfire(*policy);
  }
  schedule.set_paused(inv.Bool("paused"));
  absl::StatusOr<v1::TaskSpec> task = BuildTaskSpec(inv, std::move(payload), now);
  if (!task.ok()) return task.status();
  *schedule.mutable_task() = *std::move(task);
  return schedule;
}

}  // namespace conveyor::client
