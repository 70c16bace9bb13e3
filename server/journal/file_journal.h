// FileJournal: the embedded Journal, in segmented files in a data directory
// (format: server/journal/format.h).
//
// Writing. Append queues a batch and returns. One writer thread takes
// everything queued, encodes it, writes it with one write(2) per segment and
// syncs per the FsyncPolicy (group commit: whatever queues up while one
// group is being written and synced goes into the next). Segments are
// preallocated to `segment_bytes` (fallocate) when created, so a full disk
// shows up then, as RESOURCE_EXHAUSTED for the batches that needed the new
// segment (nothing of them stored), never in the middle of a write; the next
// group tries to create the segment again (meanwhile, batches that still fit
// in the current segment are stored there). A batch never spans segments (a
// batch larger than a segment gets a segment of its own size). A new segment
// is written as a temp file, preallocated, given its header, fsynced, renamed
// and the directory fsynced; the segment it replaces is synced before the
// rename, under every policy, so only the last segment can ever end in a
// torn write.
//
// Failure. Any other write or sync error is fatal: the journal never retries
// an fsync (after a failed fsync the kernel may have dropped the dirty pages,
// and a retry would report success for lost data). It fails every pending
// and later `done` with INTERNAL naming the file and the errno, and calls
// `on_fatal` once.
//
// Recovery (Recover). Loads the latest snapshot (a leftover *.tmp from an
// interrupted write is logged and removed; a damaged snapshot under its final
// name is DATA_LOSS), then replays the segments in order from the one that
// holds the cut, delivering every whole batch. The end of the data in a
// segment is a zero length field (the zero-filled preallocated tail) or the
// end of the file. Damage at the end of the last segment's data with no valid
// record after it is a torn write: it is dropped (the file is truncated to
// the last whole batch and preallocated again, "torn tail dropped" is logged
// with the file and offset) and writing resumes there. Damage anywhere else -
// a bad checksum or impossible length followed by more valid data, any damage
// in a segment that is not the last, a missing segment - is DATA_LOSS naming
// the file and the offset.
//
// Zero-filling ahead (`zero_fill_ahead`). Preallocation leaves unwritten
// extents (ext4, XFS): the first write into each block changes the file's
// metadata, so a fdatasync after it writes metadata too. So the writer keeps
// the segment written with zeros ahead of its data: when its data comes
// within half of `zero_fill_ahead` of the zeros' end, it writes zeros up to
// `zero_fill_ahead` past its data, in the same thread, without a sync of
// their own. The next fdatasync carries them and the metadata change once,
// and the syncs after it, over blocks already written, carry data alone (on
// this project's VMs a write + fdatasync of 9 KB took ~130 us over written
// blocks, ~210 us over unwritten ones). Zeros only land past the data, where
// the file reads as zeros anyway. A failed zero write is logged and stops
// zero-filling for that segment; nothing else changes.
//
// The directory is locked with flock(2) on LOCK for the journal's lifetime
// and carries a FORMAT file; a newer format is refused.
//
// Thread-safety: as for Journal. Internally one mutex (`mu_`) guards the
// queue and the shared state; the writer thread releases it around all I/O
// and owns the open segment alone.
#ifndef CONVEYOR_SERVER_JOURNAL_FILE_JOURNAL_H_
#define CONVEYOR_SERVER_JOURNAL_FILE_JOURNAL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/journal/env.h"
#include "server/journal/journal.h"

namespace conveyor::server::journal {

struct FileJournalOptions {
  // The data directory; created if missing (its parent must exist).
  std::string dir;
  // nullptr: Env::Default(). Must outlive the journal.
  Env* env = nullptr;
  FsyncPolicy fsync;
  // Preallocated size of a segment; at least 4096.
  uint64_t segment_bytes = uint64_t{64} << 20;
  // Largest record Append accepts (INVALID_ARGUMENT above it).
  size_t max_record_bytes = size_t{16} << 20;
  // Called once, on the writer thread, with the INTERNAL status of the first
  // fatal I/O error, after the pending `done` callbacks ran. The broker
  // exits on it.
  std::function<void(absl::Status)> on_fatal;
  // Metrics hooks; nullptr for none. Must outlive the journal.
  JournalListener* listener = nullptr;
  // How far past its data the writer keeps the current segment written with
  // zeros (see the top of this file); 0 turns it off.
  uint64_t zero_fill_ahead = uint64_t{256} << 10;
};

class FileJournal final : public Journal {
 public:
  // Creates the directory if missing, locks it and checks (or, for a new
  // directory, writes) its FORMAT file. Reads no journal data: call Recover
  // next. Errors: FAILED_PRECONDITION naming the directory if another
  // journal holds it or its format is newer; DATA_LOSS if it has journal
  // files but no FORMAT; INVALID_ARGUMENT for bad options; I/O errors.
  static absl::StatusOr<std::unique_ptr<FileJournal>> Open(
      FileJournalOptions options);

  // Close()s.
  ~FileJournal() override;

  FileJournal(const FileJournal&) = delete;
  FileJournal& operator=(const FileJournal&) = delete;

  absl::Status Recover(
      absl::FunctionRef<absl::Status(const JournalSnapshot&)> on_snapshot,
      absl::FunctionRef<absl::Status(const JournalRecord&)> on_record) override;
  void Append(std::vector<std::string> records,
              std::function<void(absl::Status)> done) override;
  absl::StatusOr<SequenceNumber> BeginSnapshot() override;
  absl::Status WriteSnapshot(SequenceNumber cut,
                             absl::string_view state) override;
  absl::Status Close() override;
  JournalStats stats() const override;

  const std::string& dir() const { return options_.dir; }

 private:
  enum class State { kNew, kOpen, kFailed, kClosed };

  // One queued Append, or a snapshot cut marker.
  struct Pending {
    SequenceNumber first_seq = 0;  // Of the batch; the cut for a marker.
    std::vector<std::string> records;
    std::function<void(absl::Status)> done;  // Null for a marker.
    bool cut_marker = false;
    bool settled = false;  // `status` is final.
    absl::Status status;
  };

  // A live segment file.
  struct Segment {
    uint64_t number = 0;
    SequenceNumber first_seq = 0;
  };

  // What one writer iteration did, added to stats_ under the lock.
  struct Tally {
    uint64_t records = 0;
    uint64_t bytes = 0;
    uint64_t group_commits = 0;
    uint64_t syncs = 0;
    absl::Duration sync_time;
    uint64_t no_space_batches = 0;
    uint64_t zero_bytes = 0;
    SequenceNumber max_cut = 0;
  };

  FileJournal(FileJournalOptions options, Env* env,
              std::unique_ptr<FileLock> lock);

  std::string PathOf(const std::string& name) const;

  // Recovery steps; run before the writer thread starts.
  absl::Status RecoverFiles(
      absl::FunctionRef<absl::Status(const JournalSnapshot&)> on_snapshot,
      absl::FunctionRef<absl::Status(const JournalRecord&)> on_record);
  absl::Status ReopenLastSegment(const std::string& path, uint64_t end,
                                 bool torn);

  // Writer thread.
  void WriterLoop();
  bool IntervalSyncDue(absl::Time now) const;
  // Writes the unsettled entries of `group`; on success settles them.
  // A non-OK result is the fatal cause; entries left unsettled then fail.
  absl::Status WriteGroup(std::deque<Pending>& group);
  // Makes a new segment current. RESOURCE_EXHAUSTED only for a full disk at
  // creation (retryable); any other error is fatal.
  absl::Status Rotate(SequenceNumber first_seq, size_t batch_bytes);
  absl::Status Flush(std::string* buf);
  absl::Status SyncData();

  // After data was written up to `end` of the current segment: writes zeros
  // ahead of it if they are running out (see the top of this file).
  void ZeroAhead(uint64_t end);
  // A new current segment whose data ends at `end`: zeros start from there.
  void StartZeroFill(uint64_t end);

  const FileJournalOptions options_;
  Env* const env_;

  // Serializes Recover and Close (held across I/O and the join).
  absl::Mutex lifecycle_mu_ ABSL_ACQUIRED_BEFORE(snapshot_mu_, mu_);
  // Serializes WriteSnapshot (held across its I/O); Close takes it before
  // releasing the directory lock.
  absl::Mutex snapshot_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  mutable absl::Mutex mu_;
  absl::CondVar work_cv_;      // Signals the writer: work queued or closing.
  absl::CondVar progress_cv_;  // Signals WriteSnapshot: a cut was processed.
  State state_ ABSL_GUARDED_BY(mu_) = State::kNew;
  bool recover_called_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status fatal_ ABSL_GUARDED_BY(mu_);
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  SequenceNumber next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  SequenceNumber cuts_requested_ ABSL_GUARDED_BY(mu_) = 0;
  SequenceNumber cuts_processed_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_snapshot_ ABSL_GUARDED_BY(mu_) = false;
  SequenceNumber snapshot_cut_ ABSL_GUARDED_BY(mu_) = 0;
  // Live segments, oldest first; the writer appends, WriteSnapshot removes
  // from the front (never the last).
  std::deque<Segment> segments_ ABSL_GUARDED_BY(mu_);
  JournalStats stats_ ABSL_GUARDED_BY(mu_);

  // Owned by the writer thread (by Recover before it starts, by Close after
  // it ends); not guarded.
  std::unique_ptr<FileLock> lock_;
  std::thread writer_;
  std::unique_ptr<WritableFile> file_;  // Current segment; null if none.
  uint64_t file_capacity_ = 0;          // Its preallocated size.
  uint64_t next_segment_number_ = 1;
  bool need_rotation_ = false;  // A cut or a failed creation asks for one.
  bool unsynced_ = false;       // Written to file_ since its last sync.
  absl::Time first_unsynced_;   // When unsynced_ became true.
  // Zeros written ahead in file_: up to zero_front_, through zero_file_ (a
  // second handle on file_'s path, at zero_front_); off for this segment
  // after a failure. Reset by StartZeroFill whenever file_ changes.
  std::unique_ptr<WritableFile> zero_file_;
  uint64_t zero_front_ = 0;
  bool zero_failed_ = false;
  Tally tally_;
};

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_FILE_JOURNAL_H_
