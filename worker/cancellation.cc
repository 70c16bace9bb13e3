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

Cancellation::Cancellation() = default;

Cancellation::~Cancellation() {
  absl::MutexLock lock(&mu_);
  if (pipe_[0] >= 0) close(pipe_[0]);
  if (pipe_[1] >= 0) close(pipe_[1]);
}

int Cancellation::fd() const {
  absl::MutexLock lock(&mu_);
  if (!pipe_made_) {
    pipe_made_ = true;
    // Close-on-exec: spawned commands must not inherit it.
    if (pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
      pipe_[0] = pipe_[1] = -1;
    } else if (reason_ != CancelReason::kNone) {
      Signal(pipe_[1]);
    }
  }
  return pipe_[0];
}

void Cancellation::Signal(int write_fd) {
  if (write_fd < 0) return;
  char byte = 1;
  ssize_t unused = write(write_fd, &byte, 1);
  (void)unused;  // A full pipe is already readable: nothing is lost.
}

bool Cancellation::Cancel(CancelReason reason) {
  if (reason == CancelReason::kNone) return false;
  absl::MutexLock lock(&mu_);
  if (reason_ != CancelReason::kNone) return false;
  reason_ = reason;
  Signal(pipe_[1]);  // a non-blocking write of one byte
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
