// Visitors over VisitState() declarations (state.h) that every format shares: each applies one policy rule to every
// declared field (describe, zerovalue, wait resolution, a field by name). No archive header: the Boost backend's
// visitors are in archive/fields.h, the image's in image/fields.h. Internal to lib/ and image/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "epollcr/state.h"
#include "pipe_buffer.h"
#include "socket_pair_state.h"
#include "state/load_objects.h"

namespace epollcr::state {

// Thrown inside the archive code and caught at the API boundary (never escapes the library's own API).
class LoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Limits on sizes read from an archive, checked before anything is allocated for them.
inline constexpr std::uint64_t kMaxObjects = 1u << 24;
inline constexpr std::uint64_t kMaxSegmentBytes = 1u << 20;

// Collects (name, policy) of every declared field: for error messages, docs and tests.
struct Describe {
  std::vector<std::pair<std::string, FieldPolicy>> fields;
  template <typename T, FieldPolicy P>
  void Field(const char* name, const T&, PolicyTag<P>) {
    fields.emplace_back(name, P);
  }
};

inline bool IsZero(int v) { return v == 0; }
inline bool IsZero(std::uint64_t v) { return v == 0; }

// The zerovalue rule: every kZeroValue field must be zero at save time.
struct ZeroValueCheck {
  std::string object;  // "eventpoll#3"; or empty, and the caller puts the name in front of the message
  Status status;
  template <typename T, FieldPolicy P>
  void Field(const char* name, const T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kZeroValue) {
      if (status.ok() && !IsZero(value)) {
        status = Status::Error(EBUSY, object + " field " + name + " must be zero at save time (it is not: " +
                                          std::to_string(value) + ")");
      }
    }
  }
};

// An object's saved fields (kSave and kWait) as bytes, each field's value in declaration order: a save copies them out
// while the locks that guard them are held (SavedFieldsOut) and converts the copy once the locks are released, by
// copying it into a scratch object of the type (SavedFieldsIn) and saving that as the object itself would be (the
// image: image/fields.h CaptureCopies; the Boost backend: archive/world_save.cc). The copy is plain memory, so the
// declaration stays the only list of what is saved. Every saved field must be trivially copyable.
struct SavedFieldsOut {
  std::byte* at;
  template <typename T, FieldPolicy P>
  void Field(const char*, const T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      static_assert(std::is_trivially_copyable_v<T>, "a saved field copied as bytes must be trivially copyable");
      std::memcpy(at, &value, sizeof(T));
      at += sizeof(T);
    }
  }
};
struct SavedFieldsIn {
  const std::byte* at;
  template <typename T, FieldPolicy P>
  void Field(const char*, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      std::memcpy(&value, at, sizeof(T));
      at += sizeof(T);
    }
  }
};
struct SavedFieldsSize {
  std::size_t bytes = 0;
  template <typename T, FieldPolicy P>
  void Field(const char*, const T&, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) bytes += sizeof(T);
  }
};
// The bytes of one object's saved fields (the same for every object of the type: counted once).
template <typename Object>
std::size_t SavedBytes(Object& any) {
  static const std::size_t bytes = [&] {
    SavedFieldsSize size;
    any.VisitState(size);
    return size.bytes;
  }();
  return bytes;
}

// The saved fields of `object` as bytes at `at` (SavedBytes of them); returns where they end. Preconditions: the
// locks that guard the fields are held.
template <typename Object>
std::byte* CopySaved(Object& object, std::byte* at) {
  SavedFieldsOut copy{at};
  object.VisitState(copy);
  return copy.at;
}

// Object ids by address: an open-addressed table (linear probing, at most half full), its slots from `memory`. A
// save adds every file of the world once and looks up every entry's file, with the cut's locks held; a
// std::unordered_map took a node per file (a hand-off of 10,000 host files made 10,000 of them in its pause).
class IdMap {
 public:
  explicit IdMap(std::pmr::memory_resource* memory = std::pmr::get_default_resource()) : slots_(memory) {}
  // Room for `n` objects without growing.
  void reserve(std::size_t n) {
    if (2 * n > slots_.size()) Rehash(2 * n);
  }
  // Adds `object` (not null) with `id` unless it has one; returns its id and whether it was added.
  std::pair<std::uint64_t, bool> try_emplace(const void* object, std::uint64_t id) {
    if (2 * (size_ + 1) > slots_.size()) Rehash(2 * (size_ + 1));
    Slot& s = slots_[IndexOf(object)];
    if (s.object != nullptr) return {s.id, false};
    s = {object, id};
    ++size_;
    return {id, true};
  }
  // The id of `object`, or null if it has none.
  const std::uint64_t* find(const void* object) const {
    if (slots_.empty() || object == nullptr) return nullptr;
    const Slot& s = slots_[IndexOf(object)];
    return s.object != nullptr ? &s.id : nullptr;
  }
  bool contains(const void* object) const { return find(object) != nullptr; }
  std::size_t size() const { return size_; }

 private:
  struct Slot {
    const void* object = nullptr;
    std::uint64_t id = 0;
  };
  // Fibonacci hashing of the address (its low bits are the allocator's alignment, the same for most objects).
  std::size_t Home(const void* object) const {
    return static_cast<std::size_t>((reinterpret_cast<std::uintptr_t>(object) * 0x9E3779B97F4A7C15ull) >> 32) &
           (slots_.size() - 1);
  }
  // The slot holding `object`, or the empty one where it would go. Preconditions: a slot is empty.
  std::size_t IndexOf(const void* object) const {
    std::size_t at = Home(object);
    while (slots_[at].object != nullptr && slots_[at].object != object) at = (at + 1) & (slots_.size() - 1);
    return at;
  }
  void Rehash(std::size_t at_least) {
    std::size_t n = 16;
    while (n < at_least) n *= 2;
    std::pmr::vector<Slot> old(n, Slot{}, slots_.get_allocator());
    old.swap(slots_);
    for (const Slot& s : old) {
      if (s.object != nullptr) slots_[IndexOf(s.object)] = s;
    }
  }
  std::pmr::vector<Slot> slots_;
  std::size_t size_ = 0;
};

// Object ids of a snapshot: files and the shared state behind pipes and socket pairs, one id space from 1.
// A poll's entries are saved in (file id, fd) order, so consecutive lookups are mostly of one file: the last answer is
// kept. Used by one saving thread at a time.
struct SaveIds {
  SaveIds() = default;
  // The table's slots from `memory` (a cut's, freed all at once with it).
  explicit SaveIds(std::pmr::memory_resource* memory) : ids(memory) {}
  IdMap ids;
  std::uint64_t Of(const void* object) const {
    if (object == last_ && object != nullptr) return last_id_;
    const std::uint64_t* id = ids.find(object);
    if (id == nullptr) throw LoadError("internal: a referenced object has no id");
    last_ = object;
    last_id_ = *id;
    return *id;
  }

 private:
  mutable const void* last_ = nullptr;
  mutable std::uint64_t last_id_ = 0;
};

// The object a wait field refers to.
template <typename T>
const void* RawOf(const std::shared_ptr<T>& p) { return p.get(); }
inline const void* RawOf(File* p) { return p; }

// Resolves a wait reference of the object at position `owner`, read as an object id, to an object of the archive of
// the right type, or throws a LoadError naming the field.
struct WaitResolver {
  LoadObjects& objects;
  std::uint32_t owner;
  template <typename T>
  void Resolve(const char* name, std::uint64_t id, std::uint32_t at, std::shared_ptr<T>& out) {
    if constexpr (std::is_same_v<T, PipeBuffer>) {
      auto it = objects.pipes.find(at);
      if (it == objects.pipes.end()) Missing(name, id);
      out = it->second;
    } else {
      auto it = objects.pairs.find(at);
      if (it == objects.pairs.end()) Missing(name, id);
      out = it->second;
    }
  }
  void Resolve(const char* name, std::uint64_t id, std::uint32_t at, File*& out) {
    if (at == IdIndex::kNone || !objects.files[at]) Missing(name, id);
    out = objects.files[at].get();
  }
  [[noreturn]] void Missing(const char* name, std::uint64_t id) {
    throw LoadError(objects.Name(owner) + " field " + name + ": object " + std::to_string(id) +
                    " is not in the archive or has the wrong type");
  }
};



// A declared field by name and type, through VisitState (so codecs read and write exactly the declared fields).
template <typename T>
struct FieldRef {
  const char* want;
  T* found = nullptr;
  template <typename U, FieldPolicy P>
  void Field(const char* name, U& value, PolicyTag<P>) {
    if constexpr (std::is_same_v<U, T>) {
      if (std::string_view(name) == want) found = &value;
    }
  }
};
template <typename T, typename Object>
T& FieldOf(Object& object, const char* name) {
  FieldRef<T> ref{name};
  object.VisitState(ref);
  if (ref.found == nullptr) throw LoadError(std::string("internal: no declared field ") + name);
  return *ref.found;
}

}  // namespace epollcr::state
