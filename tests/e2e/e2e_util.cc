#include "tests/e2e/e2e_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace conveyor::e2e {
namespace {

namespace fs = std::filesystem;

// Short enough not to slow a test down, long enough not to spin a loaded
// 2-core machine.
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

// As a shell reports it: the exit status, or 128 + the signal that killed it.
int ExitCodeOf(const std::optional<int>& status) {
  if (!status.has_value()) return -1;
  if (WIFEXITED(*status)) return WEXITSTATUS(*status);
  if (WIFSIGNALED(*status)) return 128 + WTERMSIG(*status);
  return -1;
}

// The test's environment without the entries the options unset, then the
// extra ones.
std::vector<std::string> ChildEnvironment(const ProcessOptions& options) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    bool unset = false;
    for (const std::string& prefix : options.unset_env_prefixes) {
      unset = unset || absl::StartsWith(*e, prefix);
    }
    if (!unset) env.push_back(*e);
  }
  env.insert(env.end(), options.extra_env.begin(), options.extra_env.end());
  return env;
}

// argv/envp as posix_spawn wants them: pointers into `strings`, then null.
std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string ReadFileOrEmpty(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool WriteFile(const fs::path& path, absl::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(out);
}

TempDir::TempDir(absl::string_view prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(templ.data()) != nullptr) path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty() && !keep_) fs::remove_all(path_, ignored);
}

Stdio Stdio::Log(fs::path log) {
  fs::path err = log;
  // Both streams append: their lines interleave in the order written.
  return Stdio{"/dev/null", std::move(log), std::move(err), /*append=*/true, 0644};
}

Stdio Stdio::Files(fs::path in, fs::path out, fs::path err, mode_t mode) {
  return Stdio{std::move(in), std::move(out), std::move(err), /*append=*/false, mode};
}

std::ostream& operator<<(std::ostream& os, const CommandResult& r) {
  return os << "exit " << r.code << "\n--- stdout ---\n" << r.out << "\n--- stderr ---\n" << r.err;
}

Process::Process(ProcessOptions options) : options_(std::move(options)) {}

Process::Process(Stdio stdio) : Process(ProcessOptions{.stdio = std::move(stdio)}) {}

Process::~Process() { Kill(); }

bool Process::Start(const std::vector<std::string>& argv) {
  const std::vector<std::string> env = ChildEnvironment(options_);
  std::vector<char*> argv_c = CStrings(argv);
  std::vector<char*> env_c = CStrings(env);
  const Stdio& io = options_.stdio;
  const int out_flags = O_WRONLY | O_CREAT | (io.append ? O_APPEND : O_TRUNC);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, io.in.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, io.out.c_str(), out_flags, io.mode);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, io.err.c_str(), out_flags, io.mode);
  // posix_spawnp: `openssl` is found on $PATH; our own binaries have full
  // paths, which it runs as they are.
  const int rc = posix_spawnp(&pid_, argv_c[0], &actions, nullptr, argv_c.data(), env_c.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawnp " << argv[0] << ": " << strerror(rc);
    pid_ = -1;
    return false;
  }
  return true;
}

bool Process::Poll() {
  if (status_.has_value()) return true;
  // Never started: nothing to wait for (and waitpid(-1) would reap another
  // child of the test).
  if (pid_ <= 0) return true;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
  return status_.has_value();
}

int Process::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  while (!Poll()) {
    if (absl::Now() > deadline) return -1;
    absl::SleepFor(kPollInterval);
  }
  return ExitCodeOf(status_);
}

int Process::WaitOrKill(absl::Duration timeout) {
  const int code = Wait(timeout);
  if (status_.has_value()) return code;
  Kill();
  return -1;
}

void Process::Signal(int sig) {
  if (running()) kill(pid_, sig);
}

int Process::Kill() {
  if (pid_ <= 0) return -1;
  if (!Poll()) {
    if (options_.kill_child_groups) {
      for (pid_t group : ChildProcessGroups(pid_)) kill(-group, SIGKILL);
    }
    kill(pid_, SIGCONT);  // a process stopped with SIGSTOP must be able to die
    kill(pid_, SIGKILL);
    int status;
    if (waitpid(pid_, &status, 0) == pid_) status_ = status;
  }
  return ExitCodeOf(status_);
}

CommandResult Process::Finish(absl::Duration timeout) {
  CommandResult r;
  r.code = WaitOrKill(timeout);
  r.out = ReadFileOrEmpty(options_.stdio.out);
  r.err = ReadFileOrEmpty(options_.stdio.err);
  return r;
}

std::vector<pid_t> ChildProcessGroups(pid_t pid) {
  std::vector<pid_t> groups;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator("/proc", ec)) {
    const std::string stat = ReadFileOrEmpty(e.path() / "stat");
    // The command name, in parentheses, may itself hold spaces and ')'.
    const size_t close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(close_paren + 1));
    std::string state;
    long ppid = 0, pgrp = 0;
    if (fields >> state >> ppid >> pgrp && ppid == pid && pgrp > 1) {
      groups.push_back(static_cast<pid_t>(pgrp));
    }
  }
  return groups;
}

std::vector<std::string> LoopbackBrokerArgv(const std::string& conveyord,
                                            const fs::path& port_file) {
  return {conveyord, "--listen=127.0.0.1:0", absl::StrCat("--port-file=", port_file.string()),
          "--metrics-addr="};
}

int WaitForPortFile(const fs::path& port_file, Process& process, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int port = 0;
    std::string text(absl::StripAsciiWhitespace(ReadFileOrEmpty(port_file)));
    if (!text.empty() && absl::SimpleAtoi(text, &port) && port > 0) return port;
    if (process.Poll()) return 0;
    absl::SleepFor(kPollInterval);
  }
  return 0;
}

std::string LoopbackAddress(int port) { return absl::StrCat("127.0.0.1:", port); }

long ProcStatusNumber(pid_t pid, absl::string_view field) {
  const std::string text = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/status"));
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, field) || !absl::ConsumePrefix(&line, ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    long value = -1;
    if (absl::SimpleAtoi(line, &value)) return value;
  }
  return -1;
}

std::string HttpGetMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  // A daemon that accepts and never answers must not hang the test.
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      // HTTP/1.0: the server closes the connection after the response.
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

}  // namespace conveyor::e2e
