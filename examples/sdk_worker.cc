// sdk_worker: a worker written with the C++ SDK (target `conveyor_worker`).
//
// It serves one custom task type, `word_count` (result: the number of
// whitespace-separated words in the payload, in decimal), and reports
// progress while it counts. Run a broker, then:
//
//   sdk_worker --broker=127.0.0.1:7400 --queue=text
//   conveyor submit --queue=text --type=word_count --payload='to be or not'
//
// SIGTERM or SIGINT drains it: running tasks get --grace to finish, the rest
// are handed back to the broker.
#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/log.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:7400", "Broker host:port.");
ABSL_FLAG(std::string, queue, "text", "Queue to serve.");
ABSL_FLAG(int, concurrency, 0, "Tasks run at once; 0: the number of cores.");
ABSL_FLAG(absl::Duration, grace, absl::Seconds(25), "Drain: time for running tasks to finish.");
ABSL_FLAG(std::string, metrics_addr, "", "host:port for /metrics; empty: none.");

namespace {

using conveyor::worker::HandlerContext;

// Counts words; checks for cancellation every 64 KiB so that a huge payload
// still stops promptly at its deadline.
absl::StatusOr<std::string> WordCount(HandlerContext& ctx) {
  const std::string& text = ctx.payload();
  if (text.empty()) return std::string("0");
  uint64_t words = 0;
  bool in_word = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i % (64 << 10) == 0 && i > 0) {
      if (ctx.cancelled()) return absl::CancelledError("word_count: stopped");
      ctx.ReportProgress(100.0 * static_cast<double>(i) / static_cast<double>(text.size()),
                         "counting");
    }
    const bool space = absl::ascii_isspace(static_cast<unsigned char>(text[i]));
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return absl::StrCat(words);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "sdk_worker: an example Conveyor worker built with the C++ SDK; serves the "
      "`word_count` task type.\nUsage: sdk_worker [--broker=HOST:PORT] [--queue=Q]");
  std::vector<std::string> args = conveyor::NormalizeFlagNames(argc, argv);
  std::vector<char*> argv2 = conveyor::ArgvOf(args);
  absl::ParseCommandLine(static_cast<int>(args.size()), argv2.data());

  conveyor::worker::WorkerOptions options;
  options.brokers = {absl::GetFlag(FLAGS_broker)};
  options.queues = {absl::GetFlag(FLAGS_queue)};
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.grace = absl::GetFlag(FLAGS_grace);
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  conveyor::worker::Worker worker(options);
  if (absl::Status s = worker.Register("word_count", WordCount); !s.ok()) {
    conveyor::LogError("cannot register", {{"error", s}});
    return 1;
  }
  // Blocks SIGTERM/SIGINT, serves until one arrives, then drains.
  if (absl::Status s = worker.Run(); !s.ok()) {
    conveyor::LogError("cannot start", {{"error", s}});
    return 1;
  }
  return 0;
}
