// Reading what the commands are given: an image file, a JSON image or a Boost archive, from a path or standard
// input ("-"), bounded in size, its format found from its first bytes (docs/cli.md, "Input formats").
//
//   proto image   the framing's magic "EPCRIMG\0" (image/file.h); unframed with image::Unframe
//   Boost archive the envelope's magic "EPCRWRLD" (lib/src/archive/world_api.cc); loaded with epollcr::LoadWorld.
//                 Boost archives are trusted input only: the envelope's checksum catches damage, not malice.
//   JSON image    the first non-whitespace byte is '{' (protobuf's JSON mapping, image::FromJson)
//
// Anything else is refused before it is parsed. Nothing here prints; errors come back as CommandError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "command_status.h"
#include "epollcr/state.h"
#include "epollcr/v1/image.pb.h"
#include "image/file.h"

namespace epollcr::cli {

enum class InputFormat { kProtoImage, kJsonImage, kBoostArchive };

// "proto image", "JSON image", "Boost archive".
const char* InputFormatName(InputFormat format);

// The most bytes an input may have: the image reader's payload limit plus the framing's header (1 GiB + 32).
std::uint64_t MaxInputBytes(const image::ReadLimits& limits = {});

// A whole input in memory, with its format.
struct Input {
  std::string name;  // as messages call it: the path, or "<stdin>"
  InputFormat format = InputFormat::kProtoImage;
  std::string bytes;
  // kProtoImage: where the payload lies in `bytes` (past the 32-byte header).
  std::size_t payload_offset = 0;
  std::size_t payload_size = 0;

  std::string_view Payload() const { return std::string_view(bytes).substr(payload_offset, payload_size); }
};

// Reads `path` ("-": standard input) whole and finds its format. A path must name a regular, non-empty file of at
// most MaxInputBytes(limits) bytes (a pipe is read through "-"); standard input is read up to that many bytes.
// A proto image is unframed here (magic, version, checksums, length), so a damaged one fails now.
Result<Input> ReadInput(const std::string& path, const image::ReadLimits& limits = {});

// The image an input holds, not validated: the decoded payload (proto), the parsed JSON, or the capture of the
// world a Boost archive loads.
Result<v1::Image> DecodeInput(const Input& input);

// image::Validate, with the input's name and "invalid image: " in the error.
Status ValidateImage(const std::string& name, const v1::Image& image);

// DecodeInput, then ValidateImage.
Result<v1::Image> InputImage(const Input& input);

// Loads the input into `world`, which must be empty: LoadWorld for a Boost archive, image::Restore (which validates
// first) for an image. On failure `world` stays empty.
Status InputWorld(const Input& input, World* world);

// Closes every fd of `world` and drops its roots, so its files leave every poll now.
void ReleaseWorld(World& world);

}  // namespace epollcr::cli
