// Command-line builders of the workflow commands (`conveyor map`, `group`,
// `submit --then`, `schedule create`): pure functions from a parsed
// Invocation (client/cli_args.h) or from input text to API requests and Map
// options. Errors are INVALID_ARGUMENT with a message for the user, which
// the CLI shows with the command's usage (exit 64) — except ParseItems,
// whose errors are about the input data (exit 65).
//
// Thread-safety: functions only.
#ifndef CONVEYOR_CLIENT_WORKFLOW_ARGS_H_
#define CONVEYOR_CLIENT_WORKFLOW_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli_args.h"
#include "client/map.h"
#include "conveyor/v1/conveyor.pb.h"

namespace conveyor::client {

// Stages a chain may have after its first task (TaskSpec.then).
inline constexpr int kMaxThenStages = 32;

// The items of `conveyor map` and `group submit`. Lines (default): every
// line is one item, its bytes without the '\n' and without one '\r' before
// it (CRLF files); empty lines are items too; no final newline is needed,
// and a final newline does not make an empty last item. Empty input: no
// items. `json_array`: the whole input is one JSON array of strings, each
// string one item (UTF-8); anything else is an error naming the element.
absl::StatusOr<std::vector<std::string>> ParseItems(absl::string_view input, bool json_array);

// One `--then` value: comma-separated KEY=VALUE pairs, keys queue and type
// (required), priority (0-9), timeout (a duration: bound on each attempt),
// max-attempts (at least 1) and delay (a duration, counted from when the
// stage is submitted); e.g. "queue=thumbs,type=resize,priority=5,timeout=30s".
// Errors name the problem: an unknown, repeated or valueless key, a missing
// queue or type, a bad number or duration.
absl::StatusOr<v1::TaskSpec> ParseThenStage(absl::string_view text);
// Appends every --then of `inv`, in order, to `spec->then`; at most
// kMaxThenStages. Errors say which --then (1-based) is wrong.
absl::Status ApplyThenFlags(const Invocation& inv, v1::TaskSpec* spec);

// `conveyor map` and `group submit`: --queue and --type required,
// --priority 0-9, --task-timeout, --max-attempts, --fallback, --deadline
// (positive; map only) and --idempotency-key. No progress callback.
absl::StatusOr<MapOptions> BuildMapOptions(const Invocation& inv);
// `conveyor group submit`: one member per item (MapMemberSpec of
// BuildMapOptions), the group's --idempotency-key, and a callback when
// --callback-queue and --callback-type are given (both or neither;
// --callback-payload needs them).
absl::StatusOr<v1::SubmitGroupRequest> BuildSubmitGroupRequest(
    const Invocation& inv, const std::vector<std::string>& items);

// "skip" or "run-once" ("run_once"), any case.
absl::StatusOr<v1::MisfirePolicy> ParseMisfire(absl::string_view text);
// `conveyor schedule create NAME`: --cron required, --tz, --misfire,
// --paused, and the task template of BuildTaskSpec (--queue, --type, ...,
// --then) with `payload`.
absl::StatusOr<v1::Schedule> BuildSchedule(const Invocation& inv, std::string payload,
                                           absl::Time now);

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_WORKFLOW_ARGS_H_
