#include "worker/worker.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "common/clock.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/signals.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "prometheus/exposer.h"
#include "worker/attempt.h"
#include "worker/batch_runner.h"
#include "worker/broker_rpc.h"
#include "worker/deadline_timer.h"
#include "worker/executor.h"
#include "worker/finish.h"
#include "worker/heartbeater.h"
#include "worker/lease_loop.h"
#include "worker/metrics.h"
#include "worker/outcome.h"
#include "worker/reporter.h"

namespace conveyor::worker {
namespace {

// LeaseRequest limits: at most 64 queue names, a worker id of 256 bytes.
constexpr size_t kMaxQueues = 64;
constexpr size_t kMaxWorkerIdBytes = 256;
constexpr int kMaxPrefetch = 10000;
// Logged for each prefetched task a drain hands back before it started.
constexpr std::string_view kHandBackUnstarted =
    "handing back a task that had not started: the worker drains";

std::string DefaultWorkerId() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "localhost", ":", getpid());
}

// What the worker runs for one task type: a handler, or a batch handler with
// its options.
struct HandlerEntry {
  Handler single;
  BatchHandler batch;
  BatchOptions batch_options;
};

}  // namespace

// Everything the worker holds for one broker.
struct BrokerSession {
  int index = 0;
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<client::Client> client;
  std::unique_ptr<ClientBrokerRpc> rpc;
  std::unique_ptr<Heartbeater> heartbeater;
  std::unique_ptr<Reporter> reporter;
  std::unique_ptr<LeaseLoop> lease_loop;
};

class Worker::Impl {
 public:
  explicit Impl(WorkerOptions options)
      : options_(std::move(options)), limiter_(RealClock::Get()) {
    if (options_.worker_id.empty()) options_.worker_id = DefaultWorkerId();
    if (options_.concurrency <= 0) {
      options_.concurrency = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    }
  }

  ~Impl() { Shutdown(); }

  absl::Status Register(std::string type, Handler handler) {
    if (!handler) {
      return absl::InvalidArgumentError(absl::StrCat("Register(\"", type, "\"): no handler"));
    }
    HandlerEntry entry;
    entry.single = std::move(handler);
    return Add("Register", std::move(type), std::move(entry));
  }

  absl::Status RegisterBatch(std::string type, BatchHandler handler, BatchOptions options) {
    if (!handler) {
      return absl::InvalidArgumentError(
          absl::StrCat("RegisterBatch(\"", type, "\"): no handler"));
    }
    if (absl::Status s = ValidateBatchOptions(options); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("RegisterBatch(\"", type, "\"): ", s.message()));
    }
    HandlerEntry entry;
    entry.batch = std::move(handler);
    entry.batch_options = options;
    return Add("RegisterBatch", std::move(type), std::move(entry));
  }

  absl::Status Start();
  void Shutdown();

  const std::string& worker_id() const { return options_.worker_id; }

  int metrics_port() const {
    absl::MutexLock lock(&mu_);
    return metrics_port_;
  }

  std::vector<std::string> types() const {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    out.reserve(handlers_.size());
    for (const auto& [type, h] : handlers_) out.push_back(type);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::vector<std::string> batch_types() const {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const auto& [type, h] : handlers_) {
      if (h.batch) out.push_back(type);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  enum class State { kNew, kRunning, kStopped };

  absl::Status Add(const char* what, std::string type, HandlerEntry entry) {
    if (type.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": the task type is empty"));
    }
    absl::MutexLock lock(&mu_);
    if (state_ != State::kNew) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, "(\"", type, "\"): the worker has already started"));
    }
    if (handlers_.contains(type)) {
      return absl::AlreadyExistsError(
          absl::StrCat(what, "(\"", type, "\"): the type already has a handler"));
    }
    handlers_.emplace(std::move(type), std::move(entry));
    return absl::OkStatus();
  }

  absl::Status Validate() const;
  absl::Status StartMetrics();
  void StartSession(int index, const std::string& address, const std::vector<std::string>& types);
  // LeaseLoop's sink: runs (or, when stopping, hands back) leased tasks.
  void OnLeased(BrokerSession* s, absl::Span<v1::LeasedTask* const> tasks, bool stopping);
  // One attempt, on an executor thread.
  void Process(BrokerSession* s, const std::shared_ptr<Attempt>& attempt, const Handler& handler);
  // One batch, on an executor thread (worker/batch_runner.h).
  void ProcessBatch(BrokerSession* s, const std::string& type, const HandlerEntry& entry,
                    std::vector<v1::LeasedTask> tasks);
  // Drain step 3: cancels what still runs and waits; abandons what is stuck.
  void CancelAndWait();

  WorkerOptions options_;
  RateLimiter limiter_;
  DeadlineTimer timer_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<Executor> executor_;
  // Built by Start, then only read.
  std::vector<std::unique_ptr<BrokerSession>> sessions_;

  // Set when Shutdown begins: jobs that had not started hand their tasks back.
  std::atomic<bool> draining_{false};
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kNew;
  // Written by Register before Start, read-only after.
  absl::flat_hash_map<std::string, HandlerEntry> handlers_ ABSL_GUARDED_BY(mu_);
  int metrics_port_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::Status Worker::Impl::Validate() const {
  if (options_.brokers.empty()) {
    return absl::InvalidArgumentError("no broker: give at least one --broker host:port");
  }
  for (const std::string& b : options_.brokers) {
    if (b.empty()) return absl::InvalidArgumentError("--broker: an empty address");
  }
  if (options_.queues.empty()) {
    return absl::InvalidArgumentError("no queue: give at least one --queue to serve");
  }
  if (options_.queues.size() > kMaxQueues) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--queue: ", options_.queues.size(), " queues; a worker serves at most ", kMaxQueues));
  }
  for (const std::string& q : options_.queues) {
    if (q.empty()) return absl::InvalidArgumentError("--queue: an empty queue name");
  }
  if (options_.prefetch < 0 || options_.prefetch > kMaxPrefetch) {
    return absl::InvalidArgumentError(absl::StrCat("--prefetch: ", options_.prefetch,
                                                   "; must be 0 to ", kMaxPrefetch));
  }
  if (options_.worker_id.size() > kMaxWorkerIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("--worker-id: ", options_.worker_id.size(),
                                                   " bytes; at most ", kMaxWorkerIdBytes));
  }
  if (options_.grace < absl::ZeroDuration() || options_.cancel_wait < absl::ZeroDuration() ||
      options_.heartbeat_interval < absl::ZeroDuration() ||
      options_.lease_wait < absl::ZeroDuration() || options_.rpc_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "durations (grace, heartbeat interval, lease wait, rpc timeout) must not be negative");
  }
  if (options_.lease_wait > absl::Seconds(60)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lease wait ", absl::FormatDuration(options_.lease_wait), ": at most 60s"));
  }
  if (options_.max_pending_reports == 0 || options_.report_batch == 0) {
    return absl::InvalidArgumentError("max_pending_reports and report_batch must be positive");
  }
  return absl::OkStatus();
}

absl::Status Worker::Impl::StartMetrics() {
  if (options_.metrics_addr.empty()) return absl::OkStatus();
  try {
    // prometheus-cpp reports bind failures by exception; it is caught here,
    // at the library's edge, and becomes a status.
    exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_addr);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", options_.metrics_addr, ": ", e.what()));
  }
  exposer_->RegisterCollectable(metrics_->registry());
  std::vector<int> ports = exposer_->GetListeningPorts();
  absl::MutexLock lock(&mu_);
  metrics_port_ = ports.empty() ? 0 : ports.front();
  return absl::OkStatus();
}

absl::Status Worker::Impl::Start() {
  std::vector<std::string> types;
  {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kNew) {
      return absl::FailedPreconditionError("Start: the worker has already started");
    }
    if (handlers_.empty()) {
      return absl::InvalidArgumentError("no handler: register at least one task type");
    }
    for (const auto& [type, h] : handlers_) types.push_back(type);
  }
  std::sort(types.begin(), types.end());
  if (absl::Status s = Validate(); !s.ok()) return s;

  metrics_ = std::make_unique<WorkerMetrics>(static_cast<int>(options_.brokers.size()));
  if (absl::Status s = StartMetrics(); !s.ok()) return s;
  for (const RateLimit& limit : options_.rate_limits) limiter_.SetLimit(limit);

  WorkerMetrics* metrics = metrics_.get();
  executor_ = std::make_unique<Executor>(
      options_.concurrency,
      [metrics](int busy, int free, int waiting) { metrics->Slots(busy, free, waiting); },
      options_.prefetch);
  executor_->Start();
  timer_.Start();
  for (size_t i = 0; i < options_.brokers.size(); ++i) {
    StartSession(static_cast<int>(i), options_.brokers[i], types);
  }
  {
    absl::MutexLock lock(&mu_);
    state_ = State::kRunning;
  }
  std::string brokers, queues;
  for (const auto& b : options_.brokers) absl::StrAppend(&brokers, brokers.empty() ? "" : ",", b);
  for (const auto& q : options_.queues) absl::StrAppend(&queues, queues.empty() ? "" : ",", q);
  std::string type_list;
  for (const auto& t : types) absl::StrAppend(&type_list, type_list.empty() ? "" : ",", t);
  std::string batch_list;  // "thumbs=32:50ms,..."
  {
    absl::MutexLock lock(&mu_);
    for (const auto& t : types) {
      const HandlerEntry& e = handlers_.at(t);
      if (!e.batch) continue;
      absl::StrAppend(&batch_list, batch_list.empty() ? "" : ",", t, "=",
                      e.batch_options.max_size, ":",
                      absl::FormatDuration(e.batch_options.linger));
    }
  }
  LogInfo("worker started", {{"worker_id", options_.worker_id},
                             {"brokers", brokers},
                             {"queues", queues},
                             {"types", type_list},
                             {"batches", batch_list},
                             {"concurrency", options_.concurrency},
                             {"metrics_port", metrics_port()}});
  return absl::OkStatus();
}

void Worker::Impl::StartSession(int index, const std::string& address,
                                const std::vector<std::string>& types) {
  auto s = std::make_unique<BrokerSession>();
  BrokerSession* raw = s.get();
  WorkerMetrics* metrics = metrics_.get();
  s->index = index;
  s->address = address;
  s->channel = grpc::CreateChannel(address, ChannelCredentialsFor(options_.security));
  client::ClientOptions copts;
  copts.address = address;
  copts.timeout = options_.rpc_timeout;
  copts.token = options_.security.token;
  s->client = std::make_unique<client::Client>(s->channel, copts);
  s->rpc = std::make_unique<ClientBrokerRpc>(s->client.get());
  auto connected = [metrics, index](bool ok) { metrics->Connected(index, ok); };

  ReporterOptions ropts;
  ropts.max_batch = options_.report_batch;
  ropts.flush_delay = options_.report_flush_delay;
  // A result waits for company only while other tasks are in hand (the one
  // reporting may still count until its job returns).
  ropts.linger_while = [executor = executor_.get()] { return executor->busy() > 1; };
  // Room for two pools' worth of results, so that flow control (the lease
  // loop waits while over half is taken) never has to drop one.
  ropts.max_pending = std::max<size_t>(
      options_.max_pending_reports,
      2 * static_cast<size_t>(executor_->concurrency() + executor_->prefetch()));
  ropts.worker_id = options_.worker_id;
  ropts.broker = address;
  s->reporter = std::make_unique<Reporter>(s->rpc.get(), ropts, RealClock::Get(), connected);

  HeartbeaterOptions hopts;
  hopts.worker_id = options_.worker_id;
  hopts.broker = address;
  hopts.interval = options_.heartbeat_interval;
  s->heartbeater = std::make_unique<Heartbeater>(
      s->rpc.get(), hopts, RealClock::Get(),
      [raw] {
        if (raw->lease_loop != nullptr) raw->lease_loop->PauseForDrain();
      },
      connected);

  LeaseLoopOptions lopts;
  lopts.worker_id = options_.worker_id;
  lopts.broker = address;
  lopts.queues = options_.queues;
  lopts.types = types;
  lopts.wait = options_.lease_wait > absl::ZeroDuration() ? options_.lease_wait
               : options_.brokers.size() > 1             ? absl::Seconds(2)
                                                         : absl::Seconds(20);
  lopts.rpc_timeout = options_.rpc_timeout;
  lopts.token = options_.security.token;
  s->lease_loop = std::make_unique<LeaseLoop>(
      s->channel, executor_.get(), lopts,
      [this, raw](absl::Span<v1::LeasedTask* const> tasks, bool stopping) {
        OnLeased(raw, tasks, stopping);
      },
      [metrics, index](LeaseLoop::PollResult r) {
        switch (r) {
          case LeaseLoop::PollResult::kTasks:
            metrics->Poll(WorkerMetrics::PollResult::kTasks);
            break;
          case LeaseLoop::PollResult::kEmpty:
            metrics->Poll(WorkerMetrics::PollResult::kEmpty);
            break;
          case LeaseLoop::PollResult::kError:
            metrics->Poll(WorkerMetrics::PollResult::kError);
            break;
        }
        metrics->Connected(index, r != LeaseLoop::PollResult::kError);
      },
      [reporter = s->reporter.get()](absl::Duration timeout) {
        return reporter->WaitForRoom(timeout);
      });

  s->reporter->Start();
  s->heartbeater->Start();
  sessions_.push_back(std::move(s));
  raw->lease_loop->Start();
}

void Worker::Impl::OnLeased(BrokerSession* s, absl::Span<v1::LeasedTask* const> tasks,
                            bool stopping) {
  const absl::Time now = absl::Now();
  // The tasks of batch types, by type, in lease order: each batch takes one
  // slot, so the slots reserved for the others are given back below.
  std::vector<std::pair<std::string, std::vector<v1::LeasedTask>>> batches;
  int unused_slots = 0;
  for (v1::LeasedTask* leased : tasks) {
    v1::LeasedTask& t = *leased;
    // Handlers are fixed once the worker has started (Add refuses more), so
    // the entry stays where it is: no copy of its functions per task.
    static const HandlerEntry kNone;
    const HandlerEntry* found = &kNone;
    if (!stopping) {
      absl::MutexLock lock(&mu_);
      auto it = handlers_.find(t.type());
      if (it != handlers_.end()) found = &it->second;
    }
    const HandlerEntry& entry = *found;
    if (entry.batch) {
      auto group = std::find_if(batches.begin(), batches.end(),
                                [&t](const auto& b) { return b.first == t.type(); });
      if (group == batches.end()) {
        batches.emplace_back(t.type(), std::vector<v1::LeasedTask>());
        group = std::prev(batches.end());
      }
      group->second.push_back(std::move(t));
      continue;
    }
    const absl::Time lease_expires_at = FromProto(t.lease_expires_at(), now);
    TaskInfo info = InfoFromProto(t, options_.worker_id);
    if (!entry.single) {
      // Draining (or, defensively, a type this worker never asked for): give
      // it straight back without spending anything.
      HandBack(info, lease_expires_at, now, s->reporter.get(),
               stopping ? "handing back a task leased while draining"
                        : "no handler for the task type; handing it back");
      if (!stopping) ++unused_slots;
      continue;
    }
    auto attempt = std::make_shared<Attempt>(
        std::move(info), lease_expires_at,
        std::max(absl::ZeroDuration(), lease_expires_at - now), now);
    s->heartbeater->Track(attempt);
    executor_->Run([this, s, attempt, handler = &entry.single] { Process(s, attempt, *handler); });
  }
  for (auto& [type, group] : batches) {
    HandlerEntry entry;
    {
      absl::MutexLock lock(&mu_);
      entry = handlers_.at(type);
    }
    // More than max_size of one type in one answer: several batches.
    const size_t max_size = entry.batch_options.max_size;
    for (size_t first = 0; first < group.size(); first += max_size) {
      const size_t last = std::min(group.size(), first + max_size);
      std::vector<v1::LeasedTask> chunk(std::make_move_iterator(group.begin() + first),
                                        std::make_move_iterator(group.begin() + last));
      unused_slots += static_cast<int>(chunk.size()) - 1;
      executor_->Run([this, s, type = type, entry, chunk = std::move(chunk)]() mutable {
        ProcessBatch(s, type, entry, std::move(chunk));
      });
    }
  }
  executor_->Unreserve(unused_slots);
}

void Worker::Impl::ProcessBatch(BrokerSession* s, const std::string& type,
                                const HandlerEntry& entry, std::vector<v1::LeasedTask> tasks) {
  if (draining_.load(std::memory_order_acquire)) {  // as in Process
    const absl::Time now = absl::Now();
    for (v1::LeasedTask& t : tasks) {
      HandBack(InfoFromProto(t, options_.worker_id), FromProto(t.lease_expires_at(), now), now,
               s->reporter.get(), kHandBackUnstarted);
    }
    return;
  }
  BatchRunnerDeps deps;
  deps.worker_id = options_.worker_id;
  deps.heartbeater = s->heartbeater.get();
  deps.reporter = s->reporter.get();
  deps.timer = &timer_;
  deps.clock = RealClock::Get();
  deps.limiter = &limiter_;
  deps.metrics = metrics_.get();
  LeaseLoop* loop = s->lease_loop.get();
  deps.lease_more = [loop](const std::string& t, int max, absl::Duration wait) {
    LeaseLoop::More more = loop->LeaseMore(t, max, wait);
    LeaseMoreResult result;
    result.status = std::move(more.status);
    result.tasks = std::move(more.tasks);
    result.stopping = more.stopping;
    return result;
  };
  RunBatch(deps, type, entry.batch, entry.batch_options, std::move(tasks));
}

void Worker::Impl::Process(BrokerSession* s, const std::shared_ptr<Attempt>& attempt,
                           const Handler& handler) {
  const TaskInfo& t = attempt->task();
  if (draining_.load(std::memory_order_acquire)) {
    // Leased ahead (prefetch) and still waiting for a thread when the drain
    // began: it goes back unstarted, spending nothing.
    if (!attempt->TryFinish()) return;
    s->heartbeater->Untrack(*attempt);
    const absl::Time now = absl::Now();
    HandBack(t, attempt->lease_expires_at(), now, s->reporter.get(), kHandBackUnstarted);
    metrics_->TaskFinished(t.queue, "released", now - attempt->received_at());
    return;
  }
  if (LogEnabled(LogLevel::kInfo)) {  // formatting the deadline is not free
    LogTask(LogLevel::kInfo, "task started", t,
            {{"attempt", t.attempt},
             {"max_attempts", t.max_attempts},
             {"token", static_cast<unsigned long long>(t.token)},
             {"deadline", absl::FormatTime(absl::RFC3339_full, t.deadline, absl::UTCTimeZone())}});
  }
  const DeadlineTimer::Key deadline =
      timer_.Add(t.deadline, [attempt] { attempt->Cancel(CancelReason::kTimeout); });

  absl::StatusOr<std::string> answer;
  if (!limiter_.Acquire(t.type, attempt->cancellation())) {
    answer = absl::CancelledError("cancelled while waiting for a rate-limit token");
  } else {
    HandlerContext ctx(t, &attempt->cancellation(),
                       [attempt](double percent, std::string message) {
                         attempt->SetProgress(percent, std::move(message));
                       });
    answer = handler(ctx);
  }
  // A draining worker that gave up on this handler has already released the
  // task and may be gone: touch nothing but the attempt then.
  if (!attempt->TryFinish()) return;

  timer_.Remove(deadline);
  const absl::Time now = absl::Now();
  AttemptFacts facts;
  facts.cancel = attempt->cancellation().reason();
  facts.lease_lost = attempt->lease_lost();
  facts.past_deadline = now >= t.deadline;
  facts.timeout = t.timeout;
  FinishAttempt(*attempt, std::move(answer), facts, now,
                FinishSinks{s->heartbeater.get(), s->reporter.get(), metrics_.get()});
}

void Worker::Impl::CancelAndWait() {
  size_t cancelled = 0;
  for (auto& s : sessions_) cancelled += s->heartbeater->CancelAll(CancelReason::kShutdown);
  LogInfo("grace period over; cancelling and handing back running tasks",
          {{"worker_id", options_.worker_id}, {"tasks", static_cast<unsigned long>(cancelled)}});
  if (executor_->WaitIdle(options_.cancel_wait)) return;
  // Handlers that ignore their cancellation: release their tasks on their
  // behalf; whatever they return later is dropped (Attempt::TryAbandon).
  const absl::Time now = absl::Now();
  for (auto& s : sessions_) {
    for (const std::shared_ptr<Attempt>& a : s->heartbeater->Tracked()) {
      if (!a->TryAbandon()) continue;
      s->heartbeater->Untrack(*a);
      LogTask(LogLevel::kWarning, "handler did not stop after cancellation; releasing its task",
              a->task());
      metrics_->TaskFinished(a->task().queue, "released", now - a->received_at());
      AttemptOutcome release;
      release.kind = ReportKind::kRelease;
      s->reporter->Add(ReportFor(a->task(), std::move(release),
                                 std::max(a->lease_expires_at(), now + kMinReportWindow)));
    }
  }
}

void Worker::Impl::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kRunning) {
      state_ = State::kStopped;
      return;
    }
    state_ = State::kStopped;
  }
  draining_.store(true, std::memory_order_release);
  metrics_->Draining(true);
  LogInfo("draining", {{"worker_id", options_.worker_id},
                       {"running", executor_->busy()},
                       {"grace", absl::FormatDuration(options_.grace)}});
  // 1. No new leases.
  for (auto& s : sessions_) s->lease_loop->Stop();
  // 2. Running attempts may finish within the grace period.
  bool idle = executor_->WaitIdle(options_.grace);
  // 3. Cancel the rest; they are handed back.
  if (!idle) CancelAndWait();
  idle = executor_->busy() == 0;
  // 4. Leases need no more heartbeats.
  for (auto& s : sessions_) s->heartbeater->Stop();
  // 5. Deliver what is left.
  size_t dropped = 0;
  for (auto& s : sessions_) dropped += s->reporter->Stop(options_.report_flush_timeout);
  // 6. The rest.
  timer_.Stop();
  if (idle) {
    executor_->Stop();
  } else {
    // Abandoned handlers still hold pool threads: joining them could block
    // forever, so the pool is left to them (the process is about to exit).
    LogWarning("leaving stuck handler threads behind", {{"worker_id", options_.worker_id}});
    executor_.release();  // NOLINT: deliberately leaked, see above
  }
  exposer_.reset();
  LogInfo("drained", {{"worker_id", options_.worker_id},
                      {"reports_dropped", static_cast<unsigned long>(dropped)}});
}

Worker::Worker(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Worker::~Worker() = default;

absl::Status Worker::Register(std::string type, Handler handler) {
  return impl_->Register(std::move(type), std::move(handler));
}

absl::Status Worker::RegisterBatch(std::string type, BatchHandler handler, BatchOptions options) {
  return impl_->RegisterBatch(std::move(type), std::move(handler), options);
}

absl::Status Worker::Start() { return impl_->Start(); }

void Worker::Shutdown() { impl_->Shutdown(); }

absl::Status Worker::Run() {
  const sigset_t stop_signals = BlockStopSignals();
  if (absl::Status s = Start(); !s.ok()) return s;
  AwaitStopSignal(stop_signals);
  Shutdown();
  return absl::OkStatus();
}

const std::string& Worker::worker_id() const { return impl_->worker_id(); }

int Worker::metrics_port() const { return impl_->metrics_port(); }

std::vector<std::string> Worker::types() const { return impl_->types(); }

std::vector<std::string> Worker::batch_types() const { return impl_->batch_types(); }

}  // namespace conveyor::worker
