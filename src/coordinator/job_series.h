// JobSeriesStore: each job's history for the dashboard's charts and timeline, kept by the
// coordinator from the trainer events it applies (CoordinatorCore calls on_event(), see
// JobEventObserver), bounded, downsampled, and saved under <state_dir>/series/ so the charts
// keep their history across a coordinator restart.
//
// Per job it keeps
//   - progress points: {t, step, loss, samples_per_s, wait_pct}, one per progress event of the
//     group's first member (every rank reports every train.log_every steps), with the job-wide
//     aggregates of that moment (loss: mean over the ranks, samples/s: sum, wait %: mean of
//     each rank's wait_s / (wait_s + compute_s));
//   - eval points: {t, step, test_accuracy, test_loss} from the first member's evaluations;
//   - events: checkpoints committed, ranks that exited non-zero or reported an error (the
//     regroups are the job's own journaled timelines, not repeated here).
// Bounded: at most `max_points` points per series. When a series is full every other point is
// dropped and from then on only every 2nd (4th, ...) event becomes a point, so the whole run
// stays evenly sampled; the newest event is always the last point (a live chart never lags
// by the stride). At most `max_events` events per job (the oldest go first).
//
// Persistence: a writer thread saves each changed job's series as one JSON file
// (<state_dir>/series/<job id>.json, written to a temp file and renamed) at most every
// `flush_interval`; open() loads the files back (a damaged file is skipped with a warning,
// never fatal: the series is derived data). File I/O never happens under the core's mutex or
// this store's: the writer copies a job's series under the mutex and writes outside it.
//
// Thread-safe: one mutex guards the in-memory series. on_event() is called with the core's
// mutex held (lock order core -> store) and never calls back into the core.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/coordinator_core.h"

namespace tern {

struct SeriesPoint {
  double t = 0;  // unix seconds (the trainer's event time when plausible)
  int64_t step = 0;
  double values[4] = {0, 0, 0, 0};  // see the kind's field names (progress or eval)
};

// One bounded, evenly downsampled series (see the file comment).
class DownsampledSeries {
 public:
  explicit DownsampledSeries(size_t max_points = 512)
      : max_points_(max_points < 4 ? 4 : max_points) {}
  void add(const SeriesPoint& p);
  const std::vector<SeriesPoint>& points() const { return points_; }
  int64_t stride() const { return stride_; }
  int64_t seen() const { return seen_; }
  // Restores a saved state (points in order; stride a power of two >= 1).
  void restore(std::vector<SeriesPoint> points, int64_t stride, int64_t seen, bool provisional);
  bool provisional() const { return provisional_; }

 private:
  size_t max_points_;
  std::vector<SeriesPoint> points_;
  int64_t stride_ = 1;        // one point per `stride_` events
  int64_t seen_ = 0;          // events offered
  bool provisional_ = false;  // the last point is an off-stride event, replaced by the next
};

struct JobTimelineEvent {
  double t = 0;
  std::string kind;  // "checkpoint" | "exit" | "error"
  int rank = -1;     // -1: the job
  int64_t step = 0;  // checkpoint: the committed step
  int64_t generation = 0;
  int exit_code = 0;
  std::string message;  // at most 300 bytes
};

struct JobSeries {
  explicit JobSeries(size_t max_points) : progress(max_points), eval(max_points) {}
  DownsampledSeries progress;  // values: loss, samples_per_s, wait_pct, epoch
  DownsampledSeries eval;      // values: test_accuracy, test_loss
  std::vector<JobTimelineEvent> events;
  int64_t last_checkpoint = 0;
  uint64_t version = 0;  // bumped on every change (clients skip a redraw when unchanged)
};

struct JobSeriesOptions {
  std::string dir;  // <state_dir>/series; empty: in memory only
  size_t max_points = 512;
  size_t max_events = 200;
  std::chrono::milliseconds flush_interval{1000};
};

class JobSeriesStore : public JobEventObserver {
 public:
  // Creates `options.dir` and loads the series saved there; starts the writer thread.
  static Result<std::unique_ptr<JobSeriesStore>> open(const JobSeriesOptions& options);
  ~JobSeriesStore() override;  // writes what changed, then stops the writer
  JobSeriesStore(const JobSeriesStore&) = delete;
  JobSeriesStore& operator=(const JobSeriesStore&) = delete;

  void on_event(const Job& job, const TaskEvent& event, double now) override;

  // A copy of one job's series; false when there is none (no progress yet).
  bool get(const std::string& job_id, JobSeries* out) const;
  // Writes every changed series now (tests; the destructor).
  Status flush();
  // Files skipped at open() because they were damaged.
  int damaged_files() const { return damaged_files_; }

 private:
  explicit JobSeriesStore(const JobSeriesOptions& options) : options_(options) {}
  Status load();
  void writer_loop();
  Status write_one(const std::string& job_id, const JobSeries& series) const;

  const JobSeriesOptions options_;
  mutable std::mutex mu_;  // guards series_, dirty_, stop_
  std::condition_variable wake_;
  std::map<std::string, JobSeries> series_;
  std::set<std::string> dirty_;
  bool stop_ = false;
  std::mutex write_mu_;  // one writer of the files at a time (writer thread, flush())
  int damaged_files_ = 0;
  std::thread writer_;
};

}  // namespace tern
