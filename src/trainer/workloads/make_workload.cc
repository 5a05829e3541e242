#include "trainer/workloads/make_workload.h"

#include "trainer/workloads/dlrm/dlrm_workload.h"
#include "trainer/workloads/image/image_workload.h"
#include "trainer/workloads/torchscript/torchscript_workload.h"

namespace tern {

std::unique_ptr<Workload> make_workload(const JobSpec& spec) {
  if (spec.model.type == ModelType::kMlp || spec.model.type == ModelType::kCnn)
    return std::make_unique<ImageWorkload>();
  if (spec.model.type == ModelType::kDlrm) return std::make_unique<DlrmWorkload>();
  if (spec.model.type == ModelType::kTorchscript) return std::make_unique<TorchScriptWorkload>();
  return nullptr;
}

}  // namespace tern
