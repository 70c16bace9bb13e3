// The client library against fake services on an in-process gRPC server
// (loopback, port 0): idempotency keys, the retry rules, deadlines, watch
// and the hand-encoded health check.
#include "client/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "grpcpp/ext/health_check_service_server_builder_option.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace conveyor::client {
namespace {

// Answers with `code` for the next `failures` calls of each method, then OK;
// records what it was sent.
class FakeServices final : public v1::TaskService::Service, public v1::WorkerService::Service {
 public:
  void FailNext(int failures, grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    failures_ = failures;
    code_ = code;
  }
  std::vector<std::string> submitted_keys() {
    absl::MutexLock lock(&mu_);
    return keys_;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // SubmitBatchRequest.ids_only of each SubmitBatch call.
  std::vector<bool> ids_only() {
    absl::MutexLock lock(&mu_);
    return ids_only_;
  }
  absl::Duration last_deadline_left() {
    absl::MutexLock lock(&mu_);
    return deadline_left_;
  }

  grpc::Status Submit(grpc::ServerContext* context, const v1::SubmitRequest* request,
                      v1::SubmitResponse* response) override {
    absl::MutexLock lock(&mu_);
    keys_.push_back(request->task().idempotency_key());
    if (grpc::Status s = Enter(context); !s.ok()) return s;
    response->mutable_task()->set_id("00000000000000aa");
    response->mutable_task()->set_idempotency_key(request->task().idempotency_key());
    return grpc::Status::OK;
  }

  grpc::Status SubmitBatch(grpc::ServerContext* context, const v1::SubmitBatchRequest* request,
                           v1::SubmitBatchResponse* response) override {
    absl::MutexLock lock(&mu_);
    for (const v1::TaskSpec& spec : request->tasks()) keys_.push_back(spec.idempotency_key());
    ids_only_.push_back(request->ids_only());
    if (grpc::Status s = Enter(context); !s.ok()) return s;
    for (int i = 0; i < request->tasks_size(); ++i) response->add_items();
    return grpc::Status::OK;
  }

  grpc::Status GetTask(grpc::ServerContext* context, const v1::GetTaskRequest* request,
                       v1::Task* response) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Enter(context); !s.ok()) return s;
    response->set_id(request->id());
    return grpc::Status::OK;
  }

  grpc::Status CancelTask(grpc::ServerContext* context, const v1::CancelTaskRequest* request,
                          v1::Task* response) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = Enter(context); !s.ok()) return s;
    response->set_id(request->id());
    return grpc::Status::OK;
  }

  grpc::Status WatchTask(grpc::ServerContext* context, const v1::WatchTaskRequest* request,
                         grpc::ServerWriter<v1::Task>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      if (grpc::Status s = Enter(context); !s.ok()) return s;
    }
    for (v1::TaskState state :
         {v1::TASK_STATE_READY, v1::TASK_STATE_RUNNING, v1::TASK_STATE_SUCCEEDED}) {
      v1::Task task;
      task.set_id(request->id());
      task.set_state(state);
      if (!writer->Write(task)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status Lease(grpc::ServerContext* context, const v1::LeaseRequest*,
                     v1::LeaseResponse*) override {
    absl::MutexLock lock(&mu_);
    return Enter(context);
  }

  grpc::Status Complete(grpc::ServerContext* context, const v1::CompleteRequest*,
                        v1::CompleteResponse*) override {
    absl::MutexLock lock(&mu_);
    return Enter(context);
  }

 private:
  grpc::Status Enter(grpc::ServerContext* context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++calls_;
    deadline_left_ = FromChrono(context->deadline()) - absl::Now();
    if (failures_ > 0) {
      --failures_;
      return grpc::Status(code_, "injected failure");
    }
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::StatusCode code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> keys_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> ids_only_ ABSL_GUARDED_BY(mu_);
  absl::Duration deadline_left_ ABSL_GUARDED_BY(mu_);
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(static_cast<v1::TaskService::Service*>(&fake_));
    builder.RegisterService(static_cast<v1::WorkerService::Service*>(&fake_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    options_.address = absl::StrCat("127.0.0.1:", port);
    options_.initial_backoff = absl::Milliseconds(1);
    options_.max_backoff = absl::Milliseconds(5);
  }

  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }

  v1::TaskSpec Spec() {
    v1::TaskSpec spec;
    spec.set_queue("q");
    spec.set_type("t");
    return spec;
  }

  FakeServices fake_;
  std::unique_ptr<grpc::Server> server_;
  ClientOptions options_;
};

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

TEST(IdempotencyKeyTest, IsThirtyTwoLowercaseHexDigitsAndFresh) {
  absl::BitGen gen;
  const std::string a = NewIdempotencyKey(gen);
  const std::string b = NewIdempotencyKey(gen);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_TRUE(IsLowerHex(a)) << a;
  EXPECT_NE(a, b);
}

TEST_F(ClientTest, SubmitAttachesARandomIdempotencyKey) {
  Client client(options_);
  absl::StatusOr<v1::SubmitResponse> r = client.Submit(Spec());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(fake_.submitted_keys().size(), 1u);
  const std::string key = fake_.submitted_keys()[0];
  EXPECT_EQ(key.size(), 32u);
  EXPECT_TRUE(IsLowerHex(key)) << key;
  ASSERT_TRUE(client.Submit(Spec()).ok());
  EXPECT_NE(fake_.submitted_keys()[1], key) << "each submit gets its own key";
}

TEST_F(ClientTest, SubmitKeepsTheCallersIdempotencyKey) {
  Client client(options_);
  v1::TaskSpec spec = Spec();
  spec.set_idempotency_key("mine");
  ASSERT_TRUE(client.Submit(spec).ok());
  EXPECT_EQ(fake_.submitted_keys(), std::vector<std::string>{"mine"});
}

TEST_F(ClientTest, SubmitRetriesUnavailableWithTheSameKey) {
  fake_.FailNext(2, grpc::StatusCode::UNAVAILABLE);
  Client client(options_);
  absl::StatusOr<v1::SubmitResponse> r = client.Submit(Spec());
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<std::string> keys = fake_.submitted_keys();
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[0], keys[1]);
  EXPECT_EQ(keys[1], keys[2]);
  EXPECT_EQ(r->task().idempotency_key(), keys[0]);
}

TEST_F(ClientTest, SubmitRetriesDeadlineExceededWithTheSameKey) {
  fake_.FailNext(1, grpc::StatusCode::DEADLINE_EXCEEDED);
  Client client(options_);
  ASSERT_TRUE(client.Submit(Spec()).ok());
  const std::vector<std::string> keys = fake_.submitted_keys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0], keys[1]);
}

TEST_F(ClientTest, SubmitGivesUpAfterTheConfiguredAttempts) {
  fake_.FailNext(100, grpc::StatusCode::UNAVAILABLE);
  options_.submit_attempts = 2;
  Client client(options_);
  absl::StatusOr<v1::SubmitResponse> r = client.Submit(Spec());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake_.calls(), 2);
}

TEST_F(ClientTest, SubmitDoesNotRetryAFullQueue) {
  fake_.FailNext(1, grpc::StatusCode::RESOURCE_EXHAUSTED);
  Client client(options_);
  absl::StatusOr<v1::SubmitResponse> r = client.Submit(Spec());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message(), "injected failure");
  EXPECT_EQ(fake_.calls(), 1);
}

TEST_F(ClientTest, SubmitBatchKeysEachSpecAndReusesTheKeysOnRetry) {
  fake_.FailNext(1, grpc::StatusCode::UNAVAILABLE);
  Client client(options_);
  v1::TaskSpec keyed = Spec();
  keyed.set_idempotency_key("given");
  absl::StatusOr<v1::SubmitBatchResponse> r = client.SubmitBatch({Spec(), keyed, Spec()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->items_size(), 3);
  const std::vector<std::string> keys = fake_.submitted_keys();
  ASSERT_EQ(keys.size(), 6u);  // two attempts of three specs
  EXPECT_EQ(keys[1], "given");
  EXPECT_NE(keys[0], keys[2]);
  EXPECT_EQ(std::vector<std::string>(keys.begin(), keys.begin() + 3),
            std::vector<std::string>(keys.begin() + 3, keys.end()));
}

TEST_F(ClientTest, SubmitBatchAsksForIdsOnlyWhenTold) {
  Client client(options_);
  ASSERT_TRUE(client.SubmitBatch({Spec()}).ok());
  ASSERT_TRUE(client.SubmitBatch({Spec()}, /*ids_only=*/true).ok());
  EXPECT_EQ(fake_.ids_only(), (std::vector<bool>{false, true}));
}

TEST_F(ClientTest, GetTaskRetriesUnavailable) {
  fake_.FailNext(1, grpc::StatusCode::UNAVAILABLE);
  Client client(options_);
  absl::StatusOr<v1::Task> task = client.GetTask("00000000000000aa");
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->id(), "00000000000000aa");
  EXPECT_EQ(fake_.calls(), 2);
}

TEST_F(ClientTest, GetTaskDoesNotRetryDeadlineExceededOrNotFound) {
  Client client(options_);
  fake_.FailNext(1, grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(client.GetTask("x").status().code(), absl::StatusCode::kNotFound);
  fake_.FailNext(1, grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(client.GetTask("x").status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(fake_.calls(), 2);
}

TEST_F(ClientTest, CancelAndCompleteAreNeverRetried) {
  Client client(options_);
  fake_.FailNext(1, grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(client.CancelTask("x").status().code(), absl::StatusCode::kUnavailable);
  fake_.FailNext(1, grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(client.Complete(v1::CompleteRequest()).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake_.calls(), 2);
}

constexpr absl::Duration kTimeoutRounding = absl::Milliseconds(500);

TEST_F(ClientTest, EveryCallCarriesTheConfiguredTimeoutAsItsDeadline) {
  options_.timeout = absl::Seconds(7);
  Client client(options_);
  ASSERT_TRUE(client.GetTask("x").ok());
  EXPECT_GT(fake_.last_deadline_left(), absl::Seconds(5));
  // gRPC rounds the grpc-timeout header up to a few significant digits, so the server may see
  // a little more than was set (35 s went over the wire as 35.1 s once).
  EXPECT_LE(fake_.last_deadline_left(), absl::Seconds(7) + kTimeoutRounding);
}

TEST_F(ClientTest, LeaseDeadlineAddsTheLongPollWaitToTheTimeout) {
  options_.timeout = absl::Seconds(5);
  Client client(options_);
  v1::LeaseRequest request;
  ToProto(absl::Seconds(30), request.mutable_wait());
  ASSERT_TRUE(client.Lease(request).ok());
  EXPECT_GT(fake_.last_deadline_left(), absl::Seconds(30));
  EXPECT_LE(fake_.last_deadline_left(), absl::Seconds(35) + kTimeoutRounding);
}

TEST_F(ClientTest, WatchTaskDeliversEveryChangeAndReturnsTheLast) {
  Client client(options_);
  std::vector<v1::TaskState> seen;
  absl::StatusOr<v1::Task> last = client.WatchTask("00000000000000aa", [&](const v1::Task& t) {
    seen.push_back(t.state());
    return true;
  });
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(seen, (std::vector<v1::TaskState>{v1::TASK_STATE_READY, v1::TASK_STATE_RUNNING,
                                              v1::TASK_STATE_SUCCEEDED}));
}

TEST_F(ClientTest, WatchTaskStopsWhenTheCallbackReturnsFalse) {
  Client client(options_);
  int calls = 0;
  absl::StatusOr<v1::Task> last = client.WatchTask("00000000000000aa", [&](const v1::Task&) {
    ++calls;
    return false;
  });
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(last->state(), v1::TASK_STATE_READY);
}

TEST_F(ClientTest, WatchTaskReturnsTheStreamError) {
  fake_.FailNext(1, grpc::StatusCode::NOT_FOUND);
  Client client(options_);
  absl::StatusOr<v1::Task> last = client.WatchTask(
      "x", [](const v1::Task&) { return true; }, absl::Seconds(5));
  EXPECT_EQ(last.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, HealthReportsServingThenNotServing) {
  Client client(options_);
  absl::StatusOr<ServingStatus> status = client.Health();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, ServingStatus::kServing);
  server_->GetHealthCheckService()->SetServingStatus(false);
  status = client.Health();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, ServingStatus::kNotServing);
  EXPECT_EQ(ServingStatusName(*status), "NOT_SERVING");
}

TEST_F(ClientTest, HealthOfANamedServiceEncodesTheServiceName) {
  server_->GetHealthCheckService()->SetServingStatus("conveyor.v1.TaskService", true);
  Client client(options_);
  absl::StatusOr<ServingStatus> status = client.Health("conveyor.v1.TaskService");
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, ServingStatus::kServing);
  EXPECT_EQ(client.Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientNoServerTest, UnreachableBrokerIsUnavailable) {
  // A port bound but not listening: connections to it are refused.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ClientOptions options;
  options.address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  options.timeout = absl::Seconds(5);
  options.initial_backoff = absl::Milliseconds(1);
  Client client(options);
  EXPECT_EQ(client.Health().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client.GetTask("x").status().code(), absl::StatusCode::kUnavailable);
  close(fd);
}

}  // namespace
}  // namespace conveyor::client
