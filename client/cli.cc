// conveyor: the command-line client of the Conveyor broker.
//
// Parses the command line (client/cli_args.h), runs one command through the
// client library (client/client.h; workflow commands in
// client/cli_workflows.cc) and prints the answer (client/format.h):
// data on stdout, diagnostics on stderr, exit codes from sysexits.h (see
// `conveyor --help`).
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/cli_args.h"
#include "client/cli_io.h"
#include "client/cli_workflows.h"
#include "client/client.h"
#include "client/format.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/token.h"

namespace conveyor::client {
namespace {

constexpr uint64_t kDefaultListLimit = 100;
constexpr uint64_t kMaxPageSize = 1000;
constexpr int kMaxReceiveBytes = 64 << 20;

// The command's --deadline: InfiniteDuration when not given; a usage error
// (set in `code`) unless it is positive.
absl::Duration DeadlineFlag(const Invocation& inv, int* code) {
  const std::optional<absl::Duration> deadline = inv.Duration("deadline");
  if (!deadline.has_value()) return absl::InfiniteDuration();
  if (*deadline <= absl::ZeroDuration()) {
    *code = UsageFailed(inv.topic, absl::StrCat(inv.command->name,
                                                ": --deadline must be a positive duration"));
  }
  return *deadline;
}

// Follows task `id` until it ends, at most `deadline`: `live` sees every
// change, `final_task` gets the ended task. Returns the exit code of a failed
// or timed-out watch (already reported on stderr), else EX_OK.
int WatchUntilEnd(const Invocation& inv, Client& client, const std::string& id,
                  absl::FunctionRef<void(const v1::Task&)> live, v1::Task* final_task,
                  absl::Duration deadline = absl::InfiniteDuration()) {
  v1::TaskState seen = v1::TASK_STATE_UNSPECIFIED;
  absl::StatusOr<v1::Task> last = client.WatchTask(
      id,
      [&](const v1::Task& task) {
        seen = task.state();
        live(task);
        return true;
      },
      deadline);
  if (last.status().code() == absl::StatusCode::kDeadlineExceeded &&
      deadline != absl::InfiniteDuration()) {
    Diagnose(absl::StrCat(inv.command->name, ": gave up after ", absl::FormatDuration(deadline),
                          " (--deadline); task ", id, " is ", TaskStateName(seen),
                          " and keeps going: `conveyor watch ", id, "` follows it"));
    return EX_TEMPFAIL;
  }
  if (!last.ok()) return CallFailed(inv, last.status());
  if (!IsTerminal(last->state())) {
    return CallFailed(
        inv, absl::UnavailableError(absl::StrCat("the broker ended the watch of ", id,
                                                 " while it was ", TaskStateName(last->state()))));
  }
  *final_task = *std::move(last);
  return EX_OK;
}

int TaskEndedBadly(const Invocation& inv, const v1::Task& task) {
  std::string message =
      absl::StrCat(inv.command->name, ": task ", task.id(), " ended ", TaskStateName(task.state()));
  if (!task.error().empty()) absl::StrAppend(&message, ": ", DisplayBytes(task.error(), 4096));
  Diagnose(message);
  return kExitTaskFailed;
}

absl::StatusOr<std::string> ReadPayload(const Invocation& inv) {
  const std::optional<std::string> file = inv.String("payload-file");
  if (!inv.args.empty() && file.has_value()) {
    return absl::InvalidArgumentError("give PAYLOAD or --payload-file, not both");
  }
  if (file.has_value()) return ReadFile(*file, "--payload-file");
  if (!inv.args.empty() && inv.args[0] != "-") return inv.args[0];
  if (!inv.args.empty() || !isatty(STDIN_FILENO)) return ReadAll(stdin, "stdin");
  return std::string();
}

int RunSubmit(const Invocation& inv, Client& client) {
  int usage = EX_OK;
  const absl::Duration deadline = DeadlineFlag(inv, &usage);
  if (usage != EX_OK) return usage;
  if (inv.Has("deadline") && !inv.Bool("wait")) {
    return UsageFailed(inv.topic, "submit: --deadline bounds --wait; give both or neither");
  }
  absl::StatusOr<std::string> payload = ReadPayload(inv);
  if (!payload.ok()) {
    if (payload.status().code() == absl::StatusCode::kInvalidArgument) {
      return UsageFailed(inv.topic, absl::StrCat("submit: ", payload.status().message()));
    }
    Diagnose(absl::StrCat("submit: ", payload.status().message()));
    return EX_NOINPUT;
  }
  absl::StatusOr<v1::TaskSpec> spec = BuildTaskSpec(inv, *std::move(payload), absl::Now());
  if (!spec.ok()) return UsageFailed(inv.topic, absl::StrCat("submit: ", spec.status().message()));
  absl::StatusOr<v1::SubmitResponse> submitted = client.Submit(*std::move(spec));
  if (!submitted.ok()) return CallFailed(inv, submitted.status());
  if (submitted->deduplicated()) {
    Diagnose(absl::StrCat("submit: idempotency key matched task ", submitted->task().id(),
                          "; nothing new was enqueued"));
  }
  if (!inv.Bool("wait")) {
    return Print(inv, submitted->task(), absl::StrCat(submitted->task().id(), "\n"));
  }
  if (inv.Has("then")) return WaitForChain(inv, client, submitted->task().id(), deadline);

  const bool bar = inv.globals.output == OutputFormat::kText && isatty(STDERR_FILENO);
  ProgressLine progress(stderr);
  v1::Task task;
  int code = WatchUntilEnd(
      inv, client, submitted->task().id(),
      [&](const v1::Task& t) {
        if (bar) progress.Update(FormatProgressBar(t));
      },
      &task, deadline);
  progress.Finish();
  if (code != EX_OK) return code;
  if (inv.globals.output == OutputFormat::kJson) {
    code = Print(inv, task, "");
  } else if (IsSuccess(task.state())) {
    Write(stdout, task.result());
    if (isatty(STDOUT_FILENO) && !task.result().empty() && task.result().back() != '\n') {
      Write(stdout, "\n");
    }
  }
  if (code != EX_OK) return code;
  return IsSuccess(task.state()) ? EX_OK : TaskEndedBadly(inv, task);
}

int RunWatch(const Invocation& inv, Client& client) {
  int usage = EX_OK;
  const absl::Duration deadline = DeadlineFlag(inv, &usage);
  if (usage != EX_OK) return usage;
  const bool json = inv.globals.output == OutputFormat::kJson;
  const bool bar = !json && isatty(STDOUT_FILENO);
  ProgressLine progress(stdout);
  bool encode_failed = false;
  v1::Task task;
  int code = WatchUntilEnd(
      inv, client, inv.args[0],
      [&](const v1::Task& t) {
        if (json) {
          absl::StatusOr<std::string> line = ToJson(t);
          if (!line.ok()) {
            encode_failed = true;
            return;
          }
          Write(stdout, absl::StrCat(*line, "\n"));
        } else if (bar) {
          progress.Update(FormatProgressBar(t));
        } else {
          Write(stdout, absl::StrCat(FormatWatchLine(t), "\n"));
        }
        std::fflush(stdout);
      },
      &task, deadline);
  progress.Finish();
  if (code != EX_OK) return code;
  if (encode_failed) return CallFailed(inv, absl::InternalError("JSON encoding failed"));
  if (bar) Write(stdout, FormatTask(task));
  return IsSuccess(task.state()) ? EX_OK : TaskEndedBadly(inv, task);
}

int RunGet(const Invocation& inv, Client& client) {
  absl::StatusOr<v1::Task> task = client.GetTask(inv.args[0]);
  if (!task.ok()) return CallFailed(inv, task.status());
  return Print(inv, *task, FormatTask(*task));
}

int RunCancel(const Invocation& inv, Client& client) {
  absl::StatusOr<v1::Task> task = client.CancelTask(inv.args[0]);
  if (!task.ok()) return CallFailed(inv, task.status());
  return Print(inv, *task, FormatTask(*task));
}

// --limit, at least 1.
absl::StatusOr<uint64_t> Limit(const Invocation& inv) {
  const uint64_t limit = inv.Uint("limit").value_or(kDefaultListLimit);
  if (limit == 0) return absl::InvalidArgumentError("--limit must be at least 1");
  return limit;
}

// Follows page tokens of a paged call until `limit` tasks or the last page.
// `Request` and `Response` are ListTasks* or ListDeadLetters*.
template <typename Request, typename Response, typename Call>
absl::StatusOr<Response> CollectPages(Request request, uint64_t limit, Call call) {
  Response all;
  do {
    request.set_page_size(static_cast<uint32_t>(
        std::min<uint64_t>(kMaxPageSize, limit - static_cast<uint64_t>(all.tasks_size()))));
    absl::StatusOr<Response> page = call(request);
    if (!page.ok()) return page.status();
    for (v1::Task& task : *page->mutable_tasks()) {
      if (static_cast<uint64_t>(all.tasks_size()) >= limit) break;
      *all.add_tasks() = std::move(task);
    }
    all.set_next_page_token(page->next_page_token());
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && static_cast<uint64_t>(all.tasks_size()) < limit);
  return all;
}

template <typename Response>
int PrintTasks(const Invocation& inv, const Response& response) {
  std::vector<v1::Task> tasks(response.tasks().begin(), response.tasks().end());
  return Print(inv, response, FormatTaskTable(tasks));
}

int RunList(const Invocation& inv, Client& client) {
  v1::ListTasksRequest request;
  const std::optional<std::string> queue = inv.String("queue");
  if (!queue.has_value() || queue->empty())
    return UsageFailed(inv.topic, "list: --queue is required");
  request.set_queue(*queue);
  if (const std::optional<std::string> state = inv.String("state")) {
    absl::StatusOr<v1::TaskState> parsed = ParseTaskState(*state);
    if (!parsed.ok())
      return UsageFailed(inv.topic, absl::StrCat("list: --state: ", parsed.status().message()));
    request.set_state(*parsed);
  }
  absl::StatusOr<uint64_t> limit = Limit(inv);
  if (!limit.ok()) return UsageFailed(inv.topic, absl::StrCat("list: ", limit.status().message()));
  absl::StatusOr<v1::ListTasksResponse> tasks =
      CollectPages<v1::ListTasksRequest, v1::ListTasksResponse>(
          request, *limit, [&](const v1::ListTasksRequest& r) { return client.ListTasks(r); });
  if (!tasks.ok()) return CallFailed(inv, tasks.status());
  return PrintTasks(inv, *tasks);
}

int PrintQueue(const Invocation& inv, const absl::StatusOr<v1::Queue>& queue) {
  if (!queue.ok()) return CallFailed(inv, queue.status());
  return Print(inv, *queue, FormatQueue(*queue));
}

int RunQueueList(const Invocation& inv, Client& client) {
  absl::StatusOr<v1::ListQueuesResponse> queues = client.ListQueues();
  if (!queues.ok()) return CallFailed(inv, queues.status());
  std::vector<v1::Queue> list(queues->queues().begin(), queues->queues().end());
  return Print(inv, *queues, FormatQueueTable(list));
}

int RunQueueGet(const Invocation& inv, Client& client) {
  return PrintQueue(inv, client.GetQueue(inv.args[0]));
}

int RunQueueCreate(const Invocation& inv, Client& client) {
  absl::StatusOr<v1::CreateQueueRequest> request = BuildCreateQueueRequest(inv);
  if (!request.ok()) {
    return UsageFailed(inv.topic, absl::StrCat("queue create: ", request.status().message()));
  }
  return PrintQueue(inv, client.CreateQueue(*request));
}

int RunQueueUpdate(const Invocation& inv, Client& client) {
  const std::string& name = inv.args[0];
  const bool has_settings = inv.flags.size() > (inv.Has("paused") ? 1u : 0u);
  if (!has_settings && !inv.Has("paused")) {
    return UsageFailed(inv.topic, "queue update: no settings given");
  }
  absl::StatusOr<v1::Queue> queue;
  if (has_settings) {
    // Bad values are usage errors (64) before any call, whatever the queue:
    // checked on settings that have a rate, so that only --burst without a
    // rate to change is left to the build on the real settings.
    v1::QueueConfig current_config;
    current_config.mutable_limits()->mutable_rate()->set_per_second(1);
    if (absl::StatusOr<v1::UpdateQueueRequest> checked =
            BuildUpdateQueueRequest(inv, current_config);
        !checked.ok()) {
      return UsageFailed(inv.topic, absl::StrCat("queue update: ", checked.status().message()));
    }
    current_config.Clear();
    if (NeedsCurrentConfig(inv)) {
      // UpdateQueue replaces a whole retry policy or rate: start from the
      // current one.
      absl::StatusOr<v1::Queue> current = client.GetQueue(name);
      if (!current.ok()) return CallFailed(inv, current.status());
      current_config = current->config();
    }
    absl::StatusOr<v1::UpdateQueueRequest> request = BuildUpdateQueueRequest(inv, current_config);
    if (!request.ok()) {
      return UsageFailed(inv.topic, absl::StrCat("queue update: ", request.status().message()));
    }
    queue = client.UpdateQueue(*request);
    if (!queue.ok()) return CallFailed(inv, queue.status());
  }
  if (inv.Has("paused"))
    queue = inv.Bool("paused") ? client.PauseQueue(name) : client.ResumeQueue(name);
  return PrintQueue(inv, queue);
}

int RunQueuePause(const Invocation& inv, Client& client) {
  return PrintQueue(inv, client.PauseQueue(inv.args[0]));
}

int RunQueueResume(const Invocation& inv, Client& client) {
  return PrintQueue(inv, client.ResumeQueue(inv.args[0]));
}

int RunQueuePurge(const Invocation& inv, Client& client) {
  if (!inv.Bool("yes")) {
    return UsageFailed(inv.topic, absl::StrCat("queue purge: this removes every SCHEDULED and "
                                               "READY task of \"",
                                               inv.args[0], "\"; add --yes to confirm"));
  }
  absl::StatusOr<v1::PurgeQueueResponse> purged = client.PurgeQueue(inv.args[0]);
  if (!purged.ok()) return CallFailed(inv, purged.status());
  return Print(inv, *purged, absl::StrCat("purged ", purged->purged(), "\n"));
}

int RunDeadList(const Invocation& inv, Client& client) {
  absl::StatusOr<uint64_t> limit = Limit(inv);
  if (!limit.ok())
    return UsageFailed(inv.topic, absl::StrCat("dead list: ", limit.status().message()));
  v1::ListDeadLettersRequest request;
  request.set_queue(inv.args[0]);
  absl::StatusOr<v1::ListDeadLettersResponse> tasks =
      CollectPages<v1::ListDeadLettersRequest, v1::ListDeadLettersResponse>(
          request, *limit,
          [&](const v1::ListDeadLettersRequest& r) { return client.ListDeadLetters(r); });
  if (!tasks.ok()) return CallFailed(inv, tasks.status());
  return PrintTasks(inv, *tasks);
}

int RunDeadRequeue(const Invocation& inv, Client& client) {
  const std::vector<std::string> ids(inv.args.begin() + 1, inv.args.end());
  absl::StatusOr<v1::RequeueDeadLettersResponse> requeued =
      client.RequeueDeadLetters(inv.args[0], ids);
  if (!requeued.ok()) return CallFailed(inv, requeued.status());
  return Print(inv, *requeued, absl::StrCat("requeued ", requeued->requeued(), "\n"));
}

int RunDeadPurge(const Invocation& inv, Client& client) {
  const std::vector<std::string> ids(inv.args.begin() + 1, inv.args.end());
  if (ids.empty() && !inv.Bool("yes")) {
    return UsageFailed(inv.topic,
                       absl::StrCat("dead purge: this deletes every dead letter of \"", inv.args[0],
                                    "\"; add --yes to confirm, or name the ids"));
  }
  absl::StatusOr<v1::PurgeDeadLettersResponse> purged = client.PurgeDeadLetters(inv.args[0], ids);
  if (!purged.ok()) return CallFailed(inv, purged.status());
  return Print(inv, *purged, absl::StrCat("purged ", purged->purged(), "\n"));
}

int RunHealth(const Invocation& inv, Client& client) {
  absl::StatusOr<ServingStatus> status = client.Health(inv.String("service").value_or(""));
  if (!status.ok()) return CallFailed(inv, status.status());
  const absl::string_view name = ServingStatusName(*status);
  if (inv.globals.output == OutputFormat::kJson) {
    Write(stdout, absl::StrCat("{\"status\":\"", name, "\"}\n"));
  } else {
    Write(stdout, absl::StrCat(name, "\n"));
  }
  return *status == ServingStatus::kServing ? EX_OK : EX_UNAVAILABLE;
}

// ─── token: local commands, no broker ───

int RunTokenCreate(const Invocation& inv) {
  absl::StatusOr<RoleSet> roles = TokenRoles(inv);
  if (!roles.ok()) return UsageFailed(inv.topic, roles.status().message());
  if (roles->empty()) {
    return UsageFailed(inv.topic, "token create: give at least one --role (submit, work, admin)");
  }
  absl::StatusOr<std::string> token = NewToken();
  if (!token.ok()) return CallFailed(inv, token.status());
  const std::string line = TokenFileLine(
      *token, *roles,
      inv.String("comment").value_or(absl::StrCat(
          "created ", absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone()))));
  if (inv.globals.output == OutputFormat::kJson) {
    Write(stdout, absl::StrCat("{\"token\":", LogValue::Quote(*token),
                               ",\"line\":", LogValue::Quote(line), "}\n"));
  } else {
    Write(stdout, absl::StrCat(*token, "\n"));
    Write(stderr, absl::StrCat(line, "\n"));
  }
  return EX_OK;
}

int RunTokenHash(const Invocation& inv) {
  absl::StatusOr<RoleSet> roles = TokenRoles(inv);
  if (!roles.ok()) return UsageFailed(inv.topic, roles.status().message());
  if (roles->empty() && inv.Has("comment")) {
    return UsageFailed(inv.topic, "token hash: --comment goes with --role");
  }
  absl::StatusOr<std::string> input = ReadAll(stdin, "stdin");
  if (!input.ok()) return CallFailed(inv, input.status());
  const absl::string_view token = absl::StripAsciiWhitespace(*input);
  const bool one_word = std::none_of(token.begin(), token.end(), [](char c) {
    return absl::ascii_isspace(static_cast<unsigned char>(c)) ||
           absl::ascii_iscntrl(static_cast<unsigned char>(c));
  });
  if (token.empty() || !one_word) {
    Diagnose(token.empty() ? "token hash: no token on stdin"
                           : "token hash: stdin holds more than one word; a token is one");
    return EX_DATAERR;
  }
  const std::string hash = TokenHashField(token);
  const std::string line =
      roles->empty() ? hash : TokenFileLine(token, *roles, inv.String("comment").value_or(""));
  if (inv.globals.output == OutputFormat::kJson) {
    Write(stdout, absl::StrCat("{\"hash\":", LogValue::Quote(hash),
                               roles->empty() ? "" : ",\"line\":",
                               roles->empty() ? "" : LogValue::Quote(line), "}\n"));
  } else {
    Write(stdout, absl::StrCat(line, "\n"));
  }
  return EX_OK;
}

// Commands that need no broker (and so no connection settings).
struct LocalRoute {
  const char* command;
  int (*run)(const Invocation&);
};

constexpr LocalRoute kLocalRoutes[] = {
    {"token create", RunTokenCreate},
    {"token hash", RunTokenHash},
};

using Handler = int (*)(const Invocation&, Client&);

struct Route {
  const char* command;
  Handler run;
};

constexpr Route kRoutes[] = {
    {"submit", RunSubmit},
    {"get", RunGet},
    {"watch", RunWatch},
    {"cancel", RunCancel},
    {"list", RunList},
    {"map", RunMap},
    {"group submit", RunGroupSubmit},
    {"group get", RunGroupGet},
    {"group watch", RunGroupWatch},
    {"group cancel", RunGroupCancel},
    {"chain get", RunChainGet},
    {"chain cancel", RunChainCancel},
    {"schedule create", RunScheduleCreate},
    {"schedule list", RunScheduleList},
    {"schedule get", RunScheduleGet},
    {"schedule pause", RunSchedulePause},
    {"schedule resume", RunScheduleResume},
    {"schedule delete", RunScheduleDelete},
    {"queue list", RunQueueList},
    {"queue get", RunQueueGet},
    {"queue create", RunQueueCreate},
    {"queue update", RunQueueUpdate},
    {"queue pause", RunQueuePause},
    {"queue resume", RunQueueResume},
    {"queue purge", RunQueuePurge},
    {"dead list", RunDeadList},
    {"dead requeue", RunDeadRequeue},
    {"dead purge", RunDeadPurge},
    {"health", RunHealth},
};

int Main(const std::vector<std::string>& args, absl::string_view env_addr) {
  Invocation inv;
  if (absl::Status parsed = ParseCommandLine(args, env_addr, &inv); !parsed.ok()) {
    return UsageFailed(inv.topic, parsed.message());
  }
  if (inv.help) {
    Write(stdout, Usage(inv.topic));
    return EX_OK;
  }
  for (const LocalRoute& route : kLocalRoutes) {
    if (absl::string_view(route.command) == inv.command->name) {
      int code = route.run(inv);
      if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
        Diagnose(absl::StrCat("writing output: ", std::strerror(errno)));
        if (code == EX_OK) code = EX_IOERR;
      }
      return code;
    }
  }
  Handler run = nullptr;
  for (const Route& route : kRoutes) {
    if (absl::string_view(route.command) == inv.command->name) run = route.run;
  }
  if (run == nullptr) {
    Diagnose(absl::StrCat(inv.command->name, ": not implemented"));
    return EX_SOFTWARE;
  }
  absl::StatusOr<ClientSecurity> security = ResolveClientSecurity(inv.globals.security);
  if (!security.ok()) return UsageFailed(inv.topic, security.status().message());
  ClientOptions options;
  options.address = inv.globals.addr;
  options.timeout = inv.globals.timeout;
  options.credentials = ChannelCredentialsFor(*security);
  options.token = security->token;
  // As much as the broker sends (its cap is 64 MiB): a page of group
  // results or a task with a large payload and result fits in one answer.
  options.channel_args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  Client client(options);
  int code = run(inv, client);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    Diagnose(absl::StrCat("writing output: ", std::strerror(errno)));
    if (code == EX_OK) code = EX_IOERR;
  }
  return code;
}

}  // namespace
}  // namespace conveyor::client

int main(int argc, char** argv) {
  const char* env_addr = std::getenv("CONVEYOR_ADDR");
  return conveyor::client::Main(std::vector<std::string>(argv + 1, argv + argc),
                                env_addr == nullptr ? "" : env_addr);
}
