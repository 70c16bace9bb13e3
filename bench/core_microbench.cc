// core_microbench: Google Benchmark microbenchmarks of the broker core (no
// gRPC) and of the journal. Run by hand (bench/README.md):
//
//   build/bench/core_microbench [--benchmark_filter=...] [--benchmark_repetitions=3]
//   CONVEYOR_BENCH_10M=1 build/bench/core_microbench --benchmark_filter=Depth
//
// Core (server::Broker, FakeClock, no journal unless the name says so; each
// task a 64-byte payload):
//   BM_Submit/key:K              SubmitNow of one task (K=1: with a 32-hex-digit
//                                idempotency key, as the client library sends)
//   BM_SubmitLeaseCompleteAtDepth/D
//                                one steady-state cycle at D READY tasks: submit
//                                8, lease 8, complete 8 (items = tasks); flat in
//                                D is the goal ("lease throughput flat from 1
//                                thousand to 10 million queued"). 10M only with
//                                CONVEYOR_BENCH_10M=1 (about 2 GB, ~30 s setup)
//   BM_DelayedTimers/K           K tasks submitted with a 1 s delay (a timer
//                                each), the clock moved past them, Tick(): the
//                                timer heap's push + pop + becoming READY
//   BM_TimerHeapAfterChurn       RSS growth per task after submit+lease+complete
//                                cycles with `retained` small (ended tasks are
//                                dropped at once): what stays behind per task
//                                (counter bytes_per_task)
// Journal (server/journal):
//   BM_EncodeRecords/updated:U   one task's journal record: U=0 its submit
//                                record (64-byte payload, 32-hex-digit key),
//                                U=1 its update record once it succeeded
//   BM_Crc32c/bytes              CRC32C of a record
//   BM_JournalAppend/records     FileJournal (fsync=never, /tmp) appends of
//                                `records` 160-byte records per batch, pipelined
//                                (the writer thread keeps up or the run waits)
//   BM_JournalAppendAwaited      one 160-byte record per append, fsync=always,
//                                each awaited: one group commit + fdatasync
//   BM_SubmitJournaled           Broker + FileJournal (fsync=never): Submit with
//                                its record encoded and written, callbacks awaited
//                                in flight windows of 1000
//   BM_GetQueueAtDepth           GetQueue with 1M READY tasks of one priority, and
//                                with one of another priority among them
//   BM_SubmitDuringSnapshot/C    a snapshot of 1M queued tasks (fsync=never) while
//                                one producer submits, awaiting each: the longest
//                                submit wait and the snapshot's time, encoding C
//                                tasks per lock hold (0: all at once)
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "common/clock.h"
#include "common/flags.h"
#include "common/log.h"
#include "server/broker.h"
#include "server/journal/crc32c.h"
#include "server/journal_codec.h"
#include "server/journal/file_journal.h"

namespace conveyor::bench {
namespace {

using server::Broker;
using server::BrokerOptions;
namespace journal = server::journal;

constexpr char kQueue[] = "bench";

server::TaskSpec Spec(uint64_t i, bool key) {
  server::TaskSpec spec;
  spec.queue = kQueue;
  spec.type = "noop";
  spec.payload = absl::StrFormat("%020d", i);
  spec.payload.resize(64, '0');
  if (key) spec.idempotency_key = absl::StrFormat("%032x", i);
  return spec;
}

// A broker with queue `bench` of the given capacity and retained count.
std::unique_ptr<Broker> MakeBroker(const Clock* clock, uint64_t capacity, uint64_t retained,
                                   journal::Journal* j = nullptr,
                                   size_t snapshot_chunk_tasks = 4096) {
  BrokerOptions options;
  options.queue_defaults.capacity = capacity;
  options.snapshot_chunk_tasks = snapshot_chunk_tasks;
  auto broker = std::make_unique<Broker>(options, clock, nullptr, j);
  if (j != nullptr && !broker->Recover().ok()) return nullptr;
  server::QueueConfig config = options.queue_defaults;
  config.name = kQueue;
  config.retained = retained;
  if (!broker->CreateQueue(config, false).ok()) return nullptr;
  return broker;
}

std::vector<server::LeasedTask> LeaseNow(Broker& b, uint32_t max) {
  server::LeaseRequest request;
  request.worker_id = "bench";
  request.queues = {kQueue};
  request.max_tasks = max;
  std::vector<server::LeasedTask> got;
  b.Lease(request, [&](absl::StatusOr<std::vector<server::LeasedTask>> r) {
    if (r.ok()) got = std::move(*r);
  });
  return got;
}

void CompleteAll(Broker& b, const std::vector<server::LeasedTask>& tasks) {
  std::vector<server::CompleteItem> done;
  done.reserve(tasks.size());
  for (const server::LeasedTask& t : tasks) done.push_back({t.id, t.token, ""});
  b.Complete(done);
}

uint64_t RssBytes() {
  const std::string text = ReadFileOrEmpty("/proc/self/status");
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, "VmRSS:")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    uint64_t kb = 0;
    if (absl::SimpleAtoi(line, &kb)) return kb * 1024;
  }
  return 0;
}

// ───────────────────────────── core ─────────────────────────────

void BM_Submit(benchmark::State& state) {
  const bool key = state.range(0) != 0;
  FakeClock clock;
  std::unique_ptr<Broker> b = MakeBroker(&clock, 100'000'000, 1000);
  uint64_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<server::SubmitResult> r = b->SubmitNow(Spec(i++, key));
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    if ((i & 0x3ffff) == 0) {  // keep memory bounded: purge every 262,144
      state.PauseTiming();
      (void)b->PurgeQueue(kQueue);
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(i));
}
BENCHMARK(BM_Submit)->ArgName("key")->Arg(0)->Arg(1);

void BM_SubmitLeaseCompleteAtDepth(benchmark::State& state) {
  const auto depth = static_cast<uint64_t>(state.range(0));
  constexpr uint32_t kBatch = 8;
  FakeClock clock;
  std::unique_ptr<Broker> b = MakeBroker(&clock, depth + 1000, 1000);
  uint64_t i = 0;
  for (; i < depth; ++i) {
    if (!b->SubmitNow(Spec(i, false)).ok()) {
      state.SkipWithError("fill failed");
      return;
    }
  }
  int64_t items = 0;
  for (auto _ : state) {
    for (uint32_t k = 0; k < kBatch; ++k) (void)b->SubmitNow(Spec(i++, false));
    std::vector<server::LeasedTask> got = LeaseNow(*b, kBatch);
    CompleteAll(*b, got);
    items += static_cast<int64_t>(got.size());
  }
  state.SetItemsProcessed(items);
  state.counters["depth"] = static_cast<double>(depth);
}
BENCHMARK(BM_SubmitLeaseCompleteAtDepth)
    ->Arg(1'000)
    ->Arg(100'000)
    ->Arg(1'000'000)
    ->Arg(10'000'000);

// GetQueue (its stats: counts, oldest ready age, blocked reasons) with N
// READY tasks. mixed=0: one priority; mixed=1: one task of another priority
// in the same lane (with a heap per lane, that made the oldest-ready search
// scan every entry; with a FIFO per priority it looks at one front each).
void BM_GetQueueAtDepth(benchmark::State& state) {
  const auto depth = static_cast<uint64_t>(state.range(0));
  const bool mixed = state.range(1) != 0;
  FakeClock clock;
  std::unique_ptr<Broker> b = MakeBroker(&clock, depth + 1000, 1000);
  for (uint64_t i = 0; i < depth; ++i) {
    server::TaskSpec spec = Spec(i, false);
    if (mixed && i == depth / 2) spec.priority = 5;
    if (!b->SubmitNow(spec).ok()) {
      state.SkipWithError("fill failed");
      return;
    }
  }
  for (auto _ : state) {
    absl::StatusOr<server::QueueInfo> q = b->GetQueue(kQueue);
    benchmark::DoNotOptimize(q);
  }
}
BENCHMARK(BM_GetQueueAtDepth)
    ->ArgNames({"depth", "mixed"})
    ->Args({1'000'000, 0})
    ->Args({1'000'000, 1})
    ->Unit(benchmark::kMicrosecond);

void BM_DelayedTimers(benchmark::State& state) {
  const auto k = static_cast<uint64_t>(state.range(0));
  FakeClock clock;
  std::unique_ptr<Broker> b = MakeBroker(&clock, 100'000'000, 1000);
  uint64_t i = 0;
  for (auto _ : state) {
    state.PauseTiming();
    (void)b->PurgeQueue(kQueue);
    state.ResumeTiming();
    for (uint64_t j = 0; j < k; ++j) {
      server::TaskSpec spec = Spec(i++, false);
      // Spread over 1 s so the heap is ordered by real work.
      spec.not_before = clock.Now() + absl::Seconds(1) + absl::Microseconds(j % 1000);
      (void)b->SubmitNow(std::move(spec));
    }
    clock.Advance(absl::Seconds(2));
    b->Tick();
  }
  state.SetItemsProcessed(static_cast<int64_t>(i));
}
BENCHMARK(BM_DelayedTimers)->Arg(1'000)->Arg(100'000);

// Not a speed figure: what a finished task leaves behind in the broker.
void BM_TimerHeapAfterChurn(benchmark::State& state) {
  constexpr uint64_t kTasks = 1'000'000;
  for (auto _ : state) {
    FakeClock clock;
    std::unique_ptr<Broker> b = MakeBroker(&clock, 100'000, 100);
    // Warm up allocator pools, then measure.
    uint64_t i = 0;
    auto cycle = [&](uint64_t n) {
      for (uint64_t done = 0; done < n; done += 8) {
        for (int k = 0; k < 8; ++k) (void)b->SubmitNow(Spec(i++, false));
        CompleteAll(*b, LeaseNow(*b, 8));
        clock.Advance(absl::Microseconds(10));  // 100k tasks/s of broker time
      }
    };
    cycle(100'000);
    const uint64_t rss0 = RssBytes();
    cycle(kTasks);
    const uint64_t rss1 = RssBytes();
    state.counters["bytes_per_task"] =
        static_cast<double>(rss1 - rss0) / static_cast<double>(kTasks);
    state.counters["live_records"] = static_cast<double>(b->task_count());
  }
}
BENCHMARK(BM_TimerHeapAfterChurn)->Iterations(1)->Unit(benchmark::kMillisecond);

// ───────────────────────────── journal ─────────────────────────────

void BM_Crc32c(benchmark::State& state) {
  std::string data(static_cast<size_t>(state.range(0)), 'x');
  uint32_t crc = 0;
  for (auto _ : state) {
    crc = journal::crc32c::Extend(crc, data.data(), data.size());
    benchmark::DoNotOptimize(crc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Crc32c)->Arg(64)->Arg(256)->Arg(4096);

// The submit record of a task with a 64-byte payload and a 32-hex-digit key
// (as the client library sends), and its update record once it succeeded with
// a 16-byte result: the records written per task on the submit and complete
// paths.
void BM_EncodeRecords(benchmark::State& state) {
  const bool updated = state.range(0) != 0;
  server::QueueConfig config;
  config.name = kQueue;
  server::Queue queue(config, [](uint64_t) -> server::Task* { return nullptr; });
  const std::string payload(64, 'p');
  server::Task* task = server::Task::Create(server::TaskId(0x18c0ffee00010001), &queue, 0,
                                            payload, absl::FromUnixMicros(1'700'000'000'000'000),
                                            "0123456789abcdef0123456789abcdef");
  task->state = server::TaskState::kSucceeded;
  task->set_token(7);
  task->mutable_extra().result = "result-0123456789";
  size_t bytes = 0;
  for (auto _ : state) {
    std::string record =
        updated ? server::EncodeUpdated(*task) : server::EncodeSubmitted(*task, "noop");
    bytes += record.size();
    benchmark::DoNotOptimize(record);
  }
  server::Task::Destroy(task);
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_EncodeRecords)->ArgName("updated")->Arg(0)->Arg(1);

// A FileJournal in a fresh temp directory, recovered (empty) and ready.
struct TempJournal {
  std::string dir;
  std::unique_ptr<journal::FileJournal> j;

  // `recover`: run the (empty) journal's Recover here; a Broker given the
  // journal runs it itself.
  TempJournal(const char* policy, bool recover) {
    dir = MakeTempDir("/tmp", "conveyor-microbench");
    journal::FileJournalOptions o;
    o.dir = dir + "/data";
    o.fsync = *journal::ParseFsyncPolicy(policy);
    absl::StatusOr<std::unique_ptr<journal::FileJournal>> opened = journal::FileJournal::Open(o);
    if (!opened.ok()) return;
    j = std::move(*opened);
    if (!recover) return;
    absl::Status s = j->Recover([](const journal::JournalSnapshot&) { return absl::OkStatus(); },
                                [](const journal::JournalRecord&) { return absl::OkStatus(); });
    if (!s.ok()) j.reset();
  }
  ~TempJournal() {
    if (j) (void)j->Close();
    j.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// Waits until `done` reaches `target` (the writer thread counts it up).
void AwaitCount(const std::atomic<int64_t>& done, int64_t target) {
  while (done.load(std::memory_order_acquire) < target) std::this_thread::yield();
}

void BM_JournalAppend(benchmark::State& state) {
  const auto records = static_cast<size_t>(state.range(0));
  TempJournal tj("never", true);
  if (!tj.j) {
    state.SkipWithError("journal open failed");
    return;
  }
  std::atomic<int64_t> done{0};
  int64_t sent = 0;
  const std::string record(160, 'r');
  for (auto _ : state) {
    std::vector<std::string> batch(records, record);
    tj.j->Append(std::move(batch), [&](absl::Status) { done.fetch_add(1); });
    ++sent;
    if (sent % 1024 == 0) AwaitCount(done, sent - 512);  // bounded in flight
  }
  AwaitCount(done, sent);
  state.SetItemsProcessed(sent * static_cast<int64_t>(records));
}
BENCHMARK(BM_JournalAppend)->Arg(1)->Arg(100)->UseRealTime();

void BM_JournalAppendAwaited(benchmark::State& state) {
  TempJournal tj("always", true);
  if (!tj.j) {
    state.SkipWithError("journal open failed");
    return;
  }
  const std::string record(160, 'r');
  for (auto _ : state) {
    absl::Notification n;
    tj.j->Append({record}, [&](absl::Status) { n.Notify(); });
    n.WaitForNotification();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_JournalAppendAwaited)->UseRealTime();

void BM_SubmitJournaled(benchmark::State& state) {
  TempJournal tj("never", false);
  if (!tj.j) {
    state.SkipWithError("journal open failed");
    return;
  }
  std::unique_ptr<Broker> b = MakeBroker(RealClock::Get(), 100'000'000, 1000, tj.j.get());
  if (!b) {
    state.SkipWithError("broker setup failed");
    return;
  }
  std::atomic<int64_t> done{0};
  int64_t sent = 0;
  for (auto _ : state) {
    b->Submit(Spec(static_cast<uint64_t>(sent), false), absl::InfiniteFuture(),
              [&](absl::StatusOr<server::SubmitResult>) { done.fetch_add(1); });
    ++sent;
    if (sent % 1000 == 0) AwaitCount(done, sent - 500);
    if (sent % 262144 == 0) {
      state.PauseTiming();
      AwaitCount(done, sent);
      (void)b->PurgeQueue(kQueue);
      state.ResumeTiming();
    }
  }
  AwaitCount(done, sent);
  state.SetItemsProcessed(sent);
  b.reset();
}
BENCHMARK(BM_SubmitJournaled)->UseRealTime();

// A snapshot of 1M queued tasks while one producer submits, awaiting each:
// the longest a submit waited (the broker's lock is held while the tasks are
// encoded), and the snapshot's own time. Arg: tasks encoded per lock hold
// (0: all at once, as before the snapshot was chunked).
void BM_SubmitDuringSnapshot(benchmark::State& state) {
  constexpr uint64_t kTasks = 1'000'000;
  const size_t chunk = state.range(0) == 0 ? SIZE_MAX : static_cast<size_t>(state.range(0));
  TempJournal tj("never", false);
  if (!tj.j) {
    state.SkipWithError("journal open failed");
    return;
  }
  std::unique_ptr<Broker> b = MakeBroker(RealClock::Get(), 100'000'000, 1000, tj.j.get(), chunk);
  if (!b) {
    state.SkipWithError("broker setup failed");
    return;
  }
  std::atomic<int64_t> done{0};
  for (uint64_t i = 0; i < kTasks; ++i) {
    b->Submit(Spec(i, false), absl::InfiniteFuture(),
              [&](absl::StatusOr<server::SubmitResult>) { done.fetch_add(1); });
    if (i % 1000 == 999) AwaitCount(done, static_cast<int64_t>(i) - 500);
  }
  AwaitCount(done, static_cast<int64_t>(kTasks));
  absl::Duration longest, snapshot_time;
  int64_t submits = 0;
  uint64_t next = kTasks;
  for (auto _ : state) {
    std::atomic<bool> finished{false};
    const absl::Time start = absl::Now();
    std::thread snap([&] {
      (void)b->WriteSnapshot();
      snapshot_time += absl::Now() - start;
      finished.store(true);
    });
    while (!finished.load()) {
      const absl::Time t0 = absl::Now();
      absl::Notification acked;
      b->Submit(Spec(next++, false), absl::InfiniteFuture(),
                [&](absl::StatusOr<server::SubmitResult>) { acked.Notify(); });
      acked.WaitForNotification();
      longest = std::max(longest, absl::Now() - t0);
      ++submits;
    }
    snap.join();
  }
  state.counters["longest_submit_ms"] = absl::ToDoubleMilliseconds(longest);
  state.counters["snapshot_ms"] =
      absl::ToDoubleMilliseconds(snapshot_time) / static_cast<double>(state.iterations());
  state.counters["submits_during"] =
      static_cast<double>(submits) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_SubmitDuringSnapshot)->Arg(0)->Arg(4096)->Iterations(2)->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) {
  // Measure the broker core as conveyord runs it (common/flags.h).
  conveyor::SetDaemonDefaults();
  conveyor::SetLogLevel(conveyor::LogLevel::kWarning);  // no "journal recovered" lines
  if (const char* ten = std::getenv("CONVEYOR_BENCH_10M"); ten != nullptr && ten[0] == '1') {
    benchmark::RegisterBenchmark("BM_SubmitLeaseCompleteAtDepth/10000000",
                                 conveyor::bench::BM_SubmitLeaseCompleteAtDepth)
        ->Arg(10'000'000);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
