// CoordinatorCore: placement (the strict-FIFO gang scheduler over the workers' free slots) and
// elastic regroup (replacements for lost ranks, shrinking and growing elastic groups).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "coordinator/coordinator_core.h"
#include "coordinator/port_leases.h"
#include "coordinator/scheduler.h"

namespace tern {
namespace {

// `offers` with no free slot on workers that reported fewer cores than `threads` (a worker
// that reported none is not checked).
std::vector<SlotOffer> offers_with_cores(std::vector<SlotOffer> offers,
                                         const std::vector<Worker*>& workers, int64_t threads) {
  for (size_t i = 0; i < offers.size(); ++i) {
    if (workers[i]->cores > 0 && workers[i]->cores < threads) offers[i].free_slots = 0;
  }
  return offers;
}

// Why `job` can run on none of the READY `workers` because of train.threads ("" when one of
// them has the cores, reported none, or there is no worker to judge by).
std::string threads_never_fit(const Job& job, const std::vector<Worker*>& workers) {
  if (workers.empty()) return "";
  const Worker* largest = nullptr;
  for (const Worker* w : workers) {
    if (w->cores == 0 || w->cores >= job.threads) return "";
    if (!largest || w->cores > largest->cores) largest = w;
  }
  return "train.threads " + std::to_string(job.threads) +
         " is more than the cores of every worker (the largest, " + largest->id + ", has " +
         std::to_string(largest->cores) +
         "): a trainer would starve its worker; lower train.threads";
}

constexpr size_t kMaxTimelines = 32;

}  // namespace

void CoordinatorCore::order_by_network_locked(const Job& job,
                                              const std::vector<Worker*>& offer_workers,
                                              std::vector<size_t>* placed) const {
  std::vector<std::string> rank_workers;
  for (size_t o : *placed) rank_workers.push_back(offer_workers[o]->id);
  std::vector<size_t> perm = ring_permutation(rank_workers, network_, clock_->unix_seconds());
  bool moved = false;
  for (size_t k = 0; k < perm.size(); ++k) moved = moved || perm[k] != k;
  if (!moved) return;
  std::vector<size_t> ordered;
  for (size_t k : perm) ordered.push_back((*placed)[k]);
  *placed = std::move(ordered);
  auto cost = network_.cost_matrix(rank_workers, clock_->unix_seconds());
  std::vector<int> before(perm.size()), after;
  for (size_t k = 0; k < perm.size(); ++k) before[k] = static_cast<int>(k);
  for (size_t k : perm) after.push_back(static_cast<int>(k));
  RingCost was = ring_cost(*cost, before), now = ring_cost(*cost, after);
  spdlog::info(
      "job {}: ranks in measured ring order (slowest hop {:.1f} -> {:.1f} ms, ring "
      "{:.1f} -> {:.1f} ms)",
      job.id, was.max_hop * 1000, now.max_hop * 1000, was.total * 1000, now.total * 1000);
}

void CoordinatorCore::group_by_network_locked(Job* job) const {
  job->measured_groups = false;
  // Only where the workers' regions say nothing: no cluster file names regions, and every
  // rank's worker registered with the same one.
  if (!options_.regions.empty() || job->ranks.empty()) return;
  for (const RankInfo& r : job->ranks)
    if (r.region != job->ranks[0].region) return;
  std::vector<std::string> workers;
  for (const RankInfo& r : job->ranks)
    if (std::find(workers.begin(), workers.end(), r.worker_id) == workers.end())
      workers.push_back(r.worker_id);
  auto cost = network_.cost_matrix(workers, clock_->unix_seconds());
  if (!cost) return;
  auto groups = cluster_by_cost(*cost);
  if (!groups.is_ok() || *std::max_element(groups->begin(), groups->end()) == 0) return;
  // Groups closer than a WAN hop are measurement noise on one LAN, not regions.
  for (size_t i = 0; i < workers.size(); ++i)
    for (size_t j = 0; j < workers.size(); ++j)
      if ((*groups)[i] != (*groups)[j] && (*cost)[i][j] < options_.measured_group_min_s) return;
  std::string summary;
  for (RankInfo& r : job->ranks) {
    const size_t w = static_cast<size_t>(std::find(workers.begin(), workers.end(), r.worker_id) -
                                         workers.begin());
    r.region = r.region + ".m" + std::to_string((*groups)[w]);
    summary += (summary.empty() ? "" : ", ") + r.worker_id + " " + r.region;
  }
  job->measured_groups = true;
  spdlog::info("job {}: regions from measured clusters: {}", job->id, summary);
}

bool CoordinatorCore::can_regroup(const Job& job, bool join) {
  if (job.state != JobState::kRunning || job.recovery_mode == RecoveryMode::kNone) return false;
  return join || job.recoveries < job.max_recoveries;
}

Status CoordinatorCore::regroup_locked(Job* job, const std::vector<LostRank>& lost, bool join) {
  // Joining a regroup whose replacements are placed already keeps its generation (unless rank
  // 0 moves); one still waiting for a worker is placed as a whole.
  const bool same_generation = join && !awaiting_.count(job->id);
  if (!join) ++job->recoveries;
  bool member_lost = false;
  double lost_at = 0;
  for (const LostRank& l : lost) {
    RankInfo& r = job->ranks[l.rank];
    member_lost = member_lost || r.member;
    if (l.at > 0) lost_at = lost_at > 0 ? std::min(lost_at, l.at) : l.at;
    if (job->elastic()) r.member = false;
    r.ready = false;
    r.worker_id.clear();
    r.state = RankState::kUnassigned;
    r.exited = false;
    r.exit_code = 0;
    r.error.clear();
    r.lost = l.why;
    r.lost_from = l.worker_id;
    spdlog::warn("job {}: rank {} lost ({}){}", job->id, l.rank, l.why,
                 join ? ", part of the regroup under way"
                      : "; regroup " + std::to_string(job->recoveries) + " of " +
                            std::to_string(job->max_recoveries));
  }
  if (job->elastic()) {
    if (static_cast<int64_t>(job->members().size()) >= job->min_workers) {
      // The survivors go on at once; replacements start as standbys and join when ready.
      if (member_lost) elastic_regroup_locked(job, "shrink", lost_at);
      place_standbys_locked(job);
      touch(job);
      return journal_job(*job);
    }
    spdlog::warn(
        "job {}: {} ranks left, fewer than recovery.min_workers {}: waiting for replacements",
        job->id, job->members().size(), job->min_workers);
    elastic_pending_.erase(job->id);
    for (RankInfo& r : job->ranks) r.member = true, r.ready = false;
  }
  if (lost_at > 0 && !replace_lost_at_.count(job->id)) replace_lost_at_[job->id] = lost_at;
  if (!place_replacements_locked(job, same_generation)) {
    touch(job);
    return journal_job(*job);
  }
  return Status::ok();  // placed and journaled
}

bool CoordinatorCore::elastic_regroup_locked(Job* job, const std::string& kind, double lost_at) {
  const std::vector<int> members = job->members();
  const double now = clock_->unix_seconds();
  auto wait = [&](const std::string& why) {
    elastic_pending_[job->id] = {kind, lost_at > 0 ? lost_at : now};
    if (job->reason != why) {
      job->reason = why;
      touch(job);
    }
    return false;
  };
  if (members.empty()) return wait("regroup: no rank left");
  const RankInfo& lead = job->ranks[members.front()];
  auto it = workers_.find(lead.worker_id);
  if (it == workers_.end() || it->second.state != WorkerState::kReady) {
    return wait("regroup: waiting for rank " + std::to_string(lead.rank) + "'s worker " +
                lead.worker_id);
  }
  Worker& w0 = it->second;
  if (w0.spare_ports.empty()) return wait("regroup: waiting for a free port from worker " + w0.id);
  elastic_pending_.erase(job->id);
  job->generation += 1;
  job->master_addr = take_port(&w0, clock_->monotonic_ms());
  std::string list;
  for (int m : members) list += (list.empty() ? "" : ",") + std::to_string(m);
  job->reason = kind + " to " + std::to_string(members.size()) + " of " +
                std::to_string(job->world) + " ranks (" + list + ") at generation " +
                std::to_string(job->generation);
  std::map<std::string, double> t{{"generation", static_cast<double>(job->generation)},
                                  {"world", static_cast<double>(members.size())},
                                  {"grow", kind == "grow" ? 1.0 : 0.0},
                                  {"decided", now}};
  if (lost_at > 0) t["lost"] = lost_at;
  job->timelines.push_back(std::move(t));
  if (job->timelines.size() > kMaxTimelines) job->timelines.erase(job->timelines.begin());
  spdlog::info("job {} elastic {}: generation {} with ranks {} (world {} of {}), master {}",
               job->id, kind, job->generation, list, members.size(), job->world, job->master_addr);
  nudge_job_locked(*job);
  touch(job);
  return true;
}

void CoordinatorCore::assign_rank_locked(const Job& job, RankInfo& r, const Worker& w) {
  r.worker_id = w.id;
  if (!job.measured_groups) r.region = w.region;  // else the lost rank's group stays
  r.host = w.host;
  r.state = RankState::kAssigned;
  r.generation = job.generation;
  r.start_generation = job.generation;
  // A new worker's log copy starts where the job's log stands (its old worker's is continued).
  if (w.id != r.lost_from) r.log_base = logs_.size(job.id, r.rank);
}

void CoordinatorCore::place_standbys_locked(Job* job) {
  std::vector<SlotOffer> offers;
  std::vector<Worker*> offer_workers;
  slot_offers_locked(&offers, &offer_workers);
  offers = offers_with_cores(offers, offer_workers, job->threads);
  bool placed = false;
  for (RankInfo& r : job->ranks) {
    if (r.state != RankState::kUnassigned || r.member) continue;
    std::optional<size_t> pick;
    for (int pass = 0; pass < 3 && !pick; ++pass) {
      for (size_t i = 0; i < offers.size() && !pick; ++i) {  // its old worker, its region, any
        if (offers[i].free_slots <= 0) continue;
        if (pass == 0 && offers[i].worker_id != r.lost_from) continue;
        if (pass == 1 && offers[i].region != r.region) continue;
        if (pass == 2 && job->placement == PlacementPolicy::kPack) continue;
        pick = i;
      }
    }
    if (!pick) continue;  // retried when a slot frees up (schedule_locked)
    --offers[*pick].free_slots;
    const Worker* w = offer_workers[*pick];
    assign_rank_locked(*job, r, *w);
    r.exited = false;
    spdlog::info("job {}: standby for rank {} ({}) on worker {} at generation {}", job->id, r.rank,
                 r.lost, w->id, job->generation);
    r.lost.clear();
    r.lost_from.clear();
    nudge_locked(w->id);
    placed = true;
  }
  if (placed) {
    touch(job);
    Status s = journal_job(*job);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  }
}

bool CoordinatorCore::place_replacements_locked(Job* job, bool same_generation) {
  std::vector<int> lost;
  for (const RankInfo& r : job->ranks) {
    if (r.state == RankState::kUnassigned) lost.push_back(r.rank);
  }
  if (lost.empty()) {
    awaiting_.erase(job->id);
    return true;
  }
  std::vector<SlotOffer> offers;
  std::vector<Worker*> offer_workers;
  slot_offers_locked(&offers, &offer_workers);
  offers = offers_with_cores(offers, offer_workers, job->threads);
  std::map<int, size_t> choice;  // rank -> offer
  for (int rank : lost) {
    const RankInfo& r = job->ranks[rank];
    std::optional<size_t> pick;
    auto free_where = [&](const auto& match) -> std::optional<size_t> {
      for (size_t i = 0; i < offers.size(); ++i) {  // by worker id
        if (offers[i].free_slots > 0 && match(offers[i])) return i;
      }
      return std::nullopt;
    };
    pick = free_where([&](const SlotOffer& o) { return o.worker_id == r.lost_from; });
    // The rank's region keeps the rank order grouped by region (hierarchical sync).
    if (!pick) pick = free_where([&](const SlotOffer& o) { return o.region == r.region; });
    if (!pick && job->placement != PlacementPolicy::kPack) {
      auto placed = place_gang(1, job->placement, offers);
      if (placed.is_ok()) pick = (*placed)[0];
    }
    if (!pick) {
      return wait_for_replacements_locked(
          job, "regroup: rank " + std::to_string(rank) + " lost (" + r.lost +
                   "); waiting for a worker with a free slot" +
                   (job->placement == PlacementPolicy::kPack
                        ? " in region " + r.region + " (placement: pack)"
                        : ""));
    }
    --offers[*pick].free_slots;
    choice[rank] = *pick;
  }
  if (!next_generation_locked(job, choice, offer_workers, same_generation)) return false;
  replace_lost_at_.erase(job->id);
  std::string ranks;
  for (const auto& [rank, o] : choice) {
    RankInfo& r = job->ranks[rank];
    const Worker* w = offer_workers[o];
    assign_rank_locked(*job, r, *w);
    spdlog::info(
        "job {} regroup: rank {} lost ({}) -> generation {}, rank {} on worker {}, master {}",
        job->id, rank, r.lost, job->generation, rank, w->id, job->master_addr);
    r.lost.clear();
    r.lost_from.clear();
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(rank);
  }
  job->reason = "regroup " + std::to_string(job->recoveries) + " of " +
                std::to_string(job->max_recoveries) + ": rank " + ranks +
                " replaced at generation " + std::to_string(job->generation);
  awaiting_.erase(job->id);
  nudge_job_locked(*job);
  touch(job);
  Status s = journal_job(*job);
  if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  return true;
}

bool CoordinatorCore::wait_for_replacements_locked(Job* job, const std::string& why) {
  awaiting_.insert(job->id);
  if (job->reason != why) {
    job->reason = why;
    touch(job);
  }
  return false;
}

bool CoordinatorCore::next_generation_locked(Job* job, const std::map<int, size_t>& choice,
                                             const std::vector<Worker*>& offer_workers,
                                             bool same_generation) {
  // Rank 0's worker hosts the rendezvous store: a new generation gets a new port there.
  Worker* w0 = nullptr;
  bool bump = !same_generation;
  if (auto c = choice.find(0); c != choice.end()) {
    w0 = offer_workers[c->second];
    if (job->ranks[0].lost_from != w0->id) bump = true;
  } else if (auto it = workers_.find(job->ranks[0].worker_id); it != workers_.end()) {
    w0 = &it->second;
  }
  if (bump) {
    if (!w0 || w0->state != WorkerState::kReady) {
      return wait_for_replacements_locked(
          job, "regroup: waiting for rank 0's worker " + job->ranks[0].worker_id);
    }
    if (w0->spare_ports.empty()) {
      return wait_for_replacements_locked(job,
                                          "regroup: waiting for a free port from worker " + w0->id);
    }
    job->generation += 1;
    job->master_addr = take_port(w0, clock_->monotonic_ms());
    std::map<std::string, double> t{{"generation", static_cast<double>(job->generation)},
                                    {"world", static_cast<double>(job->world)},
                                    {"decided", clock_->unix_seconds()}};
    if (auto l = replace_lost_at_.find(job->id); l != replace_lost_at_.end()) t["lost"] = l->second;
    job->timelines.push_back(std::move(t));
    if (job->timelines.size() > kMaxTimelines) job->timelines.erase(job->timelines.begin());
  }
  return true;
}

void CoordinatorCore::slot_offers_locked(std::vector<SlotOffer>* offers,
                                         std::vector<Worker*>* offer_workers) {
  for (auto& [id, w] : workers_) {
    if (w.state != WorkerState::kReady || !w.heard) continue;
    std::set<TaskKey> used(w.reported_running);
    for (const TaskKey& t : assigned_tasks_locked(id)) used.insert(t);
    offers->push_back({id, w.region, w.slots - static_cast<int>(used.size())});
    offer_workers->push_back(&w);
  }
}

void CoordinatorCore::schedule_locked() {
  // Running jobs waiting for replacements hold their survivors' slots: they go first.
  for (const std::string& id : std::vector<std::string>(awaiting_.begin(), awaiting_.end())) {
    auto job = jobs_.find(id);
    if (job == jobs_.end() || job->second.state != JobState::kRunning) {
      awaiting_.erase(id);
    } else {
      place_replacements_locked(&job->second, false);
    }
  }
  // Elastic jobs: a group change that waited for a port, and standbys for vacant ranks.
  for (const auto& [id, why] :
       std::map<std::string, std::pair<std::string, double>>(elastic_pending_)) {
    auto job = jobs_.find(id);
    if (job == jobs_.end() || job->second.state != JobState::kRunning) {
      elastic_pending_.erase(id);
    } else if (elastic_regroup_locked(&job->second, why.first, why.second)) {
      Status s = journal_job(job->second);
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
    }
  }
  for (auto& [id, job] : jobs_) {
    if (job.state != JobState::kRunning || !job.elastic()) continue;
    if (std::any_of(job.ranks.begin(), job.ranks.end(), [](const RankInfo& r) {
          return r.state == RankState::kUnassigned && !r.member;
        })) {
      place_standbys_locked(&job);
    }
  }
  schedule_pending_locked();
}

void CoordinatorCore::schedule_pending_locked() {
  std::vector<Job*> pending;
  for (auto& [id, job] : jobs_) {
    if (job.state == JobState::kPending) pending.push_back(&job);
  }
  if (pending.empty()) return;
  std::sort(pending.begin(), pending.end(),
            [](const Job* a, const Job* b) { return a->seq < b->seq; });
  std::vector<SlotOffer> offers;
  std::vector<Worker*> offer_workers;
  slot_offers_locked(&offers, &offer_workers);
  for (Job* job : pending) {  // strict FIFO: stop at the first job that does not fit
    if (std::string why = threads_never_fit(*job, offer_workers); !why.empty()) {
      // No worker here could ever run it: failing it keeps the queue behind it moving.
      Status s = finish_job_locked(job, JobState::kFailed, why);
      if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
      continue;
    }
    // Workers with fewer cores than train.threads offer no slot to this job (indices stay
    // those of `offers`, whose free slots the placed jobs use up).
    auto placed = place_gang(job->world, job->placement,
                             offers_with_cores(offers, offer_workers, job->threads));
    if (!placed.is_ok()) {
      if (job->reason != placed.status().message()) {
        job->reason = placed.status().message();
        touch(job);
      }
      return;
    }
    if (options_.network_aware_order) order_by_network_locked(*job, offer_workers, &*placed);
    Worker* w0 = offer_workers[(*placed)[0]];
    if (w0->spare_ports.empty()) {
      std::string why = "waiting for a free port from worker " + w0->id;
      if (job->reason != why) {
        job->reason = why;
        touch(job);
      }
      return;
    }
    const std::string master = take_port(w0, clock_->monotonic_ms());
    job->ranks.clear();
    for (size_t r = 0; r < placed->size(); ++r) {
      size_t o = (*placed)[r];
      --offers[o].free_slots;
      RankInfo info;
      info.rank = static_cast<int>(r);
      info.worker_id = offer_workers[o]->id;
      info.region = offer_workers[o]->region;
      info.host = offer_workers[o]->host;
      info.state = RankState::kAssigned;
      job->ranks.push_back(std::move(info));
    }
    group_by_network_locked(job);
    job->state = JobState::kRunning;
    job->generation += 1;
    for (RankInfo& r : job->ranks) r.generation = r.start_generation = job->generation;
    job->master_addr = master;
    job->started_at = clock_->unix_seconds();
    job->reason = "placed";
    job->rate_step0 = -1;
    std::string where;
    for (const auto& r : job->ranks) where += (where.empty() ? "" : ",") + r.worker_id;
    spdlog::info("job {} placed (generation {}): ranks on {}, master {}", job->id, job->generation,
                 where, job->master_addr);
    nudge_job_locked(*job);
    touch(job);
    Status s = journal_job(*job);
    if (!s.is_ok()) spdlog::error("journal: {}", s.to_string());
  }
}

}  // namespace tern
