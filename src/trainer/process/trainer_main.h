// The body of the tern-trainer process, separate from argument parsing so tests can run it.
#pragma once

#include "common/trainer_codec.h"  // TrainerArgs
#include "common/trainer_protocol.h"

namespace tern {

// Returns the process exit code (TrainerExit).
int trainer_main(const TrainerArgs& args);

}  // namespace tern
