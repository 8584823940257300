#include "restore/handoff.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "big_buffer.h"
#include "epollcr/host_file.h"
#include "fault_injection.h"
#include "image/codec.h"
#include "image/file.h"
#include "restore/handoff_wire.h"
#include "restore/resolvers.h"

namespace epollcr::restore {

namespace {

constexpr char kMagic[8] = {'E', 'P', 'C', 'R', 'H', 'O', 'F', 'F'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 24;
using Clock = std::chrono::steady_clock;
using wire::Close;
using wire::Failed;
using wire::GetFdFlags;
using wire::GetU32;
using wire::GetU64;
using wire::PutU32;
using wire::PutU64;
using wire::ReceiveAll;
using wire::Retried;
using wire::SendAll;
using wire::SetFdFlags;

// FD_CLOEXEC changed on some fds: each fd with the flags it had before.
using FdFlags = std::vector<std::pair<int, int>>;

// Puts the flags of `changed` back after a failure, and says in `s` which of them could not be.
void PutFlagsBack(const FdFlags& changed, Status* s) {
  for (const std::pair<int, int>& change : changed) {
    const int fd = change.first;  // named, not a structured binding: clang 14 cannot capture those in a lambda
    const int flags = change.second;
    if (std::error_code e = Retried([&] { return SetFdFlags(fd, flags); })) {
      s->message += "; putting back FD_CLOEXEC of fd " + std::to_string(fd) + " also failed: " + e.message();
    }
  }
}

// Sets FD_CLOEXEC on every fd of `fds` (`on`) or clears it, noting in *changed the fds it changed. Stops at the first
// failure, naming the fd and the step.
Status SetCloseOnExec(const std::vector<int>& fds, bool on, FdFlags* changed) {
  for (int fd : fds) {
    int flags = 0;
    if (std::error_code e = Retried([&] { return GetFdFlags(fd, &flags); })) {
      return Failed(e, "hand-off: read the flags of fd " + std::to_string(fd) + " (fcntl F_GETFD)");
    }
    const int want = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
    if (want == flags) continue;
    if (std::error_code e = Retried([&] { return SetFdFlags(fd, want); })) {
      return Failed(e, std::string("hand-off: ") + (on ? "set" : "clear") + " FD_CLOEXEC on fd " + std::to_string(fd) +
                           " (fcntl F_SETFD)");
    }
    changed->emplace_back(fd, flags);
  }
  return {};
}

// The inherited-fd resolver, noting the host files it made for the restore: what RestoreAfterExec gives back if a
// step after the restore fails (the restorer's own rule: never close an fd it did not open).
class NotingResolver final : public Resolver {
 public:
  explicit NotingResolver(Resolver& inner) : inner_(inner) {}
  Resolution Resolve(const FileReference& ref) override {
    Resolution r = inner_.Resolve(ref);
    if (r.outcome == Resolution::Outcome::kResolved && r.created) {
      if (auto h = std::dynamic_pointer_cast<HostFile>(r.file)) made_.push_back(std::move(h));
    }
    return r;
  }
  const std::vector<std::shared_ptr<HostFile>>& made() const { return made_; }

 private:
  Resolver& inner_;
  std::vector<std::shared_ptr<HostFile>> made_;
};

}  // namespace

std::vector<int> HostFds(const World& world) {
  // The fd table's fds come in increasing order and a host file mostly sits at its own number: usually sorted as found.
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(world.fds.Count()) + world.roots.size());
  auto note = [&](const std::shared_ptr<File>& f) {
    if (f && f->builtin() == File::Builtin::kHost) {
      if (const int fd = static_cast<const HostFile*>(f.get())->fd(); fd >= 0) fds.push_back(fd);
    }
  };
  world.fds.ForEach([&](int, const std::shared_ptr<File>& file) { note(file); });
  for (const auto& [name, file] : world.roots) note(file);
  if (!std::is_sorted(fds.begin(), fds.end())) std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
  return fds;
}

Result<std::vector<int>> PrepareExec(const World& world, const std::string& image_path) {
  Result<v1::Image> image = image::Capture(world);
  if (!image.ok()) return image.status();
  Result<std::string> payload = image::Encode(image.value());
  if (!payload.ok()) return payload.status();
  // The flags first, the file second: the file is replaced last, so a failure of either leaves both as they were (but
  // for a failed fsync of the directory after the rename, whose error says the new image is in place).
  std::vector<int> fds = HostFds(world);
  FdFlags cleared;
  Status s = SetCloseOnExec(fds, /*on=*/false, &cleared);
  if (s.ok()) {
    if (Status e = image::WriteImageFile(image_path, payload.value()); !e.ok()) {
      s = Status(e.code, "hand-off: write the image: " + e.message);
    }
  }
  if (!s.ok()) {
    PutFlagsBack(cleared, &s);
    return s;
  }
  return fds;
}

Status RestoreAfterExec(const std::string& image_path, World* out, Options options, Report* report) {
  // RestoreFile, with the hand-off's words in its errors.
  Report local;
  Report& rep = report != nullptr ? *report : local;
  const auto t = Clock::now();
  BigBuffer bytes;
  std::string_view payload;
  if (Status e = image::ReadImageFileBytes(image_path, &bytes, &payload, options.read_limits); !e.ok()) {
    return Status(e.code, "hand-off: read the image: " + e.message);
  }
  InheritedFdResolver inherited;
  NotingResolver noting(inherited);
  options.resolvers.insert(options.resolvers.begin(), &noting);
  Status s = image::WithDecoded(payload, [&](const v1::Image& image) {
    rep.read = Clock::now() - t;
    return Restore(image, out, options, &rep);
  });
  if (!s.ok()) return s;

  std::vector<int> fds;
  for (const auto& h : noting.made()) {
    if (h->fd() >= 0) fds.push_back(h->fd());
  }
  FdFlags set;
  s = SetCloseOnExec(fds, /*on=*/true, &set);
  if (!s.ok()) {  // undone as a failed restore is: the inherited fds go back to the program, open, flags as they were
    for (const auto& h : noting.made()) h->ReleaseFd();
    out->roots.clear();
    out->fds.Clear();
    PutFlagsBack(set, &s);
  }
  return s;
}

Status SendWorld(int socket, const World& world) {
  Result<std::string> bytes = image::SaveImage(world);
  if (!bytes.ok()) return bytes.status();
  const std::vector<int> fds = HostFds(world);
  unsigned char header[kHeaderBytes];
  std::memcpy(header, kMagic, sizeof kMagic);
  PutU32(header + 8, kVersion);
  PutU32(header + 12, static_cast<std::uint32_t>(fds.size()));
  PutU64(header + 16, bytes.value().size());
  if (Status s = SendAll(socket, header, sizeof header, "header"); !s.ok()) return s;
  if (Status s = SendAll(socket, bytes.value().data(), bytes.value().size(), "image"); !s.ok()) return s;
  return wire::SendFds(socket, fds, fds);
}

Status ReceiveWorld(int socket, World* out, Options options, Report* report) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "hand-off: the world is not empty");
  unsigned char header[kHeaderBytes];
  if (Status s = ReceiveAll(socket, header, sizeof header, "header"); !s.ok()) return s;
  if (std::memcmp(header, kMagic, sizeof kMagic) != 0) {
    return Status::Error(EBADMSG, "hand-off: the peer did not send an epollcr hand-off");
  }
  if (GetU32(header + 8) != kVersion) {
    return Status::Error(ENOTSUP, "hand-off: version " + std::to_string(GetU32(header + 8)) + " (this build reads " +
                                      std::to_string(kVersion) + ")");
  }
  const std::uint32_t count = GetU32(header + 12);
  const std::uint64_t length = GetU64(header + 16);
  if (length > options.read_limits.max_payload + image::kHeaderSize) {
    return Status::Error(EFBIG, "hand-off: an image of " + std::to_string(length) + " bytes is beyond the limit");
  }
  if (count > 1u << 20) return Status::Error(EFBIG, "hand-off: " + std::to_string(count) + " fds is beyond the limit");
  std::string bytes(length, '\0');
  if (Status s = ReceiveAll(socket, bytes.data(), bytes.size(), "image"); !s.ok()) return s;

  std::map<int, int> received;  // old fd -> new fd
  std::vector<int> opened;
  // Linux frees a descriptor even when close fails, so a failing close has nothing left to undo.
  auto close_all = [&] {
    for (int fd : opened) (void)Close(fd);
  };
  if (Status s = wire::ReceiveFds(socket, count, &received, &opened); !s.ok()) {
    close_all();
    return s;
  }
  InheritedFdResolver resolver(received);
  options.resolvers.insert(options.resolvers.begin(), &resolver);
  if (Status s = RestoreBytes(bytes, out, options, report); !s.ok()) {
    close_all();
    return s;
  }
  // Received fds the restore did not take (a pruned reference's, say) are closed: nothing owns them.
  const std::vector<int> kept = HostFds(*out);
  for (int fd : opened) {
    if (!std::binary_search(kept.begin(), kept.end(), fd)) (void)Close(fd);
  }
  return {};
}

}  // namespace epollcr::restore
