// Fuzz target: arbitrary bytes as a job spec (what SubmitJob and `tern run` accept). The
// parser must return a Status — never crash, hang or throw — and an accepted spec must
// round-trip through its effective YAML.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto r = tern::load_job_spec_text(text, "fuzz.yaml");
  if (r.is_ok()) {
    auto again = tern::load_job_spec_text(r->yaml, "fuzz-again.yaml");
    if (!again.is_ok() || again->yaml != r->yaml) std::abort();
  }
  return 0;
}
