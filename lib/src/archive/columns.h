// A column of unsigned numbers as one string of decimal numbers separated by single spaces ("3 0 17"): how layout 2
// archives hold a poll's entries. One string per column reads in one archive item, where a field per entry would cost
// an archive item each (in an xml archive, a tag each, which Boost parses slowly: docs/state-model.md, "Formats").
// Internal.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "epollcr/memory.h"
#include "archive/fields.h"

namespace epollcr::archive {

template <typename T>
void AppendColumn(std::string& column, T value) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  if (!column.empty()) column += ' ';
  column.append(digits, end);
}

// The name of a column in a load error: a string, or a callable that makes one (called only for an error, so that a
// load that succeeds builds no names).
template <typename What>
std::string ColumnWhat(const What& what) {
  if constexpr (std::is_invocable_v<const What&>) {
    return what();
  } else {
    return std::string(what);
  }
}

// Exactly n numbers of type T (each within T's range), or a LoadError naming the column (`what`, as ColumnWhat takes).
template <typename T, typename What>
std::vector<T, LargeAllocator<T>> ParseColumn(std::string_view column, std::uint64_t n, const What& what) {
  std::vector<T, LargeAllocator<T>> values;
  values.reserve(std::min<std::uint64_t>(n, column.size() / 2 + 1));  // a number takes at least a digit and a space
  const char* p = column.data();
  const char* const end = p + column.size();
  while (p < end) {
    if (!values.empty()) {
      if (*p != ' ') throw LoadError(ColumnWhat(what) + ": numbers must be separated by single spaces");
      ++p;
    }
    T value{};
    const auto [next, ec] = std::from_chars(p, end, value);
    if (ec != std::errc() || next == p) {
      throw LoadError(ColumnWhat(what) + ": not a number, or out of range, at entry " + std::to_string(values.size()));
    }
    if (values.size() == n) throw LoadError(ColumnWhat(what) + ": more than " + std::to_string(n) + " numbers");
    values.push_back(value);
    p = next;
  }
  if (values.size() != n) {
    throw LoadError(ColumnWhat(what) + ": " + std::to_string(values.size()) + " numbers for " + std::to_string(n) +
                    " entries");
  }
  return values;
}

}  // namespace epollcr::archive
