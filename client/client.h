// The Conveyor C++ client library: one Client over the broker's gRPC services
// (TaskService, QueueService, WorkerService, ScheduleService) plus
// grpc.health.v1, and Map (one task type over many items, as a group; types
// in client/map.h).
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
//     key a random one (128 bits, 32 hex digits), and SubmitGroup gives the
//     group one when it has none (its members carry none), then retry on
//     UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED (a broker shutting down
//     cancels calls in flight) up to `submit_attempts` attempts in all, with
//     jittered exponential backoff, resending the same keys: the broker
//     returns the original task (or group) for a key it has seen, so a retry
//     never enqueues twice. (With FULL_POLICY_WAIT a full queue answers
//     DEADLINE_EXCEEDED, so such a submit may wait up to `submit_attempts`
//     timeouts in all.)
//   - Reads (GetTask, ListTasks, GetGroup, GetChain, GetQueue, ListQueues,
//     ListDeadLetters, GetSchedule, ListSchedules, Health) are retried on
//     UNAVAILABLE only, up to `read_attempts`.
//   - Everything else (CancelTask, CancelGroup, CancelChain, queue changes,
//     schedule changes (CreateSchedule, PauseSchedule, ResumeSchedule,
//     DeleteSchedule), Lease, Heartbeat, Complete, Fail, Release, WatchTask,
//     WatchGroup) is sent once: repeating it is not safe in general, so the
//     caller decides.
//   - FollowGroup and Map are built to outlast a broker restart: they resume
//     a broken WatchGroup stream (re-watch, or poll GetGroup) with backoff
//     until their deadline; see each.
//
// Thread-safety: a Client is thread-safe; one instance may be shared by any
// number of threads (gRPC stubs and channels are thread-safe, and the random
// source is guarded by a mutex).
#ifndef CONVEYOR_CLIENT_CLIENT_H_
#define CONVEYOR_CLIENT_CLIENT_H_

#include <cstdint>
#include <deque>
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
#include "client/map.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace conveyor::client {

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

class SubmitStream;

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
  // as a whole only for a transport error or an oversized batch. With
  // `ids_only`, each accepted item's task carries only its id (cheaper for
  // both sides when the caller keeps nothing else).
  absl::StatusOr<v1::SubmitBatchResponse> SubmitBatch(std::vector<v1::TaskSpec> specs,
                                                      bool ids_only = false);
  // A SubmitStream for one producer thread: each task acknowledged on its
  // own, one call for all of them. `window` (1 to 512) bounds the tasks sent
  // and not yet answered. Opens lazily; see SubmitStream.
  std::unique_ptr<SubmitStream> OpenSubmitStream(size_t window = 64);
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

  // ─── TaskService: groups and chains ───

  // Submits every member of `request` (all or none) and its optional
  // callback. Attaches a group idempotency key when `request` has none and
  // retries as Submit does, so a retry never creates a second group; a
  // resubmit with a known key returns the original group with
  // `deduplicated` set. INVALID_ARGUMENT names the first bad member;
  // RESOURCE_EXHAUSTED the first full queue (never waits for room).
  absl::StatusOr<v1::SubmitGroupResponse> SubmitGroup(v1::SubmitGroupRequest request);
  // Counters, and with `include_members` one page of members (and with
  // `include_results` their results and errors). NOT_FOUND: unknown group,
  // or dropped after the workflow TTL.
  absl::StatusOr<v1::Group> GetGroup(const v1::GetGroupRequest& request);
  // The group with every member (and with `include_results` their results
  // and errors), in submission order: GetGroup pages of `page_size` members
  // (1-10,000), halved when a page is larger than the channel accepts, each
  // page a read retried as GetGroup is. The counters are those of the last
  // page (a running group may move on between pages).
  absl::StatusOr<v1::Group> GetGroupWithMembers(absl::string_view id, bool include_results,
                                                uint32_t page_size = 10000);
  // Follows a group as WatchTask follows a task: `on_change` sees its
  // counters now and on every change (coalesced), until it is DONE or
  // CANCELED, the stream fails, or `on_change` returns false. Bounded by
  // `deadline` only. Returns the last Group received (not necessarily
  // ended: the broker may close the stream when it drains); the stream's
  // error; or UNKNOWN if it closed before sending anything.
  absl::StatusOr<v1::Group> WatchGroup(absl::string_view id,
                                       absl::FunctionRef<bool(const v1::Group&)> on_change,
                                       absl::Duration deadline = absl::InfiniteDuration());
  // WatchGroup that survives a broken stream (UNAVAILABLE, a broker restart,
  // a stream closed while the group runs): backs off, polls GetGroup, and
  // watches again, until the group is DONE or CANCELED or `deadline`
  // passes (then DEADLINE_EXCEEDED, naming the group and its progress).
  // `on_change` sees every Group received, from the stream or a poll.
  // Errors that a retry cannot fix (NOT_FOUND, PERMISSION_DENIED,
  // INVALID_ARGUMENT, UNIMPLEMENTED, ...) are returned at once.
  absl::StatusOr<v1::Group> FollowGroup(absl::string_view id,
                                        absl::FunctionRef<void(const v1::Group&)> on_change,
                                        absl::Duration deadline = absl::InfiniteDuration());
  // Cancels every member that has not ended; no callback is submitted.
  // FAILED_PRECONDITION: the group is already DONE.
  absl::StatusOr<v1::Group> CancelGroup(absl::string_view id);
  // A chain by its id (its first stage's task id). NOT_FOUND: unknown.
  absl::StatusOr<v1::Chain> GetChain(absl::string_view id);
  // Cancels the chain's current stage; no later stage is submitted.
  absl::StatusOr<v1::Chain> CancelChain(absl::string_view id);

  // Map: submits one task per item (MapMemberSpec) as one group (SubmitGroup,
  // keyed as above), follows it (FollowGroup, reporting through
  // `options.on_progress`), then reads every member's outcome with
  // GetGroup(include_members, include_results) in pages, and returns one
  // MapItem per item in input order, whatever order the tasks ended in.
  // Items that fail do not fail the map: see MapItem::state and
  // MapResult::failures. A broken stream or a broker restart is outlasted
  // (re-watch, re-read) until `options.deadline`; then DEADLINE_EXCEEDED.
  // INVALID_ARGUMENT: no queue or type, a page size outside 1-10,000, or the
  // broker's verdict on the group; FAILED_PRECONDITION: the idempotency key
  // matched a group of another size. No items: an empty result, no call.
  absl::StatusOr<MapResult> Map(const std::vector<std::string>& items, const MapOptions& options);

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

  // ─── ScheduleService ───

  // ALREADY_EXISTS: the name is taken; INVALID_ARGUMENT names a bad cron
  // field, time zone or template field.
  absl::StatusOr<v1::Schedule> CreateSchedule(const v1::Schedule& schedule);
  // NOT_FOUND: no schedule of that name.
  absl::StatusOr<v1::Schedule> GetSchedule(absl::string_view name);
  // Every schedule, by name.
  absl::StatusOr<v1::ListSchedulesResponse> ListSchedules();
  // Ticks that pass while paused are skipped.
  absl::StatusOr<v1::Schedule> PauseSchedule(absl::string_view name);
  absl::StatusOr<v1::Schedule> ResumeSchedule(absl::string_view name);
  // Tasks it already submitted are kept.
  absl::Status DeleteSchedule(absl::string_view name);

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
  // Runs `call` (one attempt, given its deadline: `options_.timeout` from
  // now, but never past `cap`) up to `attempts` times while it fails with a
  // code `retryable` accepts, sleeping between tries.
  absl::Status Retry(int attempts, bool (*retryable)(absl::StatusCode),
                     absl::FunctionRef<absl::Status(absl::Time)> call,
                     absl::Time cap = absl::InfiniteFuture());
  // Unary call `rpc(context, response)` with a fresh context and deadline per
  // attempt, retried as Retry() does.
  template <typename Resp, typename Rpc>
  absl::StatusOr<Resp> Unary(int attempts, bool (*retryable)(absl::StatusCode), Rpc rpc,
                             absl::Time cap = absl::InfiniteFuture());
  // A server stream `start(context)` read to its end: `on_message` sees each
  // message until it returns false. `what` names the stream in errors.
  template <typename Msg, typename Start>
  absl::StatusOr<Msg> ReadStream(Start start, absl::FunctionRef<bool(const Msg&)> on_message,
                                 absl::Time deadline, absl::string_view what);
  // SubmitGroup and GetGroup whose attempts end by `cap` (Map's deadline).
  absl::StatusOr<v1::SubmitGroupResponse> SubmitGroupBefore(v1::SubmitGroupRequest request,
                                                            absl::Time cap);
  absl::StatusOr<v1::Group> GetGroupBefore(const v1::GetGroupRequest& request, absl::Time cap);
  // FollowGroup until an absolute deadline.
  absl::StatusOr<v1::Group> FollowGroupUntil(absl::string_view id,
                                             absl::FunctionRef<void(const v1::Group&)> on_change,
                                             absl::Time deadline);
  // GetGroupWithMembers with each page's attempts ending by `deadline`;
  // `persist` (Map): also retries failures a later call may not repeat
  // (UNAVAILABLE after the read attempts, a broker restarting) with backoff
  // until `deadline`.
  absl::StatusOr<v1::Group> ReadAllMembers(absl::string_view id, bool include_results,
                                           uint32_t page_size, absl::Time deadline, bool persist);
  friend class SubmitStream;
  absl::Duration BackoffFor(int failures);
  void AttachKey(v1::TaskSpec* spec);
  std::string NewKey();

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::QueueService::Stub> queues_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::unique_ptr<v1::ScheduleService::Stub> schedules_;
  std::unique_ptr<grpc::GenericStub> generic_;

  absl::Mutex gen_mu_;
  absl::BitGen gen_ ABSL_GUARDED_BY(gen_mu_);
};

// Tasks submitted on one TaskService.SubmitStream call, each acknowledged on
// its own, in send order: a producer that needs a per-task answer pays one
// message each way instead of a call per task (Client::OpenSubmitStream).
//
//   std::unique_ptr<SubmitStream> stream = client.OpenSubmitStream();
//   absl::StatusOr<v1::SubmitResponse> r = stream->Submit(spec);  // one at a time
//   // or send ahead, up to the window, and read the answers in order:
//   for (auto& spec : specs) RETURN_IF_ERROR(stream->Send(spec));
//   while (stream->unanswered() > 0) absl::StatusOr<v1::SubmitResponse> r = stream->Next();
//
// Every task gets an idempotency key when it has none. When the call breaks
// (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED: a broker restarting or
// draining, a lost connection), a new call is opened after a backoff and the
// unanswered tasks are sent again with their keys, so none is lost or
// enqueued twice; after `submit_attempts` breaks in a row with no answer in
// between, the stream is broken: the call that found it returns the error,
// every later one FAILED_PRECONDITION, and TakeUnanswered() hands the tasks
// back. Each call lasts at most `timeout` (a stalled broker is noticed); the
// stream moves to a fresh call before that when nothing is unanswered. Not
// thread-safe: one producer thread per stream. The Client must outlive it.
class SubmitStream {
 public:
  ~SubmitStream();  // cancels an open call: answers not read are lost, tasks stay
  SubmitStream(const SubmitStream&) = delete;
  SubmitStream& operator=(const SubmitStream&) = delete;

  // Sends `spec`; returns once it is written, first reading answers (kept
  // for Next) while `window` tasks are in flight. On an error the stream is
  // broken and `spec` is among TakeUnanswered() (it may have landed: its key
  // tells).
  absl::Status Send(v1::TaskSpec spec);
  // The answer to the oldest unanswered task: the task as stored (without its
  // payload), or why it was refused (the broker's code and message, as
  // Client::Submit returns them; the stream carries on). FAILED_PRECONDITION
  // when nothing is unanswered.
  absl::StatusOr<v1::SubmitResponse> Next();
  // Sends `spec` and waits for its answer (as Next would give it); answers
  // to tasks sent before it stay for Next.
  absl::StatusOr<v1::SubmitResponse> Submit(v1::TaskSpec spec);
  // Sent (or to be resent) and not yet returned by Next.
  size_t unanswered() const { return pending_.size() + answers_.size(); }
  // True once the stream gave up (see above): an error from Next is then the
  // stream's, not one task's refusal.
  bool broken() const { return !broken_.ok(); }
  // After a broken stream: the tasks not answered, in send order, with their
  // keys (resending them elsewhere cannot enqueue one twice on this broker).
  std::vector<v1::TaskSpec> TakeUnanswered();

 private:
  friend class Client;
  SubmitStream(Client* client, size_t window);

  // Opens a call and writes every pending task on it, again after a break.
  absl::Status Open();
  // Reads until one more answer is in answers_ (or nothing is pending),
  // reopening after breaks.
  absl::Status ReadOne();
  // Takes the answer to pending_.front().
  void Accept(v1::SubmitBatchResponse::Item& item);
  // Ends the open call: keeps the answers it still had, then, if tasks are
  // left unanswered, counts a break and backs off (OK: open again) or marks
  // the stream broken (the error).
  absl::Status EndCall();
  absl::Status Broken() const;

  struct Call;
  Client* const client_;
  const size_t window_;
  std::unique_ptr<Call> call_;
  std::deque<v1::SubmitRequest> pending_;  // written on call_, not answered
  std::deque<absl::StatusOr<v1::SubmitResponse>> answers_;  // read, not returned
  int breaks_ = 0;  // in a row, without an answer
  absl::Status broken_;
};

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_CLIENT_H_
