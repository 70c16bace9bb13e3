// Map: one task type over many items, as one group (see Client::Map in
// client/client.h). This header holds only the plain types Map takes and
// returns, so that code building them (the CLI's flag parsing) needs no
// Client or channel.
//
//   conveyor::client::MapOptions options;
//   options.queue = "thumbnails";
//   options.type = "resize";
//   options.on_progress = [](const MapProgress& p) { ... p.ended, p.total ... };
//   absl::StatusOr<MapResult> r = client.Map({"a.jpg", "b.jpg"}, options);
//   // r->items[i] is the outcome of item i, whatever order the tasks ended in.
//
// Thread-safety: plain values; MapMemberSpec is a pure function.
#ifndef CONVEYOR_CLIENT_MAP_H_
#define CONVEYOR_CLIENT_MAP_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "conveyor/v1/conveyor.pb.h"

namespace conveyor::client {

namespace v1 = ::conveyor::v1;

// Where a map stands, reported while it runs.
struct MapProgress {
  std::string group_id;
  v1::GroupState state = v1::GROUP_STATE_UNSPECIFIED;
  uint32_t total = 0;
  uint32_t ended = 0;
  // Members that ended DEAD, CANCELED or EXPIRED (FALLBACK is a success).
  uint32_t failures = 0;
};

struct MapOptions {
  // Every item becomes one task of `type` on `queue` (both required), its
  // payload the item's bytes.
  std::string queue;
  std::string type;
  // 0-9, higher first.
  uint32_t priority = 0;
  // Bound on each attempt; zero: the queue's default.
  absl::Duration timeout = absl::ZeroDuration();
  // Attempts in all per item; unset: the queue's.
  std::optional<uint32_t> max_attempts;
  // When set, an item whose attempts run out ends FALLBACK with this result.
  std::optional<std::string> fallback_result;
  // Bound on the whole map (submit, watch, reading results), counted from
  // the call; a map still running then fails with DEADLINE_EXCEEDED (its
  // tasks keep running: the group id is in the message). Infinite: none.
  absl::Duration deadline = absl::InfiniteDuration();
  // The group's idempotency key; empty: a random one. Calling Map again with
  // the same key and the same items, while the broker keeps the group,
  // follows the original group instead of submitting a second one.
  std::string idempotency_key;
  // Members read per GetGroup page, 1 to 10,000. Halved on its own when a
  // page of results is larger than the channel accepts.
  uint32_t page_size = 10000;
  // Called once the group is submitted, on every change the broker reports,
  // and once at the end; from the calling thread. May be empty.
  std::function<void(const MapProgress&)> on_progress;
};

// A group's counters as Map reports them.
inline MapProgress GroupProgress(const v1::Group& group) {
  MapProgress progress;
  progress.group_id = group.id();
  progress.state = group.state();
  progress.total = group.total();
  progress.ended = group.ended();
  progress.failures = group.dead() + group.canceled() + group.expired();
  return progress;
}

// The outcome of one item.
struct MapItem {
  std::string task_id;
  // Its end state (normally terminal; a member of a canceled group may still
  // be RUNNING, its cancel pending).
  v1::TaskState state = v1::TASK_STATE_UNSPECIFIED;
  // Of a SUCCEEDED or FALLBACK item.
  std::string result;
  // Of any other.
  std::string error;

  // SUCCEEDED or FALLBACK.
  bool ok() const {
    return state == v1::TASK_STATE_SUCCEEDED || state == v1::TASK_STATE_FALLBACK;
  }
};

struct MapResult {
  // Empty when there were no items (nothing was submitted).
  std::string group_id;
  // The group at the end (counters, state, callback).
  v1::Group group;
  // One per item, in input order.
  std::vector<MapItem> items;
  // Items that are not ok().
  uint32_t failures = 0;
};

// The TaskSpec of one map item: `payload` with the options' queue, type,
// priority, timeout, max attempts and fallback. No idempotency key (group
// members may not carry one: the group's key covers them).
inline v1::TaskSpec MapMemberSpec(const MapOptions& options, std::string payload) {
  v1::TaskSpec spec;
  spec.set_queue(options.queue);
  spec.set_type(options.type);
  spec.set_payload(std::move(payload));
  spec.set_priority(options.priority);
  if (options.timeout > absl::ZeroDuration()) ToProto(options.timeout, spec.mutable_timeout());
  if (options.max_attempts.has_value()) {
    spec.mutable_retry()->set_max_attempts(*options.max_attempts);
  }
  if (options.fallback_result.has_value()) spec.set_fallback_result(*options.fallback_result);
  return spec;
}

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_MAP_H_
