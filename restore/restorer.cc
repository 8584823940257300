#include "restore/restorer.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <numeric>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "big_buffer.h"
#include "epollcr/host_file.h"
#include "image/file.h"
#include "state/load_objects.h"

namespace epollcr::restore {

namespace {

using Clock = std::chrono::steady_clock;

Status Fail(const std::string& message) { return Status::Error(EINVAL, "restore: " + message); }

// What the resolve stage decided for each reference of the image.
struct Resolved {
  image::ResolvedFiles files;                         // by object id
  std::vector<std::shared_ptr<HostFile>> created;     // host files made for this restore (given back on failure)
  std::unordered_map<std::uint64_t, int> rekey;       // host file id -> its fd here, where that differs
  std::unordered_map<std::uint64_t, Report::Pruned> pruned;  // by object id

  // A failed restore leaves no fd closed that it did not open: created host files give their fds back.
  void GiveBack() {
    for (const auto& h : created) h->ReleaseFd();
    created.clear();
    files.clear();
  }
};

Status ResolveAll(const v1::Image& image, const Options& options, Resolved* out) {
  std::unordered_map<std::uint64_t, std::vector<std::string>> names;
  for (const v1::Root& r : image.roots()) names[r.file()].push_back(r.name());
  std::vector<FileReference> refs;
  for (const v1::File& f : image.files()) {
    if (!f.has_host() && !f.has_embedder() && !f.has_tcp_connection() && !f.has_tcp_listener()) continue;
    if (f.has_host() && f.host().detached()) {  // no fd to find: made as it was, with none
      HostFile::Identity identity;
      identity.fd = f.host().fd();
      identity.dev = f.host().st_dev();
      identity.ino = f.host().st_ino();
      identity.file_type = f.host().file_type();
      Result<std::shared_ptr<HostFile>> detached = HostFile::Detached(identity);
      if (!detached.ok()) return Fail("file " + std::to_string(f.id()) + ": " + detached.error().message());
      out->files.emplace(f.id(), std::move(detached).value());
      continue;
    }
    FileReference& ref = refs.emplace_back();
    ref.id = f.id();
    if (auto it = names.find(f.id()); it != names.end()) ref.root_names = it->second;
    ref.host = f.has_host() ? &f.host() : nullptr;
    ref.embedder = f.has_embedder() ? &f.embedder() : nullptr;
    ref.tcp_connection = f.has_tcp_connection() ? &f.tcp_connection() : nullptr;
    ref.tcp_listener = f.has_tcp_listener() ? &f.tcp_listener() : nullptr;
    if ((ref.tcp_connection != nullptr || ref.tcp_listener != nullptr) && image.has_network_lock()) {
      ref.network_lock = &image.network_lock();
    }
  }
  for (Resolver* resolver : options.resolvers) resolver->Prepare(refs);
  out->files.reserve(refs.size());
  out->created.reserve(refs.size());
  for (const FileReference& ref : refs) {
    std::string reasons;
    std::optional<Resolution> found;
    for (Resolver* resolver : options.resolvers) {
      Resolution r = resolver->Resolve(ref);
      if (r.outcome == Resolution::Outcome::kResolved && r.file) {
        found = std::move(r);
        break;
      }
      if (r.outcome == Resolution::Outcome::kUnresolved) reasons += (reasons.empty() ? "" : "; ") + r.reason;
    }
    if (found) {
      const bool host_file = found->file->builtin() == File::Builtin::kHost;
      if (found->created && host_file) out->created.push_back(std::static_pointer_cast<HostFile>(found->file));
      const int recorded = ref.RecordedFd();
      if (ref.embedder == nullptr) {
        if (!host_file) {
          reasons = "the resolver gave a " + std::string(found->file->TypeName()) + " file, not a host file";
          found.reset();
        } else if (found->fd >= 0 && found->fd != recorded) {
          if (ref.host != nullptr) {
            out->rekey[ref.id] = found->fd;
          } else {  // a socket by value is put back at its own number, under which its entries are
            reasons = "the resolver put it at fd " + std::to_string(found->fd) + ", not at its fd " +
                      std::to_string(recorded);
            found.reset();
          }
        }
      }
    }
    if (found) {
      out->files.emplace(ref.id, std::move(found->file));
      continue;
    }
    if (ref.embedder != nullptr && reasons.empty()) {
      if (state::FindFileType(ref.embedder->kind())) continue;  // the registered factory makes it
      reasons = "embedder kind '" + ref.embedder->kind() + "' is not registered";
    }
    if (reasons.empty()) reasons = "no resolver has it";
    if (options.policy == Policy::kStrict) return Fail(ref.Describe() + ": " + reasons);
    Report::Pruned p;
    p.file = ref.id;
    p.what = ref.Describe();
    p.reason = std::move(reasons);
    p.roots = ref.root_names;
    out->pruned.emplace(ref.id, std::move(p));
  }
  return {};
}

// Drops pruned files with everything that refers to them, and moves host files to their fd numbers here. The image
// then follows the format's order rules again (fds ascending, entries by (file, fd)); a collision — a new fd number
// that the image already gives to another file — is an error that names both.
Status Rewrite(v1::Image* image, Resolved* r) {
  auto moved = [&](std::uint64_t file, int fd) {
    auto it = r->rekey.find(file);
    return it == r->rekey.end() ? fd : it->second;
  };
  std::unordered_map<std::uint64_t, int> old_fd;  // host file id -> the fd the image recorded
  for (const v1::File& f : image->files()) {
    if (f.has_host() && r->rekey.count(f.id())) old_fd[f.id()] = f.host().fd();
  }
  auto rekeyed = [&](std::uint64_t file, int fd) {  // only the host fd itself moves; other names of the file stay
    auto it = old_fd.find(file);
    return it != old_fd.end() && it->second == fd ? moved(file, fd) : fd;
  };

  // fd table
  std::vector<std::pair<int, std::uint64_t>> fds;
  for (const v1::FdEntry& e : image->fds()) {
    if (auto p = r->pruned.find(e.file()); p != r->pruned.end()) {
      ++p->second.fds;
      continue;
    }
    fds.emplace_back(rekeyed(e.file(), e.fd()), e.file());
  }
  std::sort(fds.begin(), fds.end());
  for (std::size_t i = 1; i < fds.size(); ++i) {
    if (fds[i].first == fds[i - 1].first) {
      return Fail("fd " + std::to_string(fds[i].first) + " is host file " +
                  std::to_string(r->rekey.count(fds[i].second) ? fds[i].second : fds[i - 1].second) +
                  " in this process, but the image gives that fd number to file " +
                  std::to_string(r->rekey.count(fds[i].second) ? fds[i - 1].second : fds[i].second) + " too");
    }
  }
  image->clear_fds();
  for (const auto& [fd, file] : fds) {
    v1::FdEntry* e = image->add_fds();
    e->set_fd(fd);
    e->set_file(file);
  }

  // roots
  google::protobuf::RepeatedPtrField<v1::Root> roots;
  for (v1::Root& root : *image->mutable_roots()) {
    if (!r->pruned.count(root.file())) roots.Add(std::move(root));
  }
  image->mutable_roots()->Swap(&roots);

  // files and their polls
  google::protobuf::RepeatedPtrField<v1::File> files;
  for (v1::File& f : *image->mutable_files()) {
    if (r->pruned.count(f.id())) continue;
    if (f.has_host()) f.mutable_host()->set_fd(moved(f.id(), f.host().fd()));
    if (f.has_eventpoll()) {
      v1::EventPollState& p = *f.mutable_eventpoll();
      std::vector<std::uint32_t> keep;  // old indexes of kept entries, in the new order
      for (int i = 0; i < p.files_size(); ++i) {
        if (auto it = r->pruned.find(p.files(i)); it != r->pruned.end()) {
          ++it->second.entries;
        } else {
          keep.push_back(static_cast<std::uint32_t>(i));
        }
      }
      std::vector<int> fd(static_cast<std::size_t>(p.files_size()));
      for (std::uint32_t i : keep) fd[i] = rekeyed(p.files(static_cast<int>(i)), p.fds(static_cast<int>(i)));
      std::stable_sort(keep.begin(), keep.end(), [&](std::uint32_t a, std::uint32_t b) {
        const auto fa = p.files(static_cast<int>(a)), fb = p.files(static_cast<int>(b));
        return fa != fb ? fa < fb : fd[a] < fd[b];
      });
      std::vector<std::uint32_t> where(fd.size(), ~0u);
      v1::EventPollState q;
      for (std::uint32_t i : keep) {
        const int at = static_cast<int>(i);
        if (q.files_size() > 0 && q.files(q.files_size() - 1) == p.files(at) && q.fds(q.fds_size() - 1) == fd[i]) {
          return Fail("poll " + std::to_string(f.id()) + ": host file " + std::to_string(p.files(at)) +
                      " is registered under fd " + std::to_string(fd[i]) + " twice once it has its fd number here");
        }
        where[i] = static_cast<std::uint32_t>(q.files_size());
        q.add_files(p.files(at));
        q.add_fds(fd[i]);
        q.add_events(p.events(at));
        q.add_data(p.data(at));
        q.add_lists(p.lists(at));
        q.add_queue_ranks(p.queue_ranks(at));
      }
      for (std::uint32_t i : p.ready_order()) {
        if (where[i] != ~0u) q.add_ready_order(where[i]);
      }
      // The kernel epoll and the kernel columns of the kept entries: the poll may still take it over if the kernel
      // shows exactly these registrations (a pruned file closed, as on an exec; after a re-key it never does).
      if (p.has_kernel() && p.kernel_keys_size() == p.files_size() && p.kernel_fds_size() == p.files_size()) {
        *q.mutable_kernel() = p.kernel();
        for (std::uint32_t i : keep) {
          q.add_kernel_keys(p.kernel_keys(static_cast<int>(i)));
          q.add_kernel_fds(p.kernel_fds(static_cast<int>(i)));
        }
      }
      p.Swap(&q);
    }
    files.Add(std::move(f));
  }
  image->mutable_files()->Swap(&files);
  return {};
}

void Count(const v1::Image& image, Report* report) {
  for (const v1::File& f : image.files()) {
    ++report->files;
    if (f.has_host() || f.has_tcp_connection() || f.has_tcp_listener()) ++report->host_files;
    if (f.has_eventpoll()) {
      ++report->polls;
      report->entries += static_cast<std::uint64_t>(f.eventpoll().files_size());
    }
  }
}

}  // namespace

std::string FileReference::Describe() const {
  std::string s = "file " + std::to_string(id);
  if (host != nullptr) {
    HostFile::Identity identity;
    identity.dev = host->st_dev();
    identity.ino = host->st_ino();
    identity.file_type = host->file_type();
    s += " (host fd " + std::to_string(host->fd()) + ", " + HostFile::Describe(identity) + ")";
  } else if (embedder != nullptr) {
    s += " (embedder kind \"" + embedder->kind() + "\")";
  } else if (tcp_connection != nullptr) {
    s += " (TCP connection at fd " + std::to_string(tcp_connection->fd()) + ")";
  } else if (tcp_listener != nullptr) {
    s += " (TCP listener at fd " + std::to_string(tcp_listener->fd()) + ")";
  }
  return s;
}

int FileReference::RecordedFd() const {
  if (host != nullptr) return host->fd();
  if (tcp_connection != nullptr) return tcp_connection->fd();
  if (tcp_listener != nullptr) return tcp_listener->fd();
  return -1;
}

std::string Report::ToString() const {
  auto ms = [](Duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  char line[256];
  std::string s;
  std::snprintf(line, sizeof line,
                "restored %" PRIu64 " files (%" PRIu64 " host, %" PRIu64 " re-keyed), %" PRIu64 " polls, %" PRIu64
                " entries\n",
                files, host_files, rekeyed, polls, entries);
  s += line;
  for (const Pruned& p : pruned) {
    std::snprintf(line, sizeof line, "pruned %s: %" PRIu64 " entries, %" PRIu64 " fds, %zu roots: ", p.what.c_str(),
                  p.entries, p.fds, p.roots.size());
    s += line + p.reason + "\n";
  }
  std::snprintf(line, sizeof line,
                "stages: read %.3f ms, validate %.3f ms, resolve %.3f ms, build %.3f ms, after_load %.3f ms\n", ms(read),
                ms(validate), ms(resolve), ms(build), ms(after_load));
  s += line;
  return s;
}

namespace {

Status ResolveAndBuild(const v1::Image& image, image::FdRecords fds, World* out, const Options& options,
                       Report& rep);

// Restore; `decoded`: the image was parsed from a payload whose strings were checked (image::ValidateDecoded), and
// its fd table may be `fds`, read apart (image::WithDecodedFds).
Status RestoreImage(const v1::Image& image, World* out, const Options& options, Report* report, bool decoded,
                    image::FdRecords fds = {}) {
  Report local;
  Report& rep = report != nullptr ? *report : local;
  const Report::Duration read = rep.read;
  rep = Report{};
  rep.read = read;
  if (out->fds.Count() != 0 || !out->roots.empty()) return Fail("the world is not empty");

  auto t = Clock::now();
  // Nothing is created before this.
  if (Status s = decoded ? image::ValidateDecoded(image, options.limits, fds) : image::Validate(image, options.limits);
      !s.ok()) {
    return s;
  }
  rep.validate += Clock::now() - t;

  // Every resolver learns how the restore ended: one that made files for it takes them back on failure.
  Status s = ResolveAndBuild(image, fds, out, options, rep);
  for (Resolver* resolver : options.resolvers) resolver->Finished(s.ok());
  return s;
}

Status ResolveAndBuild(const v1::Image& image, image::FdRecords fds, World* out, const Options& options,
                       Report& rep) {
  auto t = Clock::now();
  Resolved resolved;
  if (Status s = ResolveAll(image, options, &resolved); !s.ok()) {
    resolved.GiveBack();
    return s;
  }
  rep.resolve += Clock::now() - t;

  const v1::Image* use = &image;
  v1::Image rewritten;
  if (!resolved.pruned.empty() || !resolved.rekey.empty()) {
    t = Clock::now();
    rewritten = image;
    for (const image::FdRecord& r : fds) {  // a rewrite works on the image alone: its fd table goes back into it
      v1::FdEntry* e = rewritten.add_fds();
      e->set_fd(r.fd);
      e->set_file(r.file);
    }
    if (Status s = Rewrite(&rewritten, &resolved); !s.ok()) {
      resolved.GiveBack();
      return s;
    }
    use = &rewritten;
    rep.resolve += Clock::now() - t;
  }

  image::BuildTimes times;
  // A rewritten image is validated again, as strictly as a read one; the image as read was validated above.
  t = Clock::now();
  if (Status s = use == &image ? image::RestoreValidated(image, out, resolved.files, &times, fds)
                               : image::Restore(*use, out, options.limits, resolved.files, &times); !s.ok()) {
    resolved.GiveBack();
    return s;
  }
  rep.build += times.build;
  rep.after_load += times.after_load;
  rep.validate += (Clock::now() - t) - times.build - times.after_load;

  Count(*use, &rep);
  rep.rekeyed = resolved.rekey.size();
  for (auto& [id, p] : resolved.pruned) rep.pruned.push_back(std::move(p));
  std::sort(rep.pruned.begin(), rep.pruned.end(), [](const auto& a, const auto& b) { return a.file < b.file; });
  return {};
}

}  // namespace

Status Restore(const v1::Image& image, World* out, const Options& options, Report* report) {
  return RestoreImage(image, out, options, report, false);
}

Status RestoreBytes(std::string_view file_bytes, World* out, const Options& options, Report* report) {
  Report local;
  Report& rep = report != nullptr ? *report : local;
  const auto t = Clock::now();
  Result<std::string_view> framed = image::Unframe(file_bytes, options.read_limits);
  if (!framed.ok()) return framed.status();
  return image::WithDecodedFds(framed.value(), [&](const v1::Image& image, image::FdRecords fds) {
    rep.read = Clock::now() - t;
    return RestoreImage(image, out, options, &rep, true, fds);
  });
}

Status RestoreFile(const std::string& path, World* out, const Options& options, Report* report) {
  Report local;
  Report& rep = report != nullptr ? *report : local;
  const auto t = Clock::now();
  BigBuffer bytes;
  std::string_view payload;
  if (Status e = image::ReadImageFileBytes(path, &bytes, &payload, options.read_limits); !e.ok()) {
    return {e.code, e.message};
  }
  return image::WithDecodedFds(payload, [&](const v1::Image& image, image::FdRecords fds) {
    rep.read = Clock::now() - t;
    // The decoded image holds copies of everything: the file's pages go back now, and the world built next reuses
    // them instead of faulting in new memory (image/codec.h, WithDecoded).
    bytes = BigBuffer();
    return RestoreImage(image, out, options, &rep, true, fds);
  });
}

}  // namespace epollcr::restore
