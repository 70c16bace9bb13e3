// Exhaustive damage sweeps on FakeEnv: the last segment cut at EVERY byte
// offset of its last few records (truncated, and zero-filled as a torn write
// into preallocated space leaves it), and every bit of a record in the
// middle of a segment flipped. Recovery and the lock-free reader
// (dir_reader.h) must agree: a cut keeps exactly the whole batches before
// it, never crashes, and writing resumes; a flip before the tail is
// DATA_LOSS naming the file and the record's offset.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/dir_reader.h"
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
using ::testing::ElementsAreArray;

constexpr char kDir[] = "/data";
constexpr uint64_t kSegmentBytes = 4096;

std::string Rec(int i, size_t size) {
  std::string s = absl::StrCat("r", i, "-");
  s.resize(std::max(size, s.size()), static_cast<char>('a' + i % 26));
  return s;
}

std::string SegPath(uint64_t n) { return JoinPath(kDir, SegmentFileName(n)); }

FileJournalOptions Options(Env* env) {
  FileJournalOptions o;
  o.dir = kDir;
  o.env = env;
  o.segment_bytes = kSegmentBytes;
  o.zero_fill_ahead = 0;  // Off: only the records' bytes matter to the sweeps.
  return o;
}

// A journal written once; each case copies its files into a fresh FakeEnv.
struct Written {
  std::vector<std::vector<std::string>> batches;
  std::map<std::string, std::string> files;  // path -> bytes
  uint64_t last_segment = 0;
  // Offsets in the last segment where each of its batches starts and ends.
  std::vector<std::pair<uint64_t, uint64_t>> last_segment_batches;
  size_t batches_before_last_segment = 0;
};

Written WriteJournal(const std::vector<std::vector<std::string>>& batches) {
  Written w;
  w.batches = batches;
  FakeEnv env;
  EXPECT_THAT(env.CreateDir("/"), IsOk());
  {
    auto j = FileJournal::Open(Options(&env));
    EXPECT_THAT(j, IsOk());
    EXPECT_THAT(RecoverAll(**j), IsOk());
    for (const auto& b : batches) EXPECT_THAT(AppendAndWait(**j, b), IsOk());
    EXPECT_THAT((*j)->Close(), IsOk());
  }
  for (const std::string& path : env.AllFiles()) w.files[path] = *env.Contents(path);
  for (const auto& [path, data] : w.files) {
    uint64_t n = 0;
    const std::string name = path.substr(path.rfind('/') + 1);
    if (ParseSegmentFileName(name, &n)) w.last_segment = std::max(w.last_segment, n);
  }
  // Walk the batches of the last segment by the scan of its file.
  const std::string& last = w.files[SegPath(w.last_segment)];
  SegmentScan scan = ScanSegment(last, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kClean);
  uint64_t start = kSegmentHeaderSize;
  size_t in_last = 0;
  for (const ScannedRecord& r : scan.records) {
    const uint64_t end = static_cast<uint64_t>(r.data.data() - last.data()) + r.data.size();
    const auto type = static_cast<RecordType>(last[end - r.data.size() - kSeqSize - 1]);
    if (type == RecordType::kFull || type == RecordType::kLast) {
      w.last_segment_batches.emplace_back(start, end);
      start = end;
      ++in_last;
    }
  }
  w.batches_before_last_segment = batches.size() - in_last;
  return w;
}

// A FakeEnv holding `w`'s files, with the last segment replaced by `last`.
std::unique_ptr<FakeEnv> EnvWith(const Written& w, const std::string& last) {
  auto env = std::make_unique<FakeEnv>();
  EXPECT_THAT(env->CreateDir("/"), IsOk());
  EXPECT_THAT(env->CreateDir(kDir), IsOk());
  for (const auto& [path, data] : w.files) env->SetContents(path, data);
  env->SetContents(SegPath(w.last_segment), last);
  return env;
}

std::vector<std::string> Flatten(const std::vector<std::vector<std::string>>& batches,
                                 size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.insert(out.end(), batches[i].begin(), batches[i].end());
  return out;
}

// The batches before a cut of the last segment at `cut`: those wholly
// before it.
size_t WholeBatchesBefore(const Written& w, uint64_t cut) {
  size_t n = w.batches_before_last_segment;
  for (const auto& [start, end] : w.last_segment_batches) {
    if (end <= cut) ++n;
  }
  return n;
}

bool AtBoundary(const Written& w, uint64_t cut) {
  if (cut == kSegmentHeaderSize) return true;
  for (const auto& [start, end] : w.last_segment_batches) {
    if (end == cut) return true;
  }
  return false;
}

// Checks one damaged copy: recovery keeps exactly `want` whole records,
// the reader agrees, and after one more append both see it too.
void CheckCut(const Written& w, const std::string& last, uint64_t cut, const char* how) {
  SCOPED_TRACE(absl::StrCat(how, " at offset ", cut));
  const size_t whole = WholeBatchesBefore(w, cut);
  const std::vector<std::string> want = Flatten(w.batches, whole);
  std::unique_ptr<FakeEnv> env = EnvWith(w, last);

  DirectoryView view;
  ASSERT_THAT(ReadDirectory(env.get(), kDir, {1, absl::ZeroDuration()}, &view), IsOk());
  ASSERT_FALSE(view.segments.empty());
  EXPECT_EQ(view.segments.back().torn, !AtBoundary(w, cut))
      << "a cut inside a batch is a torn tail";
  size_t seen = 0;
  for (const SegmentView& s : view.segments) seen += s.records.size();
  EXPECT_EQ(seen, want.size());

  std::string extra = absl::StrCat("after-", cut);
  {
    auto j = FileJournal::Open(Options(env.get()));
    ASSERT_THAT(j, IsOk());
    absl::StatusOr<Recovered> r = RecoverAll(**j);
    ASSERT_THAT(r, IsOk());
    ASSERT_THAT(r->Data(), ElementsAreArray(want));
    for (size_t i = 0; i < r->records.size(); ++i) EXPECT_EQ(r->records[i].first, i + 1);
    ASSERT_THAT(AppendAndWait(**j, {extra}), IsOk());
    ASSERT_THAT((*j)->Close(), IsOk());
  }
  auto j = FileJournal::Open(Options(env.get()));
  ASSERT_THAT(j, IsOk());
  absl::StatusOr<Recovered> r = RecoverAll(**j);
  ASSERT_THAT(r, IsOk());
  std::vector<std::string> want2 = want;
  want2.push_back(extra);
  EXPECT_THAT(r->Data(), ElementsAreArray(want2));
  EXPECT_EQ(r->records.back().first, want.size() + 1) << "the sequence resumes";
}

void SweepLastRecords(const Written& w, size_t last_batches) {
  const std::string& full = w.files.at(SegPath(w.last_segment));
  ASSERT_GE(w.last_segment_batches.size(), last_batches);
  const uint64_t from =
      w.last_segment_batches[w.last_segment_batches.size() - last_batches].first;
  const uint64_t to = w.last_segment_batches.back().second;
  for (uint64_t cut = from; cut <= to; ++cut) {
    // The file ends at the cut (a truncated copy, a short write at EOF).
    CheckCut(w, full.substr(0, cut), cut, "truncated");
    // The bytes after the cut are zeros: a torn write into preallocated space.
    std::string zeroed = full;
    std::fill(zeroed.begin() + static_cast<std::ptrdiff_t>(cut), zeroed.end(), '\0');
    CheckCut(w, zeroed, cut, "zero-filled");
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(RecoverySweepTest, CutAtEveryByteOfTheLastRecordsKeepsExactlyTheWholeBatches) {
  // One segment: four single records, a batch of three, a single, a batch
  // of two; the sweep covers the last four batches (seven records).
  Written w = WriteJournal({{Rec(1, 20)}, {Rec(2, 5)}, {Rec(3, 40)}, {Rec(4, 20)},
                            {Rec(5, 10), Rec(6, 30), Rec(7, 1)},
                            {Rec(8, 25)},
                            {Rec(9, 12), Rec(10, 33)}});
  ASSERT_EQ(w.last_segment, 1u);
  SweepLastRecords(w, 4);
}

TEST(RecoverySweepTest, CutAtEveryByteOfTheLastSegmentWithEarlierSegmentsIntact) {
  std::vector<std::vector<std::string>> batches;
  for (int i = 0; i < 40; ++i) batches.push_back({Rec(i, 150)});
  batches.push_back({Rec(100, 20), Rec(101, 7)});
  batches.push_back({Rec(102, 30)});
  batches.push_back({Rec(103, 9), Rec(104, 9), Rec(105, 9)});
  Written w = WriteJournal(batches);
  ASSERT_GE(w.last_segment, 2u);
  SweepLastRecords(w, 3);
}

TEST(RecoverySweepTest, CutJustAfterTheSegmentHeaderRecoversAnEmptyJournal) {
  Written w = WriteJournal({{Rec(1, 20)}});
  const std::string& full = w.files.at(SegPath(1));
  for (uint64_t cut = kSegmentHeaderSize; cut <= w.last_segment_batches[0].second; ++cut) {
    CheckCut(w, full.substr(0, cut), cut, "truncated");
  }
}

// Every bit of every byte of a record in the middle of a segment.
TEST(RecoverySweepTest, EveryBitFlipInAMiddleRecordIsDataLossAtThatRecord) {
  std::vector<std::vector<std::string>> batches;
  for (int i = 0; i < 12; ++i) batches.push_back({Rec(i, 24)});
  batches[6] = {Rec(50, 24), Rec(51, 24)};  // a batch in the middle too
  Written w = WriteJournal(batches);
  ASSERT_EQ(w.last_segment, 1u);
  const std::string& full = w.files.at(SegPath(1));
  // Records 5 (a single) and 6..7 (the batch of two).
  const uint64_t from = w.last_segment_batches[5].first;
  const uint64_t to = w.last_segment_batches[6].second;
  const uint64_t second_of_batch =
      w.last_segment_batches[6].first + EncodedRecordSize(Rec(50, 24).size());
  for (uint64_t byte = from; byte < to; ++byte) {
    // The record holding this byte starts at one of three offsets.
    uint64_t record = from;
    if (byte >= w.last_segment_batches[5].second) record = w.last_segment_batches[5].second;
    if (byte >= second_of_batch) record = second_of_batch;
    for (int bit = 0; bit < 8; ++bit) {
      SCOPED_TRACE(absl::StrCat("byte ", byte, " bit ", bit));
      std::string damaged = full;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      std::unique_ptr<FakeEnv> env = EnvWith(w, damaged);
      const std::string where = absl::StrCat(SegPath(1), " at offset ", record);
      auto j = FileJournal::Open(Options(env.get()));
      ASSERT_THAT(j, IsOk());
      EXPECT_THAT(RecoverAll(**j), StatusIs(absl::StatusCode::kDataLoss, where));
      DirectoryView view;
      EXPECT_THAT(ReadDirectory(env.get(), kDir, {1, absl::ZeroDuration()}, &view),
                  StatusIs(absl::StatusCode::kDataLoss, where));
    }
  }
}

TEST(RecoverySweepTest, BitFlipsInANonLastSegmentAreDataLoss) {
  std::vector<std::vector<std::string>> batches;
  for (int i = 0; i < 60; ++i) batches.push_back({Rec(i, 100)});
  Written w = WriteJournal(batches);
  ASSERT_GE(w.last_segment, 2u);
  const std::string& first = w.files.at(SegPath(1));
  SegmentScan scan = ScanSegment(first, 0);
  ASSERT_GE(scan.records.size(), 3u);
  // Every byte of the LAST record of segment 1: at the end of its data, but
  // not a torn tail, since segment 2 follows.
  const ScannedRecord& r = scan.records.back();
  const uint64_t record = static_cast<uint64_t>(r.data.data() - first.data()) -
                          kRecordHeaderSize - kSeqSize;
  for (uint64_t byte = record; byte < scan.end; ++byte) {
    SCOPED_TRACE(absl::StrCat("byte ", byte));
    std::string damaged = first;
    damaged[byte] = static_cast<char>(damaged[byte] ^ 0x10);
    auto env = EnvWith(w, w.files.at(SegPath(w.last_segment)));
    env->SetContents(SegPath(1), damaged);
    auto j = FileJournal::Open(Options(env.get()));
    ASSERT_THAT(j, IsOk());
    EXPECT_THAT(RecoverAll(**j), StatusIs(absl::StatusCode::kDataLoss,
                                          absl::StrCat(SegPath(1), " at offset ", record)));
  }
}

}  // namespace
}  // namespace conveyor::server::journal
