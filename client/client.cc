#include "client/client.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_util.h"
#include "common/security.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "grpcpp/support/stub_options.h"

namespace conveyor::client {
namespace {

constexpr char kHealthCheckMethod[] = "/grpc.health.v1.Health/Check";

bool IsUnavailable(absl::StatusCode code) { return code == absl::StatusCode::kUnavailable; }

// Submits carry idempotency keys, so a timed-out attempt that did land is
// answered with the original task on the next attempt. CANCELLED comes only
// from the server side here (a broker shutting down cancels calls in flight):
// the submit's fate is unknown, and resending with the same key is safe.
bool IsSubmitRetryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kCancelled;
}

bool NeverRetry(absl::StatusCode) { return false; }

void SetDeadline(grpc::ClientContext* context, absl::Time deadline) {
  if (deadline != absl::InfiniteFuture()) context->set_deadline(ToChrono(deadline));
}

// grpc.health.v1.HealthCheckRequest is `string service = 1;`: written by
// hand because the health proto is not generated in this build.
std::string EncodeHealthCheckRequest(absl::string_view service) {
  std::string out;
  if (service.empty()) return out;
  out.push_back('\x0a');  // field 1, wire type 2 (length-delimited)
  uint64_t len = service.size();
  while (len >= 0x80) {
    out.push_back(static_cast<char>((len & 0x7f) | 0x80));
    len >>= 7;
  }
  out.push_back(static_cast<char>(len));
  out.append(service.data(), service.size());
  return out;
}

bool ReadVarint(absl::string_view* in, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const auto byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// grpc.health.v1.HealthCheckResponse is `ServingStatus status = 1;`. Unknown
// fields are skipped, as any protobuf parser would.
absl::StatusOr<ServingStatus> DecodeHealthCheckResponse(absl::string_view in) {
  uint64_t status = 0;
  while (!in.empty()) {
    uint64_t tag;
    if (!ReadVarint(&in, &tag)) break;
    const uint64_t field = tag >> 3;
    const uint64_t wire_type = tag & 7;
    uint64_t value;
    switch (wire_type) {
      case 0:
        if (!ReadVarint(&in, &value)) return absl::InternalError("health: bad varint");
        if (field == 1) status = value;
        continue;
      case 1:
        if (in.size() < 8) return absl::InternalError("health: truncated field");
        in.remove_prefix(8);
        continue;
      case 2:
        if (!ReadVarint(&in, &value) || in.size() < value) {
          return absl::InternalError("health: truncated field");
        }
        in.remove_prefix(value);
        continue;
      case 5:
        if (in.size() < 4) return absl::InternalError("health: truncated field");
        in.remove_prefix(4);
        continue;
      default:
        return absl::InternalError(absl::StrCat("health: unexpected wire type ", wire_type));
    }
  }
  if (status > 3) return ServingStatus::kUnknown;
  return static_cast<ServingStatus>(status);
}

}  // namespace

absl::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case ServingStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

std::string NewIdempotencyKey(absl::BitGenRef gen) {
  // 32 lowercase hex digits, written directly (StrFormat's parsing showed in
  // the producer's profile).
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string key(32, '0');
  for (int half = 0; half < 2; ++half) {
    uint64_t v = absl::Uniform<uint64_t>(gen);
    for (int i = 15; i >= 0; --i, v >>= 4) key[static_cast<size_t>(half * 16 + i)] = kDigits[v & 0xf];
  }
  return key;
}

Client::Client(ClientOptions options)
    : Client(grpc::CreateCustomChannel(
                 options.address,
                 options.credentials ? options.credentials : grpc::InsecureChannelCredentials(),
                 options.channel_args),
             options) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      tasks_(v1::TaskService::NewStub(channel_)),
      queues_(v1::QueueService::NewStub(channel_)),
      workers_(v1::WorkerService::NewStub(channel_)),
      schedules_(v1::ScheduleService::NewStub(channel_)),
      generic_(std::make_unique<grpc::GenericStub>(channel_)) {}

absl::Duration Client::BackoffFor(int failures) {
  absl::Duration delay = options_.initial_backoff;
  for (int i = 1; i < failures && delay < options_.max_backoff; ++i) delay *= 2;
  delay = std::min(delay, options_.max_backoff);
  absl::MutexLock lock(&gen_mu_);
  return delay * absl::Uniform(gen_, 0.8, 1.2);
}

absl::Status Client::Retry(int attempts, bool (*retryable)(absl::StatusCode),
                           absl::FunctionRef<absl::Status(absl::Time)> call, absl::Time cap) {
  attempts = std::max(attempts, 1);
  absl::Status status;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) {
      const absl::Duration backoff = BackoffFor(attempt - 1);
      // No attempt that could not start before the cap.
      if (absl::Now() + backoff >= cap) break;
      absl::SleepFor(backoff);
    }
    status = call(std::min(absl::Now() + options_.timeout, cap));
    if (status.ok() || !retryable(status.code())) break;
  }
  return status;
}

template <typename Resp, typename Rpc>
absl::StatusOr<Resp> Client::Unary(int attempts, bool (*retryable)(absl::StatusCode), Rpc rpc,
                                   absl::Time cap) {
  Resp response;
  absl::Status status = Retry(
      attempts, retryable,
      [&](absl::Time deadline) {
        grpc::ClientContext context;
        SetDeadline(&context, deadline);
        AttachToken(&context, options_.token);
        response.Clear();
        return FromGrpcStatus(rpc(&context, &response));
      },
      cap);
  if (!status.ok()) return status;
  return response;
}

template <typename Msg, typename Start>
absl::StatusOr<Msg> Client::ReadStream(Start start,
                                       absl::FunctionRef<bool(const Msg&)> on_message,
                                       absl::Time deadline, absl::string_view what) {
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  AttachToken(&context, options_.token);
  std::unique_ptr<grpc::ClientReader<Msg>> reader = start(&context);
  Msg message;
  Msg last;
  bool received = false;
  bool stopped = false;
  while (reader->Read(&message)) {
    received = true;
    last = message;
    if (!on_message(last)) {
      stopped = true;
      context.TryCancel();
      while (reader->Read(&message)) {
      }
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (stopped) return last;
  if (!status.ok()) return FromGrpcStatus(status);
  if (!received) {
    return absl::UnknownError(
        absl::StrCat(what, ": the broker closed the stream without sending anything"));
  }
  return last;
}

std::string Client::NewKey() {
  absl::MutexLock lock(&gen_mu_);
  return NewIdempotencyKey(gen_);
}

void Client::AttachKey(v1::TaskSpec* spec) {
  if (spec->idempotency_key().empty()) spec->set_idempotency_key(NewKey());
}

absl::StatusOr<v1::SubmitResponse> Client::Submit(v1::TaskSpec spec) {
  AttachKey(&spec);
  v1::SubmitRequest request;
  *request.mutable_task() = std::move(spec);
  return Unary<v1::SubmitResponse>(options_.submit_attempts, IsSubmitRetryable,
                                   [&](grpc::ClientContext* context, v1::SubmitResponse* response) {
                                     return tasks_->Submit(context, request, response);
                                   });
}

absl::StatusOr<v1::SubmitBatchResponse> Client::SubmitBatch(std::vector<v1::TaskSpec> specs,
                                                            bool ids_only) {
  v1::SubmitBatchRequest request;
  request.set_ids_only(ids_only);
  request.mutable_tasks()->Reserve(static_cast<int>(specs.size()));
  for (v1::TaskSpec& spec : specs) {
    AttachKey(&spec);
    *request.add_tasks() = std::move(spec);
  }
  return Unary<v1::SubmitBatchResponse>(
      options_.submit_attempts, IsSubmitRetryable,
      [&](grpc::ClientContext* context, v1::SubmitBatchResponse* response) {
        return tasks_->SubmitBatch(context, request, response);
      });
}

absl::StatusOr<v1::Task> Client::GetTask(absl::string_view id) {
  v1::GetTaskRequest request;
  request.set_id(std::string(id));
  return Unary<v1::Task>(options_.read_attempts, IsUnavailable,
                         [&](grpc::ClientContext* context, v1::Task* response) {
                           return tasks_->GetTask(context, request, response);
                         });
}

absl::StatusOr<v1::Task> Client::WatchTask(absl::string_view id,
                                           absl::FunctionRef<bool(const v1::Task&)> on_change,
                                           absl::Duration deadline) {
  v1::WatchTaskRequest request;
  request.set_id(std::string(id));
  return ReadStream<v1::Task>(
      [&](grpc::ClientContext* context) { return tasks_->WatchTask(context, request); },
      on_change, absl::Now() + deadline, absl::StrCat("watch ", id));
}

absl::StatusOr<v1::Task> Client::CancelTask(absl::string_view id) {
  v1::CancelTaskRequest request;
  request.set_id(std::string(id));
  return Unary<v1::Task>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Task* response) {
    return tasks_->CancelTask(context, request, response);
  });
}

absl::StatusOr<v1::ListTasksResponse> Client::ListTasks(const v1::ListTasksRequest& request) {
  return Unary<v1::ListTasksResponse>(
      options_.read_attempts, IsUnavailable,
      [&](grpc::ClientContext* context, v1::ListTasksResponse* response) {
        return tasks_->ListTasks(context, request, response);
      });
}

absl::StatusOr<v1::SubmitGroupResponse> Client::SubmitGroup(v1::SubmitGroupRequest request) {
  return SubmitGroupBefore(std::move(request), absl::InfiniteFuture());
}

absl::StatusOr<v1::SubmitGroupResponse> Client::SubmitGroupBefore(v1::SubmitGroupRequest request,
                                                                  absl::Time cap) {
  if (request.idempotency_key().empty()) request.set_idempotency_key(NewKey());
  return Unary<v1::SubmitGroupResponse>(
      options_.submit_attempts, IsSubmitRetryable,
      [&](grpc::ClientContext* context, v1::SubmitGroupResponse* response) {
        return tasks_->SubmitGroup(context, request, response);
      },
      cap);
}

absl::StatusOr<v1::Group> Client::GetGroup(const v1::GetGroupRequest& request) {
  return GetGroupBefore(request, absl::InfiniteFuture());
}

absl::StatusOr<v1::Group> Client::GetGroupBefore(const v1::GetGroupRequest& request,
                                                 absl::Time cap) {
  return Unary<v1::Group>(
      options_.read_attempts, IsUnavailable,
      [&](grpc::ClientContext* context, v1::Group* response) {
        return tasks_->GetGroup(context, request, response);
      },
      cap);
}

absl::StatusOr<v1::Group> Client::WatchGroup(absl::string_view id,
                                             absl::FunctionRef<bool(const v1::Group&)> on_change,
                                             absl::Duration deadline) {
  v1::WatchGroupRequest request;
  request.set_id(std::string(id));
  return ReadStream<v1::Group>(
      [&](grpc::ClientContext* context) { return tasks_->WatchGroup(context, request); },
      on_change, absl::Now() + deadline, absl::StrCat("watch group ", id));
}

absl::StatusOr<v1::Group> Client::CancelGroup(absl::string_view id) {
  v1::CancelGroupRequest request;
  request.set_id(std::string(id));
  return Unary<v1::Group>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Group* response) {
    return tasks_->CancelGroup(context, request, response);
  });
}

absl::StatusOr<v1::Chain> Client::GetChain(absl::string_view id) {
  v1::GetChainRequest request;
  request.set_id(std::string(id));
  return Unary<v1::Chain>(options_.read_attempts, IsUnavailable,
                          [&](grpc::ClientContext* context, v1::Chain* response) {
                            return tasks_->GetChain(context, request, response);
                          });
}

absl::StatusOr<v1::Chain> Client::CancelChain(absl::string_view id) {
  v1::CancelChainRequest request;
  request.set_id(std::string(id));
  return Unary<v1::Chain>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Chain* response) {
    return tasks_->CancelChain(context, request, response);
  });
}

absl::StatusOr<v1::Queue> Client::CreateQueue(const v1::CreateQueueRequest& request) {
  return Unary<v1::Queue>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Queue* response) {
    return queues_->CreateQueue(context, request, response);
  });
}

absl::StatusOr<v1::Queue> Client::UpdateQueue(const v1::UpdateQueueRequest& request) {
  return Unary<v1::Queue>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Queue* response) {
    return queues_->UpdateQueue(context, request, response);
  });
}

absl::StatusOr<v1::Queue> Client::GetQueue(absl::string_view name) {
  v1::GetQueueRequest request;
  request.set_name(std::string(name));
  return Unary<v1::Queue>(options_.read_attempts, IsUnavailable,
                          [&](grpc::ClientContext* context, v1::Queue* response) {
                            return queues_->GetQueue(context, request, response);
                          });
}

absl::StatusOr<v1::ListQueuesResponse> Client::ListQueues() {
  v1::ListQueuesRequest request;
  return Unary<v1::ListQueuesResponse>(
      options_.read_attempts, IsUnavailable,
      [&](grpc::ClientContext* context, v1::ListQueuesResponse* response) {
        return queues_->ListQueues(context, request, response);
      });
}

absl::StatusOr<v1::Queue> Client::PauseQueue(absl::string_view name) {
  v1::PauseQueueRequest request;
  request.set_name(std::string(name));
  return Unary<v1::Queue>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Queue* response) {
    return queues_->PauseQueue(context, request, response);
  });
}

absl::StatusOr<v1::Queue> Client::ResumeQueue(absl::string_view name) {
  v1::ResumeQueueRequest request;
  request.set_name(std::string(name));
  return Unary<v1::Queue>(1, NeverRetry, [&](grpc::ClientContext* context, v1::Queue* response) {
    return queues_->ResumeQueue(context, request, response);
  });
}

absl::StatusOr<v1::PurgeQueueResponse> Client::PurgeQueue(absl::string_view name) {
  v1::PurgeQueueRequest request;
  request.set_name(std::string(name));
  return Unary<v1::PurgeQueueResponse>(
      1, NeverRetry, [&](grpc::ClientContext* context, v1::PurgeQueueResponse* response) {
        return queues_->PurgeQueue(context, request, response);
      });
}

absl::StatusOr<v1::ListDeadLettersResponse> Client::ListDeadLetters(
    const v1::ListDeadLettersRequest& request) {
  return Unary<v1::ListDeadLettersResponse>(
      options_.read_attempts, IsUnavailable,
      [&](grpc::ClientContext* context, v1::ListDeadLettersResponse* response) {
        return queues_->ListDeadLetters(context, request, response);
      });
}

absl::StatusOr<v1::RequeueDeadLettersResponse> Client::RequeueDeadLetters(
    absl::string_view queue, const std::vector<std::string>& ids) {
  v1::RequeueDeadLettersRequest request;
  request.set_queue(std::string(queue));
  for (const std::string& id : ids) request.add_ids(id);
  return Unary<v1::RequeueDeadLettersResponse>(
      1, NeverRetry, [&](grpc::ClientContext* context, v1::RequeueDeadLettersResponse* response) {
        return queues_->RequeueDeadLetters(context, request, response);
      });
}

absl::StatusOr<v1::PurgeDeadLettersResponse> Client::PurgeDeadLetters(
    absl::string_view queue, const std::vector<std::string>& ids) {
  v1::PurgeDeadLettersRequest request;
  request.set_queue(std::string(queue));
  for (const std::string& id : ids) request.add_ids(id);
  return Unary<v1::PurgeDeadLettersResponse>(
      1, NeverRetry, [&](grpc::ClientContext* context, v1::PurgeDeadLettersResponse* response) {
        return queues_->PurgeDeadLetters(context, request, response);
      });
}

absl::StatusOr<v1::Schedule> Client::CreateSchedule(const v1::Schedule& schedule) {
  v1::CreateScheduleRequest request;
  *request.mutable_schedule() = schedule;
  return Unary<v1::Schedule>(1, NeverRetry,
                             [&](grpc::ClientContext* context, v1::Schedule* response) {
                               return schedules_->CreateSchedule(context, request, response);
                             });
}

absl::StatusOr<v1::Schedule> Client::GetSchedule(absl::string_view name) {
  v1::GetScheduleRequest request;
  request.set_name(std::string(name));
  return Unary<v1::Schedule>(options_.read_attempts, IsUnavailable,
                             [&](grpc::ClientContext* context, v1::Schedule* response) {
                               return schedules_->GetSchedule(context, request, response);
                             });
}

absl::StatusOr<v1::ListSchedulesResponse> Client::ListSchedules() {
  v1::ListSchedulesRequest request;
  return Unary<v1::ListSchedulesResponse>(
      options_.read_attempts, IsUnavailable,
      [&](grpc::ClientContext* context, v1::ListSchedulesResponse* response) {
        return schedules_->ListSchedules(context, request, response);
      });
}

absl::StatusOr<v1::Schedule> Client::PauseSchedule(absl::string_view name) {
  v1::PauseScheduleRequest request;
  request.set_name(std::string(name));
  return Unary<v1::Schedule>(1, NeverRetry,
                             [&](grpc::ClientContext* context, v1::Schedule* response) {
                               return schedules_->PauseSchedule(context, request, response);
                             });
}

absl::StatusOr<v1::Schedule> Client::ResumeSchedule(absl::string_view name) {
  v1::ResumeScheduleRequest request;
  request.set_name(std::string(name));
  return Unary<v1::Schedule>(1, NeverRetry,
                             [&](grpc::ClientContext* context, v1::Schedule* response) {
                               return schedules_->ResumeSchedule(context, request, response);
                             });
}

absl::Status Client::DeleteSchedule(absl::string_view name) {
  v1::DeleteScheduleRequest request;
  request.set_name(std::string(name));
  return Unary<v1::DeleteScheduleResponse>(
             1, NeverRetry,
             [&](grpc::ClientContext* context, v1::DeleteScheduleResponse* response) {
               return schedules_->DeleteSchedule(context, request, response);
             })
      .status();
}

absl::StatusOr<v1::LeaseResponse> Client::Lease(const v1::LeaseRequest& request) {
  // The long-poll may legitimately take the whole wait before answering.
  const absl::Time deadline = absl::Now() + FromProto(request.wait()) + options_.timeout;
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  AttachToken(&context, options_.token);
  v1::LeaseResponse response;
  absl::Status status = FromGrpcStatus(workers_->Lease(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Client::Heartbeat(const v1::HeartbeatRequest& request) {
  return Unary<v1::HeartbeatResponse>(
      1, NeverRetry, [&](grpc::ClientContext* context, v1::HeartbeatResponse* response) {
        return workers_->Heartbeat(context, request, response);
      });
}

absl::StatusOr<v1::CompleteResponse> Client::Complete(const v1::CompleteRequest& request) {
  return Unary<v1::CompleteResponse>(
      1, NeverRetry, [&](grpc::ClientContext* context, v1::CompleteResponse* response) {
        return workers_->Complete(context, request, response);
      });
}

absl::StatusOr<v1::FailResponse> Client::Fail(const v1::FailRequest& request) {
  return Unary<v1::FailResponse>(1, NeverRetry,
                                 [&](grpc::ClientContext* context, v1::FailResponse* response) {
                                   return workers_->Fail(context, request, response);
                                 });
}

absl::StatusOr<v1::ReleaseResponse> Client::Release(const v1::ReleaseRequest& request) {
  return Unary<v1::ReleaseResponse>(
      1, NeverRetry, [&](grpc::ClientContext* context, v1::ReleaseResponse* response) {
        return workers_->Release(context, request, response);
      });
}

absl::StatusOr<ServingStatus> Client::Health(absl::string_view service) {
  const std::string encoded = EncodeHealthCheckRequest(service);
  std::string reply;
  absl::Status status = Retry(options_.read_attempts, IsUnavailable, [&](absl::Time deadline) {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    AttachToken(&context, options_.token);
    grpc::Slice slice(encoded);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::Status result;
    absl::Notification done;
    generic_->UnaryCall(&context, kHealthCheckMethod, grpc::StubOptions(), &request, &response,
                        [&](grpc::Status s) {
                          result = std::move(s);
                          done.Notify();
                        });
    done.WaitForNotification();
    if (!result.ok()) return FromGrpcStatus(result);
    std::vector<grpc::Slice> slices;
    reply.clear();
    if (!response.Dump(&slices).ok()) {
      return absl::InternalError("health: unreadable response");
    }
    for (const grpc::Slice& s : slices) {
      reply.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return DecodeHealthCheckResponse(reply);
}

// ─── SubmitStream ───

struct SubmitStream::Call {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitBatchResponse::Item>>
      rw;
  absl::Time opened;
};

std::unique_ptr<SubmitStream> Client::OpenSubmitStream(size_t window) {
  return std::unique_ptr<SubmitStream>(new SubmitStream(this, std::clamp<size_t>(window, 1, 512)));
}

SubmitStream::SubmitStream(Client* client, size_t window) : client_(client), window_(window) {}

SubmitStream::~SubmitStream() {
  if (call_ == nullptr) return;
  call_->context.TryCancel();
  v1::SubmitBatchResponse::Item item;
  while (call_->rw->Read(&item)) {
  }
  call_->rw->Finish();
}

absl::Status SubmitStream::Send(v1::TaskSpec spec) {
  if (!broken_.ok()) return Broken();
  client_->AttachKey(&spec);
  while (pending_.size() >= window_) {
    if (absl::Status s = ReadOne(); !s.ok()) return s;
  }
  // Move to a fresh call well before this one's deadline.
  if (call_ != nullptr && absl::Now() - call_->opened > client_->options_.timeout / 2) {
    call_->rw->WritesDone();
    if (absl::Status s = EndCall(); !s.ok()) return s;
  }
  v1::SubmitRequest request;
  *request.mutable_task() = std::move(spec);
  pending_.push_back(std::move(request));
  while (call_ == nullptr || !call_->rw->Write(pending_.back())) {
    if (call_ == nullptr) return Open();  // writes every pending task, this one too
    if (absl::Status s = EndCall(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::SubmitResponse> SubmitStream::Next() {
  while (answers_.empty()) {
    if (!broken_.ok()) return Broken();
    if (pending_.empty()) {
      return absl::FailedPreconditionError("Next: every task sent was answered");
    }
    if (absl::Status s = ReadOne(); !s.ok()) return s;
  }
  absl::StatusOr<v1::SubmitResponse> answer = std::move(answers_.front());
  answers_.pop_front();
  return answer;
}

absl::StatusOr<v1::SubmitResponse> SubmitStream::Submit(v1::TaskSpec spec) {
  const size_t ahead = unanswered();
  if (absl::Status s = Send(std::move(spec)); !s.ok()) return s;
  while (answers_.size() <= ahead) {
    if (!broken_.ok()) return Broken();
    if (absl::Status s = ReadOne(); !s.ok()) return s;
  }
  auto it = answers_.begin() + static_cast<std::ptrdiff_t>(ahead);
  absl::StatusOr<v1::SubmitResponse> answer = std::move(*it);
  answers_.erase(it);
  return answer;
}

std::vector<v1::TaskSpec> SubmitStream::TakeUnanswered() {
  std::vector<v1::TaskSpec> out;
  if (broken_.ok()) return out;
  for (v1::SubmitRequest& r : pending_) out.push_back(std::move(*r.mutable_task()));
  pending_.clear();
  return out;
}

absl::Status SubmitStream::Broken() const {
  return absl::FailedPreconditionError(
      absl::StrCat("the submit stream is broken (", broken_.ToString(), "); ", pending_.size(),
                   " tasks unanswered: TakeUnanswered() hands them back"));
}

absl::Status SubmitStream::Open() {
  while (true) {
    call_ = std::make_unique<Call>();
    call_->opened = absl::Now();
    SetDeadline(&call_->context, call_->opened + client_->options_.timeout);
    AttachToken(&call_->context, client_->options_.token);
    call_->rw = client_->tasks_->SubmitStream(&call_->context);
    bool written = true;
    for (const v1::SubmitRequest& request : pending_) {
      if (!call_->rw->Write(request)) {
        written = false;
        break;
      }
    }
    if (written) return absl::OkStatus();
    if (absl::Status s = EndCall(); !s.ok()) return s;
    if (pending_.empty()) return absl::OkStatus();
  }
}

absl::Status SubmitStream::ReadOne() {
  const size_t before = answers_.size();
  while (answers_.size() == before && !pending_.empty()) {
    if (call_ == nullptr) {
      if (absl::Status s = Open(); !s.ok()) return s;
      continue;
    }
    v1::SubmitBatchResponse::Item item;
    if (call_->rw->Read(&item)) {
      Accept(item);
    } else if (absl::Status s = EndCall(); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void SubmitStream::Accept(v1::SubmitBatchResponse::Item& item) {
  if (pending_.empty()) return;  // the broker never answers more than it read
  pending_.pop_front();
  breaks_ = 0;
  if (item.status().code() != 0) {
    answers_.push_back(absl::Status(static_cast<absl::StatusCode>(item.status().code()),
                                    item.status().message()));
    return;
  }
  v1::SubmitResponse response;
  *response.mutable_task() = std::move(*item.mutable_task());
  response.set_deduplicated(item.deduplicated());
  answers_.push_back(std::move(response));
}

absl::Status SubmitStream::EndCall() {
  v1::SubmitBatchResponse::Item item;
  while (call_->rw->Read(&item)) Accept(item);
  absl::Status status = FromGrpcStatus(call_->rw->Finish());
  call_.reset();
  if (pending_.empty()) return absl::OkStatus();
  if (status.ok()) {
    status = absl::UnavailableError(absl::StrCat("the broker ended the submit stream with ",
                                                 pending_.size(), " tasks unanswered"));
  }
  ++breaks_;
  if (!IsSubmitRetryable(status.code()) ||
      breaks_ >= std::max(client_->options_.submit_attempts, 1)) {
    broken_ = status;
    return status;
  }
  absl::SleepFor(client_->BackoffFor(breaks_));
  return absl::OkStatus();
}

}  // namespace conveyor::client
