// The wire of the hand-offs (handoff.h, successor.h): their system calls, each at its fault-injection point
// (lib/src/fault_injection.h, kHandoff*), and the framing both use: little-endian integers, whole buffers sent and
// received, and host fds in batches of SCM_RIGHTS messages with their old numbers. Internal to restore/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "epollcr/result.h"

namespace epollcr::restore::wire {

// Repeats `call` while it reports EINTR (every call of the hand-off but close, which Linux completes even then).
template <typename Call>
std::error_code Retried(Call call) {
  std::error_code e;
  do {
    e = call();
  } while (e == std::errc::interrupted);
  return e;
}

// `what`: the error's own words.
Status Failed(std::error_code e, const std::string& what);

// fcntl(fd, F_GETFD) into *flags; fcntl(fd, F_SETFD, flags).
std::error_code GetFdFlags(int fd, int* flags);
std::error_code SetFdFlags(int fd, int flags);
// close(2) of a received fd. Linux frees the descriptor even when close fails (an injected failure closes too).
std::error_code Close(int fd);

void PutU32(unsigned char* p, std::uint32_t v);
void PutU64(unsigned char* p, std::uint64_t v);
std::uint32_t GetU32(const unsigned char* p);
std::uint64_t GetU64(const unsigned char* p);

// All `size` bytes, blocking; `what` names them in errors. ReceiveAll says EPIPE if the peer closed the socket first.
Status SendAll(int socket, const void* data, std::size_t size, const char* what);
Status ReceiveAll(int socket, void* data, std::size_t size, const char* what);

// Host fds with the numbers the receiver is to know them by: ceil(n / 253) messages of 4 + 4 * 253 bytes (u32
// count, then the numbers, the rest zero), each carrying its fds in one SCM_RIGHTS control message.
Status SendFds(int socket, const std::vector<int>& fds, const std::vector<int>& numbers);
// Receives `count` fds sent so: (*received)[number] = the fd here. Every fd received is appended to *opened, which
// the caller closes if this fails. A batch's fds may come in any number of control messages within its bytes.
Status ReceiveFds(int socket, std::uint32_t count, std::map<int, int>* received, std::vector<int>* opened);

}  // namespace epollcr::restore::wire
