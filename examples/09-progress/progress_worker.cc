// progress_worker: a worker built with the C++ SDK whose handler reports its
// progress (HandlerContext::ReportProgress); the worker sends it to the broker
// with its heartbeats, and `conveyor watch ID` / `conveyor get ID` show it.
//
// It serves the task type `report`: four steps of --step each. Run a broker,
// then:
//
//   progress_worker --broker=127.0.0.1:7400 --queue=reports &
//   conveyor watch "$(conveyor submit --queue=reports --type=report '')"
//
// SIGTERM or SIGINT drains it.
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/log.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:7400", "Broker host:port.");
ABSL_FLAG(std::string, queue, "reports", "Queue to serve.");
ABSL_FLAG(absl::Duration, step, absl::Milliseconds(400), "Time each of the four steps takes.");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Milliseconds(200),
          "Heartbeat pace: how often progress reaches the broker.");
ABSL_FLAG(std::string, metrics_addr, "", "host:port for /metrics; empty: none.");

namespace {

using conveyor::worker::HandlerContext;

// Four steps; progress before each, and a stop if the task is cancelled (its
// timeout, a cancel, or a drain) while it waits.
absl::StatusOr<std::string> Report(HandlerContext& ctx) {
  const char* const kSteps[] = {"fetch", "parse", "render", "upload"};
  const absl::Duration step = absl::GetFlag(FLAGS_step);
  for (int i = 0; i < 4; ++i) {
    ctx.ReportProgress(25.0 * i, kSteps[i]);
    if (ctx.cancellation().WaitFor(step)) return absl::CancelledError("report: stopped");
  }
  return std::string("report ready");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "progress_worker: an example Conveyor worker whose `report` handler reports "
      "progress.\nUsage: progress_worker [--broker=HOST:PORT] [--queue=Q]");
  std::vector<std::string> args = conveyor::NormalizeFlagNames(argc, argv);
  std::vector<char*> argv2 = conveyor::ArgvOf(args);
  absl::ParseCommandLine(static_cast<int>(args.size()), argv2.data());

  conveyor::worker::WorkerOptions options;
  options.brokers = {absl::GetFlag(FLAGS_broker)};
  options.queues = {absl::GetFlag(FLAGS_queue)};
  options.concurrency = 2;
  options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  conveyor::worker::Worker worker(options);
  if (absl::Status s = worker.Register("report", Report); !s.ok()) {
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
