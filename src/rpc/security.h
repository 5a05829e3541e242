// Transport security and authentication of tern's gRPC API (rpc/ owns TLS + token auth:
// docs/architecture.md, "Components"; docs/protocol.md, "gRPC services"). Built from a
// ClusterConfig's `tls:` and `auth:` sections:
//   - mTLS: the coordinator serves with its certificate and requires a client certificate
//     signed by the cluster CA; daemons and the CLI verify the coordinator against that CA.
//   - bearer tokens: every call carries `authorization: Bearer <token>`; the coordinator's
//     TokenAuthProcessor refuses calls without a known token (UNAUTHENTICATED) before any
//     handler runs. Tokens are compared in constant time.
//   - roles: each token has one (auth.tokens[].role). `user` may call the Coordinator API
//     (submit, cancel, status, logs), `worker` only the WorkerService (daemons), `admin`
//     both. CallGuard enforces them per method (PERMISSION_DENIED). A cluster file that gives
//     no token a role keeps the old behaviour: every token is admin (the coordinator warns).
//   - plain text only on loopback: a non-TLS server must listen on a loopback address and a
//     non-TLS client only dials one.
// Everything here is immutable after construction and thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/cluster_config.h"
#include "common/status.h"

namespace tern {

// What a client channel needs: PEM contents (not paths) and the token it sends.
struct ClientSecurity {
  bool tls = false;
  std::string ca_pem;
  std::string cert_pem;  // client certificate (mTLS)
  std::string key_pem;
  std::string server_name;  // verify the coordinator as this name; empty = the dialled host
  std::string token;        // sent as "authorization: Bearer <token>"; empty = none
  int64_t max_message_bytes = 4 << 20;
};

// Builds a client's security from a cluster file's settings (null config: plain text, no
// files). `token` (from --token or $TERN_TOKEN) wins over the file's auth.token_file (for a
// worker daemon, `worker`: auth.worker_token_file when the file names one).
// Refuses plain text to a non-loopback `address`.
Result<std::shared_ptr<const ClientSecurity>> make_client_security(const ClusterConfig* config,
                                                                   const std::string& address,
                                                                   const std::string& token,
                                                                   bool worker = false);

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const ClientSecurity& security);

// Compares `a` and `b` in time that depends only on their lengths, never on where they
// differ (a timing side channel would let a caller guess a token byte by byte).
bool constant_time_equals(const std::string& a, const std::string& b);

// What a token may call. Bit flags so a method can allow several.
enum class Role : unsigned { kUser = 1, kWorker = 2, kAdmin = 4 };
constexpr unsigned kAnyRole = 7;
const char* role_name(Role role);  // "user", "worker", "admin"

struct ApiToken {
  std::string user;
  std::string token;
  Role role = Role::kAdmin;
};

// The table of API users, their tokens and roles.
class TokenAuthenticator {
 public:
  TokenAuthenticator() = default;
  // Every token has role admin (no roles configured).
  explicit TokenAuthenticator(std::vector<std::pair<std::string, std::string>> user_tokens);
  static TokenAuthenticator with_roles(std::vector<ApiToken> tokens) {
    TokenAuthenticator a;
    a.tokens_ = std::move(tokens);
    return a;
  }
  bool enabled() const { return !tokens_.empty(); }
  // The token entry an `authorization` header value ("Bearer <token>") belongs to. Every
  // token is compared (no early exit), each in constant time.
  const ApiToken* find(const std::string& authorization) const;
  std::optional<std::string> user_for(const std::string& authorization) const;

 private:
  std::vector<ApiToken> tokens_;
};

// Reads auth.tokens' files with their roles. Tokens shorter than 16 characters are refused.
// When no entry names a role, every token is admin (clusters from before roles).
Result<std::vector<ApiToken>> load_tokens(const ClusterConfig& config);

// gRPC's hook for per-call authentication: runs before any handler, on gRPC's thread.
class TokenAuthProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenAuthProcessor(std::shared_ptr<const TokenAuthenticator> auth)
      : auth_(std::move(auth)) {}
  bool IsBlocking() const override { return false; }  // a table lookup: no I/O
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  std::shared_ptr<const TokenAuthenticator> auth_;
};

struct ServerSecurity {
  bool tls = false;
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  std::shared_ptr<const TokenAuthenticator> auth = std::make_shared<TokenAuthenticator>();
};

// Reads the coordinator's certificate, key, CA and tokens named by the config.
Result<ServerSecurity> make_server_security(const ClusterConfig& config);

// TLS: SslServerCredentials requiring and verifying client certificates. Plain text with
// tokens: local (loopback-only) credentials, which can carry the auth processor. Plain text
// without tokens: insecure credentials.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServerSecurity& security);

// Reads a whole file (certificates, keys, tokens); errors name the file.
Result<std::string> read_secret_file(const std::string& path, const std::string& what);

}  // namespace tern
