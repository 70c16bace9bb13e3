#include "worker/cancellation.h"

#include <fcntl.h>
#include <unistd.h>

namespace conveyor::worker {

const char* CancelReasonName(CancelReason reason) {
  switch (reason) {
    case CancelReason::kNone: return "none";
    case CancelReason::kTimeout: return "timeout";
    case CancelReason::kCanceled: return "canceled";
    case CancelReason::kShutdown: return "shutdown";
  }
  return "none";
}

Cancellation::Cancellation() {
  // Close-on-exec: spawned commands must not inherit it.
  if (pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    pipe_[0] = pipe_[1] = -1;
  }
}

Cancellation::~Cancellation() {
  if (pipe_[0] >= 0) close(pipe_[0]);
  if (pipe_[1] >= 0) close(pipe_[1]);
}

bool Cancellation::Cancel(CancelReason reason) {
  if (reason == CancelReason::kNone) return false;
  {
    absl::MutexLock lock(&mu_);
    if (reason_ != CancelReason::kNone) return false;
    reason_ = reason;
  }
  if (pipe_[1] >= 0) {
    char byte = 1;
    ssize_t unused = write(pipe_[1], &byte, 1);
    (void)unused;  // A full pipe is already readable: nothing is lost.
  }
  return true;
}

bool Cancellation::cancelled() const {
  absl::MutexLock lock(&mu_);
  return reason_ != CancelReason::kNone;
}

CancelReason Cancellation::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

bool Cancellation::WaitFor(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto is_cancelled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return reason_ != CancelReason::kNone;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&is_cancelled), timeout);
}

}  // namespace conveyor::worker
