#include "server/server.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "prometheus/exposer.h"
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
  std::unique_ptr<BrokerServer> self(new BrokerServer(std::move(options), clock));
  const ServerOptions& o = self->options_;
  self->metrics_ = std::make_unique<BrokerMetrics>();
  self->broker_ = std::make_unique<Broker>(o.broker, clock, self->metrics_.get());
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
  return self;
}

BrokerServer::~BrokerServer() {
  Shutdown();
  if (ticker_.joinable()) ticker_.join();
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
  exposer_.reset();
  LogInfo("drained", {{"running_left", static_cast<unsigned long long>(left)}});
}

}  // namespace conveyor::server
