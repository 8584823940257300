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

#include "command_status.h"
#include "commands/convert.h"
#include "commands/diff.h"
#include "commands/inspect.h"
#include "commands/ps.h"
#include "commands/run.h"
#include "commands/verify.h"
#include "demo/demo.h"
#include "epollcr/state.h"
#include "epollcr/version.h"
#include "replay/exec_worker.h"
#include "replay/replay_command.h"

namespace {

using epollcr::cli::CommandError;
using epollcr::cli::kExitFailure;
using epollcr::cli::kExitUsage;
using epollcr::cli::PrintError;

int Main(int argc, char** argv) {
  // A worker process of `replay --checkpoint-mode exec` (replay/exec_protocol.h), not a command.
  if (argc >= 2 && std::string_view(argv[1]) == epollcr::replay::exec::kWorkerCommand) {
    return epollcr::replay::exec::RunWorker(argc, argv);
  }
  // The echo server process of `epollcr demo` (demo/demo.h), not a command either.
  if (argc >= 2 && std::string_view(argv[1]) == epollcr::cli::kDemoServerCommand) {
    return epollcr::cli::RunDemoServer(argc, argv);
  }
  CLI::App app{"epollcr: a userspace event poll with Linux epoll(7) semantics, checkpointable and restorable",
               "epollcr"};
  app.set_version_flag("--version", std::string("epollcr ") + epollcr::kVersion);
  app.require_subcommand(1);

  CLI::App* replay = app.add_subcommand(
      "replay", "Run a trace of epoll operations on the userspace engine, the kernel, or both in lockstep");
  epollcr::replay::ReplayOptions options;
  replay->add_option("TRACE", options.path, "Trace file (docs/trace-format.md), or - for standard input")->required();
  replay
      ->add_option("--engine", options.engine,
                   "userspace: epollcr's engine (default); kernel: the Linux kernel; both: both in lockstep, "
                   "stopping with exit status 1 at the first line where they differ")
      ->check(CLI::IsMember({"userspace", "kernel", "both"}));
  replay
      ->add_option("--checkpoint-every", options.checkpoint_every,
                   "Checkpoint the userspace engine after every N-th operation (N defaults to 1: after every one): "
                   "save its whole world and go on in the restored copy. Prints nothing, so the output must be the "
                   "same as without it. The kernel engine has nothing to checkpoint")
      ->expected(0, 1)
      ->default_str("1")
      ->type_name("[N]")
      ->check(CLI::Range(1, 1 << 30));
  replay
      ->add_option("--checkpoint-format", options.checkpoint_format,
                   "Format of the userspace engine's checkpoints (the checkpoint verb and --checkpoint-every). "
                   "proto (default): the portable image, encoded, decoded, validated and restored into a fresh "
                   "world (through an image file with --checkpoint-store file); boost-text, boost-xml, "
                   "boost-binary: an in-memory Boost archive, saved and loaded (Boost archives are for trusted "
                   "input only)")
      ->check(CLI::IsMember({"proto", "boost-text", "boost-xml", "boost-binary"}));
  replay
      ->add_option("--checkpoint-store", options.checkpoint_store,
                   "Where a proto checkpoint's image waits between save and restore in --checkpoint-mode memory. "
                   "memory (default): in this process's memory; file: an image file in a scratch directory of its "
                   "own, written atomically and durably (fsync) and read back, as a checkpoint to disk is")
      ->check(CLI::IsMember({"memory", "file"}));
  replay
      ->add_option("--checkpoint-mode", options.checkpoint_mode,
                   "Where a checkpoint of the userspace engine restores its world. memory (default): into a fresh "
                   "world in this process; exec: in a new process (an exec of this program: a new pid and a new "
                   "program image, started ahead of the checkpoint), handed the proto image, which carries on with "
                   "the rest of the trace; this process keeps the output (and, with --engine both, the kernel "
                   "engine)")
      ->check(CLI::IsMember({"memory", "exec"}));
  replay
      ->add_option("--files", options.files,
                   "What the trace's pipes, eventfds and socket pairs are in the userspace engine. memory "
                   "(default): epollcr's in-memory files; host: real kernel objects of the same kind, wrapped as host "
                   "files, so its polls watch real fds (kernel entries: docs/engine.md)")
      ->check(CLI::IsMember({"memory", "host"}));

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
  epollcr::cli::RunOptions run_options;
  CLI::App* run = epollcr::cli::AddRunCommand(app, &run_options);
  epollcr::cli::DemoOptions demo_options;
  CLI::App* demo = epollcr::cli::AddDemoCommand(app, &demo_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    PrintError(std::cerr, CommandError("usage", e.what()));
    std::cerr << "Run 'epollcr --help' for more information.\n";
    return kExitUsage;
  }
  if (replay->parsed()) return epollcr::replay::RunReplay(options, std::cout, std::cerr);
  int status = kExitUsage;
  if (inspect->parsed()) status = epollcr::cli::RunInspect(inspect_options, std::cout, std::cerr);
  if (verify->parsed()) status = epollcr::cli::RunVerify(verify_options, std::cout, std::cerr);
  if (convert->parsed()) status = epollcr::cli::RunConvert(convert_options, std::cerr);
  if (diff->parsed()) status = epollcr::cli::RunDiff(diff_options, std::cout, std::cerr);
  if (ps->parsed()) status = epollcr::cli::RunPs(ps_options, std::cout, std::cerr);
  if (run->parsed()) status = epollcr::cli::RunRun(run_options, argv[0], std::cerr);
  if (demo->parsed()) status = epollcr::cli::RunDemo(demo_options, std::cout, std::cerr);
  // What the commands printed must have arrived: a full disk or a closed pipe is a failure, not a success.
  if (!std::cout.flush()) {
    PrintError(std::cerr, CommandError("<stdout>", "write failed"));
    return kExitFailure;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    PrintError(std::cerr, CommandError("error", e.what()));
    return kExitFailure;
  }
}
