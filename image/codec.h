// The portable image (proto/epollcr/v1/image.proto) <-> a World: capture, validation, restore, encoding, JSON.
//
// Capture takes the same consistent cut as every checkpoint (docs/state-model.md). Validate checks an image
// completely before anything is created (docs/image-format.md, "Validation"); Restore runs it first, then builds
// the world and runs after_load exactly as a Boost archive load does. A failure leaves the target world empty.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "epollcr/host_file.h"
#include "epollcr/state.h"
#include "epollcr/v1/image.pb.h"
#include "image/file.h"

namespace epollcr {
class BigBuffer;
}  // namespace epollcr

namespace epollcr::image {

struct Limits {
  std::uint64_t max_objects = 1u << 24;        // files + shared objects + fds + roots
  std::uint64_t max_entries = 1u << 24;        // per EventPoll
  std::uint64_t max_segment_bytes = 1u << 20;  // one socket segment
};

struct SaveOptions {
  // Read each host file's open flags and position (HostFileReference open_flags, offset). False for a live
  // hand-off (restore/successor.h), whose successor shares the open files, flags and position with them: the image
  // then says so (open_state_shared) and a save makes no system call per host fd.
  bool host_open_state = true;
  // Called for each host file the image records, with its fd, while the cut is held (a live hand-off learns from it
  // which fds the image names without a walk of its own). Must not call into epollcr, nor keep `file` (the cut holds
  // no reference to it: a shared_ptr made for each call was two atomic operations per host file under the locks).
  std::function<void(int fd, const File& file)> on_host_file;
  // Called for each poll the image records with a kernel side, with the fds of that side (its kernel epoll, its bell,
  // the private duplicates its entries are registered under: KernelResources' fds of that poll), while the cut is
  // held: a live hand-off sends them along without a walk of the world of its own. Must not call into epollcr.
  std::function<void(std::span<const int> fds)> on_kernel_fds;
  // If set, called for each host file while the cut is held, before it is recorded by reference: it may record the
  // file by value instead, filling `out`'s kind (restore/tcp_image.h records TCP sockets so), and returns true if it
  // did; false leaves the file a reference; an error fails the save with its code, naming the file and its fd. Must
  // not call into epollcr.
  std::function<Result<bool>(HostFile& file, v1::File* out)> host_by_value;
  // If set, called once the cut is released and before the image is encoded, with the captured image: it may add to
  // it (restore/tcp_image.h installs its network lock then and records the lock's name); an error fails the save. In
  // a save (SaveImage and the like; not Capture) the image it sees has neither fd table nor files: the save encodes
  // those from the cut.
  std::function<Status(v1::Image& image)> after_capture;
  // If set, receives how long the save held the cut (epollcr/state.h SavePause): the capture; the encoding follows
  // with the world free.
  SavePause* pause = nullptr;
};

Result<v1::Image> Capture(const World& world, const SaveOptions& options = {});
Status Validate(const v1::Image& image, const Limits& limits = {});
// An image's fd table as WithDecodedFds reads it: each Image.fds record (FdEntry) as protobuf would have read it, in
// order, kept apart from the message (whose fds() is then empty): a million fds were a million messages to allocate,
// construct and reach through a pointer each, a fifth of a restore's time.
struct FdRecord {
  std::int32_t fd;
  std::uint64_t file;
};
using FdRecords = std::span<const FdRecord>;

// Validate for an image that WithDecoded (or Decode) parsed: the payload's strings were checked for UTF-8 before the
// parse (CheckPayload), so they are not walked again. `fds`: the image's fd table, if WithDecodedFds kept it apart
// (an image with an fd table of its own and records besides is refused).
Status ValidateDecoded(const v1::Image& image, const Limits& limits = {}, FdRecords fds = {});
Status Restore(const v1::Image& image, World* out, const Limits& limits = {});

// Files supplied from outside the image, by object id (restore/restorer.h resolves them): every host file reference
// needs one; an embedder reference may have one, else the factory registered for its kind makes it.
// An array of (id, file) sorted by id, not a hash map: a hand-off resolves thousands of files, a heap block each in a
// map; a restorer adds them in image order, which is id order in every image a save wrote.
class ResolvedFiles {
 public:
  void reserve(std::size_t n) { files_.reserve(n); }
  // Adds file `id`. Preconditions: no file of that id was added (the image's ids are unique: Validate).
  void emplace(std::uint64_t id, std::shared_ptr<File> file) {
    sorted_ = sorted_ && (files_.empty() || files_.back().first < id);
    files_.emplace_back(id, std::move(file));
  }
  // The file of `id`, or null if none was added.
  const std::shared_ptr<File>* Find(std::uint64_t id) const {
    if (!sorted_) {
      std::sort(files_.begin(), files_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      sorted_ = true;
    }
    // A restore looks its files up in image order, as they were added: the one after the last found first.
    if (next_ < files_.size() && files_[next_].first == id) return &files_[next_++].second;
    auto it = std::lower_bound(files_.begin(), files_.end(), id, [](const auto& f, std::uint64_t v) { return f.first < v; });
    if (it == files_.end() || it->first != id) return nullptr;
    next_ = static_cast<std::size_t>(it - files_.begin()) + 1;
    return &it->second;
  }
  std::size_t size() const { return files_.size(); }
  void clear() {
    files_.clear();
    sorted_ = true;
    next_ = 0;
  }

 private:
  mutable std::vector<std::pair<std::uint64_t, std::shared_ptr<File>>> files_;
  mutable bool sorted_ = true;
  mutable std::size_t next_ = 0;
};
// How long Restore spent building objects and entries, and in after_load (waiter re-registration and readiness).
struct BuildTimes {
  std::chrono::steady_clock::duration build{};
  std::chrono::steady_clock::duration after_load{};
};
Status Restore(const v1::Image& image, World* out, const Limits& limits, const ResolvedFiles& resolved,
               BuildTimes* times);
// The same without validating first. Preconditions: Validate(image, limits) succeeded on this very image (the
// restorer validates once, before it resolves, and again only an image it rewrote).
// `fds` as for ValidateDecoded.
Status RestoreValidated(const v1::Image& image, World* out, const ResolvedFiles& resolved, BuildTimes* times,
                        FdRecords fds = {});

// Deterministic bytes of an image, and parsing them back (the payload inside the framing).
Result<std::string> Encode(const v1::Image& image);
Result<v1::Image> Decode(std::string_view payload);

// Decodes a payload into a short-lived image (arena-allocated, for speed) and hands it to `use`. The image holds copies
// of everything it read: `use` may free the payload's memory first.
Status WithDecoded(std::string_view payload, const std::function<Status(const v1::Image&)>& use);
// The same, but the fd table, when its records are as every writer makes them (an fd and a file, nothing else), is
// read by hand into `fds` (valid during `use`) instead of into the image; else it is in the image, and `fds` is empty.
// Eventfds' file records written as every writer writes them are read by hand as well, into the image's files (in
// their places: the image is what protobuf's parse of the payload makes of it either way).
Status WithDecodedFds(std::string_view payload, const std::function<Status(const v1::Image&, FdRecords fds)>& use);

// Protobuf's JSON mapping, both ways, without loss.
Result<std::string> ToJson(const v1::Image& image);
Result<v1::Image> FromJson(std::string_view json);

// The whole way: capture, encode and frame a world; and unframe, decode, validate and restore one.
Result<std::string> SaveImage(const World& world, const SaveOptions& options = {});
// The same into `out` (the framed image is its first *size bytes), in huge pages when large: for a caller that sends
// the image on at once (a live hand-off) and should not fault in a fresh copy page by page.
Status SaveImageInto(const World& world, const SaveOptions& options, BigBuffer* out, std::size_t* size);
// The same into memory the caller places: `place(n)` returns room for the n-byte framed image, or null (the save then
// fails with ENOSPC and nothing was written). A live hand-off encodes straight into memory it shares with the
// successor.
Status SaveImageWith(const World& world, const SaveOptions& options, const std::function<char*(std::size_t)>& place,
                     std::size_t* size);
Status LoadImage(std::string_view file_bytes, World* out, const ReadLimits& read_limits = {});
// The same through an image file, written atomically and durably (image/file.h).
Status WriteImage(const World& world, const std::string& path);
Status ReadImage(const std::string& path, World* out, const ReadLimits& read_limits = {});

}  // namespace epollcr::image
