#include "client/format.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"

namespace conveyor::client {
namespace {

v1::Task SampleTask() {
  v1::Task task;
  task.set_id("0000018b2f3c4d5e");
  task.set_queue("emails");
  task.set_type("send");
  task.set_state(v1::TASK_STATE_RUNNING);
  task.set_attempts(1);
  task.set_max_attempts(3);
  task.set_progress_percent(42);
  task.set_progress_message("halfway");
  ToProto(absl::FromUnixSeconds(1'700'000'000), task.mutable_created_at());
  return task;
}

TEST(FormatTest, StateNameDropsTheEnumPrefix) {
  EXPECT_EQ(TaskStateName(v1::TASK_STATE_SUCCEEDED), "SUCCEEDED");
  EXPECT_EQ(TaskStateName(v1::TASK_STATE_UNSPECIFIED), "UNSPECIFIED");
}

TEST(FormatTest, TerminalAndSuccessStatesFollowTheLifecycle) {
  for (v1::TaskState s : {v1::TASK_STATE_SCHEDULED, v1::TASK_STATE_READY, v1::TASK_STATE_RUNNING}) {
    EXPECT_FALSE(IsTerminal(s)) << TaskStateName(s);
  }
  for (v1::TaskState s : {v1::TASK_STATE_SUCCEEDED, v1::TASK_STATE_DEAD, v1::TASK_STATE_CANCELED,
                          v1::TASK_STATE_EXPIRED, v1::TASK_STATE_FALLBACK}) {
    EXPECT_TRUE(IsTerminal(s)) << TaskStateName(s);
  }
  EXPECT_TRUE(IsSuccess(v1::TASK_STATE_FALLBACK));
  EXPECT_FALSE(IsSuccess(v1::TASK_STATE_DEAD));
}

TEST(FormatTest, TaskTextHasOneKeyValueLinePerField) {
  v1::Task task = SampleTask();
  task.set_result("ok");
  const std::string text = FormatTask(task);
  EXPECT_TRUE(absl::StartsWith(text, "id: 0000018b2f3c4d5e\nqueue: emails\ntype: send\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "state: RUNNING\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "attempt: 2/3\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "failures: 1/3\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "progress: 42% halfway\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "created: 2023-11-14T22:13:20Z\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "result: ok\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "error: \n")) << text;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StrContains(line, ": ")) << line;
  }
}

TEST(FormatTest, Utf8ResultIsShownAsTextWithControlsEscaped) {
  EXPECT_EQ(DisplayBytes("héllo\nwörld\t!"), "héllo\\nwörld\\t!");
  EXPECT_EQ(DisplayBytes(std::string("a\0b", 3)), "a\\x00b");
}

TEST(FormatTest, NonUtf8ResultIsShownAsHexWithItsSize) {
  EXPECT_EQ(DisplayBytes("\xff\xfe\x01"), "<3 bytes, not UTF-8> fffe01");
}

TEST(FormatTest, LongBytesAreCutOnACharacterBoundary) {
  const std::string text = DisplayBytes("ééééé", 3);  // each é is 2 bytes
  EXPECT_EQ(text, "é...");
}

TEST(FormatTest, Utf8ValidatorRejectsOverlongsSurrogatesAndTruncation) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xe2\x82\xac"));       // €
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x98\x80"));   // 😀
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
}

TEST(FormatTest, JsonUsesProtoFieldNamesOnOneLineWithDefaults) {
  v1::Task task = SampleTask();
  absl::StatusOr<std::string> json = ToJson(task);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_FALSE(absl::StrContains(*json, "\n"));
  EXPECT_TRUE(absl::StrContains(*json, "\"max_attempts\":3")) << *json;
  EXPECT_TRUE(absl::StrContains(*json, "\"state\":\"TASK_STATE_RUNNING\"")) << *json;
  EXPECT_TRUE(absl::StrContains(*json, "\"cancel_requested\":false")) << *json;
}

TEST(FormatTest, TableAlignsColumnsUnderTheHeader) {
  const std::string table = FormatTable({{"ID", "STATE"}, {"abc", "READY"}, {"a", "DEAD"}});
  EXPECT_EQ(table, "ID   STATE\nabc  READY\na    DEAD\n");
}

TEST(FormatTest, TaskTableHasAHeaderAndOneRowPerTask) {
  const std::string table = FormatTaskTable({SampleTask(), SampleTask()});
  std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(absl::StartsWith(lines[0], "ID")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[1], "0000018b2f3c4d5e")) << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[1], "RUNNING")) << lines[1];
}

TEST(FormatTest, QueueTableShowsNamePausedAndCounts) {
  v1::Queue queue;
  queue.mutable_config()->set_name("jobs");
  queue.mutable_config()->set_capacity(2);
  queue.set_paused(true);
  queue.mutable_stats()->set_ready(5);
  const std::string table = FormatQueueTable({queue});
  std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(absl::StartsWith(lines[1], "jobs  yes")) << table;
}

TEST(FormatTest, QueueTextShowsSettingsAndStats) {
  v1::Queue queue;
  queue.mutable_config()->set_name("jobs");
  queue.mutable_config()->set_full_policy(v1::FULL_POLICY_WAIT);
  ToProto(absl::Seconds(30), queue.mutable_config()->mutable_lease_duration());
  queue.mutable_stats()->set_dead(4);
  const std::string text = FormatQueue(queue);
  EXPECT_TRUE(absl::StrContains(text, "name: jobs\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "paused: false\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "full_policy: wait\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "lease_duration: 30s\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "dead: 4\n")) << text;
}

TEST(FormatTest, WatchLineShowsStateAttemptsProgressAndError) {
  v1::Task task = SampleTask();
  // One failed attempt so far: the running one is the second.
  EXPECT_EQ(FormatWatchLine(task), "0000018b2f3c4d5e RUNNING attempt 2/3 42% halfway");
  task.set_state(v1::TASK_STATE_DEAD);
  task.set_progress_percent(0);
  task.clear_progress_message();
  task.set_error("boom");
  EXPECT_EQ(FormatWatchLine(task), "0000018b2f3c4d5e DEAD failures 1/3 error: boom");
}

TEST(FormatTest, ProgressBarFillsInProportionAndIsFullOnSuccess) {
  v1::Task task = SampleTask();
  task.set_progress_percent(50);
  task.clear_progress_message();
  EXPECT_EQ(FormatProgressBar(task, 10), "[#####.....]  50% RUNNING");
  task.set_state(v1::TASK_STATE_SUCCEEDED);
  task.set_progress_percent(0);
  EXPECT_EQ(FormatProgressBar(task, 4), "[####] 100% SUCCEEDED");
}

TEST(FormatTest, RateIsShownPerSecondOrPerMinuteWhicheverIsExact) {
  v1::RateLimit rate;
  rate.set_per_second(50);
  EXPECT_EQ(FormatRate(rate), "50/s");
  rate.set_per_second(0.5);
  EXPECT_EQ(FormatRate(rate), "0.5/s");
  rate.set_per_second(100.0 / 60);
  EXPECT_EQ(FormatRate(rate), "100/m");
  rate.set_per_second(1.0 / 3600);
  EXPECT_EQ(FormatRate(rate), "1/h");
  rate.set_per_second(10);
  rate.set_burst(20);
  EXPECT_EQ(FormatRate(rate), "10/s burst 20");
}

TEST(FormatTest, WaitingTaskShowsReasonKeyUntilAndDetail) {
  v1::Task task = SampleTask();
  task.set_state(v1::TASK_STATE_READY);
  task.set_rate_key("acme");
  task.set_concurrency_key("db");
  v1::Waiting* w = task.mutable_waiting();
  w->set_reason(v1::WAIT_REASON_RATE_LIMITED);
  w->set_key("acme");
  ToProto(absl::FromUnixSeconds(1'796'061'601), w->mutable_until());  // 2026-11-30T18:00:01Z
  w->set_detail("rate key \"acme\" (10/s burst 1) has no token");
  const std::string text = FormatTask(task);
  EXPECT_TRUE(absl::StrContains(text, "rate_key: acme\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "concurrency_key: db\n")) << text;
  EXPECT_TRUE(absl::StrContains(
      text,
      "waiting: rate_limited on key \"acme\" until 2026-11-30T18:00:01Z (rate key \"acme\" "
      "(10/s burst 1) has no token)\n"))
      << text;
}

TEST(FormatTest, WaitingWithoutKeyOrTimeShowsReasonAndDetailOnly) {
  v1::Waiting w;
  w.set_reason(v1::WAIT_REASON_PAUSED);
  w.set_detail("queue \"jobs\" is paused");
  EXPECT_EQ(FormatWaiting(w), "paused (queue \"jobs\" is paused)");
  w.Clear();
  w.set_reason(v1::WAIT_REASON_CONCURRENCY_FULL);
  w.set_key("db");
  EXPECT_EQ(FormatWaiting(w), "concurrency_full on key \"db\"");
  w.set_reason(v1::WAIT_REASON_NO_WORKER);
  w.clear_key();
  EXPECT_EQ(FormatWaiting(w), "no_worker");
}

TEST(FormatTest, WaitingIsShownOnlyForScheduledAndReadyTasks) {
  v1::Task task = SampleTask();  // RUNNING
  task.mutable_waiting()->set_reason(v1::WAIT_REASON_PAUSED);
  EXPECT_FALSE(absl::StrContains(FormatTask(task), "waiting:"));
  task.set_state(v1::TASK_STATE_SCHEDULED);
  EXPECT_TRUE(absl::StrContains(FormatTask(task), "waiting: paused\n"));
  task.clear_waiting();
  EXPECT_FALSE(absl::StrContains(FormatTask(task), "waiting:"));
  EXPECT_FALSE(absl::StrContains(FormatTask(task), "rate_key:"));
}

TEST(FormatTest, QueueTextShowsLimitsAndBlockedCounts) {
  v1::Queue queue;
  queue.mutable_config()->set_name("api");
  v1::Limits* l = queue.mutable_config()->mutable_limits();
  l->mutable_rate()->set_per_second(50);
  l->mutable_rate()->set_burst(5);
  l->set_max_running(20);
  l->mutable_key_rate()->set_per_second(10);
  (*l->mutable_key_rates())["globex"].set_per_second(100.0 / 60);
  (*l->mutable_key_rates())["acme"].set_per_second(5);
  l->set_key_max_running(2);
  (*l->mutable_pools())["s3"] = 64;
  (*l->mutable_pools())["db"] = 5;
  (*queue.mutable_stats()->mutable_blocked())["rate_limited"] = 7;
  (*queue.mutable_stats()->mutable_blocked())["paused"] = 0;
  (*queue.mutable_stats()->mutable_blocked())["concurrency_full"] = 2;
  const std::string text = FormatQueue(queue);
  EXPECT_TRUE(absl::StrContains(text, "rate: 50/s burst 5\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "max_running: 20\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "key_rate: 10/s\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "key_rates: acme=5/s, globex=100/m\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "key_max_running: 2\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "pools: db=5, s3=64\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "blocked: rate_limited=7, concurrency_full=2\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "limits: none")) << text;
}

TEST(FormatTest, QueueWithoutLimitsOrBlockedTasksSaysNone) {
  v1::Queue queue;
  queue.mutable_config()->set_name("plain");
  queue.mutable_config()->mutable_limits();
  const std::string text = FormatQueue(queue);
  EXPECT_TRUE(absl::StrContains(text, "limits: none\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "blocked: none\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "pools:")) << text;
}

}  // namespace
}  // namespace conveyor::client
