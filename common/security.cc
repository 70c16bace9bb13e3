#include "common/security.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace conveyor {
namespace {

std::string FromEnv(const std::string& flag, const char* env) {
  if (!flag.empty()) return flag;
  const char* v = std::getenv(env);
  return v != nullptr ? std::string(v) : std::string();
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read \"", path, "\""));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::Status CheckPem(const std::string& path, absl::string_view flag) {
  absl::StatusOr<std::string> text = ReadFile(path, flag);
  if (!text.ok()) return text.status();
  if (!absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": \"", path, "\" holds no PEM block (-----BEGIN ...)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClientSecurity> ResolveClientSecurity(const ClientSecurityFlags& f) {
  ClientSecurity s;
  s.tls_ca_file = FromEnv(f.tls_ca, "CONVEYOR_TLS_CA");
  s.tls_cert_file = FromEnv(f.tls_cert, "CONVEYOR_TLS_CERT");
  s.tls_key_file = FromEnv(f.tls_key, "CONVEYOR_TLS_KEY");
  const std::string tls_env = FromEnv("", "CONVEYOR_TLS");
  s.tls = f.tls || tls_env == "1" || tls_env == "true" || !s.tls_ca_file.empty() ||
          !s.tls_cert_file.empty() || !s.tls_key_file.empty();
  if (s.tls_cert_file.empty() != s.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together (a client certificate and its key)");
  }
  if (!s.tls_ca_file.empty()) {
    if (absl::Status st = CheckPem(s.tls_ca_file, "--tls-ca"); !st.ok()) return st;
  }
  if (!s.tls_cert_file.empty()) {
    if (absl::Status st = CheckPem(s.tls_cert_file, "--tls-cert"); !st.ok()) return st;
    if (absl::Status st = CheckPem(s.tls_key_file, "--tls-key"); !st.ok()) return st;
  }
  std::string token = FromEnv(f.token, "CONVEYOR_TOKEN");
  const std::string token_file = FromEnv(f.token_file, "CONVEYOR_TOKEN_FILE");
  if (!f.token.empty() && !f.token_file.empty()) {
    return absl::InvalidArgumentError("give --token or --token-file, not both");
  }
  if (!token_file.empty() && f.token.empty()) {
    absl::StatusOr<std::string> text = ReadFile(token_file, "--token-file");
    if (!text.ok()) return text.status();
    token = std::string(absl::StripAsciiWhitespace(*text));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file: \"", token_file, "\" is empty"));
    }
  }
  s.token = std::move(token);
  return s;
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const ClientSecurity& s) {
  if (!s.tls) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  const unsigned interval =
      static_cast<unsigned>(std::max<int64_t>(1, absl::ToInt64Seconds(s.reload_interval)));
  if (!s.tls_ca_file.empty() || !s.tls_cert_file.empty()) {
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        s.tls_key_file, s.tls_cert_file, s.tls_ca_file, interval);
    options.set_certificate_provider(provider);
    if (!s.tls_ca_file.empty()) options.watch_root_certs();
    if (!s.tls_cert_file.empty()) options.watch_identity_key_cert_pairs();
  }
  return grpc::experimental::TlsCredentials(options);
}

void AttachToken(grpc::ClientContext* context, absl::string_view token) {
  if (token.empty()) return;
  context->AddMetadata(kAuthorizationHeader, absl::StrCat(kBearerPrefix, token));
}

}  // namespace conveyor
