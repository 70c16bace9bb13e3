#include "common/token.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace conveyor {

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSubmit: return "submit";
    case Role::kWork: return "work";
    case Role::kAdmin: return "admin";
  }
  return "?";
}

std::string RoleSet::ToString() const {
  std::string out;
  for (Role r : {Role::kSubmit, Role::kWork, Role::kAdmin}) {
    if (Has(r)) absl::StrAppend(&out, out.empty() ? "" : ",", RoleName(r));
  }
  return out;
}

absl::StatusOr<RoleSet> ParseRoles(absl::string_view text) {
  RoleSet roles;
  for (absl::string_view word : absl::StrSplit(text, ',')) {
    word = absl::StripAsciiWhitespace(word);
    if (word == "submit") {
      roles.Add(Role::kSubmit);
    } else if (word == "work") {
      roles.Add(Role::kWork);
    } else if (word == "admin") {
      roles.Add(Role::kAdmin);
    } else {
      return absl::InvalidArgumentError(
          word.empty() ? std::string("empty role name; roles are submit, work and admin")
                       : absl::StrCat("unknown role \"", word,
                                      "\"; roles are submit, work and admin"));
    }
  }
  return roles;
}

TokenDigest HashToken(absl::string_view token) {
  TokenDigest digest{};
  unsigned int size = 0;
  // One-shot EVP digest: SHA-256 cannot fail on valid input short of an
  // out-of-memory in libcrypto, which leaves the digest all zero (matching
  // no file line, whose digests are checked to be real hex).
  EVP_Digest(token.data(), token.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

std::string TokenHashField(absl::string_view token) {
  const TokenDigest d = HashToken(token);
  return absl::StrCat("sha256:", absl::BytesToHexString(absl::string_view(
                                     reinterpret_cast<const char*>(d.data()), d.size())));
}

absl::StatusOr<std::string> NewToken() {
  char bytes[32];
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("/dev/urandom: ", std::strerror(errno)));
  }
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::read(fd, bytes + got, sizeof bytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      return absl::UnavailableError(absl::StrCat("/dev/urandom: ", std::strerror(err)));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  std::string token =
      absl::StrCat(kTokenPrefix, absl::WebSafeBase64Escape(absl::string_view(bytes, sizeof bytes)));
  std::memset(bytes, 0, sizeof bytes);
  return token;
}

std::string TokenFileLine(absl::string_view token, RoleSet roles, absl::string_view comment) {
  std::string line = absl::StrCat(TokenHashField(token), " ", roles.ToString());
  if (!comment.empty()) {
    std::string text(comment);
    for (char& c : text) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    absl::StrAppend(&line, " # ", absl::StripAsciiWhitespace(text));
  }
  return line;
}

}  // namespace conveyor
