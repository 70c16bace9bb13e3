// ReadDirectory (the lock-free reader) and BackupDirectory: what they read
// agrees with recovery, damage is DATA_LOSS naming the file and offset, a
// torn tail is reported, a file deleted by a compaction mid-read makes the
// reader read again; a backup taken while a FileJournal appends and
// compacts in another thread recovers to a prefix of what was appended.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/backup.h"
#include "server/journal/dir_reader.h"
#include "server/journal/env.h"
#include "server/journal/fake_env.h"
#include "server/journal/file_journal.h"
#include "server/journal/format.h"
#include "tests/journal/journal_test_util.h"

namespace conveyor::server::journal {
namespace {

using ::conveyor::server::journal::testing::AppendAndWait;
using ::conveyor::server::journal::testing::IsOk;
using ::conveyor::server::journal::testing::Recovered;
using ::conveyor::server::journal::testing::RecoverAll;
using ::conveyor::server::journal::testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kDir[] = "/data";
constexpr char kDest[] = "/backup";
constexpr uint64_t kSegmentBytes = 4096;
const ReadOptions kOnce{1, absl::ZeroDuration()};

std::string Rec(int i, size_t size = 100) {
  std::string s = absl::StrCat("rec-", i, "-");
  s.resize(std::max(size, s.size()), static_cast<char>('a' + i % 26));
  return s;
}

// Forwards to another Env; runs a hook before each ReadFile.
class HookEnv final : public Env {
 public:
  explicit HookEnv(Env* base) : base_(base) {}
  void SetReadHook(std::function<void(const std::string&, uint64_t, uint64_t)> hook) {
    absl::MutexLock lock(&mu_);
    hook_ = std::move(hook);
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    return base_->NewWritableFile(path);
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> OpenWritableFile(const std::string& path,
                                                                 uint64_t offset) override {
    return base_->OpenWritableFile(path, offset);
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t offset,
                                       uint64_t max_bytes) override {
    std::function<void(const std::string&, uint64_t, uint64_t)> hook;
    {
      absl::MutexLock lock(&mu_);
      hook = hook_;
    }
    if (hook) hook(path, offset, max_bytes);
    return base_->ReadFile(path, offset, max_bytes);
  }
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    return base_->GetFileSize(path);
  }
  bool FileExists(const std::string& path) override { return base_->FileExists(path); }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    return base_->RenameFile(from, to);
  }
  absl::Status RemoveFile(const std::string& path) override { return base_->RemoveFile(path); }
  absl::Status CreateDir(const std::string& dir) override { return base_->CreateDir(dir); }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  absl::Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    return base_->LockFile(path);
  }

 private:
  Env* const base_;
  absl::Mutex mu_;
  std::function<void(const std::string&, uint64_t, uint64_t)> hook_ ABSL_GUARDED_BY(mu_);
};

class DirReaderTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(env_.CreateDir("/"), IsOk()); }

  FileJournalOptions Options(const std::string& dir = kDir) {
    FileJournalOptions o;
    o.dir = dir;
    o.env = &env_;
    o.segment_bytes = kSegmentBytes;
    return o;
  }

  std::unique_ptr<FileJournal> OpenAndRecover(const std::string& dir = kDir) {
    auto j = FileJournal::Open(Options(dir));
    EXPECT_THAT(j, IsOk());
    if (!j.ok()) return nullptr;
    EXPECT_THAT(RecoverAll(**j), IsOk());
    return *std::move(j);
  }

  absl::StatusOr<Recovered> Reopen(const std::string& dir = kDir) {
    auto j = FileJournal::Open(Options(dir));
    if (!j.ok()) return j.status();
    return RecoverAll(**j);
  }

  // The records a view would deliver to recovery, in order.
  static std::vector<std::pair<SequenceNumber, std::string>> Delivered(const DirectoryView& v) {
    std::vector<std::pair<SequenceNumber, std::string>> out;
    for (const SegmentView& s : v.segments) {
      for (const RecordView& r : s.records) {
        if (r.seq >= v.cut) out.emplace_back(r.seq, std::string(s.RecordData(r)));
      }
    }
    return out;
  }

  // Appends Rec(from)..Rec(to - 1), one batch each.
  void Write(FileJournal& j, int from, int to) {
    for (int i = from; i < to; ++i) ASSERT_THAT(AppendAndWait(j, {Rec(i)}), IsOk());
  }

  FakeEnv env_;
};

TEST_F(DirReaderTest, ReadsWhatRecoveryReadsWithoutTakingTheLock) {
  auto j = OpenAndRecover();
  Write(*j, 0, 50);
  auto cut = j->BeginSnapshot();
  ASSERT_THAT(cut, IsOk());
  Write(*j, 50, 80);
  ASSERT_THAT(j->WriteSnapshot(*cut, "STATE"), IsOk());
  Write(*j, 80, 90);

  // The journal is open and holds the lock.
  DirectoryView view;
  ASSERT_THAT(ReadDirectory(&env_, kDir, kOnce, &view), IsOk());
  EXPECT_EQ(view.format_version, kFormatVersion);
  ASSERT_TRUE(view.snapshot.has_value());
  EXPECT_EQ(view.snapshot->cut, *cut);
  EXPECT_EQ(view.snapshot->state(), "STATE");
  EXPECT_EQ(view.cut, *cut);
  ASSERT_GE(view.segments.size(), 2u);
  EXPECT_FALSE(view.segments.back().torn);
  ASSERT_THAT(j->Close(), IsOk());

  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(Delivered(view), ElementsAreArray(r->records));
  EXPECT_EQ(r->records.size(), 40u);
}

TEST_F(DirReaderTest, CorruptionIsDataLossNamingFileAndOffsetAndKeepsWhatCameBefore) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 10);
  }
  const std::string seg = JoinPath(kDir, SegmentFileName(1));
  std::string data = *env_.Contents(seg);
  const uint64_t offset = kSegmentHeaderSize + 4 * EncodedRecordSize(Rec(0).size());
  data[offset + 20] ^= 1;
  env_.SetContents(seg, data);
  DirectoryView view;
  EXPECT_THAT(ReadDirectory(&env_, kDir, {3, absl::ZeroDuration()}, &view),
              StatusIs(absl::StatusCode::kDataLoss,
                       absl::StrCat("journal corruption in ", seg, " at offset ", offset,
                                    ": record checksum mismatch")));
  EXPECT_EQ(view.attempts, 3) << "damage is read again before it is believed";
  ASSERT_EQ(view.segments.size(), 1u);
  EXPECT_EQ(view.segments[0].records.size(), 4u);
}

TEST_F(DirReaderTest, TornTailIsReportedNotAnError) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 5);
  }
  const std::string seg = JoinPath(kDir, SegmentFileName(1));
  std::string data = *env_.Contents(seg);
  const uint64_t end = kSegmentHeaderSize + 5 * EncodedRecordSize(Rec(0).size());
  env_.SetContents(seg, data.substr(0, end - 7));
  DirectoryView view;
  ASSERT_THAT(ReadDirectory(&env_, kDir, kOnce, &view), IsOk());
  const SegmentView& s = view.segments.back();
  EXPECT_TRUE(s.torn);
  EXPECT_EQ(s.torn_offset, end - EncodedRecordSize(Rec(0).size()));
  EXPECT_EQ(s.end, s.torn_offset);
  EXPECT_EQ(s.records.size(), 4u);
  EXPECT_GT(s.torn_bytes, 0u);
}

TEST_F(DirReaderTest, SegmentDeletedByACompactionMidReadIsReadAgain) {
  auto j = OpenAndRecover();
  Write(*j, 0, 100);
  ASSERT_GE(env_.ListDir(kDir)->size(), 4u);
  HookEnv hook_env(&env_);
  const std::string first = JoinPath(kDir, SegmentFileName(1));
  bool compacted = false;
  hook_env.SetReadHook([&](const std::string& path, uint64_t, uint64_t max) {
    if (path != first || max < kSegmentHeaderSize + 1 || compacted) return;
    compacted = true;
    // The broker snapshots and deletes the segments between the reader's
    // listing and its read.
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(cut, IsOk());
    ASSERT_THAT(j->WriteSnapshot(*cut, "AFTER"), IsOk());
  });
  DirectoryView view;
  ASSERT_THAT(ReadDirectory(&hook_env, kDir, {5, absl::ZeroDuration()}, &view), IsOk());
  EXPECT_TRUE(compacted);
  EXPECT_EQ(view.attempts, 2);
  ASSERT_TRUE(view.snapshot.has_value());
  EXPECT_EQ(view.snapshot->state(), "AFTER");
  EXPECT_EQ(view.cut, 101u);
  EXPECT_TRUE(Delivered(view).empty());
}

TEST_F(DirReaderTest, RecordsMissingBetweenTheSnapshotAndTheFirstSegmentAreDataLoss) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 10);
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(*cut, "S"), IsOk());
    Write(*j, 10, 80);  // Several segments after the cut.
  }
  std::vector<std::string> segs;
  const std::vector<std::string> names = *env_.ListDir(kDir);
  for (const std::string& name : names) {
    uint64_t n;
    if (ParseSegmentFileName(name, &n)) segs.push_back(name);
  }
  std::sort(segs.begin(), segs.end());
  ASSERT_GE(segs.size(), 3u);
  // The segment holding the cut is gone; recovery would not notice.
  ASSERT_THAT(env_.RemoveFile(JoinPath(kDir, segs[0])), IsOk());
  DirectoryView view;
  EXPECT_THAT(ReadDirectory(&env_, kDir, kOnce, &view),
              StatusIs(absl::StatusCode::kDataLoss, "are missing"));
}

TEST_F(DirReaderTest, SegmentsMissingWithoutASnapshotAreDataLoss) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 80);
  }
  ASSERT_THAT(env_.RemoveFile(JoinPath(kDir, SegmentFileName(1))), IsOk());
  DirectoryView view;
  EXPECT_THAT(ReadDirectory(&env_, kDir, kOnce, &view),
              StatusIs(absl::StatusCode::kDataLoss, "no snapshot"));
}

TEST_F(DirReaderTest, NotADataDirectoryAndNewerFormats) {
  DirectoryView view;
  EXPECT_THAT(ReadDirectory(&env_, "/nope", kOnce, &view),
              StatusIs(absl::StatusCode::kNotFound, "does not exist"));
  ASSERT_THAT(env_.CreateDir("/empty"), IsOk());
  EXPECT_THAT(ReadDirectory(&env_, "/empty", kOnce, &view),
              StatusIs(absl::StatusCode::kNotFound, "no FORMAT"));
  { auto j = OpenAndRecover(); }
  env_.SetContents(JoinPath(kDir, kFormatFileName), FormatFileContents(kFormatVersion + 1));
  EXPECT_THAT(ReadDirectory(&env_, kDir, {5, absl::ZeroDuration()}, &view),
              StatusIs(absl::StatusCode::kFailedPrecondition, "format version"));
  EXPECT_EQ(view.attempts, 1) << "nothing to retry";
  EXPECT_THAT(ReadDirectory(&env_, kDir, {0, absl::ZeroDuration()}, &view),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(DirReaderTest, LeftoverFilesAreListedAsSkipped) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 3);
  }
  env_.SetContents(JoinPath(kDir, "00000000000000000002.log.tmp"), "x");
  env_.SetContents(JoinPath(kDir, SnapshotFileName(1)), EncodeSnapshot(1, "old"));
  env_.SetContents(JoinPath(kDir, SnapshotFileName(2)), EncodeSnapshot(2, "new"));
  DirectoryView view;
  ASSERT_THAT(ReadDirectory(&env_, kDir, kOnce, &view), IsOk());
  EXPECT_EQ(view.snapshot->state(), "new");
  EXPECT_THAT(view.skipped,
              ElementsAre("00000000000000000002.log.tmp", SnapshotFileName(1)));
}

// ── Backup ──

TEST_F(DirReaderTest, BackupRecoversToTheSameRecordsAndSnapshot) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 40);
    auto cut = j->BeginSnapshot();
    ASSERT_THAT(j->WriteSnapshot(*cut, "SNAP"), IsOk());
    Write(*j, 40, 70);
    ASSERT_THAT(AppendAndWait(*j, {Rec(70), Rec(71), Rec(72)}), IsOk());
    // Still open: the backup does not need the lock.
    auto result = BackupDirectory(&env_, kDir, kDest, kOnce);
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(result->files.back().name, kFormatFileName) << "FORMAT is written last";
    EXPECT_EQ(result->files.front().name, SnapshotFileName(*cut));
    uint64_t total = 0;
    for (const auto& f : result->files) total += f.bytes;
    EXPECT_EQ(total, result->bytes);
  }
  EXPECT_THAT(*env_.ListDir(kDest), Not(Contains(kLockFileName)));
  auto src = Reopen(kDir);
  auto copy = Reopen(kDest);
  ASSERT_THAT(src, IsOk());
  ASSERT_THAT(copy, IsOk());
  EXPECT_EQ(copy->snapshot, src->snapshot);
  EXPECT_THAT(copy->records, ElementsAreArray(src->records));
  // The copy is a journal that takes appends.
  auto j = FileJournal::Open(Options(kDest));
  ASSERT_THAT(j, IsOk());
  ASSERT_THAT(RecoverAll(**j), IsOk());
  EXPECT_THAT(AppendAndWait(**j, {"more"}), IsOk());
}

TEST_F(DirReaderTest, BackupLeavesATornTailBehind) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 5);
  }
  const std::string seg = JoinPath(kDir, SegmentFileName(1));
  const uint64_t end = kSegmentHeaderSize + 5 * EncodedRecordSize(Rec(0).size());
  env_.SetContents(seg, env_.Contents(seg)->substr(0, end - 3));
  auto result = BackupDirectory(&env_, kDir, kDest, kOnce);
  ASSERT_THAT(result, IsOk());
  EXPECT_TRUE(result->view.segments.back().torn);
  EXPECT_EQ(*env_.GetFileSize(JoinPath(kDest, SegmentFileName(1))),
            end - EncodedRecordSize(Rec(0).size()));
  auto copy = Reopen(kDest);
  ASSERT_THAT(copy, IsOk());
  EXPECT_EQ(copy->records.size(), 4u);
}

TEST_F(DirReaderTest, BackupRefusesANonEmptyDestination) {
  { auto j = OpenAndRecover(); }
  ASSERT_THAT(env_.CreateDir(kDest), IsOk());
  env_.SetContents(JoinPath(kDest, "precious"), "x");
  EXPECT_THAT(BackupDirectory(&env_, kDir, kDest, kOnce),
              StatusIs(absl::StatusCode::kAlreadyExists, "not empty"));
  EXPECT_THAT(*env_.ListDir(kDest), ElementsAre("precious"));
  EXPECT_THAT(BackupDirectory(&env_, kDir, JoinPath(kDest, "precious"), kOnce),
              StatusIs(absl::StatusCode::kAlreadyExists, "not a directory"));
}

TEST_F(DirReaderTest, BackupOfADamagedSourceWritesNothing) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 10);
  }
  const std::string seg = JoinPath(kDir, SegmentFileName(1));
  std::string data = *env_.Contents(seg);
  data[kSegmentHeaderSize + 30] ^= 4;
  env_.SetContents(seg, data);
  EXPECT_THAT(BackupDirectory(&env_, kDir, kDest, kOnce),
              StatusIs(absl::StatusCode::kDataLoss, seg));
  EXPECT_FALSE(env_.FileExists(kDest));
}

TEST_F(DirReaderTest, InterruptedBackupIsRefusedByRecoveryForLackOfFormat) {
  {
    auto j = OpenAndRecover();
    Write(*j, 0, 10);
  }
  env_.SetWriteError(true);
  EXPECT_THAT(BackupDirectory(&env_, kDir, kDest, kOnce), Not(IsOk()));
  env_.SetWriteError(false);
  EXPECT_FALSE(env_.FileExists(JoinPath(kDest, kFormatFileName)));
  EXPECT_THAT(FileJournal::Open(Options(kDest)),
              StatusIs(absl::StatusCode::kDataLoss, "no FORMAT"));
}

// ── Backup of a live journal on the real filesystem ──

// Record i of the live test; the snapshot state is the decimal count of
// records before its cut.
std::string LiveRec(int i) { return absl::StrCat("live-", i, std::string(i % 97, 'x')); }

TEST(LiveBackupTest, BackupWhileAppendingAndCompactingRecoversAPrefix) {
  char tmpl[] = "/tmp/conveyor_backup_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  const std::string src = root + "/src";
  Env* env = Env::Default();

  FileJournalOptions o;
  o.dir = src;
  o.segment_bytes = 8192;  // Rotations every few dozen records.
  o.fsync = *ParseFsyncPolicy("never");
  auto opened = FileJournal::Open(o);
  ASSERT_THAT(opened, IsOk());
  std::unique_ptr<FileJournal> j = *std::move(opened);
  ASSERT_THAT(RecoverAll(*j), IsOk());

  std::atomic<bool> stop{false};
  std::atomic<int> appended{0};   // Acknowledged.
  std::atomic<int> attempted{0};  // Handed to Append (may be on disk already).
  std::atomic<int> snapshots{0};
  std::atomic<bool> writer_failed{false};
  std::thread writer([&] {
    int n = 0;
    while (!stop.load()) {
      std::vector<std::string> batch;
      for (int k = 0; k <= n % 3; ++k) batch.push_back(LiveRec(n + k));
      attempted.store(n + static_cast<int>(batch.size()));
      if (!AppendAndWait(*j, batch).ok()) {
        writer_failed.store(true);
        return;
      }
      n += static_cast<int>(batch.size());
      appended.store(n);
      if (n % 60 < 3) {
        absl::StatusOr<SequenceNumber> cut = j->BeginSnapshot();
        if (!cut.ok() || !j->WriteSnapshot(*cut, absl::StrCat(n)).ok()) {
          writer_failed.store(true);
          return;
        }
        snapshots.fetch_add(1);
      }
    }
  });
  while (appended.load() < 300 && !writer_failed.load()) std::this_thread::yield();

  int previous = 0;
  int torn_seen = 0;
  int retried = 0;
  // ASSERTs leave the lambda only, so the writer is always stopped below.
  auto backups = [&] {
    for (int b = 0; b < 40; ++b) {
      SCOPED_TRACE(absl::StrCat("backup ", b));
      const std::string dest = absl::StrCat(root, "/copy", b);
      absl::StatusOr<BackupResult> result = BackupDirectory(env, src, dest);
      ASSERT_THAT(result, IsOk());
      if (!result->view.segments.empty() && result->view.segments.back().torn) ++torn_seen;
      if (result->view.attempts > 1) ++retried;

      FileJournalOptions co;
      co.dir = dest;
      co.segment_bytes = 8192;
      auto copy = FileJournal::Open(co);
      ASSERT_THAT(copy, IsOk());
      absl::StatusOr<Recovered> r = RecoverAll(**copy);
      ASSERT_THAT(r, IsOk());
      int next = 0;  // The record the copy must hold next.
      if (r->snapshot.has_value()) {
        ASSERT_TRUE(absl::SimpleAtoi(r->snapshot->second, &next));
      }
      for (const auto& [seq, data] : r->records) {
        ASSERT_EQ(data, LiveRec(next)) << "no gaps, in order, at seq " << seq;
        ++next;
      }
      EXPECT_GE(next, previous) << "a later backup holds at least as much";
      EXPECT_LE(next, attempted.load());
      previous = next;
    }
  };
  backups();
  stop.store(true);
  writer.join();
  EXPECT_FALSE(writer_failed.load());
  ASSERT_THAT(j->Close(), IsOk());
  EXPECT_GT(snapshots.load(), 0);
  std::cout << "live backups: " << appended.load() << " records appended, "
            << snapshots.load() << " snapshots, " << torn_seen
            << " copies cut a write in progress, " << retried << " reads retried\n";
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace conveyor::server::journal
