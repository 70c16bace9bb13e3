// lease_keys_bench: the cost of a lease grant in the broker core (no gRPC)
// as the number of distinct limit keys grows. Keyed tasks sit in one lane per
// key, served round-robin; finding the next task should cost O(log keys).
//
//   lease_keys_bench [--tasks=200000] [--keys=0,1,10000] [--batch=8]
//
// K=0 is the baseline: tasks without any key.
//
// For each key count K: submits --tasks READY tasks spread over K rate keys
// (the queue's key_rate is high enough never to bind, so every lease is
// granted and the measurement is the ordering and bookkeeping), then leases
// them all in batches of --batch and completes each batch. Prints
//
//   RESULT lease_keys keys=K tasks=N grants_per_s=... ns_per_grant=...
//
// The same run with K=1 and K=10,000 gives the ratio to compare.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/clock.h"
#include "common/flags.h"
#include "server/broker.h"

namespace conveyor::bench {
namespace {

using server::Broker;
using server::BrokerOptions;

int RunOne(int keys, int tasks, int batch) {
  FakeClock clock;
  BrokerOptions options;
  options.queue_defaults.capacity = static_cast<uint64_t>(tasks) + 1;
  Broker broker(options, &clock);
  server::QueueConfig config = options.queue_defaults;
  config.name = "bench";
  config.limits.key_rate = server::RateLimit{1'000'000, 1'000'000};
  if (!broker.CreateQueue(config, false).ok()) return 1;
  for (int i = 0; i < tasks; ++i) {
    server::TaskSpec spec;
    spec.queue = "bench";
    spec.type = "noop";
    if (keys > 0) spec.rate_key = absl::StrCat("k", i % keys);
    if (!broker.SubmitNow(std::move(spec)).ok()) return 1;
  }
  server::LeaseRequest request;
  request.worker_id = "bench";
  request.queues = {"bench"};
  request.max_tasks = static_cast<uint32_t>(batch);
  int granted = 0;
  const auto start = std::chrono::steady_clock::now();
  while (granted < tasks) {
    std::vector<server::LeasedTask> got;
    broker.Lease(request, [&](absl::StatusOr<std::vector<server::LeasedTask>> r) {
      if (r.ok()) got = std::move(*r);
    });
    if (got.empty()) break;
    std::vector<server::CompleteItem> done;
    for (const server::LeasedTask& t : got) done.push_back({t.id, t.token, ""});
    broker.Complete(done);
    granted += static_cast<int>(got.size());
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("RESULT lease_keys keys=%d tasks=%d granted=%d grants_per_s=%.0f ns_per_grant=%.0f\n",
              keys, tasks, granted, granted / seconds, seconds * 1e9 / granted);
  return granted == tasks ? 0 : 1;
}

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) {
  conveyor::SetDaemonDefaults();  // as conveyord runs (common/flags.h)
  conveyor::bench::Flags flags(argc, argv);
  const int tasks = flags.Number<int>("tasks", 200'000);
  const std::string keys = flags.String("keys", "0,1,10000");
  const int batch = flags.Number<int>("batch", 8);
  if (!flags.AllUsed() || tasks < 1 || batch < 1 || batch > 1000) return 64;
  int rc = 0;
  for (absl::string_view k : absl::StrSplit(keys, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(k, &n) || n < 0) return 64;
    rc |= conveyor::bench::RunOne(n, tasks, batch);
  }
  return rc;
}
