// BrokerServer: a running broker — the core, its gRPC service, the ticker
// thread that fires its timers, health, reflection and the metrics endpoint —
// wired together, started and drained in a stated order.
//
// Used by conveyord's main and by tests that need a real in-process server on
// a loopback port.
//
// Thread-safe: Shutdown may be called from any thread, once.
#ifndef CONVEYOR_SERVER_SERVER_H_
#define CONVEYOR_SERVER_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/broker.h"

namespace grpc {
class Server;
}
namespace prometheus {
class Exposer;
}

namespace conveyor::server {
namespace journal {
class FileJournal;
}

class BrokerMetrics;
class BrokerService;

struct ServerOptions {
  // host:port; port 0 picks a free port.
  std::string listen = "127.0.0.1:7400";
  // host:port for /metrics; empty disables.
  std::string metrics_addr = "127.0.0.1:9464";
  BrokerOptions broker;
  // gRPC transport limits.
  int max_concurrent_streams = 1000;
  absl::Duration keepalive_time = absl::Minutes(1);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  absl::Duration max_connection_idle = absl::Minutes(10);
  absl::Duration max_connection_age = absl::Hours(2);
  absl::Duration max_connection_age_grace = absl::Seconds(90);
  absl::Duration handshake_timeout = absl::Seconds(10);
  int64_t memory_quota_bytes = int64_t{2} << 30;
  int max_threads = 256;
  // How long Shutdown lets running tasks report before it stops serving.
  absl::Duration drain_grace = absl::Seconds(10);
  // Durable journal directory; empty: in memory only (a restart loses
  // everything).
  std::string data_dir;
  // "always" (default), "interval:<ms>" or "never".
  std::string fsync = "always";
  uint64_t segment_bytes = uint64_t{8} << 20;
  // A snapshot is written once this many journal bytes were written since
  // the last one, so disk use follows live state, not history. 0: twice the
  // size of the last snapshot, at least 4 MiB.
  uint64_t snapshot_bytes = 0;
};

class BrokerServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for bad options, UNAVAILABLE
  // when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<BrokerServer>> Start(
      ServerOptions options, const Clock* clock = RealClock::Get());
  ~BrokerServer();

  int port() const { return port_; }
  // 0 when metrics are disabled.
  int metrics_port() const { return metrics_port_; }
  Broker* broker() { return broker_.get(); }

  // Drains: refuse new submits and leases, end parked calls and watches, let
  // running tasks report until none runs or drain_grace passes, then stop
  // serving (cancelling what remains). Idempotent.
  void Shutdown();

 private:
  BrokerServer(ServerOptions options, const Clock* clock);
  void TickLoop();
  void SnapshotLoop();

  const ServerOptions options_;
  const Clock* const clock_;
  std::unique_ptr<BrokerMetrics> metrics_;
  std::unique_ptr<journal::FileJournal> journal_;  // null: in memory
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<BrokerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  int metrics_port_ = 0;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;
  std::thread snapshotter_;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_SERVER_H_
