// The bounded input archives (bounded_archives.h), and the instantiations of Boost's archive templates for them: the
// members Boost defines in its .ipp files are compiled here, once, as Boost compiles them for its own archives in
// libboost_serialization.
#include "state/bounded_archives.h"

#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_binary_iarchive.ipp>
#include <boost/archive/impl/basic_binary_iprimitive.ipp>
#include <boost/archive/impl/basic_text_iarchive.ipp>
#include <boost/archive/impl/basic_xml_iarchive.ipp>
#include <boost/archive/impl/text_iarchive_impl.ipp>
#include <boost/archive/impl/xml_iarchive_impl.ipp>

#include "state/visitors.h"

namespace epollcr::state {

std::uint64_t BytesLeft(std::streambuf& buffer) {
  const std::streamsize n = buffer.in_avail();
  return n > 0 ? static_cast<std::uint64_t>(n) : 0;
}

void CheckFitsInRest(std::uint64_t n, std::uint64_t left, const char* what) {
  if (n > left) {
    throw LoadError("the archive declares " + std::to_string(n) + " " + what + " where " + std::to_string(left) +
                    " bytes are left (corrupted?)");
  }
}

// ---- text ---------------------------------------------------------------------------------------------------------

BoundedTextIArchive::BoundedTextIArchive(std::istream& is, unsigned int flags) : Base(is, flags) {
  if ((flags & boost::archive::no_header) == 0) init();
}

// Boost's format: the length in decimal, one space, the bytes.
void BoundedTextIArchive::load(std::string& s) {
  std::size_t size = 0;
  *this >> size;
  is.get();  // the space
  CheckFitsInRest(size, BytesLeft(*is.rdbuf()), "string bytes");
  s.resize(size);
  if (size > 0 && !is.read(s.data(), static_cast<std::streamsize>(size))) {
    throw LoadError("the archive ends inside a string");
  }
}

void BoundedTextIArchive::load(boost::serialization::collection_size_type& count) {
  Base::load(count);
  CheckFitsInRest(count, BytesLeft(*is.rdbuf()), "collection items");
}

// ---- xml ----------------------------------------------------------------------------------------------------------

BoundedXmlIArchive::BoundedXmlIArchive(std::istream& is, unsigned int flags) : Base(is, flags) {
  if ((flags & boost::archive::no_header) == 0) init();
}

void BoundedXmlIArchive::load(boost::serialization::collection_size_type& count) {
  Base::load(count);
  CheckFitsInRest(count, BytesLeft(*is.rdbuf()), "collection items");
}

void BoundedXmlIArchive::load_start(const char* name) {
  if (name == nullptr) return;  // not a name-value pair: no tag
  if (!gimpl->parse_start_tag(get_is())) {
    boost::serialization::throw_exception(
        boost::archive::archive_exception(boost::archive::archive_exception::input_stream_error));
  }
  ++depth_;
}

void BoundedXmlIArchive::load_end(const char* name) {
  if (name == nullptr) return;
  if (!gimpl->parse_end_tag(get_is())) {
    boost::serialization::throw_exception(
        boost::archive::archive_exception(boost::archive::archive_exception::input_stream_error));
  }
  if (depth_ == 0 || --depth_ == 0) return;
  // std::string == const char*: the lengths first (strlen of the expected name), then the bytes.
  if ((get_flags() & boost::archive::no_xml_tag_checking) == 0 && gimpl->rv.object_name != name) {
    boost::serialization::throw_exception(
        boost::archive::xml_archive_exception(boost::archive::xml_archive_exception::xml_archive_tag_mismatch, name));
  }
}

// ---- binary -------------------------------------------------------------------------------------------------------

BoundedBinaryIArchive::BoundedBinaryIArchive(std::istream& is, unsigned int flags) : Base(is, flags) { init(flags); }

// Boost's format: the length as a native std::size_t, the bytes.
void BoundedBinaryIArchive::load(std::string& s) {
  std::size_t size = 0;
  load(size);
  CheckFitsInRest(size, BytesLeft(m_sb), "string bytes");
  s.resize(size);
  if (size > 0) load_binary(s.data(), size);
}

void BoundedBinaryIArchive::load_override(boost::serialization::collection_size_type& count) {
  Base::load_override(count);
  CheckFitsInRest(count, BytesLeft(m_sb), "collection items");
}

}  // namespace epollcr::state

namespace boost::archive {

using epollcr::state::BoundedBinaryIArchive;
using epollcr::state::BoundedTextIArchive;
using epollcr::state::BoundedXmlIArchive;

template class detail::archive_serializer_map<BoundedTextIArchive>;
template class basic_text_iarchive<BoundedTextIArchive>;
template class text_iarchive_impl<BoundedTextIArchive>;

template class detail::archive_serializer_map<BoundedXmlIArchive>;
template class basic_xml_iarchive<BoundedXmlIArchive>;
template class xml_iarchive_impl<BoundedXmlIArchive>;

template class detail::archive_serializer_map<BoundedBinaryIArchive>;
template class basic_binary_iprimitive<BoundedBinaryIArchive, std::istream::char_type, std::istream::traits_type>;
template class basic_binary_iarchive<BoundedBinaryIArchive>;

}  // namespace boost::archive
