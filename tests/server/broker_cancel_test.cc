// Cancel, and the races between reports, cancels and lease expiry.
#include <string>
#include <vector>

#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::IsEmpty;

// ── Queued tasks ──

TEST_F(BrokerTest, CancelOfReadyTaskEndsCanceledAtOnceAndItIsNeverLeased) {
  TaskId id = MustSubmit(Spec());
  TaskId other = MustSubmit(Spec());
  absl::StatusOr<TaskInfo> c = broker_->CancelTask(id);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->state, TaskState::kCanceled);
  EXPECT_EQ(c->finished_at, Now());
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_EQ(listener_.Count("ended", id), 1);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kReady), 1u);
  EXPECT_EQ(s.count(TaskState::kCanceled), 1u);
  std::vector<LeasedTask> got = LeaseNow({"q"}, 10);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, other);
}

TEST_F(BrokerTest, CancelOfScheduledTaskEndsCanceledAndItNeverBecomesReady) {
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  absl::StatusOr<TaskInfo> c = broker_->CancelTask(id);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->state, TaskState::kCanceled);
  AdvanceAndTick(absl::Seconds(20));
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kScheduled), 0u);
}

TEST_F(BrokerTest, CancelOfTaskInRetryBackoffEndsCanceled) {
  TaskSpec spec = Spec();
  spec.retry.initial_backoff = absl::Seconds(5);
  spec.retry.jitter = 0;
  TaskId id = MustSubmit(spec);
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());
  ASSERT_EQ(StateOf(id), TaskState::kScheduled);
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  AdvanceAndTick(absl::Seconds(10));
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(BrokerTest, CanceledTaskDoesNotExpireLater) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(5);
  TaskId id = MustSubmit(spec);
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  AdvanceAndTick(absl::Seconds(10));
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_EQ(listener_.Count("ended", id), 1);
}

TEST_F(BrokerTest, CancelOfUnknownTaskIsNotFound) {
  EXPECT_THAT(broker_->CancelTask(TaskId(777)), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BrokerTest, CancelOfEndedTaskIsFailedPrecondition) {
  TaskId done = MustSubmit(Spec());
  ASSERT_THAT(CompleteOne(done, LeaseOne().token, "r"), IsOk());
  EXPECT_THAT(broker_->CancelTask(done),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(done), TaskState::kSucceeded);
  EXPECT_EQ(Get(done).result, "r");

  TaskId canceled = MustSubmit(Spec());
  ASSERT_THAT(broker_->CancelTask(canceled), IsOk());
  EXPECT_THAT(broker_->CancelTask(canceled),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  TaskId dead = MakeDead();
  EXPECT_THAT(broker_->CancelTask(dead), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(dead), TaskState::kDead);
}

// ── Running tasks ──

TEST_F(BrokerTest, CancelOfRunningTaskMarksItAndTellsTheWorkerInHeartbeat) {
  TaskId id = MustSubmit(Spec());
  TaskId other = MustSubmit(Spec());
  std::vector<LeasedTask> got = LeaseNow({"q"}, 2);
  ASSERT_EQ(got.size(), 2u);

  absl::StatusOr<TaskInfo> c = broker_->CancelTask(id);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->state, TaskState::kRunning);
  EXPECT_TRUE(c->cancel_requested);
  EXPECT_TRUE(Get(id).cancel_requested);

  std::vector<HeartbeatOutcome> out = broker_->Heartbeat(
      "w1", {HeartbeatItem{id, got[0].token, std::nullopt, ""},
             HeartbeatItem{other, got[1].token, std::nullopt, ""}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_THAT(out[0].status, IsOk());
  EXPECT_TRUE(out[0].cancel);
  EXPECT_THAT(out[1].status, IsOk());
  EXPECT_FALSE(out[1].cancel) << "only the canceled task is told";
  EXPECT_EQ(StateOf(id), TaskState::kRunning) << "ends when its worker reports";
}

TEST_F(BrokerTest, CompleteAfterCancelRequestWins) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_THAT(CompleteOne(id, l.token, "made it"), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kSucceeded);
  EXPECT_EQ(t.result, "made it");
}

TEST_F(BrokerTest, FailAfterCancelRequestEndsCanceledAndIsNotRetried) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_THAT(FailOne(id, l.token, /*retryable=*/true, "stopped"), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_EQ(listener_.Count("retried", id), 0);
  AdvanceAndTick(absl::Minutes(10));
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kCanceled), 1u);
  EXPECT_EQ(s.count(TaskState::kRunning), 0u);
  EXPECT_EQ(s.count(TaskState::kScheduled), 0u);
}

TEST_F(BrokerTest, FailOnLastAttemptAfterCancelRequestEndsCanceledNotDead) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 1;
  spec.fallback_result = "fb";
  TaskId id = MustSubmit(spec);
  LeasedTask l = LeaseOne();
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_THAT(FailOne(id, l.token, false), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
}

TEST_F(BrokerTest, LeaseExpiryAfterCancelRequestEndsCanceled) {
  TaskId id = MustSubmit(Spec());
  LeaseOne();
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  AdvanceAndTick(kLease + absl::Seconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  EXPECT_EQ(broker_->running_count(), 0u);
}

TEST_F(BrokerTest, ReleaseAfterCancelRequestEndsCanceled) {
  // "Otherwise it ends CANCELED when its worker reports": a hand-back is a
  // report, and a canceled task is never handed out again.
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_THAT(ReleaseOne(id, l.token), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(BrokerTest, CancelRequestOnRunningTaskKeepsItsCapacity) {
  QueueConfig c = Config("q");
  c.capacity = 1;
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  LeasedTask l = LeaseOne("q");
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_THAT(broker_->SubmitNow(Spec("q")),
              StatusIs(absl::StatusCode::kResourceExhausted))
      << "still RUNNING until its worker reports";
  ASSERT_THAT(FailOne(id, l.token), IsOk());
  MustSubmit(Spec("q"));
}

// ── Races ──

TEST_F(BrokerTest, RaceCompleteThenCancelKeepsSucceeded) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(CompleteOne(id, l.token, "first"), IsOk());
  EXPECT_THAT(broker_->CancelTask(id),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
  EXPECT_FALSE(Get(id).cancel_requested);
}

TEST_F(BrokerTest, RaceCompleteAgainstLeaseExpiryAtTheSameInstant) {
  // The lease runs out; the completion arrives before the timer is handled.
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  clock_.Advance(kLease);
  ASSERT_THAT(CompleteOne(id, l.token, "photo finish"), IsOk());
  broker_->Tick();
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kSucceeded);
  EXPECT_EQ(t.crashes, 0u);
  EXPECT_EQ(listener_.Count("lease_expired", id), 0);
}

TEST_F(BrokerTest, RaceLeaseExpiryThenCompleteThenLeaseGivesNothing) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne("q", "slow-worker");
  AdvanceAndTick(kLease + absl::Seconds(1));
  ASSERT_THAT(CompleteOne(id, l.token, "slow but first"), IsOk());
  EXPECT_THAT(LeaseNow({"q"}, 1, {}, "fast-worker"), IsEmpty());
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
}

TEST_F(BrokerTest, RaceStaleWorkerReportsAfterReLeaseAreAllRejected) {
  TaskId id = MustSubmit(Spec());
  LeasedTask old_lease = LeaseOne("q", "old");
  AdvanceAndTick(kLease + absl::Seconds(1));
  LeasedTask new_lease = LeaseOne("q", "new");
  EXPECT_EQ(new_lease.token, old_lease.token + 1);

  EXPECT_THAT(HeartbeatOne(id, old_lease.token, 50, "", "old").status,
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(CompleteOne(id, old_lease.token),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(FailOne(id, old_lease.token, false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ReleaseOne(id, old_lease.token),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.worker_id, "new");
  EXPECT_EQ(t.attempts, 0u);
  EXPECT_DOUBLE_EQ(t.progress_percent, 0);

  // The new lease works, and after it ends the old token still cannot report.
  EXPECT_THAT(CompleteOne(id, new_lease.token, "new"), IsOk());
  EXPECT_THAT(CompleteOne(id, old_lease.token, "old"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(Get(id).result, "new");
}

TEST_F(BrokerTest, RaceCancelOfRunningTaskThenLeaseExpiryThenLateComplete) {
  // Canceled by the expiry: a late report with the last token finds the task
  // ended and changes nothing.
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  AdvanceAndTick(kLease + absl::Seconds(1));
  ASSERT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_THAT(CompleteOne(id, l.token, "too late"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(id), TaskState::kCanceled);
  EXPECT_EQ(Get(id).result, "");
}

}  // namespace
}  // namespace conveyor::server::broker_test
