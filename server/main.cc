// conveyord: the Conveyor broker. Parses flags, starts a BrokerServer, waits
// for SIGTERM or SIGINT, drains, exits 0.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/signals.h"
#include "server/server.h"
#include "server/verify.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7400",
          "host:port for the gRPC API. Loopback by default; port 0 picks a free port.");
ABSL_FLAG(std::string, port_file, "",
          "If set, write the bound gRPC port to this file once listening (for tests and "
          "scripts that listen on port 0).");
ABSL_FLAG(std::string, metrics_addr, "127.0.0.1:9464",
          "host:port for the Prometheus /metrics endpoint; empty disables it.");
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
          "4 MiB, so disk use stays a small multiple of the live state.");
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
  conveyor::ListFlagsFromFile("server/main.cc");
  absl::SetProgramUsageMessage(
      "the Conveyor task-queue broker.\n"
      "Usage: conveyord [--listen=127.0.0.1:7400] [--port-file=PATH] "
      "[--metrics-addr=127.0.0.1:9464] [flags]\n"
      "Flags may be spelled with dashes or underscores (--port-file, --port_file).\n"
      "Offline tools (exit when done; safe while a broker runs on the directory):\n"
      "  conveyord --verify=DIR [--dump]        check a data directory\n"
      "  conveyord --backup=DEST --data-dir=SRC  copy a data directory\n"
      "Drains and exits 0 on SIGTERM or SIGINT.");
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

  conveyor::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  options.drain_grace = absl::GetFlag(FLAGS_drain_grace);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.fsync = absl::GetFlag(FLAGS_fsync);
  options.snapshot_bytes = absl::GetFlag(FLAGS_snapshot_bytes);
  options.segment_bytes = absl::GetFlag(FLAGS_segment_bytes);
  conveyor::server::BrokerOptions& b = options.broker;
  b.auto_create_queues = absl::GetFlag(FLAGS_auto_create_queues);
  b.max_queues = absl::GetFlag(FLAGS_max_queues);
  b.max_payload_bytes = absl::GetFlag(FLAGS_max_payload_bytes);
  b.max_result_bytes = absl::GetFlag(FLAGS_max_result_bytes);
  b.max_header_bytes = absl::GetFlag(FLAGS_max_header_bytes);
  b.max_batch_count = absl::GetFlag(FLAGS_max_batch_count);
  b.max_batch_bytes = absl::GetFlag(FLAGS_max_batch_bytes);
  b.timeout_grace = absl::GetFlag(FLAGS_timeout_grace);
  b.queue_defaults.capacity = absl::GetFlag(FLAGS_default_capacity);
  b.queue_defaults.lease_duration = absl::GetFlag(FLAGS_default_lease_duration);
  b.queue_defaults.result_ttl = absl::GetFlag(FLAGS_default_result_ttl);
  b.queue_defaults.retained = absl::GetFlag(FLAGS_default_retained);
  if (b.max_payload_bytes > (64u << 20) || b.max_result_bytes > (64u << 20) ||
      b.max_batch_bytes > (512u << 20)) {
    std::fprintf(stderr,
                 "conveyord: payload and result limits are at most 64 MiB, the batch "
                 "limit at most 512 MiB\n");
    return 64;
  }
  if (b.timeout_grace < absl::ZeroDuration() || options.drain_grace < absl::ZeroDuration()) {
    std::fprintf(stderr, "conveyord: --timeout-grace and --drain-grace must not be negative\n");
    return 64;
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
  conveyor::LogInfo("listening", {{"addr", options.listen},
                                  {"port", (*server)->port()},
                                  {"metrics_port", (*server)->metrics_port()}});
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
