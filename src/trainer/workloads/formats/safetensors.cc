#include "trainer/workloads/formats/safetensors.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "recovery/fs_util.h"
#include "trainer/workloads/formats/safetensors_header.h"

namespace tern {
namespace {

// safetensors data is little-endian; tensors are filled by copying bytes.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

// Each safetensors dtype tern reads and writes, and its LibTorch type.
constexpr std::pair<SafetensorsDtype, at::ScalarType> kTorchTypes[] = {
    {SafetensorsDtype::kF64, at::kDouble}, {SafetensorsDtype::kF32, at::kFloat},
    {SafetensorsDtype::kF16, at::kHalf},   {SafetensorsDtype::kBF16, at::kBFloat16},
    {SafetensorsDtype::kI64, at::kLong},   {SafetensorsDtype::kI32, at::kInt},
    {SafetensorsDtype::kI16, at::kShort},  {SafetensorsDtype::kI8, at::kChar},
    {SafetensorsDtype::kU8, at::kByte},    {SafetensorsDtype::kBool, at::kBool},
};

at::ScalarType to_torch(SafetensorsDtype d) {
  for (const auto& [st, torch_type] : kTorchTypes) {
    if (st == d) return torch_type;
  }
  return at::kFloat;  // unreachable: the table lists every SafetensorsDtype
}

bool from_torch(at::ScalarType t, SafetensorsDtype* out) {
  for (const auto& [st, torch_type] : kTorchTypes) {
    if (torch_type == t) {
      *out = st;
      return true;
    }
  }
  return false;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads exactly `size` bytes at `offset` (loops over short reads, retries EINTR).
Status pread_all(int fd, void* buf, uint64_t size, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(buf);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return data_loss(path + ": read failed: " + std::strerror(errno));
    if (n == 0)
      return data_loss(path + ": file shrank while being read (at byte " + std::to_string(offset) +
                       ")");
    p += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::ok();
}

}  // namespace

// Copies rather than mmap: a mapped file that another process truncates raises SIGBUS on the
// next access, and "no input can crash the trainer" covers a data file replaced during a run;
// TensorData also concatenates shards and index_selects batches, which copy anyway, so a
// mapping would save little. Each tensor is read straight into its own storage (no staging
// buffer), so the peak is the data's size once.
Result<SafetensorsFile> read_safetensors_file(const std::string& path,
                                              const std::vector<std::string>& only) {
  // O_NONBLOCK: a FIFO named as a data file must be refused below, not block the open.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    int err = errno;
    if (err == ENOENT) return not_found(path + ": no such file");
    return not_found(path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return data_loss(path + ": fstat failed: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return invalid_argument(path + ": not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  char first[8] = {};
  if (file_size >= 8) TERN_RETURN_IF_ERROR(pread_all(fd.get(), first, 8, 0, path));
  TERN_ASSIGN_OR_RETURN(uint64_t n,
                        parse_safetensors_length(std::string_view(first, 8), file_size, path));
  std::string header(n, '\0');
  TERN_RETURN_IF_ERROR(pread_all(fd.get(), header.data(), n, 8, path));
  TERN_ASSIGN_OR_RETURN(SafetensorsLayout layout,
                        parse_safetensors_header(header, file_size - 8 - n, path));

  SafetensorsFile out;
  out.metadata = std::move(layout.metadata);
  out.tensors.reserve(layout.tensors.size());
  for (const auto& e : layout.tensors) {
    out.names.push_back(e.name);
    if (!only.empty() && std::find(only.begin(), only.end(), e.name) == only.end()) continue;
    at::Tensor t;
    try {
      t = at::empty(e.shape, at::TensorOptions().dtype(to_torch(e.dtype)).device(at::kCPU));
    } catch (const std::exception& ex) {  // c10::Error, std::bad_alloc
      return resource_exhausted(path + ": tensor '" + e.name + "': cannot allocate " +
                                std::to_string(e.end - e.begin) + " bytes: " + ex.what());
    }
    const uint64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      TERN_RETURN_IF_ERROR(
          pread_all(fd.get(), t.data_ptr(), bytes, layout.data_start + e.begin, path));
      TERN_RETURN_IF_ERROR(
          check_safetensors_bool(e, static_cast<const uint8_t*>(t.data_ptr()), bytes, path));
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

Result<NamedTensors> read_safetensors(const std::string& path) {
  TERN_ASSIGN_OR_RETURN(SafetensorsFile f, read_safetensors_file(path));
  return std::move(f.tensors);
}

Status write_safetensors(const std::string& path, const NamedTensors& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsEntry> entries;
  std::vector<at::Tensor> data;
  entries.reserve(tensors.size());
  data.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) return invalid_argument(path + ": tensor '" + name + "' is undefined");
    SafetensorsEntry e;
    e.name = name;
    if (!from_torch(tensor.scalar_type(), &e.dtype)) {
      return invalid_argument(path + ": tensor '" + name + "' has dtype " +
                              std::string(c10::toString(tensor.scalar_type())) +
                              ", which safetensors files here cannot hold");
    }
    at::Tensor t;
    try {
      t = tensor.detach().to(at::kCPU).contiguous();
    } catch (const std::exception& ex) {
      return internal_error(path + ": tensor '" + name + "': copy to CPU failed: " + ex.what());
    }
    e.shape = t.sizes().vec();
    e.begin = offset;
    offset += static_cast<uint64_t>(t.nbytes());
    e.end = offset;
    entries.push_back(std::move(e));
    data.push_back(std::move(t));
  }
  TERN_ASSIGN_OR_RETURN(std::string head, encode_safetensors_header(entries, metadata, path));
  return atomic_write_file(path, [&](FdSink& sink) -> Status {
    TERN_RETURN_IF_ERROR(sink.write(head.data(), head.size()));
    for (const auto& t : data) {
      if (t.nbytes() > 0) TERN_RETURN_IF_ERROR(sink.write(t.data_ptr(), t.nbytes()));
    }
    return Status::ok();
  });
}

}  // namespace tern
