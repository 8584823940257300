// The entry points of the fuzz targets, shared by the libFuzzer executables (fuzz_target.cc) and by the regression
// test that runs every committed seed and finding through them (fuzz_inputs_test.cc). Each takes arbitrary bytes,
// runs them through one reader of epollcr and checks what must hold whatever the bytes are. A broken check is a bug:
// the fuzz target aborts on it, the test fails on it. See docs/testing.md, "Fuzzing".
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "epollcr/state.h"
#include "replay/trace.h"

namespace epollcr::fuzz {

struct Verdict {
  bool accepted = false;  // the input loaded (or parsed); false: it was refused with an error
  std::string violation;  // empty unless a check failed: what went wrong, for a bug report

  bool ok() const { return violation.empty(); }
};

// Image reader: the bytes as a framed image (unframe -> decode -> validate -> restore), and again as a bare payload
// (decode -> validate -> restore). Accepted if either loads. Checks that a load, failed or not, leaves no file alive.
Verdict ReadImage(std::string_view bytes);

// Trace parser: ParseTrace. A refusal must name a line of the text. A trace that parses is run on the userspace
// engine (never the kernel), at most kMaxTraceOps operations, with waits made non-blocking and byte counts capped:
// once straight, and once with a Boost checkpoint after every operation (the format picked from the bytes). Both
// runs must finish, print the same lines, and leave no file alive.
inline constexpr std::size_t kMaxTraceOps = 64;
inline constexpr std::uint64_t kMaxTraceIoBytes = 1 << 17;
Verdict ParseAndRunTrace(std::string_view text);
// The trace as ParseAndRunTrace runs it: at most kMaxTraceOps operations, every wait's timeout 0, pipe and socket
// byte counts at most kMaxTraceIoBytes.
replay::Trace BoundedTrace(const replay::Trace& trace);

// Boost loader: `archive` is the Boost archive alone; it is wrapped in a correct envelope for `format` (Envelope) so
// that LoadWorld's checks of the envelope pass and Boost parses it. A failed load must leave the world empty and no
// file alive. A load that succeeds must save again, and that save must load and save to the same bytes.
Verdict LoadBoostArchive(ArchiveFormat format, std::string_view archive);

// Trace with image checkpoints: as ParseAndRunTrace, with the protobuf image (kept in memory) as the checkpoint after
// every operation, the format of the restorer and of the hand-offs.
Verdict RunTraceWithImageCheckpoints(std::string_view text);

// Restorer with resolvers: the first byte picks the policy (odd: prune, even: strict), the rest is an image file
// restored by restore::RestoreBytes with an InheritedFdResolver mapping image fds 3..7 to a fresh pipe, eventfd and
// socket pair opened for the run. Checks that a refusal leaves the world empty and every inherited fd open, and that
// afterwards no file is alive, no host fd watched and no fd open or closed that was not.
Verdict RestoreWithResolvers(std::string_view input);

// Hand-off receiving side: a hostile peer sends the input's messages (PeerMessage records) over an AF_UNIX stream
// socket, each carrying its count of fds by SCM_RIGHTS, then shuts down; restore::ReceiveWorld reads them. Checks as
// RestoreWithResolvers (every fd received is closed again, whatever the peer sent).
struct PeerMessage {
  std::uint8_t fds = 0;  // 0..7
  std::string bytes;
};
// Records of [u8 fd count (mod 8)][u16 little-endian length][bytes], to the end of the input.
std::vector<PeerMessage> ParsePeerMessages(std::string_view input);
// The input that sends `messages` (a message longer than 65535 bytes becomes several records).
std::string PeerMessagesInput(const std::vector<PeerMessage>& messages);
Verdict ReceiveFromHostilePeer(std::string_view input);

// /proc/PID/fdinfo text: the parser behind `epollcr ps`. Checks every entry it accepts: tfd >= 0, toff counts the
// earlier lines of the same tfd, and the entry printed in the kernel's format parses back to itself.
Verdict ParseFdinfoText(std::string_view text);

// SaveWorld's envelope around `archive` (state.h): magic, version 1, format, CRC32C and length. The regression test
// checks that it frames exactly as SaveWorld does.
std::string Envelope(ArchiveFormat format, std::string_view archive);

// The fuzz targets by name; the executable of a target is fuzz_<name>, its seeds are in tests/fuzz/corpus/<name>/
// and its findings in tests/fuzz/regressions/<name>/.
struct Target {
  std::string_view name;
  Verdict (*run)(std::string_view input);
};
std::span<const Target> Targets();
// Null if there is no target of that name.
const Target* FindTarget(std::string_view name);

}  // namespace epollcr::fuzz
