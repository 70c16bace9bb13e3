// rate_limit_bench: does a queue's rate limit hold across several worker
// processes? The real conveyord and N real conveyor-worker processes.
//
//   rate_limit_bench [--rate=50] [--burst=0] [--workers=3] [--slots=8]
//       [--seconds=20] [--tolerance=0.05] [--dir=/tmp] [--conveyord=PATH]
//       [--worker=PATH]
//
// Creates queue `rated` with limits.rate = --rate/s (burst --burst; 0: the
// broker's default, a tenth of a second's worth), starts --workers workers of
// --slots slots each serving it with the built-in `noop` handler, submits
// enough tasks to keep the backlog going for the whole window, waits for all
// of them, and reads each task's started_at. Skipping the burst (the first
// `burst` starts), it counts the starts in the --seconds window that follows:
//
//   RESULT rate_limit limit=50 workers=3 slots=8 window_s=20 starts=1000
//          observed_per_s=50.0 deviation=0.000 within_tolerance=1
//
// Exit status 0 when |observed / limit - 1| <= --tolerance, 1 otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "common/grpc_util.h"

namespace conveyor::bench {
namespace {

namespace v1 = ::conveyor::v1;

int Run(int argc, char** argv) {
  Flags flags(argc, argv);
  const double rate = flags.Number<double>("rate", 50);
  const uint32_t burst = flags.Number<uint32_t>("burst", 0);
  const int workers = flags.Number<int>("workers", 3);
  const int slots = flags.Number<int>("slots", 8);
  const double seconds = flags.Number<double>("seconds", 20);
  const double tolerance = flags.Number<double>("tolerance", 0.05);
  const std::string parent = flags.String("dir", "/tmp");
  const std::string conveyord = flags.String("conveyord", CONVEYORD_PATH);
  const std::string worker_bin = flags.String("worker", CONVEYOR_WORKER_PATH);
  if (!flags.AllUsed() || rate <= 0 || workers < 1 || slots < 1 || seconds <= 0) return 64;

  const std::string dir = MakeTempDir(parent, "conveyor-rate-bench");
  BrokerProcess broker(conveyord, dir);
  if (!broker.Start({})) return 1;
  client::ClientOptions options;
  options.address = broker.addr();
  options.timeout = absl::Seconds(30);
  client::Client client(options);

  v1::CreateQueueRequest create;
  create.mutable_config()->set_name("rated");
  create.mutable_config()->set_capacity(1'000'000);
  create.mutable_config()->mutable_limits()->mutable_rate()->set_per_second(rate);
  create.mutable_config()->mutable_limits()->mutable_rate()->set_burst(burst);
  absl::StatusOr<v1::Queue> queue = client.CreateQueue(create);
  if (!queue.ok()) {
    std::fprintf(stderr, "CreateQueue: %s\n", queue.status().ToString().c_str());
    return 1;
  }
  const uint32_t effective_burst =
      burst > 0 ? burst : static_cast<uint32_t>(std::max(1.0, std::floor(rate / 10)));

  // Backlog for the burst, the window and 2 s more.
  const int total = static_cast<int>(effective_burst + rate * (seconds + 2));
  std::vector<std::string> ids;
  ids.reserve(total);
  for (int start = 0; start < total; start += 500) {
    std::vector<v1::TaskSpec> batch;
    for (int i = start; i < std::min(total, start + 500); ++i) {
      v1::TaskSpec spec;
      spec.set_queue("rated");
      spec.set_type("noop");
      batch.push_back(std::move(spec));
    }
    absl::StatusOr<v1::SubmitBatchResponse> r = client.SubmitBatch(std::move(batch));
    if (!r.ok()) {
      std::fprintf(stderr, "SubmitBatch: %s\n", r.status().ToString().c_str());
      return 1;
    }
    for (const auto& item : r->items()) {
      if (item.status().code() != 0) {
        std::fprintf(stderr, "item refused: %s\n", item.status().message().c_str());
        return 1;
      }
      ids.push_back(item.task().id());
    }
  }

  std::vector<std::unique_ptr<Child>> children;
  for (int w = 0; w < workers; ++w) {
    children.push_back(std::make_unique<Child>());
    if (!children.back()->Start({worker_bin, absl::StrCat("--broker=", broker.addr()),
                                 "--queue=rated", absl::StrCat("--concurrency=", slots),
                                 "--metrics-addr=", absl::StrCat("--worker-id=bench-", w)},
                                fs::path(dir) / absl::StrCat("worker-", w, ".log"))) {
      return 1;
    }
  }

  // Wait for the backlog to drain (bounded).
  const absl::Time deadline = absl::Now() + absl::Seconds(total / rate + 60);
  while (absl::Now() < deadline) {
    absl::StatusOr<v1::Queue> q = client.GetQueue(create.config().name());
    if (q.ok() && q->stats().ready() == 0 && q->stats().running() == 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  std::vector<absl::Time> starts;
  starts.reserve(ids.size());
  for (const std::string& id : ids) {
    absl::StatusOr<v1::Task> t = client.GetTask(id);
    if (t.ok() && t->has_started_at()) starts.push_back(FromProto(t->started_at()));
  }
  for (auto& c : children) c->Signal(SIGTERM);
  for (auto& c : children) c->Wait(absl::Seconds(30));
  broker.Stop();
  std::sort(starts.begin(), starts.end());
  if (starts.size() <= effective_burst) {
    std::fprintf(stderr, "only %zu tasks started\n", starts.size());
    return 1;
  }
  const absl::Time from = starts[effective_burst - 1];
  const absl::Time to = from + absl::Seconds(seconds);
  if (starts.back() < to) {
    std::fprintf(stderr, "the backlog ran out before the window ended\n");
    return 1;
  }
  const size_t in_window = static_cast<size_t>(
      std::upper_bound(starts.begin(), starts.end(), to) -
      std::upper_bound(starts.begin(), starts.end(), from));
  const double observed = static_cast<double>(in_window) / seconds;
  const double deviation = observed / rate - 1;
  const bool ok = std::fabs(deviation) <= tolerance;
  std::printf(
      "RESULT rate_limit limit=%g workers=%d slots=%d window_s=%g starts=%zu "
      "observed_per_s=%.2f deviation=%.4f within_tolerance=%d\n",
      rate, workers, slots, seconds, in_window, observed, deviation, ok ? 1 : 0);
  std::error_code ec;
  if (ok) fs::remove_all(dir, ec);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) { return conveyor::bench::Run(argc, argv); }
