#include "restore/network_lock.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

#include "fault_injection.h"
#include "image/tcp_records.h"

namespace epollcr::restore {
namespace {

constexpr std::string_view kPrefix = "epollcr_lock_";
// The soname of libnftables 0.9.3 and later.
constexpr const char* kNftablesLibrary = "libnftables.so.1";

// What nftables answered: "" or the error's first line, and what it printed (a listing).
struct Answer {
  std::string error;
  std::string output;
};

// libnftables, loaded at the first lock (dlopen) rather than linked: with its own libraries (nftnl, mnl, xtables,
// jansson, gmp) it would cost every start of a program that links the restorer, and most never lock a network (the
// worker processes of `epollcr replay --checkpoint-mode exec` start by the thousand).
struct Nftables {
  decltype(&nft_ctx_new) ctx_new = nullptr;
  decltype(&nft_ctx_free) ctx_free = nullptr;
  decltype(&nft_ctx_buffer_output) buffer_output = nullptr;
  decltype(&nft_ctx_buffer_error) buffer_error = nullptr;
  decltype(&nft_run_cmd_from_buffer) run_cmd_from_buffer = nullptr;
  decltype(&nft_ctx_get_output_buffer) get_output_buffer = nullptr;
  decltype(&nft_ctx_get_error_buffer) get_error_buffer = nullptr;
  std::string error;  // why it could not be loaded, or empty
};

template <typename F>
bool Resolve(void* library, const char* name, F* function) {
  *function = reinterpret_cast<F>(::dlsym(library, name));
  return *function != nullptr;
}

// Loaded once, and never unloaded. Called before RunInChild forks: a child of a threaded process must not dlopen.
const Nftables& LoadNftables() {
  static const Nftables nftables = [] {
    Nftables n;
    void* library = ::dlopen(kNftablesLibrary, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* why = ::dlerror();
      n.error = std::string("cannot load ") + kNftablesLibrary + (why != nullptr ? std::string(": ") + why : "");
      return n;
    }
    if (!Resolve(library, "nft_ctx_new", &n.ctx_new) || !Resolve(library, "nft_ctx_free", &n.ctx_free) ||
        !Resolve(library, "nft_ctx_buffer_output", &n.buffer_output) ||
        !Resolve(library, "nft_ctx_buffer_error", &n.buffer_error) ||
        !Resolve(library, "nft_run_cmd_from_buffer", &n.run_cmd_from_buffer) ||
        !Resolve(library, "nft_ctx_get_output_buffer", &n.get_output_buffer) ||
        !Resolve(library, "nft_ctx_get_error_buffer", &n.get_error_buffer)) {
      n.error = std::string(kNftablesLibrary) + " lacks a function of libnftables' API";
    }
    return n;
  }();
  return nftables;
}

// Runs `commands` as one transaction in this process, through a libnftables context of its own whose output and
// errors are kept in buffers (the library never prints). A context's netlink socket belongs to the network namespace
// of the thread that made it, so each call makes its own.
Answer RunHere(const std::string& commands) {
  const Nftables& nft = LoadNftables();
  if (!nft.error.empty()) return {nft.error, ""};
  const auto free = [&nft](nft_ctx* ctx) { nft.ctx_free(ctx); };
  const std::unique_ptr<nft_ctx, decltype(free)> ctx{nft.ctx_new(NFT_CTX_DEFAULT), free};
  if (!ctx) return {"libnftables could not make a context", ""};
  nft.buffer_output(ctx.get());
  nft.buffer_error(ctx.get());
  if (nft.run_cmd_from_buffer(ctx.get(), commands.c_str()) == 0) return {"", nft.get_output_buffer(ctx.get())};
  std::string error = nft.get_error_buffer(ctx.get());
  error = error.substr(0, error.find('\n'));  // the rest repeats the command, which may be long
  if (error.rfind("Error: ", 0) == 0) error.erase(0, 7);
  return {error.empty() ? "nftables refused the command" : error, ""};
}

// libnftables waits for the kernel's answers with select(2) (nftables' src/mnl.c), which cannot watch an fd numbered
// FD_SETSIZE (1024) or above: glibc's fortified FD_SET aborts the process. Its netlink socket takes the lowest free
// number, so a process with that many fds open runs the commands in a forked child (same network namespace: the
// forking thread's) that has closed every fd but its standard streams and the pipe of its answer.
Answer RunInChild(const std::string& commands) {
  int answer[2];
  if (::pipe2(answer, O_CLOEXEC) != 0) return {std::string("pipe: ") + std::strerror(errno), ""};
  const pid_t child = ::fork();
  if (child == 0) {
    const int out = ::dup2(answer[1], 3) == 3 ? 3 : -1;
    ::close_range(4, ~0u, 0);
    const Answer a = out < 0 ? Answer{"dup2 in the child", ""} : RunHere(commands);
    const std::string bytes = std::to_string(a.error.size()) + "\n" + a.error + a.output;
    for (std::size_t done = 0; out >= 0 && done < bytes.size();) {
      const ssize_t n = ::write(out, bytes.data() + done, bytes.size() - done);
      if (n <= 0 && errno != EINTR) break;
      if (n > 0) done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  const int fork_error = errno;
  ::close(answer[1]);
  std::string bytes;
  char buffer[4096];
  for (ssize_t n; child > 0 && ((n = ::read(answer[0], buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR));) {
    if (n > 0) bytes.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(answer[0]);
  if (child < 0) return {std::string("fork: ") + std::strerror(fork_error), ""};
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  const std::size_t newline = bytes.find('\n');
  const std::size_t size = newline == std::string::npos ? 0 : std::strtoull(bytes.c_str(), nullptr, 10);
  if (newline == std::string::npos || bytes.size() < newline + 1 + size) {
    return {"the child that ran nftables gave no answer (status " + std::to_string(status) + ")", ""};
  }
  return {bytes.substr(newline + 1, size), bytes.substr(newline + 1 + size)};
}

// Runs `commands` here, or in a child when this process's lowest free fd is too high for libnftables.
Answer Run(const std::string& commands, int lowest_free_fd) {
  if (const Nftables& nft = LoadNftables(); !nft.error.empty()) return {nft.error, ""};
  return lowest_free_fd >= FD_SETSIZE - 16 ? RunInChild(commands) : RunHere(commands);
}

// nftables' error text names the kernel's errno by its strerror words; the lock gives the errno back with a reason.
Status Refused(const std::string& what, const std::string& error) {
  const auto has = [&](int e) { return error.find(std::strerror(e)) != std::string::npos; };
  if (has(EPERM)) return Status::Error(EPERM, what + ": needs CAP_NET_ADMIN in this network namespace (" + error + ")");
  if (has(EEXIST)) return Status::Error(EEXIST, what + ": a table of that name is there already (" + error + ")");
  if (has(ENOENT)) return Status::Error(ENOENT, what + ": no such table in this network namespace (" + error + ")");
  if (has(EOPNOTSUPP) || has(EPROTONOSUPPORT) || has(EAFNOSUPPORT)) {
    return Status::Error(EPROTONOSUPPORT, what + ": nftables is unavailable in this kernel (" + error + ")");
  }
  return Status::Error(EIO, what + ": " + error);
}

// nf_tables speaks over NETLINK_NETFILTER: a kernel without it cannot hold a lock. Both it and CAP_NET_ADMIN are
// checked before libnftables is called, so that the error says so plainly (libnftables reports a refused cache fetch
// on stderr itself). *lowest_free_fd: the probe's fd number, the lowest free one.
Status Available(int* lowest_free_fd) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  const std::uint32_t net_admin = 1u << (CAP_NET_ADMIN % 32);
  if (::syscall(SYS_capget, &header, data) == 0 && (data[CAP_NET_ADMIN / 32].effective & net_admin) == 0) {
    return Status::Error(EPERM, "network lock: nftables needs CAP_NET_ADMIN, which this process lacks");
  }
  const int probe = testing::Faulted(testing::FaultPoint::kNetworkLockNetlink)
                        ? -1
                        : ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (probe < 0) {
    const int error = errno;
    return Status::Error(EPROTONOSUPPORT, std::string("network lock: nftables is unavailable (no netfilter netlink: ") +
                                              std::strerror(error) + ")");
  }
  *lowest_free_fd = probe;
  ::close(probe);
  return {};
}

// An address as nftables writes it, and whether it is IPv4 on the wire (an IPv4-mapped IPv6 address is).
struct Address {
  std::string text;
  bool ipv4 = false;
  bool any = false;  // the unspecified address (a listener on every address)
  unsigned port = 0;
};

Address Text(const sockaddr_storage& a) {
  Address out;
  char text[INET6_ADDRSTRLEN] = "";
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    out.ipv4 = true;
    out.any = in.sin_addr.s_addr == htonl(INADDR_ANY);
    out.port = ntohs(in.sin_port);
  } else {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    out.port = ntohs(in6.sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      ::inet_ntop(AF_INET, &in6.sin6_addr.s6_addr[12], text, sizeof text);
      out.ipv4 = true;
    } else {
      ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
      out.any = IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr);
    }
  }
  out.text = text;
  return out;
}

// The SYNs of new connections (SYN without ACK) to `l`.
std::string ListenerRule(const std::string& table, const TcpListener& l) {
  const Address a = Text(l.local);
  std::string match;
  if (!a.any) {
    match = (a.ipv4 ? "ip daddr " : "ip6 daddr ") + a.text + " ";
  } else if (a.ipv4) {
    match = "meta nfproto ipv4 ";
  } else if (l.v6_only) {
    match = "meta nfproto ipv6 ";
  }  // else :: without IPV6_V6ONLY: both families
  return "add rule inet " + table + " guard " + match + "tcp dport " + std::to_string(a.port) +
         " tcp flags & (syn | ack) == syn drop\n";
}

}  // namespace

std::string NewNetworkLockName() {
  std::uint64_t nonce = 0;
  if (::getrandom(&nonce, sizeof nonce, 0) != static_cast<ssize_t>(sizeof nonce)) {
    // No entropy source: a nonce from the pid and the clock still keeps two locks of this machine apart.
    nonce = (static_cast<std::uint64_t>(::getpid()) << 40) ^ static_cast<std::uint64_t>(::time(nullptr));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(nonce));
  return std::string(kPrefix) + hex;
}

Status LockNetwork(const std::string& table, std::span<const TcpConnection> connections,
                   std::span<const TcpListener> listeners) {
  if (!image::IsNetworkLockName(table)) return Status::Error(EINVAL, "network lock: '" + table + "' is not a lock's name");
  int lowest_free_fd = 0;
  if (Status s = Available(&lowest_free_fd); !s.ok()) return s;
  // `add table` would accept an existing table silently; `create` refuses it, so a lock never takes over another's.
  std::string commands = "create table inet " + table + "\n" +
                         "add chain inet " + table + " guard { type filter hook prerouting priority -300 ; policy accept ; }\n" +
                         "add set inet " + table + " v4 { type ipv4_addr . inet_service . ipv4_addr . inet_service ; }\n" +
                         "add set inet " + table + " v6 { type ipv6_addr . inet_service . ipv6_addr . inet_service ; }\n" +
                         "add rule inet " + table + " guard ip saddr . tcp sport . ip daddr . tcp dport @v4 drop\n" +
                         "add rule inet " + table + " guard ip6 saddr . tcp sport . ip6 daddr . tcp dport @v6 drop\n";
  std::string v4, v6;
  for (const TcpConnection& c : connections) {
    const Address local = Text(c.local), remote = Text(c.remote);
    std::string& set = local.ipv4 ? v4 : v6;
    set += (set.empty() ? "" : ", ") + remote.text + " . " + std::to_string(remote.port) + " . " + local.text + " . " +
           std::to_string(local.port);
  }
  if (!v4.empty()) commands += "add element inet " + table + " v4 { " + v4 + " }\n";
  if (!v6.empty()) commands += "add element inet " + table + " v6 { " + v6 + " }\n";
  for (const TcpListener& l : listeners) commands += ListenerRule(table, l);
  if (std::string error = Run(commands, lowest_free_fd).error; !error.empty()) {
    return Refused("network lock: installing table inet " + table, error);
  }
  return {};
}

Status UnlockNetwork(const std::string& table) {
  if (!image::IsNetworkLockName(table)) return Status::Error(EINVAL, "network lock: '" + table + "' is not a lock's name");
  int lowest_free_fd = 0;
  if (Status s = Available(&lowest_free_fd); !s.ok()) return s;
  if (std::string error = Run("delete table inet " + table + "\n", lowest_free_fd).error; !error.empty()) {
    return Refused("network lock: removing table inet " + table, error);
  }
  return {};
}

Result<std::vector<std::string>> NetworkLocks() {
  int lowest_free_fd = 0;
  if (Status s = Available(&lowest_free_fd); !s.ok()) return s;
  const Answer answer = Run("list tables inet\n", lowest_free_fd);
  if (!answer.error.empty()) return Refused("network lock: listing", answer.error);
  std::vector<std::string> names;
  const std::string& output = answer.output;
  const std::string marker = "table inet " + std::string(kPrefix);
  for (std::size_t at = output.find(marker); at != std::string::npos; at = output.find(marker, at + 1)) {
    const std::size_t start = at + marker.size() - kPrefix.size();
    names.push_back(output.substr(start, output.find_first_of(" \n", start) - start));
  }
  return names;
}

}  // namespace epollcr::restore
