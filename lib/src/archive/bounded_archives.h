// The Boost input archives LoadWorld reads through: Boost's text, xml and binary archives with the loads that trust
// the input replaced. Internal to lib/ (the embedders' own archives, boost_world.h, stay Boost's).
//
// Boost.Serialization 1.74 takes lengths and counts from the archive at their word:
//   - text and binary: load(std::string&) resizes the string to the length the archive declares, then reads; a
//     259-byte text archive declaring 10 GB allocates and zero-fills 10 GB (impl/text_iarchive_impl.ipp,
//     impl/basic_binary_iprimitive.ipp);
//   - every format: a collection (std::vector, std::deque) is resized or reserved to the count the archive declares
//     before one item is read (serialization/vector.hpp, deque.hpp, collections_load_imp.hpp);
//   - xml: load_end compares the end tag it read with the expected name by reading name[size of the end tag] and
//     that many bytes of the name, past its end when the end tag is longer (impl/basic_xml_iarchive.ipp).
// And Boost 1.74 asserts (BOOST_ASSERT: an abort in a build without NDEBUG, a silent truncation in one with it) that
// a number read from the archive fits the type it is stored in:
//   - xml: the header's version attribute is read as an unsigned int and made a library_version_type (16 bits)
//     unchecked (xml_iarchive_impl::init; library_version_type.hpp), and the class_id attribute an int made a
//     class_id_type (16 bits) (basic_xml_iarchive::load_override);
//   - xml, unlike text and binary, never compares the archive's library version with its own (no
//     unsupported_version), and every format takes the old layouts of library versions below 8 (16-bit class ids,
//     8- or 16-bit versions, 32-bit counts: basic_binary_iarchive.hpp), which no epollcr archive has.
// Here a string cannot be longer than the bytes left in the input, a collection cannot have more items than there
// are bytes left (every item epollcr saves takes at least one byte, in every format), an end tag is compared as a
// string with the expected name, length first, the library version must be one Boost 1.47 or later wrote and this
// Boost reads (kMinLibraryVersion .. BOOST_ARCHIVE_VERSION()) in every format, and a class id must fit its 16 bits.
// docs/state-model.md, "Hostile archives", lists every value Boost reads and where it is bounded. What reads and what is refused is otherwise Boost's: these classes
// read exactly the archives Boost's own read (same format, same library and class versions).
//
// The stream an archive reads from must hold the whole rest of the archive in its buffer's get area (in_avail() is
// then the bytes left), as LoadWorld's view of the bytes does (archive/world_api.cc). With any other buffer the bounds are
// smaller than the truth: loads are refused, never over-allocated.
//
// Dispatch (boost/archive/detail/interface_iarchive.hpp and friends): `ar >> x` calls This()->load_override(x);
// a primitive ends in This()->load(x); an xml name-value pair calls This()->load_start and This()->load_end. So a
// member of the most derived class with the same name and parameters replaces Boost's. The members these classes
// replace are not virtual, and the classes are not meant to be used through pointers to their Boost bases.
#pragma once

#include <boost/archive/binary_iarchive_impl.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/serialization/array_optimization.hpp>
#include <boost/serialization/collection_size_type.hpp>
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <type_traits>

#include "archive/decimal_types.h"
#include "state/visitors.h"

namespace epollcr::archive {

using state::LoadError;

// An input stream buffer over bytes that stay where they are (no copy of the archive). Its get area is the whole rest
// of the archive, which is what the bounded archives take as the bytes left; the xml archive also scans it in place.
class ViewBuffer : public std::streambuf {
 public:
  explicit ViewBuffer(std::string_view bytes) {
    char* p = const_cast<char*>(bytes.data());  // read only: the get area is never written through
    setg(p, p, p + bytes.size());
  }
  // What the archive has not read yet.
  std::string_view Rest() const { return std::string_view(gptr(), static_cast<std::size_t>(egptr() - gptr())); }
  // Consumes n <= Rest().size() bytes.
  void Skip(std::size_t n) { setg(eback(), gptr() + n, egptr()); }
};

// The bytes the archive has not read yet, as far as the stream buffer knows (0 if it knows none).
std::uint64_t BytesLeft(std::streambuf& buffer);
// Throw a LoadError unless `n` (of `what`: "string bytes", "collection items") fits in the `left` bytes.
void CheckFitsInRest(std::uint64_t n, std::uint64_t left, const char* what);

// The oldest Boost library version an archive may declare: 9 (Boost 1.47). Every version from 8 up reads class ids,
// versions and counts in today's widths; epollcr has only ever written 18 (Boost 1.74).
inline constexpr unsigned kMinLibraryVersion = 9;
// Throw a LoadError unless `version` (the archive header's library version, as read, before it is narrowed to 16
// bits) is within kMinLibraryVersion .. BOOST_ARCHIVE_VERSION().
void CheckLibraryVersion(std::uint64_t version);

// A number of a text or xml archive. Boost reads it with `is >> t` (basic_text_iprimitive::load): a sentry and the
// locale's num_get for every count, id, version and length of the archive. From a ViewBuffer, whitespace if the
// stream skips it, then plain decimal digits (a '-' first for a signed type) that fit T are read here, in place, as
// `is >> t` reads them (the archives' streams use the classic locale's digits); false, with nothing read, for
// anything else (another buffer, a failed stream, a '+', a number out of T's range, no digits), which the caller
// leaves to Boost's load over the same characters. T is one of EPOLLCR_FOR_EACH_DECIMAL_TYPE's.
template <typename T>
bool ReadDecimal(std::istream& is, ViewBuffer* view, T& t);

// The loads of those number types in an archive class with a ViewBuffer* view_ and a Base: ReadDecimal from STREAM,
// else Boost's load. Overloads, not one template: Boost's own load is a template of the same signature, which a
// template in the derived class would hide (clang) or not (gcc).
#define EPOLLCR_DECIMAL_LOAD(T, STREAM)                \
  void load(T& t) {                                    \
    if (!ReadDecimal(STREAM, view_, t)) Base::load(t); \
  }

class BoundedTextIArchive : public boost::archive::text_iarchive_impl<BoundedTextIArchive> {
 public:
  explicit BoundedTextIArchive(std::istream& is, unsigned int flags = 0);

 private:
  friend class boost::archive::detail::interface_iarchive<BoundedTextIArchive>;
  friend class boost::archive::basic_text_iarchive<BoundedTextIArchive>;
  friend class boost::archive::load_access;
  using Base = boost::archive::text_iarchive_impl<BoundedTextIArchive>;

  // Boost's header (signature, library version), then the library version bounded.
  void init();

  using Base::load;
  void load(std::string& s);
  void load(boost::serialization::collection_size_type& count);
  // epollcr loads no C strings and no wide strings (Boost's loads of those trust the declared length as well).
  void load(char*) = delete;
  void load(wchar_t*) = delete;
  void load(std::wstring&) = delete;

  EPOLLCR_FOR_EACH_DECIMAL_TYPE(EPOLLCR_DECIMAL_LOAD, is)

  ViewBuffer* view_ = nullptr;  // the stream's buffer, if it is a ViewBuffer
};

class BoundedXmlIArchive : public boost::archive::xml_iarchive_impl<BoundedXmlIArchive> {
 public:
  explicit BoundedXmlIArchive(std::istream& is, unsigned int flags = 0);

 private:
  friend class boost::archive::detail::interface_iarchive<BoundedXmlIArchive>;
  friend class boost::archive::basic_xml_iarchive<BoundedXmlIArchive>;
  friend class boost::archive::load_access;
  using Base = boost::archive::xml_iarchive_impl<BoundedXmlIArchive>;

  // Boost's header (the boost_serialization element and its attributes), with the library version bounded before it
  // is narrowed (xml_iarchive_impl::init narrows it unchecked).
  void init();
  // A class id from the element's class_id attribute, bounded to its 16 bits before it is narrowed.
  using Base::load_override;
  void load_override(boost::archive::class_id_type& t);

  // A string is read up to the next '<', so it is never longer than the input. Without a '&' in it, its characters
  // are the string (Boost's grammar: CharData is every character but '&' and '<'); with one, Boost's grammar decodes
  // the references.
  using Base::load;
  void load(std::string& s);
  void load(boost::serialization::collection_size_type& count);
  void load(char*) = delete;
  void load(wchar_t*) = delete;
  void load(std::wstring&) = delete;
  EPOLLCR_FOR_EACH_DECIMAL_TYPE(EPOLLCR_DECIMAL_LOAD, get_is())

  // Boost's checks, with the end tag compared safely. Like Boost, the end tag of a top-level element (depth 0 after
  // it) is not compared, and the no_xml_tag_checking flag turns the comparison off.
  void load_start(const char* name);
  void load_end(const char* name);

  // Boost's grammar (basic_xml_grammar::my_parse) reads a tag or a string with one istream::get() per character
  // and then runs its Spirit rule over what it read: about as costly per character as an epoll_ctl is per entry.
  // These read the same characters straight from the stream buffer and decide the common case themselves: a tag
  // that is only an ASCII name ("<fds>", "</fds>"), a string without references. Everything else (attributes,
  // other names, references, malformed input) goes to Boost's grammar, over the same characters, so what loads and
  // what is refused stays Boost's.
  //
  // ReadThrough: the characters up to and including `delimiter`, as my_parse reads them, in *read (in the archive's
  // bytes if the stream reads a ViewBuffer, else in scratch_; valid until the next read): false if the stream has
  // failed already, an input_stream_error if it ends first.
  bool ReadThrough(char delimiter, std::string_view* read);
  bool ParseTag(bool end_tag);

  unsigned depth_ = 0;          // elements started and not ended (Boost's own count is private to basic_xml_iarchive)
  ViewBuffer* view_ = nullptr;  // the stream's buffer, if it is a ViewBuffer
  std::string scratch_;         // what ReadThrough read from any other buffer
};

class BoundedBinaryIArchive
    : public boost::archive::binary_iarchive_impl<BoundedBinaryIArchive, std::istream::char_type,
                                                  std::istream::traits_type> {
 public:
  explicit BoundedBinaryIArchive(std::istream& is, unsigned int flags = 0);

 private:
  friend class boost::archive::detail::interface_iarchive<BoundedBinaryIArchive>;
  friend class boost::archive::basic_binary_iarchive<BoundedBinaryIArchive>;
  friend class boost::archive::basic_binary_iprimitive<BoundedBinaryIArchive, std::istream::char_type,
                                                       std::istream::traits_type>;
  friend class boost::archive::load_access;
  using Base =
      boost::archive::binary_iarchive_impl<BoundedBinaryIArchive, std::istream::char_type, std::istream::traits_type>;

  // Boost's header (signature, library version byte), then the library version bounded.
  void init(unsigned int flags);

  using Base::load;
  void load(std::string& s);
  void load(char*) = delete;
  void load(wchar_t*) = delete;
  void load(std::wstring&) = delete;
  // A binary archive reads a collection's count in load_override, by library version (basic_binary_iarchive.hpp):
  // the bound goes there, after Boost has read it whichever way.
  using Base::load_override;
  void load_override(boost::serialization::collection_size_type& count);
};

}  // namespace epollcr::archive

// As for boost::archive::binary_iarchive (binary_iarchive.hpp): a vector of bitwise-serializable items is one block of
// bytes after its count, not an item version and then item by item. Without this the archive would not read the
// vectors binary_oarchive writes.
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(epollcr::archive::BoundedBinaryIArchive)
