#include "client/format.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/grpc_util.h"
#include "google/protobuf/util/json_util.h"

namespace conveyor::client {
namespace {

// "-" for an unset timestamp, RFC 3339 UTC to the second otherwise.
std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  const absl::Time t = FromProto(ts);
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// Whole milliseconds: live ages need no nanoseconds.
std::string FormatDuration(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Trunc(FromProto(d), absl::Milliseconds(1)));
}

std::string FormatPercent(double percent) {
  return absl::StrFormat("%.0f%%", std::clamp(percent, 0.0, 100.0));
}

// Escapes control characters only, leaving other UTF-8 text readable.
std::string EscapeControls(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (byte < 0x20 || byte == 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", byte);
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

// Cuts `text` to at most `max_chars` bytes on a UTF-8 boundary, adding "...".
std::string Truncate(std::string text, size_t max_chars) {
  if (text.size() <= max_chars) return text;
  size_t cut = max_chars;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
  text.resize(cut);
  text += "...";
  return text;
}

std::string OneLine(absl::string_view text, size_t max_chars) {
  return Truncate(EscapeControls(text), max_chars);
}

bool IsWhole(double x) { return std::fabs(x - std::round(x)) < 1e-6 * std::max(1.0, x); }

// "paused" for WAIT_REASON_PAUSED: the names of the blocked metric.
std::string WaitReasonLabel(v1::WaitReason reason) {
  std::string name = v1::WaitReason_Name(reason);
  constexpr absl::string_view kPrefix = "WAIT_REASON_";
  if (absl::StartsWith(name, kPrefix)) name.erase(0, kPrefix.size());
  if (name.empty()) return absl::StrCat(static_cast<int>(reason));
  return absl::AsciiStrToLower(name);
}

// The reasons of QueueStats.blocked in the order shown.
constexpr absl::string_view kBlockedOrder[] = {"paused", "rate_limited", "concurrency_full",
                                               "not_due", "no_worker"};

// An enum value's name without its prefix ("RUNNING" for
// GROUP_STATE_RUNNING); the number when the name is unknown.
std::string EnumLabel(const std::string& name, absl::string_view prefix, int number) {
  if (name.empty()) return absl::StrCat(number);
  if (absl::StartsWith(name, prefix)) return name.substr(prefix.size());
  return name;
}

// Results and errors in a table row are cut to this many characters.
constexpr size_t kTableCellChars = 200;

}  // namespace

std::string TaskStateName(v1::TaskState state) {
  std::string name = v1::TaskState_Name(state);
  constexpr absl::string_view kPrefix = "TASK_STATE_";
  if (absl::StartsWith(name, kPrefix)) name.erase(0, kPrefix.size());
  if (name.empty()) name = absl::StrCat(static_cast<int>(state));
  return name;
}

bool IsTerminal(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_SUCCEEDED:
    case v1::TASK_STATE_DEAD:
    case v1::TASK_STATE_CANCELED:
    case v1::TASK_STATE_EXPIRED:
    case v1::TASK_STATE_FALLBACK:
      return true;
    default:
      return false;
  }
}

bool IsSuccess(v1::TaskState state) {
  return state == v1::TASK_STATE_SUCCEEDED || state == v1::TASK_STATE_FALLBACK;
}

bool IsValidUtf8(absl::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    size_t len;
    uint32_t cp;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xe0) == 0xc0) {
      len = 2;
      cp = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      len = 3;
      cp = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      len = 4;
      cp = lead & 0x07;
    } else {
      return false;
    }
    if (i + len > bytes.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cont = static_cast<unsigned char>(bytes[i + k]);
      if ((cont & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cont & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF.
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

std::string DisplayBytes(absl::string_view bytes, size_t max_chars) {
  if (IsValidUtf8(bytes)) return OneLine(bytes, max_chars);
  return Truncate(
      absl::StrCat("<", bytes.size(), " bytes, not UTF-8> ", absl::BytesToHexString(bytes)),
      max_chars);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  google::protobuf::util::Status status =
      google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("JSON encoding: ", status.ToString()));
  }
  return out;
}

std::string FormatTask(const v1::Task& task) {
  std::string out;
  auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  line("id", task.id());
  line("queue", task.queue());
  line("type", task.type());
  line("state", TaskStateName(task.state()));
  if (task.cancel_requested()) line("cancel_requested", "true");
  line("priority", absl::StrCat(task.priority()));
  // `attempts` counts failed attempts; the attempt running (or the one that
  // succeeded) is the next one.
  if (task.state() == v1::TASK_STATE_RUNNING || task.state() == v1::TASK_STATE_SUCCEEDED) {
    line("attempt", absl::StrCat(task.attempts() + 1, "/", task.max_attempts()));
  }
  line("failures", absl::StrCat(task.attempts(), "/", task.max_attempts()));
  if (task.crashes() > 0) line("crashes", absl::StrCat(task.crashes()));
  std::string progress = FormatPercent(task.progress_percent());
  if (!task.progress_message().empty()) {
    absl::StrAppend(&progress, " ", OneLine(task.progress_message(), 256));
  }
  line("progress", progress);
  line("created", FormatTimestamp(task.created_at()));
  if (task.has_not_before()) line("not_before", FormatTimestamp(task.not_before()));
  if (task.has_expires_at()) line("expires_at", FormatTimestamp(task.expires_at()));
  if (task.has_started_at()) line("started", FormatTimestamp(task.started_at()));
  if (task.has_finished_at()) line("finished", FormatTimestamp(task.finished_at()));
  if (!task.worker_id().empty()) line("worker", task.worker_id());
  if (task.has_lease_expires_at() && task.state() == v1::TASK_STATE_RUNNING) {
    line("lease_expires", FormatTimestamp(task.lease_expires_at()));
  }
  if (task.has_timeout()) line("timeout", FormatDuration(task.timeout()));
  if (!task.idempotency_key().empty()) line("idempotency_key", task.idempotency_key());
  if (!task.rate_key().empty()) line("rate_key", OneLine(task.rate_key(), 128));
  if (!task.concurrency_key().empty()) line("concurrency_key", OneLine(task.concurrency_key(), 128));
  if (!task.group_id().empty()) line("group", task.group_id());
  if (!task.chain_id().empty()) {
    line("chain", absl::StrCat(task.chain_id(), " stage ", task.chain_stage()));
  }
  if (!task.schedule().empty()) line("schedule", OneLine(task.schedule(), 128));
  if ((task.state() == v1::TASK_STATE_SCHEDULED || task.state() == v1::TASK_STATE_READY) &&
      task.has_waiting() && task.waiting().reason() != v1::WAIT_REASON_UNSPECIFIED) {
    line("waiting", FormatWaiting(task.waiting()));
  }
  if (!task.headers().empty()) {
    std::vector<std::string> headers;
    for (const auto& [key, value] : task.headers()) {
      headers.push_back(absl::StrCat(OneLine(key, 128), "=", OneLine(value, 256)));
    }
    std::sort(headers.begin(), headers.end());
    line("headers", absl::StrJoin(headers, ", "));
  }
  line("payload", DisplayBytes(task.payload()));
  line("result", DisplayBytes(task.result(), 4096));
  line("error", OneLine(task.error(), 4096));
  return out;
}

std::string FormatRate(const v1::RateLimit& rate) {
  const double per_second = rate.per_second();
  std::string out;
  if (IsWhole(per_second * 1000) || per_second <= 0) {
    out = absl::StrFormat("%g/s", per_second);
  } else if (IsWhole(per_second * 60)) {
    out = absl::StrFormat("%g/m", std::round(per_second * 60));
  } else if (IsWhole(per_second * 3600)) {
    out = absl::StrFormat("%g/h", std::round(per_second * 3600));
  } else {
    out = absl::StrFormat("%g/s", per_second);
  }
  if (rate.burst() > 0) absl::StrAppend(&out, " burst ", rate.burst());
  return out;
}

std::string FormatWaiting(const v1::Waiting& waiting) {
  std::string out = WaitReasonLabel(waiting.reason());
  if (!waiting.key().empty()) absl::StrAppend(&out, " on key \"", OneLine(waiting.key(), 128), "\"");
  if (waiting.has_until()) absl::StrAppend(&out, " until ", FormatTimestamp(waiting.until()));
  if (!waiting.detail().empty()) absl::StrAppend(&out, " (", OneLine(waiting.detail(), 512), ")");
  return out;
}

std::string FormatLimits(const v1::Limits& limits) {
  std::string out;
  auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  // Map entries sorted by key: protobuf maps have no order.
  auto sorted = [](const auto& map, auto format) {
    std::vector<std::string> entries;
    for (const auto& [key, value] : map) {
      entries.push_back(absl::StrCat(OneLine(key, 128), "=", format(value)));
    }
    std::sort(entries.begin(), entries.end());
    return absl::StrJoin(entries, ", ");
  };
  if (limits.has_rate()) line("rate", FormatRate(limits.rate()));
  if (limits.max_running() > 0) line("max_running", absl::StrCat(limits.max_running()));
  if (limits.has_key_rate()) line("key_rate", FormatRate(limits.key_rate()));
  if (!limits.key_rates().empty()) {
    line("key_rates", sorted(limits.key_rates(), [](const v1::RateLimit& r) { return FormatRate(r); }));
  }
  if (limits.key_max_running() > 0) line("key_max_running", absl::StrCat(limits.key_max_running()));
  if (!limits.pools().empty()) {
    line("pools", sorted(limits.pools(), [](uint32_t n) { return absl::StrCat(n); }));
  }
  if (out.empty()) line("limits", "none");
  return out;
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const std::vector<std::string>& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const std::vector<std::string>& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string FormatTaskTable(const std::vector<v1::Task>& tasks) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "TYPE", "PRI", "FAILURES", "CREATED", "ERROR"}};
  for (const v1::Task& task : tasks) {
    rows.push_back({task.id(), TaskStateName(task.state()), OneLine(task.type(), 40),
                    absl::StrCat(task.priority()),
                    absl::StrCat(task.attempts(), "/", task.max_attempts()),
                    FormatTimestamp(task.created_at()), OneLine(task.error(), 60)});
  }
  return FormatTable(rows);
}

std::string FormatQueue(const v1::Queue& queue) {
  const v1::QueueConfig& c = queue.config();
  const v1::QueueStats& s = queue.stats();
  std::string out;
  auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  line("name", c.name());
  line("paused", queue.paused() ? "true" : "false");
  line("capacity", absl::StrCat(c.capacity()));
  line("full_policy", c.full_policy() == v1::FULL_POLICY_WAIT ? "wait" : "reject");
  line("max_attempts", absl::StrCat(c.retry().max_attempts()));
  line("initial_backoff", FormatDuration(c.retry().initial_backoff()));
  line("max_backoff", FormatDuration(c.retry().max_backoff()));
  line("multiplier", absl::StrCat(c.retry().multiplier()));
  line("jitter", c.retry().has_jitter() ? absl::StrCat(c.retry().jitter()) : "default");
  line("default_timeout", FormatDuration(c.default_timeout()));
  line("lease_duration", FormatDuration(c.lease_duration()));
  line("max_crashes", absl::StrCat(c.max_crashes()));
  line("result_ttl", FormatDuration(c.result_ttl()));
  line("retained", absl::StrCat(c.retained()));
  absl::StrAppend(&out, FormatLimits(c.limits()));
  line("scheduled", absl::StrCat(s.scheduled()));
  line("ready", absl::StrCat(s.ready()));
  line("running", absl::StrCat(s.running()));
  line("succeeded", absl::StrCat(s.succeeded()));
  line("dead", absl::StrCat(s.dead()));
  line("canceled", absl::StrCat(s.canceled()));
  line("expired", absl::StrCat(s.expired()));
  line("fallback", absl::StrCat(s.fallback()));
  line("oldest_ready_age", FormatDuration(s.oldest_ready_age()));
  line("waiting_workers", absl::StrCat(s.waiting_workers()));
  line("waiting_submits", absl::StrCat(s.waiting_submits()));
  // Known reasons in a fixed order, then any newer ones by name.
  std::vector<std::string> blocked;
  for (absl::string_view reason : kBlockedOrder) {
    auto it = s.blocked().find(std::string(reason));
    if (it != s.blocked().end() && it->second > 0) {
      blocked.push_back(absl::StrCat(reason, "=", it->second));
    }
  }
  std::vector<std::string> others;
  for (const auto& [reason, count] : s.blocked()) {
    if (count > 0 && std::find(std::begin(kBlockedOrder), std::end(kBlockedOrder), reason) ==
                         std::end(kBlockedOrder)) {
      others.push_back(absl::StrCat(OneLine(reason, 64), "=", count));
    }
  }
  std::sort(others.begin(), others.end());
  blocked.insert(blocked.end(), others.begin(), others.end());
  line("blocked", blocked.empty() ? "none" : absl::StrJoin(blocked, ", "));
  return out;
}

std::string FormatQueueTable(const std::vector<v1::Queue>& queues) {
  std::vector<std::vector<std::string>> rows = {{"NAME", "PAUSED", "CAPACITY", "SCHEDULED", "READY",
                                                 "RUNNING", "SUCCEEDED", "DEAD", "CANCELED",
                                                 "EXPIRED", "FALLBACK", "OLDEST_READY"}};
  for (const v1::Queue& q : queues) {
    const v1::QueueStats& s = q.stats();
    rows.push_back({q.config().name(), q.paused() ? "yes" : "no",
                    absl::StrCat(q.config().capacity()), absl::StrCat(s.scheduled()),
                    absl::StrCat(s.ready()), absl::StrCat(s.running()), absl::StrCat(s.succeeded()),
                    absl::StrCat(s.dead()), absl::StrCat(s.canceled()), absl::StrCat(s.expired()),
                    absl::StrCat(s.fallback()), FormatDuration(s.oldest_ready_age())});
  }
  return FormatTable(rows);
}

std::string FormatWatchLine(const v1::Task& task) {
  const bool on_attempt =
      task.state() == v1::TASK_STATE_RUNNING || task.state() == v1::TASK_STATE_SUCCEEDED;
  std::string out = absl::StrCat(task.id(), " ", TaskStateName(task.state()),
                                 on_attempt ? " attempt " : " failures ",
                                 task.attempts() + (on_attempt ? 1 : 0), "/", task.max_attempts());
  if (task.state() == v1::TASK_STATE_RUNNING || task.progress_percent() > 0) {
    absl::StrAppend(&out, " ", FormatPercent(task.progress_percent()));
  }
  if (!task.progress_message().empty()) {
    absl::StrAppend(&out, " ", OneLine(task.progress_message(), 200));
  }
  if (task.cancel_requested() && !IsTerminal(task.state())) {
    absl::StrAppend(&out, " (cancel requested)");
  }
  if (!task.error().empty()) absl::StrAppend(&out, " error: ", OneLine(task.error(), 200));
  return out;
}

std::string FormatProgressBar(const v1::Task& task, int width) {
  width = std::max(width, 1);
  double percent = std::clamp(task.progress_percent(), 0.0, 100.0);
  if (task.state() == v1::TASK_STATE_SUCCEEDED) percent = 100;
  const int filled = static_cast<int>(std::lround(percent * width / 100.0));
  std::string out = "[";
  out.append(filled, '#');
  out.append(width - filled, '.');
  absl::StrAppendFormat(&out, "] %4s %s", FormatPercent(percent), TaskStateName(task.state()));
  if (!task.progress_message().empty()) {
    absl::StrAppend(&out, " ", OneLine(task.progress_message(), 60));
  }
  return out;
}

// ─── workflows ───

std::string GroupStateName(v1::GroupState state) {
  return EnumLabel(v1::GroupState_Name(state), "GROUP_STATE_", static_cast<int>(state));
}

std::string ChainStateName(v1::ChainState state) {
  return EnumLabel(v1::ChainState_Name(state), "CHAIN_STATE_", static_cast<int>(state));
}

std::string MisfireName(v1::MisfirePolicy policy) {
  return policy == v1::MISFIRE_POLICY_RUN_ONCE ? "run-once" : "skip";
}

std::string FormatGroup(const v1::Group& group) {
  std::string out;
  auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  line("id", group.id());
  line("state", GroupStateName(group.state()));
  line("total", absl::StrCat(group.total()));
  line("ended", absl::StrCat(group.ended()));
  line("succeeded", absl::StrCat(group.succeeded()));
  line("fallback", absl::StrCat(group.fallback()));
  line("dead", absl::StrCat(group.dead()));
  line("canceled", absl::StrCat(group.canceled()));
  line("expired", absl::StrCat(group.expired()));
  line("failed", absl::StrCat(GroupProgress(group).failures));
  if (!group.callback_task_id().empty()) {
    line("callback", group.callback_task_id());
  } else {
    line("callback", group.has_callback() ? "not submitted yet" : "none");
  }
  line("created", FormatTimestamp(group.created_at()));
  if (group.has_finished_at()) line("finished", FormatTimestamp(group.finished_at()));
  if (!group.idempotency_key().empty()) line("idempotency_key", group.idempotency_key());
  return out;
}

std::string FormatGroupMembers(const std::vector<v1::GroupMember>& members, bool results) {
  std::vector<std::vector<std::string>> rows;
  if (results) {
    rows.push_back({"INDEX", "TASK", "STATE", "RESULT", "ERROR"});
  } else {
    rows.push_back({"INDEX", "TASK", "STATE"});
  }
  for (const v1::GroupMember& m : members) {
    std::vector<std::string> row = {absl::StrCat(m.index()), m.task_id(),
                                    TaskStateName(m.state())};
    if (results) {
      row.push_back(m.result().empty() ? "-" : DisplayBytes(m.result(), kTableCellChars));
      row.push_back(m.error().empty() ? "-" : OneLine(m.error(), kTableCellChars));
    }
    rows.push_back(std::move(row));
  }
  return FormatTable(rows);
}

std::string FormatGroupProgressBar(const MapProgress& progress, int width) {
  width = std::max(width, 1);
  const double percent =
      progress.total == 0 ? 100.0 : 100.0 * progress.ended / static_cast<double>(progress.total);
  const int filled = std::clamp(static_cast<int>(std::lround(percent * width / 100.0)), 0, width);
  std::string out = "[";
  out.append(filled, '#');
  out.append(width - filled, '.');
  absl::StrAppendFormat(&out, "] %4s %u/%u ended", FormatPercent(percent), progress.ended,
                        progress.total);
  if (progress.failures > 0) absl::StrAppend(&out, ", ", progress.failures, " failed");
  if (progress.state == v1::GROUP_STATE_CANCELED) absl::StrAppend(&out, " CANCELED");
  return out;
}

std::string FormatGroupProgressLine(const MapProgress& progress) {
  std::string out = absl::StrCat(progress.group_id, " ", GroupStateName(progress.state), " ",
                                 progress.ended, "/", progress.total, " ended");
  if (progress.failures > 0) absl::StrAppend(&out, ", ", progress.failures, " failed");
  return out;
}

std::string FormatMapItemLine(const MapItem& item) {
  if (!item.ok()) return "";
  absl::string_view result = item.result;
  if (absl::ConsumeSuffix(&result, "\n")) absl::ConsumeSuffix(&result, "\r");
  if (!IsValidUtf8(result)) {
    return absl::StrCat("<", result.size(), " bytes, not UTF-8> ", absl::BytesToHexString(result));
  }
  return EscapeControls(result);
}

std::string FormatMapItemError(size_t index, const MapItem& item) {
  std::string out = absl::StrCat("item ", index, " (task ", item.task_id.empty() ? "?" : item.task_id,
                                 ") ended ", TaskStateName(item.state));
  if (!item.error.empty()) absl::StrAppend(&out, ": ", OneLine(item.error, 4096));
  return out;
}

v1::GroupMember MapItemMessage(size_t index, const MapItem& item) {
  v1::GroupMember member;
  member.set_index(static_cast<uint32_t>(index));
  member.set_task_id(item.task_id);
  member.set_state(item.state);
  member.set_result(item.result);
  member.set_error(item.error);
  return member;
}

std::string FormatChain(const v1::Chain& chain) {
  std::string out;
  auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  line("id", chain.id());
  line("state", ChainStateName(chain.state()));
  line("stages", absl::StrCat(chain.stages()));
  line("current_stage", absl::StrCat(chain.current_stage()));
  line("result", DisplayBytes(chain.result(), 4096));
  line("error", OneLine(chain.error(), 4096));
  line("created", FormatTimestamp(chain.created_at()));
  if (chain.has_finished_at()) line("finished", FormatTimestamp(chain.finished_at()));
  std::vector<std::vector<std::string>> rows = {{"STAGE", "QUEUE", "TYPE", "TASK", "STATE", "ERROR"}};
  for (const v1::Chain::Stage& stage : chain.stage_list()) {
    rows.push_back({absl::StrCat(stage.index()), OneLine(stage.queue(), 64),
                    OneLine(stage.type(), 64), stage.task_id().empty() ? "-" : stage.task_id(),
                    stage.state() == v1::TASK_STATE_UNSPECIFIED ? "-" : TaskStateName(stage.state()),
                    stage.error().empty() ? "-" : OneLine(stage.error(), kTableCellChars)});
  }
  absl::StrAppend(&out, "\n", FormatTable(rows));
  return out;
}

std::string FormatChainLine(const v1::Chain& chain) {
  std::string out = absl::StrCat("chain ", chain.id(), " stage ", chain.current_stage() + 1, "/",
                                 chain.stages());
  for (const v1::Chain::Stage& stage : chain.stage_list()) {
    if (stage.index() != chain.current_stage()) continue;
    absl::StrAppend(&out, " (", OneLine(stage.queue(), 64), "/", OneLine(stage.type(), 64), ") ",
                    stage.state() == v1::TASK_STATE_UNSPECIFIED ? "PENDING"
                                                                : TaskStateName(stage.state()));
  }
  if (chain.state() != v1::CHAIN_STATE_RUNNING) {
    absl::StrAppend(&out, " chain ", ChainStateName(chain.state()));
  }
  return out;
}

std::string FormatSchedule(const v1::Schedule& schedule) {
  std::string out;
  auto line = [&out](absl::string_view key, absl::string_view value) {
    absl::StrAppend(&out, key, ": ", value, "\n");
  };
  const v1::TaskSpec& task = schedule.task();
  line("name", schedule.name());
  line("cron", OneLine(schedule.cron(), 256));
  line("time_zone", schedule.time_zone().empty() ? "UTC" : OneLine(schedule.time_zone(), 128));
  line("misfire", MisfireName(schedule.misfire()));
  line("paused", schedule.paused() ? "true" : "false");
  line("queue", task.queue());
  line("type", OneLine(task.type(), 128));
  line("priority", absl::StrCat(task.priority()));
  line("payload", DisplayBytes(task.payload()));
  if (task.then_size() > 0) {
    std::vector<std::string> stages;
    for (const v1::TaskSpec& stage : task.then()) {
      stages.push_back(absl::StrCat(OneLine(stage.queue(), 64), "/", OneLine(stage.type(), 64)));
    }
    line("then", absl::StrJoin(stages, " -> "));
  }
  line("created", FormatTimestamp(schedule.created_at()));
  line("next_run", schedule.paused() ? "- (paused)" : FormatTimestamp(schedule.next_run_at()));
  line("last_run", FormatTimestamp(schedule.last_run_at()));
  line("last_task", schedule.last_task_id().empty() ? "-" : schedule.last_task_id());
  line("runs", absl::StrCat(schedule.runs()));
  line("missed", absl::StrCat(schedule.missed()));
  if (!schedule.last_error().empty()) line("last_error", OneLine(schedule.last_error(), 4096));
  return out;
}

std::string FormatScheduleTable(const std::vector<v1::Schedule>& schedules) {
  std::vector<std::vector<std::string>> rows = {{"NAME", "CRON", "TZ", "PAUSED", "QUEUE", "TYPE",
                                                 "NEXT_RUN", "LAST_RUN", "RUNS", "MISSED"}};
  for (const v1::Schedule& s : schedules) {
    rows.push_back({s.name(), OneLine(s.cron(), 64),
                    s.time_zone().empty() ? "UTC" : OneLine(s.time_zone(), 64),
                    s.paused() ? "yes" : "no", s.task().queue(), OneLine(s.task().type(), 40),
                    s.paused() ? "-" : FormatTimestamp(s.next_run_at()),
                    FormatTimestamp(s.last_run_at()), absl::StrCat(s.runs()),
                    absl::StrCat(s.missed())});
  }
  return FormatTable(rows);
}

}  // namespace conveyor::client
