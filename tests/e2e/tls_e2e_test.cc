// End-to-end: TLS and mTLS on the real `conveyord` (--tls-cert, --tls-key,
// --tls-client-ca, --tls-reload-interval).
//
// Certificates are made with the `openssl` command at test time, once for the
// suite, in a temporary directory: CA "A" with a server certificate (SAN
// IP:127.0.0.1 and DNS:localhost) and a client certificate (CN=worker-1);
// an unrelated CA "B" with a client certificate of its own; CA "C" with a
// second server certificate, used to rotate the broker's certificate.
//
// Each test starts its own broker on 127.0.0.1:0 (it writes the bound port to
// --port-file; output to a file, shown when a test fails), gives it its own
// copies of the files (the reload tests replace them: write a temporary file,
// then rename it over the old one) and calls QueueService/ListQueues through
// the generated stubs with grpc::SslCredentials, on a new channel each time.
// A call that reaches the broker returns OK; one whose handshake fails returns
// UNAVAILABLE. Waits are bounded and generous (a loaded 2-core machine);
// TearDown SIGKILLs and reaps the broker.
//
// What is pinned down: TLS with the right CA works and a plaintext client or
// one trusting another CA does not; with --tls-client-ca a client certificate
// from that CA is required (none, or one from another CA, fails); replacing
// the server certificate and key, or the client CA bundle, takes effect for
// new connections within the reload interval, without a restart; a file
// missing at a reload fails new handshakes until it is back (gRPC 1.51's
// FileWatcherCertificateProvider); bad TLS flags and files stop the broker
// before it serves (exit 64 usage, 78 configuration) naming the flag; the
// start-up log says TLS is on and holds no key material; and a call's auth
// context carries the verified client certificate's names (checked on an
// in-process server built with the broker's own MakeServerCredentials).
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "conveyor/v1/conveyor.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/auth_context.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif

namespace conveyor::server {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::conveyor::v1;
using e2e::Process;
using e2e::ReadFileOrEmpty;
using e2e::Stdio;
using e2e::TempDir;
using e2e::WriteFile;

constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kCallTimeout = absl::Seconds(10);
// Reloads happen every second in these tests; this bounds the wait for one.
constexpr absl::Duration kReloadTimeout = absl::Seconds(30);
constexpr absl::Duration kPoll = absl::Milliseconds(200);

// Replaces `to` with a copy of `from` the way certificates should be replaced:
// a complete temporary file renamed over the old one.
bool ReplaceAtomically(const fs::path& from, const fs::path& to) {
  const fs::path tmp = to.string() + ".tmp";
  std::error_code ec;
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) return false;
  fs::rename(tmp, to, ec);
  return !ec;
}

// The certificates of the suite, made with `openssl` (EC P-256 keys, valid
// for two days) in one directory.
class Pki {
 public:
  explicit Pki(fs::path dir) : dir_(std::move(dir)) {}

  fs::path crt(const std::string& name) const { return dir_ / (name + ".crt"); }
  fs::path key(const std::string& name) const { return dir_ / (name + ".key"); }
  std::string pem(const std::string& name) const { return ReadFileOrEmpty(crt(name)); }
  std::string key_pem(const std::string& name) const { return ReadFileOrEmpty(key(name)); }
  std::string log() const { return ReadFileOrEmpty(dir_ / "openssl.log"); }

  // A self-signed CA certificate `name`.crt with its key.
  bool MakeCa(const std::string& name, const std::string& subject) {
    return Run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", subject,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                "keyUsage=critical,keyCertSign,cRLSign", "-keyout", key(name).string(), "-out",
                crt(name).string()});
  }

  // A certificate `name`.crt signed by CA `ca`, with the extensions `ext`
  // (an openssl extension file's lines).
  bool MakeLeaf(const std::string& name, const std::string& ca, const std::string& subject,
                const std::string& ext) {
    const fs::path csr = dir_ / (name + ".csr"), ext_file = dir_ / (name + ".ext");
    return WriteFile(ext_file, ext) &&
           Run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", subject, "-keyout", key(name).string(), "-out",
                csr.string()}) &&
           Run({"openssl", "x509", "-req", "-in", csr.string(), "-CA", crt(ca).string(),
                "-CAkey", key(ca).string(), "-CAcreateserial", "-days", "2", "-extfile",
                ext_file.string(), "-out", crt(name).string()});
  }

  bool MakeServer(const std::string& name, const std::string& ca) {
    return MakeLeaf(name, ca, "/CN=localhost",
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n");
  }

  bool MakeClient(const std::string& name, const std::string& ca, const std::string& cn,
                  const std::string& san) {
    return MakeLeaf(name, ca, "/CN=" + cn,
                    absl::StrCat("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                 "extendedKeyUsage=clientAuth\n",
                                 san.empty() ? "" : absl::StrCat("subjectAltName=", san, "\n")));
  }

 private:
  bool Run(const std::vector<std::string>& argv) {
    Process p(Stdio::Log(dir_ / "openssl.log"));
    return p.Start(argv) && p.Wait(absl::Seconds(60)) == 0;
  }

  const fs::path dir_;
};

// What a client trusts and presents.
struct ClientTls {
  std::string ca;    // PEM; empty: a plaintext client
  std::string cert;  // PEM; empty: no client certificate
  std::string key;
};

// One ListQueues on a new channel (its own subchannel, so a new connection
// and handshake) to 127.0.0.1:port.
grpc::Status CallListQueues(int port, const ClientTls& tls) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls.ca.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls.ca;
    ssl.pem_cert_chain = tls.cert;
    ssl.pem_private_key = tls.key;
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = v1::QueueService::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), creds, args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(absl::ToInt64Milliseconds(kCallTimeout)));
  v1::ListQueuesRequest req;
  v1::ListQueuesResponse resp;
  return stub->ListQueues(&ctx, req, &resp);
}

// Calls until one returns OK, within kReloadTimeout; the last status.
grpc::Status CallUntilOk(int port, const ClientTls& tls) {
  const absl::Time deadline = absl::Now() + kReloadTimeout;
  grpc::Status s = CallListQueues(port, tls);
  while (!s.ok() && absl::Now() < deadline) {
    absl::SleepFor(kPoll);
    s = CallListQueues(port, tls);
  }
  return s;
}

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

class TlsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_dir_ = new TempDir("conveyor-tls-pki");
    pki_ = new Pki(pki_dir_->path());
    pki_ok_ = !pki_dir_->path().empty() && pki_->MakeCa("ca_a", "/CN=Conveyor test CA A") &&
              pki_->MakeServer("server_a", "ca_a") &&
              pki_->MakeClient("worker_1", "ca_a", "worker-1", "DNS:worker-1.conveyor.test") &&
              pki_->MakeClient("worker_2", "ca_a", "worker-2", "") &&
              pki_->MakeCa("ca_b", "/CN=Unrelated CA B") &&
              pki_->MakeClient("intruder", "ca_b", "worker-1", "") &&
              pki_->MakeCa("ca_c", "/CN=Conveyor test CA C") &&
              pki_->MakeServer("server_c", "ca_c");
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete pki_dir_;
    pki_ = nullptr;
    pki_dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(pki_ok_) << "openssl failed:\n" << pki_->log();
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    // The broker's own copies: the reload tests replace them.
    cert_ = dir_.path() / "server.crt";
    key_ = dir_.path() / "server.key";
    client_ca_ = dir_.path() / "client_ca.crt";
    ASSERT_TRUE(ReplaceAtomically(pki_->crt("server_a"), cert_));
    ASSERT_TRUE(ReplaceAtomically(pki_->key("server_a"), key_));
    ASSERT_TRUE(ReplaceAtomically(pki_->crt("ca_a"), client_ca_));
  }

  void TearDown() override {
    if (broker_ != nullptr) {
      broker_->Kill();
      if (HasFailure()) std::cerr << "--- conveyord log ---\n" << broker_->log() << "\n";
    }
  }

  std::vector<std::string> TlsArgs(bool mtls) const {
    std::vector<std::string> args = {"--tls-cert=" + cert_.string(), "--tls-key=" + key_.string(),
                                     "--tls-reload-interval=1s"};
    if (mtls) args.push_back("--tls-client-ca=" + client_ca_.string());
    return args;
  }

  // Starts the broker on 127.0.0.1:0 with `extra` flags; its port, or 0 (with
  // a test failure) if it did not start.
  int StartBroker(const std::vector<std::string>& extra) {
    const fs::path port_file = dir_.path() / "conveyord.port";
    broker_ = std::make_unique<Process>(Stdio::Log(dir_.path() / "conveyord.log"));
    std::vector<std::string> argv = e2e::LoopbackBrokerArgv(CONVEYORD_PATH, port_file);
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!broker_->Start(argv)) return 0;
    const int port = e2e::WaitForPortFile(port_file, *broker_, kStartTimeout);
    EXPECT_GT(port, 0) << "conveyord did not start:\n" << broker_->log();
    return port;
  }

  // Waits (bounded) until the broker's output holds `text`.
  bool WaitForLog(const std::string& text) {
    const absl::Time deadline = absl::Now() + kReloadTimeout;
    while (!absl::StrContains(broker_->log(), text)) {
      if (absl::Now() > deadline || !broker_->running()) return false;
      absl::SleepFor(kPoll);
    }
    return true;
  }

  // Runs conveyord with `extra` flags, expecting it to exit before serving;
  // its exit code, and its output in `log`.
  int RunBrokerExpectingExit(const std::vector<std::string>& extra, std::string* log) {
    static int runs = 0;
    const fs::path log_file = dir_.path() / absl::StrCat("bad", ++runs, ".log");
    Process p(Stdio::Log(log_file));
    std::vector<std::string> argv = {CONVEYORD_PATH, "--listen=127.0.0.1:0", "--metrics-addr="};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!p.Start(argv)) return -1;
    const int code = p.Wait(kStartTimeout);
    *log = p.log();
    return code;
  }

  ClientTls TrustingA() const { return {pki_->pem("ca_a"), "", ""}; }
  ClientTls TrustingC() const { return {pki_->pem("ca_c"), "", ""}; }
  ClientTls Worker1() const {
    return {pki_->pem("ca_a"), pki_->pem("worker_1"), pki_->key_pem("worker_1")};
  }
  ClientTls Intruder() const {
    return {pki_->pem("ca_a"), pki_->pem("intruder"), pki_->key_pem("intruder")};
  }

  static TempDir* pki_dir_;
  static Pki* pki_;
  static bool pki_ok_;

  TempDir dir_{"conveyor-tls-e2e"};
  fs::path cert_, key_, client_ca_;
  std::unique_ptr<Process> broker_;
};

TempDir* TlsE2eTest::pki_dir_ = nullptr;
Pki* TlsE2eTest::pki_ = nullptr;
bool TlsE2eTest::pki_ok_ = false;

TEST_F(TlsE2eTest, TlsWithTheRightCaSucceedsAndPlaintextOrAnotherCaFails) {
  const int port = StartBroker(TlsArgs(/*mtls=*/false));
  ASSERT_GT(port, 0);

  const grpc::Status ok = CallListQueues(port, TrustingA());
  EXPECT_TRUE(ok.ok()) << Describe(ok);
  // Without --tls-client-ca a client certificate is not asked for; one sent
  // anyway does no harm.
  const grpc::Status with_cert = CallListQueues(port, Worker1());
  EXPECT_TRUE(with_cert.ok()) << Describe(with_cert);

  const grpc::Status plaintext = CallListQueues(port, ClientTls{});
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(plaintext);
  const grpc::Status wrong_ca = CallListQueues(port, {pki_->pem("ca_b"), "", ""});
  EXPECT_EQ(wrong_ca.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(wrong_ca);
  EXPECT_TRUE(broker_->running());
}

TEST_F(TlsE2eTest, StartUpLogSaysTlsIsOnAndHoldsNoKeyMaterial) {
  ASSERT_GT(StartBroker(TlsArgs(/*mtls=*/true)), 0);
  const std::string log = broker_->log();
  EXPECT_TRUE(absl::StrContains(log, "TLS on, client certificates required (mTLS)")) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"cert_subject\":\"/CN=localhost\"")) << log;
  EXPECT_FALSE(absl::StrContains(log, "PRIVATE KEY")) << log;
  // No line of the key's base64 body appears either.
  std::istringstream key_lines(pki_->key_pem("server_a"));
  for (std::string line; std::getline(key_lines, line);) {
    if (line.size() > 16 && !absl::StartsWith(line, "-----")) {
      EXPECT_FALSE(absl::StrContains(log, line.substr(0, 16))) << "key material in the log";
    }
  }
}

TEST_F(TlsE2eTest, PlaintextBrokerLogsThatTlsIsOff) {
  const int port = StartBroker({});
  ASSERT_GT(port, 0);
  EXPECT_TRUE(absl::StrContains(broker_->log(), "TLS off")) << broker_->log();
  const grpc::Status plaintext = CallListQueues(port, ClientTls{});
  EXPECT_TRUE(plaintext.ok()) << Describe(plaintext);
}

TEST_F(TlsE2eTest, MtlsRequiresAClientCertificateFromTheClientCa) {
  const int port = StartBroker(TlsArgs(/*mtls=*/true));
  ASSERT_GT(port, 0);

  const grpc::Status ok = CallListQueues(port, Worker1());
  EXPECT_TRUE(ok.ok()) << Describe(ok);

  const grpc::Status no_cert = CallListQueues(port, TrustingA());
  EXPECT_EQ(no_cert.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(no_cert);
  // Same CN, signed by an unrelated CA.
  const grpc::Status intruder = CallListQueues(port, Intruder());
  EXPECT_EQ(intruder.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(intruder);
  const grpc::Status plaintext = CallListQueues(port, ClientTls{});
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(plaintext);
  EXPECT_TRUE(broker_->running());
}

TEST_F(TlsE2eTest, ReplacedServerCertificateIsServedWithoutARestart) {
  const int port = StartBroker(TlsArgs(/*mtls=*/false));
  ASSERT_GT(port, 0);
  const grpc::Status before = CallListQueues(port, TrustingA());
  ASSERT_TRUE(before.ok()) << Describe(before);
  const grpc::Status new_ca_before = CallListQueues(port, TrustingC());
  EXPECT_EQ(new_ca_before.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(new_ca_before);

  // A certificate from a new CA, each file renamed into place complete.
  ASSERT_TRUE(ReplaceAtomically(pki_->key("server_c"), key_));
  ASSERT_TRUE(ReplaceAtomically(pki_->crt("server_c"), cert_));

  const grpc::Status after = CallUntilOk(port, TrustingC());
  EXPECT_TRUE(after.ok()) << "the new certificate was not served within "
                          << absl::FormatDuration(kReloadTimeout) << ": " << Describe(after);
  const grpc::Status old_ca_after = CallListQueues(port, TrustingA());
  EXPECT_EQ(old_ca_after.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(old_ca_after);
  EXPECT_TRUE(broker_->running()) << "the broker restarted or died";
  EXPECT_TRUE(absl::StrContains(broker_->log(), "TLS files changed; new connections use them"))
      << broker_->log();
}

TEST_F(TlsE2eTest, ReplacedClientCaBundleIsUsedWithoutARestart) {
  const int port = StartBroker(TlsArgs(/*mtls=*/true));
  ASSERT_GT(port, 0);
  const grpc::Status before = CallListQueues(port, Worker1());
  ASSERT_TRUE(before.ok()) << Describe(before);

  // Trust CA B's clients instead of CA A's.
  ASSERT_TRUE(ReplaceAtomically(pki_->crt("ca_b"), client_ca_));

  const grpc::Status now_trusted = CallUntilOk(port, Intruder());
  EXPECT_TRUE(now_trusted.ok()) << Describe(now_trusted);
  const grpc::Status now_refused = CallListQueues(port, Worker1());
  EXPECT_EQ(now_refused.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(now_refused);
  EXPECT_TRUE(broker_->running());
}

// A file that cannot be read at a reload (gRPC logs it at every interval)
// leaves the last good certificate in use; once it is back, reloads resume.
TEST_F(TlsE2eTest, KeyMissingAtAReloadKeepsTheLastGoodCertificate) {
  const int port = StartBroker(TlsArgs(/*mtls=*/false));
  ASSERT_GT(port, 0);
  ASSERT_TRUE(CallListQueues(port, TrustingA()).ok());

  const fs::path aside = dir_.path() / "server.key.aside";
  fs::rename(key_, aside);
  // gRPC logs this once a reload found the file missing.
  ASSERT_TRUE(WaitForLog("All retry attempts failed")) << broker_->log();
  const grpc::Status missing = CallListQueues(port, TrustingA());
  EXPECT_TRUE(missing.ok()) << Describe(missing);
  EXPECT_TRUE(WaitForLog("--tls-key=" + key_.string() + ": No such file")) << broker_->log();

  // Reloads resume: the new pair is taken as soon as both files are there.
  ASSERT_TRUE(ReplaceAtomically(pki_->crt("server_c"), cert_));
  ASSERT_TRUE(ReplaceAtomically(pki_->key("server_c"), key_));
  const grpc::Status reloaded = CallUntilOk(port, TrustingC());
  EXPECT_TRUE(reloaded.ok()) << Describe(reloaded);
  EXPECT_TRUE(broker_->running());
}

// A key that does not match the certificate at a reload (as when the two
// files are replaced one after the other and a reload falls between) fails
// every new handshake until a good pair is back; the broker logs which file.
TEST_F(TlsE2eTest, MismatchedKeyAtAReloadFailsNewHandshakesUntilFixedAndIsLogged) {
  const int port = StartBroker(TlsArgs(/*mtls=*/false));
  ASSERT_GT(port, 0);
  ASSERT_TRUE(CallListQueues(port, TrustingA()).ok());

  ASSERT_TRUE(ReplaceAtomically(pki_->key("server_c"), key_));  // the certificate is still A's
  const absl::Time deadline = absl::Now() + kReloadTimeout;
  grpc::Status mismatched = CallListQueues(port, TrustingA());
  while (mismatched.ok() && absl::Now() < deadline) {
    absl::SleepFor(kPoll);
    mismatched = CallListQueues(port, TrustingA());
  }
  EXPECT_EQ(mismatched.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(mismatched);

  ASSERT_TRUE(ReplaceAtomically(pki_->crt("server_c"), cert_));
  const grpc::Status fixed = CallUntilOk(port, TrustingC());
  EXPECT_TRUE(fixed.ok()) << Describe(fixed);
  const std::string log = broker_->log();
  EXPECT_TRUE(absl::StrContains(log, "TLS files unusable")) << log;
  EXPECT_TRUE(absl::StrContains(log, "--tls-key=" + key_.string() + " does not match")) << log;
  EXPECT_TRUE(absl::StrContains(log, "TLS files changed; new connections use them")) << log;
  EXPECT_TRUE(broker_->running());
}

// The key and the certificate chain may share one file (--tls-cert and
// --tls-key name the same path): one rename then replaces both at once.
TEST_F(TlsE2eTest, KeyAndCertificateInOneFileRotateWithOneRename) {
  const fs::path pair = dir_.path() / "server.pem", next = dir_.path() / "next.pem";
  ASSERT_TRUE(WriteFile(next, pki_->key_pem("server_a") + pki_->pem("server_a")));
  ASSERT_TRUE(ReplaceAtomically(next, pair));
  const int port = StartBroker({"--tls-cert=" + pair.string(), "--tls-key=" + pair.string(),
                                "--tls-reload-interval=1s"});
  ASSERT_GT(port, 0);
  const grpc::Status before = CallListQueues(port, TrustingA());
  ASSERT_TRUE(before.ok()) << Describe(before);

  ASSERT_TRUE(WriteFile(next, pki_->key_pem("server_c") + pki_->pem("server_c")));
  ASSERT_TRUE(ReplaceAtomically(next, pair));
  const grpc::Status after = CallUntilOk(port, TrustingC());
  EXPECT_TRUE(after.ok()) << Describe(after);
  EXPECT_FALSE(absl::StrContains(broker_->log(), "TLS files unusable")) << broker_->log();
}

TEST_F(TlsE2eTest, BadTlsFlagsAndFilesStopTheBrokerBeforeItServes) {
  struct Case {
    std::vector<std::string> flags;
    int exit_code;
    std::string message;
  };
  const std::string cert = "--tls-cert=" + cert_.string(), key = "--tls-key=" + key_.string();
  const fs::path missing = dir_.path() / "missing.pem";
  const std::vector<Case> cases = {
      {{key}, 64, "--tls-key needs --tls-cert"},
      {{cert}, 64, "--tls-cert needs --tls-key"},
      {{"--tls-client-ca=" + client_ca_.string()}, 64, "--tls-client-ca needs --tls-cert"},
      {{cert, key, "--tls-reload-interval=500ms"}, 64, "--tls-reload-interval=500ms"},
      {{cert, key, "--tls-reload-interval=0s"}, 64, "--tls-reload-interval=0"},
      {{"--tls-cert=" + missing.string(), key}, 78, "--tls-cert=" + missing.string()},
      {{cert, "--tls-key=" + missing.string()}, 78, "--tls-key=" + missing.string()},
      {{cert, key, "--tls-client-ca=" + missing.string()}, 78,
       "--tls-client-ca=" + missing.string()},
      {{"--tls-cert=" + key_.string(), key}, 78, "no PEM certificate"},
      {{cert, "--tls-key=" + cert_.string()}, 78, "no PEM private key"},
      {{cert, "--tls-key=" + pki_->key("worker_1").string()}, 78, "does not match"},
      {{cert, key, "--tls-client-ca=" + key_.string()}, 78, "no PEM certificate"},
  };
  for (const Case& c : cases) {
    std::string log;
    EXPECT_EQ(RunBrokerExpectingExit(c.flags, &log), c.exit_code) << log;
    EXPECT_TRUE(absl::StrContains(log, c.message)) << "expected \"" << c.message << "\" in:\n"
                                                   << log;
    EXPECT_FALSE(absl::StrContains(log, "listening")) << log;
    EXPECT_FALSE(absl::StrContains(log, "PRIVATE KEY")) << log;
  }
}

// The auth engineer's contract: with mTLS, a call's auth context names the
// verified client certificate. Checked on an in-process server listening with
// the broker's own credentials (MakeServerCredentials), with a QueueService
// that records the context's properties.
class RecordingQueueService final : public v1::QueueService::CallbackService {
 public:
  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx,
                                       const v1::ListQueuesRequest*,
                                       v1::ListQueuesResponse*) override {
    std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
    {
      absl::MutexLock lock(&mu_);
      properties_.clear();
      peer_identity_property_.clear();
      if (auth != nullptr) {
        for (const grpc::AuthProperty& p : *auth) {
          properties_.emplace(std::string(p.first.data(), p.first.size()),
                              std::string(p.second.data(), p.second.size()));
        }
        peer_identity_property_ = auth->GetPeerIdentityPropertyName();
      }
    }
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::multimap<std::string, std::string> properties() {
    absl::MutexLock lock(&mu_);
    return properties_;
  }
  std::string peer_identity_property() {
    absl::MutexLock lock(&mu_);
    return peer_identity_property_;
  }

 private:
  absl::Mutex mu_;
  std::multimap<std::string, std::string> properties_ ABSL_GUARDED_BY(mu_);
  std::string peer_identity_property_ ABSL_GUARDED_BY(mu_);
};

std::vector<std::string> ValuesOf(const std::multimap<std::string, std::string>& m,
                                  const std::string& key) {
  std::vector<std::string> out;
  for (auto [it, end] = m.equal_range(key); it != end; ++it) out.push_back(it->second);
  return out;
}

TEST_F(TlsE2eTest, MtlsAuthContextCarriesTheClientCertificateNames) {
  ServerOptions options;
  options.tls_cert_file = cert_.string();
  options.tls_key_file = key_.string();
  options.tls_client_ca_file = client_ca_.string();
  options.tls_reload_interval = absl::Seconds(1);
  ASSERT_TRUE(ValidateTlsOptions(options).ok());

  RecordingQueueService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", MakeServerCredentials(options), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  const grpc::Status ok = CallListQueues(port, Worker1());
  ASSERT_TRUE(ok.ok()) << Describe(ok);
  const std::multimap<std::string, std::string> props = service.properties();
  std::string all;
  for (const auto& [k, v] : props) {
    absl::StrAppend(&all, k, "=",
                    absl::StartsWith(k, "x509_pem_cert") ? absl::StrCat("<PEM, ", v.size(), " bytes>")
                                                         : v,
                    "\n");
  }
  EXPECT_EQ(ValuesOf(props, "x509_common_name"), std::vector<std::string>{"worker-1"}) << all;
  EXPECT_EQ(ValuesOf(props, "x509_subject_alternative_name"),
            std::vector<std::string>{"worker-1.conveyor.test"})
      << all;
  EXPECT_EQ(service.peer_identity_property(), "x509_subject_alternative_name") << all;
  EXPECT_EQ(ValuesOf(props, "transport_security_type"), std::vector<std::string>{"tls"}) << all;
  EXPECT_EQ(ValuesOf(props, "security_level"),
            std::vector<std::string>{"TSI_PRIVACY_AND_INTEGRITY"})
      << all;
  EXPECT_EQ(ValuesOf(props, "x509_pem_cert").size(), 1u) << all;
  std::cout << "auth context properties:\n" << all;

  // A certificate without a SAN: the common name is the peer identity.
  const grpc::Status no_san =
      CallListQueues(port, {pki_->pem("ca_a"), pki_->pem("worker_2"), pki_->key_pem("worker_2")});
  ASSERT_TRUE(no_san.ok()) << Describe(no_san);
  EXPECT_EQ(ValuesOf(service.properties(), "x509_common_name"),
            std::vector<std::string>{"worker-2"});
  EXPECT_TRUE(ValuesOf(service.properties(), "x509_subject_alternative_name").empty());
  EXPECT_EQ(service.peer_identity_property(), "x509_common_name");

  // The in-process server verifies like the broker: a certificate from an
  // unrelated CA never reaches the service.
  const grpc::Status intruder = CallListQueues(port, Intruder());
  EXPECT_EQ(intruder.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(intruder);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace conveyor::server
