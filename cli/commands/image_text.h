// The words and numbers the commands use for parts of an image: event masks, lists, file kinds, hex values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "epollcr/v1/image.pb.h"

namespace epollcr::cli {

// An entry's events word (the image's form: Linux bits, EPOLLERR|EPOLLHUP left out) as upper-case names joined by
// '|': the readiness bits in the order IN PRI OUT ERR HUP RDNORM RDBAND WRNORM WRBAND MSG RDHUP, then the flags ET
// ONESHOT WAKEUP EXCLUSIVE, then any other bits as one lower-case 0x number. An empty word is "0".
// (epollcr::FormatEventMask is the trace format's lower-case spelling, with the flags in another order.)
std::string MaskText(std::uint32_t events);
// Only the readiness bits, or only the flag bits, of an events word, spelled as MaskText does.
std::string EventBitsText(std::uint32_t events);
std::string FlagBitsText(std::uint32_t events);

// "1 entry", "2 entries": a count and the noun that fits it.
std::string CountText(std::uint64_t n, const char* one, const char* many);

// "0x2a"; zero is "0x0".
std::string HexText(std::uint64_t value);

// "waiting", "ready", "disabled"; a value outside the enum (an open proto3 enum keeps it) is "list 7".
std::string ListText(int list);

// "eventpoll", "eventfd", "pipe read end", "pipe write end", "unix stream", "host file", "embedder file", "TCP
// connection", "TCP listener", and "no kind" for a File with none set.
std::string FileKindText(const v1::File& file);

// "little-endian", "big-endian", "unspecified", or "endianness 7".
std::string EndiannessText(int endianness);

// A socket end's shutdown bits: "none", "rd", "wr", "rdwr", or the hex value of anything else.
std::string ShutdownText(std::uint32_t bits);

// A string as a double-quoted C-like literal: quotes, backslashes and non-printable bytes escaped.
std::string QuotedText(std::string_view text);

}  // namespace epollcr::cli
