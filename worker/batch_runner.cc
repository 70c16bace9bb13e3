#include "worker/batch_runner.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "worker/attempt.h"
#include "worker/finish.h"
#include "worker/outcome.h"

namespace conveyor::worker {
namespace {

// The stronger of two reasons for cancelling a whole batch: a drain beats a
// deadline, which beats a cancel by the broker.
CancelReason Stronger(CancelReason a, CancelReason b) {
  auto rank = [](CancelReason r) {
    switch (r) {
      case CancelReason::kNone: return 0;
      case CancelReason::kCanceled: return 1;
      case CancelReason::kTimeout: return 2;
      case CancelReason::kShutdown: return 3;
    }
    return 0;
  };
  return rank(a) >= rank(b) ? a : b;
}

// What a batch's tasks share: the batch-level cancellation, and the list of
// their attempts (to cancel them all, and to notice when all are
// cancelled). Attempts reach it through a weak pointer in their cancel hook.
class BatchState {
 public:
  const Cancellation& cancellation() const { return cancel_; }

  // Before the attempt is shared: a batch cancelled already cancels it too.
  void Add(const std::shared_ptr<Attempt>& attempt) {
    {
      absl::MutexLock lock(&mu_);
      attempts_.push_back(attempt);
    }
    const CancelReason reason = cancel_.reason();
    if (reason != CancelReason::kNone) attempt->Cancel(reason);
  }

  // Cancels the batch and, the first time, every task in it.
  void CancelAll(CancelReason reason) {
    if (!cancel_.Cancel(reason)) return;
    for (const auto& a : Snapshot()) a->Cancel(reason);
  }

  // A task's cancel hook: once every task is cancelled (or lost), nothing
  // is left worth running and the batch as a whole stops.
  void OnTaskCancelled() {
    if (cancel_.cancelled()) return;
    CancelReason strongest = CancelReason::kNone;
    const std::vector<std::shared_ptr<Attempt>> all = Snapshot();
    for (const auto& a : all) {
      const CancelReason r = a->cancellation().reason();
      if (r == CancelReason::kNone) return;
      strongest = Stronger(strongest, r);
    }
    if (!all.empty()) CancelAll(strongest);
  }

 private:
  std::vector<std::shared_ptr<Attempt>> Snapshot() const {
    absl::MutexLock lock(&mu_);
    return attempts_;
  }

  Cancellation cancel_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Attempt>> attempts_ ABSL_GUARDED_BY(mu_);
};

// The tasks of one batch while it forms: full TaskInfos (with payloads) for
// the handler, attempts (without payloads) for heartbeats and reports.
class Batch {
 public:
  Batch(const BatchRunnerDeps& deps, const std::string& type, size_t max_size)
      : deps_(deps), type_(type), max_size_(max_size), state_(std::make_shared<BatchState>()) {
    tasks_.reserve(max_size);
    attempts_.reserve(max_size);
  }

  // Takes a leased task into the batch, or hands it back when `hand_back`,
  // when it is of another type, or when the batch is full.
  void Take(v1::LeasedTask& leased, bool hand_back) {
    const absl::Time now = deps_.clock->Now();
    const absl::Time lease_expires_at = FromProto(leased.lease_expires_at(), now);
    TaskInfo info = InfoFromProto(leased, deps_.worker_id);
    if (hand_back || info.type != type_ || tasks_.size() >= max_size_) {
      HandBack(info, lease_expires_at, now, deps_.reporter,
               hand_back            ? "handing back a task leased while draining"
               : info.type != type_ ? "a batch lease brought a task of another type; handing it back"
                                    : "a batch lease brought more tasks than asked; handing one back");
      return;
    }
    // The attempt keeps no payload: the batch holds it, for the handler.
    std::string payload = std::move(info.payload);
    TaskInfo light = info;
    info.payload = std::move(payload);
    auto attempt = std::make_shared<Attempt>(
        std::move(light), lease_expires_at,
        std::max(absl::ZeroDuration(), lease_expires_at - now), now);
    attempt->SetCancelHook([weak = std::weak_ptr<BatchState>(state_)] {
      if (std::shared_ptr<BatchState> s = weak.lock()) s->OnTaskCancelled();
    });
    deadline_ = std::min(deadline_, info.deadline);
    tasks_.push_back(std::move(info));
    state_->Add(attempt);
    deps_.heartbeater->Track(attempt);
    attempts_.push_back(std::move(attempt));
  }

  void Fill(absl::Duration linger) {
    const absl::Time linger_end = deps_.clock->Now() + linger;
    while (tasks_.size() < max_size_ && !state_->cancellation().cancelled()) {
      const absl::Time until = std::min(linger_end, deadline_);
      const absl::Duration wait = std::max(absl::ZeroDuration(), until - deps_.clock->Now());
      LeaseMoreResult more =
          deps_.lease_more(type_, static_cast<int>(max_size_ - tasks_.size()), wait);
      for (v1::LeasedTask& t : more.tasks) Take(t, more.stopping);
      if (!more.status.ok()) {
        LogDebug("filling a batch: lease failed; running with what it has",
                 {{"type", type_}, {"worker_id", deps_.worker_id}, {"error", more.status}});
        return;
      }
      // Nothing more came within the wait (or the broker answered early,
      // e.g. draining): the batch runs with what it has.
      if (more.stopping || more.tasks.empty()) return;
      if (deps_.clock->Now() >= std::min(linger_end, deadline_)) return;
    }
  }

  size_t size() const { return tasks_.size(); }
  absl::Time deadline() const { return deadline_; }
  const std::vector<TaskInfo>& tasks() const { return tasks_; }
  const std::vector<std::shared_ptr<Attempt>>& attempts() const { return attempts_; }
  const std::shared_ptr<BatchState>& state() const { return state_; }

 private:
  const BatchRunnerDeps& deps_;
  const std::string& type_;
  const size_t max_size_;
  const std::shared_ptr<BatchState> state_;
  std::vector<TaskInfo> tasks_;
  std::vector<std::shared_ptr<Attempt>> attempts_;
  absl::Time deadline_ = absl::InfiniteFuture();
};

// Steps 2 and 3: rate-limit tokens, then the handler.
BatchAnswers Answers(const BatchRunnerDeps& deps, const std::string& type,
                     const BatchHandler& handler, const Batch& batch) {
  const size_t n = batch.size();
  const Cancellation& cancel = batch.state()->cancellation();
  if (deps.limiter != nullptr) {
    for (size_t i = 0; i < n; ++i) {
      if (!deps.limiter->Acquire(type, cancel)) {
        return BatchAnswers(n, absl::CancelledError(
                                   "cancelled while waiting for rate-limit tokens for the batch"));
      }
    }
  }
  if (cancel.cancelled()) {
    return BatchAnswers(n, absl::CancelledError("the batch was cancelled before its handler ran"));
  }
  std::vector<const Cancellation*> task_cancels;
  std::vector<ProgressSink> progress;
  task_cancels.reserve(n);
  progress.reserve(n);
  for (const std::shared_ptr<Attempt>& a : batch.attempts()) {
    task_cancels.push_back(&a->cancellation());
    progress.push_back(
        [a](double percent, std::string message) { a->SetProgress(percent, std::move(message)); });
  }
  BatchContext ctx(type, batch.tasks(), std::move(task_cancels), std::move(progress), &cancel,
                   batch.deadline());
  BatchAnswers answers = handler(ctx);
  if (answers.size() != n) {
    const absl::Status wrong = WrongAnswerCount(answers.size(), n);
    LogWarning("batch handler returned the wrong number of answers; failing the whole batch",
               {{"type", type}, {"worker_id", deps.worker_id},
                {"answers", static_cast<unsigned long>(answers.size())},
                {"tasks", static_cast<unsigned long>(n)}});
    answers.assign(n, wrong);
  }
  return answers;
}

}  // namespace

void RunBatch(const BatchRunnerDeps& deps, const std::string& type, const BatchHandler& handler,
              const BatchOptions& options, std::vector<v1::LeasedTask> leased) {
  Batch batch(deps, type, std::max<size_t>(1, options.max_size));
  for (v1::LeasedTask& t : leased) batch.Take(t, /*hand_back=*/false);
  if (batch.size() == 0) return;
  if (deps.lease_more) batch.Fill(options.linger);

  const size_t n = batch.size();
  if (deps.metrics != nullptr) deps.metrics->BatchSize(n);
  const std::shared_ptr<BatchState> state = batch.state();
  const DeadlineTimer::Key deadline_key =
      deps.timer->Add(batch.deadline(), [state] { state->CancelAll(CancelReason::kTimeout); });
  const std::string deadline_text =
      absl::FormatTime(absl::RFC3339_full, batch.deadline(), absl::UTCTimeZone());
  for (const TaskInfo& t : batch.tasks()) {
    LogTask(LogLevel::kInfo, "task started", t,
            {{"attempt", t.attempt},
             {"max_attempts", t.max_attempts},
             {"token", static_cast<unsigned long long>(t.token)},
             {"deadline", deadline_text},
             {"batch_size", static_cast<unsigned long>(n)}});
  }

  BatchAnswers answers = Answers(deps, type, handler, batch);

  // A draining worker that gave up on the batch has already released its
  // tasks (their answers are dropped) and may be gone: when it settled them
  // all, touch nothing but the attempts.
  std::vector<bool> won(n);
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    won[i] = batch.attempts()[i]->TryFinish();
    any = any || won[i];
  }
  if (!any) return;
  deps.timer->Remove(deadline_key);
  const absl::Time now = deps.clock->Now();
  const FinishSinks sinks{deps.heartbeater, deps.reporter, deps.metrics};
  for (size_t i = 0; i < n; ++i) {
    if (!won[i]) continue;
    const std::shared_ptr<Attempt>& a = batch.attempts()[i];
    AttemptFacts facts;
    facts.cancel = a->cancellation().reason();
    facts.lease_lost = a->lease_lost();
    facts.past_deadline = now >= batch.deadline();
    facts.timeout = batch.tasks()[i].timeout;
    facts.batch_size = n;
    FinishAttempt(*a, std::move(answers[i]), facts, now, sinks, n);
  }
}

}  // namespace conveyor::worker
