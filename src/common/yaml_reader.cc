#include "common/yaml_reader.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/utf8.h"

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
  // A key given with a null value (`lr: ~`, `lr:`) is present: its getter reports the null.
  return valid() && node_[key].IsDefined();
}

YAML::Node YamlMap::lookup(const std::string& key, const std::string& what) {
  used_.insert(key);
  if (!valid()) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node n = node_[key];
  if (!n.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
  if (n.IsNull()) {
    // Never "absent, use the default": a null is a value the user wrote and did not mean.
    errors_->add(n.Mark().line, field(key),
                 "must be " + what + ", got null (give a value or remove the key)");
    return YAML::Node(YAML::NodeType::Undefined);
  }
  return n;
}

void YamlMap::require(const std::string& key) {
  used_.insert(key);
  if (!has(key)) errors_->add(node_.Mark().line, field(key), "is required");
}

void YamlMap::get(const std::string& key, std::string* out) {
  YAML::Node n = lookup(key, "a string");
  if (!n.IsDefined()) return;
  if (!n.IsScalar()) {
    errors_->add(n.Mark().line, field(key), "must be a string");
    return;
  }
  *out = n.Scalar();
}

void YamlMap::get(const std::string& key, bool* out) {
  YAML::Node n = lookup(key, "true or false");
  if (!n.IsDefined()) return;
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
    errors_->add(
        n.Mark().line, field(key),
        "must be true or false, got '" + (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
    return;
  }
  *out = v;
}

void YamlMap::get(const std::string& key, int64_t* out, int64_t min, int64_t max) {
  YAML::Node n = lookup(key, "an integer");
  if (!n.IsDefined()) return;
  long long v = 0;
  if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v)) {
    errors_->add(n.Mark().line, field(key),
                 "must be an integer, got '" + (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
    return;
  }
  if (v < min) {
    errors_->add(n.Mark().line, field(key),
                 "must be >= " + std::to_string(min) + ", got " + std::to_string(v));
    return;
  }
  if (v > max) {
    errors_->add(n.Mark().line, field(key),
                 "must be <= " + std::to_string(max) + ", got " + std::to_string(v));
    return;
  }
  *out = v;
}

void YamlMap::get_or_auto(const std::string& key, int64_t* out, bool* is_auto, int64_t min,
                          int64_t max) {
  if (has(key)) {
    const YAML::Node& map = node_;
    const YAML::Node n = map[key];
    if (n.IsScalar() && n.Scalar() == "auto") {
      used_.insert(key);
      *is_auto = true;
      return;
    }
    if (n.IsScalar() && !n.IsNull()) {
      long long v = 0;
      if (!YAML::convert<long long>::decode(n, v)) {
        used_.insert(key);
        errors_->add(n.Mark().line, field(key),
                     "must be an integer or auto, got '" + n.Scalar() + "'");
        return;
      }
    }
    *is_auto = false;
  }
  get(key, out, min, max);
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
  YAML::Node n = lookup(key, "a number");
  if (!n.IsDefined()) return;
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
    errors_->add(n.Mark().line, field(key),
                 "must be a number, got '" + (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
    return;
  }
  if (v < min) {
    errors_->add(n.Mark().line, field(key),
                 "must be >= " + format_double(min) + ", got " + format_double(v));
    return;
  }
  if (v > max) {
    errors_->add(n.Mark().line, field(key),
                 "must be <= " + format_double(max) + ", got " + format_double(v));
    return;
  }
  *out = v;
}

void YamlMap::get_enum(const std::string& key, std::string* out,
                       const std::vector<const char*>& allowed) {
  std::string all;
  for (const char* a : allowed) all += (all.empty() ? "" : ", ") + std::string(a);
  YAML::Node n = lookup(key, "one of [" + all + "]");
  if (!n.IsDefined()) return;
  for (const char* a : allowed) {
    if (n.IsScalar() && n.Scalar() == a) {
      *out = a;
      return;
    }
  }
  errors_->add(
      n.Mark().line, field(key),
      "must be one of [" + all + "], got '" + (n.IsScalar() ? n.Scalar() : "<non-scalar>") + "'");
}

void YamlMap::get_list(const std::string& key, std::vector<double>* out, double min, double max) {
  YAML::Node n = lookup(key, "a list of numbers");
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
                   "must be a number in [" + format_double(min) + ", " + format_double(max) + "]" +
                       (n[i].IsNull() ? ", got null" : ""));
      return;
    }
    vals.push_back(v);
  }
  *out = std::move(vals);
}

void YamlMap::get_list(const std::string& key, std::vector<std::string>* out) {
  YAML::Node n = lookup(key, "a list of strings");
  if (!n.IsDefined()) return;
  if (!n.IsSequence()) {
    errors_->add(n.Mark().line, field(key), "must be a list of strings");
    return;
  }
  std::vector<std::string> vals;
  for (size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar()) {
      errors_->add(n[i].Mark().line, field(key) + "[" + std::to_string(i) + "]",
                   n[i].IsNull() ? "must be a string, got null" : "must be a string");
      return;
    }
    vals.push_back(n[i].Scalar());
  }
  *out = std::move(vals);
}

YamlMap YamlMap::child(const std::string& key) {
  YAML::Node n = lookup(key, "a map");
  if (n.IsDefined() && !n.IsMap()) {
    errors_->add(n.Mark().line, field(key), "must be a map");
    return YamlMap(YAML::Node(YAML::NodeType::Undefined), field(key), errors_);
  }
  return YamlMap(n, field(key), errors_);
}

std::vector<YamlMap> YamlMap::child_list(const std::string& key) {
  YAML::Node n = lookup(key, "a list");
  std::vector<YamlMap> out;
  if (!n.IsDefined()) return out;
  if (!n.IsSequence()) {
    errors_->add(n.Mark().line, field(key), "must be a list");
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = field(key) + "[" + std::to_string(i) + "]";
    if (!n[i].IsMap()) {
      errors_->add(n[i].Mark().line, p,
                   n[i].IsNull() ? "must be a map, got null" : "must be a map");
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

namespace {

// One finding of the tree check. `line` is yaml-cpp's 0-based line, -1 for a node that has no
// position (it came from --set).
struct YamlIssue {
  int line;
  std::string path;
  std::string message;
};

std::string child_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string show_path(const std::string& path) { return path.empty() ? "the document" : path; }

// Walks a loaded tree once, following aliases (each expansion counted), and reports what tern's
// YAML does not allow. Recursion is bounded by kMaxYamlDepth: a deeper tree, a cycle or an
// expansion past the node or byte bounds stops the walk at once.
class TreeCheck {
 public:
  explicit TreeCheck(std::string root_path) : root_path_(std::move(root_path)) {}

  std::vector<YamlIssue> run(const YAML::Node& root) {
    visit(root, root_path_, 0);
    return std::move(issues_);
  }

 private:
  static constexpr size_t kMaxIssues = 20;

  void add(const YAML::Node& n, const std::string& path, const std::string& message) {
    if (stopped_) return;
    const int line = n.Mark().line;
    // A node reached through several aliases would repeat its finding at each.
    if (line >= 0 && !seen_.insert(std::to_string(line) + "\n" + message).second) return;
    if (issues_.size() == kMaxIssues) {
      issues_.push_back({line, path, "... (further errors not shown)"});
      stopped_ = true;
      return;
    }
    issues_.push_back({line, show_path(path), message});
  }

  void stop(const YAML::Node& n, const std::string& path, const std::string& message) {
    add(n, path, message);
    stopped_ = true;
  }

  // Counts one node (and its scalar bytes); false once a bound is passed.
  bool count(const YAML::Node& n, const std::string& path) {
    if (++nodes_ > kMaxYamlNodes) {
      stop(n, path,
           "takes the document past " + std::to_string(kMaxYamlNodes) +
               " nodes with its aliases expanded (an alias bomb?); tern files are far "
               "smaller");
      return false;
    }
    const std::string& tag = n.Tag();
    if (!tag.empty() && tag != "?" && tag != "!") {
      add(n, path, "has the tag '" + tag + "': YAML tags are not supported (remove it)");
    }
    if (!n.IsScalar()) return true;
    const std::string& v = n.Scalar();
    if (v.size() > kMaxYamlScalarBytes) {
      add(n, path,
          "is " + std::to_string(v.size()) + " bytes long; a value may have at most " +
              std::to_string(kMaxYamlScalarBytes));
    }
    bytes_ += static_cast<int64_t>(v.size());
    if (bytes_ > kMaxYamlExpandedBytes) {
      stop(n, path,
           "takes the document past " + std::to_string(kMaxYamlExpandedBytes) +
               " bytes of values with its aliases expanded (an alias bomb?)");
      return false;
    }
    size_t bad = first_invalid_utf8(v);
    if (bad != std::string::npos) {
      add(n, path, "is not valid UTF-8 (at byte " + std::to_string(bad) + " of the value)");
    }
    return true;
  }

  // True when `n` is the map or list being walked or one that contains it: an alias cycle.
  bool is_ancestor(const YAML::Node& n) const {
    if (n.IsScalar() || n.IsNull()) return false;
    for (const auto& a : ancestors_) {
      if (a.is(n)) return true;
    }
    return false;
  }

  void visit_child(const YAML::Node& n, const std::string& path, int depth) {
    if (is_ancestor(n)) {
      stop(n, path,
           "is an alias to a map or list that contains it (a cyclic alias such as "
           "&a [*a]); aliases must not refer to themselves");
      return;
    }
    visit(n, path, depth);
  }

  void visit(const YAML::Node& n, const std::string& path, int depth) {
    if (stopped_ || !count(n, path)) return;
    if (!n.IsSequence() && !n.IsMap()) return;
    if (depth >= kMaxYamlDepth) {
      stop(n, path,
           "nests maps and lists more than " + std::to_string(kMaxYamlDepth) +
               " deep (aliases expanded)");
      return;
    }
    ancestors_.push_back(n);
    if (n.IsSequence()) {
      size_t i = 0;
      for (auto it = n.begin(); it != n.end() && !stopped_; ++it, ++i) {
        visit_child(*it, path + "[" + std::to_string(i) + "]", depth + 1);
      }
    } else {
      std::map<std::string, int> first_line;  // key -> its line, for duplicates
      for (auto it = n.begin(); it != n.end() && !stopped_; ++it) {
        // A copy: `it->first` lives in a proxy that ends with this statement.
        const YAML::Node key = it->first;
        if (!count(key, path)) break;
        if (!key.IsScalar()) {
          add(key, path,
              std::string("has a key that is ") + (key.IsNull() ? "null" : "a map or list") +
                  ": keys must be strings");
          continue;
        }
        const std::string& k = key.Scalar();
        const std::string p = child_path(path, k);
        if (k == "<<" && key.Tag() == "?") {
          add(key, path,
              "uses a merge key (<<: *anchor): merge keys are not supported; write "
              "the fields out");
          continue;
        }
        auto [first, inserted] = first_line.emplace(k, key.Mark().line);
        if (!inserted) {
          add(key, p,
              "is given twice" +
                  (first->second >= 0 ? " (first at line " + std::to_string(first->second + 1) + ")"
                                      : std::string()) +
                  ": YAML would keep only one of them; remove one");
          continue;
        }
        visit_child(it->second, p, depth + 1);
      }
    }
    ancestors_.pop_back();
  }

  std::string root_path_;
  std::vector<YamlIssue> issues_;
  std::set<std::string> seen_;
  std::vector<YAML::Node> ancestors_;
  int64_t nodes_ = 0;
  int64_t bytes_ = 0;
  bool stopped_ = false;
};

// Records where the first document event starts; ignores everything else.
class DocumentStart : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (line < 0) line = mark.line;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  int line = -1;
};

// The 0-based line where a second document starts (-1 when unknown), or nullopt when `text`
// holds at most one. Not YAML::LoadAll: yaml-cpp 0.7's loops forever on a stray token such as
// "," (each "document" leaves it unconsumed); the parser is asked for two documents at most.
std::optional<int> second_document_line(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStart first, second;
  try {
    if (!parser.HandleNextDocument(first)) return std::nullopt;
    if (!parser.HandleNextDocument(second)) return std::nullopt;
  } catch (const YAML::Exception& e) {
    // The first document loaded (the caller did that), so the error is in what follows it.
    return e.mark.line;
  }
  return second.line;
}

// Parses `text` as exactly one YAML document after the size and UTF-8 checks; no documents at
// all gives a null node. `name` and line numbers are for messages.
Result<YAML::Node> parse_one_document(const std::string& text, const std::string& name) {
  if (text.size() > kMaxYamlBytes) {
    return invalid_argument(name + ": " + std::to_string(text.size()) +
                            " bytes; a tern YAML document may have at most " +
                            std::to_string(kMaxYamlBytes));
  }
  size_t bad = first_invalid_utf8(text);
  if (bad != std::string::npos) {
    return invalid_argument(name + ": not valid UTF-8 at " + describe_byte_position(text, bad) +
                            "; tern reads YAML as UTF-8 (save the file as UTF-8)");
  }
  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    return invalid_argument(name + ":" + std::to_string(e.mark.line + 1) +
                            ": nests maps and lists more than " + std::to_string(kMaxYamlDepth) +
                            " deep (far more: the YAML parser stopped at depth " +
                            std::to_string(e.depth()) + ")");
  } catch (const YAML::Exception& e) {
    return invalid_argument(name + ":" + std::to_string(e.mark.line + 1) +
                            ": YAML syntax error: " + e.msg);
  }
  if (auto line = second_document_line(text)) {
    return invalid_argument(name + (*line >= 0 ? ":" + std::to_string(*line + 1) : std::string()) +
                            ": a second YAML document starts here (after '---', or content the "
                            "first document cannot hold); a tern file holds exactly one document");
  }
  return doc;
}

// A deep copy without source positions, so errors about it point at the --set flag. Only
// called on a value that passed the tree check (acyclic, bounded depth).
YAML::Node without_marks(const YAML::Node& n) {
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

}  // namespace

Status check_yaml_tree(const YAML::Node& root, const std::string& name) {
  ErrorList errors(name);
  for (const auto& issue : TreeCheck("").run(root))
    errors.add(issue.line, issue.path, issue.message);
  return errors.to_status();
}

Status apply_override(YAML::Node* root, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return invalid_argument("--set " + assignment + ": expected key.path=value");
  }
  std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) {
    if (part.empty()) return invalid_argument("--set " + assignment + ": empty path component");
    parts.push_back(part);
  }
  if (path.back() == '.') return invalid_argument("--set " + assignment + ": empty path component");
  if (parts.size() > static_cast<size_t>(kMaxYamlDepth)) {
    return invalid_argument("--set " + path + ": more than " + std::to_string(kMaxYamlDepth) +
                            " path components");
  }
  if (first_invalid_utf8(path) != std::string::npos) {
    return invalid_argument("--set: the key path is not valid UTF-8");
  }
  auto parsed = parse_one_document(value, "--set " + path);
  if (!parsed.is_ok()) return parsed.status();
  {
    // The value alone, with paths under the overridden field; positions would be meaningless.
    std::string msg;
    for (const auto& issue : TreeCheck(path).run(*parsed)) {
      msg += (msg.empty() ? "" : "\n") + std::string("--set ") + path + "=...: " + issue.path +
             " " + issue.message;
    }
    if (!msg.empty()) return invalid_argument(msg);
  }
  if (!root->IsDefined() || root->IsNull()) *root = YAML::Node(YAML::NodeType::Map);
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
  chain.back()[parts.back()] = without_marks(*parsed);
  return Status::ok();
}

Status apply_overrides(YAML::Node* root, const std::vector<std::string>& overrides,
                       const std::string& name) {
  if (overrides.empty()) return Status::ok();
  if (overrides.size() > kMaxOverrides) {
    return invalid_argument(name + ": " + std::to_string(overrides.size()) +
                            " --set overrides; at most " + std::to_string(kMaxOverrides));
  }
  for (const auto& o : overrides) TERN_RETURN_IF_ERROR(apply_override(root, o));
  // An override can write into a map the file shares through an alias: check the whole again.
  return check_yaml_tree(*root, name);
}

Result<YAML::Node> load_yaml_text(const std::string& text, const std::string& name) {
  TERN_ASSIGN_OR_RETURN(YAML::Node n, parse_one_document(text, name));
  if (!n.IsDefined() || n.IsNull()) return invalid_argument(name + ": document is empty");
  if (!n.IsMap()) {
    return invalid_argument(name + ":" + std::to_string(n.Mark().line + 1) +
                            ": top level must be a map");
  }
  TERN_RETURN_IF_ERROR(check_yaml_tree(n, name));
  return n;
}

Result<YAML::Node> load_yaml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(path + ": cannot open file");
  // Read at most one byte past the bound: a huge file is refused without reading it whole.
  std::string text(kMaxYamlBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) return not_found(path + ": cannot read file");
  if (text.size() > kMaxYamlBytes) {
    return invalid_argument(path + ": larger than " + std::to_string(kMaxYamlBytes) +
                            " bytes; a tern YAML file may have at most that");
  }
  return load_yaml_text(text, path);
}

}  // namespace tern
