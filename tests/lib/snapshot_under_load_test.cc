// Snapshots taken while other threads notify, add and remove must be consistent cuts (state.h). gVisor's saved
// ready list could be torn by a notification arriving during save, and about 2% of restored epolls never woke again
// (google/gvisor#13920). Here notifier threads write to eventfds and a churn thread adds and removes entries while
// thousands of saves run; every restored world is checked: each token with a non-zero counter has its wake-up on
// the ready list (nothing is harvested in the original, so nothing may be missing), the harvest reports exactly
// those tokens, and a later write still wakes the restored poll. Every format is used in turn, the image
// (image::SaveImage) among them: a file the churn thread closes may be freed the moment a save lets go of its locks,
// and nothing of a save may read it after (state/cut.h keeps no reference of its own: ASan and TSan run this test).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <set>
#include <thread>

#include "epollcr/epollcr.h"
#include "image/codec.h"

namespace epollcr {
namespace {

constexpr int kTokens = 6;

struct Fixture {
  World world;
  int poll_fd = -1;
  int inner_fd = -1;
  int token_fd[kTokens] = {};

  Fixture() {
    poll_fd = sys::EpollCreate1(world.fds, 0).value();
    inner_fd = sys::EpollCreate1(world.fds, 0).value();
    const std::uint32_t modes[kTokens] = {0, kEpollEdgeTriggered, kEpollOneShot, 0, kEpollEdgeTriggered, 0};
    for (int i = 0; i < kTokens; ++i) {
      token_fd[i] = sys::EventFd(world.fds, 0, false).value();
      Event e{kEventIn | modes[i], {}};
      e.SetData(static_cast<std::uint64_t>(i));
      const int target = i == kTokens - 1 ? inner_fd : poll_fd;  // the last token sits in the nested poll
      EXPECT_FALSE(sys::EpollCtl(world.fds, target, sys::kEpollCtlAdd, token_fd[i], &e));
    }
    Event e{kEventIn | kEpollEdgeTriggered, {}};
    e.SetData(100);
    EXPECT_FALSE(sys::EpollCtl(world.fds, poll_fd, sys::kEpollCtlAdd, inner_fd, &e));
  }
};

std::uint64_t Counter(World& w, int fd) { return std::dynamic_pointer_cast<EventFd>(w.fds.Get(fd))->Value(); }

// Tokens 0 and 3 are level-triggered: in any consistent cut, a non-zero counter means the entry is on the ready list
// (a harvest keeps a ready LT entry queued, and the write that makes a counter non-zero queues it in the same step).
// The edge-triggered and one-shot tokens may have been consumed by the drainer, so only their liveness is checked.
constexpr int kLevelTokens[] = {0, 3};

void CheckRestored(Fixture& f, World& r, int round) {
  auto poll = std::dynamic_pointer_cast<EventPoll>(r.fds.Get(f.poll_fd));
  auto inner = std::dynamic_pointer_cast<EventPoll>(r.fds.Get(f.inner_fd));
  ASSERT_TRUE(poll && inner);
  std::set<std::uint64_t> queued;
  for (const EntryInfo& e : poll->ReadyList()) queued.insert(e.data);
  for (int t : kLevelTokens) {
    if (Counter(r, f.token_fd[t]) > 0) {
      ASSERT_TRUE(queued.count(static_cast<std::uint64_t>(t)))
          << "round " << round << ": token " << t << " is ready but its wake-up was lost (torn cut)";
    }
  }
  if (Counter(r, f.token_fd[kTokens - 1]) > 0) {
    ASSERT_EQ(inner->ReadyList().size(), 1u) << "round " << round << ": the nested token's wake-up was lost";
  }
  Event ev[16];
  Result<int> n = poll->ReadEvents(ev, 16);
  ASSERT_TRUE(n.ok());
  std::set<std::uint64_t> got;
  for (int i = 0; i < n.value(); ++i) got.insert(ev[i].Data());
  for (int t : kLevelTokens) {
    EXPECT_EQ(got.count(static_cast<std::uint64_t>(t)) == 1, Counter(r, f.token_fd[t]) > 0) << "round " << round;
  }
  // The restored waiters are live: a write to the edge-triggered token is delivered.
  ASSERT_FALSE(std::dynamic_pointer_cast<EventFd>(r.fds.Get(f.token_fd[1]))->WriteValue(1));
  n = poll->ReadEvents(ev, 16);
  bool delivered = false;
  for (int i = 0; n.ok() && i < n.value(); ++i) delivered |= ev[i].Data() == 1;
  EXPECT_TRUE(delivered) << "round " << round << ": a restored poll did not wake";
}

TEST(SnapshotUnderLoadTest, EveryRestoredWorldDeliversEveryEvent) {
  Fixture f;
  std::atomic<bool> stop{false};
  std::atomic<long> writes{0};
  std::vector<std::thread> threads;
  struct Joiner {  // stops and joins the threads however the test ends (a failed ASSERT returns early)
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{stop, threads};
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      while (!stop) {
        auto efd = std::dynamic_pointer_cast<EventFd>(f.world.fds.Get(f.token_fd[rng() % kTokens]));
        if (!efd->WriteValue(1)) writes.fetch_add(1);
      }
    });
  }
  threads.emplace_back([&] {  // drainer: harvests and empties the level-triggered tokens, so entries keep moving
    auto poll = std::dynamic_pointer_cast<EventPoll>(f.world.fds.Get(f.poll_fd));
    Event ev[16];
    while (!stop) {
      (void)poll->ReadEvents(ev, 16);
      for (int t : kLevelTokens) (void)std::dynamic_pointer_cast<EventFd>(f.world.fds.Get(f.token_fd[t]))->ReadValue();
    }
  });
  threads.emplace_back([&] {  // churn: entries of other files come and go in both polls
    std::mt19937 rng(7);
    auto poll = std::dynamic_pointer_cast<EventPoll>(f.world.fds.Get(f.poll_fd));
    while (!stop) {
      const int fd = sys::EventFd(f.world.fds, rng() % 2, false).value();
      Event e{kEventIn, {}};
      e.SetData(900);
      (void)sys::EpollCtl(f.world.fds, f.poll_fd, sys::kEpollCtlAdd, fd, &e);
      if (rng() % 2) (void)sys::EpollCtl(f.world.fds, f.poll_fd, sys::kEpollCtlDel, fd, nullptr);
      (void)sys::Close(f.world.fds, fd);  // the last reference: a registered file is released mid-save too
    }
  });
  const int kRounds = 1500;
  while (writes.load() < 100) std::this_thread::yield();  // the notifiers are running before the first save
  for (int round = 0; round < kRounds; ++round) {
    World restored;
    if (round % 4 == 3) {
      Result<std::string> bytes = image::SaveImage(f.world);
      ASSERT_TRUE(bytes.ok()) << bytes.status().message;
      Status s = image::LoadImage(bytes.value(), &restored);
      ASSERT_TRUE(s.ok()) << s.message;
    } else {
      const ArchiveFormat format = round % 4 == 0   ? ArchiveFormat::kBoostBinary
                                   : round % 4 == 1 ? ArchiveFormat::kBoostText
                                                    : ArchiveFormat::kBoostXml;
      Result<std::string> bytes = SaveWorld(f.world, format);
      ASSERT_TRUE(bytes.ok()) << bytes.status().message;
      Status s = LoadWorld(bytes.value(), &restored);
      ASSERT_TRUE(s.ok()) << s.message;
    }
    CheckRestored(f, restored, round);
    if (HasFatalFailure()) break;
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GT(writes.load(), kRounds) << "the notifiers barely ran: the test did not test concurrency";
  std::printf("%ld writes during %d snapshots\n", writes.load(), kRounds);
}

}  // namespace
}  // namespace epollcr
