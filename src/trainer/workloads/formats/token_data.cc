#include "trainer/workloads/formats/token_data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "trainer/loop/sampler.h"

namespace tern {

struct TokenData::Mapping {
  std::string path;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (data != nullptr && bytes > 0) munmap(const_cast<uint8_t*>(data), bytes);
  }
};

// Maps `path` read-only; `field` names the spec field in errors. (Static, not in an anonymous
// namespace, so that it can name the private Mapping.)
static Result<std::shared_ptr<TokenData::Mapping>> map_tokens(const std::string& path,
                                                              const std::string& field,
                                                              size_t width) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    // A missing data set is a data error (the trainer's exit 3), as for every other source.
    const std::string why =
        field + ": cannot open token file " + path + ": " + std::strerror(errno);
    return errno == ENOENT ? not_found(why) : invalid_argument(why);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(field + ": " + path + " is not a regular file");
  }
  auto m = std::make_shared<TokenData::Mapping>();
  m->path = path;
  m->bytes = static_cast<size_t>(st.st_size);
  if (m->bytes % width != 0) {
    ::close(fd);
    return invalid_argument(field + ": " + path + " holds " + std::to_string(m->bytes) +
                            " bytes, not a whole number of " + std::to_string(width * 8) +
                            "-bit tokens (data.token_dtype)");
  }
  if (m->bytes > 0) {
    void* p = mmap(nullptr, m->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      m->bytes = 0;
      return invalid_argument(field + ": cannot map " + path + ": " + std::strerror(e));
    }
    m->data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

TokenData::~TokenData() = default;

int64_t TokenData::token(const Split& split, int64_t i) const {
  const uint8_t* p = split.map->data + (split.begin + i) * (wide_ ? 4 : 2);
  // Little-endian, whatever the host.
  return wide_ ? static_cast<int64_t>(uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
                                      uint32_t{p[3]} << 24)
               : static_cast<int64_t>(uint16_t(p[0] | p[1] << 8));
}

Result<std::unique_ptr<TokenData>> TokenData::open(const DataSpec& spec) {
  std::unique_ptr<TokenData> d(new TokenData());
  d->wide_ = spec.token_dtype == TokenDtype::kUint32;
  d->block_ = spec.block_size;
  d->seed_ = static_cast<uint64_t>(spec.seed);
  const size_t width = d->wide_ ? 4 : 2;
  TERN_ASSIGN_OR_RETURN(auto train_map, map_tokens(spec.path, "data.path", width));
  const int64_t n = static_cast<int64_t>(train_map->bytes / width);
  d->train_ = {train_map, 0, n};
  if (spec.test_path.empty()) {
    const int64_t held = static_cast<int64_t>(static_cast<double>(n) * spec.test_fraction);
    d->train_.count = n - held;
    d->test_ = {train_map, n - held, held};
  } else {
    TERN_ASSIGN_OR_RETURN(auto test_map, map_tokens(spec.test_path, "data.test_path", width));
    d->test_ = {test_map, 0, static_cast<int64_t>(test_map->bytes / width)};
  }
  auto check = [&](const Split& s, const std::string& field, const std::string& what) -> Status {
    if (s.count <= d->block_) {
      return invalid_argument("data.block_size " + std::to_string(d->block_) +
                              " is larger than the " + what + " (" + field + " " + s.map->path +
                              ": " + std::to_string(s.count) +
                              " tokens; a sample needs block_size + 1)");
    }
    for (int64_t i = 0; i < s.count; ++i) {
      const int64_t id = d->token(s, i);
      if (id >= spec.vocab_size) {
        return invalid_argument(field + " " + s.map->path + ": token " +
                                std::to_string(s.begin + i) + " is " + std::to_string(id) +
                                ", not below data.vocab_size " + std::to_string(spec.vocab_size));
      }
    }
    return Status::ok();
  };
  TERN_RETURN_IF_ERROR(check(d->train_, "data.path", "training split"));
  TERN_RETURN_IF_ERROR(
      check(d->test_, spec.test_path.empty() ? "data.path" : "data.test_path",
            spec.test_path.empty() ? "held-out test split (data.test_fraction)" : "test split"));
  return d;
}

int64_t TokenData::train_size() const { return (train_.count - 1) / block_; }
int64_t TokenData::test_size() const { return (test_.count - 1) / block_; }

int64_t TokenData::train_offset(int64_t index) const {
  const uint64_t span =
      static_cast<uint64_t>(train_.count - block_);  // offsets 0 .. count - block - 1
  return static_cast<int64_t>(mix_seed(seed_, static_cast<uint64_t>(index)) % span);
}

Batch TokenData::windows(const Split& split, const std::vector<int64_t>& offsets) const {
  const int64_t b = static_cast<int64_t>(offsets.size());
  at::Tensor x = at::empty({b, block_}, at::kLong);
  at::Tensor y = at::empty({b, block_}, at::kLong);
  int64_t* xp = x.data_ptr<int64_t>();
  int64_t* yp = y.data_ptr<int64_t>();
  for (int64_t r = 0; r < b; ++r) {
    const int64_t off = offsets[static_cast<size_t>(r)];
    for (int64_t t = 0; t < block_; ++t) {
      xp[r * block_ + t] = token(split, off + t);
      yp[r * block_ + t] = token(split, off + t + 1);
    }
  }
  Batch out;
  out.x = x;
  out.y = y;
  return out;
}

Batch TokenData::train_batch(const std::vector<int64_t>& indices) {
  std::vector<int64_t> offsets;
  offsets.reserve(indices.size());
  for (int64_t i : indices) offsets.push_back(train_offset(i));
  return windows(train_, offsets);
}

Batch TokenData::test_batch(int64_t begin, int64_t end) {
  std::vector<int64_t> offsets;
  for (int64_t k = begin; k < end; ++k) offsets.push_back(k * block_);
  return windows(test_, offsets);
}

}  // namespace tern
