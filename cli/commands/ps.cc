#include "commands/ps.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include "commands/command_status.h"
#include "commands/image_text.h"
#include "commands/output.h"
#include "epollcr/events.h"
#include "epollcr/state.h"
#include "image/codec.h"
#include "image/file.h"

namespace epollcr::cli {
namespace {

using ps::Entry;
using ps::OpenFd;
using ps::OpenFile;
using ps::Snapshot;
using ps::TargetState;

// epoll_ctl(2) adds EPOLLERR|EPOLLHUP to every armed entry's events (fs/eventpoll.c); the image leaves them out.
constexpr std::uint32_t kAlwaysReported = kEventErr | kEventHup;

// ep_item_poll: an entry whose events hold only flag bits is disabled (a one-shot entry after delivery).
bool Disabled(std::uint32_t events) { return (events & ~kEpollPrivateBits) == 0; }

// The events word as inspect shows it: without the bits every armed entry carries.
std::string EventsText(std::uint32_t events) {
  return MaskText(Disabled(events) ? events : events & ~kAlwaysReported);
}

std::string ListWord(std::uint32_t events) { return Disabled(events) ? "disabled" : "armed"; }

// The kernel's dev_t of a fdinfo "sdev:" as major:minor.
std::string DevText(std::uint32_t sdev) { return std::to_string(sdev >> 20) + ":" + std::to_string(sdev & 0xfffff); }

std::string FdsText(const Snapshot& s, const OpenFile& f) {
  std::string out = f.fds.size() == 1 ? "fd " : "fds ";
  for (std::size_t k = 0; k < f.fds.size(); ++k) out += (k > 0 ? ", " : "") + std::to_string(s.fds[f.fds[k]].fd);
  return out;
}

// The epolls that watch file `file`: (the watching epoll's file, the entry).
std::vector<std::pair<std::size_t, const Entry*>> Watchers(const Snapshot& s, std::size_t file) {
  std::vector<std::pair<std::size_t, const Entry*>> out;
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    for (const Entry& e : s.files[f].entries) {
      if (e.target.file == file) out.emplace_back(f, &e);
    }
  }
  return out;
}

const char* StateWord(TargetState state) {
  switch (state) {
    case TargetState::kOpen: return "open";
    case TargetState::kUnverified: return "unverified";
    case TargetState::kClosed: return "closed";
    case TargetState::kReused: return "reused";
  }
  return "?";
}

// What an entry watches, in words: "fd 7: pipe:[123]", "fd 7 (closed; file still open as fd 9): ...".
std::string TargetText(const Snapshot& s, const Entry& e) {
  const std::string tfd = "fd " + std::to_string(e.line.tfd);
  const std::string unseen = s.kcmp ? "not open in this process" : "not found (kcmp unavailable)";
  const std::string inode = "inode " + std::to_string(e.line.ino) + " on " + DevText(e.line.sdev);
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

// ---- JSON -----------------------------------------------------------------------------------------------------------

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) {
      out += c;  // other bytes as they are: paths are bytes, and JSON is UTF-8
      continue;
    }
    char esc[8];
    std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(c));
    out += esc;
  }
  return out + "\"";
}

std::string JsonFds(const Snapshot& s, const OpenFile* f) {
  std::string out = "[";
  for (std::size_t k = 0; f && k < f->fds.size(); ++k) out += (k > 0 ? ", " : "") + std::to_string(s.fds[f->fds[k]].fd);
  return out + "]";
}

void JsonEntry(const Snapshot& s, const Entry& e, std::ostream& out) {
  const OpenFile* file = e.target.file ? &s.files[*e.target.file] : nullptr;
  out << "        {\n"
      << "          \"tfd\": " << e.line.tfd << ",\n"
      << "          \"events\": " << JsonString(EventsText(e.line.events)) << ",\n"
      << "          \"events_word\": " << JsonString(HexText(e.line.events)) << ",\n"
      << "          \"data\": " << JsonString(HexText(e.line.data)) << ",\n"
      << "          \"list\": " << JsonString(ListWord(e.line.events)) << ",\n"
      << "          \"target\": {\n"
      << "            \"state\": " << JsonString(StateWord(e.target.state)) << ",\n"
      << "            \"fds\": " << JsonFds(s, file) << ",\n";
  if (file) out << "            \"link\": " << JsonString(s.FirstFd(*file).link) << ",\n";
  out << "            \"epoll\": " << (file && s.FirstFd(*file).epoll ? "true" : "false") << ",\n"
      << "            \"ino\": " << e.line.ino << ",\n"
      << "            \"dev\": " << JsonString(DevText(e.line.sdev)) << ",\n"
      << "            \"pos\": " << e.line.pos << "\n"
      << "          }\n"
      << "        }";
}

// ---- the image ------------------------------------------------------------------------------------------------------

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
  StatusOr<v1::Image> captured = image::Capture(empty);  // the header every epollcr image carries
  if (captured.ok()) *image->mutable_header() = captured.value.header();
  image->mutable_header()->set_format_major(image::kFormatMajor);
  image->mutable_header()->set_format_minor(image::kFormatMinor);
}

}  // namespace

std::string PsText(const Snapshot& s) {
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
    const auto watchers = Watchers(s, f);
    for (std::size_t k = 0; k < watchers.size(); ++k) {
      out << (k == 0 ? "; watched by " : ", ") << "epoll fd " << s.FirstFd(s.files[watchers[k].first]).fd
          << " (tfd " << watchers[k].second->line.tfd << ")";
    }
    out << '\n';
    if (file.entries.empty()) continue;
    std::vector<std::vector<std::string>> rows{{"tfd", "events", "data", "list", "target"}};
    for (const Entry& e : file.entries) {
      rows.push_back({std::to_string(e.line.tfd), EventsText(e.line.events), HexText(e.line.data),
                      ListWord(e.line.events), TargetText(s, e)});
    }
    out << AlignedColumns(rows, {true, false, false, false, false});
  }
  return out.str();
}

std::string PsJson(const Snapshot& s) {
  std::ostringstream out;
  out << "{\n"
      << "  \"pid\": " << s.pid << ",\n"
      << "  \"command\": " << JsonString(s.command) << ",\n"
      << "  \"kcmp\": " << (s.kcmp ? "true" : "false") << ",\n";
  if (!s.kcmp) out << "  \"kcmp_unavailable\": " << JsonString(s.kcmp_unavailable) << ",\n";
  out << "  \"epolls\": [";
  bool first_poll = true;
  for (std::size_t f = 0; f < s.files.size(); ++f) {
    if (!s.IsEpoll(f)) continue;
    const OpenFile& file = s.files[f];
    out << (first_poll ? "\n" : ",\n") << "    {\n"
        << "      \"fds\": " << JsonFds(s, &file) << ",\n"
        << "      \"watched_by\": [";
    first_poll = false;
    const auto watchers = Watchers(s, f);
    for (std::size_t k = 0; k < watchers.size(); ++k) {
      out << (k > 0 ? ", " : "") << "{\"epoll_fd\": " << s.FirstFd(s.files[watchers[k].first]).fd
          << ", \"tfd\": " << watchers[k].second->line.tfd << "}";
    }
    out << "],\n      \"entries\": [";
    for (std::size_t k = 0; k < file.entries.size(); ++k) {
      out << (k > 0 ? ",\n" : "\n");
      JsonEntry(s, file.entries[k], out);
    }
    out << (file.entries.empty() ? "]\n" : "\n      ]\n") << "    }";
  }
  out << (first_poll ? "]\n" : "\n  ]\n") << "}\n";
  return out.str();
}

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

CLI::App* AddPsCommand(CLI::App& app, PsOptions* options) {
  CLI::App* cmd = app.add_subcommand("ps", "Show the kernel epolls of a live process");
  cmd->footer(
      "Reads /proc/PID/fd and /proc/PID/fdinfo (which needs ptrace access to the process: its user, or root) and "
      "prints each epoll the process holds with its entries: the fd each was registered under and what it watches "
      "(socket:[ino], pipe:[ino], anon_inode:[eventfd], a path; a registration fd since closed or reused is shown "
      "as such), events (IN|OUT|ET|ONESHOT...; a fired one-shot entry is disabled), data in hex, and which epolls "
      "watch which. Files are told apart with kcmp(2) where it is allowed. The kernel does not show which entries "
      "are ready. See epollcr(1) and docs/cli.md.");
  cmd->add_option("PID", options->pid, "The process id")->required();
  cmd->add_flag("--json", options->json, "Print a JSON document instead of the text (docs/cli.md gives its shape)");
  cmd->add_option("--image", options->image,
                  "Also write what was seen as an epollcr image (host-file references for what the epolls watch), "
                  "for inspect, verify, diff and convert; - writes the image to standard output instead of the text");
  return cmd;
}

int RunPs(const PsOptions& options, std::ostream& out, std::ostream& err) {
  const std::optional<pid_t> pid = ps::ParsePid(options.pid);
  if (!pid) {
    PrintError(err,
               {"usage", "ps: PID must be a process id (a positive decimal number), not " + QuotedText(options.pid)});
    return kExitUsage;
  }
  if (options.image == "-" && options.json) {
    PrintError(err, {"usage", "ps: --image - writes the image to standard output, so --json cannot go there too"});
    return kExitUsage;
  }
  Outcome<Snapshot> snapshot = ps::ReadSnapshot(*pid);
  if (!snapshot.ok()) {
    PrintError(err, *snapshot.error);
    return snapshot.error->exit_status;
  }
  if (options.image != "-") {
    out << (options.json ? PsJson(snapshot.value) : PsText(snapshot.value));
    out.flush();
  }
  if (options.image.empty()) return kExitOk;

  const std::string what = "ps: " + options.pid;
  const v1::Image image = PsImage(snapshot.value);
  if (Status valid = image::Validate(image); !valid.ok()) {
    PrintError(err, {what, "the image would be invalid: " + valid.message});
    return kExitFailure;
  }
  StatusOr<std::string> payload = image::Encode(image);
  if (!payload.ok()) {
    PrintError(err, {OutputName(options.image), payload.status.message});
    return kExitFailure;
  }
  if (options.image == "-") {
    if (std::optional<CommandError> e = WriteOutput("-", image::Frame(payload.value))) {
      PrintError(err, *e);
      return kExitFailure;
    }
  } else if (image::ImageError e = image::WriteImageFile(options.image, payload.value)) {
    PrintError(err, {options.image, e.message});
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace epollcr::cli
