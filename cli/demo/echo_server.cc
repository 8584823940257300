#include "demo/echo_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
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

#include "demo/repair_handoff.h"
#include "epollcr/epollcr.h"
#include "restore/successor.h"

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

long long Ns(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// --fail-successor, in the successor: what it does at each stage of taking the world over.
Status FailAt(const std::string& fail, restore::SuccessorStage stage) {
  using restore::SuccessorStage;
  const bool kill = (fail == "start" && stage == SuccessorStage::kStarted) ||
                    (fail == "receive" && stage == SuccessorStage::kReceiving) ||
                    (fail == "confirm" && stage == SuccessorStage::kRestored) ||
                    (fail == "go" && stage == SuccessorStage::kServing);
  if (kill) raise(SIGKILL);
  if (fail == "restore" && stage == SuccessorStage::kRestoring) {
    return Status::Error(ECANCELED, "refused by --fail-successor restore");
  }
  if (fail == "timeout" && stage == SuccessorStage::kRestored) {
    for (;;) pause();  // never answers: the predecessor's wait runs out
  }
  return {};
}

class Server {
 public:
  explicit Server(const EchoServerOptions& options) : options_(options) {}

  int Run() {
    if (!Start()) return 1;
    Event events[128];
    for (;;) {
      if (successor_) PollSuccessor();
      // While a successor starts, the loop looks at it every millisecond (a ready one waits for 'c').
      Result<int> n = WaitEvents(events, 128, successor_ && !said_ready_ ? 1 : -1);
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
          if (command == 's') StartSuccessor();
          if (command == 'c' && !options_.repair_image.empty()) {
            HandOverByValue();
          } else if (command == 'c') {
            handover_asked_ = true;
            StartSuccessor();
          }
        } else {
          Serve(fd, events[i].events);
        }
      }
    }
  }

 private:
  bool Start() {
    RegisterFileType(std::string(kOutboxKind), &Outbox::Load);  // EEXIST when run twice in one process: fine
    if (options_.handoff_fd >= 0) return TakeOver();
    if (!options_.restore_image.empty()) return RestoreImage();
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

  // The successor's side of the hand-off (restore/successor.h).
  bool TakeOver() {
    if (options_.kernel_epoll) return Fail("restore", "a server on a kernel epoll has no checkpoint") == 0;
    restore::AcceptOptions accept;
    const std::string fail = options_.fail_successor;
    if (!fail.empty()) accept.at_stage = [fail](restore::SuccessorStage stage) { return FailAt(fail, stage); };
    restore::AcceptReport report;
    epollcr::Status s = restore::AcceptHandOff(options_.handoff_fd, &world_, accept, &report);
    close(options_.handoff_fd);
    if (!s.ok()) return Fail("take the world over", s.message) == 0;
    Adopt();
    const restore::Report& r = report.restore;
    char line[512];
    std::snprintf(line, sizeof line,
                  "restored pid=%d registrations=%" PRIu64 " host_files=%" PRIu64 " inherited=%" PRIu64
                  " received=%" PRIu64 " ms=%.3f (receive=%.3f place=%.3f read=%.3f validate=%.3f resolve=%.3f "
                  "build=%.3f after_load=%.3f)",
                  static_cast<int>(getpid()), r.entries, r.host_files, report.inherited, report.received,
                  Ms(report.restored - report.header), Ms(report.received_at - report.header),
                  Ms(report.placed - report.received_at), Ms(r.read), Ms(r.validate), Ms(r.resolve), Ms(r.build),
                  Ms(r.after_load));
    Status(line);
    return true;
  }

  // Takes the world from the objects a restore put in its roots.
  void Adopt() {
    poll_ = std::static_pointer_cast<EventPoll>(world_.roots.at("poll"));
    outbox_ = std::static_pointer_cast<Outbox>(world_.roots.at("outbox"));
    listen_fd_ = static_cast<HostFile*>(world_.roots.at("listener").get())->fd();
    control_fd_ = static_cast<HostFile*>(world_.roots.at("control").get())->fd();
  }

  // The fresh process of a hand-off by value: the world from the image file alone (its sockets rebuilt).
  bool RestoreImage() {
    const auto started = std::chrono::steady_clock::now();
    restore::Report r;
    std::string lock;
    epollcr::Status s = RestoreByValue(options_.restore_image, &world_, &r, &lock);
    if (!s.ok()) return Fail("restore " + options_.restore_image, s.message) == 0;
    Adopt();
    const auto serving = std::chrono::steady_clock::now();
    char line[512];
    std::snprintf(line, sizeof line,
                  "restored pid=%d pause_end_ns=%lld registrations=%" PRIu64 " host_files=%" PRIu64
                  " unlocked=%s ms=%.3f (read=%.3f validate=%.3f resolve=%.3f build=%.3f after_load=%.3f)",
                  static_cast<int>(getpid()), Ns(serving), r.entries, r.host_files,
                  lock.empty() ? "none" : lock.c_str(), Ms(serving - started), Ms(r.read),
                  Ms(r.validate), Ms(r.resolve), Ms(r.build), Ms(r.after_load));
    Status(line);
    return true;
  }

  // 'c' with repair_image: the world by value into the image file, the sockets closed silently, a fresh process
  // started on the file, and this one gone. On a failed save the server serves on.
  void HandOverByValue() {
    if (!poll_) {
      Fail("hand-off", "the loop runs on a kernel epoll, which a checkpoint cannot carry");
      return;
    }
    const auto paused = std::chrono::steady_clock::now();
    RepairSave saved;
    epollcr::Status s = SaveByValueAndClose(world_, options_.repair_image, &saved);
    if (!s.ok()) {
      Resumed("save", s.message);
      return;
    }
    const pid_t fresh = fork();
    if (fresh == 0) {
      std::vector<std::string> args = options_.exec_argv;
      args.insert(args.end(), {"--control-fd", std::to_string(control_fd_), "--status-fd",
                               std::to_string(options_.status_fd), "--restore-image", options_.repair_image});
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    char line[512];
    std::snprintf(line, sizeof line,
                  "handoff pid=%d to=%d mode=repair pause_start_ns=%lld connections=%zu listeners=%zu image_bytes=%zu "
                  "lock=%s save_ms=%.3f write_ms=%.3f hold_ms=%.3f",
                  static_cast<int>(getpid()), static_cast<int>(fresh), Ns(paused), saved.connections,
                  saved.listeners, saved.image_bytes, saved.lock.empty() ? "none" : saved.lock.c_str(),
                  Ms(saved.save), Ms(saved.write), Ms(saved.hold));
    Status(line);
    _exit(fresh > 0 ? 0 : 1);  // the sockets are closed; the fresh process rebuilds them from the file
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

  // Blocks until at least one event or the timeout (-1: none); the kernel's are copied into epollcr's Event (the same fields).
  Result<int> WaitEvents(Event* events, int max, int timeout_ms) {
    if (poll_) return poll_->Wait(events, max, timeout_ms);
    epoll_event kernel[128];
    const int n = epoll_wait(kernel_epoll_.get(), kernel, std::min(max, 128), timeout_ms);
    if (n < 0) return Errno(errno);
    for (int i = 0; i < n; ++i) {
      events[i].events = kernel[i].events;
      events[i].SetData(kernel[i].data.u64);
    }
    return n;
  }

  // Starts the successor (a new program image, with the world's fds) and serves on until it is ready.
  void StartSuccessor() {
    if (!poll_) {
      Fail("hand-off", "the loop runs on a kernel epoll, which a checkpoint cannot carry");
      return;
    }
    if (successor_) return;  // one at a time
    restore::SuccessorOptions options;
    options.argv = options_.exec_argv;
    if (options_.fail_successor == "exec") options.argv[0] = "/nonexistent/epollcr-successor";
    options.argv.insert(options.argv.end(), {"--status-fd", std::to_string(options_.status_fd)});
    if (!options_.fail_successor.empty()) options.argv.insert(options.argv.end(), {"--fail-successor", options_.fail_successor});
    options.keep_fds = options_.keep_fds;
    if (options_.status_fd >= 0) options.keep_fds.push_back(options_.status_fd);
    options.confirm_timeout = std::chrono::milliseconds(options_.confirm_timeout_ms);
    requested_ = std::chrono::steady_clock::now();
    Result<std::unique_ptr<restore::Successor>> started = restore::Successor::Start(world_, std::move(options));
    if (!started.ok()) {
      Resumed("start", started.status().message);
      return;
    }
    successor_ = std::move(started).value();
  }

  // Hands the world over once the successor is ready; exits when it serves, serves on if it failed.
  void PollSuccessor() {
    Result<bool> ready = successor_->Ready();
    if (!ready.ok()) {
      successor_.reset();
      handover_asked_ = said_ready_ = false;
      Resumed("hello", ready.status().message);
      return;
    }
    if (!ready.value()) return;
    const pid_t to = successor_->pid();
    char line[640];
    if (!said_ready_) {
      std::snprintf(line, sizeof line, "successor pid=%d started_ms=%.3f", static_cast<int>(to),
                    Ms(std::chrono::steady_clock::now() - requested_));
      Status(line);
      said_ready_ = true;
    }
    if (!handover_asked_) return;
    restore::HandOverReport report;
    epollcr::Status s = successor_->HandOver(world_, &report);
    if (!s.ok()) {
      successor_.reset();
      handover_asked_ = said_ready_ = false;
      Resumed("handover", s.message);
      return;
    }
    std::snprintf(line, sizeof line, "handoff pid=%d to=%d pause_start_ns=%lld pause_end_ns=%lld %s",
                  static_cast<int>(getpid()), static_cast<int>(to), Ns(report.paused), Ns(report.serving),
                  report.ToString().c_str());
    Status(line);
    _exit(0);  // the successor owns the sockets now; this one touches nothing on its way out
  }

  void Resumed(const std::string& stage, const std::string& reason) {
    std::fprintf(stderr, "echo server: the successor failed (%s): %s; serving on\n", stage.c_str(), reason.c_str());
    std::string text = reason;
    std::replace(text.begin(), text.end(), '\n', ' ');
    Status("resumed pid=" + std::to_string(getpid()) + " stage=" + stage + " reason=" + text);
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
  std::unique_ptr<restore::Successor> successor_;  // started, not yet handed the world
  std::chrono::steady_clock::time_point requested_;
  bool said_ready_ = false;      // the "successor" line is out
  bool handover_asked_ = false;  // 'c': hand over as soon as the successor is ready
  std::map<int, EventMask> interest_;  // what each connection's entry asks for now (not saved: rebuilt as needed)
  int listen_fd_ = -1;
  int control_fd_ = -1;
};

}  // namespace

const std::vector<std::string>& FailSuccessorStages() {
  static const std::vector<std::string> stages = {"exec", "start", "receive", "restore", "confirm", "timeout", "go"};
  return stages;
}

int RunEchoServer(const EchoServerOptions& options) {
  Server server(options);
  return server.Run();
}

}  // namespace epollcr::cli
