#include "heap_meter.h"

#include <malloc.h>

#include <atomic>
#include <cassert>
#include <cstdlib>
#include <new>

#include "epollcr/memory.h"

namespace epollcr::bench {
namespace {

// The meter's state. Globals because operator new has no other place to find it; written only by HeapMeter and by
// the replacements below while a meter runs.
std::atomic<bool> metering{false};
std::atomic<std::int64_t> net{0};
std::atomic<std::int64_t> peak{0};

void Count(std::int64_t delta) {
  const std::int64_t now = net.fetch_add(delta, std::memory_order_relaxed) + delta;
  if (now > peak.load(std::memory_order_relaxed)) peak.store(now, std::memory_order_relaxed);
}

// What a block occupies in glibc's heap, as mallinfo2 counts it: its usable size plus the chunk's size field (the
// previous-size field of the next chunk is part of the usable size while the block is in use).
std::int64_t Footprint(void* p) { return static_cast<std::int64_t>(::malloc_usable_size(p) + sizeof(std::size_t)); }

void* Allocate(std::size_t size) {
  for (;;) {
    if (void* p = std::malloc(size == 0 ? 1 : size)) {
      if (metering.load(std::memory_order_relaxed)) Count(Footprint(p));
      return p;
    }
    std::new_handler handler = std::get_new_handler();  // operator new's contract: [new.delete.single]
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

void Free(void* p) noexcept {
  if (p == nullptr) return;
  if (metering.load(std::memory_order_relaxed)) Count(-Footprint(p));
  std::free(p);
}

}  // namespace

std::size_t HeapInUse() {
  const struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd + MappedBytesInUse();
}

HeapMeter::HeapMeter() {
  net = 0;
  peak = 0;
  [[maybe_unused]] const bool was = metering.exchange(true);
  assert(!was && "one HeapMeter at a time");
  SetMappedBytesHook([](std::ptrdiff_t delta) { Count(delta); });
}

HeapMeter::~HeapMeter() {
  SetMappedBytesHook(nullptr);
  metering = false;
}

std::int64_t HeapMeter::Net() const { return net.load(std::memory_order_relaxed); }
std::int64_t HeapMeter::Peak() const { return peak.load(std::memory_order_relaxed); }

}  // namespace epollcr::bench

// The replacements. The nothrow and aligned forms keep their library definitions: the nothrow ones call these, the
// aligned ones (unused by epollcr and Boost.Serialization) allocate and free on their own, unmetered.
void* operator new(std::size_t size) { return epollcr::bench::Allocate(size); }
void* operator new[](std::size_t size) { return epollcr::bench::Allocate(size); }
void operator delete(void* p) noexcept { epollcr::bench::Free(p); }
void operator delete[](void* p) noexcept { epollcr::bench::Free(p); }
void operator delete(void* p, std::size_t) noexcept { epollcr::bench::Free(p); }
void operator delete[](void* p, std::size_t) noexcept { epollcr::bench::Free(p); }
