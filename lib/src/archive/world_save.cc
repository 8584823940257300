// Saving a World to a Boost archive: take a consistent cut (state/cut.h), then write it in layout
// kLayoutVersion (archive/world_archive.h). See docs/state-model.md, "Formats".
#include <algorithm>
#include <cstddef>
#include <deque>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <vector>

#include <boost/serialization/array_wrapper.hpp>

#include "archive/columns.h"
#include "archive/direct_oarchives.h"
#include "archive/field_columns.h"
#include "archive/fields.h"
#include "archive/world_archive.h"
#include "epollcr/event_poll.h"
#include "epollcr/eventfd.h"
#include "epollcr/host_file.h"
#include "event_poll_internal.h"
#include "state/cut.h"

namespace epollcr::archive {

namespace {

using boost::serialization::make_nvp;

// Writes one cut in two steps. Inside it (every lock held), Collect writes the shared objects (pipe and socket
// buffers) and copies the saved fields of the files and of every poll's entries as numbers; after it, Write turns
// those numbers into the archive's columns and writes the rest from what the cut copied (file headers, fd table,
// ranks, ready order). Only reading the world needs the locks.
class Writer {
 public:
  explicit Writer(state::Cut& cut)
      : cut_(cut), memory_(state::CutMemory::FirstBlockFor(static_cast<int>(cut.fds().size()))) {}

  // Preconditions: the cut's locks are held.
  template <typename Ar>
  void Collect(Ar& ar) {
    std::uint32_t layout = kLayoutVersion;
    ar << make_nvp("layout", layout);
    std::uint64_t shared = cut_.shared().size();
    ar << make_nvp("shared_objects", shared);
    for (const auto& s : cut_.shared()) {
      ar << make_nvp("id", s.id) << make_nvp("kind", s.kind);
      if (s.pipe) {
        MutexLock lock(s.pipe->state_mutex());
        PlainSave<Ar> v{ar};
        s.pipe->VisitState(v);
      } else {
        MutexLock lock(s.pair->state_mutex());
        PlainSave<Ar> v{ar};
        s.pair->VisitState(v);
      }
    }
    // The files of the built-in kinds, each into its kind's columns, in file order (each column sized once).
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      if (const int k = KindIndex(cut_.type(i)); k >= 0) ++kinds_[k].columns.rows;
    }
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      File* f = cut_.files()[i];
      switch (cut_.type(i)) {
        case File::Builtin::kEventFd: break;  // the cut copied its saved fields (Cut::eventfd_rows)
        case File::Builtin::kPipeRead: CollectFile(kinds_[1], *static_cast<PipeReadEnd*>(f)); break;
        case File::Builtin::kPipeWrite: CollectFile(kinds_[2], *static_cast<PipeWriteEnd*>(f)); break;
        case File::Builtin::kUnixStream: CollectFile(kinds_[3], *static_cast<UnixSocket*>(f)); break;
        default: break;
      }
    }
    // Every poll's entries: the cut copied their saved fields as it took them (PollCut::rows), and Write makes them
    // one set of columns, poll after poll (each poll's are a range of them: WritePoll).
  }

  // After the cut: what Collect left for it, in archive order.
  template <typename Ar>
  void Write(Ar& ar) {
    EventFd eventfd(0, false);
    const std::size_t eventfds = kinds_[0].columns.rows;
    for (std::size_t i = 0; i < eventfds; ++i) {
      RowInto(eventfd, cut_.eventfd_rows() + i * cut_.eventfd_row_bytes(), kinds_[0].columns);
    }
    PollEntry entry(nullptr, FileIdentifier{}, 0, 0);
    entries_.rows = 0;
    for (const state::PollCut& c : cut_.polls()) entries_.rows += c.entries.size();
    for (const state::PollCut& c : cut_.polls()) {
      for (std::size_t k = 0; k < c.entries.size(); ++k) RowInto(entry, c.Row(k), entries_);
    }
    for (KindColumns& kind : kinds_) kind.columns.ResolveIds();
    entries_.ResolveIds();
    std::uint64_t count = cut_.files().size();
    ar << make_nvp("files", count);
    WriteFileHeaders(ar);
    for (const KindColumns& kind : kinds_) {
      const FieldColumnSave::Columns& columns = kind.columns.columns;
      WriteColumns(ar, kind.name, columns, 0, columns.empty() ? 0 : columns[0].values.size());
    }
    WritePolls(ar);
    std::uint64_t nfds = cut_.fds().size();
    ar << make_nvp("fds", nfds);
    if constexpr (kBinaryArchive<Ar>) {
      std::vector<std::int32_t> numbers;
      std::vector<std::uint64_t> files;
      numbers.reserve(cut_.fds().size());
      files.reserve(cut_.fds().size());
      for (const state::Cut::Fd& fd : cut_.fds()) {
        numbers.push_back(fd.fd);
        files.push_back(fd.file);
      }
      ar << make_nvp("numbers", numbers) << make_nvp("files", files);
    } else {
      std::string numbers, files;
      {
        ColumnWriter number_text(&numbers), file_text(&files);
        for (const state::Cut::Fd& fd : cut_.fds()) {
          number_text.Add(fd.fd);
          file_text.Add(fd.file);
        }
      }
      ar << make_nvp("numbers", numbers) << make_nvp("files", files);
    }
    std::uint64_t nroots = cut_.roots().size();
    ar << make_nvp("roots", nroots);
    for (const auto& [name, file] : cut_.roots()) {
      std::string n = name;
      std::uint64_t id = cut_.ids().Of(file.get());
      ar << make_nvp("name", n) << make_nvp("file", id);
    }
  }

 private:
  // Layout 3: the files' ids as a column; the kind names, each once, and each file's kind as an index into them; then
  // the state bytes of each embedder file, in file order. Layout 6: in a binary archive the two columns are arrays.
  template <typename Ar>
  void WriteFileHeaders(Ar& ar) {
    std::vector<std::string> names;
    const std::vector<std::uint32_t> kinds = KindIndexes(names);
    std::vector<std::uint64_t> ids(kinds.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i + 1;
    WriteNumbers(ar, "ids", ids);
    std::uint64_t nnames = names.size();
    ar << make_nvp("kind_names", nnames);
    for (std::string& name : names) ar << make_nvp("kind", name);
    WriteNumbers(ar, "kinds", kinds);
    WriteEmbedderStates(ar);
  }

  // The index of each file's kind among `names`, which gets each kind once, in order of first use.
  std::vector<std::uint32_t> KindIndexes(std::vector<std::string>& names) const {
    std::vector<std::uint32_t> kinds;
    kinds.reserve(cut_.files().size());
    std::size_t last = 0;  // the index of the last file's kind: files of one kind often come together
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      const File::Builtin builtin = cut_.type(i);
      if (i > 0 && builtin != File::Builtin::kNone && builtin == cut_.type(i - 1)) {
        kinds.push_back(static_cast<std::uint32_t>(last));  // a built-in kind is its own name: the last file's
        continue;
      }
      const std::string_view kind = cut_.kinds()[i];
      if (last >= names.size() || names[last] != kind) {
        last = static_cast<std::size_t>(std::find(names.begin(), names.end(), kind) - names.begin());
        if (last == names.size()) names.emplace_back(kind);
      }
      kinds.push_back(static_cast<std::uint32_t>(last));
    }
    return kinds;
  }

  // The state bytes of each embedder file, in file order.
  template <typename Ar>
  void WriteEmbedderStates(Ar& ar) {
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      // Runs after the cut's locks: the files are not read (one may be gone). A file of no built-in type in a cut is
      // a SavableFile (Cut::Take refuses others); it is an embedder file unless its kind is a built-in one.
      if (cut_.type(i) == File::Builtin::kNone && !state::Cut::IsBuiltIn(cut_.kinds()[i])) {
        std::string bytes = cut_.custom_state(i);
        ar << make_nvp("state", bytes);
      }
    }
  }

  using Columns = FieldColumnSave::Columns;
  // Layout 3: the saved fields of every file of one built-in kind, one column per field (archive/field_columns.h);
  // none if the world has no file of the kind.
  struct KindColumns {
    const char* name;
    FieldColumnSave columns;
  };

  // The place in kinds_ of a built-in kind, or -1 for the others (polls, host and embedder files).
  static int KindIndex(File::Builtin builtin) {
    switch (builtin) {
      case File::Builtin::kEventFd: return 0;
      case File::Builtin::kPipeRead: return 1;
      case File::Builtin::kPipeWrite: return 2;
      case File::Builtin::kUnixStream: return 3;
      default: return -1;
    }
  }

  // One object's saved fields, as the cut copied them while its locks were held (state/visitors.h CopySaved), into
  // the next row of `columns`, through `scratch`, an object of the type that no one else sees.
  template <typename Object>
  static void RowInto(Object& scratch, const std::byte* row, FieldColumnSave& columns) {
    state::SavedFieldsIn in{row};
    scratch.VisitState(in);
    columns.next = 0;
    scratch.VisitState(columns);
  }

  // One file's saved fields into its kind's columns. Preconditions: the cut's locks are held, and the file's state
  // lock if it has one.
  template <typename F>
  static void CollectFile(KindColumns& kind, F& file) {
    kind.columns.next = 0;
    file.VisitState(kind.columns);
  }

  // Each column as an archive string named "KIND.FIELD": the `count` values from `first` on of each.
  template <typename Ar>
  void WriteColumns(Ar& ar, const char* kind, const Columns& columns, std::size_t first, std::size_t count) {
    for (const FieldColumnSave::Column& column : columns) {
      if constexpr (kBinaryArchive<Ar>) {  // layout 6: the values at their field's width (RawWidth)
        WriteRaw(ar, ColumnName(kind, column.field), column, first, count);
      } else {
        ColumnText(column, first, count, &text_);
        ar << make_nvp(ColumnName(kind, column.field), text_);
      }
    }
  }

  // A column's values from `first` on as an array of its field's width (a signed value's two's complement keeps its
  // low bytes).
  template <typename Ar>
  void WriteRaw(Ar& ar, const char* name, const FieldColumnSave::Column& column, std::size_t first, std::size_t count) {
    const std::uint64_t* values = column.values.data() + first;
    if (column.raw.bytes == 8) {
      ar << make_nvp(name, boost::serialization::make_array(values, count));
      return;
    }
    auto narrow = [&]<typename U>(U) {
      std::vector<U>& out = Narrowed<U>();
      out.resize(count);
      for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<U>(values[i]);
      ar << make_nvp(name, boost::serialization::make_array(out.data(), count));
    };
    switch (column.raw.bytes) {
      case 1: narrow(std::uint8_t{}); break;
      case 2: narrow(std::uint16_t{}); break;
      default: narrow(std::uint32_t{}); break;
    }
  }
  template <typename U>
  std::vector<U>& Narrowed() {
    if constexpr (sizeof(U) == 1) return narrow8_;
    if constexpr (sizeof(U) == 2) return narrow16_;
    if constexpr (sizeof(U) == 4) return narrow32_;
  }

  // "KIND.FIELD", made once per kind and field: every poll writes the same entry columns. `kind` and `field` are the
  // literals of the writer and of the declarations, so their addresses name them.
  const char* ColumnName(const char* kind, const char* field) {
    for (const ColumnNameOf& known : column_names_) {
      if (known.kind == kind && known.field == field) return known.name.c_str();
    }
    column_names_.push_back({kind, field, FieldColumnName(kind, field)});
    return column_names_.back().name.c_str();
  }

  // Every poll's section (layout 6), the polls in file order (the cut's order): how many entries each has, as a
  // column; then the columns PollEntry's VisitState saves (archive/field_columns.h; the file as a wait reference by
  // object id), named "entry.FIELD", over every poll's entries, poll after poll (none if no poll has an entry); then
  // each entry's queue rank as one column, and the ready orders as a column of their lengths and one of their indexes
  // (each into its own poll's entries). A world of many small polls was about ten archive items per poll in layout 5
  // (a count, five columns, the ranks and a vector of three items); in xml each is two tags to write and parse, most
  // of such a world's archive time. Now it is seven items whatever the number of polls.
  template <typename Ar>
  void WritePolls(Ar& ar) {
    std::vector<std::uint64_t> counts, ready_counts;
    std::vector<std::uint32_t> ranks, ready;
    counts.reserve(cut_.polls().size());
    ready_counts.reserve(cut_.polls().size());
    std::size_t total = 0, ready_total = 0;
    for (const state::PollCut& c : cut_.polls()) {
      counts.push_back(c.entries.size());
      total += c.entries.size();
      ready_counts.push_back(c.ready.size());
      ready_total += c.ready.size();
    }
    // Appended number by number into the room reserved: a range insert per poll cost more than the copy for a
    // poll of an entry or two (most are, in a world of many small polls).
    ranks.reserve(total);
    ready.reserve(ready_total);
    for (const state::PollCut& c : cut_.polls()) {
      for (std::uint32_t rank : c.ranks) ranks.push_back(rank);
      for (std::uint32_t index : c.ready) ready.push_back(index);
    }
    WriteNumbers(ar, "poll_entries", counts);
    if (total > 0) WriteColumns(ar, "entry", entries_.columns, 0, total);
    WriteNumbers(ar, "queue_ranks", ranks);
    WriteNumbers(ar, "ready_counts", ready_counts);
    WriteNumbers(ar, "ready_order", ready);
  }

  // A column of numbers: an array in a binary archive (layout 6), else text (archive/columns.h).
  template <typename Ar, typename T>
  void WriteNumbers(Ar& ar, const char* name, const std::vector<T>& values) {
    if constexpr (kBinaryArchive<Ar>) {
      ar << make_nvp(name, boost::serialization::make_array(values.data(), values.size()));
    } else {
      {
        ColumnWriter text(&text_);
        for (T v : values) text.Add(v);
      }
      ar << make_nvp(name, text_);
    }
  }

  struct ColumnNameOf {
    const char* kind;
    const char* field;
    std::string name;
  };

  state::Cut& cut_;
  // The columns' arrays (FieldColumnSave::memory). The writer's own, not the cut's: it outlives the cut when a save
  // fails.
  state::CutMemory memory_;
  KindColumns kinds_[4] = {{"eventfd", {cut_.ids(), &memory_, {}}},
                           {"pipe-read", {cut_.ids(), &memory_, {}}},
                           {"pipe-write", {cut_.ids(), &memory_, {}}},
                           {"unix-stream", {cut_.ids(), &memory_, {}}}};
  FieldColumnSave entries_{cut_.ids(), &memory_, {}};  // the cut's entry rows as columns
  std::deque<ColumnNameOf> column_names_;    // ColumnName's; a deque, so that the names stay where they are
  std::string text_;                         // the column being written
  std::vector<std::uint8_t> narrow8_;        // the binary column being written, at its width (WriteRaw)
  std::vector<std::uint16_t> narrow16_;
  std::vector<std::uint32_t> narrow32_;
};

}  // namespace

template <typename Ar>
Status SaveWorldTo(Ar& ar, const World& world, SavePause* pause) {
  try {
    Status refused;
    std::optional<Writer> writer;
    Status s = state::WithCut(world, [&](state::Cut& cut) {
      for (std::size_t i = 0; i < cut.files().size(); ++i) {
        if (cut.type(i) == File::Builtin::kHost) {
          auto* h = static_cast<HostFile*>(cut.files()[i]);
          refused = Status::Error(EINVAL, "file#" + std::to_string(i + 1) + " (host fd " + std::to_string(h->fd()) +
                                              "): host files are saved only in protobuf images (image/codec.h), "
                                              "which a restorer resolves; a Boost archive cannot hold them");
          return;
        }
      }
      writer.emplace(cut);
      writer->Collect(ar);
    }, pause, [&](state::Cut&) {
      if (refused.ok()) writer->Write(ar);
    });
    return s.ok() ? refused : s;
  } catch (const std::exception& e) {
    return Status::Error(EIO, std::string("save: ") + e.what());
  }
}

template Status SaveWorldTo(boost::archive::text_oarchive&, const World&, SavePause*);
template Status SaveWorldTo(boost::archive::xml_oarchive&, const World&, SavePause*);
template Status SaveWorldTo(DirectTextOArchive&, const World&, SavePause*);
template Status SaveWorldTo(DirectXmlOArchive&, const World&, SavePause*);
template Status SaveWorldTo(boost::archive::binary_oarchive&, const World&, SavePause*);

}  // namespace epollcr::archive
