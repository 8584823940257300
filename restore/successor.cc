#include "restore/successor.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include "big_buffer.h"
#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/host_file.h"
#include "image/codec.h"
#include "restore/handoff.h"
#include "restore/handoff_wire.h"
#include "restore/resolvers.h"

namespace epollcr::restore {

namespace {

using Clock = std::chrono::steady_clock;
using wire::GetU32;
using wire::GetU64;
using wire::PutU32;
using wire::PutU64;

constexpr std::uint32_t kVersion = 1;
constexpr char kStartMagic[8] = {'E', 'P', 'C', 'R', 'L', 'I', 'V', 'S'};
constexpr char kPauseMagic[8] = {'E', 'P', 'C', 'R', 'L', 'I', 'V', 'E'};
constexpr std::size_t kPauseHeaderBytes = 8 + 4 * 4 + 8 + 4;
constexpr std::size_t kStartHeaderBytes = 8 + 4 + 4 + 8 + 4;
constexpr std::uint32_t kMaxFds = 1u << 20;
constexpr std::uint32_t kMaxReason = 64 * 1024;

// Each host fd of the world with its file, sorted by fd: fd-table slots and roots (HostFds, with the files).
std::vector<std::pair<int, std::shared_ptr<File>>> HostFdsWithFiles(const World& world) {
  std::vector<std::pair<int, std::shared_ptr<File>>> fds;
  auto note = [&](const std::shared_ptr<File>& f) {
    if (f && f->builtin() == File::Builtin::kHost) {
      if (const int fd = static_cast<const HostFile*>(f.get())->fd(); fd >= 0) fds.emplace_back(fd, f);
    }
  };
  std::vector<std::pair<int, std::shared_ptr<File>>> table = world.fds.Snapshot();
  fds.reserve(table.size() + world.roots.size());
  for (const auto& [fd, file] : table) note(file);
  for (const auto& [name, file] : world.roots) note(file);
  std::sort(fds.begin(), fds.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  fds.erase(std::unique(fds.begin(), fds.end(), [](const auto& a, const auto& b) { return a.first == b.first; }),
            fds.end());
  return fds;
}

// Sorted, distinct fds as [first, last] runs.
std::vector<std::pair<int, int>> Runs(std::vector<int> fds) {
  std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
  std::vector<std::pair<int, int>> runs;
  for (int fd : fds) {
    if (!runs.empty() && runs.back().second + 1 == fd) {
      runs.back().second = fd;
    } else {
      runs.emplace_back(fd, fd);
    }
  }
  return runs;
}

// close_range(2) over each run (flags 0: close; CLOSE_RANGE_CLOEXEC: mark close-on-exec), falling back to one call
// per fd where close_range is not there. A run never holds an fd that is not in `fds`.
void OverRuns(const std::vector<int>& fds, unsigned flags) {
  for (const auto& [first, last] : Runs(fds)) {
    if (::syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last), flags) == 0) continue;
    for (int fd = first; fd <= last; ++fd) {
      if (flags == 0) {
        ::close(fd);
      } else {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      }
    }
  }
}

// Takes `fd` out of the sorted `fds`; whether it was there.
bool Forget(std::vector<int>& fds, int fd) {
  auto it = std::lower_bound(fds.begin(), fds.end(), fd);
  if (it == fds.end() || *it != fd) return false;
  fds.erase(it);
  return true;
}

// Waits until `fd` is readable or `deadline` passes (a zero deadline: no limit). ETIMEDOUT when it passed.
std::error_code WaitReadable(int fd, Clock::time_point deadline) {
  for (;;) {
    int timeout = -1;
    if (deadline != Clock::time_point{}) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return std::make_error_code(std::errc::timed_out);
      timeout = static_cast<int>(std::min<long long>(left, 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, timeout);
    if (n > 0) return {};
    if (n < 0 && errno != EINTR) return {errno, std::generic_category()};
  }
}

Clock::time_point DeadlineAfter(std::chrono::milliseconds d) {
  return d.count() > 0 ? Clock::now() + d : Clock::time_point{};
}

// ReceiveAll once `socket` is readable before `deadline`.
Status ReceiveBy(int socket, void* data, std::size_t size, const char* what, Clock::time_point deadline) {
  if (std::error_code e = WaitReadable(socket, deadline)) {
    return wire::Failed(e, std::string("hand-off: wait for ") + what);
  }
  return wire::ReceiveAll(socket, data, size, what);
}

std::string ExitText(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "stopped";
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Faults in `bytes` of heap before the pause, so the pause's allocations find pages that are there already: a fresh
// page costs a fault (BENCHMARKS.md, "Machine": about 2 to 16 us per 4 KiB page on the virtual machines measured),
// and a hand-off of 10,000 connections allocates megabytes. malloc is told to keep what is freed (M_TRIM_THRESHOLD) and
// to serve large blocks from the heap too (M_MMAP_THRESHOLD), which it would otherwise map afresh, fault in and unmap
// each time; so are epollcr's own large blocks, which would otherwise be fresh huge-page mappings (on a virtual machine
// whose host took idle memory back, a huge page costs milliseconds to fault in). Runs on the calling thread, whose
// malloc arena the pause then uses.
void WarmHeap(std::size_t bytes) {
  if (bytes == 0) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  PreferHeapForLarge(32 << 20);  // epollcr's own large blocks (image arenas, load arrays) too
  constexpr std::size_t kBlock = 256 << 10;
  std::vector<void*> blocks;
  for (std::size_t done = 0; done < bytes; done += kBlock) {
    auto* p = static_cast<volatile char*>(std::malloc(kBlock));
    if (p == nullptr) break;
    for (std::size_t at = 0; at < kBlock; at += 4096) p[at] = 0;
    blocks.push_back(const_cast<char*>(p));
  }
  for (void* p : blocks) std::free(p);
}

}  // namespace

const char* SuccessorStageName(SuccessorStage stage) {
  switch (stage) {
    case SuccessorStage::kStarted: return "started";
    case SuccessorStage::kReceiving: return "receiving";
    case SuccessorStage::kRestoring: return "restoring";
    case SuccessorStage::kRestored: return "restored";
    case SuccessorStage::kConfirmed: return "confirmed";
    case SuccessorStage::kServing: return "serving";
  }
  return "?";
}

std::string HandOverReport::ToString() const {
  char text[512];
  std::snprintf(text, sizeof text,
                "entries=%llu host_fds=%llu inherited=%llu sent=%llu stale=%llu image_bytes=%llu pause_ms=%.3f "
                "(save=%.3f send=%.3f restore=%.3f go=%.3f)",
                static_cast<unsigned long long>(entries), static_cast<unsigned long long>(host_fds),
                static_cast<unsigned long long>(inherited), static_cast<unsigned long long>(sent),
                static_cast<unsigned long long>(stale), static_cast<unsigned long long>(image_bytes),
                Ms(serving - paused), Ms(saved - paused), Ms(sent_at - saved), Ms(restored - sent_at),
                Ms(serving - restored));
  return text;
}

namespace {

// Whether a failed receive or send means the successor closed the channel (exited or was killed).
bool ClosedChannel(const Status& s) {
  return s.code == std::errc::broken_pipe || s.code == std::errc::connection_reset;
}

// The successor is gone or refused: why, with how it ended (it is reaped by then).
Status Gone(pid_t pid, int* reaped, const std::string& what) {
  int status = 0;
  // It closed the channel: it is exiting. Wait a little for it to end, then kill it.
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      *reaped = 1;
      return Status::Error(ECHILD, "hand-off: the successor " + ExitText(status) + " " + what);
    }
    ::usleep(1000);
  }
  return Status::Error(ECHILD, "hand-off: the successor closed the channel " + what);
}

}  // namespace

// ---- the predecessor ---------------------------------------------------------------------------------------------

Result<std::unique_ptr<Successor>> Successor::Start(World& world, SuccessorOptions options) {
  if (options.argv.empty()) return Errno(EINVAL);
  std::unique_ptr<Successor> s(new Successor);
  s->options_ = std::move(options);
  std::vector<int> inherit;
  for (auto& [fd, file] : HostFdsWithFiles(world)) {
    s->host_.push_back({fd, file, file.get()});
    inherit.push_back(fd);
  }
  s->kernel_ = KernelResources(world);
  inherit.insert(inherit.end(), s->kernel_.begin(), s->kernel_.end());
  const std::vector<std::pair<int, int>> runs = Runs(inherit);

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return Errno(errno);
  // The successor's end goes high, near the fd limit: fds this process opens after Start take the lowest free
  // numbers, which the successor must find free to put them at (one it holds for itself is re-keyed instead).
  {
    rlimit limit{};
    int top = inherit.empty() ? 0 : *std::max_element(inherit.begin(), inherit.end());
    int floor = top + 1;
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur > 512 &&
        static_cast<int>(limit.rlim_cur) - 256 > floor) {
      floor = static_cast<int>(limit.rlim_cur) - 256;
    }
    const int high = ::fcntl(pair[1], F_DUPFD_CLOEXEC, floor);
    if (high >= 0) {
      ::close(pair[1]);
      pair[1] = high;
    }
  }
  // Everything the child needs is made before the fork: between fork and exec it only calls fcntl, sigprocmask,
  // execv and _exit.
  std::vector<std::string> args = s->options_.argv;
  args.push_back("--handoff-fd");
  args.push_back(std::to_string(pair[1]));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The memory the image will travel in, shared with the successor and faulted in by both before the pause (about
  // 44 bytes of image per fd at 10,000 connections; a larger image goes over the socket instead).
  s->shared_size_ = std::max<std::size_t>(std::size_t{1} << 20, (256 << 10) + 96 * inherit.size());
  s->shared_fd_ = ::memfd_create("epollcr-hand-off", MFD_CLOEXEC);
  if (s->shared_fd_ >= 0) {
    void* map = ::ftruncate(s->shared_fd_, static_cast<off_t>(s->shared_size_)) == 0
                    ? ::mmap(nullptr, s->shared_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, s->shared_fd_, 0)
                    : MAP_FAILED;
    if (map == MAP_FAILED) {
      ::close(s->shared_fd_);
      s->shared_fd_ = -1;
    } else {
      s->shared_ = static_cast<char*>(map);
    }
  }
  std::vector<int> clear = inherit;
  clear.insert(clear.end(), s->options_.keep_fds.begin(), s->options_.keep_fds.end());
  clear.push_back(pair[1]);
  if (s->shared_fd_ >= 0) clear.push_back(s->shared_fd_);

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(pair[0]);
    ::close(pair[1]);
    return Errno(e);
  }
  if (pid == 0) {
    // The successor inherits stdin, stdout, stderr, the world's fds and keep_fds, and nothing else: an fd it held for
    // itself could sit on a number the predecessor gives an fd it opens after Start.
    (void)::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
    for (int fd : clear) ::fcntl(fd, F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pair[1]);
  s->pid_ = pid;
  s->channel_ = pair[0];
  WarmHeap(s->options_.warm_heap_bytes_per_fd * inherit.size());

  // The fds it inherited, as runs: a few bytes, which the socket's buffer takes at once.
  std::string start(kStartHeaderBytes + 8 * runs.size(), '\0');
  auto* p = reinterpret_cast<unsigned char*>(start.data());
  std::memcpy(p, kStartMagic, 8);
  PutU32(p + 8, kVersion);
  PutU32(p + 12, static_cast<std::uint32_t>(s->shared_fd_));
  PutU64(p + 16, s->shared_fd_ >= 0 ? s->shared_size_ : 0);
  PutU32(p + 24, static_cast<std::uint32_t>(runs.size()));
  for (std::size_t i = 0; i < runs.size(); ++i) {
    PutU32(p + kStartHeaderBytes + 8 * i, static_cast<std::uint32_t>(runs[i].first));
    PutU32(p + kStartHeaderBytes + 4 + 8 * i, static_cast<std::uint32_t>(runs[i].second));
  }
  const ssize_t n = ::send(s->channel_, start.data(), start.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(start.size())) {
    const int e = n < 0 ? errno : EMSGSIZE;
    if (e == EPIPE || e == ECONNRESET) {  // it is gone already (its program could not be run, say)
      int reaped = 0;
      Status gone = Gone(s->pid_, &reaped, "as it started");
      if (reaped) s->pid_ = -1;
      s->Abandon();
      return gone;
    }
    s->Abandon();
    return Status::Error(e, std::string("hand-off: tell the successor what it inherited: ") + std::strerror(e));
  }
  return s;
}

Successor::~Successor() {
  if (!done_) Abandon();
  if (shared_ != nullptr) ::munmap(shared_, shared_size_);
  if (shared_fd_ >= 0) ::close(shared_fd_);
}

void Successor::Abandon() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  if (channel_ >= 0) ::close(channel_);
  channel_ = -1;
  done_ = true;
}


Result<bool> Successor::Ready() {
  if (hello_) return true;
  if (done_) return Status::Error(EINVAL, "hand-off: the successor was already handed over or abandoned");
  char buf[8];
  const ssize_t n = ::recv(channel_, buf, 8 - hello_bytes_.size(), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
  if (n <= 0) {
    const int e = errno;
    int reaped = 0;
    Status s = n == 0 || e == ECONNRESET ? Gone(pid_, &reaped, "before it said hello")
                      : Status::Error(e, std::string("hand-off: wait for hello: ") + std::strerror(e));
    if (reaped) pid_ = -1;
    Abandon();
    return s;
  }
  hello_bytes_.append(buf, static_cast<std::size_t>(n));
  if (hello_bytes_.size() < 8) return false;
  if (hello_bytes_.compare(0, 4, "HELO") != 0 ||
      GetU32(reinterpret_cast<const unsigned char*>(hello_bytes_.data() + 4)) != kVersion) {
    Abandon();
    return Status::Error(EBADMSG, "hand-off: the successor did not say hello in this build's words");
  }
  hello_ = true;
  return true;
}

Status Successor::HandOver(World& world, HandOverReport* report) {
  HandOverReport local;
  HandOverReport& rep = report != nullptr ? *report : local;
  if (done_) return Status::Error(EINVAL, "hand-off: the successor was already handed over or abandoned");
  rep.paused = Clock::now();
  auto fail = [&](Status s) {
    Abandon();
    return s;
  };
  auto fail_gone = [&](const std::string& what) {
    int reaped = 0;
    Status s = Gone(pid_, &reaped, what);
    if (reaped) pid_ = -1;
    return fail(s);
  };
  // HELLO, if it has not come yet.
  const Clock::time_point hello_by = DeadlineAfter(options_.confirm_timeout);
  for (;;) {
    Result<bool> ready = Ready();
    if (!ready.ok()) return ready.status();
    if (ready.value()) break;
    if (std::error_code e = WaitReadable(channel_, hello_by)) return fail(wire::Failed(e, "hand-off: wait for hello"));
  }

  // The image and what must travel with it.
  // Encoded straight into the shared memory when it fits, else into a buffer that goes over the socket.
  BigBuffer spill;
  const char* image = nullptr;
  std::size_t image_size = 0;
  bool in_shared = false;
  auto place = [&](std::size_t bytes) -> char* {
    in_shared = shared_ != nullptr && bytes <= shared_size_;
    if (!in_shared) spill = BigBuffer(bytes);
    char* at = in_shared ? shared_ : static_cast<char*>(spill.data());
    image = at;
    return at;
  };
  // What the successor holds already: the same file under the same fd as at Start (a HostFile owns one fd for its
  // whole life, so the same object means the same open file). The same object: its weak reference has not expired
  // and it is at the file's address (two live objects never share one; `file` is alive, the cut holds it). The save
  // names the host files in fd order, as host_ is sorted; one out of order is looked up.
  std::vector<int> send, kept, host_fds;
  std::vector<bool> matched(host_.size(), false);
  std::size_t cursor = 0;
  image::SaveOptions save;
  save.host_open_state = false;
  save.on_host_file = [&](int fd, const File& file) {
    host_fds.push_back(fd);
    if (cursor >= host_.size() || host_[cursor].fd > fd) {
      cursor = static_cast<std::size_t>(
          std::lower_bound(host_.begin(), host_.end(), fd, [](const Inherited& h, int n) { return h.fd < n; }) -
          host_.begin());
    }
    while (cursor < host_.size() && host_[cursor].fd < fd) ++cursor;
    const bool same = cursor < host_.size() && host_[cursor].fd == fd && !host_[cursor].file.expired() &&
                      host_[cursor].address == &file;
    if (same) {
      kept.push_back(fd);
      matched[cursor] = true;
    } else {
      send.push_back(fd);
    }
  };
  // The polls' kernel-side fds, which go along whatever the successor holds (KernelResources' fds, from the cut).
  std::vector<int> kernel;
  save.on_kernel_fds = [&](std::span<const int> fds) { kernel.insert(kernel.end(), fds.begin(), fds.end()); };
  if (Status s = image::SaveImageWith(world, save, place, &image_size); !s.ok()) {
    return fail(Status(s.code, "hand-off: save the image: " + s.message));
  }
  rep.saved = Clock::now();
  rep.image_bytes = image_size;
  std::vector<int> stale;
  for (std::size_t i = 0; i < host_.size(); ++i) {
    if (!matched[i]) stale.push_back(host_[i].fd);  // closed, or its number re-used, since Start
  }
  const std::size_t host_sent = send.size();
  send.insert(send.end(), kernel.begin(), kernel.end());
  stale.insert(stale.end(), kernel_.begin(), kernel_.end());  // every kernel-side fd is sent again
  rep.host_fds = host_fds.size();
  rep.inherited = kept.size();
  rep.sent = send.size();
  rep.stale = stale.size();

  std::string head(kPauseHeaderBytes + 4 * stale.size(), '\0');
  auto* p = reinterpret_cast<unsigned char*>(head.data());
  std::memcpy(p, kPauseMagic, 8);
  PutU32(p + 8, kVersion);
  PutU32(p + 12, static_cast<std::uint32_t>(host_sent));
  PutU32(p + 16, static_cast<std::uint32_t>(kernel.size()));
  PutU32(p + 20, static_cast<std::uint32_t>(stale.size()));
  PutU64(p + 24, image_size);
  PutU32(p + 32, in_shared ? 1 : 0);
  for (std::size_t i = 0; i < stale.size(); ++i) PutU32(p + kPauseHeaderBytes + 4 * i, static_cast<std::uint32_t>(stale[i]));
  Status sent = wire::SendAll(channel_, head.data(), head.size(), "the pause's header");
  if (sent.ok() && !in_shared) sent = wire::SendAll(channel_, image, image_size, "image");
  if (sent.ok()) sent = wire::SendFds(channel_, send, send);
  if (!sent.ok()) return ClosedChannel(sent) ? fail_gone("while it received the world") : fail(sent);
  rep.sent_at = Clock::now();

  // RESTORED or REFUSED.
  const Clock::time_point answer_by = DeadlineAfter(options_.confirm_timeout);
  char answer[4];
  if (std::error_code e = WaitReadable(channel_, answer_by)) {
    return fail(wire::Failed(e, "hand-off: wait for the successor to restore"));
  }
  if (Status s = wire::ReceiveAll(channel_, answer, 4, "the successor's answer"); !s.ok()) {
    return ClosedChannel(s) ? fail_gone("while it restored") : fail(s);
  }
  if (std::memcmp(answer, "FAIL", 4) == 0) {
    unsigned char len[4];
    std::string reason = "(no reason given)";
    if (wire::ReceiveAll(channel_, len, 4, "reason").ok() && GetU32(len) <= kMaxReason) {
      std::string text(GetU32(len), '\0');
      if (wire::ReceiveAll(channel_, text.data(), text.size(), "reason").ok()) reason = text;
    }
    return fail(Status::Error(ECANCELED, "hand-off: the successor refused the world: " + reason));
  }
  if (std::memcmp(answer, "DONE", 4) != 0) {
    return fail(Status::Error(EBADMSG, "hand-off: the successor answered the image with something else"));
  }
  rep.restored = Clock::now();
  if (Status s = wire::SendAll(channel_, "GO!!", 4, "go"); !s.ok()) {
    return ClosedChannel(s) ? fail_gone("before it was told to go") : fail(s);
  }
  if (std::error_code e = WaitReadable(channel_, DeadlineAfter(options_.confirm_timeout))) {
    return fail(wire::Failed(e, "hand-off: wait for the successor to confirm it serves"));
  }
  if (Status s = wire::ReceiveAll(channel_, answer, 4, "the successor's confirmation"); !s.ok()) {
    return ClosedChannel(s) ? fail_gone("before it confirmed it serves") : fail(s);
  }
  if (std::memcmp(answer, "SERV", 4) != 0) {
    return fail(Status::Error(EBADMSG, "hand-off: the successor confirmed with something else"));
  }
  rep.serving = Clock::now();
  // Counted once the successor serves: the pause is over.
  rep.entries = 0;
  std::set<const File*> polls;
  auto count = [&](const std::shared_ptr<File>& f) {
    if (EventPoll* poll = f ? f->AsEventPoll() : nullptr; poll != nullptr && polls.insert(f.get()).second) {
      rep.entries += poll->EntryCount();
    }
  };
  for (const auto& [fd, file] : world.fds.Snapshot()) count(file);
  for (const auto& [name, file] : world.roots) count(file);

  // Committed: the successor serves. Give the world up without touching what is shared, and close this process's
  // copies of the fds (closing one process's fd changes nothing for another that holds the same open file).
  done_ = true;
  const std::vector<int> released = ReleaseHostResources(world);
  CloseUnadopted(released);
  OverRuns(host_fds, 0);
  ::close(channel_);
  channel_ = -1;
  return {};
}

// ---- the successor -----------------------------------------------------------------------------------------------

namespace {

// A restore of a small world of this process's own making (an eventfd watched by a poll, the poll in another), run
// before HELLO: what a first restore initialises once (protobuf's descriptors, which the image's string check reads;
// the code of every stage, paged in) is done before the pause instead of in it. Its outcome does not matter: the
// real restore reports its own.
void Rehearse(const Options& options) {
  World w;
  auto counter = EventFd::Create(1);
  auto inner = EventPoll::Create();
  auto outer = EventPoll::Create();
  if (w.fds.InstallAt(3, counter) || w.fds.InstallAt(4, inner) || w.fds.InstallAt(5, outer)) return;
  if (inner->AddEntry({counter.get(), 3}, EntryFlags::kNone, kEventIn, 3) ||
      outer->AddEntry({inner.get(), 4}, EntryFlags::kNone, kEventIn, 4)) {
    return;
  }
  Result<std::string> bytes = image::SaveImage(w);
  if (!bytes.ok()) return;
  Options plain = options;
  plain.resolvers.clear();  // the world has no host file: no resolver is asked, and none learns of this restore
  World out;
  (void)RestoreBytes(bytes.value(), &out, plain, nullptr);
}

class Acceptor {
 public:
  Acceptor(int channel, World* out, const AcceptOptions& options, AcceptReport* report)
      : channel_(channel), out_(out), options_(options), rep_(*report) {}
  ~Acceptor() {
    if (shared_ != nullptr) ::munmap(const_cast<char*>(shared_), shared_size_);
  }
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  Status Run() {
    if (out_->fds.Count() != 0 || !out_->roots.empty()) return Status::Error(EINVAL, "hand-off: the world is not empty");
    if (Status s = ReceiveStart(); !s.ok()) return Failed(s, false);
    if (Status s = Stage(SuccessorStage::kStarted); !s.ok()) return Failed(s, false);
    unsigned char hello[8];
    std::memcpy(hello, "HELO", 4);
    PutU32(hello + 4, kVersion);
    if (Status s = wire::SendAll(channel_, hello, sizeof hello, "hello"); !s.ok()) return Failed(s, false);
    rep_.hello = Clock::now();

    if (Status s = ReceivePause(); !s.ok()) return Failed(s, true);
    if (Status s = Place(); !s.ok()) return Failed(s, true);
    if (Status s = Stage(SuccessorStage::kRestoring); !s.ok()) return Failed(s, true);
    if (Status s = RestoreWorld(); !s.ok()) return Failed(s, true);
    rep_.restored = Clock::now();
    if (Status s = Stage(SuccessorStage::kRestored); !s.ok()) return Failed(s, true);
    if (Status s = wire::SendAll(channel_, "DONE", 4, "restored"); !s.ok()) return Failed(s, false);
    if (Status s = Stage(SuccessorStage::kConfirmed); !s.ok()) return Failed(s, false);
    char go[4];
    if (Status s = ReceiveBy(channel_, go, 4, "go", DeadlineAfter(options_.timeout)); !s.ok()) return Failed(s, false);
    if (std::memcmp(go, "GO!!", 4) != 0) return Failed(Status::Error(EBADMSG, "hand-off: not told to go"), false);
    rep_.go = Clock::now();
    if (Status s = Stage(SuccessorStage::kServing); !s.ok()) return Failed(s, false);
    // From here on this process serves: the predecessor, if it is still there, waits for this word and exits.
    (void)wire::SendAll(channel_, "SERV", 4, "serving");
    return {};
  }

 private:
  Status Stage(SuccessorStage stage) { return options_.at_stage ? options_.at_stage(stage) : Status{}; }

  Status ReceiveStart() {
    unsigned char head[kStartHeaderBytes];
    if (Status s = wire::ReceiveAll(channel_, head, sizeof head, "the inherited fds"); !s.ok()) return s;
    if (std::memcmp(head, kStartMagic, 8) != 0 || GetU32(head + 8) != kVersion) {
      return Status::Error(EBADMSG, "hand-off: the predecessor did not start this build's hand-off");
    }
    const int shared_fd = static_cast<int>(GetU32(head + 12));
    const std::uint64_t shared_size = GetU64(head + 16);
    const std::uint32_t runs = GetU32(head + 24);
    if (shared_fd >= 0 && shared_size > 0 && shared_size <= options_.restore.read_limits.max_payload + image::kHeaderSize) {
      // Mapped and faulted in now, before the pause; the fd itself is not needed once mapped.
      void* map = ::mmap(nullptr, shared_size, PROT_READ, MAP_SHARED | MAP_POPULATE, shared_fd, 0);
      if (map != MAP_FAILED) {
        shared_ = static_cast<const char*>(map);
        shared_size_ = shared_size;
      }
    }
    if (shared_fd >= 0) ::close(shared_fd);
    if (runs > kMaxFds) return Status::Error(EFBIG, "hand-off: too many inherited fd ranges");
    std::vector<unsigned char> bytes(8 * std::size_t{runs});
    if (Status s = wire::ReceiveAll(channel_, bytes.data(), bytes.size(), "the inherited fds"); !s.ok()) return s;
    for (std::uint32_t i = 0; i < runs; ++i) {
      const auto first = static_cast<int>(GetU32(&bytes[8 * i])), last = static_cast<int>(GetU32(&bytes[8 * i + 4]));
      if (first < 0 || last < first || last - first > static_cast<int>(kMaxFds) ||
          inherited_.size() + static_cast<std::size_t>(last - first) > kMaxFds) {
        return Status::Error(EBADMSG, "hand-off: a bad inherited fd range");
      }
      for (int fd = first; fd <= last; ++fd) inherited_.push_back(fd);
    }
    std::sort(inherited_.begin(), inherited_.end());
    inherited_.erase(std::unique(inherited_.begin(), inherited_.end()), inherited_.end());
    Forget(inherited_, channel_);  // never ours to close
    rep_.inherited = inherited_.size();
    WarmHeap(options_.warm_heap_bytes_per_fd * inherited_.size());
    Rehearse(options_.restore);
    return {};
  }

  Status ReceivePause() {
    unsigned char head[kPauseHeaderBytes];
    if (Status s = ReceiveBy(channel_, head, sizeof head, "the pause", DeadlineAfter(options_.timeout)); !s.ok()) {
      return s;
    }
    rep_.header = Clock::now();
    if (std::memcmp(head, kPauseMagic, 8) != 0 || GetU32(head + 8) != kVersion) {
      return Status::Error(EBADMSG, "hand-off: the predecessor did not send this build's hand-off");
    }
    const std::uint32_t host = GetU32(head + 12), kernel = GetU32(head + 16), stale = GetU32(head + 20);
    const std::uint64_t length = GetU64(head + 24);
    if (host > kMaxFds || kernel > kMaxFds || stale > kMaxFds) {
      return Status::Error(EFBIG, "hand-off: more fds than a process holds");
    }
    if (length > options_.restore.read_limits.max_payload + image::kHeaderSize) {
      return Status::Error(EFBIG, "hand-off: an image of " + std::to_string(length) + " bytes is beyond the limit");
    }
    if (Status s = Stage(SuccessorStage::kReceiving); !s.ok()) return s;
    const bool in_shared = GetU32(head + 32) == 1;
    if (in_shared && (shared_ == nullptr || length > shared_size_)) {
      return Status::Error(EBADMSG, "hand-off: the image is said to be in memory this process does not share");
    }
    std::vector<unsigned char> list(4 * std::size_t{stale});
    if (Status s = wire::ReceiveAll(channel_, list.data(), list.size(), "stale fds"); !s.ok()) return s;
    for (std::uint32_t i = 0; i < stale; ++i) stale_.push_back(static_cast<int>(GetU32(&list[4 * i])));
    if (in_shared) {
      image_ = std::string_view(shared_, length);  // the predecessor leaves it alone until this process answers
    } else {
      received_image_.assign(length, '\0');
      if (Status s = wire::ReceiveAll(channel_, received_image_.data(), length, "image"); !s.ok()) return s;
      image_ = received_image_;
    }
    std::map<int, int> received;
    if (Status s = wire::ReceiveFds(channel_, host + kernel, &received, &opened_); !s.ok()) return s;
    // Sent host fds first, then the kernel-side ones, each batch in the order sent: opened_ follows it.
    std::vector<int> numbers;
    for (const auto& [number, fd] : received) numbers.push_back(number);
    std::map<int, int> by_fd;  // fd here -> number
    for (const auto& [number, fd] : received) by_fd[fd] = number;
    for (std::size_t i = 0; i < opened_.size(); ++i) {
      (i < host ? host_numbers_ : kernel_numbers_).push_back(by_fd.at(opened_[i]));
    }
    received_ = std::move(received);
    rep_.received = opened_.size();
    rep_.received_at = Clock::now();
    return {};
  }

  // The stale inherited fds closed, and each received fd put at its number where that is free.
  Status Place() {
    for (int fd : stale_) {
      if (!std::binary_search(inherited_.begin(), inherited_.end(), fd)) {
        return Status::Error(EBADMSG, "hand-off: fd " + std::to_string(fd) + " is not inherited");
      }
    }
    for (int fd : stale_) {
      if (Forget(inherited_, fd)) ::close(fd);  // a number listed twice is closed once
    }
    rep_.stale = stale_.size();
    int top = -1;
    for (const auto& [number, fd] : received_) top = std::max(top, number);
    // A received fd that sits on another's number moves out of the way first.
    for (auto& [number, fd] : received_) {
      if (fd == number || !received_.count(fd)) continue;
      const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, top + 1);
      if (high < 0) return Status::Error(errno, std::string("hand-off: move a received fd: ") + std::strerror(errno));
      ::close(fd);
      std::replace(opened_.begin(), opened_.end(), fd, high);
      fd = high;
    }
    for (auto& [number, fd] : received_) {
      if (fd == number) continue;
      if (::fcntl(number, F_GETFD) < 0 && errno == EBADF && ::dup3(fd, number, O_CLOEXEC) == number) {
        ::close(fd);
        std::replace(opened_.begin(), opened_.end(), fd, number);
        fd = number;
      } else {
        ++rep_.moved;  // this process holds the number for something else: the restore re-keys it
      }
    }
    rep_.placed = Clock::now();
    return {};
  }

  Status RestoreWorld() {
    // The inherited host fds are close-on-exec again (received ones came so), in a few calls.
    OverRuns(inherited_, CLOSE_RANGE_CLOEXEC);
    // Every host fd the predecessor named, by image fd: the fd here (-1: none). An array, not a map: a node per fd cost
    // a tenth of a millisecond per thousand fds in the pause.
    int top = inherited_.empty() ? -1 : inherited_.back();
    for (int number : host_numbers_) top = std::max(top, number);
    std::vector<int> fds(static_cast<std::size_t>(top + 1), -1);
    for (int fd : inherited_) fds[static_cast<std::size_t>(fd)] = fd;
    for (int number : host_numbers_) fds[static_cast<std::size_t>(number)] = received_.at(number);
    std::vector<int> kernel;  // at their numbers: the polls may take them over as they are
    for (int number : kernel_numbers_) {
      if (received_.at(number) == number) kernel.push_back(number);
    }
    (void)AcceptHandedOver(kernel);
    InheritedFdResolver trusted = InheritedFdResolver::TrustedByNumber(std::move(fds));
    Options options = options_.restore;
    options.resolvers.insert(options.resolvers.begin(), &trusted);
    Status s = RestoreBytes(image_, out_, options, &rep_.restore);
    CloseUnadopted(kernel);  // those no poll took over; the others are the polls' now
    for (int fd : kernel) opened_.erase(std::find(opened_.begin(), opened_.end(), fd));
    if (!s.ok()) return s;
    restored_ = true;
    // Fds that nothing in the world took (a pruned reference's) are closed; the kernel-side ones are the polls' now.
    const std::vector<int> kept = HostFds(*out_);  // sorted
    std::vector<int> unused;
    for (int fd : inherited_) {
      if (!std::binary_search(kept.begin(), kept.end(), fd)) unused.push_back(fd);
    }
    for (int number : host_numbers_) {
      const int fd = received_.at(number);
      if (!std::binary_search(kept.begin(), kept.end(), fd)) unused.push_back(fd);
    }
    for (int number : kernel_numbers_) {
      if (received_.at(number) != number) unused.push_back(received_.at(number));  // not taken over: rebuilt
    }
    OverRuns(unused, 0);
    inherited_.clear();
    opened_.clear();
    return {};
  }

  // Gives everything up without touching what is shared, tells the predecessor why if it still listens (`tell`),
  // and returns `s`.
  Status Failed(Status s, bool tell) {
    if (tell) {
      const std::string reason = s.message;
      unsigned char head[8];
      std::memcpy(head, "FAIL", 4);
      PutU32(head + 4, static_cast<std::uint32_t>(std::min<std::size_t>(reason.size(), kMaxReason)));
      if (wire::SendAll(channel_, head, sizeof head, "refusal").ok()) {
        (void)wire::SendAll(channel_, reason.data(), GetU32(head + 4), "refusal");
      }
    }
    if (restored_) {
      std::vector<int> host = HostFds(*out_);
      CloseUnadopted(ReleaseHostResources(*out_));  // no EPOLL_CTL_DEL on the shared kernel epolls
      out_->roots.clear();
      out_->fds.Clear();
      OverRuns(host, 0);
    }
    std::vector<int> left(inherited_.begin(), inherited_.end());
    left.insert(left.end(), opened_.begin(), opened_.end());
    OverRuns(left, 0);
    inherited_.clear();
    opened_.clear();
    return s;
  }

  const int channel_;
  World* const out_;
  const AcceptOptions& options_;
  AcceptReport& rep_;
  std::vector<int> inherited_;       // inherited fds this call still owns, sorted
  std::vector<int> stale_;
  std::string_view image_;        // in shared_ or received_image_
  std::string received_image_;
  const char* shared_ = nullptr;  // the predecessor's shared memory, mapped (read only)
  std::size_t shared_size_ = 0;
  std::map<int, int> received_;      // number -> fd here
  std::vector<int> opened_;          // received fds this call still owns
  std::vector<int> host_numbers_, kernel_numbers_;
  bool restored_ = false;
};

}  // namespace

Status AcceptHandOff(int channel, World* out, const AcceptOptions& options, AcceptReport* report) {
  AcceptReport local;
  Acceptor acceptor(channel, out, options, report != nullptr ? report : &local);
  return acceptor.Run();
}

}  // namespace epollcr::restore
