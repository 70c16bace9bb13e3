// Shared fixture and helpers for the broker core tests.
//
// Every test drives a Broker with a FakeClock: time moves only through
// `AdvanceAndTick`, nothing sleeps. Callbacks of parked calls (Lease,
// Submit-wait) and watches record into shared_ptr-held captures, so a test
// can check "not called yet", "called exactly once" and the value passed.
#ifndef CONVEYOR_TESTS_SERVER_BROKER_TEST_UTIL_H_
#define CONVEYOR_TESTS_SERVER_BROKER_TEST_UTIL_H_

#include <memory>
#include <ostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"

namespace conveyor::server {
// Readable failure messages.
inline void PrintTo(TaskState s, std::ostream* os) { *os << TaskStateName(s); }
inline void PrintTo(TaskId id, std::ostream* os) { *os << id.ToString(); }
}  // namespace conveyor::server

namespace conveyor::server::broker_test {

// ── Status matchers (this abseil has no status_matchers.h) ──

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P(StatusIs, code,
          std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, substr,
           std::string("has status code ") + absl::StatusCodeToString(code) +
               " and a message containing \"" + std::string(substr) + "\"") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code &&
         std::string(s.message()).find(std::string(substr)) != std::string::npos;
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.ok();
}

// ── Recording listener ──

struct ListenerEvent {
  std::string kind;  // submitted, dispatched, retried, lease_expired, ended, dropped
  TaskId id;
  TaskState state;
  std::string reason;
};

class RecordingListener : public BrokerListener {
 public:
  void OnSubmitted(const Queue&, const Task& t) override { Add("submitted", t); }
  void OnDispatched(const Queue&, const Task& t) override { Add("dispatched", t); }
  void OnRetried(const Queue&, const Task& t) override { Add("retried", t); }
  void OnLeaseExpired(const Queue&, const Task& t) override {
    Add("lease_expired", t);
  }
  void OnEnded(const Queue&, const Task& t) override { Add("ended", t); }
  void OnDropped(const Queue&, const Task& t, absl::string_view reason) override {
    Add("dropped", t, std::string(reason));
  }

  int Count(absl::string_view kind) const {
    int n = 0;
    for (const auto& e : events) n += e.kind == kind;
    return n;
  }
  int Count(absl::string_view kind, TaskId id) const {
    int n = 0;
    for (const auto& e : events) n += (e.kind == kind && e.id == id);
    return n;
  }

  std::vector<ListenerEvent> events;

 private:
  void Add(std::string kind, const Task& t, std::string reason = "") {
    events.push_back(ListenerEvent{std::move(kind), t.id(), t.state,
                                   std::move(reason)});
  }
};

// ── Captures for callbacks ──

struct LeaseCapture {
  int calls = 0;
  std::optional<absl::StatusOr<std::vector<LeasedTask>>> result;
  bool done() const { return calls > 0; }
  const std::vector<LeasedTask>& tasks() const { return result->value(); }
};

inline LeaseCallback Capture(std::shared_ptr<LeaseCapture> c) {
  return [c](absl::StatusOr<std::vector<LeasedTask>> r) {
    ++c->calls;
    c->result = std::move(r);
  };
}

struct SubmitCapture {
  int calls = 0;
  std::optional<absl::StatusOr<SubmitResult>> result;
  bool done() const { return calls > 0; }
};

inline SubmitCallback Capture(std::shared_ptr<SubmitCapture> c) {
  return [c](absl::StatusOr<SubmitResult> r) {
    ++c->calls;
    c->result = std::move(r);
  };
}

struct WatchCapture {
  std::vector<TaskInfo> calls;
  std::vector<bool> finals;
  int final_count() const {
    int n = 0;
    for (bool f : finals) n += f;
    return n;
  }
  std::vector<TaskState> states() const {
    std::vector<TaskState> s;
    for (const auto& t : calls) s.push_back(t.state);
    return s;
  }
  // States with consecutive repeats collapsed (a progress change may or may
  // not be reported as a change of its own).
  std::vector<TaskState> distinct_states() const {
    std::vector<TaskState> s;
    for (const auto& t : calls) {
      if (s.empty() || s.back() != t.state) s.push_back(t.state);
    }
    return s;
  }
};

inline WatchCallback Capture(std::shared_ptr<WatchCapture> c) {
  return [c](const TaskInfo& t, bool final) {
    c->calls.push_back(t);
    c->finals.push_back(final);
  };
}

// ── Fixture ──

inline constexpr absl::Duration kLease = absl::Seconds(30);

class BrokerTest : public ::testing::Test {
 protected:
  BrokerTest() { Reset(BrokerOptions()); }

  // Replaces the broker (and clears the listener) with one using `options`.
  void Reset(BrokerOptions options) {
    broker_.reset();
    listener_.events.clear();
    broker_ = std::make_unique<Broker>(std::move(options), &clock_, &listener_);
  }

  absl::Time Now() const { return clock_.Now(); }

  void AdvanceAndTick(absl::Duration d) {
    clock_.Advance(d);
    broker_->Tick();
  }

  static TaskSpec Spec(std::string queue = "q", std::string type = "t",
                       std::string payload = "payload") {
    TaskSpec spec;
    spec.queue = std::move(queue);
    spec.type = std::move(type);
    spec.payload = std::move(payload);
    return spec;
  }

  // Submits `spec`, which must be accepted; returns the new task's id.
  TaskId MustSubmit(TaskSpec spec) {
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(std::move(spec));
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return TaskId();
    EXPECT_FALSE(r->deduplicated);
    return r->task.id;
  }
  TaskId MustSubmit(std::string queue = "q", std::string type = "t") {
    return MustSubmit(Spec(std::move(queue), std::move(type)));
  }

  // Creates `config` (which must be accepted).
  void MustCreateQueue(const QueueConfig& config, bool paused = false) {
    ASSERT_THAT(broker_->CreateQueue(config, paused), IsOk());
  }
  static QueueConfig Config(std::string name) {
    QueueConfig c;
    c.name = std::move(name);
    return c;
  }

  // A Lease with no wait: its callback must run before Lease returns.
  absl::StatusOr<std::vector<LeasedTask>> LeaseNowOrStatus(LeaseRequest req) {
    req.wait = absl::ZeroDuration();
    auto cap = std::make_shared<LeaseCapture>();
    WaitId w = broker_->Lease(std::move(req), Capture(cap));
    EXPECT_EQ(w, 0u) << "a lease without wait must answer at once";
    EXPECT_EQ(cap->calls, 1);
    if (!cap->result) return absl::InternalError("lease callback not called");
    return *cap->result;
  }
  std::vector<LeasedTask> LeaseNow(std::vector<std::string> queues,
                                   uint32_t max_tasks = 1,
                                   std::vector<std::string> types = {},
                                   std::string worker = "w1") {
    LeaseRequest req;
    req.worker_id = std::move(worker);
    req.queues = std::move(queues);
    req.types = std::move(types);
    req.max_tasks = max_tasks;
    absl::StatusOr<std::vector<LeasedTask>> r = LeaseNowOrStatus(std::move(req));
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return {};
    return *std::move(r);
  }
  // Leases exactly one task from `queue` (which must have one ready).
  LeasedTask LeaseOne(std::string queue = "q", std::string worker = "w1") {
    std::vector<LeasedTask> got = LeaseNow({std::move(queue)}, 1, {}, worker);
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) return LeasedTask();
    return got[0];
  }

  // A long-poll Lease; returns the capture (and the wait id through `wait_id`).
  std::shared_ptr<LeaseCapture> LeaseWait(std::vector<std::string> queues,
                                          absl::Duration wait,
                                          uint32_t max_tasks = 1,
                                          std::vector<std::string> types = {},
                                          WaitId* wait_id = nullptr) {
    LeaseRequest req;
    req.worker_id = "w-poll";
    req.queues = std::move(queues);
    req.types = std::move(types);
    req.max_tasks = max_tasks;
    req.wait = wait;
    auto cap = std::make_shared<LeaseCapture>();
    WaitId w = broker_->Lease(std::move(req), Capture(cap));
    if (wait_id != nullptr) *wait_id = w;
    return cap;
  }

  TaskInfo Get(TaskId id) {
    absl::StatusOr<TaskInfo> t = broker_->GetTask(id);
    EXPECT_THAT(t, IsOk()) << "task " << id.ToString();
    if (!t.ok()) return TaskInfo();
    return *std::move(t);
  }
  TaskState StateOf(TaskId id) { return Get(id).state; }

  QueueInfo GetQueue(absl::string_view name) {
    absl::StatusOr<QueueInfo> q = broker_->GetQueue(name);
    EXPECT_THAT(q, IsOk()) << "queue " << name;
    if (!q.ok()) return QueueInfo();
    return *std::move(q);
  }

  absl::Status CompleteOne(TaskId id, uint64_t token, std::string result = "ok") {
    std::vector<absl::Status> s =
        broker_->Complete({CompleteItem{id, token, std::move(result)}});
    EXPECT_EQ(s.size(), 1u);
    return s.empty() ? absl::InternalError("no outcome") : s[0];
  }
  absl::Status FailOne(TaskId id, uint64_t token, bool retryable = true,
                       std::string error = "boom") {
    FailItem item;
    item.id = id;
    item.token = token;
    item.error = std::move(error);
    item.retryable = retryable;
    std::vector<absl::Status> s = broker_->Fail({item});
    EXPECT_EQ(s.size(), 1u);
    return s.empty() ? absl::InternalError("no outcome") : s[0];
  }
  absl::Status ReleaseOne(TaskId id, uint64_t token) {
    std::vector<absl::Status> s = broker_->Release({ReleaseItem{id, token}});
    EXPECT_EQ(s.size(), 1u);
    return s.empty() ? absl::InternalError("no outcome") : s[0];
  }
  HeartbeatOutcome HeartbeatOne(TaskId id, uint64_t token,
                                std::optional<double> progress = std::nullopt,
                                std::string message = "",
                                std::string worker = "w1") {
    HeartbeatItem item;
    item.id = id;
    item.token = token;
    item.progress_percent = progress;
    item.progress_message = std::move(message);
    std::vector<HeartbeatOutcome> out = broker_->Heartbeat(worker, {item});
    EXPECT_EQ(out.size(), 1u);
    if (out.empty()) return HeartbeatOutcome{absl::InternalError("none"), false, {}};
    return out[0];
  }

  // Submits a task with one attempt, leases and fails it: it ends DEAD.
  TaskId MakeDead(std::string queue = "q") {
    TaskSpec spec = Spec(queue);
    spec.retry.max_attempts = 1;
    TaskId id = MustSubmit(std::move(spec));
    LeasedTask l = LeaseOne(queue);
    EXPECT_EQ(l.id, id);
    EXPECT_THAT(FailOne(id, l.token, /*retryable=*/false), IsOk());
    EXPECT_EQ(StateOf(id), TaskState::kDead);
    return id;
  }

  FakeClock clock_;
  RecordingListener listener_;
  std::unique_ptr<Broker> broker_;
};

inline std::vector<TaskId> Ids(const std::vector<LeasedTask>& tasks) {
  std::vector<TaskId> ids;
  for (const auto& t : tasks) ids.push_back(t.id);
  return ids;
}
inline std::vector<TaskId> Ids(const std::vector<TaskInfo>& tasks) {
  std::vector<TaskId> ids;
  for (const auto& t : tasks) ids.push_back(t.id);
  return ids;
}

}  // namespace conveyor::server::broker_test

#endif  // CONVEYOR_TESTS_SERVER_BROKER_TEST_UTIL_H_
