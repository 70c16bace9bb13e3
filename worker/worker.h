// The Conveyor worker SDK: link `conveyor_worker`, register handlers by task
// type, run.
//
//   conveyor::worker::WorkerOptions options;
//   options.brokers = {"127.0.0.1:7400"};
//   options.queues = {"text"};
//   conveyor::worker::Worker worker(options);
//   worker.Register("word_count", [](conveyor::worker::HandlerContext& ctx)
//                                     -> absl::StatusOr<std::string> {
//     return std::to_string(CountWords(ctx.payload()));
//   });
//   return worker.Run().ok() ? 0 : 1;  // until SIGTERM or SIGINT, then drains
//
// A handler's answer becomes a report as worker/handler.h describes: OK ->
// Complete; INVALID_ARGUMENT or FAILED_PRECONDITION -> Fail, not retried;
// RESOURCE_EXHAUSTED (best built with Throttled(retry_after)) -> a throttled
// Fail, reason "throttled": the task goes back to READY without spending an
// attempt and the broker pauses its rate key (or its queue) for retry_after
// (none: 1 s; at most 1 h); any other code -> Fail, retryable. Past its
// deadline an attempt is cancelled (cancelled() turns true) and reported as a
// retryable failure with reason "timeout".
//
// Batch handlers (worker/batch.h) take up to N tasks of their type at once
// and answer one outcome per task, by the same convention:
//
//   worker.RegisterBatch("embed", EmbedBatch,
//                        {.max_size = 64, .linger = absl::Milliseconds(20)});
//
// A batch takes one executor slot; it forms from the tasks of its type that
// a Lease answer brings, topped up by Lease calls for that type alone
// (waiting at most `linger`); every task keeps its own lease, heartbeat,
// progress, cancellation and report.
//
// How it works (each part a small class with Start/Stop, in worker/):
//   per broker   LeaseLoop    long-polls Lease for as many tasks as there are
//                             free slots, in one call
//                Heartbeater  one batched Heartbeat per interval for the
//                             broker's running attempts: extends leases,
//                             carries progress, delivers cancellations
//                Reporter     batches Complete / Fail / Release, retries with
//                             backoff until the lease would have expired
//   shared       Executor     the bounded pool (`concurrency` threads)
//                RateLimiter  local token buckets per type (a task waits for
//                             a token holding its slot; its lease is
//                             heartbeated meanwhile; a batch takes one token
//                             per task)
//                RunBatch     fills and runs one batch in one slot
//                             (worker/batch_runner.h)
//                DeadlineTimer  cancels attempts at their deadline
//                WorkerMetrics  Prometheus metrics on `metrics_addr`
//
// Shutdown (drain) stops the parts in this order:
//   1. lease loops: no new leases (a parked Lease is cancelled at once);
//   2. running attempts get up to `grace` to finish and report;
//   3. the rest are cancelled (reason kShutdown) and handed back with
//      Release, which spends neither an attempt nor the crash budget;
//      handlers get `cancel_wait` to return (an external command gets
//      SIGTERM, then SIGKILL); one that still has not returned is abandoned
//      (released on its behalf, its later result ignored);
//   4. heartbeaters (they keep leases alive through steps 2 and 3);
//   5. reporters, after flushing (at most `report_flush_timeout`);
//   6. the deadline timer, the executor and the metrics endpoint.
//
// Thread-safety: Register before Start, from one thread. Start, Shutdown and
// Run are for the owning thread; handlers run on the executor's threads.
#ifndef CONVEYOR_WORKER_WORKER_H_
#define CONVEYOR_WORKER_WORKER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/security.h"
#include "worker/batch.h"
#include "worker/handler.h"
#include "worker/rate_limiter.h"

namespace conveyor::worker {

struct WorkerOptions {
  // Brokers to serve (host:port); each gets its own lease loop, heartbeater
  // and reporter, and all share the pool.
  std::vector<std::string> brokers = {"127.0.0.1:7400"};
  // Queues to lease from (1 to 64), on every broker.
  std::vector<std::string> queues;
  // Attempts running at once. 0: the number of cores.
  int concurrency = 0;
  // Tasks leased ahead beyond the free slots (0 to 10,000), waiting in the
  // pool for a thread; see worker/executor.h. Their leases are heartbeated,
  // their attempt timeouts count from the lease, and a drain hands back those
  // not yet started.
  int prefetch = 0;
  // Shown by the broker as the lease holder. Empty: "<hostname>:<pid>".
  std::string worker_id;
  // Heartbeat pace. Zero: a third of the lease time seen in Lease answers,
  // within [100 ms, 10 s].
  absl::Duration heartbeat_interval = absl::ZeroDuration();
  // Long-poll wait of each Lease call. Zero: 20 s with one broker; 2 s with
  // several (a parked poll holds free slots another broker could use).
  absl::Duration lease_wait = absl::ZeroDuration();
  // Deadline of each Heartbeat, Complete, Fail and Release call (Lease:
  // its wait plus this).
  absl::Duration rpc_timeout = absl::Seconds(5);
  // Drain: how long running attempts may still finish.
  absl::Duration grace = absl::Seconds(25);
  // Drain: after cancelling, how long handlers get to return.
  absl::Duration cancel_wait = absl::Seconds(10);
  // Reports: the most kept per broker (the oldest are dropped past it), the
  // most per call, how long the first waits for company while the worker
  // holds other tasks (an idle worker's goes at once; reports that arrive
  // while a call is in flight go together in the next one), and how long a
  // drain spends delivering what is left.
  size_t max_pending_reports = 10'000;
  size_t report_batch = 1000;
  absl::Duration report_flush_delay = absl::Milliseconds(1);
  absl::Duration report_flush_timeout = absl::Seconds(5);
  // Local rate limits per task type (see worker/rate_limiter.h).
  std::vector<RateLimit> rate_limits;
  // host:port of the Prometheus /metrics endpoint (port 0 picks one); empty:
  // no endpoint.
  std::string metrics_addr;
  // TLS and the bearer token for every broker (common/security.h).
  ClientSecurity security;
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  // Shuts down first if still running.
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs `handler` for tasks of `type` (the worker only leases types it has
  // a handler for). Before Start only. INVALID_ARGUMENT for an empty type or
  // handler; ALREADY_EXISTS if `type` has one; FAILED_PRECONDITION once
  // started.
  absl::Status Register(std::string type, Handler handler);

  // Runs `handler` for tasks of `type` in batches of up to
  // `options.max_size` (worker/batch.h). Before Start only. INVALID_ARGUMENT
  // for an empty type or handler or bad options (the message names the
  // field); ALREADY_EXISTS if `type` has a handler (single or batch);
  // FAILED_PRECONDITION once started.
  absl::Status RegisterBatch(std::string type, BatchHandler handler, BatchOptions options = {});

  // Starts serving. INVALID_ARGUMENT for bad options (no queue, no broker,
  // no handler; the message names the option); UNAVAILABLE if the metrics
  // endpoint cannot bind; FAILED_PRECONDITION if already started.
  absl::Status Start();

  // Drains as described above and returns when done (bounded by grace +
  // cancel_wait + report_flush_timeout and a few call deadlines). Safe to
  // call more than once, and before Start (does nothing).
  void Shutdown();

  // For programs that are only a worker: blocks SIGTERM and SIGINT (call it
  // before starting other threads, so none of them takes the signals),
  // ignores SIGPIPE, starts, waits for SIGTERM or SIGINT, shuts down. A
  // second signal during the drain ends the process at once (_exit(1)).
  // Returns Start's error, or OK after the drain.
  absl::Status Run();

  const std::string& worker_id() const;
  // The bound metrics port once started; 0 without an endpoint.
  int metrics_port() const;
  // Registered types (single and batch), sorted.
  std::vector<std::string> types() const;
  // The types registered with RegisterBatch, sorted.
  std::vector<std::string> batch_types() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace conveyor::worker

#endif  // CONVEYOR_WORKER_WORKER_H_
