// Visitors over VisitState() declarations (state.h): each applies one policy rule to every declared field.
// Internal to lib/.
#pragma once

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>
#include <boost/serialization/binary_object.hpp>
#include <boost/serialization/deque.hpp>
#include <boost/serialization/nvp.hpp>
#include <boost/serialization/split_free.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <boost/serialization/version.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
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
  std::string object;  // "eventpoll#3"
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

// kSave fields of types whose fields are all plain (no references): written and read in declaration order.
template <typename Ar>
struct PlainSave {
  Ar& ar;
  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    static_assert(P != FieldPolicy::kWait && P != FieldPolicy::kManual, "plain types have no references or hooks");
    if constexpr (P == FieldPolicy::kSave) ar << boost::serialization::make_nvp(name, value);
  }
};
template <typename Ar>
struct PlainLoad {
  Ar& ar;
  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    static_assert(P != FieldPolicy::kWait && P != FieldPolicy::kManual, "plain types have no references or hooks");
    if constexpr (P == FieldPolicy::kSave) ar >> boost::serialization::make_nvp(name, value);
  }
};

// Object ids of a snapshot: files and the shared state behind pipes and socket pairs, one id space from 1.
struct SaveIds {
  std::unordered_map<const void*, std::uint64_t> ids;
  std::uint64_t Of(const void* object) const {
    auto it = ids.find(object);
    if (it == ids.end()) throw LoadError("internal: a referenced object has no id");
    return it->second;
  }
};

// The object a wait field refers to.
template <typename T>
const void* RawOf(const std::shared_ptr<T>& p) { return p.get(); }
inline const void* RawOf(File* p) { return p; }

// Fields of files: kSave values, kWait references as object ids.
template <typename Ar>
struct FileSave {
  Ar& ar;
  const SaveIds& ids;
  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave) {
      ar << boost::serialization::make_nvp(name, value);
    } else if constexpr (P == FieldPolicy::kWait) {
      std::uint64_t id = ids.Of(RawOf(value));
      ar << boost::serialization::make_nvp(name, id);
    }
  }
};

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

// Loads the fields of the object at position `owner`; a wait field reads an object id, resolves it to an object of
// the archive of the right type and records the wait edge.
template <typename Ar>
struct FileLoad {
  Ar& ar;
  LoadObjects& objects;
  std::uint32_t owner;
  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave) {
      ar >> boost::serialization::make_nvp(name, value);
    } else if constexpr (P == FieldPolicy::kWait) {
      std::uint64_t id = 0;
      ar >> boost::serialization::make_nvp(name, id);
      const std::uint32_t at = objects.Find(id);
      WaitResolver{objects, owner}.Resolve(name, id, at, value);
      objects.Wait(owner, at);
    }
  }
};

}  // namespace epollcr::state

// Boost serialization of the value types that appear in kSave fields.
namespace boost::serialization {

template <typename Ar>
void save(Ar& ar, const epollcr::PipeBuffer::Slot& slot, unsigned) {
  ar << make_nvp("offset", slot.offset) << make_nvp("len", slot.len);
  ar << make_nvp("bytes", make_binary_object(slot.page.get() + slot.offset, slot.len));
}
template <typename Ar>
void load(Ar& ar, epollcr::PipeBuffer::Slot& slot, unsigned) {
  ar >> make_nvp("offset", slot.offset) >> make_nvp("len", slot.len);
  if (slot.len == 0 || slot.offset > epollcr::PipeBuffer::kPageSize ||
      slot.len > epollcr::PipeBuffer::kPageSize - slot.offset) {
    throw epollcr::state::LoadError("pipe slot outside its page");
  }
  slot.page = std::make_unique<std::byte[]>(epollcr::PipeBuffer::kPageSize);
  auto bytes = make_binary_object(slot.page.get() + slot.offset, slot.len);
  ar >> make_nvp("bytes", bytes);
}
template <typename Ar>
void serialize(Ar& ar, epollcr::PipeBuffer::Slot& slot, unsigned version) {
  split_free(ar, slot, version);
}

template <typename Ar>
void save(Ar& ar, const epollcr::SocketPairState::Segment& seg, unsigned) {
  std::uint64_t size = seg.data.size();
  std::uint64_t offset = seg.offset;
  ar << make_nvp("size", size) << make_nvp("offset", offset) << make_nvp("truesize", seg.truesize);
  ar << make_nvp("bytes", make_binary_object(seg.data.data(), seg.data.size()));
}
template <typename Ar>
void load(Ar& ar, epollcr::SocketPairState::Segment& seg, unsigned) {
  std::uint64_t size = 0, offset = 0;
  ar >> make_nvp("size", size) >> make_nvp("offset", offset) >> make_nvp("truesize", seg.truesize);
  if (size == 0 || size > epollcr::state::kMaxSegmentBytes || offset >= size) {
    throw epollcr::state::LoadError("socket segment size or offset out of range");
  }
  seg.data.resize(size);
  seg.offset = offset;
  auto bytes = make_binary_object(seg.data.data(), size);
  ar >> make_nvp("bytes", bytes);
}
template <typename Ar>
void serialize(Ar& ar, epollcr::SocketPairState::Segment& seg, unsigned version) {
  split_free(ar, seg, version);
}

template <typename Ar>
void serialize(Ar& ar, epollcr::SocketPairState::End& end, unsigned) {
  if constexpr (Ar::is_saving::value) {
    epollcr::state::PlainSave<Ar> v{ar};
    end.VisitState(v);
  } else {
    epollcr::state::PlainLoad<Ar> v{ar};
    end.VisitState(v);
  }
}

}  // namespace boost::serialization

// Class versions: a later release reads today's archives by looking at these. Value types are never tracked, so
// output depends only on values (save, load, save gives the same bytes).
BOOST_CLASS_VERSION(epollcr::PipeBuffer::Slot, 1)
BOOST_CLASS_VERSION(epollcr::SocketPairState::Segment, 1)
BOOST_CLASS_VERSION(epollcr::SocketPairState::End, 1)
BOOST_CLASS_TRACKING(epollcr::PipeBuffer::Slot, boost::serialization::track_never)
BOOST_CLASS_TRACKING(epollcr::SocketPairState::Segment, boost::serialization::track_never)
BOOST_CLASS_TRACKING(epollcr::SocketPairState::End, boost::serialization::track_never)

namespace epollcr::state {

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
