// FileJournal on the real POSIX Env, in a mkdtemp directory under /tmp:
// round trip, locking, torn tails made by truncating or appending garbage to
// a segment, and corruption.
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/env.h"
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
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr uint64_t kSegmentBytes = 64 * 1024;

std::string Rec(int i) { return absl::StrCat("posix-record-", i, std::string(i % 50, 'p')); }

class PosixJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/conveyor_journal_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/data";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  FileJournalOptions Options() {
    FileJournalOptions o;
    o.dir = dir_;
    o.segment_bytes = kSegmentBytes;
    return o;
  }

  absl::StatusOr<Recovered> Reopen() {
    auto j = FileJournal::Open(Options());
    if (!j.ok()) return j.status();
    return RecoverAll(**j);
  }

  // Writes records 0..n-1 in batches of `per_batch`; returns them.
  std::vector<std::string> WriteRecords(int n, int per_batch = 1) {
    std::vector<std::string> all;
    auto j = FileJournal::Open(Options());
    EXPECT_THAT(j, IsOk());
    EXPECT_THAT(RecoverAll(**j), IsOk());
    for (int i = 0; i < n; i += per_batch) {
      std::vector<std::string> batch;
      for (int k = i; k < std::min(n, i + per_batch); ++k) batch.push_back(Rec(k));
      all.insert(all.end(), batch.begin(), batch.end());
      EXPECT_THAT(AppendAndWait(**j, batch), IsOk());
    }
    EXPECT_THAT((*j)->Close(), IsOk());
    return all;
  }

  std::string SegPath(uint64_t n) const { return JoinPath(dir_, SegmentFileName(n)); }

  static uint64_t EndOf(const std::vector<std::string>& records) {
    uint64_t end = kSegmentHeaderSize;
    for (const auto& r : records) end += EncodedRecordSize(r.size());
    return end;
  }

  std::string root_;
  std::string dir_;
};

TEST_F(PosixJournalTest, RoundTripAcrossSegments) {
  std::vector<std::string> all = WriteRecords(3000, 10);  // ~175 KB: 3 segments
  EXPECT_TRUE(std::filesystem::exists(SegPath(3)));
  EXPECT_EQ(std::filesystem::file_size(SegPath(1)), kSegmentBytes)
      << "segments are preallocated";
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAreArray(all));
}

// Whether [begin, end) of `path` is in unwritten (preallocated, never
// written) extents: true / false, or nullopt if the filesystem cannot say
// (no FIEMAP, e.g. tmpfs).
std::optional<bool> UnwrittenAt(const std::string& path, uint64_t begin, uint64_t end) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  constexpr int kExtents = 64;
  std::vector<char> buf(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  map->fm_start = begin;
  map->fm_length = end - begin;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = kExtents;
  const int rc = ::ioctl(fd, FS_IOC_FIEMAP, map);
  ::close(fd);
  if (rc != 0 || map->fm_mapped_extents == 0) return std::nullopt;
  bool unwritten = false;
  for (uint32_t i = 0; i < map->fm_mapped_extents; ++i) {
    if (map->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) unwritten = true;
  }
  return unwritten;
}

// On a real filesystem the zeros written ahead turn the preallocated blocks
// past the data into written ones (so a later fdatasync writes no metadata),
// a bounded distance ahead.
TEST_F(PosixJournalTest, ZeroFillWritesTheBlocksAheadOfTheWriter) {
  FileJournalOptions o = Options();
  o.segment_bytes = 4 << 20;
  o.zero_fill_ahead = 256 << 10;
  auto j = FileJournal::Open(o);
  ASSERT_THAT(j, IsOk());
  ASSERT_THAT(RecoverAll(**j), IsOk());
  ASSERT_THAT(AppendAndWait(**j, {Rec(1)}), IsOk());
  EXPECT_EQ((*j)->stats().bytes_zero_filled, o.zero_fill_ahead);
  if (std::optional<bool> ahead = UnwrittenAt(SegPath(1), 0, o.zero_fill_ahead)) {
    EXPECT_FALSE(*ahead) << "the blocks ahead of the writer are written";
    std::optional<bool> far = UnwrittenAt(SegPath(1), o.segment_bytes - 4096, o.segment_bytes);
    ASSERT_TRUE(far.has_value());
    EXPECT_TRUE(*far) << "the end of the segment is still only preallocated";
  }
  std::vector<std::string> all = {Rec(1)};
  for (int i = 2; i < 2000; ++i) {
    all.push_back(Rec(i));
    ASSERT_THAT(AppendAndWait(**j, {all.back()}), IsOk());
  }
  ASSERT_THAT((*j)->Close(), IsOk());
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAreArray(all));
}

TEST_F(PosixJournalTest, SnapshotRoundTrip) {
  {
    auto j = FileJournal::Open(Options());
    ASSERT_THAT(j, IsOk());
    ASSERT_THAT(RecoverAll(**j), IsOk());
    for (int i = 0; i < 1500; i += 10) {
      std::vector<std::string> batch;
      for (int k = i; k < i + 10; ++k) batch.push_back(Rec(k));
      ASSERT_THAT(AppendAndWait(**j, batch), IsOk());
    }
    auto cut = (*j)->BeginSnapshot();
    ASSERT_THAT(cut, IsOk());
    ASSERT_THAT(AppendAndWait(**j, {"after"}), IsOk());
    ASSERT_THAT((*j)->WriteSnapshot(*cut, "snapshot state"), IsOk());
  }
  EXPECT_FALSE(std::filesystem::exists(SegPath(1)));
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  ASSERT_TRUE(r->snapshot.has_value());
  EXPECT_EQ(r->snapshot->second, "snapshot state");
  EXPECT_THAT(r->Data(), ElementsAreArray({std::string("after")}));
}

TEST_F(PosixJournalTest, SecondOpenOfTheSameDirectoryFailsWhileLocked) {
  auto first = FileJournal::Open(Options());
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(FileJournal::Open(Options()),
              StatusIs(absl::StatusCode::kFailedPrecondition, dir_));
  first->reset();
  EXPECT_THAT(FileJournal::Open(Options()), IsOk());
}

TEST_F(PosixJournalTest, FileTruncatedInsideTheLastRecordIsATornTail) {
  std::vector<std::string> all = WriteRecords(20);
  const uint64_t end = EndOf(all);
  // The file ends in the middle of the last record (no zero tail at all).
  ASSERT_EQ(::truncate(SegPath(1).c_str(), static_cast<off_t>(end - 7)), 0);
  all.pop_back();
  {
    auto j = FileJournal::Open(Options());
    ASSERT_THAT(j, IsOk());
    auto r = RecoverAll(**j);
    ASSERT_THAT(r, IsOk());
    EXPECT_THAT(r->Data(), ElementsAreArray(all));
    EXPECT_EQ(std::filesystem::file_size(SegPath(1)), kSegmentBytes)
        << "preallocated again";
    all.push_back("resumed");
    ASSERT_THAT(AppendAndWait(**j, {"resumed"}), IsOk());
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAreArray(all));
}

TEST_F(PosixJournalTest, GarbageAfterTheLastRecordIsATornTail) {
  std::vector<std::string> all = WriteRecords(20);
  const uint64_t end = EndOf(all);
  // A torn write: a record header and part of a payload, then zeros.
  int fd = ::open(SegPath(1).c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  std::string partial;
  EncodeRecord(RecordType::kFull, 21, std::string(300, 'g'), &partial);
  partial.resize(150);
  ASSERT_EQ(::pwrite(fd, partial.data(), partial.size(), static_cast<off_t>(end)),
            static_cast<ssize_t>(partial.size()));
  ::close(fd);
  {
    auto j = FileJournal::Open(Options());
    ASSERT_THAT(j, IsOk());
    auto r = RecoverAll(**j);
    ASSERT_THAT(r, IsOk());
    EXPECT_THAT(r->Data(), ElementsAreArray(all));
    // Writing resumes over the torn bytes; the shorter new record leaves no
    // garbage behind it.
    all.push_back("x");
    ASSERT_THAT(AppendAndWait(**j, {"x"}), IsOk());
  }
  auto r = Reopen();
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Data(), ElementsAreArray(all));
  EXPECT_EQ(r->records.back().first, 21u);
}

TEST_F(PosixJournalTest, FlippedByteInTheMiddleIsDataLoss) {
  std::vector<std::string> all = WriteRecords(20);
  std::vector<std::string> head(all.begin(), all.begin() + 10);
  const uint64_t offset = EndOf(head);
  int fd = ::open(SegPath(1).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  const off_t at = static_cast<off_t>(offset + kRecordHeaderSize + kSeqSize);
  ASSERT_EQ(::pread(fd, &c, 1, at), 1);
  c ^= 0x01;
  ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
  ::close(fd);
  auto r = Reopen();
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDataLoss, SegPath(1)));
  EXPECT_THAT(r.status().message(), HasSubstr(absl::StrCat("offset ", offset)));
}

TEST_F(PosixJournalTest, EnvReportsErrnoAndPath) {
  Env* env = Env::Default();
  auto f = env->ReadFile(root_ + "/missing");
  EXPECT_THAT(f, StatusIs(absl::StatusCode::kNotFound, root_ + "/missing"));
  EXPECT_THAT(f, StatusIs(absl::StatusCode::kNotFound, "errno 2"));
}

}  // namespace
}  // namespace conveyor::server::journal
