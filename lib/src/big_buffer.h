// Memory for the large arrays a load fills at once (the entries it makes, a big entries map). Internal.
//
// Touching fresh memory costs a page fault per 4 KiB page, and on a virtual machine a fault is expensive
// (BENCHMARKS.md, "Machine": the BM_PageFault rows, from bench/page_fault_bench.cc), which would make page faults most
// of the cost of restoring a million entries. A BigBuffer of 2 MiB or more comes from AllocateLarge
// (epollcr/memory.h): whole huge pages at a huge-page boundary, with transparent huge pages requested (madvise
// MADV_HUGEPAGE, honoured where /sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise"), so that
// filling it takes one fault per 2 MiB. Smaller buffers come from operator new. Pages that are never touched cost
// nothing, so a buffer may be sized generously.
#pragma once

#include <cassert>
#include <cstddef>
#include <type_traits>

namespace epollcr {

// From now on, blocks below `below` bytes come from the heap (operator new) rather than fresh mappings: for a process
// that faulted its heap in beforehand and has malloc keep large blocks there (a live hand-off's two processes:
// restore/successor.cc, WarmHeap), where a fresh mapping would be faulted in during a pause. Never below 2 MiB.
void PreferHeapForLarge(std::size_t below);

// FreeLarge (epollcr/memory.h) keeps up to 512 MiB of freed mappings for a later AllocateLarge of the same size, so
// that a restore like an earlier one finds its memory faulted in already; their pages are the kernel's to take back
// whenever it needs memory (MADV_FREE), and MappedBytesInUse does not count them. This unmaps them now.
void ReleaseKeptLarge() noexcept;

// Blocks for an arena (protobuf's ArenaOptions::block_alloc and block_dealloc), sized as a BigBuffer's: below 64 KiB
// from operator new, then whole 4 KiB pages of a mapping of their own up to 2 MiB, then AllocateLarge's huge pages;
// mappings freed are kept for the next block of their size. A save or a load of a small world each asked malloc for a
// block above its mmap threshold, which it gave back to the kernel when freed (a mapping, or trimmed off the top of
// the heap) and which the next one faulted in again: 26 faults a save of a 1,000-fd world, a quarter of its time.
// FreeBlock must get the size AllocateBlock got. AllocateBlock throws std::bad_alloc.
void* AllocateBlock(std::size_t bytes);
void FreeBlock(void* p, std::size_t bytes) noexcept;

class BigBuffer {
 public:
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;
  // The first block of memory that will hold about `estimate` bytes: a whole huge page from half of one on (kept
  // between uses, faulted in already), else `estimate` in 4 KiB pages (from 64 KiB on a mapping, also kept between
  // uses; below, from malloc), so that a small world's block is not several times its size.
  static std::size_t FirstBlockFor(std::size_t estimate) {
    return estimate >= kHugePage / 2 ? kHugePage : (estimate + 4095) & ~std::size_t{4095};
  }

  BigBuffer() = default;
  // At least `bytes` bytes, aligned for any type (and to 2 MiB when mapped). Throws std::bad_alloc.
  explicit BigBuffer(std::size_t bytes);
  BigBuffer(BigBuffer&& other) noexcept;
  BigBuffer& operator=(BigBuffer&& other) noexcept;
  BigBuffer(const BigBuffer&) = delete;
  BigBuffer& operator=(const BigBuffer&) = delete;
  ~BigBuffer();

  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void Free() noexcept;

  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// A fixed-capacity array of trivially copyable T in a BigBuffer, for a load's large temporary arrays.
template <typename T>
class BigArray {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  explicit BigArray(std::size_t capacity) : buffer_(capacity * sizeof(T)), capacity_(capacity) {}
  void push_back(const T& value) {
    assert(size_ < capacity_);
    data()[size_++] = value;
  }
  // Sets the size to n (at most the capacity); new elements are uninitialized.
  void resize_uninitialized(std::size_t n) {
    assert(n <= capacity_);
    size_ = n;
  }
  T* data() const { return static_cast<T*>(buffer_.data()); }
  std::size_t size() const { return size_; }
  T& operator[](std::size_t i) const { return data()[i]; }
  T* begin() const { return data(); }
  T* end() const { return data() + size_; }

 private:
  BigBuffer buffer_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
};

}  // namespace epollcr
