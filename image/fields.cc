#include "image/fields.h"

#include <cstring>
#include <deque>
#include <memory>

namespace epollcr::image {

namespace {

// A wait reference: the referenced object's id on capture; on build, the object of that id (of the field's type, or
// a LoadError naming the field) and the wait edge from the object being built.
template <typename T>
std::uint64_t IdOf(const T& reference, const CaptureContext& c) {
  return c.ids.Of(state::RawOf(reference));
}
template <typename T>
void Resolve(const char* field, std::uint64_t id, T& out, BuildContext& c) {
  const std::uint32_t at = c.objects.Find(id);
  state::WaitResolver{c.objects, c.owner}.Resolve(field, id, at, out);
  c.objects.Wait(c.owner, at);
}

using Slots = std::deque<PipeBuffer::Slot>;
using Segments = std::deque<SocketPairState::Segment>;

const FieldMapping<v1::EventFdState> kEventFd[] = {
    Map<v1::EventFdState, std::uint64_t>(
        "count", [](const std::uint64_t& v, v1::EventFdState& m, const CaptureContext&) { m.set_count(v); },
        [](const v1::EventFdState& m, std::uint64_t& v, BuildContext&) { v = m.count(); }),
    Map<v1::EventFdState, bool>(
        "semaphore", [](const bool& v, v1::EventFdState& m, const CaptureContext&) { m.set_semaphore(v); },
        [](const v1::EventFdState& m, bool& v, BuildContext&) { v = m.semaphore(); }),
};

const FieldMapping<v1::PipeEndState> kPipeEnd[] = {
    Map<v1::PipeEndState, std::shared_ptr<PipeBuffer>>(
        "pipe",
        [](const std::shared_ptr<PipeBuffer>& v, v1::PipeEndState& m, const CaptureContext& c) {
          m.set_pipe(IdOf(v, c));
        },
        [](const v1::PipeEndState& m, std::shared_ptr<PipeBuffer>& v, BuildContext& c) {
          Resolve("pipe", m.pipe(), v, c);
        }),
};

const FieldMapping<v1::UnixStreamState> kUnixStream[] = {
    Map<v1::UnixStreamState, std::shared_ptr<SocketPairState>>(
        "pair",
        [](const std::shared_ptr<SocketPairState>& v, v1::UnixStreamState& m, const CaptureContext& c) {
          m.set_pair(IdOf(v, c));
        },
        [](const v1::UnixStreamState& m, std::shared_ptr<SocketPairState>& v, BuildContext& c) {
          Resolve("pair", m.pair(), v, c);
        }),
    Map<v1::UnixStreamState, int>(
        "side",
        [](const int& v, v1::UnixStreamState& m, const CaptureContext&) { m.set_side(static_cast<std::uint32_t>(v)); },
        [](const v1::UnixStreamState& m, int& v, BuildContext&) { v = static_cast<int>(m.side()); }),
};

const FieldMapping<v1::PipeState> kPipe[] = {
    Map<v1::PipeState, Slots>(
        "slots",
        [](const Slots& v, v1::PipeState& m, const CaptureContext&) {
          for (const PipeBuffer::Slot& s : v) {
            v1::PipeSlot* slot = m.add_slots();
            slot->set_offset(s.offset);
            slot->set_data(reinterpret_cast<const char*>(s.page.get()) + s.offset, s.len);
          }
        },
        [](const v1::PipeState& m, Slots& v, BuildContext&) {  // offsets and lengths: validated (Validate)
          for (const v1::PipeSlot& s : m.slots()) {
            PipeBuffer::Slot slot;
            slot.page = std::make_unique<std::byte[]>(PipeBuffer::kPageSize);
            std::memcpy(slot.page.get() + s.offset(), s.data().data(), s.data().size());
            slot.offset = s.offset();
            slot.len = static_cast<std::uint32_t>(s.data().size());
            v.push_back(std::move(slot));
          }
        }),
    Map<v1::PipeState, int>(
        "readers",
        [](const int& v, v1::PipeState& m, const CaptureContext&) { m.set_readers(static_cast<std::uint32_t>(v)); },
        [](const v1::PipeState& m, int& v, BuildContext&) { v = static_cast<int>(m.readers()); }),
    Map<v1::PipeState, int>(
        "writers",
        [](const int& v, v1::PipeState& m, const CaptureContext&) { m.set_writers(static_cast<std::uint32_t>(v)); },
        [](const v1::PipeState& m, int& v, BuildContext&) { v = static_cast<int>(m.writers()); }),
};

using End = SocketPairState::End;

const FieldMapping<v1::SocketEnd> kSocketEnd[] = {
    Map<v1::SocketEnd, Segments>(
        "receive",
        [](const Segments& v, v1::SocketEnd& m, const CaptureContext&) {
          for (const SocketPairState::Segment& s : v) {
            v1::Segment* seg = m.add_receive();
            seg->set_data(reinterpret_cast<const char*>(s.data.data()), s.data.size());
            seg->set_offset(s.offset);
            seg->set_truesize(s.truesize);
          }
        },
        [](const v1::SocketEnd& m, Segments& v, BuildContext&) {
          for (const v1::Segment& s : m.receive()) {
            SocketPairState::Segment seg;
            const auto* bytes = reinterpret_cast<const std::byte*>(s.data().data());
            seg.data.assign(bytes, bytes + s.data().size());
            seg.offset = s.offset();
            seg.truesize = s.truesize();
            v.push_back(std::move(seg));
          }
        }),
    Map<v1::SocketEnd, std::int64_t>(
        "wmem", [](const std::int64_t& v, v1::SocketEnd& m, const CaptureContext&) { m.set_wmem(v); },
        [](const v1::SocketEnd& m, std::int64_t& v, BuildContext&) { v = m.wmem(); }),
    Map<v1::SocketEnd, std::int64_t>(
        "sndbuf", [](const std::int64_t& v, v1::SocketEnd& m, const CaptureContext&) { m.set_sndbuf(v); },
        [](const v1::SocketEnd& m, std::int64_t& v, BuildContext&) { v = m.sndbuf(); }),
    Map<v1::SocketEnd, int>(
        "shutdown",
        [](const int& v, v1::SocketEnd& m, const CaptureContext&) { m.set_shutdown(static_cast<std::uint32_t>(v)); },
        [](const v1::SocketEnd& m, int& v, BuildContext&) { v = static_cast<int>(m.shutdown()); }),
    Map<v1::SocketEnd, bool>(
        "error_reset", [](const bool& v, v1::SocketEnd& m, const CaptureContext&) { m.set_error_reset(v); },
        [](const v1::SocketEnd& m, bool& v, BuildContext&) { v = m.error_reset(); }),
    Map<v1::SocketEnd, bool>(
        "open", [](const bool& v, v1::SocketEnd& m, const CaptureContext&) { m.set_open(v); },
        [](const v1::SocketEnd& m, bool& v, BuildContext&) { v = m.open(); }),
};

// The two ends are submessages, each through the End mappings.
const FieldMapping<v1::SocketPairState> kSocketPair[] = {
    Map<v1::SocketPairState, End>(
        "end0",
        [](const End& v, v1::SocketPairState& m, const CaptureContext& c) {
          CaptureObject(const_cast<End&>(v), *m.mutable_end0(), c.ids);
        },
        [](const v1::SocketPairState& m, End& v, BuildContext& c) { BuildObject(m.end0(), v, c.objects, c.owner); }),
    Map<v1::SocketPairState, End>(
        "end1",
        [](const End& v, v1::SocketPairState& m, const CaptureContext& c) {
          CaptureObject(const_cast<End&>(v), *m.mutable_end1(), c.ids);
        },
        [](const v1::SocketPairState& m, End& v, BuildContext& c) { BuildObject(m.end1(), v, c.objects, c.owner); }),
};

// A poll's entries are the rows of its EventPollState: one column per saved field. The image keeps the events the
// program asked for: EPOLLERR and EPOLLHUP, which every registration reports, are left out but for a disabled
// entry (whose events are exactly what was saved).
const PollEntry& EntryOf(const CaptureContext& c) { return *static_cast<const PollEntry*>(c.object); }
bool Disabled(const v1::EventPollState& m, int row) { return m.lists(row) == v1::ENTRY_LIST_DISABLED; }

const FieldMapping<v1::EventPollState> kPollEntry[] = {
    Map<v1::EventPollState, int>(
        "fd", [](const int& v, v1::EventPollState& m, const CaptureContext&) { m.add_fds(v); },
        [](const v1::EventPollState& m, int& v, BuildContext& c) { v = m.fds(c.row); }),
    Map<v1::EventPollState, File*>(
        "file", [](File* const& v, v1::EventPollState& m, const CaptureContext& c) { m.add_files(IdOf(v, c)); },
        [](const v1::EventPollState& m, File*& v, BuildContext& c) { Resolve("file", m.files(c.row), v, c); }),
    Map<v1::EventPollState, std::uint32_t>(
        "events",
        [](const std::uint32_t& v, v1::EventPollState& m, const CaptureContext& c) {
          m.add_events(EntryOf(c).list == EntryList::kDisabled ? v : v & ~kAlwaysReported);
        },
        [](const v1::EventPollState& m, std::uint32_t& v, BuildContext& c) {
          v = Disabled(m, c.row) ? m.events(c.row) : m.events(c.row) | kAlwaysReported;
        }),
    Map<v1::EventPollState, std::uint64_t>(
        "data", [](const std::uint64_t& v, v1::EventPollState& m, const CaptureContext&) { m.add_data(v); },
        [](const v1::EventPollState& m, std::uint64_t& v, BuildContext& c) { v = m.data(c.row); }),
    Map<v1::EventPollState, EntryList>(
        "list",
        [](const EntryList& v, v1::EventPollState& m, const CaptureContext&) {
          m.add_lists(v == EntryList::kReady      ? v1::ENTRY_LIST_READY
                      : v == EntryList::kDisabled ? v1::ENTRY_LIST_DISABLED
                                                  : v1::ENTRY_LIST_WAITING);
        },
        [](const v1::EventPollState& m, EntryList& v, BuildContext& c) {
          v = m.lists(c.row) == v1::ENTRY_LIST_READY ? EntryList::kReady
              : Disabled(m, c.row)                   ? EntryList::kDisabled
                                                     : EntryList::kWaiting;
        }),
};

}  // namespace

std::span<const FieldMapping<v1::EventFdState>> ImageOf<EventFd>::Fields() { return kEventFd; }
std::span<const FieldMapping<v1::PipeEndState>> ImageOf<PipeReadEnd>::Fields() { return kPipeEnd; }
std::span<const FieldMapping<v1::PipeEndState>> ImageOf<PipeWriteEnd>::Fields() { return kPipeEnd; }
std::span<const FieldMapping<v1::UnixStreamState>> ImageOf<UnixSocket>::Fields() { return kUnixStream; }
std::span<const FieldMapping<v1::PipeState>> ImageOf<PipeBuffer>::Fields() { return kPipe; }
std::span<const FieldMapping<v1::SocketPairState>> ImageOf<SocketPairState>::Fields() { return kSocketPair; }
std::span<const FieldMapping<v1::SocketEnd>> ImageOf<SocketPairState::End>::Fields() { return kSocketEnd; }
std::span<const FieldMapping<v1::EventPollState>> ImageOf<PollEntry>::Fields() { return kPollEntry; }

}  // namespace epollcr::image
