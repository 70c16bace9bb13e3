// Batch handlers: code that runs many tasks of one type at once (one model
// call for 64 inputs, one bulk INSERT for 500 rows) and answers per task.
//
//   worker.RegisterBatch("embed", [](BatchContext& batch) {
//     std::vector<std::string> texts;
//     for (const TaskInfo& t : batch.tasks()) texts.push_back(t.payload);
//     absl::StatusOr<std::vector<std::string>> vectors = model.Embed(texts);
//     BatchAnswers answers;
//     for (size_t i = 0; i < batch.size(); ++i) {
//       if (!vectors.ok()) answers.push_back(vectors.status());  // all fail alike
//       else answers.push_back(std::move((*vectors)[i]));
//     }
//     return answers;
//   }, {.max_size = 64, .linger = absl::Milliseconds(20)});
//
// How a batch forms: the worker leases as usual; the tasks of a batch type
// that one Lease answer brings become one batch (several if there are more
// than max_size), which takes ONE executor slot. Before its handler runs, a
// batch that is not full asks the same broker for more tasks of its type only
// (LeaseRequest.types = {type}, max_tasks = what is missing), waiting at most
// `linger` (and never past the earliest deadline of its tasks), then runs
// with what it has: a batch holds 1 to max_size tasks.
//
// Answers: one per task, in the order of tasks(); each follows the result
// convention of single handlers (worker/handler.h): OK -> Complete;
// INVALID_ARGUMENT or FAILED_PRECONDITION -> Fail, not retried;
// RESOURCE_EXHAUSTED (Throttled) -> a throttled Fail; any other code -> Fail,
// retryable. A failing task is retried alone, per its own retry policy (the
// broker knows nothing of batches; the retry may land in another batch). A
// handler that returns a different number of answers than tasks has a bug:
// every task of the batch fails, retryable, with reason "batch_answers".
//
// Per task, what the worker knows beats the handler's answer exactly as for a
// single task (OK always completes): a task the broker canceled while the
// batch ran fails with reason "canceled", a lost lease reports nothing, a
// drain that gave up waiting releases.
//
// Cancellation, at two levels:
//   batch.cancelled()    the whole batch should stop: its deadline (the
//                        earliest of its tasks' deadlines) passed, the worker
//                        drains and gave up waiting, or every one of its
//                        tasks was canceled (or lost); then every task is
//                        cancelled too
//   task(i).cancelled()  task i should stop: the above, or the broker
//                        canceled task i alone (the others run on)
// Leases of every task in a running batch are heartbeated together with the
// worker's other attempts; progress is per task (task(i).ReportProgress) or
// for all (batch.ReportProgress).
//
// Thread-safety: a BatchContext belongs to one batch; its methods are
// thread-safe, so a handler may hand it (or task(i)) to helper threads for
// the batch's lifetime (never beyond the handler's return).
#ifndef CONVEYOR_WORKER_BATCH_H_
#define CONVEYOR_WORKER_BATCH_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/cancellation.h"
#include "worker/handler.h"

namespace conveyor::worker {

// The most tasks one Lease call may ask for, hence the largest batch.
inline constexpr size_t kMaxBatchSize = 1000;
// The longest a batch may wait to fill up.
inline constexpr absl::Duration kMaxBatchLinger = absl::Seconds(10);

struct BatchOptions {
  // The most tasks in one batch: 1 to kMaxBatchSize.
  size_t max_size = 10;
  // How long a batch that is not full waits for more tasks before it runs:
  // 0 to kMaxBatchLinger. 0: it still takes what the broker has ready at
  // once, without waiting. The wait is spent holding the slot and the
  // leases of the tasks already in the batch (they are heartbeated), and it
  // ends early when the batch is full.
  absl::Duration linger = absl::Milliseconds(50);
};

// INVALID_ARGUMENT naming the field and value, or OK.
absl::Status ValidateBatchOptions(const BatchOptions& options);

// `--batch TYPE=N[:LINGER]` ("thumbs=32", "thumbs=32:100ms"): the type and
// its options (linger defaults to BatchOptions'). INVALID_ARGUMENT names the
// problem.
struct BatchSpec {
  std::string type;
  BatchOptions options;
};
absl::StatusOr<BatchSpec> ParseBatchSpec(absl::string_view text);

class BatchContext {
 public:
  // What the worker builds: `tasks` (with their payloads) and `cancel` must
  // outlive the context; task_cancels[i] and progress[i] belong to tasks[i]
  // (a progress sink may be empty). `deadline`: the batch's (the earliest of
  // its tasks').
  BatchContext(std::string type, const std::vector<TaskInfo>& tasks,
               std::vector<const Cancellation*> task_cancels, std::vector<ProgressSink> progress,
               const Cancellation* cancel, absl::Time deadline);
  // For tests of batch handlers: every task shares `cancel`, progress is
  // dropped, the deadline is the earliest of the tasks', the type the first
  // task's.
  BatchContext(const std::vector<TaskInfo>& tasks, const Cancellation* cancel);
  BatchContext(const BatchContext&) = delete;
  BatchContext& operator=(const BatchContext&) = delete;
  ~BatchContext();

  // The task type every task of the batch has.
  const std::string& type() const { return type_; }
  // 1 to max_size.
  size_t size() const { return tasks_.size(); }
  // In lease order; answers go in the same order.
  const std::vector<TaskInfo>& tasks() const { return tasks_; }
  // Task i's own context: its payload, headers, progress and cancellation.
  // i < size().
  HandlerContext& task(size_t i) const { return *contexts_.at(i); }

  // The earliest deadline of the batch's tasks (InfiniteFuture: none).
  absl::Time deadline() const { return deadline_; }

  // Progress for every task of the batch (see HandlerContext).
  void ReportProgress(double percent, absl::string_view message = "");

  // True once the whole batch should stop (see above).
  bool cancelled() const { return cancel_->cancelled(); }
  CancelReason cancel_reason() const { return cancel_->reason(); }
  const Cancellation& cancellation() const { return *cancel_; }

 private:
  const std::string type_;
  const std::vector<TaskInfo>& tasks_;
  std::vector<std::unique_ptr<HandlerContext>> contexts_;
  const Cancellation* const cancel_;
  const absl::Time deadline_;
};

// One answer per task, in the order of BatchContext::tasks().
using BatchAnswers = std::vector<absl::StatusOr<std::string>>;
using BatchHandler = std::function<BatchAnswers(BatchContext& batch)>;

// The failure every task of a batch gets when its handler returned `got`
// answers for `want` tasks: INTERNAL (retryable), reason "batch_answers".
absl::Status WrongAnswerCount(size_t got, size_t want);

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_BATCH_H_
