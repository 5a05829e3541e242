// tern-trainer: one rank of a training job (see src/common/trainer_protocol.h; its command
// line is parsed by common/trainer_codec.h, which also builds it for `tern run` and the daemon).
#include <iostream>
#include <string>
#include <vector>

#include "trainer/process/trainer_main.h"

int main(int argc, char** argv) {
  auto args = tern::parse_trainer_args(std::vector<std::string>(argv, argv + argc));
  if (!args.is_ok()) {
    if (args.status().code() == tern::StatusCode::kNotFound) {  // --help
      std::cout << tern::trainer_usage();
      return 0;
    }
    std::cerr << "tern-trainer: " << args.status().message() << "\n" << tern::trainer_usage();
    return tern::kTrainerBadArgs;
  }
  return tern::trainer_main(*args);
}
