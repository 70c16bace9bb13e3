// End-to-end: worker-side batches with the real `conveyord` and
// `conveyor-worker` processes, driven through the client library.
//
// Each test starts its own broker on 127.0.0.1:0 and its workers (stdout and
// stderr to files, shown when a test fails), submits tasks with
// conveyor::client::Client and follows them by polling GetTask within
// generous bounds (a loaded 2-core machine). Tasks are submitted before the
// worker starts, so that batches can form from tasks already READY; the
// tests then assert that most ran in batches of more than one, never that a
// given batch had an exact size.
//
// What is pinned down: a hundred tasks of the built-in batch_echo type all
// succeed with their own results, in batches of at most --batch N, and the
// worker counts the batches in conveyor_worker_batch_size; a failing task in
// a batch is retried alone, per its own policy (a flaky one succeeds on its
// second attempt, a failing one ends DEAD after its two, a permanent one
// after one) while its batch-mates succeed at once; an --exec-batch command
// (a small Python script speaking JSON lines) answers per task, and a task it
// refuses or leaves unanswered fails by the documented rules; SIGTERM hands a
// running batch back without spending anything and kills its command;
// canceling every task of a running batch kills its command; --help names
// the flags.
#include <signal.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif
#ifndef CONVEYOR_WORKER_PATH
#error "CONVEYOR_WORKER_PATH must name the conveyor-worker binary"
#endif

namespace conveyor::worker {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::conveyor::v1;
using client::Client;
using client::ClientOptions;
using e2e::Process;

constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kTaskTimeout = absl::Seconds(60);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
constexpr absl::Duration kPoll = absl::Milliseconds(50);

e2e::ProcessOptions LogTo(const fs::path& log) {
  return {.stdio = e2e::Stdio::Log(log), .kill_child_groups = true};
}

// "<n>:<rest>" (what batch_echo and the test script answer): n, or 0.
int BatchSizeOf(const std::string& result, std::string* rest = nullptr) {
  const size_t colon = result.find(':');
  int n = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(result.substr(0, colon), &n)) return 0;
  if (rest != nullptr) *rest = result.substr(colon + 1);
  return n;
}

// The value of an unlabelled sample `name` in a Prometheus text page, or -1.
double Sample(const std::string& page, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::ConsumePrefix(&line, name) || !absl::ConsumePrefix(&line, " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(line, &v)) return v;
  }
  return -1;
}

class WorkerBatchE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    const fs::path port_file = dir_.path() / "conveyord.port";
    broker_ = std::make_unique<Process>(LogTo(dir_.path() / "conveyord.log"));
    ASSERT_TRUE(broker_->Start(e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file)));
    const int port = e2e::WaitForPortFile(port_file, *broker_, kStartTimeout);
    ASSERT_GT(port, 0) << "conveyord did not start:\n" << broker_->log();
    addr_ = e2e::LoopbackAddress(port);
    ClientOptions options;
    options.address = addr_;
    options.timeout = absl::Seconds(10);
    client_ = std::make_unique<Client>(options);
  }

  void TearDown() override {
    const char* verbose = std::getenv("CONVEYOR_E2E_LOGS");
    if (HasFailure() || (verbose != nullptr && *verbose != '\0')) {
      for (const auto& w : workers_) {
        std::cerr << "--- " << w->log_path().stem().string() << " log ---\n" << w->log() << "\n";
      }
      if (broker_ != nullptr) std::cerr << "--- conveyord log ---\n" << broker_->log() << "\n";
    }
    for (pid_t pid : command_pids_) kill(pid, SIGKILL);
    workers_.clear();
    client_.reset();
    broker_.reset();
  }

  Process* StartWorker(const std::string& name, const std::string& queue,
                       std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {CONVEYOR_WORKER_PATH, absl::StrCat("--broker=", addr_),
                                     absl::StrCat("--queue=", queue), "--metrics-addr=",
                                     absl::StrCat("--worker-id=", name)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    workers_.push_back(std::make_unique<Process>(LogTo(dir_.path() / (name + ".log"))));
    Process* p = workers_.back().get();
    EXPECT_TRUE(p->Start(argv));
    return p;
  }

  static v1::TaskSpec Spec(const std::string& queue, const std::string& type,
                           const std::string& payload, uint32_t max_attempts = 3) {
    v1::TaskSpec spec;
    spec.set_queue(queue);
    spec.set_type(type);
    spec.set_payload(payload);
    spec.mutable_retry()->set_max_attempts(max_attempts);
    ToProto(absl::Milliseconds(50), spec.mutable_retry()->mutable_initial_backoff());
    spec.mutable_retry()->set_jitter(0);
    return spec;
  }

  // Submits all of `specs` in one call; their ids, in order.
  std::vector<std::string> SubmitAll(std::vector<v1::TaskSpec> specs) {
    const size_t n = specs.size();
    absl::StatusOr<v1::SubmitBatchResponse> r = client_->SubmitBatch(std::move(specs));
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<std::string> ids;
    if (!r.ok()) return ids;
    EXPECT_EQ(static_cast<size_t>(r->items_size()), n);
    for (const auto& item : r->items()) {
      EXPECT_EQ(item.status().code(), 0) << item.status().message();
      ids.push_back(item.task().id());
    }
    return ids;
  }

  v1::Task WaitForTask(const std::string& id, const std::function<bool(const v1::Task&)>& done,
                       absl::Duration timeout = kTaskTimeout) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::Task last;
    while (true) {
      absl::StatusOr<v1::Task> t = client_->GetTask(id);
      if (t.ok()) {
        last = *t;
        if (done(last)) return last;
      }
      if (absl::Now() > deadline) return last;
      absl::SleepFor(kPoll);
    }
  }

  static bool Ended(const v1::Task& t) {
    return t.state() == v1::TASK_STATE_SUCCEEDED || t.state() == v1::TASK_STATE_DEAD ||
           t.state() == v1::TASK_STATE_CANCELED || t.state() == v1::TASK_STATE_EXPIRED ||
           t.state() == v1::TASK_STATE_FALLBACK;
  }

  static bool RunningOn(const v1::Task& t, const std::string& worker) {
    return t.state() == v1::TASK_STATE_RUNNING && t.worker_id() == worker;
  }

  // Polls `file` for a pid the command wrote; 0 if none came.
  static pid_t WaitForPid(const fs::path& file) {
    const absl::Time deadline = absl::Now() + kTaskTimeout;
    while (absl::Now() < deadline) {
      int parsed = 0;
      std::string text(absl::StripAsciiWhitespace(e2e::ReadFileOrEmpty(file)));
      if (absl::SimpleAtoi(text, &parsed) && parsed > 0) return parsed;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return 0;
  }

  // True once `pid` is gone (within 10 s).
  static bool Gone(pid_t pid) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (kill(pid, 0) == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    errno = 0;
    return kill(pid, 0) == -1 && errno == ESRCH;
  }

  e2e::TempDir dir_{"conveyor-batch-e2e"};
  std::unique_ptr<Process> broker_;
  std::string addr_;
  std::unique_ptr<Client> client_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<pid_t> command_pids_;
};

TEST_F(WorkerBatchE2eTest, AHundredTasksRunInBatchesWithTheirOwnResults) {
  std::vector<v1::TaskSpec> specs;
  for (int i = 0; i < 100; ++i) specs.push_back(Spec("bulk", "batch_echo", absl::StrCat("item-", i)));
  // Failing tasks in the same batches, each with its own retry policy.
  specs.push_back(Spec("bulk", "batch_echo", "flaky:comes good", 3));
  specs.push_back(Spec("bulk", "batch_echo", "fail:boom", 2));
  specs.push_back(Spec("bulk", "batch_echo", "permanent:bad input", 3));
  const std::vector<std::string> ids = SubmitAll(std::move(specs));
  ASSERT_EQ(ids.size(), 103u);

  const fs::path metrics_port_file = dir_.path() / "metrics.port";
  Process* w = StartWorker("w1", "bulk",
                           {"--concurrency=2", "--batch=batch_echo=10:500ms",
                            "--metrics-addr=127.0.0.1:0",
                            absl::StrCat("--metrics-port-file=", metrics_port_file.string())});

  int batched = 0;
  for (int i = 0; i < 100; ++i) {
    v1::Task t = WaitForTask(ids[i], Ended);
    ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    std::string echoed;
    const int n = BatchSizeOf(t.result(), &echoed);
    EXPECT_EQ(echoed, absl::StrCat("item-", i)) << t.result();
    EXPECT_GE(n, 1) << t.result();
    EXPECT_LE(n, 10) << t.result();
    if (n > 1) ++batched;
    EXPECT_EQ(t.attempts(), 0u) << "a batch-mate's failure must not retry it: " << t.DebugString();
  }
  // All 103 were READY before the worker started: batches form at once.
  EXPECT_GE(batched, 50);

  v1::Task flaky = WaitForTask(ids[100], Ended);
  EXPECT_EQ(flaky.state(), v1::TASK_STATE_SUCCEEDED) << flaky.DebugString();
  EXPECT_EQ(flaky.attempts(), 1u) << flaky.DebugString();
  EXPECT_TRUE(absl::EndsWith(flaky.result(), ":flaky:comes good")) << flaky.result();
  v1::Task fail = WaitForTask(ids[101], Ended);
  EXPECT_EQ(fail.state(), v1::TASK_STATE_DEAD) << fail.DebugString();
  EXPECT_EQ(fail.attempts(), 2u) << fail.DebugString();
  EXPECT_TRUE(absl::StrContains(fail.error(), "boom")) << fail.error();
  v1::Task permanent = WaitForTask(ids[102], Ended);
  EXPECT_EQ(permanent.state(), v1::TASK_STATE_DEAD) << permanent.DebugString();
  EXPECT_EQ(permanent.attempts(), 1u) << permanent.DebugString();
  EXPECT_TRUE(absl::StrContains(permanent.error(), "bad input")) << permanent.error();

  const int metrics_port = e2e::WaitForPortFile(metrics_port_file, *w, kStartTimeout);
  ASSERT_GT(metrics_port, 0);
  const std::string metrics = e2e::HttpGetMetrics(metrics_port);
  // 103 first attempts and 2 retries, in far fewer batches than tasks.
  const double tasks_in_batches = Sample(metrics, "conveyor_worker_batch_size_sum");
  const double batches = Sample(metrics, "conveyor_worker_batch_size_count");
  EXPECT_EQ(tasks_in_batches, 105) << metrics;
  EXPECT_GE(batches, 11) << metrics;
  EXPECT_LE(batches, 60) << metrics;
  EXPECT_TRUE(absl::StrContains(
      metrics, "conveyor_worker_tasks_total{outcome=\"succeeded\",queue=\"bulk\"} 101"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_slots{state=\"free\"} 2")) << metrics;
  const std::string log = w->log();
  EXPECT_TRUE(absl::StrContains(log, "\"batch_size\":")) << log;
}

// A batch command in Python: upper-cases each payload, refuses payloads that
// start with "bad" for good, and leaves "skip" unanswered.
constexpr char kShoutScript[] = R"(import base64, json, os, sys
size = os.environ["CONVEYOR_BATCH_SIZE"]
for line in sys.stdin:
    task = json.loads(line)
    payload = base64.b64decode(task["payload"]).decode()
    if payload == "skip":
        continue
    if payload.startswith("bad"):
        print(json.dumps({"id": task["id"], "ok": False, "error": "cannot shout " + payload,
                          "retryable": False}))
        continue
    result = (size + ":" + payload.upper()).encode()
    print(json.dumps({"id": task["id"], "ok": True, "result": base64.b64encode(result).decode()}))
)";

TEST_F(WorkerBatchE2eTest, AnExecBatchCommandAnswersPerTask) {
  const fs::path script = dir_.path() / "shout.py";
  ASSERT_TRUE(e2e::WriteFile(script, kShoutScript));
  std::vector<v1::TaskSpec> specs;
  for (int i = 0; i < 40; ++i) specs.push_back(Spec("loud", "shout", absl::StrCat("word-", i)));
  specs.push_back(Spec("loud", "shout", "bad word", 3));
  specs.push_back(Spec("loud", "shout", "skip", 2));
  const std::vector<std::string> ids = SubmitAll(std::move(specs));
  ASSERT_EQ(ids.size(), 42u);
  StartWorker("w1", "loud",
              {"--concurrency=2", absl::StrCat("--exec-batch=shout=python3 ", script.string()),
               "--batch=shout=8:500ms"});

  int batched = 0;
  for (int i = 0; i < 40; ++i) {
    v1::Task t = WaitForTask(ids[i], Ended);
    ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    std::string shouted;
    const int n = BatchSizeOf(t.result(), &shouted);
    EXPECT_EQ(shouted, absl::StrCat("WORD-", i)) << t.result();
    EXPECT_GE(n, 1);
    EXPECT_LE(n, 8);
    if (n > 1) ++batched;
    EXPECT_EQ(t.attempts(), 0u) << t.DebugString();
  }
  EXPECT_GE(batched, 20);

  v1::Task bad = WaitForTask(ids[40], Ended);
  EXPECT_EQ(bad.state(), v1::TASK_STATE_DEAD) << bad.DebugString();
  EXPECT_EQ(bad.attempts(), 1u) << "\"retryable\": false is not retried";
  EXPECT_TRUE(absl::StrContains(bad.error(), "cannot shout bad word")) << bad.error();
  v1::Task skipped = WaitForTask(ids[41], Ended);
  EXPECT_EQ(skipped.state(), v1::TASK_STATE_DEAD) << skipped.DebugString();
  EXPECT_EQ(skipped.attempts(), 2u) << "a missing answer is retried";
  EXPECT_TRUE(absl::StrContains(skipped.error(), "missing_answer")) << skipped.error();
  EXPECT_TRUE(absl::StrContains(skipped.error(), "exited 0 without answering this task"))
      << skipped.error();
}

TEST_F(WorkerBatchE2eTest, SigtermHandsARunningBatchBackAndKillsItsCommand) {
  const fs::path pid_file = dir_.path() / "slow.pid";
  const std::vector<std::string> ids = SubmitAll(
      {Spec("drain", "slow", "a"), Spec("drain", "slow", "b"), Spec("drain", "slow", "c")});
  ASSERT_EQ(ids.size(), 3u);
  Process* w = StartWorker(
      "w1", "drain",
      {"--concurrency=1", "--grace=1s", "--exec-kill-grace=1s", "--batch=slow=3:2s",
       absl::StrCat("--exec-batch=slow=echo $$ > ", pid_file.string(), "; exec sleep 60")});
  for (const std::string& id : ids) {
    v1::Task t = WaitForTask(id, [](const v1::Task& x) { return RunningOn(x, "w1"); });
    ASSERT_TRUE(RunningOn(t, "w1")) << t.DebugString();
  }
  const pid_t pid = WaitForPid(pid_file);
  ASSERT_GT(pid, 0) << "the batch command never wrote its pid";
  command_pids_.push_back(pid);

  const absl::Time stop = absl::Now();
  w->Signal(SIGTERM);
  EXPECT_EQ(w->Wait(kStopTimeout), 0) << "the worker drains and exits 0";
  EXPECT_LT(absl::Now() - stop, absl::Seconds(15));
  EXPECT_TRUE(Gone(pid)) << "the batch command outlived the drain";
  for (const std::string& id : ids) {
    absl::StatusOr<v1::Task> t = client_->GetTask(id);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->state(), v1::TASK_STATE_READY) << t->DebugString();
    EXPECT_EQ(t->attempts(), 0u) << "a hand-back spends no attempt";
    EXPECT_EQ(t->crashes(), 0u) << "a hand-back spends no crash budget";
  }
  const std::string log = w->log();
  size_t released = 0;
  for (size_t at = log.find("\"outcome\":\"released\""); at != std::string::npos;
       at = log.find("\"outcome\":\"released\"", at + 1)) {
    ++released;
  }
  EXPECT_EQ(released, 3u) << log;
}

TEST_F(WorkerBatchE2eTest, CancelingEveryTaskOfARunningBatchKillsItsCommand) {
  const fs::path pid_file = dir_.path() / "hang.pid";
  const std::vector<std::string> ids =
      SubmitAll({Spec("cancel", "hang", "a"), Spec("cancel", "hang", "b")});
  ASSERT_EQ(ids.size(), 2u);
  StartWorker("w1", "cancel",
              {"--concurrency=1", "--heartbeat-interval=200ms", "--batch=hang=2:2s",
               absl::StrCat("--exec-batch=hang=echo $$ > ", pid_file.string(), "; exec sleep 60")});
  for (const std::string& id : ids) {
    v1::Task t = WaitForTask(id, [](const v1::Task& x) { return RunningOn(x, "w1"); });
    ASSERT_TRUE(RunningOn(t, "w1")) << t.DebugString();
  }
  const pid_t pid = WaitForPid(pid_file);
  ASSERT_GT(pid, 0) << "the batch command never wrote its pid";
  command_pids_.push_back(pid);

  // One canceled task leaves the command running for the other.
  ASSERT_TRUE(client_->CancelTask(ids[0]).ok());
  absl::SleepFor(absl::Seconds(1));  // several heartbeats
  EXPECT_EQ(kill(pid, 0), 0) << "the batch still has a task to run";
  ASSERT_TRUE(client_->CancelTask(ids[1]).ok());
  for (const std::string& id : ids) {
    v1::Task t = WaitForTask(id, Ended);
    EXPECT_EQ(t.state(), v1::TASK_STATE_CANCELED) << t.DebugString();
  }
  EXPECT_TRUE(Gone(pid)) << "the batch command outlived the cancel of all its tasks";
}

TEST_F(WorkerBatchE2eTest, HelpDescribesTheBatchFlags) {
  const fs::path log = dir_.path() / "help.log";
  Process help(LogTo(log));
  ASSERT_TRUE(help.Start({CONVEYOR_WORKER_PATH, "--help"}));
  help.Wait(kStopTimeout);
  const std::string text = help.log();
  for (const char* words : {"--exec_batch", "--batch", "TYPE=N[:LINGER]", "batch_echo",
                            "\"ok\":true", "\"retryable\":false", "missing_answer"}) {
    EXPECT_TRUE(absl::StrContains(text, words)) << words << "\n" << text;
  }
}

TEST_F(WorkerBatchE2eTest, ABatchFlagForATypeThatIsNotABatchTypeIsAUsageError) {
  Process* w = StartWorker("w1", "q", {"--batch=echo=5"});
  EXPECT_EQ(w->Wait(kStopTimeout), 64);
  EXPECT_TRUE(absl::StrContains(w->log(), "\"echo\" is not a batch type")) << w->log();
}

}  // namespace
}  // namespace conveyor::worker
