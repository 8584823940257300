// What the fuzz entry points share: the record of a target's checks (fuzz_entry_points.cc, fuzz_peer_targets.cc).
#pragma once

#include <string>
#include <string_view>

#include "fuzz_entry_points.h"

namespace epollcr::fuzz {

// Wherever a check fails, the first violation is kept (the later ones usually follow from it).
class Checks {
 public:
  void Expect(bool holds, std::string_view what) {
    if (!holds && violation_.empty()) violation_ = std::string(what);
  }
  bool ok() const { return violation_.empty(); }
  Verdict Done(bool accepted) { return {accepted, std::move(violation_)}; }

 private:
  std::string violation_;
};

}  // namespace epollcr::fuzz
