// Measures broker memory per queued task: RSS growth while N tasks with a
// 64-byte payload sit READY in the core (no gRPC), divided by N.
//
//   build/bench/memory_per_task [N=1000000] [payload_bytes=64]
//
// Prints one line: RESULT memory_per_task tasks=N payload=B bytes_per_task=X
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "common/clock.h"
#include "server/broker.h"

namespace {

long RssBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 1'000'000;
  const size_t payload_bytes = argc > 2 ? std::atol(argv[2]) : 64;
  conveyor::FakeClock clock;
  conveyor::server::BrokerOptions options;
  options.queue_defaults.capacity = static_cast<uint64_t>(n) + 1;
  conveyor::server::Broker broker(options, &clock);
  // Create the queue and intern the type before the baseline.
  conveyor::server::TaskSpec warm;
  warm.queue = "bench";
  warm.type = "noop";
  if (!broker.SubmitNow(warm).ok()) return 1;
  const long before = RssBytes();
  const std::string payload(payload_bytes, 'p');
  for (long i = 0; i < n; ++i) {
    conveyor::server::TaskSpec spec;
    spec.queue = "bench";
    spec.type = "noop";
    spec.payload = payload;
    auto r = broker.SubmitNow(std::move(spec));
    if (!r.ok()) {
      std::fprintf(stderr, "submit %ld: %s\n", i, r.status().ToString().c_str());
      return 1;
    }
  }
  const long after = RssBytes();
  std::printf("RESULT memory_per_task tasks=%ld payload=%zu bytes_per_task=%.1f\n", n,
              payload_bytes, static_cast<double>(after - before) / static_cast<double>(n));
  return 0;
}
