#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace tern {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

Status FileWriter::write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return internal_error(path_ + ": write failed after " + std::to_string(written_) +
                            " bytes: " + errno_text());
    }
    p += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
  return Status::ok();
}

std::string parent_dir(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return internal_error(dir + ": cannot open directory to fsync: " + errno_text());
  int rc = ::fsync(fd);
  std::string err = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) return internal_error(dir + ": fsync of directory failed: " + err);
  return Status::ok();
}

Status atomic_write_file(const std::string& path, const std::function<Status(FileWriter&)>& fill,
                         const AtomicWriteOptions& options) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      options.tmp_suffix.empty()
          ? path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1))
          : path + options.tmp_suffix;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, options.mode);
  if (fd < 0) return internal_error(tmp + ": cannot create: " + errno_text());
  auto fail = [&](Status st) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  };
  // O_CREAT applies the mode only to a new file: a private file's temp that a crash left
  // behind is made private again.
  if ((options.mode & 077) == 0 && ::fchmod(fd, options.mode) != 0) {
    return fail(internal_error(tmp + ": chmod failed: " + errno_text()));
  }
  FileWriter writer(fd, tmp);
  Status st = fill(writer);
  if (!st.is_ok()) return fail(st);
  if (options.sync && ::fsync(fd) != 0) {
    return fail(internal_error(tmp + ": fsync failed: " + errno_text()));
  }
  if (::close(fd) != 0) {
    fd = -1;
    return fail(internal_error(tmp + ": close failed: " + errno_text()));
  }
  fd = -1;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(internal_error(tmp + ": rename to " + path + " failed: " + errno_text()));
  }
  return options.sync ? fsync_dir(parent_dir(path)) : Status::ok();
}

Status atomic_write_file(const std::string& path, std::string_view contents,
                         const AtomicWriteOptions& options) {
  return atomic_write_file(
      path, [&](FileWriter& w) { return w.write(contents); }, options);
}

Result<std::string> read_whole_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found(path + ": no such file");
    return internal_error(path + ": cannot open: " + errno_text());
  }
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    std::string err = errno_text();
    ::close(fd);
    return internal_error(path + ": fstat failed: " + err);
  }
  uint64_t size = static_cast<uint64_t>(sb.st_size);
  if (size > max_bytes) {
    ::close(fd);
    return resource_exhausted(path + ": file is " + std::to_string(size) +
                              " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::string buf(size, '\0');
  uint64_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, buf.data() + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = errno_text();
      ::close(fd);
      return internal_error(path + ": read failed: " + err);
    }
    if (n == 0) break;  // shrank while reading: the parser sees the short image
    got += static_cast<uint64_t>(n);
  }
  ::close(fd);
  buf.resize(got);
  return buf;
}

}  // namespace tern
