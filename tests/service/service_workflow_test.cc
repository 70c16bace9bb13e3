// Workflows at the wire: a real in-process BrokerServer on a loopback port 0
// driven through the generated stubs. SubmitGroup's errors name the member
// or callback stage, GetGroup/WatchGroup/CancelGroup and GetChain/CancelChain
// map the core's answers, tasks carry their workflow links, and a WatchGroup
// stream ends UNAVAILABLE when the broker drains, like WatchTask.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/server.h"

namespace conveyor::server {
namespace {

namespace v1 = ::conveyor::v1;
using ::testing::HasSubstr;

class WorkflowServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_addr = "";
    options.drain_grace = absl::Milliseconds(200);
    options.broker.max_payload_bytes = 1024;
    auto server = BrokerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    tasks_ = v1::TaskService::NewStub(channel_);
    queues_ = v1::QueueService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  }

  static v1::TaskSpec Spec(const std::string& queue, const std::string& payload = "") {
    v1::TaskSpec spec;
    spec.set_queue(queue);
    spec.set_type("echo");
    spec.set_payload(payload);
    return spec;
  }
  static v1::SubmitGroupRequest Group(int n, const std::string& queue = "jobs") {
    v1::SubmitGroupRequest req;
    for (int i = 0; i < n; ++i) *req.add_tasks() = Spec(queue, absl::StrCat("m", i));
    return req;
  }

  v1::SubmitGroupResponse MustSubmitGroup(const v1::SubmitGroupRequest& req) {
    v1::SubmitGroupResponse resp;
    grpc::Status s = tasks_->SubmitGroup(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }
  grpc::Status GetGroup(const std::string& id, v1::Group* out, bool members = false,
                        bool results = false, uint32_t offset = 0, uint32_t limit = 0) {
    v1::GetGroupRequest req;
    req.set_id(id);
    req.set_include_members(members);
    req.set_include_results(results);
    req.set_member_offset(offset);
    req.set_member_limit(limit);
    return tasks_->GetGroup(Ctx().get(), req, out);
  }
  v1::Task GetTask(const std::string& id) {
    v1::GetTaskRequest req;
    req.set_id(id);
    v1::Task task;
    grpc::Status s = tasks_->GetTask(Ctx().get(), req, &task);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return task;
  }
  v1::LeaseResponse Lease(const std::string& queue, uint32_t max = 10) {
    v1::LeaseRequest req;
    req.set_worker_id("test-worker");
    req.add_queues(queue);
    req.set_max_tasks(max);
    v1::LeaseResponse resp;
    grpc::Status s = workers_->Lease(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }
  // Completes every leased task with "r-" + its payload.
  void CompleteAll(const v1::LeaseResponse& leased) {
    v1::CompleteRequest req;
    for (const v1::LeasedTask& t : leased.tasks()) {
      auto* item = req.add_items();
      item->set_id(t.id());
      item->set_token(t.token());
      item->set_result("r-" + t.payload());
    }
    v1::CompleteResponse resp;
    grpc::Status s = workers_->Complete(Ctx().get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const auto& item : resp.items()) EXPECT_EQ(item.code(), 0) << item.message();
  }

  std::unique_ptr<BrokerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::QueueService::Stub> queues_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

TEST_F(WorkflowServiceTest, SubmitGroupErrorsNameTheMemberOrTheCallbackStage) {
  struct Case {
    std::string name;
    std::function<void(v1::SubmitGroupRequest&)> spoil;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"member payload", [](v1::SubmitGroupRequest& r) {
         r.mutable_tasks(3)->set_payload(std::string(2000, 'x'));
       }, "tasks[3].payload is 2000 bytes"},
      {"member delay and not_before", [](v1::SubmitGroupRequest& r) {
         r.mutable_tasks(1)->mutable_delay()->set_seconds(5);
         r.mutable_tasks(1)->mutable_not_before()->set_seconds(2'000'000'000);
       }, "tasks[1].delay and not_before are both set"},
      {"member then", [](v1::SubmitGroupRequest& r) {
         *r.mutable_tasks(2)->add_then() = Spec("next");
       }, "tasks[2].then is not allowed"},
      {"member key", [](v1::SubmitGroupRequest& r) {
         r.mutable_tasks(0)->set_idempotency_key("k");
       }, "tasks[0].idempotency_key"},
      {"callback stage payload", [](v1::SubmitGroupRequest& r) {
         *r.mutable_callback() = Spec("cb");
         *r.mutable_callback()->add_then() = Spec("post", "not empty");
       }, "callback.then[0].payload must be empty"},
      {"callback stage delay", [](v1::SubmitGroupRequest& r) {
         *r.mutable_callback() = Spec("cb");
         *r.mutable_callback()->add_then() = Spec("post");
         r.mutable_callback()->mutable_then(0)->mutable_delay()->set_seconds(-5);
       }, "callback.then[0].delay"},
      {"callback expires_at", [](v1::SubmitGroupRequest& r) {
         *r.mutable_callback() = Spec("cb");
         r.mutable_callback()->mutable_expires_at()->set_seconds(4'000'000'000);
       }, "callback.expires_at"},
      {"empty", [](v1::SubmitGroupRequest& r) { r.clear_tasks(); }, "tasks is empty"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::SubmitGroupRequest req = Group(4);
    c.spoil(req);
    v1::SubmitGroupResponse resp;
    grpc::Status s = tasks_->SubmitGroup(Ctx().get(), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
  }
  // A stage template of a plain submit is named the same way.
  v1::SubmitRequest submit;
  *submit.mutable_task() = Spec("a", "x");
  *submit.mutable_task()->add_then() = Spec("b", "not empty");
  v1::SubmitResponse submitted;
  grpc::Status s = tasks_->Submit(Ctx().get(), submit, &submitted);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("then[0].payload must be empty"));

  v1::ListQueuesResponse queues;
  ASSERT_TRUE(queues_->ListQueues(Ctx().get(), v1::ListQueuesRequest(), &queues).ok());
  EXPECT_EQ(queues.queues_size(), 0);
}

TEST_F(WorkflowServiceTest, AGroupRoundTripsThroughGetGroupAndItsCallbackGetsGroupResults) {
  v1::SubmitGroupRequest req = Group(3);
  *req.mutable_callback() = Spec("cb", "ctx");
  req.set_idempotency_key("g-1");
  v1::SubmitGroupResponse r = MustSubmitGroup(req);
  EXPECT_EQ(r.group().id().size(), 16u);
  EXPECT_EQ(r.group().state(), v1::GROUP_STATE_RUNNING);
  EXPECT_EQ(r.group().total(), 3u);
  EXPECT_TRUE(r.group().has_callback());
  EXPECT_TRUE(r.group().callback_task_id().empty());
  EXPECT_EQ(r.group().idempotency_key(), "g-1");
  EXPECT_TRUE(r.group().has_created_at());
  EXPECT_FALSE(r.group().has_finished_at());
  EXPECT_FALSE(r.deduplicated());
  ASSERT_EQ(r.task_ids_size(), 3);
  v1::Task member = GetTask(r.task_ids(1));
  EXPECT_EQ(member.group_id(), r.group().id());
  EXPECT_EQ(member.payload(), "m1");
  EXPECT_TRUE(member.chain_id().empty());

  v1::SubmitGroupResponse again = MustSubmitGroup(req);
  EXPECT_TRUE(again.deduplicated());
  EXPECT_EQ(again.group().id(), r.group().id());
  ASSERT_EQ(again.task_ids_size(), 3);
  EXPECT_EQ(again.task_ids(2), r.task_ids(2));

  CompleteAll(Lease("jobs"));
  v1::Group g;
  ASSERT_TRUE(GetGroup(r.group().id(), &g).ok());
  EXPECT_EQ(g.state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(g.succeeded(), 3u);
  EXPECT_EQ(g.ended(), 3u);
  EXPECT_EQ(g.members_size(), 0);
  EXPECT_TRUE(g.has_finished_at());
  ASSERT_FALSE(g.callback_task_id().empty());

  ASSERT_TRUE(GetGroup(r.group().id(), &g, /*members=*/true, false, 1, 1).ok());
  ASSERT_EQ(g.members_size(), 1);
  EXPECT_EQ(g.members(0).index(), 1u);
  EXPECT_EQ(g.members(0).task_id(), r.task_ids(1));
  EXPECT_EQ(g.members(0).state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(g.members(0).result(), "");
  g.Clear();
  ASSERT_TRUE(GetGroup(r.group().id(), &g, false, /*results=*/true).ok());
  ASSERT_EQ(g.members_size(), 3);  // results imply members
  EXPECT_EQ(g.members(2).result(), "r-m2");

  v1::LeaseResponse cb = Lease("cb");
  ASSERT_EQ(cb.tasks_size(), 1);
  EXPECT_EQ(cb.tasks(0).id(), g.callback_task_id());
  v1::GroupResults doc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(cb.tasks(0).payload(), &doc).ok());
  EXPECT_EQ(doc.group_id(), r.group().id());
  EXPECT_EQ(doc.payload(), "ctx");
  ASSERT_EQ(doc.members_size(), 3);
  EXPECT_EQ(doc.members(0).result(), "r-m0");
  EXPECT_EQ(GetTask(cb.tasks(0).id()).group_id(), r.group().id());

  v1::CancelGroupRequest cancel;
  cancel.set_id(r.group().id());
  grpc::Status s = tasks_->CancelGroup(Ctx().get(), cancel, &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GetGroup("0123456789abcdef", &g).error_code(), grpc::StatusCode::NOT_FOUND);
  s = GetGroup("nope", &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = GetGroup(r.group().id(), &g, true, false, 0, 10'001);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("member_limit"));
}

TEST_F(WorkflowServiceTest, CancelGroupCancelsQueuedMembers) {
  v1::SubmitGroupResponse r = MustSubmitGroup(Group(3));
  v1::LeaseResponse running = Lease("jobs", 1);
  ASSERT_EQ(running.tasks_size(), 1);
  v1::CancelGroupRequest cancel;
  cancel.set_id(r.group().id());
  v1::Group g;
  ASSERT_TRUE(tasks_->CancelGroup(Ctx().get(), cancel, &g).ok());
  EXPECT_EQ(g.state(), v1::GROUP_STATE_CANCELED);
  EXPECT_EQ(g.canceled(), 2u);
  EXPECT_EQ(GetTask(r.task_ids(2)).state(), v1::TASK_STATE_CANCELED);
  EXPECT_TRUE(GetTask(r.task_ids(0)).cancel_requested());
  // A watch of the canceled group: one snapshot, then the stream ends OK.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::WatchGroupRequest watch;
  watch.set_id(r.group().id());
  auto reader = tasks_->WatchGroup(&ctx, watch);
  v1::Group update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::GROUP_STATE_CANCELED);
  EXPECT_FALSE(reader->Read(&update));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(WorkflowServiceTest, WatchGroupStreamsUntilTheGroupIsDone) {
  v1::SubmitGroupRequest req = Group(2);
  *req.mutable_callback() = Spec("cb");
  v1::SubmitGroupResponse r = MustSubmitGroup(req);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchGroupRequest watch;
  watch.set_id(r.group().id());
  auto reader = tasks_->WatchGroup(&ctx, watch);
  v1::Group update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::GROUP_STATE_RUNNING);
  EXPECT_EQ(update.ended(), 0u);
  EXPECT_EQ(update.id(), r.group().id());

  v1::LeaseResponse leased = Lease("jobs");
  ASSERT_EQ(leased.tasks_size(), 2);
  v1::LeaseResponse first;
  *first.add_tasks() = leased.tasks(0);
  CompleteAll(first);
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::GROUP_STATE_RUNNING);
  EXPECT_EQ(update.ended(), 1u);
  v1::LeaseResponse second;
  *second.add_tasks() = leased.tasks(1);
  CompleteAll(second);
  std::vector<v1::Group> rest;
  while (reader->Read(&update)) rest.push_back(update);
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back().state(), v1::GROUP_STATE_DONE);
  EXPECT_EQ(rest.back().ended(), 2u);
  EXPECT_FALSE(rest.back().callback_task_id().empty());
  int done = 0;
  for (const v1::Group& g : rest) done += g.state() == v1::GROUP_STATE_DONE;
  EXPECT_EQ(done, 1);

  grpc::ClientContext unknown_ctx;
  unknown_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  watch.set_id("0123456789abcdef");
  auto unknown = tasks_->WatchGroup(&unknown_ctx, watch);
  EXPECT_FALSE(unknown->Read(&update));
  EXPECT_EQ(unknown->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkflowServiceTest, WatchGroupEndsUnavailableWhenTheBrokerDrains) {
  v1::SubmitGroupResponse r = MustSubmitGroup(Group(2));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchGroupRequest watch;
  watch.set_id(r.group().id());
  auto reader = tasks_->WatchGroup(&ctx, watch);
  v1::Group update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.state(), v1::GROUP_STATE_RUNNING);

  const absl::Time start = absl::Now();
  server_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  while (reader->Read(&update)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(WorkflowServiceTest, AChainIsVisibleThroughGetChainAndItsTasks) {
  v1::SubmitRequest submit;
  *submit.mutable_task() = Spec("a", "p0");
  *submit.mutable_task()->add_then() = Spec("b");
  submit.mutable_task()->mutable_then(0)->set_type("parse");
  *submit.mutable_task()->add_then() = Spec("c");
  v1::SubmitResponse submitted;
  ASSERT_TRUE(tasks_->Submit(Ctx().get(), submit, &submitted).ok());
  const std::string id = submitted.task().id();
  EXPECT_EQ(submitted.task().chain_id(), id);
  EXPECT_EQ(submitted.task().chain_stage(), 0u);

  v1::GetChainRequest get;
  get.set_id(id);
  v1::Chain chain;
  ASSERT_TRUE(tasks_->GetChain(Ctx().get(), get, &chain).ok());
  EXPECT_EQ(chain.id(), id);
  EXPECT_EQ(chain.state(), v1::CHAIN_STATE_RUNNING);
  EXPECT_EQ(chain.stages(), 3u);
  EXPECT_EQ(chain.current_stage(), 0u);
  ASSERT_EQ(chain.stage_list_size(), 3);
  EXPECT_EQ(chain.stage_list(0).task_id(), id);
  EXPECT_EQ(chain.stage_list(1).queue(), "b");
  EXPECT_EQ(chain.stage_list(1).type(), "parse");
  EXPECT_TRUE(chain.stage_list(1).task_id().empty());
  EXPECT_EQ(chain.stage_list(1).state(), v1::TASK_STATE_UNSPECIFIED);

  CompleteAll(Lease("a"));
  ASSERT_TRUE(tasks_->GetChain(Ctx().get(), get, &chain).ok());
  EXPECT_EQ(chain.current_stage(), 1u);
  const std::string stage = chain.stage_list(1).task_id();
  ASSERT_FALSE(stage.empty());
  EXPECT_EQ(chain.stage_list(1).state(), v1::TASK_STATE_READY);
  v1::Task t = GetTask(stage);
  EXPECT_EQ(t.chain_id(), id);
  EXPECT_EQ(t.chain_stage(), 1u);
  EXPECT_EQ(t.payload(), "r-p0");
  EXPECT_EQ(t.type(), "parse");

  // Not a chain's id: a later stage, a plain task, an unknown id.
  v1::GetChainRequest other;
  other.set_id(stage);
  EXPECT_EQ(tasks_->GetChain(Ctx().get(), other, &chain).error_code(),
            grpc::StatusCode::NOT_FOUND);
  other.set_id("0123456789abcdef");
  EXPECT_EQ(tasks_->GetChain(Ctx().get(), other, &chain).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::CancelChainRequest cancel;
  cancel.set_id(id);
  ASSERT_TRUE(tasks_->CancelChain(Ctx().get(), cancel, &chain).ok());
  EXPECT_EQ(chain.state(), v1::CHAIN_STATE_CANCELED);
  EXPECT_TRUE(chain.has_finished_at());
  EXPECT_EQ(GetTask(stage).state(), v1::TASK_STATE_CANCELED);
  grpc::Status s = tasks_->CancelChain(Ctx().get(), cancel, &chain);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Lease("c").tasks_size(), 0);
}

TEST_F(WorkflowServiceTest, AGroupCallbackWithThenStartsAChain) {
  v1::SubmitGroupRequest req = Group(1);
  *req.mutable_callback() = Spec("cb");
  *req.mutable_callback()->add_then() = Spec("post");
  v1::SubmitGroupResponse r = MustSubmitGroup(req);
  CompleteAll(Lease("jobs"));
  v1::Group g;
  ASSERT_TRUE(GetGroup(r.group().id(), &g).ok());
  v1::Task cb = GetTask(g.callback_task_id());
  EXPECT_EQ(cb.group_id(), r.group().id());
  EXPECT_EQ(cb.chain_id(), cb.id());
  CompleteAll(Lease("cb"));
  v1::LeaseResponse post = Lease("post");
  ASSERT_EQ(post.tasks_size(), 1);
  EXPECT_EQ(post.tasks(0).payload(), "r-" + cb.payload());
  v1::GetChainRequest get;
  get.set_id(cb.id());
  v1::Chain chain;
  ASSERT_TRUE(tasks_->GetChain(Ctx().get(), get, &chain).ok());
  EXPECT_EQ(chain.current_stage(), 1u);
  EXPECT_EQ(chain.stage_list(1).task_id(), post.tasks(0).id());
}

}  // namespace
}  // namespace conveyor::server
