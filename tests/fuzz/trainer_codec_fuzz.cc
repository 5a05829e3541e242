// Fuzz target: arbitrary bytes as a trainer's stdout line (what a worker daemon and `tern run`
// read from a process they do not trust to be well-formed), as a command line on a trainer's
// stdin, and, split at NUL bytes, as a trainer's argv. Decoding must return a Status — never
// crash, hang or throw — and what decodes must be stable:
//   - an event encodes to a line that decodes to the same kind, and encoding that again gives
//     the same line (the first encode normalises: nulls for non-finite numbers, defaults for
//     mistyped fields);
//   - a command encodes to a line that decodes to the same command;
//   - parsed flags build an argv (to_argv) that parses to the same flags.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/trainer_codec.h"

namespace {

void check_event(const std::string& line) {
  auto first = tern::decode_event(line);
  if (!first.is_ok()) {
    if (first.status().message().empty()) std::abort();
    return;
  }
  const std::string encoded = tern::encode(*first);
  auto second = tern::decode_event(encoded);
  if (!second.is_ok()) std::abort();
  if (tern::event_kind(second->body) != tern::event_kind(first->body)) std::abort();
  if (second->body.index() != first->body.index()) std::abort();
  if (tern::encode(*second) != encoded) std::abort();
}

void check_command(const std::string& line) {
  auto first = tern::decode_command(line);
  if (!first.is_ok()) {
    if (first.status().message().empty()) std::abort();
    return;
  }
  auto second = tern::decode_command(tern::encode(*first));
  if (!second.is_ok() || second->index() != first->index()) std::abort();
  if (const auto* a = std::get_if<tern::RegroupCommand>(&*first)) {
    const auto& b = std::get<tern::RegroupCommand>(*second);
    if (a->generation != b.generation || a->world != b.world || a->master != b.master ||
        a->rollback != b.rollback || a->members != b.members) {
      std::abort();
    }
  }
}

bool same(const tern::TrainerArgs& a, const tern::TrainerArgs& b) {
  return a.spec_file == b.spec_file && a.rank == b.rank && a.world == b.world &&
         a.master == b.master && a.generation == b.generation && a.job_id == b.job_id &&
         a.work_dir == b.work_dir && a.cluster_file == b.cluster_file && a.regions == b.regions &&
         a.bind_host == b.bind_host && a.members == b.members && a.standby == b.standby;
}

void check_argv(const std::string& bytes) {
  std::vector<std::string> argv = {"tern-trainer"};
  size_t at = 0;
  for (;;) {
    size_t nul = bytes.find('\0', at);
    argv.push_back(bytes.substr(at, nul == std::string::npos ? std::string::npos : nul - at));
    if (nul == std::string::npos) break;
    at = nul + 1;
  }
  auto parsed = tern::parse_trainer_args(argv);
  if (!parsed.is_ok()) return;
  auto again = tern::parse_trainer_args(tern::to_argv("tern-trainer", *parsed));
  if (!again.is_ok() || !same(*parsed, *again)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  check_event(bytes);
  check_command(bytes);
  check_argv(bytes);
  return 0;
}
