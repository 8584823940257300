// Runs every committed fuzz input through the entry points of the fuzz targets (fuzz_entry_points.h), in the regular
// suite (so with -Werror and under ASan+UBSan in scripts/test): the seeds of tests/fuzz/seeds/<target>/ must all be
// accepted (they are generated from real worlds and traces); the campaign corpus of tests/fuzz/corpus/<target>/ and
// the findings of tests/fuzz/regressions/<target>/ must each be accepted or refused cleanly, with every check of the
// target holding, and nothing logged by protobuf for any of them (the library never logs: image/utf8.h).
// EPOLLCR_FUZZ_DIR is tests/fuzz.
#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_entry_points.h"
#include "fuzz_inputs.h"
#include "program_run.h"
#include "world_fixtures.h"

namespace epollcr::fuzz {
namespace {

namespace fs = std::filesystem;

// What protobuf's log received while an input ran (the handler replaces the one that writes to stderr).
std::vector<std::string>& ProtobufLog() {
  static std::vector<std::string> lines;
  return lines;
}
void KeepProtobufLog(google::protobuf::LogLevel, const char* file, int line, const std::string& message) {
  ProtobufLog().push_back(std::string(file) + ":" + std::to_string(line) + ": " + message);
}

class FuzzInputs : public ::testing::TestWithParam<Target> {
 protected:
  void SetUp() override { previous_ = google::protobuf::SetLogHandler(KeepProtobufLog); }
  void TearDown() override { google::protobuf::SetLogHandler(previous_); }
  // Runs one input; any protobuf log line is a failure.
  Verdict Run(const fs::path& input) {
    ProtobufLog().clear();
    Verdict outcome = GetParam().run(testing_support::ReadWholeFile(input));
    for (const std::string& line : ProtobufLog()) ADD_FAILURE() << input << ": libprotobuf logged " << line;
    return outcome;
  }

 private:
  google::protobuf::LogHandler* previous_ = nullptr;
};

TEST_P(FuzzInputs, EverySeedIsAccepted) {
  const std::vector<fs::path> seeds = InputFiles("seeds", GetParam().name);
  EXPECT_GE(seeds.size(), 4u) << "too few seeds in " << (FuzzDir() / "seeds" / GetParam().name);
  for (const fs::path& seed : seeds) {
    const Verdict outcome = Run(seed);
    EXPECT_TRUE(outcome.ok()) << seed << ": " << outcome.violation;
    EXPECT_TRUE(outcome.accepted) << seed << " was refused; the corpus holds valid inputs only";
  }
}

TEST_P(FuzzInputs, EveryCorpusInputAndFindingFailsCleanlyOrLoads) {
  std::vector<fs::path> inputs = InputFiles("corpus", GetParam().name);
  for (const fs::path& finding : InputFiles("regressions", GetParam().name)) inputs.push_back(finding);
  for (const fs::path& finding : inputs) {
    const Verdict outcome = Run(finding);
    EXPECT_TRUE(outcome.ok()) << finding << ": " << outcome.violation;
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzInputs, ::testing::ValuesIn(Targets().begin(), Targets().end()),
                         [](const ::testing::TestParamInfo<Target>& info) { return std::string(info.param.name); });

// The Boost 1.74 findings (docs/testing.md, "Fuzzing"): each is refused, for the reason epollcr's bounded archives
// give, where Boost's own archives overflowed a buffer or allocated gigabytes (archive/bounded_archives.h).
TEST(FuzzFindings, BoostFindingsAreRefusedForTheirReason) {
  struct Finding {
    ArchiveFormat format;
    const char* path;
    const char* reason;
  };
  for (const Finding& f :
       {Finding{ArchiveFormat::kBoostText, "boost_text_loader/string-length-10-gb", "string bytes where"},
        Finding{ArchiveFormat::kBoostText, "boost_text_loader/string-length-3-tb", "string bytes where"},
        Finding{ArchiveFormat::kBoostXml, "boost_xml_loader/end-tag-longer-than-expected", "tag mismatch"},
        Finding{ArchiveFormat::kBoostText, "boost_text_loader/send-charge-below-peer-queue",
                "end 0: its send charge is not what its peer has queued"},
        Finding{ArchiveFormat::kBoostXml, "boost_xml_loader/library-version-above-65535",
                "library version 1800000000 is not one this build reads"},
        Finding{ArchiveFormat::kBoostXml, "boost_xml_loader/library-version-newer-than-boost",
                "library version 19 is not one this build reads"}}) {
    const fs::path path = FuzzDir() / "regressions" / f.path;
    ASSERT_TRUE(fs::is_regular_file(path)) << path;
    World world;
    const Status loaded = LoadWorld(Envelope(f.format, testing_support::ReadWholeFile(path)), &world);
    EXPECT_FALSE(loaded.ok()) << path;
    EXPECT_NE(loaded.message.find(f.reason), std::string::npos) << path << ": " << loaded.message;
  }
}

// A folder named after no target would never be run: every folder must be one. And every target has seeds, which is
// how scripts/fuzz finds the targets.
TEST(FuzzFolders, NameTargets) {
  for (const char* kind : {"seeds", "corpus", "regressions"}) {
    const fs::path dir = FuzzDir() / kind;
    if (!fs::is_directory(dir)) continue;
    for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
      EXPECT_TRUE(entry.is_directory() && FindTarget(entry.path().filename().string()) != nullptr)
          << entry.path() << " is not the folder of a fuzz target";
    }
  }
  for (const Target& target : Targets()) {
    EXPECT_TRUE(fs::is_directory(FuzzDir() / "seeds" / target.name)) << target.name << " has no seeds folder";
  }
}

// The loaders' targets frame their input themselves: the framing must stay SaveWorld's, or they would test the
// envelope's checks instead of Boost's parser.
TEST(FuzzEnvelope, FramesAsSaveWorldDoes) {
  World world;
  testing::BuildWorld(world);
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    const Result<std::string> saved = SaveWorld(world, format);
    ASSERT_TRUE(saved.ok()) << saved.status().message;
    ASSERT_GT(saved.value().size(), 24u);
    EXPECT_EQ(Envelope(format, saved.value().substr(24)), saved.value()) << ArchiveFormatName(format);
  }
}

// The loaders' targets tell a refused archive from a loaded one, and a refusal is clean.
TEST(FuzzLoaders, RefuseDamagedArchivesCleanly) {
  World world;
  testing::BuildWorld(world);
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml}) {
    const std::string archive = SaveWorld(world, format).value().substr(24);
    const Verdict whole = LoadBoostArchive(format, archive);
    EXPECT_TRUE(whole.ok() && whole.accepted) << whole.violation;
    const Verdict half = LoadBoostArchive(format, archive.substr(0, archive.size() / 2));
    EXPECT_TRUE(half.ok()) << half.violation;
    EXPECT_FALSE(half.accepted) << ArchiveFormatName(format);
  }
}

}  // namespace
}  // namespace epollcr::fuzz
