// Parsing of the workflow commands: map and group items (lines, JSON
// arrays), --then stages, map and group options, schedules; each error says
// what is wrong.
#include "client/workflow_args.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"

namespace conveyor::client {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

Invocation MustParse(const std::vector<std::string>& args) {
  Invocation inv;
  absl::Status status = ParseCommandLine(args, "", &inv);
  EXPECT_TRUE(status.ok()) << status;
  return inv;
}

// The message of a failed StatusOr (or Status), for EXPECT_* on its text.
template <typename T>
std::string ErrorOf(const absl::StatusOr<T>& r) {
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  return std::string(r.status().message());
}

using Items = std::vector<std::string>;

// ─── items ───

TEST(ParseItemsTest, EveryLineIsAnItemWithoutItsNewline) {
  EXPECT_EQ(*ParseItems("a\nb b\nc\n", false), (Items{"a", "b b", "c"}));
  EXPECT_EQ(*ParseItems("a\nb", false), (Items{"a", "b"})) << "no final newline needed";
  EXPECT_EQ(*ParseItems("a\n\nb\n", false), (Items{"a", "", "b"})) << "empty lines are items";
  EXPECT_EQ(*ParseItems("\n", false), (Items{""}));
  EXPECT_EQ(*ParseItems("", false), Items{});
}

TEST(ParseItemsTest, CrlfLinesLoseTheirCarriageReturnOnly) {
  EXPECT_EQ(*ParseItems("a\r\nb\r\n", false), (Items{"a", "b"}));
  EXPECT_EQ(*ParseItems("a\r\r\n", false), (Items{"a\r"}));
  EXPECT_EQ(*ParseItems("x\ry\n", false), (Items{"x\ry"}));
}

TEST(ParseItemsTest, LinesKeepTheirBytesAndLookingLikeJsonDoesNotMakeThemJson) {
  const std::string binary("\x00\xff\t", 3);
  EXPECT_EQ(*ParseItems(binary + "\n", false), (Items{binary}));
  EXPECT_EQ(*ParseItems("[\"a\", \"b\"]\n", false), (Items{"[\"a\", \"b\"]"}));
}

TEST(ParseItemsTest, JsonArrayOfStringsGivesOneItemPerString) {
  EXPECT_EQ(*ParseItems(R"( ["a", "b c", "", "line\nbreak", "\u00e9"] )", true),
            (Items{"a", "b c", "", "line\nbreak", "\xc3\xa9"}));
  EXPECT_EQ(*ParseItems("[]", true), Items{});
}

TEST(ParseItemsTest, JsonThatIsNotAnArrayOfStringsIsRejectedNamingTheElement) {
  EXPECT_TRUE(absl::StrContains(ErrorOf(ParseItems(R"(["a", 1])", true)),
                                "element 1 is a number, not a string"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(ParseItems(R"([null])", true)), "element 0 is null"));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf(ParseItems(R"(["x", true])", true)), "element 1 is a boolean"));
  EXPECT_TRUE(
      absl::StrContains(ErrorOf(ParseItems(R"([{"a": "b"}])", true)), "element 0 is an object"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(ParseItems(R"([["a"]])", true)), "element 0 is an array"));
  for (const char* bad : {"", "{\"a\": 1}", "[\"a\"", "\"a\"", "a\nb\n", "[\"a\",]x"}) {
    EXPECT_TRUE(absl::StrContains(ErrorOf(ParseItems(bad, true)),
                                  "--json-array: the input is not a JSON array of strings"))
        << bad;
  }
}

// ─── --then ───

TEST(ThenTest, AStageTakesQueueTypeAndEveryOption) {
  absl::StatusOr<v1::TaskSpec> stage =
      ParseThenStage("queue=thumbs,type=resize,priority=5,timeout=30s,max-attempts=3,delay=1m");
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_EQ(stage->queue(), "thumbs");
  EXPECT_EQ(stage->type(), "resize");
  EXPECT_EQ(stage->priority(), 5u);
  EXPECT_EQ(FromProto(stage->timeout()), absl::Seconds(30));
  EXPECT_EQ(stage->retry().max_attempts(), 3u);
  EXPECT_EQ(FromProto(stage->delay()), absl::Minutes(1));
  EXPECT_EQ(stage->payload(), "");
  EXPECT_EQ(stage->idempotency_key(), "");
}

TEST(ThenTest, AMinimalStageLeavesOptionsUnsetForTheQueuesDefaults) {
  absl::StatusOr<v1::TaskSpec> stage = ParseThenStage("type=t,queue=q");
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_EQ(stage->queue(), "q");
  EXPECT_EQ(stage->type(), "t");
  EXPECT_FALSE(stage->has_timeout());
  EXPECT_FALSE(stage->has_retry());
  EXPECT_FALSE(stage->has_delay());
}

TEST(ThenTest, EveryMalformedStageIsRejectedNamingTheProblem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty stage"},
      {"queue=q", "type is required"},
      {"type=t", "queue is required"},
      {"queue=q,type", "\"type\" is not KEY=VALUE"},
      {"queue=q,,type=t", "\"\" is not KEY=VALUE"},
      {"queue=,type=t", "queue has no value"},
      {"=x,queue=q,type=t", "\"=x\" has no key"},
      {"queue=q,type=t,queue=r", "queue is given twice"},
      {"queue=q,type=t,prio=1", "unknown key \"prio\""},
      {"queue=q,type=t,priority=10", "priority must be 0-9, got \"10\""},
      {"queue=q,type=t,priority=-1", "priority must be 0-9"},
      {"queue=q,type=t,priority=high", "priority must be 0-9"},
      {"queue=q,type=t,timeout=5", "timeout must be a duration such as 30s or 5m, got \"5\""},
      {"queue=q,type=t,timeout=-1s", "timeout must be a duration"},
      {"queue=q,type=t,delay=soon", "delay must be a duration"},
      {"queue=q,type=t,max-attempts=0", "max-attempts must be a whole number of at least 1"},
      {"queue=q,type=t,max-attempts=-2", "max-attempts must be a whole number of at least 1"},
      {"queue=q,type=t,max-attempts=99999999999", "max-attempts must be"},
      {"queue=q type=t", "\"queue=q type=t\": type is required"},
  };
  for (const auto& [text, problem] : cases) {
    const std::string message = ErrorOf(ParseThenStage(text));
    EXPECT_TRUE(absl::StrContains(message, problem)) << text << " -> " << message;
    EXPECT_TRUE(absl::StrContains(message, "(use queue=Q,type=T")) << message;
  }
}

TEST(ThenTest, SubmitAddsEachThenAsAStageInOrder) {
  Invocation inv = MustParse({"submit", "--queue", "q", "--type", "first", "--then",
                              "queue=q2,type=second", "--then=queue=q3,type=third,priority=9"});
  absl::StatusOr<v1::TaskSpec> spec = BuildTaskSpec(inv, "payload", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->type(), "first");
  EXPECT_EQ(spec->payload(), "payload");
  ASSERT_EQ(spec->then_size(), 2);
  EXPECT_EQ(spec->then(0).queue(), "q2");
  EXPECT_EQ(spec->then(0).type(), "second");
  EXPECT_EQ(spec->then(1).type(), "third");
  EXPECT_EQ(spec->then(1).priority(), 9u);
  EXPECT_EQ(BuildTaskSpec(MustParse({"submit", "--queue", "q", "--type", "t"}), "", kNow)
                ->then_size(),
            0);
}

TEST(ThenTest, SubmitNamesWhichThenIsWrong) {
  Invocation inv = MustParse({"submit", "--queue", "q", "--type", "t", "--then", "queue=a,type=b",
                              "--then", "queue=a,tpye=b"});
  const std::string message = ErrorOf(BuildTaskSpec(inv, "", kNow));
  EXPECT_TRUE(absl::StartsWith(message, "--then #2 \"queue=a,tpye=b\": unknown key \"tpye\""))
      << message;
}

TEST(ThenTest, AtMostThirtyTwoStages) {
  std::vector<std::string> args = {"submit", "--queue", "q", "--type", "t"};
  for (int i = 0; i < kMaxThenStages; ++i) {
    args.push_back("--then");
    args.push_back(absl::StrCat("queue=q,type=s", i));
  }
  absl::StatusOr<v1::TaskSpec> full = BuildTaskSpec(MustParse(args), "", kNow);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->then_size(), kMaxThenStages);
  args.push_back("--then=queue=q,type=one-too-many");
  EXPECT_TRUE(absl::StrContains(ErrorOf(BuildTaskSpec(MustParse(args), "", kNow)),
                                "--then: at most 32 stages, got 33"));
}

// ─── map and group submit ───

TEST(MapArgsTest, MapOptionsTakeEveryFlag) {
  absl::StatusOr<MapOptions> options = BuildMapOptions(MustParse(
      {"map", "--queue", "q", "--type", "t", "--priority", "4", "--task-timeout", "90s",
       "--max-attempts", "2", "--fallback", "n/a", "--deadline", "10m", "--idempotency-key",
       "k1", "--input", "items.txt", "--json-array"}));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->queue, "q");
  EXPECT_EQ(options->type, "t");
  EXPECT_EQ(options->priority, 4u);
  EXPECT_EQ(options->timeout, absl::Seconds(90));
  EXPECT_EQ(options->max_attempts, 2u);
  EXPECT_EQ(options->fallback_result, "n/a");
  EXPECT_EQ(options->deadline, absl::Minutes(10));
  EXPECT_EQ(options->idempotency_key, "k1");
  EXPECT_FALSE(options->on_progress);
}

TEST(MapArgsTest, MapOptionsDefaultToTheQueuesSettingsAndNoDeadline) {
  absl::StatusOr<MapOptions> options =
      BuildMapOptions(MustParse({"map", "--queue", "q", "--type", "t"}));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->priority, 0u);
  EXPECT_EQ(options->timeout, absl::ZeroDuration());
  EXPECT_FALSE(options->max_attempts.has_value());
  EXPECT_FALSE(options->fallback_result.has_value());
  EXPECT_EQ(options->deadline, absl::InfiniteDuration());
  EXPECT_EQ(options->idempotency_key, "");
  const v1::TaskSpec spec = MapMemberSpec(*options, "x");
  EXPECT_FALSE(spec.has_timeout());
  EXPECT_FALSE(spec.has_retry());
  EXPECT_FALSE(spec.has_fallback_result());
  // An empty --fallback is a fallback all the same.
  options = BuildMapOptions(MustParse({"map", "--queue", "q", "--type", "t", "--fallback="}));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(MapMemberSpec(*options, "x").has_fallback_result());
}

TEST(MapArgsTest, EveryBadMapFlagIsAUsageErrorNamingTheFlag) {
  EXPECT_EQ(ErrorOf(BuildMapOptions(MustParse({"map", "--type", "t"}))), "--queue is required");
  EXPECT_EQ(ErrorOf(BuildMapOptions(MustParse({"map", "--queue", "q"}))), "--type is required");
  EXPECT_EQ(ErrorOf(BuildMapOptions(MustParse({"map", "--queue=", "--type", "t"}))),
            "--queue is required");
  EXPECT_EQ(
      ErrorOf(BuildMapOptions(MustParse({"map", "--queue", "q", "--type", "t", "--priority", "10"}))),
      "--priority must be 0-9, got 10");
  EXPECT_TRUE(absl::StartsWith(ErrorOf(BuildMapOptions(MustParse(
                                   {"map", "--queue", "q", "--type", "t", "--max-attempts", "0"}))),
                               "--max-attempts must be at least 1"));
  EXPECT_EQ(ErrorOf(BuildMapOptions(
                MustParse({"map", "--queue", "q", "--type", "t", "--deadline", "0s"}))),
            "--deadline must be a positive duration");
  Invocation inv;
  absl::Status status = ParseCommandLine({"map", "--deadline", "-1s"}, "", &inv);
  EXPECT_TRUE(absl::StrContains(status.message(), "--deadline: negative duration")) << status;
  status = ParseCommandLine({"map", "--task-timeout", "5"}, "", &inv);
  EXPECT_TRUE(absl::StrContains(status.message(), "--task-timeout: not a duration")) << status;
  status = ParseCommandLine({"map", "items.txt"}, "", &inv);
  EXPECT_TRUE(absl::StrContains(status.message(), "unexpected argument \"items.txt\"")) << status;
  status = ParseCommandLine({"map", "--then", "queue=q,type=t"}, "", &inv);
  EXPECT_TRUE(absl::StrContains(status.message(), "unknown flag \"--then\"")) << status;
}

TEST(GroupArgsTest, GroupSubmitBuildsOneMemberPerItemWithTheGroupsKey) {
  Invocation inv = MustParse({"group", "submit", "--queue", "q", "--type", "t", "--priority", "3",
                              "--max-attempts", "5", "--idempotency-key", "g1"});
  absl::StatusOr<v1::SubmitGroupRequest> request = BuildSubmitGroupRequest(inv, {"a", "b", "c"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->idempotency_key(), "g1");
  ASSERT_EQ(request->tasks_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(request->tasks(i).payload(), std::string(1, static_cast<char>('a' + i)));
    EXPECT_EQ(request->tasks(i).queue(), "q");
    EXPECT_EQ(request->tasks(i).priority(), 3u);
    EXPECT_EQ(request->tasks(i).retry().max_attempts(), 5u);
    EXPECT_EQ(request->tasks(i).idempotency_key(), "");
  }
  EXPECT_FALSE(request->has_callback());
}

TEST(GroupArgsTest, GroupSubmitTakesACallback) {
  Invocation inv = MustParse({"group", "submit", "--queue", "q", "--type", "t", "--callback-queue",
                              "done", "--callback-type", "collect", "--callback-payload", "ctx"});
  absl::StatusOr<v1::SubmitGroupRequest> request = BuildSubmitGroupRequest(inv, {"a"});
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(request->has_callback());
  EXPECT_EQ(request->callback().queue(), "done");
  EXPECT_EQ(request->callback().type(), "collect");
  EXPECT_EQ(request->callback().payload(), "ctx");
}

TEST(GroupArgsTest, EveryBadCallbackCombinationIsAUsageError) {
  auto error = [](std::vector<std::string> flags) {
    std::vector<std::string> args = {"group", "submit", "--queue", "q", "--type", "t"};
    args.insert(args.end(), flags.begin(), flags.end());
    return ErrorOf(BuildSubmitGroupRequest(MustParse(args), {"a"}));
  };
  EXPECT_EQ(error({"--callback-queue", "done"}), "--callback-queue and --callback-type go together");
  EXPECT_EQ(error({"--callback-type", "collect"}),
            "--callback-queue and --callback-type go together");
  EXPECT_EQ(error({"--callback-payload", "x"}),
            "--callback-payload needs --callback-queue and --callback-type");
  EXPECT_EQ(error({"--callback-queue=", "--callback-type", "c"}),
            "--callback-queue and --callback-type must not be empty");
  EXPECT_EQ(ErrorOf(BuildSubmitGroupRequest(MustParse({"group", "submit", "--type", "t"}), {"a"})),
            "--queue is required");
}

TEST(GroupArgsTest, GroupCommandsTakeTheirArgumentsAndFlags) {
  Invocation inv = MustParse({"group", "get", "0000000000000010", "--results"});
  ASSERT_NE(inv.command, nullptr);
  EXPECT_STREQ(inv.command->name, "group get");
  EXPECT_TRUE(inv.Bool("results"));
  EXPECT_FALSE(inv.Bool("members"));
  EXPECT_EQ(inv.args, std::vector<std::string>{"0000000000000010"});
  inv = MustParse({"group", "watch", "g", "--deadline", "5m"});
  EXPECT_EQ(inv.Duration("deadline"), absl::Minutes(5));
  EXPECT_STREQ(MustParse({"group", "cancel", "g"}).command->name, "group cancel");
  EXPECT_STREQ(MustParse({"chain", "get", "c"}).command->name, "chain get");
  EXPECT_STREQ(MustParse({"chain", "cancel", "c"}).command->name, "chain cancel");

  for (const std::vector<std::string>& bad :
       std::vector<std::vector<std::string>>{{"group", "get"},
                                             {"group", "watch"},
                                             {"group", "cancel", "a", "b"},
                                             {"chain", "get"},
                                             {"schedule", "get"},
                                             {"schedule", "create"},
                                             {"group", "submit", "x"}}) {
    Invocation failed;
    EXPECT_FALSE(ParseCommandLine(bad, "", &failed).ok()) << bad[0] << " " << bad[1];
  }
  for (const char* group : {"group", "chain", "schedule"}) {
    Invocation failed;
    absl::Status status = ParseCommandLine({group}, "", &failed);
    EXPECT_TRUE(absl::StrContains(status.message(), "missing subcommand")) << status;
    EXPECT_EQ(failed.topic, group);
    status = ParseCommandLine({group, "frob"}, "", &failed);
    EXPECT_TRUE(absl::StrContains(status.message(), "unknown command")) << status;
  }
}

TEST(GroupArgsTest, EachWorkflowGroupsUsageListsItsSubcommands) {
  EXPECT_TRUE(absl::StrContains(Usage("group"), "group watch ID"));
  EXPECT_TRUE(absl::StrContains(Usage("group"), "group submit"));
  EXPECT_FALSE(absl::StrContains(Usage("group"), "queue list"));
  EXPECT_TRUE(absl::StrContains(Usage("chain"), "chain cancel ID"));
  EXPECT_TRUE(absl::StrContains(Usage("schedule"), "schedule resume NAME"));
  const std::string submit = Usage("submit");
  EXPECT_TRUE(absl::StrContains(submit, "--then STAGE")) << submit;
  EXPECT_TRUE(absl::StrContains(submit, "queue=Q,type=T[,priority=N][,timeout=DUR]")) << submit;
  EXPECT_TRUE(absl::StrContains(Usage("map"), "in input order")) << Usage("map");
  EXPECT_TRUE(absl::StrContains(Usage(""), "1 a task ended unsuccessfully"));
}

// ─── schedules ───

TEST(ScheduleArgsTest, MisfireTakesSkipOrRunOnce) {
  EXPECT_EQ(*ParseMisfire("skip"), v1::MISFIRE_POLICY_SKIP);
  EXPECT_EQ(*ParseMisfire("run-once"), v1::MISFIRE_POLICY_RUN_ONCE);
  EXPECT_EQ(*ParseMisfire("RUN_ONCE"), v1::MISFIRE_POLICY_RUN_ONCE);
  EXPECT_EQ(ErrorOf(ParseMisfire("always")), "--misfire must be skip or run-once, got \"always\"");
}

TEST(ScheduleArgsTest, CreateBuildsTheScheduleAndItsTaskTemplate) {
  Invocation inv = MustParse({"schedule", "create", "nightly", "--cron", "0 3 * * *", "--tz",
                              "Europe/Paris", "--misfire", "run-once", "--queue", "reports",
                              "--type", "build", "--priority", "2", "--task-timeout", "10m",
                              "--max-attempts", "4", "--header", "team=data", "--delay", "5s",
                              "--then", "queue=mail,type=send", "--paused"});
  absl::StatusOr<v1::Schedule> schedule = BuildSchedule(inv, "{\"full\":true}", kNow);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  EXPECT_EQ(schedule->name(), "nightly");
  EXPECT_EQ(schedule->cron(), "0 3 * * *");
  EXPECT_EQ(schedule->time_zone(), "Europe/Paris");
  EXPECT_EQ(schedule->misfire(), v1::MISFIRE_POLICY_RUN_ONCE);
  EXPECT_TRUE(schedule->paused());
  const v1::TaskSpec& task = schedule->task();
  EXPECT_EQ(task.queue(), "reports");
  EXPECT_EQ(task.type(), "build");
  EXPECT_EQ(task.payload(), "{\"full\":true}");
  EXPECT_EQ(task.priority(), 2u);
  EXPECT_EQ(FromProto(task.timeout()), absl::Minutes(10));
  EXPECT_EQ(task.retry().max_attempts(), 4u);
  EXPECT_EQ(task.headers().at("team"), "data");
  EXPECT_EQ(FromProto(task.delay()), absl::Seconds(5));
  ASSERT_EQ(task.then_size(), 1);
  EXPECT_EQ(task.then(0).queue(), "mail");
  EXPECT_EQ(task.idempotency_key(), "") << "a key would make every tick after the first a no-op";
}

TEST(ScheduleArgsTest, CreateLeavesZoneAndMisfireToTheBrokersDefaults) {
  absl::StatusOr<v1::Schedule> schedule = BuildSchedule(
      MustParse({"schedule", "create", "s", "--cron", "@hourly", "--queue", "q", "--type", "t"}),
      "", kNow);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  EXPECT_EQ(schedule->time_zone(), "");
  EXPECT_EQ(schedule->misfire(), v1::MISFIRE_POLICY_UNSPECIFIED);
  EXPECT_FALSE(schedule->paused());
}

TEST(ScheduleArgsTest, EveryBadScheduleFlagIsAUsageError) {
  auto error = [](std::vector<std::string> flags) {
    std::vector<std::string> args = {"schedule", "create", "s"};
    args.insert(args.end(), flags.begin(), flags.end());
    return ErrorOf(BuildSchedule(MustParse(args), "", kNow));
  };
  EXPECT_EQ(error({"--queue", "q", "--type", "t"}), "--cron is required");
  EXPECT_EQ(error({"--cron=", "--queue", "q", "--type", "t"}), "--cron is required");
  EXPECT_EQ(error({"--cron", "@daily", "--tz=", "--queue", "q", "--type", "t"}),
            "--tz must not be empty");
  EXPECT_EQ(error({"--cron", "@daily", "--misfire", "later", "--queue", "q", "--type", "t"}),
            "--misfire must be skip or run-once, got \"later\"");
  EXPECT_EQ(error({"--cron", "@daily", "--type", "t"}), "--queue is required");
  EXPECT_EQ(error({"--cron", "@daily", "--queue", "q"}), "--type is required");
  EXPECT_EQ(error({"--cron", "@daily", "--queue", "q", "--type", "t", "--priority", "11"}),
            "--priority must be 0-9, got 11");
  EXPECT_TRUE(absl::StartsWith(
      error({"--cron", "@daily", "--queue", "q", "--type", "t", "--then", "queue=q"}),
      "--then #1 \"queue=q\": type is required"));
  Invocation inv;
  absl::Status status = ParseCommandLine({"schedule", "create", "s", "--wait"}, "", &inv);
  EXPECT_TRUE(absl::StrContains(status.message(), "unknown flag \"--wait\"")) << status;
}

}  // namespace
}  // namespace conveyor::client
