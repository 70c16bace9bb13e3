// Executor: the pool never runs more jobs than it has slots, and leases are
// sized by free slots. Jobs block on a Notification; waits are bounded and
// short.
#include "worker/executor.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace conveyor::worker {
namespace {

TEST(ExecutorTest, ReservesOnlyFreeSlots) {
  Executor executor(3);
  executor.Start();
  EXPECT_EQ(executor.Reserve(10, absl::ZeroDuration()), 3);
  EXPECT_EQ(executor.Reserve(1, absl::Milliseconds(1)), 0);
  executor.Unreserve(2);
  EXPECT_EQ(executor.Reserve(10, absl::ZeroDuration()), 2);
  executor.Unreserve(3);
  executor.Stop();
}

TEST(ExecutorTest, NeverRunsMoreJobsThanSlots) {
  constexpr int kSlots = 3;
  constexpr int kJobs = 12;
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  std::atomic<int> done{0};
  absl::Notification release;
  std::vector<int> observed_busy;
  absl::Mutex observed_mu;
  Executor executor(kSlots, [&](int busy, int free, int /*waiting*/) {
    EXPECT_EQ(busy + free, kSlots);
    absl::MutexLock lock(&observed_mu);
    observed_busy.push_back(busy);
  });
  executor.Start();
  auto job = [&] {
    const int now = ++running;
    int prev = most.load();
    while (now > prev && !most.compare_exchange_weak(prev, now)) {
    }
    release.WaitForNotificationWithTimeout(absl::Seconds(30));
    --running;
    ++done;
  };
  int started = 0;
  // Fill the pool: the slots run out after kSlots jobs.
  while (started < kSlots) {
    const int n = executor.Reserve(kJobs - started, absl::Seconds(5));
    ASSERT_GT(n, 0);
    for (int i = 0; i < n; ++i) executor.Run(job);
    started += n;
  }
  EXPECT_EQ(executor.Reserve(1, absl::Milliseconds(5)), 0);
  EXPECT_EQ(executor.busy(), kSlots);
  release.Notify();
  // The rest run as slots free up.
  while (started < kJobs) {
    const int n = executor.Reserve(kJobs - started, absl::Seconds(5));
    ASSERT_GT(n, 0);
    for (int i = 0; i < n; ++i) executor.Run(job);
    started += n;
  }
  ASSERT_TRUE(executor.WaitIdle(absl::Seconds(30)));
  executor.Stop();
  EXPECT_EQ(done.load(), kJobs);
  EXPECT_LE(most.load(), kSlots);
  EXPECT_EQ(most.load(), kSlots);
  absl::MutexLock lock(&observed_mu);
  for (int busy : observed_busy) EXPECT_LE(busy, kSlots);
}

TEST(ExecutorTest, PrefetchQueuesJobsBeyondTheThreadsButNeverRunsMore) {
  constexpr int kSlots = 2;
  constexpr int kPrefetch = 4;
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  absl::Notification release;
  absl::Mutex observed_mu;
  std::vector<int> observed_busy;
  int most_waiting = 0;
  int last_waiting = -1;
  Executor executor(kSlots, [&](int busy, int free, int waiting) {
    EXPECT_EQ(busy + free, kSlots);
    absl::MutexLock lock(&observed_mu);
    observed_busy.push_back(busy);
    most_waiting = std::max(most_waiting, waiting);
    last_waiting = waiting;
  }, kPrefetch);
  executor.Start();
  EXPECT_EQ(executor.prefetch(), kPrefetch);
  ASSERT_EQ(executor.Reserve(100, absl::ZeroDuration()), kSlots + kPrefetch);
  for (int i = 0; i < kSlots + kPrefetch; ++i) {
    executor.Run([&] {
      const int now = ++running;
      int prev = most.load();
      while (now > prev && !most.compare_exchange_weak(prev, now)) {
      }
      release.WaitForNotificationWithTimeout(absl::Seconds(30));
      --running;
    });
  }
  EXPECT_EQ(executor.Reserve(1, absl::Milliseconds(5)), 0);
  EXPECT_EQ(executor.busy(), kSlots + kPrefetch);
  release.Notify();
  ASSERT_TRUE(executor.WaitIdle(absl::Seconds(30)));
  executor.Stop();
  EXPECT_EQ(most.load(), kSlots);
  absl::MutexLock lock(&observed_mu);
  for (int busy : observed_busy) EXPECT_LE(busy, kSlots);
  // Queued jobs are reported waiting (all of them for a moment, before the
  // threads take theirs); none once idle.
  EXPECT_GE(most_waiting, kPrefetch);
  EXPECT_LE(most_waiting, kSlots + kPrefetch);
  EXPECT_EQ(last_waiting, 0);
}

TEST(ExecutorTest, WithPrefetchReserveWaitsForHalfTheRoomWhileJobsAreQueued) {
  Executor executor(1, {}, /*prefetch=*/4);
  executor.Start();
  absl::Notification release_first;
  absl::Notification release_rest;
  ASSERT_EQ(executor.Reserve(5, absl::ZeroDuration()), 5);
  executor.Run([&] { release_first.WaitForNotificationWithTimeout(absl::Seconds(30)); });
  for (int i = 0; i < 4; ++i) {
    executor.Run([&] { release_rest.WaitForNotificationWithTimeout(absl::Seconds(30)); });
  }
  // One slot frees (the first job ends, the next starts): 3 jobs still
  // queued, 1 free of the 2 it waits for.
  release_first.Notify();
  EXPECT_EQ(executor.Reserve(5, absl::Milliseconds(50)), 0);
  // Queue ran dry: any free slot will do.
  release_rest.Notify();
  ASSERT_TRUE(executor.WaitIdle(absl::Seconds(30)));
  EXPECT_EQ(executor.Reserve(5, absl::ZeroDuration()), 5);
  executor.Unreserve(5);
  executor.Stop();
}

TEST(ExecutorTest, WaitIdleTimesOutWhileAJobRuns) {
  Executor executor(1);
  executor.Start();
  absl::Notification release;
  ASSERT_EQ(executor.Reserve(1, absl::ZeroDuration()), 1);
  executor.Run([&] { release.WaitForNotificationWithTimeout(absl::Seconds(30)); });
  EXPECT_FALSE(executor.WaitIdle(absl::Milliseconds(5)));
  release.Notify();
  EXPECT_TRUE(executor.WaitIdle(absl::Seconds(30)));
  executor.Stop();
}

TEST(ExecutorTest, ReserveReturnsNothingOnceStopped) {
  Executor executor(2);
  executor.Start();
  executor.Stop();
  EXPECT_EQ(executor.Reserve(1, absl::Milliseconds(1)), 0);
}

}  // namespace
}  // namespace conveyor::worker
