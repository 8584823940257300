#include "commands/ps_interposed.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>
#include <sstream>
#include <vector>

#include "epollcr/unique_fd.h"
#include "image/codec.h"
#include "image/file.h"
#include "preload/inspect_server.h"

namespace epollcr::cli::ps {
namespace {

// The largest answer read: the image reader's own limit on a file (image/file.h), and a line before it.
constexpr std::size_t kMaxAnswer = image::ReadLimits{}.max_payload + image::kHeaderSize + 4096;

std::optional<std::uint64_t> SocketInode(const std::string& link) {
  constexpr std::string_view prefix = "socket:[";
  if (link.size() <= prefix.size() + 1 || link.compare(0, prefix.size(), prefix) != 0 || link.back() != ']') {
    return std::nullopt;
  }
  std::uint64_t inode = 0;
  const char* begin = link.data() + prefix.size();
  const char* end = link.data() + link.size() - 1;
  auto [ptr, ec] = std::from_chars(begin, end, inode);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return inode;
}

// The server's answer: its first datagram (a line), then, for "image N", datagrams until N bytes came.
Result<std::string> ReadAnswer(int fd, const std::string& what) {
  std::string answer;
  std::vector<char> buffer(1 << 17);
  std::size_t expected = 0;
  do {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return CommandError(what, std::string("waiting for the process's answer: ") +
                                    (errno == EAGAIN ? "no answer within 10 s" : std::strerror(errno)));
    }
    answer.append(buffer.data(), static_cast<std::size_t>(n));
    if (expected == 0) {  // the first datagram: the line
      const std::string image_line = std::string(preload::kInspectMagic) + " image ";
      if (answer.compare(0, image_line.size(), image_line) != 0) return answer;  // refused, error, or garbage
      std::size_t size = 0;
      const char* end = answer.data() + answer.size() - 1;  // before the newline
      if (std::from_chars(answer.data() + image_line.size(), end, size).ptr != end || size > kMaxAnswer) {
        return answer;  // malformed: ParseInspectAnswer says so
      }
      expected = answer.size() + size;
    }
  } while (answer.size() < expected);
  return answer;
}

}  // namespace

std::optional<std::string> FindInspectSocket(const Snapshot& snapshot, std::string_view net_unix) {
  std::set<std::uint64_t> inodes;
  for (const OpenFd& fd : snapshot.fds) {
    if (auto inode = SocketInode(fd.link)) inodes.insert(*inode);
  }
  const std::string wanted = std::string("@") + preload::kInspectSocketPrefix;
  std::istringstream lines{std::string(net_unix)};
  std::string line;
  std::getline(lines, line);  // the header
  while (std::getline(lines, line)) {
    // "Num RefCount Protocol Flags Type St Inode Path": the path, when there is one, is the eighth field.
    std::istringstream fields(line);
    std::string field, path;
    std::uint64_t inode = 0;
    int k = 0;
    bool inode_ok = false;
    while (fields >> field) {
      if (k == 6) inode_ok = std::from_chars(field.data(), field.data() + field.size(), inode).ec == std::errc();
      if (k == 7) path = field;
      ++k;
    }
    if (inode_ok && inodes.count(inode) != 0 && path.compare(0, wanted.size(), wanted) == 0) return path;
  }
  return std::nullopt;
}

Result<v1::Image> ParseInspectAnswer(std::string_view answer, const std::string& socket) {
  const std::string what = "ps: " + socket;
  const std::size_t newline = answer.find('\n');
  const std::string magic = preload::kInspectMagic;
  if (newline == std::string_view::npos || answer.compare(0, magic.size() + 1, magic + " ") != 0) {
    return CommandError(what, "the answer is not epollcr's inspection protocol");
  }
  const std::string_view rest = answer.substr(magic.size() + 1, newline - magic.size() - 1);
  if (rest.rfind("refused ", 0) == 0) {
    return CommandError(what, "the process refused: " + std::string(rest.substr(8)), EACCES);
  }
  if (rest.rfind("error ", 0) == 0) {
    return CommandError(what, "the process could not take a snapshot: " + std::string(rest.substr(6)));
  }
  std::size_t size = 0;
  if (rest.rfind("image ", 0) != 0 ||
      std::from_chars(rest.data() + 6, rest.data() + rest.size(), size).ptr != rest.data() + rest.size()) {
    return CommandError(what, "the answer's first line is malformed");
  }
  const std::string_view framed = answer.substr(newline + 1);
  if (framed.size() != size) {
    return CommandError(what, "the answer is cut short: " + std::to_string(framed.size()) + " of " +
                                  std::to_string(size) + " bytes");
  }
  Result<std::string_view> payload = image::Unframe(framed);
  if (!payload.ok()) return CommandError(what, "the image: " + payload.status().message);
  Result<v1::Image> image = image::Decode(payload.value());
  if (!image.ok()) return CommandError(what, "the image: " + image.status().message);
  if (Status valid = image::Validate(image.value()); !valid.ok()) {
    return CommandError(what, "the image is invalid: " + valid.message);
  }
  return image;
}

Result<std::optional<Interposed>> ReadInterposed(const Snapshot& snapshot) {
  const std::string what = "ps: " + std::to_string(snapshot.pid);
  std::string net_unix;
  const std::string net_unix_path = "/proc/" + std::to_string(snapshot.pid) + "/net/unix";
  if (const int error = ReadSmallFile(AT_FDCWD, net_unix_path, &net_unix)) {
    if (error == ENOENT) return std::optional<Interposed>();  // no unix sockets to look at (a kernel without them)
    return CommandError(what, net_unix_path + ": " + std::strerror(error));
  }
  std::optional<std::string> socket = FindInspectSocket(snapshot, net_unix);
  if (!socket) return std::optional<Interposed>();

  // A datagram to the process's socket from an address of our own (autobind), answered in datagrams
  // (preload/inspect_server.h).
  UniqueFd conn(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!conn.valid()) return CommandError(what, std::string("socket: ") + std::strerror(errno));
  timeval limit{10, 0};
  (void)::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  const sa_family_t family = AF_UNIX;
  if (::bind(conn.get(), reinterpret_cast<const sockaddr*>(&family), sizeof family) != 0) {
    return CommandError(what, std::string("bind: ") + std::strerror(errno));
  }
  sockaddr_un address;
  // "@" stands for the abstract namespace's leading 0 byte.
  const socklen_t size = preload::AbstractAddress(std::string_view(*socket).substr(1), &address);
  if (size == 0) return CommandError(what, "the socket's name is too long");
  const std::string request = std::string(preload::kInspectMagic) + "\n";
  if (::connect(conn.get(), reinterpret_cast<const sockaddr*>(&address), size) != 0 ||
      ::send(conn.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    return CommandError(what, "the process runs under epollcr run, but its socket " + *socket +
                                  " cannot be reached from here (" + std::strerror(errno) +
                                  "; a process in another network namespace is read from inside it)");
  }
  Result<std::string> answer = ReadAnswer(conn.get(), what);
  if (!answer.ok()) return answer.status();
  Result<v1::Image> image = ParseInspectAnswer(answer.value(), *socket);
  if (!image.ok()) return image.status();
  return std::optional<Interposed>(Interposed{*socket, std::move(image.value())});
}

std::optional<int> PollOfKernelFd(const Interposed& interposed, int fd) {
  for (const v1::File& file : interposed.image.files()) {
    if (!file.has_eventpoll() || !file.eventpoll().has_kernel() || file.eventpoll().kernel().fd() != fd) continue;
    for (const v1::FdEntry& entry : interposed.image.fds()) {
      if (entry.file() == file.id()) return entry.fd();
    }
  }
  return std::nullopt;
}

}  // namespace epollcr::cli::ps
