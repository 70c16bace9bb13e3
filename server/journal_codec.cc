#include "server/journal_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace conveyor::server {
namespace pb = ::conveyor::internal;
namespace {

int64_t Us(absl::Duration d) { return absl::ToInt64Microseconds(d); }
int64_t Us(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return 0;
  return absl::ToUnixMicros(t);
}

void RateToRecord(const RateLimit& r, pb::RateRecord* out) {
  out->set_per_second(r.per_second);
  out->set_burst(r.burst);
}

RateLimit RateFromRecord(const pb::RateRecord& r) {
  RateLimit rate;
  rate.per_second = r.per_second();
  rate.burst = r.burst();
  return rate;
}

void LimitsToRecord(const QueueLimits& l, pb::LimitsRecord* out) {
  if (l.rate) RateToRecord(*l.rate, out->mutable_rate());
  out->set_max_running(l.max_running);
  if (l.key_rate) RateToRecord(*l.key_rate, out->mutable_key_rate());
  for (const auto& [key, rate] : l.key_rates) RateToRecord(rate, &(*out->mutable_key_rates())[key]);
  out->set_key_max_running(l.key_max_running);
  for (const auto& [key, size] : l.pools) (*out->mutable_pools())[key] = size;
}

QueueLimits LimitsFromRecord(const pb::LimitsRecord& r) {
  QueueLimits l;
  if (r.has_rate()) l.rate = RateFromRecord(r.rate());
  l.max_running = r.max_running();
  if (r.has_key_rate()) l.key_rate = RateFromRecord(r.key_rate());
  for (const auto& [key, rate] : r.key_rates()) l.key_rates[key] = RateFromRecord(rate);
  l.key_max_running = r.key_max_running();
  for (const auto& [key, size] : r.pools()) l.pools[key] = size;
  return l;
}

// The two records written per task (submitted, updated) are built on an
// arena whose first block is on the stack: their message and string objects
// then cost no heap allocation (a payload's, key's or result's bytes still
// do), where a heap-built submit record took about ten.
class RecordArena {
 public:
  RecordArena() : arena_(Options(block_)) {}
  template <typename Message = pb::JournalEntry>
  Message* New() {
    return google::protobuf::Arena::CreateMessage<Message>(&arena_);
  }

 private:
  static google::protobuf::ArenaOptions Options(char (&block)[1024]) {
    google::protobuf::ArenaOptions o;
    o.initial_block = block;
    o.initial_block_size = sizeof(block);
    return o;
  }
  alignas(8) char block_[1024];
  google::protobuf::Arena arena_;
};

std::string Serialize(const pb::JournalEntry& entry) {
  std::string out;
  entry.SerializeToString(&out);
  return out;
}

}  // namespace

void RetryToRecord(const RetryPolicy& r, pb::RetryRecord* out) {
  out->set_max_attempts(r.max_attempts);
  out->set_initial_backoff_us(Us(r.initial_backoff));
  out->set_max_backoff_us(Us(r.max_backoff));
  out->set_multiplier(r.multiplier);
  out->set_jitter(r.jitter);
}

std::string EncodeEntry(const pb::JournalEntry& entry) { return Serialize(entry); }

RetryPolicy RetryFromRecord(const pb::RetryRecord& r) {
  RetryPolicy p;
  p.max_attempts = r.max_attempts();
  p.initial_backoff = absl::Microseconds(r.initial_backoff_us());
  p.max_backoff = absl::Microseconds(r.max_backoff_us());
  p.multiplier = r.multiplier();
  p.jitter = r.jitter();
  return p;
}

QueueConfig QueueConfigFromRecord(const pb::QueueState& q) {
  QueueConfig c;
  c.name = q.name();
  c.capacity = q.capacity();
  c.full_policy = q.full_policy() == static_cast<uint32_t>(FullPolicy::kWait)
                      ? FullPolicy::kWait
                      : FullPolicy::kReject;
  c.retry = RetryFromRecord(q.retry());
  c.default_timeout = absl::Microseconds(q.default_timeout_us());
  c.lease_duration = absl::Microseconds(q.lease_duration_us());
  c.max_crashes = q.max_crashes();
  c.result_ttl = absl::Microseconds(q.result_ttl_us());
  c.retained = q.retained();
  // Journals written before limits existed have no record: no limits.
  if (q.has_limits()) c.limits = LimitsFromRecord(q.limits());
  return c;
}

std::string EncodeStarted(uint32_t epoch, absl::Time at) {
  pb::JournalEntry e;
  e.mutable_started()->set_epoch(epoch);
  e.mutable_started()->set_at_us(Us(at));
  return Serialize(e);
}

std::string EncodeBarrier() {
  pb::JournalEntry e;
  e.mutable_barrier();
  return Serialize(e);
}

std::string EncodeQueue(const QueueConfig& c, bool paused) {
  pb::JournalEntry e;
  pb::QueueState* q = e.mutable_queue();
  q->set_name(c.name);
  q->set_capacity(c.capacity);
  q->set_full_policy(static_cast<uint32_t>(c.full_policy));
  RetryToRecord(c.retry, q->mutable_retry());
  q->set_default_timeout_us(Us(c.default_timeout));
  q->set_lease_duration_us(Us(c.lease_duration));
  q->set_max_crashes(c.max_crashes);
  q->set_result_ttl_us(Us(c.result_ttl));
  q->set_retained(c.retained);
  q->set_paused(paused);
  // Left out when there are none, so queues without limits cost nothing.
  if (!c.limits.empty()) LimitsToRecord(c.limits, q->mutable_limits());
  return Serialize(e);
}

namespace {

using google::protobuf::io::CodedOutputStream;
using google::protobuf::internal::WireFormatLite;

// The bytes of length-delimited field `number` holding `size` bytes: its
// tag, its length, and the bytes.
size_t FieldSize(int number, size_t size) {
  return WireFormatLite::TagSize(number, WireFormatLite::TYPE_BYTES) +
         WireFormatLite::LengthDelimitedSize(size);
}

// Writes the tag and length of such a field; its bytes go right after.
uint8_t* WriteFieldHeader(int number, size_t size, uint8_t* out) {
  out = WireFormatLite::WriteTagToArray(number, WireFormatLite::WIRETYPE_LENGTH_DELIMITED, out);
  return CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(size), out);
}

uint8_t* WriteBytesField(int number, absl::string_view value, uint8_t* out) {
  out = WriteFieldHeader(number, value.size(), out);
  return static_cast<uint8_t*>(memcpy(out, value.data(), value.size())) + value.size();
}

// Every submit field but the payload and the idempotency key.
void SubmittedFieldsToRecord(const Task& task, absl::string_view type, const TaskLinks* links,
                             pb::TaskSubmitted* s) {
  s->set_id(task.id().value());
  s->set_queue(task.queue()->name());
  // Assigned into mutable_*(): one copy. Protobuf 3.21's (data, size)
  // setters build a temporary std::string and copy that again, which costs a
  // second allocation for every value longer than 15 bytes.
  s->mutable_type()->assign(type.data(), type.size());
  s->set_priority(task.priority);
  s->set_created_us(Us(task.created_at()));
  if (const TaskExtra* x = task.extra(); x != nullptr) {
    for (const auto& [k, v] : x->headers) {
      pb::Header* h = s->add_headers();
      h->set_key(k);
      h->set_value(v);
    }
    if (x->not_before != absl::InfinitePast()) s->set_not_before_us(Us(x->not_before));
    s->set_expires_us(Us(x->expires_at));
    if (x->retry) RetryToRecord(*x->retry, s->mutable_retry());
    if (x->timeout) s->set_timeout_us(Us(*x->timeout));
    s->set_rate_key(x->rate_key);
    s->set_concurrency_key(x->concurrency_key);
    if (x->fallback_result) s->set_fallback_result(*x->fallback_result);
  }
  if (links != nullptr) {
    s->set_group_id(links->group);
    s->set_group_index(links->index);
    s->set_chain_id(links->chain);
    s->set_chain_stage(links->stage);
    s->set_schedule(links->schedule);
    s->set_schedule_tick_us(links->schedule_tick_us);
  }
}

}  // namespace

// A task's payload (up to max_payload_bytes) and key are written straight
// into the record's bytes, after the fields built as a message: copied into
// the message first, a payload would be copied twice and cost one more
// allocation per string. The wire format lets fields come in any order, so
// DecodeEntry reads this record as it reads one SerializeToString wrote
// (journal_submit_codec_test checks that the two decode the same). The
// record is a JournalEntry whose one field, `submitted`, is framed here.
std::string EncodeSubmitted(const Task& task, absl::string_view type, const TaskLinks* links) {
  RecordArena arena;
  pb::TaskSubmitted* s = arena.New<pb::TaskSubmitted>();
  SubmittedFieldsToRecord(task, type, links, s);
  const absl::string_view payload = task.payload();
  const KeyText key = task.idempotency_key();
  size_t inner = s->ByteSizeLong();  // caches the sizes SerializeWithCachedSizes uses
  if (!payload.empty()) inner += FieldSize(pb::TaskSubmitted::kPayloadFieldNumber, payload.size());
  if (!key.empty()) {
    inner += FieldSize(pb::TaskSubmitted::kIdempotencyKeyFieldNumber, key.view().size());
  }
  constexpr int kSubmitted = pb::JournalEntry::kSubmittedFieldNumber;
  std::string out(FieldSize(kSubmitted, inner), '\0');
  uint8_t* p = WriteFieldHeader(kSubmitted, inner, reinterpret_cast<uint8_t*>(out.data()));
  p = s->SerializeWithCachedSizesToArray(p);
  if (!payload.empty()) p = WriteBytesField(pb::TaskSubmitted::kPayloadFieldNumber, payload, p);
  if (!key.empty()) {
    p = WriteBytesField(pb::TaskSubmitted::kIdempotencyKeyFieldNumber, key.view(), p);
  }
  return out;
}

void SubmittedToRecord(const Task& task, absl::string_view type, const TaskLinks* links,
                       pb::TaskSubmitted* s) {
  SubmittedFieldsToRecord(task, type, links, s);
  s->mutable_payload()->assign(task.payload().data(), task.payload().size());
  if (const KeyText key = task.idempotency_key(); !key.empty()) {
    s->mutable_idempotency_key()->assign(key.view().data(), key.view().size());
  }
}

std::string EncodeUpdated(const Task& task) {
  RecordArena arena;
  pb::JournalEntry& e = *arena.New();
  pb::TaskUpdated* u = e.mutable_updated();
  u->set_id(task.id().value());
  TaskState state = task.state == TaskState::kRunning ? TaskState::kReady : task.state;
  u->set_state(static_cast<uint32_t>(state));
  u->set_failures(task.failures);
  u->set_crashes(task.crashes);
  u->set_token(task.token());
  u->set_cancel_requested(task.cancel_requested);
  if (const TaskExtra* x = task.extra(); x != nullptr) {
    if (task.state == TaskState::kScheduled) u->set_not_before_us(Us(x->not_before));
    u->set_started_us(Us(x->started_at));
    u->set_finished_us(Us(x->finished_at));
    u->set_result(x->result);
    u->set_error(x->error);
  }
  return Serialize(e);
}

std::string EncodeDropped(const std::vector<uint64_t>& ids) {
  pb::JournalEntry e;
  for (uint64_t id : ids) e.mutable_dropped()->add_ids(id);
  return Serialize(e);
}

absl::StatusOr<pb::JournalEntry> DecodeEntry(absl::string_view record) {
  pb::JournalEntry e;
  if (!e.ParseFromArray(record.data(), static_cast<int>(record.size())) ||
      e.kind_case() == pb::JournalEntry::KIND_NOT_SET) {
    return absl::DataLossError(
        absl::StrCat("a journal record of ", record.size(), " bytes is not a journal entry"));
  }
  return e;
}

}  // namespace conveyor::server
