// Bearer tokens and roles, shared by the broker (server/auth.h checks them)
// and the CLI (`conveyor token create|hash` makes them).
//
// A token is a random secret the client sends as `authorization: Bearer
// <token>`; the broker's --auth-tokens file holds only its SHA-256, as a line
//
//   sha256:<64 hex digits> ROLE[,ROLE...] [# comment]
//
// Roles say what a caller may do: `submit` (TaskService), `work`
// (WorkerService), `admin` (QueueService). See docs/security.md, "Tokens and
// roles".
//
// Thread-safe: functions only.
#ifndef CONVEYOR_COMMON_TOKEN_H_
#define CONVEYOR_COMMON_TOKEN_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace conveyor {

enum class Role : uint8_t { kSubmit = 1, kWork = 2, kAdmin = 4 };

// "submit", "work" or "admin".
absl::string_view RoleName(Role role);

// A set of roles (a bit set).
class RoleSet {
 public:
  RoleSet() = default;
  RoleSet(std::initializer_list<Role> roles) {  // NOLINT
    for (Role r : roles) Add(r);
  }
  void Add(Role role) { bits_ |= static_cast<uint8_t>(role); }
  void AddAll(RoleSet other) { bits_ |= other.bits_; }
  bool Has(Role role) const { return (bits_ & static_cast<uint8_t>(role)) != 0; }
  bool empty() const { return bits_ == 0; }
  // "submit,work" in the fixed order submit, work, admin; "" when empty.
  std::string ToString() const;
  bool operator==(const RoleSet&) const = default;

 private:
  uint8_t bits_ = 0;
};

// "work", "submit,work", " admin , work " (spaces around names allowed).
// INVALID_ARGUMENT naming the bad word for an unknown role or an empty list.
absl::StatusOr<RoleSet> ParseRoles(absl::string_view text);

// The SHA-256 of a token's bytes.
using TokenDigest = std::array<uint8_t, 32>;
TokenDigest HashToken(absl::string_view token);

// "sha256:" and the digest in lower-case hex: the first field of a line of
// the tokens file.
std::string TokenHashField(absl::string_view token);

// Prefix of the tokens `conveyor token create` makes, so that a leaked one is
// easy to recognize (secret scanners, grep).
inline constexpr char kTokenPrefix[] = "cvy_";

// A fresh token: kTokenPrefix and 32 bytes from /dev/urandom in base64url
// without padding (47 characters in all). UNAVAILABLE if /dev/urandom cannot
// be read.
absl::StatusOr<std::string> NewToken();

// A whole line of the tokens file for `token`: "sha256:<hex> ROLES", plus
// " # comment" when `comment` is not empty (newlines in it become spaces).
std::string TokenFileLine(absl::string_view token, RoleSet roles, absl::string_view comment);

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_TOKEN_H_
