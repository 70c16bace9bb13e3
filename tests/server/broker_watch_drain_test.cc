// Watch (current state, then every change, final exactly once) and drain.
#include <string>
#include <vector>

#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ── Watch ──

TEST_F(BrokerTest, WatchGetsCurrentStateThenEachChangeAndFinalOnce) {
  TaskId id = MustSubmit(Spec());
  auto w = std::make_shared<WatchCapture>();
  absl::StatusOr<WatchId> wid = broker_->Watch(id, Capture(w));
  ASSERT_THAT(wid, IsOk());
  EXPECT_NE(*wid, 0u);
  ASSERT_THAT(w->calls, SizeIs(1)) << "the current state, at once";
  EXPECT_EQ(w->calls[0].state, TaskState::kReady);
  EXPECT_EQ(w->calls[0].id, id);
  EXPECT_FALSE(w->finals[0]);

  LeasedTask l = LeaseOne();
  ASSERT_THAT(w->calls, SizeIs(2));
  EXPECT_EQ(w->calls[1].state, TaskState::kRunning);
  EXPECT_EQ(w->calls[1].token, l.token);
  EXPECT_FALSE(w->finals[1]);

  ASSERT_THAT(CompleteOne(id, l.token, "done!"), IsOk());
  EXPECT_THAT(w->distinct_states(),
              ElementsAre(TaskState::kReady, TaskState::kRunning, TaskState::kSucceeded));
  EXPECT_EQ(w->final_count(), 1);
  EXPECT_TRUE(w->finals.back());
  EXPECT_EQ(w->calls.back().result, "done!");
  for (size_t i = 1; i < w->calls.size(); ++i) {
    EXPECT_GT(w->calls[i].version, w->calls[i - 1].version)
        << "versions order the notifications";
  }

  // Nothing after the final call, whatever happens.
  const size_t n = w->calls.size();
  AdvanceAndTick(absl::Hours(48));  // the result is dropped
  broker_->Unwatch(*wid);
  EXPECT_EQ(w->calls.size(), n);
}

TEST_F(BrokerTest, WatchFollowsRetryThroughScheduledAndReady) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 2;
  spec.retry.initial_backoff = absl::Seconds(1);
  spec.retry.jitter = 0;
  TaskId id = MustSubmit(spec);
  auto w = std::make_shared<WatchCapture>();
  ASSERT_THAT(broker_->Watch(id, Capture(w)), IsOk());
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());
  AdvanceAndTick(absl::Seconds(1));
  ASSERT_THAT(FailOne(id, LeaseOne().token), IsOk());
  EXPECT_THAT(w->distinct_states(),
              ElementsAre(TaskState::kReady, TaskState::kRunning, TaskState::kScheduled,
                          TaskState::kReady, TaskState::kRunning, TaskState::kDead));
  EXPECT_EQ(w->final_count(), 1);
  EXPECT_TRUE(w->finals.back());
  EXPECT_EQ(w->calls.back().attempts, 2u);
}

TEST_F(BrokerTest, WatchSeesProgressAndCancelRequest) {
  TaskId id = MustSubmit(Spec());
  LeasedTask l = LeaseOne();
  auto w = std::make_shared<WatchCapture>();
  ASSERT_THAT(broker_->Watch(id, Capture(w)), IsOk());
  ASSERT_THAT(HeartbeatOne(id, l.token, 30, "a third").status, IsOk());
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  ASSERT_THAT(FailOne(id, l.token), IsOk());
  ASSERT_FALSE(w->calls.empty());
  // Progress and the cancel request reach the watcher before the end.
  bool saw_progress = false, saw_cancel_request = false;
  for (size_t i = 0; i + 1 < w->calls.size(); ++i) {
    saw_progress |= w->calls[i].progress_percent == 30;
    saw_cancel_request |= w->calls[i].cancel_requested;
  }
  EXPECT_TRUE(saw_progress);
  EXPECT_TRUE(saw_cancel_request);
  EXPECT_EQ(w->calls.back().state, TaskState::kCanceled);
  EXPECT_EQ(w->final_count(), 1);
  EXPECT_TRUE(w->finals.back());
}

TEST_F(BrokerTest, WatchOnEndedTaskCallsOnceWithFinal) {
  TaskId id = MustSubmit(Spec());
  ASSERT_THAT(CompleteOne(id, LeaseOne().token, "r"), IsOk());
  auto w = std::make_shared<WatchCapture>();
  absl::StatusOr<WatchId> wid = broker_->Watch(id, Capture(w));
  ASSERT_THAT(wid, IsOk());
  EXPECT_EQ(*wid, 0u);
  ASSERT_THAT(w->calls, SizeIs(1));
  EXPECT_TRUE(w->finals[0]);
  EXPECT_EQ(w->calls[0].state, TaskState::kSucceeded);
  EXPECT_EQ(w->calls[0].result, "r");
}

TEST_F(BrokerTest, WatchOnUnknownTaskIsNotFound) {
  auto w = std::make_shared<WatchCapture>();
  EXPECT_THAT(broker_->Watch(TaskId(31337), Capture(w)),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(w->calls, IsEmpty());
}

TEST_F(BrokerTest, UnwatchStopsCallbacks) {
  TaskId id = MustSubmit(Spec());
  auto w = std::make_shared<WatchCapture>();
  absl::StatusOr<WatchId> wid = broker_->Watch(id, Capture(w));
  ASSERT_THAT(wid, IsOk());
  broker_->Unwatch(*wid);
  LeasedTask l = LeaseOne();
  ASSERT_THAT(CompleteOne(id, l.token), IsOk());
  EXPECT_THAT(w->calls, SizeIs(1));
  EXPECT_EQ(w->final_count(), 0);
  broker_->Unwatch(*wid);  // twice: harmless
  broker_->Unwatch(0);
}

TEST_F(BrokerTest, SeveralWatchersOfOneTaskAreEachCalled) {
  TaskId id = MustSubmit(Spec());
  auto a = std::make_shared<WatchCapture>();
  auto b = std::make_shared<WatchCapture>();
  absl::StatusOr<WatchId> wa = broker_->Watch(id, Capture(a));
  absl::StatusOr<WatchId> wb = broker_->Watch(id, Capture(b));
  ASSERT_THAT(wa, IsOk());
  ASSERT_THAT(wb, IsOk());
  EXPECT_NE(*wa, *wb);
  broker_->Unwatch(*wa);
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  EXPECT_EQ(a->calls.size(), 1u);
  EXPECT_EQ(b->final_count(), 1);
  EXPECT_EQ(b->calls.back().state, TaskState::kCanceled);
}

TEST_F(BrokerTest, WatchEndsWithFinalWhenTaskIsPurged) {
  TaskId id = MustSubmit(Spec());
  auto w = std::make_shared<WatchCapture>();
  ASSERT_THAT(broker_->Watch(id, Capture(w)), IsOk());
  ASSERT_THAT(broker_->PurgeQueue("q"), IsOk());
  EXPECT_EQ(w->final_count(), 1) << "the task was dropped: the watch ends";
  EXPECT_TRUE(w->finals.back());
}

TEST_F(BrokerTest, WatchEndsWithFinalWhenTaskExpires) {
  TaskSpec spec = Spec();
  spec.expires_at = Now() + absl::Seconds(1);
  TaskId id = MustSubmit(spec);
  auto w = std::make_shared<WatchCapture>();
  ASSERT_THAT(broker_->Watch(id, Capture(w)), IsOk());
  AdvanceAndTick(absl::Seconds(2));
  EXPECT_EQ(w->final_count(), 1);
  EXPECT_EQ(w->calls.back().state, TaskState::kExpired);
}

TEST_F(BrokerTest, WatchCallbackMayCallBackIntoTheBroker) {
  TaskId id = MustSubmit(Spec());
  Broker* b = broker_.get();
  std::vector<TaskState> seen;
  absl::StatusOr<WatchId> wid =
      broker_->Watch(id, [b, &seen](const TaskInfo& t, bool) {
        absl::StatusOr<TaskInfo> now = b->GetTask(t.id);
        if (now.ok()) seen.push_back(now->state);
      });
  ASSERT_THAT(wid, IsOk());
  ASSERT_THAT(CompleteOne(id, LeaseOne().token), IsOk());
  EXPECT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), TaskState::kSucceeded);
}

// ── Drain ──

TEST_F(BrokerTest, DrainRejectsSubmitsAndLeasesWithUnavailable) {
  TaskId queued = MustSubmit(Spec());
  EXPECT_FALSE(broker_->draining());
  broker_->BeginDrain();
  EXPECT_TRUE(broker_->draining());

  EXPECT_THAT(broker_->SubmitNow(Spec()), StatusIs(absl::StatusCode::kUnavailable));
  auto sub = std::make_shared<SubmitCapture>();
  EXPECT_EQ(broker_->Submit(Spec(), absl::InfiniteFuture(), Capture(sub)), 0u);
  ASSERT_TRUE(sub->done());
  EXPECT_THAT(*sub->result, StatusIs(absl::StatusCode::kUnavailable));

  absl::StatusOr<std::vector<LeasedTask>> lease =
      LeaseNowOrStatus(LeaseRequest{"w", {"q"}, {}, 1, absl::ZeroDuration()});
  EXPECT_THAT(lease, StatusIs(absl::StatusCode::kUnavailable));
  auto poll = LeaseWait({"q"}, absl::Seconds(10));
  ASSERT_TRUE(poll->done()) << "a long-poll is not parked while draining";
  EXPECT_THAT(*poll->result, StatusIs(absl::StatusCode::kUnavailable));

  EXPECT_EQ(StateOf(queued), TaskState::kReady);
  EXPECT_EQ(broker_->task_count(), 1u);
}

TEST_F(BrokerTest, DrainEndsParkedLongPollsOkAndEmpty) {
  MustCreateQueue(Config("q"));
  auto a = LeaseWait({"q"}, absl::Seconds(30));
  auto b = LeaseWait({"other"}, absl::Seconds(30));
  ASSERT_FALSE(a->done());
  ASSERT_FALSE(b->done());
  broker_->BeginDrain();
  for (const auto& poll : {a, b}) {
    ASSERT_EQ(poll->calls, 1);
    ASSERT_THAT(*poll->result, IsOk());
    EXPECT_THAT(poll->tasks(), IsEmpty());
  }
  AdvanceAndTick(absl::Seconds(31));
  EXPECT_EQ(a->calls, 1);
  EXPECT_EQ(b->calls, 1);
}

TEST_F(BrokerTest, DrainEndsParkedSubmitsUnavailable) {
  QueueConfig c = Config("q");
  c.capacity = 1;
  c.full_policy = FullPolicy::kWait;
  MustCreateQueue(c);
  TaskId first = MustSubmit(Spec("q"));
  auto sub = std::make_shared<SubmitCapture>();
  ASSERT_NE(broker_->Submit(Spec("q"), Now() + absl::Minutes(1), Capture(sub)), 0u);
  broker_->BeginDrain();
  ASSERT_EQ(sub->calls, 1);
  EXPECT_THAT(*sub->result, StatusIs(absl::StatusCode::kUnavailable));
  // Room appearing later does not enqueue it.
  ASSERT_THAT(broker_->CancelTask(first), IsOk());
  AdvanceAndTick(absl::Minutes(2));
  EXPECT_EQ(sub->calls, 1);
  EXPECT_EQ(broker_->task_count(), 1u);
}

TEST_F(BrokerTest, ReportsKeepWorkingWhileDraining) {
  TaskSpec spec = Spec();
  spec.retry.initial_backoff = absl::Seconds(1);
  spec.retry.jitter = 0;
  TaskId a = MustSubmit(spec);
  TaskId b = MustSubmit(spec);
  TaskId c = MustSubmit(spec);
  std::vector<LeasedTask> got = LeaseNow({"q"}, 3);
  ASSERT_THAT(Ids(got), ElementsAre(a, b, c));
  broker_->BeginDrain();

  HeartbeatOutcome hb = HeartbeatOne(a, got[0].token, 50, "draining");
  EXPECT_THAT(hb.status, IsOk());
  EXPECT_THAT(CompleteOne(a, got[0].token, "landed"), IsOk());
  EXPECT_THAT(FailOne(b, got[1].token), IsOk());
  EXPECT_THAT(ReleaseOne(c, got[2].token), IsOk());
  EXPECT_EQ(StateOf(a), TaskState::kSucceeded);
  EXPECT_EQ(Get(a).result, "landed");
  EXPECT_EQ(StateOf(b), TaskState::kScheduled);
  EXPECT_EQ(StateOf(c), TaskState::kReady);
  EXPECT_EQ(broker_->running_count(), 0u);
  EXPECT_THAT(broker_->CancelTask(c), IsOk());
  EXPECT_THAT(broker_->GetTask(a), IsOk());
}

TEST_F(BrokerTest, BeginDrainTwiceIsHarmless) {
  broker_->BeginDrain();
  broker_->BeginDrain();
  EXPECT_TRUE(broker_->draining());
}

}  // namespace
}  // namespace conveyor::server::broker_test
