// Output formatting for the `conveyor` CLI: text (key: value lines for one
// object, aligned tables for lists, watch lines and progress bars, map result
// lines) and protobuf JSON. Pure functions of their inputs, unit-tested directly;
// thread-safe.
#ifndef CONVEYOR_CLIENT_FORMAT_H_
#define CONVEYOR_CLIENT_FORMAT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/map.h"
#include "conveyor/v1/conveyor.pb.h"
#include "google/protobuf/message.h"

namespace conveyor::client {

// "READY" for TASK_STATE_READY.
std::string TaskStateName(v1::TaskState state);
// SUCCEEDED, DEAD, CANCELED, EXPIRED, FALLBACK.
bool IsTerminal(v1::TaskState state);
// SUCCEEDED or FALLBACK: the task produced a result.
bool IsSuccess(v1::TaskState state);

bool IsValidUtf8(absl::string_view bytes);
// Opaque bytes for a one-line display: valid UTF-8 is shown as text with
// control characters C-escaped (\n, \t, \x01); anything else as
// "<N bytes, not UTF-8> HEX". Longer than `max_chars`: cut, with "...".
std::string DisplayBytes(absl::string_view bytes, size_t max_chars = 256);

// One protobuf JSON document on one line, proto field names, default values
// included. No trailing newline.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

// "key: value" lines (id, queue, type, state, priority, attempts, progress,
// result, error always; the rest when set, with "waiting" for a SCHEDULED or
// READY task the broker says why it waits, and "group", "chain" (with its
// stage) and "schedule" for a task of a workflow), each ending in '\n'.
std::string FormatTask(const v1::Task& task);
// "50/s", "100/m", "0.5/s", with " burst N" when a burst is set. Per second
// when that is short, else per minute or hour when that is whole.
std::string FormatRate(const v1::RateLimit& rate);
// Why a task waits, one line: `rate_limited on key "acme" until
// 2026-11-30T18:00:01Z (rate key "acme" (10/s burst 1) has no token)`.
std::string FormatWaiting(const v1::Waiting& waiting);
// A queue's limits, one "key: value" line each that is set; "limits: none"
// when none is.
std::string FormatLimits(const v1::Limits& limits);
// A table with a header row: ID STATE TYPE PRI ATTEMPTS CREATED ERROR.
std::string FormatTaskTable(const std::vector<v1::Task>& tasks);
// A queue's settings, limits and live counts (blocked tasks by reason) as
// "key: value" lines.
std::string FormatQueue(const v1::Queue& queue);
// NAME PAUSED CAPACITY SCHEDULED READY RUNNING SUCCEEDED DEAD ... per queue.
std::string FormatQueueTable(const std::vector<v1::Queue>& queues);
// Left-aligned columns two spaces apart; every row ends in '\n'.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// One line per watched change (no newline):
// "ID STATE attempt A/M [P%] [message] [error: E]".
std::string FormatWatchLine(const v1::Task& task);
// A progress bar of `width` cells for a terminal (no newline):
// "[#####.....]  50% RUNNING message".
std::string FormatProgressBar(const v1::Task& task, int width = 30);

// ─── workflows ───

// "RUNNING" for GROUP_STATE_RUNNING, "SUCCEEDED" for CHAIN_STATE_SUCCEEDED.
std::string GroupStateName(v1::GroupState state);
std::string ChainStateName(v1::ChainState state);
// "skip" or "run-once" ("skip" for UNSPECIFIED, the broker's default).
std::string MisfireName(v1::MisfirePolicy policy);

// A group's counters as "key: value" lines (id, state, total, ended, each
// end state, failed, callback, created, finished; idempotency_key if set).
std::string FormatGroup(const v1::Group& group);
// INDEX TASK STATE per member; `results` adds RESULT and ERROR (one line
// each, cut at 200 characters).
std::string FormatGroupMembers(const std::vector<v1::GroupMember>& members, bool results);
// Map or group progress for a terminal (no newline):
// "[######......................]  20% 40/200 ended, 3 failed".
std::string FormatGroupProgressBar(const MapProgress& progress, int width = 30);
// The same as a plain line: "GROUP RUNNING 40/200 ended, 3 failed".
std::string FormatGroupProgressLine(const MapProgress& progress);

// One map item as one line of text (no newline): its result with one
// trailing newline (or CRLF) dropped and control characters escaped (\n,
// \t, \xNN; a result that is not UTF-8 as "<N bytes, not UTF-8> HEX"); ""
// for an item that did not succeed.
std::string FormatMapItemLine(const MapItem& item);
// The diagnostic of an item that did not succeed (no newline):
// "item 4 (task ID) ended DEAD: error".
std::string FormatMapItemError(size_t index, const MapItem& item);
// The JSON form of a map item (a GroupMember: index, task_id, state,
// result, error).
v1::GroupMember MapItemMessage(size_t index, const MapItem& item);

// A chain as "key: value" lines (id, state, stages, current_stage, result,
// error, created, finished) then a table STAGE QUEUE TYPE TASK STATE ERROR.
std::string FormatChain(const v1::Chain& chain);
// A chain's progress on one line (no newline):
// "chain ID stage 2/3 (thumbs/resize) RUNNING".
std::string FormatChainLine(const v1::Chain& chain);

// A schedule as "key: value" lines: name, cron, time_zone, misfire, paused,
// the task template (queue, type, priority, payload, then), created,
// next_run, last_run, last_task, runs, missed, last_error.
std::string FormatSchedule(const v1::Schedule& schedule);
// NAME CRON TZ PAUSED QUEUE TYPE NEXT_RUN LAST_RUN RUNS MISSED per schedule.
std::string FormatScheduleTable(const std::vector<v1::Schedule>& schedules);

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_FORMAT_H_
