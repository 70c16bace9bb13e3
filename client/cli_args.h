// Command-line parsing for the `conveyor` CLI: the command table, a small
// hand-written parser (each subcommand has its own flags), usage text, and
// the builders that turn parsed flags into API requests.
//
// Grammar: conveyor [GLOBALS] COMMAND [SUBCOMMAND] [FLAGS] [ARGS]
//   - Globals (--addr, --timeout, -o/--output, -h/--help, TLS and token
//     flags) may appear anywhere.
//   - Flags take `--flag=value` or `--flag value`; boolean flags take no
//     value (or `--flag=true|false`). Non-repeatable flags: the last wins.
//   - `--` ends flags; a lone `-` is an argument (stdin).
//
// Everything here is pure (no I/O, no network), so it is unit-tested
// directly. Errors are INVALID_ARGUMENT with a message meant for the user;
// the CLI prints them with the command's usage and exits 64 (EX_USAGE).
// Thread-safety: the command table is immutable; the rest is functions.
#ifndef CONVEYOR_CLIENT_CLI_ARGS_H_
#define CONVEYOR_CLIENT_CLI_ARGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/security.h"
#include "common/token.h"
#include "conveyor/v1/conveyor.pb.h"

namespace conveyor::client {

inline constexpr char kDefaultAddress[] = "127.0.0.1:7400";

enum class OutputFormat { kText, kJson };

struct GlobalOptions {
  // --addr, else $CONVEYOR_ADDR, else kDefaultAddress.
  std::string addr = kDefaultAddress;
  // --timeout: deadline of each call.
  absl::Duration timeout = absl::Seconds(10);
  // -o / --output.
  OutputFormat output = OutputFormat::kText;
  // --tls, --tls-ca, --tls-cert, --tls-key, --token, --token-file (the
  // environment fills what is not given; see common/security.h).
  ClientSecurityFlags security;
};

enum class FlagType {
  kBool,  // no value; --flag=true|false also accepted
  kString,
  kUint,      // a non-negative integer
  kDouble,    // a finite number
  kDuration,  // absl duration syntax (500ms, 2s, 1h30m), finite, not negative
};

struct FlagSpec {
  const char* name;  // without the leading "--"
  FlagType type;
  const char* value_name;  // shown in usage: "N", "DUR", ...
  const char* help;
  bool repeated = false;
};

struct CommandSpec {
  const char* name;     // "submit", "queue create", ...
  const char* args;     // positional synopsis: "ID", "QUEUE [ID...]", ""
  const char* summary;  // one short line
  const char* details;  // more, for `conveyor COMMAND --help` ("" if none)
  int min_args;
  int max_args;  // -1: no limit
  std::vector<FlagSpec> flags;
};

// Every command, in the order usage lists them.
const std::vector<CommandSpec>& Commands();
// Null if there is no command of that full name ("queue create").
const CommandSpec* FindCommand(absl::string_view name);

// A parsed command line. Values were checked against their FlagType while
// parsing, so the typed getters cannot fail.
struct Invocation {
  GlobalOptions globals;
  // What usage to show: "" (top level), a group ("queue", "dead") or a
  // command name. Set as far as parsing got, also when it failed.
  std::string topic;
  // The command to run; null when only help was asked for.
  const CommandSpec* command = nullptr;
  // -h / --help (or `conveyor help ...`) was given: print Usage(topic).
  bool help = false;
  std::vector<std::string> args;
  // Raw values by flag name, in the order given; boolean flags hold "true"
  // or "false".
  absl::flat_hash_map<std::string, std::vector<std::string>> flags;

  bool Has(absl::string_view flag) const;
  // The last value given, if any.
  std::optional<std::string> String(absl::string_view flag) const;
  std::vector<std::string> Strings(absl::string_view flag) const;
  std::optional<uint64_t> Uint(absl::string_view flag) const;
  std::optional<double> Double(absl::string_view flag) const;
  std::optional<absl::Duration> Duration(absl::string_view flag) const;
  // False when not given.
  bool Bool(absl::string_view flag) const;
};

// Parses argv[1..] (`args` excludes the program name). `env_addr` is
// $CONVEYOR_ADDR (empty when unset). On error returns INVALID_ARGUMENT and
// leaves `out->topic` naming the usage to show.
absl::Status ParseCommandLine(const std::vector<std::string>& args, absl::string_view env_addr,
                              Invocation* out);

// Usage for a topic (see Invocation::topic); unknown topics get the top level.
std::string Usage(absl::string_view topic);
// What a usage error shows under its message: a command's synopsis and a
// pointer to its --help; a group's or the top level's command list.
std::string ShortUsage(absl::string_view topic);

// ─── Request builders (INVALID_ARGUMENT: a usage error) ───

// `conveyor token create|hash`: the union of every --role (each a name or a
// comma-separated list); empty when none was given.
absl::StatusOr<RoleSet> TokenRoles(const Invocation& inv);

// "ready", "READY" or "TASK_STATE_READY" (any case).
absl::StatusOr<v1::TaskState> ParseTaskState(absl::string_view text);
// "reject" or "wait" (any case).
absl::StatusOr<v1::FullPolicy> ParseFullPolicy(absl::string_view text);
// "key=value"; the key must not be empty.
absl::Status ParseHeader(absl::string_view text, std::string* key, std::string* value);

// A rate as tasks per second: "50/s", "100/m" (per minute), "3600/h", or a
// bare number (per second); fractions allowed, 0 too (no limit / remove),
// negative numbers not.
absl::StatusOr<double> ParseRate(absl::string_view text);
// "KEY=VALUE" of a keyed flag (--key-rate-for, --pool): key and value not
// empty; the message names `flag`.
absl::Status ParseKeyed(absl::string_view flag, absl::string_view text, std::string* key,
                        std::string* value);

// The TaskSpec of `conveyor submit`: --queue and --type are required,
// --priority must be 0-9, --expires-in counts from `now`.
absl::StatusOr<v1::TaskSpec> BuildTaskSpec(const Invocation& inv, std::string payload,
                                           absl::Time now);
// `conveyor queue create NAME [flags]`. Limit flags of 0 mean no limit and
// are left out; --burst needs --rate.
absl::StatusOr<v1::CreateQueueRequest> BuildCreateQueueRequest(const Invocation& inv);
// True if any retry flag was given.
bool HasRetryFlags(const Invocation& inv);
// True if the update is built on the queue's current settings, so the CLI
// reads them first (GetQueue) and passes them below: UpdateQueue replaces
// the whole retry policy, and a whole rate (per_second and burst) at once.
bool NeedsCurrentConfig(const Invocation& inv);
// `conveyor queue update NAME [flags]`: only the fields given are set; retry
// flags are applied on top of `current.retry()`; --rate keeps the current
// burst, --burst alone the current rate (none: an error), --key-rate and
// --key-rate-for keep their key's current burst; a limit of 0 is sent and
// removes that limit. `current` matters only when NeedsCurrentConfig().
absl::StatusOr<v1::UpdateQueueRequest> BuildUpdateQueueRequest(const Invocation& inv,
                                                               const v1::QueueConfig& current);

}  // namespace conveyor::client

#endif  // CONVEYOR_CLIENT_CLI_ARGS_H_
