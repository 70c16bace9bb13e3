#include "server/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"

namespace conveyor::server {
namespace {

constexpr char kTask[] = "conveyor.v1.TaskService";
constexpr char kWorker[] = "conveyor.v1.WorkerService";
constexpr char kQueue[] = "conveyor.v1.QueueService";
constexpr char kSchedule[] = "conveyor.v1.ScheduleService";

// One table, so that docs/security.md and the tests read the same rules.
// tests/server/auth_test.cc checks that it covers every method of the three
// services in the proto.
constexpr RpcRule kRules[] = {
    {kTask, "Submit", Role::kSubmit},
    {kTask, "SubmitBatch", Role::kSubmit},
    {kTask, "SubmitStream", Role::kSubmit},
    {kTask, "GetTask", Role::kSubmit},
    {kTask, "WatchTask", Role::kSubmit},
    {kTask, "CancelTask", Role::kSubmit},
    {kTask, "ListTasks", Role::kSubmit},
    {kTask, "SubmitGroup", Role::kSubmit},
    {kTask, "GetGroup", Role::kSubmit},
    {kTask, "WatchGroup", Role::kSubmit},
    {kTask, "CancelGroup", Role::kSubmit},
    {kTask, "GetChain", Role::kSubmit},
    {kTask, "CancelChain", Role::kSubmit},
    {kWorker, "Lease", Role::kWork},
    {kWorker, "Heartbeat", Role::kWork},
    {kWorker, "Complete", Role::kWork},
    {kWorker, "Fail", Role::kWork},
    {kWorker, "Release", Role::kWork},
    {kWorker, "EndPolls", Role::kWork},
    {kQueue, "CreateQueue", Role::kAdmin},
    {kQueue, "UpdateQueue", Role::kAdmin},
    // Settings and counts, no task data: any authenticated caller.
    {kQueue, "GetQueue", std::nullopt},
    {kQueue, "ListQueues", std::nullopt},
    {kQueue, "PauseQueue", Role::kAdmin},
    {kQueue, "ResumeQueue", Role::kAdmin},
    {kQueue, "PurgeQueue", Role::kAdmin},
    {kQueue, "ListDeadLetters", Role::kAdmin},
    {kQueue, "RequeueDeadLetters", Role::kAdmin},
    {kQueue, "PurgeDeadLetters", Role::kAdmin},
    // A schedule submits tasks on its owner's behalf, and shows its template.
    {kSchedule, "CreateSchedule", Role::kSubmit},
    {kSchedule, "GetSchedule", Role::kSubmit},
    {kSchedule, "ListSchedules", Role::kSubmit},
    {kSchedule, "PauseSchedule", Role::kSubmit},
    {kSchedule, "ResumeSchedule", Role::kSubmit},
    {kSchedule, "DeleteSchedule", Role::kSubmit},
};

// A tokens file is a few lines per client; anything this large is not one.
constexpr off_t kMaxFileBytes = off_t{1} << 20;

constexpr absl::string_view kHashKind = "sha256:";
constexpr absl::string_view kCertKind = "cert:";

absl::Status LineError(absl::string_view path, int line, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(path, ":", line, ": ", what));
}

bool DecodeHexDigest(absl::string_view hex, TokenDigest* out) {
  if (hex.size() != 2 * out->size()) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  const std::string bytes = absl::HexStringToBytes(hex);
  std::memcpy(out->data(), bytes.data(), out->size());
  return true;
}

// The text after the first '#' that starts the line or follows whitespace
// goes; returns the rest and sets `comment`.
absl::string_view SplitComment(absl::string_view line, absl::string_view* comment) {
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '#' && (i == 0 || absl::ascii_isspace(static_cast<unsigned char>(line[i - 1])))) {
      *comment = absl::StripAsciiWhitespace(line.substr(i + 1));
      return line.substr(0, i);
    }
  }
  *comment = "";
  return line;
}

int64_t Nanos(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The token of an `authorization` value "Bearer <token>" (scheme in any
// case); empty if malformed.
absl::string_view BearerToken(absl::string_view value) {
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return {};
  }
  return absl::StripAsciiWhitespace(value.substr(kScheme.size()));
}

}  // namespace

absl::Span<const RpcRule> RpcRules() { return kRules; }

const RpcRule* FindRpcRule(absl::string_view service, absl::string_view method) {
  for (const RpcRule& rule : kRules) {
    if (service == rule.service && method == rule.method) return &rule;
  }
  return nullptr;
}

absl::StatusOr<TokenTable> ParseTokenFile(absl::string_view text, absl::string_view path) {
  TokenTable table;
  absl::flat_hash_map<std::string, int> hash_lines;  // hex digest -> line
  absl::flat_hash_map<std::string, int> cert_lines;
  int n = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++n;
    absl::string_view comment;
    const absl::string_view body = absl::StripAsciiWhitespace(SplitComment(raw, &comment));
    if (body.empty()) continue;
    // Never echo the line: it might be a raw token pasted by mistake.
    const bool is_hash = absl::StartsWith(body, kHashKind);
    const bool is_cert = absl::StartsWith(body, kCertKind);
    if (!is_hash && !is_cert) {
      return LineError(path, n,
                       "an entry starts with sha256:<64 hex digits> or cert:<identity>; tokens "
                       "are stored hashed (make the line with `conveyor token hash`)");
    }
    const size_t last_space = body.find_last_of(" \t");
    if (last_space == absl::string_view::npos) {
      return LineError(path, n,
                       "no roles: add submit, work or admin (comma-separated) after the entry");
    }
    const absl::string_view head = absl::StripTrailingAsciiWhitespace(body.substr(0, last_space));
    absl::StatusOr<RoleSet> roles = ParseRoles(body.substr(last_space + 1));
    if (!roles.ok()) return LineError(path, n, roles.status().message());
    if (absl::EndsWith(head, ",")) {
      return LineError(path, n, "no spaces inside the role list (write submit,work)");
    }
    const std::string label =
        comment.empty() ? absl::StrCat("line ", n) : std::string(comment);
    if (is_hash) {
      const absl::string_view hex = head.substr(kHashKind.size());
      TokenTable::Token token;
      if (!DecodeHexDigest(hex, &token.digest)) {
        return LineError(path, n, "the digest after sha256: is not 64 hex digits");
      }
      const std::string key = absl::AsciiStrToLower(hex);
      if (auto [it, fresh] = hash_lines.emplace(key, n); !fresh) {
        return LineError(path, n, absl::StrCat("the same token as line ", it->second));
      }
      token.roles = *roles;
      token.label = label;
      table.tokens.push_back(std::move(token));
    } else {
      const std::string identity(absl::StripAsciiWhitespace(head.substr(kCertKind.size())));
      if (identity.empty()) return LineError(path, n, "cert: needs an identity");
      if (auto [it, fresh] = cert_lines.emplace(identity, n); !fresh) {
        return LineError(path, n, absl::StrCat("the same certificate identity as line ",
                                               it->second));
      }
      table.certs[identity] = *roles;
    }
  }
  return table;
}

// ─── Authorizer ───

absl::StatusOr<std::shared_ptr<Authorizer>> Authorizer::Load(std::string path) {
  std::shared_ptr<Authorizer> self(new Authorizer(std::move(path)));
  absl::StatusOr<std::pair<TokenTable, FileStamp>> read = self->Read();
  if (!read.ok()) return read.status();
  {
    absl::MutexLock lock(&self->reload_mu_);
    self->stamp_ = read->second;
  }
  absl::MutexLock lock(&self->mu_);
  self->table_ = std::make_shared<const TokenTable>(std::move(read->first));
  return self;
}

Authorizer::~Authorizer() {
  {
    absl::MutexLock lock(&watch_mu_);
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

absl::StatusOr<std::pair<TokenTable, Authorizer::FileStamp>> Authorizer::Read() const {
  auto fail = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": ", why));
  };
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const int err = errno;
    ::close(fd);
    return fail(S_ISREG(st.st_mode) ? std::strerror(err) : "not a regular file");
  }
  if (st.st_size > kMaxFileBytes) {
    ::close(fd);
    return fail("larger than 1 MiB; not a tokens file");
  }
  std::string text;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 && text.size() <= static_cast<size_t>(kMaxFileBytes)) {
    text.append(buf, static_cast<size_t>(n));
  }
  const int read_errno = errno;
  ::close(fd);
  if (n < 0) return fail(std::strerror(read_errno));
  if (text.size() > static_cast<size_t>(kMaxFileBytes)) {
    return fail("larger than 1 MiB; not a tokens file");
  }
  absl::StatusOr<TokenTable> table = ParseTokenFile(text, path_);
  if (!table.ok()) return table.status();
  if ((st.st_mode & S_IWOTH) != 0) {
    LogWarning("the auth tokens file is writable by every user: anyone on this machine can "
               "give themselves a role; chmod o-w it",
               {{"path", path_}});
  }
  FileStamp stamp;
  stamp.dev = st.st_dev;
  stamp.ino = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns = Nanos(st.st_mtim);
  stamp.ctime_ns = Nanos(st.st_ctim);
  return std::make_pair(*std::move(table), stamp);
}

absl::Status Authorizer::Reload() {
  absl::MutexLock reload(&reload_mu_);
  absl::StatusOr<std::pair<TokenTable, FileStamp>> read = Read();
  if (!read.ok()) {
    // Not again for the same file: the stamp moves on even when it is bad.
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0) {
      stamp_ = FileStamp{st.st_dev, st.st_ino, st.st_size, Nanos(st.st_mtim), Nanos(st.st_ctim)};
    }
    last_error_ = std::string(read.status().message());
    LogError("auth tokens file rejected; keeping the previous tokens",
             {{"path", path_}, {"error", read.status()}});
    return read.status();
  }
  stamp_ = read->second;
  last_error_.clear();
  const size_t tokens = read->first.tokens.size(), certs = read->first.certs.size();
  {
    absl::MutexLock lock(&mu_);
    table_ = std::make_shared<const TokenTable>(std::move(read->first));
  }
  LogInfo("auth tokens loaded", {{"path", path_},
                                 {"tokens", static_cast<unsigned long long>(tokens)},
                                 {"certs", static_cast<unsigned long long>(certs)}});
  return absl::OkStatus();
}

absl::Status Authorizer::ReloadIfChanged() {
  {
    absl::MutexLock reload(&reload_mu_);
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
      const std::string error = absl::StrCat(path_, ": ", std::strerror(errno));
      if (error != last_error_) {
        last_error_ = error;
        LogError("auth tokens file unreadable; keeping the previous tokens",
                 {{"path", path_}, {"error", error}});
      }
      return absl::FailedPreconditionError(error);
    }
    const FileStamp now{st.st_dev, st.st_ino, st.st_size, Nanos(st.st_mtim), Nanos(st.st_ctim)};
    if (now == stamp_) return absl::OkStatus();
  }
  return Reload();
}

void Authorizer::StartWatching(absl::Duration interval) {
  watcher_ = std::thread([this, interval] { WatchLoop(interval); });
}

void Authorizer::WatchLoop(absl::Duration interval) {
  absl::MutexLock lock(&watch_mu_);
  while (!stopping_) {
    watch_mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
    if (stopping_) break;
    watch_mu_.Unlock();
    (void)ReloadIfChanged();  // logs its own errors
    watch_mu_.Lock();
  }
}

size_t Authorizer::token_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return table_->tokens.size();
}

size_t Authorizer::cert_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return table_->certs.size();
}

absl::Status Authorizer::Check(const CallerCredentials& caller, absl::string_view service,
                               absl::string_view method) const {
  const std::string rpc = absl::StrCat(service, "/", method);
  std::optional<TokenDigest> digest;
  if (caller.authorization.size() > 1) {
    return absl::UnauthenticatedError(
        absl::StrCat("more than one authorization header (", rpc, ")"));
  }
  if (caller.authorization.size() == 1) {
    const absl::string_view token = BearerToken(caller.authorization.front());
    if (token.empty()) {
      return absl::UnauthenticatedError(absl::StrCat(
          "malformed authorization header: expected \"Bearer <token>\" (", rpc, ")"));
    }
    digest = HashToken(token);
  }
  RoleSet roles;
  bool authenticated = false;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (digest.has_value()) {
      // Every entry is compared, each in constant time: the time taken says
      // nothing about how close a guess came.
      const TokenTable::Token* match = nullptr;
      for (const TokenTable::Token& t : table_->tokens) {
        const bool equal = CRYPTO_memcmp(t.digest.data(), digest->data(), digest->size()) == 0;
        if (equal) match = &t;
      }
      if (match == nullptr) {
        return absl::UnauthenticatedError(absl::StrCat(
            "missing or unknown bearer token (the one sent is not in the broker's tokens "
            "file; ", rpc, ")"));
      }
      roles.AddAll(match->roles);
      authenticated = true;
    }
    for (const std::string& identity : caller.cert_identities) {
      auto it = table_->certs.find(identity);
      if (it == table_->certs.end()) continue;
      roles.AddAll(it->second);
      authenticated = true;
    }
  }
  if (!authenticated) {
    return absl::UnauthenticatedError(absl::StrCat(
        "missing or unknown bearer token (none sent",
        caller.cert_identities.empty() ? "" : ", and the client certificate maps to no role",
        "; give one with --token-file; ", rpc, ")"));
  }
  const RpcRule* rule = FindRpcRule(service, method);
  if (rule == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(rpc, " is not open to any role"));
  }
  if (rule->role.has_value() && !roles.Has(*rule->role)) {
    return absl::PermissionDeniedError(absl::StrCat(rpc, " needs the ", RoleName(*rule->role),
                                                    " role; the caller has ", roles.ToString()));
  }
  return absl::OkStatus();
}

}  // namespace conveyor::server
