// The system calls of the hand-off (handoff.h), one virtual per call, so tests can fail any of them: the pattern of
// image::FileOps (image/file.h), which the hand-off passes on for the image file itself. Each makes exactly one call
// and reports failure as the errno in a std::error_code (EINTR included: the hand-off retries every call but close,
// which Linux completes even when it reports EINTR). fds are plain ints because these are the raw calls.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <system_error>

#include "image/file.h"

namespace epollcr::restore {

class HandoffOps {
 public:
  virtual ~HandoffOps() = default;

  // fcntl(fd, F_GETFD) into *flags; fcntl(fd, F_SETFD, flags).
  virtual std::error_code GetFdFlags(int fd, int* flags) = 0;
  virtual std::error_code SetFdFlags(int fd, int flags) = 0;
  // send(2) with MSG_NOSIGNAL / recv(2): one call, which may transfer fewer bytes than asked; *done is the count
  // (0 from Receive: the peer closed the socket).
  virtual std::error_code Send(int socket, const char* data, std::size_t size, std::size_t* done) = 0;
  virtual std::error_code Receive(int socket, char* data, std::size_t size, std::size_t* done) = 0;
  // sendmsg(2) with MSG_NOSIGNAL / recvmsg(2) with MSG_CMSG_CLOEXEC: *done is the count of data bytes; the kernel
  // sets msg->msg_controllen and msg->msg_flags as usual. On failure no fd was received.
  virtual std::error_code SendMessage(int socket, const msghdr& msg, std::size_t* done) = 0;
  virtual std::error_code ReceiveMessage(int socket, msghdr* msg, std::size_t* done) = 0;
  // close(2). Linux frees the descriptor even when close fails.
  virtual std::error_code Close(int fd) = 0;
  // The calls that write (PrepareExec) and read (RestoreAfterExec) the image file.
  virtual image::FileOps& Files() = 0;
};

// The real system calls. A process-wide stateless object.
HandoffOps& DefaultHandoffOps();

}  // namespace epollcr::restore
