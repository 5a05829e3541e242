// File-system helpers of every component (journal, checkpoints, worker daemon): atomic
// replacement of a file, directory fsync, whole-file reads. No LibTorch, no gRPC. Every error
// names the path and the failing call with errno's text.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tern {

// An open file being written: write() loops over short writes and retries EINTR.
class FileWriter {
 public:
  FileWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  Status write(const void* data, size_t size);
  Status write(std::string_view data) { return write(data.data(), data.size()); }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }  // the temp file's path
  uint64_t written() const { return written_; }

 private:
  int fd_;
  std::string path_;
  uint64_t written_ = 0;
};

struct AtomicWriteOptions {
  mode_t mode = 0644;  // of the new file (before the umask); 0600 for secrets
  // The temp file's name: "<path><tmp_suffix>" when set (a fixed name, replaced when a crash
  // left one), else "<path>.tmp.<pid>.<n>" (unique, for writers in several threads).
  std::string tmp_suffix;
  // fsync the file before the rename and the directory after it. false: still atomic for
  // readers and across a process crash, not across a power loss (caches that a restart can
  // rebuild, where an fsync per write costs more than the data is worth).
  bool sync = true;
};

// Atomically creates or replaces `path`: `fill` writes into a temp file in the same directory,
// which is then fsync'ed, renamed over `path`, and the directory fsync'ed (options.sync). On any
// error before the rename the temp file is removed and `path` is untouched; a crash at any point
// leaves the old file or the new one at `path`, never a part (at worst a stray temp file).
Status atomic_write_file(const std::string& path, const std::function<Status(FileWriter&)>& fill,
                         const AtomicWriteOptions& options = {});
Status atomic_write_file(const std::string& path, std::string_view contents,
                         const AtomicWriteOptions& options = {});

// fsync of a directory (makes creations, renames and unlinks in it durable).
Status fsync_dir(const std::string& dir);

// The directory of `path` ("." for a bare name).
std::string parent_dir(const std::string& path);

// Reads a whole file; NOT_FOUND when missing. The buffer is sized from fstat, never from
// anything inside the file; RESOURCE_EXHAUSTED when the file is larger than `max_bytes`.
Result<std::string> read_whole_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

}  // namespace tern
