#include "coordinator/journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace tern {
namespace {

constexpr uint32_t kMaxRecordBytes = 64u << 20;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

void put_u32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::string errno_text() { return std::strerror(errno); }

Status write_all(int fd, const std::string& data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return internal_error("write " + path + ": " + errno_text());
    }
    off += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return internal_error("open " + dir + ": " + errno_text());
  int r = ::fsync(fd);
  ::close(fd);
  if (r != 0) return internal_error("fsync " + dir + ": " + errno_text());
  return Status::ok();
}

}  // namespace

uint32_t crc32_ieee(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  uint32_t c = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string Journal::frame(const std::string& payload) {
  std::string out;
  out.reserve(payload.size() + 8);
  put_u32(&out, static_cast<uint32_t>(payload.size()));
  put_u32(&out, crc32_ieee(payload.data(), payload.size()));
  out += payload;
  return out;
}

Result<std::unique_ptr<Journal>> Journal::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return internal_error("cannot create journal directory " + dir + ": " + ec.message());
  std::unique_ptr<Journal> j(new Journal());
  j->dir_ = dir;
  j->path_ = dir + "/journal.log";
  std::string lock_path = dir + "/LOCK";
  j->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (j->lock_fd_ < 0) return internal_error("open " + lock_path + ": " + errno_text());
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return failed_precondition("journal " + dir +
                               " is locked by another coordinator; stop it first (tern cluster "
                               "down) or use another state_dir");
  }
  j->fd_ = ::open(j->path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (j->fd_ < 0) return internal_error("open " + j->path_ + ": " + errno_text());
  return j;
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Status Journal::replay(const std::function<Status(const std::string&)>& fn,
                       JournalReplayStats* stats) {
  JournalReplayStats local;
  JournalReplayStats& st = stats ? *stats : local;
  st = JournalReplayStats{};
  replayed_ = true;
  std::string data;
  {
    char buf[1 << 16];
    if (::lseek(fd_, 0, SEEK_SET) < 0) return internal_error("seek " + path_ + ": " + errno_text());
    while (true) {
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        return internal_error("read " + path_ + ": " + errno_text());
      }
      if (n == 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
  }
  size_t off = 0;
  while (off < data.size()) {
    size_t remaining = data.size() - off;
    if (remaining < 8) {
      st.torn_tail = true;
      break;
    }
    uint32_t len = get_u32(data.data() + off);
    uint32_t crc = get_u32(data.data() + off + 4);
    if (len > kMaxRecordBytes || len > remaining - 8) {
      st.torn_tail = true;
      break;
    }
    uint32_t actual = crc32_ieee(data.data() + off + 8, len);
    if (actual != crc) {
      if (off + 8 + len == data.size()) {  // the last record: a torn append
        st.torn_tail = true;
        break;
      }
      return data_loss(
          path_ + ": record " + std::to_string(st.records + 1) + " at byte " + std::to_string(off) +
          " fails its checksum and is followed by more records; the journal is corrupt. Move " +
          path_ + " aside to start with an empty state");
    }
    TERN_RETURN_IF_ERROR(fn(data.substr(off + 8, len)));
    off += 8 + len;
    ++st.records;
  }
  st.valid_bytes = off;
  if (st.torn_tail) {
    if (::ftruncate(fd_, static_cast<off_t>(off)) != 0 || ::fsync(fd_) != 0) {
      return internal_error("truncate torn tail of " + path_ + ": " + errno_text());
    }
  }
  records_ = st.records;
  return Status::ok();
}

Status Journal::append(const std::string& payload) {
  if (!replayed_) return failed_precondition("journal: replay() before append()");
  TERN_RETURN_IF_ERROR(write_all(fd_, frame(payload), path_));
  if (::fdatasync(fd_) != 0) return internal_error("fdatasync " + path_ + ": " + errno_text());
  ++records_;
  return Status::ok();
}

Status Journal::rewrite(const std::vector<std::string>& payloads) {
  std::string tmp = path_ + ".compact";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return internal_error("open " + tmp + ": " + errno_text());
  std::string all;
  for (const auto& p : payloads) all += frame(p);
  Status s = write_all(fd, all, tmp);
  if (s.is_ok() && ::fsync(fd) != 0) s = internal_error("fsync " + tmp + ": " + errno_text());
  ::close(fd);
  if (!s.is_ok()) return s;
  if (::rename(tmp.c_str(), path_.c_str()) != 0)
    return internal_error("rename " + tmp + ": " + errno_text());
  TERN_RETURN_IF_ERROR(sync_dir(dir_));
  int nfd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CLOEXEC, 0644);
  if (nfd < 0) return internal_error("reopen " + path_ + ": " + errno_text());
  ::close(fd_);
  fd_ = nfd;
  records_ = payloads.size();
  replayed_ = true;
  return Status::ok();
}

}  // namespace tern
