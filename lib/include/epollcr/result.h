// Errors cross epollcr's API as Linux errno values in a std::error_code (generic category), never as exceptions.
#pragma once

#include <cassert>
#include <cerrno>
#include <system_error>
#include <utility>

namespace epollcr {

inline std::error_code Errno(int value) { return std::error_code(value, std::generic_category()); }

// A value or an error, for calls that return something. Checking is enforced by [[nodiscard]]; reading the value of
// a failed result is a programming error (asserted).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor): implicit by design
  Result(std::error_code error) : error_(error) { assert(error); }  // NOLINT(google-explicit-constructor)

  bool ok() const { return !error_; }
  explicit operator bool() const { return ok(); }
  std::error_code error() const { return error_; }

  const T& value() const& {
    assert(ok());
    return value_;
  }
  T& value() & {
    assert(ok());
    return value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(value_);
  }

 private:
  T value_{};
  std::error_code error_;
};

}  // namespace epollcr
