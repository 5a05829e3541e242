// YamlReader: field-by-field validation of a YAML document with errors that name the file,
// the line and the dotted field path ("job.yaml:12: sync.delay must be >= 0, got -3").
// Every key a reader does not consume is reported as unknown: typos never pass silently.
//
// Not thread-safe; one reader per document being validated.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace tern {

// Collects every validation error of one document, so a user sees them all at once.
class ErrorList {
 public:
  explicit ErrorList(std::string file) : file_(std::move(file)) {}
  // `mark_line` is yaml-cpp's 0-based line, or -1 for a value that came from an override.
  void add(int mark_line, const std::string& path, const std::string& message);
  bool empty() const { return errors_.empty(); }
  const std::vector<std::string>& errors() const { return errors_; }
  // INVALID_ARGUMENT with one error per line, or OK.
  Status to_status() const;
  const std::string& file() const { return file_; }

 private:
  std::string file_;
  std::vector<std::string> errors_;
};

// A view of one YAML map at a dotted path. Getters leave the output untouched when the key
// is absent (so defaults live in the options struct) and record an error when it is invalid,
// including when it is null (`lr: ~`, `lr:`, `--set train.lr=`): a null never means "default".
class YamlMap {
 public:
  YamlMap(YAML::Node node, std::string path, ErrorList* errors);

  // The key is present (even with a null value, which its getter then reports).
  bool has(const std::string& key) const;
  void get(const std::string& key, std::string* out);
  void get(const std::string& key, bool* out);
  void get(const std::string& key, int64_t* out, int64_t min, int64_t max);
  void get(const std::string& key, int* out, int min, int max);
  // An integer in [min, max] or the word `auto` (then *is_auto is set and *out kept).
  void get_or_auto(const std::string& key, int64_t* out, bool* is_auto, int64_t min, int64_t max);
  void get(const std::string& key, double* out, double min, double max);
  void get_enum(const std::string& key, std::string* out, const std::vector<const char*>& allowed);
  void get_list(const std::string& key, std::vector<double>* out, double min, double max);
  void get_list(const std::string& key, std::vector<std::string>* out);
  // A required key: records "missing" when absent.
  void require(const std::string& key);
  // A nested map; an invalid (absent) map when the key is missing or not a map.
  YamlMap child(const std::string& key);
  // The items of a sequence of maps under `key`.
  std::vector<YamlMap> child_list(const std::string& key);
  // Records every key that no getter consumed. Call once, after all getters.
  void finish();

  bool valid() const { return node_.IsDefined() && node_.IsMap(); }
  const std::string& path() const { return path_; }
  int line() const { return node_.Mark().line; }
  void error(const std::string& key, const std::string& message);

 private:
  // The value under `key`, marking it used; Undefined when absent, or when null (recorded as
  // "must be <what>, got null").
  YAML::Node lookup(const std::string& key, const std::string& what);
  std::string field(const std::string& key) const;

  YAML::Node node_;
  std::string path_;
  ErrorList* errors_;
  std::set<std::string> used_;
};

// Bounds on every YAML text tern reads: job specs (files, SubmitJob's text, the daemon's copy),
// --set values and cluster files. Anything beyond them is refused with file:line before any
// code walks the document, so no input can make tern recurse or allocate without bound.
//
// What tern's YAML is: one UTF-8 document; keys are plain strings, each once per map; no tags
// (`!!binary`, `!foo`); no merge keys (`<<: *base`, not supported by yaml-cpp 0.7: write the
// fields out); no null values (`lr: ~`, `lr:`); anchors and aliases are allowed but not
// cyclic, and the document with every alias expanded stays within the bounds below.
constexpr size_t kMaxYamlBytes = 4 << 20;            // one document's text
constexpr size_t kMaxYamlScalarBytes = 64 << 10;     // one key or value
constexpr int kMaxYamlDepth = 64;                    // nested maps/lists (with aliases expanded)
constexpr int64_t kMaxYamlNodes = 100000;            // nodes, counting each alias expansion
constexpr int64_t kMaxYamlExpandedBytes = 16 << 20;  // scalar bytes, counting each expansion
constexpr size_t kMaxOverrides = 1000;               // --set assignments per load

// Parses "a.b.c=value" overrides (the --set flag) into the document, creating maps on the
// way. The value is parsed as a YAML scalar or flow node ("[1, 2]", "true", "0.1") under the
// same rules as a file; an empty value is a null, which the field's getter refuses.
Status apply_override(YAML::Node* root, const std::string& assignment);
// Applies every override in order, then checks the resulting tree as a whole (`name` is the
// file the document came from, for messages).
Status apply_overrides(YAML::Node* root, const std::vector<std::string>& overrides,
                       const std::string& name);

// Checks a loaded tree against the rules and bounds above: cycles, depth, node and byte
// counts with aliases expanded, tags, merge keys, duplicate and non-string keys, UTF-8.
// Visits each node (each alias expansion) at most once up to kMaxYamlNodes; recursion is
// bounded by kMaxYamlDepth. Errors name `name`:line and the dotted path.
Status check_yaml_tree(const YAML::Node& root, const std::string& name);

// Loads a YAML file, or text with a name for messages; parse errors carry file:line. The text
// must be valid UTF-8 (the first bad byte is named), hold exactly one document whose top level
// is a map, and pass check_yaml_tree.
Result<YAML::Node> load_yaml_file(const std::string& path);
Result<YAML::Node> load_yaml_text(const std::string& text, const std::string& name);

}  // namespace tern
