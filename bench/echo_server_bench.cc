// The echo server of `epollcr demo` and examples/echo_server (cli/demo/echo_server.h) under load from loopback
// clients (BENCHMARKS.md "Host fds: round trip and echo server"): its loop on an EventPoll over host files, against
// the same server with its loop on a kernel epoll (EchoServerOptions::kernel_epoll: the same code, only the poll's
// add/modify/remove/wait calls differ), in the same run:
//   BM_EchoServer/kernel/clients:N    the server on a kernel epoll
//   BM_EchoServer/epollcr/clients:N   the server on an EventPoll (every entry a kernel entry: docs/engine.md)
// for N = 100 and 1,000 clients.
//
// Per repetition (one iteration): the benchmark forks; the child runs the server (RunEchoServer) on a listening
// socket bound to 127.0.0.1, port 0 (the kernel picks a free port), and _exits when its control pipe reaches EOF
// (or, should this process die first, on SIGKILL: PR_SET_PDEATHSIG). This process is the load generator, one
// thread on a kernel epoll: N TCP clients (TCP_NODELAY, non-blocking once connected), each keeping exactly one
// 64-byte request in flight: write 64 bytes, read until the 64 bytes have come back (checked byte for byte),
// write the next. After a warm-up of kWarmUpSeconds (not counted), the requests completed in the next
// kWindowSeconds of wall clock are counted. Then the clients close, the control pipe closes, and the server is
// reaped (waitpid; SIGKILL after kReapSeconds if it has not exited, and the repetition fails).
//
// The server process and the load generator are pinned to two different CPUs (the one the benchmark thread was on,
// and the next one it may use: cpu_pinning.h), as an idle 2-CPU machine runs them; unpinned, the scheduler sometimes
// runs them in turns on one CPU, with other figures. The counter `pinned` is 1 when both pins took.
//
// Reported, per repetition:
//   rps               requests completed per second of wall clock in the window (also items_per_second; the
//                     iteration's real_time is the window: UseManualTime)
//   server_cpu_ns     the server process's CPU time (user + system, clock_getcpuclockid) per request in the window
//   rps_server_cpu    requests per second of server CPU time (1e9 / server_cpu_ns): the server's throughput if it
//                     had a CPU to itself, whatever the load generator's share of the machine
//   server_cpu_share  server CPU seconds per wall-clock second in the window (1.0: it used a whole CPU)
//   client_cpu_share  the same for the load generator's thread (its cpu_time is the window's)
//   requests, warm_up_s, window_s (measured), and per_request / units_per_iteration (worlds.h CountWork: requests per
//   iteration).
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cpu_pinning.h"
#include "demo/echo_server.h"
#include "epollcr/unique_fd.h"
#include "worlds.h"

namespace epollcr::bench {
namespace {

constexpr double kWarmUpSeconds = 0.5;
constexpr double kWindowSeconds = 1.0;
constexpr double kReapSeconds = 5.0;
constexpr std::size_t kRequestBytes = 64;
constexpr int kMaxEvents = 256;  // the load generator's events array
constexpr int kStallMs = 2000;   // a wait this long with no event: the server is stuck; the repetition fails

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

Clock::duration Duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double CpuSeconds(clockid_t clock) {
  timespec ts{};
  if (::clock_gettime(clock, &ts) != 0) return -1;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// The forked server: started by Start, stopped and reaped by Stop or the destructor (which never leaves it behind).
class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { Stop(); }

  // Listens on 127.0.0.1, port 0, and forks the server, pinned to `cpu` (if not -1). Returns an empty string, or
  // what failed.
  std::string Start(bool kernel_epoll, int cpu) {
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener.valid()) return Failure("socket", errno);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return Failure("bind", errno);
    if (::listen(listener.get(), 4096) != 0) return Failure("listen", errno);
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return Failure("getsockname", errno);
    }
    address_ = addr;
    int control[2];
    if (::pipe2(control, O_CLOEXEC) != 0) return Failure("pipe2", errno);
    UniqueFd control_read(control[0]);
    control_write_ = UniqueFd(control[1]);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) return Failure("fork", errno);
    if (pid_ == 0) {
      // The child: only the server from here on, and _exit (never exit: the parent's stdio buffers, the benchmark
      // report among them, must not be flushed twice).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(3);
      ::signal(SIGPIPE, SIG_IGN);  // a client gone at the end must not kill the server mid-write
      if (cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (::sched_setaffinity(0, sizeof one, &one) != 0) ::_exit(4);
      }
      control_write_.Reset();  // so that the parent's close is the server's EOF
      int status = 2;
      try {
        cli::EchoServerOptions options;
        options.listen_fd = listener.Release();
        options.control_fd = control_read.Release();
        options.kernel_epoll = kernel_epoll;
        status = cli::RunEchoServer(options);
      } catch (...) {
        status = 2;
      }
      ::_exit(status);
    }
    if (::clock_getcpuclockid(pid_, &cpu_clock_) != 0) return "clock_getcpuclockid of the server failed";
    return {};
  }

  const sockaddr_in& address() const { return address_; }
  clockid_t cpu_clock() const { return cpu_clock_; }

  // Closes the control pipe (the server quits) and reaps the server. Returns an empty string if it exited 0.
  std::string Stop() {
    if (pid_ <= 0) return {};
    control_write_.Reset();
    const pid_t pid = std::exchange(pid_, -1);
    const Clock::time_point deadline = Clock::now() + Duration(kReapSeconds);
    int status = 0;
    for (;;) {
      const pid_t got = ::waitpid(pid, &status, WNOHANG);
      if (got == pid) break;
      if (got < 0 && errno != EINTR) return Failure("waitpid", errno);
      if (Clock::now() >= deadline) {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return "the echo server did not quit when its control pipe closed (killed)";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
    return WIFEXITED(status) ? "the echo server exited with status " + std::to_string(WEXITSTATUS(status))
                             : "the echo server died of signal " + std::to_string(WTERMSIG(status));
  }

 private:
  pid_t pid_ = -1;
  UniqueFd control_write_;
  sockaddr_in address_{};
  clockid_t cpu_clock_{};
};

// The load generator: N clients in one kernel epoll (level-triggered EPOLLIN, data = the client's index).
class LoadGenerator {
 public:
  // Connects n clients to `server` and sends each one's first request. Returns an empty string, or what failed.
  std::string Connect(const sockaddr_in& server, int n) {
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return Failure("epoll_create1", errno);
    clients_.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      Client& c = clients_[static_cast<std::size_t>(i)];
      c.fd = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!c.fd.valid()) return Failure("socket", errno);
      const int one = 1;
      if (::setsockopt(c.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        return Failure("setsockopt TCP_NODELAY", errno);
      }
      if (::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&server), sizeof server) != 0) {
        return Failure("connect to 127.0.0.1", errno);
      }
      if (::fcntl(c.fd.get(), F_SETFL, ::fcntl(c.fd.get(), F_GETFL) | O_NONBLOCK) != 0) {
        return Failure("fcntl O_NONBLOCK", errno);
      }
      for (std::size_t k = 0; k < kRequestBytes; ++k) {  // a request that names its client, to check the echo
        c.request[k] = static_cast<char>((static_cast<std::size_t>(i) * 31 + k) & 0xff);
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = static_cast<std::uint64_t>(i);
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev) != 0) return Failure("epoll_ctl ADD", errno);
    }
    for (Client& c : clients_) {
      if (std::string err = Send(c); !err.empty()) return err;
    }
    return {};
  }

  // Serves replies until `until`; adds the requests completed to *completed. Returns an empty string, or what failed.
  std::string Run(Clock::time_point until, std::uint64_t* completed) {
    epoll_event events[kMaxEvents];
    while (Clock::now() < until) {
      const int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, kStallMs);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Failure("epoll_wait", errno);
      }
      if (n == 0) return "no reply from the echo server for 2 s";
      for (int i = 0; i < n; ++i) {
        Client& c = clients_[static_cast<std::size_t>(events[i].data.u64)];
        const ssize_t got = ::read(c.fd.get(), c.reply.data() + c.received, kRequestBytes - c.received);
        if (got < 0) {
          if (errno == EAGAIN || errno == EINTR) continue;
          return Failure("read from the echo server", errno);
        }
        if (got == 0) return "the echo server closed a connection";
        c.received += static_cast<std::size_t>(got);
        if (c.received < kRequestBytes) continue;
        if (c.reply != c.request) return "the echo server sent back other bytes than the request";
        ++*completed;
        if (std::string err = Send(c); !err.empty()) return err;
      }
    }
    return {};
  }

  void Close() {
    clients_.clear();
    epoll_.Reset();
  }

 private:
  struct Client {
    UniqueFd fd;
    std::size_t received = 0;
    std::array<char, kRequestBytes> request{};
    std::array<char, kRequestBytes> reply{};
  };

  // Writes the client's 64-byte request (a fresh socket's send buffer always takes 64 bytes: one request is in
  // flight at a time) and starts waiting for its reply.
  static std::string Send(Client& c) {
    c.received = 0;
    ssize_t put;
    do {
      put = ::send(c.fd.get(), c.request.data(), kRequestBytes, MSG_NOSIGNAL);
    } while (put < 0 && errno == EINTR);
    if (put != static_cast<ssize_t>(kRequestBytes)) {
      return put < 0 ? Failure("send to the echo server", errno) : "a 64-byte request was sent in part";
    }
    return {};
  }

  UniqueFd epoll_;
  std::vector<Client> clients_;
};

void BM_EchoServer(benchmark::State& state, bool kernel_epoll) {
  const int clients = static_cast<int>(state.range(0));
  const int load_cpu_id = CurrentCpu();
  const int server_cpu_id = OtherAllowedCpu(load_cpu_id);
  ServerProcess server;
  if (std::string err = server.Start(kernel_epoll, server_cpu_id); !err.empty()) {
    return state.SkipWithError(err.c_str());
  }
  const PinnedThread pin(server_cpu_id >= 0 ? load_cpu_id : -1);
  LoadGenerator load;
  if (std::string err = load.Connect(server.address(), clients); !err.empty()) {
    return state.SkipWithError(err.c_str());
  }
  std::uint64_t requests = 0;
  double warm_up = 0, window = 0, server_cpu = 0, client_cpu = 0;
  std::string failure;
  for (auto _ : state) {
    state.PauseTiming();  // the warm-up is not counted on either clock
    const Clock::time_point warm_up_start = Clock::now();
    std::uint64_t uncounted = 0;
    failure = load.Run(warm_up_start + Duration(kWarmUpSeconds), &uncounted);
    warm_up = Seconds(Clock::now() - warm_up_start);
    state.ResumeTiming();
    if (!failure.empty()) break;
    const double server_cpu_start = CpuSeconds(server.cpu_clock());
    const double client_cpu_start = CpuSeconds(CLOCK_THREAD_CPUTIME_ID);
    const Clock::time_point start = Clock::now();
    failure = load.Run(start + Duration(kWindowSeconds), &requests);
    window = Seconds(Clock::now() - start);
    server_cpu = CpuSeconds(server.cpu_clock()) - server_cpu_start;
    client_cpu = CpuSeconds(CLOCK_THREAD_CPUTIME_ID) - client_cpu_start;
    state.SetIterationTime(window);
  }
  load.Close();
  const std::string stopped = server.Stop();
  if (!failure.empty()) return state.SkipWithError(failure.c_str());
  if (!stopped.empty()) return state.SkipWithError(stopped.c_str());
  if (requests == 0 || server_cpu <= 0) return state.SkipWithError("no request completed in the window");
  const auto count = static_cast<double>(requests);
  state.counters["pinned"] = pin.pinned() ? 1 : 0;
  state.counters["requests"] = count;
  state.counters["warm_up_s"] = warm_up;
  state.counters["window_s"] = window;
  state.counters["rps"] = count / window;
  state.counters["server_cpu_ns"] = server_cpu * 1e9 / count;
  state.counters["rps_server_cpu"] = count / server_cpu;
  state.counters["server_cpu_share"] = server_cpu / window;
  state.counters["client_cpu_share"] = client_cpu / window;
  CountWork(state, "per_request", count);
}

// The window and the warm-up are fixed (one iteration per repetition): 4 cases x (0.5 s + 1 s + set-up) per
// repetition.
[[maybe_unused]] const bool registered = [] {
  for (auto [kernel_epoll, name] : {std::pair{true, "kernel"}, std::pair{false, "epollcr"}}) {
    benchmark::RegisterBenchmark((std::string("BM_EchoServer/") + name).c_str(), BM_EchoServer, kernel_epoll)
        ->ArgName("clients")->Arg(100)->Arg(1000)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
