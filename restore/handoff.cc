#include "restore/handoff.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "big_buffer.h"
#include "epollcr/host_file.h"
#include "fault_injection.h"
#include "image/codec.h"
#include "image/file.h"
#include "restore/resolvers.h"

namespace epollcr::restore {

namespace {

constexpr char kMagic[8] = {'E', 'P', 'C', 'R', 'H', 'O', 'F', 'F'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 24;
constexpr int kBatch = 253;  // SCM_MAX_FD: the most fds one control message carries
constexpr std::size_t kBatchBytes = 4 + 4 * kBatch;

using Clock = std::chrono::steady_clock;

std::error_code LastError() { return {errno, std::generic_category()}; }

// The system calls of the hand-off, one call each, each at its fault-injection point (fault_injection.h): a failure
// is the errno in a std::error_code (EINTR included: the hand-off retries every call but close, which Linux completes
// even when it reports EINTR).
using testing::FaultAt;
using testing::FaultPoint;

std::error_code Injected(FaultPoint point) {
  const int e = FaultAt(point).error;
  return e != 0 ? std::error_code(e, std::generic_category()) : std::error_code();
}

// fcntl(fd, F_GETFD) into *flags; fcntl(fd, F_SETFD, flags).
std::error_code GetFdFlags(int fd, int* flags) {
  if (std::error_code e = Injected(FaultPoint::kHandoffGetFdFlags)) return e;
  const int f = ::fcntl(fd, F_GETFD);
  if (f < 0) return LastError();
  *flags = f;
  return {};
}
std::error_code SetFdFlags(int fd, int flags) {
  if (std::error_code e = Injected(FaultPoint::kHandoffSetFdFlags)) return e;
  return ::fcntl(fd, F_SETFD, flags) == 0 ? std::error_code() : LastError();
}

// send(2) with MSG_NOSIGNAL / recv(2): one call, which may transfer fewer bytes than asked; *done is the count (0
// from Receive: the peer closed the socket).
std::error_code Send(int socket, const char* data, std::size_t size, std::size_t* done) {
  const testing::Fault fault = FaultAt(FaultPoint::kHandoffSend);
  if (fault.error != 0) return {fault.error, std::generic_category()};
  const ssize_t n = ::send(socket, data, std::min(size, fault.max_bytes), MSG_NOSIGNAL);
  if (n < 0) return LastError();
  *done = static_cast<std::size_t>(n);
  return {};
}
std::error_code Receive(int socket, char* data, std::size_t size, std::size_t* done) {
  const testing::Fault fault = FaultAt(FaultPoint::kHandoffReceive);
  if (fault.error != 0) return {fault.error, std::generic_category()};
  const ssize_t n = ::recv(socket, data, std::min(size, fault.max_bytes), 0);
  if (n < 0) return LastError();
  *done = static_cast<std::size_t>(n);
  return {};
}

// sendmsg(2) with MSG_NOSIGNAL / recvmsg(2) with MSG_CMSG_CLOEXEC of a message with one iovec: *done is the count of
// data bytes; the kernel sets msg->msg_controllen and msg->msg_flags as usual. On failure no fd was received.
std::error_code SendMessage(int socket, const msghdr& msg, std::size_t* done) {
  const testing::Fault fault = FaultAt(FaultPoint::kHandoffSendMessage);
  if (fault.error != 0) return {fault.error, std::generic_category()};
  iovec iov = msg.msg_iov[0];
  iov.iov_len = std::min(iov.iov_len, fault.max_bytes);
  msghdr capped = msg;
  capped.msg_iov = &iov;
  const ssize_t n = ::sendmsg(socket, &capped, MSG_NOSIGNAL);
  if (n < 0) return LastError();
  *done = static_cast<std::size_t>(n);
  return {};
}
std::error_code ReceiveMessage(int socket, msghdr* msg, std::size_t* done) {
  const testing::Fault fault = FaultAt(FaultPoint::kHandoffReceiveMessage);
  if (fault.error != 0) return {fault.error, std::generic_category()};
  iovec* iov = msg->msg_iov;
  const std::size_t asked = iov->iov_len;
  iov->iov_len = std::min(asked, fault.max_bytes);
  const ssize_t n = ::recvmsg(socket, msg, MSG_CMSG_CLOEXEC);
  iov->iov_len = asked;
  if (n < 0) return LastError();
  *done = static_cast<std::size_t>(n);
  FaultAt({.point = FaultPoint::kHandoffReceivedMessage, .message = msg});
  return {};
}

// close(2) of a received fd. Linux frees the descriptor even when close fails (an injected failure closes too).
std::error_code Close(int fd) {
  const std::error_code injected = Injected(FaultPoint::kHandoffClose);
  const std::error_code e = ::close(fd) == 0 ? std::error_code() : LastError();
  return injected ? injected : e;
}

// Repeats `call` while it reports EINTR.
template <typename Call>
std::error_code Retried(Call call) {
  std::error_code e;
  do {
    e = call();
  } while (e == std::errc::interrupted);
  return e;
}

Status Failed(std::error_code e, const std::string& what) { return {e, what + ": " + e.message()}; }

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
    std::size_t n = 0;
    if (std::error_code e = Retried([&] { return Send(socket, p, size, &n); })) {
      return Failed(e, std::string("hand-off: send ") + what);
    }
    p += n;
    size -= n;
  }
  return {};
}

Status ReceiveAll(int socket, void* data, std::size_t size, const char* what) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    std::size_t n = 0;
    if (std::error_code e = Retried([&] { return Receive(socket, p, size, &n); })) {
      return Failed(e, std::string("hand-off: receive ") + what);
    }
    if (n == 0) return Status::Error(EPIPE, std::string("hand-off: receive ") + what + ": the sender closed the socket");
    p += n;
    size -= n;
  }
  return {};
}

// FD_CLOEXEC changed on some fds: each fd with the flags it had before.
using FdFlags = std::vector<std::pair<int, int>>;

// Puts the flags of `changed` back after a failure, and says in `s` which of them could not be.
void PutFlagsBack(const FdFlags& changed, Status* s) {
  for (const std::pair<int, int>& change : changed) {
    const int fd = change.first;  // named, not a structured binding: clang 14 cannot capture those in a lambda
    const int flags = change.second;
    if (std::error_code e = Retried([&] { return SetFdFlags(fd, flags); })) {
      s->message += "; putting back FD_CLOEXEC of fd " + std::to_string(fd) + " also failed: " + e.message();
    }
  }
}

// Sets FD_CLOEXEC on every fd of `fds` (`on`) or clears it, noting in *changed the fds it changed. Stops at the first
// failure, naming the fd and the step.
Status SetCloseOnExec(const std::vector<int>& fds, bool on, FdFlags* changed) {
  for (int fd : fds) {
    int flags = 0;
    if (std::error_code e = Retried([&] { return GetFdFlags(fd, &flags); })) {
      return Failed(e, "hand-off: read the flags of fd " + std::to_string(fd) + " (fcntl F_GETFD)");
    }
    const int want = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
    if (want == flags) continue;
    if (std::error_code e = Retried([&] { return SetFdFlags(fd, want); })) {
      return Failed(e, std::string("hand-off: ") + (on ? "set" : "clear") + " FD_CLOEXEC on fd " + std::to_string(fd) +
                           " (fcntl F_SETFD)");
    }
    changed->emplace_back(fd, flags);
  }
  return {};
}

// The inherited-fd resolver, noting the host files it made for the restore: what RestoreAfterExec gives back if a
// step after the restore fails (the restorer's own rule: never close an fd it did not open).
class NotingResolver final : public Resolver {
 public:
  explicit NotingResolver(Resolver& inner) : inner_(inner) {}
  Resolution Resolve(const FileReference& ref) override {
    Resolution r = inner_.Resolve(ref);
    if (r.outcome == Resolution::Outcome::kResolved && r.created) {
      if (auto h = std::dynamic_pointer_cast<HostFile>(r.file)) made_.push_back(std::move(h));
    }
    return r;
  }
  const std::vector<std::shared_ptr<HostFile>>& made() const { return made_; }

 private:
  Resolver& inner_;
  std::vector<std::shared_ptr<HostFile>> made_;
};

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

Result<std::vector<int>> PrepareExec(const World& world, const std::string& image_path) {
  Result<v1::Image> image = image::Capture(world);
  if (!image.ok()) return image.status();
  Result<std::string> payload = image::Encode(image.value());
  if (!payload.ok()) return payload.status();
  // The flags first, the file second: the file is replaced last, so a failure of either leaves both as they were (but
  // for a failed fsync of the directory after the rename, whose error says the new image is in place).
  std::vector<int> fds = HostFds(world);
  FdFlags cleared;
  Status s = SetCloseOnExec(fds, /*on=*/false, &cleared);
  if (s.ok()) {
    if (Status e = image::WriteImageFile(image_path, payload.value()); !e.ok()) {
      s = Status(e.code, "hand-off: write the image: " + e.message);
    }
  }
  if (!s.ok()) {
    PutFlagsBack(cleared, &s);
    return s;
  }
  return fds;
}

Status RestoreAfterExec(const std::string& image_path, World* out, Options options, Report* report) {
  // RestoreFile, with the hand-off's words in its errors.
  Report local;
  Report& rep = report != nullptr ? *report : local;
  const auto t = Clock::now();
  BigBuffer bytes;
  std::string_view payload;
  if (Status e = image::ReadImageFileBytes(image_path, &bytes, &payload, options.read_limits); !e.ok()) {
    return Status(e.code, "hand-off: read the image: " + e.message);
  }
  InheritedFdResolver inherited;
  NotingResolver noting(inherited);
  options.resolvers.insert(options.resolvers.begin(), &noting);
  Status s = image::WithDecoded(payload, [&](const v1::Image& image) {
    rep.read = Clock::now() - t;
    return Restore(image, out, options, &rep);
  });
  if (!s.ok()) return s;

  std::vector<int> fds;
  for (const auto& h : noting.made()) {
    if (h->fd() >= 0) fds.push_back(h->fd());
  }
  FdFlags set;
  s = SetCloseOnExec(fds, /*on=*/true, &set);
  if (!s.ok()) {  // undone as a failed restore is: the inherited fds go back to the program, open, flags as they were
    for (const auto& h : noting.made()) h->ReleaseFd();
    out->roots.clear();
    out->fds.Clear();
    PutFlagsBack(set, &s);
  }
  return s;
}

Status SendWorld(int socket, const World& world) {
  Result<std::string> bytes = image::SaveImage(world);
  if (!bytes.ok()) return bytes.status();
  const std::vector<int> fds = HostFds(world);
  unsigned char header[kHeaderBytes];
  std::memcpy(header, kMagic, sizeof kMagic);
  PutU32(header + 8, kVersion);
  PutU32(header + 12, static_cast<std::uint32_t>(fds.size()));
  PutU64(header + 16, bytes.value().size());
  if (Status s = SendAll(socket, header, sizeof header, "header"); !s.ok()) return s;
  if (Status s = SendAll(socket, bytes.value().data(), bytes.value().size(), "image"); !s.ok()) return s;
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
    std::size_t sent = 0;
    if (std::error_code e = Retried([&] { return SendMessage(socket, msg, &sent); })) {
      return Failed(e, "hand-off: send fds");
    }
    // The fds went with the first byte; the rest of the batch, if the socket took only part, follows as plain data.
    if (Status s = SendAll(socket, data + sent, sizeof data - sent, "fd numbers"); !s.ok()) return s;
  }
  return {};
}

namespace {

// Receives one batch of `expect` fds: all kBatchBytes of it into `data`, and every fd that comes with them (in any
// number of control messages) appended to *opened, which the caller closes if this fails.
Status ReceiveBatch(int socket, int expect, unsigned char* data, std::vector<int>* opened) {
  const std::size_t first = opened->size();
  for (std::size_t have = 0; have < kBatchBytes;) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kBatch)];
    iovec iov{data + have, kBatchBytes - have};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    std::size_t n = 0;
    if (std::error_code e = Retried([&] { return ReceiveMessage(socket, &msg, &n); })) {
      return Failed(e, "hand-off: receive fds");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * i, sizeof fd);
        opened->push_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      return Status::Error(EMFILE, "hand-off: receive fds: the control message was truncated (out of fds?)");
    }
    if (n == 0) return Status::Error(EPIPE, "hand-off: receive fds: the sender closed the socket");
    have += n;
  }
  const std::size_t got = opened->size() - first;
  if (got != static_cast<std::size_t>(expect)) {
    return Status::Error(EBADMSG, "hand-off: receive fds: " + std::to_string(got) + " fds where " +
                                      std::to_string(expect) + " were announced");
  }
  if (GetU32(data) != static_cast<std::uint32_t>(expect)) {
    return Status::Error(EBADMSG, "hand-off: a batch of fds does not say how many it holds");
  }
  return {};
}

}  // namespace

Status ReceiveWorld(int socket, World* out, Options options, Report* report) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "hand-off: the world is not empty");
  unsigned char header[kHeaderBytes];
  if (Status s = ReceiveAll(socket, header, sizeof header, "header"); !s.ok()) return s;
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
  if (Status s = ReceiveAll(socket, bytes.data(), bytes.size(), "image"); !s.ok()) return s;

  std::map<int, int> received;  // old fd -> new fd
  std::vector<int> opened;
  // Linux frees a descriptor even when close fails, so a failing close has nothing left to undo.
  auto close_all = [&] {
    for (int fd : opened) (void)Close(fd);
  };
  for (std::uint32_t at = 0; at < count; at += kBatch) {
    const int expect = static_cast<int>(std::min<std::uint32_t>(kBatch, count - at));
    unsigned char data[kBatchBytes];
    if (Status s = ReceiveBatch(socket, expect, data, &opened); !s.ok()) {
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
  if (Status s = RestoreBytes(bytes, out, options, report); !s.ok()) {
    close_all();
    return s;
  }
  // Received fds the restore did not take (a pruned reference's, say) are closed: nothing owns them.
  const std::vector<int> kept = HostFds(*out);
  for (int fd : opened) {
    if (!std::binary_search(kept.begin(), kept.end(), fd)) (void)Close(fd);
  }
  return {};
}

}  // namespace epollcr::restore
