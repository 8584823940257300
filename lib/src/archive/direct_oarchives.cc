// The archives of direct_oarchives.h, and the instantiations of Boost's archive templates for them: the members
// Boost defines in its .ipp files are compiled here, once, as Boost compiles them for its own text_oarchive and
// xml_oarchive.
#include "archive/direct_oarchives.h"

#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_text_oarchive.ipp>
#include <boost/archive/impl/basic_xml_oarchive.ipp>
#include <boost/archive/impl/text_oarchive_impl.ipp>
#include <boost/archive/impl/xml_oarchive_impl.ipp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <exception>
#include <locale>

namespace epollcr::archive {

namespace {
// A lookup rather than five comparisons, and a lambda rather than a function pointer, so that the scan inlines: a
// checkpoint's number columns are long runs of digits and spaces, all plain.
constexpr std::array<bool, 256> kEscaped = [] {
  std::array<bool, 256> e{};
  for (char c : {'<', '>', '&', '"', '\''}) e[static_cast<unsigned char>(c)] = true;
  return e;
}();
}  // namespace

// ---- DirectWriter -------------------------------------------------------------------------------------------------

DirectWriter::DirectWriter(std::ostream& os)
    : os_(os), ungrouped_(std::use_facet<std::numpunct<char>>(os.getloc()).grouping().empty()) {}

void DirectWriter::Put(char c) {
  if (os_.fail()) {
    boost::serialization::throw_exception(
        boost::archive::archive_exception(boost::archive::archive_exception::output_stream_error));
  }
  if (std::ostream::traits_type::eq_int_type(os_.rdbuf()->sputc(c), std::ostream::traits_type::eof())) {
    os_.setstate(std::ios::badbit);
  }
}

void DirectWriter::Write(const char* s, std::size_t n) {
  if (os_.rdbuf()->sputn(s, static_cast<std::streamsize>(n)) != static_cast<std::streamsize>(n)) {
    os_.setstate(std::ios::badbit);
  }
}

template <typename T>
bool DirectWriter::Decimal(T t) {
  const std::ios::fmtflags base = os_.flags() & std::ios::basefield;
  if (!ungrouped_ || os_.fail() || (base != std::ios::dec && base != std::ios::fmtflags{}) ||
      (os_.flags() & std::ios::showpos) != 0 || os_.width() != 0) {
    return false;
  }
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), t);
  Write(digits, static_cast<std::size_t>(end - digits));
  return true;
}

#define EPOLLCR_INSTANTIATE_DECIMAL(T, _) template bool DirectWriter::Decimal(T);
EPOLLCR_FOR_EACH_DECIMAL_TYPE(EPOLLCR_INSTANTIATE_DECIMAL, _)
#undef EPOLLCR_INSTANTIATE_DECIMAL

// ---- text ---------------------------------------------------------------------------------------------------------

DirectTextOArchive::DirectTextOArchive(std::ostream& os, unsigned int flags) : Base(os, flags), out_(os) {
  if ((flags & boost::archive::no_header) == 0) init();
}

// ---- xml ----------------------------------------------------------------------------------------------------------

// The base is told no_header, so that its destructor writes no trailer; the header and trailer are written here, as
// Boost writes them, when `flags` asks for them.
DirectXmlOArchive::DirectXmlOArchive(std::ostream& os, unsigned int flags)
    : Base(os, flags | boost::archive::no_header), out_(os), trailer_((flags & boost::archive::no_header) == 0) {
  if (trailer_) init();
}

DirectXmlOArchive::~DirectXmlOArchive() {
  if (trailer_ && std::uncaught_exceptions() == 0) windup();
}

// Boost's xml_oarchive_impl::save of a string: each character through iterators::xml_escape, which writes '<', '>',
// '&', '"' and '\'' as these entities. Written here (Boost's iterator, instantiated in this file, forms a null
// pointer plus one between characters: UBSan reports it).
void DirectXmlOArchive::WriteEscaped(const char* s, std::size_t n) {
  for (const char* end = s + n; s != end;) {
    const char* plain = std::find_if(s, end, [](char c) { return kEscaped[static_cast<unsigned char>(c)]; });
    out_.Write(s, static_cast<std::size_t>(plain - s));
    if (plain == end) return;
    switch (*plain) {
      case '<': out_.Write("&lt;", 4); break;
      case '>': out_.Write("&gt;", 4); break;
      case '&': out_.Write("&amp;", 5); break;
      case '"': out_.Write("&quot;", 6); break;
      default: out_.Write("&apos;", 6); break;
    }
    s = plain + 1;
  }
}

void DirectXmlOArchive::save(const std::string& s) { WriteEscaped(s.data(), s.size()); }

void DirectXmlOArchive::save(const char* s) { WriteEscaped(s, std::strlen(s)); }

void DirectXmlOArchive::Indent(unsigned depth) {
  static constexpr char kTabs[] = "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t";
  for (; depth > 0;) {
    const unsigned n = std::min<unsigned>(depth, sizeof(kTabs) - 1);
    out_.Write(kTabs, n);
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

using epollcr::archive::DirectTextOArchive;
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

template class detail::archive_serializer_map<DirectTextOArchive>;
template class basic_text_oarchive<DirectTextOArchive>;
template class text_oarchive_impl<DirectTextOArchive>;

template class detail::archive_serializer_map<DirectXmlOArchive>;
template class basic_xml_oarchive<DirectXmlOArchive>;
template class xml_oarchive_impl<DirectXmlOArchive>;

}  // namespace boost::archive
