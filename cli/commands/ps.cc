#include "commands/ps.h"

#include "command_status.h"
#include "commands/image_text.h"
#include "commands/output.h"
#include "commands/ps_image.h"
#include "commands/ps_interposed.h"
#include "commands/ps_json.h"
#include "commands/ps_proc.h"
#include "commands/ps_text.h"
#include "image/codec.h"
#include "image/file.h"

namespace epollcr::cli {

using ps::Snapshot;

CLI::App* AddPsCommand(CLI::App& app, PsOptions* options) {
  CLI::App* cmd = app.add_subcommand("ps", "Show the kernel epolls of a live process");
  cmd->footer(
      "Reads /proc/PID/fd and /proc/PID/fdinfo (which needs ptrace access to the process: its user, or root) and "
      "prints each epoll the process holds with its entries: the fd each was registered under and what it watches "
      "(socket:[ino], pipe:[ino], anon_inode:[eventfd], a path; a registration fd since closed or reused is shown "
      "as such), events (IN|OUT|ET|ONESHOT...; a fired one-shot entry is disabled), data in hex, and which epolls "
      "watch which. Files are told apart with kcmp(2) where it is allowed. The kernel does not show which entries "
      "are ready. A program under `epollcr run` is also asked, on its own socket, for its epollcr polls as the "
      "library holds them: the program's data, one-shot entries, wait-queue ranks, in-memory ready lists (only its "
      "user and root may ask). See epollcr(1), docs/cli.md and docs/interposer.md.");
  cmd->add_option("PID", options->pid, "The process id")->required();
  cmd->add_flag("--json", options->json, "Print a JSON document instead of the text (docs/cli.md gives its shape)");
  cmd->add_option("--image", options->image,
                  "Also write what was seen as an epollcr image (host-file references for what the epolls watch), "
                  "for inspect, verify, diff and convert; - writes the image to standard output instead of the text. "
                  "For a program under epollcr run, the image is the one the process answered (its polls as the "
                  "library holds them)");
  return cmd;
}

int RunPs(const PsOptions& options, std::ostream& out, std::ostream& err) {
  const std::optional<pid_t> pid = ps::ParsePid(options.pid);
  if (!pid) {
    PrintError(err, CommandError("usage", "ps: PID must be a process id (a positive decimal number), not " + QuotedText(options.pid)));
    return kExitUsage;
  }
  if (options.image == "-" && options.json) {
    PrintError(err, CommandError("usage", "ps: --image - writes the image to standard output, so --json cannot go there too"));
    return kExitUsage;
  }
  Result<Snapshot> snapshot = ps::ReadSnapshot(*pid);
  if (!snapshot.ok()) {
    PrintError(err, snapshot.status());
    return kExitFailure;
  }
  // A program under epollcr run is asked for its polls; what the kernel shows is printed even when that fails.
  Result<std::optional<ps::Interposed>> interposed = ps::ReadInterposed(snapshot.value());
  const ps::Interposed* asked = interposed.ok() && interposed.value() ? &*interposed.value() : nullptr;
  if (options.image != "-") {
    out << (options.json ? PsJson(snapshot.value(), asked) : PsText(snapshot.value(), asked));
    out.flush();
  }
  if (!interposed.ok()) {
    PrintError(err, interposed.status());
    return kExitFailure;
  }
  if (options.image.empty()) return kExitOk;

  const std::string what = "ps: " + options.pid;
  const v1::Image image = asked != nullptr ? asked->image : PsImage(snapshot.value());
  if (Status valid = image::Validate(image); !valid.ok()) {
    PrintError(err, CommandError(what, "the image would be invalid: " + valid.message));
    return kExitFailure;
  }
  Result<std::string> payload = image::Encode(image);
  if (!payload.ok()) {
    PrintError(err, CommandError(OutputName(options.image), payload.status().message));
    return kExitFailure;
  }
  if (options.image == "-") {
    if (Status e = WriteOutput("-", image::Frame(payload.value())); !e.ok()) {
      PrintError(err, e);
      return kExitFailure;
    }
  } else if (Status e = image::WriteImageFile(options.image, payload.value()); !e.ok()) {
    PrintError(err, CommandError(options.image, e.message));
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace epollcr::cli
