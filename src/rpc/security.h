// Transport security and authentication of tern's gRPC API (DESIGN.md: rpc/ owns TLS + token
// auth). Built from a ClusterConfig's `tls:` and `auth:` sections:
//   - mTLS: the coordinator serves with its certificate and requires a client certificate
//     signed by the cluster CA; daemons and the CLI verify the coordinator against that CA.
//   - bearer tokens: every call carries `authorization: Bearer <token>`; the coordinator's
//     TokenAuthProcessor refuses calls without a known token (UNAUTHENTICATED) before any
//     handler runs. Tokens are compared in constant time.
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
// files). `token` (from --token or $TERN_TOKEN) wins over the file's auth.token_file.
// Refuses plain text to a non-loopback `address`.
Result<std::shared_ptr<const ClientSecurity>> make_client_security(const ClusterConfig* config,
                                                                   const std::string& address,
                                                                   const std::string& token);

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const ClientSecurity& security);

// Compares `a` and `b` in time that depends only on their lengths, never on where they
// differ (a timing side channel would let a caller guess a token byte by byte).
bool constant_time_equals(const std::string& a, const std::string& b);

// The table of API users and their tokens.
class TokenAuthenticator {
 public:
  TokenAuthenticator() = default;
  explicit TokenAuthenticator(std::vector<std::pair<std::string, std::string>> user_tokens)
      : tokens_(std::move(user_tokens)) {}
  bool enabled() const { return !tokens_.empty(); }
  // The user an `authorization` header value ("Bearer <token>") belongs to. Every token is
  // compared (no early exit), each in constant time.
  std::optional<std::string> user_for(const std::string& authorization) const;

 private:
  std::vector<std::pair<std::string, std::string>> tokens_;  // (user, token)
};

// Reads auth.tokens' files: (user, token) pairs. Tokens shorter than 16 characters are refused.
Result<std::vector<std::pair<std::string, std::string>>> load_tokens(const ClusterConfig& config);

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
