#include "commands/image_index.h"

#include <algorithm>

namespace epollcr::cli {

ImageIndex::ImageIndex(const v1::Image& image) {
  for (const v1::File& f : image.files()) files_.emplace(f.id(), &f);
  for (const v1::PipeState& p : image.pipes()) pipes_.emplace(p.id(), &p);
  for (const v1::SocketPairState& p : image.socket_pairs()) pairs_.emplace(p.id(), &p);
  for (const v1::FdEntry& e : image.fds()) fds_[e.file()].push_back(e.fd());
}

const v1::File* ImageIndex::File(std::uint64_t id) const {
  auto it = files_.find(id);
  return it == files_.end() ? nullptr : it->second;
}

const v1::PipeState* ImageIndex::Pipe(std::uint64_t id) const {
  auto it = pipes_.find(id);
  return it == pipes_.end() ? nullptr : it->second;
}

const v1::SocketPairState* ImageIndex::Pair(std::uint64_t id) const {
  auto it = pairs_.find(id);
  return it == pairs_.end() ? nullptr : it->second;
}

const std::vector<int>& ImageIndex::FdsOf(std::uint64_t id) const {
  static const std::vector<int> kNone;
  auto it = fds_.find(id);
  return it == fds_.end() ? kNone : it->second;
}

std::string ImageIndex::FdsText(std::uint64_t id) const {
  const std::vector<int>& fds = FdsOf(id);
  if (fds.empty()) return "no fd";
  std::string out = fds.size() == 1 ? "fd " : "fds ";
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(fds[i]);
  }
  return out;
}

std::vector<EntryRow> EntryRows(const v1::EventPollState& poll) {
  const int n = std::max({poll.files_size(), poll.fds_size(), poll.events_size(), poll.data_size(), poll.lists_size(),
                          poll.queue_ranks_size()});
  std::vector<EntryRow> rows(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    EntryRow& r = rows[static_cast<std::size_t>(i)];
    if (i < poll.files_size()) r.file = poll.files(i);
    if (i < poll.fds_size()) r.fd = poll.fds(i);
    if (i < poll.events_size()) r.events = poll.events(i);
    if (i < poll.data_size()) r.data = poll.data(i);
    if (i < poll.lists_size()) r.list = poll.lists(i);
    if (i < poll.queue_ranks_size()) r.queue_rank = poll.queue_ranks(i);
  }
  for (int k = 0; k < poll.ready_order_size(); ++k) {
    const std::uint32_t at = poll.ready_order(k);
    if (at < rows.size() && rows[at].ready_position == 0) rows[at].ready_position = static_cast<std::size_t>(k) + 1;
  }
  return rows;
}

}  // namespace epollcr::cli
