#include "replay/userspace_engine.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "epollcr/syscalls.h"
#include "image/codec.h"

namespace epollcr::replay {
namespace {

// Closes every fd and drops every root: the world's files are released (and leave every poll) here.
void Release(World& world) {
  world.roots.clear();
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

UserspaceEngine::UserspaceEngine(CheckpointFormat format, ImageStore store)
    : format_(format), store_(store), world_(std::make_unique<World>()) {}

UserspaceEngine::~UserspaceEngine() {
  Release(*world_);
  if (!image_path_.empty()) ::unlink(image_path_.c_str());
  if (!scratch_dir_.empty()) ::rmdir(scratch_dir_.c_str());
}

Result<int> UserspaceEngine::EpollCreate() { return sys::EpollCreate1(world_->fds, sys::kEpollCloexec); }

std::error_code UserspaceEngine::Pipe(int out[2]) { return sys::Pipe(world_->fds, out); }

Result<int> UserspaceEngine::EventFd(std::uint32_t initial, bool semaphore) {
  return sys::EventFd(world_->fds, initial, semaphore);
}

std::error_code UserspaceEngine::SocketPair(int out[2]) { return sys::SocketPair(world_->fds, out); }

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
  return sys::Write(world_->fds, fd, buffer);
}

std::error_code UserspaceEngine::Shutdown(int fd, int how) { return sys::Shutdown(world_->fds, fd, how); }

Status UserspaceEngine::SaveAndRestore(World* out) {
  if (std::optional<ArchiveFormat> boost = BoostFormat(format_)) {
    Result<std::string> archive = SaveWorld(*world_, *boost);
    if (!archive.ok()) return archive.status();
    return LoadWorld(archive.value(), out);
  }
  if (store_ == ImageStore::kMemory) {
    Result<std::string> bytes = image::SaveImage(*world_);
    if (!bytes.ok()) return bytes.status();
    return image::LoadImage(bytes.value(), out);
  }
  if (scratch_dir_.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/epollcr-replay-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) {
      return Status::Error(errno, "mkdtemp " + dir + ": " + std::strerror(errno));
    }
    scratch_dir_ = dir;
    image_path_ = dir + "/checkpoint.epcr";
  }
  if (Status status = image::WriteImage(*world_, image_path_); !status.ok()) return status;
  return image::ReadImage(image_path_, out);
}

Status UserspaceEngine::Checkpoint() {
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

Status UserspaceEngine::RestoreImageFile(const std::string& path) {
  auto loaded = std::make_unique<World>();
  if (Status status = image::ReadImage(path, loaded.get()); !status.ok()) return status;
  Replace(std::move(loaded));
  return {};
}

}  // namespace epollcr::replay
