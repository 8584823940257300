// Fault injection for image files (lib/src/fault_injection.h, kImage*): every system call WriteImageFile and
// ReadImageFile make is failed in turn (the Nth call of each kind), and the writer is killed before each of its calls
// in a child process. After each, the image at the target path is complete (the old one, or the new one once the
// rename is done), no temporary file or fd is left, and the error names the step and the path.

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fault_plan.h"
#include "image_test_util.h"
#include "open_fds.h"
#include "image/file.h"

namespace epollcr::image {
namespace {

using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;
using testing::ListDir;
using testing::RandomBytes;
using testing::ReadRaw;
using testing::TempDir;

using epollcr::testing::FaultPlan;
using epollcr::testing::FaultPoint;
using epollcr::testing::OpenFds;

// The real calls, except the planned faults (fault_plan.h), with every transfer capped at `max_transfer` bytes (so
// short writes and reads are the rule). open_fds() counts the fds open when the plan was made, so that a test can
// check that none was left open.
class FaultyCalls : public FaultPlan {
 public:
  using FaultPlan::FaultPlan;
  int open_fds() const { return open_fds_; }

 private:
  int open_fds_ = OpenFds();
};

class ImageFaultTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteOld(); }

  void WriteOld() {
    const Status error = WriteImageFile(path_, old_);
    ASSERT_TRUE(error.ok()) << error.message;
  }

  // The target holds exactly `payload`, framed, and reads back as it.
  void ExpectImage(const std::string& payload, const std::string& context) {
    EXPECT_EQ(ReadRaw(path_), Frame(payload)) << context;
    std::string out;
    const Status error = ReadImageFile(path_, &out);
    EXPECT_TRUE(error.ok()) << context << ": " << error.message;
    EXPECT_TRUE(out == payload) << context << ": read back a different image";
  }

  void ExpectOnlyTheImage(const std::string& context) {
    EXPECT_THAT(ListDir(dir_.path()), ElementsAre("world.img")) << context;
  }

  TempDir dir_;
  const std::string path_ = dir_.File("world.img");
  const std::string temporary_regex_ = dir_.path() + "/\\.world\\.img\\.tmp\\.[0-9]+\\.[0-9a-f]{16}";
  const std::string old_ = RandomBytes(20'000, 1);
  const std::string new_ = RandomBytes(30'000, 2);
};

// The words WriteImageFile uses for the step a failing call belongs to.
std::string StepOf(FaultPoint op, bool after_rename) {
  switch (op) {
    case FaultPoint::kImageOpenDirectory: return "open directory";
    case FaultPoint::kImageOpen: return "create";
    case FaultPoint::kImageWrite: return "write";
    case FaultPoint::kImageFsync: return after_rename ? "fsync directory" : "fsync";
    case FaultPoint::kImageClose: return "close";
    case FaultPoint::kImageRename: return "rename";
    default: return std::string(epollcr::testing::FaultPointName(op));
  }
}

TEST_F(ImageFaultTest, EveryCallOfEveryKindFailingInWrite) {
  constexpr std::size_t kChunk = 4096;  // so the header and the payload take several writes
  std::vector<FaultPoint> trace;
  {
    FaultyCalls counting({}, kChunk);
    const Status error = WriteImageFile(path_, new_);
    ASSERT_TRUE(error.ok()) << error.message;
    trace = counting.trace();
    ASSERT_GE(counting.calls(FaultPoint::kImageWrite), 8);
    EXPECT_EQ(counting.calls(FaultPoint::kImageUnlink), 0);
    EXPECT_EQ(counting.calls(FaultPoint::kImageRead), 0);
  }
  const auto rename_at = std::find(trace.begin(), trace.end(), FaultPoint::kImageRename) - trace.begin();
  ASSERT_LT(rename_at, static_cast<long>(trace.size()));

  std::map<FaultPoint, int> seen;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    const FaultPoint op = trace[i];
    const int nth = ++seen[op];
    const bool after_rename = static_cast<long>(i) > rename_at;
    const std::string context =
        "failing " + std::string(epollcr::testing::FaultPointName(op)) + " #" + std::to_string(nth);
    WriteOld();
    FaultyCalls ops({{op, nth, EIO}}, kChunk);
    const Status error = WriteImageFile(path_, new_);

    if (op == FaultPoint::kImageClose && after_rename) {
      // The directory's fd: read-only, nothing to flush; its close cannot lose anything and is not reported.
      EXPECT_TRUE(error.ok()) << context << ": " << error.message;
      ExpectImage(new_, context);
    } else {
      ASSERT_FALSE(error.ok()) << context << " was not reported";
      EXPECT_EQ(error.code, std::errc::io_error) << context;
      EXPECT_THAT(error.message, StartsWith(StepOf(op, after_rename) + " " + dir_.path())) << context;
      EXPECT_THAT(error.message, EndsWith(": Input/output error")) << context;
      if (after_rename) {
        EXPECT_THAT(error.message, HasSubstr(path_ + " holds the new image")) << context;
        ExpectImage(new_, context);
      } else {
        ExpectImage(old_, context);
      }
      if (!after_rename && (op == FaultPoint::kImageWrite || op == FaultPoint::kImageFsync ||
                            op == FaultPoint::kImageClose || op == FaultPoint::kImageRename)) {
        EXPECT_THAT(error.message, MatchesRegex(StepOf(op, false) + " " + temporary_regex_ + "( \\(to " + path_ +
                                                    "\\))?: Input/output error"))
            << context;
      }
    }
    ExpectOnlyTheImage(context);
    EXPECT_EQ(OpenFds(), ops.open_fds()) << context << ": an fd was left open";
  }
}

TEST_F(ImageFaultTest, ShortWriteThenNoSpace) {
  FaultyCalls ops({{FaultPoint::kImageWrite, 1, 0, 10}, {FaultPoint::kImageWrite, 2, ENOSPC}});
  const Status error = WriteImageFile(path_, new_);
  EXPECT_EQ(error.code, std::errc::no_space_on_device);
  EXPECT_THAT(error.message, MatchesRegex("write " + temporary_regex_ + ": No space left on device"));
  ExpectImage(old_, "ENOSPC");
  ExpectOnlyTheImage("ENOSPC");
  EXPECT_EQ(ops.calls(FaultPoint::kImageUnlink), 1);
  EXPECT_EQ(OpenFds(), ops.open_fds());
}

TEST_F(ImageFaultTest, ShortWritesAndInterruptedCallsAreContinued) {
  FaultyCalls ops({{FaultPoint::kImageOpenDirectory, 1, EINTR},
                     {FaultPoint::kImageOpen, 1, EINTR},
                     {FaultPoint::kImageWrite, 1, EINTR},
                     {FaultPoint::kImageWrite, 4, EINTR},
                     {FaultPoint::kImageFsync, 1, EINTR},
                     {FaultPoint::kImageFsync, 3, EINTR}},
                    /*max_transfer=*/777);
  const Status error = WriteImageFile(path_, new_);
  ASSERT_TRUE(error.ok()) << error.message;
  ExpectImage(new_, "interrupted");
  ExpectOnlyTheImage("interrupted");
  EXPECT_GT(ops.calls(FaultPoint::kImageWrite), static_cast<int>(new_.size() / 777));
  EXPECT_EQ(OpenFds(), ops.open_fds());
}

TEST_F(ImageFaultTest, InterruptedCloseCountsAsClosed) {
  FaultyCalls ops({{FaultPoint::kImageClose, 1, EINTR}});
  const Status error = WriteImageFile(path_, new_);
  ASSERT_TRUE(error.ok()) << error.message;
  ExpectImage(new_, "close EINTR");
  EXPECT_EQ(OpenFds(), ops.open_fds());
}

TEST_F(ImageFaultTest, TakenTemporaryNameIsRetriedWithAnother) {
  FaultyCalls ops({{FaultPoint::kImageOpen, 1, EEXIST}, {FaultPoint::kImageOpen, 2, EEXIST}});
  const Status error = WriteImageFile(path_, new_);
  ASSERT_TRUE(error.ok()) << error.message;
  EXPECT_EQ(ops.calls(FaultPoint::kImageOpen), 3);
  ExpectImage(new_, "EEXIST");
  ExpectOnlyTheImage("EEXIST");
}

TEST_F(ImageFaultTest, PermissionDenied) {
  {
    FaultyCalls ops({{FaultPoint::kImageOpenDirectory, 1, EACCES}});
    const Status error = WriteImageFile(path_, new_);
    EXPECT_EQ(error.code, std::errc::permission_denied);
    EXPECT_EQ(error.message, "open directory " + dir_.path() + ": Permission denied");
    EXPECT_EQ(ops.calls(FaultPoint::kImageOpen), 0) << "nothing is created when the directory cannot be synced";
  }
  {
    FaultyCalls ops({{FaultPoint::kImageOpen, 1, EACCES}});
    const Status error = WriteImageFile(path_, new_);
    EXPECT_EQ(error.code, std::errc::permission_denied);
    EXPECT_THAT(error.message, MatchesRegex("create " + temporary_regex_ + ": Permission denied"));
    EXPECT_EQ(ops.calls(FaultPoint::kImageUnlink), 0) << "nothing was created, so nothing is removed";
    EXPECT_EQ(OpenFds(), ops.open_fds());
  }
  ExpectImage(old_, "EACCES");
  ExpectOnlyTheImage("EACCES");
}

TEST_F(ImageFaultTest, RenameFailureNamesBothPaths) {
  FaultyCalls ops({{FaultPoint::kImageRename, 1, EXDEV}});
  const Status error = WriteImageFile(path_, new_);
  EXPECT_EQ(error.code, std::errc::cross_device_link);
  EXPECT_THAT(error.message,
              MatchesRegex("rename " + temporary_regex_ + " \\(to " + path_ + "\\): Invalid cross-device link"));
  ExpectImage(old_, "EXDEV");
  ExpectOnlyTheImage("EXDEV");
  EXPECT_EQ(OpenFds(), ops.open_fds());
}

TEST_F(ImageFaultTest, DirectoryFsyncFailureSaysTheNewImageIsInPlace) {
  FaultyCalls ops({{FaultPoint::kImageFsync, 2, EIO}});
  const Status error = WriteImageFile(path_, new_);
  EXPECT_EQ(error.code, std::errc::io_error);
  EXPECT_EQ(error.message, "fsync directory " + dir_.path() + " (after the rename: " + path_ +
                               " holds the new image, but a power loss may bring back the old one): "
                               "Input/output error");
  ExpectImage(new_, "directory fsync");
  ExpectOnlyTheImage("directory fsync");
  EXPECT_EQ(OpenFds(), ops.open_fds());
}

TEST_F(ImageFaultTest, FailedCleanupIsReportedToo) {
  FaultyCalls ops({{FaultPoint::kImageWrite, 2, EIO}, {FaultPoint::kImageUnlink, 1, EACCES}});
  const Status error = WriteImageFile(path_, new_);
  EXPECT_EQ(error.code, std::errc::io_error) << "the first failure is the one reported";
  EXPECT_THAT(error.message, MatchesRegex("write " + temporary_regex_ + ": Input/output error; removing " +
                                          temporary_regex_ + " also failed: Permission denied"));
  ExpectImage(old_, "unlink failure");
  const std::vector<std::string> names = ListDir(dir_.path());
  ASSERT_EQ(names.size(), 2u) << "the temporary file that could not be removed is still there";
  EXPECT_TRUE(ReadRaw(dir_.File(names[0])).size() < Frame(new_).size());
  EXPECT_EQ(OpenFds(), ops.open_fds());
}

TEST_F(ImageFaultTest, ReadFailures) {
  std::string out = "untouched";
  {
    FaultyCalls ops({{FaultPoint::kImageOpen, 1, EACCES}});
    const Status error = ReadImageFile(path_, &out, {});
    EXPECT_EQ(error.code, std::errc::permission_denied);
    EXPECT_EQ(error.message, "open " + path_ + ": Permission denied");
  }
  {
    FaultyCalls ops({{FaultPoint::kImageFstat, 1, EIO}});
    const Status error = ReadImageFile(path_, &out, {});
    EXPECT_EQ(error.message, "fstat " + path_ + ": Input/output error");
    EXPECT_EQ(OpenFds(), ops.open_fds());
  }
  for (int nth = 1; nth <= 4; ++nth) {
    FaultyCalls ops({{FaultPoint::kImageRead, nth, EIO}}, /*max_transfer=*/Frame(old_).size() / 3 + 1);
    const Status error = ReadImageFile(path_, &out, {});
    EXPECT_EQ(error.message, "read " + path_ + ": Input/output error") << "read #" << nth;
    EXPECT_EQ(OpenFds(), ops.open_fds());
  }
  {
    FaultyCalls ops({}, 0);
    const Status error = ReadImageFile(path_, &out, ReadLimits{.max_payload = 100});
    EXPECT_EQ(error.code, ImageErrc::kTooLarge);
    EXPECT_EQ(ops.calls(FaultPoint::kImageRead), 0) << "an oversized file is rejected before it is read";
    EXPECT_EQ(OpenFds(), ops.open_fds());
  }
  EXPECT_EQ(out, "untouched");
  {
    FaultyCalls ops({{FaultPoint::kImageRead, 1, EINTR}, {FaultPoint::kImageRead, 5, EINTR}}, /*max_transfer=*/3);
    const Status error = ReadImageFile(path_, &out, {});
    ASSERT_TRUE(error.ok()) << error.message;
    EXPECT_TRUE(out == old_);
    EXPECT_EQ(OpenFds(), ops.open_fds());
  }
}

// --- Crashes -----------------------------------------------------------------------------------------------------------

// A hook under which the real calls are made, but the process dies (_exit(9), no cleanup at all) just before call
// number `die_before`; every transfer moves at most `max_transfer` bytes.
epollcr::testing::FaultHook Crashing(int die_before, std::size_t max_transfer) {
  return [die_before, max_transfer, calls = 0](const epollcr::testing::FaultCall&) mutable {
    if (++calls == die_before) ::_exit(9);
    return epollcr::testing::Fault{.error = 0, .max_bytes = max_transfer};
  };
}

TEST_F(ImageFaultTest, CrashAtAnyStepLeavesTheOldOrTheNewImage) {
  const std::string big_old = RandomBytes(3 << 20, 3);
  const std::string big_new = RandomBytes(8 << 20, 4);
  bool saw_new = false;
  int crashes = 0;
  for (int die_before = 1;; ++die_before) {
    ASSERT_LT(die_before, 100) << "the writer never finished";
    const std::string context = "died before call " + std::to_string(die_before);
    {
      const Status error = WriteImageFile(path_, big_old);
      ASSERT_TRUE(error.ok()) << error.message;
    }
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      epollcr::testing::SetFaultHook(Crashing(die_before, /*max_transfer=*/1 << 20));
      ::_exit(WriteImageFile(path_, big_new).ok() ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << context;
    const int code = WEXITSTATUS(status);
    ASSERT_TRUE(code == 0 || code == 9) << context << ": the writer failed (exit " << code << ")";

    std::string out;
    const Status error = ReadImageFile(path_, &out);
    ASSERT_TRUE(error.ok()) << context << ": " << error.message;
    const bool is_new = out == big_new;
    ASSERT_TRUE(is_new || out == big_old) << context << ": neither the old nor the new image";
    EXPECT_TRUE(is_new || !saw_new) << context << ": the old image came back after the new one was in place";
    saw_new = saw_new || is_new;

    // What a crash leaves beside the image is a temporary file of a dead process: never read, and removable.
    const Status cleaned = CleanStaleTemporaries(path_);
    ASSERT_TRUE(cleaned.ok()) << cleaned.message;
    ExpectOnlyTheImage(context);
    if (code == 0) {
      EXPECT_TRUE(is_new) << "the writer finished, so the new image is in place";
      break;
    }
    ++crashes;
  }
  // open directory, create, 9 writes (header + 8 MiB in 1 MiB pieces), fsync, close, rename, fsync directory, close.
  EXPECT_EQ(crashes, 16);
}

}  // namespace
}  // namespace epollcr::image
