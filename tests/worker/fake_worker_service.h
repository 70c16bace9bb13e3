// FakeWorkerService: a broker reduced to its worker-facing side, served
// in-process on 127.0.0.1:0 by the Worker SDK tests (batch_worker_test,
// worker_flow_test). Ready tasks are handed out by Lease (filtered by type,
// long-polling), heartbeats always extend leases, and every call is
// recorded. HoldReports(true) makes Complete, Fail and Release answer
// UNAVAILABLE, as a broker that cannot take results would.
//
// FakeBrokerTest: the fixture that serves one, and shuts down the test's
// worker (if any) before it.
#ifndef CONVEYOR_TESTS_WORKER_FAKE_WORKER_SERVICE_H_
#define CONVEYOR_TESTS_WORKER_FAKE_WORKER_SERVICE_H_

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "worker/worker.h"

namespace conveyor::worker {

namespace v1 = ::conveyor::v1;

class FakeWorkerService final : public v1::WorkerService::Service {
 public:
  void AddReady(const std::string& id, const std::string& type, const std::string& payload = "") {
    v1::LeasedTask t;
    t.set_id(id);
    t.set_queue("q");
    t.set_type(type);
    t.set_payload(payload.empty() ? id : payload);
    t.set_attempt(1);
    t.set_max_attempts(3);
    t.set_token(1);
    absl::MutexLock lock(&mu_);
    ready_.push_back(std::move(t));
  }

  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  // While held, Complete, Fail and Release answer UNAVAILABLE (the worker
  // keeps the reports and retries them).
  void HoldReports(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_reports_ = hold;
  }

  grpc::Status Lease(grpc::ServerContext* context, const v1::LeaseRequest* request,
                     v1::LeaseResponse* response) override {
    const absl::Time give_up = absl::Now() + FromProto(request->wait());
    absl::MutexLock lock(&mu_);
    leases_.push_back(*request);
    auto matches = [request](const v1::LeasedTask& t) {
      return request->types().empty() ||
             std::find(request->types().begin(), request->types().end(), t.type()) !=
                 request->types().end();
    };
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || context->IsCancelled() ||
             std::any_of(ready_.begin(), ready_.end(), matches);
    };
    while (!ready() && absl::Now() < give_up) {
      // Short slices: IsCancelled() is no condition the mutex can wait on.
      mu_.AwaitWithTimeout(absl::Condition(&closed_),
                           std::min(absl::Milliseconds(20), give_up - absl::Now()));
    }
    for (auto it = ready_.begin();
         it != ready_.end() && response->tasks_size() < static_cast<int>(request->max_tasks());) {
      if (!matches(*it)) {
        ++it;
        continue;
      }
      v1::LeasedTask* t = response->add_tasks();
      *t = std::move(*it);
      ToProto(absl::Now() + absl::Seconds(30), t->mutable_lease_expires_at());
      it = ready_.erase(it);
      ++leased_;
    }
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    absl::MutexLock lock(&mu_);
    heartbeats_.push_back(*request);
    for (const auto& item : request->items()) {
      auto* out = response->add_items();
      out->set_id(item.id());
      ToProto(absl::Now() + absl::Seconds(30), out->mutable_lease_expires_at());
    }
    return grpc::Status::OK;
  }

  grpc::Status Complete(grpc::ServerContext*, const v1::CompleteRequest* request,
                        v1::CompleteResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (hold_reports_) return Held();
    for (const auto& item : request->items()) {
      completed_[item.id()] = item.result();
      ++reports_;
      response->add_items();
    }
    return grpc::Status::OK;
  }

  grpc::Status Fail(grpc::ServerContext*, const v1::FailRequest* request,
                    v1::FailResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (hold_reports_) return Held();
    for (const auto& item : request->items()) {
      failed_[item.id()] = item;
      ++reports_;
      response->add_items();
    }
    return grpc::Status::OK;
  }

  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (hold_reports_) return Held();
    for (const auto& item : request->items()) {
      released_.insert(item.id());
      ++reports_;
      response->add_items();
    }
    return grpc::Status::OK;
  }

  // Waits (at most `bound`) until `n` tasks have a result, failure or
  // hand-back.
  bool AwaitReported(size_t n, absl::Duration bound = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return completed_.size() + failed_.size() + released_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), bound);
  }

  // Tasks handed out by Lease, and report items taken (a task reported
  // twice counts twice).
  size_t leased() const {
    absl::MutexLock lock(&mu_);
    return leased_;
  }
  size_t reports() const {
    absl::MutexLock lock(&mu_);
    return reports_;
  }
  std::vector<v1::LeaseRequest> leases() const {
    absl::MutexLock lock(&mu_);
    return leases_;
  }
  std::vector<v1::HeartbeatRequest> heartbeats() const {
    absl::MutexLock lock(&mu_);
    return heartbeats_;
  }
  std::map<std::string, std::string> completed() const {
    absl::MutexLock lock(&mu_);
    return completed_;
  }
  std::map<std::string, v1::FailRequest::Item> failed() const {
    absl::MutexLock lock(&mu_);
    return failed_;
  }
  std::set<std::string> released() const {
    absl::MutexLock lock(&mu_);
    return released_;
  }

 private:
  static grpc::Status Held() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "reports are held by the test");
  }

  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_reports_ ABSL_GUARDED_BY(mu_) = false;
  size_t leased_ ABSL_GUARDED_BY(mu_) = 0;
  size_t reports_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::LeasedTask> ready_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::LeaseRequest> leases_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::HeartbeatRequest> heartbeats_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> completed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::FailRequest::Item> failed_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> released_ ABSL_GUARDED_BY(mu_);
};

class FakeBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (worker_ != nullptr) worker_->Shutdown();
    service_.Close();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  FakeWorkerService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<Worker> worker_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_TESTS_WORKER_FAKE_WORKER_SERVICE_H_
