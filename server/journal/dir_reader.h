// ReadDirectory: a read-only, lock-free reader of a journal data directory
// (format: server/journal/format.h), for offline tools - `conveyord
// --verify` and `conveyord --backup` - that must also work while a broker
// runs on the directory.
//
// It never takes the directory's LOCK and never changes a file. It reads
// what recovery would read - FORMAT, the latest snapshot, every segment from
// the one that holds the snapshot's cut - and checks it as FileJournal's
// Recover does (every record's length and CRC, batch framing, increasing
// sequence numbers, contiguous segments), plus one check recovery does not
// make: the first segment read must start at or before the cut (at segment
// 1 without a snapshot), so that no records between them are missing.
//
// A broker may write and compact while the reader runs, so the reader builds
// a crash-consistent view: the files it lists are read whole into memory; a
// file that vanishes (compaction deleted it after a newer snapshot) or a view
// that does not hold together (a page of the last segment caught mid-write,
// a listing taken during a compaction) makes it list and read again, up to
// ReadOptions::attempts times. The last segment may end in a torn write (on a
// live directory: the write in progress); that is reported in the view, not
// an error. Damage before it is DATA_LOSS naming the file and the offset.
//
// Memory: the view holds the snapshot and the data of every live segment
// (the preallocated zero tail is not kept), i.e. what a restart would replay.
//
// Thread-safety: a free function over an Env; safe to call from any thread.
#ifndef CONVEYOR_SERVER_JOURNAL_DIR_READER_H_
#define CONVEYOR_SERVER_JOURNAL_DIR_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/journal/env.h"
#include "server/journal/format.h"

namespace conveyor::server::journal {

struct ReadOptions {
  // How many times to list and read the directory before giving up on a
  // view that does not hold together. At least 1.
  int attempts = 5;
  // Pause between attempts (lets a compaction or a write finish).
  absl::Duration retry_delay = absl::Milliseconds(20);
};

// The latest snapshot file, read whole.
struct SnapshotView {
  std::string name;  // File name, e.g. "snapshot-00000000000000000120.snap".
  std::string path;
  uint64_t cut = 0;
  std::string file;  // The whole file (header + state).
  absl::string_view state() const {
    return absl::string_view(file).substr(kSnapshotHeaderSize);
  }
};

// One record of a segment.
struct RecordView {
  uint64_t seq = 0;
  uint64_t offset = 0;  // Of its record header in the segment file.
  RecordType type = RecordType::kFull;
  uint64_t size = 0;    // Of the caller's bytes.
};

// One segment, as far as its whole batches go.
struct SegmentView {
  std::string name;  // File name, e.g. "00000000000000000003.log".
  std::string path;
  uint64_t number = 0;
  uint64_t first_seq = 0;
  uint64_t file_bytes = 0;  // Size of the file (preallocated) when read.
  // The file's bytes [0, end): the header and every whole batch. Past `end`
  // the file held zeros, or the torn tail described below.
  std::string data;
  uint64_t end = 0;
  // Every record of a whole batch, in order (also those before the cut,
  // which recovery skips).
  std::vector<RecordView> records;
  uint64_t batches = 0;
  // Set for the last segment when its data ends in a torn write: where the
  // damage starts, what is wrong there, and the bytes from `end` to the last
  // non-zero byte (what recovery drops).
  bool torn = false;
  uint64_t torn_offset = 0;
  std::string torn_problem;
  uint64_t torn_bytes = 0;

  // The caller's bytes of `r` (a record of this segment).
  absl::string_view RecordData(const RecordView& r) const {
    return absl::string_view(data).substr(r.offset + kRecordHeaderSize + kSeqSize,
                                          r.size);
  }
};

struct DirectoryView {
  std::string dir;
  uint32_t format_version = 0;
  std::optional<SnapshotView> snapshot;
  // The first sequence number recovery delivers from the segments: the
  // snapshot's cut, or 0 without a snapshot.
  uint64_t cut = 0;
  // From the segment that holds the cut (or the first), in order.
  std::vector<SegmentView> segments;
  // Files recovery would skip or remove: older snapshots, segments wholly
  // before the cut, *.tmp files. Names, sorted.
  std::vector<std::string> skipped;
  // How many times the directory was listed and read.
  int attempts = 0;
};

// Reads `dir` into `out` as described at the top of this file.
// On an error `out` holds what was read in the last attempt before the
// problem (for a damaged segment: the segment with its whole batches before
// the damage), so that a tool can still show it.
// Errors: NOT_FOUND if `dir` does not exist or holds no FORMAT file and no
// journal files; DATA_LOSS naming the file and offset for damage (anything
// but a torn tail of the last segment), journal files without FORMAT, a
// missing segment or missing records; FAILED_PRECONDITION for a newer
// format; INVALID_ARGUMENT for attempts < 1; I/O errors as the Env reports
// them.
absl::Status ReadDirectory(Env* env, const std::string& dir,
                           const ReadOptions& options, DirectoryView* out);

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_DIR_READER_H_
