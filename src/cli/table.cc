#include "cli/table.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

namespace tern {

void Table::print(std::ostream& out) const {
  std::vector<size_t> width(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], row[i].size());
  };
  measure(header_);
  for (const auto& r : rows_) measure(r);
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < width.size(); ++i) {
      std::string cell = i < row.size() ? row[i] : "";
      if (i + 1 < width.size()) cell.resize(width[i] + 2, ' ');
      line += cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  };
  emit(header_);
  for (const auto& r : rows_) emit(r);
}

std::string format_age(double s) {
  if (s <= 0) return "-";
  if (s < 120) return strf("%.0fs", s);
  if (s < 7200) return strf("%.0fm", s / 60);
  if (s < 2 * 86400) return strf("%.0fh", s / 3600);
  return strf("%.0fd", s / 86400);
}

std::string strf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace tern
