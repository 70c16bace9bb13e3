// Broker: the core state machine of Conveyor, with no gRPC inside.
//
// Holds named, bounded queues of tasks and applies every rule of the task
// lifecycle (see proto/conveyor/v1/conveyor.proto and DESIGN.md "Rules"):
// priorities, delays, expiry, leases with fencing tokens, heartbeats,
// retries with backoff, the crash budget, per-attempt timeouts, cancel,
// results with a TTL and a count bound, idempotency keys, dead letters and
// queue administration.
//
// Time comes from an injected Clock; nothing here sleeps. Timers (delays,
// backoffs, lease expiries, attempt timeouts, expiry, result TTL, long-poll
// and submit-wait deadlines) sit in one heap and fire when `Tick()` runs; the
// service layer calls it from a ticker thread, tests call it after moving a
// FakeClock.
//
// Calls that may wait (Submit to a full queue with the WAIT policy, Lease
// with a wait time) take a callback instead of blocking: it is invoked exactly
// once, possibly before the call returns, never while the broker's lock is
// held. Watch callbacks are likewise invoked outside the lock.
//
// Every state change is one discrete transition applied by one private
// function; `BrokerListener` sees each of them (the hook the journal and
// metrics attach to).
//
// Limits (QueueConfig::limits, proto message Limits) are applied when leases
// are granted, so they hold across all workers:
//  - a queue that is paused, throttled, whose rate bucket has no token, or
//    that has max_running tasks RUNNING grants nothing until that changes;
//  - a task whose rate key (an override in key_rates, else key_rate) has no
//    token, or whose rate key is throttled, waits; so does a task whose
//    concurrency key's pool (a named pool, else key_max_running) has that
//    many tasks RUNNING. Tasks of other keys are served meanwhile: a held
//    back key never blocks the others. A grant spends one token of the
//    queue's bucket and one of its rate key's;
//  - a running slot (queue or pool) is taken at the grant and freed when the
//    task leaves RUNNING for any reason (complete, fail, timeout, cancel,
//    lease expiry, throttle, release, drain); a heartbeat that takes back a
//    lapsed lease (see Heartbeat) is let past a full limit, since the task
//    never stopped running on that worker;
//  - buckets start full (the burst may be spent at once) and refill
//    continuously; an idle key's bucket is forgotten once full again;
//  - order: best priority first; within a priority, tasks with a rate or
//    concurrency key take turns by key (round-robin): once a key is served,
//    it goes behind every task that was ready at that moment. Tasks without
//    keys keep FIFO order among themselves;
//  - Fail with `throttled`: the task goes back to READY spending neither an
//    attempt nor the crash budget, and its rate key (a task without one: its
//    whole queue) leases nothing for `retry_after`;
//  - UpdateQueue applies new limits at once; parked Lease calls are served
//    when a limit is raised or removed;
//  - GetTask and ListTasks say why a SCHEDULED or READY task waits
//    (TaskInfo::waiting); QueueStats::blocked counts the waiting tasks by
//    reason.
//
// Thread-safe: one mutex guards all state.
#ifndef CONVEYOR_SERVER_BROKER_H_
#define CONVEYOR_SERVER_BROKER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "conveyor/internal/journal.pb.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/cron.h"
#include "server/huge_page_allocator.h"
#include "server/journal/journal.h"
#include "server/queue.h"
#include "server/task.h"

namespace conveyor::server {

// Broker-wide limits and defaults (flags of conveyord).
struct BrokerOptions {
  bool auto_create_queues = true;
  uint32_t max_queues = 10'000;
  size_t max_payload_bytes = 1 << 20;
  size_t max_result_bytes = 1 << 20;
  size_t max_header_bytes = 8 << 10;
  size_t max_batch_count = 1000;
  size_t max_batch_bytes = 8 << 20;
  // Added to a task's timeout before the broker ends a running attempt.
  absl::Duration timeout_grace = absl::Seconds(10);
  // Longest Lease long-poll.
  absl::Duration max_lease_wait = absl::Seconds(60);
  // A queue with no Lease call parked, none named it for this long, and no
  // task running counts its ready tasks as waiting for a worker (no_worker).
  absl::Duration worker_idle = absl::Seconds(60);
  // Pause after a throttled report that gives no delay, and the longest one
  // allowed.
  absl::Duration default_throttle = absl::Seconds(1);
  absl::Duration max_throttle = absl::Hours(1);
  // Defaults for queues created without settings.
  QueueConfig queue_defaults;
  // Workflows: members per group, their payload bytes together, stages per
  // chain, and how long a finished group or chain stays visible.
  size_t max_group_size = 100'000;
  size_t max_group_bytes = 32 << 20;
  size_t max_chain_stages = 32;
  absl::Duration workflow_ttl = absl::Hours(24);
  // Recurring schedules held at most.
  size_t max_schedules = 10'000;
  // WriteSnapshot encodes the tasks this many at a time, each chunk under the
  // broker's lock, so that a snapshot of millions of tasks never stalls
  // submits and leases for long. (Tests set a small chunk and a hook that
  // runs between chunks, without the lock.)
  size_t snapshot_chunk_tasks = 4096;
  std::function<void()> between_snapshot_chunks;
};

// What a producer submits (already decoded from the wire; validated by the
// broker).
struct TaskSpec {
  std::string queue;
  std::string type;
  std::string payload;
  Headers headers;
  uint32_t priority = 0;
  // Not leased before this time (InfinitePast: now).
  absl::Time not_before = absl::InfinitePast();
  // Ends EXPIRED if not leased by then.
  absl::Time expires_at = absl::InfiniteFuture();
  RetryOverride retry;
  std::optional<absl::Duration> timeout;
  std::string idempotency_key;
  std::string rate_key;
  std::string concurrency_key;
  std::optional<std::string> fallback_result;
  // Templates only (chain stages, group callbacks, schedules): not leased
  // before `delay` after the template is submitted.
  absl::Duration delay = absl::ZeroDuration();
  // Chain: the stages that follow this task (templates; see the proto).
  std::vector<TaskSpec> then;
};

// Why a SCHEDULED or READY task is not running yet.
struct WaitInfo {
  WaitReason reason = WaitReason::kNotWaiting;
  std::string key;                           // the rate or concurrency key
  absl::Time until = absl::InfinitePast();   // when known
  std::string detail;                        // one line for people
};

// A self-contained copy of a task's state, for answers and watches. The
// payload is filled in only where the caller needs it: GetTask and ListTasks
// (Submit, Cancel and Watch answers leave it empty; Lease has LeasedTask).
struct TaskInfo {
  TaskId id;
  std::string queue;
  std::string type;
  std::string payload;
  Headers headers;
  uint32_t priority = 0;
  TaskState state = TaskState::kReady;
  uint32_t attempts = 0;
  uint32_t max_attempts = 0;
  uint32_t crashes = 0;
  uint64_t token = 0;
  absl::Time created_at;
  absl::Time not_before = absl::InfinitePast();
  absl::Time expires_at = absl::InfiniteFuture();
  absl::Time started_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();
  std::string worker_id;
  absl::Time lease_expires_at = absl::InfinitePast();
  double progress_percent = 0;
  std::string progress_message;
  std::string result;
  std::string error;
  bool cancel_requested = false;
  std::string idempotency_key;
  std::string rate_key;
  std::string concurrency_key;
  absl::Duration timeout;
  // Workflow links: the group it belongs to (or whose callback it is), the
  // chain and stage, the schedule that submitted it. Zero / empty: none.
  TaskId group_id;
  TaskId chain_id;
  uint32_t chain_stage = 0;
  std::string schedule;
  // Filled in by GetTask and ListTasks only.
  WaitInfo waiting;
  // Increases with every change the broker makes to any task: a watcher can
  // drop a notification older than one it already has.
  uint64_t version = 0;
};

struct SubmitResult {
  TaskInfo task;
  bool deduplicated = false;
};
using SubmitCallback = std::function<void(absl::StatusOr<SubmitResult>)>;

struct LeaseRequest {
  std::string worker_id;
  std::vector<std::string> queues;
  std::vector<std::string> types;  // empty: any
  uint32_t max_tasks = 1;
  absl::Duration wait = absl::ZeroDuration();
};

struct LeasedTask {
  TaskId id;
  std::string queue;
  std::string type;
  std::string payload;
  Headers headers;
  uint32_t attempt = 1;
  uint32_t max_attempts = 1;
  uint64_t token = 0;
  absl::Time lease_expires_at;
  absl::Time deadline;
  absl::Duration timeout;
};
// OK with tasks, OK with none (the wait ran out), CANCELLED (CancelWait),
// UNAVAILABLE (draining), INVALID_ARGUMENT (a malformed request: no queue,
// max_tasks out of 1-1000, wait over max_lease_wait, ...).
using LeaseCallback = std::function<void(absl::StatusOr<std::vector<LeasedTask>>)>;

struct HeartbeatItem {
  TaskId id;
  uint64_t token = 0;
  std::optional<double> progress_percent;  // unset: unchanged
  std::string progress_message;
};
struct HeartbeatOutcome {
  absl::Status status;
  bool cancel = false;
  absl::Time lease_expires_at;
};

struct CompleteItem {
  TaskId id;
  uint64_t token = 0;
  std::string result;
};
struct FailItem {
  TaskId id;
  uint64_t token = 0;
  std::string error;
  bool retryable = true;
  std::string reason;
  // Throttled downstream: back to READY without spending an attempt or the
  // crash budget; the task's rate key (else its queue) is paused for
  // `retry_after` (zero: BrokerOptions::default_throttle; more than
  // max_throttle: INVALID_ARGUMENT for the item).
  bool throttled = false;
  absl::Duration retry_after = absl::ZeroDuration();
};
struct ReleaseItem {
  TaskId id;
  uint64_t token = 0;
};

struct QueueInfo {
  QueueConfig config;
  bool paused = false;
  QueueStats stats;
};

// Partial update; unset fields keep their value.
struct QueueUpdate {
  std::optional<uint64_t> capacity;
  std::optional<FullPolicy> full_policy;
  std::optional<RetryOverride> retry;  // applied to the current policy
  std::optional<absl::Duration> default_timeout;
  std::optional<absl::Duration> lease_duration;
  std::optional<uint32_t> max_crashes;
  std::optional<absl::Duration> result_ttl;
  std::optional<uint64_t> retained;
  LimitsUpdate limits;  // applied live
};

// ── Workflows ──

struct GroupSpec {
  std::vector<TaskSpec> members;
  std::optional<TaskSpec> callback;  // a template (its payload goes in GroupResults)
  uint64_t max_fan_in_bytes = 0;     // 0: the default (the most allowed)
  std::string idempotency_key;
};

enum class GroupState : uint8_t { kRunning, kDone, kCanceled };
const char* GroupStateName(GroupState state);

struct GroupMemberInfo {
  uint32_t index = 0;
  TaskId task_id;
  TaskState state = TaskState::kScheduled;
  std::string result;
  std::string error;
};

struct GroupInfo {
  TaskId id;
  GroupState state = GroupState::kRunning;
  uint32_t total = 0;
  uint32_t ended = 0;
  uint32_t succeeded = 0;
  uint32_t dead = 0;
  uint32_t canceled = 0;
  uint32_t expired = 0;
  uint32_t fallback = 0;
  bool has_callback = false;
  TaskId callback_task;  // 0 until submitted
  absl::Time created_at;
  absl::Time finished_at = absl::InfinitePast();
  std::string idempotency_key;
  std::vector<GroupMemberInfo> members;  // GetGroup with members only
  uint64_t version = 0;                  // orders watch notifications
};

struct SubmitGroupResult {
  GroupInfo group;
  std::vector<TaskId> task_ids;
  bool deduplicated = false;
};
using SubmitGroupCallback = std::function<void(absl::StatusOr<SubmitGroupResult>)>;
// As WatchCallback, for groups: `final` once DONE or CANCELED (or dropped).
using GroupWatchCallback = std::function<void(const GroupInfo& group, bool final)>;

enum class ChainState : uint8_t { kRunning, kSucceeded, kFailed, kCanceled };
const char* ChainStateName(ChainState state);

struct ChainInfo {
  TaskId id;
  ChainState state = ChainState::kRunning;
  uint32_t stages = 0;
  uint32_t current_stage = 0;
  struct Stage {
    uint32_t index = 0;
    std::string queue;
    std::string type;
    TaskId task_id;                       // 0 until submitted
    std::optional<TaskState> state;       // unset until submitted
    std::string error;
  };
  std::vector<Stage> stage_list;
  std::string result;
  std::string error;
  absl::Time created_at;
  absl::Time finished_at = absl::InfinitePast();
};

// ── Schedules ──

enum class MisfirePolicy : uint8_t { kSkip, kRunOnce };

struct ScheduleSpec {
  std::string name;
  std::string cron;
  std::string time_zone;  // "" = UTC
  TaskSpec task;          // a template (see TemplateKind::kSchedule)
  MisfirePolicy misfire = MisfirePolicy::kSkip;
  bool paused = false;
};

struct ScheduleInfo {
  ScheduleSpec spec;
  absl::Time created_at;
  absl::Time next_run_at = absl::InfiniteFuture();  // none while paused
  absl::Time last_run_at = absl::InfinitePast();
  TaskId last_task;
  uint64_t runs = 0;
  uint64_t missed = 0;
  std::string last_error;
};

// A schedule as the broker keeps it.
struct ScheduleState {
  ScheduleSpec spec;
  std::optional<CronSchedule> cron;  // parsed from spec (always set once stored)
  uint64_t key = 0;                  // timer key, unique per process
  absl::Time created = absl::InfinitePast();
  // Every tick at or before this was handled (run, missed or skipped).
  absl::Time done_through = absl::InfinitePast();
  absl::Time next = absl::InfiniteFuture();
  absl::Time last_run = absl::InfinitePast();
  uint64_t last_task = 0;
  uint64_t runs = 0;
  uint64_t missed = 0;
  std::string last_error;
};

struct TaskPage {
  std::vector<TaskInfo> tasks;
  std::string next_page_token;  // empty on the last page
};

// Observes every transition (for metrics now, the journal later). Called
// under the broker's lock: implementations must be fast and must not call
// back into the broker.
class BrokerListener {
 public:
  virtual ~BrokerListener() = default;
  virtual void OnSubmitted(const Queue& queue, const Task& task) = 0;
  virtual void OnDispatched(const Queue& queue, const Task& task) = 0;
  virtual void OnRetried(const Queue& queue, const Task& task) = 0;
  virtual void OnLeaseExpired(const Queue& queue, const Task& task) = 0;
  virtual void OnEnded(const Queue& queue, const Task& task) = 0;
  virtual void OnDropped(const Queue& queue, const Task& task,
                         absl::string_view reason) = 0;
  // `count` submitted tasks were refused (conveyor_tasks_rejected_total):
  // reason "invalid", "unknown_queue", "too_many_queues", "full",
  // "draining" or "journal" (their record could not be stored). `queue` is
  // the queue's name if it exists, else "" (so a label never holds an
  // arbitrary name); "" also for "invalid" (refused before any lookup). May be called with or without the broker's lock:
  // implementations must be thread-safe.
  virtual void OnRejected(absl::string_view /*queue*/, absl::string_view /*reason*/,
                          uint64_t /*count*/) {}
};

using WatchId = uint64_t;
using WaitId = uint64_t;
// Identifies the journal write of one call's changes (see WhenDurable).
using Ticket = uint64_t;
// Called with the current state on Watch, then after every change; `final`
// is true exactly once, on the last call (the task ended or was dropped).
// Calls run outside the broker's lock, so two may race: order them by
// TaskInfo::version.
using WatchCallback = std::function<void(const TaskInfo& task, bool final)>;

// Durability: with a journal, every change is recorded (under the lock, so
// the journal's order is the order of the changes) and a call's answer must
// wait until its records are durable. Submit and SubmitBatch do that
// themselves (a submitted task is also not leaseable until then); for the
// other mutating calls, pass a Ticket* and hand it to WhenDurable. Without a
// journal everything is immediate.
class Broker {
 public:
  // `journal` may be null (in memory only). With a journal, call Recover()
  // once before anything else.
  Broker(BrokerOptions options, const Clock* clock,
         BrokerListener* listener = nullptr, journal::Journal* journal = nullptr);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  const BrokerOptions& options() const { return options_; }

  // ── Tasks ──
  // Validates and enqueues. INVALID_ARGUMENT for a malformed spec (the message
  // names the field and value); NOT_FOUND for an unknown queue when auto
  // creation is off; RESOURCE_EXHAUSTED for a full queue with the REJECT
  // policy or too many queues; with the WAIT policy the call parks until
  // there is room (DEADLINE_EXCEEDED at `deadline`); UNAVAILABLE when
  // draining. An idempotency key seen on the queue returns the original task
  // with deduplicated = true. Returns a WaitId usable with CancelWait (0 when
  // `done` already ran).
  WaitId Submit(TaskSpec spec, absl::Time deadline, SubmitCallback done);
  // Submit without waiting: a full queue is RESOURCE_EXHAUSTED whatever its
  // policy. Used by SubmitBatch and tests.
  absl::StatusOr<SubmitResult> SubmitNow(TaskSpec spec);
  // Per-item outcomes, in order. INVALID_ARGUMENT for the whole batch when it
  // exceeds max_batch_count or max_batch_bytes.
  absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> SubmitBatch(
      std::vector<TaskSpec> specs);
  // The same, answering through `done` once the accepted tasks are durable
  // (then each is leaseable); a failed journal write turns the accepted
  // items into its error (RESOURCE_EXHAUSTED for a full disk).
  // With `ids_only`, an accepted item's `task` holds only its id, queue and
  // state (SubmitBatchRequest.ids_only): building and dropping a whole
  // TaskInfo per task is most of what a producer that keeps nothing else
  // would pay for.
  using BatchCallback =
      std::function<void(absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>>)>;
  void SubmitBatch(std::vector<TaskSpec> specs, BatchCallback done, bool ids_only = false);

  absl::StatusOr<TaskInfo> GetTask(TaskId id) const;
  // Queued: CANCELED at once. Running: cancel_requested, told to the worker
  // via Heartbeat. FAILED_PRECONDITION if already ended.
  absl::StatusOr<TaskInfo> CancelTask(TaskId id, Ticket* ticket = nullptr);
  // Tasks of a queue in id order, optionally of one state. `page_token` is
  // the last id of the previous page.
  absl::StatusOr<TaskPage> ListTasks(absl::string_view queue,
                                     std::optional<TaskState> state,
                                     uint32_t page_size,
                                     absl::string_view page_token) const;
  // Calls `cb` now with the current state, then on every change. NOT_FOUND
  // for an unknown task. If the task has already ended, `cb` runs once with
  // final = true and the returned id is 0.
  absl::StatusOr<WatchId> Watch(TaskId id, WatchCallback cb);
  // Stops notifications. One already in flight may still arrive.
  void Unwatch(WatchId id);

  // ── Workflows (server/workflow.cc) ──
  // Fan-out / fan-in: every member is submitted, or none (INVALID_ARGUMENT
  // naming the first bad member as "tasks[i].field ...", RESOURCE_EXHAUSTED
  // for the first full queue; never waits). Once every member has ended the
  // group is DONE and its callback (if any) is submitted, exactly once, with
  // a GroupResults document (JSON) as its payload; callbacks and chain stages
  // are continuations of accepted work, so they are never refused for a
  // full queue. `done` runs once the group is durable.
  void SubmitGroup(GroupSpec spec, SubmitGroupCallback done);
  absl::StatusOr<SubmitGroupResult> SubmitGroupNow(GroupSpec spec);
  // Members from `offset`, at most `limit` (1-10,000), with results if asked.
  absl::StatusOr<GroupInfo> GetGroup(TaskId id, bool members, bool results, uint32_t offset,
                                     uint32_t limit) const;
  // Cancels every member that has not ended; the group ends CANCELED and its
  // callback is never submitted. FAILED_PRECONDITION once DONE.
  absl::StatusOr<GroupInfo> CancelGroup(TaskId id, Ticket* ticket = nullptr);
  // As Watch, for a group's counters.
  absl::StatusOr<WatchId> WatchGroup(TaskId id, GroupWatchCallback cb);
  void UnwatchGroup(WatchId id);
  absl::StatusOr<ChainInfo> GetChain(TaskId id) const;
  // Cancels the current stage (queued: at once; running: via its worker) and
  // submits no later stage. FAILED_PRECONDITION once the chain has ended.
  absl::StatusOr<ChainInfo> CancelChain(TaskId id, Ticket* ticket = nullptr);

  // ── Schedules (server/schedule.cc) ──
  // A task submitted on every tick of a cron expression, exactly one per
  // tick across restarts. The first tick is the first after now. A tick
  // whose submit is refused (full queue, too many queues) is counted in
  // `missed` with `last_error`; ticks that passed while the broker was down
  // are skipped (counted as missed) or, with kRunOnce, the latest of them is
  // run once at start. Ticks while paused are skipped, not missed.
  // ALREADY_EXISTS for a taken name; INVALID_ARGUMENT for a bad name, cron
  // expression, time zone or template; RESOURCE_EXHAUSTED past
  // max_schedules; NOT_FOUND for a missing queue when auto-creation is off.
  absl::StatusOr<ScheduleInfo> CreateSchedule(ScheduleSpec spec, Ticket* ticket = nullptr);
  absl::StatusOr<ScheduleInfo> GetSchedule(absl::string_view name) const;
  std::vector<ScheduleInfo> ListSchedules() const;  // by name
  absl::StatusOr<ScheduleInfo> PauseSchedule(absl::string_view name, Ticket* ticket = nullptr);
  absl::StatusOr<ScheduleInfo> ResumeSchedule(absl::string_view name,
                                              Ticket* ticket = nullptr);
  absl::Status DeleteSchedule(absl::string_view name, Ticket* ticket = nullptr);

  // ── Workers ──
  // Up to max_tasks ready tasks from the named queues, best priority first,
  // oldest first within a priority. If none is ready and wait > 0, parks
  // until a task arrives or the wait passes (then OK with none). `done` runs
  // exactly once. Returns a WaitId for CancelWait (0 if `done` already ran).
  WaitId Lease(LeaseRequest request, LeaseCallback done);
  // Ends a parked Submit or Lease: its callback runs with CANCELLED (unless
  // it already ran).
  void CancelWait(WaitId id);
  // Answers every Lease call of `worker_id` parked right now, with no tasks
  // (OK), and returns how many. A stopping worker asks for this instead of
  // cancelling its polls: a cancel can cross an answer that already holds
  // tasks, which the worker then never sees (their leases would have to
  // expire), whereas an answered call always delivers what it was granted.
  // INVALID_ARGUMENT for an empty or over-long worker_id.
  absl::StatusOr<int> EndLeaseWaits(absl::string_view worker_id);

  std::vector<HeartbeatOutcome> Heartbeat(absl::string_view worker_id,
                                          const std::vector<HeartbeatItem>& items);
  // Reports. `ticket` (optional) receives the ticket for WhenDurable.
  std::vector<absl::Status> Complete(const std::vector<CompleteItem>& items,
                                     Ticket* ticket = nullptr);
  std::vector<absl::Status> Fail(const std::vector<FailItem>& items,
                                 Ticket* ticket = nullptr);
  std::vector<absl::Status> Release(const std::vector<ReleaseItem>& items,
                                    Ticket* ticket = nullptr);

  // ── Queues ──
  // ALREADY_EXISTS, INVALID_ARGUMENT, RESOURCE_EXHAUSTED (max queues).
  absl::StatusOr<QueueInfo> CreateQueue(const QueueConfig& config, bool paused,
                                        Ticket* ticket = nullptr);
  absl::StatusOr<QueueInfo> UpdateQueue(absl::string_view name,
                                        const QueueUpdate& update,
                                        Ticket* ticket = nullptr);
  absl::StatusOr<QueueInfo> GetQueue(absl::string_view name) const;
  std::vector<QueueInfo> ListQueues() const;
  absl::StatusOr<QueueInfo> PauseQueue(absl::string_view name,
                                       Ticket* ticket = nullptr);
  absl::StatusOr<QueueInfo> ResumeQueue(absl::string_view name,
                                        Ticket* ticket = nullptr);
  // Removes every SCHEDULED and READY task; returns how many.
  absl::StatusOr<uint64_t> PurgeQueue(absl::string_view name, Ticket* ticket = nullptr);

  absl::StatusOr<TaskPage> ListDeadLetters(absl::string_view queue,
                                           uint32_t page_size,
                                           absl::string_view page_token) const;
  // Empty ids: all. Unknown or non-dead ids are skipped.
  absl::StatusOr<uint64_t> RequeueDeadLetters(absl::string_view queue,
                                              const std::vector<TaskId>& ids,
                                              Ticket* ticket = nullptr);
  absl::StatusOr<uint64_t> PurgeDeadLetters(absl::string_view queue,
                                            const std::vector<TaskId>& ids,
                                            Ticket* ticket = nullptr);

  // ── Durability ──
  // Runs `done` once every change made by the call that issued `ticket` is
  // durable (OK), or with the journal's error for that write. Immediately
  // (on this thread) when there is no journal or it already is.
  void WhenDurable(Ticket ticket, std::function<void(absl::Status)> done);
  // Replays the journal into this (empty) broker, then records a new lease
  // epoch and waits until that is durable. Tasks leased when the broker
  // stopped come back READY (spending neither an attempt nor the crash
  // budget); tasks whose cancel was pending end CANCELED. DATA_LOSS and
  // FAILED_PRECONDITION from the journal are returned as they are.
  absl::Status Recover();
  // Writes a snapshot of the persistent state, letting the journal delete
  // the records it covers; `bytes` (optional) receives its size. Blocks on
  // disk: call from a background thread. Queues, workflows and schedules are
  // taken at the cut; the tasks that existed at the cut are encoded after it,
  // in chunks (BrokerOptions::snapshot_chunk_tasks), so a task may be saved
  // in a state newer than the cut. Recovery replays every record after the
  // cut over the snapshot, and each task record carries the task's whole
  // state (a drop of a task already gone, or a submit of one already known,
  // changes nothing), so the result is the state of the last record.
  absl::Status WriteSnapshot(size_t* bytes = nullptr);
  uint32_t epoch() const;

  // ── Time and lifecycle ──
  // Fires every timer due at or before Clock::Now().
  void Tick();
  // When the earliest timer is due (InfiniteFuture if none).
  absl::Time NextTimer() const;
  // Stops accepting submits and leases (UNAVAILABLE) and ends every parked
  // call (submits UNAVAILABLE, long-polls OK with no tasks). Reports
  // (heartbeat, complete, fail, release) keep working; heartbeat answers tell
  // workers the broker drains. Watches are the service layer's to end.
  void BeginDrain();
  bool draining() const;
  // Tasks currently RUNNING, over all queues.
  uint64_t running_count() const;

  // Number of live task records (live and retained); for tests and metrics.
  size_t task_count() const;
  // Number of pending timers, stale ones included; for tests.
  size_t timer_count() const;

 private:
  struct Timer;
  struct LeaseWaiter;
  struct SubmitWaiter;
  struct Watcher;
  // Work decided under the lock and carried out after it is released.
  using Deferred = std::vector<std::function<void()>>;

  // What a submit answers: the task without its payload, or (`ids_only`)
  // its id, queue and state alone.
  SubmitResult Answer(const Task& task, bool deduplicated, bool ids_only) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<SubmitResult> SubmitLocked(TaskSpec& spec, Queue* queue,
                                            bool allow_wait, bool* must_wait,
                                            Deferred& after, bool ids_only = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidateSpec(const TaskSpec& spec, absl::Time now) const;
  // The task's policy over its queue's; INVALID_ARGUMENT if it is not valid.
  static absl::StatusOr<RetryPolicy> ResolveRetry(const RetryOverride& override,
                                                  const RetryPolicy& base);
  absl::Status ValidateLease(const LeaseRequest& request) const;
  absl::StatusOr<Queue*> QueueForSubmit(absl::string_view name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the listener why a submit was refused (see OnRejected); `queue`
  // is named only if it exists.
  void Rejected(absl::string_view queue, const absl::Status& status, uint64_t count = 1)
      const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RejectedUnlocked(const absl::Status& status, uint64_t count = 1) const;
  absl::StatusOr<Queue*> FindQueue(absl::string_view name) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  Task* FindTask(TaskId id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Task*> FindTaskForReport(TaskId id, uint64_t token) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::vector<Task*> DeadTasks(Queue* queue, const std::vector<TaskId>& ids) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  uint32_t InternType(absl::string_view type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A queue whose lanes read their READY tasks through this broker's id
  // index.
  std::unique_ptr<Queue> NewQueue(QueueConfig config);
  TaskId NextId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  TaskInfo Snapshot(const Task& task, bool with_payload) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  const RetryPolicy& RetryOf(const Task& task) const;
  absl::Duration TimeoutOf(const Task& task) const;
  absl::Duration BackoffFor(const Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Transitions. Each changes one task's state and tells listeners, watchers
  // and parked calls (through `after`).
  void SetState(Task* task, TaskState state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeReady(Task* task, Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Schedule(Task* task, absl::Time when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  LeasedTask Grant(Task* task, absl::string_view worker_id, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RetryOrDie(Task* task, std::string error, bool retryable,
                  Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void End(Task* task, TaskState state, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Drop(Task* task, absl::string_view reason, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyWatchers(const Task& task, bool final, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnforceRetention(Queue* queue, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Leasing.
  std::vector<LeasedTask> TakeReady(const LeaseRequest& request, uint32_t max,
                                    Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ServeLeaseWaiters(Queue* queue, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<LeaseWaiter> RemoveLeaseWaiter(WaitId id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ServeSubmitWaiters(Queue* queue, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Timers are never removed when what they watch moves on; each checks at
  // fire time whether it still applies. PushTimer sweeps the stale ones out
  // whenever the heap has doubled since the last sweep, so a finished task
  // dropped early (retention count, purge) does not leave its timers behind
  // until its result TTL.
  void PushTimer(absl::Time when, int kind, uint64_t key, int64_t stamp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The idempotency index: the kept task submitted to `queue` with `key`
  // (or null); add a task (the latest with its key wins); remove a task
  // (if it is the one indexed).
  Task* FindByIdempotencyKey(absl::string_view queue, absl::string_view key) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void IndexIdempotencyKey(Task* task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetIdempotencyKey(Task* task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The task a task timer (kDue, kLeaseCheck, kExpire) acts on,
  // or null when the timer is stale: the task is gone or has moved on.
  Task* TimerTask(const Timer& timer) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // False when firing `timer` now would do nothing.
  bool TimerLive(const Timer& timer) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void SweepTimers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FireTimer(const Timer& timer, absl::Time now, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckLease(Task* task, absl::Time now, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  QueueInfo InfoOf(const Queue& queue) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Limits.
  // Arms the queue's wake timer for what its limits hold back (if sooner).
  void ArmWake(Queue* queue, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  WaitInfo WaitOf(const Task& task, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NoWorker(const Queue& queue, absl::Time now) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A throttled report: pauses the task's rate key (or queue) for `pause`
  // and hands the task back without spending anything.
  void Throttle(Task* task, absl::Duration pause, std::string error, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Durability. Changes are recorded into batch_ and written by Commit at
  // the end of each locked section, as one journal append.
  void Activate(Task* task, Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistTask(const Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistQueue(const Queue& queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistDropped(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `cb` once the current batch is durable (or with its error).
  void OnCommit(std::function<void(absl::Status)> cb) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Ticket Commit(Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BatchDone(Ticket ticket, absl::Status status, std::vector<uint64_t> submitted,
                 std::vector<uint64_t> updated);
  void RemoveUndurable(Task* task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Apply(const conveyor::internal::JournalEntry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishRecovery(Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  static void Run(Deferred& after);

  // ── Workflows (server/workflow.cc) ──
  struct Group;
  struct Chain;
  struct GroupWatcher;
  // Only tasks that belong to a workflow have an entry in links_.
  using Link = TaskLinks;
  static constexpr uint32_t kCallbackIndex = TaskLinks::kCallbackIndex;
  enum class TemplateKind { kStage, kCallback, kSchedule };
  // spec.then: at most max_chain_stages stage templates. `prefix` names the
  // spec in errors ("" or "callback.").
  absl::Status ValidateStages(const TaskSpec& spec, absl::string_view prefix,
                              absl::Time now) const;
  // A template's rules (see the proto); errors are prefixed with `field`.
  absl::Status ValidateTemplate(const TaskSpec& spec, absl::string_view field,
                                TemplateKind kind, absl::Time now) const;
  // Creates a task (no capacity or idempotency checks: callers did them, or
  // it is a continuation). With `link`, the task is linked before its record
  // is written. Chains in spec.then are created here.
  absl::StatusOr<Task*> CreateTask(TaskSpec& spec, Queue* queue, const Link* link,
                                   Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Submits a template as a continuation (callback, next stage, tick).
  absl::StatusOr<Task*> SubmitTemplate(const TaskSpec& tmpl, std::string payload,
                                       const Link& link, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const Link* LinkOf(uint64_t task_id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Links a task being created (`link`, and a chain for spec.then), writing
  // the workflow records that must precede the task's own.
  void LinkNewTask(Task& task, const Link* link, TaskSpec& spec, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CancelTask's work: queued ends CANCELED at once, running is marked.
  void CancelLocked(Task* task, Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a linked task's current state in its group (idempotent; live and
  // replay).
  void NoteMemberState(const Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a linked task ended, was purged or requeued: fan-in, next stage.
  void WorkflowStep(Task* task, Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishGroup(Group& group, Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceChain(Chain& chain, const Task& stage, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndChain(Chain& chain, ChainState state, std::string result, std::string error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string FanInPayload(const Group& group) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  GroupInfo GroupSnapshot(const Group& group) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  ChainInfo ChainSnapshot(const Chain& chain) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void NotifyGroupWatchers(Group& group, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A linked task's record is gone (dropped or never durable).
  void UnlinkTask(uint64_t task_id, bool undurable) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistGroup(const Group& group, bool full) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistChain(const Chain& chain) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string EncodeGroupRecord(const Group& group, bool full) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::string EncodeChainRecord(const Chain& chain) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Drops finished groups and chains past the workflow TTL (timer).
  void DropWorkflow(uint64_t id, Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retries continuations whose submit failed (a journal write error).
  void RetryWorkflows(Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replay of workflow records and links; FinishRecovery's part.
  absl::Status ApplyWorkflow(const conveyor::internal::JournalEntry& e)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LinkFromRecord(const conveyor::internal::TaskSubmitted& r, Task* task)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecoverWorkflows(Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SnapshotWorkflows(std::vector<std::string>& out) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Schedules (server/schedule.cc).
  ScheduleInfo ScheduleSnapshot(const ScheduleState& s) const;
  std::string EncodeScheduleRecord(const ScheduleState& s, bool deleted) const;
  void PersistSchedule(const ScheduleState& s, bool deleted = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arms the timer of the schedule's next tick after done_through.
  void ArmSchedule(ScheduleState& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Submits the task of tick `tick` (or counts it missed).
  void FireSchedule(ScheduleState& s, absl::Time tick, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnScheduleTimer(uint64_t key, int64_t tick_us, Deferred& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ApplySchedule(const conveyor::internal::ScheduleRecord& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A replayed TaskSubmitted of a schedule's tick: that tick is done.
  void NoteScheduleTick(absl::string_view name, int64_t tick_us, uint64_t task_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecoverSchedules(Deferred& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BrokerOptions options_;
  const Clock* const clock_;
  BrokerListener* const listener_;

  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t change_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t end_counter_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  // Queues by name; std::map keeps ListQueues sorted.
  std::map<std::string, std::unique_ptr<Queue>, std::less<>> queues_
      ABSL_GUARDED_BY(mu_);
  // Every task record, found by id (records are owned here). A set of
  // pointers hashed by the record's id costs 9 bytes a slot, half a map's.
  struct TaskIdHash {
    using is_transparent = void;
    size_t operator()(uint64_t id) const { return absl::HashOf(id); }
    size_t operator()(const Task* t) const { return absl::HashOf(t->id().value()); }
  };
  struct TaskIdEq {
    using is_transparent = void;
    static uint64_t Key(uint64_t id) { return id; }
    static uint64_t Key(const Task* t) { return t->id().value(); }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const { return Key(a) == Key(b); }
  };
  absl::flat_hash_set<Task*, TaskIdHash, TaskIdEq, HugePageAllocator<Task*>> tasks_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::string> type_names_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> type_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<Timer> timers_ ABSL_GUARDED_BY(mu_);  // min-heap
  size_t timer_sweep_at_ ABSL_GUARDED_BY(mu_) = kMinTimerSweep;
  static constexpr size_t kMinTimerSweep = 4096;
  uint64_t next_wait_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<WaitId, std::unique_ptr<LeaseWaiter>> lease_waiters_
      ABSL_GUARDED_BY(mu_);
  // Parked Lease calls per queue name (the queue may not exist yet), in
  // arrival order.
  absl::flat_hash_map<std::string, std::vector<WaitId>> lease_waiters_by_queue_
      ABSL_GUARDED_BY(mu_);
  // Tasks with an idempotency key, found by (queue name, key) while kept:
  // a pointer per task, the key itself lives in the task.
  struct IdemRef {
    absl::string_view queue;
    StoredKey key;
  };
  struct IdemHash {
    using is_transparent = void;
    size_t operator()(const IdemRef& r) const;
    size_t operator()(const Task* t) const;
  };
  struct IdemEq {
    using is_transparent = void;
    static IdemRef Ref(const IdemRef& r) { return r; }
    static IdemRef Ref(const Task* t);
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      const IdemRef x = Ref(a), y = Ref(b);
      return x.queue == y.queue && x.key == y.key;
    }
  };
  absl::flat_hash_set<Task*, IdemHash, IdemEq, HugePageAllocator<Task*>> idempotency_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WaitId, std::unique_ptr<SubmitWaiter>> submit_waiters_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_watch_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<WatchId, std::unique_ptr<Watcher>> watchers_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::vector<WatchId>> watchers_by_task_
      ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  // Queues where a running slot freed: parked Lease calls are served at the
  // next Commit.
  absl::flat_hash_set<Queue*> to_serve_ ABSL_GUARDED_BY(mu_);

  journal::Journal* const journal_;
  uint32_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The batch being built under the lock.
  std::vector<std::string> batch_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> batch_submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> batch_updated_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(absl::Status)>> batch_callbacks_ ABSL_GUARDED_BY(mu_);
  Ticket last_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  Ticket durable_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  // Callbacks waiting for a ticket, and the outcome of finished tickets
  // still awaited (only failed ones are kept).
  std::map<Ticket, std::vector<std::function<void(absl::Status)>>> waiting_
      ABSL_GUARDED_BY(mu_);
  std::map<Ticket, absl::Status> failed_tickets_ ABSL_GUARDED_BY(mu_);
  // Tasks changed in a write that failed: their state is rewritten at the
  // next Tick until a write succeeds.
  absl::flat_hash_set<uint64_t> unpersisted_ ABSL_GUARDED_BY(mu_);

  // Workflows.
  absl::flat_hash_map<uint64_t, Link> links_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::unique_ptr<Group>> groups_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::unique_ptr<Chain>> chains_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> group_idempotency_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WatchId, std::unique_ptr<GroupWatcher>> group_watchers_
      ABSL_GUARDED_BY(mu_);
  // Groups and chains whose continuation must be submitted again.
  absl::flat_hash_set<uint64_t> workflow_retry_ ABSL_GUARDED_BY(mu_);
  // Schedules by name (sorted for ListSchedules), and by timer key.
  std::map<std::string, std::unique_ptr<ScheduleState>, std::less<>> schedules_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, ScheduleState*> schedules_by_key_ ABSL_GUARDED_BY(mu_);
  uint64_t next_schedule_key_ ABSL_GUARDED_BY(mu_) = 1;
  // Queues that replay found named by tasks but never recorded (their record
  // was in a failed write); recorded again at the end of recovery.
  std::vector<Queue*> lost_queue_records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_BROKER_H_
