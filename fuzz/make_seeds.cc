// Writes the fuzzers' seed corpora from real journal files.
//
// Usage: make_seeds OUT_DIR
//
// Runs a FileJournal (the broker's, on the POSIX Env) in a temporary data
// directory: broker entries of every kind (serialized JournalEntry, with
// every field set somewhere), in single and multi-record batches, across
// segment rotations, with a snapshot in the broker's snapshot layout. Then
// writes
//   OUT_DIR/record_reader/  each segment file (trimmed after its data, plus
//                           a torn copy) and the snapshot;
//   OUT_DIR/journal_entry/  each record's bytes and each snapshot entry.
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "conveyor/internal/journal.pb.h"
#include "server/journal/env.h"
#include "server/journal/file_journal.h"
#include "server/journal/format.h"

namespace {

namespace j = ::conveyor::server::journal;
namespace pb = ::conveyor::internal;

std::string Serialize(const pb::JournalEntry& e) {
  std::string out;
  e.SerializeToString(&out);
  return out;
}

void FillRetry(pb::RetryRecord* r) {
  r->set_max_attempts(5);
  r->set_initial_backoff_us(1'000'000);
  r->set_max_backoff_us(300'000'000);
  r->set_multiplier(2.0);
  r->set_jitter(0.1);
}

std::vector<std::string> Entries(int i) {
  std::vector<std::string> out;
  pb::JournalEntry started;
  started.mutable_started()->set_epoch(static_cast<uint32_t>(i + 1));
  started.mutable_started()->set_at_us(1'700'000'000'000'000 + i);
  out.push_back(Serialize(started));

  pb::JournalEntry queue;
  pb::QueueState* q = queue.mutable_queue();
  q->set_name(absl::StrCat("queue-", i % 3));
  q->set_capacity(100000);
  q->set_full_policy(i % 2);
  FillRetry(q->mutable_retry());
  q->set_default_timeout_us(300'000'000);
  q->set_lease_duration_us(30'000'000);
  q->set_max_crashes(3);
  q->set_result_ttl_us(86'400'000'000);
  q->set_retained(100000);
  q->set_paused(i % 5 == 0);
  out.push_back(Serialize(queue));

  pb::JournalEntry submitted;
  pb::TaskSubmitted* s = submitted.mutable_submitted();
  s->set_id(0x0190000000000000ull + static_cast<uint64_t>(i));
  s->set_queue(q->name());
  s->set_type(i % 2 ? "echo" : "resize");
  s->set_payload(std::string(static_cast<size_t>(i % 50), static_cast<char>('a' + i % 26)));
  pb::Header* h = s->add_headers();
  h->set_key("traceparent");
  h->set_value("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  s->set_priority(static_cast<uint32_t>(i % 10));
  s->set_created_us(1'700'000'000'000'000 + i);
  if (i % 3 == 0) s->set_not_before_us(1'700'000'100'000'000);
  if (i % 4 == 0) s->set_expires_us(1'700'000'200'000'000);
  if (i % 2 == 0) FillRetry(s->mutable_retry());
  if (i % 3 == 1) s->set_timeout_us(5'000'000);
  s->set_idempotency_key(absl::StrCat("key-", i));
  if (i % 5 == 0) s->set_rate_key("tenant-1");
  if (i % 7 == 0) s->set_concurrency_key("db");
  if (i % 6 == 0) s->set_fallback_result("fallback");
  out.push_back(Serialize(submitted));

  pb::JournalEntry updated;
  pb::TaskUpdated* u = updated.mutable_updated();
  u->set_id(s->id());
  u->set_state(static_cast<uint32_t>(i % 8 == 2 ? 1 : i % 8));
  u->set_failures(static_cast<uint32_t>(i % 4));
  u->set_crashes(static_cast<uint32_t>(i % 2));
  u->set_token(static_cast<uint64_t>(i) << 32 | 7);
  if (i % 3 == 0) u->set_not_before_us(1'700'000'300'000'000);
  u->set_started_us(1'700'000'000'500'000 + i);
  u->set_finished_us(1'700'000'001'000'000 + i);
  u->set_result("result bytes");
  u->set_error(i % 2 ? "" : "boom");
  u->set_cancel_requested(i % 9 == 0);
  out.push_back(Serialize(updated));

  if (i % 4 == 0) {
    pb::JournalEntry dropped;
    dropped.mutable_dropped()->add_ids(s->id());
    dropped.mutable_dropped()->add_ids(s->id() + 1000);
    out.push_back(Serialize(dropped));
    pb::JournalEntry barrier;
    barrier.mutable_barrier();
    out.push_back(Serialize(barrier));
  }
  return out;
}

bool WriteFile(const std::filesystem::path& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(f);
}

absl::Status AppendAndWait(j::FileJournal& journal, std::vector<std::string> records) {
  absl::Notification done;
  absl::Status result;
  journal.Append(std::move(records), [&](absl::Status s) {
    result = s;
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "make_seeds: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return Fail("usage: make_seeds OUT_DIR");
  conveyor::SetLogLevel(conveyor::LogLevel::kWarning);
  const std::filesystem::path out = argv[1];
  char tmpl[] = "/tmp/conveyor_fuzz_seeds.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return Fail("mkdtemp failed");
  const std::string dir = std::string(tmpl) + "/data";

  const std::filesystem::path records_dir = out / "record_reader";
  const std::filesystem::path entries_dir = out / "journal_entry";
  std::filesystem::create_directories(records_dir);
  std::filesystem::create_directories(entries_dir);
  j::Env* env = j::Env::Default();
  // name -> bytes: every segment and snapshot as it was when collected
  // (a snapshot deletes the segments before it, so collect twice).
  std::map<std::string, std::string> seeds;
  auto collect = [&]() -> absl::Status {
    absl::StatusOr<std::vector<std::string>> names = env->ListDir(dir);
    if (!names.ok()) return names.status();
    for (const std::string& name : *names) {
      uint64_t n = 0;
      const bool segment = j::ParseSegmentFileName(name, &n);
      if (!segment && !j::ParseSnapshotFileName(name, &n)) continue;
      absl::StatusOr<std::string> data = env->ReadFile(j::JoinPath(dir, name));
      if (!data.ok()) return data.status();
      if (segment) {
        // Keep the data and a little of the zero-filled tail.
        const j::SegmentScan scan = j::ScanSegment(*data, 0);
        data->resize(std::min<size_t>(data->size(), scan.end + 16));
        // And a torn copy: cut in the middle of its last record.
        if (scan.end > j::kSegmentHeaderSize + 10) {
          seeds[name + ".torn"] = data->substr(0, scan.end - 10);
        }
      }
      seeds[name] = *std::move(data);
    }
    return absl::OkStatus();
  };

  std::vector<std::string> entries;
  {
    j::FileJournalOptions o;
    o.dir = dir;
    o.segment_bytes = 4096;
    o.fsync = *j::ParseFsyncPolicy("never");
    auto opened = j::FileJournal::Open(o);
    if (!opened.ok()) return Fail(opened.status().ToString());
    j::FileJournal& journal = **opened;
    if (absl::Status s = journal.Recover([](const j::JournalSnapshot&) { return absl::OkStatus(); },
                                         [](const j::JournalRecord&) { return absl::OkStatus(); });
        !s.ok()) {
      return Fail(s.ToString());
    }
    for (int i = 0; i < 24; ++i) {
      std::vector<std::string> e = Entries(i);
      if (i == 12) {
        if (absl::Status s = collect(); !s.ok()) return Fail(s.ToString());
        // A snapshot in the broker's layout: [u32 length][entry] pieces.
        absl::StatusOr<j::SequenceNumber> cut = journal.BeginSnapshot();
        if (!cut.ok()) return Fail(cut.status().ToString());
        std::string state;
        for (const std::string& piece : Entries(100)) {
          const uint32_t n = static_cast<uint32_t>(piece.size());
          for (int b = 0; b < 4; ++b) state.push_back(static_cast<char>(n >> (8 * b)));
          state += piece;
        }
        if (absl::Status s = journal.WriteSnapshot(*cut, state); !s.ok()) return Fail(s.ToString());
      }
      // Alternate one batch of all entries with one batch per entry.
      if (i % 2 == 0) {
        if (absl::Status s = AppendAndWait(journal, e); !s.ok()) return Fail(s.ToString());
      } else {
        for (const std::string& one : e) {
          if (absl::Status s = AppendAndWait(journal, {one}); !s.ok()) return Fail(s.ToString());
        }
      }
      entries.insert(entries.end(), e.begin(), e.end());
    }
    if (absl::Status s = journal.Close(); !s.ok()) return Fail(s.ToString());
  }
  if (absl::Status s = collect(); !s.ok()) return Fail(s.ToString());

  for (const auto& [name, data] : seeds) {
    if (!WriteFile(records_dir / name, data)) return Fail("cannot write a seed");
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!WriteFile(entries_dir / absl::StrCat("entry-", i), entries[i])) {
      return Fail("cannot write a seed");
    }
  }
  std::filesystem::remove_all(tmpl);
  std::printf("make_seeds: %zu record_reader seeds, %zu journal_entry seeds in %s\n", seeds.size(),
              entries.size(), out.c_str());
  return 0;
}
