// Where the commands write: standard output ("-") or a file replaced atomically, and the output formats of convert.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "command_status.h"

namespace epollcr::cli {

enum class OutputFormat { kProto, kJson, kBoostText, kBoostXml, kBoostBinary };

// "proto", "json", "boost-text", "boost-xml", "boost-binary" (the names --to takes).
const char* OutputFormatName(OutputFormat format);
std::optional<OutputFormat> ParseOutputFormat(std::string_view name);
// From the extension of `path`: .epcr and .img proto, .json json, .txt boost-text, .xml boost-xml, .bin boost-binary.
std::optional<OutputFormat> OutputFormatFromPath(const std::string& path);

// Writes `bytes` to standard output for "-"; otherwise replaces the file at `path` atomically: a temporary file
// ".NAME.tmp.XXXXXX" beside it (mode 0600 before the umask), all bytes written, fsync, rename over `path`, fsync of
// the directory. A failure before the rename leaves `path` as it was and removes the temporary file. (Proto images
// are written with image::WriteImageFile instead, which does the same for framed images.)
Status WriteOutput(const std::string& path, std::string_view bytes);

}  // namespace epollcr::cli
