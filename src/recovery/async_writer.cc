#include "recovery/async_writer.h"

#include <spdlog/spdlog.h>

#include "common/clock.h"

namespace tern {

AsyncCheckpointWriter::AsyncCheckpointWriter(CheckpointStore store, int64_t rank)
    : AsyncCheckpointWriter(std::move(store), rank, Options()) {}

AsyncCheckpointWriter::AsyncCheckpointWriter(CheckpointStore store, int64_t rank, Options options)
    : store_(std::move(store)), rank_(rank), options_(options), thread_([this] { run(); }) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (!error_.is_ok()) {
    spdlog::error("checkpoint writer for {} (rank {}) stopped with an uncollected error: {}",
                  store_.dir(), rank_, error_.to_string());
  }
}

void AsyncCheckpointWriter::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued is done
    Job job = std::move(queue_.front());
    queue_.pop_front();
    running_job_ = true;
    lock.unlock();
    Status st = job();
    lock.lock();
    running_job_ = false;
    if (!st.is_ok()) {
      // Keep every error: the first names the cause, later ones often follow from it.
      error_ = error_.is_ok()
                   ? st
                   : Status(error_.code(), error_.message() + "; then " + st.to_string());
    }
    cv_.notify_all();
  }
}

void AsyncCheckpointWriter::enqueue(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
}

bool AsyncCheckpointWriter::wait_idle(std::unique_lock<std::mutex>& lock,
                                      std::chrono::milliseconds timeout) {
  return cv_.wait_for(lock, timeout, [&] { return queue_.empty() && !running_job_; });
}

Status AsyncCheckpointWriter::take_error_locked() {
  Status st = error_;
  error_ = Status::ok();
  return st;
}

at::Tensor AsyncCheckpointWriter::host_copy(const std::string& key, const at::Tensor& src) {
  at::Tensor& buf = buffers_[key];
  if (!buf.defined() || buf.sizes() != src.sizes() || buf.scalar_type() != src.scalar_type()) {
    buf = at::empty(src.sizes(), at::TensorOptions().dtype(src.scalar_type()).device(at::kCPU));
  }
  buf.copy_(src.detach());
  return buf;
}

Status AsyncCheckpointWriter::snapshot(const CheckpointMeta& meta, const NamedTensors& per_rank,
                                       const NamedTensors* replicated) {
  auto t0 = std::chrono::steady_clock::now();
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!wait_idle(lock, options_.wait_timeout)) {
      return deadline_exceeded(store_.dir() + ": checkpoint of step " + std::to_string(meta.step) +
                               " not taken: the previous write is still running after " +
                               std::to_string(options_.wait_timeout.count()) + " ms");
    }
    TERN_RETURN_IF_ERROR(take_error_locked());
  }
  double wait_s = seconds_since(t0);
  auto t1 = std::chrono::steady_clock::now();

  // Host copies, validated here so a bad tensor fails on the caller's thread.
  auto copy_all = [&](const NamedTensors& in, const std::string& prefix,
                      NamedTensors* out) -> Status {
    for (const auto& [name, t] : in) {
      if (!t.defined()) {
        return invalid_argument(store_.dir() + ": checkpoint tensor '" + name + "' is undefined");
      }
      auto dtype = dtype_from_scalar_type(t.scalar_type());
      if (!dtype.is_ok()) return dtype.status().with_context("checkpoint tensor '" + name + "'");
      out->emplace_back(name, host_copy(prefix + name, t));
    }
    return Status::ok();
  };
  NamedTensors mine, shared;
  TERN_RETURN_IF_ERROR(copy_all(per_rank, "r/", &mine));
  bool with_replicated = replicated != nullptr;
  if (with_replicated) TERN_RETURN_IF_ERROR(copy_all(*replicated, "s/", &shared));
  double snapshot_s = seconds_since(t1);

  CheckpointMeta rank_meta = meta;
  rank_meta.rank = rank_;
  CheckpointMeta shared_meta = meta;
  shared_meta.rank = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    totals_.snapshots += 1;
    totals_.snapshot_s += snapshot_s;
    totals_.wait_s += wait_s;
  }
  enqueue([this, rank_meta, shared_meta, mine = std::move(mine), shared = std::move(shared),
           with_replicated, snapshot_s, wait_s]() -> Status {
    auto t = std::chrono::steady_clock::now();
    int64_t step = rank_meta.step;
    TERN_RETURN_IF_ERROR(store_.prepare_step(step));
    WrittenStep w;
    w.step = step;
    auto write = [&](const std::string& file, const CheckpointMeta& m,
                     const NamedTensors& ts) -> Status {
      TERN_ASSIGN_OR_RETURN(EncodeResult r,
                            write_checkpoint_file(store_.file_path(step, file), m, ts));
      w.files.push_back({file, r.bytes, r.digest});
      w.stats.bytes += r.bytes;
      return Status::ok();
    };
    TERN_RETURN_IF_ERROR(write(rank_file_name(rank_), rank_meta, mine));
    if (with_replicated) TERN_RETURN_IF_ERROR(write(kReplicatedFile, shared_meta, shared));
    w.stats.step = step;
    w.stats.snapshot_s = snapshot_s;
    w.stats.wait_s = wait_s;
    w.stats.write_s = seconds_since(t);
    std::lock_guard<std::mutex> lock(mu_);
    totals_.writes += 1;
    totals_.write_s += w.stats.write_s;
    totals_.bytes += w.stats.bytes;
    last_written_ = std::move(w);
    return Status::ok();
  });
  return Status::ok();
}

Status AsyncCheckpointWriter::commit(Manifest manifest, int64_t keep) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    TERN_RETURN_IF_ERROR(take_error_locked());
  }
  enqueue([this, manifest = std::move(manifest), keep]() -> Status {
    auto t = std::chrono::steady_clock::now();
    TERN_RETURN_IF_ERROR(store_.commit(manifest));
    auto deleted = store_.apply_retention(keep);
    if (!deleted.is_ok()) return deleted.status();
    if (!deleted->empty()) {
      spdlog::info("checkpoint step {} committed; retention (keep {}) deleted {} older step(s)",
                   manifest.step, keep, deleted->size());
    }
    std::lock_guard<std::mutex> lock(mu_);
    totals_.commits += 1;
    totals_.commit_s += seconds_since(t);
    return Status::ok();
  });
  return Status::ok();
}

Status AsyncCheckpointWriter::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!wait_idle(lock, timeout)) {
    return deadline_exceeded(store_.dir() + ": checkpoint writes still running after " +
                             std::to_string(timeout.count()) + " ms");
  }
  return take_error_locked();
}

std::optional<WrittenStep> AsyncCheckpointWriter::last_written() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_written_;
}

CheckpointTotals AsyncCheckpointWriter::totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return totals_;
}

}  // namespace tern
