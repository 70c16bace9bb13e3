#include "server/server.h"

#include <fcntl.h>
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "prometheus/exposer.h"
#include "server/journal/file_journal.h"
#include "server/auth.h"
#include "server/exposure.h"
#include "server/metrics.h"
#include "server/service.h"

namespace conveyor::server {
namespace {

int Ms(absl::Duration d) {
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
}

}  // namespace

// --- TLS: start-up checks of the certificate files and the credentials the
// API listens with (docs/security.md, "TLS and mTLS").
namespace {

// Certificate files are small; anything larger is not one.
constexpr off_t kMaxTlsFileBytes = off_t{1} << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// The whole file at `path`. The message names the flag and the path, never
// the contents.
absl::StatusOr<std::string> ReadTlsFile(absl::string_view flag, const std::string& path) {
  auto fail = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat("--", flag, "=", path, ": ", why));
  };
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) {
    return fail(ec ? ec.message() : "no such file");
  }
  if (!std::filesystem::is_regular_file(st)) return fail("not a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(absl::StrCat("cannot be read: ", std::strerror(errno)));
  std::string data;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 &&
         data.size() <= static_cast<size_t>(kMaxTlsFileBytes)) {
    data.append(buf, static_cast<size_t>(n));
  }
  const int read_errno = errno;
  ::close(fd);
  if (n < 0) return fail(absl::StrCat("cannot be read: ", std::strerror(read_errno)));
  if (data.size() > static_cast<size_t>(kMaxTlsFileBytes)) {
    return fail("larger than 1 MiB; not a PEM file");
  }
  return data;
}

// Every certificate in a PEM text, in order.
std::vector<X509Ptr> ParseCertificates(const std::string& pem) {
  std::vector<X509Ptr> certs;
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (bio != nullptr) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  ERR_clear_error();  // the end of the text reads as an error
  return certs;
}

// Refuses to prompt on the terminal for a passphrase: gRPC cannot use an
// encrypted key either.
int NoPassphrase(char*, int, int, void*) { return -1; }

std::string SubjectOf(X509* cert) {
  char buf[512];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  return buf;
}

absl::Time NotAfterOf(X509* cert) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

std::string Sha256Of(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    if (i > 0) out += ':';
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

}  // namespace

absl::StatusOr<TlsSummary> ValidateTlsOptions(const ServerOptions& o) {
  const bool cert = !o.tls_cert_file.empty(), key = !o.tls_key_file.empty();
  if (cert != key) {
    return absl::InvalidArgumentError(
        cert ? "--tls-cert needs --tls-key (the certificate's private key)"
             : "--tls-key needs --tls-cert (the certificate it belongs to)");
  }
  if (!cert) {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca needs --tls-cert and --tls-key: client certificates are "
          "verified only over TLS");
    }
    return TlsSummary{};
  }
  const absl::Duration interval = o.tls_reload_interval;
  if (interval < absl::Seconds(1) || interval > absl::Hours(24) ||
      interval != absl::Seconds(absl::ToInt64Seconds(interval))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-reload-interval=", absl::FormatDuration(interval),
                     ": gRPC re-reads certificate files every whole number of seconds; use "
                     "1s to 24h"));
  }
  absl::StatusOr<std::string> cert_pem = ReadTlsFile("tls-cert", o.tls_cert_file);
  if (!cert_pem.ok()) return cert_pem.status();
  std::vector<X509Ptr> chain = ParseCertificates(*cert_pem);
  if (chain.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--tls-cert=", o.tls_cert_file, ": no PEM certificate in it"));
  }
  absl::StatusOr<std::string> key_pem = ReadTlsFile("tls-key", o.tls_key_file);
  if (!key_pem.ok()) return key_pem.status();
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey(
      bio == nullptr ? nullptr
                     : PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (pkey == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--tls-key=", o.tls_key_file,
        absl::StrContains(*key_pem, "ENCRYPTED")
            ? ": the key is encrypted; gRPC needs an unencrypted PEM key (protect it with file "
              "permissions)"
            : ": no PEM private key in it"));
  }
  const bool match = X509_check_private_key(chain.front().get(), pkey.get()) == 1;
  ERR_clear_error();
  if (!match) {
    return absl::FailedPreconditionError(
        absl::StrCat("--tls-key=", o.tls_key_file, " does not match the certificate in --tls-cert=",
                     o.tls_cert_file, " (", SubjectOf(chain.front().get()), ")"));
  }
  TlsSummary summary;
  summary.cert_subject = SubjectOf(chain.front().get());
  summary.cert_not_after = NotAfterOf(chain.front().get());
  summary.cert_sha256 = Sha256Of(chain.front().get());
  if (!o.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca_pem = ReadTlsFile("tls-client-ca", o.tls_client_ca_file);
    if (!ca_pem.ok()) return ca_pem.status();
    for (const X509Ptr& ca : ParseCertificates(*ca_pem)) {
      summary.client_ca_subjects.push_back(SubjectOf(ca.get()));
    }
    if (summary.client_ca_subjects.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--tls-client-ca=", o.tls_client_ca_file, ": no PEM certificate in it"));
    }
  }
  return summary;
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const ServerOptions& o) {
  if (!o.tls_enabled()) return grpc::InsecureServerCredentials();
  namespace gx = grpc::experimental;
  const auto interval = static_cast<unsigned int>(
      std::clamp<int64_t>(absl::ToInt64Seconds(o.tls_reload_interval), 1, 86400));
  // The provider reads the files once here, then on its own thread every
  // `interval`; a changed key and certificate, or client CA bundle, is used
  // for new handshakes. The credentials keep it (and its thread) alive as long
  // as the server.
  std::shared_ptr<gx::CertificateProviderInterface> provider =
      o.mtls_enabled() ? std::make_shared<gx::FileWatcherCertificateProvider>(
                             o.tls_key_file, o.tls_cert_file, o.tls_client_ca_file, interval)
                       : std::make_shared<gx::FileWatcherCertificateProvider>(
                             o.tls_key_file, o.tls_cert_file, interval);
  gx::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (o.mtls_enabled()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return gx::TlsServerCredentials(tls);
}

BrokerServer::BrokerServer(ServerOptions options, const Clock* clock)
    : options_(std::move(options)), clock_(clock) {}

absl::StatusOr<std::unique_ptr<BrokerServer>> BrokerServer::Start(ServerOptions options,
                                                                  const Clock* clock) {
  if (absl::Status s = ValidateQueueConfig([&] {
        QueueConfig c = options.broker.queue_defaults;
        c.name = "defaults";
        return c;
      }());
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("queue defaults: ", s.message()));
  }
  absl::StatusOr<journal::FsyncPolicy> fsync = journal::ParseFsyncPolicy(options.fsync);
  if (!fsync.ok()) return fsync.status();
  absl::StatusOr<TlsSummary> tls = ValidateTlsOptions(options);
  if (!tls.ok()) return tls.status();
  if (absl::Status s = CheckListenExposure(options.listen, options.tls_enabled(),
                                           options.authorizer != nullptr, options.insecure);
      !s.ok()) {
    return s;
  }
  std::unique_ptr<BrokerServer> self(new BrokerServer(std::move(options), clock));
  const ServerOptions& o = self->options_;
  self->metrics_ = std::make_unique<BrokerMetrics>();
  if (!o.data_dir.empty()) {
    journal::FileJournalOptions jo;
    jo.dir = o.data_dir;
    jo.fsync = *fsync;
    jo.segment_bytes = o.segment_bytes;
    jo.max_record_bytes = std::max<size_t>(
        size_t{16} << 20, o.broker.max_payload_bytes + o.broker.max_result_bytes + (1 << 20));
    jo.listener = self->metrics_.get();
    jo.on_fatal = [](absl::Status status) {
      // Nothing more can be made durable: stop at once rather than answer
      // anything that would not survive (DESIGN: never retry an fsync).
      LogError("journal failed; stopping the broker", {{"error", status}});
      std::_Exit(70);
    };
    absl::StatusOr<std::unique_ptr<journal::FileJournal>> j =
        journal::FileJournal::Open(std::move(jo));
    if (!j.ok()) return j.status();
    self->journal_ = std::move(*j);
  }
  self->broker_ =
      std::make_unique<Broker>(o.broker, clock, self->metrics_.get(), self->journal_.get());
  if (self->journal_ != nullptr) {
    if (absl::Status s = self->broker_->Recover(); !s.ok()) return s;
  }
  if (!o.data_dir.empty()) self->metrics_->AttachDataDir(o.data_dir);
  self->metrics_->AttachBroker(self->broker_.get());
  self->service_ =
      std::make_unique<BrokerService>(self->broker_.get(), clock, self->metrics_.get(),
                                      o.authorizer.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen, MakeServerCredentials(o), &self->port_);
  for (grpc::Service* s : self->service_->services()) builder.RegisterService(s);

  // Message and metadata limits follow the broker's own limits: a batch at
  // its byte limit fits, anything much larger is refused by gRPC itself.
  const size_t max_message =
      std::max({o.broker.max_batch_bytes, o.broker.max_payload_bytes,
                // A group's payloads plus about 64 bytes of framing per member.
                o.broker.max_group_bytes + 64 * o.broker.max_group_size}) +
      (1 << 20);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<size_t>(max_message, INT32_MAX)));
  builder.SetMaxSendMessageSize(64 << 20);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             static_cast<int>(o.broker.max_header_bytes + (8 << 10)));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, o.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(o.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(o.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Ms(o.min_client_ping_interval));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, Ms(o.max_connection_idle));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Ms(o.max_connection_age));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                             Ms(o.max_connection_age_grace));
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, Ms(o.handshake_timeout));
  grpc::ResourceQuota quota("conveyord");
  quota.Resize(static_cast<size_t>(o.memory_quota_bytes));
  quota.SetMaxThreads(o.max_threads);
  builder.SetResourceQuota(quota);

  self->server_ = builder.BuildAndStart();
  if (self->server_ == nullptr || self->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen,
                                               " (address in use, or not a local address?)"));
  }
  self->server_->GetHealthCheckService()->SetServingStatus(true);

  if (!o.health_listen.empty()) {
    // Health only: no API service is registered here, and requests are tiny.
    grpc::ServerBuilder health;
    health.AddListeningPort(o.health_listen, grpc::InsecureServerCredentials(),
                            &self->health_port_);
    health.SetMaxReceiveMessageSize(4096);
    health.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 16);
    health.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, Ms(absl::Minutes(1)));
    health.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, Ms(o.handshake_timeout));
    self->health_server_ = health.BuildAndStart();
    if (self->health_server_ == nullptr || self->health_port_ == 0) {
      self->server_->Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", o.health_listen, " (--health-listen)"));
    }
    self->health_server_->GetHealthCheckService()->SetServingStatus(true);
  }

  if (!o.metrics_addr.empty()) {
    try {
      // prometheus-cpp reports bind failures by exception; it is caught here,
      // at the library's edge, and becomes a status.
      self->exposer_ = std::make_unique<prometheus::Exposer>(o.metrics_addr);
    } catch (const std::exception& e) {
      self->server_->Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", o.metrics_addr, ": ", e.what()));
    }
    self->exposer_->RegisterCollectable(self->metrics_->registry());
    self->exposer_->RegisterCollectable(self->metrics_->gauges());
    std::vector<int> ports = self->exposer_->GetListeningPorts();
    self->metrics_port_ = ports.empty() ? 0 : ports.front();
  }
  self->ticker_ = std::thread([raw = self.get()] { raw->TickLoop(); });
  if (self->journal_ != nullptr) {
    self->snapshotter_ = std::thread([raw = self.get()] { raw->SnapshotLoop(); });
  }
  if (o.tls_enabled()) {
    self->tls_checker_ =
        std::thread([raw = self.get(), tls = *std::move(tls)] { raw->TlsCheckLoop(tls); });
  }
  return self;
}

void BrokerServer::SnapshotLoop() {
  uint64_t at_last = journal_->stats().bytes_written;
  uint64_t last_snapshot = 0;
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
    if (stopping_) break;
    const uint64_t written = journal_->stats().bytes_written;
    const uint64_t threshold = options_.snapshot_bytes != 0
                                   ? options_.snapshot_bytes
                                   : std::max<uint64_t>(options_.snapshot_min_bytes,
                                                        2 * last_snapshot);
    if (written - at_last < threshold) continue;
    mu_.Unlock();
    const absl::Time start = absl::Now();
    size_t bytes = 0;
    absl::Status s = broker_->WriteSnapshot(&bytes);
    if (s.ok()) {
      LogInfo("snapshot written", {{"journal_bytes_since_last",
                                    static_cast<unsigned long long>(written - at_last)},
                                   {"snapshot_bytes", static_cast<unsigned long long>(bytes)},
                                   {"took", absl::FormatDuration(absl::Now() - start)}});
      at_last = written;
      last_snapshot = bytes;
    } else {
      LogWarning("snapshot failed; will retry", {{"error", s}});
    }
    // The snapshot was built in memory (one copy of the state) and is freed
    // now; glibc would keep those pages, so a broker holding N tasks would
    // stay at the peak of its last snapshot. Hand them back.
    malloc_trim(0);
    mu_.Lock();
  }
}

void BrokerServer::TlsCheckLoop(TlsSummary at_start) {
  // gRPC re-reads the files on its own thread and says little when they go
  // wrong: a missing or unreadable file keeps the last good certificate in
  // use, but a bad certificate or a key that does not match it fails every new
  // handshake. Check the files on the same interval and say which, naming the
  // file (docs/security.md, "TLS and mTLS").
  constexpr absl::Duration kExpiryWarning = absl::Hours(24 * 7);
  absl::StatusOr<TlsSummary> last = std::move(at_start);
  bool warned_expiry = false;
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (last.ok() && !warned_expiry && last->cert_not_after < absl::Now() + kExpiryWarning) {
      warned_expiry = true;
      LogWarning(last->cert_not_after < absl::Now() ? "the TLS certificate has expired"
                                                    : "the TLS certificate expires soon",
                 {{"cert", options_.tls_cert_file},
                  {"cert_not_after", absl::FormatTime(last->cert_not_after)}});
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tls_reload_interval);
    if (stopping_) break;
    mu_.Unlock();
    absl::StatusOr<TlsSummary> now = ValidateTlsOptions(options_);
    if (!now.ok() && (last.ok() || now.status() != last.status())) {
      LogError(
          "TLS files unusable: gRPC keeps the last certificate it read while a file is missing "
          "or unreadable, but fails every new handshake while one holds a bad certificate or "
          "a key that does not match",
          {{"error", now.status()}});
    } else if (now.ok() && (!last.ok() || !(*now == *last))) {
      warned_expiry = false;
      LogInfo("TLS files changed; new connections use them",
              {{"cert_subject", now->cert_subject},
               {"cert_sha256", now->cert_sha256},
               {"cert_not_after", absl::FormatTime(now->cert_not_after)},
               {"client_cas", absl::StrJoin(now->client_ca_subjects, "; ")}});
    }
    last = std::move(now);
    mu_.Lock();
  }
}

BrokerServer::~BrokerServer() {
  Shutdown();
  if (ticker_.joinable()) ticker_.join();
  if (snapshotter_.joinable()) snapshotter_.join();
  if (tls_checker_.joinable()) tls_checker_.join();
}

void BrokerServer::TickLoop() {
  // Timers fire within a few milliseconds of their time: the loop sleeps
  // until the next one is due, at most 10 ms (a timer pushed meanwhile for an
  // earlier time waits at most that long).
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.Unlock();
    broker_->Tick();
    absl::Duration sleep =
        std::clamp(broker_->NextTimer() - clock_->Now(), absl::Milliseconds(1),
                   absl::Milliseconds(10));
    mu_.Lock();
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), sleep);
  }
}

void BrokerServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (server_ == nullptr) {
    // Start failed before serving: nothing to drain, only the journal to let go.
    if (journal_ != nullptr) (void)journal_->Close();
    return;
  }
  LogInfo("draining", {{"grace", absl::FormatDuration(options_.drain_grace)}});
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_server_ != nullptr) health_server_->GetHealthCheckService()->SetServingStatus(false);
  broker_->BeginDrain();
  service_->BeginDrain();
  // Let running tasks report (heartbeat answers tell their workers to stop).
  const absl::Time deadline = absl::Now() + options_.drain_grace;
  while (broker_->running_count() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  uint64_t left = broker_->running_count();
  if (left > 0) {
    LogWarning("drain grace ran out with tasks still running",
               {{"running", static_cast<unsigned long long>(left)}});
  }
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (health_server_ != nullptr) {
    health_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
  if (snapshotter_.joinable()) snapshotter_.join();
  if (tls_checker_.joinable()) tls_checker_.join();
  if (journal_ != nullptr) {
    // Flushes and syncs what is queued; its callbacks still reach the broker.
    if (absl::Status s = journal_->Close(); !s.ok()) {
      LogError("closing the journal failed", {{"error", s}});
    }
  }
  exposer_.reset();
  LogInfo("drained", {{"running_left", static_cast<unsigned long long>(left)}});
}

}  // namespace conveyor::server
