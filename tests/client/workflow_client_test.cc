// The client library's workflow calls (groups, chains, schedules, Map)
// against a fake TaskService and ScheduleService on an in-process gRPC server
// (loopback, port 0): the retry rules of each new call, the group
// idempotency key, WatchGroup, and Map's input order, paging, progress, and
// how it outlasts broken watch streams and honours its deadline.
//
// The fake group ends its members in reverse index order while a watch
// stream is open, so results come back in the opposite order to the input.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace conveyor::client {
namespace {

// How a WatchGroup call behaves.
struct WatchScript {
  // Members ended per update written (0: the stream stays open, idle, until
  // the client goes away).
  int ends_per_update = 1;
  // The first `broken_calls` watch calls stop after `updates_before_break`
  // updates with `break_code` (OK: the broker closed the stream while the
  // group runs, as when it drains).
  int broken_calls = 0;
  int updates_before_break = 1;
  grpc::StatusCode break_code = grpc::StatusCode::UNAVAILABLE;
  // Every watch call fails at once with this code (OK: none).
  grpc::StatusCode fail_code = grpc::StatusCode::OK;
};

class FakeWorkflowServices final : public v1::TaskService::Service,
                                   public v1::ScheduleService::Service {
 public:
  // The next `failures` calls of the named method answer `code`. SubmitGroup
  // stores the group first, as if only the answer were lost.
  void FailNext(const std::string& method, int failures, grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    failures_[method] = {failures, code};
  }
  void SetWatchScript(WatchScript script) {
    absl::MutexLock lock(&mu_);
    script_ = script;
  }
  // GetGroup lists at most this many members per page, whatever was asked.
  void SetPageCap(uint32_t cap) {
    absl::MutexLock lock(&mu_);
    page_cap_ = cap;
  }
  // Results of this many bytes (padded), to make pages large.
  void SetResultPadding(size_t bytes) {
    absl::MutexLock lock(&mu_);
    result_padding_ = bytes;
  }
  int calls(const std::string& method) {
    absl::MutexLock lock(&mu_);
    return calls_[method];
  }
  int groups_created() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(groups_.size());
  }
  std::vector<v1::SubmitGroupRequest> submit_requests() {
    absl::MutexLock lock(&mu_);
    return submit_requests_;
  }
  std::vector<v1::GetGroupRequest> member_reads() {
    absl::MutexLock lock(&mu_);
    return member_reads_;
  }

  // ─── TaskService ───

  grpc::Status SubmitGroup(grpc::ServerContext*, const v1::SubmitGroupRequest* request,
                           v1::SubmitGroupResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["SubmitGroup"];
    submit_requests_.push_back(*request);
    bool deduplicated = false;
    std::string id;
    if (auto it = keys_.find(request->idempotency_key()); it != keys_.end()) {
      id = it->second;
      deduplicated = true;
    } else {
      id = absl::StrCat("00000000000000", absl::Hex(groups_.size() + 16));
      Group& group = groups_[id];
      group.id = id;
      for (int i = 0; i < request->tasks_size(); ++i) {
        Member member;
        member.task_id = absl::StrCat("t", id, "-", i);
        member.payload = request->tasks(i).payload();
        group.members.push_back(member);
      }
      keys_[request->idempotency_key()] = id;
    }
    if (grpc::Status s = Injected("SubmitGroup"); !s.ok()) return s;
    const Group& group = groups_[id];
    *response->mutable_group() = Counters(group);
    for (const Member& m : group.members) response->add_task_ids(m.task_id);
    response->set_deduplicated(deduplicated);
    return grpc::Status::OK;
  }

  grpc::Status GetGroup(grpc::ServerContext*, const v1::GetGroupRequest* request,
                        v1::Group* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["GetGroup"];
    if (request->include_members()) member_reads_.push_back(*request);
    if (grpc::Status s = Injected("GetGroup"); !s.ok()) return s;
    auto it = groups_.find(request->id());
    if (it == groups_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such group");
    const Group& group = it->second;
    *response = Counters(group);
    if (!request->include_members()) return grpc::Status::OK;
    const uint32_t limit = std::min(request->member_limit() == 0 ? 1000 : request->member_limit(),
                                    page_cap_);
    for (uint32_t i = request->member_offset();
         i < group.members.size() && i < request->member_offset() + limit; ++i) {
      const Member& m = group.members[i];
      v1::GroupMember* out = response->add_members();
      out->set_index(i);
      out->set_task_id(m.task_id);
      out->set_state(m.state);
      if (request->include_results()) {
        if (m.state == v1::TASK_STATE_SUCCEEDED) out->set_result(m.result);
        if (m.state == v1::TASK_STATE_DEAD) out->set_error(m.error);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status WatchGroup(grpc::ServerContext* context, const v1::WatchGroupRequest* request,
                          grpc::ServerWriter<v1::Group>* writer) override {
    int call;
    WatchScript script;
    v1::Group current;
    {
      absl::MutexLock lock(&mu_);
      call = ++calls_["WatchGroup"];
      script = script_;
      if (grpc::Status s = Injected("WatchGroup"); !s.ok()) return s;
      if (script.fail_code != grpc::StatusCode::OK) return grpc::Status(script.fail_code, "failed");
      auto it = groups_.find(request->id());
      if (it == groups_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such group");
      current = Counters(it->second);
    }
    if (!writer->Write(current)) return grpc::Status::OK;
    const bool breaks = call <= script.broken_calls;
    int updates = 0;
    while (current.state() == v1::GROUP_STATE_RUNNING) {
      if (breaks && updates == script.updates_before_break) {
        return grpc::Status(script.break_code, "stream broken");
      }
      if (script.ends_per_update == 0) {
        if (context->IsCancelled()) return grpc::Status::CANCELLED;
        absl::SleepFor(absl::Milliseconds(5));
        continue;
      }
      {
        absl::MutexLock lock(&mu_);
        Group& group = groups_[request->id()];
        for (int n = 0; n < script.ends_per_update; ++n) EndNext(group);
        current = Counters(group);
      }
      ++updates;
      if (!writer->Write(current)) return grpc::Status::OK;
    }
    return grpc::Status::OK;
  }

  grpc::Status CancelGroup(grpc::ServerContext*, const v1::CancelGroupRequest* request,
                           v1::Group* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["CancelGroup"];
    if (grpc::Status s = Injected("CancelGroup"); !s.ok()) return s;
    response->set_id(request->id());
    response->set_state(v1::GROUP_STATE_CANCELED);
    return grpc::Status::OK;
  }

  grpc::Status GetChain(grpc::ServerContext*, const v1::GetChainRequest* request,
                        v1::Chain* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["GetChain"];
    if (grpc::Status s = Injected("GetChain"); !s.ok()) return s;
    response->set_id(request->id());
    response->set_state(v1::CHAIN_STATE_RUNNING);
    return grpc::Status::OK;
  }

  grpc::Status CancelChain(grpc::ServerContext*, const v1::CancelChainRequest* request,
                           v1::Chain* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["CancelChain"];
    if (grpc::Status s = Injected("CancelChain"); !s.ok()) return s;
    response->set_id(request->id());
    response->set_state(v1::CHAIN_STATE_CANCELED);
    return grpc::Status::OK;
  }

  // ─── ScheduleService ───

  grpc::Status CreateSchedule(grpc::ServerContext*, const v1::CreateScheduleRequest* request,
                              v1::Schedule* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["CreateSchedule"];
    if (grpc::Status s = Injected("CreateSchedule"); !s.ok()) return s;
    if (schedules_.contains(request->schedule().name())) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "taken");
    }
    *response = schedules_[request->schedule().name()] = request->schedule();
    return grpc::Status::OK;
  }

  grpc::Status GetSchedule(grpc::ServerContext*, const v1::GetScheduleRequest* request,
                           v1::Schedule* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["GetSchedule"];
    if (grpc::Status s = Injected("GetSchedule"); !s.ok()) return s;
    auto it = schedules_.find(request->name());
    if (it == schedules_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "none");
    *response = it->second;
    return grpc::Status::OK;
  }

  grpc::Status ListSchedules(grpc::ServerContext*, const v1::ListSchedulesRequest*,
                             v1::ListSchedulesResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++calls_["ListSchedules"];
    if (grpc::Status s = Injected("ListSchedules"); !s.ok()) return s;
    for (const auto& [name, schedule] : schedules_) *response->add_schedules() = schedule;
    return grpc::Status::OK;
  }

  grpc::Status PauseSchedule(grpc::ServerContext*, const v1::PauseScheduleRequest* request,
                             v1::Schedule* response) override {
    return SetPaused("PauseSchedule", request->name(), true, response);
  }

  grpc::Status ResumeSchedule(grpc::ServerContext*, const v1::ResumeScheduleRequest* request,
                              v1::Schedule* response) override {
    return SetPaused("ResumeSchedule", request->name(), false, response);
  }

  grpc::Status DeleteSchedule(grpc::ServerContext*, const v1::DeleteScheduleRequest* request,
                              v1::DeleteScheduleResponse*) override {
    absl::MutexLock lock(&mu_);
    ++calls_["DeleteSchedule"];
    if (grpc::Status s = Injected("DeleteSchedule"); !s.ok()) return s;
    if (schedules_.erase(request->name()) == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "none");
    }
    return grpc::Status::OK;
  }

 private:
  struct Member {
    std::string task_id;
    std::string payload;
    v1::TaskState state = v1::TASK_STATE_READY;
    std::string result;
    std::string error;
  };
  struct Group {
    std::string id;
    std::vector<Member> members;
  };

  grpc::Status Injected(const std::string& method) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = failures_.find(method);
    if (it == failures_.end() || it->second.first == 0) return grpc::Status::OK;
    --it->second.first;
    return grpc::Status(it->second.second, "injected failure");
  }

  // Ends the highest-indexed member still running: "fail..." payloads end
  // DEAD, the others SUCCEEDED with "R(payload)".
  void EndNext(Group& group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = group.members.rbegin(); it != group.members.rend(); ++it) {
      if (it->state != v1::TASK_STATE_READY) continue;
      if (absl::StartsWith(it->payload, "fail")) {
        it->state = v1::TASK_STATE_DEAD;
        it->error = absl::StrCat("failed on ", it->payload);
      } else {
        it->state = v1::TASK_STATE_SUCCEEDED;
        it->result = absl::StrCat("R(", it->payload, ")");
        if (result_padding_ > it->result.size()) it->result.resize(result_padding_, '.');
      }
      return;
    }
  }

  v1::Group Counters(const Group& group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::Group out;
    out.set_id(group.id);
    out.set_total(static_cast<uint32_t>(group.members.size()));
    for (const Member& m : group.members) {
      if (m.state == v1::TASK_STATE_SUCCEEDED) out.set_succeeded(out.succeeded() + 1);
      if (m.state == v1::TASK_STATE_DEAD) out.set_dead(out.dead() + 1);
    }
    out.set_ended(out.succeeded() + out.dead());
    out.set_state(out.ended() == out.total() ? v1::GROUP_STATE_DONE : v1::GROUP_STATE_RUNNING);
    return out;
  }

  grpc::Status SetPaused(const std::string& method, const std::string& name, bool paused,
                         v1::Schedule* response) {
    absl::MutexLock lock(&mu_);
    ++calls_[method];
    if (grpc::Status s = Injected(method); !s.ok()) return s;
    auto it = schedules_.find(name);
    if (it == schedules_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "none");
    it->second.set_paused(paused);
    *response = it->second;
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::map<std::string, std::pair<int, grpc::StatusCode>> failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  WatchScript script_ ABSL_GUARDED_BY(mu_);
  uint32_t page_cap_ ABSL_GUARDED_BY(mu_) = 10000;
  size_t result_padding_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Group> groups_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> keys_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::SubmitGroupRequest> submit_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::GetGroupRequest> member_reads_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::Schedule> schedules_ ABSL_GUARDED_BY(mu_);
};

class WorkflowClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(static_cast<v1::TaskService::Service*>(&fake_));
    builder.RegisterService(static_cast<v1::ScheduleService::Service*>(&fake_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    options_.address = absl::StrCat("127.0.0.1:", port);
    options_.initial_backoff = absl::Milliseconds(1);
    options_.max_backoff = absl::Milliseconds(5);
  }

  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }

  static MapOptions Options() {
    MapOptions options;
    options.queue = "q";
    options.type = "t";
    return options;
  }

  static std::vector<std::string> Items(int n) {
    std::vector<std::string> items;
    for (int i = 0; i < n; ++i) items.push_back(absl::StrCat("item-", i));
    return items;
  }

  FakeWorkflowServices fake_;
  std::unique_ptr<grpc::Server> server_;
  ClientOptions options_;
};

v1::SubmitGroupRequest TwoMembers() {
  v1::SubmitGroupRequest request;
  for (const char* payload : {"a", "b"}) {
    v1::TaskSpec* spec = request.add_tasks();
    spec->set_queue("q");
    spec->set_type("t");
    spec->set_payload(payload);
  }
  return request;
}

// ─── the retry rules of each new call ───

TEST_F(WorkflowClientTest, SubmitGroupAttachesAGroupKeyAndLeavesMembersUnkeyed) {
  Client client(options_);
  absl::StatusOr<v1::SubmitGroupResponse> r = client.SubmitGroup(TwoMembers());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->task_ids_size(), 2);
  const std::vector<v1::SubmitGroupRequest> sent = fake_.submit_requests();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].idempotency_key().size(), 32u);
  for (const v1::TaskSpec& member : sent[0].tasks()) EXPECT_EQ(member.idempotency_key(), "");
  ASSERT_TRUE(client.SubmitGroup(TwoMembers()).ok());
  EXPECT_NE(fake_.submit_requests()[1].idempotency_key(), sent[0].idempotency_key())
      << "each group gets its own key";
  EXPECT_EQ(fake_.groups_created(), 2);
}

TEST_F(WorkflowClientTest, SubmitGroupRetryAfterALostAnswerNeverCreatesASecondGroup) {
  // The group is stored, then the answer is lost twice (UNAVAILABLE, then
  // DEADLINE_EXCEEDED): the third attempt resends the same key.
  fake_.FailNext("SubmitGroup", 1, grpc::StatusCode::UNAVAILABLE);
  Client client(options_);
  absl::StatusOr<v1::SubmitGroupResponse> r = client.SubmitGroup(TwoMembers());
  ASSERT_TRUE(r.ok()) << r.status();
  fake_.FailNext("SubmitGroup", 1, grpc::StatusCode::DEADLINE_EXCEEDED);
  v1::SubmitGroupRequest keyed = TwoMembers();
  keyed.set_idempotency_key("mine");
  ASSERT_TRUE(client.SubmitGroup(keyed).ok());
  const std::vector<v1::SubmitGroupRequest> sent = fake_.submit_requests();
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_EQ(sent[0].idempotency_key(), sent[1].idempotency_key());
  EXPECT_EQ(sent[2].idempotency_key(), "mine");
  EXPECT_EQ(sent[3].idempotency_key(), "mine");
  EXPECT_TRUE(r->deduplicated()) << "the retry got the original group back";
  EXPECT_EQ(fake_.groups_created(), 2);
}

TEST_F(WorkflowClientTest, SubmitGroupDoesNotRetryABadGroup) {
  fake_.FailNext("SubmitGroup", 1, grpc::StatusCode::INVALID_ARGUMENT);
  Client client(options_);
  EXPECT_EQ(client.SubmitGroup(TwoMembers()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.calls("SubmitGroup"), 1);
}

TEST_F(WorkflowClientTest, ReadsRetryUnavailableAndChangesAreSentOnce) {
  Client client(options_);
  ASSERT_TRUE(client.SubmitGroup(TwoMembers()).ok());
  const std::string group = "0000000000000010";
  for (const char* read : {"GetGroup", "GetChain", "GetSchedule", "ListSchedules"}) {
    fake_.FailNext(read, 1, grpc::StatusCode::UNAVAILABLE);
  }
  v1::GetGroupRequest get;
  get.set_id(group);
  absl::StatusOr<v1::Group> g = client.GetGroup(get);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->total(), 2u);
  EXPECT_EQ(fake_.calls("GetGroup"), 2);
  ASSERT_TRUE(client.GetChain("c1").ok());
  EXPECT_EQ(fake_.calls("GetChain"), 2);
  EXPECT_EQ(client.GetSchedule("none").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fake_.calls("GetSchedule"), 2);
  ASSERT_TRUE(client.ListSchedules().ok());
  EXPECT_EQ(fake_.calls("ListSchedules"), 2);

  for (const char* change : {"CancelGroup", "CancelChain", "CreateSchedule", "PauseSchedule",
                             "ResumeSchedule", "DeleteSchedule"}) {
    fake_.FailNext(change, 1, grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(client.CancelGroup(group).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client.CancelChain("c1").status().code(), absl::StatusCode::kUnavailable);
  v1::Schedule schedule;
  schedule.set_name("nightly");
  EXPECT_EQ(client.CreateSchedule(schedule).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client.PauseSchedule("nightly").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client.ResumeSchedule("nightly").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client.DeleteSchedule("nightly").code(), absl::StatusCode::kUnavailable);
  for (const char* change : {"CancelGroup", "CancelChain", "CreateSchedule", "PauseSchedule",
                             "ResumeSchedule", "DeleteSchedule"}) {
    EXPECT_EQ(fake_.calls(change), 1) << change;
  }
  // Once the failures are spent, each call does what it says.
  absl::StatusOr<v1::Group> canceled = client.CancelGroup(group);
  ASSERT_TRUE(canceled.ok()) << canceled.status();
  EXPECT_EQ(canceled->state(), v1::GROUP_STATE_CANCELED);
  absl::StatusOr<v1::Chain> chain = client.CancelChain("c1");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ(chain->state(), v1::CHAIN_STATE_CANCELED);
}

TEST_F(WorkflowClientTest, ScheduleCallsCreateReadPauseResumeAndDelete) {
  Client client(options_);
  v1::Schedule schedule;
  schedule.set_name("nightly");
  schedule.set_cron("0 3 * * *");
  schedule.mutable_task()->set_queue("q");
  absl::StatusOr<v1::Schedule> created = client.CreateSchedule(schedule);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->cron(), "0 3 * * *");
  EXPECT_EQ(client.CreateSchedule(schedule).status().code(), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<v1::Schedule> paused = client.PauseSchedule("nightly");
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_TRUE(paused->paused());
  absl::StatusOr<v1::Schedule> resumed = client.ResumeSchedule("nightly");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_FALSE(resumed->paused());
  absl::StatusOr<v1::ListSchedulesResponse> list = client.ListSchedules();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->schedules_size(), 1);
  EXPECT_EQ(list->schedules(0).name(), "nightly");
  EXPECT_TRUE(client.DeleteSchedule("nightly").ok());
  EXPECT_EQ(client.GetSchedule("nightly").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client.DeleteSchedule("nightly").code(), absl::StatusCode::kNotFound);
}

TEST_F(WorkflowClientTest, GetGroupWithMembersMergesEveryPageInOrder) {
  fake_.SetPageCap(3);
  Client client(options_);
  v1::SubmitGroupRequest request;
  for (int i = 0; i < 8; ++i) {
    v1::TaskSpec* spec = request.add_tasks();
    spec->set_queue("q");
    spec->set_type("t");
    spec->set_payload(absl::StrCat("p", i));
  }
  ASSERT_TRUE(client.SubmitGroup(request).ok());
  absl::StatusOr<v1::Group> group =
      client.GetGroupWithMembers("0000000000000010", /*include_results=*/false, 5);
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ(group->total(), 8u);
  ASSERT_EQ(group->members_size(), 8);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(group->members(i).index(), static_cast<uint32_t>(i));
    EXPECT_EQ(group->members(i).task_id(), absl::StrCat("t0000000000000010-", i));
  }
  std::vector<uint32_t> offsets;
  for (const v1::GetGroupRequest& read : fake_.member_reads()) {
    EXPECT_FALSE(read.include_results());
    offsets.push_back(read.member_offset());
  }
  EXPECT_EQ(offsets, (std::vector<uint32_t>{0, 3, 6}));
  EXPECT_EQ(client.GetGroupWithMembers("0000000000000010", true, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WorkflowClientTest, GetGroupWithMembersIsARetriedReadNotAPersistentOne) {
  Client client(options_);
  ASSERT_TRUE(client.SubmitGroup(TwoMembers()).ok());
  fake_.FailNext("GetGroup", 2, grpc::StatusCode::UNAVAILABLE);
  options_.read_attempts = 2;
  Client two_attempts(options_);
  EXPECT_EQ(two_attempts.GetGroupWithMembers("0000000000000010", true).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake_.calls("GetGroup"), 2);
  EXPECT_EQ(client.GetGroupWithMembers("00000000000000ff", true).status().code(),
            absl::StatusCode::kNotFound);
}

// ─── WatchGroup and FollowGroup ───

TEST_F(WorkflowClientTest, WatchGroupDeliversEveryUpdateUntilDone) {
  Client client(options_);
  ASSERT_TRUE(client.SubmitGroup(TwoMembers()).ok());
  std::vector<uint32_t> ended;
  absl::StatusOr<v1::Group> last = client.WatchGroup("0000000000000010", [&](const v1::Group& g) {
    ended.push_back(g.ended());
    return true;
  });
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(ended, (std::vector<uint32_t>{0, 1, 2}));
}

TEST_F(WorkflowClientTest, WatchGroupReturnsTheStreamErrorAndIsNotRetried) {
  fake_.FailNext("WatchGroup", 1, grpc::StatusCode::UNAVAILABLE);
  Client client(options_);
  absl::StatusOr<v1::Group> last = client.WatchGroup(
      "0000000000000010", [](const v1::Group&) { return true; }, absl::Seconds(5));
  EXPECT_EQ(last.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake_.calls("WatchGroup"), 1);
}

TEST_F(WorkflowClientTest, FollowGroupResumesAStreamClosedWhileTheGroupRuns) {
  // A draining broker closes the stream (OK) while the group runs.
  fake_.SetWatchScript({.broken_calls = 1, .break_code = grpc::StatusCode::OK});
  Client client(options_);
  ASSERT_TRUE(client.SubmitGroup(TwoMembers()).ok());
  int changes = 0;
  absl::StatusOr<v1::Group> done =
      client.FollowGroup("0000000000000010", [&](const v1::Group&) { ++changes; });
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(fake_.calls("WatchGroup"), 2);
  EXPECT_EQ(fake_.calls("GetGroup"), 1) << "one poll between the two watches";
  EXPECT_GE(changes, 4);
}

TEST_F(WorkflowClientTest, FollowGroupGivesUpAtOnceOnAnAnswerARetryCannotChange) {
  Client client(options_);
  absl::StatusOr<v1::Group> r = client.FollowGroup("00000000000000ff", [](const v1::Group&) {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fake_.calls("WatchGroup"), 1);
  EXPECT_EQ(fake_.calls("GetGroup"), 0);
}

// ─── Map ───

TEST_F(WorkflowClientTest, MapReturnsResultsInInputOrderThoughTasksEndInReverse) {
  Client client(options_);
  std::vector<std::string> items = Items(20);
  items[3] = "fail-3";
  items[17] = "fail-17";
  absl::StatusOr<MapResult> r = client.Map(items, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->items.size(), items.size());
  EXPECT_EQ(r->group_id, "0000000000000010");
  EXPECT_EQ(r->group.state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(r->failures, 2u);
  for (size_t i = 0; i < items.size(); ++i) {
    const MapItem& item = r->items[i];
    EXPECT_EQ(item.task_id, absl::StrCat("t0000000000000010-", i));
    if (i == 3 || i == 17) {
      EXPECT_EQ(item.state, v1::TASK_STATE_DEAD) << i;
      EXPECT_FALSE(item.ok());
      EXPECT_EQ(item.error, absl::StrCat("failed on ", items[i]));
      EXPECT_EQ(item.result, "");
    } else {
      EXPECT_EQ(item.state, v1::TASK_STATE_SUCCEEDED) << i;
      EXPECT_TRUE(item.ok());
      EXPECT_EQ(item.result, absl::StrCat("R(", items[i], ")"));
    }
  }
}

TEST_F(WorkflowClientTest, MapSubmitsOneGroupOfMembersBuiltFromTheOptions) {
  Client client(options_);
  MapOptions options = Options();
  options.priority = 7;
  options.timeout = absl::Seconds(30);
  options.max_attempts = 4;
  options.fallback_result = "none";
  ASSERT_TRUE(client.Map({"x", "y"}, options).ok());
  const std::vector<v1::SubmitGroupRequest> sent = fake_.submit_requests();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].idempotency_key().size(), 32u);
  ASSERT_EQ(sent[0].tasks_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const v1::TaskSpec& spec = sent[0].tasks(i);
    EXPECT_EQ(spec.payload(), i == 0 ? "x" : "y");
    EXPECT_EQ(spec.queue(), "q");
    EXPECT_EQ(spec.type(), "t");
    EXPECT_EQ(spec.priority(), 7u);
    EXPECT_EQ(FromProto(spec.timeout()), absl::Seconds(30));
    EXPECT_EQ(spec.retry().max_attempts(), 4u);
    EXPECT_EQ(spec.fallback_result(), "none");
    EXPECT_EQ(spec.idempotency_key(), "");
    EXPECT_EQ(spec.then_size(), 0);
  }
}

TEST_F(WorkflowClientTest, MapFollowsPagesByWhatTheBrokerListedNotByWhatItAsked) {
  fake_.SetPageCap(7);
  Client client(options_);
  MapOptions options = Options();
  options.page_size = 10;
  absl::StatusOr<MapResult> r = client.Map(Items(25), options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->items.size(), 25u);
  EXPECT_EQ(r->items[24].result, "R(item-24)");
  std::vector<uint32_t> offsets;
  for (const v1::GetGroupRequest& read : fake_.member_reads()) {
    EXPECT_TRUE(read.include_results());
    EXPECT_EQ(read.member_limit(), 10u);
    offsets.push_back(read.member_offset());
  }
  EXPECT_EQ(offsets, (std::vector<uint32_t>{0, 7, 14, 21}));
}

TEST_F(WorkflowClientTest, MapAsksForFewerMembersWhenAPageIsTooLargeForTheChannel) {
  // 30 results of 10 KiB against a 64 KiB receive limit: pages of 30, 15 and
  // 7 members are refused by the channel; 3 fit.
  options_.channel_args.SetMaxReceiveMessageSize(64 * 1024);
  fake_.SetResultPadding(10 * 1024);
  Client client(options_);
  MapOptions options = Options();
  options.page_size = 30;
  absl::StatusOr<MapResult> r = client.Map(Items(30), options);
  ASSERT_TRUE(r.ok()) << r.status();
  for (size_t i = 0; i < r->items.size(); ++i) {
    ASSERT_TRUE(absl::StartsWith(r->items[i].result, absl::StrCat("R(item-", i, ")"))) << i;
    EXPECT_EQ(r->items[i].result.size(), 10u * 1024);
  }
  std::vector<uint32_t> limits;
  for (const v1::GetGroupRequest& read : fake_.member_reads()) limits.push_back(read.member_limit());
  ASSERT_GE(limits.size(), 4u);
  EXPECT_EQ(std::vector<uint32_t>(limits.begin(), limits.begin() + 4),
            (std::vector<uint32_t>{30, 15, 7, 3}));
}

TEST_F(WorkflowClientTest, MapReportsProgressFromSubmitToTheEnd) {
  Client client(options_);
  MapOptions options = Options();
  std::vector<MapProgress> seen;
  options.on_progress = [&](const MapProgress& p) { seen.push_back(p); };
  std::vector<std::string> items = Items(5);
  items[0] = "fail-0";
  absl::StatusOr<MapResult> r = client.Map(items, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GE(seen.size(), 6u);
  EXPECT_EQ(seen.front().group_id, r->group_id);
  EXPECT_EQ(seen.front().total, 5u);
  EXPECT_EQ(seen.front().ended, 0u);
  EXPECT_EQ(seen.front().state, v1::GROUP_STATE_RUNNING);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].ended, seen[i - 1].ended) << "progress never goes back";
  }
  EXPECT_EQ(seen.back().ended, 5u);
  EXPECT_EQ(seen.back().failures, 1u);
  EXPECT_EQ(seen.back().state, v1::GROUP_STATE_DONE);
}

TEST_F(WorkflowClientTest, MapOutlastsBrokenWatchStreams) {
  // Three streams break with UNAVAILABLE after one update each, and the
  // first GetGroup poll finds the broker still away.
  fake_.SetWatchScript({.broken_calls = 3, .updates_before_break = 1});
  fake_.FailNext("GetGroup", 1, grpc::StatusCode::UNAVAILABLE);
  options_.read_attempts = 1;
  Client client(options_);
  absl::StatusOr<MapResult> r = client.Map(Items(6), Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->failures, 0u);
  EXPECT_EQ(r->items[5].result, "R(item-5)");
  EXPECT_EQ(fake_.calls("WatchGroup"), 4);
  EXPECT_EQ(fake_.calls("SubmitGroup"), 1) << "resuming never resubmits";
}

TEST_F(WorkflowClientTest, MapOutlastsStreamsClosedWhileTheGroupRuns) {
  fake_.SetWatchScript(
      {.broken_calls = 2, .updates_before_break = 2, .break_code = grpc::StatusCode::OK});
  Client client(options_);
  absl::StatusOr<MapResult> r = client.Map(Items(6), Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->items[0].result, "R(item-0)");
  EXPECT_EQ(fake_.calls("WatchGroup"), 3);
}

TEST_F(WorkflowClientTest, MapFailsWithDeadlineExceededNamingTheGroupWhenItOutlastsTheDeadline) {
  fake_.SetWatchScript({.ends_per_update = 0});
  Client client(options_);
  MapOptions options = Options();
  options.deadline = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<MapResult> r = client.Map(Items(3), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "0000000000000010")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "0/3 ended")) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(WorkflowClientTest, MapDeadlineBoundsResumingAfterBreaks) {
  // Every watch fails at once: Map keeps resuming until the deadline.
  fake_.SetWatchScript({.fail_code = grpc::StatusCode::UNAVAILABLE});
  Client client(options_);
  MapOptions options = Options();
  options.deadline = absl::Milliseconds(200);
  absl::StatusOr<MapResult> r = client.Map(Items(2), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_GT(fake_.calls("WatchGroup"), 2);
}

TEST_F(WorkflowClientTest, MapFailsAtOnceWhenTheWatchCannotSucceed) {
  fake_.SetWatchScript({.fail_code = grpc::StatusCode::PERMISSION_DENIED});
  Client client(options_);
  absl::StatusOr<MapResult> r = client.Map(Items(2), Options());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(fake_.calls("WatchGroup"), 1);
}

TEST_F(WorkflowClientTest, MapWithAKnownKeyFollowsTheOriginalGroup) {
  Client client(options_);
  MapOptions options = Options();
  options.idempotency_key = "batch-7";
  ASSERT_TRUE(client.Map(Items(4), options).ok());
  absl::StatusOr<MapResult> again = client.Map(Items(4), options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->group_id, "0000000000000010");
  EXPECT_EQ(again->items[2].result, "R(item-2)");
  EXPECT_EQ(fake_.groups_created(), 1);
  // The same key with other items: not this group.
  absl::StatusOr<MapResult> other = client.Map(Items(5), options);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_TRUE(absl::StrContains(other.status().message(), "has 4 members")) << other.status();
}

TEST_F(WorkflowClientTest, MapChecksItsOptionsBeforeAnyCall) {
  Client client(options_);
  MapOptions options = Options();
  options.queue.clear();
  EXPECT_EQ(client.Map(Items(1), options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options();
  options.type.clear();
  EXPECT_EQ(client.Map(Items(1), options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options();
  options.page_size = 10001;
  EXPECT_EQ(client.Map(Items(1), options).status().code(), absl::StatusCode::kInvalidArgument);
  options.page_size = 0;
  EXPECT_EQ(client.Map(Items(1), options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.calls("SubmitGroup"), 0);
}

TEST_F(WorkflowClientTest, MapOfNoItemsIsEmptyAndCallsNothing) {
  Client client(options_);
  absl::StatusOr<MapResult> r = client.Map({}, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->items.empty());
  EXPECT_EQ(r->group_id, "");
  EXPECT_EQ(fake_.calls("SubmitGroup"), 0);
}

}  // namespace
}  // namespace conveyor::client
