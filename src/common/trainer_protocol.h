// The contract between a trainer process and its parent (a worker daemon or `tern run`): what
// it means. How it is spelled is defined by the codec, common/trainer_codec.h (a typed struct
// per event and command, the command line's TrainerArgs): the only code that writes or parses
// these lines; common/trainer_process.h supervises a trainer with it. docs/protocol.md lists
// every field.
//
// Command line:
//   tern-trainer --spec FILE --rank R --world N --master HOST:PORT [--generation G]
//                [--job ID] [--cluster FILE] [--regions r0,r1,...] [--work-dir DIR] [--bind HOST]
//                [--members r0,r1,... [--standby]]
// --members (elastic jobs, recovery.min_workers): the job ranks of the current group in group
// order; the group rank (position in it) hosts or joins the store, --rank stays the job rank
// (data parts, checkpoint files, logs). --standby: a replacement that is not a member yet: it
// loads its data and model, emits `ready`, and waits for a regroup command naming it.
// rank 0 hosts the rendezvous store at --master (listening on that address only, see
// comm/rendezvous_store.h); the others connect to it. Gloo pairs listen on --bind.
//
// Events: the trainer writes one JSON object per line on stdout. Every event has
//   "event", "job", "rank", "generation", "time" (unix seconds, double)
// and, per kind:
//   started    world, pid
//   progress   step, total_steps, epoch, loss, samples_per_s (this rank's), bytes_sent, compute_s,
//   wait_s,
//              world, plus any number of metrics (staleness, compression_ratio, ...)
//   eval       step, test_accuracy, test_loss, plus any number of metrics (train_s, test_auc, ...)
//   checkpoint step, snapshot_s, drain_s, checkpoint_s (also checkpoint_committed,
//              checkpoint_failed, checkpoint_plan, resumed, rolled_back, partial_restore,
//              replica_mismatch: see the codec)
//   finished   summary: {steps, epochs, samples, samples_per_s, final_loss, test_accuracy,
//              bytes_sent_per_rank, wall_s, ...}
//   error      message, code (exit code it is about to exit with), step (when it is about one)
//   skipped    step, ranks, message: train.on_nonfinite skip_step left out a non-finite step
//              on every rank (progress and the summary count them in skipped_steps)
//   peer_lost  step, message: a collective failed and, with recovery.mode partial, the trainer
//              stays alive waiting for a regroup command instead of exiting 4
//   regrouped  generation, step, world, recovery_s, recoveries: it rebuilt its process group at
//              `generation` and trains on from `step` (the next progress event carries
//              regroup_generation and regroup_s: the step after it trained)
//   ready      setup_s: a --standby trainer has loaded its data and model
// Parents ignore event kinds they do not know (a newer trainer may emit more). Numbers may be
// null (JSON has no NaN or infinity: a non-finite value is written as null) or missing:
// parents treat those as absent, never as an error.
// Logs go to stderr (spdlog), never stdout.
//
// Commands: the parent may write JSON lines to the trainer's stdin:
//   {"cmd": "stop"}
//   {"cmd": "regroup", "generation": G, "world": N, "master": "HOST:PORT", "rollback": false}
//       elastic regroup: a peer was replaced; rebuild the process group at generation G with
//       rank 0's store at `master` (the same --rank; a replacement rank starts fresh with
//       --generation G). rollback true (recovery.mode full): reload the last checkpoint
//       instead of keeping the in-memory state. A worker daemon reports the task at G from the
//       moment it sent the command. Elastic jobs add "members": [r0, ...], the new group in
//       group order (its size is `world`); a trainer not named keeps waiting (a standby).
//
// Exit codes below; a trainer killed by a signal is reported by the parent as -signal.
// Two classes (trainer_exit_is_loss): the loss of a process or machine (a peer died, a
// collective timed out, a signal, the parent stopped it, the trainer could not be started on
// that machine), which a replacement on another worker may get past, and deterministic
// failures (bad spec, bad data, out of memory, a non-finite loss, an internal error, a path
// the worker refused), which any replacement would repeat: the coordinator and `tern run`
// regroup only for the first class and fail the job at once for the second.
#pragma once

namespace tern {

enum TrainerExit : int {
  kTrainerOk = 0,
  kTrainerBadArgs = 2,           // bad flags or job spec
  kTrainerDataError = 3,         // dataset missing or corrupt (no valid line, unreadable file)
  kTrainerCommFailure = 4,       // a peer died or a collective timed out
  kTrainerInternal = 5,          // anything else (a bug: an unexpected exception)
  kTrainerStopped = 6,           // asked to stop by its parent
  kTrainerNonFinite = 7,         // a non-finite loss or gradient (train.on_nonfinite: fail)
  kTrainerOutOfMemory = 8,       // an allocation failed, or the model cannot fit this machine
  kTrainerRefused = 9,           // the worker refused the task (its path policy, an unusable spec)
  kTrainerReplicaMismatch = 10,  // replicas differ (sync.verify_every with sync.on_mismatch fail)
  kInjectedFailureExit = 17,     // debug.fail_step fault injection (a simulated crash)
  kTrainerNotStarted = 127,      // the worker could not start the trainer on this machine
};

inline const char* trainer_exit_meaning(int code) {
  switch (code) {
    case kTrainerOk:
      return "ok";
    case kTrainerBadArgs:
      return "bad arguments or job spec";
    case kTrainerDataError:
      return "data error (dataset missing or corrupt)";
    case kTrainerCommFailure:
      return "communication failure (peer lost or collective timeout)";
    case kTrainerInternal:
      return "internal error";
    case kTrainerStopped:
      return "stopped by parent";
    case kTrainerNonFinite:
      return "non-finite loss or gradient (train.on_nonfinite: fail)";
    case kTrainerOutOfMemory:
      return "out of memory";
    case kTrainerRefused:
      return "refused by the worker";
    case kTrainerReplicaMismatch:
      return "replicas differ (sync.verify_every, sync.on_mismatch: fail)";
    case kInjectedFailureExit:
      return "injected failure (debug.fail_step)";
    case kTrainerNotStarted:
      return "the worker could not start the trainer";
    default:
      return code < 0 ? "killed by a signal" : "unknown";
  }
}

// True when `code` means the process or its machine was lost (worth a replacement rank);
// false for deterministic failures that a replacement would repeat, and for unknown codes.
inline bool trainer_exit_is_loss(int code) {
  return code < 0 || code == kTrainerCommFailure || code == kTrainerStopped ||
         code == kInjectedFailureExit || code == kTrainerNotStarted;
}

// Whether a rank's exit `candidate` names the root cause of a job failure better than
// `current`, the lost-process exit it was first failed for: a deterministic failure always
// does; a rank that died on its own does when `current` only lost its peer (4); a peer loss
// or a stop (6) never does. Used by the coordinator and `tern run` alike.
inline bool trainer_exit_is_better_cause(int candidate, int current) {
  if (candidate == kTrainerOk || !trainer_exit_is_loss(current)) return false;
  return !trainer_exit_is_loss(candidate) ||
         (current == kTrainerCommFailure && candidate != kTrainerCommFailure &&
          candidate != kTrainerStopped);
}

}  // namespace tern
