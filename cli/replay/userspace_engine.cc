#include "replay/userspace_engine.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include "epollcr/event_poll.h"
#include "epollcr/host_file.h"
#include "epollcr/syscalls.h"
#include "image/codec.h"
#include "restore/resolvers.h"
#include "restore/restorer.h"
#include "replay/scratch.h"
#include "replay/sigpipe_guard.h"

namespace epollcr::replay {
namespace {

// Closes every fd and drops every root: the world's files are released (and leave every poll) here. Each poll of the
// table first removes its own entries, all at once (EventPoll::Release): a file released later has no poll left to
// leave, where one released while watched leaves each poll that watches it separately (file.h), a lookup and a
// removal per entry. The world is dropped whole, so the order changes nothing else.
void Release(World& world) {
  world.roots.clear();
  {
    const std::unique_lock<Mutex> frozen = world.fds.Freeze();
    world.fds.ForEachFrozen([](int, const std::shared_ptr<File>& file) {
      if (EventPoll* poll = file->AsEventPoll()) poll->Release();
    });
  }
  world.fds.Clear();
}

std::string Reason(const Status& status) {
  return status.message.empty() ? status.code.message() : status.message;
}

std::optional<ArchiveFormat> BoostFormat(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::kProto: return std::nullopt;
    case CheckpointFormat::kBoostText: return ArchiveFormat::kBoostText;
    case CheckpointFormat::kBoostXml: return ArchiveFormat::kBoostXml;
    case CheckpointFormat::kBoostBinary: return ArchiveFormat::kBoostBinary;
  }
  return std::nullopt;
}

}  // namespace

const char* CheckpointFormatName(CheckpointFormat format) {
  if (std::optional<ArchiveFormat> boost = BoostFormat(format)) return ArchiveFormatName(*boost);
  return "proto";
}

std::optional<CheckpointFormat> ParseCheckpointFormat(std::string_view name) {
  for (CheckpointFormat format : kAllCheckpointFormats) {
    if (name == CheckpointFormatName(format)) return format;
  }
  return std::nullopt;
}

const char* FileBackingName(FileBacking files) { return files == FileBacking::kHost ? "host" : "memory"; }

std::optional<FileBacking> ParseFileBacking(std::string_view name) {
  for (FileBacking files : {FileBacking::kMemory, FileBacking::kHost}) {
    if (name == FileBackingName(files)) return files;
  }
  return std::nullopt;
}

UserspaceEngine::UserspaceEngine(CheckpointFormat format, ImageStore store, FileBacking files)
    : format_(format), store_(store), files_(files), world_(std::make_unique<World>()) {}

UserspaceEngine::~UserspaceEngine() {
  Release(*world_);
  if (!scratch_dir_.empty()) RemoveScratchDir(scratch_dir_);  // the image file in it too
}

Result<int> UserspaceEngine::EpollCreate() { return sys::EpollCreate1(world_->fds, sys::kEpollCloexec); }

Result<int> UserspaceEngine::InstallHost(int fd) {
  if (fd < 0) return Errno(errno);
  Result<std::shared_ptr<HostFile>> file = HostFile::Create(fd);
  if (!file.ok()) {
    ::close(fd);
    return file.status();
  }
  return world_->fds.Install(std::move(file.value()));
}

namespace {
// Installs both ends of a kernel pipe or socket pair, in order; on a failure, none.
template <typename Install>
std::error_code InstallPair(const int kernel[2], int out[2], FdTable& fds, Install install) {
  Result<int> first = install(kernel[0]);
  if (!first.ok()) {
    ::close(kernel[1]);
    return first.error();
  }
  Result<int> second = install(kernel[1]);
  if (!second.ok()) {
    (void)fds.Close(first.value());
    return second.error();
  }
  out[0] = first.value();
  out[1] = second.value();
  return {};
}
}  // namespace

std::error_code UserspaceEngine::Pipe(int out[2]) {
  if (files_ == FileBacking::kMemory) return sys::Pipe(world_->fds, out);
  int kernel[2];
  if (::pipe2(kernel, O_NONBLOCK | O_CLOEXEC) != 0) return Errno(errno);
  return InstallPair(kernel, out, world_->fds, [this](int fd) { return InstallHost(fd); });
}

Result<int> UserspaceEngine::EventFd(std::uint32_t initial, bool semaphore) {
  if (files_ == FileBacking::kMemory) return sys::EventFd(world_->fds, initial, semaphore);
  return InstallHost(::eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC | (semaphore ? EFD_SEMAPHORE : 0)));
}

std::error_code UserspaceEngine::SocketPair(int out[2]) {
  if (files_ == FileBacking::kMemory) return sys::SocketPair(world_->fds, out);
  int kernel[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, kernel) != 0) return Errno(errno);
  return InstallPair(kernel, out, world_->fds, [this](int fd) { return InstallHost(fd); });
}

Result<int> UserspaceEngine::Dup(int fd) { return sys::Dup(world_->fds, fd); }

std::error_code UserspaceEngine::Close(int fd) { return sys::Close(world_->fds, fd); }

std::error_code UserspaceEngine::EpollCtl(int epfd, int op, int fd, std::uint32_t events, std::uint64_t data) {
  Event event;
  event.events = events;
  event.SetData(data);
  return sys::EpollCtl(world_->fds, epfd, op, fd, &event);
}

Result<int> UserspaceEngine::EpollWait(int epfd, std::span<Event> buffer, int max, int timeout_ms) {
  return sys::EpollWait(world_->fds, epfd, buffer.data(), max, timeout_ms);
}

Result<std::size_t> UserspaceEngine::Read(int fd, std::span<std::byte> buffer) { return sys::Read(world_->fds, fd, buffer); }

Result<std::size_t> UserspaceEngine::Write(int fd, std::span<const std::byte> buffer) {
  // A host pipe's or socket's write raises SIGPIPE with its EPIPE, as write(2) does; an in-memory one raises it here:
  // the trace's files are this process's, and the signal is seen (it wakes every signalfd of the process, which a
  // trace's kernel-only signalfd shows). The guard keeps it from being delivered.
  SigPipeGuard guard;
  Result<std::size_t> n = sys::Write(world_->fds, fd, buffer);
  if (!n.ok() && n.error() == Errno(EPIPE)) {
    const std::shared_ptr<File> file = world_->fds.Get(fd);
    if (file != nullptr && dynamic_cast<HostFile*>(file.get()) == nullptr) ::pthread_kill(::pthread_self(), SIGPIPE);
    guard.set_broken();
  }
  return n;
}

std::error_code UserspaceEngine::Shutdown(int fd, int how) { return sys::Shutdown(world_->fds, fd, how); }

Status UserspaceEngine::EnsureScratchDir() {
  if (!scratch_dir_.empty()) return Status::Ok();
  Result<std::string> dir = MakeScratchDir("epollcr-replay-");
  if (!dir.ok()) return dir.status();
  scratch_dir_ = dir.value();
  image_path_ = scratch_dir_ + "/checkpoint.epcr";
  return Status::Ok();
}

Status UserspaceEngine::SaveAndRestore(World* out) {
  if (std::optional<ArchiveFormat> boost = BoostFormat(format_)) {
    Result<std::string> archive = SaveWorld(*world_, *boost);
    if (!archive.ok()) return archive.status();
    return LoadWorld(archive.value(), out);
  }
  if (store_ == ImageStore::kMemory) {
    // Into the engine's image buffer, which grows geometrically and is kept: a checkpoint after every operation of
    // a growing world would otherwise take, fill with zeros and free a buffer of the image's size each time.
    std::size_t size = 0;
    const Status saved = image::SaveImageWith(
        *world_, {},
        [this](std::size_t n) {
          if (image_.size() < n) image_.resize(std::max(n, 2 * image_.size()));
          return image_.data();
        },
        &size);
    if (!saved.ok()) return saved;
    return image::LoadImage(std::string_view(image_.data(), size), out);
  }
  if (Status status = EnsureScratchDir(); !status.ok()) return status;
  if (Status status = image::WriteImage(*world_, image_path_); !status.ok()) return status;
  return image::ReadImage(image_path_, out);
}

// A world with host files goes through the restorer, in this same process: the image is saved, the old world gives
// up its host fds and its polls' kernel epolls (ReleaseHostResources), and the restore resolves the host files by
// their inherited fds (checked against the identity the image recorded) and takes each kernel epoll over as it is.
// A failed restore ends the run: the old world gave its fds away.
Status UserspaceEngine::CheckpointHostWorld() {
  if (format_ != CheckpointFormat::kProto) {
    return Halt("checkpoint: a world of host files is checkpointed only as a proto image, not " +
                std::string(CheckpointFormatName(format_)));
  }
  std::string bytes;
  std::string path;
  if (store_ == ImageStore::kFile) {
    if (Status status = EnsureScratchDir(); !status.ok()) return Halt("checkpoint: " + Reason(status));
    if (Status status = image::WriteImage(*world_, image_path_); !status.ok()) return Halt("checkpoint: " + Reason(status));
    path = image_path_;
  } else {
    Result<std::string> saved = image::SaveImage(*world_);
    if (!saved.ok()) return Halt("checkpoint: " + Reason(saved.status()));
    bytes = std::move(saved).value();
  }
  const std::vector<int> released = ReleaseHostResources(*world_);
  if (Status status = RestoreHost(path, bytes, released); !status.ok()) return Halt("checkpoint: " + Reason(status));
  return Status::Ok();
}

Status UserspaceEngine::RestoreHost(const std::string& path, const std::string& bytes,
                                    const std::vector<int>& released) {
  auto loaded = std::make_unique<World>();
  restore::InheritedFdResolver inherited;
  restore::Options options;
  options.resolvers = {&inherited};
  const Status status = !path.empty() ? restore::RestoreFile(path, loaded.get(), options)
                                      : restore::RestoreBytes(bytes, loaded.get(), options);
  CloseUnadopted(released);  // what the new world did not take over (it registered afresh) is nobody's now
  if (!status.ok()) return status;
  Replace(std::move(loaded));
  return Status::Ok();
}

// Asked before every checkpoint: the table is walked in place, without a copy of every fd's shared_ptr.
bool UserspaceEngine::HasHostFiles() const {
  bool host = false;
  const std::unique_lock<Mutex> frozen = world_->fds.Freeze();
  world_->fds.ForEachFrozen([&](int, const std::shared_ptr<File>& file) {
    host = host || file->builtin() == File::Builtin::kHost;
  });
  return host;
}

Status UserspaceEngine::SaveHostImage(std::string* image, std::vector<int>* inherit, std::vector<int>* released) {
  Result<std::string> saved = SaveImage();
  if (!saved.ok()) return saved.status();
  *image = std::move(saved).value();
  std::vector<int> fds = KernelFds();
  std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());  // dup'd names share one host file
  *released = ReleaseHostResources(*world_);
  fds.insert(fds.end(), released->begin(), released->end());
  *inherit = std::move(fds);
  return Status::Ok();
}

Status UserspaceEngine::RestoreHostImage(const std::string& image, const std::vector<int>& inherited,
                                         const std::vector<int>& released) {
  for (int fd : inherited) (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);  // none may leak into a later worker
  const std::vector<int> missing = AcceptInherited(released);
  if (!missing.empty()) {
    CloseUnadopted(released);
    return Status::Error(EBADF, "the kernel fd " + std::to_string(missing.front()) + " did not cross the exec");
  }
  return RestoreHost("", image, released);
}

Status UserspaceEngine::Checkpoint() {
  if (files_ == FileBacking::kHost || HasHostFiles()) return CheckpointHostWorld();
  auto loaded = std::make_unique<World>();
  if (Status status = SaveAndRestore(loaded.get()); !status.ok()) {
    return Halt("checkpoint: " + Reason(status));
  }
  Replace(std::move(loaded));
  return Status::Ok();
}

void UserspaceEngine::Replace(std::unique_ptr<World> loaded) {
  // The run goes on in the loaded world. The old one shares no file with it, so releasing it touches nothing there.
  std::unique_ptr<World> old = std::exchange(world_, std::move(loaded));
  Release(*old);
  ++checkpoints_;
}

Status UserspaceEngine::SaveImageFile(const std::string& path) const { return image::WriteImage(*world_, path); }

Result<std::string> UserspaceEngine::SaveImage() const { return image::SaveImage(*world_); }

Status UserspaceEngine::RestoreImageFile(const std::string& path) {
  auto loaded = std::make_unique<World>();
  if (Status status = image::ReadImage(path, loaded.get()); !status.ok()) return status;
  Replace(std::move(loaded));
  return {};
}

Status UserspaceEngine::RestoreImage(std::string_view image) {
  auto loaded = std::make_unique<World>();
  if (Status status = image::LoadImage(image, loaded.get()); !status.ok()) return status;
  Replace(std::move(loaded));
  return {};
}

}  // namespace epollcr::replay
