// The committed fuzz inputs of the image and Boost loaders (seeds and regression inputs, every sixteenth input of the
// campaign corpus) through the
// epollcr commands that read images and archives: inspect, verify and convert each exit 0 or 1 (never a signal, never
// the usage code), and nothing reaches stderr from a third party's log: no "[libprotobuf" line (the library never
// logs; image/utf8.h). The Boost loaders' inputs are given in SaveWorld's envelope, as a file would hold
// them. EPOLLCR_FUZZ_DIR is tests/fuzz, EPOLLCR_BIN the program.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_entry_points.h"
#include "fuzz_inputs.h"
#include "program_run.h"
#include "temp_dir.h"

namespace epollcr::fuzz {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kCorpusStep = 16;

std::vector<fs::path> InputsOf(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"seeds", "corpus", "regressions"}) {
    const std::vector<fs::path> found = InputFiles(kind, target);
    // Of a campaign corpus (hundreds of inputs per target), every sixteenth by name: three processes per input, and
    // fuzz_inputs runs all of them in-process through the same loaders.
    const std::size_t step = std::string_view(kind) == "corpus" ? kCorpusStep : 1;
    for (std::size_t i = 0; i < found.size(); i += step) files.push_back(found[i]);
  }
  std::sort(files.begin(), files.end());
  return files;
}

void ExpectCommandsReadItCleanly(const std::string& bytes, const fs::path& origin) {
  testing_support::TempDir dir;
  const std::string input = dir.File("input");
  {
    std::ofstream out(input, std::ios::binary);
    out << bytes;
  }
  const char* bin = std::getenv("EPOLLCR_BIN");
  ASSERT_NE(bin, nullptr) << "EPOLLCR_BIN is not set";
  const std::vector<std::vector<std::string>> commands = {
      {"inspect", input}, {"verify", input}, {"convert", input, dir.File("out.json")}};
  for (const std::vector<std::string>& args : commands) {
    testing_support::ChildSetup setup{"/dev/null", dir.File("stdout"), dir.File("stderr"), dir.path()};
    const testing_support::ProgramRun run = testing_support::RunProgram(bin, args, setup);
    const std::string& err = run.err;
    EXPECT_TRUE(run.status == 0 || run.status == 1) << origin << ": epollcr " << args[0] << " ended with status "
                                                    << run.status << " (-1: a signal)\n" << err;
    EXPECT_EQ(err.find("[libprotobuf"), std::string::npos) << origin << ": epollcr " << args[0] << " logged:\n" << err;
  }
}

TEST(CliInputs, ImagesAreReadCleanly) {
  const std::vector<fs::path> inputs = InputsOf("image_reader");
  ASSERT_GE(inputs.size(), 4u);
  for (const fs::path& path : inputs) ExpectCommandsReadItCleanly(testing_support::ReadWholeFile(path), path);
}

TEST(CliInputs, BoostArchivesAreReadCleanly) {
  for (auto [target, format] : {std::pair{"boost_text_loader", ArchiveFormat::kBoostText},
                                std::pair{"boost_xml_loader", ArchiveFormat::kBoostXml}}) {
    const std::vector<fs::path> inputs = InputsOf(target);
    ASSERT_GE(inputs.size(), 4u);
    for (const fs::path& path : inputs) {
      ExpectCommandsReadItCleanly(Envelope(format, testing_support::ReadWholeFile(path)), path);
    }
  }
}

}  // namespace
}  // namespace epollcr::fuzz
