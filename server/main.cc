// conveyord: the Conveyor broker. Parses flags, starts a BrokerServer, waits
// for SIGTERM or SIGINT, drains, exits 0.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/signals.h"
#include "server/auth.h"
#include "server/exposure.h"
#include "server/server.h"
#include "server/verify.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7400",
          "host:port for the gRPC API. Loopback by default; port 0 picks a free port. A "
          "non-loopback address needs TLS and --auth-tokens, or --insecure.");
ABSL_FLAG(std::string, port_file, "",
          "If set, write the bound gRPC port to this file once listening (for tests and "
          "scripts that listen on port 0).");
ABSL_FLAG(std::string, metrics_addr, "127.0.0.1:9464",
          "host:port for the Prometheus /metrics endpoint; empty disables it.");
ABSL_FLAG(std::string, health_listen, "",
          "host:port of a plaintext listener that serves only grpc.health.v1.Health (and "
          "reflection), mirroring the API's status (NOT_SERVING while draining): for "
          "Kubernetes' native gRPC probes, which cannot speak TLS. Empty: none.");
// TLS (docs/security.md, "TLS and mTLS").
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain (server certificate first) to serve the gRPC API over TLS; "
          "needs --tls-key. Empty: plaintext.");
ABSL_FLAG(std::string, tls_key, "",
          "PEM private key (unencrypted) of --tls-cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM bundle of CA certificates: with it, every client must present a certificate "
          "signed by one of them (mTLS). Needs --tls-cert and --tls-key.");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(60),
          "How often the TLS files are re-read (whole seconds, 1s to 24h); new connections "
          "use changed files without a restart. Replace a file by renaming a complete new "
          "one over it.");
// Tokens and roles, safe defaults (docs/security.md).
ABSL_FLAG(std::string, auth_tokens, "",
          "File of bearer tokens (stored as SHA-256) and client-certificate identities with "
          "their roles, one a line: `sha256:<64 hex> ROLE[,ROLE]` or `cert:<identity> "
          "ROLE[,ROLE]` (roles submit, work, admin; `conveyor token create` makes lines). With "
          "it every API call needs a role; without it every call is allowed. Re-read within a "
          "second of a change, and on SIGHUP; a bad new file keeps the old tokens.");
ABSL_FLAG(bool, insecure, false,
          "Allow serving the API on a non-loopback address without TLS (--tls-cert) and auth "
          "(--auth-tokens). Without it conveyord refuses to start there (exit 78).");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory of the durable journal (created if missing; one broker per "
          "directory). Empty: keep everything in memory only; a restart loses it.");
ABSL_FLAG(std::string, fsync, "always",
          "When journal writes are made durable: always (before each acknowledgement), "
          "interval:<ms> (acknowledge after write(2), sync at least every <ms>; a machine "
          "crash may lose that window), or never (leave it to the kernel).");
ABSL_FLAG(uint64_t, snapshot_bytes, 0,
          "Write a snapshot (and delete the journal segments it covers) after this many "
          "journal bytes. 0: automatic, twice the size of the last snapshot but at least "
          "--snapshot-min-bytes, so disk use stays a small multiple of the live state.");
ABSL_FLAG(uint64_t, snapshot_min_bytes, uint64_t{64} << 20,
          "With automatic snapshots (--snapshot-bytes=0): the least journal written between "
          "two snapshots (default 64 MiB). Lower: shorter restarts for a small broker; "
          "higher: less CPU spent re-encoding the state.");
ABSL_FLAG(uint64_t, segment_bytes, uint64_t{8} << 20,
          "Size of each preallocated journal segment file (at least 4096).");
ABSL_FLAG(bool, auto_create_queues, true,
          "Create a queue with the default settings on its first submit.");
ABSL_FLAG(uint32_t, max_queues, 10000, "Most queues the broker holds.");
ABSL_FLAG(uint64_t, max_payload_bytes, 1 << 20, "Largest task payload, in bytes.");
ABSL_FLAG(uint64_t, max_result_bytes, 1 << 20, "Largest task result, in bytes.");
ABSL_FLAG(uint64_t, max_header_bytes, 8 << 10,
          "Largest total size of a task's header keys and values, in bytes.");
ABSL_FLAG(uint64_t, max_batch_count, 1000, "Most tasks in one SubmitBatch.");
ABSL_FLAG(uint64_t, max_batch_bytes, 8 << 20, "Most payload bytes in one SubmitBatch.");
ABSL_FLAG(uint64_t, max_group_size, 100000, "Most members in one SubmitGroup.");
ABSL_FLAG(uint64_t, max_group_bytes, 32 << 20, "Most payload bytes in one SubmitGroup.");
ABSL_FLAG(uint64_t, max_schedules, 10000, "Most recurring schedules (cron) held.");
ABSL_FLAG(absl::Duration, workflow_ttl, absl::Hours(24),
          "How long a finished group or chain stays visible (GetGroup, GetChain).");
ABSL_FLAG(absl::Duration, timeout_grace, absl::Seconds(10),
          "Time past a task's timeout before the broker fails a running attempt.");
ABSL_FLAG(absl::Duration, drain_grace, absl::Seconds(10),
          "On SIGTERM, how long running tasks may still report before the broker exits.");
ABSL_FLAG(uint64_t, default_capacity, 100000,
          "Capacity (unfinished tasks) of queues created without settings.");
ABSL_FLAG(absl::Duration, default_lease_duration, absl::Seconds(30),
          "Lease length of queues created without settings.");
ABSL_FLAG(absl::Duration, default_result_ttl, absl::Hours(24),
          "How long queues created without settings keep ended tasks.");
ABSL_FLAG(uint64_t, default_retained, 100000,
          "Most ended tasks kept per queue created without settings.");
// gRPC transport limits (docs/security.md, "Abuse on the wire"). Defaults are
// those of ServerOptions in server/server.h.
ABSL_FLAG(int32_t, max_concurrent_streams, 1000,
          "Most concurrent calls (HTTP/2 streams) on one client connection.");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Minutes(1),
          "The broker pings a connection idle this long to check it is alive.");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20),
          "A connection whose keepalive ping gets no answer within this is closed.");
ABSL_FLAG(absl::Duration, min_client_ping_interval, absl::Seconds(10),
          "Clients may ping no more often than this while no call is active; a client "
          "that does it twice more is disconnected (GOAWAY too_many_pings).");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(10),
          "A connection with no call for this long is closed (GOAWAY).");
ABSL_FLAG(absl::Duration, max_connection_age, absl::Hours(2),
          "Every connection is closed after this long (GOAWAY, then "
          "--max-connection-age-grace for calls in flight), so clients reconnect and "
          "spread over brokers and proxies.");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::Seconds(90),
          "Time calls in flight get to finish when a connection reaches its maximum age.");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(10),
          "A new connection must finish its TLS handshake and send the HTTP/2 preface "
          "and SETTINGS within this, or it is closed.");
ABSL_FLAG(uint64_t, memory_quota_bytes, uint64_t{1} << 30,
          "gRPC resource quota: memory its transports may use for buffers. Near it, gRPC "
          "closes connections to free memory (clients see UNAVAILABLE).");
ABSL_FLAG(int32_t, max_threads, 256, "gRPC resource quota: most threads gRPC may create.");
ABSL_FLAG(std::string, verify, "",
          "Offline tool: check the data directory DIR and exit, without starting the broker "
          "and without its lock (works while a broker runs on DIR: a torn tail of the last "
          "segment is then the write in progress, reported as a note). Checks FORMAT, the "
          "latest snapshot and every record after its cut (length, CRC, batches, sequence), "
          "decodes and replays every entry, prints a summary (segments, records, bytes, "
          "snapshot cut, tasks per state). Exit 0 sound, 65 corrupt (the message names the "
          "file and offset), 66 not a data directory, 74 I/O error.");
ABSL_FLAG(bool, dump, false,
          "With --verify: print every entry as one JSON line on stdout (snapshot entries "
          "first: {\"file\",\"offset\",\"snapshot_cut\",\"entry\"}, then records: "
          "{\"file\",\"offset\",\"seq\",\"batch\",\"entry\"}; entry is the protobuf "
          "JSON of the JournalEntry); the summary then goes to stderr.");
ABSL_FLAG(std::string, backup, "",
          "Offline tool: copy the journal in --data-dir into the directory DEST (new, or "
          "empty) and exit, without the source's lock (works while a broker runs on it): the "
          "latest snapshot, every segment after its cut up to its last whole batch, and "
          "FORMAT (written last), each fsynced, then the directory. Prints what it copied. "
          "Start a broker with --data-dir=DEST to restore. Exit 0 done, 65 source corrupt, "
          "73 DEST not empty or not creatable, 74 I/O error.");

namespace {

bool WritePortFile(const std::string& path, int port) {
  std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!(out << port << "\n")) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  conveyor::SetDaemonDefaults();
  conveyor::ListFlagsFromFile("server/main.cc");
  absl::SetProgramUsageMessage(
      "the Conveyor task-queue broker.\n"
      "Usage: conveyord [--listen=127.0.0.1:7400] [--port-file=PATH] "
      "[--metrics-addr=127.0.0.1:9464] [flags]\n"
      "Flags may be spelled with dashes or underscores (--port-file, --port_file).\n"
      "Offline tools (exit when done; safe while a broker runs on the directory):\n"
      "  conveyord --verify=DIR [--dump]        check a data directory\n"
      "  conveyord --backup=DEST --data-dir=SRC  copy a data directory\n"
      "Drains and exits 0 on SIGTERM or SIGINT; SIGHUP re-reads --auth-tokens.");
  std::vector<std::string> args = conveyor::NormalizeFlagNames(argc, argv);
  std::vector<char*> argv2 = conveyor::ArgvOf(args);
  absl::ParseCommandLine(static_cast<int>(args.size()), argv2.data());
  conveyor::LogLevel level;
  if (!conveyor::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    std::fprintf(stderr, "conveyord: --log-level=%s: use debug, info, warning or error\n",
                 absl::GetFlag(FLAGS_log_level).c_str());
    return 64;
  }
  conveyor::SetLogLevel(level);

  // Offline tools: run and exit before anything of the broker starts.
  if (const std::string verify_dir = absl::GetFlag(FLAGS_verify), backup_dest =
          absl::GetFlag(FLAGS_backup);
      !verify_dir.empty() || !backup_dest.empty() || absl::GetFlag(FLAGS_dump)) {
    if (!verify_dir.empty() && !backup_dest.empty()) {
      std::fprintf(stderr, "conveyord: --verify and --backup are separate runs; give one\n");
      return 64;
    }
    if (!verify_dir.empty()) {
      return conveyor::server::RunVerify(verify_dir, absl::GetFlag(FLAGS_dump), std::cout,
                                         std::cerr);
    }
    if (backup_dest.empty()) {
      std::fprintf(stderr, "conveyord: --dump goes with --verify=DIR\n");
      return 64;
    }
    if (absl::GetFlag(FLAGS_data_dir).empty() || absl::GetFlag(FLAGS_dump)) {
      std::fprintf(stderr, "conveyord: use --backup=DEST --data-dir=SRC\n");
      return 64;
    }
    return conveyor::server::RunBackup(absl::GetFlag(FLAGS_data_dir), backup_dest, std::cout,
                                       std::cerr);
  }

  // Before any thread (gRPC's included): main alone takes the stop signals.
  const sigset_t stop_signals = conveyor::BlockStopSignals();
  // SIGHUP re-reads --auth-tokens (a thread takes it below; without auth it
  // is ignored); blocked here so that it never reaches another thread, whose
  // default would end the process.
  sigset_t hup_signal;
  sigemptyset(&hup_signal);
  sigaddset(&hup_signal, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup_signal, nullptr);

  conveyor::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls_reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  options.drain_grace = absl::GetFlag(FLAGS_drain_grace);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.fsync = absl::GetFlag(FLAGS_fsync);
  options.snapshot_bytes = absl::GetFlag(FLAGS_snapshot_bytes);
  options.snapshot_min_bytes = absl::GetFlag(FLAGS_snapshot_min_bytes);
  options.segment_bytes = absl::GetFlag(FLAGS_segment_bytes);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  options.min_client_ping_interval = absl::GetFlag(FLAGS_min_client_ping_interval);
  options.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  options.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  options.max_connection_age_grace = absl::GetFlag(FLAGS_max_connection_age_grace);
  options.handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  options.memory_quota_bytes =
      static_cast<int64_t>(std::min<uint64_t>(absl::GetFlag(FLAGS_memory_quota_bytes),
                                              uint64_t{1} << 62));
  options.max_threads = absl::GetFlag(FLAGS_max_threads);
  if (options.max_concurrent_streams < 1 || options.max_threads < 1 ||
      options.memory_quota_bytes < (int64_t{1} << 20) ||
      options.keepalive_time <= absl::ZeroDuration() ||
      options.keepalive_timeout <= absl::ZeroDuration() ||
      options.min_client_ping_interval < absl::ZeroDuration() ||
      options.max_connection_idle <= absl::ZeroDuration() ||
      options.max_connection_age <= absl::ZeroDuration() ||
      options.max_connection_age_grace < absl::ZeroDuration() ||
      options.handshake_timeout <= absl::ZeroDuration()) {
    std::fprintf(stderr,
                 "conveyord: --max-concurrent-streams and --max-threads must be at least 1, "
                 "--memory-quota-bytes at least 1 MiB, the keepalive, connection and "
                 "handshake durations positive (--min-client-ping-interval and "
                 "--max-connection-age-grace may be 0)\n");
    return 64;
  }
  conveyor::server::BrokerOptions& b = options.broker;
  b.auto_create_queues = absl::GetFlag(FLAGS_auto_create_queues);
  b.max_queues = absl::GetFlag(FLAGS_max_queues);
  b.max_payload_bytes = absl::GetFlag(FLAGS_max_payload_bytes);
  b.max_result_bytes = absl::GetFlag(FLAGS_max_result_bytes);
  b.max_header_bytes = absl::GetFlag(FLAGS_max_header_bytes);
  b.max_batch_count = absl::GetFlag(FLAGS_max_batch_count);
  b.max_batch_bytes = absl::GetFlag(FLAGS_max_batch_bytes);
  b.timeout_grace = absl::GetFlag(FLAGS_timeout_grace);
  b.max_group_size = absl::GetFlag(FLAGS_max_group_size);
  b.max_group_bytes = absl::GetFlag(FLAGS_max_group_bytes);
  b.workflow_ttl = absl::GetFlag(FLAGS_workflow_ttl);
  b.max_schedules = absl::GetFlag(FLAGS_max_schedules);
  b.queue_defaults.capacity = absl::GetFlag(FLAGS_default_capacity);
  b.queue_defaults.lease_duration = absl::GetFlag(FLAGS_default_lease_duration);
  b.queue_defaults.result_ttl = absl::GetFlag(FLAGS_default_result_ttl);
  b.queue_defaults.retained = absl::GetFlag(FLAGS_default_retained);
  if (b.max_payload_bytes > (64u << 20) || b.max_result_bytes > (64u << 20) ||
      b.max_batch_bytes > (512u << 20) || b.max_group_bytes > (1024u << 20)) {
    std::fprintf(stderr,
                 "conveyord: payload and result limits are at most 64 MiB, the batch "
                 "limit at most 512 MiB, the group limit at most 1 GiB\n");
    return 64;
  }
  if (b.max_group_size == 0 || b.max_group_size > 10'000'000 ||
      b.workflow_ttl <= absl::ZeroDuration()) {
    std::fprintf(stderr,
                 "conveyord: --max-group-size must be 1 to 10,000,000 and --workflow-ttl "
                 "more than 0\n");
    return 64;
  }
  if (b.timeout_grace < absl::ZeroDuration() || options.drain_grace < absl::ZeroDuration()) {
    std::fprintf(stderr, "conveyord: --timeout-grace and --drain-grace must not be negative\n");
    return 64;
  }

  // TLS files are checked here so that a bad one is a configuration error
  // (exit 78) that names the flag and the file; a bad flag combination is a
  // usage error (64).
  if (absl::StatusOr<conveyor::server::TlsSummary> tls =
          conveyor::server::ValidateTlsOptions(options);
      !tls.ok()) {
    conveyor::LogError("cannot start: bad TLS configuration", {{"error", tls.status()}});
    return tls.status().code() == absl::StatusCode::kInvalidArgument ? 64 : 78;
  } else if (options.tls_enabled()) {
    conveyor::LogInfo(options.mtls_enabled() ? "TLS on, client certificates required (mTLS)"
                                             : "TLS on, client certificates not requested",
                      {{"cert", options.tls_cert_file},
                       {"key", options.tls_key_file},
                       {"client_ca", options.tls_client_ca_file},
                       {"client_cas", absl::StrJoin(tls->client_ca_subjects, "; ")},
                       {"cert_subject", tls->cert_subject},
                       {"cert_sha256", tls->cert_sha256},
                       {"cert_not_after", absl::FormatTime(tls->cert_not_after)},
                       {"reload_interval", absl::FormatDuration(options.tls_reload_interval)}});
  } else {
    conveyor::LogInfo("TLS off: the gRPC API is plaintext", {});
  }

  // Tokens and roles; then the safe-defaults rule, which needs to know
  // whether TLS and auth are on. Both are configuration errors (exit 78).
  if (const std::string tokens = absl::GetFlag(FLAGS_auth_tokens); !tokens.empty()) {
    absl::StatusOr<std::shared_ptr<conveyor::server::Authorizer>> auth =
        conveyor::server::Authorizer::Load(tokens);
    if (!auth.ok()) {
      conveyor::LogError("cannot start: bad --auth-tokens file", {{"error", auth.status()}});
      return 78;
    }
    options.authorizer = *std::move(auth);
    conveyor::LogInfo("auth on: every API call needs a token or a client certificate with a role",
                      {{"path", tokens},
                       {"tokens", static_cast<unsigned long long>(
                                      options.authorizer->token_count())},
                       {"certs", static_cast<unsigned long long>(
                                     options.authorizer->cert_count())}});
    // gRPC's own tracers can print request headers, bearer tokens among them.
    if (const char* trace = std::getenv("GRPC_TRACE"); trace != nullptr && *trace != '\0') {
      conveyor::LogWarning("GRPC_TRACE is ignored while auth is on: gRPC traces print "
                           "request headers, bearer tokens among them",
                           {{"GRPC_TRACE", trace}});
      unsetenv("GRPC_TRACE");
    }
  } else {
    conveyor::LogInfo("auth off: every API call is allowed (no --auth-tokens)", {});
  }
  options.insecure = absl::GetFlag(FLAGS_insecure);
  if (absl::Status exposed = conveyor::server::CheckListenExposure(
          options.listen, options.tls_enabled(), options.authorizer != nullptr,
          options.insecure);
      !exposed.ok()) {
    conveyor::LogError("cannot start: unsafe listen address", {{"error", exposed}});
    return 78;
  }
  if (const std::string missing = conveyor::server::MissingProtections(
          options.tls_enabled(), options.authorizer != nullptr);
      options.insecure && !missing.empty() &&
      !conveyor::server::IsLoopbackListen(options.listen)) {
    conveyor::LogWarning(
        absl::StrCat("--insecure: serving the API on a non-loopback address without ", missing,
                     "; anyone who reaches the port can use it"),
        {{"addr", options.listen}, {"missing", missing}});
  }
  if (!options.metrics_addr.empty() &&
      !conveyor::server::IsLoopbackListen(options.metrics_addr)) {
    conveyor::LogWarning("/metrics is served on a non-loopback address, in plaintext and "
                         "without auth: queue names and counts are visible to anyone who "
                         "reaches it",
                         {{"metrics_addr", options.metrics_addr}});
  }

  auto server = conveyor::server::BrokerServer::Start(options);
  if (!server.ok()) {
    conveyor::LogError("cannot start", {{"error", server.status()}});
    switch (server.status().code()) {
      case absl::StatusCode::kInvalidArgument: return 64;
      case absl::StatusCode::kDataLoss: return 65;
      case absl::StatusCode::kFailedPrecondition: return 75;
      default: return 69;
    }
  }
  if (options.authorizer != nullptr) {
    options.authorizer->StartWatching(absl::Seconds(1));
    // Detached (it waits in sigwait for good), so it holds only a weak
    // reference: the authorizer and its watcher thread end with main.
    std::thread([weak = std::weak_ptr<conveyor::server::Authorizer>(options.authorizer),
                 hup_signal] {
      for (;;) {
        int sig = 0;
        if (sigwait(&hup_signal, &sig) != 0) return;
        std::shared_ptr<conveyor::server::Authorizer> auth = weak.lock();
        if (auth == nullptr) return;
        conveyor::LogInfo("SIGHUP: re-reading the auth tokens file", {{"path", auth->path()}});
        (void)auth->Reload();  // logs the outcome; a bad file keeps the old tokens
      }
    }).detach();
  }
  conveyor::LogInfo("listening", {{"addr", options.listen},
                                  {"port", (*server)->port()},
                                  {"metrics_port", (*server)->metrics_port()},
                                  {"health_port", (*server)->health_port()}});
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WritePortFile(port_file, (*server)->port())) {
    conveyor::LogError("cannot write the port file", {{"path", port_file}});
    (*server)->Shutdown();
    return 73;
  }

  conveyor::AwaitStopSignal(stop_signals);
  (*server)->Shutdown();
  return 0;
}
