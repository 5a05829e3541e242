// Prometheus text exposition (format 0.0.4) for tern's daemons: a small writer that emits
// families with HELP/TYPE lines and escaped labels, and RpcMetrics, per-method call counts
// by status code plus latency histograms, fed by CallGuard (call_guard.h).
//
// RpcMetrics is thread-safe (one mutex); PrometheusWriter is single-threaded.
#pragma once

#include <array>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tern {

using Labels = std::vector<std::pair<std::string, std::string>>;

class PrometheusWriter {
 public:
  // Starts a family; call before its samples. type: gauge | counter | histogram.
  void family(const std::string& name, const std::string& type, const std::string& help);
  void sample(const std::string& name, const Labels& labels, double value);
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

// "a\"b" etc.: backslash, double quote and newline escaped as the format requires.
std::string escape_label_value(const std::string& v);

class RpcMetrics {
 public:
  static constexpr std::array<double, 14> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};
  // One finished call of `method` that took `seconds` and ended with gRPC status `code`.
  void observe(const std::string& method, int code, double seconds);
  // tern_rpc_requests_total{method,code} and tern_rpc_duration_seconds{method}.
  void write(PrometheusWriter* w) const;

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};  // non-cumulative
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;  // guards everything below
  std::map<std::string, Histogram> latency_;
  std::map<std::pair<std::string, int>, uint64_t> calls_;
};

// Name of a gRPC status code as Prometheus label ("OK", "UNAUTHENTICATED", ...).
const char* grpc_code_name(int code);

}  // namespace tern
