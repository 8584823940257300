// The restorer: a validated image back into a live World, with the files the image left for later (host fds,
// embedder files) supplied by resolvers, in the stages docs/restore.md describes:
//   1. read     unframe, decode, validate (nothing is created before the image is known to be whole)
//   2. resolve  every reference is handed to the resolvers in turn (after Prepare with all of them); host fds are
//               verified against the identity the image recorded (st_dev, st_ino, file type)
//   3. re-key   entries and fd-table slots of a host file follow the fd number the file has in this process
//   4. build    files, then EventPolls inner before outer, entries on the lists the image recorded
//   5. after_load  waiters re-registered; waiting entries whose file is ready move to ready, ready ones stay ready
//               (a pending edge-triggered event is delivered once), disabled one-shot entries stay disabled, and the
//               watchers of every poll with ready entries are notified, through nested polls too. Entries on host files
//               (and on polls holding such entries) become kernel entries again (docs/engine.md, "Kernel entries"):
//               a poll takes over the kernel epoll its image records when this process gave it up for the restore
//               (ReleaseHostResources) and it still holds exactly those registrations, so nothing changes; otherwise a
//               new kernel epoll registers them, and the kernel's ADD, which polls the file, re-checks their readiness
//               (docs/restore.md)
// A failed restore leaves nothing behind: the world stays empty, no waiter stays registered on any file, and no host
// file created for the restore keeps an fd (the restorer never closes an fd it did not open).
//
// User data is restored unchanged. A pointer stored as an entry's data means nothing in another process: store an
// id (an index into the program's own table) where a checkpoint may cross a process boundary.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "epollcr/file.h"
#include "epollcr/state.h"
#include "epollcr/v1/image.pb.h"
#include "image/codec.h"
#include "image/file.h"

namespace epollcr::restore {

// A file the image refers to but does not contain.
struct FileReference {
  std::uint64_t id = 0;
  // The names the image's roots give this file (an embedder keeps program-created files there).
  std::vector<std::string> root_names;
  // Exactly one of these is set: a host file by reference, an embedder file, or a TCP socket by value (which a
  // resolver rebuilds: restore/tcp_image.h).
  const v1::HostFileReference* host = nullptr;
  const v1::EmbedderFileReference* embedder = nullptr;
  const v1::TcpConnectionState* tcp_connection = nullptr;
  const v1::TcpListenerState* tcp_listener = nullptr;
  // For a TCP socket by value: the image's network lock, if it has one.
  const v1::NetworkLock* network_lock = nullptr;
  // "file 12 (host fd 9, socket dev 0x8 ino 4242)" / "file 3 (embedder kind "myapp.timer")".
  std::string Describe() const;
  // The fd number the image recorded for a host file or a TCP socket by value; -1 for an embedder file.
  int RecordedFd() const;
};

// What one resolver says of one reference.
struct Resolution {
  enum class Outcome : std::uint8_t {
    kNotMine,     // this resolver does not know the file: ask the next one
    kResolved,    // `file` is it
    kUnresolved,  // this resolver knows the file cannot be had (`reason`); the next resolvers are still asked
  };
  Outcome outcome = Outcome::kNotMine;
  std::shared_ptr<File> file;
  // For a host file: the fd number it has in this process (-1: the one the image recorded). Entries and fd-table
  // slots registered under the old number move to this one.
  int fd = -1;
  // For a host file the resolver created for this restore: on failure the restorer gives its fd back (ReleaseFd)
  // instead of letting the file close it.
  bool created = false;
  std::string reason;

  static Resolution NotMine() { return {}; }
  static Resolution Unresolved(std::string why) { return {Outcome::kUnresolved, nullptr, -1, false, std::move(why)}; }
};

class Resolver {
 public:
  virtual ~Resolver() = default;
  // Called once with every reference of the image before any Resolve, so a resolver can do its work for all of
  // them at once (InheritedFdResolver checks every fd's identity in one batch of system calls). Optional.
  virtual void Prepare(std::span<const FileReference> refs) { (void)refs; }
  virtual Resolution Resolve(const FileReference& ref) = 0;
  // Called once when the restore is over, if Prepare was: `restored` false means it failed and the files this
  // resolver made for it must go (a resolver that opened fds closes them). Optional.
  virtual void Finished(bool restored) { (void)restored; }
};

enum class Policy : std::uint8_t {
  kStrict,  // any unresolved reference fails the whole restore
  kPrune,   // entries, fd-table slots and roots of unresolved files are dropped and listed in the report
};

struct Options {
  Policy policy = Policy::kStrict;
  // Asked in this order; the first kResolved wins. Embedder references nobody resolves fall back to the factory
  // registered for their kind (RegisterFileType).
  std::vector<Resolver*> resolvers;
  image::Limits limits;
  image::ReadLimits read_limits;
};

struct Report {
  struct Pruned {
    std::uint64_t file = 0;
    std::string what;    // FileReference::Describe()
    std::string reason;  // why no resolver had it
    std::uint64_t entries = 0;    // poll entries dropped with it
    std::uint64_t fds = 0;        // fd-table slots dropped with it
    std::vector<std::string> roots;  // roots dropped with it
  };
  std::uint64_t files = 0;       // files restored (host ones included)
  std::uint64_t host_files = 0;  // of which host files
  std::uint64_t polls = 0;
  std::uint64_t entries = 0;     // poll entries restored
  std::uint64_t rekeyed = 0;     // host files whose fd number changed
  std::vector<Pruned> pruned;
  // Time per stage (read covers reading the file, unframing and decoding; validate runs once more after a re-key
  // or a prune, and that is counted in it too).
  using Duration = std::chrono::steady_clock::duration;
  Duration read{}, validate{}, resolve{}, build{}, after_load{};

  // A few lines: counts, what was pruned and why, and the stage times.
  std::string ToString() const;
};

// Restores `image` into `out`, which must be empty.
Status Restore(const v1::Image& image, World* out, const Options& options = {}, Report* report = nullptr);
// The same from image file bytes (framing included) and from an image file.
Status RestoreBytes(std::string_view file_bytes, World* out, const Options& options = {}, Report* report = nullptr);
Status RestoreFile(const std::string& path, World* out, const Options& options = {}, Report* report = nullptr);

}  // namespace epollcr::restore
