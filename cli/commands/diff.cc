#include "commands/diff.h"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>

#include "command_status.h"
#include "commands/image_index.h"
#include "commands/image_text.h"
#include "commands/input.h"
#include "commands/tcp_text.h"

namespace epollcr::cli {
namespace {

using Lines = std::vector<std::string>;

std::string YesNo(bool b) { return b ? "yes" : "no"; }

std::string NoneIfZero(const std::string& mask) { return mask == "0" ? "none" : mask; }

// Adds "<prefix>: <what> <before> -> <after>" when the two differ.
template <typename T>
void Change(Lines& lines, const std::string& prefix, const std::string& what, const T& before, const T& after) {
  if (before == after) return;
  if constexpr (std::is_same_v<T, std::string>) {
    lines.push_back(prefix + ": " + what + " " + before + " -> " + after);
  } else {
    lines.push_back(prefix + ": " + what + " " + std::to_string(before) + " -> " + std::to_string(after));
  }
}

void DiffHeader(const v1::Image& a, const v1::Image& b, Lines& lines) {
  const v1::Header& x = a.header();
  const v1::Header& y = b.header();
  const std::string p = "header";
  Change(lines, p, "format", std::to_string(x.format_major()) + "." + std::to_string(x.format_minor()),
         std::to_string(y.format_major()) + "." + std::to_string(y.format_minor()));
  Change(lines, p, "producer", QuotedText(x.producer()), QuotedText(y.producer()));
  Change(lines, p, "producer version", QuotedText(x.producer_version()), QuotedText(y.producer_version()));
  Change(lines, p, "architecture", QuotedText(x.architecture()), QuotedText(y.architecture()));
  Change(lines, p, "endianness", EndiannessText(x.endianness()), EndiannessText(y.endianness()));
  const auto lock = [](const v1::Image& i) -> std::string {
    return i.has_network_lock() ? i.network_lock().nftables_table() : "none";
  };
  Change(lines, "network lock", "nftables table", lock(a), lock(b));
}

std::string FileAndKind(const ImageIndex& index, std::uint64_t id) {
  const v1::File* f = index.File(id);
  return "file " + std::to_string(id) + ", " + (f ? FileKindText(*f) : "not in the image");
}

// Two maps of name -> file id (the fd table, or the roots), compared key by key.
template <typename Key>
void DiffNames(const std::map<Key, std::uint64_t>& a, const std::map<Key, std::uint64_t>& b, const ImageIndex& ia,
               const ImageIndex& ib, const std::function<std::string(const Key&)>& name, Lines& lines) {
  std::set<Key> keys;
  for (const auto& [k, v] : a) keys.insert(k);
  for (const auto& [k, v] : b) keys.insert(k);
  for (const Key& k : keys) {
    auto x = a.find(k);
    auto y = b.find(k);
    if (x == a.end()) {
      lines.push_back(name(k) + ": added (" + FileAndKind(ib, y->second) + ")");
    } else if (y == b.end()) {
      lines.push_back(name(k) + ": removed (was " + FileAndKind(ia, x->second) + ")");
    } else if (x->second != y->second) {
      lines.push_back(name(k) + ": file " + std::to_string(x->second) + " -> file " + std::to_string(y->second));
    }
  }
}

using EntryKey = std::pair<std::uint64_t, std::int32_t>;  // (file id, fd): an entry's identity in a poll

std::string EntryText(const EntryKey& k) {
  return "entry fd " + std::to_string(k.second) + " (file " + std::to_string(k.first) + ")";
}

std::string EntrySummary(const EntryRow& r) {
  return MaskText(r.events) + ", data " + HexText(r.data) + ", " + ListText(r.list);
}

std::string ReadyOrderText(const v1::EventPollState& poll, const std::vector<EntryRow>& rows) {
  std::string out = "[";
  for (int k = 0; k < poll.ready_order_size(); ++k) {
    const std::uint32_t at = poll.ready_order(k);
    if (k > 0) out += ", ";
    out += at < rows.size() ? "fd " + std::to_string(rows[at].fd) + " (file " + std::to_string(rows[at].file) + ")"
                            : "entry " + std::to_string(at) + " (no such entry)";
  }
  return out + "]";
}

void DiffPoll(std::uint64_t id, const v1::EventPollState& a, const v1::EventPollState& b, Lines& lines) {
  const std::string p = "poll " + std::to_string(id);
  const std::vector<EntryRow> ra = EntryRows(a);
  const std::vector<EntryRow> rb = EntryRows(b);
  std::map<EntryKey, const EntryRow*> ma, mb;
  for (const EntryRow& r : ra) ma.emplace(EntryKey{r.file, r.fd}, &r);
  for (const EntryRow& r : rb) mb.emplace(EntryKey{r.file, r.fd}, &r);
  std::set<EntryKey> keys;
  for (const auto& [k, r] : ma) keys.insert(k);
  for (const auto& [k, r] : mb) keys.insert(k);
  for (const EntryKey& k : keys) {
    auto x = ma.find(k);
    auto y = mb.find(k);
    const std::string e = p + ": " + EntryText(k);
    if (x == ma.end()) {
      lines.push_back(e + ": added (" + EntrySummary(*y->second) + ")");
      continue;
    }
    if (y == mb.end()) {
      lines.push_back(e + ": removed (was " + EntrySummary(*x->second) + ")");
      continue;
    }
    const EntryRow& u = *x->second;
    const EntryRow& v = *y->second;
    Change(lines, e, "events", NoneIfZero(EventBitsText(u.events)), NoneIfZero(EventBitsText(v.events)));
    Change(lines, e, "flags", NoneIfZero(FlagBitsText(u.events)), NoneIfZero(FlagBitsText(v.events)));
    Change(lines, e, "data", HexText(u.data), HexText(v.data));
    Change(lines, e, "list", ListText(u.list), ListText(v.list));
    Change(lines, e, "queue rank", u.queue_rank, v.queue_rank);
  }
  Change(lines, p, "ready order", ReadyOrderText(a, ra), ReadyOrderText(b, rb));
}

void DiffFile(const v1::File& a, const v1::File& b, Lines& lines) {
  const std::string p = "file " + std::to_string(a.id()) + " (" + FileKindText(a) + ")";
  if (a.kind_case() != b.kind_case()) {
    lines.push_back("file " + std::to_string(a.id()) + ": kind " + FileKindText(a) + " -> " + FileKindText(b));
    return;
  }
  switch (a.kind_case()) {
    case v1::File::kEventpoll: DiffPoll(a.id(), a.eventpoll(), b.eventpoll(), lines); break;
    case v1::File::kEventfd:
      Change(lines, p, "count", a.eventfd().count(), b.eventfd().count());
      Change(lines, p, "semaphore", YesNo(a.eventfd().semaphore()), YesNo(b.eventfd().semaphore()));
      break;
    case v1::File::kPipeRead: Change(lines, p, "pipe", a.pipe_read().pipe(), b.pipe_read().pipe()); break;
    case v1::File::kPipeWrite: Change(lines, p, "pipe", a.pipe_write().pipe(), b.pipe_write().pipe()); break;
    case v1::File::kUnixStream:
      Change(lines, p, "socket pair", a.unix_stream().pair(), b.unix_stream().pair());
      Change(lines, p, "side", a.unix_stream().side(), b.unix_stream().side());
      break;
    case v1::File::kHost: {
      const v1::HostFileReference& x = a.host();
      const v1::HostFileReference& y = b.host();
      Change(lines, p, "host fd", x.fd(), y.fd());
      Change(lines, p, "dev", HexText(x.st_dev()), HexText(y.st_dev()));
      Change(lines, p, "ino", x.st_ino(), y.st_ino());
      Change(lines, p, "file type", HexText(x.file_type()), HexText(y.file_type()));
      Change(lines, p, "flags", HexText(x.open_flags()), HexText(y.open_flags()));
      Change(lines, p, "offset", x.offset(), y.offset());
      Change(lines, p, "detached", std::string(x.detached() ? "yes" : "no"), std::string(y.detached() ? "yes" : "no"));
      break;
    }
    case v1::File::kEmbedder:
      Change(lines, p, "kind", QuotedText(a.embedder().kind()), QuotedText(b.embedder().kind()));
      if (a.embedder().state() != b.embedder().state()) {
        lines.push_back(p + ": state " + CountText(a.embedder().state().size(), "byte", "bytes") + " -> " +
                        CountText(b.embedder().state().size(), "byte", "bytes") + " (contents differ)");
      }
      break;
    case v1::File::kTcpConnection:
    case v1::File::kTcpListener: {
      const Fields x = TcpFields(a), y = TcpFields(b);  // the same names in the same order for one kind
      for (std::size_t i = 0; i < x.size(); ++i) Change(lines, p, x[i].first, x[i].second, y[i].second);
      break;
    }
    case v1::File::KIND_NOT_SET: break;
  }
}

// A queue of data (pipe slots, socket segments): a summary, and whether the contents are equal.
template <typename Repeated, typename Unread>
std::string QueueText(const Repeated& items, Unread unread, const char* one, const char* many) {
  std::uint64_t bytes = 0;
  for (const auto& item : items) bytes += unread(item);
  return CountText(bytes, "byte", "bytes") + " in " + CountText(static_cast<std::size_t>(items.size()), one, many);
}

template <typename Repeated>
bool SameItems(const Repeated& a, const Repeated& b) {
  if (a.size() != b.size()) return false;
  for (int i = 0; i < a.size(); ++i) {
    if (a.Get(i).SerializeAsString() != b.Get(i).SerializeAsString()) return false;
  }
  return true;
}

template <typename Repeated, typename Unread>
void DiffQueue(Lines& lines, const std::string& p, const std::string& what, const Repeated& a, const Repeated& b,
               Unread unread, const char* one, const char* many) {
  if (SameItems(a, b)) return;
  const std::string x = QueueText(a, unread, one, many);
  const std::string y = QueueText(b, unread, one, many);
  if (x != y) {
    lines.push_back(p + ": " + what + " " + x + " -> " + y);
  } else {
    lines.push_back(p + ": " + what + " contents differ (" + x + ")");
  }
}

void DiffPipe(const v1::PipeState& a, const v1::PipeState& b, Lines& lines) {
  const std::string p = "pipe " + std::to_string(a.id());
  auto open = [](std::uint32_t n) { return std::string(n ? "open" : "closed"); };
  Change(lines, p, "read end", open(a.readers()), open(b.readers()));
  Change(lines, p, "write end", open(a.writers()), open(b.writers()));
  DiffQueue(
      lines, p, "buffer", a.slots(), b.slots(), [](const v1::PipeSlot& s) { return s.data().size(); }, "slot", "slots");
}

void DiffEnd(const std::string& p, const v1::SocketEnd& a, const v1::SocketEnd& b, Lines& lines) {
  Change(lines, p, "open", YesNo(a.open()), YesNo(b.open()));
  Change(lines, p, "shutdown", ShutdownText(a.shutdown()), ShutdownText(b.shutdown()));
  Change(lines, p, "ECONNRESET pending", YesNo(a.error_reset()), YesNo(b.error_reset()));
  Change(lines, p, "wmem", a.wmem(), b.wmem());
  Change(lines, p, "sndbuf", a.sndbuf(), b.sndbuf());
  DiffQueue(
      lines, p, "receive queue", a.receive(), b.receive(),
      [](const v1::Segment& s) { return s.offset() < s.data().size() ? s.data().size() - s.offset() : 0; }, "segment",
      "segments");
}

// Objects of one kind matched by id: added, removed, or compared with `same`.
template <typename T, typename Compare>
void DiffById(const google::protobuf::RepeatedPtrField<T>& a, const google::protobuf::RepeatedPtrField<T>& b,
              const std::string& what, const std::function<std::string(const T&)>& describe, Compare compare,
              Lines& lines) {
  std::map<std::uint64_t, const T*> ma, mb;
  for (const T& x : a) ma.emplace(x.id(), &x);
  for (const T& x : b) mb.emplace(x.id(), &x);
  std::set<std::uint64_t> ids;
  for (const auto& [id, x] : ma) ids.insert(id);
  for (const auto& [id, x] : mb) ids.insert(id);
  for (std::uint64_t id : ids) {
    auto x = ma.find(id);
    auto y = mb.find(id);
    const std::string name = what + " " + std::to_string(id);
    if (x == ma.end()) {
      lines.push_back(name + ": added (" + describe(*y->second) + ")");
    } else if (y == mb.end()) {
      lines.push_back(name + ": removed (was " + describe(*x->second) + ")");
    } else {
      compare(*x->second, *y->second, lines);
    }
  }
}

}  // namespace

std::vector<std::string> DiffImages(const v1::Image& a, const v1::Image& b) {
  const ImageIndex ia(a);
  const ImageIndex ib(b);
  Lines lines;
  DiffHeader(a, b, lines);

  std::map<int, std::uint64_t> fa, fb;
  for (const v1::FdEntry& e : a.fds()) fa.emplace(e.fd(), e.file());
  for (const v1::FdEntry& e : b.fds()) fb.emplace(e.fd(), e.file());
  DiffNames<int>(
      fa, fb, ia, ib, [](const int& fd) { return "fd " + std::to_string(fd); }, lines);

  std::map<std::string, std::uint64_t> ra, rb;
  for (const v1::Root& r : a.roots()) ra.emplace(r.name(), r.file());
  for (const v1::Root& r : b.roots()) rb.emplace(r.name(), r.file());
  DiffNames<std::string>(
      ra, rb, ia, ib, [](const std::string& n) { return "root " + QuotedText(n); }, lines);

  DiffById<v1::File>(
      a.files(), b.files(), "file", [](const v1::File& f) { return FileKindText(f); },
      [](const v1::File& x, const v1::File& y, Lines& out) { DiffFile(x, y, out); }, lines);
  DiffById<v1::PipeState>(
      a.pipes(), b.pipes(), "pipe",
      [](const v1::PipeState& p) { return CountText(static_cast<std::size_t>(p.slots_size()), "slot", "slots"); },
      [](const v1::PipeState& x, const v1::PipeState& y, Lines& out) { DiffPipe(x, y, out); }, lines);
  DiffById<v1::SocketPairState>(
      a.socket_pairs(), b.socket_pairs(), "socket pair",
      [](const v1::SocketPairState&) { return std::string("a socket pair"); },
      [](const v1::SocketPairState& x, const v1::SocketPairState& y, Lines& out) {
        const std::string p = "socket pair " + std::to_string(x.id());
        DiffEnd(p + ", end 0", x.end0(), y.end0(), out);
        DiffEnd(p + ", end 1", x.end1(), y.end1(), out);
      },
      lines);
  return lines;
}

CLI::App* AddDiffCommand(CLI::App& app, DiffOptions* options) {
  CLI::App* cmd = app.add_subcommand("diff", "Show what differs between two images");
  cmd->footer(
      "One line per difference: header, fd table, roots, files, each EventPoll's entries (matched by file id and fd: "
      "added, removed, changed events, flags, data, list, queue rank; and the ready order), pipes and socket pairs. "
      "Objects are matched by object id. Exit status 0 when the images are equal (nothing printed), 1 when they "
      "differ or an input is unreadable or invalid (a message on stderr).");
  cmd->add_option("A", options->a,
                  "The first image: a proto image, a JSON image or a Boost archive (trusted input only), or - for "
                  "standard input")
      ->required();
  cmd->add_option("B", options->b, "The second image, in any of the same forms")->required();
  return cmd;
}

int RunDiff(const DiffOptions& options, std::ostream& out, std::ostream& err) {
  if (options.a == "-" && options.b == "-") {
    PrintError(err, CommandError("usage", "diff: only one of A and B can be standard input"));
    return kExitUsage;
  }
  v1::Image images[2];
  const std::string* paths[2] = {&options.a, &options.b};
  for (int i = 0; i < 2; ++i) {
    Result<Input> input = ReadInput(*paths[i]);
    if (!input.ok()) {
      PrintError(err, input.status());
      return kExitFailure;
    }
    Result<v1::Image> image = InputImage(input.value());
    if (!image.ok()) {
      PrintError(err, image.status());
      return kExitFailure;
    }
    images[i] = std::move(image.value());
  }
  const std::vector<std::string> lines = DiffImages(images[0], images[1]);
  for (const std::string& line : lines) out << line << '\n';
  return lines.empty() ? kExitOk : kExitFailure;
}

}  // namespace epollcr::cli
