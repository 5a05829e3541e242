// Fuzz target: arbitrary bytes as a job spec (what SubmitJob and `tern run` accept), and the
// same bytes as a --set value (SubmitJob's overrides, `tern run --set`). The parser must return
// a Status — never crash, hang or throw — and an accepted spec must round-trip through its
// effective YAML.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/job_spec.h"

namespace {

void check_round_trip(const tern::Result<tern::LoadedJobSpec>& r) {
  if (!r.is_ok()) return;
  auto again = tern::load_job_spec_text(r->yaml, "fuzz-again.yaml");
  if (!again.is_ok() || again->yaml != r->yaml) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  check_round_trip(tern::load_job_spec_text(text, "fuzz.yaml"));
  static const std::string kBase = "name: f\nworkers: 1\ndata: {source: synthetic}\n";
  check_round_trip(tern::load_job_spec_text(kBase, "fuzz.yaml", {"train=" + text}));
  check_round_trip(tern::load_job_spec_text(kBase, "fuzz.yaml", {"x=" + text}));
  return 0;
}
