#include "server/task.h"

#include <array>
#include <cstring>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/record_pool.h"

namespace conveyor::server {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

}  // namespace

std::string TaskId::ToString() const {
  // Written directly: every answer carries ids, and StrFormat parses its
  // format on each call.
  std::string out(16, '0');
  for (int i = 15, shift = 0; i >= 0; --i, shift += 4) out[i] = kHexDigits[(value_ >> shift) & 0xf];
  return out;
}

absl::StatusOr<TaskId> TaskId::Parse(absl::string_view text) {
  uint64_t value = 0;
  bool ok = text.size() == 16;
  for (char c : text) {
    if (!ok) break;
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else { ok = false; break; }
    value = value << 4 | static_cast<uint64_t>(digit);
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task id \"", absl::CHexEscape(text.substr(0, 64)),
        "\" is not a task id (16 hex digits)"));
  }
  return TaskId(value);
}

const char* TaskStateName(TaskState state) {
  switch (state) {
    case TaskState::kScheduled: return "SCHEDULED";
    case TaskState::kReady: return "READY";
    case TaskState::kRunning: return "RUNNING";
    case TaskState::kSucceeded: return "SUCCEEDED";
    case TaskState::kDead: return "DEAD";
    case TaskState::kCanceled: return "CANCELED";
    case TaskState::kExpired: return "EXPIRED";
    case TaskState::kFallback: return "FALLBACK";
  }
  return "UNKNOWN";
}

RetryPolicy RetryOverride::ApplyTo(const RetryPolicy& base) const {
  RetryPolicy p = base;
  if (max_attempts) p.max_attempts = *max_attempts;
  if (initial_backoff) p.initial_backoff = *initial_backoff;
  if (max_backoff) p.max_backoff = *max_backoff;
  if (multiplier) p.multiplier = *multiplier;
  if (jitter) p.jitter = *jitter;
  return p;
}

namespace {

constexpr size_t kPackedKeyBytes = 16;

// Each character's value as a lowercase hex digit, or -1 (upper case too:
// it would not come back the same).
constexpr std::array<int8_t, 256> kHexValue = [] {
  std::array<int8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = c >= '0' && c <= '9' ? static_cast<int8_t>(c - '0')
         : c >= 'a' && c <= 'f' ? static_cast<int8_t>(c - 'a' + 10)
                                : int8_t{-1};
  }
  return t;
}();

// 32 lowercase hex digits -> 16 bytes; false for any other key.
bool PackKey(absl::string_view key, char* out) {
  if (key.size() != 2 * kPackedKeyBytes) return false;
  for (size_t i = 0; i < kPackedKeyBytes; ++i) {
    const int hi = kHexValue[static_cast<unsigned char>(key[2 * i])];
    const int lo = kHexValue[static_cast<unsigned char>(key[2 * i + 1])];
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return true;
}

// What a key takes after the payload: 16 bytes if packed, else a 2-byte
// length and its bytes; nothing without a key.
size_t InlineKeyBytes(const StoredKey& key) {
  if (key.packed()) return kPackedKeyBytes;
  return key.bytes().empty() ? 0 : sizeof(uint16_t) + key.bytes().size();
}

}  // namespace

StoredKey StoredKey::Of(absl::string_view text) {
  StoredKey k;
  k.packed_ = PackKey(text, k.packed_bytes_);
  if (!k.packed_) k.raw_ = text;
  return k;
}

KeyText KeyText::FromPacked(const unsigned char* bytes) {
  KeyText k;
  k.packed_ = true;
  for (size_t i = 0; i < kPackedKeyBytes; ++i) {
    k.hex_[2 * i] = kHexDigits[bytes[i] >> 4];
    k.hex_[2 * i + 1] = kHexDigits[bytes[i] & 0xf];
  }
  return k;
}

Task* Task::Create(TaskId id, Queue* queue, uint32_t type_id,
                   absl::string_view payload, absl::Time created,
                   absl::string_view idempotency_key) {
  // The payload (and the key) live right after the record, in the same
  // allocation.
  const StoredKey stored = StoredKey::Of(idempotency_key);
  const bool pack = stored.packed();
  const uint16_t key_size = static_cast<uint16_t>(idempotency_key.size());
  void* mem = RecordPool::Allocate(sizeof(Task) + payload.size() + InlineKeyBytes(stored));
  Task* task = new (mem) Task();
  task->id_ = id.value();
  task->queue_ = queue;
  task->type_id_ = type_id;
  task->created_us_ = absl::ToUnixMicros(created);
  task->payload_size_ = static_cast<uint32_t>(payload.size());
  char* tail = reinterpret_cast<char*>(task + 1);
  if (!payload.empty()) std::memcpy(tail, payload.data(), payload.size());
  if (pack) {
    task->has_idempotency_key_ = true;
    task->key_packed_ = true;
    std::memcpy(tail + payload.size(), stored.bytes().data(), kPackedKeyBytes);
  } else if (key_size > 0) {
    task->has_idempotency_key_ = true;
    std::memcpy(tail + payload.size(), &key_size, sizeof(key_size));
    std::memcpy(tail + payload.size() + sizeof(key_size), idempotency_key.data(), key_size);
  }
  return task;
}

KeyText Task::idempotency_key() const {
  if (!has_idempotency_key_) return KeyText();
  const char* at = reinterpret_cast<const char*>(this + 1) + payload_size_;
  if (key_packed_) return KeyText::FromPacked(reinterpret_cast<const unsigned char*>(at));
  uint16_t size;
  std::memcpy(&size, at, sizeof(size));
  return KeyText(absl::string_view(at + sizeof(size), size));
}

StoredKey Task::stored_key() const {
  if (!has_idempotency_key_) return StoredKey();
  const char* at = reinterpret_cast<const char*>(this + 1) + payload_size_;
  StoredKey k;
  if (key_packed_) {
    k.packed_ = true;
    std::memcpy(k.packed_bytes_, at, kPackedKeyBytes);
    return k;
  }
  uint16_t size;
  std::memcpy(&size, at, sizeof(size));
  k.raw_ = absl::string_view(at + sizeof(size), size);
  return k;
}

size_t Task::RecordBytes() const {
  return sizeof(Task) + payload_size_ + InlineKeyBytes(stored_key());
}

void Task::Destroy(Task* task) {
  if (task == nullptr) return;
  const size_t bytes = task->RecordBytes();
  task->~Task();
  RecordPool::Free(task, bytes);
}

}  // namespace conveyor::server
static_assert(sizeof(conveyor::server::Task) <= 56, "the task record must stay compact (DESIGN: < 200 bytes per queued task)");
