// What peers can dial: an IPv4 / IPv6 address or a DNS host name (RFC 1123 labels of letters,
// digits and '-', not at either end, at most 63 characters; at most 253 in all). Used for the
// cluster file's hosts and listen address and for the host a worker registers with, which
// ends up in trainers' --master and --bind. Pure function; thread-safe.
#pragma once

#include <string>

namespace tern {

// Why `host` is not an address or a host name ("is empty", "is not a valid IPv4 address",
// ...); empty when it is one.
std::string host_problem(const std::string& host);

}  // namespace tern
