// Lookups into a decoded image by object id, and an EventPoll's columns read back as rows.
//
// The commands show images that may not be valid (inspect prints what it can before it reports why an image is
// invalid), so nothing here assumes validity: a repeated id keeps its first object, a missing one is null, and short
// columns read as zero.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "epollcr/v1/image.pb.h"

namespace epollcr::cli {

class ImageIndex {
 public:
  // Borrows `image`, which must outlive the index.
  explicit ImageIndex(const v1::Image& image);

  const v1::File* File(std::uint64_t id) const;
  const v1::PipeState* Pipe(std::uint64_t id) const;
  const v1::SocketPairState* Pair(std::uint64_t id) const;
  // The fd numbers that refer to file `id`, in the fd table's order.
  const std::vector<int>& FdsOf(std::uint64_t id) const;
  // "fd 3", "fds 2, 7", or "no fd".
  std::string FdsText(std::uint64_t id) const;

 private:
  std::unordered_map<std::uint64_t, const v1::File*> files_;
  std::unordered_map<std::uint64_t, const v1::PipeState*> pipes_;
  std::unordered_map<std::uint64_t, const v1::SocketPairState*> pairs_;
  std::unordered_map<std::uint64_t, std::vector<int>> fds_;
};

// One entry of an EventPollState: row i of its columns.
struct EntryRow {
  std::uint64_t file = 0;
  std::int32_t fd = 0;
  std::uint32_t events = 0;
  std::uint64_t data = 0;
  int list = 0;
  std::uint32_t queue_rank = 0;
  // 1-based place in the ready order; 0 when the ready order does not list the entry.
  std::size_t ready_position = 0;
};

// The rows of `poll`, as many as its longest column.
std::vector<EntryRow> EntryRows(const v1::EventPollState& poll);

}  // namespace epollcr::cli
