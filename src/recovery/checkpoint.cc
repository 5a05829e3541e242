#include "recovery/checkpoint.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "recovery/fs_util.h"

namespace tern {

const at::Tensor* Checkpoint::find(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

Result<DType> dtype_from_scalar_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kChar:
      return DType::kInt8;
    case at::kByte:
      return DType::kUInt8;
    case at::kShort:
      return DType::kInt16;
    case at::kInt:
      return DType::kInt32;
    case at::kLong:
      return DType::kInt64;
    case at::kBool:
      return DType::kBool;
    default:
      return invalid_argument(std::string("dtype ") + c10::toString(type) +
                              " cannot be stored in a tern checkpoint");
  }
}

at::ScalarType scalar_type_from_dtype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return at::kFloat;
    case DType::kFloat64:
      return at::kDouble;
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    case DType::kInt8:
      return at::kChar;
    case DType::kUInt8:
      return at::kByte;
    case DType::kInt16:
      return at::kShort;
    case DType::kInt32:
      return at::kInt;
    case DType::kInt64:
      return at::kLong;
    case DType::kBool:
      return at::kBool;
  }
  return at::kFloat;
}

Result<EncodeResult> write_checkpoint_file(const std::string& path, const CheckpointMeta& meta,
                                           const NamedTensors& tensors) {
  std::vector<TensorSpan> spans;
  spans.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    std::string where = path + ": tensor '" + name + "'";
    if (!t.defined()) return invalid_argument(where + " is undefined");
    if (!t.device().is_cpu() || !t.is_contiguous()) {
      return invalid_argument(where + " must be a contiguous CPU tensor (snapshot it first)");
    }
    auto dtype = dtype_from_scalar_type(t.scalar_type());
    if (!dtype.is_ok()) return dtype.status().with_context(where);
    TensorSpan s;
    s.name = name;
    s.dtype = *dtype;
    s.shape = t.sizes().vec();
    s.data = t.numel() > 0 ? t.data_ptr() : nullptr;
    s.bytes = static_cast<size_t>(t.numel()) * t.element_size();
    spans.push_back(std::move(s));
  }
  EncodeResult result;
  Status st = atomic_write_file(path, [&](FdSink& sink) {
    auto r = encode_checkpoint(meta, spans, sink, path);
    if (!r.is_ok()) return r.status();
    result = *r;
    return Status::ok();
  });
  if (!st.is_ok()) return st;
  return result;
}

Result<Checkpoint> decode_checkpoint(std::string_view bytes, const std::string& name) {
  TERN_ASSIGN_OR_RETURN(ParsedCheckpoint parsed, parse_checkpoint(bytes, name));
  Checkpoint out;
  out.meta = std::move(parsed.meta);
  out.tensors.reserve(parsed.tensors.size());
  for (const auto& v : parsed.tensors) {
    // Sizes were validated against the bytes present, so this allocation is bounded by the
    // file size.
    at::Tensor t = at::empty(v.shape, at::TensorOptions().dtype(scalar_type_from_dtype(v.dtype)));
    if (!v.data.empty()) std::memcpy(t.data_ptr(), v.data.data(), v.data.size());
    out.tensors.emplace_back(v.name, std::move(t));
  }
  return out;
}

Result<Checkpoint> read_checkpoint_file(const std::string& path) {
  TERN_ASSIGN_OR_RETURN(std::string bytes, read_whole_file(path));
  return decode_checkpoint(bytes, path);
}

namespace {

Result<Checkpoint> read_part(const std::string& path, const ManifestFile* entry, int64_t step,
                             int64_t rank) {
  if (entry == nullptr) return not_found(path + ": not listed in the step's manifest");
  TERN_ASSIGN_OR_RETURN(std::string bytes, read_whole_file(path));
  if (bytes.size() != entry->bytes) {
    return data_loss(path + ": " + std::to_string(bytes.size()) + " bytes, the manifest says " +
                     std::to_string(entry->bytes));
  }
  TERN_ASSIGN_OR_RETURN(ParsedCheckpoint parsed, parse_checkpoint(bytes, path));
  if (parsed.digest != entry->digest) {
    return data_loss(path + ": digest differs from the manifest (file replaced after commit?)");
  }
  if (parsed.meta.step != step) {
    return data_loss(path + ": holds step " + std::to_string(parsed.meta.step) +
                     ", the manifest is for step " + std::to_string(step));
  }
  if (parsed.meta.rank != rank) {
    return data_loss(path + ": holds rank " + std::to_string(parsed.meta.rank) + ", expected " +
                     std::to_string(rank));
  }
  return decode_checkpoint(bytes, path);
}

Result<LoadedCheckpoint> load_step(const CheckpointStore& store, const Manifest& m,
                                   const LoadOptions& options) {
  auto entry = [&](const std::string& file) -> const ManifestFile* {
    for (const auto& f : m.files) {
      if (f.name == file) return &f;
    }
    return nullptr;
  };
  LoadedCheckpoint out;
  out.step = m.step;
  out.manifest = m;
  if (options.replicated) {
    std::string path = store.file_path(m.step, kReplicatedFile);
    TERN_ASSIGN_OR_RETURN(Checkpoint c, read_part(path, entry(kReplicatedFile), m.step, -1));
    out.replicated = std::move(c);
  }
  std::vector<int64_t> ranks = options.ranks;
  if (options.all_ranks) {
    ranks.clear();
    for (int64_t r = 0; r < m.world; ++r) ranks.push_back(r);
  }
  for (int64_t r : ranks) {
    if (r < 0 || r >= m.world) {
      return Status(StatusCode::kOutOfRange,
                    store.step_dir(m.step) + ": rank " + std::to_string(r) +
                        " requested, the checkpoint has world " + std::to_string(m.world));
    }
    std::string file = rank_file_name(r);
    TERN_ASSIGN_OR_RETURN(Checkpoint c,
                          read_part(store.file_path(m.step, file), entry(file), m.step, r));
    out.ranks.emplace(r, std::move(c));
  }
  return out;
}

}  // namespace

Result<LoadedCheckpoint> load_checkpoint_step(const CheckpointStore& store, int64_t step,
                                              const LoadOptions& options) {
  TERN_ASSIGN_OR_RETURN(Manifest m, store.check_step(step));
  return load_step(store, m, options);
}

Result<LoadedCheckpoint> load_latest_checkpoint(const CheckpointStore& store,
                                                const LoadOptions& options) {
  TERN_ASSIGN_OR_RETURN(std::vector<int64_t> steps, store.list_steps());
  std::vector<std::string> skipped;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (*it > options.max_step) continue;
    auto m = store.check_step(*it);
    Result<LoadedCheckpoint> loaded = m.is_ok() ? load_step(store, *m, options) : m.status();
    if (loaded.is_ok()) {
      loaded->skipped = std::move(skipped);
      return loaded;
    }
    // A request the checkpoint cannot answer (a rank beyond its world) is not damage.
    if (loaded.status().code() == StatusCode::kOutOfRange) return loaded.status();
    spdlog::warn("checkpoint step {} skipped: {}", *it, loaded.status().message());
    skipped.push_back(loaded.status().message());
  }
  std::string msg = store.dir() + ": no complete, valid checkpoint";
  if (options.max_step != std::numeric_limits<int64_t>::max()) {
    msg += " at or before step " + std::to_string(options.max_step);
  }
  for (const auto& s : skipped) msg += "; skipped " + s;
  return not_found(msg);
}

}  // namespace tern
