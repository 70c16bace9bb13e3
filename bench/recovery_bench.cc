// recovery_bench: how long the real conveyord takes to come back with N live
// tasks in its data directory, with and without a snapshot, and how many
// bytes of disk each live task costs.
//
//   recovery_bench [--tasks=1000000] [--payload_bytes=64] [--batch=1000]
//       [--fill_threads=2] [--fill_snapshot_bytes=16777216] [--restarts=2]
//       [--fsync=always] [--keys=client|none]
//       [--scenarios=journal,fill_snapshot] [--dir=/tmp] [--conveyord=PATH]
//
// --keys=none fills through the generated stub instead of the client library,
// so the tasks carry no idempotency key (the library always attaches one).
//
// Scenario `journal` (one data directory):
//   1. start with --snapshot-bytes=1TiB (never snapshots), fill N tasks with
//      SubmitBatch (queue `bench`, capacity 10,000,000; the client library
//      puts a 32-hex-digit idempotency key on every task), measure the data
//      directory, stop with SIGTERM;
//   2. restart --restarts times, timing spawn -> port file and spawn ->
//      Health SERVING, then check the queue holds N READY tasks
//      (RESULT recovery from=journal_only);
//   3. start with --snapshot-bytes=4096 and write a few small records
//      (pause and resume the queue): a snapshot of the whole state is
//      written and the segments it covers deleted; measure the directory,
//      stop;
//   4. restart --restarts times again (RESULT recovery from=snapshot).
// Scenario `fill_snapshot` (a second directory): fill with
// --snapshot-bytes=--fill_snapshot_bytes, so snapshots are written during
// the fill (the log line "snapshot written"), wait until no new one comes
// for 3 s, measure, stop, restart --restarts times
// (RESULT recovery from=fill_snapshot).
//
// Output lines:
//   RESULT fill scenario=... tasks=... seconds=... tasks_per_s=... snapshots=...
//          failed=... rss_bytes=... hwm_bytes=...     (the broker's VmRSS, VmHWM)
//   RESULT disk state=... live_tasks=... used_bytes=... apparent_bytes=...
//          allocated_bytes=... used_bytes_per_task=... apparent_bytes_per_task=...
//          allocated_bytes_per_task=... files=...
//   RESULT stop state=... seconds=...
//   RESULT recovery from=... run=... port_file_ms=... serving_ms=... ready=...
//          rss_bytes=... hwm_bytes=...
// "apparent" is the sum of file sizes (du -sb), "allocated" the blocks on
// disk (du -s); journal segments are preallocated (--segment-bytes, 64 MiB by
// default), so a fresh segment counts fully in both until it fills. "used"
// leaves out the unwritten (all-zero) tail of each segment: the bytes the
// journal actually holds.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif

namespace conveyor::bench {
namespace {

namespace v1 = ::conveyor::v1;
using client::Client;
using client::ClientOptions;
using client::ServingStatus;

constexpr char kNeverSnapshot[] = "--snapshot-bytes=1099511627776";
constexpr char kSnapshotLine[] = "\"msg\":\"snapshot written\"";

struct Config {
  uint64_t tasks = 1'000'000;
  size_t payload_bytes = 64;
  int batch = 1000;
  int fill_threads = 2;
  uint64_t fill_snapshot_bytes = 16 << 20;
  int restarts = 2;
  std::string fsync = "always";
  bool keys = true;  // the client library's idempotency key on every task
  std::vector<std::string> scenarios;
  std::string parent = "/tmp";
  std::string conveyord = CONVEYORD_PATH;
};

std::unique_ptr<Client> NewClient(const std::string& addr) {
  ClientOptions options;
  options.address = addr;
  options.timeout = absl::Seconds(120);
  options.channel_args.SetInt("grpc.use_local_subchannel_pool", 1);
  return std::make_unique<Client>(options);
}

class Scenario {
 public:
  Scenario(const Config& cfg, std::string root)
      : cfg_(cfg), root_(std::move(root)), broker_(cfg.conveyord, root_) {}

  std::string data() const { return root_ + "/data"; }

  std::vector<std::string> Flags(const std::string& snapshot_flag) const {
    return {absl::StrCat("--data-dir=", data()), absl::StrCat("--fsync=", cfg_.fsync),
            snapshot_flag};
  }

  bool Start(const std::vector<std::string>& flags) {
    if (!broker_.Start(flags).has_value()) {
      std::fprintf(stderr, "%s", broker_.log().c_str());
      return false;
    }
    return true;
  }

  bool CreateQueue() {
    v1::CreateQueueRequest create;
    create.mutable_config()->set_name("bench");
    create.mutable_config()->set_capacity(10'000'000);
    absl::StatusOr<v1::Queue> q = NewClient(broker_.addr())->CreateQueue(create);
    if (!q.ok()) std::fprintf(stderr, "CreateQueue: %s\n", q.status().ToString().c_str());
    return q.ok();
  }

  // SubmitBatch until cfg_.tasks are stored; false on any failure.
  bool Fill(const std::string& scenario) {
    const size_t snapshots_before = Snapshots();
    std::atomic<uint64_t> next{0};
    std::atomic<uint64_t> failed{0};
    std::vector<std::thread> threads;
    const absl::Time start = absl::Now();
    for (int t = 0; t < cfg_.fill_threads; ++t) {
      threads.emplace_back([&] {
        std::unique_ptr<Client> c = NewClient(broker_.addr());
        // --keys=none: the generated stub, which sends no idempotency keys.
        std::unique_ptr<v1::TaskService::Stub> raw;
        if (!cfg_.keys) {
          grpc::ChannelArguments args;
          args.SetInt("grpc.use_local_subchannel_pool", 1);
          args.SetMaxReceiveMessageSize(-1);
          raw = v1::TaskService::NewStub(grpc::CreateCustomChannel(
              broker_.addr(), grpc::InsecureChannelCredentials(), args));
        }
        while (true) {
          const uint64_t first = next.fetch_add(static_cast<uint64_t>(cfg_.batch));
          if (first >= cfg_.tasks) return;
          const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(cfg_.batch),
                                                cfg_.tasks - first);
          std::vector<v1::TaskSpec> specs(n);
          for (uint64_t i = 0; i < n; ++i) {
            specs[i].set_queue("bench");
            specs[i].set_type("noop");
            std::string payload = absl::StrFormat("%012u", first + i);
            payload.resize(cfg_.payload_bytes, 'p');
            specs[i].set_payload(std::move(payload));
          }
          absl::StatusOr<v1::SubmitBatchResponse> r;
          if (raw != nullptr) {
            v1::SubmitBatchRequest request;
            for (v1::TaskSpec& spec : specs) *request.add_tasks() = std::move(spec);
            grpc::ClientContext context;
            context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
            v1::SubmitBatchResponse response;
            grpc::Status st = raw->SubmitBatch(&context, request, &response);
            if (st.ok()) {
              r = std::move(response);
            } else {
              r = FromGrpcStatus(st);
            }
          } else {
            r = c->SubmitBatch(std::move(specs));
          }
          if (!r.ok()) {
            if (failed.fetch_add(n) == 0) {
              std::fprintf(stderr, "SubmitBatch: %s\n", r.status().ToString().c_str());
            }
            continue;
          }
          for (const auto& item : r->items()) {
            if (item.status().code() != 0 && failed.fetch_add(1) == 0) {
              std::fprintf(stderr, "SubmitBatch item: %s\n", item.status().message().c_str());
            }
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("RESULT fill scenario=%s tasks=%llu seconds=%.1f tasks_per_s=%.0f snapshots=%zu "
                "failed=%llu rss_bytes=%llu hwm_bytes=%llu\n",
                scenario.c_str(), static_cast<unsigned long long>(cfg_.tasks), seconds,
                static_cast<double>(cfg_.tasks) / seconds, Snapshots() - snapshots_before,
                static_cast<unsigned long long>(failed.load()),
                static_cast<unsigned long long>(broker_.child().StatusBytes("VmRSS")),
                static_cast<unsigned long long>(broker_.child().StatusBytes("VmHWM")));
    std::fflush(stdout);
    return failed.load() == 0;
  }

  size_t Snapshots() const { return CountOccurrences(broker_.log(), kSnapshotLine); }

  // Waits until no new snapshot has been logged for `quiet` (at most 10 min).
  void AwaitSnapshotsSettled(absl::Duration quiet) {
    size_t seen = Snapshots();
    absl::Time last_change = absl::Now();
    const absl::Time deadline = absl::Now() + absl::Minutes(10);
    while (absl::Now() - last_change < quiet && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(100));
      if (size_t n = Snapshots(); n != seen) {
        seen = n;
        last_change = absl::Now();
      }
    }
  }

  // Starts with --snapshot-bytes=4096, writes small records (pause and
  // resume the queue) until a snapshot of the whole state follows; false if
  // none came within 10 minutes. (Not --snapshot-bytes=1: each snapshot
  // starts a new segment, whose header counts as journal bytes, so an idle
  // broker would snapshot again and again.)
  bool ForceSnapshot() {
    if (!Start(Flags("--snapshot-bytes=4096"))) return false;
    const size_t before = Snapshots();
    std::unique_ptr<Client> c = NewClient(broker_.addr());
    const absl::Time deadline = absl::Now() + absl::Minutes(10);
    while (Snapshots() == before && absl::Now() < deadline) {
      for (int i = 0; i < 100; ++i) {
        if (!c->PauseQueue("bench").ok() || !c->ResumeQueue("bench").ok()) return false;
      }
      const absl::Time wait_until = absl::Now() + absl::Seconds(5);
      while (Snapshots() == before && absl::Now() < wait_until) {
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
    if (Snapshots() == before) return false;
    // No writes follow, so no further snapshot: let the loop see that.
    AwaitSnapshotsSettled(absl::Seconds(3));
    return true;
  }

  void Disk(const std::string& state) {
    const DirSize s = SizeOf(data());
    const auto per_task = [&](uint64_t bytes) {
      return static_cast<double>(bytes) / static_cast<double>(cfg_.tasks);
    };
    std::printf("RESULT disk state=%s live_tasks=%llu used_bytes=%llu apparent_bytes=%llu "
                "allocated_bytes=%llu used_bytes_per_task=%.1f apparent_bytes_per_task=%.1f "
                "allocated_bytes_per_task=%.1f files=%d\n",
                state.c_str(), static_cast<unsigned long long>(cfg_.tasks),
                static_cast<unsigned long long>(s.used),
                static_cast<unsigned long long>(s.apparent),
                static_cast<unsigned long long>(s.allocated), per_task(s.used),
                per_task(s.apparent), per_task(s.allocated), s.files);
    std::printf("# %s: %s\n", state.c_str(), ListDir(data()).c_str());
    std::fflush(stdout);
  }

  bool Stop(const std::string& state) {
    const absl::Time start = absl::Now();
    const int code = broker_.Stop();
    std::printf("RESULT stop state=%s seconds=%.2f exit=%d\n", state.c_str(),
                absl::ToDoubleSeconds(absl::Now() - start), code);
    std::fflush(stdout);
    return code == 0;
  }

  // Restarts cfg_.restarts times (each stopped with SIGTERM afterwards).
  bool TimeRecovery(const std::string& from) {
    bool ok = true;
    for (int run = 1; run <= cfg_.restarts && ok; ++run) {
      std::optional<absl::Duration> to_port = broker_.Start(Flags(kNeverSnapshot));
      if (!to_port.has_value()) return false;
      std::unique_ptr<Client> c = NewClient(broker_.addr());
      absl::Duration to_serving = absl::InfiniteDuration();
      const absl::Time deadline = absl::Now() + absl::Minutes(10);
      while (absl::Now() < deadline) {
        absl::StatusOr<ServingStatus> h = c->Health();
        if (h.ok() && *h == ServingStatus::kServing) {
          to_serving = absl::Now() - broker_.started_at();
          break;
        }
        absl::SleepFor(absl::Milliseconds(1));
      }
      const uint64_t rss = broker_.child().StatusBytes("VmRSS");
      const uint64_t hwm = broker_.child().StatusBytes("VmHWM");
      absl::StatusOr<v1::Queue> q = c->GetQueue("bench");
      const uint64_t ready = q.ok() ? q->stats().ready() : 0;
      std::printf("RESULT recovery from=%s run=%d port_file_ms=%.0f serving_ms=%.0f ready=%llu "
                  "rss_bytes=%llu hwm_bytes=%llu\n",
                  from.c_str(), run, absl::ToDoubleMilliseconds(*to_port),
                  absl::ToDoubleMilliseconds(to_serving), static_cast<unsigned long long>(ready),
                  static_cast<unsigned long long>(rss), static_cast<unsigned long long>(hwm));
      std::fflush(stdout);
      if (ready != cfg_.tasks) {
        std::fprintf(stderr, "expected %llu READY tasks after recovery, found %llu\n",
                     static_cast<unsigned long long>(cfg_.tasks),
                     static_cast<unsigned long long>(ready));
        ok = false;
      }
      c.reset();
      ok = Stop(absl::StrCat("after_recovery_from_", from)) && ok;
    }
    return ok;
  }

 private:
  const Config& cfg_;
  const std::string root_;
  BrokerProcess broker_;
};

bool RunJournal(const Config& cfg, const std::string& root) {
  Scenario s(cfg, root);
  if (!s.Start(s.Flags(kNeverSnapshot)) || !s.CreateQueue() || !s.Fill("journal")) return false;
  s.Disk("journal_only");
  if (!s.Stop("journal_only") || !s.TimeRecovery("journal_only")) return false;
  if (!s.ForceSnapshot()) {
    std::fprintf(stderr, "no snapshot was written\n");
    return false;
  }
  s.Disk("after_snapshot");
  if (!s.Stop("after_snapshot")) return false;
  return s.TimeRecovery("snapshot");
}

bool RunFillSnapshot(const Config& cfg, const std::string& root) {
  Scenario s(cfg, root);
  if (!s.Start(s.Flags(absl::StrCat("--snapshot-bytes=", cfg.fill_snapshot_bytes))) ||
      !s.CreateQueue() || !s.Fill("fill_snapshot")) {
    return false;
  }
  s.AwaitSnapshotsSettled(absl::Seconds(3));
  s.Disk("fill_snapshot");
  if (!s.Stop("fill_snapshot")) return false;
  return s.TimeRecovery("fill_snapshot");
}

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) {
  using conveyor::bench::Config;
  conveyor::bench::Flags flags(argc, argv);
  Config cfg;
  cfg.tasks = flags.Number("tasks", cfg.tasks);
  cfg.payload_bytes = flags.Number("payload_bytes", cfg.payload_bytes);
  cfg.batch = flags.Number("batch", cfg.batch);
  cfg.fill_threads = flags.Number("fill_threads", cfg.fill_threads);
  cfg.fill_snapshot_bytes = flags.Number("fill_snapshot_bytes", cfg.fill_snapshot_bytes);
  cfg.restarts = flags.Number("restarts", cfg.restarts);
  cfg.fsync = flags.String("fsync", cfg.fsync);
  const std::string keys = flags.String("keys", "client");
  cfg.keys = keys != "none";
  cfg.scenarios = absl::StrSplit(flags.String("scenarios", "journal,fill_snapshot"), ',',
                                 absl::SkipEmpty());
  cfg.parent = flags.String("dir", cfg.parent);
  cfg.conveyord = flags.String("conveyord", cfg.conveyord);
  if (!flags.AllUsed() || cfg.tasks == 0 || cfg.batch < 1 || cfg.fill_threads < 1 ||
      (keys != "client" && keys != "none")) {
    std::fprintf(stderr,
                 "usage: recovery_bench [--tasks=1000000] [--payload_bytes=64] [--batch=1000] "
                 "[--fill_threads=2] [--fill_snapshot_bytes=16777216] [--restarts=2] "
                 "[--fsync=always] [--keys=client|none] [--scenarios=journal,fill_snapshot] "
                 "[--dir=/tmp] [--conveyord=PATH]\n");
    return 64;
  }
  int rc = 0;
  for (const std::string& scenario : cfg.scenarios) {
    const std::string root =
        conveyor::bench::MakeTempDir(cfg.parent, absl::StrCat("conveyor_recovery_", scenario));
    if (root.empty()) return 1;
    bool ok = false;
    if (scenario == "journal") {
      ok = conveyor::bench::RunJournal(cfg, root);
    } else if (scenario == "fill_snapshot") {
      ok = conveyor::bench::RunFillSnapshot(cfg, root);
    } else {
      std::fprintf(stderr, "unknown scenario %s\n", scenario.c_str());
    }
    if (!ok) {
      std::fprintf(stderr, "scenario %s failed; directory kept: %s\n", scenario.c_str(),
                   root.c_str());
      rc = 1;
      continue;
    }
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  return rc;
}
