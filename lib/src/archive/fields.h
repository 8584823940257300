// The Boost backend's visitors over VisitState() declarations (state.h): kSave fields written and read in declaration
// order, kWait fields as the referenced object's id; and the Boost serialization of the value types kSave fields
// hold. Internal to lib/.
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
#include <span>
#include <string>
#include <type_traits>

#include "archive/base64.h"
#include "state/visitors.h"

namespace epollcr::archive {

using state::LoadError;
using state::LoadObjects;
using state::SaveIds;
using state::WaitResolver;
using state::RawOf;

// A binary archive holds bytes as they are, and a large column as a std::vector of numbers: one block of bytes
// (Boost's array optimization), read without parsing. Text and xml archives hold both as text.
template <typename Ar>
inline constexpr bool kBinaryArchive = std::is_base_of_v<boost::archive::basic_binary_oarchive<Ar>, Ar> ||
                                       std::is_base_of_v<boost::archive::basic_binary_iarchive<Ar>, Ar>;

// The bytes buffered in a pipe slot or a socket segment, as the item "bytes". Class version 2 of the types that hold
// them (PipeBuffer::Slot, SocketPairState::Segment): in text and xml archives, one string, their base64 encoding
// (archive/base64.h); in binary archives, the bytes (Boost's binary_object), as in version 1. Version 1 held them as a
// binary_object in every format (which Boost writes in text and xml as base64 of its own, with line breaks, one
// character at a time); it is still read.
inline constexpr unsigned kBytesAsBase64Version = 2;
template <typename Ar>
void SaveBytes(Ar& ar, std::span<const std::byte> bytes) {
  if constexpr (kBinaryArchive<Ar>) {
    ar << boost::serialization::make_nvp("bytes", boost::serialization::make_binary_object(bytes.data(), bytes.size()));
  } else {
    std::string text;
    AppendBase64(bytes, text);
    ar << boost::serialization::make_nvp("bytes", text);
  }
}
// Reads into `bytes` exactly; a LoadError naming `what` if the archive holds anything else.
template <typename Ar>
void LoadBytes(Ar& ar, unsigned version, std::span<std::byte> bytes, const char* what) {
  if (version > kBytesAsBase64Version) {
    throw LoadError(std::string(what) + ": class version " + std::to_string(version) + " is newer than this build reads (1.." +
                    std::to_string(kBytesAsBase64Version) + ")");
  }
  if (kBinaryArchive<Ar> || version < kBytesAsBase64Version) {
    auto object = boost::serialization::make_binary_object(bytes.data(), bytes.size());
    ar >> boost::serialization::make_nvp("bytes", object);
    return;
  }
  std::string text;
  ar >> boost::serialization::make_nvp("bytes", text);
  if (!DecodeBase64(text, bytes)) {
    throw LoadError(std::string(what) + ": its bytes are not the base64 encoding of " + std::to_string(bytes.size()) +
                    " bytes (" + std::to_string(text.size()) + " characters; corrupted archive?)");
  }
}

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

}  // namespace epollcr::archive

// Boost serialization of the value types that appear in kSave fields.
namespace boost::serialization {

template <typename Ar>
void save(Ar& ar, const epollcr::PipeBuffer::Slot& slot, unsigned) {
  ar << make_nvp("offset", slot.offset) << make_nvp("len", slot.len);
  epollcr::archive::SaveBytes(ar, std::span<const std::byte>(slot.page.get() + slot.offset, slot.len));
}
template <typename Ar>
void load(Ar& ar, epollcr::PipeBuffer::Slot& slot, unsigned version) {
  ar >> make_nvp("offset", slot.offset) >> make_nvp("len", slot.len);
  if (slot.len == 0 || slot.offset > epollcr::PipeBuffer::kPageSize ||
      slot.len > epollcr::PipeBuffer::kPageSize - slot.offset) {
    throw epollcr::state::LoadError("pipe slot outside its page");
  }
  slot.page = std::make_unique<std::byte[]>(epollcr::PipeBuffer::kPageSize);
  epollcr::archive::LoadBytes(ar, version, std::span<std::byte>(slot.page.get() + slot.offset, slot.len), "pipe slot");
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
  epollcr::archive::SaveBytes(ar, std::span<const std::byte>(seg.data));
}
template <typename Ar>
void load(Ar& ar, epollcr::SocketPairState::Segment& seg, unsigned version) {
  std::uint64_t size = 0, offset = 0;
  ar >> make_nvp("size", size) >> make_nvp("offset", offset) >> make_nvp("truesize", seg.truesize);
  if (size == 0 || size > epollcr::state::kMaxSegmentBytes || offset >= size) {
    throw epollcr::state::LoadError("socket segment size or offset out of range");
  }
  seg.data.resize(size);
  seg.offset = offset;
  epollcr::archive::LoadBytes(ar, version, std::span<std::byte>(seg.data), "socket segment");
}
template <typename Ar>
void serialize(Ar& ar, epollcr::SocketPairState::Segment& seg, unsigned version) {
  split_free(ar, seg, version);
}

template <typename Ar>
void serialize(Ar& ar, epollcr::SocketPairState::End& end, unsigned) {
  if constexpr (Ar::is_saving::value) {
    epollcr::archive::PlainSave<Ar> v{ar};
    end.VisitState(v);
  } else {
    epollcr::archive::PlainLoad<Ar> v{ar};
    end.VisitState(v);
  }
}

}  // namespace boost::serialization

// Class versions: a later release reads today's archives by looking at these. Value types are never tracked, so
// output depends only on values (save, load, save gives the same bytes).
BOOST_CLASS_VERSION(epollcr::PipeBuffer::Slot, epollcr::archive::kBytesAsBase64Version)
BOOST_CLASS_VERSION(epollcr::SocketPairState::Segment, epollcr::archive::kBytesAsBase64Version)
BOOST_CLASS_VERSION(epollcr::SocketPairState::End, 1)
BOOST_CLASS_TRACKING(epollcr::PipeBuffer::Slot, boost::serialization::track_never)
BOOST_CLASS_TRACKING(epollcr::SocketPairState::Segment, boost::serialization::track_never)
BOOST_CLASS_TRACKING(epollcr::SocketPairState::End, boost::serialization::track_never)

