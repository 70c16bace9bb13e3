// Workflows of the broker: groups (fan-out / fan-in) and chains (pipelines).
//
// Both are continuations of accepted work, driven by the end of a task:
//  - a group member's end is recorded in its group (NoteMemberState); when
//    the last member ends the group is DONE and its callback is submitted
//    with a GroupResults document (FinishGroup);
//  - a chain stage that ends SUCCEEDED or FALLBACK submits the next stage
//    with its result as the payload; any other end ends the chain
//    (AdvanceChain).
// The continuation is created in the same locked section, so its submit
// record goes into the same journal write as the end that caused it. On
// replay, the continuation's own TaskSubmitted record (naming its group or
// chain) marks it as done, and RecoverWorkflows submits whatever a torn
// write lost: a callback is submitted exactly once, a stage once.
#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/json.h"
#include "common/log.h"
#include "server/broker.h"
#include "server/broker_internal.h"
#include "server/journal_codec.h"

namespace conveyor::server {
using namespace internal;  // NOLINT: this file implements Broker
namespace pb = ::conveyor::internal;

namespace {

constexpr uint32_t kDefaultMemberPage = 1'000;
constexpr uint32_t kMaxMemberPage = 10'000;
// Room kept in a callback's payload for the document around the results.
constexpr size_t kFanInOverhead = 64 << 10;
// A callback's own payload (base64 in the document: 4/3 of this, well within
// the overhead).
constexpr size_t kMaxCallbackPayloadBytes = 32 << 10;
constexpr absl::Duration kWorkflowRetryDelay = absl::Seconds(1);
constexpr size_t kMaxIdempotencyKeyBytes = 256;

int64_t Us(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return 0;
  return absl::ToUnixMicros(t);
}
absl::Time FromUs(int64_t us) { return us == 0 ? absl::InfinitePast() : absl::FromUnixMicros(us); }

absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  if (s.ok() || prefix.empty()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

absl::Status NotFoundGroup(TaskId id) {
  return absl::NotFoundError(absl::StrCat(
      "group ", id.ToString(), " not found (unknown, or dropped after the workflow TTL)"));
}

absl::Status NotFoundChain(TaskId id) {
  return absl::NotFoundError(absl::StrCat(
      "chain ", id.ToString(),
      " not found (unknown, not a chain's first task, or dropped after the workflow TTL)"));
}

bool Succeeded(TaskState s) { return s == TaskState::kSucceeded || s == TaskState::kFallback; }

// ── templates in the journal ──

void OverrideToRecord(const RetryOverride& o, pb::RetryOverrideRecord* r) {
  if (o.max_attempts) r->set_max_attempts(*o.max_attempts);
  if (o.initial_backoff) r->set_initial_backoff_us(absl::ToInt64Microseconds(*o.initial_backoff));
  if (o.max_backoff) r->set_max_backoff_us(absl::ToInt64Microseconds(*o.max_backoff));
  if (o.multiplier) r->set_multiplier(*o.multiplier);
  if (o.jitter) r->set_jitter(*o.jitter);
}

RetryOverride OverrideFromRecord(const pb::RetryOverrideRecord& r) {
  RetryOverride o;
  if (r.has_max_attempts()) o.max_attempts = r.max_attempts();
  if (r.has_initial_backoff_us()) o.initial_backoff = absl::Microseconds(r.initial_backoff_us());
  if (r.has_max_backoff_us()) o.max_backoff = absl::Microseconds(r.max_backoff_us());
  if (r.has_multiplier()) o.multiplier = r.multiplier();
  if (r.has_jitter()) o.jitter = r.jitter();
  return o;
}

}  // namespace

namespace internal {

void TemplateToRecord(const TaskSpec& t, pb::TaskSubmitted* r) {
  r->set_queue(t.queue);
  r->set_type(t.type);
  r->set_payload(t.payload);
  for (const auto& [k, v] : t.headers) {
    pb::Header* h = r->add_headers();
    h->set_key(k);
    h->set_value(v);
  }
  r->set_priority(t.priority);
  r->set_delay_us(absl::ToInt64Microseconds(t.delay));
  if (!t.retry.empty()) OverrideToRecord(t.retry, r->mutable_retry_override());
  if (t.timeout) r->set_timeout_us(absl::ToInt64Microseconds(*t.timeout));
  r->set_rate_key(t.rate_key);
  r->set_concurrency_key(t.concurrency_key);
  if (t.fallback_result) r->set_fallback_result(*t.fallback_result);
  for (const TaskSpec& next : t.then) TemplateToRecord(next, r->add_then());
}

TaskSpec TemplateFromRecord(const pb::TaskSubmitted& r) {
  TaskSpec t;
  t.queue = r.queue();
  t.type = r.type();
  t.payload = r.payload();
  for (const pb::Header& h : r.headers()) t.headers.emplace_back(h.key(), h.value());
  t.priority = r.priority();
  t.delay = absl::Microseconds(r.delay_us());
  if (r.has_retry_override()) t.retry = OverrideFromRecord(r.retry_override());
  if (r.timeout_us() != 0) t.timeout = absl::Microseconds(r.timeout_us());
  t.rate_key = r.rate_key();
  t.concurrency_key = r.concurrency_key();
  if (r.has_fallback_result()) t.fallback_result = r.fallback_result();
  for (const pb::TaskSubmitted& next : r.then()) t.then.push_back(TemplateFromRecord(next));
  return t;
}

}  // namespace internal

namespace {

// ── the fan-in document (GroupResults in the proto3 JSON mapping) ──

const char* StateEnumName(TaskState s) {
  switch (s) {
    case TaskState::kScheduled: return "TASK_STATE_SCHEDULED";
    case TaskState::kReady: return "TASK_STATE_READY";
    case TaskState::kRunning: return "TASK_STATE_RUNNING";
    case TaskState::kSucceeded: return "TASK_STATE_SUCCEEDED";
    case TaskState::kDead: return "TASK_STATE_DEAD";
    case TaskState::kCanceled: return "TASK_STATE_CANCELED";
    case TaskState::kExpired: return "TASK_STATE_EXPIRED";
    case TaskState::kFallback: return "TASK_STATE_FALLBACK";
  }
  return "TASK_STATE_UNSPECIFIED";
}

}  // namespace

const char* GroupStateName(GroupState state) {
  switch (state) {
    case GroupState::kRunning: return "RUNNING";
    case GroupState::kDone: return "DONE";
    case GroupState::kCanceled: return "CANCELED";
  }
  return "UNKNOWN";
}

const char* ChainStateName(ChainState state) {
  switch (state) {
    case ChainState::kRunning: return "RUNNING";
    case ChainState::kSucceeded: return "SUCCEEDED";
    case ChainState::kFailed: return "FAILED";
    case ChainState::kCanceled: return "CANCELED";
  }
  return "UNKNOWN";
}

// ───────────────────────────── validation ─────────────────────────────

absl::Status Broker::ValidateTemplate(const TaskSpec& spec, absl::string_view field,
                                      TemplateKind kind, absl::Time now) const {
  const std::string prefix = absl::StrCat(field, ".");
  if (kind == TemplateKind::kStage && !spec.payload.empty()) {
    return Invalid(absl::StrCat(prefix, "payload"),
                   "must be empty: a stage's payload is the previous stage's result");
  }
  if (kind == TemplateKind::kStage && !spec.then.empty()) {
    return Invalid(absl::StrCat(prefix, "then"),
                   "is set on a stage; list every stage in the first task's `then`");
  }
  if (spec.not_before != absl::InfinitePast()) {
    return Invalid(absl::StrCat(prefix, "not_before"),
                   "is set; a template takes `delay` (counted from its submission)");
  }
  if (spec.expires_at != absl::InfiniteFuture()) {
    return Invalid(absl::StrCat(prefix, "expires_at"), "is not allowed in a template");
  }
  if (!spec.idempotency_key.empty()) {
    return Invalid(absl::StrCat(prefix, "idempotency_key"),
                   "is not allowed in a template (each submission is a new task)");
  }
  if (spec.delay < absl::ZeroDuration() || spec.delay > absl::Hours(24 * 365)) {
    return Invalid(absl::StrCat(prefix, "delay"), absl::StrCat("is ", absl::FormatDuration(spec.delay),
                                                             "; must be 0 to 365 days"));
  }
  TaskSpec plain = spec;
  plain.delay = absl::ZeroDuration();
  plain.then.clear();
  if (absl::Status s = ValidateSpec(plain, now); !s.ok()) return Prefixed(prefix, s);
  return ValidateStages(spec, prefix, now);
}

absl::Status Broker::ValidateStages(const TaskSpec& spec, absl::string_view prefix,
                                    absl::Time now) const {
  if (spec.then.empty()) return absl::OkStatus();
  if (spec.then.size() > options_.max_chain_stages) {
    return Invalid(absl::StrCat(prefix, "then"),
                   absl::StrCat("holds ", spec.then.size(), " stages; at most ",
                                options_.max_chain_stages));
  }
  for (size_t i = 0; i < spec.then.size(); ++i) {
    if (absl::Status s = ValidateTemplate(spec.then[i], absl::StrCat(prefix, "then[", i, "]"),
                                          TemplateKind::kStage, now);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// ───────────────────────────── links ─────────────────────────────

const Broker::Link* Broker::LinkOf(uint64_t task_id) const {
  if (links_.empty()) return nullptr;
  auto it = links_.find(task_id);
  return it == links_.end() ? nullptr : &it->second;
}

void Broker::LinkNewTask(Task& task, const Link* link, TaskSpec& spec, Deferred& /*after*/) {
  const uint64_t id = task.id().value();
  if (link == nullptr && spec.then.empty()) return;
  Link& l = links_[id];
  if (link != nullptr) l = *link;
  if (l.group != 0) {
    if (auto g = groups_.find(l.group); g != groups_.end()) {
      if (l.index == kCallbackIndex) {
        g->second->callback_task = id;
      } else if (l.index < g->second->member_ids.size()) {
        g->second->member_ids[l.index] = id;
      }
    }
  }
  if (l.chain != 0) {
    if (auto c = chains_.find(l.chain); c != chains_.end() && l.stage < c->second->stages.size()) {
      Chain& chain = *c->second;
      chain.current = l.stage;
      chain.stage_tasks[l.stage] = id;
      chain.stage_states[l.stage] = static_cast<uint8_t>(TaskState::kScheduled);
    }
  }
  if (!spec.then.empty()) {
    // A new chain, named after its first task.
    auto chain = std::make_unique<Chain>();
    chain->id = id;
    chain->created = task.created_at();
    TaskSpec first;
    first.queue = task.queue()->name();
    first.type = spec.type;
    chain->stages.push_back(std::move(first));
    for (TaskSpec& stage : spec.then) chain->stages.push_back(std::move(stage));
    spec.then.clear();
    chain->stage_tasks.assign(chain->stages.size(), 0);
    chain->stage_states.assign(chain->stages.size(), Chain::kNoState);
    chain->stage_tasks[0] = id;
    chain->stage_states[0] = static_cast<uint8_t>(TaskState::kScheduled);
    l.chain = id;
    l.stage = 0;
    PersistChain(*chain);
    chains_.emplace(id, std::move(chain));
  }
}

void Broker::LinkFromRecord(const pb::TaskSubmitted& r, Task* task) {
  if (r.group_id() == 0 && r.chain_id() == 0 && r.schedule().empty()) return;
  Link& l = links_[r.id()];
  l.group = r.group_id();
  l.index = r.group_index();
  l.chain = r.chain_id();
  l.stage = r.chain_stage();
  l.schedule = r.schedule();
  l.schedule_tick_us = r.schedule_tick_us();
  if (l.group != 0) {
    if (auto g = groups_.find(l.group); g != groups_.end()) {
      if (l.index == kCallbackIndex) {
        g->second->callback_task = r.id();
      } else if (l.index < g->second->member_ids.size()) {
        g->second->member_ids[l.index] = r.id();
      }
    }
  }
  if (l.chain != 0) {
    if (auto c = chains_.find(l.chain); c != chains_.end() && l.stage < c->second->stages.size()) {
      Chain& chain = *c->second;
      chain.current = std::max(chain.current, l.stage);
      chain.stage_tasks[l.stage] = r.id();
      if (chain.stage_states[l.stage] == Chain::kNoState) {
        chain.stage_states[l.stage] = static_cast<uint8_t>(task->state);
      }
    }
  }
  NoteMemberState(*task);
}

void Broker::NoteMemberState(const Task& task) {
  const Link* l = LinkOf(task.id().value());
  if (l == nullptr) return;
  if (l->group != 0 && l->index != kCallbackIndex) {
    auto g = groups_.find(l->group);
    // A DONE group is final: a member requeued later no longer counts.
    if (g != groups_.end() && l->index < g->second->total &&
        !(g->second->finished != absl::InfinitePast() && !g->second->canceled_group)) {
      Group& group = *g->second;
      Group::Outcome& o = group.outcomes[l->index];
      if (!IsTerminal(task.state)) {
        if (IsTerminal(o.state)) {
          group.SetOutcome(l->index, task.state, "", "");
        } else {
          o.state = task.state;
        }
      } else if (o.state != task.state) {  // replay notes the same end again
        const TaskExtra* x = task.extra();
        absl::string_view text;
        if (x != nullptr) text = Succeeded(task.state) ? x->result : x->error;
        group.SetOutcome(l->index, task.state, Succeeded(task.state) ? text : "",
                         Succeeded(task.state) ? "" : text);
      }
    }
  }
  if (l->chain != 0) {
    if (auto c = chains_.find(l->chain);
        c != chains_.end() && l->stage < c->second->stage_states.size()) {
      c->second->stage_states[l->stage] = static_cast<uint8_t>(task.state);
    }
  }
}

void Broker::UnlinkTask(uint64_t task_id, bool undurable) {
  auto it = links_.find(task_id);
  if (it == links_.end()) return;
  Link l = std::move(it->second);
  links_.erase(it);
  if (!undurable) return;
  // The task's submit never reached the disk: it never existed.
  if (l.group != 0) {
    if (auto g = groups_.find(l.group); g != groups_.end()) {
      if (l.index == kCallbackIndex) {
        g->second->callback_task = 0;
        workflow_retry_.insert(l.group);
        PushTimer(clock_->Now() + kWorkflowRetryDelay, kWorkflowRetry, 0, 0);
      } else {
        // A member: the group's whole submit failed with it.
        if (!g->second->idempotency_key.empty()) {
          group_idempotency_.erase(g->second->idempotency_key);
        }
        groups_.erase(g);
      }
    }
  }
  if (l.chain != 0) {
    if (auto c = chains_.find(l.chain); c != chains_.end()) {
      if (l.stage == 0) {
        chains_.erase(c);
      } else {
        Chain& chain = *c->second;
        chain.stage_tasks[l.stage] = 0;
        chain.stage_states[l.stage] = Chain::kNoState;
        chain.current = l.stage - 1;
        // Called before the record goes: its payload is the previous result.
        if (const Task* t = FindTask(TaskId(task_id)); t != nullptr) {
          chain.retry_payload = std::string(t->payload());
        }
        workflow_retry_.insert(l.chain);
        PushTimer(clock_->Now() + kWorkflowRetryDelay, kWorkflowRetry, 0, 0);
      }
    }
  }
}

// ───────────────────────────── continuations ─────────────────────────────

absl::StatusOr<Task*> Broker::SubmitTemplate(const TaskSpec& tmpl, std::string payload,
                                             const Link& link, Deferred& after) {
  TaskSpec spec = tmpl;
  spec.payload = std::move(payload);
  if (spec.delay > absl::ZeroDuration()) spec.not_before = clock_->Now() + spec.delay;
  spec.delay = absl::ZeroDuration();
  absl::StatusOr<Queue*> queue = QueueForSubmit(spec.queue);
  if (!queue.ok()) return queue.status();
  return CreateTask(spec, *queue, &link, after);
}

void Broker::WorkflowStep(Task* task, Deferred& after) {
  const Link* found = LinkOf(task->id().value());
  if (found == nullptr) return;
  const Link l = *found;  // the maps below may change
  NoteMemberState(*task);
  if (l.group != 0 && l.index != kCallbackIndex) {
    if (auto g = groups_.find(l.group); g != groups_.end()) {
      Group& group = *g->second;
      // A group without a callback counts as DONE as soon as its last member
      // ends, but it still needs finishing: finished_at, its record, the TTL.
      if (!group.canceled_group && group.ended == group.total &&
          (group.state() == GroupState::kRunning || group.finished == absl::InfinitePast())) {
        FinishGroup(group, after);
      } else {
        NotifyGroupWatchers(group, after);
      }
    }
  }
  if (l.chain != 0 && IsTerminal(task->state)) {
    if (auto c = chains_.find(l.chain); c != chains_.end()) {
      Chain& chain = *c->second;
      if (chain.state == ChainState::kRunning && chain.current == l.stage) {
        AdvanceChain(chain, *task, after);
      }
    }
  }
}

void Broker::FinishGroup(Group& group, Deferred& after) {
  const absl::Time now = clock_->Now();
  const bool first = group.finished == absl::InfinitePast();
  if (first) group.finished = now;
  if (group.callback && group.callback_task == 0 && group.callback_error.empty()) {
    Link link;
    link.group = group.id;
    link.index = kCallbackIndex;
    absl::StatusOr<Task*> task = SubmitTemplate(*group.callback, FanInPayload(group), link, after);
    if (!task.ok()) {
      group.callback_error = std::string(task.status().message());
      LogError("a group's callback could not be submitted",
               {{"group", TaskId(group.id).ToString()}, {"error", task.status()}});
    }
  }
  PersistGroup(group, /*full=*/false);
  if (first) PushTimer(now + options_.workflow_ttl, kWorkflowDrop, group.id, 0);
  NotifyGroupWatchers(group, after);
}

void Broker::AdvanceChain(Chain& chain, const Task& stage, Deferred& after) {
  const TaskState st = stage.state;
  const TaskExtra* x = stage.extra();
  const std::string& result = x != nullptr ? x->result : std::string();
  const uint32_t index = chain.current;
  if (Succeeded(st)) {
    if (index + 1 >= chain.stages.size()) {
      EndChain(chain, ChainState::kSucceeded, result, "");
      return;
    }
    if (chain.cancel_requested) {
      EndChain(chain, ChainState::kCanceled, "",
               absl::StrCat("canceled before stage ", index + 1, " was submitted"));
      return;
    }
    Link link;
    link.chain = chain.id;
    link.stage = index + 1;
    absl::StatusOr<Task*> next = SubmitTemplate(chain.stages[index + 1], result, link, after);
    if (!next.ok()) {
      EndChain(chain, ChainState::kFailed, "",
               absl::StrCat("stage ", index + 1, " could not be submitted: ",
                            next.status().message()));
    }
    return;
  }
  const std::string error = absl::StrCat("stage ", index, " (", chain.stages[index].type,
                                         ") ended ", TaskStateName(st),
                                         x != nullptr && !x->error.empty() ? ": " : "",
                                         x != nullptr ? x->error : "");
  EndChain(chain, st == TaskState::kCanceled ? ChainState::kCanceled : ChainState::kFailed, "",
           error);
}

void Broker::EndChain(Chain& chain, ChainState state, std::string result, std::string error) {
  const absl::Time now = clock_->Now();
  chain.state = state;
  chain.result = std::move(result);
  chain.error = std::move(error);
  chain.finished = now;
  PersistChain(chain);
  PushTimer(now + options_.workflow_ttl, kWorkflowDrop, chain.id, 0);
}

std::string Broker::FanInPayload(const Group& group) const {
  const std::string payload =
      group.callback ? absl::Base64Escape(group.callback->payload) : std::string();
  // Each member's result and error: kept by the group, or (past the group's
  // budget) only in the task record.
  std::vector<std::pair<absl::string_view, absl::string_view>> texts(group.total);
  for (uint32_t i = 0; i < group.total; ++i) {
    const Group::Outcome& o = group.outcomes[i];
    texts[i] = {o.result, o.error};
    if (o.stored) continue;
    const Task* t = FindTask(TaskId(group.member_ids[i]));
    if (t == nullptr || t->extra() == nullptr) continue;
    if (Succeeded(o.state)) {
      texts[i].first = t->extra()->result;
    } else {
      texts[i].second = t->extra()->error;
    }
  }
  auto build = [&](bool members, bool results) {
    std::string out;
    absl::StrAppend(&out, "{\"groupId\":\"", TaskId(group.id).ToString(), "\"");
    if (!payload.empty()) absl::StrAppend(&out, ",\"payload\":\"", payload, "\"");
    absl::StrAppend(&out, ",\"total\":", group.total, ",\"succeeded\":", group.succeeded,
                    ",\"dead\":", group.dead, ",\"canceled\":", group.canceled,
                    ",\"expired\":", group.expired, ",\"fallback\":", group.fallback,
                    ",\"truncated\":", (members && results) ? "false" : "true");
    if (members) {
      out += ",\"members\":[";
      for (uint32_t i = 0; i < group.total; ++i) {
        const Group::Outcome& o = group.outcomes[i];
        if (i > 0) out.push_back(',');
        absl::StrAppend(&out, "{\"index\":", i, ",\"taskId\":\"",
                        TaskId(group.member_ids[i]).ToString(), "\",\"state\":\"",
                        StateEnumName(o.state), "\"");
        if (results) {
          const auto [result, error] = texts[i];
          if (!result.empty()) absl::StrAppend(&out, ",\"result\":\"", absl::Base64Escape(result), "\"");
          if (!error.empty()) {
            out += ",\"error\":";
            AppendJsonString(std::string_view(error.data(), error.size()), &out);
          }
        }
        out.push_back('}');
      }
      out.push_back(']');
    }
    out.push_back('}');
    return out;
  };
  // Results inline only within the group's budget; the member list only if
  // the document fits in a payload.
  const bool fits = group.result_bytes <= group.max_fan_in_bytes;
  std::string doc = build(true, fits);
  if (doc.size() > options_.max_payload_bytes && fits) doc = build(true, false);
  if (doc.size() > options_.max_payload_bytes) doc = build(false, false);
  return doc;
}

// ───────────────────────────── snapshots ─────────────────────────────

GroupInfo Broker::GroupSnapshot(const Group& g) const {
  GroupInfo info;
  info.id = TaskId(g.id);
  info.state = g.state();
  info.total = g.total;
  info.ended = g.ended;
  info.succeeded = g.succeeded;
  info.dead = g.dead;
  info.canceled = g.canceled;
  info.expired = g.expired;
  info.fallback = g.fallback;
  info.has_callback = g.callback.has_value();
  info.callback_task = TaskId(g.callback_task);
  info.created_at = g.created;
  info.finished_at = g.finished;
  info.idempotency_key = g.idempotency_key;
  info.version = change_seq_;
  return info;
}

ChainInfo Broker::ChainSnapshot(const Chain& c) const {
  ChainInfo info;
  info.id = TaskId(c.id);
  info.state = c.state;
  info.stages = static_cast<uint32_t>(c.stages.size());
  info.current_stage = c.current;
  for (uint32_t i = 0; i < c.stages.size(); ++i) {
    ChainInfo::Stage s;
    s.index = i;
    s.queue = c.stages[i].queue;
    s.type = c.stages[i].type;
    s.task_id = TaskId(c.stage_tasks[i]);
    if (Task* t = c.stage_tasks[i] != 0 ? FindTask(TaskId(c.stage_tasks[i])) : nullptr) {
      s.state = t->state;
      if (t->extra() != nullptr && !Succeeded(t->state)) s.error = t->extra()->error;
    } else if (c.stage_states[i] != Chain::kNoState) {
      s.state = static_cast<TaskState>(c.stage_states[i]);
    }
    info.stage_list.push_back(std::move(s));
  }
  info.result = c.result;
  info.error = c.error;
  info.created_at = c.created;
  info.finished_at = c.finished;
  return info;
}

void Broker::NotifyGroupWatchers(Group& group, Deferred& after) {
  if (group.watchers.empty()) return;
  GroupInfo info = GroupSnapshot(group);
  const bool final = info.state != GroupState::kRunning;
  for (WatchId wid : group.watchers) {
    auto it = group_watchers_.find(wid);
    if (it == group_watchers_.end()) continue;
    after.push_back([cb = it->second->callback, info, final] { cb(info, final); });
  }
  if (final) {
    for (WatchId wid : group.watchers) group_watchers_.erase(wid);
    group.watchers.clear();
  }
}

// ───────────────────────────── journal ─────────────────────────────

void Broker::PersistGroup(const Group& g, bool full) {
  if (journal_ != nullptr) batch_.push_back(EncodeGroupRecord(g, full));
}

void Broker::PersistChain(const Chain& c) {
  if (journal_ != nullptr) batch_.push_back(EncodeChainRecord(c));
}

std::string Broker::EncodeGroupRecord(const Group& g, bool full) const {
  pb::JournalEntry e;
  pb::GroupRecord* r = e.mutable_group();
  r->set_id(g.id);
  r->set_total(g.total);
  if (g.callback) TemplateToRecord(*g.callback, r->mutable_callback());
  r->set_max_fan_in_bytes(g.max_fan_in_bytes);
  r->set_idempotency_key(g.idempotency_key);
  r->set_created_us(Us(g.created));
  r->set_finished_us(Us(g.finished));
  r->set_canceled(g.canceled_group);
  r->set_callback_task_id(g.callback_task);
  r->set_callback_error(g.callback_error);
  if (full) {
    for (uint32_t i = 0; i < g.total; ++i) {
      r->add_member_ids(g.member_ids[i]);
      const Group::Outcome& o = g.outcomes[i];
      if (!IsTerminal(o.state)) continue;
      pb::GroupMemberRecord* m = r->add_ended();
      m->set_index(i);
      m->set_state(static_cast<uint32_t>(o.state));
      if (o.stored) {
        m->set_result(o.result);
        m->set_error(o.error);
      }
    }
  }
  return EncodeEntry(e);
}

std::string Broker::EncodeChainRecord(const Chain& c) const {
  pb::JournalEntry e;
  pb::ChainRecord* r = e.mutable_chain();
  r->set_id(c.id);
  r->set_first_queue(c.stages[0].queue);
  r->set_first_type(c.stages[0].type);
  for (size_t i = 1; i < c.stages.size(); ++i) TemplateToRecord(c.stages[i], r->add_stages());
  r->set_created_us(Us(c.created));
  r->set_state(static_cast<uint32_t>(c.state));
  r->set_current(c.current);
  for (uint64_t id : c.stage_tasks) r->add_stage_task_ids(id);
  for (uint8_t s : c.stage_states) r->add_stage_states(s);
  r->set_result(c.result);
  r->set_error(c.error);
  r->set_finished_us(Us(c.finished));
  r->set_cancel_requested(c.cancel_requested);
  return EncodeEntry(e);
}

void Broker::SnapshotWorkflows(std::vector<std::string>& out) const {
  for (const auto& [id, group] : groups_) out.push_back(EncodeGroupRecord(*group, /*full=*/true));
  for (const auto& [id, chain] : chains_) out.push_back(EncodeChainRecord(*chain));
}

absl::Status Broker::ApplyWorkflow(const pb::JournalEntry& e) {
  switch (e.kind_case()) {
    case pb::JournalEntry::kGroup: {
      const pb::GroupRecord& r = e.group();
      // Bounds a record could only break by corruption (--max-group-size is
      // at most 10 million): never allocate what a bad record claims.
      if (r.total() == 0 || r.total() > 10'000'000) {
        return absl::DataLossError(absl::StrCat("journal: group ", TaskId(r.id()).ToString(),
                                                " has ", r.total(), " members"));
      }
      std::unique_ptr<Group>& slot = groups_[r.id()];
      if (slot == nullptr) {
        slot = std::make_unique<Group>();
        slot->id = r.id();
        slot->total = r.total();
        slot->member_ids.assign(r.total(), 0);
        slot->outcomes.resize(r.total());
      }
      Group& g = *slot;
      if (r.has_callback()) g.callback = TemplateFromRecord(r.callback());
      g.max_fan_in_bytes = r.max_fan_in_bytes();
      g.idempotency_key = r.idempotency_key();
      if (!g.idempotency_key.empty()) group_idempotency_[g.idempotency_key] = g.id;
      g.created = FromUs(r.created_us());
      g.finished = FromUs(r.finished_us());
      g.canceled_group = r.canceled();
      if (r.callback_task_id() != 0) g.callback_task = r.callback_task_id();
      g.callback_error = r.callback_error();
      for (int i = 0; i < r.member_ids_size() && i < static_cast<int>(g.total); ++i) {
        g.member_ids[i] = r.member_ids(i);
      }
      for (const pb::GroupMemberRecord& m : r.ended()) {
        if (m.index() >= g.total || m.state() > static_cast<uint32_t>(TaskState::kFallback)) {
          return absl::DataLossError(absl::StrCat("journal: group ", TaskId(g.id).ToString(),
                                                  " has a bad member record"));
        }
        g.SetOutcome(m.index(), static_cast<TaskState>(m.state()), m.result(), m.error());
      }
      return absl::OkStatus();
    }
    case pb::JournalEntry::kChain: {
      const pb::ChainRecord& r = e.chain();
      if (r.stages_size() > 1000) {
        return absl::DataLossError(absl::StrCat("journal: chain ", TaskId(r.id()).ToString(),
                                                " has ", r.stages_size(), " stages"));
      }
      auto chain = std::make_unique<Chain>();
      chain->id = r.id();
      TaskSpec first;
      first.queue = r.first_queue();
      first.type = r.first_type();
      chain->stages.push_back(std::move(first));
      for (const pb::TaskSubmitted& s : r.stages()) chain->stages.push_back(TemplateFromRecord(s));
      const size_t n = chain->stages.size();
      chain->stage_tasks.assign(n, 0);
      chain->stage_states.assign(n, Chain::kNoState);
      for (int i = 0; i < r.stage_task_ids_size() && i < static_cast<int>(n); ++i) {
        chain->stage_tasks[i] = r.stage_task_ids(i);
      }
      for (int i = 0; i < r.stage_states_size() && i < static_cast<int>(n); ++i) {
        chain->stage_states[i] = static_cast<uint8_t>(r.stage_states(i));
      }
      // A newer record keeps what later stage submits taught the old one.
      if (auto old = chains_.find(r.id()); old != chains_.end()) {
        for (size_t i = 0; i < n && i < old->second->stage_tasks.size(); ++i) {
          if (chain->stage_tasks[i] == 0) chain->stage_tasks[i] = old->second->stage_tasks[i];
        }
      }
      chain->current = std::min<uint32_t>(r.current(), static_cast<uint32_t>(n - 1));
      for (size_t i = 0; i < n; ++i) {
        if (chain->stage_tasks[i] != 0) chain->current = std::max<uint32_t>(chain->current, i);
      }
      chain->state = static_cast<ChainState>(std::min<uint32_t>(r.state(), 3));
      chain->result = r.result();
      chain->error = r.error();
      chain->created = FromUs(r.created_us());
      chain->finished = FromUs(r.finished_us());
      chain->cancel_requested = r.cancel_requested();
      chains_[r.id()] = std::move(chain);
      return absl::OkStatus();
    }
    case pb::JournalEntry::kDropped:
      for (uint64_t id : e.dropped().group_ids()) {
        if (auto g = groups_.find(id); g != groups_.end()) {
          if (!g->second->idempotency_key.empty()) {
            group_idempotency_.erase(g->second->idempotency_key);
          }
          groups_.erase(g);
        }
      }
      for (uint64_t id : e.dropped().chain_ids()) chains_.erase(id);
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

void Broker::RecoverWorkflows(Deferred& after) {
  const absl::Time now = clock_->Now();
  std::vector<uint64_t> group_ids;
  for (const auto& [id, g] : groups_) group_ids.push_back(id);
  std::sort(group_ids.begin(), group_ids.end());
  for (uint64_t id : group_ids) {
    auto it = groups_.find(id);
    if (it == groups_.end()) continue;
    Group& g = *it->second;
    // A member is known by its task or by its recorded end. A snapshot taken
    // while the group's submit was in flight lists the member ids all the
    // same, so ids alone do not show that the members reached the disk.
    bool any_member = false;
    for (uint32_t i = 0; i < g.total && !any_member; ++i) {
      any_member = IsTerminal(g.outcomes[i].state) ||
                   (g.member_ids[i] != 0 && FindTask(TaskId(g.member_ids[i])) != nullptr);
    }
    if (!any_member && !g.canceled_group) {
      // Its members never reached the disk (a failed write at a snapshot's cut).
      if (auto k = group_idempotency_.find(g.idempotency_key);
          k != group_idempotency_.end() && k->second == id) {
        group_idempotency_.erase(k);
      }
      groups_.erase(it);
      continue;
    }
    if (!g.canceled_group && g.ended == g.total &&
        (g.finished == absl::InfinitePast() || (g.callback && g.callback_task == 0 &&
                                                 g.callback_error.empty()))) {
      const bool first = g.finished == absl::InfinitePast();
      FinishGroup(g, after);  // arms the drop timer if it finished just now
      if (!first) PushTimer(std::max(now, g.finished + options_.workflow_ttl), kWorkflowDrop, id, 0);
    } else if (g.finished != absl::InfinitePast()) {
      PushTimer(std::max(now, g.finished + options_.workflow_ttl), kWorkflowDrop, id, 0);
    }
  }
  std::vector<uint64_t> chain_ids;
  for (const auto& [id, c] : chains_) chain_ids.push_back(id);
  std::sort(chain_ids.begin(), chain_ids.end());
  for (uint64_t id : chain_ids) {
    Chain& c = *chains_.at(id);
    if (c.state != ChainState::kRunning) {
      PushTimer(std::max(now, c.finished + options_.workflow_ttl), kWorkflowDrop, id, 0);
      continue;
    }
    Task* stage = FindTask(TaskId(c.stage_tasks[c.current]));
    if (stage != nullptr) {
      if (IsTerminal(stage->state)) AdvanceChain(c, *stage, after);
      continue;
    }
    const uint8_t known = c.stage_states[c.current];
    if (c.current == 0 &&
        (known == Chain::kNoState || !IsTerminal(static_cast<TaskState>(known)))) {
      // Its first task never reached the disk (a failed write at a snapshot's
      // cut): the chain never existed.
      chains_.erase(id);
      continue;
    }
    if (known != Chain::kNoState && IsTerminal(static_cast<TaskState>(known)) &&
        !Succeeded(static_cast<TaskState>(known))) {
      EndChain(c, known == static_cast<uint8_t>(TaskState::kCanceled) ? ChainState::kCanceled
                                                                        : ChainState::kFailed,
               "", absl::StrCat("stage ", c.current, " ended ",
                                TaskStateName(static_cast<TaskState>(known))));
    } else {
      EndChain(c, ChainState::kFailed, "",
               absl::StrCat("stage ", c.current, "'s task was lost before the chain could go on"));
      LogError("a chain's current stage is missing after recovery",
               {{"chain", TaskId(id).ToString()}});
    }
  }
}

void Broker::DropWorkflow(uint64_t id, Deferred& /*after*/) {
  const absl::Time now = clock_->Now();
  pb::JournalEntry e;
  if (auto g = groups_.find(id); g != groups_.end()) {
    Group& group = *g->second;
    if (group.state() != GroupState::kRunning && group.finished != absl::InfinitePast() &&
        now >= group.finished + options_.workflow_ttl) {
      if (!group.idempotency_key.empty()) group_idempotency_.erase(group.idempotency_key);
      for (WatchId wid : group.watchers) group_watchers_.erase(wid);
      groups_.erase(g);
      e.mutable_dropped()->add_group_ids(id);
    }
  }
  if (auto c = chains_.find(id); c != chains_.end()) {
    if (c->second->state != ChainState::kRunning &&
        now >= c->second->finished + options_.workflow_ttl) {
      chains_.erase(c);
      e.mutable_dropped()->add_chain_ids(id);
    }
  }
  if (journal_ != nullptr && e.has_dropped()) batch_.push_back(EncodeEntry(e));
}

void Broker::RetryWorkflows(Deferred& after) {
  std::vector<uint64_t> ids(workflow_retry_.begin(), workflow_retry_.end());
  workflow_retry_.clear();
  std::sort(ids.begin(), ids.end());
  for (uint64_t id : ids) {
    if (auto g = groups_.find(id); g != groups_.end()) {
      Group& group = *g->second;
      if (!group.canceled_group && group.ended == group.total && group.callback &&
          group.callback_task == 0 && group.callback_error.empty()) {
        FinishGroup(group, after);
      }
    }
    if (auto c = chains_.find(id); c != chains_.end()) {
      Chain& chain = *c->second;
      std::optional<std::string> payload = std::move(chain.retry_payload);
      chain.retry_payload.reset();
      if (chain.state != ChainState::kRunning) continue;
      Task* stage = FindTask(TaskId(chain.stage_tasks[chain.current]));
      if (stage != nullptr && IsTerminal(stage->state)) {
        AdvanceChain(chain, *stage, after);
      } else if (stage == nullptr && payload && chain.current + 1 < chain.stages.size()) {
        // The stage that ended was dropped (retention): submit the next one
        // with the payload its failed submit carried.
        const uint32_t index = chain.current + 1;
        Link link;
        link.chain = chain.id;
        link.stage = index;
        if (chain.cancel_requested) {
          EndChain(chain, ChainState::kCanceled, "",
                   absl::StrCat("canceled before stage ", index, " was submitted"));
        } else if (absl::StatusOr<Task*> next =
                       SubmitTemplate(chain.stages[index], *std::move(payload), link, after);
                   !next.ok()) {
          EndChain(chain, ChainState::kFailed, "",
                   absl::StrCat("stage ", index, " could not be submitted: ",
                                next.status().message()));
        }
      }
    }
  }
}

// ───────────────────────────── API ─────────────────────────────

void Broker::SubmitGroup(GroupSpec spec, SubmitGroupCallback done) {
  auto reject = [&](absl::Status s) {
    RejectedUnlocked(s, std::max<size_t>(spec.members.size(), 1));
    done(std::move(s));
  };
  if (spec.members.empty()) return reject(Invalid("tasks", "is empty; a group needs a member"));
  if (spec.members.size() > options_.max_group_size) {
    return reject(Invalid("tasks", absl::StrCat("holds ", spec.members.size(),
                                                " tasks; the limit is ", options_.max_group_size,
                                                " (--max-group-size)")));
  }
  size_t bytes = 0;
  for (const TaskSpec& m : spec.members) bytes += m.payload.size();
  if (bytes > options_.max_group_bytes) {
    return reject(Invalid("tasks", absl::StrCat("carry ", bytes, " payload bytes; the limit is ",
                                                options_.max_group_bytes,
                                                " (--max-group-bytes)")));
  }
  const size_t max_fan_in = options_.max_payload_bytes > 2 * kFanInOverhead
                                ? options_.max_payload_bytes - kFanInOverhead
                                : options_.max_payload_bytes / 2;
  if (spec.max_fan_in_bytes > max_fan_in) {
    return reject(Invalid("max_fan_in_bytes",
                          absl::StrCat("is ", spec.max_fan_in_bytes, "; at most ", max_fan_in,
                                       " (--max-payload-bytes less 64 KiB)")));
  }
  if (spec.idempotency_key.size() > kMaxIdempotencyKeyBytes) {
    return reject(Invalid("idempotency_key", absl::StrCat("is ", spec.idempotency_key.size(),
                                                          " bytes; at most 256")));
  }
  const absl::Time now = clock_->Now();
  for (size_t i = 0; i < spec.members.size(); ++i) {
    const TaskSpec& m = spec.members[i];
    const std::string prefix = absl::StrCat("tasks[", i, "].");
    if (!m.idempotency_key.empty()) {
      return reject(Invalid(absl::StrCat(prefix, "idempotency_key"),
                            "is set; a group takes one idempotency_key for all its members"));
    }
    if (!m.then.empty()) {
      return reject(Invalid(absl::StrCat(prefix, "then"), "is not allowed on a group member"));
    }
    if (absl::Status s = ValidateSpec(m, now); !s.ok()) return reject(Prefixed(prefix, s));
  }
  if (spec.callback) {
    if (absl::Status s = ValidateTemplate(*spec.callback, "callback", TemplateKind::kCallback, now);
        !s.ok()) {
      return reject(s);
    }
    // It travels base64-encoded inside the GroupResults document, in the
    // room kept for the document itself.
    if (spec.callback->payload.size() > kMaxCallbackPayloadBytes) {
      return reject(Invalid("callback.payload",
                            absl::StrCat("is ", spec.callback->payload.size(),
                                         " bytes; at most ", kMaxCallbackPayloadBytes,
                                         " (it is carried inside the GroupResults document)")));
    }
  }

  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    absl::Status refused;
    if (draining_) {
      refused = absl::UnavailableError("the broker is draining; submit to another broker or retry later");
    }
    if (refused.ok() && !spec.idempotency_key.empty()) {
      if (auto it = group_idempotency_.find(spec.idempotency_key); it != group_idempotency_.end()) {
        if (auto g = groups_.find(it->second); g != groups_.end()) {
          SubmitGroupResult r;
          r.group = GroupSnapshot(*g->second);
          for (uint64_t id : g->second->member_ids) r.task_ids.push_back(TaskId(id));
          r.deduplicated = true;
          // Answered once the original is durable.
          OnCommit([done, r = std::move(r)](absl::Status s) mutable {
            if (!s.ok()) return done(s);
            done(std::move(r));
          });
          refused = absl::AlreadyExistsError("");  // handled: nothing to submit
        }
      }
    }
    // Every queue must exist (or be created) and have room for its members.
    std::vector<Queue*> queues(spec.members.size());
    absl::flat_hash_map<Queue*, uint64_t> wanted;
    for (size_t i = 0; refused.ok() && i < spec.members.size(); ++i) {
      absl::StatusOr<Queue*> q = QueueForSubmit(spec.members[i].queue);
      if (!q.ok()) {
        refused = Prefixed(absl::StrCat("tasks[", i, "]: "), q.status());
        break;
      }
      queues[i] = *q;
      ++wanted[*q];
      if (!spec.members[i].retry.empty()) {
        if (absl::StatusOr<RetryPolicy> r = ResolveRetry(spec.members[i].retry, (*q)->config().retry);
            !r.ok()) {
          refused = Prefixed(absl::StrCat("tasks[", i, "]."), r.status());
        }
      }
    }
    if (refused.ok() && spec.callback) {
      if (absl::StatusOr<Queue*> q = QueueForSubmit(spec.callback->queue); !q.ok()) {
        refused = Prefixed("callback: ", q.status());
      }
    }
    for (const auto& [queue, n] : wanted) {
      if (!refused.ok()) break;
      if (queue->active() + n > queue->config().capacity) {
        refused = absl::ResourceExhaustedError(absl::StrCat(
            "queue ", Quoted(queue->name()), " has room for ",
            queue->config().capacity - std::min(queue->active(), queue->config().capacity),
            " more unfinished tasks (capacity ", queue->config().capacity, "); the group needs ",
            n, "; no member was submitted"));
      }
    }
    if (refused.code() == absl::StatusCode::kAlreadyExists) {
      Commit(after);
    } else if (!refused.ok()) {
      Rejected(spec.members[0].queue, refused, spec.members.size());
      after.push_back([done = std::move(done), refused] { done(refused); });
      Commit(after);  // queues created on the way are recorded
    } else {
    auto group = std::make_unique<Group>();
    Group& g = *group;
    g.id = NextId().value();
    g.total = static_cast<uint32_t>(spec.members.size());
    g.member_ids.assign(g.total, 0);
    g.outcomes.resize(g.total);
    g.callback = std::move(spec.callback);
    g.max_fan_in_bytes = spec.max_fan_in_bytes != 0 ? spec.max_fan_in_bytes : max_fan_in;
    g.idempotency_key = spec.idempotency_key;
    g.created = clock_->Now();
    if (!g.idempotency_key.empty()) group_idempotency_[g.idempotency_key] = g.id;
    groups_.emplace(g.id, std::move(group));
    PersistGroup(g, /*full=*/false);
    SubmitGroupResult result;
    result.task_ids.reserve(g.total);
    for (uint32_t i = 0; i < g.total; ++i) {
      Link link;
      link.group = g.id;
      link.index = i;
      absl::StatusOr<Task*> task = CreateTask(spec.members[i], queues[i], &link, after);
      // Checked above: creation cannot fail here.
      result.task_ids.push_back(task.ok() ? (*task)->id() : TaskId());
    }
    result.group = GroupSnapshot(g);
    const uint64_t group_id = g.id;
    OnCommit([this, done = std::move(done), result = std::move(result), group_id,
              n = g.total](absl::Status s) mutable {
      if (!s.ok()) {
        if (listener_ != nullptr) listener_->OnRejected("", "journal", n);
        return done(s);
      }
      (void)group_id;
      done(std::move(result));
    });
    Commit(after);
    }
  }
  Run(after);
}

absl::StatusOr<SubmitGroupResult> Broker::SubmitGroupNow(GroupSpec spec) {
  absl::Notification done;
  absl::StatusOr<SubmitGroupResult> out;
  SubmitGroup(std::move(spec), [&](absl::StatusOr<SubmitGroupResult> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

absl::StatusOr<GroupInfo> Broker::GetGroup(TaskId id, bool members, bool results,
                                           uint32_t offset, uint32_t limit) const {
  if (limit == 0) limit = kDefaultMemberPage;
  if (limit > kMaxMemberPage) {
    return Invalid("member_limit", absl::StrCat("is ", limit, "; must be 1 to 10000"));
  }
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(id.value());
  if (it == groups_.end()) return NotFoundGroup(id);
  const Group& g = *it->second;
  GroupInfo info = GroupSnapshot(g);
  if (!members) return info;
  const uint32_t end = offset >= g.total ? offset : std::min<uint64_t>(g.total, uint64_t{offset} + limit);
  for (uint32_t i = offset; i < end; ++i) {
    GroupMemberInfo m;
    m.index = i;
    m.task_id = TaskId(g.member_ids[i]);
    const Group::Outcome& o = g.outcomes[i];
    Task* task = g.member_ids[i] != 0 ? FindTask(m.task_id) : nullptr;
    m.state = IsTerminal(o.state) ? o.state : (task != nullptr ? task->state : o.state);
    if (results && IsTerminal(m.state)) {
      if (o.stored) {
        m.result = o.result;
        m.error = o.error;
      } else if (task != nullptr && task->extra() != nullptr) {
        if (Succeeded(m.state)) {
          m.result = task->extra()->result;
        } else {
          m.error = task->extra()->error;
        }
      }
    }
    info.members.push_back(std::move(m));
  }
  return info;
}

absl::StatusOr<GroupInfo> Broker::CancelGroup(TaskId id, Ticket* ticket) {
  Deferred after;
  GroupInfo info;
  {
    absl::MutexLock lock(&mu_);
    auto it = groups_.find(id.value());
    if (it == groups_.end()) return NotFoundGroup(id);
    Group& g = *it->second;
    if (g.state() == GroupState::kDone) {
      return absl::FailedPreconditionError(absl::StrCat(
          "group ", id.ToString(), " is already DONE (every member ended",
          g.callback ? ", its callback was submitted)" : ")"));
    }
    if (!g.canceled_group) {
      g.canceled_group = true;
      g.finished = clock_->Now();
      PersistGroup(g, /*full=*/false);
      PushTimer(g.finished + options_.workflow_ttl, kWorkflowDrop, g.id, 0);
      // The group is CANCELED already, so the first member end below would
      // be its watchers' final notification: set them aside until every
      // queued member is counted.
      std::vector<WatchId> watchers = std::move(g.watchers);
      g.watchers.clear();
      const std::vector<uint64_t> members = g.member_ids;
      for (uint64_t member : members) {
        Task* task = member != 0 ? FindTask(TaskId(member)) : nullptr;
        if (task != nullptr && !IsTerminal(task->state)) CancelLocked(task, after);
      }
      if (auto again = groups_.find(id.value()); again != groups_.end()) {
        again->second->watchers = std::move(watchers);
        NotifyGroupWatchers(*again->second, after);
      }
    }
    info = GroupSnapshot(*groups_.at(id.value()));
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<WatchId> Broker::WatchGroup(TaskId id, GroupWatchCallback cb) {
  GroupInfo info;
  WatchId wid = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = groups_.find(id.value());
    if (it == groups_.end()) return NotFoundGroup(id);
    info = GroupSnapshot(*it->second);
    if (info.state == GroupState::kRunning) {
      wid = next_watch_id_++;
      group_watchers_.emplace(wid, std::make_unique<GroupWatcher>(GroupWatcher{id.value(), cb}));
      it->second->watchers.push_back(wid);
    }
  }
  cb(info, /*final=*/wid == 0);
  return wid;
}

void Broker::UnwatchGroup(WatchId id) {
  absl::MutexLock lock(&mu_);
  auto it = group_watchers_.find(id);
  if (it == group_watchers_.end()) return;
  const uint64_t group_id = it->second->group;
  group_watchers_.erase(it);
  if (auto g = groups_.find(group_id); g != groups_.end()) {
    auto& ids = g->second->watchers;
    ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  }
}

absl::StatusOr<ChainInfo> Broker::GetChain(TaskId id) const {
  absl::MutexLock lock(&mu_);
  auto it = chains_.find(id.value());
  if (it == chains_.end()) return NotFoundChain(id);
  return ChainSnapshot(*it->second);
}

absl::StatusOr<ChainInfo> Broker::CancelChain(TaskId id, Ticket* ticket) {
  Deferred after;
  ChainInfo info;
  {
    absl::MutexLock lock(&mu_);
    auto it = chains_.find(id.value());
    if (it == chains_.end()) return NotFoundChain(id);
    Chain& c = *it->second;
    if (c.state != ChainState::kRunning) {
      return absl::FailedPreconditionError(absl::StrCat("chain ", id.ToString(),
                                                        " has already ended (",
                                                        ChainStateName(c.state), ")"));
    }
    if (!c.cancel_requested) {
      c.cancel_requested = true;
      PersistChain(c);
      Task* stage = FindTask(TaskId(c.stage_tasks[c.current]));
      if (stage != nullptr && !IsTerminal(stage->state)) CancelLocked(stage, after);
    }
    info = ChainSnapshot(*chains_.at(id.value()));
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

}  // namespace conveyor::server
