// Workflows in the broker core (server/workflow.cc), in memory with a
// FakeClock: groups (all-or-nothing submit, counters, the fan-in callback and
// its GroupResults document, cancel, watch, idempotency, paging, purge and
// requeue of members, the workflow TTL) and chains (stages across queues,
// delays, failures, fallbacks, cancel, validation of stage templates), and
// the workflow links GetTask shows.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "conveyor/v1/conveyor.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "tests/server/broker_test_util.h"

namespace conveyor::server {
namespace {

namespace v1 = ::conveyor::v1;
using broker_test::BrokerTest;
using broker_test::IsOk;
using broker_test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

struct GroupWatchCapture {
  std::vector<GroupInfo> calls;
  std::vector<bool> finals;
  int final_count() const {
    int n = 0;
    for (bool f : finals) n += f;
    return n;
  }
};

GroupWatchCallback Capture(std::shared_ptr<GroupWatchCapture> c) {
  return [c](const GroupInfo& g, bool final) {
    c->calls.push_back(g);
    c->finals.push_back(final);
  };
}

// GroupResults (the callback's payload) from its proto3 JSON.
v1::GroupResults ParseResults(const std::string& json) {
  v1::GroupResults out;
  auto status = google::protobuf::util::JsonStringToMessage(json, &out);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json.substr(0, 2000);
  return out;
}

class WorkflowTest : public BrokerTest {
 protected:
  // `n` members on `queue` with payloads "m0", "m1", ...
  static GroupSpec Members(int n, const std::string& queue = "q") {
    GroupSpec spec;
    for (int i = 0; i < n; ++i) spec.members.push_back(Spec(queue, "t", absl::StrCat("m", i)));
    return spec;
  }
  static TaskSpec Callback(const std::string& queue = "cb", const std::string& payload = "") {
    return Spec(queue, "fan-in", payload);
  }
  // A stage template: its payload must be empty.
  static TaskSpec Stage(const std::string& queue, const std::string& type = "t") {
    return Spec(queue, type, "");
  }

  SubmitGroupResult MustSubmitGroup(GroupSpec spec) {
    absl::StatusOr<SubmitGroupResult> r = broker_->SubmitGroupNow(std::move(spec));
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return SubmitGroupResult();
    EXPECT_FALSE(r->deduplicated);
    EXPECT_EQ(r->task_ids.size(), r->group.total);
    return *std::move(r);
  }

  GroupInfo Group(TaskId id) {
    absl::StatusOr<GroupInfo> g = broker_->GetGroup(id, false, false, 0, 0);
    EXPECT_THAT(g, IsOk()) << "group " << id.ToString();
    return g.ok() ? *std::move(g) : GroupInfo();
  }
  std::vector<GroupMemberInfo> MembersOf(TaskId id, bool results = true) {
    absl::StatusOr<GroupInfo> g = broker_->GetGroup(id, true, results, 0, 10'000);
    EXPECT_THAT(g, IsOk()) << "group " << id.ToString();
    return g.ok() ? g->members : std::vector<GroupMemberInfo>();
  }
  ChainInfo Chain(TaskId id) {
    absl::StatusOr<ChainInfo> c = broker_->GetChain(id);
    EXPECT_THAT(c, IsOk()) << "chain " << id.ToString();
    return c.ok() ? *std::move(c) : ChainInfo();
  }

  // Every task of `queue` (none if it does not exist).
  std::vector<TaskInfo> TasksIn(const std::string& queue) {
    absl::StatusOr<TaskPage> page = broker_->ListTasks(queue, std::nullopt, 1000, "");
    if (!page.ok()) return {};
    return page->tasks;
  }

  // Leases every ready task of `queue` and remembers its token; returns the
  // token of `id`, which must be among them (or leased before).
  uint64_t Lease(TaskId id, const std::string& queue = "q") {
    for (const LeasedTask& t : LeaseNow({queue}, 1000)) leased_[t.id] = t;
    auto it = leased_.find(id);
    EXPECT_NE(it, leased_.end()) << "task " << id.ToString() << " was not leased";
    return it == leased_.end() ? 0 : it->second.token;
  }
  void Succeed(TaskId id, const std::string& result, const std::string& queue = "q") {
    EXPECT_THAT(CompleteOne(id, Lease(id, queue), result), IsOk());
  }
  void Die(TaskId id, const std::string& error, const std::string& queue = "q") {
    EXPECT_THAT(FailOne(id, Lease(id, queue), /*retryable=*/false, error), IsOk());
  }

  // The callback's GroupResults; the group must have submitted it.
  v1::GroupResults CallbackResults(TaskId group) {
    GroupInfo g = Group(group);
    EXPECT_NE(g.callback_task.value(), 0u) << "no callback yet";
    if (g.callback_task.value() == 0) return v1::GroupResults();
    return ParseResults(Get(g.callback_task).payload);
  }

  std::map<TaskId, LeasedTask> leased_;
};

// ───────────────────────────── groups: submit ─────────────────────────────

TEST_F(WorkflowTest, ABadMemberRefusesTheWholeGroupNamingItsIndex) {
  BrokerOptions options;
  options.max_payload_bytes = 100;
  Reset(options);
  struct Case {
    std::string name;
    std::function<void(GroupSpec&)> spoil;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"priority", [](GroupSpec& g) { g.members[3].priority = 12; }, "tasks[3].priority is 12"},
      {"payload", [](GroupSpec& g) { g.members[2].payload = std::string(101, 'x'); },
       "tasks[2].payload is 101 bytes"},
      {"queue", [](GroupSpec& g) { g.members[1].queue = "bad queue!"; }, "tasks[1].queue"},
      {"member key",
       [](GroupSpec& g) { g.members[4].idempotency_key = "k"; }, "tasks[4].idempotency_key"},
      {"member then", [](GroupSpec& g) { g.members[0].then.push_back(Stage("next")); },
       "tasks[0].then is not allowed"},
      {"retry", [](GroupSpec& g) { g.members[2].retry.max_attempts = 0; },
       "tasks[2].retry.max_attempts"},
      {"expires", [this](GroupSpec& g) { g.members[1].expires_at = Now() - absl::Seconds(1); },
       "tasks[1].expires_at"},
      {"callback key", [](GroupSpec& g) {
         g.callback = Callback();
         g.callback->idempotency_key = "k";
       }, "callback.idempotency_key"},
      {"callback stage payload", [](GroupSpec& g) {
         g.callback = Callback();
         g.callback->then.push_back(Spec("post", "t", "not empty"));
       }, "callback.then[0].payload must be empty"},
      {"callback not_before", [this](GroupSpec& g) {
         g.callback = Callback();
         g.callback->not_before = Now() + absl::Seconds(5);
       }, "callback.not_before"},
      {"fan-in bytes", [](GroupSpec& g) { g.max_fan_in_bytes = 51; }, "max_fan_in_bytes is 51"},
      {"group key", [](GroupSpec& g) { g.idempotency_key = std::string(257, 'k'); },
       "idempotency_key is 257 bytes"},
      {"empty", [](GroupSpec& g) { g.members.clear(); }, "tasks is empty"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    GroupSpec spec = Members(5);
    c.spoil(spec);
    EXPECT_THAT(broker_->SubmitGroupNow(std::move(spec)),
                StatusIs(absl::StatusCode::kInvalidArgument, c.message));
  }
  // Nothing was submitted, and no queue was created on the way.
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_THAT(broker_->ListQueues(), IsEmpty());
}

TEST_F(WorkflowTest, AGroupNeedsRoomForEveryMemberOrNoneIsSubmitted) {
  QueueConfig small = Config("small");
  small.capacity = 3;
  MustCreateQueue(small);
  QueueConfig waiting = Config("waiting");
  waiting.capacity = 1;
  waiting.full_policy = FullPolicy::kWait;
  MustCreateQueue(waiting);
  MustSubmit("small");

  // Two members fit, three do not.
  EXPECT_THAT(broker_->SubmitGroupNow(Members(3, "small")),
              StatusIs(absl::StatusCode::kResourceExhausted, "room for 2 more"));
  // Members spread over two queues: the full one refuses the others too.
  GroupSpec spread = Members(2, "roomy");
  spread.members.push_back(Spec("small"));
  spread.members.push_back(Spec("small"));
  spread.members.push_back(Spec("small"));
  EXPECT_THAT(broker_->SubmitGroupNow(std::move(spread)),
              StatusIs(absl::StatusCode::kResourceExhausted, "no member was submitted"));
  // A WAIT queue does not make a group wait.
  EXPECT_THAT(broker_->SubmitGroupNow(Members(2, "waiting")),
              StatusIs(absl::StatusCode::kResourceExhausted));

  EXPECT_EQ(GetQueue("small").stats.count(TaskState::kReady), 1u);
  EXPECT_THAT(TasksIn("roomy"), IsEmpty());
  EXPECT_THAT(TasksIn("waiting"), IsEmpty());
  EXPECT_EQ(broker_->task_count(), 1u);
  // Exactly the room there is: accepted.
  SubmitGroupResult ok = MustSubmitGroup(Members(2, "small"));
  EXPECT_EQ(GetQueue("small").stats.count(TaskState::kReady), 3u);
  EXPECT_EQ(ok.group.state, GroupState::kRunning);
}

TEST_F(WorkflowTest, SizeAndByteLimitsOfAGroup) {
  BrokerOptions options;
  options.max_group_size = 4;
  options.max_group_bytes = 10;
  Reset(options);
  EXPECT_THAT(broker_->SubmitGroupNow(Members(5)),
              StatusIs(absl::StatusCode::kInvalidArgument, "holds 5 tasks; the limit is 4"));
  GroupSpec heavy;
  heavy.members.push_back(Spec("q", "t", "123456"));
  heavy.members.push_back(Spec("q", "t", "12345"));
  EXPECT_THAT(broker_->SubmitGroupNow(heavy),
              StatusIs(absl::StatusCode::kInvalidArgument, "carry 11 payload bytes"));
  EXPECT_EQ(broker_->task_count(), 0u);
  heavy.members[0].payload = "12345";
  MustSubmitGroup(heavy);  // exactly at the limits
  MustSubmitGroup(Members(4));
  EXPECT_EQ(broker_->task_count(), 6u);
}

TEST_F(WorkflowTest, AcceptedGroupReturnsItsMembersInOrderAndLinksThem) {
  GroupSpec spec = Members(3);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  EXPECT_EQ(r.group.total, 3u);
  EXPECT_EQ(r.group.state, GroupState::kRunning);
  EXPECT_TRUE(r.group.has_callback);
  EXPECT_EQ(r.group.callback_task.value(), 0u);
  EXPECT_EQ(r.group.created_at, Now());
  ASSERT_THAT(r.task_ids, SizeIs(3));
  for (int i = 0; i < 3; ++i) {
    TaskInfo t = Get(r.task_ids[i]);
    EXPECT_EQ(t.payload, absl::StrCat("m", i));
    EXPECT_EQ(t.group_id, r.group.id);
    EXPECT_EQ(t.chain_id.value(), 0u);
    EXPECT_EQ(t.state, TaskState::kReady);
  }
  // The group's id comes from the task id sequence and is no task's.
  EXPECT_NE(r.group.id, r.task_ids[0]);
  EXPECT_THAT(broker_->GetTask(r.group.id), StatusIs(absl::StatusCode::kNotFound));
  // Members are leased in order like any task.
  EXPECT_THAT(broker_test::Ids(LeaseNow({"q"}, 10)),
              ElementsAre(r.task_ids[0], r.task_ids[1], r.task_ids[2]));
}

// ───────────────────────────── groups: counting ─────────────────────────────

TEST_F(WorkflowTest, CountersFollowMembersAsTheyEndEachWay) {
  GroupSpec spec;
  spec.members.push_back(Spec("q", "ok", "m0"));
  spec.members.push_back(Spec("q", "dead", "m1"));
  spec.members.push_back(Spec("q", "cancel", "m2"));
  spec.members.push_back(Spec("exp", "expire", "m3"));
  spec.members.back().expires_at = Now() + absl::Seconds(10);
  spec.members.push_back(Spec("q", "fb", "m4"));
  spec.members.back().fallback_result = "fallback!";
  spec.members.back().retry.max_attempts = 1;
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  const std::vector<TaskId>& m = r.task_ids;

  Succeed(m[0], "r0");
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.ended, 1u);
  EXPECT_EQ(g.succeeded, 1u);
  EXPECT_EQ(g.state, GroupState::kRunning);

  Die(m[1], "it broke");
  g = Group(r.group.id);
  EXPECT_EQ(g.ended, 2u);
  EXPECT_EQ(g.dead, 1u);

  // m2 was leased above along with the others; a queued cancel would be
  // immediate, a running one ends when the worker reports.
  ASSERT_THAT(broker_->CancelTask(m[2]), IsOk());
  EXPECT_THAT(FailOne(m[2], leased_[m[2]].token), IsOk());
  EXPECT_EQ(StateOf(m[2]), TaskState::kCanceled);
  g = Group(r.group.id);
  EXPECT_EQ(g.ended, 3u);
  EXPECT_EQ(g.canceled, 1u);

  AdvanceAndTick(absl::Seconds(11));
  EXPECT_EQ(StateOf(m[3]), TaskState::kExpired);
  g = Group(r.group.id);
  EXPECT_EQ(g.ended, 4u);
  EXPECT_EQ(g.expired, 1u);
  EXPECT_EQ(g.state, GroupState::kRunning);
  EXPECT_EQ(g.finished_at, absl::InfinitePast());

  EXPECT_THAT(FailOne(m[4], Lease(m[4])), IsOk());
  EXPECT_EQ(StateOf(m[4]), TaskState::kFallback);
  g = Group(r.group.id);
  EXPECT_EQ(g.ended, 5u);
  EXPECT_EQ(g.fallback, 1u);
  EXPECT_EQ(g.succeeded, 1u);
  EXPECT_EQ(g.dead, 1u);
  EXPECT_EQ(g.canceled, 1u);
  EXPECT_EQ(g.expired, 1u);
  EXPECT_EQ(g.state, GroupState::kDone);
  EXPECT_EQ(g.finished_at, Now());
  EXPECT_FALSE(g.has_callback);

  std::vector<GroupMemberInfo> members = MembersOf(r.group.id);
  ASSERT_THAT(members, SizeIs(5));
  EXPECT_EQ(members[0].state, TaskState::kSucceeded);
  EXPECT_EQ(members[0].result, "r0");
  EXPECT_EQ(members[1].state, TaskState::kDead);
  EXPECT_EQ(members[1].error, "it broke");
  EXPECT_EQ(members[2].state, TaskState::kCanceled);
  EXPECT_EQ(members[3].state, TaskState::kExpired);
  EXPECT_EQ(members[4].state, TaskState::kFallback);
  EXPECT_EQ(members[4].result, "fallback!");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(members[i].index, static_cast<uint32_t>(i));
    EXPECT_EQ(members[i].task_id, m[i]);
  }
}

// ───────────────────────────── groups: fan-in ─────────────────────────────

TEST_F(WorkflowTest, TheCallbackIsSubmittedOnceWithGroupResultsWhenTheLastMemberEnds) {
  GroupSpec spec = Members(3);
  spec.callback = Callback("cb", std::string("ctx\0\xff", 5));
  spec.callback->priority = 7;
  spec.callback->headers = {{"traceparent", "00-abc-def-01"}};
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  const std::vector<TaskId>& m = r.task_ids;

  // Out of order: the document still lists members in submission order.
  Succeed(m[2], std::string("r2\0bin\xfe", 7));
  Die(m[1], "bad \"quote\"\n\ttab \x01 é");
  EXPECT_THAT(TasksIn("cb"), IsEmpty());
  EXPECT_EQ(Group(r.group.id).callback_task.value(), 0u);
  Succeed(m[0], "r0");

  std::vector<TaskInfo> callbacks = TasksIn("cb");
  ASSERT_THAT(callbacks, SizeIs(1));
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  EXPECT_EQ(g.callback_task, callbacks[0].id);
  TaskInfo cb = Get(g.callback_task);
  EXPECT_EQ(cb.group_id, r.group.id);
  EXPECT_EQ(cb.type, "fan-in");
  EXPECT_EQ(cb.priority, 7u);
  EXPECT_EQ(cb.state, TaskState::kReady);
  ASSERT_THAT(cb.headers, SizeIs(1));

  v1::GroupResults doc = ParseResults(cb.payload);
  EXPECT_EQ(doc.group_id(), r.group.id.ToString());
  EXPECT_EQ(doc.payload(), std::string("ctx\0\xff", 5));
  EXPECT_EQ(doc.total(), 3u);
  EXPECT_EQ(doc.succeeded(), 2u);
  EXPECT_EQ(doc.dead(), 1u);
  EXPECT_EQ(doc.canceled(), 0u);
  EXPECT_FALSE(doc.truncated());
  ASSERT_EQ(doc.members_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(doc.members(i).index(), static_cast<uint32_t>(i));
    EXPECT_EQ(doc.members(i).task_id(), m[i].ToString());
  }
  EXPECT_EQ(doc.members(0).state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(doc.members(0).result(), "r0");
  EXPECT_EQ(doc.members(1).state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(doc.members(1).error(), "bad \"quote\"\n\ttab \x01 é");
  EXPECT_EQ(doc.members(1).result(), "");
  EXPECT_EQ(doc.members(2).result(), std::string("r2\0bin\xfe", 7));
  EXPECT_EQ(doc.members(2).error(), "");

  // The callback is a task like any other; nothing submits it again.
  LeasedTask leased = LeaseOne("cb");
  EXPECT_EQ(leased.id, g.callback_task);
  EXPECT_THAT(CompleteOne(leased.id, leased.token, "summary"), IsOk());
  AdvanceAndTick(absl::Minutes(5));
  EXPECT_THAT(TasksIn("cb"), SizeIs(1));
  EXPECT_EQ(Group(r.group.id).state, GroupState::kDone);
}

TEST_F(WorkflowTest, ACallbackDelayCountsFromWhenTheGroupFinished) {
  GroupSpec spec = Members(1);
  spec.callback = Callback();
  spec.callback->delay = absl::Seconds(30);
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  AdvanceAndTick(absl::Minutes(10));
  Succeed(r.task_ids[0], "x");
  TaskId cb = Group(r.group.id).callback_task;
  EXPECT_EQ(StateOf(cb), TaskState::kScheduled);
  EXPECT_THAT(LeaseNow({"cb"}), IsEmpty());
  AdvanceAndTick(absl::Seconds(29));
  EXPECT_THAT(LeaseNow({"cb"}), IsEmpty());
  AdvanceAndTick(absl::Seconds(1));
  EXPECT_THAT(broker_test::Ids(LeaseNow({"cb"})), ElementsAre(cb));
}

TEST_F(WorkflowTest, ResultsOverMaxFanInBytesAreLeftOutAndTruncatedIsSet) {
  GroupSpec spec = Members(3);
  spec.callback = Callback();
  spec.max_fan_in_bytes = 10;
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  Succeed(r.task_ids[0], "12345678");
  Succeed(r.task_ids[1], "abcdefgh");
  Die(r.task_ids[2], "e");
  v1::GroupResults doc = CallbackResults(r.group.id);
  EXPECT_TRUE(doc.truncated());
  EXPECT_EQ(doc.succeeded(), 2u);
  EXPECT_EQ(doc.dead(), 1u);
  ASSERT_EQ(doc.members_size(), 3);  // the list still fits
  for (const v1::GroupMember& member : doc.members()) {
    EXPECT_EQ(member.result(), "");
    EXPECT_EQ(member.error(), "");
  }
  EXPECT_EQ(doc.members(2).state(), v1::TASK_STATE_DEAD);
  // The callback reads them with GetGroup(include_results).
  std::vector<GroupMemberInfo> members = MembersOf(r.group.id);
  ASSERT_THAT(members, SizeIs(3));
  EXPECT_EQ(members[0].result, "12345678");
  EXPECT_EQ(members[1].result, "abcdefgh");
  EXPECT_EQ(members[2].error, "e");
}

TEST_F(WorkflowTest, ResultsThatWouldNotFitInAPayloadAreLeftOutButTheListStays) {
  // max_fan_in_bytes defaults to half of a small payload limit (1000): 900
  // bytes of results fit that budget, but not the payload once base64.
  BrokerOptions options;
  options.max_payload_bytes = 2000;
  Reset(options);
  GroupSpec spec = Members(10);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  for (TaskId id : r.task_ids) Succeed(id, std::string(90, 'r'));
  std::string payload = Get(Group(r.group.id).callback_task).payload;
  EXPECT_LE(payload.size(), 2000u);
  v1::GroupResults doc = ParseResults(payload);
  EXPECT_TRUE(doc.truncated());
  ASSERT_EQ(doc.members_size(), 10);
  EXPECT_EQ(doc.members(9).task_id(), r.task_ids[9].ToString());
  EXPECT_EQ(doc.members(9).result(), "");
}

TEST_F(WorkflowTest, AMemberListThatWouldNotFitInAPayloadIsLeftOut) {
  BrokerOptions options;
  options.max_payload_bytes = 1000;
  Reset(options);
  GroupSpec spec = Members(40);
  spec.callback = Callback("cb", "mine");
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  for (TaskId id : r.task_ids) Succeed(id, "");
  std::string payload = Get(Group(r.group.id).callback_task).payload;
  EXPECT_LE(payload.size(), 1000u);
  v1::GroupResults doc = ParseResults(payload);
  EXPECT_TRUE(doc.truncated());
  EXPECT_EQ(doc.members_size(), 0);
  EXPECT_EQ(doc.total(), 40u);
  EXPECT_EQ(doc.succeeded(), 40u);
  EXPECT_EQ(doc.payload(), "mine");
  EXPECT_EQ(doc.group_id(), r.group.id.ToString());
}

TEST_F(WorkflowTest, ACallbackIsSubmittedEvenWhenItsQueueIsFull) {
  QueueConfig cbq = Config("cb");
  cbq.capacity = 1;
  MustCreateQueue(cbq);
  MustSubmit("cb");
  EXPECT_THAT(broker_->SubmitNow(Spec("cb")), StatusIs(absl::StatusCode::kResourceExhausted));
  GroupSpec spec = Members(2);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  Succeed(r.task_ids[0], "a");
  Succeed(r.task_ids[1], "b");
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  ASSERT_NE(g.callback_task.value(), 0u);
  EXPECT_EQ(StateOf(g.callback_task), TaskState::kReady);
  EXPECT_EQ(GetQueue("cb").stats.count(TaskState::kReady), 2u);
}

TEST_F(WorkflowTest, MembersDroppedByRetentionStillReachTheFanIn) {
  QueueConfig q = Config("q");
  q.retained = 0;
  MustCreateQueue(q);
  GroupSpec spec = Members(3);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  Succeed(r.task_ids[0], "r0");
  Die(r.task_ids[1], "e1");
  EXPECT_THAT(broker_->GetTask(r.task_ids[0]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetTask(r.task_ids[1]), StatusIs(absl::StatusCode::kNotFound));
  // Kept by the group meanwhile.
  std::vector<GroupMemberInfo> members = MembersOf(r.group.id);
  ASSERT_THAT(members, SizeIs(3));
  EXPECT_EQ(members[0].result, "r0");
  EXPECT_EQ(members[1].error, "e1");
  EXPECT_EQ(members[2].state, TaskState::kRunning);
  Succeed(r.task_ids[2], "r2");  // the last one: dropped right after its end

  v1::GroupResults doc = CallbackResults(r.group.id);
  EXPECT_FALSE(doc.truncated());
  ASSERT_EQ(doc.members_size(), 3);
  EXPECT_EQ(doc.members(0).result(), "r0");
  EXPECT_EQ(doc.members(1).error(), "e1");
  EXPECT_EQ(doc.members(2).result(), "r2");
  EXPECT_EQ(doc.members(2).state(), v1::TASK_STATE_SUCCEEDED);
}

// ───────────────────────────── groups: cancel, watch ─────────────────────────────

TEST_F(WorkflowTest, CancelGroupCancelsQueuedMembersAtOnceAndTheCallbackNeverRuns) {
  GroupSpec spec = Members(4);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  const std::vector<TaskId>& m = r.task_ids;
  std::vector<LeasedTask> running = LeaseNow({"q"}, 2);
  ASSERT_THAT(broker_test::Ids(running), ElementsAre(m[0], m[1]));
  auto watch = std::make_shared<GroupWatchCapture>();
  ASSERT_THAT(broker_->WatchGroup(r.group.id, Capture(watch)), IsOk());

  absl::StatusOr<GroupInfo> canceled = broker_->CancelGroup(r.group.id);
  ASSERT_THAT(canceled, IsOk());
  EXPECT_EQ(canceled->state, GroupState::kCanceled);
  EXPECT_EQ(canceled->canceled, 2u);
  EXPECT_EQ(canceled->ended, 2u);
  EXPECT_EQ(canceled->finished_at, Now());
  EXPECT_EQ(StateOf(m[2]), TaskState::kCanceled);
  EXPECT_EQ(StateOf(m[3]), TaskState::kCanceled);
  EXPECT_EQ(StateOf(m[0]), TaskState::kRunning);
  EXPECT_TRUE(Get(m[0]).cancel_requested);
  EXPECT_TRUE(HeartbeatOne(m[1], running[1].token).cancel);

  // The watch ends once, with the group as CancelGroup left it.
  ASSERT_EQ(watch->final_count(), 1);
  EXPECT_TRUE(watch->finals.back());
  EXPECT_EQ(watch->calls.back().state, GroupState::kCanceled);
  EXPECT_EQ(watch->calls.back().canceled, 2u);
  EXPECT_EQ(watch->calls.back().ended, 2u);

  // The running ones finish later: a complete that arrives first wins.
  EXPECT_THAT(CompleteOne(m[0], running[0].token, "late"), IsOk());
  EXPECT_THAT(FailOne(m[1], running[1].token), IsOk());
  EXPECT_EQ(StateOf(m[0]), TaskState::kSucceeded);
  EXPECT_EQ(StateOf(m[1]), TaskState::kCanceled);
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kCanceled);
  EXPECT_EQ(g.ended, 4u);
  EXPECT_EQ(g.succeeded, 1u);
  EXPECT_EQ(g.canceled, 3u);
  EXPECT_EQ(g.callback_task.value(), 0u);
  AdvanceAndTick(absl::Minutes(1));
  EXPECT_THAT(TasksIn("cb"), IsEmpty());
  EXPECT_EQ(watch->final_count(), 1);

  // Canceling again changes nothing; a DONE group cannot be canceled.
  absl::StatusOr<GroupInfo> again = broker_->CancelGroup(r.group.id);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->state, GroupState::kCanceled);
  SubmitGroupResult done = MustSubmitGroup(Members(1));
  Succeed(done.task_ids[0], "x");
  EXPECT_THAT(broker_->CancelGroup(done.group.id),
              StatusIs(absl::StatusCode::kFailedPrecondition, "already DONE"));
  EXPECT_THAT(broker_->CancelGroup(TaskId(999'999)), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(WorkflowTest, WatchGroupGetsEveryChangeAndExactlyOneFinal) {
  GroupSpec spec = Members(3);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  auto watch = std::make_shared<GroupWatchCapture>();
  absl::StatusOr<WatchId> wid = broker_->WatchGroup(r.group.id, Capture(watch));
  ASSERT_THAT(wid, IsOk());
  EXPECT_NE(*wid, 0u);
  ASSERT_THAT(watch->calls, SizeIs(1));
  EXPECT_FALSE(watch->finals[0]);
  EXPECT_EQ(watch->calls[0].ended, 0u);

  Succeed(r.task_ids[0], "a");
  Die(r.task_ids[1], "b");
  EXPECT_EQ(watch->final_count(), 0);
  EXPECT_EQ(watch->calls.back().ended, 2u);
  EXPECT_EQ(watch->calls.back().dead, 1u);
  Succeed(r.task_ids[2], "c");
  ASSERT_EQ(watch->final_count(), 1);
  EXPECT_TRUE(watch->finals.back());
  const GroupInfo& last = watch->calls.back();
  EXPECT_EQ(last.state, GroupState::kDone);
  EXPECT_EQ(last.ended, 3u);
  EXPECT_NE(last.callback_task.value(), 0u);
  for (size_t i = 1; i < watch->calls.size(); ++i) {
    EXPECT_GE(watch->calls[i].version, watch->calls[i - 1].version);
  }
  const size_t calls = watch->calls.size();
  // Nothing after the final one (the callback running is not a group change).
  LeasedTask cb = LeaseOne("cb");
  EXPECT_THAT(CompleteOne(cb.id, cb.token), IsOk());
  AdvanceAndTick(absl::Hours(1));
  EXPECT_EQ(watch->calls.size(), calls);

  // A watch of an ended group gets one final call and no id.
  auto late = std::make_shared<GroupWatchCapture>();
  absl::StatusOr<WatchId> late_id = broker_->WatchGroup(r.group.id, Capture(late));
  ASSERT_THAT(late_id, IsOk());
  EXPECT_EQ(*late_id, 0u);
  ASSERT_THAT(late->calls, SizeIs(1));
  EXPECT_TRUE(late->finals[0]);
  EXPECT_THAT(broker_->WatchGroup(TaskId(424242), Capture(late)),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(WorkflowTest, UnwatchGroupStopsNotifications) {
  SubmitGroupResult r = MustSubmitGroup(Members(2));
  auto watch = std::make_shared<GroupWatchCapture>();
  absl::StatusOr<WatchId> wid = broker_->WatchGroup(r.group.id, Capture(watch));
  ASSERT_THAT(wid, IsOk());
  broker_->UnwatchGroup(*wid);
  Succeed(r.task_ids[0], "a");
  Succeed(r.task_ids[1], "b");
  EXPECT_THAT(watch->calls, SizeIs(1));
}

// ───────────────────────────── groups: idempotency, paging ─────────────────────────────

TEST_F(WorkflowTest, AGroupIdempotencyKeyReturnsTheOriginalGroupAndSubmitsNothing) {
  GroupSpec spec = Members(3);
  spec.idempotency_key = "batch-7";
  SubmitGroupResult first = MustSubmitGroup(spec);
  EXPECT_EQ(Group(first.group.id).idempotency_key, "batch-7");
  Succeed(first.task_ids[0], "a");

  GroupSpec again = Members(5, "elsewhere");
  again.idempotency_key = "batch-7";
  absl::StatusOr<SubmitGroupResult> second = broker_->SubmitGroupNow(again);
  ASSERT_THAT(second, IsOk());
  EXPECT_TRUE(second->deduplicated);
  EXPECT_EQ(second->group.id, first.group.id);
  EXPECT_EQ(second->group.total, 3u);
  EXPECT_EQ(second->group.succeeded, 1u);
  EXPECT_EQ(second->task_ids, first.task_ids);
  EXPECT_EQ(broker_->task_count(), 3u);
  EXPECT_THAT(TasksIn("elsewhere"), IsEmpty());

  GroupSpec other = Members(1);
  other.idempotency_key = "batch-8";
  SubmitGroupResult third = MustSubmitGroup(other);
  EXPECT_NE(third.group.id, first.group.id);
}

TEST_F(WorkflowTest, GetGroupPagesMembersAndIncludesResultsOnlyWhenAsked) {
  SubmitGroupResult r = MustSubmitGroup(Members(25));
  for (int i = 0; i < 15; ++i) Succeed(r.task_ids[i], absl::StrCat("r", i));

  absl::StatusOr<GroupInfo> plain = broker_->GetGroup(r.group.id, false, false, 0, 0);
  ASSERT_THAT(plain, IsOk());
  EXPECT_THAT(plain->members, IsEmpty());
  EXPECT_EQ(plain->total, 25u);
  EXPECT_EQ(plain->succeeded, 15u);

  absl::StatusOr<GroupInfo> page = broker_->GetGroup(r.group.id, true, false, 10, 10);
  ASSERT_THAT(page, IsOk());
  ASSERT_THAT(page->members, SizeIs(10));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(page->members[i].index, static_cast<uint32_t>(10 + i));
    EXPECT_EQ(page->members[i].task_id, r.task_ids[10 + i]);
    EXPECT_EQ(page->members[i].result, "");
  }
  EXPECT_EQ(page->members[4].state, TaskState::kSucceeded);
  EXPECT_EQ(page->members[5].state, TaskState::kRunning);  // leased with the others

  page = broker_->GetGroup(r.group.id, true, true, 10, 10);
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->members[0].result, "r10");
  EXPECT_EQ(page->members[4].result, "r14");
  EXPECT_EQ(page->members[5].result, "");

  page = broker_->GetGroup(r.group.id, true, false, 20, 100);  // the tail
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(page->members, SizeIs(5));
  page = broker_->GetGroup(r.group.id, true, false, 25, 100);  // past the end
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(page->members, IsEmpty());
  page = broker_->GetGroup(r.group.id, true, false, 0, 0);  // default page
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(page->members, SizeIs(25));
  EXPECT_THAT(broker_->GetGroup(r.group.id, true, false, 0, 10'000), IsOk());
  EXPECT_THAT(broker_->GetGroup(r.group.id, true, false, 0, 10'001),
              StatusIs(absl::StatusCode::kInvalidArgument, "member_limit is 10001"));
  EXPECT_THAT(broker_->GetGroup(TaskId(77), false, false, 0, 0),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
}

// ───────────────────────────── groups: purge, requeue, TTL ─────────────────────────────

TEST_F(WorkflowTest, PurgingQueuedMembersCountsThemCanceledAndCompletesTheGroup) {
  GroupSpec spec = Members(3);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  LeasedTask first = LeaseOne("q");
  ASSERT_EQ(first.id, r.task_ids[0]);
  EXPECT_THAT(CompleteOne(first.id, first.token, "r0"), IsOk());
  absl::StatusOr<uint64_t> purged = broker_->PurgeQueue("q");
  ASSERT_THAT(purged, IsOk());
  EXPECT_EQ(*purged, 2u);

  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  EXPECT_EQ(g.succeeded, 1u);
  EXPECT_EQ(g.canceled, 2u);
  EXPECT_EQ(g.ended, 3u);
  ASSERT_THAT(TasksIn("cb"), SizeIs(1));
  v1::GroupResults doc = CallbackResults(r.group.id);
  ASSERT_EQ(doc.members_size(), 3);
  EXPECT_EQ(doc.members(0).result(), "r0");
  EXPECT_EQ(doc.members(1).state(), v1::TASK_STATE_CANCELED);
  EXPECT_EQ(doc.members(2).state(), v1::TASK_STATE_CANCELED);
  EXPECT_THAT(doc.members(2).error(), HasSubstr("purged"));
  // The purged members are gone; the group still lists them.
  EXPECT_THAT(broker_->GetTask(r.task_ids[1]), StatusIs(absl::StatusCode::kNotFound));
  std::vector<GroupMemberInfo> members = MembersOf(r.group.id);
  ASSERT_THAT(members, SizeIs(3));
  EXPECT_EQ(members[1].state, TaskState::kCanceled);
}

TEST_F(WorkflowTest, ARequeuedDeadMemberOfARunningGroupCountsAsRunningAgain) {
  GroupSpec spec = Members(2);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  Die(r.task_ids[0], "first try");
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.dead, 1u);
  EXPECT_EQ(g.ended, 1u);

  absl::StatusOr<uint64_t> requeued = broker_->RequeueDeadLetters("q", {r.task_ids[0]});
  ASSERT_THAT(requeued, IsOk());
  EXPECT_EQ(*requeued, 1u);
  g = Group(r.group.id);
  EXPECT_EQ(g.dead, 0u);
  EXPECT_EQ(g.ended, 0u);
  EXPECT_EQ(MembersOf(r.group.id)[0].state, TaskState::kReady);

  // The other member ends: the group waits for the requeued one.
  Succeed(r.task_ids[1], "b");
  g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kRunning);
  EXPECT_THAT(TasksIn("cb"), IsEmpty());

  Succeed(r.task_ids[0], "second try");  // leased again above, with a new token
  g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  EXPECT_EQ(g.succeeded, 2u);
  EXPECT_EQ(g.dead, 0u);
  ASSERT_THAT(TasksIn("cb"), SizeIs(1));
  v1::GroupResults doc = CallbackResults(r.group.id);
  EXPECT_EQ(doc.succeeded(), 2u);
  ASSERT_EQ(doc.members_size(), 2);
  EXPECT_EQ(doc.members(0).result(), "second try");
  EXPECT_EQ(doc.members(0).error(), "");
}

TEST_F(WorkflowTest, RequeueAfterTheGroupIsDoneChangesNothing) {
  for (bool with_callback : {true, false}) {
    SCOPED_TRACE(with_callback ? "with a callback" : "without a callback");
    GroupSpec spec = Members(1, with_callback ? "q1" : "q2");
    if (with_callback) spec.callback = Callback();
    SubmitGroupResult r = MustSubmitGroup(std::move(spec));
    const std::string queue = with_callback ? "q1" : "q2";
    Die(r.task_ids[0], "dead", queue);
    GroupInfo before = Group(r.group.id);
    ASSERT_EQ(before.state, GroupState::kDone);
    ASSERT_EQ(before.dead, 1u);
    EXPECT_NE(before.finished_at, absl::InfinitePast());

    ASSERT_THAT(broker_->RequeueDeadLetters(queue, {}), IsOk());
    EXPECT_EQ(StateOf(r.task_ids[0]), TaskState::kReady);
    GroupInfo g = Group(r.group.id);
    EXPECT_EQ(g.state, GroupState::kDone);
    EXPECT_EQ(g.dead, 1u);
    EXPECT_EQ(g.ended, 1u);
    EXPECT_EQ(g.finished_at, before.finished_at);

    leased_.erase(r.task_ids[0]);
    Succeed(r.task_ids[0], "later", queue);
    g = Group(r.group.id);
    EXPECT_EQ(g.state, GroupState::kDone);
    EXPECT_EQ(g.dead, 1u);
    EXPECT_EQ(g.succeeded, 0u);
    EXPECT_EQ(g.callback_task, before.callback_task);
  }
  EXPECT_THAT(TasksIn("cb"), SizeIs(1));
}

TEST_F(WorkflowTest, FinishedGroupsAndChainsAreDroppedAfterTheWorkflowTtl) {
  BrokerOptions options;
  options.workflow_ttl = absl::Hours(1);
  Reset(options);
  GroupSpec with_cb = Members(1, "a");
  with_cb.callback = Callback();
  with_cb.idempotency_key = "key";
  SubmitGroupResult a = MustSubmitGroup(with_cb);
  SubmitGroupResult b = MustSubmitGroup(Members(1, "b"));  // no callback
  SubmitGroupResult c = MustSubmitGroup(Members(1, "c"));  // canceled
  TaskSpec chained = Spec("d");
  chained.then.push_back(Stage("e"));
  TaskId chain = MustSubmit(chained);

  Succeed(a.task_ids[0], "x", "a");
  Succeed(b.task_ids[0], "x", "b");
  ASSERT_THAT(broker_->CancelGroup(c.group.id), IsOk());
  Succeed(chain, "x", "d");
  Succeed(Chain(chain).stage_list[1].task_id, "y", "e");
  EXPECT_EQ(Chain(chain).state, ChainState::kSucceeded);
  EXPECT_EQ(Group(b.group.id).finished_at, Now());

  AdvanceAndTick(absl::Minutes(59));
  for (const SubmitGroupResult* g : {&a, &b, &c}) {
    EXPECT_THAT(broker_->GetGroup(g->group.id, false, false, 0, 0), IsOk());
  }
  EXPECT_THAT(broker_->GetChain(chain), IsOk());
  AdvanceAndTick(absl::Minutes(2));
  for (const SubmitGroupResult* g : {&a, &b, &c}) {
    SCOPED_TRACE(g->group.id.ToString());
    EXPECT_THAT(broker_->GetGroup(g->group.id, false, false, 0, 0),
                StatusIs(absl::StatusCode::kNotFound));
  }
  EXPECT_THAT(broker_->GetChain(chain), StatusIs(absl::StatusCode::kNotFound));
  // The key went with its group.
  absl::StatusOr<SubmitGroupResult> again = broker_->SubmitGroupNow(with_cb);
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->deduplicated);
  EXPECT_NE(again->group.id, a.group.id);
}

TEST_F(WorkflowTest, ARunningGroupIsNeverDropped) {
  BrokerOptions options;
  options.workflow_ttl = absl::Minutes(1);
  Reset(options);
  SubmitGroupResult r = MustSubmitGroup(Members(2));
  Succeed(r.task_ids[0], "x");
  AdvanceAndTick(absl::Hours(2));
  EXPECT_EQ(Group(r.group.id).state, GroupState::kRunning);
}

TEST_F(WorkflowTest, TenThousandMembersCompleteWithOneCallback) {
  constexpr int kMembers = 10'000;
  GroupSpec spec = Members(kMembers);
  spec.callback = Callback();
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  ASSERT_THAT(r.task_ids, SizeIs(kMembers));
  int done = 0;
  while (done < kMembers) {
    std::vector<LeasedTask> batch = LeaseNow({"q"}, 1000);
    ASSERT_FALSE(batch.empty());
    std::vector<CompleteItem> items;
    for (const LeasedTask& t : batch) items.push_back(CompleteItem{t.id, t.token, ""});
    for (const absl::Status& s : broker_->Complete(items)) {
      ASSERT_THAT(s, IsOk());
    }
    done += static_cast<int>(batch.size());
    if (done < kMembers) {
      ASSERT_THAT(TasksIn("cb"), IsEmpty());
    }
  }
  ASSERT_THAT(TasksIn("cb"), SizeIs(1));
  GroupInfo g = Group(r.group.id);
  EXPECT_EQ(g.state, GroupState::kDone);
  EXPECT_EQ(g.succeeded, static_cast<uint32_t>(kMembers));
  v1::GroupResults doc = CallbackResults(r.group.id);
  EXPECT_EQ(doc.total(), static_cast<uint32_t>(kMembers));
  EXPECT_EQ(doc.succeeded(), static_cast<uint32_t>(kMembers));
  ASSERT_EQ(doc.members_size(), kMembers);
  for (int i = 0; i < kMembers; i += 997) {
    EXPECT_EQ(doc.members(i).index(), static_cast<uint32_t>(i));
    EXPECT_EQ(doc.members(i).task_id(), r.task_ids[i].ToString());
  }
}

// ───────────────────────────── chains ─────────────────────────────

TEST_F(WorkflowTest, AChainRunsItsStagesAcrossQueuesPassingEachResultOn) {
  TaskSpec first = Spec("a", "fetch", "p0");
  first.then.push_back(Stage("b", "parse"));
  first.then.push_back(Stage("c", "store"));
  first.then[1].priority = 5;
  TaskId id = MustSubmit(first);

  ChainInfo c = Chain(id);
  EXPECT_EQ(c.id, id);
  EXPECT_EQ(c.state, ChainState::kRunning);
  EXPECT_EQ(c.stages, 3u);
  EXPECT_EQ(c.current_stage, 0u);
  ASSERT_THAT(c.stage_list, SizeIs(3));
  EXPECT_EQ(c.stage_list[0].task_id, id);
  EXPECT_EQ(c.stage_list[0].type, "fetch");
  EXPECT_EQ(c.stage_list[1].queue, "b");
  EXPECT_EQ(c.stage_list[1].type, "parse");
  EXPECT_EQ(c.stage_list[2].task_id.value(), 0u);
  EXPECT_FALSE(c.stage_list[2].state.has_value());
  TaskInfo t = Get(id);
  EXPECT_EQ(t.chain_id, id);
  EXPECT_EQ(t.chain_stage, 0u);

  LeasedTask s0 = LeaseOne("a");
  EXPECT_EQ(s0.payload, "p0");
  EXPECT_THAT(LeaseNow({"b", "c"}), IsEmpty());
  EXPECT_THAT(CompleteOne(s0.id, s0.token, std::string("r0\0", 3)), IsOk());

  c = Chain(id);
  EXPECT_EQ(c.current_stage, 1u);
  EXPECT_EQ(c.stage_list[0].state, TaskState::kSucceeded);
  LeasedTask s1 = LeaseOne("b");
  EXPECT_EQ(s1.payload, std::string("r0\0", 3));
  EXPECT_EQ(s1.type, "parse");
  EXPECT_EQ(c.stage_list[1].task_id, s1.id);
  t = Get(s1.id);
  EXPECT_EQ(t.chain_id, id);
  EXPECT_EQ(t.chain_stage, 1u);
  EXPECT_EQ(t.group_id.value(), 0u);
  EXPECT_THAT(CompleteOne(s1.id, s1.token, "r1"), IsOk());

  LeasedTask s2 = LeaseOne("c");
  EXPECT_EQ(s2.payload, "r1");
  EXPECT_EQ(Get(s2.id).priority, 5u);
  EXPECT_EQ(Chain(id).state, ChainState::kRunning);
  EXPECT_THAT(CompleteOne(s2.id, s2.token, "r2"), IsOk());

  c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kSucceeded);
  EXPECT_EQ(c.result, "r2");
  EXPECT_EQ(c.error, "");
  EXPECT_EQ(c.current_stage, 2u);
  EXPECT_EQ(c.finished_at, Now());
  for (const auto& stage : c.stage_list) {
    EXPECT_EQ(stage.state, TaskState::kSucceeded);
  }
  EXPECT_THAT(TasksIn("a"), SizeIs(1));
  EXPECT_THAT(TasksIn("b"), SizeIs(1));
  EXPECT_THAT(TasksIn("c"), SizeIs(1));
}

TEST_F(WorkflowTest, AStageDelayCountsFromItsSubmission) {
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b"));
  first.then[0].delay = absl::Seconds(30);
  TaskId id = MustSubmit(first);
  AdvanceAndTick(absl::Minutes(5));
  Succeed(id, "x", "a");
  TaskId next = Chain(id).stage_list[1].task_id;
  EXPECT_EQ(StateOf(next), TaskState::kScheduled);
  AdvanceAndTick(absl::Seconds(29));
  EXPECT_THAT(LeaseNow({"b"}), IsEmpty());
  AdvanceAndTick(absl::Seconds(1));
  EXPECT_THAT(broker_test::Ids(LeaseNow({"b"})), ElementsAre(next));
}

TEST_F(WorkflowTest, AFailingStageEndsTheChainFailedAndNoLaterStageRuns) {
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b", "flaky"));
  first.then[0].retry.max_attempts = 2;
  first.then[0].retry.initial_backoff = absl::Seconds(1);
  first.then[0].retry.jitter = 0.0;
  first.then.push_back(Stage("c"));
  TaskId id = MustSubmit(first);
  Succeed(id, "x", "a");
  TaskId s1 = Chain(id).stage_list[1].task_id;

  LeasedTask l = LeaseOne("b");
  EXPECT_THAT(FailOne(s1, l.token, true, "first"), IsOk());
  EXPECT_EQ(Chain(id).state, ChainState::kRunning);  // a retry is not an end
  AdvanceAndTick(absl::Seconds(1));
  l = LeaseOne("b");
  EXPECT_THAT(FailOne(s1, l.token, true, "boom"), IsOk());
  EXPECT_EQ(StateOf(s1), TaskState::kDead);

  ChainInfo c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kFailed);
  EXPECT_THAT(c.error, HasSubstr("stage 1"));
  EXPECT_THAT(c.error, HasSubstr("DEAD"));
  EXPECT_THAT(c.error, HasSubstr("boom"));
  EXPECT_EQ(c.result, "");
  EXPECT_EQ(c.finished_at, Now());
  EXPECT_EQ(c.stage_list[1].state, TaskState::kDead);
  EXPECT_EQ(c.stage_list[1].error, "boom");
  EXPECT_EQ(c.stage_list[2].task_id.value(), 0u);
  EXPECT_THAT(TasksIn("c"), IsEmpty());
  EXPECT_THAT(broker_->CancelChain(id), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(WorkflowTest, AFallbackStageContinuesWithItsFallbackResult) {
  TaskSpec first = Spec("a");
  first.fallback_result = "plan b";
  first.retry.max_attempts = 1;
  first.then.push_back(Stage("b"));
  TaskId id = MustSubmit(first);
  EXPECT_THAT(FailOne(id, Lease(id, "a")), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kFallback);
  LeasedTask next = LeaseOne("b");
  EXPECT_EQ(next.payload, "plan b");
  EXPECT_THAT(CompleteOne(next.id, next.token, "done"), IsOk());
  EXPECT_EQ(Chain(id).state, ChainState::kSucceeded);
  EXPECT_EQ(Chain(id).result, "done");
}

TEST_F(WorkflowTest, CancelChainOnAQueuedStageEndsItCanceled) {
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b"));
  first.then.push_back(Stage("c"));
  TaskId id = MustSubmit(first);
  Succeed(id, "x", "a");
  TaskId s1 = Chain(id).stage_list[1].task_id;
  ASSERT_EQ(StateOf(s1), TaskState::kReady);

  absl::StatusOr<ChainInfo> c = broker_->CancelChain(id);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->state, ChainState::kCanceled);
  EXPECT_EQ(StateOf(s1), TaskState::kCanceled);
  EXPECT_THAT(LeaseNow({"b"}), IsEmpty());
  EXPECT_THAT(TasksIn("c"), IsEmpty());
  EXPECT_EQ(Chain(id).stage_list[1].state, TaskState::kCanceled);
  EXPECT_THAT(broker_->CancelChain(id),
              StatusIs(absl::StatusCode::kFailedPrecondition, "already ended (CANCELED)"));
}

TEST_F(WorkflowTest, CancelChainOnARunningStageThatCompletesSubmitsNoNextStage) {
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b"));
  TaskId id = MustSubmit(first);
  LeasedTask l = LeaseOne("a");
  absl::StatusOr<ChainInfo> c = broker_->CancelChain(id);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->state, ChainState::kRunning);  // until the worker reports
  EXPECT_TRUE(Get(id).cancel_requested);
  EXPECT_TRUE(HeartbeatOne(id, l.token).cancel);
  // The worker finished first: the task succeeded, the chain goes no further.
  EXPECT_THAT(CompleteOne(id, l.token, "r"), IsOk());
  EXPECT_EQ(StateOf(id), TaskState::kSucceeded);
  ChainInfo after = Chain(id);
  EXPECT_EQ(after.state, ChainState::kCanceled);
  EXPECT_EQ(after.stage_list[1].task_id.value(), 0u);
  EXPECT_THAT(TasksIn("b"), IsEmpty());
}

TEST_F(WorkflowTest, CancelTaskOfAStageEndsTheChainCanceled) {
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b"));
  TaskId id = MustSubmit(first);
  ASSERT_THAT(broker_->CancelTask(id), IsOk());
  ChainInfo c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kCanceled);
  EXPECT_THAT(TasksIn("b"), IsEmpty());
}

TEST_F(WorkflowTest, GetChainOfATaskThatIsNotAChainIsNotFound) {
  TaskId plain = MustSubmit("a");
  EXPECT_THAT(broker_->GetChain(plain), StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_THAT(broker_->CancelChain(plain), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetChain(TaskId(123456)), StatusIs(absl::StatusCode::kNotFound));
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b"));
  TaskId id = MustSubmit(first);
  Succeed(id, "x", "a");
  TaskId s1 = Chain(id).stage_list[1].task_id;
  // A later stage is not a chain's id.
  EXPECT_THAT(broker_->GetChain(s1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(Get(plain).chain_id.value(), 0u);
  EXPECT_EQ(Get(plain).group_id.value(), 0u);
}

TEST_F(WorkflowTest, StageTemplatesAreValidatedNamingThenIndexAndField) {
  BrokerOptions options;
  options.max_chain_stages = 3;
  Reset(options);
  struct Case {
    std::string name;
    std::function<void(TaskSpec&)> spoil;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"payload", [](TaskSpec& s) { s.then[0].payload = "x"; }, "then[0].payload must be empty"},
      {"nested", [](TaskSpec& s) { s.then[1].then.push_back(Stage("z")); },
       "then[1].then is set on a stage"},
      {"not_before", [this](TaskSpec& s) { s.then[1].not_before = Now() + absl::Seconds(1); },
       "then[1].not_before"},
      {"expires_at", [this](TaskSpec& s) { s.then[0].expires_at = Now() + absl::Hours(1); },
       "then[0].expires_at"},
      {"idempotency_key", [](TaskSpec& s) { s.then[1].idempotency_key = "k"; },
       "then[1].idempotency_key"},
      {"too many", [](TaskSpec& s) {
         s.then.push_back(Stage("x"));
         s.then.push_back(Stage("y"));
       }, "then holds 4 stages; at most 3"},
      {"delay", [](TaskSpec& s) { s.then[0].delay = absl::Seconds(-1); }, "then[0].delay is -1s"},
      {"priority", [](TaskSpec& s) { s.then[1].priority = 10; }, "then[1].priority is 10"},
      {"queue", [](TaskSpec& s) { s.then[0].queue = ""; }, "then[0].queue"},
      {"delay on a task", [](TaskSpec& s) { s.delay = absl::Seconds(1); },
       "delay is a template field"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TaskSpec spec = Spec("a");
    spec.then.push_back(Stage("b"));
    spec.then.push_back(Stage("c"));
    c.spoil(spec);
    EXPECT_THAT(broker_->SubmitNow(std::move(spec)),
                StatusIs(absl::StatusCode::kInvalidArgument, c.message));
  }
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_THAT(broker_->ListQueues(), IsEmpty());
  // Three stages after the first are the limit, and allowed.
  TaskSpec longest = Spec("a");
  for (int i = 0; i < 3; ++i) longest.then.push_back(Stage("b"));
  EXPECT_EQ(Chain(MustSubmit(longest)).stages, 4u);
}

TEST_F(WorkflowTest, ChainsComeFromSubmitBatchAndAKeyedResubmitMakesNoSecondChain) {
  TaskSpec keyed = Spec("a");
  keyed.idempotency_key = "once";  // allowed on the first task
  keyed.then.push_back(Stage("b"));
  TaskSpec plain = Spec("a");
  plain.then.push_back(Stage("c"));
  absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> batch =
      broker_->SubmitBatch({keyed, plain});
  ASSERT_THAT(batch, IsOk());
  ASSERT_THAT(*batch, SizeIs(2));
  ASSERT_THAT((*batch)[0], IsOk());
  ASSERT_THAT((*batch)[1], IsOk());
  const TaskId first = (*batch)[0]->task.id;
  EXPECT_EQ(Chain(first).stage_list[1].queue, "b");
  EXPECT_EQ(Chain((*batch)[1]->task.id).stage_list[1].queue, "c");

  absl::StatusOr<SubmitResult> again = broker_->SubmitNow(keyed);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(again->task.id, first);
  EXPECT_EQ(broker_->task_count(), 2u);
  Succeed(first, "r", "a");
  EXPECT_THAT(TasksIn("b"), SizeIs(1));
}

TEST_F(WorkflowTest, AStageThatCannotBeSubmittedEndsTheChainFailed) {
  BrokerOptions options;
  options.max_queues = 1;
  Reset(options);
  TaskSpec first = Spec("a");
  first.then.push_back(Stage("b"));  // a second queue: over the limit
  TaskId id = MustSubmit(first);
  Succeed(id, "r", "a");
  ChainInfo c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kFailed);
  EXPECT_THAT(c.error, HasSubstr("stage 1 could not be submitted"));
  EXPECT_THAT(c.error, HasSubstr("--max-queues"));
  EXPECT_EQ(c.stage_list[1].task_id.value(), 0u);
}

TEST_F(WorkflowTest, AFirstTaskThatExpiresEndsTheChainFailed) {
  TaskSpec first = Spec("a");
  first.expires_at = Now() + absl::Seconds(5);  // allowed on the first task
  first.then.push_back(Stage("b"));
  TaskId id = MustSubmit(first);
  AdvanceAndTick(absl::Seconds(6));
  EXPECT_EQ(StateOf(id), TaskState::kExpired);
  ChainInfo c = Chain(id);
  EXPECT_EQ(c.state, ChainState::kFailed);
  EXPECT_THAT(c.error, HasSubstr("EXPIRED"));
  EXPECT_THAT(TasksIn("b"), IsEmpty());
}

TEST_F(WorkflowTest, NoGroupIsAcceptedWhileDraining) {
  SubmitGroupResult before = MustSubmitGroup(Members(1));
  broker_->BeginDrain();
  EXPECT_THAT(broker_->SubmitGroupNow(Members(2)),
              StatusIs(absl::StatusCode::kUnavailable, "draining"));
  EXPECT_EQ(broker_->task_count(), 1u);
  // What runs still finishes.
  EXPECT_THAT(broker_->GetGroup(before.group.id, false, false, 0, 0), IsOk());
}

TEST_F(WorkflowTest, AGroupCallbackCanStartAPipeline) {
  GroupSpec spec = Members(2);
  spec.callback = Callback("cb", "ctx");
  spec.callback->then.push_back(Stage("post", "publish"));
  SubmitGroupResult r = MustSubmitGroup(std::move(spec));
  Succeed(r.task_ids[0], "a");
  Succeed(r.task_ids[1], "b");

  TaskId cb = Group(r.group.id).callback_task;
  ASSERT_NE(cb.value(), 0u);
  TaskInfo t = Get(cb);
  EXPECT_EQ(t.group_id, r.group.id);
  EXPECT_EQ(t.chain_id, cb);
  EXPECT_EQ(t.chain_stage, 0u);
  EXPECT_EQ(ParseResults(t.payload).payload(), "ctx");
  ChainInfo c = Chain(cb);
  EXPECT_EQ(c.stages, 2u);
  EXPECT_EQ(c.stage_list[0].queue, "cb");
  EXPECT_EQ(c.stage_list[1].type, "publish");

  Succeed(cb, "summary", "cb");
  LeasedTask post = LeaseOne("post");
  EXPECT_EQ(post.payload, "summary");
  EXPECT_EQ(post.type, "publish");
  EXPECT_EQ(Get(post.id).chain_stage, 1u);
  EXPECT_THAT(CompleteOne(post.id, post.token, "published"), IsOk());
  EXPECT_EQ(Chain(cb).state, ChainState::kSucceeded);
  EXPECT_EQ(Chain(cb).result, "published");
  EXPECT_THAT(TasksIn("cb"), SizeIs(1));
}

}  // namespace
}  // namespace conveyor::server
