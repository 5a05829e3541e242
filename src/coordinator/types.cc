#include "coordinator/types.h"

#include <algorithm>

namespace tern {

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kPending:
      return "PENDING";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "?";
}

const char* rank_state_name(RankState s) {
  switch (s) {
    case RankState::kUnassigned:
      return "UNASSIGNED";
    case RankState::kAssigned:
      return "ASSIGNED";
    case RankState::kRunning:
      return "RUNNING";
    case RankState::kSucceeded:
      return "SUCCEEDED";
    case RankState::kFailed:
      return "FAILED";
    case RankState::kStopped:
      return "STOPPED";
  }
  return "?";
}

bool is_terminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

bool is_terminal(RankState s) {
  return s == RankState::kSucceeded || s == RankState::kFailed || s == RankState::kStopped;
}

std::vector<int> Job::members() const {
  std::vector<int> out;
  for (const auto& r : ranks) {
    if (r.member) out.push_back(r.rank);
  }
  return out;
}

int64_t Job::step() const {
  // The slowest rank among those that reported (a rank that has not reported yet says nothing).
  int64_t s = -1;
  for (const auto& r : ranks) {
    if (r.member && r.total_steps > 0) s = s < 0 ? r.step : std::min(s, r.step);
  }
  return std::max<int64_t>(s, 0);
}

int64_t Job::total_steps() const {
  int64_t t = 0;
  for (const auto& r : ranks) t = std::max(t, r.total_steps);
  return t;
}

double Job::loss() const {
  double sum = 0;
  int n = 0;
  for (const auto& r : ranks) {
    if (r.step > 0) {
      sum += r.loss;
      ++n;
    }
  }
  return n ? sum / n : 0;
}

double Job::samples_per_s() const {
  double s = 0;
  for (const auto& r : ranks) s += r.samples_per_s;
  return s;
}

double Job::eta_s(double now) const {
  if (state != JobState::kRunning || rate_step0 < 0) return -1;
  int64_t done = step() - rate_step0;
  double elapsed = now - rate_t0;
  if (done <= 0 || elapsed <= 0) return -1;
  return static_cast<double>(std::max<int64_t>(0, total_steps() - step())) * elapsed /
         static_cast<double>(done);
}

}  // namespace tern
