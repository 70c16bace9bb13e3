// Concurrency smoke tests: producers and workers on several threads against
// one broker. The FakeClock never moves, so no lease expires and every task
// must end SUCCEEDED exactly once. Bounded waits use real time only as a
// safety net against a hang (a parked call nobody ends), never as a sleep.
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

constexpr int kProducers = 4;
constexpr int kWorkers = 4;
constexpr int kTasksPerProducer = 2000;
constexpr int kTotal = kProducers * kTasksPerProducer;

// Thread-safe counting listener (called under the broker's lock).
class CountingListener : public BrokerListener {
 public:
  void OnSubmitted(const Queue&, const Task&) override { ++submitted; }
  void OnDispatched(const Queue&, const Task&) override { ++dispatched; }
  void OnRetried(const Queue&, const Task&) override { ++retried; }
  void OnLeaseExpired(const Queue&, const Task&) override { ++expired; }
  void OnEnded(const Queue&, const Task&) override { ++ended; }
  void OnDropped(const Queue&, const Task&, absl::string_view) override { ++dropped; }
  std::atomic<int> submitted{0}, dispatched{0}, retried{0}, expired{0}, ended{0},
      dropped{0};
};

// Completions seen by workers: id -> how many Complete calls were accepted.
struct Ledger {
  absl::Mutex mu;
  absl::flat_hash_map<uint64_t, int> completed ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<uint64_t, uint64_t> tokens ABSL_GUARDED_BY(mu);
  std::atomic<int> done{0};
  std::atomic<int> bad_reports{0};
};

void Produce(Broker& broker, int producer, std::vector<TaskId>& ids,
             std::atomic<int>& rejected) {
  for (int i = 0; i < kTasksPerProducer; ++i) {
    TaskSpec spec;
    spec.queue = (i % 2) ? "even" : "odd";
    spec.type = (i % 3) ? "a" : "b";
    spec.payload = std::to_string(producer) + ":" + std::to_string(i);
    spec.priority = static_cast<uint32_t>(i % 10);
    if (i % 7 == 0) spec.idempotency_key = spec.payload;
    absl::StatusOr<SubmitResult> r = broker.SubmitNow(std::move(spec));
    if (!r.ok() || r->deduplicated) {
      ++rejected;
      continue;
    }
    ids.push_back(r->task.id);
  }
}

// Records the outcome of completing `tasks` with one batched Complete, after a
// heartbeat for half of them.
void Finish(Broker& broker, const std::vector<LeasedTask>& tasks, Ledger& ledger,
            const std::string& worker) {
  std::vector<HeartbeatItem> beats;
  std::vector<CompleteItem> items;
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (i % 2 == 0) beats.push_back(HeartbeatItem{tasks[i].id, tasks[i].token, 50.0, ""});
    items.push_back(CompleteItem{tasks[i].id, tasks[i].token, tasks[i].payload});
  }
  for (const HeartbeatOutcome& o : broker.Heartbeat(worker, beats)) {
    if (!o.status.ok() || o.cancel) ++ledger.bad_reports;
  }
  std::vector<absl::Status> s = broker.Complete(items);
  absl::MutexLock lock(&ledger.mu);
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (!s[i].ok()) {
      ++ledger.bad_reports;
      continue;
    }
    ++ledger.completed[tasks[i].id.value()];
    ledger.tokens[tasks[i].id.value()] = tasks[i].token;
    ++ledger.done;
  }
}

void CheckAllSucceededOnce(Broker& broker, const std::vector<std::vector<TaskId>>& ids,
                           Ledger& ledger, CountingListener& listener) {
  int total = 0;
  absl::MutexLock lock(&ledger.mu);
  for (const auto& per_producer : ids) {
    for (TaskId id : per_producer) {
      ++total;
      auto it = ledger.completed.find(id.value());
      ASSERT_NE(it, ledger.completed.end()) << id.ToString() << " never completed";
      EXPECT_EQ(it->second, 1) << id.ToString();
      EXPECT_EQ(ledger.tokens[id.value()], 1u) << "leased once: " << id.ToString();
      absl::StatusOr<TaskInfo> t = broker.GetTask(id);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->state, TaskState::kSucceeded);
      EXPECT_EQ(t->result, t->payload);
    }
  }
  EXPECT_EQ(static_cast<int>(ledger.completed.size()), total);
  EXPECT_EQ(ledger.bad_reports.load(), 0);
  EXPECT_EQ(broker.running_count(), 0u);
  uint64_t succeeded = 0;
  for (const QueueInfo& q : broker.ListQueues()) {
    EXPECT_EQ(q.stats.count(TaskState::kReady), 0u) << q.config.name;
    EXPECT_EQ(q.stats.count(TaskState::kRunning), 0u) << q.config.name;
    succeeded += q.stats.count(TaskState::kSucceeded);
  }
  EXPECT_EQ(succeeded, static_cast<uint64_t>(total));
  EXPECT_EQ(listener.submitted.load(), total);
  EXPECT_EQ(listener.dispatched.load(), total);
  EXPECT_EQ(listener.ended.load(), total);
  EXPECT_EQ(listener.expired.load(), 0);
  EXPECT_EQ(listener.retried.load(), 0);
}

TEST(BrokerConcurrencyTest, ThreadsSubmittingLeasingAndCompletingEndEveryTaskOnce) {
  FakeClock clock;
  CountingListener listener;
  Broker broker(BrokerOptions(), &clock, &listener);
  std::vector<std::vector<TaskId>> ids(kProducers);
  std::atomic<int> deduplicated{0};
  std::atomic<bool> producers_done{false};
  Ledger ledger;

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] { Produce(broker, p, ids[p], deduplicated); });
  }
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      const std::string worker = "worker-" + std::to_string(w);
      // Worker w only takes type "b" when w is 0, any type otherwise, so the
      // type filter runs under contention too.
      std::vector<std::string> types;
      if (w == 0) types = {"b"};
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (std::chrono::steady_clock::now() < give_up) {
        std::vector<LeasedTask> got;
        broker.Lease(LeaseRequest{worker, {"odd", "even"}, types, 8, absl::ZeroDuration()},
                     [&got](absl::StatusOr<std::vector<LeasedTask>> r) {
                       if (r.ok()) got = *std::move(r);
                     });
        if (got.empty()) {
          if (producers_done.load() &&
              ledger.done.load() + deduplicated.load() >= kTotal) {
            return;
          }
          std::this_thread::yield();
          continue;
        }
        Finish(broker, got, ledger, worker);
      }
    });
  }
  for (int p = 0; p < kProducers; ++p) threads[p].join();
  producers_done = true;
  for (size_t t = kProducers; t < threads.size(); ++t) threads[t].join();

  ASSERT_EQ(ledger.done.load() + deduplicated.load(), kTotal) << "workers gave up";
  EXPECT_EQ(deduplicated.load(), 0) << "every key is distinct";
  CheckAllSucceededOnce(broker, ids, ledger, listener);
}

TEST(BrokerConcurrencyTest, ParkedLongPollsAreWokenBySubmitsFromOtherThreads) {
  // Workers long-poll; the fake clock never moves, so a parked lease can only
  // end through a submit or through BeginDrain. Callbacks run on whichever
  // thread made the change (a producer's Submit) and hand the tasks over.
  FakeClock clock;
  CountingListener listener;
  Broker broker(BrokerOptions(), &clock, &listener);
  std::vector<std::vector<TaskId>> ids(kProducers);
  std::atomic<int> deduplicated{0};
  Ledger ledger;

  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      const std::string worker = "poller-" + std::to_string(w);
      while (true) {
        auto promise =
            std::make_shared<std::promise<absl::StatusOr<std::vector<LeasedTask>>>>();
        auto future = promise->get_future();
        broker.Lease(LeaseRequest{worker, {"odd", "even"}, {}, 4, absl::Seconds(30)},
                     [promise](absl::StatusOr<std::vector<LeasedTask>> r) {
                       promise->set_value(std::move(r));
                     });
        if (future.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
          ADD_FAILURE() << worker << ": a parked lease was never answered";
          return;
        }
        absl::StatusOr<std::vector<LeasedTask>> r = future.get();
        if (!r.ok()) {
          EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
          return;  // draining
        }
        if (r->empty()) {
          if (broker.draining()) return;
          continue;
        }
        Finish(broker, *r, ledger, worker);
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] { Produce(broker, p, ids[p], deduplicated); });
  }
  for (auto& t : producers) t.join();

  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ledger.done.load() + deduplicated.load() < kTotal &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  EXPECT_EQ(ledger.done.load() + deduplicated.load(), kTotal)
      << "tasks left READY while workers were parked";
  broker.BeginDrain();  // ends every parked long-poll
  for (auto& t : workers) t.join();

  EXPECT_EQ(deduplicated.load(), 0);
  CheckAllSucceededOnce(broker, ids, ledger, listener);
}

TEST(BrokerConcurrencyTest, ConcurrentTickCancelAndWatchDoNotLoseTasks) {
  // A producer submits, a canceller cancels two tasks in ten, a ticker moves
  // time in small steps (delays come due), workers complete what they get.
  // One task in ten has a type no worker leases: only its cancel ends it. The
  // other canceled ones race the workers. Every task must end exactly once:
  // SUCCEEDED or CANCELED.
  constexpr int kN = 3000;
  std::atomic<bool> stop{false};
  std::atomic<int> watch_finals{0};
  FakeClock clock;
  CountingListener listener;
  Broker broker(BrokerOptions(), &clock, &listener);
  std::vector<TaskId> ids(kN);
  std::atomic<int> submitted{0};

  std::thread producer([&] {
    for (int i = 0; i < kN; ++i) {
      TaskSpec spec;
      spec.queue = "q";
      spec.type = (i % 10 == 3) ? "held" : "t";
      spec.payload = std::to_string(i);
      if (i % 5 == 0) spec.not_before = clock.Now() + absl::Milliseconds(50);
      absl::StatusOr<SubmitResult> r = broker.SubmitNow(std::move(spec));
      ASSERT_TRUE(r.ok()) << r.status();
      ids[i] = r->task.id;
      if (i % 50 == 0) {
        absl::StatusOr<WatchId> w = broker.Watch(
            r->task.id, [&watch_finals](const TaskInfo&, bool final) {
              if (final) ++watch_finals;
            });
        EXPECT_TRUE(w.ok());
      }
      submitted.store(i + 1);
    }
  });
  std::thread canceller([&] {
    int next = 0;
    while (next < kN) {
      int avail = submitted.load();
      for (; next < avail; ++next) {
        if (next % 10 == 3 || next % 10 == 7) {
          absl::StatusOr<TaskInfo> c = broker.CancelTask(ids[next]);
          // Already SUCCEEDED is fine (complete won); anything else is a bug.
          if (!c.ok()) {
            EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
          }
        }
      }
      std::this_thread::yield();
    }
  });
  // Fake time moves at most 10 s in steps (then once more by 1 s below), well
  // inside the 30 s lease, so no lease expires however fast the loop spins.
  std::thread ticker([&] {
    absl::Duration advanced = absl::ZeroDuration();
    while (!stop.load()) {
      if (advanced < absl::Seconds(10)) {
        clock.Advance(absl::Milliseconds(1));
        advanced += absl::Milliseconds(1);
      }
      broker.Tick();
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  std::atomic<int> ended_by_workers{0};
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      while (!stop.load()) {
        std::vector<LeasedTask> got;
        broker.Lease(LeaseRequest{"w" + std::to_string(w), {"q"}, {"t"}, 16,
                                  absl::ZeroDuration()},
                     [&got](absl::StatusOr<std::vector<LeasedTask>> r) {
                       if (r.ok()) got = *std::move(r);
                     });
        std::vector<CompleteItem> items;
        for (const LeasedTask& l : got) items.push_back(CompleteItem{l.id, l.token, ""});
        for (const absl::Status& s : broker.Complete(items)) {
          EXPECT_TRUE(s.ok()) << s;
          ++ended_by_workers;
        }
        if (got.empty()) std::this_thread::yield();
      }
    });
  }
  producer.join();
  canceller.join();
  clock.Advance(absl::Seconds(1));  // every delayed task is due now
  broker.Tick();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (listener.ended.load() < kN && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  stop = true;
  ticker.join();
  for (auto& t : workers) t.join();

  EXPECT_EQ(listener.ended.load(), kN) << "every task ends exactly once";
  uint64_t succeeded = 0, canceled = 0;
  for (TaskId id : ids) {
    absl::StatusOr<TaskInfo> t = broker.GetTask(id);
    ASSERT_TRUE(t.ok()) << t.status();
    if (t->state == TaskState::kSucceeded) ++succeeded;
    else if (t->state == TaskState::kCanceled) ++canceled;
    else ADD_FAILURE() << id.ToString() << " ended " << TaskStateName(t->state);
  }
  EXPECT_EQ(succeeded + canceled, static_cast<uint64_t>(kN));
  EXPECT_EQ(succeeded, static_cast<uint64_t>(ended_by_workers.load()));
  EXPECT_GE(canceled, static_cast<uint64_t>(kN / 10)) << "every held task is canceled";
  for (int i = 3; i < kN; i += 10) {
    EXPECT_EQ(broker.GetTask(ids[i])->state, TaskState::kCanceled) << i;
  }
  EXPECT_EQ(watch_finals.load(), kN / 50);
  QueueInfo q = *broker.GetQueue("q");
  EXPECT_EQ(q.stats.count(TaskState::kSucceeded), succeeded);
  EXPECT_EQ(q.stats.count(TaskState::kCanceled), canceled);
  EXPECT_EQ(q.stats.count(TaskState::kReady) + q.stats.count(TaskState::kScheduled) +
                q.stats.count(TaskState::kRunning),
            0u);
}

}  // namespace
}  // namespace conveyor::server::broker_test
