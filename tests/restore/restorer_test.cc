// The restorer (restore/restorer.h, resolvers.h, handoff.h) and host files (epollcr/host_file.h): a world of real
// sockets restored in this process, after exec, and in another process over SCM_RIGHTS reports what the kernel's
// epoll reports for the same operations (host_scenario.h); strict and prune; identity checks; re-keying; and a failed
// restore leaves no file, no waiter and no fd behind.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "fault_injection.h"
#include "host_scenario.h"
#include "restore/handoff.h"
#include "restore/successor.h"
#include "image/codec.h"
#include "restore/resolvers.h"
#include "syscall_batch.h"
#include "temp_dir.h"

namespace epollcr::restore {
namespace {

using ::testing::HasSubstr;
using testing::EpollcrSide;
using testing::HandOver;
using testing::OpenFds;
using testing::HostFds;
using testing::KernelSide;

Options With(Policy policy, std::vector<Resolver*> resolvers) {
  Options o;
  o.policy = policy;
  o.resolvers = std::move(resolvers);
  return o;
}


std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// What the kernel reports for the whole scenario (optionally with b's registration deleted before the after part).
std::vector<std::string> KernelLines(bool without_b = false) {
  HostFds k;
  EXPECT_TRUE(k.Open());
  KernelSide kernel;
  EXPECT_EQ(testing::PlayBefore(kernel.Side(), k), "data=4 events=in");
  if (without_b) epoll_ctl(kernel.outer, EPOLL_CTL_DEL, k.b[0], nullptr);
  std::vector<std::string> lines = testing::PlayAfter(kernel.Side(), k.c[0]);
  for (int* p : {k.a, k.b, k.c, k.d}) close(p[0]), close(p[1]);
  close(k.e);
  return lines;
}


class RestorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(f_.Open(/*base=*/700));
    ASSERT_TRUE(testing::BuildHostWorld(&world_, f_));
    EpollcrSide side{&world_};
    ASSERT_EQ(testing::PlayBefore(side.Side(), f_), "data=4 events=in");
    Result<v1::Image> image = image::Capture(world_);
    ASSERT_TRUE(image.ok()) << image.status().message;
    image_ = image.value();
    HandOver(&world_);
  }
  void TearDown() override {
    restored_.roots.clear();
    restored_.fds.Clear();
    for (int* p : {f_.a, f_.b, f_.c, f_.d}) close(p[0]), close(p[1]);
    close(f_.e);
    EXPECT_EQ(HostFile::WrappedFds(), 0u);
  }
  // Restores with the given resolvers and policy and expects it to fail with `message`, leaving nothing behind.
  void ExpectFailure(Options options, const std::string& message) {
    const int fds = OpenFds();
    const long files = File::LiveFiles();
    Status s = Restore(image_, &restored_, options);
    EXPECT_FALSE(s.ok()) << "the restore should have failed";
    EXPECT_THAT(s.message, HasSubstr(message));
    EXPECT_EQ(restored_.fds.Count(), 0);
    EXPECT_TRUE(restored_.roots.empty());
    EXPECT_EQ(File::LiveFiles(), files);
    EXPECT_EQ(OpenFds(), fds) << "a failed restore closes no fd it did not open and leaks none";
    EXPECT_EQ(HostFile::WrappedFds(), 0u);
  }

  HostFds f_;
  World world_, restored_;
  v1::Image image_;
};

TEST_F(RestorerTest, InheritedFdsRestoreToWhatTheKernelReports) {
  InheritedFdResolver inherited;
  Report report;
  Status s = Restore(image_, &restored_, With(Policy::kStrict, {&inherited}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.host_files, 5u);
  EXPECT_EQ(report.polls, 2u);
  EXPECT_EQ(report.entries, 6u);
  EXPECT_EQ(report.rekeyed, 0u);
  EXPECT_THAT(report.ToString(), HasSubstr("restored 7 files (5 host, 0 re-keyed), 2 polls, 6 entries"));
  EpollcrSide side{&restored_};
  EXPECT_EQ(testing::PlayAfter(side.Side(), side.FdOfC()), KernelLines());
  EXPECT_EQ(HostFile::WrappedFds(), 5u);
}

TEST_F(RestorerTest, AnFdOfAnotherFileIsAnIdentityMismatchNamingBoth) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(dup2(p[0], f_.b[0]), f_.b[0]);  // b's number now names a pipe
  close(p[0]);
  close(p[1]);
  InheritedFdResolver inherited;
  ExpectFailure(With(Policy::kStrict, {&inherited}),
                "(host fd " + std::to_string(f_.b[0]) + ", socket dev ");
  ExpectFailure(With(Policy::kStrict, {&inherited}),
                ": fd " + std::to_string(f_.b[0]) + " is fifo dev ");
  ExpectFailure(With(Policy::kStrict, {&inherited}), "in this process, but the image recorded socket dev ");
}

TEST_F(RestorerTest, AMissingFdFailsStrictAndIsPrunedWithAReport) {
  ASSERT_EQ(close(f_.b[0]), 0);
  InheritedFdResolver inherited;
  ExpectFailure(With(Policy::kStrict, {&inherited}), "fd " + std::to_string(f_.b[0]) + " is not open in this process");

  Report report;
  Status s = Restore(image_, &restored_, With(Policy::kPrune, {&inherited}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  ASSERT_EQ(report.pruned.size(), 1u);
  EXPECT_EQ(report.pruned[0].entries, 1u);
  EXPECT_EQ(report.pruned[0].fds, 1u);
  EXPECT_THAT(report.pruned[0].reason, HasSubstr("is not open in this process"));
  EXPECT_THAT(report.ToString(), HasSubstr("pruned file "));
  EXPECT_EQ(report.entries, 5u);
  EpollcrSide side{&restored_};
  EXPECT_EQ(testing::PlayAfter(side.Side(), side.FdOfC()), KernelLines(/*without_b=*/true));
  f_.b[0] = socket(AF_UNIX, SOCK_STREAM, 0);  // for TearDown
}

TEST_F(RestorerTest, EntriesFollowTheFdNumbersOfThisProcess) {
  std::map<int, int> moved;
  for (int fd : {f_.a[0], f_.b[0], f_.c[0], f_.d[0], f_.e}) {
    moved[fd] = fcntl(fd, F_DUPFD_CLOEXEC, 900);
    ASSERT_GE(moved[fd], 900);
  }
  InheritedFdResolver inherited(moved);
  Report report;
  Status s = Restore(image_, &restored_, With(Policy::kStrict, {&inherited}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.rekeyed, 5u);
  const int c = moved[f_.c[0]];
  EXPECT_EQ(restored_.fds.Get(f_.c[0]), nullptr);
  ASSERT_NE(restored_.fds.Get(c), nullptr);
  auto outer = std::static_pointer_cast<EventPoll>(restored_.roots.at("outer"));
  File* file = restored_.fds.Get(c).get();
  EXPECT_EQ(outer->UpdateEntry({file, f_.c[0]}, EntryFlags::kNone, kEventIn, 4), Errno(ENOENT));
  EXPECT_EQ(outer->RemoveEntry({file, c}), std::error_code());
  EXPECT_EQ(outer->EntryCount(), 4u);
  // The restored files own the new numbers; the old ones are still the test's.
  restored_.roots.clear();
  restored_.fds.Clear();
  EXPECT_EQ(fcntl(c, F_GETFD), -1);
  EXPECT_NE(fcntl(f_.c[0], F_GETFD), -1);
}

TEST_F(RestorerTest, ANewNumberThatTheImageGivesToAnotherFileIsAnError) {
  v1::FdEntry* slot = image_.add_fds();  // the image gives fd 990 to the outer poll (host fds are 700 ... 704)
  slot->set_fd(990);
  for (const v1::Root& r : image_.roots()) {
    if (r.name() == "outer") slot->set_file(r.file());
  }
  ASSERT_EQ(dup2(f_.c[0], 990), 990);  // and c arrives as fd 990 in this process
  std::map<int, int> moved{{f_.a[0], f_.a[0]}, {f_.b[0], f_.b[0]}, {f_.c[0], 990}, {f_.d[0], f_.d[0]}, {f_.e, f_.e}};
  InheritedFdResolver collide(moved);
  ExpectFailure(With(Policy::kStrict, {&collide}), "fd 990 is host file ");
  ExpectFailure(With(Policy::kStrict, {&collide}), "but the image gives that fd number to file ");
  close(990);
}

TEST_F(RestorerTest, ARegistryResolvesByRootNameAndOthersFallThrough) {
  const int mine = fcntl(f_.c[0], F_DUPFD_CLOEXEC, 0);
  Result<std::shared_ptr<HostFile>> c = HostFile::Create(mine);
  ASSERT_TRUE(c.ok());
  RegistryResolver registry;
  registry.Add("c", c.value());
  InheritedFdResolver inherited;
  Report report;
  Status s = Restore(image_, &restored_, With(Policy::kStrict, {&registry, &inherited}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.rekeyed, 1u);
  EXPECT_EQ(restored_.roots.at("c"), c.value());
  EXPECT_EQ(restored_.fds.Get(mine), c.value());
  EpollcrSide side{&restored_};
  EXPECT_EQ(testing::PlayAfter(side.Side(), side.FdOfC()), KernelLines());
}

TEST_F(RestorerTest, AFailureToRegisterAKernelEntryAfterTheBuildUndoesEverything) {
  // A resolver hands out, for a (level-triggered, so registered at once), a host file whose fd is /dev/null (which the kernel's epoll refuses with EPERM) under
  // the type the image recorded: the build goes through, and the kernel registration in after_load fails. The restore
  // must undo all of it.
  UniqueFd null_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null_fd.valid());
  struct Twin : Resolver {
    int fd;
    int null_fd;
    std::shared_ptr<HostFile> made;
    Resolution Resolve(const FileReference& ref) override {
      if (ref.host == nullptr || ref.host->fd() != fd) return Resolution::NotMine();
      Result<std::shared_ptr<HostFile>> wrapped = HostFile::Wrap(null_fd, S_IFSOCK);
      if (!wrapped.ok()) return Resolution::Unresolved(wrapped.error().message());
      made = wrapped.value();
      Resolution r;
      r.outcome = Resolution::Outcome::kResolved;
      r.file = made;
      r.created = true;
      return r;
    }
  } twin;
  twin.fd = f_.a[0];
  twin.null_fd = null_fd.get();
  InheritedFdResolver inherited;
  const int fds = OpenFds();
  const long files = File::LiveFiles();
  Status s = Restore(image_, &restored_, With(Policy::kStrict, {&twin, &inherited}));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message, HasSubstr("kernel registration failed"));
  EXPECT_EQ(restored_.fds.Count(), 0);
  EXPECT_TRUE(restored_.roots.empty());
  EXPECT_EQ(OpenFds(), fds);
  ASSERT_NE(twin.made, nullptr);
  EXPECT_EQ(twin.made->fd(), -1) << "the failed restore gave the fd back";
  EXPECT_NE(fcntl(null_fd.get(), F_GETFD), -1) << "the restorer closes no fd it did not open";
  twin.made.reset();
  EXPECT_EQ(File::LiveFiles(), files);
  EXPECT_EQ(HostFile::WrappedFds(), 0u);
}

TEST_F(RestorerTest, AHostFileForAnFdAnotherOneOwnsIsRefused) {
  Result<std::shared_ptr<HostFile>> owner = HostFile::Create(f_.c[0]);
  ASSERT_TRUE(owner.ok());
  EXPECT_EQ(HostFile::Create(f_.c[0]).error(), Errno(EEXIST));
  InheritedFdResolver inherited;
  const int fds = OpenFds();
  Status s = Restore(image_, &restored_, With(Policy::kStrict, {&inherited}));
  EXPECT_THAT(s.message, HasSubstr("fd " + std::to_string(f_.c[0]) + ": File exists"));
  EXPECT_EQ(restored_.fds.Count(), 0);
  EXPECT_EQ(OpenFds(), fds);
  EXPECT_EQ(HostFile::WrappedFds(), 1u) << "only the program's own host file";
  EXPECT_EQ(owner.value()->ReleaseFd(), f_.c[0]);
}

TEST_F(RestorerTest, NoResolverAtAllFailsStrictAndPrunesEverythingHost) {
  ExpectFailure(With(Policy::kStrict, {}), "no resolver has it");
  Report report;
  Status s = Restore(image_, &restored_, With(Policy::kPrune, {}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.pruned.size(), 5u);
  EXPECT_EQ(report.entries, 1u);  // outer -> inner is all that is left
  EXPECT_FALSE(restored_.roots.count("c"));
}

// A world big enough for the restore's system calls to go in batches (syscall_batch.h): 200 sockets, each watched
// by one EventPoll. Each fails in turn where the restore makes it — the identity check of the first, a middle and
// the last fd, the epoll_ctl(ADD) of the same into the poll's kernel epoll — and the restore says which fd and why, and leaves
// nothing behind; without a fault the same image restores whole.
class BatchedRestoreTest : public ::testing::Test {
 protected:
  static constexpr int kSockets = 200;
  void SetUp() override {
    auto poll = EventPoll::Create();
    world_.roots["poll"] = poll;
    for (int i = 0; i < kSockets / 2; ++i) {
      int p[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p), 0);
      for (int fd : p) {
        fds_.push_back(fd);
        Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
        ASSERT_TRUE(file.ok());
        ASSERT_FALSE(world_.fds.InstallAt(fd, file.value()));
        ASSERT_FALSE(poll->AddEntry({file.value().get(), fd}, EntryFlags{}, kEventIn, static_cast<std::uint64_t>(fd)));
      }
    }
    Result<v1::Image> image = image::Capture(world_);
    ASSERT_TRUE(image.ok()) << image.status().message;
    image_ = image.value();
    HandOver(&world_);
  }
  void TearDown() override {
    epollcr::testing::SetFaultHook({});
    restored_.roots.clear();
    restored_.fds.Clear();
    for (int fd : fds_) close(fd);
    EXPECT_EQ(HostFile::WrappedFds(), 0u);
  }

  std::vector<int> fds_;
  World world_, restored_;
  v1::Image image_;
};

using epollcr::testing::FaultPoint;

// Fails item `item` of the batches at `point` with ENOMEM.
epollcr::testing::FaultHook FailOne(FaultPoint point, std::size_t item) {
  return [point, item](const epollcr::testing::FaultCall& call) {
    return epollcr::testing::Fault{.error = call.point == point && call.item == item ? ENOMEM : 0};
  };
}

TEST_F(BatchedRestoreTest, EachFailedSystemCallFailsTheRestoreCleanly) {
  for (FaultPoint call : {FaultPoint::kBatchStat, FaultPoint::kBatchEpollAdd}) {
    for (std::size_t item : {std::size_t{0}, std::size_t{kSockets / 2 - 1}, std::size_t{kSockets - 1}}) {
      SCOPED_TRACE((call == FaultPoint::kBatchStat ? "statx of item " : "epoll_ctl ADD of item ") +
                   std::to_string(item));
      const int open = OpenFds();
      const long files = File::LiveFiles();
      InheritedFdResolver inherited;
      epollcr::testing::SetFaultHook(FailOne(call, item));
      Status s = Restore(image_, &restored_, With(Policy::kStrict, {&inherited}));
      epollcr::testing::SetFaultHook({});
      ASSERT_FALSE(s.ok()) << "the restore should have failed";
      if (call == FaultPoint::kBatchStat) {
        // The identity checks run in image order, which is fd order here.
        EXPECT_THAT(s.message, HasSubstr("fd " + std::to_string(fds_[item]) + " is not open in this process"));
      } else {
        EXPECT_THAT(s.message, HasSubstr(": " + std::error_code(ENOMEM, std::generic_category()).message()));
        EXPECT_THAT(s.message, HasSubstr("(host fd " + std::to_string(fds_[item]) + "): its kernel registration failed"));
      }
      EXPECT_EQ(restored_.fds.Count(), 0);
      EXPECT_TRUE(restored_.roots.empty());
      EXPECT_EQ(File::LiveFiles(), files);
      EXPECT_EQ(OpenFds(), open) << "no fd closed, none leaked";
      EXPECT_EQ(HostFile::WrappedFds(), 0u);
    }
  }
  // Every fd is still the caller's and still unwatched by any epoll: the image restores whole.
  InheritedFdResolver inherited;
  const sys::BatchCounts before = sys::Counts();
  Report report;
  Status s = Restore(image_, &restored_, With(Policy::kStrict, {&inherited}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.host_files, static_cast<std::uint64_t>(kSockets));
  EXPECT_EQ(report.entries, static_cast<std::uint64_t>(kSockets));
  EXPECT_EQ(HostFile::WrappedFds(), static_cast<std::size_t>(kSockets));
  const sys::BatchCounts after = sys::Counts();
  // Each of the two batches (statx, epoll_ctl ADD) took a ring or went one call at a time (in auto mode a kind not
  // measured yet runs some of its first items alone: syscall_batch.h); without a ring, every call went alone.
  const std::uint64_t rings = after.ring_batches - before.ring_batches;
  const std::uint64_t singles = after.single_calls - before.single_calls;
  EXPECT_LE(rings, 2u);
  EXPECT_LE(singles, 2u * kSockets);
  if (rings == 0) {
    EXPECT_EQ(singles, 2u * kSockets);
  }
  // A write to one socket reaches the restored poll through its kernel epoll, like any wake-up.
  const char byte = 'x';
  ASSERT_EQ(write(fds_[1], &byte, 1), 1);
  auto* poll = restored_.roots.at("poll")->AsEventPoll();
  std::vector<Event> events(4);
  Result<int> n = poll->Wait(events, 5000);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(n.value(), 1);
  EXPECT_EQ(events[0].data[0], static_cast<std::uint32_t>(fds_[0]));
}

TEST_F(BatchedRestoreTest, AFailedIdentityCheckIsPrunedUnderThePrunePolicy) {
  InheritedFdResolver inherited;
  Report report;
  epollcr::testing::SetFaultHook(FailOne(FaultPoint::kBatchStat, 7));
  Status s = Restore(image_, &restored_, With(Policy::kPrune, {&inherited}), &report);
  epollcr::testing::SetFaultHook({});
  ASSERT_TRUE(s.ok()) << s.message;
  ASSERT_EQ(report.pruned.size(), 1u);
  EXPECT_THAT(report.pruned[0].reason, HasSubstr("fd " + std::to_string(fds_[7]) + " is not open"));
  EXPECT_EQ(report.entries, static_cast<std::uint64_t>(kSockets - 1));
  EXPECT_EQ(HostFile::WrappedFds(), static_cast<std::size_t>(kSockets - 1));
}

TEST(EmbedderReferenceTest, AnUnregisteredKindFailsStrictAndIsPruned) {
  World w;
  v1::Image image;
  image.mutable_header()->set_format_major(image::kFormatMajor);
  v1::File* poll = image.add_files();
  poll->set_id(1);
  v1::EventPollState* p = poll->mutable_eventpoll();
  p->add_files(2);
  p->add_fds(5);
  p->add_events(kEventIn);
  p->add_data(7);
  p->add_lists(v1::ENTRY_LIST_WAITING);
  p->add_queue_ranks(0);
  v1::File* timer = image.add_files();
  timer->set_id(2);
  timer->mutable_embedder()->set_kind("restorer-test.unregistered");
  v1::FdEntry* fd = image.add_fds();
  fd->set_fd(5);
  fd->set_file(2);
  v1::Root* root = image.add_roots();
  root->set_name("poll");
  root->set_file(1);
  Status s = Restore(image, &w);
  EXPECT_THAT(s.message, HasSubstr("file 2 (embedder kind \"restorer-test.unregistered\"): embedder kind "
                                   "'restorer-test.unregistered' is not registered"));
  EXPECT_EQ(w.fds.Count(), 0);
  Report report;
  s = Restore(image, &w, With(Policy::kPrune, {}), &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.pruned.size(), 1u);
  EXPECT_EQ(w.fds.Count(), 0);
  EXPECT_EQ(std::static_pointer_cast<EventPoll>(w.roots.at("poll"))->EntryCount(), 0u);
}

// ---- a new process ----------------------------------------------------------------------------------------------

const char* ChildPath() { return EPOLLCR_HANDOFF_CHILD; }

struct ChildOutput {
  int status = -1;
  std::string out;
};

// Reads the child's stdout to its end and waits for it.
ChildOutput Collect(pid_t pid, int out_fd) {
  ChildOutput r;
  char buf[4096];
  for (ssize_t n; (n = read(out_fd, buf, sizeof buf)) > 0;) r.out.append(buf, static_cast<std::size_t>(n));
  close(out_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(HandoffTest, ExecKeepsTheHostFdsAndTheNewImageCarriesOn) {
  ::epollcr::testing_support::TempDir dir;
  const std::string path = dir.File("world.epcr");
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the old program: builds its world, plays the first part, checkpoints and execs
    dup2(out[1], 1);
    HostFds f;
    World w;
    if (!f.Open() || !testing::BuildHostWorld(&w, f)) _exit(3);
    EpollcrSide side{&w};
    if (testing::PlayBefore(side.Side(), f) != "data=4 events=in") _exit(4);
    Result<std::vector<int>> kept = PrepareExec(w, path);
    if (!kept.ok() || kept.value().size() != 5) _exit(5);
    execl(ChildPath(), ChildPath(), "exec", path.c_str(), static_cast<char*>(nullptr));
    _exit(6);
  }
  close(out[1]);
  ChildOutput r = Collect(pid, out[0]);
  ASSERT_EQ(r.status, 0) << r.out;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 6u) << r.out;
  EXPECT_EQ(std::vector<std::string>(lines.begin(), lines.begin() + 4), KernelLines());
  EXPECT_EQ(lines[5], "report host_files=5 rekeyed=0 polls=2 entries=6 pruned=0");
}

TEST(HandoffTest, ScmRightsGivesNewNumbersAndEntriesFollowThem) {
  HostFds f;
  ASSERT_TRUE(f.Open(/*base=*/800));
  World w;
  ASSERT_TRUE(testing::BuildHostWorld(&w, f));
  EpollcrSide side{&w};
  ASSERT_EQ(testing::PlayBefore(side.Side(), f), "data=4 events=in");
  int sock[2], out[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock), 0);
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(sock[1], 3);  // the child's end, without FD_CLOEXEC
    const std::string fd = "3";
    execl(ChildPath(), ChildPath(), "scm", fd.c_str(), static_cast<char*>(nullptr));
    _exit(6);
  }
  close(out[1]);
  close(sock[1]);
  Status s = SendWorld(sock[0], w);
  EXPECT_TRUE(s.ok()) << s.message;
  close(sock[0]);
  ChildOutput r = Collect(pid, out[0]);
  ASSERT_EQ(r.status, 0) << r.out;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 6u) << r.out;
  EXPECT_EQ(std::vector<std::string>(lines.begin(), lines.begin() + 4), KernelLines());
  EXPECT_EQ(lines[4], "pid " + std::to_string(pid));
  EXPECT_EQ(lines[5], "report host_files=5 rekeyed=5 polls=2 entries=6 pruned=0");
  w.roots.clear();
  w.fds.Clear();
  for (int* p : {f.a, f.b, f.c, f.d}) close(p[1]);
}

// A live hand-off (restore/successor.h) with the world changed between Start and HandOver: a host fd closed and its
// number re-used by another socket, a new host fd, and both polls' kernel epolls made after Start. The successor
// plays the rest of the scenario: what the kernel reports for it (KernelLines), and the report says which fds it
// inherited, which came with the image and which went stale.
TEST(SuccessorTest, ALiveHandOffCarriesOnAsTheKernelDoes) {
  HostFds f;
  ASSERT_TRUE(f.Open());
  World w;
  ASSERT_TRUE(testing::BuildHostWorld(&w, f));
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  SuccessorOptions options;
  options.argv = {ChildPath(), "live", "none"};
  // The successor inherits stdout: the pipe, for the moment Start forks.
  const int saved_stdout = dup(1);
  ASSERT_EQ(dup2(out[1], 1), 1);
  Result<std::unique_ptr<Successor>> started = Successor::Start(w, options);
  ASSERT_EQ(dup2(saved_stdout, 1), 1);
  close(saved_stdout);
  ASSERT_TRUE(started.ok()) << started.status().message;
  close(out[1]);
  Successor& successor = *started.value();
  // d is closed and its number re-used by a new socket; x is new.
  int fresh[2], x[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fresh), 0);  // before d goes: other numbers
  ASSERT_FALSE(w.fds.Close(f.d[0]));
  close(f.d[1]);
  ASSERT_EQ(dup2(fresh[0], f.d[0]), f.d[0]);
  close(fresh[0]);
  f.d[1] = fresh[1];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, x), 0);
  for (int fd : {f.d[0], x[0]}) {
    Result<std::shared_ptr<HostFile>> h = HostFile::Create(fd);
    ASSERT_TRUE(h.ok()) << "fd " << fd << ": " << h.error().message();
    ASSERT_FALSE(w.fds.InstallAt(fd, h.value()));
  }
  EpollcrSide side{&w};
  ASSERT_EQ(testing::PlayBefore(side.Side(), f), "data=4 events=in");
  const std::size_t kernel = KernelResources(w).size();  // the polls' kernel epolls and bells, made after Start
  ASSERT_GE(kernel, 2u);
  HandOverReport report;
  Status s = successor.HandOver(w, &report);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(report.host_fds, 6u);
  EXPECT_EQ(report.inherited, 4u);       // a, b, c and e; d's number holds another socket now
  EXPECT_EQ(report.stale, 1u);           // the old d (no kernel epoll existed at Start)
  EXPECT_EQ(report.sent, 2u + kernel);  // d, x and the kernel side
  const pid_t pid = successor.pid();
  ChildOutput r = Collect(pid, out[0]);
  ASSERT_EQ(r.status, 0) << r.out;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 6u) << r.out;
  EXPECT_EQ(std::vector<std::string>(lines.begin(), lines.begin() + 4), KernelLines());
  // Every received fd took its number (moved=0): the polls took their kernel epolls over as they were.
  EXPECT_EQ(lines[5], "report host_files=6 inherited=5 received=" + std::to_string(2 + kernel) +
                          " stale=1 moved=0 entries=6");
  for (int* p : {f.a, f.b, f.c, f.d, x}) close(p[1]);
  close(x[0]);
}

// The way back: the successor fails at each stage, and the predecessor's HandOver says so with its world untouched
// (it plays the rest of the scenario as the kernel does), no fd leaked or closed, no process left behind.
TEST(SuccessorTest, EveryFailureOfTheSuccessorLeavesThePredecessorServing) {
  for (const char* stage : {"exec", "start", "receive", "restore", "confirm", "timeout", "go"}) {
    SCOPED_TRACE(stage);
    HostFds f;
    ASSERT_TRUE(f.Open());
    World w;
    ASSERT_TRUE(testing::BuildHostWorld(&w, f));
    EpollcrSide side{&w};
    ASSERT_EQ(testing::PlayBefore(side.Side(), f), "data=4 events=in");
    const int fds = OpenFds();
    SuccessorOptions options;
    options.argv = {std::string(stage) == "exec" ? "/nonexistent/successor" : ChildPath(), "live", stage};
    options.confirm_timeout = std::chrono::milliseconds(500);
    {
      // A program that cannot be run may be found out by Start already (the child is gone when it is told what it
      // inherited) or by HandOver: either way the error says how the successor ended.
      Result<std::unique_ptr<Successor>> started = Successor::Start(w, options);
      if (started.ok()) {
        // The successor's set-up before HELLO (it faults in heap and rehearses a restore) takes a while under a
        // sanitizer: the test waits for its hello, or for its end, before the pause, so that the pause's 500 ms time
        // what the stage does. Nothing is read here: HandOver reads what came.
        pollfd news{started.value()->channel(), POLLIN, 0};
        (void)poll(&news, 1, 60000);
      }
      Status s = started.ok() ? started.value()->HandOver(w) : started.status();
      EXPECT_FALSE(s.ok());
      EXPECT_THAT(s.message, HasSubstr("hand-off: "));
      const std::map<std::string, std::string> says = {{"exec", "exited with status 127"},
                                                        {"restore", "refused by the test"},
                                                        {"timeout", "timed out"},
                                                        {"confirm", "SIGKILL"},
                                                        {"go", "SIGKILL"}};
      if (auto it = says.find(stage); it != says.end()) {
        EXPECT_THAT(s.message, HasSubstr(it->second));
      }
    }
    EXPECT_EQ(OpenFds(), fds) << "no fd closed, none leaked";
    errno = 0;
    EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD) << "the successor was reaped";
    std::vector<std::string> after;
    for (const std::string& line : testing::PlayAfter(side.Side(), side.FdOfC())) after.push_back(line);
    EXPECT_EQ(after, KernelLines());
    w.roots.clear();
    w.fds.Clear();
    for (int* p : {f.a, f.b, f.c, f.d}) close(p[1]);
  }
}

TEST(HandoffTest, AFailedReceiveClosesEveryFdItGot) {
  HostFds f;
  ASSERT_TRUE(f.Open());
  World w;
  ASSERT_TRUE(testing::BuildHostWorld(&w, f));
  int sock[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock), 0);
  Status sent = SendWorld(sock[0], w);
  ASSERT_TRUE(sent.ok()) << sent.message;
  // The receiver's world is not empty: nothing may be taken.
  World busy;
  busy.roots["x"] = EventPoll::Create();
  EXPECT_THAT(ReceiveWorld(sock[1], &busy).message, HasSubstr("the world is not empty"));
  // A restore that fails after the fds arrived (here: an object limit) closes every one of them again.
  World target;
  const int before = OpenFds();
  Options tight;
  tight.limits.max_objects = 1;
  Status s = ReceiveWorld(sock[1], &target, tight);
  EXPECT_THAT(s.message, HasSubstr("beyond the limit"));
  EXPECT_EQ(OpenFds(), before);
  EXPECT_EQ(target.fds.Count(), 0);
  close(sock[0]);
  close(sock[1]);
  w.roots.clear();
  w.fds.Clear();
  for (int* p : {f.a, f.b, f.c, f.d}) close(p[1]);
}

// ---- host files ---------------------------------------------------------------------------------------------------

TEST(HostFileTest, CreateChecksTheFdAndOneHostFileOwnsAnFdNumber) {
  EXPECT_EQ(HostFile::Create(-1).error(), Errno(EBADF));
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  {
    Result<std::shared_ptr<HostFile>> r = HostFile::Create(p[0]);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(HostFile::WrappedFds(), 1u);
    EXPECT_EQ(HostFile::Create(p[0]).error(), Errno(EEXIST));
    EXPECT_EQ(HostFile::WrappedFds(), 1u);
    EXPECT_EQ(r.value()->ReleaseFd(), p[0]);
  }
  EXPECT_NE(fcntl(p[0], F_GETFD), -1) << "a released fd stays open";
  { ASSERT_TRUE(HostFile::Create(p[0]).ok()); }
  EXPECT_EQ(fcntl(p[0], F_GETFD), -1) << "a host file closes the fd it owns";
  close(p[1]);
}

TEST(HostFileTest, ARegularFileIsRefusedLikeTheKernelRefusesIt) {
  ::epollcr::testing_support::TempDir dir;
  const int fd = open(dir.File("plain").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), -1);
  const int kernel_errno = errno;
  close(ep);
  Result<std::shared_ptr<HostFile>> h = HostFile::Create(fd);
  ASSERT_TRUE(h.ok());
  auto poll = EventPoll::Create();
  EXPECT_EQ(poll->AddEntry({h.value().get(), fd}, EntryFlags::kNone, kEventIn, 1), Errno(kernel_errno));
  EXPECT_EQ(poll->EntryCount(), 0u);
}

// ---- kernel epolls across a restore in the same process -------------------------------------------------------

// An edge-triggered entry on a socket whose edge was taken while its data stays unread: a kernel epoll reports
// nothing more until new data arrives. A restore in this process takes the poll's kernel epoll over as it is (the old
// world released it), so the restored poll reports what the kernel twin reports, and its kernel epoll is the same fd.
// The image without its kernel epoll is restored by registering afresh, which re-checks readiness: one more event
// (docs/restore.md). Both against the kernel twin's answers.
class KernelAdoptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, mine_), 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, twin_), 0);
    twin_ep_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 7;
    ASSERT_EQ(epoll_ctl(twin_ep_, EPOLL_CTL_ADD, twin_[0], &ev), 0);
    Result<std::shared_ptr<HostFile>> host = HostFile::Create(mine_[0]);
    ASSERT_TRUE(host.ok());
    auto poll = EventPoll::Create();
    ASSERT_FALSE(poll->AddEntry({host.value().get(), mine_[0]}, EntryFlags::kEdgeTriggered, kEventIn, 7));
    ASSERT_FALSE(world_.fds.InstallAt(mine_[0], host.value()));
    world_.roots["poll"] = poll;
    for (int fd : {mine_[1], twin_[1]}) ASSERT_EQ(write(fd, "a", 1), 1);
    EXPECT_EQ(TwinWait(), 1);
    EXPECT_EQ(Wait(*poll), 1) << "the edge, taken";
    EXPECT_EQ(TwinWait(), 0) << "the data stays unread";
    Result<std::string> bytes = image::SaveImage(world_);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    bytes_ = bytes.value();
  }
  void TearDown() override {
    restored_.roots.clear();
    restored_.fds.Clear();
    world_.roots.clear();
    world_.fds.Clear();
    close(twin_ep_);
    for (int fd : {twin_[0], twin_[1], mine_[1]}) close(fd);
  }
  int TwinWait() {
    epoll_event ev[2];
    return epoll_wait(twin_ep_, ev, 2, 0);
  }
  static int Wait(EventPoll& poll) {
    Event ev[2];
    Result<int> n = poll.Wait(ev, 2, 0);
    return n.ok() ? n.value() : -1;
  }
  Status RestoreIt(std::string_view bytes) {
    InheritedFdResolver inherited;
    Options options;
    options.resolvers = {&inherited};
    return RestoreBytes(bytes, &restored_, options);
  }

  int mine_[2], twin_[2];
  int twin_ep_ = -1;
  World world_, restored_;
  std::string bytes_;
};

TEST_F(KernelAdoptionTest, ARestoreInTheSameProcessTakesTheKernelEpollOverAsItIs) {
  Result<std::string_view> framed = image::Unframe(bytes_, {});
  ASSERT_TRUE(framed.ok());
  int kernel_fd = -1;
  ASSERT_TRUE(image::WithDecoded(framed.value(), [&](const v1::Image& image) {
                for (const v1::File& f : image.files()) {
                  if (f.has_eventpoll()) kernel_fd = f.eventpoll().kernel().fd();
                }
                return Status::Ok();
              }).ok());
  ASSERT_GE(kernel_fd, 0) << "the image records the poll's kernel epoll";
  const int open = OpenFds();
  ReleaseHostResources(world_);
  world_.roots.clear();
  world_.fds.Clear();
  EXPECT_EQ(OpenFds(), open) << "the old world closed nothing it gave up";
  ASSERT_TRUE(RestoreIt(bytes_).ok());
  auto* poll = restored_.roots.at("poll")->AsEventPoll();
  EXPECT_EQ(Wait(*poll), TwinWait()) << "no second event for the edge already taken";
  EXPECT_EQ(poll->Fd().value(), kernel_fd) << "the same kernel epoll";
  for (int fd : {mine_[1], twin_[1]}) ASSERT_EQ(write(fd, "b", 1), 1);
  EXPECT_EQ(TwinWait(), 1);
  EXPECT_EQ(Wait(*poll), 1) << "the next edge";
  EXPECT_EQ(OpenFds(), open) << "nothing more open than before the restore";
}

TEST_F(KernelAdoptionTest, WithoutItsKernelEpollTheImageRegistersAfreshAndReChecks) {
  Result<std::string_view> framed = image::Unframe(bytes_, {});
  ASSERT_TRUE(framed.ok());
  v1::Image image;
  ASSERT_TRUE(image::WithDecoded(framed.value(), [&](const v1::Image& decoded) {
                image = decoded;
                return Status::Ok();
              }).ok());
  for (v1::File& f : *image.mutable_files()) {
    if (!f.has_eventpoll()) continue;
    f.mutable_eventpoll()->clear_kernel();
    f.mutable_eventpoll()->clear_kernel_keys();
    f.mutable_eventpoll()->clear_kernel_fds();
  }
  ReleaseHostResources(world_);
  world_.roots.clear();
  world_.fds.Clear();
  InheritedFdResolver inherited;
  Options options;
  options.resolvers = {&inherited};
  ASSERT_TRUE(Restore(image, &restored_, options).ok());
  auto* poll = restored_.roots.at("poll")->AsEventPoll();
  EXPECT_EQ(TwinWait(), 0);
  EXPECT_EQ(Wait(*poll), 1) << "the fresh registration re-checks readiness: the unread data is an event again";
}

TEST(HostFileTest, AWorldWithHostFilesIsNoBoostArchive) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  World w;
  ASSERT_FALSE(w.fds.InstallAt(p[0], HostFile::Create(p[0]).value()));
  Result<std::string> saved = SaveWorld(w, ArchiveFormat::kBoostText);
  EXPECT_FALSE(saved.ok());
  EXPECT_THAT(saved.status().message, HasSubstr("host files are saved only in protobuf images"));
  w.fds.Clear();
  close(p[1]);
}

TEST(HostFileTest, AnEventPollIsAnEventLoopForRealSockets) {
  int s[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s), 0);
  auto file = HostFile::Create(s[0]).value();
  auto poll = EventPoll::Create();
  ASSERT_FALSE(poll->AddEntry({file.get(), s[0]}, EntryFlags::kEdgeTriggered, kEventIn, 42));
  Event ev[4];
  EXPECT_EQ(poll->Wait(ev, 4, 0).value(), 0);
  for (int round = 0; round < 100; ++round) {
    ASSERT_EQ(write(s[1], "ping", 4), 4);
    Result<int> n = poll->Wait(ev, 4, 5000);  // woken through the poll's kernel epoll
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(n.value(), 1);
    EXPECT_EQ(ev[0].Data(), 42u);
    EXPECT_EQ(ev[0].events, kEventIn);
    std::byte buf[8];
    EXPECT_EQ(file->Read(buf).value(), 4u);
  }
  // The peer goes away: the same events as the kernel's epoll reports for a socket pair whose peer closed.
  int k[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, k), 0);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event kev{};
  kev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, k[0], &kev), 0);
  close(k[1]);
  ASSERT_EQ(epoll_wait(ep, &kev, 1, 0), 1);
  close(s[1]);
  Result<int> n = poll->Wait(ev, 4, 5000);
  ASSERT_EQ(n.value(), 1);
  EXPECT_EQ(ev[0].events, kev.events);
  close(ep);
  close(k[0]);
}

}  // namespace
}  // namespace epollcr::restore
