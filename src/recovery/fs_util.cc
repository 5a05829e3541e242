#include "recovery/fs_util.h"

namespace tern {

Status atomic_write_file(const std::string& path, const std::function<Status(FdSink&)>& fill) {
  return atomic_write_file(path, std::function<Status(FileWriter&)>([&](FileWriter& file) {
                             FdSink sink(&file);
                             return fill(sink);
                           }));
}

}  // namespace tern
