#include "commands/output.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "epollcr/unique_fd.h"

namespace epollcr::cli {
namespace {

std::optional<std::string> WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::string(std::strerror(errno));
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return std::nullopt;
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

const char* OutputFormatName(OutputFormat format) {
  switch (format) {
    case OutputFormat::kProto: return "proto";
    case OutputFormat::kJson: return "json";
    case OutputFormat::kBoostText: return "boost-text";
    case OutputFormat::kBoostXml: return "boost-xml";
    case OutputFormat::kBoostBinary: return "boost-binary";
  }
  return "?";
}

std::optional<OutputFormat> ParseOutputFormat(std::string_view name) {
  for (OutputFormat f : {OutputFormat::kProto, OutputFormat::kJson, OutputFormat::kBoostText, OutputFormat::kBoostXml,
                         OutputFormat::kBoostBinary}) {
    if (name == OutputFormatName(f)) return f;
  }
  return std::nullopt;
}

std::optional<OutputFormat> OutputFormatFromPath(const std::string& path) {
  if (EndsWith(path, ".epcr") || EndsWith(path, ".img")) return OutputFormat::kProto;
  if (EndsWith(path, ".json")) return OutputFormat::kJson;
  if (EndsWith(path, ".txt")) return OutputFormat::kBoostText;
  if (EndsWith(path, ".xml")) return OutputFormat::kBoostXml;
  if (EndsWith(path, ".bin")) return OutputFormat::kBoostBinary;
  return std::nullopt;
}

Status WriteOutput(const std::string& path, std::string_view bytes) {
  if (path == "-") {
    if (std::optional<std::string> failure = WriteAll(STDOUT_FILENO, bytes)) return CommandError("<stdout>", *failure);
    return Status::Ok();
  }
  const std::size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) return CommandError(path, "names a directory, not a file");

  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) return CommandError(path, "open directory " + dir + ": " + std::strerror(errno));
  std::string tmp = dir + "/." + base.substr(0, 200) + ".tmp.XXXXXX";  // stays under NAME_MAX
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return CommandError(path, "create " + tmp + ": " + std::strerror(errno));
  auto fail = [&](const std::string& step, int error) -> Status {
    fd.Reset();
    ::unlink(tmp.c_str());
    return CommandError(path, step + " " + tmp + ": " + std::strerror(error));
  };
  if (std::optional<std::string> failure = WriteAll(fd.get(), bytes)) {
    fd.Reset();
    ::unlink(tmp.c_str());
    return CommandError(path, "write " + tmp + ": " + *failure);
  }
  if (::fsync(fd.get()) != 0) return fail("fsync", errno);
  if (std::error_code e = fd.Close(); e && e != std::errc::interrupted) return fail("close", e.value());
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename", errno);
  if (::fsync(dir_fd.get()) != 0) {
    return CommandError(path,
                        "fsync directory " + dir + " (after the rename: " + path +
                            " is complete, but a power loss may bring back the old file): " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace epollcr::cli
