// Helpers shared by the end-to-end suites in tests/e2e/, which run the real
// binaries (conveyord, conveyor, conveyor-worker, openssl) as child processes:
//
//   - files: ReadFileOrEmpty, WriteFile, and TempDir (a directory per test);
//   - processes: Process, a posix_spawn'ed child whose standard streams go to
//     files (Stdio), with Poll/Wait/Signal/Kill that always reap it;
//   - the broker: the flags that start conveyord on 127.0.0.1:0 with
//     --port-file, WaitForPortFile to learn the port it bound, and
//     HttpGetMetrics for a daemon's Prometheus endpoint, ProcStatusNumber for
//     its threads and memory.
//
// Each suite keeps its own fixture (which flags, which files, what a failure
// prints); these are only the parts that were the same everywhere.
//
// Thread-safety: none. Each object belongs to the test thread that made it.
#ifndef CONVEYOR_TESTS_E2E_E2E_UTIL_H_
#define CONVEYOR_TESTS_E2E_E2E_UTIL_H_

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace conveyor::e2e {

// ── files ──

// The whole file, or "" if it cannot be read (not written yet, say).
std::string ReadFileOrEmpty(const std::filesystem::path& path);

// Replaces the file's contents with `data`; false if that failed.
bool WriteFile(const std::filesystem::path& path, absl::string_view data);

// A fresh directory $TEST_TMPDIR/<prefix>-XXXXXX (or under /tmp), removed with
// everything in it on destruction unless Keep() was called. path() is empty
// if mkdtemp failed; fixtures assert on that in SetUp.
class TempDir {
 public:
  explicit TempDir(absl::string_view prefix);
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }
  // Leaves the directory in place (to inspect a failure).
  void Keep() { keep_ = true; }

 private:
  std::filesystem::path path_;
  bool keep_ = false;
};

// ── processes ──

// Where a child's standard streams go.
struct Stdio {
  // A daemon's: stdin from /dev/null, stdout and stderr appended to one log
  // file (mode 0644).
  static Stdio Log(std::filesystem::path log);
  // A command's: stdin from the file `in`, stdout and stderr to the files
  // `out` and `err`, truncated first and created with `mode` (0600 where the
  // output may hold a secret).
  static Stdio Files(std::filesystem::path in, std::filesystem::path out, std::filesystem::path err,
                     mode_t mode = 0644);

  std::filesystem::path in;
  std::filesystem::path out;
  std::filesystem::path err;
  bool append = false;  // false: truncate out and err
  mode_t mode = 0644;
};

struct ProcessOptions {
  Stdio stdio;
  // Entries of the test's own environment that start with one of these
  // ("CONVEYOR_ADDR=", "CONVEYOR_") are not passed on: the test, not the
  // shell that ran it, decides them.
  // (The "= {}" lets a designated initializer leave a field out without
  // -Wmissing-field-initializers.)
  std::vector<std::string> unset_env_prefixes = {};
  // "NAME=value" entries added after the inherited ones.
  std::vector<std::string> extra_env = {};
  // Kill() first SIGKILLs the process groups of the child's own children: a
  // worker runs each --exec command in a group of its own, which would
  // otherwise outlive it.
  bool kill_child_groups = false;
};

// What a command did: its exit code (as Process::Wait gives it) and what it
// wrote to stdout and stderr.
struct CommandResult {
  int code = -1;
  std::string out;
  std::string err;
};
// Prints all three, for failure messages.
std::ostream& operator<<(std::ostream& os, const CommandResult& r);

// One child process, started from an argv (looked up on $PATH unless it
// holds a '/'). Exit codes are the exit status for a normal exit, 128 +
// signal for a death by signal, and -1 for "not exited" (still running, or
// never started). The child is SIGKILLed and reaped on destruction if it is
// still running, so a failing test leaks no process.
class Process {
 public:
  explicit Process(ProcessOptions options);
  explicit Process(Stdio stdio);
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Spawns the child once. False (with a test failure) if it did not start;
  // the process then counts as exited with code -1.
  bool Start(const std::vector<std::string>& argv);

  pid_t pid() const { return pid_; }

  // True once the child has exited (reaping it), or if it never started.
  bool Poll();
  // True while the child runs: asks the kernel (through Poll).
  bool running() { return pid_ > 0 && !Poll(); }
  // True if the child started and no exit has been collected yet. Unlike
  // running() it does not ask the kernel: a fixture that checks every exit
  // code uses it to decide whether it still has to stop a process, so one
  // that died on its own is still waited for and its exit code checked.
  bool unreaped() const { return pid_ > 0 && !status_.has_value(); }

  // The exit code, polling every 10 ms for up to `timeout`; -1 if the child
  // is still running then (it is left running).
  int Wait(absl::Duration timeout);
  // Like Wait, but a child still running at the deadline is SIGKILLed and
  // reaped, and -1 returned: for commands that must not outlive their step.
  int WaitOrKill(absl::Duration timeout);
  // Sends `sig` if the child still runs.
  void Signal(int sig);
  // SIGKILLs the child if it still runs (and its children's process groups
  // with kill_child_groups) and reaps it; its exit code.
  int Kill();

  // WaitOrKill(timeout), then the stdout and stderr files (Stdio::Files).
  CommandResult Finish(absl::Duration timeout);

  // The stdout file: for Stdio::Log, everything the child wrote.
  std::string log() const { return ReadFileOrEmpty(options_.stdio.out); }
  const std::filesystem::path& log_path() const { return options_.stdio.out; }

 private:
  const ProcessOptions options_;
  pid_t pid_ = -1;
  std::optional<int> status_;  // the wait status, once collected
};

// The process groups of `pid`'s children, from /proc (a worker runs each
// --exec command in a group of its own).
std::vector<pid_t> ChildProcessGroups(pid_t pid);

// ── the broker and other daemons ──

// The argv that starts `conveyord` (its path) on 127.0.0.1 at a port the
// kernel picks, writing that port to `port_file`, with no metrics listener.
// Never a fixed port: parallel tests cannot collide. Suites append flags.
std::vector<std::string> LoopbackBrokerArgv(const std::string& conveyord,
                                            const std::filesystem::path& port_file);

// Polls (every 10 ms) for the port a daemon writes to its --port-file; 0 if
// `process` exited first or wrote nothing within `timeout`.
int WaitForPortFile(const std::filesystem::path& port_file, Process& process,
                    absl::Duration timeout);

// "127.0.0.1:<port>".
std::string LoopbackAddress(int port);

// A number field of /proc/<pid>/status ("Threads"; "VmRSS" in kB), or -1.
long ProcStatusNumber(pid_t pid, absl::string_view field);

// GET http://127.0.0.1:<port>/metrics (HTTP/1.0, 10 s receive timeout): the
// whole response, headers included; "" on any error.
std::string HttpGetMetrics(int port);

}  // namespace conveyor::e2e

#endif  // CONVEYOR_TESTS_E2E_E2E_UTIL_H_
