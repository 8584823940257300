// Saving and loading a World through a Boost archive (one instantiation per archive type). Internal to lib/.
#pragma once

#include "epollcr/state.h"

namespace epollcr::archive {

// The archive layout version this build writes; it reads every version up to this one. Layout 1 saved a poll's
// entries one field at a time; layout 2 saves them as columns (archive/columns.h); layout 3 also saves the file
// headers, the files' fields (archive/field_columns.h) and the fd table as columns; layout 4 saves a poll's entries as
// the columns their declaration gives (PollEntry::VisitState, through archive/field_columns.h, named "entry.FIELD"), so
// a field declared tomorrow is saved without a codec change; layout 5 is layout 4 with the bytes buffered in pipes and
// socket pairs as base64 strings in text and xml archives (class version 2 of PipeBuffer::Slot and
// SocketPairState::Segment, archive/fields.h). Layouts 1 to 3 are read by code kept for them. Layout 5 exists so that
// a build that reads only up to 4 refuses the archive: Boost itself does not refuse a class version newer than the
// build's (its check is compiled out in 1.74, detail/iserializer.hpp), and would read the base64 strings as
// binary_objects, into the wrong bytes. Layout 6 is layout 5 with every poll's section (entry columns, queue ranks,
// ready order) as columns over all the world's polls, after the files' columns, instead of a section per poll
// (archive/world_save.cc WritePolls), and, in a binary archive, every column (the files' ids and kinds, each built-in
// kind's field columns, the entries' field columns, the polls' counts, queue ranks and ready order) held as an array
// of numbers (Boost's array optimization, one copy) instead of text, which a save spent a sixth of its time writing
// and a load more parsing; text and xml archives hold them as text.
inline constexpr std::uint32_t kLayoutVersion = 6;

// `pause`, if given, receives how long the save held the cut (the archive is written inside it).
template <typename Ar>
Status SaveWorldTo(Ar& ar, const World& world, SavePause* pause = nullptr);
template <typename Ar>
Status LoadWorldFrom(Ar& ar, World* out);

}  // namespace epollcr::archive
