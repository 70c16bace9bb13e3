// BrokerRpc: the unary WorkerService calls a worker makes to one broker
// (Heartbeat, Complete, Fail, Release), behind an interface so that the
// heartbeater and the reporter are tested with fakes, without a network.
// ClientBrokerRpc sends them through conveyor::client::Client.
//
// Thread-safe (implementations must be).
#ifndef CONVEYOR_WORKER_BROKER_RPC_H_
#define CONVEYOR_WORKER_BROKER_RPC_H_

#include "absl/status/statusor.h"
#include "client/client.h"
#include "conveyor/v1/conveyor.pb.h"

namespace conveyor::worker {

namespace v1 = ::conveyor::v1;

class BrokerRpc {
 public:
  virtual ~BrokerRpc() = default;
  // A non-OK status means the call as a whole failed (unreachable broker,
  // deadline); per-item outcomes are in the response.
  virtual absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r) = 0;
  virtual absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& r) = 0;
  virtual absl::StatusOr<v1::FailResponse> Fail(const v1::FailRequest& r) = 0;
  virtual absl::StatusOr<v1::ReleaseResponse> Release(const v1::ReleaseRequest& r) = 0;
};

class ClientBrokerRpc final : public BrokerRpc {
 public:
  // `client` must outlive this object.
  explicit ClientBrokerRpc(client::Client* client) : client_(client) {}
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r) override {
    return client_->Heartbeat(r);
  }
  absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& r) override {
    return client_->Complete(r);
  }
  absl::StatusOr<v1::FailResponse> Fail(const v1::FailRequest& r) override {
    return client_->Fail(r);
  }
  absl::StatusOr<v1::ReleaseResponse> Release(const v1::ReleaseRequest& r) override {
    return client_->Release(r);
  }

 private:
  client::Client* const client_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_BROKER_RPC_H_
