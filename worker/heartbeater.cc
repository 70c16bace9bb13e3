#include "worker/heartbeater.h"

#include <algorithm>

#include "absl/status/status.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "worker/text.h"

namespace conveyor::worker {
namespace {

constexpr absl::Duration kMinInterval = absl::Milliseconds(100);
constexpr absl::Duration kMaxInterval = absl::Seconds(10);

std::string Traceparent(const TaskInfo& t) {
  auto it = t.headers.find("traceparent");
  return it == t.headers.end() ? std::string() : it->second;
}

}  // namespace

Heartbeater::Heartbeater(BrokerRpc* rpc, HeartbeaterOptions options, const Clock* clock,
                         DrainObserver on_drain, ConnectionObserver on_connection)
    : rpc_(rpc),
      options_(std::move(options)),
      clock_(clock),
      on_drain_(std::move(on_drain)),
      on_connection_(std::move(on_connection)) {}

Heartbeater::~Heartbeater() { Stop(); }

void Heartbeater::Start() { thread_ = std::thread([this] { ThreadMain(); }); }

void Heartbeater::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Heartbeater::Track(std::shared_ptr<Attempt> attempt) {
  absl::MutexLock lock(&mu_);
  // After an idle spell the first beat is one interval after this lease.
  if (attempts_.empty()) last_beat_ = clock_->Now();
  // Wake the thread only when this lease shortens the interval in force.
  if (IntervalFor(attempt->lease_duration()) < interval_) wake_ = true;
  const Attempt* key = attempt.get();
  attempts_[key] = std::move(attempt);
}

void Heartbeater::Untrack(const Attempt& attempt) {
  absl::MutexLock lock(&mu_);
  attempts_.erase(&attempt);
}

std::vector<std::shared_ptr<Attempt>> Heartbeater::Tracked() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Attempt>> out;
  out.reserve(attempts_.size());
  for (const auto& [key, a] : attempts_) out.push_back(a);
  return out;
}

size_t Heartbeater::CancelAll(CancelReason reason) {
  std::vector<std::shared_ptr<Attempt>> all = Tracked();
  for (const auto& a : all) a->Cancel(reason);
  return all.size();
}

absl::Duration Heartbeater::Interval() const {
  absl::MutexLock lock(&mu_);
  return IntervalLocked();
}

absl::Duration Heartbeater::IntervalLocked() const {
  absl::Duration shortest = absl::InfiniteDuration();
  if (options_.interval <= absl::ZeroDuration()) {
    for (const auto& [key, a] : attempts_) shortest = std::min(shortest, a->lease_duration());
  }
  return IntervalFor(shortest);
}

absl::Duration Heartbeater::IntervalFor(absl::Duration lease) const {
  if (options_.interval > absl::ZeroDuration()) return options_.interval;
  if (lease == absl::InfiniteDuration()) return kMaxInterval;
  return std::clamp(lease / 3, kMinInterval, kMaxInterval);
}

void Heartbeater::ThreadMain() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (stopping_) return;
        if (attempts_.empty()) {
          auto busy = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || !attempts_.empty();
          };
          mu_.Await(absl::Condition(&busy));
          continue;
        }
        const absl::Time now = clock_->Now();
        interval_ = IntervalLocked();
        const absl::Time next = last_beat_ + interval_;
        if (now >= next) {
          last_beat_ = now;
          break;
        }
        wake_ = false;
        auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wake_; };
        mu_.AwaitWithTimeout(absl::Condition(&woken), next - now);
      }
    }
    BeatOnce();
  }
}

bool Heartbeater::BeatOnce() {
  std::vector<std::shared_ptr<Attempt>> attempts = Tracked();
  if (attempts.empty()) return true;
  v1::HeartbeatRequest request;
  request.set_worker_id(options_.worker_id);
  std::vector<uint64_t> versions(attempts.size(), 0);
  for (size_t i = 0; i < attempts.size(); ++i) {
    const Attempt& a = *attempts[i];
    auto* item = request.add_items();
    item->set_id(a.task().id);
    item->set_token(a.task().token);
    std::optional<Attempt::Progress> p = a.UnsentProgress();
    if (p.has_value()) {
      item->set_progress_percent(p->percent);
      item->set_progress_message(ValidUtf8(p->message, 1024));
      versions[i] = p->version;
    } else {
      item->set_progress_percent(-1);  // unchanged
    }
  }

  absl::StatusOr<v1::HeartbeatResponse> response = rpc_->Heartbeat(request);
  if (on_connection_) on_connection_(response.ok());
  bool log_change;
  {
    absl::MutexLock lock(&mu_);
    log_change = last_call_ok_ != response.ok();
    last_call_ok_ = response.ok();
  }
  if (!response.ok()) {
    const LogLevel level = log_change ? LogLevel::kWarning : LogLevel::kDebug;
    Log(level, "heartbeat failed", {{"broker", options_.broker},
                                    {"worker_id", options_.worker_id},
                                    {"tasks", static_cast<unsigned long>(attempts.size())},
                                    {"error", response.status()}});
    return false;
  }
  if (log_change) {
    LogInfo("heartbeats reach the broker again",
            {{"broker", options_.broker}, {"worker_id", options_.worker_id}});
  }

  for (int i = 0; i < response->items_size() && i < static_cast<int>(attempts.size()); ++i) {
    const v1::HeartbeatResponse::Item& item = response->items(i);
    Attempt& a = *attempts[i];
    const TaskInfo& t = a.task();
    if (item.id() != t.id) continue;  // the broker answers in request order
    const auto code = static_cast<absl::StatusCode>(item.status().code());
    if (code == absl::StatusCode::kOk) {
      if (item.has_lease_expires_at()) a.ExtendLease(FromProto(item.lease_expires_at()));
      if (versions[i] != 0) a.ProgressSent(versions[i]);
      if (item.cancel() && !a.cancellation().cancelled()) {
        LogInfo("task canceled by the broker; stopping it",
                {{"task_id", t.id}, {"queue", t.queue}, {"type", t.type},
                 {"worker_id", options_.worker_id}, {"traceparent", Traceparent(t)}});
        a.Cancel(CancelReason::kCanceled);
      }
    } else if (code == absl::StatusCode::kFailedPrecondition ||
               code == absl::StatusCode::kNotFound) {
      if (!a.lease_lost()) {
        LogWarning("lease lost; cancelling the attempt, its result is not reported",
                   {{"task_id", t.id}, {"queue", t.queue}, {"type", t.type},
                    {"worker_id", options_.worker_id}, {"traceparent", Traceparent(t)},
                    {"token", static_cast<unsigned long long>(t.token)},
                    {"error", item.status().message()}});
      }
      a.MarkLeaseLost();
      a.Cancel(CancelReason::kCanceled);
    } else {
      LogWarning("heartbeat item refused",
                 {{"task_id", t.id}, {"queue", t.queue}, {"type", t.type},
                  {"worker_id", options_.worker_id}, {"traceparent", Traceparent(t)},
                  {"error", item.status().message()}});
    }
  }

  if (response->draining()) {
    bool first;
    {
      absl::MutexLock lock(&mu_);
      first = !told_draining_;
      told_draining_ = true;
    }
    if (first) {
      LogInfo("the broker is draining; no more leases from it",
              {{"broker", options_.broker}, {"worker_id", options_.worker_id}});
    }
    if (on_drain_) on_drain_();
  } else {
    absl::MutexLock lock(&mu_);
    told_draining_ = false;
  }
  return true;
}

}  // namespace conveyor::worker
