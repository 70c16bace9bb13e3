// 1,000 workers long-polling one real conveyord at once, each on its own TCP
// connection (a channel with its own subchannel pool): every Lease call
// parks on the broker without a thread of its own (the broker's thread count
// stays far below the number of calls), and once 1,000 tasks are submitted
// every call gets exactly one, each task going to one call only.
//
// The test process and the broker each hold over a thousand sockets: the
// test raises its soft file limit (the broker inherits it, and raises its
// own too), and fails with a clear message if the hard limit is too low.
// Waits are bounded and generous (a loaded 2-core machine).
#include <atomic>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/grpc_util.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif

namespace conveyor {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::conveyor::v1;

constexpr int kWorkers = 1000;
constexpr absl::Duration kBound = absl::Seconds(90);

// Open sockets of a process (entries of /proc/<pid>/fd that are sockets).
int SocketCount(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code link_ec;
    const fs::path target = fs::read_symlink(entry.path(), link_ec);
    if (!link_ec && absl::StartsWith(target.string(), "socket:")) ++n;
  }
  return n;
}

// One long-polling worker: its own channel (so its own connection) and one
// Lease call in flight through the callback API.
struct PollingWorker {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::WorkerService::Stub> stub;
  grpc::ClientContext context;
  v1::LeaseRequest request;
  v1::LeaseResponse response;
  grpc::Status status;
};

TEST(ManyWorkersE2eTest, AThousandParkedLeaseCallsNeedNoThreadEachAndEachGetsOneTask) {
  const unsigned long files = RaiseFileLimit();
  ASSERT_GE(files, 2u * kWorkers + 200)
      << "the hard limit on open files (ulimit -Hn) is " << files
      << "; this test holds over " << 2 * kWorkers << " sockets";
  e2e::TempDir dir("many-workers");
  ASSERT_FALSE(dir.path().empty()) << "mkdtemp failed";
  const fs::path port_file = dir.path() / "conveyord.port";
  e2e::Process broker(e2e::Stdio::Log(dir.path() / "conveyord.log"));
  std::vector<std::string> argv = e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file);
  argv.push_back(absl::StrCat("--data-dir=", (dir.path() / "data").string()));
  argv.push_back("--fsync=never");
  ASSERT_TRUE(broker.Start(argv));
  const int port = e2e::WaitForPortFile(port_file, broker, absl::Seconds(20));
  ASSERT_GT(port, 0) << broker.log();
  const std::string addr = e2e::LoopbackAddress(port);

  auto admin_channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto queues = v1::QueueService::NewStub(admin_channel);
  auto tasks = v1::TaskService::NewStub(admin_channel);
  auto work = v1::WorkerService::NewStub(admin_channel);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::CreateQueueRequest req;
    req.mutable_config()->set_name("many");
    v1::Queue resp;
    grpc::Status s = queues->CreateQueue(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  const long threads_before = e2e::ProcStatusNumber(broker.pid(), "Threads");
  ASSERT_GT(threads_before, 0);

  absl::Mutex mu;
  int answered = 0;
  std::vector<std::unique_ptr<PollingWorker>> workers;
  workers.reserve(kWorkers);
  for (int i = 0; i < kWorkers; ++i) {
    auto w = std::make_unique<PollingWorker>();
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    w->channel = grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
    w->stub = v1::WorkerService::NewStub(w->channel);
    w->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(150));
    w->request.set_worker_id(absl::StrCat("w", i));
    w->request.add_queues("many");
    w->request.set_max_tasks(1);
    ToProto(absl::Seconds(60), w->request.mutable_wait());
    PollingWorker* raw = w.get();
    w->stub->async()->Lease(&w->context, &w->request, &w->response,
                            [raw, &mu, &answered](grpc::Status s) {
                              absl::MutexLock lock(&mu);
                              raw->status = std::move(s);
                              ++answered;
                            });
    workers.push_back(std::move(w));
  }

  // All 1,000 calls parked at once.
  uint32_t waiting = 0;
  const absl::Time give_up = absl::Now() + kBound;
  while (absl::Now() < give_up) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetQueueRequest req;
    req.set_name("many");
    v1::Queue resp;
    if (queues->GetQueue(&ctx, req, &resp).ok()) waiting = resp.stats().waiting_workers();
    if (waiting >= kWorkers) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(waiting, static_cast<uint32_t>(kWorkers)) << broker.log();
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(answered, 0) << "a long-poll returned before any task was submitted";
  }
  // One connection per worker, and no thread per parked call.
  const int sockets = SocketCount(broker.pid());
  const long threads = e2e::ProcStatusNumber(broker.pid(), "Threads");
  std::cout << "broker with " << kWorkers << " parked Lease calls: " << sockets << " sockets, "
            << threads << " threads (" << threads_before << " before), VmRSS "
            << e2e::ProcStatusNumber(broker.pid(), "VmRSS") << " kB\n";
  EXPECT_GE(sockets, kWorkers);
  EXPECT_LT(threads, 100) << "broker threads with " << kWorkers << " parked calls ("
                          << threads_before << " before)";

  // 1,000 tasks: each parked call gets exactly one.
  std::set<std::string> submitted;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::SubmitBatchRequest req;
    for (int i = 0; i < kWorkers; ++i) {
      v1::TaskSpec* t = req.add_tasks();
      t->set_queue("many");
      t->set_type("t");
      t->set_payload(absl::StrCat("task-", i));
    }
    v1::SubmitBatchResponse resp;
    grpc::Status s = tasks->SubmitBatch(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const auto& item : resp.items()) {
      ASSERT_EQ(item.status().code(), 0) << item.status().message();
      submitted.insert(item.task().id());
    }
  }
  ASSERT_EQ(submitted.size(), static_cast<size_t>(kWorkers));
  {
    absl::MutexLock lock(&mu);
    auto all = [&answered]() { return answered == kWorkers; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), kBound))
        << answered << " of " << kWorkers << " calls answered";
  }
  std::set<std::string> leased;
  v1::CompleteRequest complete;
  for (const auto& w : workers) {
    ASSERT_TRUE(w->status.ok()) << w->request.worker_id() << ": " << w->status.error_message();
    ASSERT_EQ(w->response.tasks_size(), 1) << w->request.worker_id();
    const v1::LeasedTask& t = w->response.tasks(0);
    EXPECT_TRUE(leased.insert(t.id()).second) << t.id() << " was leased twice";
    v1::CompleteRequest::Item* item = complete.add_items();
    item->set_id(t.id());
    item->set_token(t.token());
    item->set_result(t.payload());
  }
  EXPECT_EQ(leased, submitted);

  // Every lease is current: all 1,000 completions are taken.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::CompleteResponse done;
  grpc::Status s = work->Complete(&ctx, complete, &done);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(done.items_size(), kWorkers);
  for (const auto& item : done.items()) EXPECT_EQ(item.code(), 0) << item.message();

  workers.clear();
  broker.Signal(SIGTERM);
  EXPECT_EQ(broker.Wait(absl::Seconds(30)), 0) << broker.log();
}

}  // namespace
}  // namespace conveyor
