#include "server/queue.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"

namespace conveyor::server {
namespace {

bool ValidQueueChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
}

absl::Status Bad(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

}  // namespace

absl::Status ValidateQueueName(absl::string_view name) {
  if (name.empty()) return Bad("queue", "is empty; name a queue");
  if (name.size() > 128) {
    return Bad("queue", absl::StrCat("is ", name.size(),
                                     " characters; at most 128 are allowed"));
  }
  bool first_ok = (name[0] >= 'a' && name[0] <= 'z') ||
                  (name[0] >= 'A' && name[0] <= 'Z') ||
                  (name[0] >= '0' && name[0] <= '9');
  if (!first_ok || !std::all_of(name.begin(), name.end(), ValidQueueChar)) {
    return Bad("queue", absl::StrCat("\"", absl::CHexEscape(name),
                                     "\" is malformed: use [A-Za-z0-9._:-], "
                                     "starting with a letter or digit"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRetryPolicy(const RetryPolicy& r, absl::string_view field) {
  if (r.max_attempts < 1 || r.max_attempts > 1000) {
    return Bad(absl::StrCat(field, ".max_attempts"),
               absl::StrCat("is ", r.max_attempts, "; must be 1 to 1000"));
  }
  if (r.initial_backoff < absl::ZeroDuration() ||
      r.initial_backoff > absl::Hours(24 * 7)) {
    return Bad(absl::StrCat(field, ".initial_backoff"),
               absl::StrCat("is ", absl::FormatDuration(r.initial_backoff),
                            "; must be 0 to 168h"));
  }
  if (r.max_backoff < r.initial_backoff || r.max_backoff > absl::Hours(24 * 7)) {
    return Bad(absl::StrCat(field, ".max_backoff"),
               absl::StrCat("is ", absl::FormatDuration(r.max_backoff),
                            "; must be at least initial_backoff (",
                            absl::FormatDuration(r.initial_backoff),
                            ") and at most 168h"));
  }
  if (!(r.multiplier >= 1.0 && r.multiplier <= 100.0)) {
    return Bad(absl::StrCat(field, ".multiplier"),
               absl::StrCat("is ", r.multiplier, "; must be 1 to 100"));
  }
  if (!(r.jitter >= 0.0 && r.jitter <= 1.0)) {
    return Bad(absl::StrCat(field, ".jitter"),
               absl::StrCat("is ", r.jitter, "; must be 0 to 1"));
  }
  return absl::OkStatus();
}

absl::Status ValidateQueueConfig(const QueueConfig& c) {
  if (absl::Status s = ValidateQueueName(c.name); !s.ok()) return s;
  if (c.capacity < 1 || c.capacity > 100'000'000) {
    return Bad("capacity", absl::StrCat("is ", c.capacity,
                                        "; must be 1 to 100000000"));
  }
  if (absl::Status s = ValidateRetryPolicy(c.retry, "retry"); !s.ok()) return s;
  if (c.default_timeout < absl::Seconds(1) || c.default_timeout > absl::Hours(24 * 7)) {
    return Bad("default_timeout",
               absl::StrCat("is ", absl::FormatDuration(c.default_timeout),
                            "; must be 1s to 168h"));
  }
  if (c.lease_duration < absl::Seconds(1) || c.lease_duration > absl::Hours(1)) {
    return Bad("lease_duration",
               absl::StrCat("is ", absl::FormatDuration(c.lease_duration),
                            "; must be 1s to 1h"));
  }
  if (c.max_crashes < 1 || c.max_crashes > 100) {
    return Bad("max_crashes",
               absl::StrCat("is ", c.max_crashes, "; must be 1 to 100"));
  }
  if (c.result_ttl < absl::ZeroDuration() || c.result_ttl > absl::Hours(24 * 90)) {
    return Bad("result_ttl",
               absl::StrCat("is ", absl::FormatDuration(c.result_ttl),
                            "; must be 0 to 2160h (90 days)"));
  }
  if (c.retained > 100'000'000) {
    return Bad("retained",
               absl::StrCat("is ", c.retained, "; must be at most 100000000"));
  }
  return absl::OkStatus();
}

const char* WaitReasonName(WaitReason reason) {
  switch (reason) {
    case WaitReason::kNotWaiting: return "not_waiting";
    case WaitReason::kNone: return "none";
    case WaitReason::kPaused: return "paused";
    case WaitReason::kRateLimited: return "rate_limited";
    case WaitReason::kConcurrencyFull: return "concurrency_full";
    case WaitReason::kNotDue: return "not_due";
    case WaitReason::kNoWorker: return "no_worker";
  }
  return "unknown";
}

uint64_t Queue::active() const {
  return count(TaskState::kScheduled) + count(TaskState::kReady) +
         count(TaskState::kRunning);
}

void Queue::PushReady(const Task& task, uint64_t seq) {
  Heap& heap = ready_[task.type_id()];
  uint64_t key = (uint64_t{9} - task.priority) << 56 | (seq & ((uint64_t{1} << 56) - 1));
  heap.push_back(ReadyEntry{key, task.id().value()});
  std::push_heap(heap.begin(), heap.end(), std::greater<>());
}

Task* Queue::PeekReady(const std::vector<uint32_t>& types,
                       absl::FunctionRef<Task*(uint64_t)> resolve,
                       uint64_t* key) {
  Task* best = nullptr;
  uint64_t best_key = 0;
  auto consider = [&](Heap& heap) {
    while (!heap.empty()) {
      Task* t = resolve(heap.front().id);
      if (t != nullptr) {
        if (best == nullptr || heap.front().key < best_key) {
          best = t;
          best_key = heap.front().key;
        }
        return;
      }
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      heap.pop_back();
    }
  };
  if (types.empty()) {
    for (auto& [type, heap] : ready_) consider(heap);
  } else {
    for (uint32_t type : types) {
      auto it = ready_.find(type);
      if (it != ready_.end()) consider(it->second);
    }
  }
  if (key != nullptr) *key = best_key;
  return best;
}

void Queue::PopReady(const Task& task) {
  auto it = ready_.find(task.type_id());
  if (it == ready_.end() || it->second.empty()) return;
  Heap& heap = it->second;
  std::pop_heap(heap.begin(), heap.end(), std::greater<>());
  heap.pop_back();
  if (heap.empty()) ready_.erase(it);
}

void Queue::RemoveReady(const Task& task) {
  auto it = ready_.find(task.type_id());
  if (it == ready_.end()) return;
  Heap& heap = it->second;
  auto entry = std::find_if(heap.begin(), heap.end(), [&](const ReadyEntry& e) {
    return e.id == task.id().value();
  });
  if (entry == heap.end()) return;
  *entry = heap.back();
  heap.pop_back();
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  if (heap.empty()) ready_.erase(it);
}

uint64_t Queue::OldestReadySeq(absl::FunctionRef<Task*(uint64_t)> resolve) const {
  constexpr uint64_t kSeqMask = (uint64_t{1} << 56) - 1;
  uint64_t oldest = 0;
  for (const auto& [type, heap] : ready_) {
    for (const ReadyEntry& e : heap) {
      uint64_t seq = e.key & kSeqMask;
      if ((oldest == 0 || seq < oldest) && resolve(e.id) != nullptr) oldest = seq;
    }
  }
  return oldest;
}

}  // namespace conveyor::server
