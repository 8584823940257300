// DirectXmlOArchive (direct_xml_oarchive.h), and the instantiations of Boost's archive templates for it: the members
// Boost defines in its .ipp files are compiled here, once, as Boost compiles them for its own xml_oarchive.
#include "archive/direct_xml_oarchive.h"

#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_xml_oarchive.ipp>
#include <boost/archive/impl/xml_oarchive_impl.ipp>

#include <algorithm>
#include <array>
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

void DirectXmlOArchive::Indent(unsigned depth) {
  static constexpr char kTabs[] = "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t";
  for (; depth > 0;) {
    const unsigned n = std::min<unsigned>(depth, sizeof(kTabs) - 1);
    Write(kTabs, n);
    depth -= n;
  }
}

namespace {

// The characters below 128 an element name may hold: letters, digits, '-', '.', '_' (Boost's detail::XML_name).
constexpr std::array<bool, 128> kNameChars = [] {
  std::array<bool, 128> ok{};
  for (char c = 'a'; c <= 'z'; ++c) ok[static_cast<unsigned char>(c)] = true;
  for (char c = 'A'; c <= 'Z'; ++c) ok[static_cast<unsigned char>(c)] = true;
  for (char c = '0'; c <= '9'; ++c) ok[static_cast<unsigned char>(c)] = true;
  ok['-'] = ok['.'] = ok['_'] = true;
  return ok;
}();

void CheckName(const char* name) {
  for (const char* c = name; *c != '\0'; ++c) {
    const auto u = static_cast<unsigned char>(*c);
    if (u < 128 && !kNameChars[u]) {
      boost::serialization::throw_exception(
          boost::archive::xml_archive_exception(boost::archive::xml_archive_exception::xml_archive_tag_name_error));
    }
  }
}

}  // namespace

}  // namespace epollcr::archive

namespace boost::archive {

using epollcr::archive::DirectXmlOArchive;

// What basic_xml_oarchive::save_start writes: the end of a pending start tag ('>'), a new line and the indentation
// unless this is the root, '<' and the name; the start tag stays open for attributes (pending_preamble).
template <>
void basic_xml_oarchive<DirectXmlOArchive>::save_start(const char* name) {
  if (name == nullptr) return;
  epollcr::archive::CheckName(name);
  end_preamble();
  if (depth > 0) {
    this->This()->put('\n');
    this->This()->Indent(depth);
  }
  ++depth;
  this->This()->put('<');
  this->This()->save(name);
  pending_preamble = true;
  indent_next = false;
}

// What basic_xml_oarchive::save_end writes: the end of a pending start tag, a new line and the indentation if an
// element ended inside this one, "</", the name and '>', and a new line after the root's end tag.
template <>
void basic_xml_oarchive<DirectXmlOArchive>::save_end(const char* name) {
  if (name == nullptr) return;
  epollcr::archive::CheckName(name);
  end_preamble();
  --depth;
  if (indent_next) {
    this->This()->put('\n');
    this->This()->Indent(depth);
  }
  indent_next = true;
  this->This()->put("</");
  this->This()->save(name);
  this->This()->put('>');
  if (depth == 0) this->This()->put('\n');
}

template class detail::archive_serializer_map<DirectXmlOArchive>;
template class basic_xml_oarchive<DirectXmlOArchive>;
template class xml_oarchive_impl<DirectXmlOArchive>;

}  // namespace boost::archive
