#include "client/cli_workflows.h"

#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli_io.h"
#include "client/format.h"
#include "client/workflow_args.h"

namespace conveyor::client {
namespace {

// Plain progress lines of `map` (not on a terminal) are at most this often.
constexpr absl::Duration kProgressLineInterval = absl::Seconds(1);
// `submit --then --wait` polls the chain this often at first, then backs
// off to the maximum.
constexpr absl::Duration kChainPollFirst = absl::Milliseconds(100);
constexpr absl::Duration kChainPollMax = absl::Seconds(1);

bool IsFinal(v1::GroupState state) {
  return state == v1::GROUP_STATE_DONE || state == v1::GROUP_STATE_CANCELED;
}

// Shows map or group progress: a bar redrawn in place (a terminal), or a
// line per change, at most one per `interval` except the first and the
// final one, each after `prefix`.
class GroupProgressDisplay {
 public:
  GroupProgressDisplay(FILE* out, bool bar, std::string prefix, absl::Duration interval)
      : out_(out), bar_(bar), prefix_(std::move(prefix)), interval_(interval), line_(out) {}

  void Update(const MapProgress& progress) {
    if (bar_) {
      line_.Update(absl::StrCat(prefix_, FormatGroupProgressBar(progress)));
      return;
    }
    const bool changed = !last_.has_value() || last_->ended != progress.ended ||
                         last_->failures != progress.failures || last_->state != progress.state;
    if (!changed) return;
    const absl::Time now = absl::Now();
    if (last_.has_value() && !IsFinal(progress.state) && now - printed_at_ < interval_) return;
    Write(out_, absl::StrCat(prefix_, FormatGroupProgressLine(progress), "\n"));
    std::fflush(out_);
    last_ = progress;
    printed_at_ = now;
  }

  void Finish() { line_.Finish(); }

 private:
  FILE* out_;
  bool bar_;
  std::string prefix_;
  absl::Duration interval_;
  ProgressLine line_;
  std::optional<MapProgress> last_;
  absl::Time printed_at_ = absl::InfinitePast();
};

// The items of map and group submit (--input, --json-array): EX_OK with
// `items` filled, or the exit code of a problem already reported.
int ReadItems(const Invocation& inv, std::vector<std::string>* items) {
  const std::optional<std::string> input = inv.String("input");
  absl::StatusOr<std::string> data;
  if (!input.has_value() || *input == "-") {
    if (!input.has_value() && isatty(STDIN_FILENO)) {
      return UsageFailed(inv.topic, absl::StrCat(inv.command->name,
                                                 ": no --input and stdin is a terminal: give "
                                                 "--input FILE, or pipe the items in"));
    }
    data = ReadAll(stdin, "stdin");
  } else {
    data = ReadFile(*input, "--input");
  }
  if (!data.ok()) {
    Diagnose(absl::StrCat(inv.command->name, ": ", data.status().message()));
    return EX_NOINPUT;
  }
  absl::StatusOr<std::vector<std::string>> parsed = ParseItems(*data, inv.Bool("json-array"));
  if (!parsed.ok()) {
    Diagnose(absl::StrCat(inv.command->name, ": ", parsed.status().message()));
    return EX_DATAERR;
  }
  *items = *std::move(parsed);
  return EX_OK;
}

int PrintGroup(const Invocation& inv, const absl::StatusOr<v1::Group>& group) {
  if (!group.ok()) return CallFailed(inv, group.status());
  return Print(inv, *group, FormatGroup(*group));
}

int PrintChain(const Invocation& inv, const absl::StatusOr<v1::Chain>& chain) {
  if (!chain.ok()) return CallFailed(inv, chain.status());
  return Print(inv, *chain, FormatChain(*chain));
}

int PrintSchedule(const Invocation& inv, const absl::StatusOr<v1::Schedule>& schedule) {
  if (!schedule.ok()) return CallFailed(inv, schedule.status());
  return Print(inv, *schedule, FormatSchedule(*schedule));
}

}  // namespace

int RunMap(const Invocation& inv, Client& client) {
  absl::StatusOr<MapOptions> options = BuildMapOptions(inv);
  if (!options.ok()) {
    return UsageFailed(inv.topic, absl::StrCat("map: ", options.status().message()));
  }
  std::vector<std::string> items;
  if (int code = ReadItems(inv, &items); code != EX_OK) return code;
  if (items.empty()) {
    Diagnose("map: no items in the input; nothing was submitted");
    return EX_OK;
  }
  const bool bar = isatty(STDERR_FILENO);
  GroupProgressDisplay display(stderr, bar, bar ? "" : "conveyor: map: ", kProgressLineInterval);
  bool announced = false;
  options->on_progress = [&](const MapProgress& progress) {
    if (bar && !announced) {
      Diagnose(absl::StrCat("map: group ", progress.group_id, ": ", progress.total, " items"));
      announced = true;
    }
    display.Update(progress);
  };
  absl::StatusOr<MapResult> mapped = client.Map(items, *options);
  display.Finish();
  if (!mapped.ok()) return CallFailed(inv, mapped.status());

  const bool json = inv.globals.output == OutputFormat::kJson;
  for (size_t i = 0; i < mapped->items.size(); ++i) {
    const MapItem& item = mapped->items[i];
    if (json) {
      if (!PrintJsonLine(MapItemMessage(i, item))) return EX_SOFTWARE;
    } else {
      Write(stdout, absl::StrCat(FormatMapItemLine(item), "\n"));
    }
  }
  std::fflush(stdout);
  if (mapped->failures == 0) return EX_OK;
  for (size_t i = 0; i < mapped->items.size(); ++i) {
    if (!mapped->items[i].ok()) Diagnose(absl::StrCat("map: ", FormatMapItemError(i, mapped->items[i])));
  }
  Diagnose(absl::StrCat("map: ", mapped->failures, " of ", mapped->items.size(),
                        " items did not succeed (group ", mapped->group_id, ")"));
  return kExitTaskFailed;
}

int RunGroupSubmit(const Invocation& inv, Client& client) {
  // Flags first: a usage error is reported before stdin is read.
  if (absl::StatusOr<v1::SubmitGroupRequest> checked = BuildSubmitGroupRequest(inv, {});
      !checked.ok()) {
    return UsageFailed(inv.topic, absl::StrCat("group submit: ", checked.status().message()));
  }
  std::vector<std::string> items;
  if (int code = ReadItems(inv, &items); code != EX_OK) return code;
  if (items.empty()) {
    Diagnose("group submit: no items in the input; a group needs at least one");
    return EX_DATAERR;
  }
  absl::StatusOr<v1::SubmitGroupRequest> request = BuildSubmitGroupRequest(inv, items);
  if (!request.ok()) {
    return UsageFailed(inv.topic, absl::StrCat("group submit: ", request.status().message()));
  }
  absl::StatusOr<v1::SubmitGroupResponse> submitted = client.SubmitGroup(*std::move(request));
  if (!submitted.ok()) return CallFailed(inv, submitted.status());
  if (submitted->deduplicated()) {
    Diagnose(absl::StrCat("group submit: idempotency key matched group ", submitted->group().id(),
                          "; nothing new was submitted"));
  }
  return Print(inv, *submitted, absl::StrCat(submitted->group().id(), "\n"));
}

int RunGroupGet(const Invocation& inv, Client& client) {
  const bool results = inv.Bool("results");
  if (!results && !inv.Bool("members")) {
    v1::GetGroupRequest request;
    request.set_id(inv.args[0]);
    return PrintGroup(inv, client.GetGroup(request));
  }
  absl::StatusOr<v1::Group> group = client.GetGroupWithMembers(inv.args[0], results);
  if (!group.ok()) return CallFailed(inv, group.status());
  const std::vector<v1::GroupMember> members(group->members().begin(), group->members().end());
  return Print(inv, *group,
               absl::StrCat(FormatGroup(*group), "\n", FormatGroupMembers(members, results)));
}

int RunGroupWatch(const Invocation& inv, Client& client) {
  const std::optional<absl::Duration> deadline = inv.Duration("deadline");
  if (deadline.has_value() && *deadline <= absl::ZeroDuration()) {
    return UsageFailed(inv.topic, "group watch: --deadline must be a positive duration");
  }
  const bool json = inv.globals.output == OutputFormat::kJson;
  const bool bar = !json && isatty(STDOUT_FILENO);
  GroupProgressDisplay display(stdout, bar, "", absl::ZeroDuration());
  bool encode_failed = false;
  absl::StatusOr<v1::Group> group = client.FollowGroup(
      inv.args[0],
      [&](const v1::Group& g) {
        if (json) {
          encode_failed = encode_failed || !PrintJsonLine(g);
          std::fflush(stdout);
        } else {
          display.Update(GroupProgress(g));
        }
      },
      deadline.value_or(absl::InfiniteDuration()));
  display.Finish();
  if (!group.ok()) return CallFailed(inv, group.status());
  if (encode_failed) return CallFailed(inv, absl::InternalError("JSON encoding failed"));
  if (bar) Write(stdout, FormatGroup(*group));
  const MapProgress progress = GroupProgress(*group);
  if (group->state() == v1::GROUP_STATE_CANCELED) {
    Diagnose(absl::StrCat("group watch: group ", group->id(), " was CANCELED (", progress.ended,
                          "/", progress.total, " ended)"));
    return kExitTaskFailed;
  }
  if (progress.failures > 0) {
    Diagnose(absl::StrCat("group watch: group ", group->id(), " is DONE; ", progress.failures,
                          " of ", progress.total, " members did not succeed"));
    return kExitTaskFailed;
  }
  return EX_OK;
}

int RunGroupCancel(const Invocation& inv, Client& client) {
  return PrintGroup(inv, client.CancelGroup(inv.args[0]));
}

int RunChainGet(const Invocation& inv, Client& client) {
  return PrintChain(inv, client.GetChain(inv.args[0]));
}

int RunChainCancel(const Invocation& inv, Client& client) {
  return PrintChain(inv, client.CancelChain(inv.args[0]));
}

int WaitForChain(const Invocation& inv, Client& client, const std::string& id,
                 absl::Duration deadline) {
  const bool json = inv.globals.output == OutputFormat::kJson;
  const bool bar = !json && isatty(STDERR_FILENO);
  const absl::Time give_up = absl::Now() + deadline;
  ProgressLine progress(stderr);
  absl::Duration delay = kChainPollFirst;
  absl::StatusOr<v1::Chain> chain;
  while (true) {
    chain = client.GetChain(id);
    if (!chain.ok()) break;
    if (bar) progress.Update(FormatChainLine(*chain));
    if (chain->state() != v1::CHAIN_STATE_RUNNING &&
        chain->state() != v1::CHAIN_STATE_UNSPECIFIED) {
      break;
    }
    const absl::Time now = absl::Now();
    if (now >= give_up) {
      progress.Finish();
      Diagnose(absl::StrCat(inv.command->name, ": gave up after ",
                            absl::FormatDuration(deadline), " (--deadline); chain ", id,
                            " is at stage ", chain->current_stage(),
                            " and keeps going: `conveyor chain get ", id, "` shows it"));
      return EX_TEMPFAIL;
    }
    absl::SleepFor(std::min(delay, give_up - now));
    delay = std::min(delay * 2, kChainPollMax);
  }
  progress.Finish();
  if (!chain.ok()) return CallFailed(inv, chain.status());
  const bool succeeded = chain->state() == v1::CHAIN_STATE_SUCCEEDED;
  if (json) {
    if (int code = Print(inv, *chain, ""); code != EX_OK) return code;
  } else if (succeeded) {
    Write(stdout, chain->result());
    if (isatty(STDOUT_FILENO) && !chain->result().empty() && chain->result().back() != '\n') {
      Write(stdout, "\n");
    }
  }
  if (succeeded) return EX_OK;
  std::string message = absl::StrCat(inv.command->name, ": chain ", id, " ended ",
                                     ChainStateName(chain->state()), " at stage ",
                                     chain->current_stage());
  if (!chain->error().empty()) absl::StrAppend(&message, ": ", DisplayBytes(chain->error(), 4096));
  Diagnose(message);
  return kExitTaskFailed;
}

int RunScheduleCreate(const Invocation& inv, Client& client) {
  const std::optional<std::string> payload = inv.String("payload");
  const std::optional<std::string> file = inv.String("payload-file");
  if (payload.has_value() && file.has_value()) {
    return UsageFailed(inv.topic, "schedule create: give --payload or --payload-file, not both");
  }
  // Flags first, then the file: a usage error is reported before any read.
  if (absl::StatusOr<v1::Schedule> checked = BuildSchedule(inv, "", absl::Now()); !checked.ok()) {
    return UsageFailed(inv.topic, absl::StrCat("schedule create: ", checked.status().message()));
  }
  std::string data = payload.value_or("");
  if (file.has_value()) {
    absl::StatusOr<std::string> read = ReadFile(*file, "--payload-file");
    if (!read.ok()) {
      Diagnose(absl::StrCat("schedule create: ", read.status().message()));
      return EX_NOINPUT;
    }
    data = *std::move(read);
  }
  absl::StatusOr<v1::Schedule> schedule = BuildSchedule(inv, std::move(data), absl::Now());
  if (!schedule.ok()) {
    return UsageFailed(inv.topic, absl::StrCat("schedule create: ", schedule.status().message()));
  }
  return PrintSchedule(inv, client.CreateSchedule(*schedule));
}

int RunScheduleList(const Invocation& inv, Client& client) {
  absl::StatusOr<v1::ListSchedulesResponse> list = client.ListSchedules();
  if (!list.ok()) return CallFailed(inv, list.status());
  const std::vector<v1::Schedule> schedules(list->schedules().begin(), list->schedules().end());
  return Print(inv, *list, FormatScheduleTable(schedules));
}

int RunScheduleGet(const Invocation& inv, Client& client) {
  return PrintSchedule(inv, client.GetSchedule(inv.args[0]));
}

int RunSchedulePause(const Invocation& inv, Client& client) {
  return PrintSchedule(inv, client.PauseSchedule(inv.args[0]));
}

int RunScheduleResume(const Invocation& inv, Client& client) {
  return PrintSchedule(inv, client.ResumeSchedule(inv.args[0]));
}

int RunScheduleDelete(const Invocation& inv, Client& client) {
  if (absl::Status deleted = client.DeleteSchedule(inv.args[0]); !deleted.ok()) {
    return CallFailed(inv, deleted);
  }
  return Print(inv, v1::DeleteScheduleResponse(), absl::StrCat("deleted ", inv.args[0], "\n"));
}

}  // namespace conveyor::client
