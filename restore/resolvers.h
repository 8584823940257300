// The resolvers epollcr ships (restorer.h): they compose by being listed in Options::resolvers, and an embedder can
// write its own.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "epollcr/host_file.h"
#include "restore/restorer.h"

namespace epollcr::restore {

// Files the program has at hand, by the image's object id or by the name of a root that holds the file: for
// embedder files and for files the program creates again itself (a listening socket it reopens, ...).
class RegistryResolver : public Resolver {
 public:
  void Add(std::uint64_t id, std::shared_ptr<File> file) { by_id_[id] = std::move(file); }
  void Add(std::string root_name, std::shared_ptr<File> file) { by_name_[std::move(root_name)] = std::move(file); }
  Resolution Resolve(const FileReference& ref) override;

 private:
  std::map<std::uint64_t, std::shared_ptr<File>> by_id_;
  std::map<std::string, std::shared_ptr<File>> by_name_;
};

// Host files from descriptors this process holds: kept open across exec (the image's fd N is fd N here), received
// over a Unix socket with SCM_RIGHTS (handoff.h; the numbers change: a map says which is which), or opened again.
// Each fd is verified before use: st_dev, st_ino and the file type must be the ones the image recorded; a mismatch
// (the fd was closed and reused, or the map is wrong) leaves the reference unresolved with both identities named.
// A resolved fd is wrapped in a new HostFile (host_file.h), which owns it once the restore succeeds.
class InheritedFdResolver : public Resolver {
 public:
  // Each image fd is looked for under its own number.
  InheritedFdResolver() = default;
  // image fd -> fd in this process; an image fd that is not in the map is not this resolver's.
  explicit InheritedFdResolver(std::map<int, int> fds);
  // For fds the predecessor of a live hand-off (successor.h) kept open across the exec or sent along with the image:
  // it named them itself, so none is checked (no system call per fd) and the image's file type is taken as it is.
  // `fds`: image fd -> fd in this process, as for the constructor above.
  static InheritedFdResolver Trusted(std::map<int, int> fds) {
    InheritedFdResolver r(std::move(fds));
    r.trusted_ = true;
    return r;
  }
  // The same, as an array by image fd: `to[image_fd]` is the fd in this process, -1 where the image fd is not this
  // resolver's (a hand-off of thousands of fds builds it without a map node per fd).
  static InheritedFdResolver TrustedByNumber(std::vector<int> to) {
    InheritedFdResolver r;
    r.mapped_ = true;
    r.trusted_ = true;
    r.dense_ = std::move(to);
    return r;
  }
  // Takes the identity of every fd the references name in one batch (lib/src/syscall_batch.h), for Resolve to check.
  void Prepare(std::span<const FileReference> refs) override;
  Resolution Resolve(const FileReference& ref) override;

  // What Prepare found of one fd.
  struct Stat {
    int error = 0;                // errno of the fstat, 0 if it succeeded
    HostFile::Identity identity;  // fd, dev, ino and file_type
  };

 private:
  // The fd in this process for an image fd; -1 if it is not this resolver's.
  int Lookup(int image_fd) const;

  std::map<int, int> fds_;
  std::vector<int> dense_;  // fds_ as an array by image fd (-1: not mapped), when the fds are not sparse
  bool mapped_ = false;
  bool trusted_ = false;
  // From Prepare, indexed by fd here (fd numbers are below the process's fd limit); error -1: not prepared.
  std::vector<Stat> prepared_;
};

}  // namespace epollcr::restore
