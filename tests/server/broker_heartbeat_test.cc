// A heartbeat that arrives after its lease lapsed, before anyone leased the
// task again: DESIGN.md accepts a report with the current token then, so the
// worker keeps the task (and the crash it was charged is refunded). Tasks
// that are READY for another reason are never taken back by a heartbeat.
#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

TEST_F(BrokerTest, HeartbeatAfterALapsedLeaseTakesTheTaskBackAndRefundsTheCrash) {
  TaskId id = MustSubmit();
  LeasedTask l = LeaseOne();
  AdvanceAndTick(GetQueue("q").config.lease_duration + absl::Seconds(1));
  ASSERT_EQ(StateOf(id), TaskState::kReady);
  ASSERT_EQ(Get(id).crashes, 1u);

  HeartbeatOutcome o = HeartbeatOne(id, l.token);
  EXPECT_THAT(o.status, IsOk());
  EXPECT_EQ(o.lease_expires_at, Now() + GetQueue("q").config.lease_duration);
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.crashes, 0u);
  EXPECT_EQ(t.token, l.token);
  // It is not handed to anyone else, and the worker's result is taken.
  EXPECT_TRUE(LeaseNow({"q"}).empty());
  EXPECT_THAT(CompleteOne(id, l.token, "done"), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kReady), 0u);
}

TEST_F(BrokerTest, HeartbeatAfterAReLeaseIsStaleAndChangesNothing) {
  TaskId id = MustSubmit();
  LeasedTask first = LeaseOne();
  AdvanceAndTick(GetQueue("q").config.lease_duration + absl::Seconds(1));
  LeasedTask second = LeaseOne();
  ASSERT_EQ(second.id, id);
  EXPECT_THAT(HeartbeatOne(id, first.token).status,
              StatusIs(absl::StatusCode::kFailedPrecondition, "stale"));
  EXPECT_EQ(Get(id).token, second.token);
}

TEST_F(BrokerTest, HeartbeatDoesNotTakeBackAReleasedOrRetriedTask) {
  TaskId released = MustSubmit();
  LeasedTask l = LeaseOne();
  ASSERT_THAT(ReleaseOne(released, l.token), IsOk());
  EXPECT_THAT(HeartbeatOne(released, l.token).status,
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(released), TaskState::kReady);
  // The next lease still gets it, exactly once.
  LeasedTask again = LeaseOne();
  EXPECT_EQ(again.id, released);
  EXPECT_TRUE(LeaseNow({"q"}).empty());

  TaskSpec spec = Spec("r");
  spec.retry.initial_backoff = absl::ZeroDuration();
  TaskId retried = MustSubmit(spec);
  LeasedTask lr = LeaseOne("r");
  ASSERT_THAT(FailOne(retried, lr.token, /*retryable=*/true), IsOk());
  ASSERT_EQ(StateOf(retried), TaskState::kReady);
  EXPECT_THAT(HeartbeatOne(retried, lr.token).status,
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(retried), TaskState::kReady);
}

}  // namespace
}  // namespace conveyor::server::broker_test
