// The journal's on-disk format, version 1: file names, segment headers,
// records and snapshots. Pure functions over bytes; no I/O. Thread-safe.
//
// All integers are little-endian. A "masked CRC" is crc32c::Mask(crc32c).
//
// Data directory:
//   FORMAT                            "conveyor-journal <version>\n"
//   LOCK                              flock'd by the running journal
//   NNNNNNNNNNNNNNNNNNNN.log          segment number N (20 digits), from 1
//   snapshot-NNNNNNNNNNNNNNNNNNNN.snap  snapshot whose cut is sequence N
//   *.tmp                             files being written; never read back
//
// Segment file: a 32-byte header, then records, then zeros up to the
// preallocated size:
//   header  [0,4) magic "CVYJ"  [4,8) u32 version (1)  [8,16) u64 segment
//           number  [16,24) u64 first_seq (every record in this segment has
//           seq >= first_seq, every record in earlier segments < first_seq)
//           [24,28) u32 zero  [28,32) u32 masked CRC of bytes [0,28)
//   record  [u32 length][u32 masked CRC of (type byte + payload)][u8 type]
//           [payload: length bytes]
//           The payload starts with the record's u64 sequence number, then
//           the caller's bytes: length = 8 + caller bytes, so a real record
//           never has length 0, and a length of 0 marks the end of the data
//           (the preallocated tail is zero-filled).
//   type    1 kFull: a batch (one Append) of one record; 2 kFirst, 3 kMiddle,
//           4 kLast: a batch of several. Recovery delivers whole batches only.
//   Sequence numbers strictly increase through the journal (gaps allowed:
//   a batch refused for lack of disk space leaves its numbers unused).
//
// Snapshot file:
//   [0,4) magic "CVYS"  [4,8) u32 version (1)  [8,16) u64 cut (the first
//   sequence number NOT covered by the state)  [16,24) u64 state length
//   [24,28) u32 masked CRC of (bytes [0,24) + state)  [28,...) state
#ifndef CONVEYOR_SERVER_JOURNAL_FORMAT_H_
#define CONVEYOR_SERVER_JOURNAL_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace conveyor::server::journal {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kSegmentHeaderSize = 32;
inline constexpr size_t kRecordHeaderSize = 9;  // length, masked CRC, type
inline constexpr size_t kSeqSize = 8;
inline constexpr size_t kSnapshotHeaderSize = 28;

inline constexpr char kFormatFileName[] = "FORMAT";
inline constexpr char kLockFileName[] = "LOCK";
inline constexpr char kTempSuffix[] = ".tmp";

enum class RecordType : uint8_t { kFull = 1, kFirst = 2, kMiddle = 3, kLast = 4 };

// ── File names ──
std::string SegmentFileName(uint64_t number);
bool ParseSegmentFileName(absl::string_view name, uint64_t* number);
std::string SnapshotFileName(uint64_t cut);
bool ParseSnapshotFileName(absl::string_view name, uint64_t* cut);
std::string FormatFileContents(uint32_t version);
// The version in a FORMAT file; DATA_LOSS if it is not one.
absl::StatusOr<uint32_t> ParseFormatFile(absl::string_view contents);

// ── Segments ──
struct SegmentHeader {
  uint64_t number = 0;
  uint64_t first_seq = 0;
};
std::string EncodeSegmentHeader(const SegmentHeader& header);
// DATA_LOSS for a short, foreign or damaged header; FAILED_PRECONDITION for
// a version newer than kFormatVersion. The message names no file.
absl::StatusOr<SegmentHeader> DecodeSegmentHeader(absl::string_view data);

inline size_t EncodedRecordSize(size_t payload_size) {
  return kRecordHeaderSize + kSeqSize + payload_size;
}
// Appends one framed record to `dst`.
void EncodeRecord(RecordType type, uint64_t seq, absl::string_view data,
                  std::string* dst);
// Appends a batch: kFull for one record, kFirst..kLast for several, with
// sequence numbers first_seq, first_seq + 1, ...
void EncodeBatch(const std::vector<std::string>& records, uint64_t first_seq,
                 std::string* dst);
size_t EncodedBatchSize(const std::vector<std::string>& records);

struct ScannedRecord {
  uint64_t seq = 0;
  absl::string_view data;  // The caller's bytes (points into the scanned data).
};

// What a scan of one segment found.
struct SegmentScan {
  enum class Tail {
    kClean,    // Whole batches, then zeros or the end of the file.
    kTorn,     // Whole batches, then damage with no valid record after it:
               // a torn write, if this is the last segment.
    kCorrupt,  // Damage before more valid data, or a valid record that
               // breaks the rules (sequence, batch framing).
  };
  std::vector<ScannedRecord> records;  // Whole batches only, in order.
  uint64_t last_seq = 0;  // Of the last record in `records`; else prev_seq.
  uint64_t end = 0;       // Just past the last whole batch: where to resume.
  Tail tail = Tail::kClean;
  uint64_t problem_offset = 0;  // kTorn/kCorrupt: first offset not kept.
  std::string problem;          // kTorn/kCorrupt: what is wrong there.
};

// Scans `data` (a whole segment file whose header was checked); `prev_seq`
// is the last sequence number before this segment (0 if none).
SegmentScan ScanSegment(absl::string_view data, uint64_t prev_seq);

// ── Snapshots ──
std::string EncodeSnapshot(uint64_t cut, absl::string_view state);
// Its first kSnapshotHeaderSize bytes alone: written before `state`, it
// spares a copy of a large state.
std::string EncodeSnapshotHeader(uint64_t cut, absl::string_view state);
struct DecodedSnapshot {
  uint64_t cut = 0;
  absl::string_view state;  // Points into the decoded data.
};
// DATA_LOSS if damaged; FAILED_PRECONDITION for a newer version.
absl::StatusOr<DecodedSnapshot> DecodeSnapshot(absl::string_view data);

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_FORMAT_H_
