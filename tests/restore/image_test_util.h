// Helpers for the image file tests: a temporary directory that removes itself, raw file access, directory listings.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image/file.h"
#include "temp_dir.h"

namespace epollcr::image::testing {

// A fresh directory for one test (tests/common/temp_dir.h), named after these tests.
class TempDir : public epollcr::testing_support::TempDir {
 public:
  TempDir() : epollcr::testing_support::TempDir("epollcr-image") {}
};

// The names in `dir`, sorted (no "." or "..").
inline std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  if (ec) ADD_FAILURE() << "list " << dir << ": " << ec.message();
  std::sort(names.begin(), names.end());
  return names;
}

inline std::string ReadRaw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ADD_FAILURE() << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) ADD_FAILURE() << "cannot write " << path;
}

// Deterministic bytes, all 256 values likely, NULs included.
inline std::string RandomBytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(gen() & 0xff);
  return bytes;
}

// A header with any field values and a correct header checksum, for images a writer of another version would make.
// Written from the table in docs/image-format.md, independently of FrameHeader().
inline std::string MakeHeader(std::uint16_t major, std::uint16_t minor, std::uint32_t flags, std::uint64_t length,
                              std::uint32_t payload_crc) {
  std::string header("EPCRIMG", 7);
  header.push_back('\0');
  auto put = [&header](std::uint64_t value, int size) {
    for (int i = 0; i < size; ++i) header.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  put(major, 2);
  put(minor, 2);
  put(flags, 4);
  put(length, 8);
  put(payload_crc, 4);
  put(Crc32c(header), 4);
  return header;
}

}  // namespace epollcr::image::testing
