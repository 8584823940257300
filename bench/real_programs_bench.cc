// Real, unmodified servers (Debian's packages) under load from their usual load tools, on the kernel's epoll and
// under `epollcr run` (cli/commands/run.cc: the same binary with libepollcr-preload.so preloaded, so every epoll
// instance it makes is an epollcr EventPoll; docs/interposer.md), in the same run (BENCHMARKS.md "Real programs
// under epollcr run"):
//   BM_RealProgram/<program>/kernel/connections:N    the server as the package installs it
//   BM_RealProgram/<program>/epollcr/connections:N   `epollcr run --log DIR/epollcr.log -- <the same command line>`
// for <program> = redis (redis-server, loaded by redis-benchmark), nginx (nginx-light, loaded by wrk) and memcached
// (loaded by memcaslap, libmemcached-tools' memaslap), and N = 50 and 500 client connections.
//
// Per repetition (one iteration, so that repetitions interleaved at random by scripts/bench are each self-contained):
// a fresh temporary folder (mkdtemp under $TMPDIR or /tmp, removed at the end) holds the server's configuration, logs
// and output; a free port on 127.0.0.1 is picked (bind to port 0, close); the server is started in a process group of
// its own (stdout and stderr to a file in the folder), pinned to one CPU; it is ready once it answers a request on
// the port (redis PING, memcached version, an HTTP GET: the one-off connections of that probe are before the load).
// Then the load tool runs once, pinned to another CPU, for a fixed time (wrk, memcaslap: kLoadSeconds) or a fixed
// number of requests (redis-benchmark has no time limit: kRedisRequests per test), with its output in the folder. The
// requests per second are the tool's own figure, read from its output. Last, the server is stopped (SIGTERM: redis
// and memcached exit, nginx's master stops its worker and exits), waited for kStopSeconds, then SIGKILLed with its
// whole process group; every process is reaped. A repetition fails (SkipWithError, with the tail of the server's
// output and logs) when the server does not come up within kStartSeconds, dies, exits other than with status 0 when
// stopped, or when the load tool fails, overruns its deadline or reports errors.
//
// The epollcr binary: $EPOLLCR_BIN, else the build tree's cli/epollcr next to this binary's folder
// (<dir of /proc/self/exe>/../cli/epollcr), which finds the interposer in the same build tree.
//
// The server and the load tool compete for this machine's CPUs (2 on the development VM), so they are pinned to two
// different CPUs (the first CPU this process may use, and the next: cpu_pinning.h), the same way on both engines; the
// benchmark process itself, which only waits, is pinned with the load tool. Servers are single-threaded on their
// event loop (redis' main thread, nginx's one worker, memcached -t 1); redis' background threads and memcached's
// maintenance threads share the server's CPU. The counter `pinned` is 1 when both pins took.
//
// Reported, per repetition:
//   requests_per_second  the load tool's requests per second (redis: the SET and GET tests together, total requests /
//                        the sum of their times; also the counters set_rps and get_rps)
//   errors               the load tool's own error count (must be 0): wrk's socket errors (connect, read, write,
//                        timeout) plus non-2xx/3xx responses; redis-benchmark and memcaslap count none, so it is the
//                        error lines they print (redis-benchmark stops at the first error reply), plus 1 if the tool
//                        exited with a status other than 0
//   requests, load_s     the requests the tool completed and its own measured duration (the iteration's real_time:
//                        UseManualTime)
//   server_cpu_share     the server's CPU seconds (user + system of every process in its process group, from
//                        /proc/PID/stat, in clock ticks) while the load tool ran, its connection set-up and
//                        tear-down included, per second of load_s (1.0: the server used a whole CPU)
//   rps_server_cpu       requests per second of that server CPU time: the server's throughput with a CPU to itself
//   load_wall_s          the load tool's whole run (memcaslap sleeps 1 s after its load, redis-benchmark connects its
//                        clients afresh for each test)
//   epollcr_polls, epollcr_waits, epollcr_events (epollcr only)
//                        from `epollcr run --log`: the epoll instances the interposer made, and the waits and events
//                        of the processes that exited (a server that made no epoll through epollcr fails: its figures
//                        would be the kernel's)
//   connections, pinned, and memcached's get_misses (memcaslap's; not an error: memcached may evict)
#include <benchmark/benchmark.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cpu_pinning.h"

namespace epollcr::bench {
namespace {

constexpr int kLoadSeconds = 2;            // wrk -d, memcaslap -t (memcaslap takes whole seconds)
constexpr int kRedisRequests = 30000;      // redis-benchmark -n, per test (SET, then GET)
constexpr double kStartSeconds = 5;        // the server must answer its probe within this
constexpr double kStopSeconds = 5;         // then SIGKILL to its process group
constexpr double kToolMarginSeconds = 60;  // the load tool is killed this long after its expected duration
constexpr std::size_t kTailBytes = 600;    // of each log, in an error message

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string Failure(const std::string& what, int err) { return what + ": " + std::strerror(err); }

// ---- files and programs -------------------------------------------------------------------------------------------

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The last kTailBytes of a text, from a line start when there is one, without the final newline.
std::string Tail(std::string text) {
  if (text.size() > kTailBytes) {
    text = text.substr(text.size() - kTailBytes);
    if (const auto nl = text.find('\n'); nl != std::string::npos && nl + 1 < text.size()) text = text.substr(nl + 1);
    text = "..." + text;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

bool Executable(const std::string& path) { return !path.empty() && ::access(path.c_str(), X_OK) == 0; }

// `name` as execvp would find it in $PATH (and /usr/sbin, where nginx is, which a non-root PATH may lack), or "".
std::string FindProgram(const std::string& name) {
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin:/bin";
  path += ":/usr/sbin:/sbin";
  std::istringstream dirs(path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && Executable(dir + "/" + name)) return dir + "/" + name;
  }
  return "";
}

// The epollcr binary `epollcr run` is: $EPOLLCR_BIN, else <dir of this binary>/../cli/epollcr.
std::string EpollcrBinary() {
  if (const char* env = std::getenv("EPOLLCR_BIN"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return (self.parent_path() / ".." / "cli" / "epollcr").lexically_normal().string();
}

// A folder made with mkdtemp, removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/epollcr-rpb-XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A port on 127.0.0.1 nothing listens on now (the kernel's pick for port 0; the server binds it right after).
int FreePort(std::string* error) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return *error = Failure("socket", errno), -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = Failure("bind 127.0.0.1:0", errno);
  } else if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    *error = Failure("getsockname", errno);
  } else {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// 500 connections are 500 fds in the server and in the load tool, above a default soft limit of 1024 with what the
// servers keep besides: the soft limit is raised to the hard one (20,000 here) once, and the children inherit it.
void RaiseFdLimit() {
  static const bool raised = [] {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
    limit.rlim_cur = limit.rlim_max;
    return ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
  }();
  (void)raised;
}

// ---- processes ----------------------------------------------------------------------------------------------------

// Forks and execs argv[0] (a path) with argv, pinned to `cpu` (unless -1), stdout to `out` and stderr to `err`
// (files, created), in a process group of its own if `own_group`, killed should this process die first
// (PR_SET_PDEATHSIG, kept across exec). Returns the pid, or -1 and *error (exec failures included: the child reports
// errno through a close-on-exec pipe).
pid_t Spawn(const std::vector<std::string>& args, int cpu, bool own_group, const std::string& out,
            const std::string& err, std::string* error) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return *error = Failure("pipe2", errno), -1;
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    *error = Failure("fork", errno);
    ::close(report[0]);
    ::close(report[1]);
    return -1;
  }
  if (pid == 0) {  // the child: async-signal-safe calls only, then exec or _exit
    ::close(report[0]);
    const auto fail = [&](int step) {
      const int what[2] = {step, errno};
      (void)!::write(report[1], what, sizeof what);
      ::_exit(127);
    };
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (own_group && ::setpgid(0, 0) != 0) fail(1);
    if (cpu >= 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if (::sched_setaffinity(0, sizeof one, &one) != 0) fail(2);
    }
    // Both may name the same file: opened once, then, as a shell's 2>&1. (This process's 0, 1 and 2 are open, so the
    // new fds are above 2, and closed once copied.)
    const int in = ::open("/dev/null", O_RDONLY);
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = err == out ? out_fd : ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out_fd < 0 || err_fd < 0) fail(3);
    if (::dup2(in, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) fail(3);
    if (in > 2) ::close(in);
    if (out_fd > 2) ::close(out_fd);
    if (err_fd > 2 && err_fd != out_fd) ::close(err_fd);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(argv[0], argv.data());
    fail(4);
  }
  ::close(report[1]);
  if (own_group) ::setpgid(pid, pid);  // also here, so that the group exists before either side goes on
  int e[2] = {0, 0};
  ssize_t got;
  do {
    got = ::read(report[0], e, sizeof e);
  } while (got < 0 && errno == EINTR);
  ::close(report[0]);
  if (got == static_cast<ssize_t>(sizeof e)) {
    static const char* const kStep[] = {"", "setpgid", "sched_setaffinity", "open /dev/null or an output file"};
    const std::string step = e[0] >= 1 && e[0] <= 3 ? kStep[e[0]] : "exec " + args[0];
    *error = Failure(step + " (in the child)", e[1]);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return -1;
  }
  return pid;
}

// Waits up to `seconds` (< 0: no limit) for the child `pid` to exit; true and *status once reaped.
bool WaitExit(pid_t pid, double seconds, int* status) {
  const Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                        std::chrono::duration<double>(seconds < 0 ? 0 : seconds));
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  bool exited = false;
  for (;;) {
    const pid_t got = ::waitpid(pid, status, WNOHANG);
    if (got == pid || (got < 0 && errno != EINTR)) {
      exited = got == pid;
      break;
    }
    const double left = seconds < 0 ? 1.0 : Seconds(deadline - Clock::now());
    if (left <= 0) break;
    if (pidfd >= 0) {  // readable once the child has exited: no polling while a load runs
      pollfd p{pidfd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min(left, 1.0) * 1000) + 1);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  return exited;
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("died of signal ") + ::strsignal(WTERMSIG(status));
  return "stopped";
}

// The fields of /proc/PID/stat after the command name: state ppid pgrp session tty_nr tpgid flags minflt cminflt
// majflt cmajflt utime stime ...; and the command name.
struct ProcStat {
  std::string comm;
  char state = '?';
  long long pgrp = -1;
  long long utime = 0, stime = 0;
};

std::optional<ProcStat> ReadProcStat(const std::string& pid) {
  const std::string stat = ReadFile("/proc/" + pid + "/stat");
  const auto open = stat.find('(');
  const auto close = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat p;
  p.comm = stat.substr(open + 1, close - open - 1);
  std::istringstream fields(stat.substr(close + 1));
  long long ppid = 0, skip = 0;
  if (!(fields >> p.state >> ppid >> p.pgrp)) return std::nullopt;
  for (int i = 0; i < 8; ++i) fields >> skip;
  fields >> p.utime >> p.stime;
  return p;
}

// Every live process of process group `group`: pid -> its stat.
std::map<std::string, ProcStat> GroupProcesses(pid_t group) {
  std::map<std::string, ProcStat> found;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  while (const dirent* entry = ::readdir(proc)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    if (std::optional<ProcStat> p = ReadProcStat(entry->d_name); p && p->pgrp == group) found[entry->d_name] = *p;
  }
  ::closedir(proc);
  return found;
}

// "pid comm state wchan" of each process of the group, for an error message about a server that does not answer.
std::string DescribeGroup(pid_t group) {
  std::string text;
  for (const auto& [pid, p] : GroupProcesses(group)) {
    text += (text.empty() ? "" : ", ") + pid + " " + p.comm + " " + p.state + " " + ReadFile("/proc/" + pid + "/wchan");
  }
  return text.empty() ? "none" : text;
}

// CPU seconds (user + system) of every live process in process group `group`, from /proc/PID/stat.
double GroupCpuSeconds(pid_t group) {
  static const double kTick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double ticks = 0;
  for (const auto& [pid, p] : GroupProcesses(group)) ticks += static_cast<double>(p.utime + p.stime);
  return ticks / kTick;
}

// ---- the programs -------------------------------------------------------------------------------------------------

// What a load run gave: the tool's figures, or what failed.
struct LoadResult {
  double requests_per_second = 0;
  double requests = 0;
  double seconds = 0;  // the tool's own measured duration
  double errors = 0;
  std::string error_text;  // what the errors were (the tool's own lines)
  std::map<std::string, double> extra;  // more counters
};

// The command lines take the port, the folder and the connections as text, so that the same functions also write
// them with placeholders into the run's context (RegisterContext), which BENCHMARKS.md quotes.
struct Program {
  const char* name;                 // in the benchmark's name
  const char* server;               // the server binary's name (FindProgram)
  std::vector<const char*> tools;   // the load tool's names, the first found is used
  const char* package;              // what to install when it is missing
  int stop_signal;
  std::vector<const char*> logs;    // files in the folder whose tails go into an error message
  // The server's arguments after its path, and the configuration file it reads (written into the folder as
  // config_name; none if config_name is null).
  std::vector<std::string> (*server_args)(const std::string& dir, const std::string& port);
  const char* config_name;
  std::string (*config)(const std::string& dir, const std::string& port);
  // The ready probe: what to send, and what the reply starts with.
  const char* probe;
  const char* probe_reply;
  std::vector<std::string> (*tool_args)(const std::string& port, const std::string& connections);
  double expected_seconds;  // how long a load run should take, for its deadline
  LoadResult (*parse)(const std::string& out, const std::string& err);
};

std::vector<std::string> RedisArgs(const std::string& dir, const std::string& port) {
  return {"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir,
          "--logfile", dir + "/redis.log"};
}

std::vector<std::string> NginxArgs(const std::string& dir, const std::string&) {
  // -p: the prefix for relative paths; -e: the error log until the configuration is read (else the compiled-in one).
  return {"-p", dir, "-e", dir + "/error.log", "-c", dir + "/nginx.conf"};
}

std::string NginxConf(const std::string& dir, const std::string& port) {
  return "daemon off;\n"
         "master_process on;\n"
         "worker_processes 1;\n"
         "pid " + dir + "/nginx.pid;\n"
         "error_log " + dir + "/error.log;\n"
         "events { worker_connections 4096; use epoll; }\n"
         "http {\n"
         "  access_log off;\n"
         "  default_type text/plain;\n"
         "  client_body_temp_path " + dir + "/client_body;\n"
         "  proxy_temp_path " + dir + "/proxy;\n"
         "  fastcgi_temp_path " + dir + "/fastcgi;\n"
         "  uwsgi_temp_path " + dir + "/uwsgi;\n"
         "  scgi_temp_path " + dir + "/scgi;\n"
         "  server {\n"
         "    listen 127.0.0.1:" + port + ";\n"
         "    location / { return 200 \"hello\\n\"; }\n"
         "  }\n"
         "}\n";
}

std::vector<std::string> MemcachedArgs(const std::string&, const std::string& port) {
  std::vector<std::string> args = {"-l", "127.0.0.1", "-p", port, "-U", "0", "-t", "1", "-c", "4096"};
  if (::geteuid() == 0) args.insert(args.end(), {"-u", "root"});  // memcached refuses to run as root without it
  return args;
}

std::vector<std::string> RedisLoad(const std::string& port, const std::string& connections) {
  return {"-h", "127.0.0.1", "-p", port, "-c", connections, "-n", std::to_string(kRedisRequests), "-t", "set,get",
          "--csv"};
}

std::vector<std::string> WrkLoad(const std::string& port, const std::string& connections) {
  return {"-t", "1", "-c", connections, "-d", std::to_string(kLoadSeconds) + "s", "--timeout", "5s",
          "http://127.0.0.1:" + port + "/"};
}

std::vector<std::string> MemcaslapLoad(const std::string& port, const std::string& connections) {
  // -T 1: one thread (one CPU is the load tool's); -w 1k: a 1,024-key window per connection (the default 10k makes
  // each of 500 connections generate 10,240 keys before the run starts).
  return {"-s", "127.0.0.1:" + port, "-T", "1", "-c", connections, "-w", "1k", "-t",
          std::to_string(kLoadSeconds) + "s"};
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// Lines of a load tool's output that say something went wrong.
void CountErrorLines(const std::string& text, LoadResult* r) {
  for (const std::string& line : Lines(text)) {
    std::string lower = line;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower.find("error") != std::string::npos || lower.find("could not") != std::string::npos ||
        lower.find("failed") != std::string::npos || lower.find("reset") != std::string::npos ||
        lower.find("refused") != std::string::npos || lower.find("closed") != std::string::npos) {
      r->errors += 1;
      if (r->error_text.size() < kTailBytes) r->error_text += (r->error_text.empty() ? "" : " | ") + line;
    }
  }
}

// redis-benchmark --csv: a header, then "SET","<rps>",... and "GET","<rps>",...
LoadResult ParseRedis(const std::string& out, const std::string& err) {
  LoadResult r;
  std::map<std::string, double> rps;
  for (const std::string& line : Lines(out)) {
    std::vector<std::string> cells;
    std::istringstream in(line);
    for (std::string cell; std::getline(in, cell, ',');) {
      if (cell.size() >= 2 && cell.front() == '"' && cell.back() == '"') cell = cell.substr(1, cell.size() - 2);
      cells.push_back(cell);
    }
    if (cells.size() >= 2 && (cells[0] == "SET" || cells[0] == "GET")) rps[cells[0]] = std::atof(cells[1].c_str());
  }
  CountErrorLines(out + "\n" + err, &r);
  if (rps.count("SET") == 0 || rps.count("GET") == 0 || rps["SET"] <= 0 || rps["GET"] <= 0) return r;
  r.extra["set_rps"] = rps["SET"];
  r.extra["get_rps"] = rps["GET"];
  r.requests = 2.0 * kRedisRequests;
  r.seconds = kRedisRequests / rps["SET"] + kRedisRequests / rps["GET"];
  r.requests_per_second = r.requests / r.seconds;
  return r;
}

// A duration as wrk prints it: 2.00s, 999.12ms, 1.00m.
double WrkDuration(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const std::string unit = end;
  if (unit == "us") return v * 1e-6;
  if (unit == "ms") return v * 1e-3;
  if (unit == "m") return v * 60;
  if (unit == "h") return v * 3600;
  return v;
}

// wrk: "  N requests in 2.00s, X read", "  Socket errors: connect A, read B, write C, timeout D",
// "  Non-2xx or 3xx responses: E", "Requests/sec: R".
LoadResult ParseWrk(const std::string& out, const std::string& err) {
  LoadResult r;
  for (std::string line : Lines(out)) {
    line.erase(0, line.find_first_not_of(' '));
    if (StartsWith(line, "Requests/sec:")) {
      r.requests_per_second = std::atof(line.c_str() + std::strlen("Requests/sec:"));
    } else if (const auto in = line.find(" requests in "); in != std::string::npos) {
      r.requests = std::atof(line.c_str());
      r.seconds = WrkDuration(line.substr(in + std::strlen(" requests in "), line.find(',') - in - 13));
    } else if (StartsWith(line, "Socket errors:")) {
      int connect = 0, read = 0, write = 0, timeout = 0;
      std::sscanf(line.c_str(), "Socket errors: connect %d, read %d, write %d, timeout %d", &connect, &read, &write,
                  &timeout);
      r.errors += connect + read + write + timeout;
      r.error_text += (r.error_text.empty() ? "" : " | ") + line;
    } else if (StartsWith(line, "Non-2xx or 3xx responses:")) {
      r.errors += std::atof(line.c_str() + std::strlen("Non-2xx or 3xx responses:"));
      r.error_text += (r.error_text.empty() ? "" : " | ") + line;
    }
  }
  CountErrorLines(err, &r);
  return r;
}

// memcaslap: "get_misses: M", then "Run time: 2.0s Ops: N TPS: R Net_rate: ...".
LoadResult ParseMemcaslap(const std::string& out, const std::string& err) {
  LoadResult r;
  for (const std::string& line : Lines(out)) {
    if (StartsWith(line, "get_misses:")) r.extra["get_misses"] = std::atof(line.c_str() + std::strlen("get_misses:"));
    double seconds = 0, tps = 0;
    unsigned long long ops = 0;
    if (std::sscanf(line.c_str(), "Run time: %lfs Ops: %llu TPS: %lf", &seconds, &ops, &tps) == 3) {
      r.seconds = seconds;
      r.requests = static_cast<double>(ops);
      r.requests_per_second = tps;
    }
  }
  CountErrorLines(err, &r);  // memaslap prints what went wrong on stderr and counts nothing
  return r;
}

const Program kRedis = {.name = "redis",
                        .server = "redis-server",
                        .tools = {"redis-benchmark"},
                        .package = "redis-server and redis-tools",
                        .stop_signal = SIGTERM,
                        .logs = {"redis.log"},
                        .server_args = RedisArgs,
                        .config_name = nullptr,
                        .config = nullptr,
                        .probe = "PING\r\n",
                        .probe_reply = "+PONG",
                        .tool_args = RedisLoad,
                        .expected_seconds = 10,
                        .parse = ParseRedis};
const Program kNginx = {.name = "nginx",
                        .server = "nginx",
                        .tools = {"wrk"},
                        .package = "nginx-light and wrk",
                        .stop_signal = SIGTERM,  // to the master: it stops its worker, then exits
                        .logs = {"error.log"},
                        .server_args = NginxArgs,
                        .config_name = "nginx.conf",
                        .config = NginxConf,
                        .probe = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                        .probe_reply = "HTTP/1.1 200",
                        .tool_args = WrkLoad,
                        .expected_seconds = kLoadSeconds,
                        .parse = ParseWrk};
const Program kMemcached = {.name = "memcached",
                            .server = "memcached",
                            .tools = {"memcaslap", "memaslap"},
                            .package = "memcached and libmemcached-tools",
                            .stop_signal = SIGTERM,
                            .logs = {},
                            .server_args = MemcachedArgs,
                            .config_name = nullptr,
                            .config = nullptr,
                            .probe = "version\r\n",
                            .probe_reply = "VERSION",
                            .tool_args = MemcaslapLoad,
                            .expected_seconds = kLoadSeconds + 2,  // memaslap sleeps 1 s after the run
                            .parse = ParseMemcaslap};

// ---- the server under test ----------------------------------------------------------------------------------------

// One server process (and its process group), started by Start, stopped and reaped by Stop or the destructor.
class Server {
 public:
  Server(const Program& program, std::string dir) : program_(program), dir_(std::move(dir)) {}
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() { Stop(); }

  std::string Start(const std::vector<std::string>& command, int cpu) {
    std::string error;
    pid_ = Spawn(command, cpu, /*own_group=*/true, dir_ + "/server.out", dir_ + "/server.out", &error);
    group_ = pid_;
    return error;
  }

  // Connects to the port and sends the probe until the reply starts as expected; the server must stay alive.
  std::string WaitReady(int port) {
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(static_cast<int>(kStartSeconds));
    std::string last = "no answer";
    while (Clock::now() < deadline) {
      if (std::string died = CheckAlive(); !died.empty()) return died + " before it answered on the port" + Logs();
      if (Probe(port, &last)) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return "the server did not answer on 127.0.0.1:" + std::to_string(port) + " within " +
           std::to_string(static_cast<int>(kStartSeconds)) + " s (" + last + "; its processes, pid name state " +
           "wchan: " + DescribeGroup(group_) + ")" + Logs();
  }

  // Empty while the server runs, else how it ended (it is reaped).
  std::string CheckAlive() {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return "the server " + DescribeStatus(status);
    }
    return {};
  }

  // SIGTERM (program_.stop_signal), kStopSeconds, then SIGKILL to the whole group; reaps. Empty if it exited 0.
  std::string Stop() {
    std::string result;
    if (pid_ > 0) {
      const pid_t pid = std::exchange(pid_, -1);
      const std::string signal = std::string("SIG") + ::sigabbrev_np(program_.stop_signal);
      ::kill(pid, program_.stop_signal);
      int status = 0;
      if (!WaitExit(pid, kStopSeconds, &status)) {
        ::kill(-group_, SIGKILL);
        WaitExit(pid, -1, &status);
        result = "the server did not exit within " + std::to_string(static_cast<int>(kStopSeconds)) + " s of " +
                 signal + " (killed)" + Logs();
      } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        result = "the server " + DescribeStatus(status) + " when stopped with " + signal + Logs();
      }
    }
    if (group_ > 0) {
      // What is left of its group (a worker whose master is gone): killed, and reaped here when it became this
      // process's child (PR_SET_CHILD_SUBREAPER), else by init.
      const pid_t group = std::exchange(group_, -1);
      ::kill(-group, SIGKILL);
      const Clock::time_point deadline = Clock::now() + std::chrono::seconds(static_cast<int>(kStopSeconds));
      while (Clock::now() < deadline) {
        const pid_t got = ::waitpid(-group, nullptr, WNOHANG);
        if (got < 0 && errno != EINTR) break;  // ECHILD: none left
        if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    return result;
  }

  pid_t group() const { return group_; }

  // The tails of the server's output and logs, for an error message.
  std::string Logs() const {
    std::string text;
    std::vector<std::string> files = {"server.out"};
    for (const char* log : program_.logs) files.emplace_back(log);
    for (const std::string& file : files) {
      const std::string tail = Tail(ReadFile(dir_ + "/" + file));
      if (!tail.empty()) text += "; " + file + ": " + tail;
    }
    return text;
  }

 private:
  bool Probe(int port, std::string* last) const {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return *last = Failure("socket", errno), false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    timeval timeout{0, 500000};  // a reply must come within 0.5 s, else the next try
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    bool ok = false;
    const std::string expected = program_.probe_reply;
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      *last = Failure("connect", errno);
    } else if (::send(fd, program_.probe, std::strlen(program_.probe), MSG_NOSIGNAL) < 0) {
      *last = Failure("send the probe", errno);
    } else {
      std::string reply;
      char buf[512];
      while (reply.size() < expected.size()) {
        const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        if (got <= 0) break;
        reply.append(buf, static_cast<std::size_t>(got));
      }
      ok = StartsWith(reply, expected);
      if (!ok) *last = reply.empty() ? "no reply to the probe" : "probe reply: " + Tail(reply);
    }
    ::close(fd);
    return ok;
  }

  const Program& program_;
  std::string dir_;
  pid_t pid_ = -1;    // the server (nginx: its master), until reaped
  pid_t group_ = -1;  // its process group, until killed
};

// What `epollcr run --log FILE` wrote: "create PID FD" per epoll instance made, "exit PID polls N waits W events E raw
// R" per process at its exit.
struct RunLog {
  double polls = 0, waits = 0, events = 0;
  std::string text;
};

RunLog ReadRunLog(const std::string& path) {
  RunLog log;
  log.text = ReadFile(path);
  for (const std::string& line : Lines(log.text)) {
    long long pid = 0, polls = 0, waits = 0, events = 0;
    if (StartsWith(line, "create ")) {
      log.polls += 1;
    } else if (std::sscanf(line.c_str(), "exit %lld polls %lld waits %lld events %lld", &pid, &polls, &waits,
                           &events) == 4) {
      log.waits += static_cast<double>(waits);
      log.events += static_cast<double>(events);
    }
  }
  return log;
}

// The first CPU this process may use (-1 if unknown).
int FirstAllowedCpu() {
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) return cpu;
  }
  return -1;
}

// What one repetition measured.
struct CaseResult {
  LoadResult load;
  double wall = 0;          // the load tool's whole run, by this process's clock
  double server_cpu_s = 0;  // the server group's CPU seconds meanwhile
  bool pinned = false;
  std::optional<RunLog> log;  // under epollcr
};

// One repetition, from the temporary folder to the reaped server: empty, or what failed (*out filled as far as it
// got; the load tool's errors are in out->load.errors, not a failure here).
std::string RunCase(const Program& program, bool under_epollcr, int connections, CaseResult* out) {
  const std::string server_path = FindProgram(program.server);
  std::string tool_path;
  for (const char* tool : program.tools) {
    if (tool_path.empty()) tool_path = FindProgram(tool);
  }
  if (server_path.empty() || tool_path.empty()) {
    return std::string(server_path.empty() ? program.server : program.tools[0]) + " is not installed (Debian: " +
           program.package + ")";
  }
  const TempDir dir;
  if (dir.path().empty()) return Failure("mkdtemp", errno);
  std::vector<std::string> command;
  if (under_epollcr) {
    const std::string epollcr = EpollcrBinary();
    if (!Executable(epollcr)) return "no epollcr binary at '" + epollcr + "' (build cli/epollcr, or set EPOLLCR_BIN)";
    command = {epollcr, "run", "--log", dir.path() + "/epollcr.log", "--"};
  }
  std::string error;
  const int port = FreePort(&error);
  if (port < 0) return error;
  if (program.config != nullptr) {
    const std::string path = dir.path() + "/" + program.config_name;
    std::ofstream config(path);
    config << program.config(dir.path(), std::to_string(port));
    config.close();
    if (!config) return "could not write " + path;
  }
  command.push_back(server_path);
  for (std::string& arg : program.server_args(dir.path(), std::to_string(port))) command.push_back(std::move(arg));
  std::vector<std::string> tool = {tool_path};
  for (std::string& arg : program.tool_args(std::to_string(port), std::to_string(connections))) {
    tool.push_back(std::move(arg));
  }

  const int server_cpu = FirstAllowedCpu();
  const int load_cpu = OtherAllowedCpu(server_cpu);
  const PinnedThread pin(load_cpu);  // this process waits beside the load tool
  out->pinned = pin.pinned();
  Server server(program, dir.path());
  if (std::string err = server.Start(command, load_cpu >= 0 ? server_cpu : -1); !err.empty()) return err;
  if (std::string err = server.WaitReady(port); !err.empty()) return err;

  const double cpu_start = GroupCpuSeconds(server.group());
  const Clock::time_point start = Clock::now();
  const pid_t load = Spawn(tool, load_cpu, /*own_group=*/false, dir.path() + "/load.out", dir.path() + "/load.err",
                           &error);
  if (load < 0) return error;
  int status = 0;
  const double limit = program.expected_seconds + kToolMarginSeconds;
  if (!WaitExit(load, limit, &status)) {
    ::kill(load, SIGKILL);
    WaitExit(load, -1, &status);
    return tool_path + " did not finish within " + std::to_string(static_cast<int>(limit)) + " s (killed)" +
           server.Logs();
  }
  out->wall = Seconds(Clock::now() - start);
  out->server_cpu_s = GroupCpuSeconds(server.group()) - cpu_start;
  const std::string load_out = ReadFile(dir.path() + "/load.out");
  const std::string load_err = ReadFile(dir.path() + "/load.err");
  out->load = program.parse(load_out, load_err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    out->load.errors += 1;
    out->load.error_text += (out->load.error_text.empty() ? "" : " | ") + tool_path + " " + DescribeStatus(status);
  }
  if (std::string died = server.CheckAlive(); !died.empty()) return died + " during the load" + server.Logs();
  if (out->load.requests_per_second <= 0 || out->load.seconds <= 0) {
    return "no requests/s in the output of " + tool_path + ": " + Tail(load_out + load_err) + server.Logs();
  }
  if (std::string stopped = server.Stop(); !stopped.empty()) return stopped;
  if (under_epollcr) {
    // The proof that the epolls measured were epollcr's: `epollcr run --log` has a line per epoll instance the
    // interposer made and one per process at its exit (how many waits and events its polls had).
    out->log = ReadRunLog(dir.path() + "/epollcr.log");
    if (out->log->polls == 0) {
      return "the server made no epoll instance through epollcr (epollcr run --log: '" + Tail(out->log->text) + "')";
    }
  }
  return {};
}

// The repetition runs inside the benchmark loop, failures included, so that every repetition of a case reports one
// iteration (Google Benchmark aborts when the repetitions of a case differ in iterations, as one that failed before
// its loop, 0, does from those that ran, 1). A failure is also printed on stderr as it happens.
//
// Once a repetition of a case has failed, its later repetitions fail at once, naming that failure: Google Benchmark
// 1.7.1 (Debian 12) crashes computing the aggregates of a case whose first repetition failed and a later one did not
// (ComputeStats; a failure after a success is handled), and a case that fails once is a bug to look at, not a figure.
void BM_RealProgram(benchmark::State& state, const Program* program, bool under_epollcr) {
  const int connections = static_cast<int>(state.range(0));
  const std::string name = std::string(program->name) + "/" + (under_epollcr ? "epollcr" : "kernel") +
                           "/connections:" + std::to_string(connections);
  static std::map<std::string, std::string> failed;  // case -> its first failure
  RaiseFdLimit();
  // Orphans of the server's group (an nginx worker whose master was SIGKILLed) become this process's children, so
  // that Server::Stop reaps them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  CaseResult result;
  std::string failure;
  for (auto _ : state) {
    if (const auto earlier = failed.find(name); earlier != failed.end()) {
      failure = "not run: an earlier repetition of this case failed: " + earlier->second;
      break;
    }
    failure = RunCase(*program, under_epollcr, connections, &result);
    if (!failure.empty()) {
      failed.emplace(name, failure);
      std::fprintf(stderr, "real_programs_bench: BM_RealProgram/%s failed: %s\n", name.c_str(), failure.c_str());
      break;
    }
    state.SetIterationTime(result.load.seconds);
  }
  if (!failure.empty()) return state.SkipWithError(failure.c_str());
  const LoadResult& load = result.load;
  state.counters["connections"] = connections;
  state.counters["errors"] = load.errors;
  state.counters["pinned"] = result.pinned ? 1 : 0;
  state.counters["requests_per_second"] = load.requests_per_second;
  state.counters["requests"] = load.requests;
  state.counters["load_s"] = load.seconds;
  state.counters["load_wall_s"] = result.wall;
  if (result.server_cpu_s > 0) {
    state.counters["server_cpu_share"] = result.server_cpu_s / load.seconds;
    state.counters["rps_server_cpu"] = load.requests / result.server_cpu_s;
  }
  for (const auto& [counter, value] : load.extra) state.counters[counter] = value;
  if (result.log) {
    state.counters["epollcr_polls"] = result.log->polls;
    state.counters["epollcr_waits"] = result.log->waits;
    state.counters["epollcr_events"] = result.log->events;
  }
  if (load.errors > 0) {
    failure = "the load tool reported " + std::to_string(static_cast<long long>(load.errors)) + " errors: " +
              load.error_text;
    failed.emplace(name, failure);
    std::fprintf(stderr, "real_programs_bench: BM_RealProgram/%s failed: %s\n", name.c_str(), failure.c_str());
    state.SkipWithError(failure.c_str());
  }
}

// A command line as a shell would take it back (arguments that are empty or hold spaces in single quotes).
std::string ShellLine(const std::vector<std::string>& args) {
  std::string line;
  for (const std::string& arg : args) {
    if (!line.empty()) line += ' ';
    line += arg.empty() || arg.find_first_of(" \"'\\$") != std::string::npos ? "'" + arg + "'" : arg;
  }
  return line;
}

// The run's context (in the JSON, quoted by BENCHMARKS.md): each program's server and load command lines, with
// DIR, PORT and CONNECTIONS for what each repetition fills in, and the epollcr binary the epollcr cases run.
void RegisterContext(const Program& program) {
  const std::string key = std::string("real_programs_") + program.name;
  std::vector<std::string> server = {program.server};
  for (std::string& arg : program.server_args("DIR", "PORT")) server.push_back(std::move(arg));
  benchmark::AddCustomContext(key + "_server", ShellLine(server));
  if (program.config != nullptr) {  // on one line: nginx's configuration does not care
    std::string config = program.config("DIR", "PORT");
    std::replace(config.begin(), config.end(), '\n', ' ');
    benchmark::AddCustomContext(key + "_config", std::string(program.config_name) + ": " + config);
  }
  std::string tool = program.tools[0];
  for (const char* name : program.tools) {
    if (!FindProgram(name).empty()) {
      tool = name;
      break;
    }
  }
  std::vector<std::string> load = {tool};
  for (std::string& arg : program.tool_args("PORT", "CONNECTIONS")) load.push_back(std::move(arg));
  benchmark::AddCustomContext(key + "_load", ShellLine(load));
}

// One load run per repetition (Iterations(1)); its time is the tool's own duration (UseManualTime).
[[maybe_unused]] const bool registered = [] {
  for (const Program* program : {&kRedis, &kNginx, &kMemcached}) {
    RegisterContext(*program);
    for (auto [under_epollcr, engine] : {std::pair{false, "kernel"}, std::pair{true, "epollcr"}}) {
      benchmark::RegisterBenchmark((std::string("BM_RealProgram/") + program->name + "/" + engine).c_str(),
                                   BM_RealProgram, program, under_epollcr)
          ->ArgName("connections")->Arg(50)->Arg(500)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::AddCustomContext("real_programs_epollcr", ShellLine({EpollcrBinary(), "run", "--log", "DIR/epollcr.log",
                                                                  "--", "SERVER..."}));
  return true;
}();

}  // namespace
}  // namespace epollcr::bench
