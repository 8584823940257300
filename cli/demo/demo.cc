#include "demo/demo.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "command_status.h"
#include "demo/echo_server.h"

namespace epollcr::cli {

namespace {

using Clock = std::chrono::steady_clock;

// The byte at `offset` of client `client`'s stream: every client sends different bytes, so a byte echoed to the
// wrong client or out of order shows.
unsigned char StreamByte(int client, std::uint64_t offset) {
  return static_cast<unsigned char>(client * 131 + offset * 7 + (offset >> 8) * 13);
}

struct Client {
  int fd = -1;
  std::uint64_t sent = 0;      // bytes
  std::uint64_t received = 0;  // bytes
  std::uint64_t corrupt = 0;
  std::uint64_t due = 0;       // messages the pacing has released to this client (all of them when unpaced)
  bool want_out = false;       // EPOLLOUT asked for: a write was cut short
  bool done = false;
  std::vector<std::int64_t> sent_ns;  // per message in flight (by index modulo the window): when its first byte went
};

// One echoed message: when its first byte was sent and how long until its last byte came back.
struct Latency {
  std::int64_t sent_ns;
  std::int64_t ns;
};

constexpr int kFdsBesideClients = 64;

std::int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// The max and the 99th percentile of `ns`, in ms (-1 for none).
std::pair<double, double> MaxP99(std::vector<std::int64_t> ns) {
  if (ns.empty()) return {-1, -1};
  std::sort(ns.begin(), ns.end());
  const std::size_t at = std::min(ns.size() - 1, static_cast<std::size_t>(0.99 * static_cast<double>(ns.size())));
  return {static_cast<double>(ns.back()) / 1e6, static_cast<double>(ns[at]) / 1e6};
}

std::string MaxP99Text(std::pair<double, double> v) {
  if (v.first < 0) return "max -, p99 -";
  char text[96];
  std::snprintf(text, sizeof text, "max %.2f ms, p99 %.2f ms", v.first, v.second);
  return text;
}

// "key=value" from a status line.
std::string Field(const std::string& line, const std::string& key) {
  const std::size_t at = line.find(key + "=");
  if (at == std::string::npos) return "?";
  const std::size_t from = at + key.size() + 1;
  return line.substr(from, line.find(' ', from) - from);
}

int Error(std::ostream& err, const std::string& what, const std::string& why) {
  PrintError(err, CommandError("demo: " + what, why));
  return kExitFailure;
}

}  // namespace

int MaxDemoClients() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const rlim_t most = limit.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : limit.rlim_max;
  return static_cast<int>(std::min<rlim_t>(most, rlim_t{1} << 20) - kFdsBesideClients);
}

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions* options) {
  CLI::App* demo = app.add_subcommand(
      "demo", "Run an echo server on epollcr with many clients, hand it to a new process mid-traffic (a successor "
              "started beforehand takes the world over in a short pause) and check that no client lost a byte");
  demo->add_option("--clients", options->clients, "Concurrent clients (default 200; at most what the fd limit allows)")
      ->check(CLI::Range(1, 1 << 20));
  demo->add_option("--messages", options->messages, "Messages per client (default 200)")->check(CLI::Range(1, 1000000));
  demo->add_option("--size", options->size, "Bytes per message (default 64)")->check(CLI::Range(1, 65536));
  demo->add_option("--window", options->window, "Messages each client keeps in flight (default 8)")
      ->check(CLI::Range(1, 1024));
  demo->add_option("--rate", options->rate,
                   "Messages per second over all clients, spread evenly (default 0: as fast as the window lets them)")
      ->check(CLI::Range(0.0, 1e9));
  demo->add_option("--checkpoint-at", options->checkpoint_at,
                   "Hand the server over when this share of all messages has been echoed (default 0.5)")
      ->check(CLI::Range(0.0, 1.0));
  demo->add_option("--fail-successor", options->fail_successor,
                   "Make the successor fail at this stage and check that the old server resumes: exec, start, receive, "
                   "restore, confirm, timeout or go")
      ->check(CLI::IsMember(FailSuccessorStages()));
  demo->add_option("--handoff", options->handoff,
                   "How the server moves: live (default: a successor takes the live sockets over) or repair (the "
                   "server saves its TCP connections by value to an image file and exits; a fresh process that "
                   "inherited no socket rebuilds them from the file; needs CAP_NET_ADMIN)")
      ->check(CLI::IsMember({"live", "repair"}));
  demo->add_option("--timeout", options->timeout_s, "Give up after this many seconds (default 30)")
      ->check(CLI::Range(1, 3600));
  return demo;
}

int RunDemoServer(int argc, char** argv) {
  EchoServerOptions options;
  options.exec_argv = {"/proc/self/exe", kDemoServerCommand};
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--listen-fd") options.listen_fd = std::atoi(value);
    else if (flag == "--control-fd") options.control_fd = std::atoi(value);
    else if (flag == "--status-fd") options.status_fd = std::atoi(value);
    else if (flag == "--handoff-fd") options.handoff_fd = std::atoi(value);
    else if (flag == "--fail-successor") options.fail_successor = value;
    else if (flag == "--repair-image") options.repair_image = value;
    else if (flag == "--restore-image") options.restore_image = value;
    else {
      PrintError(std::cerr, CommandError("demo-server", "unknown option " + flag));
      return kExitUsage;
    }
  }
  return RunEchoServer(options);
}

namespace {

// The demo's clients: connected in rounds (the listening socket's backlog is finite), then driven until every message
// is echoed, each byte checked and each message timed.
class Driver {
 public:
  Driver(const DemoOptions& o, int control, int status) : o_(o), control_(control), status_(status) {}
  // Every fd the driver made or was given is closed, whatever happened (a benchmark runs the demo many times).
  ~Driver() {
    for (Client& c : clients_) {
      if (c.fd >= 0) close(c.fd);
    }
    if (ep_ >= 0) close(ep_);
    close(status_);
  }
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  std::string Connect(const sockaddr_in& addr) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kStatusKey;
    epoll_ctl(ep_, EPOLL_CTL_ADD, status_, &ev);
    clients_.resize(static_cast<std::size_t>(o_.clients));
    constexpr int kRound = 1000;
    for (int first = 0; first < o_.clients; first += kRound) {
      const int last = std::min(o_.clients, first + kRound);
      for (int i = first; i < last; ++i) {
        Client& c = clients_[static_cast<std::size_t>(i)];
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) return "client " + std::to_string(i) + ": socket: " + std::strerror(errno);
        const int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
          return "client " + std::to_string(i) + ": connect: " + std::strerror(errno);
        }
        c.sent_ns.assign(static_cast<std::size_t>(o_.window), 0);
        ev.events = EPOLLOUT;
        ev.data.u64 = static_cast<std::uint64_t>(i);
        epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
      }
      // The round is connected before the next begins.
      for (int pending = last - first; pending > 0;) {
        epoll_event events[256];
        const int n = epoll_wait(ep_, events, 256, 1000);
        if (n == 0) return "clients did not connect within a second";
        for (int k = 0; k < n; ++k) {
          if (events[k].data.u64 == kStatusKey) continue;
          Client& c = clients_[events[k].data.u64];
          int error = 0;
          socklen_t len = sizeof error;
          getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &len);
          if (error != 0) return "client " + std::to_string(events[k].data.u64) + ": connect: " + std::strerror(error);
          ev.events = EPOLLIN;
          ev.data.u64 = events[k].data.u64;
          epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
          --pending;
        }
      }
    }
    return "";
  }

  // Has the server start its successor and waits until it is ready (or failed). False if that takes too long.
  bool PrepareSuccessor(Clock::time_point deadline) {
    (void)!write(control_, "s", 1);
    while (Clock::now() < deadline) {
      epoll_event events[256];
      const int n = epoll_wait(ep_, events, 256, 100);
      for (int k = 0; k < n; ++k) {
        if (events[k].data.u64 == kStatusKey && ReadStatus()) return false;
      }
      for (const std::string& l : lines_) {
        if (l.rfind("successor ", 0) == 0 || l.rfind("resumed ", 0) == 0) return true;
      }
    }
    return false;
  }

  // Runs the traffic; false if it timed out.
  bool Run(Clock::time_point deadline) {
    total_ = static_cast<std::uint64_t>(o_.messages);
    const std::uint64_t all = total_ * clients_.size();
    const auto start = Clock::now();
    if (o_.rate <= 0) {
      for (std::size_t i = 0; i < clients_.size(); ++i) {
        clients_[i].due = total_;
        Pump(i);
      }
    }
    std::uint64_t released = 0;  // paced: messages released so far, round-robin over the clients
    int done = 0;
    bool told = false, server_gone = false;
    std::vector<unsigned char> buf(256 * 1024);
    while (done < o_.clients || !server_gone) {
      if (Clock::now() > deadline) return false;
      if (done == o_.clients && !server_gone) {
        (void)!write(control_, "q", 1);  // all echoed: stop the server, then wait for its last words
        for (Client& c : clients_) close(c.fd), c.fd = -1;
        done = o_.clients + 1;
      }
      int timeout = 100;
      if (o_.rate > 0 && released < all) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        const auto due = std::min<std::uint64_t>(all, static_cast<std::uint64_t>(elapsed * o_.rate) + 1);
        for (; released < due; ++released) {
          const std::size_t i = released % clients_.size();
          ++clients_[i].due;
          Pump(i);
        }
        timeout = 1;
      }
      epoll_event events[256];
      const int n = epoll_wait(ep_, events, 256, timeout);
      for (int k = 0; k < n; ++k) {
        if (events[k].data.u64 == kStatusKey) {
          if (ReadStatus()) {
            server_gone = true;
            epoll_ctl(ep_, EPOLL_CTL_DEL, status_, nullptr);
          }
          continue;
        }
        const std::size_t i = events[k].data.u64;
        Client& c = clients_[i];
        if (c.fd < 0) continue;
        if (events[k].events & EPOLLIN) {
          ssize_t got;
          while ((got = read(c.fd, buf.data(), buf.size())) > 0) Received(i, buf.data(), static_cast<std::size_t>(got));
        }
        Pump(i);
        if (!c.done && c.received >= total_ * Size()) {
          c.done = true;
          ++done;
        }
      }
      if (!told && echoed_ >= static_cast<std::uint64_t>(o_.checkpoint_at * static_cast<double>(all * Size()))) {
        (void)!write(control_, "c", 1);
        told = true;
      }
    }
    return true;
  }

  void CloseClients() {
    for (Client& c : clients_) {
      if (c.fd >= 0) close(c.fd);
      c.fd = -1;
    }
  }
  const std::vector<Client>& clients() const { return clients_; }
  const std::vector<Latency>& latencies() const { return latencies_; }
  const std::vector<std::string>& lines() const { return lines_; }
  std::uint64_t total() const { return total_; }

 private:
  static constexpr std::uint64_t kStatusKey = ~0ull;
  std::uint64_t Size() const { return static_cast<std::uint64_t>(o_.size); }

  // The byte stream's next bytes, as far as the pacing and the window allow.
  void Pump(std::size_t i) {
    Client& c = clients_[i];
    if (c.fd < 0) return;
    const std::uint64_t size = Size(), window = static_cast<std::uint64_t>(o_.window);
    unsigned char chunk[64 * 1024];
    for (;;) {
      const std::uint64_t limit = std::min(c.due, std::min(total_, c.received / size + window)) * size;
      if (c.sent >= limit) break;
      const std::uint64_t count = std::min<std::uint64_t>(limit - c.sent, sizeof chunk);
      for (std::uint64_t b = 0; b < count; ++b) chunk[b] = StreamByte(static_cast<int>(i), c.sent + b);
      const ssize_t put = write(c.fd, chunk, count);
      if (put <= 0) break;
      const std::int64_t now = NowNs();
      for (std::uint64_t m = (c.sent + size - 1) / size; m * size < c.sent + static_cast<std::uint64_t>(put); ++m) {
        c.sent_ns[m % window] = now;  // the messages whose first byte went now
      }
      c.sent += static_cast<std::uint64_t>(put);
    }
    const bool want_out = c.sent < std::min(c.due, std::min(total_, c.received / size + window)) * size;
    if (want_out != c.want_out) {
      epoll_event ev{};
      ev.events = EPOLLIN | (want_out ? std::uint32_t{EPOLLOUT} : 0u);
      ev.data.u64 = i;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
      c.want_out = want_out;
    }
  }

  void Received(std::size_t i, const unsigned char* bytes, std::size_t n) {
    Client& c = clients_[i];
    for (std::size_t b = 0; b < n; ++b) {
      if (bytes[b] != StreamByte(static_cast<int>(i), c.received + b)) ++c.corrupt;
    }
    const std::uint64_t size = Size(), window = static_cast<std::uint64_t>(o_.window);
    const std::int64_t now = NowNs();
    for (std::uint64_t m = c.received / size; (m + 1) * size <= c.received + n; ++m) {
      latencies_.push_back({c.sent_ns[m % window], now - c.sent_ns[m % window]});
    }
    c.received += n;
    echoed_ += n;
  }

  // Reads status lines; true when the server side closed the pipe (every server process is gone).
  bool ReadStatus() {
    char text[4096];
    ssize_t got;
    while ((got = read(status_, text, sizeof text)) > 0) partial_.append(text, static_cast<std::size_t>(got));
    for (std::size_t eol; (eol = partial_.find('\n')) != std::string::npos; partial_.erase(0, eol + 1)) {
      lines_.push_back(partial_.substr(0, eol));
    }
    return got == 0;
  }

  const DemoOptions& o_;
  const int control_, status_;
  int ep_ = -1;
  std::vector<Client> clients_;
  std::vector<Latency> latencies_;
  std::vector<std::string> lines_;
  std::string partial_;
  std::uint64_t total_ = 0, echoed_ = 0;
};

// The status line that starts with `word`, or "".
std::string LineOf(const std::vector<std::string>& lines, const std::string& word) {
  for (const std::string& l : lines) {
    if (l.rfind(word + " ", 0) == 0) return l;
  }
  return "";
}

}  // namespace

int RunDemo(const DemoOptions& o, std::ostream& out, std::ostream& err, DemoResult* result) {
  // What else each process holds: this one's stdio, pipes and epoll, a benchmark's own files; the server's
  // listener, control and status fds, its poll's kernel epoll and its successor's channel and memfd.
  const auto started = Clock::now();
  // Both server processes hold a socket per client, and this one does too: the fd limit bounds the clients.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (static_cast<rlim_t>(o.clients) + kFdsBesideClients > limit.rlim_cur) {
    return Error(err, "clients", std::to_string(o.clients) + " clients need " + std::to_string(o.clients + kFdsBesideClients) +
                                     " fds per process; this process may open " + std::to_string(limit.rlim_cur));
  }
  const bool repair = o.handoff == "repair";
  if (repair && !o.fail_successor.empty()) return Error(err, "--fail-successor", "only with --handoff live");
  // --handoff repair: the image file the server writes and its fresh process reads, in a directory of its own.
  std::string image_dir, image_path;
  if (repair) {
    char dir[] = "/tmp/epollcr-demo-XXXXXX";
    if (mkdtemp(dir) == nullptr) return Error(err, "mkdtemp", std::strerror(errno));
    image_dir = dir;
    image_path = image_dir + "/world.epcr";
  }
  struct RemoveImage {
    const std::string& dir;
    const std::string& path;
    ~RemoveImage() {
      if (dir.empty()) return;
      unlink(path.c_str());
      rmdir(dir.c_str());
    }
  } remove_image{image_dir, image_path};
  // The server hands itself to a grandchild; as a subreaper this process still waits for it.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 4096) != 0 || getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Error(err, "listen on 127.0.0.1", std::strerror(errno));
  }
  int control[2], status[2];
  if (pipe2(control, O_CLOEXEC) != 0 || pipe2(status, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Error(err, "pipe", std::strerror(errno));
  }
  const pid_t server = fork();
  if (server < 0) return Error(err, "fork", std::strerror(errno));
  if (server == 0) {
    for (int fd : {listener, control[0], status[1]}) fcntl(fd, F_SETFD, 0);
    const std::string l = std::to_string(listener), c = std::to_string(control[0]), s = std::to_string(status[1]);
    std::vector<const char*> args = {"epollcr", kDemoServerCommand, "--listen-fd", l.c_str(), "--control-fd",
                                     c.c_str(), "--status-fd", s.c_str()};
    if (!o.fail_successor.empty()) args.insert(args.end(), {"--fail-successor", o.fail_successor.c_str()});
    if (repair) args.insert(args.end(), {"--repair-image", image_path.c_str()});
    args.push_back(nullptr);
    execv("/proc/self/exe", const_cast<char* const*>(args.data()));
    std::fprintf(stderr, "epollcr: demo: exec the server: %s\n", std::strerror(errno));
    _exit(127);
  }
  close(listener);
  close(control[0]);
  close(status[1]);

  Driver driver(o, control[1], status[0]);
  if (std::string e = driver.Connect(addr); !e.empty()) {
    close(control[1]);
    return Error(err, "connect", e);
  }
  // The successor starts while the clients are connected and idle; the hand-off itself comes mid-traffic.
  const auto deadline = started + std::chrono::seconds(o.timeout_s);
  const bool finished = (repair || driver.PrepareSuccessor(deadline)) && driver.Run(deadline);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  close(control[1]);
  driver.CloseClients();
  // Reap the first server and, as subreaper, its successor.
  for (int waited = 0; waited < 250; ++waited) {
    if (waitpid(-1, nullptr, WNOHANG) < 0 && errno == ECHILD) break;
    usleep(20000);
  }
  const std::uint64_t size = static_cast<std::uint64_t>(o.size), total = driver.total() * size;
  std::uint64_t lost = 0, corrupt = 0, bytes = 0;
  for (const Client& c : driver.clients()) {
    lost += (total - std::min(total, c.received)) / size;
    corrupt += c.corrupt;
    bytes += c.received;
  }
  const std::vector<std::string>& lines = driver.lines();
  const std::string listening = LineOf(lines, "listening"), successor = LineOf(lines, "successor"),
                    handoff = LineOf(lines, "handoff"), restored = LineOf(lines, "restored"),
                    resumed = LineOf(lines, "resumed");
  char text[640];
  std::snprintf(text, sizeof text, "epollcr demo: echo server on 127.0.0.1:%d, %d clients x %d messages of %d bytes",
                ntohs(addr.sin_port), o.clients, o.messages, o.size);
  out << text;
  if (o.rate > 0) out << ", " << o.rate << " messages/s";
  out << "\n  server:     pid " << Field(listening, "pid") << ", an epollcr EventPoll over host files\n";
  if (!successor.empty()) {
    out << "  successor:  pid " << Field(successor, "pid") << " (a new process and program image), ready "
        << Field(successor, "started_ms") << " ms after it was started\n";
  }
  if (!handoff.empty() && repair) {
    out << "  hand-off:   by value (TCP_REPAIR): " << Field(handoff, "connections") << " connections and "
        << Field(handoff, "listeners") << " listener in an image file of " << Field(handoff, "image_bytes")
        << " bytes (save " << Field(handoff, "save_ms") << " ms, durable write " << Field(handoff, "write_ms")
        << " ms, sockets closed silently " << Field(handoff, "hold_ms") << " ms after the capture, network lock "
        << Field(handoff, "lock") << "); pid " << Field(handoff, "pid") << " exits\n";
  } else if (!handoff.empty()) {
    const std::size_t stages = handoff.find('(');
    out << "  hand-off:   pause " << Field(handoff, "pause_ms") << " ms "
        << (stages == std::string::npos ? "" : handoff.substr(stages)) << ", " << Field(handoff, "entries")
        << " registrations, image " << Field(handoff, "image_bytes") << " bytes, " << Field(handoff, "inherited")
        << " fds inherited, " << Field(handoff, "sent") << " sent\n";
  }
  if (!restored.empty() && repair) {
    const std::size_t stages = restored.find('(');
    out << "  restore:    pid " << Field(restored, "pid") << ", a fresh process that inherited no socket: "
        << Field(restored, "host_files") << " host files (the TCP sockets rebuilt from the image file, the demo's "
        << "control pipe inherited), " << Field(restored, "registrations") << " registrations, " << Field(restored, "ms")
        << " ms " << (stages == std::string::npos ? "" : restored.substr(stages)) << ", network lock "
        << Field(restored, "unlocked") << " removed\n";
  } else if (!restored.empty()) {
    const std::size_t stages = restored.find('(');
    out << "  restore:    pid " << Field(restored, "pid") << ", " << Field(restored, "registrations")
        << " registrations restored (" << Field(restored, "host_files") << " host files), " << Field(restored, "ms")
        << " ms " << (stages == std::string::npos ? "" : restored.substr(stages)) << "\n";
  }
  if (!resumed.empty()) {
    out << "  successor:  failed at stage " << (o.fail_successor.empty() ? "?" : o.fail_successor)
        << " (the server noticed at " << Field(resumed, "stage") << "): " << resumed.substr(resumed.find("reason=") + 7)
        << "\n";
    out << "  resumed:    pid " << Field(resumed, "pid") << "\n";
  }
  // The stall: messages in flight across the pause, against all the others.
  std::vector<std::int64_t> inside, outside;
  if (!handoff.empty()) {
    const long long from = std::atoll(Field(handoff, "pause_start_ns").c_str());
    // A hand-off by value ends when the fresh process serves: its own line says when.
    const long long to = std::atoll(Field(repair ? restored : handoff, "pause_end_ns").c_str());
    for (const Latency& l : driver.latencies()) {
      (l.sent_ns <= to && l.sent_ns + l.ns >= from ? inside : outside).push_back(l.ns);
    }
  } else {
    for (const Latency& l : driver.latencies()) outside.push_back(l.ns);
  }
  const auto stall = MaxP99(inside), rest = MaxP99(outside);
  if (!handoff.empty()) {
    out << "  stall:      " << MaxP99Text(stall) << " (outside the hand-off: " << MaxP99Text(rest) << "; "
        << inside.size() << " messages in flight across it)\n";
  } else {
    out << "  latency:    " << MaxP99Text(rest) << "\n";
  }
  if (result != nullptr) {
    auto ms = [](const std::string& line, const std::string& key) {
      const std::string v = Field(line, key);
      return v == "?" ? -1.0 : std::atof(v.c_str());
    };
    DemoResult& r = *result;
    r.handed_over = !handoff.empty() && !restored.empty();
    r.resumed = !resumed.empty();
    r.messages = driver.total() * driver.clients().size() - lost;
    r.lost = lost;
    r.corrupt = corrupt;
    r.in_flight = inside.size();
    r.stall_max_ms = stall.first;
    r.stall_p99_ms = stall.second;
    r.outside_max_ms = rest.first;
    r.outside_p99_ms = rest.second;
    r.pause_ms = repair ? (ms(restored, "pause_end_ns") - ms(handoff, "pause_start_ns")) / 1e6 : ms(handoff, "pause_ms");
    r.save_ms = ms(handoff, "(save");
    r.send_ms = ms(handoff, "send");
    r.restore_ms = ms(handoff, "restore");
    r.go_ms = ms(handoff, "go");
    r.successor_ready_ms = ms(successor, "started_ms");
    r.registrations = static_cast<std::uint64_t>(std::max(0.0, ms(handoff, "entries")));
  }
  std::snprintf(text, sizeof text,
                "  traffic:    %llu messages, %llu bytes echoed and checked byte by byte, %llu lost, %llu corrupt\n",
                static_cast<unsigned long long>(driver.total() * driver.clients().size() - lost),
                static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(lost),
                static_cast<unsigned long long>(corrupt));
  out << text;
  std::snprintf(text, sizeof text, "  time:       %.2f s\n", seconds);
  out << text;
  if (!finished) return Error(err, "traffic", "not all messages were echoed within " + std::to_string(o.timeout_s) + " s");
  if (o.fail_successor.empty()) {
    if (handoff.empty() || restored.empty()) {
      return Error(err, "hand-off", !resumed.empty() ? "the successor failed and the server resumed"
                                                     : "the server never handed over");
    }
    if (Field(handoff, "pid") == Field(restored, "pid")) return Error(err, "hand-off", "the pid did not change");
  } else {
    if (resumed.empty() || !handoff.empty()) {
      return Error(err, "--fail-successor", "the server did not resume after its successor failed");
    }
    if (Field(resumed, "pid") != Field(listening, "pid")) return Error(err, "--fail-successor", "another pid resumed");
  }
  if (lost != 0 || corrupt != 0) {
    return Error(err, "traffic", std::to_string(lost) + " messages lost, " + std::to_string(corrupt) + " bytes corrupt");
  }
  return 0;
}

}  // namespace epollcr::cli
