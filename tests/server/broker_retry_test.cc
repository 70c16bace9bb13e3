// Failures and retries: backoff, DEAD and FALLBACK, Release (spends nothing),
// lease expiry (spends the crash budget) and per-attempt timeouts (spend an
// attempt).
#include <set>
#include <string>
#include <vector>

#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// A spec with an exact (jitter-free) retry policy.
TaskSpec Exact(TaskSpec spec, uint32_t max_attempts, absl::Duration initial,
               double multiplier, absl::Duration max) {
  spec.retry.max_attempts = max_attempts;
  spec.retry.initial_backoff = initial;
  spec.retry.multiplier = multiplier;
  spec.retry.max_backoff = max;
  spec.retry.jitter = 0;
  return spec;
}

// ── Fail ──

TEST_F(BrokerTest, RetryableFailureSchedulesRetryAfterInitialBackoff) {
  TaskId id = MustSubmit(Exact(Spec(), 3, absl::Seconds(2), 2.0, absl::Minutes(1)));
  LeasedTask l = LeaseOne();
  ASSERT_THAT(FailOne(id, l.token, /*retryable=*/true, "disk on fire"), IsOk());

  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kScheduled);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.crashes, 0u);
  EXPECT_EQ(t.error, "disk on fire");
  EXPECT_EQ(t.not_before, Now() + absl::Seconds(2));
  EXPECT_EQ(broker_->running_count(), 0u);
  EXPECT_EQ(listener_.Count("retried", id), 1);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kRunning), 0u);
  EXPECT_EQ(s.count(TaskState::kScheduled), 1u);

  AdvanceAndTick(absl::Seconds(2) - absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  AdvanceAndTick(absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kReady);

  LeasedTask again = LeaseOne();
  EXPECT_EQ(again.id, id);
  EXPECT_EQ(again.attempt, 2u);
  EXPECT_EQ(again.token, 2u);
}

TEST_F(BrokerTest, BackoffGrowsByMultiplierAndIsCappedAtMaxBackoff) {
  // delay(n) = initial * multiplier^(n-1), at most max_backoff.
  TaskId id = MustSubmit(Exact(Spec(), 10, absl::Seconds(1), 3.0, absl::Seconds(20)));
  const std::vector<absl::Duration> expected = {
      absl::Seconds(1), absl::Seconds(3), absl::Seconds(9), absl::Seconds(20),
      absl::Seconds(20)};
  for (size_t n = 0; n < expected.size(); ++n) {
    LeasedTask l = LeaseOne();
    ASSERT_EQ(l.id, id);
    EXPECT_EQ(l.attempt, n + 1);
    ASSERT_THAT(FailOne(id, l.token), IsOk());
    TaskInfo t = Get(id);
    EXPECT_EQ(t.state, TaskState::kScheduled);
    EXPECT_EQ(t.attempts, n + 1);
    EXPECT_EQ(t.not_before - Now(), expected[n]) << "failure " << n + 1;
    AdvanceAndTick(expected[n]);
    EXPECT_EQ(StateOf(id), TaskState::kReady) << "failure " << n + 1;
  }
}

TEST_F(BrokerTest, BackoffComesFromTheQueueRetryPolicyByDefault) {
  QueueConfig c = Config("q");
  c.retry.max_attempts = 5;
  c.retry.initial_backoff = absl::Seconds(5);
  c.retry.multiplier = 2.0;
  c.retry.max_backoff = absl::Minutes(10);
  c.retry.jitter = 0;
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  for (absl::Duration d : {absl::Seconds(5), absl::Seconds(10), absl::Seconds(20)}) {
    LeasedTask l = LeaseOne("q");
    ASSERT_THAT(FailOne(id, l.token), IsOk());
    EXPECT_EQ(Get(id).not_before - Now(), d);
    AdvanceAndTick(d);
  }
}

TEST_F(BrokerTest, PartialRetryOverrideTakesTheRestFromTheQueue) {
  QueueConfig c = Config("q");
  c.retry.initial_backoff = absl::Seconds(7);
  c.retry.jitter = 0;
  c.retry.max_attempts = 2;
  MustCreateQueue(c);
  TaskSpec spec = Spec("q");
  spec.retry.max_attempts = 4;  // only this one is overridden
  TaskId id = MustSubmit(spec);
  EXPECT_EQ(Get(id).max_attempts, 4u);
  ASSERT_THAT(FailOne(id, LeaseOne("q").token), IsOk());
  EXPECT_EQ(Get(id).not_before - Now(), absl::Seconds(7));
}

TEST_F(BrokerTest, TaskMaxBackoffBelowItsQueueInitialBackoffIsNeverExceeded) {
  // The task asks for delays of at most 8 min on a queue whose own initial
  // backoff is 10 min. The proto calls max_backoff the "upper bound on any
  // delay": the broker may refuse the combination (INVALID_ARGUMENT naming
  // max_backoff) or honor it, but must not silently wait longer.
  QueueConfig c = Config("q");
  c.retry.initial_backoff = absl::Minutes(10);
  c.retry.max_backoff = absl::Hours(1);
  c.retry.jitter = 0;
  MustCreateQueue(c);
  TaskSpec spec = Spec("q");
  spec.retry.max_backoff = absl::Minutes(8);
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  if (!r.ok()) {
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, "max_backoff"));
    return;
  }
  TaskId id = r->task.id;
  ASSERT_THAT(FailOne(id, LeaseOne("q").token), IsOk());
  EXPECT_LE(Get(id).not_before - Now(), absl::Minutes(8));
}

TEST_F(BrokerTest, JitterKeepsEachDelayWithinItsFraction) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 1000;
  spec.retry.initial_backoff = absl::Seconds(10);
  spec.retry.multiplier = 1.0;
  spec.retry.max_backoff = absl::Seconds(10);
  spec.retry.jitter = 0.5;
  TaskId id = MustSubmit(spec);
  std::set<absl::Duration> seen;
  for (int i = 0; i < 40; ++i) {
    LeasedTask l = LeaseOne();
    ASSERT_EQ(l.id, id);
    ASSERT_THAT(FailOne(id, l.token), IsOk());
    absl::Duration d = Get(id).not_before - Now();
    EXPECT_GE(d, absl::Seconds(5));
    EXPECT_LE(d, absl::Seconds(15));
    seen.insert(d);
    AdvanceAndTick(absl::Seconds(15));
  }
  EXPECT_GT(seen.size(), 1u) << "jitter 0.5 must spread the delays";
}

TEST_F(BrokerTest, NonRetryableFailureEndsDead) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(FailOne(id, l.token, /*retryable=*/false, "bad input"), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kDead);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.error, "bad input");
  EXPECT_EQ(t.finished_at, Now());
  EXPECT_EQ(listener_.Count("retried", id), 0);
  EXPECT_EQ(listener_.Count("ended", id), 1);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kDead), 1u);
  AdvanceAndTick(absl::Hours(1));
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(BrokerTest, FailureOnLastAttemptEndsDead) {
  TaskId id = MustSubmit(Exact(Spec(), 2, absl::Seconds(1), 2.0, absl::Minutes(1)));
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
  AdvanceAndTick(absl::Seconds(1));
  LeasedTask l = LeaseOne();
  EXPECT_EQ(l.attempt, 2u);
  ASSERT_THAT(FailOne(id, l.token, true, "still broken"), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kDead);
  EXPECT_EQ(t.attempts, 2u);
  EXPECT_EQ(t.error, "still broken");
  AdvanceAndTick(absl::Minutes(5));
  EXPECT_EQ(StateOf(id), TaskState::kDead);
}

TEST_F(BrokerTest, AttemptsExhaustedWithFallbackEndsFallbackWithThatResult) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 1;
  spec.fallback_result = "use the cache";
  TaskId id = MustSubmit(spec);
  ASSERT_THAT(FailOne(id, LeaseOne().token, true, "oops"), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kFallback);
  EXPECT_EQ(t.result, "use the cache");
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kFallback), 1u);
  EXPECT_EQ(s.count(TaskState::kDead), 0u);
  absl::StatusOr<TaskPage> dead = broker_->ListDeadLetters("q", 100, "");
  ASSERT_THAT(dead, IsOk());
  EXPECT_THAT(dead->tasks, IsEmpty()) << "a FALLBACK task is not a dead letter";
}

TEST_F(BrokerTest, NonRetryableFailureWithFallbackEndsFallback) {
  TaskSpec spec = Spec();
  spec.fallback_result = "fb";
  TaskId id = MustSubmit(spec);
  ASSERT_THAT(FailOne(id, LeaseOne().token, /*retryable=*/false), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kFallback);
  EXPECT_EQ(Get(id).result, "fb");
}

TEST_F(BrokerTest, FallbackIsNotUsedWhileAttemptsRemain) {
  TaskSpec spec = Exact(Spec(), 2, absl::Seconds(1), 2.0, absl::Minutes(1));
  spec.fallback_result = "fb";
  TaskId id = MustSubmit(spec);
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
}

TEST_F(BrokerTest, FailBatchGivesPerItemStatuses) {
  TaskId a = MustSubmit(Spec());
  TaskId b = MustSubmit(Spec());
  std::vector<LeasedTask> got = LeaseNow({"q"}, 2);
  ASSERT_THAT(got, SizeIs(2));
  FailItem fa{a, got[0].token, "x", false, "exit_code"};
  FailItem stale{b, got[1].token + 3, "y", true, ""};
  FailItem unknown{TaskId(4242), 1, "z", true, ""};
  std::vector<absl::Status> s = broker_->Fail({fa, stale, unknown});
  ASSERT_THAT(s, SizeIs(3));
  EXPECT_THAT(s[0], IsOk());
  EXPECT_FALSE(s[1].ok());
  EXPECT_THAT(s[2], StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(StateOf(a), TaskState::kDead);
  EXPECT_EQ(StateOf(b), TaskState::kRunning);
}

// ── Release ──

TEST_F(BrokerTest, ReleaseMakesTaskReadyWithoutSpendingAttemptOrCrash) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 1;
  QueueConfig c = Config("q");
  c.max_crashes = 1;
  MustCreateQueue(c);
  TaskId id = MustSubmit(spec);
  for (int i = 0; i < 5; ++i) {
    LeasedTask l = LeaseOne();
    ASSERT_EQ(l.id, id);
    EXPECT_EQ(l.attempt, 1u) << "a hand-back does not advance the attempt";
    EXPECT_EQ(l.token, static_cast<uint64_t>(i + 1)) << "each lease still takes a token";
    ASSERT_THAT(ReleaseOne(id, l.token), IsOk());
    TaskInfo t = Get(id);
    EXPECT_EQ(t.state, TaskState::kReady);
    EXPECT_EQ(t.attempts, 0u);
    EXPECT_EQ(t.crashes, 0u);
    EXPECT_EQ(broker_->running_count(), 0u);
  }
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kReady), 1u);
  EXPECT_EQ(s.count(TaskState::kRunning), 0u);
  // Its old lease timer must not count as a crash later.
  AdvanceAndTick(kLease * 3);
  EXPECT_EQ(Get(id).crashes, 0u);
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

TEST_F(BrokerTest, ReleaseAfterAFailureKeepsTheAttemptNumber) {
  TaskId id = MustSubmit(Exact(Spec(), 3, absl::Seconds(1), 1.0, absl::Seconds(1)));
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());
  AdvanceAndTick(absl::Seconds(1));
  LeasedTask l = LeaseOne();
  EXPECT_EQ(l.attempt, 2u);
  ASSERT_THAT(ReleaseOne(id, l.token), IsOk());
  EXPECT_EQ(Get(id).attempts, 1u);
  EXPECT_EQ(LeaseOne().attempt, 2u);
}

TEST_F(BrokerTest, ReleaseOfTaskNeverLeasedIsFailedPrecondition) {
  // Like Complete and Fail with token 0 ("was never leased"): no lease was
  // granted, so there is nothing to hand back (DESIGN: FAILED_PRECONDITION for
  // a wrong state).
  TaskId id = MustSubmit(Spec());
  EXPECT_THAT(CompleteOne(id, 0), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(FailOne(id, 0), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ReleaseOne(id, 0), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

TEST_F(BrokerTest, RepeatedReleaseOfTheSameLeaseChangesNothing) {
  // broker.cc acknowledges a repeated report (its answer may have been lost).
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(ReleaseOne(id, l.token), IsOk());
  EXPECT_THAT(ReleaseOne(id, l.token), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kReady);
  EXPECT_EQ(t.token, l.token);
  EXPECT_EQ(t.attempts, 0u);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kReady), 1u);
  EXPECT_THAT(LeaseNow({"q"}, 10), ::testing::SizeIs(1)) << "queued once, not twice";
}

TEST_F(BrokerTest, ReleaseOfEndedTaskIsFailedPrecondition) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(CompleteOne(id, l.token), IsOk());
  EXPECT_THAT(ReleaseOne(id, l.token), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
}

// ── Lease expiry: the crash budget ──

TEST_F(BrokerTest, LeaseExpirySpendsCrashBudgetAndMakesTaskReadyAgain) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  AdvanceAndTick(kLease - absl::Seconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kRunning);
  AdvanceAndTick(absl::Seconds(2));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kReady);
  EXPECT_EQ(t.crashes, 1u);
  EXPECT_EQ(t.attempts, 0u) << "a lease expiry does not spend an attempt";
  EXPECT_THAT(t.error, HasSubstr("lease"));
  EXPECT_EQ(broker_->running_count(), 0u);
  EXPECT_EQ(listener_.Count("lease_expired", id), 1);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kRunning), 0u);
  EXPECT_EQ(s.count(TaskState::kReady), 1u);

  LeasedTask again = LeaseOne();
  EXPECT_EQ(again.id, id);
  EXPECT_EQ(again.attempt, 1u) << "a lease expiry does not advance the attempt";
  EXPECT_EQ(again.token, l.token + 1);
}

TEST_F(BrokerTest, TaskEndsDeadAfterMaxCrashesLeaseExpiries) {
  QueueConfig c = Config("q");
  c.max_crashes = 2;
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  LeaseOne("q");
  AdvanceAndTick(kLease + absl::Seconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_EQ(Get(id).crashes, 1u);
  LeaseOne("q");
  AdvanceAndTick(kLease + absl::Seconds(1));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kDead);
  EXPECT_EQ(t.crashes, 2u);
  EXPECT_EQ(listener_.Count("ended", id), 1);
  absl::StatusOr<TaskPage> dead = broker_->ListDeadLetters("q", 10, "");
  ASSERT_THAT(dead, IsOk());
  EXPECT_THAT(Ids(dead->tasks), ::testing::ElementsAre(id));
}

TEST_F(BrokerTest, DefaultCrashBudgetIsThreeLeaseExpiries) {
  TaskId id = MustSubmit(Spec());
  for (uint32_t i = 1; i <= 2; ++i) {
    LeaseOne();
    AdvanceAndTick(kLease + absl::Seconds(1));
    EXPECT_EQ(StateOf(id), TaskState::kReady) << i;
  }
  LeaseOne();
  AdvanceAndTick(kLease + absl::Seconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kDead);
  EXPECT_EQ(Get(id).crashes, 3u);
}

TEST_F(BrokerTest, CrashBudgetAndAttemptsAreSeparate) {
  QueueConfig c = Config("q");
  c.max_crashes = 2;
  c.retry.max_attempts = 2;
  c.retry.initial_backoff = absl::Seconds(1);
  c.retry.jitter = 0;
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  ASSERT_THAT(FailOne(id, LeaseOne("q").token), IsOk());  // attempts 1 of 2
  AdvanceAndTick(absl::Seconds(1));
  LeaseOne("q");
  AdvanceAndTick(kLease + absl::Seconds(1));  // crashes 1 of 2
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kReady);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.crashes, 1u);
  LeasedTask l = LeaseOne("q");
  EXPECT_EQ(l.attempt, 2u);
  EXPECT_THAT(CompleteOne(id, l.token), IsOk());
}

TEST_F(BrokerTest, SingleAttemptTaskSurvivesALeaseExpiry) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 1;
  TaskId id = MustSubmit(spec);
  LeaseOne();
  AdvanceAndTick(kLease + absl::Seconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

TEST_F(BrokerTest, LeaseExpiryOfSeveralTasksAtOnceMakesThemAllReady) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(MustSubmit(Spec()));
  ASSERT_THAT(LeaseNow({"q"}, 4), SizeIs(4));
  AdvanceAndTick(kLease + absl::Seconds(1));
  for (TaskId id : ids) EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_EQ(broker_->running_count(), 0u);
  EXPECT_EQ(listener_.Count("lease_expired"), 4);
}

// ── Per-attempt timeout ──

class TimeoutTest : public BrokerTest {
 protected:
  static constexpr absl::Duration kGrace = absl::Seconds(5);
  static constexpr absl::Duration kTimeout = absl::Seconds(10);
  void SetUp() override {
    BrokerOptions o;
    o.timeout_grace = kGrace;
    Reset(o);
    QueueConfig c = Config("q");
    c.lease_duration = absl::Seconds(4);
    MustCreateQueue(c);
  }
  TaskSpec TimedSpec(uint32_t max_attempts) {
    TaskSpec spec = Exact(Spec("q"), max_attempts, absl::Seconds(1), 2.0,
                          absl::Minutes(1));
    spec.timeout = kTimeout;
    return spec;
  }
  // Advances in heartbeat-sized steps, heartbeating `id` each time, until
  // `total` has passed. Returns the last heartbeat's status.
  absl::Status HeartbeatThrough(TaskId id, uint64_t token, absl::Duration total) {
    absl::Status last;
    for (absl::Duration done = absl::ZeroDuration(); done < total;
         done += absl::Seconds(1)) {
      last = HeartbeatOne(id, token).status;
      AdvanceAndTick(absl::Seconds(1));
    }
    return last;
  }
};

TEST_F(TimeoutTest, AttemptRunningPastTimeoutPlusGraceIsFailedEvenWhileHeartbeating) {
  TaskId id = MustSubmit(TimedSpec(3));
  LeasedTask l = LeaseOne("q");
  EXPECT_EQ(l.deadline, Now() + kTimeout);
  EXPECT_EQ(l.timeout, kTimeout);

  // Heartbeats keep the lease alive up to timeout + grace - 1s.
  EXPECT_THAT(HeartbeatThrough(id, l.token, kTimeout + kGrace - absl::Seconds(1)),
              IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kRunning);
  EXPECT_EQ(Get(id).crashes, 0u);

  HeartbeatOne(id, l.token);
  AdvanceAndTick(absl::Seconds(2));  // now timeout + grace + 1s
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kScheduled) << "a timeout is a retryable failure";
  EXPECT_EQ(t.attempts, 1u) << "a timeout spends an attempt";
  EXPECT_EQ(t.crashes, 0u) << "a timeout is not a crash";
  EXPECT_THAT(t.error, HasSubstr("timeout"));
  EXPECT_EQ(broker_->running_count(), 0u);

  // The timed-out lease is over for its worker.
  EXPECT_FALSE(HeartbeatOne(id, l.token).status.ok());
  AdvanceAndTick(absl::Seconds(1));
  LeasedTask again = LeaseOne("q");
  EXPECT_EQ(again.id, id);
  EXPECT_EQ(again.attempt, 2u);
}

TEST_F(TimeoutTest, TimeoutOnLastAttemptEndsDead) {
  TaskId id = MustSubmit(TimedSpec(1));
  LeasedTask l = LeaseOne("q");
  // The last heartbeats land after the timeout: their answers do not matter.
  (void)HeartbeatThrough(id, l.token, kTimeout + kGrace + absl::Seconds(1));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kDead);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_THAT(t.error, HasSubstr("timeout"));
}

TEST_F(TimeoutTest, QueueDefaultTimeoutAppliesWithoutHeartbeats) {
  QueueConfig c = Config("slow");
  c.default_timeout = absl::Seconds(20);
  c.lease_duration = absl::Minutes(10);  // the lease never lapses here
  c.retry.jitter = 0;
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("slow"));
  EXPECT_EQ(Get(id).timeout, absl::Seconds(20));
  LeasedTask l = LeaseOne("slow");
  EXPECT_EQ(l.timeout, absl::Seconds(20));
  EXPECT_EQ(l.deadline, Now() + absl::Seconds(20));
  AdvanceAndTick(absl::Seconds(24));
  EXPECT_EQ(StateOf(id), TaskState::kRunning) << "grace is 5s";
  AdvanceAndTick(absl::Seconds(2));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kScheduled);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.crashes, 0u);
  EXPECT_THAT(t.error, HasSubstr("timeout"));
}

TEST_F(TimeoutTest, CompleteBeforeTheTimeoutFiresWins) {
  TaskId id = MustSubmit(TimedSpec(3));
  LeasedTask l = LeaseOne("q");
  // Past the deadline, within the grace.
  EXPECT_THAT(HeartbeatThrough(id, l.token, kTimeout + absl::Seconds(2)), IsOk());
  EXPECT_THAT(CompleteOne(id, l.token, "late but in grace"), IsOk());
  AdvanceAndTick(absl::Minutes(1));
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
  EXPECT_EQ(Get(id).attempts, 0u);
}

}  // namespace
}  // namespace conveyor::server::broker_test
