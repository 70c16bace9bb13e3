// End-to-end: workflows at scale and across crashes, with the real conveyord
// (with a data directory), real conveyor-worker processes and the client
// library.
//
//  - a group of 10,000 members fans in once, and its callback's GroupResults
//    lists every member in order with its result;
//  - conveyord killed with SIGKILL while a group runs: after a restart on the
//    same data directory the group finishes and its callback runs exactly
//    once;
//  - conveyord killed with SIGKILL while a chain runs: after a restart every
//    stage has exactly one task and the chain's result is the composition of
//    the stages.
//
// The callback is an --exec command that appends the payload it got to a
// file, one JSON document per line, so the test counts how many times it ran.
// The broker is restarted on the port it had, so that the running worker
// finds it again; every wait is a bounded poll.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif
#ifndef CONVEYOR_WORKER_PATH
#error "CONVEYOR_WORKER_PATH must name the conveyor-worker binary"
#endif

namespace conveyor::client {
namespace {

namespace fs = std::filesystem;
using e2e::Process;
using e2e::ReadFileOrEmpty;
using e2e::WriteFile;

constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
constexpr absl::Duration kWaitTimeout = absl::Seconds(120);

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  return lines;
}

class WorkflowCrashE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    fs::create_directories(dir_.path() / "data");
    // The callback: append the GroupResults document (one line) to a file.
    collect_ = dir_.path() / "collect.sh";
    ASSERT_TRUE(WriteFile(collect_, absl::StrCat("#!/bin/sh\n{ cat; echo; } >> '",
                                                 (dir_.path() / "callbacks").string(),
                                                 "'\necho collected\n")));
    fs::permissions(collect_, fs::perms::owner_all);
    StartBroker(0);
  }

  void TearDown() override {
    client_.reset();
    for (auto& worker : workers_) {
      worker->Signal(SIGTERM);
      worker->WaitOrKill(kStopTimeout);
    }
    if (broker_ != nullptr && broker_->unreaped()) {
      broker_->Signal(SIGTERM);
      EXPECT_EQ(broker_->WaitOrKill(kStopTimeout), 0) << "conveyord must drain and exit 0";
    }
    if (HasFailure()) {
      std::cerr << "--- conveyord log ---\n" << ReadFileOrEmpty(dir_.path() / "broker.log");
      for (const auto& w : workers_) std::cerr << "--- worker ---\n" << w->log();
    }
  }

  void StartBroker(int port) {
    const fs::path port_file = dir_.path() / "broker.port";
    fs::remove(port_file);
    broker_ = std::make_unique<Process>(e2e::Stdio::Log(dir_.path() / "broker.log"));
    std::vector<std::string> argv = e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file);
    if (port != 0) {
      for (std::string& arg : argv) {
        if (arg == "--listen=127.0.0.1:0") arg = absl::StrCat("--listen=127.0.0.1:", port);
      }
    }
    argv.push_back(absl::StrCat("--data-dir=", (dir_.path() / "data").string()));
    ASSERT_TRUE(broker_->Start(argv));
    port_ = e2e::WaitForPortFile(port_file, *broker_, kStartTimeout);
    ASSERT_GT(port_, 0) << "conveyord did not start:\n" << broker_->log();
    ClientOptions options;
    options.address = e2e::LoopbackAddress(port_);
    options.timeout = absl::Seconds(30);
    client_ = std::make_unique<Client>(options);
  }

  // SIGKILL, then a restart on the same port and data directory.
  void CrashAndRestart() {
    client_.reset();
    broker_->Kill();
    const int port = port_;
    StartBroker(port);
  }

  void StartWorker(const std::string& queues, int concurrency) {
    workers_.push_back(std::make_unique<Process>(e2e::ProcessOptions{
        .stdio = e2e::Stdio::Log(dir_.path() / absl::StrCat("worker-", workers_.size(), ".log")),
        .kill_child_groups = true}));
    ASSERT_TRUE(workers_.back()->Start(
        {CONVEYOR_WORKER_PATH, absl::StrCat("--broker=127.0.0.1:", port_),
         absl::StrCat("--queue=", queues), absl::StrCat("--concurrency=", concurrency),
         "--metrics-addr=", absl::StrCat("--exec=collect=", collect_.string()),
         "--exec=upper=tr a-z A-Z", "--exec=reverse=rev", "--exec=slowcat=sleep 0.05; cat"}));
  }

  // Polls GetGroup until the group is no longer RUNNING and has its callback.
  v1::Group WaitForGroup(const std::string& id) {
    const absl::Time deadline = absl::Now() + kWaitTimeout;
    v1::GetGroupRequest req;
    req.set_id(id);
    v1::Group group;
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::Group> g = client_->GetGroup(req);
      if (g.ok()) {
        group = *g;
        if (group.state() != v1::GROUP_STATE_RUNNING) break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return group;
  }

  // Polls the callback file until it has `n` lines (or the wait runs out).
  std::vector<std::string> WaitForCallbacks(size_t n) {
    const absl::Time deadline = absl::Now() + kWaitTimeout;
    std::vector<std::string> lines;
    while (absl::Now() < deadline) {
      lines = Lines(ReadFileOrEmpty(dir_.path() / "callbacks"));
      if (lines.size() >= n) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return lines;
  }

  e2e::TempDir dir_{"conveyor-workflow-crash"};
  fs::path collect_;
  std::unique_ptr<Process> broker_;
  std::vector<std::unique_ptr<Process>> workers_;
  int port_ = 0;
  std::unique_ptr<Client> client_;
};

v1::SubmitGroupRequest EchoGroup(int members, const std::string& queue, const std::string& type) {
  v1::SubmitGroupRequest req;
  for (int i = 0; i < members; ++i) {
    v1::TaskSpec* t = req.add_tasks();
    t->set_queue(queue);
    t->set_type(type);
    t->set_payload(absl::StrCat(i));
  }
  req.mutable_callback()->set_queue(queue);
  req.mutable_callback()->set_type("collect");
  req.mutable_callback()->set_payload("fan-in");
  return req;
}

TEST_F(WorkflowCrashE2eTest, AGroupOfTenThousandMembersFansInOnceWithEveryResultInOrder) {
  constexpr int kMembers = 10'000;
  absl::StatusOr<v1::SubmitGroupResponse> submitted =
      client_->SubmitGroup(EchoGroup(kMembers, "big", "echo"));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  ASSERT_EQ(submitted->task_ids_size(), kMembers);
  StartWorker("big", 32);

  v1::Group group = WaitForGroup(submitted->group().id());
  EXPECT_EQ(group.state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(group.total(), static_cast<uint32_t>(kMembers));
  EXPECT_EQ(group.succeeded(), static_cast<uint32_t>(kMembers));
  std::vector<std::string> callbacks = WaitForCallbacks(1);
  ASSERT_EQ(callbacks.size(), 1u);
  v1::GroupResults results;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(callbacks[0], &results).ok());
  EXPECT_EQ(results.group_id(), submitted->group().id());
  EXPECT_EQ(results.payload(), "fan-in");
  EXPECT_EQ(results.succeeded(), static_cast<uint32_t>(kMembers));
  EXPECT_FALSE(results.truncated());
  ASSERT_EQ(results.members_size(), kMembers);
  for (int i = 0; i < kMembers; ++i) {
    ASSERT_EQ(results.members(i).index(), static_cast<uint32_t>(i));
    ASSERT_EQ(results.members(i).task_id(), submitted->task_ids(i));
    ASSERT_EQ(results.members(i).result(), absl::StrCat(i)) << "member " << i;
  }
  // The callback ran once, and only once, even after a while.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(Lines(ReadFileOrEmpty(dir_.path() / "callbacks")).size(), 1u);
}

TEST_F(WorkflowCrashE2eTest, ABrokerKilledMidGroupRunsTheCallbackExactlyOnceAfterRestart) {
  constexpr int kMembers = 300;
  absl::StatusOr<v1::SubmitGroupResponse> submitted =
      client_->SubmitGroup(EchoGroup(kMembers, "mid", "slowcat"));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  StartWorker("mid", 4);
  // Let some members end, then kill the broker in the middle of the group.
  const absl::Time deadline = absl::Now() + kWaitTimeout;
  v1::GetGroupRequest req;
  req.set_id(submitted->group().id());
  uint32_t ended = 0;
  while (absl::Now() < deadline && ended < 30) {
    absl::StatusOr<v1::Group> g = client_->GetGroup(req);
    if (g.ok()) ended = g->ended();
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GE(ended, 30u);
  ASSERT_LT(ended, static_cast<uint32_t>(kMembers)) << "the group ended before the crash";
  CrashAndRestart();

  v1::Group group = WaitForGroup(submitted->group().id());
  EXPECT_EQ(group.state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(group.ended(), static_cast<uint32_t>(kMembers));
  EXPECT_EQ(group.succeeded(), static_cast<uint32_t>(kMembers));
  std::vector<std::string> callbacks = WaitForCallbacks(1);
  ASSERT_EQ(callbacks.size(), 1u);
  v1::GroupResults results;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(callbacks[0], &results).ok());
  ASSERT_EQ(results.members_size(), kMembers);
  for (int i = 0; i < kMembers; ++i) {
    ASSERT_EQ(results.members(i).result(), absl::StrCat(i)) << "member " << i;
  }
  // A second crash after the fan-in does not run the callback again.
  CrashAndRestart();
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(Lines(ReadFileOrEmpty(dir_.path() / "callbacks")).size(), 1u);
  absl::StatusOr<v1::Group> again = client_->GetGroup(req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->callback_task_id(), group.callback_task_id());
}

TEST_F(WorkflowCrashE2eTest, ABrokerKilledMidChainSubmitsEachStageOnce) {
  StartWorker("io,cpu", 4);
  std::vector<std::string> chains;
  for (int i = 0; i < 20; ++i) {
    v1::TaskSpec spec;
    spec.set_queue("io");
    spec.set_type("slowcat");
    spec.set_payload(absl::StrCat("chain", i, "-abc"));
    v1::TaskSpec* up = spec.add_then();
    up->set_queue("cpu");
    up->set_type("upper");
    v1::TaskSpec* rev = spec.add_then();
    rev->set_queue("io");
    rev->set_type("reverse");
    absl::StatusOr<v1::SubmitResponse> r = client_->Submit(spec);
    ASSERT_TRUE(r.ok()) << r.status();
    chains.push_back(r->task().id());
  }
  absl::SleepFor(absl::Milliseconds(300));
  CrashAndRestart();

  for (int i = 0; i < 20; ++i) {
    v1::Chain chain;
    const absl::Time deadline = absl::Now() + kWaitTimeout;
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::Chain> c = client_->GetChain(chains[i]);
      if (c.ok()) {
        chain = *c;
        if (chain.state() != v1::CHAIN_STATE_RUNNING) break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_EQ(chain.state(), v1::CHAIN_STATE_SUCCEEDED) << chain.DebugString();
    // reverse(upper("chainN-abc")), less the newline rev may add.
    std::string expected = absl::StrCat("CHAIN", i, "-ABC");
    std::reverse(expected.begin(), expected.end());
    EXPECT_EQ(std::string(absl::StripAsciiWhitespace(chain.result())), expected);
    ASSERT_EQ(chain.stage_list_size(), 3);
    for (const v1::Chain::Stage& stage : chain.stage_list()) {
      EXPECT_FALSE(stage.task_id().empty()) << chain.DebugString();
    }
  }
}

}  // namespace
}  // namespace conveyor::client
