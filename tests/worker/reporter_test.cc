// Reporter: batching, retry with backoff, dropping at the lease's end and
// past the cap, per-item outcomes. A fake BrokerRpc and a fake clock; rounds
// are run with SendOnce(), so no thread and no real time (except the tests
// of the sending thread, which wait a few hundred milliseconds at most).
#include "worker/reporter.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "common/clock.h"
#include "gtest/gtest.h"
#include "tests/worker/fake_broker_rpc.h"

namespace conveyor::worker {
namespace {

Report Complete(std::string id, std::string result, absl::Time drop_at = absl::InfiniteFuture()) {
  Report r;
  r.kind = Report::Kind::kComplete;
  r.task_id = std::move(id);
  r.token = 1;
  r.result = std::move(result);
  r.drop_at = drop_at;
  return r;
}

Report Fail(std::string id, bool retryable) {
  Report r;
  r.kind = Report::Kind::kFail;
  r.task_id = std::move(id);
  r.token = 1;
  r.error = "boom";
  r.reason = "error";
  r.retryable = retryable;
  return r;
}

Report Throttle(std::string id, absl::Duration retry_after) {
  Report r = Fail(std::move(id), true);
  r.error = "upstream said 429";
  r.reason = "throttled";
  r.throttled = true;
  r.retry_after = retry_after;
  return r;
}

Report Release(std::string id) {
  Report r;
  r.kind = Report::Kind::kRelease;
  r.task_id = std::move(id);
  r.token = 1;
  return r;
}

ReporterOptions Options() {
  ReporterOptions o;
  o.max_batch = 3;
  o.max_pending = 5;
  o.initial_backoff = absl::Milliseconds(100);
  o.max_backoff = absl::Milliseconds(400);
  return o;
}

TEST(ReporterTest, SendsEachKindInOneBatchedCall) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  ReporterOptions o = Options();
  o.max_batch = 10;
  Reporter reporter(&rpc, o, &clock);
  reporter.Add(Complete("a", "1"));
  reporter.Add(Fail("b", true));
  reporter.Add(Complete("c", "3"));
  reporter.Add(Release("d"));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  ASSERT_EQ(rpc.completes().size(), 1u);
  ASSERT_EQ(rpc.completes()[0].items_size(), 2);
  EXPECT_EQ(rpc.completes()[0].items(0).id(), "a");
  EXPECT_EQ(rpc.completes()[0].items(1).result(), "3");
  ASSERT_EQ(rpc.fails().size(), 1u);
  EXPECT_EQ(rpc.fails()[0].items(0).reason(), "error");
  EXPECT_TRUE(rpc.fails()[0].items(0).retryable());
  ASSERT_EQ(rpc.releases().size(), 1u);
  EXPECT_EQ(reporter.stats().delivered, 4u);
  EXPECT_EQ(reporter.pending(), 0u);
}

TEST(ReporterTest, SendsAtMostMaxBatchPerRoundOldestFirst) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  for (const char* id : {"a", "b", "c", "d", "e"}) reporter.Add(Complete(id, "r"));
  EXPECT_EQ(reporter.SendOnce(), clock.Now());  // more is due at once
  EXPECT_EQ(reporter.pending(), 2u);
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  ASSERT_EQ(rpc.completes().size(), 2u);
  EXPECT_EQ(rpc.completes()[0].items_size(), 3);
  EXPECT_EQ(rpc.completes()[0].items(0).id(), "a");
  EXPECT_EQ(rpc.completes()[1].items(0).id(), "d");
}

TEST(ReporterTest, KeepsReportsWhileTheBrokerIsDownAndBacksOff) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  rpc.set_down(true);
  reporter.Add(Complete("a", "1"));
  const absl::Time t0 = clock.Now();
  EXPECT_EQ(reporter.SendOnce(), t0 + absl::Milliseconds(100));
  EXPECT_EQ(reporter.pending(), 1u);
  // Backing off: nothing is sent before the time.
  EXPECT_EQ(reporter.SendOnce(), t0 + absl::Milliseconds(100));
  EXPECT_EQ(rpc.completes().size(), 1u);
  clock.Advance(absl::Milliseconds(100));
  EXPECT_EQ(reporter.SendOnce(), clock.Now() + absl::Milliseconds(200));  // doubled
  clock.Advance(absl::Milliseconds(200));
  EXPECT_EQ(reporter.SendOnce(), clock.Now() + absl::Milliseconds(400));
  clock.Advance(absl::Milliseconds(400));
  EXPECT_EQ(reporter.SendOnce(), clock.Now() + absl::Milliseconds(400));  // capped
  EXPECT_EQ(rpc.completes().size(), 4u);
  rpc.set_down(false);
  clock.Advance(absl::Milliseconds(400));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  EXPECT_EQ(reporter.stats().delivered, 1u);
  EXPECT_EQ(reporter.stats().failed_calls, 4u);
  EXPECT_EQ(rpc.completes().back().items(0).result(), "1");
}

TEST(ReporterTest, DropsReportsOnceTheirLeaseWouldHaveExpired) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  rpc.set_down(true);
  reporter.Add(Complete("short", "1", clock.Now() + absl::Milliseconds(250)));
  reporter.Add(Complete("long", "2", clock.Now() + absl::Hours(1)));
  reporter.Add(Complete("short2", "3", clock.Now() + absl::Milliseconds(250)));
  reporter.Add(Complete("long2", "4", clock.Now() + absl::Hours(1)));
  reporter.SendOnce();
  clock.Advance(absl::Milliseconds(300));
  reporter.SendOnce();
  EXPECT_EQ(reporter.pending(), 2u);
  EXPECT_EQ(reporter.stats().dropped_expired, 2u);
  rpc.set_down(false);
  clock.Advance(absl::Seconds(1));
  reporter.SendOnce();
  ASSERT_EQ(rpc.completes().back().items_size(), 2);
  EXPECT_EQ(rpc.completes().back().items(0).id(), "long") << "the kept ones keep their order";
  EXPECT_EQ(rpc.completes().back().items(1).id(), "long2");
  EXPECT_EQ(rpc.completes().back().items(1).result(), "4");
}

TEST(ReporterTest, DropsTheOldestPastTheCap) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);  // max_pending 5
  for (int i = 0; i < 8; ++i) reporter.Add(Complete(std::to_string(i), "r"));
  EXPECT_EQ(reporter.pending(), 5u);
  EXPECT_EQ(reporter.stats().dropped_overflow, 3u);
  reporter.SendOnce();
  EXPECT_EQ(rpc.completes()[0].items(0).id(), "3");
}

TEST(ReporterTest, HasRoomForMoreLeasesOnlyWhileAtMostHalfOfMaxPendingWaits) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  ReporterOptions o = Options();
  o.max_pending = 6;
  o.max_batch = 4;
  Reporter reporter(&rpc, o, &clock);
  for (int i = 0; i < 3; ++i) reporter.Add(Complete(std::to_string(i), "r"));
  EXPECT_TRUE(reporter.WaitForRoom(absl::ZeroDuration()));
  reporter.Add(Complete("3", "r"));
  EXPECT_FALSE(reporter.WaitForRoom(absl::Milliseconds(1)));
  reporter.SendOnce();  // delivers 4
  EXPECT_TRUE(reporter.WaitForRoom(absl::ZeroDuration()));
  EXPECT_EQ(reporter.stats().dropped_overflow, 0u);
}

TEST(ReporterTest, ReportsInTheCallInFlightCountAgainstTheRoom) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  ReporterOptions o = Options();
  o.max_pending = 6;
  o.max_batch = 4;
  Reporter reporter(&rpc, o, &clock);
  // A failed call puts its reports back: while it is in flight they still
  // wait, so they leave no room for more leases.
  std::vector<bool> room_during_call;
  rpc.set_on_complete(
      [&] { room_during_call.push_back(reporter.WaitForRoom(absl::ZeroDuration())); });
  for (int i = 0; i < 4; ++i) reporter.Add(Complete(std::to_string(i), "r"));
  rpc.set_down(true);
  reporter.SendOnce();
  EXPECT_EQ(reporter.pending(), 4u);
  rpc.set_down(false);
  clock.Advance(absl::Seconds(10));
  reporter.SendOnce();
  EXPECT_EQ(room_during_call, (std::vector<bool>{false, false}));
  EXPECT_EQ(reporter.pending(), 0u);
  EXPECT_TRUE(reporter.WaitForRoom(absl::ZeroDuration()));
}

TEST(ReporterTest, ACallCarriesAtMostAboutFourMebibytesOfResults) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  ReporterOptions o = Options();
  o.max_batch = 100;
  o.max_pending = 100;
  Reporter reporter(&rpc, o, &clock);
  const std::string mib(1 << 20, 'x');
  for (int i = 0; i < 6; ++i) reporter.Add(Complete(std::to_string(i), mib));
  reporter.SendOnce();
  ASSERT_EQ(rpc.completes().size(), 1u);
  EXPECT_EQ(rpc.completes()[0].items_size(), 4);
  EXPECT_EQ(reporter.pending(), 2u);
  reporter.SendOnce();
  ASSERT_EQ(rpc.completes().size(), 2u);
  EXPECT_EQ(rpc.completes()[1].items_size(), 2);
  // One result over the cap still goes, alone.
  reporter.Add(Complete("big", std::string(5 << 20, 'y')));
  reporter.Add(Complete("small", "r"));
  reporter.SendOnce();
  ASSERT_EQ(rpc.completes().size(), 3u);
  EXPECT_EQ(rpc.completes()[2].items_size(), 1);
  EXPECT_EQ(rpc.completes()[2].items(0).id(), "big");
}

TEST(ReporterTest, AStaleTokenIsRejectedForGoodNotRetried) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  rpc.set_item_code("stale", absl::StatusCode::kFailedPrecondition, "token 1 is stale");
  rpc.set_item_code("gone", absl::StatusCode::kNotFound, "unknown task");
  reporter.Add(Complete("stale", "1"));
  reporter.Add(Complete("gone", "2"));
  reporter.Add(Complete("ok", "3"));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  EXPECT_EQ(reporter.stats().rejected, 2u);
  EXPECT_EQ(reporter.stats().delivered, 1u);
  EXPECT_EQ(reporter.pending(), 0u);
}

TEST(ReporterTest, ARefusedResultBecomesAPermanentFailure) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  rpc.set_item_code("big", absl::StatusCode::kInvalidArgument, "result is 2 MiB");
  reporter.Add(Complete("big", std::string(100, 'x')));
  reporter.SendOnce();
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  ASSERT_EQ(rpc.fails().size(), 1u);
  const v1::FailRequest::Item item = rpc.fails()[0].items(0);
  EXPECT_EQ(item.id(), "big");
  EXPECT_FALSE(item.retryable());
  EXPECT_EQ(item.reason(), "invalid_result");
  EXPECT_EQ(item.error(), "result is 2 MiB");
}

TEST(ReporterTest, OtherItemErrorsAreRetried) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  rpc.set_item_code("flaky", absl::StatusCode::kUnavailable, "try later");
  reporter.Add(Release("flaky"));
  reporter.SendOnce();
  EXPECT_EQ(reporter.pending(), 1u);
  rpc.set_item_code("flaky", absl::StatusCode::kOk);
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  EXPECT_EQ(rpc.releases().size(), 2u);
  EXPECT_EQ(reporter.stats().delivered, 1u);
}

TEST(ReporterTest, AThrottledFailCarriesThrottledAndRetryAfter) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  reporter.Add(Throttle("t", absl::Milliseconds(2500)));
  reporter.Add(Fail("f", true));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  const std::vector<v1::FailRequest> fails = rpc.fails();
  ASSERT_EQ(fails.size(), 1u);
  ASSERT_EQ(fails[0].items_size(), 2);
  const v1::FailRequest::Item& t = fails[0].items(0);
  EXPECT_EQ(t.id(), "t");
  EXPECT_TRUE(t.throttled());
  ASSERT_TRUE(t.has_retry_after());
  EXPECT_EQ(t.retry_after().seconds(), 2);
  EXPECT_EQ(t.retry_after().nanos(), 500'000'000);
  EXPECT_EQ(t.reason(), "throttled");
  EXPECT_EQ(t.error(), "upstream said 429");
  // An ordinary failure carries neither.
  const v1::FailRequest::Item& f = fails[0].items(1);
  EXPECT_FALSE(f.throttled());
  EXPECT_FALSE(f.has_retry_after());
  EXPECT_EQ(reporter.stats().delivered, 2u);
}

TEST(ReporterTest, AThrottleWithoutADelayLeavesRetryAfterUnset) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  reporter.Add(Throttle("t", absl::ZeroDuration()));
  reporter.Add(Throttle("neg", absl::Seconds(-1)));
  reporter.SendOnce();
  const std::vector<v1::FailRequest> fails = rpc.fails();
  ASSERT_EQ(fails.size(), 1u);
  ASSERT_EQ(fails[0].items_size(), 2);
  for (const v1::FailRequest::Item& item : fails[0].items()) {
    EXPECT_TRUE(item.throttled()) << item.id();
    EXPECT_FALSE(item.has_retry_after()) << item.id();  // the broker's default, 1 s
  }
  EXPECT_EQ(reporter.stats().delivered, 2u);
}

TEST(ReporterTest, AThrottleDelayOverAnHourIsClampedSoTheBrokerTakesIt) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  reporter.Add(Throttle("long", absl::Hours(3)));
  EXPECT_EQ(reporter.SendOnce(), absl::InfiniteFuture());
  const std::vector<v1::FailRequest> fails = rpc.fails();
  ASSERT_EQ(fails.size(), 1u);  // accepted at once, not retried
  const v1::FailRequest::Item& item = fails[0].items(0);
  EXPECT_TRUE(item.throttled());
  EXPECT_EQ(item.retry_after().seconds(), 3600);
  EXPECT_EQ(item.retry_after().nanos(), 0);
  EXPECT_EQ(reporter.stats().delivered, 1u);
  EXPECT_EQ(reporter.pending(), 0u);
}

TEST(ReporterTest, FailureTextIsMadeValidUtf8) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Reporter reporter(&rpc, Options(), &clock);
  Report r = Fail("x", true);
  r.error = "bad \xff byte";
  reporter.Add(r);
  reporter.SendOnce();
  EXPECT_EQ(rpc.fails()[0].items(0).error(), "bad ? byte");
}

TEST(ReporterTest, TheThreadFlushesAndStopDeliversWhatIsLeft) {
  FakeBrokerRpc rpc;
  ReporterOptions o = Options();
  o.flush_delay = absl::Milliseconds(1);
  Reporter reporter(&rpc, o, RealClock::Get());
  reporter.Start();
  reporter.Add(Complete("a", "1"));
  reporter.Add(Complete("b", "2"));
  EXPECT_EQ(reporter.Stop(absl::Seconds(10)), 0u);
  EXPECT_EQ(reporter.stats().delivered, 2u);
}

// The fake clock never reaches a lingering report's due time, so the thread
// sends it only when it does not linger (or at Stop).
TEST(ReporterTest, AReportLingersOnlyWhileTheWorkerHoldsOtherTasks) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  ReporterOptions o = Options();
  o.flush_delay = absl::Hours(1);
  std::atomic<bool> busy{false};
  o.linger_while = [&busy] { return busy.load(); };
  Reporter reporter(&rpc, o, &clock);
  reporter.Start();
  reporter.Add(Complete("alone", "1"));
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (rpc.completes().empty() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(rpc.completes().size(), 1u) << "an idle worker's result should go at once";

  busy = true;
  reporter.Add(Complete("with-company", "2"));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(rpc.completes().size(), 1u) << "a busy worker's result should wait for company";
  EXPECT_EQ(reporter.Stop(absl::Seconds(10)), 0u);
  ASSERT_EQ(rpc.completes().size(), 2u);
  EXPECT_EQ(rpc.completes()[1].items(0).id(), "with-company");
}

TEST(ReporterTest, StopGivesUpAtItsDeadlineWhenTheBrokerIsDown) {
  FakeBrokerRpc rpc;
  rpc.set_down(true);
  Reporter reporter(&rpc, Options(), RealClock::Get());
  reporter.Start();
  reporter.Add(Complete("a", "1"));
  const absl::Time start = absl::Now();
  EXPECT_EQ(reporter.Stop(absl::Milliseconds(50)), 1u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace conveyor::worker
