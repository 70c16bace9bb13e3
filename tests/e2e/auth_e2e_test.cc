// End-to-end: tokens with roles and safe defaults, through the real binaries.
//
// Each test starts its own `conveyord --auth-tokens` on 127.0.0.1:0 (port
// from --port-file), makes its tokens with the real `conveyor token create`,
// and drives the broker with the real `conveyor` CLI and `conveyor-worker`:
// each role does exactly what it should and nothing else (the CLI exits 77
// for UNAUTHENTICATED and PERMISSION_DENIED), tokens rotate by replacing the
// file, and a broker on a non-loopback address without TLS and auth refuses
// to start (exit 78) unless --insecure. The broker runs with GRPC_TRACE=all,
// and every test ends by checking that no token it made appears in the
// broker's log. Certificates for the TLS cases are made with `openssl` at
// test time.
//
// No fixed ports; every wait is a bounded poll.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/grpc_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"

#ifndef CONVEYORD_PATH
#error "CONVEYORD_PATH must name the conveyord binary"
#endif
#ifndef CONVEYOR_CLI_PATH
#error "CONVEYOR_CLI_PATH must name the conveyor binary"
#endif
#ifndef CONVEYOR_WORKER_PATH
#error "CONVEYOR_WORKER_PATH must name the conveyor-worker binary"
#endif

namespace conveyor::client {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using e2e::CommandResult;
using e2e::Process;
using e2e::WriteFile;

constexpr absl::Duration kCommandTimeout = absl::Seconds(60);
constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kStopTimeout = absl::Seconds(30);
// The broker notices a changed tokens file within a second; generous for a
// loaded 2-core machine.
constexpr absl::Duration kReloadTimeout = absl::Seconds(30);
constexpr int kExitNoPerm = 77;
constexpr int kExitConfig = 78;

// Writes a complete new file and renames it over `path` (what the docs
// advise for rotating tokens).
void ReplaceFile(const fs::path& path, absl::string_view data) {
  const fs::path tmp = path.string() + ".new";
  WriteFile(tmp, data);
  fs::rename(tmp, path);
}

// This suite's children: stdin from `in`, stdout and stderr to files only
// the test's user can read (they may hold a token), and none of the shell's
// CONVEYOR_* or GRPC_TRACE: the test decides about these.
e2e::ProcessOptions SuiteProcess(const fs::path& in, const fs::path& out, const fs::path& err,
                                 const std::vector<std::string>& extra_env = {}) {
  return {.stdio = e2e::Stdio::Files(in, out, err, 0600),
          .unset_env_prefixes = {"CONVEYOR_", "GRPC_TRACE="},
          .extra_env = extra_env};
}

class AuthE2eTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed"; }

  void TearDown() override {
    workers_.clear();
    if (broker_ != nullptr && broker_->unreaped()) {
      EXPECT_EQ(StopBroker(), 0) << "conveyord must drain and exit 0 on SIGTERM";
    }
    // The broker's whole log (GRPC_TRACE=all included) never holds a token.
    const std::string log = BrokerLog();
    for (const std::string& token : tokens_made_) {
      EXPECT_FALSE(absl::StrContains(log, token)) << "a token leaked into the broker's log";
      EXPECT_FALSE(absl::StrContains(log, token.substr(4))) << "a token leaked (unprefixed)";
    }
    if (HasFailure()) std::cerr << "--- conveyord log ---\n" << log << "\n";
  }

  // Runs any command; stdin from `stdin_data`.
  CommandResult Run(const std::vector<std::string>& argv, absl::string_view stdin_data = "",
                    const std::vector<std::string>& env = {}) {
    const fs::path in = dir_.path() / "cmd.in";
    WriteFile(in, stdin_data);
    Process p(SuiteProcess(in, dir_.path() / "cmd.out", dir_.path() / "cmd.err", env));
    if (!p.Start(argv)) return CommandResult();
    CommandResult r = p.Finish(kCommandTimeout);
    EXPECT_NE(r.code, -1) << absl::StrJoin(argv, " ") << " timed out";
    return r;
  }

  // `conveyor token create --role ROLES`: the token goes to a file of its
  // own (mode 0600), its line is returned.
  struct Token {
    std::string token;
    fs::path file;
    std::string line;
  };
  Token MakeToken(const std::string& roles) {
    CommandResult r = Run({CONVEYOR_CLI_PATH, "token", "create", "--role", roles});
    EXPECT_EQ(r.code, 0) << r;
    Token t;
    t.token = std::string(absl::StripAsciiWhitespace(r.out));
    t.line = std::string(absl::StripAsciiWhitespace(r.err));
    EXPECT_TRUE(absl::StartsWith(t.token, "cvy_")) << r;
    EXPECT_TRUE(absl::StartsWith(t.line, "sha256:")) << r;
    t.file = dir_.path() / absl::StrCat("token", tokens_made_.size());
    WriteFile(t.file, t.token + "\n");
    fs::permissions(t.file, fs::perms::owner_read | fs::perms::owner_write);
    tokens_made_.push_back(t.token);
    return t;
  }

  void WriteTokens(const std::vector<const Token*>& tokens, absl::string_view extra = "") {
    std::string text = "# tokens of this test\n";
    for (const Token* t : tokens) absl::StrAppend(&text, t->line, "\n");
    absl::StrAppend(&text, extra);
    ReplaceFile(tokens_file(), text);
  }

  fs::path tokens_file() const { return dir_.path() / "tokens"; }
  std::string BrokerLog() const { return e2e::ReadFileOrEmpty(dir_.path() / "broker.err"); }

  // Starts conveyord with `flags` after --port-file and --metrics-addr=;
  // returns its exit code if it exited during start-up, nullopt once it
  // wrote its port.
  std::optional<int> TryStartBroker(const std::vector<std::string>& flags) {
    const fs::path port_file = dir_.path() / "port";
    fs::remove(port_file);
    WriteFile(dir_.path() / "broker.in", "");
    broker_ = std::make_unique<Process>(SuiteProcess(
        dir_.path() / "broker.in", dir_.path() / "broker.out", dir_.path() / "broker.err",
        // gRPC's "all" tracer prints every request header: the broker must
        // drop it while auth is on.
        {"GRPC_TRACE=all"}));
    std::vector<std::string> argv = {CONVEYORD_PATH,
                                     absl::StrCat("--port-file=", port_file.string()),
                                     "--metrics-addr="};
    argv.insert(argv.end(), flags.begin(), flags.end());
    EXPECT_TRUE(broker_->Start(argv));
    const int port = e2e::WaitForPortFile(port_file, *broker_, kStartTimeout);
    if (port > 0) {
      port_ = port;
      addr_ = e2e::LoopbackAddress(port);
      return std::nullopt;
    }
    if (broker_->Poll()) return broker_->Wait(absl::ZeroDuration());
    ADD_FAILURE() << "conveyord wrote no port within " << kStartTimeout;
    return -1;
  }

  void StartBroker(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> flags = {"--listen=127.0.0.1:0",
                                      absl::StrCat("--auth-tokens=", tokens_file().string())};
    flags.insert(flags.end(), extra.begin(), extra.end());
    std::optional<int> exited = TryStartBroker(flags);
    ASSERT_FALSE(exited.has_value()) << "conveyord exited " << *exited << ":\n" << BrokerLog();
  }

  int StopBroker() {
    broker_->Signal(SIGTERM);
    return broker_->WaitOrKill(kStopTimeout);
  }

  // `conveyor --addr=<broker> [--token-file=T] ARGS`.
  CommandResult Cli(const Token* token, std::vector<std::string> args,
                    absl::string_view stdin_data = "") {
    std::vector<std::string> argv = {CONVEYOR_CLI_PATH, absl::StrCat("--addr=", addr_)};
    if (token != nullptr) argv.push_back(absl::StrCat("--token-file=", token->file.string()));
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv, stdin_data);
  }

  // Submits with `token`; the new task's id.
  std::string Submit(const Token& token, const std::string& queue, const std::string& type,
                     const std::string& payload) {
    CommandResult r = Cli(&token, {"submit", "--queue", queue, "--type", type, payload});
    EXPECT_EQ(r.code, 0) << r;
    return std::string(absl::StripAsciiWhitespace(r.out));
  }

  // Polls `check` until it holds (bounded).
  static bool Eventually(const std::function<bool()>& check, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (check()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return check();
  }

  // A worker serving `queue` with `flags`; its log is `<name>.log`.
  Process* StartWorker(const std::string& name, const std::string& queue,
                       std::vector<std::string> flags) {
    std::vector<std::string> argv = {CONVEYOR_WORKER_PATH, absl::StrCat("--broker=", addr_),
                                     absl::StrCat("--queue=", queue), "--metrics-addr=",
                                     absl::StrCat("--worker-id=", name), "--lease-wait=1s"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    WriteFile(dir_.path() / "worker.in", "");
    workers_.push_back(std::make_unique<Process>(SuiteProcess(
        dir_.path() / "worker.in", dir_.path() / (name + ".out"), dir_.path() / (name + ".log"))));
    Process* p = workers_.back().get();
    EXPECT_TRUE(p->Start(argv));
    return p;
  }

  std::string WorkerLog(const std::string& name) const {
    return e2e::ReadFileOrEmpty(dir_.path() / (name + ".log"));
  }

  // A client-library connection with `token`.
  std::unique_ptr<Client> LibraryClient(const Token* token) {
    ClientOptions options;
    options.address = addr_;
    options.timeout = absl::Seconds(10);
    if (token != nullptr) options.token = token->token;
    return std::make_unique<Client>(options);
  }

  // Certificates made with openssl in the test's directory: a CA (ca.pem),
  // a server certificate for localhost and 127.0.0.1 (server.pem, .key), a
  // client certificate with common name `client_cn` (client.pem, .key).
  bool MakeCertificates(const std::string& client_cn) {
    const std::string d = dir_.path().string();
    WriteFile(dir_.path() / "server.ext",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    WriteFile(dir_.path() / "client.ext", "extendedKeyUsage=clientAuth\n");
    const std::vector<std::vector<std::string>> steps = {
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "2", "-subj",
         "/CN=conveyor-test-ca"},
        {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", d + "/server.key", "-out", d + "/server.csr", "-subj", "/CN=localhost"},
        {"openssl", "x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.pem", "-CAkey",
         d + "/ca.key", "-CAcreateserial", "-out", d + "/server.pem", "-days", "2", "-extfile",
         d + "/server.ext"},
        {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", d + "/client.key", "-out", d + "/client.csr", "-subj", "/CN=" + client_cn},
        {"openssl", "x509", "-req", "-in", d + "/client.csr", "-CA", d + "/ca.pem", "-CAkey",
         d + "/ca.key", "-CAcreateserial", "-out", d + "/client.pem", "-days", "2", "-extfile",
         d + "/client.ext"},
    };
    for (const std::vector<std::string>& step : steps) {
      CommandResult r = Run(step);
      if (r.code != 0) {
        ADD_FAILURE() << absl::StrJoin(step, " ") << "\n" << r;
        return false;
      }
    }
    return true;
  }

  e2e::TempDir dir_{"conveyor-auth-e2e"};
  std::unique_ptr<Process> broker_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<std::string> tokens_made_;
  int port_ = 0;
  std::string addr_;
};

void ExpectDenied(const CommandResult& r, absl::string_view code, absl::string_view detail) {
  EXPECT_EQ(r.code, kExitNoPerm) << r;
  EXPECT_THAT(r.err, HasSubstr(code)) << r;
  EXPECT_THAT(r.err, HasSubstr(detail)) << r;
}

TEST_F(AuthE2eTest, NoTokenOrAWrongTokenIsUnauthenticatedAndHealthStaysOpen) {
  const Token submit = MakeToken("submit");
  const Token stranger = MakeToken("submit");  // never added to the file
  WriteTokens({&submit});
  StartBroker();

  ExpectDenied(Cli(nullptr, {"submit", "--queue", "q", "--type", "t", "x"}), "UNAUTHENTICATED",
               "missing or unknown bearer token");
  ExpectDenied(Cli(&stranger, {"submit", "--queue", "q", "--type", "t", "x"}), "UNAUTHENTICATED",
               "missing or unknown bearer token");
  ExpectDenied(Cli(nullptr, {"queue", "list"}), "UNAUTHENTICATED", "bearer token");
  ExpectDenied(Cli(&stranger, {"queue", "create", "q"}), "UNAUTHENTICATED", "bearer token");

  // Probes need no token.
  CommandResult health = Cli(nullptr, {"health"});
  EXPECT_EQ(health.code, 0) << health;
  EXPECT_EQ(health.out, "SERVING\n");
}

TEST_F(AuthE2eTest, SubmitRoleSubmitsReadsAndCancelsButCannotLeaseOrAdminister) {
  const Token submit = MakeToken("submit");
  WriteTokens({&submit});
  StartBroker();

  const std::string id = Submit(submit, "jobs", "upper", "hello");
  ASSERT_EQ(id.size(), 16u);
  CommandResult get = Cli(&submit, {"get", id});
  EXPECT_EQ(get.code, 0) << get;
  CommandResult list = Cli(&submit, {"list", "--queue", "jobs"});
  EXPECT_EQ(list.code, 0) << list;
  EXPECT_THAT(list.out, HasSubstr(id));
  // Queue settings and counts are open to every role.
  CommandResult queues = Cli(&submit, {"queue", "list"});
  EXPECT_EQ(queues.code, 0) << queues;
  EXPECT_EQ(Cli(&submit, {"queue", "get", "jobs"}).code, 0);

  // Leasing needs the work role: the real worker is refused and says so...
  StartWorker("wrong-role", "jobs", {"--exec=upper=tr a-z A-Z",
                                     absl::StrCat("--token-file=", submit.file.string())});
  EXPECT_TRUE(Eventually(
      [&] { return absl::StrContains(WorkerLog("wrong-role"), "PERMISSION_DENIED"); },
      kCommandTimeout))
      << WorkerLog("wrong-role");
  EXPECT_THAT(WorkerLog("wrong-role"), HasSubstr("needs the work role"));
  // ...and so is the library.
  v1::LeaseRequest lease;
  lease.set_worker_id("library");
  lease.add_queues("jobs");
  lease.set_max_tasks(1);
  absl::StatusOr<v1::LeaseResponse> leased = LibraryClient(&submit)->Lease(lease);
  EXPECT_EQ(leased.status().code(), absl::StatusCode::kPermissionDenied) << leased.status();
  // The task was never leased.
  CommandResult still = Cli(&submit, {"get", id});
  EXPECT_THAT(still.out, HasSubstr("READY")) << still;

  // Administration needs the admin role.
  ExpectDenied(Cli(&submit, {"queue", "create", "other"}), "PERMISSION_DENIED",
               "needs the admin role");
  ExpectDenied(Cli(&submit, {"queue", "pause", "jobs"}), "PERMISSION_DENIED",
               "needs the admin role");
  ExpectDenied(Cli(&submit, {"queue", "purge", "jobs", "--yes"}), "PERMISSION_DENIED",
               "needs the admin role");
  ExpectDenied(Cli(&submit, {"dead", "list", "jobs"}), "PERMISSION_DENIED", "needs the admin role");

  // Cancel, then watch the ended task: both TaskService calls.
  CommandResult cancel = Cli(&submit, {"cancel", id});
  EXPECT_EQ(cancel.code, 0) << cancel;
  CommandResult watch = Cli(&submit, {"watch", id});
  EXPECT_EQ(watch.code, 1) << watch;  // ended CANCELED, not denied
  EXPECT_THAT(watch.err, HasSubstr("CANCELED")) << watch;
}

TEST_F(AuthE2eTest, WorkRoleRunsTasksThroughTheRealWorkerAndNothingElse) {
  const Token submit = MakeToken("submit");
  const Token work = MakeToken("work");
  WriteTokens({&submit, &work});
  StartBroker();

  StartWorker("worker", "jobs", {"--exec=upper=tr a-z A-Z",
                                 absl::StrCat("--token-file=", work.file.string())});
  CommandResult waited =
      Cli(&submit, {"submit", "--queue", "jobs", "--type", "upper", "--wait", "hello"});
  EXPECT_EQ(waited.code, 0) << waited;
  EXPECT_EQ(waited.out, "HELLO") << waited;
  const std::string id = Submit(submit, "jobs", "upper", "again");
  EXPECT_TRUE(Eventually(
      [&] { return absl::StrContains(Cli(&submit, {"get", id}).out, "SUCCEEDED"); },
      kCommandTimeout));

  ExpectDenied(Cli(&work, {"submit", "--queue", "jobs", "--type", "upper", "x"}),
               "PERMISSION_DENIED", "needs the submit role");
  ExpectDenied(Cli(&work, {"get", id}), "PERMISSION_DENIED", "needs the submit role");
  ExpectDenied(Cli(&work, {"cancel", id}), "PERMISSION_DENIED", "needs the submit role");
  ExpectDenied(Cli(&work, {"queue", "create", "x"}), "PERMISSION_DENIED", "needs the admin role");
  EXPECT_EQ(Cli(&work, {"queue", "list"}).code, 0);

  // The worker drains and exits 0 (its Release and Lease calls were allowed).
  workers_.back()->Signal(SIGTERM);
  EXPECT_EQ(workers_.back()->Wait(kStopTimeout), 0) << WorkerLog("worker");
  EXPECT_FALSE(absl::StrContains(WorkerLog("worker"), "PERMISSION_DENIED")) << WorkerLog("worker");
}

TEST_F(AuthE2eTest, AdminRoleManagesQueuesAndDeadLettersButCannotSubmitOrRead) {
  const Token admin = MakeToken("admin");
  WriteTokens({&admin});
  StartBroker();

  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"queue", "create", "jobs", "--capacity", "10"},
           {"queue", "update", "jobs", "--max-attempts", "5"},
           {"queue", "pause", "jobs"},
           {"queue", "resume", "jobs"},
           {"queue", "get", "jobs"},
           {"queue", "list"},
           {"queue", "purge", "jobs", "--yes"},
           {"dead", "list", "jobs"},
           {"dead", "requeue", "jobs"},
           {"dead", "purge", "jobs", "--yes"},
       }) {
    CommandResult r = Cli(&admin, args);
    EXPECT_EQ(r.code, 0) << absl::StrJoin(args, " ") << "\n" << r;
  }
  ExpectDenied(Cli(&admin, {"submit", "--queue", "jobs", "--type", "t", "x"}), "PERMISSION_DENIED",
               "needs the submit role");
  ExpectDenied(Cli(&admin, {"list", "--queue", "jobs"}), "PERMISSION_DENIED",
               "needs the submit role");
}

TEST_F(AuthE2eTest, TokensRotateByReplacingTheFileAndABadFileKeepsTheOldOnes) {
  const Token old_token = MakeToken("submit");
  const Token new_token = MakeToken("submit");
  WriteTokens({&old_token});
  StartBroker();
  // Any submit-role call will do.
  const std::vector<std::string> kProbe = {"submit", "--queue", "q", "--type", "t", "x"};
  EXPECT_EQ(Cli(&old_token, kProbe).code, 0);
  ExpectDenied(Cli(&new_token, kProbe), "UNAUTHENTICATED", "bearer token");

  // Rotate: the new token in, the old one out; no restart.
  WriteTokens({&new_token});
  EXPECT_TRUE(Eventually([&] { return Cli(&new_token, kProbe).code == 0; },
                         kReloadTimeout))
      << BrokerLog();
  ExpectDenied(Cli(&old_token, kProbe), "UNAUTHENTICATED", "bearer token");

  // A malformed replacement is refused (logged, naming the line) and the
  // current tokens stay.
  const Token third = MakeToken("submit");
  WriteTokens({&third}, "sha256:not-hex submit\n");
  EXPECT_TRUE(Eventually(
      [&] { return absl::StrContains(BrokerLog(), "auth tokens file rejected"); },
      kReloadTimeout));
  EXPECT_THAT(BrokerLog(), HasSubstr(absl::StrCat(tokens_file().string(), ":3:")));
  EXPECT_EQ(Cli(&new_token, kProbe).code, 0);
  ExpectDenied(Cli(&third, kProbe), "UNAUTHENTICATED", "bearer token");

  // SIGHUP re-reads at once and does not stop the broker.
  WriteTokens({&third});
  broker_->Signal(SIGHUP);
  EXPECT_TRUE(Eventually([&] { return Cli(&third, kProbe).code == 0; },
                         kReloadTimeout));
  EXPECT_TRUE(broker_->running());
  EXPECT_THAT(BrokerLog(), HasSubstr("SIGHUP: re-reading the auth tokens file"));
}

TEST_F(AuthE2eTest, MalformedTokensFileStopsStartWithExit78NamingFileAndLine) {
  const Token submit = MakeToken("submit");
  // A raw token pasted by mistake: refused, and never echoed.
  WriteTokens({&submit}, absl::StrCat(submit.token, " work\n"));
  std::optional<int> exited = TryStartBroker(
      {"--listen=127.0.0.1:0", absl::StrCat("--auth-tokens=", tokens_file().string())});
  ASSERT_TRUE(exited.has_value()) << "conveyord started with a malformed tokens file";
  EXPECT_EQ(*exited, kExitConfig);
  EXPECT_THAT(BrokerLog(), HasSubstr(absl::StrCat(tokens_file().string(), ":3:")));
  EXPECT_THAT(BrokerLog(), HasSubstr("tokens are stored hashed"));

  std::optional<int> missing = TryStartBroker(
      {"--listen=127.0.0.1:0", absl::StrCat("--auth-tokens=", (dir_.path() / "none").string())});
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(*missing, kExitConfig);
}

TEST_F(AuthE2eTest, TokenHashMatchesTheLineCreateGave) {
  const Token t = MakeToken("work,admin");
  CommandResult hash = Run(
      {CONVEYOR_CLI_PATH, "token", "hash", "--role", "work", "--role", "admin"}, t.token + "\n");
  EXPECT_EQ(hash.code, 0) << hash;
  // create's line carries a "# created ..." comment; the rest is the same.
  EXPECT_TRUE(absl::StartsWith(t.line, std::string(absl::StripAsciiWhitespace(hash.out))))
      << t.line << "\n" << hash;
  CommandResult bare = Run({CONVEYOR_CLI_PATH, "token", "hash"}, t.token);
  EXPECT_EQ(bare.out, absl::StrCat(t.line.substr(0, 71), "\n")) << bare;
}

// ─── safe defaults ───

TEST_F(AuthE2eTest, NonLoopbackListenWithoutTlsAndAuthIsRefused) {
  std::optional<int> exited = TryStartBroker({"--listen=0.0.0.0:0"});
  ASSERT_TRUE(exited.has_value()) << "conveyord served 0.0.0.0 without TLS and auth";
  EXPECT_EQ(*exited, kExitConfig);
  EXPECT_THAT(BrokerLog(), HasSubstr("refusing to serve the API on 0.0.0.0:0"));
  EXPECT_THAT(BrokerLog(), HasSubstr("TLS (--tls-cert and --tls-key) and auth (--auth-tokens)"));
  EXPECT_THAT(BrokerLog(), HasSubstr("--insecure"));

  // Auth alone is not enough.
  const Token admin = MakeToken("admin");
  WriteTokens({&admin});
  exited = TryStartBroker(
      {"--listen=[::]:0", absl::StrCat("--auth-tokens=", tokens_file().string())});
  ASSERT_TRUE(exited.has_value());
  EXPECT_EQ(*exited, kExitConfig);
  EXPECT_THAT(BrokerLog(), HasSubstr("without TLS (--tls-cert and --tls-key):"));
}

TEST_F(AuthE2eTest, InsecureServesNonLoopbackWithAWarning) {
  std::optional<int> exited = TryStartBroker({"--listen=0.0.0.0:0", "--insecure"});
  ASSERT_FALSE(exited.has_value()) << "conveyord exited " << *exited << "\n" << BrokerLog();
  EXPECT_THAT(BrokerLog(), HasSubstr("\"level\":\"warning\",\"msg\":\"--insecure: serving the "
                                     "API on a non-loopback address without TLS"));
  CommandResult health = Cli(nullptr, {"health"});
  EXPECT_EQ(health.code, 0) << health;
  // No auth: every call is allowed, as without --auth-tokens on loopback.
  EXPECT_EQ(Cli(nullptr, {"queue", "list"}).code, 0);
}

// scripts/setup installs openssl: its absence is a broken setup, not a skip.
bool HaveOpenssl() { return system("command -v openssl >/dev/null 2>&1") == 0; }

TEST_F(AuthE2eTest, NonLoopbackWithTlsAndAuthStartsAndServesTokensOverTls) {
  ASSERT_TRUE(HaveOpenssl()) << "openssl is not installed (scripts/setup installs it)";
  ASSERT_TRUE(MakeCertificates("unused"));
  const Token submit = MakeToken("submit");
  WriteTokens({&submit});
  const std::string d = dir_.path().string();
  std::optional<int> exited = TryStartBroker(
      {"--listen=0.0.0.0:0", absl::StrCat("--auth-tokens=", tokens_file().string()),
       "--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.key"});
  ASSERT_FALSE(exited.has_value()) << "conveyord exited " << *exited << "\n" << BrokerLog();
  EXPECT_FALSE(absl::StrContains(BrokerLog(), "--insecure"));

  CommandResult ok =
      Cli(&submit, {"--tls-ca", d + "/ca.pem", "submit", "--queue", "q", "--type", "t", "x"});
  EXPECT_EQ(ok.code, 0) << ok;
  ExpectDenied(Cli(nullptr, {"--tls-ca", d + "/ca.pem", "list", "--queue", "q"}),
               "UNAUTHENTICATED", "bearer token");
}

TEST_F(AuthE2eTest, ClientCertificateMapsToARoleWithoutAToken) {
  ASSERT_TRUE(HaveOpenssl()) << "openssl is not installed (scripts/setup installs it)";
  ASSERT_TRUE(MakeCertificates("worker-7"));
  const Token submit = MakeToken("submit");
  WriteTokens({&submit}, "cert:worker-7 work # the fleet's client certificate\n");
  const std::string d = dir_.path().string();
  StartBroker({"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.key",
               "--tls-client-ca=" + d + "/ca.pem"});
  const std::vector<std::string> mtls = {"--tls-ca=" + d + "/ca.pem",
                                         "--tls-cert=" + d + "/client.pem",
                                         "--tls-key=" + d + "/client.key"};

  // The worker presents only its certificate, and runs tasks.
  std::vector<std::string> worker_flags = mtls;
  worker_flags.push_back("--exec=upper=tr a-z A-Z");
  StartWorker("cert-worker", "jobs", worker_flags);
  std::vector<std::string> submit_args = mtls;
  for (const char* a : {"submit", "--queue", "jobs", "--type", "upper", "--wait", "mtls"}) {
    submit_args.push_back(a);
  }
  CommandResult waited = Cli(&submit, submit_args);
  EXPECT_EQ(waited.code, 0) << waited << WorkerLog("cert-worker");
  EXPECT_EQ(waited.out, "MTLS") << waited;

  // The certificate alone gives only its role.
  std::vector<std::string> get_args = mtls;
  get_args.insert(get_args.end(), {"list", "--queue", "jobs"});
  ExpectDenied(Cli(nullptr, get_args), "PERMISSION_DENIED", "needs the submit role");
}

}  // namespace
}  // namespace conveyor::client
