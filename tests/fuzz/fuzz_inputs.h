// Where the committed fuzz inputs are: EPOLLCR_FUZZ_DIR (tests/fuzz when unset) holds seeds/<target>/,
// corpus/<target>/ and regressions/<target>/ (scripts/fuzz, docs/testing.md "Fuzzing").
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace epollcr::fuzz {

inline std::filesystem::path FuzzDir() {
  const char* dir = std::getenv("EPOLLCR_FUZZ_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::path("tests/fuzz");
}

// The files of one target's folder of one kind ("seeds", "corpus", "regressions"), sorted by name; none if the
// folder does not exist.
inline std::vector<std::filesystem::path> InputFiles(std::string_view kind, std::string_view target) {
  std::vector<std::filesystem::path> files;
  const std::filesystem::path dir = FuzzDir() / kind / target;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const std::filesystem::directory_entry& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace epollcr::fuzz
