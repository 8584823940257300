// Saving a World to a Boost archive: take a consistent cut (state/cut.h), then write it in layout
// kLayoutVersion (archive/world_archive.h). See docs/state-model.md, "Formats".
#include <algorithm>
#include <deque>
#include <mutex>
#include <optional>

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
  explicit Writer(state::Cut& cut) : cut_(cut) {}

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
    CollectFieldColumns<EventFd>(kinds_[0]);
    CollectFieldColumns<PipeReadEnd>(kinds_[1]);
    CollectFieldColumns<PipeWriteEnd>(kinds_[2]);
    CollectFieldColumns<UnixSocket>(kinds_[3]);
    // Every poll's entries in one set of columns, poll after poll (each poll's are a range of them: WritePoll).
    std::size_t entries = 0;
    for (const state::PollCut& c : cut_.polls()) entries += c.entries.size();
    entries_.rows = entries;
    for (const state::PollCut& c : cut_.polls()) {
      for (PollEntry* e : c.entries) {
        entries_.next = 0;
        e->VisitState(entries_);
      }
    }
  }

  // After the cut: what Collect left for it, in archive order.
  template <typename Ar>
  void Write(Ar& ar) {
    std::uint64_t count = cut_.files().size();
    ar << make_nvp("files", count);
    WriteFileHeaders(ar);
    for (const KindColumns& kind : kinds_) {
      WriteColumns(ar, kind.name, kind.columns, 0, kind.columns.empty() ? 0 : kind.columns[0].values.size());
    }
    std::size_t next_poll = 0;
    std::size_t first_entry = 0;
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      if (cut_.kinds()[i] == "eventpoll") {
        const state::PollCut& c = cut_.polls()[next_poll++];
        WritePoll(ar, c, first_entry);
        first_entry += c.entries.size();
      }
    }
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
      for (const state::Cut::Fd& fd : cut_.fds()) {
        AppendColumn(numbers, fd.fd);
        AppendColumn(files, fd.file);
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
  // the state bytes of each embedder file, in file order.
  template <typename Ar>
  void WriteFileHeaders(Ar& ar) {
    std::string ids, kinds;
    std::vector<std::string> names;
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      AppendColumn(ids, i + 1);
      const auto known = std::find(names.begin(), names.end(), cut_.kinds()[i]);
      AppendColumn(kinds, static_cast<std::size_t>(known - names.begin()));
      if (known == names.end()) names.push_back(cut_.kinds()[i]);
    }
    ar << make_nvp("ids", ids);
    std::uint64_t nnames = names.size();
    ar << make_nvp("kind_names", nnames);
    for (std::string& name : names) ar << make_nvp("kind", name);
    ar << make_nvp("kinds", kinds);
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      if (dynamic_cast<SavableFile*>(cut_.files()[i].get()) && !state::Cut::IsBuiltIn(cut_.kinds()[i])) {
        std::string bytes = cut_.custom_states()[i];
        ar << make_nvp("state", bytes);
      }
    }
  }

  using Columns = std::vector<FieldColumnSave::Column>;
  // The saved fields of every file of one built-in kind, one column per field.
  struct KindColumns {
    const char* name;
    Columns columns;
  };

  // Layout 3: the saved fields of every file of built-in kind `kind.name` (type F), one column per field
  // (archive/field_columns.h); nothing if the world has no file of the kind. Preconditions: the cut's locks are held.
  template <typename F>
  void CollectFieldColumns(KindColumns& kind) {
    FieldColumnSave columns{cut_.ids(), {}};
    for (std::size_t i = 0; i < cut_.files().size(); ++i) {
      if (cut_.kinds()[i] != kind.name) continue;
      auto* f = static_cast<F*>(cut_.files()[i].get());
      columns.next = 0;
      if constexpr (std::is_same_v<F, EventFd>) {
        MutexLock lock(f->state_mutex());
        f->VisitState(columns);
      } else {
        f->VisitState(columns);
      }
    }
    kind.columns = std::move(columns.columns);
  }

  // Each column as an archive string named "KIND.FIELD": the `count` values from `first` on of each.
  template <typename Ar>
  void WriteColumns(Ar& ar, const char* kind, const Columns& columns, std::size_t first, std::size_t count) {
    for (const FieldColumnSave::Column& column : columns) {
      ColumnText(column, first, count, &text_);
      ar << make_nvp(ColumnName(kind, column.field), text_);
    }
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

  // The poll's manual section (layout 4): the entry count, then one column per field PollEntry's VisitState saves
  // (archive/field_columns.h; the file as a wait reference by object id), named "entry.FIELD" (none if the poll has no
  // entries), then each entry's queue rank as a column (archive/columns.h) and the ready order.
  // `first`: the poll's first entry in entries_.
  template <typename Ar>
  void WritePoll(Ar& ar, const state::PollCut& c, std::size_t first) {
    std::uint64_t n = c.entries.size();
    ar << make_nvp("entries", n);
    if (n > 0) WriteColumns(ar, "entry", entries_.columns, first, n);
    text_.clear();
    for (std::uint32_t rank : c.ranks) AppendColumn(text_, rank);
    ar << make_nvp("queue_ranks", text_);
    ar << make_nvp("ready_order", c.ready);
  }

  struct ColumnNameOf {
    const char* kind;
    const char* field;
    std::string name;
  };

  state::Cut& cut_;
  KindColumns kinds_[4] = {{"eventfd", {}}, {"pipe-read", {}}, {"pipe-write", {}}, {"unix-stream", {}}};
  FieldColumnSave entries_{cut_.ids(), {}};  // the entries of every poll, in the cut's order of polls
  std::deque<ColumnNameOf> column_names_;    // ColumnName's; a deque, so that the names stay where they are
  std::string text_;                         // the column being written
};

}  // namespace

template <typename Ar>
Status SaveWorldTo(Ar& ar, const World& world, SavePause* pause) {
  try {
    Status refused;
    std::optional<Writer> writer;
    Status s = state::WithCut(world, [&](state::Cut& cut) {
      for (std::size_t i = 0; i < cut.files().size(); ++i) {
        if (auto* h = dynamic_cast<HostFile*>(cut.files()[i].get())) {
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
