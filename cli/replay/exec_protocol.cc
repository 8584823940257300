#include "replay/exec_protocol.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <vector>

#include "epollcr/unique_fd.h"

namespace epollcr::replay::exec {
namespace {

constexpr std::string_view kStateMagic = "epollcr-replay-state 1";

// The next line of `text` from `*pos` (without its newline); false if there is no whole line left.
bool NextLine(std::string_view text, std::size_t* pos, std::string_view* line) {
  const std::size_t end = text.find('\n', *pos);
  if (end == std::string_view::npos) return false;
  *line = text.substr(*pos, end - *pos);
  *pos = end + 1;
  return true;
}

template <typename T>
bool ParseNumber(std::string_view word, T* value) {
  const char* end = word.data() + word.size();
  auto [ptr, ec] = std::from_chars(word.data(), end, *value);
  return ec == std::errc() && ptr == end && !word.empty();
}

// "KEY VALUE" with a number VALUE.
template <typename T>
bool KeyNumber(std::string_view line, std::string_view key, T* value) {
  if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ' ') return false;
  return ParseNumber(line.substr(key.size() + 1), value);
}

// "KEY N fd..." into `fds`; every fd >= `min`.
bool KeyFds(std::string_view line, std::string_view key, int min, std::vector<int>* fds) {
  if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ' ') return false;
  line.remove_prefix(key.size() + 1);
  const std::size_t space = line.find(' ');
  std::size_t count = 0;
  if (!ParseNumber(line.substr(0, space), &count) || count > (1u << 24)) return false;
  line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t next = line.find(' ');
    int fd = 0;
    if (!ParseNumber(line.substr(0, next), &fd) || fd < min) return false;
    fds->push_back(fd);
    line = next == std::string_view::npos ? std::string_view() : line.substr(next + 1);
  }
  return line.empty();  // nothing beyond the count
}

// Sends all of `bytes` (MSG_NOSIGNAL: a vanished peer is an error, not a signal).
bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void PutFds(std::ostream& out, std::string_view key, const std::vector<int>& fds) {
  out << '\n' << key << ' ' << fds.size();
  for (int fd : fds) out << ' ' << fd;
}

}  // namespace

std::string EncodeState(const WorkerState& state) {
  std::ostringstream out;
  out << kStateMagic << "\nevery " << state.checkpoint_every << "\nat " << state.at << "\nverb "
      << (state.verb ? 1 : 0) << "\nfiles " << (state.host_files ? "host" : "memory");
  PutFds(out, "fds", state.fds);
  PutFds(out, "inherited", state.inherited);
  PutFds(out, "released", state.released);
  out << "\nname\n" << state.trace_name;
  return out.str();
}

bool DecodeState(std::string_view text, WorkerState* state, std::string* reason) {
  std::size_t pos = 0;
  std::string_view line;
  auto bad = [&](const char* what) {
    *reason = std::string("bad state file: ") + what;
    return false;
  };
  if (!NextLine(text, &pos, &line) || line != kStateMagic) return bad("no 'epollcr-replay-state 1' line");
  WorkerState decoded;
  int verb = 0;
  if (!NextLine(text, &pos, &line) || !KeyNumber(line, "every", &decoded.checkpoint_every) ||
      decoded.checkpoint_every < 0) {
    return bad("every");
  }
  if (!NextLine(text, &pos, &line) || !KeyNumber(line, "at", &decoded.at) || decoded.at < -1) return bad("at");
  if (!NextLine(text, &pos, &line) || !KeyNumber(line, "verb", &verb) || verb < 0 || verb > 1) return bad("verb");
  decoded.verb = verb == 1;
  if (!NextLine(text, &pos, &line) || (line != "files memory" && line != "files host")) return bad("files");
  decoded.host_files = line == "files host";
  if (!NextLine(text, &pos, &line) || !KeyFds(line, "fds", -1, &decoded.fds)) return bad("fds");
  if (!NextLine(text, &pos, &line) || !KeyFds(line, "inherited", 0, &decoded.inherited)) return bad("inherited");
  if (!NextLine(text, &pos, &line) || !KeyFds(line, "released", 0, &decoded.released)) return bad("released");
  if (!NextLine(text, &pos, &line) || line != "name") return bad("name");
  decoded.trace_name = std::string(text.substr(pos));
  *state = std::move(decoded);
  return true;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

std::string ExecId() {
  const auto* bytes = reinterpret_cast<const unsigned char*>(::getauxval(AT_RANDOM));
  if (bytes == nullptr) return "unknown";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 16; ++i) {
    id += kHex[bytes[i] >> 4];
    id += kHex[bytes[i] & 0xf];
  }
  return id;
}

SpawnedWorker SpawnWorker(const std::string& program, const std::string& dir, WorkerRole role, int fd,
                          const std::vector<int>& inherit) {
  // posix_spawn (a vfork, in glibc): the child borrows this process's memory until its exec instead of copying its
  // page tables, which for a large world cost more than the exec. A dup2 of an fd onto itself clears its FD_CLOEXEC
  // in the child only (POSIX.1-2024; glibc since 2.29), so exactly these fds cross the exec.
  const std::string fd_arg = std::to_string(fd);
  std::vector<char*> argv = {const_cast<char*>("epollcr"), const_cast<char*>(kWorkerCommand.data()),
                             const_cast<char*>(dir.c_str()),
                             const_cast<char*>(role == WorkerRole::kFirst ? "socket" : "handoff"),
                             const_cast<char*>(fd_arg.c_str()), nullptr};
  SpawnedWorker spawned;
  posix_spawn_file_actions_t actions;
  int error = ::posix_spawn_file_actions_init(&actions);
  if (error != 0) {
    spawned.failure = std::string("posix_spawn: ") + std::strerror(error);
    return spawned;
  }
  error = ::posix_spawn_file_actions_adddup2(&actions, fd, fd);
  for (std::size_t i = 0; error == 0 && i < inherit.size(); ++i) {
    error = ::posix_spawn_file_actions_adddup2(&actions, inherit[i], inherit[i]);
  }
  if (error == 0) error = ::posix_spawn(&spawned.pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    // ENOMEM and EAGAIN come from the clone; anything else from the child, whose exec failed (glibc has waited for
    // it already).
    spawned.pid = -1;
    spawned.failure = (error == ENOMEM || error == EAGAIN ? std::string("fork") : "exec " + program) + ": " +
                      std::strerror(error);
  }
  return spawned;
}

namespace {

bool ReceiveAll(int fd, char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// The turn's byte, with room for one fd (SCM_RIGHTS).
struct TurnMessage {
  char byte = 0;
  iovec data{.iov_base = &byte, .iov_len = 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr header{};

  TurnMessage() {
    header.msg_iov = &data;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof(control);
  }
  TurnMessage(const TurnMessage&) = delete;  // it points into itself
  TurnMessage& operator=(const TurnMessage&) = delete;
};

// The sizes of the state and the image, after the turn's byte: two 64-bit numbers in this machine's byte order (both
// ends are the same program on the same machine).
struct TurnSizes {
  std::uint64_t state = 0;
  std::uint64_t image = 0;
};

}  // namespace

bool SendTurn(int handoff, int socket_fd, std::string_view state, std::string_view image) {
  TurnMessage message;
  message.byte = 'g';
  cmsghdr* rights = CMSG_FIRSTHDR(&message.header);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(rights), &socket_fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(handoff, &message.header, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  const TurnSizes sizes{.state = state.size(), .image = image.size()};
  return n == 1 && SendAll(handoff, std::string_view(reinterpret_cast<const char*>(&sizes), sizeof sizes)) &&
         SendAll(handoff, state) && SendAll(handoff, image);
}

int AwaitTurn(int handoff, std::string* state, std::string* image) {
  TurnMessage message;
  ssize_t n;
  do {
    n = ::recvmsg(handoff, &message.header, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  int fd = -1;
  const cmsghdr* rights = n == 1 ? CMSG_FIRSTHDR(&message.header) : nullptr;
  if (rights != nullptr && rights->cmsg_level == SOL_SOCKET && rights->cmsg_type == SCM_RIGHTS &&
      rights->cmsg_len == CMSG_LEN(sizeof(int))) {
    std::memcpy(&fd, CMSG_DATA(rights), sizeof(int));
  }
  TurnSizes sizes;
  bool whole = fd >= 0 && message.byte == 'g' && ReceiveAll(handoff, reinterpret_cast<char*>(&sizes), sizeof sizes);
  // Bounded as an image file is (image::ReadLimits' 1 GiB payload): a size beyond is not a turn.
  constexpr std::uint64_t kLargest = (std::uint64_t{1} << 30) + 4096;
  if (whole && (sizes.state > kLargest || sizes.image > kLargest)) whole = false;
  if (whole) {
    state->resize(sizes.state);
    image->resize(sizes.image);
  }
  if (!whole || !ReceiveAll(handoff, state->data(), state->size()) ||
      !ReceiveAll(handoff, image->data(), image->size())) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

bool ReadFile(const std::string& path, std::string* text, std::string* reason) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    *reason = path + ": " + std::strerror(errno);
    return false;
  }
  text->clear();
  char buffer[65536];
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *reason = path + ": " + std::strerror(errno);
      return false;
    }
    if (n == 0) return true;
    text->append(buffer, static_cast<std::size_t>(n));
  }
}

bool WriteFileAtomically(const std::string& path, std::string_view text, std::string* reason) {
  const std::string temporary = path + ".tmp";
  UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  bool ok = fd.valid();
  for (std::size_t done = 0; ok && done < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  if (ok) {
    fd.Reset();
    ok = ::rename(temporary.c_str(), path.c_str()) == 0;
  }
  if (!ok) {
    *reason = path + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
  }
  return ok;
}

bool Channel::Send(std::string_view bytes) const { return SendAll(fd_, bytes); }

bool Channel::ReadByte(char* byte) const {
  while (true) {
    const ssize_t n = ::read(fd_, byte, 1);
    if (n < 0 && errno == EINTR) continue;
    return n == 1;
  }
}

bool Channel::ReadRecord(std::string* record) {
  while (true) {
    const std::size_t end = buffer_.find('\n');
    if (end != std::string::npos) {
      record->assign(buffer_, 0, end);
      buffer_.erase(0, end + 1);
      return true;
    }
    char chunk[4096];
    const ssize_t n = ::read(fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace epollcr::replay::exec
