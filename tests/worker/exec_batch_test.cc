// Batch external commands (worker/exec_batch.h): the JSON lines written to a
// command's stdin, how its stdout and exit status become one answer per task
// (decoded from made-up ExecResults, no process), and a few real commands
// through /bin/sh: an echo, the environment, exit codes with partial answers,
// a timeout and a cancel that kill the process group, progress lines.
#include "worker/exec_batch.h"

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "worker/json_line.h"
#include "gtest/gtest.h"
#include "worker/outcome.h"

namespace conveyor::worker {
namespace {

using Outcome = ExecResult::Outcome;

std::vector<TaskInfo> Tasks(int n) {
  std::vector<TaskInfo> out;
  for (int i = 0; i < n; ++i) {
    TaskInfo t;
    t.id = absl::StrCat("t", i);
    t.queue = "q";
    t.type = "b";
    t.payload = absl::StrCat("p", i);
    t.attempt = 1;
    t.max_attempts = 3;
    out.push_back(t);
  }
  return out;
}

std::string B64(absl::string_view s) { return absl::Base64Escape(s); }

std::string Ok(const std::string& id, absl::string_view result) {
  return absl::StrCat("{\"id\":\"", id, "\",\"ok\":true,\"result\":\"", B64(result), "\"}\n");
}

ExecResult Exited(int code, std::string output, std::string error = "") {
  ExecResult r;
  r.exit_code = code;
  r.output = std::move(output);
  r.error = std::move(error);
  switch (code) {
    case 0: r.outcome = Outcome::kSucceeded; break;
    case 65: r.outcome = Outcome::kFailedPermanent; break;
    case 76: r.outcome = Outcome::kThrottled; break;
    default: r.outcome = Outcome::kFailed; break;
  }
  if (code != 0 && r.error.empty()) r.error = absl::StrCat("exit code ", code);
  return r;
}

// What the worker would report for each answer (no cancel, no deadline).
std::vector<AttemptOutcome> Outcomes(BatchAnswers answers, const AttemptFacts& facts = {}) {
  std::vector<AttemptOutcome> out;
  for (auto& a : answers) out.push_back(DecideOutcome(std::move(a), facts));
  return out;
}

// ── stdin ──

TEST(EncodeBatchInputTest, WritesOneJsonLinePerTaskWithBase64Payloads) {
  std::vector<TaskInfo> tasks = Tasks(2);
  tasks[1].payload = std::string("\0\xff binary\n", 10);
  tasks[1].headers["traceparent"] = "00-abc-def-01";
  tasks[1].attempt = 2;
  const std::string input = EncodeBatchInput(tasks);
  std::vector<std::string> lines = absl::StrSplit(input, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << input;
  EXPECT_TRUE(absl::EndsWith(input, "\n"));
  // The exact format of a plain line, as documented.
  EXPECT_EQ(lines[0],
            "{\"id\":\"t0\",\"queue\":\"q\",\"payload\":\"cDA=\",\"attempt\":1,"
            "\"max_attempts\":3,\"headers\":{}}");
  EXPECT_EQ(lines[1],
            absl::StrCat("{\"id\":\"t1\",\"queue\":\"q\",\"payload\":\"", B64(tasks[1].payload),
                         "\",\"attempt\":2,\"max_attempts\":3,"
                         "\"headers\":{\"traceparent\":\"00-abc-def-01\"}}"));
}

TEST(EncodeBatchInputTest, EscapesWhatJsonNeedsEscaped) {
  std::vector<TaskInfo> tasks = Tasks(1);
  tasks[0].headers["k\"ey"] = "line\nbreak\\ \x01 \xc3\xa9";
  const std::string input = EncodeBatchInput(tasks);
  EXPECT_TRUE(absl::StrContains(
      input, "\"headers\":{\"k\\\"ey\":\"line\\nbreak\\\\ \\u0001 \xc3\xa9\"}}\n"))
      << input;
}

// ── stdout and the exit status ──

TEST(DecodeBatchOutputTest, MatchesAnswersByIdInAnyOrder) {
  std::vector<TaskInfo> tasks = Tasks(3);
  const std::string binary("r\0\xfe", 3);
  ExecResult r = Exited(0, absl::StrCat(Ok("t2", "two"), "\n", Ok("t0", binary),
                                        "{\"id\":\"t1\",\"ok\":true}\r\n"));
  BatchAnswers answers = DecodeBatchOutput(tasks, r, 1 << 20);
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[0].value_or("?"), binary);
  EXPECT_EQ(answers[1].value_or("?"), "");  // no "result": an empty one
  EXPECT_EQ(answers[2].value_or("?"), "two");
}

TEST(DecodeBatchOutputTest, FailuresRetryableOrNotOrThrottled) {
  std::vector<TaskInfo> tasks = Tasks(4);
  ExecResult r = Exited(
      0,
      "{\"id\":\"t0\",\"ok\":false,\"error\":\"upstream 503\"}\n"
      "{\"id\":\"t1\",\"ok\":false,\"error\":\"corrupt image\",\"retryable\":false}\n"
      "{\"id\":\"t2\",\"ok\":false,\"throttled\":true,\"retry_after\":\"1500ms\",\"error\":\"429\"}\n"
      "{\"id\":\"t3\",\"ok\":false,\"retryable\":true}\n");
  std::vector<AttemptOutcome> o = Outcomes(DecodeBatchOutput(tasks, r, 1 << 20));
  ASSERT_EQ(o.size(), 4u);
  EXPECT_EQ(o[0].kind, ReportKind::kFail);
  EXPECT_TRUE(o[0].retryable);
  EXPECT_EQ(o[0].error, "upstream 503");
  EXPECT_FALSE(o[1].retryable);
  EXPECT_EQ(o[1].error, "corrupt image");
  EXPECT_TRUE(o[2].throttled);
  EXPECT_EQ(o[2].retry_after, absl::Milliseconds(1500));
  EXPECT_TRUE(o[3].retryable);
  EXPECT_TRUE(absl::StrContains(o[3].error, "without an error")) << o[3].error;
}

TEST(DecodeBatchOutputTest, ATaskLeftUnansweredByACleanExitFailsRetryably) {
  std::vector<TaskInfo> tasks = Tasks(3);
  std::vector<AttemptOutcome> o =
      Outcomes(DecodeBatchOutput(tasks, Exited(0, Ok("t1", "one")), 1 << 20));
  EXPECT_EQ(o[1].kind, ReportKind::kComplete);
  for (int i : {0, 2}) {
    EXPECT_EQ(o[i].kind, ReportKind::kFail);
    EXPECT_TRUE(o[i].retryable);
    EXPECT_EQ(o[i].reason, "missing_answer");
    EXPECT_TRUE(absl::StrContains(o[i].error, "exited 0 without answering this task (1 of 3 tasks "
                                              "answered)"))
        << o[i].error;
  }
}

TEST(DecodeBatchOutputTest, AMalformedLineIsNamedInTheErrorOfEveryUnansweredTask) {
  std::vector<TaskInfo> tasks = Tasks(3);
  ExecResult r = Exited(0, absl::StrCat(Ok("t0", "zero"), "processing t1...\n",
                                        "{\"ok\":true}\n", "{\"id\":\"zz\",\"ok\":true}\n"));
  std::vector<AttemptOutcome> o = Outcomes(DecodeBatchOutput(tasks, r, 1 << 20));
  EXPECT_EQ(o[0].kind, ReportKind::kComplete);  // its answer stands
  for (int i : {1, 2}) {
    EXPECT_TRUE(o[i].retryable);
    EXPECT_EQ(o[i].reason, "bad_output");
    EXPECT_TRUE(absl::StrContains(o[i].error, "stdout line 2 (\"processing t1...\") is not a valid "
                                              "answer: not a JSON answer (expected a JSON "
                                              "object starting with '{' at column 1)"))
        << o[i].error;
    EXPECT_TRUE(absl::StrContains(o[i].error, "(and 2 more such lines)")) << o[i].error;
  }
}

TEST(DecodeBatchOutputTest, NamesEachKindOfBadLine) {
  struct Case {
    std::string line;
    std::string why;
  };
  for (const Case& c : {
           Case{"{\"ok\":true}", "no \"id\""},
           Case{"{\"id\":\"nope\",\"ok\":true}", "task \"nope\" is not in the batch"},
           Case{"[1,2]", "not a JSON answer (expected a JSON object starting with '{' at column 1)"},
           Case{"{\"id\":5,\"ok\":true}", "\"id\" must be a string, not a number"},
           Case{"{\"id\":\"t1\",\"ok\":true} x", "unexpected text after the object at column 23"},
           Case{"{\"id\":\"t1\",\"id\":\"t0\",\"ok\":true}", "the key \"id\" appears twice"},
           Case{"{\"id\":\"t1\",\"ok\":true,\"result\":{}}",
                "nested objects and arrays are not allowed here at column 31"},
       }) {
    std::vector<AttemptOutcome> o =
        Outcomes(DecodeBatchOutput(Tasks(2), Exited(0, c.line + "\n"), 1 << 20));
    for (const AttemptOutcome& x : o) {
      EXPECT_EQ(x.reason, "bad_output") << c.line;
      EXPECT_TRUE(absl::StrContains(x.error, "stdout line 1")) << x.error;
      EXPECT_TRUE(absl::StrContains(x.error, c.why)) << c.line << " -> " << x.error;
    }
  }
}

TEST(DecodeBatchOutputTest, AnAnswerWithABadFieldFailsItsTaskSayingWhich) {
  struct Case {
    std::string fields;
    std::string why;
  };
  for (const Case& c : {
           Case{"\"ok\":\"yes\"", "\"ok\" must be true or false, not a string"},
           Case{"\"ok\":1", "\"ok\" must be true or false, not a number"},
           Case{"\"ok\":true,\"retriable\":false", "unknown field \"retriable\""},
           Case{"\"ok\":true,\"result\":\"%%%\"", "\"result\" is not base64"},
           Case{"\"ok\":false,\"error\":7", "\"error\" must be a string, not a number"},
           Case{"\"ok\":null", "no \"ok\""},
       }) {
    const std::string line = absl::StrCat("{\"id\":\"t0\",", c.fields, "}\n");
    std::vector<AttemptOutcome> o =
        Outcomes(DecodeBatchOutput(Tasks(2), Exited(0, absl::StrCat(line, Ok("t1", "x"))), 1 << 20));
    EXPECT_EQ(o[0].kind, ReportKind::kFail) << line;
    EXPECT_TRUE(o[0].retryable) << line;
    EXPECT_EQ(o[0].reason, "bad_output") << line;
    EXPECT_TRUE(absl::StrContains(o[0].error, "the answer on stdout line 1")) << o[0].error;
    EXPECT_TRUE(absl::StrContains(o[0].error, c.why)) << line << " -> " << o[0].error;
    EXPECT_EQ(o[1].kind, ReportKind::kComplete) << line;
  }
}

TEST(DecodeBatchOutputTest, ReadsJsonEscapesUrlSafeAndUnpaddedBase64) {
  ExecResult r = Exited(0,
                        "{ \"id\" : \"t0\" , \"ok\" : false , \"error\" : "
                        "\"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\/\" }\n"
                        "{\"id\":\"t1\",\"ok\":true,\"result\":\"-_8\"}\n"
                        "{\"id\":\"t2\",\"ok\":true,\"result\":\"aGk\"}\n");
  BatchAnswers answers = DecodeBatchOutput(Tasks(3), r, 1 << 20);
  EXPECT_EQ(answers[0].status().message(), "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\" /");
  EXPECT_EQ(answers[1].value_or("?"), "\xfb\xff");
  EXPECT_EQ(answers[2].value_or("?"), "hi");
}

TEST(ParseFlatJsonObjectTest, RefusesBrokenStrings) {
  for (const char* bad : {"{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\u12\"}",
                          "{\"a\":\"\\x\"}", "{\"a\":\"tab\there\"}", "{\"a\":\"open}",
                          "{\"a\":01}", "{\"a\":1.}", "{\"a\":-}", "{\"a\" 1}", "{\"a\":1,}",
                          "{a:1}", "", "{"}) {
    EXPECT_FALSE(ParseFlatJsonObject(bad).ok()) << bad;
  }
  absl::StatusOr<JsonFields> ok = ParseFlatJsonObject(" {\"n\":-1.5e3,\"z\":0,\"e\":{}} ");
  EXPECT_FALSE(ok.ok());  // nested
  ok = ParseFlatJsonObject(" {\"n\":-1.5e3,\"z\":0,\"t\":true,\"x\":null} ");
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 4u);
  EXPECT_EQ((*ok)[0].second.text, "-1.5e3");
  EXPECT_TRUE((*ok)[2].second.boolean);
  EXPECT_EQ((*ok)[3].second.kind, JsonScalar::Kind::kNull);
  ok = ParseFlatJsonObject("{}");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->empty());
}

TEST(DecodeBatchOutputTest, ABrokenOrRepeatedAnswerFailsItsTask) {
  std::vector<TaskInfo> tasks = Tasks(3);
  ExecResult r = Exited(0, absl::StrCat("{\"id\":\"t0\"}\n", Ok("t1", "a"), Ok("t1", "b"),
                                        Ok("t2", std::string(11, 'x'))));
  std::vector<AttemptOutcome> o = Outcomes(DecodeBatchOutput(tasks, r, /*max_result_bytes=*/10));
  EXPECT_EQ(o[0].reason, "bad_output");
  EXPECT_TRUE(absl::StrContains(o[0].error, "no \"ok\" (true or false)")) << o[0].error;
  EXPECT_EQ(o[1].reason, "bad_output");
  EXPECT_TRUE(absl::StrContains(o[1].error, "answered this task twice (stdout lines 2 and 3)"))
      << o[1].error;
  EXPECT_EQ(o[2].reason, "output_limit");
  EXPECT_TRUE(absl::StrContains(o[2].error, "11 bytes, over the limit of 10")) << o[2].error;
  for (const AttemptOutcome& x : o) EXPECT_TRUE(x.retryable);
}

TEST(DecodeBatchOutputTest, ABadRetryAfterIsTheCommandsBug) {
  ExecResult r =
      Exited(0, "{\"id\":\"t0\",\"ok\":false,\"throttled\":true,\"retry_after\":\"soon\"}\n");
  std::vector<AttemptOutcome> o = Outcomes(DecodeBatchOutput(Tasks(1), r, 1 << 20));
  EXPECT_FALSE(o[0].throttled);
  EXPECT_TRUE(o[0].retryable);
  EXPECT_TRUE(absl::StrContains(o[0].error, "\"retry_after\" \"soon\" is not a delay")) << o[0].error;
}

TEST(DecodeBatchOutputTest, AnUnansweredTaskFollowsTheExitCodeAnAnsweredOneItsAnswer) {
  std::vector<TaskInfo> tasks = Tasks(2);
  {
    std::vector<AttemptOutcome> o = Outcomes(
        DecodeBatchOutput(tasks, Exited(65, Ok("t0", "ok"), "exit code 65: bad batch"), 1 << 20));
    EXPECT_EQ(o[0].kind, ReportKind::kComplete);
    EXPECT_FALSE(o[1].retryable);
    EXPECT_EQ(o[1].reason, "exit_code");
    EXPECT_TRUE(absl::StrContains(o[1].error, "no answer for this task (1 of 2 tasks answered): "
                                              "exit code 65: bad batch"))
        << o[1].error;
  }
  {
    std::vector<AttemptOutcome> o =
        Outcomes(DecodeBatchOutput(tasks, Exited(76, absl::StrCat(Ok("t1", "ok"), "3s\n")), 1 << 20));
    EXPECT_EQ(o[1].kind, ReportKind::kComplete);
    EXPECT_TRUE(o[0].throttled);
    EXPECT_EQ(o[0].retry_after, absl::Seconds(3));
  }
  {
    std::vector<AttemptOutcome> o = Outcomes(DecodeBatchOutput(tasks, Exited(3, ""), 1 << 20));
    for (const AttemptOutcome& x : o) {
      EXPECT_TRUE(x.retryable);
      EXPECT_EQ(x.reason, "exit_code");
    }
  }
  {
    ExecResult killed;
    killed.outcome = Outcome::kFailed;
    killed.term_signal = 9;
    killed.error = "killed by signal 9 (SIGKILL)";
    std::vector<AttemptOutcome> o = Outcomes(DecodeBatchOutput(tasks, killed, 1 << 20));
    EXPECT_EQ(o[0].reason, "signal");
    EXPECT_TRUE(o[0].retryable);
  }
  {
    ExecResult late;
    late.outcome = Outcome::kTimedOut;
    late.output = Ok("t0", "in time");
    late.error = "timeout: attempt deadline reached after 1s";
    AttemptFacts facts;
    facts.past_deadline = true;
    BatchAnswers answers = DecodeBatchOutput(tasks, late, 1 << 20);
    EXPECT_EQ(answers[1].status().code(), absl::StatusCode::kDeadlineExceeded);
    std::vector<AttemptOutcome> o = Outcomes(std::move(answers), facts);
    EXPECT_EQ(o[0].kind, ReportKind::kComplete);
    EXPECT_EQ(o[1].reason, "timeout");
  }
}

// ── real commands ──

// Echoes each task's payload back as its result, with sed and nothing else.
constexpr char kEchoScript[] =
    "while IFS= read -r line; do "
    "id=$(printf '%s' \"$line\" | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/'); "
    "p=$(printf '%s' \"$line\" | sed 's/.*\"payload\":\"\\([^\"]*\\)\".*/\\1/'); "
    "printf '{\"id\":\"%s\",\"ok\":true,\"result\":\"%s\"}\\n' \"$id\" \"$p\"; "
    "done";

BatchAnswers RunScript(const std::string& script, std::vector<TaskInfo> tasks,
                       const Cancellation* cancel = nullptr,
                       std::vector<std::vector<double>>* progress = nullptr) {
  Cancellation own;
  if (cancel == nullptr) cancel = &own;
  std::vector<const Cancellation*> cancels(tasks.size(), cancel);
  std::vector<ProgressSink> sinks;
  if (progress != nullptr) {
    progress->assign(tasks.size(), {});
    for (size_t i = 0; i < tasks.size(); ++i) {
      sinks.push_back([progress, i](double p, std::string) { (*progress)[i].push_back(p); });
    }
  }
  absl::Time deadline = absl::InfiniteFuture();
  for (const TaskInfo& t : tasks) deadline = std::min(deadline, t.deadline);
  BatchContext batch("b", tasks, cancels, sinks, cancel, deadline);
  ExecHandlerOptions options;
  options.kill_grace = absl::Seconds(2);
  return MakeExecBatchHandler(script, options)(batch);
}

TEST(ExecBatchHandlerTest, AnEchoCommandAnswersEveryTask) {
  std::vector<TaskInfo> tasks = Tasks(5);
  tasks[3].payload = std::string("bin\0ary\n", 8);
  BatchAnswers answers = RunScript(kEchoScript, tasks);
  ASSERT_EQ(answers.size(), 5u);
  for (size_t i = 0; i < tasks.size(); ++i) {
    ASSERT_TRUE(answers[i].ok()) << answers[i].status();
    EXPECT_EQ(*answers[i], tasks[i].payload);
  }
}

TEST(ExecBatchHandlerTest, TheCommandSeesTheBatchInItsEnvironment) {
  std::vector<TaskInfo> tasks = Tasks(2);
  tasks[0].deadline = absl::Now() + absl::Hours(2);
  tasks[1].deadline = absl::Now() + absl::Hours(1);
  const std::string script =
      "cat >/dev/null; for id in t0 t1; do "
      "r=$(printf '%s|%s|%s|%s' \"$CONVEYOR_TASK_TYPE\" \"$CONVEYOR_BATCH_SIZE\" "
      "\"$CONVEYOR_QUEUE\" \"$CONVEYOR_DEADLINE\" | base64 | tr -d '\\n'); "
      "printf '{\"id\":\"%s\",\"ok\":true,\"result\":\"%s\"}\\n' $id \"$r\"; done";
  BatchAnswers answers = RunScript(script, tasks);
  ASSERT_TRUE(answers[0].ok()) << answers[0].status();
  const std::vector<std::string> parts = absl::StrSplit(*answers[0], '|');
  ASSERT_EQ(parts.size(), 4u) << *answers[0];
  EXPECT_EQ(parts[0], "b");
  EXPECT_EQ(parts[1], "2");
  EXPECT_EQ(parts[2], "q");
  absl::Time deadline;
  std::string err;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, parts[3], &deadline, &err)) << parts[3];
  EXPECT_LE(absl::AbsDuration(deadline - tasks[1].deadline), absl::Seconds(1));  // the earliest
}

TEST(ExecBatchHandlerTest, PartialAnswersThenExit65) {
  std::vector<TaskInfo> tasks = Tasks(3);
  const std::string script = absl::StrCat("cat >/dev/null; printf '%s' '", Ok("t1", "done"),
                                          "'; echo 'giving up' >&2; exit 65");
  std::vector<AttemptOutcome> o = Outcomes(RunScript(script, tasks));
  EXPECT_EQ(o[1].kind, ReportKind::kComplete);
  EXPECT_EQ(o[1].result, "done");
  for (int i : {0, 2}) {
    EXPECT_FALSE(o[i].retryable);
    EXPECT_TRUE(absl::StrContains(o[i].error, "exit code 65")) << o[i].error;
    EXPECT_TRUE(absl::StrContains(o[i].error, "giving up")) << o[i].error;
  }
}

TEST(ExecBatchHandlerTest, TheDeadlineKillsTheGroupAndKeepsEarlierAnswers) {
  std::vector<TaskInfo> tasks = Tasks(2);
  tasks[1].deadline = absl::Now() + absl::Milliseconds(300);
  const std::string script = absl::StrCat("cat >/dev/null; printf '%s' '", Ok("t0", "early"),
                                          "'; sleep 60 & sleep 60; wait");
  const absl::Time start = absl::Now();
  BatchAnswers answers = RunScript(script, tasks);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_EQ(answers[0].value_or("?"), "early");
  EXPECT_EQ(answers[1].status().code(), absl::StatusCode::kDeadlineExceeded) << answers[1].status();
}

TEST(ExecBatchHandlerTest, ACancelOfTheBatchKillsTheGroup) {
  Cancellation cancel;
  absl::Notification done;
  std::thread canceller([&] {
    if (!done.WaitForNotificationWithTimeout(absl::Milliseconds(300))) {
      cancel.Cancel(CancelReason::kShutdown);
    }
  });
  const absl::Time start = absl::Now();
  BatchAnswers answers = RunScript("cat >/dev/null; sleep 60", Tasks(2), &cancel);
  done.Notify();
  canceller.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  for (const auto& a : answers) EXPECT_EQ(a.status().code(), absl::StatusCode::kCancelled);
}

TEST(ExecBatchHandlerTest, ProgressLinesReachEveryTask) {
  std::vector<std::vector<double>> progress;
  BatchAnswers answers = RunScript(
      absl::StrCat("echo 'PROGRESS 40 halfway' >&2; ", kEchoScript), Tasks(2), nullptr, &progress);
  ASSERT_TRUE(answers[0].ok()) << answers[0].status();
  ASSERT_EQ(progress.size(), 2u);
  EXPECT_EQ(progress[0], (std::vector<double>{40}));
  EXPECT_EQ(progress[1], (std::vector<double>{40}));
}

TEST(ExecBatchHandlerTest, ACommandThatCannotBeRunFailsEveryTask) {
  std::vector<AttemptOutcome> o = Outcomes(RunScript(std::string("a\0b", 3), Tasks(2)));
  ASSERT_EQ(o.size(), 2u);
  for (const AttemptOutcome& x : o) EXPECT_EQ(x.reason, "spawn");
}

}  // namespace
}  // namespace conveyor::worker
