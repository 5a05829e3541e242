// `tern workers --network`: the measured network matrix (issue 24) from a ListWorkersReply,
// and the ring order placement would give the READY workers. Pure; printing is separate.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "common/ring_order.h"
#include "tern/v1/coordinator.pb.h"

namespace tern {

struct NetworkView {
  std::vector<std::string> workers;         // READY workers, by id
  std::vector<std::vector<double>> rtt_ms;  // [from][to]; -1: not measured either way
  std::vector<std::vector<double>> bandwidth_mbps;
  bool emulated = false;  // some figure includes the emulated WAN model
  bool complete = false;  // every pair measured: the ring order below is what placement uses
  std::vector<int> ring;  // ring_order over the matrix (complete only), indices into workers
  RingCost plain;         // the ring in id order, and in `ring` (complete only)
  RingCost measured;
};

// Entry [a][b] is a's measurement of b, else b's of a (as the coordinator uses them).
// `ring_bytes`: the hop size the coordinator weighs bandwidth with (NetworkMapOptions).
NetworkView network_view(const v1::ListWorkersReply& reply, double ring_bytes);
// "RTT ms / Mbit/s" matrix, then the ring order and its slowest hop against the id order.
void print_network(std::ostream& out, const NetworkView& view);
// {"workers": [...], "rtt_ms": [[...]], "bandwidth_mbps": [[...]], "emulated", "complete",
//  "ring_order": [ids], "slowest_hop_ms": {"plain", "ring"}, "ring_ms": {"plain", "ring"}};
// unmeasured entries are null.
nlohmann::json network_json(const NetworkView& view);

}  // namespace tern
