// Service-layer tests: a real in-process BrokerServer on a loopback port 0,
// driven through the generated gRPC stubs. They pin down the status codes and
// messages at the wire, long-polls and their cancellation, watches, and the
// drain of parked calls.
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/server.h"

namespace conveyor::server {
namespace {

namespace v1 = ::conveyor::v1;
using ::testing::HasSubstr;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(ServerOptions()); }

  void StartServer(ServerOptions options) {
    options.listen = "127.0.0.1:0";
    options.metrics_addr = "";
    options.drain_grace = absl::Milliseconds(200);
    if (options.broker.max_payload_bytes == BrokerOptions().max_payload_bytes) {
      options.broker.max_payload_bytes = 1024;
    }
    auto server = BrokerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    tasks_ = v1::TaskService::NewStub(channel_);
    queues_ = v1::QueueService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(20)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() +
                      absl::ToChronoMilliseconds(timeout));
    return ctx;
  }

  grpc::Status Submit(const std::string& queue, const std::string& payload,
                      v1::SubmitResponse* resp, uint32_t priority = 0) {
    v1::SubmitRequest req;
    req.mutable_task()->set_queue(queue);
    req.mutable_task()->set_type("echo");
    req.mutable_task()->set_payload(payload);
    req.mutable_task()->set_priority(priority);
    return tasks_->Submit(Ctx().get(), req, resp);
  }

  v1::LeaseResponse Lease(const std::string& queue, uint32_t max, absl::Duration wait) {
    v1::LeaseRequest req;
    req.set_worker_id("test-worker");
    req.add_queues(queue);
    req.set_max_tasks(max);
    req.mutable_wait()->set_seconds(absl::ToInt64Seconds(wait));
    v1::LeaseResponse resp;
    grpc::Status s = workers_->Lease(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  std::unique_ptr<BrokerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::QueueService::Stub> queues_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

TEST_F(ServiceTest, SubmitThenGetTaskReturnsTheStoredTask) {
  v1::SubmitResponse submitted;
  ASSERT_TRUE(Submit("emails", "hello", &submitted).ok());
  EXPECT_EQ(submitted.task().id().size(), 16u);
  EXPECT_EQ(submitted.task().state(), v1::TASK_STATE_READY);

  v1::GetTaskRequest get;
  get.set_id(submitted.task().id());
  v1::Task task;
  ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
  EXPECT_EQ(task.payload(), "hello");
  EXPECT_EQ(task.queue(), "emails");
  EXPECT_EQ(task.max_attempts(), 3u);
}

TEST_F(ServiceTest, BadInputGetsInvalidArgumentNamingTheField) {
  v1::SubmitResponse resp;
  grpc::Status s = Submit("q", "x", &resp, /*priority=*/12);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("priority"));
  EXPECT_THAT(s.error_message(), HasSubstr("12"));

  s = Submit("bad queue!", "x", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("queue"));

  s = Submit("q", std::string(2000, 'x'), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("payload is 2000 bytes"));

  v1::SubmitRequest req;
  req.mutable_task()->set_queue("q");
  req.mutable_task()->set_type("echo");
  req.mutable_task()->mutable_retry()->set_max_attempts(0);
  s = tasks_->Submit(Ctx().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("max_attempts"));

  req.mutable_task()->clear_retry();
  req.mutable_task()->mutable_delay()->set_seconds(-5);
  s = tasks_->Submit(Ctx().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("delay"));

  req.mutable_task()->clear_delay();
  req.mutable_task()->mutable_timeout()->set_seconds(86400LL * 365);
  s = tasks_->Submit(Ctx().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("timeout"));

  // Nothing was accepted by the failed calls.
  v1::ListQueuesResponse queues;
  ASSERT_TRUE(queues_->ListQueues(Ctx().get(), v1::ListQueuesRequest(), &queues).ok());
  EXPECT_EQ(queues.queues_size(), 0);
}

TEST_F(ServiceTest, UnknownAndMalformedIdsAreNotFoundAndInvalid) {
  v1::GetTaskRequest get;
  v1::Task task;
  get.set_id("0123456789abcdef");
  EXPECT_EQ(tasks_->GetTask(Ctx().get(), get, &task).error_code(),
            grpc::StatusCode::NOT_FOUND);
  get.set_id("not-an-id");
  grpc::Status s = tasks_->GetTask(Ctx().get(), get, &task);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("not-an-id"));

  v1::GetQueueRequest q;
  q.set_name("nope");
  v1::Queue queue;
  s = queues_->GetQueue(Ctx().get(), q, &queue);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("nope"));
}

TEST_F(ServiceTest, FullQueueIsResourceExhaustedAndKeepsWhatItHolds) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("small");
  create.mutable_config()->set_capacity(2);
  v1::Queue queue;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &queue).ok());
  v1::SubmitResponse r;
  ASSERT_TRUE(Submit("small", "1", &r).ok());
  ASSERT_TRUE(Submit("small", "2", &r).ok());
  grpc::Status s = Submit("small", "3", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("\"small\" is full (capacity 2"));

  v1::GetQueueRequest get;
  get.set_name("small");
  ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &queue).ok());
  EXPECT_EQ(queue.stats().ready(), 2u);
}

TEST_F(ServiceTest, WaitPolicySubmitParksUntilThereIsRoom) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("waiting");
  create.mutable_config()->set_capacity(1);
  create.mutable_config()->set_full_policy(v1::FULL_POLICY_WAIT);
  v1::Queue queue;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &queue).ok());
  v1::SubmitResponse first;
  ASSERT_TRUE(Submit("waiting", "1", &first).ok());

  auto second = std::async(std::launch::async, [&] {
    v1::SubmitResponse resp;
    grpc::Status s = Submit("waiting", "2", &resp);
    return std::make_pair(s.error_code(), resp);
  });
  // The second submit cannot finish while the queue is full.
  EXPECT_EQ(second.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);

  v1::LeaseResponse leased = Lease("waiting", 1, absl::ZeroDuration());
  ASSERT_EQ(leased.tasks_size(), 1);
  v1::CompleteRequest complete;
  auto* item = complete.add_items();
  item->set_id(leased.tasks(0).id());
  item->set_token(leased.tasks(0).token());
  v1::CompleteResponse done;
  ASSERT_TRUE(workers_->Complete(Ctx().get(), complete, &done).ok());
  ASSERT_EQ(done.items(0).code(), 0);

  ASSERT_EQ(second.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto [code, resp] = second.get();
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(resp.task().state(), v1::TASK_STATE_READY);
}

TEST_F(ServiceTest, WaitPolicySubmitEndsAtTheCallDeadline) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("waiting");
  create.mutable_config()->set_capacity(1);
  create.mutable_config()->set_full_policy(v1::FULL_POLICY_WAIT);
  v1::Queue queue;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &queue).ok());
  v1::SubmitResponse resp;
  ASSERT_TRUE(Submit("waiting", "1", &resp).ok());
  v1::SubmitRequest req;
  req.mutable_task()->set_queue("waiting");
  req.mutable_task()->set_type("echo");
  grpc::Status s = tasks_->Submit(Ctx(absl::Milliseconds(300)).get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  v1::GetQueueRequest get;
  get.set_name("waiting");
  ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &queue).ok());
  EXPECT_EQ(queue.stats().ready(), 1u);
}

TEST_F(ServiceTest, LongPollReturnsAsSoonAsATaskArrives) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("jobs");
  v1::Queue created;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &created).ok());
  auto lease = std::async(std::launch::async, [&] { return Lease("jobs", 4, absl::Seconds(30)); });
  // Wait until the broker has parked the lease.
  v1::GetQueueRequest get;
  get.set_name("jobs");
  for (int i = 0; i < 1000; ++i) {
    v1::Queue q;
    if (queues_->GetQueue(Ctx().get(), get, &q).ok() && q.stats().waiting_workers() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  v1::SubmitResponse submitted;
  ASSERT_TRUE(Submit("jobs", "work", &submitted).ok());
  ASSERT_EQ(lease.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  v1::LeaseResponse leased = lease.get();
  ASSERT_EQ(leased.tasks_size(), 1);
  EXPECT_EQ(leased.tasks(0).id(), submitted.task().id());
  EXPECT_EQ(leased.tasks(0).payload(), "work");
  EXPECT_EQ(leased.tasks(0).token(), 1u);
  EXPECT_EQ(leased.tasks(0).attempt(), 1u);
}

TEST_F(ServiceTest, CancelledLongPollLeavesNoParkedWaiter) {
  v1::SubmitResponse r;
  ASSERT_TRUE(Submit("jobs", "x", &r).ok());
  Lease("jobs", 1, absl::ZeroDuration());  // empty the queue
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::LeaseRequest req;
  req.add_queues("jobs");
  req.set_max_tasks(1);
  req.mutable_wait()->set_seconds(30);
  v1::LeaseResponse resp;
  std::promise<grpc::Status> done;
  workers_->async()->Lease(&ctx, &req, &resp, [&](grpc::Status s) { done.set_value(s); });
  v1::GetQueueRequest get;
  get.set_name("jobs");
  v1::Queue q;
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &q).ok());
    if (q.stats().waiting_workers() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(q.stats().waiting_workers(), 1u);
  ctx.TryCancel();
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(future.get().error_code(), grpc::StatusCode::CANCELLED);
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &q).ok());
    if (q.stats().waiting_workers() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(q.stats().waiting_workers(), 0u);
  // A task submitted now is not swallowed by the cancelled poll.
  ASSERT_TRUE(Submit("jobs", "y", &r).ok());
  EXPECT_EQ(Lease("jobs", 1, absl::ZeroDuration()).tasks_size(), 1);
}

TEST_F(ServiceTest, StaleTokenIsFailedPreconditionPerItem) {
  v1::SubmitResponse r;
  ASSERT_TRUE(Submit("jobs", "x", &r).ok());
  v1::LeaseResponse leased = Lease("jobs", 1, absl::ZeroDuration());
  ASSERT_EQ(leased.tasks_size(), 1);
  v1::ReleaseRequest release;
  auto* ri = release.add_items();
  ri->set_id(leased.tasks(0).id());
  ri->set_token(leased.tasks(0).token());
  v1::ReleaseResponse released;
  ASSERT_TRUE(workers_->Release(Ctx().get(), release, &released).ok());
  v1::LeaseResponse again = Lease("jobs", 1, absl::ZeroDuration());
  ASSERT_EQ(again.tasks_size(), 1);
  EXPECT_EQ(again.tasks(0).token(), 2u);

  v1::CompleteRequest complete;
  auto* stale = complete.add_items();
  stale->set_id(leased.tasks(0).id());
  stale->set_token(1);
  auto* unknown = complete.add_items();
  unknown->set_id("00000000000000ff");
  v1::CompleteResponse resp;
  ASSERT_TRUE(workers_->Complete(Ctx().get(), complete, &resp).ok());
  ASSERT_EQ(resp.items_size(), 2);
  EXPECT_EQ(resp.items(0).code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_THAT(resp.items(0).message(), HasSubstr("stale"));
  EXPECT_EQ(resp.items(1).code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));

  v1::GetTaskRequest get;
  get.set_id(leased.tasks(0).id());
  v1::Task task;
  ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
  EXPECT_EQ(task.state(), v1::TASK_STATE_RUNNING);
}

TEST_F(ServiceTest, WatchStreamsEveryChangeUntilTheTaskEnds) {
  v1::SubmitResponse r;
  ASSERT_TRUE(Submit("jobs", "x", &r).ok());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchTaskRequest req;
  req.set_id(r.task().id());
  auto reader = tasks_->WatchTask(&ctx, req);
  v1::Task update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::TASK_STATE_READY);

  v1::LeaseResponse leased = Lease("jobs", 1, absl::ZeroDuration());
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::TASK_STATE_RUNNING);

  v1::CompleteRequest complete;
  auto* item = complete.add_items();
  item->set_id(leased.tasks(0).id());
  item->set_token(leased.tasks(0).token());
  item->set_result("42");
  v1::CompleteResponse done;
  ASSERT_TRUE(workers_->Complete(Ctx().get(), complete, &done).ok());
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(update.result(), "42");
  EXPECT_FALSE(reader->Read(&update));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(ServiceTest, SubmitBatchReportsEachItemOnItsOwn) {
  v1::SubmitBatchRequest req;
  for (int i = 0; i < 3; ++i) {
    auto* t = req.add_tasks();
    t->set_queue("batch");
    t->set_type("echo");
    t->set_priority(i == 1 ? 42 : 0);
  }
  v1::SubmitBatchResponse resp;
  ASSERT_TRUE(tasks_->SubmitBatch(Ctx().get(), req, &resp).ok());
  ASSERT_EQ(resp.items_size(), 3);
  EXPECT_EQ(resp.items(0).status().code(), 0);
  EXPECT_EQ(resp.items(1).status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(resp.items(1).status().message(), HasSubstr("priority"));
  EXPECT_EQ(resp.items(2).status().code(), 0);
  EXPECT_NE(resp.items(0).task().id(), resp.items(2).task().id());

  v1::SubmitBatchRequest big;
  for (int i = 0; i < 1001; ++i) {
    auto* t = big.add_tasks();
    t->set_queue("batch");
    t->set_type("echo");
  }
  grpc::Status s = tasks_->SubmitBatch(Ctx().get(), big, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("1001"));
}

TEST_F(ServiceTest, HealthServiceReportsServing) {
  // The standard grpc.health.v1 service: an empty HealthCheckRequest and a
  // response whose field 1 is the serving status (1 = SERVING).
  grpc::GenericStub stub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::ByteBuffer request;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) { done.set_value(s); });
  grpc::Status s = done.get_future().get();
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (auto& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

TEST_F(ServiceTest, ShutdownEndsParkedLongPollsAndWatches) {
  v1::SubmitResponse r;
  ASSERT_TRUE(Submit("jobs", "x", &r).ok());
  grpc::ClientContext watch_ctx;
  v1::WatchTaskRequest watch_req;
  watch_req.set_id(r.task().id());
  auto reader = tasks_->WatchTask(&watch_ctx, watch_req);
  v1::Task update;
  ASSERT_TRUE(reader->Read(&update));

  Lease("jobs", 1, absl::ZeroDuration());
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("idle");
  v1::Queue created;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &created).ok());
  auto parked = std::async(std::launch::async, [&] {
    v1::LeaseRequest req;
    req.add_queues("idle");
    req.set_max_tasks(1);
    req.mutable_wait()->set_seconds(50);
    v1::LeaseResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    grpc::Status s = workers_->Lease(&ctx, req, &resp);
    return std::make_pair(s.error_code(), resp.tasks_size());
  });
  v1::GetQueueRequest get;
  get.set_name("idle");
  for (int i = 0; i < 1000; ++i) {
    v1::Queue q;
    if (queues_->GetQueue(Ctx().get(), get, &q).ok() && q.stats().waiting_workers() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  const absl::Time start = absl::Now();
  // The broker waits for the two RUNNING tasks up to its grace.
  server_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  ASSERT_EQ(parked.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto [code, n] = parked.get();
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(n, 0);
  while (reader->Read(&update)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace conveyor::server
