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

// Memory for large arrays: under 2 MiB from operator new, from 2 MiB on a mapping of whole huge pages at a huge-page
// boundary, with transparent huge pages requested (counted above). FreeLarge must get the size AllocateLarge got.
// Throws std::bad_alloc.
void* AllocateLarge(std::size_t bytes);
void FreeLarge(void* p, std::size_t bytes) noexcept;

// A standard allocator over AllocateLarge, for containers that can grow large (an fd table of a million fds).
template <typename T>
struct LargeAllocator {
  using value_type = T;
  LargeAllocator() = default;
  template <typename U>
  LargeAllocator(const LargeAllocator<U>&) noexcept {}  // NOLINT: converting, as allocators are
  T* allocate(std::size_t n) { return static_cast<T*>(AllocateLarge(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { FreeLarge(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const LargeAllocator<U>&) const noexcept { return true; }
};

}  // namespace epollcr
