// Saving and loading a World through a Boost archive (one instantiation per archive type). Internal to lib/.
#pragma once

#include "epollcr/state.h"

namespace epollcr::archive {

// The archive layout version this build writes; it reads every version up to this one. Layout 1 saved a poll's
// entries one field at a time; layout 2 saves them as columns (archive/columns.h); layout 3 also saves the file
// headers, the files' fields (archive/field_columns.h) and the fd table as columns; layout 4 saves a poll's entries as
// the columns their declaration gives (PollEntry::VisitState, through archive/field_columns.h, named "entry.FIELD"), so
// a field declared tomorrow is saved without a codec change. Layouts 1 to 3 are read by code kept for them.
inline constexpr std::uint32_t kLayoutVersion = 4;

// `pause`, if given, receives how long the save held the cut (the archive is written inside it).
template <typename Ar>
Status SaveWorldTo(Ar& ar, const World& world, SavePause* pause = nullptr);
template <typename Ar>
Status LoadWorldFrom(Ar& ar, World* out);

}  // namespace epollcr::archive
