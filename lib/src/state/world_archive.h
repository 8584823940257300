// Saving and loading a World through a Boost archive (one instantiation per archive type). Internal to lib/.
#pragma once

#include "epollcr/state.h"

namespace epollcr::state {

// The archive layout version this build writes; it reads every version up to this one. Layout 1 saved a poll's
// entries one field at a time; layout 2 saves them as columns (state/columns.h); layout 3 also saves the file
// headers, the files' fields (state/field_columns.h) and the fd table as columns.
inline constexpr std::uint32_t kLayoutVersion = 3;

template <typename Ar>
Status SaveWorldTo(Ar& ar, const World& world);
template <typename Ar>
Status LoadWorldFrom(Ar& ar, World* out);

// Registered embedder file types (state.h RegisterFileType).
FileFactory FindFileType(const std::string& kind);

}  // namespace epollcr::state
