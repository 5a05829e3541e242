// rpc/security: token comparison and lookup, loading tokens and TLS material from a cluster
// config, the plain-text-only-on-loopback rule, and a real in-process gRPC server with mTLS
// and bearer tokens. Certificates come from scripts/make-certs.sh (once per test binary);
// an unrelated "rogue" CA and a client certificate it signed are made with openssl (EC keys:
// fast). Every refused call is checked to have changed nothing on the server: the handler
// never ran.
#include "rpc/security.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "rpc/client.h"
#include "rpc/server.h"
#include "testing/counting_coordinator.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using testing::CountingCoordinator;

std::string source_dir() {
  const char* d = std::getenv("TERN_SOURCE_DIR");
  return d ? d : ".";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------- tokens

TEST(ConstantTimeEquals, ComparesWholeStrings) {
  EXPECT_TRUE(constant_time_equals("", ""));
  EXPECT_TRUE(constant_time_equals("0123456789abcdef", "0123456789abcdef"));
  EXPECT_FALSE(constant_time_equals("0123456789abcdef", "0123456789abcdeF")) << "last byte";
  EXPECT_FALSE(constant_time_equals("x123456789abcdef", "0123456789abcdef")) << "first byte";
  EXPECT_FALSE(constant_time_equals("0123456789abcde", "0123456789abcdef")) << "a prefix";
  EXPECT_FALSE(constant_time_equals("0123456789abcdef", "0123456789abcde")) << "a prefix";
  EXPECT_FALSE(constant_time_equals("", "a"));
  // A shorter string padded with NULs must not equal the longer one.
  EXPECT_FALSE(constant_time_equals(std::string("ab"), std::string("ab\0", 3)));
  EXPECT_TRUE(constant_time_equals(std::string("a\0b", 3), std::string("a\0b", 3)));
}

TEST(TokenAuthenticator, MapsBearerTokensToUsers) {
  const std::string alice(32, 'a');
  const std::string bob(32, 'b');
  TokenAuthenticator auth({{"alice", alice}, {"bob", bob}});
  EXPECT_TRUE(auth.enabled());
  EXPECT_EQ(auth.user_for("Bearer " + alice), "alice");
  EXPECT_EQ(auth.user_for("Bearer " + bob), "bob");
  EXPECT_EQ(auth.user_for("Bearer " + std::string(32, 'c')), std::nullopt) << "unknown token";
  EXPECT_EQ(auth.user_for("Bearer " + alice + "a"), std::nullopt) << "longer";
  EXPECT_EQ(auth.user_for("Bearer " + alice.substr(1)), std::nullopt) << "shorter";
  EXPECT_EQ(auth.user_for(alice), std::nullopt) << "no 'Bearer ' prefix";
  EXPECT_EQ(auth.user_for("bearer " + alice), std::nullopt) << "prefix is case-sensitive";
  EXPECT_EQ(auth.user_for("Basic " + alice), std::nullopt);
  EXPECT_EQ(auth.user_for("Bearer"), std::nullopt);
  EXPECT_EQ(auth.user_for("Bearer "), std::nullopt) << "an empty token is nobody's";
  EXPECT_EQ(auth.user_for(""), std::nullopt);
  EXPECT_FALSE(TokenAuthenticator().enabled());
  EXPECT_EQ(TokenAuthenticator().user_for("Bearer "), std::nullopt);
}

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern_security_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

using LoadTokens = TempDirTest;

TEST_F(LoadTokens, ReadsTrimmedTokensPerUser) {
  ClusterConfig c;
  c.path = (dir_ / "cluster.yaml").string();
  c.auth.tokens = {{"alice", write("alice.token", "  " + std::string(16, 'a') + "\n")},
                   {"bob", write("bob.token", std::string(64, 'b'))}};
  auto tokens = load_tokens(c);
  ASSERT_TRUE(tokens.is_ok()) << tokens.status().to_string();
  ASSERT_EQ(tokens->size(), 2u);
  EXPECT_EQ((*tokens)[0].user, "alice");
  EXPECT_EQ((*tokens)[0].token, std::string(16, 'a'));
  EXPECT_EQ((*tokens)[1].user, "bob");
  EXPECT_EQ((*tokens)[1].token, std::string(64, 'b'));
  EXPECT_EQ((*tokens)[1].role, Role::kAdmin) << "no roles in the file: every token is admin";
}

TEST_F(LoadTokens, RefusesShortTokensNamingTheUserAndTheField) {
  ClusterConfig c;
  c.path = "cluster.yaml";
  c.auth.tokens = {{"alice", write("alice.token", std::string(16, 'a'))},
                   {"bob", write("bob.token", std::string(15, 'b') + "\n")}};
  auto tokens = load_tokens(c);
  ASSERT_EQ(tokens.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = tokens.status().message();
  EXPECT_TRUE(contains(m, "cluster.yaml: auth.tokens[1].token_file")) << m;
  EXPECT_TRUE(contains(m, "'bob'")) << m;
  EXPECT_TRUE(contains(m, "15 characters")) << m;
  EXPECT_TRUE(contains(m, "at least 16")) << m;
  EXPECT_TRUE(contains(m, "make-certs.sh")) << m;
}

TEST_F(LoadTokens, RefusesMissingAndEmptyFiles) {
  ClusterConfig c;
  c.path = "cluster.yaml";
  const std::string missing = (dir_ / "nope.token").string();
  c.auth.tokens = {{"alice", missing}};
  auto r = load_tokens(c);
  ASSERT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(contains(r.status().message(), "auth.tokens[0].token_file")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), missing)) << r.status().message();
  c.auth.tokens = {{"alice", write("empty.token", "")}};
  EXPECT_EQ(load_tokens(c).status().code(), StatusCode::kInvalidArgument);
  // The coordinator does not start with a bad token file either.
  EXPECT_FALSE(make_server_security(c).is_ok());
}

// ---------------------------------------------------------------- client settings

TEST(MakeClientSecurity, PlainTextOnlyToLoopback) {
  for (const char* remote : {"10.1.2.3:7070", "coordinator.example.com:7070", "[2001:db8::1]:7070",
                             "127.0.0.1.example.com:7070"}) {
    auto s = make_client_security(nullptr, remote, "");
    ASSERT_EQ(s.status().code(), StatusCode::kFailedPrecondition) << remote;
    EXPECT_TRUE(contains(s.status().message(), "not a loopback address")) << s.status().message();
    EXPECT_TRUE(contains(s.status().message(), remote)) << s.status().message();
    EXPECT_TRUE(contains(s.status().message(), "tls")) << "says the fix";
  }
  for (const char* local : {"127.0.0.1:7070", "localhost:7070", "[::1]:7070", "0.0.0.0:7070"}) {
    auto s = make_client_security(nullptr, local, "");
    ASSERT_TRUE(s.is_ok()) << local << ": " << s.status().to_string();
    EXPECT_FALSE((*s)->tls);
    EXPECT_TRUE((*s)->token.empty());
  }
  // A config without tls is plain text as well: still refused to a remote address.
  ClusterConfig c;
  EXPECT_EQ(make_client_security(&c, "10.1.2.3:7070", "").status().code(),
            StatusCode::kFailedPrecondition);
}

using ClientSecurityFromConfig = TempDirTest;

TEST_F(ClientSecurityFromConfig, TokenFlagWinsOverTheFile) {
  ClusterConfig c;
  c.path = "cluster.yaml";
  c.auth.token_file = write("me.token", std::string(20, 'f') + "\n");
  auto from_file = make_client_security(&c, "127.0.0.1:1", "");
  ASSERT_TRUE(from_file.is_ok()) << from_file.status().to_string();
  EXPECT_EQ((*from_file)->token, std::string(20, 'f')) << "trimmed";
  auto from_flag = make_client_security(&c, "127.0.0.1:1", " " + std::string(20, 'g') + "\n");
  ASSERT_TRUE(from_flag.is_ok());
  EXPECT_EQ((*from_flag)->token, std::string(20, 'g'));
  c.auth.token_file = (dir_ / "missing.token").string();
  auto missing = make_client_security(&c, "127.0.0.1:1", "");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(contains(missing.status().message(), "auth.token_file"))
      << missing.status().message();
}

TEST_F(ClientSecurityFromConfig, TlsNeedsAClientCertificate) {
  ClusterConfig c;
  c.path = "cluster.yaml";
  c.tls.enabled = true;
  c.tls.ca = write("ca.crt", "not really a CA");
  auto s = make_client_security(&c, "10.1.2.3:7070", "");
  ASSERT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.status().message(), "tls.client_cert")) << s.status().message();
  c.tls.client_cert = write("client.crt", "cert");
  c.tls.client_key = write("client.key", "key");
  c.tls.server_name = "tern-coordinator";
  auto ok = make_client_security(&c, "10.1.2.3:7070", "");
  ASSERT_TRUE(ok.is_ok()) << "TLS may dial any address: " << ok.status().to_string();
  EXPECT_TRUE((*ok)->tls);
  EXPECT_EQ((*ok)->ca_pem, "not really a CA");
  EXPECT_EQ((*ok)->cert_pem, "cert");
  EXPECT_EQ((*ok)->key_pem, "key");
  EXPECT_EQ((*ok)->server_name, "tern-coordinator");
}

TEST(Server, RefusesPlainTextOnANonLoopbackAddress) {
  auto s = RpcServer::start("0.0.0.0:0", {});
  ASSERT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(contains(s.status().message(), "enable tls")) << s.status().message();
}

// ---------------------------------------------------------------- a real server

// Certificates and tokens shared by every test below (generating RSA keys takes seconds).
class SecureServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new fs::path(fs::temp_directory_path() /
                          ("tern_security_certs_" + std::to_string(getpid())));
    fs::remove_all(*certs_);
    const std::string d = certs_->string();
    const std::string log = d + ".log";
    const std::string make = "TERN_TOKEN_USERS='alice bob' " + source_dir() +
                             "/scripts/make-certs.sh " + d + " >" + log + " 2>&1";
    ASSERT_EQ(std::system(make.c_str()), 0) << make << "\n" << slurp(log);
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string rogue =
        "cd " + d + " && openssl req -x509" + ec +
        " -keyout rogue-ca.key -out rogue-ca.crt -days 1 -subj '/CN=rogue CA' >>" + log +
        " 2>&1 && openssl req" + ec +
        " -keyout rogue.key -out rogue.csr -subj '/CN=tern-client' >>" + log +
        " 2>&1 && openssl x509 -req -in rogue.csr -CA rogue-ca.crt -CAkey rogue-ca.key " +
        "-CAcreateserial -out rogue.crt -days 1 >>" + log + " 2>&1";
    ASSERT_EQ(std::system(rogue.c_str()), 0) << rogue << "\n" << slurp(log);
    fs::remove(log);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*certs_);
    delete certs_;
  }

  void SetUp() override {
    ASSERT_TRUE(fs::exists(*certs_ / "alice.token")) << "certificates were not made";
    config_.path = (*certs_ / "cluster.yaml").string();
    config_.tls.enabled = true;
    config_.tls.ca = cert("ca.crt");
    config_.tls.cert = cert("server.crt");
    config_.tls.key = cert("server.key");
    config_.tls.client_cert = cert("client.crt");
    config_.tls.client_key = cert("client.key");
    config_.auth.tokens = {{"alice", cert("alice.token")}, {"bob", cert("bob.token")}};
    config_.auth.token_file = cert("alice.token");
  }

  static std::string cert(const std::string& name) { return (*certs_ / name).string(); }
  static std::string token(const std::string& user) {
    std::string t = slurp(*certs_ / (user + ".token"));
    return t.substr(0, t.find('\n'));
  }

  // Starts `service_` with the server side of `config_`.
  void start_server() {
    auto sec = make_server_security(config_);
    ASSERT_TRUE(sec.is_ok()) << sec.status().to_string();
    RpcServerOptions o;
    o.credentials = server_credentials(*sec);
    o.tls = sec->tls;
    auto s = RpcServer::start("127.0.0.1:0", {&service_}, o);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }

  // The client side of `config_` with `token` ("" = the file's).
  std::shared_ptr<const ClientSecurity> client_security(const std::string& token = "") {
    auto s = make_client_security(&config_, address_, token);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? *s : nullptr;
  }

  Result<v1::SubmitJobReply> submit(std::shared_ptr<const ClientSecurity> security) {
    RpcClientOptions o;
    o.retries = 0;  // refusals are final; do not wait on backoff
    o.security = std::move(security);
    v1::SubmitJobRequest request;
    request.set_spec_yaml("name: x\nworkers: 1\n");
    return CoordinatorClient(address_, o).submit_job(request);
  }

  static fs::path* certs_;
  ClusterConfig config_;
  CountingCoordinator service_;
  std::unique_ptr<RpcServer> server_;
  std::string address_;
};

fs::path* SecureServerTest::certs_ = nullptr;

TEST_F(SecureServerTest, MakeCertsWritesLongRandomTokens) {
  EXPECT_EQ(token("alice").size(), 64u);
  EXPECT_EQ(token("alice").find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(token("alice"), token("bob"));
  EXPECT_EQ(fs::status(cert("alice.token")).permissions() & fs::perms::others_read, fs::perms::none)
      << "tokens are secrets";
}

TEST_F(SecureServerTest, MutualTlsWithTheRightTokenIsServed) {
  start_server();
  auto r = submit(client_security());  // alice's token, from auth.token_file
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->job_id(), "j-1");
  auto bob = submit(client_security(token("bob")));
  ASSERT_TRUE(bob.is_ok()) << bob.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 2);
}

TEST_F(SecureServerTest, NoTokenIsUnauthenticatedAndNothingRuns) {
  start_server();
  config_.auth.token_file.clear();
  auto security = client_security();
  ASSERT_TRUE(security->token.empty());
  auto r = submit(security);
  ASSERT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "no bearer token")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "--token")) << "says the fix";
  EXPECT_EQ(service_.submitted.load(), 0) << "the handler never ran";
}

TEST_F(SecureServerTest, WrongTokenIsUnauthenticatedAndNothingRuns) {
  start_server();
  std::string wrong = token("alice");
  wrong.back() = wrong.back() == '0' ? '1' : '0';  // one character off, same length
  auto r = submit(client_security(wrong));
  ASSERT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status().to_string();
  EXPECT_TRUE(contains(r.status().message(), "invalid bearer token")) << r.status().message();
  EXPECT_FALSE(contains(r.status().message(), token("alice"))) << "no token in the reply";
  EXPECT_EQ(service_.submitted.load(), 0) << "the handler never ran";
}

TEST_F(SecureServerTest, ClientTrustingAnotherCaIsUnavailableAndNothingRuns) {
  start_server();
  config_.tls.ca = cert("rogue-ca.crt");
  auto r = submit(client_security());
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 0);
}

TEST_F(SecureServerTest, ClientCertificateFromAnotherCaIsRefused) {
  start_server();
  config_.tls.client_cert = cert("rogue.crt");
  config_.tls.client_key = cert("rogue.key");
  auto r = submit(client_security());
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 0);
}

TEST_F(SecureServerTest, ClientWithoutACertificateIsRefused) {
  start_server();
  auto base = client_security();
  auto no_cert = std::make_shared<ClientSecurity>(*base);
  no_cert->cert_pem.clear();
  no_cert->key_pem.clear();
  auto r = submit(no_cert);
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 0);
}

TEST_F(SecureServerTest, PlainTextClientToATlsServerIsRefused) {
  start_server();
  auto plain = std::make_shared<ClientSecurity>();
  plain->token = token("alice");
  auto r = submit(plain);
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 0);
}

TEST_F(SecureServerTest, VerifiesTheServerNameWhenOneIsGiven) {
  start_server();
  config_.tls.server_name = "tern-coordinator";  // one of make-certs.sh's SANs
  auto ok = submit(client_security());
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  config_.tls.server_name = "somebody-else";
  auto r = submit(client_security());
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 1);
}

TEST_F(SecureServerTest, PlainTextOnLoopbackStillChecksTokens) {
  config_.tls = TlsSpec{};
  start_server();
  auto ok = submit(client_security());
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  config_.auth.token_file.clear();
  auto none = submit(client_security());
  ASSERT_EQ(none.status().code(), StatusCode::kUnauthenticated) << none.status().to_string();
  auto wrong = submit(client_security(std::string(64, '0')));
  ASSERT_EQ(wrong.status().code(), StatusCode::kUnauthenticated) << wrong.status().to_string();
  EXPECT_EQ(service_.submitted.load(), 1);
}

}  // namespace
}  // namespace tern
