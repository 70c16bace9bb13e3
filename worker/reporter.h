// Reporter: delivers the results of finished attempts to one broker, batched.
//
// Attempts end on many threads; each hands its report (Complete, Fail or
// Release) to Add(), which only queues it. One thread sends what is queued
// in batched calls (one Complete, one Fail and one Release call per round)
// as soon as `max_batch` reports wait or `flush_delay` after the oldest
// arrived. The worker uses 1 ms, and only while it holds other tasks
// (`linger_while`): an idle worker's lone result goes at once, and the
// reports that arrive while a call is in flight go together in the next
// call, so batches grow with the load.
//
// A throttled Fail carries `throttled` and `retry_after` (see Report).
//
// Failures: when a call fails as a whole (broker unreachable, deadline), its
// reports stay queued and are retried with exponential backoff
// (`initial_backoff` doubling up to `max_backoff`), each until its `drop_at`
// (when its lease would have expired; the broker then retries the task by
// itself), when it is dropped with a log line. Per item: OK is delivered;
// FAILED_PRECONDITION or NOT_FOUND (stale token, unknown task) is rejected
// for good and logged; a Complete refused with INVALID_ARGUMENT (result over
// the broker's limit) becomes a non-retryable Fail (reason "invalid_result")
// carrying the broker's message; any other item error is retried like a
// failed call.
//
// Memory is bounded: at most `max_pending` reports are kept; past that the
// oldest are dropped, each with a log line. The worker's lease loop waits
// for room (WaitForRoom: at most half of max_pending waiting) before it
// leases more, so a broker slow to take reports slows leasing down instead
// of losing results. Add never waits, and Stop waits at most its timeout
// (plus one call's deadline). A call carries at most `max_batch` reports and
// about 4 MiB of results and errors.
//
// Thread-safe. SendOnce() runs one round synchronously, for tests (which do
// not Start() the thread); its times come from the injected Clock.
#ifndef CONVEYOR_WORKER_REPORTER_H_
#define CONVEYOR_WORKER_REPORTER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "worker/broker_rpc.h"

namespace conveyor::worker {

struct Report {
  enum class Kind { kComplete, kFail, kRelease };
  Kind kind = Kind::kComplete;
  std::string task_id;
  uint64_t token = 0;
  std::string result;      // kComplete
  std::string error;       // kFail
  std::string reason;      // kFail
  bool retryable = true;   // kFail
  // kFail: a throttle (FailRequest.Item.throttled): back to READY without
  // spending an attempt, the task's rate key (or its queue) paused for
  // `retry_after`. Sent clamped to [0, 1 h]; 0 is left unset (the broker's
  // default, 1 s).
  bool throttled = false;
  absl::Duration retry_after = absl::ZeroDuration();
  // Not sent after this time: the lease would have expired by then.
  absl::Time drop_at = absl::InfiniteFuture();
  // For log lines.
  std::string queue;
  std::string type;
  std::string traceparent;
};

struct ReporterOptions {
  size_t max_batch = 100;
  absl::Duration flush_delay = absl::Milliseconds(5);
  // When set, reports wait `flush_delay` for company only while it says so
  // (the worker: while it holds other tasks, whose results could join);
  // otherwise they go at once. Called with the reporter's lock held: it must
  // not call into the reporter.
  std::function<bool()> linger_while;
  size_t max_pending = 10'000;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  // For log lines.
  std::string worker_id;
  std::string broker;
};

struct ReporterStats {
  uint64_t delivered = 0;
  uint64_t rejected = 0;          // FAILED_PRECONDITION / NOT_FOUND
  uint64_t dropped_expired = 0;   // past drop_at, or left at Stop
  uint64_t dropped_overflow = 0;  // over max_pending
  uint64_t failed_calls = 0;
  uint64_t calls = 0;
};

class Reporter {
 public:
  // Told whether each call reached the broker.
  using ConnectionObserver = std::function<void(bool ok)>;

  // `rpc` and `clock` must outlive the reporter.
  Reporter(BrokerRpc* rpc, ReporterOptions options, const Clock* clock,
           ConnectionObserver observer = {});
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  // Queues a report; never blocks.
  void Add(Report report);

  // Starts the sending thread.
  void Start();
  // Keeps sending until nothing is pending or `timeout` passes, then stops
  // the thread and drops what is left (logged). Returns how many were left.
  size_t Stop(absl::Duration timeout);

  // One round: drops expired reports, and unless backing off sends up to
  // `max_batch` of the oldest. Returns when the next round is due
  // (InfiniteFuture when nothing is pending).
  absl::Time SendOnce();

  size_t pending() const;
  ReporterStats stats() const;

  // Flow control for the lease loop: blocks until at most half of
  // `max_pending` reports wait or are in the call in flight (or the
  // reporter stops), at most `timeout`.
  // True if there is room.
  bool WaitForRoom(absl::Duration timeout);

 private:
  struct Pending {
    Report report;
    absl::Time added;
  };
  enum class Disposition { kDone, kRetry };
  // A report given up on, logged once the lock is released.
  struct Dropped {
    Report report;
    const char* why;
  };

  void ThreadMain();
  // Round helpers.
  void DropExpiredLocked(absl::Time now, std::vector<Dropped>& dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnforceCapLocked(std::vector<Dropped>& dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LogDrops(const std::vector<Dropped>& dropped);
  absl::Duration BackoffLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `batch`; fills `retry` (in batch order) with what must be sent
  // again. Returns false if a call failed as a whole.
  bool Send(std::vector<Pending>& batch, std::vector<Pending>& retry, ReporterStats& stats);
  void LogDrop(const Report& r, const char* why);

  BrokerRpc* const rpc_;
  const ReporterOptions options_;
  const Clock* const clock_;
  const ConnectionObserver observer_;

  mutable absl::Mutex mu_;
  std::deque<Pending> items_ ABSL_GUARDED_BY(mu_);
  // Reports taken out of items_ for the call in flight: they count against
  // WaitForRoom's room (a failed call puts them back).
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time next_try_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool kick_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time stop_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  ReporterStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_REPORTER_H_
