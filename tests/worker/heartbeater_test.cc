// Heartbeater: one batched call for all tracked attempts; lease extension,
// progress, cancellation, lost leases, the broker's drain. Rounds are run with
// BeatOnce() against a fake BrokerRpc; no thread, no real time.
#include "worker/heartbeater.h"

#include <memory>

#include "common/clock.h"
#include "gtest/gtest.h"
#include "tests/worker/fake_broker_rpc.h"

namespace conveyor::worker {
namespace {

std::shared_ptr<Attempt> NewAttempt(const std::string& id, absl::Duration lease,
                                    const Clock& clock, uint64_t token = 1) {
  TaskInfo t;
  t.id = id;
  t.queue = "q";
  t.type = "t";
  t.token = token;
  return std::make_shared<Attempt>(t, clock.Now() + lease, lease, clock.Now());
}

TEST(HeartbeaterTest, SendsOneCallForAllTrackedAttempts) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  auto a = NewAttempt("a", absl::Seconds(30), clock);
  auto b = NewAttempt("b", absl::Seconds(30), clock, 7);
  hb.Track(a);
  hb.Track(b);
  ASSERT_TRUE(hb.BeatOnce());
  ASSERT_EQ(rpc.heartbeats().size(), 1u);
  const v1::HeartbeatRequest r = rpc.heartbeats()[0];
  EXPECT_EQ(r.worker_id(), "w1");
  ASSERT_EQ(r.items_size(), 2);
  for (const auto& item : r.items()) {
    EXPECT_EQ(item.token(), item.id() == "b" ? 7u : 1u);
    EXPECT_LT(item.progress_percent(), 0);  // no progress yet: unchanged
  }
  hb.Untrack(*a);
  hb.Untrack(*b);
  ASSERT_TRUE(hb.BeatOnce());
  EXPECT_EQ(rpc.heartbeats().size(), 1u);  // nothing tracked: no call
}

TEST(HeartbeaterTest, ExtendsLeasesFromTheAnswer) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  auto a = NewAttempt("a", absl::Seconds(30), clock);
  hb.Track(a);
  const absl::Time later = clock.Now() + absl::Minutes(5);
  rpc.set_lease_expires_at(later);
  ASSERT_TRUE(hb.BeatOnce());
  EXPECT_EQ(a->lease_expires_at(), later);
}

TEST(HeartbeaterTest, CarriesProgressUntilABeatSucceeds) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  auto a = NewAttempt("a", absl::Seconds(30), clock);
  hb.Track(a);
  a->SetProgress(40, "resizing");
  rpc.set_down(true);
  EXPECT_FALSE(hb.BeatOnce());
  rpc.set_down(false);
  ASSERT_TRUE(hb.BeatOnce());
  ASSERT_TRUE(hb.BeatOnce());
  auto beats = rpc.heartbeats();
  ASSERT_EQ(beats.size(), 3u);
  EXPECT_DOUBLE_EQ(beats[0].items(0).progress_percent(), 40);
  EXPECT_DOUBLE_EQ(beats[1].items(0).progress_percent(), 40);  // resent after the failure
  EXPECT_EQ(beats[1].items(0).progress_message(), "resizing");
  EXPECT_LT(beats[2].items(0).progress_percent(), 0);  // acknowledged: not sent again
}

TEST(HeartbeaterTest, ACancelInTheAnswerCancelsTheAttempt) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  auto a = NewAttempt("a", absl::Seconds(30), clock);
  auto b = NewAttempt("b", absl::Seconds(30), clock);
  hb.Track(a);
  hb.Track(b);
  rpc.set_cancel("a");
  ASSERT_TRUE(hb.BeatOnce());
  EXPECT_EQ(a->cancellation().reason(), CancelReason::kCanceled);
  EXPECT_FALSE(a->lease_lost());
  EXPECT_FALSE(b->cancellation().cancelled());
}

TEST(HeartbeaterTest, AStaleOrUnknownLeaseIsLost) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  auto stale = NewAttempt("stale", absl::Seconds(30), clock);
  auto gone = NewAttempt("gone", absl::Seconds(30), clock);
  auto fine = NewAttempt("fine", absl::Seconds(30), clock);
  for (auto& a : {stale, gone, fine}) hb.Track(a);
  rpc.set_item_code("stale", absl::StatusCode::kFailedPrecondition, "token 1 is stale");
  rpc.set_item_code("gone", absl::StatusCode::kNotFound, "unknown task");
  ASSERT_TRUE(hb.BeatOnce());
  EXPECT_TRUE(stale->lease_lost());
  EXPECT_TRUE(stale->cancellation().cancelled());
  EXPECT_TRUE(gone->lease_lost());
  EXPECT_FALSE(fine->lease_lost());
  EXPECT_FALSE(fine->cancellation().cancelled());
}

TEST(HeartbeaterTest, TellsWhenTheBrokerDrains) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  int drains = 0;
  std::vector<bool> calls;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock, [&] { ++drains; },
                 [&](bool ok) { calls.push_back(ok); });
  hb.Track(NewAttempt("a", absl::Seconds(30), clock));
  ASSERT_TRUE(hb.BeatOnce());
  EXPECT_EQ(drains, 0);
  rpc.set_draining(true);
  ASSERT_TRUE(hb.BeatOnce());
  EXPECT_EQ(drains, 1);
  rpc.set_down(true);
  EXPECT_FALSE(hb.BeatOnce());
  EXPECT_EQ(calls, (std::vector<bool>{true, true, false}));
}

TEST(HeartbeaterTest, PacesAtAThirdOfTheShortestLeaseWithinBounds) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  EXPECT_EQ(hb.Interval(), absl::Seconds(10));
  auto a = NewAttempt("a", absl::Seconds(60), clock);
  hb.Track(a);
  EXPECT_EQ(hb.Interval(), absl::Seconds(10));  // 20 s capped at 10 s
  auto b = NewAttempt("b", absl::Seconds(3), clock);
  hb.Track(b);
  EXPECT_EQ(hb.Interval(), absl::Seconds(1));
  auto c = NewAttempt("c", absl::Milliseconds(150), clock);
  hb.Track(c);
  EXPECT_EQ(hb.Interval(), absl::Milliseconds(100));  // at least 100 ms
  hb.Untrack(*c);
  hb.Untrack(*b);
  EXPECT_EQ(hb.Interval(), absl::Seconds(10));

  Heartbeater fixed(&rpc, {"w1", "broker", absl::Milliseconds(250)}, &clock);
  fixed.Track(a);
  EXPECT_EQ(fixed.Interval(), absl::Milliseconds(250));
}

TEST(HeartbeaterTest, CancelAllCancelsEveryTrackedAttempt) {
  FakeClock clock;
  FakeBrokerRpc rpc;
  Heartbeater hb(&rpc, {"w1", "broker", absl::ZeroDuration()}, &clock);
  auto a = NewAttempt("a", absl::Seconds(30), clock);
  auto b = NewAttempt("b", absl::Seconds(30), clock);
  hb.Track(a);
  hb.Track(b);
  EXPECT_EQ(hb.CancelAll(CancelReason::kShutdown), 2u);
  EXPECT_EQ(a->cancellation().reason(), CancelReason::kShutdown);
  EXPECT_EQ(b->cancellation().reason(), CancelReason::kShutdown);
}

}  // namespace
}  // namespace conveyor::worker
