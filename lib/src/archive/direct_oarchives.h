// The Boost output archives SaveWorld writes text and xml through (archive/world_api.cc): Boost's text_oarchive and
// xml_oarchive with some writes replaced, each archive byte for byte the one Boost's writes. Internal to lib/ (the
// embedders' own archives, boost_world.h, stay Boost's).
//
// Boost 1.74 writes through the ostream one call at a time: every number with `os << t` (a sentry and the locale's
// num_put), every character of the markup and the separators with ostream::put (a sentry each), and, in xml, every
// string and element name through an escaping iterator into an ostream_iterator, one put per character
// (xml_oarchive_impl::save of a std::string and of a const char*). Here numbers are written with std::to_chars and characters straight to the stream buffer (DirectWriter), and an
// xml string without a character Boost escapes ('<', '>', '&', '"', '\'': iterators/xml_escape.hpp) in one write;
// anything else goes to Boost's own save. A failed write sets the stream's badbit, as the ostream's writes do.
//
// Dispatch as in archive/bounded_archives.h: a primitive ends in This()->save(x), and the markup in This()->put(c),
// so a member of the most derived class with the same name and parameters replaces Boost's.
#pragma once

#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <string>

#include "archive/decimal_types.h"

namespace epollcr::archive {

// Writes to an archive's stream through its buffer.
class DirectWriter {
 public:
  explicit DirectWriter(std::ostream& os);
  // As Boost's basic_text_oprimitive::put: an output_stream_error if the stream has failed already.
  void Put(char c);
  void Write(const char* s, std::size_t n);
  // `t` in decimal, as `os << t` writes it, when the stream formats it plainly (decimal, no '+', no width, a locale
  // that groups no digits); false, with nothing written, otherwise.
  template <typename T>
  bool Decimal(T t);

 private:
  std::ostream& os_;
  bool ungrouped_;  // the stream's locale (which the archive set, and keeps) groups no digits
};

// The saves of the number types (EPOLLCR_FOR_EACH_DECIMAL_TYPE) in an archive class with a DirectWriter out_: BEFORE
// (the separator a text archive writes first), then DirectWriter::Decimal, else Boost's own. Overloads, not one
// template, as for the loads (archive/bounded_archives.h).
#define EPOLLCR_DIRECT_DECIMAL_SAVE(T, BEFORE)                                          \
  void save(const T& t) {                                                               \
    BEFORE;                                                                             \
    if (!out_.Decimal(t)) boost::archive::basic_text_oprimitive<std::ostream>::save(t); \
  }

class DirectTextOArchive : public boost::archive::text_oarchive_impl<DirectTextOArchive> {
 public:
  explicit DirectTextOArchive(std::ostream& os, unsigned int flags = 0);
  ~DirectTextOArchive() override = default;

  // As Boost's (basic_text_oprimitive::put), through the stream buffer.
  void put(char c) { out_.Put(c); }
  void put(const char* s) { out_.Write(s, std::strlen(s)); }

 private:
  friend class boost::archive::detail::interface_oarchive<DirectTextOArchive>;
  friend class boost::archive::basic_text_oarchive<DirectTextOArchive>;
  friend class boost::archive::save_access;
  using Base = boost::archive::text_oarchive_impl<DirectTextOArchive>;

  using Base::save;
  EPOLLCR_FOR_EACH_DECIMAL_TYPE(EPOLLCR_DIRECT_DECIMAL_SAVE, this->newtoken())

  DirectWriter out_;
};

class DirectXmlOArchive : public boost::archive::xml_oarchive_impl<DirectXmlOArchive> {
 public:
  explicit DirectXmlOArchive(std::ostream& os, unsigned int flags = 0);
  // Writes the trailer itself, while out_ is alive: Boost's base destructor would write it through put() after this
  // object's members are gone (and reach this class from a base destructor: undefined behaviour, which UBSan reports).
  ~DirectXmlOArchive() override;

  // As Boost's (basic_text_oprimitive::put), through the stream buffer.
  void put(char c) { out_.Put(c); }
  void put(const char* s) { out_.Write(s, std::strlen(s)); }
  // `depth` tabs (basic_xml_oarchive::indent), written together.
  void Indent(unsigned depth);

 private:
  friend class boost::archive::detail::interface_oarchive<DirectXmlOArchive>;
  friend class boost::archive::basic_xml_oarchive<DirectXmlOArchive>;
  friend class boost::archive::save_access;
  using Base = boost::archive::xml_oarchive_impl<DirectXmlOArchive>;

  using Base::save;
  void save(const std::string& s);
  void save(const char* s);
  void WriteEscaped(const char* s, std::size_t n);
  EPOLLCR_FOR_EACH_DECIMAL_TYPE(EPOLLCR_DIRECT_DECIMAL_SAVE, (void)0)

  DirectWriter out_;
  bool trailer_;  // the header was written (no no_header flag): the trailer is due at the end
};

}  // namespace epollcr::archive

// Boost's basic_xml_oarchive writes an element's start and end tags in save_start and save_end, after checking each
// character of the name against a table that it builds anew on the stack for every character
// (detail::XML_name, impl/basic_xml_oarchive.ipp), and indents with one put per tab. For this archive both members are
// epollcr's own (direct_oarchives.cc): the same checks (a name character below 128 must be a letter, a digit, '-',
// '.' or '_', else xml_archive_tag_name_error) and the same characters, with the table built once and the tabs written
// together. Declared here, before any use, as an explicit specialization must be.
namespace boost::archive {
template <>
void basic_xml_oarchive<epollcr::archive::DirectXmlOArchive>::save_start(const char* name);
template <>
void basic_xml_oarchive<epollcr::archive::DirectXmlOArchive>::save_end(const char* name);
}  // namespace boost::archive
