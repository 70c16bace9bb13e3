// Authorization for the broker's API: the --auth-tokens file, the role each
// RPC needs, and the check the service layer runs at the start of every call
// (docs/security.md, "Tokens and roles").
//
// The file holds one entry a line; blank lines and lines starting with '#'
// are skipped, and " #" starts a comment:
//
//   sha256:<64 hex digits> ROLE[,ROLE...] [# comment]   a bearer token, hashed
//   cert:<identity> ROLE[,ROLE...] [# comment]          an mTLS client certificate
//
// A certificate matches when its verified common name or any of its subject
// alternative names equals <identity> (which runs up to the roles field, so
// it may hold spaces). Roles: submit (TaskService), work (WorkerService),
// admin (QueueService); GetQueue and ListQueues are open to every
// authenticated caller; no role implies another.
//
// Plain C++ (no gRPC): the service layer extracts the `authorization` header
// and the certificate identities into a CallerCredentials.
//
// Thread-safe. Check takes a reader lock and touches no file: safe inside a
// gRPC reaction. Reload and ReloadIfChanged read the file (call them from a
// thread of their own, as StartWatching does).
#ifndef CONVEYOR_SERVER_AUTH_H_
#define CONVEYOR_SERVER_AUTH_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/token.h"

namespace conveyor::server {

// The role an RPC needs. `role` empty: any authenticated caller.
struct RpcRule {
  const char* service;  // "conveyor.v1.TaskService"
  const char* method;   // "Submit"
  std::optional<Role> role;
};

// Every guarded RPC of TaskService, WorkerService and QueueService.
absl::Span<const RpcRule> RpcRules();
// Null for an RPC not in the table (the check then denies it).
const RpcRule* FindRpcRule(absl::string_view service, absl::string_view method);

// The parsed tokens file.
struct TokenTable {
  struct Token {
    TokenDigest digest;
    RoleSet roles;
    std::string label;  // its comment, else "line N": for logs, never secret
  };
  std::vector<Token> tokens;
  // Certificate identity -> roles.
  absl::flat_hash_map<std::string, RoleSet> certs;
};

// Parses the text of a tokens file. FAILED_PRECONDITION naming `path` and the
// line for anything malformed: an unknown kind of entry (a raw token pasted
// by mistake included: its text is never echoed), a digest that is not 64
// hex digits, a missing or unknown role, an entry given twice.
absl::StatusOr<TokenTable> ParseTokenFile(absl::string_view text, absl::string_view path);

// What a call presents.
struct CallerCredentials {
  // Every value of the `authorization` header (normally none or one).
  std::vector<absl::string_view> authorization;
  // The verified client certificate's common name and subject alternative
  // names; empty without mTLS.
  std::vector<std::string> cert_identities;
};

class Authorizer {
 public:
  // Reads and parses `path`. FAILED_PRECONDITION naming the file (and the
  // line) if it cannot be read or is malformed.
  static absl::StatusOr<std::shared_ptr<Authorizer>> Load(std::string path);
  ~Authorizer();
  Authorizer(const Authorizer&) = delete;
  Authorizer& operator=(const Authorizer&) = delete;

  // OK if the caller may call service/method. UNAUTHENTICATED ("missing or
  // unknown bearer token") when no valid token was sent and no certificate
  // identity is mapped, or a token was sent that the file does not hold (a
  // certificate does not make up for a wrong token); PERMISSION_DENIED naming
  // the role needed and the RPC when the caller's roles lack it, or the RPC is
  // unknown. Digests are compared in constant time. Never blocks on I/O.
  absl::Status Check(const CallerCredentials& caller, absl::string_view service,
                     absl::string_view method) const;

  // Re-reads the file now. On error keeps the current table, logs the error
  // and returns it; on success logs the new counts.
  absl::Status Reload();
  // Re-reads the file if its inode, size, mtime or ctime changed since the
  // last read (a file that cannot be stat'ed is an error, logged once).
  // Returns what Reload returned, or OK when nothing changed.
  absl::Status ReloadIfChanged();
  // Calls ReloadIfChanged every `interval` on a thread of its own, until
  // destruction. Call once.
  void StartWatching(absl::Duration interval);

  const std::string& path() const { return path_; }
  size_t token_count() const;
  size_t cert_count() const;

 private:
  // What identifies a version of the file.
  struct FileStamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    bool operator==(const FileStamp&) const = default;
  };

  explicit Authorizer(std::string path) : path_(std::move(path)) {}
  // Reads the file: its table and the stamp it had.
  absl::StatusOr<std::pair<TokenTable, FileStamp>> Read() const;
  void WatchLoop(absl::Duration interval);

  const std::string path_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenTable> table_ ABSL_GUARDED_BY(mu_);

  // Serializes reloads (the watcher and SIGHUP) and holds their bookkeeping.
  absl::Mutex reload_mu_;
  FileStamp stamp_ ABSL_GUARDED_BY(reload_mu_);
  std::string last_error_ ABSL_GUARDED_BY(reload_mu_);

  absl::Mutex watch_mu_;
  bool stopping_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread watcher_;
};

}  // namespace conveyor::server

#endif  // CONVEYOR_SERVER_AUTH_H_
