// Framing: the 32-byte header around an image's payload (docs/image-format.md, "Framing"), and the error category
// of format errors.

#include "epollcr/crc32c.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "image/file.h"

namespace epollcr::image {
namespace {

// Header field offsets (image/file.h has the table).
constexpr std::size_t kMajorOffset = 8;
constexpr std::size_t kMinorOffset = 10;
constexpr std::size_t kFlagsOffset = 12;
constexpr std::size_t kLengthOffset = 16;
constexpr std::size_t kPayloadCrcOffset = 24;
constexpr std::size_t kHeaderCrcOffset = 28;
static_assert(kHeaderCrcOffset + 4 == kHeaderSize);
static_assert(kMagic.size() == kMajorOffset);

class ImageCategoryImpl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "epollcr.image"; }

  std::string message(int value) const override {
    switch (static_cast<ImageErrc>(value)) {
      case ImageErrc::kBadMagic: return "bad magic (not an epollcr image)";
      case ImageErrc::kUnsupportedVersion: return "unsupported format version";
      case ImageErrc::kUnsupportedFlags: return "unsupported format flags";
      case ImageErrc::kTooLarge: return "image exceeds the size limit";
      case ImageErrc::kTruncated: return "truncated image";
      case ImageErrc::kTrailingBytes: return "trailing bytes after the payload";
      case ImageErrc::kHeaderChecksum: return "header checksum mismatch";
      case ImageErrc::kPayloadChecksum: return "payload checksum mismatch";
      case ImageErrc::kEmptyFile: return "empty file";
      case ImageErrc::kNotRegularFile: return "not a regular file";
    }
    return "unknown image error " + std::to_string(value);
  }

  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<ImageErrc>(value)) {
      case ImageErrc::kBadMagic: return std::errc::illegal_byte_sequence;
      case ImageErrc::kUnsupportedVersion:
      case ImageErrc::kUnsupportedFlags: return std::errc::not_supported;
      case ImageErrc::kTooLarge: return std::errc::file_too_large;
      case ImageErrc::kTruncated:
      case ImageErrc::kTrailingBytes:
      case ImageErrc::kHeaderChecksum:
      case ImageErrc::kPayloadChecksum:
      case ImageErrc::kEmptyFile: return std::errc::bad_message;
      case ImageErrc::kNotRegularFile: return std::errc::invalid_argument;
    }
    return std::error_condition(value, *this);
  }
};

void PutLe(char* out, std::uint64_t value, std::size_t size) {
  for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

std::uint64_t GetLe(std::string_view bytes, std::size_t offset, std::size_t size) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i) {
    value |= std::uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return value;
}

std::string Hex32(std::uint32_t value) {
  char buffer[11];
  std::snprintf(buffer, sizeof buffer, "0x%08x", value);
  return buffer;
}

Result<std::string_view> Fail(ImageErrc code, std::string message) { return Status(make_error_code(code), std::move(message)); }

}  // namespace

const std::error_category& ImageCategory() {
  static const ImageCategoryImpl category;
  return category;
}

std::error_code make_error_code(ImageErrc e) { return {static_cast<int>(e), ImageCategory()}; }

std::uint32_t Crc32c(std::string_view bytes) { return epollcr::Crc32c(bytes); }

FrameHeaderBytes FrameHeader(std::string_view payload) {
  FrameHeaderBytes header{};
  std::memcpy(header.data(), kMagic.data(), kMagic.size());
  PutLe(&header[kMajorOffset], kFormatMajor, 2);
  PutLe(&header[kMinorOffset], kFormatMinor, 2);
  PutLe(&header[kFlagsOffset], 0, 4);
  PutLe(&header[kLengthOffset], payload.size(), 8);
  PutLe(&header[kPayloadCrcOffset], Crc32c(payload), 4);
  PutLe(&header[kHeaderCrcOffset], Crc32c(std::string_view(header.data(), kHeaderCrcOffset)), 4);
  return header;
}

std::string Frame(std::string_view payload) {
  const FrameHeaderBytes header = FrameHeader(payload);
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  out.append(header.data(), header.size());
  out.append(payload);
  return out;
}

Result<std::string_view> Unframe(std::string_view file_bytes, const ReadLimits& limits) {
  // Magic and version (bytes 0..11) are the part of the header every major version keeps; they are checked before
  // the header checksum because a newer major may place (or compute) that checksum differently.
  const std::size_t magic_present = std::min(file_bytes.size(), kMagic.size());
  if (file_bytes.substr(0, magic_present) != kMagic.substr(0, magic_present)) {
    return Fail(ImageErrc::kBadMagic, "bad magic (not an epollcr image)");
  }
  if (file_bytes.size() < kHeaderSize) {
    return Fail(ImageErrc::kTruncated, "truncated: " + std::to_string(file_bytes.size()) +
                                           " bytes, shorter than the " + std::to_string(kHeaderSize) +
                                           "-byte header");
  }
  const auto major = static_cast<std::uint16_t>(GetLe(file_bytes, kMajorOffset, 2));
  const auto minor = static_cast<std::uint16_t>(GetLe(file_bytes, kMinorOffset, 2));
  if (major != kFormatMajor) {
    const std::string found = std::to_string(major) + "." + std::to_string(minor);
    const std::string reads = std::to_string(kFormatMajor) + ".x";
    return Fail(ImageErrc::kUnsupportedVersion,
                major > kFormatMajor
                    ? "format version " + found + " is newer than this build reads (" + reads + ")"
                    : "format version " + found + " is older than this build reads (" + reads + ")");
  }

  const auto stored_header_crc = static_cast<std::uint32_t>(GetLe(file_bytes, kHeaderCrcOffset, 4));
  const std::uint32_t header_crc = Crc32c(file_bytes.substr(0, kHeaderCrcOffset));
  if (stored_header_crc != header_crc) {
    return Fail(ImageErrc::kHeaderChecksum, "header checksum mismatch (stored " + Hex32(stored_header_crc) +
                                                ", computed " + Hex32(header_crc) + ")");
  }

  const auto flags = static_cast<std::uint32_t>(GetLe(file_bytes, kFlagsOffset, 4));
  if ((flags & kRequiredFlagsMask) != 0) {
    return Fail(ImageErrc::kUnsupportedFlags, "format " + std::to_string(major) + "." + std::to_string(minor) +
                                                  " sets required flags " + Hex32(flags & kRequiredFlagsMask) +
                                                  " that this build does not understand");
  }

  const std::uint64_t length = GetLe(file_bytes, kLengthOffset, 8);
  if (length > limits.max_payload) {
    return Fail(ImageErrc::kTooLarge, "payload length " + std::to_string(length) + " exceeds the limit " +
                                          std::to_string(limits.max_payload));
  }
  const std::uint64_t present = file_bytes.size() - kHeaderSize;
  if (length > present) {
    return Fail(ImageErrc::kTruncated, "truncated: header says " + std::to_string(length) +
                                           " payload bytes, file has " + std::to_string(present));
  }
  if (length < present) {
    return Fail(ImageErrc::kTrailingBytes, "trailing bytes after the payload: header says " +
                                               std::to_string(length) + " payload bytes, file has " +
                                               std::to_string(present));
  }

  const std::string_view payload = file_bytes.substr(kHeaderSize);
  const auto stored_payload_crc = static_cast<std::uint32_t>(GetLe(file_bytes, kPayloadCrcOffset, 4));
  const std::uint32_t payload_crc = Crc32c(payload);
  if (stored_payload_crc != payload_crc) {
    return Fail(ImageErrc::kPayloadChecksum, "payload checksum mismatch (stored " + Hex32(stored_payload_crc) +
                                                 ", computed " + Hex32(payload_crc) + ")");
  }
  return payload;
}

}  // namespace epollcr::image
