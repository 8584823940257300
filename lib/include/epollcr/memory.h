// Memory epollcr maps itself, outside malloc, for programs that account for their memory.
//
// A load (LoadWorld, an image restore) makes its entries in large buffers and a poll with very many entries keeps its
// map's bucket array in one; those of 2 MiB or more are anonymous mappings with transparent huge pages requested,
// which malloc statistics (mallinfo2) do not see. These report them: the bytes of such buffers in use (a buffer's
// pages that were never touched take no memory, so this is an upper bound).
#pragma once

#include <cstddef>

namespace epollcr {

std::size_t MappedBytesInUse();

// Called with +bytes when epollcr maps a buffer and -bytes when it unmaps one, on the thread that does it; nullptr
// (the default) for none. Set it while no other thread uses epollcr; the hook must not call into epollcr.
using MappedBytesHook = void (*)(std::ptrdiff_t delta);
void SetMappedBytesHook(MappedBytesHook hook);

}  // namespace epollcr
