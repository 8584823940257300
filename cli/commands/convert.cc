#include "commands/convert.h"

#include <optional>

#include "command_status.h"
#include "commands/input.h"
#include "commands/output.h"
#include "image/codec.h"
#include "image/file.h"

namespace epollcr::cli {
namespace {

std::string Reason(const Status& status) { return status.message.empty() ? status.code.message() : status.message; }

ArchiveFormat BoostFormat(OutputFormat format) {
  switch (format) {
    case OutputFormat::kBoostXml: return ArchiveFormat::kBoostXml;
    case OutputFormat::kBoostBinary: return ArchiveFormat::kBoostBinary;
    default: return ArchiveFormat::kBoostText;
  }
}

// The bytes of `image` in `format` (proto: the payload, unframed; json: the JSON mapping).
Result<std::string> ImageBytes(const v1::Image& image, OutputFormat format, const std::string& out_name) {
  if (format == OutputFormat::kJson) {
    Result<std::string> json = image::ToJson(image);
    if (!json.ok()) return CommandError(out_name, Reason(json.status()));
    if (json.value().empty() || json.value().back() != '\n') json.value() += '\n';
    return std::move(json.value());
  }
  Result<std::string> payload = image::Encode(image);
  if (!payload.ok()) return CommandError(out_name, Reason(payload.status()));
  return std::move(payload.value());
}

Status Write(const std::string& path, OutputFormat format, const std::string& bytes) {
  if (format != OutputFormat::kProto) return WriteOutput(path, bytes);
  if (path == "-") return WriteOutput(path, image::Frame(bytes));
  // A proto image file is written like every image: atomically and durably (image::WriteImageFile).
  if (Status e = image::WriteImageFile(path, bytes); !e.ok()) return CommandError(path, e.message);
  return Status::Ok();
}

Status Convert(const ConvertOptions& options, OutputFormat format) {
  Result<Input> input = ReadInput(options.in);
  if (!input.ok()) return input.status();
  const std::string out_name = OutputName(options.out);
  std::string bytes;
  if (format == OutputFormat::kProto || format == OutputFormat::kJson) {
    Result<v1::Image> image = InputImage(input.value());  // validated: convert never writes an invalid image
    if (!image.ok()) return image.status();
    Result<std::string> encoded = ImageBytes(image.value(), format, out_name);
    if (!encoded.ok()) return encoded.status();
    bytes = std::move(encoded.value());
  } else {
    World world;
    if (Status e = InputWorld(input.value(), &world); !e.ok()) return e;
    Result<std::string> archive = SaveWorld(world, BoostFormat(format));
    ReleaseWorld(world);
    if (!archive.ok()) return CommandError(out_name, Reason(archive.status()));
    bytes = std::move(archive.value());
  }
  return Write(options.out, format, bytes);
}

}  // namespace

CLI::App* AddConvertCommand(CLI::App& app, ConvertOptions* options) {
  CLI::App* cmd = app.add_subcommand("convert", "Convert a checkpoint between proto, JSON and Boost archives");
  cmd->footer(
      "IN's format is found from its first bytes: a proto image (\"EPCRIMG\\0\"), a Boost archive (\"EPCRWRLD\") "
      "or a JSON image ('{'). Images are validated before anything is written, and OUT is replaced atomically. "
      "Boost archives are trusted input only: their checksum catches damage, not malice; convert one only if you "
      "trust where it came from. Binary Boost archives are for the same architecture and Boost version.");
  cmd->add_option("IN", options->in,
                  "Input: a proto image, a JSON image or a Boost archive (trusted input only), or - for standard input")
      ->required();
  cmd->add_option("OUT", options->out,
                  "Output file, replaced atomically, or - for standard output. Without --to, its extension gives the "
                  "format: .epcr or .img proto, .json json, .txt boost-text, .xml boost-xml, .bin boost-binary")
      ->required();
  cmd->add_option("--to", options->to, "Output format")
      ->check(CLI::IsMember({"proto", "json", "boost-text", "boost-xml", "boost-binary"}));
  return cmd;
}

int RunConvert(const ConvertOptions& options, std::ostream& err) {
  std::optional<OutputFormat> format =
      options.to.empty() ? OutputFormatFromPath(options.out) : ParseOutputFormat(options.to);
  if (!format) {
    PrintError(err, CommandError("usage", "convert: cannot tell the output format from '" + options.out +
                         "': pass --to proto|json|boost-text|boost-xml|boost-binary"));
    return kExitUsage;
  }
  if (Status error = Convert(options, *format); !error.ok()) {
    PrintError(err, error);
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace epollcr::cli
