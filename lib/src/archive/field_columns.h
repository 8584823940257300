// The saved fields of the files of one kind as columns (layout 3): for each field a VisitState declaration saves
// (kSave, or kWait as the referenced object's id), one archive string holding that field of every file of the kind,
// in file order, as decimal numbers separated by single spaces (archive/columns.h). An xml archive then spends one
// element per field and kind instead of one per field and file. Internal.
#pragma once

#include <charconv>
#include <limits>
#include <cstdint>
#include <memory_resource>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "archive/columns.h"
#include "archive/fields.h"

namespace epollcr::archive {

// The element of a kind's field column: "eventfd.count" ('.' and '-' are xml name characters).
inline std::string FieldColumnName(std::string_view kind, std::string_view field) {
  std::string name(kind);
  name += '.';
  name += field;
  return name;
}

// How a saved field's value is held in a layout-6 binary archive's column (world_save.cc WriteColumns): `bytes` wide
// (the field's own type: a bool or an enum as its underlying type, a wait reference as a 64-bit object id), a signed
// type's value as its two's complement of that width.
struct RawWidth {
  std::uint8_t bytes = 8;
  bool is_signed = false;
};
template <typename T, FieldPolicy P>
constexpr RawWidth RawWidthOf() {
  if constexpr (P == FieldPolicy::kWait) {
    return {8, false};
  } else if constexpr (std::is_same_v<T, bool>) {
    return {1, false};
  } else if constexpr (std::is_enum_v<T>) {
    return {sizeof(std::underlying_type_t<T>), std::is_signed_v<std::underlying_type_t<T>>};
  } else {
    return {sizeof(T), std::is_signed_v<T>};
  }
}

// Save: visit each file of the kind in file order; each saved field's value is appended to its column, as a number.
// The text (ColumnText) is made later: a save collects the numbers while it holds the cut, and writes them as text
// after releasing it (archive/world_save.cc). A wait field is collected as the referenced object's address and turned
// into its id by ResolveIds(), after the cut too: only reading the fields needs the locks.
struct FieldColumnSave {
  struct Column {
    const char* field;
    bool is_signed = false;  // the values are a signed type's, stored as their two's complement
    bool wait = false;       // a wait field's: addresses until ResolveIds(), then object ids
    RawWidth raw;            // how a binary archive holds the values
    std::pmr::vector<std::uint64_t> values;  // sized for `rows` up front; the first `filled` are values
    std::size_t filled = 0;

    // One more value: a store into the array sized up front (a push_back per value was a call each, not inlined).
    void Put(std::uint64_t v) {
      if (filled < values.size()) [[likely]] {
        values[filled] = v;
      } else {
        Grow(v);
      }
      ++filled;
    }
    [[gnu::noinline]] void Grow(std::uint64_t v) { values.push_back(v); }
  };
  using Columns = std::vector<Column>;
  const SaveIds& ids;
  // The columns' arrays: memory such as a cut's (state/cut.h CutMemory), whose large blocks a later save of the same
  // world finds faulted in already.
  std::pmr::memory_resource* memory;
  Columns columns;              // in declaration order
  std::size_t next = 0;         // the field being visited; reset for each file
  std::size_t rows = 0;         // how many objects will be visited, if known: each column is sized once

  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      if (next == columns.size()) {
        if (columns.empty()) columns.reserve(8);  // a type saves a few fields: one allocation, not one per doubling
        columns.push_back(
            {name, false, P == FieldPolicy::kWait, RawWidthOf<T, P>(), std::pmr::vector<std::uint64_t>(memory)});
        columns.back().values.resize(rows);
      }
      Column& column = columns[next++];
      if constexpr (P == FieldPolicy::kWait) {
        column.Put(reinterpret_cast<std::uintptr_t>(RawOf(value)));
      } else if constexpr (std::is_same_v<T, bool>) {
        column.Put(value ? 1u : 0u);
      } else if constexpr (std::is_enum_v<T>) {
        column.Put(static_cast<unsigned>(value));
      } else {
        static_assert(std::is_integral_v<T>, "a field saved as a column is a number");
        column.is_signed = std::is_signed_v<T>;
        column.Put(static_cast<std::uint64_t>(value));
      }
    }
  }

  // Ends the collection: each column holds exactly its values, and the wait columns' addresses become object ids.
  // Throws LoadError for an object without an id. Preconditions: called once, before the columns are read.
  void ResolveIds() {
    for (Column& column : columns) {
      column.values.resize(column.filled);
      if (!column.wait) continue;
      for (std::uint64_t& v : column.values) v = ids.Of(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(v)));
      column.wait = false;
    }
  }
};

// The `count` values from `first` on of a collected column (ids resolved) as the text archives hold them
// (archive/columns.h): the same text the field's own type would make, in *out (its earlier contents dropped, its memory
// kept).
inline void ColumnText(const FieldColumnSave::Column& column, std::size_t first, std::size_t count, std::string* out) {
  ColumnWriter text(out);
  for (std::uint64_t v : std::span<const std::uint64_t>(column.values).subspan(first, count)) {
    if (column.is_signed) {
      text.Add(static_cast<std::int64_t>(v));
    } else {
      text.Add(v);
    }
  }
}

// The names of the fields a kind saves, in declaration order (visit one file of the kind), and how a binary archive
// holds each.
struct SavedFieldNames {
  std::vector<const char*> names;
  std::vector<RawWidth> widths;
  template <typename T, FieldPolicy P>
  void Field(const char* name, T&, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      names.push_back(name);
      widths.push_back(RawWidthOf<T, P>());
    }
  }
};

// Exactly n numbers separated by single spaces, each left as text for its field to parse (in *tokens, whose earlier
// contents are dropped), or a LoadError naming the column (`what`, as ColumnWhat takes).
template <typename What>
void SplitColumn(std::string_view column, std::uint64_t n, const What& what, std::vector<std::string_view>* out) {
  std::vector<std::string_view>& tokens = *out;
  tokens.clear();
  tokens.reserve(std::min<std::uint64_t>(n, column.size() / 2 + 1));
  std::size_t at = 0;
  while (at < column.size()) {
    if (!tokens.empty()) {
      if (column[at] != ' ') throw LoadError(ColumnWhat(what) + ": numbers must be separated by single spaces");
      ++at;
    }
    const std::size_t end = std::min(column.find(' ', at), column.size());
    if (end == at) throw LoadError(ColumnWhat(what) + ": not a number at entry " + std::to_string(tokens.size()));
    if (tokens.size() == n) throw LoadError(ColumnWhat(what) + ": more than " + std::to_string(n) + " numbers");
    tokens.push_back(column.substr(at, end - at));
    at = end;
  }
  if (tokens.size() != n) {
    throw LoadError(ColumnWhat(what) + ": " + std::to_string(tokens.size()) + " numbers for " + std::to_string(n) +
                    " files");
  }
}

// Load: sets field number `want` (among the saved ones) of one file from its text; a wait field resolves the id to
// an object of the archive of the right type and records the wait edge, as FileLoad does.
struct FieldColumnLoad {
  LoadObjects& objects;
  std::uint32_t owner;
  std::size_t want;
  std::string_view text;
  const std::string& what;  // "eventfd.count"
  // Layout 6 binary archives: the value as the 64-bit word the save wrote (a signed field's two's complement), used
  // instead of `text` when set.
  const std::uint64_t* number = nullptr;
  std::size_t next = 0;

  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      if (next++ != want) return;
      if constexpr (P == FieldPolicy::kWait) {
        const std::uint64_t id = Parse<std::uint64_t>();
        const std::uint32_t at = objects.Find(id);
        WaitResolver{objects, owner}.Resolve(name, id, at, value);
        objects.Wait(owner, at);
      } else if constexpr (std::is_same_v<T, bool>) {
        const auto v = Parse<std::uint8_t>();
        if (v > 1) Bad();
        value = v == 1;
      } else if constexpr (std::is_enum_v<T>) {
        value = static_cast<T>(Parse<std::underlying_type_t<T>>());
        if (!Known(value)) Bad();  // every enum saved as a column has a Known() beside it
      } else {
        value = Parse<T>();
      }
    }
  }

 private:
  template <typename T>
  T Parse() const {
    if (number != nullptr) {
      if constexpr (std::is_signed_v<T>) {
        const auto v = static_cast<std::int64_t>(*number);
        if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) Bad();
        return static_cast<T>(v);
      } else {
        if (*number > std::numeric_limits<T>::max()) Bad();
        return static_cast<T>(*number);
      }
    }
    T value{};
    const auto [end, ec] = FromDecimal(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) Bad();
    return value;
  }
  [[noreturn]] void Bad() const {
    throw LoadError(objects.Name(owner) + " column " + what + ": '" +
                    (number != nullptr ? std::to_string(*number) : std::string(text)) +
                    "' is not a number of the field's range");
  }
};

}  // namespace epollcr::archive
