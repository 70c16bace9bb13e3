// End-to-end: the real `conveyord` broker and real `conveyor-worker`
// processes, driven through the client library.
//
// Each test starts its own broker on 127.0.0.1:0 (it writes the bound port to
// --port-file) and its workers with posix_spawn (stdout and stderr to files,
// shown when a test fails). Tasks are submitted with conveyor::client::Client
// and followed by polling GetTask every 50 ms within generous bounds (a
// loaded 2-core machine). TearDown SIGKILLs and reaps every process a test
// started, and every command pid a test learned of, so a failing test leaks
// nothing.
//
// What is pinned down: every handler kind returns its result (built-ins and an
// --exec command) and the worker's metrics count them; an attempt past its
// timeout is retried, then ends DEAD with a timeout error; a worker killed
// with SIGKILL mid-task loses its lease and the task completes once on
// another worker (token 2); SIGTERM lets short tasks finish, hands long ones
// back without spending anything, and exits 0; a worker frozen past its
// lease (SIGSTOP) cannot overwrite the result of the attempt that replaced
// it; canceling a running --exec task kills its process; the crash handler
// spends the crash budget until the task ends DEAD; a second signal ends a
// draining worker at once; progress lines, rate limits, several brokers, a
// draining broker, the SDK example and --help.
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
#ifndef SDK_WORKER_PATH
#error "SDK_WORKER_PATH must name the sdk_worker example binary"
#endif

namespace conveyor::worker {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::conveyor::v1;
using client::Client;
using client::ClientOptions;
using e2e::Process;

constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kTaskTimeout = absl::Seconds(30);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
constexpr absl::Duration kPoll = absl::Milliseconds(50);

// This suite's processes: output to `log`; SIGKILLed on destruction together
// with the process groups of the commands a worker runs.
e2e::ProcessOptions LogTo(const fs::path& log) {
  return {.stdio = e2e::Stdio::Log(log), .kill_child_groups = true};
}

class WorkerE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    broker_ = StartBroker("conveyord", &addr_);
    ASSERT_NE(broker_, nullptr);
    client_ = NewClient(addr_);
  }

  // Starts a broker on 127.0.0.1:0; sets `addr` to host:port. Null (with a
  // test failure) if it did not start.
  std::unique_ptr<Process> StartBroker(const std::string& name, std::string* addr) {
    const fs::path port_file = dir_.path() / (name + ".port");
    auto broker = std::make_unique<Process>(LogTo(dir_.path() / (name + ".log")));
    if (!broker->Start(e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file))) return nullptr;
    const int port = e2e::WaitForPortFile(port_file, *broker, kStartTimeout);
    if (port <= 0) {
      ADD_FAILURE() << name << " did not start:\n" << broker->log();
      return nullptr;
    }
    *addr = e2e::LoopbackAddress(port);
    return broker;
  }

  static std::unique_ptr<Client> NewClient(const std::string& addr) {
    ClientOptions options;
    options.address = addr;
    options.timeout = absl::Seconds(10);
    return std::make_unique<Client>(options);
  }

  void TearDown() override {
    const char* verbose = std::getenv("CONVEYOR_E2E_LOGS");  // set: show logs always
    if (HasFailure() || (verbose != nullptr && *verbose != '\0')) {
      for (const auto& w : workers_) {
        // Each is named after its log file.
        std::cerr << "--- " << w->log_path().stem().string() << " log ---\n" << w->log() << "\n";
      }
      std::cerr << "--- conveyord log ---\n" << broker_->log() << "\n";
    }
    // Not our children: no reaping.
    for (pid_t pid : command_pids_) kill(pid, SIGKILL);
    for (pid_t group : command_groups_) kill(-group, SIGKILL);
    workers_.clear();  // SIGKILL + waitpid each
    client_.reset();
    broker_.reset();
  }

  // Starts a worker serving `queue` on this test's broker, with `extra`
  // flags. Its log is `<name>.log`.
  Process* StartWorker(const std::string& name, const std::string& queue,
                       std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {CONVEYOR_WORKER_PATH,
                                     absl::StrCat("--broker=", addr_),
                                     absl::StrCat("--queue=", queue),
                                     "--metrics-addr=",
                                     absl::StrCat("--worker-id=", name)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    workers_.push_back(std::make_unique<Process>(LogTo(dir_.path() / (name + ".log"))));
    Process* p = workers_.back().get();
    EXPECT_TRUE(p->Start(argv));
    return p;
  }

  std::string Submit(v1::TaskSpec spec) {
    absl::StatusOr<v1::SubmitResponse> r = client_->Submit(std::move(spec));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->task().id() : "";
  }

  std::string Submit(const std::string& queue, const std::string& type,
                     const std::string& payload, std::optional<uint32_t> max_attempts = {},
                     absl::Duration timeout = absl::ZeroDuration()) {
    v1::TaskSpec spec;
    spec.set_queue(queue);
    spec.set_type(type);
    spec.set_payload(payload);
    if (max_attempts.has_value()) spec.mutable_retry()->set_max_attempts(*max_attempts);
    ToProto(absl::Milliseconds(50), spec.mutable_retry()->mutable_initial_backoff());
    spec.mutable_retry()->set_jitter(0);
    if (timeout > absl::ZeroDuration()) ToProto(timeout, spec.mutable_timeout());
    return Submit(std::move(spec));
  }

  void CreateQueue(const std::string& name, absl::Duration lease, uint32_t max_crashes = 3) {
    v1::CreateQueueRequest req;
    req.mutable_config()->set_name(name);
    ToProto(lease, req.mutable_config()->mutable_lease_duration());
    req.mutable_config()->set_max_crashes(max_crashes);
    absl::StatusOr<v1::Queue> q = client_->CreateQueue(req);
    ASSERT_TRUE(q.ok()) << q.status();
  }

  // Polls the task until `done` holds or `timeout` passes; returns the last
  // state seen (the caller asserts on it).
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

  static std::function<bool(const v1::Task&)> RunningOn(const std::string& worker,
                                                        uint64_t token) {
    return [worker, token](const v1::Task& t) {
      return t.state() == v1::TASK_STATE_RUNNING && t.worker_id() == worker &&
             t.token() == token;
    };
  }

  e2e::TempDir dir_{"conveyor-worker-e2e"};
  std::unique_ptr<Process> broker_;
  std::string addr_;
  std::unique_ptr<Client> client_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<pid_t> command_pids_;
  std::vector<pid_t> command_groups_;
};

TEST_F(WorkerE2eTest, EveryHandlerKindReturnsItsResult) {
  const fs::path metrics_port_file = dir_.path() / "metrics.port";
  Process* w = StartWorker(
      "w1", "jobs",
      {"--concurrency=4", "--exec=upper=tr a-z A-Z",
       "--exec=env=printf '%s|%s|%s|%s|%s|%s' \"$CONVEYOR_TASK_ID\" \"$CONVEYOR_TASK_TYPE\" "
       "\"$CONVEYOR_QUEUE\" \"$CONVEYOR_ATTEMPT\" \"$CONVEYOR_FENCING_TOKEN\" \"$TRACEPARENT\"",
       "--exec=deadline=printf %s \"$CONVEYOR_DEADLINE\"", "--exec=bad_input=exit 65",
       "--exec=busy=echo 3s; exit 76", "--exec=flaky=echo oops >&2; exit 3",
       "--metrics-addr=127.0.0.1:0",
       absl::StrCat("--metrics-port-file=", metrics_port_file.string())});
  const std::string noop = Submit("jobs", "noop", "ignored");
  const std::string echo = Submit("jobs", "echo", "hello, echo");
  const std::string sleep = Submit("jobs", "sleep", "150ms");
  const std::string sum = Submit("jobs", "sum_squares", "1000000000");
  const std::string upper = Submit("jobs", "upper", "make me loud");
  const std::string fail = Submit("jobs", "fail", "disk on fire", /*max_attempts=*/2);
  const std::string permanent = Submit("jobs", "fail", "permanent: bad input", 3);
  const std::string bad_sleep = Submit("jobs", "sleep", "forever", 3);
  const std::string traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  v1::TaskSpec env_spec;
  env_spec.set_queue("jobs");
  env_spec.set_type("env");
  (*env_spec.mutable_headers())["traceparent"] = traceparent;
  const std::string env = Submit(env_spec);
  const std::string deadline = Submit("jobs", "deadline", "", {}, absl::Seconds(90));
  const std::string exit65 = Submit("jobs", "bad_input", "", 3);
  v1::TaskSpec busy_spec;  // its throttle pauses its rate key, not the queue
  busy_spec.set_queue("jobs");
  busy_spec.set_type("busy");
  busy_spec.set_rate_key("partner");
  busy_spec.mutable_retry()->set_max_attempts(1);
  const std::string exit76 = Submit(busy_spec);
  const std::string exit3 = Submit("jobs", "flaky", "", 2);

  struct Expect {
    std::string id;
    v1::TaskState state;
    std::string result;
  };
  for (const Expect& e : std::vector<Expect>{
           {noop, v1::TASK_STATE_SUCCEEDED, ""},
           {echo, v1::TASK_STATE_SUCCEEDED, "hello, echo"},
           {sleep, v1::TASK_STATE_SUCCEEDED, ""},
           {sum, v1::TASK_STATE_SUCCEEDED, "333333332833333333500000000"},
           {upper, v1::TASK_STATE_SUCCEEDED, "MAKE ME LOUD"},
       }) {
    v1::Task t = WaitForTask(e.id, Ended);
    EXPECT_EQ(t.state(), e.state) << t.DebugString();
    EXPECT_EQ(t.result(), e.result) << t.DebugString();
    EXPECT_EQ(t.attempts(), 0u) << t.DebugString();
  }
  // Retryable: both attempts spent.
  v1::Task t = WaitForTask(fail, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.attempts(), 2u);
  EXPECT_TRUE(absl::StrContains(t.error(), "disk on fire")) << t.error();
  // Not retryable: one attempt of three.
  t = WaitForTask(permanent, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.attempts(), 1u);
  EXPECT_TRUE(absl::StrContains(t.error(), "bad input")) << t.error();
  t = WaitForTask(bad_sleep, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.attempts(), 1u);

  // --exec: the environment describes the task.
  t = WaitForTask(env, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  EXPECT_EQ(t.result(), absl::StrCat(env, "|env|jobs|1|1|", traceparent));
  t = WaitForTask(deadline, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  absl::Time parsed;
  std::string err;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, t.result(), &parsed, &err))
      << t.result() << ": " << err;
  EXPECT_LE(absl::AbsDuration(parsed - (FromProto(t.started_at()) + absl::Seconds(90))),
            absl::Seconds(1))
      << t.result();
  // --exec exit codes: 65 is not retried, 76 is throttled, others retried.
  t = WaitForTask(exit65, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.attempts(), 1u);
  // Throttled: back to READY, no attempt spent, its key paused for 3 s.
  t = WaitForTask(exit76, [](const v1::Task& x) {
    return x.state() == v1::TASK_STATE_READY && x.token() != 0;
  });
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY) << t.DebugString();
  EXPECT_EQ(t.attempts(), 0u) << t.DebugString();
  EXPECT_TRUE(absl::StartsWith(t.error(), "throttled: ")) << t.error();
  EXPECT_TRUE(absl::StrContains(t.error(), "3s")) << t.error();
  EXPECT_EQ(t.waiting().reason(), v1::WAIT_REASON_RATE_LIMITED) << t.DebugString();
  EXPECT_EQ(t.waiting().key(), "partner") << t.DebugString();
  ASSERT_TRUE(client_->CancelTask(exit76).ok());
  EXPECT_EQ(WaitForTask(exit76, Ended).state(), v1::TASK_STATE_CANCELED);
  t = WaitForTask(exit3, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.attempts(), 2u);
  EXPECT_TRUE(absl::StrContains(t.error(), "oops")) << t.error();

  const int metrics_port = e2e::WaitForPortFile(metrics_port_file, *w, kStartTimeout);
  ASSERT_GT(metrics_port, 0);
  const std::string metrics = e2e::HttpGetMetrics(metrics_port);
  EXPECT_TRUE(absl::StrContains(
      metrics, "conveyor_worker_tasks_total{outcome=\"succeeded\",queue=\"jobs\"} 7"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(
      metrics, "conveyor_worker_tasks_total{outcome=\"failed_permanent\",queue=\"jobs\"} 3"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_slots{state=\"free\"} 4")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_connected 1")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_polls_total{result=\"tasks\"}"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_task_duration_seconds_bucket"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_build_info")) << metrics;

  // Task log lines carry the task's fields.
  const std::string log = w->log();
  EXPECT_TRUE(absl::StrContains(log, absl::StrCat("\"task_id\":\"", upper, "\""))) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"worker_id\":\"w1\"")) << log;

  w->Signal(SIGTERM);
  EXPECT_EQ(w->Wait(kStopTimeout), 0) << "an idle worker drains and exits 0";
}

TEST_F(WorkerE2eTest, AnAttemptPastItsTimeoutIsRetriedThenDead) {
  Process* w = StartWorker("w1", "slow", {"--concurrency=2"});
  const absl::Time start = absl::Now();
  const std::string id =
      Submit("slow", "sleep", "60s", /*max_attempts=*/2, /*timeout=*/absl::Seconds(1));
  v1::Task t = WaitForTask(id, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.attempts(), 2u) << t.DebugString();
  EXPECT_EQ(t.crashes(), 0u) << t.DebugString();
  EXPECT_TRUE(absl::StrContains(t.error(), "timeout")) << t.error();
  // Two attempts of 1 s each, cut by the worker (not by the broker's
  // timeout + 10 s grace).
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_TRUE(w->running());
}

TEST_F(WorkerE2eTest, AKilledWorkersTaskIsRedeliveredAndCompletesOnce) {
  CreateQueue("fragile", absl::Seconds(2));
  Process* a = StartWorker(
      "a", "fragile", {"--concurrency=1", "--exec=token=sleep 2; printf %s \"$CONVEYOR_FENCING_TOKEN\""});
  const std::string id = Submit("fragile", "token", "");
  v1::Task t = WaitForTask(id, RunningOn("a", 1));
  ASSERT_TRUE(RunningOn("a", 1)(t)) << t.DebugString();
  // The command outlives its killed worker (as it would in a real crash);
  // TearDown ends it.
  for (pid_t group : e2e::ChildProcessGroups(a->pid())) command_groups_.push_back(group);
  a->Signal(SIGKILL);
  EXPECT_EQ(a->Wait(kStopTimeout), 128 + SIGKILL);

  Process* b = StartWorker(
      "b", "fragile", {"--concurrency=1", "--exec=token=sleep 2; printf %s \"$CONVEYOR_FENCING_TOKEN\""});
  t = WaitForTask(id, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  EXPECT_EQ(t.token(), 2u);
  EXPECT_EQ(t.result(), "2");
  EXPECT_EQ(t.crashes(), 1u);
  EXPECT_EQ(t.attempts(), 0u);
  // Completed once: by b, in one attempt.
  const std::string log = b->log();
  size_t finished = 0;
  for (size_t pos = log.find("\"msg\":\"task finished\""); pos != std::string::npos;
       pos = log.find("\"msg\":\"task finished\"", pos + 1)) {
    ++finished;
  }
  EXPECT_EQ(finished, 1u) << log;
}

TEST_F(WorkerE2eTest, SigtermLetsShortTasksFinishAndHandsLongOnesBack) {
  Process* a = StartWorker("a", "drain", {"--concurrency=4", "--grace=2s"});
  const std::string short1 = Submit("drain", "sleep", "1s");
  const std::string short2 = Submit("drain", "sleep", "1s");
  const std::string long1 = Submit("drain", "sleep", "6s", {}, absl::Seconds(60));
  const std::string long2 = Submit("drain", "sleep", "6s", {}, absl::Seconds(60));
  for (const std::string& id : {short1, short2, long1, long2}) {
    v1::Task t = WaitForTask(id, RunningOn("a", 1));
    ASSERT_TRUE(RunningOn("a", 1)(t)) << t.DebugString();
  }
  const absl::Time stop = absl::Now();
  a->Signal(SIGTERM);
  EXPECT_EQ(a->Wait(kStopTimeout), 0) << "the worker drains and exits 0";
  // The grace period (2 s) plus the hand-back, not the long tasks' 6 s.
  EXPECT_LT(absl::Now() - stop, absl::Seconds(5));

  for (const std::string& id : {short1, short2}) {
    v1::Task t = WaitForTask(id, Ended, absl::Seconds(1));
    EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    EXPECT_EQ(t.token(), 1u);
  }
  for (const std::string& id : {long1, long2}) {
    absl::StatusOr<v1::Task> t = client_->GetTask(id);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->state(), v1::TASK_STATE_READY) << t->DebugString();
    EXPECT_EQ(t->attempts(), 0u) << "a hand-back spends no attempt";
    EXPECT_EQ(t->crashes(), 0u) << "a hand-back spends no crash budget";
  }
  const std::string log = a->log();
  EXPECT_TRUE(absl::StrContains(log, "\"outcome\":\"released\"")) << log;

  StartWorker("b", "drain", {"--concurrency=4"});
  for (const std::string& id : {long1, long2}) {
    v1::Task t = WaitForTask(id, Ended);
    EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    EXPECT_EQ(t.token(), 2u);
    EXPECT_EQ(t.attempts(), 0u);
    EXPECT_EQ(t.crashes(), 0u);
  }
}

// --prefetch: tasks leased beyond the free slots wait in the worker, their
// leases heartbeated; a drain hands back those not started, spending nothing.
TEST_F(WorkerE2eTest, PrefetchedTasksAreLeasedAheadAndHandedBackUnstartedOnDrain) {
  CreateQueue("ahead", absl::Seconds(2));  // heartbeats must keep the waiting ones
  const std::string running = Submit("ahead", "sleep", "4s", {}, absl::Seconds(60));
  std::vector<std::string> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(Submit("ahead", "sleep", "1ms", {}, absl::Seconds(60)));
  }
  const fs::path metrics_port_file = dir_.path() / "prefetch-metrics.port";
  Process* p = StartWorker("p", "ahead",
                           {"--concurrency=1", "--prefetch=3", "--grace=10s",
                            "--metrics-addr=127.0.0.1:0",
                            absl::StrCat("--metrics-port-file=", metrics_port_file.string())});
  for (const std::string& id : waiting) {
    v1::Task t = WaitForTask(id, RunningOn("p", 1));
    ASSERT_TRUE(RunningOn("p", 1)(t)) << "leased ahead: " << t.DebugString();
  }
  const int metrics_port = e2e::WaitForPortFile(metrics_port_file, *p, kStartTimeout);
  ASSERT_GT(metrics_port, 0);
  // The broker shows the leases a moment before the worker has queued them.
  std::string metrics = e2e::HttpGetMetrics(metrics_port);
  for (const absl::Time until = absl::Now() + absl::Seconds(10);
       !absl::StrContains(metrics, "conveyor_worker_prefetched 3") && absl::Now() < until;
       metrics = e2e::HttpGetMetrics(metrics_port)) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_prefetched 3")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "conveyor_worker_slots{state=\"busy\"} 1")) << metrics;
  // Past the 2 s lease: the waiting tasks' leases were extended.
  absl::SleepFor(absl::Seconds(3));
  for (const std::string& id : waiting) {
    absl::StatusOr<v1::Task> t = client_->GetTask(id);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(RunningOn("p", 1)(*t)) << t->DebugString();
  }
  p->Signal(SIGTERM);
  EXPECT_EQ(p->Wait(kStopTimeout), 0) << "the worker drains and exits 0";
  v1::Task done = WaitForTask(running, Ended, absl::Seconds(5));
  EXPECT_EQ(done.state(), v1::TASK_STATE_SUCCEEDED) << done.DebugString();
  for (const std::string& id : waiting) {
    absl::StatusOr<v1::Task> t = client_->GetTask(id);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->state(), v1::TASK_STATE_READY) << t->DebugString();
    EXPECT_EQ(t->attempts(), 0u) << "a hand-back spends no attempt";
    EXPECT_EQ(t->crashes(), 0u) << t->DebugString();
  }
  const std::string log = p->log();
  EXPECT_TRUE(absl::StrContains(log, "handing back a task that had not started")) << log;
  for (const std::string& id : waiting) {
    EXPECT_FALSE(absl::StrContains(log, absl::StrCat("\"msg\":\"task started\",\"task_id\":\"", id)))
        << id << " never started";
  }
}

TEST_F(WorkerE2eTest, AFrozenWorkerCannotOverwriteTheAttemptThatReplacedIt) {
  CreateQueue("fenced", absl::Seconds(2));
  // The first attempt's command ends (with "1") while its worker is frozen;
  // the second takes longer, so the first's stale report reaches the broker
  // before the second's result.
  const std::string command =
      "--exec=fenced=if [ \"$CONVEYOR_FENCING_TOKEN\" = 1 ]; then sleep 1; else sleep 3; fi; "
      "printf %s \"$CONVEYOR_FENCING_TOKEN\"";
  Process* a = StartWorker("a", "fenced", {"--concurrency=1", command});
  const std::string id = Submit("fenced", "fenced", "");
  v1::Task t = WaitForTask(id, RunningOn("a", 1));
  ASSERT_TRUE(RunningOn("a", 1)(t)) << t.DebugString();
  // a serves one task at a time, so no Lease call of its own is parked on the
  // queue (a frozen worker's parked call would take the task back).
  a->Signal(SIGSTOP);
  // Its lease (2 s) runs out while it is frozen; another worker takes over.
  StartWorker("b", "fenced", {command});
  t = WaitForTask(id, RunningOn("b", 2));
  ASSERT_TRUE(RunningOn("b", 2)(t)) << t.DebugString();
  // Thawed while b still runs: a's command has finished and printed 1.
  a->Signal(SIGCONT);
  t = WaitForTask(id, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  EXPECT_EQ(t.result(), "2") << "the first attempt's result must stay rejected";
  EXPECT_EQ(t.token(), 2u);
  // a noticed, one way or the other, and reported nothing that counted.
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  std::string log;
  while (absl::Now() < deadline) {
    log = a->log();
    if (absl::StrContains(log, "lease lost") || absl::StrContains(log, "report rejected")) break;
    absl::SleepFor(kPoll);
  }
  EXPECT_TRUE(absl::StrContains(log, "lease lost") || absl::StrContains(log, "report rejected"))
      << log;
  absl::StatusOr<v1::Task> final_state = client_->GetTask(id);
  ASSERT_TRUE(final_state.ok());
  EXPECT_EQ(final_state->result(), "2");
  a->Signal(SIGTERM);
  EXPECT_EQ(a->Wait(kStopTimeout), 0);
}

TEST_F(WorkerE2eTest, CancelingARunningExecTaskKillsItsProcess) {
  const fs::path pid_file = dir_.path() / "command.pid";
  StartWorker("w1", "cancel",
              {absl::StrCat("--exec=hang=echo $$ > ", pid_file.string(), "; exec sleep 60"),
               "--heartbeat-interval=200ms"});
  const std::string id = Submit("cancel", "hang", "");
  v1::Task t = WaitForTask(id, RunningOn("w1", 1));
  ASSERT_TRUE(RunningOn("w1", 1)(t)) << t.DebugString();
  pid_t pid = 0;
  const absl::Time deadline = absl::Now() + kTaskTimeout;
  while (pid == 0 && absl::Now() < deadline) {
    int parsed = 0;
    std::string text(absl::StripAsciiWhitespace(e2e::ReadFileOrEmpty(pid_file)));
    if (absl::SimpleAtoi(text, &parsed) && parsed > 0) pid = parsed;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(pid, 0) << "the command never wrote its pid";
  command_pids_.push_back(pid);
  ASSERT_EQ(kill(pid, 0), 0) << "the command should be running";

  const absl::Time cancel_at = absl::Now();
  ASSERT_TRUE(client_->CancelTask(id).ok());
  t = WaitForTask(id, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_CANCELED) << t.DebugString();
  EXPECT_LT(absl::Now() - cancel_at, absl::Seconds(10));
  // The worker reaps the command before it reports.
  const absl::Time gone_by = absl::Now() + absl::Seconds(10);
  while (kill(pid, 0) == 0 && absl::Now() < gone_by) absl::SleepFor(absl::Milliseconds(10));
  errno = 0;
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(WorkerE2eTest, TheCrashHandlerSpendsTheCrashBudgetUntilDead) {
  CreateQueue("crashy", absl::Seconds(1), /*max_crashes=*/2);
  const std::string id = Submit("crashy", "crash", "");
  int started = 0;
  std::vector<int> exit_codes;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  Process* current = nullptr;
  v1::Task t;
  while (absl::Now() < deadline) {
    absl::StatusOr<v1::Task> got = client_->GetTask(id);
    if (got.ok()) {
      t = *got;
      if (Ended(t)) break;
    }
    if (current == nullptr || current->Poll()) {
      if (current != nullptr) exit_codes.push_back(current->Wait(absl::ZeroDuration()));
      ASSERT_LT(started, 5) << "more crashes than the budget allows: " << t.DebugString();
      current = StartWorker(absl::StrCat("w", ++started), "crashy", {"--enable-test-handlers"});
    }
    absl::SleepFor(kPoll);
  }
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD) << t.DebugString();
  EXPECT_EQ(t.crashes(), 2u);
  EXPECT_TRUE(absl::StrContains(t.error(), "crash")) << t.error();
  ASSERT_GE(exit_codes.size(), 1u);
  for (int code : exit_codes) EXPECT_EQ(code, 70);
}

TEST_F(WorkerE2eTest, WithoutTestHandlersTheCrashTypeIsNotServed) {
  Process* w = StartWorker("w1", "crashy");
  const std::string id = Submit("crashy", "crash", "");
  const std::string echo = Submit("crashy", "echo", "still here");
  v1::Task t = WaitForTask(echo, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED);
  absl::StatusOr<v1::Task> crash = client_->GetTask(id);
  ASSERT_TRUE(crash.ok());
  EXPECT_EQ(crash->state(), v1::TASK_STATE_READY) << crash->DebugString();
  EXPECT_TRUE(w->running());
}

TEST_F(WorkerE2eTest, ASecondSignalEndsTheDrainAtOnce) {
  Process* w = StartWorker("w1", "stubborn", {"--grace=60s"});
  const std::string id = Submit("stubborn", "sleep", "60s", {}, absl::Seconds(120));
  v1::Task t = WaitForTask(id, RunningOn("w1", 1));
  ASSERT_TRUE(RunningOn("w1", 1)(t)) << t.DebugString();
  w->Signal(SIGTERM);
  // Wait until the drain has begun, then signal again.
  const absl::Time deadline = absl::Now() + kTaskTimeout;
  while (!absl::StrContains(w->log(), "\"msg\":\"draining\"") && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Time second = absl::Now();
  w->Signal(SIGINT);
  EXPECT_EQ(w->Wait(kStopTimeout), 1);
  EXPECT_LT(absl::Now() - second, absl::Seconds(5));
}

TEST_F(WorkerE2eTest, ProgressLinesReachTheBroker) {
  Process* w = StartWorker("w1", "progress",
                           {"--exec=report=echo 'PROGRESS 50 halfway there' >&2; sleep 30",
                            "--heartbeat-interval=100ms", "--grace=0s"});
  const std::string id = Submit("progress", "report", "");
  v1::Task t = WaitForTask(id, [](const v1::Task& t) { return t.progress_percent() == 50; });
  EXPECT_EQ(t.progress_percent(), 50) << t.DebugString();
  EXPECT_EQ(t.progress_message(), "halfway there");
  EXPECT_EQ(t.state(), v1::TASK_STATE_RUNNING);
  // Draining with no grace stops the command and hands the task back.
  w->Signal(SIGTERM);
  EXPECT_EQ(w->Wait(kStopTimeout), 0);
  t = WaitForTask(id, [](const v1::Task& t) { return t.state() == v1::TASK_STATE_READY; });
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY) << t.DebugString();
}

TEST_F(WorkerE2eTest, ARateLimitSpacesTasksOfThatType) {
  StartWorker("w1", "limited", {"--concurrency=4", "--rate=echo=2/s"});
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Submit("limited", "echo", absl::StrCat(i)));
  const std::string other = Submit("limited", "noop", "");
  absl::Time first = absl::InfiniteFuture(), last = absl::InfinitePast();
  for (const std::string& id : ids) {
    v1::Task t = WaitForTask(id, Ended);
    ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    first = std::min(first, FromProto(t.finished_at()));
    last = std::max(last, FromProto(t.finished_at()));
  }
  // A burst of 2, then 2 per second: the 6th is at least 2 s after the first.
  EXPECT_GE(last - first, absl::Milliseconds(1800));
  EXPECT_EQ(WaitForTask(other, Ended).state(), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(WorkerE2eTest, OneWorkerServesSeveralBrokers) {
  std::string second_addr;
  std::unique_ptr<Process> second = StartBroker("conveyord2", &second_addr);
  ASSERT_NE(second, nullptr);
  std::unique_ptr<Client> second_client = NewClient(second_addr);
  Process* w =
      StartWorker("w1", "shared", {absl::StrCat("--broker=", second_addr), "--concurrency=2"});
  const std::string on_first = Submit("shared", "echo", "first");
  v1::TaskSpec spec;
  spec.set_queue("shared");
  spec.set_type("echo");
  spec.set_payload("second");
  absl::StatusOr<v1::SubmitResponse> r = second_client->Submit(spec);
  ASSERT_TRUE(r.ok()) << r.status();
  v1::Task t = WaitForTask(on_first, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  EXPECT_EQ(t.result(), "first");
  const absl::Time deadline = absl::Now() + kTaskTimeout;
  absl::StatusOr<v1::Task> t2;
  do {
    t2 = second_client->GetTask(r->task().id());
    if (t2.ok() && Ended(*t2)) break;
    absl::SleepFor(kPoll);
  } while (absl::Now() < deadline);
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_EQ(t2->state(), v1::TASK_STATE_SUCCEEDED) << t2->DebugString();
  EXPECT_EQ(t2->result(), "second");
  w->Signal(SIGTERM);
  EXPECT_EQ(w->Wait(kStopTimeout), 0);
}

TEST_F(WorkerE2eTest, ADrainingBrokerGetsNoMoreLeasesButItsRunningTasksReport) {
  Process* w = StartWorker("w1", "d", {"--heartbeat-interval=100ms"});
  const std::string id = Submit("d", "sleep", "1500ms");
  v1::Task t = WaitForTask(id, RunningOn("w1", 1));
  ASSERT_TRUE(RunningOn("w1", 1)(t)) << t.DebugString();
  client_.reset();  // an idle client connection would hold the broker's shutdown
  broker_->Signal(SIGTERM);
  // The broker waits for its running task, which the worker completes.
  EXPECT_EQ(broker_->Wait(kStopTimeout), 0);
  const std::string log = w->log();
  EXPECT_TRUE(absl::StrContains(log, "the broker is draining")) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"outcome\":\"succeeded\"")) << log;
  EXPECT_FALSE(absl::StrContains(log, "report dropped")) << log;
  EXPECT_FALSE(absl::StrContains(log, "report rejected")) << log;
  EXPECT_TRUE(w->running()) << "a worker outlives its broker and keeps trying";
  w->Signal(SIGTERM);
  EXPECT_EQ(w->Wait(kStopTimeout), 0) << "and still drains cleanly without it";
}

TEST_F(WorkerE2eTest, TheSdkExampleServesItsCustomType) {
  workers_.push_back(std::make_unique<Process>(LogTo(dir_.path() / "sdk_worker.log")));
  Process* w = workers_.back().get();
  ASSERT_TRUE(w->Start({SDK_WORKER_PATH, absl::StrCat("--broker=", addr_), "--queue=text"}));
  const std::string id = Submit("text", "word_count", "  to be\tor not\nto be ");
  v1::Task t = WaitForTask(id, Ended);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  EXPECT_EQ(t.result(), "6");
  w->Signal(SIGINT);
  EXPECT_EQ(w->Wait(kStopTimeout), 0);
}

// ── Broker-enforced limits, across several worker processes ──

// Start times of tasks `ids`, sorted.
std::vector<absl::Time> StartTimes(Client& client, const std::vector<std::string>& ids) {
  std::vector<absl::Time> starts;
  for (const std::string& id : ids) {
    absl::StatusOr<v1::Task> t = client.GetTask(id);
    if (t.ok() && t->has_started_at()) starts.push_back(FromProto(t->started_at()));
  }
  std::sort(starts.begin(), starts.end());
  return starts;
}

TEST_F(WorkerE2eTest, AQueueRateHoldsAcrossThreeWorkers) {
  v1::CreateQueueRequest req;
  req.mutable_config()->set_name("rated");
  req.mutable_config()->mutable_limits()->mutable_rate()->set_per_second(10);
  req.mutable_config()->mutable_limits()->mutable_rate()->set_burst(1);
  ASSERT_TRUE(client_->CreateQueue(req).ok());
  for (int w = 0; w < 3; ++w) StartWorker(absl::StrCat("w", w), "rated", {"--concurrency=8"});
  std::vector<std::string> ids;
  for (int i = 0; i < 41; ++i) ids.push_back(Submit("rated", "noop", ""));
  for (const std::string& id : ids) {
    ASSERT_EQ(WaitForTask(id, Ended).state(), v1::TASK_STATE_SUCCEEDED);
  }
  std::vector<absl::Time> starts = StartTimes(*client_, ids);
  ASSERT_EQ(starts.size(), ids.size());
  // 40 tokens after the first at 10/s: 4 s. 24 worker slots would take well
  // under a second without the limit. Generous bounds for a loaded machine.
  const absl::Duration span = starts.back() - starts.front();
  EXPECT_GE(span, absl::Milliseconds(3900)) << span;
  EXPECT_LE(span, absl::Seconds(8)) << span;
  // Never faster than the rate in any window of 10 starts (burst 1).
  for (size_t i = 10; i < starts.size(); ++i) {
    EXPECT_GE(starts[i] - starts[i - 10], absl::Milliseconds(950)) << i;
  }
}

TEST_F(WorkerE2eTest, APoolIsNeverExceededAcrossThreeWorkers) {
  v1::CreateQueueRequest req;
  req.mutable_config()->set_name("pooled");
  (*req.mutable_config()->mutable_limits()->mutable_pools())["db"] = 5;
  ASSERT_TRUE(client_->CreateQueue(req).ok());
  // The handlers' own accounting: a count of holders under flock, and the
  // highest count seen.
  const std::string cur = (dir_.path() / "cur").string();
  const std::string max = (dir_.path() / "max").string();
  const std::string lock = (dir_.path() / "lock").string();
  std::ofstream(cur) << "0\n";
  std::ofstream(max) << "0\n";
  const std::string hold = absl::StrCat(
      "--exec=hold=( flock 9; n=$(($(cat ", cur, ") + 1)); echo $n > ", cur,
      "; [ $n -gt $(cat ", max, ") ] && echo $n > ", max, "; true ) 9>", lock,
      "; sleep 0.2; ( flock 9; echo $(($(cat ", cur, ") - 1)) > ", cur, " ) 9>", lock);
  for (int w = 0; w < 3; ++w) {
    StartWorker(absl::StrCat("w", w), "pooled", {"--concurrency=8", hold});
  }
  std::vector<std::string> db;
  std::vector<std::string> free;
  for (int i = 0; i < 40; ++i) {
    v1::TaskSpec spec;
    spec.set_queue("pooled");
    spec.set_type("hold");
    spec.set_concurrency_key("db");
    db.push_back(Submit(spec));
  }
  // Submitted after the db backlog, these are not held back by it.
  for (int i = 0; i < 8; ++i) free.push_back(Submit("pooled", "sleep", "300ms"));
  absl::Time free_done = absl::InfinitePast();
  for (const std::string& id : free) {
    v1::Task t = WaitForTask(id, Ended);
    ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    free_done = std::max(free_done, FromProto(t.finished_at()));
  }
  absl::Time db_done = absl::InfinitePast();
  for (const std::string& id : db) {
    v1::Task t = WaitForTask(id, Ended);
    ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
    db_done = std::max(db_done, FromProto(t.finished_at()));
  }
  int highest = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(e2e::ReadFileOrEmpty(max)), &highest));
  EXPECT_LE(highest, 5);
  EXPECT_GE(highest, 2) << "the pool's slots were used in parallel";
  // 40 tasks of 200 ms through 5 slots take about 1.6 s; the others ran
  // meanwhile instead of after them.
  EXPECT_LT(free_done, db_done);
  // Every slot came back: the pool is idle and a new db task runs at once.
  const std::string last = [&] {
    v1::TaskSpec spec;
    spec.set_queue("pooled");
    spec.set_type("hold");
    spec.set_concurrency_key("db");
    return Submit(spec);
  }();
  EXPECT_EQ(WaitForTask(last, Ended).state(), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(WorkerE2eTest, AThrottledCommandPausesItsKeyWithoutSpendingAnAttempt) {
  const std::string marker = (dir_.path() / "throttled-once").string();
  StartWorker("w1", "downstream",
              {"--concurrency=4",
               absl::StrCat("--exec=call=if [ -e ", marker, " ]; then echo done; else touch ",
                            marker, "; echo 1s; exit 76; fi")});
  v1::TaskSpec spec;
  spec.set_queue("downstream");
  spec.set_type("call");
  spec.set_rate_key("partner");
  spec.mutable_retry()->set_max_attempts(1);  // a spent attempt would kill it
  const std::string id = Submit(spec);
  const std::string other = Submit("downstream", "noop", "");
  v1::Task t = WaitForTask(id, Ended);
  ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED) << t.DebugString();
  EXPECT_EQ(t.result(), "done\n");
  EXPECT_EQ(t.attempts(), 0u);
  EXPECT_EQ(t.token() & 0xffffffffu, 2u) << "leased twice";
  EXPECT_GE(FromProto(t.started_at()) - FromProto(t.created_at()), absl::Milliseconds(900));
  EXPECT_EQ(WaitForTask(other, Ended).state(), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(WorkerE2eTest, GetTaskSaysWhyAReadyTaskWaits) {
  v1::CreateQueueRequest req;
  req.mutable_config()->set_name("idle");
  (*req.mutable_config()->mutable_limits()->mutable_pools())["db"] = 1;
  ASSERT_TRUE(client_->CreateQueue(req).ok());
  // Nobody polls "idle": its task waits for a worker.
  const std::string id = Submit("idle", "sleep", "2s");
  absl::StatusOr<v1::Task> t = client_->GetTask(id);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->waiting().reason(), v1::WAIT_REASON_NO_WORKER) << t->DebugString();
  // A db task runs; the next db task waits for the pool.
  StartWorker("w1", "idle", {"--concurrency=4"});
  v1::TaskSpec spec;
  spec.set_queue("idle");
  spec.set_type("sleep");
  spec.set_payload("3s");
  spec.set_concurrency_key("db");
  const std::string first = Submit(spec);
  ASSERT_EQ(WaitForTask(first, [](const v1::Task& x) {
              return x.state() == v1::TASK_STATE_RUNNING;
            }).state(),
            v1::TASK_STATE_RUNNING);
  const std::string second = Submit(spec);
  v1::Task waiting = WaitForTask(second, [](const v1::Task& x) {
    return x.waiting().reason() == v1::WAIT_REASON_CONCURRENCY_FULL;
  });
  EXPECT_EQ(waiting.state(), v1::TASK_STATE_READY) << waiting.DebugString();
  EXPECT_EQ(waiting.waiting().reason(), v1::WAIT_REASON_CONCURRENCY_FULL);
  EXPECT_EQ(waiting.waiting().key(), "db");
  EXPECT_EQ(WaitForTask(second, Ended).state(), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(WorkerE2eTest, HelpDescribesTheFlags) {
  const fs::path log = dir_.path() / "help.log";
  Process help(LogTo(log));
  ASSERT_TRUE(help.Start({CONVEYOR_WORKER_PATH, "--help"}));
  help.Wait(kStopTimeout);
  const std::string text = help.log();
  for (const char* flag : {"--broker", "--queue", "--concurrency", "--exec", "--rate",
                           "--heartbeat_interval", "--grace", "--metrics_addr",
                           "--metrics_port_file", "--worker_id", "--enable_test_handlers",
                           "--log_level", "sum_squares", "permanent:"}) {
    EXPECT_TRUE(absl::StrContains(text, flag)) << flag << "\n" << text;
  }
}

}  // namespace
}  // namespace conveyor::worker
