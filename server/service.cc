#include "server/service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/security.h"
#include "google/protobuf/arena.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/support/message_allocator.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace conveyor::server {
namespace v1 = ::conveyor::v1;
namespace {

// Request and response of one call on a protobuf arena: parsing a batch of
// tasks and building its answer take a few block allocations instead of
// several per task, all freed at once when the call ends. For the calls
// that carry tasks in bulk (submits, leases and reports).
template <typename Req, typename Resp>
class ArenaMessages final : public grpc::MessageAllocator<Req, Resp> {
 public:
  grpc::MessageHolder<Req, Resp>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Req, Resp> {
   public:
    Holder() : arena_(Options()) {
      this->set_request(google::protobuf::Arena::CreateMessage<Req>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Resp>(&arena_));
    }
    void Release() override { delete this; }

   private:
    static google::protobuf::ArenaOptions Options() {
      google::protobuf::ArenaOptions o;
      o.start_block_size = 4096;
      o.max_block_size = 256 << 10;
      return o;
    }
    google::protobuf::Arena arena_;
  };
};

// The request of a call whose messages come from ArenaMessages. gRPC hands
// it to the handler as const, but it is that call's own object, and nothing
// reads it after the handler, so a submit handler moves the task payloads
// out of it instead of copying them.
template <typename Req>
Req* Owned(const Req* req) {
  return const_cast<Req*>(req);
}

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

// A protobuf Duration as the API allows it: well-formed, with a name for errors.
absl::StatusOr<absl::Duration> DurationField(const google::protobuf::Duration& d,
                                             absl::string_view field) {
  if (d.nanos() <= -1'000'000'000 || d.nanos() >= 1'000'000'000 ||
      (d.seconds() > 0 && d.nanos() < 0) || (d.seconds() < 0 && d.nanos() > 0) ||
      d.seconds() > 315'576'000'000 || d.seconds() < -315'576'000'000) {
    return Invalid(field, absl::StrCat("is malformed (seconds ", d.seconds(), ", nanos ",
                                       d.nanos(), ")"));
  }
  return FromProto(d);
}

absl::StatusOr<absl::Time> TimeField(const google::protobuf::Timestamp& t,
                                     absl::string_view field) {
  // 0001-01-01 to 9999-12-31, as google.protobuf.Timestamp defines.
  if (t.nanos() < 0 || t.nanos() >= 1'000'000'000 || t.seconds() < -62'135'596'800 ||
      t.seconds() > 253'402'300'799) {
    return Invalid(field, absl::StrCat("is malformed (seconds ", t.seconds(), ", nanos ",
                                       t.nanos(), ")"));
  }
  return FromProto(t);
}

absl::StatusOr<RetryOverride> RetryFromProto(const v1::RetryPolicy& p,
                                             absl::string_view field) {
  RetryOverride r;
  if (p.has_max_attempts()) r.max_attempts = p.max_attempts();
  if (p.has_initial_backoff()) {
    absl::StatusOr<absl::Duration> d =
        DurationField(p.initial_backoff(), absl::StrCat(field, ".initial_backoff"));
    if (!d.ok()) return d.status();
    r.initial_backoff = *d;
  }
  if (p.has_max_backoff()) {
    absl::StatusOr<absl::Duration> d =
        DurationField(p.max_backoff(), absl::StrCat(field, ".max_backoff"));
    if (!d.ok()) return d.status();
    r.max_backoff = *d;
  }
  if (p.has_multiplier()) r.multiplier = p.multiplier();
  if (p.has_jitter()) r.jitter = p.jitter();
  if (r.max_attempts && *r.max_attempts == 0) {
    return Invalid(absl::StrCat(field, ".max_attempts"), "is 0; must be 1 to 1000");
  }
  return r;
}

v1::TaskState StateToProto(TaskState s) {
  switch (s) {
    case TaskState::kScheduled: return v1::TASK_STATE_SCHEDULED;
    case TaskState::kReady: return v1::TASK_STATE_READY;
    case TaskState::kRunning: return v1::TASK_STATE_RUNNING;
    case TaskState::kSucceeded: return v1::TASK_STATE_SUCCEEDED;
    case TaskState::kDead: return v1::TASK_STATE_DEAD;
    case TaskState::kCanceled: return v1::TASK_STATE_CANCELED;
    case TaskState::kExpired: return v1::TASK_STATE_EXPIRED;
    case TaskState::kFallback: return v1::TASK_STATE_FALLBACK;
  }
  return v1::TASK_STATE_UNSPECIFIED;
}

absl::StatusOr<std::optional<TaskState>> StateFromProto(v1::TaskState s) {
  switch (s) {
    case v1::TASK_STATE_UNSPECIFIED: return std::optional<TaskState>();
    case v1::TASK_STATE_SCHEDULED: return std::optional<TaskState>(TaskState::kScheduled);
    case v1::TASK_STATE_READY: return std::optional<TaskState>(TaskState::kReady);
    case v1::TASK_STATE_RUNNING: return std::optional<TaskState>(TaskState::kRunning);
    case v1::TASK_STATE_SUCCEEDED: return std::optional<TaskState>(TaskState::kSucceeded);
    case v1::TASK_STATE_DEAD: return std::optional<TaskState>(TaskState::kDead);
    case v1::TASK_STATE_CANCELED: return std::optional<TaskState>(TaskState::kCanceled);
    case v1::TASK_STATE_EXPIRED: return std::optional<TaskState>(TaskState::kExpired);
    case v1::TASK_STATE_FALLBACK: return std::optional<TaskState>(TaskState::kFallback);
    default: break;
  }
  return Invalid("state", absl::StrCat("is ", static_cast<int>(s), ", not a task state"));
}

void RetryToProto(const RetryPolicy& r, v1::RetryPolicy* out) {
  out->set_max_attempts(r.max_attempts);
  ToProto(r.initial_backoff, out->mutable_initial_backoff());
  ToProto(r.max_backoff, out->mutable_max_backoff());
  out->set_multiplier(r.multiplier);
  out->set_jitter(r.jitter);
}

absl::StatusOr<std::vector<TaskId>> ParseIds(const google::protobuf::RepeatedPtrField<std::string>& ids) {
  std::vector<TaskId> out;
  out.reserve(ids.size());
  for (const std::string& s : ids) {
    absl::StatusOr<TaskId> id = TaskId::Parse(s);
    if (!id.ok()) return id.status();
    out.push_back(*id);
  }
  return out;
}

absl::StatusOr<FullPolicy> FullPolicyFromProto(v1::FullPolicy p) {
  switch (p) {
    case v1::FULL_POLICY_UNSPECIFIED:
    case v1::FULL_POLICY_REJECT: return FullPolicy::kReject;
    case v1::FULL_POLICY_WAIT: return FullPolicy::kWait;
    default: break;
  }
  return Invalid("full_policy", absl::StrCat("is ", static_cast<int>(p), ", not a policy"));
}

RateLimit RateFromProto(const v1::RateLimit& p) {
  RateLimit r;
  r.per_second = p.per_second();
  r.burst = p.burst();
  return r;
}

void RateToProto(const RateLimit& r, v1::RateLimit* out) {
  out->set_per_second(r.per_second);
  out->set_burst(r.burst);
}

// Only mapped: the broker validates limits (ValidateLimits), so that the
// rules and their messages live in one place.
QueueLimits LimitsFromProto(const v1::Limits& p) {
  QueueLimits l;
  if (p.has_rate()) l.rate = RateFromProto(p.rate());
  l.max_running = p.max_running();
  if (p.has_key_rate()) l.key_rate = RateFromProto(p.key_rate());
  for (const auto& [key, rate] : p.key_rates()) l.key_rates[key] = RateFromProto(rate);
  l.key_max_running = p.key_max_running();
  for (const auto& [key, size] : p.pools()) l.pools[key] = size;
  return l;
}

void LimitsToProto(const QueueLimits& l, v1::Limits* out) {
  if (l.rate) RateToProto(*l.rate, out->mutable_rate());
  out->set_max_running(l.max_running);
  if (l.key_rate) RateToProto(*l.key_rate, out->mutable_key_rate());
  for (const auto& [key, rate] : l.key_rates) RateToProto(rate, &(*out->mutable_key_rates())[key]);
  out->set_key_max_running(l.key_max_running);
  for (const auto& [key, size] : l.pools) (*out->mutable_pools())[key] = size;
}

// A message field present sets (per_second 0 removes), an optional scalar
// present sets (0 removes), map entries are merged (0 removes that entry).
LimitsUpdate LimitsUpdateFromProto(const v1::LimitsUpdate& p) {
  LimitsUpdate u;
  if (p.has_rate()) u.rate = RateFromProto(p.rate());
  if (p.has_max_running()) u.max_running = p.max_running();
  if (p.has_key_rate()) u.key_rate = RateFromProto(p.key_rate());
  for (const auto& [key, rate] : p.key_rates()) u.key_rates[key] = RateFromProto(rate);
  if (p.has_key_max_running()) u.key_max_running = p.key_max_running();
  for (const auto& [key, size] : p.pools()) u.pools[key] = size;
  return u;
}

v1::WaitReason WaitReasonToProto(WaitReason r) {
  switch (r) {
    case WaitReason::kNotWaiting: return v1::WAIT_REASON_UNSPECIFIED;
    case WaitReason::kNone: return v1::WAIT_REASON_NONE;
    case WaitReason::kPaused: return v1::WAIT_REASON_PAUSED;
    case WaitReason::kRateLimited: return v1::WAIT_REASON_RATE_LIMITED;
    case WaitReason::kConcurrencyFull: return v1::WAIT_REASON_CONCURRENCY_FULL;
    case WaitReason::kNotDue: return v1::WAIT_REASON_NOT_DUE;
    case WaitReason::kNoWorker: return v1::WAIT_REASON_NO_WORKER;
  }
  return v1::WAIT_REASON_UNSPECIFIED;
}

// Times an RPC and reports its outcome when it finishes.
class RpcTimer {
 public:
  RpcTimer(RpcMetrics* metrics, const char* service, const char* method, bool long_lived)
      : metrics_(metrics), service_(service), method_(method), long_lived_(long_lived),
        start_(absl::Now()) {}
  void Done(const grpc::Status& status) const {
    if (metrics_ != nullptr) {
      metrics_->Handled(service_, method_, status.error_code(), absl::Now() - start_,
                        long_lived_);
    }
  }

 private:
  RpcMetrics* metrics_;
  const char* service_;
  const char* method_;
  bool long_lived_;
  absl::Time start_;
};

// A per-item outcome (batched calls answer item by item).
void StatusToProto(const absl::Status& status, v1::ItemStatus* out) {
  out->set_code(static_cast<int>(status.code()));
  out->set_message(std::string(status.message()));
}

// One submit's outcome as a SubmitBatch or SubmitStream item: the task as
// stored (only its id with `ids_only`) and whether a key matched, or why not.
void SubmitItemToProto(const absl::StatusOr<SubmitResult>& r, bool ids_only,
                       v1::SubmitBatchResponse::Item* item) {
  if (r.ok()) {
    if (ids_only) {
      item->mutable_task()->set_id(r->task.id.ToString());
    } else {
      TaskToProto(r->task, item->mutable_task());
    }
    item->set_deduplicated(r->deduplicated);
  }
  StatusToProto(r.status(), item->mutable_status());
}

// Finishes a unary call made with DefaultReactor, counting it.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const RpcTimer& timer,
                                    const absl::Status& status) {
  grpc::Status g = ToGrpcStatus(status);
  timer.Done(g);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(g);
  return reactor;
}

// A unary call that may park inside the broker (Lease long-polls, Submit to a
// full WAIT queue). The broker's callback finishes it exactly once; a client
// cancel asks the broker to end the wait. Two references keep it alive: one
// for gRPC (dropped in OnDone), one until the broker call has returned and
// handed over its wait id, whichever comes last deletes it.
class ParkedReactor final : public grpc::ServerUnaryReactor {
 public:
  ParkedReactor(Broker* broker, RpcTimer timer) : broker_(broker), timer_(timer) {}

  // After the broker call returned with its wait id (0: not parked).
  void Parked(WaitId id) {
    bool cancel_now = false;
    {
      absl::MutexLock lock(&mu_);
      wait_id_ = id;
      cancel_now = cancelled_ && !finished_ && id != 0;
    }
    if (cancel_now) broker_->CancelWait(id);
    Unref();
  }

  void FinishOnce(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    timer_.Done(status);
    Finish(status);
  }

  void OnCancel() override {
    WaitId id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = finished_ ? 0 : wait_id_;
    }
    if (id != 0) broker_->CancelWait(id);
  }

  void OnDone() override {
    if (on_done_) on_done_();
    Unref();
  }

  // Runs in OnDone, before the reactor goes away (set before Parked).
  void SetOnDone(std::function<void()> f) { on_done_ = std::move(f); }

  // Lets gRPC run OnDone and OnCancel on the callback thread that sees the
  // call end. Otherwise gRPC 1.51 hands every OnDone to its executor thread:
  // one thread wake-up more per submit, lease and report call. Both
  // reactions only take short locks (this reactor's, the broker's) and never
  // wait, which is what gRPC asks of reactors that say so (the hook is
  // marked "for internal use" in grpcpp/support/server_callback.h; its
  // DefaultReactor, used by FinishNow, says so too).
  bool InternalInlineable() override { return true; }

 private:
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  Broker* const broker_;
  const RpcTimer timer_;
  std::function<void()> on_done_;
  std::atomic<int> refs_{2};
  absl::Mutex mu_;
  WaitId wait_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// Answers a call whose changes are made (`status` says how) once they are
// durable: the journal's error replaces an OK answer if the write failed.
grpc::ServerUnaryReactor* FinishWhenDurable(Broker* broker, const RpcTimer& timer,
                                            Ticket ticket, const absl::Status& status) {
  auto* reactor = new ParkedReactor(broker, timer);
  if (!status.ok()) {
    reactor->FinishOnce(ToGrpcStatus(status));
  } else {
    broker->WhenDurable(ticket, [reactor](absl::Status s) {
      reactor->FinishOnce(ToGrpcStatus(s));
    });
  }
  reactor->Parked(0);
  return reactor;
}

}  // namespace

// ───────────────────────────── conversions ─────────────────────────────

absl::StatusOr<TaskSpec> SpecFromProto(const v1::TaskSpec& p, absl::Time now,
                                       bool is_template) {
  TaskSpec spec;
  spec.queue = p.queue();
  spec.type = p.type();
  spec.payload = p.payload();
  spec.headers.assign(p.headers().begin(), p.headers().end());
  std::sort(spec.headers.begin(), spec.headers.end());
  spec.priority = p.priority();
  if (p.has_not_before() && p.has_delay()) {
    return Invalid("delay", "and not_before are both set; set one");
  }
  if (p.has_not_before()) {
    absl::StatusOr<absl::Time> t = TimeField(p.not_before(), "not_before");
    if (!t.ok()) return t.status();
    spec.not_before = *t;
  }
  if (p.has_delay()) {
    absl::StatusOr<absl::Duration> d = DurationField(p.delay(), "delay");
    if (!d.ok()) return d.status();
    if (*d < absl::ZeroDuration() || *d > absl::Hours(24 * 365)) {
      return Invalid("delay", absl::StrCat("is ", absl::FormatDuration(*d),
                                           "; must be 0 to 365 days"));
    }
    if (is_template) {
      spec.delay = *d;
    } else {
      spec.not_before = now + *d;
    }
  }
  if (p.has_expires_at()) {
    absl::StatusOr<absl::Time> t = TimeField(p.expires_at(), "expires_at");
    if (!t.ok()) return t.status();
    spec.expires_at = *t;
  }
  if (p.has_retry()) {
    absl::StatusOr<RetryOverride> r = RetryFromProto(p.retry(), "retry");
    if (!r.ok()) return r.status();
    spec.retry = *r;
  }
  if (p.has_timeout()) {
    absl::StatusOr<absl::Duration> d = DurationField(p.timeout(), "timeout");
    if (!d.ok()) return d.status();
    spec.timeout = *d;
  }
  spec.idempotency_key = p.idempotency_key();
  spec.rate_key = p.rate_key();
  spec.concurrency_key = p.concurrency_key();
  if (p.has_fallback_result()) spec.fallback_result = p.fallback_result();
  for (int i = 0; i < p.then_size(); ++i) {
    absl::StatusOr<TaskSpec> stage = SpecFromProto(p.then(i), now, /*is_template=*/true);
    if (!stage.ok()) {
      return absl::Status(stage.status().code(),
                          absl::StrCat("then[", i, "].", stage.status().message()));
    }
    spec.then.push_back(std::move(*stage));
  }
  return spec;
}

absl::StatusOr<TaskSpec> SpecFromProto(v1::TaskSpec&& p, absl::Time now) {
  std::string payload = std::move(*p.mutable_payload());
  std::string key = std::move(*p.mutable_idempotency_key());
  absl::StatusOr<TaskSpec> spec = SpecFromProto(std::as_const(p), now);
  if (spec.ok()) {
    spec->payload = std::move(payload);
    spec->idempotency_key = std::move(key);
  }
  return spec;
}

v1::GroupState GroupStateToProto(GroupState s) {
  switch (s) {
    case GroupState::kRunning: return v1::GROUP_STATE_RUNNING;
    case GroupState::kDone: return v1::GROUP_STATE_DONE;
    case GroupState::kCanceled: return v1::GROUP_STATE_CANCELED;
  }
  return v1::GROUP_STATE_UNSPECIFIED;
}

v1::ChainState ChainStateToProto(ChainState s) {
  switch (s) {
    case ChainState::kRunning: return v1::CHAIN_STATE_RUNNING;
    case ChainState::kSucceeded: return v1::CHAIN_STATE_SUCCEEDED;
    case ChainState::kFailed: return v1::CHAIN_STATE_FAILED;
    case ChainState::kCanceled: return v1::CHAIN_STATE_CANCELED;
  }
  return v1::CHAIN_STATE_UNSPECIFIED;
}

void GroupToProto(const GroupInfo& g, v1::Group* out) {
  out->set_id(g.id.ToString());
  out->set_state(GroupStateToProto(g.state));
  out->set_total(g.total);
  out->set_ended(g.ended);
  out->set_succeeded(g.succeeded);
  out->set_dead(g.dead);
  out->set_canceled(g.canceled);
  out->set_expired(g.expired);
  out->set_fallback(g.fallback);
  if (g.callback_task.value() != 0) out->set_callback_task_id(g.callback_task.ToString());
  out->set_has_callback(g.has_callback);
  ToProto(g.created_at, out->mutable_created_at());
  if (g.finished_at != absl::InfinitePast()) ToProto(g.finished_at, out->mutable_finished_at());
  out->set_idempotency_key(g.idempotency_key);
  for (const GroupMemberInfo& m : g.members) {
    v1::GroupMember* pm = out->add_members();
    pm->set_index(m.index);
    pm->set_task_id(m.task_id.ToString());
    pm->set_state(StateToProto(m.state));
    pm->set_result(m.result);
    pm->set_error(m.error);
  }
}

absl::StatusOr<ScheduleSpec> ScheduleFromProto(const v1::Schedule& p) {
  ScheduleSpec spec;
  spec.name = p.name();
  spec.cron = p.cron();
  spec.time_zone = p.time_zone();
  absl::StatusOr<TaskSpec> task = SpecFromProto(p.task(), absl::InfinitePast(),
                                                /*is_template=*/true);
  if (!task.ok()) {
    return absl::Status(task.status().code(), absl::StrCat("task.", task.status().message()));
  }
  spec.task = std::move(*task);
  switch (p.misfire()) {
    case v1::MISFIRE_POLICY_UNSPECIFIED:
    case v1::MISFIRE_POLICY_SKIP: spec.misfire = MisfirePolicy::kSkip; break;
    case v1::MISFIRE_POLICY_RUN_ONCE: spec.misfire = MisfirePolicy::kRunOnce; break;
    default:
      return Invalid("misfire", absl::StrCat("is ", static_cast<int>(p.misfire()),
                                             "; use MISFIRE_POLICY_SKIP or MISFIRE_POLICY_RUN_ONCE"));
  }
  spec.paused = p.paused();
  return spec;
}

void ScheduleToProto(const ScheduleInfo& info, v1::Schedule* out) {
  const ScheduleSpec& s = info.spec;
  out->set_name(s.name);
  out->set_cron(s.cron);
  out->set_time_zone(s.time_zone.empty() ? "UTC" : s.time_zone);
  v1::TaskSpec* t = out->mutable_task();
  t->set_queue(s.task.queue);
  t->set_type(s.task.type);
  t->set_payload(s.task.payload);
  for (const auto& [k, v] : s.task.headers) (*t->mutable_headers())[k] = v;
  t->set_priority(s.task.priority);
  if (s.task.delay > absl::ZeroDuration()) ToProto(s.task.delay, t->mutable_delay());
  if (s.task.timeout) ToProto(*s.task.timeout, t->mutable_timeout());
  if (s.task.retry.max_attempts) t->mutable_retry()->set_max_attempts(*s.task.retry.max_attempts);
  t->set_rate_key(s.task.rate_key);
  t->set_concurrency_key(s.task.concurrency_key);
  if (s.task.fallback_result) t->set_fallback_result(*s.task.fallback_result);
  for (const TaskSpec& stage : s.task.then) {
    v1::TaskSpec* ps = t->add_then();
    ps->set_queue(stage.queue);
    ps->set_type(stage.type);
  }
  out->set_misfire(s.misfire == MisfirePolicy::kRunOnce ? v1::MISFIRE_POLICY_RUN_ONCE
                                                        : v1::MISFIRE_POLICY_SKIP);
  out->set_paused(s.paused);
  ToProto(info.created_at, out->mutable_created_at());
  if (info.next_run_at != absl::InfiniteFuture()) ToProto(info.next_run_at, out->mutable_next_run_at());
  if (info.last_run_at != absl::InfinitePast()) {
    ToProto(info.last_run_at, out->mutable_last_run_at());
    out->set_last_task_id(info.last_task.ToString());
  }
  out->set_runs(info.runs);
  out->set_missed(info.missed);
  out->set_last_error(info.last_error);
}

void ChainToProto(const ChainInfo& c, v1::Chain* out) {
  out->set_id(c.id.ToString());
  out->set_state(ChainStateToProto(c.state));
  out->set_stages(c.stages);
  out->set_current_stage(c.current_stage);
  for (const ChainInfo::Stage& st : c.stage_list) {
    v1::Chain::Stage* ps = out->add_stage_list();
    ps->set_index(st.index);
    ps->set_queue(st.queue);
    ps->set_type(st.type);
    if (st.task_id.value() != 0) ps->set_task_id(st.task_id.ToString());
    if (st.state) ps->set_state(StateToProto(*st.state));
    ps->set_error(st.error);
  }
  out->set_result(c.result);
  out->set_error(c.error);
  ToProto(c.created_at, out->mutable_created_at());
  if (c.finished_at != absl::InfinitePast()) ToProto(c.finished_at, out->mutable_finished_at());
}

void TaskToProto(const TaskInfo& t, v1::Task* out) {
  out->set_id(t.id.ToString());
  out->set_queue(t.queue);
  out->set_type(t.type);
  out->set_payload(t.payload);
  for (const auto& [k, v] : t.headers) (*out->mutable_headers())[k] = v;
  out->set_priority(t.priority);
  out->set_state(StateToProto(t.state));
  out->set_attempts(t.attempts);
  out->set_max_attempts(t.max_attempts);
  out->set_crashes(t.crashes);
  out->set_token(t.token);
  ToProto(t.created_at, out->mutable_created_at());
  if (t.state == TaskState::kScheduled) ToProto(t.not_before, out->mutable_not_before());
  if (t.expires_at != absl::InfiniteFuture()) ToProto(t.expires_at, out->mutable_expires_at());
  if (t.started_at != absl::InfinitePast()) ToProto(t.started_at, out->mutable_started_at());
  if (t.finished_at != absl::InfinitePast()) ToProto(t.finished_at, out->mutable_finished_at());
  out->set_worker_id(t.worker_id);
  if (t.lease_expires_at != absl::InfinitePast()) {
    ToProto(t.lease_expires_at, out->mutable_lease_expires_at());
  }
  out->set_progress_percent(t.progress_percent);
  out->set_progress_message(t.progress_message);
  out->set_result(t.result);
  out->set_error(t.error);
  out->set_cancel_requested(t.cancel_requested);
  out->set_idempotency_key(t.idempotency_key);
  ToProto(t.timeout, out->mutable_timeout());
  out->set_rate_key(t.rate_key);
  out->set_concurrency_key(t.concurrency_key);
  if (t.group_id.value() != 0) out->set_group_id(t.group_id.ToString());
  if (t.chain_id.value() != 0) {
    out->set_chain_id(t.chain_id.ToString());
    out->set_chain_stage(t.chain_stage);
  }
  out->set_schedule(t.schedule);
  if (t.waiting.reason != WaitReason::kNotWaiting) {
    v1::Waiting* w = out->mutable_waiting();
    w->set_reason(WaitReasonToProto(t.waiting.reason));
    w->set_key(t.waiting.key);
    if (t.waiting.until != absl::InfinitePast() && t.waiting.until != absl::InfiniteFuture()) {
      ToProto(t.waiting.until, w->mutable_until());
    }
    w->set_detail(t.waiting.detail);
  }
}

absl::StatusOr<QueueConfig> QueueConfigFromProto(const v1::QueueConfig& p,
                                                 const QueueConfig& base) {
  QueueConfig c = base;
  c.name = p.name();
  if (p.capacity() != 0) c.capacity = p.capacity();
  absl::StatusOr<FullPolicy> policy = FullPolicyFromProto(p.full_policy());
  if (!policy.ok()) return policy.status();
  c.full_policy = *policy;
  if (p.has_retry()) {
    absl::StatusOr<RetryOverride> r = RetryFromProto(p.retry(), "retry");
    if (!r.ok()) return r.status();
    c.retry = r->ApplyTo(c.retry);
  }
  if (p.has_default_timeout()) {
    absl::StatusOr<absl::Duration> d = DurationField(p.default_timeout(), "default_timeout");
    if (!d.ok()) return d.status();
    c.default_timeout = *d;
  }
  if (p.has_lease_duration()) {
    absl::StatusOr<absl::Duration> d = DurationField(p.lease_duration(), "lease_duration");
    if (!d.ok()) return d.status();
    c.lease_duration = *d;
  }
  if (p.max_crashes() != 0) c.max_crashes = p.max_crashes();
  if (p.has_result_ttl()) {
    absl::StatusOr<absl::Duration> d = DurationField(p.result_ttl(), "result_ttl");
    if (!d.ok()) return d.status();
    c.result_ttl = *d;
  }
  if (p.retained() != 0) c.retained = p.retained();
  if (p.has_limits()) c.limits = LimitsFromProto(p.limits());
  return c;
}

void QueueToProto(const QueueInfo& q, v1::Queue* out) {
  v1::QueueConfig* c = out->mutable_config();
  c->set_name(q.config.name);
  c->set_capacity(q.config.capacity);
  c->set_full_policy(q.config.full_policy == FullPolicy::kWait ? v1::FULL_POLICY_WAIT
                                                               : v1::FULL_POLICY_REJECT);
  RetryToProto(q.config.retry, c->mutable_retry());
  ToProto(q.config.default_timeout, c->mutable_default_timeout());
  ToProto(q.config.lease_duration, c->mutable_lease_duration());
  c->set_max_crashes(q.config.max_crashes);
  ToProto(q.config.result_ttl, c->mutable_result_ttl());
  c->set_retained(q.config.retained);
  LimitsToProto(q.config.limits, c->mutable_limits());
  out->set_paused(q.paused);
  v1::QueueStats* s = out->mutable_stats();
  s->set_scheduled(q.stats.count(TaskState::kScheduled));
  s->set_ready(q.stats.count(TaskState::kReady));
  s->set_running(q.stats.count(TaskState::kRunning));
  s->set_succeeded(q.stats.count(TaskState::kSucceeded));
  s->set_dead(q.stats.count(TaskState::kDead));
  s->set_canceled(q.stats.count(TaskState::kCanceled));
  s->set_expired(q.stats.count(TaskState::kExpired));
  s->set_fallback(q.stats.count(TaskState::kFallback));
  ToProto(q.stats.oldest_ready_age, s->mutable_oldest_ready_age());
  s->set_waiting_workers(q.stats.waiting_workers);
  s->set_waiting_submits(q.stats.waiting_submits);
  for (size_t i = 0; i < kBlockedReasons.size(); ++i) {
    if (q.stats.blocked[i] != 0) {
      (*s->mutable_blocked())[WaitReasonName(kBlockedReasons[i])] = q.stats.blocked[i];
    }
  }
}

// ───────────────────────────── WatchTask ─────────────────────────────

// What a watch stream needs from the broker: how to start following an id
// (calling back with each snapshot), how to stop, and the snapshot's proto.
struct TaskWatchKind {
  using Proto = v1::Task;
  using Info = TaskInfo;
  static absl::StatusOr<WatchId> Watch(Broker* b, TaskId id,
                                       std::function<void(const Info&, bool)> cb) {
    return b->Watch(id, std::move(cb));
  }
  static void Unwatch(Broker* b, WatchId id) { b->Unwatch(id); }
  static void ToProto(const Info& info, Proto* out) { TaskToProto(info, out); }
};

struct GroupWatchKind {
  using Proto = v1::Group;
  using Info = GroupInfo;
  static absl::StatusOr<WatchId> Watch(Broker* b, TaskId id,
                                       std::function<void(const Info&, bool)> cb) {
    return b->WatchGroup(id, std::move(cb));
  }
  static void Unwatch(Broker* b, WatchId id) { b->UnwatchGroup(id); }
  static void ToProto(const Info& info, Proto* out) { GroupToProto(info, out); }
};

// Streams a task's (or group's) snapshots. Snapshots arrive from broker
// callbacks on any thread; one write is in flight at a time and Finish is
// called only when no write is, so the reactor is never touched after it may
// have been deleted.
template <typename Kind>
class StreamWatch final : public grpc::ServerWriteReactor<typename Kind::Proto>,
                          public DrainableStream {
  using Proto = typename Kind::Proto;
  using Info = typename Kind::Info;

 public:
  StreamWatch(BrokerService* service, Broker* broker, RpcTimer timer)
      : service_(service), broker_(broker), timer_(timer),
        state_(std::make_shared<Shared>()) {
    state_->reactor = this;
  }

  void Start(TaskId id) {
    if (!service_->AddStream(this)) {
      FinishWith(absl::UnavailableError("the broker is draining"));
      return;
    }
    std::shared_ptr<Shared> state = state_;
    absl::StatusOr<WatchId> watch = Kind::Watch(
        broker_, id, [state](const Info& info, bool final) { Deliver(state, info, final); });
    if (!watch.ok()) {
      FinishWith(watch.status());
      return;
    }
    absl::MutexLock lock(&state_->mu);
    state_->watch_id = *watch;
  }

  void Drain() override {
    FinishWith(absl::UnavailableError("the broker is draining; watch again later"));
  }

  // Ends the stream with `status` (drain, errors) unless it already ended.
  void FinishWith(const absl::Status& status) {
    std::shared_ptr<Shared> s = state_;
    bool finish_now = false;
    {
      absl::MutexLock lock(&s->mu);
      if (s->finishing) return;
      s->finishing = true;
      s->final_status = ToGrpcStatus(status);
      s->pending.clear();
      finish_now = !s->write_in_flight;
    }
    StopWatching();
    if (finish_now) DoFinish();
  }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<Shared> s = state_;
    const Proto* next = nullptr;
    bool finish_now = false;
    {
      absl::MutexLock lock(&s->mu);
      s->write_in_flight = false;
      s->current.reset();
      if (!ok && !s->finishing) {
        s->finishing = true;
        s->final_status = grpc::Status(grpc::StatusCode::CANCELLED, "stream broken");
        s->pending.clear();
      }
      if (!s->pending.empty() && !s->finishing) {
        s->current = std::make_unique<Proto>(std::move(s->pending.front()));
        s->pending.pop_front();
        s->write_in_flight = true;
        next = s->current.get();
      } else if (s->finishing || s->ended) {
        s->finishing = true;
        finish_now = true;
      }
    }
    if (next != nullptr) {
      this->StartWrite(next);
    } else if (finish_now) {
      StopWatching();
      DoFinish();
    }
  }

  void OnCancel() override {
    FinishWith(absl::CancelledError("the client cancelled the watch"));
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = nullptr;
    }
    service_->RemoveStream(this);
    Unref();
  }

  // BrokerService::BeginDrain holds a reference while it ends the stream.
  void Ref() override { refs_.fetch_add(1); }
  void Unref() override {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

 private:
  struct Shared {
    absl::Mutex mu;
    StreamWatch* reactor ABSL_GUARDED_BY(mu) = nullptr;
    WatchId watch_id ABSL_GUARDED_BY(mu) = 0;
    uint64_t last_version ABSL_GUARDED_BY(mu) = 0;
    bool have_version ABSL_GUARDED_BY(mu) = false;
    std::deque<Proto> pending ABSL_GUARDED_BY(mu);
    std::unique_ptr<Proto> current ABSL_GUARDED_BY(mu);
    bool write_in_flight ABSL_GUARDED_BY(mu) = false;
    bool ended ABSL_GUARDED_BY(mu) = false;      // the final snapshot is queued
    bool finishing ABSL_GUARDED_BY(mu) = false;  // Finish is due or done
    bool finished ABSL_GUARDED_BY(mu) = false;
    grpc::Status final_status ABSL_GUARDED_BY(mu);
  };

  // Keeps a slow reader from holding an unbounded backlog: intermediate
  // snapshots are dropped, the newest is always kept.
  static constexpr size_t kMaxPending = 64;

  static void Deliver(const std::shared_ptr<Shared>& s, const Info& info, bool final) {
    StreamWatch* reactor = nullptr;
    const Proto* first = nullptr;
    {
      absl::MutexLock lock(&s->mu);
      if (s->reactor == nullptr || s->finishing || s->ended) return;
      if (s->have_version && info.version < s->last_version && !final) return;
      s->have_version = true;
      s->last_version = std::max(s->last_version, info.version);
      Proto proto;
      Kind::ToProto(info, &proto);
      if (s->pending.size() >= kMaxPending) s->pending.pop_front();
      s->pending.push_back(std::move(proto));
      if (final) s->ended = true;
      if (!s->write_in_flight) {
        s->current = std::make_unique<Proto>(std::move(s->pending.front()));
        s->pending.pop_front();
        s->write_in_flight = true;
        first = s->current.get();
        reactor = s->reactor;
      }
    }
    if (reactor != nullptr) reactor->StartWrite(first);
  }

  void StopWatching() {
    WatchId id;
    {
      absl::MutexLock lock(&state_->mu);
      id = state_->watch_id;
      state_->watch_id = 0;
    }
    if (id != 0) Kind::Unwatch(broker_, id);
  }

  void DoFinish() {
    grpc::Status status;
    {
      absl::MutexLock lock(&state_->mu);
      if (state_->finished) return;
      state_->finished = true;
      status = state_->final_status;
    }
    timer_.Done(status);
    this->Finish(status);
  }

  BrokerService* const service_;
  Broker* const broker_;
  const RpcTimer timer_;
  std::shared_ptr<Shared> state_;
  std::atomic<int> refs_{1};  // gRPC's, dropped in OnDone
};

// A SubmitStream call. Each request read is submitted at once and gets a slot;
// the broker's answer fills it, and the slots go out in request order, one
// write in flight at a time. At most kMaxUnanswered slots are open: past that,
// reading pauses until answers go out (the client's sends then block on flow
// control). References: gRPC's (dropped in OnDone) and one per broker callback
// still to come; the last one deletes the reactor.
//
// Every step decides under mu_ what to do next (Step) and does it after
// unlocking (Run): gRPC calls are never made under mu_, nor broker calls.
class SubmitStreamReactor final
    : public grpc::ServerBidiReactor<v1::SubmitRequest, v1::SubmitBatchResponse::Item>,
      public DrainableStream {
  using Item = v1::SubmitBatchResponse::Item;

 public:
  static constexpr size_t kMaxUnanswered = 512;

  SubmitStreamReactor(BrokerService* service, absl::Time deadline, RpcTimer timer)
      : service_(service), deadline_(deadline), timer_(timer) {}

  // Starts reading, or ends the call at once with `refused` (auth).
  void Start(const absl::Status& refused) {
    absl::Status status = refused;
    if (status.ok() && !service_->AddStream(this)) {
      status = absl::UnavailableError("the broker is draining; submit again later");
    }
    Next next;
    {
      absl::MutexLock lock(&mu_);
      added_ = status.ok();
      if (status.ok()) {
        read_busy_ = true;
        next.read = true;
      } else {
        end_ = End::kAbort;
        final_status_ = ToGrpcStatus(status);
        next = StepLocked();
      }
    }
    Run(next);
  }

  void OnReadDone(bool ok) override {
    uint64_t seq = 0;
    bool accept = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        read_closed_ = true;
      } else if (end_ == End::kNone) {
        accept = true;
        seq = first_open_seq_ + slots_.size();
        slots_.emplace_back();
      }
    }
    // request_ stays ours (read_busy_) until the broker has it.
    if (accept) SubmitOne(seq);
    Next next;
    {
      absl::MutexLock lock(&mu_);
      read_busy_ = false;
      next = StepLocked();
    }
    Run(next);
  }

  void OnWriteDone(bool ok) override {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) AbortLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
      next = StepLocked();
    }
    Run(next);
  }

  // The client cancelled or the call's deadline passed: answers still to come
  // are dropped, and parked submits (full WAIT queues) stop waiting. Tasks the
  // broker accepted stay accepted; a client that resends them with their keys
  // gets the originals back.
  void OnCancel() override {
    std::vector<WaitId> parked;
    Next next;
    {
      absl::MutexLock lock(&mu_);
      AbortLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the stream"));
      for (const Slot& slot : slots_) {
        if (!slot.answered && slot.wait != 0) parked.push_back(slot.wait);
      }
      next = StepLocked();
    }
    for (WaitId id : parked) service_->broker_->CancelWait(id);
    Run(next);
  }

  void Drain() override {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      if (end_ == End::kNone) {
        end_ = End::kDrain;
        final_status_ = grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            "the broker is draining: every request read was answered; send the rest again "
            "later or to another broker");
      }
      next = StepLocked();
    }
    Run(next);
  }

  void OnDone() override {
    bool added;
    {
      absl::MutexLock lock(&mu_);
      added = added_;
    }
    if (added) service_->RemoveStream(this);
    Unref();
  }

  void Ref() override { refs_.fetch_add(1); }
  void Unref() override {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

 private:
  enum class End {
    kNone,
    kDrain,  // stop reading; answer what was read, then end
    kAbort,  // end as soon as no write is in flight; drop answers still due
  };
  struct Slot {
    bool answered = false;
    WaitId wait = 0;  // while parked in a full WAIT queue
    Item item;
  };
  // What to do after unlocking.
  struct Next {
    const Item* write = nullptr;
    bool read = false;
    bool finish = false;
    grpc::Status status;
  };

  void SubmitOne(uint64_t seq) {
    absl::StatusOr<TaskSpec> spec =
        SpecFromProto(std::move(*request_.mutable_task()), service_->clock_->Now());
    if (!spec.ok()) {
      Answer(seq, spec.status());
      return;
    }
    Ref();
    WaitId id = service_->broker_->Submit(std::move(*spec), deadline_,
                                          [this, seq](absl::StatusOr<SubmitResult> r) {
                                            Answer(seq, std::move(r));
                                            Unref();
                                          });
    if (id == 0) return;
    bool cancel_now = false;
    {
      absl::MutexLock lock(&mu_);
      if (seq >= first_open_seq_ && !slots_[seq - first_open_seq_].answered) {
        slots_[seq - first_open_seq_].wait = id;
        cancel_now = end_ == End::kAbort;
      }
    }
    if (cancel_now) service_->broker_->CancelWait(id);
  }

  void Answer(uint64_t seq, absl::StatusOr<SubmitResult> r) {
    Item item;
    SubmitItemToProto(r, /*ids_only=*/false, &item);
    Next next;
    {
      absl::MutexLock lock(&mu_);
      Slot& slot = slots_[seq - first_open_seq_];
      slot.item = std::move(item);
      slot.answered = true;
      slot.wait = 0;
      next = StepLocked();
    }
    Run(next);
  }

  void AbortLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (end_ == End::kAbort) return;
    end_ = End::kAbort;
    final_status_ = std::move(status);
  }

  Next StepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Next next;
    if (finished_) return next;
    if (!write_in_flight_ && end_ != End::kAbort && !slots_.empty() &&
        slots_.front().answered) {
      writing_ = std::move(slots_.front().item);
      slots_.pop_front();
      ++first_open_seq_;
      write_in_flight_ = true;
      next.write = &writing_;
    }
    if (!read_busy_ && !read_closed_ && end_ == End::kNone &&
        slots_.size() < kMaxUnanswered) {
      read_busy_ = true;
      next.read = true;
    }
    const bool owes_nothing = end_ == End::kAbort || slots_.empty();
    if (!write_in_flight_ && owes_nothing && (read_closed_ || end_ != End::kNone)) {
      finished_ = true;
      next.finish = true;
      next.status = end_ == End::kNone ? grpc::Status::OK : final_status_;
    }
    return next;
  }

  void Run(const Next& next) {
    if (next.write != nullptr) StartWrite(next.write);
    if (next.read) StartRead(&request_);
    if (next.finish) {
      timer_.Done(next.status);
      Finish(next.status);
    }
  }

  BrokerService* const service_;
  const absl::Time deadline_;
  const RpcTimer timer_;
  std::atomic<int> refs_{1};  // gRPC's, dropped in OnDone
  // Filled by gRPC while read_busy_; read by SubmitOne before it clears.
  v1::SubmitRequest request_;

  absl::Mutex mu_;
  bool added_ ABSL_GUARDED_BY(mu_) = false;  // to service_'s streams
  std::deque<Slot> slots_ ABSL_GUARDED_BY(mu_);
  uint64_t first_open_seq_ ABSL_GUARDED_BY(mu_) = 0;  // slots_.front()'s
  Item writing_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool read_busy_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;  // half-closed or broken
  End end_ ABSL_GUARDED_BY(mu_) = End::kNone;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// ───────────────────────────── TaskService ─────────────────────────────

class BrokerService::TaskServiceImpl final : public v1::TaskService::CallbackService {
 public:
  explicit TaskServiceImpl(BrokerService* s) : s_(s) {
    SetMessageAllocatorFor_Submit(&submit_messages_);
    SetMessageAllocatorFor_SubmitBatch(&batch_messages_);
  }

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const v1::SubmitRequest* req,
                                   v1::SubmitResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "Submit", /*long_lived=*/false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "Submit"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskSpec> spec =
        SpecFromProto(std::move(*Owned(req)->mutable_task()), s_->clock_->Now());
    if (!spec.ok()) return FinishNow(ctx, timer, spec.status());
    auto* reactor = new ParkedReactor(s_->broker_, timer);
    WaitId id = s_->broker_->Submit(
        std::move(*spec), FromChrono(ctx->deadline()),
        [reactor, resp](absl::StatusOr<SubmitResult> r) {
          if (r.ok()) {
            TaskToProto(r->task, resp->mutable_task());
            resp->set_deduplicated(r->deduplicated);
          }
          reactor->FinishOnce(ToGrpcStatus(r.status()));
        });
    reactor->Parked(id);
    return reactor;
  }

  grpc::ServerBidiReactor<v1::SubmitRequest, v1::SubmitBatchResponse::Item>* SubmitStream(
      grpc::CallbackServerContext* ctx) override {
    auto* reactor = new SubmitStreamReactor(
        s_, FromChrono(ctx->deadline()),
        RpcTimer(s_->metrics_, kService, "SubmitStream", /*long_lived=*/true));
    reactor->Start(s_->Authorize(ctx, kService, "SubmitStream"));
    return reactor;
  }

  grpc::ServerUnaryReactor* SubmitBatch(grpc::CallbackServerContext* ctx,
                                        const v1::SubmitBatchRequest* req,
                                        v1::SubmitBatchResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "SubmitBatch", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "SubmitBatch"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    const absl::Time now = s_->clock_->Now();
    std::vector<TaskSpec> specs;
    std::vector<absl::Status> decode(req->tasks_size());
    specs.reserve(req->tasks_size());
    for (int i = 0; i < req->tasks_size(); ++i) {
      absl::StatusOr<TaskSpec> spec =
          SpecFromProto(std::move(*Owned(req)->mutable_tasks(i)), now);
      if (spec.ok()) {
        specs.push_back(std::move(*spec));
      } else {
        decode[i] = spec.status();
      }
    }
    if (static_cast<size_t>(req->tasks_size()) > s_->broker_->options().max_batch_count) {
      return FinishNow(ctx, timer,
                       Invalid("tasks", absl::StrCat("holds ", req->tasks_size(),
                                                     " tasks; the limit is ",
                                                     s_->broker_->options().max_batch_count,
                                                     " (--max-batch-count)")));
    }
    auto* reactor = new ParkedReactor(s_->broker_, timer);
    s_->broker_->SubmitBatch(
        std::move(specs),
        [reactor, resp, decode = std::move(decode), ids_only = req->ids_only()](
            absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> results) {
          if (!results.ok()) {
            reactor->FinishOnce(ToGrpcStatus(results.status()));
            return;
          }
          size_t next = 0;
          for (size_t i = 0; i < decode.size(); ++i) {
            v1::SubmitBatchResponse::Item* item = resp->add_items();
            if (decode[i].ok()) {
              SubmitItemToProto((*results)[next++], ids_only, item);
            } else {
              StatusToProto(decode[i], item->mutable_status());
            }
          }
          reactor->FinishOnce(grpc::Status::OK);
        },
        req->ids_only());
    reactor->Parked(0);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx,
                                    const v1::GetTaskRequest* req, v1::Task* resp) override {
    RpcTimer timer(s_->metrics_, kService, "GetTask", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "GetTask"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskId> id = TaskId::Parse(req->id());
    if (!id.ok()) return FinishNow(ctx, timer, id.status());
    absl::StatusOr<TaskInfo> info = s_->broker_->GetTask(*id);
    if (info.ok()) TaskToProto(*info, resp);
    return FinishNow(ctx, timer, info.status());
  }

  grpc::ServerWriteReactor<v1::Task>* WatchTask(grpc::CallbackServerContext* ctx,
                                                const v1::WatchTaskRequest* req) override {
    return StartWatch<TaskWatchKind>(ctx, "WatchTask", req->id());
  }

  grpc::ServerUnaryReactor* CancelTask(grpc::CallbackServerContext* ctx,
                                       const v1::CancelTaskRequest* req,
                                       v1::Task* resp) override {
    RpcTimer timer(s_->metrics_, kService, "CancelTask", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "CancelTask"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskId> id = TaskId::Parse(req->id());
    if (!id.ok()) return FinishNow(ctx, timer, id.status());
    Ticket ticket = 0;
    absl::StatusOr<TaskInfo> info = s_->broker_->CancelTask(*id, &ticket);
    if (info.ok()) TaskToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* ctx,
                                      const v1::ListTasksRequest* req,
                                      v1::ListTasksResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "ListTasks", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "ListTasks"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<std::optional<TaskState>> state = StateFromProto(req->state());
    if (!state.ok()) return FinishNow(ctx, timer, state.status());
    absl::StatusOr<TaskPage> page =
        s_->broker_->ListTasks(req->queue(), *state, req->page_size(), req->page_token());
    if (page.ok()) {
      for (const TaskInfo& t : page->tasks) TaskToProto(t, resp->add_tasks());
      resp->set_next_page_token(page->next_page_token);
    }
    return FinishNow(ctx, timer, page.status());
  }

  // ── workflows ──

  grpc::ServerUnaryReactor* SubmitGroup(grpc::CallbackServerContext* ctx,
                                        const v1::SubmitGroupRequest* req,
                                        v1::SubmitGroupResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "SubmitGroup", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "SubmitGroup"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    const absl::Time now = s_->clock_->Now();
    GroupSpec spec;
    spec.members.reserve(req->tasks_size());
    for (int i = 0; i < req->tasks_size(); ++i) {
      absl::StatusOr<TaskSpec> member = SpecFromProto(req->tasks(i), now);
      if (!member.ok()) {
        return FinishNow(ctx, timer,
                         absl::Status(member.status().code(),
                                      absl::StrCat("tasks[", i, "].", member.status().message())));
      }
      spec.members.push_back(std::move(*member));
    }
    if (req->has_callback()) {
      absl::StatusOr<TaskSpec> cb = SpecFromProto(req->callback(), now, /*is_template=*/true);
      if (!cb.ok()) {
        return FinishNow(ctx, timer,
                         absl::Status(cb.status().code(),
                                      absl::StrCat("callback.", cb.status().message())));
      }
      spec.callback = std::move(*cb);
    }
    spec.max_fan_in_bytes = req->max_fan_in_bytes();
    spec.idempotency_key = req->idempotency_key();
    auto* reactor = new ParkedReactor(s_->broker_, timer);
    s_->broker_->SubmitGroup(std::move(spec),
                             [reactor, resp](absl::StatusOr<SubmitGroupResult> r) {
                               if (r.ok()) {
                                 GroupToProto(r->group, resp->mutable_group());
                                 for (TaskId id : r->task_ids) resp->add_task_ids(id.ToString());
                                 resp->set_deduplicated(r->deduplicated);
                               }
                               reactor->FinishOnce(ToGrpcStatus(r.status()));
                             });
    reactor->Parked(0);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetGroup(grpc::CallbackServerContext* ctx,
                                     const v1::GetGroupRequest* req, v1::Group* resp) override {
    RpcTimer timer(s_->metrics_, kService, "GetGroup", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "GetGroup"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskId> id = TaskId::Parse(req->id());
    if (!id.ok()) return FinishNow(ctx, timer, id.status());
    absl::StatusOr<GroupInfo> info =
        s_->broker_->GetGroup(*id, req->include_members() || req->include_results(),
                              req->include_results(), req->member_offset(), req->member_limit());
    if (info.ok()) GroupToProto(*info, resp);
    return FinishNow(ctx, timer, info.status());
  }

  grpc::ServerWriteReactor<v1::Group>* WatchGroup(grpc::CallbackServerContext* ctx,
                                                  const v1::WatchGroupRequest* req) override {
    return StartWatch<GroupWatchKind>(ctx, "WatchGroup", req->id());
  }

  grpc::ServerUnaryReactor* CancelGroup(grpc::CallbackServerContext* ctx,
                                        const v1::CancelGroupRequest* req,
                                        v1::Group* resp) override {
    RpcTimer timer(s_->metrics_, kService, "CancelGroup", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "CancelGroup"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskId> id = TaskId::Parse(req->id());
    if (!id.ok()) return FinishNow(ctx, timer, id.status());
    Ticket ticket = 0;
    absl::StatusOr<GroupInfo> info = s_->broker_->CancelGroup(*id, &ticket);
    if (info.ok()) GroupToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

  grpc::ServerUnaryReactor* GetChain(grpc::CallbackServerContext* ctx,
                                     const v1::GetChainRequest* req, v1::Chain* resp) override {
    RpcTimer timer(s_->metrics_, kService, "GetChain", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "GetChain"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskId> id = TaskId::Parse(req->id());
    if (!id.ok()) return FinishNow(ctx, timer, id.status());
    absl::StatusOr<ChainInfo> info = s_->broker_->GetChain(*id);
    if (info.ok()) ChainToProto(*info, resp);
    return FinishNow(ctx, timer, info.status());
  }

  grpc::ServerUnaryReactor* CancelChain(grpc::CallbackServerContext* ctx,
                                        const v1::CancelChainRequest* req,
                                        v1::Chain* resp) override {
    RpcTimer timer(s_->metrics_, kService, "CancelChain", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "CancelChain"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskId> id = TaskId::Parse(req->id());
    if (!id.ok()) return FinishNow(ctx, timer, id.status());
    Ticket ticket = 0;
    absl::StatusOr<ChainInfo> info = s_->broker_->CancelChain(*id, &ticket);
    if (info.ok()) ChainToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

 private:
  static constexpr const char* kService = "conveyor.v1.TaskService";

  // WatchTask and WatchGroup: the stream ends at once for a refused call or
  // a malformed id, else follows the broker's snapshots.
  template <typename Kind>
  grpc::ServerWriteReactor<typename Kind::Proto>* StartWatch(grpc::CallbackServerContext* ctx,
                                                             const char* method,
                                                             const std::string& id_text) {
    auto* reactor =
        new StreamWatch<Kind>(s_, s_->broker_, RpcTimer(s_->metrics_, kService, method, true));
    absl::StatusOr<TaskId> id = TaskId::Parse(id_text);
    if (absl::Status allowed = s_->Authorize(ctx, kService, method); !allowed.ok()) {
      reactor->FinishWith(allowed);
    } else if (!id.ok()) {
      reactor->FinishWith(id.status());
    } else {
      reactor->Start(*id);
    }
    return reactor;
  }
  BrokerService* s_;
  ArenaMessages<v1::SubmitRequest, v1::SubmitResponse> submit_messages_;
  ArenaMessages<v1::SubmitBatchRequest, v1::SubmitBatchResponse> batch_messages_;
};

// ───────────────────────────── ScheduleService ─────────────────────────────

class BrokerService::ScheduleServiceImpl final : public v1::ScheduleService::CallbackService {
 public:
  explicit ScheduleServiceImpl(BrokerService* s) : s_(s) {}

  grpc::ServerUnaryReactor* CreateSchedule(grpc::CallbackServerContext* ctx,
                                           const v1::CreateScheduleRequest* req,
                                           v1::Schedule* resp) override {
    RpcTimer timer(s_->metrics_, kService, "CreateSchedule", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "CreateSchedule"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<ScheduleSpec> spec = ScheduleFromProto(req->schedule());
    if (!spec.ok()) return FinishNow(ctx, timer, spec.status());
    Ticket ticket = 0;
    absl::StatusOr<ScheduleInfo> info = s_->broker_->CreateSchedule(std::move(*spec), &ticket);
    if (info.ok()) ScheduleToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

  grpc::ServerUnaryReactor* GetSchedule(grpc::CallbackServerContext* ctx,
                                        const v1::GetScheduleRequest* req,
                                        v1::Schedule* resp) override {
    RpcTimer timer(s_->metrics_, kService, "GetSchedule", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "GetSchedule"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<ScheduleInfo> info = s_->broker_->GetSchedule(req->name());
    if (info.ok()) ScheduleToProto(*info, resp);
    return FinishNow(ctx, timer, info.status());
  }

  grpc::ServerUnaryReactor* ListSchedules(grpc::CallbackServerContext* ctx,
                                          const v1::ListSchedulesRequest*,
                                          v1::ListSchedulesResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "ListSchedules", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "ListSchedules"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    for (const ScheduleInfo& info : s_->broker_->ListSchedules()) {
      ScheduleToProto(info, resp->add_schedules());
    }
    return FinishNow(ctx, timer, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* PauseSchedule(grpc::CallbackServerContext* ctx,
                                          const v1::PauseScheduleRequest* req,
                                          v1::Schedule* resp) override {
    RpcTimer timer(s_->metrics_, kService, "PauseSchedule", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "PauseSchedule"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    Ticket ticket = 0;
    absl::StatusOr<ScheduleInfo> info = s_->broker_->PauseSchedule(req->name(), &ticket);
    if (info.ok()) ScheduleToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

  grpc::ServerUnaryReactor* ResumeSchedule(grpc::CallbackServerContext* ctx,
                                           const v1::ResumeScheduleRequest* req,
                                           v1::Schedule* resp) override {
    RpcTimer timer(s_->metrics_, kService, "ResumeSchedule", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "ResumeSchedule"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    Ticket ticket = 0;
    absl::StatusOr<ScheduleInfo> info = s_->broker_->ResumeSchedule(req->name(), &ticket);
    if (info.ok()) ScheduleToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

  grpc::ServerUnaryReactor* DeleteSchedule(grpc::CallbackServerContext* ctx,
                                           const v1::DeleteScheduleRequest* req,
                                           v1::DeleteScheduleResponse*) override {
    RpcTimer timer(s_->metrics_, kService, "DeleteSchedule", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "DeleteSchedule"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    Ticket ticket = 0;
    absl::Status status = s_->broker_->DeleteSchedule(req->name(), &ticket);
    return FinishWhenDurable(s_->broker_, timer, ticket, status);
  }

 private:
  static constexpr const char* kService = "conveyor.v1.ScheduleService";
  BrokerService* s_;
};

// ───────────────────────────── QueueService ─────────────────────────────

class BrokerService::QueueServiceImpl final : public v1::QueueService::CallbackService {
 public:
  explicit QueueServiceImpl(BrokerService* s) : s_(s) {}

  grpc::ServerUnaryReactor* CreateQueue(grpc::CallbackServerContext* ctx,
                                        const v1::CreateQueueRequest* req,
                                        v1::Queue* resp) override {
    RpcTimer timer(s_->metrics_, kService, "CreateQueue", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "CreateQueue"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<QueueConfig> config =
        QueueConfigFromProto(req->config(), s_->broker_->options().queue_defaults);
    if (!config.ok()) return FinishNow(ctx, timer, config.status());
    Ticket ticket = 0;
    absl::StatusOr<QueueInfo> info = s_->broker_->CreateQueue(*config, req->paused(), &ticket);
    return Durable(timer, ticket, info, resp);
  }

  grpc::ServerUnaryReactor* UpdateQueue(grpc::CallbackServerContext* ctx,
                                        const v1::UpdateQueueRequest* req,
                                        v1::Queue* resp) override {
    RpcTimer timer(s_->metrics_, kService, "UpdateQueue", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "UpdateQueue"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<QueueUpdate> update = UpdateFromProto(*req);
    if (!update.ok()) return FinishNow(ctx, timer, update.status());
    Ticket ticket = 0;
    absl::StatusOr<QueueInfo> info = s_->broker_->UpdateQueue(req->name(), *update, &ticket);
    return Durable(timer, ticket, info, resp);
  }

  grpc::ServerUnaryReactor* GetQueue(grpc::CallbackServerContext* ctx,
                                     const v1::GetQueueRequest* req, v1::Queue* resp) override {
    RpcTimer timer(s_->metrics_, kService, "GetQueue", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "GetQueue"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    return Answer(ctx, timer, s_->broker_->GetQueue(req->name()), resp);
  }

  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx,
                                       const v1::ListQueuesRequest*,
                                       v1::ListQueuesResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "ListQueues", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "ListQueues"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    for (const QueueInfo& q : s_->broker_->ListQueues()) QueueToProto(q, resp->add_queues());
    return FinishNow(ctx, timer, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* PauseQueue(grpc::CallbackServerContext* ctx,
                                       const v1::PauseQueueRequest* req,
                                       v1::Queue* resp) override {
    RpcTimer timer(s_->metrics_, kService, "PauseQueue", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "PauseQueue"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    Ticket ticket = 0;
    absl::StatusOr<QueueInfo> info = s_->broker_->PauseQueue(req->name(), &ticket);
    return Durable(timer, ticket, info, resp);
  }

  grpc::ServerUnaryReactor* ResumeQueue(grpc::CallbackServerContext* ctx,
                                        const v1::ResumeQueueRequest* req,
                                        v1::Queue* resp) override {
    RpcTimer timer(s_->metrics_, kService, "ResumeQueue", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "ResumeQueue"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    Ticket ticket = 0;
    absl::StatusOr<QueueInfo> info = s_->broker_->ResumeQueue(req->name(), &ticket);
    return Durable(timer, ticket, info, resp);
  }

  grpc::ServerUnaryReactor* PurgeQueue(grpc::CallbackServerContext* ctx,
                                       const v1::PurgeQueueRequest* req,
                                       v1::PurgeQueueResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "PurgeQueue", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "PurgeQueue"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    Ticket ticket = 0;
    absl::StatusOr<uint64_t> n = s_->broker_->PurgeQueue(req->name(), &ticket);
    if (n.ok()) resp->set_purged(*n);
    return FinishWhenDurable(s_->broker_, timer, ticket, n.status());
  }

  grpc::ServerUnaryReactor* ListDeadLetters(grpc::CallbackServerContext* ctx,
                                            const v1::ListDeadLettersRequest* req,
                                            v1::ListDeadLettersResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "ListDeadLetters", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "ListDeadLetters"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<TaskPage> page =
        s_->broker_->ListDeadLetters(req->queue(), req->page_size(), req->page_token());
    if (page.ok()) {
      for (const TaskInfo& t : page->tasks) TaskToProto(t, resp->add_tasks());
      resp->set_next_page_token(page->next_page_token);
    }
    return FinishNow(ctx, timer, page.status());
  }

  grpc::ServerUnaryReactor* RequeueDeadLetters(grpc::CallbackServerContext* ctx,
                                               const v1::RequeueDeadLettersRequest* req,
                                               v1::RequeueDeadLettersResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "RequeueDeadLetters", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "RequeueDeadLetters"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<std::vector<TaskId>> ids = ParseIds(req->ids());
    if (!ids.ok()) return FinishNow(ctx, timer, ids.status());
    Ticket ticket = 0;
    absl::StatusOr<uint64_t> n = s_->broker_->RequeueDeadLetters(req->queue(), *ids, &ticket);
    if (n.ok()) resp->set_requeued(*n);
    return FinishWhenDurable(s_->broker_, timer, ticket, n.status());
  }

  grpc::ServerUnaryReactor* PurgeDeadLetters(grpc::CallbackServerContext* ctx,
                                             const v1::PurgeDeadLettersRequest* req,
                                             v1::PurgeDeadLettersResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "PurgeDeadLetters", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "PurgeDeadLetters"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<std::vector<TaskId>> ids = ParseIds(req->ids());
    if (!ids.ok()) return FinishNow(ctx, timer, ids.status());
    Ticket ticket = 0;
    absl::StatusOr<uint64_t> n = s_->broker_->PurgeDeadLetters(req->queue(), *ids, &ticket);
    if (n.ok()) resp->set_purged(*n);
    return FinishWhenDurable(s_->broker_, timer, ticket, n.status());
  }

 private:
  static constexpr const char* kService = "conveyor.v1.QueueService";

  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const RpcTimer& timer,
                                   const absl::StatusOr<QueueInfo>& info, v1::Queue* resp) {
    if (info.ok()) QueueToProto(*info, resp);
    return FinishNow(ctx, timer, info.status());
  }

  // For changes: answered once durable.
  grpc::ServerUnaryReactor* Durable(const RpcTimer& timer, Ticket ticket,
                                    const absl::StatusOr<QueueInfo>& info, v1::Queue* resp) {
    if (info.ok()) QueueToProto(*info, resp);
    return FinishWhenDurable(s_->broker_, timer, ticket, info.status());
  }

  static absl::StatusOr<QueueUpdate> UpdateFromProto(const v1::UpdateQueueRequest& p) {
    QueueUpdate u;
    if (p.has_capacity()) u.capacity = p.capacity();
    if (p.has_full_policy()) {
      absl::StatusOr<FullPolicy> policy = FullPolicyFromProto(p.full_policy());
      if (!policy.ok()) return policy.status();
      u.full_policy = *policy;
    }
    if (p.has_retry()) {
      absl::StatusOr<RetryOverride> r = RetryFromProto(p.retry(), "retry");
      if (!r.ok()) return r.status();
      u.retry = *r;
    }
    if (p.has_default_timeout()) {
      absl::StatusOr<absl::Duration> d = DurationField(p.default_timeout(), "default_timeout");
      if (!d.ok()) return d.status();
      u.default_timeout = *d;
    }
    if (p.has_lease_duration()) {
      absl::StatusOr<absl::Duration> d = DurationField(p.lease_duration(), "lease_duration");
      if (!d.ok()) return d.status();
      u.lease_duration = *d;
    }
    if (p.has_max_crashes()) u.max_crashes = p.max_crashes();
    if (p.has_result_ttl()) {
      absl::StatusOr<absl::Duration> d = DurationField(p.result_ttl(), "result_ttl");
      if (!d.ok()) return d.status();
      u.result_ttl = *d;
    }
    if (p.has_retained()) u.retained = p.retained();
    if (p.has_limits()) u.limits = LimitsUpdateFromProto(p.limits());
    return u;
  }

  BrokerService* s_;
};

// ───────────────────────────── WorkerService ─────────────────────────────

class BrokerService::WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(BrokerService* s) : s_(s) {
    SetMessageAllocatorFor_Lease(&lease_messages_);
    SetMessageAllocatorFor_Heartbeat(&heartbeat_messages_);
    SetMessageAllocatorFor_Complete(&complete_messages_);
    SetMessageAllocatorFor_Fail(&fail_messages_);
    SetMessageAllocatorFor_Release(&release_messages_);
  }

  grpc::ServerUnaryReactor* Lease(grpc::CallbackServerContext* ctx, const v1::LeaseRequest* req,
                                  v1::LeaseResponse* resp) override {
    absl::StatusOr<absl::Duration> wait = DurationField(req->wait(), "wait");
    RpcTimer timer(s_->metrics_, kService, "Lease",
                   /*long_lived=*/wait.ok() && *wait > absl::ZeroDuration());
    if (absl::Status allowed = s_->Authorize(ctx, kService, "Lease"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    if (!wait.ok()) return FinishNow(ctx, timer, wait.status());
    LeaseRequest request;
    request.worker_id = req->worker_id();
    request.queues.assign(req->queues().begin(), req->queues().end());
    request.types.assign(req->types().begin(), req->types().end());
    request.max_tasks = req->max_tasks();
    // Answer a little before the caller's deadline so the empty answer
    // arrives instead of DEADLINE_EXCEEDED.
    absl::Time deadline = FromChrono(ctx->deadline());
    if (deadline != absl::InfiniteFuture()) {
      absl::Duration left = deadline - s_->clock_->Now() - absl::Milliseconds(50);
      *wait = std::max(absl::ZeroDuration(), std::min(*wait, left));
    }
    request.wait = *wait;
    auto* reactor = new ParkedReactor(s_->broker_, timer);
    // Tasks granted to a call the client cancelled meanwhile never reach it:
    // hand them back at once instead of letting their leases expire (which
    // would spend their crash budget).
    Broker* broker = s_->broker_;
    reactor->SetOnDone([ctx, resp, broker] {
      if (!ctx->IsCancelled() || resp->tasks_size() == 0) return;
      std::vector<ReleaseItem> items;
      for (const v1::LeasedTask& t : resp->tasks()) {
        absl::StatusOr<TaskId> id = TaskId::Parse(t.id());
        if (id.ok()) items.push_back(ReleaseItem{*id, t.token()});
      }
      broker->Release(items);
    });
    WaitId id = s_->broker_->Lease(
        std::move(request),
        [reactor, resp](absl::StatusOr<std::vector<LeasedTask>> tasks) {
          if (tasks.ok()) {
            for (LeasedTask& t : *tasks) LeasedToProto(std::move(t), resp->add_tasks());
          }
          reactor->FinishOnce(ToGrpcStatus(tasks.status()));
        });
    reactor->Parked(id);
    return reactor;
  }

  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "Heartbeat", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "Heartbeat"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    std::vector<HeartbeatItem> items;
    std::vector<absl::Status> decode(req->items_size());
    items.reserve(req->items_size());
    std::vector<int> index;
    for (int i = 0; i < req->items_size(); ++i) {
      const auto& in = req->items(i);
      absl::StatusOr<TaskId> id = TaskId::Parse(in.id());
      if (!id.ok()) {
        decode[i] = id.status();
        continue;
      }
      HeartbeatItem item;
      item.id = *id;
      item.token = in.token();
      if (in.progress_percent() >= 0) {
        item.progress_percent = in.progress_percent();
        item.progress_message = in.progress_message();
      }
      items.push_back(std::move(item));
      index.push_back(i);
    }
    std::vector<HeartbeatOutcome> outcomes = s_->broker_->Heartbeat(req->worker_id(), items);
    size_t next = 0;
    for (int i = 0; i < req->items_size(); ++i) {
      auto* out = resp->add_items();
      out->set_id(req->items(i).id());
      absl::Status status = decode[i];
      if (status.ok()) {
        const HeartbeatOutcome& o = outcomes[next++];
        status = o.status;
        out->set_cancel(o.cancel);
        if (o.status.ok()) ToProto(o.lease_expires_at, out->mutable_lease_expires_at());
      }
      StatusToProto(status, out->mutable_status());
    }
    resp->set_draining(s_->broker_->draining());
    return FinishNow(ctx, timer, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx,
                                     const v1::CompleteRequest* req,
                                     v1::CompleteResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "Complete", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "Complete"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    return Report<CompleteItem>(
        ctx, timer, req->items(), resp->mutable_items(),
        [](const v1::CompleteRequest::Item& in, CompleteItem& out) {
          out.result = in.result();
          return absl::OkStatus();
        },
        [this](const std::vector<CompleteItem>& v, Ticket* t) {
          return s_->broker_->Complete(v, t);
        });
  }

  grpc::ServerUnaryReactor* Fail(grpc::CallbackServerContext* ctx, const v1::FailRequest* req,
                                 v1::FailResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "Fail", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "Fail"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    return Report<FailItem>(
        ctx, timer, req->items(), resp->mutable_items(),
        [](const v1::FailRequest::Item& in, FailItem& out) {
          out.error = in.error();
          out.retryable = in.retryable();
          out.reason = in.reason();
          out.throttled = in.throttled();
          // retry_after means something only for a throttled report; the
          // broker checks its upper bound (BrokerOptions::max_throttle).
          if (in.throttled() && in.has_retry_after()) {
            absl::StatusOr<absl::Duration> d = DurationField(in.retry_after(), "retry_after");
            if (!d.ok()) return d.status();
            if (*d < absl::ZeroDuration()) {
              return Invalid("retry_after",
                             absl::StrCat("is ", absl::FormatDuration(*d), "; must not be negative"));
            }
            out.retry_after = *d;
          }
          return absl::OkStatus();
        },
        [this](const std::vector<FailItem>& v, Ticket* t) { return s_->broker_->Fail(v, t); });
  }

  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx,
                                    const v1::ReleaseRequest* req,
                                    v1::ReleaseResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "Release", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "Release"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    return Report<ReleaseItem>(
        ctx, timer, req->items(), resp->mutable_items(),
        [](const v1::ReleaseRequest::Item&, ReleaseItem&) { return absl::OkStatus(); },
        [this](const std::vector<ReleaseItem>& v, Ticket* t) {
          return s_->broker_->Release(v, t);
        });
  }

  grpc::ServerUnaryReactor* EndPolls(grpc::CallbackServerContext* ctx,
                                     const v1::EndPollsRequest* req,
                                     v1::EndPollsResponse* resp) override {
    RpcTimer timer(s_->metrics_, kService, "EndPolls", false);
    if (absl::Status allowed = s_->Authorize(ctx, kService, "EndPolls"); !allowed.ok()) {
      return FinishNow(ctx, timer, allowed);
    }
    absl::StatusOr<int> ended = s_->broker_->EndLeaseWaits(req->worker_id());
    if (ended.ok()) resp->set_ended(static_cast<uint32_t>(*ended));
    return FinishNow(ctx, timer, ended.status());
  }

 private:
  static constexpr const char* kService = "conveyor.v1.WorkerService";

  // Moves the strings: on the answer's arena a moved payload is not copied
  // again.
  static void LeasedToProto(LeasedTask&& t, v1::LeasedTask* out) {
    out->set_id(t.id.ToString());
    out->set_queue(std::move(t.queue));
    out->set_type(std::move(t.type));
    out->set_payload(std::move(t.payload));
    for (const auto& [k, v] : t.headers) (*out->mutable_headers())[k] = v;
    out->set_attempt(t.attempt);
    out->set_max_attempts(t.max_attempts);
    out->set_token(t.token);
    conveyor::ToProto(t.lease_expires_at, out->mutable_lease_expires_at());
    conveyor::ToProto(t.deadline, out->mutable_deadline());
    conveyor::ToProto(t.timeout, out->mutable_timeout());
  }

  // Decodes ids and tokens (and, through `fill`, the rest of each item: an
  // error there is that item's status), runs the broker call, writes
  // per-item statuses in request order.
  template <typename Item, typename ProtoItems, typename Fill, typename Call>
  grpc::ServerUnaryReactor* Report(grpc::CallbackServerContext* ctx, const RpcTimer& timer,
                                   const ProtoItems& in,
                                   google::protobuf::RepeatedPtrField<v1::ItemStatus>* out,
                                   Fill fill, Call call) {
    std::vector<Item> items;
    items.reserve(in.size());
    std::vector<absl::Status> decode(in.size());
    for (int i = 0; i < in.size(); ++i) {
      absl::StatusOr<TaskId> id = TaskId::Parse(in.Get(i).id());
      if (!id.ok()) {
        decode[i] = id.status();
        continue;
      }
      Item item;
      item.id = *id;
      item.token = in.Get(i).token();
      if (absl::Status s = fill(in.Get(i), item); !s.ok()) {
        decode[i] = std::move(s);
        continue;
      }
      items.push_back(std::move(item));
    }
    Ticket ticket = 0;
    std::vector<absl::Status> results = call(items, &ticket);
    size_t next = 0;
    for (int i = 0; i < in.size(); ++i) {
      absl::Status status = decode[i].ok() ? results[next++] : decode[i];
      StatusToProto(status, out->Add());
    }
    // Acknowledged once the reports are durable.
    (void)ctx;
    return FinishWhenDurable(s_->broker_, timer, ticket, absl::OkStatus());
  }

  BrokerService* s_;
  ArenaMessages<v1::LeaseRequest, v1::LeaseResponse> lease_messages_;
  ArenaMessages<v1::HeartbeatRequest, v1::HeartbeatResponse> heartbeat_messages_;
  ArenaMessages<v1::CompleteRequest, v1::CompleteResponse> complete_messages_;
  ArenaMessages<v1::FailRequest, v1::FailResponse> fail_messages_;
  ArenaMessages<v1::ReleaseRequest, v1::ReleaseResponse> release_messages_;
};

// ───────────────────────────── BrokerService ─────────────────────────────

BrokerService::BrokerService(Broker* broker, const Clock* clock, RpcMetrics* metrics,
                             const Authorizer* authorizer)
    : broker_(broker), clock_(clock), metrics_(metrics), authorizer_(authorizer),
      task_service_(std::make_unique<TaskServiceImpl>(this)),
      queue_service_(std::make_unique<QueueServiceImpl>(this)),
      worker_service_(std::make_unique<WorkerServiceImpl>(this)),
      schedule_service_(std::make_unique<ScheduleServiceImpl>(this)) {}

BrokerService::~BrokerService() = default;

std::vector<grpc::Service*> BrokerService::services() {
  return {task_service_.get(), queue_service_.get(), worker_service_.get(),
          schedule_service_.get()};
}

absl::Status BrokerService::Authorize(grpc::CallbackServerContext* ctx, const char* service,
                                      const char* method) const {
  if (authorizer_ == nullptr) return absl::OkStatus();
  CallerCredentials caller;
  // Views into the call's metadata, which outlives this check. The header's
  // value is never logged or copied anywhere else.
  const auto headers = ctx->client_metadata().equal_range(kAuthorizationHeader);
  for (auto it = headers.first; it != headers.second; ++it) {
    caller.authorization.emplace_back(it->second.data(), it->second.size());
  }
  // Over mTLS the handshake verified the client certificate; its names are
  // the identities `cert:` lines map to roles.
  const std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME}) {
      for (const grpc::string_ref& name : auth->FindPropertyValues(property)) {
        caller.cert_identities.emplace_back(name.data(), name.size());
      }
    }
  }
  absl::Status status = authorizer_->Check(caller, service, method);
  if (!status.ok()) {
    LogDebug("call refused", {{"service", service},
                              {"method", method},
                              {"peer", ctx->peer()},
                              {"error", status}});
  }
  return status;
}

bool BrokerService::AddStream(DrainableStream* stream) {
  absl::MutexLock lock(&mu_);
  if (draining_) return false;
  streams_.insert(stream);
  return true;
}

void BrokerService::RemoveStream(DrainableStream* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

void BrokerService::BeginDrain() {
  std::vector<DrainableStream*> open;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // A reference each, taken under mu_ (OnDone removes a stream under mu_
    // before dropping gRPC's), keeps them alive while they are ended.
    for (DrainableStream* r : streams_) {
      r->Ref();
      open.push_back(r);
    }
  }
  for (DrainableStream* r : open) {
    r->Drain();
    r->Unref();
  }
}

size_t BrokerService::open_streams() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

}  // namespace conveyor::server
