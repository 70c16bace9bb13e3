// End-to-end durability: the real `conveyord` with --data-dir and
// --fsync=always, killed with SIGKILL again and again during a steady
// workload, and the real `conveyor-worker` (the `echo` handler) completing
// tasks meanwhile.
//
// One cycle of SurvivesRepeatedKill9DuringSteadyWorkload:
//   1. start the broker on the same data directory (127.0.0.1:0, a new port
//      each time; it writes the port to --port-file);
//   2. check everything (below) while nothing else talks to it;
//   3. start a worker on the new address and let the producers go on;
//   4. once a submit has been acknowledged in this run, wait a random
//      100-400 ms (every fourth cycle 0.9-1.5 s, long enough for the broker
//      to write a snapshot, so some kills land during one), lease a few tasks
//      from a test thread and hold them (so some tasks are certainly RUNNING
//      at the kill), SIGKILL the broker and the worker.
// Producer threads (conveyor::client::Client, one per thread and broker
// run; every other one sends through a SubmitStream, up to 16 tasks ahead of
// their answers) submit tasks with unique 64-byte payloads and their own
// idempotency keys. Only a Submit that returned OK counts as acknowledged. A submit that
// failed with UNAVAILABLE or DEADLINE_EXCEEDED (the kill) is sent again, with
// the same key, to the next broker: it may or may not have been stored
// before the kill, and either way exactly one task must carry its payload.
//
// The checker (after every restart, before the worker is back, and at the
// end) lists the whole queue with ListTasks and requires:
//   - every acknowledged task is present with its payload unchanged (nothing
//     lost, nothing changed, no id issued twice);
//   - every task listed carries a payload a producer sent, and no two tasks
//     carry the same one (an idempotency key survives the restart);
//   - no task is RUNNING (no worker is connected yet: leased tasks come back
//     READY on restart; those the test held are READY), and each is READY or
//     SUCCEEDED, with no attempt and no crash spent (a restart spends
//     neither);
//   - a SUCCEEDED task's result equals its payload (echo);
//   - at the end every acknowledged task SUCCEEDED, and a task leased by the
//     test before a kill was leased again later with a larger token.
//
// Environment knobs (tests/soak/kill9_soak.sh raises the first):
//   CONVEYOR_KILL9_CYCLES (default 20), CONVEYOR_KILL9_SEED (default: time),
//   CONVEYOR_KILL9_MIN_DELAY_MS / _MAX_DELAY_MS (100 / 400),
//   CONVEYOR_KILL9_PRODUCERS (4), CONVEYOR_KILL9_KEEP_DIR (set: keep the data
//   directory and logs even when the test passes; they are kept on failure).
// The last line printed is a summary starting "KILL9 SUMMARY".
//
// No fixed ports and no sleeps used for synchronization: every wait is a
// bounded poll. The random delay before each kill is the workload itself.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif
#ifndef CONVEYOR_WORKER_PATH
#error "CONVEYOR_WORKER_PATH must name the conveyor-worker binary"
#endif

namespace conveyor::e2e {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::conveyor::v1;
using client::Client;
using client::ClientOptions;
using client::SubmitStream;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
constexpr absl::Duration kFirstAckTimeout = absl::Seconds(30);
constexpr absl::Duration kDrainTimeout = absl::Seconds(90);
constexpr absl::Duration kPoll = absl::Milliseconds(10);
constexpr char kQueue[] = "kill9";
constexpr size_t kPayloadBytes = 64;
constexpr uint32_t kPageSize = 1000;
constexpr size_t kMaxReportedProblems = 20;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = 0;
  if (v == nullptr || *v == '\0' || !absl::SimpleAtoi(v, &n)) return fallback;
  return n;
}

bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

// The last `bytes` of `text`, cut at a line start.
std::string Tail(const std::string& text, size_t bytes) {
  if (text.size() <= bytes) return text;
  size_t from = text.find('\n', text.size() - bytes);
  return from == std::string::npos ? text.substr(text.size() - bytes) : text.substr(from + 1);
}

size_t CountOccurrences(const std::string& text, absl::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle.data(), 0, needle.size()); at != std::string::npos;
       at = text.find(needle.data(), at + needle.size(), needle.size())) {
    ++n;
  }
  return n;
}

std::unique_ptr<Client> NewClient(const std::string& addr) {
  ClientOptions options;
  options.address = addr;
  options.timeout = absl::Seconds(10);
  options.submit_attempts = 2;
  options.read_attempts = 3;
  options.initial_backoff = absl::Milliseconds(50);
  return std::make_unique<Client>(options);
}

bool IsAmbiguous(absl::StatusCode code) {
  // The broker died (or was not there yet): the submit may or may not have
  // been stored.
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kCancelled || code == absl::StatusCode::kUnknown;
}

// The broker address producers should use, with a generation per broker run.
// Closed while the broker is down or being checked: producers wait.
class Endpoint {
 public:
  struct View {
    int64_t generation;
    std::string addr;
  };

  void Open(const std::string& addr) {
    absl::MutexLock lock(&mu_);
    ++generation_;
    addr_ = addr;
    open_ = true;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    open_ = false;
  }
  void Stop() {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  bool stopped() {
    absl::MutexLock lock(&mu_);
    return stop_;
  }

  // Waits until the endpoint is open on a generation newer than `after`;
  // nullopt once stopped.
  std::optional<View> Await(int64_t after) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, after]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || (open_ && generation_ > after);
    };
    mu_.Await(absl::Condition(&ready));
    if (stop_) return std::nullopt;
    return View{generation_, addr_};
  }

 private:
  absl::Mutex mu_;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::string addr_ ABSL_GUARDED_BY(mu_);
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

// What the producers sent and what the broker acknowledged.
class Ledger {
 public:
  void Sent(const std::string& payload) {
    absl::MutexLock lock(&mu_);
    sent_.insert(payload);
  }

  // Records an OK answer; a second OK for the same id with another payload
  // means the broker issued an id twice.
  void Acked(const std::string& id, const std::string& payload, bool deduplicated) {
    absl::MutexLock lock(&mu_);
    auto [it, inserted] = acked_.emplace(id, payload);
    if (!inserted && it->second != payload) {
      problems_.push_back(absl::StrCat("id ", id, " acknowledged for two payloads: '",
                                       it->second, "' and '", payload, "'"));
    }
    ++acks_;
    if (deduplicated) ++deduplicated_;
  }

  void Retried() {
    absl::MutexLock lock(&mu_);
    ++retried_;
  }

  void Problem(std::string text) {
    absl::MutexLock lock(&mu_);
    problems_.push_back(std::move(text));
  }

  uint64_t acks() {
    absl::MutexLock lock(&mu_);
    return acks_;
  }

  struct Copy {
    std::set<std::string> sent;
    std::map<std::string, std::string> acked;
    uint64_t deduplicated = 0;
    uint64_t retried = 0;
    std::vector<std::string> problems;
  };
  Copy Snapshot() {
    absl::MutexLock lock(&mu_);
    return Copy{sent_, acked_, deduplicated_, retried_, problems_};
  }

 private:
  absl::Mutex mu_;
  std::set<std::string> sent_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> acked_ ABSL_GUARDED_BY(mu_);  // id -> payload
  uint64_t acks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t deduplicated_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t retried_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
};

// A unique payload of exactly kPayloadBytes: "t<thread>-<seq>-" and filler
// that differs per task, so a changed byte anywhere shows.
std::string PayloadFor(uint64_t seed, int thread, uint64_t seq) {
  std::string p = absl::StrFormat("t%02d-%010u-", thread, seq);
  std::mt19937_64 gen(seed ^ (uint64_t(thread) << 48) ^ seq);
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  while (p.size() < kPayloadBytes) p.push_back(kAlphabet[gen() % (sizeof(kAlphabet) - 1)]);
  return p;
}

// The producer's next task (unique payload, its own key), recorded as sent.
v1::TaskSpec NextSpec(uint64_t seed, int thread, uint64_t* seq, Ledger* ledger) {
  v1::TaskSpec spec;
  spec.set_queue(kQueue);
  spec.set_type("echo");
  spec.set_payload(PayloadFor(seed, thread, *seq));
  spec.set_idempotency_key(absl::StrFormat("k-%x-t%02d-%u", seed, thread, *seq));
  ++*seq;
  ledger->Sent(spec.payload());
  return spec;
}

// Submits with unique payloads until stopped; see the file comment.
void ProduceUntilStopped(int thread, uint64_t seed, Endpoint* endpoint, Ledger* ledger) {
  std::unique_ptr<Client> client;
  int64_t generation = 0;  // of `client`
  int64_t wait_after = 0;  // a newer broker run is needed after a failure
  uint64_t seq = 0;
  std::optional<v1::TaskSpec> pending;
  while (true) {
    if (!pending.has_value()) pending = NextSpec(seed, thread, &seq, ledger);
    std::optional<Endpoint::View> view = endpoint->Await(wait_after);
    if (!view.has_value()) return;
    if (client == nullptr || view->generation != generation) {
      client = NewClient(view->addr);
      generation = view->generation;
    }
    absl::StatusOr<v1::SubmitResponse> r = client->Submit(*pending);
    if (r.ok()) {
      ledger->Acked(r->task().id(), pending->payload(), r->deduplicated());
      pending.reset();
      wait_after = 0;
    } else if (IsAmbiguous(r.status().code())) {
      // Same spec, same key, on the next broker run.
      ledger->Retried();
      wait_after = generation;
    } else {
      ledger->Problem(absl::StrCat("submit of '", pending->payload(), "' failed: ",
                                   r.status().ToString()));
      pending.reset();
    }
  }
}

// The same through Client::SubmitStream, sending up to kStreamAhead tasks
// ahead of their answers. At the first ambiguous answer (or a broken stream)
// the stream is dropped, and every task not yet answered OK is sent again,
// in order and with its key, on the next broker run.
constexpr size_t kStreamAhead = 16;

void StreamUntilStopped(int thread, uint64_t seed, Endpoint* endpoint, Ledger* ledger) {
  std::unique_ptr<Client> client;
  std::unique_ptr<SubmitStream> stream;
  int64_t generation = 0;
  int64_t wait_after = 0;
  uint64_t seq = 0;
  std::deque<v1::TaskSpec> unanswered;  // sent on `stream` (or to resend), in order
  size_t sent_on_stream = 0;            // the first ones of `unanswered`
  while (true) {
    std::optional<Endpoint::View> view = endpoint->Await(wait_after);
    if (!view.has_value()) return;
    if (client == nullptr || view->generation != generation) {
      stream.reset();
      client = NewClient(view->addr);
      stream = client->OpenSubmitStream(kStreamAhead);
      generation = view->generation;
      sent_on_stream = 0;
    }
    absl::Status failed;
    while (sent_on_stream < unanswered.size() && failed.ok()) {
      failed = stream->Send(unanswered[sent_on_stream++]);
    }
    if (failed.ok() && unanswered.size() < kStreamAhead) {
      unanswered.push_back(NextSpec(seed, thread, &seq, ledger));
      failed = stream->Send(unanswered.back());
      ++sent_on_stream;
    } else if (failed.ok()) {
      absl::StatusOr<v1::SubmitResponse> r = stream->Next();
      if (r.ok()) {
        ledger->Acked(r->task().id(), unanswered.front().payload(), r->deduplicated());
        unanswered.pop_front();
        --sent_on_stream;
        wait_after = 0;
      } else if (IsAmbiguous(r.status().code())) {
        failed = r.status();
      } else {
        ledger->Problem(absl::StrCat("streamed submit of '", unanswered.front().payload(),
                                     "' failed: ", r.status().ToString()));
        unanswered.pop_front();
        --sent_on_stream;
      }
    }
    if (!failed.ok()) {
      if (!IsAmbiguous(failed.code()) && failed.code() != absl::StatusCode::kFailedPrecondition) {
        ledger->Problem(absl::StrCat("submit stream failed: ", failed.ToString()));
      }
      // All of `unanswered`, same keys, on the next broker run.
      ledger->Retried();
      stream.reset();
      client.reset();
      wait_after = generation;
    }
  }
}

std::string StateName(v1::TaskState s) { return v1::TaskState_Name(s); }

class DurabilityE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    data_dir_ = dir_.path() / "data";
  }

  void TearDown() override {
    if (HasFailure() || EnvSet("CONVEYOR_KILL9_KEEP_DIR")) {
      dir_.Keep();
      std::cerr << "data directory and logs kept in " << dir_.path() << "\n";
      std::cerr << "--- conveyord log (tail) ---\n"
                << Tail(ReadFileOrEmpty(BrokerLog()), 16 << 10) << "\n";
      std::cerr << "--- conveyor-worker log (tail) ---\n"
                << Tail(ReadFileOrEmpty(dir_.path() / "worker.log"), 4 << 10) << "\n";
    }
    worker_.reset();
    broker_.reset();
  }

  fs::path BrokerLog() const { return dir_.path() / "conveyord.log"; }

  std::vector<std::string> BrokerArgs(const fs::path& port_file,
                                      const std::vector<std::string>& extra) const {
    std::vector<std::string> argv = LoopbackBrokerArgv(CONVEYORD_PATH, port_file);
    argv.push_back(absl::StrCat("--data-dir=", data_dir_.string()));
    argv.push_back("--fsync=always");
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  // Starts the broker on the data directory; sets addr_. Returns false (with
  // a test failure) if it did not come up.
  bool StartBroker(const std::vector<std::string>& extra = {}) {
    const fs::path port_file = dir_.path() / "conveyord.port";
    fs::remove(port_file);
    std::ofstream(BrokerLog(), std::ios::app)
        << "=== test: broker start " << ++broker_starts_ << " ===\n";
    broker_ = std::make_unique<Process>(Stdio::Log(BrokerLog()));
    if (!broker_->Start(BrokerArgs(port_file, extra))) return false;
    const absl::Time start = absl::Now();
    const int port = WaitForPortFile(port_file, *broker_, kStartTimeout);
    if (port <= 0) {
      ADD_FAILURE() << "conveyord start " << broker_starts_ << " did not write its port within "
                    << kStartTimeout << " (exit code " << broker_->Wait(absl::ZeroDuration())
                    << ")";
      return false;
    }
    max_start_ = std::max(max_start_, absl::Now() - start);
    addr_ = LoopbackAddress(port);
    return true;
  }

  void StartWorker(int run) {
    worker_ = std::make_unique<Process>(Stdio::Log(dir_.path() / "worker.log"));
    worker_->Start({CONVEYOR_WORKER_PATH, absl::StrCat("--broker=", addr_),
                    absl::StrCat("--queue=", kQueue), "--concurrency=2", "--metrics-addr=",
                    absl::StrCat("--worker-id=w", run), "--log-level=warning"});
  }

  void CreateQueue() {
    std::unique_ptr<Client> c = NewClient(addr_);
    v1::CreateQueueRequest req;
    req.mutable_config()->set_name(kQueue);
    req.mutable_config()->set_capacity(10'000'000);
    req.mutable_config()->set_retained(100'000'000);
    absl::StatusOr<v1::Queue> q = c->CreateQueue(req);
    ASSERT_TRUE(q.ok()) << q.status();
  }

  // Leases up to 3 tasks as a worker that never reports: they are RUNNING
  // when the broker is killed.
  void HoldSomeLeases(int run) {
    std::unique_ptr<Client> c = NewClient(addr_);
    v1::LeaseRequest req;
    req.set_worker_id(absl::StrCat("holder", run));
    req.add_queues(kQueue);
    req.set_max_tasks(3);
    absl::StatusOr<v1::LeaseResponse> r = c->Lease(req);
    held_last_.clear();
    if (!r.ok()) return;  // nothing held this time
    for (const v1::LeasedTask& t : r->tasks()) {
      held_.emplace(t.id(), t.token());
      held_last_.insert(t.id());
    }
  }

  // Lists every task of the queue (bounded paging).
  absl::StatusOr<std::vector<v1::Task>> ListAll(Client& c, size_t bound) {
    std::vector<v1::Task> all;
    v1::ListTasksRequest req;
    req.set_queue(kQueue);
    req.set_page_size(kPageSize);
    const size_t max_pages = bound / kPageSize + 10;
    for (size_t page = 0; page < max_pages; ++page) {
      absl::StatusOr<v1::ListTasksResponse> r = c.ListTasks(req);
      if (!r.ok()) return r.status();
      for (v1::Task& t : *r->mutable_tasks()) all.push_back(std::move(t));
      if (r->next_page_token().empty()) return all;
      req.set_page_token(r->next_page_token());
    }
    return absl::InternalError(absl::StrCat("ListTasks still had pages after ", max_pages));
  }

  // The checker; see the file comment. `at_end`: every acknowledged task
  // must have SUCCEEDED. Returns false if anything is wrong (each problem is
  // reported, up to kMaxReportedProblems).
  bool Check(const std::string& when, bool at_end) {
    Ledger::Copy ledger = ledger_.Snapshot();
    std::unique_ptr<Client> c = NewClient(addr_);
    absl::StatusOr<std::vector<v1::Task>> listed = ListAll(*c, ledger.sent.size());
    if (!listed.ok()) {
      ADD_FAILURE() << when << ": ListTasks failed: " << listed.status();
      return false;
    }
    std::vector<std::string> problems = ledger.problems;
    auto problem = [&](std::string text) { problems.push_back(std::move(text)); };

    std::map<std::string, const v1::Task*> by_id;
    std::map<std::string, std::string> id_of_payload;
    uint64_t succeeded = 0;
    for (const v1::Task& t : *listed) {
      if (!by_id.emplace(t.id(), &t).second) problem(absl::StrCat("id ", t.id(), " listed twice"));
      if (ledger.sent.count(t.payload()) == 0) {
        problem(absl::StrCat("task ", t.id(), " has a payload no producer sent: '",
                             absl::CHexEscape(t.payload()), "'"));
      }
      auto [it, fresh] = id_of_payload.emplace(t.payload(), t.id());
      if (!fresh) {
        problem(absl::StrCat("payload '", t.payload(), "' stored twice: tasks ", it->second,
                             " and ", t.id(), " (idempotency key lost?)"));
      }
      if (t.state() == v1::TASK_STATE_SUCCEEDED) {
        ++succeeded;
        if (t.result() != t.payload()) {
          problem(absl::StrCat("task ", t.id(), " SUCCEEDED with result '",
                               absl::CHexEscape(t.result()), "' but its payload is '",
                               t.payload(), "'"));
        }
      } else if (t.state() == v1::TASK_STATE_READY) {
      } else {
        problem(absl::StrCat("task ", t.id(), " is ", StateName(t.state()),
                             t.state() == v1::TASK_STATE_RUNNING
                                 ? absl::StrCat(" (worker ", t.worker_id(),
                                                ") right after a restart with no worker")
                                 : " (expected READY or SUCCEEDED)",
                             t.error().empty() ? "" : absl::StrCat("; error: ", t.error())));
      }
      if (t.attempts() != 0 || t.crashes() != 0) {
        problem(absl::StrCat("task ", t.id(), " spent ", t.attempts(), " attempts and ",
                             t.crashes(), " crashes (a restart spends neither)"));
      }
    }
    for (const auto& [id, payload] : ledger.acked) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        problem(absl::StrCat("acknowledged task ", id, " ('", payload, "') is lost"));
        continue;
      }
      if (it->second->payload() != payload) {
        problem(absl::StrCat("acknowledged task ", id, " changed payload: '", payload,
                             "' became '", absl::CHexEscape(it->second->payload()), "'"));
      }
      if (at_end && it->second->state() != v1::TASK_STATE_SUCCEEDED) {
        problem(absl::StrCat("acknowledged task ", id, " is ",
                             StateName(it->second->state()), " at the end"));
      }
    }
    for (const auto& [id, token] : held_) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        problem(absl::StrCat("task ", id, " leased by the test (token ", token, ") is lost"));
      } else if (!at_end && held_last_.count(id) > 0 &&
                 it->second->state() != v1::TASK_STATE_READY) {
        problem(absl::StrCat("task ", id, " leased by the test (token ", token,
                             ") and never reported is ", StateName(it->second->state()),
                             " after the restart, not READY"));
      } else if (at_end && it->second->token() <= token) {
        problem(absl::StrCat("task ", id, " was leased with token ", token,
                             " before a kill and ended with token ", it->second->token(),
                             " (a token issued twice?)"));
      }
    }
    last_listed_ = listed->size();
    last_succeeded_ = succeeded;
    for (size_t i = 0; i < problems.size() && i < kMaxReportedProblems; ++i) {
      ADD_FAILURE() << when << ": " << problems[i];
    }
    if (problems.size() > kMaxReportedProblems) {
      ADD_FAILURE() << when << ": ... and " << problems.size() - kMaxReportedProblems
                    << " more problems";
    }
    return problems.empty();
  }

  // Waits (bounded) until no task of the queue is READY, SCHEDULED or RUNNING.
  bool WaitForDrainedQueue() {
    std::unique_ptr<Client> c = NewClient(addr_);
    const absl::Time deadline = absl::Now() + kDrainTimeout;
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::Queue> q = c->GetQueue(kQueue);
      if (q.ok() && q->stats().ready() + q->stats().scheduled() + q->stats().running() == 0) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  TempDir dir_{"conveyor-durability-e2e"};
  fs::path data_dir_;
  std::unique_ptr<Process> broker_;
  std::unique_ptr<Process> worker_;
  std::string addr_;
  int broker_starts_ = 0;
  absl::Duration max_start_;
  Endpoint endpoint_;
  Ledger ledger_;
  std::map<std::string, uint64_t> held_;  // id -> token, leased by the test
  std::set<std::string> held_last_;       // leased by the test before the last kill
  size_t last_listed_ = 0;
  uint64_t last_succeeded_ = 0;
};

TEST_F(DurabilityE2eTest, SurvivesRepeatedKill9DuringSteadyWorkload) {
  const int cycles = std::max(1, EnvInt("CONVEYOR_KILL9_CYCLES", 20));
  const int default_seed = static_cast<int>(absl::ToUnixMicros(absl::Now()) & 0x7fffffff);
  const uint64_t seed = static_cast<uint64_t>(EnvInt("CONVEYOR_KILL9_SEED", default_seed));
  const int min_delay_ms = std::max(0, EnvInt("CONVEYOR_KILL9_MIN_DELAY_MS", 100));
  const int max_delay_ms = std::max(min_delay_ms, EnvInt("CONVEYOR_KILL9_MAX_DELAY_MS", 400));
  const int producers = std::clamp(EnvInt("CONVEYOR_KILL9_PRODUCERS", 4), 1, 64);
  std::cout << "kill9: cycles=" << cycles << " seed=" << seed << " delay=" << min_delay_ms << "-"
            << max_delay_ms << "ms producers=" << producers << " dir=" << dir_.path()
            << std::endl;
  SCOPED_TRACE(absl::StrCat("CONVEYOR_KILL9_SEED=", seed));
  std::mt19937_64 rng(seed);
  const absl::Time test_start = absl::Now();

  // Small segments and snapshots: rotation, snapshot writes and segment
  // deletion all happen under the kills. The broker looks at the snapshot
  // threshold once a second, so every fourth cycle runs for 0.9-1.5 s
  // instead: it writes a snapshot, and some kills land in the middle of one.
  const std::vector<std::string> flags = {"--segment-bytes=65536", "--snapshot-bytes=32768"};
  auto delay_for = [&](int cycle) {
    if (cycle % 4 == 0) {
      return std::uniform_int_distribution<int>(900, 1500)(rng);
    }
    return std::uniform_int_distribution<int>(min_delay_ms, max_delay_ms)(rng);
  };

  ASSERT_TRUE(StartBroker(flags));
  CreateQueue();
  std::vector<std::thread> threads;
  for (int t = 0; t < producers; ++t) {
    // Every other producer streams.
    threads.emplace_back(t % 2 == 0 ? ProduceUntilStopped : StreamUntilStopped, t, seed,
                         &endpoint_, &ledger_);
  }
  auto stop_producers = [&] {
    endpoint_.Stop();
    for (std::thread& th : threads) th.join();
    threads.clear();
  };

  bool ok = true;
  for (int cycle = 1; cycle <= cycles && ok; ++cycle) {
    StartWorker(cycle);
    const uint64_t acks_before = ledger_.acks();
    endpoint_.Open(addr_);
    const absl::Time deadline = absl::Now() + kFirstAckTimeout;
    while (ledger_.acks() == acks_before && absl::Now() < deadline) absl::SleepFor(kPoll);
    if (ledger_.acks() == acks_before) {
      ADD_FAILURE() << "cycle " << cycle << ": no submit acknowledged within "
                    << kFirstAckTimeout << " of the broker's start";
      ok = false;
      break;
    }
    absl::SleepFor(absl::Milliseconds(delay_for(cycle)));
    HoldSomeLeases(cycle);
    EXPECT_EQ(broker_->Kill(), 128 + SIGKILL) << "cycle " << cycle << ": broker exited early";
    endpoint_.Close();
    worker_->Kill();

    if (!StartBroker(flags)) {
      ok = false;
      break;
    }
    ok = Check(absl::StrCat("after kill ", cycle), /*at_end=*/false);
  }
  stop_producers();
  ASSERT_TRUE(ok) << "stopped early; see the failures above (seed " << seed << ")";

  // Let a worker finish everything, then check that every acknowledged task
  // SUCCEEDED with its payload as result.
  StartWorker(cycles + 1);
  ASSERT_TRUE(WaitForDrainedQueue()) << "tasks still unfinished after " << kDrainTimeout;
  worker_->Signal(SIGTERM);
  EXPECT_EQ(worker_->Wait(kStopTimeout), 0) << "conveyor-worker must exit 0 on SIGTERM";
  EXPECT_TRUE(Check("at the end", /*at_end=*/true));

  // A clean stop and one more start: the same state again.
  broker_->Signal(SIGTERM);
  EXPECT_EQ(broker_->Wait(kStopTimeout), 0) << "conveyord must drain and exit 0 on SIGTERM";
  ASSERT_TRUE(StartBroker());
  EXPECT_TRUE(Check("after a clean restart", /*at_end=*/true));
  broker_->Signal(SIGTERM);
  EXPECT_EQ(broker_->Wait(kStopTimeout), 0);

  const Ledger::Copy ledger = ledger_.Snapshot();
  const std::string log = ReadFileOrEmpty(BrokerLog());
  std::cout << absl::StrFormat(
                   "KILL9 SUMMARY result=%s cycles=%d seed=%u acked=%u sent=%u "
                   "stored=%u succeeded=%u resent_after_kill=%u deduplicated=%u "
                   "held_leases=%u snapshots=%u "
                   "torn_tails=%u max_start_ms=%.0f elapsed_s=%.1f",
                   HasFailure() ? "FAIL" : "PASS", cycles, seed, ledger.acked.size(),
                   ledger.sent.size(), last_listed_, last_succeeded_, ledger.retried,
                   ledger.deduplicated, held_.size(),
                   CountOccurrences(log, "\"msg\":\"snapshot written\""),
                   CountOccurrences(log, "\"msg\":\"journal: torn tail dropped\""),
                   absl::ToDoubleMilliseconds(max_start_),
                   absl::ToDoubleSeconds(absl::Now() - test_start))
            << std::endl;
}

TEST_F(DurabilityE2eTest, SecondBrokerOnTheSameDataDirectoryIsRefused) {
  ASSERT_TRUE(StartBroker());
  const std::string first_addr = addr_;
  std::unique_ptr<Client> c = NewClient(first_addr);
  v1::TaskSpec spec;
  spec.set_queue("locked");
  spec.set_type("t");
  spec.set_payload("before");
  absl::StatusOr<v1::SubmitResponse> submitted = c->Submit(spec);
  ASSERT_TRUE(submitted.ok()) << submitted.status();

  const fs::path second_log = dir_.path() / "second.log";
  Process second(Stdio::Log(second_log));
  ASSERT_TRUE(second.Start(BrokerArgs(dir_.path() / "second.port", {})));
  const int code = second.Wait(kStopTimeout);
  const std::string err = ReadFileOrEmpty(second_log);
  EXPECT_NE(code, -1) << "a second broker on " << data_dir_ << " kept running:\n" << err;
  EXPECT_NE(code, 0) << err;
  EXPECT_LT(code, 128) << "it must exit with an error, not die of a signal:\n" << err;
  EXPECT_FALSE(fs::exists(dir_.path() / "second.port")) << "the second broker served";
  EXPECT_TRUE(absl::StrContains(err, data_dir_.string())) << err;
  EXPECT_TRUE(absl::StrContains(err, "another") || absl::StrContains(err, "lock")) << err;

  // The first broker is unaffected and still owns its data.
  absl::StatusOr<v1::Task> got = c->GetTask(submitted->task().id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload(), "before");
  spec.set_payload("after");
  EXPECT_TRUE(c->Submit(spec).ok());
  c.reset();
  broker_->Signal(SIGTERM);
  ASSERT_EQ(broker_->Wait(kStopTimeout), 0);

  // Once it has stopped the directory is free again.
  ASSERT_TRUE(StartBroker());
  c = NewClient(addr_);
  got = c->GetTask(submitted->task().id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload(), "before");
  c.reset();
  broker_->Signal(SIGTERM);
  EXPECT_EQ(broker_->Wait(kStopTimeout), 0);
}

}  // namespace
}  // namespace conveyor::e2e
