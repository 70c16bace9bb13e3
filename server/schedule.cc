// Recurring schedules of the broker: a task template submitted on every tick
// of a cron expression (server/cron.h), exactly one task per tick.
//
// A schedule keeps `done_through`: every tick at or before it was handled.
// A tick's task is submitted with its schedule and tick in its own submit
// record, and the schedule's record follows in the same journal write; on
// replay either one moves done_through past the tick, so a tick whose task
// reached the disk is never run again, and one whose task did not is run
// (or counted missed) at start. Ticks that passed while the broker was down
// follow the schedule's misfire policy.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "server/broker.h"
#include "server/broker_internal.h"
#include "server/journal_codec.h"

namespace conveyor::server {
using namespace internal;  // NOLINT: this file implements Broker
namespace pb = ::conveyor::internal;

namespace {

int64_t Us(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return 0;
  return absl::ToUnixMicros(t);
}
absl::Time FromUs(int64_t us) { return us == 0 ? absl::InfinitePast() : absl::FromUnixMicros(us); }

absl::Status NotFoundSchedule(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("schedule ", Quoted(name), " not found"));
}

// Counting missed ticks over a very long outage stops here (the count is
// then a lower bound; the log says so).
constexpr uint64_t kMaxCountedMisses = 1'000'000;

}  // namespace

ScheduleInfo Broker::ScheduleSnapshot(const ScheduleState& s) const {
  ScheduleInfo info;
  info.spec = s.spec;
  info.created_at = s.created;
  info.next_run_at = s.spec.paused ? absl::InfiniteFuture() : s.next;
  info.last_run_at = s.last_run;
  info.last_task = TaskId(s.last_task);
  info.runs = s.runs;
  info.missed = s.missed;
  info.last_error = s.last_error;
  return info;
}

std::string Broker::EncodeScheduleRecord(const ScheduleState& s, bool deleted) const {
  pb::JournalEntry e;
  pb::ScheduleRecord* r = e.mutable_schedule();
  r->set_name(s.spec.name);
  r->set_deleted(deleted);
  if (!deleted) {
    r->set_cron(s.spec.cron);
    r->set_time_zone(s.spec.time_zone);
    TemplateToRecord(s.spec.task, r->mutable_task());
    r->set_misfire(static_cast<uint32_t>(s.spec.misfire));
    r->set_paused(s.spec.paused);
    r->set_created_us(Us(s.created));
    r->set_last_tick_us(Us(s.last_run));
    r->set_last_task_id(s.last_task);
    r->set_runs(s.runs);
    r->set_missed(s.missed);
    r->set_last_error(s.last_error);
    r->set_done_through_us(Us(s.done_through));
  }
  return EncodeEntry(e);
}

void Broker::PersistSchedule(const ScheduleState& s, bool deleted) {
  if (journal_ != nullptr) batch_.push_back(EncodeScheduleRecord(s, deleted));
}

void Broker::ArmSchedule(ScheduleState& s) {
  s.next = s.cron->Next(s.done_through);
  if (!s.spec.paused && s.next != absl::InfiniteFuture()) {
    PushTimer(s.next, kScheduleTick, s.key, absl::ToUnixMicros(s.next));
  }
}

void Broker::FireSchedule(ScheduleState& s, absl::Time tick, Deferred& after) {
  s.done_through = std::max(s.done_through, tick);
  Link link;
  link.schedule = s.spec.name;
  link.schedule_tick_us = absl::ToUnixMicros(tick);
  absl::StatusOr<Queue*> queue = QueueForSubmit(s.spec.task.queue);
  absl::Status refused;
  if (!queue.ok()) {
    refused = queue.status();
  } else if ((*queue)->full()) {
    refused = absl::ResourceExhaustedError(
        absl::StrCat("queue ", Quoted((*queue)->name()), " is full (capacity ",
                     (*queue)->config().capacity, " unfinished tasks)"));
  } else {
    // The template's payload is the task's; a delay counts from the tick's run.
    absl::StatusOr<Task*> task = SubmitTemplate(s.spec.task, s.spec.task.payload, link, after);
    if (task.ok()) {
      ++s.runs;
      s.last_run = tick;
      s.last_task = (*task)->id().value();
      s.last_error.clear();
    } else {
      refused = task.status();
    }
  }
  if (!refused.ok()) {
    ++s.missed;
    s.last_error = absl::StrCat("tick ", absl::FormatTime(tick), ": ", refused.message());
    LogWarning("a schedule's tick was not run", {{"schedule", s.spec.name}, {"error", refused}});
    Rejected(s.spec.task.queue, refused);
  }
  PersistSchedule(s);
}

void Broker::OnScheduleTimer(uint64_t key, int64_t tick_us, Deferred& after) {
  auto it = schedules_by_key_.find(key);
  if (it == schedules_by_key_.end()) return;  // deleted
  ScheduleState& s = *it->second;
  const absl::Time tick = absl::FromUnixMicros(tick_us);
  // A stale timer (paused and resumed, or already run) does nothing.
  if (s.spec.paused || tick != s.next || tick <= s.done_through) return;
  if (draining_) return;  // the next start runs or skips it (misfire policy)
  FireSchedule(s, tick, after);
  // Ticks that passed while this one waited (a stalled broker, a clock
  // jump) are missed: the schedule goes on from now, it does not run a
  // backlog.
  const absl::Time now = clock_->Now();
  uint64_t late = 0;
  for (absl::Time t = s.cron->Next(tick); t <= now && late < kMaxCountedMisses;
       t = s.cron->Next(t)) {
    ++late;
  }
  if (late > 0) {
    s.missed += late;
    s.done_through = now;
    s.last_error = absl::StrCat(late, " tick(s) passed while the broker was busy; skipped");
    PersistSchedule(s);
  }
  ArmSchedule(s);
}

absl::StatusOr<ScheduleInfo> Broker::CreateSchedule(ScheduleSpec spec, Ticket* ticket) {
  if (absl::Status s = ValidateQueueName(spec.name); !s.ok()) {
    // Same rules as a queue name; the message names this field.
    absl::string_view problem = s.message();
    absl::ConsumePrefix(&problem, "queue");
    return absl::InvalidArgumentError(absl::StrCat("name", problem));
  }
  absl::StatusOr<CronSchedule> cron = CronSchedule::Parse(spec.cron, spec.time_zone);
  if (!cron.ok()) return cron.status();
  const absl::Time now = clock_->Now();
  if (absl::Status s = ValidateTemplate(spec.task, "task", TemplateKind::kSchedule, now); !s.ok()) {
    return s;
  }
  Deferred after;
  ScheduleInfo info;
  {
    absl::MutexLock lock(&mu_);
    if (schedules_.contains(spec.name)) {
      return absl::AlreadyExistsError(
          absl::StrCat("schedule ", Quoted(spec.name), " already exists"));
    }
    if (schedules_.size() >= options_.max_schedules) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the broker holds ", schedules_.size(),
                       " schedules, the limit (--max-schedules)"));
    }
    if (!options_.auto_create_queues && !queues_.contains(spec.task.queue)) {
      return absl::NotFoundError(absl::StrCat(
          "queue ", Quoted(spec.task.queue),
          " not found (the broker runs with --auto-create-queues=false; create it first)"));
    }
    auto state = std::make_unique<ScheduleState>();
    ScheduleState& s = *state;
    s.spec = std::move(spec);
    s.cron = std::move(*cron);
    s.key = next_schedule_key_++;
    s.created = now;
    s.done_through = now;
    schedules_by_key_[s.key] = &s;
    schedules_.emplace(s.spec.name, std::move(state));
    ArmSchedule(s);
    PersistSchedule(s);
    info = ScheduleSnapshot(s);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<ScheduleInfo> Broker::GetSchedule(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = schedules_.find(name);
  if (it == schedules_.end()) return NotFoundSchedule(name);
  return ScheduleSnapshot(*it->second);
}

std::vector<ScheduleInfo> Broker::ListSchedules() const {
  absl::MutexLock lock(&mu_);
  std::vector<ScheduleInfo> out;
  out.reserve(schedules_.size());
  for (const auto& [name, s] : schedules_) out.push_back(ScheduleSnapshot(*s));
  return out;
}

absl::StatusOr<ScheduleInfo> Broker::PauseSchedule(absl::string_view name, Ticket* ticket) {
  Deferred after;
  ScheduleInfo info;
  {
    absl::MutexLock lock(&mu_);
    auto it = schedules_.find(name);
    if (it == schedules_.end()) return NotFoundSchedule(name);
    ScheduleState& s = *it->second;
    if (!s.spec.paused) {
      s.spec.paused = true;
      PersistSchedule(s);
    }
    info = ScheduleSnapshot(s);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::StatusOr<ScheduleInfo> Broker::ResumeSchedule(absl::string_view name, Ticket* ticket) {
  Deferred after;
  ScheduleInfo info;
  {
    absl::MutexLock lock(&mu_);
    auto it = schedules_.find(name);
    if (it == schedules_.end()) return NotFoundSchedule(name);
    ScheduleState& s = *it->second;
    if (s.spec.paused) {
      // Ticks that passed while paused are skipped, not missed.
      s.spec.paused = false;
      s.done_through = std::max(s.done_through, clock_->Now());
      ArmSchedule(s);
      PersistSchedule(s);
    }
    info = ScheduleSnapshot(s);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return info;
}

absl::Status Broker::DeleteSchedule(absl::string_view name, Ticket* ticket) {
  Deferred after;
  {
    absl::MutexLock lock(&mu_);
    auto it = schedules_.find(name);
    if (it == schedules_.end()) return NotFoundSchedule(name);
    PersistSchedule(*it->second, /*deleted=*/true);
    schedules_by_key_.erase(it->second->key);
    schedules_.erase(it);
    Ticket t = Commit(after);
    if (ticket != nullptr) *ticket = t;
  }
  Run(after);
  return absl::OkStatus();
}

// ───────────────────────────── replay ─────────────────────────────

absl::Status Broker::ApplySchedule(const pb::ScheduleRecord& r) {
  auto it = schedules_.find(r.name());
  if (r.deleted()) {
    if (it != schedules_.end()) {
      schedules_by_key_.erase(it->second->key);
      schedules_.erase(it);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<CronSchedule> cron = CronSchedule::Parse(r.cron(), r.time_zone());
  if (!cron.ok()) {
    // Written by a broker that accepted it: the zone data must have changed.
    return absl::FailedPreconditionError(absl::StrCat(
        "journal: schedule ", Quoted(r.name()), " no longer parses: ", cron.status().message(),
        " (is the tzdata package installed?)"));
  }
  if (it == schedules_.end()) {
    auto state = std::make_unique<ScheduleState>();
    state->key = next_schedule_key_++;
    schedules_by_key_[state->key] = state.get();
    it = schedules_.emplace(r.name(), std::move(state)).first;
  }
  ScheduleState& s = *it->second;
  s.spec.name = r.name();
  s.spec.cron = r.cron();
  s.spec.time_zone = r.time_zone();
  s.spec.task = TemplateFromRecord(r.task());
  s.spec.misfire = r.misfire() == static_cast<uint32_t>(MisfirePolicy::kRunOnce)
                       ? MisfirePolicy::kRunOnce
                       : MisfirePolicy::kSkip;
  s.spec.paused = r.paused();
  s.cron = std::move(*cron);
  s.created = FromUs(r.created_us());
  // Never backwards: a replayed tick task may have moved it further.
  const absl::Time done = FromUs(r.done_through_us());
  if (done > s.done_through) {
    s.done_through = done;
    s.last_run = FromUs(r.last_tick_us());
    s.last_task = r.last_task_id();
    s.runs = r.runs();
    s.missed = r.missed();
    s.last_error = r.last_error();
  } else {
    s.runs = std::max(s.runs, r.runs());
    s.missed = std::max(s.missed, r.missed());
  }
  return absl::OkStatus();
}

void Broker::NoteScheduleTick(absl::string_view name, int64_t tick_us, uint64_t task_id) {
  auto it = schedules_.find(name);
  if (it == schedules_.end()) return;
  ScheduleState& s = *it->second;
  const absl::Time tick = absl::FromUnixMicros(tick_us);
  if (tick <= s.done_through) return;  // known already
  s.done_through = tick;
  s.last_run = tick;
  s.last_task = task_id;
  ++s.runs;
}

void Broker::RecoverSchedules(Deferred& after) {
  const absl::Time now = clock_->Now();
  for (auto& [name, state] : schedules_) {
    ScheduleState& s = *state;
    if (s.spec.paused) {
      s.next = s.cron->Next(s.done_through);
      continue;
    }
    // Ticks that passed while the broker was down.
    const absl::Time latest = s.cron->LastBetween(s.done_through, now);
    if (latest != absl::InfinitePast()) {
      uint64_t passed = 0;
      for (absl::Time t = s.cron->Next(s.done_through);
           t <= now && passed < kMaxCountedMisses; t = s.cron->Next(t)) {
        ++passed;
      }
      if (s.spec.misfire == MisfirePolicy::kRunOnce) {
        s.missed += passed - 1;
        FireSchedule(s, latest, after);
      } else {
        s.missed += passed;
        s.done_through = now;
        s.last_error = absl::StrCat(passed, passed >= kMaxCountedMisses ? "+" : "",
                                    " tick(s) passed while the broker was down (misfire "
                                    "policy: skip)");
        PersistSchedule(s);
      }
      LogInfo("schedule ticks missed while the broker was down",
              {{"schedule", name},
               {"ticks", static_cast<unsigned long long>(passed)},
               {"policy", s.spec.misfire == MisfirePolicy::kRunOnce ? "run-once" : "skip"}});
    }
    s.done_through = std::max(s.done_through, latest == absl::InfinitePast() ? s.done_through : now);
    ArmSchedule(s);
  }
}

}  // namespace conveyor::server
