// File-system helpers for checkpoints: atomic replacement of a file and whole-file reads.
// Torch-free. Every error names the path and the failing call with errno's text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "recovery/checkpoint_format.h"

namespace tern {

// Writes to an open file descriptor (loops over short writes, retries EINTR).
class FdSink : public ByteSink {
 public:
  FdSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  Status write(const void* data, size_t size) override;
  uint64_t written() const { return written_; }

 private:
  int fd_;
  std::string path_;
  uint64_t written_ = 0;
};

// Atomically creates or replaces `path`: `fill` writes into a temp file in the same
// directory ("<name>.tmp.<pid>.<n>"), which is then fsync'ed, renamed over `path`, and the
// directory fsync'ed. On any error the temp file is removed and `path` is untouched, so a
// reader sees the old file or the new one, never a part.
Status atomic_write_file(const std::string& path, const std::function<Status(FdSink&)>& fill);

// fsync of a directory (makes renames and unlinks in it durable).
Status fsync_dir(const std::string& dir);

// Reads a whole file; NOT_FOUND when missing. The buffer is sized from fstat, never from
// anything inside the file; RESOURCE_EXHAUSTED when the file is larger than `max_bytes`.
Result<std::string> read_whole_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

}  // namespace tern
