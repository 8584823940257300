#include "restore/handoff_wire.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fault_injection.h"

namespace epollcr::restore::wire {

namespace {

constexpr int kBatch = 253;  // SCM_MAX_FD: the most fds one control message carries
constexpr std::size_t kBatchBytes = 4 + 4 * kBatch;

using testing::FaultAt;
using testing::FaultPoint;

std::error_code LastError() { return {errno, std::generic_category()}; }

std::error_code Injected(FaultPoint point) {
  const int e = FaultAt(point).error;
  return e != 0 ? std::error_code(e, std::generic_category()) : std::error_code();
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

Status Failed(std::error_code e, const std::string& what) { return {e, what + ": " + e.message()}; }

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

std::error_code Close(int fd) {
  const std::error_code injected = Injected(FaultPoint::kHandoffClose);
  const std::error_code e = ::close(fd) == 0 ? std::error_code() : LastError();
  return injected ? injected : e;
}

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

Status SendFds(int socket, const std::vector<int>& fds, const std::vector<int>& numbers) {
  for (std::size_t at = 0; at < fds.size(); at += kBatch) {
    const int n = static_cast<int>(std::min<std::size_t>(kBatch, fds.size() - at));
    unsigned char data[kBatchBytes] = {};
    PutU32(data, static_cast<std::uint32_t>(n));
    for (int i = 0; i < n; ++i) {
      PutU32(data + 4 + 4 * i, static_cast<std::uint32_t>(numbers[at + static_cast<std::size_t>(i)]));
    }
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

Status ReceiveFds(int socket, std::uint32_t count, std::map<int, int>* received, std::vector<int>* opened) {
  for (std::uint32_t at = 0; at < count; at += kBatch) {
    const int expect = static_cast<int>(std::min<std::uint32_t>(kBatch, count - at));
    unsigned char data[kBatchBytes];
    if (Status s = ReceiveBatch(socket, expect, data, opened); !s.ok()) return s;
    for (int i = 0; i < expect; ++i) {
      const int number = static_cast<int>(GetU32(data + 4 + 4 * i));
      if (!received->emplace(number, (*opened)[opened->size() - static_cast<std::size_t>(expect - i)]).second) {
        return Status::Error(EBADMSG, "hand-off: fd " + std::to_string(number) + " was sent twice");
      }
    }
  }
  return {};
}

}  // namespace epollcr::restore::wire
