#include "server/server.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "prometheus/exposer.h"
#include "server/journal/file_journal.h"
#include "server/metrics.h"
#include "server/service.h"

namespace conveyor::server {
namespace {

int Ms(absl::Duration d) {
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
}

}  // namespace

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
  self->metrics_->AttachBroker(self->broker_.get());
  self->service_ =
      std::make_unique<BrokerService>(self->broker_.get(), clock, self->metrics_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen, grpc::InsecureServerCredentials(), &self->port_);
  for (grpc::Service* s : self->service_->services()) builder.RegisterService(s);

  // Message and metadata limits follow the broker's own limits: a batch at
  // its byte limit fits, anything much larger is refused by gRPC itself.
  const size_t max_message =
      std::max(o.broker.max_batch_bytes, o.broker.max_payload_bytes) + (1 << 20);
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
                                   : std::max<uint64_t>(uint64_t{4} << 20, 2 * last_snapshot);
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
    mu_.Lock();
  }
}

BrokerServer::~BrokerServer() {
  Shutdown();
  if (ticker_.joinable()) ticker_.join();
  if (snapshotter_.joinable()) snapshotter_.join();
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
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
  if (snapshotter_.joinable()) snapshotter_.join();
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
