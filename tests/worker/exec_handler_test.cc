// --exec plumbing: parsing TYPE=COMMAND, the environment given to the
// command, and the mapping of RunCommand's outcome to the handler convention,
// all without a process; one test runs `/bin/sh` through MakeExecHandler for
// the throttle delay. (tests/worker/exec_test.cc covers RunCommand;
// tests/e2e/worker_e2e_test.cc runs real commands through the worker.)
#include "worker/exec_handler.h"

#include <map>

#include "gtest/gtest.h"
#include "worker/outcome.h"

namespace conveyor::worker {
namespace {

TEST(ParseExecSpecTest, SplitsAtTheFirstEquals) {
  absl::StatusOr<ExecSpec> s = ParseExecSpec("env=FOO=bar printenv FOO");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->type, "env");
  EXPECT_EQ(s->command, "FOO=bar printenv FOO");
}

TEST(ParseExecSpecTest, RejectsMalformedSpecs) {
  for (const char* bad : {"", "upper", "=tr a-z A-Z", "upper=", "two words=cat"}) {
    EXPECT_EQ(ParseExecSpec(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ExecEnvironmentTest, DescribesTheTask) {
  TaskInfo t;
  t.id = "00000000000000aa";
  t.type = "upper";
  t.queue = "text";
  t.attempt = 2;
  t.token = 5;
  t.deadline = absl::FromUnixSeconds(1'700'000'000) + absl::Milliseconds(250);
  t.headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  std::map<std::string, std::string> env;
  for (auto& [k, v] : ExecEnvironment(t)) env[k] = v;
  EXPECT_EQ(env["CONVEYOR_TASK_ID"], "00000000000000aa");
  EXPECT_EQ(env["CONVEYOR_TASK_TYPE"], "upper");
  EXPECT_EQ(env["CONVEYOR_QUEUE"], "text");
  EXPECT_EQ(env["CONVEYOR_ATTEMPT"], "2");
  EXPECT_EQ(env["CONVEYOR_FENCING_TOKEN"], "5");
  EXPECT_EQ(env["CONVEYOR_DEADLINE"], "2023-11-14T22:13:20.25+00:00");
  EXPECT_EQ(env["TRACEPARENT"], t.headers["traceparent"]);
}

TEST(ExecEnvironmentTest, LeavesOutWhatTheTaskLacks) {
  TaskInfo t;
  t.id = "1";
  std::map<std::string, std::string> env;
  for (auto& [k, v] : ExecEnvironment(t)) env[k] = v;
  EXPECT_FALSE(env.contains("CONVEYOR_DEADLINE"));
  EXPECT_FALSE(env.contains("TRACEPARENT"));
}

ExecResult Result(ExecResult::Outcome outcome, int exit_code = 0, int signal = 0) {
  ExecResult r;
  r.outcome = outcome;
  r.exit_code = exit_code;
  r.term_signal = signal;
  r.output = "out";
  r.error = "what happened";
  return r;
}

TEST(ExecAnswerTest, FollowsTheExitCodeRules) {
  using O = ExecResult::Outcome;
  absl::StatusOr<std::string> ok = ExecAnswer(Result(O::kSucceeded));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "out");

  AttemptOutcome permanent = DecideOutcome(ExecAnswer(Result(O::kFailedPermanent, 65)), {});
  EXPECT_FALSE(permanent.retryable);
  EXPECT_EQ(permanent.reason, "exit_code");
  EXPECT_EQ(permanent.error, "what happened");

  ExecResult throttled = Result(O::kThrottled, 76);
  throttled.retry_after = absl::Seconds(3);
  AttemptOutcome t = DecideOutcome(ExecAnswer(throttled), {});
  EXPECT_EQ(t.kind, ReportKind::kFail);
  EXPECT_TRUE(t.throttled);
  EXPECT_EQ(t.retry_after, absl::Seconds(3));
  EXPECT_EQ(t.reason, "throttled");
  EXPECT_STREQ(t.label, "throttled");
  EXPECT_NE(t.error.find("retry after 3s"), std::string::npos) << t.error;

  AttemptOutcome failed = DecideOutcome(ExecAnswer(Result(O::kFailed, 3)), {});
  EXPECT_TRUE(failed.retryable);
  EXPECT_EQ(failed.reason, "exit_code");
  AttemptOutcome killed = DecideOutcome(ExecAnswer(Result(O::kFailed, -1, 9)), {});
  EXPECT_TRUE(killed.retryable);
  EXPECT_EQ(killed.reason, "signal");

  AttemptFacts late;
  late.past_deadline = true;
  EXPECT_EQ(DecideOutcome(ExecAnswer(Result(O::kTimedOut)), late).reason, "timeout");
  AttemptFacts canceled;
  canceled.cancel = CancelReason::kCanceled;
  EXPECT_EQ(DecideOutcome(ExecAnswer(Result(O::kCancelled)), canceled).reason, "canceled");
}

TEST(ExecAnswerTest, AThrottleWithoutADelayLeavesItToTheBroker) {
  absl::StatusOr<std::string> answer = ExecAnswer(Result(ExecResult::Outcome::kThrottled, 76));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfterOf(answer.status()), absl::ZeroDuration());
  AttemptOutcome o = DecideOutcome(answer, {});
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::ZeroDuration());
  EXPECT_NE(o.error.find("default"), std::string::npos) << o.error;
}

TEST(ExecAnswerTest, AThrottleDelayOverAnHourIsClamped) {
  ExecResult r = Result(ExecResult::Outcome::kThrottled, 76);
  r.retry_after = absl::Hours(30);
  absl::StatusOr<std::string> answer = ExecAnswer(r);
  EXPECT_EQ(RetryAfterOf(answer.status()), absl::Hours(1));
  EXPECT_NE(answer.status().message().find("retry after 1h"), std::string::npos)
      << answer.status();
}

// The one test here that runs a process: exit 76 with the delay on stdout,
// through the handler, to the outcome the reporter sends.
TEST(ExecHandlerTest, Exit76WithADelayOnStdoutIsAThrottleForThatLong) {
  Handler handler = MakeExecHandler("echo 2s; exit 76", ExecHandlerOptions{});
  TaskInfo task;
  task.id = "00000000000000ac";
  task.type = "limited";
  task.payload = "p";
  Cancellation cancel;
  HandlerContext ctx(task, &cancel, {});
  absl::StatusOr<std::string> answer = handler(ctx);
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kResourceExhausted) << answer.status();
  EXPECT_EQ(RetryAfterOf(answer.status()), absl::Seconds(2));
  AttemptOutcome o = DecideOutcome(std::move(answer), {});
  EXPECT_EQ(o.kind, ReportKind::kFail);
  EXPECT_TRUE(o.throttled);
  EXPECT_EQ(o.retry_after, absl::Seconds(2));
  EXPECT_EQ(o.reason, "throttled");
  EXPECT_STREQ(o.label, "throttled");
}

}  // namespace
}  // namespace conveyor::worker
