#include "server/journal/fake_env.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace conveyor::server::journal {
namespace {

std::string Parent(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string Base(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string StripSlash(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

}  // namespace

// ── Handles ──

class FakeEnv::File final : public WritableFile {
 public:
  File(FakeEnv* env, std::shared_ptr<Node> node, std::string path,
       uint64_t epoch, uint64_t offset)
      : env_(env),
        node_(std::move(node)),
        path_(std::move(path)),
        epoch_(epoch),
        offset_(offset) {}

  absl::Status Append(absl::string_view data) override {
    if (closed_) return ErrnoStatus("write", path_, EBADF);
    absl::Status s = env_->FileWrite(node_, path_, epoch_, offset_, data);
    if (s.ok()) offset_ += data.size();
    return s;
  }
  absl::Status Sync() override {
    if (closed_) return ErrnoStatus("fsync", path_, EBADF);
    return env_->FileSync(node_, path_, epoch_, /*data_only=*/false);
  }
  absl::Status DataSync() override {
    if (closed_) return ErrnoStatus("fdatasync", path_, EBADF);
    return env_->FileSync(node_, path_, epoch_, /*data_only=*/true);
  }
  absl::Status Preallocate(uint64_t bytes) override {
    if (closed_) return ErrnoStatus("fallocate", path_, EBADF);
    return env_->FilePreallocate(node_, path_, epoch_, bytes);
  }
  absl::Status Truncate(uint64_t size) override {
    if (closed_) return ErrnoStatus("ftruncate", path_, EBADF);
    absl::Status s = env_->FileTruncate(node_, path_, epoch_, size);
    if (s.ok() && offset_ > size) offset_ = size;
    return s;
  }
  absl::Status Close() override {
    closed_ = true;
    return absl::OkStatus();
  }
  uint64_t offset() const override { return offset_; }
  const std::string& path() const override { return path_; }

 private:
  FakeEnv* const env_;
  const std::shared_ptr<Node> node_;
  const std::string path_;
  const uint64_t epoch_;
  uint64_t offset_;
  bool closed_ = false;
};

class FakeEnv::Lock final : public FileLock {
 public:
  Lock(FakeEnv* env, std::string path, uint64_t epoch)
      : env_(env), path_(std::move(path)), epoch_(epoch) {}
  ~Lock() override { env_->Unlock(path_, epoch_); }

 private:
  FakeEnv* const env_;
  const std::string path_;
  const uint64_t epoch_;
};

// ── Faults and inspection ──

void FakeEnv::SetNoSpace(bool on) {
  absl::MutexLock lock(&mu_);
  no_space_ = on;
}

void FakeEnv::SetWriteError(bool on) {
  absl::MutexLock lock(&mu_);
  write_error_ = on;
}

void FakeEnv::SetWriteErrorIf(std::function<bool(absl::string_view data)> fails) {
  absl::MutexLock lock(&mu_);
  write_error_if_ = std::move(fails);
}

void FakeEnv::SetSyncError(bool on) {
  absl::MutexLock lock(&mu_);
  sync_error_ = on;
}

void FakeEnv::SetSyncHook(std::function<void(const std::string&)> hook) {
  absl::MutexLock lock(&mu_);
  sync_hook_ = std::move(hook);
}

void FakeEnv::Crash(std::optional<size_t> torn_prefix_bytes) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Node> torn = last_write_node_.lock();
  std::string torn_bytes;
  uint64_t torn_at = 0;
  if (torn != nullptr && torn_prefix_bytes.has_value() &&
      torn->unsynced_from != kNone && torn->unsynced_from < torn->data.size()) {
    torn_at = torn->unsynced_from;
    torn_bytes = torn->data.substr(torn_at, *torn_prefix_bytes);
  }
  // Every node reachable before or after: both maps.
  for (auto* m : {&files_, &durable_files_}) {
    for (auto& [path, node] : *m) {
      node->data = node->durable;
      node->unsynced_from = kNone;
    }
  }
  files_ = durable_files_;
  if (!torn_bytes.empty()) {
    std::string& data = torn->data;
    if (data.size() < torn_at + torn_bytes.size()) {
      data.resize(torn_at + torn_bytes.size(), '\0');
    }
    data.replace(torn_at, torn_bytes.size(), torn_bytes);
    torn->durable = data;
  }
  last_write_node_.reset();
  locked_.clear();
  ++epoch_;
}

FakeEnv::Counters FakeEnv::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

absl::StatusOr<std::string> FakeEnv::Contents(const std::string& path) const {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoStatus("open", path, ENOENT);
  return it->second->data;
}

void FakeEnv::SetContents(const std::string& path, std::string data) {
  absl::MutexLock lock(&mu_);
  auto& node = files_[path];
  if (node == nullptr) node = std::make_shared<Node>();
  node->data = std::move(data);
  node->durable = node->data;
  durable_files_[path] = node;
}

std::vector<std::string> FakeEnv::AllFiles() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [path, node] : files_) out.push_back(path);
  return out;
}

// ── Env ──

bool FakeEnv::ParentExists(const std::string& path) const {
  return dirs_.count(Parent(path)) > 0;
}

absl::Status FakeEnv::CheckEpoch(const std::string& path,
                                 uint64_t epoch) const {
  if (epoch != epoch_) return ErrnoStatus("io (after crash)", path, EIO);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WritableFile>> FakeEnv::NewWritableFile(
    const std::string& path) {
  absl::MutexLock lock(&mu_);
  ++counters_.creates;
  if (!ParentExists(path)) return ErrnoStatus("create", path, ENOENT);
  if (no_space_) return ErrnoStatus("create", path, ENOSPC);
  auto& node = files_[path];
  if (node == nullptr) {
    node = std::make_shared<Node>();
  } else {
    node->data.clear();  // O_TRUNC
  }
  return std::unique_ptr<WritableFile>(
      std::make_unique<File>(this, node, path, epoch_, 0));
}

absl::StatusOr<std::unique_ptr<WritableFile>> FakeEnv::OpenWritableFile(
    const std::string& path, uint64_t offset) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoStatus("open", path, ENOENT);
  return std::unique_ptr<WritableFile>(
      std::make_unique<File>(this, it->second, path, epoch_, offset));
}

absl::StatusOr<std::string> FakeEnv::ReadFile(const std::string& path,
                                              uint64_t offset,
                                              uint64_t max_bytes) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoStatus("open", path, ENOENT);
  const std::string& data = it->second->data;
  if (offset >= data.size()) return std::string();
  return data.substr(offset, std::min<uint64_t>(max_bytes, data.size() - offset));
}

absl::StatusOr<uint64_t> FakeEnv::GetFileSize(const std::string& path) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoStatus("stat", path, ENOENT);
  return static_cast<uint64_t>(it->second->data.size());
}

bool FakeEnv::FileExists(const std::string& path) {
  absl::MutexLock lock(&mu_);
  return files_.count(path) > 0 || dirs_.count(StripSlash(path)) > 0;
}

absl::Status FakeEnv::RenameFile(const std::string& from,
                                 const std::string& to) {
  absl::MutexLock lock(&mu_);
  ++counters_.renames;
  auto it = files_.find(from);
  if (it == files_.end()) {
    return ErrnoStatus("rename", absl::StrCat(from, " -> ", to), ENOENT);
  }
  if (!ParentExists(to)) {
    return ErrnoStatus("rename", absl::StrCat(from, " -> ", to), ENOENT);
  }
  std::shared_ptr<Node> node = it->second;
  files_.erase(it);
  files_[to] = std::move(node);
  return absl::OkStatus();
}

absl::Status FakeEnv::RemoveFile(const std::string& path) {
  absl::MutexLock lock(&mu_);
  ++counters_.removes;
  if (files_.erase(path) == 0) return ErrnoStatus("unlink", path, ENOENT);
  return absl::OkStatus();
}

absl::Status FakeEnv::CreateDir(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  std::string d = StripSlash(dir);
  if (files_.count(d) > 0) return ErrnoStatus("mkdir", d, EEXIST);
  // mkdir -p semantics are not needed; the parent must exist unless root-ish.
  if (d != "/" && d.find('/') != std::string::npos && !ParentExists(d) &&
      Parent(d) != "/") {
    return ErrnoStatus("mkdir", d, ENOENT);
  }
  dirs_.insert(d);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FakeEnv::ListDir(
    const std::string& dir) {
  absl::MutexLock lock(&mu_);
  std::string d = StripSlash(dir);
  if (dirs_.count(d) == 0) return ErrnoStatus("opendir", d, ENOENT);
  std::vector<std::string> names;
  for (const auto& [path, node] : files_) {
    if (Parent(path) == d) names.push_back(Base(path));
  }
  for (const std::string& sub : dirs_) {
    if (sub != d && Parent(sub) == d) names.push_back(Base(sub));
  }
  return names;
}

absl::Status FakeEnv::SyncDir(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  ++counters_.dir_syncs;
  std::string d = StripSlash(dir);
  if (dirs_.count(d) == 0) return ErrnoStatus("open", d, ENOENT);
  for (auto it = durable_files_.begin(); it != durable_files_.end();) {
    if (Parent(it->first) == d) {
      it = durable_files_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [path, node] : files_) {
    if (Parent(path) == d) durable_files_[path] = node;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FileLock>> FakeEnv::LockFile(
    const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (!ParentExists(path)) return ErrnoStatus("open", path, ENOENT);
  if (files_.count(path) == 0) files_[path] = std::make_shared<Node>();
  if (locked_.count(path) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "flock ", path, ": held by another process (errno ", EWOULDBLOCK, ")"));
  }
  locked_.insert(path);
  return std::unique_ptr<FileLock>(std::make_unique<Lock>(this, path, epoch_));
}

// ── File and lock operations ──

absl::Status FakeEnv::FileWrite(const std::shared_ptr<Node>& node,
                                const std::string& path, uint64_t epoch,
                                uint64_t offset, absl::string_view data) {
  absl::MutexLock lock(&mu_);
  ++counters_.writes;
  if (absl::Status s = CheckEpoch(path, epoch); !s.ok()) return s;
  if (write_error_ || (write_error_if_ && write_error_if_(data))) {
    return ErrnoStatus("write", path, EIO);
  }
  counters_.bytes_written += static_cast<int64_t>(data.size());
  std::string& bytes = node->data;
  if (bytes.size() < offset + data.size()) bytes.resize(offset + data.size(), '\0');
  bytes.replace(offset, data.size(), data.data(), data.size());
  last_write_node_ = node;
  node->unsynced_from = std::min(node->unsynced_from, offset);
  return absl::OkStatus();
}

absl::Status FakeEnv::FileSync(const std::shared_ptr<Node>& node,
                               const std::string& path, uint64_t epoch,
                               bool data_only) {
  std::function<void(const std::string&)> hook;
  {
    absl::MutexLock lock(&mu_);
    hook = sync_hook_;
  }
  if (hook) hook(path);
  absl::MutexLock lock(&mu_);
  if (data_only) {
    ++counters_.data_syncs;
  } else {
    ++counters_.syncs;
  }
  const char* op = data_only ? "fdatasync" : "fsync";
  if (absl::Status s = CheckEpoch(path, epoch); !s.ok()) return s;
  if (sync_error_) return ErrnoStatus(op, path, EIO);
  node->durable = node->data;
  node->unsynced_from = kNone;
  return absl::OkStatus();
}

absl::Status FakeEnv::FilePreallocate(const std::shared_ptr<Node>& node,
                                      const std::string& path, uint64_t epoch,
                                      uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  ++counters_.preallocations;
  if (absl::Status s = CheckEpoch(path, epoch); !s.ok()) return s;
  if (no_space_) return ErrnoStatus("fallocate", path, ENOSPC);
  if (node->data.size() < bytes) node->data.resize(bytes, '\0');
  if (node->durable.size() < bytes) node->durable.resize(bytes, '\0');
  return absl::OkStatus();
}

absl::Status FakeEnv::FileTruncate(const std::shared_ptr<Node>& node,
                                   const std::string& path, uint64_t epoch,
                                   uint64_t size) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckEpoch(path, epoch); !s.ok()) return s;
  node->data.resize(size, '\0');
  node->unsynced_from = std::min(node->unsynced_from, size);
  return absl::OkStatus();
}

void FakeEnv::Unlock(const std::string& path, uint64_t epoch) {
  absl::MutexLock lock(&mu_);
  if (epoch == epoch_) locked_.erase(path);
}

}  // namespace conveyor::server::journal
