#include "recovery/checkpoint_store.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>
#include <system_error>

#include "recovery/checkpoint_format.h"
#include "recovery/fs_util.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

constexpr char kManifestHeader[] = "tern-checkpoint-manifest 1";
constexpr char kStepPrefix[] = "step-";

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

bool parse_u64(const std::string& s, uint64_t* out, int base = 10) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s) {
    bool ok =
        base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) != 0 : (c >= '0' && c <= '9');
    if (!ok) return false;
  }
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, base);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

bool parse_i64(const std::string& s, int64_t* out) {
  bool neg = !s.empty() && s[0] == '-';
  uint64_t v = 0;
  if (!parse_u64(neg ? s.substr(1) : s, &v) || v > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  return true;
}

// A file name a manifest may list: no path separators, no dot-dot, printable.
bool safe_file_name(const std::string& n) {
  if (n.empty() || n.size() > 255 || n == "." || n == "..") return false;
  for (char c : n) {
    if (c == '/' || c == '\\' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
  }
  return true;
}

Status manifest_bad(const std::string& name, const std::string& what) {
  return data_loss(name + ": bad manifest: " + what);
}

}  // namespace

std::string rank_file_name(int64_t rank) { return "rank-" + std::to_string(rank) + ".ckpt"; }

std::string encode_manifest(const Manifest& m) {
  std::vector<ManifestFile> files = m.files;
  std::sort(files.begin(), files.end(),
            [](const ManifestFile& a, const ManifestFile& b) { return a.name < b.name; });
  std::ostringstream o;
  o << kManifestHeader << "\n";
  o << "step " << m.step << "\n";
  o << "world " << m.world << "\n";
  o << "generation " << m.generation << "\n";
  o << "job_id " << (m.job_id.empty() ? "-" : m.job_id) << "\n";
  for (const auto& f : files)
    o << "file " << f.name << " " << f.bytes << " " << hex32(f.digest) << "\n";
  std::string body = o.str();
  return body + "crc " + hex32(checkpoint_crc32(0, body.data(), body.size())) + "\n";
}

Result<Manifest> parse_manifest(std::string_view text, const std::string& name) {
  size_t crc_pos = text.rfind("crc ");
  if (crc_pos == std::string_view::npos || (crc_pos != 0 && text[crc_pos - 1] != '\n')) {
    return manifest_bad(name, "no crc line (truncated?)");
  }
  std::string crc_line(text.substr(crc_pos + 4));
  if (crc_line.empty() || crc_line.back() != '\n') return manifest_bad(name, "crc line truncated");
  crc_line.pop_back();
  uint64_t crc = 0;
  if (crc_line.size() != 8 || !parse_u64(crc_line, &crc, 16)) {
    return manifest_bad(name, "crc line is not 8 hex digits");
  }
  std::string_view body = text.substr(0, crc_pos);
  if (checkpoint_crc32(0, body.data(), body.size()) != crc) {
    return manifest_bad(name, "checksum mismatch");
  }
  Manifest m;
  std::istringstream in{std::string(body)};
  std::string line;
  if (!std::getline(in, line) || line != kManifestHeader) {
    return manifest_bad(name, "first line is not '" + std::string(kManifestHeader) + "'");
  }
  std::set<std::string> seen_keys, seen_files;
  int line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    std::vector<std::string> args;
    for (std::string a; ls >> a;) args.push_back(a);
    std::string where = "line " + std::to_string(line_no) + ": ";
    if (key == "file") {
      uint64_t bytes = 0, digest = 0;
      if (args.size() != 3 || !safe_file_name(args[0]) || !parse_u64(args[1], &bytes) ||
          args[2].size() != 8 || !parse_u64(args[2], &digest, 16)) {
        return manifest_bad(name, where + "malformed file entry");
      }
      if (!seen_files.insert(args[0]).second) {
        return manifest_bad(name, where + "file " + args[0] + " listed twice");
      }
      m.files.push_back({args[0], bytes, static_cast<uint32_t>(digest)});
      continue;
    }
    if (args.size() != 1 || !seen_keys.insert(key).second) {
      return manifest_bad(name, where + "malformed or repeated '" + key.substr(0, 40) + "'");
    }
    if (key == "job_id") {
      m.job_id = args[0] == "-" ? "" : args[0];
    } else if (key == "step" || key == "world" || key == "generation") {
      int64_t v = 0;
      if (!parse_i64(args[0], &v)) return manifest_bad(name, where + key + " is not an integer");
      (key == "step" ? m.step : key == "world" ? m.world : m.generation) = v;
    } else {
      return manifest_bad(name, where + "unknown key '" + key.substr(0, 40) + "'");
    }
  }
  for (const char* k : {"step", "world", "generation", "job_id"}) {
    if (!seen_keys.count(k)) return manifest_bad(name, std::string("missing '") + k + "'");
  }
  if (m.step < 0) return manifest_bad(name, "negative step");
  if (m.files.empty()) return manifest_bad(name, "lists no files");
  return m;
}

std::string CheckpointStore::step_dir(int64_t step) const {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s%012" PRId64, kStepPrefix, step);
  return (fs::path(dir_) / buf).string();
}

std::string CheckpointStore::file_path(int64_t step, const std::string& file) const {
  return (fs::path(step_dir(step)) / file).string();
}

Status CheckpointStore::prepare_step(int64_t step) const {
  if (step < 0)
    return invalid_argument(dir_ + ": checkpoint step must be >= 0, got " + std::to_string(step));
  std::error_code ec;
  bool made_root = !fs::exists(dir_, ec);
  fs::create_directories(step_dir(step), ec);
  if (ec) return internal_error(step_dir(step) + ": cannot create: " + ec.message());
  TERN_RETURN_IF_ERROR(fsync_dir(dir_));
  if (made_root) {
    std::string parent = fs::path(dir_).parent_path().string();
    if (!parent.empty()) TERN_RETURN_IF_ERROR(fsync_dir(parent));
  }
  return Status::ok();
}

Status CheckpointStore::commit(const Manifest& manifest) const {
  for (char c : manifest.job_id) {
    if (std::isspace(static_cast<unsigned char>(c)) ||
        std::iscntrl(static_cast<unsigned char>(c))) {
      return invalid_argument(step_dir(manifest.step) + ": job id '" + manifest.job_id +
                              "' contains whitespace or control characters");
    }
  }
  if (manifest.files.empty()) {
    return invalid_argument(step_dir(manifest.step) + ": a manifest must list at least one file");
  }
  for (const auto& f : manifest.files) {
    if (!safe_file_name(f.name) || f.name == kManifestFile) {
      return invalid_argument(step_dir(manifest.step) + ": unsafe file name '" + f.name + "'");
    }
    std::string path = file_path(manifest.step, f.name);
    auto digest = checkpoint_file_digest(path);
    if (!digest.is_ok())
      return digest.status().with_context("cannot commit step " + std::to_string(manifest.step));
    std::error_code ec;
    uint64_t size = fs::file_size(path, ec);
    if (ec || size != f.bytes || *digest != f.digest) {
      return data_loss(path + ": does not match what its writer reported (" + std::to_string(size) +
                       " bytes, digest " + hex32(*digest) + "; expected " +
                       std::to_string(f.bytes) + " bytes, digest " + hex32(f.digest) + "); step " +
                       std::to_string(manifest.step) + " not committed");
    }
  }
  std::string text = encode_manifest(manifest);
  return atomic_write_file(file_path(manifest.step, kManifestFile), text);
}

Result<std::vector<int64_t>> CheckpointStore::list_steps() const {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return steps;
  fs::directory_iterator it(dir_, ec);
  if (ec) return internal_error(dir_ + ": cannot list: " + ec.message());
  for (const auto& entry : it) {
    std::string n = entry.path().filename().string();
    if (n.rfind(kStepPrefix, 0) != 0 || !entry.is_directory(ec)) continue;
    int64_t step = 0;
    std::string digits = n.substr(sizeof(kStepPrefix) - 1);
    if (digits.empty() || digits[0] == '-' || !parse_i64(digits, &step)) continue;
    steps.push_back(step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

Result<Manifest> CheckpointStore::check_step(int64_t step) const {
  std::string mpath = file_path(step, kManifestFile);
  auto text = read_whole_file(mpath, 1 << 20);
  if (!text.is_ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return not_found(mpath + ": no manifest (incomplete checkpoint)");
    }
    return text.status();
  }
  TERN_ASSIGN_OR_RETURN(Manifest m, parse_manifest(*text, mpath));
  if (m.step != step) {
    return data_loss(mpath + ": manifest says step " + std::to_string(m.step) +
                     " in the directory of step " + std::to_string(step));
  }
  for (const auto& f : m.files) {
    std::string path = file_path(step, f.name);
    TERN_ASSIGN_OR_RETURN(uint32_t digest, checkpoint_file_digest(path));
    std::error_code ec;
    uint64_t size = fs::file_size(path, ec);
    if (ec || size != f.bytes) {
      return data_loss(path + ": " + std::to_string(size) + " bytes, the manifest says " +
                       std::to_string(f.bytes));
    }
    if (digest != f.digest) {
      return data_loss(path + ": digest " + hex32(digest) + ", the manifest says " +
                       hex32(f.digest) + " (file replaced after commit?)");
    }
  }
  return m;
}

Result<std::vector<Manifest>> CheckpointStore::complete_steps(
    std::vector<std::string>* skipped) const {
  TERN_ASSIGN_OR_RETURN(std::vector<int64_t> steps, list_steps());
  std::vector<Manifest> out;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    auto m = check_step(*it);
    if (m.is_ok()) {
      out.push_back(std::move(*m));
    } else if (skipped) {
      skipped->push_back(m.status().message());
    }
  }
  return out;
}

Result<std::vector<int64_t>> CheckpointStore::apply_retention(int64_t keep) const {
  keep = std::max<int64_t>(keep, 1);
  TERN_ASSIGN_OR_RETURN(std::vector<int64_t> steps, list_steps());
  int64_t found = 0;
  int64_t oldest_kept = -1;
  for (auto it = steps.rbegin(); it != steps.rend() && found < keep; ++it) {
    if (check_step(*it).is_ok()) {
      ++found;
      oldest_kept = *it;
    }
  }
  std::vector<int64_t> deleted;
  if (found == 0) return deleted;
  for (int64_t step : steps) {
    if (step >= oldest_kept) break;
    std::error_code ec;
    fs::remove_all(step_dir(step), ec);
    if (ec)
      return internal_error(step_dir(step) + ": cannot delete old checkpoint: " + ec.message());
    deleted.push_back(step);
  }
  if (!deleted.empty()) TERN_RETURN_IF_ERROR(fsync_dir(dir_));
  return deleted;
}

}  // namespace tern
