#include "common/host_name.h"

#include <arpa/inet.h>

#include <cctype>

namespace tern {

std::string host_problem(const std::string& host) {
  if (host.empty()) return "is empty";
  // inet_pton reads a C string: "1.2.3.4\0junk" must not pass as its prefix.
  if (host.find('\0') != std::string::npos) return "contains a NUL byte";
  unsigned char buf[16];
  if (::inet_pton(AF_INET, host.c_str(), buf) == 1) return "";
  if (::inet_pton(AF_INET6, host.c_str(), buf) == 1) return "";
  if (host.find(':') != std::string::npos) return "is not a valid IPv6 address";
  if (host.find_first_not_of("0123456789.") == std::string::npos) {
    return "is not a valid IPv4 address";
  }
  if (host.size() > 253) return "is longer than 253 characters";
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    std::string label =
        host.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return "is not a host name or address";
    for (char ch : label) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-')
        return "is not a host name or address";
    }
    if (dot == std::string::npos) return "";
    start = dot + 1;
  }
}

}  // namespace tern
