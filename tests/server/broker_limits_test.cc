// Broker-enforced limits (the "Limits" paragraph of server/broker.h): queue
// and per-key rates, turns by key within a priority, queue max_running and
// concurrency pools, throttled failures, wait reasons, live updates.
// Everything runs on the FakeClock; nothing sleeps.
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

RateLimit Rate(double per_second, uint32_t burst = 0) {
  RateLimit r;
  r.per_second = per_second;
  r.burst = burst;
  return r;
}

// Where `reason` is counted in QueueStats::blocked.
size_t BlockedIndex(WaitReason reason) {
  for (size_t i = 0; i < kBlockedReasons.size(); ++i) {
    if (kBlockedReasons[i] == reason) return i;
  }
  ADD_FAILURE() << "not a blocked reason: " << WaitReasonName(reason);
  return 0;
}

class BrokerLimitsTest : public BrokerTest {
 protected:
  void CreateWithLimits(const QueueLimits& limits, std::string name = "q") {
    QueueConfig c = Config(std::move(name));
    c.limits = limits;
    MustCreateQueue(c);
  }

  static TaskSpec Keyed(std::string rate_key, std::string conc_key = "",
                        uint32_t priority = 0, std::string queue = "q") {
    TaskSpec spec = Spec(std::move(queue));
    spec.rate_key = std::move(rate_key);
    spec.concurrency_key = std::move(conc_key);
    spec.priority = priority;
    return spec;
  }
  static TaskSpec Pooled(std::string conc_key, std::string queue = "q") {
    return Keyed("", std::move(conc_key), 0, std::move(queue));
  }

  // Leases from "q" and records every grant; a task granted twice fails the
  // test (for tests in which no task is leased again).
  std::vector<LeasedTask> Grant(uint32_t max_tasks) {
    std::vector<LeasedTask> got = LeaseNow({"q"}, max_tasks);
    Record(got);
    return got;
  }
  void Record(const std::vector<LeasedTask>& got) {
    for (const LeasedTask& t : got) {
      EXPECT_TRUE(granted_.insert(t.id.value()).second)
          << "task " << t.id.ToString() << " was granted twice";
    }
  }

  absl::Status ThrottleOne(TaskId id, uint64_t token, absl::Duration retry_after) {
    FailItem item;
    item.id = id;
    item.token = token;
    item.error = "429 too many requests";
    item.throttled = true;
    item.retry_after = retry_after;
    std::vector<absl::Status> s = broker_->Fail({item});
    EXPECT_EQ(s.size(), 1u);
    return s.empty() ? absl::InternalError("no outcome") : s[0];
  }

  uint64_t Running(absl::string_view queue = "q") {
    return GetQueue(queue).stats.count(TaskState::kRunning);
  }
  // Every task of the queue, whatever its state.
  uint64_t Total(absl::string_view queue = "q") {
    uint64_t n = 0;
    for (uint64_t c : GetQueue(queue).stats.by_state) n += c;
    return n;
  }
  uint64_t Blocked(WaitReason reason, absl::string_view queue = "q") {
    return GetQueue(queue).stats.blocked[BlockedIndex(reason)];
  }

  absl::flat_hash_set<uint64_t> granted_;
};

// ───────────────────────────── queue rate ─────────────────────────────

TEST_F(BrokerLimitsTest, QueueRateGrantsOneTokenNowAndOneEveryHundredMilliseconds) {
  QueueLimits l;
  l.rate = Rate(10, 1);
  CreateWithLimits(l);
  for (int i = 0; i < 20; ++i) MustSubmit(Spec());

  EXPECT_THAT(Grant(5), SizeIs(1)) << "the burst of 1 is spent at once";
  EXPECT_THAT(Grant(5), IsEmpty());
  AdvanceAndTick(absl::Milliseconds(99));
  EXPECT_THAT(Grant(5), IsEmpty());
  AdvanceAndTick(absl::Milliseconds(1));
  EXPECT_THAT(Grant(5), SizeIs(1));
  EXPECT_THAT(Grant(5), IsEmpty());
  AdvanceAndTick(absl::Milliseconds(100));
  EXPECT_THAT(Grant(5), SizeIs(1));
  EXPECT_EQ(Running(), 3u);
}

TEST_F(BrokerLimitsTest, QueueRateStartsAboutOneHundredTasksInTenSeconds) {
  QueueLimits l;
  l.rate = Rate(10, 1);
  CreateWithLimits(l);
  for (int i = 0; i < 300; ++i) MustSubmit(Spec());

  size_t started = 0;
  for (int i = 0; i < 1000; ++i) {  // a lease every 10 ms for 10 s
    started += Grant(5).size();
    AdvanceAndTick(absl::Milliseconds(10));
  }
  EXPECT_NEAR(static_cast<double>(started), 100.0, 1.0);
}

TEST_F(BrokerLimitsTest, ParkedLeaseIsAnsweredWhenTheQueueTokenArrives) {
  QueueLimits l;
  l.rate = Rate(10, 1);
  CreateWithLimits(l);
  MustSubmit(Spec());
  TaskId second = MustSubmit(Spec());
  ASSERT_THAT(Grant(1), SizeIs(1));

  const absl::Time token_at = Now() + absl::Milliseconds(100);
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(5));
  EXPECT_FALSE(parked->done());
  EXPECT_LE(broker_->NextTimer(), token_at) << "the broker must arm a timer for the token";
  EXPECT_GT(broker_->NextTimer(), Now());

  AdvanceAndTick(absl::Milliseconds(99));
  EXPECT_FALSE(parked->done());
  EXPECT_LE(broker_->NextTimer(), token_at);

  AdvanceAndTick(absl::Milliseconds(1));
  ASSERT_TRUE(parked->done());
  ASSERT_THAT(*parked->result, IsOk());
  EXPECT_THAT(Ids(parked->tasks()), ElementsAre(second));
  EXPECT_EQ(parked->calls, 1);
}

// ───────────────────────────── key rates ─────────────────────────────

TEST_F(BrokerLimitsTest, KeyRateHoldsBackOnlyItsOwnKeyAndAnOverrideWins) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);             // A and C: 1/s
  l.key_rates["B"] = Rate(1000, 100);  // B: its own, much higher
  CreateWithLimits(l);
  std::vector<TaskId> a, b, c;
  for (int i = 0; i < 5; ++i) a.push_back(MustSubmit(Keyed("A")));
  for (int i = 0; i < 3; ++i) c.push_back(MustSubmit(Keyed("C")));
  for (int i = 0; i < 5; ++i) b.push_back(MustSubmit(Keyed("B")));  // after A's backlog

  // One at a time: every call finds a task; A's backlog blocks nobody.
  std::vector<TaskId> got;
  for (int i = 0; i < 7; ++i) {
    std::vector<LeasedTask> one = Grant(1);
    ASSERT_THAT(one, SizeIs(1)) << "lease " << i;
    got.push_back(one[0].id);
  }
  EXPECT_THAT(got, UnorderedElementsAre(a[0], c[0], b[0], b[1], b[2], b[3], b[4]));
  EXPECT_THAT(Grant(10), IsEmpty());

  AdvanceAndTick(absl::Milliseconds(999));
  EXPECT_THAT(Grant(10), IsEmpty());
  AdvanceAndTick(absl::Milliseconds(1));
  EXPECT_THAT(Ids(Grant(10)), UnorderedElementsAre(a[1], c[1]));
}

TEST_F(BrokerLimitsTest, KeyRateInOneBatchedLeaseSkipsTheHeldBackKey) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);
  CreateWithLimits(l);
  std::vector<TaskId> a, b;
  for (int i = 0; i < 4; ++i) a.push_back(MustSubmit(Keyed("A")));
  for (int i = 0; i < 4; ++i) b.push_back(MustSubmit(Keyed("B")));
  TaskId unkeyed = MustSubmit(Spec());
  EXPECT_THAT(Ids(Grant(20)), UnorderedElementsAre(a[0], b[0], unkeyed));
}

TEST_F(BrokerLimitsTest, ParkedLeaseIsAnsweredWhenAKeyTokenArrives) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);
  CreateWithLimits(l);
  MustSubmit(Keyed("K"));
  TaskId second = MustSubmit(Keyed("K"));
  ASSERT_THAT(Grant(1), SizeIs(1));

  const absl::Time token_at = Now() + absl::Seconds(1);
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(10));
  EXPECT_FALSE(parked->done());
  EXPECT_LE(broker_->NextTimer(), token_at);
  AdvanceAndTick(absl::Milliseconds(999));
  EXPECT_FALSE(parked->done());
  AdvanceAndTick(absl::Milliseconds(1));
  ASSERT_TRUE(parked->done());
  EXPECT_THAT(Ids(parked->tasks()), ElementsAre(second));
}

TEST_F(BrokerLimitsTest, LeaseParkedMidRefillIsAnsweredAtTheKeyTokenTime) {
  // The key's token is spent at t0; a task of the key arrives 90 ms later and
  // a Lease parks for it. The token is there at t0 + 100 ms exactly: a fresh
  // Lease would get it then, so the parked one must be answered then too.
  QueueLimits l;
  l.key_rate = Rate(10, 1);
  CreateWithLimits(l);
  MustSubmit(Keyed("K"));
  const absl::Time t0 = Now();
  ASSERT_THAT(Grant(1), SizeIs(1));
  AdvanceAndTick(absl::Milliseconds(90));
  TaskId second = MustSubmit(Keyed("K"));
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(10));
  EXPECT_FALSE(parked->done());
  const absl::Time token_at = t0 + absl::Milliseconds(100);
  EXPECT_LE(broker_->NextTimer(), token_at) << "the wake timer must not be later than the token";
  EXPECT_EQ(Get(second).waiting.until, token_at);
  AdvanceAndTick(absl::Milliseconds(10));
  ASSERT_TRUE(parked->done()) << "not answered at the token time";
  EXPECT_THAT(Ids(parked->tasks()), ElementsAre(second));
}

// ───────────────────────────── turns by key ─────────────────────────────

// 1000 tasks of "big", then 10 of "small", with keys that never bind.
class BrokerLimitsFairnessTest : public BrokerLimitsTest {
 protected:
  // `spread`: the clock moves this much after each submit.
  void SubmitBigThenSmall(bool by_concurrency_key,
                          absl::Duration spread = absl::ZeroDuration()) {
    QueueLimits l;
    if (by_concurrency_key) {
      l.key_max_running = 100'000;  // never binds
    } else {
      l.key_rate = Rate(1'000'000, 1'000'000);  // never binds
    }
    CreateWithLimits(l);
    auto spec = [&](const std::string& key) {
      return by_concurrency_key ? Pooled(key) : Keyed(key);
    };
    for (int i = 0; i < 1000; ++i) {
      big_.insert(MustSubmit(spec("big")).value());
      clock_.Advance(spread);
    }
    for (int i = 0; i < 10; ++i) {
      small_.insert(MustSubmit(spec("small")).value());
      clock_.Advance(spread);
    }
  }
  std::string Label(const LeasedTask& t) const {
    return small_.contains(t.id.value()) ? "small" : big_.contains(t.id.value()) ? "big" : "?";
  }
  std::vector<std::string> Labels(const std::vector<LeasedTask>& got) const {
    std::vector<std::string> out;
    for (const auto& t : got) out.push_back(Label(t));
    return out;
  }
  static std::vector<std::string> Alternating(int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back(i % 2 == 0 ? "big" : "small");
    return out;
  }
  static int CountSmall(const std::vector<std::string>& labels) {
    return static_cast<int>(std::count(labels.begin(), labels.end(), "small"));
  }

  absl::flat_hash_set<uint64_t> big_, small_;
};

TEST_F(BrokerLimitsFairnessTest, KeysTakeTurnsWhenLeasedOneAtATimeAsTimePasses) {
  SubmitBigThenSmall(/*by_concurrency_key=*/false);
  std::vector<LeasedTask> got;
  for (int i = 0; i < 20; ++i) {
    AdvanceAndTick(absl::Milliseconds(5));
    std::vector<LeasedTask> one = Grant(1);
    ASSERT_THAT(one, SizeIs(1));
    got.push_back(one[0]);
  }
  std::vector<std::string> labels = Labels(got);
  EXPECT_EQ(CountSmall(labels), 10) << absl::StrJoin(labels, ",");
  EXPECT_EQ(labels, Alternating(20));
}

TEST_F(BrokerLimitsFairnessTest, KeysTakeTurnsWhenLeasedOneAtATimeAtTheSameInstant) {
  SubmitBigThenSmall(/*by_concurrency_key=*/false);
  std::vector<LeasedTask> got;
  for (int i = 0; i < 20; ++i) {
    std::vector<LeasedTask> one = Grant(1);
    ASSERT_THAT(one, SizeIs(1));
    got.push_back(one[0]);
  }
  std::vector<std::string> labels = Labels(got);
  EXPECT_EQ(CountSmall(labels), 10) << absl::StrJoin(labels, ",");
  EXPECT_EQ(labels, Alternating(20));
}

TEST_F(BrokerLimitsFairnessTest, KeysTakeTurnsWithinOneBatchedLease) {
  SubmitBigThenSmall(/*by_concurrency_key=*/false);
  std::vector<std::string> labels = Labels(Grant(20));
  ASSERT_THAT(labels, SizeIs(20));
  EXPECT_EQ(CountSmall(labels), 10) << absl::StrJoin(labels, ",");
  EXPECT_EQ(labels, Alternating(20));
}

TEST_F(BrokerLimitsFairnessTest, KeysTakeTurnsWithinOneBatchedLeaseOfTasksSubmittedOverTime) {
  // The usual case: tasks arrived over time, a worker leases 20 at once.
  SubmitBigThenSmall(/*by_concurrency_key=*/false, absl::Milliseconds(1));
  AdvanceAndTick(absl::Seconds(1));
  std::vector<std::string> labels = Labels(Grant(20));
  ASSERT_THAT(labels, SizeIs(20));
  EXPECT_EQ(CountSmall(labels), 10) << absl::StrJoin(labels, ",");
  EXPECT_EQ(labels, Alternating(20));
}

TEST_F(BrokerLimitsFairnessTest, ConcurrencyKeysTakeTurnsToo) {
  SubmitBigThenSmall(/*by_concurrency_key=*/true);
  std::vector<LeasedTask> got;
  for (int i = 0; i < 20; ++i) {
    AdvanceAndTick(absl::Milliseconds(5));
    std::vector<LeasedTask> one = Grant(1);
    ASSERT_THAT(one, SizeIs(1));
    got.push_back(one[0]);
  }
  std::vector<std::string> labels = Labels(got);
  EXPECT_EQ(CountSmall(labels), 10) << absl::StrJoin(labels, ",");
}

TEST_F(BrokerLimitsTest, PriorityWinsOverTurns) {
  QueueLimits l;
  l.key_rate = Rate(1'000'000, 1'000'000);
  CreateWithLimits(l);
  std::vector<TaskId> big, small;
  for (int i = 0; i < 5; ++i) big.push_back(MustSubmit(Keyed("big")));
  for (int i = 0; i < 5; ++i) small.push_back(MustSubmit(Keyed("small")));
  TaskId vip = MustSubmit(Keyed("big", "", /*priority=*/5));

  EXPECT_EQ(LeaseOne().id, vip) << "the highest priority goes first, whatever its key";
  AdvanceAndTick(absl::Milliseconds(5));
  // "big" was just served, so "small" has the turn at priority 0...
  EXPECT_EQ(LeaseOne().id, small[0]);
  AdvanceAndTick(absl::Milliseconds(5));
  EXPECT_EQ(LeaseOne().id, big[0]);
  AdvanceAndTick(absl::Milliseconds(5));
  // ...but a higher-priority task of the key that was just served beats it.
  TaskId urgent = MustSubmit(Keyed("big", "", /*priority=*/3));
  EXPECT_EQ(LeaseOne().id, urgent);
  TaskId unkeyed_urgent = MustSubmit(Keyed("", "", /*priority=*/2));
  EXPECT_EQ(LeaseOne().id, unkeyed_urgent);
  EXPECT_EQ(LeaseOne().id, small[1]);
}

TEST_F(BrokerLimitsTest, TasksWithoutKeysStayFifoAmongThemselves) {
  QueueLimits l;
  l.key_rate = Rate(1'000'000, 1'000'000);
  CreateWithLimits(l);
  std::vector<TaskId> unkeyed, a;
  for (int i = 0; i < 4; ++i) {
    unkeyed.push_back(MustSubmit(Spec()));
    a.push_back(MustSubmit(Keyed("a")));
    MustSubmit(Keyed(absl::StrCat("k", i)));
  }
  unkeyed.push_back(MustSubmit(Spec()));

  std::vector<TaskId> order_unkeyed, order_a;
  absl::flat_hash_set<uint64_t> is_unkeyed, is_a;
  for (TaskId id : unkeyed) is_unkeyed.insert(id.value());
  for (TaskId id : a) is_a.insert(id.value());
  for (int i = 0; i < 13; ++i) {
    std::vector<LeasedTask> one = Grant(1);
    ASSERT_THAT(one, SizeIs(1));
    if (is_unkeyed.contains(one[0].id.value())) order_unkeyed.push_back(one[0].id);
    if (is_a.contains(one[0].id.value())) order_a.push_back(one[0].id);
  }
  EXPECT_THAT(Grant(1), IsEmpty());
  EXPECT_EQ(order_unkeyed, unkeyed);
  EXPECT_EQ(order_a, a) << "FIFO within one key too";
}

// ───────────────────────────── max_running ─────────────────────────────

TEST_F(BrokerLimitsTest, QueueMaxRunningGrantsNothingMoreUntilOneCompletes) {
  QueueLimits l;
  l.max_running = 2;
  CreateWithLimits(l);
  for (int i = 0; i < 5; ++i) MustSubmit(Spec());
  std::vector<LeasedTask> got = Grant(5);
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_THAT(Grant(5), IsEmpty());
  EXPECT_THAT(LeaseNow({"q"}, 1, {}, "another-worker"), IsEmpty())
      << "the limit holds across workers";
  ASSERT_THAT(CompleteOne(got[0].id, got[0].token), IsOk());
  EXPECT_THAT(Grant(5), SizeIs(1));
  EXPECT_EQ(Running(), 2u);
}

TEST_F(BrokerLimitsTest, RunningSlotIsFreedOnEveryWayOutOfRunningAndNeverLeaked) {
  QueueLimits l;
  l.max_running = 2;
  CreateWithLimits(l);
  for (int i = 0; i < 12; ++i) MustSubmit(Spec());
  auto none_more = [&](const char* where) {
    EXPECT_THAT(LeaseNow({"q"}, 5), IsEmpty()) << where;
    EXPECT_EQ(Running(), 2u) << where;
  };

  std::vector<LeasedTask> g = LeaseNow({"q"}, 5);
  ASSERT_THAT(g, SizeIs(2));
  none_more("start");

  // Complete.
  ASSERT_THAT(CompleteOne(g[0].id, g[0].token), IsOk());
  std::vector<LeasedTask> g2 = LeaseNow({"q"}, 5);
  ASSERT_THAT(g2, SizeIs(1)) << "after complete";
  none_more("after complete");

  // A retryable failure (the task waits in backoff).
  ASSERT_THAT(FailOne(g[1].id, g[1].token, /*retryable=*/true), IsOk());
  EXPECT_EQ(StateOf(g[1].id), TaskState::kScheduled);
  std::vector<LeasedTask> g3 = LeaseNow({"q"}, 5);
  ASSERT_THAT(g3, SizeIs(1)) << "after a retryable fail";
  none_more("after a retryable fail");

  // Cancel of a running task: the slot stays taken until its worker reports.
  ASSERT_THAT(broker_->CancelTask(g2[0].id), IsOk());
  none_more("after cancel, before the worker reports");
  ASSERT_THAT(FailOne(g2[0].id, g2[0].token, /*retryable=*/true, "stopped"), IsOk());
  EXPECT_EQ(StateOf(g2[0].id), TaskState::kCanceled);
  std::vector<LeasedTask> g4 = LeaseNow({"q"}, 5);
  ASSERT_THAT(g4, SizeIs(1)) << "after the canceled task's worker reported";
  none_more("after cancel");

  // Lease expiry (both running leases lapse); a parked lease is served.
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(60), 5);
  EXPECT_FALSE(parked->done());
  AdvanceAndTick(kLease + absl::Seconds(1));
  EXPECT_EQ(Get(g3[0].id).crashes, 1u);
  EXPECT_EQ(Get(g4[0].id).crashes, 1u);
  ASSERT_TRUE(parked->done()) << "a parked lease is served when expiry frees a slot";
  ASSERT_THAT(*parked->result, IsOk());
  // It was answered when the first lease lapsed; the second slot is free too.
  std::vector<LeasedTask> g5 = parked->tasks();
  ASSERT_THAT(g5, Not(IsEmpty()));
  std::vector<LeasedTask> more = LeaseNow({"q"}, 5);
  g5.insert(g5.end(), more.begin(), more.end());
  ASSERT_THAT(g5, SizeIs(2)) << "after lease expiry";
  none_more("after lease expiry");

  // Release.
  ASSERT_THAT(ReleaseOne(g5[0].id, g5[0].token), IsOk());
  EXPECT_EQ(StateOf(g5[0].id), TaskState::kReady);
  std::vector<LeasedTask> g6 = LeaseNow({"q"}, 5);
  ASSERT_THAT(g6, SizeIs(1)) << "after release";
  none_more("after release");

  // Nothing leaked: with both finished, max_running tasks run again.
  ASSERT_THAT(CompleteOne(g5[1].id, g5[1].token), IsOk());
  ASSERT_THAT(CompleteOne(g6[0].id, g6[0].token), IsOk());
  EXPECT_EQ(Running(), 0u);
  std::vector<LeasedTask> g7 = LeaseNow({"q"}, 5);
  EXPECT_THAT(g7, SizeIs(2)) << "both slots are free again";
  none_more("end");
  EXPECT_EQ(Total(), 12u);
}

TEST_F(BrokerLimitsTest, ParkedLeaseIsServedWhenARunningSlotFrees) {
  QueueLimits l;
  l.max_running = 1;
  CreateWithLimits(l);
  MustSubmit(Spec());
  TaskId second = MustSubmit(Spec());
  LeasedTask first = LeaseOne();
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(10));
  EXPECT_FALSE(parked->done());
  ASSERT_THAT(CompleteOne(first.id, first.token), IsOk());
  ASSERT_TRUE(parked->done());
  EXPECT_THAT(Ids(parked->tasks()), ElementsAre(second));
}

// ───────────────────────────── pools ─────────────────────────────

TEST_F(BrokerLimitsTest, NamedPoolNeverRunsMoreThanItsSizeAcrossManyLeases) {
  QueueLimits l;
  l.pools["db"] = 2;
  l.key_max_running = 1;
  CreateWithLimits(l);
  for (int i = 0; i < 20; ++i) MustSubmit(Pooled("db"));

  std::vector<LeasedTask> running;
  size_t granted = 0, most = 0;
  for (int i = 0; i < 40 && granted < 20; ++i) {
    std::vector<LeasedTask> got = Grant(3);
    granted += got.size();
    running.insert(running.end(), got.begin(), got.end());
    most = std::max(most, running.size());
    ASSERT_LE(running.size(), 2u) << "iteration " << i;
    EXPECT_EQ(Running(), running.size());
    if (!running.empty()) {
      ASSERT_THAT(CompleteOne(running.front().id, running.front().token), IsOk());
      running.erase(running.begin());
    }
  }
  EXPECT_EQ(granted, 20u);
  EXPECT_EQ(most, 2u);
}

TEST_F(BrokerLimitsTest, KeyMaxRunningAppliesToEachKeyWithoutANamedPool) {
  QueueLimits l;
  l.pools["db"] = 2;
  l.key_max_running = 1;
  CreateWithLimits(l);
  std::vector<TaskId> x, y;
  for (int i = 0; i < 3; ++i) x.push_back(MustSubmit(Pooled("x")));
  for (int i = 0; i < 3; ++i) y.push_back(MustSubmit(Pooled("y")));
  std::vector<LeasedTask> got = Grant(10);
  EXPECT_THAT(Ids(got), UnorderedElementsAre(x[0], y[0]));
  EXPECT_THAT(Grant(10), IsEmpty());
  ASSERT_THAT(CompleteOne(got[0].id, got[0].token), IsOk());
  EXPECT_THAT(Grant(10), SizeIs(1));
}

TEST_F(BrokerLimitsTest, FullPoolDoesNotBlockOtherKeysOrUnkeyedTasks) {
  QueueLimits l;
  l.pools["db"] = 2;
  l.key_max_running = 1;
  CreateWithLimits(l);
  std::vector<TaskId> db, x, plain;
  for (int i = 0; i < 5; ++i) db.push_back(MustSubmit(Pooled("db")));  // the oldest
  for (int i = 0; i < 2; ++i) x.push_back(MustSubmit(Pooled("x")));
  for (int i = 0; i < 2; ++i) plain.push_back(MustSubmit(Spec()));

  std::vector<LeasedTask> got = Grant(10);
  EXPECT_THAT(Ids(got), UnorderedElementsAre(db[0], db[1], x[0], plain[0], plain[1]));
  EXPECT_THAT(Grant(10), IsEmpty());

  // x's slot frees: only x's next task may start (db is still full).
  auto find = [&](TaskId id) {
    return *std::find_if(got.begin(), got.end(), [&](const LeasedTask& t) { return t.id == id; });
  };
  LeasedTask x0 = find(x[0]);
  ASSERT_THAT(CompleteOne(x0.id, x0.token), IsOk());
  EXPECT_THAT(Ids(Grant(10)), ElementsAre(x[1]));
  LeasedTask db0 = find(db[0]);
  ASSERT_THAT(CompleteOne(db0.id, db0.token), IsOk());
  EXPECT_THAT(Ids(Grant(10)), ElementsAre(db[2]));
  EXPECT_THAT(Grant(10), IsEmpty());
}

TEST_F(BrokerLimitsTest, FullPoolDoesNotBlockOthersWhenLeasingOneAtATime) {
  QueueLimits l;
  l.pools["db"] = 2;
  CreateWithLimits(l);
  std::vector<TaskId> db;
  for (int i = 0; i < 50; ++i) db.push_back(MustSubmit(Pooled("db")));
  TaskId other = MustSubmit(Pooled("other"));
  TaskId plain = MustSubmit(Spec());
  std::vector<TaskId> got;
  for (int i = 0; i < 4; ++i) {
    std::vector<LeasedTask> one = Grant(1);
    ASSERT_THAT(one, SizeIs(1)) << "lease " << i;
    got.push_back(one[0].id);
  }
  EXPECT_THAT(got, UnorderedElementsAre(db[0], db[1], other, plain));
  EXPECT_THAT(Grant(1), IsEmpty());
}

TEST_F(BrokerLimitsTest, ParkedLeaseIsServedWhenAPoolSlotFrees) {
  QueueLimits l;
  l.pools["db"] = 2;
  CreateWithLimits(l);
  for (int i = 0; i < 4; ++i) MustSubmit(Pooled("db"));
  std::vector<LeasedTask> got = Grant(5);
  ASSERT_THAT(got, SizeIs(2));
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(10), 5);
  EXPECT_FALSE(parked->done());

  ASSERT_THAT(CompleteOne(got[0].id, got[0].token), IsOk());
  ASSERT_TRUE(parked->done());
  ASSERT_THAT(*parked->result, IsOk());
  EXPECT_THAT(parked->tasks(), SizeIs(1)) << "one slot freed: one task";
  Record(parked->tasks());

  // A retryable failure frees a slot for the next parked call too.
  std::shared_ptr<LeaseCapture> parked2 = LeaseWait({"q"}, absl::Seconds(10), 5);
  EXPECT_FALSE(parked2->done());
  ASSERT_THAT(FailOne(got[1].id, got[1].token), IsOk());
  ASSERT_TRUE(parked2->done());
  EXPECT_THAT(parked2->tasks(), SizeIs(1));
  Record(parked2->tasks());
  EXPECT_EQ(Running(), 2u);
}

// ───────────────────────────── throttle ─────────────────────────────

TEST_F(BrokerLimitsTest, ThrottledFailPausesOnlyItsRateKeyAndSpendsNothing) {
  TaskId k1 = MustSubmit(Keyed("K"));
  TaskId k2 = MustSubmit(Keyed("K"));
  TaskId other = MustSubmit(Keyed("L"));
  TaskId plain = MustSubmit(Spec());
  LeasedTask l1 = LeaseOne();
  ASSERT_EQ(l1.id, k1);
  const absl::Time t0 = Now();

  ASSERT_THAT(ThrottleOne(k1, l1.token, absl::Seconds(2)), IsOk());
  TaskInfo t = Get(k1);
  EXPECT_EQ(t.state, TaskState::kReady);
  EXPECT_EQ(t.attempts, 0u);
  EXPECT_EQ(t.crashes, 0u);
  EXPECT_EQ(listener_.Count("retried", k1), 0);
  EXPECT_EQ(Running(), 0u);

  EXPECT_THAT(Ids(LeaseNow({"q"}, 10)), UnorderedElementsAre(other, plain));
  AdvanceAndTick(absl::Milliseconds(1999));
  EXPECT_THAT(LeaseNow({"q"}, 10), IsEmpty()) << "K is paused for 2 s";
  WaitInfo w = Get(k2).waiting;
  EXPECT_EQ(w.reason, WaitReason::kRateLimited);
  EXPECT_EQ(w.key, "K");
  EXPECT_EQ(w.until, t0 + absl::Seconds(2));

  AdvanceAndTick(absl::Milliseconds(1));
  std::vector<LeasedTask> again = LeaseNow({"q"}, 10);
  EXPECT_THAT(Ids(again), UnorderedElementsAre(k1, k2));
  for (const LeasedTask& g : again) {
    if (g.id != k1) continue;
    EXPECT_EQ(g.attempt, 1u) << "a throttle spends no attempt";
    EXPECT_GT(g.token, l1.token);
  }
}

TEST_F(BrokerLimitsTest, ThrottledFailWithoutRateKeyPausesTheWholeQueue) {
  TaskId u1 = MustSubmit(Spec());
  TaskId u2 = MustSubmit(Spec());
  TaskId keyed = MustSubmit(Keyed("K"));
  TaskId elsewhere = MustSubmit(Spec("other"));
  LeasedTask l1 = LeaseOne();
  ASSERT_EQ(l1.id, u1);
  const absl::Time until = Now() + absl::Seconds(2);

  ASSERT_THAT(ThrottleOne(u1, l1.token, absl::Seconds(2)), IsOk());
  EXPECT_EQ(Get(u1).attempts, 0u);
  EXPECT_THAT(LeaseNow({"q"}, 10), IsEmpty()) << "the whole queue is paused";
  EXPECT_THAT(Ids(LeaseNow({"other"}, 10)), ElementsAre(elsewhere)) << "other queues are not";
  WaitInfo w = Get(u2).waiting;
  EXPECT_EQ(w.reason, WaitReason::kRateLimited);
  EXPECT_EQ(w.key, "");
  EXPECT_EQ(w.until, until);
  EXPECT_EQ(Get(keyed).waiting.reason, WaitReason::kRateLimited);

  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(10), 10);
  EXPECT_FALSE(parked->done());
  EXPECT_LE(broker_->NextTimer(), until);
  AdvanceAndTick(absl::Milliseconds(1999));
  EXPECT_FALSE(parked->done());
  AdvanceAndTick(absl::Milliseconds(1));
  ASSERT_TRUE(parked->done());
  EXPECT_THAT(Ids(parked->tasks()), UnorderedElementsAre(u1, u2, keyed));
}

TEST_F(BrokerLimitsTest, ThrottleWithoutRetryAfterUsesTheDefaultThrottle) {
  BrokerOptions o;
  o.default_throttle = absl::Seconds(5);
  Reset(o);
  TaskId k1 = MustSubmit(Keyed("K"));
  LeasedTask l1 = LeaseOne();
  ASSERT_THAT(ThrottleOne(k1, l1.token, absl::ZeroDuration()), IsOk());
  EXPECT_EQ(Get(k1).waiting.until, Now() + absl::Seconds(5));
  AdvanceAndTick(absl::Milliseconds(4999));
  EXPECT_THAT(LeaseNow({"q"}), IsEmpty());
  AdvanceAndTick(absl::Milliseconds(1));
  EXPECT_THAT(Ids(LeaseNow({"q"})), ElementsAre(k1));
}

TEST_F(BrokerLimitsTest, ThrottleRetryAfterOverMaxIsInvalidAndChangesNothing) {
  BrokerOptions o;
  o.max_throttle = absl::Seconds(10);
  Reset(o);
  TaskId k1 = MustSubmit(Keyed("K"));
  TaskId k2 = MustSubmit(Keyed("K"));
  LeasedTask l1 = LeaseOne();
  ASSERT_EQ(l1.id, k1);

  EXPECT_THAT(ThrottleOne(k1, l1.token, absl::Seconds(11)),
              StatusIs(absl::StatusCode::kInvalidArgument, "retry_after"));
  EXPECT_THAT(ThrottleOne(k1, l1.token, -absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, "retry_after"));
  TaskInfo t = Get(k1);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.token, l1.token);
  EXPECT_EQ(Get(k2).waiting.reason, WaitReason::kNone) << "K is not paused";
  std::vector<LeasedTask> l2 = LeaseNow({"q"});
  ASSERT_THAT(Ids(l2), ElementsAre(k2));
  EXPECT_THAT(CompleteOne(k1, l1.token), IsOk());

  // Exactly max_throttle is allowed, in a batch next to a bad item.
  TaskId k3 = MustSubmit(Keyed("K"));
  LeasedTask l3 = LeaseOne();
  ASSERT_EQ(l3.id, k3);
  FailItem ok_item{k3, l3.token, "slow down", true, "", true, absl::Seconds(10)};
  FailItem bad_item{k2, l2[0].token, "x", true, "", true, absl::Seconds(11)};
  std::vector<absl::Status> s = broker_->Fail({bad_item, ok_item});
  ASSERT_THAT(s, SizeIs(2));
  EXPECT_THAT(s[0], StatusIs(absl::StatusCode::kInvalidArgument, "retry_after"));
  EXPECT_THAT(s[1], IsOk());
  EXPECT_EQ(Get(k2).state, TaskState::kRunning);
  EXPECT_EQ(Get(k3).state, TaskState::kReady);
}

TEST_F(BrokerLimitsTest, ThrottledReportWithAStaleTokenIsFailedPrecondition) {
  TaskId k1 = MustSubmit(Keyed("K"));
  LeasedTask first = LeaseOne();
  ASSERT_THAT(ThrottleOne(k1, first.token, absl::Seconds(1)), IsOk());
  AdvanceAndTick(absl::Seconds(1));
  LeasedTask second = LeaseOne();
  ASSERT_EQ(second.id, k1);
  ASSERT_GT(second.token, first.token);

  EXPECT_THAT(ThrottleOne(k1, first.token, absl::Seconds(30)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  TaskInfo t = Get(k1);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.token, second.token);
  // K was not paused by the stale report.
  TaskId k2 = MustSubmit(Keyed("K"));
  EXPECT_THAT(Ids(LeaseNow({"q"})), ElementsAre(k2));
}

// ───────────────────────────── wait reasons ─────────────────────────────

TEST_F(BrokerLimitsTest, WaitReasonPaused) {
  TaskId id = MustSubmit(Spec());
  ASSERT_THAT(broker_->PauseQueue("q"), IsOk());
  WaitInfo w = Get(id).waiting;
  EXPECT_EQ(w.reason, WaitReason::kPaused);
  EXPECT_FALSE(w.detail.empty());
  EXPECT_EQ(Blocked(WaitReason::kPaused), 1u);
  EXPECT_EQ(Blocked(WaitReason::kNoWorker), 0u) << "each task counts once";
}

TEST_F(BrokerLimitsTest, WaitReasonQueueRateLimitedUntilTheNextToken) {
  QueueLimits l;
  l.rate = Rate(1, 1);
  CreateWithLimits(l);
  MustSubmit(Spec());
  TaskId second = MustSubmit(Spec());
  TaskId third = MustSubmit(Keyed("K"));
  ASSERT_THAT(Grant(1), SizeIs(1));
  WaitInfo w = Get(second).waiting;
  EXPECT_EQ(w.reason, WaitReason::kRateLimited);
  EXPECT_EQ(w.key, "");
  EXPECT_EQ(w.until, Now() + absl::Seconds(1));
  EXPECT_EQ(Get(third).waiting.reason, WaitReason::kRateLimited);
  EXPECT_EQ(Blocked(WaitReason::kRateLimited), 2u);
  AdvanceAndTick(absl::Seconds(1));
  EXPECT_EQ(Get(second).waiting.reason, WaitReason::kNone);
  EXPECT_EQ(Blocked(WaitReason::kRateLimited), 0u);
}

TEST_F(BrokerLimitsTest, WaitReasonKeyRateLimitedNamesTheKeyAndTheTime) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);
  CreateWithLimits(l);
  MustSubmit(Keyed("K"));
  TaskId k2 = MustSubmit(Keyed("K"));
  TaskId plain = MustSubmit(Spec());
  ASSERT_THAT(Grant(1), SizeIs(1));
  WaitInfo w = Get(k2).waiting;
  EXPECT_EQ(w.reason, WaitReason::kRateLimited);
  EXPECT_EQ(w.key, "K");
  EXPECT_EQ(w.until, Now() + absl::Seconds(1));
  EXPECT_THAT(w.detail, HasSubstr("K"));
  EXPECT_EQ(Get(plain).waiting.reason, WaitReason::kNone);
  EXPECT_EQ(Blocked(WaitReason::kRateLimited), 1u);
}

TEST_F(BrokerLimitsTest, WaitReasonConcurrencyFullNamesThePool) {
  QueueLimits l;
  l.pools["db"] = 1;
  CreateWithLimits(l);
  MustSubmit(Pooled("db"));
  TaskId d2 = MustSubmit(Pooled("db"));
  TaskId d3 = MustSubmit(Pooled("db"));
  ASSERT_THAT(Grant(1), SizeIs(1));
  WaitInfo w = Get(d2).waiting;
  EXPECT_EQ(w.reason, WaitReason::kConcurrencyFull);
  EXPECT_EQ(w.key, "db");
  EXPECT_THAT(w.detail, HasSubstr("db"));
  EXPECT_EQ(Get(d3).waiting.reason, WaitReason::kConcurrencyFull);
  EXPECT_EQ(Blocked(WaitReason::kConcurrencyFull), 2u);
}

TEST_F(BrokerLimitsTest, WaitReasonConcurrencyFullForTheQueueMaxRunning) {
  QueueLimits l;
  l.max_running = 1;
  CreateWithLimits(l);
  TaskId first = MustSubmit(Spec());
  TaskId second = MustSubmit(Spec());
  ASSERT_THAT(Grant(1), SizeIs(1));
  EXPECT_EQ(Get(first).waiting.reason, WaitReason::kNotWaiting) << "it runs";
  WaitInfo w = Get(second).waiting;
  EXPECT_EQ(w.reason, WaitReason::kConcurrencyFull);
  EXPECT_EQ(w.key, "");
  EXPECT_EQ(Blocked(WaitReason::kConcurrencyFull), 1u);
}

TEST_F(BrokerLimitsTest, WaitReasonNotDueUntilNotBefore) {
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(10);
  TaskId id = MustSubmit(spec);
  WaitInfo w = Get(id).waiting;
  EXPECT_EQ(w.reason, WaitReason::kNotDue);
  EXPECT_EQ(w.until, spec.not_before);
  EXPECT_EQ(Blocked(WaitReason::kNotDue), 1u);
  EXPECT_EQ(Blocked(WaitReason::kNoWorker), 0u);
}

TEST_F(BrokerLimitsTest, WaitReasonNoWorkerUntilALeaseNamesTheQueue) {
  BrokerOptions o;
  o.worker_idle = absl::Seconds(10);
  Reset(o);
  TaskId id = MustSubmit(Spec());
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNoWorker) << "nobody ever polled";
  EXPECT_EQ(Blocked(WaitReason::kNoWorker), 1u);

  // A Lease naming the queue (for another type, so it takes nothing).
  EXPECT_THAT(LeaseNow({"q"}, 1, {"other-type"}), IsEmpty());
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNone);
  for (size_t i = 0; i < kBlockedReasons.size(); ++i) {
    EXPECT_EQ(GetQueue("q").stats.blocked[i], 0u) << WaitReasonName(kBlockedReasons[i]);
  }
  AdvanceAndTick(absl::Milliseconds(9999));
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNone);
  AdvanceAndTick(absl::Milliseconds(1));
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNoWorker);
  EXPECT_EQ(Blocked(WaitReason::kNoWorker), 1u);

  // A parked Lease counts as a worker.
  WaitId wait = 0;
  std::shared_ptr<LeaseCapture> parked =
      LeaseWait({"q"}, absl::Seconds(60), 1, {"other-type"}, &wait);
  AdvanceAndTick(absl::Seconds(30));
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNone);
  broker_->CancelWait(wait);
  EXPECT_TRUE(parked->done());
  AdvanceAndTick(absl::Seconds(30));
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNoWorker);

  // So does a task running from the queue.
  TaskId x = MustSubmit(Spec("q", "x"));
  ASSERT_THAT(LeaseNow({"q"}, 1, {"x"}), SizeIs(1));
  AdvanceAndTick(absl::Seconds(15));  // past worker_idle, within the lease
  EXPECT_EQ(StateOf(x), TaskState::kRunning);
  EXPECT_EQ(Get(id).waiting.reason, WaitReason::kNone);
}

TEST_F(BrokerLimitsTest, BlockedCountsMatchEachTasksWaitReason) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);
  l.pools["db"] = 1;
  CreateWithLimits(l);
  std::vector<TaskId> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(MustSubmit(Keyed("K")));
  for (int i = 0; i < 2; ++i) ids.push_back(MustSubmit(Pooled("db")));
  TaskSpec later = Spec();
  later.not_before = Now() + absl::Minutes(1);
  ids.push_back(MustSubmit(later));
  ASSERT_THAT(Grant(10), SizeIs(2));  // one K, one db

  std::array<uint64_t, 5> expect{};
  for (TaskId id : ids) {
    WaitReason r = Get(id).waiting.reason;
    if (r != WaitReason::kNone && r != WaitReason::kNotWaiting) ++expect[BlockedIndex(r)];
  }
  EXPECT_EQ(expect[BlockedIndex(WaitReason::kRateLimited)], 2u);
  EXPECT_EQ(expect[BlockedIndex(WaitReason::kConcurrencyFull)], 1u);
  EXPECT_EQ(expect[BlockedIndex(WaitReason::kNotDue)], 1u);
  EXPECT_EQ(GetQueue("q").stats.blocked, expect);
}

// ───────────────────────────── live changes ─────────────────────────────

TEST_F(BrokerLimitsTest, RaisingAPoolServesParkedLeasesAtOnce) {
  QueueLimits l;
  l.pools["db"] = 1;
  CreateWithLimits(l);
  for (int i = 0; i < 5; ++i) MustSubmit(Pooled("db"));
  ASSERT_THAT(Grant(1), SizeIs(1));
  std::shared_ptr<LeaseCapture> a = LeaseWait({"q"}, absl::Seconds(10));
  std::shared_ptr<LeaseCapture> b = LeaseWait({"q"}, absl::Seconds(10));
  EXPECT_FALSE(a->done());
  EXPECT_FALSE(b->done());

  QueueUpdate u;
  u.limits.pools["db"] = 3;
  absl::StatusOr<QueueInfo> info = broker_->UpdateQueue("q", u);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->config.limits.pools.at("db"), 3u);
  ASSERT_TRUE(a->done());
  ASSERT_TRUE(b->done());
  ASSERT_THAT(a->tasks(), SizeIs(1));
  ASSERT_THAT(b->tasks(), SizeIs(1));
  Record(a->tasks());
  Record(b->tasks());
  EXPECT_EQ(Running(), 3u);
  EXPECT_THAT(Grant(5), IsEmpty());
  EXPECT_EQ(Total(), 5u);
}

TEST_F(BrokerLimitsTest, RemovingTheQueueRateLetsEverythingOut) {
  QueueLimits l;
  l.rate = Rate(1, 1);
  CreateWithLimits(l);
  for (int i = 0; i < 10; ++i) MustSubmit(Spec());
  ASSERT_THAT(Grant(20), SizeIs(1));
  std::shared_ptr<LeaseCapture> parked = LeaseWait({"q"}, absl::Seconds(10), 20);
  EXPECT_FALSE(parked->done());

  QueueUpdate u;
  u.limits.rate = Rate(0);
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  EXPECT_EQ(GetQueue("q").config.limits.rate, std::nullopt);
  ASSERT_TRUE(parked->done());
  EXPECT_THAT(parked->tasks(), SizeIs(9));
  Record(parked->tasks());
  EXPECT_EQ(granted_.size(), 10u);
  EXPECT_EQ(Total(), 10u);
}

TEST_F(BrokerLimitsTest, RemovingTheKeyRateLetsSetAsideKeysOut) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);
  CreateWithLimits(l);
  for (int i = 0; i < 5; ++i) MustSubmit(Keyed("K"));
  for (int i = 0; i < 5; ++i) MustSubmit(Keyed("J"));
  ASSERT_THAT(Grant(20), SizeIs(2));
  QueueUpdate u;
  u.limits.key_rate = Rate(0);
  ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
  EXPECT_THAT(Grant(20), SizeIs(8));
  EXPECT_EQ(granted_.size(), 10u);
}

TEST_F(BrokerLimitsTest, LiveChangesNeitherLoseNorDuplicateTasks) {
  QueueLimits l;
  l.rate = Rate(20, 2);
  l.key_rate = Rate(5, 1);
  l.pools["db"] = 1;
  l.key_max_running = 2;
  CreateWithLimits(l);
  constexpr int kTasks = 120;
  for (int i = 0; i < kTasks; ++i) {
    MustSubmit(Keyed(absl::StrCat("r", i % 4), i % 3 == 0 ? "db" : absl::StrCat("c", i % 5)));
  }
  std::vector<LeasedTask> running;
  int completed = 0;
  for (int step = 0; step < 2000 && completed < kTasks; ++step) {
    if (step == 50) {
      QueueUpdate u;
      u.limits.pools["db"] = 3;
      u.limits.key_rates["r0"] = Rate(100, 10);
      ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
    }
    if (step == 150) {
      QueueUpdate u;
      u.limits.rate = Rate(0);
      u.limits.key_rate = Rate(0);
      u.limits.key_max_running = 0;
      ASSERT_THAT(broker_->UpdateQueue("q", u), IsOk());
    }
    std::vector<LeasedTask> got = Grant(10);
    running.insert(running.end(), got.begin(), got.end());
    // Finish the oldest half of what runs.
    size_t done = (running.size() + 1) / 2;
    for (size_t i = 0; i < done; ++i) {
      ASSERT_THAT(CompleteOne(running[i].id, running[i].token), IsOk());
      ++completed;
    }
    running.erase(running.begin(), running.begin() + static_cast<long>(done));
    AdvanceAndTick(absl::Milliseconds(20));
  }
  EXPECT_EQ(completed, kTasks);
  EXPECT_EQ(granted_.size(), static_cast<size_t>(kTasks));
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kSucceeded), static_cast<uint64_t>(kTasks));
  EXPECT_EQ(Total(), static_cast<uint64_t>(kTasks));
}

// ───────────────────────────── settings ─────────────────────────────

TEST_F(BrokerLimitsTest, QueueCreatedWithLimitsReportsThemBack) {
  QueueLimits l;
  l.rate = Rate(50, 5);
  l.max_running = 8;
  l.key_rate = Rate(2);
  l.key_rates["acme"] = Rate(10, 3);
  l.key_max_running = 2;
  l.pools["db"] = 4;
  QueueConfig c = Config("lim");
  c.limits = l;
  absl::StatusOr<QueueInfo> created = broker_->CreateQueue(c, /*paused=*/false);
  ASSERT_THAT(created, IsOk());
  EXPECT_EQ(created->config.limits, l);
  EXPECT_EQ(GetQueue("lim").config.limits, l);
  bool listed = false;
  for (const QueueInfo& q : broker_->ListQueues()) {
    if (q.config.name == "lim") {
      listed = true;
      EXPECT_EQ(q.config.limits, l);
    }
  }
  EXPECT_TRUE(listed);

  // A partial update merges.
  QueueUpdate u;
  u.limits.pools["db"] = 0;
  u.limits.pools["api"] = 6;
  u.limits.key_rates["new"] = Rate(7);
  ASSERT_THAT(broker_->UpdateQueue("lim", u), IsOk());
  QueueLimits want = l;
  want.pools.erase("db");
  want.pools["api"] = 6;
  want.key_rates["new"] = Rate(7);
  EXPECT_EQ(GetQueue("lim").config.limits, want);
}

TEST_F(BrokerLimitsTest, InvalidLimitsAreRejectedAndChangeNothing) {
  QueueConfig c = Config("bad");
  c.limits.pools["db"] = kMaxPoolSize + 1;
  EXPECT_THAT(broker_->CreateQueue(c, false),
              StatusIs(absl::StatusCode::kInvalidArgument, "limits.pools[\"db\"]"));
  EXPECT_THAT(broker_->GetQueue("bad"), StatusIs(absl::StatusCode::kNotFound));

  QueueLimits l;
  l.max_running = 3;
  CreateWithLimits(l);
  QueueUpdate u;
  u.limits.max_running = 5;
  u.limits.key_rates["acme"] = Rate(kMaxRatePerSecond * 2);
  EXPECT_THAT(broker_->UpdateQueue("q", u),
              StatusIs(absl::StatusCode::kInvalidArgument, "limits.key_rates[\"acme\"]"));
  EXPECT_EQ(GetQueue("q").config.limits, l);
}

// ───────────────────────────── scale ─────────────────────────────

TEST_F(BrokerLimitsTest, TenThousandRateKeysAreEachGrantedExactlyOnce) {
  QueueLimits l;
  l.key_rate = Rate(1, 1);
  CreateWithLimits(l);
  constexpr int kKeys = 10'000;
  absl::flat_hash_set<uint64_t> submitted;
  for (int i = 0; i < kKeys; ++i) {
    submitted.insert(MustSubmit(Keyed(absl::StrCat("key-", i))).value());
  }
  int calls = 0;
  for (;;) {
    std::vector<LeasedTask> got = Grant(1000);
    if (got.empty()) break;
    ++calls;
    for (const LeasedTask& t : got) EXPECT_TRUE(submitted.contains(t.id.value()));
    ASSERT_LE(calls, kKeys);
  }
  EXPECT_EQ(granted_.size(), static_cast<size_t>(kKeys));
  EXPECT_EQ(calls, kKeys / 1000);
  EXPECT_EQ(Running(), static_cast<uint64_t>(kKeys));
  AdvanceAndTick(absl::Seconds(10));
  EXPECT_THAT(Grant(1000), IsEmpty());
}

}  // namespace
}  // namespace conveyor::server::broker_test
