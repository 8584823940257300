// Real, unmodified servers from Debian on epollcr: each runs under `epollcr run` (the preload library replaces its
// epoll_* calls with epollcr's engine) and serves a real load client of its own project, on 127.0.0.1 only, for a
// bounded amount of work. The clients are the oracle: each reports its own errors and checks, and the test adds an
// independent check of the data the server holds afterwards.
//
//   redis-server  under redis-benchmark (SET, GET, INCR, LPUSH, LPOP, N requests each over C connections): every test
//                 completes, no error reply or connection error (redis-benchmark exits 1 on either). Then redis-cli
//                 reads back what the benchmark left, which is exact because without -r every request of a test hits
//                 the same key: counter:__rand_int__ is N (N INCRs from C clients at once, none lost or doubled),
//                 mylist is empty (N LPUSHes then N LPOPs), key:__rand_int__ holds 3 bytes; and a SET then GET.
//   nginx         (master and one worker) under wrk for 2 s over C connections: requests were made, no socket error
//                 (connect, read, write or timeout) and no response other than 2xx or 3xx. Then one request over a
//                 raw socket gets "200 OK" and the body "hello\n".
//   memcached     (2 threads) under memaslap (libmemcached-tools): N operations, 90% get and 10% set, over C
//                 connections, 10% of the gets verified against what memaslap stored: no get miss, no verify miss,
//                 no verify failure. Then over a raw socket with the text protocol: a set and a get of a known value,
//                 and the server's own stats must agree with memaslap's counts (every get a hit, the same numbers of
//                 gets and sets).
//
// Every server is started in the foreground with its files in a temporary directory (no persistence, no daemon),
// waited for until its port accepts (5 s), stopped with its graceful-stop signal (SIGTERM; SIGQUIT for nginx) and
// must exit with status 0 within 5 s, leaving no process of its group behind (server_process.h: otherwise it is
// killed and the test fails). Finally the log `epollcr run --log` wrote must show that the server really ran on
// epollcr and not on the kernel's epoll: a `create PID FD` line from the process that served (for nginx, a worker) and
// an `exit PID polls N waits W events E` line from it with waits and events > 0 (ParseEpollcrLog keeps the format).
//
// C, the number of connections, is the test parameter: EPOLLCR_REAL_PROGRAMS_CONNECTIONS, a comma-separated list
// (default 50; each value runs the three tests). N is 20,000. The whole binary takes about 10 s per value.
//
// The servers and clients come from Debian packages (scripts/bootstrap installs them: redis-server, redis-tools,
// nginx-light, wrk, memcached, libmemcached-tools). A test is skipped, saying which program and package are missing,
// only when one of its programs is not installed; anything else that goes wrong is a failure.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "program_run.h"
#include "server_process.h"
#include "temp_dir.h"

namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using epollcr::testing_support::ChildSetup;
using epollcr::testing_support::GroupMember;
using epollcr::testing_support::ProgramRun;
using epollcr::testing_support::ReadWholeFile;
using epollcr::testing_support::ServerProcess;
using epollcr::testing_support::TempDir;

constexpr int kRequests = 20000;  // N: requests per redis-benchmark test, operations of memaslap
constexpr auto kStartTimeout = std::chrono::seconds(5);
constexpr auto kStopTimeout = std::chrono::seconds(5);
constexpr int kClientTimeoutSeconds = 30;  // a client that hangs (a server that stopped answering) is killed

// ---- the programs ---------------------------------------------------------------------------------------------------

// The absolute path of `name` in PATH or in the sbin folders (nginx is in /usr/sbin, which a user's PATH may lack),
// or "" if it is not installed.
std::string FindProgram(const std::string& name) {
  std::string dirs = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  dirs += ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  std::istringstream in(dirs);
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    const std::string path = dir + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// The programs a test needs, each with the Debian package that provides it.
struct Needed {
  std::string program;
  std::string package;
};

// Finds every program of `needed` into `paths`; the message to skip with if any is missing, else "".
std::string FindAll(const std::vector<Needed>& needed, std::map<std::string, std::string>& paths) {
  std::string missing;
  for (const Needed& n : needed) {
    paths[n.program] = FindProgram(n.program);
    if (paths[n.program].empty()) missing += " " + n.program + " (package " + n.package + ")";
  }
  if (missing.empty()) return "";
  return "not installed:" + missing + "; scripts/bootstrap installs them (CI runs this test with them)";
}

// The same file whatever the path says (a symbolic link, /usr/sbin against /sbin).
std::string Canonical(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path p = std::filesystem::canonical(path, ec);
  return ec ? path : p.string();
}

const char* EpollcrBin() {
  const char* bin = std::getenv("EPOLLCR_BIN");
  EXPECT_NE(bin, nullptr) << "EPOLLCR_BIN must name the epollcr program";
  return bin != nullptr ? bin : "/nonexistent/epollcr";
}

// ---- how a server is run --------------------------------------------------------------------------------------------

// False only while developing without `epollcr run`: the servers then run on the kernel's epoll and the log is not
// checked. The one switch between the two.
constexpr bool kUnderEpollcr = true;

// The command that runs `server` with `args` on epollcr, its log in `log`.
std::vector<std::string> ServerCommand(const std::string& log, const std::string& server,
                                       const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  if (kUnderEpollcr) argv = {EpollcrBin(), "run", "--log", log, "--"};
  argv.push_back(server);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Runs a client program to its end, `input` on its stdin, killed (status 124) if it runs longer than
// kClientTimeoutSeconds, through coreutils' timeout(1) so that the client never needs to be trusted to stop.
ProgramRun RunClient(const TempDir& dir, const std::string& bin, const std::vector<std::string>& args,
                     const std::string& input = "") {
  const std::string name = std::filesystem::path(bin).filename().string();
  std::ofstream(dir.File(name + ".stdin"), std::ios::binary) << input;
  std::vector<std::string> timeout_args = {"-k", "5", std::to_string(kClientTimeoutSeconds), bin};
  timeout_args.insert(timeout_args.end(), args.begin(), args.end());
  const std::string timeout = FindProgram("timeout");
  EXPECT_FALSE(timeout.empty()) << "timeout(1) (coreutils) not found";
  return epollcr::testing_support::RunProgram(
      timeout.c_str(), timeout_args,
      {.stdin_path = dir.File(name + ".stdin"), .stdout_path = dir.File(name + ".stdout"),
       .stderr_path = dir.File(name + ".stderr"), .cwd = dir.path(), .as_uid = -1});
}

// What a client run printed, for failure messages.
std::string Describe(const ProgramRun& run) {
  return "status " + std::to_string(run.status) + "\n--- stdout:\n" + run.out + "--- stderr:\n" + run.err;
}

// ---- loopback sockets -----------------------------------------------------------------------------------------------

sockaddr_in Loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  return a;
}

// A port nothing listens on now: the kernel picks one for a socket bound to 127.0.0.1:0, which is closed again. Another
// process could take it before the server does; StartServer then tries another.
int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = Loopback(0);
  socklen_t len = sizeof(a);
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (fd >= 0) ::close(fd);
  EXPECT_GT(port, 0) << "no free port on 127.0.0.1: " << std::strerror(errno);
  return port;
}

// A connected socket to 127.0.0.1:`port` whose reads and writes give up after 5 s, or -1.
int ConnectLoopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const timeval limit{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  const sockaddr_in a = Loopback(port);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool PortAccepts(int port) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// Sends `request` on `fd`, then reads until the answer ends with `end` (or, if `end` is empty, until the peer closes),
// the peer closes, or a read times out; the bytes read.
std::string Exchange(int fd, const std::string& request, const std::string& end) {
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return "";
    sent += static_cast<std::size_t>(n);
  }
  std::string answer;
  char buf[4096];
  while (end.empty() || !answer.ends_with(end)) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  return answer;
}

// ---- the log of `epollcr run` ---------------------------------------------------------------------------------------

// One line per epoll instance a process created ("create PID FD") and one per process at a clean exit ("exit PID
// polls N waits W events E raw R": the polls it created, its epoll_wait calls, the events they returned and its raw
// epoll system calls, which `epollcr run` traps and answers).
struct LogCreate {
  long pid = 0;
  long fd = 0;
};
struct LogExit {
  long pid = 0;
  long polls = 0;
  long waits = 0;
  long events = 0;
  long raw = 0;
};
struct EpollcrLog {
  std::vector<LogCreate> creates;
  std::vector<LogExit> exits;
  std::vector<std::string> unparsed;  // lines of neither shape: the test fails on any
};

// The one place that knows the log's format.
EpollcrLog ParseEpollcrLog(const std::string& text) {
  EpollcrLog log;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string verb, w1, w2, w3, rest;
    LogCreate c;
    LogExit e;
    words >> verb;
    if (verb == "create" && words >> c.pid >> c.fd && !(words >> rest)) {
      log.creates.push_back(c);
    } else if (verb == "exit" && words >> e.pid >> w1 >> e.polls >> w2 >> e.waits >> w3 >> e.events &&
               w1 == "polls" && w2 == "waits" && w3 == "events" &&
               (!(words >> rest) || (rest == "raw" && words >> e.raw && !(words >> rest)))) {
      log.exits.push_back(e);
    } else {
      log.unparsed.push_back(line);
    }
  }
  return log;
}

// The parser itself, so that a change of the log's shape shows here first and not as "did not run on epollcr".
TEST(EpollcrRunLogTest, ParsesCreateAndExitLinesAndKeepsTheRest) {
  const EpollcrLog log = ParseEpollcrLog(
      "create 120 7\n"
      "create 121 5\n"
      "exit 121 polls 1 waits 30 events 42 raw 2\n"
      "create 122\n"
      "exit 120 polls 2 waits 3\n"
      "hello\n");
  ASSERT_EQ(log.creates.size(), 2u);
  EXPECT_EQ(log.creates[0].pid, 120);
  EXPECT_EQ(log.creates[0].fd, 7);
  EXPECT_EQ(log.creates[1].pid, 121);
  ASSERT_EQ(log.exits.size(), 1u);
  EXPECT_EQ(log.exits[0].pid, 121);
  EXPECT_EQ(log.exits[0].polls, 1);
  EXPECT_EQ(log.exits[0].waits, 30);
  EXPECT_EQ(log.exits[0].events, 42);
  EXPECT_EQ(log.exits[0].raw, 2);
  EXPECT_THAT(log.unparsed, ::testing::ElementsAre("create 122", "exit 120 polls 2 waits 3", "hello"));
}

// Checks that the log at `path` shows one of `serving` (pids of the processes that served the load) creating a poll
// and exiting with waits and events counted: the server ran on epollcr. `members` is every process the server's group
// had, for the failure message.
void ExpectServedOnEpollcr(const std::string& path, const std::set<long>& serving,
                           const std::vector<GroupMember>& members) {
  if (!kUnderEpollcr) return;
  const std::string text = ReadWholeFile(path);
  std::ostringstream context;
  context << "epollcr run --log " << path << ":\n" << text << "--- the server's processes (pid ppid exe):\n";
  for (const GroupMember& m : members) context << m.pid << " " << m.ppid << " " << m.exe << "\n";
  context << "--- serving:";
  for (long pid : serving) context << " " << pid;

  const EpollcrLog log = ParseEpollcrLog(text);
  EXPECT_THAT(log.unparsed, ::testing::IsEmpty()) << "lines of an unknown shape\n" << context.str();
  ASSERT_FALSE(serving.empty()) << "no process of the server's group ran the server's program\n" << context.str();
  std::set<long> created;
  for (const LogCreate& c : log.creates) {
    if (serving.contains(c.pid)) created.insert(c.pid);
  }
  ASSERT_FALSE(created.empty()) << "no poll created by the serving process: it did not run on epollcr\n"
                                << context.str();
  bool counted = false;
  for (const LogExit& e : log.exits) {
    if (created.contains(e.pid) && e.polls > 0 && e.waits > 0 && e.events > 0) counted = true;
  }
  EXPECT_TRUE(counted) << "no `exit` line with polls, waits and events > 0 from a serving process that created a poll"
                       << "\n" << context.str();
}

// ---- the fixture ----------------------------------------------------------------------------------------------------

// The number of connections of each run (the parameter): EPOLLCR_REAL_PROGRAMS_CONNECTIONS, default 50.
std::vector<int> ConnectionCounts() {
  const char* env = std::getenv("EPOLLCR_REAL_PROGRAMS_CONNECTIONS");
  std::vector<int> counts;
  std::istringstream in(env != nullptr && *env != '\0' ? env : "50");
  for (std::string item; std::getline(in, item, ',');) {
    const int n = std::atoi(item.c_str());
    if (n > 0) counts.push_back(n);
  }
  if (counts.empty()) counts.push_back(50);
  return counts;
}

class RealProgramTest : public ::testing::TestWithParam<int> {
 protected:
  int connections() const { return GetParam(); }

  // Starts the server `command(port)` gives for a free port, with its output in `dir` (server.stdout,
  // server.stderr), and waits until the port accepts. A server that exits first (another process took the port in
  // between) is tried again on another port, three times in all; null (with a failure) if it never listened.
  std::unique_ptr<ServerProcess> StartServer(const TempDir& dir,
                                             const std::function<std::vector<std::string>(int)>& command) {
    std::string failures;
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = FreeLoopbackPort();
      auto server = std::make_unique<ServerProcess>(
          command(port_), ChildSetup{.stdin_path = "", .stdout_path = dir.File("server.stdout"),
                                     .stderr_path = dir.File("server.stderr"), .cwd = "", .as_uid = -1});
      const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
      while (!server->Exited() && std::chrono::steady_clock::now() < deadline) {
        if (PortAccepts(port_)) return server;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      const std::string what = server->Exited() ? "exited with wait status " + std::to_string(*server->status())
                                                : "did not accept on its port within 5 s";
      failures += "attempt " + std::to_string(attempt + 1) + ": " + server->Command() + "\n" + what +
                  "\n--- stdout:\n" + ReadWholeFile(dir.File("server.stdout")) + "--- stderr:\n" +
                  ReadWholeFile(dir.File("server.stderr")) + "\n";
      if (!server->Exited()) {
        server->Stop(SIGKILL, kStopTimeout);
        break;  // a server that runs but does not listen will not do better on another port
      }
    }
    ADD_FAILURE() << "the server never accepted connections on 127.0.0.1\n" << failures;
    return nullptr;
  }

  // Stops `server` with `sig`; it must exit with status 0 within kStopTimeout and leave nothing behind. On failure the
  // server's output and the files `logs` of `dir` (its own logs) are shown.
  void StopServer(ServerProcess& server, int sig, const TempDir& dir, const std::vector<std::string>& logs = {}) {
    const bool stopped = server.Stop(sig, kStopTimeout);
    const std::optional<int> status = server.status();
    ASSERT_TRUE(status.has_value());
    std::string output = "--- stdout:\n" + ReadWholeFile(dir.File("server.stdout")) + "--- stderr:\n" +
                         ReadWholeFile(dir.File("server.stderr"));
    for (const std::string& name : logs) output += "--- " + name + ":\n" + ReadWholeFile(dir.File(name));
    if (!stopped) {
      ADD_FAILURE() << server.Command() << " did not stop cleanly on signal " << sig << "\n" << output;
      return;
    }
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << server.Command() << " after signal " << sig << ": wait status " << *status
        << (WIFSIGNALED(*status) ? " (killed by signal " + std::to_string(WTERMSIG(*status)) + ")" : "") << "\n"
        << output;
    // The servers write their own messages to their logs (or, memcached without -v, nothing): what is on stderr is
    // the preload library's or epollcr run's complaint (a call it refused) or a crash report.
    EXPECT_EQ(ReadWholeFile(dir.File("server.stderr")), "") << server.Command() << "\n" << output;
  }

  // The processes of the server's group that run `program` (and, if `workers_only`, whose parent runs it too: nginx's
  // workers, not its master): the ones that serve. Scanned while the server runs and merged over calls, so that a
  // worker that was replaced still counts.
  void NoteServing(const ServerProcess& server, const std::string& program, bool workers_only) {
    const std::vector<GroupMember> members = server.GroupMembers();
    const std::string want = Canonical(program);
    std::set<long> runs_program;
    for (const GroupMember& m : members) {
      if (Canonical(m.exe) == want) runs_program.insert(m.pid);
    }
    for (const GroupMember& m : members) {
      if (runs_program.contains(m.pid) && (!workers_only || runs_program.contains(m.ppid))) serving_.insert(m.pid);
      if (std::none_of(members_.begin(), members_.end(), [&](const GroupMember& k) { return k.pid == m.pid; })) {
        members_.push_back(m);
      }
    }
  }

  int port_ = 0;
  std::set<long> serving_;
  std::vector<GroupMember> members_;
};

// ---- redis ----------------------------------------------------------------------------------------------------------

TEST_P(RealProgramTest, RedisUnderRedisBenchmark) {
  std::map<std::string, std::string> bin;
  const std::string skip = FindAll({{"redis-server", "redis-server"},
                                    {"redis-benchmark", "redis-tools"},
                                    {"redis-cli", "redis-tools"}},
                                   bin);
  if (!skip.empty()) GTEST_SKIP() << skip;

  TempDir dir("epollcr-rp-redis");
  const std::string log = dir.File("epollcr.log");
  // No RDB snapshot, no AOF, no daemon: nothing is written outside `dir`, and the process we start is the server.
  auto server = StartServer(dir, [&](int port) {
    return ServerCommand(log, bin["redis-server"],
                         {"--port", std::to_string(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--daemonize", "no", "--dir", dir.path(), "--logfile", dir.File("redis.log")});
  });
  ASSERT_NE(server, nullptr);
  const std::string port = std::to_string(port_);
  NoteServing(*server, bin["redis-server"], false);

  // redis-benchmark exits 1 on an error reply ("Unexpected error reply, exiting...") or a connection error, and
  // prints one CSV row per test that completed.
  const ProgramRun bench = RunClient(dir, bin["redis-benchmark"],
                                     {"-h", "127.0.0.1", "-p", port, "-c", std::to_string(connections()), "-n",
                                      std::to_string(kRequests), "-t", "set,get,incr,lpush,lpop", "--csv"});
  EXPECT_EQ(bench.status, 0) << Describe(bench);
  EXPECT_EQ(bench.err, "") << Describe(bench);
  std::map<std::string, double> rps;
  std::istringstream rows(bench.out);
  for (std::string row; std::getline(rows, row);) {
    // "SET","40241.45","0.779",...
    if (row.size() < 2 || row[0] != '"' || row.starts_with("\"test\"")) continue;
    const std::size_t name_end = row.find('"', 1);
    const std::size_t value_start = row.find('"', name_end + 1);
    if (name_end == std::string::npos || value_start == std::string::npos) continue;
    rps[row.substr(1, name_end - 1)] = std::atof(row.c_str() + value_start + 1);
  }
  for (const char* test : {"SET", "GET", "INCR", "LPUSH", "LPOP"}) {
    EXPECT_GT(rps[test], 0) << "redis-benchmark did not complete " << test << "\n" << Describe(bench);
  }

  // Without -r each benchmark test uses one key, so what it left is exact: N INCRs of counter:__rand_int__ from C
  // connections at once, N LPUSHes then N LPOPs of mylist (an empty list is no key), SET of a 3-byte value (-d 3).
  // redis-cli reads the commands from its stdin and prints each reply raw on a line.
  const ProgramRun cli = RunClient(dir, bin["redis-cli"], {"-h", "127.0.0.1", "-p", port},
                                   "SET epollcr:greeting hello-epollcr\n"
                                   "GET epollcr:greeting\n"
                                   "GET counter:__rand_int__\n"
                                   "LLEN mylist\n"
                                   "STRLEN key:__rand_int__\n"
                                   "DBSIZE\n");
  EXPECT_EQ(cli.status, 0) << Describe(cli);
  EXPECT_EQ(cli.out, "OK\nhello-epollcr\n" + std::to_string(kRequests) + "\n0\n3\n3\n") << Describe(cli);
  EXPECT_EQ(cli.err, "") << Describe(cli);

  NoteServing(*server, bin["redis-server"], false);
  StopServer(*server, SIGTERM, dir, {"redis.log"});
  ExpectServedOnEpollcr(log, serving_, members_);
}

// ---- nginx ----------------------------------------------------------------------------------------------------------

// A configuration that keeps nginx in the foreground on 127.0.0.1:`port` with every file it writes in `dir`, one
// worker, answering every request with "hello\n".
std::string NginxConf(const TempDir& dir, int port, int connections) {
  std::ostringstream c;
  // As root, nginx's workers would switch to user nobody, who can reach neither `dir` (mode 0700) nor the log; the
  // workers stay root instead. As another user nginx switches to no one.
  if (::geteuid() == 0) c << "user root root;\n";
  c << "daemon off;\n"
    << "master_process on;\n"
    << "worker_processes 1;\n"
    << "pid " << dir.File("nginx.pid") << ";\n"
    << "error_log " << dir.File("error.log") << ";\n"
    << "events { worker_connections " << std::max(2048, 2 * connections + 64) << "; use epoll; }\n"
    << "http {\n"
    << "  access_log off;\n"
    << "  client_body_temp_path " << dir.File("client_body") << ";\n"
    << "  proxy_temp_path " << dir.File("proxy") << ";\n"
    << "  fastcgi_temp_path " << dir.File("fastcgi") << ";\n"
    << "  uwsgi_temp_path " << dir.File("uwsgi") << ";\n"
    << "  scgi_temp_path " << dir.File("scgi") << ";\n"
    << "  server {\n"
    << "    listen 127.0.0.1:" << port << ";\n"
    << "    location / { return 200 \"hello\\n\"; }\n"
    << "  }\n"
    << "}\n";
  return c.str();
}

TEST_P(RealProgramTest, NginxUnderWrk) {
  std::map<std::string, std::string> bin;
  const std::string skip = FindAll({{"nginx", "nginx-light"}, {"wrk", "wrk"}}, bin);
  if (!skip.empty()) GTEST_SKIP() << skip;

  TempDir dir("epollcr-rp-nginx");
  const std::string log = dir.File("epollcr.log");
  const std::string conf = dir.File("nginx.conf");
  // -p makes `dir` the prefix (relative paths and defaults), -e the error log before the configuration is read.
  auto server = StartServer(dir, [&](int port) {
    std::ofstream(conf) << NginxConf(dir, port, connections());
    return ServerCommand(log, bin["nginx"], {"-c", conf, "-p", dir.path() + "/", "-e", dir.File("error.log")});
  });
  ASSERT_NE(server, nullptr) << "error.log:\n" << ReadWholeFile(dir.File("error.log"));
  const std::string url = "http://127.0.0.1:" + std::to_string(port_) + "/";
  NoteServing(*server, bin["nginx"], true);

  // wrk prints "Socket errors: connect A, read B, write C, timeout D" only if one is not 0, and
  // "Non-2xx or 3xx responses: N" only if N is not 0.
  const ProgramRun wrk = RunClient(
      dir, bin["wrk"], {"-t", "2", "-c", std::to_string(connections()), "-d", "2s", "--timeout", "5s", url});
  EXPECT_EQ(wrk.status, 0) << Describe(wrk);
  EXPECT_THAT(wrk.out, Not(HasSubstr("Socket errors"))) << Describe(wrk);
  EXPECT_THAT(wrk.out, Not(HasSubstr("Non-2xx"))) << Describe(wrk);
  EXPECT_THAT(wrk.out, HasSubstr("Requests/sec:")) << Describe(wrk);
  const std::size_t in = wrk.out.find(" requests in ");
  long requests = 0;
  if (in != std::string::npos) {
    const std::size_t start = wrk.out.find_last_not_of("0123456789", in - 1);
    requests = std::atol(wrk.out.c_str() + (start == std::string::npos ? 0 : start + 1));
  }
  EXPECT_GT(requests, 0) << Describe(wrk);

  // One request by hand: HTTP/1.0, so that nginx closes the connection after the answer.
  const int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0) << "connect 127.0.0.1:" << port_ << ": " << std::strerror(errno);
  const std::string answer = Exchange(fd, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", "");
  ::close(fd);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200 OK\r\n")) << answer;
  EXPECT_TRUE(answer.ends_with("\r\n\r\nhello\n")) << answer;

  NoteServing(*server, bin["nginx"], true);
  // SIGQUIT: the graceful stop; the master tells its worker to finish and waits for it.
  StopServer(*server, SIGQUIT, dir, {"error.log"});
  // At its default level nginx logs errors and worse; [error] can be a client's doing, the levels above are the
  // server's own failures (a failed epoll_ctl is an [alert]).
  const std::string errors = ReadWholeFile(dir.File("error.log"));
  for (const char* level : {"[emerg]", "[alert]", "[crit]"}) EXPECT_THAT(errors, Not(HasSubstr(level))) << errors;
  ExpectServedOnEpollcr(log, serving_, members_);
}

// ---- memcached ------------------------------------------------------------------------------------------------------

// The number after "NAME: " in memaslap's summary, or -1.
long MemaslapCount(const std::string& out, const std::string& name) {
  const std::size_t at = out.find("\n" + name + ": ");
  return at == std::string::npos ? -1 : std::atol(out.c_str() + at + name.size() + 3);
}

// The value of "STAT NAME VALUE" in memcached's answer to "stats", or -1.
long MemcachedStat(const std::string& stats, const std::string& name) {
  const std::size_t at = stats.find("STAT " + name + " ");
  return at == std::string::npos ? -1 : std::atol(stats.c_str() + at + name.size() + 6);
}

TEST_P(RealProgramTest, MemcachedUnderMemaslap) {
  std::map<std::string, std::string> bin;
  const std::string skip = FindAll({{"memcached", "memcached"}, {"memcaslap", "libmemcached-tools"}}, bin);
  if (!skip.empty()) GTEST_SKIP() << skip;

  TempDir dir("epollcr-rp-memcached");
  const std::string log = dir.File("epollcr.log");
  // TCP on 127.0.0.1 only (-U 0: no UDP), two worker threads, room for the load's connections. memcached refuses to
  // run as root unless told which user to be.
  auto server = StartServer(dir, [&](int port) {
    std::vector<std::string> args = {"-l", "127.0.0.1", "-p", std::to_string(port), "-U", "0", "-t", "2", "-c",
                                     std::to_string(std::max(1024, 2 * connections() + 64))};
    if (::geteuid() == 0) args.insert(args.end(), {"-u", "root"});
    return ServerCommand(log, bin["memcached"], args);
  });
  ASSERT_NE(server, nullptr);
  NoteServing(*server, bin["memcached"], false);

  // memaslap sets each key before it gets it, so a miss is an error, and it compares 10% of the values it gets (-v)
  // with what it set.
  const ProgramRun slap = RunClient(dir, bin["memcaslap"],
                                    {"-s", "127.0.0.1:" + std::to_string(port_), "-T", "2", "-c",
                                     std::to_string(connections()), "-x", std::to_string(kRequests), "-v", "0.1"});
  EXPECT_EQ(slap.status, 0) << Describe(slap);
  const long gets = MemaslapCount(slap.out, "cmd_get");
  const long sets = MemaslapCount(slap.out, "cmd_set");
  EXPECT_GT(gets, 0) << Describe(slap);
  EXPECT_GT(sets, 0) << Describe(slap);
  EXPECT_EQ(gets + sets, kRequests) << Describe(slap);
  EXPECT_EQ(MemaslapCount(slap.out, "get_misses"), 0) << Describe(slap);
  EXPECT_EQ(MemaslapCount(slap.out, "verify_misses"), 0) << Describe(slap);
  EXPECT_EQ(MemaslapCount(slap.out, "verify_failed"), 0) << Describe(slap);

  // By hand with the text protocol: a value stored and read back, then the server's own counts, which must be
  // memaslap's plus ours.
  const int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0) << "connect 127.0.0.1:" << port_ << ": " << std::strerror(errno);
  EXPECT_EQ(Exchange(fd, "set epollcr:k 0 0 5\r\nhello\r\n", "\r\n"), "STORED\r\n");
  EXPECT_EQ(Exchange(fd, "get epollcr:k\r\n", "END\r\n"), "VALUE epollcr:k 0 5\r\nhello\r\nEND\r\n");
  const std::string stats = Exchange(fd, "stats\r\n", "END\r\n");
  ::close(fd);
  EXPECT_EQ(MemcachedStat(stats, "cmd_get"), gets + 1) << stats;
  EXPECT_EQ(MemcachedStat(stats, "get_hits"), gets + 1) << stats;
  EXPECT_EQ(MemcachedStat(stats, "get_misses"), 0) << stats;
  EXPECT_EQ(MemcachedStat(stats, "cmd_set"), sets + 1) << stats;
  EXPECT_GE(MemcachedStat(stats, "total_connections"), connections()) << stats;

  NoteServing(*server, bin["memcached"], false);
  StopServer(*server, SIGTERM, dir);
  ExpectServedOnEpollcr(log, serving_, members_);
}

INSTANTIATE_TEST_SUITE_P(Connections, RealProgramTest, ::testing::ValuesIn(ConnectionCounts()),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "connections";
                         });

}  // namespace
