#include "commands/ps_image.h"

#include <fcntl.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "epollcr/state.h"
#include "image/codec.h"
#include "image/file.h"

namespace epollcr::cli {
namespace {

using ps::Disabled;
using ps::Entry;
using ps::kAlwaysReported;
using ps::OpenFd;
using ps::Snapshot;

v1::HostFileReference HostReference(const OpenFd& fd) {
  v1::HostFileReference ref;
  ref.set_fd(fd.fd);
  ref.set_st_dev(fd.st_dev);
  ref.set_st_ino(fd.st_ino);
  ref.set_file_type(fd.file_type);
  ref.set_open_flags(fd.flags & ~static_cast<std::uint32_t>(O_CLOEXEC));  // fdinfo adds it for a cloexec fd
  ref.set_offset(fd.pos);
  return ref;
}

// The target of `line`, which no fd of the process holds: a host reference with the tfd and the fdinfo's inode,
// device and position, when an open fd on the same inode gives its type; otherwise its type is unknown (0 would
// claim an anonymous inode), and it is an embedder reference of kind "host file not open" holding that reference.
void UnseenTarget(const Snapshot& s, const ps::FdinfoEntry& line, v1::File* out) {
  v1::HostFileReference ref;
  ref.set_fd(line.tfd);
  ref.set_st_dev(ps::UserDev(line.sdev));
  ref.set_st_ino(line.ino);
  ref.set_offset(static_cast<std::uint64_t>(line.pos));
  for (const OpenFd& fd : s.fds) {
    if (fd.st_dev != ref.st_dev() || fd.st_ino != ref.st_ino()) continue;
    ref.set_file_type(fd.file_type);  // one inode, one type
    *out->mutable_host() = ref;
    return;
  }
  out->mutable_embedder()->set_kind("host file not open");
  out->mutable_embedder()->set_state(ref.SerializeAsString());
}

// One entry on its way into the columns.
struct Row {
  std::uint64_t file;
  int fd;
  std::uint32_t events;
  std::uint64_t data;
  v1::EntryList list;
  std::uint32_t rank = 0;
};

void SetHeader(v1::Image* image) {
  World empty;
  Result<v1::Image> captured = image::Capture(empty);  // the header every epollcr image carries
  if (captured.ok()) *image->mutable_header() = captured.value().header();
  image->mutable_header()->set_format_major(image::kFormatMajor);
  image->mutable_header()->set_format_minor(image::kFormatMinor);
}

}  // namespace

v1::Image PsImage(const Snapshot& s) {
  v1::Image image;
  SetHeader(&image);
  // Which files the image holds: the epolls and what they watch, with ids in the order of their lowest fd.
  std::vector<std::uint64_t> id(s.files.size(), 0);
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    if (s.IsEpoll(f)) id[f] = 1;
    for (const Entry& e : s.files[f].entries) {
      if (e.target.file) id[*e.target.file] = 1;
    }
  }
  std::uint64_t next_id = 1;
  for (std::uint64_t& i : id) i = i ? next_id++ : 0;
  for (const OpenFd& fd : s.fds) {
    if (id[fd.file] == 0) continue;
    v1::FdEntry* e = image.add_fds();
    e->set_fd(fd.fd);
    e->set_file(id[fd.file]);
  }

  std::map<std::uint64_t, std::vector<Row>> polls;  // by the poll's id
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    if (id[f] == 0) continue;
    v1::File* file = image.add_files();
    file->set_id(id[f]);
    const OpenFd& first = s.FirstFd(s.files[f]);
    if (!first.epoll) {
      *file->mutable_host() = HostReference(first);  // file_type 0 for an anonymous inode, as the image allows
      continue;
    }
    file->mutable_eventpoll();
    std::vector<Row>& rows = polls[id[f]];
    for (const Entry& e : s.files[f].entries) {
      std::uint64_t target = e.target.file ? id[*e.target.file] : 0;
      if (target == 0) {
        // A target held outside this process's fd table (or not found): a file of its own, held by a root.
        target = next_id++;
        v1::File* unseen = image.add_files();
        unseen->set_id(target);
        UnseenTarget(s, e.line, unseen);
        v1::Root* root = image.add_roots();
        root->set_name("epoll fd " + std::to_string(first.fd) + ": tfd " + std::to_string(e.line.tfd) +
                       (e.line.toff > 0 ? " #" + std::to_string(e.line.toff + 1) : ""));
        root->set_file(target);
      }
      const bool disabled = Disabled(e.line.events);
      rows.push_back({target, e.line.tfd, disabled ? e.line.events : e.line.events & ~kAlwaysReported, e.line.data,
                      disabled ? v1::ENTRY_LIST_DISABLED : v1::ENTRY_LIST_WAITING});
    }
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      return std::pair(a.file, a.fd) < std::pair(b.file, b.fd);
    });
  }
  // The kernel does not show a file's wait queue: rank each file's entries in (poll, fd) order, EPOLLEXCLUSIVE ones
  // last as the queue has them (add_wait_queue_exclusive appends).
  std::vector<std::tuple<std::uint64_t, bool, std::uint64_t, int, Row*>> order;
  for (auto& [poll, rows] : polls) {
    for (Row& r : rows) order.emplace_back(r.file, (r.events & kEpollExclusive) != 0, poll, r.fd, &r);
  }
  std::sort(order.begin(), order.end());
  for (std::size_t k = 0; k < order.size(); ++k) {
    const bool same_file = k > 0 && std::get<0>(order[k - 1]) == std::get<0>(order[k]);
    std::get<4>(order[k])->rank = same_file ? std::get<4>(order[k - 1])->rank + 1 : 0;
  }
  for (v1::File& file : *image.mutable_files()) {
    if (!file.has_eventpoll()) continue;
    v1::EventPollState* state = file.mutable_eventpoll();
    for (const Row& r : polls[file.id()]) {
      state->add_files(r.file);
      state->add_fds(r.fd);
      state->add_events(r.events);
      state->add_data(r.data);
      state->add_lists(r.list);
      state->add_queue_ranks(r.rank);
    }
  }
  std::sort(image.mutable_roots()->begin(), image.mutable_roots()->end(),
            [](const v1::Root& a, const v1::Root& b) { return a.name() < b.name(); });
  return image;
}

}  // namespace epollcr::cli
