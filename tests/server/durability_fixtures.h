// Journals and a restart fixture shared by the broker's durability tests
// (broker_durability_test, broker_workflow_durability_test,
// broker_schedule_test).
//
//  - HeldJournal: an in-memory Journal whose appends complete only when the
//    test says so (or fail), so a test sees the broker between "written" and
//    "durable", and fails a chosen write.
//  - RestartTest: a broker on the real FileJournal in a temporary directory,
//    with Open (a restart), Stop (a clean stop) and Crash (the process dies).
#ifndef CONVEYOR_TESTS_SERVER_DURABILITY_FIXTURES_H_
#define CONVEYOR_TESTS_SERVER_DURABILITY_FIXTURES_H_

#include <stdlib.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/journal/file_journal.h"
#include "server/journal/journal.h"
#include "tests/server/broker_test_util.h"

namespace conveyor::server::durability_test {

// A Journal whose appends wait until CompleteOne finishes them (stored if
// OK), so a test can fail a chosen write. Snapshots are kept: Recover hands
// back the last one and the records appended after its cut.
class HeldJournal final : public journal::Journal {
 public:
  absl::Status Recover(
      absl::FunctionRef<absl::Status(const journal::JournalSnapshot&)> on_snapshot,
      absl::FunctionRef<absl::Status(const journal::JournalRecord&)> on_record) override {
    journal::SequenceNumber cut = 0;
    if (snapshot_) {
      cut = snapshot_cut_;
      if (absl::Status s = on_snapshot(journal::JournalSnapshot{cut, *snapshot_}); !s.ok()) {
        return s;
      }
    }
    for (const auto& [seq, r] : stored_) {
      if (seq < cut) continue;
      if (absl::Status s = on_record(journal::JournalRecord{seq, r}); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  void Append(std::vector<std::string> records,
              std::function<void(absl::Status)> done) override {
    absl::MutexLock lock(&mu_);
    held_.push_back({appended_++, std::move(records), std::move(done)});
  }
  // The cut: every batch appended so far is covered by the snapshot.
  absl::StatusOr<journal::SequenceNumber> BeginSnapshot() override {
    absl::MutexLock lock(&mu_);
    snapshot_begun_ = true;
    return appended_;
  }
  absl::Status WriteSnapshot(journal::SequenceNumber cut, absl::string_view state) override {
    absl::MutexLock lock(&mu_);
    snapshot_ = std::string(state);
    snapshot_cut_ = cut;
    return absl::OkStatus();
  }
  absl::Status Close() override { return absl::OkStatus(); }
  journal::JournalStats stats() const override { return {}; }

  size_t held() {
    absl::MutexLock lock(&mu_);
    return held_.size();
  }
  bool snapshot_begun() {
    absl::MutexLock lock(&mu_);
    return snapshot_begun_;
  }
  void CompleteOne(absl::Status status = absl::OkStatus()) {
    Held h;
    {
      absl::MutexLock lock(&mu_);
      ASSERT_FALSE(held_.empty());
      h = std::move(held_.front());
      held_.pop_front();
    }
    if (status.ok()) {
      for (std::string& r : h.records) stored_.emplace_back(h.seq, std::move(r));
    }
    h.done(status);
  }
  void CompleteAll() {
    while (held() > 0) CompleteOne();
  }

 private:
  struct Held {
    journal::SequenceNumber seq = 0;  // the batch's number
    std::vector<std::string> records;
    std::function<void(absl::Status)> done;
  };
  absl::Mutex mu_;
  std::deque<Held> held_ ABSL_GUARDED_BY(mu_);
  journal::SequenceNumber appended_ ABSL_GUARDED_BY(mu_) = 0;
  bool snapshot_begun_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<std::string> snapshot_ ABSL_GUARDED_BY(mu_);
  journal::SequenceNumber snapshot_cut_ ABSL_GUARDED_BY(mu_) = 0;
  // Test thread only (and Recover, which the test thread calls).
  std::vector<std::pair<journal::SequenceNumber, std::string>> stored_;
};

// A broker on the real FileJournal in a fresh temporary directory.
class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/conveyor-restart-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    Stop();
    std::filesystem::remove_all(dir_);
  }
  // (Re)opens the broker on the directory, as a restart does (after a clean
  // stop if one is running).
  void Open() {
    Stop();
    journal::FileJournalOptions options;
    options.dir = dir_;
    options.segment_bytes = 1 << 20;
    absl::StatusOr<std::unique_ptr<journal::FileJournal>> j =
        journal::FileJournal::Open(std::move(options));
    ASSERT_THAT(j, broker_test::IsOk());
    journal_ = std::move(*j);
    broker_ = std::make_unique<Broker>(options_, &clock_, nullptr, journal_.get());
    ASSERT_THAT(broker_->Recover(), broker_test::IsOk());
  }
  // A clean stop: the journal writes and syncs what it holds (answering the
  // broker), then both go.
  void Stop() {
    if (journal_ != nullptr) {
      ASSERT_THAT(journal_->Close(), broker_test::IsOk());
    }
    broker_.reset();
    journal_.reset();
  }
  // A crash: the broker goes without a word; the journal's files stay as
  // written (the broker waits for writes already handed to the journal).
  void Crash() {
    broker_.reset();
    journal_.reset();
  }

  BrokerOptions options_;
  FakeClock clock_;
  std::string dir_;
  std::unique_ptr<journal::FileJournal> journal_;
  std::unique_ptr<Broker> broker_;
};

// Leases up to `max` ready tasks of `queue` at once (no wait).
inline std::vector<LeasedTask> LeaseNow(Broker& broker, const std::string& queue,
                                        uint32_t max = 100) {
  std::vector<LeasedTask> out;
  LeaseRequest req;
  req.worker_id = "w";
  req.queues = {queue};
  req.max_tasks = max;
  broker.Lease(req, [&](absl::StatusOr<std::vector<LeasedTask>> r) {
    ASSERT_TRUE(r.ok()) << r.status();
    out = std::move(*r);
  });
  return out;
}

}  // namespace conveyor::server::durability_test

#endif  // CONVEYOR_TESTS_SERVER_DURABILITY_FIXTURES_H_
