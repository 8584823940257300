#include "commands/ps_text.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "commands/image_text.h"

namespace epollcr::cli {
namespace ps {

std::string EventsText(std::uint32_t events) {
  return MaskText(Disabled(events) ? events : events & ~kAlwaysReported);
}

std::string ListWord(std::uint32_t events) { return Disabled(events) ? "disabled" : "armed"; }

std::string DevText(std::uint32_t sdev) { return std::to_string(sdev >> 20) + ":" + std::to_string(sdev & 0xfffff); }

const char* StateWord(TargetState state) {
  switch (state) {
    case TargetState::kOpen: return "open";
    case TargetState::kUnverified: return "unverified";
    case TargetState::kClosed: return "closed";
    case TargetState::kReused: return "reused";
  }
  return "?";
}

}  // namespace ps

namespace {

using ps::Entry;
using ps::OpenFile;
using ps::Snapshot;
using ps::TargetState;

std::string FdsText(const Snapshot& s, const OpenFile& f) {
  std::string out = f.fds.size() == 1 ? "fd " : "fds ";
  for (std::size_t k = 0; k < f.fds.size(); ++k) out += (k > 0 ? ", " : "") + std::to_string(s.fds[f.fds[k]].fd);
  return out;
}

// What an entry watches, in words: "fd 7: pipe:[123]", "fd 7 (closed; file still open as fd 9): ...".
std::string TargetText(const Snapshot& s, const Entry& e) {
  const std::string tfd = "fd " + std::to_string(e.line.tfd);
  const std::string unseen = s.kcmp ? "not open in this process" : "not found (kcmp unavailable)";
  const std::string inode = "inode " + std::to_string(e.line.ino) + " on " + ps::DevText(e.line.sdev);
  const OpenFile* file = e.target.file ? &s.files[*e.target.file] : nullptr;
  const std::string link = file ? s.FirstFd(*file).link : "";
  switch (e.target.state) {
    case TargetState::kOpen: return tfd + ": " + link;
    case TargetState::kUnverified: return tfd + " (unverified: other files may share its inode): " + link;
    case TargetState::kClosed:
      if (!file) return tfd + " (closed; file " + unseen + "): " + inode;
      return tfd + " (closed; file still open as " + FdsText(s, *file) + "): " + link;
    case TargetState::kReused:
      if (!file) return tfd + " now names another file; target " + unseen + ": " + inode;
      return tfd + " now names another file; target open as " + FdsText(s, *file) + ": " + link;
  }
  return tfd;
}

// Rows of cells in aligned columns, each line indented by two; the columns in `numbers` are right-aligned.
std::string AlignedColumns(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& numbers) {
  std::vector<std::size_t> width(numbers.size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line = " ";
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::size_t pad = width[c] - row[c].size();
      line += ' ';
      if (numbers[c]) line.append(pad, ' ');
      line += row[c];
      if (!numbers[c] && c + 1 < row.size()) line.append(pad + 1, ' ');
      else line += ' ';
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + '\n';
  }
  return out;
}

// The interposer's polls (ps_interposed.h): one table per poll, its entries in the image's order (by file, then fd),
// with the program's events and data, the list each is on (an entry whose place the kernel holds is "ready" or
// "waiting" as the kernel epoll's ready list says, read by the interposer: EventPoll::KernelReadyKeys; "kernel" if
// it could not be read), its rank in its file's wait queue, and what it watches; then the ready lists, front first.
std::string InterposedText(const Snapshot& s, const ps::Interposed& in) {
  std::map<std::uint64_t, const v1::File*> files;
  for (const v1::File& f : in.image.files()) files[f.id()] = &f;
  std::map<std::uint64_t, std::vector<int>> fds_of;  // each file's fds in the program's table, ascending
  for (const v1::FdEntry& e : in.image.fds()) fds_of[e.file()].push_back(e.fd());
  auto fds_text = [&](std::uint64_t id) {
    std::string out;
    for (int fd : fds_of[id]) out += (out.empty() ? "" : ", ") + std::to_string(fd);
    return out.empty() ? std::string("no fd") : out;
  };
  std::size_t polls = 0;
  for (const v1::File& f : in.image.files()) polls += f.has_eventpoll() && !fds_of[f.id()].empty() ? 1 : 0;
  std::ostringstream out;
  out << "\nepollcr polls, as the interposer holds them (asked of the process on " << in.socket
      << "): " << (polls == 0 ? std::string("none") : CountText(polls, "poll", "polls")) << '\n';
  for (const v1::File& f : in.image.files()) {
    if (!f.has_eventpoll() || fds_of[f.id()].empty()) continue;
    const v1::EventPollState& p = f.eventpoll();
    out << "\nepollcr poll " << (fds_of[f.id()].size() == 1 ? "fd " : "fds ") << fds_text(f.id()) << ": "
        << CountText(static_cast<std::uint64_t>(p.files_size()), "entry", "entries");
    if (p.has_kernel()) out << "; kernel epoll fd " << p.kernel().fd();
    out << '\n';
    if (p.files_size() == 0) continue;
    std::vector<std::vector<std::string>> rows{{"tfd", "events", "data", "list", "rank", "target"}};
    std::vector<bool> kernel_ready(static_cast<std::size_t>(p.files_size()), false);
    for (std::uint32_t k : p.kernel_ready_order()) kernel_ready[k] = true;
    for (int i = 0; i < p.files_size(); ++i) {
      const bool kernel = i < p.kernel_keys_size() && p.kernel_keys(i) != 0;
      std::string list = ListText(p.lists(i));
      if (kernel && p.lists(i) != v1::ENTRY_LIST_DISABLED) list = p.kernel_ready_read() ? "waiting" : "kernel";
      if (kernel_ready[static_cast<std::size_t>(i)]) list = "ready";
      std::string target = "object " + std::to_string(p.files(i));
      if (auto it = files.find(p.files(i)); it != files.end()) {
        const v1::File& t = *it->second;
        if (t.has_host() && t.host().detached()) {
          target = "fd " + std::to_string(t.host().fd()) + " (closed; its file is open elsewhere, so it stays registered)";
        } else if (t.has_host()) {
          const std::optional<std::size_t> fd = s.FindFd(t.host().fd());
          target = "fd " + std::to_string(t.host().fd()) + (fd ? ": " + s.fds[*fd].link : std::string(" (not open)"));
        } else if (t.has_eventpoll()) {
          target = "epollcr poll fd " + fds_text(t.id());
        } else {
          target = FileKindText(t) + " fd " + fds_text(t.id());
        }
      }
      rows.push_back({std::to_string(p.fds(i)), MaskText(p.events(i)), HexText(p.data(i)), list,
                      i < p.queue_ranks_size() ? std::to_string(p.queue_ranks(i)) : "-", target});
    }
    out << AlignedColumns(rows, {true, false, false, false, true, false});
    if (p.ready_order_size() > 0) {
      out << "  ready list (in-memory entries, front first):";
      for (int k = 0; k < p.ready_order_size(); ++k) {
        out << (k == 0 ? " tfd " : ", tfd ") << p.fds(static_cast<int>(p.ready_order(k)));
      }
      out << '\n';
    }
    if (p.kernel_ready_read()) {
      out << "  ready list (kernel entries, front first, as the kernel epoll holds it):";
      for (int k = 0; k < p.kernel_ready_order_size(); ++k) {
        out << (k == 0 ? " tfd " : ", tfd ") << p.fds(static_cast<int>(p.kernel_ready_order(k)));
      }
      out << (p.kernel_ready_order_size() == 0 ? " empty\n" : "\n");
    }
  }
  return out.str();
}

}  // namespace

std::string PsText(const Snapshot& s, const ps::Interposed* interposed) {
  std::ostringstream out;
  std::size_t polls = 0;
  for (std::size_t f = 0; f < s.files.size(); ++f) polls += s.IsEpoll(f) ? 1 : 0;
  out << "process " << s.pid;
  if (!s.command.empty()) out << " (" << s.command << ")";
  out << ": " << (polls == 0 ? "no epolls" : CountText(polls, "epoll", "epolls")) << "; ";
  if (s.kcmp) {
    out << "files told apart with kcmp(2)\n";
  } else {
    out << s.kcmp_unavailable << ": files told apart by inode, targets on shared inodes unverified\n";
  }
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    if (!s.IsEpoll(f)) continue;
    const OpenFile& file = s.files[f];
    out << "\nepoll " << FdsText(s, file) << ": " << CountText(file.entries.size(), "entry", "entries");
    for (std::size_t k = 0; interposed != nullptr && k < file.fds.size(); ++k) {
      if (std::optional<int> poll = ps::PollOfKernelFd(*interposed, s.fds[file.fds[k]].fd)) {
        out << "; the kernel epoll of epollcr poll fd " << *poll << " (data are the library's keys: see below)";
        break;
      }
    }
    const auto watchers = ps::Watchers(s, f);
    for (std::size_t k = 0; k < watchers.size(); ++k) {
      out << (k == 0 ? "; watched by " : ", ") << "epoll fd " << s.FirstFd(s.files[watchers[k].first]).fd
          << " (tfd " << watchers[k].second->line.tfd << ")";
    }
    out << '\n';
    if (file.entries.empty()) continue;
    std::vector<std::vector<std::string>> rows{{"tfd", "events", "data", "list", "target"}};
    for (const Entry& e : file.entries) {
      rows.push_back({std::to_string(e.line.tfd), ps::EventsText(e.line.events), HexText(e.line.data),
                      ps::ListWord(e.line.events), TargetText(s, e)});
    }
    out << AlignedColumns(rows, {true, false, false, false, false});
  }
  if (interposed != nullptr) out << InterposedText(s, *interposed);
  return out.str();
}

}  // namespace epollcr::cli
