// FakeEnv: an in-memory Env for tests that injects faults and simulates
// crashes (in the manner of LevelDB's SpecialEnv and FaultInjectionTestEnv).
//
// Model. Each file is a node holding its current bytes and the bytes last
// made durable by Sync/DataSync. Directory entries (name -> node) change at
// once, but only SyncDir(dir) makes the entries of `dir` durable: a crash
// undoes creations, renames and removals that no SyncDir covered, like a
// POSIX filesystem that promises nothing without a directory fsync.
// Preallocate changes both the current and the durable size (the blocks are
// reserved at once); CreateDir is durable at once.
//
// Faults: ENOSPC on file creation and Preallocate (a full disk), EIO on
// writes, EIO on Sync/DataSync; a hook that runs before every file sync (to
// hold a sync while a test queues more work); and Crash().
//
// Counters count every call that reached the fake, failed or not.
//
// Thread-safe. The FakeEnv must outlive every file and lock it handed out.
#ifndef CONVEYOR_SERVER_JOURNAL_FAKE_ENV_H_
#define CONVEYOR_SERVER_JOURNAL_FAKE_ENV_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/journal/env.h"

namespace conveyor::server::journal {

class FakeEnv final : public Env {
 public:
  struct Counters {
    int64_t creates = 0;         // NewWritableFile
    int64_t writes = 0;          // WritableFile::Append
    int64_t bytes_written = 0;
    int64_t syncs = 0;           // WritableFile::Sync
    int64_t data_syncs = 0;      // WritableFile::DataSync
    int64_t dir_syncs = 0;       // SyncDir
    int64_t preallocations = 0;  // WritableFile::Preallocate
    int64_t renames = 0;
    int64_t removes = 0;
    int64_t file_syncs() const { return syncs + data_syncs; }
  };

  FakeEnv() = default;
  FakeEnv(const FakeEnv&) = delete;
  FakeEnv& operator=(const FakeEnv&) = delete;

  // ── Faults ──
  // ENOSPC on NewWritableFile and on Preallocate while set.
  void SetNoSpace(bool on);
  // EIO on WritableFile::Append while set (nothing is written).
  void SetWriteError(bool on);
  // EIO on every WritableFile::Append whose data `fails` accepts (nothing is
  // written); nullptr for none. `fails` runs under the fake's lock: it must
  // not call the fake.
  void SetWriteErrorIf(std::function<bool(absl::string_view data)> fails);
  // EIO on WritableFile::Sync and DataSync while set (nothing becomes
  // durable).
  void SetSyncError(bool on);
  // Runs before every Sync/DataSync of a file, outside the fake's lock, with
  // the file's path. May block (to hold a sync while a test queues work).
  void SetSyncHook(std::function<void(const std::string& path)> hook);

  // A machine crash and reboot: every file goes back to its durable bytes,
  // every directory to its durable entries, all locks are released, and
  // every file and lock handed out before the crash fails from now on with
  // EIO. With `torn_prefix_bytes`, the file written last keeps that many
  // bytes of what was written to it since its last sync, counted from the
  // lowest unsynced offset (the kernel had written back the front of the
  // dirty range: a torn write), if the file itself survives.
  void Crash(std::optional<size_t> torn_prefix_bytes = std::nullopt);

  Counters counters() const;

  // ── Direct access, bypassing faults and counters ──
  // The current bytes of `path`; NOT_FOUND if there is none.
  absl::StatusOr<std::string> Contents(const std::string& path) const;
  // Creates or replaces the bytes of `path`, durably (the parent directory
  // must exist). For tests that corrupt files.
  void SetContents(const std::string& path, std::string data);
  // Paths of all files, sorted.
  std::vector<std::string> AllFiles() const;

  // ── Env ──
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> OpenWritableFile(
      const std::string& path, uint64_t offset) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path,
                                       uint64_t offset,
                                       uint64_t max_bytes) override;
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override;
  bool FileExists(const std::string& path) override;
  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override;
  absl::Status RemoveFile(const std::string& path) override;
  absl::Status CreateDir(const std::string& dir) override;
  absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) override;
  absl::Status SyncDir(const std::string& dir) override;
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) override;

 private:
  class File;
  class Lock;
  friend class File;
  friend class Lock;

  struct Node {
    std::string data;
    std::string durable;
    // Lowest offset written since the last sync; npos if none.
    uint64_t unsynced_from = kNone;
  };
  static constexpr uint64_t kNone = ~uint64_t{0};

  bool ParentExists(const std::string& path) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Operations of File and Lock.
  absl::Status FileWrite(const std::shared_ptr<Node>& node,
                         const std::string& path, uint64_t epoch,
                         uint64_t offset, absl::string_view data);
  absl::Status FileSync(const std::shared_ptr<Node>& node,
                        const std::string& path, uint64_t epoch, bool data_only);
  absl::Status FilePreallocate(const std::shared_ptr<Node>& node,
                               const std::string& path, uint64_t epoch,
                               uint64_t bytes);
  absl::Status FileTruncate(const std::shared_ptr<Node>& node,
                            const std::string& path, uint64_t epoch,
                            uint64_t size);
  absl::Status CheckEpoch(const std::string& path, uint64_t epoch) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unlock(const std::string& path, uint64_t epoch);

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Node>> files_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Node>> durable_files_
      ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirs_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> locked_ ABSL_GUARDED_BY(mu_);
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  bool no_space_ ABSL_GUARDED_BY(mu_) = false;
  bool write_error_ ABSL_GUARDED_BY(mu_) = false;
  std::function<bool(absl::string_view)> write_error_if_ ABSL_GUARDED_BY(mu_);
  bool sync_error_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(const std::string&)> sync_hook_ ABSL_GUARDED_BY(mu_);
  Counters counters_ ABSL_GUARDED_BY(mu_);
  // The file of the most recent Append.
  std::weak_ptr<Node> last_write_node_ ABSL_GUARDED_BY(mu_);
};

}  // namespace conveyor::server::journal

#endif  // CONVEYOR_SERVER_JOURNAL_FAKE_ENV_H_
