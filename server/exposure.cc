#include "server/exposure.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace conveyor::server {
namespace {

// The host of "host:port", "[v6]:port", "v6" (no brackets, no port) or "host".
absl::string_view HostOf(absl::string_view listen) {
  if (absl::StartsWith(listen, "[")) {
    const size_t close = listen.find(']');
    return close == absl::string_view::npos ? listen : listen.substr(1, close - 1);
  }
  const size_t colons = std::count(listen.begin(), listen.end(), ':');
  if (colons == 1) return listen.substr(0, listen.find(':'));
  return listen;  // no port, or a bare IPv6 address
}

}  // namespace

bool IsLoopbackListen(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) {
    return true;
  }
  const std::string host(HostOf(listen));
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

std::string MissingProtections(bool tls, bool auth) {
  std::string out;
  if (!tls) out = "TLS (--tls-cert and --tls-key)";
  if (!auth) absl::StrAppend(&out, out.empty() ? "" : " and ", "auth (--auth-tokens)");
  return out;
}

absl::Status CheckListenExposure(absl::string_view listen, bool tls, bool auth, bool insecure) {
  if (insecure || (tls && auth) || IsLoopbackListen(listen)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to serve the API on ", listen,
      ", which is not a loopback address, without ", MissingProtections(tls, auth),
      ": anyone who reaches the port could submit, lease, cancel and purge. Turn them on, "
      "listen on 127.0.0.1, or give --insecure to accept the risk (docs/security.md, "
      "\"Safe defaults\")"));
}

}  // namespace conveyor::server
