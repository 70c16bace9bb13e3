// libFuzzer target: the journal's on-disk decoders (server/journal/format.h)
// on arbitrary bytes, read as a segment file (header, then records).
//
// Properties checked (a violation aborts, so libFuzzer saves the input):
//  - ScanSegment never delivers part of a record or of a batch: the
//    records it returns, framed again with EncodeRecord (same type, sequence
//    number and bytes), are exactly the input from the header to `end`, and
//    their types form whole batches;
//  - sequence numbers strictly increase from prev_seq; `last_seq` is the last
//    one; a clean scan has only zeros after `end`; damage is at or after
//    `end`;
//  - the whole-batch prefix scans clean to the same records (also with
//    zeros after it, as in a preallocated file);
//  - a segment header, snapshot, FORMAT file or file name that decodes
//    re-encodes to the same bytes;
//  - the input as one record's payload survives EncodeRecord + ScanSegment.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/journal/format.h"

namespace {

namespace j = ::conveyor::server::journal;

#define FUZZ_CHECK(cond)                                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,     \
                   __LINE__, #cond);                                     \
      std::abort();                                                      \
    }                                                                    \
  } while (0)

bool AllZero(absl::string_view s) { return s.find_first_not_of('\0') == absl::string_view::npos; }

j::RecordType TypeAt(absl::string_view data, const j::ScannedRecord& r) {
  const size_t offset = static_cast<size_t>(r.data.data() - data.data()) - j::kSeqSize - 1;
  return static_cast<j::RecordType>(data[offset]);
}

void CheckScan(absl::string_view data, uint64_t prev_seq) {
  const j::SegmentScan scan = j::ScanSegment(data, prev_seq);
  FUZZ_CHECK(scan.end >= j::kSegmentHeaderSize);
  FUZZ_CHECK(scan.end <= std::max<size_t>(data.size(), j::kSegmentHeaderSize));

  // The records, framed again, are exactly the input up to `end`.
  std::string framed(data.substr(0, std::min<size_t>(data.size(), j::kSegmentHeaderSize)));
  uint64_t last = prev_seq;
  bool in_batch = false;
  for (const j::ScannedRecord& r : scan.records) {
    FUZZ_CHECK(r.data.data() >= data.data() && r.data.data() + r.data.size() <= data.data() + data.size());
    const j::RecordType type = TypeAt(data, r);
    const bool starts = type == j::RecordType::kFull || type == j::RecordType::kFirst;
    FUZZ_CHECK(starts != in_batch);
    in_batch = type == j::RecordType::kFirst || type == j::RecordType::kMiddle;
    FUZZ_CHECK(r.seq > last);
    last = r.seq;
    j::EncodeRecord(type, r.seq, r.data, &framed);
  }
  FUZZ_CHECK(!in_batch);  // Whole batches only.
  FUZZ_CHECK(scan.last_seq == last);
  if (!scan.records.empty()) FUZZ_CHECK(framed.size() == scan.end);
  if (data.size() >= j::kSegmentHeaderSize) {
    FUZZ_CHECK(framed == data.substr(0, scan.end));
  }

  switch (scan.tail) {
    case j::SegmentScan::Tail::kClean:
      FUZZ_CHECK(AllZero(data.substr(std::min<size_t>(scan.end, data.size()))));
      FUZZ_CHECK(scan.problem.empty());
      break;
    case j::SegmentScan::Tail::kTorn:
    case j::SegmentScan::Tail::kCorrupt:
      FUZZ_CHECK(scan.problem_offset >= scan.end);
      FUZZ_CHECK(!scan.problem.empty());
      break;
  }

  if (data.size() < j::kSegmentHeaderSize) return;
  // The whole-batch prefix is clean and holds the same records, with or
  // without a zero-filled tail.
  std::string prefix(data.substr(0, scan.end));
  for (int zeros : {0, 64}) {
    prefix.resize(scan.end + zeros, '\0');
    const j::SegmentScan again = j::ScanSegment(prefix, prev_seq);
    FUZZ_CHECK(again.tail == j::SegmentScan::Tail::kClean);
    FUZZ_CHECK(again.end == scan.end);
    FUZZ_CHECK(again.last_seq == scan.last_seq);
    FUZZ_CHECK(again.records.size() == scan.records.size());
    for (size_t i = 0; i < again.records.size(); ++i) {
      FUZZ_CHECK(again.records[i].seq == scan.records[i].seq);
      FUZZ_CHECK(again.records[i].data == scan.records[i].data);
    }
  }
}

void CheckNames(absl::string_view data) {
  if (data.size() > 64) return;
  uint64_t n = 0;
  if (j::ParseSegmentFileName(data, &n)) FUZZ_CHECK(j::SegmentFileName(n) == data);
  if (j::ParseSnapshotFileName(data, &n)) FUZZ_CHECK(j::SnapshotFileName(n) == data);
  absl::StatusOr<uint32_t> version = j::ParseFormatFile(data);
  if (version.ok()) {
    FUZZ_CHECK(*version != 0);
    absl::StatusOr<uint32_t> again = j::ParseFormatFile(j::FormatFileContents(*version));
    FUZZ_CHECK(again.ok() && *again == *version);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const absl::string_view data(reinterpret_cast<const char*>(bytes), size);

  // As a segment file: the header, then the records after it.
  uint64_t prev_seq = 0;
  absl::StatusOr<j::SegmentHeader> header = j::DecodeSegmentHeader(data);
  if (header.ok()) {
    // The reserved word [24,28) is covered by the CRC but not required to
    // be zero on decoding, so only a header with it zero must re-encode to
    // the same bytes.
    std::string canonical(data.substr(0, j::kSegmentHeaderSize));
    if (AllZero(canonical.substr(24, 4))) FUZZ_CHECK(j::EncodeSegmentHeader(*header) == canonical);
    absl::StatusOr<j::SegmentHeader> again =
        j::DecodeSegmentHeader(j::EncodeSegmentHeader(*header));
    FUZZ_CHECK(again.ok() && again->number == header->number &&
               again->first_seq == header->first_seq);
    prev_seq = header->first_seq > 0 ? header->first_seq - 1 : 0;
  }
  CheckScan(data, prev_seq);

  // As a snapshot file.
  absl::StatusOr<j::DecodedSnapshot> snap = j::DecodeSnapshot(data);
  if (snap.ok()) FUZZ_CHECK(j::EncodeSnapshot(snap->cut, snap->state) == data);

  CheckNames(data);

  // As one record's payload, in a fresh segment.
  std::string segment = j::EncodeSegmentHeader({7, 100});
  j::EncodeRecord(j::RecordType::kFull, 100, data, &segment);
  const j::SegmentScan one = j::ScanSegment(segment, 99);
  FUZZ_CHECK(one.tail == j::SegmentScan::Tail::kClean);
  FUZZ_CHECK(one.records.size() == 1 && one.records[0].seq == 100 && one.records[0].data == data);
  return 0;
}
