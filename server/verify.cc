#include "server/verify.h"

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "conveyor/internal/journal.pb.h"
#include "google/protobuf/util/json_util.h"
#include "server/journal/backup.h"
#include "server/journal/format.h"
#include "server/journal_codec.h"
#include "server/task.h"

namespace conveyor::server {
namespace {

namespace pb = ::conveyor::internal;
using journal::RecordType;

constexpr TaskState kAllStates[] = {
    TaskState::kScheduled, TaskState::kReady,    TaskState::kRunning,
    TaskState::kSucceeded, TaskState::kDead,     TaskState::kCanceled,
    TaskState::kExpired,   TaskState::kFallback,
};

absl::Status Corruption(const std::string& path, uint64_t offset,
                        absl::string_view what) {
  return absl::DataLossError(absl::StrCat("journal corruption in ", path,
                                          " at offset ", offset, ": ", what));
}

const char* KindName(pb::JournalEntry::KindCase kind) {
  switch (kind) {
    case pb::JournalEntry::kStarted: return "started";
    case pb::JournalEntry::kQueue: return "queue";
    case pb::JournalEntry::kSubmitted: return "submitted";
    case pb::JournalEntry::kUpdated: return "updated";
    case pb::JournalEntry::kDropped: return "dropped";
    case pb::JournalEntry::kBarrier: return "barrier";
    case pb::JournalEntry::kGroup: return "group";
    case pb::JournalEntry::kChain: return "chain";
    case pb::JournalEntry::kSchedule: return "schedule";
    case pb::JournalEntry::KIND_NOT_SET: break;
  }
  return "unknown";
}

const char* BatchName(RecordType type) {
  switch (type) {
    case RecordType::kFull: return "full";
    case RecordType::kFirst: return "first";
    case RecordType::kMiddle: return "middle";
    case RecordType::kLast: return "last";
  }
  return "unknown";
}

std::string EntryJson(const pb::JournalEntry& entry) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(entry, &out, options).ok()) {
    return "null";
  }
  return out;
}

// Counts what a broker's replay (Broker::Apply, FinishRecovery) would make
// of the entries, and refuses what it would refuse.
class Replay {
 public:
  // OK, or what the broker would refuse (no file or offset).
  absl::Status Apply(const pb::JournalEntry& e) {
    switch (e.kind_case()) {
      case pb::JournalEntry::kStarted:
        epoch_ = std::max(epoch_, e.started().epoch());
        break;
      case pb::JournalEntry::kQueue:
        queues_.insert(e.queue().name());
        break;
      case pb::JournalEntry::kSubmitted: {
        const pb::TaskSubmitted& s = e.submitted();
        // A queue whose record was lost in a failed write: the broker
        // recreates it with default settings (Broker::Apply), unless the
        // name could never have been a queue's.
        if (!queues_.contains(s.queue()) && !ValidateQueueName(s.queue()).ok()) {
          return absl::DataLossError(absl::StrCat("task ", TaskId(s.id()).ToString(),
                                                  " names a malformed queue \"", s.queue(), "\""));
        }
        queues_.insert(s.queue());
        tasks_.try_emplace(s.id(), TaskRecord{TaskState::kScheduled,
                                              s.not_before_us(), false});
        break;
      }
      case pb::JournalEntry::kUpdated: {
        const pb::TaskUpdated& u = e.updated();
        auto it = tasks_.find(u.id());
        if (it == tasks_.end()) break;  // Dropped, or its submit never stored.
        if (u.state() > static_cast<uint32_t>(TaskState::kFallback) ||
            u.state() == static_cast<uint32_t>(TaskState::kRunning)) {
          return absl::DataLossError(absl::StrCat(
              "task ", TaskId(u.id()).ToString(), " has state ", u.state()));
        }
        it->second.state = static_cast<TaskState>(u.state());
        it->second.cancel_requested = u.cancel_requested();
        if (u.not_before_us() != 0) it->second.not_before_us = u.not_before_us();
        break;
      }
      case pb::JournalEntry::kDropped:
        for (uint64_t id : e.dropped().ids()) tasks_.erase(id);
        break;
      case pb::JournalEntry::kGroup:
        // What the broker's replay refuses of a group record.
        if (e.group().total() == 0 || e.group().total() > 10'000'000) {
          return absl::DataLossError(absl::StrCat("group ", TaskId(e.group().id()).ToString(),
                                                  " has ", e.group().total(), " members"));
        }
        for (const pb::GroupMemberRecord& m : e.group().ended()) {
          if (m.index() >= e.group().total() ||
              m.state() > static_cast<uint32_t>(TaskState::kFallback)) {
            return absl::DataLossError(absl::StrCat("group ", TaskId(e.group().id()).ToString(),
                                                    " has a bad member record"));
          }
        }
        break;
      case pb::JournalEntry::kChain:
        if (e.chain().stages_size() > 1000) {
          return absl::DataLossError(absl::StrCat("chain ", TaskId(e.chain().id()).ToString(),
                                                  " has ", e.chain().stages_size(), " stages"));
        }
        break;
      case pb::JournalEntry::kBarrier:
      case pb::JournalEntry::kSchedule:
      case pb::JournalEntry::KIND_NOT_SET:
        break;
    }
    return absl::OkStatus();
  }

  void Finish(absl::Time now, VerifyReport* r) const {
    r->epoch = epoch_;
    r->queues = queues_.size();
    r->tasks = tasks_.size();
    const int64_t now_us = now == absl::InfinitePast() ? 0 : absl::ToUnixMicros(now);
    for (const auto& [id, t] : tasks_) {
      TaskState state = t.state;
      if (!IsTerminal(state) && t.cancel_requested) {
        state = TaskState::kCanceled;
      } else if (state == TaskState::kScheduled && t.not_before_us <= now_us) {
        state = TaskState::kReady;
      }
      ++r->tasks_by_state[TaskStateName(state)];
    }
  }

 private:
  struct TaskRecord {
    TaskState state;
    int64_t not_before_us;
    bool cancel_requested;
  };
  uint32_t epoch_ = 0;
  absl::flat_hash_set<std::string> queues_;
  absl::flat_hash_map<uint64_t, TaskRecord> tasks_;
};

// Decodes, dumps and replays one entry; `where` prefixes the dump line.
absl::Status Process(absl::string_view data, const std::string& path,
                     uint64_t offset, absl::string_view what,
                     const std::string& dump_prefix, const VerifyOptions& options,
                     Replay& replay, VerifyReport* r) {
  absl::StatusOr<pb::JournalEntry> entry = DecodeEntry(data);
  if (!entry.ok()) {
    return Corruption(path, offset,
                      absl::StrCat(what, " (", data.size(),
                                   " bytes) is not a journal entry"));
  }
  ++r->entries[KindName(entry->kind_case())];
  if (options.dump) {
    options.dump(absl::StrCat(dump_prefix, ",\"entry\":", EntryJson(*entry), "}"));
  }
  if (absl::Status s = replay.Apply(*entry); !s.ok()) {
    return Corruption(path, offset, absl::StrCat(what, ": ", s.message()));
  }
  return absl::OkStatus();
}

// The snapshot's state: a sequence of [u32 length][JournalEntry] pieces.
absl::Status ProcessSnapshot(const journal::SnapshotView& snap,
                             const VerifyOptions& options, Replay& replay,
                             VerifyReport* r) {
  absl::string_view state = snap.state();
  size_t pos = 0;
  while (pos < state.size()) {
    const uint64_t offset = journal::kSnapshotHeaderSize + pos;
    if (state.size() - pos < 4) {
      return Corruption(snap.path, offset, "torn snapshot entry length");
    }
    const auto* p = reinterpret_cast<const unsigned char*>(state.data() + pos);
    const uint32_t n = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                       static_cast<uint32_t>(p[2]) << 16 |
                       static_cast<uint32_t>(p[3]) << 24;
    if (state.size() - pos - 4 < n) {
      return Corruption(snap.path, offset,
                        absl::StrCat("snapshot entry of ", n, " bytes overruns the state (",
                                     state.size() - pos - 4, " bytes left)"));
    }
    ++r->snapshot_entries;
    const std::string prefix = absl::StrCat(
        "{\"file\":", JsonQuote(snap.path), ",\"offset\":", offset,
        ",\"snapshot_cut\":", snap.cut);
    if (absl::Status s = Process(state.substr(pos + 4, n), snap.path, offset,
                                 absl::StrCat("snapshot entry ", r->snapshot_entries),
                                 prefix, options, replay, r);
        !s.ok()) {
      return s;
    }
    pos += 4 + n;
  }
  return absl::OkStatus();
}

absl::Status ProcessSegment(const journal::SegmentView& seg, uint64_t cut,
                            const VerifyOptions& options, Replay& replay,
                            VerifyReport* r) {
  uint64_t delivered = 0, first = 0, last = 0;
  for (const journal::RecordView& rec : seg.records) {
    if (rec.seq < cut) {
      ++r->records_before_cut;
      continue;
    }
    ++r->records;
    ++delivered;
    if (first == 0) first = rec.seq;
    last = rec.seq;
    if (r->first_seq == 0) r->first_seq = rec.seq;
    r->last_seq = rec.seq;
    const std::string prefix = absl::StrCat(
        "{\"file\":", JsonQuote(seg.path), ",\"offset\":", rec.offset,
        ",\"seq\":", rec.seq, ",\"batch\":\"", BatchName(rec.type), "\"");
    if (absl::Status s = Process(seg.RecordData(rec), seg.path, rec.offset,
                                 absl::StrCat("record ", rec.seq), prefix,
                                 options, replay, r);
        !s.ok()) {
      return s;
    }
  }
  std::string line = absl::StrCat(
      seg.name, ": first_seq ", seg.first_seq, ", ", delivered, " records");
  if (delivered > 0) absl::StrAppend(&line, " (seq ", first, "..", last, ")");
  absl::StrAppend(&line, " in ", seg.batches, " batches, ", seg.end,
                  " bytes of data in a ", seg.file_bytes, "-byte file");
  if (seg.records.size() > delivered) {
    absl::StrAppend(&line, "; ", seg.records.size() - delivered,
                    " records before the cut");
  }
  if (seg.torn) absl::StrAppend(&line, "; torn tail at offset ", seg.torn_offset);
  r->segment_lines.push_back(std::move(line));
  return absl::OkStatus();
}

// What a copied file holds, for the backup listing.
std::string BackupFileDetail(const journal::DirectoryView& view, const std::string& name) {
  if (view.snapshot.has_value() && name == view.snapshot->name) {
    return absl::StrCat("snapshot, cut ", view.snapshot->cut);
  }
  if (name == journal::kFormatFileName) {
    return absl::StrCat("format version ", view.format_version);
  }
  for (const journal::SegmentView& s : view.segments) {
    if (s.name != name) continue;
    std::string detail =
        absl::StrCat("segment, first_seq ", s.first_seq, ", ", s.records.size(), " records");
    if (!s.records.empty()) {
      absl::StrAppend(&detail, " (seq ", s.records.front().seq, "..", s.records.back().seq, ")");
    }
    if (s.torn) {
      absl::StrAppend(&detail, "; torn tail at offset ", s.torn_offset, " (", s.torn_bytes,
                      " bytes, a write in progress) not copied");
    }
    return detail;
  }
  return "";
}

}  // namespace

VerifyReport VerifyDirectory(const std::string& dir, const VerifyOptions& options) {
  VerifyReport r;
  r.dir = dir;
  journal::Env* env = options.env != nullptr ? options.env : journal::Env::Default();
  journal::DirectoryView view;
  const absl::Status read = journal::ReadDirectory(env, dir, options.read, &view);
  r.format_version = view.format_version;

  Replay replay;
  absl::Status s;
  if (view.snapshot.has_value()) {
    r.has_snapshot = true;
    r.snapshot_file = view.snapshot->name;
    r.snapshot_cut = view.snapshot->cut;
    r.snapshot_bytes = view.snapshot->file.size();
    s = ProcessSnapshot(*view.snapshot, options, replay, &r);
  }
  for (const journal::SegmentView& seg : view.segments) {
    if (!s.ok()) break;
    ++r.segments;
    r.batches += seg.batches;
    r.bytes += seg.end;
    s = ProcessSegment(seg, view.cut, options, replay, &r);
    if (seg.torn && s.ok()) {
      r.notes.push_back(absl::StrCat(
          seg.path, " ends in a torn write at offset ", seg.torn_offset, " (",
          seg.torn_problem, "; ", seg.torn_bytes,
          " bytes): recovery drops it; on a live directory it is the write in "
          "progress"));
    }
  }
  // A problem in the records read comes before the one that stopped the read.
  r.status = s.ok() ? read : s;
  replay.Finish(options.now, &r);
  if (!view.skipped.empty()) {
    r.notes.push_back(absl::StrCat("skipped (recovery ignores or removes them): ",
                                   absl::StrJoin(view.skipped, ", ")));
  }
  if (view.attempts > 1) {
    r.notes.push_back(absl::StrCat("read ", view.attempts,
                                   " times: the directory changed while it was read"));
  }
  return r;
}

std::string FormatVerifyReport(const VerifyReport& r) {
  std::string out = absl::StrCat("data directory: ", r.dir, "\n");
  if (r.format_version != 0) absl::StrAppend(&out, "format: version ", r.format_version, "\n");
  if (r.has_snapshot) {
    absl::StrAppend(&out, "snapshot: ", r.snapshot_file, ", cut ", r.snapshot_cut, ", ",
                    r.snapshot_bytes, " bytes, ", r.snapshot_entries, " entries\n");
  } else {
    absl::StrAppend(&out, "snapshot: none\n");
  }
  for (const std::string& line : r.segment_lines) absl::StrAppend(&out, "segment ", line, "\n");
  absl::StrAppend(&out, "segments: ", r.segments, ", batches: ", r.batches,
                  ", records: ", r.records);
  if (r.records > 0) absl::StrAppend(&out, " (seq ", r.first_seq, "..", r.last_seq, ")");
  absl::StrAppend(&out, ", bytes: ", r.bytes, "\n");
  if (r.records_before_cut > 0) {
    absl::StrAppend(&out, "records before the snapshot cut (checked, not replayed): ",
                    r.records_before_cut, "\n");
  }
  std::vector<std::string> kinds;
  for (const auto& [kind, n] : r.entries) kinds.push_back(absl::StrCat(kind, " ", n));
  absl::StrAppend(&out, "entries: ", kinds.empty() ? "none" : absl::StrJoin(kinds, ", "),
                  "\n");
  std::vector<std::string> states;
  for (TaskState state : kAllStates) {
    auto it = r.tasks_by_state.find(TaskStateName(state));
    if (it != r.tasks_by_state.end()) states.push_back(absl::StrCat(it->first, " ", it->second));
  }
  absl::StrAppend(&out, "after replay: epoch ", r.epoch, ", queues ", r.queues, ", tasks ",
                  r.tasks);
  if (!states.empty()) absl::StrAppend(&out, " (", absl::StrJoin(states, ", "), ")");
  absl::StrAppend(&out, "\n");
  for (const std::string& note : r.notes) absl::StrAppend(&out, "note: ", note, "\n");
  if (r.status.ok()) {
    absl::StrAppend(&out, "result: OK\n");
  } else {
    absl::StrAppend(&out, "result: ", absl::StatusCodeToString(r.status.code()), ": ",
                    r.status.message(), "\n");
  }
  return out;
}

int VerifyExitCode(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return 0;
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kFailedPrecondition: return 65;
    case absl::StatusCode::kNotFound: return 66;
    case absl::StatusCode::kInvalidArgument: return 64;
    case absl::StatusCode::kAlreadyExists: return 73;
    default: return 74;
  }
}

int RunVerify(const std::string& dir, bool dump, std::ostream& out, std::ostream& err,
              journal::Env* env) {
  VerifyOptions options;
  options.env = env;
  options.now = absl::Now();
  if (dump) options.dump = [&out](const std::string& line) { out << line << "\n"; };
  const VerifyReport report = VerifyDirectory(dir, options);
  // With --dump, stdout carries JSON lines only; the summary goes to stderr.
  (dump ? err : out) << FormatVerifyReport(report);
  if (!report.status.ok()) err << "conveyord --verify: " << report.status.message() << "\n";
  (dump ? err : out).flush();
  return VerifyExitCode(report.status);
}

int RunBackup(const std::string& src, const std::string& dest, std::ostream& out,
              std::ostream& err, journal::Env* env) {
  if (env == nullptr) env = journal::Env::Default();
  // A destination that cannot be created is 73 (EX_CANTCREAT), not the 66
  // of a missing source.
  if (!env->FileExists(dest)) {
    std::string parent = dest;
    while (parent.size() > 1 && parent.back() == '/') parent.pop_back();
    const size_t slash = parent.rfind('/');
    parent = slash == std::string::npos ? "." : slash == 0 ? "/" : parent.substr(0, slash);
    if (!env->FileExists(parent)) {
      err << "conveyord --backup: cannot create " << dest << ": " << parent
          << " does not exist\n";
      return 73;
    }
  }
  absl::StatusOr<journal::BackupResult> result = journal::BackupDirectory(env, src, dest);
  if (!result.ok()) {
    err << "conveyord --backup: " << result.status().message() << "\n";
    return VerifyExitCode(result.status());
  }
  out << "backup of " << src << " to " << dest << ":\n";
  for (const journal::BackupResult::File& f : result->files) {
    out << "  "
        << absl::StrFormat("%-40s %12u bytes  %s", f.name, f.bytes,
                           BackupFileDetail(result->view, f.name))
        << "\n";
  }
  out << "copied " << result->files.size() << " files, " << result->bytes
      << " bytes (files and directory fsynced); start a broker with --data-dir=" << dest
      << " to use it\n";
  out.flush();
  return 0;
}

}  // namespace conveyor::server
