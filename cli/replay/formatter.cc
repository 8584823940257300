#include "replay/formatter.h"

#include <cerrno>
#include <cstdio>

#include "replay/event_names.h"

namespace epollcr::replay {
namespace {

struct ErrnoEntry {
  int value;
  const char* name;
};

// Linux errno names (asm-generic/errno-base.h, errno.h). Aliases (EWOULDBLOCK = EAGAIN, EDEADLOCK = EDEADLK,
// ENOTSUP = EOPNOTSUPP) print as the first name.
constexpr ErrnoEntry kErrnoNames[] = {
    {EPERM, "EPERM"},
    {ENOENT, "ENOENT"},
    {ESRCH, "ESRCH"},
    {EINTR, "EINTR"},
    {EIO, "EIO"},
    {ENXIO, "ENXIO"},
    {E2BIG, "E2BIG"},
    {ENOEXEC, "ENOEXEC"},
    {EBADF, "EBADF"},
    {ECHILD, "ECHILD"},
    {EAGAIN, "EAGAIN"},
    {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},
    {EFAULT, "EFAULT"},
    {ENOTBLK, "ENOTBLK"},
    {EBUSY, "EBUSY"},
    {EEXIST, "EEXIST"},
    {EXDEV, "EXDEV"},
    {ENODEV, "ENODEV"},
    {ENOTDIR, "ENOTDIR"},
    {EISDIR, "EISDIR"},
    {EINVAL, "EINVAL"},
    {ENFILE, "ENFILE"},
    {EMFILE, "EMFILE"},
    {ENOTTY, "ENOTTY"},
    {ETXTBSY, "ETXTBSY"},
    {EFBIG, "EFBIG"},
    {ENOSPC, "ENOSPC"},
    {ESPIPE, "ESPIPE"},
    {EROFS, "EROFS"},
    {EMLINK, "EMLINK"},
    {EPIPE, "EPIPE"},
    {EDOM, "EDOM"},
    {ERANGE, "ERANGE"},
    {EDEADLK, "EDEADLK"},
    {ENAMETOOLONG, "ENAMETOOLONG"},
    {ENOLCK, "ENOLCK"},
    {ENOSYS, "ENOSYS"},
    {ENOTEMPTY, "ENOTEMPTY"},
    {ELOOP, "ELOOP"},
    {ENOMSG, "ENOMSG"},
    {EIDRM, "EIDRM"},
    {ENOSTR, "ENOSTR"},
    {ENODATA, "ENODATA"},
    {ETIME, "ETIME"},
    {ENOSR, "ENOSR"},
    {ENOLINK, "ENOLINK"},
    {EPROTO, "EPROTO"},
    {EMULTIHOP, "EMULTIHOP"},
    {EBADMSG, "EBADMSG"},
    {EOVERFLOW, "EOVERFLOW"},
    {EILSEQ, "EILSEQ"},
    {EUSERS, "EUSERS"},
    {ENOTSOCK, "ENOTSOCK"},
    {EDESTADDRREQ, "EDESTADDRREQ"},
    {EMSGSIZE, "EMSGSIZE"},
    {EPROTOTYPE, "EPROTOTYPE"},
    {ENOPROTOOPT, "ENOPROTOOPT"},
    {EPROTONOSUPPORT, "EPROTONOSUPPORT"},
    {ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"},
    {EOPNOTSUPP, "EOPNOTSUPP"},
    {EPFNOSUPPORT, "EPFNOSUPPORT"},
    {EAFNOSUPPORT, "EAFNOSUPPORT"},
    {EADDRINUSE, "EADDRINUSE"},
    {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
    {ENETDOWN, "ENETDOWN"},
    {ENETUNREACH, "ENETUNREACH"},
    {ENETRESET, "ENETRESET"},
    {ECONNABORTED, "ECONNABORTED"},
    {ECONNRESET, "ECONNRESET"},
    {ENOBUFS, "ENOBUFS"},
    {EISCONN, "EISCONN"},
    {ENOTCONN, "ENOTCONN"},
    {ESHUTDOWN, "ESHUTDOWN"},
    {ETOOMANYREFS, "ETOOMANYREFS"},
    {ETIMEDOUT, "ETIMEDOUT"},
    {ECONNREFUSED, "ECONNREFUSED"},
    {EHOSTDOWN, "EHOSTDOWN"},
    {EHOSTUNREACH, "EHOSTUNREACH"},
    {EALREADY, "EALREADY"},
    {EINPROGRESS, "EINPROGRESS"},
    {ESTALE, "ESTALE"},
    {EDQUOT, "EDQUOT"},
    {ECANCELED, "ECANCELED"},
    {EOWNERDEAD, "EOWNERDEAD"},
    {ENOTRECOVERABLE, "ENOTRECOVERABLE"},
};

}  // namespace

std::string ErrnoName(int errno_value) {
  for (const ErrnoEntry& e : kErrnoNames) {
    if (e.value == errno_value) return e.name;
  }
  return "E" + std::to_string(errno_value);
}

std::string FormatEventFlags(std::uint32_t events) {
  if (events == 0) return "0";
  std::string out;
  std::uint32_t rest = events;
  for (const EventBitName& n : ReadinessBitNames()) {
    if ((events & n.bit) == 0) continue;
    if (!out.empty()) out += '|';
    out += n.name;
    rest &= ~n.bit;
  }
  if (rest != 0) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "0x%x", rest);
    if (!out.empty()) out += '|';
    out += hex;
  }
  return out;
}

std::string FormatOutcome(const OpOutcome& outcome) {
  switch (outcome.kind) {
    case OpOutcome::Kind::kOk:
      return "ok";
    case OpOutcome::Kind::kNumber:
      return "ok " + std::to_string(outcome.number);
    case OpOutcome::Kind::kError:
      return "err " + ErrnoName(outcome.error);
    case OpOutcome::Kind::kEvents: {
      std::string out = "events " + std::to_string(outcome.events.size());
      for (const Event& e : outcome.events) {
        out += ' ';
        out += FormatEventFlags(e.events);
        out += '@';
        out += std::to_string(e.Data());
      }
      return out;
    }
  }
  return "?";
}

std::string FormatLine(const Op& op, const OpOutcome& outcome) {
  return std::to_string(op.line) + " " + std::string(VerbName(op.verb)) + " " + FormatOutcome(outcome);
}

}  // namespace epollcr::replay
