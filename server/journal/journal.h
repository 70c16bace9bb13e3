// Journal: the broker's durable log of state changes, behind a narrow
// interface (append a batch, read back from the latest snapshot, snapshot),
// so that nothing outside it assumes the records live in local files.
// FileJournal (server/journal/file_journal.h) is the embedded implementation:
// segmented, preallocated, CRC32C-checked files with group commit.
//
// Records are opaque bytes. Each gets a sequence number, strictly increasing
// in Append order (gaps are possible: a batch refused with
// RESOURCE_EXHAUSTED leaves its numbers unused). One Append is one batch:
// recovery delivers all of its records or none of them.
//
// Thread-safety: every method may be called from any thread. Callbacks run
// on the journal's writer thread, never while a lock of the journal is held,
// so they may call back into the journal (e.g. Append from a `done`).
#ifndef CONVEYOR_SERVER_JOURNAL_JOURNAL_H_
#define CONVEYOR_SERVER_JOURNAL_JOURNAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace conveyor::server::journal {

using SequenceNumber = uint64_t;

// When the writer makes written records durable.
struct FsyncPolicy {
  enum class Mode {
    // fdatasync after each group commit, before any of its `done` callbacks
    // run: an acknowledged record survives a machine crash. The default.
    kAlways,
    // `done` runs right after write(2); the writer fdatasyncs at most
    // `interval` after the first unsynced write. Loss window: a machine
    // crash (not a process crash: the page cache survives those) loses the
    // records acknowledged in the last `interval` plus the time one fsync
    // takes.
    kInterval,
    // `done` runs right after write(2); no fsync except at segment rotation
    // and Close. A machine crash may lose any acknowledged record not yet
    // written back by the kernel (typically up to ~30 s).
    kNever,
  };
  Mode mode = Mode::kAlways;
  absl::Duration interval = absl::ZeroDuration();  // kInterval only; > 0.

  // "always", "interval:<ms>" or "never".
  std::string ToString() const;
};

// Parses "always", "never" or "interval:<ms>" with 1 <= ms <= 3600000.
// INVALID_ARGUMENT naming the text otherwise.
absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view text);

// One record handed back by Recover.
struct JournalRecord {
  SequenceNumber seq = 0;
  absl::string_view data;  // Valid only during the callback.
};

// The state saved by WriteSnapshot, handed back by Recover.
struct JournalSnapshot {
  SequenceNumber cut = 0;  // The first sequence number NOT covered by state.
  absl::string_view state;  // Valid only during the callback.
};

// Counters since Open, for metrics (conveyor_journal_*). Cheap to read.
struct JournalStats {
  uint64_t appends = 0;           // Append calls accepted into the queue.
  uint64_t records_written = 0;   // Records handed to write(2).
  uint64_t bytes_written = 0;     // Bytes handed to write(2), headers included.
  uint64_t group_commits = 0;     // Groups written (one write per segment).
  uint64_t syncs = 0;             // fdatasync/fsync calls on segment data.
  absl::Duration sync_time;       // Total time spent in them.
  uint64_t segments_created = 0;
  uint64_t segments_deleted = 0;
  uint64_t no_space_batches = 0;  // Batches refused with RESOURCE_EXHAUSTED.
  uint64_t snapshots_written = 0;
  uint64_t bytes_zero_filled = 0;  // Zeros written ahead of the writer.
};

// Hooks for metrics. Called on the writer thread, outside the journal's
// lock; must be fast and must not call back into the journal.
class JournalListener {
 public:
  virtual ~JournalListener() = default;
  // After each fdatasync/fsync of segment data (conveyor_journal_fsync_seconds).
  virtual void OnSync(absl::Duration /*latency*/) {}
  // After each write(2) of segment data (conveyor_journal_bytes).
  virtual void OnWrite(uint64_t /*bytes*/) {}
};

class Journal {
 public:
  virtual ~Journal() = default;

  // Reads the journal back: calls `on_snapshot` once with the latest
  // snapshot if there is one, then `on_record` for every record of every
  // whole batch after the snapshot's cut, in sequence order. Must be called
  // once, before any Append; the journal accepts appends once it returns OK.
  // A callback's non-OK status stops recovery and is returned.
  // Errors: DATA_LOSS naming the file and offset on corruption (anything but
  // a torn tail of the last segment, which is dropped); FAILED_PRECONDITION
  // if already called or for data of a newer format; INTERNAL for I/O
  // errors. After an error the journal is unusable and whatever the
  // callbacks built must be discarded.
  virtual absl::Status Recover(
      absl::FunctionRef<absl::Status(const JournalSnapshot&)> on_snapshot,
      absl::FunctionRef<absl::Status(const JournalRecord&)> on_record) = 0;

  // Appends `records` as one batch, in one group commit with whatever else
  // is queued. Never blocks on disk. `done` runs exactly once, on the
  // writer thread, with:
  //   OK                  the batch is written and durable under the fsync
  //                       policy;
  //   RESOURCE_EXHAUSTED  the disk is full (a new segment could not be
  //                       created): nothing of this batch was stored; a
  //                       later Append tries again;
  //   INVALID_ARGUMENT    a record is larger than the journal's limit;
  //   INTERNAL            the journal hit a fatal I/O error (message names
  //                       the file and the errno); it accepts nothing more.
  // Before Recover or after Close, `done` runs at once on the calling thread
  // with FAILED_PRECONDITION.
  virtual void Append(std::vector<std::string> records,
                      std::function<void(absl::Status)> done) = 0;

  // Marks a cut: every record appended after this call has a sequence
  // number >= the returned one, every record appended before it a smaller
  // one. The caller then serializes its state as of the cut and passes it
  // to WriteSnapshot. Never blocks on disk. FAILED_PRECONDITION unless open.
  virtual absl::StatusOr<SequenceNumber> BeginSnapshot() = 0;

  // Stores `state` as the snapshot at `cut` (a value BeginSnapshot
  // returned) durably and atomically, then deletes the storage of the
  // records before the cut and older snapshots. Blocks on disk: call it from
  // a background thread. Failure leaves the previous snapshot and all
  // records in place. Errors: INVALID_ARGUMENT for a cut BeginSnapshot did
  // not return; FAILED_PRECONDITION unless open or for a cut older than the
  // latest snapshot's; RESOURCE_EXHAUSTED if the disk is full; INTERNAL.
  virtual absl::Status WriteSnapshot(SequenceNumber cut,
                                     absl::string_view state) = 0;

  // Writes and syncs everything queued (whatever the policy), runs every
  // pending `done`, stops the writer and releases the storage. Idempotent.
  // Returns the fatal error if the journal hit one.
  virtual absl::Status Close() = 0;

  virtual JournalStats stats() const = 0;
};

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_JOURNAL_H_
