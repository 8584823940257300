// Fault injection for the hand-off (restore/handoff.h): every system call PrepareExec, RestoreAfterExec, SendWorld
// and ReceiveWorld make — the points kHandoff* and, for the image file, kImage* of lib/src/fault_injection.h — is
// failed in turn (the Nth call of each kind, with an errno that call really returns), then interrupted (EINTR) in
// turn. A failure is reported with the step and the errno and leaves nothing behind: no fd opened or closed,
// FD_CLOEXEC as it was on every fd, the target world empty, no host file left owning an fd; an
// interrupted call is retried and the hand-off completes. Short sends and receives, and fds that arrive in other
// pieces than they were sent in, are carried on with.

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
#include "temp_dir.h"

namespace epollcr::restore {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::HandOver;
using testing::OpenFds;

using epollcr::testing::FaultPlan;
using epollcr::testing::FaultPoint;
using Op = FaultPoint;

std::string OpName(Op op) { return std::string(epollcr::testing::FaultPointName(op)); }

// An errno each call really returns (fcntl F_GETFD/F_SETFD: only EBADF; send: EAGAIN on a send timeout; sendmsg:
// EMSGSIZE; recv: ECONNRESET; recvmsg: ENOMEM; the image file: see image_fault_test.cc).
int RealisticErrno(Op op) {
  switch (op) {
    case Op::kHandoffGetFdFlags: return EBADF;
    case Op::kHandoffSetFdFlags: return EBADF;
    case Op::kHandoffSend: return EAGAIN;
    case Op::kHandoffReceive: return ECONNRESET;
    case Op::kHandoffSendMessage: return EMSGSIZE;
    case Op::kHandoffReceiveMessage: return ENOMEM;
    case Op::kHandoffClose: return EIO;
    case Op::kImageOpenDirectory: return EACCES;
    case Op::kImageOpen: return EACCES;
    case Op::kImageWrite: return ENOSPC;
    case Op::kImageRead: return EIO;
    case Op::kImageFsync: return EIO;
    case Op::kImageFstat: return EIO;
    case Op::kImageClose: return EIO;
    case Op::kImageRename: return EXDEV;
    case Op::kImageUnlink: return EACCES;
    default: return EIO;  // not a call of the hand-off's
  }
}

std::error_code Errno(int e) { return {e, std::generic_category()}; }

using Fault = epollcr::testing::PlannedFault;

// The real calls, except the planned faults (fault_plan.h). Records every call; caps the data of every transfer at
// `max_transfer` bytes (so short sends and receives are the rule). With SplitFds(), a recvmsg that brings more than
// one fd passes on only the first, and the others with the next recvmsg: fds in other pieces than they were sent in.
class FaultyCalls final : public FaultPlan {
 public:
  explicit FaultyCalls(std::vector<Fault> faults = {},
                       std::size_t max_transfer = std::numeric_limits<std::size_t>::max())
      : FaultPlan(std::move(faults), max_transfer) {}
  ~FaultyCalls() {
    for (int fd : held_) ::close(fd);
  }

  void SplitFds() {
    OnReceivedMessage([this](msghdr* msg) { Split(msg); });
  }
  std::size_t held() const { return held_.size(); }

 private:
  void Split(msghdr* msg) {
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
      return;
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
  }

  std::vector<int> held_;  // received fds not handed on yet (closed with the plan)
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
  if (op == Op::kHandoffClose) return false;
  if (op == Op::kImageClose) return writing && nth == 1;
  return true;
}

// Whether `op` can report EINTR (and the hand-off must then call it again). fstat, rename, unlink and fcntl
// F_GETFD/F_SETFD do not block and are never interrupted; close(2) can be, and then has closed the fd anyway.
bool Interruptible(Op op) {
  switch (op) {
    case Op::kHandoffGetFdFlags:
    case Op::kHandoffSetFdFlags:
    case Op::kImageFstat:
    case Op::kImageRename:
    case Op::kImageUnlink: return false;
    default: return true;
  }
}

// The words a failure of `op` is reported with.
std::string StepOf(Op op, bool writing) {
  switch (op) {
    case Op::kHandoffGetFdFlags: return "(fcntl F_GETFD)";
    case Op::kHandoffSetFdFlags: return "(fcntl F_SETFD)";
    case Op::kHandoffSend: return "hand-off: send ";
    case Op::kHandoffReceive: return "hand-off: receive ";
    case Op::kHandoffSendMessage: return "hand-off: send fds: ";
    case Op::kHandoffReceiveMessage: return "hand-off: receive fds: ";
    default: return writing ? "hand-off: write the image: " : "hand-off: read the image: ";
  }
}

// Runs `call` with no fault (it must succeed), then once for every call it made failing with RealisticErrno and
// (if it can be) once with it interrupted, each under its fault plan. `prepare` readies one run (false: give up);
// `check` checks what a run left, given whether it was to succeed.
template <typename Call, typename Check>
void EveryCallFailingInTurn(const std::string& name, bool writing, std::size_t max_transfer,
                            const std::function<bool()>& prepare, Call call, Check check) {
  std::vector<Op> trace;
  std::map<Op, int> total;
  {
    ASSERT_TRUE(prepare());
    Status s;
    {
      FaultyCalls counting({}, max_transfer);
      s = call();
      trace = counting.trace();
    }
    // The hand-off's own calls: the restore's batched calls and the kernel side's creation have fault tests of their own.
    std::erase_if(trace, [](Op op) { return op < Op::kImageOpenDirectory || op > Op::kHandoffClose; });
    ASSERT_TRUE(s.ok()) << name << " without faults: " << s.message;
    check(true, name + " without faults");
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
      Status s;
      int calls = 0;
      {
        FaultyCalls ops({{op, nth, error}}, max_transfer);
        s = call();
        calls = ops.calls(op);
      }
      const bool fails = error != EINTR && Reported(op, nth, writing);
      if (fails) {
        EXPECT_FALSE(s.ok()) << context << " was not reported";
        EXPECT_EQ(s.code, Errno(error)) << context << ": " << s.message;
        EXPECT_THAT(s.message, StartsWith("hand-off: ")) << context;
        EXPECT_THAT(s.message, HasSubstr(StepOf(op, writing))) << context;
        EXPECT_THAT(s.message, HasSubstr(std::string(": ") + std::strerror(error))) << context;
      } else {
        EXPECT_TRUE(s.ok()) << context << ": " << s.message;
      }
      check(!fails, context);
      if (error == EINTR) {  // called again, except close(2), which must not be
        const bool close = op == Op::kHandoffClose || op == Op::kImageClose;
        EXPECT_EQ(calls, total[op] + (close ? 0 : 1)) << context;
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
  const std::size_t watched = HostFile::WrappedFds();
  int open_fds = 0;

  EveryCallFailingInTurn(
      "PrepareExec", /*writing=*/true, /*max_transfer=*/100,
      [&] {
        unlink(path.c_str());
        for (std::size_t i = 0; i < fds.size(); ++i) fcntl(fds[i], F_SETFD, flags[i]);
        open_fds = OpenFds();
        return FdFlagsOf(fds) == flags;
      },
      [&] {
        Result<std::vector<int>> kept = PrepareExec(scene.world, path);
        if (kept.ok()) {
          EXPECT_EQ(kept.value(), fds);
        }
        return kept.status();
      },
      [&](bool succeeded, const std::string& context) {
        EXPECT_EQ(OpenFds(), open_fds) << context;
        EXPECT_EQ(HostFile::WrappedFds(), watched) << context;
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
    FaultyCalls ops({{Op::kImageFsync, 2, EIO}});  // the directory's, after the rename
    Result<std::vector<int>> kept = PrepareExec(scene.world, path);
    EXPECT_EQ(kept.status().code, Errno(EIO));
    EXPECT_THAT(kept.status().message, HasSubstr(path + " holds the new image"));
    EXPECT_EQ(FdFlagsOf(scene.Watched()), std::vector<int>(5, FD_CLOEXEC));
  }
  {
    // The third fd cannot be changed, and the first one's flags cannot be put back: both are said.
    FaultyCalls ops({{Op::kHandoffSetFdFlags, 3, EBADF}, {Op::kHandoffSetFdFlags, 4, EBADF}});
    Result<std::vector<int>> kept = PrepareExec(scene.world, path);
    EXPECT_EQ(kept.status().code, Errno(EBADF));
    const std::vector<int> fds = scene.Watched();
    EXPECT_EQ(kept.status().message,
              "hand-off: clear FD_CLOEXEC on fd " + std::to_string(fds[2]) +
                  " (fcntl F_SETFD): Bad file descriptor; putting back FD_CLOEXEC of fd " + std::to_string(fds[0]) +
                  " also failed: Bad file descriptor");
    EXPECT_EQ(FdFlagsOf(fds), (std::vector<int>{0, FD_CLOEXEC, FD_CLOEXEC, FD_CLOEXEC, FD_CLOEXEC}));
  }
  {
    // The temporary file cannot be written, nor removed: both are said, and the flags are put back.
    ASSERT_EQ(fcntl(scene.Watched()[0], F_SETFD, FD_CLOEXEC), 0);
    FaultyCalls ops({{Op::kImageWrite, 1, ENOSPC}, {Op::kImageUnlink, 1, EACCES}});
    Result<std::vector<int>> kept = PrepareExec(scene.world, dir.File("other.epcr"));
    EXPECT_EQ(kept.status().code, Errno(ENOSPC));
    EXPECT_THAT(kept.status().message, StartsWith("hand-off: write the image: write "));
    EXPECT_THAT(kept.status().message, HasSubstr("No space left on device; removing "));
    EXPECT_THAT(kept.status().message, HasSubstr(" also failed: Permission denied"));
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
    Result<std::vector<int>> kept = PrepareExec(scene.world, path);
    ASSERT_TRUE(kept.ok()) << kept.status().message;
    fds = kept.value();
    HandOver(&scene.world);  // the fds are now "inherited": open, without FD_CLOEXEC, owned by nobody
    for (const int* p : {scene.f.a, scene.f.b, scene.f.c, scene.f.d}) peers.push_back(dup(p[1]));  // data stays
  }
  ASSERT_EQ(HostFile::WrappedFds(), 0u);
  World out;
  int open_fds = 0;

  EveryCallFailingInTurn(
      "RestoreAfterExec", /*writing=*/false, /*max_transfer=*/100,
      [&] {
        HandOver(&out);
        for (int fd : fds) fcntl(fd, F_SETFD, 0);
        open_fds = OpenFds();
        return HostFile::WrappedFds() == 0;
      },
      [&] { return RestoreAfterExec(path, &out, {}, nullptr); },
      [&](bool succeeded, const std::string& context) {
        if (succeeded) {
          ExpectRestored(out, context);
          EXPECT_EQ(HostFile::WrappedFds(), 5u) << context;
          EXPECT_EQ(FdFlagsOf(fds), std::vector<int>(fds.size(), FD_CLOEXEC)) << context;
          HandOver(&out);  // and the polls' kernel epolls go with it
          EXPECT_EQ(OpenFds(), open_fds) << context;
        } else {
          EXPECT_EQ(OpenFds(), open_fds) << context;
          EXPECT_EQ(out.fds.Count(), 0) << context;
          EXPECT_TRUE(out.roots.empty()) << context;
          EXPECT_EQ(HostFile::WrappedFds(), 0u) << context;
          EXPECT_EQ(FdFlagsOf(fds), std::vector<int>(fds.size(), 0)) << context << ": flags changed, or an fd closed";
        }
      });
  HandOver(&out);
  for (int fd : fds) close(fd);
  for (int fd : peers) close(fd);
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
      [&] { return SendWorld(channel->s[0], scene.world); },
      [&](bool succeeded, const std::string& context) {
        EXPECT_EQ(OpenFds(), open_fds + 2) << context << ": the sender opens or closes an fd";
        EXPECT_EQ(HostFile::WrappedFds(), 5u) << context;
        EXPECT_EQ(scene.world.fds.Count(), 5) << context;
        EXPECT_EQ(FdFlagsOf(scene.Watched()), flags) << context;
        if (!succeeded) return;
        shutdown(channel->s[0], SHUT_WR);  // all is sent: a receive that wants more fails instead of waiting
        World out;
        const Status s = ReceiveWorld(channel->s[1], &out);
        ASSERT_TRUE(s.ok()) << context << ": what was sent does not restore: " << s.message;
        ExpectRestored(out, context);
      });
  channel.reset();
  EXPECT_EQ(OpenFds(), open_fds);
}

// The receiver's side: each run gets a world sent afresh (by the real calls) whose sender has gone, so no host file
// owns an fd before the receive.
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
    if (!SendWorld(channel_->s[0], scene.world).ok()) return false;
    shutdown(channel_->s[0], SHUT_WR);  // all is sent: a receive that wants more fails instead of waiting
    return true;  // the scene goes: its fds close (the sent ones travel on)
  }
  int socket() const { return channel_->s[1]; }
  int expected_fds() const { return expected_fds_; }

 private:
  std::unique_ptr<Channel> channel_;
  int expected_fds_ = 0;
};

// After a receive: what it restored (then released: the received fds close), or that it left
// nothing behind.
void CheckReceive(World& out, bool succeeded, int open_fds, int expected_fds, const std::string& context) {
  if (succeeded) {
    ExpectRestored(out, context, static_cast<std::size_t>(expected_fds) - 5);
    EXPECT_EQ(out.fds.Count(), expected_fds) << context;
    EXPECT_EQ(HostFile::WrappedFds(), static_cast<std::size_t>(expected_fds)) << context;
    for (int fd : HostFds(out)) EXPECT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC) << context << ": fd " << fd;
    out.roots.clear();
    out.fds.Clear();
    EXPECT_EQ(OpenFds(), open_fds) << context;
    return;
  }
  EXPECT_EQ(out.fds.Count(), 0) << context;
  EXPECT_TRUE(out.roots.empty()) << context;
  EXPECT_EQ(OpenFds(), open_fds) << context << ": a received fd was left open";
  EXPECT_EQ(HostFile::WrappedFds(), 0u) << context;
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
        return HostFile::WrappedFds() == 0;
      },
      [&] { return ReceiveWorld(received.socket(), &out, {}, nullptr); },
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
  for (const Op op : {Op::kHandoffReceiveMessage, Op::kHandoffClose}) {
    for (int nth = 1; nth <= 2; ++nth) {
      const std::string context = std::string(OpName(op)) + " #" + std::to_string(nth);
      ASSERT_TRUE(received.Send(300)) << context;
      open_fds = OpenFds();
      // The receiver: its second ReceiveMessage fails after the first batch's fds arrived, and closing them fails.
      FaultyCalls ops(op == Op::kHandoffClose
                          ? std::vector<Fault>{{Op::kHandoffReceiveMessage, 2, ENOMEM}, {op, nth, EIO}}
                          : std::vector<Fault>{{op, nth, ENOMEM}});
      const Status s = ReceiveWorld(received.socket(), &out, {}, nullptr);
      EXPECT_EQ(s.code, Errno(ENOMEM)) << context << ": " << s.message;
      EXPECT_EQ(s.message, "hand-off: receive fds: Cannot allocate memory") << context;
      CheckReceive(out, false, open_fds, 0, context);
      if (op == Op::kHandoffClose) {
        EXPECT_EQ(ops.calls(Op::kHandoffClose), 253) << "every fd of the first batch is closed";
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
    FaultyCalls ops({{Op::kHandoffSendMessage, nth, EMSGSIZE}});
    std::thread drain([&] {
      char buf[4096];
      while (recv(channel.s[1], buf, sizeof buf, 0) > 0) {
      }
    });
    const Status s = SendWorld(channel.s[0], scene.world);
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
      FaultyCalls ops({}, cap);
      if (split) ops.SplitFds();
      const Status s = ReceiveWorld(received.socket(), &out, {}, nullptr);
      ASSERT_TRUE(s.ok()) << context << ": " << s.message;
      EXPECT_EQ(ops.held(), 0u) << context;
      EXPECT_GE(ops.calls(Op::kHandoffReceiveMessage), 2 * static_cast<int>((4 + 4 * 253 + cap - 1) / cap)) << context;
      CheckReceive(out, true, open_fds, received.expected_fds(), context);
    }
  }
  // The sender's sendmsg takes only part of a batch: the rest follows as plain data.
  for (const std::size_t cap : {std::size_t{1}, std::size_t{5}, std::size_t{1000}}) {
    Scene scene;
    ASSERT_TRUE(scene.Build());
    Channel channel;
    ASSERT_TRUE(channel.Open());
    FaultyCalls ops({{Op::kHandoffSendMessage, 1, 0, cap}});
    ASSERT_TRUE(SendWorld(channel.s[0], scene.world).ok());
    EXPECT_EQ(ops.calls(Op::kHandoffSendMessage), 1);
    World out;
    const Status s = ReceiveWorld(channel.s[1], &out);
    ASSERT_TRUE(s.ok()) << "sendmsg of " << cap << " bytes: " << s.message;
    ExpectRestored(out, "sendmsg of " + std::to_string(cap) + " bytes");
  }
}

// fds missing from, or added to, a batch, and a truncated control message: reported, and every fd received is closed.
enum class Tampering { kDropOne, kAddOne, kTruncated };

// Changes what a recvmsg delivered (kHandoffReceivedMessage), when it brought fds.
void Tamper(Tampering what, msghdr* msg) {
  cmsghdr* c = CMSG_FIRSTHDR(msg);
  if (c == nullptr) return;
  const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
  switch (what) {
    case Tampering::kDropOne: {  // the last fd is lost on the way (closed here)
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * (k - 1), sizeof fd);
      ::close(fd);
      c->cmsg_len = CMSG_LEN(sizeof(int) * (k - 1));
      break;
    }
    case Tampering::kAddOne: {  // one fd too many
      const int extra = ::eventfd(0, EFD_CLOEXEC);
      std::memcpy(CMSG_DATA(c) + sizeof(int) * k, &extra, sizeof extra);
      c->cmsg_len = CMSG_LEN(sizeof(int) * (k + 1));
      msg->msg_controllen = CMSG_SPACE(sizeof(int) * (k + 1));
      break;
    }
    case Tampering::kTruncated:
      msg->msg_flags |= MSG_CTRUNC;
      break;
  }
}

TEST(HandoffFaultTest, AWrongNumberOfFdsOrATruncatedControlMessageClosesEveryFd) {
  const std::pair<Tampering, std::string> cases[] = {
      {Tampering::kDropOne, "hand-off: receive fds: 4 fds where 5 were announced"},
      {Tampering::kAddOne, "hand-off: receive fds: 6 fds where 5 were announced"},
      {Tampering::kTruncated, "hand-off: receive fds: the control message was truncated (out of fds?)"},
  };
  for (const auto& [what, message] : cases) {
    Received received;
    ASSERT_TRUE(received.Send());
    const int open_fds = OpenFds();
    World out;
    Status s;
    {
      FaultPlan tampering;
      const Tampering how = what;  // named: clang 14 cannot capture a structured binding
      tampering.OnReceivedMessage([how](msghdr* msg) { Tamper(how, msg); });
      s = ReceiveWorld(received.socket(), &out, {}, nullptr);
    }
    EXPECT_EQ(s.message, message);
    CheckReceive(out, false, open_fds, 0, message);
  }
}

}  // namespace
}  // namespace epollcr::restore
