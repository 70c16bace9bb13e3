#include "worker/exec.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace conveyor::worker {
namespace {

constexpr size_t kIoChunk = 64 * 1024;
// How much of the non-PROGRESS stderr the error message keeps (its end).
constexpr size_t kStderrTailBytes = 4 * 1024;
// A stderr "line" longer than this is plain text, never a PROGRESS line.
constexpr size_t kMaxStderrLine = 4 * 1024;
// Without a pidfd, how often the loop checks whether the child has exited.
constexpr absl::Duration kExitCheckTick = absl::Milliseconds(20);
// How long to wait for SIGKILLed members of the group to disappear.
constexpr absl::Duration kGroupGoneTimeout = absl::Seconds(5);
// After the SIGKILL, how long the output pipes may stay open: past this, what
// holds them has left the group (setsid) and is out of reach, so the pipes
// are abandoned rather than the worker slot.
constexpr absl::Duration kPipesAfterKill = absl::Seconds(2);

std::string ErrnoText(int error) {
  char buffer[128];
  // The GNU strerror_r (g++ defines _GNU_SOURCE): returns the text, which may
  // or may not be in `buffer`.
  return strerror_r(error, buffer, sizeof(buffer));
}

absl::Status ErrnoStatus(absl::StatusCode code, absl::string_view what, int error) {
  return absl::Status(code, absl::StrCat(what, ": ", ErrnoText(error)));
}

std::string FormatMillis(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Both ends close-on-exec, so that a command another thread spawns meanwhile
// cannot inherit them (it would hold our pipes open), and numbered 3 or more,
// so that the child's dup2 onto 0/1/2 never overwrites another of its ends.
absl::Status MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return ErrnoStatus(absl::StatusCode::kInternal, "pipe2", errno);
  }
  UniqueFd ends[2] = {UniqueFd(fds[0]), UniqueFd(fds[1])};
  for (UniqueFd& end : ends) {
    if (end.get() >= 3) continue;
    int moved = fcntl(end.get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) {
      return ErrnoStatus(absl::StatusCode::kInternal, "fcntl(F_DUPFD_CLOEXEC)", errno);
    }
    end = UniqueFd(moved);
  }
  *read_end = std::move(ends[0]);
  *write_end = std::move(ends[1]);
  return absl::OkStatus();
}

absl::Status SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(absl::StatusCode::kInternal, "fcntl(O_NONBLOCK)", errno);
  }
  return absl::OkStatus();
}

absl::Status ValidateRequest(const ExecRequest& request) {
  if (request.command.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("exec command contains a NUL byte");
  }
  for (const auto& [name, value] : request.env) {
    if (name.empty() || name.find('=') != std::string::npos ||
        name.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("exec env name '", name, "' is empty or contains '=' or a NUL byte"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("exec env value of ", name, " contains a NUL byte"));
    }
  }
  return absl::OkStatus();
}

// True if the environment entry "NAME=value" (or a bare "NAME") is `name`.
bool HasName(absl::string_view entry, absl::string_view name) {
  return absl::StartsWith(entry, name) &&
         (entry.size() == name.size() || entry[name.size()] == '=');
}

// `environ` with `overrides` laid over it. Built here and handed to
// posix_spawn, since setenv would race with every other thread.
std::vector<std::string> BuildEnvironment(
    const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::vector<std::string> added;  // one "NAME=value" per name, last one wins
  for (const auto& name_value : overrides) {
    const std::string& name = name_value.first;
    std::string entry = absl::StrCat(name, "=", name_value.second);
    auto same = std::find_if(added.begin(), added.end(),
                             [&](const std::string& e) { return HasName(e, name); });
    if (same != added.end()) {
      *same = std::move(entry);
    } else {
      added.push_back(std::move(entry));
    }
  }
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    bool overridden = std::any_of(overrides.begin(), overrides.end(), [&](const auto& name_value) {
      return HasName(entry, name_value.first);
    });
    if (!overridden) env.emplace_back(entry);
  }
  env.insert(env.end(), std::make_move_iterator(added.begin()),
             std::make_move_iterator(added.end()));
  return env;
}

// Starts `/bin/sh -c command` as the leader of a new process group, with
// `stdio[i]` as its descriptor i, default signal state, and no other
// descriptor of ours.
absl::StatusOr<pid_t> Spawn(const std::string& command, const std::vector<std::string>& env,
                            const std::array<int, 3>& stdio) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  if (int rc = posix_spawn_file_actions_init(&actions); rc != 0) {
    return ErrnoStatus(absl::StatusCode::kInternal, "posix_spawn_file_actions_init", rc);
  }
  if (int rc = posix_spawnattr_init(&attr); rc != 0) {
    posix_spawn_file_actions_destroy(&actions);
    return ErrnoStatus(absl::StatusCode::kInternal, "posix_spawnattr_init", rc);
  }
  int rc = 0;
  auto step = [&rc](int result) {
    if (rc == 0) rc = result;
  };
  // dup2 clears close-on-exec on the child's 0/1/2; the originals close on
  // exec.
  for (int target = 0; target < 3; ++target) {
    step(posix_spawn_file_actions_adddup2(&actions, stdio[target], target));
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Also drops descriptors that other code in the worker opened without
  // close-on-exec.
  step(posix_spawn_file_actions_addclosefrom_np(&actions, 3));
#endif
  // The worker blocks SIGTERM/SIGINT in all threads and ignores SIGPIPE; a
  // child must not start with either (it could not be stopped, or would spin
  // on EPIPE).
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) {
    sigaddset(&defaults, sig);
  }
  step(posix_spawnattr_setflags(
      &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  step(posix_spawnattr_setpgroup(&attr, 0));  // 0: its own group, id = its pid
  step(posix_spawnattr_setsigmask(&attr, &empty_mask));
  step(posix_spawnattr_setsigdefault(&attr, &defaults));

  pid_t pid = 0;
  if (rc == 0) {
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (const std::string& entry : env) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
    char* const argv[] = {const_cast<char*>("sh"), const_cast<char*>("-c"),
                          const_cast<char*>(command.c_str()), nullptr};
    rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, envp.data());
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc == 0) return pid;
  switch (rc) {
    case ENOENT:
    case EACCES:
    case ENOEXEC:
    case ENOTDIR:
    case ELOOP:
      return ErrnoStatus(absl::StatusCode::kFailedPrecondition, "posix_spawn /bin/sh", rc);
    default: return ErrnoStatus(absl::StatusCode::kInternal, "posix_spawn /bin/sh", rc);
  }
}

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  // Close-on-exec by definition; readable once the process has exited.
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

// write(2) to the child's stdin without letting a SIGPIPE reach the process:
// the worker ignores SIGPIPE, but this must not depend on it.
ssize_t WriteWithoutSigpipe(int fd, const char* data, size_t size) {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);
  sigset_t pending;
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  ssize_t written = write(fd, data, size);
  const int saved_errno = errno;
  if (written < 0 && saved_errno == EPIPE && !was_pending) {
    // The SIGPIPE is pending on this thread (blocked signals are queued even
    // when ignored): take it before restoring the mask.
    const timespec no_wait = {0, 0};
    while (sigtimedwait(&pipe_only, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = saved_errno;
  return written;
}

// "PROGRESS <percent> [message]", percent a number within [0, 100] (a
// trailing '%' is allowed).
bool ParseProgressLine(absl::string_view line, double* percent, std::string* message) {
  absl::string_view rest = absl::StripTrailingAsciiWhitespace(line);
  if (!absl::ConsumePrefix(&rest, "PROGRESS")) return false;
  if (rest.empty() || (rest[0] != ' ' && rest[0] != '\t')) return false;
  rest = absl::StripLeadingAsciiWhitespace(rest);
  size_t end = rest.find_first_of(" \t");
  absl::string_view number = rest.substr(0, end);
  rest = end == absl::string_view::npos ? absl::string_view() : rest.substr(end);
  absl::ConsumeSuffix(&number, "%");
  double value = 0;
  if (!absl::SimpleAtod(number, &value) || !std::isfinite(value) || value < 0 || value > 100) {
    return false;
  }
  *percent = value;
  *message = std::string(absl::StripAsciiWhitespace(rest));
  return true;
}

// The delay a throttled command printed: "2s", "500ms", or a bare number of
// seconds; zero if absent or unparseable.
absl::Duration ParseRetryAfter(absl::string_view output) {
  absl::string_view text = absl::StripAsciiWhitespace(output);
  absl::Duration delay;
  if (absl::ParseDuration(text, &delay) && delay >= absl::ZeroDuration() &&
      delay != absl::InfiniteDuration()) {
    return delay;
  }
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds) && seconds >= 0) {
    delay = absl::Seconds(seconds);
    if (delay != absl::InfiniteDuration()) return delay;
  }
  return absl::ZeroDuration();
}

// Splits the child's stderr into lines: PROGRESS lines go to the callback,
// the rest is kept (its last kStderrTailBytes) for the error message.
class StderrSink {
 public:
  explicit StderrSink(const ProgressFn& progress) : progress_(progress) {}

  void Feed(absl::string_view data) {
    while (!data.empty()) {
      size_t newline = data.find('\n');
      if (newline == absl::string_view::npos) {
        partial_.append(data.data(), data.size());
        if (partial_.size() > kMaxStderrLine) {
          Keep(partial_);
          partial_.clear();
          overlong_ = true;
        }
        return;
      }
      partial_.append(data.data(), newline);
      data.remove_prefix(newline + 1);
      EndLine();
    }
  }

  // At EOF: a last line without a newline still counts.
  void Finish() {
    if (!partial_.empty() || overlong_) EndLine();
  }

  // The last lines of non-PROGRESS stderr, trimmed.
  std::string Tail() const {
    absl::string_view tail = tail_;
    if (tail.size() > kStderrTailBytes) {
      tail.remove_prefix(tail.size() - kStderrTailBytes);
      // Start at a line boundary when there is one.
      size_t newline = tail.find('\n');
      if (newline != absl::string_view::npos && newline + 1 < tail.size()) {
        tail.remove_prefix(newline + 1);
      }
    }
    return std::string(absl::StripAsciiWhitespace(tail));
  }

 private:
  void EndLine() {
    double percent = 0;
    std::string message;
    if (!overlong_ && ParseProgressLine(partial_, &percent, &message)) {
      if (progress_) progress_(percent, std::move(message));
    } else {
      Keep(partial_);
      Keep("\n");
    }
    partial_.clear();
    overlong_ = false;
  }

  void Keep(absl::string_view text) {
    tail_.append(text.data(), text.size());
    if (tail_.size() > 2 * kStderrTailBytes) {
      tail_.erase(0, tail_.size() - kStderrTailBytes);
    }
  }

  const ProgressFn& progress_;
  std::string partial_;
  bool overlong_ = false;  // partial_'s start was already kept as plain text
  std::string tail_;
};

struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  pid_t pgrp = 0;
};

bool ReadProcStat(pid_t pid, ProcStat* stat) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  char buffer[1024];
  ssize_t n = read(fd.get(), buffer, sizeof(buffer) - 1);
  if (n <= 0) return false;
  buffer[n] = '\0';
  // "pid (comm) state ppid pgrp ...": comm may hold anything, even ')'.
  const char* after_comm = strrchr(buffer, ')');
  if (after_comm == nullptr) return false;
  int ppid = 0;
  int pgrp = 0;
  if (sscanf(after_comm + 1, " %c %d %d", &stat->state, &ppid, &pgrp) != 3) {
    return false;
  }
  stat->ppid = ppid;
  stat->pgrp = pgrp;
  return true;
}

// True if a process of group `pgid` is still alive. Reaps the members that
// are zombies of this process (orphans re-parented to it, when it is PID 1 or
// a child subreaper); zombies that another parent must reap are not alive.
bool GroupHasLiveMembers(pid_t pgid) {
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return false;  // cannot tell: do not wait
  const pid_t self = getpid();
  bool live = false;
  while (const dirent* entry = readdir(dir)) {
    int pid = 0;
    ProcStat stat;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || !ReadProcStat(pid, &stat) || stat.pgrp != pgid) {
      continue;
    }
    if (stat.state == 'Z' || stat.state == 'X') {
      if (stat.ppid == self) waitpid(pid, nullptr, WNOHANG);
      continue;
    }
    live = true;
  }
  closedir(dir);
  return live;
}

// Waits, bounded, until no process of group `pgid` is alive. Called after
// the leader was reaped, so it only probes (signal 0) and never signals.
void AwaitGroupGone(pid_t pgid) {
  const absl::Time give_up = absl::Now() + kGroupGoneTimeout;
  absl::Duration pause = absl::Milliseconds(1);
  while (true) {
    if (kill(-pgid, 0) != 0 && errno == ESRCH) return;
    if (!GroupHasLiveMembers(pgid)) return;
    if (absl::Now() >= give_up) return;
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(20));
  }
}

std::string SignalText(int sig) {
  const char* abbrev = sigabbrev_np(sig);  // "KILL"; thread-safe, unlike strsignal
  return abbrev == nullptr ? absl::StrCat(sig) : absl::StrCat(sig, " (SIG", abbrev, ")");
}

// One attempt: spawn, supervise in a single poll loop, reap, classify.
class Attempt {
 public:
  Attempt(const ExecRequest& request, const Cancellation* cancel, const ProgressFn& progress)
      : request_(request), cancel_(cancel), stderr_sink_(progress) {}

  absl::StatusOr<ExecResult> Run();

 private:
  // Why the group was signalled first; the first reason sticks.
  enum class KillReason { kNone, kDeadline, kCancel, kOutputLimit, kLeaderExited };

  absl::Status Start(const std::vector<std::string>& env);
  void Supervise();
  void CheckTriggers(absl::Time now);
  void StartKill(KillReason reason, absl::Time now);
  int PollTimeoutMillis(absl::Time now) const;
  bool LeaderExitedByWaitid();
  void WriteStdin();
  void ReadStdout();
  void ReadStderr();
  void CloseOutputs();
  void SignalGroup(int sig);
  void Reap();
  ExecResult Result();
  std::string KilledSummary();
  void ClassifyExit(ExecResult* result, const std::string& tail) const;

  const ExecRequest& request_;
  const Cancellation* const cancel_;
  StderrSink stderr_sink_;
  absl::Time start_;
  pid_t pid_ = 0;  // also the process-group id
  UniqueFd stdin_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  UniqueFd pidfd_;
  size_t payload_written_ = 0;
  std::string output_;
  bool output_overflow_ = false;
  bool leader_exited_ = false;  // exited, but not reaped yet: the group id is pinned
  KillReason kill_reason_ = KillReason::kNone;
  absl::Time term_sent_ = absl::InfiniteFuture();
  bool escalated_ = false;  // SIGKILL sent because kill_grace ran out
  absl::Time sigkill_sent_ = absl::InfiniteFuture();
  int poll_errno_ = 0;
  bool have_status_ = false;
  int wait_status_ = 0;
  int wait_errno_ = 0;
  std::vector<char> buffer_ = std::vector<char>(kIoChunk);
};

absl::StatusOr<ExecResult> Attempt::Run() {
  if (absl::Status valid = ValidateRequest(request_); !valid.ok()) return valid;
  start_ = absl::Now();
  if (cancel_ != nullptr && cancel_->cancelled()) {
    kill_reason_ = KillReason::kCancel;
    return Result();
  }
  if (start_ >= request_.deadline) {
    kill_reason_ = KillReason::kDeadline;
    return Result();
  }
  if (absl::Status started = Start(BuildEnvironment(request_.env)); !started.ok()) {
    return started;
  }
  Supervise();
  Reap();
  return Result();
}

absl::Status Attempt::Start(const std::vector<std::string>& env) {
  UniqueFd child_stdin, child_stdout, child_stderr;
  if (absl::Status s = MakePipe(&child_stdin, &stdin_); !s.ok()) return s;
  if (absl::Status s = MakePipe(&stdout_, &child_stdout); !s.ok()) return s;
  if (absl::Status s = MakePipe(&stderr_, &child_stderr); !s.ok()) return s;
  for (int fd : {stdin_.get(), stdout_.get(), stderr_.get()}) {
    if (absl::Status s = SetNonBlocking(fd); !s.ok()) return s;
  }
  absl::StatusOr<pid_t> pid =
      Spawn(request_.command, env, {child_stdin.get(), child_stdout.get(), child_stderr.get()});
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  // The parent's copies of the child's ends must go, or EOF never comes.
  child_stdin.Reset();
  child_stdout.Reset();
  child_stderr.Reset();
  pidfd_ = UniqueFd(PidfdOpen(pid_));
  if (request_.payload.empty()) stdin_.Reset();
  return absl::OkStatus();
}

void Attempt::Supervise() {
  while (true) {
    if (!leader_exited_ && !pidfd_.valid()) leader_exited_ = LeaderExitedByWaitid();
    const absl::Time now = absl::Now();
    CheckTriggers(now);
    if (leader_exited_ && !stdout_.valid() && !stderr_.valid()) return;

    pollfd fds[5];
    nfds_t count = 0;
    auto watch = [&](int fd, short events) -> pollfd* {
      if (fd < 0) return nullptr;
      fds[count] = pollfd{fd, events, 0};
      return &fds[count++];
    };
    pollfd* in = watch(stdin_.get(), POLLOUT);
    pollfd* out = watch(stdout_.get(), POLLIN);
    pollfd* err = watch(stderr_.get(), POLLIN);
    if (cancel_ != nullptr && kill_reason_ == KillReason::kNone) watch(cancel_->fd(), POLLIN);
    pollfd* exited = leader_exited_ ? nullptr : watch(pidfd_.get(), POLLIN);

    if (poll(fds, count, PollTimeoutMillis(now)) < 0) {
      if (errno == EINTR) continue;
      // Cannot supervise any more: end the attempt hard rather than spin.
      poll_errno_ = errno;
      SignalGroup(SIGKILL);
      stdin_.Reset();
      CloseOutputs();
      return;
    }
    // The cancel descriptor needs no handling: CheckTriggers reads the flag.
    if (in != nullptr && in->revents != 0) WriteStdin();
    if (out != nullptr && out->revents != 0) ReadStdout();
    if (err != nullptr && err->revents != 0) ReadStderr();
    if (exited != nullptr && exited->revents != 0) {
      leader_exited_ = true;
      pidfd_.Reset();
    }
  }
}

void Attempt::CheckTriggers(absl::Time now) {
  if (kill_reason_ == KillReason::kNone) {
    if (leader_exited_ && (stdout_.valid() || stderr_.valid())) {
      // Its exit status decides the attempt; whatever it left holding the
      // pipes must not hold up the worker slot.
      StartKill(KillReason::kLeaderExited, now);
    } else if (cancel_ != nullptr && cancel_->cancelled()) {
      StartKill(KillReason::kCancel, now);
    } else if (now >= request_.deadline) {
      StartKill(KillReason::kDeadline, now);
    }
  }
  if (kill_reason_ != KillReason::kNone && !escalated_ && now >= term_sent_ + request_.kill_grace) {
    SignalGroup(SIGKILL);
    escalated_ = true;
    sigkill_sent_ = now;
  }
  if (now >= sigkill_sent_ + kPipesAfterKill) CloseOutputs();
}

void Attempt::StartKill(KillReason reason, absl::Time now) {
  kill_reason_ = reason;
  term_sent_ = now;
  SignalGroup(SIGTERM);
  stdin_.Reset();  // nothing more to feed it
}

int Attempt::PollTimeoutMillis(absl::Time now) const {
  absl::Time wake = absl::InfiniteFuture();
  if (kill_reason_ == KillReason::kNone) {
    wake = request_.deadline;
  } else if (!escalated_) {
    wake = term_sent_ + request_.kill_grace;
  } else if (stdout_.valid() || stderr_.valid()) {
    wake = sigkill_sent_ + kPipesAfterKill;
  }
  absl::Duration wait = wake - now;
  const bool needs_tick =
      (!leader_exited_ && !pidfd_.valid()) ||
      (cancel_ != nullptr && cancel_->fd() < 0 && kill_reason_ == KillReason::kNone);
  if (needs_tick) wait = std::min(wait, kExitCheckTick);
  if (wait == absl::InfiniteDuration()) return -1;
  if (wait <= absl::ZeroDuration()) return 0;
  int64_t millis = absl::ToInt64Milliseconds(absl::Ceil(wait, absl::Milliseconds(1)));
  return static_cast<int>(std::min<int64_t>(millis, INT_MAX));
}

// Without a pidfd: has the leader exited? Leaves it unreaped (WNOWAIT).
bool Attempt::LeaderExitedByWaitid() {
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  if (waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
    return info.si_pid != 0;
  }
  // ECHILD: someone else reaped it (or SIGCHLD is ignored); do not wait on.
  return errno != EINTR;
}

void Attempt::WriteStdin() {
  const std::string& payload = request_.payload;
  size_t size = std::min(payload.size() - payload_written_, kIoChunk);
  ssize_t n = WriteWithoutSigpipe(stdin_.get(), payload.data() + payload_written_, size);
  if (n > 0) {
    payload_written_ += static_cast<size_t>(n);
    if (payload_written_ == payload.size()) stdin_.Reset();  // EOF for the child
  } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
    stdin_.Reset();  // EPIPE: the child stopped reading, which is its business
  }
}

void Attempt::ReadStdout() {
  ssize_t n = read(stdout_.get(), buffer_.data(), buffer_.size());
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) stdout_.Reset();
    return;
  }
  if (n == 0) {
    stdout_.Reset();
    return;
  }
  if (output_overflow_) return;  // drained and dropped while the group dies
  size_t room = request_.max_output_bytes - output_.size();
  size_t got = static_cast<size_t>(n);
  output_.append(buffer_.data(), std::min(got, room));
  if (got > room) {
    output_overflow_ = true;
    if (kill_reason_ == KillReason::kNone) {
      StartKill(KillReason::kOutputLimit, absl::Now());
    }
  }
}

void Attempt::ReadStderr() {
  ssize_t n = read(stderr_.get(), buffer_.data(), buffer_.size());
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    stderr_.Reset();
    stderr_sink_.Finish();
    return;
  }
  if (n < 0) return;
  stderr_sink_.Feed(absl::string_view(buffer_.data(), static_cast<size_t>(n)));
}

void Attempt::CloseOutputs() {
  stdout_.Reset();
  if (stderr_.valid()) {
    stderr_.Reset();
    stderr_sink_.Finish();
  }
}

// Only while the leader is unreaped: its zombie pins the group id, so the
// signal cannot reach a group that reused the number.
void Attempt::SignalGroup(int sig) {
  kill(-pid_, sig);  // ESRCH (nobody left) is fine
}

void Attempt::Reap() {
  // Leftovers that hold no pipe are still in the group: kill them before the
  // leader is reaped and the group id is released.
  SignalGroup(SIGKILL);
  int status = 0;
  pid_t reaped;
  do {
    reaped = waitpid(pid_, &status, 0);
  } while (reaped < 0 && errno == EINTR);
  if (reaped == pid_) {
    have_status_ = true;
    wait_status_ = status;
  } else {
    wait_errno_ = errno;
  }
  AwaitGroupGone(pid_);
}

ExecResult Attempt::Result() {
  ExecResult result;
  result.pid = pid_;
  if (have_status_ && WIFEXITED(wait_status_)) {
    result.exit_code = WEXITSTATUS(wait_status_);
  } else if (have_status_ && WIFSIGNALED(wait_status_)) {
    result.term_signal = WTERMSIG(wait_status_);
  }
  const std::string tail = stderr_sink_.Tail();
  if (kill_reason_ == KillReason::kNone || kill_reason_ == KillReason::kLeaderExited) {
    // It ended by itself: its exit status decides.
    ClassifyExit(&result, tail);
  } else {
    // We ended it: the reason decides, whatever the status.
    if (kill_reason_ == KillReason::kDeadline) {
      result.outcome = ExecResult::Outcome::kTimedOut;
    } else if (kill_reason_ == KillReason::kOutputLimit) {
      result.outcome = ExecResult::Outcome::kFailed;
    } else {
      result.outcome = cancel_->reason() == CancelReason::kTimeout
                           ? ExecResult::Outcome::kTimedOut
                           : ExecResult::Outcome::kCancelled;
    }
    result.error = KilledSummary();
    if (!tail.empty()) absl::StrAppend(&result.error, "; stderr: ", tail);
  }
  result.output = std::move(output_);
  if (result.outcome == ExecResult::Outcome::kThrottled) {
    result.retry_after = ParseRetryAfter(result.output);
  }
  return result;
}

std::string Attempt::KilledSummary() {
  std::string summary;
  if (kill_reason_ == KillReason::kDeadline) {
    summary = pid_ == 0 ? "timeout: the attempt deadline passed before the command started"
                        : absl::StrCat("timeout: attempt deadline reached after ",
                                       FormatMillis(request_.deadline - start_));
  } else if (kill_reason_ == KillReason::kOutputLimit) {
    summary = absl::StrCat("stdout exceeded max_output_bytes (", request_.max_output_bytes,
                           " bytes); process group killed");
  } else {
    const CancelReason reason = cancel_->reason();
    summary = reason == CancelReason::kTimeout
                  ? std::string("timeout: attempt timed out (cancelled by the worker)")
                  : absl::StrCat("cancelled (", CancelReasonName(reason), ")");
    if (pid_ == 0) absl::StrAppend(&summary, " before the command started");
  }
  if (escalated_) {
    absl::StrAppend(&summary, "; SIGKILL after the ", FormatMillis(request_.kill_grace),
                    " grace period");
  }
  return summary;
}

void Attempt::ClassifyExit(ExecResult* result, const std::string& tail) const {
  using Outcome = ExecResult::Outcome;
  const std::string detail = tail.empty() ? "" : absl::StrCat(": ", tail);
  if (poll_errno_ != 0) {
    result->outcome = Outcome::kFailed;
    result->error =
        absl::StrCat("internal error supervising the command: poll: ", ErrnoText(poll_errno_),
                     "; process group killed");
  } else if (!have_status_) {
    result->outcome = Outcome::kFailed;
    result->error =
        absl::StrCat("exit status unavailable: waitpid: ", ErrnoText(wait_errno_),
                     " (is SIGCHLD ignored, or does another thread reap children?)", detail);
  } else if (result->term_signal != 0) {
    result->outcome = Outcome::kFailed;
    result->error = absl::StrCat("killed by signal ", SignalText(result->term_signal), detail);
  } else if (output_overflow_) {
    // A leftover overflowed stdout after the leader exited.
    result->outcome = Outcome::kFailed;
    result->error =
        absl::StrCat("stdout exceeded max_output_bytes (", request_.max_output_bytes, " bytes)");
  } else if (result->exit_code == 0) {
    result->outcome = Outcome::kSucceeded;
  } else if (result->exit_code == 65) {
    result->outcome = Outcome::kFailedPermanent;
    result->error = absl::StrCat("exit code 65 (permanent failure)", detail);
  } else if (result->exit_code == 76) {
    result->outcome = Outcome::kThrottled;
    result->error = absl::StrCat("exit code 76 (throttled)", detail);
  } else {
    result->outcome = Outcome::kFailed;
    result->error = absl::StrCat("exit code ", result->exit_code, detail);
  }
}

}  // namespace

const char* OutcomeName(ExecResult::Outcome outcome) {
  switch (outcome) {
    case ExecResult::Outcome::kSucceeded: return "succeeded";
    case ExecResult::Outcome::kFailed: return "failed";
    case ExecResult::Outcome::kFailedPermanent: return "failed_permanent";
    case ExecResult::Outcome::kThrottled: return "throttled";
    case ExecResult::Outcome::kTimedOut: return "timed_out";
    case ExecResult::Outcome::kCancelled: return "cancelled";
  }
  return "failed";
}

absl::StatusOr<ExecResult> RunCommand(const ExecRequest& request, const Cancellation* cancel,
                                      const ProgressFn& progress) {
  Attempt attempt(request, cancel, progress);
  return attempt.Run();
}

}  // namespace conveyor::worker
