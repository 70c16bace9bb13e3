// conveyor-bench: the peers' fixed workload (../shared/peers/WORKLOAD.md)
// against a running conveyord, so Conveyor and the peers are measured the
// same way and tabulated by the same ../shared/peers/lib/stats.py.
//
//   conveyor-bench W1u|W1b|W2|W3|MEM --addr=127.0.0.1:PORT [flags]
//
// bench/run_bench.sh starts a fresh broker per run and calls this; see
// bench/README.md ("Throughput and latency vs peers").
//
// Workloads (N = --n, payload 64 bytes: the 20-digit CLOCK_MONOTONIC ns taken
// just before the submit, padded with '0' as beanstalkd's bs.c does):
//   W1u  one producer, one Submit at a time, each awaited. tasks/s = N / elapsed.
//   W1b  the same with SubmitBatch of --batch (100) tasks, each batch awaited.
//   W2   N tasks pre-enqueued with SubmitBatch of --fill-batch (1000), not
//        timed; then --workers real `conveyor-worker` processes (built-in
//        `noop` handler, --conc slots in all, default 1 x 8) drain them,
//        run with --worker-args (default for W2: "--prefetch=1000
//        --log-level=warning": tasks leased ahead, no log line per task;
//        W3 keeps the worker's defaults, its "task started" lines are read).
//        tasks/s = N / (last completion - first dequeue), both broker times:
//        the latest Task.finished_at (the broker applied the Complete) and
//        the earliest Task.started_at (the lease grant), read with ListTasks
//        after the run. With --depth=D (not a peer workload), D more tasks
//        are enqueued behind the N (not timed) and stay queued while the
//        workers drain: the drain rate with D tasks in the queue. tasks/s is
//        then taken over the first N tasks to finish (the workers go on into
//        the D until they are stopped).
//   W3   the workers wait idle (a Lease parked on the queue); one producer
//        submits at --rate/s for --secs s on an open-loop schedule
//        (clock_nanosleep to each due time), one Submit at a time.
//        submit -> start: from the submit timestamp to the worker's "task
//        started" log line (written just before the handler is entered: the
//        worker holds the task; JSON `ts` in microseconds). submit -> done:
//        to Task.finished_at. Both are realtime clocks; each task's submit is
//        taken on CLOCK_MONOTONIC and CLOCK_REALTIME back to back, and start
//        and done are moved onto the monotonic clock by that task's offset.
//        Raw "submit_ns start_ns done_ns" lines go to --raw (stats.py lat).
//        Also printed: lease_* (submit -> Task.started_at, the broker's lease
//        grant) and ack_* (the producer's Submit round trip).
//   PING (not a peer workload) --n (20,000) awaited grpc.health.v1 Check
//        calls: the cost of one unary call on this machine, the floor of
//        any design that spends one call per task.
//   MEM  --n (1,000,000) tasks enqueued with SubmitBatch of --fill-batch,
//        nothing consuming: bytes per task = broker RSS growth / N (RSS read
//        0.5 s before and 2 s after the fill, as run.sh does), peak RSS
//        (VmHWM) and the size of --data-dir.
//
// Clients (--client):
//   lib   conveyor::client::Client, what a producer normally uses: it puts a
//         random 32-hex-digit idempotency key on every task (the broker
//         indexes it and journals it) and wraps each call in its retry loop.
//   stub  the generated TaskService stub, the same requests without the key:
//         the broker's cost of a bare submit. Everything else (queue setup,
//         polling, reading the tasks back) uses the library in both modes.
//
// Awaited single submits (W1u, W3) go through (--submit):
//   call    one Submit call per task (default);
//   stream  one TaskService.SubmitStream call for the run, each task sent
//           and its answer awaited before the next (lib: SubmitStream with
//           window 1; stub: the bare bidi stream). With --window=W > 1 (lib
//           only, W1u only; not a peer workload) the producer keeps up to W
//           tasks sent ahead of their answers, each answer still checked.
//
// Every workload is bounded: --timeout (default 300 s) ends the program
// (exit 3, workers SIGKILLed); waits inside are bounded too.
//
// Output, one line on stdout, like the peers' run.sh:
//   RESULT <label> <workload> key=value ... srv_cpu_s=... [foreign fields
//   are added by run_bench.sh]
// srv_cpu_s = broker CPU seconds (utime + stime from /proc/<--broker-pid>)
// during the timed part; wrk_cpu_s the same for the workers (W2, W3);
// cli_cpu_s this program's own.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "common/flags.h"
#include "common/grpc_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

#ifndef CONVEYOR_WORKER_PATH
#define CONVEYOR_WORKER_PATH "conveyor-worker"
#endif

namespace conveyor::bench {
namespace {

namespace v1 = ::conveyor::v1;

constexpr size_t kPayloadBytes = 64;

// ───────────────────────────── clocks and /proc ─────────────────────────────

int64_t ClockNs(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
int64_t MonoNs() { return ClockNs(CLOCK_MONOTONIC); }
int64_t RealNs() { return ClockNs(CLOCK_REALTIME); }

// The payload of WORKLOAD.md: 20-digit submit timestamp, padded to 64 bytes.
std::string Payload(int64_t mono_ns) {
  std::string p = absl::StrFormat("%020d", mono_ns);
  p.resize(kPayloadBytes, '0');
  return p;
}

// utime + stime of `pid` in seconds; -1 if unknown.
double CpuSeconds(pid_t pid) {
  if (pid <= 0) return -1;
  const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  // Fields after "pid (comm)": state is field 3; utime 14, stime 15.
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
  if (f.size() < 13) return -1;
  uint64_t ut = 0, st = 0;
  if (!absl::SimpleAtoi(f[11], &ut) || !absl::SimpleAtoi(f[12], &st)) return -1;
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// VmRSS / VmHWM of `pid` in kB (0 if unknown).
uint64_t StatusKb(pid_t pid, absl::string_view field) {
  const std::string text = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/status"));
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, field) || !absl::ConsumePrefix(&line, ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    uint64_t kb = 0;
    if (absl::SimpleAtoi(line, &kb)) return kb;
  }
  return 0;
}

// Nearest-rank percentile of ascending `v` (as stats.py computes it).
double Pct(const std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::max<size_t>(rank, 1) - 1];
}

// ───────────────────────────── the run's bounds ─────────────────────────────

// Worker processes to kill if the watchdog fires.
std::mutex g_children_mu;
std::vector<pid_t> g_children;

void Watchdog(absl::Duration limit) {
  std::thread([limit] {
    absl::SleepFor(limit);
    std::fprintf(stderr, "conveyor-bench: --timeout of %s passed; giving up\n",
                 absl::FormatDuration(limit).c_str());
    {
      std::lock_guard<std::mutex> lock(g_children_mu);
      for (pid_t p : g_children) ::kill(p, SIGKILL);
    }
    std::_Exit(3);
  }).detach();
}

// ───────────────────────────── configuration ─────────────────────────────

struct Config {
  std::string workload;
  std::string addr;
  std::string label = "conveyor";
  std::string queue = "bench";
  std::string client = "lib";
  std::string submit = "call";
  int window = 1;
  pid_t broker_pid = 0;
  int64_t n = 0;  // 0: the workload's default
  int batch = 100;
  int fill_batch = 1000;
  int64_t depth = 0;  // W2: tasks queued behind the N
  int conc = 8;
  int workers = 1;
  std::string worker = CONVEYOR_WORKER_PATH;
  std::string worker_args;
  std::string work_dir = "/tmp";
  int rate = 500;
  int secs = 10;
  std::string raw;
  std::string data_dir;
  double timeout_s = 300;
};

// ───────────────────────────── producers ─────────────────────────────

absl::Status FromItemStatus(const v1::ItemStatus& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

// Submits through the library or the bare stub (see --client).
class Producer {
 public:
  Producer(const Config& cfg, client::Client* lib) : cfg_(cfg), lib_(lib) {
    if (cfg.client == "stub") {
      stub_ = v1::TaskService::NewStub(
          grpc::CreateChannel(cfg.addr, grpc::InsecureChannelCredentials()));
    }
    if (cfg.submit == "stream" && stub_ == nullptr) {
      lib_stream_ = lib_->OpenSubmitStream(static_cast<size_t>(cfg.window));
    }
    if (cfg.submit == "stream" && stub_ != nullptr) {
      stub_stream_ = stub_->SubmitStream(&stream_context_);
    }
  }

  ~Producer() {
    if (stub_stream_ != nullptr) {
      stub_stream_->WritesDone();
      stub_stream_->Finish();
    }
  }

  v1::TaskSpec Spec(int64_t mono_ns) const {
    v1::TaskSpec spec;
    spec.set_queue(cfg_.queue);
    spec.set_type("noop");
    spec.set_payload(Payload(mono_ns));
    return spec;
  }

  // One awaited Submit; the task id.
  absl::StatusOr<std::string> Submit(v1::TaskSpec spec) {
    if (lib_stream_ != nullptr) {
      absl::StatusOr<v1::SubmitResponse> r = lib_stream_->Submit(std::move(spec));
      if (!r.ok()) return r.status();
      return r->task().id();
    }
    if (stub_stream_ != nullptr) {
      v1::SubmitRequest request;
      *request.mutable_task() = std::move(spec);
      v1::SubmitBatchResponse::Item item;
      if (!stub_stream_->Write(request) || !stub_stream_->Read(&item)) {
        return absl::UnavailableError("the submit stream broke");
      }
      if (absl::Status s = FromItemStatus(item.status()); !s.ok()) return s;
      return item.task().id();
    }
    if (stub_ == nullptr) {
      absl::StatusOr<v1::SubmitResponse> r = lib_->Submit(std::move(spec));
      if (!r.ok()) return r.status();
      return r->task().id();
    }
    v1::SubmitRequest request;
    *request.mutable_task() = std::move(spec);
    v1::SubmitResponse response;
    grpc::ClientContext context;
    context.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
    const grpc::Status s = stub_->Submit(&context, request, &response);
    if (!s.ok()) return FromGrpcStatus(s);
    return response.task().id();
  }

  // `n` tasks on the library's SubmitStream, up to --window ahead of their
  // answers; OK only if every one was accepted.
  absl::Status StreamAhead(int64_t n) {
    const size_t window = static_cast<size_t>(cfg_.window);
    for (int64_t i = 0; i < n || lib_stream_->unanswered() > 0;) {
      if (i < n && lib_stream_->unanswered() < window) {
        if (absl::Status s = lib_stream_->Send(Spec(MonoNs())); !s.ok()) return s;
        ++i;
        continue;
      }
      absl::StatusOr<v1::SubmitResponse> r = lib_stream_->Next();
      if (!r.ok()) return r.status();
    }
    return absl::OkStatus();
  }

  // One awaited SubmitBatch (answered with ids only: nothing else is kept);
  // OK only if every item was accepted.
  absl::Status SubmitBatch(std::vector<v1::TaskSpec> specs) {
    v1::SubmitBatchResponse response;
    if (stub_ == nullptr) {
      absl::StatusOr<v1::SubmitBatchResponse> r =
          lib_->SubmitBatch(std::move(specs), /*ids_only=*/true);
      if (!r.ok()) return r.status();
      response = std::move(*r);
    } else {
      v1::SubmitBatchRequest request;
      request.set_ids_only(true);
      for (v1::TaskSpec& s : specs) *request.add_tasks() = std::move(s);
      grpc::ClientContext context;
      context.set_deadline(ToChrono(absl::Now() + absl::Seconds(30)));
      const grpc::Status s = stub_->SubmitBatch(&context, request, &response);
      if (!s.ok()) return FromGrpcStatus(s);
    }
    for (const auto& item : response.items()) {
      if (absl::Status s = FromItemStatus(item.status()); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("item refused: ", s.message()));
      }
    }
    return absl::OkStatus();
  }

  // `total` tasks in batches of `batch` (untimed fills and W1b).
  absl::Status Fill(int64_t total, int batch) {
    for (int64_t i = 0; i < total; i += batch) {
      std::vector<v1::TaskSpec> specs;
      const int64_t b = std::min<int64_t>(batch, total - i);
      specs.reserve(b);
      for (int64_t j = 0; j < b; ++j) specs.push_back(Spec(MonoNs()));
      if (absl::Status s = SubmitBatch(std::move(specs)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  const Config& cfg_;
  client::Client* lib_;
  std::unique_ptr<v1::TaskService::Stub> stub_;
  std::unique_ptr<client::SubmitStream> lib_stream_;
  grpc::ClientContext stream_context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SubmitRequest, v1::SubmitBatchResponse::Item>>
      stub_stream_;
};

// ───────────────────────────── broker helpers ─────────────────────────────

// The queue, with an explicit capacity (and enough retained results for
// reading every task back).
absl::Status CreateQueue(client::Client& c, const Config& cfg, uint64_t capacity) {
  v1::CreateQueueRequest create;
  create.mutable_config()->set_name(cfg.queue);
  create.mutable_config()->set_capacity(capacity);
  create.mutable_config()->set_retained(capacity);
  absl::StatusOr<v1::Queue> q = c.CreateQueue(create);
  return q.status();
}

// Polls the queue until `pred(stats)` or `limit` passes.
template <typename Pred>
absl::StatusOr<v1::QueueStats> WaitForQueue(client::Client& c, const Config& cfg, Pred pred,
                                            absl::Duration limit, absl::Duration every) {
  const absl::Time deadline = absl::Now() + limit;
  absl::StatusOr<v1::Queue> q;
  while (true) {
    q = c.GetQueue(cfg.queue);
    if (q.ok() && pred(q->stats())) return q->stats();
    if (absl::Now() > deadline) break;
    absl::SleepFor(every);
  }
  if (!q.ok()) return q.status();
  return absl::DeadlineExceededError(
      absl::StrCat("queue ", cfg.queue, " did not get there within ", absl::FormatDuration(limit),
                   ": ready=", q->stats().ready(), " running=", q->stats().running(),
                   " succeeded=", q->stats().succeeded()));
}

// Every SUCCEEDED task of the queue (ListTasks pages of 1000).
absl::StatusOr<std::vector<v1::Task>> SucceededTasks(client::Client& c, const Config& cfg) {
  std::vector<v1::Task> out;
  v1::ListTasksRequest request;
  request.set_queue(cfg.queue);
  request.set_state(v1::TASK_STATE_SUCCEEDED);
  request.set_page_size(1000);
  for (int page = 0; page < 100'000; ++page) {
    absl::StatusOr<v1::ListTasksResponse> r = c.ListTasks(request);
    if (!r.ok()) return r.status();
    for (v1::Task& t : *r->mutable_tasks()) out.push_back(std::move(t));
    if (r->next_page_token().empty()) return out;
    request.set_page_token(r->next_page_token());
  }
  return absl::InternalError("ListTasks did not end");
}

// ───────────────────────────── workers ─────────────────────────────

// `cfg.workers` conveyor-worker processes with `cfg.conc` slots among them,
// serving `cfg.queue` with the built-in noop handler; logs in work_dir.
class WorkerPool {
 public:
  explicit WorkerPool(const Config& cfg) : cfg_(cfg) {}
  ~WorkerPool() { Stop(); }

  bool Start() {
    for (int w = 0; w < cfg_.workers; ++w) {
      const int slots = cfg_.conc / cfg_.workers + (w < cfg_.conc % cfg_.workers ? 1 : 0);
      std::vector<std::string> argv = {cfg_.worker, absl::StrCat("--broker=", cfg_.addr),
                                       absl::StrCat("--queue=", cfg_.queue),
                                       absl::StrCat("--concurrency=", slots), "--metrics-addr=",
                                       absl::StrCat("--worker-id=bench-", w)};
      for (absl::string_view a : absl::StrSplit(cfg_.worker_args, ' ', absl::SkipEmpty())) {
        argv.emplace_back(a);
      }
      logs_.push_back(fs::path(cfg_.work_dir) / absl::StrCat("worker-", w, ".log"));
      std::error_code ec;
      fs::remove(logs_.back(), ec);
      children_.push_back(std::make_unique<Child>());
      if (!children_.back()->Start(argv, logs_.back())) return false;
      std::lock_guard<std::mutex> lock(g_children_mu);
      g_children.push_back(children_.back()->pid());
    }
    return true;
  }

  double CpuSeconds() const {
    double s = 0;
    for (const auto& c : children_) s += std::max(0.0, bench::CpuSeconds(c->pid()));
    return s;
  }

  std::string Pids() const {
    std::string out;
    for (const auto& c : children_) absl::StrAppend(&out, out.empty() ? "" : ",", c->pid());
    return out;
  }

  // SIGTERM (the worker drains), then SIGKILL after 30 s. False if any
  // worker did not exit 0.
  bool Stop() {
    bool ok = true;
    for (auto& c : children_) c->Signal(SIGTERM);
    for (auto& c : children_) {
      const int rc = c->Wait(absl::Seconds(30));
      if (rc != 0) {
        std::fprintf(stderr, "worker %d exited %d\n", c->pid(), rc);
        c->Kill();
        ok = false;
      }
    }
    children_.clear();
    return ok;
  }

  // task id -> realtime ns of its "task started" line, from every log.
  absl::flat_hash_map<std::string, int64_t> StartTimes() const {
    absl::flat_hash_map<std::string, int64_t> out;
    for (const fs::path& log : logs_) {
      const std::string text = ReadFileOrEmpty(log);
      for (absl::string_view line : absl::StrSplit(text, '\n')) {
        if (!absl::StrContains(line, "\"msg\":\"task started\"")) continue;
        const std::string ts = Field(line, "ts"), id = Field(line, "task_id");
        absl::Time t;
        std::string err;
        if (id.empty() || !absl::ParseTime(absl::RFC3339_full, ts, &t, &err)) continue;
        out.emplace(id, absl::ToUnixNanos(t));
      }
    }
    return out;
  }

 private:
  // The string value of "key":"..." in a JSON log line (no escapes expected
  // in the fields read here).
  static std::string Field(absl::string_view line, absl::string_view key) {
    const std::string needle = absl::StrCat("\"", key, "\":\"");
    const size_t at = line.find(needle);
    if (at == absl::string_view::npos) return "";
    const size_t from = at + needle.size();
    const size_t to = line.find('"', from);
    if (to == absl::string_view::npos) return "";
    return std::string(line.substr(from, to - from));
  }

  const Config& cfg_;
  std::vector<std::unique_ptr<Child>> children_;
  std::vector<fs::path> logs_;
};

// ───────────────────────────── the workloads ─────────────────────────────

// CPU seconds of the broker and of this program since Start().
class CpuMeter {
 public:
  explicit CpuMeter(pid_t broker) : broker_(broker) { Start(); }
  void Start() {
    srv0_ = CpuSeconds(broker_);
    cli0_ = SelfCpuSeconds();
  }
  void Stop() {
    srv_ = CpuSeconds(broker_) - srv0_;
    cli_ = SelfCpuSeconds() - cli0_;
  }
  double srv() const { return srv_; }
  double cli() const { return cli_; }

 private:
  const pid_t broker_;
  double srv0_ = 0, cli0_ = 0, srv_ = 0, cli_ = 0;
};

// "RESULT label WL fields srv_cpu_s=... cli_cpu_s=... client=..."
void Say(const Config& cfg, const std::string& fields, const CpuMeter& cpu) {
  std::string line = absl::StrCat("RESULT ", cfg.label, " ", cfg.workload, " ", fields);
  if (cfg.broker_pid > 0) absl::StrAppendFormat(&line, " srv_cpu_s=%.2f", cpu.srv());
  absl::StrAppendFormat(&line, " cli_cpu_s=%.2f client=%s", cpu.cli(), cfg.client);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// For bench/profile_bench.sh: stop sampling here (reading the tasks back
// afterwards is not part of the workload).
void TimedPartOver() {
  std::fprintf(stderr, "conveyor-bench: timed part over\n");
  std::fflush(stderr);
}

int Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "conveyor-bench: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

int RunW1(const Config& cfg, client::Client& c, Producer& p, bool batched) {
  const int64_t n = cfg.n > 0 ? cfg.n : 100'000;
  if (absl::Status s = CreateQueue(c, cfg, n + 1000); !s.ok()) return Fail("CreateQueue", s);
  const int batch = batched ? cfg.batch : 1;
  CpuMeter cpu(cfg.broker_pid);
  const int64_t t0 = MonoNs();
  if (batched) {
    if (absl::Status s = p.Fill(n, batch); !s.ok()) return Fail("SubmitBatch", s);
  } else if (cfg.window > 1) {
    if (absl::Status s = p.StreamAhead(n); !s.ok()) return Fail("SubmitStream", s);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      absl::StatusOr<std::string> id = p.Submit(p.Spec(MonoNs()));
      if (!id.ok()) return Fail("Submit", id.status());
    }
  }
  const double secs = static_cast<double>(MonoNs() - t0) / 1e9;
  cpu.Stop();
  Say(cfg,
      absl::StrFormat("tasks_per_s=%.0f n=%d batch=%d window=%d secs=%.3f", n / secs, n, batch,
                      cfg.window, secs),
      cpu);
  return 0;
}

// Not a peer workload: N awaited unary calls that do no work in the broker
// (grpc.health.v1 Check), the floor of any one-call-per-task design here.
int RunPing(const Config& cfg, client::Client& c) {
  const int64_t n = cfg.n > 0 ? cfg.n : 20'000;
  CpuMeter cpu(cfg.broker_pid);
  std::vector<double> us;
  us.reserve(n);
  const int64_t t0 = MonoNs();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = MonoNs();
    absl::StatusOr<client::ServingStatus> h = c.Health();
    if (!h.ok()) return Fail("Health", h.status());
    us.push_back(static_cast<double>(MonoNs() - a) / 1e3);
  }
  const double secs = static_cast<double>(MonoNs() - t0) / 1e9;
  cpu.Stop();
  std::sort(us.begin(), us.end());
  Say(cfg,
      absl::StrFormat("calls_per_s=%.0f rtt_p50_us=%.0f rtt_p99_us=%.0f n=%d secs=%.3f", n / secs,
                      Pct(us, .5), Pct(us, .99), n, secs),
      cpu);
  return 0;
}

int RunW2(const Config& cfg, client::Client& c, Producer& p) {
  const int64_t n = cfg.n > 0 ? cfg.n : 100'000;
  if (absl::Status s = CreateQueue(c, cfg, n + cfg.depth + 1000); !s.ok()) {
    return Fail("CreateQueue", s);
  }
  if (absl::Status s = p.Fill(n, cfg.fill_batch); !s.ok()) return Fail("fill", s);
  if (absl::Status s = p.Fill(cfg.depth, cfg.fill_batch); !s.ok()) return Fail("fill depth", s);
  CpuMeter cpu(cfg.broker_pid);
  WorkerPool pool(cfg);
  if (!pool.Start()) return 1;
  std::fprintf(stderr, "conveyor-bench: W2 workers pid=%s\n", pool.Pids().c_str());
  absl::StatusOr<v1::QueueStats> st = WaitForQueue(
      c, cfg, [n](const v1::QueueStats& s) { return static_cast<int64_t>(s.succeeded()) >= n; },
      absl::Seconds(cfg.timeout_s), absl::Milliseconds(20));
  const double wrk_cpu = pool.CpuSeconds();
  cpu.Stop();
  TimedPartOver();
  pool.Stop();
  if (!st.ok()) return Fail("drain", st.status());
  absl::StatusOr<std::vector<v1::Task>> tasks = SucceededTasks(c, cfg);
  if (!tasks.ok()) return Fail("ListTasks", tasks.status());
  // The first n to finish: with --depth the workers went on until stopped.
  const auto finished = [](const v1::Task& t) { return FromProto(t.finished_at()); };
  if (static_cast<int64_t>(tasks->size()) > n) {
    std::nth_element(
        tasks->begin(), tasks->begin() + (n - 1), tasks->end(),
        [&](const v1::Task& a, const v1::Task& b) { return finished(a) < finished(b); });
    tasks->resize(n);
  }
  int64_t first = INT64_MAX, last = 0;
  for (const v1::Task& t : *tasks) {
    first = std::min(first, absl::ToUnixNanos(FromProto(t.started_at())));
    last = std::max(last, absl::ToUnixNanos(finished(t)));
  }
  const auto got = static_cast<int64_t>(tasks->size());
  const double secs = static_cast<double>(last - first) / 1e9;
  Say(cfg,
      absl::StrFormat("tasks_per_s=%.0f n=%d depth=%d conc=%d workers=%d secs=%.3f wrk_cpu_s=%.2f",
                      got / secs, got, cfg.depth, cfg.conc, cfg.workers, secs, wrk_cpu),
      cpu);
  return got == n ? 0 : 1;
}

struct Submitted {
  std::string id;
  int64_t mono_ns = 0;   // just before the submit (also in the payload)
  int64_t real_ns = 0;   // right after mono_ns
  int64_t acked_ns = 0;  // monotonic, when Submit returned
};

// Paced producer: `rate`/s for `secs` s, one awaited Submit at a time.
absl::StatusOr<std::vector<Submitted>> PacedSubmits(const Config& cfg, Producer& p) {
  const int64_t n = int64_t{cfg.rate} * cfg.secs;
  const int64_t period = 1'000'000'000 / cfg.rate;
  std::vector<Submitted> out;
  out.reserve(n);
  const int64_t t0 = MonoNs();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t due = t0 + i * period;
    struct timespec ts = {static_cast<time_t>(due / 1'000'000'000),
                          static_cast<long>(due % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
    Submitted s;
    s.mono_ns = MonoNs();
    s.real_ns = RealNs();
    absl::StatusOr<std::string> id = p.Submit(p.Spec(s.mono_ns));
    if (!id.ok()) return id.status();
    s.acked_ns = MonoNs();
    s.id = std::move(*id);
    out.push_back(std::move(s));
  }
  return out;
}

std::string Percentiles(const char* name, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return absl::StrFormat("%s_p50_us=%.0f %s_p99_us=%.0f %s_max_us=%.0f", name, Pct(v, .5), name,
                         Pct(v, .99), name, v.empty() ? 0.0 : v.back());
}

int RunW3(const Config& cfg, client::Client& c, Producer& p) {
  const int64_t n = int64_t{cfg.rate} * cfg.secs;
  if (absl::Status s = CreateQueue(c, cfg, n + 1000); !s.ok()) return Fail("CreateQueue", s);
  WorkerPool pool(cfg);
  if (!pool.Start()) return 1;
  // Idle and waiting: a Lease parked on the queue, then 200 ms more (bs.c).
  absl::StatusOr<v1::QueueStats> idle = WaitForQueue(
      c, cfg, [](const v1::QueueStats& s) { return s.waiting_workers() >= 1; }, absl::Seconds(30),
      absl::Milliseconds(10));
  if (!idle.ok()) return Fail("workers idle", idle.status());
  absl::SleepFor(absl::Milliseconds(200));
  CpuMeter cpu(cfg.broker_pid);
  const double wrk0 = pool.CpuSeconds();
  absl::StatusOr<std::vector<Submitted>> subs = PacedSubmits(cfg, p);
  if (!subs.ok()) return Fail("Submit", subs.status());
  absl::StatusOr<v1::QueueStats> st = WaitForQueue(
      c, cfg, [n](const v1::QueueStats& s) { return static_cast<int64_t>(s.succeeded()) >= n; },
      absl::Seconds(60), absl::Milliseconds(20));
  cpu.Stop();
  const double wrk_cpu = pool.CpuSeconds() - wrk0;
  TimedPartOver();
  pool.Stop();
  if (!st.ok()) return Fail("completions", st.status());
  absl::StatusOr<std::vector<v1::Task>> tasks = SucceededTasks(c, cfg);
  if (!tasks.ok()) return Fail("ListTasks", tasks.status());
  const absl::flat_hash_map<std::string, int64_t> starts = pool.StartTimes();
  absl::flat_hash_map<std::string, const v1::Task*> by_id;
  for (const v1::Task& t : *tasks) by_id.emplace(t.id(), &t);

  std::vector<double> start_us, done_us, lease_us, ack_us;
  FILE* raw = cfg.raw.empty() ? nullptr : std::fopen(cfg.raw.c_str(), "w");
  int64_t first = INT64_MAX, last = 0;
  for (const Submitted& s : *subs) {
    auto t = by_id.find(s.id);
    auto st_it = starts.find(s.id);
    if (t == by_id.end() || st_it == starts.end()) continue;
    // Realtime -> this task's monotonic clock.
    const int64_t offset = s.real_ns - s.mono_ns;
    const int64_t start = st_it->second - offset;
    const int64_t done = absl::ToUnixNanos(FromProto(t->second->finished_at())) - offset;
    const int64_t lease = absl::ToUnixNanos(FromProto(t->second->started_at())) - offset;
    start_us.push_back(static_cast<double>(start - s.mono_ns) / 1e3);
    done_us.push_back(static_cast<double>(done - s.mono_ns) / 1e3);
    lease_us.push_back(static_cast<double>(lease - s.mono_ns) / 1e3);
    ack_us.push_back(static_cast<double>(s.acked_ns - s.mono_ns) / 1e3);
    first = std::min(first, s.mono_ns);
    last = std::max(last, s.mono_ns);
    if (raw != nullptr) std::fprintf(raw, "%ld %ld %ld\n", s.mono_ns, start, done);
  }
  if (raw != nullptr) std::fclose(raw);
  const size_t matched = start_us.size();
  const double span = static_cast<double>(last - first) / 1e9;
  Say(cfg,
      absl::StrCat(Percentiles("start", start_us), " ", Percentiles("done", done_us),
                   absl::StrFormat(" n=%d submit_rate=%.0f ", matched,
                                   span > 0 ? static_cast<double>(matched) / span : 0.0),
                   Percentiles("lease", lease_us), " ", Percentiles("ack", ack_us),
                   absl::StrFormat(" wrk_cpu_s=%.2f", wrk_cpu)),
      cpu);
  if (static_cast<int64_t>(matched) != n) {
    std::fprintf(stderr, "conveyor-bench: only %zu of %ld tasks have a start and a finish\n",
                 matched, n);
    return 1;
  }
  return 0;
}

int RunMem(const Config& cfg, client::Client& c, Producer& p) {
  const int64_t n = cfg.n > 0 ? cfg.n : 1'000'000;
  if (cfg.broker_pid <= 0) {
    std::fprintf(stderr, "MEM needs --broker-pid\n");
    return 64;
  }
  if (absl::Status s = CreateQueue(c, cfg, n + 1000); !s.ok()) return Fail("CreateQueue", s);
  absl::SleepFor(absl::Milliseconds(500));
  CpuMeter cpu(cfg.broker_pid);
  const uint64_t rss0 = StatusKb(cfg.broker_pid, "VmRSS");
  const int64_t t0 = MonoNs();
  if (absl::Status s = p.Fill(n, cfg.fill_batch); !s.ok()) return Fail("fill", s);
  const double fill_secs = static_cast<double>(MonoNs() - t0) / 1e9;
  cpu.Stop();
  absl::SleepFor(absl::Seconds(2));
  const uint64_t rss1 = StatusKb(cfg.broker_pid, "VmRSS");
  const uint64_t hwm = StatusKb(cfg.broker_pid, "VmHWM");
  uint64_t disk = 0;
  if (!cfg.data_dir.empty()) disk = SizeOf(cfg.data_dir).allocated;
  Say(cfg,
      absl::StrFormat("bytes_per_task=%d hwm_mb=%d disk_mb=%d rss0_kb=%d rss1_kb=%d n=%d "
                      "fill_tasks_per_s=%.0f",
                      static_cast<int64_t>((rss1 - rss0) * 1024 / n), hwm / 1024, disk >> 20, rss0,
                      rss1, n, n / fill_secs),
      cpu);
  return 0;
}

// ───────────────────────────── main ─────────────────────────────

constexpr char kUsage[] =
    "usage: conveyor-bench W1u|W1b|W2|W3|MEM|PING --addr=HOST:PORT [--broker-pid=PID]\n"
    "  [--label=conveyor] [--client=lib|stub] [--submit=call|stream] [--queue=bench]\n"
    "  [--window=1] [--n=N] [--batch=100]\n"
    "  [--fill-batch=1000] [--depth=0 (W2)] [--conc=8] [--workers=1] [--worker=PATH]\n"
    "  [--worker-args='...' (W2 default: '--prefetch=1000 --log-level=warning')]\n"
    "  [--work-dir=/tmp] [--rate=500] [--secs=10] [--raw=FILE] [--data-dir=DIR]\n"
    "  [--timeout=300]\n"
    "See the header of bench/conveyor_bench.cc and bench/README.md.\n";

bool ParseConfig(int argc, char** argv, Config* cfg) {
  if (argc < 2) return false;
  cfg->workload = argv[1];
  Flags flags(argc - 1, argv + 1);
  cfg->addr = flags.String("addr", "");
  cfg->label = flags.String("label", cfg->label);
  cfg->queue = flags.String("queue", cfg->queue);
  cfg->client = flags.String("client", cfg->client);
  cfg->submit = flags.String("submit", cfg->submit);
  cfg->window = flags.Number<int>("window", cfg->window);
  cfg->broker_pid = flags.Number<pid_t>("broker-pid", 0);
  cfg->n = flags.Number<int64_t>("n", 0);
  cfg->batch = flags.Number<int>("batch", cfg->batch);
  cfg->fill_batch = flags.Number<int>("fill-batch", cfg->fill_batch);
  cfg->depth = flags.Number<int64_t>("depth", 0);
  cfg->conc = flags.Number<int>("conc", cfg->conc);
  cfg->workers = flags.Number<int>("workers", cfg->workers);
  cfg->worker = flags.String("worker", cfg->worker);
  cfg->worker_args = flags.String(
      "worker-args", cfg->workload == "W2" ? "--prefetch=1000 --log-level=warning" : "");
  cfg->work_dir = flags.String("work-dir", cfg->work_dir);
  cfg->rate = flags.Number<int>("rate", cfg->rate);
  cfg->secs = flags.Number<int>("secs", cfg->secs);
  cfg->raw = flags.String("raw", "");
  cfg->data_dir = flags.String("data-dir", "");
  cfg->timeout_s = flags.Number<double>("timeout", cfg->timeout_s);
  if (!flags.AllUsed()) return false;
  const std::vector<std::string> known = {"W1u", "W1b", "W2", "W3", "MEM", "PING"};
  return std::find(known.begin(), known.end(), cfg->workload) != known.end() &&
         !cfg->addr.empty() && (cfg->client == "lib" || cfg->client == "stub") &&
         (cfg->submit == "call" || cfg->submit == "stream") && cfg->window >= 1 &&
         cfg->window <= 512 &&
         (cfg->window == 1 || (cfg->submit == "stream" && cfg->client == "lib" &&
                                cfg->workload == "W1u")) &&
         cfg->batch >= 1 && cfg->batch <= 1000 && cfg->fill_batch >= 1 &&
         cfg->fill_batch <= 1000 && cfg->depth >= 0 &&
         (cfg->depth == 0 || cfg->workload == "W2") && cfg->workers >= 1 &&
         cfg->conc >= cfg->workers &&
         cfg->rate >= 1 && cfg->secs >= 1 && cfg->timeout_s > 0;
}

int Main(int argc, char** argv) {
  // The producer's share of the 2 cores without Abseil's lock-graph
  // bookkeeping, as in the daemons (common/flags.h); more descriptors for
  // many connections.
  SetDaemonDefaults();
  Config cfg;
  if (!ParseConfig(argc, argv, &cfg)) {
    std::fputs(kUsage, stderr);
    return 64;
  }
  Watchdog(absl::Seconds(cfg.timeout_s));
  client::ClientOptions options;
  options.address = cfg.addr;
  options.timeout = absl::Seconds(30);
  client::Client c(options);
  if (absl::StatusOr<client::ServingStatus> h = c.Health(); !h.ok()) return Fail("Health", h.status());
  Producer p(cfg, &c);
  if (cfg.workload == "W1u") return RunW1(cfg, c, p, /*batched=*/false);
  if (cfg.workload == "W1b") return RunW1(cfg, c, p, /*batched=*/true);
  if (cfg.workload == "W2") return RunW2(cfg, c, p);
  if (cfg.workload == "W3") return RunW3(cfg, c, p);
  if (cfg.workload == "PING") return RunPing(cfg, c);
  return RunMem(cfg, c, p);
}

}  // namespace
}  // namespace conveyor::bench

int main(int argc, char** argv) { return conveyor::bench::Main(argc, argv); }
