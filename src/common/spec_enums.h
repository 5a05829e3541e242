// The closed vocabularies of a job spec (common/job_spec.h) as enum types. The YAML words are
// parsed once, at validation (job_spec.cc); everything after it switches on these types and
// never compares the words. name_of gives the word back (logs, JSON, the effective YAML).
//
// Adding a value: append it to the enum and, at the same position, its word to the
// TERN_SPEC_ENUM list below (the table is indexed by the enum's value).
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace tern {

enum class ModelType { kMlp, kCnn, kDlrm, kTorchscript };
enum class LossKind { kCrossEntropy, kMse, kBceWithLogits, kReturned };
enum class EvalMetric { kAccuracy, kLoss, kPerplexity, kAuc };
enum class EmbeddingSharding { kRoundRobin, kBalanced };
enum class DataSource { kFashionMnist, kSynthetic, kCriteo, kSyntheticCtr, kTensors, kTokens };
enum class TokenDtype { kUint16, kUint32 };
enum class OnMalformed { kSkip, kFail };
enum class EmbeddingNoise { kLazy, kEager };
enum class PerSampleGrad { kAuto, kVectorized, kMicrobatch };
enum class LrScheduleKind { kConstant, kCosine, kStep };
enum class OptimizerKind { kSgd, kAdamw };
enum class OnNonFinite { kFail, kSkipStep };
enum class StrategyKind { kSsgd, kDssgd, kTsu, kDts, kHierarchical };
enum class OnMismatch { kFail, kMajority };
enum class CompressMethod { kNone, kDgc, kPowersgd, kFp16, kInt8, kInt4, kTopk, kGradiveq };
enum class SliceLayout { kShaped, kFlat, kMatrix };
enum class StragglerMode {
  kNone,
  kGradientCoding,
  kProportional,
  kCodedProportional,
  kBackup,
  kRandomCode
};
enum class RecoveryMode { kNone, kFull, kPartial };
enum class RowPolicy { kFull, kMfu, kSsu };
enum class IntervalPolicy { kFixed, kCpr, kYoungDaly };
enum class DeviceKind { kCpu, kCuda, kAuto };
enum class PlacementPolicy { kAny, kSpread, kPack };

// SpecEnum<E>::kNames[i] is the YAML word of the value i.
template <class E>
struct SpecEnum;

#define TERN_SPEC_ENUM(E, ...)                               \
  template <>                                                \
  struct SpecEnum<E> {                                       \
    static constexpr const char* kWords[] = {__VA_ARGS__};   \
    static constexpr std::size_t kCount = std::size(kWords); \
  }

TERN_SPEC_ENUM(ModelType, "mlp", "cnn", "dlrm", "torchscript");
TERN_SPEC_ENUM(LossKind, "cross_entropy", "mse", "bce_with_logits", "returned");
TERN_SPEC_ENUM(EvalMetric, "accuracy", "loss", "perplexity", "auc");
TERN_SPEC_ENUM(EmbeddingSharding, "round_robin", "balanced");
TERN_SPEC_ENUM(DataSource, "fashion_mnist", "synthetic", "criteo", "synthetic_ctr", "tensors",
               "tokens");
TERN_SPEC_ENUM(TokenDtype, "uint16", "uint32");
TERN_SPEC_ENUM(OnMalformed, "skip", "fail");
TERN_SPEC_ENUM(EmbeddingNoise, "lazy", "eager");
TERN_SPEC_ENUM(PerSampleGrad, "auto", "vectorized", "microbatch");
TERN_SPEC_ENUM(LrScheduleKind, "constant", "cosine", "step");
TERN_SPEC_ENUM(OptimizerKind, "sgd", "adamw");
TERN_SPEC_ENUM(OnNonFinite, "fail", "skip_step");
TERN_SPEC_ENUM(StrategyKind, "ssgd", "dssgd", "tsu", "dts", "hierarchical");
TERN_SPEC_ENUM(OnMismatch, "fail", "majority");
TERN_SPEC_ENUM(CompressMethod, "none", "dgc", "powersgd", "fp16", "int8", "int4", "topk",
               "gradiveq");
TERN_SPEC_ENUM(SliceLayout, "shaped", "flat", "matrix");
TERN_SPEC_ENUM(StragglerMode, "none", "gradient_coding", "proportional", "coded_proportional",
               "backup", "random_code");
TERN_SPEC_ENUM(RecoveryMode, "none", "full", "partial");
TERN_SPEC_ENUM(RowPolicy, "full", "mfu", "ssu");
TERN_SPEC_ENUM(IntervalPolicy, "fixed", "cpr", "young_daly");
TERN_SPEC_ENUM(DeviceKind, "cpu", "cuda", "auto");
TERN_SPEC_ENUM(PlacementPolicy, "any", "spread", "pack");

#undef TERN_SPEC_ENUM

// The YAML word of a value.
template <class E>
std::string name_of(E value) {
  const auto i = static_cast<std::size_t>(value);
  return i < SpecEnum<E>::kCount ? SpecEnum<E>::kWords[i] : "?";
}

// Sets *out to the value whose word is `word`; false (and *out untouched) for any other word.
template <class E>
bool parse_spec_enum(std::string_view word, E* out) {
  for (std::size_t i = 0; i < SpecEnum<E>::kCount; ++i) {
    if (word == SpecEnum<E>::kWords[i]) {
      *out = static_cast<E>(i);
      return true;
    }
  }
  return false;
}

}  // namespace tern
