// durable_submit_bench: acknowledged submits per second of the real conveyord
// with a data directory, N concurrent submitters each sending one unary Submit
// and awaiting its answer before the next (conveyor::client::Client, so every
// submit carries the library's 32-hex-digit idempotency key).
//
//   durable_submit_bench [--seconds=10] [--warmup_seconds=1] [--submitters=64]
//       [--payload_bytes=64] [--policies=always,interval:10,never]
//       [--channels=own,shared] [--dir=/tmp] [--conveyord=PATH]
//
// For each fsync policy and channel mode it starts a fresh broker
// (--data-dir in a temp directory under --dir), creates the queue `bench`
// with capacity 10,000,000, runs the submitters for --warmup_seconds (not
// counted) and then --seconds, stops the broker with SIGTERM and prints:
//
//   RESULT durable_submit policy=always channels=own submitters=64
//          payload_bytes=64 seconds=10.0 submits=... submits_per_s=...
//          p50_ms=... p90_ms=... p99_ms=... max_ms=... errors=...
//          broker_cpu_pct=... bench_cpu_pct=...
//
// channels=own: each submitter its own Client and its own TCP connection
// (a local subchannel pool); channels=shared: one Client for all.
// The broker and this program share the machine's cores: on a small machine
// the client side takes a real share of the CPU (see bench_cpu_pct).
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "client/client.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif

namespace conveyor::bench {
namespace {

namespace v1 = ::conveyor::v1;
using client::Client;
using client::ClientOptions;

struct Config {
  double seconds = 10;
  double warmup_seconds = 1;
  int submitters = 64;
  size_t payload_bytes = 64;
  std::vector<std::string> policies;
  std::vector<std::string> channels;
  std::string parent = "/tmp";
  std::string conveyord = CONVEYORD_PATH;
};

// utime + stime of a process, in seconds (clock ticks from /proc).
double CpuSeconds(pid_t pid) {
  const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> f = absl::StrSplit(stat.substr(paren + 2), ' ');
  // After "pid (comm) ": state is field 0; utime 11, stime 12.
  if (f.size() < 13) return 0;
  double ut = 0, st = 0;
  (void)absl::SimpleAtod(f[11], &ut);
  (void)absl::SimpleAtod(f[12], &st);
  return (ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::unique_ptr<Client> NewClient(const std::string& addr, bool own_connection) {
  ClientOptions options;
  options.address = addr;
  options.timeout = absl::Seconds(30);
  options.submit_attempts = 1;  // an error counts as an error; none expected
  if (own_connection) options.channel_args.SetInt("grpc.use_local_subchannel_pool", 1);
  return std::make_unique<Client>(options);
}

int RunOne(const Config& cfg, const std::string& policy, const std::string& channels) {
  const std::string root = MakeTempDir(cfg.parent, "conveyor_durable_submit_bench");
  if (root.empty()) return 1;
  int rc = 0;
  {
    BrokerProcess broker(cfg.conveyord, root);
    if (!broker.Start({absl::StrCat("--data-dir=", root, "/data"),
                       absl::StrCat("--fsync=", policy), "--log-level=warning"})) {
      std::fprintf(stderr, "%s", broker.log().c_str());
      return 1;
    }
    const bool own = channels == "own";
    std::unique_ptr<Client> admin = NewClient(broker.addr(), false);
    v1::CreateQueueRequest create;
    create.mutable_config()->set_name("bench");
    create.mutable_config()->set_capacity(10'000'000);
    if (absl::StatusOr<v1::Queue> q = admin->CreateQueue(create); !q.ok()) {
      std::fprintf(stderr, "CreateQueue: %s\n", q.status().ToString().c_str());
      return 1;
    }
    std::vector<std::unique_ptr<Client>> clients;
    if (own) {
      for (int i = 0; i < cfg.submitters; ++i) clients.push_back(NewClient(broker.addr(), true));
    } else {
      clients.push_back(NewClient(broker.addr(), false));
    }

    // 0 warm-up, 1 measuring, 2 stop.
    std::atomic<int> phase{0};
    std::atomic<uint64_t> errors{0};
    std::vector<std::vector<double>> latencies(static_cast<size_t>(cfg.submitters));
    std::vector<std::thread> threads;
    for (int i = 0; i < cfg.submitters; ++i) {
      threads.emplace_back([&, i] {
        Client& c = *clients[own ? static_cast<size_t>(i) : 0];
        std::vector<double>& lat = latencies[static_cast<size_t>(i)];
        lat.reserve(1 << 16);
        v1::TaskSpec spec;
        spec.set_queue("bench");
        spec.set_type("noop");
        std::string payload(cfg.payload_bytes, 'p');
        for (uint64_t n = 0; phase.load(std::memory_order_relaxed) < 2; ++n) {
          const std::string tag = absl::StrFormat("%02d-%012u", i, n);
          payload.replace(0, std::min(tag.size(), payload.size()), tag, 0,
                          std::min(tag.size(), payload.size()));
          spec.set_payload(payload);
          const absl::Time t0 = absl::Now();
          absl::StatusOr<v1::SubmitResponse> r = c.Submit(spec);
          const absl::Duration d = absl::Now() - t0;
          if (phase.load(std::memory_order_relaxed) != 1) continue;
          if (r.ok()) {
            lat.push_back(absl::ToDoubleMilliseconds(d));
          } else if (errors.fetch_add(1) < 5) {
            std::fprintf(stderr, "submit: %s\n", r.status().ToString().c_str());
          }
        }
      });
    }
    absl::SleepFor(absl::Seconds(cfg.warmup_seconds));
    const double broker_cpu0 = CpuSeconds(broker.child().pid());
    const double self_cpu0 = SelfCpuSeconds();
    const absl::Time start = absl::Now();
    phase = 1;
    absl::SleepFor(absl::Seconds(cfg.seconds));
    phase = 2;
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    const double broker_cpu = CpuSeconds(broker.child().pid()) - broker_cpu0;
    const double self_cpu = SelfCpuSeconds() - self_cpu0;
    for (std::thread& t : threads) t.join();

    std::vector<double> all;
    for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    std::printf(
        "RESULT durable_submit policy=%s channels=%s submitters=%d payload_bytes=%zu "
        "seconds=%.1f submits=%zu submits_per_s=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
        "max_ms=%.2f errors=%llu broker_cpu_pct=%.0f bench_cpu_pct=%.0f\n",
        policy.c_str(), channels.c_str(), cfg.submitters, cfg.payload_bytes, elapsed,
        all.size(), static_cast<double>(all.size()) / elapsed, Quantile(all, 0.5),
        Quantile(all, 0.9), Quantile(all, 0.99), all.empty() ? 0.0 : all.back(),
        static_cast<unsigned long long>(errors.load()), 100 * broker_cpu / elapsed,
        100 * self_cpu / elapsed);
    std::fflush(stdout);
    if (errors.load() > 0) rc = 1;
    clients.clear();
    admin.reset();
    if (int code = broker.Stop(); code != 0) {
      std::fprintf(stderr, "conveyord exited %d on SIGTERM\n", code);
      rc = 1;
    }
  }
  std::error_code ec;
  fs::remove_all(root, ec);
  return rc;
}

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) {
  using conveyor::bench::Config;
  conveyor::bench::Flags flags(argc, argv);
  Config cfg;
  cfg.seconds = flags.Number("seconds", cfg.seconds);
  cfg.warmup_seconds = flags.Number("warmup_seconds", cfg.warmup_seconds);
  cfg.submitters = flags.Number("submitters", cfg.submitters);
  cfg.payload_bytes = flags.Number("payload_bytes", cfg.payload_bytes);
  cfg.policies = absl::StrSplit(flags.String("policies", "always,interval:10,never"), ',',
                                absl::SkipEmpty());
  cfg.channels = absl::StrSplit(flags.String("channels", "own,shared"), ',', absl::SkipEmpty());
  cfg.parent = flags.String("dir", cfg.parent);
  cfg.conveyord = flags.String("conveyord", cfg.conveyord);
  if (!flags.AllUsed() || cfg.submitters < 1 || cfg.seconds <= 0) {
    std::fprintf(stderr,
                 "usage: durable_submit_bench [--seconds=10] [--warmup_seconds=1] "
                 "[--submitters=64] [--payload_bytes=64] [--policies=always,interval:10,never] "
                 "[--channels=own,shared] [--dir=/tmp] [--conveyord=PATH]\n");
    return 64;
  }
  int rc = 0;
  for (const std::string& policy : cfg.policies) {
    for (const std::string& channels : cfg.channels) {
      rc |= conveyor::bench::RunOne(cfg, policy, channels);
    }
  }
  return rc;
}
