// A scripted BrokerRpc for the heartbeater and reporter tests: records every
// request, answers with per-item codes chosen by the test, or fails whole
// calls while `down` is set. No network.
#ifndef CONVEYOR_TESTS_WORKER_FAKE_BROKER_RPC_H_
#define CONVEYOR_TESTS_WORKER_FAKE_BROKER_RPC_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "worker/broker_rpc.h"

namespace conveyor::worker {

class FakeBrokerRpc final : public BrokerRpc {
 public:
  // Whole calls fail with UNAVAILABLE while true.
  void set_down(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  // The per-item code for a task id (default OK), and its message.
  void set_item_code(const std::string& id, absl::StatusCode code, std::string message = "") {
    absl::MutexLock lock(&mu_);
    codes_[id] = {code, std::move(message)};
  }
  void set_cancel(const std::string& id) {
    absl::MutexLock lock(&mu_);
    cancel_[id] = true;
  }
  void set_draining(bool draining) {
    absl::MutexLock lock(&mu_);
    draining_ = draining;
  }
  // Runs at the start of every Complete call, outside the fake's lock (a
  // test looks at the reporter while its call is in flight).
  void set_on_complete(std::function<void()> f) {
    absl::MutexLock lock(&mu_);
    on_complete_ = std::move(f);
  }
  void set_lease_expires_at(absl::Time t) {
    absl::MutexLock lock(&mu_);
    lease_expires_at_ = t;
  }

  std::vector<v1::HeartbeatRequest> heartbeats() const {
    absl::MutexLock lock(&mu_);
    return heartbeats_;
  }
  std::vector<v1::CompleteRequest> completes() const {
    absl::MutexLock lock(&mu_);
    return completes_;
  }
  std::vector<v1::FailRequest> fails() const {
    absl::MutexLock lock(&mu_);
    return fails_;
  }
  std::vector<v1::ReleaseRequest> releases() const {
    absl::MutexLock lock(&mu_);
    return releases_;
  }

  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r) override {
    absl::MutexLock lock(&mu_);
    heartbeats_.push_back(r);
    if (down_) return absl::UnavailableError("broker down (fake)");
    v1::HeartbeatResponse resp;
    for (const auto& item : r.items()) {
      auto* out = resp.add_items();
      out->set_id(item.id());
      SetStatus(item.id(), out->mutable_status());
      out->set_cancel(cancel_.contains(item.id()));
      if (out->status().code() == 0) {
        timespec ts = absl::ToTimespec(lease_expires_at_);
        out->mutable_lease_expires_at()->set_seconds(ts.tv_sec);
        out->mutable_lease_expires_at()->set_nanos(static_cast<int32_t>(ts.tv_nsec));
      }
    }
    resp.set_draining(draining_);
    return resp;
  }
  absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& r) override {
    std::function<void()> on_complete;
    {
      absl::MutexLock lock(&mu_);
      on_complete = on_complete_;
    }
    if (on_complete) on_complete();
    absl::MutexLock lock(&mu_);
    completes_.push_back(r);
    if (down_) return absl::UnavailableError("broker down (fake)");
    v1::CompleteResponse resp;
    for (const auto& item : r.items()) SetStatus(item.id(), resp.add_items());
    return resp;
  }
  absl::StatusOr<v1::FailResponse> Fail(const v1::FailRequest& r) override {
    absl::MutexLock lock(&mu_);
    fails_.push_back(r);
    if (down_) return absl::UnavailableError("broker down (fake)");
    v1::FailResponse resp;
    for (const auto& item : r.items()) {
      // The fake refuses results, not failures: a failure item is OK unless,
      // like the broker, it refuses a throttle's pause outside [0, 1 h].
      v1::ItemStatus* out = resp.add_items();
      const google::protobuf::Duration& d = item.retry_after();
      if (item.throttled() && (d.seconds() < 0 || d.nanos() < 0 || d.seconds() > 3600 ||
                               (d.seconds() == 3600 && d.nanos() > 0))) {
        out->set_code(static_cast<int>(absl::StatusCode::kInvalidArgument));
        out->set_message("retry_after over 1h");
      } else {
        out->set_code(0);
      }
    }
    return resp;
  }
  absl::StatusOr<v1::ReleaseResponse> Release(const v1::ReleaseRequest& r) override {
    absl::MutexLock lock(&mu_);
    releases_.push_back(r);
    if (down_) return absl::UnavailableError("broker down (fake)");
    v1::ReleaseResponse resp;
    for (const auto& item : r.items()) SetStatus(item.id(), resp.add_items());
    return resp;
  }

 private:
  void SetStatus(const std::string& id, v1::ItemStatus* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = codes_.find(id);
    if (it == codes_.end()) return;
    out->set_code(static_cast<int>(it->second.first));
    out->set_message(it->second.second);
  }

  mutable absl::Mutex mu_;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time lease_expires_at_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1'800'000'000);
  std::map<std::string, std::pair<absl::StatusCode, std::string>> codes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> cancel_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_complete_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::HeartbeatRequest> heartbeats_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CompleteRequest> completes_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::FailRequest> fails_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ReleaseRequest> releases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_TESTS_WORKER_FAKE_BROKER_RPC_H_
