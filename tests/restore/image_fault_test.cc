// Fault injection for image files: every system call WriteImageFile and ReadImageFile make is failed in turn (the Nth
// call of each kind), and the writer is killed before each of its calls in a child process. After each, the image at
// the target path is complete (the old one, or the new one once the rename is done), no temporary file or fd is left,
// and the error names the step and the path.

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fault_plan.h"
#include "image_test_util.h"
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

enum class Op { kOpenDirectory, kOpen, kWrite, kRead, kFsync, kFstat, kClose, kRename, kUnlink };

const char* OpName(Op op) {
  switch (op) {
    case Op::kOpenDirectory: return "OpenDirectory";
    case Op::kOpen: return "Open";
    case Op::kWrite: return "Write";
    case Op::kRead: return "Read";
    case Op::kFsync: return "Fsync";
    case Op::kFstat: return "Fstat";
    case Op::kClose: return "Close";
    case Op::kRename: return "Rename";
    case Op::kUnlink: return "Unlink";
  }
  return "?";
}

std::error_code Errno(int e) { return {e, std::generic_category()}; }

using Fault = epollcr::testing::Fault<Op>;

// The real calls, except the planned faults. Records every call, caps every transfer at `max_transfer` bytes (so
// short writes and reads are the rule), and tracks the fds it opened so a test can check that all were closed.
class FaultyFileOps final : public FileOps, public epollcr::testing::FaultPlan<Op> {
 public:
  using FaultPlan::FaultPlan;

  std::error_code Open(const std::string& path, int flags, mode_t mode, int* fd) override {
    const Fault* fault = Next(Op::kOpen);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    const std::error_code ec = real_.Open(path, flags, mode, fd);
    if (!ec) open_fds_.insert(*fd);
    return ec;
  }
  std::error_code OpenDirectory(const std::string& path, int* fd) override {
    const Fault* fault = Next(Op::kOpenDirectory);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    const std::error_code ec = real_.OpenDirectory(path, fd);
    if (!ec) open_fds_.insert(*fd);
    return ec;
  }
  std::error_code Write(int fd, const char* data, std::size_t size, std::size_t* done) override {
    const Fault* fault = Next(Op::kWrite);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return real_.Write(fd, data, Cap(size, fault), done);
  }
  std::error_code Read(int fd, char* data, std::size_t size, std::size_t* done) override {
    const Fault* fault = Next(Op::kRead);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return real_.Read(fd, data, Cap(size, fault), done);
  }
  std::error_code Fsync(int fd) override {
    const Fault* fault = Next(Op::kFsync);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return real_.Fsync(fd);
  }
  std::error_code Fstat(int fd, struct stat* st) override {
    const Fault* fault = Next(Op::kFstat);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return real_.Fstat(fd, st);
  }
  std::error_code Close(int fd) override {
    const Fault* fault = Next(Op::kClose);
    // Linux frees the descriptor even when close(2) fails, so a failing close still closes.
    const std::error_code ec = real_.Close(fd);
    if (!ec) open_fds_.erase(fd);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return ec;
  }
  std::error_code Rename(const std::string& from, const std::string& to) override {
    const Fault* fault = Next(Op::kRename);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return real_.Rename(from, to);
  }
  std::error_code Unlink(const std::string& path) override {
    const Fault* fault = Next(Op::kUnlink);
    if (fault != nullptr && fault->error != 0) return Errno(fault->error);
    return real_.Unlink(path);
  }

  const std::set<int>& open_fds() const { return open_fds_; }

 private:
  FileOps& real_ = DefaultFileOps();
  std::set<int> open_fds_;
};

class ImageFaultTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteOld(); }

  void WriteOld() {
    const ImageError error = WriteImageFile(path_, old_);
    ASSERT_TRUE(error.ok()) << error.message;
  }

  // The target holds exactly `payload`, framed, and reads back as it.
  void ExpectImage(const std::string& payload, const std::string& context) {
    EXPECT_EQ(ReadRaw(path_), Frame(payload)) << context;
    std::string out;
    const ImageError error = ReadImageFile(path_, &out);
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
std::string StepOf(Op op, bool after_rename) {
  switch (op) {
    case Op::kOpenDirectory: return "open directory";
    case Op::kOpen: return "create";
    case Op::kWrite: return "write";
    case Op::kFsync: return after_rename ? "fsync directory" : "fsync";
    case Op::kClose: return "close";
    case Op::kRename: return "rename";
    default: return OpName(op);
  }
}

TEST_F(ImageFaultTest, EveryCallOfEveryKindFailingInWrite) {
  constexpr std::size_t kChunk = 4096;  // so the header and the payload take several writes
  FaultyFileOps counting({}, kChunk);
  {
    const ImageError error = WriteImageFile(path_, new_, counting);
    ASSERT_TRUE(error.ok()) << error.message;
  }
  const std::vector<Op> trace = counting.trace();
  const auto rename_at = std::find(trace.begin(), trace.end(), Op::kRename) - trace.begin();
  ASSERT_LT(rename_at, static_cast<long>(trace.size()));
  ASSERT_GE(counting.calls(Op::kWrite), 8);
  EXPECT_EQ(counting.calls(Op::kUnlink), 0);
  EXPECT_EQ(counting.calls(Op::kRead), 0);

  std::map<Op, int> seen;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    const Op op = trace[i];
    const int nth = ++seen[op];
    const bool after_rename = static_cast<long>(i) > rename_at;
    const std::string context = std::string("failing ") + OpName(op) + " #" + std::to_string(nth);
    WriteOld();
    FaultyFileOps ops({{op, nth, EIO}}, kChunk);
    const ImageError error = WriteImageFile(path_, new_, ops);

    if (op == Op::kClose && after_rename) {
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
      if (!after_rename && (op == Op::kWrite || op == Op::kFsync || op == Op::kClose || op == Op::kRename)) {
        EXPECT_THAT(error.message, MatchesRegex(StepOf(op, false) + " " + temporary_regex_ + "( \\(to " + path_ +
                                                    "\\))?: Input/output error"))
            << context;
      }
    }
    ExpectOnlyTheImage(context);
    EXPECT_TRUE(ops.open_fds().empty()) << context << ": an fd was left open";
  }
}

TEST_F(ImageFaultTest, ShortWriteThenNoSpace) {
  FaultyFileOps ops({{Op::kWrite, 1, 0, 10}, {Op::kWrite, 2, ENOSPC}});
  const ImageError error = WriteImageFile(path_, new_, ops);
  EXPECT_EQ(error.code, std::errc::no_space_on_device);
  EXPECT_THAT(error.message, MatchesRegex("write " + temporary_regex_ + ": No space left on device"));
  ExpectImage(old_, "ENOSPC");
  ExpectOnlyTheImage("ENOSPC");
  EXPECT_EQ(ops.calls(Op::kUnlink), 1);
  EXPECT_TRUE(ops.open_fds().empty());
}

TEST_F(ImageFaultTest, ShortWritesAndInterruptedCallsAreContinued) {
  FaultyFileOps ops({{Op::kOpenDirectory, 1, EINTR},
                     {Op::kOpen, 1, EINTR},
                     {Op::kWrite, 1, EINTR},
                     {Op::kWrite, 4, EINTR},
                     {Op::kFsync, 1, EINTR},
                     {Op::kFsync, 3, EINTR}},
                    /*max_transfer=*/777);
  const ImageError error = WriteImageFile(path_, new_, ops);
  ASSERT_TRUE(error.ok()) << error.message;
  ExpectImage(new_, "interrupted");
  ExpectOnlyTheImage("interrupted");
  EXPECT_GT(ops.calls(Op::kWrite), static_cast<int>(new_.size() / 777));
  EXPECT_TRUE(ops.open_fds().empty());
}

TEST_F(ImageFaultTest, InterruptedCloseCountsAsClosed) {
  FaultyFileOps ops({{Op::kClose, 1, EINTR}});
  const ImageError error = WriteImageFile(path_, new_, ops);
  ASSERT_TRUE(error.ok()) << error.message;
  ExpectImage(new_, "close EINTR");
  EXPECT_TRUE(ops.open_fds().empty());
}

TEST_F(ImageFaultTest, TakenTemporaryNameIsRetriedWithAnother) {
  FaultyFileOps ops({{Op::kOpen, 1, EEXIST}, {Op::kOpen, 2, EEXIST}});
  const ImageError error = WriteImageFile(path_, new_, ops);
  ASSERT_TRUE(error.ok()) << error.message;
  EXPECT_EQ(ops.calls(Op::kOpen), 3);
  ExpectImage(new_, "EEXIST");
  ExpectOnlyTheImage("EEXIST");
}

TEST_F(ImageFaultTest, PermissionDenied) {
  {
    FaultyFileOps ops({{Op::kOpenDirectory, 1, EACCES}});
    const ImageError error = WriteImageFile(path_, new_, ops);
    EXPECT_EQ(error.code, std::errc::permission_denied);
    EXPECT_EQ(error.message, "open directory " + dir_.path() + ": Permission denied");
    EXPECT_EQ(ops.calls(Op::kOpen), 0) << "nothing is created when the directory cannot be synced";
  }
  {
    FaultyFileOps ops({{Op::kOpen, 1, EACCES}});
    const ImageError error = WriteImageFile(path_, new_, ops);
    EXPECT_EQ(error.code, std::errc::permission_denied);
    EXPECT_THAT(error.message, MatchesRegex("create " + temporary_regex_ + ": Permission denied"));
    EXPECT_EQ(ops.calls(Op::kUnlink), 0) << "nothing was created, so nothing is removed";
    EXPECT_TRUE(ops.open_fds().empty());
  }
  ExpectImage(old_, "EACCES");
  ExpectOnlyTheImage("EACCES");
}

TEST_F(ImageFaultTest, RenameFailureNamesBothPaths) {
  FaultyFileOps ops({{Op::kRename, 1, EXDEV}});
  const ImageError error = WriteImageFile(path_, new_, ops);
  EXPECT_EQ(error.code, std::errc::cross_device_link);
  EXPECT_THAT(error.message,
              MatchesRegex("rename " + temporary_regex_ + " \\(to " + path_ + "\\): Invalid cross-device link"));
  ExpectImage(old_, "EXDEV");
  ExpectOnlyTheImage("EXDEV");
  EXPECT_TRUE(ops.open_fds().empty());
}

TEST_F(ImageFaultTest, DirectoryFsyncFailureSaysTheNewImageIsInPlace) {
  FaultyFileOps ops({{Op::kFsync, 2, EIO}});
  const ImageError error = WriteImageFile(path_, new_, ops);
  EXPECT_EQ(error.code, std::errc::io_error);
  EXPECT_EQ(error.message, "fsync directory " + dir_.path() + " (after the rename: " + path_ +
                               " holds the new image, but a power loss may bring back the old one): "
                               "Input/output error");
  ExpectImage(new_, "directory fsync");
  ExpectOnlyTheImage("directory fsync");
  EXPECT_TRUE(ops.open_fds().empty());
}

TEST_F(ImageFaultTest, FailedCleanupIsReportedToo) {
  FaultyFileOps ops({{Op::kWrite, 2, EIO}, {Op::kUnlink, 1, EACCES}});
  const ImageError error = WriteImageFile(path_, new_, ops);
  EXPECT_EQ(error.code, std::errc::io_error) << "the first failure is the one reported";
  EXPECT_THAT(error.message, MatchesRegex("write " + temporary_regex_ + ": Input/output error; removing " +
                                          temporary_regex_ + " also failed: Permission denied"));
  ExpectImage(old_, "unlink failure");
  const std::vector<std::string> names = ListDir(dir_.path());
  ASSERT_EQ(names.size(), 2u) << "the temporary file that could not be removed is still there";
  EXPECT_TRUE(ReadRaw(dir_.File(names[0])).size() < Frame(new_).size());
  EXPECT_TRUE(ops.open_fds().empty());
}

TEST_F(ImageFaultTest, ReadFailures) {
  std::string out = "untouched";
  {
    FaultyFileOps ops({{Op::kOpen, 1, EACCES}});
    const ImageError error = ReadImageFile(path_, &out, {}, ops);
    EXPECT_EQ(error.code, std::errc::permission_denied);
    EXPECT_EQ(error.message, "open " + path_ + ": Permission denied");
  }
  {
    FaultyFileOps ops({{Op::kFstat, 1, EIO}});
    const ImageError error = ReadImageFile(path_, &out, {}, ops);
    EXPECT_EQ(error.message, "fstat " + path_ + ": Input/output error");
    EXPECT_TRUE(ops.open_fds().empty());
  }
  for (int nth = 1; nth <= 4; ++nth) {
    FaultyFileOps ops({{Op::kRead, nth, EIO}}, /*max_transfer=*/Frame(old_).size() / 3 + 1);
    const ImageError error = ReadImageFile(path_, &out, {}, ops);
    EXPECT_EQ(error.message, "read " + path_ + ": Input/output error") << "read #" << nth;
    EXPECT_TRUE(ops.open_fds().empty());
  }
  {
    FaultyFileOps ops({}, 0);
    const ImageError error = ReadImageFile(path_, &out, ReadLimits{.max_payload = 100}, ops);
    EXPECT_EQ(error.code, ImageErrc::kTooLarge);
    EXPECT_EQ(ops.calls(Op::kRead), 0) << "an oversized file is rejected before it is read";
    EXPECT_TRUE(ops.open_fds().empty());
  }
  EXPECT_EQ(out, "untouched");
  {
    FaultyFileOps ops({{Op::kRead, 1, EINTR}, {Op::kRead, 5, EINTR}}, /*max_transfer=*/3);
    const ImageError error = ReadImageFile(path_, &out, {}, ops);
    ASSERT_TRUE(error.ok()) << error.message;
    EXPECT_TRUE(out == old_);
    EXPECT_TRUE(ops.open_fds().empty());
  }
}

// --- Crashes -----------------------------------------------------------------------------------------------------------

// The real calls, but the process dies (_exit(9), no cleanup at all) just before call number `die_before`.
class CrashingFileOps final : public FileOps {
 public:
  CrashingFileOps(int die_before, std::size_t max_transfer) : die_before_(die_before), max_transfer_(max_transfer) {}

  std::error_code Open(const std::string& path, int flags, mode_t mode, int* fd) override {
    Step();
    return real_.Open(path, flags, mode, fd);
  }
  std::error_code OpenDirectory(const std::string& path, int* fd) override {
    Step();
    return real_.OpenDirectory(path, fd);
  }
  std::error_code Write(int fd, const char* data, std::size_t size, std::size_t* done) override {
    Step();
    return real_.Write(fd, data, std::min(size, max_transfer_), done);
  }
  std::error_code Read(int fd, char* data, std::size_t size, std::size_t* done) override {
    Step();
    return real_.Read(fd, data, size, done);
  }
  std::error_code Fsync(int fd) override {
    Step();
    return real_.Fsync(fd);
  }
  std::error_code Fstat(int fd, struct stat* st) override {
    Step();
    return real_.Fstat(fd, st);
  }
  std::error_code Close(int fd) override {
    Step();
    return real_.Close(fd);
  }
  std::error_code Rename(const std::string& from, const std::string& to) override {
    Step();
    return real_.Rename(from, to);
  }
  std::error_code Unlink(const std::string& path) override {
    Step();
    return real_.Unlink(path);
  }

 private:
  void Step() {
    if (++calls_ == die_before_) ::_exit(9);
  }

  FileOps& real_ = DefaultFileOps();
  int die_before_;
  std::size_t max_transfer_;
  int calls_ = 0;
};

TEST_F(ImageFaultTest, CrashAtAnyStepLeavesTheOldOrTheNewImage) {
  const std::string big_old = RandomBytes(3 << 20, 3);
  const std::string big_new = RandomBytes(8 << 20, 4);
  bool saw_new = false;
  int crashes = 0;
  for (int die_before = 1;; ++die_before) {
    ASSERT_LT(die_before, 100) << "the writer never finished";
    const std::string context = "died before call " + std::to_string(die_before);
    {
      const ImageError error = WriteImageFile(path_, big_old);
      ASSERT_TRUE(error.ok()) << error.message;
    }
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      CrashingFileOps ops(die_before, /*max_transfer=*/1 << 20);
      ::_exit(WriteImageFile(path_, big_new, ops).ok() ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << context;
    const int code = WEXITSTATUS(status);
    ASSERT_TRUE(code == 0 || code == 9) << context << ": the writer failed (exit " << code << ")";

    std::string out;
    const ImageError error = ReadImageFile(path_, &out);
    ASSERT_TRUE(error.ok()) << context << ": " << error.message;
    const bool is_new = out == big_new;
    ASSERT_TRUE(is_new || out == big_old) << context << ": neither the old nor the new image";
    EXPECT_TRUE(is_new || !saw_new) << context << ": the old image came back after the new one was in place";
    saw_new = saw_new || is_new;

    // What a crash leaves beside the image is a temporary file of a dead process: never read, and removable.
    const ImageError cleaned = CleanStaleTemporaries(path_);
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
