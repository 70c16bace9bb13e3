// End-to-end: the real `conveyord` broker driven by the real `conveyor` CLI.
//
// Each test starts its own broker on 127.0.0.1:0 (it writes the bound port
// to --port-file), runs CLI processes with posix_spawn (stdin from a file,
// stdout and stderr to files, each bounded by a timeout), drives leases
// through the client library where a worker is needed, and finally stops
// the broker with SIGTERM and checks that it exits 0.
//
// Bad priorities: the CLI rejects --priority outside 0-9 itself (exit 64,
// EX_USAGE) before any call; the broker's own INVALID_ARGUMENT for the same
// request is checked through the client library (ExitCodeFor gives 65).
//
// No fixed ports, no sleeps used as synchronization: every wait is a bounded
// poll (the port file, a process exit) with generous limits for a loaded
// 2-core machine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "google/protobuf/util/json_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif
#ifndef CONVEYOR_CLI_PATH
#error "CONVEYOR_CLI_PATH must name the conveyor binary"
#endif

namespace conveyor::client {
namespace {

namespace fs = std::filesystem;
using e2e::CommandResult;
using e2e::Process;
using e2e::ReadFileOrEmpty;
using e2e::WriteFile;

constexpr absl::Duration kCliTimeout = absl::Seconds(60);
constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

// This suite's children: stdin from `<stem>.in` in `dir`, stdout and stderr
// to `<stem>.out` and `<stem>.err`, and no CONVEYOR_ADDR from the shell that
// ran the test (the CLI would take it as its default broker).
e2e::ProcessOptions SuiteProcess(const fs::path& dir, const std::string& stem,
                                 const std::vector<std::string>& extra_env = {}) {
  return {.stdio =
              e2e::Stdio::Files(dir / (stem + ".in"), dir / (stem + ".out"), dir / (stem + ".err")),
          .unset_env_prefixes = {"CONVEYOR_ADDR="},
          .extra_env = extra_env};
}

// A `conveyor` process started in the background (watch, submit --wait).
class BackgroundCli {
 public:
  BackgroundCli(const fs::path& dir, const std::vector<std::string>& args)
      : dir_(dir), process_(SuiteProcess(dir, "bg")) {
    std::vector<std::string> argv = {CONVEYOR_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    WriteFile(dir_ / "bg.in", "");
    process_.Start(argv);
  }
  // Polls its stdout until it holds `text` (bounded); false on timeout or
  // if the process exited first.
  bool WaitForOutput(absl::string_view text) {
    const absl::Time deadline = absl::Now() + kCliTimeout;
    while (absl::Now() < deadline) {
      if (absl::StrContains(ReadFileOrEmpty(dir_ / "bg.out"), text)) return true;
      if (process_.Poll()) return absl::StrContains(ReadFileOrEmpty(dir_ / "bg.out"), text);
      absl::SleepFor(kPollInterval);
    }
    return false;
  }
  CommandResult Finish() { return process_.Finish(kCliTimeout); }

 private:
  fs::path dir_;
  Process process_;
};

// Holds a loopback TCP port without listening on it: connections to it are
// refused, and no other process can take the port meanwhile.
class RefusingPort {
 public:
  explicit RefusingPort(int port) : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    const int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RefusingPort() { close(fd_); }
  bool bound() const { return bound_; }

 private:
  int fd_;
  bool bound_ = false;
};

class CliE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    StartBroker();
  }

  void TearDown() override {
    // An idle client connection holds the broker's gRPC shutdown until its
    // deadline (the client does not poll, so it never answers the GOAWAY):
    // close it first. HealthIsServingUntilTheBrokerStopsThenUnavailable
    // covers a stop with a client still connected.
    client_.reset();
    if (broker_ != nullptr && broker_->unreaped()) {
      EXPECT_EQ(StopBroker(), 0) << "conveyord must drain and exit 0 on SIGTERM";
    }
    if (HasFailure()) {
      std::cerr << "--- conveyord stderr ---\n"
                << ReadFileOrEmpty(dir_.path() / "broker.err") << "\n";
    }
  }

  void StartBroker(const std::vector<std::string>& extra_flags = {}) {
    const fs::path port_file = dir_.path() / "port";
    fs::remove(port_file);
    WriteFile(dir_.path() / "broker.in", "");
    broker_ = std::make_unique<Process>(SuiteProcess(dir_.path(), "broker"));
    std::vector<std::string> argv = e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file);
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    ASSERT_TRUE(broker_->Start(argv));
    const int port = e2e::WaitForPortFile(port_file, *broker_, kStartTimeout);
    if (port == 0) {
      ASSERT_FALSE(broker_->Poll()) << "conveyord exited during startup:\n"
                                    << ReadFileOrEmpty(dir_.path() / "broker.err");
      FAIL() << "conveyord wrote no port within " << kStartTimeout;
    }
    port_ = port;
    addr_ = e2e::LoopbackAddress(port);
    ClientOptions options;
    options.address = addr_;
    options.timeout = absl::Seconds(30);
    client_ = std::make_unique<Client>(options);
  }

  // SIGTERM, then the broker's exit code (-1 if it did not exit in time).
  int StopBroker() {
    broker_->Signal(SIGTERM);
    return broker_->WaitOrKill(kStopTimeout);
  }

  // Runs `conveyor --addr=<broker> ARGS` with `stdin_data` on stdin.
  CommandResult Cli(const std::vector<std::string>& args, absl::string_view stdin_data = "",
                    const std::vector<std::string>& extra_env = {}, bool with_addr = true) {
    std::vector<std::string> argv = {CONVEYOR_CLI_PATH};
    if (with_addr) argv.push_back(absl::StrCat("--addr=", addr_));
    argv.insert(argv.end(), args.begin(), args.end());
    WriteFile(dir_.path() / "cli.in", stdin_data);
    Process process(SuiteProcess(dir_.path(), "cli", extra_env));
    if (!process.Start(argv)) return CommandResult();
    CommandResult r = process.Finish(kCliTimeout);
    EXPECT_NE(r.code, -1) << "conveyor " << absl::StrJoin(args, " ") << " timed out";
    return r;
  }

  // Submits through the CLI and returns the printed id.
  std::string Submit(const std::vector<std::string>& args, absl::string_view stdin_data = "") {
    std::vector<std::string> all = {"submit"};
    all.insert(all.end(), args.begin(), args.end());
    CommandResult r = Cli(all, stdin_data);
    EXPECT_EQ(r.code, 0) << r;
    std::string id(absl::StripTrailingAsciiWhitespace(r.out));
    EXPECT_EQ(id.size(), 16u) << r;
    return id;
  }

  // Leases one task of `queue` through the library (bounded).
  v1::LeasedTask LeaseOne(const std::string& queue) {
    v1::LeaseRequest request;
    request.set_worker_id("e2e-worker");
    request.add_queues(queue);
    request.set_max_tasks(1);
    ToProto(absl::Seconds(5), request.mutable_wait());
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::LeaseResponse> leased = client_->Lease(request);
      EXPECT_TRUE(leased.ok()) << leased.status();
      if (!leased.ok()) break;
      if (leased->tasks_size() > 0) return leased->tasks(0);
    }
    ADD_FAILURE() << "no task leased from " << queue;
    return v1::LeasedTask();
  }

  void Complete(const v1::LeasedTask& task, const std::string& result) {
    v1::CompleteRequest request;
    v1::CompleteRequest::Item* item = request.add_items();
    item->set_id(task.id());
    item->set_token(task.token());
    item->set_result(result);
    absl::StatusOr<v1::CompleteResponse> r = client_->Complete(request);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->items_size(), 1);
    EXPECT_EQ(r->items(0).code(), 0) << r->items(0).message();
  }

  void FailPermanently(const v1::LeasedTask& task, const std::string& error) {
    v1::FailRequest request;
    v1::FailRequest::Item* item = request.add_items();
    item->set_id(task.id());
    item->set_token(task.token());
    item->set_error(error);
    item->set_retryable(false);
    absl::StatusOr<v1::FailResponse> r = client_->Fail(request);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->items_size(), 1);
    EXPECT_EQ(r->items(0).code(), 0) << r->items(0).message();
  }

  template <typename Message>
  Message ParseJson(const std::string& json) {
    Message message;
    auto status = google::protobuf::util::JsonStringToMessage(json, &message);
    EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
    return message;
  }

  v1::Task GetTaskJson(const std::string& id) {
    CommandResult r = Cli({"get", id, "-o", "json"});
    EXPECT_EQ(r.code, 0) << r;
    return ParseJson<v1::Task>(r.out);
  }

  e2e::TempDir dir_{"conveyor-e2e"};
  std::unique_ptr<Process> broker_;
  int port_ = 0;
  std::string addr_;
  std::unique_ptr<Client> client_;
};

TEST_F(CliE2eTest, HealthIsServingUntilTheBrokerStopsThenUnavailable) {
  CommandResult r = Cli({"health"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "SERVING\n");
  r = Cli({"health", "-o", "json"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "{\"status\":\"SERVING\"}\n");

  // The library client stays connected (idle) while the broker stops.
  absl::StatusOr<ServingStatus> serving = client_->Health();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, ServingStatus::kServing);
  ASSERT_EQ(StopBroker(), 0) << "conveyord must drain and exit 0 on SIGTERM";
  // Keep another test's broker from taking the freed port.
  RefusingPort refusing(port_);
  EXPECT_TRUE(refusing.bound());
  EXPECT_EQ(client_->Health().status().code(), absl::StatusCode::kUnavailable);
  r = Cli({"health", "--timeout=5s"});
  EXPECT_EQ(r.code, EX_UNAVAILABLE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "conveyor: health: UNAVAILABLE")) << r;
  r = Cli({"get", "0000000000000001", "--timeout=5s"});
  EXPECT_EQ(r.code, EX_UNAVAILABLE) << r;
}

TEST_F(CliE2eTest, AHealthOnlyListenerServesHealthAndNothingElse) {
  ASSERT_EQ(StopBroker(), 0);
  StartBroker({"--health-listen=127.0.0.1:0"});
  // The "listening" log line names the health port.
  int health_port = 0;
  const std::string log = ReadFileOrEmpty(dir_.path() / "broker.err");
  const size_t at = log.find("\"health_port\":");
  ASSERT_NE(at, std::string::npos) << log;
  ASSERT_TRUE(absl::SimpleAtoi(
      log.substr(at + 14, log.find_first_of(",}", at + 14) - (at + 14)), &health_port))
      << log;
  ASSERT_GT(health_port, 0);
  const std::string health_addr = absl::StrCat("--addr=127.0.0.1:", health_port);
  CommandResult r = Cli({health_addr, "health"}, "", {}, /*with_addr=*/false);
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "SERVING\n");
  // No API there: a task call is UNIMPLEMENTED, whatever the API's security.
  r = Cli({health_addr, "queue", "list"}, "", {}, /*with_addr=*/false);
  EXPECT_NE(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "UNIMPLEMENTED")) << r;
  // The API itself is unchanged.
  r = Cli({"health"});
  EXPECT_EQ(r.code, 0) << r;
}

TEST_F(CliE2eTest, AddressComesFromTheEnvironment) {
  CommandResult r =
      Cli({"health"}, "", {absl::StrCat("CONVEYOR_ADDR=", addr_)}, /*with_addr=*/false);
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST_F(CliE2eTest, SubmitTakesThePayloadFromArgumentFileOrStdin) {
  const std::string from_arg = Submit({"--queue", "payloads", "--type", "echo", "hello"});
  EXPECT_EQ(GetTaskJson(from_arg).payload(), "hello");

  const std::string binary("\x00\xff\x01 bytes\n", 9);
  WriteFile(dir_.path() / "payload.bin", binary);
  const std::string from_file = Submit({"--queue", "payloads", "--type", "echo", "--payload-file",
                                        (dir_.path() / "payload.bin").string()});
  EXPECT_EQ(GetTaskJson(from_file).payload(), binary);

  const std::string from_dash = Submit({"--queue", "payloads", "--type", "echo", "-"}, "dash in");
  EXPECT_EQ(GetTaskJson(from_dash).payload(), "dash in");

  // No payload argument and stdin is a file, not a terminal: stdin is read.
  const std::string from_stdin = Submit({"--queue", "payloads", "--type", "echo"}, "piped");
  EXPECT_EQ(GetTaskJson(from_stdin).payload(), "piped");

  CommandResult r = Cli({"submit", "--queue", "payloads", "--type", "echo", "--payload-file",
                         (dir_.path() / "missing").string()});
  EXPECT_EQ(r.code, EX_NOINPUT) << r;
  r = Cli({"submit", "--queue", "payloads", "--type", "echo", "x", "--payload-file",
           (dir_.path() / "payload.bin").string()});
  EXPECT_EQ(r.code, EX_USAGE) << r;
}

TEST_F(CliE2eTest, SubmitOptionsReachTheTaskAndGetShowsThem) {
  CommandResult r = Cli({"submit",
                         "--queue",
                         "opts",
                         "--type",
                         "resize",
                         "--priority",
                         "7",
                         "--header",
                         "traceparent=00-abc-def-01",
                         "--header",
                         "tag=x",
                         "--max-attempts",
                         "5",
                         "--task-timeout",
                         "90s",
                         "--idempotency-key",
                         "key-1",
                         "-o",
                         "json",
                         "payload"});
  ASSERT_EQ(r.code, 0) << r;
  v1::Task task = ParseJson<v1::Task>(r.out);
  EXPECT_EQ(task.queue(), "opts");
  EXPECT_EQ(task.type(), "resize");
  EXPECT_EQ(task.priority(), 7u);
  EXPECT_EQ(task.headers().at("traceparent"), "00-abc-def-01");
  EXPECT_EQ(task.headers().at("tag"), "x");
  EXPECT_EQ(task.max_attempts(), 5u);
  EXPECT_EQ(task.idempotency_key(), "key-1");
  EXPECT_EQ(FromProto(task.timeout()), absl::Seconds(90));
  EXPECT_EQ(task.state(), v1::TASK_STATE_READY);
  EXPECT_TRUE(absl::StrContains(r.out, "\"idempotency_key\":\"key-1\"")) << r;

  r = Cli({"get", task.id()});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("id: ", task.id(), "\n"))) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "queue: opts\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "type: resize\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "state: READY\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "priority: 7\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "failures: 0/5\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "payload: payload\n")) << r;

  // The same idempotency key returns the original task; nothing new is queued.
  r = Cli({"submit", "--queue", "opts", "--type", "resize", "--idempotency-key", "key-1", "x"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, absl::StrCat(task.id(), "\n"));
  EXPECT_TRUE(absl::StrContains(r.err, "idempotency key matched")) << r;
  r = Cli({"list", "--queue", "opts", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(ParseJson<v1::ListTasksResponse>(r.out).tasks_size(), 1);
}

TEST_F(CliE2eTest, DelayedTaskIsScheduled) {
  const std::string id = Submit({"--queue", "later", "--type", "t", "--delay", "1h"});
  v1::Task task = GetTaskJson(id);
  EXPECT_EQ(task.state(), v1::TASK_STATE_SCHEDULED);
  CommandResult r = Cli({"list", "--queue", "later", "--state", "scheduled"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, id)) << r;
}

TEST_F(CliE2eTest, ListFiltersByStateAndFollowsPagesUpToTheLimit) {
  // 1,005 tasks: listing more than 1,000 needs a second page.
  for (int batch = 0; batch < 2; ++batch) {
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < (batch == 0 ? 1000 : 5); ++i) {
      v1::TaskSpec spec;
      spec.set_queue("many");
      spec.set_type("t");
      specs.push_back(spec);
    }
    absl::StatusOr<v1::SubmitBatchResponse> r = client_->SubmitBatch(specs);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& item : r->items())
      ASSERT_EQ(item.status().code(), 0) << item.status().message();
  }

  CommandResult r = Cli({"list", "--queue", "many", "--limit", "3"});
  ASSERT_EQ(r.code, 0) << r;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << r;  // header + 3
  EXPECT_TRUE(absl::StartsWith(lines[0], "ID")) << r;
  EXPECT_TRUE(absl::StrContains(lines[1], "READY")) << r;

  r = Cli({"list", "--queue", "many", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(ParseJson<v1::ListTasksResponse>(r.out).tasks_size(), 100) << "default limit";

  r = Cli({"list", "--queue", "many", "--state", "ready", "--limit", "1003", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::ListTasksResponse listed = ParseJson<v1::ListTasksResponse>(r.out);
  ASSERT_EQ(listed.tasks_size(), 1003);
  for (int i = 1; i < listed.tasks_size(); ++i) {
    ASSERT_LT(listed.tasks(i - 1).id(), listed.tasks(i).id()) << "id order, no repeats";
  }
  r = Cli({"list", "--queue", "many", "--state", "ready", "--limit", "5000", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ParseJson<v1::ListTasksResponse>(r.out).tasks_size(), 1005);

  r = Cli({"list", "--queue", "many", "--state", "running", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(ParseJson<v1::ListTasksResponse>(r.out).tasks_size(), 0);

  r = Cli({"list", "--queue", "many", "--state", "sleeping"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  r = Cli({"list"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
}

TEST_F(CliE2eTest, QueueAdministrationThroughTheCli) {
  CommandResult r = Cli({"queue", "create", "jobs", "--capacity", "5", "--max-attempts", "4",
                         "--lease-duration", "45s", "--full-policy", "reject"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "name: jobs\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "capacity: 5\n")) << r;

  r = Cli({"queue", "create", "jobs"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "queue create: ALREADY_EXISTS")) << r;

  r = Cli({"queue", "get", "jobs", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  v1::Queue queue = ParseJson<v1::Queue>(r.out);
  EXPECT_EQ(queue.config().capacity(), 5u);
  EXPECT_EQ(queue.config().retry().max_attempts(), 4u);
  EXPECT_EQ(FromProto(queue.config().lease_duration()), absl::Seconds(45));
  EXPECT_FALSE(queue.paused());

  r = Cli({"queue", "update", "jobs", "--capacity", "7", "--initial-backoff", "3s"});
  ASSERT_EQ(r.code, 0) << r;
  r = Cli({"queue", "get", "jobs", "-o", "json"});
  queue = ParseJson<v1::Queue>(r.out);
  EXPECT_EQ(queue.config().capacity(), 7u);
  EXPECT_EQ(FromProto(queue.config().retry().initial_backoff()), absl::Seconds(3));
  EXPECT_EQ(queue.config().retry().max_attempts(), 4u) << "retry flags merge, not replace";
  EXPECT_EQ(FromProto(queue.config().lease_duration()), absl::Seconds(45));

  r = Cli({"queue", "update", "jobs"});
  EXPECT_EQ(r.code, EX_USAGE) << r;

  r = Cli({"queue", "pause", "jobs"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "paused: true\n")) << r;
  r = Cli({"queue", "list"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StartsWith(r.out, "NAME")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\njobs ")) << r;
  r = Cli({"queue", "resume", "jobs", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_FALSE(ParseJson<v1::Queue>(r.out).paused());
  r = Cli({"queue", "update", "jobs", "--paused"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "paused: true\n")) << r;

  r = Cli({"queue", "list", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  v1::ListQueuesResponse queues = ParseJson<v1::ListQueuesResponse>(r.out);
  ASSERT_EQ(queues.queues_size(), 1);
  EXPECT_EQ(queues.queues(0).config().name(), "jobs");

  Submit({"--queue", "jobs", "--type", "t", "a"});
  Submit({"--queue", "jobs", "--type", "t", "b"});
  r = Cli({"queue", "purge", "jobs"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--yes")) << r;
  r = Cli({"queue", "purge", "jobs", "--yes"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "purged 2\n");
  r = Cli({"queue", "purge", "jobs", "--yes", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\"purged\"")) << r;

  r = Cli({"queue", "get", "nope"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "queue get: NOT_FOUND")) << r;
}

TEST_F(CliE2eTest, FullQueueExitsTempFail) {
  CommandResult r = Cli({"queue", "create", "small", "--capacity", "2"});
  ASSERT_EQ(r.code, 0) << r;
  Submit({"--queue", "small", "--type", "t", "1"});
  Submit({"--queue", "small", "--type", "t", "2"});
  r = Cli({"submit", "--queue", "small", "--type", "t", "3"});
  EXPECT_EQ(r.code, EX_TEMPFAIL) << r;
  EXPECT_TRUE(absl::StartsWith(r.err, "conveyor: submit: RESOURCE_EXHAUSTED: ")) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "small")) << r;
  EXPECT_EQ(r.out, "");
}

TEST_F(CliE2eTest, BadRequestsMapToSysexitsCodes) {
  // Rejected by the CLI itself: a usage error.
  CommandResult r = Cli({"submit", "--queue", "q", "--type", "t", "--priority", "12", "x"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--priority must be 0-9")) << r;
  // The broker's own answer to the same request: INVALID_ARGUMENT, exit 65.
  v1::TaskSpec spec;
  spec.set_queue("q");
  spec.set_type("t");
  spec.set_priority(12);
  absl::StatusOr<v1::SubmitResponse> submitted = client_->Submit(spec);
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument) << submitted.status();
  EXPECT_EQ(ExitCodeFor(submitted.status()), EX_DATAERR);

  // Broker-side INVALID_ARGUMENT through the CLI: a malformed queue name.
  r = Cli({"submit", "--queue", "bad name!", "--type", "t", "x"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "submit: INVALID_ARGUMENT")) << r;

  r = Cli({"get", "0123456789abcdef"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "get: NOT_FOUND")) << r;
  r = Cli({"get", "not-an-id"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "get: INVALID_ARGUMENT")) << r;

  r = Cli({"frobnicate"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "unknown command")) << r;
  r = Cli({"get", "--bogus", "x"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "Usage: conveyor get")) << r;
  r = Cli({"queue", "get", "--help"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StartsWith(r.out, "Usage: conveyor queue get NAME")) << r;
  EXPECT_EQ(r.err, "");
}

TEST_F(CliE2eTest, CancelEndsAQueuedTaskOnce) {
  const std::string id = Submit({"--queue", "c", "--type", "t"});
  CommandResult r = Cli({"cancel", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "state: CANCELED\n")) << r;
  r = Cli({"cancel", id});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "cancel: FAILED_PRECONDITION")) << r;
  // Watching an ended task shows its end at once; canceled is not success.
  r = Cli({"watch", id});
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "CANCELED")) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "ended CANCELED")) << r;
}

TEST_F(CliE2eTest, LeasedTaskIsWatchedToSuccess) {
  const std::string id = Submit({"--queue", "work", "--type", "t", "in"});
  const v1::LeasedTask leased = LeaseOne("work");
  ASSERT_EQ(leased.id(), id);

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("e2e-worker");
  v1::HeartbeatRequest::Item* item = heartbeat.add_items();
  item->set_id(id);
  item->set_token(leased.token());
  item->set_progress_percent(50);
  item->set_progress_message("halfway");
  ASSERT_TRUE(client_->Heartbeat(heartbeat).ok());

  CommandResult r = Cli({"get", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "state: RUNNING\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "worker: e2e-worker\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "progress: 50% halfway\n")) << r;

  // Not a terminal: one plain line per change, the current state first.
  BackgroundCli text_watch(dir_.path(), {absl::StrCat("--addr=", addr_), "watch", id});
  ASSERT_TRUE(text_watch.WaitForOutput("\n")) << text_watch.Finish();
  Complete(leased, "done");
  CommandResult watched = text_watch.Finish();
  EXPECT_EQ(watched.code, 0) << watched;
  std::vector<std::string> changes = absl::StrSplit(watched.out, '\n', absl::SkipEmpty());
  ASSERT_GE(changes.size(), 2u) << watched;
  EXPECT_EQ(changes.front(), absl::StrCat(id, " RUNNING attempt 1/3 50% halfway")) << watched;
  EXPECT_TRUE(absl::StartsWith(changes.back(), absl::StrCat(id, " SUCCEEDED"))) << watched;

  r = Cli({"watch", id, "-o", "json"});
  EXPECT_EQ(r.code, 0) << r;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty()) << r;
  EXPECT_EQ(ParseJson<v1::Task>(lines.back()).state(), v1::TASK_STATE_SUCCEEDED);

  v1::Task task = GetTaskJson(id);
  EXPECT_EQ(task.state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(task.result(), "done");
  r = Cli({"get", id});
  EXPECT_TRUE(absl::StrContains(r.out, "result: done\n")) << r;
}

TEST_F(CliE2eTest, SubmitWaitPrintsTheResult) {
  BackgroundCli waiting(dir_.path(), {absl::StrCat("--addr=", addr_), "submit", "--queue", "waited",
                                      "--type", "t", "--wait", "question"});
  const v1::LeasedTask leased = LeaseOne("waited");
  EXPECT_EQ(leased.payload(), "question");
  Complete(leased, "answer 42");
  CommandResult r = waiting.Finish();
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "answer 42");
}

TEST_F(CliE2eTest, SubmitWaitExitsOneWhenTheTaskDies) {
  BackgroundCli waiting(dir_.path(), {absl::StrCat("--addr=", addr_), "submit", "--queue", "doomed",
                                      "--type", "t", "--wait"});
  const v1::LeasedTask leased = LeaseOne("doomed");
  FailPermanently(leased, "disk on fire");
  CommandResult r = waiting.Finish();
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(absl::StrContains(r.err, "ended DEAD: disk on fire")) << r;
}

// No worker serves the queue: the wait gives up at --deadline with exit 75,
// naming the task, which keeps waiting on the broker.
TEST_F(CliE2eTest, SubmitWaitAndWatchGiveUpAtTheirDeadline) {
  const absl::Time start = absl::Now();
  CommandResult r = Cli({"submit", "--queue", "unserved", "--type", "t", "--wait", "--deadline",
                         "500ms", "p"});
  EXPECT_EQ(r.code, EX_TEMPFAIL) << r;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_TRUE(absl::StrContains(r.err, "submit: gave up after 500ms (--deadline); task ")) << r;
  EXPECT_TRUE(absl::StrContains(r.err, " is READY and keeps going")) << r;
  EXPECT_EQ(r.out, "");

  const std::string id = Submit({"--queue", "unserved", "--type", "t", "q"});
  r = Cli({"watch", id, "--deadline", "300ms"});
  EXPECT_EQ(r.code, EX_TEMPFAIL) << r;
  EXPECT_TRUE(absl::StrContains(
      r.err, absl::StrCat("watch: gave up after 300ms (--deadline); task ", id, " is READY")))
      << r;
  r = Cli({"get", id});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "READY")) << r;

  // --deadline bounds --wait only, and must be positive.
  r = Cli({"submit", "--queue", "unserved", "--type", "t", "--deadline", "1s", "x"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--deadline bounds --wait")) << r;
  r = Cli({"watch", id, "--deadline", "0s"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--deadline must be a positive duration")) << r;
}

TEST_F(CliE2eTest, DeadLettersAreListedRequeuedAndPurged) {
  const std::string id = Submit({"--queue", "dl", "--type", "t", "--max-attempts", "1"});
  FailPermanently(LeaseOne("dl"), "boom");

  CommandResult r = Cli({"get", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "state: DEAD\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "error: boom\n")) << r;

  r = Cli({"dead", "list", "dl"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, id)) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "boom")) << r;
  r = Cli({"dead", "list", "dl", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  v1::ListDeadLettersResponse dead = ParseJson<v1::ListDeadLettersResponse>(r.out);
  ASSERT_EQ(dead.tasks_size(), 1);
  EXPECT_EQ(dead.tasks(0).id(), id);

  r = Cli({"dead", "requeue", "dl", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "requeued 1\n");
  EXPECT_EQ(GetTaskJson(id).state(), v1::TASK_STATE_READY);
  r = Cli({"dead", "list", "dl", "-o", "json"});
  EXPECT_EQ(ParseJson<v1::ListDeadLettersResponse>(r.out).tasks_size(), 0);

  // Dead again; then requeue-all and purge-all.
  FailPermanently(LeaseOne("dl"), "boom again");
  r = Cli({"dead", "requeue", "dl", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\"requeued\"")) << r;
  EXPECT_EQ(GetTaskJson(id).state(), v1::TASK_STATE_READY);
  FailPermanently(LeaseOne("dl"), "boom thrice");

  r = Cli({"dead", "purge", "dl"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--yes")) << r;
  r = Cli({"dead", "purge", "dl", "--yes"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "purged 1\n");
  r = Cli({"dead", "list", "dl"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_FALSE(absl::StrContains(r.out, id)) << r;
}

TEST_F(CliE2eTest, CancelOfARunningTaskReachesItsWorkerAndIsNotRetried) {
  const std::string id = Submit({"--queue", "rc", "--type", "t"});
  const v1::LeasedTask leased = LeaseOne("rc");
  CommandResult r = Cli({"cancel", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "state: RUNNING\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "cancel_requested: true\n")) << r;

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("e2e-worker");
  v1::HeartbeatRequest::Item* item = heartbeat.add_items();
  item->set_id(id);
  item->set_token(leased.token());
  item->set_progress_percent(-1);
  absl::StatusOr<v1::HeartbeatResponse> answer = client_->Heartbeat(heartbeat);
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->items_size(), 1);
  EXPECT_TRUE(answer->items(0).cancel());

  v1::FailRequest fail;
  v1::FailRequest::Item* failed = fail.add_items();
  failed->set_id(id);
  failed->set_token(leased.token());
  failed->set_error("stopped: canceled");
  failed->set_retryable(true);
  ASSERT_TRUE(client_->Fail(fail).ok());
  EXPECT_EQ(GetTaskJson(id).state(), v1::TASK_STATE_CANCELED);
}

TEST_F(CliE2eTest, TaskNotLeasedBeforeItsExpiryEndsExpired) {
  const std::string id = Submit({"--queue", "exp", "--type", "t", "--expires-in", "200ms"});
  CommandResult r = Cli({"watch", id});
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat(id, " EXPIRED"))) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "watch: task " + id + " ended EXPIRED")) << r;
}


// ─── durability (--data-dir) ───

using ::testing::HasSubstr;

TEST_F(CliE2eTest, AcknowledgedSubmitsAndResultsSurviveKill9) {
  client_.reset();
  ASSERT_EQ(StopBroker(), 0);
  const std::string data = (dir_.path() / "data").string();
  StartBroker({absl::StrCat("--data-dir=", data)});
  ASSERT_TRUE(Cli({"queue", "create", "durable", "--capacity", "500", "--max-attempts", "2"})
                  .code == 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    v1::TaskSpec spec;
    spec.set_queue("durable");
    spec.set_type("t");
    spec.set_payload(absl::StrCat("payload-", i));
    absl::StatusOr<v1::SubmitResponse> r = client_->Submit(spec);
    ASSERT_TRUE(r.ok()) << r.status();
    ids.push_back(r->task().id());
  }
  v1::LeaseRequest lease;
  lease.set_worker_id("e2e");
  lease.add_queues("durable");
  lease.set_max_tasks(1);
  absl::StatusOr<v1::LeaseResponse> leased = client_->Lease(lease);
  ASSERT_TRUE(leased.ok() && leased->tasks_size() == 1);
  v1::CompleteRequest complete;
  auto* item = complete.add_items();
  item->set_id(leased->tasks(0).id());
  item->set_token(leased->tasks(0).token());
  item->set_result("kept");
  absl::StatusOr<v1::CompleteResponse> done = client_->Complete(complete);
  ASSERT_TRUE(done.ok() && done->items(0).code() == 0);

  client_.reset();
  broker_->Signal(SIGKILL);
  broker_->WaitOrKill(kStopTimeout);
  StartBroker({absl::StrCat("--data-dir=", data)});

  CommandResult q = Cli({"-o", "json", "queue", "get", "durable"});
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_THAT(q.out, HasSubstr("\"ready\":\"99\""));
  EXPECT_THAT(q.out, HasSubstr("\"succeeded\":\"1\""));
  EXPECT_THAT(q.out, HasSubstr("\"capacity\":\"500\""));
  CommandResult got = Cli({"get", leased->tasks(0).id()});
  ASSERT_EQ(got.code, 0) << got.err;
  EXPECT_THAT(got.out, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(got.out, HasSubstr("kept"));
  CommandResult last = Cli({"get", ids.back()});
  ASSERT_EQ(last.code, 0) << last.err;
  EXPECT_THAT(last.out, HasSubstr("payload-99"));
}

TEST_F(CliE2eTest, CorruptionBeforeTheTailRefusesToStartNamingFileAndOffset) {
  client_.reset();
  ASSERT_EQ(StopBroker(), 0);
  const fs::path data = dir_.path() / "data";
  StartBroker({absl::StrCat("--data-dir=", data.string())});
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(Cli({"submit", "--queue", "q", "--type", "t", absl::StrCat("p", i)}).code, 0);
  }
  client_.reset();
  ASSERT_EQ(StopBroker(), 0);
  // Damage a byte early in the first segment: valid records follow it, so
  // this is corruption, not a torn tail.
  fs::path segment;
  for (const auto& entry : fs::directory_iterator(data)) {
    if (entry.path().extension() == ".log") segment = entry.path();
  }
  ASSERT_FALSE(segment.empty());
  {
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(100);
    byte = static_cast<char>(byte ^ 0x5a);
    f.write(&byte, 1);
  }
  Process broker(SuiteProcess(dir_.path(), "b2"));
  WriteFile(dir_.path() / "b2.in", "");
  ASSERT_TRUE(broker.Start({CONVEYORD_PATH, "--listen=127.0.0.1:0", "--metrics-addr=",
                            absl::StrCat("--data-dir=", data.string())}));
  const int code = broker.WaitOrKill(kStopTimeout);
  EXPECT_EQ(code, 65);
  const std::string err = ReadFileOrEmpty(dir_.path() / "b2.err");
  EXPECT_THAT(err, HasSubstr(segment.filename().string()));
  EXPECT_THAT(err, HasSubstr("offset"));
  // Nothing was served: the test's own broker is gone too.
  broker_.reset();
}

}  // namespace
}  // namespace conveyor::client
