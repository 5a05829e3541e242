#include "coordinator/port_leases.h"

#include <algorithm>

namespace tern {

Status check_spare_ports(const std::vector<int>& ports) {
  if (ports.size() > kMaxSparePorts) {
    return invalid_argument("spare_ports lists " + std::to_string(ports.size()) +
                            " ports; at most " + std::to_string(kMaxSparePorts));
  }
  for (int p : ports) {
    if (p < 1 || p > 65535)
      return invalid_argument("spare_ports must be in [1, 65535], got " + std::to_string(p));
  }
  return Status::ok();
}

void set_spare_ports(Worker* w, const std::vector<int>& ports, int64_t now_ms) {
  while (!w->used_ports.empty() && now_ms - w->used_ports.front().second > kPortLeaseMs)
    w->used_ports.pop_front();
  w->spare_ports.clear();
  for (int p : ports) {
    bool used = std::any_of(w->used_ports.begin(), w->used_ports.end(),
                            [p](const auto& u) { return u.first == p; });
    if (!used && p > 0) w->spare_ports.push_back(p);
  }
}

std::string take_port(Worker* w, int64_t now_ms) {
  const int port = w->spare_ports.front();
  w->spare_ports.pop_front();
  w->used_ports.emplace_back(port, now_ms);
  return w->host + ":" + std::to_string(port);
}

}  // namespace tern
