// A whole service moves to another "machine" through an image file (issue 18, the namespace move): a service process
// (tcp_move_service) with an epollcr world — a listener and established connections registered in an EventPoll —
// serves in namespace A; it saves by value to an image file (its network lock installed in A), closes its sockets in
// repair mode and exits. The service address then moves to B, where a fresh process that inherited nothing restores
// the world from the file alone and serves on; C's route follows the address, and A's lock, which held the client's
// segments off meanwhile, is removed there. The client in C streams on every connection throughout and checks every
// echoed byte: none lost, none corrupt, no reset. The namespaces (netns.h) and the image file are the test's own,
// removed at the end whatever happens. Needs root and ip(8).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "byte_stream.h"
#include "netns.h"
#include "restore/network_lock.h"

namespace epollcr::restore {
namespace {

using Clock = std::chrono::steady_clock;

// A service process in namespace `ns`, its stdin and stdout piped to the test; killed and reaped if still running
// when it goes.
class ServiceProcess {
 public:
  ServiceProcess(Machines& machines, const char* ns, const std::vector<std::string>& args) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    const std::string path = "/run/netns/" + machines.Name(ns);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int netns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (netns < 0 || ::setns(netns, CLONE_NEWNET) != 0) ::_exit(126);
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      std::vector<char*> argv = {const_cast<char*>(EPOLLCR_TCP_MOVE_SERVICE)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  ~ServiceProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ >= 0) ::close(stdout_);
  }
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;

  // The next line it prints, within `timeout` ("" if none).
  std::string Line(std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    std::string line;
    char c;
    while (Clock::now() < until) {
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      if (::read(stdout_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line += c;
    }
    return "";
  }
  void Tell() { (void)!::write(stdin_, "c", 1); }
  // Its exit status within `timeout`; -1 if it did not exit.
  int Wait(std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    while (pid_ > 0 && Clock::now() < until) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
};

// The client's connections, each streaming its own pattern and checking the echo, on one thread, until told to stop
// and every byte sent has come back.
class Client {
 public:
  explicit Client(std::vector<int> fds) : fds_(std::move(fds)), sent_(fds_.size(), 0), received_(fds_.size(), 0) {
    for (int fd : fds_) ::fcntl(fd, F_SETFL, O_NONBLOCK);
    thread_ = std::thread([this] { Run(); });
  }
  ~Client() {
    Stop();
    for (int fd : fds_) ::close(fd);
  }
  // Stops sending, waits until every byte came back (at most 15 s), and returns "" or the first error.
  std::string Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return error_;
  }
  std::uint64_t received() const { return total_received_; }
  bool failed() const { return failed_; }

 private:
  static constexpr std::uint64_t kWindow = 32768;  // bytes in flight per connection at most

  void Run() {
    const auto give_up = [this] { return Clock::now() > stopped_at_ + std::chrono::seconds(15); };
    for (;;) {
      const bool stopping = stop_;  // read once: the whole round sees the same answer
      if (stopping && stopped_at_ == Clock::time_point{}) stopped_at_ = Clock::now();
      bool done = stopping;
      for (std::size_t i = 0; i < fds_.size(); ++i) {
        const char tag = static_cast<char>('a' + i);
        if (!stopping && sent_[i] - received_[i] < kWindow) {
          const std::string chunk = Pattern(tag, sent_[i], 4096);
          const ssize_t w = ::send(fds_[i], chunk.data(), chunk.size(), MSG_NOSIGNAL);
          if (w > 0) sent_[i] += static_cast<std::uint64_t>(w);
          if (w < 0 && errno != EAGAIN) return Failed(i, std::string("send: ") + std::strerror(errno));
        }
        char buffer[16384];
        const ssize_t r = ::recv(fds_[i], buffer, sizeof buffer, 0);
        if (r == 0) return Failed(i, "end of stream");
        if (r < 0 && errno != EAGAIN) return Failed(i, std::string("recv: ") + std::strerror(errno));
        for (ssize_t k = 0; k < r; ++k) {
          if (buffer[k] != PatternByte(tag, received_[i] + static_cast<std::uint64_t>(k))) {
            return Failed(i, "byte " + std::to_string(received_[i] + static_cast<std::uint64_t>(k)) + " differs");
          }
        }
        if (r > 0) {
          received_[i] += static_cast<std::uint64_t>(r);
          total_received_ += static_cast<std::uint64_t>(r);
        }
        done = done && received_[i] == sent_[i];
      }
      if (done) return;
      if (stopping && give_up()) return Failed(0, "the echo did not come back within 15 s of the stop");
      std::vector<pollfd> p;
      for (int fd : fds_) p.push_back({fd, POLLIN, 0});
      ::poll(p.data(), p.size(), 2);
    }
  }
  void Failed(std::size_t i, const std::string& what) {
    error_ = "connection " + std::to_string(i) + " after " + std::to_string(received_[i]) + " bytes: " + what;
    failed_ = true;
  }

  std::vector<int> fds_;
  std::vector<std::uint64_t> sent_, received_;
  std::atomic<std::uint64_t> total_received_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  Clock::time_point stopped_at_{};
  std::string error_;
  std::thread thread_;
};

// The network locks in namespace `ns`, or the error.
std::vector<std::string> LocksIn(Machines& machines, const char* ns) {
  std::vector<std::string> locks;
  const std::string error = machines.On(ns, [&]() -> std::string {
    Result<std::vector<std::string>> found = NetworkLocks();
    if (!found.ok()) return found.status().message;
    locks = found.value();
    return "";
  });
  if (!error.empty()) locks.push_back("(" + error + ")");
  return locks;
}

// The image file's directory, removed at the end.
struct ImageDir {
  std::string dir, path;
  ImageDir() {
    char name[] = "/tmp/epollcr-move-XXXXXX";
    if (::mkdtemp(name) != nullptr) dir = name;
    path = dir + "/world.epcr";
  }
  ~ImageDir() {
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
  }
};

// What the client saw of a move of the service from A to B; with `lock` false the old side saves without its lock.
struct Move {
  std::string client;  // "" or the first error on the client's side
  std::uint64_t before = 0, after = 0;  // bytes echoed before the move, and after it
  int restored_exit = -1;
};

Move MoveService(Machines& machines, bool lock) {
  Move m;
  ImageDir image;
  constexpr int kConnections = 3;
  std::vector<std::string> args = {"serve", image.path, std::to_string(kConnections)};
  if (!lock) args.push_back("nolock");
  ServiceProcess old_service(machines, "a", args);
  if (old_service.Line(std::chrono::seconds(5)) != "ready") {
    ADD_FAILURE() << "the service in A did not start";
    return m;
  }
  sockaddr_in service{};
  service.sin_family = AF_INET;
  service.sin_addr.s_addr = inet_addr("10.77.0.1");
  service.sin_port = htons(7777);
  std::vector<int> fds;
  EXPECT_EQ(machines.On("c", [&]() -> std::string {
    for (int i = 0; i < kConnections + 1; ++i) {  // the last one connects after the move
      fds.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (i < kConnections && ::connect(fds.back(), reinterpret_cast<sockaddr*>(&service), sizeof service) != 0) {
        return std::string("connect from C: ") + std::strerror(errno);
      }
    }
    return "";
  }), "");
  const int late = fds.back();
  fds.pop_back();
  Client client(fds);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  m.before = client.received();

  // The move: A saves and exits (its lock holds the client's segments off), the address goes to B, a fresh process
  // restores there from the file alone, then C's route follows and A gives the address and the lock up.
  old_service.Tell();
  const std::string saved = old_service.Line(std::chrono::seconds(5));
  EXPECT_EQ(saved.rfind("saved ", 0), 0u) << saved;
  const std::string name = saved.substr(std::min<std::size_t>(6, saved.size()));
  EXPECT_EQ(old_service.Wait(std::chrono::seconds(5)), 0);
  EXPECT_EQ(LocksIn(machines, "a"), lock ? std::vector<std::string>{name} : std::vector<std::string>{});
  EXPECT_TRUE(machines.In("b", {"addr", "add", "10.77.0.1/32", "dev", "lo"})) << machines.error();
  ServiceProcess new_service(machines, "b", {"restore", image.path});
  // B holds no lock: the restore finds it absent and says it is elsewhere (in A).
  EXPECT_EQ(new_service.Line(std::chrono::seconds(5)), "restored " + name + " elsewhere=" + (lock ? "1" : "0"));
  EXPECT_TRUE(machines.In("c", {"route", "replace", "10.77.0.1/32", "via", "10.77.2.1"})) << machines.error();
  EXPECT_TRUE(machines.In("a", {"addr", "del", "10.77.0.1/32", "dev", "lo"})) << machines.error();
  if (lock) {
    EXPECT_EQ(machines.On("a", [&] { return UnlockNetwork(name).message; }), "");
  }
  const std::uint64_t at_move = client.received();

  // The rebuilt listener in B accepts a new connection, which echoes too.
  EXPECT_EQ(machines.On("c", [&]() -> std::string {
    if (::connect(late, reinterpret_cast<sockaddr*>(&service), sizeof service) != 0) {
      return std::string("connect after the move: ") + std::strerror(errno);
    }
    std::string e = SendAll(late, Pattern('z', 0, 5000));
    return e.empty() ? ReadExactly(late, 'z', 0, 5000) : e;
  }), "");
  ::close(late);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (client.received() < at_move + (1u << 20) && Clock::now() < deadline && !client.failed()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  m.client = client.Stop();
  m.after = client.received() - m.before;
  for (int fd : fds) {
    tcp_info info{};
    socklen_t size = sizeof info;
    if (m.client.empty() && (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0 ||
                             info.tcpi_state != TCP_ESTABLISHED)) {
      m.client = "a connection is no longer established";
    }
    ::shutdown(fd, SHUT_WR);  // the service ends each connection when the client does
  }
  m.restored_exit = new_service.Wait(std::chrono::seconds(m.client.empty() ? 10 : 0));
  for (const char* ns : {"a", "b", "c"}) EXPECT_TRUE(LocksIn(machines, ns).empty()) << "a lock left in " << ns;
  return m;
}

TEST(TcpMoveNetnsTest, AServiceMovesToAnotherMachineThroughAnImageFileUnderTraffic) {
  const auto started = Clock::now();
  Machines machines;
  ASSERT_TRUE(machines.ready()) << machines.error();
  const Move m = MoveService(machines, true);
  EXPECT_EQ(m.client, "");
  EXPECT_GT(m.before, 0u) << "no traffic before the move";
  EXPECT_GE(m.after, 1u << 20) << "less than a MiB echoed by B within 5 s";
  EXPECT_EQ(m.restored_exit, 0);
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(20));
  std::printf("echoed %llu bytes before the move, %llu after\n", static_cast<unsigned long long>(m.before),
              static_cast<unsigned long long>(m.after));
}

// The same without the lock: the client's segments reach A after its sockets are gone and meet a reset. The test
// above passes because of the lock.
TEST(TcpMoveNetnsTest, WithoutTheLockTheMoveResetsTheConnections) {
  Machines machines;
  ASSERT_TRUE(machines.ready()) << machines.error();
  const Move m = MoveService(machines, false);
  EXPECT_NE(m.client.find(std::strerror(ECONNRESET)), std::string::npos) << "the client saw: '" << m.client << "'";
}

}  // namespace
}  // namespace epollcr::restore
