#include "server/journal/backup.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/journal/format.h"

namespace conveyor::server::journal {
namespace {

// Creates dir/name with `contents` and fsyncs it.
absl::Status WriteSynced(Env* env, const std::string& dir,
                         const std::string& name, absl::string_view contents) {
  absl::StatusOr<std::unique_ptr<WritableFile>> f =
      env->NewWritableFile(JoinPath(dir, name));
  if (!f.ok()) return f.status();
  absl::Status s = (*f)->Append(contents);
  if (s.ok()) s = (*f)->Sync();
  absl::Status c = (*f)->Close();
  return s.ok() ? c : s;
}

// The directory holding `path` ("." for a bare name).
std::string ParentOf(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return p.substr(0, slash);
}

// OK if `dest` is missing or an empty directory; sets `*exists`.
absl::Status CheckDestination(Env* env, const std::string& dest, bool* exists) {
  *exists = env->FileExists(dest);
  if (!*exists) return absl::OkStatus();
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(dest);
  if (!names.ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "backup destination ", dest, " exists and is not a directory (",
        names.status().message(), ")"));
  }
  if (!names->empty()) {
    return absl::AlreadyExistsError(
        absl::StrCat("backup destination ", dest, " is not empty (it holds ",
                     names->front(), "); give a new or empty directory"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BackupResult> BackupDirectory(Env* env, const std::string& src,
                                             const std::string& dest,
                                             const ReadOptions& options) {
  bool dest_exists = false;
  if (absl::Status s = CheckDestination(env, dest, &dest_exists); !s.ok()) {
    return s;
  }
  BackupResult result;
  if (absl::Status s = ReadDirectory(env, src, options, &result.view);
      !s.ok()) {
    return s;
  }
  if (!dest_exists) {
    if (absl::Status s = env->CreateDir(dest); !s.ok()) return s;
  }

  auto write = [&](const std::string& name,
                   absl::string_view contents) -> absl::Status {
    if (absl::Status s = WriteSynced(env, dest, name, contents); !s.ok()) {
      return s;
    }
    result.files.push_back({name, contents.size()});
    result.bytes += contents.size();
    return absl::OkStatus();
  };
  const DirectoryView& view = result.view;
  if (view.snapshot.has_value()) {
    if (absl::Status s = write(view.snapshot->name, view.snapshot->file);
        !s.ok()) {
      return s;
    }
  }
  for (const SegmentView& seg : view.segments) {
    if (absl::Status s = write(seg.name, seg.data); !s.ok()) return s;
  }
  // The journal files are durable under their names before FORMAT appears.
  if (absl::Status s = env->SyncDir(dest); !s.ok()) return s;
  if (absl::Status s =
          write(kFormatFileName, FormatFileContents(view.format_version));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = env->SyncDir(dest); !s.ok()) return s;
  if (!dest_exists) {
    if (absl::Status s = env->SyncDir(ParentOf(dest)); !s.ok()) return s;
  }
  return result;
}

}  // namespace conveyor::server::journal
