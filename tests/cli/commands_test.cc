// End-to-end tests of epollcr's image commands (inspect, verify, convert, diff; cli/commands/, docs/cli.md): the
// program (EPOLLCR_BIN) runs on images built here from a World, and its output is compared with the golden files in
// EPOLLCR_GOLDEN_DIR (tests/cli/golden). Every golden comparison comes with checks of the content made without the
// golden file, so a golden file regenerated from a wrong output still fails the test.
//
// Regenerate the golden files after an intended change of output (then review the diff):
//   EPOLLCR_UPDATE_GOLDEN=1 meson test -C BUILD --suite cli commands
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "epollcr/epollcr.h"
#include "image/codec.h"
#include "image/file.h"
#include "program_run.h"
#include "tcp_records.h"
#include "temp_dir.h"

namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
namespace sys = epollcr::sys;
namespace v1 = epollcr::v1;

// ---- files and the program ------------------------------------------------------------------------------------------

// A fresh directory for one test (tests/common/temp_dir.h), named after these tests.
class TempDir : public epollcr::testing_support::TempDir {
 public:
  TempDir() : epollcr::testing_support::TempDir("epollcr-commands") {}
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) ADD_FAILURE() << "cannot write " << path;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

using epollcr::testing_support::ProgramRun;

// Runs the program with `args` in directory `cwd`, `input` on its stdin; stdout and stderr go to files. With
// `as_uid` >= 0 the program runs as that user (and group nobody), which needs root.
ProgramRun RunEpollcr(const std::vector<std::string>& args, const std::string& cwd, const std::string& input = "",
                      int as_uid = -1) {
  const char* bin = std::getenv("EPOLLCR_BIN");
  EXPECT_NE(bin, nullptr) << "EPOLLCR_BIN must name the epollcr program";
  if (bin == nullptr) return {};
  TempDir io;
  WriteFile(io.File("stdin"), input);
  return epollcr::testing_support::RunProgram(bin, args,
                                              {.stdin_path = io.File("stdin"),
                                               .stdout_path = io.File("stdout"),
                                               .stderr_path = io.File("stderr"),
                                               .cwd = cwd,
                                               .as_uid = as_uid});
}

// Compares `actual` with the golden file `name`, or rewrites the golden file when EPOLLCR_UPDATE_GOLDEN is set.
void ExpectGolden(const std::string& name, const std::string& actual) {
  const char* dir = std::getenv("EPOLLCR_GOLDEN_DIR");
  ASSERT_NE(dir, nullptr) << "EPOLLCR_GOLDEN_DIR must name tests/cli/golden";
  const std::string path = std::string(dir) + "/" + name;
  if (std::getenv("EPOLLCR_UPDATE_GOLDEN") != nullptr) {
    WriteFile(path, actual);
    std::cerr << "updated " << path << '\n';
    return;
  }
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing; see the top of this file to create it";
  EXPECT_EQ(actual, ReadFile(path)) << "output differs from " << path;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The one line of `text` that matches `pattern` (a failure if none or several do).
std::string LineMatching(const std::string& text, const std::string& pattern) {
  // gtest's regular expressions (POSIX extended on Linux), as in MatchesRegex; not <regex>, which GCC 12 under
  // -fsanitize=address warns about inside libstdc++.
  const auto matches = ::testing::Matches(::testing::ContainsRegex(pattern));
  std::vector<std::string> found;
  for (const std::string& line : Lines(text)) {
    if (matches(line)) found.push_back(line);
  }
  EXPECT_EQ(found.size(), 1u) << "lines matching /" << pattern << "/ in:\n" << text;
  return found.empty() ? "" : found[0];
}

// ---- worlds and images ----------------------------------------------------------------------------------------------

// The world every test starts from. fds: 0 outer poll, 1 inner poll, 2 eventfd (dup'd as 7), 3/4 pipe read/write
// ends, 5/6 socket pair; root "spare", a semaphore eventfd holding 2. Capture gives files ids 1..8 in that order
// (file 8 the root), pipe 9 and socket pair 10. The outer poll's entries:
//   fd 1 (the inner poll) IN          data 0x5  ready, second in the ready list (the socket woke it)
//   fd 2 (the eventfd)    IN|ET       data 0x1  ready, first in the ready list
//   fd 3 (pipe read end)  IN          data 0x2  waiting (the pipe is empty)
//   fd 4 (pipe write end) OUT|ONESHOT data 0x3  disabled (delivered by a wait)
// and the inner poll's: fd 6 (socket end 1) IN|RDHUP data 0x4, ready.
void BuildWorld(epollcr::World& w) {
  auto ctl = [&](int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) {
    epollcr::Event e{events, {}};
    e.SetData(data);
    ASSERT_FALSE(sys::EpollCtl(w.fds, epfd, op, fd, &e)) << "epoll_ctl " << epfd << " " << fd;
  };
  const int ep = sys::EpollCreate1(w.fds, 0).value();
  const int inner = sys::EpollCreate1(w.fds, 0).value();
  const int efd = sys::EventFd(w.fds, 0, false).value();
  int p[2], s[2];
  ASSERT_FALSE(sys::Pipe(w.fds, p));
  ASSERT_FALSE(sys::SocketPair(w.fds, s));
  ASSERT_EQ(sys::Dup(w.fds, efd).value(), 7);
  ASSERT_EQ((std::vector<int>{ep, inner, efd, p[0], p[1], s[0], s[1]}), (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));

  ctl(ep, sys::kEpollCtlAdd, p[1], epollcr::kEventOut | epollcr::kEpollOneShot, 3);
  epollcr::Event events[8];
  ASSERT_EQ(sys::EpollWait(w.fds, ep, events, 8, 0).value(), 1);  // the one-shot entry fires: disabled
  ctl(ep, sys::kEpollCtlAdd, efd, epollcr::kEventIn | epollcr::kEpollEdgeTriggered, 1);
  ctl(ep, sys::kEpollCtlAdd, p[0], epollcr::kEventIn, 2);
  ctl(inner, sys::kEpollCtlAdd, s[1], epollcr::kEventIn | epollcr::kEventRdHup, 4);
  ctl(ep, sys::kEpollCtlAdd, inner, epollcr::kEventIn, 5);
  const std::uint64_t one = 1;
  ASSERT_TRUE(sys::Write(w.fds, efd, std::as_bytes(std::span(&one, 1))).ok());  // eventfd entry: ready first
  const char hello[] = "hello";
  ASSERT_TRUE(sys::Write(w.fds, s[0], std::as_bytes(std::span(hello, 5))).ok());  // the inner poll: ready second

  const int spare = sys::EventFd(w.fds, 2, true).value();
  w.roots["spare"] = w.fds.Get(spare);
  ASSERT_FALSE(sys::Close(w.fds, spare));
}

void ReleaseWorld(epollcr::World& w) {
  w.roots.clear();
  w.fds.Clear();
}

// The image of `w`, with the header fields that depend on the build machine and version fixed, so that golden
// files do not change with them.
v1::Image CaptureImage(const epollcr::World& w) {
  epollcr::Result<v1::Image> image = epollcr::image::Capture(w);
  EXPECT_TRUE(image.ok()) << image.status().message;
  image.value().mutable_header()->set_producer_version("0.1.0");
  image.value().mutable_header()->set_architecture("x86_64");
  image.value().mutable_header()->set_endianness(v1::ENDIANNESS_LITTLE);
  return image.value();
}

v1::Image TestImage() {
  epollcr::World w;
  BuildWorld(w);
  v1::Image image = CaptureImage(w);
  ReleaseWorld(w);
  return image;
}

std::string Payload(const v1::Image& image) {
  epollcr::Result<std::string> payload = epollcr::image::Encode(image);
  EXPECT_TRUE(payload.ok()) << payload.status().message;
  return payload.value();
}

// Writes `image` as an image file (framed), without the command under test.
void WriteImage(const std::string& path, const v1::Image& image) {
  epollcr::Status e = epollcr::image::WriteImageFile(path, Payload(image));
  ASSERT_TRUE(e.ok()) << e.message;
}

// A framing header with any field values, laid out from the table in docs/image-format.md (not with Frame()).
std::string MakeHeader(std::uint16_t major, std::uint64_t length, std::uint32_t payload_crc) {
  std::string header("EPCRIMG", 7);
  header.push_back('\0');
  auto put = [&header](std::uint64_t value, int size) {
    for (int i = 0; i < size; ++i) header.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  put(major, 2);
  put(0, 2);  // minor
  put(0, 4);  // flags
  put(length, 8);
  put(payload_crc, 4);
  put(epollcr::image::Crc32c(header), 4);
  return header;
}

// ---- inspect
// ----------------------------------------------------------------------------------------------------------

TEST(CommandsTest, InspectShowsEntriesMasksDataAndListsInReadyOrder) {
  TempDir dir;
  WriteImage(dir.File("world.epcr"), TestImage());
  ProgramRun run = RunEpollcr({"inspect", "world.epcr"}, dir.path());
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.err, "");
  ExpectGolden("inspect.txt", run.out);

  // What BuildWorld made, read from the output without the golden file: fd, file, kind, events, data, list, rank.
  EXPECT_THAT(LineMatching(run.out, "^header: "), HasSubstr("format 1.0, producer epollcr 0.1.0, x86_64"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+2\s+3\s+eventfd\s+IN\|ET\s)"),
              testing::MatchesRegex(R"(.* 0x1\s+ready 1\s+0)"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+1\s+2\s+eventpoll\s+IN\s)"),
              testing::MatchesRegex(R"(.* 0x5\s+ready 2\s+0)"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+3\s+4\s+pipe read end\s+IN\s)"),
              testing::MatchesRegex(R"(.* 0x2\s+waiting\s+0)"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+4\s+5\s+pipe write end\s)"),
              testing::MatchesRegex(R"(.*ONESHOT\s+0x3\s+disabled\s+0)"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+6\s+7\s+unix stream\s)"),
              testing::MatchesRegex(R"(.*IN\|RDHUP\s+0x4\s+ready 1\s+0)"));
  EXPECT_THAT(LineMatching(run.out, "^eventpoll file 1 "), HasSubstr("(fd 0): 4 entries"));
  EXPECT_THAT(run.out, HasSubstr("ready order: fd 2 (file 3), fd 1 (file 2)\n"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+3\s+eventfd\s+fds 2, 7\s)"), HasSubstr("count 1"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+8\s+eventfd\s+no fd\s)"), HasSubstr("count 2, semaphore"));
  EXPECT_THAT(run.out, HasSubstr("\"spare\""));
  EXPECT_THAT(LineMatching(run.out, "socket pair 10, end 1:"), HasSubstr("5 bytes unread in 1 segment"));
}

TEST(CommandsTest, InspectJsonIsProtobufsMappingAndRoundTrips) {
  TempDir dir;
  const v1::Image image = TestImage();
  WriteImage(dir.File("world.epcr"), image);
  ProgramRun run = RunEpollcr({"inspect", "--json", "world.epcr"}, dir.path());
  ASSERT_EQ(run.status, 0) << run.err;
  ExpectGolden("inspect.json", run.out);

  epollcr::Result<v1::Image> parsed = epollcr::image::FromJson(run.out);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message;
  EXPECT_EQ(Payload(parsed.value()), Payload(image)) << "the JSON holds the image, all of it";
  EXPECT_THAT(run.out, HasSubstr("\"producer\": \"epollcr\""));
  EXPECT_THAT(run.out, HasSubstr("\"ENTRY_LIST_DISABLED\""));
}

TEST(CommandsTest, InspectDotDrawsThePollsTheFilesTheyWatchAndTheNesting) {
  TempDir dir;
  WriteImage(dir.File("world.epcr"), TestImage());
  ProgramRun run = RunEpollcr({"inspect", "--dot", "world.epcr"}, dir.path());
  ASSERT_EQ(run.status, 0) << run.err;
  ExpectGolden("inspect.dot", run.out);

  EXPECT_THAT(run.out, StartsWith("// "));
  EXPECT_THAT(run.out, HasSubstr("digraph epollcr {\n"));
  EXPECT_THAT(LineMatching(run.out, "^  f1 -> f2 "), HasSubstr("fd 1 IN 0x5\\nready 2"));  // the nesting
  EXPECT_THAT(LineMatching(run.out, "^  f2 -> f7 "), HasSubstr("IN|RDHUP"));
  std::size_t edges = 0;
  for (const std::string& line : Lines(run.out)) edges += line.find(" -> ") != std::string::npos;
  EXPECT_EQ(edges, 5u) << "one edge per entry";
  EXPECT_THAT(run.out, Not(HasSubstr("f8 ["))) << "the root eventfd is watched by no poll";
}

TEST(CommandsTest, InspectOfAnInvalidImagePrintsItThenSaysWhy) {
  TempDir dir;
  v1::Image image = TestImage();
  image.mutable_files(0)->mutable_eventpoll()->set_files(0, 99);  // an entry on a file the image does not have
  WriteImage(dir.File("bad.epcr"), image);
  ProgramRun run = RunEpollcr({"inspect", "bad.epcr"}, dir.path());
  EXPECT_EQ(run.status, 1);
  EXPECT_THAT(run.out, HasSubstr("not in the image"));
  EXPECT_EQ(run.err, "epollcr: bad.epcr: invalid image: poll 1, entry 0: file 99 is not in the image\n");
}

TEST(CommandsTest, InspectShowsHostAndEmbedderFiles) {
  TempDir dir;
  v1::Image image = TestImage();
  v1::File* timer = image.add_files();
  timer->set_id(11);
  timer->mutable_embedder()->set_kind("myapp.timer");
  timer->mutable_embedder()->set_state("abc");
  v1::Root* root = image.add_roots();
  root->set_name("timer");
  root->set_file(11);
  WriteImage(dir.File("embedder.epcr"), image);
  ProgramRun run = RunEpollcr({"inspect", "embedder.epcr"}, dir.path());
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_THAT(LineMatching(run.out, R"(^\s+11\s+embedder file\s)"),
              HasSubstr("kind \"myapp.timer\", 3 bytes of state"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+"timer"\s)"), HasSubstr("11  embedder file"));

  v1::File* host = image.add_files();
  host->set_id(12);
  host->mutable_host()->set_fd(9);
  host->mutable_host()->set_st_dev(0x803);
  host->mutable_host()->set_st_ino(1234);
  host->mutable_host()->set_file_type(S_IFSOCK);
  host->mutable_host()->set_open_flags(0x802);
  image.mutable_files(0)->mutable_eventpoll()->add_files(12);  // watched by the outer poll, as its last entry
  image.mutable_files(0)->mutable_eventpoll()->add_fds(9);
  image.mutable_files(0)->mutable_eventpoll()->add_events(epollcr::kEventIn | epollcr::kEventOut);
  image.mutable_files(0)->mutable_eventpoll()->add_data(0xdeadbeef);
  image.mutable_files(0)->mutable_eventpoll()->add_lists(v1::ENTRY_LIST_WAITING);
  image.mutable_files(0)->mutable_eventpoll()->add_queue_ranks(0);
  WriteImage(dir.File("host.epcr"), image);
  ProgramRun host_run = RunEpollcr({"inspect", "host.epcr"}, dir.path());
  EXPECT_EQ(host_run.status, 0) << host_run.err;
  EXPECT_THAT(LineMatching(host_run.out, R"(^\s+12\s+host file\s)"),
              HasSubstr("host fd 9, socket, dev 0x803, ino 1234, flags 0x802, offset 0"));
  EXPECT_THAT(LineMatching(host_run.out, R"(^\s+9\s+12\s+host file\s)"),
              testing::MatchesRegex(R"(.* IN\|OUT\s+0xdeadbeef\s+waiting\s+0)"));
  EXPECT_EQ(host_run.err, "");
  image.mutable_files(image.files_size() - 1)->mutable_host()->set_file_type(0x3000);  // S_IFCHR|S_IFIFO: no type
  WriteImage(dir.File("host-bad.epcr"), image);
  ProgramRun bad_run = RunEpollcr({"inspect", "host-bad.epcr"}, dir.path());
  EXPECT_EQ(bad_run.status, 1);
  EXPECT_EQ(bad_run.err, "epollcr: host-bad.epcr: invalid image: file 12: host file type 12288 is not an S_IFMT value\n");
  ProgramRun dot = RunEpollcr({"inspect", "--dot", "host.epcr"}, dir.path());
  EXPECT_THAT(dot.out, HasSubstr("  f1 -> f12 [label=\"fd 9 IN|OUT 0xdeadbeef\\nwaiting\"];\n"));
}

// TCP sockets by value (image.proto TcpConnectionState, TcpListenerState): inspect shows each field, an invalid one
// is refused with the reason, diff names each changed field, and convert keeps them through JSON (a Boost archive
// cannot hold them, as it cannot hold host files: convert says so and writes nothing).
TEST(CommandsTest, InspectDiffAndConvertShowTcpSocketsByValue) {
  TempDir dir;
  v1::Image a = TestImage();
  v1::File* connection = a.add_files();
  connection->set_id(21);
  *connection->mutable_tcp_connection() = epollcr::testing::ValidConnection();
  v1::File* listener = a.add_files();
  listener->set_id(22);
  *listener->mutable_tcp_listener() = epollcr::testing::ValidListener();
  a.mutable_network_lock()->set_nftables_table("epollcr_lock_0123456789abcdef");
  WriteImage(dir.File("a.epcr"), a);
  ProgramRun run = RunEpollcr({"inspect", "a.epcr"}, dir.path());
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("\nnetwork lock: nftables table inet epollcr_lock_0123456789abcdef\nfiles: "));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+21\s+TCP connection\s)"),
              HasSubstr("fd 5, local 127.0.0.1:8080, remote 127.0.0.1:40000, send seq 1000, receive seq 5000, unacked 0 "
                        "bytes, unsent 2 bytes (crc32c 0x"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+21\s+TCP connection\s)"),
              HasSubstr("mss 1460, options wscale 7/7, timestamp 0, window snd_wl1 4990 snd_wnd 0 max_window 0 rcv_wnd "
                        "65535 rcv_wup 4990, nodelay no, reuseaddr no, keepalive off (idle 7200 s, interval 75 s, count "
                        "9), sndbuf 16384, rcvbuf 131072, flags 0x802"));
  EXPECT_THAT(LineMatching(run.out, R"(^\s+22\s+TCP listener\s)"),
              HasSubstr("fd 4, local [::]:8080, backlog 128, reuseaddr no, reuseport no, v6only yes, defer accept 0, "
                        "fastopen 0, flags 0x2"));

  v1::Image b = a;
  b.mutable_files(b.files_size() - 2)->mutable_tcp_connection()->set_unread("abd");
  b.mutable_files(b.files_size() - 2)->mutable_tcp_connection()->set_send_seq(1001);
  b.mutable_files(b.files_size() - 1)->mutable_tcp_listener()->set_backlog(64);
  b.clear_network_lock();
  WriteImage(dir.File("b.epcr"), b);
  ProgramRun diff = RunEpollcr({"diff", "a.epcr", "b.epcr"}, dir.path());
  EXPECT_EQ(diff.status, 1) << diff.err;
  EXPECT_THAT(diff.out, HasSubstr("file 21 (TCP connection): send seq 1000 -> 1001\n"));
  char crcs[64];
  std::snprintf(crcs, sizeof crcs, "(crc32c 0x%x) -> 3 bytes (crc32c 0x%x)", epollcr::image::Crc32c("abc"),
                epollcr::image::Crc32c("abd"));
  EXPECT_THAT(diff.out, HasSubstr("file 21 (TCP connection): unread 3 bytes " + std::string(crcs) + "\n"));
  EXPECT_THAT(diff.out, HasSubstr("file 22 (TCP listener): backlog 128 -> 64\n"));
  EXPECT_THAT(diff.out, HasSubstr("network lock: nftables table epollcr_lock_0123456789abcdef -> none\n"));
  EXPECT_EQ(std::count(diff.out.begin(), diff.out.end(), '\n'), 4) << diff.out;

  ProgramRun json = RunEpollcr({"convert", "a.epcr", "a.json"}, dir.path());
  ASSERT_EQ(json.status, 0) << json.err;
  EXPECT_THAT(ReadFile(dir.File("a.json")), HasSubstr("\"tcp_connection\""));
  EXPECT_THAT(ReadFile(dir.File("a.json")), HasSubstr("\"nftables_table\": \"epollcr_lock_0123456789abcdef\""));
  ProgramRun back = RunEpollcr({"convert", "a.json", "back.epcr"}, dir.path());
  ASSERT_EQ(back.status, 0) << back.err;
  EXPECT_EQ(ReadFile(dir.File("back.epcr")), ReadFile(dir.File("a.epcr")));
  ProgramRun boost = RunEpollcr({"convert", "a.epcr", "a.txt"}, dir.path());
  EXPECT_EQ(boost.status, 1);
  EXPECT_THAT(boost.err, HasSubstr("file 21 (TCP connection at fd 5): a host file or a TCP socket by value needs a "
                                   "resolver"));
  EXPECT_FALSE(std::filesystem::exists(dir.File("a.txt")));

  b.mutable_files(b.files_size() - 2)->mutable_tcp_connection()->mutable_remote()->set_port(0);
  WriteImage(dir.File("bad.epcr"), b);
  ProgramRun bad = RunEpollcr({"inspect", "bad.epcr"}, dir.path());
  EXPECT_EQ(bad.status, 1);
  EXPECT_EQ(bad.err, "epollcr: bad.epcr: invalid image: file 21: TCP connection: remote: port 0 is not 1..65535\n");
}

// ---- verify
// ------------------------------------------------------------------------------------------------------------

TEST(CommandsTest, VerifySaysOkPerValidFileAndThePreciseErrorPerInvalidOne) {
  TempDir dir;
  const v1::Image image = TestImage();
  WriteImage(dir.File("a.epcr"), image);
  WriteImage(dir.File("b.epcr"), image);
  ProgramRun good = RunEpollcr({"verify", "a.epcr", "b.epcr"}, dir.path());
  EXPECT_EQ(good.status, 0) << good.err;
  EXPECT_EQ(good.out, "a.epcr: ok\nb.epcr: ok\n");
  EXPECT_EQ(good.err, "");

  v1::Image bad = image;
  bad.mutable_files(0)->mutable_eventpoll()->set_lists(3, v1::ENTRY_LIST_READY);  // ready, but not in the ready order
  WriteImage(dir.File("bad.epcr"), bad);
  ProgramRun mixed = RunEpollcr({"verify", "a.epcr", "bad.epcr", "b.epcr"}, dir.path());
  EXPECT_EQ(mixed.status, 1);
  EXPECT_EQ(mixed.out, "a.epcr: ok\nb.epcr: ok\n") << "every file is checked, after a failure too";
  EXPECT_EQ(mixed.err, "epollcr: bad.epcr: invalid image: poll 1, entry 3: ready, but not in the ready order\n");

  ProgramRun stdin_run = RunEpollcr({"verify", "-"}, dir.path(), ReadFile(dir.File("a.epcr")));
  EXPECT_EQ(stdin_run.status, 0) << stdin_run.err;
  EXPECT_EQ(stdin_run.out, "<stdin>: ok\n");
}

// ---- convert
// -----------------------------------------------------------------------------------------------------------

TEST(CommandsTest, ConvertRoundTripsAreByteIdentical) {
  TempDir dir;
  WriteImage(dir.File("world.epcr"), TestImage());
  const std::string original = ReadFile(dir.File("world.epcr"));
  // proto -> X -> proto, for each X, by extension and by --to.
  for (const std::string ext : {"txt", "xml", "bin", "json"}) {
    ProgramRun there = RunEpollcr({"convert", "world.epcr", "world." + ext}, dir.path());
    ASSERT_EQ(there.status, 0) << ext << ": " << there.err;
    EXPECT_EQ(there.out, "");
    ProgramRun back = RunEpollcr({"convert", "world." + ext, "back.img", "--to", "proto"}, dir.path());
    ASSERT_EQ(back.status, 0) << ext << ": " << back.err;
    EXPECT_EQ(ReadFile(dir.File("back.img")), original) << "proto -> " << ext << " -> proto";
  }
  EXPECT_THAT(ReadFile(dir.File("world.txt")), StartsWith("EPCRWRLD")) << "a Boost archive in its envelope";
  EXPECT_THAT(ReadFile(dir.File("world.txt")), HasSubstr("serialization::archive"));
  EXPECT_THAT(ReadFile(dir.File("world.xml")), HasSubstr("<boost_serialization"));
  // The JSON convert writes is inspect --json's.
  ProgramRun json = RunEpollcr({"inspect", "--json", "world.epcr"}, dir.path());
  EXPECT_EQ(ReadFile(dir.File("world.json")), json.out);
  // Boost to Boost, through a World.
  ProgramRun text_to_xml = RunEpollcr({"convert", "world.txt", "again.xml"}, dir.path());
  ASSERT_EQ(text_to_xml.status, 0) << text_to_xml.err;
  EXPECT_EQ(ReadFile(dir.File("again.xml")), ReadFile(dir.File("world.xml")));
  // Nothing left behind but what was asked for.
  EXPECT_EQ(ListDir(dir.path()), (std::vector<std::string>{"again.xml", "back.img", "world.bin", "world.epcr",
                                                           "world.json", "world.txt", "world.xml"}));
}

TEST(CommandsTest, ConvertReadsStdinAndWritesStdout) {
  TempDir dir;
  WriteImage(dir.File("world.epcr"), TestImage());
  const std::string original = ReadFile(dir.File("world.epcr"));
  ProgramRun to_json = RunEpollcr({"convert", "-", "-", "--to", "json"}, dir.path(), original);
  ASSERT_EQ(to_json.status, 0) << to_json.err;
  ProgramRun to_proto = RunEpollcr({"convert", "-", "-", "--to", "proto"}, dir.path(), to_json.out);
  ASSERT_EQ(to_proto.status, 0) << to_proto.err;
  EXPECT_EQ(to_proto.out, original);
  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>{"world.epcr"});
}

TEST(CommandsTest, ConvertUsageErrorsAndInvalidInputsWriteNothing) {
  TempDir dir;
  WriteImage(dir.File("world.epcr"), TestImage());
  ProgramRun no_format = RunEpollcr({"convert", "world.epcr", "out.data"}, dir.path());
  EXPECT_EQ(no_format.status, 2);
  EXPECT_EQ(no_format.err,
            "epollcr: usage: convert: cannot tell the output format from 'out.data': pass --to "
            "proto|json|boost-text|boost-xml|boost-binary\n");
  ProgramRun stdout_no_format = RunEpollcr({"convert", "world.epcr", "-"}, dir.path());
  EXPECT_EQ(stdout_no_format.status, 2);
  ProgramRun bad_to = RunEpollcr({"convert", "world.epcr", "out.json", "--to", "yaml"}, dir.path());
  EXPECT_EQ(bad_to.status, 2);
  EXPECT_THAT(bad_to.err, StartsWith("epollcr: usage: "));

  v1::Image bad = TestImage();
  bad.mutable_fds(0)->set_file(77);
  WriteImage(dir.File("bad.epcr"), bad);
  WriteFile(dir.File("out.json"), "old");
  ProgramRun invalid = RunEpollcr({"convert", "bad.epcr", "out.json"}, dir.path());
  EXPECT_EQ(invalid.status, 1);
  EXPECT_EQ(invalid.err, "epollcr: bad.epcr: invalid image: fd 0: file 77 is not in the image\n");
  EXPECT_EQ(ReadFile(dir.File("out.json")), "old") << "a failed convert leaves OUT as it was";
  EXPECT_EQ(ListDir(dir.path()), (std::vector<std::string>{"bad.epcr", "out.json", "world.epcr"}));
  ProgramRun no_dir = RunEpollcr({"convert", "world.epcr", "nodir/out.json"}, dir.path());
  EXPECT_EQ(no_dir.status, 1);
  EXPECT_EQ(no_dir.err, "epollcr: nodir/out.json: open directory nodir: No such file or directory\n");
}

// ---- diff
// --------------------------------------------------------------------------------------------------------------

TEST(CommandsTest, DiffOfEqualImagesIsEmptyAndExits0InAnyForm) {
  TempDir dir;
  WriteImage(dir.File("a.epcr"), TestImage());
  WriteImage(dir.File("b.epcr"), TestImage());
  ProgramRun same = RunEpollcr({"diff", "a.epcr", "b.epcr"}, dir.path());
  EXPECT_EQ(same.status, 0) << same.err;
  EXPECT_EQ(same.out, "");
  ASSERT_EQ(RunEpollcr({"convert", "a.epcr", "a.json"}, dir.path()).status, 0);
  ASSERT_EQ(RunEpollcr({"convert", "a.epcr", "a.txt"}, dir.path()).status, 0);
  EXPECT_EQ(RunEpollcr({"diff", "a.json", "b.epcr"}, dir.path()).status, 0);
  EXPECT_EQ(RunEpollcr({"diff", "a.txt", "-"}, dir.path(), ReadFile(dir.File("b.epcr"))).status, 0);
  ProgramRun both_stdin = RunEpollcr({"diff", "-", "-"}, dir.path());
  EXPECT_EQ(both_stdin.status, 2);
  EXPECT_THAT(both_stdin.err, StartsWith("epollcr: usage: "));
}

TEST(CommandsTest, DiffNamesTheEntryWhoseDataChanged) {
  TempDir dir;
  const v1::Image a = TestImage();
  v1::Image b = a;
  // The outer poll's entries are ordered by (file, fd): entry 2 is fd 3 (file 4), the pipe's read end.
  v1::EventPollState* poll = b.mutable_files(0)->mutable_eventpoll();
  ASSERT_EQ(poll->fds(2), 3);
  ASSERT_EQ(poll->data(2), 0x2u);
  poll->set_data(2, 0x99);
  WriteImage(dir.File("a.epcr"), a);
  WriteImage(dir.File("b.epcr"), b);
  ProgramRun run = RunEpollcr({"diff", "a.epcr", "b.epcr"}, dir.path());
  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "");
  EXPECT_EQ(run.out, "poll 1: entry fd 3 (file 4): data 0x2 -> 0x99\n");
}

TEST(CommandsTest, DiffOfTwoWorldsListsEveryChange) {
  TempDir dir;
  epollcr::World w;
  BuildWorld(w);
  WriteImage(dir.File("before.epcr"), CaptureImage(w));
  // Then: the pipe gets data (its waiting entry becomes ready), the one-shot entry goes, the socket's end 0 joins the
  // outer poll, the dup of the eventfd is closed, and the eventfd is read (its counter drops to 0).
  const char bytes[3] = {'a', 'b', 'c'};
  ASSERT_TRUE(sys::Write(w.fds, 4, std::as_bytes(std::span(bytes, 3))).ok());
  ASSERT_FALSE(sys::EpollCtl(w.fds, 0, sys::kEpollCtlDel, 4, nullptr));
  epollcr::Event e{epollcr::kEventOut, {}};
  e.SetData(6);
  ASSERT_FALSE(sys::EpollCtl(w.fds, 0, sys::kEpollCtlAdd, 5, &e));
  ASSERT_FALSE(sys::Close(w.fds, 7));
  std::uint64_t value = 0;
  ASSERT_TRUE(sys::Read(w.fds, 2, std::as_writable_bytes(std::span(&value, 1))).ok());
  WriteImage(dir.File("after.epcr"), CaptureImage(w));
  ReleaseWorld(w);

  ProgramRun run = RunEpollcr({"diff", "before.epcr", "after.epcr"}, dir.path());
  EXPECT_EQ(run.status, 1) << run.err;
  ExpectGolden("diff.txt", run.out);
  EXPECT_THAT(run.out, HasSubstr("fd 7: removed (was file 3, eventfd)\n"));
  EXPECT_THAT(run.out, HasSubstr("file 3 (eventfd): count 1 -> 0\n"));
  EXPECT_THAT(LineMatching(run.out, R"(^poll 1: entry fd 4 \(file 5\): removed)"), HasSubstr("ONESHOT"));
  EXPECT_THAT(LineMatching(run.out, R"(^poll 1: entry fd 5 \(file 6\): added)"), HasSubstr("OUT, data 0x6"));
  EXPECT_THAT(run.out, HasSubstr("poll 1: entry fd 3 (file 4): list waiting -> ready\n"));
  EXPECT_THAT(run.out, HasSubstr("pipe 9: buffer 0 bytes in 0 slots -> 3 bytes in 1 slot\n"));
  // And the other way round, the same changes reversed.
  ProgramRun back = RunEpollcr({"diff", "after.epcr", "before.epcr"}, dir.path());
  EXPECT_EQ(back.status, 1);
  EXPECT_THAT(back.out, HasSubstr("fd 7: added (file 3, eventfd)\n"));
  EXPECT_EQ(Lines(back.out).size(), Lines(run.out).size());
}

// ---- hostile inputs
// ----------------------------------------------------------------------------------------------------

TEST(CommandsTest, HostileInputsGiveAClearErrorFromEveryCommand) {
  TempDir dir;
  WriteImage(dir.File("good.epcr"), TestImage());
  const std::string good = ReadFile(dir.File("good.epcr"));
  const std::string payload = good.substr(epollcr::image::kHeaderSize);

  std::mt19937 gen(6);
  std::string random(4096, '\0');
  for (char& c : random) c = static_cast<char>(gen() & 0xff);
  random[0] = 'R';  // not '{', not a magic
  std::string flipped = good;
  flipped[good.size() / 2] = static_cast<char>(flipped[good.size() / 2] ^ 0x40);
  std::string newer = good;
  newer[8] = 2;                                                       // format major 2
  const std::string huge = MakeHeader(1, std::uint64_t{1} << 40, 0);  // claims a 1 TiB payload in 32 bytes
  const std::string valid_frame_bad_payload =
      MakeHeader(1, 5, epollcr::image::Crc32c("\xff\xff\xff\xff\xff")) + std::string(5, '\xff');

  struct Case {
    std::string name;     // the file in dir (written below unless a directory or missing)
    std::string content;  // bytes of the file
  };
  const std::vector<Case> cases = {
      {"empty", ""},
      {"random", random},
      {"truncated.epcr", good.substr(0, good.size() - 7)},
      {"header-only.epcr", good.substr(0, 20)},
      {"flipped.epcr", flipped},
      {"newer.epcr", newer},
      {"huge.epcr", huge},
      {"garbage-payload.epcr", valid_frame_bad_payload},
      {"newer.json", "{\"header\": {\"format_major\": 2, \"format_minor\": 0}}\n"},
      {"broken.json", "  {\"header\": "},
      {"broken-archive", std::string("EPCRWRLD\x01\x00\x00\x00", 12) + std::string(12, '\xff')},
      {"a-directory", ""},
      {"missing.epcr", ""},
  };
  for (const Case& c : cases) {
    if (c.name == "a-directory") {
      ASSERT_EQ(mkdir(dir.File(c.name).c_str(), 0700), 0);
    } else if (c.name != "missing.epcr") {
      WriteFile(dir.File(c.name), c.content);
    }
  }

  std::ostringstream messages;  // every command's message for every input, for the golden file
  for (const Case& c : cases) {
    const std::vector<std::vector<std::string>> commands = {
        {"inspect", c.name},
        {"inspect", "--json", c.name},
        {"inspect", "--dot", c.name},
        {"verify", c.name},
        {"convert", c.name, "out.json"},
        {"convert", c.name, "out.txt"},
        {"diff", c.name, "good.epcr"},
        {"diff", "good.epcr", c.name},
    };
    for (const std::vector<std::string>& args : commands) {
      std::string line;
      for (const std::string& a : args) line += (line.empty() ? "" : " ") + a;
      ProgramRun run = RunEpollcr(args, dir.path());
      EXPECT_EQ(run.status, 1) << line << "\n" << run.err;
      EXPECT_THAT(run.err, StartsWith("epollcr: " + c.name + ": ")) << line;
      EXPECT_EQ(Lines(run.err).size(), 1u) << line << ": one line\n" << run.err;
      EXPECT_EQ(run.out, "") << line << ": nothing on stdout";
      messages << "$ epollcr " << line << "\n" << run.err;
    }
    // Through standard input, where the input has bytes to give.
    if (c.name != "a-directory" && c.name != "missing.epcr") {
      ProgramRun run = RunEpollcr({"inspect", "-"}, dir.path(), c.content);
      EXPECT_EQ(run.status, 1) << c.name;
      EXPECT_THAT(run.err, StartsWith("epollcr: <stdin>: ")) << c.name;
    }
  }
  EXPECT_EQ(ListDir(dir.path()),
            (std::vector<std::string>{"a-directory", "broken-archive", "broken.json", "empty", "flipped.epcr",
                                      "garbage-payload.epcr", "good.epcr", "header-only.epcr", "huge.epcr",
                                      "newer.epcr", "newer.json", "random", "truncated.epcr"}))
      << "no command wrote anything";
  ExpectGolden("hostile.txt", messages.str());

  // The messages that matter most, independently of the golden file.
  const std::string all = messages.str();
  EXPECT_THAT(all, HasSubstr("epollcr: empty: empty file\n"));
  EXPECT_THAT(all, HasSubstr("epollcr: newer.epcr: format version 2.0 is newer than this build reads (1.x)\n"));
  EXPECT_THAT(all, HasSubstr("epollcr: huge.epcr: payload length 1099511627776 exceeds the limit"));
  EXPECT_THAT(all, HasSubstr("epollcr: flipped.epcr: payload checksum mismatch"));
  EXPECT_THAT(all, HasSubstr("epollcr: missing.epcr: No such file or directory\n"));
  EXPECT_THAT(all, HasSubstr("epollcr: a-directory: is a directory"));
  EXPECT_THAT(all, HasSubstr("epollcr: newer.json: invalid image: header: format 2.0"));
}

TEST(CommandsTest, UnreadableAndSpecialFiles) {
  TempDir dir;
  WriteImage(dir.File("good.epcr"), TestImage());
  ASSERT_EQ(mkfifo(dir.File("fifo").c_str(), 0600), 0);
  for (const char* command : {"inspect", "verify"}) {
    ProgramRun fifo = RunEpollcr({command, "fifo"}, dir.path());
    EXPECT_EQ(fifo.status, 1) << command;
    EXPECT_THAT(fifo.err, StartsWith("epollcr: fifo: is a FIFO, not ")) << command;
  }
  WriteImage(dir.File("locked.epcr"), TestImage());
  ASSERT_EQ(chmod(dir.File("locked.epcr").c_str(), 0), 0);
  // Root reads a mode-0 file: run the program as nobody then (the directory must let nobody in).
  const int as_uid = geteuid() == 0 ? 65534 : -1;
  ASSERT_EQ(chmod(dir.path().c_str(), 0711), 0);
  for (const char* command : {"inspect", "verify", "convert", "diff"}) {
    std::vector<std::string> args = {command, "locked.epcr"};
    if (std::string(command) == "convert") args.push_back("out.json");
    if (std::string(command) == "diff") args.push_back("good.epcr");
    ProgramRun locked = RunEpollcr(args, dir.path(), "", as_uid);
    ASSERT_NE(locked.status, 127) << "could not run the program as uid " << as_uid;
    EXPECT_EQ(locked.status, 1) << command;
    EXPECT_EQ(locked.err, "epollcr: locked.epcr: Permission denied\n") << command;
  }
}

// ---- the command line
// --------------------------------------------------------------------------------------------------

TEST(CommandsTest, EveryCommandHasHelp) {
  TempDir dir;
  ProgramRun top = RunEpollcr({"--help"}, dir.path());
  EXPECT_EQ(top.status, 0);
  for (const char* command : {"replay", "inspect", "verify", "convert", "diff"}) {
    EXPECT_THAT(top.out, HasSubstr(std::string("  ") + command + " ")) << command;
    ProgramRun help = RunEpollcr({command, "--help"}, dir.path());
    EXPECT_EQ(help.status, 0) << command;
    EXPECT_THAT(help.out, HasSubstr(std::string("Usage: epollcr ") + command)) << command;
    EXPECT_EQ(help.err, "") << command;
  }
  EXPECT_THAT(RunEpollcr({"inspect", "--help"}, dir.path()).out, HasSubstr("--dot"));
  ProgramRun convert = RunEpollcr({"convert", "--help"}, dir.path());
  EXPECT_THAT(convert.out, HasSubstr("--to"));
  EXPECT_THAT(convert.out, HasSubstr("trusted input only"));
}

TEST(CommandsTest, UsageErrorsExit2) {
  TempDir dir;
  WriteImage(dir.File("good.epcr"), TestImage());
  const std::vector<std::vector<std::string>> usages = {
      {"inspect"},
      {"inspect", "good.epcr", "--json", "--dot"},
      {"inspect", "good.epcr", "--yaml"},
      {"verify"},
      {"convert", "good.epcr"},
      {"diff", "good.epcr"},
      {"diff", "good.epcr", "good.epcr", "good.epcr"},
  };
  for (const auto& args : usages) {
    ProgramRun run = RunEpollcr(args, dir.path());
    EXPECT_EQ(run.status, 2) << args[0] << " " << args.size();
    EXPECT_THAT(run.err, StartsWith("epollcr: usage: ")) << args[0];
    EXPECT_EQ(run.out, "");
  }
}

}  // namespace
