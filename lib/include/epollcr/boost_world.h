// Putting a World into an embedder's own Boost archive, beside the program's other objects:
//
//   struct App {
//     epollcr::World world;  // or build one from the program's files: world.roots["poll"] = poll;
//     int requests = 0;
//     template <class Ar> void serialize(Ar& ar, unsigned) { ar & BOOST_SERIALIZATION_NVP(requests) & BOOST_SERIALIZATION_NVP(world); }
//   };
//
// Works with Boost's text, xml and binary archives. Inside `ar & world` a failure is reported the way Boost
// archives report theirs, by throwing (epollcr::CheckpointError, with the Status); epollcr's own API never throws.
// Boost archives are for trusted input (see state.h); epollcr::SaveWorld/LoadWorld add an integrity envelope.
#pragma once

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>
#include <boost/serialization/split_free.hpp>
#include <boost/serialization/tracking.hpp>
#include <boost/serialization/version.hpp>
#include <stdexcept>

#include "epollcr/state.h"

namespace epollcr {

class CheckpointError : public std::runtime_error {
 public:
  explicit CheckpointError(Status status) : std::runtime_error(status.message), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

void SaveWorldToArchive(boost::archive::text_oarchive& ar, const World& world);
void SaveWorldToArchive(boost::archive::xml_oarchive& ar, const World& world);
void SaveWorldToArchive(boost::archive::binary_oarchive& ar, const World& world);
// `world` must be empty.
void LoadWorldFromArchive(boost::archive::text_iarchive& ar, World& world);
void LoadWorldFromArchive(boost::archive::xml_iarchive& ar, World& world);
void LoadWorldFromArchive(boost::archive::binary_iarchive& ar, World& world);

}  // namespace epollcr

namespace boost::serialization {
template <typename Ar>
void save(Ar& ar, const epollcr::World& world, unsigned) {
  epollcr::SaveWorldToArchive(ar, world);
}
template <typename Ar>
void load(Ar& ar, epollcr::World& world, unsigned) {
  epollcr::LoadWorldFromArchive(ar, world);
}
}  // namespace boost::serialization

BOOST_SERIALIZATION_SPLIT_FREE(epollcr::World)
BOOST_CLASS_VERSION(epollcr::World, 1)
BOOST_CLASS_TRACKING(epollcr::World, boost::serialization::track_never)
