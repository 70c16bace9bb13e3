#include "client/cli_args.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"

namespace conveyor::client {
namespace {

absl::Status Parse(const std::vector<std::string>& args, Invocation* inv,
                   absl::string_view env_addr = "") {
  return ParseCommandLine(args, env_addr, inv);
}

Invocation MustParse(const std::vector<std::string>& args) {
  Invocation inv;
  absl::Status status = Parse(args, &inv);
  EXPECT_TRUE(status.ok()) << status;
  return inv;
}

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

TEST(CliArgsTest, GlobalsHaveDocumentedDefaults) {
  Invocation inv = MustParse({"health"});
  EXPECT_EQ(inv.globals.addr, "127.0.0.1:7400");
  EXPECT_EQ(inv.globals.timeout, absl::Seconds(10));
  EXPECT_EQ(inv.globals.output, OutputFormat::kText);
  ASSERT_NE(inv.command, nullptr);
  EXPECT_STREQ(inv.command->name, "health");
}

TEST(CliArgsTest, AddrComesFromEnvironmentUnlessFlagGiven) {
  Invocation inv;
  ASSERT_TRUE(Parse({"health"}, &inv, "10.0.0.1:9000").ok());
  EXPECT_EQ(inv.globals.addr, "10.0.0.1:9000");
  ASSERT_TRUE(Parse({"--addr", "h:1", "health"}, &inv, "10.0.0.1:9000").ok());
  EXPECT_EQ(inv.globals.addr, "h:1");
}

TEST(CliArgsTest, GlobalsAreAcceptedBeforeAndAfterTheCommand) {
  Invocation inv = MustParse({"--timeout=500ms", "get", "abc", "-o", "json", "--addr=x:2"});
  EXPECT_EQ(inv.globals.timeout, absl::Milliseconds(500));
  EXPECT_EQ(inv.globals.output, OutputFormat::kJson);
  EXPECT_EQ(inv.globals.addr, "x:2");
  EXPECT_EQ(inv.args, std::vector<std::string>{"abc"});
}

TEST(CliArgsTest, OutputAcceptsLongShortAndAttachedForms) {
  EXPECT_EQ(MustParse({"--output=json", "health"}).globals.output, OutputFormat::kJson);
  EXPECT_EQ(MustParse({"-ojson", "health"}).globals.output, OutputFormat::kJson);
  EXPECT_EQ(MustParse({"-o=json", "health"}).globals.output, OutputFormat::kJson);
  EXPECT_EQ(MustParse({"health", "--output", "text"}).globals.output, OutputFormat::kText);
}

TEST(CliArgsTest, OutputOtherThanTextOrJsonIsAUsageError) {
  Invocation inv;
  absl::Status status = Parse({"-o", "yaml", "health"}, &inv);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "yaml")) << status;
}

TEST(CliArgsTest, TimeoutMustBeAPositiveDuration) {
  Invocation inv;
  EXPECT_FALSE(Parse({"--timeout", "10", "health"}, &inv).ok());
  EXPECT_FALSE(Parse({"--timeout", "0s", "health"}, &inv).ok());
  EXPECT_FALSE(Parse({"--timeout", "-1s", "health"}, &inv).ok());
  EXPECT_TRUE(Parse({"--timeout", "1m30s", "health"}, &inv).ok());
  EXPECT_EQ(inv.globals.timeout, absl::Seconds(90));
}

TEST(CliArgsTest, FlagsTakeEqualsOrSeparateValues) {
  Invocation a = MustParse({"submit", "--queue=q", "--type", "t"});
  EXPECT_EQ(a.String("queue"), "q");
  EXPECT_EQ(a.String("type"), "t");
}

TEST(CliArgsTest, HeaderIsRepeatableAndKeepsOrder) {
  Invocation inv =
      MustParse({"submit", "--queue", "q", "--type", "t", "--header", "a=1", "--header=b=x=y"});
  EXPECT_EQ(inv.Strings("header"), (std::vector<std::string>{"a=1", "b=x=y"}));
  absl::StatusOr<v1::TaskSpec> spec = BuildTaskSpec(inv, "", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->headers().at("a"), "1");
  EXPECT_EQ(spec->headers().at("b"), "x=y");
}

TEST(CliArgsTest, NonRepeatableFlagKeepsTheLastValue) {
  Invocation inv = MustParse({"submit", "--queue", "a", "--queue", "b", "--type", "t"});
  EXPECT_EQ(inv.String("queue"), "b");
}

TEST(CliArgsTest, HeaderWithoutEqualsOrKeyIsRejected) {
  std::string key, value;
  EXPECT_FALSE(ParseHeader("novalue", &key, &value).ok());
  EXPECT_FALSE(ParseHeader("=v", &key, &value).ok());
  ASSERT_TRUE(ParseHeader("k=", &key, &value).ok());
  EXPECT_EQ(key, "k");
  EXPECT_EQ(value, "");
}

TEST(CliArgsTest, SubmitBuildsTheWholeTaskSpec) {
  Invocation inv = MustParse({"submit", "--queue", "q", "--type", "t", "--priority", "7", "--delay",
                              "1m", "--task-timeout", "30s", "--max-attempts", "5",
                              "--idempotency-key", "k1", "--expires-in", "1h", "hello"});
  EXPECT_EQ(inv.args, std::vector<std::string>{"hello"});
  absl::StatusOr<v1::TaskSpec> spec = BuildTaskSpec(inv, "payload", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->queue(), "q");
  EXPECT_EQ(spec->type(), "t");
  EXPECT_EQ(spec->payload(), "payload");
  EXPECT_EQ(spec->priority(), 7u);
  EXPECT_EQ(FromProto(spec->delay()), absl::Minutes(1));
  EXPECT_EQ(FromProto(spec->timeout()), absl::Seconds(30));
  EXPECT_EQ(spec->retry().max_attempts(), 5u);
  EXPECT_EQ(spec->idempotency_key(), "k1");
  EXPECT_EQ(FromProto(spec->expires_at()), kNow + absl::Hours(1));
}

TEST(CliArgsTest, SubmitWithoutOptionsLeavesFieldsUnsetForBrokerDefaults) {
  absl::StatusOr<v1::TaskSpec> spec =
      BuildTaskSpec(MustParse({"submit", "--queue", "q", "--type", "t"}), "", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->has_delay());
  EXPECT_FALSE(spec->has_timeout());
  EXPECT_FALSE(spec->has_retry());
  EXPECT_FALSE(spec->has_expires_at());
  EXPECT_TRUE(spec->idempotency_key().empty());
}

TEST(CliArgsTest, SubmitPriorityAboveNineIsAUsageError) {
  Invocation inv = MustParse({"submit", "--queue", "q", "--type", "t", "--priority", "12"});
  absl::StatusOr<v1::TaskSpec> spec = BuildTaskSpec(inv, "", kNow);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "--priority must be 0-9, got 12"))
      << spec.status();
}

TEST(CliArgsTest, NegativeOrNonNumericPriorityFailsWhileParsing) {
  Invocation inv;
  EXPECT_FALSE(Parse({"submit", "--queue", "q", "--type", "t", "--priority", "-1"}, &inv).ok());
  EXPECT_FALSE(Parse({"submit", "--queue", "q", "--type", "t", "--priority", "high"}, &inv).ok());
}

TEST(CliArgsTest, SubmitRequiresQueueAndType) {
  EXPECT_FALSE(BuildTaskSpec(MustParse({"submit", "--type", "t"}), "", kNow).ok());
  EXPECT_FALSE(BuildTaskSpec(MustParse({"submit", "--queue", "q"}), "", kNow).ok());
}

TEST(CliArgsTest, DurationsUseAbslSyntaxAndRejectBareNumbersAndNegatives) {
  Invocation inv;
  EXPECT_TRUE(Parse({"submit", "--delay", "500ms"}, &inv).ok());
  EXPECT_EQ(inv.Duration("delay"), absl::Milliseconds(500));
  EXPECT_TRUE(Parse({"submit", "--delay", "1h30m"}, &inv).ok());
  EXPECT_EQ(inv.Duration("delay"), absl::Minutes(90));
  EXPECT_FALSE(Parse({"submit", "--delay", "5"}, &inv).ok());
  EXPECT_FALSE(Parse({"submit", "--delay", "-2s"}, &inv).ok());
  EXPECT_FALSE(Parse({"submit", "--delay", "inf"}, &inv).ok());
}

TEST(CliArgsTest, BoolFlagTakesNoValueUnlessAttached) {
  Invocation inv = MustParse({"submit", "--wait", "payload"});
  EXPECT_TRUE(inv.Bool("wait"));
  EXPECT_EQ(inv.args, std::vector<std::string>{"payload"});
  inv = MustParse({"submit", "--wait=false"});
  EXPECT_FALSE(inv.Bool("wait"));
  Invocation bad;
  EXPECT_FALSE(Parse({"submit", "--wait=maybe"}, &bad).ok());
}

TEST(CliArgsTest, LoneDashIsAPayloadArgumentAndDoubleDashEndsFlags) {
  EXPECT_EQ(MustParse({"submit", "-"}).args, std::vector<std::string>{"-"});
  Invocation inv = MustParse({"submit", "--", "--not-a-flag"});
  EXPECT_EQ(inv.args, std::vector<std::string>{"--not-a-flag"});
}

TEST(CliArgsTest, UnknownFlagIsAUsageErrorNamingTheFlag) {
  Invocation inv;
  absl::Status status = Parse({"get", "--queue", "q", "id"}, &inv);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "--queue")) << status;
  EXPECT_EQ(inv.topic, "get");
}

TEST(CliArgsTest, UnknownCommandIsAUsageErrorWithTopLevelTopic) {
  Invocation inv;
  absl::Status status = Parse({"frobnicate"}, &inv);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(absl::StrContains(status.message(), "frobnicate")) << status;
  EXPECT_EQ(inv.topic, "");
}

TEST(CliArgsTest, GroupNeedsASubcommand) {
  Invocation inv;
  EXPECT_FALSE(Parse({"queue"}, &inv).ok());
  EXPECT_EQ(inv.topic, "queue");
  EXPECT_FALSE(Parse({"dead", "bury", "q"}, &inv).ok());
  EXPECT_EQ(inv.topic, "dead");
}

TEST(CliArgsTest, NoCommandIsAUsageError) {
  Invocation inv;
  EXPECT_FALSE(Parse({}, &inv).ok());
}

TEST(CliArgsTest, FlagMissingItsValueIsAUsageError) {
  Invocation inv;
  absl::Status status = Parse({"list", "--queue"}, &inv);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(absl::StrContains(status.message(), "--queue needs a value")) << status;
}

TEST(CliArgsTest, PositionalCountIsChecked) {
  Invocation inv;
  EXPECT_FALSE(Parse({"get"}, &inv).ok());
  EXPECT_FALSE(Parse({"get", "a", "b"}, &inv).ok());
  EXPECT_FALSE(Parse({"queue", "create"}, &inv).ok());
  EXPECT_TRUE(Parse({"dead", "requeue", "q", "a", "b", "c"}, &inv).ok());
  EXPECT_EQ(inv.args.size(), 4u);
}

TEST(CliArgsTest, HelpFlagSelectsTheCommandsUsageEvenWithoutRequiredArgs) {
  Invocation inv = MustParse({"queue", "create", "--help"});
  EXPECT_TRUE(inv.help);
  EXPECT_EQ(inv.topic, "queue create");
  inv = MustParse({"-h"});
  EXPECT_TRUE(inv.help);
  EXPECT_EQ(inv.topic, "");
  inv = MustParse({"help", "dead", "purge"});
  EXPECT_TRUE(inv.help);
  EXPECT_EQ(inv.topic, "dead purge");
}

TEST(CliArgsTest, UsageListsEveryCommandAndEveryFlagOfACommand) {
  const std::string top = Usage("");
  for (const CommandSpec& command : Commands()) {
    EXPECT_TRUE(absl::StrContains(top, command.name)) << command.name;
    const std::string usage = Usage(command.name);
    EXPECT_TRUE(absl::StartsWith(usage, absl::StrCat("Usage: conveyor ", command.name)));
    for (const FlagSpec& flag : command.flags) {
      EXPECT_TRUE(absl::StrContains(usage, absl::StrCat("--", flag.name)))
          << command.name << " --" << flag.name;
    }
  }
  EXPECT_FALSE(absl::StrContains(top, "map")) << "map belongs to a later issue";
}

TEST(CliArgsTest, StateParsesShortLongAndAnyCase) {
  EXPECT_EQ(*ParseTaskState("ready"), v1::TASK_STATE_READY);
  EXPECT_EQ(*ParseTaskState("DEAD"), v1::TASK_STATE_DEAD);
  EXPECT_EQ(*ParseTaskState("task_state_running"), v1::TASK_STATE_RUNNING);
  EXPECT_FALSE(ParseTaskState("unspecified").ok());
  EXPECT_FALSE(ParseTaskState("sleeping").ok());
}

TEST(CliArgsTest, QueueCreateSetsOnlyTheFlagsGiven) {
  Invocation inv =
      MustParse({"queue", "create", "jobs", "--capacity", "2", "--full-policy", "wait",
                 "--max-attempts", "4", "--jitter", "0", "--lease-duration", "45s", "--paused"});
  absl::StatusOr<v1::CreateQueueRequest> request = BuildCreateQueueRequest(inv);
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::QueueConfig& config = request->config();
  EXPECT_EQ(config.name(), "jobs");
  EXPECT_EQ(config.capacity(), 2u);
  EXPECT_EQ(config.full_policy(), v1::FULL_POLICY_WAIT);
  EXPECT_EQ(config.retry().max_attempts(), 4u);
  ASSERT_TRUE(config.retry().has_jitter());
  EXPECT_EQ(config.retry().jitter(), 0.0);
  EXPECT_FALSE(config.retry().has_initial_backoff());
  EXPECT_EQ(FromProto(config.lease_duration()), absl::Seconds(45));
  EXPECT_FALSE(config.has_result_ttl());
  EXPECT_TRUE(request->paused());
}

TEST(CliArgsTest, QueueCreateRejectsUnknownFullPolicy) {
  Invocation inv = MustParse({"queue", "create", "jobs", "--full-policy", "block"});
  EXPECT_FALSE(BuildCreateQueueRequest(inv).ok());
}

TEST(CliArgsTest, QueueUpdateSetsOnlyTheFieldsGiven) {
  Invocation inv = MustParse({"queue", "update", "jobs", "--capacity", "10"});
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, v1::RetryPolicy());
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->name(), "jobs");
  ASSERT_TRUE(request->has_capacity());
  EXPECT_EQ(request->capacity(), 10u);
  EXPECT_FALSE(request->has_full_policy());
  EXPECT_FALSE(request->has_retry());
  EXPECT_FALSE(request->has_max_crashes());
  EXPECT_FALSE(request->has_retained());
  EXPECT_FALSE(request->has_lease_duration());
}

TEST(CliArgsTest, QueueUpdateMergesRetryFlagsIntoTheCurrentPolicy) {
  v1::RetryPolicy current;
  current.set_max_attempts(3);
  current.set_multiplier(2.0);
  current.set_jitter(0.1);
  ToProto(absl::Seconds(1), current.mutable_initial_backoff());
  Invocation inv = MustParse({"queue", "update", "jobs", "--max-attempts", "9"});
  ASSERT_TRUE(HasRetryFlags(inv));
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, current);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->retry().max_attempts(), 9u);
  EXPECT_EQ(request->retry().multiplier(), 2.0);
  EXPECT_EQ(request->retry().jitter(), 0.1);
  EXPECT_EQ(FromProto(request->retry().initial_backoff()), absl::Seconds(1));
}

TEST(CliArgsTest, QueueUpdateWithoutRetryFlagsNeedsNoCurrentPolicy) {
  EXPECT_FALSE(HasRetryFlags(MustParse({"queue", "update", "jobs", "--retained", "5"})));
}

TEST(CliArgsTest, ValuesTooLargeForTheirFieldAreRejected) {
  Invocation inv = MustParse({"queue", "create", "q", "--max-crashes", "4294967296"});
  EXPECT_FALSE(BuildCreateQueueRequest(inv).ok());
  Invocation huge;
  EXPECT_FALSE(Parse({"list", "--limit", "99999999999999999999999"}, &huge).ok());
}

}  // namespace
}  // namespace conveyor::client
