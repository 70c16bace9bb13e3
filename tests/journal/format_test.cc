#include "server/journal/format.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/journal/journal.h"
#include "tests/journal/journal_test_util.h"

namespace conveyor::server::journal {
namespace {

using ::conveyor::server::journal::testing::IsOk;
using ::conveyor::server::journal::testing::StatusIs;

// A segment image: header, `batches`, then `zeros` zero bytes.
std::string Segment(const std::vector<std::vector<std::string>>& batches,
                    size_t zeros = 256, uint64_t first_seq = 1) {
  std::string out = EncodeSegmentHeader({1, first_seq});
  uint64_t seq = first_seq;
  for (const auto& b : batches) {
    EncodeBatch(b, seq, &out);
    seq += b.size();
  }
  out.append(zeros, '\0');
  return out;
}

size_t RecordSize(const std::string& data) { return EncodedRecordSize(data.size()); }

TEST(FormatTest, FileNamesRoundTrip) {
  EXPECT_EQ(SegmentFileName(3), "00000000000000000003.log");
  EXPECT_EQ(SnapshotFileName(42), "snapshot-00000000000000000042.snap");
  uint64_t n = 0;
  EXPECT_TRUE(ParseSegmentFileName("00000000000000000003.log", &n));
  EXPECT_EQ(n, 3u);
  EXPECT_TRUE(ParseSnapshotFileName("snapshot-00000000000000000042.snap", &n));
  EXPECT_EQ(n, 42u);
  EXPECT_FALSE(ParseSegmentFileName("3.log", &n));
  EXPECT_FALSE(ParseSegmentFileName("00000000000000000003.log.tmp", &n));
  EXPECT_FALSE(ParseSegmentFileName("0000000000000000000x.log", &n));
  EXPECT_FALSE(ParseSnapshotFileName("snapshot-00000000000000000042.snap.tmp", &n));
}

TEST(FormatTest, FormatFileParses) {
  EXPECT_THAT(ParseFormatFile(FormatFileContents(1)), IsOk());
  EXPECT_EQ(*ParseFormatFile("conveyor-journal 7\n"), 7u);
  EXPECT_THAT(ParseFormatFile("hello"), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FormatTest, SegmentHeaderRoundTripAndChecks) {
  std::string h = EncodeSegmentHeader({9, 1234});
  ASSERT_EQ(h.size(), kSegmentHeaderSize);
  EXPECT_EQ(h.substr(0, 4), "CVYJ");
  auto d = DecodeSegmentHeader(h);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->number, 9u);
  EXPECT_EQ(d->first_seq, 1234u);
  std::string bad = h;
  bad[10] ^= 1;
  EXPECT_THAT(DecodeSegmentHeader(bad),
              StatusIs(absl::StatusCode::kDataLoss, "checksum"));
  EXPECT_THAT(DecodeSegmentHeader(h.substr(0, 10)),
              StatusIs(absl::StatusCode::kDataLoss, "short"));
  EXPECT_THAT(DecodeSegmentHeader(std::string(32, 'x')),
              StatusIs(absl::StatusCode::kDataLoss, "magic"));
}

TEST(FormatTest, RecordLayoutIsLengthCrcTypeSeqPayload) {
  std::string out;
  EncodeRecord(RecordType::kFull, 0x0102030405060708ull, "abc", &out);
  ASSERT_EQ(out.size(), 9u + 8u + 3u);
  EXPECT_EQ(static_cast<uint8_t>(out[0]), 11u);  // length = 8 (seq) + 3
  EXPECT_EQ(out[1], 0);
  EXPECT_EQ(static_cast<uint8_t>(out[8]), 1u);   // type kFull
  EXPECT_EQ(static_cast<uint8_t>(out[9]), 0x08u);  // seq, little-endian
  EXPECT_EQ(out.substr(17), "abc");
}

TEST(FormatTest, ScanReadsBatchesAndStopsAtZeroFill) {
  std::string seg = Segment({{"a"}, {"b", "c", "d"}, {"e"}});
  SegmentScan scan = ScanSegment(seg, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kClean);
  ASSERT_EQ(scan.records.size(), 5u);
  EXPECT_EQ(scan.records[0].data, "a");
  EXPECT_EQ(scan.records[4].data, "e");
  EXPECT_EQ(scan.records[4].seq, 5u);
  EXPECT_EQ(scan.last_seq, 5u);
  EXPECT_EQ(scan.end, seg.size() - 256);
}

TEST(FormatTest, ScanOfEmptySegmentIsClean) {
  SegmentScan scan = ScanSegment(Segment({}, 4000), 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kClean);
  EXPECT_TRUE(scan.records.empty());
  EXPECT_EQ(scan.end, kSegmentHeaderSize);
  // No preallocated tail at all (file ends after the header) is clean too.
  EXPECT_EQ(ScanSegment(Segment({}, 0), 0).tail, SegmentScan::Tail::kClean);
}

TEST(FormatTest, PartialLastRecordIsTornAtItsStart) {
  std::string full = Segment({{"one"}, {"two"}}, 0);
  const size_t second = kSegmentHeaderSize + RecordSize("one");
  for (size_t cut = second + 1; cut < full.size(); ++cut) {
    // The end of the file falls inside the second record...
    SegmentScan a = ScanSegment(full.substr(0, cut), 0);
    EXPECT_EQ(a.tail, SegmentScan::Tail::kTorn) << cut;
    EXPECT_EQ(a.end, second) << cut;
    ASSERT_EQ(a.records.size(), 1u);
    // ...or the rest of it is still zero-filled preallocated space.
    std::string zeroed = full;
    std::fill(zeroed.begin() + static_cast<std::ptrdiff_t>(cut), zeroed.end(), '\0');
    zeroed.append(100, '\0');
    SegmentScan b = ScanSegment(zeroed, 0);
    EXPECT_EQ(b.tail, SegmentScan::Tail::kTorn) << cut;
    EXPECT_EQ(b.end, second) << cut;
    EXPECT_EQ(b.problem_offset, second) << cut;
  }
}

TEST(FormatTest, GarbageAfterTheLastRecordIsTorn) {
  std::string seg = Segment({{"one"}}, 0);
  const size_t end = seg.size();
  seg.append("\x13\x00\x00\x00garbage!", 12);
  seg.append(64, '\0');
  SegmentScan scan = ScanSegment(seg, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kTorn);
  EXPECT_EQ(scan.end, end);
}

TEST(FormatTest, BadChecksumFollowedByValidDataIsCorrupt) {
  std::string seg = Segment({{"one"}, {"two"}, {"three"}});
  const size_t second = kSegmentHeaderSize + RecordSize("one");
  seg[second + kRecordHeaderSize + kSeqSize] ^= 0x20;  // 't' -> 'T'
  SegmentScan scan = ScanSegment(seg, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kCorrupt);
  EXPECT_EQ(scan.problem_offset, second);
  EXPECT_THAT(scan.problem, ::testing::HasSubstr("checksum"));
}

TEST(FormatTest, ImpossibleLengthFollowedByValidDataIsCorrupt) {
  std::string seg = Segment({{"one"}, {"two"}, {"three"}});
  const size_t second = kSegmentHeaderSize + RecordSize("one");
  seg[second + 3] = '\x7f';  // length ~2 GiB
  SegmentScan scan = ScanSegment(seg, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kCorrupt);
  EXPECT_EQ(scan.problem_offset, second);
  EXPECT_THAT(scan.problem, ::testing::HasSubstr("length"));
}

TEST(FormatTest, ZeroedRecordHeaderFollowedByValidDataIsCorrupt) {
  std::string seg = Segment({{"one"}, {"two"}, {"three"}});
  const size_t second = kSegmentHeaderSize + RecordSize("one");
  for (size_t i = 0; i < 4; ++i) seg[second + i] = '\0';
  EXPECT_EQ(ScanSegment(seg, 0).tail, SegmentScan::Tail::kCorrupt);
}

TEST(FormatTest, IncompleteBatchIsDroppedWhole) {
  std::string seg = EncodeSegmentHeader({1, 1});
  EncodeBatch({"a"}, 1, &seg);
  const size_t batch_start = seg.size();
  EncodeRecord(RecordType::kFirst, 2, "b", &seg);
  EncodeRecord(RecordType::kMiddle, 3, "c", &seg);
  seg.append(100, '\0');
  SegmentScan scan = ScanSegment(seg, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kTorn);
  EXPECT_EQ(scan.end, batch_start);
  ASSERT_EQ(scan.records.size(), 1u);
  EXPECT_EQ(scan.last_seq, 1u);
}

TEST(FormatTest, NonIncreasingSequenceIsCorrupt) {
  std::string seg = EncodeSegmentHeader({1, 1});
  EncodeRecord(RecordType::kFull, 5, "a", &seg);
  EncodeRecord(RecordType::kFull, 5, "b", &seg);
  SegmentScan scan = ScanSegment(seg, 0);
  EXPECT_EQ(scan.tail, SegmentScan::Tail::kCorrupt);
  EXPECT_THAT(scan.problem, ::testing::HasSubstr("sequence"));
  // And relative to the previous segment's last sequence number.
  EXPECT_EQ(ScanSegment(Segment({{"x"}}, 10, 1), 1).tail,
            SegmentScan::Tail::kCorrupt);
}

TEST(FormatTest, SnapshotRoundTripAndChecks) {
  std::string snap = EncodeSnapshot(77, "state bytes");
  auto d = DecodeSnapshot(snap);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->cut, 77u);
  EXPECT_EQ(d->state, "state bytes");
  std::string bad = snap;
  bad.back() ^= 1;
  EXPECT_THAT(DecodeSnapshot(bad), StatusIs(absl::StatusCode::kDataLoss, "checksum"));
  EXPECT_THAT(DecodeSnapshot(snap.substr(0, snap.size() - 1)),
              StatusIs(absl::StatusCode::kDataLoss, "length"));
  EXPECT_THAT(DecodeSnapshot(EncodeSnapshot(1, "")), IsOk());
}

TEST(FsyncPolicyTest, ParsesTheThreeForms) {
  auto always = ParseFsyncPolicy("always");
  ASSERT_THAT(always, IsOk());
  EXPECT_EQ(always->mode, FsyncPolicy::Mode::kAlways);
  auto never = ParseFsyncPolicy("never");
  ASSERT_THAT(never, IsOk());
  EXPECT_EQ(never->mode, FsyncPolicy::Mode::kNever);
  auto interval = ParseFsyncPolicy("interval:50");
  ASSERT_THAT(interval, IsOk());
  EXPECT_EQ(interval->mode, FsyncPolicy::Mode::kInterval);
  EXPECT_EQ(interval->interval, absl::Milliseconds(50));
  EXPECT_EQ(interval->ToString(), "interval:50");
  EXPECT_EQ(always->ToString(), "always");
}

TEST(FsyncPolicyTest, RejectsBadText) {
  for (const char* bad : {"", "Always", "interval", "interval:", "interval:0",
                          "interval:-5", "interval:+5", "interval:5ms",
                          "interval:3600001", "sometimes"}) {
    EXPECT_THAT(ParseFsyncPolicy(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, "fsync policy"))
        << bad;
  }
}

}  // namespace
}  // namespace conveyor::server::journal
