// Workflows with a journal: a group's callback is submitted exactly once and
// a chain's stage once, whatever restarts and snapshots fall between the
// ends that drive them; a failed write of a group's submit leaves no group,
// and a failed write of a continuation is retried. The real FileJournal in a
// temporary directory covers restarts and snapshots (and the offline verify
// tool reads what it wrote); HeldJournal (writes finish when the test says,
// or fail) covers failed writes.
#include <stdlib.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "conveyor/v1/conveyor.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/journal/file_journal.h"
#include "server/verify.h"
#include "tests/server/broker_test_util.h"
#include "tests/server/durability_fixtures.h"

namespace conveyor::server {
namespace {

namespace v1 = ::conveyor::v1;
using broker_test::IsOk;
using durability_test::HeldJournal;
using durability_test::LeaseNow;
using broker_test::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

v1::GroupResults ParseResults(const std::string& json) {
  v1::GroupResults out;
  auto status = google::protobuf::util::JsonStringToMessage(json, &out);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return out;
}

TaskSpec Spec(const std::string& queue, const std::string& payload = "p",
              const std::string& type = "t") {
  TaskSpec spec;
  spec.queue = queue;
  spec.type = type;
  spec.payload = payload;
  return spec;
}

GroupSpec Members(int n, const std::string& queue = "q") {
  GroupSpec spec;
  for (int i = 0; i < n; ++i) spec.members.push_back(Spec(queue, absl::StrCat("m", i)));
  return spec;
}

std::vector<TaskInfo> TasksIn(Broker& broker, const std::string& queue) {
  absl::StatusOr<TaskPage> page = broker.ListTasks(queue, std::nullopt, 1000, "");
  return page.ok() ? page->tasks : std::vector<TaskInfo>();
}

void WaitDurable(Broker& broker, Ticket ticket) {
  absl::Notification done;
  broker.WhenDurable(ticket, [&](absl::Status s) {
    EXPECT_THAT(s, IsOk());
    done.Notify();
  });
  done.WaitForNotification();
}

// ───────────────────────────── FileJournal: restarts ─────────────────────────────

class WorkflowRestartTest : public durability_test::RestartTest {
 protected:
  // A crash, then a restart.
  void Restart() {
    Crash();
    Open();
  }

  SubmitGroupResult MustSubmitGroup(GroupSpec spec) {
    absl::StatusOr<SubmitGroupResult> r = broker_->SubmitGroupNow(std::move(spec));
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *std::move(r) : SubmitGroupResult();
  }
  GroupInfo Group(TaskId id, bool members = false) {
    absl::StatusOr<GroupInfo> g = broker_->GetGroup(id, members, members, 0, 10'000);
    EXPECT_THAT(g, IsOk());
    return g.ok() ? *std::move(g) : GroupInfo();
  }
  ChainInfo Chain(TaskId id) {
    absl::StatusOr<ChainInfo> c = broker_->GetChain(id);
    EXPECT_THAT(c, IsOk());
    return c.ok() ? *std::move(c) : ChainInfo();
  }
  TaskInfo Get(TaskId id) {
    absl::StatusOr<TaskInfo> t = broker_->GetTask(id);
    EXPECT_THAT(t, IsOk()) << id.ToString();
    return t.ok() ? *std::move(t) : TaskInfo();
  }
  // Completes (or fails, if `error` is set) every leased task, durably.
  void Finish(const std::vector<LeasedTask>& tasks, const std::string& result,
              std::optional<std::string> error = std::nullopt) {
    for (const LeasedTask& t : tasks) {
      Ticket ticket = 0;
      if (error) {
        ASSERT_THAT(broker_->Fail({FailItem{t.id, t.token, *error, false, ""}}, &ticket)[0],
                    IsOk());
      } else {
        ASSERT_THAT(
            broker_->Complete({CompleteItem{t.id, t.token, result + t.payload}}, &ticket)[0],
            IsOk());
      }
      WaitDurable(*broker_, ticket);
    }
  }

};

TEST_F(WorkflowRestartTest, ACallbackSubmittedBeforeARestartIsNotSubmittedAgain) {
  Open();
  GroupSpec spec = Members(2);
  spec.callback = Spec("cb", "ctx", "fan-in");
  spec.callback->priority = 3;
  spec.callback->headers = {{"traceparent", "00-abc-def-01"}};
  spec.idempotency_key = "g-1";
  SubmitGroupResult r = MustSubmitGroup(spec);
  Finish(LeaseNow(*broker_, "q"), "r-");
  const TaskId callback = Group(r.group.id).callback_task;
  ASSERT_NE(callback.value(), 0u);

  for (int restart = 0; restart < 2; ++restart) {
    SCOPED_TRACE(absl::StrCat("restart ", restart));
    Restart();
    clock_.Advance(absl::Seconds(5));
    broker_->Tick();
    GroupInfo g = Group(r.group.id);
    EXPECT_EQ(g.state, GroupState::kDone);
    EXPECT_EQ(g.callback_task, callback);
    EXPECT_EQ(g.succeeded, 2u);
    EXPECT_EQ(g.idempotency_key, "g-1");
    std::vector<TaskInfo> cbs = TasksIn(*broker_, "cb");
    ASSERT_THAT(cbs, SizeIs(1));
    EXPECT_EQ(cbs[0].id, callback);
  }
  TaskInfo cb = Get(callback);
  EXPECT_EQ(cb.group_id, r.group.id);
  EXPECT_EQ(cb.priority, 3u);
  EXPECT_EQ(cb.type, "fan-in");
  ASSERT_THAT(cb.headers, SizeIs(1));
  v1::GroupResults doc = ParseResults(cb.payload);
  EXPECT_EQ(doc.payload(), "ctx");
  ASSERT_EQ(doc.members_size(), 2);
  EXPECT_EQ(doc.members(1).result(), "r-m1");
  // The group's key still deduplicates after the restarts.
  absl::StatusOr<SubmitGroupResult> again = broker_->SubmitGroupNow(spec);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(again->group.id, r.group.id);
  EXPECT_EQ(again->task_ids, r.task_ids);

  // Run the callback, restart again: still one.
  Finish(LeaseNow(*broker_, "cb"), "done");
  Restart();
  std::vector<TaskInfo> cbs = TasksIn(*broker_, "cb");
  ASSERT_THAT(cbs, SizeIs(1));
  EXPECT_EQ(cbs[0].state, TaskState::kSucceeded);
}

TEST_F(WorkflowRestartTest, MembersRunningAtARestartComeBackAndTheCallbackFollowsOnce) {
  Open();
  GroupSpec spec = Members(3);
  spec.callback = Spec("cb", "", "fan-in");
  SubmitGroupResult r = MustSubmitGroup(spec);
  Finish(LeaseNow(*broker_, "q", 1), "r-");
  std::vector<LeasedTask> running = LeaseNow(*broker_, "q");
  ASSERT_THAT(running, SizeIs(2));
  Restart();

  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kRunning);
  EXPECT_EQ(g.ended, 1u);
  EXPECT_EQ(g.succeeded, 1u);
  EXPECT_EQ(Get(r.task_ids[1]).state, TaskState::kReady);
  EXPECT_EQ(Get(r.task_ids[2]).state, TaskState::kReady);
  EXPECT_THAT(TasksIn(*broker_, "cb"), IsEmpty());
  EXPECT_EQ(Get(r.task_ids[2]).group_id, r.group.id);

  std::vector<LeasedTask> again = LeaseNow(*broker_, "q");
  ASSERT_THAT(again, SizeIs(2));
  Finish({again[0]}, "r-");
  Restart();  // between the last two ends
  EXPECT_EQ(Group(r.group.id).ended, 2u);
  again = LeaseNow(*broker_, "q");
  ASSERT_THAT(again, SizeIs(1));
  Finish(again, "r-");

  g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  ASSERT_THAT(TasksIn(*broker_, "cb"), SizeIs(1));
  v1::GroupResults doc = ParseResults(Get(g.callback_task).payload);
  ASSERT_EQ(doc.members_size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(doc.members(i).result(), absl::StrCat("r-m", i));
  Restart();
  EXPECT_THAT(TasksIn(*broker_, "cb"), SizeIs(1));
  EXPECT_EQ(Group(r.group.id).callback_task, g.callback_task);
}

TEST_F(WorkflowRestartTest, ASnapshotKeepsTheResultsOfMembersDroppedByRetention) {
  Open();
  QueueConfig q;
  q.name = "q";
  q.retained = 0;
  ASSERT_THAT(broker_->CreateQueue(q, false), IsOk());
  GroupSpec spec = Members(4);
  spec.callback = Spec("cb", "", "fan-in");
  SubmitGroupResult r = MustSubmitGroup(spec);
  std::vector<LeasedTask> leased = LeaseNow(*broker_, "q");
  ASSERT_THAT(leased, SizeIs(4));
  Finish({leased[0]}, "r-");
  Finish({leased[1]}, "", "e1");
  EXPECT_THAT(broker_->GetTask(r.task_ids[0]), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Finish({leased[2]}, "r-");  // after the snapshot: in the journal only
  Restart();

  GroupInfo g = Group(r.group.id, /*members=*/true);
  EXPECT_EQ(g.state, GroupState::kRunning);
  EXPECT_EQ(g.ended, 3u);
  EXPECT_EQ(g.succeeded, 2u);
  EXPECT_EQ(g.dead, 1u);
  ASSERT_THAT(g.members, SizeIs(4));
  EXPECT_EQ(g.members[0].result, "r-m0");
  EXPECT_EQ(g.members[1].error, "e1");
  EXPECT_EQ(g.members[2].result, "r-m2");
  EXPECT_EQ(g.members[3].state, TaskState::kReady);

  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Restart();
  std::vector<LeasedTask> last = LeaseNow(*broker_, "q");
  ASSERT_THAT(last, SizeIs(1));
  Finish(last, "r-");
  g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  v1::GroupResults doc = ParseResults(Get(g.callback_task).payload);
  ASSERT_EQ(doc.members_size(), 4);
  EXPECT_EQ(doc.members(0).result(), "r-m0");
  EXPECT_EQ(doc.members(1).error(), "e1");
  EXPECT_EQ(doc.members(1).state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(doc.members(2).result(), "r-m2");
  EXPECT_EQ(doc.members(3).result(), "r-m3");

  // A snapshot of the DONE group: still DONE, one callback, results kept.
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Restart();
  g = Group(r.group.id, /*members=*/true);
  EXPECT_EQ(g.state, GroupState::kDone);
  ASSERT_THAT(g.members, SizeIs(4));
  EXPECT_EQ(g.members[3].result, "r-m3");
  EXPECT_NE(g.finished_at, absl::InfinitePast());
  EXPECT_THAT(TasksIn(*broker_, "cb"), SizeIs(1));
}

TEST_F(WorkflowRestartTest, ASnapshotOfARunningGroupKeepsItsCounters) {
  Open();
  GroupSpec spec = Members(3);
  spec.callback = Spec("cb", "", "fan-in");
  SubmitGroupResult r = MustSubmitGroup(spec);
  std::vector<LeasedTask> leased = LeaseNow(*broker_, "q");
  ASSERT_THAT(leased, SizeIs(3));
  Finish({leased[0]}, "r-");
  Finish({leased[1]}, "", "e1");
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Restart();
  GroupInfo g = Group(r.group.id, true);
  EXPECT_EQ(g.ended, 2u);
  EXPECT_EQ(g.succeeded, 1u);
  EXPECT_EQ(g.dead, 1u);
  ASSERT_THAT(g.members, SizeIs(3));
  EXPECT_EQ(g.members[0].result, "r-m0");
  EXPECT_EQ(g.members[1].error, "e1");
  // The dead member is requeued and the group waits for it again.
  ASSERT_THAT(broker_->RequeueDeadLetters("q", {}), IsOk());
  EXPECT_EQ(Group(r.group.id).ended, 1u);
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Restart();
  EXPECT_EQ(Group(r.group.id).ended, 1u);
  Finish(LeaseNow(*broker_, "q"), "r-");
  g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  EXPECT_EQ(g.succeeded, 3u);
  EXPECT_THAT(TasksIn(*broker_, "cb"), SizeIs(1));
}

TEST_F(WorkflowRestartTest, ACanceledGroupStaysCanceledAndItsCallbackNeverRuns) {
  Open();
  GroupSpec spec = Members(3);
  spec.callback = Spec("cb", "", "fan-in");
  SubmitGroupResult r = MustSubmitGroup(spec);
  std::vector<LeasedTask> running = LeaseNow(*broker_, "q", 1);
  Ticket ticket = 0;
  ASSERT_THAT(broker_->CancelGroup(r.group.id, &ticket), IsOk());
  WaitDurable(*broker_, ticket);
  Restart();
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kCanceled);
  // The running member's cancel was accepted: it ends CANCELED at the restart.
  EXPECT_EQ(Get(running[0].id).state, TaskState::kCanceled);
  EXPECT_EQ(g.canceled, 3u);
  EXPECT_THAT(TasksIn(*broker_, "cb"), IsEmpty());
  EXPECT_THAT(LeaseNow(*broker_, "q"), IsEmpty());
}

TEST_F(WorkflowRestartTest, ARestartBetweenStagesSubmitsEachStageOnce) {
  Open();
  TaskSpec first = Spec("a", "p0");
  first.then.push_back(Spec("b", "", "parse"));
  first.then[0].priority = 4;
  first.then[0].headers = {{"k", "v"}};
  first.then[0].retry.max_attempts = 7;
  first.then[0].timeout = absl::Minutes(3);
  first.then.push_back(Spec("c", "", "store"));
  first.then[1].delay = absl::Seconds(10);
  absl::StatusOr<SubmitResult> submitted = broker_->SubmitNow(first);
  ASSERT_THAT(submitted, IsOk());
  const TaskId id = submitted->task.id;
  Restart();
  EXPECT_EQ(Chain(id).stages, 3u);
  EXPECT_EQ(Get(id).chain_id, id);

  Finish(LeaseNow(*broker_, "a"), "r-");
  Restart();
  ChainInfo c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kRunning);
  EXPECT_EQ(c.current_stage, 1u);
  std::vector<TaskInfo> b = TasksIn(*broker_, "b");
  ASSERT_THAT(b, SizeIs(1));
  EXPECT_EQ(b[0].id, c.stage_list[1].task_id);
  TaskInfo stage = Get(b[0].id);
  EXPECT_EQ(stage.payload, "r-p0");
  EXPECT_EQ(stage.priority, 4u);
  EXPECT_EQ(stage.max_attempts, 7u);
  EXPECT_EQ(stage.timeout, absl::Minutes(3));
  ASSERT_THAT(stage.headers, SizeIs(1));
  EXPECT_EQ(stage.chain_id, id);
  EXPECT_EQ(stage.chain_stage, 1u);

  // A restart while the stage runs, a snapshot, another restart.
  std::vector<LeasedTask> running = LeaseNow(*broker_, "b");
  ASSERT_THAT(running, SizeIs(1));
  Restart();
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Restart();
  EXPECT_THAT(TasksIn(*broker_, "b"), SizeIs(1));
  EXPECT_THAT(TasksIn(*broker_, "c"), IsEmpty());
  Finish(LeaseNow(*broker_, "b"), "r-");
  Restart();
  std::vector<TaskInfo> cs = TasksIn(*broker_, "c");
  ASSERT_THAT(cs, SizeIs(1));
  EXPECT_EQ(cs[0].state, TaskState::kScheduled);  // its delay counts from its submit
  EXPECT_EQ(Chain(id).current_stage, 2u);
  clock_.Advance(absl::Seconds(10));
  broker_->Tick();
  Finish(LeaseNow(*broker_, "c"), "r-");
  Restart();
  c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kSucceeded);
  EXPECT_EQ(c.result, "r-r-r-p0");
  EXPECT_THAT(TasksIn(*broker_, "a"), SizeIs(1));
  EXPECT_THAT(TasksIn(*broker_, "b"), SizeIs(1));
  EXPECT_THAT(TasksIn(*broker_, "c"), SizeIs(1));
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Restart();
  EXPECT_EQ(Chain(id).state, ChainState::kSucceeded);
  EXPECT_EQ(Chain(id).result, "r-r-r-p0");
}

TEST_F(WorkflowRestartTest, AFailedOrCanceledChainStaysEndedAcrossARestart) {
  Open();
  TaskSpec failing = Spec("a");
  failing.then.push_back(Spec("b", ""));
  TaskId f = broker_->SubmitNow(failing)->task.id;
  TaskSpec canceled = Spec("x");
  canceled.then.push_back(Spec("y", ""));
  TaskId c = broker_->SubmitNow(canceled)->task.id;
  Finish(LeaseNow(*broker_, "a"), "", "broken");
  Ticket ticket = 0;
  ASSERT_THAT(broker_->CancelChain(c, &ticket), IsOk());
  WaitDurable(*broker_, ticket);
  Restart();
  EXPECT_EQ(Chain(f).state, ChainState::kFailed);
  EXPECT_THAT(Chain(f).error, HasSubstr("broken"));
  EXPECT_EQ(Chain(c).state, ChainState::kCanceled);
  EXPECT_THAT(TasksIn(*broker_, "b"), IsEmpty());
  EXPECT_THAT(TasksIn(*broker_, "y"), IsEmpty());
}

TEST_F(WorkflowRestartTest, ACancelOfARunningStageHoldsAcrossARestart) {
  Open();
  // One chain restarts before its worker reports, one after a late complete.
  TaskSpec first = Spec("a");
  first.then.push_back(Spec("b", ""));
  TaskId before = broker_->SubmitNow(first)->task.id;
  TaskSpec other = Spec("x");
  other.then.push_back(Spec("y", ""));
  TaskId after = broker_->SubmitNow(other)->task.id;
  std::vector<LeasedTask> a = LeaseNow(*broker_, "a");
  std::vector<LeasedTask> x = LeaseNow(*broker_, "x");
  ASSERT_THAT(a, SizeIs(1));
  ASSERT_THAT(x, SizeIs(1));
  for (TaskId id : {before, after}) {
    Ticket ticket = 0;
    ASSERT_THAT(broker_->CancelChain(id, &ticket), IsOk());
    WaitDurable(*broker_, ticket);
  }
  Finish(x, "r");  // a complete that arrives first wins, but the chain stops
  EXPECT_EQ(Get(after).state, TaskState::kSucceeded);
  EXPECT_EQ(Chain(after).state, ChainState::kCanceled);
  Restart();
  EXPECT_EQ(Get(before).state, TaskState::kCanceled);
  EXPECT_EQ(Chain(before).state, ChainState::kCanceled);
  EXPECT_EQ(Chain(after).state, ChainState::kCanceled);
  EXPECT_THAT(TasksIn(*broker_, "b"), IsEmpty());
  EXPECT_THAT(TasksIn(*broker_, "y"), IsEmpty());
}

TEST_F(WorkflowRestartTest, GroupsAndChainsAreDroppedAfterTheTtlAlsoAcrossARestart) {
  options_.workflow_ttl = absl::Hours(1);
  Open();
  SubmitGroupResult r = MustSubmitGroup(Members(1));
  TaskSpec first = Spec("a");
  first.then.push_back(Spec("b", ""));
  TaskId chain = broker_->SubmitNow(first)->task.id;
  Finish(LeaseNow(*broker_, "q"), "r");
  Finish(LeaseNow(*broker_, "a"), "r");
  Finish(LeaseNow(*broker_, "b"), "r");
  EXPECT_EQ(Group(r.group.id).state, GroupState::kDone);
  EXPECT_EQ(Chain(chain).state, ChainState::kSucceeded);
  clock_.Advance(absl::Minutes(30));
  Restart();
  EXPECT_EQ(Group(r.group.id).state, GroupState::kDone);
  clock_.Advance(absl::Minutes(31));
  broker_->Tick();
  EXPECT_THAT(broker_->GetGroup(r.group.id, false, false, 0, 0),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetChain(chain), StatusIs(absl::StatusCode::kNotFound));
  // The drop is recorded: it does not come back.
  Restart();
  EXPECT_THAT(broker_->GetGroup(r.group.id, false, false, 0, 0),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetChain(chain), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(WorkflowRestartTest, VerifyAcceptsAJournalWithWorkflowRecords) {
  Open();
  GroupSpec spec = Members(3);
  spec.callback = Spec("cb", "ctx", "fan-in");
  spec.callback->then.push_back(Spec("post", ""));
  SubmitGroupResult r = MustSubmitGroup(spec);
  TaskSpec first = Spec("a");
  first.then.push_back(Spec("b", ""));
  ASSERT_THAT(broker_->SubmitNow(first), IsOk());
  Finish(LeaseNow(*broker_, "q", 2), "r");
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  Finish(LeaseNow(*broker_, "q"), "r");
  Finish(LeaseNow(*broker_, "a"), "r");
  ASSERT_THAT(broker_->CancelGroup(MustSubmitGroup(Members(2, "z")).group.id), IsOk());
  broker_.reset();
  journal_.reset();

  VerifyOptions options;
  options.now = clock_.Now();
  VerifyReport report = VerifyDirectory(dir_, options);
  ASSERT_THAT(report.status, IsOk());
  EXPECT_TRUE(report.has_snapshot);
  EXPECT_GT(report.entries["group"], 0u);
  EXPECT_GT(report.entries["chain"], 0u);
  // Members, the callback, the chain's two stages, two canceled members.
  EXPECT_EQ(report.tasks, 3u + 1u + 2u + 2u);
  EXPECT_EQ(report.tasks_by_state["CANCELED"], 2u);
  EXPECT_EQ(report.tasks_by_state["SUCCEEDED"], 4u);

  // The broker reads it back the same.
  Open();
  EXPECT_EQ(Group(r.group.id).state, GroupState::kDone);
  EXPECT_THAT(TasksIn(*broker_, "cb"), SizeIs(1));
  EXPECT_THAT(TasksIn(*broker_, "b"), SizeIs(1));
}

// ───────────────────────────── HeldJournal: failed writes ─────────────────────────────

class WorkflowHeldJournalTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  // A new broker on the journal (a restart), recovered.
  void Start() {
    broker_.reset();
    broker_ = std::make_unique<Broker>(BrokerOptions(), &clock_, nullptr, &journal_);
    // Recover waits for its epoch record: store it once it is written.
    std::atomic<bool> recovered{false};
    std::thread recover_done([&] {
      while (journal_.held() == 0 && !recovered) std::this_thread::yield();
      if (journal_.held() > 0) journal_.CompleteOne();
    });
    absl::Status status = broker_->Recover();
    recovered = true;
    recover_done.join();
    ASSERT_THAT(status, IsOk());
  }
  void Tick(absl::Duration d) {
    clock_.Advance(d);
    broker_->Tick();
  }

  FakeClock clock_;
  HeldJournal journal_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(WorkflowHeldJournalTest, AFailedWriteOfAGroupsSubmitLeavesNoGroupBehind) {
  // The queues exist (and are stored) already: this is about the group.
  for (const char* name : {"q", "cb"}) {
    QueueConfig config;
    config.name = name;
    ASSERT_THAT(broker_->CreateQueue(config, false), IsOk());
  }
  journal_.CompleteAll();
  GroupSpec spec = Members(3);
  spec.callback = Spec("cb", "", "fan-in");
  spec.idempotency_key = "once";
  std::optional<absl::StatusOr<SubmitGroupResult>> answer;
  broker_->SubmitGroup(spec, [&](absl::StatusOr<SubmitGroupResult> r) { answer = std::move(r); });
  EXPECT_FALSE(answer.has_value()) << "answered before the group was durable";
  EXPECT_THAT(LeaseNow(*broker_, "q"), IsEmpty()) << "a member leased before it was durable";
  journal_.CompleteOne(absl::ResourceExhaustedError("disk full"));
  ASSERT_TRUE(answer.has_value());
  EXPECT_THAT(*answer, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_THAT(LeaseNow(*broker_, "q"), IsEmpty());

  // The key is free: the retry is a new group, not the failed one.
  answer.reset();
  broker_->SubmitGroup(spec, [&](absl::StatusOr<SubmitGroupResult> r) { answer = std::move(r); });
  journal_.CompleteAll();
  ASSERT_TRUE(answer.has_value());
  ASSERT_THAT(*answer, IsOk());
  EXPECT_FALSE((*answer)->deduplicated);
  const TaskId group = (*answer)->group.id;
  EXPECT_EQ(broker_->task_count(), 3u);

  // A restart sees only the group that was stored.
  Start();
  absl::StatusOr<GroupInfo> g = broker_->GetGroup(group, true, false, 0, 0);
  ASSERT_THAT(g, IsOk());
  EXPECT_EQ(g->total, 3u);
  EXPECT_EQ(broker_->task_count(), 3u);
}

TEST_F(WorkflowHeldJournalTest, AFailedWriteOfACallbacksSubmitIsRetriedAndItIsSubmittedOnce) {
  GroupSpec spec = Members(1);
  spec.callback = Spec("cb", "ctx", "fan-in");
  broker_->SubmitGroup(spec, [](absl::StatusOr<SubmitGroupResult> r) { ASSERT_THAT(r, IsOk()); });
  journal_.CompleteAll();
  std::vector<LeasedTask> leased = LeaseNow(*broker_, "q");
  ASSERT_THAT(leased, SizeIs(1));
  absl::StatusOr<TaskInfo> member = broker_->GetTask(leased[0].id);
  ASSERT_THAT(member, IsOk());
  const TaskId group = member->group_id;
  ASSERT_THAT(broker_->Complete({CompleteItem{leased[0].id, leased[0].token, "r"}})[0], IsOk());
  EXPECT_NE(broker_->GetGroup(group, false, false, 0, 0)->callback_task.value(), 0u);
  journal_.CompleteOne(absl::ResourceExhaustedError("disk full"));

  // The callback never existed; the group waits for it.
  absl::StatusOr<GroupInfo> g = broker_->GetGroup(group, false, false, 0, 0);
  ASSERT_THAT(g, IsOk());
  EXPECT_EQ(g->callback_task.value(), 0u);
  EXPECT_EQ(g->state, GroupState::kRunning);
  EXPECT_EQ(g->ended, 1u);
  EXPECT_THAT(TasksIn(*broker_, "cb"), IsEmpty());

  Tick(absl::Milliseconds(500));
  journal_.CompleteAll();
  EXPECT_THAT(TasksIn(*broker_, "cb"), IsEmpty());
  Tick(absl::Milliseconds(600));  // the retry, about a second after the failure
  journal_.CompleteAll();
  std::vector<TaskInfo> cbs = TasksIn(*broker_, "cb");
  ASSERT_THAT(cbs, SizeIs(1));
  g = broker_->GetGroup(group, false, false, 0, 0);
  ASSERT_THAT(g, IsOk());
  EXPECT_EQ(g->state, GroupState::kDone);
  EXPECT_EQ(g->callback_task, cbs[0].id);
  std::vector<LeasedTask> cb = LeaseNow(*broker_, "cb");
  ASSERT_THAT(cb, SizeIs(1));
  v1::GroupResults doc = ParseResults(cb[0].payload);
  EXPECT_EQ(doc.payload(), "ctx");
  ASSERT_EQ(doc.members_size(), 1);
  EXPECT_EQ(doc.members(0).result(), "r");

  Tick(absl::Seconds(5));
  journal_.CompleteAll();
  EXPECT_THAT(TasksIn(*broker_, "cb"), SizeIs(1));
  // The journal holds it once: a restart finds the same callback.
  Start();
  cbs = TasksIn(*broker_, "cb");
  ASSERT_THAT(cbs, SizeIs(1));
  EXPECT_EQ(broker_->GetGroup(group, false, false, 0, 0)->callback_task, cbs[0].id);
}

TEST_F(WorkflowHeldJournalTest, AFailedWriteOfANextStageIsRetried) {
  for (uint64_t retained : {uint64_t{100}, uint64_t{0}}) {
    SCOPED_TRACE(absl::StrCat("retained ", retained));
    const std::string a = absl::StrCat("a", retained);
    const std::string b = absl::StrCat("b", retained);
    QueueConfig config;
    config.name = a;
    config.retained = retained;
    ASSERT_THAT(broker_->CreateQueue(config, false), IsOk());
    journal_.CompleteAll();
    TaskSpec first = Spec(a, "p0");
    first.then.push_back(Spec(b, ""));
    std::optional<absl::StatusOr<SubmitResult>> submitted;
    broker_->Submit(first, absl::InfiniteFuture(),
                    [&](absl::StatusOr<SubmitResult> r) { submitted = std::move(r); });
    journal_.CompleteAll();
    ASSERT_TRUE(submitted.has_value());
    ASSERT_THAT(*submitted, IsOk());
    const TaskId chain = (*submitted)->task.id;
    std::vector<LeasedTask> leased = LeaseNow(*broker_, a);
    ASSERT_THAT(leased, SizeIs(1));
    ASSERT_THAT(broker_->Complete({CompleteItem{leased[0].id, leased[0].token, "r0"}})[0],
                IsOk());
    journal_.CompleteOne(absl::ResourceExhaustedError("disk full"));
    EXPECT_THAT(TasksIn(*broker_, b), IsEmpty());
    EXPECT_EQ(broker_->GetChain(chain)->state, ChainState::kRunning);

    Tick(absl::Seconds(1));
    journal_.CompleteAll();
    std::vector<LeasedTask> next = LeaseNow(*broker_, b);
    ASSERT_THAT(next, SizeIs(1));
    EXPECT_EQ(next[0].payload, "r0");
    absl::StatusOr<ChainInfo> c = broker_->GetChain(chain);
    ASSERT_THAT(c, IsOk());
    EXPECT_EQ(c->current_stage, 1u);
    EXPECT_EQ(c->stage_list[1].task_id, next[0].id);
    ASSERT_THAT(broker_->Complete({CompleteItem{next[0].id, next[0].token, "r1"}})[0], IsOk());
    journal_.CompleteAll();
    EXPECT_EQ(broker_->GetChain(chain)->state, ChainState::kSucceeded);
    Tick(absl::Seconds(5));
    journal_.CompleteAll();
    EXPECT_THAT(TasksIn(*broker_, b), SizeIs(1));
  }
}


TEST_F(WorkflowHeldJournalTest, ASubmitWhoseWriteFailsAtASnapshotsCutLeavesNoGhost) {
  for (const char* name : {"q", "a"}) {
    QueueConfig config;
    config.name = name;
    ASSERT_THAT(broker_->CreateQueue(config, false), IsOk());
  }
  journal_.CompleteAll();
  // One group that is stored: ids are sequential on a still clock.
  std::optional<absl::StatusOr<SubmitGroupResult>> kept;
  broker_->SubmitGroup(Members(1), [&](absl::StatusOr<SubmitGroupResult> r) { kept = r; });
  journal_.CompleteAll();
  ASSERT_TRUE(kept.has_value());
  ASSERT_THAT(*kept, IsOk());
  const uint64_t last = (*kept)->task_ids[0].value();

  // A group and a chain whose writes are in flight at the snapshot's cut,
  // and then fail.
  GroupSpec ghost = Members(2);
  ghost.idempotency_key = "ghost";
  std::optional<absl::StatusOr<SubmitGroupResult>> group;
  broker_->SubmitGroup(ghost, [&](absl::StatusOr<SubmitGroupResult> r) { group = r; });
  TaskSpec first = Spec("a");
  first.then.push_back(Spec("b", ""));
  std::optional<absl::StatusOr<SubmitResult>> chain;
  broker_->Submit(first, absl::InfiniteFuture(),
                  [&](absl::StatusOr<SubmitResult> r) { chain = r; });
  const TaskId ghost_group(last + 1);  // then its two members
  const TaskId ghost_chain(last + 4);
  EXPECT_THAT(broker_->GetGroup(ghost_group, false, false, 0, 0), IsOk());
  EXPECT_THAT(broker_->GetChain(ghost_chain), IsOk());

  absl::Status snapshot;
  std::thread writer([&] { snapshot = broker_->WriteSnapshot(); });
  while (!journal_.snapshot_begun()) std::this_thread::yield();
  journal_.CompleteOne(absl::ResourceExhaustedError("disk full"));
  journal_.CompleteOne(absl::ResourceExhaustedError("disk full"));
  writer.join();
  ASSERT_THAT(snapshot, IsOk());
  ASSERT_TRUE(group.has_value());
  EXPECT_THAT(*group, StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_TRUE(chain.has_value());
  EXPECT_THAT(*chain, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(broker_->GetGroup(ghost_group, false, false, 0, 0),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetChain(ghost_chain), StatusIs(absl::StatusCode::kNotFound));

  Start();  // from the snapshot
  EXPECT_THAT(broker_->GetGroup((*kept)->group.id, false, false, 0, 0), IsOk());
  EXPECT_THAT(broker_->GetGroup(ghost_group, false, false, 0, 0),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetChain(ghost_chain), StatusIs(absl::StatusCode::kNotFound));
  // The key of the group that failed is free.
  group.reset();
  broker_->SubmitGroup(ghost, [&](absl::StatusOr<SubmitGroupResult> r) { group = r; });
  journal_.CompleteAll();
  ASSERT_TRUE(group.has_value());
  ASSERT_THAT(*group, IsOk());
  EXPECT_FALSE((*group)->deduplicated);
  EXPECT_EQ((*group)->group.total, 2u);
  EXPECT_EQ(broker_->task_count(), 3u);  // the kept member and the new two
}

}  // namespace
}  // namespace conveyor::server
