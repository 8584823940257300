// UserspaceEngine: runs a trace on epollcr's engine, through the system-call layer (epollcr::sys) over the fd table
// of an epollcr::World, so that argument checks and errno precedence are the library's, exactly as an embedder gets
// them.
//
// A checkpoint saves the whole world, restores it into a fresh World and goes on there. A restore keeps fd numbers,
// so the Runner's name -> fd map stays valid. The format decides the way:
//   proto (the default)  the portable image (docs/image-format.md): with ImageStore::kMemory (replay's default),
//                        image::SaveImage then image::LoadImage: encode, frame, unframe, decode, validate, restore;
//                        with ImageStore::kFile (--checkpoint-store file), through an image file: WriteImage (atomic
//                        and durable) to a scratch directory of the engine's own, then ReadImage;
//   boost-*              SaveWorld to an in-memory Boost archive (envelope included), then LoadWorld.
//
// --checkpoint-mode exec carries the world to another process instead (replay/exec_worker.h): SaveImageFile in the
// old process, RestoreImageFile in the new one.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "epollcr/state.h"
#include "replay/engine.h"
#include "replay/host_objects.h"

namespace epollcr::replay {

enum class CheckpointFormat : std::uint8_t { kProto, kBoostText, kBoostXml, kBoostBinary };
inline constexpr CheckpointFormat kAllCheckpointFormats[] = {CheckpointFormat::kProto, CheckpointFormat::kBoostText,
                                                            CheckpointFormat::kBoostXml, CheckpointFormat::kBoostBinary};
// "proto", "boost-text", "boost-xml", "boost-binary" (the --checkpoint-format values).
const char* CheckpointFormatName(CheckpointFormat format);
std::optional<CheckpointFormat> ParseCheckpointFormat(std::string_view name);

// Where the proto format's checkpoints keep the image between save and restore.
enum class ImageStore : std::uint8_t { kFile, kMemory };

// What the trace's pipes, eventfds and socket pairs are (--files): epollcr's in-memory files, or real kernel objects
// of the same kind (pipe2, eventfd, socketpair; non-blocking, close-on-exec) wrapped as HostFiles, so the engine's
// polls watch real fds.
enum class FileBacking : std::uint8_t { kMemory, kHost };
const char* FileBackingName(FileBacking files);
std::optional<FileBacking> ParseFileBacking(std::string_view name);

class UserspaceEngine final : public Engine {
 public:
  explicit UserspaceEngine(CheckpointFormat format = CheckpointFormat::kProto, ImageStore store = ImageStore::kFile,
                           FileBacking files = FileBacking::kMemory);
  ~UserspaceEngine() override;  // closes every fd still open; removes the scratch directory

  std::string_view Name() const override { return "userspace"; }

  Result<int> EpollCreate() override;
  std::error_code Pipe(int out[2]) override;
  Result<int> EventFd(std::uint32_t initial, bool semaphore) override;
  std::error_code SocketPair(int out[2]) override;
  Result<int> Dup(int fd) override;
  std::error_code Close(int fd) override;
  std::error_code EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) override;
  Result<int> EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) override;
  Result<std::size_t> Read(int fd, std::span<std::byte> buffer) override;
  Result<std::size_t> Write(int fd, std::span<const std::byte> buffer) override;
  std::error_code Shutdown(int fd, int how) override;
  // Save -> restore into a fresh World -> swap. The old world is dropped only once the new one has loaded; on a
  // failure ("checkpoint: <why>") the engine keeps the old world, but the Runner stops the run anyway.
  Status Checkpoint() override;

  // The world as an image file at `path` (image::WriteImage: atomic and durable, mode 0600).
  Status SaveImageFile(const std::string& path) const;
  // The world as the bytes of an image file (image::SaveImage: captured, encoded and framed), for a caller that
  // writes them where it chooses.
  Result<std::string> SaveImage() const;
  // Replaces the world with the one in the image file at `path` (image::ReadImage: unframe, decode, validate,
  // restore). On a failure the engine keeps its world. Counts as a checkpoint.
  Status RestoreImageFile(const std::string& path);
  // The same from the bytes of an image file (image::LoadImage).
  Status RestoreImage(std::string_view image);

  // --checkpoint-mode exec over host files (and kernel-only objects), the old process's side: the world as the bytes
  // of an image file (`*image`), then the world gives up its host fds and kernel epolls (ReleaseHostResources).
  // `*inherit` gets every kernel fd the next process needs (the host files' and `*released`, which are the kernel
  // epolls, bells and private duplicates given up). The engine is then only fit to be dropped.
  Status SaveHostImage(std::string* image, std::vector<int>* inherit, std::vector<int>* released);
  // The new process's side: `inherited` crossed the exec, `released` among them may be taken over
  // (AcceptInherited); the image (the bytes of an image file) is restored through the restorer (host files by their
  // inherited fds), and what it did not take over is closed. Counts as a checkpoint.
  Status RestoreHostImage(const std::string& image, const std::vector<int>& inherited,
                          const std::vector<int>& released);

  CheckpointFormat format() const { return format_; }
  // Checkpoints that succeeded so far.
  int checkpoints() const { return checkpoints_; }
  // The image file of the proto format's checkpoints (the last one stays there until the engine goes), or empty
  // before the first one.
  const std::string& image_path() const { return image_path_; }
  // The current world. Replaced by every checkpoint: do not keep references across one.
  const FdTable& fds() const { return world_->fds; }
  World& world() { return *world_; }

 private:
  // The checkpoint's bytes, restored into `out` (empty).
  Status SaveAndRestore(World* out);
  // Checkpoint() of a world with host files (FileBacking::kHost, or kernel-only objects).
  Status CheckpointHostWorld();
  // Restores the image at `path` (or `bytes` when `path` is empty) through the restorer, host files by their
  // inherited fds, then closes what of `released` it did not take over. The world is replaced only on success.
  Status RestoreHost(const std::string& path, const std::string& bytes, const std::vector<int>& released);
  // Whether the world holds a host file (the world of a trace with kernel-only objects does in either backing).
  bool HasHostFiles() const;
  // Makes the scratch directory of the proto format's image files, once.
  Status EnsureScratchDir();

  // Drops the current world for `loaded`.
  void Replace(std::unique_ptr<World> loaded);
  // Installs a kernel fd as a host file (closes it on failure).
  Result<int> InstallHost(int fd);

  CheckpointFormat format_;
  ImageStore store_;
  FileBacking files_;
  int checkpoints_ = 0;
  std::unique_ptr<World> world_;  // never null
  std::string scratch_dir_;       // made by the first proto checkpoint ($TMPDIR or /tmp)
  std::string image_path_;
  std::string image_;             // ImageStore::kMemory: the last image is its first bytes

  // ==== Kernel-only kinds (docs/trace-format.md, "Kernel-only kinds"): timerfds, signalfds, TCP and UDP sockets on
  // loopback, FIFOs. Real kernel objects made by host_ (replay/host_objects.h, as in the kernel engine), installed as
  // host files whatever the --files backing. Defined in userspace_host_verbs.cc. ====
 public:
  bool SavesCheckpoints() const override { return true; }
  Result<int> TimerFd() override;
  std::error_code TimerSetTime(int fd, std::uint64_t value_ns, std::uint64_t interval_ns, bool absolute) override;
  Result<int> SignalFd(int signal) override;
  std::error_code Raise(int signal) override;
  int TraceSignal(int signo) const override;
  Result<int> Listen() override;
  Result<int> Connect(int listener) override;
  Result<int> Accept(int listener) override;
  std::error_code UdpPair(int out[2]) override;
  std::error_code Fifo(std::string_view name, bool read_end, bool write_end, int out[2]) override;
  std::error_code CloseReset(int fd) override;
  int KernelFd(int fd) const override;
  std::vector<int> KernelFds() const override;

 private:
  // InstallHost of what host_ made (its error as is).
  Result<int> InstallMade(Result<int> made);
  // Installs the ends host_ made (an end of -1 stays -1); on a failure, none stays.
  std::error_code InstallMadePair(std::error_code made, int out[2]);

  host::HostObjects host_{host::SignalRange::kUserspace};  // destroyed after the destructor has released the world
  // ==== end of the kernel-only kinds ====
};

}  // namespace epollcr::replay
