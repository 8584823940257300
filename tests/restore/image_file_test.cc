// The image file format: framing (every truncation and every single-byte flip of a small image is rejected, each
// error has its own message), and writing / reading files in a temporary directory.

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "image/file.h"
#include "image_test_util.h"

namespace epollcr::image {
namespace {

using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::ListDir;
using testing::MakeHeader;
using testing::RandomBytes;
using testing::ReadRaw;
using testing::TempDir;
using testing::WriteRaw;

std::uint64_t GetLe(const std::string& bytes, std::size_t offset, int size) {
  std::uint64_t value = 0;
  for (int i = 0; i < size; ++i) value |= std::uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  return value;
}

// --- CRC32C and the header layout ------------------------------------------------------------------------------------

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);               // the check value of CRC-32C (iSCSI)
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8a9136aau);      // RFC 3720, B.4: 32 bytes of zeros
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62a8ab43u);    // RFC 3720, B.4: 32 bytes of 0xff
}

TEST(FrameTest, HeaderLayoutMatchesTheSpecification) {
  const std::string payload = RandomBytes(200, 1);
  const std::string framed = Frame(payload);
  ASSERT_EQ(framed.size(), kHeaderSize + payload.size());
  EXPECT_EQ(framed.substr(0, 8), std::string("EPCRIMG\0", 8));
  EXPECT_EQ(GetLe(framed, 8, 2), 1u);    // major
  EXPECT_EQ(GetLe(framed, 10, 2), 0u);   // minor
  EXPECT_EQ(GetLe(framed, 12, 4), 0u);   // flags
  EXPECT_EQ(GetLe(framed, 16, 8), 200u);  // payload length
  EXPECT_EQ(GetLe(framed, 24, 4), Crc32c(payload));
  EXPECT_EQ(GetLe(framed, 28, 4), Crc32c(framed.substr(0, 28)));
  EXPECT_EQ(framed.substr(kHeaderSize), payload);
  // The independent construction of the header from the documented table agrees byte for byte.
  EXPECT_EQ(framed.substr(0, kHeaderSize), MakeHeader(1, 0, 0, 200, Crc32c(payload)));
  const FrameHeaderBytes header = FrameHeader(payload);
  EXPECT_EQ(std::string(header.data(), header.size()), framed.substr(0, kHeaderSize));
}

// --- Unframe -----------------------------------------------------------------------------------------------------------

TEST(UnframeTest, RoundTripsPayloadsOfManySizes) {
  for (std::size_t size : {0u, 1u, 7u, 31u, 32u, 33u, 200u, 4096u, 1u << 20}) {
    const std::string payload = RandomBytes(size, static_cast<std::uint32_t>(size));
    const std::string framed = Frame(payload);
    const Result<std::string_view> result = Unframe(framed, {});
    ASSERT_TRUE(result.ok()) << size << ": " << result.status().message;
    EXPECT_EQ(result.value(), payload) << size;
    EXPECT_EQ(result.value().data(), framed.data() + kHeaderSize) << "a view into the input, not a copy";
  }
}

TEST(UnframeTest, EveryTruncationIsRejectedAsTruncated) {
  const std::string framed = Frame(RandomBytes(200, 2));
  for (std::size_t length = 0; length < framed.size(); ++length) {
    const Result<std::string_view> result = Unframe(std::string_view(framed).substr(0, length), {});
    ASSERT_FALSE(result.ok()) << "prefix of " << length << " bytes accepted";
    EXPECT_EQ(result.status().code, ImageErrc::kTruncated) << length << ": " << result.status().message;
    EXPECT_THAT(result.status().message, StartsWith("truncated: ")) << length;
  }
}

// The error each header region gives when one of its bytes is damaged.
ImageErrc ExpectedErrorForFlipAt(std::size_t pos) {
  if (pos < 8) return ImageErrc::kBadMagic;
  if (pos < 10) return ImageErrc::kUnsupportedVersion;  // the major: checked before the header checksum
  if (pos < kHeaderSize) return ImageErrc::kHeaderChecksum;
  return ImageErrc::kPayloadChecksum;
}

TEST(UnframeTest, EverySingleByteFlipIsRejected) {
  const std::string framed = Frame(RandomBytes(200, 3));
  int rejected = 0;
  for (std::size_t pos = 0; pos < framed.size(); ++pos) {
    for (unsigned mask : {0x01u, 0x80u, 0xffu}) {
      std::string damaged = framed;
      damaged[pos] = static_cast<char>(damaged[pos] ^ mask);
      const Result<std::string_view> result = Unframe(damaged, {});
      ASSERT_FALSE(result.ok()) << "flip 0x" << std::hex << mask << " at " << std::dec << pos << " accepted";
      EXPECT_EQ(result.status().code, ExpectedErrorForFlipAt(pos))
          << "flip at " << pos << " mask " << mask << ": " << result.status().message;
      ++rejected;
    }
  }
  EXPECT_EQ(rejected, 3 * 232);
}

TEST(UnframeTest, BadMagicMessage) {
  const std::string png = "\x89PNG\r\n\x1a\n" + std::string(100, 'x');
  const Result<std::string_view> result = Unframe(png, {});
  EXPECT_EQ(result.status().code, ImageErrc::kBadMagic);
  EXPECT_EQ(result.status().message, "bad magic (not an epollcr image)");
  EXPECT_EQ(Unframe("hello", {}).status().message, "bad magic (not an epollcr image)") << "short and wrong is bad magic";
  EXPECT_EQ(Unframe("EPC", {}).status().code, ImageErrc::kTruncated) << "short and right so far is truncated";
}

TEST(UnframeTest, NewerMajorVersionSaysWhichItFoundAndWhichItReads) {
  const std::string payload = "p";
  const std::string image = MakeHeader(2, 0, 0, 1, Crc32c(payload)) + payload;
  const Result<std::string_view> result = Unframe(image, {});
  EXPECT_EQ(result.status().code, ImageErrc::kUnsupportedVersion);
  EXPECT_EQ(result.status().message, "format version 2.0 is newer than this build reads (1.x)");
  EXPECT_TRUE(result.status().code == std::errc::not_supported);

  // A newer major is recognised by bytes 0..11 alone: its header may be laid out differently.
  std::string other_layout = MakeHeader(7, 3, 0, 0, 0);
  other_layout[28] = 'z';
  EXPECT_EQ(Unframe(other_layout, {}).status().message, "format version 7.3 is newer than this build reads (1.x)");
  EXPECT_EQ(Unframe(MakeHeader(0, 9, 0, 0, 0), {}).status().message,
            "format version 0.9 is older than this build reads (1.x)");
}

TEST(UnframeTest, AnyMinorOfMajorOneIsRead) {
  const std::string payload = RandomBytes(50, 4);
  for (std::uint16_t minor : {0, 1, 7, 65535}) {
    const std::string image = MakeHeader(1, minor, 0, payload.size(), Crc32c(payload)) + payload;
    const Result<std::string_view> result = Unframe(image, {});
    ASSERT_TRUE(result.ok()) << minor << ": " << result.status().message;
    EXPECT_EQ(result.value(), payload);
  }
}

TEST(UnframeTest, RequiredFlagsAreRejectedOptionalFlagsIgnored) {
  const std::string payload = "payload";
  const std::string required = MakeHeader(1, 3, 0x00000004, payload.size(), Crc32c(payload)) + payload;
  const Result<std::string_view> bad = Unframe(required, {});
  EXPECT_EQ(bad.status().code, ImageErrc::kUnsupportedFlags);
  EXPECT_EQ(bad.status().message, "format 1.3 sets required flags 0x00000004 that this build does not understand");

  const std::string optional = MakeHeader(1, 3, 0x00010000, payload.size(), Crc32c(payload)) + payload;
  const Result<std::string_view> good = Unframe(optional, {});
  ASSERT_TRUE(good.ok()) << good.status().message;
  EXPECT_EQ(good.value(), payload);
}

TEST(UnframeTest, LengthOverTheLimitMessage) {
  const std::string framed = Frame(RandomBytes(200, 5));
  const Result<std::string_view> result = Unframe(framed, ReadLimits{.max_payload = 100});
  EXPECT_EQ(result.status().code, ImageErrc::kTooLarge);
  EXPECT_EQ(result.status().message, "payload length 200 exceeds the limit 100");
  EXPECT_TRUE(result.status().code == std::errc::file_too_large);
  EXPECT_TRUE(Unframe(framed, ReadLimits{.max_payload = 200}).ok()) << "the limit itself is allowed";
}

TEST(UnframeTest, TruncatedAndTrailingMessages) {
  const std::string framed = Frame(RandomBytes(200, 6));
  EXPECT_EQ(Unframe(std::string_view(framed).substr(0, 150), {}).status().message,
            "truncated: header says 200 payload bytes, file has 118");
  EXPECT_EQ(Unframe(std::string_view(framed).substr(0, 20), {}).status().message,
            "truncated: 20 bytes, shorter than the 32-byte header");
  const Result<std::string_view> trailing = Unframe(framed + "xyz", {});
  EXPECT_EQ(trailing.status().code, ImageErrc::kTrailingBytes);
  EXPECT_EQ(trailing.status().message, "trailing bytes after the payload: header says 200 payload bytes, file has 203");
}

TEST(UnframeTest, ChecksumMessages) {
  std::string framed = Frame(RandomBytes(200, 7));
  std::string payload_damaged = framed;
  payload_damaged[100] ^= 0x10;
  const Result<std::string_view> payload = Unframe(payload_damaged, {});
  EXPECT_EQ(payload.status().code, ImageErrc::kPayloadChecksum);
  EXPECT_THAT(payload.status().message, StartsWith("payload checksum mismatch (stored 0x"));
  EXPECT_TRUE(payload.status().code == std::errc::bad_message);

  std::string header_damaged = framed;
  header_damaged[17] ^= 0x10;  // the length: without the header checksum this would read as "truncated"
  const Result<std::string_view> header = Unframe(header_damaged, {});
  EXPECT_EQ(header.status().code, ImageErrc::kHeaderChecksum);
  EXPECT_THAT(header.status().message, StartsWith("header checksum mismatch (stored 0x"));
}

TEST(UnframeTest, HugeClaimInASmallBufferFailsWithoutTrustingTheClaim) {
  const std::uint64_t claim = std::uint64_t{1} << 40;
  const std::string image = MakeHeader(1, 0, 0, claim, 0) + std::string(68, 'x');  // 100 bytes in all
  ASSERT_EQ(image.size(), 100u);
  const Result<std::string_view> no_limit = Unframe(image, ReadLimits{.max_payload = std::numeric_limits<std::uint64_t>::max()});
  EXPECT_EQ(no_limit.status().code, ImageErrc::kTruncated);
  EXPECT_EQ(no_limit.status().message, "truncated: header says 1099511627776 payload bytes, file has 68");
  const Result<std::string_view> default_limit = Unframe(image, {});
  EXPECT_EQ(default_limit.status().message, "payload length 1099511627776 exceeds the limit 1073741824");
  // The largest possible claim cannot overflow anything either.
  const std::string max_claim = MakeHeader(1, 0, 0, std::numeric_limits<std::uint64_t>::max(), 0);
  EXPECT_EQ(Unframe(max_claim, ReadLimits{.max_payload = std::numeric_limits<std::uint64_t>::max()}).status().code,
            ImageErrc::kTruncated);
}

TEST(ImageErrcTest, EachCodeHasItsOwnMessageAndCategory) {
  std::vector<std::string> messages;
  for (int e = static_cast<int>(ImageErrc::kBadMagic); e <= static_cast<int>(ImageErrc::kNotRegularFile); ++e) {
    const std::error_code code = static_cast<ImageErrc>(e);
    EXPECT_EQ(&code.category(), &ImageCategory());
    EXPECT_STREQ(code.category().name(), "epollcr.image");
    messages.push_back(code.message());
  }
  std::sort(messages.begin(), messages.end());
  EXPECT_EQ(std::adjacent_find(messages.begin(), messages.end()), messages.end()) << "two codes share a message";
}

// --- Files -------------------------------------------------------------------------------------------------------------

class ImageFileTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(ImageFileTest, WriteThenReadRoundTrips) {
  const std::string path = dir_.File("world.img");
  const std::string payload = RandomBytes(100'000, 8);
  const Status written = WriteImageFile(path, payload);
  ASSERT_TRUE(written.ok()) << written.message;
  EXPECT_EQ(ReadRaw(path), Frame(payload)) << "the file is exactly the framed payload";
  std::string read_back;
  const Status read = ReadImageFile(path, &read_back);
  ASSERT_TRUE(read.ok()) << read.message;
  EXPECT_EQ(read_back, payload);
  EXPECT_THAT(ListDir(dir_.path()), ElementsAre("world.img")) << "no temporary file is left";
}

TEST_F(ImageFileTest, EmptyPayloadRoundTrips) {
  const std::string path = dir_.File("empty-payload.img");
  ASSERT_TRUE(WriteImageFile(path, "").ok());
  EXPECT_EQ(ReadRaw(path).size(), kHeaderSize);
  std::string read_back = "old";
  ASSERT_TRUE(ReadImageFile(path, &read_back).ok());
  EXPECT_EQ(read_back, "");
}

TEST_F(ImageFileTest, ModeIs0600) {
  const mode_t old_umask = ::umask(022);
  const std::string path = dir_.File("mode.img");
  const Status written = WriteImageFile(path, "secret state");
  ::umask(old_umask);
  ASSERT_TRUE(written.ok()) << written.message;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(ImageFileTest, ReplacesAnExistingImage) {
  const std::string path = dir_.File("replace.img");
  ASSERT_TRUE(WriteImageFile(path, "first").ok());
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  ASSERT_TRUE(WriteImageFile(path, "second, longer").ok());
  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino) << "replaced by rename, not rewritten in place";
  std::string read_back;
  ASSERT_TRUE(ReadImageFile(path, &read_back).ok());
  EXPECT_EQ(read_back, "second, longer");
  EXPECT_THAT(ListDir(dir_.path()), ElementsAre("replace.img"));
}

TEST_F(ImageFileTest, RelativeBareNameUsesTheWorkingDirectory) {
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(::chdir(dir_.path().c_str()), 0);
  const Status written = WriteImageFile("bare.img", "here");
  std::string read_back;
  const Status read = ReadImageFile("bare.img", &read_back);
  ASSERT_EQ(::chdir(cwd), 0);
  ASSERT_TRUE(written.ok()) << written.message;
  ASSERT_TRUE(read.ok()) << read.message;
  EXPECT_EQ(read_back, "here");
  EXPECT_THAT(ListDir(dir_.path()), ElementsAre("bare.img"));
}

TEST_F(ImageFileTest, WriteErrorsNameThePathAndTheStep) {
  const std::string missing_dir = dir_.File("no/such/dir") + "/x.img";
  const Status no_dir = WriteImageFile(missing_dir, "x");
  EXPECT_EQ(no_dir.code, std::errc::no_such_file_or_directory);
  EXPECT_EQ(no_dir.message, "open directory " + dir_.File("no/such/dir") + ": No such file or directory");

  const Status trailing_slash = WriteImageFile(dir_.File("d/"), "x");
  EXPECT_EQ(trailing_slash.code, std::errc::is_a_directory);
  EXPECT_THAT(trailing_slash.message, HasSubstr(dir_.File("d/")));

  // A directory where the image should go: the rename fails, and its temporary file is removed.
  ASSERT_EQ(::mkdir(dir_.File("taken").c_str(), 0700), 0);
  const Status over_dir = WriteImageFile(dir_.File("taken"), "x");
  EXPECT_EQ(over_dir.code, std::errc::is_a_directory);
  EXPECT_THAT(over_dir.message, StartsWith("rename " + dir_.File(".taken.tmp.")));
  EXPECT_THAT(over_dir.message, HasSubstr("(to " + dir_.File("taken") + "): Is a directory"));
  EXPECT_THAT(ListDir(dir_.path()), ElementsAre("taken"));
  EXPECT_EQ(WriteImageFile("", "x").code, std::errc::no_such_file_or_directory);
}

TEST_F(ImageFileTest, ReadErrorsEachSayWhatIsWrong) {
  std::string out = "untouched";
  const Status missing = ReadImageFile(dir_.File("missing.img"), &out);
  EXPECT_EQ(missing.code, std::errc::no_such_file_or_directory);
  EXPECT_EQ(missing.message, "open " + dir_.File("missing.img") + ": No such file or directory");

  const Status directory = ReadImageFile(dir_.path(), &out);
  EXPECT_EQ(directory.code, std::errc::is_a_directory);
  EXPECT_EQ(directory.message, dir_.path() + ": is a directory, not an image file");

  WriteRaw(dir_.File("empty.img"), "");
  const Status empty = ReadImageFile(dir_.File("empty.img"), &out);
  EXPECT_EQ(empty.code, ImageErrc::kEmptyFile);
  EXPECT_EQ(empty.message, dir_.File("empty.img") + ": empty file (not an epollcr image)");

  WriteRaw(dir_.File("text.img"), "just some text\n");
  const Status text = ReadImageFile(dir_.File("text.img"), &out);
  EXPECT_EQ(text.code, ImageErrc::kBadMagic);
  EXPECT_EQ(text.message, dir_.File("text.img") + ": bad magic (not an epollcr image)");

  // A FIFO with no writer: rejected without blocking in open or read.
  ASSERT_EQ(::mkfifo(dir_.File("fifo").c_str(), 0600), 0);
  const Status fifo = ReadImageFile(dir_.File("fifo"), &out);
  EXPECT_EQ(fifo.code, ImageErrc::kNotRegularFile);
  EXPECT_EQ(fifo.message, dir_.File("fifo") + ": is a FIFO, not an image file");

  const Status null_out = ReadImageFile(dir_.File("text.img"), nullptr);
  EXPECT_EQ(null_out.code, std::errc::invalid_argument);

  EXPECT_EQ(out, "untouched") << "a failed read leaves the output alone";
}

// Runs `fn` where permission checks apply — in a child process with the uid and gid of nobody when the tests run as
// root — and returns what it returned. Empty `*skip_reason` on success.
std::string WithoutPrivileges(const std::function<std::string()>& fn, std::string* skip_reason) {
  if (::geteuid() != 0) return fn();
  int fds[2];
  if (::pipe(fds) != 0) {
    *skip_reason = "pipe failed";
    return {};
  }
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[0]);
    constexpr uid_t kNobody = 65534;
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) ::_exit(3);
    const std::string result = fn();
    std::size_t done = 0;
    while (done < result.size()) {
      const ssize_t n = ::write(fds[1], result.data() + done, result.size() - done);
      if (n <= 0) ::_exit(4);
      done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string result;
  char buffer[512];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) result.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) *skip_reason = "cannot drop root privileges here";
  else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ADD_FAILURE() << "the unprivileged child failed";
  return result;
}

TEST_F(ImageFileTest, UnreadableFile) {
  const std::string path = dir_.File("locked.img");
  ASSERT_TRUE(WriteImageFile(path, "x").ok());
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
  std::string skip;
  const std::string message = WithoutPrivileges(
      [&] {
        std::string out = "untouched";
        const Status error = ReadImageFile(path, &out);
        return (error.code == std::errc::permission_denied && out == "untouched" ? "" : "wrong code: ") + error.message;
      },
      &skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  EXPECT_EQ(message, "open " + path + ": Permission denied");
}

TEST_F(ImageFileTest, UnwritableOrUnreadableDirectory) {
  const std::string path = dir_.File("world.img");
  ASSERT_TRUE(WriteImageFile(path, "old").ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);  // so that the unprivileged child can check it is intact

  // r-x: the directory opens (and could be synced) but nothing can be created in it.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0555), 0);
  std::string skip;
  const std::string create = WithoutPrivileges([&] { return WriteImageFile(path, "new").message; }, &skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  EXPECT_THAT(create, StartsWith("create " + dir_.File(".world.img.tmp.")));
  EXPECT_THAT(create, EndsWith(": Permission denied"));

  // -wx: a file could be created, but the directory cannot be opened to sync the rename; nothing is created.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0333), 0);
  const std::string open_dir = WithoutPrivileges([&] { return WriteImageFile(path, "new").message; }, &skip);
  EXPECT_EQ(open_dir, "open directory " + dir_.path() + ": Permission denied");

  ASSERT_EQ(::chmod(dir_.path().c_str(), 0700), 0);
  std::string out;
  ASSERT_TRUE(ReadImageFile(path, &out).ok());
  EXPECT_EQ(out, "old");
  EXPECT_THAT(ListDir(dir_.path()), ElementsAre("world.img"));
}

TEST_F(ImageFileTest, FileLargerThanTheLimitIsRejectedBeforeReading) {
  const std::string path = dir_.File("big.img");
  ASSERT_TRUE(WriteImageFile(path, RandomBytes(1000, 9)).ok());
  std::string out;
  const Status error = ReadImageFile(path, &out, ReadLimits{.max_payload = 999});
  EXPECT_EQ(error.code, ImageErrc::kTooLarge);
  EXPECT_EQ(error.message,
            path + ": file is 1032 bytes, more than the limit of 999 payload bytes plus the 32-byte header");
  EXPECT_TRUE(ReadImageFile(path, &out, ReadLimits{.max_payload = 1000}).ok());
}

TEST_F(ImageFileTest, FileWithHugeClaimIsRejected) {
  const std::string path = dir_.File("claim.img");
  WriteRaw(path, MakeHeader(1, 0, 0, std::uint64_t{1} << 40, 0) + std::string(68, 'x'));
  std::string out;
  const Status no_limit =
      ReadImageFile(path, &out, ReadLimits{.max_payload = std::numeric_limits<std::uint64_t>::max()});
  EXPECT_EQ(no_limit.code, ImageErrc::kTruncated);
  EXPECT_EQ(no_limit.message, path + ": truncated: header says 1099511627776 payload bytes, file has 68");
  EXPECT_EQ(ReadImageFile(path, &out).code, ImageErrc::kTooLarge);
}

TEST_F(ImageFileTest, EveryTruncatedFileIsRejected) {
  const std::string framed = Frame(RandomBytes(200, 10));
  const std::string path = dir_.File("cut.img");
  for (std::size_t length = 0; length < framed.size(); ++length) {
    WriteRaw(path, framed.substr(0, length));
    std::string out;
    const Status error = ReadImageFile(path, &out);
    ASSERT_FALSE(error.ok()) << length;
    EXPECT_TRUE(error.code == std::errc::bad_message) << length << ": " << error.message;
  }
}

// --- Stale temporaries -------------------------------------------------------------------------------------------------

pid_t DeadPid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

TEST_F(ImageFileTest, CleanStaleTemporariesRemovesOnlyThoseOfDeadWriters) {
  const std::string path = dir_.File("world.img");
  ASSERT_TRUE(WriteImageFile(path, "current").ok());
  const std::string dead = ".world.img.tmp." + std::to_string(DeadPid()) + ".0123456789abcdef";
  const std::string alive = ".world.img.tmp." + std::to_string(::getpid()) + ".0123456789abcdef";
  const std::vector<std::string> unrelated = {
      ".other.img.tmp." + std::to_string(DeadPid()) + ".0123456789abcdef",  // another image's
      ".world.img.tmp.x.0123456789abcdef",                                   // not a PID
      ".world.img.tmp.1.short",                                              // not our suffix
      "world.img.tmp.1.0123456789abcdef",                                    // no leading dot
  };
  WriteRaw(dir_.File(dead), "partial");
  WriteRaw(dir_.File(alive), "in progress");
  for (const std::string& name : unrelated) WriteRaw(dir_.File(name), "keep");

  std::size_t removed = 99;
  const Status error = CleanStaleTemporaries(path, &removed);
  ASSERT_TRUE(error.ok()) << error.message;
  EXPECT_EQ(removed, 1u);
  std::vector<std::string> expected = unrelated;
  expected.push_back(alive);
  expected.push_back("world.img");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(ListDir(dir_.path()), expected);
  std::string out;
  ASSERT_TRUE(ReadImageFile(path, &out).ok());
  EXPECT_EQ(out, "current") << "temporaries beside the image never affect reading it";
}

TEST(TemporaryPrefixTest, LongNamesAreCut) {
  EXPECT_EQ(TemporaryPrefix("/a/b/world.img"), ".world.img.tmp");
  EXPECT_EQ(TemporaryPrefix("world.img"), ".world.img.tmp");
  EXPECT_EQ(TemporaryPrefix(std::string(255, 'n')), "." + std::string(200, 'n') + ".tmp");
}

}  // namespace
}  // namespace epollcr::image
