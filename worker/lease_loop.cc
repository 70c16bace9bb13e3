#include "worker/lease_loop.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "google/protobuf/arena.h"
#include "common/grpc_util.h"
#include "common/security.h"
#include "common/log.h"

namespace conveyor::worker {
namespace {

// LeaseRequest.max_tasks is 1 to 1000.
constexpr int kMaxTasksPerCall = 1000;
// LeaseRequest.wait is at most 60 s.
constexpr absl::Duration kMaxWait = absl::Seconds(60);
// How long one wait for a free slot lasts before the loop looks at its stop
// flag again.
constexpr absl::Duration kSlotWait = absl::Milliseconds(100);
// The first block of the arena each Lease answer is parsed onto (a thousand
// 64-byte tasks take about 300 KiB), and the size of the blocks after it.
constexpr size_t kArenaBlockBytes = 256 << 10;
// How often Stop() asks the broker again to answer a call still in flight.
constexpr absl::Duration kEndPollsRecheck = absl::Milliseconds(50);

}  // namespace

LeaseLoop::LeaseLoop(std::shared_ptr<grpc::Channel> channel, Executor* executor,
                     LeaseLoopOptions options, TaskSink sink, PollObserver observer,
                     RoomWait wait_for_room)
    : stub_(v1::WorkerService::NewStub(std::move(channel))),
      executor_(executor),
      options_(std::move(options)),
      sink_(std::move(sink)),
      observer_(std::move(observer)),
      wait_for_room_(std::move(wait_for_room)),
      arena_block_(new char[kArenaBlockBytes]) {}

LeaseLoop::~LeaseLoop() { Stop(); }

void LeaseLoop::Start() { thread_ = std::thread([this] { ThreadMain(); }); }

void LeaseLoop::Stop() {
  bool idle;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;  // No call starts from now on.
    idle = Idle();
  }
  if (!idle) EndPolls();
  {
    absl::MutexLock lock(&mu_);
    if (call_ != nullptr) call_->TryCancel();
    for (grpc::ClientContext* more : more_calls_) more->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

bool LeaseLoop::EndPolls() {
  const absl::Time give_up = absl::Now() + options_.end_polls_timeout;
  v1::EndPollsRequest request;
  request.set_worker_id(options_.worker_id);
  while (absl::Now() < give_up) {
    grpc::ClientContext context;
    context.set_deadline(ToChrono(give_up));
    AttachToken(&context, options_.token);
    v1::EndPollsResponse response;
    const grpc::Status status = stub_->EndPolls(&context, request, &response);
    if (!status.ok()) {
      LogDebug("cannot end the lease polls; cancelling them",
               {{"broker", options_.broker}, {"error", FromGrpcStatus(status)}});
      return false;
    }
    // A call sent just before may reach the broker after EndPolls did: ask
    // again until every call has returned.
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithDeadline(absl::Condition(this, &LeaseLoop::Idle),
                              std::min(give_up, absl::Now() + kEndPollsRecheck))) {
      return true;
    }
  }
  return false;
}

void LeaseLoop::PauseForDrain() {
  absl::MutexLock lock(&mu_);
  paused_until_ = absl::Now() + options_.drain_recheck;
}

LeaseLoop::More LeaseLoop::LeaseMore(const std::string& type, int max, absl::Duration wait) {
  More more;
  v1::LeaseRequest request;
  request.set_worker_id(options_.worker_id);
  for (const std::string& q : options_.queues) request.add_queues(q);
  request.add_types(type);
  request.set_max_tasks(static_cast<uint32_t>(std::clamp(max, 1, kMaxTasksPerCall)));
  wait = std::clamp(wait, absl::ZeroDuration(), kMaxWait);
  ToProto(wait, request.mutable_wait());
  grpc::ClientContext context;
  context.set_deadline(ToChrono(absl::Now() + wait + options_.rpc_timeout));
  AttachToken(&context, options_.token);
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      more.stopping = true;
      return more;
    }
    if (absl::Now() < paused_until_) return more;
    more_calls_.insert(&context);
  }
  v1::LeaseResponse response;
  const grpc::Status status = stub_->Lease(&context, request, &response);
  {
    absl::MutexLock lock(&mu_);
    more_calls_.erase(&context);
    more.stopping = stopping_;
  }
  if (!status.ok()) {
    more.status = FromGrpcStatus(status);
    if (observer_ && !more.stopping) observer_(PollResult::kError);
    return more;
  }
  if (observer_) observer_(response.tasks_size() > 0 ? PollResult::kTasks : PollResult::kEmpty);
  more.tasks.assign(std::make_move_iterator(response.mutable_tasks()->begin()),
                    std::make_move_iterator(response.mutable_tasks()->end()));
  return more;
}

bool LeaseLoop::SleepFor(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  return !stopping_;
}

void LeaseLoop::ThreadMain() {
  int failures = 0;
  bool connected = true;
  while (true) {
    absl::Time paused_until;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      paused_until = paused_until_;
    }
    if (absl::Now() < paused_until) {
      if (!SleepFor(paused_until - absl::Now())) return;
      continue;
    }
    if (wait_for_room_ && !wait_for_room_(kSlotWait)) continue;
    const int slots = executor_->Reserve(kMaxTasksPerCall, kSlotWait);
    if (slots == 0) continue;

    v1::LeaseRequest request;
    request.set_worker_id(options_.worker_id);
    for (const std::string& q : options_.queues) request.add_queues(q);
    for (const std::string& t : options_.types) request.add_types(t);
    request.set_max_tasks(static_cast<uint32_t>(slots));
    ToProto(options_.wait, request.mutable_wait());
    grpc::ClientContext context;
    context.set_deadline(ToChrono(absl::Now() + options_.wait + options_.rpc_timeout));
    AttachToken(&context, options_.token);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        executor_->Unreserve(slots);
        return;
      }
      call_ = &context;
    }
    // The answer is parsed onto an arena whose first block the loop keeps:
    // a thousand tasks then cost a few block allocations instead of several
    // per task (the message, its timestamps, its strings' objects).
    google::protobuf::ArenaOptions arena_options;
    arena_options.initial_block = arena_block_.get();
    arena_options.initial_block_size = kArenaBlockBytes;
    arena_options.max_block_size = kArenaBlockBytes;
    google::protobuf::Arena arena(arena_options);
    auto& response = *google::protobuf::Arena::CreateMessage<v1::LeaseResponse>(&arena);
    const grpc::Status status = stub_->Lease(&context, request, &response);
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      call_ = nullptr;
      stopping = stopping_;
    }

    if (!status.ok()) {
      executor_->Unreserve(slots);
      if (stopping) return;  // most likely our own TryCancel
      if (observer_) observer_(PollResult::kError);
      ++failures;
      const absl::Duration backoff =
          std::min(options_.max_backoff, options_.initial_backoff * (1 << std::min(failures, 16)));
      const LogLevel level = connected ? LogLevel::kWarning : LogLevel::kDebug;
      connected = false;
      Log(level, "lease failed; retrying",
          {{"broker", options_.broker}, {"worker_id", options_.worker_id},
           {"error", FromGrpcStatus(status)}, {"retry_in", absl::FormatDuration(backoff)}});
      if (!SleepFor(backoff)) return;
      continue;
    }
    if (!connected) {
      LogInfo("leasing again", {{"broker", options_.broker}, {"worker_id", options_.worker_id}});
    }
    connected = true;
    failures = 0;
    const int got = response.tasks_size();
    if (observer_) observer_(got > 0 ? PollResult::kTasks : PollResult::kEmpty);
    if (got == 0) {
      executor_->Unreserve(slots);
      continue;
    }
    std::vector<v1::LeasedTask*> leased;
    leased.reserve(got);
    for (v1::LeasedTask& t : *response.mutable_tasks()) leased.push_back(&t);
    absl::Span<v1::LeasedTask* const> tasks(leased);
    if (stopping) {
      executor_->Unreserve(slots);
      sink_(tasks, /*stopping=*/true);
      return;
    }
    // The sink runs one job per task, each taking one reserved slot. The
    // broker never grants more than max_tasks; should it, the surplus goes
    // straight back rather than past the pool's bound.
    if (got > slots) {
      sink_(tasks.subspan(slots), /*stopping=*/true);
      tasks = tasks.first(slots);
    } else {
      executor_->Unreserve(slots - got);
    }
    sink_(tasks, /*stopping=*/false);
  }
}

}  // namespace conveyor::worker
