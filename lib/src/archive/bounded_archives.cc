// The bounded input archives (bounded_archives.h), and the instantiations of Boost's archive templates for them: the
// members Boost defines in its .ipp files are compiled here, once, as Boost compiles them for its own archives in
// libboost_serialization.
#include "archive/bounded_archives.h"

#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_binary_iarchive.ipp>
#include <boost/archive/impl/basic_binary_iprimitive.ipp>
#include <boost/archive/impl/basic_text_iarchive.ipp>
#include <boost/archive/impl/basic_xml_iarchive.ipp>
#include <boost/archive/impl/text_iarchive_impl.ipp>
#include <boost/archive/impl/xml_iarchive_impl.ipp>

#include <charconv>
#include <limits>
#include <sstream>
#include <string_view>

#include "archive/columns.h"
#include "state/visitors.h"

namespace epollcr::archive {

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

void CheckLibraryVersion(std::uint64_t version) {
  const unsigned newest = boost::archive::BOOST_ARCHIVE_VERSION();
  if (version < kMinLibraryVersion || version > newest) {
    throw LoadError("the archive's Boost library version " + std::to_string(version) + " is not one this build reads (" +
                    std::to_string(kMinLibraryVersion) + ".." + std::to_string(newest) + ")");
  }
}

namespace {
bool IsCSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }
}  // namespace

template <typename T>
bool ReadDecimal(std::istream& is, ViewBuffer* view, T& t) {
  if (view == nullptr || !is.good()) return false;
  const std::string_view rest = view->Rest();
  std::size_t at = 0;
  if ((is.flags() & std::ios::skipws) != 0) {
    while (at < rest.size() && IsCSpace(rest[at])) ++at;
  }
  const char* const begin = rest.data() + at;
  const char* const end = rest.data() + rest.size();
  if (begin == end || !((*begin >= '0' && *begin <= '9') || (std::is_signed_v<T> && *begin == '-'))) return false;
  T value{};
  const auto [next, ec] = FromDecimal(begin, end, value);
  if (ec != std::errc()) return false;
  view->Skip(static_cast<std::size_t>(next - rest.data()));
  t = value;
  return true;
}

#define EPOLLCR_INSTANTIATE_READ_DECIMAL(T, _) template bool ReadDecimal(std::istream&, ViewBuffer*, T&);
EPOLLCR_FOR_EACH_DECIMAL_TYPE(EPOLLCR_INSTANTIATE_READ_DECIMAL, _)
#undef EPOLLCR_INSTANTIATE_READ_DECIMAL

// ---- text ---------------------------------------------------------------------------------------------------------

BoundedTextIArchive::BoundedTextIArchive(std::istream& is, unsigned int flags)
    : Base(is, flags), view_(dynamic_cast<ViewBuffer*>(is.rdbuf())) {
  if ((flags & boost::archive::no_header) == 0) init();
}

// Boost reads the version as a 16-bit number (a larger one fails the stream) and refuses one newer than its own.
void BoundedTextIArchive::init() {
  Base::init();
  CheckLibraryVersion(get_library_version());
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

BoundedXmlIArchive::BoundedXmlIArchive(std::istream& is, unsigned int flags)
    : Base(is, flags), view_(dynamic_cast<ViewBuffer*>(is.rdbuf())) {
  if ((flags & boost::archive::no_header) == 0) init();
}

// As xml_iarchive_impl::init, with the version bounded first: the grammar reads it as an unsigned int.
void BoundedXmlIArchive::init() {
  gimpl->init(get_is());
  CheckLibraryVersion(gimpl->rv.version);
  set_library_version(boost::serialization::library_version_type(gimpl->rv.version));
}

void BoundedXmlIArchive::load_override(boost::archive::class_id_type& t) {
  const int id = gimpl->rv.class_id;
  if (id < -1 || id > std::numeric_limits<std::int_least16_t>::max()) {
    throw LoadError("class id " + std::to_string(id) + " out of range");
  }
  t = boost::archive::class_id_type(id);
}

void BoundedXmlIArchive::load(boost::serialization::collection_size_type& count) {
  Base::load(count);
  CheckFitsInRest(count, BytesLeft(*is.rdbuf()), "collection items");
}

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }  // the grammar's S
bool IsAsciiNameHead(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':'; }
bool IsAsciiNameChar(char c) {
  return IsAsciiNameHead(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

// The name of `tag` if it is S? '<' ('/' if end_tag) NAME S? '>' with an ASCII NAME; empty otherwise. Boost's STag
// and ETag rules take such a tag with the same name (xml_grammar.cpp: NameHead is Letter, '_' or ':', NameChar adds
// digits, '.', '-' and '\xB7'; Letter holds A-Z, a-z and letters above 0x7f, which are left to Boost).
std::string_view SimpleTagName(std::string_view tag, bool end_tag) {
  std::size_t i = 0;
  while (i < tag.size() && IsSpace(tag[i])) ++i;
  if (i == tag.size() || tag[i++] != '<') return {};
  if (end_tag && (i == tag.size() || tag[i++] != '/')) return {};
  const std::size_t start = i;
  if (i == tag.size() || !IsAsciiNameHead(tag[i])) return {};
  while (i < tag.size() && IsAsciiNameChar(tag[i])) ++i;
  const std::size_t end = i;
  while (i < tag.size() && IsSpace(tag[i])) ++i;
  if (i + 1 != tag.size() || tag[i] != '>') return {};
  return tag.substr(start, end - start);
}

}  // namespace

bool BoundedXmlIArchive::ReadThrough(char delimiter, std::string_view* read) {
  std::istream& in = get_is();
  if (in.fail()) return false;
  in.unsetf(std::ios::skipws);  // as my_parse leaves the stream
  if (view_ != nullptr) {
    const std::string_view rest = view_->Rest();
    const std::size_t at = rest.find(delimiter);
    if (at != std::string_view::npos) {
      *read = rest.substr(0, at + 1);
      view_->Skip(at + 1);
      return true;
    }
    view_->Skip(rest.size());
  } else {
    std::streambuf& buffer = *in.rdbuf();
    scratch_.clear();
    for (int c = buffer.sbumpc(); c != std::char_traits<char>::eof(); c = buffer.sbumpc()) {
      scratch_.push_back(static_cast<char>(c));
      if (c == static_cast<unsigned char>(delimiter)) {
        *read = scratch_;
        return true;
      }
    }
  }
  in.setstate(std::ios::eofbit | std::ios::failbit);
  boost::serialization::throw_exception(
      boost::archive::archive_exception(boost::archive::archive_exception::input_stream_error));
}

bool BoundedXmlIArchive::ParseTag(bool end_tag) {
  if (!end_tag) gimpl->rv.class_name.clear();  // as parse_start_tag
  std::string_view tag;
  if (!ReadThrough('>', &tag)) return false;
  if (const std::string_view name = SimpleTagName(tag, end_tag); !name.empty()) {
    gimpl->rv.object_name.assign(name);
    return true;
  }
  std::istringstream is{std::string(tag)};
  return end_tag ? gimpl->parse_end_tag(is) : gimpl->parse_start_tag(is);
}

void BoundedXmlIArchive::load(std::string& s) {
  std::string_view text;
  bool ok = ReadThrough('<', &text);
  if (ok) {
    if (text.find('&') == std::string_view::npos) {
      s.assign(text.data(), text.size() - 1);
    } else {
      std::istringstream is{std::string(text)};
      ok = gimpl->parse_string(is, s);
    }
  }
  get_is().putback('<');  // the '<' starts the end tag (parse_string puts it back too)
  if (!ok) {
    boost::serialization::throw_exception(
        boost::archive::xml_archive_exception(boost::archive::xml_archive_exception::xml_archive_parsing_error));
  }
}

void BoundedXmlIArchive::load_start(const char* name) {
  if (name == nullptr) return;  // not a name-value pair: no tag
  if (!ParseTag(false)) {
    boost::serialization::throw_exception(
        boost::archive::archive_exception(boost::archive::archive_exception::input_stream_error));
  }
  ++depth_;
}

void BoundedXmlIArchive::load_end(const char* name) {
  if (name == nullptr) return;
  if (!ParseTag(true)) {
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

// Boost reads the version from one byte and refuses one newer than its own.
void BoundedBinaryIArchive::init(unsigned int flags) {
  Base::init(flags);
  if ((flags & boost::archive::no_header) == 0) CheckLibraryVersion(get_library_version());
}

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

}  // namespace epollcr::archive

namespace boost::archive {

using epollcr::archive::BoundedBinaryIArchive;
using epollcr::archive::BoundedTextIArchive;
using epollcr::archive::BoundedXmlIArchive;

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
