// journal_bench: appends/s of FileJournal under fsync=always on the real disk,
// with N concurrent appenders each waiting for its append to be durable
// before sending the next (like N RPC handlers waiting on the journal).
// Group commit shows as appends/s growing with N while fsyncs/s stays flat.
//
//   journal_bench [--seconds=S] [--dir=PARENT] [--record_bytes=B]
//                 [--policy=always|never|interval:<ms>]
//
// Prints one line per N:
//   RESULT appenders=N appends_per_s=... fsyncs_per_s=... records_per_fsync=...
//          mean_fsync_ms=...
// The data directory is made with mkdtemp under PARENT (default /tmp) and
// removed afterwards.
#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/journal/file_journal.h"

namespace {

using conveyor::server::journal::FileJournal;
using conveyor::server::journal::FileJournalOptions;
using conveyor::server::journal::FsyncPolicy;
using conveyor::server::journal::JournalStats;

struct Config {
  double seconds = 2.0;
  std::string parent = "/tmp";
  size_t record_bytes = 128;
  std::string policy = "always";
};

bool ParseArgs(int argc, char** argv, Config* c) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (absl::ConsumePrefix(&a, "--seconds=")) {
      if (!absl::SimpleAtod(a, &c->seconds) || c->seconds <= 0) return false;
    } else if (absl::ConsumePrefix(&a, "--dir=")) {
      c->parent = std::string(a);
    } else if (absl::ConsumePrefix(&a, "--record_bytes=")) {
      if (!absl::SimpleAtoi(a, &c->record_bytes)) return false;
    } else if (absl::ConsumePrefix(&a, "--policy=")) {
      c->policy = std::string(a);
    } else {
      return false;
    }
  }
  return true;
}

int RunOne(const Config& cfg, const FsyncPolicy& policy, int appenders) {
  std::string tmpl = cfg.parent + "/conveyor_journal_bench.XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string root = tmpl;
  int rc = 0;
  {
    FileJournalOptions o;
    o.dir = root + "/data";
    o.fsync = policy;
    auto j = FileJournal::Open(o);
    if (!j.ok()) {
      std::fprintf(stderr, "open: %s\n", j.status().ToString().c_str());
      return 1;
    }
    absl::Status s = (*j)->Recover([](const auto&) { return absl::OkStatus(); },
                                   [](const auto&) { return absl::OkStatus(); });
    if (!s.ok()) {
      std::fprintf(stderr, "recover: %s\n", s.ToString().c_str());
      return 1;
    }
    FileJournal* journal = j->get();
    const std::string record(cfg.record_bytes, 'r');
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> appends{0};
    std::atomic<uint64_t> errors{0};
    std::vector<std::thread> threads;
    const JournalStats before = journal->stats();
    const absl::Time start = absl::Now();
    for (int t = 0; t < appenders; ++t) {
      threads.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed)) {
          absl::Notification done;
          bool ok = false;
          journal->Append({record}, [&](absl::Status st) {
            ok = st.ok();
            done.Notify();
          });
          done.WaitForNotification();
          if (ok) {
            appends.fetch_add(1, std::memory_order_relaxed);
          } else {
            errors.fetch_add(1, std::memory_order_relaxed);
          }
        }
      });
    }
    absl::SleepFor(absl::Seconds(cfg.seconds));
    stop = true;
    for (auto& th : threads) th.join();
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    const JournalStats after = journal->stats();
    const uint64_t syncs = after.syncs - before.syncs;
    const double sync_ms =
        syncs == 0 ? 0.0
                   : absl::ToDoubleMilliseconds(after.sync_time - before.sync_time) /
                         static_cast<double>(syncs);
    std::printf(
        "RESULT appenders=%d policy=%s appends_per_s=%.0f fsyncs_per_s=%.0f "
        "records_per_fsync=%.1f mean_fsync_ms=%.3f errors=%llu\n",
        appenders, policy.ToString().c_str(),
        static_cast<double>(appends.load()) / elapsed,
        static_cast<double>(syncs) / elapsed,
        syncs == 0 ? 0.0 : static_cast<double>(appends.load()) / static_cast<double>(syncs),
        sync_ms, static_cast<unsigned long long>(errors.load()));
    std::fflush(stdout);
    if (errors.load() > 0) rc = 1;
    if (!(*j)->Close().ok()) rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  if (!ParseArgs(argc, argv, &cfg)) {
    std::fprintf(stderr,
                 "usage: journal_bench [--seconds=S] [--dir=PARENT] "
                 "[--record_bytes=B] [--policy=always|never|interval:<ms>]\n");
    return 64;
  }
  auto policy = conveyor::server::journal::ParseFsyncPolicy(cfg.policy);
  if (!policy.ok()) {
    std::fprintf(stderr, "%s\n", policy.status().ToString().c_str());
    return 64;
  }
  int rc = 0;
  for (int n : {1, 4, 16, 64, 256}) rc |= RunOne(cfg, *policy, n);
  return rc;
}
