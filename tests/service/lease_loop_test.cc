// The worker's LeaseLoop (worker/lease_loop.h) against a real in-process
// broker on a loopback port 0: stopping it while tasks arrive never strands
// a granted task. Stop() ends the loop's parked Lease call with EndPolls, so
// the answer arrives whole (a cancel could cross an answer holding tasks,
// which gRPC then drops, leaving them running until their leases expire).
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "worker/executor.h"
#include "worker/lease_loop.h"

namespace conveyor::worker {
namespace {

namespace v1 = ::conveyor::v1;

class LeaseLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_addr = "";
    options.drain_grace = absl::Milliseconds(200);
    auto server = server::BrokerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    tasks_ = v1::TaskService::NewStub(channel_);
    queues_ = v1::QueueService::NewStub(channel_);
    grpc::ClientContext ctx;
    v1::CreateQueueRequest create;
    create.mutable_config()->set_name("jobs");
    v1::Queue created;
    grpc::Status s = queues_->CreateQueue(&ctx, create, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  bool Submit(const std::string& payload) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::SubmitRequest req;
    req.mutable_task()->set_queue("jobs");
    req.mutable_task()->set_type("echo");
    req.mutable_task()->set_payload(payload);
    v1::SubmitResponse resp;
    return tasks_->Submit(&ctx, req, &resp).ok();
  }

  v1::QueueStats Stats() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::GetQueueRequest req;
    req.set_name("jobs");
    v1::Queue q;
    grpc::Status s = queues_->GetQueue(&ctx, req, &q);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return q.stats();
  }

  std::unique_ptr<server::BrokerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::QueueService::Stub> queues_;
};

// 60 rounds: a loop parks its long-poll, a task is submitted, and the loop
// is stopped a varying moment later (before, during or after the broker
// answers the poll).
// Every task either reached the loop's sink (running on the broker, with or
// without `stopping`) or is still ready; none is left running unseen.
TEST_F(LeaseLoopTest, StoppingWhileTasksArriveStrandsNoGrantedTask) {
  constexpr int kRounds = 60;
  absl::Mutex mu;
  int sunk = 0;
  int submitted = 0;
  for (int round = 0; round < kRounds; ++round) {
    Executor executor(4);
    executor.Start();
    LeaseLoopOptions options;
    options.worker_id = absl::StrCat("loop-", round);
    options.broker = "test";
    options.queues = {"jobs"};
    options.wait = absl::Seconds(20);
    LeaseLoop loop(channel_, &executor, options,
                   [&](absl::Span<v1::LeasedTask* const> tasks, bool stopping) {
                     if (!stopping) executor.Unreserve(static_cast<int>(tasks.size()));
                     absl::MutexLock lock(&mu);
                     sunk += static_cast<int>(tasks.size());
                   });
    loop.Start();
    for (int i = 0; i < 500 && Stats().waiting_workers() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_EQ(Stats().waiting_workers(), 1u) << "round " << round;
    // The submit goes out on its own thread, so that Stop() may come before,
    // during or after the broker's answer to the poll.
    std::thread submitter([&, round] {
      ASSERT_TRUE(Submit(absl::StrCat("task ", round)));
      absl::MutexLock lock(&mu);
      ++submitted;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(47 * (round % 29)));
    loop.Stop();
    submitter.join();
    executor.Stop();
  }
  const v1::QueueStats stats = Stats();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(stats.running(), static_cast<uint64_t>(sunk)) << "granted but never seen";
  EXPECT_EQ(stats.ready() + stats.running(), static_cast<uint64_t>(submitted));
  EXPECT_EQ(stats.waiting_workers(), 0u);
}

// A loop whose call is parked stops at once: the broker answers the poll
// instead of the loop waiting out its 20 s.
TEST_F(LeaseLoopTest, StopEndsAParkedPollAtOnce) {
  Executor executor(2);
  executor.Start();
  LeaseLoopOptions options;
  options.worker_id = "idle-loop";
  options.broker = "test";
  options.queues = {"jobs"};
  options.wait = absl::Seconds(20);
  std::atomic<int> sunk{0};
  LeaseLoop loop(channel_, &executor, options,
                 [&](absl::Span<v1::LeasedTask* const> tasks, bool) { sunk += tasks.size(); });
  loop.Start();
  for (int i = 0; i < 500 && Stats().waiting_workers() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(Stats().waiting_workers(), 1u);
  const absl::Time start = absl::Now();
  loop.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(Stats().waiting_workers(), 0u);
  EXPECT_EQ(sunk.load(), 0);
  executor.Stop();
}

}  // namespace
}  // namespace conveyor::worker
