#include "rpc/metrics.h"

#include <cmath>
#include <iomanip>
#include <limits>

namespace tern {
namespace {

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  std::ostringstream os;
  os << std::setprecision(std::numeric_limits<double>::max_digits10) << v;
  return os.str();
}

}  // namespace

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void PrometheusWriter::family(const std::string& name, const std::string& type,
                              const std::string& help) {
  out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

void PrometheusWriter::sample(const std::string& name, const Labels& labels, double value) {
  out_ << name;
  if (!labels.empty()) {
    out_ << "{";
    for (size_t i = 0; i < labels.size(); ++i) {
      out_ << (i ? "," : "") << labels[i].first << "=\"" << escape_label_value(labels[i].second)
           << "\"";
    }
    out_ << "}";
  }
  out_ << " " << format_value(value) << "\n";
}

const char* grpc_code_name(int code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

void RpcMetrics::observe(const std::string& method, int code, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++calls_[{method, code}];
  Histogram& h = latency_[method];
  ++h.count;
  h.sum += seconds;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++h.buckets[i];
      break;
    }
  }
}

void RpcMetrics::write(PrometheusWriter* w) const {
  std::lock_guard<std::mutex> lock(mu_);
  w->family("tern_rpc_requests_total", "counter",
            "gRPC calls handled, by method and status code (refusals included).");
  for (const auto& [key, n] : calls_)
    w->sample("tern_rpc_requests_total",
              {{"method", key.first}, {"code", grpc_code_name(key.second)}},
              static_cast<double>(n));
  w->family("tern_rpc_duration_seconds", "histogram",
            "Time from a unary call's arrival at its handler to its reply, by method.");
  for (const auto& [method, h] : latency_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += h.buckets[i];
      std::ostringstream le;
      le << kBuckets[i];
      w->sample("tern_rpc_duration_seconds_bucket", {{"method", method}, {"le", le.str()}},
                static_cast<double>(cumulative));
    }
    w->sample("tern_rpc_duration_seconds_bucket", {{"method", method}, {"le", "+Inf"}},
              static_cast<double>(h.count));
    w->sample("tern_rpc_duration_seconds_sum", {{"method", method}}, h.sum);
    w->sample("tern_rpc_duration_seconds_count", {{"method", method}},
              static_cast<double>(h.count));
  }
}

}  // namespace tern
