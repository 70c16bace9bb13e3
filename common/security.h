// Client-side connection security, shared by the client library, the CLI and
// the worker: TLS (optionally with a client certificate, for mTLS) and a
// bearer token with a role (see docs/security.md).
//
//   absl::StatusOr<ClientSecurity> sec = ResolveClientSecurity(flags);
//   auto creds = ChannelCredentialsFor(*sec);   // plaintext when TLS is off
//   grpc::ClientContext ctx;  AttachToken(&ctx, sec->token);
//
// Tokens travel as the `authorization: Bearer <token>` header. They are sent
// over plaintext only to a loopback broker without TLS (the broker refuses
// any other plaintext listener without --insecure).
#ifndef CONVEYOR_COMMON_SECURITY_H_
#define CONVEYOR_COMMON_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace grpc {
class ChannelCredentials;
class ClientContext;
}  // namespace grpc

namespace conveyor {

// What the user gave: flags (empty: not given), then the environment.
struct ClientSecurityFlags {
  bool tls = false;        // --tls: TLS with the system's CA roots
  std::string tls_ca;      // --tls-ca / CONVEYOR_TLS_CA
  std::string tls_cert;    // --tls-cert / CONVEYOR_TLS_CERT (mTLS)
  std::string tls_key;     // --tls-key / CONVEYOR_TLS_KEY
  std::string token;       // --token / CONVEYOR_TOKEN
  std::string token_file;  // --token-file / CONVEYOR_TOKEN_FILE
};

struct ClientSecurity {
  bool tls = false;
  std::string tls_ca_file;    // empty: the system's roots
  std::string tls_cert_file;  // with tls_key_file: a client certificate
  std::string tls_key_file;
  // Certificate files are re-read this often (a rotated client certificate
  // is picked up without a restart).
  absl::Duration reload_interval = absl::Minutes(1);
  std::string token;          // empty: none
};

// Flags win over the environment (CONVEYOR_TLS, CONVEYOR_TLS_CA, ..._CERT,
// ..._KEY, CONVEYOR_TOKEN, CONVEYOR_TOKEN_FILE). TLS is on when --tls or any
// certificate file is given. INVALID_ARGUMENT naming the flag for a
// certificate without its key (or the reverse), a token and a token file
// together, an unreadable file or one that holds no PEM block.
absl::StatusOr<ClientSecurity> ResolveClientSecurity(const ClientSecurityFlags& flags);

// Plaintext when `security.tls` is off; else TLS credentials that watch the
// certificate files.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const ClientSecurity& security);

inline constexpr char kAuthorizationHeader[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

// Adds `authorization: Bearer <token>` to the call (nothing for "").
void AttachToken(grpc::ClientContext* context, absl::string_view token);

}  // namespace conveyor

#endif  // CONVEYOR_COMMON_SECURITY_H_
