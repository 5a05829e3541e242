// Reading fields of JSON that another process wrote (trainer events, summaries) without
// trusting their types: nlohmann's j.value(key, default) throws when the key holds another
// type, and a trainer writes a non-finite number as null (JSON has no NaN). These return the
// default for a missing key, a null, another type or a non-finite number; never throw.
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace tern {

inline double json_number(const nlohmann::json& j, const char* key, double fallback = 0.0) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return fallback;
  double v = it->get<double>();
  return std::isfinite(v) ? v : fallback;
}

inline int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback = 0) {
  double v = json_number(j, key, static_cast<double>(fallback));
  if (v >= 9.2e18 || v <= -9.2e18) return fallback;
  return static_cast<int64_t>(v);
}

inline std::string json_string(const nlohmann::json& j, const char* key,
                               const std::string& fallback = "") {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

}  // namespace tern
