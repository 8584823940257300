// End-to-end tests of `epollcr ps PID` (cli/commands/ps.*, docs/cli.md "ps"): a child process forked here builds
// kernel epolls with known entries at known fd numbers, and the program (EPOLLCR_BIN) is run on it. What the test
// registered is the oracle: the text is matched line by line against it, the JSON is parsed (protobuf's Struct)
// and compared field by field, and the image is decoded and compared entry by entry, with the file identities
// taken from stat(2) of /proc/PID/fd here. Also: verify, inspect, convert and diff on the image; a vanished process,
// a permission error, bad PIDs, and kcmp(2) refused by seccomp (the inode fallback).
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "epollcr/events.h"
#include "program_run.h"
#include "image/codec.h"
#include "image/file.h"
#include "temp_dir.h"

namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using epollcr::testing_support::ProgramRun;
using epollcr::testing_support::ReadWholeFile;
namespace v1 = epollcr::v1;
namespace pb = google::protobuf;

class TempDir : public epollcr::testing_support::TempDir {
 public:
  TempDir() : epollcr::testing_support::TempDir("epollcr-ps") {}
};

const char* Bin() {
  const char* bin = std::getenv("EPOLLCR_BIN");
  EXPECT_NE(bin, nullptr) << "EPOLLCR_BIN must name the epollcr program";
  return bin;
}

// Runs the program with `args`, `input` on its stdin, as `as_uid` if >= 0 (needs root).
ProgramRun RunEpollcr(const std::vector<std::string>& args, const std::string& input = "", int as_uid = -1) {
  TempDir io;
  std::ofstream(io.File("stdin"), std::ios::binary) << input;
  return epollcr::testing_support::RunProgram(
      Bin(), args,
      {.stdin_path = io.File("stdin"), .stdout_path = io.File("stdout"), .stderr_path = io.File("stderr"),
       .cwd = "", .as_uid = as_uid});
}

// ---- the child and what it registered -------------------------------------------------------------------------------

// fd numbers in the child.
constexpr int kOuter = 100;       // epoll
constexpr int kInner = 101;       // epoll, registered in kOuter, dup'd as kInnerDup
constexpr int kPipeRead = 102;
constexpr int kPipeWrite = 103;
constexpr int kSocket = 104;      // socket pair with 105
constexpr int kClosedTfd = 106;   // eventfd registered here, then closed; alive as kClosedDup
constexpr int kClosedDup = 107;
constexpr int kOneShot = 108;     // eventfd, IN|ONESHOT, fired: disabled
constexpr int kExclusive = 109;   // eventfd, IN|EXCLUSIVE in kOuter and IN in kInner
constexpr int kReusedTfd = 110;   // eventfd registered here and dup'd as kReusedDup; then 110 names a new eventfd
constexpr int kReusedDup = 111;
constexpr int kFifo = 112;        // a FIFO opened O_RDWR|O_NONBLOCK: a path
constexpr int kInFlight = 113;    // eventfd registered here, then sent over kCarrier to itself and closed
constexpr int kCarrier = 114;     // socket pair with 115 whose queue holds kInFlight's file
constexpr int kInnerDup = 116;
constexpr std::uint64_t kBigData = 0xdeadbeefcafef00dull;

// One entry the child registers: in which epoll, under which fd, with which events and data.
struct Registered {
  int epoll;
  int tfd;
  std::uint32_t events;  // as given to epoll_ctl
  std::uint64_t data;
  bool disabled = false;
};

const std::vector<Registered>& Registrations() {
  static const std::vector<Registered> r = {
      {kOuter, kInner, EPOLLIN, 0x1},
      {kOuter, kPipeRead, EPOLLIN | EPOLLET, kBigData},
      {kOuter, kPipeWrite, EPOLLOUT, 0x3},
      {kOuter, kClosedTfd, EPOLLIN, 0x6},
      {kOuter, kOneShot, EPOLLIN | EPOLLONESHOT, 0x8, true},
      {kOuter, kExclusive, EPOLLIN | EPOLLEXCLUSIVE, 0x9},
      {kOuter, kReusedTfd, EPOLLIN | EPOLLOUT, 0xa},
      {kOuter, kFifo, EPOLLIN, 0xc},
      {kOuter, kInFlight, EPOLLIN, 0xd},
      {kInner, kSocket, EPOLLIN | EPOLLRDHUP, 0x104},
      {kInner, kExclusive, EPOLLIN, 0x109},
  };
  return r;
}

// The child's body: any failure exits with the line number, success writes one byte to `ready` and waits for
// `hold` to be closed.
#define CHILD_CHECK(x) \
  if (!(x)) ::_exit(__LINE__ % 250 + 1)

[[noreturn]] void ChildMain(int ready, int hold, const std::string& fifo) {
  CHILD_CHECK(::dup2(ready, 200) == 200 && ::dup2(hold, 201) == 201);
  CHILD_CHECK(::syscall(SYS_close_range, 3, 199, 0) == 0);
  ::prctl(PR_SET_NAME, "ps-test-child");
  auto place = [](int fd, int at) {
    CHILD_CHECK(fd >= 0 && ::dup2(fd, at) == at && ::close(fd) == 0);
  };
  place(::epoll_create1(0), kOuter);
  place(::epoll_create1(0), kInner);
  int p[2], s[2], c[2];
  CHILD_CHECK(::pipe(p) == 0);
  place(p[0], kPipeRead);
  place(p[1], kPipeWrite);
  CHILD_CHECK(::socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
  place(s[0], kSocket);
  place(s[1], kSocket + 1);
  for (int fd : {kClosedTfd, kOneShot, kExclusive, kReusedTfd, kInFlight}) place(::eventfd(0, 0), fd);
  place(::open(fifo.c_str(), O_RDWR | O_NONBLOCK), kFifo);
  CHILD_CHECK(::socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
  place(c[0], kCarrier);
  place(c[1], kCarrier + 1);
  for (const Registered& r : Registrations()) {
    epoll_event e{};
    e.events = r.events;
    e.data.u64 = r.data;
    CHILD_CHECK(::epoll_ctl(r.epoll, EPOLL_CTL_ADD, r.tfd, &e) == 0);
  }
  CHILD_CHECK(::dup2(kInner, kInnerDup) == kInnerDup);
  // The one-shot entry fires once: afterwards it is disabled.
  const std::uint64_t one = 1;
  CHILD_CHECK(::write(kOneShot, &one, sizeof one) == sizeof one);
  epoll_event got[16];
  CHILD_CHECK(::epoll_wait(kOuter, got, 16, 0) > 0);
  // Closed: the dup keeps the file, so the entry stays.
  CHILD_CHECK(::dup2(kClosedTfd, kClosedDup) == kClosedDup && ::close(kClosedTfd) == 0);
  // Reused: the dup keeps the registered file; fd 110 then names another eventfd.
  CHILD_CHECK(::dup2(kReusedTfd, kReusedDup) == kReusedDup && ::close(kReusedTfd) == 0);
  place(::eventfd(0, 0), kReusedTfd);
  // In flight: the only reference to the file is an SCM_RIGHTS message queued at kCarrier + 1.
  char byte = 'x';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &kInFlight, sizeof(int));
  CHILD_CHECK(::sendmsg(kCarrier, &msg, 0) == 1 && ::close(kInFlight) == 0);
  // Lower fds left over from the dups above are not part of the picture.
  CHILD_CHECK(::syscall(SYS_close_range, 3, kOuter - 1, 0) == 0);
  CHILD_CHECK(::write(200, "k", 1) == 1);
  while (::read(201, &byte, 1) > 0) {
  }
  ::_exit(0);
}

// A child process holding the epolls above, until the object is destroyed.
class EpollChild {
 public:
  EpollChild() {
    CreateFifo();
    int ready[2], hold[2];
    if (::pipe(ready) != 0 || ::pipe(hold) != 0) {
      ADD_FAILURE() << "pipe: " << std::strerror(errno);
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) ChildMain(ready[1], hold[0], fifo_);
    ::close(ready[1]);
    ::close(hold[0]);
    hold_ = hold[1];
    char byte = 0;
    const ssize_t n = ::read(ready[0], &byte, 1);
    ::close(ready[0]);
    if (n != 1) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
      ADD_FAILURE() << "the child failed to set up (exit status " << WEXITSTATUS(status) << ")";
      pid_ = -1;
    }
  }
  EpollChild(const EpollChild&) = delete;
  EpollChild& operator=(const EpollChild&) = delete;
  ~EpollChild() {
    if (hold_ >= 0) ::close(hold_);
    if (pid_ > 0) {
      int status = 0;
      EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
  }

  bool ok() const { return pid_ > 0; }
  std::string pid() const { return std::to_string(pid_); }
  const std::string& fifo() const { return fifo_; }
  // stat(2) of the child's fd, as this test sees it.
  struct stat Stat(int fd) const {
    struct stat st {};
    EXPECT_EQ(::stat(("/proc/" + pid() + "/fd/" + std::to_string(fd)).c_str(), &st), 0) << "fd " << fd;
    return st;
  }

 private:
  void CreateFifo() {
    fifo_ = dir_.File("fifo");
    if (::mkfifo(fifo_.c_str(), 0600) != 0) ADD_FAILURE() << "mkfifo: " << std::strerror(errno);
  }

  TempDir dir_;
  std::string fifo_;
  pid_t pid_ = -1;
  int hold_ = -1;
};

// ---- reading the outputs --------------------------------------------------------------------------------------------

// The lines of `text`, without their newlines.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    out.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

std::string Hex(std::uint64_t v) {
  std::ostringstream out;
  out << "0x" << std::hex << v;
  return out.str();
}

// What `ps` should show as an entry's events: Linux's names, readiness bits first, ERR|HUP never (the kernel adds
// them to every armed entry); a fired one-shot entry only its flags.
std::string ExpectedEvents(const Registered& r) {
  if (r.disabled) return "ONESHOT";
  std::string out;
  auto add = [&](std::uint32_t bit, const char* name) {
    if (r.events & bit) out += (out.empty() ? "" : "|") + std::string(name);
  };
  add(EPOLLIN, "IN");
  add(EPOLLOUT, "OUT");
  add(EPOLLRDHUP, "RDHUP");
  add(EPOLLET, "ET");
  add(EPOLLONESHOT, "ONESHOT");
  add(EPOLLEXCLUSIVE, "EXCLUSIVE");
  return out;
}

pb::Struct ParseJson(const std::string& text) {
  pb::Struct doc;
  const auto status = pb::util::JsonStringToMessage(text, &doc);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << text;
  return doc;
}

const pb::Value& Get(const pb::Struct& s, const std::string& key) {
  static const pb::Value kMissing;
  auto it = s.fields().find(key);
  EXPECT_NE(it, s.fields().end()) << "no field " << key;
  return it == s.fields().end() ? kMissing : it->second;
}

std::vector<int> Numbers(const pb::Value& list) {
  std::vector<int> out;
  for (const pb::Value& v : list.list_value().values()) out.push_back(static_cast<int>(v.number_value()));
  return out;
}

// The JSON epoll whose "fds" start with `fd`.
const pb::Struct* JsonEpoll(const pb::Struct& doc, int fd) {
  for (const pb::Value& e : Get(doc, "epolls").list_value().values()) {
    const std::vector<int> fds = Numbers(Get(e.struct_value(), "fds"));
    if (!fds.empty() && fds.front() == fd) return &e.struct_value();
  }
  ADD_FAILURE() << "no epoll fd " << fd;
  return nullptr;
}

const pb::Struct* JsonEntry(const pb::Struct& epoll, int tfd) {
  for (const pb::Value& e : Get(epoll, "entries").list_value().values()) {
    if (static_cast<int>(Get(e.struct_value(), "tfd").number_value()) == tfd) return &e.struct_value();
  }
  ADD_FAILURE() << "no entry tfd " << tfd;
  return nullptr;
}

v1::Image ReadImage(const std::string& path) {
  std::string payload;
  const epollcr::Status e = epollcr::image::ReadImageFile(path, &payload);
  EXPECT_TRUE(e.ok()) << e.message;
  epollcr::Result<v1::Image> image = epollcr::image::Decode(payload);
  EXPECT_TRUE(image.ok()) << image.status().message;
  return image.value();
}

// ---- tests ----------------------------------------------------------------------------------------------------------

TEST(PsTest, TextShowsEveryEntryWithItsTargetMaskDataAndNesting) {
  EpollChild child;
  ASSERT_TRUE(child.ok());
  const ProgramRun run = RunEpollcr({"ps", child.pid()});
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.err, "");
  const std::string& out = run.out;
  const std::vector<std::string> lines = Lines(out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0], "process " + child.pid() + " (ps-test-child): 2 epolls; files told apart with kcmp(2)");
  EXPECT_THAT(lines, ::testing::Contains("epoll fd 100: 9 entries").Times(1));
  EXPECT_THAT(lines,
              ::testing::Contains("epoll fds 101, 116: 2 entries; watched by epoll fd 100 (tfd 101)").Times(1));

  // One row per registration: tfd, events, data, list, target; the target as the test made it.
  std::map<int, std::string> target = {
      {kInner, "fd 101: anon_inode:\\[eventpoll\\]"},
      {kPipeRead, "fd 102: pipe:\\[" + std::to_string(child.Stat(kPipeRead).st_ino) + "\\]"},
      {kPipeWrite, "fd 103: pipe:\\[" + std::to_string(child.Stat(kPipeRead).st_ino) + "\\]"},
      {kClosedTfd, "fd 106 \\(closed; file still open as fd 107\\): anon_inode:\\[eventfd\\]"},
      {kOneShot, "fd 108: anon_inode:\\[eventfd\\]"},
      {kExclusive, "fd 109: anon_inode:\\[eventfd\\]"},
      {kReusedTfd, "fd 110 now names another file; target open as fd 111: anon_inode:\\[eventfd\\]"},
      {kFifo, "fd 112: " + child.fifo()},
      {kInFlight, "fd 113 \\(closed; file not open in this process\\): inode [0-9]+ on [0-9]+:[0-9]+"},
      {kSocket, "fd 104: socket:\\[" + std::to_string(child.Stat(kSocket).st_ino) + "\\]"},
  };
  for (const Registered& r : Registrations()) {
    std::string events = ExpectedEvents(r);  // '|' is alternation in a regular expression
    for (std::size_t at = events.find('|'); at != std::string::npos; at = events.find('|', at + 2)) {
      events.insert(at, "\\");
    }
    const std::string pattern = "^ +" + std::to_string(r.tfd) + "  +" + events + " +" + Hex(r.data) + " +" +
                                (r.disabled ? "disabled" : "armed") + " +" + target[r.tfd] + "$";
    EXPECT_THAT(lines, ::testing::Contains(::testing::MatchesRegex(pattern)).Times(1)) << out;
  }
  // Within a table, every row's events start under the header's "events".
  std::size_t events_column = std::string::npos;
  for (const std::string& line : lines) {
    const std::size_t first = line.find_first_not_of(' ');
    if (first == std::string::npos || first == 0) continue;  // not a table line
    const std::size_t events = line.find_first_not_of(' ', line.find(' ', first));
    if (line.compare(first, 4, "tfd ") == 0) {
      events_column = events;
    } else {
      EXPECT_EQ(events, events_column) << "not aligned: " << line;
    }
  }
  // Rows come in tfd order, under the header of their epoll.
  std::vector<std::string> tfds;
  for (const std::string& line : lines) {
    std::istringstream in(line);
    std::string first;
    in >> first;
    if (!first.empty() && std::isdigit(static_cast<unsigned char>(first[0]))) tfds.push_back(first);
    if (first == "epoll") tfds.push_back("|");
  }
  EXPECT_EQ(tfds, (std::vector<std::string>{"|", "101", "102", "103", "106", "108", "109", "110", "112", "113", "|",
                                            "104", "109"}));
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "  tfd  events        data                list      target"),
            1);  // the outer epoll's header, aligned to its widest cells
}

TEST(PsTest, JsonHoldsWhatTheChildRegistered) {
  EpollChild child;
  ASSERT_TRUE(child.ok());
  const ProgramRun run = RunEpollcr({"ps", child.pid(), "--json"});
  ASSERT_EQ(run.status, 0) << run.err;
  const pb::Struct doc = ParseJson(run.out);
  EXPECT_EQ(Get(doc, "pid").number_value(), std::stod(child.pid()));
  EXPECT_EQ(Get(doc, "command").string_value(), "ps-test-child");
  EXPECT_TRUE(Get(doc, "kcmp").bool_value());
  ASSERT_EQ(Get(doc, "epolls").list_value().values_size(), 2);
  const pb::Struct* outer = JsonEpoll(doc, kOuter);
  const pb::Struct* inner = JsonEpoll(doc, kInner);
  ASSERT_TRUE(outer && inner);
  EXPECT_EQ(Numbers(Get(*outer, "fds")), std::vector<int>{kOuter});
  EXPECT_EQ(Numbers(Get(*inner, "fds")), (std::vector<int>{kInner, kInnerDup}));
  EXPECT_EQ(Get(*outer, "watched_by").list_value().values_size(), 0);
  ASSERT_EQ(Get(*inner, "watched_by").list_value().values_size(), 1);
  const pb::Struct& by = Get(*inner, "watched_by").list_value().values(0).struct_value();
  EXPECT_EQ(Get(by, "epoll_fd").number_value(), kOuter);
  EXPECT_EQ(Get(by, "tfd").number_value(), kInner);
  EXPECT_EQ(Get(*outer, "entries").list_value().values_size(), 9);
  EXPECT_EQ(Get(*inner, "entries").list_value().values_size(), 2);

  // Where each target is now, by the test's own bookkeeping.
  struct Where {
    const char* state;
    std::vector<int> fds;
  };
  const std::map<int, Where> where = {
      {kInner, {"open", {kInner, kInnerDup}}},   {kPipeRead, {"open", {kPipeRead}}},
      {kPipeWrite, {"open", {kPipeWrite}}},      {kClosedTfd, {"closed", {kClosedDup}}},
      {kOneShot, {"open", {kOneShot}}},          {kExclusive, {"open", {kExclusive}}},
      {kReusedTfd, {"reused", {kReusedDup}}},    {kFifo, {"open", {kFifo}}},
      {kInFlight, {"closed", {}}},               {kSocket, {"open", {kSocket}}},
  };
  const struct stat anon = child.Stat(kClosedDup);
  for (const Registered& r : Registrations()) {
    SCOPED_TRACE("epoll " + std::to_string(r.epoll) + " tfd " + std::to_string(r.tfd));
    const pb::Struct* e = JsonEntry(*JsonEpoll(doc, r.epoll), r.tfd);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(Get(*e, "events").string_value(), ExpectedEvents(r));
    const std::uint32_t word = r.disabled ? EPOLLONESHOT : r.events | EPOLLERR | EPOLLHUP;
    EXPECT_EQ(Get(*e, "events_word").string_value(), Hex(word));
    EXPECT_EQ(Get(*e, "data").string_value(), Hex(r.data));
    EXPECT_EQ(Get(*e, "list").string_value(), r.disabled ? "disabled" : "armed");
    const pb::Struct& t = Get(*e, "target").struct_value();
    EXPECT_EQ(Get(t, "state").string_value(), where.at(r.tfd).state);
    EXPECT_EQ(Numbers(Get(t, "fds")), where.at(r.tfd).fds);
    EXPECT_EQ(Get(t, "epoll").bool_value(), r.tfd == kInner);
    if (!where.at(r.tfd).fds.empty()) {
      const struct stat st = child.Stat(where.at(r.tfd).fds.front());
      EXPECT_EQ(Get(t, "ino").number_value(), static_cast<double>(st.st_ino));
      EXPECT_EQ(Get(t, "dev").string_value(),
                std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)));
      char link[256] = {};
      const std::string path = "/proc/" + child.pid() + "/fd/" + std::to_string(where.at(r.tfd).fds.front());
      ASSERT_GT(::readlink(path.c_str(), link, sizeof link - 1), 0);
      EXPECT_EQ(Get(t, "link").string_value(), link);
    } else {
      EXPECT_EQ(t.fields().count("link"), 0u);
      EXPECT_EQ(Get(t, "ino").number_value(), static_cast<double>(anon.st_ino));  // anonymous inodes share one
    }
  }
}

TEST(PsTest, ImageHoldsEachEpollAndHostReferencesAndPassesVerify) {
  EpollChild child;
  ASSERT_TRUE(child.ok());
  TempDir dir;
  const std::string path = dir.File("child.epcr");
  const ProgramRun run = RunEpollcr({"ps", child.pid(), "--image", path});
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_THAT(run.out, StartsWith("process " + child.pid()));  // the text as well

  const v1::Image image = ReadImage(path);
  const epollcr::Status valid = epollcr::image::Validate(image);
  EXPECT_TRUE(valid.ok()) << valid.message;
  // The fd table: the child's fds that hold an epoll or a file an epoll watches, and no other.
  std::map<int, std::uint64_t> file_of;
  std::vector<int> fds;
  for (const v1::FdEntry& e : image.fds()) {
    fds.push_back(e.fd());
    file_of[e.fd()] = e.file();
  }
  EXPECT_EQ(fds, (std::vector<int>{kOuter, kInner, kPipeRead, kPipeWrite, kSocket, kClosedDup, kOneShot, kExclusive,
                                   kReusedDup, kFifo, kInnerDup}));
  EXPECT_EQ(file_of[kInner], file_of[kInnerDup]);
  std::map<std::uint64_t, const v1::File*> files;
  for (const v1::File& f : image.files()) files[f.id()] = &f;

  // Host references carry the identity stat(2) gives here, the access mode and the offset.
  auto expect_host = [&](int fd, std::uint32_t type, std::uint32_t flags) {
    SCOPED_TRACE("fd " + std::to_string(fd));
    ASSERT_TRUE(files.count(file_of[fd]));
    const v1::File& f = *files[file_of[fd]];
    ASSERT_TRUE(f.has_host());
    const struct stat st = child.Stat(fd);
    EXPECT_EQ(f.host().fd(), fd);
    EXPECT_EQ(f.host().st_dev(), st.st_dev);
    EXPECT_EQ(f.host().st_ino(), st.st_ino);
    EXPECT_EQ(f.host().file_type(), type);
    EXPECT_EQ(f.host().open_flags(), flags);
    EXPECT_EQ(f.host().offset(), 0u);
  };
  expect_host(kPipeRead, S_IFIFO, O_RDONLY);
  expect_host(kPipeWrite, S_IFIFO, O_WRONLY);
  expect_host(kSocket, S_IFSOCK, O_RDWR);
  // The FIFO's flags as fcntl(F_GETFL) gives them for the same open here (O_LARGEFILE included on 64-bit).
  const int fifo = ::open(child.fifo().c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(fifo, 0);
  const int fifo_flags = ::fcntl(fifo, F_GETFL);
  ::close(fifo);
  expect_host(kFifo, S_IFIFO, static_cast<std::uint32_t>(fifo_flags));
  // Anonymous inodes have no S_IFMT type: file_type 0, which the image allows for them.
  for (int fd : {kClosedDup, kOneShot, kExclusive, kReusedDup}) expect_host(fd, 0, O_RDWR);
  // The in-flight target: a file of its own, outside the fd table, held by a root; its inode is the one every
  // eventfd shares, so its type is known.
  ASSERT_EQ(image.roots_size(), 1);
  EXPECT_EQ(image.roots(0).name(), "epoll fd 100: tfd 113");
  const v1::File& unseen = *files[image.roots(0).file()];
  ASSERT_TRUE(unseen.has_host());
  EXPECT_EQ(unseen.host().fd(), kInFlight);
  EXPECT_EQ(unseen.host().st_dev(), child.Stat(kOneShot).st_dev);
  EXPECT_EQ(unseen.host().st_ino(), child.Stat(kOneShot).st_ino);
  EXPECT_EQ(unseen.host().file_type(), 0u);

  // Each epoll's entries, keyed (target file, fd) as the image orders them, against the registrations.
  std::map<int, int> current = {{kClosedTfd, kClosedDup}, {kReusedTfd, kReusedDup}};
  std::map<std::uint64_t, std::uint32_t> exclusive_rank, plain_rank;
  for (int poll : {kOuter, kInner}) {
    SCOPED_TRACE("epoll " + std::to_string(poll));
    ASSERT_TRUE(files[file_of[poll]]->has_eventpoll());
    const v1::EventPollState& st = files[file_of[poll]]->eventpoll();
    EXPECT_EQ(st.ready_order_size(), 0);  // the kernel does not show its ready list
    std::size_t matched = 0;
    for (const Registered& r : Registrations()) {
      if (r.epoll != poll) continue;
      const std::uint64_t target = r.tfd == kInFlight ? image.roots(0).file()
                                                      : file_of[current.count(r.tfd) ? current[r.tfd] : r.tfd];
      for (int i = 0; i < st.files_size(); ++i) {
        if (st.files(i) != target || st.fds(i) != r.tfd) continue;
        ++matched;
        EXPECT_EQ(st.events(i), r.disabled ? std::uint32_t{EPOLLONESHOT} : r.events) << "tfd " << r.tfd;
        EXPECT_EQ(st.data(i), r.data);
        EXPECT_EQ(st.lists(i), r.disabled ? v1::ENTRY_LIST_DISABLED : v1::ENTRY_LIST_WAITING);
        if (r.tfd == kExclusive) (r.events & EPOLLEXCLUSIVE ? exclusive_rank : plain_rank)[target] = st.queue_ranks(i);
      }
    }
    EXPECT_EQ(matched, static_cast<std::size_t>(st.files_size()));
    EXPECT_EQ(matched, poll == kOuter ? 9u : 2u);
  }
  // kExclusive is watched twice: the EPOLLEXCLUSIVE registration is woken after the other one.
  const std::uint64_t ex = file_of[kExclusive];
  EXPECT_EQ(plain_rank[ex], 0u);
  EXPECT_EQ(exclusive_rank[ex], 1u);

  // The other commands take it.
  const ProgramRun verify = RunEpollcr({"verify", path});
  EXPECT_EQ(verify.status, 0) << verify.err;
  EXPECT_EQ(verify.out, path + ": ok\n");
  const ProgramRun inspect = RunEpollcr({"inspect", path});
  EXPECT_EQ(inspect.status, 0) << inspect.err;
  EXPECT_THAT(inspect.out, HasSubstr("eventpoll file " + std::to_string(file_of[kOuter]) + " (fd 100): 9 entries"));
  const ProgramRun json = RunEpollcr({"convert", path, "-", "--to", "json"});
  EXPECT_EQ(json.status, 0) << json.err;
  // Nothing changed in the child: a second look is the same image.
  const std::string again = dir.File("again.epcr");
  ASSERT_EQ(RunEpollcr({"ps", child.pid(), "--image", again}).status, 0);
  const ProgramRun diff = RunEpollcr({"diff", path, again});
  EXPECT_EQ(diff.status, 0) << diff.out << diff.err;
  EXPECT_EQ(diff.out, "");
}

TEST(PsTest, ImageToStandardOutputGoesToVerify) {
  EpollChild child;
  ASSERT_TRUE(child.ok());
  const ProgramRun run = RunEpollcr({"ps", child.pid(), "--image", "-"});
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_THAT(run.out, StartsWith(std::string("EPCRIMG\0", 8)));  // the image only, no text
  const ProgramRun verify = RunEpollcr({"verify", "-"}, run.out);
  EXPECT_EQ(verify.status, 0) << verify.err;
  EXPECT_EQ(verify.out, "<stdin>: ok\n");
  const ProgramRun both = RunEpollcr({"ps", child.pid(), "--image", "-", "--json"});
  EXPECT_EQ(both.status, 2);
  EXPECT_THAT(both.err, StartsWith("epollcr: usage: ps: "));
}

TEST(PsTest, AVanishedProcessIsAClearError) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  const ProgramRun run = RunEpollcr({"ps", std::to_string(pid)});
  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "epollcr: ps: " + std::to_string(pid) + ": no such process\n");
  EXPECT_EQ(run.out, "");
}

TEST(PsTest, AZombieHasNoEpollsToShow) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);  // exited, not yet reaped
  const ProgramRun run = RunEpollcr({"ps", std::to_string(pid)});
  EXPECT_EQ(run.status, 1);
  EXPECT_EQ(run.err, "epollcr: ps: " + std::to_string(pid) + ": no such process (it has exited)\n");
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
}

TEST(PsTest, AnotherUsersProcessIsAPermissionError) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the program as another user";
  EpollChild child;  // runs as root
  ASSERT_TRUE(child.ok());
  const ProgramRun run = RunEpollcr({"ps", child.pid()}, "", 65534);
  EXPECT_EQ(run.status, 1);
  EXPECT_THAT(run.err, StartsWith("epollcr: ps: " + child.pid() + ": Permission denied (reading /proc/" +
                                  child.pid() + "/fdinfo needs ptrace access"));
  EXPECT_EQ(Lines(run.err).size(), 1u) << run.err;
  EXPECT_EQ(run.out, "");
}

TEST(PsTest, ABadPidIsAUsageError) {
  for (const std::string pid : {"abc", "0", "12x", "+5", "99999999999", ""}) {
    const ProgramRun run = RunEpollcr({"ps", pid});
    EXPECT_EQ(run.status, 2) << "'" << pid << "': " << run.err;
    EXPECT_THAT(run.err, StartsWith("epollcr: usage: ")) << pid;
  }
  const ProgramRun missing = RunEpollcr({"ps"});
  EXPECT_EQ(missing.status, 2);
}

// Runs `epollcr ps PID --json` with kcmp(2) refused by a seccomp filter, as container runtimes often do.
ProgramRun RunWithoutKcmp(const std::string& pid) {
  TempDir io;
  const pid_t child = ::fork();
  if (child == 0) {
    const int out = ::open(io.File("stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(io.File("stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0 || ::dup2(out, 1) != 1 || ::dup2(err, 2) != 2) ::_exit(127);
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kcmp, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      ::_exit(126);
    }
    const char* bin = Bin();
    const char* argv[] = {bin, "ps", pid.c_str(), "--json", nullptr};
    ::execv(bin, const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ProgramRun run;
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  if (WIFEXITED(status)) run.status = WEXITSTATUS(status);
  run.out = ReadWholeFile(io.File("stdout"));
  run.err = ReadWholeFile(io.File("stderr"));
  return run;
}

TEST(PsTest, WithoutKcmpFilesAreToldApartByInodeAndGuessesAreMarked) {
  EpollChild child;
  ASSERT_TRUE(child.ok());
  const ProgramRun run = RunWithoutKcmp(child.pid());
  ASSERT_EQ(run.status, 0) << run.err;
  const pb::Struct doc = ParseJson(run.out);
  EXPECT_FALSE(Get(doc, "kcmp").bool_value());
  EXPECT_EQ(Get(doc, "kcmp_unavailable").string_value(), "kcmp(2): Operation not permitted");
  const pb::Struct* outer = JsonEpoll(doc, kOuter);
  ASSERT_NE(outer, nullptr);
  auto target = [&](int tfd) { return Get(*JsonEntry(*outer, tfd), "target").struct_value(); };
  // A socket's inode has one file: certain. An anonymous inode does not: a guess, said to be one.
  EXPECT_EQ(Get(target(kPipeRead), "state").string_value(), "unverified");
  EXPECT_EQ(Get(target(kOneShot), "state").string_value(), "unverified");
  EXPECT_EQ(Get(target(kReusedTfd), "state").string_value(), "unverified");  // kcmp would say reused
  EXPECT_EQ(Numbers(Get(target(kReusedTfd), "fds")), std::vector<int>{kReusedTfd});
  EXPECT_EQ(Get(target(kClosedTfd), "state").string_value(), "closed");
  EXPECT_EQ(Numbers(Get(target(kClosedTfd), "fds")), std::vector<int>{});  // the dup is not found
  // Without kcmp, dups are not recognised: the inner epoll's two fds are two epolls.
  EXPECT_EQ(Get(doc, "epolls").list_value().values_size(), 3);
  const pb::Struct* inner = JsonEpoll(doc, kInner);
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(Get(Get(*JsonEntry(*inner, kSocket), "target").struct_value(), "state").string_value(), "open");
}

}  // namespace
