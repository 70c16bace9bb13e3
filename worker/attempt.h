// Attempt: one leased task while the worker holds it, from the lease to its
// report. Shared (std::shared_ptr) by the thread running it, the heartbeater
// of its broker (which extends its lease, sends its progress and cancels it
// when told to), the deadline timer and a draining worker.
//
// A task run in a batch (worker/batch.h) has an Attempt of its own too, so
// that its lease, progress, cancellation and report stay per task; its
// TaskInfo then holds no payload (the batch holds it), and a cancel hook
// tells the batch when one of its tasks is cancelled.
//
// Thread-safe: the task data is immutable; everything else sits under one
// mutex (or in the Cancellation, itself thread-safe).
#ifndef CONVEYOR_WORKER_ATTEMPT_H_
#define CONVEYOR_WORKER_ATTEMPT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/cancellation.h"
#include "worker/handler.h"

namespace conveyor::worker {

class Attempt {
 public:
  // `lease_expires_at` as the broker granted it; `lease_duration` is how long
  // that lease was when it arrived (it sets the heartbeat pace).
  Attempt(TaskInfo task, absl::Time lease_expires_at, absl::Duration lease_duration,
          absl::Time received_at);
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  const TaskInfo& task() const { return task_; }
  absl::Duration lease_duration() const { return lease_duration_; }
  absl::Time received_at() const { return received_at_; }

  // First reason wins (see Cancellation). Then runs the cancel hook, if any
  // (on every call, outside the attempt's lock).
  void Cancel(CancelReason reason);
  // Set once, before the attempt is shared: called after each Cancel. It
  // may call Cancel on this attempt again.
  void SetCancelHook(std::function<void()> hook);
  const Cancellation& cancellation() const { return cancel_; }

  // Progress, as the handler reported it last.
  void SetProgress(double percent, std::string message);
  struct Progress {
    double percent = 0;
    std::string message;
    uint64_t version = 0;
  };
  // The progress not yet acknowledged by a heartbeat, if any.
  std::optional<Progress> UnsentProgress() const;
  // A heartbeat carrying `version` succeeded.
  void ProgressSent(uint64_t version);

  // The broker's latest lease expiry for this attempt.
  void ExtendLease(absl::Time expires_at);
  absl::Time lease_expires_at() const;

  // A heartbeat answer said the lease is gone: never report this attempt.
  void MarkLeaseLost();
  bool lease_lost() const;

  // The running thread and a draining worker that gives up on a stuck
  // handler race to settle the attempt; exactly one of them wins and owns
  // its report. Each returns true if it won.
  bool TryFinish();
  bool TryAbandon();

 private:
  const TaskInfo task_;
  const absl::Duration lease_duration_;
  const absl::Time received_at_;
  Cancellation cancel_;
  std::function<void()> cancel_hook_;

  mutable absl::Mutex mu_;
  double percent_ ABSL_GUARDED_BY(mu_) = 0;
  std::string message_ ABSL_GUARDED_BY(mu_);
  uint64_t progress_version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time lease_expires_at_ ABSL_GUARDED_BY(mu_);
  bool lease_lost_ ABSL_GUARDED_BY(mu_) = false;
  enum class Settled { kNo, kFinished, kAbandoned };
  Settled settled_ ABSL_GUARDED_BY(mu_) = Settled::kNo;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_ATTEMPT_H_
