#include "server/journal/file_journal.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "server/journal/format.h"

namespace conveyor::server::journal {
namespace {

constexpr uint64_t kMinSegmentBytes = 4096;

// A status made fatal: INTERNAL, keeping the message (file and errno).
absl::Status AsFatal(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kInternal) return s;
  return absl::InternalError(s.message());
}

// Writes `contents` to dir/name through a fsynced temp file and a rename,
// then fsyncs the directory. Removes the temp file on failure.
// `contents` is written in the order given, as one file.
absl::Status WriteFileAtomically(Env* env, const std::string& dir,
                                 const std::string& name,
                                 std::initializer_list<absl::string_view> contents) {
  const std::string path = JoinPath(dir, name);
  const std::string tmp = path + kTempSuffix;
  absl::Status s;
  {
    absl::StatusOr<std::unique_ptr<WritableFile>> f = env->NewWritableFile(tmp);
    if (!f.ok()) return f.status();
    for (absl::string_view part : contents) {
      if (s.ok()) s = (*f)->Append(part);
    }
    if (s.ok()) s = (*f)->Sync();
    absl::Status c = (*f)->Close();
    if (s.ok()) s = c;
  }
  if (s.ok()) s = env->RenameFile(tmp, path);
  if (!s.ok()) {
    env->RemoveFile(tmp).IgnoreError();  // Best effort; recovery removes it too.
    return s;
  }
  return env->SyncDir(dir);
}

absl::Status Corruption(const std::string& path, uint64_t offset,
                        absl::string_view what) {
  return absl::DataLossError(absl::StrCat("journal corruption in ", path,
                                          " at offset ", offset, ": ", what,
                                          "; refusing to start"));
}

// The bytes from `end` to the last non-zero byte: what a torn tail lost
// (the zero-filled preallocated space after it is not counted).
uint64_t DamagedBytes(absl::string_view data, uint64_t end) {
  size_t last = data.find_last_not_of('\0');
  if (last == absl::string_view::npos || last < end) return 0;
  return last + 1 - end;
}

}  // namespace

// ── Opening ──

absl::StatusOr<std::unique_ptr<FileJournal>> FileJournal::Open(
    FileJournalOptions options) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("journal directory is empty");
  }
  if (options.segment_bytes < kMinSegmentBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("journal segment_bytes ", options.segment_bytes,
                     " is below the minimum of ", kMinSegmentBytes));
  }
  if (options.fsync.mode == FsyncPolicy::Mode::kInterval &&
      options.fsync.interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("journal fsync interval must be > 0");
  }
  Env* env = options.env != nullptr ? options.env : Env::Default();
  const std::string& dir = options.dir;
  if (absl::Status s = env->CreateDir(dir); !s.ok()) return s;

  absl::StatusOr<std::unique_ptr<FileLock>> lock =
      env->LockFile(JoinPath(dir, kLockFileName));
  if (!lock.ok()) {
    if (lock.status().code() == absl::StatusCode::kFailedPrecondition) {
      return absl::FailedPreconditionError(
          absl::StrCat("journal data directory ", dir,
                       " is in use by another process (", lock.status().message(),
                       ")"));
    }
    return lock.status();
  }

  const std::string format_path = JoinPath(dir, kFormatFileName);
  if (env->FileExists(format_path)) {
    absl::StatusOr<std::string> contents = env->ReadFile(format_path);
    if (!contents.ok()) return contents.status();
    absl::StatusOr<uint32_t> version = ParseFormatFile(*contents);
    if (!version.ok()) {
      return absl::DataLossError(
          absl::StrCat(format_path, ": ", version.status().message()));
    }
    if (*version > kFormatVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "journal data directory ", dir, " has format version ", *version,
          "; this build reads up to version ", kFormatVersion));
    }
  } else {
    absl::StatusOr<std::vector<std::string>> names = env->ListDir(dir);
    if (!names.ok()) return names.status();
    for (const std::string& name : *names) {
      uint64_t n;
      if (ParseSegmentFileName(name, &n) || ParseSnapshotFileName(name, &n)) {
        return absl::DataLossError(
            absl::StrCat("journal data directory ", dir, " holds ", name,
                         " but no ", kFormatFileName, " file"));
      }
    }
    absl::Status s = WriteFileAtomically(env, dir, kFormatFileName,
                                         {FormatFileContents(kFormatVersion)});
    if (!s.ok()) return s;
  }
  return std::unique_ptr<FileJournal>(
      new FileJournal(std::move(options), env, *std::move(lock)));
}

FileJournal::FileJournal(FileJournalOptions options, Env* env,
                         std::unique_ptr<FileLock> lock)
    : options_(std::move(options)), env_(env), lock_(std::move(lock)) {}

FileJournal::~FileJournal() { Close().IgnoreError(); }

std::string FileJournal::PathOf(const std::string& name) const {
  return JoinPath(options_.dir, name);
}

// ── Recovery ──

absl::Status FileJournal::Recover(
    absl::FunctionRef<absl::Status(const JournalSnapshot&)> on_snapshot,
    absl::FunctionRef<absl::Status(const JournalRecord&)> on_record) {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (recover_called_ || state_ != State::kNew) {
      return absl::FailedPreconditionError(
          "journal Recover called twice or after Close");
    }
    recover_called_ = true;
  }
  absl::Status s = RecoverFiles(on_snapshot, on_record);
  absl::MutexLock lock(&mu_);
  if (!s.ok()) {
    state_ = State::kClosed;
    return s;
  }
  state_ = State::kOpen;
  writer_ = std::thread([this] { WriterLoop(); });
  return absl::OkStatus();
}

absl::Status FileJournal::RecoverFiles(
    absl::FunctionRef<absl::Status(const JournalSnapshot&)> on_snapshot,
    absl::FunctionRef<absl::Status(const JournalRecord&)> on_record) {
  const std::string& dir = options_.dir;
  absl::StatusOr<std::vector<std::string>> names = env_->ListDir(dir);
  if (!names.ok()) return names.status();

  std::map<uint64_t, std::string> segment_names;   // number -> name
  std::map<uint64_t, std::string> snapshot_names;  // cut -> name
  bool removed = false;
  for (const std::string& name : *names) {
    uint64_t n = 0;
    if (absl::EndsWith(name, kTempSuffix)) {
      // An interrupted segment creation or snapshot: never renamed, so
      // never part of the journal.
      LogWarning("journal: removing incomplete temp file",
                 {{"file", PathOf(name)}});
      if (absl::Status s = env_->RemoveFile(PathOf(name)); !s.ok()) return s;
      removed = true;
    } else if (ParseSegmentFileName(name, &n)) {
      segment_names[n] = name;
    } else if (ParseSnapshotFileName(name, &n)) {
      snapshot_names[n] = name;
    }
  }

  // The latest snapshot; older ones are leftovers of an interrupted cleanup.
  SequenceNumber cut = 0;
  bool has_snapshot = false;
  if (!snapshot_names.empty()) {
    const auto& [name_cut, name] = *snapshot_names.rbegin();
    const std::string path = PathOf(name);
    absl::StatusOr<std::string> data = env_->ReadFile(path);
    if (!data.ok()) return data.status();
    absl::StatusOr<DecodedSnapshot> snap = DecodeSnapshot(*data);
    if (!snap.ok()) {
      return absl::Status(snap.status().code(),
                          absl::StrCat("journal snapshot ", path, ": ",
                                       snap.status().message(),
                                       "; refusing to start"));
    }
    if (snap->cut != name_cut) {
      return Corruption(path, 8,
                        absl::StrCat("snapshot cut ", snap->cut,
                                     " does not match its name"));
    }
    cut = snap->cut;
    has_snapshot = true;
    if (absl::Status s = on_snapshot(JournalSnapshot{cut, snap->state});
        !s.ok()) {
      return s;
    }
    for (const auto& [old_cut, old_name] : snapshot_names) {
      if (old_cut == cut) continue;
      if (absl::Status s = env_->RemoveFile(PathOf(old_name)); !s.ok()) return s;
      removed = true;
    }
  }

  // Segment headers: numbers must be contiguous, first_seq non-decreasing.
  std::vector<Segment> segs;
  for (const auto& [number, name] : segment_names) {
    const std::string path = PathOf(name);
    if (!segs.empty() && number != segs.back().number + 1) {
      return absl::DataLossError(absl::StrCat(
          "journal segment ", SegmentFileName(segs.back().number + 1),
          " is missing from ", dir, " (found ", name, " after ",
          SegmentFileName(segs.back().number), "); refusing to start"));
    }
    absl::StatusOr<std::string> head =
        env_->ReadFile(path, 0, kSegmentHeaderSize);
    if (!head.ok()) return head.status();
    absl::StatusOr<SegmentHeader> h = DecodeSegmentHeader(*head);
    if (!h.ok()) {
      if (h.status().code() == absl::StatusCode::kFailedPrecondition) {
        return absl::FailedPreconditionError(
            absl::StrCat(path, ": ", h.status().message()));
      }
      return Corruption(path, 0, h.status().message());
    }
    if (h->number != number) {
      return Corruption(path, 8, absl::StrCat("header names segment ", h->number));
    }
    if (!segs.empty() && h->first_seq < segs.back().first_seq) {
      return Corruption(path, 16,
                        absl::StrCat("first sequence number ", h->first_seq,
                                     " is below the previous segment's"));
    }
    segs.push_back({number, h->first_seq});
  }

  // Segments are deleted only once a snapshot covers them: without one, the
  // journal must still begin with the first segment ever written.
  if (!has_snapshot && !segs.empty() && segs.front().number != 1) {
    return absl::DataLossError(absl::StrCat(
        "journal segment ", SegmentFileName(1), " is missing from ", dir,
        " and there is no snapshot (the earliest segment is ",
        SegmentFileName(segs.front().number), "); refusing to start"));
  }

  // Segments wholly before the cut are leftovers of an interrupted cleanup.
  size_t first = 0;
  while (first + 1 < segs.size() && segs[first + 1].first_seq <= cut) {
    if (absl::Status s = env_->RemoveFile(PathOf(SegmentFileName(segs[first].number)));
        !s.ok()) {
      return s;
    }
    removed = true;
    ++first;
  }
  if (removed) {
    if (absl::Status s = env_->SyncDir(dir); !s.ok()) return s;
  }

  SequenceNumber last_seq = 0;
  uint64_t resume_at = 0;
  bool torn = false;
  for (size_t i = first; i < segs.size(); ++i) {
    const std::string path = PathOf(SegmentFileName(segs[i].number));
    const bool is_last = i + 1 == segs.size();
    absl::StatusOr<std::string> data = env_->ReadFile(path);
    if (!data.ok()) return data.status();
    if (last_seq >= segs[i].first_seq) {
      return Corruption(path, 16,
                        absl::StrCat("first sequence number ", segs[i].first_seq,
                                     " is not above ", last_seq,
                                     " of the previous segment"));
    }
    const SequenceNumber floor =
        segs[i].first_seq > 0 ? segs[i].first_seq - 1 : 0;
    SegmentScan scan = ScanSegment(*data, std::max(last_seq, floor));
    if (scan.tail == SegmentScan::Tail::kCorrupt ||
        (scan.tail == SegmentScan::Tail::kTorn && !is_last)) {
      return Corruption(path, scan.problem_offset, scan.problem);
    }
    for (const ScannedRecord& r : scan.records) {
      if (r.seq < cut) continue;
      if (absl::Status s = on_record(JournalRecord{r.seq, r.data}); !s.ok()) {
        return s;
      }
    }
    if (!scan.records.empty()) last_seq = scan.last_seq;
    if (is_last) {
      resume_at = scan.end;
      if (scan.tail == SegmentScan::Tail::kTorn) {
        torn = true;
        LogWarning("journal: torn tail dropped",
                   {{"file", path},
                    {"offset", static_cast<unsigned long long>(scan.end)},
                    {"damage_offset",
                     static_cast<unsigned long long>(scan.problem_offset)},
                    {"dropped_bytes", static_cast<unsigned long long>(
                                          DamagedBytes(*data, scan.end))},
                    {"reason", scan.problem}});
      }
    }
  }

  if (first < segs.size()) {
    const Segment& last = segs.back();
    if (absl::Status s = ReopenLastSegment(
            PathOf(SegmentFileName(last.number)), resume_at, torn);
        !s.ok()) {
      return s;
    }
    next_segment_number_ = last.number + 1;
  }

  absl::MutexLock lock(&mu_);
  SequenceNumber next = std::max<SequenceNumber>({last_seq + 1, cut, 1});
  if (!segs.empty()) next = std::max(next, segs.back().first_seq);
  next_seq_ = next;
  cuts_requested_ = cut;
  cuts_processed_ = cut;
  has_snapshot_ = has_snapshot;
  snapshot_cut_ = cut;
  segments_.assign(segs.begin() + static_cast<std::ptrdiff_t>(first), segs.end());
  LogInfo("journal recovered",
          {{"dir", options_.dir},
           {"snapshot_cut", static_cast<unsigned long long>(cut)},
           {"segments", static_cast<unsigned long long>(segments_.size())},
           {"next_seq", static_cast<unsigned long long>(next)}});
  return absl::OkStatus();
}

absl::Status FileJournal::ReopenLastSegment(const std::string& path,
                                            uint64_t end, bool torn) {
  absl::StatusOr<uint64_t> size = env_->GetFileSize(path);
  if (!size.ok()) return size.status();
  absl::StatusOr<std::unique_ptr<WritableFile>> f =
      env_->OpenWritableFile(path, end);
  if (!f.ok()) return f.status();
  uint64_t capacity = *size;
  if (torn) {
    // Cut the damage off, then restore the zero-filled preallocated tail
    // so that the next scan stops where the data stops.
    capacity = std::max<uint64_t>(*size, options_.segment_bytes);
    absl::Status s = (*f)->Truncate(end);
    if (s.ok()) s = (*f)->Preallocate(capacity);
    if (s.ok()) s = (*f)->Sync();
    if (!s.ok()) return s;
  }
  file_ = *std::move(f);
  file_capacity_ = capacity;
  unsynced_ = false;
  StartZeroFill(end);
  return absl::OkStatus();
}

// ── Appending ──

void FileJournal::Append(std::vector<std::string> records,
                         std::function<void(absl::Status)> done) {
  absl::Status invalid;
  for (const std::string& r : records) {
    if (r.size() > options_.max_record_bytes) {
      invalid = absl::InvalidArgumentError(
          absl::StrCat("journal record of ", r.size(),
                       " bytes exceeds the limit of ",
                       options_.max_record_bytes, " bytes"));
      break;
    }
  }
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    if ((state_ == State::kOpen || state_ == State::kFailed) && !closing_) {
      Pending p;
      p.done = std::move(done);
      if (state_ == State::kFailed) invalid = fatal_;
      if (!invalid.ok()) {
        p.status = invalid;
        p.settled = true;
      } else {
        p.first_seq = next_seq_;
        next_seq_ += records.size();
        p.records = std::move(records);
        ++stats_.appends;
      }
      queue_.push_back(std::move(p));
      work_cv_.Signal();
      return;
    }
    refused = absl::FailedPreconditionError(
        state_ == State::kNew ? "journal is not recovered yet"
                              : "journal is closed");
  }
  if (done) done(refused);
}

absl::StatusOr<SequenceNumber> FileJournal::BeginSnapshot() {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kOpen || closing_) {
    return absl::FailedPreconditionError(
        fatal_.ok() ? std::string("journal is not open")
                    : absl::StrCat("journal stopped: ", fatal_.message()));
  }
  const SequenceNumber cut = next_seq_;
  if (cut > cuts_requested_) {
    Pending marker;
    marker.cut_marker = true;
    marker.first_seq = cut;
    queue_.push_back(std::move(marker));
    work_cv_.Signal();
    cuts_requested_ = cut;
  }
  return cut;
}

// ── The writer thread ──

bool FileJournal::IntervalSyncDue(absl::Time now) const {
  return options_.fsync.mode == FsyncPolicy::Mode::kInterval && unsynced_ &&
         now >= first_unsynced_ + options_.fsync.interval;
}

void FileJournal::WriterLoop() {
  for (;;) {
    std::deque<Pending> group;
    bool closing = false;
    bool failed = false;
    {
      absl::MutexLock lock(&mu_);
      while (queue_.empty() && !closing_ && !IntervalSyncDue(absl::Now())) {
        if (options_.fsync.mode == FsyncPolicy::Mode::kInterval && unsynced_ &&
            state_ == State::kOpen) {
          work_cv_.WaitWithDeadline(&mu_,
                                    first_unsynced_ + options_.fsync.interval);
        } else {
          work_cv_.Wait(&mu_);
        }
      }
      group.swap(queue_);
      closing = closing_;
      failed = state_ == State::kFailed;
    }

    tally_ = Tally();
    absl::Status cause;
    if (!failed) {
      if (!group.empty()) cause = WriteGroup(group);
      if (cause.ok() && file_ != nullptr && unsynced_ &&
          (closing || IntervalSyncDue(absl::Now()))) {
        cause = SyncData();
      }
    }
    if (closing && file_ != nullptr) {
      absl::Status s = file_->Close();
      if (cause.ok() && !failed) cause = s;
      file_.reset();
    }

    bool first_fatal = false;
    absl::Status fatal;
    {
      absl::MutexLock lock(&mu_);
      stats_.records_written += tally_.records;
      stats_.bytes_written += tally_.bytes;
      stats_.group_commits += tally_.group_commits;
      stats_.syncs += tally_.syncs;
      stats_.sync_time += tally_.sync_time;
      stats_.no_space_batches += tally_.no_space_batches;
      stats_.bytes_zero_filled += tally_.zero_bytes;
      cuts_processed_ = std::max(cuts_processed_, tally_.max_cut);
      if (!cause.ok() && state_ == State::kOpen) {
        state_ = State::kFailed;
        fatal_ = absl::InternalError(absl::StrCat(
            "journal stopped after a fatal I/O error: ", cause.message()));
        first_fatal = true;
      }
      fatal = fatal_;
      for (Pending& p : group) {
        if (!p.settled) {
          p.status = fatal;
          p.settled = true;
        }
      }
      progress_cv_.SignalAll();
    }
    for (Pending& p : group) {
      if (p.done) p.done(p.status);
    }
    if (first_fatal) {
      LogError("journal: fatal I/O error, refusing further appends",
               {{"dir", options_.dir}, {"error", fatal}});
      if (options_.on_fatal) options_.on_fatal(fatal);
    }
    if (closing) return;
  }
}

absl::Status FileJournal::WriteGroup(std::deque<Pending>& group) {
  std::string buf;
  std::vector<Pending*> written;
  absl::Status no_space;  // Set once a segment could not be created.
  for (Pending& p : group) {
    if (p.settled) continue;
    if (p.cut_marker) {
      // Records after the cut go to a new segment, so that everything before
      // it can be deleted once the snapshot is written. A segment with no
      // records yet already qualifies.
      if (file_ == nullptr || file_->offset() + buf.size() > kSegmentHeaderSize) {
        need_rotation_ = true;
        if (no_space.ok()) {
          if (absl::Status s = Flush(&buf); !s.ok()) return s;
          absl::Status s = Rotate(p.first_seq, 0);
          if (absl::IsResourceExhausted(s)) {
            no_space = s;
          } else if (!s.ok()) {
            return s;
          }
        }
      }
      tally_.max_cut = std::max(tally_.max_cut, p.first_seq);
      p.settled = true;
      continue;
    }
    const size_t bytes = EncodedBatchSize(p.records);
    if (file_ == nullptr || need_rotation_ ||
        file_->offset() + buf.size() + bytes > file_capacity_) {
      if (no_space.ok()) {
        if (absl::Status s = Flush(&buf); !s.ok()) return s;
        absl::Status s = Rotate(p.first_seq, bytes);
        if (absl::IsResourceExhausted(s)) {
          no_space = s;
        } else if (!s.ok()) {
          return s;
        }
      }
      if (!no_space.ok()) {
        p.status = absl::ResourceExhaustedError(absl::StrCat(
            "journal disk full, batch not stored: ", no_space.message()));
        p.settled = true;
        ++tally_.no_space_batches;
        continue;
      }
    }
    EncodeBatch(p.records, p.first_seq, &buf);
    tally_.records += p.records.size();
    written.push_back(&p);
  }
  if (absl::Status s = Flush(&buf); !s.ok()) return s;
  if (options_.fsync.mode == FsyncPolicy::Mode::kAlways && unsynced_) {
    if (absl::Status s = SyncData(); !s.ok()) return s;
  }
  for (Pending* p : written) p->settled = true;  // status stays OK.
  return absl::OkStatus();
}

absl::Status FileJournal::Rotate(SequenceNumber first_seq, size_t batch_bytes) {
  const uint64_t number = next_segment_number_;
  const std::string path = PathOf(SegmentFileName(number));
  const std::string tmp = path + kTempSuffix;
  const uint64_t capacity =
      std::max<uint64_t>(options_.segment_bytes, kSegmentHeaderSize + batch_bytes);

  // Only creation and preallocation may report a full disk (retryable). On
  // that failure the current segment stays current: batches that still fit
  // in it are stored.
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_->NewWritableFile(tmp);
  if (!f.ok()) {
    return absl::IsResourceExhausted(f.status()) ? f.status()
                                                 : AsFatal(f.status());
  }
  if (absl::Status s = (*f)->Preallocate(capacity); !s.ok()) {
    (*f)->Close().IgnoreError();
    if (absl::Status r = env_->RemoveFile(tmp); !r.ok()) {
      LogWarning("journal: cannot remove temp segment",
                 {{"file", tmp}, {"error", r}});
    }
    return absl::IsResourceExhausted(s) ? s : AsFatal(s);
  }
  // The old segment is synced before the new one becomes visible, under
  // every policy: only the last segment may end in a torn write.
  if (file_ != nullptr && unsynced_) {
    if (absl::Status s = SyncData(); !s.ok()) return AsFatal(s);
  }
  const std::string header = EncodeSegmentHeader({number, first_seq});
  absl::Status s = (*f)->Append(header);
  if (s.ok()) s = (*f)->Sync();
  if (s.ok()) s = env_->RenameFile(tmp, path);
  if (s.ok()) s = env_->SyncDir(options_.dir);
  if (!s.ok()) return AsFatal(s);
  // Reopen under the final name, so that errors name the real file.
  const uint64_t offset = (*f)->offset();
  (*f)->Close().IgnoreError();  // Nothing unsynced in it.
  f = env_->OpenWritableFile(path, offset);
  if (!f.ok()) return AsFatal(f.status());
  if (file_ != nullptr) {
    absl::Status c = file_->Close();
    if (!c.ok()) return AsFatal(c);
  }

  tally_.bytes += header.size();
  file_ = *std::move(f);
  file_capacity_ = capacity;
  unsynced_ = false;
  need_rotation_ = false;
  StartZeroFill(offset);
  ++next_segment_number_;
  {
    absl::MutexLock lock(&mu_);
    segments_.push_back({number, first_seq});
    ++stats_.segments_created;
  }
  LogDebug("journal: segment created",
           {{"file", path}, {"first_seq", static_cast<unsigned long long>(first_seq)}});
  return absl::OkStatus();
}

absl::Status FileJournal::Flush(std::string* buf) {
  if (buf->empty()) return absl::OkStatus();
  if (absl::Status s = file_->Append(*buf); !s.ok()) return AsFatal(s);
  ZeroAhead(file_->offset());
  if (!unsynced_) first_unsynced_ = absl::Now();
  unsynced_ = true;
  tally_.bytes += buf->size();
  ++tally_.group_commits;
  if (options_.listener != nullptr) options_.listener->OnWrite(buf->size());
  buf->clear();
  return absl::OkStatus();
}

absl::Status FileJournal::SyncData() {
  const absl::Time start = absl::Now();
  absl::Status s = file_->DataSync();
  const absl::Duration latency = absl::Now() - start;
  ++tally_.syncs;
  tally_.sync_time += latency;
  if (options_.listener != nullptr) options_.listener->OnSync(latency);
  if (!s.ok()) return AsFatal(s);
  unsynced_ = false;
  return absl::OkStatus();
}

// ── Zero-filling ahead ──

void FileJournal::StartZeroFill(uint64_t end) {
  zero_file_.reset();
  zero_front_ = end;
  zero_failed_ = false;
}

void FileJournal::ZeroAhead(uint64_t end) {
  const uint64_t ahead = options_.zero_fill_ahead;
  if (ahead == 0 || zero_failed_ || zero_front_ >= file_capacity_ ||
      zero_front_ >= end + ahead / 2) {
    return;
  }
  const uint64_t from = std::max(zero_front_, end);
  const uint64_t to = std::min(end + ahead, file_capacity_);
  static const std::string* const kZeros = new std::string(64 << 10, '\0');
  absl::Status s;
  if (zero_file_ == nullptr || zero_file_->offset() != from) {
    zero_file_.reset();
    absl::StatusOr<std::unique_ptr<WritableFile>> f = env_->OpenWritableFile(file_->path(), from);
    if (f.ok()) {
      zero_file_ = *std::move(f);
    } else {
      s = f.status();
    }
  }
  for (uint64_t at = from; s.ok() && at < to; at += kZeros->size()) {
    s = zero_file_->Append(absl::string_view(*kZeros).substr(0, to - at));
  }
  if (!s.ok()) {
    zero_failed_ = true;
    zero_file_.reset();
    LogWarning("journal: cannot write zeros ahead of the data; this segment's syncs may be slower",
               {{"file", file_->path()}, {"error", s}});
    return;
  }
  tally_.zero_bytes += to - from;
  zero_front_ = to;
}

// ── Snapshots ──

absl::Status FileJournal::WriteSnapshot(SequenceNumber cut,
                                        absl::string_view state) {
  absl::MutexLock snapshot_lock(&snapshot_mu_);
  bool had_snapshot = false;
  SequenceNumber old_cut = 0;
  {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kOpen) {
      return absl::FailedPreconditionError(
          fatal_.ok() ? std::string("journal is not open")
                      : absl::StrCat("journal stopped: ", fatal_.message()));
    }
    if (cut > cuts_requested_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot cut ", cut, " was not returned by BeginSnapshot (latest ",
          cuts_requested_, ")"));
    }
    if (has_snapshot_ && cut < snapshot_cut_) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot cut ", cut, " is older than the latest, ",
                       snapshot_cut_));
    }
    // The writer must have rotated past the cut first.
    while (cuts_processed_ < cut && state_ == State::kOpen) {
      progress_cv_.Wait(&mu_);
    }
    if (state_ != State::kOpen) {
      return absl::FailedPreconditionError(
          absl::StrCat("journal stopped: ", fatal_.message()));
    }
    had_snapshot = has_snapshot_;
    old_cut = snapshot_cut_;
  }

  const std::string name = SnapshotFileName(cut);
  absl::Status s =
      WriteFileAtomically(env_, options_.dir, name, {EncodeSnapshotHeader(cut, state), state});
  if (!s.ok()) {
    if (absl::IsResourceExhausted(s)) return s;
    return AsFatal(s);  // INTERNAL, but the journal itself carries on.
  }

  std::vector<std::string> doomed;
  {
    absl::MutexLock lock(&mu_);
    has_snapshot_ = true;
    snapshot_cut_ = cut;
    while (segments_.size() > 1 && segments_[1].first_seq <= cut) {
      doomed.push_back(PathOf(SegmentFileName(segments_.front().number)));
      segments_.pop_front();
      ++stats_.segments_deleted;
    }
    ++stats_.snapshots_written;
  }
  if (had_snapshot && old_cut != cut) {
    doomed.push_back(PathOf(SnapshotFileName(old_cut)));
  }
  // Leftovers are harmless (recovery skips and removes them): log, go on.
  for (const std::string& path : doomed) {
    if (absl::Status r = env_->RemoveFile(path); !r.ok()) {
      LogWarning("journal: cannot remove file", {{"file", path}, {"error", r}});
    }
  }
  if (!doomed.empty()) {
    if (absl::Status r = env_->SyncDir(options_.dir); !r.ok()) {
      LogWarning("journal: cannot sync directory",
                 {{"dir", options_.dir}, {"error", r}});
    }
  }
  LogInfo("journal: snapshot written",
          {{"file", PathOf(name)},
           {"cut", static_cast<unsigned long long>(cut)},
           {"bytes", static_cast<unsigned long long>(state.size())},
           {"files_removed", static_cast<unsigned long long>(doomed.size())}});
  return absl::OkStatus();
}

// ── Closing ──

absl::Status FileJournal::Close() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return fatal_;
    closing_ = true;
    work_cv_.Signal();
    progress_cv_.SignalAll();
  }
  if (writer_.joinable()) writer_.join();
  zero_file_.reset();
  file_.reset();
  {
    // Let a snapshot in progress finish its file work before the directory
    // is unlocked.
    absl::MutexLock snapshot_lock(&snapshot_mu_);
    lock_.reset();
  }
  absl::MutexLock lock(&mu_);
  state_ = State::kClosed;
  progress_cv_.SignalAll();
  return fatal_;
}

JournalStats FileJournal::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace conveyor::server::journal
