#include "worker/finish.h"

#include <algorithm>
#include <utility>

#include "common/grpc_util.h"

namespace conveyor::worker {

TaskInfo InfoFromProto(v1::LeasedTask& t, const std::string& worker_id) {
  TaskInfo info;
  info.id = std::move(*t.mutable_id());
  info.queue = std::move(*t.mutable_queue());
  info.type = std::move(*t.mutable_type());
  info.payload = std::move(*t.mutable_payload());
  info.headers.insert(t.headers().begin(), t.headers().end());
  info.attempt = t.attempt();
  info.max_attempts = t.max_attempts();
  info.token = t.token();
  info.deadline = FromProto(t.deadline(), absl::InfiniteFuture());
  info.timeout = FromProto(t.timeout());
  info.worker_id = worker_id;
  return info;
}

std::string Traceparent(const TaskInfo& t) {
  auto it = t.headers.find("traceparent");
  return it == t.headers.end() ? std::string() : it->second;
}

void LogTask(LogLevel level, std::string_view msg, const TaskInfo& t,
             std::initializer_list<LogField> extra) {
  if (!LogEnabled(level)) return;
  const std::string tp = Traceparent(t);
  // Log takes an initializer_list: one spelled-out call per count of extra
  // fields.
#define CONVEYOR_TASK_FIELDS                                                         \
  {"task_id", t.id}, {"queue", t.queue}, {"type", t.type}, {"worker_id", t.worker_id}, \
      {"traceparent", tp}
  const LogField* e = extra.begin();
  switch (extra.size()) {
    case 0: Log(level, msg, {CONVEYOR_TASK_FIELDS}); break;
    case 1: Log(level, msg, {CONVEYOR_TASK_FIELDS, e[0]}); break;
    case 2: Log(level, msg, {CONVEYOR_TASK_FIELDS, e[0], e[1]}); break;
    case 3: Log(level, msg, {CONVEYOR_TASK_FIELDS, e[0], e[1], e[2]}); break;
    case 4: Log(level, msg, {CONVEYOR_TASK_FIELDS, e[0], e[1], e[2], e[3]}); break;
    case 5: Log(level, msg, {CONVEYOR_TASK_FIELDS, e[0], e[1], e[2], e[3], e[4]}); break;
    default: Log(level, msg, {CONVEYOR_TASK_FIELDS, e[0], e[1], e[2], e[3], e[4], e[5]}); break;
  }
#undef CONVEYOR_TASK_FIELDS
}

Report ReportFor(const TaskInfo& t, AttemptOutcome o, absl::Time drop_at) {
  Report r;
  switch (o.kind) {
    case ReportKind::kComplete: r.kind = Report::Kind::kComplete; break;
    case ReportKind::kFail: r.kind = Report::Kind::kFail; break;
    case ReportKind::kRelease:
    case ReportKind::kNone: r.kind = Report::Kind::kRelease; break;
  }
  r.task_id = t.id;
  r.token = t.token;
  r.result = std::move(o.result);
  r.error = std::move(o.error);
  r.reason = std::move(o.reason);
  r.retryable = o.retryable;
  r.throttled = o.throttled;
  r.retry_after = o.retry_after;
  r.drop_at = drop_at;
  r.queue = t.queue;
  r.type = t.type;
  r.traceparent = Traceparent(t);
  return r;
}

namespace {

// The "task finished" line of one attempt.
void LogFinished(LogLevel level, const TaskInfo& t, const AttemptOutcome& outcome,
                 absl::Duration took, size_t batch_size) {
  const long long took_ms = absl::ToInt64Milliseconds(took);
  const LogField retry_after = {
      "retry_after_ms", static_cast<long long>(absl::ToInt64Milliseconds(outcome.retry_after))};
  const LogField batch = {"batch_size", static_cast<unsigned long>(batch_size)};
  if (outcome.throttled && batch_size > 1) {
    LogTask(level, "task finished", t,
            {{"outcome", outcome.label}, {"duration_ms", took_ms}, {"reason", outcome.reason},
             {"error", outcome.error}, retry_after, batch});
  } else if (outcome.throttled) {
    LogTask(level, "task finished", t,
            {{"outcome", outcome.label}, {"duration_ms", took_ms}, {"reason", outcome.reason},
             {"error", outcome.error}, retry_after});
  } else if (batch_size > 1) {
    LogTask(level, "task finished", t,
            {{"outcome", outcome.label}, {"duration_ms", took_ms}, {"reason", outcome.reason},
             {"error", outcome.error}, batch});
  } else {
    LogTask(level, "task finished", t,
            {{"outcome", outcome.label}, {"duration_ms", took_ms}, {"reason", outcome.reason},
             {"error", outcome.error}});
  }
}

}  // namespace

void FinishAttempt(const Attempt& attempt, absl::StatusOr<std::string> answer,
                   const AttemptFacts& facts, absl::Time now, const FinishSinks& sinks,
                   size_t batch_size) {
  const TaskInfo& t = attempt.task();
  sinks.heartbeater->Untrack(attempt);
  AttemptOutcome outcome = DecideOutcome(std::move(answer), facts);
  const absl::Duration took = now - attempt.received_at();
  if (sinks.metrics != nullptr) sinks.metrics->TaskFinished(t.queue, outcome.label, took);

  const LogLevel level =
      outcome.kind == ReportKind::kNone ? LogLevel::kWarning : LogLevel::kInfo;
  // The fields are formatted (quoted text) as they are built: only when the
  // line is written.
  if (LogEnabled(level)) LogFinished(level, t, outcome, took, batch_size);
  if (outcome.kind == ReportKind::kNone) return;
  sinks.reporter->Add(ReportFor(t, std::move(outcome),
                                std::max(attempt.lease_expires_at(), now + kMinReportWindow)));
}

void HandBack(const TaskInfo& t, absl::Time lease_expires_at, absl::Time now, Reporter* reporter,
              std::string_view why) {
  LogTask(LogLevel::kInfo, why, t);
  AttemptOutcome release;
  release.kind = ReportKind::kRelease;
  reporter->Add(ReportFor(t, std::move(release), std::max(lease_expires_at, now + kMinReportWindow)));
}

}  // namespace conveyor::worker
