#include "line_diff.h"

#include <vector>

namespace epollcr::replay::testing {
namespace {

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

}  // namespace

std::string LineDiff(std::string_view expected, std::string_view actual, int context) {
  if (expected == actual) return "";
  std::vector<std::string_view> a = Lines(expected);
  std::vector<std::string_view> b = Lines(actual);
  // Longest common subsequence table, from the back.
  std::vector<std::vector<int>> lcs(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (std::size_t i = a.size(); i-- > 0;) {
    for (std::size_t j = b.size(); j-- > 0;) {
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  struct Row {
    char tag;
    std::string_view line;
  };
  std::vector<Row> rows;
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      rows.push_back({' ', a[i++]});
      ++j;
    } else if (i < a.size() && (j == b.size() || lcs[i + 1][j] >= lcs[i][j + 1])) {
      rows.push_back({'-', a[i++]});
    } else {
      rows.push_back({'+', b[j++]});
    }
  }
  // Keep changed rows and `context` rows around them.
  std::vector<bool> keep(rows.size(), false);
  for (std::size_t k = 0; k < rows.size(); ++k) {
    if (rows[k].tag == ' ') continue;
    std::size_t lo = k >= static_cast<std::size_t>(context) ? k - static_cast<std::size_t>(context) : 0;
    std::size_t hi = std::min(rows.size() - 1, k + static_cast<std::size_t>(context));
    for (std::size_t m = lo; m <= hi; ++m) keep[m] = true;
  }
  std::string out = "--- expected\n+++ actual\n";
  bool elided = false;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    if (!keep[k]) {
      if (!elided) out += "  ...\n";
      elided = true;
      continue;
    }
    elided = false;
    out += rows[k].tag;
    out += rows[k].line;
    out += '\n';
  }
  return out;
}

}  // namespace epollcr::replay::testing
