#include "compress/factory.h"

namespace tern {

Result<std::unique_ptr<GradientReducer>> make_gradient_reducer(const JobSpec& spec, Communicator& comm,
                                                               const ReducerContext& ctx) {
  const std::string& m = spec.compress.method;
  if (m == "none") {
    return std::unique_ptr<GradientReducer>(
        std::make_unique<DenseReducer>(comm, static_cast<int64_t>(spec.sync.bucket_mb * (1 << 20))));
  }
  return failed_precondition("compress.method '" + m + "' is not implemented in this build");
}

}  // namespace tern
