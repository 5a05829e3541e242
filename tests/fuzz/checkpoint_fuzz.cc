// Fuzz target: arbitrary bytes as a checkpoint file image (what a trainer reads back on resume
// or recovery). The parser must return a Status — never crash, hang, throw or read out of
// bounds — and an accepted file must re-encode to exactly the same bytes (the format is
// canonical), so nothing a reader accepts can differ from what a writer produced.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "recovery/checkpoint_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto parsed = tern::parse_checkpoint(bytes, "fuzz.ckpt");
  if (!parsed.is_ok()) {
    if (parsed.status().message().rfind("fuzz.ckpt", 0) != 0) std::abort();  // names the file
    return 0;
  }
  std::vector<tern::TensorSpan> spans;
  for (const auto& t : parsed->tensors) {
    spans.push_back({t.name, t.dtype, t.shape, t.data.data(), t.data.size()});
  }
  auto again = tern::encode_checkpoint_to_string(parsed->meta, spans);
  if (!again.is_ok() || *again != bytes) std::abort();
  return 0;
}
