// Helpers shared by the files that implement Broker (broker.cc,
// workflow.cc): not part of any public interface.
#ifndef CONVEYOR_SERVER_BROKER_INTERNAL_H_
#define CONVEYOR_SERVER_BROKER_INTERNAL_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/broker.h"

namespace conveyor::server::internal {

// Kinds of the broker's timers (Broker::Timer::kind).
enum TimerKind : int {
  kDue,           // SCHEDULED task reaches its not-before time
  kLeaseCheck,    // RUNNING task's lease or attempt deadline
  kExpire,        // never-leased task reaches its expiry
  kRetention,     // a queue's oldest kept result reaches its TTL (key: the Queue*,
                  // stamp: the due time in µs; one armed per queue)
  kLeaseWait,     // parked Lease runs out of wait
  kSubmitWait,    // parked Submit reaches its deadline
  kQueueWake,     // a queue's rate limit or throttle lets tasks start again
  kWorkflowDrop,  // a finished group or chain reaches the workflow TTL
  kWorkflowRetry, // continuations whose write failed are submitted again
  kScheduleTick,  // a schedule's next tick (key: its timer key, stamp: the tick)
};

// INVALID_ARGUMENT "<field> <problem>".
inline absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

// `s` in quotes, escaped, cut to 128 bytes.
inline std::string Quoted(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, 128)), s.size() > 128 ? "...\"" : "\"");
}

// Templates (chain stages, callbacks, schedule tasks) in journal records.
void TemplateToRecord(const TaskSpec& t, conveyor::internal::TaskSubmitted* r);
TaskSpec TemplateFromRecord(const conveyor::internal::TaskSubmitted& r);

}  // namespace conveyor::server::internal

namespace conveyor::server {

// The broker's private record types, complete for every file that
// implements Broker.

struct Broker::Timer {
  int64_t when_us;
  int kind;
  uint64_t key;
  int64_t stamp;
  bool operator>(const Timer& o) const { return when_us > o.when_us; }
};

struct Broker::LeaseWaiter {
  LeaseRequest request;
  LeaseCallback done;
};

struct Broker::SubmitWaiter {
  TaskSpec spec;
  Queue* queue;
  SubmitCallback done;
};

struct Broker::Watcher {
  uint64_t task_id;
  WatchCallback callback;
};

struct Broker::Group {
  uint64_t id = 0;
  uint32_t total = 0;
  std::vector<uint64_t> member_ids;  // by index; 0 until known
  struct Outcome {
    TaskState state = TaskState::kScheduled;  // a terminal state once ended
    bool stored = false;                      // result and error kept here
    uint64_t size = 0;                        // of result and error, kept or not
    std::string result;
    std::string error;
  };
  std::vector<Outcome> outcomes;
  uint32_t ended = 0, succeeded = 0, dead = 0, canceled = 0, expired = 0, fallback = 0;
  // Results and errors of ended members: all of them, and those kept here
  // (within max_fan_in_bytes; beyond it the task records hold them).
  uint64_t result_bytes = 0;
  uint64_t stored_bytes = 0;
  std::optional<TaskSpec> callback;
  uint64_t max_fan_in_bytes = 0;
  std::string idempotency_key;
  absl::Time created = absl::InfinitePast();
  absl::Time finished = absl::InfinitePast();
  bool canceled_group = false;
  uint64_t callback_task = 0;
  std::string callback_error;  // the callback could not be submitted
  std::vector<WatchId> watchers;

  GroupState state() const {
    if (canceled_group) return GroupState::kCanceled;
    if (ended == total && (!callback || callback_task != 0 || !callback_error.empty())) {
      return GroupState::kDone;
    }
    return GroupState::kRunning;
  }

  uint32_t* Counter(TaskState s) {
    switch (s) {
      case TaskState::kSucceeded: return &succeeded;
      case TaskState::kDead: return &dead;
      case TaskState::kCanceled: return &canceled;
      case TaskState::kExpired: return &expired;
      case TaskState::kFallback: return &fallback;
      default: return nullptr;
    }
  }

  // Sets member `index`'s outcome: a terminal state with its result or
  // error, or a live state (a dead letter requeued).
  void SetOutcome(uint32_t index, TaskState state, absl::string_view result,
                  absl::string_view error) {
    if (index >= outcomes.size()) return;
    Outcome& o = outcomes[index];
    if (IsTerminal(o.state)) {
      --ended;
      if (uint32_t* c = Counter(o.state)) --*c;
      result_bytes -= o.size;
      if (o.stored) stored_bytes -= o.size;
    }
    o = Outcome{};
    o.state = state;
    if (!IsTerminal(state)) return;
    ++ended;
    if (uint32_t* c = Counter(state)) ++*c;
    o.size = result.size() + error.size();
    result_bytes += o.size;
    if (stored_bytes + o.size <= max_fan_in_bytes) {
      o.stored = true;
      o.result.assign(result.data(), result.size());
      o.error.assign(error.data(), error.size());
      stored_bytes += o.size;
    }
  }
};

struct Broker::Chain {
  uint64_t id = 0;
  // Stage 0 is the chain's first task (only its queue and type are kept
  // here); stages 1.. are templates.
  std::vector<TaskSpec> stages;
  std::vector<uint64_t> stage_tasks;     // 0 until submitted
  std::vector<uint8_t> stage_states;     // kNoState until submitted
  uint32_t current = 0;
  ChainState state = ChainState::kRunning;
  std::string result;
  std::string error;
  absl::Time created = absl::InfinitePast();
  absl::Time finished = absl::InfinitePast();
  bool cancel_requested = false;
  // The payload of a next stage whose submit was not stored (the previous
  // stage's result), kept for the retry: retention may drop that stage first.
  std::optional<std::string> retry_payload;
  static constexpr uint8_t kNoState = 0xff;
};

struct Broker::GroupWatcher {
  uint64_t group = 0;
  GroupWatchCallback callback;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_BROKER_INTERNAL_H_
