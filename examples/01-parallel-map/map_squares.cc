// map_squares: a parallel map with the C++ client library (Client::Map).
//
// Maps the built-in `sum_squares` handler over n = 1000, 2000, ...: one task
// per item, submitted as one group, followed until every task has ended. The
// results come back in input order, whatever order the workers finished in.
// Run a broker and a worker serving the queue, then:
//
//   conveyor-worker --queue=squares &
//   map_squares --broker=127.0.0.1:7400 --queue=squares --count=20
//
// Prints one line per item and a summary; exits 1 if any item failed.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/flags.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:7400", "Broker host:port.");
ABSL_FLAG(std::string, queue, "squares", "Queue of the tasks.");
ABSL_FLAG(int, count, 20, "Items to map.");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(60), "Bound on the whole map.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "map_squares: maps sum_squares over n = 1000, 2000, ... with Client::Map.\n"
      "Usage: map_squares [--broker=HOST:PORT] [--queue=Q] [--count=N]");
  std::vector<std::string> args = conveyor::NormalizeFlagNames(argc, argv);
  std::vector<char*> argv2 = conveyor::ArgvOf(args);
  absl::ParseCommandLine(static_cast<int>(args.size()), argv2.data());

  conveyor::client::ClientOptions client_options;
  client_options.address = absl::GetFlag(FLAGS_broker);
  conveyor::client::Client client(client_options);

  // The items: each one becomes one task's payload.
  std::vector<std::string> items;
  for (int i = 1; i <= absl::GetFlag(FLAGS_count); ++i) items.push_back(absl::StrCat(i * 1000));

  conveyor::client::MapOptions options;
  options.queue = absl::GetFlag(FLAGS_queue);
  options.type = "sum_squares";
  options.deadline = absl::GetFlag(FLAGS_deadline);
  // Called on every change; print every 4th item and the last.
  uint32_t shown = 0;
  options.on_progress = [&shown](const conveyor::client::MapProgress& p) {
    if (p.ended > shown && (p.ended % 4 == 0 || p.ended == p.total)) {
      std::fprintf(stderr, "progress: %u/%u ended\n", p.ended, p.total);
      shown = p.ended;
    }
  };
  absl::StatusOr<conveyor::client::MapResult> mapped = client.Map(items, options);
  if (!mapped.ok()) {
    std::fprintf(stderr, "map failed: %s\n", mapped.status().ToString().c_str());
    return 1;
  }

  // items[i] and mapped->items[i] belong together.
  for (size_t i = 0; i < items.size(); ++i) {
    const conveyor::client::MapItem& item = mapped->items[i];
    if (item.ok()) {
      std::printf("n=%s -> %s\n", items[i].c_str(), item.result.c_str());
    } else {
      std::printf("n=%s failed (%s): %s\n", items[i].c_str(),
                  conveyor::v1::TaskState_Name(item.state).c_str(), item.error.c_str());
    }
  }
  const size_t failed = mapped->failures;
  std::printf("%zu items: %zu succeeded, %zu failed\n", items.size(), items.size() - failed,
              failed);
  return failed == 0 ? 0 : 1;
}
