#include "image/codec.h"

#include <boost/container/small_vector.hpp>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/wire_format_lite.h>

#include <sys/stat.h>

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <memory_resource>
#include <optional>
#include <set>
#include <stdexcept>

#include "big_buffer.h"
#include "epollcr/host_file.h"
#include "epollcr/version.h"
#include "image/fields.h"
#include "image/tcp_records.h"
#include "image/utf8.h"
#include "state/after_load.h"
#include "state/invariants.h"
#include "state/cut.h"

namespace epollcr::image {

namespace {

using state::LoadError;

// A capture that fails for a reason with its own error code (SaveOptions::host_by_value's), thrown out of the cut and
// returned as that code.
struct CaptureError : std::runtime_error {
  CaptureError(std::error_code error, const std::string& what) : std::runtime_error(what), code(error) {}
  std::error_code code;
};

// ---- capture ---------------------------------------------------------------------------------------------------------

// Each object's saved fields go through its declaration (image/fields.h); what the declarations leave to manual
// hooks (a poll's queue ranks and ready order) is written here.
// The poll's kernel epoll, if it has kernel entries (image.proto KernelEpollState). Not analysed: it reads fields
// guarded by the poll's locks, which the cut holds (in a vector).
// With `out` null (a poll whose record SaveImageWith writes itself), the message is made on `arena` if the poll has a
// kernel epoll; returns the message holding the kernel fields, or `out`.
v1::EventPollState* CaptureKernel(state::PollCut& cut, v1::EventPollState* out, const SaveOptions& options,
                                  google::protobuf::Arena* arena = nullptr) EPOLLCR_NO_THREAD_SAFETY_ANALYSIS {
  std::optional<EventPoll::Impl::KernelState> k = cut.poll->impl()->DescribeKernel(cut.entries);
  if (!k) return out;
  if (out == nullptr) out = google::protobuf::Arena::CreateMessage<v1::EventPollState>(arena);
  if (options.on_kernel_fds) {
    std::vector<int> fds{k->fd};
    if (k->bell_fd >= 0) fds.push_back(k->bell_fd);
    fds.insert(fds.end(), k->dups.begin(), k->dups.end());
    options.on_kernel_fds(fds);
  }
  v1::KernelEpollState* kernel = out->mutable_kernel();
  kernel->set_fd(k->fd);
  kernel->set_bell_fd(k->bell_fd);
  kernel->set_bell_level(k->bell_level);
  kernel->set_bell_set(k->bell_set);
  kernel->set_next_key(k->next_key);
  out->mutable_kernel_keys()->Reserve(static_cast<int>(k->keys.size()));
  out->mutable_kernel_fds()->Reserve(static_cast<int>(k->keys.size()));
  for (std::size_t i = 0; i < k->keys.size(); ++i) {
    out->add_kernel_keys(k->keys[i]);
    out->add_kernel_fds(k->fds[i]);
  }
  return out;
}

// A poll's entries as the cut saw them: the cut copied each entry's saved fields as bytes (PollCut::rows) while its
// locks were held; they become the poll's columns once the locks are released (FillPoll, or with records DecodeRows
// and PutPollRecord). Reading the fields is all that needs the locks: converting and storing them into a million-row
// message does not.
struct EntryRow;
struct PollRows {
  state::PollCut& cut;  // its rows, ranks and ready order are the cut's copies; its entries are not read after the locks
  v1::EventPollState* out;  // with records, only the kernel fields, and null if the poll has no kernel epoll
  // With records (SaveImageWith), the poll's record is written by PutPollRecord from its rows decoded here
  // (DecodeRows): the sizes of its columns (EventPollState fields 1 to 7, in number order) and of the message they
  // make with the kernel fields.
  const EntryRow* rows = nullptr;
  std::uint32_t column_bytes[7] = {};
  std::uint32_t message_bytes = 0;
};

// A host file's record, as a save copies it under the cut's locks (HostFileReference's fields).
struct HostRecord {
  HostFile::Identity identity;
  bool open_state_shared = false;
  bool detached = false;  // only fd, dev, ino and file_type are recorded
};

// The captured state that waits for the cut's locks to be released: one PollRows per poll, in the cut's order; and
// where each eventfd's File record goes (a small world of many eventfds spent most of its locked time making their
// records; the cut copies their saved fields: state::Cut::eventfd_rows), in arrays from the cut's memory.
struct Deferred {
  std::vector<PollRows> polls;
  // With records (SaveImageWith): the host files' records, copied in file order, made after the locks as eventfds'
  // are (a hand-off of 10,000 connections spent a third of its save making a message and a sub-message per socket).
  HostRecord* hosts = nullptr;
  std::size_t host_count = 0;
  // With an arena: every file's record but an eventfd's, made under the locks and added to the image after them in
  // file order (an eventfd's, null here, is made then; with records, a host file's and a poll's are null too, and
  // written by EncodeFiles); else null, and every record is in the image already.
  v1::File** files = nullptr;
  v1::File** eventfds = nullptr;
  std::size_t eventfd_count = 0;
};

// With records, `out` is null: the poll's record is written by PutPollRecord, and a message is made (on `arena`) only
// for its kernel fields. Preconditions: the cut's locks are held.
void CapturePoll(state::PollCut& cut, v1::EventPollState* out, Deferred* deferred, const SaveOptions& options,
                 google::protobuf::Arena* arena = nullptr) {
  PollRows& rows = deferred->polls.emplace_back(PollRows{cut, out});
  rows.out = CaptureKernel(cut, out, options, arena);
}

// The poll's columns from its rows, after the cut's locks are released: each row is copied into a scratch entry that
// no poll knows, and captured from there as the entry itself would be.
void FillPoll(const state::SaveIds& ids, PollRows& rows) {
  v1::EventPollState* out = rows.out;
  // Each column is sized once: growing them by doubling copies every column about twice and faults in fresh pages.
  const int n = static_cast<int>(rows.cut.entries.size());
  out->mutable_fds()->Reserve(n);
  out->mutable_files()->Reserve(n);
  out->mutable_events()->Reserve(n);
  out->mutable_data()->Reserve(n);
  out->mutable_lists()->Reserve(n);
  out->mutable_queue_ranks()->Reserve(n);
  for (std::uint32_t rank : rows.cut.ranks) out->add_queue_ranks(rank);
  PollEntry scratch(nullptr, FileIdentifier{}, 0, 0);
  for (std::size_t k = 0; k < static_cast<std::size_t>(n); ++k) CaptureCopies(scratch, rows.cut.Row(k), 1, *out, ids);
  for (std::uint32_t i : rows.cut.ready) out->add_ready_order(i);
}

// Notes where an eventfd's record goes for CaptureTables, which makes it from the eventfd's row (the cut copied its
// saved fields: state::Cut::eventfd_rows) in `out`, or in a new record if null.
void NoteEventFd(state::Cut& snap, v1::File* out, Deferred* deferred) {
  if (deferred->eventfds == nullptr) {
    deferred->eventfds = static_cast<v1::File**>(
        snap.memory()->allocate(snap.files().size() * sizeof(v1::File*), alignof(v1::File*)));
  }
  deferred->eventfds[deferred->eventfd_count++] = out;
}

// File i's host file reference (a host file's record but for a by-value one, SaveOptions::host_by_value), and
// options.on_host_file told of it. Preconditions: the cut's locks are held.
HostRecord CopyHost(state::Cut& snap, std::size_t i, const SaveOptions& options) {
  const auto* h = static_cast<const HostFile*>(snap.files()[i]);
  HostRecord record;
  if (std::optional<HostFile::Identity> last = h->detached() ? h->LastIdentity() : std::nullopt) {
    // No fd names it; polls' entries keep it (HostFile::MarkDetached).
    record.identity = HostFile::Identity{last->fd, last->dev, last->ino, last->file_type, 0, 0};
    record.detached = true;
    return record;
  }
  Result<HostFile::Identity> id = h->Identify(options.host_open_state);
  if (!id.ok()) {
    throw std::runtime_error("file " + std::to_string(i + 1) + " (host fd " + std::to_string(h->fd()) +
                             "): " + id.error().message());
  }
  record.identity = id.value();
  record.open_state_shared = !options.host_open_state;
  if (options.on_host_file) options.on_host_file(id.value().fd, *snap.files()[i]);
  return record;
}

void CaptureFile(state::Cut& snap, std::size_t i, std::size_t* next_poll, const SaveOptions& options, v1::File* out,
                 Deferred* deferred) {
  File* f = snap.files()[i];
  const File::Builtin type = snap.type(i);
  out->set_id(i + 1);
  if (type == File::Builtin::kEventFd) {
    NoteEventFd(snap, out, deferred);
  } else if (type == File::Builtin::kPipeRead) {
    CaptureObject(*static_cast<PipeReadEnd*>(f), *out->mutable_pipe_read(), snap.ids());
  } else if (type == File::Builtin::kPipeWrite) {
    CaptureObject(*static_cast<PipeWriteEnd*>(f), *out->mutable_pipe_write(), snap.ids());
  } else if (type == File::Builtin::kUnixStream) {
    CaptureObject(*static_cast<UnixSocket*>(f), *out->mutable_unix_stream(), snap.ids());
  } else if (type == File::Builtin::kEventPoll) {
    CapturePoll(snap.polls()[(*next_poll)++], out->mutable_eventpoll(), deferred, options);
  } else if (type == File::Builtin::kHost) {
    auto* h = static_cast<HostFile*>(f);
    if (options.host_by_value) {
      Result<bool> by_value = options.host_by_value(*h, out);
      if (!by_value.ok()) {
        throw CaptureError(by_value.error(), "file " + std::to_string(i + 1) + " (host fd " + std::to_string(h->fd()) +
                                                 "): " + by_value.status().message);
      }
      if (by_value.value()) return;
    }
    const HostRecord record = CopyHost(snap, i, options);
    v1::HostFileReference* r = out->mutable_host();
    r->set_fd(record.identity.fd);
    r->set_st_dev(record.identity.dev);
    r->set_st_ino(record.identity.ino);
    r->set_file_type(record.identity.file_type);
    r->set_open_flags(record.identity.open_flags);
    r->set_offset(record.identity.offset);
    r->set_open_state_shared(record.open_state_shared);
    r->set_detached(record.detached);
  } else {
    out->mutable_embedder()->set_kind(std::string(snap.kinds()[i]));
    out->mutable_embedder()->set_state(snap.custom_state(i));
  }
}

// The fd table and the files encoded as Image.fds' and Image.files' records (each message with its field's tag and
// length), as protobuf writes them: a save (SaveImageWith) writes them from the cut rather than adding a message per
// fd and per eventfd to the image, which is most of a small world's save. The bytes are on the image's arena, whose
// blocks a later save finds faulted in already (heap blocks freed after each save were faulted in again by the next).
struct Records {
  const std::uint8_t* fds = nullptr;
  std::size_t fds_size = 0;
  const std::uint8_t* files = nullptr;
  std::size_t files_size = 0;
  // The first file whose embedder kind is not valid UTF-8 (encoding refuses it), if any.
  std::optional<std::size_t> non_utf8_kind;
};

using google::protobuf::internal::WireFormatLite;
using Coded = google::protobuf::io::CodedOutputStream;

constexpr std::uint32_t LengthDelimited(int field) {
  return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
}

// The head of a length-delimited field at `at`: its tag and the length of what follows. Returns where that goes.
std::uint8_t* PutLengthHead(std::uint8_t* at, int field, std::uint32_t bytes) {
  at = Coded::WriteTagToArray(LengthDelimited(field), at);
  return Coded::WriteVarint32ToArray(bytes, at);
}

// A message as a length-delimited field at `at`: its tag, its size, then its bytes. Preconditions: its size is cached
// (ByteSizeLong). Returns where it ends.
std::uint8_t* PutMessageField(std::uint8_t* at, int field, const google::protobuf::MessageLite& message) {
  at = PutLengthHead(at, field, static_cast<std::uint32_t>(message.GetCachedSize()));
  return message.SerializeWithCachedSizesToArray(at);
}
std::size_t MessageFieldSize(std::size_t message_bytes) {
  return 1 + Coded::VarintSize64(message_bytes) + message_bytes;  // every field number here fits a one-byte tag
}

// The longest eventfd record: the files field's tag and length, the id's tag and varint, the eventfd field's tag and
// length, and an EventFdState (a count's tag and varint, the semaphore's tag and byte).
constexpr std::size_t kMaxEventFdRecord = 1 + 2 + 1 + 10 + 1 + 1 + (1 + 10 + 2);

// A varint field of a record, as protobuf writes it: left out when it is zero (proto3), else its tag (one byte: every
// field number here is below 16) and its value. Its size, and writing it at `at` (returns where it ends).
std::uint32_t VarintFieldSize(std::uint64_t value) {
  return value == 0 ? 0 : 1 + static_cast<std::uint32_t>(Coded::VarintSize64(value));
}
std::uint8_t* PutVarintField(std::uint8_t* at, int field, std::uint64_t value) {
  if (value == 0) return at;
  at = Coded::WriteTagToArray(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_VARINT), at);
  return Coded::WriteVarint64ToArray(value, at);
}

// The start of one Image.files record: the files field's tag and length, the file's id, and the tag and length of its
// kind's message (`kind_field`, of `kind_bytes`), which the caller writes next. Returns where the kind's fields go.
std::uint8_t* PutFileRecordHead(std::uint8_t* at, std::uint64_t id, int kind_field, std::uint32_t kind_bytes) {
  const std::size_t file_bytes = VarintFieldSize(id) + MessageFieldSize(kind_bytes);
  at = PutLengthHead(at, v1::Image::kFilesFieldNumber, static_cast<std::uint32_t>(file_bytes));
  at = PutVarintField(at, v1::File::kIdFieldNumber, id);
  return PutLengthHead(at, kind_field, kind_bytes);
}

// One Image.files record of an eventfd file: File{id, eventfd = EventFdState{count, semaphore}}, the bytes protobuf
// makes of that message (a proto3 field equal to zero or false is left out; the eventfd field, one of a oneof, is
// written even when empty). Written directly rather than through an EventFdState message, which took about twice as
// long as the rest of the record; ImageCodecTest.SaveImageIsTheFramedEncodingOfTheCapture compares the two.
std::uint8_t* PutEventFdRecord(std::uint8_t* at, std::uint64_t id, std::uint64_t count, bool semaphore) {
  const std::uint32_t state_bytes = VarintFieldSize(count) + VarintFieldSize(semaphore ? 1 : 0);
  at = PutFileRecordHead(at, id, v1::File::kEventfdFieldNumber, state_bytes);
  at = PutVarintField(at, v1::EventFdState::kCountFieldNumber, count);
  return PutVarintField(at, v1::EventFdState::kSemaphoreFieldNumber, semaphore ? 1 : 0);
}

// The longest host file record: the files field's tag and length, the id's tag and varint, the host field's tag and
// length, and a HostFileReference (fd sign-extended, device, inode, type, flags, offset: a tag and at most 10 bytes
// each; two booleans: a tag and a byte each).
constexpr std::size_t kMaxHostRecord = 1 + 2 + 1 + 10 + 1 + 2 + (6 * 11 + 2 * 2);

// One Image.files record of a host file by reference: File{id, host = HostFileReference{...}}, the bytes protobuf
// makes of that message (fields in number order, a proto3 field equal to zero or false left out, an int32 sign-
// extended to 64 bits). ImageCodecTest.SaveImageIsTheFramedEncodingOfTheCapture compares the two.
std::uint8_t* PutHostRecord(std::uint8_t* at, std::uint64_t id, const HostRecord& r) {
  const HostFile::Identity& h = r.identity;
  const auto fd_bits = static_cast<std::uint64_t>(static_cast<std::int64_t>(h.fd));
  const std::uint64_t numbers[] = {fd_bits, h.dev, h.ino, h.file_type, h.open_flags, h.offset, r.open_state_shared,
                                   r.detached};  // fields 1 to 8
  std::uint32_t host_bytes = 0;
  for (std::uint64_t v : numbers) host_bytes += VarintFieldSize(v);
  at = PutFileRecordHead(at, id, v1::File::kHostFieldNumber, host_bytes);
  for (int field = 1; field <= 8; ++field) at = PutVarintField(at, field, numbers[field - 1]);
  return at;
}

// One entry of a poll as its record's columns hold it: the conversions of image/fields.cc's kPollEntry mappings.
struct EntryRow {
  std::uint64_t file;
  std::uint64_t data;
  std::uint64_t fd_bits;  // the fd sign-extended to 64 bits, as protobuf writes an int32
  std::uint32_t events;
  std::uint32_t list;  // a v1::EntryList
};

// Decodes a poll's copied rows (CapturePoll) and sizes its record's columns, for PutPollRecord, which then writes
// the bytes FillPoll and protobuf's encoding of the columns would make (a world of hundreds of small polls spent a
// fifth of each save making, sizing and encoding their messages). A poll's kernel fields (8 to 12), which
// CaptureKernel set in `out` under the locks, are `out`'s whole encoding, since its columns stay empty. Throws
// state::LoadError, as CaptureCopies does, if the entry's declaration and its mappings disagree, or if it saves other
// fields than the five kPollEntry maps (this function reads them by name). ImageCodecTest's
// SaveImageIsTheFramedEncodingOfTheCapture and SaveImageWritesHostRecordsAsProtobufDoes (a poll with kernel entries)
// compare the two.
void DecodeRows(const state::SaveIds& ids, PollRows& rows, std::pmr::memory_resource* memory) {
  PollEntry scratch(nullptr, FileIdentifier{}, 0, 0);
  const auto& bound = Bound(scratch);
  if (!bound.error.empty()) throw state::LoadError("image mapping: " + bound.error);
  if (bound.saved.size() != 5) {
    throw state::LoadError("image mapping: poll-entry saves other fields than PutPollRecord writes");
  }
  const std::size_t n = rows.cut.entries.size();
  auto* decoded =
      static_cast<EntryRow*>(memory->allocate(std::max<std::size_t>(n, 1) * sizeof(EntryRow), alignof(EntryRow)));
  std::uint64_t bytes[7] = {};
  for (std::size_t k = 0; k < n; ++k) {
    state::SavedFieldsIn copy{rows.cut.Row(k)};
    scratch.VisitState(copy);
    EntryRow& r = decoded[k];
    r.file = ids.Of(state::RawOf(scratch.file));
    r.data = scratch.data;
    r.fd_bits = static_cast<std::uint64_t>(static_cast<std::int64_t>(scratch.fd));
    r.events = scratch.list == EntryList::kDisabled ? scratch.events : scratch.events & ~kAlwaysReported;
    r.list = scratch.list == EntryList::kReady      ? v1::ENTRY_LIST_READY
             : scratch.list == EntryList::kDisabled ? v1::ENTRY_LIST_DISABLED
                                                    : v1::ENTRY_LIST_WAITING;
    bytes[0] += Coded::VarintSize64(r.file);
    bytes[1] += Coded::VarintSize64(r.fd_bits);
    bytes[2] += Coded::VarintSize32(r.events);
    bytes[3] += Coded::VarintSize64(r.data);
    bytes[4] += Coded::VarintSize32(r.list);
  }
  for (std::uint32_t i : rows.cut.ready) bytes[5] += Coded::VarintSize32(i);
  for (std::uint32_t i : rows.cut.ranks) bytes[6] += Coded::VarintSize32(i);
  // The kernel fields, if any (sizing them caches their sizes for PutPollRecord).
  std::uint64_t message = rows.out != nullptr ? rows.out->ByteSizeLong() : 0;
  for (std::uint64_t b : bytes) message += b == 0 ? 0 : MessageFieldSize(b);  // an empty column is left out
  if (message > static_cast<std::uint64_t>(INT_MAX)) throw state::LoadError("a poll's record is too large to encode");
  for (int i = 0; i < 7; ++i) rows.column_bytes[i] = static_cast<std::uint32_t>(bytes[i]);
  rows.message_bytes = static_cast<std::uint32_t>(message);
  rows.rows = decoded;
}

// A packed column's head: its tag and length, or nothing for an empty column. Returns where its values go.
std::uint8_t* PutColumnHead(std::uint8_t* at, int field, std::uint32_t bytes) {
  return bytes == 0 ? at : PutLengthHead(at, field, bytes);
}

// The longest poll record beside its columns: the files field's tag and length, the id's tag and varint, the
// eventpoll field's tag and length.
constexpr std::size_t kMaxPollRecordHead = 1 + 5 + 1 + 10 + 1 + 5;

// One Image.files record of a poll decoded by DecodeRows: File{id, eventpoll = EventPollState{...}}, the bytes
// protobuf makes of that message (fields in number order: the packed columns 1 to 7, an empty one left out, then the
// kernel fields).
std::uint8_t* PutPollRecord(std::uint8_t* at, std::uint64_t id, const PollRows& p) {
  using S = v1::EventPollState;
  const std::size_t n = p.cut.entries.size();
  const EntryRow* rows = p.rows;
  at = PutFileRecordHead(at, id, v1::File::kEventpollFieldNumber, p.message_bytes);
  at = PutColumnHead(at, S::kFilesFieldNumber, p.column_bytes[0]);
  for (std::size_t k = 0; k < n; ++k) at = Coded::WriteVarint64ToArray(rows[k].file, at);
  at = PutColumnHead(at, S::kFdsFieldNumber, p.column_bytes[1]);
  for (std::size_t k = 0; k < n; ++k) at = Coded::WriteVarint64ToArray(rows[k].fd_bits, at);
  at = PutColumnHead(at, S::kEventsFieldNumber, p.column_bytes[2]);
  for (std::size_t k = 0; k < n; ++k) at = Coded::WriteVarint32ToArray(rows[k].events, at);
  at = PutColumnHead(at, S::kDataFieldNumber, p.column_bytes[3]);
  for (std::size_t k = 0; k < n; ++k) at = Coded::WriteVarint64ToArray(rows[k].data, at);
  at = PutColumnHead(at, S::kListsFieldNumber, p.column_bytes[4]);
  for (std::size_t k = 0; k < n; ++k) at = Coded::WriteVarint32ToArray(rows[k].list, at);
  at = PutColumnHead(at, S::kReadyOrderFieldNumber, p.column_bytes[5]);
  for (std::uint32_t i : p.cut.ready) at = Coded::WriteVarint32ToArray(i, at);
  at = PutColumnHead(at, S::kQueueRanksFieldNumber, p.column_bytes[6]);
  for (std::uint32_t i : p.cut.ranks) at = Coded::WriteVarint32ToArray(i, at);
  if (p.out == nullptr) return at;
  return p.out->SerializeWithCachedSizesToArray(at);  // fields 8 to 12: the kernel epoll's
}

// The files of an arena capture (Deferred::files, the eventfds', host files' and polls' copied fields) as Image.files'
// records, in file order.
// Preconditions: every poll's rows are decoded (DecodeRows).
void EncodeFiles(state::Cut& snap, const Deferred& deferred, google::protobuf::Arena* arena, Records* records) {
  const std::size_t n = snap.files().size();
  std::size_t bytes = 0;
  std::size_t next_poll = 0;  // deferred.polls is in file order
  for (std::size_t i = 0; i < n; ++i) {
    const v1::File* made = deferred.files[i];
    const File::Builtin type = snap.type(i);
    bytes += made != nullptr                      ? MessageFieldSize(made->ByteSizeLong())
             : type == File::Builtin::kHost      ? kMaxHostRecord
             : type == File::Builtin::kEventPoll ? kMaxPollRecordHead + deferred.polls[next_poll++].message_bytes
                                                 : kMaxEventFdRecord;
    if (made != nullptr && made->has_embedder() && !records->non_utf8_kind && !IsUtf8(made->embedder().kind())) {
      records->non_utf8_kind = i;
    }
  }
  auto* const start = google::protobuf::Arena::CreateArray<std::uint8_t>(arena, bytes);
  std::uint8_t* at = start;
  EventFd scratch(0, false);
  const std::byte* copied = snap.eventfd_rows();
  const HostRecord* host = deferred.hosts;
  next_poll = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (const v1::File* made = deferred.files[i]) {
      at = PutMessageField(at, v1::Image::kFilesFieldNumber, *made);
      continue;
    }
    if (snap.type(i) == File::Builtin::kHost) {  // host files were copied in file order
      at = PutHostRecord(at, i + 1, *host++);
      continue;
    }
    if (snap.type(i) == File::Builtin::kEventPoll) {  // so were polls
      at = PutPollRecord(at, i + 1, deferred.polls[next_poll++]);
      continue;
    }
    state::SavedFieldsIn copy{copied};  // eventfds were copied in file order
    scratch.VisitState(copy);
    copied = copy.at;
    at = PutEventFdRecord(at, i + 1, scratch.Value(), scratch.semaphore());
  }
  records->files = start;
  records->files_size = static_cast<std::size_t>(at - start);
}

// The longest fd record: a tag and a length, then two fields of a tag and a varint of at most 10 bytes each.
constexpr std::size_t kMaxFdRecord = 2 + 2 * 11;

// One FdEntry record at `at`, the bytes Image.fds' serialization makes of FdEntry{fd, file} (protobuf's encoding: a
// length-delimited field; a proto3 field equal to zero is left out; an int32 is written sign-extended to 64 bits);
// returns where it ends.
std::uint8_t* PutFdRecord(std::uint8_t* at, int fd, std::uint64_t file) {
  const auto fd_bits = static_cast<std::uint64_t>(static_cast<std::int64_t>(fd));
  at = PutLengthHead(at, v1::Image::kFdsFieldNumber, VarintFieldSize(fd_bits) + VarintFieldSize(file));
  at = PutVarintField(at, v1::FdEntry::kFdFieldNumber, fd_bits);
  return PutVarintField(at, v1::FdEntry::kFileFieldNumber, file);
}

// What the cut copied and the world's tables: the polls' columns, the header, the files and the fd table (into
// `records` if given, else into the image) and the roots. Runs after the cut's locks are released (state::WithCut's
// `after`): a million fds are a million records to make, and none of them reads the world.
void CaptureTables(state::Cut& snap, Deferred* deferred, v1::Image* image, Records* records) {
  if (records != nullptr) {
    for (PollRows& rows : deferred->polls) DecodeRows(snap.ids(), rows, snap.memory());
    EncodeFiles(snap, *deferred, image->GetArena(), records);
  } else if (deferred->files != nullptr) {
    const std::size_t n = snap.files().size();
    image->mutable_files()->Reserve(static_cast<int>(n));
    std::size_t next_eventfd = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (v1::File* made = deferred->files[i]) {
        image->mutable_files()->AddAllocated(made);  // on the image's arena: added as it is
        continue;
      }
      v1::File* out = image->add_files();
      out->set_id(i + 1);
      deferred->eventfds[next_eventfd++] = out;  // eventfds were copied in file order
    }
  }
  if (records == nullptr && deferred->eventfd_count > 0) {  // with records, EncodeFiles wrote them
    EventFd scratch(0, false);
    const std::byte* at = snap.eventfd_rows();
    for (std::size_t i = 0; i < deferred->eventfd_count; ++i) {
      at = CaptureCopies(scratch, at, 1, *deferred->eventfds[i]->mutable_eventfd(), snap.ids());
    }
  }
  if (records == nullptr) {
    for (PollRows& rows : deferred->polls) FillPoll(snap.ids(), rows);
  }
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
  if (records != nullptr) {
    auto* const start =
        google::protobuf::Arena::CreateArray<std::uint8_t>(image->GetArena(), snap.fds().size() * kMaxFdRecord);
    std::uint8_t* at = start;
    for (const state::Cut::Fd& fd : snap.fds()) at = PutFdRecord(at, fd.fd, fd.file);
    records->fds = start;
    records->fds_size = static_cast<std::size_t>(at - start);
  } else {
    image->mutable_fds()->Reserve(static_cast<int>(snap.fds().size()));
    for (const state::Cut::Fd& fd : snap.fds()) {
      v1::FdEntry* e = image->add_fds();
      e->set_fd(fd.fd);
      e->set_file(fd.file);
    }
  }
  for (const auto& [name, file] : snap.roots()) {
    v1::Root* r = image->add_roots();
    r->set_name(name);
    r->set_file(snap.ids().Of(file.get()));
  }
}

// Everything that reads the world: the shared objects and the files, polls included (their entries as rows, for
// CaptureTables). Preconditions: the cut's locks are held.
void CaptureAll(state::Cut& snap, const SaveOptions& options, v1::Image* image, Deferred* deferred, bool records) {
  for (const state::Cut::Shared& s : snap.shared()) {
    if (s.pipe) {
      v1::PipeState* p = image->add_pipes();
      p->set_id(s.id);
      MutexLock lock(s.pipe->state_mutex());
      CaptureObject(*s.pipe, *p, snap.ids());
    } else {
      v1::SocketPairState* p = image->add_socket_pairs();
      p->set_id(s.id);
      MutexLock lock(s.pair->state_mutex());
      CaptureObject(*s.pair, *p, snap.ids());
    }
  }
  std::size_t next_poll = 0;
  deferred->polls.reserve(snap.polls().size());
  const std::size_t n = snap.files().size();
  if (google::protobuf::Arena* arena = image->GetArena()) {
    // A small world of many eventfds spent most of its locked time making their records: they are made after the
    // locks, and the other files' records now, on the arena (nothing to free if the save fails), kept in file order.
    deferred->files = static_cast<v1::File**>(snap.memory()->allocate(n * sizeof(v1::File*), alignof(v1::File*)));
    for (std::size_t i = 0; i < n; ++i) {
      if (snap.type(i) == File::Builtin::kEventFd) {
        deferred->files[i] = nullptr;
        NoteEventFd(snap, nullptr, deferred);
        continue;
      }
      if (records && snap.type(i) == File::Builtin::kEventPoll) {  // PutPollRecord writes its record
        deferred->files[i] = nullptr;
        CapturePoll(snap.polls()[next_poll++], nullptr, deferred, options, arena);
        continue;
      }
      if (records && snap.type(i) == File::Builtin::kHost && !options.host_by_value) {
        if (deferred->hosts == nullptr) {
          deferred->hosts = static_cast<HostRecord*>(snap.memory()->allocate(n * sizeof(HostRecord), alignof(HostRecord)));
        }
        deferred->files[i] = nullptr;
        std::construct_at(&deferred->hosts[deferred->host_count++], CopyHost(snap, i, options));
        continue;
      }
      deferred->files[i] = google::protobuf::Arena::CreateMessage<v1::File>(arena);
      CaptureFile(snap, i, &next_poll, options, deferred->files[i], deferred);
    }
    return;
  }
  image->mutable_files()->Reserve(static_cast<int>(n));
  for (std::size_t i = 0; i < n; ++i) CaptureFile(snap, i, &next_poll, options, image->add_files(), deferred);
}

// The world into `image` (empty): a consistent cut, read with its locks held, then finished without them. With
// `records` (and `image` on an arena), the files and the fd table are encoded there instead of added to the image.
Status CaptureInto(const World& world, const SaveOptions& options, v1::Image* image, Records* records = nullptr) {
  Status s;
  try {
    Deferred deferred;
    s = state::WithCut(
        world,
        [&](state::Cut& snap) { CaptureAll(snap, options, image, &deferred, records != nullptr); },
        options.pause, [&](state::Cut& snap) { CaptureTables(snap, &deferred, image, records); });
  } catch (const CaptureError& e) {  // a hook's error keeps its own errno (SaveOptions::host_by_value)
    return Status(e.code, std::string("capture: ") + e.what());
  } catch (const std::exception& e) {
    return Status::Error(EIO, std::string("capture: ") + e.what());
  }
  if (!s.ok() || !options.after_capture) return s;
  return options.after_capture(*image);
}

}  // namespace

Result<v1::Image> Capture(const World& world, const SaveOptions& options) {
  v1::Image image;
  if (Status s = CaptureInto(world, options, &image); !s.ok()) return s;
  return image;
}

// ---- validation ------------------------------------------------------------------------------------------------------

namespace {

// Object ids resolve through an IdIndex (load_objects.h) to positions: pipes, then socket pairs, then files, in
// image order. Every per-entry check is O(1): an array lookup for the file, a comparison with the previous entry for
// (file, fd) order, and a bit in a per-file range for the queue rank.
class Validator {
 public:
  Validator(const v1::Image& image, const Limits& limits, FdRecords fds = {})
      : image_(image), limits_(limits), fds_(fds) {}

  // `strings`: whether the strings are still to be checked for UTF-8 (not if the payload's were, before its parse).
  Status Run(bool strings = true) {
    if (std::string at = strings ? FindNonUtf8InMessage(image_) : ""; !at.empty()) return Fail(at + ": not valid UTF-8");
    if (!image_.has_header()) return Fail("header: missing");
    if (image_.header().format_major() != kFormatMajor) {
      return Fail("header: format " + std::to_string(image_.header().format_major()) + "." +
                  std::to_string(image_.header().format_minor()) + " (this build reads " +
                  std::to_string(kFormatMajor) + ".x)");
    }
    const std::uint64_t objects = static_cast<std::uint64_t>(image_.pipes_size()) + image_.socket_pairs_size() +
                                  image_.files_size() + image_.fds_size() + fds_.size() + image_.roots_size();
    if (objects > limits_.max_objects) return Fail("the image has " + std::to_string(objects) + " objects, beyond the limit");
    if (image_.has_network_lock()) {
      if (std::string bad = CheckNetworkLock(image_.network_lock()); !bad.empty()) return Fail("network lock: " + bad);
    }
    for (const v1::PipeState& p : image_.pipes()) {
      if (Status s = NewId(p.id(), "pipe", nullptr); !s.ok()) return s;
      if (Status s = CheckPipe(p); !s.ok()) return s;
    }
    for (const v1::SocketPairState& p : image_.socket_pairs()) {
      if (Status s = NewId(p.id(), "socket pair", nullptr); !s.ok()) return s;
      if (Status s = CheckPair(p); !s.ok()) return s;
    }
    for (const v1::File& f : image_.files()) {
      if (Status s = NewId(f.id(), "file", &f); !s.ok()) return s;
    }
    ends_.assign(files_.size(), 0);
    CountRanks();
    for (const v1::File& f : image_.files()) {
      if (Status s = CheckFile(f); !s.ok()) return s;
    }
    if (Status s = CheckEnds(); !s.ok()) return s;
    if (Status s = CheckNesting(); !s.ok()) return s;
    if (!fds_.empty() && image_.fds_size() != 0) return Fail("fd table: given twice (records and messages)");
    std::int64_t last_fd = -1;
    auto check_fd = [&](std::int32_t fd, std::uint64_t file_id) {
      auto where = [&] { return "fd " + std::to_string(fd); };  // only for a failure: an image may have 10^6 fds
      if (fd < 0) return Fail(where() + ": negative");
      if (fd <= last_fd) return Fail(where() + ": repeated or out of order (fds are listed in ascending order)");
      last_fd = fd;
      const v1::File* file = FileAt(file_id);
      if (file == nullptr) return Fail(where() + ": file " + std::to_string(file_id) + " is not in the image");
      if (file->has_host() && file->host().detached()) return Fail(where() + ": a detached host file has no fd");
      return Status{};
    };
    for (const FdRecord& r : fds_) {
      if (Status s = check_fd(r.fd, r.file); !s.ok()) return s;
    }
    for (const v1::FdEntry& e : image_.fds()) {
      if (Status s = check_fd(e.fd(), e.file()); !s.ok()) return s;
    }
    std::set<std::string> names;
    for (const v1::Root& r : image_.roots()) {
      if (r.name().empty() || !names.insert(r.name()).second) return Fail("root '" + r.name() + "': empty or repeated name");
      if (!FileAt(r.file())) return Fail("root " + r.name() + ": file " + std::to_string(r.file()) + " is not in the image");
    }
    return {};
  }

 private:
  static Status Fail(std::string message) { return Status::Error(EINVAL, std::move(message)); }

  Status NewId(std::uint64_t id, const char* what, const v1::File* file) {
    if (id == 0) return Fail(std::string(what) + " with object id 0");
    if (!index_.Insert(id, static_cast<std::uint32_t>(files_.size()))) {
      return Fail(std::string(what) + " " + std::to_string(id) + ": object id repeated");
    }
    files_.push_back(file);
    return {};
  }

  // The file record of an id, or null (no such object, or shared state).
  const v1::File* FileAt(std::uint64_t id) const {
    const std::uint32_t at = index_.Find(id);
    return at == state::IdIndex::kNone ? nullptr : files_[at];
  }
  // The position of the shared object `id` of the given kind, or kNone.
  std::uint32_t SharedAt(std::uint64_t id, const std::set<std::uint64_t>& of_kind) const {
    return of_kind.count(id) ? index_.Find(id) : state::IdIndex::kNone;
  }

  // Entries per file over all polls, so that each file's queue ranks can be checked to be 0..m-1, each once.
  void CountRanks() {
    rank_first_.assign(files_.size() + 1, 0);
    for (const v1::File& f : image_.files()) {
      if (!f.has_eventpoll()) continue;
      for (std::uint64_t file : f.eventpoll().files()) {
        const std::uint32_t at = index_.Find(file);
        if (at != state::IdIndex::kNone) ++rank_first_[at + 1];
      }
    }
    for (std::size_t i = 0; i < files_.size(); ++i) rank_first_[i + 1] += rank_first_[i];
    rank_taken_.assign(rank_first_.back(), false);
  }

  Status CheckPipe(const v1::PipeState& p) {
    std::vector<state::PipeSlotFacts> slots;
    slots.reserve(static_cast<std::size_t>(p.slots_size()));
    for (const v1::PipeSlot& s : p.slots()) slots.push_back({s.offset(), s.data().size()});
    if (std::string bad = state::CheckPipe(slots, p.readers(), p.writers()); !bad.empty()) {
      return Fail("pipe " + std::to_string(p.id()) + ": " + bad);
    }
    pipes_.insert(p.id());
    return {};
  }

  // The same invariants as a socket pair loaded from a Boost archive (state/invariants.h), and a segment no larger
  // than the limit.
  Status CheckPair(const v1::SocketPairState& p) {
    std::vector<state::SegmentFacts> segments[2];
    state::SocketEndFacts facts[2];
    int side = 0;
    for (const v1::SocketEnd* e : {&p.end0(), &p.end1()}) {
      for (int i = 0; i < e->receive_size(); ++i) {
        const v1::Segment& s = e->receive(i);
        if (s.data().size() > limits_.max_segment_bytes) {
          return Fail("socket pair " + std::to_string(p.id()) + ", end " + std::to_string(side) + ", segment " +
                      std::to_string(i) + ": larger than the limit");
        }
        segments[side].push_back({s.data().size(), s.offset(), s.truesize()});
      }
      facts[side] = {segments[side], e->wmem(), e->sndbuf(), e->shutdown(), e->error_reset(), e->open()};
      ++side;
    }
    if (std::string bad = state::CheckSocketPair(facts[0], facts[1]); !bad.empty()) {
      return Fail("socket pair " + std::to_string(p.id()) + ": " + bad);
    }
    pairs_.insert(p.id());
    return {};
  }

  // Marks end `bit` of the shared object at `at` as having its file; false if it had one already.
  bool TakeEnd(std::uint32_t at, int bit) {
    if (ends_[at] & bit) return false;
    ends_[at] = static_cast<std::uint8_t>(ends_[at] | bit);
    return true;
  }

  Status CheckFile(const v1::File& f) {
    auto where = [&] { return "file " + std::to_string(f.id()); };  // only for a failure
    switch (f.kind_case()) {
      case v1::File::kEventfd:
        if (std::string bad = state::CheckEventFd(f.eventfd().count()); !bad.empty()) return Fail(where() + ": " + bad);
        return {};
      case v1::File::kPipeRead:
      case v1::File::kPipeWrite: {
        const std::uint64_t pipe = f.has_pipe_read() ? f.pipe_read().pipe() : f.pipe_write().pipe();
        const std::uint32_t at = SharedAt(pipe, pipes_);
        if (at == state::IdIndex::kNone) return Fail(where() + ": pipe " + std::to_string(pipe) + " is not in the image");
        if (!TakeEnd(at, f.has_pipe_read() ? 1 : 2)) return Fail(where() + ": a second file for the same pipe end");
        return {};
      }
      case v1::File::kUnixStream: {
        const v1::UnixStreamState& s = f.unix_stream();
        const std::uint32_t at = SharedAt(s.pair(), pairs_);
        if (at == state::IdIndex::kNone) return Fail(where() + ": socket pair " + std::to_string(s.pair()) + " is not in the image");
        if (s.side() > 1) return Fail(where() + ": side must be 0 or 1");
        if (!TakeEnd(at, 1 << s.side())) return Fail(where() + ": a second file for the same socket end");
        return {};
      }
      case v1::File::kEventpoll:
        return CheckPoll(f.id(), f.eventpoll());
      case v1::File::kHost: {
        const v1::HostFileReference& h = f.host();
        if (h.fd() < 0) return Fail(where() + ": host fd " + std::to_string(h.fd()) + " is negative");
        switch (h.file_type()) {
          case 0:  // an anonymous inode (eventfd, epoll, timerfd, signalfd): st_mode has no type bits
          case S_IFSOCK: case S_IFLNK: case S_IFREG: case S_IFBLK: case S_IFDIR: case S_IFCHR: case S_IFIFO:
            return {};
          default:
            return Fail(where() + ": host file type " + std::to_string(h.file_type()) + " is not an S_IFMT value");
        }
      }
      case v1::File::kTcpConnection:
      case v1::File::kTcpListener: {
        const bool connection = f.has_tcp_connection();
        const std::string bad = connection ? CheckTcpConnection(f.tcp_connection()) : CheckTcpListener(f.tcp_listener());
        const char* what = connection ? ": TCP connection: " : ": TCP listener: ";
        if (!bad.empty()) return Fail(where() + what + bad);
        const int fd = connection ? f.tcp_connection().fd() : f.tcp_listener().fd();
        if (!by_value_fds_.insert(fd).second) {
          return Fail(where() + what + "fd " + std::to_string(fd) + " is another by-value socket's too");
        }
        return {};
      }
      case v1::File::kEmbedder:
        if (state::BuiltInFileKind(f.embedder().kind())) {
          return Fail(where() + ": embedder kind '" + f.embedder().kind() + "' is a built-in kind");
        }
        if (f.embedder().kind().empty()) return Fail(where() + ": embedder file without a kind");
        return {};
      case v1::File::KIND_NOT_SET:
        break;
    }
    return Fail(where() + ": no kind");
  }

  // The kernel epoll's columns: one per entry when the poll records its kernel epoll, none otherwise; distinct keys
  // below next_key (0 for an in-memory entry, which has no registration). Whether the process holds that kernel epoll
  // is the restore's question (it adopts it only if /proc/self/fdinfo agrees, and registers afresh otherwise).
  Status CheckKernel(std::uint64_t id, const v1::EventPollState& p) {
    auto where = [&] { return "poll " + std::to_string(id); };  // only for a failure
    const int n = p.files_size();
    if (!p.has_kernel()) {
      if (p.kernel_keys_size() != 0 || p.kernel_fds_size() != 0) {
        return Fail(where() + ": kernel columns without a kernel epoll");
      }
      return {};
    }
    if (p.kernel_keys_size() != n || p.kernel_fds_size() != n) {
      return Fail(where() + ": kernel columns of a different length");
    }
    if (p.kernel().fd() < 0 || p.kernel().bell_fd() < -1) return Fail(where() + ": a negative kernel epoll fd");
    if (p.kernel().bell_set() && !p.kernel().bell_level()) {
      return Fail(where() + ": a set bell that is not level-triggered");
    }
    auto taken = [&](int i) {
      return Fail(where() + ", entry " + std::to_string(i) + ": kernel key " + std::to_string(p.kernel_keys(i)) +
                  " is taken or not below next_key");
    };
    // Each key once: the keys sorted (a poll hands them out in increasing order, so they mostly come sorted), then
    // neighbours compared; a tree of them took a heap block per kernel entry.
    std::vector<std::uint64_t> keys;
    keys.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = p.kernel_keys(i);
      const int fd = p.kernel_fds(i);
      if (fd < -1 || (key == 0 && fd != -1)) {
        return Fail(where() + ", entry " + std::to_string(i) + ": a bad kernel fd");
      }
      if (key == 0) continue;
      if (key >= p.kernel().next_key()) return taken(i);
      keys.push_back(key);
    }
    if (!std::is_sorted(keys.begin(), keys.end())) std::sort(keys.begin(), keys.end());
    if (auto twice = std::adjacent_find(keys.begin(), keys.end()); twice != keys.end()) {
      // The message names the second entry that has the key, as a walk in entry order finds it.
      bool seen = false;
      for (int i = 0; i < n; ++i) {
        if (p.kernel_keys(i) != *twice) continue;
        if (seen) return taken(i);
        seen = true;
      }
    }
    return {};
  }

  Status CheckPoll(std::uint64_t id, const v1::EventPollState& p) {
    auto where = [&] { return "poll " + std::to_string(id); };  // only for a failure: a world may have many polls
    const int n = p.files_size();
    if (p.fds_size() != n || p.events_size() != n || p.data_size() != n || p.lists_size() != n ||
        p.queue_ranks_size() != n) {
      return Fail(where() + ": entry columns of different lengths");
    }
    if (static_cast<std::uint64_t>(n) > limits_.max_entries) return Fail(where() + ": too many entries");
    if (Status s = CheckKernel(id, p); !s.ok()) return s;
    // Marks per entry, inside the validator for the usual few entries (a world of many small polls took two heap
    // blocks a poll here), and only for a poll whose ready order lists any.
    boost::container::small_vector<bool, 64> in_ready;
    if (p.ready_order_size() > 0) in_ready.resize(static_cast<std::size_t>(n), false);
    for (std::uint32_t i : p.ready_order()) {
      if (i >= static_cast<std::uint32_t>(n) || in_ready[i] || p.lists(static_cast<int>(i)) != v1::ENTRY_LIST_READY) {
        return Fail(where() + ": the ready order lists entry " + std::to_string(i) + ", which is not a ready entry");
      }
      in_ready[i] = true;
    }
    boost::container::small_vector<bool, 64> in_kernel_ready;
    if (p.kernel_ready_order_size() > 0) in_kernel_ready.resize(static_cast<std::size_t>(n), false);
    for (std::uint32_t i : p.kernel_ready_order()) {
      if (i >= static_cast<std::uint32_t>(n) || in_kernel_ready[i] || i >= static_cast<std::uint32_t>(p.kernel_keys_size()) ||
          p.kernel_keys(static_cast<int>(i)) == 0) {
        return Fail(where() + ": the kernel ready order lists entry " + std::to_string(i) +
                    ", which is not a kernel entry or is listed twice");
      }
      in_kernel_ready[i] = true;
    }
    // The columns as arrays: RepeatedField's accessors are out-of-line calls into libprotobuf (an extern template),
    // a few per entry otherwise.
    const std::uint64_t* files = p.files().data();
    const std::int32_t* fds = p.fds().data();
    const std::uint32_t* events_of = p.events().data();
    const int* lists = p.lists().data();
    const std::uint32_t* ranks = p.queue_ranks().data();
    for (int i = 0; i < n; ++i) {
      auto at = [&] { return where() + ", entry " + std::to_string(i) + ": "; };
      const std::uint64_t file = files[i];
      const std::uint32_t position = index_.Find(file);
      const v1::File* target = position == state::IdIndex::kNone ? nullptr : files_[position];
      if (!target) return Fail(at() + "file " + std::to_string(file) + " is not in the image");
      if (file == id) return Fail(at() + "a poll cannot watch itself");
      if (fds[i] < 0) return Fail(at() + "negative fd");
      if (i > 0 && (file < files[i - 1] || (file == files[i - 1] && fds[i] <= fds[i - 1]))) {
        return Fail(at() + (file == files[i - 1] && fds[i] == fds[i - 1]
                                ? std::string("a second entry for the same (file, fd)")
                                : "out of (file id, fd) order"));
      }
      const std::uint32_t events = events_of[i];
      const std::uint32_t armed = events & ~kEpollPrivateBits;
      const int list = lists[i];
      if (list != v1::ENTRY_LIST_WAITING && list != v1::ENTRY_LIST_READY && list != v1::ENTRY_LIST_DISABLED) {
        return Fail(at() + "unknown list");
      }
      if ((list == v1::ENTRY_LIST_READY) != (!in_ready.empty() && in_ready[static_cast<std::size_t>(i)])) {
        return Fail(at() + "ready, but not in the ready order");
      }
      if (list == v1::ENTRY_LIST_DISABLED && (armed != 0 || (events & kEpollOneShot) == 0)) {
        return Fail(at() + "disabled, but its events " + FormatEventMask(events) + " are not a fired one-shot's");
      }
      if ((events & kEpollExclusive) != 0) {
        if ((events & ~kEpollExclusiveOkBits) != 0) return Fail(at() + "EPOLLEXCLUSIVE with bits Linux refuses");
        if (target->has_eventpoll()) return Fail(at() + "EPOLLEXCLUSIVE on a poll");
      }
      if (target->has_eventpoll()) children_[id].push_back(file);
      const std::uint32_t rank = ranks[i];
      const std::uint32_t entries_of_file = rank_first_[position + 1] - rank_first_[position];
      if (rank >= entries_of_file) {
        return Fail(at() + "queue rank " + std::to_string(rank) + " is out of range: file " + std::to_string(file) +
                    " has " + std::to_string(entries_of_file) + " entries in all polls (ranks 0.." +
                    std::to_string(entries_of_file - 1) + ")");
      }
      auto taken = rank_taken_[rank_first_[position] + rank];
      if (taken) {
        return Fail(at() + "queue rank " + std::to_string(rank) + " is taken by another entry of file " +
                    std::to_string(file));
      }
      taken = true;
    }
    return {};
  }

  Status CheckEnds() {
    for (const v1::PipeState& p : image_.pipes()) {
      const int bits = ends_[index_.Find(p.id())];
      if (((bits & 1) != 0) != (p.readers() == 1) || ((bits & 2) != 0) != (p.writers() == 1)) {
        return Fail("pipe " + std::to_string(p.id()) + ": its open ends do not match its files");
      }
    }
    for (const v1::SocketPairState& p : image_.socket_pairs()) {
      const int bits = ends_[index_.Find(p.id())];
      if (((bits & 1) != 0) != p.end0().open() || ((bits & 2) != 0) != p.end1().open()) {
        return Fail("socket pair " + std::to_string(p.id()) + ": its open ends do not match its files");
      }
    }
    return {};
  }

  // Polls watching polls: no cycle, no chain of more than kMaxNests links.
  Status CheckNesting() {
    // Each poll's height by its position (every id here is an object's: CheckPoll found each child), -1 while being
    // visited: an array, not a tree node per poll visited (an image is validated at each of a replay's checkpoints).
    constexpr int kUnknown = -2;
    std::vector<int> height(files_.size(), kUnknown);
    std::function<Status(std::uint64_t)> visit = [&](std::uint64_t id) -> Status {
      int& mine = height[index_.Find(id)];  // the array is not resized: the reference stays valid
      if (mine != kUnknown) {
        return mine < 0 ? Fail("poll " + std::to_string(id) + ": polls watch each other in a cycle") : Status{};
      }
      mine = -1;
      int h = 0;
      if (auto kids = children_.find(id); kids != children_.end()) {
        for (std::uint64_t child : kids->second) {
          if (Status s = visit(child); !s.ok()) return s;
          h = std::max(h, height[index_.Find(child)] + 1);
        }
      }
      if (h > kMaxNests) return Fail("poll " + std::to_string(id) + ": polls nested deeper than " + std::to_string(kMaxNests));
      mine = h;
      return {};
    };
    for (const auto& [id, kids] : children_) {
      if (Status s = visit(id); !s.ok()) return s;
    }
    return {};
  }

  const v1::Image& image_;
  const Limits& limits_;
  const FdRecords fds_;  // the fd table, if the image's was read apart (WithDecodedFds)
  state::IdIndex index_;                    // every object id -> position
  std::vector<const v1::File*> files_;      // by position; null for shared state
  std::set<std::uint64_t> pipes_, pairs_;   // ids of valid shared objects, by kind
  std::set<int> by_value_fds_;              // the fds of the TCP records seen so far
  std::vector<std::uint8_t> ends_;          // by position of a shared object: a bit per end that has its file
  std::vector<std::uint32_t> rank_first_;   // by file position: its ranks' bits are rank_taken_[first[at] ..)
  std::vector<bool> rank_taken_;
  std::map<std::uint64_t, std::vector<std::uint64_t>> children_;  // poll id -> polls it watches
};

// ---- restore ---------------------------------------------------------------------------------------------------------

// "host fd 7", "TCP connection at fd 7", "TCP listener at fd 3": for messages.
std::string HostKindText(const v1::File& f) {
  if (f.has_tcp_connection()) return "TCP connection at fd " + std::to_string(f.tcp_connection().fd());
  if (f.has_tcp_listener()) return "TCP listener at fd " + std::to_string(f.tcp_listener().fd());
  return "host fd " + std::to_string(f.host().fd());
}

// Builds the world of a validated image: objects at the positions the Validator gave them, entries straight into
// their pending polls (already checked), then after_load exactly as for a Boost archive.
void Build(const v1::Image& image, World* out, const ResolvedFiles& resolved, BuildTimes* times, FdRecords fd_records) {
  const auto started = std::chrono::steady_clock::now();
  state::LoadObjects objects;
  objects.Reserve(static_cast<std::size_t>(image.pipes_size()) + static_cast<std::size_t>(image.socket_pairs_size()) +
                  static_cast<std::size_t>(image.files_size()));
  state::PendingPolls polls;  // by the poll's position
  {
    std::size_t n = 0;
    for (const v1::File& f : image.files()) n += f.has_eventpoll() ? 1 : 0;
    polls.Reserve(n);
  }
  for (const v1::PipeState& p : image.pipes()) {
    auto pipe = std::make_shared<PipeBuffer>();
    const std::uint32_t at = objects.Add(p.id(), state::ObjectKind::kPipe);
    BuildObject(p, *pipe, objects, at);
    objects.pipes[at] = std::move(pipe);
  }
  for (const v1::SocketPairState& p : image.socket_pairs()) {
    auto pair = std::make_shared<SocketPairState>();
    const std::uint32_t at = objects.Add(p.id(), state::ObjectKind::kSocketPair);
    BuildObject(p, *pair, objects, at);
    objects.pairs[at] = std::move(pair);
  }
  // Every file first (entries refer to files by id), then their references.
  for (const v1::File& f : image.files()) {
    std::shared_ptr<File> file;
    std::uint32_t at = 0;
    switch (f.kind_case()) {
      case v1::File::kEventfd: {
        at = objects.Add(f.id(), state::ObjectKind::kEventFd);
        auto e = MakeFile<EventFd>(0, false);
        BuildObject(f.eventfd(), *e, objects, at);
        file = std::move(e);
        break;
      }
      case v1::File::kPipeRead: {
        at = objects.Add(f.id(), state::ObjectKind::kPipeRead);
        auto r = MakeFile<PipeReadEnd>(nullptr);
        BuildObject(f.pipe_read(), *r, objects, at);
        file = std::move(r);
        break;
      }
      case v1::File::kPipeWrite: {
        at = objects.Add(f.id(), state::ObjectKind::kPipeWrite);
        auto w = MakeFile<PipeWriteEnd>(nullptr);
        BuildObject(f.pipe_write(), *w, objects, at);
        file = std::move(w);
        break;
      }
      case v1::File::kUnixStream: {
        at = objects.Add(f.id(), state::ObjectKind::kUnixStream);
        auto s = MakeFile<UnixSocket>(nullptr, 0);
        BuildObject(f.unix_stream(), *s, objects, at);
        file = std::move(s);
        break;
      }
      case v1::File::kEventpoll:
        at = objects.Add(f.id(), state::ObjectKind::kEventPoll);
        file = EventPoll::Create();
        break;
      case v1::File::kEmbedder: {
        const std::string& kind = f.embedder().kind();
        at = objects.Add(f.id(), state::ObjectKind::kEmbedder, kind);
        if (const std::shared_ptr<File>* made = resolved.Find(f.id())) {
          file = *made;
          break;
        }
        FileFactory factory = state::FindFileType(kind);
        if (!factory) throw LoadError("file " + std::to_string(f.id()) + ": embedder kind '" + kind + "' is not registered");
        Result<std::shared_ptr<File>> made = factory(f.embedder().state());
        if (!made.ok() || !made.value() || !made.value()->managed()) {
          throw LoadError("file " + std::to_string(f.id()) + ": the factory of '" + kind + "' failed");
        }
        file = std::move(made).value();
        break;
      }
      case v1::File::kHost:
      case v1::File::kTcpConnection:
      case v1::File::kTcpListener: {
        at = objects.Add(f.id(), state::ObjectKind::kHost);
        const std::shared_ptr<File>* made = resolved.Find(f.id());
        if (made == nullptr) {
          throw LoadError("file " + std::to_string(f.id()) + " (" + HostKindText(f) +
                          "): a host file or a TCP socket by value needs a resolver (restore/restorer.h)");
        }
        file = *made;
        break;
      }
      default:
        throw LoadError("file " + std::to_string(f.id()) + ": kind not restorable");
    }
    objects.files[at] = std::move(file);
  }
  for (const v1::File& f : image.files()) {
    if (!f.has_eventpoll()) continue;
    const std::uint32_t at = objects.Find(f.id());
    auto* poll = static_cast<EventPoll*>(objects.files[at].get());
    state::PendingPoll& pending = polls[at];
    pending.checked = true;
    const v1::EventPollState& p = f.eventpoll();
    pending.entries.reserve(static_cast<std::size_t>(p.files_size()));
    for (int i = 0; i < p.files_size(); ++i) {
      PollEntry* e = pending.Make(static_cast<std::size_t>(p.files_size() - i), poll, FileIdentifier{}, 0, 0);
      BuildObject(p, *e, objects, at, i);
      e->FieldsLoaded();
    }
    pending.ready.assign(p.ready_order().begin(), p.ready_order().end());
    pending.ranks.assign(p.queue_ranks().begin(), p.queue_ranks().end());  // LargeAllocator: see PendingPoll
    if (p.has_kernel()) {
      EventPoll::Impl::KernelState& k = pending.kernel.emplace();
      k.fd = p.kernel().fd();
      k.bell_fd = p.kernel().bell_fd();
      k.bell_level = p.kernel().bell_level();
      k.bell_set = p.kernel().bell_set();
      k.next_key = p.kernel().next_key();
      k.keys.assign(p.kernel_keys().begin(), p.kernel_keys().end());
      k.fds.assign(p.kernel_fds().begin(), p.kernel_fds().end());
    }
  }
  // fds are ascending (Validate): the last is the highest
  const std::int64_t highest = !fd_records.empty() ? fd_records.back().fd
                               : image.fds_size() > 0 ? image.fds(image.fds_size() - 1).fd()
                                                      : -1;
  if (highest >= 0) out->fds.Reserve(static_cast<int>(std::min<std::int64_t>(highest + 1, INT_MAX)));
  {
    FdTable::Filler fds(out->fds);
    auto install = [&](std::int32_t fd, std::uint64_t file) {
      if (fds.InstallAt(fd, objects.files[objects.Find(file)])) {
        throw LoadError("fd " + std::to_string(fd) + ": cannot be installed");
      }
    };
    for (const FdRecord& r : fd_records) install(r.fd, r.file);
    for (const v1::FdEntry& e : image.fds()) install(e.fd(), e.file());
  }
  for (const v1::Root& r : image.roots()) out->roots.emplace(r.name(), objects.files[objects.Find(r.file())]);
  const auto built = std::chrono::steady_clock::now();
  state::RunAfterLoad(objects, polls);
  if (times != nullptr) {
    times->build = built - started;
    times->after_load = std::chrono::steady_clock::now() - built;
  }
}

}  // namespace

Status Validate(const v1::Image& image, const Limits& limits) { return Validator(image, limits).Run(); }
Status ValidateDecoded(const v1::Image& image, const Limits& limits, FdRecords fds) {
  return Validator(image, limits, fds).Run(false);
}

Status Restore(const v1::Image& image, World* out, const Limits& limits) {
  static const ResolvedFiles kNone;
  return Restore(image, out, limits, kNone, nullptr);
}

Status Restore(const v1::Image& image, World* out, const Limits& limits, const ResolvedFiles& resolved,
               BuildTimes* times) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "restore: the world is not empty");
  if (Status s = Validate(image, limits); !s.ok()) return s;  // nothing is created before the image is known to be whole
  return RestoreValidated(image, out, resolved, times);
}

Status RestoreValidated(const v1::Image& image, World* out, const ResolvedFiles& resolved, BuildTimes* times,
                        FdRecords fds) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "restore: the world is not empty");
  try {
    Build(image, out, resolved, times, fds);
    return {};
  } catch (const std::exception& e) {
    out->roots.clear();
    out->fds.Clear();
    return Status::Error(EINVAL, std::string("restore: ") + e.what());
  }
}

// ---- bytes and JSON --------------------------------------------------------------------------------------------------

// Protobuf would parse or serialize a string that is not UTF-8 by logging to stderr (image/utf8.h): such an image
// is refused first, with the string's location.
namespace {
Status NonUtf8(const char* stage, const std::string& at) {
  return Status::Error(EINVAL, std::string(stage) + ": " + at + ": not valid UTF-8");
}
// The options of an arena an image lives in, a save's or a decode's: its blocks come from AllocateBlock (big_buffer.h),
// so a column of a million entries lands in huge pages instead of being faulted in 4 KiB at a time, and a smaller
// block is kept for the next save or decode of its size; they double up to 4 MiB (protobuf's default stops at 8 KiB:
// a million fd records then take a few huge-page blocks instead of thousands of 8 KiB heap blocks faulted in page by
// page). The first is `first_block` bytes (0: protobuf's default).
google::protobuf::ArenaOptions ImageArenaOptions(std::size_t first_block) {
  google::protobuf::ArenaOptions options;
  options.block_alloc = &AllocateBlock;
  options.block_dealloc = &FreeBlock;
  options.max_block_size = std::size_t{4} << 20;
  if (first_block != 0) options.start_block_size = first_block;
  return options;
}
// Refuses a payload whose strings or wire format protobuf would refuse, before protobuf sees it.
Status CheckPayload(std::string_view payload) {
  const PayloadStrings strings = CheckPayloadStrings(payload, *v1::Image::descriptor());
  if (!strings.non_utf8.empty()) return NonUtf8("decode", strings.non_utf8);
  if (strings.malformed) return Status::Error(EINVAL, "decode: the payload is not a valid epollcr.v1.Image");
  return {};
}
}  // namespace

Result<std::string> Encode(const v1::Image& image) {
  if (std::string at = FindNonUtf8InMessage(image); !at.empty()) return NonUtf8("encode", at);
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    if (!image.SerializeToCodedStream(&coded)) return Status::Error(EINVAL, "encode: the image is too large");
  }
  return bytes;
}

Result<v1::Image> Decode(std::string_view payload) {
  v1::Image image;
  if (Status s = CheckPayload(payload); !s.ok()) return s;
  if (payload.size() > static_cast<std::size_t>(INT_MAX) ||
      !image.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return Status::Error(EINVAL, "decode: the payload is not a valid epollcr.v1.Image");
  }
  return image;
}

Result<std::string> ToJson(const v1::Image& image) {
  if (std::string at = FindNonUtf8InMessage(image); !at.empty()) return NonUtf8("json", at);
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(image, &json, options);
  if (!st.ok()) return Status::Error(EINVAL, "json: " + st.ToString());
  return json;
}

Result<v1::Image> FromJson(std::string_view json) {
  v1::Image image;
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &image);
  if (!st.ok()) return Status::Error(EINVAL, "json: " + st.ToString());
  return image;
}

Status SaveImageWith(const World& world, const SaveOptions& options, const std::function<char*(std::size_t)>& place,
                     std::size_t* size) {
  // The image is captured into an arena and encoded straight after the room left for the frame header, so a save
  // allocates a few large blocks, not a message per file: fresh memory costs a page fault per 4 KiB page (BigBuffer),
  // and huge-page blocks take one per 2 MiB. About 150 bytes of decoded image per fd.
  // The first block is a whole huge page for a world that fills most of one, else its own size (a huge page would be
  // several times a small world's heap: BENCHMARKS.md goal (i), a save's peak ≤ 3 × the world's heap; 2 MiB was 7 × a
  // 1,000-fd world's). Either is kept when freed for the next save of its size (AllocateBlock, big_buffer.h), which
  // then finds it faulted in already: from malloc, such a block was given back to the kernel at the end of each save
  // and faulted in again by the next (26 faults a save of 1,000 fds).
  google::protobuf::Arena arena(ImageArenaOptions(
      BigBuffer::FirstBlockFor(std::size_t{192} * static_cast<std::size_t>(std::max(world.fds.Count(), 1)))));
  auto* image = google::protobuf::Arena::CreateMessage<v1::Image>(&arena);
  Records records;
  if (Status s = CaptureInto(world, options, image, &records); !s.ok()) return s;
  // The strings a capture writes that are not epollcr's own: root names and embedder kinds (image.proto has no
  // other string field; image_strings_test holds Encode's general check to the same answer).
  for (int i = 0; i < image->roots_size(); ++i) {
    if (!IsUtf8(image->roots(i).name())) return NonUtf8("encode", "roots[" + std::to_string(i) + "].name");
  }
  if (records.non_utf8_kind) {
    return NonUtf8("encode", "files[" + std::to_string(*records.non_utf8_kind) + "].embedder.kind");
  }
  // The payload is the image's fields in number order, as Encode writes them: the header (1), the fd table (2) from
  // `records`, the roots, pipes and socket pairs (3 to 5) as the image serializes them once the header and the network
  // lock are taken out of it, the files (6) from `records`, and the network lock (7).
  const v1::Header* image_header = image->unsafe_arena_release_header();
  const std::size_t header_bytes = image_header->ByteSizeLong();
  const v1::NetworkLock* lock = image->has_network_lock() ? image->unsafe_arena_release_network_lock() : nullptr;
  const std::size_t lock_bytes = lock != nullptr ? MessageFieldSize(lock->ByteSizeLong()) : 0;
  const std::size_t rest = image->ByteSizeLong();
  const std::size_t payload = MessageFieldSize(header_bytes) + records.fds_size + rest + records.files_size + lock_bytes;
  if (payload > static_cast<std::size_t>(INT_MAX)) return Status::Error(EINVAL, "encode: the image is too large");
  char* bytes = place(kHeaderSize + payload);
  if (bytes == nullptr) return Status::Error(ENOSPC, "encode: no room for the image");
  {
    auto* at = reinterpret_cast<std::uint8_t*>(bytes + kHeaderSize);
    at = PutMessageField(at, v1::Image::kHeaderFieldNumber, *image_header);
    if (records.fds_size != 0) std::memcpy(at, records.fds, records.fds_size);
    at += records.fds_size;
    {
      google::protobuf::io::ArrayOutputStream stream(at, static_cast<int>(rest));
      google::protobuf::io::CodedOutputStream coded(&stream);
      coded.SetSerializationDeterministic(true);
      image->SerializeWithCachedSizes(&coded);
      if (coded.HadError()) return Status::Error(EINVAL, "encode: the image changed size while it was encoded");
    }
    at += rest;
    if (records.files_size != 0) std::memcpy(at, records.files, records.files_size);
    at += records.files_size;
    if (lock != nullptr) PutMessageField(at, v1::Image::kNetworkLockFieldNumber, *lock);
  }
  const FrameHeaderBytes header = FrameHeader(std::string_view(bytes + kHeaderSize, payload));
  std::memcpy(bytes, header.data(), header.size());
  *size = kHeaderSize + payload;
  return {};
}

Status SaveImageInto(const World& world, const SaveOptions& options, BigBuffer* out, std::size_t* size) {
  BigBuffer buffer;
  Status s = SaveImageWith(
      world, options,
      [&](std::size_t bytes) {
        buffer = BigBuffer(bytes);
        return static_cast<char*>(buffer.data());
      },
      size);
  if (s.ok()) *out = std::move(buffer);
  return s;
}

// Encoded straight into the string it returns: a buffer of its own, then a copy, would touch twice the memory.
Result<std::string> SaveImage(const World& world, const SaveOptions& options) {
  std::string bytes;
  std::size_t size = 0;
  Status s = SaveImageWith(
      world, options,
      [&](std::size_t n) {
        bytes.resize(n);
        return bytes.data();
      },
      &size);
  if (!s.ok()) return s;
  bytes.resize(size);
  return bytes;
}

namespace {

Status DecodeAndRestore(std::string_view payload, World* out) {
  return WithDecodedFds(payload, [out](const v1::Image& image, FdRecords fds) {
    if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "restore: the world is not empty");
    if (Status s = ValidateDecoded(image, {}, fds); !s.ok()) return s;  // nothing is created before it is known whole
    return RestoreValidated(image, out, {}, nullptr, fds);
  });
}

}  // namespace

namespace {

// The arena a decoded image lives in. A large payload starts at a huge page, so that no block of its image is in 4 KiB
// pages, each a fault of its own (what a fault costs: BENCHMARKS.md, "Machine", the BM_PageFault rows); otherwise
// every block below 2 MiB would be faulted in page by page. A decoded image takes about three times its payload, so
// from 256 KiB on the first 2 MiB block is mostly used.
google::protobuf::ArenaOptions DecodeArenaOptions(std::string_view payload) {
  return ImageArenaOptions(payload.size() >= (std::size_t{256} << 10) ? BigBuffer::kHugePage : 0);
}

Status NotAnImage() { return Status::Error(EINVAL, "decode: the payload is not a valid epollcr.v1.Image"); }

// A varint of at most `max_bytes` bytes at `p` (advanced past it); false if it is longer or cut short.
inline bool ReadVarint(const char*& p, const char* end, std::uint64_t* value, int max_bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < max_bytes && p != end; ++i) {
    const auto byte = static_cast<std::uint8_t>(*p++);
    v |= std::uint64_t{byte & 0x7fu} << (7 * i);
    if ((byte & 0x80) == 0) {
      *value = v;
      return true;
    }
  }
  return false;
}

// One top-level field of an Image payload at `p` (advanced past it): its number and wire type, and for a
// length-delimited one its bytes. False if malformed, or a group (no writer makes one): protobuf then decides.
inline bool NextField(const char*& p, const char* end, std::uint32_t* number, int* wire_type, std::string_view* bytes) {
  std::uint64_t tag = 0, v = 0;
  if (!ReadVarint(p, end, &tag, 5) || (tag >> 3) == 0 || tag > UINT32_MAX) return false;
  *number = static_cast<std::uint32_t>(tag >> 3);
  *wire_type = static_cast<int>(tag & 7);
  switch (*wire_type) {
    case 0: return ReadVarint(p, end, &v, 10);
    case 1:
    case 5: {
      const std::size_t n = *wire_type == 1 ? 8 : 4;
      if (static_cast<std::size_t>(end - p) < n) return false;
      p += n;
      return true;
    }
    case 2:
      if (!ReadVarint(p, end, &v, 5) || v > static_cast<std::uint64_t>(end - p)) return false;
      *bytes = std::string_view(p, v);
      p += v;
      return true;
    default: return false;
  }
}

// An FdEntry's bytes as every writer makes them: fd (field 1, 0 to INT32_MAX) and file (field 2, below 2^63), each a
// varint, in any order, either absent (0, as protobuf reads it) or repeated (the last one counts, as for protobuf).
// Anything else (another field, a negative fd, a longer varint) is left to protobuf: false.
inline bool ReadFdEntry(std::string_view bytes, FdRecord* out) {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  std::uint64_t fd = 0, file = 0;
  while (p != end) {
    const auto tag = static_cast<std::uint8_t>(*p++);
    if (tag == ((v1::FdEntry::kFdFieldNumber << 3) | 0)) {
      if (!ReadVarint(p, end, &fd, 5) || fd > static_cast<std::uint64_t>(INT32_MAX)) return false;
    } else if (tag == ((v1::FdEntry::kFileFieldNumber << 3) | 0)) {
      if (!ReadVarint(p, end, &file, 9)) return false;
    } else {
      return false;
    }
  }
  *out = {static_cast<std::int32_t>(fd), file};
  return true;
}

// An eventfd's File record as every writer makes it (PutEventFdRecord, or protobuf's encoding of the message):
// File{id = 1, eventfd = 2: EventFdState{count = 1, semaphore = 2}}, each field at most once and in that order, a
// zero field left out (the eventfd field never is), the id and the count below 2^63 (varints of at most 9 bytes), the
// semaphore 0 or 1. Anything else is left to protobuf: false.
struct EventFdRecord {
  std::uint64_t id = 0;
  std::uint64_t count = 0;
  bool semaphore = false;
};
inline bool ReadEventFdFile(std::string_view bytes, EventFdRecord* out) {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  EventFdRecord r;
  if (p != end && *p == ((v1::File::kIdFieldNumber << 3) | 0)) {
    ++p;
    if (!ReadVarint(p, end, &r.id, 9)) return false;
  }
  if (p == end || *p != ((v1::File::kEventfdFieldNumber << 3) | 2)) return false;
  ++p;
  std::uint64_t length = 0;
  if (!ReadVarint(p, end, &length, 1) || length != static_cast<std::uint64_t>(end - p)) return false;
  if (p != end && *p == ((v1::EventFdState::kCountFieldNumber << 3) | 0)) {
    ++p;
    if (!ReadVarint(p, end, &r.count, 9)) return false;
  }
  if (p != end && *p == ((v1::EventFdState::kSemaphoreFieldNumber << 3) | 0)) {
    ++p;
    if (p == end || (*p != 0 && *p != 1)) return false;
    r.semaphore = *p++ == 1;
  }
  if (p != end) return false;
  *out = r;
  return true;
}

// `payload` parsed into `image` but for its fd table, which goes into `records` (on the arena, *count of them): the
// runs of other fields between fd records are merged into the image in order, which is what parsing the whole
// payload does with them. Eventfds' File records (ReadEventFdFile) are read here too, and their messages made
// directly, in their places among the files: a small world has a file per entry, and protobuf's parse of each took a
// quarter of its restore. Every string is checked first, as CheckPayload does (its walk over the top level is this
// one's: a second pass over a small world's image was a twentieth of its restore; an fd record has no string, nor has
// an eventfd's).
// False, with nothing decoded that matters, where the payload holds something ReadFdEntry or NextField leaves to
// protobuf, or that CheckPayload would refuse: the caller checks and parses all of it as protobuf then.
bool ParseFdsApart(std::string_view payload, google::protobuf::Arena* arena, v1::Image* image, FdRecord** records,
                   std::size_t* count) {
  constexpr std::uint32_t kFds = v1::Image::kFdsFieldNumber;
  constexpr std::uint32_t kFiles = v1::Image::kFilesFieldNumber;
  static const TopLevelStrings strings(*v1::Image::descriptor());
  const char* const begin = payload.data();
  const char* const end = begin + payload.size();
  std::size_t n = 0, files = 0;
  for (const char* p = begin; p != end;) {
    std::uint32_t number = 0;
    int wire_type = 0;
    std::string_view bytes;
    if (!NextField(p, end, &number, &wire_type, &bytes)) return false;
    if (wire_type != 2) continue;
    if (number == kFds) {
      ++n;
    } else if (!strings.Clean(number, bytes)) {
      return false;
    }
    files += number == kFiles;
  }
  if (n == 0) return false;
  FdRecord* const out = google::protobuf::Arena::CreateArray<FdRecord>(arena, n);
  // What goes into the image, in payload order: runs of fields protobuf merges, and eventfds' records read here
  // (run empty). Merged once every record has been read (a failed record leaves the image untouched).
  struct Piece {
    std::string_view run;
    EventFdRecord eventfd;
  };
  std::vector<Piece> pieces;
  const char* run = begin;
  std::size_t at = 0;
  for (const char* p = begin; p != end;) {
    const char* const field = p;
    std::uint32_t number = 0;
    int wire_type = 0;
    std::string_view bytes;
    NextField(p, end, &number, &wire_type, &bytes);  // read once already
    if (wire_type != 2) continue;
    EventFdRecord eventfd;
    if (number == kFds) {
      if (!ReadFdEntry(bytes, &out[at++])) return false;
    } else if (number != kFiles || !ReadEventFdFile(bytes, &eventfd)) {
      continue;
    }
    if (field != run) pieces.push_back({std::string_view(run, static_cast<std::size_t>(field - run)), {}});
    if (number == kFiles) pieces.push_back({{}, eventfd});
    run = p;
  }
  if (run != end) pieces.push_back({std::string_view(run, static_cast<std::size_t>(end - run)), {}});
  image->mutable_files()->Reserve(static_cast<int>(files));
  for (const Piece& piece : pieces) {
    if (piece.run.empty()) {
      auto* f = google::protobuf::Arena::CreateMessage<v1::File>(arena);
      f->set_id(piece.eventfd.id);
      v1::EventFdState* state = f->mutable_eventfd();
      state->set_count(piece.eventfd.count);
      state->set_semaphore(piece.eventfd.semaphore);
      image->mutable_files()->AddAllocated(f);
      continue;
    }
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const std::uint8_t*>(piece.run.data()),
                                              static_cast<int>(piece.run.size()));
    if (!image->MergePartialFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
      image->Clear();
      return false;
    }
  }
  *records = out;
  *count = n;
  return true;
}

}  // namespace

Status WithDecoded(std::string_view payload, const std::function<Status(const v1::Image&)>& use) {
  if (payload.size() > static_cast<std::size_t>(INT_MAX)) return NotAnImage();
  if (Status s = CheckPayload(payload); !s.ok()) return s;
  google::protobuf::Arena arena(DecodeArenaOptions(payload));
  auto* image = google::protobuf::Arena::CreateMessage<v1::Image>(&arena);
  if (!image->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return NotAnImage();
  return use(*image);
}

Status WithDecodedFds(std::string_view payload, const std::function<Status(const v1::Image&, FdRecords)>& use) {
  if (payload.size() > static_cast<std::size_t>(INT_MAX)) return NotAnImage();
  google::protobuf::Arena arena(DecodeArenaOptions(payload));
  auto* image = google::protobuf::Arena::CreateMessage<v1::Image>(&arena);
  FdRecord* records = nullptr;
  std::size_t count = 0;
  if (!ParseFdsApart(payload, &arena, image, &records, &count)) {  // it checked the strings if it read the payload
    if (Status s = CheckPayload(payload); !s.ok()) return s;
    if (!image->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return NotAnImage();
  }
  return use(*image, FdRecords(records, count));
}

Status LoadImage(std::string_view file_bytes, World* out, const ReadLimits& read_limits) {
  Result<std::string_view> framed = Unframe(file_bytes, read_limits);
  if (!framed.ok()) return framed.status();
  return DecodeAndRestore(framed.value(), out);
}

Status WriteImage(const World& world, const std::string& path) {
  Result<v1::Image> image = Capture(world);
  if (!image.ok()) return image.status();
  Result<std::string> payload = Encode(image.value());
  if (!payload.ok()) return payload.status();
  Status e = WriteImageFile(path, payload.value());
  return {e.code, e.message};
}

Status ReadImage(const std::string& path, World* out, const ReadLimits& read_limits) {
  BigBuffer bytes;
  std::string_view payload;
  if (Status e = ReadImageFileBytes(path, &bytes, &payload, read_limits); !e.ok()) return {e.code, e.message};
  return WithDecodedFds(payload, [&](const v1::Image& image, FdRecords fds) {
    bytes = BigBuffer();  // the decoded image holds copies: the world built next reuses the file's pages
    if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "restore: the world is not empty");
    if (Status s = ValidateDecoded(image, {}, fds); !s.ok()) return s;
    return RestoreValidated(image, out, {}, nullptr, fds);
  });
}

}  // namespace epollcr::image
