#include "commands/inspect.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <set>
#include <sstream>
#include <vector>

#include "command_status.h"
#include "commands/image_index.h"
#include "commands/image_text.h"
#include "commands/input.h"
#include "commands/tcp_text.h"
#include "image/codec.h"

namespace epollcr::cli {
namespace {

// Rows of cells printed in aligned columns, two spaces apart, each line indented by two. Right-aligned columns are
// for numbers.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right) : right_(std::move(right)) {
    rows_.push_back(std::move(header));
  }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  void Print(std::ostream& out) const {
    std::vector<std::size_t> width(right_.size(), 0);
    for (const auto& row : rows_) {
      for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    }
    for (const auto& row : rows_) {
      std::string line;
      for (std::size_t c = 0; c < row.size(); ++c) {
        const std::string pad(width[c] - row[c].size(), ' ');
        line += "  ";
        line += right_[c] ? pad + row[c] : (c + 1 == row.size() ? row[c] : row[c] + pad);
      }
      out << line << '\n';
    }
  }

 private:
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

std::string FileTypeName(std::uint32_t type) {
  switch (type) {
    case S_IFIFO: return "fifo";
    case S_IFCHR: return "character device";
    case S_IFDIR: return "directory";
    case S_IFBLK: return "block device";
    case S_IFREG: return "regular file";
    case S_IFLNK: return "symbolic link";
    case S_IFSOCK: return "socket";
    default: {
      char octal[16];
      std::snprintf(octal, sizeof octal, "0%o", type);
      return std::string("type ") + octal;
    }
  }
}

std::string KindOf(const ImageIndex& index, std::uint64_t id) {
  const v1::File* f = index.File(id);
  return f ? FileKindText(*f) : "not in the image";
}

std::string ListCounts(const std::vector<EntryRow>& rows) {
  std::size_t ready = 0, waiting = 0, disabled = 0, other = 0;
  for (const EntryRow& r : rows) {
    switch (r.list) {
      case v1::ENTRY_LIST_READY: ++ready; break;
      case v1::ENTRY_LIST_WAITING: ++waiting; break;
      case v1::ENTRY_LIST_DISABLED: ++disabled; break;
      default: ++other; break;
    }
  }
  std::string out = CountText(rows.size(), "entry", "entries");
  if (rows.empty()) return out;
  out += ": " + std::to_string(ready) + " ready, " + std::to_string(waiting) + " waiting, " + std::to_string(disabled) +
         " disabled";
  if (other > 0) out += ", " + std::to_string(other) + " on no known list";
  return out;
}

std::string FileState(const ImageIndex& index, const v1::File& f) {
  auto shared = [&](const char* what, std::uint64_t id, bool found) {
    return std::string(what) + " " + std::to_string(id) + (found ? "" : " (not in the image)");
  };
  switch (f.kind_case()) {
    case v1::File::kEventpoll: return ListCounts(EntryRows(f.eventpoll()));
    case v1::File::kEventfd:
      return "count " + std::to_string(f.eventfd().count()) + (f.eventfd().semaphore() ? ", semaphore" : "");
    case v1::File::kPipeRead: return shared("pipe", f.pipe_read().pipe(), index.Pipe(f.pipe_read().pipe()));
    case v1::File::kPipeWrite: return shared("pipe", f.pipe_write().pipe(), index.Pipe(f.pipe_write().pipe()));
    case v1::File::kUnixStream:
      return shared("socket pair", f.unix_stream().pair(), index.Pair(f.unix_stream().pair())) + ", side " +
             std::to_string(f.unix_stream().side());
    case v1::File::kHost: {
      const v1::HostFileReference& h = f.host();
      const std::string file = FileTypeName(h.file_type()) + ", dev " + HexText(h.st_dev()) + ", ino " +
                               std::to_string(h.st_ino());
      if (h.detached()) return "host, detached (its fd " + std::to_string(h.fd()) + " closed, the file open elsewhere), " + file;
      return "host fd " + std::to_string(h.fd()) + ", " + file + ", flags " + HexText(h.open_flags()) + ", offset " +
             std::to_string(h.offset());
    }
    case v1::File::kEmbedder:
      return "kind " + QuotedText(f.embedder().kind()) + ", " +
             CountText(f.embedder().state().size(), "byte", "bytes") + " of state";
    case v1::File::kTcpConnection:
    case v1::File::kTcpListener: return TcpText(f);
    case v1::File::KIND_NOT_SET: return "-";
  }
  return "-";
}

std::string EndText(const v1::SocketEnd& e) {
  std::uint64_t unread = 0;
  for (const v1::Segment& s : e.receive()) unread += s.offset() < s.data().size() ? s.data().size() - s.offset() : 0;
  std::string out = std::string(e.open() ? "open" : "closed") + ", " + CountText(unread, "byte", "bytes") +
                    " unread in " + CountText(static_cast<std::size_t>(e.receive_size()), "segment", "segments") +
                    ", wmem " + std::to_string(e.wmem()) + ", sndbuf " + std::to_string(e.sndbuf()) + ", shutdown " +
                    ShutdownText(e.shutdown());
  if (e.error_reset()) out += ", ECONNRESET pending";
  return out;
}

std::string EntryName(const std::vector<EntryRow>& rows, std::uint32_t at) {
  if (at >= rows.size()) return "entry " + std::to_string(at) + " (no such entry)";
  return "fd " + std::to_string(rows[at].fd) + " (file " + std::to_string(rows[at].file) + ")";
}

void PrintPoll(const ImageIndex& index, const v1::File& f, std::ostream& out) {
  const v1::EventPollState& poll = f.eventpoll();
  const std::vector<EntryRow> rows = EntryRows(poll);
  out << "\neventpoll file " << f.id() << " (" << index.FdsText(f.id())
      << "): " << CountText(rows.size(), "entry", "entries") << '\n';
  if (!rows.empty()) {
    Table table({"fd", "file", "kind", "events", "data", "list", "rank"},
                {true, true, false, false, false, false, true});
    for (const EntryRow& r : rows) {
      std::string list = ListText(r.list);
      if (r.ready_position > 0) list += " " + std::to_string(r.ready_position);
      table.Add({std::to_string(r.fd), std::to_string(r.file), KindOf(index, r.file), MaskText(r.events),
                 HexText(r.data), list, std::to_string(r.queue_rank)});
    }
    table.Print(out);
  }
  out << "  ready order: ";
  if (poll.ready_order_size() == 0) out << "empty";
  for (int k = 0; k < poll.ready_order_size(); ++k) {
    out << (k > 0 ? ", " : "") << EntryName(rows, poll.ready_order(k));
  }
  out << '\n';
}

// A Graphviz label: the lines between double quotes, quotes and backslashes escaped, joined by Graphviz's "\n".
std::string DotLabel(std::initializer_list<std::string> lines) {
  std::string out = "\"";
  bool first = true;
  for (const std::string& line : lines) {
    if (!first) out += "\\n";
    first = false;
    for (char c : line) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

std::string InspectText(const v1::Image& image) {
  const ImageIndex index(image);
  std::ostringstream out;
  if (image.has_header()) {
    const v1::Header& h = image.header();
    out << "header: format " << h.format_major() << "." << h.format_minor() << ", producer " << h.producer() << " "
        << h.producer_version() << ", " << (h.architecture().empty() ? "unknown architecture" : h.architecture())
        << ", " << EndiannessText(h.endianness()) << '\n';
  } else {
    out << "header: missing\n";
  }

  out << "fd table: " << CountText(static_cast<std::size_t>(image.fds_size()), "fd", "fds") << '\n';
  if (image.fds_size() > 0) {
    Table fds({"fd", "file", "kind"}, {true, true, false});
    for (const v1::FdEntry& e : image.fds())
      fds.Add({std::to_string(e.fd()), std::to_string(e.file()), KindOf(index, e.file())});
    fds.Print(out);
  }

  out << "roots: " << (image.roots_size() == 0 ? "none" : std::to_string(image.roots_size())) << '\n';
  if (image.roots_size() > 0) {
    Table roots({"name", "file", "kind"}, {false, true, false});
    for (const v1::Root& r : image.roots())
      roots.Add({QuotedText(r.name()), std::to_string(r.file()), KindOf(index, r.file())});
    roots.Print(out);
  }

  if (image.has_network_lock()) {
    out << "network lock: nftables table inet " << image.network_lock().nftables_table() << '\n';
  }
  out << "files: " << image.files_size() << '\n';
  if (image.files_size() > 0) {
    Table files({"file", "kind", "fds", "state"}, {true, false, false, false});
    for (const v1::File& f : image.files()) {
      files.Add({std::to_string(f.id()), FileKindText(f), index.FdsText(f.id()), FileState(index, f)});
    }
    files.Print(out);
  }

  out << "pipes: " << image.pipes_size() << '\n';
  for (const v1::PipeState& p : image.pipes()) {
    std::uint64_t bytes = 0;
    for (const v1::PipeSlot& s : p.slots()) bytes += s.data().size();
    out << "  pipe " << p.id() << ": read end " << (p.readers() ? "open" : "closed") << ", write end "
        << (p.writers() ? "open" : "closed") << ", " << CountText(bytes, "byte", "bytes") << " in "
        << CountText(static_cast<std::size_t>(p.slots_size()), "slot", "slots") << '\n';
  }

  out << "socket pairs: " << image.socket_pairs_size() << '\n';
  for (const v1::SocketPairState& p : image.socket_pairs()) {
    out << "  socket pair " << p.id() << ", end 0: " << EndText(p.end0()) << '\n';
    out << "  socket pair " << p.id() << ", end 1: " << EndText(p.end1()) << '\n';
  }

  for (const v1::File& f : image.files()) {
    if (f.has_eventpoll()) PrintPoll(index, f, out);
  }
  return out.str();
}

std::string InspectDot(const v1::Image& image) {
  const ImageIndex index(image);
  std::ostringstream out;
  out << "// epollcr inspect --dot: EventPolls (ellipses) and the files they watch (boxes); one edge per entry,\n"
         "// labelled with its fd, events, data and list.\n"
         "digraph epollcr {\n"
         "  node [shape=box];\n";
  std::set<std::uint64_t> watched;
  for (const v1::File& f : image.files()) {
    if (!f.has_eventpoll()) continue;
    for (const EntryRow& r : EntryRows(f.eventpoll())) watched.insert(r.file);
  }
  std::set<std::uint64_t> shown;
  auto node = [&](const v1::File& f) {
    if (!shown.insert(f.id()).second) return;
    out << "  f" << f.id() << " [" << (f.has_eventpoll() ? "shape=ellipse, " : "")
        << "label=" << DotLabel({"file " + std::to_string(f.id()) + ": " + FileKindText(f), index.FdsText(f.id())})
        << "];\n";
  };
  for (const v1::File& f : image.files()) {
    if (f.has_eventpoll()) node(f);
  }
  for (const v1::File& f : image.files()) {
    if (watched.count(f.id())) node(f);
  }
  for (std::uint64_t id : watched) {
    if (!index.File(id)) {
      out << "  f" << id << " [style=dashed, label=" << DotLabel({"file " + std::to_string(id), "not in the image"})
          << "];\n";
    }
  }
  for (const v1::File& f : image.files()) {
    if (!f.has_eventpoll()) continue;
    for (const EntryRow& r : EntryRows(f.eventpoll())) {
      std::string list = ListText(r.list);
      if (r.ready_position > 0) list += " " + std::to_string(r.ready_position);
      out << "  f" << f.id() << " -> f" << r.file << " [label="
          << DotLabel({"fd " + std::to_string(r.fd) + " " + MaskText(r.events) + " " + HexText(r.data), list})
          << "];\n";
    }
  }
  out << "}\n";
  return out.str();
}

CLI::App* AddInspectCommand(CLI::App& app, InspectOptions* options) {
  CLI::App* cmd = app.add_subcommand("inspect", "Show what an image holds");
  cmd->footer(
      "Prints the header, the fd table, the roots, every file with its state, the pipes and socket pairs, and for "
      "each EventPoll a table of its entries: fd, target file, events (IN|OUT|ET|ONESHOT...), data in hex, list "
      "(ready entries numbered in ready-list order) and queue rank. An image that decodes but is invalid is shown, "
      "then reported (exit status 1). See epollcr(1) and docs/cli.md.");
  cmd->add_option("IMAGE", options->path,
                  "An image file (proto), or - for standard input. A JSON image or a Boost archive is accepted too "
                  "and shown as an image (Boost archives are trusted input only)")
      ->required();
  CLI::Option* json = cmd->add_flag("--json", options->json, "Print protobuf's JSON mapping of the image instead");
  CLI::Option* dot = cmd->add_flag(
      "--dot", options->dot, "Print a Graphviz digraph of the EventPolls and the files they watch (nesting) instead");
  json->excludes(dot);
  dot->excludes(json);
  return cmd;
}

int RunInspect(const InspectOptions& options, std::ostream& out, std::ostream& err) {
  Result<Input> input = ReadInput(options.path);
  if (!input.ok()) {
    PrintError(err, input.status());
    return kExitFailure;
  }
  Result<v1::Image> image = DecodeInput(input.value());
  if (!image.ok()) {
    PrintError(err, image.status());
    return kExitFailure;
  }
  // An image of another major version (or without a header) may mean something else by every field: say so, and
  // show nothing. Other invalid images are shown, then reported.
  if (!image.value().has_header() || image.value().header().format_major() != image::kFormatMajor) {
    Status invalid = ValidateImage(input.value().name, image.value());
    if (invalid.ok()) invalid = CommandError(input.value().name, "invalid image: header: unsupported format");
    PrintError(err, invalid);
    return kExitFailure;
  }
  if (options.json) {
    Result<std::string> json = image::ToJson(image.value());
    if (!json.ok()) {
      PrintError(err, CommandError(input.value().name, json.status().message));
      return kExitFailure;
    }
    out << json.value();
    if (json.value().empty() || json.value().back() != '\n') out << '\n';
  } else if (options.dot) {
    out << InspectDot(image.value());
  } else {
    out << InspectText(image.value());
  }
  out.flush();
  if (Status invalid = ValidateImage(input.value().name, image.value()); !invalid.ok()) {
    PrintError(err, invalid);
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace epollcr::cli
