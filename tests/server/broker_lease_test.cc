// Leasing: order (priority, FIFO, delays, expiry), what a lease hands out,
// long-polls, fencing tokens, heartbeats and Complete.
#include <string>
#include <vector>

#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

TaskSpec WithPriority(TaskSpec spec, uint32_t priority) {
  spec.priority = priority;
  return spec;
}

// ── Order ──

TEST_F(BrokerTest, HigherPriorityIsLeasedFirstThenFifoWithinPriority) {
  TaskId p0a = MustSubmit(WithPriority(Spec(), 0));
  clock_.Advance(absl::Milliseconds(1));
  TaskId p9a = MustSubmit(WithPriority(Spec(), 9));
  clock_.Advance(absl::Milliseconds(1));
  TaskId p5 = MustSubmit(WithPriority(Spec(), 5));
  clock_.Advance(absl::Milliseconds(1));
  TaskId p9b = MustSubmit(WithPriority(Spec(), 9));
  clock_.Advance(absl::Milliseconds(1));
  TaskId p0b = MustSubmit(WithPriority(Spec(), 0));

  std::vector<TaskId> order;
  for (int i = 0; i < 5; ++i) order.push_back(LeaseOne().id);
  EXPECT_THAT(order, ElementsAre(p9a, p9b, p5, p0a, p0b));
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(BrokerTest, FifoWithinPriorityHoldsForTasksSubmittedAtTheSameInstant) {
  // The fake clock does not move: order must not depend on distinct times.
  std::vector<TaskId> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(MustSubmit(Spec()));
  std::vector<TaskId> order;
  for (int i = 0; i < 20; ++i) order.push_back(LeaseOne().id);
  EXPECT_EQ(order, ids);
}

TEST_F(BrokerTest, BatchedLeaseReturnsTasksInPriorityOrder) {
  TaskId low = MustSubmit(WithPriority(Spec(), 1));
  TaskId high = MustSubmit(WithPriority(Spec(), 8));
  TaskId mid = MustSubmit(WithPriority(Spec(), 4));
  EXPECT_THAT(Ids(LeaseNow({"q"}, 3)), ElementsAre(high, mid, low));
}

TEST_F(BrokerTest, PriorityOrderHoldsAcrossTypes) {
  TaskId a = MustSubmit(WithPriority(Spec("q", "a"), 2));
  TaskId b = MustSubmit(WithPriority(Spec("q", "b"), 7));
  TaskId c = MustSubmit(WithPriority(Spec("q", "c"), 2));
  EXPECT_EQ(LeaseOne().id, b);
  EXPECT_EQ(LeaseOne().id, a);
  EXPECT_EQ(LeaseOne().id, c);
}

TEST_F(BrokerTest, DelayedTaskIsScheduledUntilDueThenReadyAfterTick) {
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());

  AdvanceAndTick(absl::Seconds(9));
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());

  AdvanceAndTick(absl::Seconds(1));  // due exactly now
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kScheduled), 0u);
  EXPECT_EQ(s.count(TaskState::kReady), 1u);
  EXPECT_EQ(LeaseOne().id, id);
}

TEST_F(BrokerTest, DelayedTasksBecomeReadyInDueOrder) {
  TaskSpec late = Spec("q", "t", "late");
  late.not_before = Now() + absl::Seconds(20);
  TaskSpec early = Spec("q", "t", "early");
  early.not_before = Now() + absl::Seconds(10);
  MustSubmit(late);
  MustSubmit(early);
  AdvanceAndTick(absl::Seconds(15));
  EXPECT_EQ(LeaseOne().payload, "early");
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  AdvanceAndTick(absl::Seconds(5));
  EXPECT_EQ(LeaseOne().payload, "late");
}

TEST_F(BrokerTest, DelayedTaskBecomingDueWakesParkedLongPoll) {
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(5);
  TaskId id = MustSubmit(spec);
  auto poll = LeaseWait({"q"}, absl::Seconds(30));
  EXPECT_FALSE(poll->done());
  AdvanceAndTick(absl::Seconds(5));
  ASSERT_TRUE(poll->done());
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id));
}

// ── Expiry (only before the first lease) ──

TEST_F(BrokerTest, ReadyTaskNotLeasedByExpiryEndsExpired) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  EXPECT_EQ(Get(id).expires_at, Now() + absl::Seconds(10));
  AdvanceAndTick(absl::Seconds(9));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  AdvanceAndTick(absl::Seconds(2));
  EXPECT_EQ(StateOf(id), TaskState::kExpired);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kReady), 0u);
  EXPECT_EQ(s.count(TaskState::kExpired), 1u);
  EXPECT_EQ(listener_.Count("ended", id), 1);
}

TEST_F(BrokerTest, TaskPastItsExpiryIsNotLeasedEvenBeforeTheTimerFires) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  TaskId other = MustSubmit(Spec());
  clock_.Advance(absl::Seconds(11));  // no Tick
  EXPECT_THAT(Ids(LeaseNow({"q"}, 10)), ElementsAre(other));
  EXPECT_EQ(StateOf(id), TaskState::kExpired);
}

TEST_F(BrokerTest, ExpiresAtInThePastIsInvalidArgument) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() - absl::Seconds(1);
  EXPECT_THAT(broker_->SubmitNow(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, "expires_at"));
}

TEST_F(BrokerTest, DelayedTaskDueAfterItsExpiryEndsExpired) {
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(20);
  spec.expires_at = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  AdvanceAndTick(absl::Seconds(11));
  EXPECT_EQ(StateOf(id), TaskState::kExpired);
  AdvanceAndTick(absl::Seconds(10));
  EXPECT_EQ(StateOf(id), TaskState::kExpired);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
}

TEST_F(BrokerTest, RunningTaskIsNotExpired) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  LeasedTask l = LeaseOne();
  AdvanceAndTick(absl::Seconds(20));
  EXPECT_EQ(StateOf(id), TaskState::kRunning);
  EXPECT_THAT(CompleteOne(id, l.token), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
}

TEST_F(BrokerTest, TaskInRetryBackoffPastItsExpiryIsNotExpired) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(10);
  spec.retry.initial_backoff = absl::Seconds(60);
  spec.retry.jitter = 0;
  TaskId id = MustSubmit(spec);
  LeasedTask l = LeaseOne();
  ASSERT_THAT(FailOne(id, l.token), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
  AdvanceAndTick(absl::Seconds(30));  // past expires_at
  EXPECT_EQ(StateOf(id), TaskState::kScheduled);
  AdvanceAndTick(absl::Seconds(30));  // backoff over
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  AdvanceAndTick(absl::Hours(1));     // ready long past expiry
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_EQ(LeaseOne().id, id);
}

TEST_F(BrokerTest, TaskBackInReadyAfterLeaseExpiryPastItsExpiryIsNotExpired) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  LeaseOne();
  AdvanceAndTick(kLease + absl::Seconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  AdvanceAndTick(absl::Minutes(5));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_EQ(LeaseOne().id, id);
}

// ── What a lease hands out ──

TEST_F(BrokerTest, LeaseFillsLeasedTaskAndMarksTaskRunning) {
  TaskSpec spec = Spec("q", "resize", "img");
  spec.headers = {{"traceparent", "00-1-2-01"}};
  spec.timeout = absl::Seconds(90);
  spec.retry.max_attempts = 5;
  TaskId id = MustSubmit(spec);
  const absl::Time t0 = Now();

  std::vector<LeasedTask> got = LeaseNow({"q"}, 1, {}, "host:123");
  ASSERT_THAT(got, SizeIs(1));
  const LeasedTask& l = got[0];
  EXPECT_EQ(l.id, id);
  EXPECT_EQ(l.queue, "q");
  EXPECT_EQ(l.type, "resize");
  EXPECT_EQ(l.payload, "img");
  EXPECT_THAT(l.headers, ElementsAre(std::make_pair(std::string("traceparent"),
                                                    std::string("00-1-2-01"))));
  EXPECT_EQ(l.attempt, 1u);
  EXPECT_EQ(l.max_attempts, 5u);
  EXPECT_EQ(l.token, 1u);
  EXPECT_EQ(l.lease_expires_at, t0 + kLease);
  EXPECT_EQ(l.timeout, absl::Seconds(90));
  EXPECT_EQ(l.deadline, t0 + absl::Seconds(90));

  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.worker_id, "host:123");
  EXPECT_EQ(t.token, 1u);
  EXPECT_EQ(t.started_at, t0);
  EXPECT_EQ(t.lease_expires_at, t0 + kLease);
  EXPECT_EQ(t.attempts, 0u) << "attempts count failures and timeouts only";
  EXPECT_EQ(broker_->running_count(), 1u);
  EXPECT_EQ(listener_.Count("dispatched", id), 1);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kReady), 0u);
  EXPECT_EQ(s.count(TaskState::kRunning), 1u);
}

TEST_F(BrokerTest, LeaseDurationComesFromTheQueue) {
  QueueConfig c = Config("q");
  c.lease_duration = absl::Seconds(5);
  MustCreateQueue(c);
  MustSubmit(Spec("q"));
  EXPECT_EQ(LeaseOne().lease_expires_at, Now() + absl::Seconds(5));
}

// Timers keep microseconds, clocks nanoseconds: a lease ending a fraction of
// a microsecond after a tick must neither expire early nor make the tick
// re-arm the same check for ever (it once spun Tick() at 100% CPU).
TEST_F(BrokerTest, LeaseEndingMidMicrosecondExpiresOnTimeWithoutSpinning) {
  QueueConfig c = Config("q");
  c.lease_duration = absl::Seconds(5);
  MustCreateQueue(c);
  clock_.Advance(absl::Nanoseconds(700));
  TaskId id = MustSubmit(Spec("q"));
  LeasedTask l = LeaseOne("q");
  ASSERT_EQ(l.lease_expires_at, Now() + absl::Seconds(5));
  // Same microsecond as the expiry, 400 ns before it.
  AdvanceAndTick(absl::Seconds(5) - absl::Nanoseconds(400));
  EXPECT_EQ(StateOf(id), TaskState::kRunning);
  AdvanceAndTick(absl::Microseconds(1));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

TEST_F(BrokerTest, LeaseReturnsUpToMaxTasks) {
  for (int i = 0; i < 5; ++i) MustSubmit(Spec());
  EXPECT_THAT(LeaseNow({"q"}, 3), SizeIs(3));
  EXPECT_THAT(LeaseNow({"q"}, 10), SizeIs(2));
  EXPECT_THAT(LeaseNow({"q"}, 10), IsEmpty());
  EXPECT_EQ(broker_->running_count(), 5u);
}

TEST_F(BrokerTest, LeasedTaskIsNotHandedOutTwice) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(MustSubmit(Spec()));
  std::vector<TaskId> seen;
  for (int i = 0; i < 3; ++i) {
    for (const LeasedTask& l : LeaseNow({"q"}, 2, {}, "w" + std::to_string(i))) {
      seen.push_back(l.id);
    }
  }
  EXPECT_EQ(seen, ids);
}

TEST_F(BrokerTest, LeaseFiltersByType) {
  TaskId x1 = MustSubmit(Spec("q", "x"));
  TaskId y1 = MustSubmit(Spec("q", "y"));
  TaskId x2 = MustSubmit(Spec("q", "x"));
  TaskId z1 = MustSubmit(Spec("q", "z"));
  EXPECT_THAT(Ids(LeaseNow({"q"}, 10, {"y"})), ElementsAre(y1));
  EXPECT_THAT(LeaseNow({"q"}, 10, {"unknown-type"}), IsEmpty());
  EXPECT_THAT(Ids(LeaseNow({"q"}, 10, {"x", "z"})), ElementsAre(x1, x2, z1));
}

TEST_F(BrokerTest, LeaseTakesFromSeveralQueues) {
  TaskId a = MustSubmit(Spec("a"));
  TaskId b = MustSubmit(Spec("b"));
  MustSubmit(Spec("c"));
  std::vector<LeasedTask> got = LeaseNow({"a", "b"}, 10);
  EXPECT_THAT(Ids(got), UnorderedElementsAre(a, b));
  for (const LeasedTask& l : got) EXPECT_EQ(l.queue, l.id == a ? "a" : "b");
  EXPECT_EQ(GetQueue("c").stats.count(TaskState::kReady), 1u);
}

TEST_F(BrokerTest, LeaseAcrossQueuesTakesBestPriorityFirst) {
  // broker.h: "Up to max_tasks ready tasks from the named queues, best
  // priority first" — over all the named queues, not queue by queue.
  MustSubmit(WithPriority(Spec("a"), 1));
  TaskId b = MustSubmit(WithPriority(Spec("b"), 9));
  EXPECT_EQ(LeaseNow({"a", "b"}, 1)[0].id, b);
}

TEST_F(BrokerTest, LeaseOnUnknownQueueReturnsNothingAndCreatesNothing) {
  // DESIGN: "A lease on an unknown queue simply waits."
  absl::StatusOr<std::vector<LeasedTask>> r =
      LeaseNowOrStatus(LeaseRequest{"w", {"nope"}, {}, 1, absl::ZeroDuration()});
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(*r, IsEmpty());
  EXPECT_THAT(broker_->ListQueues(), IsEmpty());
}

// ── Long-polls ──

TEST_F(BrokerTest, LongPollParksUntilASubmitArrives) {
  MustCreateQueue(Config("q"));
  WaitId w = 0;
  auto poll = LeaseWait({"q"}, absl::Seconds(20), 1, {}, &w);
  EXPECT_NE(w, 0u);
  EXPECT_FALSE(poll->done());
  AdvanceAndTick(absl::Seconds(10));
  EXPECT_FALSE(poll->done());

  TaskId id = MustSubmit(Spec("q"));
  ASSERT_EQ(poll->calls, 1);
  ASSERT_THAT(*poll->result, IsOk());
  ASSERT_THAT(poll->tasks(), SizeIs(1));
  EXPECT_EQ(poll->tasks()[0].id, id);
  EXPECT_EQ(poll->tasks()[0].token, 1u);
  EXPECT_EQ(poll->tasks()[0].lease_expires_at, Now() + kLease);
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.worker_id, "w-poll");

  // The wait passing later does not call it again.
  AdvanceAndTick(absl::Seconds(30));
  EXPECT_EQ(poll->calls, 1);
  broker_->CancelWait(w);
  EXPECT_EQ(poll->calls, 1);
}

TEST_F(BrokerTest, LongPollWithReadyTaskAnswersAtOnce) {
  TaskId id = MustSubmit(Spec("q"));
  WaitId w = 1;
  auto poll = LeaseWait({"q"}, absl::Seconds(20), 5, {}, &w);
  EXPECT_EQ(w, 0u);
  ASSERT_TRUE(poll->done());
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id)) << "does not wait to fill max_tasks";
}

TEST_F(BrokerTest, LongPollEndsOkAndEmptyWhenTheWaitPasses) {
  MustCreateQueue(Config("q"));
  auto poll = LeaseWait({"q"}, absl::Seconds(20));
  AdvanceAndTick(absl::Seconds(19));
  EXPECT_FALSE(poll->done());
  AdvanceAndTick(absl::Seconds(1));
  ASSERT_EQ(poll->calls, 1);
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(poll->tasks(), IsEmpty());

  // A task arriving afterwards is not leased to the finished poll.
  TaskId id = MustSubmit(Spec("q"));
  EXPECT_EQ(poll->calls, 1);
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

TEST_F(BrokerTest, LongPollOfExactlyMaxLeaseWaitParksForThatLong) {
  BrokerOptions o;
  o.max_lease_wait = absl::Seconds(45);
  Reset(o);
  MustCreateQueue(Config("q"));
  auto poll = LeaseWait({"q"}, absl::Seconds(45));
  AdvanceAndTick(absl::Seconds(44));
  EXPECT_FALSE(poll->done());
  AdvanceAndTick(absl::Seconds(1));
  ASSERT_TRUE(poll->done());
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(poll->tasks(), IsEmpty());
}

// A malformed lease request is a bad request (DESIGN: INVALID_ARGUMENT naming
// the field), answered at once; a wait over --max-lease-wait is one (the proto
// says "At most 60 s"), rather than silently shortened.
struct BadLeaseCase {
  std::string name;
  LeaseRequest request;
  std::string field;
};

class LeaseValidationTest : public BrokerTest,
                            public ::testing::WithParamInterface<BadLeaseCase> {};

TEST_P(LeaseValidationTest, RejectsWithInvalidArgumentAtOnce) {
  TaskId id = MustSubmit(Spec("q"));
  auto cap = std::make_shared<LeaseCapture>();
  EXPECT_EQ(broker_->Lease(GetParam().request, Capture(cap)), 0u);
  ASSERT_EQ(cap->calls, 1);
  EXPECT_THAT(*cap->result,
              StatusIs(absl::StatusCode::kInvalidArgument, GetParam().field));
  EXPECT_EQ(StateOf(id), TaskState::kReady) << "nothing leased";
}

INSTANTIATE_TEST_SUITE_P(
    Broker, LeaseValidationTest,
    ::testing::Values(
        BadLeaseCase{"NoQueues", LeaseRequest{"w", {}, {}, 1, absl::ZeroDuration()},
                     "queues"},
        BadLeaseCase{"MalformedQueueName",
                     LeaseRequest{"w", {"q", "bad queue"}, {}, 1, absl::ZeroDuration()},
                     "queue"},
        BadLeaseCase{"ZeroMaxTasks", LeaseRequest{"w", {"q"}, {}, 0, absl::ZeroDuration()},
                     "max_tasks"},
        BadLeaseCase{"MaxTasksOver1000",
                     LeaseRequest{"w", {"q"}, {}, 1001, absl::ZeroDuration()}, "max_tasks"},
        BadLeaseCase{"NegativeWait", LeaseRequest{"w", {"q"}, {}, 1, absl::Seconds(-1)},
                     "wait"},
        BadLeaseCase{"WaitOverMaxLeaseWait",
                     LeaseRequest{"w", {"q"}, {}, 1, absl::Minutes(10)}, "wait"}),
    [](const ::testing::TestParamInfo<BadLeaseCase>& info) { return info.param.name; });

TEST_F(BrokerTest, CancelWaitEndsLongPollWithCancelled) {
  MustCreateQueue(Config("q"));
  WaitId w = 0;
  auto poll = LeaseWait({"q"}, absl::Seconds(20), 1, {}, &w);
  ASSERT_NE(w, 0u);
  broker_->CancelWait(w);
  ASSERT_EQ(poll->calls, 1);
  EXPECT_THAT(*poll->result, StatusIs(absl::StatusCode::kCancelled));

  // A later submit stays READY; the wait passing calls nothing.
  TaskId id = MustSubmit(Spec("q"));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  AdvanceAndTick(absl::Seconds(30));
  EXPECT_EQ(poll->calls, 1);
  broker_->CancelWait(w);  // twice: nothing
  broker_->CancelWait(0);
  broker_->CancelWait(987654);
  EXPECT_EQ(poll->calls, 1);
}

// A stopping worker's parked polls are answered (OK, no tasks), not
// cancelled; other workers' polls stay parked and still get the next task.
TEST_F(BrokerTest, EndLeaseWaitsAnswersOnlyThatWorkersParkedPolls) {
  MustCreateQueue(Config("q"));
  MustCreateQueue(Config("r"));
  auto mine_q = LeaseWait({"q"}, absl::Seconds(20));
  auto mine_r = LeaseWait({"q", "r"}, absl::Seconds(20), 5);
  LeaseRequest other_req;
  other_req.worker_id = "w-other";
  other_req.queues = {"q"};
  other_req.max_tasks = 1;
  other_req.wait = absl::Seconds(20);
  auto other = std::make_shared<LeaseCapture>();
  broker_->Lease(std::move(other_req), Capture(other));

  absl::StatusOr<int> ended = broker_->EndLeaseWaits("w-poll");
  ASSERT_THAT(ended, IsOk());
  EXPECT_EQ(*ended, 2);
  ASSERT_EQ(mine_q->calls, 1);
  ASSERT_EQ(mine_r->calls, 1);
  EXPECT_THAT(*mine_q->result, IsOk());
  EXPECT_THAT(mine_q->tasks(), IsEmpty());
  EXPECT_THAT(*mine_r->result, IsOk());
  EXPECT_THAT(mine_r->tasks(), IsEmpty());
  EXPECT_FALSE(other->done());
  EXPECT_EQ(GetQueue("q").stats.waiting_workers, 1u);
  EXPECT_EQ(GetQueue("r").stats.waiting_workers, 0u);

  // Nothing left of that worker's: none ended, and the wait passing later
  // calls nothing again.
  ended = broker_->EndLeaseWaits("w-poll");
  ASSERT_THAT(ended, IsOk());
  EXPECT_EQ(*ended, 0);
  TaskId id = MustSubmit(Spec("q"));
  ASSERT_EQ(other->calls, 1);
  ASSERT_THAT(other->tasks(), SizeIs(1));
  EXPECT_EQ(other->tasks()[0].id, id);
  AdvanceAndTick(absl::Seconds(30));
  EXPECT_EQ(mine_q->calls, 1);
  EXPECT_EQ(mine_r->calls, 1);
}

TEST_F(BrokerTest, EndLeaseWaitsNamesABadWorkerId) {
  EXPECT_THAT(broker_->EndLeaseWaits(""),
              StatusIs(absl::StatusCode::kInvalidArgument, "worker_id"));
  EXPECT_THAT(broker_->EndLeaseWaits(std::string(257, 'w')),
              StatusIs(absl::StatusCode::kInvalidArgument, "at most 256"));
}

TEST_F(BrokerTest, OneSubmitWakesOnlyOneOfTwoParkedLongPolls) {
  MustCreateQueue(Config("q"));
  auto first = LeaseWait({"q"}, absl::Seconds(20));
  auto second = LeaseWait({"q"}, absl::Seconds(20));
  TaskId a = MustSubmit(Spec("q"));
  ASSERT_TRUE(first->done()) << "parked leases are served in arrival order";
  EXPECT_FALSE(second->done());
  EXPECT_THAT(Ids(first->tasks()), ElementsAre(a));
  TaskId b = MustSubmit(Spec("q"));
  ASSERT_TRUE(second->done());
  EXPECT_THAT(Ids(second->tasks()), ElementsAre(b));
}

TEST_F(BrokerTest, ParkedLongPollIgnoresTasksOfOtherTypes) {
  MustCreateQueue(Config("q"));
  auto poll = LeaseWait({"q"}, absl::Seconds(20), 1, {"x"});
  TaskId y = MustSubmit(Spec("q", "y"));
  EXPECT_FALSE(poll->done());
  EXPECT_EQ(StateOf(y), TaskState::kReady);
  TaskId x = MustSubmit(Spec("q", "x"));
  ASSERT_TRUE(poll->done());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(x));
}

TEST_F(BrokerTest, ParkedLongPollForATypeNotSeenYetGetsItWhenSubmitted) {
  MustCreateQueue(Config("q"));
  auto poll = LeaseWait({"q"}, absl::Seconds(20), 1, {"brand-new-type"});
  EXPECT_FALSE(poll->done());
  TaskId id = MustSubmit(Spec("q", "brand-new-type"));
  ASSERT_TRUE(poll->done());
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id));
}

TEST_F(BrokerTest, ParkedLongPollIsNotServedByAnotherQueue) {
  MustCreateQueue(Config("a"));
  auto poll = LeaseWait({"a"}, absl::Seconds(20));
  MustSubmit(Spec("b"));
  EXPECT_FALSE(poll->done());
}

TEST_F(BrokerTest, ParkedLongPollOnSeveralQueuesIsServedByAnyOfThem) {
  MustCreateQueue(Config("a"));
  MustCreateQueue(Config("b"));
  auto poll = LeaseWait({"a", "b"}, absl::Seconds(20));
  TaskId id = MustSubmit(Spec("b"));
  ASSERT_TRUE(poll->done());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id));
  // It is gone from queue a's waiters too: a task there stays READY.
  TaskId other = MustSubmit(Spec("a"));
  EXPECT_EQ(StateOf(other), TaskState::kReady);
  EXPECT_EQ(poll->calls, 1);
}

TEST_F(BrokerTest, ParkedLongPollOnUnknownQueueGetsTaskOnceQueueIsCreated) {
  // DESIGN: "A lease on an unknown queue simply waits" — for tasks of that
  // queue, once it exists.
  auto poll = LeaseWait({"later"}, absl::Seconds(20));
  EXPECT_FALSE(poll->done());
  TaskId id = MustSubmit(Spec("later"));
  ASSERT_TRUE(poll->done());
  ASSERT_THAT(*poll->result, IsOk());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id));
}

TEST_F(BrokerTest, ReleasedTaskWakesParkedLongPoll) {
  TaskId id = MustSubmit(Spec("q"));
  LeasedTask l = LeaseOne();
  auto poll = LeaseWait({"q"}, absl::Seconds(20));
  EXPECT_FALSE(poll->done());
  ASSERT_THAT(ReleaseOne(id, l.token), IsOk());
  ASSERT_TRUE(poll->done());
  EXPECT_THAT(Ids(poll->tasks()), ElementsAre(id));
}

TEST_F(BrokerTest, LongPollCallbackMayCallBackIntoTheBroker) {
  // Callbacks run outside the lock: completing from inside one must work.
  MustCreateQueue(Config("q"));
  std::vector<absl::Status> outcome;
  Broker* b = broker_.get();
  LeaseRequest req{"w", {"q"}, {}, 1, absl::Seconds(20)};
  broker_->Lease(req, [&outcome, b](absl::StatusOr<std::vector<LeasedTask>> r) {
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->size(), 1u);
    outcome = b->Complete({CompleteItem{(*r)[0].id, (*r)[0].token, "inline"}});
  });
  TaskId id = MustSubmit(Spec("q"));
  ASSERT_THAT(outcome, ElementsAre(IsOk()));
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
  EXPECT_EQ(Get(id).result, "inline");
}

TEST_F(BrokerTest, NextTimerIsInfiniteWhenIdleAndNoLaterThanTheNextDueEvent) {
  EXPECT_EQ(broker_->NextTimer(), absl::InfiniteFuture());
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(42);
  TaskId id = MustSubmit(spec);
  const absl::Time next = broker_->NextTimer();
  EXPECT_GT(next, Now());
  EXPECT_LE(next, Now() + absl::Seconds(42));
  clock_.Set(Now() + absl::Seconds(42));
  broker_->Tick();
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

// ── Fencing tokens ──

TEST_F(BrokerTest, FencingTokenIncrementsOnEveryLeaseGrant) {
  TaskSpec spec = Spec();
  spec.retry.initial_backoff = absl::Seconds(1);
  spec.retry.jitter = 0;
  TaskId id = MustSubmit(spec);
  EXPECT_EQ(Get(id).token, 0u);

  LeasedTask l1 = LeaseOne();
  EXPECT_EQ(l1.token, 1u);
  ASSERT_THAT(ReleaseOne(id, l1.token), IsOk());
  EXPECT_EQ(Get(id).token, 1u) << "a hand-back does not issue a token";

  LeasedTask l2 = LeaseOne();
  EXPECT_EQ(l2.token, 2u);
  AdvanceAndTick(kLease + absl::Seconds(1));  // lease expires

  LeasedTask l3 = LeaseOne();
  EXPECT_EQ(l3.token, 3u);
  ASSERT_THAT(FailOne(id, l3.token), IsOk());
  AdvanceAndTick(absl::Seconds(1));

  LeasedTask l4 = LeaseOne();
  EXPECT_EQ(l4.token, 4u);
  EXPECT_EQ(Get(id).token, 4u);
}

TEST_F(BrokerTest, TokensAreCountedPerTask) {
  MustSubmit(Spec());
  MustSubmit(Spec());
  EXPECT_EQ(LeaseOne().token, 1u);
  EXPECT_EQ(LeaseOne().token, 1u);
}

// ── Heartbeats ──

TEST_F(BrokerTest, HeartbeatExtendsTheLease) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  const absl::Time t0 = Now();
  AdvanceAndTick(absl::Seconds(20));
  HeartbeatOutcome hb = HeartbeatOne(id, l.token);
  EXPECT_THAT(hb.status, IsOk());
  EXPECT_FALSE(hb.cancel);
  EXPECT_EQ(hb.lease_expires_at, t0 + absl::Seconds(20) + kLease);
  EXPECT_EQ(Get(id).lease_expires_at, hb.lease_expires_at);

  AdvanceAndTick(absl::Seconds(20));  // past the first lease's end
  EXPECT_EQ(StateOf(id), TaskState::kRunning);
  EXPECT_EQ(Get(id).crashes, 0u);
  AdvanceAndTick(absl::Seconds(11));  // past the extended end
  EXPECT_EQ(StateOf(id), TaskState::kReady);
  EXPECT_EQ(Get(id).crashes, 1u);
}

TEST_F(BrokerTest, HeartbeatRecordsProgress) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  EXPECT_THAT(HeartbeatOne(id, l.token, 42.5, "halfway").status, IsOk());
  TaskInfo t = Get(id);
  EXPECT_DOUBLE_EQ(t.progress_percent, 42.5);
  EXPECT_EQ(t.progress_message, "halfway");

  // Unset progress keeps the last value.
  EXPECT_THAT(HeartbeatOne(id, l.token, std::nullopt, "halfway").status, IsOk());
  EXPECT_DOUBLE_EQ(Get(id).progress_percent, 42.5);
  EXPECT_THAT(HeartbeatOne(id, l.token, 90, "nearly").status, IsOk());
  t = Get(id);
  EXPECT_DOUBLE_EQ(t.progress_percent, 90);
  EXPECT_EQ(t.progress_message, "nearly");
}

TEST_F(BrokerTest, HeartbeatAnswersEachItemOnItsOwn) {
  TaskId a = MustSubmit(Spec());
  TaskId b = MustSubmit(Spec());
  std::vector<LeasedTask> got = LeaseNow({"q"}, 2);
  ASSERT_THAT(Ids(got), ElementsAre(a, b));
  std::vector<HeartbeatItem> items = {
      HeartbeatItem{a, got[0].token, 10.0, ""},
      HeartbeatItem{TaskId(0xdeadbeef), 1, std::nullopt, ""},
      HeartbeatItem{b, got[1].token + 5, std::nullopt, ""},
  };
  std::vector<HeartbeatOutcome> out = broker_->Heartbeat("w1", items);
  ASSERT_THAT(out, SizeIs(3));
  EXPECT_THAT(out[0].status, IsOk());
  EXPECT_THAT(out[1].status, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(out[2].status.ok()) << "a token that was never issued is not current";
  EXPECT_DOUBLE_EQ(Get(a).progress_percent, 10.0);
}

TEST_F(BrokerTest, HeartbeatWithProgressOutOfRangeIsInvalidArgument) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  EXPECT_THAT(HeartbeatOne(id, l.token, 101).status,
              StatusIs(absl::StatusCode::kInvalidArgument, "progress_percent"));
  EXPECT_THAT(HeartbeatOne(id, l.token, -5).status,
              StatusIs(absl::StatusCode::kInvalidArgument, "progress_percent"));
  EXPECT_THAT(HeartbeatOne(id, l.token, 5, std::string(1025, 'm')).status,
              StatusIs(absl::StatusCode::kInvalidArgument, "progress_message"));
  EXPECT_DOUBLE_EQ(Get(id).progress_percent, 0);
  EXPECT_THAT(HeartbeatOne(id, l.token, 100, std::string(1024, 'm')).status, IsOk());
}

TEST_F(BrokerTest, HeartbeatWithStaleTokenIsFailedPreconditionAndChangesNothing) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l1 = LeaseOne("q", "w1");
  AdvanceAndTick(kLease + absl::Seconds(1));
  LeasedTask l2 = LeaseOne("q", "w2");
  const absl::Time expires = Get(id).lease_expires_at;
  AdvanceAndTick(absl::Seconds(5));
  HeartbeatOutcome hb = HeartbeatOne(id, l1.token, 99, "stale", "w1");
  EXPECT_THAT(hb.status, StatusIs(absl::StatusCode::kFailedPrecondition));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.lease_expires_at, expires);
  EXPECT_DOUBLE_EQ(t.progress_percent, 0);
  EXPECT_EQ(t.worker_id, "w2");
  EXPECT_EQ(t.token, l2.token);
}

TEST_F(BrokerTest, HeartbeatAfterLeaseLapsedButBeforeTickKeepsTheLease) {
  // "A report with the current token is accepted even if its lease just
  // expired, as long as no newer lease was granted."
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  clock_.Advance(kLease + absl::Seconds(2));  // the timer has not fired yet
  HeartbeatOutcome hb = HeartbeatOne(id, l.token);
  EXPECT_THAT(hb.status, IsOk());
  EXPECT_EQ(hb.lease_expires_at, Now() + kLease);
  broker_->Tick();
  EXPECT_EQ(StateOf(id), TaskState::kRunning);
  EXPECT_EQ(Get(id).crashes, 0u);
}

// ── Complete ──

TEST_F(BrokerTest, CompleteEndsSucceededWithResult) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  clock_.Advance(absl::Seconds(3));
  ASSERT_THAT(CompleteOne(id, l.token, std::string("res\0ult", 7)), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kSucceeded);
  EXPECT_EQ(t.result, std::string("res\0ult", 7));
  EXPECT_EQ(t.finished_at, Now());
  EXPECT_EQ(t.attempts, 0u);
  EXPECT_EQ(broker_->running_count(), 0u);
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kRunning), 0u);
  EXPECT_EQ(s.count(TaskState::kSucceeded), 1u);
  EXPECT_EQ(listener_.Count("ended", id), 1);
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());

  // Nothing fires for it later (its lease timer is stale).
  AdvanceAndTick(kLease * 2);
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
  EXPECT_EQ(Get(id).crashes, 0u);
}

TEST_F(BrokerTest, CompleteWithOversizedResultIsInvalidArgumentAndTaskUnchanged) {
  BrokerOptions o;
  o.max_result_bytes = 16;
  Reset(o);
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  EXPECT_THAT(CompleteOne(id, l.token, std::string(17, 'r')),
              StatusIs(absl::StatusCode::kInvalidArgument, "result"));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.result, "");
  EXPECT_EQ(t.token, l.token);
  // The worker can still report, with a result that fits.
  EXPECT_THAT(CompleteOne(id, l.token, std::string(16, 'r')), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
}

TEST_F(BrokerTest, CompleteOfUnknownTaskIsNotFound) {
  EXPECT_THAT(CompleteOne(TaskId(12345), 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(FailOne(TaskId(12345), 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ReleaseOne(TaskId(12345), 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(HeartbeatOne(TaskId(12345), 1).status,
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BrokerTest, CompleteOfTaskNeverLeasedIsFailedPrecondition) {
  TaskId id = MustSubmit(Spec());
  EXPECT_THAT(CompleteOne(id, 0), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(CompleteOne(id, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StateOf(id), TaskState::kReady);
}

TEST_F(BrokerTest, CompleteWithStaleTokenAfterReleaseIsFailedPreconditionAndChangesNothing) {
  TaskId id = MustSubmit(Spec());
  LeasedTask old_lease = LeaseOne("q", "w1");
  AdvanceAndTick(kLease + absl::Seconds(1));  // w1's lease expires
  LeasedTask new_lease = LeaseOne("q", "w2");
  ASSERT_GT(new_lease.token, old_lease.token);

  EXPECT_THAT(CompleteOne(id, old_lease.token, "late"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(FailOne(id, old_lease.token),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ReleaseOne(id, old_lease.token),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.worker_id, "w2");
  EXPECT_EQ(t.result, "");
  EXPECT_EQ(t.attempts, 0u);
  EXPECT_EQ(t.token, new_lease.token);

  EXPECT_THAT(CompleteOne(id, new_lease.token, "fresh"), IsOk());
  EXPECT_EQ(Get(id).result, "fresh");
}

TEST_F(BrokerTest, CompleteAfterLeaseLapsedButBeforeTickIsAccepted) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  clock_.Advance(kLease + absl::Seconds(5));
  EXPECT_THAT(CompleteOne(id, l.token, "just in time"), IsOk());
  broker_->Tick();
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kSucceeded);
  EXPECT_EQ(t.result, "just in time");
}

TEST_F(BrokerTest, CompleteAfterLeaseExpiredButBeforeReLeaseWins) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  AdvanceAndTick(kLease + absl::Seconds(1));
  ASSERT_EQ(StateOf(id), TaskState::kReady) << "expired lease: back to READY";
  EXPECT_THAT(CompleteOne(id, l.token, "won"), IsOk());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.state, TaskState::kSucceeded);
  EXPECT_EQ(t.result, "won");
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty()) << "the completed task is not leased again";
  QueueStats s = GetQueue("q").stats;
  EXPECT_EQ(s.count(TaskState::kReady), 0u);
  EXPECT_EQ(s.count(TaskState::kSucceeded), 1u);
}

TEST_F(BrokerTest, RepeatedCompleteWithTheSameResultIsAcknowledged) {
  // A worker whose Complete answer was lost sends it again: acknowledged,
  // nothing changes. A different result for an ended task is refused.
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  ASSERT_THAT(CompleteOne(id, l.token, "r1"), IsOk());
  const absl::Time finished = Get(id).finished_at;
  clock_.Advance(absl::Seconds(5));
  EXPECT_THAT(CompleteOne(id, l.token, "r1"), IsOk());
  EXPECT_THAT(CompleteOne(id, l.token, "r2"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  TaskInfo t = Get(id);
  EXPECT_EQ(t.result, "r1");
  EXPECT_EQ(t.finished_at, finished);
  EXPECT_EQ(listener_.Count("ended", id), 1);
}

TEST_F(BrokerTest, CompleteBatchGivesPerItemStatuses) {
  BrokerOptions o;
  o.max_result_bytes = 8;
  Reset(o);
  TaskId a = MustSubmit(Spec());
  TaskId b = MustSubmit(Spec());
  TaskId c = MustSubmit(Spec());
  std::vector<LeasedTask> got = LeaseNow({"q"}, 3);
  ASSERT_THAT(Ids(got), ElementsAre(a, b, c));
  std::vector<absl::Status> s = broker_->Complete({
      CompleteItem{a, got[0].token, "ok-a"},
      CompleteItem{b, got[1].token, "far-too-long"},
      CompleteItem{TaskId(999999), 1, ""},
      CompleteItem{c, got[2].token + 1, "x"},
  });
  ASSERT_THAT(s, SizeIs(4));
  EXPECT_THAT(s[0], IsOk());
  EXPECT_THAT(s[1], StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(s[2], StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(s[3].ok());
  EXPECT_EQ(StateOf(a), TaskState::kSucceeded);
  EXPECT_EQ(StateOf(b), TaskState::kRunning);
  EXPECT_EQ(StateOf(c), TaskState::kRunning);
}

}  // namespace
}  // namespace conveyor::server::broker_test
