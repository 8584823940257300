// Concurrency stress: producers, consumers blocked in Wait, and a mutator adding, updating and removing entries
// (and dropping registered files) all at once. A lost wake-up shows as a producer whose token is never consumed
// within the deadline; a deadlock as a hang (meson's timeout); a use-after-free under AddressSanitizer; a data race
// under ThreadSanitizer. Threads synchronize only through the engine and atomics.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "epollcr/epollcr.h"

namespace epollcr {
namespace {

using Clock = std::chrono::steady_clock;

enum class Mode { kLevel, kEdge, kOneShot, kNested };

struct Token {
  std::shared_ptr<EventFd> file;
  Mode mode;
  std::atomic<std::uint64_t> produced{0};
  std::atomic<std::uint64_t> consumed{0};
};

constexpr std::uint64_t kInnerData = 1000;

class Stress {
 public:
  explicit Stress(int rounds) : rounds_(rounds), poll_(EventPoll::Create()), inner_(EventPoll::Create()) {
    const Mode modes[] = {Mode::kLevel, Mode::kLevel, Mode::kEdge, Mode::kEdge, Mode::kOneShot, Mode::kNested};
    tokens_ = std::vector<Token>(std::size(modes));
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      Token& t = tokens_[i];
      t.file = EventFd::Create();
      t.mode = modes[i];
      EventPoll& target = t.mode == Mode::kNested ? *inner_ : *poll_;
      EXPECT_FALSE(target.AddEntry({t.file.get(), static_cast<int>(i)}, Flags(t.mode), kEventIn, i));
    }
    EXPECT_FALSE(poll_->AddEntry({inner_.get(), 99}, EntryFlags::kNone, kEventIn, kInnerData));
  }

  static EntryFlags Flags(Mode m) {
    switch (m) {
      case Mode::kEdge: return EntryFlags::kEdgeTriggered;
      case Mode::kOneShot: return EntryFlags::kOneShot;
      default: return EntryFlags::kNone;
    }
  }

  // Writes 1 to its tokens one round at a time and waits until a consumer took it.
  void Produce(std::vector<std::size_t> mine) {
    for (int r = 0; r < rounds_ && !failed_; ++r) {
      for (std::size_t i : mine) {
        Token& t = tokens_[i];
        const std::uint64_t target = t.produced.fetch_add(1) + 1;
        if (t.file->WriteValue(1)) failed_ = true;
        const auto deadline = Clock::now() + std::chrono::seconds(20);
        while (t.consumed.load() < target) {
          if (Clock::now() > deadline) {
            lost_ = static_cast<int>(i);
            failed_ = true;
            return;
          }
          std::this_thread::yield();
        }
      }
    }
  }

  void Take(std::size_t i) {
    Token& t = tokens_[i];
    Result<std::uint64_t> v = t.file->ReadValue();
    if (v.ok()) t.consumed.fetch_add(v.value());
    if (t.mode == Mode::kOneShot) {
      // Re-arm after consuming; MOD re-polls, so a write that raced with the disabled entry is not lost.
      if (poll_->UpdateEntry({t.file.get(), static_cast<int>(i)}, EntryFlags::kOneShot, kEventIn, i)) failed_ = true;
    }
  }

  void Consume() {
    Event ev[8];
    while (!stop_) {
      Result<int> n = poll_->Wait(ev, 8, 50);
      if (!n.ok()) {
        failed_ = true;
        return;
      }
      for (int k = 0; k < n.value(); ++k) {
        const std::uint64_t data = ev[k].Data();
        if (data == kInnerData) {
          Event inner[8];
          Result<int> m = inner_->ReadEvents(inner, 8);
          for (int j = 0; m.ok() && j < m.value(); ++j) {
            if (inner[j].Data() < tokens_.size()) Take(inner[j].Data());
          }
        } else if (data < tokens_.size()) {
          Take(data);
        }  // else: one of the mutator's files
      }
    }
  }

  // Churns entries of throwaway files in both polls, including dropping files while registered.
  void Mutate() {
    std::mt19937 rng(42);
    std::vector<std::shared_ptr<File>> files;
    int fd = 100;
    while (!stop_) {
      const unsigned op = rng() % 6;
      EventPoll& target = rng() % 2 ? *poll_ : *inner_;
      if (op == 0 || files.empty()) {
        std::shared_ptr<File> f;
        if (rng() % 2) {
          f = EventFd::Create(rng() % 2);
        } else {
          PipeEnds p = NewPipe();
          f = p.read;
        }
        const EntryFlags flags = static_cast<EntryFlags>(rng() % 4);
        (void)target.AddEntry({f.get(), fd}, flags, kEventIn | kEventOut, 5000 + static_cast<std::uint64_t>(fd));
        ++fd;
        files.push_back(std::move(f));
      } else if (op == 1) {
        (void)target.UpdateEntry({files.back().get(), fd - 1}, EntryFlags::kEdgeTriggered, kEventOut, 1);
      } else if (op == 2) {
        (void)target.RemoveEntry({files.back().get(), fd - 1});
      } else if (op == 3) {
        files.erase(files.begin() + static_cast<std::ptrdiff_t>(rng() % files.size()));  // release while watched
      } else if (op == 4) {
        if (auto* efd = dynamic_cast<EventFd*>(files.back().get())) (void)efd->WriteValue(1);
      } else if (files.size() > 64) {
        files.clear();
      }
    }
  }

  void Run(int producers, int consumers) {
    std::vector<std::thread> cons, prods;
    for (int c = 0; c < consumers; ++c) cons.emplace_back([this] { Consume(); });
    std::thread mutator([this] { Mutate(); });
    for (int p = 0; p < producers; ++p) {
      std::vector<std::size_t> mine;
      for (std::size_t i = static_cast<std::size_t>(p); i < tokens_.size(); i += static_cast<std::size_t>(producers)) {
        mine.push_back(i);
      }
      prods.emplace_back([this, mine] { Produce(mine); });
    }
    for (auto& t : prods) t.join();
    stop_ = true;
    mutator.join();
    for (auto& t : cons) t.join();
  }

  void Check() {
    ASSERT_FALSE(failed_) << "lost wake-up on token " << lost_;
    for (const Token& t : tokens_) {
      EXPECT_EQ(t.produced.load(), static_cast<std::uint64_t>(rounds_));
      EXPECT_EQ(t.consumed.load(), t.produced.load());
    }
    // Clean up and prove it: every entry goes with the polls, every file queue is empty.
    poll_.reset();
    inner_.reset();
    for (const Token& t : tokens_) EXPECT_TRUE(t.file->queue().IsEmpty());
  }

 private:
  const int rounds_;
  std::shared_ptr<EventPoll> poll_;
  std::shared_ptr<EventPoll> inner_;
  std::vector<Token> tokens_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<int> lost_{-1};
};

TEST(StressTest, NoLostWakeUpsUnderConcurrentChanges) {
  Stress s(3000);
  s.Run(/*producers=*/3, /*consumers=*/3);
  s.Check();
}

TEST(StressTest, ManyPollsWatchingOneFileReleasedConcurrently) {
  // Files released in one thread while polls watching them are released in others: the release protocol
  // (file.h) must neither deadlock nor touch freed memory.
  for (int round = 0; round < 200; ++round) {
    auto efd = EventFd::Create(1);
    std::vector<std::shared_ptr<EventPoll>> polls;
    for (int i = 0; i < 8; ++i) {
      polls.push_back(EventPoll::Create());
      ASSERT_FALSE(polls.back()->AddEntry({efd.get(), i}, EntryFlags::kNone, kEventIn, 0));
    }
    std::thread a([&] { efd.reset(); });
    std::thread b([&] {
      for (int i = 0; i < 4; ++i) polls[static_cast<std::size_t>(i)].reset();
    });
    std::thread c([&] {
      Event ev[1];
      for (int i = 4; i < 8; ++i) (void)polls[static_cast<std::size_t>(i)]->ReadEvents(ev, 1);
    });
    a.join();
    b.join();
    c.join();
    for (int i = 4; i < 8; ++i) EXPECT_EQ(polls[static_cast<std::size_t>(i)]->EntryCount(), 0u);
  }
}

}  // namespace
}  // namespace epollcr
