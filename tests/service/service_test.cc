// Service-layer tests: a real in-process BrokerServer on a loopback port 0,
// driven through the generated gRPC stubs. They pin down the status codes and
// messages at the wire, long-polls and their cancellation, watches, and the
// drain of parked calls.
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <set>
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
#include "common/clock.h"
#include "prometheus/metric_family.h"
#include "server/metrics.h"
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

  // A queue of `capacity` whose submits wait for room when it is full.
  void CreateWaitQueue(const std::string& name, uint64_t capacity) {
    v1::CreateQueueRequest create;
    create.mutable_config()->set_name(name);
    create.mutable_config()->set_capacity(capacity);
    create.mutable_config()->set_full_policy(v1::FULL_POLICY_WAIT);
    v1::Queue created;
    grpc::Status s = queues_->CreateQueue(Ctx().get(), create, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  v1::Queue GetQueue(const std::string& name) {
    v1::GetQueueRequest get;
    get.set_name(name);
    v1::Queue q;
    grpc::Status s = queues_->GetQueue(Ctx().get(), get, &q);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return q;
  }

  // 8 pollers race submits, each ending its own long-poll at a different
  // moment: with EndPolls (as a stopping worker does), or by cancelling the
  // call. `end_with_end_polls` picks which. Returns {submitted, received}.
  std::pair<int, int> RaceSubmitsWithEndingPolls(bool end_with_end_polls) {
    constexpr int kPollers = 8;
    constexpr int kRounds = 40;
    std::atomic<int> received{0};
    std::atomic<int> submitted{0};
    std::vector<std::thread> pollers;
    for (int p = 0; p < kPollers; ++p) {
      pollers.emplace_back([&, p] {
        const std::string worker_id = absl::StrCat("poller-", p);
        for (int round = 0; round < kRounds; ++round) {
          std::unique_ptr<grpc::ClientContext> ctx = Ctx(absl::Seconds(30));
          v1::LeaseRequest req;
          req.set_worker_id(worker_id);
          req.add_queues("jobs");
          req.set_max_tasks(2);
          req.mutable_wait()->set_seconds(30);
          v1::LeaseResponse resp;
          std::promise<grpc::Status> done;
          workers_->async()->Lease(ctx.get(), &req, &resp,
                                   [&](grpc::Status s) { done.set_value(s); });
          v1::SubmitResponse submitted_task;
          if (Submit("jobs", absl::StrCat(p, "/", round), &submitted_task).ok()) ++submitted;
          std::this_thread::sleep_for(std::chrono::microseconds(97 * ((p + round) % 11)));
          auto future = done.get_future();
          // EndPolls may come before the call is parked: then ask again.
          while (end_with_end_polls &&
                 future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            v1::EndPollsRequest end;
            end.set_worker_id(worker_id);
            v1::EndPollsResponse ended;
            ASSERT_TRUE(workers_->EndPolls(Ctx().get(), end, &ended).ok());
            future.wait_for(std::chrono::milliseconds(20));
          }
          if (!end_with_end_polls) ctx->TryCancel();
          ASSERT_EQ(future.wait_for(std::chrono::seconds(20)), std::future_status::ready);
          grpc::Status status = future.get();
          if (end_with_end_polls) {
            ASSERT_TRUE(status.ok()) << status.error_message();
          }
          if (status.ok()) received += resp.tasks_size();
        }
      });
    }
    for (std::thread& t : pollers) t.join();
    EXPECT_EQ(submitted.load(), kPollers * kRounds);
    return {submitted.load(), received.load()};
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

// Polls ended by EndPolls always deliver what they were granted: every task
// reached a poller or is ready again, none is left running.
TEST_F(ServiceTest, PollsEndedByEndPollsDeliverEveryGrantedTask) {
  auto [submitted, received] =
      RaceSubmitsWithEndingPolls(/*end_with_end_polls=*/true);
  v1::Queue q = GetQueue("jobs");
  EXPECT_EQ(q.stats().ready() + received, static_cast<uint64_t>(submitted));
  EXPECT_EQ(q.stats().running(), static_cast<uint64_t>(received));
  EXPECT_EQ(q.stats().waiting_workers(), 0u);

  grpc::ClientContext ctx;
  v1::EndPollsRequest end;
  v1::EndPollsResponse ended;
  grpc::Status bad = workers_->EndPolls(&ctx, end, &ended);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("worker_id"));
}

// Polls cancelled by their clients: a task granted to a call whose cancel the
// broker saw is handed back at once (the reactor's OnDone). A grant whose
// answer was already on its way when the cancel landed never reaches the
// client (gRPC drops it) and stays running until its lease expires, which
// is why a stopping worker ends its polls with EndPolls instead. Nothing is
// lost and no parked call is left behind.
TEST_F(ServiceTest, CancelledPollsHandBackWhatTheBrokerSawCancelled) {
  auto [submitted, received] =
      RaceSubmitsWithEndingPolls(/*end_with_end_polls=*/false);
  v1::Queue q = GetQueue("jobs");
  EXPECT_EQ(q.stats().ready() + q.stats().running(), static_cast<uint64_t>(submitted));
  EXPECT_GE(q.stats().running(), static_cast<uint64_t>(received));
  EXPECT_EQ(q.stats().waiting_workers(), 0u);
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

TEST_F(ServiceTest, SubmitBatchWithIdsOnlyAnswersEachTaskWithItsIdAlone) {
  v1::SubmitBatchRequest req;
  req.set_ids_only(true);
  for (int i = 0; i < 3; ++i) {
    auto* t = req.add_tasks();
    t->set_queue("lean");
    t->set_type("echo");
    t->set_payload(absl::StrCat("p", i));
    t->set_idempotency_key(i == 2 ? "k0" : absl::StrCat("k", i));  // the third repeats the first
    if (i == 1) t->set_priority(42);                                 // refused
  }
  v1::SubmitBatchResponse resp;
  ASSERT_TRUE(tasks_->SubmitBatch(Ctx().get(), req, &resp).ok());
  ASSERT_EQ(resp.items_size(), 3);
  EXPECT_EQ(resp.items(0).status().code(), 0);
  EXPECT_EQ(resp.items(1).status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_FALSE(resp.items(1).has_task());
  EXPECT_EQ(resp.items(2).status().code(), 0);
  EXPECT_TRUE(resp.items(2).deduplicated());
  EXPECT_EQ(resp.items(2).task().id(), resp.items(0).task().id());
  // Only the id: every other field is at its default.
  v1::Task only_id;
  only_id.set_id(resp.items(0).task().id());
  EXPECT_EQ(resp.items(0).task().SerializeAsString(), only_id.SerializeAsString());
  // The task itself is whole.
  v1::GetTaskRequest get;
  get.set_id(resp.items(0).task().id());
  v1::Task task;
  ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
  EXPECT_EQ(task.queue(), "lean");
  EXPECT_EQ(task.payload(), "p0");
  EXPECT_EQ(task.idempotency_key(), "k0");
  EXPECT_EQ(task.state(), v1::TASK_STATE_READY);
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

// ─── SubmitStream ───

using SubmitStreamRpc = grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitBatchResponse::Item>;

v1::SubmitRequest StreamRequest(const std::string& queue, const std::string& type,
                                const std::string& key = "") {
  v1::SubmitRequest req;
  req.mutable_task()->set_queue(queue);
  req.mutable_task()->set_type(type);
  req.mutable_task()->set_payload("p");
  req.mutable_task()->set_idempotency_key(key);
  return req;
}

TEST_F(ServiceTest, SubmitStreamAnswersEachRequestInOrderAndEndsOkAfterTheClientHalfCloses) {
  auto ctx = Ctx();
  std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(ctx.get());
  v1::SubmitBatchResponse::Item item;

  ASSERT_TRUE(stream->Write(StreamRequest("jobs", "a", "key-1")));
  ASSERT_TRUE(stream->Read(&item));
  EXPECT_EQ(item.status().code(), 0) << item.status().message();
  EXPECT_EQ(item.task().type(), "a");
  EXPECT_EQ(item.task().state(), v1::TASK_STATE_READY);
  EXPECT_FALSE(item.deduplicated());
  const std::string first_id = item.task().id();

  // A bad request is answered on its own; the stream carries on.
  v1::SubmitRequest bad = StreamRequest("jobs", "b");
  bad.mutable_task()->set_priority(12);
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->Read(&item));
  EXPECT_EQ(item.status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(item.status().message(), HasSubstr("priority"));
  EXPECT_FALSE(item.has_task());

  // A known key gets the original back.
  ASSERT_TRUE(stream->Write(StreamRequest("jobs", "a", "key-1")));
  ASSERT_TRUE(stream->Read(&item));
  EXPECT_EQ(item.status().code(), 0);
  EXPECT_TRUE(item.deduplicated());
  EXPECT_EQ(item.task().id(), first_id);

  ASSERT_TRUE(stream->Write(StreamRequest("jobs", "c")));
  ASSERT_TRUE(stream->WritesDone());
  ASSERT_TRUE(stream->Read(&item));
  EXPECT_EQ(item.task().type(), "c");
  EXPECT_FALSE(stream->Read(&item));
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(GetQueue("jobs").stats().ready(), 2u);
}

TEST_F(ServiceTest, SubmitStreamAnswersRequestsSentAheadInRequestOrder) {
  constexpr int kTasks = 2000;  // beyond the 512 the broker reads ahead
  auto ctx = Ctx();
  std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(ctx.get());
  std::thread writer([&] {
    for (int i = 0; i < kTasks; ++i) {
      if (!stream->Write(StreamRequest("ahead", absl::StrCat("t", i)))) return;
    }
    stream->WritesDone();
  });
  std::set<std::string> ids;
  v1::SubmitBatchResponse::Item item;
  int answered = 0;
  while (stream->Read(&item)) {
    ASSERT_EQ(item.status().code(), 0) << item.status().message();
    EXPECT_EQ(item.task().type(), absl::StrCat("t", answered)) << "answers keep request order";
    ids.insert(item.task().id());
    ++answered;
  }
  writer.join();
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(answered, kTasks);
  EXPECT_EQ(ids.size(), static_cast<size_t>(kTasks));
}

// Eight producers, each on its own stream and sending ahead from a second
// thread, into one queue at once: every stream's answers come in its own
// request order, every task is stored once, and the queue holds them all.
TEST_F(ServiceTest, ConcurrentSubmitStreamsEachKeepTheirOrder) {
  constexpr int kStreams = 8;
  constexpr int kTasks = 300;
  std::vector<std::thread> producers;
  std::vector<std::set<std::string>> ids(kStreams);
  std::vector<std::string> problems(kStreams);
  for (int p = 0; p < kStreams; ++p) {
    producers.emplace_back([&, p] {
      auto ctx = Ctx();
      std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(ctx.get());
      std::thread writer([&] {
        for (int i = 0; i < kTasks; ++i) {
          if (!stream->Write(StreamRequest("shared", absl::StrCat("p", p, "-", i),
                                           absl::StrCat("key-", p, "-", i)))) {
            return;
          }
        }
        stream->WritesDone();
      });
      v1::SubmitBatchResponse::Item item;
      for (int i = 0; stream->Read(&item); ++i) {
        if (item.status().code() != 0 || item.task().type() != absl::StrCat("p", p, "-", i)) {
          problems[p] = absl::StrCat("answer ", i, ": ", item.ShortDebugString());
        }
        ids[p].insert(item.task().id());
      }
      writer.join();
      grpc::Status s = stream->Finish();
      if (!s.ok()) problems[p] = s.error_message();
    });
  }
  for (std::thread& t : producers) t.join();
  std::set<std::string> all;
  for (int p = 0; p < kStreams; ++p) {
    EXPECT_EQ(problems[p], "") << "stream " << p;
    EXPECT_EQ(ids[p].size(), static_cast<size_t>(kTasks)) << "stream " << p;
    all.insert(ids[p].begin(), ids[p].end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kStreams * kTasks));
  EXPECT_EQ(GetQueue("shared").stats().ready(), static_cast<uint64_t>(kStreams * kTasks));
}

// A producer streaming into a full WAIT queue: the broker parks at most 512
// unanswered submits and stops reading (the rest wait in the transport); a
// cancel frees them all, and the one task accepted before stays.
TEST_F(ServiceTest, SubmitStreamStopsReadingAtItsBoundAndACancelEndsTheParkedSubmits) {
  CreateWaitQueue("narrow", 1);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(&ctx);
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 3000; ++i) {
      if (!stream->Write(StreamRequest("narrow", "t"))) return;
      written.fetch_add(1);
    }
  });
  v1::SubmitBatchResponse::Item item;
  ASSERT_TRUE(stream->Read(&item));
  EXPECT_EQ(item.status().code(), 0) << "the first fills the queue";

  auto waiting = [&] { return GetQueue("narrow").stats().waiting_submits(); };
  for (int i = 0; i < 2000 && waiting() < 512; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(waiting(), 512u) << "the first was answered; 512 more are read and parked";
  for (int i = 0; i < 2000 && written.load() < 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(written.load(), 1000) << "the client has sent well past the bound";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(waiting(), 512u) << "no read past the bound";

  ctx.TryCancel();
  writer.join();
  for (int i = 0; i < 1000 && waiting() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(waiting(), 0u);
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(GetQueue("narrow").stats().ready(), 1u);
}

// A submit parked on a full WAIT queue when the broker drains is answered
// (not accepted, UNAVAILABLE) before the stream ends.
TEST_F(ServiceTest, DrainAnswersAParkedStreamedSubmitBeforeEndingTheStream) {
  CreateWaitQueue("narrow", 1);
  auto ctx = Ctx();
  std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(ctx.get());
  v1::SubmitBatchResponse::Item item;
  ASSERT_TRUE(stream->Write(StreamRequest("narrow", "first")));
  ASSERT_TRUE(stream->Read(&item));
  ASSERT_EQ(item.status().code(), 0);
  ASSERT_TRUE(stream->Write(StreamRequest("narrow", "parked")));
  for (int i = 0; i < 1000 && GetQueue("narrow").stats().waiting_submits() != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server_->Shutdown();
  ASSERT_TRUE(stream->Read(&item)) << "the parked submit is answered";
  EXPECT_EQ(item.status().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  EXPECT_THAT(item.status().message(), HasSubstr("not accepted"));
  EXPECT_FALSE(stream->Read(&item));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ServiceTest, DrainAnswersWhatTheSubmitStreamReadThenEndsItUnavailable) {
  auto ctx = Ctx();
  std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(ctx.get());
  v1::SubmitBatchResponse::Item item;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(stream->Write(StreamRequest("jobs", "t")));
    ASSERT_TRUE(stream->Read(&item));
    ASSERT_EQ(item.status().code(), 0);
  }
  server_->Shutdown();
  EXPECT_FALSE(stream->Read(&item));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("draining"));
}

// ─── limits ───

v1::Limits SomeLimits() {
  v1::Limits l;
  l.mutable_rate()->set_per_second(50);
  l.mutable_rate()->set_burst(5);
  l.set_max_running(20);
  l.mutable_key_rate()->set_per_second(0.5);
  (*l.mutable_key_rates())["acme"].set_per_second(10);
  (*l.mutable_key_rates())["acme"].set_burst(1);
  l.set_key_max_running(2);
  (*l.mutable_pools())["db"] = 5;
  return l;
}

// The submit handlers move each task's payload and key out of their request
// instead of copying them: every path (Submit, SubmitBatch with an invalid
// item among valid ones, SubmitStream) stores the bytes it was sent, a
// resubmit with the same long key finds the task, and a lease hands them out.
TEST_F(ServiceTest, SubmitPathsStoreLongPayloadsAndKeysByteForByte) {
  auto payload = [](int i) { return std::string(200 + i, static_cast<char>('a' + i)); };
  auto key = [](int i) { return absl::StrCat(std::string(40, 'k'), "-", i); };
  std::vector<std::string> ids(5);

  v1::SubmitRequest one;
  one.mutable_task()->set_queue("long");
  one.mutable_task()->set_type("echo");
  one.mutable_task()->set_payload(payload(0));
  one.mutable_task()->set_idempotency_key(key(0));
  v1::SubmitResponse single;
  grpc::Status s = tasks_->Submit(Ctx().get(), one, &single);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ids[0] = single.task().id();

  v1::SubmitBatchRequest batch;
  for (int i = 1; i <= 3; ++i) {
    v1::TaskSpec* t = batch.add_tasks();
    t->set_queue("long");
    t->set_type("echo");
    t->set_payload(payload(i));
    t->set_idempotency_key(key(i));
    if (i == 2) t->set_priority(42);  // refused; its neighbours are not shifted
  }
  v1::SubmitBatchResponse answered;
  s = tasks_->SubmitBatch(Ctx().get(), batch, &answered);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(answered.items_size(), 3);
  EXPECT_EQ(answered.items(1).status().code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  ids[1] = answered.items(0).task().id();
  ids[3] = answered.items(2).task().id();
  EXPECT_EQ(answered.items(0).task().idempotency_key(), key(1));
  EXPECT_EQ(answered.items(2).task().idempotency_key(), key(3));

  auto ctx = Ctx();
  std::unique_ptr<SubmitStreamRpc> stream = tasks_->SubmitStream(ctx.get());
  v1::SubmitRequest streamed = StreamRequest("long", "echo", key(4));
  streamed.mutable_task()->set_payload(payload(4));
  ASSERT_TRUE(stream->Write(streamed));
  v1::SubmitBatchResponse::Item item;
  ASSERT_TRUE(stream->Read(&item));
  EXPECT_EQ(item.status().code(), 0) << item.status().message();
  ids[4] = item.task().id();
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&item));
  EXPECT_TRUE(stream->Finish().ok());

  for (int i : {0, 1, 3, 4}) {
    v1::GetTaskRequest get;
    get.set_id(ids[i]);
    v1::Task task;
    ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok()) << i;
    EXPECT_EQ(task.payload(), payload(i)) << i;
    EXPECT_EQ(task.idempotency_key(), key(i)) << i;
    v1::SubmitRequest again = one;
    again.mutable_task()->set_payload("other");
    again.mutable_task()->set_idempotency_key(key(i));
    v1::SubmitResponse dedup;
    ASSERT_TRUE(tasks_->Submit(Ctx().get(), again, &dedup).ok()) << i;
    EXPECT_TRUE(dedup.deduplicated()) << i;
    EXPECT_EQ(dedup.task().id(), ids[i]) << i;
  }
  EXPECT_EQ(GetQueue("long").stats().ready(), 4u);
  // The Lease answer moves each payload into place: all four come out whole.
  v1::LeaseResponse leased = Lease("long", 10, absl::ZeroDuration());
  ASSERT_EQ(leased.tasks_size(), 4);
  std::set<std::string> want = {payload(0), payload(1), payload(3), payload(4)};
  std::set<std::string> got;
  for (const v1::LeasedTask& t : leased.tasks()) {
    got.insert(t.payload());
    EXPECT_EQ(t.queue(), "long");
    EXPECT_EQ(t.type(), "echo");
  }
  EXPECT_EQ(got, want);
}

TEST_F(ServiceTest, CreateQueueWithLimitsRoundTripsThroughGetQueue) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("api");
  *create.mutable_config()->mutable_limits() = SomeLimits();
  v1::Queue created;
  grpc::Status s = queues_->CreateQueue(Ctx().get(), create, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();

  v1::GetQueueRequest get;
  get.set_name("api");
  v1::Queue q;
  ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &q).ok());
  const v1::Limits& l = q.config().limits();
  ASSERT_TRUE(l.has_rate());
  EXPECT_EQ(l.rate().per_second(), 50.0);
  EXPECT_EQ(l.rate().burst(), 5u);
  EXPECT_EQ(l.max_running(), 20u);
  ASSERT_TRUE(l.has_key_rate());
  EXPECT_EQ(l.key_rate().per_second(), 0.5);
  ASSERT_EQ(l.key_rates().size(), 1u);
  EXPECT_EQ(l.key_rates().at("acme").per_second(), 10.0);
  EXPECT_EQ(l.key_rates().at("acme").burst(), 1u);
  EXPECT_EQ(l.key_max_running(), 2u);
  ASSERT_EQ(l.pools().size(), 1u);
  EXPECT_EQ(l.pools().at("db"), 5u);

  // A queue created without limits has none.
  create.mutable_config()->set_name("plain");
  create.mutable_config()->clear_limits();
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &created).ok());
  EXPECT_FALSE(created.config().limits().has_rate());
  EXPECT_EQ(created.config().limits().max_running(), 0u);
  EXPECT_TRUE(created.config().limits().pools().empty());
}

TEST_F(ServiceTest, UpdateQueueMergesLimitsAndZeroRemoves) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("api");
  *create.mutable_config()->mutable_limits() = SomeLimits();
  v1::Queue q;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &q).ok());

  // Adds a pool and changes max_running; the rest is kept.
  v1::UpdateQueueRequest update;
  update.set_name("api");
  (*update.mutable_limits()->mutable_pools())["s3"] = 3;
  update.mutable_limits()->set_max_running(4);
  grpc::Status s = queues_->UpdateQueue(Ctx().get(), update, &q);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(q.config().limits().pools().size(), 2u);
  EXPECT_EQ(q.config().limits().pools().at("s3"), 3u);
  EXPECT_EQ(q.config().limits().pools().at("db"), 5u);
  EXPECT_EQ(q.config().limits().max_running(), 4u);
  EXPECT_EQ(q.config().limits().key_max_running(), 2u);
  EXPECT_EQ(q.config().limits().rate().per_second(), 50.0);
  EXPECT_EQ(q.config().limits().key_rates().size(), 1u);

  // Zeros remove: a pool, an override, the queue's rate and max_running.
  update.Clear();
  update.set_name("api");
  (*update.mutable_limits()->mutable_pools())["db"] = 0;
  (*update.mutable_limits()->mutable_key_rates())["acme"].set_per_second(0);
  update.mutable_limits()->mutable_rate()->set_per_second(0);
  update.mutable_limits()->set_max_running(0);
  s = queues_->UpdateQueue(Ctx().get(), update, &q);
  ASSERT_TRUE(s.ok()) << s.error_message();

  v1::GetQueueRequest get;
  get.set_name("api");
  ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &q).ok());
  const v1::Limits& l = q.config().limits();
  ASSERT_EQ(l.pools().size(), 1u);
  EXPECT_EQ(l.pools().count("db"), 0u);
  EXPECT_EQ(l.pools().at("s3"), 3u);
  EXPECT_TRUE(l.key_rates().empty());
  EXPECT_FALSE(l.has_rate());
  EXPECT_EQ(l.max_running(), 0u);
  // Not named in the update: unchanged.
  EXPECT_EQ(l.key_max_running(), 2u);
  ASSERT_TRUE(l.has_key_rate());
  EXPECT_EQ(l.key_rate().per_second(), 0.5);

  // An update without limits leaves them alone.
  update.Clear();
  update.set_name("api");
  update.set_capacity(77);
  ASSERT_TRUE(queues_->UpdateQueue(Ctx().get(), update, &q).ok());
  EXPECT_EQ(q.config().capacity(), 77u);
  EXPECT_EQ(q.config().limits().pools().at("s3"), 3u);
  EXPECT_EQ(q.config().limits().key_max_running(), 2u);
}

TEST_F(ServiceTest, InvalidLimitsGetInvalidArgumentNamingTheField) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("api");
  (*create.mutable_config()->mutable_limits()->mutable_key_rates())["acme"].set_per_second(-1);
  v1::Queue q;
  grpc::Status s = queues_->CreateQueue(Ctx().get(), create, &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.key_rates[\"acme\"].per_second"));
  EXPECT_THAT(s.error_message(), HasSubstr("-1"));

  create.mutable_config()->clear_limits();
  create.mutable_config()->mutable_limits()->mutable_rate()->set_per_second(0);
  s = queues_->CreateQueue(Ctx().get(), create, &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.rate.per_second"));

  // Nothing was created by the failed calls.
  v1::GetQueueRequest get;
  get.set_name("api");
  EXPECT_EQ(queues_->GetQueue(Ctx().get(), get, &q).error_code(), grpc::StatusCode::NOT_FOUND);

  create.mutable_config()->clear_limits();
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &q).ok());
  v1::UpdateQueueRequest update;
  update.set_name("api");
  update.mutable_limits()->mutable_rate()->set_per_second(5e6);
  s = queues_->UpdateQueue(Ctx().get(), update, &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.rate.per_second"));

  update.clear_limits();
  update.mutable_limits()->mutable_key_rate()->set_per_second(1);
  update.mutable_limits()->mutable_key_rate()->set_burst(2'000'000);
  s = queues_->UpdateQueue(Ctx().get(), update, &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.key_rate.burst"));

  update.clear_limits();
  (*update.mutable_limits()->mutable_pools())[std::string(200, 'k')] = 1;
  s = queues_->UpdateQueue(Ctx().get(), update, &q);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.pools"));

  // The failed updates changed nothing.
  ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get, &q).ok());
  EXPECT_FALSE(q.config().limits().has_rate());
  EXPECT_FALSE(q.config().limits().has_key_rate());
  EXPECT_TRUE(q.config().limits().pools().empty());
}

TEST_F(ServiceTest, TasksCarryTheirRateAndConcurrencyKeys) {
  v1::SubmitRequest req;
  req.mutable_task()->set_queue("api");
  req.mutable_task()->set_type("echo");
  req.mutable_task()->set_rate_key("acme");
  req.mutable_task()->set_concurrency_key("db");
  v1::SubmitResponse submitted;
  ASSERT_TRUE(tasks_->Submit(Ctx().get(), req, &submitted).ok());
  v1::GetTaskRequest get;
  get.set_id(submitted.task().id());
  v1::Task task;
  ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
  EXPECT_EQ(task.rate_key(), "acme");
  EXPECT_EQ(task.concurrency_key(), "db");
}

TEST_F(ServiceTest, ReadyTaskInAPausedQueueWaitsBecausePaused) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("held");
  create.set_paused(true);
  v1::Queue q;
  ASSERT_TRUE(queues_->CreateQueue(Ctx().get(), create, &q).ok());
  v1::SubmitResponse r1, r2;
  ASSERT_TRUE(Submit("held", "a", &r1).ok());
  ASSERT_TRUE(Submit("held", "b", &r2).ok());

  v1::GetTaskRequest get;
  get.set_id(r1.task().id());
  v1::Task task;
  ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
  EXPECT_EQ(task.state(), v1::TASK_STATE_READY);
  ASSERT_TRUE(task.has_waiting());
  EXPECT_EQ(task.waiting().reason(), v1::WAIT_REASON_PAUSED);
  EXPECT_TRUE(task.waiting().key().empty());
  EXPECT_FALSE(task.waiting().detail().empty());

  // ListTasks says the same; the queue counts both as blocked by the pause.
  v1::ListTasksRequest list;
  list.set_queue("held");
  v1::ListTasksResponse listed;
  ASSERT_TRUE(tasks_->ListTasks(Ctx().get(), list, &listed).ok());
  ASSERT_EQ(listed.tasks_size(), 2);
  for (const v1::Task& t : listed.tasks()) {
    EXPECT_EQ(t.waiting().reason(), v1::WAIT_REASON_PAUSED) << t.id();
  }
  v1::GetQueueRequest get_queue;
  get_queue.set_name("held");
  ASSERT_TRUE(queues_->GetQueue(Ctx().get(), get_queue, &q).ok());
  ASSERT_EQ(q.stats().blocked().count("paused"), 1u);
  EXPECT_EQ(q.stats().blocked().at("paused"), 2u);
  // Only non-zero reasons are sent.
  for (const auto& [reason, count] : q.stats().blocked()) EXPECT_GT(count, 0u) << reason;

  // A submit answer is not a GetTask: no waiting there.
  EXPECT_FALSE(r1.task().has_waiting());
}

TEST_F(ServiceTest, ThrottledFailChecksRetryAfterPerItem) {
  v1::SubmitResponse r;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Submit("api", absl::StrCat(i), &r).ok());
  v1::LeaseResponse leased = Lease("api", 4, absl::ZeroDuration());
  ASSERT_EQ(leased.tasks_size(), 4);

  v1::FailRequest fail;
  auto add = [&](int i) {
    auto* item = fail.add_items();
    item->set_id(leased.tasks(i).id());
    item->set_token(leased.tasks(i).token());
    item->set_error("429 from upstream");
    item->set_throttled(true);
    return item;
  };
  add(0)->mutable_retry_after()->set_seconds(2 * 3600);  // over the 1 h maximum
  add(1)->mutable_retry_after()->set_seconds(-5);        // negative
  auto* malformed = add(2);
  malformed->mutable_retry_after()->set_seconds(1);
  malformed->mutable_retry_after()->set_nanos(-5);  // signs disagree
  add(3)->mutable_retry_after()->set_seconds(1);       // fine
  v1::FailResponse resp;
  ASSERT_TRUE(workers_->Fail(Ctx().get(), fail, &resp).ok());
  ASSERT_EQ(resp.items_size(), 4);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(resp.items(i).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << i;
    EXPECT_THAT(resp.items(i).message(), HasSubstr("retry_after")) << i;
  }
  EXPECT_EQ(resp.items(3).code(), static_cast<int>(grpc::StatusCode::OK))
      << resp.items(3).message();

  // The rejected reports changed nothing: their tasks still run.
  v1::GetTaskRequest get;
  v1::Task task;
  for (int i = 0; i < 3; ++i) {
    get.set_id(leased.tasks(i).id());
    ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
    EXPECT_EQ(task.state(), v1::TASK_STATE_RUNNING) << i;
  }
  // The accepted one is READY again, spent no attempt, and waits for its
  // queue's throttle (it has no rate key) to end.
  get.set_id(leased.tasks(3).id());
  ASSERT_TRUE(tasks_->GetTask(Ctx().get(), get, &task).ok());
  EXPECT_EQ(task.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(task.attempts(), 0u);
  EXPECT_EQ(task.waiting().reason(), v1::WAIT_REASON_RATE_LIMITED);
  EXPECT_TRUE(task.waiting().has_until());
}

// The gauge conveyor_tasks_blocked{queue,reason}, read at scrape time.
TEST(ServiceMetricsTest, BlockedGaugeExportsEveryReasonPerQueue) {
  FakeClock clock;
  BrokerMetrics metrics;
  Broker broker(BrokerOptions(), &clock, &metrics);
  metrics.AttachBroker(&broker);
  QueueConfig held;
  held.name = "held";
  ASSERT_TRUE(broker.CreateQueue(held, /*paused=*/true).ok());
  QueueConfig open;
  open.name = "open";
  ASSERT_TRUE(broker.CreateQueue(open, /*paused=*/false).ok());
  for (int i = 0; i < 3; ++i) {
    TaskSpec spec;
    spec.queue = "held";
    spec.type = "t";
    ASSERT_TRUE(broker.SubmitNow(spec).ok());
  }

  std::map<std::pair<std::string, std::string>, double> blocked;
  std::string help;
  for (const prometheus::MetricFamily& family : metrics.gauges()->Collect()) {
    if (family.name != "conveyor_tasks_blocked") continue;
    help = family.help;
    EXPECT_EQ(family.type, prometheus::MetricType::Gauge);
    for (const prometheus::ClientMetric& m : family.metric) {
      std::string queue, reason;
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "queue") queue = l.value;
        if (l.name == "reason") reason = l.value;
      }
      blocked[{queue, reason}] = m.gauge.value;
    }
  }
  EXPECT_FALSE(help.empty());
  EXPECT_EQ(blocked.size(), 10u);  // 2 queues x 5 reasons, zeros included
  for (const char* queue : {"held", "open"}) {
    for (const char* reason :
         {"paused", "rate_limited", "concurrency_full", "not_due", "no_worker"}) {
      EXPECT_EQ(blocked.count({queue, reason}), 1u) << queue << " " << reason;
    }
  }
  EXPECT_EQ((blocked[{"held", "paused"}]), 3.0);
  EXPECT_EQ((blocked[{"open", "paused"}]), 0.0);
  EXPECT_EQ((blocked[{"held", "rate_limited"}]), 0.0);
}

// conveyor_tasks_rejected_total{queue,reason} and conveyor_journal_bytes.
TEST(ServiceMetricsTest, RejectedSubmitsAreCountedByReasonWithoutArbitraryQueueNames) {
  FakeClock clock;
  BrokerMetrics metrics;
  BrokerOptions options;
  options.auto_create_queues = false;
  Broker broker(options, &clock, &metrics);
  metrics.AttachBroker(&broker);
  QueueConfig small;
  small.name = "small";
  small.capacity = 1;
  ASSERT_TRUE(broker.CreateQueue(small, /*paused=*/false).ok());
  TaskSpec ok;
  ok.queue = "small";
  ok.type = "t";
  ASSERT_TRUE(broker.SubmitNow(ok).ok());
  EXPECT_EQ(broker.SubmitNow(ok).status().code(), absl::StatusCode::kResourceExhausted);
  TaskSpec bad = ok;
  bad.type = "";  // no type
  EXPECT_EQ(broker.SubmitNow(bad).status().code(), absl::StatusCode::kInvalidArgument);
  TaskSpec unknown = ok;
  unknown.queue = "made-up-by-a-client";
  EXPECT_EQ(broker.SubmitNow(unknown).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> batch =
      broker.SubmitBatch({ok, ok});
  ASSERT_TRUE(batch.ok());

  std::map<std::pair<std::string, std::string>, double> rejected;
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name != "conveyor_tasks_rejected_total") continue;
    EXPECT_EQ(family.type, prometheus::MetricType::Counter);
    for (const prometheus::ClientMetric& m : family.metric) {
      std::string queue, reason;
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "queue") queue = l.value;
        if (l.name == "reason") reason = l.value;
      }
      rejected[{queue, reason}] = m.counter.value;
    }
  }
  EXPECT_EQ((rejected[{"small", "full"}]), 3.0);  // one alone, two in the batch
  EXPECT_EQ((rejected[{"", "invalid"}]), 1.0);  // refused before any queue lookup
  EXPECT_EQ((rejected[{"", "unknown_queue"}]), 1.0);
  for (const auto& [key, value] : rejected) {
    EXPECT_NE(key.first, "made-up-by-a-client") << "a client-chosen name became a label";
  }
}

}  // namespace
}  // namespace conveyor::server
