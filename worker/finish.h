// How the worker turns leased tasks into attempts and ends them, shared by
// single tasks (worker/worker.cc) and batches (worker/batch_runner.h): the
// task's data from the Lease answer, its log lines, and the end of an
// attempt (outcome, metrics, log line, report).
//
// Thread-safe (the sinks are).
#ifndef CONVEYOR_WORKER_FINISH_H_
#define CONVEYOR_WORKER_FINISH_H_

#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "conveyor/v1/conveyor.pb.h"
#include "worker/attempt.h"
#include "worker/handler.h"
#include "worker/heartbeater.h"
#include "worker/metrics.h"
#include "worker/outcome.h"
#include "worker/reporter.h"

namespace conveyor::worker {

// A finished attempt's report is kept at least this long, even when its
// lease (as last seen) has just run out: the broker still takes a report
// with the current token until it grants a newer lease.
inline constexpr absl::Duration kMinReportWindow = absl::Seconds(1);

// The task as the worker sees it; moves the id, queue, type and payload
// out of `t` (they are not needed twice).
TaskInfo InfoFromProto(v1::LeasedTask& t, const std::string& worker_id);

// The task's `traceparent` header, or "".
std::string Traceparent(const TaskInfo& t);

// A log line about one task: task id, queue, type, worker id and
// traceparent, then up to five more fields.
void LogTask(LogLevel level, std::string_view msg, const TaskInfo& t,
             std::initializer_list<LogField> extra = {});

// The report for `o` (kNone becomes a Release; callers skip kNone).
Report ReportFor(const TaskInfo& t, AttemptOutcome o, absl::Time drop_at);

// Where the end of an attempt goes. `metrics` may be null.
struct FinishSinks {
  Heartbeater* heartbeater = nullptr;
  Reporter* reporter = nullptr;
  WorkerMetrics* metrics = nullptr;
};

// Ends an attempt whose TryFinish() won: stops its heartbeats, decides its
// outcome from `answer` and `facts` (worker/outcome.h), counts it, logs it
// ("task finished", with `batch_size` when it ran in a batch of more than
// one) and queues its report (none when the lease was lost).
void FinishAttempt(const Attempt& attempt, absl::StatusOr<std::string> answer,
                   const AttemptFacts& facts, absl::Time now, const FinishSinks& sinks,
                   size_t batch_size = 1);

// Hands a leased task straight back (Release: spends nothing) without
// running it; `why` is logged.
void HandBack(const TaskInfo& t, absl::Time lease_expires_at, absl::Time now, Reporter* reporter,
              std::string_view why);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_FINISH_H_
