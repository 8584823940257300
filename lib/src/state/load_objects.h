// The objects of a checkpoint being loaded (a Boost archive or a protobuf image), kept densely: every object has a
// position in the order it was read, and ids map to positions through an IdIndex, so that resolving the file of
// each of a million entries is an array access, not a tree walk. Internal.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "epollcr/file.h"
#include "pipe_buffer.h"
#include "socket_pair_state.h"

namespace epollcr::state {

// What an object of a checkpoint is. Shared state (pipe buffers, socket pairs) has no after_load of its own.
enum class ObjectKind : std::uint8_t { kPipe, kSocketPair, kEventFd, kPipeRead, kPipeWrite, kUnixStream, kEventPoll, kHost, kEmbedder };

// "pipe", "socket-pair", "eventfd", "pipe-read", "pipe-write", "unix-stream", "eventpoll", "host"; "embedder" for kEmbedder
// (whose kind name is the registered one).
const char* ObjectKindName(ObjectKind kind);
// The built-in file kind of a kind name, or nothing (an embedder kind). The one list of built-in file kinds: names
// an embedder may not register and an image may not use for an embedder file.
std::optional<ObjectKind> BuiltInFileKind(std::string_view name);

// Object ids -> positions. Ids below kDenseIds (what every epollcr writer produces: 1, 2, 3, ...) are found in a
// vector; others in a hash map.
class IdIndex {
 public:
  static constexpr std::uint32_t kNone = 0xffffffffu;
  // False if the id is 0 or already there.
  bool Insert(std::uint64_t id, std::uint32_t position);
  std::uint32_t Find(std::uint64_t id) const {
    if (id < dense_.size()) return dense_[id];
    if (id < kDenseIds) return kNone;
    auto it = sparse_.find(id);
    return it == sparse_.end() ? kNone : it->second;
  }

 private:
  static constexpr std::uint64_t kDenseIds = std::uint64_t{1} << 22;
  std::vector<std::uint32_t> dense_;  // kNone where absent
  std::unordered_map<std::uint64_t, std::uint32_t> sparse_;
};

struct LoadObjects {
  std::vector<std::uint64_t> ids;            // by position
  std::vector<ObjectKind> kinds;             // by position
  std::vector<std::shared_ptr<File>> files;  // by position; null for shared state
  std::unordered_map<std::uint32_t, std::shared_ptr<PipeBuffer>> pipes;       // by position
  std::unordered_map<std::uint32_t, std::shared_ptr<SocketPairState>> pairs;  // by position
  std::unordered_map<std::uint32_t, std::string> custom_kinds;                // embedder kind names, by position
  // (owner, referenced) positions: the owner's after_load runs after the referenced object's. Repeats are allowed;
  // Wait drops a repeat of the last edge (a poll's entries of one file are consecutive).
  std::vector<std::pair<std::uint32_t, std::uint32_t>> waits;
  IdIndex index;

  // Room for `n` objects, so that adding them moves nothing.
  void Reserve(std::size_t n) {
    ids.reserve(n);
    kinds.reserve(n);
    files.reserve(n);
  }
  // A new object; throws LoadError if the id is 0 or repeated.
  std::uint32_t Add(std::uint64_t id, ObjectKind kind, std::string_view custom_kind = {});
  // The position of an id, or IdIndex::kNone.
  std::uint32_t Find(std::uint64_t id) const { return index.Find(id); }
  void Wait(std::uint32_t owner, std::uint32_t referenced) {
    if (waits.empty() || waits.back() != std::pair{owner, referenced}) waits.emplace_back(owner, referenced);
  }
  std::size_t size() const { return ids.size(); }
  // "eventfd#3", "counter#7" (an embedder kind).
  std::string Name(std::uint32_t position) const;
};

// Registered embedder file types (state.h RegisterFileType); empty if the kind is not registered.
FileFactory FindFileType(const std::string& kind);

}  // namespace epollcr::state
