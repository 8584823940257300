#include "demo/echo_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "epollcr/epollcr.h"
#include "restore/handoff.h"

namespace epollcr::cli {

namespace {

constexpr std::size_t kMaxOwed = 256 * 1024;  // stop reading a client that owes this much until it reads
constexpr std::string_view kOutboxKind = "epollcr-demo.outbox";

// The bytes the server still owes each connection (read, not yet echoed), by fd. An embedder file: it goes into
// the checkpoint with everything else, so a hand-off loses no byte that was read but not yet written back.
class Outbox final : public SavableFile {
 public:
  std::map<int, std::string> owed;

  EventMask Readiness(EventMask) override { return 0; }
  std::string_view TypeName() const override { return "outbox"; }
  std::string_view StateKind() const override { return kOutboxKind; }
  Result<std::string> SaveState() const override {
    std::string out;
    for (const auto& [fd, bytes] : owed) {
      out += std::to_string(fd) + " " + std::to_string(bytes.size()) + "\n" + bytes;
    }
    return out;
  }
  static Result<std::shared_ptr<File>> Load(std::string_view state) {
    auto box = MakeFile<Outbox>();
    while (!state.empty()) {
      int fd = 0;
      unsigned long long size = 0;
      const std::size_t eol = state.find('\n');
      if (eol == std::string_view::npos ||
          std::sscanf(std::string(state.substr(0, eol)).c_str(), "%d %llu", &fd, &size) != 2 ||
          size > state.size() - eol - 1) {
        return Errno(EINVAL);
      }
      box->owed[fd] = std::string(state.substr(eol + 1, size));
      state.remove_prefix(eol + 1 + size);
    }
    return std::shared_ptr<File>(std::move(box));
  }
};

double Ms(std::chrono::steady_clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

class Server {
 public:
  explicit Server(const EchoServerOptions& options) : options_(options) {}

  int Run() {
    if (!Start()) return 1;
    Event events[128];
    for (;;) {
      Result<int> n = WaitEvents(events, 128);
      if (!n.ok()) {
        if (n.error() == Errno(EINTR)) continue;
        return Fail("wait", n.error().message());
      }
      for (int i = 0; i < n.value(); ++i) {
        const int fd = static_cast<int>(events[i].Data());
        if (fd == listen_fd_) {
          Accept();
        } else if (fd == control_fd_) {
          char command = 0;
          if (read(control_fd_, &command, 1) <= 0) command = 'q';  // the driver went away
          if (command == 'q') {
            Status("quit pid=" + std::to_string(getpid()));
            return 0;
          }
          if (command == 'c') HandOver();  // returns only if the hand-off failed
        } else {
          Serve(fd, events[i].events);
        }
      }
    }
  }

 private:
  bool Start() {
    RegisterFileType(std::string(kOutboxKind), &Outbox::Load);  // EEXIST when run twice in one process: fine
    if (!options_.restore_image.empty()) return Restore();
    listen_fd_ = options_.listen_fd;
    control_fd_ = options_.control_fd;
    if (options_.kernel_epoll) {
      kernel_epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
      if (!kernel_epoll_.valid()) return Fail("epoll_create1", std::strerror(errno)) == 0;
    } else {
      poll_ = EventPoll::Create();
      world_.roots["poll"] = poll_;
    }
    outbox_ = MakeFile<Outbox>();
    world_.roots["outbox"] = outbox_;
    for (int fd : {listen_fd_, control_fd_}) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      if (!Watch(fd, kEventIn)) return false;
    }
    world_.roots["listener"] = world_.fds.Get(listen_fd_);
    world_.roots["control"] = world_.fds.Get(control_fd_);
    Status("listening pid=" + std::to_string(getpid()));
    return true;
  }

  bool Restore() {
    if (options_.kernel_epoll) return Fail("restore", "a server on a kernel epoll has no checkpoint") == 0;
    const auto started = std::chrono::steady_clock::now();
    restore::Report report;
    epollcr::Status s = restore::RestoreAfterExec(options_.restore_image, &world_, {}, &report);
    unlink(options_.restore_image.c_str());
    if (!s.ok()) return Fail("restore " + options_.restore_image, s.message) == 0;
    poll_ = std::static_pointer_cast<EventPoll>(world_.roots.at("poll"));
    outbox_ = std::static_pointer_cast<Outbox>(world_.roots.at("outbox"));
    listen_fd_ = static_cast<HostFile*>(world_.roots.at("listener").get())->fd();
    control_fd_ = static_cast<HostFile*>(world_.roots.at("control").get())->fd();
    char line[256];
    std::snprintf(line, sizeof line,
                  "restored pid=%d registrations=%" PRIu64 " host_files=%" PRIu64
                  " ms=%.3f (read=%.3f validate=%.3f resolve=%.3f build=%.3f after_load=%.3f)",
                  static_cast<int>(getpid()), report.entries, report.host_files,
                  Ms(std::chrono::steady_clock::now() - started), Ms(report.read), Ms(report.validate),
                  Ms(report.resolve), Ms(report.build), Ms(report.after_load));
    Status(line);
    return true;
  }

  bool Watch(int fd, EventMask mask) {
    Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
    if (!file.ok()) return Fail("host file for fd " + std::to_string(fd), file.error().message()) == 0;
    if (world_.fds.InstallAt(fd, file.value()) || !Register(file.value().get(), fd, mask)) {
      return Fail("register fd " + std::to_string(fd), "refused") == 0;
    }
    return true;
  }

  void Accept() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN: all taken; anything else: the client is gone already
      if (!Watch(fd, kEventIn)) close(fd);
    }
  }

  void Serve(int fd, EventMask events) {
    std::shared_ptr<File> file = world_.fds.Get(fd);
    if (!file) return;
    std::string& owed = outbox_->owed[fd];
    bool closed = (events & (kEventErr | kEventHup)) != 0 && (events & kEventIn) == 0;
    if ((events & kEventIn) && owed.size() < kMaxOwed) {
      char buf[64 * 1024];
      Result<std::size_t> n = file->Read(std::as_writable_bytes(std::span(buf)));
      if (n.ok() && n.value() > 0) {
        owed.append(buf, n.value());
      } else if (!n.ok() ? n.error() != Errno(EAGAIN) : true) {
        closed = true;  // EOF or a reset
      }
    }
    while (!owed.empty() && !closed) {
      Result<std::size_t> n = file->Write(std::as_bytes(std::span(owed.data(), owed.size())));
      if (!n.ok()) {
        closed = n.error() != Errno(EAGAIN);
        break;
      }
      owed.erase(0, n.value());
    }
    if (closed) {
      Unregister(file.get(), fd);
      outbox_->owed.erase(fd);
      world_.fds.Close(fd);
      return;
    }
    // Level-triggered: wait for room while something is owed, and stop reading a client that does not read.
    EventMask want = (owed.empty() ? 0 : kEventOut) | (owed.size() < kMaxOwed ? kEventIn : 0);
    if (want != interest_[fd]) {
      Rearm(file.get(), fd, want);
      interest_[fd] = want;
    }
    if (owed.empty()) outbox_->owed.erase(fd);
  }

  // The loop's poll: the EventPoll, or the kernel epoll that stands in for it (kernel_epoll). Every entry is
  // level-triggered, with the fd as its data.
  bool Register(File* file, int fd, EventMask mask) {
    if (poll_) return !poll_->AddEntry({file, fd}, EntryFlags::kNone, mask, static_cast<std::uint64_t>(fd));
    return KernelCtl(EPOLL_CTL_ADD, fd, mask);
  }

  void Rearm(File* file, int fd, EventMask mask) {
    if (poll_) {
      poll_->UpdateEntry({file, fd}, EntryFlags::kNone, mask, static_cast<std::uint64_t>(fd));
    } else {
      KernelCtl(EPOLL_CTL_MOD, fd, mask);
    }
  }

  void Unregister(File* file, int fd) {
    if (poll_) {
      poll_->RemoveEntry({file, fd});
    } else {
      KernelCtl(EPOLL_CTL_DEL, fd, 0);
    }
  }

  bool KernelCtl(int op, int fd, EventMask mask) {
    epoll_event event{};
    event.events = mask;  // epollcr's event bits are Linux's
    event.data.u64 = static_cast<std::uint64_t>(fd);
    return epoll_ctl(kernel_epoll_.get(), op, fd, &event) == 0;
  }

  // Blocks until at least one event; the kernel's are copied into epollcr's Event (the same fields).
  Result<int> WaitEvents(Event* events, int max) {
    if (poll_) return poll_->Wait(events, max, -1);
    epoll_event kernel[128];
    const int n = epoll_wait(kernel_epoll_.get(), kernel, std::min(max, 128), -1);
    if (n < 0) return Errno(errno);
    for (int i = 0; i < n; ++i) {
      events[i].events = kernel[i].events;
      events[i].SetData(kernel[i].data.u64);
    }
    return n;
  }

  // Checkpoint, fork, and exec the new program image in the child; the old process exits.
  void HandOver() {
    if (!poll_) {
      Fail("checkpoint", "the loop runs on a kernel epoll, which a checkpoint cannot carry");
      return;
    }
    const auto started = std::chrono::steady_clock::now();
    const char* tmp = std::getenv("TMPDIR");
    const std::string dir = !options_.image_dir.empty() ? options_.image_dir : (tmp != nullptr && *tmp ? tmp : "/tmp");
    const std::string image = dir + "/epollcr-echo-" + std::to_string(getpid()) + ".epcr";
    Result<std::vector<int>> kept = restore::PrepareExec(world_, image);
    if (!kept.ok()) {
      Fail("checkpoint", kept.status().message);
      return;
    }
    struct stat st {};
    stat(image.c_str(), &st);
    if (options_.status_fd >= 0) fcntl(options_.status_fd, F_SETFD, 0);
    char line[256];
    std::snprintf(line, sizeof line, "checkpoint pid=%d registrations=%zu image_bytes=%lld ms=%.3f",
                  static_cast<int>(getpid()), poll_->EntryCount(), static_cast<long long>(st.st_size),
                  Ms(std::chrono::steady_clock::now() - started));
    Status(line);
    std::vector<std::string> args = options_.exec_argv;
    args.insert(args.end(), {"--restore", image, "--status-fd", std::to_string(options_.status_fd)});
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t child = fork();
    if (child == 0) {
      execv(argv[0], argv.data());
      std::fprintf(stderr, "echo server: exec %s: %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
    if (child < 0) {
      Fail("fork", std::strerror(errno));
      return;
    }
    _exit(0);  // the new process owns the sockets now; this one touches nothing on its way out
  }

  void Status(const std::string& line) {
    if (options_.status_fd < 0) return;
    const std::string text = line + "\n";
    (void)!write(options_.status_fd, text.data(), text.size());
  }

  int Fail(const std::string& what, const std::string& why) {
    std::fprintf(stderr, "echo server: %s: %s\n", what.c_str(), why.c_str());
    return 1;
  }

  EchoServerOptions options_;
  World world_;
  std::shared_ptr<EventPoll> poll_;  // null when the loop runs on kernel_epoll_
  UniqueFd kernel_epoll_;
  std::shared_ptr<Outbox> outbox_;
  std::map<int, EventMask> interest_;  // what each connection's entry asks for now (not saved: rebuilt as needed)
  int listen_fd_ = -1;
  int control_fd_ = -1;
};

}  // namespace

int RunEchoServer(const EchoServerOptions& options) {
  Server server(options);
  return server.Run();
}

}  // namespace epollcr::cli
