// The broker with a journal: what is acknowledged only once durable, what a
// restart brings back, and how fencing tokens stay unique across restarts.
//
// Two journals: HeldJournal (an in-memory Journal whose writes complete only
// when the test says so, or fail) pins down ordering and gating; the real
// FileJournal in a temporary directory pins down restart and snapshots.
#include <stdlib.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/journal/file_journal.h"
#include "tests/server/broker_test_util.h"
#include "tests/server/durability_fixtures.h"

namespace conveyor::server {
namespace {

using broker_test::IsOk;
using durability_test::HeldJournal;
using durability_test::LeaseNow;
using broker_test::StatusIs;

TaskSpec Spec(const std::string& queue, const std::string& payload = "p") {
  TaskSpec spec;
  spec.queue = queue;
  spec.type = "t";
  spec.payload = payload;
  return spec;
}

TEST(BrokerHeldJournalTest, AnswersWaitForTheirWriteAndAFailedSubmitLeavesNothing) {
  FakeClock clock;
  HeldJournal journal;
  Broker broker(BrokerOptions(), &clock, nullptr, &journal);
  std::thread recover_done([&] {
    while (journal.held() == 0) std::this_thread::yield();
    journal.CompleteOne();
  });
  ASSERT_THAT(broker.Recover(), IsOk());
  recover_done.join();
  EXPECT_EQ(broker.epoch(), 1u);

  std::optional<absl::StatusOr<SubmitResult>> first;
  broker.Submit(Spec("q", "one"), absl::InfiniteFuture(),
                [&](absl::StatusOr<SubmitResult> r) { first = std::move(r); });
  EXPECT_FALSE(first.has_value()) << "answered before its record was durable";
  EXPECT_TRUE(LeaseNow(broker, "q").empty()) << "leased before its record was durable";
  journal.CompleteOne();
  ASSERT_TRUE(first.has_value());
  ASSERT_THAT(*first, IsOk());
  std::vector<LeasedTask> leased = LeaseNow(broker, "q");
  ASSERT_EQ(leased.size(), 1u);
  // Tokens carry the epoch: larger than any token of an earlier run.
  EXPECT_EQ(leased[0].token, (uint64_t{1} << 32) | 1);

  // A disk-full write: the submit fails and the task never existed.
  std::optional<absl::StatusOr<SubmitResult>> second;
  broker.Submit(Spec("q", "two"), absl::InfiniteFuture(),
                [&](absl::StatusOr<SubmitResult> r) { second = std::move(r); });
  journal.CompleteOne(absl::ResourceExhaustedError("disk full"));
  ASSERT_TRUE(second.has_value());
  EXPECT_THAT(*second, StatusIs(absl::StatusCode::kResourceExhausted));
  absl::StatusOr<QueueInfo> q = broker.GetQueue("q");
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->stats.count(TaskState::kReady) + q->stats.count(TaskState::kScheduled), 0u);
  EXPECT_EQ(q->stats.count(TaskState::kRunning), 1u);

  // A Complete is acknowledged through its ticket once durable.
  Ticket ticket = 0;
  std::vector<absl::Status> done =
      broker.Complete({CompleteItem{leased[0].id, leased[0].token, "r"}}, &ticket);
  ASSERT_THAT(done[0], IsOk());
  bool acked = false;
  broker.WhenDurable(ticket, [&](absl::Status s) {
    EXPECT_TRUE(s.ok());
    acked = true;
  });
  EXPECT_FALSE(acked);
  journal.CompleteAll();
  EXPECT_TRUE(acked);
}

// A queue created by a submit whose write failed (a full disk) is in memory
// but not on disk; a later submit to it is stored. The restart must keep that
// acknowledged task (recreating the queue with default settings), not refuse
// the journal.
TEST(BrokerHeldJournalTest, ATaskWhoseQueueRecordWasLostInAFailedWriteSurvivesARestart) {
  FakeClock clock;
  HeldJournal journal;
  {
    Broker broker(BrokerOptions(), &clock, nullptr, &journal);
    std::thread recover_done([&] {
      while (journal.held() == 0) std::this_thread::yield();
      journal.CompleteOne();
    });
    ASSERT_THAT(broker.Recover(), IsOk());
    recover_done.join();

    std::optional<absl::StatusOr<SubmitResult>> lost, kept;
    broker.Submit(Spec("fresh", "lost"), absl::InfiniteFuture(),
                  [&](absl::StatusOr<SubmitResult> r) { lost = std::move(r); });
    broker.Submit(Spec("fresh", "kept"), absl::InfiniteFuture(),
                  [&](absl::StatusOr<SubmitResult> r) { kept = std::move(r); });
    journal.CompleteOne(absl::ResourceExhaustedError("disk full"));  // queue + "lost"
    journal.CompleteOne();                                          // "kept"
    ASSERT_TRUE(lost.has_value() && kept.has_value());
    EXPECT_THAT(*lost, StatusIs(absl::StatusCode::kResourceExhausted));
    ASSERT_THAT(*kept, IsOk());
  }
  Broker restarted(BrokerOptions(), &clock, nullptr, &journal);
  std::thread recover_done([&] {
    while (journal.held() == 0) std::this_thread::yield();
    journal.CompleteAll();
  });
  ASSERT_THAT(restarted.Recover(), IsOk());
  recover_done.join();
  std::vector<LeasedTask> leased = LeaseNow(restarted, "fresh");
  ASSERT_EQ(leased.size(), 1u);
  EXPECT_EQ(leased[0].payload, "kept");
  // The queue's record was written again: a second restart needs no repair.
  absl::StatusOr<QueueInfo> q = restarted.GetQueue("fresh");
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->config.capacity, BrokerOptions().queue_defaults.capacity);
}

using FileJournalBrokerTest = durability_test::RestartTest;

TEST_F(FileJournalBrokerTest, RestartKeepsQueuesTasksResultsDeadLettersAndKeys) {
  Open();
  QueueConfig config;
  config.name = "jobs";
  config.capacity = 50;
  config.retry.max_attempts = 1;
  ASSERT_THAT(broker_->CreateQueue(config, /*paused=*/false), IsOk());
  // The library's kind of key (32 lowercase hex digits, stored packed).
  TaskSpec hex_keyed = Spec("jobs", "done");
  hex_keyed.idempotency_key = "00112233445566778899aabbccddeeff";
  absl::StatusOr<SubmitResult> done = broker_->SubmitNow(hex_keyed);
  TaskSpec keyed = Spec("jobs", "keyed");
  keyed.idempotency_key = "k-1";
  keyed.priority = 7;
  keyed.headers = {{"traceparent", "00-abc-def-01"}};
  absl::StatusOr<SubmitResult> waiting = broker_->SubmitNow(keyed);
  absl::StatusOr<SubmitResult> dead = broker_->SubmitNow(Spec("jobs", "dead"));
  ASSERT_THAT(done, IsOk());
  ASSERT_THAT(waiting, IsOk());
  ASSERT_THAT(dead, IsOk());
  std::vector<LeasedTask> leased = LeaseNow(*broker_, "jobs", 3);
  ASSERT_EQ(leased.size(), 3u);  // keyed (priority 7) first, then done, dead
  for (const LeasedTask& t : leased) {
    if (t.id == done->task.id) {
      ASSERT_THAT(broker_->Complete({CompleteItem{t.id, t.token, "42"}})[0], IsOk());
    } else if (t.id == dead->task.id) {
      ASSERT_THAT(broker_->Fail({FailItem{t.id, t.token, "boom", true, ""}})[0], IsOk());
    } else {
      ASSERT_THAT(broker_->Release({ReleaseItem{t.id, t.token}})[0], IsOk());
    }
  }
  ASSERT_THAT(broker_->PauseQueue("jobs"), IsOk());
  Crash();
  Open();

  absl::StatusOr<QueueInfo> q = broker_->GetQueue("jobs");
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->config.capacity, 50u);
  EXPECT_EQ(q->config.retry.max_attempts, 1u);
  EXPECT_TRUE(q->paused);
  absl::StatusOr<TaskInfo> t = broker_->GetTask(done->task.id);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->state, TaskState::kSucceeded);
  EXPECT_EQ(t->result, "42");
  t = broker_->GetTask(dead->task.id);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->state, TaskState::kDead);
  EXPECT_THAT(t->error, ::testing::HasSubstr("boom"));
  t = broker_->GetTask(waiting->task.id);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->state, TaskState::kReady);
  EXPECT_EQ(t->payload, "keyed");
  EXPECT_EQ(t->priority, 7u);
  EXPECT_EQ(t->attempts, 0u);
  ASSERT_EQ(t->headers.size(), 1u);
  EXPECT_EQ(t->headers[0].second, "00-abc-def-01");
  absl::StatusOr<SubmitResult> again = broker_->SubmitNow(keyed);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(again->task.id, waiting->task.id);
  absl::StatusOr<SubmitResult> hex_again = broker_->SubmitNow(hex_keyed);
  ASSERT_THAT(hex_again, IsOk());
  EXPECT_TRUE(hex_again->deduplicated);
  EXPECT_EQ(hex_again->task.id, done->task.id);
  EXPECT_EQ(hex_again->task.idempotency_key, hex_keyed.idempotency_key);
  absl::StatusOr<TaskPage> letters = broker_->ListDeadLetters("jobs", 10, "");
  ASSERT_THAT(letters, IsOk());
  ASSERT_EQ(letters->tasks.size(), 1u);
  // New ids keep increasing past the recovered ones.
  ASSERT_THAT(broker_->ResumeQueue("jobs"), IsOk());
  absl::StatusOr<SubmitResult> later = broker_->SubmitNow(Spec("jobs", "later"));
  ASSERT_THAT(later, IsOk());
  EXPECT_GT(later->task.id, dead->task.id);
}

// Values past the 15 bytes a std::string holds inline take the codec's heap
// path: a 64-byte payload, a 40-byte type, a 32-hex-digit key (stored packed)
// and a 50-byte free-form key all come back byte for byte.
TEST_F(FileJournalBrokerTest, LongPayloadsTypesAndKeysComeBackExactlyAfterARestart) {
  Open();
  std::vector<TaskSpec> specs;
  for (int i = 0; i < 3; ++i) {
    TaskSpec spec = Spec("long", std::string(64, static_cast<char>('a' + i)));
    spec.type = std::string(40, static_cast<char>('A' + i));
    specs.push_back(spec);
  }
  specs[0].idempotency_key = "00112233445566778899aabbccddeeff";
  specs[1].idempotency_key = std::string(50, 'k');
  specs[2].payload.append(std::string(1000, '\0'));  // binary, 1064 bytes
  std::vector<TaskId> ids;
  for (const TaskSpec& spec : specs) {
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
    ASSERT_THAT(r, IsOk());
    ids.push_back(r->task.id);
  }
  Crash();
  Open();
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::StatusOr<TaskInfo> t = broker_->GetTask(ids[i]);
    ASSERT_THAT(t, IsOk());
    EXPECT_EQ(t->payload, specs[i].payload) << i;
    EXPECT_EQ(t->type, specs[i].type) << i;
    EXPECT_EQ(t->idempotency_key, specs[i].idempotency_key) << i;
    if (!specs[i].idempotency_key.empty()) {
      absl::StatusOr<SubmitResult> again = broker_->SubmitNow(specs[i]);
      ASSERT_THAT(again, IsOk());
      EXPECT_TRUE(again->deduplicated) << i;
      EXPECT_EQ(again->task.id, ids[i]) << i;
    }
  }
}

// Results kept across a restart still go when their TTL, counted from their
// end before the restart, has passed.
TEST_F(FileJournalBrokerTest, KeptResultsExpireOnTheirTtlAfterARestart) {
  Open();
  QueueConfig config;
  config.name = "ttl";
  config.result_ttl = absl::Hours(1);
  ASSERT_THAT(broker_->CreateQueue(config, /*paused=*/false), IsOk());
  std::vector<TaskId> ids;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(Spec("ttl"));
    ASSERT_THAT(r, IsOk());
    std::vector<LeasedTask> l = LeaseNow(*broker_, "ttl");
    ASSERT_EQ(l.size(), 1u);
    ASSERT_THAT(broker_->Complete({CompleteItem{l[0].id, l[0].token, "r"}})[0], IsOk());
    ids.push_back(r->task.id);
    clock_.Advance(absl::Minutes(30));  // ends 30 min apart
  }
  Crash();
  Open();  // 60 min after the first end, 30 after the second
  clock_.Advance(absl::Seconds(1));
  broker_->Tick();
  EXPECT_THAT(broker_->GetTask(ids[0]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetTask(ids[1]), IsOk());
  clock_.Advance(absl::Minutes(29));
  broker_->Tick();
  EXPECT_THAT(broker_->GetTask(ids[1]), IsOk());
  clock_.Advance(absl::Minutes(1));
  broker_->Tick();
  EXPECT_THAT(broker_->GetTask(ids[1]), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(FileJournalBrokerTest, ALeasedTaskComesBackReadyAndItsOldTokenIsStale) {
  Open();
  ASSERT_THAT(broker_->SubmitNow(Spec("q")), IsOk());
  std::vector<LeasedTask> before = LeaseNow(*broker_, "q");
  ASSERT_EQ(before.size(), 1u);
  Crash();
  Open();
  absl::StatusOr<TaskInfo> t = broker_->GetTask(before[0].id);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->state, TaskState::kReady);
  EXPECT_EQ(t->attempts, 0u);  // a restart spends neither an attempt...
  EXPECT_EQ(t->crashes, 0u);   // ...nor the crash budget
  std::vector<LeasedTask> after = LeaseNow(*broker_, "q");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_GT(after[0].token, before[0].token);
  EXPECT_THAT(broker_->Complete({CompleteItem{before[0].id, before[0].token, "old"}})[0],
              StatusIs(absl::StatusCode::kFailedPrecondition, "stale"));
  EXPECT_THAT(broker_->Complete({CompleteItem{after[0].id, after[0].token, "new"}})[0], IsOk());
}

TEST_F(FileJournalBrokerTest, ACancelAcceptedWhileRunningEndsTheTaskAfterARestart) {
  Open();
  ASSERT_THAT(broker_->SubmitNow(Spec("q")), IsOk());
  std::vector<LeasedTask> leased = LeaseNow(*broker_, "q");
  ASSERT_EQ(leased.size(), 1u);
  absl::StatusOr<TaskInfo> canceled = broker_->CancelTask(leased[0].id);
  ASSERT_THAT(canceled, IsOk());
  EXPECT_TRUE(canceled->cancel_requested);
  Crash();
  Open();
  absl::StatusOr<TaskInfo> t = broker_->GetTask(leased[0].id);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->state, TaskState::kCanceled);
  EXPECT_TRUE(LeaseNow(*broker_, "q").empty());
}

TEST_F(FileJournalBrokerTest, ASnapshotPlusLaterRecordsRestoresTheSameState) {
  Open();
  std::vector<TaskId> ids;
  for (int i = 0; i < 50; ++i) {
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(Spec("q", std::to_string(i)));
    ASSERT_THAT(r, IsOk());
    ids.push_back(r->task.id);
  }
  std::vector<LeasedTask> leased = LeaseNow(*broker_, "q", 10);
  ASSERT_EQ(leased.size(), 10u);
  for (const LeasedTask& t : leased) {
    ASSERT_THAT(broker_->Complete({CompleteItem{t.id, t.token, "r" + t.payload}})[0], IsOk());
  }
  ASSERT_THAT(broker_->WriteSnapshot(), IsOk());
  // After the snapshot: more changes, recorded only in the journal.
  std::vector<LeasedTask> more = LeaseNow(*broker_, "q", 5);
  ASSERT_EQ(more.size(), 5u);
  for (const LeasedTask& t : more) {
    ASSERT_THAT(broker_->Fail({FailItem{t.id, t.token, "no", false, ""}})[0], IsOk());
  }
  ASSERT_THAT(broker_->PurgeDeadLetters("q", {more[0].id}), IsOk());
  Crash();
  Open();
  absl::StatusOr<QueueInfo> q = broker_->GetQueue("q");
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->stats.count(TaskState::kSucceeded), 10u);
  EXPECT_EQ(q->stats.count(TaskState::kDead), 4u);
  EXPECT_EQ(q->stats.count(TaskState::kReady), 35u);
  absl::StatusOr<TaskInfo> t = broker_->GetTask(leased[3].id);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->result, "r" + leased[3].payload);
  EXPECT_THAT(broker_->GetTask(more[0].id), StatusIs(absl::StatusCode::kNotFound));
}

// What a restart must bring back of one task; a RUNNING task comes back
// READY (leases are not kept).
std::string Persisted(const TaskInfo& t) {
  const TaskState state = t.state == TaskState::kRunning ? TaskState::kReady : t.state;
  return absl::StrCat(t.id.ToString(), " ", static_cast<int>(state), " attempts=", t.attempts,
                      " result=", t.result, " error=", t.error, " payload=", t.payload,
                      " key=", t.idempotency_key);
}

// Snapshots encode tasks in chunks, each under the lock; changes made
// between chunks (to tasks already encoded, not yet encoded, dropped, and
// new) are in the journal after the cut, and the restart shows them all.
TEST_F(FileJournalBrokerTest, ChangesBetweenSnapshotChunksAreAllThereAfterARestart) {
  options_.snapshot_chunk_tasks = 4;
  int chunks_seen = 0;
  std::vector<TaskId> ids;
  std::vector<LeasedTask> running;
  options_.between_snapshot_chunks = [&] {
    if (++chunks_seen != 1) return;
    // Ids sort in submit order: tasks 0-3 are encoded, 4 onwards are not.
    // Complete one encoded and one not yet encoded (both were leased).
    for (const LeasedTask& t : running) {
      if (t.id == ids[1] || t.id == ids[9]) {
        ASSERT_THAT(broker_->Complete({CompleteItem{t.id, t.token, "late-" + t.payload}})[0],
                    IsOk());
      }
      // Dead and purged before its chunk: left out of the snapshot.
      if (t.id == ids[13]) {
        ASSERT_THAT(broker_->Fail({FailItem{t.id, t.token, "bad", false, ""}})[0], IsOk());
        ASSERT_THAT(broker_->PurgeDeadLetters("q", {t.id}), IsOk());
      }
      // Dead and purged after its chunk was encoded.
      if (t.id == ids[2]) {
        ASSERT_THAT(broker_->Fail({FailItem{t.id, t.token, "bad", false, ""}})[0], IsOk());
        ASSERT_THAT(broker_->PurgeDeadLetters("q", {t.id}), IsOk());
      }
      // A failure that will be retried, in a later chunk.
      if (t.id == ids[17]) {
        ASSERT_THAT(broker_->Fail({FailItem{t.id, t.token, "again", true, ""}})[0], IsOk());
      }
    }
    // A task submitted after the cut, with an idempotency key.
    TaskSpec spec = Spec("q", "after-the-cut");
    spec.idempotency_key = "k-late";
    absl::StatusOr<SubmitResult> late = broker_->SubmitNow(spec);
    ASSERT_THAT(late, IsOk());
    ids.push_back(late->task.id);
  };
  Open();
  for (int i = 0; i < 30; ++i) {
    TaskSpec spec = Spec("q", std::to_string(i));
    spec.idempotency_key = "k" + std::to_string(i);
    absl::StatusOr<SubmitResult> r = broker_->SubmitNow(spec);
    ASSERT_THAT(r, IsOk());
    ids.push_back(r->task.id);
  }
  running = LeaseNow(*broker_, "q", 20);
  ASSERT_EQ(running.size(), 20u);
  size_t bytes = 0;
  ASSERT_THAT(broker_->WriteSnapshot(&bytes), IsOk());
  EXPECT_EQ(chunks_seen, 7);  // 30 tasks in chunks of 4: 8 chunks, 7 gaps
  EXPECT_GT(bytes, 0u);
  ASSERT_EQ(ids.size(), 31u);

  std::vector<std::string> before;
  for (TaskId id : ids) {
    absl::StatusOr<TaskInfo> t = broker_->GetTask(id);
    if (t.ok()) before.push_back(Persisted(*t));
  }
  ASSERT_EQ(before.size(), 29u);  // two purged
  // Only the snapshot and what was written after its cut are read back.
  options_.between_snapshot_chunks = nullptr;
  Crash();
  Open();
  std::vector<std::string> after;
  for (TaskId id : ids) {
    absl::StatusOr<TaskInfo> t = broker_->GetTask(id);
    if (t.ok()) after.push_back(Persisted(*t));
  }
  EXPECT_EQ(after, before);
  EXPECT_THAT(broker_->GetTask(ids[2]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(broker_->GetTask(ids[13]), StatusIs(absl::StatusCode::kNotFound));
  absl::StatusOr<TaskInfo> done = broker_->GetTask(ids[9]);
  ASSERT_THAT(done, IsOk());
  EXPECT_EQ(done->state, TaskState::kSucceeded);
  EXPECT_EQ(done->result, "late-9");
  absl::StatusOr<QueueInfo> q = broker_->GetQueue("q");
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->stats.count(TaskState::kSucceeded), 2u);
  // 10 never leased, 15 leased and back, the retry (in its backoff), the new one.
  EXPECT_EQ(q->stats.count(TaskState::kReady) + q->stats.count(TaskState::kScheduled), 27u);
  // The keys came back with their tasks: a resubmit is deduplicated.
  TaskSpec again = Spec("q", "other");
  again.idempotency_key = "k-late";
  absl::StatusOr<SubmitResult> dup = broker_->SubmitNow(again);
  ASSERT_THAT(dup, IsOk());
  EXPECT_TRUE(dup->deduplicated);
  EXPECT_EQ(dup->task.id, ids.back());
}

}  // namespace
}  // namespace conveyor::server
