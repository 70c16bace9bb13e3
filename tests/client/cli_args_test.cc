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
                              "--idempotency-key", "k1", "--expires-in", "1h", "--fallback",
                              "cached", "hello"});
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
  ASSERT_TRUE(spec->has_fallback_result());
  EXPECT_EQ(spec->fallback_result(), "cached");
}

TEST(CliArgsTest, SubmitWithoutOptionsLeavesFieldsUnsetForBrokerDefaults) {
  absl::StatusOr<v1::TaskSpec> spec =
      BuildTaskSpec(MustParse({"submit", "--queue", "q", "--type", "t"}), "", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->has_delay());
  EXPECT_FALSE(spec->has_timeout());
  EXPECT_FALSE(spec->has_retry());
  EXPECT_FALSE(spec->has_expires_at());
  EXPECT_FALSE(spec->has_fallback_result());
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
  for (absl::string_view workflow : {"map", "group submit", "group watch", "chain get",
                                     "schedule create", "schedule delete"}) {
    EXPECT_TRUE(absl::StrContains(top, workflow)) << workflow;
  }
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
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, v1::QueueConfig());
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
  v1::QueueConfig current;
  current.mutable_retry()->set_max_attempts(3);
  current.mutable_retry()->set_multiplier(2.0);
  current.mutable_retry()->set_jitter(0.1);
  ToProto(absl::Seconds(1), current.mutable_retry()->mutable_initial_backoff());
  Invocation inv = MustParse({"queue", "update", "jobs", "--max-attempts", "9"});
  ASSERT_TRUE(HasRetryFlags(inv));
  ASSERT_TRUE(NeedsCurrentConfig(inv));
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, current);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->retry().max_attempts(), 9u);
  EXPECT_EQ(request->retry().multiplier(), 2.0);
  EXPECT_EQ(request->retry().jitter(), 0.1);
  EXPECT_EQ(FromProto(request->retry().initial_backoff()), absl::Seconds(1));
}

TEST(CliArgsTest, QueueUpdateWithoutRetryFlagsNeedsNoCurrentPolicy) {
  EXPECT_FALSE(HasRetryFlags(MustParse({"queue", "update", "jobs", "--retained", "5"})));
  EXPECT_FALSE(NeedsCurrentConfig(MustParse({"queue", "update", "jobs", "--retained", "5"})));
}

TEST(CliArgsTest, ValuesTooLargeForTheirFieldAreRejected) {
  Invocation inv = MustParse({"queue", "create", "q", "--max-crashes", "4294967296"});
  EXPECT_FALSE(BuildCreateQueueRequest(inv).ok());
  Invocation huge;
  EXPECT_FALSE(Parse({"list", "--limit", "99999999999999999999999"}, &huge).ok());
}

// ─── limits ───

// The message of a builder's usage error for `args`, or "" if it succeeded.
template <typename Build>
std::string BuildError(const std::vector<std::string>& args, Build build) {
  Invocation inv;
  absl::Status parsed = Parse(args, &inv);
  if (!parsed.ok()) return std::string(parsed.message());
  absl::Status built = build(inv);
  EXPECT_TRUE(built.ok() || built.code() == absl::StatusCode::kInvalidArgument) << built;
  return std::string(built.message());
}

std::string CreateError(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"queue", "create", "q"};
  args.insert(args.end(), flags.begin(), flags.end());
  return BuildError(args, [](const Invocation& inv) { return BuildCreateQueueRequest(inv).status(); });
}

std::string UpdateError(const std::vector<std::string>& flags,
                        const v1::QueueConfig& current = v1::QueueConfig()) {
  std::vector<std::string> args = {"queue", "update", "q"};
  args.insert(args.end(), flags.begin(), flags.end());
  return BuildError(args, [&](const Invocation& inv) {
    return BuildUpdateQueueRequest(inv, current).status();
  });
}

TEST(CliArgsTest, RateTakesPerSecondPerMinutePerHourOrABareNumber) {
  EXPECT_EQ(*ParseRate("50/s"), 50.0);
  EXPECT_EQ(*ParseRate("50"), 50.0);
  EXPECT_EQ(*ParseRate("0.5/s"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseRate("100/m"), 100.0 / 60);
  EXPECT_DOUBLE_EQ(*ParseRate("7200/h"), 2.0);
  EXPECT_EQ(*ParseRate("0"), 0.0);
}

TEST(CliArgsTest, RateRejectsNegativesUnknownUnitsAndNonNumbers) {
  for (const char* bad : {"-1/s", "-0.5", "10/d", "10/", "/s", "ten/s", "", "inf", "nan/s",
                          "1e999", "50/s/s", "5 /s"}) {
    absl::StatusOr<double> rate = ParseRate(bad);
    ASSERT_FALSE(rate.ok()) << "\"" << bad << "\" parsed as " << *rate;
    EXPECT_TRUE(absl::StrContains(rate.status().message(), bad)) << rate.status();
  }
}

TEST(CliArgsTest, QueueCreateSetsEveryLimitGiven) {
  Invocation inv = MustParse({"queue", "create", "api", "--rate", "50/s", "--burst", "5",
                              "--max-running", "20", "--key-rate", "100/m", "--key-rate-for",
                              "acme=5/s", "--key-rate-for", "globex=0.5", "--key-max-running",
                              "2", "--pool", "db=5", "--pool", "s3=64"});
  absl::StatusOr<v1::CreateQueueRequest> request = BuildCreateQueueRequest(inv);
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(request->config().has_limits());
  const v1::Limits& l = request->config().limits();
  ASSERT_TRUE(l.has_rate());
  EXPECT_EQ(l.rate().per_second(), 50.0);
  EXPECT_EQ(l.rate().burst(), 5u);
  EXPECT_EQ(l.max_running(), 20u);
  ASSERT_TRUE(l.has_key_rate());
  EXPECT_DOUBLE_EQ(l.key_rate().per_second(), 100.0 / 60);
  EXPECT_EQ(l.key_rate().burst(), 0u);
  ASSERT_EQ(l.key_rates().size(), 2u);
  EXPECT_EQ(l.key_rates().at("acme").per_second(), 5.0);
  EXPECT_EQ(l.key_rates().at("globex").per_second(), 0.5);
  EXPECT_EQ(l.key_max_running(), 2u);
  ASSERT_EQ(l.pools().size(), 2u);
  EXPECT_EQ(l.pools().at("db"), 5u);
  EXPECT_EQ(l.pools().at("s3"), 64u);
}

TEST(CliArgsTest, QueueCreateWithoutLimitFlagsSendsNoLimits) {
  absl::StatusOr<v1::CreateQueueRequest> request =
      BuildCreateQueueRequest(MustParse({"queue", "create", "api", "--capacity", "5"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->config().has_limits());
}

TEST(CliArgsTest, QueueCreateLeavesOutLimitsOfZero) {
  absl::StatusOr<v1::CreateQueueRequest> request = BuildCreateQueueRequest(
      MustParse({"queue", "create", "api", "--rate", "0", "--key-rate", "0/s", "--pool", "db=0",
                 "--key-rate-for", "acme=0", "--pool", "s3=2"}));
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::Limits& l = request->config().limits();
  EXPECT_FALSE(l.has_rate());
  EXPECT_FALSE(l.has_key_rate());
  EXPECT_TRUE(l.key_rates().empty());
  ASSERT_EQ(l.pools().size(), 1u);
  EXPECT_EQ(l.pools().at("s3"), 2u);
}

TEST(CliArgsTest, BadLimitValuesAreUsageErrorsNamingTheFlag) {
  // Rejected while parsing (not integers).
  EXPECT_TRUE(absl::StrContains(CreateError({"--max-running", "-1"}), "--max-running"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--burst", "two"}), "--burst"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--key-max-running", "1.5"}), "--key-max-running"));
  // Rejected by the builders.
  EXPECT_TRUE(absl::StrContains(CreateError({"--rate", "fast"}), "--rate: not a rate: \"fast\""));
  EXPECT_TRUE(absl::StrContains(CreateError({"--rate", "-5/s"}), "--rate: negative rate"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--key-rate", "10/d"}), "--key-rate: not a rate"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--key-rate-for", "acme"}), "--key-rate-for must be KEY=VALUE"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--key-rate-for", "=5/s"}), "--key-rate-for must be KEY=VALUE"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--key-rate-for", "acme=x"}), "--key-rate-for acme: not a rate"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--pool", "db"}), "--pool must be KEY=VALUE"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--pool", "db=-1"}), "--pool db: size"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--pool", "db=4294967296"}), "--pool db: size"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--max-running", "4294967296"}), "--max-running is too large"));
  EXPECT_TRUE(absl::StrContains(CreateError({"--burst", "3"}), "--burst needs --rate"));
  EXPECT_TRUE(absl::StrContains(UpdateError({"--rate", "0", "--burst", "3"}), "--burst cannot go with --rate 0"));
  EXPECT_TRUE(absl::StrContains(UpdateError({"--burst", "3"}), "--burst needs --rate"));
  EXPECT_TRUE(absl::StrContains(UpdateError({"--pool", "db=x"}), "--pool db"));
}

TEST(CliArgsTest, QueueUpdateSendsZeroToRemoveALimit) {
  Invocation inv = MustParse({"queue", "update", "api", "--rate", "0", "--max-running", "0",
                              "--key-rate", "0", "--key-rate-for", "acme=0", "--key-max-running",
                              "0", "--pool", "db=0"});
  ASSERT_TRUE(NeedsCurrentConfig(inv));
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, v1::QueueConfig());
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(request->has_limits());
  const v1::LimitsUpdate& u = request->limits();
  ASSERT_TRUE(u.has_rate());
  EXPECT_EQ(u.rate().per_second(), 0.0);
  ASSERT_TRUE(u.has_max_running());
  EXPECT_EQ(u.max_running(), 0u);
  ASSERT_TRUE(u.has_key_rate());
  EXPECT_EQ(u.key_rate().per_second(), 0.0);
  ASSERT_EQ(u.key_rates().count("acme"), 1u);
  EXPECT_EQ(u.key_rates().at("acme").per_second(), 0.0);
  ASSERT_TRUE(u.has_key_max_running());
  EXPECT_EQ(u.key_max_running(), 0u);
  ASSERT_EQ(u.pools().count("db"), 1u);
  EXPECT_EQ(u.pools().at("db"), 0u);
}

TEST(CliArgsTest, QueueUpdateSetsOnlyTheLimitsGiven) {
  Invocation inv = MustParse({"queue", "update", "api", "--pool", "db=5"});
  EXPECT_FALSE(NeedsCurrentConfig(inv));
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, v1::QueueConfig());
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::LimitsUpdate& u = request->limits();
  EXPECT_FALSE(u.has_rate());
  EXPECT_FALSE(u.has_max_running());
  EXPECT_FALSE(u.has_key_rate());
  EXPECT_FALSE(u.has_key_max_running());
  EXPECT_TRUE(u.key_rates().empty());
  ASSERT_EQ(u.pools().size(), 1u);
  EXPECT_EQ(u.pools().at("db"), 5u);

  request = BuildUpdateQueueRequest(MustParse({"queue", "update", "api", "--capacity", "9"}),
                                    v1::QueueConfig());
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->has_limits());
}

TEST(CliArgsTest, QueueUpdateKeepsTheBurstOrTheRateNotGiven) {
  v1::QueueConfig current;
  current.mutable_limits()->mutable_rate()->set_per_second(50);
  current.mutable_limits()->mutable_rate()->set_burst(5);
  current.mutable_limits()->mutable_key_rate()->set_per_second(10);
  current.mutable_limits()->mutable_key_rate()->set_burst(3);
  (*current.mutable_limits()->mutable_key_rates())["acme"].set_per_second(1);
  (*current.mutable_limits()->mutable_key_rates())["acme"].set_burst(7);

  // A new rate keeps the burst; so do key rates.
  Invocation inv = MustParse({"queue", "update", "api", "--rate", "100/s", "--key-rate", "20",
                              "--key-rate-for", "acme=2/s", "--key-rate-for", "new=4/s"});
  absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, current);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->limits().rate().per_second(), 100.0);
  EXPECT_EQ(request->limits().rate().burst(), 5u);
  EXPECT_EQ(request->limits().key_rate().per_second(), 20.0);
  EXPECT_EQ(request->limits().key_rate().burst(), 3u);
  EXPECT_EQ(request->limits().key_rates().at("acme").per_second(), 2.0);
  EXPECT_EQ(request->limits().key_rates().at("acme").burst(), 7u);
  EXPECT_EQ(request->limits().key_rates().at("new").burst(), 0u);

  // A new burst keeps the rate.
  inv = MustParse({"queue", "update", "api", "--burst", "9"});
  ASSERT_TRUE(NeedsCurrentConfig(inv));
  request = BuildUpdateQueueRequest(inv, current);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->limits().rate().per_second(), 50.0);
  EXPECT_EQ(request->limits().rate().burst(), 9u);

  // Both given: both taken.
  request = BuildUpdateQueueRequest(
      MustParse({"queue", "update", "api", "--rate", "1/s", "--burst", "1"}), current);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->limits().rate().per_second(), 1.0);
  EXPECT_EQ(request->limits().rate().burst(), 1u);
}

TEST(CliArgsTest, SubmitTakesRateAndConcurrencyKeys) {
  Invocation inv = MustParse(
      {"submit", "--queue", "q", "--type", "t", "--rate-key", "acme", "--concurrency-key", "db"});
  absl::StatusOr<v1::TaskSpec> spec = BuildTaskSpec(inv, "", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->rate_key(), "acme");
  EXPECT_EQ(spec->concurrency_key(), "db");
  spec = BuildTaskSpec(MustParse({"submit", "--queue", "q", "--type", "t"}), "", kNow);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->rate_key().empty());
  EXPECT_TRUE(spec->concurrency_key().empty());
}

TEST(CliArgsTest, QueueHelpDescribesTheLimitFlagsAndUpdateSaysZeroRemoves) {
  const std::string create = Usage("queue create");
  const std::string update = Usage("queue update");
  for (const char* flag : {"--rate RATE", "--burst N", "--max-running N", "--key-rate RATE",
                           "--key-rate-for KEY=RATE", "--key-max-running N", "--pool KEY=N"}) {
    EXPECT_TRUE(absl::StrContains(create, flag)) << flag;
    EXPECT_TRUE(absl::StrContains(update, flag)) << flag;
  }
  // On update, each limit's help says how to remove it; on create none does.
  auto help_of = [](const char* command, absl::string_view name) -> std::string {
    for (const FlagSpec& flag : FindCommand(command)->flags) {
      if (name == flag.name) return flag.help;
    }
    return "";
  };
  for (const char* flag :
       {"rate", "max-running", "key-rate", "key-rate-for", "key-max-running", "pool"}) {
    EXPECT_TRUE(absl::StrContains(help_of("queue update", flag), "0 removes")) << flag;
    const std::string create_help = help_of("queue create", flag);
    EXPECT_FALSE(create_help.empty()) << flag;
    EXPECT_FALSE(absl::StrContains(create_help, "removes")) << flag;
  }
  EXPECT_TRUE(absl::StrContains(Usage("submit"), "--rate-key K"));
  EXPECT_TRUE(absl::StrContains(Usage("submit"), "--concurrency-key K"));
}

TEST(CliArgsTest, TokenCommandsTakeRepeatedAndCommaSeparatedRoles) {
  Invocation inv = MustParse({"token", "create", "--role", "work", "--role=submit,admin"});
  ASSERT_NE(inv.command, nullptr);
  EXPECT_STREQ(inv.command->name, "token create");
  absl::StatusOr<RoleSet> roles = TokenRoles(inv);
  ASSERT_TRUE(roles.ok()) << roles.status();
  EXPECT_EQ(roles->ToString(), "submit,work,admin");

  Invocation none = MustParse({"token", "hash"});
  ASSERT_TRUE(TokenRoles(none).ok());
  EXPECT_TRUE(TokenRoles(none)->empty());

  absl::StatusOr<RoleSet> bad = TokenRoles(MustParse({"token", "create", "--role", "root"}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--role: unknown role \"root\""), std::string::npos);
}

TEST(CliArgsTest, TokenIsAGroupAndItsUsageListsItsCommands) {
  Invocation inv;
  EXPECT_FALSE(Parse({"token"}, &inv).ok());  // a group needs its subcommand
  EXPECT_EQ(inv.topic, "token");
  const std::string usage = Usage("token");
  EXPECT_NE(usage.find("token create"), std::string::npos) << usage;
  EXPECT_NE(usage.find("token hash"), std::string::npos) << usage;
}

}  // namespace
}  // namespace conveyor::client
