#include "image_codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>

#include <climits>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "epollcr/version.h"
#include "state/after_load.h"
#include "state/snapshot.h"

namespace epollcr::image {

namespace {

using state::FieldOf;
using state::LoadError;

// ---- capture ---------------------------------------------------------------------------------------------------------

void CapturePipe(PipeBuffer& pipe, v1::PipeState* out) {
  std::lock_guard lock(pipe.state_mutex());
  for (const PipeBuffer::Slot& s : FieldOf<std::deque<PipeBuffer::Slot>>(pipe, "slots")) {
    v1::PipeSlot* slot = out->add_slots();
    slot->set_offset(s.offset);
    slot->set_data(reinterpret_cast<const char*>(s.page.get()) + s.offset, s.len);
  }
  out->set_readers(static_cast<std::uint32_t>(FieldOf<int>(pipe, "readers")));
  out->set_writers(static_cast<std::uint32_t>(FieldOf<int>(pipe, "writers")));
}

void CaptureEnd(SocketPairState::End& end, v1::SocketEnd* out) {
  for (const SocketPairState::Segment& s : FieldOf<std::deque<SocketPairState::Segment>>(end, "receive")) {
    v1::Segment* seg = out->add_receive();
    seg->set_data(reinterpret_cast<const char*>(s.data.data()), s.data.size());
    seg->set_offset(s.offset);
    seg->set_truesize(s.truesize);
  }
  out->set_wmem(FieldOf<std::int64_t>(end, "wmem"));
  out->set_sndbuf(FieldOf<std::int64_t>(end, "sndbuf"));
  out->set_shutdown(static_cast<std::uint32_t>(FieldOf<int>(end, "shutdown")));
  out->set_error_reset(FieldOf<bool>(end, "error_reset"));
  out->set_open(FieldOf<bool>(end, "open"));
}

void CapturePair(SocketPairState& pair, v1::SocketPairState* out) {
  std::lock_guard lock(pair.state_mutex());
  CaptureEnd(FieldOf<SocketPairState::End>(pair, "end0"), out->mutable_end0());
  CaptureEnd(FieldOf<SocketPairState::End>(pair, "end1"), out->mutable_end1());
}

void CapturePoll(state::Snapshot& snap, state::PollCut& cut, v1::EventPollState* out) {
  for (std::uint32_t rank : cut.ranks) out->add_queue_ranks(rank);
  for (PollEntry* e : cut.entries) {
    out->add_files(snap.ids().Of(e->file));
    out->add_fds(e->fd);
    const bool disabled = e->list == EntryList::kDisabled;
    out->add_events(disabled ? e->events : e->events & ~kAlwaysReported);
    out->add_data(e->data);
    out->add_lists(e->list == EntryList::kReady      ? v1::ENTRY_LIST_READY
                   : e->list == EntryList::kDisabled ? v1::ENTRY_LIST_DISABLED
                                                     : v1::ENTRY_LIST_WAITING);
  }
  for (std::uint32_t i : cut.ready) out->add_ready_order(i);
}

void CaptureFile(state::Snapshot& snap, std::size_t i, std::size_t* next_poll, v1::File* out) {
  File* f = snap.files()[i].get();
  const std::string& kind = snap.kinds()[i];
  out->set_id(i + 1);
  if (auto* e = dynamic_cast<EventFd*>(f)) {
    std::lock_guard lock(e->state_mutex());
    out->mutable_eventfd()->set_count(FieldOf<std::uint64_t>(*e, "count"));
    out->mutable_eventfd()->set_semaphore(FieldOf<bool>(*e, "semaphore"));
  } else if (auto* r = dynamic_cast<PipeReadEnd*>(f)) {
    out->mutable_pipe_read()->set_pipe(snap.ids().Of(r->pipe().get()));
  } else if (auto* w = dynamic_cast<PipeWriteEnd*>(f)) {
    out->mutable_pipe_write()->set_pipe(snap.ids().Of(w->pipe().get()));
  } else if (auto* s = dynamic_cast<UnixSocket*>(f)) {
    out->mutable_unix_stream()->set_pair(snap.ids().Of(s->pair().get()));
    out->mutable_unix_stream()->set_side(static_cast<std::uint32_t>(s->side()));
  } else if (dynamic_cast<EventPoll*>(f)) {
    CapturePoll(snap, snap.polls()[(*next_poll)++], out->mutable_eventpoll());
  } else {
    out->mutable_embedder()->set_kind(kind);
    out->mutable_embedder()->set_state(snap.custom_states()[i]);
  }
}

void CaptureAll(state::Snapshot& snap, v1::Image* image) {
  v1::Header* h = image->mutable_header();
  h->set_format_major(kFormatMajor);
  h->set_format_minor(kFormatMinor);
  h->set_producer("epollcr");
  h->set_producer_version(kVersion);
#if defined(__x86_64__)
  h->set_architecture("x86_64");
#elif defined(__aarch64__)
  h->set_architecture("aarch64");
#else
  h->set_architecture("unknown");
#endif
  h->set_endianness(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? v1::ENDIANNESS_LITTLE : v1::ENDIANNESS_BIG);
  for (const auto& [fd, file] : snap.fds()) {
    v1::FdEntry* e = image->add_fds();
    e->set_fd(fd);
    e->set_file(snap.ids().Of(file.get()));
  }
  for (const auto& [name, file] : snap.roots()) {
    v1::Root* r = image->add_roots();
    r->set_name(name);
    r->set_file(snap.ids().Of(file.get()));
  }
  for (const state::Snapshot::Shared& s : snap.shared()) {
    if (s.pipe) {
      v1::PipeState* p = image->add_pipes();
      p->set_id(s.id);
      CapturePipe(*s.pipe, p);
    } else {
      v1::SocketPairState* p = image->add_socket_pairs();
      p->set_id(s.id);
      CapturePair(*s.pair, p);
    }
  }
  std::size_t next_poll = 0;
  for (std::size_t i = 0; i < snap.files().size(); ++i) CaptureFile(snap, i, &next_poll, image->add_files());
}

}  // namespace

StatusOr<v1::Image> Capture(const World& world) {
  v1::Image image;
  Status s;
  try {
    s = state::WithSnapshot(world, [&](state::Snapshot& snap) { CaptureAll(snap, &image); });
  } catch (const std::exception& e) {
    s = Status::Error(EIO, std::string("capture: ") + e.what());
  }
  if (s) return {s, {}};
  return {{}, std::move(image)};
}

// ---- validation ------------------------------------------------------------------------------------------------------

namespace {

constexpr const char* kBuiltInKinds[] = {"eventpoll", "eventfd", "pipe-read", "pipe-write", "unix-stream"};

class Validator {
 public:
  Validator(const v1::Image& image, const Limits& limits) : image_(image), limits_(limits) {}

  Status Run() {
    if (!image_.has_header()) return Fail("header: missing");
    if (image_.header().format_major() != kFormatMajor) {
      return Fail("header: format " + std::to_string(image_.header().format_major()) + "." +
                  std::to_string(image_.header().format_minor()) + " (this build reads " +
                  std::to_string(kFormatMajor) + ".x)");
    }
    const std::uint64_t objects = static_cast<std::uint64_t>(image_.pipes_size()) + image_.socket_pairs_size() +
                                  image_.files_size() + image_.fds_size() + image_.roots_size();
    if (objects > limits_.max_objects) return Fail("the image has " + std::to_string(objects) + " objects, beyond the limit");
    for (const v1::PipeState& p : image_.pipes()) {
      if (Status s = NewId(p.id(), "pipe")) return s;
      if (Status s = CheckPipe(p)) return s;
    }
    for (const v1::SocketPairState& p : image_.socket_pairs()) {
      if (Status s = NewId(p.id(), "socket pair")) return s;
      for (const v1::SocketEnd* e : {&p.end0(), &p.end1()}) {
        if (Status s = CheckEnd(p.id(), *e)) return s;
      }
    }
    for (const v1::File& f : image_.files()) {
      if (Status s = NewId(f.id(), "file")) return s;
      files_[f.id()] = &f;
    }
    for (const v1::File& f : image_.files()) {
      if (Status s = CheckFile(f)) return s;
    }
    if (Status s = CheckEnds()) return s;
    if (Status s = CheckNesting()) return s;
    std::set<int> fds;
    for (const v1::FdEntry& e : image_.fds()) {
      const std::string where = "fd " + std::to_string(e.fd());
      if (e.fd() < 0) return Fail(where + ": negative");
      if (!fds.insert(e.fd()).second) return Fail(where + ": repeated");
      if (!files_.count(e.file())) return Fail(where + ": file " + std::to_string(e.file()) + " is not in the image");
    }
    std::set<std::string> names;
    for (const v1::Root& r : image_.roots()) {
      if (r.name().empty() || !names.insert(r.name()).second) return Fail("root '" + r.name() + "': empty or repeated name");
      if (!files_.count(r.file())) return Fail("root " + r.name() + ": file " + std::to_string(r.file()) + " is not in the image");
    }
    return {};
  }

 private:
  static Status Fail(std::string message) { return Status::Error(EINVAL, std::move(message)); }

  Status NewId(std::uint64_t id, const char* what) {
    if (id == 0) return Fail(std::string(what) + " with object id 0");
    if (!ids_.insert(id).second) return Fail(std::string(what) + " " + std::to_string(id) + ": object id repeated");
    return {};
  }

  Status CheckPipe(const v1::PipeState& p) {
    const std::string where = "pipe " + std::to_string(p.id());
    if (p.slots_size() > 16) return Fail(where + ": " + std::to_string(p.slots_size()) + " slots (at most 16)");
    for (int i = 0; i < p.slots_size(); ++i) {
      const v1::PipeSlot& s = p.slots(i);
      if (s.data().empty() || s.offset() > 4096 || s.data().size() > 4096 - s.offset()) {
        return Fail(where + ", slot " + std::to_string(i) + ": empty or outside its 4096-byte page");
      }
    }
    if (p.readers() > 1 || p.writers() > 1) return Fail(where + ": readers and writers must be 0 or 1");
    pipes_[p.id()] = &p;
    return {};
  }

  Status CheckEnd(std::uint64_t pair, const v1::SocketEnd& e) {
    const std::string where = "socket pair " + std::to_string(pair);
    if (e.sndbuf() < 4608 || e.sndbuf() > (std::int64_t{1} << 31)) return Fail(where + ": send buffer size out of range");
    if (e.wmem() < 0 || e.wmem() > (std::int64_t{1} << 32)) return Fail(where + ": send charge out of range");
    if (e.shutdown() > 3) return Fail(where + ": shutdown bits out of range");
    for (int i = 0; i < e.receive_size(); ++i) {
      const v1::Segment& s = e.receive(i);
      if (s.data().empty() || s.data().size() > limits_.max_segment_bytes || s.offset() >= s.data().size() ||
          s.truesize() <= 0) {
        return Fail(where + ", segment " + std::to_string(i) + ": empty, too large, consumed or without a size");
      }
    }
    pairs_.insert(pair);
    return {};
  }

  Status CheckFile(const v1::File& f) {
    const std::string where = "file " + std::to_string(f.id());
    switch (f.kind_case()) {
      case v1::File::kEventfd:
        if (f.eventfd().count() > 0xfffffffffffffffeULL) return Fail(where + ": eventfd counter out of range");
        return {};
      case v1::File::kPipeRead:
      case v1::File::kPipeWrite: {
        const std::uint64_t pipe = f.has_pipe_read() ? f.pipe_read().pipe() : f.pipe_write().pipe();
        if (!pipes_.count(pipe)) return Fail(where + ": pipe " + std::to_string(pipe) + " is not in the image");
        if (!ends_.insert({pipe, f.has_pipe_read() ? 1 : 2}).second) return Fail(where + ": a second file for the same pipe end");
        return {};
      }
      case v1::File::kUnixStream: {
        const v1::UnixStreamState& s = f.unix_stream();
        if (!pairs_.count(s.pair())) return Fail(where + ": socket pair " + std::to_string(s.pair()) + " is not in the image");
        if (s.side() > 1) return Fail(where + ": side must be 0 or 1");
        if (!ends_.insert({s.pair(), 1 << s.side()}).second) return Fail(where + ": a second file for the same socket end");
        return {};
      }
      case v1::File::kEventpoll:
        return CheckPoll(f.id(), f.eventpoll());
      case v1::File::kHost:
        return Fail(where + ": host file references need a resolver, which this build does not have yet");
      case v1::File::kEmbedder:
        for (const char* b : kBuiltInKinds) {
          if (f.embedder().kind() == b) return Fail(where + ": embedder kind '" + b + "' is a built-in kind");
        }
        if (f.embedder().kind().empty()) return Fail(where + ": embedder file without a kind");
        return {};
      case v1::File::KIND_NOT_SET:
        break;
    }
    return Fail(where + ": no kind");
  }

  Status CheckPoll(std::uint64_t id, const v1::EventPollState& p) {
    const std::string where = "poll " + std::to_string(id);
    const int n = p.files_size();
    if (p.fds_size() != n || p.events_size() != n || p.data_size() != n || p.lists_size() != n ||
        p.queue_ranks_size() != n) {
      return Fail(where + ": entry columns of different lengths");
    }
    if (static_cast<std::uint64_t>(n) > limits_.max_entries) return Fail(where + ": too many entries");
    std::set<std::pair<std::uint64_t, int>> keys;
    std::vector<bool> in_ready(static_cast<std::size_t>(n), false);
    for (std::uint32_t i : p.ready_order()) {
      if (i >= static_cast<std::uint32_t>(n) || in_ready[i] || p.lists(static_cast<int>(i)) != v1::ENTRY_LIST_READY) {
        return Fail(where + ": the ready order lists entry " + std::to_string(i) + ", which is not a ready entry");
      }
      in_ready[i] = true;
    }
    for (int i = 0; i < n; ++i) {
      const std::string at = where + ", entry " + std::to_string(i) + ": ";
      const std::uint64_t file = p.files(i);
      if (!files_.count(file)) return Fail(at + "file " + std::to_string(file) + " is not in the image");
      if (file == id) return Fail(at + "a poll cannot watch itself");
      if (p.fds(i) < 0) return Fail(at + "negative fd");
      if (!keys.insert({file, p.fds(i)}).second) return Fail(at + "a second entry for the same (file, fd)");
      const std::uint32_t events = p.events(i);
      const std::uint32_t armed = events & ~kEpollPrivateBits;
      const int list = p.lists(i);
      if (list != v1::ENTRY_LIST_WAITING && list != v1::ENTRY_LIST_READY && list != v1::ENTRY_LIST_DISABLED) {
        return Fail(at + "unknown list");
      }
      if ((list == v1::ENTRY_LIST_READY) != in_ready[static_cast<std::size_t>(i)]) {
        return Fail(at + "ready, but not in the ready order");
      }
      if (list == v1::ENTRY_LIST_DISABLED && (armed != 0 || (events & kEpollOneShot) == 0)) {
        return Fail(at + "disabled, but its events " + FormatEventMask(events) + " are not a fired one-shot's");
      }
      if ((events & kEpollExclusive) != 0) {
        if ((events & ~kEpollExclusiveOkBits) != 0) return Fail(at + "EPOLLEXCLUSIVE with bits Linux refuses");
        if (files_.at(file)->has_eventpoll()) return Fail(at + "EPOLLEXCLUSIVE on a poll");
      }
      if (files_.at(file)->has_eventpoll()) children_[id].push_back(file);
      if (!ranks_.insert({file, p.queue_ranks(i)}).second) {
        return Fail(at + "queue rank " + std::to_string(p.queue_ranks(i)) + " is taken by another entry of file " +
                    std::to_string(file));
      }
    }
    return {};
  }

  Status CheckEnds() {
    for (const auto& [id, p] : pipes_) {
      const bool r = ends_.count({id, 1}) != 0, w = ends_.count({id, 2}) != 0;
      if (r != (p->readers() == 1) || w != (p->writers() == 1)) return Fail("pipe " + std::to_string(id) + ": its open ends do not match its files");
    }
    for (const v1::SocketPairState& p : image_.socket_pairs()) {
      if (ends_.count({p.id(), 1}) != static_cast<std::size_t>(p.end0().open()) ||
          ends_.count({p.id(), 2}) != static_cast<std::size_t>(p.end1().open())) {
        return Fail("socket pair " + std::to_string(p.id()) + ": its open ends do not match its files");
      }
    }
    return {};
  }

  // Polls watching polls: no cycle, no chain of more than kMaxNests links.
  Status CheckNesting() {
    std::map<std::uint64_t, int> height;  // -1 while being visited
    std::function<Status(std::uint64_t)> visit = [&](std::uint64_t id) -> Status {
      auto it = height.find(id);
      if (it != height.end()) {
        return it->second < 0 ? Fail("poll " + std::to_string(id) + ": polls watch each other in a cycle") : Status{};
      }
      height[id] = -1;
      int h = 0;
      for (std::uint64_t child : children_[id]) {
        if (Status s = visit(child)) return s;
        h = std::max(h, height[child] + 1);
      }
      if (h > kMaxNests) return Fail("poll " + std::to_string(id) + ": polls nested deeper than " + std::to_string(kMaxNests));
      height[id] = h;
      return {};
    };
    for (const auto& [id, kids] : children_) {
      if (Status s = visit(id)) return s;
    }
    return {};
  }

  const v1::Image& image_;
  const Limits& limits_;
  std::set<std::uint64_t> ids_;
  std::map<std::uint64_t, const v1::File*> files_;
  std::map<std::uint64_t, const v1::PipeState*> pipes_;
  std::set<std::uint64_t> pairs_;
  std::set<std::pair<std::uint64_t, int>> ends_;
  std::map<std::uint64_t, std::vector<std::uint64_t>> children_;
  std::set<std::pair<std::uint64_t, std::uint32_t>> ranks_;  // (file, queue rank), over all polls
};

// ---- restore ---------------------------------------------------------------------------------------------------------

void RestoreEnd(const v1::SocketEnd& in, SocketPairState::End& end) {
  auto& receive = FieldOf<std::deque<SocketPairState::Segment>>(end, "receive");
  for (const v1::Segment& s : in.receive()) {
    SocketPairState::Segment seg;
    const auto* bytes = reinterpret_cast<const std::byte*>(s.data().data());
    seg.data.assign(bytes, bytes + s.data().size());
    seg.offset = s.offset();
    seg.truesize = s.truesize();
    receive.push_back(std::move(seg));
  }
  FieldOf<std::int64_t>(end, "wmem") = in.wmem();
  FieldOf<std::int64_t>(end, "sndbuf") = in.sndbuf();
  FieldOf<int>(end, "shutdown") = static_cast<int>(in.shutdown());
  FieldOf<bool>(end, "error_reset") = in.error_reset();
  FieldOf<bool>(end, "open") = in.open();
}

void Build(const v1::Image& image, World* out) {
  state::LoadObjects objects;
  std::map<std::uint64_t, state::PendingPoll> polls;
  std::set<const File*> custom;
  for (const v1::PipeState& p : image.pipes()) {
    auto pipe = std::make_shared<PipeBuffer>();
    auto& slots = FieldOf<std::deque<PipeBuffer::Slot>>(*pipe, "slots");
    for (const v1::PipeSlot& s : p.slots()) {
      PipeBuffer::Slot slot;
      slot.page = std::make_unique<std::byte[]>(PipeBuffer::kPageSize);
      std::memcpy(slot.page.get() + s.offset(), s.data().data(), s.data().size());
      slot.offset = s.offset();
      slot.len = static_cast<std::uint32_t>(s.data().size());
      slots.push_back(std::move(slot));
    }
    FieldOf<int>(*pipe, "readers") = static_cast<int>(p.readers());
    FieldOf<int>(*pipe, "writers") = static_cast<int>(p.writers());
    objects.kinds[p.id()] = "pipe";
    objects.pipes[p.id()] = std::move(pipe);
  }
  for (const v1::SocketPairState& p : image.socket_pairs()) {
    auto pair = std::make_shared<SocketPairState>();
    RestoreEnd(p.end0(), FieldOf<SocketPairState::End>(*pair, "end0"));
    RestoreEnd(p.end1(), FieldOf<SocketPairState::End>(*pair, "end1"));
    objects.kinds[p.id()] = "socket-pair";
    objects.pairs[p.id()] = std::move(pair);
  }
  // Every file first (entries refer to files by id), then their references.
  for (const v1::File& f : image.files()) {
    std::shared_ptr<File> file;
    std::string kind;
    switch (f.kind_case()) {
      case v1::File::kEventfd: {
        auto e = MakeFile<EventFd>(0, false);
        FieldOf<std::uint64_t>(*e, "count") = f.eventfd().count();
        FieldOf<bool>(*e, "semaphore") = f.eventfd().semaphore();
        file = e, kind = "eventfd";
        break;
      }
      case v1::File::kPipeRead: {
        auto r = MakeFile<PipeReadEnd>(nullptr);
        FieldOf<std::shared_ptr<PipeBuffer>>(*r, "pipe") = objects.pipes.at(f.pipe_read().pipe());
        objects.waits.emplace_back(f.id(), f.pipe_read().pipe());
        file = r, kind = "pipe-read";
        break;
      }
      case v1::File::kPipeWrite: {
        auto w = MakeFile<PipeWriteEnd>(nullptr);
        FieldOf<std::shared_ptr<PipeBuffer>>(*w, "pipe") = objects.pipes.at(f.pipe_write().pipe());
        objects.waits.emplace_back(f.id(), f.pipe_write().pipe());
        file = w, kind = "pipe-write";
        break;
      }
      case v1::File::kUnixStream: {
        auto s = MakeFile<UnixSocket>(nullptr, 0);
        FieldOf<std::shared_ptr<SocketPairState>>(*s, "pair") = objects.pairs.at(f.unix_stream().pair());
        FieldOf<int>(*s, "side") = static_cast<int>(f.unix_stream().side());
        objects.waits.emplace_back(f.id(), f.unix_stream().pair());
        file = s, kind = "unix-stream";
        break;
      }
      case v1::File::kEventpoll:
        file = EventPoll::Create(), kind = "eventpoll";
        break;
      case v1::File::kEmbedder: {
        kind = f.embedder().kind();
        FileFactory factory = state::FindFileType(kind);
        if (!factory) throw LoadError("file " + std::to_string(f.id()) + ": embedder kind '" + kind + "' is not registered");
        Result<std::shared_ptr<File>> made = factory(f.embedder().state());
        if (!made.ok() || !made.value() || !made.value()->managed()) {
          throw LoadError("file " + std::to_string(f.id()) + ": the factory of '" + kind + "' failed");
        }
        file = std::move(made).value();
        custom.insert(file.get());
        break;
      }
      default:
        throw LoadError("file " + std::to_string(f.id()) + ": kind not restorable");
    }
    objects.kinds[f.id()] = kind;
    objects.files[f.id()] = std::move(file);
  }
  for (const v1::File& f : image.files()) {
    if (!f.has_eventpoll()) continue;
    auto* poll = static_cast<EventPoll*>(objects.files.at(f.id()).get());
    state::PendingPoll& pending = polls[f.id()];
    const v1::EventPollState& p = f.eventpoll();
    for (int i = 0; i < p.files_size(); ++i) {
      const bool disabled = p.lists(i) == v1::ENTRY_LIST_DISABLED;
      auto e = std::make_unique<PollEntry>(poll, FileIdentifier{objects.files.at(p.files(i)).get(), p.fds(i)},
                                           disabled ? p.events(i) : p.events(i) | kAlwaysReported, p.data(i));
      e->list = p.lists(i) == v1::ENTRY_LIST_READY ? EntryList::kReady
                : disabled                         ? EntryList::kDisabled
                                                   : EntryList::kWaiting;
      objects.waits.emplace_back(f.id(), p.files(i));
      pending.entries.push_back(std::move(e));
    }
    pending.ready.assign(p.ready_order().begin(), p.ready_order().end());
    pending.ranks.assign(p.queue_ranks().begin(), p.queue_ranks().end());
  }
  for (const v1::FdEntry& e : image.fds()) {
    if (out->fds.InstallAt(e.fd(), objects.files.at(e.file()))) throw LoadError("fd " + std::to_string(e.fd()) + ": cannot be installed");
  }
  for (const v1::Root& r : image.roots()) out->roots.emplace(r.name(), objects.files.at(r.file()));
  state::RunAfterLoad(objects, polls, custom);
}

}  // namespace

Status Validate(const v1::Image& image, const Limits& limits) { return Validator(image, limits).Run(); }

Status Restore(const v1::Image& image, World* out, const Limits& limits) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "restore: the world is not empty");
  if (Status s = Validate(image, limits)) return s;  // nothing is created before the image is known to be whole
  try {
    Build(image, out);
    return {};
  } catch (const std::exception& e) {
    out->roots.clear();
    out->fds.Clear();
    return Status::Error(EINVAL, std::string("restore: ") + e.what());
  }
}

// ---- bytes and JSON --------------------------------------------------------------------------------------------------

StatusOr<std::string> Encode(const v1::Image& image) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    if (!image.SerializeToCodedStream(&coded)) return {Status::Error(EINVAL, "encode: the image is too large"), {}};
  }
  return {{}, std::move(bytes)};
}

StatusOr<v1::Image> Decode(std::string_view payload) {
  v1::Image image;
  if (payload.size() > static_cast<std::size_t>(INT_MAX) ||
      !image.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return {Status::Error(EINVAL, "decode: the payload is not a valid epollcr.v1.Image"), {}};
  }
  return {{}, std::move(image)};
}

StatusOr<std::string> ToJson(const v1::Image& image) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(image, &json, options);
  if (!st.ok()) return {Status::Error(EINVAL, "json: " + st.ToString()), {}};
  return {{}, std::move(json)};
}

StatusOr<v1::Image> FromJson(std::string_view json) {
  v1::Image image;
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &image);
  if (!st.ok()) return {Status::Error(EINVAL, "json: " + st.ToString()), {}};
  return {{}, std::move(image)};
}

StatusOr<std::string> SaveImage(const World& world) {
  StatusOr<v1::Image> image = Capture(world);
  if (!image.ok()) return {image.status, {}};
  StatusOr<std::string> payload = Encode(image.value);
  if (!payload.ok()) return payload;
  return {{}, Frame(payload.value)};
}

Status LoadImage(std::string_view file_bytes, World* out, const ReadLimits& read_limits) {
  UnframeResult framed = Unframe(file_bytes, read_limits);
  if (!framed.ok()) return {framed.error.code, framed.error.message};
  StatusOr<v1::Image> image = Decode(framed.payload);
  if (!image.ok()) return image.status;
  return Restore(image.value, out);
}

Status WriteImage(const World& world, const std::string& path) {
  StatusOr<v1::Image> image = Capture(world);
  if (!image.ok()) return image.status;
  StatusOr<std::string> payload = Encode(image.value);
  if (!payload.ok()) return payload.status;
  ImageError e = WriteImageFile(path, payload.value);
  return {e.code, e.message};
}

Status ReadImage(const std::string& path, World* out, const ReadLimits& read_limits) {
  std::string payload;
  if (ImageError e = ReadImageFile(path, &payload, read_limits)) return {e.code, e.message};
  StatusOr<v1::Image> image = Decode(payload);
  if (!image.ok()) return image.status;
  return Restore(image.value, out);
}

}  // namespace epollcr::image
