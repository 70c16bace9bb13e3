// The client library against fake services on an in-process gRPC server
// (loopback, port 0): idempotency keys, the retry rules, deadlines, watch
// and the hand-encoded health check.
#include "client/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <set>
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

  // Each call answers every request (the task carries the request's type and
  // key; a key seen before is answered deduplicated; type "bad" is answered
  // INVALID_ARGUMENT), except that a call FailNext fails answers
  // `answer_before_break` requests, reads one more and ends with the failure.
  grpc::Status SubmitStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SubmitBatchResponse::Item, v1::SubmitRequest>* stream)
      override {
    grpc::Status failure;
    int answer_before_break;
    {
      absl::MutexLock lock(&mu_);
      failure = Enter(context);
      answer_before_break = answer_before_break_;
    }
    v1::SubmitRequest request;
    for (int answered = 0; stream->Read(&request); ++answered) {
      v1::SubmitBatchResponse::Item item;
      {
        absl::MutexLock lock(&mu_);
        const std::string& key = request.task().idempotency_key();
        keys_.push_back(key);
        item.set_deduplicated(!seen_.insert(key).second);
      }
      if (!failure.ok() && answered == answer_before_break) return failure;
      if (request.task().type() == "bad") {
        item.mutable_status()->set_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
        item.mutable_status()->set_message("type is bad");
      } else {
        item.mutable_task()->set_id(request.task().idempotency_key());
        item.mutable_task()->set_type(request.task().type());
        item.mutable_task()->set_idempotency_key(request.task().idempotency_key());
      }
      if (!stream->Write(item)) break;
    }
    return grpc::Status::OK;
  }
  void AnswerBeforeBreak(int n) {
    absl::MutexLock lock(&mu_);
    answer_before_break_ = n;
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
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  int answer_before_break_ ABSL_GUARDED_BY(mu_) = 0;
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
  // Every position varies: both 64-bit halves are random, no digit is fixed.
  std::vector<std::set<char>> seen(32);
  for (int i = 0; i < 200; ++i) {
    const std::string k = NewIdempotencyKey(gen);
    for (size_t p = 0; p < k.size(); ++p) seen[p].insert(k[p]);
  }
  for (size_t p = 0; p < seen.size(); ++p) EXPECT_GE(seen[p].size(), 8u) << "position " << p;
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

// gRPC rounds the grpc-timeout header up to a few significant digits, so the
// server may see a little more time left than the client set.
constexpr absl::Duration kTimeoutRounding = absl::Milliseconds(500);

// ─── SubmitStream ───

v1::TaskSpec Typed(const std::string& type) {
  v1::TaskSpec spec;
  spec.set_queue("q");
  spec.set_type(type);
  return spec;
}

TEST_F(ClientTest, SubmitStreamAnswersInSendOrderAndKeysEveryTask) {
  Client client(options_);
  std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
  for (const char* type : {"a", "bad", "c"}) ASSERT_TRUE(stream->Send(Typed(type)).ok());
  EXPECT_EQ(stream->unanswered(), 3u);
  absl::StatusOr<v1::SubmitResponse> a = stream->Next();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->task().type(), "a");
  EXPECT_EQ(a->task().idempotency_key().size(), 32u);
  absl::StatusOr<v1::SubmitResponse> bad = stream->Next();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "type is bad");
  EXPECT_FALSE(stream->broken()) << "a refused task does not break the stream";
  absl::StatusOr<v1::SubmitResponse> c = stream->Next();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->task().type(), "c");
  EXPECT_EQ(stream->unanswered(), 0u);
  EXPECT_EQ(stream->Next().status().code(), absl::StatusCode::kFailedPrecondition);
  const std::vector<std::string> keys = fake_.submitted_keys();
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), 3u);
  EXPECT_EQ(fake_.calls(), 1) << "one call for all three";
}

TEST_F(ClientTest, SubmitStreamSubmitReturnsItsOwnAnswerAndKeepsEarlierOnesForNext) {
  Client client(options_);
  std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
  ASSERT_TRUE(stream->Send(Typed("a")).ok());
  ASSERT_TRUE(stream->Send(Typed("b")).ok());
  absl::StatusOr<v1::SubmitResponse> c = stream->Submit(Typed("c"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->task().type(), "c");
  EXPECT_EQ(stream->Next()->task().type(), "a");
  EXPECT_EQ(stream->Next()->task().type(), "b");
  EXPECT_EQ(stream->unanswered(), 0u);
}

TEST_F(ClientTest, SubmitStreamResendsTheUnansweredWithTheirKeysAfterABreak) {
  fake_.FailNext(1, grpc::StatusCode::UNAVAILABLE);
  fake_.AnswerBeforeBreak(2);
  Client client(options_);
  std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(stream->Send(Typed(absl::StrCat("t", i))).ok());
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<v1::SubmitResponse> r = stream->Next();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->task().type(), absl::StrCat("t", i));
    // The broker took t2 before the break, without answering it.
    EXPECT_EQ(r->deduplicated(), i == 2) << i;
  }
  EXPECT_EQ(fake_.calls(), 2);
  const std::vector<std::string> keys = fake_.submitted_keys();
  ASSERT_GE(keys.size(), 6u);
  EXPECT_EQ(keys[2], keys[3]) << "t2 again, with its key";
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), 5u);
}

TEST_F(ClientTest, SubmitStreamGivesUpAfterTheConfiguredBreaksAndHandsTheTasksBack) {
  fake_.FailNext(100, grpc::StatusCode::UNAVAILABLE);
  options_.submit_attempts = 3;
  Client client(options_);
  std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
  v1::TaskSpec spec = Typed("a");
  spec.set_idempotency_key("mine");
  ASSERT_TRUE(stream->Send(spec).ok());
  EXPECT_FALSE(stream->broken());
  EXPECT_EQ(stream->Next().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(stream->broken());
  EXPECT_EQ(fake_.calls(), 3);
  absl::Status later = stream->Send(Typed("b"));
  EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(later.message().find("TakeUnanswered"), std::string::npos) << later;
  std::vector<v1::TaskSpec> back = stream->TakeUnanswered();
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].idempotency_key(), "mine");
  EXPECT_EQ(back[0].type(), "a");
}

TEST_F(ClientTest, SubmitStreamDoesNotRetryARefusedCall) {
  fake_.FailNext(1, grpc::StatusCode::PERMISSION_DENIED);
  Client client(options_);
  std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
  ASSERT_TRUE(stream->Send(Typed("a")).ok());
  EXPECT_EQ(stream->Next().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(fake_.calls(), 1);
}

TEST_F(ClientTest, SubmitStreamCallsCarryTheTimeoutAsTheirDeadline) {
  options_.timeout = absl::Seconds(7);
  Client client(options_);
  std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
  ASSERT_TRUE(stream->Submit(Typed("a")).ok());
  EXPECT_GT(fake_.last_deadline_left(), absl::Seconds(5));
  EXPECT_LE(fake_.last_deadline_left(), absl::Seconds(7) + kTimeoutRounding);
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
