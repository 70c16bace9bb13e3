// BackupDirectory: copies a journal data directory into a new one that a
// broker can start from, without the source's lock, so it works while a
// broker runs on the source.
//
// It reads the source with ReadDirectory (server/journal/dir_reader.h): a
// crash-consistent, checked view of the latest snapshot and every segment
// from the one holding its cut, re-read if a compaction deletes a file
// mid-read. It writes the snapshot file as it is and each segment up to its
// last whole batch (neither the zero-filled preallocated space nor the torn
// tail of a write in progress is copied, so the copy recovers without
// dropping anything), fsyncs each file, then writes FORMAT last and fsyncs
// the directory: a copy interrupted before the end has journal files but no
// FORMAT, which FileJournal refuses to open (DATA_LOSS) instead of starting
// from part of the data.
//
// Thread-safety: a free function over an Env; safe to call from any thread.
#ifndef CONVEYOR_SERVER_JOURNAL_BACKUP_H_
#define CONVEYOR_SERVER_JOURNAL_BACKUP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/journal/dir_reader.h"
#include "server/journal/env.h"

namespace conveyor::server::journal {

struct BackupResult {
  struct File {
    std::string name;
    uint64_t bytes = 0;
  };
  // In the order written (FORMAT last).
  std::vector<File> files;
  uint64_t bytes = 0;  // Total of `files`.
  // What was read from the source (its segments' `data` is what was
  // copied).
  DirectoryView view;
};

// Copies the journal in `src` to `dest`, which must not exist (its parent
// must) or be an empty directory.
// Errors: ALREADY_EXISTS if `dest` exists and is not an empty directory
// (nothing is written); the errors of ReadDirectory for the source (nothing is
// written); I/O errors writing `dest` (then `dest` holds no FORMAT file).
absl::StatusOr<BackupResult> BackupDirectory(Env* env, const std::string& src,
                                             const std::string& dest,
                                             const ReadOptions& options = {});

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_BACKUP_H_
