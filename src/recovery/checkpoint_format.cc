#include "recovery/checkpoint_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <set>

#include "common/crc32.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error \
    "tern checkpoints store tensor bytes in little-endian order; big-endian hosts are unsupported"
#endif

namespace tern {
namespace {

constexpr uint32_t kKindMeta = 1;
constexpr uint32_t kKindTensor = 2;

void put_u16(std::string* out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_str(std::string* out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

uint64_t get_le(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// A bounds-checked reader over one section's payload.
class Cursor {
 public:
  Cursor(std::string_view data) : data_(data) {}
  size_t remaining() const { return data_.size() - pos_; }
  bool take(size_t n, std::string_view* out) {
    if (n > remaining()) return false;
    *out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool u8(uint8_t* v) { return fixed(1, v); }
  bool u16(uint16_t* v) { return fixed(2, v); }
  bool u32(uint32_t* v) { return fixed(4, v); }
  bool u64(uint64_t* v) { return fixed(8, v); }
  bool str(std::string* s, uint32_t max) {
    uint32_t n = 0;
    std::string_view sv;
    if (!u32(&n) || n > max || !take(n, &sv)) return false;
    s->assign(sv.data(), sv.size());
    return true;
  }

 private:
  template <typename T>
  bool fixed(int n, T* v) {
    if (static_cast<size_t>(n) > remaining()) return false;
    *v = static_cast<T>(get_le(data_.data() + pos_, n));
    pos_ += static_cast<size_t>(n);
    return true;
  }
  std::string_view data_;
  size_t pos_ = 0;
};

std::string file_header(uint32_t sections, uint64_t total) {
  std::string h(kCheckpointMagic, sizeof(kCheckpointMagic));
  put_u32(&h, kCheckpointVersion);
  put_u32(&h, sections);
  put_u64(&h, total);
  put_u32(&h, 0);
  put_u32(&h, checkpoint_crc32(0, h.data(), h.size()));
  return h;
}

std::string section_header(uint32_t kind, uint64_t payload_len, uint32_t payload_crc) {
  std::string h;
  put_u32(&h, kind);
  put_u32(&h, 0);
  put_u64(&h, payload_len);
  put_u32(&h, payload_crc);
  put_u32(&h, checkpoint_crc32(0, h.data(), h.size()));
  return h;
}

std::string encode_meta(const CheckpointMeta& m) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"step", std::to_string(m.step)},
      {"epoch", std::to_string(m.epoch)},
      {"sampler_position", std::to_string(m.sampler_position)},
      {"rank", std::to_string(m.rank)},
      {"world", std::to_string(m.world)},
      {"generation", std::to_string(m.generation)},
      {"job_id", m.job_id},
  };
  for (const auto& [k, v] : m.extra) kv.emplace_back("extra." + k, v);
  std::string out;
  put_u32(&out, static_cast<uint32_t>(kv.size()));
  for (const auto& [k, v] : kv) {
    put_str(&out, k);
    put_str(&out, v);
  }
  return out;
}

bool parse_i64(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  uint64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (v > (static_cast<uint64_t>(INT64_MAX) + 1 - d) / 10) return false;
    v = v * 10 + d;
  }
  if (!neg && v > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return true;
}

Status bad(const std::string& name, const std::string& what) {
  return data_loss(name + ": corrupt checkpoint: " + what);
}

Status parse_meta(std::string_view payload, const std::string& name, CheckpointMeta* meta) {
  Cursor c(payload);
  uint32_t count = 0;
  if (!c.u32(&count)) return bad(name, "meta section shorter than its entry count");
  // Each entry takes at least 8 bytes: a count beyond that is a lie, refused before looping.
  if (count > c.remaining() / 8) {
    return bad(name, "meta entry count " + std::to_string(count) + " exceeds the section size");
  }
  std::set<std::string> seen;
  std::map<std::string, int64_t*> ints = {
      {"step", &meta->step}, {"epoch", &meta->epoch}, {"sampler_position", &meta->sampler_position},
      {"rank", &meta->rank}, {"world", &meta->world}, {"generation", &meta->generation},
  };
  for (uint32_t i = 0; i < count; ++i) {
    std::string k, v;
    if (!c.str(&k, kMaxNameBytes) || !c.str(&v, UINT32_MAX)) {
      return bad(name, "meta entry " + std::to_string(i) + " runs past the section end");
    }
    if (!seen.insert(k).second) return bad(name, "meta key '" + k + "' appears twice");
    auto it = ints.find(k);
    if (it != ints.end()) {
      if (!parse_i64(v, it->second)) {
        return bad(name, "meta key '" + k + "' is not an integer: '" + v.substr(0, 40) + "'");
      }
    } else if (k == "job_id") {
      meta->job_id = v;
    } else if (k.rfind("extra.", 0) == 0) {
      meta->extra[k.substr(6)] = v;
    } else {
      return bad(name, "unknown meta key '" + k.substr(0, 80) + "'");
    }
  }
  if (c.remaining() != 0) {
    return bad(name, std::to_string(c.remaining()) + " stray bytes after the meta entries");
  }
  for (const char* required : {"step", "rank", "world"}) {
    if (!seen.count(required)) return bad(name, std::string("meta key '") + required + "' missing");
  }
  return Status::ok();
}

Status parse_tensor(std::string_view payload, const std::string& name, size_t index,
                    TensorView* t) {
  Cursor c(payload);
  std::string where = "tensor " + std::to_string(index);
  if (!c.str(&t->name, kMaxNameBytes)) return bad(name, where + ": name runs past the section");
  if (t->name.empty()) return bad(name, where + ": empty name");
  where += " '" + t->name + "'";
  uint8_t code = 0, ndim = 0;
  uint16_t pad = 0;
  if (!c.u8(&code) || !c.u8(&ndim) || !c.u16(&pad)) return bad(name, where + ": header truncated");
  if (!dtype_valid(code)) return bad(name, where + ": unknown dtype code " + std::to_string(code));
  t->dtype = static_cast<DType>(code);
  if (pad != 0) return bad(name, where + ": reserved field is " + std::to_string(pad));
  if (ndim > kMaxTensorDims) {
    return bad(name, where + ": " + std::to_string(ndim) + " dims, more than " +
                         std::to_string(kMaxTensorDims));
  }
  uint64_t numel = 1;
  t->shape.clear();
  for (uint8_t d = 0; d < ndim; ++d) {
    uint64_t raw = 0;
    if (!c.u64(&raw)) return bad(name, where + ": dims truncated");
    int64_t dim = static_cast<int64_t>(raw);
    if (dim < 0) return bad(name, where + ": negative dim " + std::to_string(dim));
    t->shape.push_back(dim);
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel)) {
      return bad(name, where + ": element count overflows");
    }
  }
  uint64_t data_len = 0, expect = 0;
  if (!c.u64(&data_len)) return bad(name, where + ": data length truncated");
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t->dtype)), &expect) ||
      expect != data_len) {
    return bad(name, where + ": data length " + std::to_string(data_len) + " does not match " +
                         std::to_string(numel) + " elements of " + dtype_name(t->dtype));
  }
  if (data_len != c.remaining()) {
    return bad(name, where + ": data length " + std::to_string(data_len) + " but " +
                         std::to_string(c.remaining()) + " bytes left in the section");
  }
  c.take(data_len, &t->data);
  if (t->dtype == DType::kBool) {
    for (char b : t->data) {
      if (b != 0 && b != 1) return bad(name, where + ": bool value other than 0 or 1");
    }
  }
  return Status::ok();
}

struct Header {
  uint32_t sections = 0;
  uint64_t total = 0;
};

Status parse_file_header(std::string_view h, const std::string& name, Header* out) {
  if (h.size() < kCheckpointHeaderBytes) {
    return bad(name, "truncated: " + std::to_string(h.size()) + " bytes, shorter than the " +
                         std::to_string(kCheckpointHeaderBytes) + "-byte header");
  }
  if (std::memcmp(h.data(), kCheckpointMagic, sizeof(kCheckpointMagic)) != 0) {
    return bad(name, "wrong magic (not a tern checkpoint)");
  }
  uint32_t crc = static_cast<uint32_t>(get_le(h.data() + 28, 4));
  if (crc != checkpoint_crc32(0, h.data(), 28)) return bad(name, "file header checksum mismatch");
  uint32_t version = static_cast<uint32_t>(get_le(h.data() + 8, 4));
  if (version != kCheckpointVersion) {
    return failed_precondition(name + ": checkpoint format version " + std::to_string(version) +
                               ", this build reads version " + std::to_string(kCheckpointVersion));
  }
  out->sections = static_cast<uint32_t>(get_le(h.data() + 12, 4));
  out->total = get_le(h.data() + 16, 8);
  uint32_t flags = static_cast<uint32_t>(get_le(h.data() + 24, 4));
  if (flags != 0) return bad(name, "unknown flags " + std::to_string(flags));
  if (out->sections == 0) return bad(name, "no sections (the meta section is required)");
  return Status::ok();
}

struct SectionHeader {
  uint32_t kind = 0;
  uint64_t length = 0;
  uint32_t crc = 0;
};

Status parse_section_header(const char* p, const std::string& name, uint32_t index,
                            SectionHeader* s) {
  std::string where = "section " + std::to_string(index);
  if (static_cast<uint32_t>(get_le(p + 20, 4)) != checkpoint_crc32(0, p, 20)) {
    return bad(name, where + " header checksum mismatch");
  }
  s->kind = static_cast<uint32_t>(get_le(p, 4));
  s->length = get_le(p + 8, 8);
  s->crc = static_cast<uint32_t>(get_le(p + 16, 4));
  if (s->kind != kKindMeta && s->kind != kKindTensor) {
    return bad(name, where + " has unknown kind " + std::to_string(s->kind));
  }
  if (get_le(p + 4, 4) != 0) return bad(name, where + " reserved field is not zero");
  if ((index == 0) != (s->kind == kKindMeta)) {
    return bad(name,
               where + (index == 0 ? " is not the meta section" : " is a second meta section"));
  }
  return Status::ok();
}

}  // namespace

uint32_t checkpoint_crc32(uint32_t crc, const void* data, size_t size) {
  return tern::crc32(crc, data, size);
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
    case DType::kFloat16:
      return 2;
    case DType::kBFloat16:
      return 2;
    case DType::kInt8:
      return 1;
    case DType::kUInt8:
      return 1;
    case DType::kInt16:
      return 2;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kBool:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kInt8:
      return "int8";
    case DType::kUInt8:
      return "uint8";
    case DType::kInt16:
      return "int16";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kBool:
      return "bool";
  }
  return "unknown";
}

bool dtype_valid(uint8_t code) { return code >= 1 && code <= 10; }

Result<EncodeResult> encode_checkpoint(const CheckpointMeta& meta,
                                       const std::vector<TensorSpan>& tensors, ByteSink& sink,
                                       const std::string& name) {
  // Validate and build each tensor's payload header first, so the total length is known
  // before the first byte goes out.
  std::set<std::string> names;
  std::vector<std::string> tensor_heads;
  tensor_heads.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpan& t = tensors[i];
    std::string where = name + ": tensor " + std::to_string(i) + " '" + t.name + "'";
    if (t.name.empty() || t.name.size() > kMaxNameBytes) {
      return invalid_argument(where + ": name must be 1.." + std::to_string(kMaxNameBytes) +
                              " bytes");
    }
    if (!names.insert(t.name).second) return invalid_argument(where + ": duplicate name");
    if (!dtype_valid(static_cast<uint8_t>(t.dtype))) return invalid_argument(where + ": bad dtype");
    if (t.shape.size() > kMaxTensorDims) return invalid_argument(where + ": too many dims");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return invalid_argument(where + ": negative dim " + std::to_string(d));
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * dtype_size(t.dtype) != t.bytes || (t.bytes > 0 && t.data == nullptr)) {
      return invalid_argument(where + ": " + std::to_string(t.bytes) + " bytes given for " +
                              std::to_string(numel) + " elements of " + dtype_name(t.dtype));
    }
    std::string h;
    put_str(&h, t.name);
    h.push_back(static_cast<char>(t.dtype));
    h.push_back(static_cast<char>(t.shape.size()));
    put_u16(&h, 0);
    for (int64_t d : t.shape) put_u64(&h, static_cast<uint64_t>(d));
    put_u64(&h, t.bytes);
    tensor_heads.push_back(std::move(h));
  }
  std::string meta_payload = encode_meta(meta);
  uint64_t total = kCheckpointHeaderBytes + kSectionHeaderBytes + meta_payload.size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    total += kSectionHeaderBytes + tensor_heads[i].size() + tensors[i].bytes;
  }

  EncodeResult result;
  std::string fh = file_header(static_cast<uint32_t>(1 + tensors.size()), total);
  uint32_t digest = checkpoint_crc32(0, fh.data(), fh.size());
  TERN_RETURN_IF_ERROR(sink.write(fh.data(), fh.size()));
  std::string sh = section_header(kKindMeta, meta_payload.size(),
                                  checkpoint_crc32(0, meta_payload.data(), meta_payload.size()));
  digest = checkpoint_crc32(digest, sh.data(), sh.size());
  TERN_RETURN_IF_ERROR(sink.write(sh.data(), sh.size()));
  TERN_RETURN_IF_ERROR(sink.write(meta_payload.data(), meta_payload.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& head = tensor_heads[i];
    uint32_t crc = checkpoint_crc32(0, head.data(), head.size());
    crc = checkpoint_crc32(crc, tensors[i].data, tensors[i].bytes);
    sh = section_header(kKindTensor, head.size() + tensors[i].bytes, crc);
    digest = checkpoint_crc32(digest, sh.data(), sh.size());
    TERN_RETURN_IF_ERROR(sink.write(sh.data(), sh.size()));
    TERN_RETURN_IF_ERROR(sink.write(head.data(), head.size()));
    if (tensors[i].bytes > 0) TERN_RETURN_IF_ERROR(sink.write(tensors[i].data, tensors[i].bytes));
  }
  result.bytes = total;
  result.digest = digest;
  return result;
}

Result<std::string> encode_checkpoint_to_string(const CheckpointMeta& meta,
                                                const std::vector<TensorSpan>& tensors) {
  StringSink sink;
  auto r = encode_checkpoint(meta, tensors, sink, "<memory>");
  if (!r.is_ok()) return r.status();
  return std::move(sink.out);
}

Result<ParsedCheckpoint> parse_checkpoint(std::string_view bytes, const std::string& name) {
  Header h;
  TERN_RETURN_IF_ERROR(parse_file_header(bytes, name, &h));
  if (h.total != bytes.size()) {
    return bad(name, (bytes.size() < h.total ? "truncated: " : "trailing bytes: ") +
                         std::to_string(bytes.size()) + " bytes, the header says " +
                         std::to_string(h.total));
  }
  // Each section takes at least its header: a count beyond that cannot be real.
  if (h.sections > (bytes.size() - kCheckpointHeaderBytes) / kSectionHeaderBytes) {
    return bad(name, "section count " + std::to_string(h.sections) + " exceeds the file size");
  }
  ParsedCheckpoint out;
  out.digest = checkpoint_crc32(0, bytes.data(), kCheckpointHeaderBytes);
  std::set<std::string> names;
  size_t pos = kCheckpointHeaderBytes;
  for (uint32_t i = 0; i < h.sections; ++i) {
    if (bytes.size() - pos < kSectionHeaderBytes) {
      return bad(name, "section " + std::to_string(i) + " header truncated at offset " +
                           std::to_string(pos));
    }
    SectionHeader s;
    TERN_RETURN_IF_ERROR(parse_section_header(bytes.data() + pos, name, i, &s));
    out.digest = checkpoint_crc32(out.digest, bytes.data() + pos, kSectionHeaderBytes);
    pos += kSectionHeaderBytes;
    if (s.length > bytes.size() - pos) {
      return bad(name, "section " + std::to_string(i) + " length " + std::to_string(s.length) +
                           " runs past the end of the file at offset " + std::to_string(pos));
    }
    std::string_view payload = bytes.substr(pos, s.length);
    if (checkpoint_crc32(0, payload.data(), payload.size()) != s.crc) {
      return bad(name, "section " + std::to_string(i) + " (offset " + std::to_string(pos) + ", " +
                           std::to_string(s.length) + " bytes) checksum mismatch");
    }
    pos += s.length;
    if (s.kind == kKindMeta) {
      TERN_RETURN_IF_ERROR(parse_meta(payload, name, &out.meta));
    } else {
      TensorView t;
      TERN_RETURN_IF_ERROR(parse_tensor(payload, name, out.tensors.size(), &t));
      if (!names.insert(t.name).second) return bad(name, "tensor name '" + t.name + "' repeated");
      out.tensors.push_back(std::move(t));
    }
  }
  if (pos != bytes.size()) {
    return bad(name, std::to_string(bytes.size() - pos) + " bytes after the last section");
  }
  return out;
}

Result<uint32_t> checkpoint_file_digest(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found(path + ": no such file");
    return internal_error(path + ": cannot open: " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat sb {};
  if (::fstat(fd, &sb) != 0)
    return internal_error(path + ": fstat failed: " + std::strerror(errno));
  uint64_t size = static_cast<uint64_t>(sb.st_size);
  auto read_at = [&](uint64_t off, char* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd, buf + got, n - got, static_cast<off_t>(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  char hb[kCheckpointHeaderBytes];
  if (size < kCheckpointHeaderBytes || !read_at(0, hb, sizeof(hb))) {
    return bad(path, "truncated: " + std::to_string(size) + " bytes, shorter than the header");
  }
  Header h;
  TERN_RETURN_IF_ERROR(parse_file_header(std::string_view(hb, sizeof(hb)), path, &h));
  if (h.total != size) {
    return bad(path, (size < h.total ? "truncated: " : "trailing bytes: ") + std::to_string(size) +
                         " bytes, the header says " + std::to_string(h.total));
  }
  uint32_t digest = checkpoint_crc32(0, hb, sizeof(hb));
  uint64_t pos = kCheckpointHeaderBytes;
  for (uint32_t i = 0; i < h.sections; ++i) {
    char sb2[kSectionHeaderBytes];
    if (size - pos < kSectionHeaderBytes || !read_at(pos, sb2, sizeof(sb2))) {
      return bad(path, "section " + std::to_string(i) + " header truncated at offset " +
                           std::to_string(pos));
    }
    SectionHeader s;
    TERN_RETURN_IF_ERROR(parse_section_header(sb2, path, i, &s));
    digest = checkpoint_crc32(digest, sb2, sizeof(sb2));
    pos += kSectionHeaderBytes;
    if (s.length > size - pos) {
      return bad(path, "section " + std::to_string(i) + " length " + std::to_string(s.length) +
                           " runs past the end of the file");
    }
    pos += s.length;
  }
  if (pos != size) return bad(path, std::to_string(size - pos) + " bytes after the last section");
  return digest;
}

}  // namespace tern
