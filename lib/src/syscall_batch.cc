#include "syscall_batch.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "epollcr/event_poll.h"
#include "epollcr/unique_fd.h"
#include "fault_injection.h"

namespace epollcr::sys {

namespace {

// Below this many items setting up a ring (io_uring_setup, two mmaps, close) costs more than the kernel entries it
// saves.
constexpr std::size_t kMinRingBatch = 64;
// Requests in flight at once; each needs its own buffers until it completes.
constexpr unsigned kRingSize = 256;

std::atomic<BatchMode> batch_mode{BatchMode::kAuto};
std::atomic<std::uint64_t> ring_batches{0};
std::atomic<std::uint64_t> single_calls{0};

// What auto mode learned of each kind of batch (ChoiceOf), by BatchKind.
constexpr int kUnmeasured = 0, kRingWon = 1, kSingleWon = 2;
struct Measured {
  std::atomic<int> state{kUnmeasured};
  std::atomic<double> single_ns{0};
  std::atomic<double> ring_ns{0};
};
Measured measured[2];

void Decide(BatchKind kind, bool ring, double single_ns, double ring_ns) {
  Measured& m = measured[static_cast<int>(kind)];
  m.single_ns.store(single_ns, std::memory_order_relaxed);
  m.ring_ns.store(ring_ns, std::memory_order_relaxed);
  m.state.store(ring ? kRingWon : kSingleWon, std::memory_order_release);
}

// How one batch runs: through a ring, one call at a time, or measuring both first (auto mode, nothing measured yet).
enum class Path { kRing, kSingle, kMeasure };

Path PathFor(BatchKind kind, std::size_t items) {
  if (items < kMinRingBatch) return Path::kSingle;
  switch (batch_mode.load(std::memory_order_relaxed)) {
    case BatchMode::kRing:
      return Path::kRing;
    case BatchMode::kSingle:
      return Path::kSingle;
    case BatchMode::kAuto:
      break;
  }
  switch (measured[static_cast<int>(kind)].state.load(std::memory_order_acquire)) {
    case kRingWon:
      return Path::kRing;
    case kSingleWon:
      return Path::kSingle;
    default:
      return Path::kMeasure;
  }
}

// A ring for one batch, closed with it. Its fd is above every fd the batch names: the kernel gives a new fd the
// lowest free number, which may be one the batch asks about (an image's fd that is not open here), and statx of that
// number must say EBADF, not describe the ring.
class Ring {
 public:
  explicit Ring(int above) {
    // Every request is submitted even if an earlier one fails, each failure being that request's result (Linux
    // 5.18); one thread uses the ring and completions are handed over when it waits, not by interrupting it
    // (6.1; statx completions from the kernel's workers then cost a third less here). Older kernels: fewer flags.
    int fd = -1;
    io_uring_params params{};
    for (unsigned flags : {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                           unsigned{IORING_SETUP_SUBMIT_ALL}, 0u}) {
      params = {};
      params.flags = flags;
      fd = static_cast<int>(syscall(__NR_io_uring_setup, OwnSyscallArg(kRingSize), &params));
      if (fd >= 0 || errno != EINVAL) break;
    }
    if (fd < 0) return;
    UniqueFd low(fd);
    UniqueFd high(fcntl(low.get(), F_DUPFD_CLOEXEC, above + 1));
    low.Reset();
    if (!high.valid() || io_uring_queue_mmap(high.get(), &params, &ring_) != 0) return;
    high.Release();  // the ring's now: io_uring_queue_exit closes it
    // Submission slot i is request i, as io_uring_queue_init sets it up (io_uring_queue_mmap leaves it to us).
    for (unsigned i = 0; i < ring_.sq.ring_entries; ++i) ring_.sq.array[i] = i;
    ok_ = true;
  }
  ~Ring() {
    if (ok_) io_uring_queue_exit(&ring_);
  }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  bool ok() const { return ok_; }
  io_uring* get() { return &ring_; }

 private:
  io_uring ring_{};
  bool ok_ = false;
};

// Runs items [from, to) through `ring`: prep(sqe, item, slot) fills a request that may use the buffers of `slot`
// (< kRingSize) until its completion, done(item, slot, res) takes the completion (res: the system call's return value
// or -errno). Returns the first item not run: `to`, or, if the kernel refused a submission (*broken is then set), the
// first item it never took (every request it took has completed).
template <typename Prep, typename Done>
std::size_t RunOnRing(Ring& ring, std::size_t from, std::size_t to, Prep& prep, Done& done, bool* broken) {
  std::vector<unsigned> free_slots(kRingSize);
  for (unsigned s = 0; s < kRingSize; ++s) free_slots[s] = kRingSize - 1 - s;
  std::size_t next = from;
  std::size_t in_flight = 0;  // taken by the kernel, completion not seen yet
  std::size_t pending = 0;    // prepared, not taken by the kernel yet (a submission may take fewer than asked)
  while (next < to || in_flight != 0 || pending != 0) {
    while (next < to && !free_slots.empty()) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring.get());
      if (sqe == nullptr) break;
      const unsigned slot = free_slots.back();
      free_slots.pop_back();
      prep(sqe, next, slot);
      io_uring_sqe_set_data64(sqe, (static_cast<std::uint64_t>(next) << 16) | slot);
      ++next;
      ++pending;
    }
    if (pending != 0) {
      int r;
      do {
        r = io_uring_submit(ring.get());
      } while (r == -EINTR);
      if (r < 0 || (r == 0 && in_flight == 0)) {
        // The kernel takes requests in order and only in io_uring_enter (the waits below pass none), so the last
        // `pending` items never reached it: they run one at a time once the ring is gone.
        *broken = true;
        next -= pending;
        break;
      }
      pending -= static_cast<std::size_t>(r);
      in_flight += static_cast<std::size_t>(r);
    }
    if (in_flight == 0) continue;
    io_uring_cqe* cqe = nullptr;
    int w;
    do {
      w = io_uring_wait_cqe(ring.get(), &cqe);
    } while (w == -EINTR);
    if (w < 0) {
      *broken = true;  // see RunBatch's ECANCELED
      break;
    }
    unsigned seen = 0;
    unsigned head;
    io_uring_for_each_cqe(ring.get(), head, cqe) {
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      const unsigned slot = static_cast<unsigned>(tag & 0xffff);
      done(static_cast<std::size_t>(tag >> 16), slot, cqe->res);
      free_slots.push_back(slot);
      ++seen;
    }
    io_uring_cq_advance(ring.get(), seen);
    in_flight -= seen;
  }
  if (*broken) {
    // Requests the kernel took before a later submission was refused: their completions still come.
    while (in_flight != 0) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(ring.get(), &cqe) != 0) break;
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      done(static_cast<std::size_t>(tag >> 16), static_cast<unsigned>(tag & 0xffff), cqe->res);
      io_uring_cqe_seen(ring.get(), cqe);
      --in_flight;
    }
  }
  return next;
}

// CPU time of the whole process, ns: a statx on a ring runs on a kernel worker thread, which is a thread of this
// process, so its work counts; time the process waited for a CPU (other work on the machine, a worker not yet
// scheduled) does not, and cannot decide for the rest of the process's life.
double ProcessCpuNs() {
  timespec t{};
  (void)clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

// Runs items [0, n) of a batch of `kind`: through one ring where that is the path (PathFor), else, and for what a
// broken ring leaves, one at a time with single(item), which makes the call and returns 0 or an errno value. prep and
// done as for RunOnRing. In auto mode the first batch of a kind that could take a ring runs its first items both ways,
// timed, and keeps the cheaper path for its other items and every later batch of that kind.
template <typename Prep, typename Done, typename Single>
void RunBatch(BatchKind kind, testing::FaultPoint point, std::span<const int> fds, std::span<int> errors, Prep prep,
              Done done, Single single) {
  const std::size_t n = fds.size();
  // An injected fault replaces the item's call: a test fails the Nth call of a batch.
  if (testing::FaultHookInstalled()) {
    for (std::size_t i = 0; i < n; ++i) {
      const int e = testing::FaultAt(point, i).error;
      errors[i] = e != 0 ? e : single(i);
    }
    return;
  }
  auto run_single = [&](std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) errors[i] = single(i);
    single_calls.fetch_add(to - from, std::memory_order_relaxed);
  };
  // Only if a ring broke with requests in flight and its wait failed too (io_uring_wait_cqe fails only on EINTR,
  // retried, or a ring that is gone) would a result not be filled in: say so rather than leave it at 0.
  std::fill(errors.begin(), errors.begin() + static_cast<std::ptrdiff_t>(n), ECANCELED);
  std::size_t next = 0;  // items before this were run, through the ring or singly
  const Path path = PathFor(kind, n);
  if (path != Path::kSingle) {
    Ring ring(*std::max_element(fds.begin(), fds.end()));
    if (ring.ok()) {
      ring_batches.fetch_add(1, std::memory_order_relaxed);
      bool broken = false;
      if (path == Path::kMeasure) {
        // Each path twice on the batch's first items (at most 5/8 of them), the quicker of the two runs counting: a
        // preemption or an interrupt in one run, or the kernel starting its io_uring workers in the first, does not
        // decide for the whole process.
        const std::size_t probe_single = std::min<std::size_t>(32, n / 16);
        const std::size_t probe_ring = std::min<std::size_t>(kRingSize, n / 4);
        double single_ns = 0, ring_ns = 0;
        for (int round = 0; round < 2 && !broken; ++round) {
          double start = ProcessCpuNs();
          run_single(next, next + probe_single);
          const double one = (ProcessCpuNs() - start) / static_cast<double>(probe_single);
          next += probe_single;
          start = ProcessCpuNs();
          const std::size_t from = next;
          next = RunOnRing(ring, from, from + probe_ring, prep, done, &broken);
          const double batched = (ProcessCpuNs() - start) / static_cast<double>(std::max<std::size_t>(next - from, 1));
          single_ns = round == 0 ? one : std::min(single_ns, one);
          ring_ns = round == 0 ? batched : std::min(ring_ns, batched);
        }
        if (!broken) Decide(kind, ring_ns < single_ns, single_ns, ring_ns);
        if (broken || ring_ns >= single_ns) {
          run_single(next, n);
          return;
        }
      }
      next = RunOnRing(ring, next, n, prep, done, &broken);
    }
  }
  run_single(next, n);
}

FileIdentity FromStatx(const struct statx& sx) {
  FileIdentity id;
  id.dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  id.ino = sx.stx_ino;
  id.file_type = sx.stx_mode & S_IFMT;
  return id;
}

}  // namespace

void StatMany(std::span<const int> fds, std::span<FileIdentity> out, std::span<int> errors) {
  std::vector<struct statx> buffers(fds.size() >= kMinRingBatch ? kRingSize : 0);
  static const char kEmptyPath[] = "";
  RunBatch(
      BatchKind::kStat, testing::FaultPoint::kBatchStat, fds, errors,
      [&](io_uring_sqe* sqe, std::size_t i, unsigned slot) {
        io_uring_prep_statx(sqe, fds[i], kEmptyPath, AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT,
                            STATX_TYPE | STATX_INO, &buffers[slot]);
      },
      [&](std::size_t i, unsigned slot, int res) {
        errors[i] = res < 0 ? -res : 0;
        if (res >= 0) out[i] = FromStatx(buffers[slot]);
      },
      [&](std::size_t i) {
        struct stat st;
        int r;
        do {
          r = fstat(fds[i], &st);
        } while (r != 0 && errno == EINTR);
        if (r != 0) return errno;
        out[i].dev = st.st_dev;
        out[i].ino = st.st_ino;
        out[i].file_type = st.st_mode & S_IFMT;
        return 0;
      });
}

void EpollAddMany(int epoll_fd, std::span<const int> fds, std::span<epoll_event> events, std::span<int> errors) {
  RunBatch(
      BatchKind::kEpollAdd, testing::FaultPoint::kBatchEpollAdd, fds, errors,
      [&](io_uring_sqe* sqe, std::size_t i, unsigned) {
        io_uring_prep_epoll_ctl(sqe, epoll_fd, fds[i], EPOLL_CTL_ADD, &events[i]);
      },
      [&](std::size_t i, unsigned, int res) { errors[i] = res < 0 ? -res : 0; },
      [&](std::size_t i) {
        int r;
        do {
          r = epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fds[i], &events[i]);
        } while (r != 0 && errno == EINTR);
        return r == 0 ? 0 : errno;
      });
}

BatchCounts Counts() {
  return {ring_batches.load(std::memory_order_relaxed), single_calls.load(std::memory_order_relaxed)};
}

PathChoice ChoiceOf(BatchKind kind) {
  const Measured& m = measured[static_cast<int>(kind)];
  PathChoice c;
  const int state = m.state.load(std::memory_order_acquire);
  c.measured = state != kUnmeasured;
  c.ring = state == kRingWon;
  c.single_ns = m.single_ns.load(std::memory_order_relaxed);
  c.ring_ns = m.ring_ns.load(std::memory_order_relaxed);
  return c;
}

void ForgetChoices() {
  for (Measured& m : measured) m.state.store(kUnmeasured, std::memory_order_release);
}

void SetBatchMode(BatchMode mode) { batch_mode.store(mode, std::memory_order_relaxed); }

}  // namespace epollcr::sys
