// Cancellation: a one-way, thread-safe "stop now" flag for one task attempt.
//
// Set by the worker when an attempt times out, the broker cancels the task,
// or a drain gives up on it; read by handlers (`cancelled()`), waited on by
// blocking code (`WaitFor`), and polled together with other descriptors by the
// external-command runner (`fd()` becomes readable once cancelled).
//
// Thread-safe.
#ifndef CONVEYOR_WORKER_CANCELLATION_H_
#define CONVEYOR_WORKER_CANCELLATION_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace conveyor::worker {

enum class CancelReason { kNone, kTimeout, kCanceled, kShutdown };
const char* CancelReasonName(CancelReason reason);

class Cancellation {
 public:
  Cancellation();
  ~Cancellation();
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

  // The first call wins; later calls keep the first reason. True if this
  // call cancelled it (it was not cancelled before).
  bool Cancel(CancelReason reason);
  bool cancelled() const;
  CancelReason reason() const;
  // Blocks until cancelled or `timeout` passes; true if cancelled.
  bool WaitFor(absl::Duration timeout) const;
  // A descriptor that is readable once cancelled (never read from it);
  // -1 if none could be made. Made on the first call: most attempts (the
  // in-process handlers) never need one.
  int fd() const;

 private:
  // Makes `write_fd` (the pipe's write end; -1: none) readable at the other end.
  static void Signal(int write_fd);

  mutable absl::Mutex mu_;
  CancelReason reason_ ABSL_GUARDED_BY(mu_) = CancelReason::kNone;
  mutable bool pipe_made_ ABSL_GUARDED_BY(mu_) = false;
  mutable int pipe_[2] ABSL_GUARDED_BY(mu_) = {-1, -1};
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_CANCELLATION_H_
