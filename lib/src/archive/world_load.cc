// Loading a World: read every object, check it, then run after_load hooks in the order the wait references give.
//
// Stages (docs/state-model.md): (1) shared pipe and socket-pair state, (2) every file created from its header,
// (3) every file's fields, wait references resolved to objects of the archive, (4) the fd table and roots, (5)
// after_load (state/after_load.cc). A failure at any stage drops everything made so far: no file, no registration
// is left behind.
#include <algorithm>
#include <optional>

#include <boost/serialization/array_wrapper.hpp>

#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "event_poll_internal.h"
#include "archive/fields.h"
#include "state/after_load.h"
#include "archive/bounded_archives.h"
#include "archive/columns.h"
#include "archive/field_columns.h"
#include "state/invariants.h"
#include "archive/world_archive.h"

namespace epollcr::archive {

using state::BuiltInFileKind;
using state::CheckEventFd;
using state::FieldOf;
using state::FindFileType;
using state::IdIndex;
using state::kMaxObjects;
using state::ObjectKind;
using state::PendingPoll;

namespace {

using boost::serialization::make_nvp;

template <typename Ar>
class Loader {
 public:
  explicit Loader(Ar& ar) : ar_(ar) {}

  void Read(World* out) {
    std::uint32_t layout = 0;
    ar_ >> make_nvp("layout", layout);
    layout_ = layout;
    if (layout == 0 || layout > kLayoutVersion) {
      throw LoadError("archive layout version " + std::to_string(layout) + " is not one this build reads (1.." +
                      std::to_string(kLayoutVersion) + ")");
    }
    ReadShared();
    ReadFiles();
    CheckFiles();
    ReadTables(out);
    RunAfterLoad(objects_, polls_);
  }

 private:
  std::uint64_t Count(const char* name) {
    std::uint64_t n = 0;
    ar_ >> make_nvp(name, n);
    if (n > kMaxObjects) throw LoadError(std::string(name) + ": count " + std::to_string(n) + " is beyond the limit");
    return n;
  }

  // Layout 6 in a binary archive: a column is its values as an array of T (world_save.cc), not text.
  bool RawColumns() const { return kBinaryArchive<Ar> && layout_ >= 6; }

  // A raw column of `n` values of T. Read in blocks, so that a hostile count in a short archive fails at the archive's
  // end rather than allocating for the count first.
  template <typename T>
  std::vector<T, LargeAllocator<T>> ReadRaw(const char* name, std::uint64_t n) {
    constexpr std::uint64_t kBlock = 1 << 16;
    std::vector<T, LargeAllocator<T>> values;
    values.reserve(std::min(n, kBlock));
    if (n <= kBlock) {
      values.resize(n);
      ar_ >> make_nvp(name, boost::serialization::make_array(values.data(), values.size()));
      return values;
    }
    // Boost's binary array is its bytes one after another: blocks read in turn are the same bytes.
    for (std::uint64_t done = 0; done < n;) {
      const std::uint64_t block = std::min(kBlock, n - done);
      values.resize(done + block);
      ar_ >> make_nvp(name, boost::serialization::make_array(values.data() + done, block));
      done += block;
    }
    return values;
  }

  // A raw field column of `n` values at its field's width (field_columns.h RawWidth), as the 64-bit words the field
  // columns load from (a signed value sign-extended).
  std::vector<std::uint64_t, LargeAllocator<std::uint64_t>> ReadFieldColumn(const char* name, std::uint64_t n,
                                                                            RawWidth width) {
    if (width.bytes == 8) return ReadRaw<std::uint64_t>(name, n);
    auto widen = [&]<typename U>(U) {
      const auto narrow = ReadRaw<U>(name, n);
      std::vector<std::uint64_t, LargeAllocator<std::uint64_t>> values(narrow.size());
      for (std::size_t i = 0; i < narrow.size(); ++i) {
        values[i] = width.is_signed ? static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::make_signed_t<U>>(narrow[i])))
                                    : narrow[i];
      }
      return values;
    };
    switch (width.bytes) {
      case 1: return widen(std::uint8_t{});
      case 2: return widen(std::uint16_t{});
      default: return widen(std::uint32_t{});
    }
  }

  std::uint64_t ReadId() {
    std::uint64_t id = 0;
    ar_ >> make_nvp("id", id);
    return id;
  }

  void ReadShared() {
    const std::uint64_t n = Count("shared_objects");
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t id = ReadId();
      std::string kind;
      ar_ >> make_nvp("kind", kind);
      PlainLoad<Ar> v{ar_};
      if (kind == "pipe") {
        const std::uint32_t at = objects_.Add(id, ObjectKind::kPipe);
        auto pipe = std::make_shared<PipeBuffer>();
        pipe->VisitState(v);
        if (std::string bad = pipe->Validate(); !bad.empty()) throw LoadError(objects_.Name(at) + ": " + bad);
        objects_.pipes[at] = std::move(pipe);
      } else if (kind == "socket-pair") {
        const std::uint32_t at = objects_.Add(id, ObjectKind::kSocketPair);
        auto pair = std::make_shared<SocketPairState>();
        pair->VisitState(v);
        if (std::string bad = pair->Validate(); !bad.empty()) throw LoadError(objects_.Name(at) + ": " + bad);
        objects_.pairs[at] = std::move(pair);
      } else {
        throw LoadError("shared object " + std::to_string(id) + " has unknown kind '" + kind + "'");
      }
    }
  }

  void ReadFiles() {
    if (layout_ >= 3) return ReadFileColumns();
    const std::uint64_t n = Count("files");
    std::vector<std::uint32_t> order;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t id = ReadId();
      std::string kind;
      ar_ >> make_nvp("kind", kind);
      const std::optional<ObjectKind> builtin = BuiltInFileKind(kind);
      const std::uint32_t at = objects_.Add(id, builtin.value_or(ObjectKind::kEmbedder), kind);
      objects_.files[at] = Create(at, kind);
      order.push_back(at);
    }
    for (std::uint32_t at : order) {
      File* f = objects_.files[at].get();
      FileLoad<Ar> v{ar_, objects_, at};
      switch (objects_.kinds[at]) {
        case ObjectKind::kEventFd: static_cast<EventFd*>(f)->VisitState(v); break;
        case ObjectKind::kPipeRead: static_cast<PipeReadEnd*>(f)->VisitState(v); break;
        case ObjectKind::kPipeWrite: static_cast<PipeWriteEnd*>(f)->VisitState(v); break;
        case ObjectKind::kUnixStream: {
          auto* s = static_cast<UnixSocket*>(f);
          s->VisitState(v);
          if (s->side() != 0 && s->side() != 1) throw LoadError(objects_.Name(at) + ": side is not 0 or 1");
          break;
        }
        case ObjectKind::kEventPoll: ReadPoll(at, static_cast<EventPoll*>(f)); break;
        default: break;  // an embedder file: its factory made it from its state bytes
      }
    }
  }

  // The invariants of the built-in files' own fields (state/invariants.h), as an image's validation checks them.
  void CheckFiles() {
    for (std::uint32_t at = 0; at < objects_.files.size(); ++at) {
      if (objects_.kinds[at] != ObjectKind::kEventFd) continue;
      auto& eventfd = static_cast<EventFd&>(*objects_.files[at]);
      if (std::string bad = CheckEventFd(FieldOf<std::uint64_t>(eventfd, "count")); !bad.empty()) {
        throw LoadError(objects_.Name(at) + ": " + bad);
      }
    }
  }

  // Layout 3 (archive/world_save.cc WriteFileHeaders, WriteFieldColumns): ids and kinds as columns, the embedders' state bytes,
  // the built-in kinds' fields as columns, then the polls' entries.
  void ReadFileColumns() {
    const std::uint64_t n = Count("files");
    const auto ids = ReadNumbers<std::uint64_t>("ids", n, "files column ids");
    const std::uint64_t nnames = Count("kind_names");
    if (nnames > n) {
      throw LoadError("kind_names: " + std::to_string(nnames) + " kinds for " + std::to_string(n) + " files");
    }
    std::vector<std::string> names(nnames);
    for (std::string& name : names) ar_ >> make_nvp("kind", name);
    const auto kinds = ReadNumbers<std::uint32_t>("kinds", n, "files column kinds");
    std::vector<std::uint32_t> order;
    order.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
      if (kinds[i] >= nnames) {
        throw LoadError("file " + std::to_string(ids[i]) + ": kind " + std::to_string(kinds[i]) +
                        " is not one of the " + std::to_string(nnames) + " kind names");
      }
      const std::string& kind = names[kinds[i]];
      const std::optional<ObjectKind> builtin = BuiltInFileKind(kind);
      const std::uint32_t at = objects_.Add(ids[i], builtin.value_or(ObjectKind::kEmbedder), kind);
      objects_.files[at] = Create(at, kind);
      order.push_back(at);
    }
    ReadFieldColumns<EventFd>(order, ObjectKind::kEventFd);
    ReadFieldColumns<PipeReadEnd>(order, ObjectKind::kPipeRead);
    ReadFieldColumns<PipeWriteEnd>(order, ObjectKind::kPipeWrite);
    ReadFieldColumns<UnixSocket>(order, ObjectKind::kUnixStream);
    for (std::uint32_t at : order) {
      if (objects_.kinds[at] == ObjectKind::kUnixStream) {
        const int side = static_cast<UnixSocket*>(objects_.files[at].get())->side();
        if (side != 0 && side != 1) throw LoadError(objects_.Name(at) + ": side is not 0 or 1");
      }
      if (layout_ < 6 && objects_.kinds[at] == ObjectKind::kEventPoll) {
        ReadPoll(at, static_cast<EventPoll*>(objects_.files[at].get()));
      }
    }
    if (layout_ >= 6) ReadPolls(order);
  }

  // Layout 6: every poll's section as world-wide columns, the polls in file order (archive/world_save.cc WritePolls).
  // Entries are made once the first entry column holds as many numbers as the counts add up to, not for the counts
  // alone.
  void ReadPolls(const std::vector<std::uint32_t>& order) {
    std::vector<std::uint32_t> at;  // each poll's position
    for (std::uint32_t i : order) {
      if (objects_.kinds[i] == ObjectKind::kEventPoll) at.push_back(i);
    }
    std::vector<PendingPoll*> pending;
    pending.reserve(at.size());
    polls_.Reserve(at.size());  // the pointers below stay valid
    for (std::uint32_t i : at) pending.push_back(&polls_[i]);
    std::string& text = text_;
    const auto counts = ReadNumbers<std::uint64_t>("poll_entries", at.size());
    std::uint64_t total = 0;
    for (std::size_t j = 0; j < at.size(); ++j) {
      total += std::min<std::uint64_t>(counts[j], kMaxObjects + 1);  // cannot overflow: fewer polls than 2^32
      if (total > kMaxObjects) {
        throw LoadError(objects_.Name(at[j]) + ": " + std::to_string(total) + " entries up to it, beyond the limit");
      }
    }
    if (total > 0) {
      for (std::size_t k = 0; k < EntryColumns().size(); ++k) {
        const std::string& name = entry_columns_[k];
        std::vector<std::uint64_t, LargeAllocator<std::uint64_t>> numbers;
        std::vector<std::string_view>& values = tokens_;
        if (RawColumns()) {
          numbers = ReadFieldColumn(name.c_str(), total, entry_widths_[k]);
        } else {
          ar_ >> make_nvp(name.c_str(), text);
          SplitColumn(text, total, [&] { return "column " + name; }, &values);
        }
        if (k == 0) {  // the column holds `total` numbers: the entries are made now
          for (std::size_t j = 0; j < at.size(); ++j) {
            auto* poll = static_cast<EventPoll*>(objects_.files[at[j]].get());
            for (std::uint64_t i = 0; i < counts[j]; ++i) pending[j]->Make(counts[j] - i, poll, FileIdentifier{}, 0, 0);
          }
        }
        std::size_t row = 0;
        for (std::size_t j = 0; j < at.size(); ++j) {
          for (PollEntry* e : pending[j]->entries) {
            FieldColumnLoad v = RawColumns() ? FieldColumnLoad{objects_, at[j], k, {}, name, &numbers[row]}
                                             : FieldColumnLoad{objects_, at[j], k, values[row], name};
            ++row;
            e->VisitState(v);
          }
        }
      }
      for (PendingPoll* p : pending) {
        for (PollEntry* e : p->entries) e->FieldsLoaded();
      }
    }
    const auto ranks = ReadNumbers<std::uint32_t>("queue_ranks", total);
    std::size_t next = 0;
    for (PendingPoll* p : pending) {
      p->ranks.assign(ranks.begin() + static_cast<std::ptrdiff_t>(next),
                      ranks.begin() + static_cast<std::ptrdiff_t>(next + p->entries.size()));
      next += p->entries.size();
    }
    const auto ready_counts = ReadNumbers<std::uint64_t>("ready_counts", at.size());
    std::uint64_t ready_total = 0;
    for (std::size_t j = 0; j < at.size(); ++j) {
      if (ready_counts[j] > counts[j]) {  // also keeps the sum below the entries' total
        throw LoadError(objects_.Name(at[j]) + ": a ready order of " + std::to_string(ready_counts[j]) + " for " +
                        std::to_string(counts[j]) + " entries");
      }
      ready_total += ready_counts[j];
    }
    const auto ready = ReadNumbers<std::uint32_t>("ready_order", ready_total);
    next = 0;
    for (std::size_t j = 0; j < at.size(); ++j) {
      pending[j]->ready.assign(ready.begin() + static_cast<std::ptrdiff_t>(next),
                               ready.begin() + static_cast<std::ptrdiff_t>(next + ready_counts[j]));
      next += ready_counts[j];
    }
  }

  // A column of `n` numbers (layout 3 on): an array in a layout-6 binary archive, else text (a failure to parse it
  // names `what`, by default "column NAME").
  template <typename T>
  std::vector<T, LargeAllocator<T>> ReadNumbers(const char* name, std::uint64_t n, std::string what = {}) {
    if (RawColumns()) return ReadRaw<T>(name, n);
    ar_ >> make_nvp(name, text_);
    return ParseColumn<T>(text_, n, what.empty() ? std::string("column ") + name : what);
  }

  // The field columns of the files of one built-in kind (archive/field_columns.h), if the archive has such files.
  template <typename F>
  void ReadFieldColumns(const std::vector<std::uint32_t>& order, ObjectKind kind) {
    std::vector<F*> files;
    std::vector<std::uint32_t> positions;
    for (std::uint32_t at : order) {
      if (objects_.kinds[at] != kind) continue;
      files.push_back(static_cast<F*>(objects_.files[at].get()));
      positions.push_back(at);
    }
    if (files.empty()) return;
    SavedFieldNames fields;
    files.front()->VisitState(fields);
    std::string text;
    for (std::size_t k = 0; k < fields.names.size(); ++k) {
      const std::string name = FieldColumnName(ObjectKindName(kind), fields.names[k]);
      if (RawColumns()) {
        const auto numbers = ReadFieldColumn(name.c_str(), files.size(), fields.widths[k]);
        for (std::size_t i = 0; i < files.size(); ++i) {
          FieldColumnLoad v{objects_, positions[i], k, {}, name, &numbers[i]};
          files[i]->VisitState(v);
        }
        continue;
      }
      ar_ >> make_nvp(name.c_str(), text);
      std::vector<std::string_view>& values = tokens_;
      SplitColumn(text, files.size(), [&] { return "column " + name; }, &values);
      for (std::size_t i = 0; i < files.size(); ++i) {
        FieldColumnLoad v{objects_, positions[i], k, values[i], name};
        files[i]->VisitState(v);
      }
    }
  }

  std::shared_ptr<File> Create(std::uint32_t at, const std::string& kind) {
    switch (objects_.kinds[at]) {
      case ObjectKind::kEventFd: return MakeFile<EventFd>(0, false);
      case ObjectKind::kPipeRead: return MakeFile<PipeReadEnd>(nullptr);
      case ObjectKind::kPipeWrite: return MakeFile<PipeWriteEnd>(nullptr);
      case ObjectKind::kUnixStream: return MakeFile<UnixSocket>(nullptr, 0);
      case ObjectKind::kEventPoll: return EventPoll::Create();
      case ObjectKind::kHost:  // never written by SaveWorld
        throw LoadError(objects_.Name(at) + ": host files are restored from a protobuf image with a resolver, not from a Boost archive");
      default: break;
    }
    std::string state;
    ar_ >> make_nvp("state", state);
    FileFactory factory = FindFileType(kind);
    if (!factory) throw LoadError(objects_.Name(at) + ": file kind '" + kind + "' is not registered");
    Result<std::shared_ptr<File>> made = factory(state);
    if (!made.ok() || !made.value() || !made.value()->managed()) {
      throw LoadError(objects_.Name(at) + ": the factory of '" + kind + "' failed" +
                      (made.ok() ? std::string(" (returned no managed file)") : ": " + made.error().message()));
    }
    return std::move(made).value();
  }

  void ReadPoll(std::uint32_t at, EventPoll* poll) {
    if (layout_ >= 4) return ReadEntryColumns(at, poll);
    if (layout_ >= 2) return ReadPollColumns(at, poll);
    PendingPoll& p = polls_[at];
    const std::uint64_t n = Count("entries");
    for (std::uint64_t i = 0; i < n; ++i) {
      PollEntry loaded(poll, FileIdentifier{}, 0, 0);
      FileLoad<Ar> v{ar_, objects_, at};
      loaded.VisitState(v);
      std::uint32_t rank = 0;
      ar_ >> make_nvp("queue_rank", rank);
      // Made again from the loaded fields: whether the waiter is exclusive is fixed when it is constructed.
      PollEntry* e = p.Make(n - i, poll, FileIdentifier{loaded.file, loaded.fd}, loaded.events, loaded.data);
      e->list = loaded.list;
      p.ranks.push_back(rank);
    }
    ReadReadyOrder(p);
  }

  // Layout 4: the columns PollEntry's declaration saves (archive/world_save.cc WritePoll), then the queue ranks and ready order.
  void ReadEntryColumns(std::uint32_t at, EventPoll* poll) {
    PendingPoll& p = polls_[at];
    const std::uint64_t n = Count("entries");
    std::string& text = text_;
    if (n > 0) {
      for (std::size_t k = 0; k < EntryColumns().size(); ++k) {
        const std::string& name = entry_columns_[k];
        ar_ >> make_nvp(name.c_str(), text);
        std::vector<std::string_view>& values = tokens_;
        SplitColumn(text, n, [&] { return objects_.Name(at) + " column " + name; }, &values);
        if (k == 0) {  // the column holds n numbers: the entries are made now, not for a count alone
          for (std::uint64_t i = 0; i < n; ++i) p.Make(n - i, poll, FileIdentifier{}, 0, 0);
        }
        for (std::uint64_t i = 0; i < n; ++i) {
          FieldColumnLoad v{objects_, at, k, values[i], name};
          p.entries[i]->VisitState(v);
        }
      }
      for (PollEntry* e : p.entries) e->FieldsLoaded();
    }
    ar_ >> make_nvp("queue_ranks", text);
    const auto ranks = ParseColumn<std::uint32_t>(text, n, [&] { return objects_.Name(at) + " column queue_ranks"; });
    p.ranks.assign(ranks.begin(), ranks.end());
    ReadReadyOrder(p);
  }

  // Layouts 1 to 5: a poll's ready order as a vector of numbers.
  void ReadReadyOrder(PendingPoll& p) {
    std::vector<std::uint32_t> ready;
    ar_ >> make_nvp("ready_order", ready);
    p.ready.assign(ready.begin(), ready.end());
  }

  // "entry.FIELD" for each field a PollEntry saves (layouts 4 and on), made once.
  const std::vector<std::string>& EntryColumns() {
    if (entry_columns_.empty()) {
      SavedFieldNames fields;
      PollEntry(nullptr, FileIdentifier{}, 0, 0).VisitState(fields);
      for (const char* field : fields.names) entry_columns_.push_back(FieldColumnName("entry", field));
      entry_widths_ = fields.widths;
    }
    return entry_columns_;
  }

  // Layouts 2 and 3: the entries' fields as columns of fixed names.
  void ReadPollColumns(std::uint32_t at, EventPoll* poll) {
    PendingPoll& p = polls_[at];
    const std::uint64_t n = Count("entries");
    std::string text;
    const std::string where = objects_.Name(at) + " column ";
    auto column = [&]<typename T>(const char* name, T) {
      ar_ >> make_nvp(name, text);
      return ParseColumn<T>(text, n, where + name);
    };
    const auto fds = column("fds", std::int32_t{});
    const auto files = column("files", std::uint64_t{});
    const auto events = column("events", std::uint32_t{});
    const auto data = column("data", std::uint64_t{});
    const auto lists = column("lists", std::uint8_t{});
    const auto ranks = column("queue_ranks", std::uint32_t{});
    p.ranks.assign(ranks.begin(), ranks.end());
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint32_t target = objects_.Find(files[i]);
      if (target == IdIndex::kNone || !objects_.files[target]) {
        throw LoadError(objects_.Name(at) + ", entry " + std::to_string(i) + ": file " + std::to_string(files[i]) +
                        " is not in the archive or is not a file");
      }
      if (lists[i] > static_cast<std::uint8_t>(EntryList::kDisabled)) {
        throw LoadError(objects_.Name(at) + ", entry " + std::to_string(i) + ": unknown list");
      }
      PollEntry* e = p.Make(n - i, poll, FileIdentifier{objects_.files[target].get(), fds[i]}, events[i], data[i]);
      e->list = static_cast<EntryList>(lists[i]);
      objects_.Wait(at, target);
    }
    ReadReadyOrder(p);
  }

  void ReadTables(World* out) {
    const std::uint64_t nfds = Count("fds");
    out->fds.Reserve(static_cast<int>(std::min<std::uint64_t>(nfds, 1u << 20)));  // fds are mostly 0..n-1
    if (layout_ >= 3 && kBinaryArchive<Ar>) {  // the fd numbers and their files' ids as two columns
      std::vector<std::int32_t> numbers;
      std::vector<std::uint64_t> ids;
      ar_ >> make_nvp("numbers", numbers) >> make_nvp("files", ids);
      if (numbers.size() != nfds || ids.size() != nfds) {
        throw LoadError("fd table: columns of " + std::to_string(numbers.size()) + " and " +
                        std::to_string(ids.size()) + " values for " + std::to_string(nfds) + " fds");
      }
      FdTable::Filler fill(out->fds);  // one lock for every fd, not one each
      for (std::uint64_t i = 0; i < nfds; ++i) Install(fill, numbers[i], ids[i]);
    } else if (layout_ >= 3) {
      std::string text;
      ar_ >> make_nvp("numbers", text);
      const auto numbers = ParseColumn<std::int32_t>(text, nfds, "fd table column numbers");
      ar_ >> make_nvp("files", text);
      const auto ids = ParseColumn<std::uint64_t>(text, nfds, "fd table column files");
      FdTable::Filler fill(out->fds);
      for (std::uint64_t i = 0; i < nfds; ++i) Install(fill, numbers[i], ids[i]);
    }
    if (layout_ < 3) {
      FdTable::Filler fill(out->fds);
      for (std::uint64_t i = 0; i < nfds; ++i) {
        std::int32_t fd = -1;
        std::uint64_t id = 0;
        ar_ >> make_nvp("fd", fd) >> make_nvp("file", id);
        Install(fill, fd, id);
      }
    }
    const std::uint64_t nroots = Count("roots");
    for (std::uint64_t i = 0; i < nroots; ++i) {
      std::string name;
      std::uint64_t id = 0;
      ar_ >> make_nvp("name", name) >> make_nvp("file", id);
      const std::shared_ptr<File>& file = FileOf(id);
      if (!file) throw LoadError("root " + name + ": file " + std::to_string(id) + " is not in the archive");
      if (!out->roots.emplace(name, file).second) throw LoadError("root " + name + " is repeated");
    }
  }

  void Install(FdTable::Filler& fill, std::int32_t fd, std::uint64_t id) {
    const std::shared_ptr<File>& file = FileOf(id);
    if (!file) throw LoadError("fd " + std::to_string(fd) + ": file " + std::to_string(id) + " is not in the archive");
    if (std::error_code ec = fill.InstallAt(fd, file)) {
      throw LoadError("fd " + std::to_string(fd) + ": " + (ec == Errno(EBUSY) ? "repeated" : "out of range"));
    }
  }

  // The file of an id, or null (no such object, or shared state).
  const std::shared_ptr<File>& FileOf(std::uint64_t id) const {
    static const std::shared_ptr<File> kNoFile;
    const std::uint32_t at = objects_.Find(id);
    return at == IdIndex::kNone ? kNoFile : objects_.files[at];
  }

  Ar& ar_;
  LoadObjects objects_;
  state::PendingPolls polls_;  // by the poll's position
  std::uint32_t layout_ = 0;
  std::vector<std::string> entry_columns_;     // "entry.FIELD" for each field a PollEntry saves, once known
  std::vector<RawWidth> entry_widths_;         // how a binary archive holds each of them (layout 6)
  std::string text_;                           // a column as the archive holds it, reused column to column
  std::vector<std::string_view> tokens_;       // its numbers as text (SplitColumn)
};

}  // namespace

template <typename Ar>
Status LoadWorldFrom(Ar& ar, World* out) {
  if (out->fds.Count() != 0 || !out->roots.empty()) return Status::Error(EINVAL, "load: the world is not empty");
  try {
    Loader<Ar> loader(ar);
    loader.Read(out);
    return {};
  } catch (const std::exception& e) {
    // Everything made so far is dropped with the loader and the world's tables: no file stays registered.
    out->roots.clear();
    out->fds.Clear();
    return Status::Error(EINVAL, std::string("load: ") + e.what());
  }
}

template Status LoadWorldFrom(boost::archive::text_iarchive&, World*);
template Status LoadWorldFrom(boost::archive::xml_iarchive&, World*);
template Status LoadWorldFrom(boost::archive::binary_iarchive&, World*);
template Status LoadWorldFrom(BoundedTextIArchive&, World*);
template Status LoadWorldFrom(BoundedXmlIArchive&, World*);
template Status LoadWorldFrom(BoundedBinaryIArchive&, World*);

}  // namespace epollcr::archive
