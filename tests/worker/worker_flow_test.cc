// The Worker SDK's flow control against an in-process fake WorkerService on
// 127.0.0.1:0 (no broker): while the broker takes no results, the lease loop
// stops leasing once half of max_pending reports wait (Reporter::WaitForRoom),
// instead of running every ready task and dropping the reports past
// max_pending; once results go through again, every task is reported, once.
//
// Waits are bounded and generous (a loaded 2-core machine).
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/worker/fake_worker_service.h"
#include "worker/worker.h"

namespace conveyor::worker {
namespace {

constexpr absl::Duration kBound = absl::Seconds(30);

using WorkerFlowTest = FakeBrokerTest;

// Polls `f` every 10 ms until it holds or `bound` passes.
template <typename F>
bool Eventually(F f, absl::Duration bound = kBound) {
  const absl::Time give_up = absl::Now() + bound;
  while (!f()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

TEST_F(WorkerFlowTest, ABrokerThatTakesNoResultsStopsLeasingAndNoResultIsLost) {
  constexpr int kTasks = 200;
  constexpr size_t kMaxPending = 20;
  for (int i = 0; i < kTasks; ++i) service_.AddReady(absl::StrCat("t", i), "s");
  service_.HoldReports(true);

  WorkerOptions options;
  options.brokers = {address()};
  options.queues = {"q"};
  options.concurrency = 2;
  options.worker_id = "w1";
  options.lease_wait = absl::Seconds(1);
  options.heartbeat_interval = absl::Milliseconds(200);
  options.max_pending_reports = kMaxPending;
  worker_ = std::make_unique<Worker>(options);
  ASSERT_TRUE(worker_
                  ->Register("s",
                             [](HandlerContext& ctx) -> absl::StatusOr<std::string> {
                               return absl::StrCat("done:", ctx.payload());
                             })
                  .ok());
  ASSERT_TRUE(worker_->Start().ok());

  // The no-op tasks run at once; with no flow control the worker would lease
  // and run all 200 within this second and keep only the newest 20 results.
  ASSERT_TRUE(Eventually([&] { return service_.leased() >= kMaxPending / 2; }));
  absl::SleepFor(absl::Seconds(1));
  const size_t leased_while_held = service_.leased();
  // At most half of max_pending waiting, plus one lease call for the free
  // slots and the tasks running.
  EXPECT_LE(leased_while_held, kMaxPending / 2 + 2 * options.concurrency);
  EXPECT_EQ(service_.reports(), 0u);

  service_.HoldReports(false);
  ASSERT_TRUE(service_.AwaitReported(kTasks, kBound));
  const auto completed = service_.completed();
  ASSERT_EQ(completed.size(), static_cast<size_t>(kTasks));
  for (int i = 0; i < kTasks; ++i) {
    const std::string id = absl::StrCat("t", i);
    EXPECT_EQ(completed.at(id), absl::StrCat("done:", id));
  }
  // Each task reported once: no result was dropped and sent again later.
  EXPECT_EQ(service_.reports(), static_cast<size_t>(kTasks));
  EXPECT_EQ(service_.leased(), static_cast<size_t>(kTasks));
}

}  // namespace
}  // namespace conveyor::worker
