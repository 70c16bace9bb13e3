// DeadlineTimer: callbacks run at their time, an earlier deadline added
// while the thread sleeps toward a later one still fires on time, and a
// removed one never fires. Real time with generous bounds: each wait is for
// 50 ms deadlines against a 10 s limit.
#include "worker/deadline_timer.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace conveyor::worker {
namespace {

constexpr absl::Duration kLimit = absl::Seconds(10);

TEST(DeadlineTimerTest, FiresTheFirstDeadline) {
  DeadlineTimer timer;
  timer.Start();
  absl::Notification fired;
  timer.Add(absl::Now() + absl::Milliseconds(50), [&fired] { fired.Notify(); });
  EXPECT_TRUE(fired.WaitForNotificationWithTimeout(kLimit));
  timer.Stop();
}

TEST(DeadlineTimerTest, AnEarlierDeadlineWakesTheThreadSleepingTowardALaterOne) {
  DeadlineTimer timer;
  timer.Start();
  std::atomic<int> late_fired{0};
  timer.Add(absl::Now() + absl::Hours(1), [&late_fired] { ++late_fired; });
  absl::SleepFor(absl::Milliseconds(20));  // the thread now sleeps toward the hour
  absl::Notification fired;
  const absl::Time start = absl::Now();
  timer.Add(start + absl::Milliseconds(50), [&fired] { fired.Notify(); });
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kLimit));
  EXPECT_LT(absl::Now() - start, kLimit);
  EXPECT_EQ(late_fired.load(), 0);
  timer.Stop();
}

TEST(DeadlineTimerTest, ALaterDeadlineDoesNotDelayAnEarlierOne) {
  DeadlineTimer timer;
  timer.Start();
  absl::Notification first;
  timer.Add(absl::Now() + absl::Milliseconds(50), [&first] { first.Notify(); });
  timer.Add(absl::Now() + absl::Hours(1), [] {});
  EXPECT_TRUE(first.WaitForNotificationWithTimeout(kLimit));
  timer.Stop();
}

TEST(DeadlineTimerTest, ARemovedDeadlineNeverFires) {
  DeadlineTimer timer;
  timer.Start();
  std::atomic<int> removed_fired{0};
  const DeadlineTimer::Key key =
      timer.Add(absl::Now() + absl::Milliseconds(30), [&removed_fired] { ++removed_fired; });
  timer.Remove(key);
  absl::Notification later;
  timer.Add(absl::Now() + absl::Milliseconds(100), [&later] { later.Notify(); });
  ASSERT_TRUE(later.WaitForNotificationWithTimeout(kLimit));
  EXPECT_EQ(removed_fired.load(), 0);
  timer.Stop();
}

}  // namespace
}  // namespace conveyor::worker
