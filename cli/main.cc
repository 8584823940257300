// epollcr: the command-line tool. Commands: replay (docs/trace-format.md); inspect, verify, convert, diff, ps
// (cli/commands/, docs/cli.md).
//
// Exit status: 0 success; 1 divergence between engines, a runtime failure, an invalid or unreadable image, or a
// difference (diff); 2 usage error or malformed trace. Errors go to stderr as "epollcr: <what>: <reason>".
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "commands/convert.h"
#include "commands/diff.h"
#include "commands/inspect.h"
#include "commands/ps.h"
#include "commands/verify.h"
#include "epollcr/state.h"
#include "epollcr/version.h"
#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"
#include "replay/unique_fd.h"
#include "replay/userspace_engine.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

void PrintError(const std::string& what, const std::string& reason) {
  std::cerr << "epollcr: " << what << ": " << reason << '\n';
}

// Reads a whole file, or stdin for "-". On failure returns false with the reason (strerror).
bool ReadInput(const std::string& path, std::string* text, std::string* reason) {
  epollcr::replay::UniqueFd owned;
  int fd = STDIN_FILENO;
  if (path != "-") {
    owned.Reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!owned.valid()) {
      *reason = std::strerror(errno);
      return false;
    }
    fd = owned.get();
  }
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *reason = std::strerror(errno);  // e.g. EISDIR for a directory
      return false;
    }
    if (n == 0) return true;
    text->append(buffer, static_cast<std::size_t>(n));
  }
}

struct ReplayOptions {
  std::string path;
  std::string engine = "userspace";
  bool checkpoint_every = false;
  std::string checkpoint_format = "proto";
};

int Replay(const ReplayOptions& options) {
  using namespace epollcr::replay;
  const std::string& path = options.path;
  const std::string display = path == "-" ? "<stdin>" : path;
  // The option's check already refused anything else.
  const CheckpointFormat format = *ParseCheckpointFormat(options.checkpoint_format);
  const RunOptions run_options{.checkpoint_every = options.checkpoint_every};
  std::string text;
  std::string reason;
  if (!ReadInput(path, &text, &reason)) {
    PrintError(display, reason);
    return kExitUsage;
  }
  ParseResult parsed = ParseTrace(text, display);
  if (!parsed.ok()) {
    std::cerr << "epollcr: " << parsed.error->Message() << '\n';
    return kExitUsage;
  }
  RunReport report;
  if (options.engine == "kernel") {
    KernelEngine kernel;
    report = RunTrace(parsed.trace, kernel, std::cout, run_options);
  } else if (options.engine == "userspace") {
    UserspaceEngine userspace(format);
    report = RunTrace(parsed.trace, userspace, std::cout, run_options);
  } else {
    KernelEngine kernel;
    UserspaceEngine userspace(format);
    report = RunLockstep(parsed.trace, kernel, userspace, std::cout, run_options);
  }
  std::cout.flush();
  if (!report.ok()) {
    std::cerr << "epollcr: " << report.error << '\n';
    return kExitFailure;
  }
  return kExitOk;
}

int Main(int argc, char** argv) {
  CLI::App app{"epollcr: a userspace event poll with Linux epoll(7) semantics, checkpointable and restorable",
               "epollcr"};
  app.set_version_flag("--version", std::string("epollcr ") + epollcr::kVersion);
  app.require_subcommand(1);

  CLI::App* replay = app.add_subcommand(
      "replay", "Run a trace of epoll operations on the userspace engine, the kernel, or both in lockstep");
  ReplayOptions options;
  replay->add_option("TRACE", options.path, "Trace file (docs/trace-format.md), or - for standard input")->required();
  replay
      ->add_option("--engine", options.engine,
                   "userspace: epollcr's engine (default); kernel: the Linux kernel; both: both in lockstep, "
                   "stopping with exit status 1 at the first line where they differ")
      ->check(CLI::IsMember({"userspace", "kernel", "both"}));
  replay->add_flag("--checkpoint-every", options.checkpoint_every,
                   "Checkpoint the userspace engine after every operation: save its whole world, load the archive "
                   "into a fresh world and go on there. Prints nothing, so the output must be the same as without "
                   "it. The kernel engine has nothing to checkpoint");
  replay
      ->add_option("--checkpoint-format", options.checkpoint_format,
                   "Format of the userspace engine's checkpoints (the checkpoint verb and --checkpoint-every). "
                   "proto (default): the portable image, written to an image file, read back, validated and "
                   "restored into a fresh world; boost-text, boost-xml, boost-binary: an in-memory Boost archive, "
                   "saved and loaded (Boost archives are for trusted input only)")
      ->check(CLI::IsMember({"proto", "boost-text", "boost-xml", "boost-binary"}));

  epollcr::cli::InspectOptions inspect_options;
  CLI::App* inspect = epollcr::cli::AddInspectCommand(app, &inspect_options);
  epollcr::cli::VerifyOptions verify_options;
  CLI::App* verify = epollcr::cli::AddVerifyCommand(app, &verify_options);
  epollcr::cli::ConvertOptions convert_options;
  CLI::App* convert = epollcr::cli::AddConvertCommand(app, &convert_options);
  epollcr::cli::DiffOptions diff_options;
  CLI::App* diff = epollcr::cli::AddDiffCommand(app, &diff_options);
  epollcr::cli::PsOptions ps_options;
  CLI::App* ps = epollcr::cli::AddPsCommand(app, &ps_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    PrintError("usage", e.what());
    std::cerr << "Run 'epollcr --help' for more information.\n";
    return kExitUsage;
  }
  if (replay->parsed()) return Replay(options);
  int status = kExitUsage;
  if (inspect->parsed()) status = epollcr::cli::RunInspect(inspect_options, std::cout, std::cerr);
  if (verify->parsed()) status = epollcr::cli::RunVerify(verify_options, std::cout, std::cerr);
  if (convert->parsed()) status = epollcr::cli::RunConvert(convert_options, std::cerr);
  if (diff->parsed()) status = epollcr::cli::RunDiff(diff_options, std::cout, std::cerr);
  if (ps->parsed()) status = epollcr::cli::RunPs(ps_options, std::cout, std::cerr);
  // What the commands printed must have arrived: a full disk or a closed pipe is a failure, not a success.
  if (!std::cout.flush()) {
    PrintError("<stdout>", "write failed");
    return kExitFailure;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    PrintError("error", e.what());
    return kExitFailure;
  }
}
