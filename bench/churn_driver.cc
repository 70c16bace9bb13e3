// churn_driver: pushes tasks through a running broker as fast as it can while
// keeping about --live of them unfinished: one thread submits with
// SubmitBatch, another leases (up to --batch at a time) and completes them
// in one Complete call. Used by bench/compaction_soak.sh; not a test.
//
//   churn_driver --addr=HOST:PORT [--queue=churn] [--total=10000000]
//       [--live=10000] [--batch=1000] [--payload_bytes=64]
//       [--progress_seconds=10]
//
// Prints a PROGRESS line every --progress_seconds and at the end
//   RESULT churn total=... seconds=... tasks_per_s=... submit_errors=...
//          complete_errors=...
// Exit 0 once --total tasks were submitted and completed without error.
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "common/grpc_util.h"

namespace conveyor::bench {
namespace {

namespace v1 = ::conveyor::v1;
using client::Client;
using client::ClientOptions;

struct Config {
  std::string addr;
  std::string queue = "churn";
  uint64_t total = 10'000'000;
  uint64_t live = 10'000;
  uint32_t batch = 1000;
  size_t payload_bytes = 64;
  double progress_seconds = 10;
};

std::unique_ptr<Client> NewClient(const std::string& addr) {
  ClientOptions options;
  options.address = addr;
  options.timeout = absl::Seconds(60);
  options.channel_args.SetInt("grpc.use_local_subchannel_pool", 1);
  return std::make_unique<Client>(options);
}

class Churn {
 public:
  explicit Churn(const Config& cfg) : cfg_(cfg) {}

  int Run() {
    const absl::Time start = absl::Now();
    std::thread producer([this] { Produce(); });
    std::thread consumer([this] { Consume(); });
    absl::Time next_progress = start + absl::Seconds(cfg_.progress_seconds);
    while (completed_.load() < cfg_.total && !failed_.load()) {
      absl::SleepFor(absl::Milliseconds(100));
      if (absl::Now() >= next_progress) {
        next_progress += absl::Seconds(cfg_.progress_seconds);
        const double s = absl::ToDoubleSeconds(absl::Now() - start);
        std::printf("PROGRESS t=%.0fs submitted=%llu completed=%llu tasks_per_s=%.0f\n", s,
                    static_cast<unsigned long long>(submitted_.load()),
                    static_cast<unsigned long long>(completed_.load()),
                    static_cast<double>(completed_.load()) / s);
        std::fflush(stdout);
      }
    }
    {
      absl::MutexLock lock(&mu_);  // wakes the producer
      stop_ = true;
    }
    producer.join();
    consumer.join();
    const double s = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("RESULT churn total=%llu seconds=%.1f tasks_per_s=%.0f submit_errors=%llu "
                "complete_errors=%llu\n",
                static_cast<unsigned long long>(completed_.load()), s,
                static_cast<double>(completed_.load()) / s,
                static_cast<unsigned long long>(submit_errors_.load()),
                static_cast<unsigned long long>(complete_errors_.load()));
    std::fflush(stdout);
    return completed_.load() >= cfg_.total && submit_errors_.load() == 0 &&
                   complete_errors_.load() == 0
               ? 0
               : 1;
  }

 private:
  void Fail(const std::string& what) {
    std::fprintf(stderr, "%s\n", what.c_str());
    failed_ = true;
  }

  void Produce() {
    std::unique_ptr<Client> c = NewClient(cfg_.addr);
    uint64_t seq = 0;
    while (!stop_.load() && submitted_.load() < cfg_.total) {
      // Wait for room under the live target.
      uint64_t room = 0;
      {
        absl::MutexLock lock(&mu_);
        // Refill once half a batch has room (the consumer's unlock of mu_
        // after each completion re-evaluates this).
        auto has_room = [this] {
          return stop_.load() || submitted_.load() - completed_.load() +
                                         std::min<uint64_t>(cfg_.batch, cfg_.live) / 2 <=
                                     cfg_.live;
        };
        mu_.AwaitWithTimeout(absl::Condition(&has_room), absl::Seconds(1));
        const uint64_t outstanding = submitted_.load() - completed_.load();
        room = outstanding >= cfg_.live ? 0 : cfg_.live - outstanding;
      }
      const uint64_t n = std::min<uint64_t>({room, cfg_.batch, cfg_.total - submitted_.load()});
      if (n == 0) continue;
      std::vector<v1::TaskSpec> specs(n);
      for (v1::TaskSpec& spec : specs) {
        spec.set_queue(cfg_.queue);
        spec.set_type("noop");
        std::string payload = absl::StrFormat("%016u", seq++);
        payload.resize(cfg_.payload_bytes, 'p');
        spec.set_payload(std::move(payload));
      }
      absl::StatusOr<v1::SubmitBatchResponse> r = c->SubmitBatch(std::move(specs));
      if (!r.ok()) {
        submit_errors_ += n;
        Fail(absl::StrCat("SubmitBatch: ", r.status().ToString()));
        return;
      }
      uint64_t ok = 0;
      for (const auto& item : r->items()) {
        if (item.status().code() == 0) {
          ++ok;
        } else if (submit_errors_.fetch_add(1) < 5) {
          std::fprintf(stderr, "SubmitBatch item: %s\n", item.status().message().c_str());
        }
      }
      submitted_ += ok;
    }
  }

  void Consume() {
    std::unique_ptr<Client> c = NewClient(cfg_.addr);
    v1::LeaseRequest lease;
    lease.set_worker_id("churn-driver");
    lease.add_queues(cfg_.queue);
    lease.set_max_tasks(cfg_.batch);
    ToProto(absl::Milliseconds(500), lease.mutable_wait());
    while (!stop_.load() && completed_.load() < cfg_.total) {
      absl::StatusOr<v1::LeaseResponse> leased = c->Lease(lease);
      if (!leased.ok()) {
        Fail(absl::StrCat("Lease: ", leased.status().ToString()));
        return;
      }
      if (leased->tasks_size() == 0) continue;
      v1::CompleteRequest complete;
      for (const v1::LeasedTask& t : leased->tasks()) {
        v1::CompleteRequest::Item* item = complete.add_items();
        item->set_id(t.id());
        item->set_token(t.token());
      }
      absl::StatusOr<v1::CompleteResponse> done = c->Complete(complete);
      if (!done.ok()) {
        Fail(absl::StrCat("Complete: ", done.status().ToString()));
        return;
      }
      uint64_t ok = 0;
      for (const auto& item : done->items()) {
        if (item.code() == 0) {
          ++ok;
        } else if (complete_errors_.fetch_add(1) < 5) {
          std::fprintf(stderr, "Complete item: %s\n", item.message().c_str());
        }
      }
      absl::MutexLock lock(&mu_);  // wakes the producer
      completed_ += ok;
    }
  }

  const Config& cfg_;
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<uint64_t> submit_errors_{0};
  std::atomic<uint64_t> complete_errors_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  // Only for the producer's wait: counters change under it so Await wakes.
  absl::Mutex mu_;
};

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) {
  using conveyor::bench::Config;
  conveyor::bench::Flags flags(argc, argv);
  Config cfg;
  cfg.addr = flags.String("addr", "");
  cfg.queue = flags.String("queue", cfg.queue);
  cfg.total = flags.Number("total", cfg.total);
  cfg.live = flags.Number("live", cfg.live);
  cfg.batch = flags.Number("batch", cfg.batch);
  cfg.payload_bytes = flags.Number("payload_bytes", cfg.payload_bytes);
  cfg.progress_seconds = flags.Number("progress_seconds", cfg.progress_seconds);
  if (!flags.AllUsed() || cfg.addr.empty() || cfg.batch < 1 || cfg.batch > 1000 ||
      cfg.live < 1 || cfg.progress_seconds <= 0) {
    std::fprintf(stderr,
                 "usage: churn_driver --addr=HOST:PORT [--queue=churn] [--total=10000000] "
                 "[--live=10000] [--batch=1000] [--payload_bytes=64] [--progress_seconds=10]\n");
    return 64;
  }
  return conveyor::bench::Churn(cfg).Run();
}
