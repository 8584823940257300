// A column of unsigned numbers as one string of decimal numbers separated by single spaces ("3 0 17"): how layout 2
// archives hold a poll's entries. One string per column reads in one archive item, where a field per entry would cost
// an archive item each (in an xml archive, a tag each, which Boost parses slowly: docs/state-model.md, "Formats").
// Internal.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "epollcr/memory.h"
#include "archive/fields.h"

namespace epollcr::archive {

// std::from_chars for a decimal integer (base 10; no '+', no space; a '-' only for a signed T): the same result and
// the same end, in a loop the compiler inlines. A checkpoint's columns are mostly numbers of one to three digits, and
// libstdc++'s from_chars, generic over bases, took a tenth of each text or xml checkpoint of a world of many small
// polls. archive_bytes_test compares the two.
template <typename T>
std::from_chars_result FromDecimal(const char* p, const char* end, T& value) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  using U = std::make_unsigned_t<T>;
  const char* const start = p;
  bool negative = false;
  if constexpr (std::is_signed_v<T>) {
    if (p != end && *p == '-') {
      negative = true;
      ++p;
    }
  }
  const char* const digits = p;
  U magnitude = 0;
  bool overflow = false;
  for (; p != end; ++p) {
    const unsigned d = static_cast<unsigned>(static_cast<unsigned char>(*p)) - unsigned{'0'};
    if (d > 9) break;
    overflow = __builtin_mul_overflow(magnitude, U{10}, &magnitude) || overflow;
    overflow = __builtin_add_overflow(magnitude, static_cast<U>(d), &magnitude) || overflow;
  }
  if (p == digits) return {start, std::errc::invalid_argument};
  if (overflow) return {p, std::errc::result_out_of_range};
  if constexpr (std::is_signed_v<T>) {
    const U limit = static_cast<U>(static_cast<U>(std::numeric_limits<T>::max()) + (negative ? 1 : 0));
    if (magnitude > limit) return {p, std::errc::result_out_of_range};
    value = negative ? static_cast<T>(static_cast<U>(U{0} - magnitude)) : static_cast<T>(magnitude);
  } else {
    value = magnitude;
  }
  return {p, std::errc{}};
}

// Writes one column's text into a string (its earlier contents dropped, its memory kept): numbers go through a small
// buffer that is appended to the string when full, so a number costs a conversion and a few stores, not the two
// out-of-line string calls (a space, then the digits) that appending each one made. The text is complete once the
// writer is gone (or after Flush()).
class ColumnWriter {
 public:
  explicit ColumnWriter(std::string* out) : out_(*out) { out_.clear(); }
  ColumnWriter(const ColumnWriter&) = delete;
  ColumnWriter& operator=(const ColumnWriter&) = delete;
  ~ColumnWriter() { Flush(); }

  template <typename T>
  void Add(T value) {
    static_assert(std::is_integral_v<T>);
    char* at = at_;  // a local: the stores below are of chars, which the compiler must assume alias the members
    if (end_ - at < kRoom) {
      Flush();
      at = at_;
    }
    if (at != chunk_ || !out_.empty()) *at++ = ' ';
    std::uint64_t magnitude = static_cast<std::uint64_t>(value);
    if constexpr (std::is_signed_v<T>) {
      if (value < 0) {
        *at++ = '-';
        magnitude = 0 - magnitude;
      }
    }
    at_ = PutDigits(at, magnitude);
  }
  void Flush() {
    out_.append(chunk_, at_);
    at_ = chunk_;
  }

 private:
  // The decimal digits of v at `at` (as std::to_chars writes them); returns their end. The digits are counted, then
  // written from the last, two at a time.
  static char* PutDigits(char* at, std::uint64_t v) {
    static constexpr char kPairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    int n = 1;
    for (std::uint64_t rest = v; rest >= 10; rest /= 10) ++n;
    char* const end = at + n;
    char* p = end;
    while (v >= 100) {
      const std::size_t pair = static_cast<std::size_t>(v % 100) * 2;
      v /= 100;
      *--p = kPairs[pair + 1];
      *--p = kPairs[pair];
    }
    if (v >= 10) {
      *--p = kPairs[v * 2 + 1];
      *--p = kPairs[v * 2];
    } else {
      *--p = static_cast<char>('0' + v);
    }
    return end;
  }

  static constexpr std::ptrdiff_t kRoom = 24;  // a space and the longest 64-bit number, with its sign (21 characters)
  std::string& out_;
  char chunk_[4096];
  char* at_ = chunk_;
  char* const end_ = chunk_ + sizeof chunk_;
};

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
    const auto [next, ec] = FromDecimal(p, end, value);
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
