// Checkpoint file writing on top of common/file_util.h (atomic replacement, directory fsync and
// whole-file reads live there, shared with the journal and the worker daemon): a ByteSink over
// a file being written, so the checkpoint encoder can stream into an atomic write. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/file_util.h"
#include "common/status.h"
#include "recovery/checkpoint_format.h"

namespace tern {

// A ByteSink that writes to a file (FileWriter: loops over short writes, retries EINTR).
class FdSink : public ByteSink {
 public:
  explicit FdSink(FileWriter* file) : file_(file) {}
  Status write(const void* data, size_t size) override { return file_->write(data, size); }
  uint64_t written() const { return file_->written(); }

 private:
  FileWriter* file_;
};

// atomic_write_file (common/file_util.h) with `fill` writing through a ByteSink.
Status atomic_write_file(const std::string& path, const std::function<Status(FdSink&)>& fill);

}  // namespace tern
