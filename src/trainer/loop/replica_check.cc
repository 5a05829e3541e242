#include "trainer/loop/replica_check.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>

#include "comm/reducer.h"
#include "common/trainer_codec.h"
#include "trainer/loop/nonfinite.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;  // xxHash64's primes
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// For a fixed h a bijection of w (times an odd number, xor, rotation, times an odd number), and
// for a fixed w one of h.
uint64_t mix_word(uint64_t h, uint64_t w) { return rotl(h ^ (w * kP2), 31) * kP1; }

// xxHash64's avalanche (a bijection): every input bit reaches every output bit.
uint64_t avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t hash_text(const std::string& s, uint64_t h) { return hash_bytes(s.data(), s.size(), h); }

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << std::hex << v;
  return os.str();
}

std::string ranks_phrase(const std::vector<int>& ranks) {
  return (ranks.size() == 1 ? "rank " : "ranks ") + rank_list(ranks);
}

// What is identical at `point`, as named live tensors; `opt` gets the optimizer's part (also in
// `out`), which a repair hands back through Optimizer::load_state.
NamedState collect(const ReplicaSources& src, VerifyPoint point, Optimizer::NamedTensors* opt) {
  NamedState out;
  ReplicaView view = src.strategy->replica_view();
  const bool after_sync = point != VerifyPoint::kStep;
  if (view.parameters || after_sync) {
    for (size_t i = 0; i < src.params->size(); ++i) {
      out.emplace_back("param/" + src.param_names->at(i), (*src.params)[i].detach());
    }
  }
  if (after_sync) {
    for (const auto& [name, b] : src.buffers) out.emplace_back("buffer/" + name, b.detach());
  }
  if ((!after_sync && view.optimizer) || (after_sync && (src.optimizer_synced || view.optimizer))) {
    *opt = src.optimizer->state(*src.param_names, /*materialize=*/true);
    for (const auto& [name, t] : *opt) out.emplace_back("optimizer/" + name, t);
  }
  for (auto& e : view.sync_point) out.push_back(std::move(e));
  for (auto& e : view.state) out.push_back(std::move(e));
  return out;
}

// Broadcasts every tensor of `state` from `root` in place (integer tensors travel as doubles,
// which hold them exactly, as in the loop's state sync).
Status broadcast_state(Communicator& comm, NamedState& state, int root, torch::Device device) {
  std::vector<at::Tensor> wire;
  std::vector<std::pair<size_t, at::Tensor>> converted;
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    const at::Tensor& t = state[i].second;
    if (!t.defined() || t.numel() == 0) continue;
    if (t.is_floating_point() && t.device() == device) {
      wire.push_back(t);
    } else {
      at::Tensor c = t.to(device, at::kDouble);
      converted.emplace_back(i, c);
      wire.push_back(c);
    }
  }
  TERN_RETURN_IF_ERROR(broadcast_tensors(comm, wire, root));
  for (auto& [i, c] : converted) state[i].second.copy_(c);
  return Status::ok();
}

}  // namespace

uint64_t hash_bytes(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix_word(h, w);
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    h = mix_word(h, w);
  }
  return mix_word(h, static_cast<uint64_t>(n));
}

uint64_t hash_named_tensors(const NamedState& state, bool layout_only) {
  uint64_t h = kHashSeed;
  for (const auto& [name, t] : state) {
    h = hash_text(name, h);
    if (!t.defined()) {
      h = mix_word(h, ~uint64_t{0});
      continue;
    }
    h = mix_word(h, static_cast<uint64_t>(t.scalar_type()));
    const auto sizes = t.sizes();
    h = hash_bytes(sizes.data(), sizes.size() * sizeof(int64_t), h);
    if (layout_only || t.numel() == 0) continue;
    at::Tensor host = t.detach().to(at::kCPU).contiguous();
    h = hash_bytes(host.data_ptr(), static_cast<size_t>(host.numel()) * host.element_size(), h);
  }
  return avalanche(h);
}

std::vector<std::vector<int>> group_ranks_by_hash(const std::vector<uint64_t>& hashes) {
  std::map<uint64_t, std::vector<int>> by;
  for (size_t r = 0; r < hashes.size(); ++r) by[hashes[r]].push_back(static_cast<int>(r));
  std::vector<std::vector<int>> groups;
  for (auto& [h, ranks] : by) groups.push_back(std::move(ranks));
  std::sort(groups.begin(), groups.end(), [](const std::vector<int>& a, const std::vector<int>& b) {
    return a.size() != b.size() ? a.size() > b.size() : a.front() < b.front();
  });
  return groups;
}

std::string groups_text(const std::vector<std::vector<int>>& groups) {
  std::string out;
  for (const auto& g : groups) out += (out.empty() ? "" : " | ") + rank_list(g);
  return out;
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> exchange_hashes(Communicator& comm,
                                                                   uint64_t values, uint64_t layout,
                                                                   torch::Device device) {
  const int world = comm.size();
  const int rank = comm.rank();
  if (world <= 1) return std::vector<std::pair<uint64_t, uint64_t>>{{values, layout}};
  // Each rank writes its own column; the sum of one value and zeros is that value, bit for bit.
  at::Tensor slots = at::zeros({2, world}, at::kLong);
  int64_t v, l;
  std::memcpy(&v, &values, 8);
  std::memcpy(&l, &layout, 8);
  slots[0][rank] = v;
  slots[1][rank] = l;
  std::vector<at::Tensor> t{slots.to(device)};
  TERN_RETURN_IF_ERROR(all_reduce_sync(comm, t).with_context("exchanging replica hashes"));
  at::Tensor host = t[0].to(at::kCPU).contiguous();
  auto a = host.accessor<int64_t, 2>();
  std::vector<std::pair<uint64_t, uint64_t>> out(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    int64_t hv = a[0][r], hl = a[1][r];
    std::memcpy(&out[static_cast<size_t>(r)].first, &hv, 8);
    std::memcpy(&out[static_cast<size_t>(r)].second, &hl, 8);
  }
  return out;
}

const char* verify_point_name(VerifyPoint p) {
  switch (p) {
    case VerifyPoint::kStep:
      return "step";
    case VerifyPoint::kRegroup:
      return "regroup";
    case VerifyPoint::kJoin:
      return "join";
  }
  return "step";
}

ReplicaChecker::ReplicaChecker(ReplicaCheckOptions options, EventSink* sink)
    : options_(std::move(options)), sink_(sink) {}

Status ReplicaChecker::verify(Communicator& comm, int64_t step, VerifyPoint point,
                              const ReplicaSources& sources) {
  if (!enabled()) return Status::ok();
  auto t0 = Clock::now();
  Optimizer::NamedTensors opt;
  NamedState state = collect(sources, point, &opt);
  if (state.empty()) {
    // The same on every rank (the same strategy and spec): no collective to skip unevenly.
    if (!warned_empty_ && options_.rank == 0) {
      spdlog::warn(
          "sync.verify_every: sync.strategy {} keeps nothing bit-identical between syncs (see "
          "SyncStrategy::replica_view); replicas are verified after regroups only",
          sources.strategy->name());
    }
    warned_empty_ = true;
    return Status::ok();
  }
  auto after_repair = [&]() -> Status {
    if (opt.empty()) return Status::ok();
    return sources.optimizer->load_state(opt, *sources.param_names, "replica repair");
  };
  Status s = compare(comm, step, point, state, after_repair, /*confirming=*/false);
  stats_.verify_s += std::chrono::duration<double>(Clock::now() - t0).count();
  return s;
}

Status ReplicaChecker::compare(Communicator& comm, int64_t step, VerifyPoint point,
                               NamedState& state, const std::function<Status()>& after_repair,
                               bool confirming) {
  const uint64_t values = hash_named_tensors(state);
  const uint64_t layout = hash_named_tensors(state, /*layout_only=*/true);
  TERN_ASSIGN_OR_RETURN(auto hashes, exchange_hashes(comm, values, layout, options_.device));
  ++stats_.verifies;
  std::vector<uint64_t> value_hashes;
  for (const auto& [v, l] : hashes) value_hashes.push_back(v);
  const auto groups = group_ranks_by_hash(value_hashes);
  if (groups.size() <= 1) return Status::ok();

  ++stats_.mismatches;
  const int world = static_cast<int>(hashes.size());
  const std::string where =
      point == VerifyPoint::kStep
          ? "after step " + std::to_string(step)
          : "at step " + std::to_string(step) + " after the " + verify_point_name(point);
  std::vector<int> others;
  for (size_t g = 1; g < groups.size(); ++g)
    others.insert(others.end(), groups[g].begin(), groups[g].end());
  std::sort(others.begin(), others.end());
  std::string message = "replicas differ " + where + " (" + std::to_string(state.size()) +
                        " replicated tensors): " + ranks_phrase(others) +
                        (others.size() == 1 ? " differs" : " differ") + " from " +
                        ranks_phrase(groups[0]) + " (ranks by hash: " + groups_text(groups) + ")";
  // Majority: the lowest rank of a strict majority, when every rank has its layout.
  int source = -1;
  std::string refused;
  if (options_.on_mismatch == OnMismatch::kMajority && !confirming) {
    if (static_cast<int>(groups[0].size()) * 2 <= world) {
      refused = "no strict majority (" + std::to_string(groups[0].size()) + " of " +
                std::to_string(world) + " ranks agree)";
    } else {
      source = groups[0].front();
      for (int r = 0; r < world; ++r) {
        if (hashes[static_cast<size_t>(r)].second != hashes[static_cast<size_t>(source)].second) {
          refused = "rank " + std::to_string(r) + " holds tensors of another layout than rank " +
                    std::to_string(source) + " (a broadcast cannot repair that)";
          source = -1;
          break;
        }
      }
    }
  }
  ReplicaMismatchEvent mismatch;
  mismatch.step = step;
  mismatch.when = verify_point_name(point);
  for (const auto& g : groups) {
    mismatch.groups.emplace_back(g.begin(), g.end());
    mismatch.hashes.push_back(hex(value_hashes[static_cast<size_t>(g.front())]));
  }
  mismatch.action = source >= 0 ? "majority" : "fail";
  mismatch.source = source;
  mismatch.mismatches = stats_.mismatches;
  mismatch.message = message;
  sink_->emit(to_json(mismatch));
  if (source < 0) {
    failed_ = true;
    std::string why = confirming         ? "; still after taking the majority's state"
                      : !refused.empty() ? "; sync.on_mismatch majority: " + refused
                                         : "; sync.on_mismatch fail";
    spdlog::error("{}{}", message, why);
    return data_loss(message + why);
  }
  spdlog::error("{}; sync.on_mismatch majority: every rank takes rank {}'s state", message, source);
  TERN_RETURN_IF_ERROR(
      broadcast_state(comm, state, source, options_.device).with_context("replica repair"));
  TERN_RETURN_IF_ERROR(after_repair());
  ++stats_.repairs;
  spdlog::warn("{}: replicas repaired from rank {} ({} repairs so far)", where, source,
               stats_.repairs);
  return compare(comm, step, point, state, after_repair, /*confirming=*/true);
}

at::Tensor corruption_target(SyncStrategy& strategy, std::vector<at::Tensor>& params) {
  ReplicaView view = strategy.replica_view();
  if (!view.parameters && !view.sync_point.empty()) return view.sync_point.front().second;
  return params.empty() ? at::Tensor() : params.front().detach();
}

int corrupt_bit(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return 22;
    case at::kDouble:
      return 51;
    case at::kHalf:
      return 9;
    case at::kBFloat16:
      return 6;
    default:
      return 0;
  }
}

void flip_one_bit(at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return;
  at::NoGradGuard no_grad;
  at::Tensor first = t.detach();
  while (first.dim() > 0) first = first.select(0, 0);
  at::Tensor host = first.to(at::kCPU).clone();
  // Little-endian: bit b of the element is bit b % 8 of its byte b / 8.
  const int bit = corrupt_bit(host.scalar_type());
  static_cast<unsigned char*>(host.data_ptr())[bit / 8] ^=
      static_cast<unsigned char>(1u << (bit % 8));
  first.copy_(host);
}

}  // namespace tern
