// The contract between a trainer process and its parent (a worker daemon or `tern run`).
//
// Command line:
//   tern-trainer --spec FILE --rank R --world N --master HOST:PORT [--generation G]
//                [--job ID] [--cluster FILE --regions r0,r1,...] [--work-dir DIR] [--bind HOST]
// rank 0 hosts the rendezvous store at --master (listening on that address only, see
// comm/rendezvous_store.h); the others connect to it. Gloo pairs listen on --bind.
//
// Events: the trainer writes one JSON object per line on stdout. Every event has
//   "event", "job", "rank", "generation", "time" (unix seconds, double)
// and, per kind:
//   started    world, pid
//   progress   step, total_steps, epoch, loss, samples_per_s (this rank's), bytes_sent, compute_s, wait_s,
//              plus optional strategy metrics (staleness, compression_ratio, ...)
//   eval       step, test_accuracy, test_loss
//   checkpoint step, path
//   finished   summary: {steps, epochs, samples, samples_per_s, final_loss, test_accuracy,
//              bytes_sent_per_rank, wall_s, ...}
//   error      message, code (exit code it is about to exit with)
//   peer_lost  step, message: a collective failed and, with recovery.mode partial, the trainer
//              stays alive waiting for a regroup command instead of exiting 4
//   regrouped  generation, step, world, recovery_s, recoveries: it rebuilt its process group at
//              `generation` and trains on from `step`
// Parents ignore event kinds they do not know (a newer trainer may emit more).
// Logs go to stderr (spdlog), never stdout.
//
// Commands: the parent may write JSON lines to the trainer's stdin:
//   {"cmd": "stop"}
//   {"cmd": "regroup", "generation": G, "world": N, "master": "HOST:PORT", "rollback": false}
//       elastic regroup: a peer was replaced; rebuild the process group at generation G with
//       rank 0's store at `master` (the same --rank; a replacement rank starts fresh with
//       --generation G). rollback true (recovery.mode full): reload the last checkpoint
//       instead of keeping the in-memory state. A worker daemon reports the task at G from the
//       moment it sent the command.
//
// Exit codes below; a trainer killed by a signal is reported by the parent as -signal.
#pragma once

namespace tern {

enum TrainerExit : int {
  kTrainerOk = 0,
  kTrainerBadArgs = 2,       // bad flags or job spec
  kTrainerDataError = 3,     // dataset missing or corrupt
  kTrainerCommFailure = 4,   // a peer died or a collective timed out
  kTrainerInternal = 5,      // anything else
  kTrainerStopped = 6,       // asked to stop by its parent
  kInjectedFailureExit = 17, // debug.fail_step fault injection (a simulated crash)
};

inline const char* trainer_exit_meaning(int code) {
  switch (code) {
    case kTrainerOk: return "ok";
    case kTrainerBadArgs: return "bad arguments or job spec";
    case kTrainerDataError: return "dataset missing or corrupt";
    case kTrainerCommFailure: return "communication failure (peer lost or collective timeout)";
    case kTrainerInternal: return "internal error";
    case kTrainerStopped: return "stopped by parent";
    case kInjectedFailureExit: return "injected failure (debug.fail_step)";
    default: return code < 0 ? "killed by a signal" : "unknown";
  }
}

}  // namespace tern
