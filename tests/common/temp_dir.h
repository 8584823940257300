// A fresh directory under gtest's temporary directory for one test, removed with everything in it when it ends.
#pragma once

#include <stdlib.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

namespace epollcr::testing_support {

class TempDir {
 public:
  // `prefix` names the directory, so that a leftover one says which test made it.
  explicit TempDir(const std::string& prefix = "epollcr") {
    std::string pattern = ::testing::TempDir() + prefix + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << pattern << ": " << std::strerror(errno);
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);  // a test may have taken them away
    std::filesystem::remove_all(path_, ec);
    if (ec) ADD_FAILURE() << "remove " << path_ << ": " << ec.message();
  }

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace epollcr::testing_support
