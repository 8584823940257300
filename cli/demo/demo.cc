#include "demo/demo.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t corrupt = 0;
  bool done = false;
};

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

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions* options) {
  CLI::App* demo = app.add_subcommand(
      "demo", "Run an echo server on epollcr with many clients, hand it to a new process mid-traffic (checkpoint, "
              "fork, exec, restore) and check that no client lost a byte");
  demo->add_option("--clients", options->clients, "Concurrent clients (default 200)")->check(CLI::Range(1, 5000));
  demo->add_option("--messages", options->messages, "Messages per client (default 200)")->check(CLI::Range(1, 1000000));
  demo->add_option("--size", options->size, "Bytes per message (default 64)")->check(CLI::Range(1, 65536));
  demo->add_option("--window", options->window, "Messages each client keeps in flight (default 8)")
      ->check(CLI::Range(1, 1024));
  demo->add_option("--checkpoint-at", options->checkpoint_at,
                   "Hand the server over when this share of all messages has been echoed (default 0.5)")
      ->check(CLI::Range(0.0, 1.0));
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
    else if (flag == "--restore") options.restore_image = value;
    else {
      PrintError(std::cerr, CommandError("demo-server", "unknown option " + flag));
      return kExitUsage;
    }
  }
  return RunEchoServer(options);
}

int RunDemo(const DemoOptions& o, std::ostream& out, std::ostream& err) {
  const auto started = Clock::now();
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
    execl("/proc/self/exe", "epollcr", kDemoServerCommand, "--listen-fd", l.c_str(), "--control-fd", c.c_str(),
          "--status-fd", s.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "epollcr: demo: exec the server: %s\n", std::strerror(errno));
    _exit(127);
  }
  close(listener);
  close(control[0]);
  close(status[1]);

  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = ~0ull;
  epoll_ctl(ep, EPOLL_CTL_ADD, status[0], &ev);
  std::vector<Client> clients(static_cast<std::size_t>(o.clients));
  for (int i = 0; i < o.clients; ++i) {
    Client& c = clients[static_cast<std::size_t>(i)];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c.fd < 0 || (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS)) {
      return Error(err, "client " + std::to_string(i) + ": connect", std::strerror(errno));
    }
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = static_cast<std::uint64_t>(i);
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  }

  const std::uint64_t total = static_cast<std::uint64_t>(o.messages) * static_cast<std::uint64_t>(o.size);
  const std::uint64_t window = static_cast<std::uint64_t>(o.window) * static_cast<std::uint64_t>(o.size);
  const std::uint64_t all = total * clients.size();
  std::uint64_t echoed = 0;
  int done = 0;
  bool told = false, server_gone = false;
  std::vector<std::string> lines;
  std::string partial;
  std::vector<unsigned char> buf(256 * 1024);
  while (done < o.clients || !server_gone) {
    if (Clock::now() - started > std::chrono::seconds(o.timeout_s)) break;
    if (done == o.clients && !server_gone) {
      (void)!write(control[1], "q", 1);  // all echoed: stop the server, then wait for its last words
      epoll_ctl(ep, EPOLL_CTL_DEL, clients[0].fd, nullptr);
      for (Client& c : clients) close(c.fd), c.fd = -1;
      done = o.clients + 1;
    }
    epoll_event events[256];
    const int n = epoll_wait(ep, events, 256, 100);
    for (int k = 0; k < n; ++k) {
      if (events[k].data.u64 == ~0ull) {
        char text[4096];
        ssize_t got;
        while ((got = read(status[0], text, sizeof text)) > 0) partial.append(text, static_cast<std::size_t>(got));
        for (std::size_t eol; (eol = partial.find('\n')) != std::string::npos; partial.erase(0, eol + 1)) {
          lines.push_back(partial.substr(0, eol));
        }
        if (got == 0) {
          server_gone = true;
          epoll_ctl(ep, EPOLL_CTL_DEL, status[0], nullptr);
        }
        continue;
      }
      const int i = static_cast<int>(events[k].data.u64);
      Client& c = clients[static_cast<std::size_t>(i)];
      if (c.fd < 0) continue;
      if (events[k].events & EPOLLIN) {
        ssize_t got;
        while ((got = read(c.fd, buf.data(), buf.size())) > 0) {
          for (ssize_t b = 0; b < got; ++b) {
            if (buf[static_cast<std::size_t>(b)] != StreamByte(i, c.received + static_cast<std::uint64_t>(b))) ++c.corrupt;
          }
          c.received += static_cast<std::uint64_t>(got);
          echoed += static_cast<std::uint64_t>(got);
        }
      }
      while (c.sent < total && c.sent - c.received < window) {
        const std::uint64_t chunk = std::min<std::uint64_t>(total - c.sent, window - (c.sent - c.received));
        for (std::uint64_t b = 0; b < chunk; ++b) buf[b] = StreamByte(i, c.sent + b);
        const ssize_t put = write(c.fd, buf.data(), chunk);
        if (put <= 0) break;
        c.sent += static_cast<std::uint64_t>(put);
      }
      if (!c.done && c.received >= total) {
        c.done = true;
        ++done;
        ev.events = 0;
        epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
      } else if (c.sent >= total) {
        ev.events = EPOLLIN;
        ev.data.u64 = static_cast<std::uint64_t>(i);
        epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
      }
    }
    if (!told && echoed >= static_cast<std::uint64_t>(o.checkpoint_at * static_cast<double>(all))) {
      (void)!write(control[1], "c", 1);
      told = true;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  close(control[1]);
  for (Client& c : clients) {
    if (c.fd >= 0) close(c.fd);
  }
  // Reap the first server and, as subreaper, the new one.
  for (int waited = 0; waited < 50; ++waited) {
    if (waitpid(-1, nullptr, WNOHANG) < 0 && errno == ECHILD) break;
    usleep(20000);
  }
  std::uint64_t lost = 0, corrupt = 0, bytes = 0;
  for (const Client& c : clients) {
    lost += (total - std::min(total, c.received)) / static_cast<std::uint64_t>(o.size);
    corrupt += c.corrupt;
    bytes += c.received;
  }
  std::string listening, checkpoint, restored;
  for (const std::string& l : lines) {
    if (l.rfind("listening", 0) == 0) listening = l;
    if (l.rfind("checkpoint", 0) == 0) checkpoint = l;
    if (l.rfind("restored", 0) == 0) restored = l;
  }
  char text[512];
  std::snprintf(text, sizeof text, "epollcr demo: echo server on 127.0.0.1:%d, %d clients x %d messages of %d bytes\n",
                ntohs(addr.sin_port), o.clients, o.messages, o.size);
  out << text;
  out << "  server:     pid " << Field(listening, "pid") << ", an epollcr EventPoll over host files\n";
  if (!checkpoint.empty()) {
    out << "  checkpoint: pid " << Field(checkpoint, "pid") << ", " << Field(checkpoint, "registrations")
        << " registrations, image " << Field(checkpoint, "image_bytes") << " bytes, " << Field(checkpoint, "ms")
        << " ms\n";
  }
  if (!restored.empty()) {
    const std::size_t stages = restored.find('(');
    out << "  restore:    pid " << Field(restored, "pid") << " (a new process and program image), "
        << Field(restored, "registrations") << " registrations restored (" << Field(restored, "host_files")
        << " host files), " << Field(restored, "ms") << " ms "
        << (stages == std::string::npos ? "" : restored.substr(stages)) << "\n";
  }
  std::snprintf(text, sizeof text,
                "  traffic:    %llu messages, %llu bytes echoed and checked byte by byte, %llu lost, %llu corrupt\n",
                static_cast<unsigned long long>(static_cast<std::uint64_t>(o.messages) * clients.size() - lost),
                static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(lost),
                static_cast<unsigned long long>(corrupt));
  out << text;
  std::snprintf(text, sizeof text, "  time:       %.2f s\n", seconds);
  out << text;
  if (checkpoint.empty() || restored.empty()) {
    return Error(err, "hand-off", checkpoint.empty() ? "the server never checkpointed" : "the new process did not restore");
  }
  if (Field(checkpoint, "pid") == Field(restored, "pid")) return Error(err, "hand-off", "the pid did not change");
  if (lost != 0 || corrupt != 0) {
    return Error(err, "traffic", std::to_string(lost) + " messages lost, " + std::to_string(corrupt) + " bytes corrupt");
  }
  return 0;
}

}  // namespace epollcr::cli
