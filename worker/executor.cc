#include "worker/executor.h"

#include <algorithm>
#include <utility>

namespace conveyor::worker {

Executor::Executor(int concurrency, SlotObserver observer, int prefetch)
    : concurrency_(std::max(1, concurrency)),
      capacity_(concurrency_ + std::max(0, prefetch)),
      refill_(std::max(1, std::max(0, prefetch) / 2)),
      observer_(std::move(observer)) {}

Executor::~Executor() { Stop(); }

void Executor::Start() {
  threads_.reserve(concurrency_);
  for (int i = 0; i < concurrency_; ++i) threads_.emplace_back([this] { ThreadMain(); });
  absl::MutexLock lock(&mu_);
  Notify();
}

void Executor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

int Executor::Reserve(int max, absl::Duration timeout) {
  if (max <= 0) return 0;
  absl::MutexLock lock(&mu_);
  auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int free = capacity_ - busy_ - reserved_;
    return stopping_ || (free > 0 && (free >= refill_ || jobs_.empty()));
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&available), timeout) || stopping_) return 0;
  const int n = std::min(max, capacity_ - busy_ - reserved_);
  if (n <= 0) return 0;
  reserved_ += n;
  return n;
}

void Executor::Unreserve(int n) {
  if (n <= 0) return;
  absl::MutexLock lock(&mu_);
  reserved_ = std::max(0, reserved_ - n);
}

void Executor::Run(std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  if (reserved_ > 0) --reserved_;
  ++busy_;
  jobs_.push_back(std::move(job));
  Notify();
}

bool Executor::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return busy_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

int Executor::busy() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

void Executor::ThreadMain() {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !jobs_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
      Notify();
    }
    job();
    job = nullptr;  // destroy captures before the slot counts as free
    absl::MutexLock lock(&mu_);
    --busy_;
    Notify();
  }
}

void Executor::Notify() {
  if (!observer_) return;
  const int waiting = static_cast<int>(jobs_.size());
  const int running = std::min(concurrency_, busy_ - waiting);
  observer_(running, concurrency_ - running, waiting);
}

}  // namespace conveyor::worker
