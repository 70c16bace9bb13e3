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
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/broker.h"

namespace grpc {
class Server;
class ServerCredentials;
}
namespace prometheus {
class Exposer;
}

namespace conveyor::server {
namespace journal {
class FileJournal;
}

class Authorizer;
class BrokerMetrics;
class BrokerService;

struct ServerOptions {
  // host:port; port 0 picks a free port.
  std::string listen = "127.0.0.1:7400";
  // host:port for /metrics; empty disables.
  std::string metrics_addr = "127.0.0.1:9464";
  // host:port of a plaintext listener serving only grpc.health.v1.Health
  // (for Kubernetes' native gRPC probes, which cannot speak TLS); empty:
  // none. It mirrors the API's serving status (NOT_SERVING while draining).
  std::string health_listen;
  // TLS (docs/security.md, "TLS and mTLS"). With tls_cert_file and
  // tls_key_file (PEM) the API is served over TLS only; with
  // tls_client_ca_file (PEM bundle) as well, every client must present a
  // certificate that chains to one of those CAs (mTLS), and a call's
  // auth_context() carries its x509_common_name and
  // x509_subject_alternative_name. gRPC re-reads all three files every
  // tls_reload_interval (whole seconds, 1s to 24h) and uses what changed for
  // new connections.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  absl::Duration tls_reload_interval = absl::Seconds(60);
  // Tokens and roles (docs/security.md, "Tokens and roles"): checks every
  // call of the API. Null: auth off, every call allowed.
  std::shared_ptr<Authorizer> authorizer;
  // Serve on a non-loopback address without TLS and auth (docs/security.md,
  // "Safe defaults"); Start refuses that otherwise.
  bool insecure = false;
  BrokerOptions broker;
  // gRPC transport limits (docs/security.md, "Abuse on the wire", says what
  // each holds against under gRPC 1.51 and what it does not).
  int max_concurrent_streams = 1000;
  absl::Duration keepalive_time = absl::Minutes(1);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  absl::Duration max_connection_idle = absl::Minutes(10);
  absl::Duration max_connection_age = absl::Hours(2);
  absl::Duration max_connection_age_grace = absl::Seconds(90);
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Bounds the buffers of gRPC's transports (not the calls it queues): a
  // client holding half-sent messages takes the broker to about this plus
  // 50-250 MiB, and gRPC then closes connections to free memory.
  int64_t memory_quota_bytes = int64_t{1} << 30;
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
  // size of the last snapshot, at least snapshot_min_bytes (64 MiB, as
  // Redis's auto-aof-rewrite-min-size: a small broker replays at most that
  // much at a restart, and does not re-encode its whole state every few MiB).
  uint64_t snapshot_bytes = 0;
  uint64_t snapshot_min_bytes = uint64_t{64} << 20;

  // The API is served over TLS (tls_cert_file is set).
  bool tls_enabled() const { return !tls_cert_file.empty(); }
  // TLS that also requires and verifies client certificates.
  bool mtls_enabled() const { return tls_enabled() && !tls_client_ca_file.empty(); }
};

// What ValidateTlsOptions read from the certificate files, for the logs.
// Never holds key material.
struct TlsSummary {
  std::string cert_subject;  // the server certificate's subject, one line
  absl::Time cert_not_after = absl::InfinitePast();
  // SHA-256 of the server certificate, as `openssl x509 -fingerprint -sha256`
  // prints it (AB:CD:...).
  std::string cert_sha256;
  // Subjects of the certificates in tls_client_ca_file; empty without mTLS.
  std::vector<std::string> client_ca_subjects;

  bool operator==(const TlsSummary&) const = default;
};

// Checks the TLS options before anything starts. INVALID_ARGUMENT for a bad
// combination (a key without a certificate or the reverse, a client CA
// without a certificate, a reload interval that is not whole seconds from 1s
// to 24h); FAILED_PRECONDITION for a file that is missing, unreadable, not
// PEM, an encrypted key, or a key that does not match the certificate. The
// message names the flag and the path, never file contents. TLS off: OK with
// an empty summary.
absl::StatusOr<TlsSummary> ValidateTlsOptions(const ServerOptions& options);

// The credentials the API listens with: insecure without TLS; otherwise
// gRPC's TlsServerCredentials over a FileWatcherCertificateProvider on the
// files, requiring and verifying client certificates with mTLS. Does not
// validate: call ValidateTlsOptions first.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const ServerOptions& options);

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
  // 0 without health_listen.
  int health_port() const { return health_port_; }
  Broker* broker() { return broker_.get(); }

  // Drains: refuse new submits and leases, end parked calls and watches, let
  // running tasks report until none runs or drain_grace passes, then stop
  // serving (cancelling what remains). Idempotent.
  void Shutdown();

 private:
  BrokerServer(ServerOptions options, const Clock* clock);
  void TickLoop();
  void SnapshotLoop();
  // With TLS: checks the files every reload interval and logs a change, a
  // file gRPC cannot use, or a certificate close to expiry.
  void TlsCheckLoop(TlsSummary at_start);

  const ServerOptions options_;
  const Clock* const clock_;
  std::unique_ptr<BrokerMetrics> metrics_;
  std::unique_ptr<journal::FileJournal> journal_;  // null: in memory
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<BrokerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // health only, plaintext
  int health_port_ = 0;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  int metrics_port_ = 0;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;
  std::thread snapshotter_;
  std::thread tls_checker_;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_SERVER_H_
