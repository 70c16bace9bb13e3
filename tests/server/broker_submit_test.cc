// Submit: validation, queue auto-creation, the accepted task, idempotency
// keys and SubmitBatch.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "tests/server/broker_test_util.h"

namespace conveyor::server::broker_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// ── Validation ──

constexpr size_t kMaxPayload = 64;
constexpr size_t kMaxHeaders = 32;

struct InvalidSpecCase {
  std::string name;                       // test name suffix
  std::function<void(TaskSpec&, absl::Time now)> mutate;
  std::string field;                      // the message must name it
};

class SubmitValidationTest
    : public BrokerTest,
      public ::testing::WithParamInterface<InvalidSpecCase> {
 protected:
  SubmitValidationTest() {
    BrokerOptions o;
    o.max_payload_bytes = kMaxPayload;
    o.max_header_bytes = kMaxHeaders;
    Reset(o);
  }
};

std::vector<InvalidSpecCase> InvalidSpecCases() {
  auto retry = [](std::function<void(RetryOverride&)> f) {
    return [f](TaskSpec& s, absl::Time) { f(s.retry); };
  };
  return {
      {"EmptyQueueName", [](TaskSpec& s, absl::Time) { s.queue = ""; }, "queue"},
      {"QueueNameWithSpace", [](TaskSpec& s, absl::Time) { s.queue = "bad queue"; },
       "queue"},
      {"QueueNameStartingWithDash", [](TaskSpec& s, absl::Time) { s.queue = "-q"; },
       "queue"},
      {"QueueNameWithSlash", [](TaskSpec& s, absl::Time) { s.queue = "a/b"; },
       "queue"},
      {"QueueNameOver128Chars",
       [](TaskSpec& s, absl::Time) { s.queue = std::string(129, 'a'); }, "queue"},
      {"EmptyType", [](TaskSpec& s, absl::Time) { s.type = ""; }, "type"},
      {"TypeWithSpace", [](TaskSpec& s, absl::Time) { s.type = "my type"; }, "type"},
      {"TypeOver128Chars",
       [](TaskSpec& s, absl::Time) { s.type = std::string(129, 't'); }, "type"},
      {"PayloadOverMaxPayloadBytes",
       [](TaskSpec& s, absl::Time) { s.payload = std::string(kMaxPayload + 1, 'x'); },
       "payload"},
      {"HeadersOverMaxHeaderBytes",
       [](TaskSpec& s, absl::Time) {
         s.headers = {{"k", std::string(kMaxHeaders, 'v')}};  // 33 bytes
       },
       "header"},
      {"PriorityAboveNine", [](TaskSpec& s, absl::Time) { s.priority = 10; },
       "priority"},
      {"MaxAttemptsZero", retry([](RetryOverride& r) { r.max_attempts = 0; }),
       "max_attempts"},
      {"MaxAttemptsOver1000", retry([](RetryOverride& r) { r.max_attempts = 1001; }),
       "max_attempts"},
      {"NegativeTimeout",
       [](TaskSpec& s, absl::Time) { s.timeout = absl::Seconds(-1); }, "timeout"},
      {"TimeoutOverSevenDays",
       [](TaskSpec& s, absl::Time) { s.timeout = absl::Hours(24 * 8); }, "timeout"},
      {"InfiniteTimeout",
       [](TaskSpec& s, absl::Time) { s.timeout = absl::InfiniteDuration(); },
       "timeout"},
      {"NegativeInitialBackoff",
       retry([](RetryOverride& r) { r.initial_backoff = absl::Seconds(-5); }),
       "initial_backoff"},
      {"InitialBackoffOverSevenDays", retry([](RetryOverride& r) {
         r.initial_backoff = absl::Hours(200);
         r.max_backoff = absl::Hours(200);
       }),
       "initial_backoff"},
      {"MaxBackoffOverSevenDays",
       retry([](RetryOverride& r) { r.max_backoff = absl::Hours(200); }),
       "max_backoff"},
      {"MaxBackoffBelowInitialBackoff", retry([](RetryOverride& r) {
         r.initial_backoff = absl::Seconds(10);
         r.max_backoff = absl::Seconds(5);
       }),
       "max_backoff"},
      {"NegativeMaxBackoff",
       retry([](RetryOverride& r) { r.max_backoff = absl::Seconds(-1); }),
       "max_backoff"},
      {"MultiplierBelowOne", retry([](RetryOverride& r) { r.multiplier = 0.5; }),
       "multiplier"},
      {"MultiplierNaN",
       retry([](RetryOverride& r) {
         r.multiplier = std::numeric_limits<double>::quiet_NaN();
       }),
       "multiplier"},
      {"MultiplierInfinite",
       retry([](RetryOverride& r) {
         r.multiplier = std::numeric_limits<double>::infinity();
       }),
       "multiplier"},
      {"JitterAboveOne", retry([](RetryOverride& r) { r.jitter = 1.5; }), "jitter"},
      {"JitterNegative", retry([](RetryOverride& r) { r.jitter = -0.1; }), "jitter"},
      {"JitterNaN",
       retry([](RetryOverride& r) { r.jitter = std::numeric_limits<double>::quiet_NaN(); }),
       "jitter"},
      {"IdempotencyKeyOver256Bytes",
       [](TaskSpec& s, absl::Time) { s.idempotency_key = std::string(257, 'k'); },
       "idempotency_key"},
      {"RateKeyOver128Bytes",
       [](TaskSpec& s, absl::Time) { s.rate_key = std::string(129, 'r'); }, "rate_key"},
      {"ConcurrencyKeyOver128Bytes",
       [](TaskSpec& s, absl::Time) { s.concurrency_key = std::string(129, 'c'); },
       "concurrency_key"},
      // The proto bounds a delay at 365 days; a not_before further out is the
      // same absurd request in another form (DESIGN: "bounds on everything").
      {"NotBeforeMoreThanAYearAhead",
       [](TaskSpec& s, absl::Time now) { s.not_before = now + absl::Hours(24 * 400); },
       "not_before"},
  };
}

TEST_P(SubmitValidationTest, RejectsWithInvalidArgumentNamingFieldAndChangesNothing) {
  // Something accepted before, which must not be affected.
  TaskId before = MustSubmit(Spec("q"));
  const size_t tasks_before = broker_->task_count();
  const size_t queues_before = broker_->ListQueues().size();
  const int submitted_before = listener_.Count("submitted");

  TaskSpec spec = Spec("fresh-queue");
  GetParam().mutate(spec, Now());
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, GetParam().field));

  // The callback form gives the same answer, at once.
  auto cap = std::make_shared<SubmitCapture>();
  WaitId w = broker_->Submit(spec, absl::InfiniteFuture(), Capture(cap));
  EXPECT_EQ(w, 0u);
  ASSERT_EQ(cap->calls, 1);
  EXPECT_THAT(*cap->result,
              StatusIs(absl::StatusCode::kInvalidArgument, GetParam().field));

  EXPECT_EQ(broker_->task_count(), tasks_before);
  EXPECT_EQ(broker_->ListQueues().size(), queues_before)
      << "a rejected submit must not create its queue";
  EXPECT_EQ(listener_.Count("submitted"), submitted_before);
  QueueInfo q = GetQueue("q");
  EXPECT_EQ(q.stats.count(TaskState::kReady), 1u);
  EXPECT_EQ(StateOf(before), TaskState::kReady);
  EXPECT_EQ(LeaseOne("q").id, before);
}

INSTANTIATE_TEST_SUITE_P(
    Broker, SubmitValidationTest, ::testing::ValuesIn(InvalidSpecCases()),
    [](const ::testing::TestParamInfo<InvalidSpecCase>& info) {
      return info.param.name;
    });

TEST_F(BrokerTest, InvalidPriorityMessageNamesTheValue) {
  TaskSpec spec = Spec();
  spec.priority = 17;
  EXPECT_THAT(broker_->SubmitNow(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, "17"));
}

TEST_F(BrokerTest, LimitsAreInclusive) {
  BrokerOptions o;
  o.max_payload_bytes = 64;
  o.max_header_bytes = 32;
  Reset(o);
  TaskSpec spec = Spec();
  spec.payload = std::string(64, 'x');
  spec.headers = {{"k", std::string(31, 'v')}};  // 32 bytes of key and value
  spec.priority = 9;
  spec.retry.max_attempts = 1000;
  spec.retry.multiplier = 1.0;
  spec.retry.jitter = 1.0;
  spec.retry.initial_backoff = absl::ZeroDuration();
  spec.idempotency_key = std::string(256, 'k');
  spec.timeout = absl::Hours(24 * 7);
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(Get(r->task.id).payload.size(), 64u);
  EXPECT_EQ(r->task.priority, 9u);
  EXPECT_EQ(r->task.max_attempts, 1000u);
}

TEST_F(BrokerTest, EmptyPayloadIsAccepted) {
  TaskId id = MustSubmit(Spec("q", "t", ""));
  EXPECT_EQ(Get(id).payload, "");
  EXPECT_EQ(LeaseOne().payload, "");
}

// ── The accepted task ──

TEST_F(BrokerTest, SubmitReturnsReadyTaskWithQueueDefaults) {
  TaskSpec spec = Spec("q", "resize", std::string("\0bin\xff", 5));
  spec.headers = {{"traceparent", "00-abc-def-01"}, {"tag", "x"}};
  spec.priority = 4;
  spec.idempotency_key = "key-1";
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  ASSERT_THAT(r, IsOk());
  const TaskInfo& t = r->task;
  EXPECT_FALSE(r->deduplicated);
  EXPECT_NE(t.id.value(), 0u);
  EXPECT_EQ(t.queue, "q");
  EXPECT_EQ(t.type, "resize");
  EXPECT_THAT(t.headers, ::testing::UnorderedElementsAreArray(spec.headers));
  EXPECT_EQ(t.priority, 4u);
  EXPECT_EQ(t.state, TaskState::kReady);
  EXPECT_EQ(t.attempts, 0u);
  EXPECT_EQ(t.max_attempts, 3u);
  EXPECT_EQ(t.crashes, 0u);
  EXPECT_EQ(t.token, 0u);
  EXPECT_EQ(t.created_at, Now());
  EXPECT_EQ(t.idempotency_key, "key-1");
  EXPECT_EQ(t.timeout, absl::Minutes(5));
  EXPECT_FALSE(t.cancel_requested);

  // GetTask agrees, and carries the payload byte for byte. (Submit answers
  // need not echo the payload back to the producer that sent it.)
  TaskInfo g = Get(t.id);
  EXPECT_EQ(g.id, t.id);
  EXPECT_EQ(g.payload, std::string("\0bin\xff", 5));
  EXPECT_EQ(g.state, TaskState::kReady);
  EXPECT_EQ(listener_.Count("submitted", t.id), 1);
}

TEST_F(BrokerTest, TaskOverridesTakePrecedenceOverQueueDefaults) {
  TaskSpec spec = Spec();
  spec.retry.max_attempts = 7;
  spec.timeout = absl::Seconds(42);
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->task.max_attempts, 7u);
  EXPECT_EQ(r->task.timeout, absl::Seconds(42));
  LeasedTask l = LeaseOne();
  EXPECT_EQ(l.max_attempts, 7u);
  EXPECT_EQ(l.timeout, absl::Seconds(42));
}

TEST_F(BrokerTest, SubmitCallbackRunsBeforeReturnWhenNotWaiting) {
  auto cap = std::make_shared<SubmitCapture>();
  WaitId w = broker_->Submit(Spec(), absl::InfiniteFuture(), Capture(cap));
  EXPECT_EQ(w, 0u);
  ASSERT_EQ(cap->calls, 1);
  ASSERT_THAT(*cap->result, IsOk());
  EXPECT_EQ((*cap->result)->task.state, TaskState::kReady);
}

TEST_F(BrokerTest, SubmitCallbackMayCallBackIntoTheBroker) {
  // Callbacks run outside the lock: calling the broker from one must not
  // deadlock.
  absl::StatusOr<TaskInfo> seen = absl::UnknownError("not called");
  Broker* b = broker_.get();
  broker_->Submit(Spec(), absl::InfiniteFuture(),
                  [&seen, b](absl::StatusOr<SubmitResult> r) {
                    ASSERT_TRUE(r.ok());
                    seen = b->GetTask(r->task.id);
                  });
  ASSERT_THAT(seen, IsOk());
  EXPECT_EQ(seen->state, TaskState::kReady);
}

TEST_F(BrokerTest, TaskIdsAreUniqueAndIncreaseWithSubmitTime) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 50; ++i) {
    ids.push_back(MustSubmit(Spec(i % 2 ? "a" : "b")));
    if (i % 10 == 0) clock_.Advance(absl::Milliseconds(3));
  }
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_LT(ids[i - 1], ids[i]) << i;
    EXPECT_LT(ids[i - 1].ToString(), ids[i].ToString()) << "text sorts like the number";
  }
}

TEST(TaskIdTest, TextIsSixteenLowercaseHexDigitsAndParsesBack) {
  EXPECT_EQ(TaskId(0).ToString(), "0000000000000000");
  EXPECT_EQ(TaskId(0x18c0ffee0001abcd).ToString(), "18c0ffee0001abcd");
  EXPECT_EQ(TaskId(UINT64_MAX).ToString(), "ffffffffffffffff");
  for (uint64_t v : {uint64_t{1}, uint64_t{0x0123456789abcdef}, uint64_t{1} << 63}) {
    absl::StatusOr<TaskId> back = TaskId::Parse(TaskId(v).ToString());
    ASSERT_THAT(back, IsOk());
    EXPECT_EQ(back->value(), v);
  }
}

TEST_F(BrokerTest, DelayedTaskIsScheduled) {
  TaskSpec spec = Spec();
  spec.not_before = Now() + absl::Seconds(10);
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->task.state, TaskState::kScheduled);
  EXPECT_EQ(r->task.not_before, Now() + absl::Seconds(10));
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kScheduled), 1u);
}

TEST_F(BrokerTest, NotBeforeInThePastIsReadyAtOnce) {
  TaskSpec spec = Spec();
  spec.not_before = Now() - absl::Hours(1);
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->task.state, TaskState::kReady);
}

// ── Queue creation on submit ──

TEST_F(BrokerTest, FirstSubmitCreatesQueueWithBrokerDefaults) {
  BrokerOptions o;
  o.queue_defaults.capacity = 5;
  o.queue_defaults.lease_duration = absl::Seconds(7);
  o.queue_defaults.retry.max_attempts = 4;
  Reset(o);
  EXPECT_THAT(broker_->GetQueue("new-q"), StatusIs(absl::StatusCode::kNotFound));
  TaskId id = MustSubmit(Spec("new-q"));
  QueueInfo q = GetQueue("new-q");
  EXPECT_EQ(q.config.name, "new-q");
  EXPECT_EQ(q.config.capacity, 5u);
  EXPECT_EQ(q.config.lease_duration, absl::Seconds(7));
  EXPECT_FALSE(q.paused);
  EXPECT_EQ(q.stats.count(TaskState::kReady), 1u);
  EXPECT_EQ(Get(id).max_attempts, 4u);
  EXPECT_EQ(LeaseOne("new-q").lease_expires_at, Now() + absl::Seconds(7));
}

TEST_F(BrokerTest, SubmitToUnknownQueueIsNotFoundWhenAutoCreateIsOff) {
  BrokerOptions o;
  o.auto_create_queues = false;
  Reset(o);
  EXPECT_THAT(broker_->SubmitNow(Spec("nope")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(broker_->ListQueues().empty());
  EXPECT_EQ(broker_->task_count(), 0u);
  MustCreateQueue(Config("nope"));
  MustSubmit(Spec("nope"));
}

TEST_F(BrokerTest, SubmitCreatingQueuePastMaxQueuesIsResourceExhausted) {
  BrokerOptions o;
  o.max_queues = 2;
  Reset(o);
  MustSubmit(Spec("a"));
  MustSubmit(Spec("b"));
  EXPECT_THAT(broker_->SubmitNow(Spec("c")),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(broker_->GetQueue("c"), StatusIs(absl::StatusCode::kNotFound));
  // Existing queues still take submits.
  MustSubmit(Spec("a"));
  EXPECT_EQ(broker_->task_count(), 3u);
}

// ── Idempotency keys ──

TEST_F(BrokerTest, SameIdempotencyKeyReturnsOriginalTaskDeduplicated) {
  TaskSpec spec = Spec("q", "t", "first");
  spec.idempotency_key = "k1";
  absl::StatusOr<SubmitResult> a = broker_->SubmitNow(spec);
  ASSERT_THAT(a, IsOk());
  EXPECT_FALSE(a->deduplicated);

  spec.payload = "second";  // a different body under the same key
  absl::StatusOr<SubmitResult> b = broker_->SubmitNow(spec);
  ASSERT_THAT(b, IsOk());
  EXPECT_TRUE(b->deduplicated);
  EXPECT_EQ(b->task.id, a->task.id);
  EXPECT_EQ(Get(a->task.id).payload, "first") << "the original is kept";
  EXPECT_EQ(broker_->task_count(), 1u);
  EXPECT_EQ(GetQueue("q").stats.count(TaskState::kReady), 1u);
  EXPECT_EQ(listener_.Count("submitted"), 1);

  // Only one task to lease.
  EXPECT_THAT(LeaseNow({"q"}, 10), SizeIs(1));
}

// The key is kept inline after the payload: any bytes, any payload size
// (including none), up to the 256-byte limit, each task its own. Keys of 32
// lowercase hex digits (the library's) are stored as 16 bytes and must come
// back the same; near misses (upper case, 31 or 33 digits, a non-hex digit)
// are stored as they are, and none matches another (nor do the 16 bytes a
// hex key is stored as, sent as a key).
TEST_F(BrokerTest, IdempotencyKeysOfEverySizeAndPayloadAreKeptExactly) {
  const std::string binary_key("k\0\xff\x01", 4);
  const std::string hex = "0123456789abcdef0fedcba987654321";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "a"},
      {"payload", std::string(256, 'z')},
      {std::string(70'000, 'p'), binary_key},
      {"x", "b"},
      {"hex", hex},
      {"", std::string(32, '0')},
      {"y", std::string(32, 'f')},
      {"upper", "0123456789ABCDEF0FEDCBA987654321"},
      {"short", hex.substr(1)},
      {"long", hex + "0"},
      {"not hex", "0123456789abcdeg0fedcba987654321"},
      // The very 16 bytes `hex` is stored as, given as a key of their own.
      {"raw 16", absl::HexStringToBytes(hex)}};
  std::vector<TaskId> ids;
  for (const auto& [payload, key] : cases) {
    TaskSpec spec = Spec("q", "t", payload);
    spec.idempotency_key = key;
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
    ASSERT_THAT(r, IsOk());
    EXPECT_FALSE(r->deduplicated) << key;
    ids.push_back(r->task.id);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    TaskInfo t = Get(ids[i]);
    EXPECT_EQ(t.payload, cases[i].first);
    EXPECT_EQ(t.idempotency_key, cases[i].second);
    TaskSpec again = Spec("q", "t", "other");
    again.idempotency_key = cases[i].second;
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(again);
    ASSERT_THAT(r, IsOk());
    EXPECT_TRUE(r->deduplicated);
    EXPECT_EQ(r->task.id, ids[i]);
  }
  TaskSpec none = Spec("q", "t", "no key");
  absl::StatusOr<SubmitResult> r = broker_->SubmitNow(none);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(Get(r->task.id).idempotency_key, "");
  EXPECT_EQ(broker_->task_count(), cases.size() + 1);
}

TEST_F(BrokerTest, IdempotentResubmitAfterEndReturnsEndedTaskWithResult) {
  TaskSpec spec = Spec();
  spec.idempotency_key = "k1";
  TaskId id = MustSubmit(spec);
  LeasedTask l = LeaseOne();
  ASSERT_THAT(CompleteOne(id, l.token, "the-result"), IsOk());

  absl::StatusOr<SubmitResult> again = broker_->SubmitNow(spec);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(again->task.id, id);
  EXPECT_EQ(again->task.state, TaskState::kSucceeded);
  EXPECT_EQ(again->task.result, "the-result");
  EXPECT_TRUE(LeaseNow({"q"}).empty()) << "a dedup must enqueue nothing";
}

TEST_F(BrokerTest, IdempotencyKeyIsPerQueue) {
  TaskSpec a = Spec("qa");
  a.idempotency_key = "same";
  TaskSpec b = Spec("qb");
  b.idempotency_key = "same";
  TaskId ia = MustSubmit(a);
  absl::StatusOr<SubmitResult> rb = broker_->SubmitNow(b);
  ASSERT_THAT(rb, IsOk());
  EXPECT_FALSE(rb->deduplicated);
  EXPECT_NE(rb->task.id, ia);
  EXPECT_EQ(broker_->task_count(), 2u);
}

TEST_F(BrokerTest, IdempotentResubmitToFullQueueReturnsOriginal) {
  // DESIGN: "An idempotent resubmit returns the original task" — a client
  // retrying after a lost answer must get its task, not RESOURCE_EXHAUSTED,
  // even when the queue has filled up since.
  QueueConfig c = Config("q");
  c.capacity = 1;
  MustCreateQueue(c);
  TaskSpec spec = Spec();
  spec.idempotency_key = "k";
  TaskId id = MustSubmit(spec);
  absl::StatusOr<SubmitResult> again = broker_->SubmitNow(spec);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(again->task.id, id);
}

TEST_F(BrokerTest, EmptyIdempotencyKeyNeverDeduplicates) {
  TaskId a = MustSubmit(Spec());
  TaskId b = MustSubmit(Spec());
  EXPECT_NE(a, b);
  EXPECT_EQ(broker_->task_count(), 2u);
}

// ── SubmitBatch ──

TEST_F(BrokerTest, SubmitBatchGivesPerItemOutcomesInOrder) {
  std::vector<TaskSpec> specs;
  specs.push_back(Spec("q", "t", "one"));
  TaskSpec bad = Spec("q", "t", "two");
  bad.priority = 99;
  specs.push_back(bad);
  specs.push_back(Spec("other", "t", "three"));
  TaskSpec bad_queue = Spec("bad queue");
  specs.push_back(bad_queue);
  specs.push_back(Spec("q", "t", "five"));

  auto r = broker_->SubmitBatch(specs);
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(*r, SizeIs(5));
  ASSERT_THAT((*r)[0], IsOk());
  EXPECT_EQ(Get((*r)[0]->task.id).payload, "one");
  EXPECT_THAT((*r)[1], StatusIs(absl::StatusCode::kInvalidArgument, "priority"));
  ASSERT_THAT((*r)[2], IsOk());
  EXPECT_EQ((*r)[2]->task.queue, "other");
  EXPECT_THAT((*r)[3], StatusIs(absl::StatusCode::kInvalidArgument, "queue"));
  ASSERT_THAT((*r)[4], IsOk());
  EXPECT_EQ(Get((*r)[4]->task.id).payload, "five");
  EXPECT_LT((*r)[0]->task.id, (*r)[4]->task.id);
  EXPECT_EQ(broker_->task_count(), 3u);

  // The accepted ones are leasable, FIFO.
  std::vector<LeasedTask> got = LeaseNow({"q"}, 10);
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_EQ(got[0].payload, "one");
  EXPECT_EQ(got[1].payload, "five");
}

TEST_F(BrokerTest, SubmitBatchItemsHitCapacityOneByOne) {
  QueueConfig c = Config("q");
  c.capacity = 2;
  MustCreateQueue(c);
  auto r = broker_->SubmitBatch({Spec(), Spec(), Spec()});
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(*r, SizeIs(3));
  EXPECT_THAT((*r)[0], IsOk());
  EXPECT_THAT((*r)[1], IsOk());
  EXPECT_THAT((*r)[2], StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(BrokerTest, SubmitBatchDeduplicatesWithinTheBatch) {
  TaskSpec spec = Spec();
  spec.idempotency_key = "k";
  auto r = broker_->SubmitBatch({spec, spec});
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(*r, SizeIs(2));
  ASSERT_THAT((*r)[0], IsOk());
  ASSERT_THAT((*r)[1], IsOk());
  EXPECT_FALSE((*r)[0]->deduplicated);
  EXPECT_TRUE((*r)[1]->deduplicated);
  EXPECT_EQ((*r)[0]->task.id, (*r)[1]->task.id);
  EXPECT_EQ(broker_->task_count(), 1u);
}

TEST_F(BrokerTest, SubmitBatchWithIdsOnlyAnswersIdQueueAndStateAlone) {
  TaskSpec keyed = Spec();
  keyed.idempotency_key = "0123456789abcdef0123456789abcdef";
  keyed.headers = {{"h", "v"}};
  absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> r;
  broker_->SubmitBatch(
      {keyed, keyed, Spec()},
      [&](absl::StatusOr<std::vector<absl::StatusOr<SubmitResult>>> got) { r = std::move(got); },
      /*ids_only=*/true);
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(*r, SizeIs(3));
  for (const auto& item : *r) ASSERT_THAT(item, IsOk());
  const TaskInfo& brief = (*r)[0]->task;
  EXPECT_EQ(brief.queue, "q");
  EXPECT_EQ(brief.state, TaskState::kReady);
  EXPECT_EQ(brief.type, "");
  EXPECT_EQ(brief.idempotency_key, "");
  EXPECT_TRUE(brief.headers.empty());
  EXPECT_TRUE((*r)[1]->deduplicated);
  EXPECT_EQ((*r)[1]->task.id, brief.id);
  EXPECT_NE((*r)[2]->task.id, brief.id);
  // The task itself is stored whole.
  absl::StatusOr<TaskInfo> stored = broker_->GetTask(brief.id);
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ(stored->type, Spec().type);
  EXPECT_EQ(stored->idempotency_key, keyed.idempotency_key);
  EXPECT_EQ(stored->headers, keyed.headers);
}

TEST_F(BrokerTest, SubmitBatchOverMaxBatchCountIsRejectedWhole) {
  BrokerOptions o;
  o.max_batch_count = 3;
  Reset(o);
  auto ok = broker_->SubmitBatch({Spec(), Spec(), Spec()});
  ASSERT_THAT(ok, IsOk());
  EXPECT_THAT(*ok, SizeIs(3));
  EXPECT_EQ(broker_->task_count(), 3u);

  auto r = broker_->SubmitBatch({Spec(), Spec(), Spec(), Spec()});
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(broker_->task_count(), 3u) << "nothing of a rejected batch is enqueued";
}

TEST_F(BrokerTest, SubmitBatchOverMaxBatchBytesIsRejectedWhole) {
  BrokerOptions o;
  o.max_batch_bytes = 1000;
  Reset(o);
  std::vector<TaskSpec> specs;
  for (int i = 0; i < 3; ++i) specs.push_back(Spec("q", "t", std::string(400, 'x')));
  EXPECT_THAT(broker_->SubmitBatch(specs), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(broker_->task_count(), 0u);
  EXPECT_TRUE(broker_->ListQueues().empty());

  specs.pop_back();  // 800 payload bytes: fits
  auto r = broker_->SubmitBatch(specs);
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(*r, ElementsAre(IsOk(), IsOk()));
}

TEST_F(BrokerTest, EmptySubmitBatchIsEmpty) {
  auto r = broker_->SubmitBatch({});
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->empty());
}

}  // namespace
}  // namespace conveyor::server::broker_test
