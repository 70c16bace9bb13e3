// Formatting of workflows: a task's workflow lines, groups and their
// members, progress bars and lines, map result lines and their JSON,
// chains, schedules.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/format.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"

namespace conveyor::client {
namespace {

const absl::Time kCreated = absl::FromUnixSeconds(1'700'000'000);

TEST(WorkflowFormatTest, TaskShowsItsGroupChainStageAndScheduleOnlyWhenSet) {
  v1::Task task;
  task.set_id("00000000000000aa");
  std::string text = FormatTask(task);
  EXPECT_FALSE(absl::StrContains(text, "group:")) << text;
  EXPECT_FALSE(absl::StrContains(text, "chain:")) << text;
  EXPECT_FALSE(absl::StrContains(text, "schedule:")) << text;
  task.set_group_id("0000000000000010");
  task.set_chain_id("0000000000000009");
  task.set_chain_stage(2);
  task.set_schedule("nightly");
  text = FormatTask(task);
  EXPECT_TRUE(absl::StrContains(text, "\ngroup: 0000000000000010\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "\nchain: 0000000000000009 stage 2\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "\nschedule: nightly\n")) << text;
  // The first stage of a chain is stage 0, and still shown.
  task.set_chain_stage(0);
  EXPECT_TRUE(absl::StrContains(FormatTask(task), "\nchain: 0000000000000009 stage 0\n"));
}

TEST(WorkflowFormatTest, EnumNamesDropTheirPrefix) {
  EXPECT_EQ(GroupStateName(v1::GROUP_STATE_RUNNING), "RUNNING");
  EXPECT_EQ(GroupStateName(v1::GROUP_STATE_CANCELED), "CANCELED");
  EXPECT_EQ(ChainStateName(v1::CHAIN_STATE_FAILED), "FAILED");
  EXPECT_EQ(GroupStateName(static_cast<v1::GroupState>(42)), "42");
  EXPECT_EQ(MisfireName(v1::MISFIRE_POLICY_RUN_ONCE), "run-once");
  EXPECT_EQ(MisfireName(v1::MISFIRE_POLICY_SKIP), "skip");
  EXPECT_EQ(MisfireName(v1::MISFIRE_POLICY_UNSPECIFIED), "skip");
}

v1::Group SampleGroup() {
  v1::Group group;
  group.set_id("0000000000000010");
  group.set_state(v1::GROUP_STATE_RUNNING);
  group.set_total(200);
  group.set_ended(50);
  group.set_succeeded(44);
  group.set_fallback(2);
  group.set_dead(3);
  group.set_canceled(1);
  ToProto(kCreated, group.mutable_created_at());
  return group;
}

TEST(WorkflowFormatTest, GroupTextHasItsCountersAndFailures) {
  v1::Group group = SampleGroup();
  std::string text = FormatGroup(group);
  EXPECT_TRUE(absl::StartsWith(text, "id: 0000000000000010\nstate: RUNNING\ntotal: 200\nended: 50\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "succeeded: 44\nfallback: 2\ndead: 3\ncanceled: 1\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "failed: 4\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "callback: none\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "created: 2023-11-14T22:13:20Z\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "finished:")) << text;
  group.set_has_callback(true);
  EXPECT_TRUE(absl::StrContains(FormatGroup(group), "callback: not submitted yet\n"));
  group.set_callback_task_id("00000000000000ff");
  group.set_state(v1::GROUP_STATE_DONE);
  ToProto(kCreated + absl::Minutes(1), group.mutable_finished_at());
  text = FormatGroup(group);
  EXPECT_TRUE(absl::StrContains(text, "callback: 00000000000000ff\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "finished: 2023-11-14T22:14:20Z\n")) << text;
}

TEST(WorkflowFormatTest, MembersTableShowsResultsOnlyWhenAskedFor) {
  std::vector<v1::GroupMember> members(2);
  members[0].set_index(0);
  members[0].set_task_id("t0");
  members[0].set_state(v1::TASK_STATE_SUCCEEDED);
  members[0].set_result("line one\nline two");
  members[1].set_index(1);
  members[1].set_task_id("t1");
  members[1].set_state(v1::TASK_STATE_DEAD);
  members[1].set_error("boom");
  const std::vector<std::string> plain = absl::StrSplit(FormatGroupMembers(members, false), '\n',
                                                        absl::SkipEmpty());
  ASSERT_EQ(plain.size(), 3u);
  EXPECT_EQ(plain[0], "INDEX  TASK  STATE");
  EXPECT_EQ(plain[1], "0      t0    SUCCEEDED");
  const std::vector<std::string> full = absl::StrSplit(FormatGroupMembers(members, true), '\n',
                                                       absl::SkipEmpty());
  ASSERT_EQ(full.size(), 3u);
  EXPECT_TRUE(absl::StartsWith(full[0], "INDEX  TASK  STATE      RESULT")) << full[0];
  EXPECT_TRUE(absl::StrContains(full[1], "line one\\nline two")) << full[1];
  EXPECT_TRUE(absl::StrContains(full[2], "DEAD")) << full[2];
  EXPECT_TRUE(absl::EndsWith(full[2], "boom")) << full[2];
}

TEST(WorkflowFormatTest, GroupProgressBarFillsByEndedMembersAndCountsFailures) {
  MapProgress progress;
  progress.group_id = "g";
  progress.state = v1::GROUP_STATE_RUNNING;
  progress.total = 200;
  progress.ended = 50;
  EXPECT_EQ(FormatGroupProgressBar(progress, 8), "[##......]  25% 50/200 ended");
  progress.failures = 3;
  EXPECT_EQ(FormatGroupProgressBar(progress, 8), "[##......]  25% 50/200 ended, 3 failed");
  progress.ended = 200;
  progress.state = v1::GROUP_STATE_DONE;
  EXPECT_EQ(FormatGroupProgressBar(progress, 4), "[####] 100% 200/200 ended, 3 failed");
  progress.state = v1::GROUP_STATE_CANCELED;
  EXPECT_TRUE(absl::EndsWith(FormatGroupProgressBar(progress, 4), " CANCELED"));
  MapProgress empty;
  EXPECT_EQ(FormatGroupProgressBar(empty, 2), "[##] 100% 0/0 ended");
}

TEST(WorkflowFormatTest, GroupProgressLineNamesTheGroupAndItsState) {
  MapProgress progress = GroupProgress(SampleGroup());
  EXPECT_EQ(progress.failures, 4u);
  EXPECT_EQ(FormatGroupProgressLine(progress), "0000000000000010 RUNNING 50/200 ended, 4 failed");
  progress.failures = 0;
  EXPECT_EQ(FormatGroupProgressLine(progress), "0000000000000010 RUNNING 50/200 ended");
}

TEST(WorkflowFormatTest, MapItemLineIsTheResultOnOneLine) {
  MapItem item;
  item.state = v1::TASK_STATE_SUCCEEDED;
  item.result = "HELLO";
  EXPECT_EQ(FormatMapItemLine(item), "HELLO");
  item.result = "with newline\n";
  EXPECT_EQ(FormatMapItemLine(item), "with newline") << "one trailing newline dropped";
  item.result = "crlf\r\n";
  EXPECT_EQ(FormatMapItemLine(item), "crlf");
  item.result = "two\n\n";
  EXPECT_EQ(FormatMapItemLine(item), "two\\n");
  item.result = "a\tb\nc";
  EXPECT_EQ(FormatMapItemLine(item), "a\\tb\\nc");
  item.result = "caf\xc3\xa9";
  EXPECT_EQ(FormatMapItemLine(item), "caf\xc3\xa9");
  item.result = std::string("\xff\x00", 2);
  EXPECT_EQ(FormatMapItemLine(item), "<2 bytes, not UTF-8> ff00");
  item.result = std::string(10000, 'x');
  EXPECT_EQ(FormatMapItemLine(item).size(), 10000u) << "results are never cut";
  item.state = v1::TASK_STATE_FALLBACK;
  item.result = "fallback";
  EXPECT_EQ(FormatMapItemLine(item), "fallback");
}

TEST(WorkflowFormatTest, FailedMapItemIsAnEmptyLineAndADiagnostic) {
  MapItem item;
  item.task_id = "00000000000000ab";
  item.state = v1::TASK_STATE_DEAD;
  item.error = "no such file\nat line 3";
  EXPECT_EQ(FormatMapItemLine(item), "");
  EXPECT_EQ(FormatMapItemError(4, item),
            "item 4 (task 00000000000000ab) ended DEAD: no such file\\nat line 3");
  item.state = v1::TASK_STATE_CANCELED;
  item.error.clear();
  EXPECT_EQ(FormatMapItemError(0, item), "item 0 (task 00000000000000ab) ended CANCELED");
}

TEST(WorkflowFormatTest, MapItemJsonHasIndexTaskStateResultAndError) {
  MapItem item;
  item.task_id = "t";
  item.state = v1::TASK_STATE_SUCCEEDED;
  item.result = "hi";
  absl::StatusOr<std::string> json = ToJson(MapItemMessage(7, item));
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json,
            "{\"index\":7,\"task_id\":\"t\",\"state\":\"TASK_STATE_SUCCEEDED\",\"result\":\"aGk=\","
            "\"error\":\"\"}");
}

v1::Chain SampleChain() {
  v1::Chain chain;
  chain.set_id("0000000000000020");
  chain.set_state(v1::CHAIN_STATE_RUNNING);
  chain.set_stages(3);
  chain.set_current_stage(1);
  ToProto(kCreated, chain.mutable_created_at());
  const char* types[] = {"fetch", "resize", "upload"};
  for (uint32_t i = 0; i < 3; ++i) {
    v1::Chain::Stage* stage = chain.add_stage_list();
    stage->set_index(i);
    stage->set_queue(i == 2 ? "out" : "img");
    stage->set_type(types[i]);
    if (i < 2) {
      stage->set_task_id(absl::StrCat("000000000000002", i));
      stage->set_state(i == 0 ? v1::TASK_STATE_SUCCEEDED : v1::TASK_STATE_RUNNING);
    }
  }
  return chain;
}

TEST(WorkflowFormatTest, ChainTextHasItsStateAndAStageTable) {
  const std::string text = FormatChain(SampleChain());
  EXPECT_TRUE(absl::StartsWith(
      text, "id: 0000000000000020\nstate: RUNNING\nstages: 3\ncurrent_stage: 1\n"))
      << text;
  const std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 4u);
  EXPECT_TRUE(absl::StartsWith(lines[lines.size() - 4], "STAGE  QUEUE  TYPE    TASK")) << text;
  EXPECT_TRUE(absl::StrContains(lines[lines.size() - 3], "fetch   0000000000000020  SUCCEEDED"))
      << text;
  EXPECT_EQ(lines.back(), "2      out    upload  -                 -          -") << text;
}

TEST(WorkflowFormatTest, ChainLineShowsTheCurrentStageOneBased) {
  v1::Chain chain = SampleChain();
  EXPECT_EQ(FormatChainLine(chain), "chain 0000000000000020 stage 2/3 (img/resize) RUNNING");
  chain.set_state(v1::CHAIN_STATE_FAILED);
  EXPECT_TRUE(absl::EndsWith(FormatChainLine(chain), " chain FAILED"));
}

v1::Schedule SampleSchedule() {
  v1::Schedule schedule;
  schedule.set_name("nightly");
  schedule.set_cron("0 3 * * *");
  schedule.mutable_task()->set_queue("reports");
  schedule.mutable_task()->set_type("build");
  schedule.mutable_task()->set_payload("full");
  ToProto(kCreated, schedule.mutable_created_at());
  ToProto(kCreated + absl::Hours(5), schedule.mutable_next_run_at());
  schedule.set_runs(3);
  return schedule;
}

TEST(WorkflowFormatTest, ScheduleTextShowsItsTemplateAndRuns) {
  v1::Schedule schedule = SampleSchedule();
  std::string text = FormatSchedule(schedule);
  EXPECT_TRUE(absl::StartsWith(text,
                               "name: nightly\ncron: 0 3 * * *\ntime_zone: UTC\nmisfire: skip\n"
                               "paused: false\nqueue: reports\ntype: build\npriority: 0\n"
                               "payload: full\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "next_run: 2023-11-15T03:13:20Z\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "last_run: -\nlast_task: -\nruns: 3\nmissed: 0\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "then:")) << text;
  EXPECT_FALSE(absl::StrContains(text, "last_error:")) << text;
  schedule.set_time_zone("Europe/Paris");
  schedule.set_misfire(v1::MISFIRE_POLICY_RUN_ONCE);
  schedule.set_paused(true);
  schedule.set_last_error("queue \"reports\" is full");
  v1::TaskSpec* stage = schedule.mutable_task()->add_then();
  stage->set_queue("mail");
  stage->set_type("send");
  text = FormatSchedule(schedule);
  EXPECT_TRUE(absl::StrContains(text, "time_zone: Europe/Paris\nmisfire: run-once\npaused: true\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "then: mail/send\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "next_run: - (paused)\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "last_error: queue \"reports\" is full\n")) << text;
}

TEST(WorkflowFormatTest, ScheduleTableHasAHeaderAndOneRowPerSchedule) {
  v1::Schedule paused = SampleSchedule();
  paused.set_name("weekly");
  paused.set_paused(true);
  const std::vector<std::string> lines = absl::StrSplit(
      FormatScheduleTable({SampleSchedule(), paused}), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(absl::StartsWith(lines[0], "NAME     CRON       TZ   PAUSED  QUEUE    TYPE   NEXT_RUN"))
      << lines[0];
  EXPECT_TRUE(absl::StartsWith(lines[1], "nightly  0 3 * * *  UTC  no      reports  build  2023-"))
      << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[2], "yes     reports  build  -")) << lines[2];
}

}  // namespace
}  // namespace conveyor::client
