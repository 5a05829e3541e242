// Table: plain-text tables for `tern jobs/workers/status`. Columns are as wide as their
// widest cell; the last column is not padded. Single-threaded value type.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tern {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// "3s", "4m", "2h", "5d" ago-style ages; "-" for t <= 0.
std::string format_age(double seconds);
// printf-style helper.
std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace tern
