#pragma once

// Text in aligned columns, as the commands that print tables show it.

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

namespace livestate::cli {

/// Each line's cells, every column as wide as its widest cell and two
/// spaces apart; the last column unpadded.
inline void print_aligned(const std::vector<std::vector<std::string>>& lines, std::ostream& out) {
  std::vector<std::size_t> widths;
  for (const auto& line : lines) {
    widths.resize(std::max(widths.size(), line.size()), 0);
    for (std::size_t i = 0; i < line.size(); ++i) widths[i] = std::max(widths[i], line[i].size());
  }
  for (const auto& line : lines) {
    std::string text;
    for (std::size_t i = 0; i < line.size(); ++i) {
      text += line[i];
      if (i + 1 < line.size()) text += std::string(widths[i] - line[i].size() + 2, ' ');
    }
    out << text << "\n";
  }
}

}  // namespace livestate::cli
