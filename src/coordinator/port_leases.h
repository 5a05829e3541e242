// Port leases: the spare ports a worker daemon reports and the coordinator hands out as
// rendezvous addresses (the c10d TCPStore of a new generation listens on rank 0's worker).
//
// A port handed out looks free to the daemon until the trainer binds it, so it is leased for
// kPortLeaseMs: a heartbeat that still lists it does not make it spare again before then.
// Pure functions over one Worker: the caller (CoordinatorCore, under its mutex) serialises them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/types.h"

namespace tern {

constexpr int64_t kPortLeaseMs = 60000;
constexpr size_t kMaxSparePorts = 64;

// INVALID_ARGUMENT for more than kMaxSparePorts ports or one outside [1, 65535].
Status check_spare_ports(const std::vector<int>& ports);

// Replaces the worker's spare ports with `ports` less those leased in the last kPortLeaseMs
// (expired leases are dropped first). `now_ms`: monotonic.
void set_spare_ports(Worker* worker, const std::vector<int>& ports, int64_t now_ms);

// Leases the worker's first spare port (the caller checked there is one) and returns the
// rendezvous address HOST:PORT.
std::string take_port(Worker* worker, int64_t now_ms);

}  // namespace tern
