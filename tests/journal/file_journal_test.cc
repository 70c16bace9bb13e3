// FileJournal on FakeEnv: writing, group commit, fsync policies, recovery,
// torn tails, corruption, a full disk, fatal I/O errors, snapshots, locking.
#include "server/journal/file_journal.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/fake_env.h"
#include "server/journal/format.h"
#include "tests/journal/journal_test_util.h"

namespace conveyor::server::journal {
namespace {

using ::conveyor::server::journal::testing::AppendAndWait;
using ::conveyor::server::journal::testing::DoneLog;
using ::conveyor::server::journal::testing::IsOk;
using ::conveyor::server::journal::testing::Recovered;
using ::conveyor::server::journal::testing::RecoverAll;
using ::conveyor::server::journal::testing::StatusIs;
using ::conveyor::server::journal::testing::SyncGate;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kDir[] = "/data";
constexpr uint64_t kSegmentBytes = 4096;

std::string Rec(int i, size_t size = 20) {
  std::string s = absl::StrCat("record-", i, "-");
  s.resize(std::max(size, s.size()), static_cast<char>('a' + i % 26));
  return s;
}

std::string SegPath(uint64_t n) { return JoinPath(kDir, SegmentFileName(n)); }

class FileJournalTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(env_.CreateDir("/"), IsOk()); }

  FileJournalOptions Options(const std::string& policy = "always") {
    FileJournalOptions o;
    o.dir = kDir;
    o.env = &env_;
    o.fsync = *ParseFsyncPolicy(policy);
    o.segment_bytes = kSegmentBytes;
    o.zero_fill_ahead = 0;  // Off here; the zero-fill tests below turn it on.
    o.on_fatal = [this](absl::Status s) {
      absl::MutexLock lock(&fatal_mu_);
      fatal_calls_.push_back(std::move(s));
    };
    return o;
  }

  std::unique_ptr<FileJournal> OpenJournal(FileJournalOptions o) {
    auto j = FileJournal::Open(std::move(o));
    EXPECT_THAT(j, IsOk());
    return j.ok() ? *std::move(j) : nullptr;
  }

  // Opens and recovers; `out` gets what was recovered.
  std::unique_ptr<FileJournal> OpenAndRecover(FileJournalOptions o,
                                              Recovered* out = nullptr) {
    std::unique_ptr<FileJournal> j = OpenJournal(std::move(o));
    if (j == nullptr) return nullptr;
    absl::StatusOr<Recovered> r = RecoverAll(*j);
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return nullptr;
    if (out != nullptr) *out = *std::move(r);
    return j;
  }

  absl::StatusOr<Recovered> Reopen(const std::string& policy = "always") {
    auto j = FileJournal::Open(Options(policy));
    if (!j.ok()) return j.status();
    return RecoverAll(**j);
  }

  std::vector<std::string> SegmentFiles() {
    std::vector<std::string> out;
    const std::vector<std::string> names = *env_.ListDir(kDir);
    for (const std::string& name : names) {
      uint64_t n;
      if (ParseSegmentFileName(name, &n)) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::vector<absl::Status> FatalCalls() {
    absl::MutexLock lock(&fatal_mu_);
    return fatal_calls_;
  }

  FakeEnv env_;
  absl::Mutex fatal_mu_;
  std::vector<absl::Status> fatal_calls_ ABSL_GUARDED_BY(fatal_mu_);
};

// ── Writing and reading back ──

TEST_F(FileJournalTest, RoundTripOfManyRecordsAcrossSeveralSegments) {
  std::vector<std::string> all;
  {
    auto j = OpenAndRecover(Options());
    ASSERT_NE(j, nullptr);
    int n = 0;
    for (int batch = 0; batch < 120; ++batch) {
      std::vector<std::string> records;
      for (int k = 0; k <= batch % 4; ++k) {
        records.push_back(Rec(n, 10 + (n * 37) % 150));
        all.push_back(records.back());
        ++n;
      }
      ASSERT_THAT(AppendAndWait(*j, records), IsOk());
    }
    ASSERT_THAT(j->Close(), IsOk());
  }
  EXPECT_GE(SegmentFiles().size(), 4u);
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->snapshot.has_value());
  EXPECT_THAT(r->Data(), ElementsAreArray(all));
  for (size_t i = 0; i < r->records.size(); ++i) {
    EXPECT_EQ(r->records[i].first, i + 1) << "sequence numbers count from 1";
  }
}

TEST_F(FileJournalTest, SegmentsArePreallocatedAndTheZeroTailIsNotCorruption) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
    ASSERT_THAT(j->Close(), IsOk());
  }
  auto size = env_.GetFileSize(SegPath(1));
  ASSERT_THAT(size, IsOk());
  EXPECT_EQ(*size, kSegmentBytes);
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1)));
}

TEST_F(FileJournalTest, RecoveryContinuesTheSequenceAndTheLastSegment) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1), Rec(2)}), IsOk());
  }
  {
    Recovered r;
    auto j = OpenAndRecover(Options(), &r);
    ASSERT_THAT(r.records, SizeIs(2));
    ASSERT_THAT(AppendAndWait(*j, {Rec(3)}), IsOk());
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1), Rec(2), Rec(3)));
  EXPECT_EQ(r->records[2].first, 3u);
  EXPECT_THAT(SegmentFiles(), SizeIs(1)) << "appends resume in the last segment";
}

TEST_F(FileJournalTest, BatchLargerThanASegmentGetsASegmentOfItsOwn) {
  std::vector<std::string> big;
  for (int i = 0; i < 10; ++i) big.push_back(Rec(i, 1000));
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(100)}), IsOk());
    ASSERT_THAT(AppendAndWait(*j, big), IsOk());
    ASSERT_THAT(AppendAndWait(*j, {Rec(101)}), IsOk());
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  std::vector<std::string> want = {Rec(100)};
  want.insert(want.end(), big.begin(), big.end());
  want.push_back(Rec(101));
  EXPECT_THAT(r->Data(), ElementsAreArray(want));
  EXPECT_THAT(SegmentFiles(), SizeIs(3));
}

TEST_F(FileJournalTest, EmptyBatchSucceeds) {
  auto j = OpenAndRecover(Options());
  EXPECT_THAT(AppendAndWait(*j, {}), IsOk());
  EXPECT_THAT(AppendAndWait(*j, {""}), IsOk());
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(""));
}

TEST_F(FileJournalTest, OversizedRecordIsInvalidArgument) {
  FileJournalOptions o = Options();
  o.max_record_bytes = 100;
  auto j = OpenAndRecover(o);
  EXPECT_THAT(AppendAndWait(*j, {Rec(1), std::string(101, 'x')}),
              StatusIs(absl::StatusCode::kInvalidArgument, "101 bytes"));
  EXPECT_THAT(AppendAndWait(*j, {std::string(100, 'x')}), IsOk());
}

TEST_F(FileJournalTest, AppendBeforeRecoverAndAfterCloseIsRefused) {
  auto j = OpenJournal(Options());
  EXPECT_THAT(AppendAndWait(*j, {Rec(1)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not recovered"));
  ASSERT_THAT(RecoverAll(*j), IsOk());
  EXPECT_THAT(RecoverAll(*j), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(j->Close(), IsOk());
  EXPECT_THAT(AppendAndWait(*j, {Rec(1)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "closed"));
  EXPECT_THAT(j->Close(), IsOk()) << "Close is idempotent";
}

TEST_F(FileJournalTest, RecoverCallbackErrorStopsRecovery) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  }
  auto j = OpenJournal(Options());
  absl::Status s = j->Recover(
      [](const JournalSnapshot&) { return absl::OkStatus(); },
      [](const JournalRecord&) { return absl::AbortedError("no thanks"); });
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kAborted, "no thanks"));
  EXPECT_THAT(AppendAndWait(*j, {Rec(2)}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// ── Group commit and fsync policies ──

TEST_F(FileJournalTest, GroupCommitSyncsOnceForEverythingQueuedDuringASync) {
  SyncGate gate;
  env_.SetSyncHook(gate.Hook());
  FileJournalOptions o = Options();
  o.segment_bytes = 1 << 20;  // Everything fits in one segment.
  auto j = OpenAndRecover(o);
  const int64_t syncs_before = env_.counters().data_syncs;

  DoneLog log;
  gate.Arm();
  j->Append({Rec(0)}, log.Callback(0));
  gate.WaitUntilHeld();  // The writer is inside the first fdatasync.

  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        int id = 1 + t * kPerThread + i;
        j->Append({Rec(id)}, log.Callback(id));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(log.size(), 0u) << "nothing is acknowledged before its sync";
  gate.Release();

  constexpr int kAppends = 1 + kThreads * kPerThread;
  auto results = log.WaitFor(kAppends);
  for (const auto& [id, status] : results) EXPECT_THAT(status, IsOk()) << id;
  const int64_t syncs = env_.counters().data_syncs - syncs_before;
  EXPECT_EQ(syncs, 2) << "one sync for the first append, one for the 200 "
                         "queued behind it";
  EXPECT_LT(syncs, kAppends);
  EXPECT_EQ(j->stats().group_commits, 2u);
  EXPECT_EQ(j->stats().appends, static_cast<uint64_t>(kAppends));
}

TEST_F(FileJournalTest, ConcurrentAppendersAllLandInSequenceOrder) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 200;
  {
    auto j = OpenAndRecover(Options());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          ASSERT_THAT(AppendAndWait(*j, {absl::StrCat(t, ":", i)}), IsOk());
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_LE(j->stats().syncs, static_cast<uint64_t>(kThreads * kPerThread));
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(r->records, SizeIs(kThreads * kPerThread));
  // Each appender's records appear in its own order.
  std::vector<int> next(kThreads, 0);
  for (const auto& [seq, data] : r->records) {
    int t = data[0] - '0';
    EXPECT_EQ(data, absl::StrCat(t, ":", next[t]));
    ++next[t];
  }
}

TEST_F(FileJournalTest, AlwaysPolicySyncsBeforeTheCallbackRuns) {
  auto j = OpenAndRecover(Options("always"));
  const int64_t before = env_.counters().data_syncs;
  std::atomic<int64_t> seen{-1};
  absl::Notification n;
  j->Append({Rec(1)}, [&](absl::Status s) {
    EXPECT_THAT(s, IsOk());
    seen = env_.counters().data_syncs;
    n.Notify();
  });
  n.WaitForNotification();
  EXPECT_EQ(seen.load(), before + 1);
}

TEST_F(FileJournalTest, NeverPolicyAcknowledgesWithoutSyncing) {
  auto j = OpenAndRecover(Options("never"));
  ASSERT_THAT(AppendAndWait(*j, {Rec(0)}), IsOk());  // Creates the segment.
  const FakeEnv::Counters before = env_.counters();
  for (int i = 1; i < 20; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
  EXPECT_EQ(env_.counters().file_syncs(), before.file_syncs());
  EXPECT_EQ(j->stats().syncs, 0u);
  ASSERT_THAT(j->Close(), IsOk());
  EXPECT_EQ(env_.counters().data_syncs, before.data_syncs + 1)
      << "Close syncs whatever the policy";
}

TEST_F(FileJournalTest, IntervalPolicyAcknowledgesBeforeTheSync) {
  auto j = OpenAndRecover(Options("interval:3600000"));
  const int64_t before = env_.counters().data_syncs;
  for (int i = 0; i < 20; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
  EXPECT_EQ(env_.counters().data_syncs, before) << "no sync within the hour";
  ASSERT_THAT(j->Close(), IsOk());
  EXPECT_EQ(env_.counters().data_syncs, before + 1);
}

TEST_F(FileJournalTest, IntervalPolicySyncsOnItsOwnAfterTheInterval) {
  auto j = OpenAndRecover(Options("interval:5"));
  const int64_t before = env_.counters().data_syncs;
  ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  // The writer's timer fires without further appends (bounded wait).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (j->stats().syncs == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(j->stats().syncs, 1u);
  EXPECT_EQ(env_.counters().data_syncs, before + 1);
}

TEST_F(FileJournalTest, EveryAcknowledgedRecordSurvivesACrashUnderAlways) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  auto j = OpenAndRecover(Options("always"));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ASSERT_THAT(AppendAndWait(*j, {Rec(t * kPerThread + i, 100)}), IsOk());
      }
    });
  }
  for (auto& t : threads) t.join();
  env_.Crash();  // No Close: whatever was acknowledged must be on disk.
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->records, SizeIs(kThreads * kPerThread));
}

TEST_F(FileJournalTest, UnsyncedRecordsUnderNeverAreLostInACrashButNothingBreaks) {
  {
    auto j = OpenAndRecover(Options("always"));
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  }
  auto j = OpenAndRecover(Options("never"));
  ASSERT_THAT(AppendAndWait(*j, {Rec(2)}), IsOk());
  env_.Crash();
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1)));
}

TEST_F(FileJournalTest, ListenerSeesEveryWriteAndSync) {
  struct Listener : JournalListener {
    void OnSync(absl::Duration) override { ++syncs; }
    void OnWrite(uint64_t b) override { bytes += b; }
    std::atomic<uint64_t> syncs{0};
    std::atomic<uint64_t> bytes{0};
  } listener;
  FileJournalOptions o = Options();
  o.listener = &listener;
  auto j = OpenAndRecover(o);
  for (int i = 0; i < 10; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
  JournalStats st = j->stats();
  EXPECT_EQ(listener.syncs.load(), st.syncs);
  EXPECT_EQ(st.syncs, 10u);
  EXPECT_EQ(st.records_written, 10u);
  EXPECT_EQ(listener.bytes.load(), 10 * EncodedRecordSize(Rec(0).size()));
  EXPECT_EQ(st.bytes_written, listener.bytes.load() + kSegmentHeaderSize);
  EXPECT_EQ(st.segments_created, 1u);
}

// ── Zero-filling ahead ──

// Zeros written ahead (a small distance, big records that often jump past
// it, many batches in flight) across several segments: every record still
// comes back whole, in order, so no zeros landed on data.
TEST_F(FileJournalTest, ZeroFillAheadNeverLandsOnRecordsAcrossSegments) {
  for (const uint64_t ahead : {uint64_t{4096}, uint64_t{16} << 10}) {
    SCOPED_TRACE(absl::StrCat("zero_fill_ahead ", ahead));
    ASSERT_THAT(env_.CreateDir(kDir), IsOk());
    std::vector<std::string> all;
    {
      FileJournalOptions o = Options();
      o.segment_bytes = 64 << 10;
      o.zero_fill_ahead = ahead;
      auto j = OpenAndRecover(std::move(o));
      ASSERT_NE(j, nullptr);
      // The first segment is created by the first write.
      ASSERT_THAT(AppendAndWait(*j, {Rec(-1)}), IsOk());
      all.push_back(Rec(-1));
      EXPECT_EQ(j->stats().bytes_zero_filled, ahead) << "zeros up to `ahead` past the data";
      DoneLog log;
      int n = 0;
      for (int batch = 0; batch < 300; ++batch) {
        std::vector<std::string> records;
        for (int k = 0; k <= batch % 3; ++k) {
          records.push_back(Rec(n, 200 + (n * 397) % 2900));
          all.push_back(records.back());
          ++n;
        }
        j->Append(std::move(records), log.Callback(batch));
        if (batch % 25 == 0) log.WaitFor(static_cast<size_t>(batch) + 1);
      }
      for (const auto& [id, status] : log.WaitFor(300)) {
        EXPECT_THAT(status, IsOk()) << "batch " << id;
      }
      EXPECT_GE(j->stats().bytes_zero_filled, 64u << 10) << "they followed the data";
      EXPECT_THAT(j->Close(), IsOk());
    }
    EXPECT_GE(SegmentFiles().size(), 4u);
    auto r = Reopen();
    ASSERT_THAT(r, IsOk());
    EXPECT_THAT(r->Data(), ElementsAreArray(all));
    EXPECT_THAT(FatalCalls(), IsEmpty());
    const std::vector<std::string> names = *env_.ListDir(kDir);
    for (const std::string& name : names) {
      ASSERT_THAT(env_.RemoveFile(JoinPath(kDir, name)), IsOk());
    }
  }
}

TEST_F(FileJournalTest, AcknowledgedRecordsSurviveACrashWithZerosAhead) {
  FileJournalOptions o = Options();
  o.segment_bytes = 64 << 10;
  o.zero_fill_ahead = 8 << 10;
  auto j = OpenAndRecover(o);
  ASSERT_NE(j, nullptr);
  std::vector<std::string> acked;
  for (int i = 0; i < 120; ++i) {
    ASSERT_THAT(AppendAndWait(*j, {Rec(i, 700)}), IsOk());
    acked.push_back(Rec(i, 700));
  }
  EXPECT_GT(j->stats().bytes_zero_filled, 0u);
  env_.Crash();  // No Close.
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAreArray(acked));
}

// A failed zero write costs speed, never data: the journal carries on and
// is not stopped.
TEST_F(FileJournalTest, AFailingZeroFillIsNotFatal) {
  env_.SetWriteErrorIf([](absl::string_view data) {
    return data.find_first_not_of('\0') == absl::string_view::npos;
  });
  FileJournalOptions o = Options();
  o.segment_bytes = 64 << 10;
  o.zero_fill_ahead = 8 << 10;
  std::vector<std::string> all;
  {
    auto j = OpenAndRecover(o);
    ASSERT_NE(j, nullptr);
    for (int i = 0; i < 200; ++i) {
      ASSERT_THAT(AppendAndWait(*j, {Rec(i, 900)}), IsOk());
      all.push_back(Rec(i, 900));
    }
    EXPECT_EQ(j->stats().bytes_zero_filled, 0u);
    EXPECT_GE(j->stats().segments_created, 3u) << "a new segment is tried again";
    EXPECT_THAT(j->Close(), IsOk());
  }
  EXPECT_THAT(FatalCalls(), IsEmpty());
  env_.SetWriteErrorIf(nullptr);
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAreArray(all));
}

// ── Torn tails and corruption ──

TEST_F(FileJournalTest, TornTailIsDroppedAndWritingResumesAfterTheLastWholeRecord) {
  {
    auto j = OpenAndRecover(Options("always"));
    for (int i = 1; i <= 10; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
  }
  {
    // Four more records, written but not synced; the machine dies with two
    // and a half of them on disk.
    auto j = OpenAndRecover(Options("never"));
    for (int i = 11; i <= 14; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
    const size_t rec = EncodedRecordSize(Rec(11).size());
    env_.Crash(2 * rec + rec / 2);
    j.reset();
  }
  const size_t whole_end = kSegmentHeaderSize + 12 * EncodedRecordSize(Rec(1).size());
  {
    Recovered r;
    auto j = OpenAndRecover(Options("always"), &r);
    ASSERT_NE(j, nullptr);
    std::vector<std::string> want;
    for (int i = 1; i <= 12; ++i) want.push_back(Rec(i));
    EXPECT_THAT(r.Data(), ElementsAreArray(want));
    // The torn bytes are gone and the preallocated zeros are back.
    std::string data = *env_.Contents(SegPath(1));
    EXPECT_EQ(data.size(), kSegmentBytes);
    EXPECT_EQ(data.find_first_not_of('\0', whole_end), std::string::npos);
    ASSERT_THAT(AppendAndWait(*j, {Rec(15)}), IsOk());
    ASSERT_THAT(AppendAndWait(*j, {Rec(16)}), IsOk());
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  std::vector<std::string> want;
  for (int i = 1; i <= 12; ++i) want.push_back(Rec(i));
  want.push_back(Rec(15));
  want.push_back(Rec(16));
  EXPECT_THAT(r->Data(), ElementsAreArray(want));
  EXPECT_EQ(r->records[12].first, 13u) << "the sequence resumes after the last whole record";
}

TEST_F(FileJournalTest, TornBatchIsDroppedWhole) {
  {
    auto j = OpenAndRecover(Options("always"));
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  }
  {
    auto j = OpenAndRecover(Options("never"));
    ASSERT_THAT(AppendAndWait(*j, {Rec(2), Rec(3), Rec(4)}), IsOk());
    env_.Crash(2 * EncodedRecordSize(Rec(2).size()));  // two whole records of three
    j.reset();
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1)));
}

TEST_F(FileJournalTest, CorruptionBeforeTheTailIsDataLossNamingFileAndOffset) {
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 20; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
  }
  std::string data = *env_.Contents(SegPath(1));
  const size_t rec = EncodedRecordSize(Rec(0).size());
  const size_t offset = kSegmentHeaderSize + 5 * rec;
  data[offset + kRecordHeaderSize + kSeqSize + 2] ^= 0x40;  // a payload byte
  env_.SetContents(SegPath(1), data);
  auto r = Reopen();
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDataLoss, SegPath(1)));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDataLoss,
                          absl::StrCat("at offset ", offset, ": record checksum")));
}

TEST_F(FileJournalTest, ImpossibleLengthBeforeTheTailIsDataLoss) {
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 5; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i)}), IsOk());
  }
  std::string data = *env_.Contents(SegPath(1));
  const size_t offset = kSegmentHeaderSize + 2 * EncodedRecordSize(Rec(0).size());
  data[offset + 2] = '\x10';
  env_.SetContents(SegPath(1), data);
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss,
                                 absl::StrCat("at offset ", offset,
                                              ": impossible record length")));
}

TEST_F(FileJournalTest, DamageAtTheEndOfANonLastSegmentIsDataLoss) {
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 60; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
  }
  ASSERT_GE(SegmentFiles().size(), 2u);
  // Garbage right after the last record of segment 1 looks like a torn
  // tail, but segment 1 was synced before segment 2 existed: corruption.
  std::string data = *env_.Contents(SegPath(1));
  SegmentScan scan = ScanSegment(data, 0);
  ASSERT_EQ(scan.tail, SegmentScan::Tail::kClean);
  data[scan.end] = '\x33';
  data[scan.end + 5] = '\x44';
  env_.SetContents(SegPath(1), data);
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss,
                                 absl::StrCat(SegPath(1), " at offset ", scan.end)));
}

TEST_F(FileJournalTest, MissingMiddleSegmentIsDataLoss) {
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 120; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
  }
  ASSERT_GE(SegmentFiles().size(), 3u);
  ASSERT_THAT(env_.RemoveFile(SegPath(2)), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss,
                                 absl::StrCat(SegmentFileName(2), " is missing")));
}

TEST_F(FileJournalTest, MissingFirstSegmentWithoutASnapshotIsDataLoss) {
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 120; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
  }
  ASSERT_GE(SegmentFiles().size(), 3u);
  // Nothing ever covered segment 1's records: losing it is data loss, not a
  // journal that simply starts later.
  ASSERT_THAT(env_.RemoveFile(SegPath(1)), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss,
                                 absl::StrCat(SegmentFileName(1), " is missing")));
}

TEST_F(FileJournalTest, DamagedSegmentHeaderIsDataLoss) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  }
  std::string data = *env_.Contents(SegPath(1));
  data[12] ^= 1;
  env_.SetContents(SegPath(1), data);
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss,
                                 absl::StrCat(SegPath(1), " at offset 0")));
}

TEST_F(FileJournalTest, InterruptedSegmentCreationLeavesNoTrace) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  }
  env_.SetContents(SegPath(2) + ".tmp", std::string(100, '\0'));
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1)));
  EXPECT_FALSE(env_.FileExists(SegPath(2) + ".tmp"));
}

// ── A full disk ──

TEST_F(FileJournalTest, DiskFullAtSegmentCreationRefusesTheBatchUntilSpaceReturns) {
  auto j = OpenAndRecover(Options());
  // Three 1000-byte records fill most of a 4096-byte segment.
  for (int i = 1; i <= 3; ++i) {
    ASSERT_THAT(AppendAndWait(*j, {Rec(i, 1000)}), IsOk());
  }
  env_.SetNoSpace(true);
  EXPECT_THAT(AppendAndWait(*j, {Rec(4, 1000)}),
              StatusIs(absl::StatusCode::kResourceExhausted, "errno 28"));
  EXPECT_THAT(AppendAndWait(*j, {Rec(5, 1000), Rec(6, 10)}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // A small record still fits in the current segment: no new segment needed.
  EXPECT_THAT(AppendAndWait(*j, {Rec(7, 10)}), IsOk());
  EXPECT_EQ(j->stats().no_space_batches, 2u);
  EXPECT_THAT(FatalCalls(), IsEmpty()) << "a full disk is not fatal";

  env_.SetNoSpace(false);
  EXPECT_THAT(AppendAndWait(*j, {Rec(8, 1000)}), IsOk());
  ASSERT_THAT(j->Close(), IsOk());

  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1, 1000), Rec(2, 1000), Rec(3, 1000),
                                     Rec(7, 10), Rec(8, 1000)));
  EXPECT_THAT(SegmentFiles(), SizeIs(2));
  for (const std::string& f : env_.AllFiles()) {
    EXPECT_FALSE(absl::EndsWith(f, ".tmp")) << f;
  }
}

TEST_F(FileJournalTest, DiskFullOnAFreshJournalThenRecovers) {
  auto j = OpenAndRecover(Options());
  env_.SetNoSpace(true);
  EXPECT_THAT(AppendAndWait(*j, {Rec(1)}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  env_.SetNoSpace(false);
  EXPECT_THAT(AppendAndWait(*j, {Rec(2)}), IsOk());
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(2)));
}

TEST_F(FileJournalTest, DiskFullInTheMiddleOfAGroupSplitsItCleanly) {
  SyncGate gate;
  env_.SetSyncHook(gate.Hook());
  auto j = OpenAndRecover(Options());
  ASSERT_THAT(AppendAndWait(*j, {Rec(1, 1000)}), IsOk());
  DoneLog log;
  gate.Arm();
  j->Append({Rec(2, 1000)}, log.Callback(2));
  gate.WaitUntilHeld();
  // Queued behind the held sync, so written as one group: 3 fits in the
  // segment, 4 needs a new one (refused), 5 is small and still fits.
  j->Append({Rec(3, 1000)}, log.Callback(3));
  j->Append({Rec(4, 1000)}, log.Callback(4));
  j->Append({Rec(5, 10)}, log.Callback(5));
  env_.SetNoSpace(true);
  gate.Release();
  auto results = log.WaitFor(4);
  ASSERT_THAT(results, SizeIs(4));
  EXPECT_EQ(results[2].first, 4);
  EXPECT_THAT(results[0].second, IsOk());
  EXPECT_THAT(results[1].second, IsOk());
  EXPECT_THAT(results[2].second, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(results[3].second, IsOk());
  env_.SetNoSpace(false);
  ASSERT_THAT(AppendAndWait(*j, {Rec(6, 1000)}), IsOk());
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1, 1000), Rec(2, 1000), Rec(3, 1000),
                                     Rec(5, 10), Rec(6, 1000)));
}

// ── Fatal I/O errors ──

TEST_F(FileJournalTest, SyncErrorIsFatalAndFailsEveryPendingAppend) {
  SyncGate gate;
  env_.SetSyncHook(gate.Hook());
  auto j = OpenAndRecover(Options());
  ASSERT_THAT(AppendAndWait(*j, {Rec(0)}), IsOk());

  DoneLog log;
  gate.Arm();
  j->Append({Rec(1)}, log.Callback(1));
  gate.WaitUntilHeld();
  for (int i = 2; i <= 10; ++i) j->Append({Rec(i)}, log.Callback(i));
  env_.SetSyncError(true);
  gate.Release();

  auto results = log.WaitFor(10);
  for (const auto& [id, status] : results) {
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal, "fdatasync")) << id;
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal, SegPath(1))) << id;
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal, "errno 5")) << id;
  }
  env_.SetSyncError(false);  // It never retries, even when the disk recovers.
  EXPECT_THAT(AppendAndWait(*j, {Rec(11)}),
              StatusIs(absl::StatusCode::kInternal, "fdatasync"));
  EXPECT_THAT(j->BeginSnapshot(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(j->Close(), StatusIs(absl::StatusCode::kInternal));
  auto fatal = FatalCalls();
  ASSERT_THAT(fatal, SizeIs(1));
  EXPECT_THAT(fatal[0], StatusIs(absl::StatusCode::kInternal, "errno 5"));
}

TEST_F(FileJournalTest, WriteErrorIsFatal) {
  auto j = OpenAndRecover(Options("never"));
  ASSERT_THAT(AppendAndWait(*j, {Rec(0)}), IsOk());
  env_.SetWriteError(true);
  EXPECT_THAT(AppendAndWait(*j, {Rec(1)}),
              StatusIs(absl::StatusCode::kInternal, absl::StrCat("write ", SegPath(1))));
  env_.SetWriteError(false);
  EXPECT_THAT(AppendAndWait(*j, {Rec(2)}), StatusIs(absl::StatusCode::kInternal));
  j.reset();
  EXPECT_THAT(FatalCalls(), SizeIs(1));
}

TEST_F(FileJournalTest, SyncErrorUnderIntervalPolicyIsFatalToo) {
  auto j = OpenAndRecover(Options("interval:3600000"));
  ASSERT_THAT(AppendAndWait(*j, {Rec(0)}), IsOk());
  env_.SetSyncError(true);
  EXPECT_THAT(j->Close(), StatusIs(absl::StatusCode::kInternal, "fdatasync"));
  EXPECT_THAT(FatalCalls(), SizeIs(1));
}

// ── Snapshots ──

TEST_F(FileJournalTest, SnapshotDeletesOldSegmentsAndRecoveryIsSnapshotPlusLaterRecords) {
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 100; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
    const size_t before = SegmentFiles().size();
    ASSERT_GE(before, 3u);
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(cut, IsOk());
    EXPECT_EQ(*cut, 101u);
    for (int i = 100; i < 105; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
    ASSERT_THAT(j->WriteSnapshot(*cut, "STATE@100"), IsOk());
    EXPECT_THAT(SegmentFiles(), ElementsAre(SegmentFileName(before + 1)))
        << "every segment before the cut is gone";
    EXPECT_EQ(j->stats().segments_deleted, before);
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  ASSERT_TRUE(r->snapshot.has_value());
  EXPECT_EQ(r->snapshot->first, 101u);
  EXPECT_EQ(r->snapshot->second, "STATE@100");
  std::vector<std::string> want;
  for (int i = 100; i < 105; ++i) want.push_back(Rec(i, 100));
  EXPECT_THAT(r->Data(), ElementsAreArray(want));
  EXPECT_EQ(r->records[0].first, 101u);
}

TEST_F(FileJournalTest, NewSnapshotReplacesTheOldOne) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
    auto cut1 = j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(*cut1, "one"), IsOk());
    ASSERT_THAT(AppendAndWait(*j, {Rec(2)}), IsOk());
    auto cut2 = j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(*cut2, "two"), IsOk());
    EXPECT_THAT(j->WriteSnapshot(*cut1, "old"),
                StatusIs(absl::StatusCode::kFailedPrecondition, "older"));
    EXPECT_THAT(j->WriteSnapshot(*cut2 + 5, "future"),
                StatusIs(absl::StatusCode::kInvalidArgument));
    ASSERT_THAT(AppendAndWait(*j, {Rec(3)}), IsOk());
  }
  int snapshots = 0;
  const std::vector<std::string> names = *env_.ListDir(kDir);
  for (const std::string& name : names) {
    uint64_t cut;
    if (ParseSnapshotFileName(name, &cut)) ++snapshots;
  }
  EXPECT_EQ(snapshots, 1);
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->snapshot->second, "two");
  EXPECT_THAT(r->Data(), ElementsAre(Rec(3)));
}

TEST_F(FileJournalTest, SnapshotRecoveryResumesSequenceAfterTheCut) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1), Rec(2)}), IsOk());
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(*cut, "S"), IsOk());
  }
  {
    Recovered r;
    auto j = OpenAndRecover(Options(), &r);
    EXPECT_THAT(r.records, IsEmpty());
    ASSERT_THAT(AppendAndWait(*j, {Rec(3)}), IsOk());
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(r->records, SizeIs(1));
  EXPECT_EQ(r->records[0].first, 3u);
}

TEST_F(FileJournalTest, CrashDuringSnapshotWriteFallsBackToThePreviousSnapshot) {
  SequenceNumber cut1 = 0;
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 30; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
    cut1 = *j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(cut1, "first"), IsOk());
    for (int i = 30; i < 60; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
    auto cut2 = j->BeginSnapshot();
    ASSERT_THAT(cut2, IsOk());
    // Processed after the cut's rotation: the writer is idle at the crash.
    ASSERT_THAT(AppendAndWait(*j, {Rec(60, 100)}), IsOk());
    // The machine dies while the second snapshot is being written: half of
    // it is in the temp file.
    std::string partial = EncodeSnapshot(*cut2, std::string(5000, 's'));
    partial.resize(partial.size() / 2);
    env_.SetContents(JoinPath(kDir, SnapshotFileName(*cut2)) + ".tmp", partial);
    env_.Crash();
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  ASSERT_TRUE(r->snapshot.has_value());
  EXPECT_EQ(r->snapshot->first, cut1);
  EXPECT_EQ(r->snapshot->second, "first");
  std::vector<std::string> want;
  for (int i = 30; i <= 60; ++i) want.push_back(Rec(i, 100));
  EXPECT_THAT(r->Data(), ElementsAreArray(want));
  for (const std::string& f : env_.AllFiles()) {
    EXPECT_FALSE(absl::EndsWith(f, ".tmp")) << f;
  }
}

TEST_F(FileJournalTest, FailedSnapshotWriteKeepsTheJournalRunning) {
  auto j = OpenAndRecover(Options());
  ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  auto cut = j->BeginSnapshot();
  // Only the snapshot's own fsync fails.
  env_.SetSyncHook([this](const std::string& path) {
    if (absl::EndsWith(path, ".snap.tmp")) env_.SetSyncError(true);
  });
  EXPECT_THAT(j->WriteSnapshot(*cut, "S"),
              StatusIs(absl::StatusCode::kInternal, "fsync"));
  env_.SetSyncHook(nullptr);
  env_.SetSyncError(false);
  EXPECT_THAT(FatalCalls(), IsEmpty());
  ASSERT_THAT(AppendAndWait(*j, {Rec(2)}), IsOk());
  j.reset();
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->snapshot.has_value());
  EXPECT_THAT(r->Data(), ElementsAre(Rec(1), Rec(2)));
}

TEST_F(FileJournalTest, CorruptRenamedSnapshotRefusesToStart) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(*cut, "state"), IsOk());
  }
  const std::string path = JoinPath(kDir, SnapshotFileName(2));
  std::string data = *env_.Contents(path);
  data.back() ^= 1;
  env_.SetContents(path, data);
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss, path));
}

TEST_F(FileJournalTest, CrashAfterSnapshotBeforeCleanupRecoversTheSame) {
  // Old segments left behind by an interrupted cleanup are skipped.
  {
    auto j = OpenAndRecover(Options());
    for (int i = 0; i < 60; ++i) ASSERT_THAT(AppendAndWait(*j, {Rec(i, 100)}), IsOk());
  }
  std::vector<std::pair<std::string, std::string>> saved;
  for (const std::string& name : SegmentFiles()) {
    saved.emplace_back(JoinPath(kDir, name), *env_.Contents(JoinPath(kDir, name)));
  }
  {
    auto j = OpenAndRecover(Options());
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(AppendAndWait(*j, {Rec(60, 100)}), IsOk());
    ASSERT_THAT(j->WriteSnapshot(*cut, "S"), IsOk());
  }
  for (const auto& [path, data] : saved) {
    if (!env_.FileExists(path)) env_.SetContents(path, data);  // "undelete"
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->snapshot->second, "S");
  EXPECT_THAT(r->Data(), ElementsAre(Rec(60, 100)));
  EXPECT_THAT(SegmentFiles(), SizeIs(1));
}

// ── The data directory ──

TEST_F(FileJournalTest, SecondOpenOfTheSameDirectoryFails) {
  auto j = OpenAndRecover(Options());
  EXPECT_THAT(FileJournal::Open(Options()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("journal data directory ", kDir, " is in use")));
  ASSERT_THAT(j->Close(), IsOk());
  EXPECT_THAT(FileJournal::Open(Options()), IsOk()) << "Close releases the lock";
}

TEST_F(FileJournalTest, NewerFormatIsRefused) {
  { auto j = OpenJournal(Options()); }
  EXPECT_EQ(*env_.Contents(JoinPath(kDir, "FORMAT")), "conveyor-journal 1\n");
  env_.SetContents(JoinPath(kDir, "FORMAT"), "conveyor-journal 2\n");
  EXPECT_THAT(FileJournal::Open(Options()),
              StatusIs(absl::StatusCode::kFailedPrecondition, "format version 2"));
}

TEST_F(FileJournalTest, JournalFilesWithoutFormatAreRefused) {
  {
    auto j = OpenAndRecover(Options());
    ASSERT_THAT(AppendAndWait(*j, {Rec(1)}), IsOk());
  }
  ASSERT_THAT(env_.RemoveFile(JoinPath(kDir, "FORMAT")), IsOk());
  EXPECT_THAT(FileJournal::Open(Options()), StatusIs(absl::StatusCode::kDataLoss, "FORMAT"));
}

TEST_F(FileJournalTest, BadOptionsAreInvalidArgument) {
  FileJournalOptions o = Options();
  o.segment_bytes = 100;
  EXPECT_THAT(FileJournal::Open(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o = Options();
  o.dir = "";
  EXPECT_THAT(FileJournal::Open(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace conveyor::server::journal
