// conveyor-worker: the Conveyor worker daemon. The SDK's Worker
// (worker/worker.h) plus the built-in handlers, --exec and --exec-batch
// handlers and flags.
// Parses flags, starts the worker, waits for SIGTERM or SIGINT, drains,
// exits 0.
#include <signal.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/security.h"
#include "common/signals.h"
#include "worker/batch.h"
#include "worker/builtin_handlers.h"
#include "worker/exec_batch.h"
#include "worker/exec_handler.h"
#include "worker/rate_limiter.h"
#include "worker/worker.h"

// Repeatable flags: collected from the command line before Abseil parses
// the rest (Abseil keeps only the last value of a repeated flag). They are
// declared here so that --help lists them.
ABSL_FLAG(std::string, broker, "",
          "Broker host:port to lease from. Repeatable (or comma-separated): the worker "
          "serves every broker given. Default: $CONVEYOR_ADDR, else 127.0.0.1:7400.");
ABSL_FLAG(std::string, queue, "",
          "Queue to serve. Repeatable (or comma-separated), 1 to 64 queues. Required.");
ABSL_FLAG(std::string, exec, "",
          "TYPE=COMMAND: run `/bin/sh -c COMMAND` for tasks of TYPE, payload on stdin, "
          "stdout as the result. Exit 0 success, 65 permanent failure, 76 throttled "
          "(the delay on stdout, e.g. 2s, at most 1h, default 1s: the broker pauses the "
          "task's rate key, or its queue, for that long and puts the task back without "
          "spending an attempt), anything else or a signal a retryable failure. "
          "Env: CONVEYOR_TASK_ID, CONVEYOR_TASK_TYPE, CONVEYOR_QUEUE, "
          "CONVEYOR_ATTEMPT, CONVEYOR_FENCING_TOKEN, CONVEYOR_DEADLINE (RFC 3339), "
          "TRACEPARENT. Stderr lines \"PROGRESS <percent> [message]\" report progress. "
          "Repeatable.");
ABSL_FLAG(std::string, exec_batch, "",
          "TYPE=COMMAND: run `/bin/sh -c COMMAND` once per batch of tasks of TYPE (up to "
          "--batch TYPE=N, default 10). stdin: one JSON line per task, "
          "{\"id\":\"...\",\"queue\":\"...\",\"payload\":\"<base64>\",\"attempt\":1,"
          "\"max_attempts\":3,\"headers\":{...}}. stdout: one JSON line per task, any order: "
          "{\"id\":\"...\",\"ok\":true,\"result\":\"<base64>\"} or "
          "{\"id\":\"...\",\"ok\":false,\"error\":\"...\"} (add \"retryable\":false to "
          "not retry; \"throttled\":true,\"retry_after\":\"2s\" to throttle). stdout holds "
          "answers only. A task left unanswered fails by the exit code: 0 retryable "
          "(reason missing_answer), 65 not retried, 76 throttled, anything else or a "
          "signal retryable; an answer stands whatever the exit code. A malformed line is "
          "named in the error of every unanswered task. The batch's deadline is the "
          "earliest of its tasks'; timeout, drain or the cancel of every task signal the "
          "process group. Env: CONVEYOR_TASK_TYPE, CONVEYOR_BATCH_SIZE, CONVEYOR_QUEUE "
          "(when one queue), CONVEYOR_DEADLINE. Stderr PROGRESS lines set every task's "
          "progress. Repeatable.");
ABSL_FLAG(std::string, batch, "",
          "TYPE=N[:LINGER]: batch size and linger of a batch type (--exec-batch types and "
          "the built-in batch_echo): up to N tasks (1 to 1000, default 10) run together "
          "in one slot; a batch that is not full waits up to LINGER (0 to 10s, default "
          "50ms) for more tasks of TYPE before it runs. Repeatable.");
ABSL_FLAG(std::string, rate, "",
          "TYPE=N/s (or N/m, N/h): local token-bucket limit for tasks of TYPE on this "
          "worker (burst max(1, N per second)). A task waits for a token before its "
          "handler runs, keeping its slot; its lease is heartbeated meanwhile and the "
          "wait counts against its timeout. Repeatable.");
ABSL_FLAG(int, concurrency, 0, "Tasks run at once (the pool's slots). 0: the number of cores.");
ABSL_FLAG(int, prefetch, 0,
          "Tasks leased ahead beyond the free slots (0 to 10000), waiting for a slot: a "
          "freed slot starts the next task without a lease round trip, and leases come in "
          "bigger batches. Their leases are heartbeated and their timeouts count from the "
          "lease; on drain, those not started are handed back. Raise it for many short "
          "tasks; keep 0 when tasks are long or must not wait behind each other.");
ABSL_FLAG(std::string, worker_id, "", "Worker identity shown by the broker. Default host:pid.");
ABSL_FLAG(bool, enable_test_handlers, false,
          "Also register the `crash` handler, which ends the worker process at once "
          "(for tests of the crash budget). Never in production.");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::ZeroDuration(),
          "Heartbeat pace. 0: a third of the lease time seen in Lease answers, within "
          "[100ms, 10s].");
ABSL_FLAG(absl::Duration, grace, absl::Seconds(25),
          "On SIGTERM/SIGINT: how long running tasks may finish before they are cancelled "
          "and handed back (Release, spending no attempt). A second signal exits at once.");
ABSL_FLAG(absl::Duration, lease_wait, absl::ZeroDuration(),
          "Long-poll wait of each Lease call (at most 60s). 0: 20s with one broker, 2s "
          "with several.");
ABSL_FLAG(absl::Duration, rpc_timeout, absl::Seconds(5),
          "Deadline of each Heartbeat, Complete, Fail and Release call.");
ABSL_FLAG(absl::Duration, exec_kill_grace, absl::Seconds(5),
          "--exec and --exec-batch commands: after SIGTERM (timeout, cancel, drain), SIGKILL "
          "to the process group once this has passed.");
ABSL_FLAG(uint64_t, max_output_bytes, 1 << 20,
          "--exec commands: more stdout than this fails the attempt (retryable). "
          "--exec-batch commands: a task's decoded result over this fails that task "
          "(retryable).");
ABSL_FLAG(uint64_t, max_pending_reports, 10000,
          "Results kept per broker while it cannot be reached (at least twice "
          "--concurrency plus --prefetch); past half of it the worker leases no more, "
          "and past all of it the oldest are dropped (the broker retries those tasks when "
          "their leases expire).");
ABSL_FLAG(std::string, metrics_addr, "127.0.0.1:9465",
          "host:port for the Prometheus /metrics endpoint (port 0 picks one); empty "
          "disables it.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, write the bound metrics port to this file once listening.");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");
ABSL_FLAG(bool, tls, false,
          "Connect to the brokers with TLS, trusting the system's CA roots (env CONVEYOR_TLS=1).");
ABSL_FLAG(std::string, tls_ca, "",
          "CA bundle (PEM) that signed the brokers' certificates; implies --tls (env "
          "CONVEYOR_TLS_CA). Re-read every minute.");
ABSL_FLAG(std::string, tls_cert, "",
          "Client certificate (PEM) for mTLS, with --tls-key (env CONVEYOR_TLS_CERT). Re-read "
          "every minute, so a rotated certificate needs no restart.");
ABSL_FLAG(std::string, tls_key, "", "Private key of --tls-cert (env CONVEYOR_TLS_KEY).");
ABSL_FLAG(std::string, token, "",
          "Bearer token with the `work` role, for brokers with --auth-tokens (env "
          "CONVEYOR_TOKEN; visible in ps: prefer --token-file).");
ABSL_FLAG(std::string, token_file, "",
          "Read the token from this file (env CONVEYOR_TOKEN_FILE).");

namespace {

constexpr const char* kRepeatable[] = {"broker", "queue", "exec", "exec_batch", "batch", "rate"};

// Removes every occurrence of the repeatable flags from `args` (already
// normalized: --name=value, -name=value, --name value) and returns their
// values by name, in order. Nothing after a bare "--" is touched.
absl::flat_hash_map<std::string, std::vector<std::string>> ExtractRepeatable(
    std::vector<std::string>& args, bool* missing_value) {
  absl::flat_hash_map<std::string, std::vector<std::string>> out;
  std::vector<std::string> kept;
  *missing_value = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (i == 0 || arg == "--" || arg.size() < 2 || arg[0] != '-') {
      if (arg == "--" && i > 0) {
        kept.insert(kept.end(), args.begin() + static_cast<long>(i), args.end());
        break;
      }
      kept.push_back(arg);
      continue;
    }
    absl::string_view body = arg;
    body.remove_prefix(body.size() > 2 && body[1] == '-' ? 2 : 1);
    bool matched = false;
    for (const char* name : kRepeatable) {
      if (body == name) {
        if (i + 1 >= args.size()) {
          *missing_value = true;
        } else {
          out[name].push_back(args[++i]);
        }
        matched = true;
        break;
      }
      if (absl::StartsWith(body, absl::StrCat(name, "="))) {
        out[name].push_back(std::string(body.substr(std::string(name).size() + 1)));
        matched = true;
        break;
      }
    }
    if (!matched) kept.push_back(arg);
  }
  args.swap(kept);
  return out;
}

std::vector<std::string> SplitCommas(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const std::string& v : values) {
    for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
      out.emplace_back(part);
    }
  }
  return out;
}

bool WritePortFile(const std::string& path, int port) {
  std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!(out << port << "\n")) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "conveyor-worker: %s\n", message.c_str());
  return EX_USAGE;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists (gRPC's, the worker's): main alone takes the
  // stop signals.
  const sigset_t stop_signals = conveyor::BlockStopSignals();
  conveyor::SetDaemonDefaults();
  conveyor::ListFlagsFromFile("worker/main.cc");
  absl::SetProgramUsageMessage(
      "pulls tasks from Conveyor brokers and runs them.\n"
      "Usage: conveyor-worker --queue=Q [--queue=Q2] [--broker=HOST:PORT ...] "
      "[--exec TYPE=COMMAND ...] [--exec-batch TYPE=COMMAND ...] [--batch TYPE=N[:LINGER] ...] "
      "[--rate TYPE=N/s ...] [flags]\n"
      "Built-in task types: noop; echo (result = payload); sleep (payload a duration "
      "such as 2s or 150ms); fail (payload the message, retryable; a payload starting "
      "with \"permanent:\" is not retried); sum_squares (payload n; result the sum of "
      "i*i for i < n, exact in 128 bits); batch_echo (a batch type: result "
      "\"<batch size>:<payload>\"; payload \"fail:...\" fails that task, \"permanent:...\" "
      "for good, \"flaky:...\" on its first attempt only); crash (only with "
      "--enable-test-handlers).\n"
      "Batch types (--exec-batch, batch_echo) run up to N tasks of their type in one slot "
      "and report per task; set N and the linger with --batch TYPE=N[:LINGER].\n"
      "Each attempt is bounded by its task's timeout: a late attempt is cancelled and "
      "reported as a retryable failure with reason \"timeout\".\n"
      "Flags may be spelled with dashes or underscores (--metrics-addr, "
      "--metrics_addr). Drains and exits 0 on SIGTERM or SIGINT.");
  std::vector<std::string> args = conveyor::NormalizeFlagNames(argc, argv);
  bool missing_value = false;
  absl::flat_hash_map<std::string, std::vector<std::string>> repeated =
      ExtractRepeatable(args, &missing_value);
  std::vector<char*> argv2 = conveyor::ArgvOf(args);
  absl::ParseCommandLine(static_cast<int>(args.size()), argv2.data());
  if (missing_value) {
    return Usage("--broker, --queue, --exec, --exec-batch, --batch and --rate need a value");
  }

  conveyor::LogLevel level;
  if (!conveyor::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    return Usage(absl::StrCat("--log-level=", absl::GetFlag(FLAGS_log_level),
                              ": use debug, info, warning or error"));
  }
  conveyor::SetLogLevel(level);

  namespace cw = conveyor::worker;
  cw::WorkerOptions options;
  options.brokers = SplitCommas(repeated["broker"]);
  if (options.brokers.empty()) {
    // Like the CLI: CONVEYOR_ADDR, else the broker's default address.
    const char* env = std::getenv("CONVEYOR_ADDR");
    options.brokers = {env != nullptr && *env != '\0' ? std::string(env) : "127.0.0.1:7400"};
  }
  options.queues = SplitCommas(repeated["queue"]);
  if (options.queues.empty()) return Usage("give at least one --queue to serve");
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  if (options.concurrency < 0) return Usage("--concurrency must not be negative");
  options.prefetch = absl::GetFlag(FLAGS_prefetch);
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.grace = absl::GetFlag(FLAGS_grace);
  options.lease_wait = absl::GetFlag(FLAGS_lease_wait);
  options.rpc_timeout = absl::GetFlag(FLAGS_rpc_timeout);
  options.max_pending_reports = absl::GetFlag(FLAGS_max_pending_reports);
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  conveyor::ClientSecurityFlags security_flags;
  security_flags.tls = absl::GetFlag(FLAGS_tls);
  security_flags.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  security_flags.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  security_flags.tls_key = absl::GetFlag(FLAGS_tls_key);
  security_flags.token = absl::GetFlag(FLAGS_token);
  security_flags.token_file = absl::GetFlag(FLAGS_token_file);
  absl::StatusOr<conveyor::ClientSecurity> security =
      conveyor::ResolveClientSecurity(security_flags);
  if (!security.ok()) return Usage(std::string(security.status().message()));
  options.security = *security;
  cw::ExecHandlerOptions exec_options;
  exec_options.kill_grace = absl::GetFlag(FLAGS_exec_kill_grace);
  exec_options.max_output_bytes = absl::GetFlag(FLAGS_max_output_bytes);
  if (exec_options.kill_grace < absl::ZeroDuration()) {
    return Usage("--exec-kill-grace must not be negative");
  }
  // The drain waits for cancelled commands to die: SIGTERM, then SIGKILL.
  options.cancel_wait = exec_options.kill_grace + absl::Seconds(5);
  for (const std::string& text : repeated["rate"]) {
    absl::StatusOr<cw::RateLimit> limit = cw::ParseRateLimit(text);
    if (!limit.ok()) return Usage(std::string(limit.status().message()));
    options.rate_limits.push_back(*limit);
  }

  // --batch TYPE=N[:LINGER], taken by the batch types registered below.
  absl::flat_hash_map<std::string, cw::BatchOptions> batch_options;
  for (const std::string& text : repeated["batch"]) {
    absl::StatusOr<cw::BatchSpec> spec = cw::ParseBatchSpec(text);
    if (!spec.ok()) return Usage(std::string(spec.status().message()));
    if (!batch_options.emplace(spec->type, spec->options).second) {
      return Usage(absl::StrCat("--batch ", text, ": the type \"", spec->type,
                                "\" is given more than once"));
    }
  }
  auto take_batch_options = [&batch_options](const std::string& type) {
    cw::BatchOptions o;
    auto it = batch_options.find(type);
    if (it != batch_options.end()) {
      o = it->second;
      batch_options.erase(it);
    }
    return o;
  };

  cw::Worker worker(options);
  if (absl::Status s = cw::RegisterBuiltinHandlers(worker, absl::GetFlag(FLAGS_enable_test_handlers),
                                                   take_batch_options("batch_echo"));
      !s.ok()) {
    return Usage(std::string(s.message()));
  }
  for (const std::string& text : repeated["exec"]) {
    absl::StatusOr<cw::ExecSpec> spec = cw::ParseExecSpec(text);
    if (!spec.ok()) return Usage(std::string(spec.status().message()));
    if (absl::Status s = worker.Register(spec->type, cw::MakeExecHandler(spec->command, exec_options));
        !s.ok()) {
      return Usage(absl::StrCat("--exec ", text, ": ", s.message(),
                                " (built-in types cannot be replaced)"));
    }
  }
  for (const std::string& text : repeated["exec_batch"]) {
    absl::StatusOr<cw::ExecSpec> spec = cw::ParseExecSpec(text, "--exec-batch");
    if (!spec.ok()) return Usage(std::string(spec.status().message()));
    if (absl::Status s = worker.RegisterBatch(
            spec->type, cw::MakeExecBatchHandler(spec->command, exec_options),
            take_batch_options(spec->type));
        !s.ok()) {
      return Usage(absl::StrCat("--exec-batch ", text, ": ", s.message(),
                                " (a type has one handler; built-in types cannot be replaced)"));
    }
  }
  for (const auto& [type, unused] : batch_options) {
    const std::vector<std::string> types = worker.types();
    return Usage(absl::StrCat(
        "--batch ", type, "=...: ",
        std::binary_search(types.begin(), types.end(), type)
            ? absl::StrCat("\"", type, "\" is not a batch type (--batch applies to "
                           "--exec-batch types and batch_echo)")
            : absl::StrCat("no handler for type \"", type, "\"")));
  }
  for (const cw::RateLimit& limit : options.rate_limits) {
    const std::vector<std::string> types = worker.types();
    if (!std::binary_search(types.begin(), types.end(), limit.type)) {
      return Usage(absl::StrCat("--rate ", limit.type, "=...: no handler for type \"",
                                limit.type, "\""));
    }
  }

  if (absl::Status s = worker.Start(); !s.ok()) {
    conveyor::LogError("cannot start", {{"error", s}});
    return s.code() == absl::StatusCode::kInvalidArgument ? EX_USAGE : EX_UNAVAILABLE;
  }
  const std::string port_file = absl::GetFlag(FLAGS_metrics_port_file);
  if (!port_file.empty() && !WritePortFile(port_file, worker.metrics_port())) {
    conveyor::LogError("cannot write the metrics port file", {{"path", port_file}});
    worker.Shutdown();
    return EX_CANTCREAT;
  }

  conveyor::AwaitStopSignal(stop_signals);
  worker.Shutdown();
  return 0;
}
