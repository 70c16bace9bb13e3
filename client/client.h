// The Conveyor C++ client library: one Client over the broker's three gRPC
// services (TaskService, QueueService, WorkerService) plus grpc.health.v1.
//
//   conveyor::client::ClientOptions options;
//   options.address = "127.0.0.1:7400";
//   conveyor::client::Client client(options);
//   conveyor::v1::TaskSpec spec;
//   spec.set_queue("emails");
//   spec.set_type("send");
//   absl::StatusOr<conveyor::v1::SubmitResponse> r = client.Submit(spec);
//
// Every call carries a deadline: `ClientOptions::timeout` unless the method
// says otherwise. Results are absl::Status / absl::StatusOr with the broker's
// status code unchanged (see the codes in proto/conveyor/v1/conveyor.proto).
//
// Retries:
//   - Submit and SubmitBatch first give every TaskSpec without an idempotency
//     key a random one (128 bits, 32 hex digits), then retry on UNAVAILABLE,
//     DEADLINE_EXCEEDED and CANCELLED (a broker shutting down cancels calls
//     in flight) up to `submit_attempts` attempts in all, with
//     jittered exponential backoff, resending the same keys: the broker
//     returns the original task for a key it has seen, so a retry never
//     enqueues twice. (With FULL_POLICY_WAIT a full queue answers
//     DEADLINE_EXCEEDED, so such a submit may wait up to `submit_attempts`
//     timeouts in all.)
//   - Reads (GetTask, ListTasks, GetQueue, ListQueues, ListDeadLetters,
//     Health) are retried on UNAVAILABLE only, up to `read_attempts`.
//   - Everything else (CancelTask, queue changes, Lease, Heartbeat, Complete,
//     Fail, Release, WatchTask) is sent once: repeating it is not safe in
//     general, so the caller decides.
//
// Thread-safety: a Client is thread-safe; one instance may be shared by any
// number of threads (gRPC stubs and channels are thread-safe, and the random
// source is guarded by a mutex).
#ifndef CONVEYOR_CLIENT_CLIENT_H_
#define CONVEYOR_CLIENT_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace conveyor::client {

namespace v1 = ::conveyor::v1;

struct ClientOptions {
  // Broker address, host:port.
  std::string address = "127.0.0.1:7400";
  // Deadline of each attempt of each call (Lease adds its long-poll wait).
  absl::Duration timeout = absl::Seconds(10);
  // Extra gRPC channel arguments (keepalive, message sizes, ...).
  grpc::ChannelArguments channel_args;
  // Null: plaintext (grpc::InsecureChannelCredentials()). See
  // common/security.h ChannelCredentialsFor for TLS.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Bearer token sent with every call (`authorization: Bearer ...`); empty:
  // none. The broker's --auth-tokens file gives it its roles.
  std::string token;
  // Attempts in all for Submit / SubmitBatch (at least 1).
  int submit_attempts = 3;
  // Attempts in all for reads that failed with UNAVAILABLE (at least 1).
  int read_attempts = 3;
  // Backoff before the second attempt; doubles per attempt up to max_backoff,
  // each delay spread by ±20%.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(2);
};

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class ServingStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3,
};

// "SERVING", "NOT_SERVING", ...
absl::string_view ServingStatusName(ServingStatus status);

// A fresh random idempotency key: 32 lowercase hex digits (128 bits).
std::string NewIdempotencyKey(absl::BitGenRef gen);

class Client {
 public:
  // Connects lazily to `options.address`; constructing never fails.
  explicit Client(ClientOptions options);
  // Uses an existing channel (tests, shared channels); `options.address`,
  // `channel_args` and `credentials` are ignored.
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // ─── TaskService ───

  // Enqueues `spec`. Attaches an idempotency key when `spec` has none and
  // retries as described above. RESOURCE_EXHAUSTED: the queue is full;
  // INVALID_ARGUMENT: a bad field (the message names it). A resubmit with a
  // known key returns the original task with `deduplicated` set.
  absl::StatusOr<v1::SubmitResponse> Submit(v1::TaskSpec spec);
  // Enqueues many tasks; each item succeeds or fails on its own (see
  // SubmitBatchResponse.Item). Keys and retries as for Submit. The call fails
  // as a whole only for a transport error or an oversized batch.
  absl::StatusOr<v1::SubmitBatchResponse> SubmitBatch(std::vector<v1::TaskSpec> specs);
  // NOT_FOUND: unknown task, or its result was dropped; INVALID_ARGUMENT: a
  // malformed id.
  absl::StatusOr<v1::Task> GetTask(absl::string_view id);
  // Follows a task: calls `on_change` with its current state, then with
  // every change, until it ends, the stream fails, or `on_change` returns
  // false. The whole watch is bounded by `deadline` (default: none), not by
  // `options().timeout`. Returns the last Task received; an error if the
  // stream failed (DEADLINE_EXCEEDED when `deadline` passed), or UNKNOWN if
  // the broker closed the stream before sending anything.
  absl::StatusOr<v1::Task> WatchTask(absl::string_view id,
                                     absl::FunctionRef<bool(const v1::Task&)> on_change,
                                     absl::Duration deadline = absl::InfiniteDuration());
  // FAILED_PRECONDITION: the task has already ended.
  absl::StatusOr<v1::Task> CancelTask(absl::string_view id);
  // One page; follow `next_page_token` for more.
  absl::StatusOr<v1::ListTasksResponse> ListTasks(const v1::ListTasksRequest& request);

  // ─── QueueService ───

  // ALREADY_EXISTS: a queue of that name exists.
  absl::StatusOr<v1::Queue> CreateQueue(const v1::CreateQueueRequest& request);
  // Changes only the fields set in `request`. NOT_FOUND: unknown queue.
  absl::StatusOr<v1::Queue> UpdateQueue(const v1::UpdateQueueRequest& request);
  absl::StatusOr<v1::Queue> GetQueue(absl::string_view name);
  absl::StatusOr<v1::ListQueuesResponse> ListQueues();
  absl::StatusOr<v1::Queue> PauseQueue(absl::string_view name);
  absl::StatusOr<v1::Queue> ResumeQueue(absl::string_view name);
  // Removes every SCHEDULED and READY task of the queue.
  absl::StatusOr<v1::PurgeQueueResponse> PurgeQueue(absl::string_view name);
  absl::StatusOr<v1::ListDeadLettersResponse> ListDeadLetters(
      const v1::ListDeadLettersRequest& request);
  // `ids` empty: every dead letter of `queue`.
  absl::StatusOr<v1::RequeueDeadLettersResponse> RequeueDeadLetters(
      absl::string_view queue, const std::vector<std::string>& ids);
  // `ids` empty: every dead letter of `queue`.
  absl::StatusOr<v1::PurgeDeadLettersResponse> PurgeDeadLetters(
      absl::string_view queue, const std::vector<std::string>& ids);

  // ─── WorkerService ───

  // Long-polls up to `request.wait()`; the deadline is that wait plus
  // `options().timeout`. An empty response means the wait ran out.
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  // Per-item outcomes are in the response (stale token: FAILED_PRECONDITION).
  absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& request);
  absl::StatusOr<v1::FailResponse> Fail(const v1::FailRequest& request);
  absl::StatusOr<v1::ReleaseResponse> Release(const v1::ReleaseRequest& request);

  // ─── grpc.health.v1 ───

  // The broker's serving status for `service` ("" = the whole server).
  // UNAVAILABLE when the broker cannot be reached; NOT_FOUND for a service
  // the broker does not know.
  absl::StatusOr<ServingStatus> Health(absl::string_view service = "");

 private:
  // Runs `call` (one attempt, given its deadline) up to `attempts` times
  // while it fails with a code `retryable` accepts, sleeping between tries.
  absl::Status Retry(int attempts, bool (*retryable)(absl::StatusCode),
                     absl::FunctionRef<absl::Status(absl::Time)> call);
  // Unary call `rpc(context, response)` with a fresh context and deadline per
  // attempt, retried as Retry() does.
  template <typename Resp, typename Rpc>
  absl::StatusOr<Resp> Unary(int attempts, bool (*retryable)(absl::StatusCode), Rpc rpc);
  absl::Duration BackoffFor(int failures);
  void AttachKey(v1::TaskSpec* spec);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::QueueService::Stub> queues_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::unique_ptr<grpc::GenericStub> generic_;

  absl::Mutex gen_mu_;
  absl::BitGen gen_ ABSL_GUARDED_BY(gen_mu_);
};

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_CLIENT_H_
