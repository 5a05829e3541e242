#include "trainer/loop/checkpointer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "common/clock.h"
#include "common/trainer_codec.h"
#include "recovery/commit.h"

namespace tern {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Background work is bounded by the disk, not by peers: generous, but never forever.
constexpr std::chrono::minutes kFlushTimeout{10};

// Every rank's `mine`, in rank order (one all-gather of one int64 per rank).
Result<std::vector<int64_t>> gather_values(Communicator& comm, int64_t mine,
                                           const at::Device& device) {
  at::Tensor local = at::full({1}, mine, at::kLong).to(device);
  std::vector<at::Tensor> all;
  for (int r = 0; r < comm.size(); ++r) all.push_back(at::zeros({1}, at::kLong).to(device));
  TERN_RETURN_IF_ERROR(all_gather_sync(comm, all, local));
  std::vector<int64_t> out;
  for (const auto& t : all) out.push_back(t.cpu().item<int64_t>());
  return out;
}

std::string ranks_where(const std::vector<int64_t>& values,
                        const std::function<bool(int64_t)>& pred) {
  std::string out;
  for (size_t r = 0; r < values.size(); ++r) {
    if (pred(values[r])) out += (out.empty() ? "" : ", ") + std::to_string(r);
  }
  return out;
}

}  // namespace

Checkpointer::Checkpointer(CheckpointerOptions options, EventSink* sink)
    : options_(std::move(options)),
      sink_(sink),
      writer_(
          std::make_unique<AsyncCheckpointWriter>(CheckpointStore(options_.dir), options_.rank)) {}

Checkpointer::~Checkpointer() = default;

void Checkpointer::save(const CheckpointMeta& meta, const NamedTensors& per_rank,
                        const NamedTensors* replicated, double blocking_s) {
  auto t0 = SteadyClock::now();
  Status s = writer_->snapshot(meta, per_rank, replicated);
  double snapshot_s = seconds_since(t0);
  blocking_s_ += blocking_s + snapshot_s;
  // Pending on every rank alike, even when this rank's snapshot failed: the commit's
  // collective must run everywhere, and it refuses the step for all.
  pending_ = meta.step;
  if (!s.is_ok()) {
    ++failures_;
    spdlog::warn("checkpoint step {} not taken on this rank: {}", meta.step, s.to_string());
    sink_->emit(to_json(CheckpointFailedEvent{meta.step, s.to_string()}));
    return;
  }
  spdlog::info(
      "checkpoint step {}: snapshot to host memory in {:.4f} s (+{:.4f} s drain), writing to {} in "
      "the background",
      meta.step, snapshot_s, blocking_s, options_.dir);
  sink_->emit(to_json(CheckpointEvent{meta.step, snapshot_s, blocking_s, blocking_s_}));
}

Status Checkpointer::commit_due(Communicator& comm, int64_t steps_done, int64_t generation,
                                bool force, const at::Device& device) {
  if (!pending_) return Status::ok();
  const int64_t lag =
      std::clamp<int64_t>(options_.commit_lag, 1, std::max<int64_t>(1, options_.every));
  if (!force && steps_done - *pending_ < lag) return Status::ok();
  const int64_t step = *pending_;
  pending_.reset();
  auto t0 = SteadyClock::now();
  std::optional<WrittenStep> mine;
  Status written = writer_->flush(kFlushTimeout);
  if (written.is_ok()) {
    mine = writer_->last_written();
  } else {
    spdlog::warn("checkpoint step {}: this rank's write failed: {}", step, written.to_string());
  }
  auto manifest = gather_manifest(comm, mine, step, generation, options_.job_id, device);
  blocking_s_ += seconds_since(t0);
  if (!manifest.is_ok()) {
    if (manifest.status().code() != StatusCode::kAborted) {
      return manifest.status().with_context("gathering the manifest of checkpoint step " +
                                            std::to_string(step));
    }
    // Some rank did not write the step: the same verdict on every rank, training goes on.
    ++failures_;
    spdlog::warn("{}", manifest.status().message());
    sink_->emit(to_json(CheckpointFailedEvent{step, manifest.status().message()}));
    return Status::ok();
  }
  if (options_.rank == 0) {
    // The MANIFEST goes behind the writes in the writer's queue; its own error (if any)
    // surfaces at the next snapshot, commit or flush.
    if (Status c = writer_->commit(*manifest, options_.keep); !c.is_ok()) {
      ++failures_;
      spdlog::warn("checkpoint step {} not committed: {}", step, c.to_string());
      sink_->emit(to_json(CheckpointFailedEvent{step, c.to_string()}));
      return Status::ok();
    }
  }
  ++committed_;
  const CheckpointWriteStats stats = mine ? mine->stats : CheckpointWriteStats{};
  spdlog::info(
      "checkpoint step {} complete on all {} ranks: {} files; this rank wrote {} bytes in {:.4f} s "
      "in the background{}",
      step, comm.size(), manifest->files.size(), stats.bytes, stats.write_s,
      options_.rank == 0 ? "; MANIFEST queued" : "");
  CheckpointCommittedEvent done;
  done.step = step;
  done.write_s = stats.write_s;
  done.bytes = static_cast<int64_t>(stats.bytes);
  done.checkpoints = committed_;
  done.checkpoint_s = blocking_s_;
  sink_->emit(to_json(done));
  return Status::ok();
}

void Checkpointer::abandon_pending() {
  if (pending_)
    spdlog::warn("checkpoint step {} abandoned (not committed): the group changed", *pending_);
  pending_.reset();
}

Status Checkpointer::flush() {
  Status s = writer_->flush(kFlushTimeout);
  if (!s.is_ok()) ++failures_;
  return s;
}

nlohmann::json Checkpointer::summary() const {
  CheckpointTotals t = writer_->totals();
  return {
      {"checkpoints", committed_},
      {"checkpoint_s", blocking_s_},
      {"checkpoint_snapshot_s", t.snapshot_s},
      {"checkpoint_background_s", t.write_s + t.commit_s},
      {"checkpoint_bytes", t.bytes},
      {"checkpoint_failures", failures_},
      {"checkpoint_dir", options_.dir},
  };
}

namespace {

// This rank's part of the newest step <= lo.max_step it can load: replicated.ckpt plus its own
// rank file; with `any_world`, a step written by another number of ranks counts with its
// replicated.ckpt alone.
Result<LoadedCheckpoint> load_mine(const CheckpointStore& store, int rank, int world,
                                   const LoadOptions& lo, bool any_world) {
  if (!any_world) return load_latest_checkpoint(store, lo);
  LoadOptions rep = lo;
  rep.ranks.clear();
  std::vector<std::string> skipped;  // newer steps passed over, as load_latest_checkpoint says
  for (;;) {
    TERN_ASSIGN_OR_RETURN(LoadedCheckpoint c, load_latest_checkpoint(store, rep));
    skipped.insert(skipped.end(), c.skipped.begin(), c.skipped.end());
    c.skipped = skipped;
    if (c.manifest.world != world) return c;
    LoadOptions own;
    own.replicated = false;
    own.ranks = {rank};
    auto file = load_checkpoint_step(store, c.step, own);
    if (file.is_ok()) {
      c.ranks = std::move(file->ranks);
      return c;
    }
    spdlog::warn("checkpoint step {} skipped: {}", c.step, file.status().message());
    skipped.push_back(file.status().message());
    rep.max_step = c.step - 1;
  }
}

}  // namespace

Result<LoadedCheckpoint> load_agreed_checkpoint(Communicator& comm, const std::string& dir,
                                                const at::Device& device, bool any_world,
                                                int64_t max_step) {
  CheckpointStore store(dir);
  const int rank = comm.rank();
  LoadOptions lo;
  lo.replicated = true;
  lo.ranks = {rank};
  lo.max_step = max_step;
  std::vector<std::string> skipped;
  for (;;) {
    Result<LoadedCheckpoint> mine = load_mine(store, rank, comm.size(), lo, any_world);
    const int64_t proposal = mine.is_ok() ? mine->step : -1;
    if (mine.is_ok()) skipped.insert(skipped.end(), mine->skipped.begin(), mine->skipped.end());
    TERN_ASSIGN_OR_RETURN(std::vector<int64_t> proposals, gather_values(comm, proposal, device));
    const int64_t agreed = *std::min_element(proposals.begin(), proposals.end());
    if (agreed < 0) {
      if (!mine.is_ok()) return mine.status();
      return not_found(dir + ": no checkpoint every rank can load: rank(s) " +
                       ranks_where(proposals, [](int64_t v) { return v < 0; }) +
                       " found none at or before step " + std::to_string(proposal) +
                       " (see their logs)");
    }
    if (proposal != agreed) {
      std::string msg = store.step_dir(proposal) + ": rank(s) " +
                        ranks_where(proposals, [&](int64_t v) { return v < proposal; }) +
                        " cannot load it (see their logs)";
      spdlog::warn("checkpoint step {} skipped: {}", proposal, msg);
      skipped.push_back(msg);
      if (!any_world) {
        mine = load_checkpoint_step(store, agreed, lo);
      } else {
        LoadOptions at_agreed = lo;
        at_agreed.max_step = agreed;
        mine = load_mine(store, rank, comm.size(), at_agreed, any_world);
        if (mine.is_ok() && mine->step != agreed) {
          mine = not_found(store.step_dir(agreed) + ": cannot be loaded by rank " +
                           std::to_string(rank) + " (see its log)");
        }
      }
      if (!mine.is_ok())
        spdlog::warn("checkpoint step {} skipped: {}", agreed, mine.status().message());
    }
    TERN_ASSIGN_OR_RETURN(std::vector<int64_t> loaded,
                          gather_values(comm, mine.is_ok() ? 1 : 0, device));
    std::string failed = ranks_where(loaded, [](int64_t v) { return v == 0; });
    if (failed.empty()) {
      if (mine->manifest.world != comm.size() && !any_world) {
        return failed_precondition(store.step_dir(agreed) + " was written by " +
                                   std::to_string(mine->manifest.world) + " ranks; this job has " +
                                   std::to_string(comm.size()) +
                                   " (resume needs the same number of workers)");
      }
      mine->skipped = std::move(skipped);
      return mine;
    }
    // Some rank cannot load the agreed step after all: every rank moves to an older one.
    std::string msg = store.step_dir(agreed) + ": rank(s) " + failed + " cannot load it";
    if (!mine.is_ok()) msg += ": " + mine.status().message();
    skipped.push_back(msg);
    lo.max_step = agreed - 1;
  }
}

}  // namespace tern
