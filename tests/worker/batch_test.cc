// Batches (worker/batch.h, worker/batch_runner.h): --batch parsing, the
// BatchContext, and RunBatch from the first leased tasks to one report per
// task: filling up to max_size within the linger, per-task outcomes,
// a wrong answer count, per-task and whole-batch cancellation, heartbeats
// and progress for every task, the batch deadline, drains and hand-backs.
//
// RunBatch runs on the test thread against a FakeBrokerRpc (heartbeats and
// reports, through a Heartbeater and a Reporter that are not started: the
// test runs their rounds) and a scripted fill; time is a FakeClock, except
// for the deadline test, which needs the real deadline timer.
#include "worker/batch.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"
#include "tests/worker/fake_broker_rpc.h"
#include "worker/batch_runner.h"
#include "worker/builtin_handlers.h"
#include "worker/deadline_timer.h"
#include "worker/heartbeater.h"
#include "worker/metrics.h"
#include "worker/rate_limiter.h"
#include "worker/reporter.h"

namespace conveyor::worker {
namespace {

// ── --batch TYPE=N[:LINGER] ──

TEST(ParseBatchSpecTest, TakesTheSizeAndAnOptionalLinger) {
  absl::StatusOr<BatchSpec> a = ParseBatchSpec("thumbs=32");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->type, "thumbs");
  EXPECT_EQ(a->options.max_size, 32u);
  EXPECT_EQ(a->options.linger, BatchOptions().linger);
  absl::StatusOr<BatchSpec> b = ParseBatchSpec("thumbs=1000:250ms");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->options.max_size, 1000u);
  EXPECT_EQ(b->options.linger, absl::Milliseconds(250));
  absl::StatusOr<BatchSpec> c = ParseBatchSpec("a:b=5:0s");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->type, "a:b");
  EXPECT_EQ(c->options.linger, absl::ZeroDuration());
}

TEST(ParseBatchSpecTest, RejectsWhatItCannotRunAndSaysWhy) {
  struct Case {
    const char* text;
    const char* why;
  };
  for (const Case& c : {Case{"thumbs", "no TYPE=N"}, Case{"=5", "no TYPE=N"},
                        Case{"thumbs=", "no TYPE=N"}, Case{"thumbs=0", "must be 1 to 1000"},
                        Case{"thumbs=1001", "must be 1 to 1000"},
                        Case{"thumbs=99999999999999999999", "not a whole number"},
                        Case{"thumbs=-1", "not a whole number"},
                        Case{"thumbs=x", "not a whole number"},
                        Case{"thumbs=5:soon", "not a duration"},
                        Case{"thumbs=5:-1s", "must be 0 to 10s"},
                        Case{"thumbs=5:11s", "must be 0 to 10s"},
                        Case{"my type=5", "holds a space"}}) {
    absl::StatusOr<BatchSpec> spec = ParseBatchSpec(c.text);
    ASSERT_FALSE(spec.ok()) << c.text;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_TRUE(absl::StrContains(spec.status().message(), c.why))
        << c.text << ": " << spec.status().message();
    EXPECT_TRUE(absl::StrContains(spec.status().message(), c.text)) << spec.status().message();
  }
}

// ── BatchContext ──

std::vector<TaskInfo> Infos(int n, const std::string& type = "b") {
  std::vector<TaskInfo> out;
  for (int i = 0; i < n; ++i) {
    TaskInfo t;
    t.id = absl::StrCat("t", i);
    t.type = type;
    t.queue = "q";
    t.payload = absl::StrCat("p", i);
    out.push_back(t);
  }
  return out;
}

TEST(BatchContextTest, ExposesTheTasksInOrderWithAContextEach) {
  std::vector<TaskInfo> tasks = Infos(3);
  tasks[1].deadline = absl::FromUnixSeconds(2000);
  tasks[2].deadline = absl::FromUnixSeconds(1000);
  Cancellation cancel;
  BatchContext batch(tasks, &cancel);
  EXPECT_EQ(batch.type(), "b");
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch.tasks()[2].payload, "p2");
  EXPECT_EQ(batch.task(1).task_id(), "t1");
  EXPECT_EQ(batch.task(1).payload(), "p1");
  EXPECT_EQ(batch.deadline(), absl::FromUnixSeconds(1000));  // the earliest
  EXPECT_FALSE(batch.cancelled());
  EXPECT_FALSE(batch.task(0).cancelled());
  cancel.Cancel(CancelReason::kTimeout);
  EXPECT_TRUE(batch.cancelled());
  EXPECT_EQ(batch.cancel_reason(), CancelReason::kTimeout);
  EXPECT_TRUE(batch.task(0).cancelled());  // the tasks share it here
  EXPECT_THROW(batch.task(3), std::out_of_range);
}

TEST(BatchContextTest, ProgressGoesToOneTaskOrToAll) {
  std::vector<TaskInfo> tasks = Infos(2);
  Cancellation batch_cancel, c0, c1;
  std::vector<std::vector<double>> seen(2);
  std::vector<ProgressSink> sinks = {[&](double p, std::string) { seen[0].push_back(p); },
                                     [&](double p, std::string) { seen[1].push_back(p); }};
  BatchContext batch("b", tasks, {&c0, &c1}, sinks, &batch_cancel, absl::InfiniteFuture());
  batch.task(1).ReportProgress(30);
  batch.ReportProgress(150);  // clamped, like a single task's
  EXPECT_EQ(seen[0], (std::vector<double>{100}));
  EXPECT_EQ(seen[1], (std::vector<double>{30, 100}));
  c1.Cancel(CancelReason::kCanceled);
  EXPECT_TRUE(batch.task(1).cancelled());
  EXPECT_FALSE(batch.task(0).cancelled());
  EXPECT_FALSE(batch.cancelled());
}

TEST(BatchEchoHandlerTest, AnswersPerTaskWithTheBatchSize) {
  std::vector<TaskInfo> tasks = Infos(5);
  tasks[1].payload = "fail:boom";
  tasks[2].payload = "permanent:bad input";
  tasks[3].payload = "flaky:x";
  tasks[4].payload = "flaky:y";
  tasks[4].attempt = 2;
  Cancellation cancel;
  BatchContext batch(tasks, &cancel);
  BatchAnswers answers = BatchEchoHandler(batch);
  ASSERT_EQ(answers.size(), 5u);
  EXPECT_EQ(answers[0].value_or("?"), "5:p0");
  EXPECT_EQ(answers[1].status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(answers[1].status().message(), "boom");
  EXPECT_EQ(answers[2].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(answers[3].status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(answers[4].value_or("?"), "5:flaky:y");  // a later attempt succeeds
}

// ── RunBatch ──

v1::LeasedTask Leased(const std::string& id, const std::string& type = "b",
                      const std::string& payload = "") {
  v1::LeasedTask t;
  t.set_id(id);
  t.set_queue("q");
  t.set_type(type);
  t.set_payload(payload.empty() ? "payload of " + id : payload);
  t.set_attempt(1);
  t.set_max_attempts(3);
  t.set_token(1);
  return t;
}

std::vector<v1::LeasedTask> LeasedRange(int from, int to) {
  std::vector<v1::LeasedTask> out;
  for (int i = from; i < to; ++i) out.push_back(Leased(absl::StrCat("t", i)));
  return out;
}

// One call of the scripted fill.
struct FillCall {
  std::string type;
  int max = 0;
  absl::Duration wait;
};

class RunBatchTest : public ::testing::Test {
 protected:
  RunBatchTest()
      : heartbeater_(&rpc_, {"w1", "broker", absl::ZeroDuration()}, &clock_),
        reporter_(&rpc_, ReporterOptions{}, &clock_),
        limiter_(&clock_),
        metrics_(1) {
    timer_.Start();
    deps_.worker_id = "w1";
    deps_.heartbeater = &heartbeater_;
    deps_.reporter = &reporter_;
    deps_.timer = &timer_;
    deps_.clock = &clock_;
    deps_.limiter = &limiter_;
    deps_.metrics = &metrics_;
  }
  ~RunBatchTest() override { timer_.Stop(); }

  // The fill answers with `script[i]` on call i (nothing once it runs out),
  // advancing the fake clock by `advance` per call (the time the broker
  // took).
  void ScriptFill(std::vector<LeaseMoreResult> script,
                  absl::Duration advance = absl::ZeroDuration()) {
    script_ = std::move(script);
    deps_.lease_more = [this, advance](const std::string& type, int max, absl::Duration wait) {
      fills_.push_back({type, max, wait});
      clock_.Advance(advance);
      if (script_.empty()) {
        clock_.Advance(std::max(absl::ZeroDuration(), wait - advance));  // waited in vain
        return LeaseMoreResult();
      }
      LeaseMoreResult r = std::move(script_.front());
      script_.erase(script_.begin());
      return r;
    };
  }

  static LeaseMoreResult Brings(std::vector<v1::LeasedTask> tasks, bool stopping = false) {
    LeaseMoreResult r;
    r.tasks = std::move(tasks);
    r.stopping = stopping;
    return r;
  }

  // Delivers every queued report.
  void Flush() {
    for (int i = 0; i < 10 && reporter_.pending() > 0; ++i) reporter_.SendOnce();
    ASSERT_EQ(reporter_.pending(), 0u);
  }

  std::vector<v1::CompleteRequest::Item> Completes() const {
    std::vector<v1::CompleteRequest::Item> out;
    for (const auto& r : rpc_.completes()) out.insert(out.end(), r.items().begin(), r.items().end());
    return out;
  }
  std::vector<v1::FailRequest::Item> Fails() const {
    std::vector<v1::FailRequest::Item> out;
    for (const auto& r : rpc_.fails()) out.insert(out.end(), r.items().begin(), r.items().end());
    return out;
  }
  std::vector<std::string> Released() const {
    std::vector<std::string> out;
    for (const auto& r : rpc_.releases()) {
      for (const auto& item : r.items()) out.push_back(item.id());
    }
    return out;
  }

  // A handler that records the batch and answers OK("<id>") for each task.
  BatchHandler Recording() {
    return [this](BatchContext& batch) {
      BatchAnswers answers;
      std::vector<std::string> ids;
      for (const TaskInfo& t : batch.tasks()) {
        ids.push_back(t.id);
        answers.push_back(absl::StrCat(t.id, ":", t.payload));
      }
      batches_.push_back(ids);
      return answers;
    };
  }

  FakeClock clock_;
  FakeBrokerRpc rpc_;
  Heartbeater heartbeater_;
  Reporter reporter_;
  DeadlineTimer timer_;
  RateLimiter limiter_;
  WorkerMetrics metrics_;
  BatchRunnerDeps deps_;
  std::vector<LeaseMoreResult> script_;
  std::vector<FillCall> fills_;
  std::vector<std::vector<std::string>> batches_;
};

TEST_F(RunBatchTest, FillsUpToMaxSizeWithLeasesOfItsTypeOnly) {
  ScriptFill({Brings(LeasedRange(2, 4)), Brings(LeasedRange(4, 5))});
  RunBatch(deps_, "b", Recording(), {.max_size = 5, .linger = absl::Milliseconds(50)},
           LeasedRange(0, 2));
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0], (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4"}));
  // Each call asks for what is missing, of the batch's type; none once full.
  ASSERT_EQ(fills_.size(), 2u);
  EXPECT_EQ(fills_[0].type, "b");
  EXPECT_EQ(fills_[0].max, 3);
  EXPECT_EQ(fills_[0].wait, absl::Milliseconds(50));
  EXPECT_EQ(fills_[1].max, 1);
  Flush();
  std::vector<v1::CompleteRequest::Item> done = Completes();
  ASSERT_EQ(done.size(), 5u);
  for (const auto& item : done) {
    EXPECT_EQ(item.result(), absl::StrCat(item.id(), ":payload of ", item.id()));
  }
  EXPECT_TRUE(Fails().empty());
  EXPECT_TRUE(heartbeater_.Tracked().empty());  // every task settled
}

TEST_F(RunBatchTest, AFullBatchDoesNotAskForMore) {
  ScriptFill({});
  RunBatch(deps_, "b", Recording(), {.max_size = 3}, LeasedRange(0, 3));
  EXPECT_TRUE(fills_.empty());
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].size(), 3u);
}

TEST_F(RunBatchTest, LingersNoLongerThanItsLinger) {
  // The broker brings one task per call, 20 ms apart: with a 50 ms linger
  // the waits shrink (50, 30, 10 ms) and the batch runs with 4 of its 10.
  ScriptFill({Brings(LeasedRange(1, 2)), Brings(LeasedRange(2, 3)), Brings(LeasedRange(3, 4)),
              Brings(LeasedRange(4, 5))},
             absl::Milliseconds(20));
  const absl::Time start = clock_.Now();
  RunBatch(deps_, "b", Recording(), {.max_size = 10, .linger = absl::Milliseconds(50)},
           LeasedRange(0, 1));
  ASSERT_EQ(fills_.size(), 3u);
  EXPECT_EQ(fills_[0].wait, absl::Milliseconds(50));
  EXPECT_EQ(fills_[1].wait, absl::Milliseconds(30));
  EXPECT_EQ(fills_[2].wait, absl::Milliseconds(10));
  EXPECT_EQ(fills_[2].max, 7);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].size(), 4u);
  EXPECT_EQ(clock_.Now() - start, absl::Milliseconds(60));
  // The task the broker would have brought next is still with the broker.
  EXPECT_EQ(script_.size(), 1u);
}

TEST_F(RunBatchTest, StopsFillingWhenNothingComesWithinTheLinger) {
  ScriptFill({});
  RunBatch(deps_, "b", Recording(), {.max_size = 10, .linger = absl::Milliseconds(80)},
           LeasedRange(0, 2));
  ASSERT_EQ(fills_.size(), 1u);
  EXPECT_EQ(fills_[0].wait, absl::Milliseconds(80));
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].size(), 2u);
}

TEST_F(RunBatchTest, ZeroLingerTakesWhatIsReadyWithoutWaiting) {
  ScriptFill({Brings(LeasedRange(1, 3))});
  RunBatch(deps_, "b", Recording(), {.max_size = 10, .linger = absl::ZeroDuration()},
           LeasedRange(0, 1));
  ASSERT_EQ(fills_.size(), 1u);
  EXPECT_EQ(fills_[0].wait, absl::ZeroDuration());
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].size(), 3u);
}

TEST_F(RunBatchTest, NeverLingersPastTheEarliestDeadline) {
  std::vector<v1::LeasedTask> first = LeasedRange(0, 1);
  // 10 ms from now by the test's clock. (The real deadline timer sees it as
  // long past and cancels the batch: its tasks fail with a timeout.)
  ToProto(clock_.Now() + absl::Milliseconds(10), first[0].mutable_deadline());
  ScriptFill({});
  RunBatch(deps_, "b", Recording(), {.max_size = 10, .linger = absl::Seconds(5)},
           std::move(first));
  ASSERT_EQ(fills_.size(), 1u);
  EXPECT_EQ(fills_[0].wait, absl::Milliseconds(10));
}

TEST_F(RunBatchTest, AFailedFillRunsTheBatchWithWhatItHas) {
  LeaseMoreResult down;
  down.status = absl::UnavailableError("broker down");
  ScriptFill({std::move(down)});
  RunBatch(deps_, "b", Recording(), {.max_size = 10}, LeasedRange(0, 2));
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].size(), 2u);
  Flush();
  EXPECT_EQ(Completes().size(), 2u);
}

TEST_F(RunBatchTest, TasksAFillBringsWhileDrainingAreHandedBack) {
  ScriptFill({Brings(LeasedRange(1, 3), /*stopping=*/true)});
  RunBatch(deps_, "b", Recording(), {.max_size = 10}, LeasedRange(0, 1));
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0], (std::vector<std::string>{"t0"}));
  Flush();
  EXPECT_EQ(Released(), (std::vector<std::string>{"t1", "t2"}));
  ASSERT_EQ(Completes().size(), 1u);
  EXPECT_EQ(Completes()[0].id(), "t0");
}

TEST_F(RunBatchTest, TasksOfAnotherTypeOrBeyondMaxSizeAreHandedBack) {
  std::vector<v1::LeasedTask> more = {Leased("x", "other"), Leased("t1"), Leased("t2"),
                                      Leased("t3")};
  ScriptFill({Brings(std::move(more))});
  RunBatch(deps_, "b", Recording(), {.max_size = 3}, LeasedRange(0, 1));
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0], (std::vector<std::string>{"t0", "t1", "t2"}));
  Flush();
  EXPECT_EQ(Released(), (std::vector<std::string>{"x", "t3"}));
}

TEST_F(RunBatchTest, EachAnswerFollowsTheSingleTaskConvention) {
  ScriptFill({});
  BatchHandler handler = [](BatchContext& batch) {
    EXPECT_EQ(batch.size(), 6u);
    return BatchAnswers{std::string("fine"),
                        absl::InvalidArgumentError("bad payload"),
                        absl::FailedPreconditionError("not now, never"),
                        Throttled(absl::Seconds(2), "upstream said 429"),
                        absl::UnavailableError("flaky upstream"),
                        WithReason(absl::UnknownError("disk"), "io")};
  };
  RunBatch(deps_, "b", handler, {.max_size = 6}, LeasedRange(0, 6));
  Flush();
  std::vector<v1::CompleteRequest::Item> done = Completes();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id(), "t0");
  EXPECT_EQ(done[0].result(), "fine");
  std::vector<v1::FailRequest::Item> failed = Fails();
  ASSERT_EQ(failed.size(), 5u);
  std::map<std::string, v1::FailRequest::Item> by_id;
  for (const auto& f : failed) by_id[f.id()] = f;
  EXPECT_FALSE(by_id["t1"].retryable());
  EXPECT_EQ(by_id["t1"].error(), "bad payload");
  EXPECT_FALSE(by_id["t2"].retryable());
  EXPECT_TRUE(by_id["t3"].throttled());
  EXPECT_EQ(by_id["t3"].retry_after().seconds(), 2);
  EXPECT_EQ(by_id["t3"].reason(), "throttled");
  EXPECT_TRUE(by_id["t4"].retryable());
  EXPECT_FALSE(by_id["t4"].throttled());
  EXPECT_EQ(by_id["t4"].reason(), "error");
  EXPECT_EQ(by_id["t5"].reason(), "io");
}

TEST_F(RunBatchTest, AWrongNumberOfAnswersFailsEveryTaskRetryably) {
  ScriptFill({});
  BatchHandler short_by_one = [](BatchContext&) {
    return BatchAnswers{std::string("a"), std::string("b")};
  };
  RunBatch(deps_, "b", short_by_one, {.max_size = 3}, LeasedRange(0, 3));
  Flush();
  EXPECT_TRUE(Completes().empty());
  std::vector<v1::FailRequest::Item> failed = Fails();
  ASSERT_EQ(failed.size(), 3u);
  for (const auto& f : failed) {
    EXPECT_TRUE(f.retryable());
    EXPECT_EQ(f.reason(), "batch_answers");
    EXPECT_TRUE(absl::StrContains(f.error(), "returned 2 answers for 3 tasks")) << f.error();
  }
}

TEST_F(RunBatchTest, HeartbeatsCoverEveryTaskAndCarryTheirProgress) {
  ScriptFill({Brings(LeasedRange(2, 3))});
  BatchHandler handler = [this](BatchContext& batch) {
    batch.ReportProgress(10, "all");
    batch.task(2).ReportProgress(60, "third");
    EXPECT_TRUE(heartbeater_.BeatOnce());
    return BatchAnswers(batch.size(), std::string("ok"));
  };
  RunBatch(deps_, "b", handler, {.max_size = 3}, LeasedRange(0, 2));
  ASSERT_EQ(rpc_.heartbeats().size(), 1u);
  const v1::HeartbeatRequest beat = rpc_.heartbeats()[0];
  ASSERT_EQ(beat.items_size(), 3);
  std::map<std::string, v1::HeartbeatRequest::Item> items;
  for (const auto& item : beat.items()) items[item.id()] = item;
  EXPECT_EQ(items["t0"].progress_percent(), 10);
  EXPECT_EQ(items["t0"].progress_message(), "all");
  EXPECT_EQ(items["t2"].progress_percent(), 60);
  EXPECT_EQ(items["t2"].progress_message(), "third");
}

TEST_F(RunBatchTest, ABrokerCancelOfOneTaskStopsThatTaskOnly) {
  ScriptFill({});
  rpc_.set_cancel("t1");
  std::atomic<bool> saw_task_cancel{false}, saw_batch_cancel{true};
  BatchHandler handler = [&](BatchContext& batch) {
    EXPECT_TRUE(heartbeater_.BeatOnce());
    saw_task_cancel = batch.task(1).cancelled();
    saw_batch_cancel = batch.cancelled() || batch.task(0).cancelled();
    BatchAnswers answers;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch.task(i).cancelled()) {
        answers.push_back(absl::CancelledError("stopped"));
      } else {
        answers.push_back(std::string("done"));
      }
    }
    return answers;
  };
  RunBatch(deps_, "b", handler, {.max_size = 3}, LeasedRange(0, 3));
  EXPECT_TRUE(saw_task_cancel);
  EXPECT_FALSE(saw_batch_cancel);
  Flush();
  EXPECT_EQ(Completes().size(), 2u);
  std::vector<v1::FailRequest::Item> failed = Fails();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].id(), "t1");
  EXPECT_EQ(failed[0].reason(), "canceled");
}

TEST_F(RunBatchTest, ACanceledTaskAnsweredOkStillCompletes) {
  ScriptFill({});
  rpc_.set_cancel("t0");
  BatchHandler handler = [&](BatchContext& batch) {
    EXPECT_TRUE(heartbeater_.BeatOnce());
    EXPECT_TRUE(batch.task(0).cancelled());
    return BatchAnswers(batch.size(), std::string("done anyway"));
  };
  RunBatch(deps_, "b", handler, {.max_size = 2}, LeasedRange(0, 2));
  Flush();
  EXPECT_EQ(Completes().size(), 2u);
  EXPECT_TRUE(Fails().empty());
}

TEST_F(RunBatchTest, TheBatchStopsWhenEveryTaskIsCanceled) {
  ScriptFill({});
  rpc_.set_cancel("t0");
  rpc_.set_cancel("t1");
  CancelReason reason = CancelReason::kNone;
  BatchHandler handler = [&](BatchContext& batch) {
    EXPECT_FALSE(batch.cancelled());
    EXPECT_TRUE(heartbeater_.BeatOnce());
    reason = batch.cancel_reason();
    return BatchAnswers(batch.size(), absl::CancelledError("stopped"));
  };
  RunBatch(deps_, "b", handler, {.max_size = 2}, LeasedRange(0, 2));
  EXPECT_EQ(reason, CancelReason::kCanceled);
  Flush();
  std::vector<v1::FailRequest::Item> failed = Fails();
  ASSERT_EQ(failed.size(), 2u);
  for (const auto& f : failed) EXPECT_EQ(f.reason(), "canceled");
}

TEST_F(RunBatchTest, ALostLeaseReportsNothingForThatTask) {
  ScriptFill({});
  rpc_.set_item_code("t1", absl::StatusCode::kFailedPrecondition, "stale token");
  BatchHandler handler = [&](BatchContext& batch) {
    EXPECT_TRUE(heartbeater_.BeatOnce());
    EXPECT_TRUE(batch.task(1).cancelled());
    return BatchAnswers(batch.size(), std::string("done"));
  };
  RunBatch(deps_, "b", handler, {.max_size = 3}, LeasedRange(0, 3));
  Flush();
  std::vector<v1::CompleteRequest::Item> done = Completes();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_NE(done[0].id(), "t1");
  EXPECT_NE(done[1].id(), "t1");
}

TEST_F(RunBatchTest, ADrainThatGivesUpReleasesWhatDidNotSucceed) {
  ScriptFill({});
  BatchHandler handler = [&](BatchContext& batch) {
    // What a draining worker does once its grace period is over.
    EXPECT_EQ(heartbeater_.CancelAll(CancelReason::kShutdown), 3u);
    EXPECT_TRUE(batch.cancelled());
    EXPECT_EQ(batch.cancel_reason(), CancelReason::kShutdown);
    return BatchAnswers{std::string("finished in time"), absl::CancelledError("stopped"),
                        absl::CancelledError("stopped")};
  };
  RunBatch(deps_, "b", handler, {.max_size = 3}, LeasedRange(0, 3));
  Flush();
  ASSERT_EQ(Completes().size(), 1u);
  EXPECT_EQ(Completes()[0].id(), "t0");
  EXPECT_EQ(Released(), (std::vector<std::string>{"t1", "t2"}));
  EXPECT_TRUE(Fails().empty());
}

TEST_F(RunBatchTest, TasksAbandonedByADrainAreNotReportedTwice) {
  ScriptFill({});
  BatchHandler handler = [&](BatchContext& batch) {
    // A drain that waited in vain settles the tasks on the handler's behalf.
    for (const auto& a : heartbeater_.Tracked()) {
      EXPECT_TRUE(a->TryAbandon());
      heartbeater_.Untrack(*a);
    }
    return BatchAnswers(batch.size(), std::string("too late"));
  };
  RunBatch(deps_, "b", handler, {.max_size = 2}, LeasedRange(0, 2));
  Flush();
  EXPECT_TRUE(Completes().empty());
  EXPECT_TRUE(Fails().empty());
}

TEST_F(RunBatchTest, TheEarliestDeadlineCancelsTheWholeBatch) {
  deps_.clock = RealClock::Get();  // the deadline timer runs on real time
  std::vector<v1::LeasedTask> tasks = LeasedRange(0, 3);
  const absl::Time soon = absl::Now() + absl::Milliseconds(100);
  ToProto(soon, tasks[1].mutable_deadline());
  ToProto(soon + absl::Hours(1), tasks[0].mutable_deadline());
  ToProto(absl::Seconds(1), tasks[0].mutable_timeout());
  CancelReason reason = CancelReason::kNone;
  absl::Time deadline_seen;
  BatchHandler handler = [&](BatchContext& batch) {
    deadline_seen = batch.deadline();
    const bool cancelled = batch.cancellation().WaitFor(absl::Seconds(60));
    EXPECT_TRUE(cancelled);
    reason = batch.cancel_reason();
    EXPECT_TRUE(batch.task(0).cancelled());
    return BatchAnswers(batch.size(), absl::CancelledError("stopped"));
  };
  const absl::Time start = absl::Now();
  RunBatch(deps_, "b", handler, {.max_size = 3}, std::move(tasks));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_EQ(reason, CancelReason::kTimeout);
  EXPECT_LE(absl::AbsDuration(deadline_seen - soon), absl::Microseconds(1));
  Flush();
  std::vector<v1::FailRequest::Item> failed = Fails();
  ASSERT_EQ(failed.size(), 3u);
  for (const auto& f : failed) {
    EXPECT_EQ(f.reason(), "timeout");
    EXPECT_TRUE(f.retryable());
    EXPECT_TRUE(absl::StrContains(f.error(), "the batch of 3 tasks ran past its deadline"))
        << f.error();
  }
}

TEST_F(RunBatchTest, ARateLimitTakesOneTokenPerTask) {
  limiter_.SetLimit({"b", /*rate=*/0.001, /*burst=*/2});
  ScriptFill({});
  bool ran = false;
  BatchHandler handler = [&](BatchContext& batch) {
    ran = true;
    return BatchAnswers(batch.size(), std::string("ok"));
  };
  RunBatch(deps_, "b", handler, {.max_size = 2}, LeasedRange(0, 2));  // the burst: 2 tokens
  EXPECT_TRUE(ran);
  // No token left for the next batch: it waits, holding its leases, until
  // cancelled (here: its only task is canceled by the broker).
  ran = false;
  rpc_.set_cancel("t9");
  std::thread beat([this] {
    while (heartbeater_.Tracked().empty()) absl::SleepFor(absl::Milliseconds(1));
    heartbeater_.BeatOnce();
  });
  RunBatch(deps_, "b", handler, {.max_size = 2}, {Leased("t9")});
  beat.join();
  EXPECT_FALSE(ran);
  Flush();
  std::vector<v1::FailRequest::Item> failed = Fails();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].reason(), "canceled");
}

TEST_F(RunBatchTest, CountsTheBatchSize) {
  ScriptFill({});
  RunBatch(deps_, "b", Recording(), {.max_size = 4}, LeasedRange(0, 4));
  bool found = false;
  for (const auto& family : metrics_.registry()->Collect()) {
    if (family.name != "conveyor_worker_batch_size") continue;
    ASSERT_EQ(family.metric.size(), 1u);
    EXPECT_TRUE(family.metric[0].label.empty());
    EXPECT_EQ(family.metric[0].histogram.sample_count, 1u);
    EXPECT_EQ(family.metric[0].histogram.sample_sum, 4);
    found = true;
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace conveyor::worker
