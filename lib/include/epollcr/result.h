// epollcr's one error model: a Status (success, or an error code with the words that explain it) and a Result<T>
// (a value, or the Status that prevented it). Both convert to true on success. Errors cross epollcr's API as these,
// never as exceptions; the code is a Linux errno in std::generic_category() unless a layer documents its own category
// (the image's ImageErrc, whose codes also compare equal to an errno condition).
#pragma once

#include <cassert>
#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

namespace epollcr {

inline std::error_code Errno(int value) { return std::error_code(value, std::generic_category()); }

// Default-constructed = success. An error's message says what and where, without the "error:" prefix a program adds
// ("eventpoll#3 field waiters: 1 thread blocked in Wait at save time"); an error made from a bare code has its
// code's own message ("Bad file descriptor").
struct [[nodiscard]] Status {
  std::error_code code;
  std::string message;

  Status() = default;
  Status(std::error_code error_code, std::string words) : code(error_code), message(std::move(words)) {}
  Status(std::error_code error_code) : code(error_code), message(error_code ? error_code.message() : std::string()) {}  // NOLINT(google-explicit-constructor)

  static Status Ok() { return {}; }
  static Status Error(int errno_value, std::string message) { return {Errno(errno_value), std::move(message)}; }

  bool ok() const { return !code; }
  explicit operator bool() const { return ok(); }
};

// A value or the Status of the error that prevented it. Checking is enforced by [[nodiscard]]; reading the value of a
// failed result is a programming error (asserted).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor): implicit by design
  Result(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT(google-explicit-constructor)
  Result(std::error_code error) : status_(error) { assert(error); }              // NOLINT(google-explicit-constructor)

  bool ok() const { return status_.ok(); }
  explicit operator bool() const { return ok(); }
  const Status& status() const& { return status_; }
  Status status() && { return std::move(status_); }
  std::error_code error() const { return status_.code; }

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
  Status status_;
};

}  // namespace epollcr
