#include "server/journal/dir_reader.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace conveyor::server::journal {
namespace {

// The same words as FileJournal's recovery errors, so that an operator sees
// one message for one problem.
absl::Status Corruption(const std::string& path, uint64_t offset,
                        absl::string_view what) {
  return absl::DataLossError(absl::StrCat("journal corruption in ", path,
                                          " at offset ", offset, ": ", what));
}

// Bytes from `end` to the last non-zero byte of `data`.
uint64_t DamagedBytes(absl::string_view data, uint64_t end) {
  const size_t last = data.find_last_not_of('\0');
  if (last == absl::string_view::npos || last < end) return 0;
  return last + 1 - end;
}

// Fills `view` from a scan of its whole file `data`; keeps data[0, end).
void FillSegment(std::string data, const SegmentScan& scan, bool is_last,
                 SegmentView* view) {
  view->file_bytes = data.size();
  view->end = scan.end;
  for (const ScannedRecord& r : scan.records) {
    RecordView rv;
    rv.seq = r.seq;
    rv.offset = static_cast<uint64_t>(r.data.data() - data.data()) -
                kRecordHeaderSize - kSeqSize;
    rv.type = static_cast<RecordType>(data[rv.offset + 8]);
    rv.size = r.data.size();
    if (rv.type == RecordType::kFull || rv.type == RecordType::kLast) {
      ++view->batches;
    }
    view->records.push_back(rv);
  }
  if (is_last && scan.tail == SegmentScan::Tail::kTorn) {
    view->torn = true;
    view->torn_offset = scan.problem_offset;
    view->torn_problem = scan.problem;
    view->torn_bytes = DamagedBytes(data, scan.end);
  }
  data.resize(scan.end);
  data.shrink_to_fit();  // Drop the preallocated zeros.
  view->data = std::move(data);
}

// The journal files of one listing.
struct Listing {
  bool has_format = false;
  std::map<uint64_t, std::string> segments;   // number -> name
  std::map<uint64_t, std::string> snapshots;  // cut -> name
};

// Each step below reads one part of the directory into `out`; `*final` is
// set for errors that another attempt cannot change.

// Lists `dir`; temp files go to out->skipped.
absl::Status List(Env* env, const std::string& dir, Listing* listing,
                  DirectoryView* out, bool* final) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(dir);
  if (!names.ok()) {
    *final = true;
    if (absl::IsNotFound(names.status())) {
      return absl::NotFoundError(
          absl::StrCat("journal data directory ", dir, " does not exist"));
    }
    return names.status();
  }
  for (const std::string& name : *names) {
    uint64_t n = 0;
    if (name == kFormatFileName) {
      listing->has_format = true;
    } else if (absl::EndsWith(name, kTempSuffix)) {
      out->skipped.push_back(name);
    } else if (ParseSegmentFileName(name, &n)) {
      listing->segments[n] = name;
    } else if (ParseSnapshotFileName(name, &n)) {
      listing->snapshots[n] = name;
    }
  }
  return absl::OkStatus();
}

// FORMAT is written before any journal file and never removed: its absence
// is not a race.
absl::Status ReadFormat(Env* env, const std::string& dir, const Listing& listing,
                        DirectoryView* out, bool* final) {
  const std::string path = JoinPath(dir, kFormatFileName);
  if (!listing.has_format) {
    *final = true;
    if (!listing.segments.empty() || !listing.snapshots.empty()) {
      const std::string& any = !listing.segments.empty()
                                   ? listing.segments.begin()->second
                                   : listing.snapshots.begin()->second;
      return absl::DataLossError(absl::StrCat("journal data directory ", dir,
                                              " holds ", any, " but no ",
                                              kFormatFileName, " file"));
    }
    return absl::NotFoundError(absl::StrCat(
        dir, " is not a journal data directory (it has no ", kFormatFileName,
        " file)"));
  }
  absl::StatusOr<std::string> contents = env->ReadFile(path);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<uint32_t> version = ParseFormatFile(*contents);
  if (!version.ok()) {
    *final = true;
    return absl::DataLossError(
        absl::StrCat(path, ": ", version.status().message()));
  }
  if (*version > kFormatVersion) {
    *final = true;
    return absl::FailedPreconditionError(absl::StrCat(
        "journal data directory ", dir, " has format version ", *version,
        "; this build reads up to version ", kFormatVersion));
  }
  out->format_version = *version;
  return absl::OkStatus();
}

// The latest snapshot; older ones are leftovers of an interrupted cleanup.
absl::Status ReadSnapshot(Env* env, const std::string& dir, const Listing& listing,
                          DirectoryView* out, bool* final) {
  if (listing.snapshots.empty()) return absl::OkStatus();
  const auto& [name_cut, name] = *listing.snapshots.rbegin();
  const std::string path = JoinPath(dir, name);
  absl::StatusOr<std::string> data = env->ReadFile(path);
  if (!data.ok()) return data.status();  // NOT_FOUND: compacted; retry.
  absl::StatusOr<DecodedSnapshot> snap = DecodeSnapshot(*data);
  if (!snap.ok()) {
    *final = absl::IsFailedPrecondition(snap.status());
    return absl::Status(snap.status().code(),
                        absl::StrCat("journal snapshot ", path, ": ",
                                     snap.status().message()));
  }
  if (snap->cut != name_cut) {
    return Corruption(path, 8,
                      absl::StrCat("snapshot cut ", snap->cut,
                                   " does not match its name"));
  }
  out->cut = snap->cut;
  out->snapshot = SnapshotView{name, path, snap->cut, *std::move(data)};
  for (const auto& [old_cut, old_name] : listing.snapshots) {
    if (old_cut != name_cut) out->skipped.push_back(old_name);
  }
  return absl::OkStatus();
}

// Segment headers: numbers contiguous, first_seq non-decreasing.
absl::Status ReadSegmentHeaders(Env* env, const std::string& dir,
                                const Listing& listing,
                                std::vector<SegmentView>* segs, bool* final) {
  for (const auto& [number, name] : listing.segments) {
    const std::string path = JoinPath(dir, name);
    if (!segs->empty() && number != segs->back().number + 1) {
      return absl::DataLossError(absl::StrCat(
          "journal segment ", SegmentFileName(segs->back().number + 1),
          " is missing from ", dir, " (found ", name, " after ",
          segs->back().name, ")"));
    }
    absl::StatusOr<std::string> head = env->ReadFile(path, 0, kSegmentHeaderSize);
    if (!head.ok()) return head.status();
    absl::StatusOr<SegmentHeader> h = DecodeSegmentHeader(*head);
    if (!h.ok()) {
      if (absl::IsFailedPrecondition(h.status())) {
        *final = true;
        return absl::FailedPreconditionError(
            absl::StrCat(path, ": ", h.status().message()));
      }
      return Corruption(path, 0, h.status().message());
    }
    if (h->number != number) {
      return Corruption(path, 8, absl::StrCat("header names segment ", h->number));
    }
    if (!segs->empty() && h->first_seq < segs->back().first_seq) {
      return Corruption(path, 16,
                        absl::StrCat("first sequence number ", h->first_seq,
                                     " is below the previous segment's"));
    }
    SegmentView v;
    v.name = name;
    v.path = path;
    v.number = number;
    v.first_seq = h->first_seq;
    segs->push_back(std::move(v));
  }
  return absl::OkStatus();
}

// Nothing may be missing between the snapshot (or the start) and `first`,
// the first segment read. Recovery does not check this; a listing taken
// during a compaction can show it, so it is retried like the rest.
absl::Status CheckNothingMissing(const DirectoryView& view,
                                 const SegmentView& first) {
  if (view.snapshot.has_value() && first.first_seq > view.cut &&
      first.number != 1) {
    return absl::DataLossError(absl::StrCat(
        "journal records from sequence ", view.cut, " to ", first.first_seq - 1,
        " are missing from ", view.dir, ": the snapshot ", view.snapshot->name,
        " ends at ", view.cut, " but the first segment, ", first.name,
        ", starts at ", first.first_seq));
  }
  if (!view.snapshot.has_value() && first.number != 1) {
    return absl::DataLossError(absl::StrCat("journal segments before ", first.name,
                                            " are missing from ", view.dir,
                                            " and there is no snapshot"));
  }
  return absl::OkStatus();
}

// Reads and scans `segs` (headers read) into out->segments, in order.
absl::Status ScanSegments(Env* env, std::vector<SegmentView> segs,
                          DirectoryView* out) {
  uint64_t last_seq = 0;
  for (size_t i = 0; i < segs.size(); ++i) {
    SegmentView& v = segs[i];
    const bool is_last = i + 1 == segs.size();
    absl::StatusOr<std::string> data = env->ReadFile(v.path);
    if (!data.ok()) return data.status();  // NOT_FOUND: compacted; retry.
    if (absl::StatusOr<SegmentHeader> h = DecodeSegmentHeader(*data);
        !h.ok() || h->number != v.number || h->first_seq != v.first_seq) {
      return Corruption(v.path, 0, "segment header changed while reading");
    }
    if (last_seq >= v.first_seq) {
      out->segments.push_back(std::move(v));
      const SegmentView& s = out->segments.back();
      return Corruption(s.path, 16,
                        absl::StrCat("first sequence number ", s.first_seq,
                                     " is not above ", last_seq,
                                     " of the previous segment"));
    }
    const uint64_t floor = v.first_seq > 0 ? v.first_seq - 1 : 0;
    const SegmentScan scan = ScanSegment(*data, std::max(last_seq, floor));
    FillSegment(*std::move(data), scan, is_last, &v);
    out->segments.push_back(std::move(v));
    if (scan.tail == SegmentScan::Tail::kCorrupt ||
        (scan.tail == SegmentScan::Tail::kTorn && !is_last)) {
      return Corruption(out->segments.back().path, scan.problem_offset,
                        scan.problem);
    }
    if (!scan.records.empty()) last_seq = scan.last_seq;
  }
  return absl::OkStatus();
}

// One listing and reading of the directory.
absl::Status ReadOnce(Env* env, const std::string& dir, DirectoryView* out,
                      bool* final) {
  *final = false;
  *out = DirectoryView();
  out->dir = dir;
  Listing listing;
  if (absl::Status s = List(env, dir, &listing, out, final); !s.ok()) return s;
  if (absl::Status s = ReadFormat(env, dir, listing, out, final); !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadSnapshot(env, dir, listing, out, final); !s.ok()) {
    return s;
  }
  std::vector<SegmentView> segs;
  if (absl::Status s = ReadSegmentHeaders(env, dir, listing, &segs, final);
      !s.ok()) {
    return s;
  }
  // Segments wholly before the cut are leftovers of an interrupted cleanup.
  size_t first = 0;
  while (first + 1 < segs.size() && segs[first + 1].first_seq <= out->cut) {
    out->skipped.push_back(segs[first].name);
    ++first;
  }
  std::sort(out->skipped.begin(), out->skipped.end());
  segs.erase(segs.begin(), segs.begin() + static_cast<std::ptrdiff_t>(first));
  if (segs.empty()) return absl::OkStatus();
  if (absl::Status s = CheckNothingMissing(*out, segs.front()); !s.ok()) {
    return s;
  }
  return ScanSegments(env, std::move(segs), out);
}

}  // namespace

absl::Status ReadDirectory(Env* env, const std::string& dir,
                           const ReadOptions& options, DirectoryView* out) {
  if (options.attempts < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ReadOptions.attempts must be at least 1, not ", options.attempts));
  }
  absl::Status s;
  for (int attempt = 1; attempt <= options.attempts; ++attempt) {
    if (attempt > 1) absl::SleepFor(options.retry_delay);
    bool final = false;
    s = ReadOnce(env, dir, out, &final);
    out->attempts = attempt;
    if (s.ok() || final) return s;
  }
  return s;
}

}  // namespace conveyor::server::journal
