#include "restore/resolvers.h"

#include <algorithm>
#include <vector>

#include "epollcr/host_file.h"
#include "syscall_batch.h"

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

namespace {

InheritedFdResolver::Stat ToStat(int fd, int error, const sys::FileIdentity& id) {
  InheritedFdResolver::Stat s;
  s.error = error;
  s.identity.fd = fd;
  s.identity.dev = id.dev;
  s.identity.ino = id.ino;
  s.identity.file_type = id.file_type;
  return s;
}

// A new host file over `fd` here, whose device, inode and type are `identity`'s. EEXIST (unresolved) if a host file of
// the program already owns this fd number.
Resolution WrapAt(HostFile::Identity identity, int fd) {
  identity.fd = fd;
  Result<std::shared_ptr<HostFile>> file = HostFile::Wrap(identity);
  if (!file.ok()) return Resolution::Unresolved("fd " + std::to_string(fd) + ": " + file.error().message());
  Resolution r;
  r.outcome = Resolution::Outcome::kResolved;
  r.file = std::move(file).value();
  r.fd = fd;
  r.created = true;
  return r;
}

}  // namespace

InheritedFdResolver::InheritedFdResolver(std::map<int, int> fds) : fds_(std::move(fds)), mapped_(true) {
  // fd numbers are below the process's fd limit: an array is the quicker map for the thousands a hand-off names.
  if (!fds_.empty() && fds_.begin()->first >= 0 && fds_.rbegin()->first < (1 << 22)) {
    dense_.assign(static_cast<std::size_t>(fds_.rbegin()->first) + 1, -1);
    for (const auto& [from, to] : fds_) dense_[static_cast<std::size_t>(from)] = to;
  }
}

int InheritedFdResolver::Lookup(int image_fd) const {
  if (!mapped_) return image_fd;
  if (!dense_.empty() || fds_.empty()) {
    return image_fd >= 0 && static_cast<std::size_t>(image_fd) < dense_.size() ? dense_[static_cast<std::size_t>(image_fd)]
                                                                               : -1;
  }
  auto it = fds_.find(image_fd);
  return it == fds_.end() ? -1 : it->second;
}

void InheritedFdResolver::Prepare(std::span<const FileReference> refs) {
  prepared_.clear();
  if (trusted_) return;
  std::vector<int> fds;
  fds.reserve(refs.size());
  for (const FileReference& ref : refs) {
    if (ref.host == nullptr) continue;
    if (const int fd = Lookup(ref.host->fd()); fd >= 0) fds.push_back(fd);
  }
  std::vector<sys::FileIdentity> ids(fds.size());
  std::vector<int> errors(fds.size());
  sys::StatMany(fds, ids, errors);
  int top = -1;
  for (int fd : fds) top = std::max(top, fd);
  prepared_.assign(static_cast<std::size_t>(top + 1), Stat{-1, {}});
  for (std::size_t i = 0; i < fds.size(); ++i) {
    prepared_[static_cast<std::size_t>(fds[i])] = ToStat(fds[i], errors[i], ids[i]);
  }
}

Resolution InheritedFdResolver::Resolve(const FileReference& ref) {
  if (ref.host == nullptr) return Resolution::NotMine();
  const int image_fd = ref.host->fd();
  const int fd = Lookup(image_fd);
  if (mapped_ && fd < 0) return Resolution::NotMine();
  HostFile::Identity want;
  want.fd = image_fd;
  want.dev = ref.host->st_dev();
  want.ino = ref.host->st_ino();
  want.file_type = ref.host->file_type();
  if (trusted_) return WrapAt(want, fd);
  Stat got;
  const auto slot = static_cast<std::size_t>(fd);
  if (fd >= 0 && slot < prepared_.size() && prepared_[slot].error >= 0) {
    got = prepared_[slot];
  } else if (fd >= 0) {
    // Not in Prepare's batch (a caller that resolves without the restorer): one fstat.
    std::vector<sys::FileIdentity> id(1);
    std::vector<int> error(1);
    sys::StatMany(std::span<const int>(&fd, 1), id, error);
    got = ToStat(fd, error[0], id[0]);
  }
  if (fd < 0 || got.error != 0) {
    return Resolution::Unresolved("fd " + std::to_string(fd) + " is not open in this process");
  }
  const HostFile::Identity& have = got.identity;
  if (have.dev != want.dev || have.ino != want.ino || have.file_type != want.file_type) {
    return Resolution::Unresolved("fd " + std::to_string(fd) + " is " + HostFile::Describe(have) +
                                  " in this process, but the image recorded " + HostFile::Describe(want));
  }
  return WrapAt(have, fd);
}

}  // namespace epollcr::restore
