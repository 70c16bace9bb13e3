#include "worker/reporter.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "google/protobuf/arena.h"
#include "worker/handler.h"
#include "worker/text.h"

namespace conveyor::worker {
namespace {

// The broker keeps at most 64 KiB of an error.
constexpr size_t kMaxErrorBytes = 64 << 10;
constexpr size_t kMaxReasonBytes = 256;
// Results and errors per round, well under the broker's message limit.
constexpr size_t kMaxBatchBytes = 4 << 20;

bool LeaseGone(absl::StatusCode code) {
  return code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kNotFound;
}

const char* KindName(Report::Kind kind) {
  switch (kind) {
    case Report::Kind::kComplete: return "complete";
    case Report::Kind::kFail: return "fail";
    case Report::Kind::kRelease: return "release";
  }
  return "complete";
}

}  // namespace

Reporter::Reporter(BrokerRpc* rpc, ReporterOptions options, const Clock* clock,
                   ConnectionObserver observer)
    : rpc_(rpc), options_(std::move(options)), clock_(clock), observer_(std::move(observer)) {}

Reporter::~Reporter() {
  if (thread_.joinable()) Stop(absl::ZeroDuration());
}

void Reporter::Add(Report report) {
  std::vector<Dropped> dropped;
  {
    absl::MutexLock lock(&mu_);
    items_.push_back(Pending{std::move(report), clock_->Now()});
    EnforceCapLocked(dropped);
    if (items_.size() >= options_.max_batch) kick_ = true;
  }
  LogDrops(dropped);
}

void Reporter::Start() { thread_ = std::thread([this] { ThreadMain(); }); }

size_t Reporter::Stop(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    stop_deadline_ = clock_->Now() + timeout;
    kick_ = true;
  }
  if (thread_.joinable()) thread_.join();
  std::deque<Pending> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(items_);
    stats_.dropped_expired += left.size();
  }
  for (const Pending& p : left) LogDrop(p.report, "the worker stopped before it was delivered");
  return left.size();
}

size_t Reporter::pending() const {
  absl::MutexLock lock(&mu_);
  return items_.size();
}

bool Reporter::WaitForRoom(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return items_.size() + in_flight_ <= options_.max_pending / 2;
  };
  auto room_or_stopping = [this, &room]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || room();
  };
  mu_.AwaitWithTimeout(absl::Condition(&room_or_stopping), timeout);
  return room();
}

ReporterStats Reporter::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Reporter::ThreadMain() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        const absl::Time now = clock_->Now();
        if (stopping_ && (items_.empty() || now >= stop_deadline_)) return;
        if (items_.empty()) {
          auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || !items_.empty();
          };
          mu_.Await(absl::Condition(&has_work));
          continue;
        }
        // Batch for `flush_delay` unless a full batch waits or the reporter
        // is stopping; never before the backoff ends.
        const bool linger = !options_.linger_while || options_.linger_while();
        absl::Time due = items_.front().added;
        if (linger) due += options_.flush_delay;
        if (stopping_ || items_.size() >= options_.max_batch) due = now;
        due = std::max(due, next_try_);
        if (stopping_) due = std::min(due, stop_deadline_);
        if (now >= due) break;
        kick_ = false;
        mu_.AwaitWithTimeout(absl::Condition(&kick_), due - now);
      }
    }
    SendOnce();
  }
}

absl::Time Reporter::SendOnce() {
  std::vector<Pending> batch;
  std::vector<Dropped> dropped;
  absl::Time now;
  {
    absl::MutexLock lock(&mu_);
    now = clock_->Now();
    DropExpiredLocked(now, dropped);
  }
  LogDrops(dropped);
  dropped.clear();
  {
    absl::MutexLock lock(&mu_);
    if (items_.empty()) return absl::InfiniteFuture();
    if (now < next_try_) return next_try_;
    const size_t n = std::min(items_.size(), options_.max_batch);
    batch.reserve(n);
    size_t bytes = 0;
    while (batch.size() < n) {
      const Report& r = items_.front().report;
      bytes += r.result.size() + r.error.size();
      if (!batch.empty() && bytes > kMaxBatchBytes) break;
      batch.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    in_flight_ = batch.size();
  }
  std::vector<Pending> retry;
  ReporterStats round;
  const bool calls_ok = Send(batch, retry, round);
  if (observer_) observer_(calls_ok);

  absl::Time next;
  {
    absl::MutexLock lock(&mu_);
    stats_.delivered += round.delivered;
    stats_.rejected += round.rejected;
    stats_.calls += round.calls;
    stats_.failed_calls += round.failed_calls;
    in_flight_ = 0;
    // Retries go back in front: they are the oldest.
    for (auto it = retry.rbegin(); it != retry.rend(); ++it) items_.push_front(std::move(*it));
    EnforceCapLocked(dropped);
    if (!retry.empty()) {
      ++failures_;
      next_try_ = now + BackoffLocked();
    } else {
      failures_ = 0;
      next_try_ = absl::InfinitePast();
    }
    next = items_.empty() ? absl::InfiniteFuture() : std::max(next_try_, now);
  }
  LogDrops(dropped);
  return next;
}

bool Reporter::Send(std::vector<Pending>& batch, std::vector<Pending>& retry,
                    ReporterStats& stats) {
  // The requests live on one arena for the round: their items and strings
  // cost no allocation each (a full batch of ids fits the first block).
  alignas(8) char first_block[16 << 10];
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = first_block;
  arena_options.initial_block_size = sizeof(first_block);
  google::protobuf::Arena arena(arena_options);
  auto& complete = *google::protobuf::Arena::CreateMessage<v1::CompleteRequest>(&arena);
  auto& fail = *google::protobuf::Arena::CreateMessage<v1::FailRequest>(&arena);
  auto& release = *google::protobuf::Arena::CreateMessage<v1::ReleaseRequest>(&arena);
  std::vector<size_t> complete_idx, fail_idx, release_idx;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Report& r = batch[i].report;
    switch (r.kind) {
      case Report::Kind::kComplete: {
        auto* item = complete.add_items();
        item->set_id(r.task_id);
        item->set_token(r.token);
        if (!r.result.empty()) item->set_result(r.result);  // proto3: empty is unset
        complete_idx.push_back(i);
        break;
      }
      case Report::Kind::kFail: {
        auto* item = fail.add_items();
        item->set_id(r.task_id);
        item->set_token(r.token);
        item->set_error(ValidUtf8(r.error, kMaxErrorBytes));
        item->set_retryable(r.retryable);
        item->set_reason(ValidUtf8(r.reason, kMaxReasonBytes));
        if (r.throttled) {
          item->set_throttled(true);
          // Over the maximum the broker refuses the item (INVALID_ARGUMENT),
          // and retrying it would never help.
          const absl::Duration delay =
              std::clamp(r.retry_after, absl::ZeroDuration(), kMaxRetryAfter);
          if (delay > absl::ZeroDuration()) ToProto(delay, item->mutable_retry_after());
        }
        fail_idx.push_back(i);
        break;
      }
      case Report::Kind::kRelease: {
        auto* item = release.add_items();
        item->set_id(r.task_id);
        item->set_token(r.token);
        release_idx.push_back(i);
        break;
      }
    }
  }

  std::vector<Disposition> disposition(batch.size(), Disposition::kDone);
  bool all_calls_ok = true;
  // Applies one call's answer to its items.
  auto apply = [&](const absl::Status& call, const std::vector<size_t>& idx,
                   const google::protobuf::RepeatedPtrField<v1::ItemStatus>* items) {
    if (idx.empty()) return;
    ++stats.calls;
    if (!call.ok()) {
      ++stats.failed_calls;
      all_calls_ok = false;
      LogWarning("report call failed; will retry",
                 {{"broker", options_.broker}, {"worker_id", options_.worker_id},
                  {"reports", static_cast<unsigned long>(idx.size())}, {"error", call}});
      for (size_t i : idx) disposition[i] = Disposition::kRetry;
      return;
    }
    for (size_t k = 0; k < idx.size(); ++k) {
      Report& r = batch[idx[k]].report;
      if (items == nullptr || static_cast<int>(k) >= items->size()) {
        disposition[idx[k]] = Disposition::kRetry;  // answer too short: send it again
        continue;
      }
      const v1::ItemStatus& s = items->Get(static_cast<int>(k));
      const auto code = static_cast<absl::StatusCode>(s.code());
      if (code == absl::StatusCode::kOk) {
        ++stats.delivered;
      } else if (LeaseGone(code)) {
        ++stats.rejected;
        LogWarning("report rejected: the lease is gone",
                   {{"task_id", r.task_id}, {"queue", r.queue}, {"type", r.type},
                    {"worker_id", options_.worker_id}, {"traceparent", r.traceparent},
                    {"report", KindName(r.kind)}, {"error", s.message()}});
      } else if (r.kind == Report::Kind::kComplete &&
                 code == absl::StatusCode::kInvalidArgument) {
        // The result itself is refused (over the broker's limit): retrying
        // cannot help, so the task fails for good with the broker's reason.
        LogWarning("result refused by the broker; failing the task",
                   {{"task_id", r.task_id}, {"queue", r.queue}, {"type", r.type},
                    {"worker_id", options_.worker_id}, {"traceparent", r.traceparent},
                    {"error", s.message()}});
        r.kind = Report::Kind::kFail;
        r.error = s.message();
        r.reason = "invalid_result";
        r.retryable = false;
        r.result.clear();
        disposition[idx[k]] = Disposition::kRetry;
      } else {
        disposition[idx[k]] = Disposition::kRetry;
      }
    }
  };

  if (!complete_idx.empty()) {
    absl::StatusOr<v1::CompleteResponse> resp = rpc_->Complete(complete);
    apply(resp.status(), complete_idx, resp.ok() ? &resp->items() : nullptr);
  }
  if (!fail_idx.empty()) {
    absl::StatusOr<v1::FailResponse> resp = rpc_->Fail(fail);
    apply(resp.status(), fail_idx, resp.ok() ? &resp->items() : nullptr);
  }
  if (!release_idx.empty()) {
    absl::StatusOr<v1::ReleaseResponse> resp = rpc_->Release(release);
    apply(resp.status(), release_idx, resp.ok() ? &resp->items() : nullptr);
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (disposition[i] == Disposition::kRetry) retry.push_back(std::move(batch[i]));
  }
  return all_calls_ok;
}

void Reporter::DropExpiredLocked(absl::Time now, std::vector<Dropped>& dropped) {
  // In place: every round runs this, and a deque of reports this large
  // allocates a node per element.
  auto expired = [now](const Pending& p) { return now >= p.report.drop_at; };
  for (Pending& p : items_) {
    if (expired(p)) {
      ++stats_.dropped_expired;
      dropped.push_back(
          {std::move(p.report), "its lease would have expired; the broker retries the task"});
    }
  }
  std::erase_if(items_, expired);  // A moved-from report keeps its drop_at.
}

void Reporter::EnforceCapLocked(std::vector<Dropped>& dropped) {
  while (items_.size() > options_.max_pending) {
    ++stats_.dropped_overflow;
    dropped.push_back({std::move(items_.front().report),
                       "too many reports pending (max_pending); dropped the oldest"});
    items_.pop_front();
  }
}

void Reporter::LogDrops(const std::vector<Dropped>& dropped) {
  for (const Dropped& d : dropped) LogDrop(d.report, d.why);
}

absl::Duration Reporter::BackoffLocked() const {
  absl::Duration d = options_.initial_backoff;
  for (int i = 1; i < failures_ && d < options_.max_backoff; ++i) d *= 2;
  return std::min(d, options_.max_backoff);
}

void Reporter::LogDrop(const Report& r, const char* why) {
  LogWarning("report dropped", {{"task_id", r.task_id},
                                {"queue", r.queue},
                                {"type", r.type},
                                {"worker_id", options_.worker_id},
                                {"traceparent", r.traceparent},
                                {"report", KindName(r.kind)},
                                {"why", why}});
}

}  // namespace conveyor::worker
