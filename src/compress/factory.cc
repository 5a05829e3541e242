#include "compress/factory.h"

#include <algorithm>

#include "comm/counting_communicator.h"
#include "compress/compressor.h"
#include "compress/gradiveq.h"

namespace tern {
namespace {

// Decorator that measures the bytes its reducer puts on the wire (a CountingCommunicator
// around the reducer's own collectives, so the initial broadcast and evaluation do not count)
// and reports them as ReducerStats::wire_bytes. Owns the counting layer and the reducer.
class MeteredReducer : public GradientReducer {
 public:
  MeteredReducer(std::shared_ptr<CountingCommunicator> counting,
                 std::unique_ptr<GradientReducer> inner)
      : counting_(std::move(counting)), inner_(std::move(inner)) {}
  std::unique_ptr<PendingReduction> start(const std::vector<at::Tensor>& grads,
                                          int64_t step) override {
    return inner_->start(grads, step);
  }
  std::string name() const override { return inner_->name(); }
  const ReducerStats& stats() const override {
    stats_ = inner_->stats();
    stats_.wire_bytes = counting_->counts().total();
    return stats_;
  }
  bool owns_momentum() const override { return inner_->owns_momentum(); }
  std::vector<std::pair<std::string, at::Tensor>> state() override { return inner_->state(); }
  Status load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) override {
    return inner_->load_state(state);
  }

 private:
  std::shared_ptr<CountingCommunicator> counting_;  // outlives inner_ (declared first)
  std::unique_ptr<GradientReducer> inner_;
  mutable ReducerStats stats_;
};

}  // namespace

Result<std::unique_ptr<GradientReducer>> make_gradient_reducer(const JobSpec& spec,
                                                               Communicator& comm,
                                                               const ReducerContext& ctx) {
  const CompressSpec& c = spec.compress;
  // Non-owning: the caller's communicator outlives the reducer.
  auto counting = std::make_shared<CountingCommunicator>(
      std::shared_ptr<Communicator>(&comm, [](Communicator*) {}));
  std::unique_ptr<GradientReducer> inner;
  if (c.method == CompressMethod::kNone) {
    inner = std::make_unique<DenseReducer>(*counting,
                                           static_cast<int64_t>(spec.sync.bucket_mb * (1 << 20)));
  } else if (c.method == CompressMethod::kDgc) {
    DgcOptions o;
    o.density = c.density;
    o.warmup_densities = c.warmup_densities;
    o.warmup_steps = c.warmup_steps > 0 ? c.warmup_steps : c.warmup_epochs * ctx.steps_per_epoch;
    o.sample_ratio = c.sample_ratio;
    o.clip_norm = c.clip_norm;
    o.min_numel = c.min_numel;
    o.momentum = spec.train.momentum;
    o.momentum_masking = c.momentum_masking;
    o.value_type = c.value_bits == 16 ? at::kHalf : at::kFloat;
    o.seed = static_cast<uint64_t>(ctx.seed);
    inner = std::make_unique<DgcCompressor>(*counting, std::move(o));
  } else if (c.method == CompressMethod::kPowersgd) {
    PowerSgdOptions o;
    o.rank = c.rank;
    o.start_iter = c.start_iter;
    o.min_compression_rate = c.min_compression_rate;
    o.error_feedback = c.error_feedback;
    o.seed = static_cast<uint64_t>(spec.train.seed);  // the same on every rank
    inner = std::make_unique<PowerSgdCompressor>(*counting, o);
  } else if (c.method == CompressMethod::kFp16) {
    inner = std::make_unique<Fp16Compressor>(*counting, c.error_feedback);
  } else if (c.method == CompressMethod::kInt8) {
    inner = std::make_unique<Int8Compressor>(*counting, c.error_feedback);
  } else if (c.method == CompressMethod::kInt4) {
    Int4Options o;
    o.block_size = c.block_size;
    o.error_feedback = c.error_feedback;
    o.ef_decay = c.ef_decay;
    inner = std::make_unique<Int4Compressor>(*counting, o);
  } else if (c.method == CompressMethod::kTopk) {
    TopkOptions o;
    o.density = c.density;  // job_spec.cc makes 0.02 topk's default
    o.value_bits = static_cast<int>(c.value_bits);
    o.chunk_size = c.chunk_size;
    o.error_feedback = c.error_feedback;
    o.ef_decay = c.ef_decay;
    inner = std::make_unique<TopkCompressor>(*counting, o);
  } else if (c.method == CompressMethod::kGradiveq) {
    GradiVeqOptions o;
    o.flat = c.slicing == SliceLayout::kFlat;
    o.matrix = c.slicing == SliceLayout::kMatrix;
    o.slice_size = c.slice_size;
    o.basis_size = c.basis_size;
    o.refresh_every = c.refresh_every;
    o.start_iter = c.start_iter;
    o.bucket_numel =
        std::max<int64_t>(1, static_cast<int64_t>(spec.sync.bucket_mb * (1 << 20)) / 4);
    o.error_feedback = c.error_feedback;
    o.ef_decay = c.ef_decay;
    inner = std::make_unique<GradiVeqCompressor>(*counting, o);
  } else {
    return invalid_argument("compress.method '" + name_of(c.method) +
                            "' is unknown (none|dgc|powersgd|fp16|int8|int4|topk|gradiveq)");
  }
  return std::unique_ptr<GradientReducer>(
      std::make_unique<MeteredReducer>(std::move(counting), std::move(inner)));
}

}  // namespace tern
