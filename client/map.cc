// Client::FollowGroup and Client::Map: the workflow calls that outlast a
// broken stream or a broker restart. The rest of Client is in client.cc.
#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client.h"

namespace conveyor::client {
namespace {

// GetGroup's largest page (GetGroupRequest.member_limit).
constexpr uint32_t kMaxPageSize = 10000;

bool IsFinal(v1::GroupState state) {
  return state == v1::GROUP_STATE_DONE || state == v1::GROUP_STATE_CANCELED;
}

// Failures that a later call may not repeat: the broker restarting or
// draining (UNAVAILABLE, CANCELLED, a stream reset: INTERNAL, UNKNOWN,
// ABORTED), a call that ran out of its own time (DEADLINE_EXCEEDED; the
// overall deadline is checked apart) or a transient lack of resources.
// NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT, UNIMPLEMENTED and the
// like are the broker's answer, and final.
bool IsTransient(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

std::string Progress(const v1::Group& group) {
  return absl::StrCat(group.ended(), "/", group.total(), " ended");
}

absl::Status DeadlinePassed(absl::string_view id, const v1::Group* last,
                            absl::string_view doing) {
  return absl::DeadlineExceededError(absl::StrCat(
      "group ", id, ": the deadline passed while ", doing,
      last != nullptr ? absl::StrCat(" (", Progress(*last), ")") : std::string(),
      "; its tasks keep running"));
}

}  // namespace

absl::StatusOr<v1::Group> Client::FollowGroup(absl::string_view id,
                                              absl::FunctionRef<void(const v1::Group&)> on_change,
                                              absl::Duration deadline) {
  return FollowGroupUntil(id, on_change, absl::Now() + deadline);
}

absl::StatusOr<v1::Group> Client::FollowGroupUntil(
    absl::string_view id, absl::FunctionRef<void(const v1::Group&)> on_change,
    absl::Time deadline) {
  std::optional<v1::Group> last;
  auto seen = [&](const v1::Group& group) {
    last = group;
    on_change(group);
  };
  // Consecutive broken watches without news: the backoff grows with them.
  int breaks = 0;
  while (true) {
    bool news = false;
    absl::StatusOr<v1::Group> watched = WatchGroup(
        id,
        [&](const v1::Group& group) {
          news = true;
          seen(group);
          return true;
        },
        deadline - absl::Now());
    if (watched.ok() && IsFinal(watched->state())) return *watched;
    const absl::Status status =
        watched.ok() ? absl::UnavailableError("the broker closed the watch while the group runs")
                     : watched.status();
    if (absl::Now() >= deadline) {
      return DeadlinePassed(id, last.has_value() ? &*last : nullptr, "following it");
    }
    if (!IsTransient(status.code())) return status;
    breaks = news ? 1 : breaks + 1;
    // Back off, then ask for the state directly: the group may have ended
    // while the stream was down, or the broker may be back.
    const absl::Duration backoff = std::min(BackoffFor(breaks), deadline - absl::Now());
    absl::SleepFor(backoff);
    v1::GetGroupRequest request;
    request.set_id(std::string(id));
    absl::StatusOr<v1::Group> polled = GetGroupBefore(request, deadline);
    if (polled.ok()) {
      seen(*polled);
      if (IsFinal(polled->state())) return *polled;
    } else if (!IsTransient(polled.status().code())) {
      return polled.status();
    }
  }
}

absl::StatusOr<MapResult> Client::Map(const std::vector<std::string>& items,
                                      const MapOptions& options) {
  if (options.queue.empty()) return absl::InvalidArgumentError("map: the queue is required");
  if (options.type.empty()) return absl::InvalidArgumentError("map: the type is required");
  if (options.page_size < 1 || options.page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("map: page_size must be 1 to ", kMaxPageSize, ", got ", options.page_size));
  }
  MapResult out;
  if (items.empty()) return out;
  const absl::Time deadline = absl::Now() + options.deadline;
  auto report = [&](const v1::Group& group) {
    if (options.on_progress) options.on_progress(GroupProgress(group));
  };

  v1::SubmitGroupRequest request;
  request.mutable_tasks()->Reserve(static_cast<int>(items.size()));
  for (const std::string& item : items) *request.add_tasks() = MapMemberSpec(options, item);
  request.set_idempotency_key(options.idempotency_key);
  absl::StatusOr<v1::SubmitGroupResponse> submitted =
      SubmitGroupBefore(std::move(request), deadline);
  if (!submitted.ok()) return submitted.status();
  const std::string group_id = submitted->group().id();
  if ((submitted->group().total() != 0 && submitted->group().total() != items.size()) ||
      (submitted->task_ids_size() != 0 &&
       static_cast<size_t>(submitted->task_ids_size()) != items.size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "map: group ", group_id, " has ", submitted->group().total(), " members, not the ",
        items.size(), " items given",
        submitted->deduplicated() ? " (its idempotency key matched an earlier group)" : ""));
  }
  out.items.resize(items.size());
  for (int i = 0; i < submitted->task_ids_size(); ++i) {
    out.items[static_cast<size_t>(i)].task_id = submitted->task_ids(i);
  }
  report(submitted->group());

  absl::StatusOr<v1::Group> final_group = FollowGroupUntil(group_id, report, deadline);
  if (!final_group.ok()) return final_group.status();

  absl::StatusOr<v1::Group> read = ReadAllMembers(group_id, /*include_results=*/true,
                                                  options.page_size, deadline, /*persist=*/true);
  if (!read.ok()) return read.status();
  std::vector<bool> filled(items.size(), false);
  for (v1::GroupMember& member : *read->mutable_members()) {
    const size_t index = member.index();
    if (index >= items.size()) {
      return absl::InternalError(absl::StrCat("map: group ", group_id, " listed member ", index,
                                              " of ", items.size()));
    }
    MapItem& item = out.items[index];
    if (!member.task_id().empty()) item.task_id = member.task_id();
    item.state = member.state();
    item.result = std::move(*member.mutable_result());
    item.error = std::move(*member.mutable_error());
    filled[index] = true;
  }
  if (const auto missing = std::count(filled.begin(), filled.end(), false); missing > 0) {
    return absl::InternalError(
        absl::StrCat("map: group ", group_id, ": ", missing, " members were never listed"));
  }
  out.group_id = group_id;
  out.group = *std::move(final_group);
  for (const MapItem& item : out.items) {
    if (!item.ok()) ++out.failures;
  }
  report(out.group);
  return out;
}

absl::StatusOr<v1::Group> Client::GetGroupWithMembers(absl::string_view id,
                                                      bool include_results,
                                                      uint32_t page_size) {
  if (page_size < 1 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be 1 to ", kMaxPageSize, ", got ", page_size));
  }
  return ReadAllMembers(id, include_results, page_size, absl::InfiniteFuture(),
                        /*persist=*/false);
}

absl::StatusOr<v1::Group> Client::ReadAllMembers(absl::string_view id, bool include_results,
                                                 uint32_t page_size, absl::Time deadline,
                                                 bool persist) {
  v1::Group all;
  google::protobuf::RepeatedPtrField<v1::GroupMember> members;
  int breaks = 0;
  // The next member to read; the total is known from the first page.
  uint32_t offset = 0;
  bool first = true;
  while (first || offset < all.total()) {
    if (absl::Now() >= deadline) {
      return DeadlinePassed(id, nullptr,
                            absl::StrCat("reading its members (", offset, " read)"));
    }
    v1::GetGroupRequest request;
    request.set_id(std::string(id));
    request.set_include_members(true);
    request.set_include_results(include_results);
    request.set_member_offset(offset);
    request.set_member_limit(page_size);
    absl::StatusOr<v1::Group> page = GetGroupBefore(request, deadline);
    if (!page.ok()) {
      const absl::StatusCode code = page.status().code();
      // A page of large results can exceed what the channel accepts
      // (4 MiB by default): ask for fewer members at a time.
      if (code == absl::StatusCode::kResourceExhausted && page_size > 1) {
        page_size = std::max<uint32_t>(1, page_size / 2);
        continue;
      }
      if (!persist || !IsTransient(code)) return page.status();
      absl::SleepFor(std::min(BackoffFor(++breaks),
                              std::max(deadline - absl::Now(), absl::ZeroDuration())));
      continue;
    }
    breaks = 0;
    first = false;
    const int received = page->members_size();
    // Members come in order from the offset; a broker may cap a page below
    // the limit asked for, so the next page starts after the last received.
    if (received > 0) offset = std::max(offset + 1, page->members(received - 1).index() + 1);
    for (v1::GroupMember& member : *page->mutable_members()) *members.Add() = std::move(member);
    page->clear_members();
    all = *std::move(page);
    if (received == 0 && offset < all.total()) {
      return absl::InternalError(absl::StrCat("group ", id, " listed no members from offset ",
                                              offset, " of ", all.total()));
    }
  }
  all.mutable_members()->Swap(&members);
  return all;
}

}  // namespace conveyor::client
