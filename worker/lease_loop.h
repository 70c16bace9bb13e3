// LeaseLoop: the "fetcher" for one broker. Reserves the executor's free
// slots, long-polls Lease for at most that many tasks of the worker's queues
// and types in one call, and hands what it gets to the worker. It leases
// only while the broker keeps up with the results (RoomWait).
//
// Stop() ends leasing: no new call starts, and it asks the broker to answer
// the loop's parked Lease calls at once (EndPolls), waiting for them to
// return, and joins the thread. A Lease answer that still arrives with tasks
// after Stop() began is handed over with `stopping` = true, so that the
// worker gives the tasks straight back (Release). Cancelling the calls
// instead would lose the tasks of an answer already on its way (gRPC drops
// it; the leases would expire on the broker and spend the tasks' crash
// budget), so Stop() cancels (ClientContext::TryCancel) only the calls still
// out after `end_polls_timeout`, or at once when EndPolls fails (a broker
// that cannot be reached, or one older than EndPolls).
//
// PauseForDrain() (a heartbeat answer said the broker drains) stops leasing
// from this broker; the loop looks again every `drain_recheck` (a draining
// broker answers UNAVAILABLE; a restarted one serves again).
//
// LeaseMore() is the batches' extra call (worker/batch_runner.h): up to N
// tasks of one type only, on any thread, with a short wait; Stop() ends
// those in flight too, and PauseForDrain() answers it with nothing.
//
// Thread-safe.
#ifndef CONVEYOR_WORKER_LEASE_LOOP_H_
#define CONVEYOR_WORKER_LEASE_LOOP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "absl/time/time.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "worker/executor.h"

namespace conveyor::worker {

struct LeaseLoopOptions {
  std::string worker_id;
  // For log lines.
  std::string broker;
  std::vector<std::string> queues;
  // Only tasks of these types (the handlers the worker has).
  std::vector<std::string> types;
  // Long-poll wait of each Lease call.
  absl::Duration wait = absl::Seconds(20);
  // Added to `wait` for the call's deadline.
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Backoff after a failed call: doubles from initial to max.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  absl::Duration drain_recheck = absl::Seconds(5);
  // How long Stop() waits for the broker to answer the loop's calls in
  // flight (EndPolls) before it cancels them.
  absl::Duration end_polls_timeout = absl::Seconds(2);
  // Bearer token sent with each Lease call; empty: none.
  std::string token;
};

class LeaseLoop {
 public:
  // Gets the leased tasks together with `tasks.size()` reserved slots (the
  // loop gives back the rest): it must Run() one executor job per slot it
  // uses (one per task, or one per batch of tasks) and Unreserve() the
  // others; when `stopping`, it uses none (the loop gives them back) and
  // hands the tasks back instead. The tasks live on the answer's arena until
  // the sink returns: it moves out or copies what it keeps.
  using TaskSink = std::function<void(absl::Span<v1::LeasedTask* const> tasks, bool stopping)>;
  enum class PollResult { kTasks, kEmpty, kError };
  using PollObserver = std::function<void(PollResult result)>;
  // Flow control: blocks up to `timeout` until results are delivered fast
  // enough to lease more (Reporter::WaitForRoom); false if not yet.
  using RoomWait = std::function<bool(absl::Duration timeout)>;

  LeaseLoop(std::shared_ptr<grpc::Channel> channel, Executor* executor,
            LeaseLoopOptions options, TaskSink sink, PollObserver observer = {},
            RoomWait wait_for_room = {});
  ~LeaseLoop();
  LeaseLoop(const LeaseLoop&) = delete;
  LeaseLoop& operator=(const LeaseLoop&) = delete;

  void Start();
  void Stop();
  void PauseForDrain();

  struct More {
    // Not OK: the call failed as a whole.
    absl::Status status;
    std::vector<v1::LeasedTask> tasks;
    // Stop() has begun: the caller must hand `tasks` back.
    bool stopping = false;
  };
  // One Lease call for up to `max` (1 to 1000) tasks of `type` only, from
  // the loop's queues, waiting up to `wait` (at most 60 s; 0: answer at
  // once). Uses no slots: the caller holds one already. Nothing, without a
  // call, once stopping or while paused for a draining broker. Thread-safe;
  // blocks for the call.
  More LeaseMore(const std::string& type, int max, absl::Duration wait);

 private:
  void ThreadMain();
  // Asks the broker to answer this worker's parked Lease calls until none of
  // the loop's calls is left in flight (true), or gives up after
  // end_polls_timeout or a failed EndPolls call (false).
  bool EndPolls();
  bool Idle() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return call_ == nullptr && more_calls_.empty();
  }
  // Sleeps up to `d`; false if stopping.
  bool SleepFor(absl::Duration d);

  std::unique_ptr<v1::WorkerService::Stub> stub_;
  Executor* const executor_;
  const LeaseLoopOptions options_;
  const TaskSink sink_;
  const PollObserver observer_;
  const RoomWait wait_for_room_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time paused_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The Lease call in flight, for TryCancel.
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;
  // LeaseMore calls in flight, for TryCancel.
  absl::flat_hash_set<grpc::ClientContext*> more_calls_ ABSL_GUARDED_BY(mu_);
  // The first block of each Lease answer's arena (the loop's thread only).
  const std::unique_ptr<char[]> arena_block_;
  std::thread thread_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_LEASE_LOOP_H_
