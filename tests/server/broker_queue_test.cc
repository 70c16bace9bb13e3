// Queues: administration (create, update, get, list, pause, resume, purge),
// capacity with the REJECT and WAIT policies, live stats and ListTasks.
#include <string>
#include <vector>

#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ── Create / get / list / update ──

TEST_F(BrokerTest, CreateQueueStoresConfigAndStartsEmpty) {
  QueueConfig c = Config("jobs");
  c.capacity = 10;
  c.full_policy = FullPolicy::kWait;
  c.lease_duration = absl::Seconds(12);
  c.max_crashes = 5;
  c.retry.max_attempts = 9;
  absl::StatusOr<QueueInfo> q = broker_->CreateQueue(c, /*paused=*/false);
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->config.name, "jobs");
  EXPECT_EQ(q->config.capacity, 10u);
  EXPECT_EQ(q->config.full_policy, FullPolicy::kWait);
  EXPECT_EQ(q->config.lease_duration, absl::Seconds(12));
  EXPECT_EQ(q->config.max_crashes, 5u);
  EXPECT_EQ(q->config.retry.max_attempts, 9u);
  EXPECT_FALSE(q->paused);
  for (uint64_t n : q->stats.by_state) EXPECT_EQ(n, 0u);

  QueueInfo g = GetQueue("jobs");
  EXPECT_EQ(g.config.capacity, 10u);
  EXPECT_EQ(g.config.lease_duration, absl::Seconds(12));
}

TEST_F(BrokerTest, CreateExistingQueueIsAlreadyExists) {
  MustCreateQueue(Config("q"));
  QueueConfig again = Config("q");
  again.capacity = 1;
  EXPECT_THAT(broker_->CreateQueue(again, false),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(GetQueue("q").config.capacity, 100'000u) << "the first config stays";
}

TEST_F(BrokerTest, CreateAutoCreatedQueueIsAlreadyExists) {
  MustSubmit(Spec("q"));
  EXPECT_THAT(broker_->CreateQueue(Config("q"), false),
              StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(BrokerTest, CreateQueueWithInvalidConfigIsInvalidArgument) {
  QueueConfig bad_name = Config("no spaces");
  EXPECT_THAT(broker_->CreateQueue(bad_name, false),
              StatusIs(absl::StatusCode::kInvalidArgument, "queue"));
  QueueConfig bad_cap = Config("q");
  bad_cap.capacity = 0;
  EXPECT_THAT(broker_->CreateQueue(bad_cap, false),
              StatusIs(absl::StatusCode::kInvalidArgument, "capacity"));
  QueueConfig bad_lease = Config("q");
  bad_lease.lease_duration = absl::Milliseconds(10);
  EXPECT_THAT(broker_->CreateQueue(bad_lease, false),
              StatusIs(absl::StatusCode::kInvalidArgument, "lease_duration"));
  QueueConfig bad_retry = Config("q");
  bad_retry.retry.jitter = 2;
  EXPECT_THAT(broker_->CreateQueue(bad_retry, false),
              StatusIs(absl::StatusCode::kInvalidArgument, "jitter"));
  EXPECT_THAT(broker_->ListQueues(), IsEmpty());
}

TEST_F(BrokerTest, CreateQueuePastMaxQueuesIsResourceExhausted) {
  BrokerOptions o;
  o.max_queues = 2;
  Reset(o);
  MustCreateQueue(Config("a"));
  MustCreateQueue(Config("b"));
  EXPECT_THAT(broker_->CreateQueue(Config("c"), false),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(broker_->ListQueues(), SizeIs(2));
}

TEST_F(BrokerTest, ListQueuesIsSortedByName) {
  MustCreateQueue(Config("zeta"));
  MustSubmit(Spec("alpha"));
  MustCreateQueue(Config("Mid"));
  MustSubmit(Spec("beta"));
  std::vector<std::string> names;
  for (const QueueInfo& q : broker_->ListQueues()) names.push_back(q.config.name);
  EXPECT_THAT(names, ElementsAre("Mid", "alpha", "beta", "zeta"));
}

TEST_F(BrokerTest, ListQueuesCarriesLiveStats) {
  MustSubmit(Spec("a"));
  MustSubmit(Spec("a"));
  MustSubmit(Spec("b"));
  std::vector<QueueInfo> qs = broker_->ListQueues();
  ASSERT_THAT(qs, SizeIs(2));
  EXPECT_EQ(qs[0].stats.count(TaskState::kReady), 2u);
  EXPECT_EQ(qs[1].stats.count(TaskState::kReady), 1u);
}

TEST_F(BrokerTest, UpdateQueueChangesOnlyTheGivenFields) {
  QueueConfig c = Config("q");
  c.capacity = 10;
  c.max_crashes = 4;
  MustCreateQueue(c);
  QueueUpdate u;
  u.lease_duration = absl::Seconds(90);
  u.retained = 7;
  absl::StatusOr<QueueInfo> q = broker_->UpdateQueue("q", u);
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->config.lease_duration, absl::Seconds(90));
  EXPECT_EQ(q->config.retained, 7u);
  EXPECT_EQ(q->config.capacity, 10u);
  EXPECT_EQ(q->config.max_crashes, 4u);
  EXPECT_EQ(GetQueue("q").config.lease_duration, absl::Seconds(90));

  // The new lease duration applies to the next lease.
  MustSubmit(Spec("q"));
  EXPECT_EQ(LeaseOne("q").lease_expires_at, Now() + absl::Seconds(90));
}

TEST_F(BrokerTest, UpdateQueueRetryAppliesToTasksWithoutOverride) {
  MustCreateQueue(Config("q"));
  TaskId id = MustSubmit(Spec("q"));
  QueueUpdate u;
  RetryOverride r;
  r.max_attempts = 8;
  u.retry = r;
  absl::StatusOr<QueueInfo> q = broker_->UpdateQueue("q", u);
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->config.retry.max_attempts, 8u);
  EXPECT_EQ(q->config.retry.initial_backoff, absl::Seconds(1))
      << "the override applies to the current policy; other fields stay";
  // Defaults are held by reference, not copied into each task.
  EXPECT_EQ(Get(id).max_attempts, 8u);
}

TEST_F(BrokerTest, UpdateQueueWithInvalidValueIsInvalidArgumentAndKeepsConfig) {
  QueueConfig c = Config("q");
  c.capacity = 10;
  MustCreateQueue(c);
  QueueUpdate u;
  u.capacity = 0;
  u.lease_duration = absl::Seconds(60);
  EXPECT_THAT(broker_->UpdateQueue("q", u),
              StatusIs(absl::StatusCode::kInvalidArgument, "capacity"));
  QueueInfo q = GetQueue("q");
  EXPECT_EQ(q.config.capacity, 10u);
  EXPECT_EQ(q.config.lease_duration, absl::Seconds(30)) << "no partial update";
}

TEST_F(BrokerTest, AdminCallsOnUnknownQueueAreNotFound) {
  constexpr absl::StatusCode kNotFound = absl::StatusCode::kNotFound;
  EXPECT_THAT(broker_->GetQueue("nope"), StatusIs(kNotFound));
  EXPECT_THAT(broker_->UpdateQueue("nope", QueueUpdate()), StatusIs(kNotFound));
  EXPECT_THAT(broker_->PauseQueue("nope"), StatusIs(kNotFound));
  EXPECT_THAT(broker_->ResumeQueue("nope"), StatusIs(kNotFound));
  EXPECT_THAT(broker_->PurgeQueue("nope"), StatusIs(kNotFound));
  EXPECT_THAT(broker_->ListTasks("nope", std::nullopt, 10, ""), StatusIs(kNotFound));
  EXPECT_THAT(broker_->ListDeadLetters("nope", 10, ""), StatusIs(kNotFound));
  EXPECT_THAT(broker_->RequeueDeadLetters("nope", {}), StatusIs(kNotFound));
  EXPECT_THAT(broker_->PurgeDeadLetters("nope", {}), StatusIs(kNotFound));
  EXPECT_THAT(broker_->ListQueues(), IsEmpty()) << "admin calls create nothing";
}

// ── Pause / resume ──

TEST_F(BrokerTest, PausedQueueAcceptsSubmitsAndLeasesNothing) {
  MustCreateQueue(Config("q"));
  absl::StatusOr<QueueInfo> p = broker_->PauseQueue("q");
  ASSERT_THAT(p, IsOk());
  EXPECT_TRUE(p->paused);
  TaskId id = MustSubmit(Spec("q"));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_THAT(LeaseNow({"q"}, 10), IsEmpty());
  EXPECT_TRUE(GetQueue("q").paused);

  absl::StatusOr<QueueInfo> r = broker_->ResumeQueue("q");
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->paused);
  EXPECT_EQ(LeaseOne("q").id, id);
}

TEST_F(BrokerTest, QueueCreatedPausedLeasesNothing) {
  MustCreateQueue(Config("q"), /*paused=*/true);
  EXPECT_TRUE(GetQueue("q").paused);
  MustSubmit(Spec("q"));
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(BrokerTest, PausedQueueDoesNotBlockOtherQueuesInTheSameLease) {
  MustSubmit(Spec("a"));
  TaskId b = MustSubmit(Spec("b"));
  ASSERT_THAT(broker_->PauseQueue("a"), IsOk());
  std::vector<LeasedTask> got = LeaseNow({"a", "b"}, 10);
  EXPECT_THAT(Ids(got), ElementsAre(b));
}

TEST_F(BrokerTest, ResumeServesParkedLongPoll) {
  MustCreateQueue(Config("q"), /*paused=*/true);
  TaskId id = MustSubmit(Spec("q"));
  auto poll = LeaseWait({"q"}, absl::Seconds(20));
  EXPECT_FALSE(poll->done()) << "paused: the long-poll parks";
  ASSERT_THAT(broker_->ResumeQueue("q"), IsOk());
  ASSERT_TRUE(poll->done()) << "resuming must hand the ready task to the parked lease";
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id));
}

TEST_F(BrokerTest, PausedQueueStillTimesOutParkedLongPoll) {
  MustCreateQueue(Config("q"), /*paused=*/true);
  MustSubmit(Spec("q"));
  auto poll = LeaseWait({"q"}, absl::Seconds(5));
  AdvanceAndTick(absl::Seconds(5));
  ASSERT_TRUE(poll->done());
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(poll->tasks(), IsEmpty());
}

// ── Purge ──

TEST_F(BrokerTest, PurgeRemovesScheduledAndReadyAndLeavesRunning) {
  TaskId running = MustSubmit(Spec("q"));
  LeasedTask l = LeaseOne("q");
  ASSERT_EQ(l.id, running);
  TaskId ready1 = MustSubmit(Spec("q"));
  TaskId ready2 = MustSubmit(Spec("q"));
  TaskSpec delayed = Spec("q");
  delayed.not_before = Now() + absl::Minutes(1);
  TaskId scheduled = MustSubmit(delayed);

  absl::StatusOr<uint64_t> n = broker_->PurgeQueue("q");
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 3u);

  for (TaskId id : {ready1, ready2, scheduled}) {
    EXPECT_THAT(broker_->GetTask(id), StatusIs(absl::StatusCode::kNotFound))
        << "purged tasks are removed";
  }
  QueueInfo q = GetQueue("q");
  EXPECT_EQ(q.stats.count(TaskState::kReady), 0u);
  EXPECT_EQ(q.stats.count(TaskState::kScheduled), 0u);
  EXPECT_EQ(q.stats.count(TaskState::kRunning), 1u);
  EXPECT_EQ(StateOf(running), TaskState::kRunning);
  EXPECT_EQ(broker_->task_count(), 1u);

  // The running task can still finish.
  EXPECT_THAT(CompleteOne(running, l.token), IsOk());
  EXPECT_EQ(StateOf(running), TaskState::kSucceeded);
  // The delayed task does not come back when its time arrives.
  AdvanceAndTick(absl::Minutes(2));
  EXPECT_THAT(LeaseNow({"q"}, 10), IsEmpty());
}

TEST_F(BrokerTest, PurgeLeavesEndedTasks) {
  TaskId done = MustSubmit(Spec("q"));
  ASSERT_THAT(CompleteOne(done, LeaseOne().token), IsOk());
  MustSubmit(Spec("q"));
  absl::StatusOr<uint64_t> n = broker_->PurgeQueue("q");
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(StateOf(done), TaskState::kSucceeded);
}

TEST_F(BrokerTest, PurgeOfEmptyQueueIsZero) {
  MustCreateQueue(Config("q"));
  absl::StatusOr<uint64_t> n = broker_->PurgeQueue("q");
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
}

// ── Capacity: REJECT ──

TEST_F(BrokerTest, FullQueueRejectsWithResourceExhaustedNamingQueueAndCapacity) {
  QueueConfig c = Config("small-queue");
  c.capacity = 37;
  MustCreateQueue(c);
  for (int i = 0; i < 37; ++i) MustSubmit(Spec("small-queue"));
  const size_t before = broker_->task_count();
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(Spec("small-queue"));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kResourceExhausted, "small-queue"));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kResourceExhausted, "37"));
  EXPECT_EQ(broker_->task_count(), before);
  EXPECT_EQ(GetQueue("small-queue").stats.count(TaskState::kReady), 37u);

  // The Submit form with the REJECT policy answers at once, the same way.
  auto cap = std::make_shared<SubmitCapture>();
  EXPECT_EQ(broker_->Submit(Spec("small-queue"), Now() + absl::Minutes(1), Capture(cap)),
            0u);
  ASSERT_TRUE(cap->done());
  EXPECT_THAT(*cap->result, StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(BrokerTest, CapacityCountsOnlyNonTerminalTasks) {
  QueueConfig c = Config("q");
  c.capacity = 2;
  MustCreateQueue(c);
  TaskId a = MustSubmit(Spec("q"));
  TaskSpec delayed = Spec("q");
  delayed.not_before = Now() + absl::Hours(1);
  MustSubmit(delayed);  // SCHEDULED counts too
  EXPECT_THAT(broker_->SubmitNow(Spec("q")),
              StatusIs(absl::StatusCode::kResourceExhausted));

  LeasedTask l = LeaseOne("q");
  ASSERT_EQ(l.id, a);
  EXPECT_THAT(broker_->SubmitNow(Spec("q")),
              StatusIs(absl::StatusCode::kResourceExhausted))
      << "RUNNING counts";
  ASSERT_THAT(CompleteOne(a, l.token), IsOk());
  MustSubmit(Spec("q"));  // room again: SUCCEEDED does not count
  EXPECT_THAT(broker_->SubmitNow(Spec("q")),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(BrokerTest, CanceledTaskFreesCapacity) {
  QueueConfig c = Config("q");
  c.capacity = 1;
  MustCreateQueue(c);
  TaskId a = MustSubmit(Spec("q"));
  ASSERT_THAT(broker_->CancelTask(a), IsOk());
  MustSubmit(Spec("q"));
}

TEST_F(BrokerTest, LoweringCapacityKeepsQueuedTasksAndRejectsNewOnes) {
  MustCreateQueue(Config("q"));
  for (int i = 0; i < 3; ++i) MustSubmit(Spec("q"));
  QueueUpdate u;
  u.capacity = 1;
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kReady), 3u);
  EXPECT_THAT(broker_->SubmitNow(Spec("q")),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(LeaseNow({"q"}, 10), SizeIs(3));
}

// ── Capacity: WAIT ──

class WaitPolicyTest : public BrokerTest {
 protected:
  void SetUp() override {
    QueueConfig c = Config("q");
    c.capacity = 1;
    c.full_policy = FullPolicy::kWait;
    MustCreateQueue(c);
    first_ = MustSubmit(Spec("q", "t", "first"));
  }
  TaskId first_;
};

TEST_F(WaitPolicyTest, SubmitToFullQueueParksUntilATaskEnds) {
  auto cap = std::make_shared<SubmitCapture>();
  WaitId w = broker_->Submit(Spec("q", "t", "second"), Now() + absl::Minutes(1),
                             Capture(cap));
  EXPECT_NE(w, 0u);
  EXPECT_FALSE(cap->done()) << "parked while the queue is full";
  EXPECT_EQ(broker_->task_count(), 1u);

  LeasedTask l = LeaseOne("q");
  EXPECT_FALSE(cap->done()) << "a RUNNING task still takes room";
  clock_.Advance(absl::Seconds(5));
  broker_->Tick();
  EXPECT_FALSE(cap->done());

  ASSERT_THAT(CompleteOne(first_, l.token), IsOk());
  ASSERT_EQ(cap->calls, 1);
  ASSERT_THAT(*cap->result, IsOk());
  const TaskInfo& t = (*cap->result)->task;
  EXPECT_EQ(Get(t.id).payload, "second");
  EXPECT_EQ(t.state, TaskState::kReady);
  EXPECT_EQ(LeaseOne("q").id, t.id);

  // CancelWait after it ran changes nothing.
  broker_->CancelWait(w);
  EXPECT_EQ(cap->calls, 1);
}

TEST_F(WaitPolicyTest, ParkedSubmitEndsDeadlineExceededAtItsDeadline) {
  auto cap = std::make_shared<SubmitCapture>();
  WaitId w = broker_->Submit(Spec("q"), Now() + absl::Seconds(10), Capture(cap));
  EXPECT_NE(w, 0u);
  AdvanceAndTick(absl::Seconds(9));
  EXPECT_FALSE(cap->done());
  EXPECT_EQ(GetQueue("q").stats.waiting_submits, 1u);
  AdvanceAndTick(absl::Seconds(2));
  ASSERT_EQ(cap->calls, 1);
  EXPECT_THAT(*cap->result, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(GetQueue("q").stats.waiting_submits, 0u);
  EXPECT_EQ(broker_->task_count(), 1u);

  // Room appearing later does not resurrect it.
  ASSERT_THAT(broker_->CancelTask(first_), IsOk());
  EXPECT_EQ(cap->calls, 1);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(WaitPolicyTest, CancelWaitEndsParkedSubmitWithCancelled) {
  auto cap = std::make_shared<SubmitCapture>();
  WaitId w = broker_->Submit(Spec("q"), Now() + absl::Minutes(1), Capture(cap));
  ASSERT_NE(w, 0u);
  EXPECT_EQ(GetQueue("q").stats.waiting_submits, 1u);
  broker_->CancelWait(w);
  ASSERT_EQ(cap->calls, 1);
  EXPECT_THAT(*cap->result, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(GetQueue("q").stats.waiting_submits, 0u);

  // Neither room nor the deadline calls it again; nothing was enqueued.
  ASSERT_THAT(broker_->CancelTask(first_), IsOk());
  AdvanceAndTick(absl::Minutes(2));
  EXPECT_EQ(cap->calls, 1);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kReady), 0u);
}

TEST_F(WaitPolicyTest, ParkedSubmitsAreServedInArrivalOrder) {
  auto a = std::make_shared<SubmitCapture>();
  auto b = std::make_shared<SubmitCapture>();
  broker_->Submit(Spec("q", "t", "a"), Now() + absl::Minutes(1), Capture(a));
  broker_->Submit(Spec("q", "t", "b"), Now() + absl::Minutes(1), Capture(b));
  EXPECT_EQ(GetQueue("q").stats.waiting_submits, 2u);
  ASSERT_THAT(broker_->CancelTask(first_), IsOk());  // room for one
  ASSERT_TRUE(a->done());
  EXPECT_FALSE(b->done());
  EXPECT_EQ(GetQueue("q").stats.waiting_submits, 1u);
  ASSERT_THAT(*a->result, IsOk());
  EXPECT_EQ(Get((*a->result)->task.id).payload, "a");
  LeasedTask l = LeaseOne("q");
  ASSERT_THAT(CompleteOne(l.id, l.token), IsOk());
  ASSERT_TRUE(b->done());
  ASSERT_THAT(*b->result, IsOk());
  EXPECT_EQ(Get((*b->result)->task.id).payload, "b");
}

TEST_F(WaitPolicyTest, SubmitNowToFullWaitQueueIsResourceExhausted) {
  EXPECT_THAT(broker_->SubmitNow(Spec("q")),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(WaitPolicyTest, PurgeMakesRoomForParkedSubmit) {
  auto cap = std::make_shared<SubmitCapture>();
  broker_->Submit(Spec("q"), Now() + absl::Minutes(1), Capture(cap));
  ASSERT_FALSE(cap->done());
  ASSERT_THAT(broker_->PurgeQueue("q"), IsOk());
  ASSERT_TRUE(cap->done());
  EXPECT_THAT(*cap->result, IsOk());
}

TEST_F(WaitPolicyTest, RaisingCapacityMakesRoomForParkedSubmit) {
  // "Parks until there is room": more capacity is room.
  auto cap = std::make_shared<SubmitCapture>();
  broker_->Submit(Spec("q"), Now() + absl::Minutes(1), Capture(cap));
  ASSERT_FALSE(cap->done());
  QueueUpdate u;
  u.capacity = 2;
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  ASSERT_TRUE(cap->done());
  EXPECT_THAT(*cap->result, IsOk());
}

TEST_F(WaitPolicyTest, InvalidSpecIsRejectedAtOnceEvenWhenQueueIsFull) {
  auto cap = std::make_shared<SubmitCapture>();
  TaskSpec bad = Spec("q");
  bad.priority = 12;
  EXPECT_EQ(broker_->Submit(bad, Now() + absl::Minutes(1), Capture(cap)), 0u);
  ASSERT_TRUE(cap->done());
  EXPECT_THAT(*cap->result, StatusIs(absl::StatusCode::kInvalidArgument, "priority"));
}

// ── Stats ──

TEST_F(BrokerTest, QueueStatsCountTasksPerState) {
  MustSubmit(Spec("q"));
  TaskSpec delayed = Spec("q");
  delayed.not_before = Now() + absl::Minutes(1);
  MustSubmit(delayed);
  TaskId run = MustSubmit(Spec("q"));
  TaskId done = MustSubmit(Spec("q"));
  TaskId canceled = MustSubmit(Spec("q"));
  ASSERT_THAT(broker_->CancelTask(canceled), IsOk());
  std::vector<LeasedTask> got = LeaseNow({"q"}, 3);
  ASSERT_THAT(got, SizeIs(3));
  for (const LeasedTask& l : got) {
    if (l.id == done) {
      ASSERT_THAT(CompleteOne(done, l.token), IsOk());
    }
  }
  (void)run;
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kScheduled), 1u);
  EXPECT_EQ(s.count(TaskState::kReady), 0u);
  EXPECT_EQ(s.count(TaskState::kRunning), 2u);
  EXPECT_EQ(s.count(TaskState::kSucceeded), 1u);
  EXPECT_EQ(s.count(TaskState::kCanceled), 1u);
  EXPECT_EQ(broker_->running_count(), 2u);
}

TEST_F(BrokerTest, OldestReadyAgeGrowsWithTheClock) {
  MustCreateQueue(Config("q"));
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::ZeroDuration());
  MustSubmit(Spec("q"));
  clock_.Advance(absl::Seconds(3));
  MustSubmit(Spec("q"));
  clock_.Advance(absl::Seconds(4));
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::Seconds(7));
  LeaseOne("q");
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::Seconds(4));
  LeaseOne("q");
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::ZeroDuration());
}

// The oldest READY task, whatever is at the front of its lane: a canceled
// front (stale), and a lane mixing priorities (the front is the best
// priority, not the oldest).
TEST_F(BrokerTest, OldestReadyAgeSkipsCanceledFrontsAndSeesPastPriorities) {
  MustCreateQueue(Config("q"));
  const TaskId first = MustSubmit(Spec("q"));
  clock_.Advance(absl::Seconds(2));
  const TaskId second = MustSubmit(Spec("q"));
  clock_.Advance(absl::Seconds(3));
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::Seconds(5));
  ASSERT_TRUE(broker_->CancelTask(first).ok());
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::Seconds(3));
  ASSERT_TRUE(broker_->CancelTask(second).ok());
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::ZeroDuration());

  // One lane, low priority first, then a higher one in front of it.
  TaskSpec low = Spec("q");
  low.priority = 1;
  MustSubmit(low);
  clock_.Advance(absl::Seconds(10));
  TaskSpec high = Spec("q");
  high.priority = 8;
  const TaskId high_id = MustSubmit(high);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::Seconds(11));
  EXPECT_EQ(LeaseOne("q").id, high_id);
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::Seconds(11));
  LeaseOne("q");
  EXPECT_EQ(GetQueue("q").stats.oldest_ready_age, absl::ZeroDuration());
}

TEST_F(BrokerTest, WaitingWorkersCountsParkedLeases) {
  MustCreateQueue(Config("q"));
  auto a = LeaseWait({"q"}, absl::Seconds(10));
  auto b = LeaseWait({"q"}, absl::Seconds(10));
  EXPECT_EQ(GetQueue("q").stats.waiting_workers, 2u);
  MustSubmit(Spec("q"));
  EXPECT_NE(a->done(), b->done()) << "one task serves one parked lease";
  EXPECT_EQ(GetQueue("q").stats.waiting_workers, 1u);
  AdvanceAndTick(absl::Seconds(10));
  EXPECT_TRUE(a->done() && b->done());
  EXPECT_EQ(GetQueue("q").stats.waiting_workers, 0u);
}

// ── ListTasks ──

TEST_F(BrokerTest, ListTasksPagesInIdOrder) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(MustSubmit(Spec("q")));
  MustSubmit(Spec("other"));

  std::vector<TaskId> seen;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<TaskPage> page = broker_->ListTasks("q", std::nullopt, 2, token);
    ASSERT_THAT(page, IsOk());
    EXPECT_LE(page->tasks.size(), 2u);
    for (const TaskInfo& t : page->tasks) {
      EXPECT_EQ(t.queue, "q");
      seen.push_back(t.id);
    }
    token = page->next_page_token;
    ASSERT_LT(++pages, 10) << "paging does not end";
  } while (!token.empty());
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(pages, 3);
}

TEST_F(BrokerTest, ListTasksFiltersByState) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(MustSubmit(Spec("q")));
  std::vector<LeasedTask> got = LeaseNow({"q"}, 2);
  ASSERT_THAT(Ids(got), ElementsAre(ids[0], ids[1]));
  ASSERT_THAT(CompleteOne(ids[0], got[0].token), IsOk());

  absl::StatusOr<TaskPage> running = broker_->ListTasks("q", TaskState::kRunning, 100, "");
  ASSERT_THAT(running, IsOk());
  EXPECT_THAT(Ids(running->tasks), ElementsAre(ids[1]));
  EXPECT_TRUE(running->next_page_token.empty());

  absl::StatusOr<TaskPage> ready = broker_->ListTasks("q", TaskState::kReady, 100, "");
  ASSERT_THAT(ready, IsOk());
  EXPECT_THAT(Ids(ready->tasks), ElementsAre(ids[2], ids[3]));

  absl::StatusOr<TaskPage> done = broker_->ListTasks("q", TaskState::kSucceeded, 100, "");
  ASSERT_THAT(done, IsOk());
  ASSERT_THAT(done->tasks, SizeIs(1));
  EXPECT_EQ(done->tasks[0].id, ids[0]);
  EXPECT_EQ(done->tasks[0].result, "ok");

  absl::StatusOr<TaskPage> all = broker_->ListTasks("q", std::nullopt, 100, "");
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(Ids(all->tasks), ids);

  absl::StatusOr<TaskPage> dead = broker_->ListTasks("q", TaskState::kDead, 100, "");
  ASSERT_THAT(dead, IsOk());
  EXPECT_THAT(dead->tasks, IsEmpty());
  EXPECT_TRUE(dead->next_page_token.empty());
}

TEST_F(BrokerTest, ListTasksWithMalformedPageTokenOrHugePageIsInvalidArgument) {
  MustSubmit(Spec("q"));
  EXPECT_THAT(broker_->ListTasks("q", std::nullopt, 10, "not-a-token"),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_token"));
  EXPECT_THAT(broker_->ListTasks("q", std::nullopt, 1001, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_size"));
  EXPECT_THAT(broker_->ListDeadLetters("q", 1001, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_size"));
}

TEST_F(BrokerTest, ListTasksPagesThroughAFilteredState) {
  std::vector<TaskId> ready;
  for (int i = 0; i < 7; ++i) {
    TaskId id = MustSubmit(Spec("q"));
    if (i % 2 == 0) {
      ASSERT_THAT(broker_->CancelTask(id), IsOk());
    } else {
      ready.push_back(id);
    }
  }
  std::vector<TaskId> seen;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<TaskPage> page = broker_->ListTasks("q", TaskState::kReady, 2, token);
    ASSERT_THAT(page, IsOk());
    for (const TaskInfo& t : page->tasks) {
      EXPECT_EQ(t.state, TaskState::kReady);
      seen.push_back(t.id);
    }
    token = page->next_page_token;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(seen, ready);
}

}  // namespace
}  // namespace conveyor::server::broker_test
