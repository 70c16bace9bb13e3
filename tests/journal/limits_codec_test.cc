// Queue limits in the journal: the codec carries every limit through a queue
// record (server/journal_codec.h), a record without limits (a queue without
// any, or a journal written before limits existed) reads back as none, and a
// broker on a real FileJournal keeps its limits across a restart, both from
// the journal's records and from a snapshot.
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/clock.h"
#include "conveyor/internal/journal.pb.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/journal/file_journal.h"
#include "server/journal_codec.h"
#include "server/limits.h"
#include "server/queue.h"

namespace conveyor::server {
namespace {

namespace pb = ::conveyor::internal;

QueueLimits EveryLimit() {
  QueueLimits l;
  l.rate = RateLimit{50, 5};
  l.max_running = 20;
  l.key_rate = RateLimit{0.5, 0};
  l.key_rates["acme"] = RateLimit{10, 1};
  l.key_rates["globex"] = RateLimit{100.0 / 60, 3};
  l.key_max_running = 2;
  l.pools["db"] = 5;
  l.pools["s3"] = 64;
  return l;
}

QueueConfig RoundTrip(const QueueConfig& config, bool paused) {
  absl::StatusOr<pb::JournalEntry> e = DecodeEntry(EncodeQueue(config, paused));
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return QueueConfig();
  EXPECT_TRUE(e->has_queue());
  EXPECT_EQ(e->queue().paused(), paused);
  return QueueConfigFromRecord(e->queue());
}

TEST(LimitsCodecTest, QueueRecordCarriesEveryLimitExactly) {
  QueueConfig config;
  config.name = "api";
  config.limits = EveryLimit();
  QueueConfig back = RoundTrip(config, /*paused=*/true);
  EXPECT_EQ(back.name, "api");
  EXPECT_EQ(back.limits, config.limits);
  ASSERT_TRUE(back.limits.key_rate.has_value());
  EXPECT_EQ(back.limits.key_rate->per_second, 0.5);
  EXPECT_EQ(back.limits.key_rates.at("globex").per_second, 100.0 / 60);
  EXPECT_EQ(back.limits.PoolOf("db"), 5u);
  EXPECT_EQ(back.limits.PoolOf("other"), 2u);
}

TEST(LimitsCodecTest, UnsetRatesStayUnsetAndZeroSizesStayZero) {
  QueueConfig config;
  config.name = "pools-only";
  config.limits.pools["db"] = 1;
  QueueConfig back = RoundTrip(config, /*paused=*/false);
  EXPECT_FALSE(back.limits.rate.has_value());
  EXPECT_FALSE(back.limits.key_rate.has_value());
  EXPECT_EQ(back.limits.max_running, 0u);
  EXPECT_EQ(back.limits.key_max_running, 0u);
  EXPECT_EQ(back.limits, config.limits);
}

TEST(LimitsCodecTest, QueueWithoutLimitsWritesNoLimitsRecord) {
  QueueConfig config;
  config.name = "plain";
  absl::StatusOr<pb::JournalEntry> e = DecodeEntry(EncodeQueue(config, false));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_FALSE(e->queue().has_limits());
  EXPECT_TRUE(QueueConfigFromRecord(e->queue()).limits.empty());
}

TEST(LimitsCodecTest, RecordFromBeforeLimitsExistedReadsAsNoLimits) {
  // A queue record as older brokers wrote it: fields 1-10, no field 11.
  pb::JournalEntry old;
  old.mutable_queue()->set_name("legacy");
  old.mutable_queue()->set_capacity(7);
  std::string bytes;
  ASSERT_TRUE(old.SerializeToString(&bytes));
  absl::StatusOr<pb::JournalEntry> e = DecodeEntry(bytes);
  ASSERT_TRUE(e.ok()) << e.status();
  QueueConfig back = QueueConfigFromRecord(e->queue());
  EXPECT_EQ(back.capacity, 7u);
  EXPECT_TRUE(back.limits.empty());
}

// A broker on a real FileJournal in a temporary directory, reopened as a
// restart does.
class LimitsJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/conveyor-limits-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    broker_.reset();
    if (journal_ != nullptr) (void)journal_->Close();
    journal_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    broker_.reset();
    if (journal_ != nullptr) {
      ASSERT_TRUE(journal_->Close().ok());
    }
    journal_.reset();
    journal::FileJournalOptions options;
    options.dir = dir_;
    options.segment_bytes = 1 << 20;
    absl::StatusOr<std::unique_ptr<journal::FileJournal>> j =
        journal::FileJournal::Open(std::move(options));
    ASSERT_TRUE(j.ok()) << j.status();
    journal_ = std::move(*j);
    broker_ = std::make_unique<Broker>(BrokerOptions(), &clock_, nullptr, journal_.get());
    absl::Status recovered = broker_->Recover();
    ASSERT_TRUE(recovered.ok()) << recovered;
  }
  QueueLimits LimitsOf(const std::string& name) {
    absl::StatusOr<QueueInfo> q = broker_->GetQueue(name);
    EXPECT_TRUE(q.ok()) << q.status();
    return q.ok() ? q->config.limits : QueueLimits();
  }

  FakeClock clock_;
  std::string dir_;
  std::unique_ptr<journal::FileJournal> journal_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(LimitsJournalTest, LimitsAndTheirUpdatesSurviveARestart) {
  Reopen();
  QueueConfig config;
  config.name = "api";
  config.limits = EveryLimit();
  ASSERT_TRUE(broker_->CreateQueue(config, /*paused=*/false).ok());
  QueueUpdate update;
  update.limits.pools["db"] = 0;  // removes the pool
  update.limits.rate = RateLimit{0, 0};  // removes the queue's rate
  update.limits.key_max_running = 4;
  ASSERT_TRUE(broker_->UpdateQueue("api", update).ok());
  QueueLimits expected = config.limits;
  expected.pools.erase("db");
  expected.rate.reset();
  expected.key_max_running = 4;
  ASSERT_EQ(LimitsOf("api"), expected);

  Reopen();
  EXPECT_EQ(LimitsOf("api"), expected);
}

TEST_F(LimitsJournalTest, LimitsSurviveASnapshotAndLaterRemovalsToo) {
  Reopen();
  QueueConfig config;
  config.name = "api";
  config.limits = EveryLimit();
  ASSERT_TRUE(broker_->CreateQueue(config, /*paused=*/false).ok());
  ASSERT_TRUE(broker_->WriteSnapshot().ok());
  Reopen();
  EXPECT_EQ(LimitsOf("api"), config.limits);

  // After the snapshot: every limit removed, recorded only in the journal.
  QueueUpdate update;
  update.limits.rate = RateLimit{0, 0};
  update.limits.max_running = 0;
  update.limits.key_rate = RateLimit{0, 0};
  update.limits.key_rates = {{"acme", RateLimit{0, 0}}, {"globex", RateLimit{0, 0}}};
  update.limits.key_max_running = 0;
  update.limits.pools = {{"db", 0}, {"s3", 0}};
  ASSERT_TRUE(broker_->UpdateQueue("api", update).ok());
  ASSERT_TRUE(LimitsOf("api").empty());
  Reopen();
  EXPECT_TRUE(LimitsOf("api").empty());
}

}  // namespace
}  // namespace conveyor::server
