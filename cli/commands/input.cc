#include "commands/input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "epollcr/unique_fd.h"
#include "image/codec.h"

namespace epollcr::cli {
namespace {

constexpr std::string_view kArchiveMagic{"EPCRWRLD", 8};  // SaveWorld's envelope (lib/src/archive/world_api.cc)

std::string Reason(const Status& status) { return status.message.empty() ? status.code.message() : status.message; }

const char* FileTypeText(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Reads everything from `fd` into *out, failing once more than `limit` bytes have come. `expected` (the file's size,
// or 0) only sizes the first buffer.
std::optional<std::string> ReadAll(int fd, std::uint64_t limit, std::uint64_t expected, std::string* out) {
  std::string bytes;
  bytes.resize(
      static_cast<std::size_t>(std::min<std::uint64_t>(std::max<std::uint64_t>(expected + 1, 65536), limit + 1)));
  std::size_t size = 0;
  while (true) {
    if (size == bytes.size()) {
      if (size > limit) return "more than the limit of " + std::to_string(limit) + " bytes";
      bytes.resize(static_cast<std::size_t>(std::min<std::uint64_t>(std::uint64_t{size} * 2, limit + 1)));
    }
    const ssize_t n = ::read(fd, bytes.data() + size, bytes.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::string(std::strerror(errno));  // e.g. EISDIR for a directory on stdin
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
  }
  if (size > limit) return "more than the limit of " + std::to_string(limit) + " bytes";
  bytes.resize(size);
  *out = std::move(bytes);
  return std::nullopt;
}

Result<std::string> ReadBytes(const std::string& path, const std::string& name, std::uint64_t limit) {
  std::string bytes;
  if (path == "-") {
    if (std::optional<std::string> failure = ReadAll(STDIN_FILENO, limit, 0, &bytes)) {
      return CommandError(name, *failure);
    }
    return bytes;
  }
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) return CommandError(name, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return CommandError(name, std::string("fstat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return CommandError(name, "is a directory");
  if (!S_ISREG(st.st_mode)) {
    return CommandError(
        name, std::string("is ") + FileTypeText(st.st_mode) + ", not a regular file (use - to read standard input)");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > limit) {
    return CommandError(
        name, "file is " + std::to_string(size) + " bytes, more than the limit of " + std::to_string(limit) + " bytes");
  }
  if (std::optional<std::string> failure = ReadAll(fd.get(), limit, size, &bytes)) {
    return CommandError(name, *failure);
  }
  return bytes;
}

// protobuf's JSON parser says "json: INVALID_ARGUMENT:<what>\n<the line>\n<a caret under the place>"; an error is
// one line, so keep <what>.
std::string JsonReason(const Status& status) {
  std::string reason = Reason(status);
  reason = reason.substr(0, reason.find('\n'));
  const std::string code = "json: INVALID_ARGUMENT:";
  if (reason.compare(0, code.size(), code) == 0) reason = "json: " + reason.substr(code.size());
  return reason;
}

bool LooksLikeJson(std::string_view bytes) {
  const std::size_t first = bytes.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && bytes[first] == '{';
}

}  // namespace

const char* InputFormatName(InputFormat format) {
  switch (format) {
    case InputFormat::kProtoImage: return "proto image";
    case InputFormat::kJsonImage: return "JSON image";
    case InputFormat::kBoostArchive: return "Boost archive";
  }
  return "?";
}

std::uint64_t MaxInputBytes(const image::ReadLimits& limits) { return limits.max_payload + image::kHeaderSize; }

Result<Input> ReadInput(const std::string& path, const image::ReadLimits& limits) {
  Input input;
  input.name = InputName(path);
  Result<std::string> read = ReadBytes(path, input.name, MaxInputBytes(limits));
  if (!read.ok()) return read.status();
  input.bytes = std::move(read.value());
  if (input.bytes.empty()) return CommandError(input.name, path == "-" ? "empty input" : "empty file");
  if (input.bytes.size() >= kArchiveMagic.size() && input.bytes.compare(0, kArchiveMagic.size(), kArchiveMagic) == 0) {
    input.format = InputFormat::kBoostArchive;
  } else if (LooksLikeJson(input.bytes)) {
    input.format = InputFormat::kJsonImage;
  } else {
    Result<std::string_view> framed = image::Unframe(input.bytes, limits);
    if (!framed.ok()) {
      if (framed.status().code == image::ImageErrc::kBadMagic) {
        return CommandError(input.name, "not an epollcr image, JSON image or Boost archive (unknown magic)");
      }
      return CommandError(input.name, framed.status().message);
    }
    input.format = InputFormat::kProtoImage;
    input.payload_offset = static_cast<std::size_t>(framed.value().data() - input.bytes.data());
    input.payload_size = framed.value().size();
  }
  return input;
}

Result<v1::Image> DecodeInput(const Input& input) {
  switch (input.format) {
    case InputFormat::kProtoImage: {
      Result<v1::Image> decoded = image::Decode(input.Payload());
      if (!decoded.ok()) return CommandError(input.name, Reason(decoded.status()));
      return std::move(decoded.value());
    }
    case InputFormat::kJsonImage: {
      Result<v1::Image> parsed = image::FromJson(input.bytes);
      if (!parsed.ok()) return CommandError(input.name, JsonReason(parsed.status()));
      return std::move(parsed.value());
    }
    case InputFormat::kBoostArchive: {
      World world;
      if (Status s = LoadWorld(input.bytes, &world); !s.ok()) return CommandError(input.name, Reason(s));
      Result<v1::Image> captured = image::Capture(world);
      ReleaseWorld(world);
      if (!captured.ok()) return CommandError(input.name, Reason(captured.status()));
      return std::move(captured.value());
    }
  }
  return CommandError(input.name, "unknown input format");
}

Status ValidateImage(const std::string& name, const v1::Image& image) {
  if (Status s = image::Validate(image); !s.ok()) return CommandError(name, "invalid image: " + Reason(s));
  return Status::Ok();
}

Result<v1::Image> InputImage(const Input& input) {
  Result<v1::Image> decoded = DecodeInput(input);
  if (!decoded.ok()) return decoded;
  if (Status invalid = ValidateImage(input.name, decoded.value()); !invalid.ok()) return invalid;
  return decoded;
}

Status InputWorld(const Input& input, World* world) {
  if (input.format == InputFormat::kBoostArchive) {
    if (Status s = LoadWorld(input.bytes, world); !s.ok()) return CommandError(input.name, Reason(s));
    return Status::Ok();
  }
  Result<v1::Image> decoded = DecodeInput(input);
  if (!decoded.ok()) return decoded.status();
  if (Status s = image::Restore(decoded.value(), world); !s.ok()) return CommandError(input.name, "invalid image: " + Reason(s));
  return Status::Ok();
}

void ReleaseWorld(World& world) {
  world.roots.clear();
  world.fds.Clear();
}

}  // namespace epollcr::cli
