#include "server/broker.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "server/broker_internal.h"
#include "server/journal_codec.h"

namespace conveyor::server {
using namespace internal;  // NOLINT: this file implements Broker
namespace {

constexpr size_t kMaxErrorBytes = 64 << 10;
constexpr size_t kMaxProgressMessageBytes = 1 << 10;
constexpr size_t kMaxIdempotencyKeyBytes = 256;
constexpr size_t kMaxKeyBytes = 128;
constexpr size_t kMaxWorkerIdBytes = 256;
constexpr size_t kMaxLeaseQueues = 64;
constexpr uint32_t kMaxLeaseTasks = 1000;
constexpr absl::Duration kMaxDelay = absl::Hours(24 * 365);
constexpr absl::Duration kMaxTimeout = absl::Hours(24 * 7);

// A Lease call's worker_id may be empty (anonymous); at most 256 bytes.
absl::Status ValidateWorkerIdSize(absl::string_view worker_id) {
  if (worker_id.size() > kMaxWorkerIdBytes) {
    return Invalid("worker_id", absl::StrCat("is ", worker_id.size(), " bytes; at most 256"));
  }
  return absl::OkStatus();
}

bool ValidTypeName(absl::string_view type) {
  if (type.empty() || type.size() > 128) return false;
  for (char c : type) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

absl::Status NotFoundTask(TaskId id) {
  return absl::NotFoundError(
      absl::StrCat("task ", id.ToString(), " not found (unknown, or its result was dropped)"));
}

absl::Status AlreadyEnded(TaskId id, TaskState state) {
  return absl::FailedPreconditionError(
      absl::StrCat("task ", id.ToString(), " has already ended (", TaskStateName(state), ")"));
}

absl::Status NeverLeased(TaskId id) {
  return absl::FailedPreconditionError(absl::StrCat("task ", id.ToString(), " was never leased"));
}

absl::Status NotFoundQueue(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("queue ", Quoted(name), " not found"));
}

}  // namespace

Broker::Broker(BrokerOptions options, const Clock* clock, BrokerListener* listener,
               journal::Journal* journal)
    : options_(std::move(options)), clock_(clock), listener_(listener), journal_(journal) {}

Broker::~Broker() {
  // Journal writes in flight call back into this broker (BatchDone): wait
  // for them. A closed journal has run them all; an open one finishes them.
  mu_.LockWhen(absl::Condition(
      +[](Broker* b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return b->journal_ == nullptr || b->durable_ticket_ >= b->last_ticket_;
      },
      this));
  for (Task* task : tasks_) Task::Destroy(task);
  tasks_.clear();
  mu_.Unlock();
}

void Broker::Run(Deferred& after) {
  for (auto& f : after) f();
  after.clear();
}

// ───────────────────────────── helpers ─────────────────────────────

Task* Broker::FindTask(TaskId id) const {
  auto it = tasks_.find(id.value());
  return it == tasks_.end() ? nullptr : *it;
}

size_t Broker::IdemHash::operator()(const IdemRef& r) const {
  return absl::HashOf(r.queue, r.key);
}

size_t Broker::IdemHash::operator()(const Task* t) const { return (*this)(IdemEq::Ref(t)); }

Broker::IdemRef Broker::IdemEq::Ref(const Task* t) {
  return IdemRef{t->queue()->name(), t->stored_key()};
}

Task* Broker::FindByIdempotencyKey(absl::string_view queue, absl::string_view key) const {
  auto it = idempotency_.find(IdemRef{queue, StoredKey::Of(key)});
  return it == idempotency_.end() ? nullptr : *it;
}

void Broker::IndexIdempotencyKey(Task* task) {
  if (!task->has_idempotency_key()) return;
  auto [it, inserted] = idempotency_.insert(task);
  if (!inserted) {  // replay: the later submit with the key wins
    idempotency_.erase(it);
    idempotency_.insert(task);
  }
}

void Broker::ForgetIdempotencyKey(Task* task) {
  if (!task->has_idempotency_key()) return;
  auto it = idempotency_.find(task);
  if (it != idempotency_.end() && *it == task) idempotency_.erase(it);
}

absl::StatusOr<Queue*> Broker::FindQueue(absl::string_view name) const {
  auto it = queues_.find(name);
  if (it == queues_.end()) {
    if (absl::Status s = ValidateQueueName(name); !s.ok()) return s;
    return NotFoundQueue(name);
  }
  return it->second.get();
}

absl::StatusOr<Task*> Broker::FindTaskForReport(TaskId id, uint64_t token) const {
  Task* task = FindTask(id);
  if (task == nullptr) return NotFoundTask(id);
  if (token != task->token()) {
    if (token < task->token()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "task ", id.ToString(), ": fencing token ", token,
          " is stale; the task was leased again (current token ", task->token(), ")"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "task ", id.ToString(), ": fencing token ", token,
        " was never issued (current token ", task->token(), ")"));
  }
  return task;
}

uint32_t Broker::InternType(absl::string_view type) {
  auto it = type_ids_.find(type);
  if (it != type_ids_.end()) return it->second;
  uint32_t id = static_cast<uint32_t>(type_names_.size());
  type_names_.emplace_back(type);
  type_ids_.emplace(std::string(type), id);
  return id;
}

std::unique_ptr<Queue> Broker::NewQueue(QueueConfig config) {
  // A queue calls its resolver only from the broker's calls into it, which
  // hold mu_; the analysis cannot see that.
  return std::make_unique<Queue>(
      std::move(config), [this](uint64_t id) ABSL_NO_THREAD_SAFETY_ANALYSIS -> Task* {
        Task* task = FindTask(TaskId(id));
        return task != nullptr && task->state == TaskState::kReady ? task : nullptr;
      });
}

TaskId Broker::NextId() {
  // Milliseconds in the high 48 bits: ids sort by submit time and stay
  // unique past 65,536 ids per millisecond by borrowing from the next one.
  uint64_t candidate = static_cast<uint64_t>(absl::ToUnixMillis(clock_->Now())) << 16;
  last_id_ = std::max(last_id_ + 1, candidate);
  return TaskId(last_id_);
}

const RetryPolicy& Broker::RetryOf(const Task& task) const {
  if (task.extra() != nullptr && task.extra()->retry) return *task.extra()->retry;
  return task.queue()->config().retry;
}

absl::Duration Broker::TimeoutOf(const Task& task) const {
  if (task.extra() != nullptr && task.extra()->timeout) return *task.extra()->timeout;
  return task.queue()->config().default_timeout;
}

TaskInfo Broker::Snapshot(const Task& task, bool with_payload) const {
  TaskInfo info;
  info.id = task.id();
  info.queue = task.queue()->name();
  info.type = type_names_[task.type_id()];
  if (with_payload) info.payload = std::string(task.payload());
  info.priority = task.priority;
  info.state = task.state;
  info.attempts = task.failures;
  info.max_attempts = RetryOf(task).max_attempts;
  info.crashes = task.crashes;
  info.token = task.token();
  info.created_at = task.created_at();
  info.not_before = task.not_before();
  info.cancel_requested = task.cancel_requested;
  info.idempotency_key = std::string(task.idempotency_key().view());
  info.timeout = TimeoutOf(task);
  info.version = change_seq_;
  if (const Link* link = LinkOf(task.id().value()); link != nullptr) {
    info.group_id = TaskId(link->group);
    info.chain_id = TaskId(link->chain);
    info.chain_stage = link->stage;
    info.schedule = link->schedule;
  }
  if (const TaskExtra* x = task.extra(); x != nullptr) {
    info.headers = x->headers;
    info.expires_at = x->expires_at;
    info.started_at = x->started_at;
    info.finished_at = x->finished_at;
    if (task.state == TaskState::kRunning) {
      info.worker_id = x->worker_id;
      info.lease_expires_at = x->lease_expires_at;
    }
    info.progress_percent = x->progress_percent;
    info.progress_message = x->progress_message;
    info.result = x->result;
    info.error = x->error;
    info.rate_key = x->rate_key;
    info.concurrency_key = x->concurrency_key;
  }
  return info;
}

void Broker::SetState(Task* task, TaskState state) {
  Queue* queue = task->queue();
  const TaskState old = task->state;
  queue->CountOut(old);
  if (old == TaskState::kReady && state != TaskState::kReady) queue->LeftReady(*task);
  if (old == TaskState::kRunning && state != TaskState::kRunning) {
    --running_;
    queue->SlotFreed(*task);
    if (queue->config().limits.max_running > 0 ||
        (task->extra() != nullptr && !task->extra()->concurrency_key.empty())) {
      // A slot freed: parked Lease calls may get a task now (at Commit).
      to_serve_.insert(queue);
    }
  }
  task->state = state;
  queue->CountIn(state);
  if (state == TaskState::kRunning && old != TaskState::kRunning) {
    ++running_;
    queue->SlotTaken(*task);
  }
  ++change_seq_;
}

void Broker::ArmWake(Queue* queue, absl::Time now) {
  const absl::Time at = queue->NextWake(now);
  if (at == absl::InfiniteFuture()) return;
  if (queue->armed_wake > now && queue->armed_wake <= at) return;  // one is due sooner
  queue->armed_wake = at;
  PushTimer(at, kQueueWake, reinterpret_cast<uintptr_t>(queue), absl::ToUnixMicros(at));
}

WaitInfo Broker::WaitOf(const Task& task, absl::Time now) const {
  WaitInfo w;
  Queue* queue = task.queue();
  if (task.state == TaskState::kScheduled) {
    w.reason = WaitReason::kNotDue;
    if (task.pending_durable) {
      w.detail = "its submit is being written to the journal";
    } else {
      w.until = task.not_before();
      w.detail = absl::StrCat(task.failures > 0 ? "retry backoff" : "not before",
                              " until ", FormatMillis(w.until));
    }
    return w;
  }
  if (task.state != TaskState::kReady) return w;
  if (!queue->Open(now, &w.reason, &w.until, &w.detail)) return w;
  w.reason = queue->KeyWait(task, now, &w.until, &w.detail);
  if (w.reason != WaitReason::kNone) {
    w.key = w.reason == WaitReason::kRateLimited ? task.extra()->rate_key
                                                 : task.extra()->concurrency_key;
    return w;
  }
  if (NoWorker(*queue, now)) {
    w.reason = WaitReason::kNoWorker;
    w.detail = absl::StrCat("no worker has polled queue ", Quoted(queue->name()), " for ",
                            absl::FormatDuration(options_.worker_idle));
    return w;
  }
  w.detail = "next in line, or waiting for a free worker slot";
  return w;
}

bool Broker::NoWorker(const Queue& queue, absl::Time now) const {
  if (queue.count(TaskState::kRunning) > 0) return false;
  if (queue.last_poll != absl::InfinitePast() && now - queue.last_poll < options_.worker_idle) {
    return false;
  }
  return !lease_waiters_by_queue_.contains(queue.name());
}

void Broker::PushTimer(absl::Time when, int kind, uint64_t key, int64_t stamp) {
  // Rounded up to the microsecond: a timer fires only once Now() >= when, so
  // a check that compares the exact time (a lease that ends 0.4 µs later)
  // never re-arms itself for the same microsecond and spins in Tick().
  int64_t when_us = absl::ToUnixMicros(when);
  if (when_us != std::numeric_limits<int64_t>::max() && absl::FromUnixMicros(when_us) < when) {
    ++when_us;
  }
  timers_.push_back(Timer{when_us, kind, key, stamp});
  std::push_heap(timers_.begin(), timers_.end(), std::greater<>());
  if (timers_.size() >= timer_sweep_at_) SweepTimers();
}

// Amortized O(1) per push: a sweep over n timers happens only after n/2
// pushes since the last one.
void Broker::SweepTimers() {
  size_t kept = 0;
  for (const Timer& t : timers_) {
    if (TimerLive(t)) timers_[kept++] = t;
  }
  timers_.resize(kept);
  if (timers_.capacity() > 4 * kept + kMinTimerSweep) timers_.shrink_to_fit();
  std::make_heap(timers_.begin(), timers_.end(), std::greater<>());
  timer_sweep_at_ = std::max(kMinTimerSweep, 2 * timers_.size());
}

Task* Broker::TimerTask(const Timer& timer) const {
  Task* task = FindTask(TaskId(timer.key));
  if (task == nullptr) return nullptr;
  switch (timer.kind) {
    case kDue:
      return task->state == TaskState::kScheduled &&
                     absl::ToUnixMicros(task->not_before()) == timer.stamp
                 ? task
                 : nullptr;
    case kLeaseCheck:
      return task->state == TaskState::kRunning &&
                     task->token() == static_cast<uint64_t>(timer.stamp)
                 ? task
                 : nullptr;
    case kExpire:
      return task->token() == 0 &&
                     (task->state == TaskState::kReady || task->state == TaskState::kScheduled)
                 ? task
                 : nullptr;
    default:
      return nullptr;
  }
}

bool Broker::TimerLive(const Timer& timer) const {
  switch (timer.kind) {
    case kDue:
    case kLeaseCheck:
    case kExpire:
      return TimerTask(timer) != nullptr;
    case kRetention:
      return reinterpret_cast<const Queue*>(static_cast<uintptr_t>(timer.key))
                 ->armed_retention_us == timer.stamp;
    case kLeaseWait:
      return lease_waiters_.contains(timer.key);
    case kSubmitWait:
      return submit_waiters_.contains(timer.key);
    default:  // queue wakes, workflow and schedule timers: few, checked when they fire
      return true;
  }
}

// ───────────────────────────── validation ─────────────────────────────

absl::Status Broker::ValidateSpec(const TaskSpec& spec, absl::Time now) const {
  if (absl::Status s = ValidateQueueName(spec.queue); !s.ok()) return s;
  if (!ValidTypeName(spec.type)) {
    return Invalid("type", absl::StrCat(Quoted(spec.type),
                                        " is malformed: 1-128 printable ASCII "
                                        "characters without spaces"));
  }
  if (spec.payload.size() > options_.max_payload_bytes) {
    return Invalid("payload", absl::StrCat("is ", spec.payload.size(),
                                           " bytes; the limit is ",
                                           options_.max_payload_bytes,
                                           " (--max-payload-bytes)"));
  }
  size_t header_bytes = 0;
  for (const auto& [k, v] : spec.headers) {
    if (k.empty()) return Invalid("headers", "has an empty key");
    header_bytes += k.size() + v.size();
  }
  if (header_bytes > options_.max_header_bytes) {
    return Invalid("headers", absl::StrCat("are ", header_bytes,
                                           " bytes; the limit is ",
                                           options_.max_header_bytes,
                                           " (--max-header-bytes)"));
  }
  if (spec.priority > 9) {
    return Invalid("priority", absl::StrCat("is ", spec.priority, "; must be 0 to 9"));
  }
  if (spec.not_before != absl::InfinitePast() && spec.not_before > now + kMaxDelay) {
    return Invalid("not_before", "is more than 365 days ahead");
  }
  if (spec.expires_at != absl::InfiniteFuture() && spec.expires_at <= now) {
    return Invalid("expires_at", absl::StrCat("(", absl::FormatTime(spec.expires_at),
                                              ") is not in the future"));
  }
  if (spec.timeout) {
    if (*spec.timeout <= absl::ZeroDuration() || *spec.timeout > kMaxTimeout) {
      return Invalid("timeout", absl::StrCat("is ", absl::FormatDuration(*spec.timeout),
                                             "; must be more than 0 and at most 168h"));
    }
  }
  if (spec.retry.max_attempts && *spec.retry.max_attempts == 0) {
    return Invalid("retry.max_attempts", "is 0; must be 1 to 1000");
  }
  if (!spec.retry.empty()) {
    // Checked against the default policy here, so that a bad override never
    // auto-creates its queue; SubmitLocked checks it again against the
    // queue's own policy.
    absl::StatusOr<RetryPolicy> resolved =
        ResolveRetry(spec.retry, options_.queue_defaults.retry);
    if (!resolved.ok()) return resolved.status();
  }
  if (spec.idempotency_key.size() > kMaxIdempotencyKeyBytes) {
    return Invalid("idempotency_key", absl::StrCat("is ", spec.idempotency_key.size(),
                                                   " bytes; at most 256"));
  }
  if (spec.rate_key.size() > kMaxKeyBytes) {
    return Invalid("rate_key", absl::StrCat("is ", spec.rate_key.size(), " bytes; at most 128"));
  }
  if (spec.concurrency_key.size() > kMaxKeyBytes) {
    return Invalid("concurrency_key",
                   absl::StrCat("is ", spec.concurrency_key.size(), " bytes; at most 128"));
  }
  if (spec.fallback_result && spec.fallback_result->size() > options_.max_result_bytes) {
    return Invalid("fallback_result",
                   absl::StrCat("is ", spec.fallback_result->size(),
                                " bytes; the limit is ", options_.max_result_bytes,
                                " (--max-result-bytes)"));
  }
  if (spec.delay != absl::ZeroDuration()) {
    return Invalid("delay", "is a template field (chain stages, callbacks, schedules)");
  }
  return ValidateStages(spec, "", now);
}

// ───────────────────────────── submit ─────────────────────────────

absl::StatusOr<RetryPolicy> Broker::ResolveRetry(const RetryOverride& override,
                                                 const RetryPolicy& base) {
  RetryPolicy resolved = override.ApplyTo(base);
  // A task that raises only its initial backoff above the queue's max raises
  // the max with it; a max the task sets itself is never overridden.
  if (override.initial_backoff && !override.max_backoff &&
      resolved.max_backoff < resolved.initial_backoff) {
    resolved.max_backoff = resolved.initial_backoff;
  }
  if (absl::Status s = ValidateRetryPolicy(resolved, "retry"); !s.ok()) return s;
  return resolved;
}

absl::StatusOr<Queue*> Broker::QueueForSubmit(absl::string_view name) {
  auto it = queues_.find(name);
  if (it != queues_.end()) return it->second.get();
  if (!options_.auto_create_queues) {
    return absl::NotFoundError(absl::StrCat(
        "queue ", Quoted(name),
        " not found (the broker runs with --auto-create-queues=false; create it first)"));
  }
  if (queues_.size() >= options_.max_queues) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot create queue ", Quoted(name), ": the broker holds ", queues_.size(),
        " queues, the limit (--max-queues)"));
  }
  QueueConfig config = options_.queue_defaults;
  config.name = std::string(name);
  std::unique_ptr<Queue> queue = NewQueue(std::move(config));
  Queue* raw = queue.get();
  queues_.emplace(raw->name(), std::move(queue));
  PersistQueue(*raw);
  return raw;
}

namespace {

// The rejection reason of a refused submit, from its status.
const char* RejectionReason(const absl::Status& s, bool queue_exists) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return "invalid";
    case absl::StatusCode::kNotFound: return "unknown_queue";
    case absl::StatusCode::kUnavailable: return "draining";
    case absl::StatusCode::kDeadlineExceeded: return "full";  // waited for room in vain
    case absl::StatusCode::kResourceExhausted:
      return queue_exists ? "full" : "too_many_queues";
    default: return "journal";
  }
}

}  // namespace

void Broker::Rejected(absl::string_view queue, const absl::Status& status,
                      uint64_t count) const {
  if (listener_ == nullptr || status.ok()) return;
  const bool exists = queues_.contains(queue);
  listener_->OnRejected(exists ? queue : absl::string_view(), RejectionReason(status, exists),
                        count);
}

void Broker::RejectedUnlocked(const absl::Status& status, uint64_t count) const {
  if (listener_ == nullptr || status.ok()) return;
  listener_->OnRejected("", RejectionReason(status, false), count);
}

SubmitResult Broker::Answer(const Task& task, bool deduplicated, bool ids_only) const {
  SubmitResult r;
  if (ids_only) {
    r.task.id = task.id();
    r.task.queue = task.queue()->name();
    r.task.state = task.state;
  } else {
    r.task = Snapshot(task, /*with_payload=*/false);
  }
  r.deduplicated = deduplicated;
  return r;
}

absl::StatusOr<SubmitResult> Broker::SubmitLocked(TaskSpec& spec, Queue* queue,
                                                  bool allow_wait, bool* must_wait,
                                                  Deferred& after, bool ids_only) {
  if (!spec.idempotency_key.empty()) {
    if (Task* original = FindByIdempotencyKey(queue->name(), spec.idempotency_key);
        original != nullptr) {
      return Answer(*original, /*deduplicated=*/true, ids_only);
    }
  }
  if (queue->full()) {
    if (allow_wait && queue->config().full_policy == FullPolicy::kWait) {
      *must_wait = true;
      return absl::UnavailableError("waiting for room");  // not returned to callers
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue ", Quoted(queue->name()), " is full (capacity ", queue->config().capacity,
        " unfinished tasks); retry later"));
  }
  absl::StatusOr<Task*> task = CreateTask(spec, queue, /*link=*/nullptr, after);
  if (!task.ok()) return task.status();
  return Answer(**task, /*deduplicated=*/false, ids_only);
}

absl::StatusOr<Task*> Broker::CreateTask(TaskSpec& spec, Queue* queue, const Link* link,
                                         Deferred& after) {
  const absl::Time now = clock_->Now();
  std::optional<RetryPolicy> retry;
  if (!spec.retry.empty()) {
    absl::StatusOr<RetryPolicy> resolved = ResolveRetry(spec.retry, queue->config().retry);
    if (!resolved.ok()) return resolved.status();
    retry = *resolved;
  }

  TaskId id = NextId();
  Task* task =
      Task::Create(id, queue, InternType(spec.type), spec.payload, now, spec.idempotency_key);
  task->priority = static_cast<uint8_t>(spec.priority);
  bool needs_extra = !spec.headers.empty() || !spec.rate_key.empty() ||
                     !spec.concurrency_key.empty() || spec.fallback_result.has_value() ||
                     !spec.retry.empty() ||
                     spec.timeout.has_value() || spec.expires_at != absl::InfiniteFuture();
  if (needs_extra) {
    TaskExtra& x = task->mutable_extra();
    x.headers = std::move(spec.headers);
    x.rate_key = std::move(spec.rate_key);
    x.concurrency_key = std::move(spec.concurrency_key);
    x.fallback_result = std::move(spec.fallback_result);
    x.retry = retry;
    x.timeout = spec.timeout;
    x.expires_at = spec.expires_at;
  }
  tasks_.insert(task);
  IndexIdempotencyKey(task);
  task->state = TaskState::kScheduled;
  queue->CountIn(TaskState::kScheduled);
  ++change_seq_;
  if (spec.not_before != absl::InfinitePast() && spec.not_before > now) {
    task->set_not_before(spec.not_before);
  }
  // Workflow links first: the records they write precede the task's own.
  LinkNewTask(*task, link, spec, after);
  if (listener_ != nullptr) listener_->OnSubmitted(*queue, *task);
  if (journal_ != nullptr) {
    // Leaseable only once its record is durable (BatchDone activates it).
    task->pending_durable = true;
    batch_.push_back(EncodeSubmitted(*task, type_names_[task->type_id()], LinkOf(id.value())));
    batch_submitted_.push_back(id.value());
  } else {
    Activate(task, after);
  }
  return task;
}

void Broker::Activate(Task* task, Deferred& after) {
  task->pending_durable = false;
  const TaskExtra* x = task->extra();
  if (x != nullptr && x->expires_at != absl::InfiniteFuture()) {
    PushTimer(x->expires_at, kExpire, task->id().value(), 0);
  }
  if (x != nullptr && x->not_before != absl::InfinitePast() && x->not_before > clock_->Now()) {
    Schedule(task, x->not_before);
  } else {
    MakeReady(task, after);
  }
}

WaitId Broker::Submit(TaskSpec spec, absl::Time deadline, SubmitCallback done) {
  if (absl::Status s = ValidateSpec(spec, clock_->Now()); !s.ok()) {
    RejectedUnlocked(s);
    done(s);
    return 0;
  }
  Deferred after;
  WaitId wait_id = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<SubmitResult> result;
    bool must_wait = false;
    if (draining_) {
      result = absl::UnavailableError("the broker is draining; submit to another broker or retry later");
    } else if (absl::StatusOr<Queue*> queue = QueueForSubmit(spec.queue); !queue.ok()) {
      result = queue.status();
    } else {
      result = SubmitLocked(spec, *queue, /*allow_wait=*/true, &must_wait, after);
      if (must_wait) {
        if (deadline <= clock_->Now()) {
          result = absl::DeadlineExceededError(absl::StrCat(
              "queue ", Quoted(spec.queue), " is full and the call's deadline passed"));
        } else {
          wait_id = next_wait_id_++;
          (*queue)->submit_waiters().push_back(wait_id);
          if (deadline != absl::InfiniteFuture()) PushTimer(deadline, kSubmitWait, wait_id, 0);
          submit_waiters_.emplace(
              wait_id, std::make_unique<SubmitWaiter>(
                           SubmitWaiter{std::move(spec), *queue, std::move(done)}));
        }
      }
    }
    if (wait_id == 0) {
      if (result.ok()) {
        OnCommit([this, done = std::move(done), result = std::move(result)](absl::Status s) mutable {
          if (!s.ok()) {
            if (listener_ != nullptr) listener_->OnRejected(result->task.queue, "journal", 1);
            result = s;
          }
          done(std::move(result));
        });
      } else {
        Rejected(spec.queue, result.status());
        after.push_back([done = std::move(done), result = std::move(result)]() mutable {
          done(std::move(result));
        });
      }
    }
    Commit(after);
  }
  Run(after);
  return wait_id;
}

absl::StatusOr<SubmitResult> Broker::SubmitNow(TaskSpec spec) {
  if (absl::Status s = ValidateSpec(spec, clock_->Now()); !s.ok()) {
    RejectedUnlocked(s);
    return s;
  }
  absl::Notification done;
  absl::StatusOr<SubmitResult> result;
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      absl::Status s = absl::UnavailableError(
          "the broker is draining; submit to another broker or retry later");
      Rejected(spec.queue, s);
      return s;
    }
    absl::StatusOr<Queue*> queue = QueueForSubmit(spec.queue);
    if (!queue.ok()) {
      result = queue.status();
    } else {
      bool must_wait = false;
      result = SubmitLocked(spec, *queue, /*allow_wait=*/false, &must_wait, after);
    }
    if (result.ok()) {
      OnCommit([this, &result, &done](absl::Status s) {
        if (!s.ok()) {
          if (listener_ != nullptr) listener_->OnRejected(result->task.queue, "journal", 1);
          result = s;
        }
        done.Notify();
      });
    } else {
      Rejected(spec.queue, result.status());
      done.Notify();
    }
    Commit(after);
  }
  Run(after);
  done.WaitForNotification();
  return result;
}

absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> Broker::SubmitBatch(
    std::vector<TaskSpec> specs) {
  absl::Notification done;
  absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> out;
  SubmitBatch(std::move(specs),
              [&](absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> r) {
                out = std::move(r);
                done.Notify();
              });
  done.WaitForNotification();
  return out;
}

void Broker::SubmitBatch(std::vector<TaskSpec> specs, BatchCallback done, bool ids_only) {
  if (specs.size() > options_.max_batch_count) {
    RejectedUnlocked(absl::InvalidArgumentError(""), specs.size());
    done(Invalid("tasks", absl::StrCat("holds ", specs.size(), " tasks; the limit is ",
                                       options_.max_batch_count, " (--max-batch-count)")));
    return;
  }
  size_t bytes = 0;
  for (const TaskSpec& s : specs) bytes += s.payload.size();
  if (bytes > options_.max_batch_bytes) {
    RejectedUnlocked(absl::InvalidArgumentError(""), specs.size());
    done(Invalid("tasks", absl::StrCat("carry ", bytes, " payload bytes; the limit is ",
                                       options_.max_batch_bytes, " (--max-batch-bytes)")));
    return;
  }
  std::vector<absl::StatusOr<SubmitResult>> out;
  out.reserve(specs.size());
  const absl::Time now = clock_->Now();
  std::vector<absl::Status> valid;
  valid.reserve(specs.size());
  for (const TaskSpec& s : specs) valid.push_back(ValidateSpec(s, now));
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!valid[i].ok()) {
        out.push_back(valid[i]);
        continue;
      }
      if (draining_) {
        out.push_back(absl::UnavailableError("the broker is draining"));
        continue;
      }
      absl::StatusOr<Queue*> queue = QueueForSubmit(specs[i].queue);
      if (!queue.ok()) {
        out.push_back(queue.status());
        continue;
      }
      bool must_wait = false;
      out.push_back(
          SubmitLocked(specs[i], *queue, /*allow_wait=*/false, &must_wait, after, ids_only));
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!out[i].ok()) Rejected(specs[i].queue, out[i].status());
    }
    // One journal write for the whole batch; the answer waits for it.
    OnCommit([this, done = std::move(done), out = std::move(out)](absl::Status s) mutable {
      if (!s.ok()) {
        for (auto& item : out) {
          if (item.ok()) {
            if (listener_ != nullptr) listener_->OnRejected(item->task.queue, "journal", 1);
            item = s;
          }
        }
      }
      done(std::move(out));
    });
    Commit(after);
  }
  Run(after);
}

// ───────────────────────────── transitions ─────────────────────────────

void Broker::MakeReady(Task* task, Deferred& after) {
  Queue* queue = task->queue();
  SetState(task, TaskState::kReady);
  // The ready sequence is the ready-since time in microseconds, kept strictly
  // increasing so FIFO order holds within one microsecond.
  next_seq_ = std::max<uint64_t>(next_seq_ + 1, absl::ToUnixMicros(clock_->Now()));
  task->ready_seq = next_seq_;
  queue->PushReady(*task);
  NotifyWatchers(*task, /*final=*/false, after);
  ServeLeaseWaiters(queue, after);
}

void Broker::Schedule(Task* task, absl::Time when) {
  SetState(task, TaskState::kScheduled);
  task->set_not_before(when);
  PushTimer(when, kDue, task->id().value(), absl::ToUnixMicros(when));
}

LeasedTask Broker::Grant(Task* task, absl::string_view worker_id, Deferred& after) {
  const absl::Time now = clock_->Now();
  Queue* queue = task->queue();
  // A keyed lane goes behind every task ready by now (round-robin): its turn
  // is a fresh seq, so lanes served at the same instant still take turns.
  uint64_t turn = 0;
  if (task->extra() != nullptr &&
      (!task->extra()->rate_key.empty() || !task->extra()->concurrency_key.empty())) {
    next_seq_ = std::max<uint64_t>(next_seq_ + 1, absl::ToUnixMicros(now));
    turn = next_seq_;
  }
  queue->TakeReady(*task, now, turn);
  SetState(task, TaskState::kRunning);
  // Tokens of an earlier epoch (before a restart) are all smaller than any
  // of this one, so none is ever issued twice.
  const uint64_t last = task->token();
  task->set_token((last >> 32) < epoch_ ? (uint64_t{epoch_} << 32) | 1 : last + 1);
  TaskExtra& x = task->mutable_extra();
  x.lease_lapsed = false;
  x.worker_id = std::string(worker_id);
  x.started_at = now;
  x.lease_expires_at = now + queue->config().lease_duration;
  const absl::Duration timeout = TimeoutOf(*task);
  x.attempt_deadline = now + timeout;
  x.progress_percent = 0;
  x.progress_message.clear();
  PushTimer(std::min(x.lease_expires_at, x.attempt_deadline + options_.timeout_grace),
            kLeaseCheck, task->id().value(), task->token());
  if (listener_ != nullptr) listener_->OnDispatched(*queue, *task);
  NotifyWatchers(*task, /*final=*/false, after);

  LeasedTask leased;
  leased.id = task->id();
  leased.queue = queue->name();
  leased.type = type_names_[task->type_id()];
  leased.payload = std::string(task->payload());
  leased.headers = x.headers;
  leased.attempt = task->failures + 1u;
  leased.max_attempts = RetryOf(*task).max_attempts;
  leased.token = task->token();
  leased.lease_expires_at = x.lease_expires_at;
  leased.deadline = x.attempt_deadline;
  leased.timeout = timeout;
  return leased;
}

absl::Duration Broker::BackoffFor(const Task& task) {
  const RetryPolicy& p = RetryOf(task);
  double factor = std::pow(p.multiplier, std::max(0, task.failures - 1));
  absl::Duration delay = p.initial_backoff * factor;
  if (delay > p.max_backoff || delay < absl::ZeroDuration()) delay = p.max_backoff;
  if (p.jitter > 0) {
    double spread = absl::Uniform(rng_, -p.jitter, p.jitter);
    delay = delay * (1.0 + spread);
    if (delay > p.max_backoff) delay = p.max_backoff;
  }
  return std::max(delay, absl::ZeroDuration());
}

void Broker::RetryOrDie(Task* task, std::string error, bool retryable, Deferred& after) {
  TaskExtra& x = task->mutable_extra();
  x.error = std::move(error);
  if (task->failures < UINT16_MAX) ++task->failures;
  if (task->cancel_requested) {
    End(task, TaskState::kCanceled, after);
    return;
  }
  if (!retryable || task->failures >= RetryOf(*task).max_attempts) {
    if (x.fallback_result) {
      x.result = *x.fallback_result;
      End(task, TaskState::kFallback, after);
    } else {
      End(task, TaskState::kDead, after);
    }
    return;
  }
  if (listener_ != nullptr) listener_->OnRetried(*task->queue(), *task);
  absl::Duration delay = BackoffFor(*task);
  if (delay <= absl::ZeroDuration()) {
    MakeReady(task, after);
  } else {
    Schedule(task, clock_->Now() + delay);
    NotifyWatchers(*task, /*final=*/false, after);
  }
  PersistTask(*task);
}

void Broker::End(Task* task, TaskState state, Deferred& after) {
  Queue* queue = task->queue();
  const bool was_active = !IsTerminal(task->state);
  const absl::Time now = clock_->Now();
  if (task->state == TaskState::kReady && state == TaskState::kDead) {
    // A dead letter may be requeued later, and its old ready entry would
    // then count again. Rare (a late permanent failure after a lease
    // expiry), so a scan is fine; other ends from READY are final.
    queue->RemoveReady(*task);
  }
  SetState(task, state);
  TaskExtra& x = task->mutable_extra();
  x.lease_lapsed = false;
  x.finished_at = now;
  x.lease_expires_at = absl::InfinitePast();
  task->set_ended_stamp(static_cast<int64_t>(++end_counter_));
  queue->ended().emplace_back(task->id().value(), task->ended_stamp());
  ++queue->ended_live;
  if (listener_ != nullptr) listener_->OnEnded(*queue, *task);
  PersistTask(*task);
  NotifyWatchers(*task, /*final=*/true, after);
  // Before retention, which may drop the record at once (retained = 0).
  WorkflowStep(task, after);
  if (was_active) ServeSubmitWaiters(queue, after);
  EnforceRetention(queue, after);
}

void Broker::Drop(Task* task, absl::string_view reason, Deferred& after) {
  Queue* queue = task->queue();
  if (listener_ != nullptr) listener_->OnDropped(*queue, *task, reason);
  if (IsTerminal(task->state)) {
    --queue->ended_live;
  } else {
    // Purged while queued: it ends here, as CANCELED, for its watchers.
    if (task->state == TaskState::kReady) queue->LeftReady(*task);
    if (task->state == TaskState::kRunning) {
      --running_;
      queue->SlotFreed(*task);
      to_serve_.insert(queue);  // a running slot freed
    }
    queue->CountOut(task->state);
    task->state = TaskState::kCanceled;
    task->mutable_extra().error = absl::StrCat("purged (", reason, ")");
    ++change_seq_;
    NotifyWatchers(*task, /*final=*/true, after);
    queue->CountIn(TaskState::kCanceled);
    WorkflowStep(task, after);
  }
  queue->CountOut(task->state);
  ForgetIdempotencyKey(task);
  if (task->watched) {
    // Dropped while watched (retention of an ended task): end the watches.
    NotifyWatchers(*task, /*final=*/true, after);
  }
  UnlinkTask(task->id().value(), /*undurable=*/false);
  tasks_.erase(task->id().value());
  Task::Destroy(task);
}

// Tasks end in the order of their end times (the clock going back aside),
// so the front of `ended` is always the next result to reach its TTL: it is
// dropped here when due, and otherwise the queue's one retention timer is
// armed for it. A changed TTL applies to the results already kept.
void Broker::EnforceRetention(Queue* queue, Deferred& after) {
  auto& ended = queue->ended();
  while (!ended.empty()) {
    auto [id, stamp] = ended.front();
    Task* task = FindTask(TaskId(id));
    if (task == nullptr || task->ended_stamp() != stamp) {  // dropped or requeued since
      ended.pop_front();
      continue;
    }
    const char* reason = "retained";
    if (queue->ended_live <= queue->config().retained) {
      const absl::Time due = task->extra()->finished_at + queue->config().result_ttl;
      const int64_t due_us = absl::ToUnixMicros(due);
      // An armed timer due no later looks again when it fires: while results
      // pile up under `retained`, an End pushes no timer and reads no clock.
      // (A later one, left by a shortened TTL, goes stale: TimerLive.)
      if (queue->armed_retention_us != 0 && queue->armed_retention_us <= due_us) return;
      if (due > clock_->Now()) {
        queue->armed_retention_us = due_us;
        PushTimer(due, kRetention, reinterpret_cast<uintptr_t>(queue), due_us);
        return;
      }
      reason = "ttl";
    }
    ended.pop_front();
    Drop(task, reason, after);
  }
}

void Broker::NotifyWatchers(const Task& task, bool final, Deferred& after) {
  if (!task.watched) return;
  auto it = watchers_by_task_.find(task.id().value());
  if (it == watchers_by_task_.end()) return;
  TaskInfo info = Snapshot(task, /*with_payload=*/false);
  for (WatchId wid : it->second) {
    auto w = watchers_.find(wid);
    if (w == watchers_.end()) continue;
    after.push_back([cb = w->second->callback, info, final] { cb(info, final); });
    if (final) watchers_.erase(w);
  }
  if (final) {
    watchers_by_task_.erase(it);
    const_cast<Task&>(task).watched = false;
  }
}

// ───────────────────────────── leasing ─────────────────────────────

std::vector<LeasedTask> Broker::TakeReady(const LeaseRequest& request, uint32_t max,
                                          Deferred& after) {
  std::vector<LeasedTask> out;
  std::vector<Queue*> queues;
  const absl::Time now = clock_->Now();
  for (const std::string& name : request.queues) {
    auto it = queues_.find(name);
    if (it != queues_.end() && !it->second->paused) {
      it->second->Wake(now);
      queues.push_back(it->second.get());
    }
  }
  if (queues.empty()) return out;
  std::vector<uint32_t> types;
  for (const std::string& t : request.types) {
    auto it = type_ids_.find(t);
    if (it != type_ids_.end()) types.push_back(it->second);
  }
  if (!request.types.empty() && types.empty()) return out;  // no such type yet
  while (out.size() < max) {
    Task* best = nullptr;
    uint64_t best_key = 0;
    for (Queue* q : queues) {
      if (q->count(TaskState::kReady) == 0 || !q->Open(now)) continue;
      uint64_t key = 0;
      Task* t = q->PeekReady(types, now, &key);
      if (t != nullptr && (best == nullptr || key < best_key)) {
        best = t;
        best_key = key;
      }
    }
    if (best == nullptr) break;
    if (best->extra() != nullptr && best->token() == 0 && best->extra()->expires_at <= now) {
      best->queue()->RemoveReady(*best);
      best->mutable_extra().error = "expired before it was leased";
      End(best, TaskState::kExpired, after);
      continue;
    }
    out.push_back(Grant(best, request.worker_id, after));
  }
  // Whatever a limit holds back now needs a timer to go again.
  for (Queue* q : queues) ArmWake(q, now);
  return out;
}

void Broker::ServeLeaseWaiters(Queue* queue, Deferred& after) {
  if (queue->paused) return;
  auto it = lease_waiters_by_queue_.find(queue->name());
  if (it == lease_waiters_by_queue_.end()) return;
  // Copy: serving a waiter removes it from these lists.
  std::vector<WaitId> ids(it->second.begin(), it->second.end());
  for (WaitId id : ids) {
    if (queue->count(TaskState::kReady) == 0) break;
    auto w = lease_waiters_.find(id);
    if (w == lease_waiters_.end()) continue;
    std::vector<LeasedTask> tasks =
        TakeReady(w->second->request, w->second->request.max_tasks, after);
    if (tasks.empty()) {
      // Nothing this queue holds may start now; a waiter without a type
      // filter proves it for the ones after it too.
      if (w->second->request.types.empty()) break;
      continue;
    }
    std::unique_ptr<LeaseWaiter> waiter = RemoveLeaseWaiter(id);
    after.push_back([done = std::move(waiter->done), tasks = std::move(tasks)]() mutable {
      done(std::move(tasks));
    });
  }
}

std::unique_ptr<Broker::LeaseWaiter> Broker::RemoveLeaseWaiter(WaitId id) {
  auto it = lease_waiters_.find(id);
  if (it == lease_waiters_.end()) return nullptr;
  std::unique_ptr<LeaseWaiter> waiter = std::move(it->second);
  lease_waiters_.erase(it);
  for (const std::string& name : waiter->request.queues) {
    auto q = lease_waiters_by_queue_.find(name);
    if (q == lease_waiters_by_queue_.end()) continue;
    auto& ids = q->second;
    ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
    if (ids.empty()) lease_waiters_by_queue_.erase(q);
  }
  return waiter;
}

absl::Status Broker::ValidateLease(const LeaseRequest& r) const {
  if (r.queues.empty()) return Invalid("queues", "is empty; name at least one queue");
  if (r.queues.size() > kMaxLeaseQueues) {
    return Invalid("queues", absl::StrCat("names ", r.queues.size(), " queues; at most 64"));
  }
  for (const std::string& q : r.queues) {
    if (absl::Status s = ValidateQueueName(q); !s.ok()) return s;
  }
  for (const std::string& t : r.types) {
    if (!ValidTypeName(t)) return Invalid("types", absl::StrCat(Quoted(t), " is malformed"));
  }
  if (r.max_tasks < 1 || r.max_tasks > kMaxLeaseTasks) {
    return Invalid("max_tasks", absl::StrCat("is ", r.max_tasks, "; must be 1 to 1000"));
  }
  if (r.wait < absl::ZeroDuration() || r.wait > options_.max_lease_wait) {
    return Invalid("wait", absl::StrCat("is ", absl::FormatDuration(r.wait),
                                        "; must be 0 to ",
                                        absl::FormatDuration(options_.max_lease_wait)));
  }
  return ValidateWorkerIdSize(r.worker_id);
}

WaitId Broker::Lease(LeaseRequest request, LeaseCallback done) {
  if (absl::Status s = ValidateLease(request); !s.ok()) {
    done(s);
    return 0;
  }
  Deferred after;
  WaitId wait_id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      after.push_back([done = std::move(done)] {
        done(absl::UnavailableError("the broker is draining; lease from another broker"));
      });
    } else {
      const absl::Time now = clock_->Now();
      for (const std::string& name : request.queues) {
        if (auto it = queues_.find(name); it != queues_.end()) it->second->last_poll = now;
      }
      std::vector<LeasedTask> tasks = TakeReady(request, request.max_tasks, after);
      if (!tasks.empty() || request.wait <= absl::ZeroDuration()) {
        after.push_back([done = std::move(done), tasks = std::move(tasks)]() mutable {
          done(std::move(tasks));
        });
      } else {
        wait_id = next_wait_id_++;
        for (const std::string& name : request.queues) {
          lease_waiters_by_queue_[name].push_back(wait_id);
        }
        PushTimer(clock_->Now() + request.wait, kLeaseWait, wait_id, 0);
        lease_waiters_.emplace(wait_id, std::make_unique<LeaseWaiter>(
                                            LeaseWaiter{std::move(request), std::move(done)}));
      }
    }
    Commit(after);
  }
  Run(after);
  return wait_id;
}

void Broker::CancelWait(WaitId id) {
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    if (std::unique_ptr<LeaseWaiter> w = RemoveLeaseWaiter(id); w != nullptr) {
      after.push_back([done = std::move(w->done)] {
        done(absl::CancelledError("the lease call was cancelled"));
      });
    } else if (auto it = submit_waiters_.find(id); it != submit_waiters_.end()) {
      std::unique_ptr<SubmitWaiter> w = std::move(it->second);
      submit_waiters_.erase(it);
      auto& ids = w->queue->submit_waiters();
      ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
      after.push_back([done = std::move(w->done)] {
        done(absl::CancelledError("the submit call was cancelled"));
      });
    }
  }
  Run(after);
}

absl::StatusOr<int> Broker::EndLeaseWaits(absl::string_view worker_id) {
  if (worker_id.empty()) return Invalid("worker_id", "is empty; name the worker whose polls end");
  if (absl::Status s = ValidateWorkerIdSize(worker_id); !s.ok()) return s;
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    // A scan of the parked calls: one per stopping worker, not per task.
    std::vector<WaitId> ids;
    for (const auto& [id, waiter] : lease_waiters_) {
      if (waiter->request.worker_id == worker_id) ids.push_back(id);
    }
    for (WaitId id : ids) {
      std::unique_ptr<LeaseWaiter> w = RemoveLeaseWaiter(id);
      after.push_back([done = std::move(w->done)] { done(std::vector<LeasedTask>()); });
    }
  }
  const int ended = static_cast<int>(after.size());
  Run(after);
  return ended;
}

void Broker::ServeSubmitWaiters(Queue* queue, Deferred& after) {
  auto& ids = queue->submit_waiters();
  while (!ids.empty() && !queue->full()) {
    WaitId id = ids.front();
    ids.pop_front();
    auto it = submit_waiters_.find(id);
    if (it == submit_waiters_.end()) continue;
    std::unique_ptr<SubmitWaiter> w = std::move(it->second);
    submit_waiters_.erase(it);
    bool must_wait = false;
    absl::StatusOr<SubmitResult> result =
        SubmitLocked(w->spec, queue, /*allow_wait=*/false, &must_wait, after);
    OnCommit([done = std::move(w->done), result = std::move(result)](absl::Status s) mutable {
      if (!s.ok() && result.ok()) result = s;
      done(std::move(result));
    });
  }
}

// ───────────────────────────── reports ─────────────────────────────

std::vector<HeartbeatOutcome> Broker::Heartbeat(absl::string_view worker_id,
                                                const std::vector<HeartbeatItem>& items) {
  std::vector<HeartbeatOutcome> out(items.size());
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (size_t i = 0; i < items.size(); ++i) {
      const HeartbeatItem& item = items[i];
      HeartbeatOutcome& o = out[i];
      if (item.progress_percent &&
          !(*item.progress_percent >= 0 && *item.progress_percent <= 100)) {
        o.status = Invalid("progress_percent",
                           absl::StrCat("is ", *item.progress_percent, "; must be 0 to 100"));
        continue;
      }
      if (item.progress_message.size() > kMaxProgressMessageBytes) {
        o.status = Invalid("progress_message",
                           absl::StrCat("is ", item.progress_message.size(),
                                        " bytes; at most 1024"));
        continue;
      }
      absl::StatusOr<Task*> found = FindTaskForReport(item.id, item.token);
      if (!found.ok()) {
        o.status = found.status();
        continue;
      }
      Task* task = *found;
      if (task->state == TaskState::kReady && task->extra() != nullptr &&
          task->extra()->lease_lapsed) {
        // Its lease expired but nobody leased it again: the worker is alive
        // after all (the current token proves it), so it gets the lease back
        // and the crash it was charged is refunded.
        task->queue()->RemoveReady(*task);
        SetState(task, TaskState::kRunning);
        if (task->crashes > 0) --task->crashes;
        TaskExtra& x = task->mutable_extra();
        x.error.clear();
        x.lease_lapsed = false;
        x.lease_expires_at = now;  // extended below
        PushTimer(std::min(now + task->queue()->config().lease_duration,
                           x.attempt_deadline + options_.timeout_grace),
                  kLeaseCheck, task->id().value(), static_cast<int64_t>(task->token()));
        PersistTask(*task);
        NotifyWatchers(*task, /*final=*/false, after);
      }
      if (task->state != TaskState::kRunning) {
        o.status = absl::FailedPreconditionError(absl::StrCat(
            "task ", item.id.ToString(), " is ", TaskStateName(task->state),
            IsTerminal(task->state) ? ": it has ended" : ": its lease expired"));
        o.cancel = task->cancel_requested || task->state == TaskState::kCanceled;
        continue;
      }
      TaskExtra& x = task->mutable_extra();
      x.lease_expires_at = now + task->queue()->config().lease_duration;
      if (!worker_id.empty()) x.worker_id = std::string(worker_id);
      bool changed = false;
      if (item.progress_percent) {
        changed = x.progress_percent != *item.progress_percent ||
                  x.progress_message != item.progress_message;
        x.progress_percent = *item.progress_percent;
        x.progress_message = item.progress_message;
      }
      if (changed) {
        ++change_seq_;
        NotifyWatchers(*task, /*final=*/false, after);
      }
      o.cancel = task->cancel_requested;
      o.lease_expires_at = x.lease_expires_at;
    }
    Commit(after);
  }
  Run(after);
  return out;
}

std::vector<absl::Status> Broker::Complete(const std::vector<CompleteItem>& items,
                                           Ticket* ticket) {
  std::vector<absl::Status> out(items.size());
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < items.size(); ++i) {
      const CompleteItem& item = items[i];
      if (item.result.size() > options_.max_result_bytes) {
        out[i] = Invalid("result", absl::StrCat("is ", item.result.size(),
                                                " bytes; the limit is ",
                                                options_.max_result_bytes,
                                                " (--max-result-bytes)"));
        continue;
      }
      absl::StatusOr<Task*> found = FindTaskForReport(item.id, item.token);
      if (!found.ok()) {
        out[i] = found.status();
        continue;
      }
      Task* task = *found;
      if (IsTerminal(task->state)) {
        // A repeated report (its answer was lost) is acknowledged again.
        if (task->state == TaskState::kSucceeded && task->extra() != nullptr &&
            task->extra()->result == item.result) {
          continue;
        }
        out[i] = AlreadyEnded(item.id, task->state);
        continue;
      }
      if (task->token() == 0) {
        out[i] = NeverLeased(item.id);
        continue;
      }
      // RUNNING, or requeued after its lease expired with no newer lease:
      // the report with the current token wins either way.
      task->mutable_extra().result = item.result;
      task->mutable_extra().error.clear();
      // Done is 100%, whatever the last heartbeat carried (a handler's last
      // progress report may not have gone out before its result).
      task->mutable_extra().progress_percent = 100;
      End(task, TaskState::kSucceeded, after);
    }
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return out;
}

std::vector<absl::Status> Broker::Fail(const std::vector<FailItem>& items, Ticket* ticket) {
  std::vector<absl::Status> out(items.size());
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < items.size(); ++i) {
      const FailItem& item = items[i];
      absl::StatusOr<Task*> found = FindTaskForReport(item.id, item.token);
      if (!found.ok()) {
        out[i] = found.status();
        continue;
      }
      Task* task = *found;
      std::string error = item.error.substr(0, kMaxErrorBytes);
      if (!item.reason.empty()) error = absl::StrCat(item.reason, ": ", error);
      if (item.throttled) {
        if (item.retry_after < absl::ZeroDuration() || item.retry_after > options_.max_throttle) {
          out[i] = Invalid("retry_after",
                           absl::StrCat("is ", absl::FormatDuration(item.retry_after),
                                        "; must be 0 to ",
                                        absl::FormatDuration(options_.max_throttle)));
          continue;
        }
        if (IsTerminal(task->state)) {
          out[i] = AlreadyEnded(item.id, task->state);
          continue;
        }
        if (task->token() == 0) {
          out[i] = NeverLeased(item.id);
          continue;
        }
        Throttle(task, item.retry_after > absl::ZeroDuration() ? item.retry_after
                                                               : options_.default_throttle,
                 std::move(error), after);
        continue;
      }
      if (IsTerminal(task->state)) {
        if (task->state == TaskState::kDead || task->state == TaskState::kFallback ||
            task->state == TaskState::kCanceled) {
          continue;  // a repeated report: the failure was already applied
        }
        out[i] = AlreadyEnded(item.id, task->state);
        continue;
      }
      if (task->token() == 0) {
        out[i] = NeverLeased(item.id);
        continue;
      }
      if (task->state == TaskState::kRunning) {
        RetryOrDie(task, std::move(error), item.retryable, after);
      } else if (!item.retryable) {
        // Requeued after a lease expiry (or already in backoff from this same
        // report): a permanent failure still ends it.
        task->mutable_extra().error = std::move(error);
        TaskExtra& x = task->mutable_extra();
        if (x.fallback_result) {
          x.result = *x.fallback_result;
          End(task, TaskState::kFallback, after);
        } else {
          End(task, TaskState::kDead, after);
        }
      }
      // A retryable failure of a task that is already waiting again changes
      // nothing: it was requeued (or this report is a repeat).
    }
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return out;
}

void Broker::Throttle(Task* task, absl::Duration pause, std::string error, Deferred& after) {
  const absl::Time now = clock_->Now();
  Queue* queue = task->queue();
  // The pause comes first, so the task does not go straight back out.
  const std::string rate_key = task->extra() != nullptr ? task->extra()->rate_key : "";
  queue->Throttle(rate_key, now + pause);
  ArmWake(queue, now);
  if (task->state != TaskState::kRunning) return;  // already back in the queue
  if (task->cancel_requested) {
    task->mutable_extra().error = "canceled";
    End(task, TaskState::kCanceled, after);
    return;
  }
  // Neither an attempt nor the crash budget is spent.
  TaskExtra& x = task->mutable_extra();
  x.error = std::move(error);
  x.lease_expires_at = absl::InfinitePast();
  MakeReady(task, after);
}

std::vector<absl::Status> Broker::Release(const std::vector<ReleaseItem>& items,
                                          Ticket* ticket) {
  std::vector<absl::Status> out(items.size());
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < items.size(); ++i) {
      absl::StatusOr<Task*> found = FindTaskForReport(items[i].id, items[i].token);
      if (!found.ok()) {
        out[i] = found.status();
        continue;
      }
      Task* task = *found;
      if (task->token() == 0) {
        out[i] = NeverLeased(items[i].id);
        continue;
      }
      if (task->state != TaskState::kRunning) {
        if (IsTerminal(task->state) && task->state != TaskState::kCanceled) {
          out[i] = AlreadyEnded(items[i].id, task->state);
        }
        continue;  // already back in the queue: nothing to hand back
      }
      if (task->cancel_requested) {
        task->mutable_extra().error = "canceled";
        End(task, TaskState::kCanceled, after);
      } else {
        task->mutable_extra().lease_expires_at = absl::InfinitePast();
        MakeReady(task, after);
      }
    }
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return out;
}

// ───────────────────────────── tasks ─────────────────────────────

absl::StatusOr<TaskInfo> Broker::GetTask(TaskId id) const {
  absl::MutexLock lock(&mu_);
  Task* task = FindTask(id);
  if (task == nullptr) return NotFoundTask(id);
  TaskInfo info = Snapshot(*task, /*with_payload=*/true);
  info.waiting = WaitOf(*task, clock_->Now());
  return info;
}

void Broker::CancelLocked(Task* task, Deferred& after) {
  if (task->state == TaskState::kRunning) {
    if (!task->cancel_requested) {
      task->cancel_requested = true;
      ++change_seq_;
      PersistTask(*task);
      NotifyWatchers(*task, /*final=*/false, after);
    }
    return;
  }
  task->cancel_requested = true;
  task->mutable_extra().error = "canceled";
  End(task, TaskState::kCanceled, after);
}

absl::StatusOr<TaskInfo> Broker::CancelTask(TaskId id, Ticket* ticket) {
  Deferred after;
  absl::StatusOr<TaskInfo> out;
  {
    absl::MutexLock lock(&mu_);
    Task* task = FindTask(id);
    if (task == nullptr) return NotFoundTask(id);
    if (IsTerminal(task->state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "task ", id.ToString(), " has already ended (", TaskStateName(task->state), ")"));
    }
    // With retained = 0 the end drops the record at once: answer from a copy
    // taken before if it is gone.
    TaskInfo info = Snapshot(*task, /*with_payload=*/false);
    CancelLocked(task, after);
    if (Task* kept = FindTask(id); kept != nullptr) {
      info = Snapshot(*kept, /*with_payload=*/false);
    } else {
      info.state = TaskState::kCanceled;
      info.finished_at = clock_->Now();
    }
    out = std::move(info);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return out;
}

absl::StatusOr<TaskPage> Broker::ListTasks(absl::string_view queue_name,
                                           std::optional<TaskState> state,
                                           uint32_t page_size,
                                           absl::string_view page_token) const {
  if (page_size == 0) page_size = 100;
  if (page_size > 1000) {
    return Invalid("page_size", absl::StrCat("is ", page_size, "; must be 1 to 1000"));
  }
  uint64_t after_id = 0;
  if (!page_token.empty()) {
    absl::StatusOr<TaskId> id = TaskId::Parse(page_token);
    if (!id.ok()) {
      return Invalid("page_token", absl::StrCat(Quoted(page_token), " is malformed"));
    }
    after_id = id->value();
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Queue*> queue = FindQueue(queue_name);
  if (!queue.ok()) return queue.status();
  // A scan: listing is an admin operation, kept off the hot paths.
  std::vector<Task*> matches;
  for (Task* task : tasks_) {
    if (task->queue() != *queue || task->id().value() <= after_id) continue;
    if (state && task->state != *state) continue;
    matches.push_back(task);
  }
  TaskPage page;
  size_t n = std::min<size_t>(page_size, matches.size());
  std::partial_sort(matches.begin(), matches.begin() + n, matches.end(),
                    [](Task* a, Task* b) { return a->id() < b->id(); });
  const absl::Time now = clock_->Now();
  for (size_t i = 0; i < n; ++i) {
    page.tasks.push_back(Snapshot(*matches[i], true));
    page.tasks.back().waiting = WaitOf(*matches[i], now);
  }
  if (matches.size() > n) page.next_page_token = matches[n - 1]->id().ToString();
  return page;
}

absl::StatusOr<WatchId> Broker::Watch(TaskId id, WatchCallback cb) {
  TaskInfo info;
  WatchId wid = 0;
  {
    absl::MutexLock lock(&mu_);
    Task* task = FindTask(id);
    if (task == nullptr) return NotFoundTask(id);
    info = Snapshot(*task, /*with_payload=*/false);
    if (!IsTerminal(task->state)) {
      wid = next_watch_id_++;
      watchers_.emplace(wid, std::make_unique<Watcher>(Watcher{id.value(), cb}));
      watchers_by_task_[id.value()].push_back(wid);
      task->watched = true;
    }
  }
  cb(info, /*final=*/wid == 0);
  return wid;
}

void Broker::Unwatch(WatchId id) {
  absl::MutexLock lock(&mu_);
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  uint64_t task_id = it->second->task_id;
  watchers_.erase(it);
  auto t = watchers_by_task_.find(task_id);
  if (t == watchers_by_task_.end()) return;
  auto& ids = t->second;
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  if (ids.empty()) {
    watchers_by_task_.erase(t);
    if (Task* task = FindTask(TaskId(task_id)); task != nullptr) task->watched = false;
  }
}

// ───────────────────────────── queues ─────────────────────────────

QueueInfo Broker::InfoOf(const Queue& queue) const {
  QueueInfo info;
  info.config = queue.config();
  info.paused = queue.paused;
  for (int s = 0; s < 8; ++s) info.stats.by_state[s] = queue.count(static_cast<TaskState>(s));
  if (queue.count(TaskState::kReady) > 0) {
    uint64_t seq = queue.OldestReadySeq();
    if (seq != 0) {
      info.stats.oldest_ready_age =
          std::max(absl::ZeroDuration(),
                   clock_->Now() - absl::FromUnixMicros(static_cast<int64_t>(seq)));
    }
  }
  if (auto it = lease_waiters_by_queue_.find(queue.name());
      it != lease_waiters_by_queue_.end()) {
    info.stats.waiting_workers = static_cast<uint32_t>(it->second.size());
  }
  info.stats.waiting_submits = static_cast<uint32_t>(queue.submit_waiter_count());
  const absl::Time now = clock_->Now();
  // Queues are owned here; counting refreshes lazily kept limiter state.
  const_cast<Queue&>(queue).CountBlocked(now, NoWorker(queue, now), info.stats.blocked);
  info.stats.blocked[3] = queue.count(TaskState::kScheduled);  // not_due
  return info;
}

absl::StatusOr<QueueInfo> Broker::CreateQueue(const QueueConfig& config, bool paused,
                                              Ticket* ticket) {
  if (absl::Status s = ValidateQueueConfig(config); !s.ok()) return s;
  Deferred after;
  QueueInfo info;
  {
    absl::MutexLock lock(&mu_);
    if (queues_.contains(config.name)) {
      return absl::AlreadyExistsError(
          absl::StrCat("queue ", Quoted(config.name), " already exists"));
    }
    if (queues_.size() >= options_.max_queues) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot create queue ", Quoted(config.name), ": the broker holds ",
          queues_.size(), " queues, the limit (--max-queues)"));
    }
    std::unique_ptr<Queue> queue = NewQueue(config);
    queue->paused = paused;
    Queue* raw = queue.get();
    queues_.emplace(config.name, std::move(queue));
    PersistQueue(*raw);
    info = InfoOf(*raw);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<QueueInfo> Broker::UpdateQueue(absl::string_view name,
                                              const QueueUpdate& u, Ticket* ticket) {
  Deferred after;
  QueueInfo info;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Queue*> found = FindQueue(name);
    if (!found.ok()) return found.status();
    Queue* queue = *found;
    QueueConfig c = queue->config();
    if (u.capacity) c.capacity = *u.capacity;
    if (u.full_policy) c.full_policy = *u.full_policy;
    if (u.retry) c.retry = u.retry->ApplyTo(c.retry);
    if (u.default_timeout) c.default_timeout = *u.default_timeout;
    if (u.lease_duration) c.lease_duration = *u.lease_duration;
    if (u.max_crashes) c.max_crashes = *u.max_crashes;
    if (u.result_ttl) c.result_ttl = *u.result_ttl;
    if (u.retained) c.retained = *u.retained;
    ApplyLimitsUpdate(u.limits, c.limits);
    if (absl::Status s = ValidateQueueConfig(c); !s.ok()) return s;
    queue->SetConfig(std::move(c), clock_->Now());
    PersistQueue(*queue);
    ServeSubmitWaiters(queue, after);
    ServeLeaseWaiters(queue, after);
    EnforceRetention(queue, after);
    info = InfoOf(*queue);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<QueueInfo> Broker::GetQueue(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Queue*> queue = FindQueue(name);
  if (!queue.ok()) return queue.status();
  return InfoOf(**queue);
}

std::vector<QueueInfo> Broker::ListQueues() const {
  absl::MutexLock lock(&mu_);
  std::vector<QueueInfo> out;
  out.reserve(queues_.size());
  for (const auto& [name, queue] : queues_) out.push_back(InfoOf(*queue));
  return out;
}

absl::StatusOr<QueueInfo> Broker::PauseQueue(absl::string_view name, Ticket* ticket) {
  Deferred after;
  QueueInfo info;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Queue*> queue = FindQueue(name);
    if (!queue.ok()) return queue.status();
    (*queue)->paused = true;
    PersistQueue(**queue);
    info = InfoOf(**queue);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<QueueInfo> Broker::ResumeQueue(absl::string_view name, Ticket* ticket) {
  Deferred after;
  QueueInfo info;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Queue*> queue = FindQueue(name);
    if (!queue.ok()) return queue.status();
    (*queue)->paused = false;
    PersistQueue(**queue);
    ServeLeaseWaiters(*queue, after);
    info = InfoOf(**queue);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<uint64_t> Broker::PurgeQueue(absl::string_view name, Ticket* ticket) {
  Deferred after;
  uint64_t purged = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Queue*> found = FindQueue(name);
    if (!found.ok()) return found.status();
    Queue* queue = *found;
    std::vector<Task*> victims;
    for (Task* task : tasks_) {
      if (task->queue() == queue && (task->state == TaskState::kReady ||
                                     task->state == TaskState::kScheduled)) {
        victims.push_back(task);
      }
    }
    for (Task* task : victims) {
      PersistDropped(task->id().value());
      Drop(task, "purged", after);
    }
    purged = victims.size();
    ServeSubmitWaiters(queue, after);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return purged;
}

absl::StatusOr<TaskPage> Broker::ListDeadLetters(absl::string_view queue,
                                                 uint32_t page_size,
                                                 absl::string_view page_token) const {
  return ListTasks(queue, TaskState::kDead, page_size, page_token);
}

std::vector<Task*> Broker::DeadTasks(Queue* queue, const std::vector<TaskId>& ids) const {
  std::vector<Task*> out;
  if (ids.empty()) {
    for (Task* task : tasks_) {
      if (task->queue() == queue && task->state == TaskState::kDead) out.push_back(task);
    }
    std::sort(out.begin(), out.end(), [](Task* a, Task* b) { return a->id() < b->id(); });
  } else {
    for (TaskId id : ids) {
      Task* task = FindTask(id);
      if (task != nullptr && task->queue() == queue && task->state == TaskState::kDead) {
        out.push_back(task);
      }
    }
  }
  return out;
}

absl::StatusOr<uint64_t> Broker::RequeueDeadLetters(absl::string_view name,
                                                    const std::vector<TaskId>& ids,
                                                    Ticket* ticket) {
  Deferred after;
  uint64_t requeued = 0;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return absl::UnavailableError("the broker is draining");
    absl::StatusOr<Queue*> found = FindQueue(name);
    if (!found.ok()) return found.status();
    Queue* queue = *found;
    std::vector<Task*> dead = DeadTasks(queue, ids);
    for (Task* task : dead) {
      if (queue->full()) {
        if (requeued == 0) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "queue ", Quoted(name), " is full (capacity ", queue->config().capacity,
              " unfinished tasks); no dead letter was requeued"));
        }
        break;
      }
      --queue->ended_live;
      task->set_ended_stamp(0);  // its retention entries are stale now
      task->failures = 0;
      task->crashes = 0;
      task->cancel_requested = false;
      task->mutable_extra().finished_at = absl::InfinitePast();
      MakeReady(task, after);
      PersistTask(*task);
      WorkflowStep(task, after);  // a group member counts as running again
      ++requeued;
    }
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return requeued;
}

absl::StatusOr<uint64_t> Broker::PurgeDeadLetters(absl::string_view name,
                                                  const std::vector<TaskId>& ids,
                                                  Ticket* ticket) {
  Deferred after;
  uint64_t purged = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Queue*> found = FindQueue(name);
    if (!found.ok()) return found.status();
    std::vector<Task*> dead = DeadTasks(*found, ids);
    for (Task* task : dead) {
      PersistDropped(task->id().value());
      Drop(task, "purged", after);
    }
    purged = dead.size();
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return purged;
}


// ───────────────────────────── durability ─────────────────────────────

void Broker::PersistTask(const Task& task) {
  if (journal_ == nullptr) return;
  batch_.push_back(EncodeUpdated(task));
  batch_updated_.push_back(task.id().value());
}

void Broker::PersistQueue(const Queue& queue) {
  if (journal_ == nullptr) return;
  batch_.push_back(EncodeQueue(queue.config(), queue.paused));
}

void Broker::PersistDropped(uint64_t id) {
  if (journal_ == nullptr) return;
  batch_.push_back(EncodeDropped({id}));
}

void Broker::OnCommit(std::function<void(absl::Status)> cb) {
  batch_callbacks_.push_back(std::move(cb));
}

Ticket Broker::Commit(Deferred& after) {
  while (!to_serve_.empty()) {
    Queue* queue = *to_serve_.begin();
    to_serve_.erase(to_serve_.begin());
    ServeLeaseWaiters(queue, after);
  }
  if (journal_ == nullptr) {
    for (auto& cb : batch_callbacks_) {
      after.push_back([cb = std::move(cb)] { cb(absl::OkStatus()); });
    }
    batch_callbacks_.clear();
    return last_ticket_;
  }
  if (batch_.empty()) {
    // Nothing of ours to write: answer once everything written before is
    // durable (an answer may depend on it, e.g. a repeated report).
    if (!batch_callbacks_.empty()) {
      if (durable_ticket_ >= last_ticket_) {
        for (auto& cb : batch_callbacks_) {
          after.push_back([cb = std::move(cb)] { cb(absl::OkStatus()); });
        }
      } else {
        auto& waiting = waiting_[last_ticket_];
        for (auto& cb : batch_callbacks_) waiting.push_back(std::move(cb));
      }
      batch_callbacks_.clear();
    }
    return last_ticket_;
  }
  const Ticket ticket = ++last_ticket_;
  if (!batch_callbacks_.empty()) {
    waiting_[ticket] = std::move(batch_callbacks_);
    batch_callbacks_.clear();
  }
  // Appended under the lock, so the journal's order is the order of the
  // changes. Append never blocks on disk; its callback runs on the journal's
  // writer thread, never inline here (the journal is open while we serve).
  journal_->Append(std::move(batch_),
                   [this, ticket, submitted = std::move(batch_submitted_),
                    updated = std::move(batch_updated_)](absl::Status status) mutable {
                     BatchDone(ticket, std::move(status), std::move(submitted),
                               std::move(updated));
                   });
  batch_.clear();
  batch_submitted_.clear();
  batch_updated_.clear();
  return ticket;
}

void Broker::RemoveUndurable(Task* task) {
  // Its record never reached the disk: it never existed for the client.
  Queue* queue = task->queue();
  queue->CountOut(task->state);
  if (task->state == TaskState::kReady) queue->LeftReady(*task);
  if (task->state == TaskState::kRunning) {
    --running_;
    queue->SlotFreed(*task);
  }
  ForgetIdempotencyKey(task);
  if (IsTerminal(task->state)) --queue->ended_live;
  ++change_seq_;
  UnlinkTask(task->id().value(), /*undurable=*/true);
  tasks_.erase(task->id().value());
  Task::Destroy(task);
}

void Broker::BatchDone(Ticket ticket, absl::Status status, std::vector<uint64_t> submitted,
                       std::vector<uint64_t> updated) {
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    for (uint64_t id : submitted) {
      Task* task = FindTask(TaskId(id));
      if (task == nullptr || !task->pending_durable) continue;
      if (status.ok()) {
        Activate(task, after);
      } else {
        NotifyWatchers(*task, /*final=*/true, after);
        RemoveUndurable(task);
      }
    }
    if (!status.ok()) {
      LogError("journal write failed; the changes it held were not acknowledged",
               {{"error", status}, {"tasks", static_cast<unsigned long>(updated.size())}});
      for (uint64_t id : updated) unpersisted_.insert(id);
      failed_tickets_[ticket] = status;
      while (failed_tickets_.size() > 10'000) failed_tickets_.erase(failed_tickets_.begin());
    }
    durable_ticket_ = std::max(durable_ticket_, ticket);
    while (!waiting_.empty() && waiting_.begin()->first <= ticket) {
      const bool own = waiting_.begin()->first == ticket;
      for (auto& cb : waiting_.begin()->second) {
        after.push_back([cb = std::move(cb), s = own ? status : absl::OkStatus()] { cb(s); });
      }
      waiting_.erase(waiting_.begin());
    }
    // Activation may have ended tasks (an expiry already past): record that.
    Commit(after);
  }
  Run(after);
}

void Broker::WhenDurable(Ticket ticket, std::function<void(absl::Status)> done) {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (journal_ != nullptr && ticket > durable_ticket_) {
      waiting_[ticket].push_back(std::move(done));
      return;
    }
    if (auto it = failed_tickets_.find(ticket); it != failed_tickets_.end()) status = it->second;
  }
  done(status);
}

uint32_t Broker::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

absl::Status Broker::Apply(const conveyor::internal::JournalEntry& e) {
  namespace pb = ::conveyor::internal;
  switch (e.kind_case()) {
    case pb::JournalEntry::kStarted:
      epoch_ = std::max(epoch_, e.started().epoch());
      return absl::OkStatus();
    case pb::JournalEntry::kBarrier:
    case pb::JournalEntry::KIND_NOT_SET:
      return absl::OkStatus();
    case pb::JournalEntry::kGroup:
    case pb::JournalEntry::kChain:
      return ApplyWorkflow(e);
    case pb::JournalEntry::kSchedule:
      return ApplySchedule(e.schedule());
    case pb::JournalEntry::kQueue: {
      QueueConfig config = QueueConfigFromRecord(e.queue());
      auto it = queues_.find(config.name);
      if (it == queues_.end()) {
        std::unique_ptr<Queue> queue = NewQueue(config);
        queue->paused = e.queue().paused();
        queues_.emplace(config.name, std::move(queue));
      } else {
        it->second->SetConfig(config, clock_->Now());
        it->second->paused = e.queue().paused();
      }
      return absl::OkStatus();
    }
    case pb::JournalEntry::kSubmitted: {
      const pb::TaskSubmitted& r = e.submitted();
      auto q = queues_.find(r.queue());
      if (q == queues_.end()) {
        // The queue's record was in a write that failed (a full disk) while
        // later writes, with this task, succeeded. The task was acknowledged:
        // keep it, on a queue with the default settings, as auto-creation
        // would have made it, and record the queue again once recovered.
        if (!ValidateQueueName(r.queue()).ok()) {
          return absl::DataLossError(absl::StrCat("journal: task ", TaskId(r.id()).ToString(),
                                                  " names a malformed queue ", Quoted(r.queue())));
        }
        QueueConfig config = options_.queue_defaults;
        config.name = r.queue();
        q = queues_.emplace(config.name, NewQueue(config)).first;
        lost_queue_records_.push_back(q->second.get());
      }
      if (FindTask(TaskId(r.id())) != nullptr) return absl::OkStatus();  // already known
      Queue* queue = q->second.get();
      Task* task = Task::Create(TaskId(r.id()), queue, InternType(r.type()), r.payload(),
                                absl::FromUnixMicros(r.created_us()), r.idempotency_key());
      task->priority = static_cast<uint8_t>(r.priority());
      const bool extra = r.headers_size() > 0 || r.not_before_us() != 0 || r.expires_us() != 0 ||
                         r.has_retry() || r.timeout_us() != 0 || !r.rate_key().empty() ||
                         !r.concurrency_key().empty() || r.has_fallback_result();
      if (extra) {
        TaskExtra& x = task->mutable_extra();
        for (const pb::Header& h : r.headers()) x.headers.emplace_back(h.key(), h.value());
        if (r.not_before_us() != 0) x.not_before = absl::FromUnixMicros(r.not_before_us());
        if (r.expires_us() != 0) x.expires_at = absl::FromUnixMicros(r.expires_us());
        if (r.has_retry()) x.retry = RetryFromRecord(r.retry());
        if (r.timeout_us() != 0) x.timeout = absl::Microseconds(r.timeout_us());
        x.rate_key = r.rate_key();
        x.concurrency_key = r.concurrency_key();
        if (r.has_fallback_result()) x.fallback_result = r.fallback_result();
      }
      task->state = TaskState::kScheduled;  // placed by FinishRecovery
      queue->CountIn(TaskState::kScheduled);
      tasks_.insert(task);
      IndexIdempotencyKey(task);
      last_id_ = std::max<uint64_t>(last_id_, r.id());
      LinkFromRecord(r, task);
      if (!r.schedule().empty()) NoteScheduleTick(r.schedule(), r.schedule_tick_us(), r.id());
      return absl::OkStatus();
    }
    case pb::JournalEntry::kUpdated: {
      const pb::TaskUpdated& r = e.updated();
      Task* task = FindTask(TaskId(r.id()));
      if (task == nullptr) return absl::OkStatus();  // dropped, or its submit never stored
      if (r.state() > static_cast<uint32_t>(TaskState::kFallback) ||
          r.state() == static_cast<uint32_t>(TaskState::kRunning)) {
        return absl::DataLossError(absl::StrCat("journal: task ", TaskId(r.id()).ToString(),
                                                " has state ", r.state()));
      }
      Queue* queue = task->queue();
      if (IsTerminal(task->state)) --queue->ended_live;
      queue->CountOut(task->state);
      task->state = static_cast<TaskState>(r.state());
      queue->CountIn(task->state);
      task->failures = static_cast<uint16_t>(std::min<uint32_t>(r.failures(), UINT16_MAX));
      task->crashes = static_cast<uint8_t>(std::min<uint32_t>(r.crashes(), UINT8_MAX));
      if (r.token() != 0) task->set_token(r.token());
      task->cancel_requested = r.cancel_requested();
      // A queued task that never ran keeps no extra (snapshots write an
      // update for every task): the record stays compact after a restart.
      const bool needs_extra = task->extra() != nullptr || r.not_before_us() != 0 ||
                               r.started_us() != 0 || r.finished_us() != 0 ||
                               !r.result().empty() || !r.error().empty();
      if (needs_extra) {
        TaskExtra& x = task->mutable_extra();
        if (r.not_before_us() != 0) x.not_before = absl::FromUnixMicros(r.not_before_us());
        if (r.started_us() != 0) x.started_at = absl::FromUnixMicros(r.started_us());
        x.finished_at = r.finished_us() != 0 ? absl::FromUnixMicros(r.finished_us())
                                             : absl::InfinitePast();
        x.result = r.result();
        x.error = r.error();
      }
      if (IsTerminal(task->state)) ++queue->ended_live;
      NoteMemberState(*task);
      return absl::OkStatus();
    }
    case pb::JournalEntry::kDropped: {
      for (uint64_t id : e.dropped().ids()) {
        Task* task = FindTask(TaskId(id));
        if (task == nullptr) continue;
        Queue* queue = task->queue();
        if (!IsTerminal(task->state)) {
          // Purged while queued: it ended CANCELED (for its group or chain).
          queue->CountOut(task->state);
          task->state = TaskState::kCanceled;
          task->mutable_extra().error = "purged";
          queue->CountIn(task->state);
          ++queue->ended_live;
          NoteMemberState(*task);
        }
        if (IsTerminal(task->state)) --queue->ended_live;
        queue->CountOut(task->state);
        ForgetIdempotencyKey(task);
        UnlinkTask(id, /*undurable=*/false);
        tasks_.erase(id);
        Task::Destroy(task);
      }
      return ApplyWorkflow(e);
    }
  }
  return absl::OkStatus();
}

void Broker::FinishRecovery(Deferred& after) {
  const absl::Time now = clock_->Now();
  // Ended tasks go back on their queue's retention list in the order they
  // ended; live ones are placed by their state.
  std::vector<Task*> ended;
  std::vector<Task*> live;
  for (Task* task : tasks_) (IsTerminal(task->state) ? ended : live).push_back(task);
  std::sort(ended.begin(), ended.end(), [](Task* a, Task* b) {
    const absl::Time fa = a->extra() ? a->extra()->finished_at : absl::InfinitePast();
    const absl::Time fb = b->extra() ? b->extra()->finished_at : absl::InfinitePast();
    return fa != fb ? fa < fb : a->id() < b->id();
  });
  for (Task* task : ended) {
    Queue* queue = task->queue();
    task->set_ended_stamp(static_cast<int64_t>(++end_counter_));
    queue->ended().emplace_back(task->id().value(), task->ended_stamp());
  }
  std::sort(live.begin(), live.end(), [](Task* a, Task* b) { return a->id() < b->id(); });
  for (Task* task : live) {
    if (task->cancel_requested) {
      // Its cancel was accepted while it ran; the run is over now.
      task->mutable_extra().error = "canceled";
      End(task, TaskState::kCanceled, after);
      continue;
    }
    if (task->extra() != nullptr && task->extra()->expires_at != absl::InfiniteFuture() &&
        task->token() == 0) {
      PushTimer(task->extra()->expires_at, kExpire, task->id().value(), 0);
    }
    if (task->state == TaskState::kScheduled && task->extra() != nullptr &&
        task->extra()->not_before != absl::InfinitePast() && task->extra()->not_before > now) {
      Schedule(task, task->extra()->not_before);
    } else {
      MakeReady(task, after);
    }
  }
  for (Queue* queue : lost_queue_records_) {
    LogWarning("journal: a queue's record was lost in a failed write; recreated with the "
               "default settings",
               {{"queue", queue->name()}});
    PersistQueue(*queue);
  }
  lost_queue_records_.clear();
  RecoverWorkflows(after);
  RecoverSchedules(after);
  for (auto& [name, queue] : queues_) EnforceRetention(queue.get(), after);
}

absl::Status Broker::Recover() {
  if (journal_ == nullptr) return absl::OkStatus();
  Deferred after;
  uint64_t records = 0;
  {
    absl::MutexLock lock(&mu_);
    auto apply = [&](absl::string_view data) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
      absl::StatusOr<conveyor::internal::JournalEntry> entry = DecodeEntry(data);
      if (!entry.ok()) return entry.status();
      ++records;
      return Apply(*entry);
    };
    absl::Status s = journal_->Recover(
        [&](const journal::JournalSnapshot& snapshot) -> absl::Status {
          // A snapshot is a sequence of length-prefixed entries.
          absl::string_view rest = snapshot.state;
          while (!rest.empty()) {
            if (rest.size() < 4) return absl::DataLossError("journal snapshot: torn entry");
            uint32_t n = static_cast<uint8_t>(rest[0]) | static_cast<uint8_t>(rest[1]) << 8 |
                         static_cast<uint8_t>(rest[2]) << 16 |
                         static_cast<uint32_t>(static_cast<uint8_t>(rest[3])) << 24;
            if (rest.size() - 4 < n) return absl::DataLossError("journal snapshot: torn entry");
            if (absl::Status st = apply(rest.substr(4, n)); !st.ok()) return st;
            rest.remove_prefix(4 + n);
          }
          return absl::OkStatus();
        },
        [&](const journal::JournalRecord& record) { return apply(record.data); });
    if (!s.ok()) return s;
    FinishRecovery(after);
    ++epoch_;
    batch_.push_back(EncodeStarted(epoch_, clock_->Now()));
    // Queues first: records of the recovery (cancels) refer to tasks only.
    Commit(after);
  }
  Run(after);
  // Serve only once the new epoch is durable: tokens of this run must never
  // repeat one issued before a crash.
  absl::Notification durable;
  absl::Status status;
  Ticket ticket;
  {
    absl::MutexLock lock(&mu_);
    ticket = last_ticket_;
  }
  WhenDurable(ticket, [&](absl::Status s) {
    status = s;
    durable.Notify();
  });
  durable.WaitForNotification();
  LogInfo("journal recovered", {{"records", static_cast<unsigned long long>(records)},
                                {"tasks", static_cast<unsigned long long>(task_count())},
                                {"epoch", static_cast<unsigned long long>(epoch())}});
  return status;
}

absl::Status Broker::WriteSnapshot(size_t* bytes) {
  if (journal_ == nullptr) return absl::OkStatus();
  std::string state;
  auto add = [&state](absl::string_view piece) {
    const uint32_t n = static_cast<uint32_t>(piece.size());
    const char len[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                         static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
    state.append(len, 4);
    state.append(piece.data(), piece.size());
  };
  journal::SequenceNumber cut;
  Ticket ticket;
  std::vector<uint64_t> ids;
  {
    absl::MutexLock lock(&mu_);
    // Under the lock, so what is taken here is exactly the state at the cut.
    absl::StatusOr<journal::SequenceNumber> c = journal_->BeginSnapshot();
    if (!c.ok()) return c.status();
    cut = *c;
    ticket = last_ticket_;
    add(EncodeStarted(epoch_, clock_->Now()));
    for (const auto& [name, queue] : queues_) add(EncodeQueue(queue->config(), queue->paused));
    // Groups, chains and schedules before the tasks that name them.
    std::vector<std::string> workflows;
    SnapshotWorkflows(workflows);
    for (const std::string& w : workflows) add(w);
    for (const auto& [name, schedule] : schedules_) {
      add(EncodeScheduleRecord(*schedule, /*deleted=*/false));
    }
    ids.reserve(tasks_.size());
    for (const Task* task : tasks_) ids.push_back(task->id().value());
  }
  std::sort(ids.begin(), ids.end());
  // Wait until every write before the cut has finished: a task whose submit
  // failed to reach the disk is gone by then, and is left out below.
  absl::Notification written;
  WhenDurable(ticket, [&](absl::Status) { written.Notify(); });
  written.WaitForNotification();
  const size_t chunk = std::max<size_t>(options_.snapshot_chunk_tasks, 1);
  const size_t header_bytes = state.size();
  for (size_t begin = 0; begin < ids.size(); begin += chunk) {
    if (begin > 0) {
      // absl::Mutex lets the thread that unlocks take the lock straight back:
      // step aside so that the calls waiting for it go first.
      absl::SleepFor(absl::Microseconds(100));
      if (options_.between_snapshot_chunks) options_.between_snapshot_chunks();
    }
    if (begin == chunk) {
      // Room for the rest at the first chunk's size per task, plus a tenth:
      // growing by doubling would hold two copies at once.
      const size_t per_task = (state.size() - header_bytes) / chunk + 1;
      state.reserve(state.size() + per_task * (ids.size() - begin) / 10 * 11);
    }
    absl::MutexLock lock(&mu_);
    for (size_t i = begin; i < std::min(ids.size(), begin + chunk); ++i) {
      const Task* task = FindTask(TaskId(ids[i]));
      if (task == nullptr) continue;  // dropped since the cut (a record says so)
      add(EncodeSubmitted(*task, type_names_[task->type_id()], LinkOf(ids[i])));
      add(EncodeUpdated(*task));
    }
  }
  ids = {};
  if (bytes != nullptr) *bytes = state.size();
  return journal_->WriteSnapshot(cut, state);
}

// ───────────────────────────── time ─────────────────────────────

void Broker::CheckLease(Task* task, absl::Time now, Deferred& after) {
  TaskExtra& x = task->mutable_extra();
  const absl::Time deadline_end = x.attempt_deadline + options_.timeout_grace;
  Queue* queue = task->queue();
  if (now >= deadline_end) {
    RetryOrDie(task,
               absl::StrCat("timeout: the attempt ran past its timeout of ",
                            absl::FormatDuration(TimeoutOf(*task)), " (plus ",
                            absl::FormatDuration(options_.timeout_grace), " grace)"),
               /*retryable=*/true, after);
    return;
  }
  if (now >= x.lease_expires_at) {
    if (listener_ != nullptr) listener_->OnLeaseExpired(*queue, *task);
    if (task->crashes < UINT8_MAX) ++task->crashes;
    x.error = absl::StrCat("lease expired (worker ", x.worker_id, " stopped heartbeating)");
    if (task->cancel_requested) {
      End(task, TaskState::kCanceled, after);
    } else if (task->crashes >= queue->config().max_crashes) {
      x.error = absl::StrCat("lease expired ", task->crashes,
                             " times, the crash budget (max_crashes); last worker ",
                             x.worker_id);
      End(task, TaskState::kDead, after);
    } else {
      MakeReady(task, after);
      x.lease_lapsed = true;
      PersistTask(*task);  // the crash budget spent
    }
    return;
  }
  PushTimer(std::min(x.lease_expires_at, deadline_end), kLeaseCheck, task->id().value(),
            task->token());
}

void Broker::FireTimer(const Timer& timer, absl::Time now, Deferred& after) {
  switch (timer.kind) {
    case kDue:
      if (Task* task = TimerTask(timer); task != nullptr) MakeReady(task, after);
      break;
    case kLeaseCheck:
      if (Task* task = TimerTask(timer); task != nullptr) CheckLease(task, now, after);
      break;
    case kExpire:
      if (Task* task = TimerTask(timer); task != nullptr) {
        task->mutable_extra().error = "expired before it was leased";
        End(task, TaskState::kExpired, after);
      }
      break;
    case kRetention: {
      Queue* queue = reinterpret_cast<Queue*>(static_cast<uintptr_t>(timer.key));
      if (queue->armed_retention_us == timer.stamp) {
        queue->armed_retention_us = 0;
        EnforceRetention(queue, after);  // drops what is due, arms the next
      }
      break;
    }
    case kLeaseWait: {
      if (std::unique_ptr<LeaseWaiter> w = RemoveLeaseWaiter(timer.key); w != nullptr) {
        after.push_back([done = std::move(w->done)] { done(std::vector<LeasedTask>{}); });
      }
      break;
    }
    case kQueueWake: {
      Queue* queue = reinterpret_cast<Queue*>(static_cast<uintptr_t>(timer.key));
      if (absl::ToUnixMicros(queue->armed_wake) == timer.stamp) {
        queue->armed_wake = absl::InfinitePast();
      }
      queue->Wake(now);
      ServeLeaseWaiters(queue, after);
      ArmWake(queue, now);
      break;
    }
    case kWorkflowDrop:
      DropWorkflow(timer.key, after);
      break;
    case kWorkflowRetry:
      RetryWorkflows(after);
      break;
    case kScheduleTick:
      OnScheduleTimer(timer.key, timer.stamp, after);
      break;
    case kSubmitWait: {
      auto it = submit_waiters_.find(timer.key);
      if (it != submit_waiters_.end()) {
        std::unique_ptr<SubmitWaiter> w = std::move(it->second);
        submit_waiters_.erase(it);
        auto& ids = w->queue->submit_waiters();
        ids.erase(std::remove(ids.begin(), ids.end(), timer.key), ids.end());
        if (listener_ != nullptr) listener_->OnRejected(w->queue->name(), "full", 1);
        after.push_back([done = std::move(w->done), name = w->queue->name(),
                         cap = w->queue->config().capacity] {
          done(absl::DeadlineExceededError(absl::StrCat(
              "queue ", Quoted(name), " stayed full (capacity ", cap,
              ") until the call's deadline")));
        });
      }
      break;
    }
  }
}

void Broker::Tick() {
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    const int64_t now_us = absl::ToUnixMicros(now);
    while (!timers_.empty() && timers_.front().when_us <= now_us) {
      std::pop_heap(timers_.begin(), timers_.end(), std::greater<>());
      Timer timer = timers_.back();
      timers_.pop_back();
      FireTimer(timer, now, after);
    }
    // Rewrite the state of tasks whose last write failed (a full disk).
    if (journal_ != nullptr && !unpersisted_.empty()) {
      std::vector<uint64_t> ids(unpersisted_.begin(), unpersisted_.end());
      unpersisted_.clear();
      for (uint64_t id : ids) {
        if (Task* task = FindTask(TaskId(id)); task != nullptr && !task->pending_durable) {
          PersistTask(*task);
        }
      }
    }
    Commit(after);
  }
  Run(after);
}

size_t Broker::timer_count() const {
  absl::MutexLock lock(&mu_);
  return timers_.size();
}

absl::Time Broker::NextTimer() const {
  absl::MutexLock lock(&mu_);
  if (timers_.empty()) return absl::InfiniteFuture();
  return absl::FromUnixMicros(timers_.front().when_us);
}

void Broker::BeginDrain() {
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return;
    draining_ = true;
    for (auto& [id, w] : lease_waiters_) {
      after.push_back([done = std::move(w->done)] { done(std::vector<LeasedTask>{}); });
    }
    lease_waiters_.clear();
    lease_waiters_by_queue_.clear();
    for (auto& [id, w] : submit_waiters_) {
      after.push_back([done = std::move(w->done)] {
        done(absl::UnavailableError("the broker is draining; the submit was not accepted"));
      });
    }
    submit_waiters_.clear();
    for (auto& [name, queue] : queues_) queue->submit_waiters().clear();
  }
  Run(after);
}

bool Broker::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

uint64_t Broker::running_count() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

size_t Broker::task_count() const {
  absl::MutexLock lock(&mu_);
  return tasks_.size();
}

}  // namespace conveyor::server
