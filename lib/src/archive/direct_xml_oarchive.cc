// DirectXmlOArchive (direct_xml_oarchive.h), and the instantiations of Boost's archive templates for it: the members
// Boost defines in its .ipp files are compiled here, once, as Boost compiles them for its own xml_oarchive.
#include "archive/direct_xml_oarchive.h"

#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_xml_oarchive.ipp>
#include <boost/archive/impl/xml_oarchive_impl.ipp>

#include <algorithm>
#include <cstring>

namespace epollcr::archive {

namespace {
bool Escaped(char c) { return c == '<' || c == '>' || c == '&' || c == '"' || c == '\''; }
}  // namespace

DirectXmlOArchive::DirectXmlOArchive(std::ostream& os, unsigned int flags) : Base(os, flags) {
  if ((flags & boost::archive::no_header) == 0) init();
}

void DirectXmlOArchive::save(const std::string& s) {
  if (std::any_of(s.begin(), s.end(), Escaped)) return Base::save(s);
  Write(s.data(), s.size());
}

void DirectXmlOArchive::save(const char* s) {
  const std::size_t n = std::strlen(s);
  if (std::any_of(s, s + n, Escaped)) return Base::save(s);
  Write(s, n);
}

void DirectXmlOArchive::put(char c) {
  if (os.fail()) {  // as Boost's put
    boost::serialization::throw_exception(
        boost::archive::archive_exception(boost::archive::archive_exception::output_stream_error));
  }
  if (std::ostream::traits_type::eq_int_type(os.rdbuf()->sputc(c), std::ostream::traits_type::eof())) {
    os.setstate(std::ios::badbit);
  }
}

void DirectXmlOArchive::put(const char* s) { Write(s, std::strlen(s)); }

void DirectXmlOArchive::Write(const char* s, std::size_t n) {
  if (os.rdbuf()->sputn(s, static_cast<std::streamsize>(n)) != static_cast<std::streamsize>(n)) {
    os.setstate(std::ios::badbit);
  }
}

}  // namespace epollcr::archive

namespace boost::archive {

using epollcr::archive::DirectXmlOArchive;

template class detail::archive_serializer_map<DirectXmlOArchive>;
template class basic_xml_oarchive<DirectXmlOArchive>;
template class xml_oarchive_impl<DirectXmlOArchive>;

}  // namespace boost::archive
