#include "rpc/security.h"

#include <fstream>
#include <sstream>

#include "rpc/client.h"

namespace tern {
namespace {

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(s.find_last_not_of(ws) + 1);
  s.erase(0, s.find_first_not_of(ws));
  return s;
}

constexpr size_t kMinTokenLength = 16;

}  // namespace

Result<std::string> read_secret_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(what + ": cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty()) return invalid_argument(what + ": " + path + " is empty");
  return ss.str();
}

bool constant_time_equals(const std::string& a, const std::string& b) {
  // Walks the longer length whatever the contents; a length mismatch is folded in last.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = 0;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0 && a.size() == b.size();
}

const char* role_name(Role role) {
  switch (role) {
    case Role::kUser:
      return "user";
    case Role::kWorker:
      return "worker";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

TokenAuthenticator::TokenAuthenticator(
    std::vector<std::pair<std::string, std::string>> user_tokens) {
  for (auto& [user, token] : user_tokens) tokens_.push_back({user, token, Role::kAdmin});
}

const ApiToken* TokenAuthenticator::find(const std::string& authorization) const {
  static const std::string kBearer = "Bearer ";
  if (authorization.compare(0, kBearer.size(), kBearer) != 0) return nullptr;
  const std::string presented = authorization.substr(kBearer.size());
  const ApiToken* found = nullptr;
  for (const ApiToken& t : tokens_) {
    if (constant_time_equals(presented, t.token) && !found) found = &t;
  }
  return found;
}

std::optional<std::string> TokenAuthenticator::user_for(const std::string& authorization) const {
  const ApiToken* t = find(authorization);
  return t ? std::optional<std::string>(t->user) : std::nullopt;
}

Result<std::vector<ApiToken>> load_tokens(const ClusterConfig& config) {
  std::vector<ApiToken> out;
  bool any_role = false;
  for (const AuthToken& t : config.auth.tokens) any_role = any_role || !t.role.empty();
  for (size_t i = 0; i < config.auth.tokens.size(); ++i) {
    const AuthToken& t = config.auth.tokens[i];
    const std::string field = config.path + ": auth.tokens[" + std::to_string(i) + "].token_file";
    TERN_ASSIGN_OR_RETURN(std::string raw, read_secret_file(t.token_file, field));
    std::string token = trim(raw);
    if (token.size() < kMinTokenLength) {
      return invalid_argument(field + ": the token of user '" + t.user + "' is " +
                              std::to_string(token.size()) + " characters; use at least " +
                              std::to_string(kMinTokenLength) +
                              " (scripts/make-certs.sh writes 64 hex characters)");
    }
    Role role = Role::kAdmin;  // no roles in the file: the old all-powerful tokens
    if (t.role == "user") role = Role::kUser;
    if (t.role == "worker") role = Role::kWorker;
    if (any_role && t.role.empty()) role = Role::kUser;  // roles in use: least privilege
    out.push_back({t.user, token, role});
  }
  return out;
}

grpc::Status TokenAuthProcessor::Process(const InputMetadata& auth_metadata, grpc::AuthContext*,
                                         OutputMetadata*, OutputMetadata*) {
  auto it = auth_metadata.find("authorization");
  if (it == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "no bearer token: pass --token, set TERN_TOKEN or name auth.token_file in "
                        "the cluster file");
  }
  if (!auth_->user_for(std::string(it->second.data(), it->second.size()))) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "invalid bearer token (not one of the coordinator's auth.tokens)");
  }
  return grpc::Status::OK;
}

Result<std::shared_ptr<const ClientSecurity>> make_client_security(const ClusterConfig* config,
                                                                   const std::string& address,
                                                                   const std::string& token,
                                                                   bool worker) {
  auto s = std::make_shared<ClientSecurity>();
  s->token = trim(token);
  if (config) {
    s->max_message_bytes = config->limits.max_message_bytes;
    if (config->tls.enabled) {
      s->tls = true;
      s->server_name = config->tls.server_name;
      const std::string where = config->path + ": tls.";
      TERN_ASSIGN_OR_RETURN(s->ca_pem, read_secret_file(config->tls.ca, where + "ca"));
      if (config->tls.client_cert.empty()) {
        return invalid_argument(config->path +
                                ": tls.client_cert and tls.client_key are required for daemons "
                                "and the CLI (the coordinator requires a client certificate)");
      }
      TERN_ASSIGN_OR_RETURN(s->cert_pem,
                            read_secret_file(config->tls.client_cert, where + "client_cert"));
      TERN_ASSIGN_OR_RETURN(s->key_pem,
                            read_secret_file(config->tls.client_key, where + "client_key"));
    }
    const bool worker_file = worker && !config->auth.worker_token_file.empty();
    const std::string& file =
        worker_file ? config->auth.worker_token_file : config->auth.token_file;
    if (s->token.empty() && !file.empty()) {
      TERN_ASSIGN_OR_RETURN(
          std::string raw,
          read_secret_file(file, config->path + (worker_file ? ": auth.worker_token_file"
                                                             : ": auth.token_file")));
      s->token = trim(raw);
    }
  }
  if (!s->tls && !is_loopback_host(dial_address(address))) {
    return failed_precondition(
        "refusing plain-text gRPC to " + address +
        ", which is not a loopback address: give the cluster file (--cluster) with its tls "
        "section so the connection is encrypted");
  }
  return std::shared_ptr<const ClientSecurity>(std::move(s));
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const ClientSecurity& security) {
  if (!security.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = security.ca_pem;
  o.pem_cert_chain = security.cert_pem;
  o.pem_private_key = security.key_pem;
  return grpc::SslCredentials(o);
}

Result<ServerSecurity> make_server_security(const ClusterConfig& config) {
  ServerSecurity s;
  if (config.tls.enabled) {
    if (config.tls.cert.empty()) {
      return invalid_argument(config.path +
                              ": tls.cert and tls.key are required to run the coordinator");
    }
    s.tls = true;
    const std::string where = config.path + ": tls.";
    TERN_ASSIGN_OR_RETURN(s.ca_pem, read_secret_file(config.tls.ca, where + "ca"));
    TERN_ASSIGN_OR_RETURN(s.cert_pem, read_secret_file(config.tls.cert, where + "cert"));
    TERN_ASSIGN_OR_RETURN(s.key_pem, read_secret_file(config.tls.key, where + "key"));
  }
  TERN_ASSIGN_OR_RETURN(auto tokens, load_tokens(config));
  s.auth = std::make_shared<TokenAuthenticator>(TokenAuthenticator::with_roles(std::move(tokens)));
  return s;
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServerSecurity& security) {
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (security.tls) {
    grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    o.pem_root_certs = security.ca_pem;
    o.pem_key_cert_pairs.push_back({security.key_pem, security.cert_pem});
    creds = grpc::SslServerCredentials(o);
  } else if (security.auth && security.auth->enabled()) {
    // Insecure credentials cannot carry an auth processor; local ones can, and they also
    // refuse any peer that is not on this machine.
    creds = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  } else {
    return grpc::InsecureServerCredentials();
  }
  if (security.auth && security.auth->enabled())
    creds->SetAuthMetadataProcessor(std::make_shared<TokenAuthProcessor>(security.auth));
  return creds;
}

}  // namespace tern
