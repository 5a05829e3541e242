#include "straggler/straggler_sync.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int64_t double_bits(double v) {
  int64_t w;
  std::memcpy(&w, &v, sizeof w);
  return w;
}

double bits_double(int64_t w) {
  double v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

// Appends part `p` (indices) with a per-sample weight.
void append_part(StepPlan& plan, const std::vector<int64_t>& idx, double weight) {
  plan.indices.insert(plan.indices.end(), idx.begin(), idx.end());
  plan.weights.insert(plan.weights.end(), idx.size(), weight);
}

std::vector<int64_t> slice(const std::vector<int64_t>& v, int64_t begin, int64_t end) {
  return std::vector<int64_t>(v.begin() + begin, v.begin() + end);
}

}  // namespace

StragglerSync::StragglerSync(Communicator& comm, GradientReducer* reducer, const JobSpec& spec,
                             int64_t total_steps)
    : comm_(comm),
      reducer_(reducer),
      mode_(spec.straggler.mode),
      s_(spec.straggler.s),
      backup_(spec.straggler.backup),
      report_every_(spec.straggler.report_every),
      total_steps_(total_steps),
      bucket_bytes_(static_cast<int64_t>(spec.sync.bucket_mb * (1 << 20))),
      estimator_(spec.straggler.ewma),
      waited_for_(static_cast<size_t>(comm.size()), 0) {}

Result<std::unique_ptr<StragglerSync>> StragglerSync::make(Communicator& comm,
                                                           GradientReducer* reducer,
                                                           const JobSpec& spec,
                                                           int64_t total_steps) {
  const StragglerMode mode = spec.straggler.mode;
  if (mode != StragglerMode::kGradientCoding && mode != StragglerMode::kProportional &&
      mode != StragglerMode::kCodedProportional && mode != StragglerMode::kBackup &&
      mode != StragglerMode::kRandomCode) {
    return invalid_argument("straggler.mode '" + name_of(mode) +
                            "' is not a straggler mitigation mode");
  }
  std::unique_ptr<StragglerSync> s(new StragglerSync(comm, reducer, spec, total_steps));
  if (mode == StragglerMode::kGradientCoding || mode == StragglerMode::kCodedProportional) {
    // Every rank derives the same random code from the job seed.
    TERN_ASSIGN_OR_RETURN(GradientCode code,
                          GradientCode::make(comm.size(), static_cast<int>(spec.straggler.s),
                                             static_cast<uint64_t>(spec.train.seed) * 7919 + 17));
    s->code_ = std::move(code);
  }
  if (mode == StragglerMode::kRandomCode) {
    s->random_code_ = true;
    s->code_seed_ = static_cast<uint64_t>(spec.train.seed) * 7919 + 17;
    // Refuses a bad (n, s) at once.
    TERN_RETURN_IF_ERROR(s->code_at(0).status());
  }
  s->agree_ =
      s->random_code_ || (s->code_ && s->code_->kind() == GradientCode::Kind::kCyclicRepetition);
  if (s->agree_ && comm.size() > 64) {
    return invalid_argument("straggler.mode " + name_of(mode) +
                            " with a cyclic or random code supports at most 64 workers (the "
                            "agreed sender set is a 64-bit mask)");
  }
  if (mode == StragglerMode::kBackup && comm.size() > 63) {
    return invalid_argument(
        "straggler.mode backup supports at most 63 workers (the decision is a 64-bit mask)");
  }
  return s;
}

Status StragglerSync::begin(std::vector<at::Tensor>& params) {
  numel_ = 0;
  for (const auto& p : params) numel_ += p.numel();
  if (coded() || mode_ == StragglerMode::kBackup) {
    ContributionExchange::Options o;
    o.numel = numel_;
    o.total_steps = total_steps_;
    o.window = 8;
    o.leader = mode_ == StragglerMode::kBackup ? 0 : -1;
    o.every_rank_decides = agree_;
    o.decision_words = 1 + comm_.size();  // agree_: the sender mask, then each rank's weight
    exchange_ = std::make_unique<ContributionExchange>(comm_, o);
  }
  if (random_code_) {
    TERN_ASSIGN_OR_RETURN(const GradientCode* first, code_at(0));
    spdlog::info(
        "straggler mitigation: random_linear (n={}, s={}), rank {} computes parts {} with fresh "
        "coefficients "
        "every step",
        comm_.size(), s_, comm_.rank(), fmt::join(first->parts(comm_.rank()), ","));
  } else if (coded()) {
    spdlog::info("straggler mitigation: {} (n={}, s={}), rank {} computes parts {}",
                 code_->kind_name(), code_->n(), code_->s(), comm_.rank(),
                 fmt::join(code_->parts(comm_.rank()), ","));
  } else if (mode_ == StragglerMode::kBackup) {
    spdlog::info("straggler mitigation: backup (n={}, waits for the first {})", comm_.size(),
                 comm_.size() - backup_);
  } else {
    spdlog::info("straggler mitigation: {} (n={}, speeds every {} steps)", name_of(mode_),
                 comm_.size(), report_every_);
  }
  return Status::ok();
}

Result<const GradientCode*> StragglerSync::code_at(int64_t step) {
  if (code_) return &*code_;
  auto it = step_codes_.find(step);
  if (it == step_codes_.end()) {
    TERN_ASSIGN_OR_RETURN(
        GradientCode c,
        GradientCode::make_random(comm_.size(), static_cast<int>(s_), code_seed_, step));
    it = step_codes_.emplace(step, std::move(c)).first;
    // Steps are decided in order; older codes are never asked for again.
    step_codes_.erase(step_codes_.begin(), step_codes_.lower_bound(step - 2));
  }
  return &it->second;
}

void StragglerSync::record_compute(int64_t samples, double seconds) {
  estimator_.observe(samples, seconds);
}

Status StragglerSync::update_speeds(int64_t step) {
  if (!uses_speeds()) return Status::ok();
  if (gather_ && step >= gather_->step + kGatherLag) {
    TERN_RETURN_IF_ERROR(gather_->work->wait(comm_.timeout()).with_context("speed exchange"));
    speeds_.clear();
    for (auto& t : gather_->outputs) speeds_.push_back(t.item<double>());
    gather_.reset();
  }
  if (!gather_ && step % report_every_ == 0 && step + kGatherLag < total_steps_) {
    PendingGather g;
    g.step = step;
    g.input = at::full({1}, estimator_.speed(), at::kDouble);
    for (int r = 0; r < comm_.size(); ++r) g.outputs.push_back(at::zeros({1}, at::kDouble));
    g.work = comm_.all_gather(g.outputs, g.input);
    gather_ = std::move(g);
  }
  return Status::ok();
}

Result<StepPlan> StragglerSync::plan(int64_t step, int rank, int world, const PartIndices& part) {
  TERN_RETURN_IF_ERROR(update_speeds(step));
  if (exchange_) TERN_RETURN_IF_ERROR(exchange_->post_through(step));
  std::vector<std::vector<int64_t>> parts;
  int64_t global = 0;
  for (int p = 0; p < world; ++p) {
    parts.push_back(part(p));
    global += static_cast<int64_t>(parts.back().size());
  }
  StepPlan plan;
  plan.global_samples = global;
  skip_ = false;
  ++steps_;

  const GradientCode* code = nullptr;
  if (coded()) {
    TERN_ASSIGN_OR_RETURN(code, code_at(step));
  }
  // Behind: the peers already decided this step without us.
  if (exchange_) {
    if (decided_without(exchange_->arrivals(step), code, rank)) {
      skip_ = true;
      plan.skip = true;
      ++skipped_;
      share_ = 0;
      return plan;
    }
  }

  if (mode_ == StragglerMode::kProportional || mode_ == StragglerMode::kCodedProportional) {
    std::vector<int64_t> all;
    all.reserve(static_cast<size_t>(global));
    for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
    std::vector<double> w =
        speeds_.empty() ? std::vector<double>(static_cast<size_t>(world), 1.0) : speeds_;
    if (mode_ == StragglerMode::kCodedProportional) {
      // A coded part is done when its fastest holder is: size it by that holder's speed.
      std::vector<double> pw(static_cast<size_t>(world));
      for (int p = 0; p < world; ++p) {
        double best = 0;
        for (int h : code->holders(p)) best = std::max(best, w[static_cast<size_t>(h)]);
        pw[static_cast<size_t>(p)] = best;
      }
      w = pw;
    }
    std::vector<int64_t> off = share_offsets(proportional_split(global, w));
    for (int p = 0; p < world; ++p)
      parts[static_cast<size_t>(p)] =
          slice(all, off[static_cast<size_t>(p)], off[static_cast<size_t>(p) + 1]);
  }

  if (coded()) {
    const auto& mine = code->parts(rank);
    const auto& coeff = code->coefficients(rank);
    for (size_t q = 0; q < mine.size(); ++q) {
      append_part(plan, parts[static_cast<size_t>(mine[q])],
                  coeff[q] / static_cast<double>(global));
    }
  } else if (mode_ == StragglerMode::kProportional) {
    // The dense reducer averages over ranks: weight n/|G| makes the result the global mean.
    append_part(plan, parts[static_cast<size_t>(rank)],
                static_cast<double>(world) / static_cast<double>(global));
  } else {  // backup: each contribution is its own part's mean gradient
    plan.indices = parts[static_cast<size_t>(rank)];
  }
  share_ = global > 0 ? static_cast<double>(plan.indices.size()) / static_cast<double>(global) : 0;
  return plan;
}

Status StragglerSync::apply_sum(int64_t step, const std::vector<int>& senders,
                                const std::vector<double>& coeffs, std::vector<at::Tensor>& grads) {
  // Sum in rank order, so every decoder that uses the same contributions gets the same bits.
  std::vector<size_t> order(senders.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return senders[a] < senders[b]; });
  at::Tensor sum = at::zeros({numel_}, at::kFloat);
  for (size_t i : order) {
    if (coeffs[i] == 0.0) continue;
    at::Tensor p = exchange_->payload(step, senders[i]);
    if (!p.defined())
      return internal_error("contribution of rank " + std::to_string(senders[i]) + " missing");
    if (coeffs[i] == 1.0)
      sum.add_(p);
    else
      sum.add_(p, coeffs[i]);
  }
  std::vector<at::Tensor> out;
  for (auto& g : grads) out.push_back(g);
  unflatten_all(sum.to(grads.front().device()), out);
  return Status::ok();
}

bool StragglerSync::decided_without(const ContributionExchange::Arrivals& arr,
                                    const GradientCode* code, int rank) const {
  if (agree_ && rank != decider_) return arr.decisions.count(decider_) > 0;
  return code ? code->decodable(arr.computed) : (arr.decision.has_value() && rank != 0);
}

Status StragglerSync::decide_coded(int64_t step, std::vector<at::Tensor>& grads) {
  TERN_ASSIGN_OR_RETURN(const GradientCode* code, code_at(step));
  at::Tensor mine;
  if (!skip_) {
    mine = flatten_all(grads).to(at::kFloat).cpu();
    if (decided_without(exchange_->arrivals(step), code, comm_.rank())) ++late_;
  }
  TERN_RETURN_IF_ERROR(exchange_->contribute(step, mine));
  if (agree_) return decide_agreed(step, *code, grads);
  auto t0 = Clock::now();
  TERN_RETURN_IF_ERROR(exchange_->wait_until(
      step, [&](const ContributionExchange::Arrivals& a) { return code->decodable(a.computed); },
      comm_.timeout()));
  metrics_.wait_s += since(t0);
  auto t1 = Clock::now();
  std::vector<int> senders = exchange_->arrivals(step).computed;
  // Who completed the set: the last sender of the shortest decodable prefix. Longer than n - s:
  // the first n - s did not decode and the step waited for more.
  size_t k = decodable_prefix(*code, senders);
  if (k > 0) ++waited_for_[static_cast<size_t>(senders[k - 1])];
  if (k > static_cast<size_t>(code->n() - code->s())) {
    ++decode_failures_;
    spdlog::debug("step {}: the first {} contributions did not decode; decoded from {}", step,
                  code->n() - code->s(), k);
  }
  TERN_ASSIGN_OR_RETURN(std::vector<double> a, code->decode(senders));
  TERN_RETURN_IF_ERROR(apply_sum(step, senders, a, grads));
  decode_s_ += since(t1);
  exchange_->release(step);
  return Status::ok();
}

Status StragglerSync::decide_agreed(int64_t step, const GradientCode& code,
                                    std::vector<at::Tensor>& grads) {
  using Arrivals = ContributionExchange::Arrivals;
  const int n = comm_.size(), decider = decider_;
  const bool deciding = comm_.rank() == decider;
  auto t0 = Clock::now();
  std::vector<int64_t> words;  // the sender mask, then rank r's weight (bits of a double)
  if (deciding) {
    TERN_RETURN_IF_ERROR(exchange_->wait_until(
        step, [&](const Arrivals& a) { return code.decodable(a.computed); }, comm_.timeout()));
    // Arrivals only grow, so the set waited for is a prefix: the shortest decodable one.
    std::vector<int> arrived = exchange_->arrivals(step).computed;
    size_t k = decodable_prefix(code, arrived);
    if (k == 0) return internal_error("step " + std::to_string(step) + ": no decodable prefix");
    std::vector<int> senders(arrived.begin(), arrived.begin() + static_cast<int64_t>(k));
    TERN_ASSIGN_OR_RETURN(std::vector<double> a, code.decode(senders));
    words.assign(static_cast<size_t>(n + 1), 0);
    uint64_t mask = 0;
    for (size_t i = 0; i < senders.size(); ++i) {
      mask |= uint64_t{1} << senders[i];
      words[static_cast<size_t>(1 + senders[i])] = double_bits(a[i]);
    }
    words[0] = static_cast<int64_t>(mask);
    // Sent before decoding here: the peers wait for it.
    TERN_RETURN_IF_ERROR(exchange_->send_decision_words(step, words));
    ++waited_for_[static_cast<size_t>(senders.back())];
  } else {
    auto have_all = [&](const Arrivals& a) {
      auto d = a.decisions.find(decider);
      if (d == a.decisions.end()) return false;
      uint64_t have = 0;
      for (int r : a.computed) have |= uint64_t{1} << r;
      return (static_cast<uint64_t>(d->second[0]) & ~have) == 0;
    };
    TERN_RETURN_IF_ERROR(exchange_->wait_until(step, have_all, comm_.timeout()));
    Arrivals arr = exchange_->arrivals(step);
    words = arr.decisions.at(decider);
    int last = decider;  // whose contribution, of the decided ones, arrived here last
    for (int r : arr.computed) {
      if ((static_cast<uint64_t>(words[0]) >> r) & 1) last = r;
    }
    ++waited_for_[static_cast<size_t>(last)];
  }
  metrics_.wait_s += since(t0);
  auto t1 = Clock::now();
  std::vector<int> senders;
  std::vector<double> a;
  for (int r = 0; r < n; ++r) {
    if ((static_cast<uint64_t>(words[0]) >> r) & 1) {
      senders.push_back(r);
      a.push_back(bits_double(words[static_cast<size_t>(1 + r)]));
    }
  }
  if (senders.empty()) return internal_error("step " + std::to_string(step) + ": empty decision");
  if (static_cast<int>(senders.size()) > code.n() - code.s()) {
    ++decode_failures_;
    spdlog::debug("step {}: the first {} contributions did not decode; decoded from {}", step,
                  code.n() - code.s(), senders.size());
  }
  TERN_RETURN_IF_ERROR(apply_sum(step, senders, a, grads));
  decode_s_ += since(t1);
  // Every rank sends one decision per step (the receives are posted for every peer).
  if (!deciding) TERN_RETURN_IF_ERROR(exchange_->send_decision_words(step, words));
  decider_ = senders.front();
  exchange_->release(step);
  return Status::ok();
}

Status StragglerSync::decide_backup(int64_t step, std::vector<at::Tensor>& grads) {
  const int n = comm_.size();
  const size_t need = static_cast<size_t>(n - backup_);
  at::Tensor mine;
  if (!skip_) {
    mine = flatten_all(grads).to(at::kFloat).cpu();
    if (comm_.rank() != 0 && exchange_->arrivals(step).decision) ++late_;
  }
  TERN_RETURN_IF_ERROR(exchange_->contribute(step, mine));
  auto t0 = Clock::now();
  std::vector<int> senders;
  if (comm_.rank() == 0) {
    TERN_RETURN_IF_ERROR(exchange_->wait_until(
        step, [&](const ContributionExchange::Arrivals& a) { return a.computed.size() >= need; },
        comm_.timeout()));
    auto arr = exchange_->arrivals(step);
    senders.assign(arr.computed.begin(), arr.computed.begin() + static_cast<int64_t>(need));
    uint64_t mask = 0;
    for (int r : senders) mask |= uint64_t{1} << r;
    TERN_RETURN_IF_ERROR(exchange_->send_decision(step, mask));
  } else {
    TERN_RETURN_IF_ERROR(exchange_->wait_until(
        step,
        [&](const ContributionExchange::Arrivals& a) {
          if (!a.decision) return false;
          size_t have = 0;
          for (int r : a.computed) have += (*a.decision >> r) & 1;
          return have == static_cast<size_t>(__builtin_popcountll(*a.decision));
        },
        comm_.timeout()));
    uint64_t mask = *exchange_->arrivals(step).decision;
    for (int r = 0; r < n; ++r) {
      if ((mask >> r) & 1) senders.push_back(r);
    }
  }
  metrics_.wait_s += since(t0);
  if (!senders.empty()) ++waited_for_[static_cast<size_t>(senders.back())];
  for (int r = 0; r < n; ++r) {
    bool used = std::find(senders.begin(), senders.end(), r) != senders.end();
    if (r == comm_.rank() && !used && !skip_ && comm_.rank() == 0) ++late_;
  }
  std::vector<double> coeffs(senders.size(), 1.0 / static_cast<double>(senders.size()));
  TERN_RETURN_IF_ERROR(apply_sum(step, senders, coeffs, grads));
  exchange_->release(step);
  return Status::ok();
}

Status StragglerSync::on_gradients(int64_t step, std::vector<at::Tensor>& grads) {
  Status s;
  if (coded()) {
    s = decide_coded(step, grads);
  } else if (mode_ == StragglerMode::kBackup) {
    s = decide_backup(step, grads);
  } else {
    auto t0 = Clock::now();
    s = reducer_->start(grads, step)->finish(grads);
    metrics_.wait_s += since(t0);
  }
  if (s.is_ok()) ++metrics_.syncs;
  return s;
}

Status StragglerSync::drain(std::vector<at::Tensor>& /*params*/) {
  if (gather_) {
    TERN_RETURN_IF_ERROR(gather_->work->wait(comm_.timeout()).with_context("speed exchange"));
    gather_.reset();
  }
  // No parameter average: every rank applied the same updates (decide_agreed for cyclic and
  // random codes), so the replicas are bit-identical already.
  if (exchange_) TERN_RETURN_IF_ERROR(exchange_->drain(comm_.timeout()));
  return Status::ok();
}

SyncMetrics StragglerSync::metrics() const {
  SyncMetrics m = metrics_;
  m.extra["straggler_skipped"] = static_cast<double>(skipped_);
  m.extra["straggler_dropped"] = static_cast<double>(skipped_ + late_);
  m.extra["straggler_drop_share"] =
      steps_ > 0 ? static_cast<double>(skipped_ + late_) / steps_ : 0.0;
  m.extra["straggler_share"] = share_;
  m.extra["straggler_speed"] = estimator_.speed();
  if (coded()) {
    m.extra["straggler_decode_failures"] = static_cast<double>(decode_failures_);
    m.extra["straggler_decode_ms"] =
        steps_ > 0 ? 1000.0 * decode_s_ / static_cast<double>(steps_) : 0.0;
  }
  if (exchange_)
    m.extra["straggler_late_arrivals"] = static_cast<double>(exchange_->late_arrivals());
  for (size_t r = 0; r < waited_for_.size(); ++r) {
    m.extra["straggler_waited_for_r" + std::to_string(r)] = static_cast<double>(waited_for_[r]);
  }
  return m;
}

}  // namespace tern
