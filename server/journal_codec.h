// Encoding of the broker's state changes as journal records
// (proto/conveyor/internal/journal.proto), and back.
//
// Only persistent fields are written: a task's immutable submit fields once,
// then its mutable persistent fields (state, attempts, crashes, token, times,
// result, error, cancel flag) in full at each change, so the latest record
// of a task is its state. RUNNING is never written: the durable view of a
// leased task is READY. A queue record carries the queue's whole config,
// its limits included (a throttle or a bucket's tokens are not persistent:
// a restart starts every bucket full and forgets throttles).
//
// Stateless functions; thread-compatible.
#ifndef CONVEYOR_SERVER_JOURNAL_CODEC_H_
#define CONVEYOR_SERVER_JOURNAL_CODEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "conveyor/internal/journal.pb.h"
#include "server/queue.h"
#include "server/task.h"

namespace conveyor::server {

std::string EncodeStarted(uint32_t epoch, absl::Time at);
std::string EncodeBarrier();
std::string EncodeQueue(const QueueConfig& config, bool paused);
// `type` is the task's type name; `links` (optional) its workflow links.
std::string EncodeSubmitted(const Task& task, absl::string_view type,
                            const TaskLinks* links = nullptr);
// The submit fields of `task` (as EncodeSubmitted writes them) into `s`.
void SubmittedToRecord(const Task& task, absl::string_view type, const TaskLinks* links,
                       conveyor::internal::TaskSubmitted* s);
void RetryToRecord(const RetryPolicy& r, conveyor::internal::RetryRecord* out);
std::string EncodeUpdated(const Task& task);
std::string EncodeDropped(const std::vector<uint64_t>& ids);
std::string EncodeEntry(const conveyor::internal::JournalEntry& entry);

// DATA_LOSS if `record` is not a journal entry.
absl::StatusOr<conveyor::internal::JournalEntry> DecodeEntry(absl::string_view record);

// Conversions for replay.
QueueConfig QueueConfigFromRecord(const conveyor::internal::QueueState& q);
RetryPolicy RetryFromRecord(const conveyor::internal::RetryRecord& r);

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_JOURNAL_CODEC_H_
