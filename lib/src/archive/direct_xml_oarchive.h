// The Boost xml output archive SaveWorld writes through (archive/world_api.cc): Boost's xml_oarchive with one save
// replaced. Internal to lib/ (the embedders' own archives, boost_world.h, stay Boost's).
//
// Boost 1.74 writes every string of an xml archive through an escaping iterator into an ostream_iterator, one
// istream::put() per character (xml_oarchive_impl::save(const std::string&)): about 8 ns per character on the
// development VM, so most of a text-heavy save (the bytes buffered in pipes and sockets as base64, the columns). A
// string without a character Boost escapes ('<', '>', '&', '"', '\'': iterators/xml_escape.hpp) is written here in one
// ostream::write(); any other goes to Boost's save. The archive is byte for byte the one xml_oarchive writes.
//
// Dispatch as in archive/bounded_archives.h: a primitive ends in This()->save(x), so a member of the most derived
// class with the same name and parameters replaces Boost's.
#pragma once

#include <boost/archive/xml_oarchive.hpp>
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
};

}  // namespace epollcr::archive
