#include "server/queue.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/ready_fifos.h"

namespace conveyor::server {
namespace {

bool ValidQueueChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
}

absl::Status Bad(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

}  // namespace

absl::Status ValidateQueueName(absl::string_view name) {
  if (name.empty()) return Bad("queue", "is empty; name a queue");
  if (name.size() > 128) {
    return Bad("queue", absl::StrCat("is ", name.size(),
                                     " characters; at most 128 are allowed"));
  }
  bool first_ok = (name[0] >= 'a' && name[0] <= 'z') ||
                  (name[0] >= 'A' && name[0] <= 'Z') ||
                  (name[0] >= '0' && name[0] <= '9');
  if (!first_ok || !std::all_of(name.begin(), name.end(), ValidQueueChar)) {
    return Bad("queue", absl::StrCat("\"", absl::CHexEscape(name),
                                     "\" is malformed: use [A-Za-z0-9._:-], "
                                     "starting with a letter or digit"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRetryPolicy(const RetryPolicy& r, absl::string_view field) {
  if (r.max_attempts < 1 || r.max_attempts > 1000) {
    return Bad(absl::StrCat(field, ".max_attempts"),
               absl::StrCat("is ", r.max_attempts, "; must be 1 to 1000"));
  }
  if (r.initial_backoff < absl::ZeroDuration() ||
      r.initial_backoff > absl::Hours(24 * 7)) {
    return Bad(absl::StrCat(field, ".initial_backoff"),
               absl::StrCat("is ", absl::FormatDuration(r.initial_backoff),
                            "; must be 0 to 168h"));
  }
  if (r.max_backoff < r.initial_backoff || r.max_backoff > absl::Hours(24 * 7)) {
    return Bad(absl::StrCat(field, ".max_backoff"),
               absl::StrCat("is ", absl::FormatDuration(r.max_backoff),
                            "; must be at least initial_backoff (",
                            absl::FormatDuration(r.initial_backoff),
                            ") and at most 168h"));
  }
  if (!(r.multiplier >= 1.0 && r.multiplier <= 100.0)) {
    return Bad(absl::StrCat(field, ".multiplier"),
               absl::StrCat("is ", r.multiplier, "; must be 1 to 100"));
  }
  if (!(r.jitter >= 0.0 && r.jitter <= 1.0)) {
    return Bad(absl::StrCat(field, ".jitter"),
               absl::StrCat("is ", r.jitter, "; must be 0 to 1"));
  }
  return absl::OkStatus();
}

absl::Status ValidateQueueConfig(const QueueConfig& c) {
  if (absl::Status s = ValidateQueueName(c.name); !s.ok()) return s;
  if (c.capacity < 1 || c.capacity > 100'000'000) {
    return Bad("capacity", absl::StrCat("is ", c.capacity,
                                        "; must be 1 to 100000000"));
  }
  if (absl::Status s = ValidateRetryPolicy(c.retry, "retry"); !s.ok()) return s;
  if (c.default_timeout < absl::Seconds(1) || c.default_timeout > absl::Hours(24 * 7)) {
    return Bad("default_timeout",
               absl::StrCat("is ", absl::FormatDuration(c.default_timeout),
                            "; must be 1s to 168h"));
  }
  if (c.lease_duration < absl::Seconds(1) || c.lease_duration > absl::Hours(1)) {
    return Bad("lease_duration",
               absl::StrCat("is ", absl::FormatDuration(c.lease_duration),
                            "; must be 1s to 1h"));
  }
  if (c.max_crashes < 1 || c.max_crashes > 100) {
    return Bad("max_crashes",
               absl::StrCat("is ", c.max_crashes, "; must be 1 to 100"));
  }
  if (c.result_ttl < absl::ZeroDuration() || c.result_ttl > absl::Hours(24 * 90)) {
    return Bad("result_ttl",
               absl::StrCat("is ", absl::FormatDuration(c.result_ttl),
                            "; must be 0 to 2160h (90 days)"));
  }
  if (absl::Status s = ValidateLimits(c.limits); !s.ok()) return s;
  if (c.retained > 100'000'000) {
    return Bad("retained",
               absl::StrCat("is ", c.retained, "; must be at most 100000000"));
  }
  return absl::OkStatus();
}

const char* WaitReasonName(WaitReason reason) {
  switch (reason) {
    case WaitReason::kNotWaiting: return "not_waiting";
    case WaitReason::kNone: return "none";
    case WaitReason::kPaused: return "paused";
    case WaitReason::kRateLimited: return "rate_limited";
    case WaitReason::kConcurrencyFull: return "concurrency_full";
    case WaitReason::kNotDue: return "not_due";
    case WaitReason::kNoWorker: return "no_worker";
  }
  return "unknown";
}

uint64_t Queue::active() const {
  return count(TaskState::kScheduled) + count(TaskState::kReady) +
         count(TaskState::kRunning);
}

// ───────────────────────────── lanes ─────────────────────────────

namespace {

std::string Quote(absl::string_view key) { return absl::StrCat("\"", absl::CHexEscape(key), "\""); }

}  // namespace

// A lane's place in line: (priority | turn), then its head, then identity.
struct LaneOrder {
  uint64_t primary = 0;
  uint64_t head = 0;
  const void* lane = nullptr;
  friend bool operator==(const LaneOrder&, const LaneOrder&) = default;
  friend bool operator<(const LaneOrder& a, const LaneOrder& b) {
    if (a.primary != b.primary) return a.primary < b.primary;
    if (a.head != b.head) return a.head < b.head;
    return std::less<const void*>()(a.lane, b.lane);
  }
};

struct Queue::Lane {
  enum class At : uint8_t { kNowhere, kEligible, kRateWait, kPoolWait };
  uint32_t type_id = 0;
  std::string rate_key;
  std::string conc_key;
  std::string map_key;
  ReadyFifos entries;
  uint64_t ready = 0;  // READY tasks in the lane (exact; `entries` may hold stale ones)
  uint64_t turn = 0;   // keyed lanes: the seq at which it was last served
  At at = At::kNowhere;
  LaneOrder order;     // its key in the set it sits in
  bool keyed() const { return !rate_key.empty() || !conc_key.empty(); }
};

struct Queue::RateKey {
  std::optional<TokenBucket> bucket;
  absl::Time throttled_until = absl::InfinitePast();
  std::vector<Lane*> waiting;                  // lanes set aside on this key
  absl::Time wake_at = absl::InfinitePast();   // pending wake entry (InfinitePast: none)
  uint32_t lanes = 0;
};

struct Queue::Pool {
  uint32_t running = 0;
  absl::btree_set<LaneOrder> waiting;  // lanes set aside on this key, best first
  uint32_t lanes = 0;
};

struct Queue::Impl {
  ReadyResolver resolve;
  absl::flat_hash_map<std::string, std::unique_ptr<Lane>> lanes;
  absl::flat_hash_map<uint32_t, absl::btree_set<LaneOrder>> eligible;  // by type
  absl::node_hash_map<std::string, RateKey> rate_keys;
  absl::node_hash_map<std::string, Pool> pools;
  std::vector<std::pair<int64_t, std::string>> wakes;  // min-heap: (when µs, rate key)
  std::optional<TokenBucket> bucket;                    // the queue's rate
  absl::Time throttled_until = absl::InfinitePast();
  size_t grants_since_sweep = 0;
};

namespace {

const std::string& RateKeyOf(const Task& t) {
  static const std::string* const kEmpty = new std::string();
  return t.extra() != nullptr ? t.extra()->rate_key : *kEmpty;
}
const std::string& ConcKeyOf(const Task& t) {
  static const std::string* const kEmpty = new std::string();
  return t.extra() != nullptr ? t.extra()->concurrency_key : *kEmpty;
}

std::string LaneKey(uint32_t type_id, absl::string_view rate_key, absl::string_view conc_key) {
  std::string k;
  k.reserve(5 + rate_key.size() + conc_key.size());
  k.append(reinterpret_cast<const char*>(&type_id), sizeof(type_id));
  k.push_back(static_cast<char>(rate_key.size()));  // keys are at most 128 bytes
  k.append(rate_key.data(), rate_key.size());
  k.append(conc_key.data(), conc_key.size());
  return k;
}

}  // namespace

Queue::Queue(QueueConfig config, ReadyResolver resolve)
    : config_(std::move(config)), impl_(std::make_unique<Impl>()) {
  impl_->resolve = std::move(resolve);
}
Queue::~Queue() = default;

namespace {

// The task at the front of `lane`, after dropping the stale entries before
// it; null if the lane holds only stale entries.
template <typename Impl, typename LaneT>
Task* FrontOf(const Impl& impl, LaneT& lane) {
  while (!lane.entries.empty()) {
    if (Task* task = impl.resolve(lane.entries.front())) return task;
    lane.entries.PopFront();
  }
  return nullptr;
}

// The order of `lane`, whose front task is `front`.
template <typename LaneT>
LaneOrder OrderOf(const LaneT& lane, const Task& front) {
  const uint64_t head = ReadyKey(front.priority, front.ready_seq);
  const uint64_t seq = head & kReadySeqMask;
  const uint64_t turn = lane.keyed() ? std::max(seq, lane.turn & kReadySeqMask) : seq;
  return LaneOrder{(head & ~kReadySeqMask) | turn, head, &lane};
}

}  // namespace

// Helpers that need the private types; members of no class to keep the
// header small.
namespace {

template <typename Impl, typename Lane>
void Erase(Impl& impl, Lane* lane) {
  using At = typename Lane::At;
  switch (lane->at) {
    case At::kNowhere:
      break;
    case At::kEligible: {
      auto it = impl.eligible.find(lane->type_id);
      if (it != impl.eligible.end()) it->second.erase(lane->order);
      break;
    }
    case At::kPoolWait: {
      auto it = impl.pools.find(lane->conc_key);
      if (it != impl.pools.end()) it->second.waiting.erase(lane->order);
      break;
    }
    case At::kRateWait: {
      auto it = impl.rate_keys.find(lane->rate_key);
      if (it != impl.rate_keys.end()) {
        auto& v = it->second.waiting;
        v.erase(std::remove(v.begin(), v.end(), lane), v.end());
      }
      break;
    }
  }
  lane->at = At::kNowhere;
}

template <typename Impl, typename Lane>
void Place(Impl& impl, Lane* lane) {
  const Task* front = FrontOf(impl, *lane);
  if (front == nullptr) return;
  lane->order = OrderOf(*lane, *front);
  impl.eligible[lane->type_id].insert(lane->order);
  lane->at = Lane::At::kEligible;
}

// After the lane's head changed: moves it within the ordered set it is in.
template <typename Impl, typename Lane>
void Reposition(Impl& impl, Lane* lane) {
  using At = typename Lane::At;
  if (lane->at == At::kEligible || lane->at == At::kPoolWait) {
    const At at = lane->at;
    Erase(impl, lane);
    // A lane left with no live entry stays out: LeftReady removes it.
    if (at == At::kEligible) {
      Place(impl, lane);
      return;
    }
    const Task* front = FrontOf(impl, *lane);
    if (front == nullptr) return;
    lane->order = OrderOf(*lane, *front);
    impl.pools[lane->conc_key].waiting.insert(lane->order);
    lane->at = At::kPoolWait;
  }
}

}  // namespace

void Queue::PushReady(const Task& task) {
  const std::string& rk = RateKeyOf(task);
  const std::string& ck = ConcKeyOf(task);
  std::string map_key = LaneKey(task.type_id(), rk, ck);
  auto [it, inserted] = impl_->lanes.try_emplace(map_key);
  if (inserted) {
    it->second = std::make_unique<Lane>();
    Lane& l = *it->second;
    l.type_id = task.type_id();
    l.rate_key = rk;
    l.conc_key = ck;
    l.map_key = std::move(map_key);
    if (!rk.empty()) ++impl_->rate_keys[rk].lanes;
    if (!ck.empty()) ++impl_->pools[ck].lanes;
  }
  Lane* lane = it->second.get();
  lane->entries.Push(task.priority, task.id().value());
  const bool new_front = lane->entries.front() == task.id().value();
  ++lane->ready;
  if (lane->at == Lane::At::kNowhere) {
    Place(*impl_, lane);
  } else if (new_front) {
    Reposition(*impl_, lane);
  }
}

absl::Time Queue::RateReadyAt(absl::string_view key, absl::Time now) {
  RateKey& rk = impl_->rate_keys[key];
  std::optional<RateLimit> rate = config_.limits.RateOf(key);
  if (rate && !rk.bucket) rk.bucket.emplace(*rate, now);
  if (!rate && rk.bucket) rk.bucket.reset();
  absl::Time at = rk.bucket ? rk.bucket->ReadyAt(now) : now;
  return std::max(at, rk.throttled_until);
}

bool Queue::PoolFull(absl::string_view key) const {
  const uint32_t size = config_.limits.PoolOf(key);
  if (size == 0) return false;
  auto it = impl_->pools.find(key);
  return it != impl_->pools.end() && it->second.running >= size;
}

void Queue::WakeOnePoolWaiter(absl::string_view key) {
  if (key.empty()) return;
  auto it = impl_->pools.find(key);
  if (it == impl_->pools.end() || it->second.waiting.empty() || PoolFull(key)) return;
  Lane* lane = static_cast<Lane*>(const_cast<void*>(it->second.waiting.begin()->lane));
  it->second.waiting.erase(it->second.waiting.begin());
  lane->at = Lane::At::kNowhere;
  Place(*impl_, lane);
}

void Queue::SetAsideOnRate(Lane* lane, absl::Time at) {
  RateKey& rk = impl_->rate_keys[lane->rate_key];
  rk.waiting.push_back(lane);
  lane->at = Lane::At::kRateWait;
  if (rk.wake_at == absl::InfinitePast() || at < rk.wake_at) {
    rk.wake_at = at;
    impl_->wakes.emplace_back(absl::ToUnixMicros(at), lane->rate_key);
    std::push_heap(impl_->wakes.begin(), impl_->wakes.end(), std::greater<>());
  }
}

Task* Queue::PeekReady(const std::vector<uint32_t>& types, absl::Time now, uint64_t* key) {
  Task* best = nullptr;
  LaneOrder best_order;
  auto consider = [&](absl::btree_set<LaneOrder>& set) {
    while (!set.empty()) {
      const LaneOrder o = *set.begin();
      Lane* lane = static_cast<Lane*>(const_cast<void*>(o.lane));
      Task* front = FrontOf(*impl_, *lane);
      if (front == nullptr) {  // only stale entries: LeftReady removes the lane
        set.erase(set.begin());
        lane->at = Lane::At::kNowhere;
        continue;
      }
      if (LaneOrder fresh = OrderOf(*lane, *front); !(fresh == o)) {
        set.erase(set.begin());
        lane->order = fresh;
        set.insert(fresh);
        continue;
      }
      if (!lane->rate_key.empty()) {
        const absl::Time at = RateReadyAt(lane->rate_key, now);
        if (at > now) {
          set.erase(set.begin());
          SetAsideOnRate(lane, at);
          // It would have used a free slot of its pool: let another lane try.
          WakeOnePoolWaiter(lane->conc_key);
          continue;
        }
      }
      if (!lane->conc_key.empty() && PoolFull(lane->conc_key)) {
        set.erase(set.begin());
        impl_->pools[lane->conc_key].waiting.insert(lane->order);
        lane->at = Lane::At::kPoolWait;
        continue;
      }
      if (best == nullptr || o < best_order) {
        best = front;
        best_order = o;
      }
      return;
    }
  };
  if (types.empty()) {
    for (auto& [type, set] : impl_->eligible) consider(set);
  } else {
    for (uint32_t type : types) {
      auto it = impl_->eligible.find(type);
      if (it != impl_->eligible.end()) consider(it->second);
    }
  }
  if (key != nullptr) *key = best_order.primary;
  return best;
}

void Queue::TakeReady(const Task& task, absl::Time now, uint64_t turn) {
  auto it = impl_->lanes.find(LaneKey(task.type_id(), RateKeyOf(task), ConcKeyOf(task)));
  if (it == impl_->lanes.end()) return;
  Lane* lane = it->second.get();
  ReadyFifos& entries = lane->entries;
  if (!entries.empty() && entries.front() == task.id().value()) {
    entries.PopFront();
  } else {
    RemoveReady(task);
  }
  if (lane->keyed()) lane->turn = turn;
  Reposition(*impl_, lane);
  if (impl_->bucket) impl_->bucket->Take(now);
  if (!lane->rate_key.empty()) {
    RateKey& rk = impl_->rate_keys[lane->rate_key];
    if (rk.bucket) rk.bucket->Take(now);
  }
  if (++impl_->grants_since_sweep > 64 + impl_->rate_keys.size() + impl_->pools.size()) {
    Sweep(now);
  }
}

void Queue::RemoveReady(const Task& task) {
  auto it = impl_->lanes.find(LaneKey(task.type_id(), RateKeyOf(task), ConcKeyOf(task)));
  if (it == impl_->lanes.end()) return;
  Lane* lane = it->second.get();
  ReadyFifos& entries = lane->entries;
  const bool was_front = !entries.empty() && entries.front() == task.id().value();
  if (!entries.Erase(task.id().value())) return;
  if (was_front) Reposition(*impl_, lane);
}

void Queue::LeftReady(const Task& task) {
  auto it = impl_->lanes.find(LaneKey(task.type_id(), RateKeyOf(task), ConcKeyOf(task)));
  if (it == impl_->lanes.end()) return;
  Lane* lane = it->second.get();
  if (lane->ready > 0) --lane->ready;
  if (lane->ready > 0) return;
  Erase(*impl_, lane);
  const std::string conc_key = lane->conc_key;
  if (!lane->rate_key.empty()) {
    if (auto rk = impl_->rate_keys.find(lane->rate_key); rk != impl_->rate_keys.end()) {
      --rk->second.lanes;
    }
  }
  if (!conc_key.empty()) {
    if (auto p = impl_->pools.find(conc_key); p != impl_->pools.end()) --p->second.lanes;
  }
  impl_->lanes.erase(it);
  if (!conc_key.empty()) {
    WakeOnePoolWaiter(conc_key);
    ForgetPoolIfIdle(conc_key);
  }
}

void Queue::ForgetPoolIfIdle(absl::string_view key) {
  auto it = impl_->pools.find(key);
  if (it != impl_->pools.end() && it->second.running == 0 && it->second.lanes == 0 &&
      it->second.waiting.empty()) {
    impl_->pools.erase(it);
  }
}

void Queue::Sweep(absl::Time now) {
  impl_->grants_since_sweep = 0;
  for (auto it = impl_->rate_keys.begin(); it != impl_->rate_keys.end();) {
    RateKey& rk = it->second;
    if (rk.lanes == 0 && rk.waiting.empty() && rk.throttled_until <= now &&
        (!rk.bucket || rk.bucket->Full(now))) {
      impl_->rate_keys.erase(it++);
    } else {
      ++it;
    }
  }
  for (auto it = impl_->pools.begin(); it != impl_->pools.end();) {
    if (it->second.running == 0 && it->second.lanes == 0 && it->second.waiting.empty()) {
      impl_->pools.erase(it++);
    } else {
      ++it;
    }
  }
}

uint64_t Queue::OldestReadySeq() const {
  auto live_seq = [this](uint64_t id) -> uint64_t {
    const Task* task = impl_->resolve(id);
    return task != nullptr ? task->ready_seq : 0;
  };
  uint64_t oldest = 0;
  for (const auto& [k, lane] : impl_->lanes) {
    const uint64_t seq = lane->entries.OldestLiveSeq(live_seq);
    if (seq != 0 && (oldest == 0 || seq < oldest)) oldest = seq;
  }
  return oldest;
}

size_t Queue::lane_count() const { return impl_->lanes.size(); }

// ───────────────────────────── limits ─────────────────────────────

void Queue::SetConfig(QueueConfig config, absl::Time now) {
  config_ = std::move(config);
  if (config_.limits.rate) {
    if (impl_->bucket) {
      impl_->bucket->SetRate(*config_.limits.rate, now);
    } else {
      impl_->bucket.emplace(*config_.limits.rate, now);
    }
  } else {
    impl_->bucket.reset();
  }
  for (auto& [key, rk] : impl_->rate_keys) {
    std::optional<RateLimit> rate = config_.limits.RateOf(key);
    if (!rate) {
      rk.bucket.reset();
    } else if (rk.bucket) {
      rk.bucket->SetRate(*rate, now);
    }
    for (Lane* lane : rk.waiting) {
      lane->at = Lane::At::kNowhere;
      Place(*impl_, lane);
    }
    rk.waiting.clear();
    rk.wake_at = absl::InfinitePast();
  }
  impl_->wakes.clear();
  for (auto& [key, pool] : impl_->pools) {
    std::vector<LaneOrder> waiting(pool.waiting.begin(), pool.waiting.end());
    pool.waiting.clear();
    for (const LaneOrder& o : waiting) {
      Lane* lane = static_cast<Lane*>(const_cast<void*>(o.lane));
      lane->at = Lane::At::kNowhere;
      Place(*impl_, lane);
    }
  }
}

bool Queue::Open(absl::Time now, WaitReason* why, absl::Time* until, std::string* detail) {
  auto closed = [&](WaitReason r, absl::Time t, std::string d) {
    if (why != nullptr) *why = r;
    if (until != nullptr) *until = t;
    if (detail != nullptr) *detail = std::move(d);
    return false;
  };
  if (paused) return closed(WaitReason::kPaused, absl::InfinitePast(), "the queue is paused");
  if (impl_->throttled_until > now) {
    return closed(WaitReason::kRateLimited, impl_->throttled_until,
                  absl::StrCat("a handler throttled the queue until ",
                               FormatMillis(impl_->throttled_until)));
  }
  if (config_.limits.rate) {
    if (!impl_->bucket) impl_->bucket.emplace(*config_.limits.rate, now);
    const absl::Time at = impl_->bucket->ReadyAt(now);
    if (at > now) {
      return closed(WaitReason::kRateLimited, at,
                    absl::StrCat("the queue's rate (", FormatRate(*config_.limits.rate),
                                 ") has no token until ", FormatMillis(at)));
    }
  }
  if (config_.limits.max_running > 0 && count(TaskState::kRunning) >= config_.limits.max_running) {
    return closed(WaitReason::kConcurrencyFull, absl::InfinitePast(),
                  absl::StrCat("the queue runs ", count(TaskState::kRunning),
                               " tasks, its max_running"));
  }
  return true;
}

void Queue::SlotTaken(const Task& task) {
  const std::string& ck = ConcKeyOf(task);
  if (!ck.empty()) ++impl_->pools[ck].running;
}

void Queue::SlotFreed(const Task& task) {
  const std::string& ck = ConcKeyOf(task);
  if (ck.empty()) return;
  auto it = impl_->pools.find(ck);
  if (it == impl_->pools.end()) return;
  if (it->second.running > 0) --it->second.running;
  WakeOnePoolWaiter(ck);
  ForgetPoolIfIdle(ck);
}

void Queue::Throttle(absl::string_view rate_key, absl::Time until) {
  if (rate_key.empty()) {
    impl_->throttled_until = std::max(impl_->throttled_until, until);
    return;
  }
  RateKey& rk = impl_->rate_keys[rate_key];
  rk.throttled_until = std::max(rk.throttled_until, until);
}

WaitReason Queue::KeyWait(const Task& task, absl::Time now, absl::Time* until,
                          std::string* detail) {
  const std::string& rk = RateKeyOf(task);
  if (!rk.empty()) {
    const absl::Time at = RateReadyAt(rk, now);
    if (at > now) {
      *until = at;
      const RateKey& state = impl_->rate_keys[rk];
      if (state.throttled_until >= at) {
        *detail = absl::StrCat("a handler throttled rate key ", Quote(rk), " until ",
                               FormatMillis(at));
      } else {
        *detail = absl::StrCat("rate key ", Quote(rk), " (",
                               FormatRate(*config_.limits.RateOf(rk)),
                               ") has no token until ", FormatMillis(at));
      }
      return WaitReason::kRateLimited;
    }
  }
  const std::string& ck = ConcKeyOf(task);
  if (!ck.empty() && PoolFull(ck)) {
    *detail = absl::StrCat("concurrency key ", Quote(ck), " has all ",
                           config_.limits.PoolOf(ck), " slots in use");
    return WaitReason::kConcurrencyFull;
  }
  return WaitReason::kNone;
}

bool Queue::Wake(absl::Time now) {
  bool any = false;
  const int64_t now_us = absl::ToUnixMicros(now);
  auto& wakes = impl_->wakes;
  while (!wakes.empty() && wakes.front().first <= now_us) {
    std::pop_heap(wakes.begin(), wakes.end(), std::greater<>());
    std::string key = std::move(wakes.back().second);
    wakes.pop_back();
    auto it = impl_->rate_keys.find(key);
    if (it == impl_->rate_keys.end()) continue;
    RateKey& rk = it->second;
    rk.wake_at = absl::InfinitePast();
    if (rk.waiting.empty()) continue;
    const absl::Time at = RateReadyAt(key, now);
    if (at > now) {
      rk.wake_at = at;
      wakes.emplace_back(absl::ToUnixMicros(at), key);
      std::push_heap(wakes.begin(), wakes.end(), std::greater<>());
      continue;
    }
    for (Lane* lane : rk.waiting) {
      lane->at = Lane::At::kNowhere;
      Place(*impl_, lane);
    }
    rk.waiting.clear();
    any = true;
  }
  return any;
}

absl::Time Queue::NextWake(absl::Time now) {
  absl::Time next = absl::InfiniteFuture();
  if (!impl_->wakes.empty()) next = absl::FromUnixMicros(impl_->wakes.front().first);
  if (impl_->throttled_until > now) next = std::min(next, impl_->throttled_until);
  if (impl_->bucket) {
    const absl::Time at = impl_->bucket->ReadyAt(now);
    if (at > now) next = std::min(next, at);
  }
  return next;
}

void Queue::CountBlocked(absl::Time now, bool no_worker, std::array<uint64_t, 5>& out) {
  auto index = [](WaitReason r) {
    for (size_t i = 0; i < kBlockedReasons.size(); ++i) {
      if (kBlockedReasons[i] == r) return i;
    }
    return size_t{0};
  };
  const uint64_t ready = count(TaskState::kReady);
  if (ready == 0) return;
  WaitReason why = WaitReason::kNone;
  if (!Open(now, &why)) {
    out[index(why)] += ready;
    return;
  }
  for (auto& [k, lane] : impl_->lanes) {
    if (lane->ready == 0) continue;
    if (!lane->rate_key.empty() && RateReadyAt(lane->rate_key, now) > now) {
      out[index(WaitReason::kRateLimited)] += lane->ready;
    } else if (!lane->conc_key.empty() && PoolFull(lane->conc_key)) {
      out[index(WaitReason::kConcurrencyFull)] += lane->ready;
    } else if (no_worker) {
      out[index(WaitReason::kNoWorker)] += lane->ready;
    }
  }
}

}  // namespace conveyor::server
