// ProgressLine: the live progress display of a training job, shared by `tern run` and
// `tern submit --watch`. On a TTY it redraws one line (bar, step/total, epoch, loss,
// samples/s, ETA); otherwise it prints a plain line at most every few seconds and at epoch
// boundaries, so logs stay readable. Single-threaded.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

namespace tern {

class ProgressLine {
 public:
  ProgressLine(std::ostream& out, bool tty, double plain_interval_s = 5.0);
  // A progress event (trainer_protocol.h fields: step, total_steps, epoch, loss, samples_per_s).
  void update(const nlohmann::json& progress);
  // An eval event: remembered and shown with the next line.
  void note_eval(const nlohmann::json& eval);
  // Ends the live line (newline on a TTY).
  void finish();
  // The text of one line for these values (exposed for tests).
  static std::string render(int64_t step, int64_t total, double epoch, double loss,
                            double samples_per_s, double eta_s, double accuracy, int width);

 private:
  std::ostream& out_;
  bool tty_;
  double plain_interval_s_;
  bool drawn_ = false;
  double accuracy_ = -1;
  int64_t last_epoch_ = -1;
  int64_t start_step_ = -1;
  std::chrono::steady_clock::time_point start_time_;
  std::chrono::steady_clock::time_point last_plain_;
};

// "1.23 GB", "456.0 MB", "12.0 KB", "17 B".
std::string format_bytes(double bytes);
// "1:02:03" or "4:05".
std::string format_duration(double seconds);

}  // namespace tern
