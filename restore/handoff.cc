#include "restore/handoff.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "epollcr/host_file.h"
#include "restore/image_codec.h"
#include "restore/image_file.h"
#include "restore/resolvers.h"

namespace epollcr::restore {

namespace {

constexpr char kMagic[8] = {'E', 'P', 'C', 'R', 'H', 'O', 'F', 'F'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 24;
constexpr int kBatch = 253;  // SCM_MAX_FD: the most fds one control message carries
constexpr std::size_t kBatchBytes = 4 + 4 * kBatch;

Status SysError(const std::string& what) { return Status::Error(errno, what + ": " + std::strerror(errno)); }

void PutU32(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void PutU64(unsigned char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
std::uint32_t GetU32(const unsigned char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{p[i]} << (8 * i);
  return v;
}
std::uint64_t GetU64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}

Status SendAll(int socket, const void* data, std::size_t size, const char* what) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = send(socket, p, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(std::string("hand-off: send ") + what);
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return {};
}

Status ReceiveAll(int socket, void* data, std::size_t size, const char* what) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = recv(socket, p, size, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(std::string("hand-off: receive ") + what);
    }
    if (n == 0) return Status::Error(EPIPE, std::string("hand-off: receive ") + what + ": the sender closed the socket");
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return {};
}

void SetCloseOnExec(const std::vector<int>& fds) {
  for (int fd : fds) {
    const int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
}

}  // namespace

std::vector<int> HostFds(const World& world) {
  std::set<int> fds;
  auto note = [&](const std::shared_ptr<File>& f) {
    if (auto* h = dynamic_cast<const HostFile*>(f.get()); h != nullptr && h->fd() >= 0) fds.insert(h->fd());
  };
  for (const auto& [fd, file] : world.fds.Snapshot()) note(file);
  for (const auto& [name, file] : world.roots) note(file);
  return {fds.begin(), fds.end()};
}

StatusOr<std::vector<int>> PrepareExec(const World& world, const std::string& image_path) {
  if (Status s = image::WriteImage(world, image_path)) return {s, {}};
  std::vector<int> fds = HostFds(world);
  for (int fd : fds) {
    const int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) != 0) {
      Status s = SysError("hand-off: keep fd " + std::to_string(fd) + " open across exec");
      SetCloseOnExec(fds);
      return {s, {}};
    }
  }
  return {{}, std::move(fds)};
}

Status RestoreAfterExec(const std::string& image_path, World* out, Options options, Report* report) {
  InheritedFdResolver inherited;
  options.resolvers.insert(options.resolvers.begin(), &inherited);
  if (Status s = RestoreFile(image_path, out, options, report)) return s;
  SetCloseOnExec(HostFds(*out));
  return {};
}

Status SendWorld(int socket, const World& world) {
  StatusOr<std::string> bytes = image::SaveImage(world);
  if (!bytes.ok()) return bytes.status;
  const std::vector<int> fds = HostFds(world);
  unsigned char header[kHeaderBytes];
  std::memcpy(header, kMagic, sizeof kMagic);
  PutU32(header + 8, kVersion);
  PutU32(header + 12, static_cast<std::uint32_t>(fds.size()));
  PutU64(header + 16, bytes.value.size());
  if (Status s = SendAll(socket, header, sizeof header, "header")) return s;
  if (Status s = SendAll(socket, bytes.value.data(), bytes.value.size(), "image")) return s;
  for (std::size_t at = 0; at < fds.size(); at += kBatch) {
    const int n = static_cast<int>(std::min<std::size_t>(kBatch, fds.size() - at));
    unsigned char data[kBatchBytes] = {};
    PutU32(data, static_cast<std::uint32_t>(n));
    for (int i = 0; i < n; ++i) PutU32(data + 4 + 4 * i, static_cast<std::uint32_t>(fds[at + static_cast<std::size_t>(i)]));
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kBatch)] = {};
    iovec iov{data, sizeof data};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<std::size_t>(n));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<std::size_t>(n));
    std::memcpy(CMSG_DATA(c), fds.data() + at, sizeof(int) * static_cast<std::size_t>(n));
    ssize_t sent;
    do {
      sent = sendmsg(socket, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return SysError("hand-off: send fds");
    // The fds went with the first byte; the rest of the batch, if the socket took only part, follows as plain data.
    if (Status s = SendAll(socket, data + sent, sizeof data - static_cast<std::size_t>(sent), "fd numbers")) return s;
  }
  return {};
}

Status ReceiveWorld(int socket, World* out, Options options, Report* report) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "hand-off: the world is not empty");
  unsigned char header[kHeaderBytes];
  if (Status s = ReceiveAll(socket, header, sizeof header, "header")) return s;
  if (std::memcmp(header, kMagic, sizeof kMagic) != 0) {
    return Status::Error(EBADMSG, "hand-off: the peer did not send an epollcr hand-off");
  }
  if (GetU32(header + 8) != kVersion) {
    return Status::Error(ENOTSUP, "hand-off: version " + std::to_string(GetU32(header + 8)) + " (this build reads " +
                                      std::to_string(kVersion) + ")");
  }
  const std::uint32_t count = GetU32(header + 12);
  const std::uint64_t length = GetU64(header + 16);
  if (length > options.read_limits.max_payload + image::kHeaderSize) {
    return Status::Error(EFBIG, "hand-off: an image of " + std::to_string(length) + " bytes is beyond the limit");
  }
  if (count > 1u << 20) return Status::Error(EFBIG, "hand-off: " + std::to_string(count) + " fds is beyond the limit");
  std::string bytes(length, '\0');
  if (Status s = ReceiveAll(socket, bytes.data(), bytes.size(), "image")) return s;

  std::map<int, int> received;  // old fd -> new fd
  std::vector<int> opened;
  auto close_all = [&] {
    for (int fd : opened) close(fd);
  };
  for (std::uint32_t at = 0; at < count; at += kBatch) {
    const int expect = static_cast<int>(std::min<std::uint32_t>(kBatch, count - at));
    unsigned char data[kBatchBytes];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kBatch)];
    iovec iov{data, sizeof data};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      Status s = n < 0 ? SysError("hand-off: receive fds")
                       : Status::Error(EPIPE, "hand-off: receive fds: the sender closed the socket");
      close_all();
      return s;
    }
    int got = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const int k = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * static_cast<std::size_t>(i), sizeof fd);
        opened.push_back(fd);
        ++got;
      }
    }
    Status s;
    if (msg.msg_flags & MSG_CTRUNC) {
      s = Status::Error(EMFILE, "hand-off: receive fds: the control message was truncated (out of fds?)");
    } else if (got != expect) {
      s = Status::Error(EBADMSG, "hand-off: receive fds: " + std::to_string(got) + " fds where " +
                                     std::to_string(expect) + " were announced");
    } else if (s = ReceiveAll(socket, data + n, sizeof data - static_cast<std::size_t>(n), "fd numbers"); s.ok()) {
      if (GetU32(data) != static_cast<std::uint32_t>(expect)) {
        s = Status::Error(EBADMSG, "hand-off: a batch of fds does not say how many it holds");
      }
    }
    if (s) {
      close_all();
      return s;
    }
    for (int i = 0; i < expect; ++i) {
      const int old_fd = static_cast<int>(GetU32(data + 4 + 4 * i));
      if (!received.emplace(old_fd, opened[opened.size() - static_cast<std::size_t>(expect - i)]).second) {
        close_all();
        return Status::Error(EBADMSG, "hand-off: fd " + std::to_string(old_fd) + " was sent twice");
      }
    }
  }
  InheritedFdResolver resolver(received);
  options.resolvers.insert(options.resolvers.begin(), &resolver);
  if (Status s = RestoreBytes(bytes, out, options, report)) {
    close_all();
    return s;
  }
  // Received fds the restore did not take (a pruned reference's, say) are closed: nothing owns them.
  const std::vector<int> kept = HostFds(*out);
  for (int fd : opened) {
    if (!std::binary_search(kept.begin(), kept.end(), fd)) close(fd);
  }
  return {};
}

}  // namespace epollcr::restore
