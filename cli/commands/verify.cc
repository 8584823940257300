#include "commands/verify.h"

#include <optional>

#include "command_status.h"
#include "commands/input.h"
#include "image/codec.h"
#include "image/file.h"

namespace epollcr::cli {
namespace {

// ReadImageFile's messages name the path ("PATH: empty file ...", "open PATH: No such file or directory"); the
// command names it once, first.
std::string WithoutPath(const std::string& path, std::string message) {
  for (const std::string& prefix : {path + ": ", "open " + path + ": "}) {
    if (message.compare(0, prefix.size(), prefix) == 0) return message.substr(prefix.size());
  }
  return message;
}

// The payload of the image file at `path`, or of standard input for "-".
Result<std::string> ReadPayload(const std::string& path) {
  if (path == "-") {
    Result<Input> input = ReadInput(path);
    if (!input.ok()) return input.status();
    if (input.value().format != InputFormat::kProtoImage) {
      return CommandError(input.value().name, std::string("a ") + InputFormatName(input.value().format) +
                                                              ", not an image file (convert it to proto first)");
    }
    return std::string(input.value().Payload());
  }
  std::string payload;
  if (Status e = image::ReadImageFile(path, &payload); !e.ok()) {
    return CommandError(path, WithoutPath(path, e.message));
  }
  return payload;
}

Status VerifyOne(const std::string& path) {
  Result<std::string> payload = ReadPayload(path);
  if (!payload.ok()) return payload.status();
  Result<v1::Image> decoded = image::Decode(payload.value());
  if (!decoded.ok()) return CommandError(InputName(path), decoded.status().message);
  return ValidateImage(InputName(path), decoded.value());
}

}  // namespace

CLI::App* AddVerifyCommand(CLI::App& app, VerifyOptions* options) {
  CLI::App* cmd = app.add_subcommand("verify", "Check image files completely");
  cmd->footer(
      "Checks the framing (magic, version, checksums, length), decodes the payload and applies every validation rule "
      "of docs/image-format.md. Prints 'PATH: ok' on stdout for each valid file and 'epollcr: PATH: <error>' on "
      "stderr for each other one; exit status 0 only if all are valid.");
  cmd->add_option("IMAGE", options->paths, "Image files (proto), or - for standard input")->required();
  return cmd;
}

int RunVerify(const VerifyOptions& options, std::ostream& out, std::ostream& err) {
  int status = kExitOk;
  for (const std::string& path : options.paths) {
    if (Status error = VerifyOne(path); !error.ok()) {
      PrintError(err, error);
      status = kExitFailure;
    } else {
      out << InputName(path) << ": ok" << std::endl;  // flushed, so that it interleaves with errors in order
    }
  }
  return status;
}

}  // namespace epollcr::cli
