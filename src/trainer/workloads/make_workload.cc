#include "trainer/workloads/make_workload.h"

#include "trainer/workloads/dlrm/dlrm_workload.h"
#include "trainer/workloads/image/image_workload.h"
#include "trainer/workloads/torchscript/torchscript_workload.h"

namespace tern {

std::unique_ptr<Workload> make_workload(const JobSpec& spec) {
  if (spec.model.type == "mlp" || spec.model.type == "cnn") return std::make_unique<ImageWorkload>();
  if (spec.model.type == "dlrm") return std::make_unique<DlrmWorkload>();
  if (spec.model.type == "torchscript") return std::make_unique<TorchScriptWorkload>();
  return nullptr;
}

}  // namespace tern
