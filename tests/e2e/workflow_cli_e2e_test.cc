// End-to-end: workflows through the real binaries — `conveyor map`, `group`,
// `submit --then` / `chain`, `schedule` — against the real `conveyord`, with
// real `conveyor-worker` processes running built-in handlers (echo,
// sum_squares) or an --exec command.
//
// Each test starts its own broker on 127.0.0.1:0 (--port-file) and the
// workers it needs, runs CLI processes (stdin from a file, stdout and stderr
// to files, each bounded by a timeout), and at the end stops the workers and
// the broker with SIGTERM, checking that the broker exits 0.
//
// sum_squares turns payload n into the sum of i*i for i < n, so a result
// differs from its item and tells which item it came from; a non-numeric
// payload is a permanent failure (DEAD at once). Workers run several tasks at
// once, so tasks end out of input order.
//
// No fixed ports except one: MapOutlastsABrokerRestart restarts the broker on
// the port it had, so that the running `conveyor map` finds it again. No
// sleeps as synchronization: every wait is a bounded poll.
#include <signal.h>
#include <sysexits.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif
#ifndef CONVEYOR_CLI_PATH
#error "CONVEYOR_CLI_PATH must name the conveyor binary"
#endif
#ifndef CONVEYOR_WORKER_PATH
#error "CONVEYOR_WORKER_PATH must name the conveyor-worker binary"
#endif

namespace conveyor::client {
namespace {

namespace fs = std::filesystem;
using e2e::CommandResult;
using e2e::Process;
using e2e::ReadFileOrEmpty;
using e2e::WriteFile;

constexpr absl::Duration kCliTimeout = absl::Seconds(120);
constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
constexpr absl::Duration kWaitTimeout = absl::Seconds(60);
constexpr absl::Duration kPoll = absl::Milliseconds(20);

// sum of i*i for i < n.
uint64_t SumSquares(uint64_t n) { return n < 2 ? 0 : (n - 1) * n * (2 * n - 1) / 6; }

std::vector<std::string> Lines(const std::string& text) {
  if (text.empty()) return {};
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (lines.back().empty()) lines.pop_back();
  return lines;
}

template <typename Message>
Message ParseJson(const std::string& json) {
  Message message;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return message;
}

class WorkflowCliE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    StartBroker();
  }

  void TearDown() override {
    // Idle client connections would hold the broker's shutdown: close first.
    client_.reset();
    for (auto& worker : workers_) {
      worker->Signal(SIGTERM);
      worker->WaitOrKill(kStopTimeout);
    }
    if (broker_ != nullptr && broker_->unreaped()) {
      EXPECT_EQ(StopBroker(), 0) << "conveyord must drain and exit 0 on SIGTERM";
    }
    if (HasFailure()) {
      std::cerr << "--- conveyord log ---\n" << ReadFileOrEmpty(dir_.path() / "broker.log") << "\n";
      for (const auto& worker : workers_) {
        std::cerr << "--- " << worker->log_path().filename().string() << " ---\n"
                  << worker->log() << "\n";
      }
    }
    workers_.clear();
  }

  // Starts conveyord on 127.0.0.1:`port` (0: the kernel picks) with `extra`
  // flags, its output appended to broker.log.
  void StartBroker(const std::vector<std::string>& extra = {}, int port = 0) {
    const fs::path port_file = dir_.path() / "broker.port";
    fs::remove(port_file);
    broker_ = std::make_unique<Process>(e2e::Stdio::Log(dir_.path() / "broker.log"));
    std::vector<std::string> argv = e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file);
    if (port != 0) {
      for (std::string& arg : argv) {
        if (arg == "--listen=127.0.0.1:0") arg = absl::StrCat("--listen=127.0.0.1:", port);
      }
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_TRUE(broker_->Start(argv));
    port_ = e2e::WaitForPortFile(port_file, *broker_, kStartTimeout);
    ASSERT_GT(port_, 0) << "conveyord did not start:\n" << broker_->log();
    addr_ = e2e::LoopbackAddress(port_);
    ClientOptions options;
    options.address = addr_;
    options.timeout = absl::Seconds(30);
    client_ = std::make_unique<Client>(options);
  }

  int StopBroker() {
    client_.reset();
    broker_->Signal(SIGTERM);
    return broker_->WaitOrKill(kStopTimeout);
  }

  // A conveyor-worker serving `queue` with the built-in handlers, running up
  // to 8 tasks at once.
  void StartWorker(const std::string& queue, const std::vector<std::string>& extra = {}) {
    const std::string name = absl::StrCat("worker-", workers_.size());
    workers_.push_back(std::make_unique<Process>(
        e2e::ProcessOptions{.stdio = e2e::Stdio::Log(dir_.path() / (name + ".log")),
                            .kill_child_groups = true}));
    std::vector<std::string> argv = {CONVEYOR_WORKER_PATH,
                                     absl::StrCat("--broker=", addr_),
                                     absl::StrCat("--queue=", queue),
                                     "--concurrency=8",
                                     "--metrics-addr=",
                                     absl::StrCat("--worker-id=", name)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_TRUE(workers_.back()->Start(argv));
  }

  e2e::ProcessOptions CliProcess(const std::string& stem) {
    return {.stdio = e2e::Stdio::Files(dir_.path() / (stem + ".in"), dir_.path() / (stem + ".out"),
                                       dir_.path() / (stem + ".err")),
            .unset_env_prefixes = {"CONVEYOR_"}};
  }

  std::vector<std::string> CliArgv(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {CONVEYOR_CLI_PATH, absl::StrCat("--addr=", addr_)};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  // Runs `conveyor --addr=<broker> ARGS` with `stdin_data` on stdin.
  CommandResult Cli(const std::vector<std::string>& args, absl::string_view stdin_data = "") {
    WriteFile(dir_.path() / "cli.in", stdin_data);
    Process process(CliProcess("cli"));
    if (!process.Start(CliArgv(args))) return CommandResult();
    CommandResult r = process.Finish(kCliTimeout);
    EXPECT_NE(r.code, -1) << "conveyor " << absl::StrJoin(args, " ") << " timed out";
    return r;
  }

  // The single id a command printed (submit, group submit).
  std::string IdFrom(const CommandResult& r) {
    EXPECT_EQ(r.code, 0) << r;
    std::string id(absl::StripTrailingAsciiWhitespace(r.out));
    EXPECT_EQ(id.size(), 16u) << r;
    return id;
  }

  fs::path WriteItems(const std::string& name, const std::vector<std::string>& items) {
    const fs::path path = dir_.path() / name;
    WriteFile(path, absl::StrCat(absl::StrJoin(items, "\n"), "\n"));
    return path;
  }

  v1::Task GetTask(const std::string& id) {
    CommandResult r = Cli({"get", id, "-o", "json"});
    EXPECT_EQ(r.code, 0) << r;
    return ParseJson<v1::Task>(r.out);
  }

  // Polls `conveyor chain get ID -o json` until the chain is no longer
  // RUNNING (bounded); returns the last seen.
  v1::Chain WaitForChainEnd(const std::string& id) {
    const absl::Time deadline = absl::Now() + kWaitTimeout;
    v1::Chain chain;
    while (absl::Now() < deadline) {
      CommandResult r = Cli({"chain", "get", id, "-o", "json"});
      EXPECT_EQ(r.code, 0) << r;
      if (r.code != 0) break;
      chain = ParseJson<v1::Chain>(r.out);
      if (chain.state() != v1::CHAIN_STATE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return chain;
  }

  e2e::TempDir dir_{"conveyor-workflow-e2e"};
  std::unique_ptr<Process> broker_;
  std::vector<std::unique_ptr<Process>> workers_;
  int port_ = 0;
  std::string addr_;
  std::unique_ptr<Client> client_;
};

// ─── map ───

TEST_F(WorkflowCliE2eTest, MapPrintsTwoHundredResultsInInputOrder) {
  StartWorker("squares");
  // Each result differs from its item and says which item it came from.
  std::vector<std::string> items;
  for (int i = 0; i < 200; ++i) items.push_back(absl::StrCat(1000 - i * 5));
  const fs::path input = WriteItems("items.txt", items);
  CommandResult r =
      Cli({"map", "--queue", "squares", "--type", "sum_squares", "--input", input.string()});
  ASSERT_EQ(r.code, 0) << r;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 200u) << r;
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(lines[i], absl::StrCat(SumSquares(1000 - i * 5))) << "line " << i;
  }
  // Not a terminal: plain progress lines on stderr, the last one complete.
  EXPECT_TRUE(absl::StrContains(r.err, "conveyor: map: ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, " DONE 200/200 ended")) << r.err;

  // The same items from stdin, as JSON lines.
  r = Cli({"map", "--queue", "squares", "--type", "sum_squares", "-o", "json"},
          absl::StrCat(absl::StrJoin(items, "\n"), "\n"));
  ASSERT_EQ(r.code, 0) << r;
  const std::vector<std::string> json = Lines(r.out);
  ASSERT_EQ(json.size(), 200u) << r;
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) {
    const v1::GroupMember member = ParseJson<v1::GroupMember>(json[i]);
    EXPECT_EQ(member.index(), static_cast<uint32_t>(i));
    EXPECT_EQ(member.state(), v1::TASK_STATE_SUCCEEDED);
    EXPECT_EQ(member.result(), absl::StrCat(SumSquares(1000 - i * 5)));
    EXPECT_EQ(member.task_id().size(), 16u);
    ids.push_back(member.task_id());
  }
  // Each item is a task of its own, and a member of the map's group.
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());
  const v1::Task task = GetTask(ids[0]);
  EXPECT_EQ(task.type(), "sum_squares");
  EXPECT_EQ(task.group_id().size(), 16u);
  r = Cli({"get", ids[0]});
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("\ngroup: ", task.group_id(), "\n"))) << r;
}

TEST_F(WorkflowCliE2eTest, MapTakesAJsonArrayAndKeepsEveryItemsBytes) {
  StartWorker("echoes");
  const std::vector<std::string> items = {"plain", "two words", "", "caf\xc3\xa9",
                                          "tab\there", "[not json]"};
  CommandResult r = Cli({"map", "--queue", "echoes", "--type", "echo", "--json-array", "-o", "json"},
                        R"(["plain", "two words", "", "caf\u00e9", "tab\there", "[not json]"])");
  ASSERT_EQ(r.code, 0) << r;
  const std::vector<std::string> json = Lines(r.out);
  ASSERT_EQ(json.size(), items.size()) << r;
  for (size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(ParseJson<v1::GroupMember>(json[i]).result(), items[i]) << i;
  }
  // Text: one line per item, control characters escaped, the empty result
  // an empty line.
  r = Cli({"map", "--queue", "echoes", "--type", "echo", "--json-array"},
          R"(["plain", "", "tab\there", "line\nbreak"])");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "plain\n\ntab\\there\nline\\nbreak\n");
  // Without --json-array, a JSON array is just a line.
  r = Cli({"map", "--queue", "echoes", "--type", "echo"}, "[\"a\", \"b\"]\n");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "[\"a\", \"b\"]\n");
}

TEST_F(WorkflowCliE2eTest, MapReportsEachFailedItemAndExitsOne) {
  StartWorker("mixed");
  const fs::path input = WriteItems("mixed.txt", {"3", "three", "5", "", "10"});
  CommandResult r = Cli({"map", "--queue", "mixed", "--type", "sum_squares", "--max-attempts", "1",
                         "--input", input.string()});
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_EQ(r.out, "5\n\n30\n\n285\n") << "a failed item is an empty line, in its place";
  EXPECT_TRUE(absl::StrContains(r.err, "conveyor: map: item 1 (task ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, ") ended DEAD: ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "sum_squares: payload \"three\"")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "conveyor: map: item 3 (task ")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, "item 0 ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "conveyor: map: 2 of 5 items did not succeed (group "))
      << r.err;

  // JSON lines carry the state and error of every item.
  r = Cli({"map", "--queue", "mixed", "--type", "sum_squares", "--max-attempts", "1", "--input",
           input.string(), "-o", "json"});
  EXPECT_EQ(r.code, 1) << r;
  const std::vector<std::string> json = Lines(r.out);
  ASSERT_EQ(json.size(), 5u) << r;
  const v1::GroupMember failed = ParseJson<v1::GroupMember>(json[1]);
  EXPECT_EQ(failed.state(), v1::TASK_STATE_DEAD);
  EXPECT_TRUE(absl::StrContains(failed.error(), "\"three\"")) << failed.error();
  EXPECT_EQ(ParseJson<v1::GroupMember>(json[2]).result(), "30");

  // With a fallback, failed items fall back: a success, exit 0.
  r = Cli({"map", "--queue", "mixed", "--type", "sum_squares", "--max-attempts", "1",
           "--fallback", "n/a", "--input", input.string()});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "5\nn/a\n30\nn/a\n285\n");
}

TEST_F(WorkflowCliE2eTest, MapInputProblemsAreReportedAndNothingIsSubmitted) {
  CommandResult r = Cli({"map", "--queue", "never", "--type", "echo", "--json-array"},
                        "[\"a\", 2]");
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "element 1 is a number, not a string")) << r;
  r = Cli({"map", "--queue", "never", "--type", "echo", "--json-array"}, "[\"a\"");
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  r = Cli({"map", "--queue", "never", "--type", "echo", "--input",
           (dir_.path() / "missing.txt").string()});
  EXPECT_EQ(r.code, EX_NOINPUT) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--input")) << r;
  r = Cli({"map", "--type", "echo"}, "a\n");
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--queue is required")) << r;
  r = Cli({"map", "--queue", "never", "--type", "echo", "--priority", "10"}, "a\n");
  EXPECT_EQ(r.code, EX_USAGE) << r;
  r = Cli({"map", "--queue", "never", "--type", "echo"}, "");
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(absl::StrContains(r.err, "no items")) << r;
  // The broker's own verdict on a bad group: exit 65.
  r = Cli({"map", "--queue", "bad name!", "--type", "echo"}, "a\n");
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "map: INVALID_ARGUMENT")) << r;
  // No queue was ever created: nothing was submitted.
  r = Cli({"queue", "list", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(ParseJson<v1::ListQueuesResponse>(r.out).queues_size(), 0) << r;
}

TEST_F(WorkflowCliE2eTest, MapOutlastsABrokerRestart) {
  ASSERT_EQ(StopBroker(), 0);
  const std::vector<std::string> durable = {
      absl::StrCat("--data-dir=", (dir_.path() / "data").string())};
  StartBroker(durable);
  StartWorker("slow", {"--exec=slowupper=sleep 0.2; tr a-z A-Z", "--concurrency=2"});
  std::vector<std::string> items;
  for (int i = 0; i < 30; ++i) items.push_back(absl::StrCat("word", i));
  const fs::path input = WriteItems("words.txt", items);

  WriteFile(dir_.path() / "map.in", "");
  Process map(CliProcess("map"));
  ASSERT_TRUE(map.Start(CliArgv({"map", "--queue", "slow", "--type", "slowupper", "--input",
                                 input.string(), "--deadline", "3m"})));
  // The group id is on the first progress line; wait until some members ended.
  std::string group_id;
  const absl::Time deadline = absl::Now() + kWaitTimeout;
  while (absl::Now() < deadline && group_id.empty()) {
    const std::string err = ReadFileOrEmpty(dir_.path() / "map.err");
    if (size_t at = err.find("conveyor: map: "); at != std::string::npos && err.size() > at + 31) {
      group_id = err.substr(at + 15, 16);
    }
    ASSERT_FALSE(map.Poll()) << "map ended early: " << ReadFileOrEmpty(dir_.path() / "map.err");
    absl::SleepFor(kPoll);
  }
  ASSERT_EQ(group_id.size(), 16u) << ReadFileOrEmpty(dir_.path() / "map.err");
  v1::GetGroupRequest get;
  get.set_id(group_id);
  uint32_t ended = 0;
  while (absl::Now() < deadline && ended < 4) {
    absl::StatusOr<v1::Group> group = client_->GetGroup(get);
    ASSERT_TRUE(group.ok()) << group.status();
    ended = group->ended();
    absl::SleepFor(kPoll);
  }
  ASSERT_GE(ended, 4u);
  ASSERT_LT(ended, 30u) << "the map must still run when the broker stops";

  const int port = port_;
  ASSERT_EQ(StopBroker(), 0);
  EXPECT_FALSE(map.Poll()) << "the map waits for the broker: "
                           << ReadFileOrEmpty(dir_.path() / "map.err");
  StartBroker(durable, port);

  CommandResult r = map.Finish(kCliTimeout);
  ASSERT_EQ(r.code, 0) << r;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 30u) << r;
  for (int i = 0; i < 30; ++i) EXPECT_EQ(lines[i], absl::StrCat("WORD", i)) << i;
  EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat(group_id, " DONE 30/30 ended"))) << r.err;
}

// ─── groups ───

TEST_F(WorkflowCliE2eTest, GroupSubmitGetCancelAndWatchOfACanceledGroup) {
  // No worker serves "parked": the members wait.
  const fs::path input = WriteItems("parked.txt", {"a", "b", "c"});
  const std::string id = IdFrom(
      Cli({"group", "submit", "--queue", "parked", "--type", "echo", "--input", input.string()}));

  CommandResult r = Cli({"group", "get", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StartsWith(r.out, absl::StrCat("id: ", id, "\nstate: RUNNING\ntotal: 3\n")))
      << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nended: 0\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\ncallback: none\n")) << r;

  r = Cli({"group", "get", id, "--members", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  v1::Group group = ParseJson<v1::Group>(r.out);
  ASSERT_EQ(group.members_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(group.members(i).index(), static_cast<uint32_t>(i));
    EXPECT_EQ(group.members(i).state(), v1::TASK_STATE_READY);
  }
  const std::string member = group.members(1).task_id();
  v1::Task task = GetTask(member);
  EXPECT_EQ(task.payload(), "b");
  EXPECT_EQ(task.group_id(), id);

  r = Cli({"group", "cancel", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nstate: CANCELED\n")) << r;
  EXPECT_EQ(GetTask(member).state(), v1::TASK_STATE_CANCELED);

  // Watching a canceled group shows it at once; canceled is not success.
  r = Cli({"group", "watch", id});
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat(id, " CANCELED"))) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "was CANCELED")) << r;

  r = Cli({"group", "get", "0123456789abcdef"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "group get: NOT_FOUND")) << r;
  r = Cli({"group", "submit", "--queue", "parked", "--type", "echo"}, "");
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "no items")) << r;
  r = Cli({"group", "submit", "--queue", "parked", "--type", "echo", "--callback-queue", "x"},
          "a\n");
  EXPECT_EQ(r.code, EX_USAGE) << r;
}

TEST_F(WorkflowCliE2eTest, GroupWatchFollowsItToTheEndAndTheCallbackGetsTheResults) {
  StartWorker("served");
  const fs::path input = WriteItems("served.txt", {"4", "5", "6"});
  const std::string id = IdFrom(Cli({"group", "submit", "--queue", "served", "--type",
                                     "sum_squares", "--input", input.string(), "--callback-queue",
                                     "fanin", "--callback-type", "collect", "--callback-payload",
                                     "ctx-42"}));
  CommandResult r = Cli({"group", "watch", id});
  ASSERT_EQ(r.code, 0) << r;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_FALSE(lines.empty()) << r;
  EXPECT_EQ(lines.back(), absl::StrCat(id, " DONE 3/3 ended")) << r;

  r = Cli({"group", "get", id, "--results"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nstate: DONE\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nsucceeded: 3\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "INDEX  TASK")) << r;
  for (const char* result : {"  14  ", "  30  ", "  55  "}) {
    EXPECT_TRUE(absl::StrContains(r.out, result)) << result << "\n" << r;
  }

  // The callback was submitted once every member ended, with the results.
  r = Cli({"group", "get", id, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  const v1::Group group = ParseJson<v1::Group>(r.out);
  ASSERT_EQ(group.callback_task_id().size(), 16u) << r;
  const v1::Task callback = GetTask(group.callback_task_id());
  EXPECT_EQ(callback.queue(), "fanin");
  EXPECT_EQ(callback.type(), "collect");
  EXPECT_EQ(callback.group_id(), id);
  const v1::GroupResults results = ParseJson<v1::GroupResults>(callback.payload());
  EXPECT_EQ(results.group_id(), id);
  EXPECT_EQ(results.payload(), "ctx-42");
  EXPECT_EQ(results.total(), 3u);
  EXPECT_EQ(results.succeeded(), 3u);
  ASSERT_EQ(results.members_size(), 3);
  EXPECT_EQ(results.members(0).result(), "14");
  EXPECT_EQ(results.members(2).result(), "55");
  r = Cli({"get", group.callback_task_id()});
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("\ngroup: ", id, "\n"))) << r;

  // A member that fails makes the watch exit 1.
  const fs::path bad = WriteItems("bad.txt", {"4", "four"});
  const std::string failing = IdFrom(Cli({"group", "submit", "--queue", "served", "--type",
                                          "sum_squares", "--max-attempts", "1", "--input",
                                          bad.string()}));
  r = Cli({"group", "watch", failing, "-o", "json"});
  EXPECT_EQ(r.code, 1) << r;
  const std::vector<std::string> updates = Lines(r.out);
  ASSERT_FALSE(updates.empty()) << r;
  const v1::Group last = ParseJson<v1::Group>(updates.back());
  EXPECT_EQ(last.state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(last.dead(), 1u);
  EXPECT_TRUE(absl::StrContains(r.err, "1 of 2 members did not succeed")) << r;
  r = Cli({"group", "cancel", failing});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "group cancel: FAILED_PRECONDITION")) << r;
}

// ─── chains ───

TEST_F(WorkflowCliE2eTest, SubmitThenRunsAChainThatChainGetShows) {
  StartWorker("pipe");
  // 4 -> sum_squares 14 -> sum_squares 819 -> echo 819.
  const std::string id = IdFrom(Cli({"submit", "--queue", "pipe", "--type", "sum_squares",
                                     "--then", "queue=pipe,type=sum_squares,priority=5",
                                     "--then", "queue=pipe,type=echo,timeout=30s", "4"}));
  const v1::Chain chain = WaitForChainEnd(id);
  ASSERT_EQ(chain.state(), v1::CHAIN_STATE_SUCCEEDED) << chain.DebugString();
  EXPECT_EQ(chain.id(), id);
  EXPECT_EQ(chain.stages(), 3u);
  EXPECT_EQ(chain.result(), "819");
  ASSERT_EQ(chain.stage_list_size(), 3);
  EXPECT_EQ(chain.stage_list(0).task_id(), id);
  EXPECT_EQ(chain.stage_list(1).type(), "sum_squares");
  EXPECT_EQ(chain.stage_list(2).type(), "echo");
  for (const v1::Chain::Stage& stage : chain.stage_list()) {
    EXPECT_EQ(stage.state(), v1::TASK_STATE_SUCCEEDED) << stage.index();
  }

  CommandResult r = Cli({"chain", "get", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StartsWith(r.out, absl::StrCat("id: ", id, "\nstate: SUCCEEDED\nstages: 3\n")))
      << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nresult: 819\n")) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "STAGE  QUEUE  TYPE")) << r;

  // Each stage is a task that knows its chain and stage; the second got the
  // first's result as its payload.
  r = Cli({"get", id});
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("\nchain: ", id, " stage 0\n"))) << r;
  const v1::Task second = GetTask(chain.stage_list(1).task_id());
  EXPECT_EQ(second.payload(), "14");
  EXPECT_EQ(second.priority(), 5u);
  EXPECT_EQ(second.chain_id(), id);
  EXPECT_EQ(second.chain_stage(), 1u);
  const v1::Task third = GetTask(chain.stage_list(2).task_id());
  EXPECT_EQ(FromProto(third.timeout()), absl::Seconds(30));
  r = Cli({"get", chain.stage_list(2).task_id()});
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("\nchain: ", id, " stage 2\n"))) << r;

  // --wait waits for the whole chain and prints its result.
  r = Cli({"submit", "--queue", "pipe", "--type", "sum_squares", "--then",
           "queue=pipe,type=sum_squares", "--wait", "3"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "30");  // 3 -> 0+1+4 = 5 -> 0+1+4+9+16 = 30
}

TEST_F(WorkflowCliE2eTest, FailedCanceledAndMalformedChains) {
  StartWorker("pipe");
  // The first stage fails: the chain FAILED, later stages never submitted.
  CommandResult r = Cli({"submit", "--queue", "pipe", "--type", "sum_squares", "--max-attempts",
                         "1", "--then", "queue=pipe,type=echo", "--wait", "not-a-number"});
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(absl::StrContains(r.err, " ended FAILED at stage 0: ")) << r;

  // A chain whose first stage waits on an idle queue is canceled as a whole.
  const std::string id = IdFrom(Cli({"submit", "--queue", "idle", "--type", "echo", "--then",
                                     "queue=pipe,type=echo", "x"}));
  r = Cli({"chain", "cancel", id});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nstate: CANCELED\n")) << r;
  EXPECT_EQ(GetTask(id).state(), v1::TASK_STATE_CANCELED);
  const v1::Chain chain = WaitForChainEnd(id);
  EXPECT_EQ(chain.state(), v1::CHAIN_STATE_CANCELED);
  ASSERT_EQ(chain.stage_list_size(), 2);
  EXPECT_EQ(chain.stage_list(1).task_id(), "") << "a later stage is never submitted";

  r = Cli({"chain", "get", "0123456789abcdef"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;

  // Waiting for a chain whose first stage nobody serves gives up at --deadline.
  r = Cli({"submit", "--queue", "idle", "--type", "echo", "--then", "queue=pipe,type=echo",
           "--wait", "--deadline", "400ms", "y"});
  EXPECT_EQ(r.code, EX_TEMPFAIL) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "submit: gave up after 400ms (--deadline); chain ")) << r;
  EXPECT_TRUE(absl::StrContains(r.err, " is at stage 0 and keeps going")) << r;

  // Malformed stages are usage errors naming the problem; nothing is sent.
  r = Cli({"submit", "--queue", "pipe", "--type", "echo", "--then", "queue=pipe", "x"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--then #1 \"queue=pipe\": type is required")) << r;
  r = Cli({"submit", "--queue", "pipe", "--type", "echo", "--then", "queue=a,type=b", "--then",
           "queue=a,type=b,priority=12", "x"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--then #2")) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "priority must be 0-9")) << r;
}

// ─── schedules ───

TEST_F(WorkflowCliE2eTest, ScheduleCreateListPauseResumeAndDelete) {
  CommandResult r = Cli({"schedule", "create", "nightly", "--cron", "0 3 * * *", "--tz",
                         "Europe/Paris", "--misfire", "run-once", "--queue", "reports", "--type",
                         "build", "--payload", "full", "--priority", "3"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StartsWith(r.out, "name: nightly\ncron: 0 3 * * *\ntime_zone: Europe/Paris\n"
                                      "misfire: run-once\npaused: false\nqueue: reports\n"))
      << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\npriority: 3\npayload: full\n")) << r;

  r = Cli({"schedule", "create", "nightly", "--cron", "@daily", "--queue", "q", "--type", "t"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "schedule create: ALREADY_EXISTS")) << r;
  r = Cli({"schedule", "create", "badcron", "--cron", "61 * * * *", "--queue", "q", "--type", "t"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "schedule create: INVALID_ARGUMENT")) << r;
  r = Cli({"schedule", "create", "badzone", "--cron", "@daily", "--tz", "Mars/Olympus", "--queue",
           "q", "--type", "t"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  r = Cli({"schedule", "create", "badmisfire", "--cron", "@daily", "--misfire", "twice", "--queue",
           "q", "--type", "t"});
  EXPECT_EQ(r.code, EX_USAGE) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "--misfire must be skip or run-once")) << r;

  r = Cli({"schedule", "list"});
  ASSERT_EQ(r.code, 0) << r;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r;
  EXPECT_TRUE(absl::StartsWith(lines[0], "NAME")) << r;
  EXPECT_TRUE(absl::StartsWith(lines[1], "nightly  0 3 * * *  Europe/Paris  no ")) << r;

  r = Cli({"schedule", "pause", "nightly"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\npaused: true\n")) << r;
  r = Cli({"schedule", "list", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  v1::ListSchedulesResponse list = ParseJson<v1::ListSchedulesResponse>(r.out);
  ASSERT_EQ(list.schedules_size(), 1);
  EXPECT_TRUE(list.schedules(0).paused());
  EXPECT_EQ(list.schedules(0).task().payload(), "full");

  r = Cli({"schedule", "resume", "nightly", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r;
  const v1::Schedule resumed = ParseJson<v1::Schedule>(r.out);
  EXPECT_FALSE(resumed.paused());
  EXPECT_GT(FromProto(resumed.next_run_at()), absl::Now()) << "the next tick is in the future";
  EXPECT_EQ(resumed.misfire(), v1::MISFIRE_POLICY_RUN_ONCE);

  r = Cli({"schedule", "get", "nightly"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\nruns: 0\n")) << r;

  r = Cli({"schedule", "delete", "nightly"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "deleted nightly\n");
  r = Cli({"schedule", "get", "nightly"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  EXPECT_TRUE(absl::StrContains(r.err, "schedule get: NOT_FOUND")) << r;
  r = Cli({"schedule", "delete", "nightly"});
  EXPECT_EQ(r.code, EX_DATAERR) << r;
  r = Cli({"schedule", "list", "-o", "json"});
  EXPECT_EQ(ParseJson<v1::ListSchedulesResponse>(r.out).schedules_size(), 0) << r;
}

TEST_F(WorkflowCliE2eTest, AScheduleSubmitsATaskOnItsTickThatGetShows) {
  CommandResult r = Cli({"schedule", "create", "minutely", "--cron", "* * * * *", "--queue",
                         "ticks", "--type", "echo", "--payload", "tick"});
  ASSERT_EQ(r.code, 0) << r;
  // The next minute boundary is at most 60 s away.
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  v1::Schedule schedule;
  while (absl::Now() < deadline) {
    r = Cli({"schedule", "get", "minutely", "-o", "json"});
    ASSERT_EQ(r.code, 0) << r;
    schedule = ParseJson<v1::Schedule>(r.out);
    if (schedule.runs() > 0) break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  ASSERT_GE(schedule.runs(), 1u) << schedule.DebugString();
  ASSERT_EQ(schedule.last_task_id().size(), 16u) << schedule.DebugString();
  const v1::Task task = GetTask(schedule.last_task_id());
  EXPECT_EQ(task.payload(), "tick");
  EXPECT_EQ(task.schedule(), "minutely");
  r = Cli({"get", schedule.last_task_id()});
  EXPECT_TRUE(absl::StrContains(r.out, "\nschedule: minutely\n")) << r;
  ASSERT_EQ(Cli({"schedule", "delete", "minutely"}).code, 0);
}

}  // namespace
}  // namespace conveyor::client
