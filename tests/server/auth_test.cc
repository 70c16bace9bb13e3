// Unit tests of tokens and roles (common/token.h, server/auth.h) and of the
// safe-defaults rule for the listen address (server/exposure.h). The tokens
// file lives in a temporary directory; nothing sleeps: reloads are called
// directly, as the watcher thread would.
#include "server/auth.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "conveyor/v1/conveyor.pb.h"
#include "google/protobuf/descriptor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/exposure.h"

namespace conveyor::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kTask[] = "conveyor.v1.TaskService";
constexpr char kWorker[] = "conveyor.v1.WorkerService";
constexpr char kQueue[] = "conveyor.v1.QueueService";
constexpr char kSchedule[] = "conveyor.v1.ScheduleService";

// ─── tokens and roles (common/token.h) ───

TEST(TokenTest, HashIsSha256OfTheTokenBytes) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(TokenHashField("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(TokenHashField(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(TokenTest, NewTokensArePrefixedBase64urlOf32RandomBytesAndDiffer) {
  absl::StatusOr<std::string> a = NewToken();
  absl::StatusOr<std::string> b = NewToken();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(*a, *b);
  EXPECT_TRUE(absl::StartsWith(*a, kTokenPrefix)) << *a;
  EXPECT_EQ(a->size(), 4u + 43u) << *a;  // 32 bytes -> 43 base64url characters, no padding
  for (char c : a->substr(4)) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << *a;
  }
}

TEST(TokenTest, FileLineHoldsHashRolesAndOneLineComment) {
  EXPECT_EQ(TokenFileLine("abc", {Role::kWork, Role::kSubmit}, "fleet a\nsecond line"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
            "submit,work # fleet a second line");
  EXPECT_EQ(TokenFileLine("abc", {Role::kAdmin}, ""),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad admin");
}

TEST(TokenTest, RolesParseFromCommaListsAndRejectUnknownNames) {
  absl::StatusOr<RoleSet> roles = ParseRoles("admin, work");
  ASSERT_TRUE(roles.ok()) << roles.status();
  EXPECT_TRUE(roles->Has(Role::kAdmin));
  EXPECT_TRUE(roles->Has(Role::kWork));
  EXPECT_FALSE(roles->Has(Role::kSubmit));
  EXPECT_EQ(roles->ToString(), "work,admin");
  EXPECT_THAT(ParseRoles("submit,root").status().message(), HasSubstr("unknown role \"root\""));
  EXPECT_FALSE(ParseRoles("").ok());
  EXPECT_FALSE(ParseRoles("submit,").ok());
}

// ─── the tokens file ───

const std::string kSubmitToken = "cvy_submit-token";
const std::string kWorkToken = "cvy_work-token";
const std::string kAdminToken = "cvy_admin-token";
const std::string kBothToken = "cvy_submit-and-work";

std::string StandardFile() {
  return absl::StrCat("# Conveyor tokens\n\n",                               //
                      TokenFileLine(kSubmitToken, {Role::kSubmit}, "web app"), "\n",
                      TokenFileLine(kWorkToken, {Role::kWork}, ""), "\n",  //
                      "  ", TokenFileLine(kAdminToken, {Role::kAdmin}, "ops"), "  \r\n",
                      TokenFileLine(kBothToken, {Role::kSubmit, Role::kWork}, ""), "\n",
                      "cert:worker.example.com work\n",
                      "cert:CN With Spaces admin,submit # a common name\n");
}

TEST(TokenFileTest, ParsesTokensCertificatesCommentsAndBlankLines) {
  absl::StatusOr<TokenTable> table = ParseTokenFile(StandardFile(), "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->tokens.size(), 4u);
  EXPECT_EQ(table->tokens[0].digest, HashToken(kSubmitToken));
  EXPECT_EQ(table->tokens[0].roles, RoleSet({Role::kSubmit}));
  EXPECT_EQ(table->tokens[2].digest, HashToken(kAdminToken));
  EXPECT_EQ(table->tokens[3].roles, RoleSet({Role::kSubmit, Role::kWork}));
  ASSERT_EQ(table->certs.size(), 2u);
  EXPECT_EQ(table->certs.at("worker.example.com"), RoleSet({Role::kWork}));
  EXPECT_EQ(table->certs.at("CN With Spaces"), RoleSet({Role::kAdmin, Role::kSubmit}));
}

TEST(TokenFileTest, UpperCaseHexIsAccepted) {
  std::string line = TokenFileLine(kSubmitToken, {Role::kSubmit}, "");
  for (size_t i = 7; i < 71; ++i) line[i] = static_cast<char>(std::toupper(line[i]));
  absl::StatusOr<TokenTable> table = ParseTokenFile(line, "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->tokens[0].digest, HashToken(kSubmitToken));
}

TEST(TokenFileTest, EmptyFileIsAnEmptyTable) {
  absl::StatusOr<TokenTable> table = ParseTokenFile("# nobody yet\n", "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_TRUE(table->tokens.empty());
  EXPECT_TRUE(table->certs.empty());
}

struct BadLine {
  std::string text;
  std::string expected;  // in the message
};

TEST(TokenFileTest, MalformedLinesNameTheFileAndLine) {
  const std::string good = TokenFileLine(kSubmitToken, {Role::kSubmit}, "");
  const std::string digest = good.substr(0, 71);  // sha256:<64 hex>
  const BadLine cases[] = {
      {"cvy_raw-token-pasted work", "stored hashed"},
      {"sha256:abcd work", "not 64 hex digits"},
      {absl::StrCat(digest.substr(0, 70), "g work"), "not 64 hex digits"},
      {digest, "no roles"},
      {absl::StrCat(digest, " root"), "unknown role \"root\""},
      {absl::StrCat(digest, " submit, work"), "no spaces inside the role list"},
      {"cert: work", "needs an identity"},
      {absl::StrCat(good, "\n", digest, " work"), "the same token as line 2"},
      {"cert:a work\ncert:a admin", "the same certificate identity as line 2"},
  };
  for (const BadLine& c : cases) {
    const std::string text = absl::StrCat("# header\n", c.text, "\n");
    absl::StatusOr<TokenTable> table = ParseTokenFile(text, "/etc/conveyor/tokens");
    ASSERT_FALSE(table.ok()) << c.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(table.status().message(), HasSubstr(c.expected)) << c.text;
    const int line = absl::StrContains(c.text, "\n") ? 3 : 2;
    EXPECT_THAT(table.status().message(), HasSubstr(absl::StrCat("/etc/conveyor/tokens:", line, ":")))
        << c.text;
  }
}

TEST(TokenFileTest, ARawTokenPastedByMistakeIsNeverEchoed) {
  absl::StatusOr<TokenTable> table = ParseTokenFile("cvy_SECRETSECRET work\n", "tokens");
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.status().message(), Not(HasSubstr("SECRETSECRET")));
}

// ─── the role table ───

TEST(RpcRulesTest, EveryMethodOfTheFourServicesHasARule) {
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  // Makes sure the generated file is linked in and registered.
  (void)conveyor::v1::SubmitRequest::descriptor();
  std::set<std::string> in_proto;
  for (const char* name : {kTask, kWorker, kQueue, kSchedule}) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string method = service->method(i)->name();
      in_proto.insert(absl::StrCat(name, "/", method));
      EXPECT_NE(FindRpcRule(name, method), nullptr)
          << name << "/" << method << " has no role in server/auth.cc: add it (and to "
          << "docs/security.md)";
    }
  }
  for (const RpcRule& rule : RpcRules()) {
    EXPECT_TRUE(in_proto.contains(absl::StrCat(rule.service, "/", rule.method)))
        << rule.service << "/" << rule.method << " is not in the proto";
  }
}

TEST(RpcRulesTest, EachServiceBelongsToOneRoleAndQueueReadsToAnyCaller) {
  for (const RpcRule& rule : RpcRules()) {
    const std::string rpc = absl::StrCat(rule.service, "/", rule.method);
    if (rule.service == std::string(kTask) || rule.service == std::string(kSchedule)) {
      // A schedule submits on its owner's behalf.
      EXPECT_EQ(rule.role, Role::kSubmit) << rpc;
    } else if (rule.service == std::string(kWorker)) {
      EXPECT_EQ(rule.role, Role::kWork) << rpc;
    } else if (rule.method == std::string("GetQueue") ||
               rule.method == std::string("ListQueues")) {
      EXPECT_EQ(rule.role, std::nullopt) << rpc;
    } else {
      EXPECT_EQ(rule.role, Role::kAdmin) << rpc;
    }
  }
}

// ─── Authorizer ───

class AuthorizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string templ =
        absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/conveyor-auth-XXXXXX");
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    path_ = dir_ / "tokens";
    Replace(StandardFile());
    absl::StatusOr<std::shared_ptr<Authorizer>> auth = Authorizer::Load(path_.string());
    ASSERT_TRUE(auth.ok()) << auth.status();
    auth_ = *auth;
  }
  void TearDown() override {
    auth_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Writes a complete new file and renames it over the old one, as the docs
  // advise.
  void Replace(const std::string& text) {
    const fs::path tmp = dir_ / "tokens.new";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
    }
    fs::rename(tmp, path_);
  }

  static CallerCredentials Bearer(const std::string& token) {
    static std::set<std::string>* values = new std::set<std::string>();
    const std::string& value = *values->insert(absl::StrCat("Bearer ", token)).first;
    CallerCredentials c;
    c.authorization.push_back(value);
    return c;
  }

  absl::Status Call(const CallerCredentials& c, const char* service, const char* method) {
    return auth_->Check(c, service, method);
  }

  fs::path dir_;
  fs::path path_;
  std::shared_ptr<Authorizer> auth_;
};

TEST_F(AuthorizerTest, NoTokenIsUnauthenticated) {
  absl::Status s = Call(CallerCredentials{}, kTask, "Submit");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("missing or unknown bearer token"));
  EXPECT_THAT(s.message(), HasSubstr("conveyor.v1.TaskService/Submit"));
}

TEST_F(AuthorizerTest, UnknownTokenIsUnauthenticatedAndNotEchoed) {
  absl::Status s = Call(Bearer("cvy_guess"), kTask, "Submit");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("missing or unknown bearer token"));
  EXPECT_THAT(s.message(), Not(HasSubstr("cvy_guess")));
}

TEST_F(AuthorizerTest, MalformedOrRepeatedAuthorizationHeadersAreUnauthenticated) {
  CallerCredentials basic;
  basic.authorization.push_back("Basic dXNlcjpwYXNz");
  EXPECT_EQ(Call(basic, kTask, "Submit").code(), absl::StatusCode::kUnauthenticated);
  CallerCredentials empty;
  empty.authorization.push_back("Bearer ");
  EXPECT_EQ(Call(empty, kTask, "Submit").code(), absl::StatusCode::kUnauthenticated);
  CallerCredentials twice = Bearer(kSubmitToken);
  twice.authorization.push_back(twice.authorization.front());
  EXPECT_EQ(Call(twice, kTask, "Submit").code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthorizerTest, SchemeIsCaseInsensitive) {
  const std::string value = absl::StrCat("bearer ", kSubmitToken);
  CallerCredentials c;
  c.authorization.push_back(value);
  EXPECT_TRUE(Call(c, kTask, "Submit").ok());
}

TEST_F(AuthorizerTest, SubmitRoleCallsTaskServiceOnly) {
  const CallerCredentials c = Bearer(kSubmitToken);
  for (const char* m : {"Submit", "SubmitBatch", "SubmitStream", "GetTask", "WatchTask",
                        "CancelTask", "ListTasks"}) {
    EXPECT_TRUE(Call(c, kTask, m).ok()) << m;
  }
  absl::Status lease = Call(c, kWorker, "Lease");
  EXPECT_EQ(lease.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(lease.message(), HasSubstr("conveyor.v1.WorkerService/Lease needs the work role"));
  EXPECT_THAT(lease.message(), HasSubstr("the caller has submit"));
  absl::Status create = Call(c, kQueue, "CreateQueue");
  EXPECT_EQ(create.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(create.message(), HasSubstr("needs the admin role"));
  EXPECT_TRUE(Call(c, kQueue, "GetQueue").ok());
  EXPECT_TRUE(Call(c, kQueue, "ListQueues").ok());
}

TEST_F(AuthorizerTest, WorkRoleCallsWorkerServiceOnly) {
  const CallerCredentials c = Bearer(kWorkToken);
  for (const char* m : {"Lease", "Heartbeat", "Complete", "Fail", "Release", "EndPolls"}) {
    EXPECT_TRUE(Call(c, kWorker, m).ok()) << m;
  }
  EXPECT_EQ(Call(c, kTask, "Submit").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Call(c, kTask, "GetTask").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Call(c, kQueue, "PurgeQueue").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthorizerTest, AdminRoleImpliesNoOtherRole) {
  const CallerCredentials c = Bearer(kAdminToken);
  for (const char* m : {"CreateQueue", "UpdateQueue", "GetQueue", "ListQueues", "PauseQueue",
                        "ResumeQueue", "PurgeQueue", "ListDeadLetters", "RequeueDeadLetters",
                        "PurgeDeadLetters"}) {
    EXPECT_TRUE(Call(c, kQueue, m).ok()) << m;
  }
  absl::Status submit = Call(c, kTask, "Submit");
  EXPECT_EQ(submit.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(submit.message(), HasSubstr("needs the submit role"));
  EXPECT_EQ(Call(c, kWorker, "Lease").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthorizerTest, ATokenWithSeveralRolesHasEach) {
  const CallerCredentials c = Bearer(kBothToken);
  EXPECT_TRUE(Call(c, kTask, "Submit").ok());
  EXPECT_TRUE(Call(c, kWorker, "Lease").ok());
  EXPECT_EQ(Call(c, kQueue, "CreateQueue").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthorizerTest, UnknownRpcIsDenied) {
  EXPECT_EQ(Call(Bearer(kBothToken), kTask, "DropEverything").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthorizerTest, MappedCertificateIdentityGrantsItsRoles) {
  CallerCredentials cert;
  cert.cert_identities = {"some-other-san", "worker.example.com"};
  EXPECT_TRUE(Call(cert, kWorker, "Lease").ok());
  EXPECT_EQ(Call(cert, kTask, "Submit").code(), absl::StatusCode::kPermissionDenied);

  CallerCredentials spaced;
  spaced.cert_identities = {"CN With Spaces"};
  EXPECT_TRUE(Call(spaced, kQueue, "CreateQueue").ok());
  EXPECT_TRUE(Call(spaced, kTask, "Submit").ok());
}

TEST_F(AuthorizerTest, UnmappedCertificateIsUnauthenticated) {
  CallerCredentials cert;
  cert.cert_identities = {"stranger.example.com"};
  absl::Status s = Call(cert, kWorker, "Lease");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("client certificate maps to no role"));
}

TEST_F(AuthorizerTest, TokenAndCertificateRolesAddUpButAWrongTokenIsNeverExcused) {
  CallerCredentials both = Bearer(kSubmitToken);
  both.cert_identities = {"worker.example.com"};
  EXPECT_TRUE(Call(both, kTask, "Submit").ok());
  EXPECT_TRUE(Call(both, kWorker, "Lease").ok());

  CallerCredentials wrong = Bearer("cvy_stale");
  wrong.cert_identities = {"worker.example.com"};
  EXPECT_EQ(Call(wrong, kWorker, "Lease").code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthorizerTest, ReloadIfChangedPicksUpAReplacedFile) {
  const std::string fresh = "cvy_fresh";
  Replace(absl::StrCat(TokenFileLine(fresh, {Role::kSubmit}, ""), "\n"));
  ASSERT_TRUE(auth_->ReloadIfChanged().ok());
  EXPECT_TRUE(Call(Bearer(fresh), kTask, "Submit").ok());
  EXPECT_EQ(Call(Bearer(kSubmitToken), kTask, "Submit").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth_->token_count(), 1u);
  EXPECT_EQ(auth_->cert_count(), 0u);
}

TEST_F(AuthorizerTest, ReloadIfChangedSeesAnInPlaceRewrite) {
  {
    std::ofstream out(path_, std::ios::trunc);
    out << TokenFileLine(kWorkToken, {Role::kWork}, "only the worker now") << "\n";
  }
  ASSERT_TRUE(auth_->ReloadIfChanged().ok());
  EXPECT_EQ(auth_->token_count(), 1u);
  EXPECT_EQ(Call(Bearer(kSubmitToken), kTask, "Submit").code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthorizerTest, ABadNewFileKeepsTheOldTokens) {
  Replace(absl::StrCat(TokenFileLine("cvy_new", {Role::kSubmit}, ""), "\nsha256:zz work\n"));
  absl::Status s = auth_->ReloadIfChanged();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path_.string(), ":2:")));
  EXPECT_TRUE(Call(Bearer(kSubmitToken), kTask, "Submit").ok());
  EXPECT_EQ(Call(Bearer("cvy_new"), kTask, "Submit").code(), absl::StatusCode::kUnauthenticated);
  // The same bad file is not re-read every second.
  EXPECT_TRUE(auth_->ReloadIfChanged().ok());
  // Fixed: picked up.
  Replace(absl::StrCat(TokenFileLine("cvy_new", {Role::kSubmit}, ""), "\n"));
  EXPECT_TRUE(auth_->ReloadIfChanged().ok());
  EXPECT_TRUE(Call(Bearer("cvy_new"), kTask, "Submit").ok());
}

TEST_F(AuthorizerTest, AMissingFileKeepsTheOldTokens) {
  fs::remove(path_);
  EXPECT_EQ(auth_->ReloadIfChanged().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(auth_->Reload().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Call(Bearer(kSubmitToken), kTask, "Submit").ok());
}

TEST_F(AuthorizerTest, ReloadRereadsEvenWhenTheStampLooksTheSame) {
  // What SIGHUP does.
  EXPECT_TRUE(auth_->Reload().ok());
  EXPECT_EQ(auth_->token_count(), 4u);
}

TEST(AuthorizerLoadTest, MissingOrMalformedFileIsAnErrorNamingIt) {
  absl::StatusOr<std::shared_ptr<Authorizer>> missing =
      Authorizer::Load("/nonexistent/conveyor-tokens");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/conveyor-tokens"));
}

// ─── safe defaults (server/exposure.h) ───

TEST(ExposureTest, LoopbackAddressesAreRecognized) {
  for (const char* addr : {"127.0.0.1:7400", "127.0.0.1:0", "127.8.9.10:1", "localhost:7400",
                           "LOCALHOST:1", "[::1]:7400", "::1", "[::ffff:127.0.0.1]:7400",
                           "unix:/run/conveyor.sock", "unix-abstract:conveyor", "127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackListen(addr)) << addr;
  }
  for (const char* addr : {"0.0.0.0:7400", "0.0.0.0:0", "[::]:7400", "[::]:0", ":7400",
                           "10.0.0.1:7400", "192.168.1.2:1", "[fe80::1]:7400",
                           "broker.example.com:7400", "128.0.0.1:1", "vsock:3:7400",
                           "localhost.evil.com:1", "[::ffff:10.0.0.1]:1"}) {
    EXPECT_FALSE(IsLoopbackListen(addr)) << addr;
  }
}

TEST(ExposureTest, NonLoopbackNeedsTlsAndAuthOrInsecure) {
  EXPECT_TRUE(CheckListenExposure("127.0.0.1:7400", false, false, false).ok());
  EXPECT_TRUE(CheckListenExposure("0.0.0.0:7400", true, true, false).ok());
  EXPECT_TRUE(CheckListenExposure("0.0.0.0:7400", false, false, true).ok());

  absl::Status neither = CheckListenExposure("0.0.0.0:7400", false, false, false);
  EXPECT_EQ(neither.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(neither.message(), HasSubstr("0.0.0.0:7400"));
  EXPECT_THAT(neither.message(), HasSubstr("TLS (--tls-cert and --tls-key) and auth (--auth-tokens)"));
  EXPECT_THAT(neither.message(), HasSubstr("--insecure"));

  absl::Status no_tls = CheckListenExposure("[::]:7400", false, true, false);
  EXPECT_THAT(no_tls.message(), HasSubstr("without TLS"));
  EXPECT_THAT(no_tls.message(), Not(HasSubstr("auth (--auth-tokens)")));
  absl::Status no_auth = CheckListenExposure("10.1.2.3:7400", true, false, false);
  EXPECT_THAT(no_auth.message(), HasSubstr("without auth (--auth-tokens)"));
}

TEST(ExposureTest, MissingProtectionsNamesWhatIsOff) {
  EXPECT_EQ(MissingProtections(true, true), "");
  EXPECT_EQ(MissingProtections(false, true), "TLS (--tls-cert and --tls-key)");
  EXPECT_EQ(MissingProtections(true, false), "auth (--auth-tokens)");
}

}  // namespace
}  // namespace conveyor::server
