#include "commands/image_text.h"

#include <cstdio>

#include "epollcr/events.h"

namespace epollcr::cli {
namespace {

struct BitName {
  std::uint32_t bit;
  const char* name;
};

// Linux's names (uapi/linux/eventpoll.h) without the EPOLL prefix; the flags as epoll_ctl(2) spells them.
constexpr BitName kEventNames[] = {
    {kEventIn, "IN"},         {kEventPri, "PRI"},       {kEventOut, "OUT"},       {kEventErr, "ERR"},
    {kEventHup, "HUP"},       {kEventRdNorm, "RDNORM"}, {kEventRdBand, "RDBAND"}, {kEventWrNorm, "WRNORM"},
    {kEventWrBand, "WRBAND"}, {kEventMsg, "MSG"},       {kEventRdHup, "RDHUP"},
};
constexpr BitName kFlagNames[] = {
    {kEpollEdgeTriggered, "ET"},
    {kEpollOneShot, "ONESHOT"},
    {kEpollWakeup, "WAKEUP"},
    {kEpollExclusive, "EXCLUSIVE"},
};

void Append(std::string& out, const char* part) {
  if (!out.empty()) out += '|';
  out += part;
}

}  // namespace

std::string MaskText(std::uint32_t events) {
  if (events == 0) return "0";
  std::string out;
  std::uint32_t rest = events;
  for (const BitName& n : kEventNames) {
    if (events & n.bit) Append(out, n.name);
    rest &= ~n.bit;
  }
  for (const BitName& n : kFlagNames) {
    if (events & n.bit) Append(out, n.name);
    rest &= ~n.bit;
  }
  if (rest != 0) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%x", rest);
    Append(out, hex);
  }
  return out;
}

std::string EventBitsText(std::uint32_t events) { return MaskText(events & ~kEpollPrivateBits); }

std::string FlagBitsText(std::uint32_t events) { return MaskText(events & kEpollPrivateBits); }

std::string CountText(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string HexText(std::uint64_t value) {
  char hex[24];
  std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(value));
  return hex;
}

std::string ListText(int list) {
  switch (list) {
    case v1::ENTRY_LIST_WAITING: return "waiting";
    case v1::ENTRY_LIST_READY: return "ready";
    case v1::ENTRY_LIST_DISABLED: return "disabled";
    default: return "list " + std::to_string(list);
  }
}

std::string FileKindText(const v1::File& file) {
  switch (file.kind_case()) {
    case v1::File::kEventpoll: return "eventpoll";
    case v1::File::kEventfd: return "eventfd";
    case v1::File::kPipeRead: return "pipe read end";
    case v1::File::kPipeWrite: return "pipe write end";
    case v1::File::kUnixStream: return "unix stream";
    case v1::File::kHost: return "host file";
    case v1::File::kEmbedder: return "embedder file";
    case v1::File::kTcpConnection: return "TCP connection";
    case v1::File::kTcpListener: return "TCP listener";
    case v1::File::KIND_NOT_SET: return "no kind";
  }
  return "no kind";
}

std::string EndiannessText(int endianness) {
  switch (endianness) {
    case v1::ENDIANNESS_LITTLE: return "little-endian";
    case v1::ENDIANNESS_BIG: return "big-endian";
    case v1::ENDIANNESS_UNSPECIFIED: return "unspecified";
    default: return "endianness " + std::to_string(endianness);
  }
}

std::string ShutdownText(std::uint32_t bits) {
  switch (bits) {
    case 0: return "none";
    case 1: return "rd";
    case 2: return "wr";
    case 3: return "rdwr";
    default: return HexText(bits);
  }
}

std::string QuotedText(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u >= 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", u);
      out += esc;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace epollcr::cli
