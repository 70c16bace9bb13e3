// Ended tasks: result TTL, the retained-count bound, idempotency keys that
// live as long as their task, dead letters, and the listener's view.
#include <string>
#include <vector>

#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr absl::StatusCode kNotFound = absl::StatusCode::kNotFound;

// ── Result TTL ──

TEST_F(BrokerTest, EndedTaskIsDroppedAfterResultTtl) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Hours(1);
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  ASSERT_THAT(CompleteOne(id, LeaseOne("q").token, "kept a while"), IsOk());
  EXPECT_EQ(broker_->task_count(), 1u);

  AdvanceAndTick(absl::Minutes(59));
  EXPECT_EQ(Get(id).result, "kept a while");
  AdvanceAndTick(absl::Minutes(2));
  EXPECT_THAT(broker_->GetTask(id), StatusIs(kNotFound));
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_EQ(listener_.Count("dropped", id), 1);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), 0u);
  absl::StatusOr<TaskPage> all = broker_->ListTasks("q", std::nullopt, 100, "");
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(all->tasks, IsEmpty());
}

TEST_F(BrokerTest, ResultTtlCountsFromTheEndNotFromTheSubmit) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Hours(1);
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  clock_.Advance(absl::Minutes(50));
  LeasedTask l = LeaseOne("q");
  ASSERT_THAT(CompleteOne(id, l.token), IsOk());
  AdvanceAndTick(absl::Minutes(30));  // 80 min after submit, 30 after the end
  EXPECT_THAT(broker_->GetTask(id), IsOk());
  AdvanceAndTick(absl::Minutes(31));
  EXPECT_THAT(broker_->GetTask(id), StatusIs(kNotFound));
}

TEST_F(BrokerTest, EveryKindOfEndedTaskIsDroppedAfterResultTtl) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Minutes(10);
  MustCreateQueue(c);
  TaskId canceled = MustSubmit(Spec("q"));
  ASSERT_THAT(broker_->CancelTask(canceled), IsOk());
  TaskId dead = MakeDead("q");
  TaskSpec exp = Spec("q");
  exp.expires_at = Now() + absl::Seconds(1);
  TaskId expired = MustSubmit(exp);
  AdvanceAndTick(absl::Seconds(2));
  ASSERT_EQ(StateOf(expired), TaskState::kExpired);

  AdvanceAndTick(absl::Minutes(11));
  for (TaskId id : {canceled, dead, expired}) {
    EXPECT_THAT(broker_->GetTask(id), StatusIs(kNotFound)) << id.ToString();
  }
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_EQ(listener_.Count("dropped"), 3);
}

TEST_F(BrokerTest, LiveTasksAreNeverDroppedByResultTtl) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Minutes(1);
  c.lease_duration = absl::Hours(1);
  c.default_timeout = absl::Hours(2);
  MustCreateQueue(c);
  TaskId ready = MustSubmit(Spec("q"));
  TaskId running = MustSubmit(Spec("q"));
  // Lease the second one only: take both, hand the first back.
  std::vector<LeasedTask> got = LeaseNow({"q"}, 2);
  ASSERT_THAT(Ids(got), ElementsAre(ready, running));
  ASSERT_THAT(ReleaseOne(ready, got[0].token), IsOk());
  AdvanceAndTick(absl::Minutes(30));
  EXPECT_EQ(StateOf(ready), TaskState::kReady);
  EXPECT_EQ(StateOf(running), TaskState::kRunning);
  EXPECT_EQ(listener_.Count("dropped"), 0);
}

// ── Retained count ──

TEST_F(BrokerTest, AtMostRetainedEndedTasksPerQueueOldestEndedDroppedFirst) {
  QueueConfig c = Config("q");
  c.retained = 2;
  MustCreateQueue(c);
  TaskId a = MustSubmit(Spec("q"));
  TaskId b = MustSubmit(Spec("q"));
  TaskId d = MustSubmit(Spec("q"));
  TaskId other = MustSubmit(Spec("other"));
  std::vector<LeasedTask> got = LeaseNow({"q"}, 3);
  ASSERT_THAT(Ids(got), ElementsAre(a, b, d));
  ASSERT_THAT(CompleteOne(other, LeaseOne("other").token), IsOk());

  // End order: b, a, d (not submit order).
  ASSERT_THAT(CompleteOne(b, got[1].token), IsOk());
  clock_.Advance(absl::Seconds(1));
  ASSERT_THAT(CompleteOne(a, got[0].token), IsOk());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(listener_.Count("dropped"), 0);
  ASSERT_THAT(CompleteOne(d, got[2].token), IsOk());

  EXPECT_THAT(broker_->GetTask(b), StatusIs(kNotFound)) << "ended first, dropped first";
  EXPECT_THAT(broker_->GetTask(a), IsOk());
  EXPECT_THAT(broker_->GetTask(d), IsOk());
  EXPECT_THAT(broker_->GetTask(other), IsOk()) << "the bound is per queue";
  EXPECT_EQ(listener_.Count("dropped"), 1);
  EXPECT_EQ(listener_.Count("dropped", b), 1);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), 2u);
  EXPECT_EQ(broker_->task_count(), 3u);
}

TEST_F(BrokerTest, RetainedZeroDropsEachTaskAsItEnds) {
  // retained = 0 is a valid setting ("keep no results"): every call that
  // ends a task must still answer with the ended task, then forget it.
  QueueConfig c = Config("q");
  c.retained = 0;
  MustCreateQueue(c);
  TaskId a = MustSubmit(Spec("q", "t", "a"));
  absl::StatusOr<TaskInfo> canceled = broker_->CancelTask(a);
  ASSERT_THAT(canceled, IsOk());
  EXPECT_EQ(canceled->id, a);
  EXPECT_EQ(canceled->queue, "q");
  EXPECT_EQ(canceled->type, "t");
  EXPECT_EQ(canceled->state, TaskState::kCanceled);
  EXPECT_THAT(broker_->GetTask(a), StatusIs(kNotFound));

  TaskId b = MustSubmit(Spec("q"));
  ASSERT_THAT(CompleteOne(b, LeaseOne("q").token), IsOk());
  EXPECT_THAT(broker_->GetTask(b), StatusIs(kNotFound));
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_EQ(listener_.Count("dropped"), 2);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kCanceled), 0u);
  EXPECT_EQ(s.count(TaskState::kSucceeded), 0u);
}

// A task dropped by the retained-count bound leaves timers behind (its
// retention timer, its last lease check); they must not pile up until the
// result TTL, while the timers that still matter keep firing.
TEST_F(BrokerTest, TimersOfDroppedTasksDoNotPileUp) {
  QueueConfig c = Config("q");
  c.capacity = 1'000'000;
  c.retained = 10;
  c.result_ttl = absl::Hours(1);
  c.lease_duration = absl::Minutes(10);
  MustCreateQueue(c);
  TaskSpec later = Spec("q");
  later.not_before = Now() + absl::Minutes(5);
  TaskId delayed = MustSubmit(later);
  TaskId last_done;
  constexpr int kChurn = 50'000;  // each leaves a retention and a lease-check timer
  for (int i = 0; i < kChurn; ++i) {
    last_done = MustSubmit(Spec("q"));
    ASSERT_THAT(CompleteOne(last_done, LeaseOne("q").token), IsOk());
  }
  EXPECT_LT(broker_->timer_count(), 20'000u);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), 10u);

  AdvanceAndTick(absl::Minutes(6));  // the delayed task's timer survived the sweeps
  EXPECT_EQ(StateOf(delayed), TaskState::kReady);
  EXPECT_EQ(Get(last_done).result, "ok");
  AdvanceAndTick(absl::Minutes(55));  // and so did the retained tasks' TTL timers
  EXPECT_THAT(broker_->GetTask(last_done), StatusIs(kNotFound));
  EXPECT_EQ(broker_->task_count(), 1u);  // only the delayed task
}

// The result TTL is enforced at the front of the queue's end order with one
// timer: 20,000 kept results (under `retained`) add no timer each, and they
// still go in end order, each once its own TTL has passed.
TEST_F(BrokerTest, KeptResultsCostNoTimerEachAndExpireInEndOrder) {
  QueueConfig c = Config("q");
  c.capacity = 1'000'000;
  c.result_ttl = absl::Hours(1);
  MustCreateQueue(c);
  constexpr int kTasks = 20'000;
  std::vector<TaskId> ids;
  for (int i = 0; i < kTasks; ++i) {
    ids.push_back(MustSubmit(Spec("q")));
    ASSERT_THAT(CompleteOne(ids.back(), LeaseOne("q").token), IsOk());
    clock_.Advance(absl::Milliseconds(10));  // task i ends at i * 10 ms
  }
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), static_cast<uint64_t>(kTasks));
  // Lease checks of completed tasks wait for a sweep; none is a retention timer.
  EXPECT_LT(broker_->timer_count(), 10'000u);

  // The clock is at 200 s; task 9,999 ended at 99.99 s, task 10,000 at
  // 100 s. At 1 h + 99.995 s the first 10,000 are gone, the rest are kept.
  AdvanceAndTick(absl::Hours(1) - absl::Seconds(100) - absl::Milliseconds(5));
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), 10'000u);
  EXPECT_THAT(broker_->GetTask(ids[9'999]), StatusIs(kNotFound));
  EXPECT_THAT(broker_->GetTask(ids[10'000]), IsOk());
  EXPECT_EQ(listener_.Count("dropped", ids[0]), 1);
  AdvanceAndTick(absl::Seconds(101));
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), 0u);
  EXPECT_EQ(broker_->task_count(), 0u);
}

// A changed TTL applies to the results already kept, both ways.
TEST_F(BrokerTest, AChangedResultTtlAppliesToResultsAlreadyKept) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Hours(1);
  MustCreateQueue(c);
  TaskId shortened = MustSubmit(Spec("q"));
  ASSERT_THAT(CompleteOne(shortened, LeaseOne("q").token), IsOk());
  QueueUpdate u;
  u.result_ttl = absl::Minutes(10);
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  AdvanceAndTick(absl::Minutes(9));
  EXPECT_THAT(broker_->GetTask(shortened), IsOk());
  AdvanceAndTick(absl::Minutes(2));
  EXPECT_THAT(broker_->GetTask(shortened), StatusIs(kNotFound));

  TaskId lengthened = MustSubmit(Spec("q"));
  ASSERT_THAT(CompleteOne(lengthened, LeaseOne("q").token), IsOk());
  u.result_ttl = absl::Hours(2);
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  AdvanceAndTick(absl::Minutes(11));  // past the old 10 minutes, its timer fired
  EXPECT_THAT(broker_->GetTask(lengthened), IsOk());
  AdvanceAndTick(absl::Minutes(108));
  EXPECT_THAT(broker_->GetTask(lengthened), IsOk());
  AdvanceAndTick(absl::Minutes(2));
  EXPECT_THAT(broker_->GetTask(lengthened), StatusIs(kNotFound));
}

TEST_F(BrokerTest, LoweringRetainedDropsTheOldestEndedTasksAtOnce) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(MustSubmit(Spec("q")));
    ASSERT_THAT(broker_->CancelTask(ids.back()), IsOk());
    clock_.Advance(absl::Seconds(1));
  }
  QueueUpdate u;
  u.retained = 1;
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(broker_->GetTask(ids[i]), StatusIs(kNotFound)) << i;
  }
  EXPECT_THAT(broker_->GetTask(ids[3]), IsOk());
}

TEST_F(BrokerTest, RetainedBoundCountsDeadLettersAndCanceledTasksToo) {
  QueueConfig c = Config("q");
  c.retained = 1;
  MustCreateQueue(c);
  TaskId dead = MakeDead("q");
  TaskId canceled = MustSubmit(Spec("q"));
  ASSERT_THAT(broker_->CancelTask(canceled), IsOk());
  EXPECT_THAT(broker_->GetTask(dead), StatusIs(kNotFound));
  EXPECT_EQ(StateOf(canceled), TaskState::kCanceled);
  absl::StatusOr<TaskPage> dl = broker_->ListDeadLetters("q", 10, "");
  ASSERT_THAT(dl, IsOk());
  EXPECT_THAT(dl->tasks, IsEmpty());
}

TEST_F(BrokerTest, DroppedTaskReasonIsReportedToListener) {
  QueueConfig c = Config("q");
  c.retained = 1;
  c.result_ttl = absl::Minutes(1);
  MustCreateQueue(c);
  TaskId a = MustSubmit(Spec("q"));
  TaskId b = MustSubmit(Spec("q"));
  ASSERT_THAT(broker_->CancelTask(a), IsOk());
  ASSERT_THAT(broker_->CancelTask(b), IsOk());  // drops a: count bound
  AdvanceAndTick(absl::Minutes(2));            // drops b: TTL
  ASSERT_EQ(listener_.Count("dropped"), 2);
  std::string reason_a, reason_b;
  for (const ListenerEvent& e : listener_.events) {
    if (e.kind != "dropped") continue;
    (e.id == a ? reason_a : reason_b) = e.reason;
  }
  EXPECT_FALSE(reason_a.empty());
  EXPECT_FALSE(reason_b.empty());
  EXPECT_NE(reason_a, reason_b) << "count bound and TTL are different reasons";
}

// ── Idempotency keys live as long as the task's result ──

TEST_F(BrokerTest, IdempotencyKeyIsForgottenOnceItsTaskIsDroppedByTtl) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Minutes(5);
  MustCreateQueue(c);
  TaskSpec spec = Spec("q");
  spec.idempotency_key = "once";
  TaskId first = MustSubmit(spec);
  ASSERT_THAT(CompleteOne(first, LeaseOne("q").token), IsOk());
  AdvanceAndTick(absl::Minutes(4));
  absl::StatusOr<SubmitResult> dup = broker_->SubmitNow(spec);
  ASSERT_THAT(dup, IsOk());
  EXPECT_TRUE(dup->deduplicated);

  AdvanceAndTick(absl::Minutes(2));
  ASSERT_THAT(broker_->GetTask(first), StatusIs(kNotFound));
  absl::StatusOr<SubmitResult> fresh = broker_->SubmitNow(spec);
  ASSERT_THAT(fresh, IsOk());
  EXPECT_FALSE(fresh->deduplicated);
  EXPECT_NE(fresh->task.id, first);
  EXPECT_EQ(fresh->task.state, TaskState::kReady);
}

TEST_F(BrokerTest, IdempotencyKeyIsForgottenOnceItsTaskIsDroppedByCount) {
  QueueConfig c = Config("q");
  c.retained = 1;
  MustCreateQueue(c);
  TaskSpec spec = Spec("q");
  spec.idempotency_key = "k";
  TaskId first = MustSubmit(spec);
  ASSERT_THAT(broker_->CancelTask(first), IsOk());
  TaskId pusher = MustSubmit(Spec("q"));
  ASSERT_THAT(broker_->CancelTask(pusher), IsOk());  // drops `first`
  ASSERT_THAT(broker_->GetTask(first), StatusIs(kNotFound));
  absl::StatusOr<SubmitResult> fresh = broker_->SubmitNow(spec);
  ASSERT_THAT(fresh, IsOk());
  EXPECT_FALSE(fresh->deduplicated);
}

TEST_F(BrokerTest, PurgedTaskForgetsItsIdempotencyKey) {
  TaskSpec spec = Spec();
  spec.idempotency_key = "k";
  TaskId first = MustSubmit(spec);
  ASSERT_THAT(broker_->PurgeQueue("q"), IsOk());
  absl::StatusOr<SubmitResult> again = broker_->SubmitNow(spec);
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->deduplicated) << "the purged task is gone";
  EXPECT_NE(again->task.id, first);
}

// ── Dead letters ──

TEST_F(BrokerTest, ListDeadLettersPagesThroughDeadTasksOnly) {
  std::vector<TaskId> dead;
  for (int i = 0; i < 5; ++i) {
    dead.push_back(MakeDead());
    TaskId ok = MustSubmit(Spec());
    ASSERT_THAT(CompleteOne(ok, LeaseOne().token), IsOk());
  }
  std::vector<TaskId> seen;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<TaskPage> page = broker_->ListDeadLetters("q", 2, token);
    ASSERT_THAT(page, IsOk());
    EXPECT_LE(page->tasks.size(), 2u);
    for (const TaskInfo& t : page->tasks) {
      EXPECT_EQ(t.state, TaskState::kDead);
      EXPECT_EQ(t.error, "boom");
      seen.push_back(t.id);
    }
    token = page->next_page_token;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(seen, dead);
  EXPECT_EQ(pages, 3);
}

TEST_F(BrokerTest, RequeueAllDeadLettersMakesThemReadyWithFreshAttempts) {
  std::vector<TaskId> dead;
  std::vector<uint64_t> tokens;
  for (int i = 0; i < 3; ++i) {
    dead.push_back(MakeDead());
    tokens.push_back(Get(dead.back()).token);
  }
  absl::StatusOr<uint64_t> n = broker_->RequeueDeadLetters("q", {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 3u);
  for (TaskId id : dead) {
    TaskInfo t = Get(id);
    EXPECT_EQ(t.state, TaskState::kReady);
    EXPECT_EQ(t.attempts, 0u);
  }
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kDead), 0u);
  EXPECT_EQ(s.count(TaskState::kReady), 3u);
  absl::StatusOr<TaskPage> dl = broker_->ListDeadLetters("q", 10, "");
  ASSERT_THAT(dl, IsOk());
  EXPECT_THAT(dl->tasks, IsEmpty());

  std::vector<LeasedTask> got = LeaseNow({"q"}, 3);
  ASSERT_THAT(Ids(got), ElementsAre(dead[0], dead[1], dead[2]));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].attempt, 1u);
    EXPECT_GT(got[i].token, tokens[i]) << "tokens are never issued twice";
  }
  ASSERT_THAT(CompleteOne(got[0].id, got[0].token, "second life"), IsOk());
  EXPECT_EQ(StateOf(dead[0]), TaskState::kSucceeded);
}

TEST_F(BrokerTest, RequeueDeadLettersByIdSkipsUnknownAndNonDeadIds) {
  TaskId d1 = MakeDead();
  TaskId d2 = MakeDead();
  TaskId ok = MustSubmit(Spec());
  ASSERT_THAT(CompleteOne(ok, LeaseOne().token), IsOk());
  TaskId ready = MustSubmit(Spec());
  absl::StatusOr<uint64_t> n =
      broker_->RequeueDeadLetters("q", {d2, ok, ready, TaskId(999999)});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(StateOf(d1), TaskState::kDead);
  EXPECT_EQ(StateOf(d2), TaskState::kReady);
  EXPECT_EQ(StateOf(ok), TaskState::kSucceeded);
  EXPECT_EQ(StateOf(ready), TaskState::kReady);
}

TEST_F(BrokerTest, RequeueDeadLettersOnlyTouchesTheNamedQueue) {
  TaskId here = MakeDead("a");
  TaskId there = MakeDead("b");
  absl::StatusOr<uint64_t> n = broker_->RequeueDeadLetters("a", {here, there});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(StateOf(here), TaskState::kReady);
  EXPECT_EQ(StateOf(there), TaskState::kDead);
}

TEST_F(BrokerTest, RequeuedDeadLetterGetsAFreshCrashBudget) {
  // "Moves dead tasks back to READY with fresh attempts": a task that died of
  // crashes gets its crash budget back too, or it would die at the next one.
  QueueConfig c = Config("q");
  c.max_crashes = 1;
  MustCreateQueue(c);
  TaskId id = MustSubmit(Spec("q"));
  LeaseOne("q");
  AdvanceAndTick(kLease + absl::Seconds(1));
  ASSERT_EQ(StateOf(id), TaskState::kDead);
  ASSERT_THAT(broker_->RequeueDeadLetters("q", {}), IsOk());
  EXPECT_EQ(Get(id).crashes, 0u);
}

TEST_F(BrokerTest, RequeuedDeadLetterIsNotDroppedByItsOldResultTtl) {
  QueueConfig c = Config("q");
  c.result_ttl = absl::Hours(1);
  MustCreateQueue(c);
  TaskId id = MakeDead("q");
  AdvanceAndTick(absl::Minutes(50));
  ASSERT_THAT(broker_->RequeueDeadLetters("q", {id}), IsOk());
  AdvanceAndTick(absl::Minutes(20));  // the old end is now 70 min ago
  EXPECT_THAT(broker_->GetTask(id), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_EQ(listener_.Count("dropped", id), 0);
  EXPECT_EQ(LeaseOne("q").id, id);
}

TEST_F(BrokerTest, TaskRequeuedAfterDyingWhileReadyDoesNotJumpTheQueueLater) {
  // The task's lease expires (READY again), then its worker's late
  // non-retryable Fail (current token) ends it DEAD while it is READY, then an
  // operator requeues it. Later, once handed back, it must queue behind a task
  // that became ready before the hand-back ("oldest first within a priority").
  TaskId t = MustSubmit(Spec());
  LeasedTask l1 = LeaseOne();
  AdvanceAndTick(kLease + absl::Seconds(1));
  ASSERT_EQ(StateOf(t), TaskState::kReady);
  ASSERT_THAT(FailOne(t, l1.token, /*retryable=*/false), IsOk());
  ASSERT_EQ(StateOf(t), TaskState::kDead);
  clock_.Advance(absl::Seconds(1));
  ASSERT_THAT(broker_->RequeueDeadLetters("q", {t}), IsOk());
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::ZeroDuration())
      << "ready since the requeue, just now";
  LeasedTask l2 = LeaseOne();
  ASSERT_EQ(l2.id, t);

  clock_.Advance(absl::Seconds(1));
  TaskId u = MustSubmit(Spec());  // ready before t comes back
  clock_.Advance(absl::Seconds(1));
  ASSERT_THAT(ReleaseOne(t, l2.token), IsOk());
  EXPECT_EQ(LeaseOne().id, u);
  EXPECT_EQ(LeaseOne().id, t);
}

TEST_F(BrokerTest, PurgeAllDeadLettersRemovesThem) {
  TaskId d1 = MakeDead();
  TaskId d2 = MakeDead();
  TaskId ok = MustSubmit(Spec());
  ASSERT_THAT(CompleteOne(ok, LeaseOne().token), IsOk());
  absl::StatusOr<uint64_t> n = broker_->PurgeDeadLetters("q", {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 2u);
  EXPECT_THAT(broker_->GetTask(d1), StatusIs(kNotFound));
  EXPECT_THAT(broker_->GetTask(d2), StatusIs(kNotFound));
  EXPECT_EQ(StateOf(ok), TaskState::kSucceeded);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kDead), 0u);
  EXPECT_EQ(listener_.Count("dropped", d1), 1);
  absl::StatusOr<TaskPage> dl = broker_->ListDeadLetters("q", 10, "");
  ASSERT_THAT(dl, IsOk());
  EXPECT_THAT(dl->tasks, IsEmpty());
}

TEST_F(BrokerTest, PurgeDeadLettersByIdRemovesOnlyThose) {
  TaskId d1 = MakeDead();
  TaskId d2 = MakeDead();
  TaskId ok = MustSubmit(Spec());
  ASSERT_THAT(CompleteOne(ok, LeaseOne().token), IsOk());
  absl::StatusOr<uint64_t> n = broker_->PurgeDeadLetters("q", {d1, ok, TaskId(424242)});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 1u);
  EXPECT_THAT(broker_->GetTask(d1), StatusIs(kNotFound));
  EXPECT_EQ(StateOf(d2), TaskState::kDead);
  EXPECT_EQ(StateOf(ok), TaskState::kSucceeded);
}

// ── Listener ──

TEST_F(BrokerTest, ListenerSeesEveryTransitionOnce) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 2;
  spec.retry.initial_backoff = absl::Seconds(1);
  spec.retry.jitter = 0;
  TaskId id = MustSubmit(spec);
  LeaseOne();                                 // dispatched 1
  AdvanceAndTick(kLease + absl::Seconds(1));  // lease expired
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());  // dispatched 2, retried
  AdvanceAndTick(absl::Seconds(1));
  ASSERT_THAT(CompleteOne(id, LeaseOne().token), IsOk());  // dispatched 3, ended
  EXPECT_EQ(listener_.Count("submitted", id), 1);
  EXPECT_EQ(listener_.Count("dispatched", id), 3);
  EXPECT_EQ(listener_.Count("lease_expired", id), 1);
  EXPECT_EQ(listener_.Count("retried", id), 1);
  EXPECT_EQ(listener_.Count("ended", id), 1);
  EXPECT_EQ(listener_.Count("dropped", id), 0);
  for (const ListenerEvent& e : listener_.events) {
    if (e.kind == "ended") {
      EXPECT_EQ(e.state, TaskState::kSucceeded) << "the listener sees the new state";
    }
    if (e.kind == "dispatched") {
      EXPECT_EQ(e.state, TaskState::kRunning);
    }
  }
}

TEST_F(BrokerTest, BrokerWorksWithoutAListener) {
  Broker b(BrokerOptions(), &clock_);
  absl::StatusOr<SubmitResult> r = b.SubmitNow(Spec());
  ASSERT_THAT(r, IsOk());
  auto cap = std::make_shared<LeaseCapture>();
  b.Lease(LeaseRequest{"w", {"q"}, {}, 1, absl::ZeroDuration()}, Capture(cap));
  ASSERT_TRUE(cap->done());
  ASSERT_THAT(*cap->result, IsOk());
  ASSERT_THAT(cap->tasks(), SizeIs(1));
  EXPECT_THAT(b.Complete({CompleteItem{r->task.id, cap->tasks()[0].token, ""}}),
              ElementsAre(IsOk()));
}

}  // namespace
}  // namespace conveyor::server::broker_test
