// The Boost xml output archive SaveWorld writes through (archive/world_api.cc): Boost's xml_oarchive with one save
// replaced. Internal to lib/ (the embedders' own archives, boost_world.h, stay Boost's).
//
// Boost 1.74 writes every string of an xml archive, and every element's name, through an escaping iterator into an
// ostream_iterator, one ostream::put() per character (xml_oarchive_impl::save of a std::string and of a const char*):
// about 8 ns per character on the development VM, so most of a text-heavy save (the bytes buffered in pipes and
// sockets as base64, the columns). A string without a character Boost escapes ('<', '>', '&', '"', '\'':
// iterators/xml_escape.hpp) is written here in one write to the stream buffer; any other goes to Boost's save. The
// characters of the markup around them (put: '<', '>', "</", tabs, newlines), which Boost also writes one
// ostream::put() each, go to the stream buffer directly, without a sentry each. The archive is byte for byte the one
// xml_oarchive writes; a failed write sets the stream's badbit, as ostream::put and write do.
//
// Dispatch as in archive/bounded_archives.h: a primitive ends in This()->save(x), so a member of the most derived
// class with the same name and parameters replaces Boost's.
#pragma once

#include <boost/archive/xml_oarchive.hpp>
#include <cstddef>
#include <ostream>
#include <string>

namespace epollcr::archive {

class DirectXmlOArchive : public boost::archive::xml_oarchive_impl<DirectXmlOArchive> {
 public:
  explicit DirectXmlOArchive(std::ostream& os, unsigned int flags = 0);
  ~DirectXmlOArchive() override = default;

 private:
  friend class boost::archive::detail::interface_oarchive<DirectXmlOArchive>;
  friend class boost::archive::basic_xml_oarchive<DirectXmlOArchive>;
  friend class boost::archive::save_access;
  using Base = boost::archive::xml_oarchive_impl<DirectXmlOArchive>;

  using Base::save;
  void save(const std::string& s);
  void save(const char* s);

 public:
  // As Boost's (basic_text_oprimitive::put), through the stream buffer.
  void put(char c);
  void put(const char* s);

 private:
  // The n characters at s, to the stream buffer.
  void Write(const char* s, std::size_t n);

 public:
  // `depth` tabs (basic_xml_oarchive::indent), written together.
  void Indent(unsigned depth);
};

}  // namespace epollcr::archive

// Boost's basic_xml_oarchive writes an element's start and end tags in save_start and save_end, after checking each
// character of the name against a table that it builds anew on the stack for every character
// (detail::XML_name, impl/basic_xml_oarchive.ipp), and indents with one put per tab. For this archive both members are
// epollcr's own (direct_xml_oarchive.cc): the same checks (a name character below 128 must be a letter, a digit, '-',
// '.' or '_', else xml_archive_tag_name_error) and the same characters, with the table built once and the tabs written
// together. Declared here, before any use, as an explicit specialization must be.
namespace boost::archive {
template <>
void basic_xml_oarchive<epollcr::archive::DirectXmlOArchive>::save_start(const char* name);
template <>
void basic_xml_oarchive<epollcr::archive::DirectXmlOArchive>::save_end(const char* name);
}  // namespace boost::archive
