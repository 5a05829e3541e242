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
// is absent (so defaults live in the options struct) and record an error when it is invalid.
class YamlMap {
 public:
  YamlMap(YAML::Node node, std::string path, ErrorList* errors);

  bool has(const std::string& key) const;
  void get(const std::string& key, std::string* out);
  void get(const std::string& key, bool* out);
  void get(const std::string& key, int64_t* out, int64_t min, int64_t max);
  void get(const std::string& key, int* out, int min, int max);
  void get(const std::string& key, double* out, double min, double max);
  void get_enum(const std::string& key, std::string* out, std::initializer_list<const char*> allowed);
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
  YAML::Node lookup(const std::string& key);
  std::string field(const std::string& key) const;

  YAML::Node node_;
  std::string path_;
  ErrorList* errors_;
  std::set<std::string> used_;
};

// Parses "a.b.c=value" overrides (the --set flag) into the document, creating maps on the
// way. The value is parsed as a YAML scalar or flow node ("[1, 2]", "true", "0.1").
Status apply_override(YAML::Node* root, const std::string& assignment);

// Loads a YAML file, or text with a name for messages; parse errors carry file:line.
Result<YAML::Node> load_yaml_file(const std::string& path);
Result<YAML::Node> load_yaml_text(const std::string& text, const std::string& name);

}  // namespace tern
