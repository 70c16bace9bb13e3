// Env: the small filesystem interface under the journal.
//
// Everything the journal does to files goes through an Env, so that tests can
// run it against an in-memory fake that injects faults (server/journal/
// fake_env.h) instead of mocking system calls; `Env::Default()` is the POSIX
// implementation. The shape follows LevelDB's leveldb::Env, cut down to what
// an append-only, preallocated, group-committed log needs.
//
// Errors are absl::Status whose message names the operation, the path and
// the errno, e.g. "fdatasync /data/00000000000000000003.log: Input/output
// error (errno 5)". Codes: RESOURCE_EXHAUSTED for ENOSPC/EDQUOT, NOT_FOUND
// for ENOENT, FAILED_PRECONDITION for a lock held elsewhere, INTERNAL for
// anything else.
//
// Thread-safety: an Env may be used from several threads at once; one
// WritableFile or FileLock object is used by one thread at a time.
#ifndef CONVEYOR_SERVER_JOURNAL_ENV_H_
#define CONVEYOR_SERVER_JOURNAL_ENV_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace conveyor::server::journal {

// A file open for writing at an explicit offset (pwrite-style), so that a
// preallocated (zero-filled) file is filled from the front rather than
// extended at its end.
class WritableFile {
 public:
  virtual ~WritableFile() = default;

  // Writes `data` at offset() and advances offset() by its size. A partial
  // write is retried until all of `data` is written or an error occurs.
  virtual absl::Status Append(absl::string_view data) = 0;
  // fsync(2): data and metadata (size, allocation) reach the disk.
  virtual absl::Status Sync() = 0;
  // fdatasync(2): data, and only the metadata needed to read it back.
  virtual absl::Status DataSync() = 0;
  // fallocate(2) mode 0 over [0, bytes): reserves the blocks and extends the
  // file with zeros to at least `bytes`. RESOURCE_EXHAUSTED when the disk is
  // full. Does not move offset().
  virtual absl::Status Preallocate(uint64_t bytes) = 0;
  // ftruncate(2) to `size`; offset() becomes min(offset(), size).
  virtual absl::Status Truncate(uint64_t size) = 0;
  // close(2). Later calls fail. Also done (errors ignored) by the destructor.
  virtual absl::Status Close() = 0;

  virtual uint64_t offset() const = 0;
  virtual const std::string& path() const = 0;
};

// A held advisory lock (flock LOCK_EX); released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env. Never destroyed.
  static Env* Default();

  // Creates `path` (truncating an existing file) for writing at offset 0.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  // Opens the existing `path` for writing at `offset`, without truncating.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> OpenWritableFile(
      const std::string& path, uint64_t offset) = 0;

  // Reads up to `max_bytes` from `offset` (fewer at the end of the file).
  virtual absl::StatusOr<std::string> ReadFile(
      const std::string& path, uint64_t offset = 0,
      uint64_t max_bytes = std::numeric_limits<uint64_t>::max()) = 0;
  virtual absl::StatusOr<uint64_t> GetFileSize(const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;

  // rename(2): atomically replaces `to`. Durable only after SyncDir.
  virtual absl::Status RenameFile(const std::string& from,
                                  const std::string& to) = 0;
  // unlink(2). Durable only after SyncDir.
  virtual absl::Status RemoveFile(const std::string& path) = 0;

  // mkdir(2); OK if it already exists as a directory.
  virtual absl::Status CreateDir(const std::string& dir) = 0;
  // The names (not paths) of the entries of `dir`, without "." and "..", in
  // no particular order.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) = 0;
  // fsync(2) on the directory: makes creations, renames and removals of its
  // entries durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;

  // Creates `path` if needed and takes an exclusive flock(2) on it without
  // waiting. FAILED_PRECONDITION if someone else holds it (also another
  // FileLock of this process: flock locks belong to the open file).
  virtual absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) = 0;
};

// "dir/name".
std::string JoinPath(absl::string_view dir, absl::string_view name);

// A status for a failed system call: names `op`, `path` and the errno, with
// the code chosen as described at the top of this file.
absl::Status ErrnoStatus(absl::string_view op, absl::string_view path,
                         int err);

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_ENV_H_
