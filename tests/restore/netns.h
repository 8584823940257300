// Network namespaces for the TCP-by-value tests that move a connection to another "machine": three namespaces of the
// test's own (names with its pid, removed whatever happens), C for the client, A and B for the two server machines,
// each linked to C by a veth pair (10.77.1.0/24 and 10.77.2.0/24). The service address 10.77.0.1 lives on A's
// loopback and C routes to it through A; B answers C's client address through its own link. Needs root and ip(8).
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace epollcr::restore {

// Runs `ip ARGS...`; "" or its failure.
inline std::string Ip(const std::vector<std::string>& args) {
  const pid_t child = ::fork();
  if (child == 0) {
    std::vector<char*> argv = {const_cast<char*>("ip")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::execvp("ip", argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  std::string line = "ip";
  for (const std::string& a : args) line += " " + a;
  return line + ": failed (status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")";
}

// The three namespaces, made by the constructor and removed by the destructor.
class Machines {
 public:
  Machines() : prefix_("epollcr-tcp-" + std::to_string(::getpid()) + "-") {
    for (const char* n : {"a", "b", "c"}) {
      if (!Run({"netns", "add", Name(n)})) return;
      made_.push_back(Name(n));
      if (!In(n, {"link", "set", "lo", "up"})) return;
    }
    // Veth pairs C<->A and C<->B, addressed 10.77.1.0/24 and 10.77.2.0/24; the service address on A's loopback.
    if (!Run({"link", "add", "ca", "netns", Name("c"), "type", "veth", "peer", "name", "ac", "netns", Name("a")}) ||
        !Run({"link", "add", "cb", "netns", Name("c"), "type", "veth", "peer", "name", "bc", "netns", Name("b")}) ||
        !In("c", {"addr", "add", "10.77.1.2/24", "dev", "ca"}) ||
        !In("c", {"addr", "add", "10.77.2.2/24", "dev", "cb"}) ||
        !In("a", {"addr", "add", "10.77.1.1/24", "dev", "ac"}) ||
        !In("b", {"addr", "add", "10.77.2.1/24", "dev", "bc"}) ||
        !In("c", {"link", "set", "ca", "up"}) || !In("c", {"link", "set", "cb", "up"}) ||
        !In("a", {"link", "set", "ac", "up"}) || !In("b", {"link", "set", "bc", "up"}) ||
        !In("a", {"addr", "add", "10.77.0.1/32", "dev", "lo"}) ||
        !In("c", {"route", "add", "10.77.0.1/32", "via", "10.77.1.1"}) ||
        // B answers the client's address (on C's link to A) through its own link to C.
        !In("b", {"route", "add", "10.77.1.0/24", "via", "10.77.2.2"})) {
      return;
    }
    ready_ = true;
  }
  ~Machines() {
    for (const std::string& name : made_) (void)Ip({"netns", "del", name});
  }
  Machines(const Machines&) = delete;
  Machines& operator=(const Machines&) = delete;

  bool ready() const { return ready_; }
  const std::string& error() const { return error_; }
  std::string Name(const char* n) const { return prefix_ + n; }
  // `ip ARGS` in namespace `n`.
  bool In(const char* n, std::vector<std::string> args) {
    args.insert(args.begin(), {"-n", Name(n)});
    return Run(args);
  }
  // Runs `body` on a thread that has entered namespace `n` (a network namespace is per thread).
  std::string On(const char* n, const std::function<std::string()>& body) {
    std::string result;
    std::thread thread([&] {
      const int ns = ::open(("/run/netns/" + Name(n)).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        result = std::string("setns: ") + std::strerror(errno);
      } else {
        result = body();
      }
      if (ns >= 0) ::close(ns);
    });
    thread.join();
    return result;
  }

 private:
  bool Run(const std::vector<std::string>& args) {
    error_ = Ip(args);
    return error_.empty();
  }

  std::string prefix_;
  std::vector<std::string> made_;
  bool ready_ = false;
  std::string error_;
};

}  // namespace epollcr::restore
