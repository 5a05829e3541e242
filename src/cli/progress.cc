#include "cli/progress.h"

#include <cmath>
#include <cstdio>

#include "common/json_fields.h"

namespace tern {

ProgressLine::ProgressLine(std::ostream& out, bool tty, double plain_interval_s)
    : out_(out),
      tty_(tty),
      plain_interval_s_(plain_interval_s),
      last_plain_(std::chrono::steady_clock::now() - std::chrono::hours(1)) {}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

std::string ProgressLine::render(int64_t step, int64_t total, double epoch, double loss,
                                 double samples_per_s, double eta_s, double accuracy, int width) {
  std::string bar;
  if (width > 0) {
    double frac = total > 0 ? std::min(1.0, static_cast<double>(step) / total) : 0;
    int filled = static_cast<int>(frac * width);
    bar = "[" + std::string(filled, '=') + (filled < width ? ">" : "") +
          std::string(std::max(0, width - filled - 1), ' ') + "] ";
  }
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%sstep %lld/%lld  epoch %.2f  loss %.4f  %.0f samples/s  ETA %s",
                bar.c_str(), static_cast<long long>(step), static_cast<long long>(total), epoch,
                loss, samples_per_s, format_duration(eta_s).c_str());
  std::string line = buf;
  if (accuracy >= 0) {
    std::snprintf(buf, sizeof(buf), "  acc %.4f", accuracy);
    line += buf;
  }
  return line;
}

void ProgressLine::update(const nlohmann::json& p) {
  int64_t step = json_int(p, "step");
  int64_t total = json_int(p, "total_steps");
  double epoch = json_number(p, "epoch");
  double sps = json_number(p, "samples_per_s");
  // ETA from the step rate observed since the first update.
  double eta = -1;
  auto now = std::chrono::steady_clock::now();
  if (start_step_ < 0) {
    start_step_ = step;
    start_time_ = now;
  } else if (step > start_step_) {
    double dt = std::chrono::duration<double>(now - start_time_).count();
    eta = dt / static_cast<double>(step - start_step_) * static_cast<double>(total - step);
  }
  std::string line = render(step, total, epoch, json_number(p, "loss", std::nan("")), sps, eta,
                            accuracy_, tty_ ? 24 : 0);
  if (tty_) {
    out_ << "\r\033[K" << line << std::flush;
    drawn_ = true;
    return;
  }
  int64_t ep = static_cast<int64_t>(std::floor(epoch + 1e-9));
  double since = std::chrono::duration<double>(now - last_plain_).count();
  if (since >= plain_interval_s_ || ep != last_epoch_ || step == total) {
    out_ << line << "\n" << std::flush;
    last_plain_ = now;
    last_epoch_ = ep;
  }
}

void ProgressLine::note_eval(const nlohmann::json& e) {
  accuracy_ = json_number(e, "test_accuracy", -1.0);
}

void ProgressLine::finish() {
  if (tty_ && drawn_) out_ << "\n" << std::flush;
  drawn_ = false;
}

}  // namespace tern
