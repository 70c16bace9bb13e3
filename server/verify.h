// The offline tools of conveyord: `--verify=DIR [--dump]` checks a data
// directory and `--backup=DEST --data-dir=SRC` copies one. Both read without
// the directory's lock (server/journal/dir_reader.h), so they work while a
// broker runs on it; neither changes the source.
//
// Verify reads FORMAT, the latest snapshot and every segment after its cut
// (lengths, CRCs, batch framing, sequence numbers), decodes every record as
// a JournalEntry and replays them as the broker would count them (queues,
// tasks per state), then prints a summary. A torn tail of the last segment
// (on a live directory: the write in progress) is a note, not an error.
// Damage before it, a record that is not a JournalEntry, or one the broker
// would refuse to replay is DATA_LOSS naming the file and the offset.
//
// Exit codes (sysexits.h): 0 sound; 65 damaged or unreadable data (also a
// newer format); 66 no such directory or not a data directory; 73 the backup
// destination is not a new or empty directory or cannot be created; 74 an
// I/O error.
//
// Thread-safety: stateless functions; thread-compatible.
#ifndef CONVEYOR_SERVER_VERIFY_H_
#define CONVEYOR_SERVER_VERIFY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/journal/dir_reader.h"
#include "server/journal/env.h"

namespace conveyor::server {

struct VerifyOptions {
  // nullptr: journal::Env::Default().
  journal::Env* env = nullptr;
  journal::ReadOptions read;
  // Receives one JSON object per record (no newline), snapshot entries
  // first, then every record after the cut in sequence order; null: none.
  //   {"file":F,"offset":O,"snapshot_cut":C,"entry":{...}}   snapshot entry
  //   {"file":F,"offset":O,"seq":S,"batch":"full|first|middle|last",
  //    "entry":{...}}                                          segment record
  // `offset` is that of the record header (segment) or of the entry's length
  // prefix (snapshot); `entry` is the protobuf JSON of the JournalEntry
  // (proto field names, default values omitted).
  std::function<void(const std::string&)> dump;
  // The time at which SCHEDULED tasks whose not-before has passed count as
  // READY (as the broker would place them on a restart now).
  absl::Time now = absl::InfinitePast();
};

struct VerifyReport {
  std::string dir;
  uint32_t format_version = 0;
  bool has_snapshot = false;
  std::string snapshot_file;
  uint64_t snapshot_cut = 0;
  uint64_t snapshot_bytes = 0;
  uint64_t snapshot_entries = 0;
  uint64_t segments = 0;
  uint64_t records = 0;             // Delivered by recovery (at or after the cut).
  uint64_t records_before_cut = 0;  // Checked, but skipped by recovery.
  uint64_t batches = 0;
  uint64_t bytes = 0;  // Segment data read: headers and whole batches.
  uint64_t first_seq = 0;  // Of the records delivered; 0 if none.
  uint64_t last_seq = 0;
  std::map<std::string, uint64_t> entries;  // By JournalEntry kind.
  uint32_t epoch = 0;  // The highest BrokerStarted epoch.
  uint64_t queues = 0;
  uint64_t tasks = 0;
  std::map<std::string, uint64_t> tasks_by_state;  // TaskStateName -> count
  // Per segment: one line each.
  std::vector<std::string> segment_lines;
  // Torn tail, skipped files, retries.
  std::vector<std::string> notes;
  // OK, or the first problem: DATA_LOSS naming the file and offset, NOT_FOUND,
  // FAILED_PRECONDITION (newer format), INTERNAL (I/O).
  absl::Status status;
};

// Checks the data directory `dir` as described above. Never fails as a
// call: problems are in `status`, with everything read before them counted.
VerifyReport VerifyDirectory(const std::string& dir, const VerifyOptions& options);

// The report as printed by --verify (several lines, ending in "\n").
std::string FormatVerifyReport(const VerifyReport& report);

// The exit code for a report's status (0, 65, 66 or 74).
int VerifyExitCode(const absl::Status& status);

// `conveyord --verify=DIR [--dump]`: the report (or, with `dump`, the JSON
// lines, then the report) on `out`, the problem on `err`. Returns the exit
// code.
int RunVerify(const std::string& dir, bool dump, std::ostream& out,
              std::ostream& err, journal::Env* env = nullptr);

// `conveyord --backup=DEST --data-dir=SRC`: copies (journal/backup.h), prints
// what it copied on `out`, the problem on `err`. Returns the exit code.
int RunBackup(const std::string& src, const std::string& dest, std::ostream& out,
              std::ostream& err, journal::Env* env = nullptr);

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_VERIFY_H_
