// Fuzz target: arbitrary bytes as the coordinator's journal file. Replay must return a Status —
// never crash or hang — hand over only records whose checksum holds, truncate a torn tail, and
// a second open of the repaired file must replay the same records with nothing torn.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "coordinator/journal.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path dir = fs::temp_directory_path() / ("tern-journal-fuzz-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "journal.log", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::vector<std::string> first, second;
  {
    auto j = tern::Journal::open(dir.string());
    if (!j.is_ok()) return 0;
    tern::JournalReplayStats st;
    tern::Status s = (*j)->replay([&](const std::string& r) { first.push_back(r); return tern::Status::ok(); }, &st);
    if (!s.is_ok()) return 0;  // DATA_LOSS: a corrupt record followed by more
    if (st.records != first.size()) std::abort();
  }
  auto j = tern::Journal::open(dir.string());
  if (!j.is_ok()) std::abort();
  tern::JournalReplayStats st;
  tern::Status s = (*j)->replay([&](const std::string& r) { second.push_back(r); return tern::Status::ok(); }, &st);
  if (!s.is_ok() || st.torn_tail || second != first) std::abort();
  return 0;
}
