#include "common/path_policy.h"

#include <filesystem>

namespace tern {
namespace {

namespace fs = std::filesystem;

std::string normal(const fs::path& p, bool resolve_symlinks) {
  std::error_code ec;
  if (resolve_symlinks) {
    fs::path c = fs::weakly_canonical(p, ec);
    if (!ec) return c.lexically_normal().string();
  }
  return p.lexically_normal().string();
}

std::string join(const std::vector<std::string>& dirs) {
  std::string out;
  for (const auto& d : dirs) out += (out.empty() ? "" : ", ") + d;
  return out.empty() ? "(none)" : out;
}

}  // namespace

bool path_is_under(const std::string& path, const std::string& root) {
  fs::path p = fs::path(path).lexically_normal();
  fs::path r = fs::path(root).lexically_normal();
  auto rel = p.lexically_relative(r);
  if (rel.empty()) return false;
  auto first = *rel.begin();
  return first != ".." && !rel.is_absolute();
}

namespace {

Status check_one(const std::string& field, const std::string& value, bool write,
                 const PathPolicy& policy) {
  if (value.empty()) return Status::ok();
  if (value.find('\0') != std::string::npos)
    return invalid_argument(field + " must not contain NUL bytes");
  fs::path p(value);
  std::vector<std::string> allowed = policy.write_roots;
  if (!write) allowed.insert(allowed.end(), policy.read_roots.begin(), policy.read_roots.end());
  const char* what = write ? "write" : "read";
  if (p.is_relative()) {
    if (policy.job_dir.empty()) {
      fs::path n = p.lexically_normal();
      if (!n.empty() && *n.begin() == "..") {
        return invalid_argument(field + " '" + value +
                                "' climbs out of the job directory; a job may only " + what +
                                " inside its job directory or " + join(allowed));
      }
      return Status::ok();
    }
    p = fs::path(policy.job_dir) / p;
  }
  const std::string resolved = normal(p, policy.resolve_symlinks);
  std::vector<std::string> roots = allowed;
  if (!policy.job_dir.empty()) roots.push_back(policy.job_dir);
  for (const auto& root : roots) {
    if (path_is_under(resolved, normal(root, policy.resolve_symlinks))) return Status::ok();
  }
  return invalid_argument(
      field + " '" + value + "'" + (resolved != value ? " (" + resolved + ")" : std::string()) +
      " is outside the directories a job may " + what + ": " +
      (policy.job_dir.empty() ? std::string("its job directory, ") : policy.job_dir + ", ") +
      join(allowed));
}

}  // namespace

Status check_job_paths(const JobSpec& spec, const PathPolicy& policy) {
  // Sources that read no files ignore data.path.
  if (spec.data.source == DataSource::kFashionMnist || spec.data.source == DataSource::kCriteo ||
      spec.data.source == DataSource::kTensors || spec.data.source == DataSource::kTokens) {
    TERN_RETURN_IF_ERROR(check_one("data.path", spec.data.path, false, policy));
  }
  if (!spec.data.test_path.empty()) {
    TERN_RETURN_IF_ERROR(check_one("data.test_path", spec.data.test_path, false, policy));
  }
  if (spec.model.type == ModelType::kTorchscript)
    TERN_RETURN_IF_ERROR(check_one("model.path", spec.model.path, false, policy));
  TERN_RETURN_IF_ERROR(check_one("recovery.dir", spec.recovery.dir, true, policy));
  TERN_RETURN_IF_ERROR(check_one("recovery.resume_from", spec.recovery.resume_from, false, policy));
  return Status::ok();
}

}  // namespace tern
