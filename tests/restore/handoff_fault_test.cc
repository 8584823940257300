// Fault injection for the hand-off (restore/handoff.h): every system call PrepareExec, RestoreAfterExec, SendWorld
// and ReceiveWorld make — through HandoffOps (handoff_ops.h) and, for the image file, image::FileOps — is failed in
// turn (the Nth call of each kind, with an errno that call really returns), then interrupted (EINTR) in turn. A failure
// is reported with the step and the errno and leaves nothing behind: no fd opened or closed, FD_CLOEXEC as it was on
// every fd, the target world empty, no host file watched, the notifier stopped if it was; an interrupted call is
// retried and the hand-off completes. Short sends and receives, and fds that arrive in other pieces than they were
// sent in, are carried on with.

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fault_plan.h"
#include "host_scenario.h"
#include "restore/handoff.h"
#include "restore/handoff_ops.h"
#include "temp_dir.h"

namespace epollcr::restore {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::HandOver;
using testing::OpenFds;

enum class Op {
  kGetFdFlags, kSetFdFlags, kSend, kReceive, kSendMessage, kReceiveMessage, kClose,  // HandoffOps
  kOpenDirectory, kOpen, kWrite, kRead, kFsync, kFstat, kFileClose, kRename, kUnlink,  // image::FileOps
};

const char* OpName(Op op) {
  switch (op) {
    case Op::kGetFdFlags: return "GetFdFlags";
    case Op::kSetFdFlags: return "SetFdFlags";
    case Op::kSend: return "Send";
    case Op::kReceive: return "Receive";
    case Op::kSendMessage: return "SendMessage";
    case Op::kReceiveMessage: return "ReceiveMessage";
    case Op::kClose: return "Close";
    case Op::kOpenDirectory: return "OpenDirectory";
    case Op::kOpen: return "Open";
    case Op::kWrite: return "Write";
    case Op::kRead: return "Read";
    case Op::kFsync: return "Fsync";
    case Op::kFstat: return "Fstat";
    case Op::kFileClose: return "FileClose";
    case Op::kRename: return "Rename";
    case Op::kUnlink: return "Unlink";
  }
  return "?";
}

// An errno each call really returns (fcntl F_GETFD/F_SETFD: only EBADF; send: EAGAIN on a send timeout; sendmsg:
// EMSGSIZE; recv: ECONNRESET; recvmsg: ENOMEM; the image file: see image_fault_test.cc).
int RealisticErrno(Op op) {
  switch (op) {
    case Op::kGetFdFlags: return EBADF;
    case Op::kSetFdFlags: return EBADF;
    case Op::kSend: return EAGAIN;
    case Op::kReceive: return ECONNRESET;
    case Op::kSendMessage: return EMSGSIZE;
    case Op::kReceiveMessage: return ENOMEM;
    case Op::kClose: return EIO;
    case Op::kOpenDirectory: return EACCES;
    case Op::kOpen: return EACCES;
    case Op::kWrite: return ENOSPC;
    case Op::kRead: return EIO;
    case Op::kFsync: return EIO;
    case Op::kFstat: return EIO;
    case Op::kFileClose: return EIO;
    case Op::kRename: return EXDEV;
    case Op::kUnlink: return EACCES;
  }
  return EIO;
}

std::error_code Errno(int e) { return {e, std::generic_category()}; }

using Fault = epollcr::testing::Fault<Op>;

// The real calls, except the planned faults. Records every call; caps the data of every transfer at `max_transfer`
// bytes (so short sends and receives are the rule). With SplitFds(), a ReceiveMessage that brings more than one fd
// passes on only the first, and the others with the next ReceiveMessage: fds in other pieces than they were sent in.
class FaultyOps final : public HandoffOps, public epollcr::testing::FaultPlan<Op> {
 public:
  explicit FaultyOps(std::vector<Fault> faults = {}, std::size_t max_transfer = std::numeric_limits<std::size_t>::max())
      : FaultPlan(std::move(faults), max_transfer), files_(*this) {}
  ~FaultyOps() override {
    for (int fd : held_) ::close(fd);
  }

  std::error_code GetFdFlags(int fd, int* flags) override {
    if (const Fault* f = Next(Op::kGetFdFlags); f != nullptr && f->error != 0) return Errno(f->error);
    return real_.GetFdFlags(fd, flags);
  }
  std::error_code SetFdFlags(int fd, int flags) override {
    if (const Fault* f = Next(Op::kSetFdFlags); f != nullptr && f->error != 0) return Errno(f->error);
    return real_.SetFdFlags(fd, flags);
  }
  std::error_code Send(int socket, const char* data, std::size_t size, std::size_t* done) override {
    const Fault* f = Next(Op::kSend);
    if (f != nullptr && f->error != 0) return Errno(f->error);
    return real_.Send(socket, data, Cap(size, f), done);
  }
  std::error_code Receive(int socket, char* data, std::size_t size, std::size_t* done) override {
    const Fault* f = Next(Op::kReceive);
    if (f != nullptr && f->error != 0) return Errno(f->error);
    return real_.Receive(socket, data, Cap(size, f), done);
  }
  std::error_code SendMessage(int socket, const msghdr& msg, std::size_t* done) override {
    const Fault* f = Next(Op::kSendMessage);
    if (f != nullptr && f->error != 0) return Errno(f->error);
    iovec iov = msg.msg_iov[0];  // the hand-off sends one iovec
    iov.iov_len = Cap(iov.iov_len, f);
    msghdr capped = msg;
    capped.msg_iov = &iov;
    return real_.SendMessage(socket, capped, done);
  }
  std::error_code ReceiveMessage(int socket, msghdr* msg, std::size_t* done) override {
    const Fault* f = Next(Op::kReceiveMessage);
    if (f != nullptr && f->error != 0) return Errno(f->error);
    iovec* iov = msg->msg_iov;
    const std::size_t asked = iov->iov_len;
    iov->iov_len = Cap(asked, f);
    const std::error_code ec = real_.ReceiveMessage(socket, msg, done);
    iov->iov_len = asked;
    if (ec || !split_fds_) return ec;
    // The fds held back from the call before, and the ones the kernel gave now. A call that continues a piece hands
    // on all of them; one that starts a piece hands on the first alone and holds the others for the next call.
    const bool continuing = !held_.empty();
    std::vector<int> fds = std::move(held_);
    held_.clear();
    for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      for (std::size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * i, sizeof fd);
        fds.push_back(fd);
      }
    }
    if (fds.empty()) {
      msg->msg_controllen = 0;
      return ec;
    }
    if (!continuing) {
      held_.assign(fds.begin() + 1, fds.end());
      fds.resize(1);
    }
    // The control buffer has room for a whole batch, and a piece never holds more than its batch's fds.
    msg->msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    return ec;
  }
  std::error_code Close(int fd) override {
    const Fault* f = Next(Op::kClose);
    // Linux frees the descriptor even when close(2) fails, so a failing close still closes.
    const std::error_code ec = real_.Close(fd);
    if (f != nullptr && f->error != 0) return Errno(f->error);
    return ec;
  }
  image::FileOps& Files() override { return files_; }

  void SplitFds() { split_fds_ = true; }
  std::size_t held() const { return held_.size(); }

 private:
  class FaultyFiles final : public image::FileOps {
   public:
    explicit FaultyFiles(FaultyOps& o) : o_(o) {}
    std::error_code Open(const std::string& path, int flags, mode_t mode, int* fd) override {
      if (const Fault* f = o_.Next(Op::kOpen); f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Open(path, flags, mode, fd);
    }
    std::error_code OpenDirectory(const std::string& path, int* fd) override {
      if (const Fault* f = o_.Next(Op::kOpenDirectory); f != nullptr && f->error != 0) return Errno(f->error);
      return real_.OpenDirectory(path, fd);
    }
    std::error_code Write(int fd, const char* data, std::size_t size, std::size_t* done) override {
      const Fault* f = o_.Next(Op::kWrite);
      if (f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Write(fd, data, o_.Cap(size, f), done);
    }
    std::error_code Read(int fd, char* data, std::size_t size, std::size_t* done) override {
      const Fault* f = o_.Next(Op::kRead);
      if (f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Read(fd, data, o_.Cap(size, f), done);
    }
    std::error_code Fsync(int fd) override {
      if (const Fault* f = o_.Next(Op::kFsync); f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Fsync(fd);
    }
    std::error_code Fstat(int fd, struct stat* st) override {
      if (const Fault* f = o_.Next(Op::kFstat); f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Fstat(fd, st);
    }
    std::error_code Close(int fd) override {
      const Fault* f = o_.Next(Op::kFileClose);
      const std::error_code ec = real_.Close(fd);
      if (f != nullptr && f->error != 0) return Errno(f->error);
      return ec;
    }
    std::error_code Rename(const std::string& from, const std::string& to) override {
      if (const Fault* f = o_.Next(Op::kRename); f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Rename(from, to);
    }
    std::error_code Unlink(const std::string& path) override {
      if (const Fault* f = o_.Next(Op::kUnlink); f != nullptr && f->error != 0) return Errno(f->error);
      return real_.Unlink(path);
    }

   private:
    FaultyOps& o_;
    image::FileOps& real_ = image::DefaultFileOps();
  };

  HandoffOps& real_ = DefaultHandoffOps();
  FaultyFiles files_;
  bool split_fds_ = false;
  std::vector<int> held_;  // received fds not handed on yet (closed with the ops)
};


// The fd flags of each fd (-1: not open).
std::vector<int> FdFlagsOf(const std::vector<int>& fds) {
  std::vector<int> flags;
  for (int fd : fds) flags.push_back(fcntl(fd, F_GETFD));
  return flags;
}


// The host scenario's world (host_scenario.h: sockets and an eventfd in nested polls, one-shot and edge-triggered
// entries, data pending): its fds, its world, and the peers' ends closed at the end.
struct Scene {
  testing::HostFds f;
  World world;
  bool Build() {
    if (!f.Open() || !testing::BuildHostWorld(&world, f)) return false;
    testing::EpollcrSide side{&world};
    return testing::PlayBefore(side.Side(), f) == "data=4 events=in";
  }
  std::vector<int> Watched() const { return {f.a[0], f.b[0], f.c[0], f.d[0], f.e}; }
  ~Scene() {
    world.roots.clear();
    world.fds.Clear();
    for (const int* p : {f.a, f.b, f.c, f.d}) close(p[1]);
  }
};

// What the restore of the scene's world (with `more` host fds in its fd table) must look like: its entries and
// host files.
void ExpectRestored(const World& out, const std::string& context, std::size_t more = 0) {
  EXPECT_EQ(HostFds(out).size(), 5u + more) << context;
  ASSERT_EQ(out.roots.count("outer"), 1u) << context;
  EXPECT_EQ(std::static_pointer_cast<EventPoll>(out.roots.at("outer"))->EntryCount(), 5u) << context;
  EXPECT_EQ(std::static_pointer_cast<EventPoll>(out.roots.at("inner"))->EntryCount(), 1u) << context;
}

// Whether a failure of `op` is reported. close(2) of a received fd frees it whatever it returns, and so does the
// close of a file the image was read from (nothing to flush) or of the directory fsynced after the rename: those
// failures have nothing to undo and are not reported. The temporary image file's close (the first file close of
// PrepareExec) is: it can report a lost write.
bool Reported(Op op, int nth, bool writing) {
  if (op == Op::kClose) return false;
  if (op == Op::kFileClose) return writing && nth == 1;
  return true;
}

// Whether `op` can report EINTR (and the hand-off must then call it again). fstat, rename, unlink and fcntl
// F_GETFD/F_SETFD do not block and are never interrupted; close(2) can be, and then has closed the fd anyway.
bool Interruptible(Op op) {
  switch (op) {
    case Op::kGetFdFlags:
    case Op::kSetFdFlags:
    case Op::kFstat:
    case Op::kRename:
    case Op::kUnlink: return false;
    default: return true;
  }
}

// The words a failure of `op` is reported with.
std::string StepOf(Op op, bool writing) {
  switch (op) {
    case Op::kGetFdFlags: return "(fcntl F_GETFD)";
    case Op::kSetFdFlags: return "(fcntl F_SETFD)";
    case Op::kSend: return "hand-off: send ";
    case Op::kReceive: return "hand-off: receive ";
    case Op::kSendMessage: return "hand-off: send fds: ";
    case Op::kReceiveMessage: return "hand-off: receive fds: ";
    default: return writing ? "hand-off: write the image: " : "hand-off: read the image: ";
  }
}

// Runs `call` with no fault (it must succeed), then once for every call it made failing with RealisticErrno and
// (if it can be) once with it interrupted. `prepare` readies one run (false: give up); `check` checks what a run
// left, given whether it was to succeed.
template <typename Call, typename Check>
void EveryCallFailingInTurn(const std::string& name, bool writing, std::size_t max_transfer,
                            const std::function<bool()>& prepare, Call call, Check check) {
  std::vector<Op> trace;
  std::map<Op, int> total;
  {
    ASSERT_TRUE(prepare());
    FaultyOps counting({}, max_transfer);
    const Status s = call(counting);
    ASSERT_FALSE(s) << name << " without faults: " << s.message;
    check(true, name + " without faults");
    trace = counting.trace();
    for (const Op op : trace) ++total[op];
  }
  std::map<Op, int> seen;
  for (const Op op : trace) {
    const int nth = ++seen[op];
    for (const int error : {RealisticErrno(op), EINTR}) {
      if (error == EINTR && !Interruptible(op)) continue;
      const std::string context = name + ": " + OpName(op) + " #" + std::to_string(nth) + " failing with " +
                                  std::strerror(error);
      ASSERT_TRUE(prepare()) << context;
      FaultyOps ops({{op, nth, error}}, max_transfer);
      const Status s = call(ops);
      const bool fails = error != EINTR && Reported(op, nth, writing);
      if (fails) {
        EXPECT_TRUE(s) << context << " was not reported";
        EXPECT_EQ(s.code, Errno(error)) << context << ": " << s.message;
        EXPECT_THAT(s.message, StartsWith("hand-off: ")) << context;
        EXPECT_THAT(s.message, HasSubstr(StepOf(op, writing))) << context;
        EXPECT_THAT(s.message, HasSubstr(std::string(": ") + std::strerror(error))) << context;
      } else {
        EXPECT_FALSE(s) << context << ": " << s.message;
      }
      check(!fails, context);
      if (error == EINTR) {  // called again, except close(2), which must not be
        const bool close = op == Op::kClose || op == Op::kFileClose;
        EXPECT_EQ(ops.calls(op), total[op] + (close ? 0 : 1)) << context;
      }
    }
  }
}

// --- PrepareExec -----------------------------------------------------------------------------------------------------

TEST(HandoffFaultTest, PrepareExec) {
  Scene scene;
  ASSERT_TRUE(scene.Build());
  std::vector<int> fds = scene.Watched();
  std::sort(fds.begin(), fds.end());
  // Some fds have FD_CLOEXEC and some do not, so both are seen put back as they were.
  for (int fd : {scene.f.a[0], scene.f.c[0], scene.f.e}) ASSERT_EQ(fcntl(fd, F_SETFD, FD_CLOEXEC), 0);
  const std::vector<int> flags = FdFlagsOf(fds);
  ::epollcr::testing_support::TempDir dir;
  const std::string path = dir.File("world.epcr");
  const std::size_t watched = HostFile::WatchedFds();
  int open_fds = 0;

  EveryCallFailingInTurn(
      "PrepareExec", /*writing=*/true, /*max_transfer=*/100,
      [&] {
        unlink(path.c_str());
        for (std::size_t i = 0; i < fds.size(); ++i) fcntl(fds[i], F_SETFD, flags[i]);
        open_fds = OpenFds();
        return FdFlagsOf(fds) == flags;
      },
      [&](HandoffOps& ops) {
        StatusOr<std::vector<int>> kept = PrepareExec(scene.world, path, ops);
        if (kept.ok()) {
          EXPECT_EQ(kept.value, fds);
        }
        return kept.status;
      },
      [&](bool succeeded, const std::string& context) {
        EXPECT_EQ(OpenFds(), open_fds) << context;
        EXPECT_EQ(HostFile::WatchedFds(), watched) << context;
        EXPECT_TRUE(HostFile::NotifierRunning()) << context;
        EXPECT_EQ(scene.world.fds.Count(), 5) << context;
        std::vector<std::string> names;
        for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
          names.push_back(e.path().filename().string());
        }
        if (succeeded) {
          EXPECT_EQ(FdFlagsOf(fds), std::vector<int>(fds.size(), 0)) << context << ": FD_CLOEXEC still set";
          EXPECT_EQ(names, std::vector<std::string>{"world.epcr"}) << context;
        } else {
          EXPECT_EQ(FdFlagsOf(fds), flags) << context << ": FD_CLOEXEC not put back";
          // A failure before the rename leaves no file; only the directory's fsync comes after it (and says so).
          if (names.empty()) return;
          EXPECT_EQ(names, std::vector<std::string>{"world.epcr"}) << context;
        }
      });
}

TEST(HandoffFaultTest, PrepareExecSaysWhenTheImageIsInPlaceAndWhenAFlagCannotBePutBack) {
  Scene scene;
  ASSERT_TRUE(scene.Build());
  for (int fd : scene.Watched()) ASSERT_EQ(fcntl(fd, F_SETFD, FD_CLOEXEC), 0);
  ::epollcr::testing_support::TempDir dir;
  const std::string path = dir.File("world.epcr");
  {
    FaultyOps ops({{Op::kFsync, 2, EIO}});  // the directory's, after the rename
    StatusOr<std::vector<int>> kept = PrepareExec(scene.world, path, ops);
    EXPECT_EQ(kept.status.code, Errno(EIO));
    EXPECT_THAT(kept.status.message, HasSubstr(path + " holds the new image"));
    EXPECT_EQ(FdFlagsOf(scene.Watched()), std::vector<int>(5, FD_CLOEXEC));
  }
  {
    // The third fd cannot be changed, and the first one's flags cannot be put back: both are said.
    FaultyOps ops({{Op::kSetFdFlags, 3, EBADF}, {Op::kSetFdFlags, 4, EBADF}});
    StatusOr<std::vector<int>> kept = PrepareExec(scene.world, path, ops);
    EXPECT_EQ(kept.status.code, Errno(EBADF));
    const std::vector<int> fds = scene.Watched();
    EXPECT_EQ(kept.status.message,
              "hand-off: clear FD_CLOEXEC on fd " + std::to_string(fds[2]) +
                  " (fcntl F_SETFD): Bad file descriptor; putting back FD_CLOEXEC of fd " + std::to_string(fds[0]) +
                  " also failed: Bad file descriptor");
    EXPECT_EQ(FdFlagsOf(fds), (std::vector<int>{0, FD_CLOEXEC, FD_CLOEXEC, FD_CLOEXEC, FD_CLOEXEC}));
  }
  {
    // The temporary file cannot be written, nor removed: both are said, and the flags are put back.
    ASSERT_EQ(fcntl(scene.Watched()[0], F_SETFD, FD_CLOEXEC), 0);
    FaultyOps ops({{Op::kWrite, 1, ENOSPC}, {Op::kUnlink, 1, EACCES}});
    StatusOr<std::vector<int>> kept = PrepareExec(scene.world, dir.File("other.epcr"), ops);
    EXPECT_EQ(kept.status.code, Errno(ENOSPC));
    EXPECT_THAT(kept.status.message, StartsWith("hand-off: write the image: write "));
    EXPECT_THAT(kept.status.message, HasSubstr("No space left on device; removing "));
    EXPECT_THAT(kept.status.message, HasSubstr(" also failed: Permission denied"));
    EXPECT_EQ(FdFlagsOf(scene.Watched()), std::vector<int>(5, FD_CLOEXEC));
  }
}

// --- RestoreAfterExec ------------------------------------------------------------------------------------------------

TEST(HandoffFaultTest, RestoreAfterExec) {
  ::epollcr::testing_support::TempDir dir;
  const std::string path = dir.File("world.epcr");
  std::vector<int> fds, peers;
  {
    Scene scene;
    ASSERT_TRUE(scene.Build());
    StatusOr<std::vector<int>> kept = PrepareExec(scene.world, path);
    ASSERT_TRUE(kept.ok()) << kept.status.message;
    fds = kept.value;
    HandOver(&scene.world);  // the fds are now "inherited": open, without FD_CLOEXEC, owned by nobody
    for (const int* p : {scene.f.a, scene.f.b, scene.f.c, scene.f.d}) peers.push_back(dup(p[1]));  // data stays
  }
  ASSERT_EQ(HostFile::WatchedFds(), 0u);
  ASSERT_FALSE(HostFile::NotifierRunning());
  World out;
  int open_fds = 0;

  EveryCallFailingInTurn(
      "RestoreAfterExec", /*writing=*/false, /*max_transfer=*/100,
      [&] {
        HandOver(&out);
        for (int fd : fds) fcntl(fd, F_SETFD, 0);
        open_fds = OpenFds();
        return HostFile::WatchedFds() == 0 && !HostFile::NotifierRunning();
      },
      [&](HandoffOps& ops) { return RestoreAfterExec(path, &out, {}, nullptr, ops); },
      [&](bool succeeded, const std::string& context) {
        if (succeeded) {
          ExpectRestored(out, context);
          EXPECT_EQ(HostFile::WatchedFds(), 5u) << context;
          EXPECT_EQ(FdFlagsOf(fds), std::vector<int>(fds.size(), FD_CLOEXEC)) << context;
          HandOver(&out);  // and the notifier's own fds go with it
          EXPECT_EQ(OpenFds(), open_fds) << context;
        } else {
          EXPECT_EQ(OpenFds(), open_fds) << context;
          EXPECT_EQ(out.fds.Count(), 0) << context;
          EXPECT_TRUE(out.roots.empty()) << context;
          EXPECT_EQ(HostFile::WatchedFds(), 0u) << context;
          EXPECT_FALSE(HostFile::NotifierRunning()) << context;
          EXPECT_EQ(FdFlagsOf(fds), std::vector<int>(fds.size(), 0)) << context << ": flags changed, or an fd closed";
        }
      });
  HandOver(&out);
  for (int fd : fds) close(fd);
  for (int fd : peers) close(fd);
  EXPECT_FALSE(HostFile::NotifierRunning());
}

// --- SendWorld and ReceiveWorld --------------------------------------------------------------------------------------

// A connected pair: [0] the sender's end, [1] the receiver's.
struct Channel {
  int s[2] = {-1, -1};
  bool Open() { return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0; }
  ~Channel() {
    for (int fd : s) {
      if (fd >= 0) close(fd);
    }
  }
};

TEST(HandoffFaultTest, SendWorld) {
  Scene scene;
  ASSERT_TRUE(scene.Build());
  const std::vector<int> flags = FdFlagsOf(scene.Watched());
  std::unique_ptr<Channel> channel;
  int open_fds = 0;
  EveryCallFailingInTurn(
      "SendWorld", /*writing=*/false, /*max_transfer=*/200,
      [&] {
        channel.reset();
        open_fds = OpenFds();
        channel = std::make_unique<Channel>();
        return channel->Open();
      },
      [&](HandoffOps& ops) { return SendWorld(channel->s[0], scene.world, ops); },
      [&](bool succeeded, const std::string& context) {
        EXPECT_EQ(OpenFds(), open_fds + 2) << context << ": the sender opens or closes an fd";
        EXPECT_EQ(HostFile::WatchedFds(), 5u) << context;
        EXPECT_EQ(scene.world.fds.Count(), 5) << context;
        EXPECT_EQ(FdFlagsOf(scene.Watched()), flags) << context;
        if (!succeeded) return;
        shutdown(channel->s[0], SHUT_WR);  // all is sent: a receive that wants more fails instead of waiting
        World out;
        const Status s = ReceiveWorld(channel->s[1], &out);
        ASSERT_FALSE(s) << context << ": what was sent does not restore: " << s.message;
        ExpectRestored(out, context);
      });
  channel.reset();
  EXPECT_EQ(OpenFds(), open_fds);
}

// The receiver's side: each run gets a world sent afresh (by the real calls) whose sender has gone, so the notifier
// is stopped and no host file is watched before the receive.
class Received {
 public:
  bool Send(std::size_t batches_of = 0) {
    channel_ = std::make_unique<Channel>();
    if (!channel_->Open()) return false;
    Scene scene;
    if (!scene.Build()) return false;
    // More than one batch of fds: eventfds in the fd table (kept out of the scenario's polls).
    for (std::size_t i = 0; i < batches_of; ++i) {
      const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      Result<std::shared_ptr<HostFile>> h = HostFile::Create(fd);
      if (!h.ok() || scene.world.fds.InstallAt(fd, h.value())) return false;
    }
    expected_fds_ = scene.world.fds.Count();
    if (SendWorld(channel_->s[0], scene.world)) return false;
    shutdown(channel_->s[0], SHUT_WR);  // all is sent: a receive that wants more fails instead of waiting
    return true;  // the scene goes: its fds close (the sent ones travel on), the notifier stops
  }
  int socket() const { return channel_->s[1]; }
  int expected_fds() const { return expected_fds_; }

 private:
  std::unique_ptr<Channel> channel_;
  int expected_fds_ = 0;
};

// After a receive: what it restored (then released: the received fds and the notifier's close), or that it left
// nothing behind.
void CheckReceive(World& out, bool succeeded, int open_fds, int expected_fds, const std::string& context) {
  if (succeeded) {
    ExpectRestored(out, context, static_cast<std::size_t>(expected_fds) - 5);
    EXPECT_EQ(out.fds.Count(), expected_fds) << context;
    EXPECT_EQ(HostFile::WatchedFds(), static_cast<std::size_t>(expected_fds)) << context;
    for (int fd : HostFds(out)) EXPECT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC) << context << ": fd " << fd;
    out.roots.clear();
    out.fds.Clear();
    EXPECT_EQ(OpenFds(), open_fds) << context;
    EXPECT_FALSE(HostFile::NotifierRunning()) << context;
    return;
  }
  EXPECT_EQ(out.fds.Count(), 0) << context;
  EXPECT_TRUE(out.roots.empty()) << context;
  EXPECT_EQ(OpenFds(), open_fds) << context << ": a received fd was left open";
  EXPECT_EQ(HostFile::WatchedFds(), 0u) << context;
  EXPECT_FALSE(HostFile::NotifierRunning()) << context;
}

TEST(HandoffFaultTest, ReceiveWorld) {
  Received received;
  World out;
  int open_fds = 0;
  EveryCallFailingInTurn(
      "ReceiveWorld", /*writing=*/false, /*max_transfer=*/300,
      [&] {
        out.roots.clear();
        out.fds.Clear();
        if (!received.Send()) return false;
        open_fds = OpenFds();
        return HostFile::WatchedFds() == 0 && !HostFile::NotifierRunning();
      },
      [&](HandoffOps& ops) { return ReceiveWorld(received.socket(), &out, {}, nullptr, ops); },
      [&](bool succeeded, const std::string& context) {
        CheckReceive(out, succeeded, open_fds, received.expected_fds(), context);
      });
  out.roots.clear();
  out.fds.Clear();
}

TEST(HandoffFaultTest, ManyBatchesOfFds) {
  // 5 + 300 fds: two batches. The receiver's recvmsg of each batch fails in turn, and then its closes of the fds of
  // the first batch fail too.
  Received received;
  World out;
  int open_fds = 0;
  for (const Op op : {Op::kReceiveMessage, Op::kClose}) {
    for (int nth = 1; nth <= 2; ++nth) {
      const std::string context = std::string(OpName(op)) + " #" + std::to_string(nth);
      ASSERT_TRUE(received.Send(300)) << context;
      open_fds = OpenFds();
      // The receiver: its second ReceiveMessage fails after the first batch's fds arrived, and closing them fails.
      FaultyOps ops(op == Op::kClose ? std::vector<Fault>{{Op::kReceiveMessage, 2, ENOMEM}, {op, nth, EIO}}
                                     : std::vector<Fault>{{op, nth, ENOMEM}});
      const Status s = ReceiveWorld(received.socket(), &out, {}, nullptr, ops);
      EXPECT_EQ(s.code, Errno(ENOMEM)) << context << ": " << s.message;
      EXPECT_EQ(s.message, "hand-off: receive fds: Cannot allocate memory") << context;
      CheckReceive(out, false, open_fds, 0, context);
      if (op == Op::kClose) {
        EXPECT_EQ(ops.calls(Op::kClose), 253) << "every fd of the first batch is closed";
      }
    }
  }
  // The sender's side: its sendmsg of each batch fails in turn.
  for (int nth = 1; nth <= 2; ++nth) {
    Scene scene;
    ASSERT_TRUE(scene.Build());
    for (int i = 0; i < 300; ++i) {
      const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      Result<std::shared_ptr<HostFile>> h = HostFile::Create(fd);
      ASSERT_TRUE(h.ok());
      ASSERT_FALSE(scene.world.fds.InstallAt(fd, h.value()));
    }
    Channel channel;
    ASSERT_TRUE(channel.Open());
    // The socket's buffer may not take 305 fds' worth at once: the receiver reads in a thread.
    const int before = OpenFds();
    FaultyOps ops({{Op::kSendMessage, nth, EMSGSIZE}});
    std::thread drain([&] {
      char buf[4096];
      while (recv(channel.s[1], buf, sizeof buf, 0) > 0) {
      }
    });
    const Status s = SendWorld(channel.s[0], scene.world, ops);
    shutdown(channel.s[0], SHUT_WR);
    drain.join();
    EXPECT_EQ(s.code, Errno(EMSGSIZE)) << "sendmsg #" << nth;
    EXPECT_EQ(s.message, "hand-off: send fds: Message too long");
    EXPECT_EQ(OpenFds(), before);
    EXPECT_EQ(scene.world.fds.Count(), 305);
  }
}

TEST(HandoffFaultTest, ShortSendsAndReceivesAndFdsInOtherPiecesAreCarriedOn) {
  for (const std::size_t cap : {std::size_t{1}, std::size_t{7}, std::size_t{600}}) {
    for (const bool split : {false, true}) {
      const std::string context = "at most " + std::to_string(cap) + " bytes a call" + (split ? ", fds split" : "");
      Received received;
      ASSERT_TRUE(received.Send(300)) << context;
      const int open_fds = OpenFds();
      World out;
      FaultyOps ops({}, cap);
      if (split) ops.SplitFds();
      const Status s = ReceiveWorld(received.socket(), &out, {}, nullptr, ops);
      ASSERT_FALSE(s) << context << ": " << s.message;
      EXPECT_EQ(ops.held(), 0u) << context;
      EXPECT_GE(ops.calls(Op::kReceiveMessage), 2 * static_cast<int>((4 + 4 * 253 + cap - 1) / cap)) << context;
      CheckReceive(out, true, open_fds, received.expected_fds(), context);
    }
  }
  // The sender's sendmsg takes only part of a batch: the rest follows as plain data.
  for (const std::size_t cap : {std::size_t{1}, std::size_t{5}, std::size_t{1000}}) {
    Scene scene;
    ASSERT_TRUE(scene.Build());
    Channel channel;
    ASSERT_TRUE(channel.Open());
    FaultyOps ops({{Op::kSendMessage, 1, 0, cap}});
    ASSERT_FALSE(SendWorld(channel.s[0], scene.world, ops));
    EXPECT_EQ(ops.calls(Op::kSendMessage), 1);
    World out;
    const Status s = ReceiveWorld(channel.s[1], &out);
    ASSERT_FALSE(s) << "sendmsg of " << cap << " bytes: " << s.message;
    ExpectRestored(out, "sendmsg of " + std::to_string(cap) + " bytes");
  }
}

// fds missing from, or added to, a batch, and a truncated control message: reported, and every fd received is closed.
class Tampering final : public HandoffOps {
 public:
  enum class What { kDropOne, kAddOne, kTruncated };
  explicit Tampering(What what) : what_(what) {}
  std::error_code GetFdFlags(int fd, int* flags) override { return real_.GetFdFlags(fd, flags); }
  std::error_code SetFdFlags(int fd, int flags) override { return real_.SetFdFlags(fd, flags); }
  std::error_code Send(int s, const char* d, std::size_t n, std::size_t* done) override {
    return real_.Send(s, d, n, done);
  }
  std::error_code Receive(int s, char* d, std::size_t n, std::size_t* done) override {
    return real_.Receive(s, d, n, done);
  }
  std::error_code SendMessage(int s, const msghdr& m, std::size_t* done) override {
    return real_.SendMessage(s, m, done);
  }
  std::error_code ReceiveMessage(int socket, msghdr* msg, std::size_t* done) override {
    const std::error_code ec = real_.ReceiveMessage(socket, msg, done);
    cmsghdr* c = CMSG_FIRSTHDR(msg);
    if (ec || c == nullptr) return ec;
    const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    switch (what_) {
      case What::kDropOne: {  // the last fd is lost on the way (closed here)
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (k - 1), sizeof fd);
        ::close(fd);
        c->cmsg_len = CMSG_LEN(sizeof(int) * (k - 1));
        break;
      }
      case What::kAddOne: {  // one fd too many
        const int extra = ::eventfd(0, EFD_CLOEXEC);
        std::memcpy(CMSG_DATA(c) + sizeof(int) * k, &extra, sizeof extra);
        c->cmsg_len = CMSG_LEN(sizeof(int) * (k + 1));
        msg->msg_controllen = CMSG_SPACE(sizeof(int) * (k + 1));
        break;
      }
      case What::kTruncated:
        msg->msg_flags |= MSG_CTRUNC;
        break;
    }
    return ec;
  }
  std::error_code Close(int fd) override { return real_.Close(fd); }
  image::FileOps& Files() override { return real_.Files(); }

 private:
  What what_;
  HandoffOps& real_ = DefaultHandoffOps();
};

TEST(HandoffFaultTest, AWrongNumberOfFdsOrATruncatedControlMessageClosesEveryFd) {
  const std::pair<Tampering::What, std::string> cases[] = {
      {Tampering::What::kDropOne, "hand-off: receive fds: 4 fds where 5 were announced"},
      {Tampering::What::kAddOne, "hand-off: receive fds: 6 fds where 5 were announced"},
      {Tampering::What::kTruncated, "hand-off: receive fds: the control message was truncated (out of fds?)"},
  };
  for (const auto& [what, message] : cases) {
    Received received;
    ASSERT_TRUE(received.Send());
    const int open_fds = OpenFds();
    World out;
    Tampering ops(what);
    const Status s = ReceiveWorld(received.socket(), &out, {}, nullptr, ops);
    EXPECT_EQ(s.message, message);
    CheckReceive(out, false, open_fds, 0, message);
  }
}

}  // namespace
}  // namespace epollcr::restore
