// The Worker SDK with batch handlers against an in-process fake
// WorkerService on 127.0.0.1:0 (no broker): what Lease calls a batch type
// makes (the lease loop's call names every type; the fill asks for the batch
// type only, for what is missing), that a batch takes one executor slot
// whatever its size, that every task of a running batch is heartbeated, and
// that a drain cancels a stuck batch and releases its tasks.
//
// Waits are bounded and generous (a loaded 2-core machine); nothing depends
// on a task arriving within a short time.
#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/grpc_util.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/worker/fake_worker_service.h"
#include "worker/worker.h"

namespace conveyor::worker {
namespace {

constexpr absl::Duration kBound = absl::Seconds(30);

class BatchWorkerTest : public FakeBrokerTest {
 protected:
  Worker& NewWorker(int concurrency, absl::Duration grace = absl::Seconds(25)) {
    WorkerOptions options;
    options.brokers = {address()};
    options.queues = {"q"};
    options.concurrency = concurrency;
    options.worker_id = "w1";
    options.lease_wait = absl::Seconds(1);
    options.heartbeat_interval = absl::Milliseconds(50);
    options.grace = grace;
    options.cancel_wait = absl::Seconds(5);
    worker_ = std::make_unique<Worker>(options);
    return *worker_;
  }
};

TEST_F(BatchWorkerTest, ABatchFillsWithLeasesOfItsTypeOnly) {
  for (int i = 0; i < 10; ++i) service_.AddReady(absl::StrCat("b", i), "b");
  absl::Mutex mu;
  std::vector<size_t> sizes;
  Worker& worker = NewWorker(/*concurrency=*/1);
  ASSERT_TRUE(worker.Register("s", [](HandlerContext& ctx) -> absl::StatusOr<std::string> {
                      return ctx.payload();
                    }).ok());
  ASSERT_TRUE(worker
                  .RegisterBatch(
                      "b",
                      [&](BatchContext& batch) {
                        {
                          absl::MutexLock lock(&mu);
                          sizes.push_back(batch.size());
                        }
                        BatchAnswers answers;
                        for (const TaskInfo& t : batch.tasks()) {
                          answers.push_back(absl::StrCat(batch.size(), ":", t.payload));
                        }
                        return answers;
                      },
                      {.max_size = 4, .linger = absl::Seconds(1)})
                  .ok());
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(service_.AwaitReported(10));
  std::map<std::string, std::string> done = service_.completed();
  ASSERT_EQ(done.size(), 10u);
  EXPECT_EQ(done["b0"], "4:b0");  // ten ready tasks: batches of 4, 4, 2
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(sizes, (std::vector<size_t>{4, 4, 2}));
  }
  // The loop's own calls name every type and ask for one task (one slot);
  // the fills name the batch type alone and ask for what is missing.
  int fills = 0;
  for (const v1::LeaseRequest& r : service_.leases()) {
    ASSERT_GE(r.types_size(), 1);
    if (r.types_size() == 1) {
      EXPECT_EQ(r.types(0), "b");
      EXPECT_LE(r.max_tasks(), 3u);
      EXPECT_LE(FromProto(r.wait()), absl::Seconds(1));
      if (r.max_tasks() == 3) ++fills;
    } else {
      EXPECT_EQ(std::vector<std::string>(r.types().begin(), r.types().end()),
                (std::vector<std::string>{"b", "s"}));
      EXPECT_EQ(r.max_tasks(), 1u);
    }
  }
  EXPECT_GE(fills, 3);
}

TEST_F(BatchWorkerTest, ABatchTakesOneSlotWhateverItsSize) {
  // Three slots: two batches of four and a single task, nine tasks in all,
  // must all be running at once.
  // The single task comes first, so that it cannot be left without a slot.
  service_.AddReady("s0", "s");
  for (int i = 0; i < 8; ++i) service_.AddReady(absl::StrCat("b", i), "b");
  absl::Mutex mu;
  int running_tasks = 0;
  int running_handlers = 0;
  int most_handlers = 0;
  bool all_in = false;
  auto enter = [&](int tasks) {
    absl::MutexLock lock(&mu);
    running_tasks += tasks;
    most_handlers = std::max(most_handlers, ++running_handlers);
    if (running_tasks == 9) all_in = true;
    // Wait for the others (bounded: a failure shows as all_in == false).
    mu.AwaitWithTimeout(absl::Condition(&all_in), kBound);
    --running_handlers;
    return all_in;
  };
  Worker& worker = NewWorker(/*concurrency=*/3);
  ASSERT_TRUE(worker.Register("s", [&](HandlerContext&) -> absl::StatusOr<std::string> {
                      return enter(1) ? std::string("met") : std::string("alone");
                    }).ok());
  ASSERT_TRUE(worker
                  .RegisterBatch(
                      "b",
                      [&](BatchContext& batch) {
                        const bool met = enter(static_cast<int>(batch.size()));
                        return BatchAnswers(batch.size(),
                                            std::string(met ? "met" : "alone"));
                      },
                      {.max_size = 4, .linger = absl::Seconds(5)})
                  .ok());
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(service_.AwaitReported(9));
  std::map<std::string, std::string> done = service_.completed();
  ASSERT_EQ(done.size(), 9u);
  for (const auto& [id, result] : done) EXPECT_EQ(result, "met") << id;
  absl::MutexLock lock(&mu);
  EXPECT_EQ(most_handlers, 3);
}

TEST_F(BatchWorkerTest, EveryTaskOfARunningBatchIsHeartbeated) {
  for (int i = 0; i < 3; ++i) service_.AddReady(absl::StrCat("b", i), "b");
  Worker& worker = NewWorker(/*concurrency=*/1);
  std::atomic<bool> seen{false};
  ASSERT_TRUE(worker
                  .RegisterBatch(
                      "b",
                      [&](BatchContext& batch) {
                        batch.task(1).ReportProgress(42, "middle");
                        // Until a heartbeat carried all three (bounded).
                        const absl::Time give_up = absl::Now() + kBound;
                        while (absl::Now() < give_up) {
                          for (const auto& hb : service_.heartbeats()) {
                            std::set<std::string> ids;
                            bool progress = false;
                            for (const auto& item : hb.items()) {
                              ids.insert(item.id());
                              if (item.id() == "b1" && item.progress_percent() == 42) progress = true;
                            }
                            if (ids == std::set<std::string>{"b0", "b1", "b2"} && progress) {
                              seen = true;
                            }
                          }
                          if (seen) break;
                          absl::SleepFor(absl::Milliseconds(20));
                        }
                        return BatchAnswers(batch.size(), std::string("ok"));
                      },
                      {.max_size = 3, .linger = absl::Seconds(2)})
                  .ok());
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(service_.AwaitReported(3));
  EXPECT_TRUE(seen);
  EXPECT_EQ(service_.completed().size(), 3u);
}

TEST_F(BatchWorkerTest, ADrainCancelsAStuckBatchAndReleasesItsTasks) {
  for (int i = 0; i < 3; ++i) service_.AddReady(absl::StrCat("b", i), "b");
  Worker& worker = NewWorker(/*concurrency=*/1, /*grace=*/absl::Milliseconds(200));
  absl::Notification started;
  std::atomic<int> reason{-1};
  ASSERT_TRUE(worker
                  .RegisterBatch(
                      "b",
                      [&](BatchContext& batch) {
                        started.Notify();
                        batch.cancellation().WaitFor(kBound);
                        reason = static_cast<int>(batch.cancel_reason());
                        return BatchAnswers(batch.size(), absl::CancelledError("stopped"));
                      },
                      {.max_size = 3, .linger = absl::Seconds(2)})
                  .ok());
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kBound));
  const absl::Time start = absl::Now();
  worker.Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(reason, static_cast<int>(CancelReason::kShutdown));
  EXPECT_EQ(service_.released(), (std::set<std::string>{"b0", "b1", "b2"}));
  EXPECT_TRUE(service_.failed().empty());
}

}  // namespace
}  // namespace conveyor::worker
