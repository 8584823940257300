// Heap accounting for the memory benchmarks.
//
// HeapInUse() is glibc's view of the whole heap (mallinfo2), sampled before and after. HeapMeter sees the highest point
// in between: this binary replaces the global operator new and delete (heap_meter.cc; a program may,
// [replacement.functions]), and while a meter runs each block's footprint (malloc_usable_size plus glibc's 8-byte chunk
// header, as mallinfo2 counts it) is added when the block is allocated and subtracted when it is freed. Outside a meter
// the replacements only forward to malloc and free. Blocks obtained with malloc() directly bypass the meter; comparing
// its net change with HeapInUse()'s over the same call shows how much that leaves out.
#pragma once

#include <cstddef>
#include <cstdint>

namespace epollcr::bench {

// Heap bytes in use: blocks from the arenas (uordblks) plus blocks malloc served with mmap (hblkhd) - big arrays
// pass the mmap threshold, and leaving them out would under-count - plus the buffers epollcr maps itself
// (epollcr/memory.h). A HeapMeter counts those too, through epollcr's mapping hook.
std::size_t HeapInUse();

// Counts operator new/delete from construction to destruction. One at a time, on one thread: the metered calls run on
// the benchmark thread and the library starts no threads of its own.
class HeapMeter {
 public:
  HeapMeter();
  ~HeapMeter();
  HeapMeter(const HeapMeter&) = delete;
  HeapMeter& operator=(const HeapMeter&) = delete;

  // Bytes in use now, and at the highest point so far, above the level at construction.
  std::int64_t Net() const;
  std::int64_t Peak() const;
};

}  // namespace epollcr::bench
