#include "restore/resolvers.h"

#include <sys/stat.h>

#include "epollcr/host_file.h"

namespace epollcr::restore {

Resolution RegistryResolver::Resolve(const FileReference& ref) {
  Resolution r;
  if (auto it = by_id_.find(ref.id); it != by_id_.end()) {
    r.file = it->second;
  } else {
    for (const std::string& name : ref.root_names) {
      if (auto n = by_name_.find(name); n != by_name_.end()) {
        r.file = n->second;
        break;
      }
    }
  }
  if (!r.file) return Resolution::NotMine();
  if (!r.file->managed()) return Resolution::Unresolved("the registered file was not made by MakeFile");
  r.outcome = Resolution::Outcome::kResolved;
  if (ref.host != nullptr) {
    if (auto* h = dynamic_cast<HostFile*>(r.file.get())) r.fd = h->fd();
  }
  return r;
}

Resolution InheritedFdResolver::Resolve(const FileReference& ref) {
  if (ref.host == nullptr) return Resolution::NotMine();
  const int image_fd = ref.host->fd();
  int fd = image_fd;
  if (mapped_) {
    auto it = fds_.find(image_fd);
    if (it == fds_.end()) return Resolution::NotMine();
    fd = it->second;
  }
  HostFile::Identity want;
  want.fd = image_fd;
  want.dev = ref.host->st_dev();
  want.ino = ref.host->st_ino();
  want.file_type = ref.host->file_type();
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    return Resolution::Unresolved("fd " + std::to_string(fd) + " is not open in this process");
  }
  HostFile::Identity have;
  have.fd = fd;
  have.dev = st.st_dev;
  have.ino = st.st_ino;
  have.file_type = st.st_mode & S_IFMT;
  if (have.dev != want.dev || have.ino != want.ino || have.file_type != want.file_type) {
    return Resolution::Unresolved("fd " + std::to_string(fd) + " is " + HostFile::Describe(have) +
                                  " in this process, but the image recorded " + HostFile::Describe(want));
  }
  // Watched by the restorer once the entries are back (restorer.h, stage 5).
  Result<std::shared_ptr<HostFile>> file = HostFile::CreateUnwatched(fd, have.file_type);
  if (!file.ok()) return Resolution::Unresolved("fd " + std::to_string(fd) + ": " + file.error().message());
  Resolution r;
  r.outcome = Resolution::Outcome::kResolved;
  r.file = std::move(file).value();
  r.fd = fd;
  r.created = true;
  return r;
}

}  // namespace epollcr::restore
