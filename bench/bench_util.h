// Helpers shared by the benchmarks that run the real broker: a spawned
// conveyord (posix_spawn, log to a file, port through --port-file), temp
// directories, directory sizes, simple flag parsing and latency percentiles.
//
// Header-only and single-threaded except where noted; benchmarks only, never
// the test suite.
#ifndef CONVEYOR_BENCH_BENCH_UTIL_H_
#define CONVEYOR_BENCH_BENCH_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern char** environ;

namespace conveyor::bench {

namespace fs = std::filesystem;

inline std::string ReadFileOrEmpty(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline size_t CountOccurrences(const std::string& text, absl::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle.data(), 0, needle.size()); at != std::string::npos;
       at = text.find(needle.data(), at + needle.size(), needle.size())) {
    ++n;
  }
  return n;
}

// mkdtemp under `parent`; empty on failure.
inline std::string MakeTempDir(const std::string& parent, absl::string_view name) {
  std::string templ = absl::StrCat(parent, "/", name, ".XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    return "";
  }
  return templ;
}

struct DirSize {
  uint64_t apparent = 0;   // sum of file sizes (du -sb)
  uint64_t allocated = 0;  // sum of allocated blocks (du -s, in bytes)
  uint64_t used = 0;       // apparent, less the zero tails of journal segments
  int files = 0;
};

// Length of `path` without its trailing zero bytes: a journal segment is
// preallocated, and its unwritten tail reads as zeros. (A record that ends
// in a zero byte makes this a few bytes short: negligible.)
inline uint64_t WrittenLength(const fs::path& path, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  uint64_t end = size;
  while (end > 0) {
    const uint64_t n = std::min<uint64_t>(end, buf.size());
    in.seekg(static_cast<std::streamoff>(end - n));
    if (!in.read(buf.data(), static_cast<std::streamsize>(n))) return size;
    for (uint64_t i = n; i > 0; --i) {
      if (buf[i - 1] != 0) return end - n + i;
    }
    end -= n;
  }
  return 0;
}

inline DirSize SizeOf(const fs::path& dir) {
  DirSize size;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir, ec)) {
    struct stat st;
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const auto bytes = static_cast<uint64_t>(st.st_size);
    size.apparent += bytes;
    size.allocated += static_cast<uint64_t>(st.st_blocks) * 512;
    size.used += e.path().extension() == ".log" ? WrittenLength(e.path(), bytes) : bytes;
    ++size.files;
  }
  return size;
}

// "name size, name size, ..." of a directory's regular files, sorted.
inline std::string ListDir(const fs::path& dir) {
  std::vector<std::string> rows;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    struct stat st;
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    rows.push_back(absl::StrCat(e.path().filename().string(), "=", st.st_size, "B/",
                                static_cast<uint64_t>(st.st_blocks) * 512, "B"));
  }
  std::sort(rows.begin(), rows.end());
  std::string out;
  for (const std::string& r : rows) absl::StrAppend(&out, out.empty() ? "" : " ", r);
  return out;
}

// A child process, stdin /dev/null, stdout and stderr appended to `log`.
// SIGKILLed and reaped on destruction if still running.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Kill(); }

  bool Start(const std::vector<std::string>& argv, const fs::path& log) {
    std::vector<char*> argv_c;
    for (const std::string& a : argv) argv_c.push_back(const_cast<char*>(a.c_str()));
    argv_c.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int rc = posix_spawn(&pid_, argv_c[0], &actions, nullptr, argv_c.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      std::fprintf(stderr, "posix_spawn %s: %s\n", argv[0].c_str(), std::strerror(rc));
      pid_ = -1;
      return false;
    }
    status_.reset();
    return true;
  }

  pid_t pid() const { return pid_; }

  bool Poll() {
    if (status_.has_value()) return true;
    if (pid_ <= 0) return false;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_.has_value();
  }

  // Exit code (128 + signal), or -1 if still running after `timeout`.
  int Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!Poll()) {
      if (absl::Now() > deadline) return -1;
      absl::SleepFor(absl::Milliseconds(2));
    }
    if (WIFEXITED(*status_)) return WEXITSTATUS(*status_);
    if (WIFSIGNALED(*status_)) return 128 + WTERMSIG(*status_);
    return -1;
  }

  void Signal(int sig) {
    if (pid_ > 0 && !Poll()) ::kill(pid_, sig);
  }

  void Kill() {
    if (pid_ > 0 && !Poll()) {
      ::kill(pid_, SIGKILL);
      int status;
      if (waitpid(pid_, &status, 0) == pid_) status_ = status;
    }
  }

  // VmHWM / VmRSS of the running process in bytes (0 if unknown).
  uint64_t StatusBytes(absl::string_view field) const {
    const std::string text = ReadFileOrEmpty(absl::StrCat("/proc/", pid_, "/status"));
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (!absl::ConsumePrefix(&line, field) || !absl::ConsumePrefix(&line, ":")) continue;
      line = absl::StripAsciiWhitespace(line);
      absl::ConsumeSuffix(&line, " kB");
      uint64_t kb = 0;
      if (absl::SimpleAtoi(line, &kb)) return kb * 1024;
    }
    return 0;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Waits for a port in `port_file`; 0 if `child` exited first or `timeout`
// passed. Polls every 1 ms (the recovery benchmark times this).
inline int WaitForPortFile(const fs::path& port_file, Child& child, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int port = 0;
    std::string text(absl::StripAsciiWhitespace(ReadFileOrEmpty(port_file)));
    if (!text.empty() && absl::SimpleAtoi(text, &port) && port > 0) return port;
    if (child.Poll()) return 0;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return 0;
}

// conveyord on 127.0.0.1:0 with its log appended to `<work_dir>/conveyord.log`.
class BrokerProcess {
 public:
  BrokerProcess(std::string binary, fs::path work_dir)
      : binary_(std::move(binary)), work_dir_(std::move(work_dir)) {}

  // Starts it with `flags` (after --listen, --port-file and --metrics-addr=)
  // and waits for its port file; returns the time from spawn to port file,
  // or nullopt if it did not come up within `timeout`.
  std::optional<absl::Duration> Start(const std::vector<std::string>& flags,
                                      absl::Duration timeout = absl::Minutes(10)) {
    const fs::path port_file = work_dir_ / "conveyord.port";
    std::error_code ec;
    fs::remove(port_file, ec);
    std::vector<std::string> argv = {binary_, "--listen=127.0.0.1:0",
                                     absl::StrCat("--port-file=", port_file.string()),
                                     "--metrics-addr="};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const absl::Time start = absl::Now();
    if (!child_.Start(argv, log_path())) return std::nullopt;
    const int port = WaitForPortFile(port_file, child_, timeout);
    if (port <= 0) {
      std::fprintf(stderr, "conveyord did not start; log %s\n", log_path().c_str());
      return std::nullopt;
    }
    started_at_ = start;
    addr_ = absl::StrCat("127.0.0.1:", port);
    return absl::Now() - start;
  }

  // SIGTERM; the exit code (-1 if it did not exit within `timeout`).
  int Stop(absl::Duration timeout = absl::Minutes(2)) {
    child_.Signal(SIGTERM);
    return child_.Wait(timeout);
  }

  const std::string& addr() const { return addr_; }
  absl::Time started_at() const { return started_at_; }
  Child& child() { return child_; }
  fs::path log_path() const { return work_dir_ / "conveyord.log"; }
  std::string log() const { return ReadFileOrEmpty(log_path()); }

 private:
  const std::string binary_;
  const fs::path work_dir_;
  Child child_;
  std::string addr_;
  absl::Time started_at_;
};

// --name=value flags: Flag(argv, "--seconds=", &value) style parsing.
class Flags {
 public:
  Flags(int argc, char** argv) : args_(argv + 1, argv + argc), used_(args_.size(), false) {}

  std::optional<std::string> Get(absl::string_view name) {
    const std::string prefix = absl::StrCat("--", name, "=");
    std::optional<std::string> value;
    for (size_t i = 0; i < args_.size(); ++i) {
      absl::string_view a = args_[i];
      if (absl::ConsumePrefix(&a, prefix)) {
        value = std::string(a);
        used_[i] = true;
      }
    }
    return value;
  }
  std::string String(absl::string_view name, std::string fallback) {
    return Get(name).value_or(std::move(fallback));
  }
  template <typename T>
  T Number(absl::string_view name, T fallback) {
    std::optional<std::string> v = Get(name);
    if (!v.has_value()) return fallback;
    T out;
    if constexpr (std::is_floating_point_v<T>) {
      if (absl::SimpleAtod(*v, &out)) return out;
    } else {
      if (absl::SimpleAtoi(*v, &out)) return out;
    }
    bad_ = true;
    std::fprintf(stderr, "--%s=%s: not a number\n", std::string(name).c_str(), v->c_str());
    return fallback;
  }
  // False (after printing them) if some argument was not recognized.
  bool AllUsed() const {
    bool ok = !bad_;
    for (size_t i = 0; i < args_.size(); ++i) {
      if (!used_[i]) {
        std::fprintf(stderr, "unknown argument: %s\n", args_[i].c_str());
        ok = false;
      }
    }
    return ok;
  }

 private:
  std::vector<std::string> args_;
  std::vector<bool> used_;
  bool bad_ = false;
};

// The q-quantile (0..1) of `sorted` (ascending); 0 when empty.
inline double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()));
  return sorted[i];
}

}  // namespace conveyor::bench

#endif  // CONVEYOR_BENCH_BENCH_UTIL_H_
