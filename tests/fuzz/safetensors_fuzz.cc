// Fuzz target: arbitrary bytes as a safetensors file image (what `data.source: tensors` reads,
// and what a user may hand over from anywhere). The parser must return a Status naming the
// file — never crash, hang, throw or read out of bounds — and what it accepts must be a layout
// the reader can trust: tensors that tile the data area exactly, each spanning its shape's
// bytes, which re-encode (our writer's header) to a file that parses to the same layout.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/utf8.h"
#include "trainer/workloads/formats/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = "fuzz.safetensors";
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto parsed = tern::parse_safetensors_image(bytes, file);
  if (!parsed.is_ok()) {
    if (parsed.status().code() != tern::StatusCode::kInvalidArgument) std::abort();
    const std::string& m = parsed.status().message();
    if (m.rfind(file + ": ", 0) != 0) std::abort();  // names the file
    // Quotes from the file are clipped and made valid UTF-8 (errors go into protobuf strings).
    if (m.size() > 1024 || tern::first_invalid_utf8(m) != std::string_view::npos) std::abort();
    return 0;
  }
  uint64_t cursor = 0;
  for (const auto& t : parsed->tensors) {
    if (t.begin != cursor || t.end < t.begin) std::abort();
    uint64_t numel = 1;  // <= the shape's extent, which the parser keeps within int64
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      numel *= static_cast<uint64_t>(d);
    }
    if (t.end - t.begin != numel * tern::safetensors_dtype_size(t.dtype)) std::abort();
    cursor = t.end;
  }
  if (parsed->data_start + cursor != size) std::abort();

  auto header = tern::encode_safetensors_header(parsed->tensors, parsed->metadata, file);
  if (!header.is_ok()) std::abort();  // whatever the reader accepts, the writer can write
  std::string again = *header + std::string(bytes.substr(parsed->data_start));
  auto reparsed = tern::parse_safetensors_image(again, file);
  if (!reparsed.is_ok() || !(reparsed->tensors == parsed->tensors) ||
      reparsed->metadata != parsed->metadata) {
    std::abort();
  }
  return 0;
}
