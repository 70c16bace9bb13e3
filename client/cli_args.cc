#include "client/cli_args.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/workflow_args.h"
#include "common/grpc_util.h"

namespace conveyor::client {
namespace {

constexpr absl::string_view kGroups[] = {"group", "chain", "schedule", "queue", "dead", "token"};

// `update`: the help says how 0 removes a limit.
std::vector<FlagSpec> QueueConfigFlags(bool update) {
  std::vector<FlagSpec> flags = {
      {"capacity", FlagType::kUint, "N", "unfinished tasks the queue holds (default 100000)"},
      {"full-policy", FlagType::kString, "reject|wait",
       "when full: reject with RESOURCE_EXHAUSTED, or wait for room"},
      {"max-attempts", FlagType::kUint, "N", "default attempts per task, including the first"},
      {"initial-backoff", FlagType::kDuration, "DUR", "delay before the second attempt"},
      {"max-backoff", FlagType::kDuration, "DUR", "upper bound on any retry delay"},
      {"multiplier", FlagType::kDouble, "X", "backoff growth per attempt (>= 1)"},
      {"jitter", FlagType::kDouble, "X", "random spread of each delay, 0 to 1"},
      {"default-timeout", FlagType::kDuration, "DUR", "default per-attempt timeout"},
      {"lease-duration", FlagType::kDuration, "DUR", "lease granted to workers"},
      {"max-crashes", FlagType::kUint, "N", "lease expiries a task may suffer before DEAD"},
      {"result-ttl", FlagType::kDuration, "DUR", "how long ended tasks are kept"},
      {"retained", FlagType::kUint, "N", "at most this many ended tasks are kept"},
      {"paused", FlagType::kBool, "", "pause the queue (--paused=false resumes it)"},
  };
  // Limits, enforced by the broker across every worker.
  const std::vector<FlagSpec> limits = {
      {"rate", FlagType::kString, "RATE",
       update ? "the queue's start rate, e.g. 50/s, 100/m, 0.5 (per second); 0 removes it; "
                "keeps the current burst unless --burst is given"
              : "the queue's start rate, e.g. 50/s, 100/m, 0.5 (per second)"},
      {"burst", FlagType::kUint, "N",
       "starts allowed at once after a quiet spell, for --rate (default: a tenth of a "
       "second's worth, at least 1)"},
      {"max-running", FlagType::kUint, "N",
       update ? "tasks RUNNING at once in the queue; 0 removes the limit"
              : "tasks RUNNING at once in the queue"},
      {"key-rate", FlagType::kString, "RATE",
       update ? "start rate of each rate key (submit --rate-key) without its own; 0 removes it"
              : "start rate of each rate key (submit --rate-key) without its own"},
      {"key-rate-for", FlagType::kString, "KEY=RATE",
       update ? "rate key KEY's own start rate; repeatable; KEY=0 removes it"
              : "rate key KEY's own start rate; repeatable",
       /*repeated=*/true},
      {"key-max-running", FlagType::kUint, "N",
       update ? "tasks RUNNING at once per concurrency key (submit --concurrency-key) "
                "without a pool; 0 removes the limit"
              : "tasks RUNNING at once per concurrency key (submit --concurrency-key) "
                "without a pool"},
      {"pool", FlagType::kString, "KEY=N",
       update ? "a named pool: at most N tasks holding concurrency key KEY run at once; "
                "repeatable; KEY=0 removes it"
              : "a named pool: at most N tasks holding concurrency key KEY run at once; "
                "repeatable",
       /*repeated=*/true},
  };
  flags.insert(flags.end(), limits.begin(), limits.end());
  return flags;
}

std::vector<CommandSpec> BuildCommands() {
  return {
      {"submit",
       "[PAYLOAD | -]",
       "Submit a task; print its id.",
       "The payload is PAYLOAD, or the contents of --payload-file, or stdin when "
       "PAYLOAD is \"-\" or when no payload is given and stdin is not a terminal; "
       "otherwise it is empty. Without --idempotency-key the client picks a random key, "
       "so its own retries never enqueue twice. --priority outside 0-9 is a usage error "
       "(64). With --wait, prints the result (text) or the final task (json) instead of "
       "the id, and exits 1 unless the task ends SUCCEEDED or FALLBACK. Each --then adds a "
       "chain stage after this task: when a stage succeeds (or falls back), the next is "
       "submitted with its result as payload; a stage that fails ends the chain. The "
       "printed id is then also the chain's id (`conveyor chain get ID`), and --wait waits "
       "for the whole chain and prints its last stage's result (json: the Chain), exiting 1 "
       "unless the chain SUCCEEDED. --wait --deadline DUR gives up after DUR (exit 75; the "
       "task or chain keeps running). A STAGE is comma-separated KEY=VALUE pairs: queue and "
       "type (required), priority (0-9), timeout (per attempt), max-attempts and delay, "
       "e.g. --then queue=thumbs,type=resize,priority=5,timeout=30s. A malformed stage is a "
       "usage error (64) naming the problem.",
       0,
       1,
       {
           {"queue", FlagType::kString, "Q", "queue to submit to (required)"},
           {"type", FlagType::kString, "T", "handler name (required)"},
           {"payload-file", FlagType::kString, "PATH", "read the payload from a file"},
           {"priority", FlagType::kUint, "N", "0-9, higher first (default 0)"},
           {"delay", FlagType::kDuration, "DUR", "not leased before now + DUR"},
           {"task-timeout", FlagType::kDuration, "DUR", "bound on each attempt"},
           {"max-attempts", FlagType::kUint, "N", "attempts in all, including the first"},
           {"idempotency-key", FlagType::kString, "K",
            "deduplication key (default: a random one per invocation)"},
           {"header", FlagType::kString, "K=V", "a header; repeatable", /*repeated=*/true},
           {"expires-in", FlagType::kDuration, "DUR", "ends EXPIRED if not leased within DUR"},
           {"rate-key", FlagType::kString, "K",
            "share rate key K's start rate (queue --key-rate, --key-rate-for), e.g. a "
            "customer id"},
           {"concurrency-key", FlagType::kString, "K",
            "hold a slot of concurrency key K's pool while running (queue --pool, "
            "--key-max-running), e.g. db"},
           {"fallback", FlagType::kString, "TEXT",
            "when its attempts run out (failure or timeout), end FALLBACK with TEXT as the "
            "result instead of DEAD"},
           {"then", FlagType::kString, "STAGE",
            "a chain stage to run after this task: queue=Q,type=T[,priority=N][,timeout=DUR]"
            "[,max-attempts=N][,delay=DUR]; repeatable, in order (at most 32)",
            /*repeated=*/true},
           {"wait", FlagType::kBool, "",
            "wait for the task (with --then: the chain) to end and print its result"},
           {"deadline", FlagType::kDuration, "DUR",
            "with --wait: give up waiting after DUR (exit 75; the task keeps running)"},
       }},
      {"get", "ID", "Show a task.",
       "A SCHEDULED or READY task shows why it waits (\"waiting:\" in text, \"waiting\" in "
       "json): paused, rate_limited, concurrency_full, not_due, no_worker, or none. A task "
       "that belongs to a workflow shows it: \"group:\" (a group member or its callback), "
       "\"chain:\" with its stage (0 for the first), \"schedule:\" (the schedule that "
       "submitted it).",
       1, 1, {}},
      {"watch",
       "ID",
       "Follow a task until it ends.",
       "Shows a progress bar when stdout is a terminal, one line per change otherwise "
       "(-o json: one JSON object per line). Exits 0 if the task ends SUCCEEDED or "
       "FALLBACK, 1 otherwise (with its error on stderr), 75 when --deadline passes first "
       "(the task keeps running).",
       1,
       1,
       {{"deadline", FlagType::kDuration, "DUR",
         "give up following after DUR (exit 75; the task keeps running)"}}},
      {"cancel",
       "ID",
       "Cancel a task.",
       "A queued task is canceled at once; a running one is marked and its worker told.",
       1,
       1,
       {}},
      {"list",
       "",
       "List a queue's tasks in id order.",
       "",
       0,
       0,
       {
           {"queue", FlagType::kString, "Q", "queue to list (required)"},
           {"state", FlagType::kString, "S",
            "only tasks in this state (scheduled, ready, running, succeeded, dead, "
            "canceled, expired, fallback)"},
           {"limit", FlagType::kUint, "N", "at most N tasks (default 100)"},
       }},
      {"map", "", "Map a task type over items, results in order.",
       "Reads items from --input (a file, or - for stdin; default stdin, which must then not "
       "be a terminal): one item per line (its bytes without the newline, and without a "
       "\\r before it; empty lines are items too), or with --json-array one JSON array of "
       "strings (the input is never guessed to be JSON). Submits them as one group, one task "
       "of --type on --queue per item, and follows it: a progress bar on stderr when stderr "
       "is a terminal, otherwise a progress line on stderr at most once a second. Then "
       "prints one line per item, in input order, on stdout: the result as text (one "
       "trailing newline dropped, control characters escaped as \\n, \\t, \\xNN), or an "
       "empty line for an item that did not succeed, whose state and error go to stderr "
       "(\"conveyor: map: item I (task ID) ended DEAD: error\"). -o json: one JSON object "
       "per item per line instead, in input order: index, task_id, state, result (base64) "
       "and error. A watch broken by a broker restart is resumed, until --deadline. No items: "
       "nothing is submitted. Exits 0 if every item SUCCEEDED or fell back (FALLBACK); 1 if "
       "any ended otherwise (all results are still printed); 65 for input that is not what "
       "it should be; 66 if --input cannot be read; 75 when --deadline passes first (the "
       "tasks keep running: run the same command with the same --idempotency-key to follow "
       "the same group).",
       0,
       0,
       {
           {"queue", FlagType::kString, "Q", "queue of the tasks (required)"},
           {"type", FlagType::kString, "T", "handler name (required)"},
           {"input", FlagType::kString, "FILE", "read the items from FILE, or - for stdin "
            "(default: stdin)"},
           {"json-array", FlagType::kBool, "", "the input is a JSON array of strings"},
           {"priority", FlagType::kUint, "N", "0-9, higher first (default 0)"},
           {"task-timeout", FlagType::kDuration, "DUR", "bound on each attempt of each item"},
           {"max-attempts", FlagType::kUint, "N",
            "attempts in all per item, including the first (at least 1)"},
           {"fallback", FlagType::kString, "TEXT",
            "an item whose attempts run out ends FALLBACK with TEXT as its result (a success)"},
           {"deadline", FlagType::kDuration, "DUR", "give up following after DUR (exit 75)"},
           {"idempotency-key", FlagType::kString, "K",
            "the group's key (default: a random one); the same key and items follow the same "
            "group instead of submitting again"},
       }},
      {"group submit",
       "",
       "Submit items as one group; print its id.",
       "Items are read as for `conveyor map` (--input, default stdin; lines or "
       "--json-array); each becomes one task of --type on --queue. With --callback-queue and "
       "--callback-type, a callback task is submitted once every member has ended (fan-in); "
       "its payload is a GroupResults document in proto3 JSON (groupId, the counters, every "
       "member's result or error, results and payload in base64, payload being "
       "--callback-payload; see docs/workflows.md). Prints "
       "the group id (json: the SubmitGroupResponse, with every member's task id). Exits 65 "
       "for input that is not what it should be or holds no items.",
       0,
       0,
       {
           {"queue", FlagType::kString, "Q", "queue of the members (required)"},
           {"type", FlagType::kString, "T", "handler name (required)"},
           {"input", FlagType::kString, "FILE", "read the items from FILE, or - for stdin "
            "(default: stdin)"},
           {"json-array", FlagType::kBool, "", "the input is a JSON array of strings"},
           {"priority", FlagType::kUint, "N", "0-9, higher first (default 0)"},
           {"task-timeout", FlagType::kDuration, "DUR", "bound on each attempt of each member"},
           {"max-attempts", FlagType::kUint, "N",
            "attempts in all per member, including the first (at least 1)"},
           {"fallback", FlagType::kString, "TEXT",
            "a member whose attempts run out ends FALLBACK with TEXT as its result"},
           {"callback-queue", FlagType::kString, "Q", "queue of the callback (with --callback-type)"},
           {"callback-type", FlagType::kString, "T", "handler of the callback"},
           {"callback-payload", FlagType::kString, "P",
            "the callback's own payload, passed in the GroupResults document"},
           {"idempotency-key", FlagType::kString, "K",
            "the group's key (default: a random one per invocation)"},
       }},
      {"group get",
       "ID",
       "Show a group (and its members).",
       "--members lists every member (index, task id, state) in submission order, read in "
       "pages; --results adds each member's result or error (and implies --members). json: "
       "the Group with all its members.",
       1,
       1,
       {
           {"members", FlagType::kBool, "", "list the members"},
           {"results", FlagType::kBool, "", "list the members with their results and errors"},
       }},
      {"group watch",
       "ID",
       "Follow a group until DONE or CANCELED.",
       "Shows a progress bar when stdout is a terminal, one line per change otherwise (-o "
       "json: one Group per line). A watch broken by a broker restart is resumed, until "
       "--deadline (then exit 75). Exits 0 if the group is DONE and every member SUCCEEDED "
       "or fell back; 1 if any member ended otherwise or the group was canceled.",
       1,
       1,
       {{"deadline", FlagType::kDuration, "DUR", "give up after DUR (exit 75)"}}},
      {"group cancel",
       "ID",
       "Cancel a group's unfinished members.",
       "Members that already ended keep their outcome; the callback is never submitted. "
       "FAILED_PRECONDITION (exit 65) if the group is already DONE.",
       1,
       1,
       {}},
      {"chain get",
       "ID",
       "Show a chain (submit --then) and its stages.",
       "ID is the chain's first task's id. Stages not submitted yet have no task.",
       1,
       1,
       {}},
      {"chain cancel",
       "ID",
       "Cancel a chain's current stage and the rest.",
       "",
       1,
       1,
       {}},
      {"schedule create",
       "NAME",
       "Create a cron schedule that submits a task.",
       "--cron takes five fields, minute hour day-of-month month day-of-week, with *, lists "
       "(1,5), ranges (1-5), steps (*/15, 10-50/10), month and weekday names (JAN, SUN); or "
       "@yearly, @monthly, @weekly, @daily, @hourly. --tz is an IANA zone (default UTC). "
       "--misfire says what to do with ticks missed while the broker was down: skip them "
       "(default) or run-once (one task for the latest, at once). The task template takes "
       "the submit flags below; its payload is --payload or --payload-file (default empty). "
       "ALREADY_EXISTS (exit 65) for a taken name; the broker names a bad cron field or zone "
       "(exit 65).",
       1,
       1,
       {
           {"cron", FlagType::kString, "EXPR", "when to run, e.g. \"*/15 * * * *\" (required)"},
           {"tz", FlagType::kString, "ZONE", "IANA time zone, e.g. Europe/Paris (default UTC)"},
           {"misfire", FlagType::kString, "skip|run-once",
            "ticks missed while the broker was down (default skip)"},
           {"paused", FlagType::kBool, "", "create it paused"},
           {"queue", FlagType::kString, "Q", "queue to submit to (required)"},
           {"type", FlagType::kString, "T", "handler name (required)"},
           {"payload", FlagType::kString, "P", "the task's payload"},
           {"payload-file", FlagType::kString, "PATH", "read the payload from a file"},
           {"priority", FlagType::kUint, "N", "0-9, higher first (default 0)"},
           {"delay", FlagType::kDuration, "DUR", "each task is not leased before its tick + DUR"},
           {"task-timeout", FlagType::kDuration, "DUR", "bound on each attempt"},
           {"max-attempts", FlagType::kUint, "N", "attempts in all, including the first"},
           {"header", FlagType::kString, "K=V", "a header; repeatable", /*repeated=*/true},
           {"rate-key", FlagType::kString, "K", "the tasks' rate key"},
           {"concurrency-key", FlagType::kString, "K", "the tasks' concurrency key"},
           {"then", FlagType::kString, "STAGE",
            "a chain stage after each task, as for submit --then; repeatable",
            /*repeated=*/true},
       }},
      {"schedule list", "", "List schedules with their next and last runs.", "", 0, 0, {}},
      {"schedule get", "NAME", "Show a schedule.", "", 1, 1, {}},
      {"schedule pause", "NAME", "Pause a schedule (missed ticks are skipped).", "", 1, 1,
       {}},
      {"schedule resume", "NAME", "Resume a paused schedule.", "", 1, 1, {}},
      {"schedule delete", "NAME", "Delete a schedule (its tasks are kept).", "", 1, 1,
       {}},
      {"queue list", "", "List queues with their live counts.", "", 0, 0, {}},
      {"queue get", "NAME", "Show a queue's settings and counts.", "", 1, 1, {}},
      {"queue create", "NAME", "Create a queue.",
       "Unset settings take the broker defaults; a queue has no limits unless given. A RATE "
       "is N/s, N/m or N/h (N alone: per second; fractions allowed). A limit of 0 is no limit.",
       1, 1, QueueConfigFlags(/*update=*/false)},
      {"queue update", "NAME", "Change a queue's settings.",
       "Only the settings given change (the retry flags are merged into the current "
       "policy, --rate keeps the current burst, --burst alone keeps the current rate); "
       "limits apply at once, also to tasks already queued; a limit of 0 removes it; "
       "--paused=true|false pauses or resumes the queue. A RATE is N/s, N/m or N/h "
       "(N alone: per second).",
       1, 1, QueueConfigFlags(/*update=*/true)},
      {"queue pause", "NAME", "Pause a queue (submits accepted, nothing leased).", "", 1, 1, {}},
      {"queue resume", "NAME", "Resume a paused queue.", "", 1, 1, {}},
      {"queue purge",
       "NAME",
       "Remove a queue's SCHEDULED and READY tasks.",
       "Running tasks are left alone. Asks no question: requires --yes.",
       1,
       1,
       {{"yes", FlagType::kBool, "", "confirm (required)"}}},
      {"dead list",
       "QUEUE",
       "List a queue's dead letters.",
       "",
       1,
       1,
       {{"limit", FlagType::kUint, "N", "at most N tasks (default 100)"}}},
      {"dead requeue",
       "QUEUE [ID...]",
       "Requeue dead letters (no ids: all).",
       "Moves them back to READY with fresh attempts.",
       1,
       -1,
       {}},
      {"dead purge",
       "QUEUE [ID...]",
       "Delete dead letters (no ids: all).",
       "Requires --yes when no ids are given.",
       1,
       -1,
       {{"yes", FlagType::kBool, "", "confirm; required when no ids are given"}}},
      {"token create",
       "",
       "Make a bearer token for a broker with --auth-tokens.",
       "Needs no broker. Prints a fresh token (cvy_ and 32 bytes from /dev/urandom in "
       "base64url) on stdout and the line to append to the broker's --auth-tokens file on "
       "stderr, so `conveyor token create --role work >worker.token 2>>tokens` keeps each "
       "where it belongs; with -o json both go to stdout as {\"token\",\"line\"}. The "
       "broker stores only the token's SHA-256 and re-reads the file within a second. Keep "
       "the token in a file only its user can read and pass it with --token-file. Roles: "
       "submit (submit, get, watch, cancel, list tasks), work (lease and report tasks: "
       "workers), admin (queues and dead letters); none implies another.",
       0,
       0,
       {
           {"role", FlagType::kString, "ROLE",
            "submit, work or admin (or a comma-separated list); repeatable; at least one",
            /*repeated=*/true},
           {"comment", FlagType::kString, "TEXT",
            "comment at the end of the line (default: \"created YYYY-MM-DD\")"},
       }},
      {"token hash",
       "",
       "Print the --auth-tokens line of a token read on stdin.",
       "Needs no broker. Reads one token from stdin (surrounding whitespace ignored), so it "
       "stays out of shell history and ps, and prints sha256:<hex>; with --role, the whole "
       "line to append to the broker's --auth-tokens file. -o json: {\"hash\",\"line\"}. "
       "Exits 65 if stdin holds no token or more than one word.",
       0,
       0,
       {
           {"role", FlagType::kString, "ROLE",
            "submit, work or admin (or a comma-separated list); repeatable", /*repeated=*/true},
           {"comment", FlagType::kString, "TEXT", "comment at the end of the line (with --role)"},
       }},
      {"health",
       "",
       "Check the broker's health (grpc.health.v1).",
       "Prints SERVING or NOT_SERVING; exits 0 only if SERVING, 69 if NOT_SERVING or "
       "unreachable.",
       0,
       0,
       {{"service", FlagType::kString, "NAME", "service to check (default: the server)"}}},
  };
}

bool IsGroup(absl::string_view word) {
  for (absl::string_view group : kGroups) {
    if (word == group) return true;
  }
  return false;
}

const FlagSpec* FindFlag(const CommandSpec& command, absl::string_view name) {
  for (const FlagSpec& flag : command.flags) {
    if (name == flag.name) return &flag;
  }
  return nullptr;
}

absl::Status UsageError(absl::string_view topic, absl::string_view message) {
  if (topic.empty()) return absl::InvalidArgumentError(message);
  return absl::InvalidArgumentError(absl::StrCat(topic, ": ", message));
}

absl::StatusOr<bool> ParseBool(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  return absl::InvalidArgumentError(absl::StrCat("not a boolean: \"", text, "\""));
}

absl::StatusOr<absl::Duration> ParseNonNegativeDuration(absl::string_view text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a duration: \"", text, "\" (use e.g. 500ms, 2s, 1h30m)"));
  }
  if (d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("negative duration: \"", text, "\""));
  }
  return d;
}

// Checks `value` against `type`; returns the canonical raw value to store.
absl::StatusOr<std::string> CheckValue(FlagType type, absl::string_view value) {
  switch (type) {
    case FlagType::kBool: {
      absl::StatusOr<bool> b = ParseBool(value);
      if (!b.ok()) return b.status();
      return std::string(*b ? "true" : "false");
    }
    case FlagType::kString:
      return std::string(value);
    case FlagType::kUint: {
      uint64_t n;
      if (value.empty() || value[0] == '-' || !absl::SimpleAtoi(value, &n)) {
        return absl::InvalidArgumentError(
            absl::StrCat("not a non-negative integer: \"", value, "\""));
      }
      return std::string(value);
    }
    case FlagType::kDouble: {
      double x;
      if (!absl::SimpleAtod(value, &x) || !std::isfinite(x)) {
        return absl::InvalidArgumentError(absl::StrCat("not a number: \"", value, "\""));
      }
      return std::string(value);
    }
    case FlagType::kDuration: {
      absl::StatusOr<absl::Duration> d = ParseNonNegativeDuration(value);
      if (!d.ok()) return d.status();
      return std::string(value);
    }
  }
  return absl::InternalError("unknown flag type");
}

// Handles a global flag; returns false if `name` is not one.
absl::StatusOr<bool> ParseGlobal(absl::string_view name, std::optional<std::string> value,
                                 const std::vector<std::string>& args, size_t* next,
                                 Invocation* out) {
  const bool is_help = name == "help" || name == "h";
  if (name == "tls") {
    bool on = true;
    if (value.has_value()) {
      absl::StatusOr<bool> b = ParseBool(*value);
      if (!b.ok()) return UsageError(out->topic, absl::StrCat("--tls: ", b.status().message()));
      on = *b;
    }
    out->globals.security.tls = on;
    return true;
  }
  const bool is_security_flag = name == "tls-ca" || name == "tls-cert" || name == "tls-key" ||
                                name == "token" || name == "token-file";
  const bool is_value_flag = name == "addr" || name == "timeout" || name == "output" ||
                             name == "o" || is_security_flag;
  if (!is_help && !is_value_flag) return false;
  if (is_help) {
    if (value.has_value()) {
      absl::StatusOr<bool> b = ParseBool(*value);
      if (!b.ok()) return UsageError(out->topic, absl::StrCat("--help: ", b.status().message()));
      out->help = *b;
    } else {
      out->help = true;
    }
    return true;
  }
  const std::string shown = name.size() == 1 ? absl::StrCat("-", name) : absl::StrCat("--", name);
  if (!value.has_value()) {
    if (*next >= args.size()) {
      return UsageError(out->topic, absl::StrCat(shown, " needs a value"));
    }
    value = args[(*next)++];
  }
  if (is_security_flag) {
    if (value->empty()) return UsageError(out->topic, absl::StrCat(shown, " must not be empty"));
    ClientSecurityFlags& sec = out->globals.security;
    std::string* field = name == "tls-ca"     ? &sec.tls_ca
                         : name == "tls-cert" ? &sec.tls_cert
                         : name == "tls-key"  ? &sec.tls_key
                         : name == "token"    ? &sec.token
                                              : &sec.token_file;
    *field = *value;
    return true;
  }
  if (name == "addr") {
    if (value->empty()) return UsageError(out->topic, "--addr must not be empty");
    out->globals.addr = *value;
  } else if (name == "timeout") {
    absl::StatusOr<absl::Duration> d = ParseNonNegativeDuration(*value);
    if (!d.ok() || *d == absl::ZeroDuration()) {
      return UsageError(out->topic, absl::StrCat("--timeout: not a positive duration: \"", *value,
                                                 "\" (use e.g. 500ms, 2s)"));
    }
    out->globals.timeout = *d;
  } else {
    if (*value == "text") {
      out->globals.output = OutputFormat::kText;
    } else if (*value == "json") {
      out->globals.output = OutputFormat::kJson;
    } else {
      return UsageError(out->topic,
                        absl::StrCat(shown, " must be text or json, got \"", *value, "\""));
    }
  }
  return true;
}

// Resolves a non-flag word while the command is not known yet.
absl::Status ResolveWord(const std::string& word, bool* help_mode, Invocation* out) {
  if (*help_mode) {
    out->topic = out->topic.empty() ? word : absl::StrCat(out->topic, " ", word);
    return absl::OkStatus();
  }
  if (out->topic.empty()) {
    if (word == "help") {
      *help_mode = true;
      out->help = true;
      return absl::OkStatus();
    }
    if (IsGroup(word)) {
      out->topic = word;
      return absl::OkStatus();
    }
    out->command = FindCommand(word);
    if (out->command == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown command \"", word, "\""));
    }
    out->topic = word;
    return absl::OkStatus();
  }
  const std::string name = absl::StrCat(out->topic, " ", word);
  out->command = FindCommand(name);
  if (out->command == nullptr) {
    return UsageError(out->topic, absl::StrCat("unknown command \"", name, "\""));
  }
  out->topic = name;
  return absl::OkStatus();
}

// Word-wraps `text` to `width` columns; lines after the first start with
// `indent` spaces (the first is assumed to be positioned by the caller).
std::string Wrap(absl::string_view text, size_t indent, size_t width = 80) {
  std::string out;
  size_t column = indent;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column > indent && column + 1 + word.size() > width) {
      absl::StrAppend(&out, "\n", std::string(indent, ' '));
      column = indent;
    } else if (column > indent) {
      out.push_back(' ');
      ++column;
    }
    absl::StrAppend(&out, word);
    column += word.size();
  }
  return out;
}

std::string FlagUsage(const FlagSpec& flag) {
  constexpr size_t kHelpColumn = 27;
  std::string left = absl::StrCat("  --", flag.name);
  if (flag.type != FlagType::kBool) absl::StrAppend(&left, " ", flag.value_name);
  if (left.size() + 1 > kHelpColumn) {
    return absl::StrCat(left, "\n", std::string(kHelpColumn, ' '), Wrap(flag.help, kHelpColumn),
                        "\n");
  }
  left.resize(kHelpColumn, ' ');
  return absl::StrCat(left, Wrap(flag.help, kHelpColumn), "\n");
}

std::string CommandLine(const CommandSpec& command) {
  std::string line = command.name;
  if (*command.args != '\0') absl::StrAppend(&line, " ", command.args);
  return line;
}

constexpr char kGlobalUsage[] =
    "Global flags (anywhere on the line):\n"
    "  --addr HOST:PORT           broker address (env CONVEYOR_ADDR; default "
    "127.0.0.1:7400)\n"
    "  --timeout DUR              deadline of each call attempt, e.g. 500ms, 2s\n"
    "                             (default 10s; submits and reads retry UNAVAILABLE)\n"
    "  -o, --output text|json     output format (default text); json: one protobuf JSON\n"
    "                             document per result (per line for watch, group\n"
    "                             watch and map items)\n"
    "  --tls                      connect with TLS, trusting the system's CA roots\n"
    "                             (env CONVEYOR_TLS=1)\n"
    "  --tls-ca FILE              CA bundle (PEM) that signed the broker's certificate;\n"
    "                             implies --tls (env CONVEYOR_TLS_CA)\n"
    "  --tls-cert FILE            client certificate (PEM) for mTLS, with --tls-key\n"
    "                             (env CONVEYOR_TLS_CERT)\n"
    "  --tls-key FILE             its private key (env CONVEYOR_TLS_KEY)\n"
    "  --token TOKEN              bearer token for a broker with --auth-tokens\n"
    "                             (env CONVEYOR_TOKEN; visible in ps: prefer --token-file)\n"
    "  --token-file FILE          read the token from FILE (env CONVEYOR_TOKEN_FILE)\n"
    "  -h, --help                 show help\n";

constexpr char kExitCodes[] =
    "Exit codes: 0 ok; 1 a task ended unsuccessfully (watch, submit --wait), an item\n"
    "of map or a member of group watch did, or the watched group was canceled;\n"
    "64 usage; 65 bad data (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,\n"
    "FAILED_PRECONDITION); 66 unreadable input; 69 unavailable; 75 temporary failure\n"
    "(RESOURCE_EXHAUSTED, e.g. a full queue; DEADLINE_EXCEEDED); 77 permission denied.\n";

// The command list of the top level or of a group; `full` adds the global
// flags and exit codes.
std::string TopLevelUsage(absl::string_view group, bool full) {
  std::string out =
      group.empty()
          ? "Usage: conveyor [GLOBAL FLAGS] COMMAND [FLAGS] [ARGS]\n\nCommands:\n"
          : absl::StrCat("Usage: conveyor ", group, " SUBCOMMAND [FLAGS] [ARGS]\n\nSubcommands:\n");
  for (const CommandSpec& command : Commands()) {
    if (!group.empty() && !absl::StartsWith(command.name, absl::StrCat(group, " "))) continue;
    absl::StrAppendFormat(&out, "  %-28s %s\n", CommandLine(command), command.summary);
  }
  if (!full) {
    absl::StrAppend(&out, "Run `conveyor --help` for more.\n");
    return out;
  }
  absl::StrAppend(&out, "\n", kGlobalUsage, "\n",
                  "Run `conveyor COMMAND --help` for a command's flags.\n\n", kExitCodes);
  return out;
}

std::string CommandUsage(const CommandSpec& command) {
  std::string out =
      absl::StrCat("Usage: conveyor ", command.name, command.flags.empty() ? "" : " [FLAGS]",
                   *command.args != '\0' ? " " : "", command.args, "\n\n", command.summary, "\n");
  if (*command.details != '\0') absl::StrAppend(&out, "\n", Wrap(command.details, 0), "\n");
  if (!command.flags.empty()) {
    absl::StrAppend(&out, "\nFlags:\n");
    for (const FlagSpec& flag : command.flags) absl::StrAppend(&out, FlagUsage(flag));
  }
  absl::StrAppend(&out, "\n", kGlobalUsage, "\n", kExitCodes);
  return out;
}

absl::Status CheckUint32(absl::string_view flag, uint64_t value) {
  if (value > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " is too large: ", value));
  }
  return absl::OkStatus();
}

// Sets a Duration field only when its flag was given: `mutable_field` is
// called only then, so an absent flag leaves the field unset.
template <typename MutableField>
void SetDuration(const Invocation& inv, absl::string_view flag, MutableField mutable_field) {
  if (std::optional<absl::Duration> d = inv.Duration(flag)) ToProto(*d, mutable_field());
}

absl::Status ApplyRetryFlags(const Invocation& inv, v1::RetryPolicy* retry) {
  if (std::optional<uint64_t> n = inv.Uint("max-attempts")) {
    if (absl::Status s = CheckUint32("max-attempts", *n); !s.ok()) return s;
    retry->set_max_attempts(static_cast<uint32_t>(*n));
  }
  SetDuration(inv, "initial-backoff", [&] { return retry->mutable_initial_backoff(); });
  SetDuration(inv, "max-backoff", [&] { return retry->mutable_max_backoff(); });
  if (std::optional<double> x = inv.Double("multiplier")) retry->set_multiplier(*x);
  if (std::optional<double> x = inv.Double("jitter")) retry->set_jitter(*x);
  return absl::OkStatus();
}

}  // namespace

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec>* commands = new std::vector<CommandSpec>(BuildCommands());
  return *commands;
}

const CommandSpec* FindCommand(absl::string_view name) {
  for (const CommandSpec& command : Commands()) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

bool Invocation::Has(absl::string_view flag) const { return flags.contains(flag); }

std::optional<std::string> Invocation::String(absl::string_view flag) const {
  auto it = flags.find(flag);
  if (it == flags.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Invocation::Strings(absl::string_view flag) const {
  auto it = flags.find(flag);
  if (it == flags.end()) return {};
  return it->second;
}

std::optional<uint64_t> Invocation::Uint(absl::string_view flag) const {
  std::optional<std::string> raw = String(flag);
  uint64_t n;
  if (!raw.has_value() || !absl::SimpleAtoi(*raw, &n)) return std::nullopt;
  return n;
}

std::optional<double> Invocation::Double(absl::string_view flag) const {
  std::optional<std::string> raw = String(flag);
  double x;
  if (!raw.has_value() || !absl::SimpleAtod(*raw, &x)) return std::nullopt;
  return x;
}

std::optional<absl::Duration> Invocation::Duration(absl::string_view flag) const {
  std::optional<std::string> raw = String(flag);
  absl::Duration d;
  if (!raw.has_value() || !absl::ParseDuration(*raw, &d)) return std::nullopt;
  return d;
}

bool Invocation::Bool(absl::string_view flag) const {
  std::optional<std::string> raw = String(flag);
  return raw.has_value() && *raw == "true";
}

absl::Status ParseCommandLine(const std::vector<std::string>& args, absl::string_view env_addr,
                              Invocation* out) {
  *out = Invocation();
  if (!env_addr.empty()) out->globals.addr = std::string(env_addr);
  bool flags_done = false;
  bool help_mode = false;  // `conveyor help TOPIC...`
  size_t next = 0;
  while (next < args.size()) {
    const std::string& arg = args[next++];
    if (!flags_done && arg == "--") {
      flags_done = true;
      continue;
    }
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      if (out->command != nullptr) {
        out->args.push_back(arg);
        continue;
      }
      if (absl::Status s = ResolveWord(arg, &help_mode, out); !s.ok()) return s;
      continue;
    }
    // A flag: --name, --name=value, -o, -o=value, -ojson, -h.
    std::string name;
    std::optional<std::string> value;
    if (absl::StartsWith(arg, "--")) {
      name = arg.substr(2);
    } else if (arg.size() > 2 && arg[1] == 'o' && arg[2] != '=') {
      name = "o";
      value = arg.substr(2);
    } else {
      name = arg.substr(1);
    }
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    absl::StatusOr<bool> global = ParseGlobal(name, value, args, &next, out);
    if (!global.ok()) return global.status();
    if (*global) continue;
    if (out->command == nullptr) {
      return UsageError(out->topic, absl::StrCat("unknown flag \"", arg, "\""));
    }
    const FlagSpec* flag = FindFlag(*out->command, name);
    if (flag == nullptr || !absl::StartsWith(arg, "--")) {
      return UsageError(out->topic, absl::StrCat("unknown flag \"", arg, "\""));
    }
    if (!value.has_value()) {
      if (flag->type == FlagType::kBool) {
        value = "true";
      } else if (next < args.size()) {
        value = args[next++];
      } else {
        return UsageError(out->topic, absl::StrCat("--", name, " needs a value"));
      }
    }
    absl::StatusOr<std::string> checked = CheckValue(flag->type, *value);
    if (!checked.ok()) {
      return UsageError(out->topic, absl::StrCat("--", name, ": ", checked.status().message()));
    }
    std::vector<std::string>& values = out->flags[name];
    if (!flag->repeated) values.clear();
    values.push_back(*std::move(checked));
  }

  if (out->help) {
    if (help_mode && !out->topic.empty() && !IsGroup(out->topic) &&
        FindCommand(out->topic) == nullptr) {
      const std::string topic = std::exchange(out->topic, "");
      return absl::InvalidArgumentError(absl::StrCat("unknown command \"", topic, "\""));
    }
    return absl::OkStatus();
  }
  if (out->command == nullptr) {
    if (out->topic.empty()) return absl::InvalidArgumentError("no command given");
    return UsageError(out->topic, "missing subcommand");
  }
  const CommandSpec& command = *out->command;
  const int count = static_cast<int>(out->args.size());
  if (count < command.min_args) {
    return UsageError(out->topic, absl::StrCat("expected ", command.args));
  }
  if (command.max_args >= 0 && count > command.max_args) {
    return UsageError(out->topic,
                      absl::StrCat("unexpected argument \"", out->args[command.max_args], "\""));
  }
  return absl::OkStatus();
}

std::string Usage(absl::string_view topic) {
  if (const CommandSpec* command = FindCommand(topic)) return CommandUsage(*command);
  if (IsGroup(topic)) return TopLevelUsage(topic, /*full=*/true);
  return TopLevelUsage("", /*full=*/true);
}

std::string ShortUsage(absl::string_view topic) {
  if (const CommandSpec* command = FindCommand(topic)) {
    return absl::StrCat("Usage: conveyor ", command->name, command->flags.empty() ? "" : " [FLAGS]",
                        *command->args != '\0' ? " " : "", command->args, "\nRun `conveyor ",
                        command->name, " --help` for more.\n");
  }
  return TopLevelUsage(IsGroup(topic) ? topic : "", /*full=*/false);
}

absl::StatusOr<RoleSet> TokenRoles(const Invocation& inv) {
  RoleSet roles;
  for (const std::string& value : inv.Strings("role")) {
    absl::StatusOr<RoleSet> parsed = ParseRoles(value);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--role: ", parsed.status().message()));
    }
    roles.AddAll(*parsed);
  }
  return roles;
}

absl::StatusOr<v1::TaskState> ParseTaskState(absl::string_view text) {
  std::string upper = absl::AsciiStrToUpper(text);
  if (!absl::StartsWith(upper, "TASK_STATE_")) upper = absl::StrCat("TASK_STATE_", upper);
  v1::TaskState state;
  if (!v1::TaskState_Parse(upper, &state) || state == v1::TASK_STATE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown state \"", text,
        "\" (scheduled, ready, running, succeeded, dead, canceled, expired, fallback)"));
  }
  return state;
}

absl::StatusOr<v1::FullPolicy> ParseFullPolicy(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "reject") return v1::FULL_POLICY_REJECT;
  if (lower == "wait") return v1::FULL_POLICY_WAIT;
  return absl::InvalidArgumentError(
      absl::StrCat("--full-policy must be reject or wait, got \"", text, "\""));
}

absl::Status ParseHeader(absl::string_view text, std::string* key, std::string* value) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--header must be KEY=VALUE with a non-empty key, got \"", text, "\""));
  }
  *key = std::string(text.substr(0, eq));
  *value = std::string(text.substr(eq + 1));
  return absl::OkStatus();
}

absl::StatusOr<v1::TaskSpec> BuildTaskSpec(const Invocation& inv, std::string payload,
                                           absl::Time now) {
  v1::TaskSpec spec;
  std::optional<std::string> queue = inv.String("queue");
  std::optional<std::string> type = inv.String("type");
  if (!queue.has_value() || queue->empty()) {
    return absl::InvalidArgumentError("--queue is required");
  }
  if (!type.has_value() || type->empty()) {
    return absl::InvalidArgumentError("--type is required");
  }
  spec.set_queue(*queue);
  spec.set_type(*type);
  spec.set_payload(std::move(payload));
  if (std::optional<uint64_t> priority = inv.Uint("priority")) {
    if (*priority > 9) {
      return absl::InvalidArgumentError(absl::StrCat("--priority must be 0-9, got ", *priority));
    }
    spec.set_priority(static_cast<uint32_t>(*priority));
  }
  SetDuration(inv, "delay", [&] { return spec.mutable_delay(); });
  SetDuration(inv, "task-timeout", [&] { return spec.mutable_timeout(); });
  if (std::optional<uint64_t> n = inv.Uint("max-attempts")) {
    if (absl::Status s = CheckUint32("max-attempts", *n); !s.ok()) return s;
    spec.mutable_retry()->set_max_attempts(static_cast<uint32_t>(*n));
  }
  if (std::optional<std::string> key = inv.String("idempotency-key")) {
    spec.set_idempotency_key(*key);
  }
  for (const std::string& header : inv.Strings("header")) {
    std::string key, value;
    if (absl::Status s = ParseHeader(header, &key, &value); !s.ok()) return s;
    (*spec.mutable_headers())[key] = value;
  }
  if (std::optional<absl::Duration> d = inv.Duration("expires-in")) {
    ToProto(now + *d, spec.mutable_expires_at());
  }
  if (std::optional<std::string> key = inv.String("rate-key")) spec.set_rate_key(*key);
  if (std::optional<std::string> key = inv.String("concurrency-key")) {
    spec.set_concurrency_key(*key);
  }
  if (std::optional<std::string> text = inv.String("fallback")) spec.set_fallback_result(*text);
  if (absl::Status s = ApplyThenFlags(inv, &spec); !s.ok()) return s;
  return spec;
}

absl::StatusOr<double> ParseRate(absl::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a rate: \"", text, "\" (use N/s, N/m or N/h, e.g. 50/s, 100/m, 0.5)"));
  };
  absl::string_view number = text;
  double per = 1;
  if (size_t slash = text.find('/'); slash != absl::string_view::npos) {
    number = text.substr(0, slash);
    const absl::string_view unit = text.substr(slash + 1);
    if (unit == "s") {
      per = 1;
    } else if (unit == "m") {
      per = 60;
    } else if (unit == "h") {
      per = 3600;
    } else {
      return bad();
    }
  }
  double n;
  if (number.empty() || absl::StripAsciiWhitespace(number) != number ||
      !absl::SimpleAtod(number, &n) || !std::isfinite(n)) {
    return bad();
  }
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("negative rate: \"", text, "\""));
  return n / per;
}

absl::Status ParseKeyed(absl::string_view flag, absl::string_view text, std::string* key,
                        std::string* value) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " must be KEY=VALUE with a non-empty key and value, got \"", text, "\""));
  }
  *key = std::string(text.substr(0, eq));
  *value = std::string(text.substr(eq + 1));
  return absl::OkStatus();
}

namespace {

// A rate flag's value, per second; the error names the flag.
absl::StatusOr<double> RateFlag(absl::string_view flag, absl::string_view text) {
  absl::StatusOr<double> rate = ParseRate(text);
  if (!rate.ok()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", rate.status().message()));
  return rate;
}

absl::StatusOr<uint32_t> Uint32Flag(const Invocation& inv, absl::string_view flag) {
  std::optional<uint64_t> n = inv.Uint(flag);
  if (!n.has_value()) return 0u;
  if (absl::Status s = CheckUint32(flag, *n); !s.ok()) return s;
  return static_cast<uint32_t>(*n);
}

// Fills Limits (create) or LimitsUpdate (update) from the limit flags. On
// create a 0 is no limit and is left out; on update it is sent, and removes
// the limit. `current` (update only) is the queue's limits: a rate given
// without --burst keeps the current burst, --burst alone the current rate.
template <typename LimitsMessage>
absl::Status ApplyLimitFlags(const Invocation& inv, bool update, const v1::Limits& current,
                             LimitsMessage* out) {
  // The queue's rate and burst.
  std::optional<double> rate;
  if (std::optional<std::string> text = inv.String("rate")) {
    absl::StatusOr<double> r = RateFlag("rate", *text);
    if (!r.ok()) return r.status();
    rate = *r;
  }
  absl::StatusOr<uint32_t> burst = Uint32Flag(inv, "burst");
  if (!burst.ok()) return burst.status();
  if (inv.Has("burst")) {
    if (rate.has_value() && *rate == 0) {
      return absl::InvalidArgumentError("--burst cannot go with --rate 0, which removes the rate");
    }
    if (!rate.has_value()) {
      if (!update) return absl::InvalidArgumentError("--burst needs --rate");
      if (!current.has_rate()) {
        return absl::InvalidArgumentError(
            "--burst needs --rate: the queue has no rate whose burst could change");
      }
      rate = current.rate().per_second();
    }
  }
  if (rate.has_value() && (update || *rate > 0)) {
    v1::RateLimit* r = out->mutable_rate();
    r->set_per_second(*rate);
    if (*rate > 0) {
      r->set_burst(inv.Has("burst") ? *burst : current.rate().burst());
    }
  }

  absl::StatusOr<uint32_t> max_running = Uint32Flag(inv, "max-running");
  if (!max_running.ok()) return max_running.status();
  if (inv.Has("max-running")) out->set_max_running(*max_running);
  absl::StatusOr<uint32_t> key_max_running = Uint32Flag(inv, "key-max-running");
  if (!key_max_running.ok()) return key_max_running.status();
  if (inv.Has("key-max-running")) out->set_key_max_running(*key_max_running);

  // Key rates keep the burst they have: the CLI has no flag for it.
  if (std::optional<std::string> text = inv.String("key-rate")) {
    absl::StatusOr<double> r = RateFlag("key-rate", *text);
    if (!r.ok()) return r.status();
    if (update || *r > 0) {
      out->mutable_key_rate()->set_per_second(*r);
      if (*r > 0) out->mutable_key_rate()->set_burst(current.key_rate().burst());
    }
  }
  for (const std::string& entry : inv.Strings("key-rate-for")) {
    std::string key, value;
    if (absl::Status s = ParseKeyed("key-rate-for", entry, &key, &value); !s.ok()) return s;
    absl::StatusOr<double> r = RateFlag(absl::StrCat("key-rate-for ", key), value);
    if (!r.ok()) return r.status();
    if (!update && *r == 0) continue;
    v1::RateLimit& limit = (*out->mutable_key_rates())[key];
    limit.set_per_second(*r);
    if (*r > 0) {
      auto it = current.key_rates().find(key);
      if (it != current.key_rates().end()) limit.set_burst(it->second.burst());
    }
  }
  for (const std::string& entry : inv.Strings("pool")) {
    std::string key, value;
    if (absl::Status s = ParseKeyed("pool", entry, &key, &value); !s.ok()) return s;
    uint32_t size;
    if (value[0] == '-' || !absl::SimpleAtoi(value, &size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--pool ", key, ": size must be a non-negative integer below 2^32, got \"", value,
          "\""));
    }
    if (!update && size == 0) continue;
    (*out->mutable_pools())[key] = size;
  }
  return absl::OkStatus();
}

bool HasLimitFlags(const Invocation& inv) {
  for (absl::string_view flag : {"rate", "burst", "max-running", "key-rate", "key-rate-for",
                                 "key-max-running", "pool"}) {
    if (inv.Has(flag)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<v1::CreateQueueRequest> BuildCreateQueueRequest(const Invocation& inv) {
  if (inv.args.empty()) return absl::InvalidArgumentError("expected NAME");
  v1::CreateQueueRequest request;
  v1::QueueConfig* config = request.mutable_config();
  config->set_name(inv.args[0]);
  if (std::optional<uint64_t> n = inv.Uint("capacity")) config->set_capacity(*n);
  if (std::optional<std::string> policy = inv.String("full-policy")) {
    absl::StatusOr<v1::FullPolicy> p = ParseFullPolicy(*policy);
    if (!p.ok()) return p.status();
    config->set_full_policy(*p);
  }
  if (HasRetryFlags(inv)) {
    if (absl::Status s = ApplyRetryFlags(inv, config->mutable_retry()); !s.ok()) return s;
  }
  SetDuration(inv, "default-timeout", [&] { return config->mutable_default_timeout(); });
  SetDuration(inv, "lease-duration", [&] { return config->mutable_lease_duration(); });
  if (std::optional<uint64_t> n = inv.Uint("max-crashes")) {
    if (absl::Status s = CheckUint32("max-crashes", *n); !s.ok()) return s;
    config->set_max_crashes(static_cast<uint32_t>(*n));
  }
  SetDuration(inv, "result-ttl", [&] { return config->mutable_result_ttl(); });
  if (std::optional<uint64_t> n = inv.Uint("retained")) config->set_retained(*n);
  if (HasLimitFlags(inv)) {
    if (absl::Status s = ApplyLimitFlags(inv, /*update=*/false, v1::Limits(),
                                         config->mutable_limits());
        !s.ok()) {
      return s;
    }
  }
  request.set_paused(inv.Bool("paused"));
  return request;
}

bool HasRetryFlags(const Invocation& inv) {
  for (absl::string_view flag :
       {"max-attempts", "initial-backoff", "max-backoff", "multiplier", "jitter"}) {
    if (inv.Has(flag)) return true;
  }
  return false;
}

bool NeedsCurrentConfig(const Invocation& inv) {
  for (absl::string_view flag : {"rate", "burst", "key-rate", "key-rate-for"}) {
    if (inv.Has(flag)) return true;
  }
  return HasRetryFlags(inv);
}

absl::StatusOr<v1::UpdateQueueRequest> BuildUpdateQueueRequest(const Invocation& inv,
                                                               const v1::QueueConfig& current) {
  if (inv.args.empty()) return absl::InvalidArgumentError("expected NAME");
  v1::UpdateQueueRequest request;
  request.set_name(inv.args[0]);
  if (std::optional<uint64_t> n = inv.Uint("capacity")) request.set_capacity(*n);
  if (std::optional<std::string> policy = inv.String("full-policy")) {
    absl::StatusOr<v1::FullPolicy> p = ParseFullPolicy(*policy);
    if (!p.ok()) return p.status();
    request.set_full_policy(*p);
  }
  if (HasRetryFlags(inv)) {
    *request.mutable_retry() = current.retry();
    if (absl::Status s = ApplyRetryFlags(inv, request.mutable_retry()); !s.ok()) return s;
  }
  SetDuration(inv, "default-timeout", [&] { return request.mutable_default_timeout(); });
  SetDuration(inv, "lease-duration", [&] { return request.mutable_lease_duration(); });
  if (std::optional<uint64_t> n = inv.Uint("max-crashes")) {
    if (absl::Status s = CheckUint32("max-crashes", *n); !s.ok()) return s;
    request.set_max_crashes(static_cast<uint32_t>(*n));
  }
  SetDuration(inv, "result-ttl", [&] { return request.mutable_result_ttl(); });
  if (std::optional<uint64_t> n = inv.Uint("retained")) request.set_retained(*n);
  if (HasLimitFlags(inv)) {
    if (absl::Status s = ApplyLimitFlags(inv, /*update=*/true, current.limits(),
                                         request.mutable_limits());
        !s.ok()) {
      return s;
    }
  }
  return request;
}

}  // namespace conveyor::client
