// The broker's service layer: the only place that speaks proto for the broker.
//
// Maps each RPC of conveyor.v1 TaskService, QueueService and WorkerService to
// one Broker call and back, converting absl::Status to grpc::Status once, at
// the edge. Uses gRPC's callback API: reactions never block. Calls that may
// wait (Lease long-polls, Submit to a full WAIT queue, WatchTask) park a
// reactor that the broker finishes through a callback; a client cancel
// removes the parked call from the broker.
//
// With an Authorizer (--auth-tokens), every RPC of the three services first
// checks the caller's bearer token or client certificate against the role it
// needs (server/auth.h) and ends UNAUTHENTICATED or PERMISSION_DENIED before
// touching the broker. Health and reflection are not ours and stay open.
//
// Thread-safe.
#ifndef CONVEYOR_SERVER_SERVICE_H_
#define CONVEYOR_SERVER_SERVICE_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "server/broker.h"

namespace conveyor::server {

class Authorizer;
class RpcMetrics;
template <typename Kind>
class StreamWatch;
class SubmitStreamReactor;

// A long-lived stream (WatchTask, WatchGroup, SubmitStream), as BrokerService
// ends them on drain.
class DrainableStream {
 public:
  virtual ~DrainableStream() = default;
  // Ends the stream with UNAVAILABLE, after whatever its kind still owes the
  // client (a SubmitStream answers the requests it has read).
  virtual void Drain() = 0;
  virtual void Ref() = 0;
  virtual void Unref() = 0;
};

// Proto <-> core conversions (exposed for tests). A template (chain stages,
// group callbacks, schedule tasks) keeps `delay` relative (TaskSpec::delay)
// instead of turning it into a not-before time; `then` stages are always
// templates. Errors name the field, with stages as "then[i].field".
absl::StatusOr<TaskSpec> SpecFromProto(const conveyor::v1::TaskSpec& proto,
                                       absl::Time now, bool is_template = false);
// The same for a proto the caller is done with: its payload and idempotency
// key are moved out instead of copied (the submit paths, whose requests are
// read once).
absl::StatusOr<TaskSpec> SpecFromProto(conveyor::v1::TaskSpec&& proto, absl::Time now);
void TaskToProto(const TaskInfo& info, conveyor::v1::Task* out);
void GroupToProto(const GroupInfo& info, conveyor::v1::Group* out);
void ChainToProto(const ChainInfo& info, conveyor::v1::Chain* out);
absl::StatusOr<ScheduleSpec> ScheduleFromProto(const conveyor::v1::Schedule& proto);
void ScheduleToProto(const ScheduleInfo& info, conveyor::v1::Schedule* out);
// `base` supplies the values of unset fields.
absl::StatusOr<QueueConfig> QueueConfigFromProto(const conveyor::v1::QueueConfig& proto,
                                                 const QueueConfig& base);
void QueueToProto(const QueueInfo& info, conveyor::v1::Queue* out);

class BrokerService {
 public:
  // `broker` and `clock` must outlive this. `metrics` may be null.
  // `authorizer` (must outlive this) checks every call; null: auth off, every
  // call allowed.
  BrokerService(Broker* broker, const Clock* clock, RpcMetrics* metrics,
                const Authorizer* authorizer = nullptr);
  ~BrokerService();

  // The services to register with a grpc::ServerBuilder.
  std::vector<grpc::Service*> services();

  // Ends every open stream (watches, submit streams) with UNAVAILABLE and
  // refuses new ones. Call after Broker::BeginDrain, before
  // grpc::Server::Shutdown.
  void BeginDrain();

  // Streams open now (for tests).
  size_t open_streams() const;

 private:
  class TaskServiceImpl;
  class QueueServiceImpl;
  class WorkerServiceImpl;
  class ScheduleServiceImpl;
  template <typename Kind>
  friend class StreamWatch;
  friend class SubmitStreamReactor;

  // OK when auth is off or the caller may call service/method; else
  // UNAUTHENTICATED or PERMISSION_DENIED (Authorizer::Check). In-memory only.
  absl::Status Authorize(grpc::CallbackServerContext* ctx, const char* service,
                         const char* method) const;

  // False when draining: the stream must end at once.
  bool AddStream(DrainableStream* stream);
  void RemoveStream(DrainableStream* stream);

  Broker* const broker_;
  const Clock* const clock_;
  RpcMetrics* const metrics_;
  const Authorizer* const authorizer_;
  std::unique_ptr<TaskServiceImpl> task_service_;
  std::unique_ptr<QueueServiceImpl> queue_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<ScheduleServiceImpl> schedule_service_;

  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<DrainableStream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_SERVICE_H_
