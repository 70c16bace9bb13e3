#include "worker/attempt.h"

#include <utility>

namespace conveyor::worker {

Attempt::Attempt(TaskInfo task, absl::Time lease_expires_at, absl::Duration lease_duration,
                 absl::Time received_at)
    : task_(std::move(task)),
      lease_duration_(lease_duration),
      received_at_(received_at),
      lease_expires_at_(lease_expires_at) {}

void Attempt::Cancel(CancelReason reason) {
  cancel_.Cancel(reason);
  if (cancel_hook_) cancel_hook_();
}

void Attempt::SetCancelHook(std::function<void()> hook) { cancel_hook_ = std::move(hook); }

void Attempt::SetProgress(double percent, std::string message) {
  absl::MutexLock lock(&mu_);
  percent_ = percent;
  message_ = std::move(message);
  ++progress_version_;
}

std::optional<Attempt::Progress> Attempt::UnsentProgress() const {
  absl::MutexLock lock(&mu_);
  if (progress_version_ == sent_version_) return std::nullopt;
  return Progress{percent_, message_, progress_version_};
}

void Attempt::ProgressSent(uint64_t version) {
  absl::MutexLock lock(&mu_);
  if (version > sent_version_) sent_version_ = version;
}

void Attempt::ExtendLease(absl::Time expires_at) {
  absl::MutexLock lock(&mu_);
  if (expires_at > lease_expires_at_) lease_expires_at_ = expires_at;
}

absl::Time Attempt::lease_expires_at() const {
  absl::MutexLock lock(&mu_);
  return lease_expires_at_;
}

void Attempt::MarkLeaseLost() {
  absl::MutexLock lock(&mu_);
  lease_lost_ = true;
}

bool Attempt::lease_lost() const {
  absl::MutexLock lock(&mu_);
  return lease_lost_;
}

bool Attempt::TryFinish() {
  absl::MutexLock lock(&mu_);
  if (settled_ != Settled::kNo) return false;
  settled_ = Settled::kFinished;
  return true;
}

bool Attempt::TryAbandon() {
  absl::MutexLock lock(&mu_);
  if (settled_ != Settled::kNo) return false;
  settled_ = Settled::kAbandoned;
  return true;
}

}  // namespace conveyor::worker
