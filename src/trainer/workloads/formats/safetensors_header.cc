#include "trainer/workloads/formats/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "common/utf8.h"

namespace tern {
namespace {

using OrderedJson = nlohmann::ordered_json;

// A legitimate header nests three deep (header object, tensor entry, shape array); anything
// past this is refused before the DOM is built, so a header of a million '[' cannot make the
// parser allocate a million nested arrays.
constexpr int kMaxHeaderNesting = 8;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  SafetensorsDtype dtype;
  uint64_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", SafetensorsDtype::kF64, 8}, {"F32", SafetensorsDtype::kF32, 4},
    {"F16", SafetensorsDtype::kF16, 2}, {"BF16", SafetensorsDtype::kBF16, 2},
    {"I64", SafetensorsDtype::kI64, 8}, {"I32", SafetensorsDtype::kI32, 4},
    {"I16", SafetensorsDtype::kI16, 2}, {"I8", SafetensorsDtype::kI8, 1},
    {"U8", SafetensorsDtype::kU8, 1},   {"BOOL", SafetensorsDtype::kBool, 1},
};
// Defined by the format, but without a LibTorch 1.13 type.
constexpr const char* kUnsupportedDtypes[] = {"U16",     "U32",     "U64",     "F8_E4M3",
                                              "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                              "F4",      "C64",     "C128"};

std::string supported_list() {
  std::string s;
  for (const auto& d : kDtypes) s += std::string(s.empty() ? "" : ", ") + d.name;
  return s;
}

Status bad(const std::string& file, const std::string& what) {
  return invalid_argument(file + ": " + what);
}

std::string clip(std::string_view text, size_t limit = 64) { return clip_for_message(text, limit); }
std::string shown(const OrderedJson& v) { return clip(v.dump()); }

// The deepest bracket nesting outside JSON strings (a malformed string only makes this an
// over- or under-estimate; the JSON parser rejects it afterwards).
int max_nesting(std::string_view s) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      deepest = std::max(deepest, ++depth);
    else if (c == '}' || c == ']')
      --depth;
  }
  return deepest;
}

// A JSON integer >= 0 (a float, even 3.0, is not one). `what` names the field for errors.
Status get_count(const OrderedJson& v, const std::string& what, const std::string& file,
                 uint64_t* out) {
  if (!v.is_number_integer()) return bad(file, what + " must be an integer, got " + shown(v));
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return Status::ok();
  }
  int64_t s = v.get<int64_t>();
  if (s < 0) return bad(file, what + " must be >= 0, got " + std::to_string(s));
  *out = static_cast<uint64_t>(s);
  return Status::ok();
}

Result<SafetensorsDtype> parse_dtype(const OrderedJson& v, const std::string& where,
                                     const std::string& file) {
  if (!v.is_string()) return bad(file, where + ".dtype must be a string, got " + shown(v));
  const std::string& name = v.get_ref<const std::string&>();
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  for (const char* u : kUnsupportedDtypes) {
    if (name == u) {
      return bad(file, where + ".dtype " + clip(name) +
                           " is not supported (LibTorch 1.13 has no such "
                           "type; supported: " +
                           supported_list() + ")");
    }
  }
  return bad(
      file, where + ".dtype '" + clip(name) + "' is unknown (supported: " + supported_list() + ")");
}

Status parse_entry(const std::string& name, const OrderedJson& v, const std::string& file,
                   SafetensorsEntry* e) {
  const std::string where = "tensor '" + clip(name) + "'";
  if (name.empty()) return bad(file, "a tensor has an empty name");
  if (!v.is_object()) return bad(file, where + " must be an object, got " + shown(v));
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return bad(file, where + " has an unknown field '" + clip(key) +
                           "' (expected dtype, shape, data_offsets)");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) return bad(file, where + " has no " + key);
  }
  e->name = name;
  TERN_ASSIGN_OR_RETURN(e->dtype, parse_dtype(v["dtype"], where, file));

  const OrderedJson& shape = v["shape"];
  if (!shape.is_array()) return bad(file, where + ".shape must be an array, got " + shown(shape));
  // The element count, and the extent (the product with zero dimensions counted as 1): a
  // tensor with a zero dimension holds no bytes, but its strides are the extent's partial
  // products, so that too must fit in int64 for LibTorch.
  constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t numel = 1, extent = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    uint64_t dim = 0;
    TERN_RETURN_IF_ERROR(
        get_count(shape[i], where + ".shape[" + std::to_string(i) + "]", file, &dim));
    overflow = overflow || __builtin_mul_overflow(extent, std::max<uint64_t>(dim, 1), &extent) ||
               extent > kInt64Max;
    if (overflow) break;
    numel *= dim;  // <= extent
    e->shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t bytes = 0;
  if (overflow || __builtin_mul_overflow(numel, safetensors_dtype_size(e->dtype), &bytes) ||
      bytes > kInt64Max) {
    return bad(file, where + ".shape " + shown(shape) +
                         " overflows: its element count or byte size exceeds 2^63 - 1");
  }

  const OrderedJson& offs = v["data_offsets"];
  if (!offs.is_array() || offs.size() != 2) {
    return bad(file, where + ".data_offsets must be an array [begin, end], got " + shown(offs));
  }
  TERN_RETURN_IF_ERROR(get_count(offs[0], where + ".data_offsets[0]", file, &e->begin));
  TERN_RETURN_IF_ERROR(get_count(offs[1], where + ".data_offsets[1]", file, &e->end));
  if (e->end < e->begin) {
    return bad(file, where + ".data_offsets " + shown(offs) + " end before begin");
  }
  if (e->end - e->begin != bytes) {
    return bad(file, where + ".data_offsets " + shown(offs) + " span " +
                         std::to_string(e->end - e->begin) + " bytes, but " +
                         safetensors_dtype_name(e->dtype) + " " + shown(shape) + " needs " +
                         std::to_string(bytes));
  }
  return Status::ok();
}

}  // namespace

std::string clip_for_message(std::string_view text, size_t limit) {
  if (text.size() <= limit) return to_valid_utf8(text);
  size_t cut = limit;
  while (cut > 0 && (static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) --cut;  // a char boundary
  return to_valid_utf8(text.substr(0, cut)) + "...";
}

const char* safetensors_dtype_name(SafetensorsDtype dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

uint64_t safetensors_dtype_size(SafetensorsDtype dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

Result<uint64_t> parse_safetensors_length(std::string_view first_bytes, uint64_t file_size,
                                          const std::string& file) {
  if (file_size < 8 || first_bytes.size() < 8) {
    return bad(file, "not a safetensors file: " + std::to_string(file_size) +
                         " bytes, shorter than the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(first_bytes[i]);
  if (n > kMaxSafetensorsHeaderBytes) {
    return bad(file, "header length " + std::to_string(n) + " is larger than the cap of " +
                         std::to_string(kMaxSafetensorsHeaderBytes) +
                         " bytes (not a safetensors file, or a damaged one)");
  }
  if (n > file_size - 8) {
    return bad(file, "header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(file_size) + " bytes): truncated or not safetensors");
  }
  return n;
}

Result<SafetensorsLayout> parse_safetensors_header(std::string_view header, uint64_t data_size,
                                                   const std::string& file) {
  if (header.empty() || header[0] != '{') {
    return bad(file, "header must be a JSON object starting with '{'");
  }
  // nlohmann's lexer takes a NUL byte for the end of the input, so "{}\0anything" would parse.
  if (header.find('\0') != std::string_view::npos) {
    return bad(file, "header contains a NUL byte at offset " + std::to_string(header.find('\0')) +
                         " (not valid JSON)");
  }
  if (max_nesting(header) > kMaxHeaderNesting) {
    return bad(file, "header nests deeper than " + std::to_string(kMaxHeaderNesting) + " levels");
  }
  // nlohmann keeps the last of duplicate keys silently; the callback sees every key, so a
  // stack of the keys of each open object catches a duplicate at any depth.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto on_event = [&](int /*depth*/, nlohmann::detail::parse_event_t event, OrderedJson& parsed) {
    using E = nlohmann::detail::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty() && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  OrderedJson root;
  try {
    root = OrderedJson::parse(header.begin(), header.end(), on_event);
  } catch (const nlohmann::json::exception& e) {
    return bad(file, "header is not valid JSON: " + clip(e.what(), 240));
  }
  if (!duplicate.empty()) return bad(file, "header has the key '" + clip(duplicate) + "' twice");
  if (!root.is_object()) return bad(file, "header must be a JSON object");

  SafetensorsLayout layout;
  layout.data_start = 8 + header.size();
  for (const auto& [key, value] : root.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) {
        return bad(file, "__metadata__ must be an object of strings, got " + shown(value));
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return bad(file, "__metadata__['" + clip(mk) + "'] must be a string, got " + shown(mv));
        }
        layout.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e;
    TERN_RETURN_IF_ERROR(parse_entry(key, value, file, &e));
    layout.tensors.push_back(std::move(e));
  }

  // The data area must be tiled exactly: in offset order each tensor starts where the previous
  // ended (zero-byte tensors may share an offset), and the last ends at the end of the file.
  std::stable_sort(layout.tensors.begin(), layout.tensors.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t cursor = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const auto& e : layout.tensors) {
    if (e.end > data_size) {
      return bad(file, "tensor '" + clip(e.name) + "' data_offsets [" + std::to_string(e.begin) +
                           ", " + std::to_string(e.end) + "] run past the data area (" +
                           std::to_string(data_size) + " bytes)");
    }
    if (e.begin < cursor) {
      return bad(file, "tensor '" + clip(e.name) + "' data_offsets [" + std::to_string(e.begin) +
                           ", " + std::to_string(e.end) + "] overlap tensor '" + clip(prev->name) +
                           "' (ends at " + std::to_string(cursor) + ")");
    }
    if (e.begin > cursor) {
      return bad(file, "bytes [" + std::to_string(cursor) + ", " + std::to_string(e.begin) +
                           ") of the data area belong to no tensor (a hole before tensor '" +
                           clip(e.name) + "')");
    }
    cursor = e.end;
    prev = &e;
  }
  if (cursor != data_size) {
    return bad(file, "bytes [" + std::to_string(cursor) + ", " + std::to_string(data_size) +
                         ") at the end of the data area belong to no tensor");
  }
  return layout;
}

Status check_safetensors_bool(const SafetensorsEntry& entry, const uint8_t* data, uint64_t size,
                              const std::string& file) {
  if (entry.dtype != SafetensorsDtype::kBool) return Status::ok();
  for (uint64_t i = 0; i < size; ++i) {
    if (data[i] > 1) {
      return bad(file, "BOOL tensor '" + clip(entry.name) + "' holds byte " +
                           std::to_string(data[i]) + " at element " + std::to_string(i) +
                           " (only 0 and 1 are booleans)");
    }
  }
  return Status::ok();
}

Result<SafetensorsLayout> parse_safetensors_image(std::string_view bytes, const std::string& file) {
  TERN_ASSIGN_OR_RETURN(uint64_t n, parse_safetensors_length(bytes, bytes.size(), file));
  TERN_ASSIGN_OR_RETURN(SafetensorsLayout layout,
                        parse_safetensors_header(bytes.substr(8, n), bytes.size() - 8 - n, file));
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data()) + layout.data_start;
  for (const auto& e : layout.tensors) {
    TERN_RETURN_IF_ERROR(check_safetensors_bool(e, data + e.begin, e.end - e.begin, file));
  }
  return layout;
}

Result<std::string> encode_safetensors_header(const std::vector<SafetensorsEntry>& tensors,
                                              const std::map<std::string, std::string>& metadata,
                                              const std::string& file) {
  OrderedJson root = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    root[kMetadataKey] = std::move(meta);
  }
  std::set<std::string> names;
  uint64_t data_size = 0;
  for (const auto& t : tensors) {
    if (t.name == kMetadataKey) return bad(file, "a tensor may not be named __metadata__");
    if (!names.insert(t.name).second)
      return bad(file, "tensor name '" + clip(t.name) + "' appears twice");
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = safetensors_dtype_name(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = {t.begin, t.end};
    root[t.name] = std::move(entry);
    data_size = std::max(data_size, t.end);
  }
  std::string header;
  try {
    header = root.dump();  // throws on a name or value that is not UTF-8
  } catch (const nlohmann::json::exception& e) {
    return bad(file, "cannot encode the header: " + clip(e.what(), 240));
  }
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  // Whatever the reader would refuse (an empty name, a bad shape, offsets that do not tile the
  // data area) is refused here, so a file this writes always reads back.
  TERN_RETURN_IF_ERROR(parse_safetensors_header(header, data_size, file).status());
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header;
}

}  // namespace tern
