// Abandoning collectives of a group that no longer exists.
//
// When a peer dies, only its ring neighbours see their sockets close; the other ranks keep
// waiting on a peer that is alive but stuck, until the collective timeout (sync.timeout_s,
// a minute by default). The coordinator knows sooner: it sends every survivor a regroup
// command within a heartbeat. abandon_collectives() turns that into an immediate failure:
// a blocked wait on a Gloo collective (all_reduce, all_gather, broadcast, all_to_all,
// barrier) of a communicator created before the call returns ABORTED within 25 ms, and so
// does every later call on it, so the trainer goes straight to its regroup. (A blocked Gloo
// send/recv cannot be interrupted: it runs to its own timeout.) Communicators created afterwards
// (the new generation's) are not affected. Process-wide; thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace tern {

// The current abandon epoch: a communicator records it at creation.
uint64_t collective_epoch();

// Makes every wait on a communicator created at an earlier epoch return ABORTED with `why`.
void abandon_collectives(const std::string& why);

// Why collectives of `epoch` were abandoned; empty when they were not.
std::string abandoned_reason(uint64_t epoch);

}  // namespace tern
