#include "common/yaml_reader.h"

#include <cmath>
#include <fstream>
#include <sstream>

namespace tern {

void ErrorList::add(int mark_line, const std::string& path, const std::string& message) {
  std::ostringstream os;
  os << file_;
  if (mark_line >= 0) {
    os << ":" << (mark_line + 1);
  } else {
    os << " (--set)";
  }
  os << ": " << path << " " << message;
  errors_.push_back(os.str());
}

Status ErrorList::to_status() const {
  if (errors_.empty()) return Status::ok();
  std::string msg;
  for (size_t i = 0; i < errors_.size(); ++i) {
    if (i) msg += "\n";
    msg += errors_[i];
  }
  return invalid_argument(msg);
}

YamlMap::YamlMap(YAML::Node node, std::string path, ErrorList* errors)
    : node_(std::move(node)), path_(std::move(path)), errors_(errors) {}

std::string YamlMap::field(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

void YamlMap::error(const std::string& key, const std::string& message) {
  YAML::Node n = valid() && node_[key] ? node_[key] : node_;
  errors_->add(n.Mark().line, field(key), message);
}

bool YamlMap::has(const std::string& key) const {
  return valid() && node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node YamlMap::lookup(const std::string& key) {
  used_.insert(key);
  if (!valid()) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node n = node_[key];
  if (!n.IsDefined() || n.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
  return n;
}

void YamlMap::require(const std::string& key) {
  used_.insert(key);
  if (!has(key)) errors_->add(node_.Mark().line, field(key), "is required");
}

void YamlMap::get(const std::string& key, std::string* out) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  if (!n.IsScalar()) {
    errors_->add(n.Mark().line, field(key), "must be a string");
    return;
  }
  *out = n.Scalar();
}

void YamlMap::get(const std::string& key, bool* out) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
    errors_->add(n.Mark().line, field(key), "must be true or false, got '" +
                                                 (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
    return;
  }
  *out = v;
}

void YamlMap::get(const std::string& key, int64_t* out, int64_t min, int64_t max) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  long long v = 0;
  if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v)) {
    errors_->add(n.Mark().line, field(key), "must be an integer, got '" +
                                                 (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
    return;
  }
  if (v < min) {
    errors_->add(n.Mark().line, field(key), "must be >= " + std::to_string(min) + ", got " + std::to_string(v));
    return;
  }
  if (v > max) {
    errors_->add(n.Mark().line, field(key), "must be <= " + std::to_string(max) + ", got " + std::to_string(v));
    return;
  }
  *out = v;
}

void YamlMap::get(const std::string& key, int* out, int min, int max) {
  int64_t v = *out;
  get(key, &v, min, max);
  *out = static_cast<int>(v);
}

static std::string format_double(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void YamlMap::get(const std::string& key, double* out, double min, double max) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
    errors_->add(n.Mark().line, field(key), "must be a number, got '" +
                                                 (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
    return;
  }
  if (v < min) {
    errors_->add(n.Mark().line, field(key), "must be >= " + format_double(min) + ", got " + format_double(v));
    return;
  }
  if (v > max) {
    errors_->add(n.Mark().line, field(key), "must be <= " + format_double(max) + ", got " + format_double(v));
    return;
  }
  *out = v;
}

void YamlMap::get_enum(const std::string& key, std::string* out,
                       std::initializer_list<const char*> allowed) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  std::string all;
  for (const char* a : allowed) {
    if (!all.empty()) all += ", ";
    all += a;
    if (n.IsScalar() && n.Scalar() == a) {
      *out = a;
      return;
    }
  }
  errors_->add(n.Mark().line, field(key), "must be one of [" + all + "], got '" +
                                               (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
}

void YamlMap::get_list(const std::string& key, std::vector<double>* out, double min, double max) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  if (!n.IsSequence()) {
    errors_->add(n.Mark().line, field(key), "must be a list of numbers");
    return;
  }
  std::vector<double> vals;
  for (size_t i = 0; i < n.size(); ++i) {
    double v = 0;
    if (!n[i].IsScalar() || !YAML::convert<double>::decode(n[i], v) || v < min || v > max) {
      errors_->add(n[i].Mark().line, field(key) + "[" + std::to_string(i) + "]",
                   "must be a number in [" + format_double(min) + ", " + format_double(max) + "]");
      return;
    }
    vals.push_back(v);
  }
  *out = std::move(vals);
}

void YamlMap::get_list(const std::string& key, std::vector<std::string>* out) {
  YAML::Node n = lookup(key);
  if (!n.IsDefined()) return;
  if (!n.IsSequence()) {
    errors_->add(n.Mark().line, field(key), "must be a list of strings");
    return;
  }
  std::vector<std::string> vals;
  for (size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar()) {
      errors_->add(n[i].Mark().line, field(key) + "[" + std::to_string(i) + "]", "must be a string");
      return;
    }
    vals.push_back(n[i].Scalar());
  }
  *out = std::move(vals);
}

YamlMap YamlMap::child(const std::string& key) {
  YAML::Node n = lookup(key);
  if (n.IsDefined() && !n.IsMap()) {
    errors_->add(n.Mark().line, field(key), "must be a map");
    return YamlMap(YAML::Node(YAML::NodeType::Undefined), field(key), errors_);
  }
  return YamlMap(n, field(key), errors_);
}

std::vector<YamlMap> YamlMap::child_list(const std::string& key) {
  YAML::Node n = lookup(key);
  std::vector<YamlMap> out;
  if (!n.IsDefined()) return out;
  if (!n.IsSequence()) {
    errors_->add(n.Mark().line, field(key), "must be a list");
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = field(key) + "[" + std::to_string(i) + "]";
    if (!n[i].IsMap()) {
      errors_->add(n[i].Mark().line, p, "must be a map");
      continue;
    }
    out.emplace_back(n[i], p, errors_);
  }
  return out;
}

void YamlMap::finish() {
  if (!valid()) return;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    std::string key = it->first.Scalar();
    if (!used_.count(key)) {
      errors_->add(it->first.Mark().line, field(key), "is not a known field");
    }
  }
}

// A deep copy without source positions, so errors about it point at the --set flag.
static YAML::Node without_marks(const YAML::Node& n) {
  if (n.IsScalar()) return YAML::Node(n.Scalar());
  if (n.IsSequence()) {
    YAML::Node out(YAML::NodeType::Sequence);
    for (const auto& item : n) out.push_back(without_marks(item));
    return out;
  }
  if (n.IsMap()) {
    YAML::Node out(YAML::NodeType::Map);
    for (const auto& kv : n) out[kv.first.Scalar()] = without_marks(kv.second);
    return out;
  }
  return YAML::Node();
}

Status apply_override(YAML::Node* root, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return invalid_argument("--set " + assignment + ": expected key.path=value");
  }
  std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    return invalid_argument("--set " + assignment + ": value does not parse: " + e.msg);
  }
  if (!root->IsDefined() || root->IsNull()) *root = YAML::Node(YAML::NodeType::Map);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) {
    if (part.empty()) return invalid_argument("--set " + assignment + ": empty path component");
    parts.push_back(part);
  }
  // yaml-cpp nodes are reference-like: walk with a vector of handles.
  std::vector<YAML::Node> chain{*root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node cur = chain.back();
    YAML::Node next = cur[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
    } else if (!next.IsMap()) {
      return invalid_argument("--set " + assignment + ": '" + parts[i] + "' is not a map");
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = without_marks(parsed);
  return Status::ok();
}

Result<YAML::Node> load_yaml_text(const std::string& text, const std::string& name) {
  try {
    YAML::Node n = YAML::Load(text);
    if (!n.IsDefined() || n.IsNull()) return invalid_argument(name + ": document is empty");
    if (!n.IsMap()) return invalid_argument(name + ":" + std::to_string(n.Mark().line + 1) + ": top level must be a map");
    return n;
  } catch (const YAML::Exception& e) {
    return invalid_argument(name + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
}

Result<YAML::Node> load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(path + ": cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_yaml_text(ss.str(), path);
}

}  // namespace tern
