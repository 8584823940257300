#include "big_buffer.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <array>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#include "epollcr/memory.h"

namespace epollcr {

namespace {

std::atomic<std::size_t> mapped_in_use{0};
std::atomic<MappedBytesHook> mapped_hook{nullptr};

void CountMapped(std::ptrdiff_t delta) {
  mapped_in_use.fetch_add(static_cast<std::size_t>(delta), std::memory_order_relaxed);
  if (MappedBytesHook hook = mapped_hook.load(std::memory_order_relaxed)) hook(delta);
}

}  // namespace

std::size_t MappedBytesInUse() { return mapped_in_use.load(std::memory_order_relaxed); }

void SetMappedBytesHook(MappedBytesHook hook) { mapped_hook.store(hook); }

namespace {

constexpr std::size_t kHugePage = BigBuffer::kHugePage;

// Whole huge pages: a huge page that the mapping covers only in part would be faulted in 4 KiB at a time.
std::size_t MappedSize(std::size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

std::atomic<std::size_t> heap_below{kHugePage};  // PreferHeapForLarge

// The blocks AllocateLarge mapped (few: each is 2 MiB or more), by address, with the size of their mapping, so that
// FreeLarge knows them from heap blocks whatever PreferHeapForLarge said since; and the mappings freed and kept for
// the next AllocateLarge. A process that restores again (a replay that checkpoints, a second hand-off, a restore
// after a restore that failed) then finds its memory faulted in already, instead of paying a fault per 2 MiB (per
// 4 KiB without transparent huge pages) again: BENCHMARKS.md, "Machine", the BM_PageFault rows. A kept mapping's
// pages are the kernel's to take back whenever it needs memory (MADV_FREE: a page it took reads as zeros, and is
// faulted in afresh when written), and at most kKeptBytes are kept; the rest are unmapped. Blocks below a huge page
// (BigBuffer's, AllocateBlock's) are kept as they are, up to kKeptSmallBytes: telling the kernel it may take their
// pages back (a system call and a flush of the TLB per block) was a twentieth of a 1,000-fd world's image save, which
// frees two of them. When a freed mapping does not fit beside those kept, the ones kept longest go to make room: the
// sizes a program uses now are the ones it will ask for again (a save repeated every so often), and keeping the first
// sizes ever freed instead left a process that had once restored a large world faulting in a small save's blocks at
// every save.
class MappedBlocks {
 public:
  static constexpr std::size_t kKeptBytes = std::size_t{512} << 20;
  static constexpr std::size_t kKeptSmallBytes = std::size_t{16} << 20;

  void Add(void* p, std::size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_.emplace(p, size);
  }
  // The mapping's size if `p` is a mapped block (it is no longer one), else 0.
  std::size_t Take(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(p);
    if (it == blocks_.end()) return 0;
    const std::size_t size = it->second;
    blocks_.erase(it);
    return size;
  }
  struct Kept {
    std::size_t size;
    void* p;
  };
  // Keeps a freed mapping, giving back (in `unmap`, for the caller to unmap) the mappings of its class kept longest
  // if it does not fit beside them; false if it is larger than the class's room (the caller unmaps it).
  bool Keep(void* p, std::size_t size, std::vector<Kept>& unmap) {
    std::lock_guard<std::mutex> lock(mu_);
    const bool small = size < kHugePage;
    const std::size_t room = small ? kKeptSmallBytes : kKeptBytes;
    if (size > room) return false;
    std::list<Kept>& kept = kept_[small];
    std::size_t& bytes = kept_bytes_[small];
    while (bytes + size > room) {  // the class holds more than `size` bytes: never empty here
      unmap.push_back(kept.front());  // first, so that a failure to note it leaves it kept
      auto [first, last] = by_size_.equal_range(kept.front().size);
      for (auto it = first; it != last; ++it) {
        if (it->second == kept.begin()) {
          by_size_.erase(it);
          break;
        }
      }
      bytes -= kept.front().size;
      kept.pop_front();
    }
    const auto at = kept.insert(kept.end(), Kept{size, p});
    try {
      by_size_.emplace(size, at);
    } catch (...) {
      kept.erase(at);
      throw;
    }
    bytes += size;
    return true;
  }
  // A kept mapping of exactly `size` bytes (a restore like an earlier one asks for the same sizes), or null: the one
  // kept last, whose pages were touched last.
  void* Reuse(std::size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [first, last] = by_size_.equal_range(size);
    if (first == last) return nullptr;
    const auto it = std::prev(last);
    void* p = it->second->p;
    const bool small = size < kHugePage;
    kept_[small].erase(it->second);
    kept_bytes_[small] -= size;
    by_size_.erase(it);
    return p;
  }
  // Takes every kept mapping out, for the caller to unmap.
  std::array<std::list<Kept>, 2> TakeKept() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    by_size_.clear();
    kept_bytes_[0] = kept_bytes_[1] = 0;
    return {std::exchange(kept_[0], {}), std::exchange(kept_[1], {})};
  }

 private:
  std::mutex mu_;
  std::unordered_map<void*, std::size_t> blocks_;
  // Kept mappings in the order they were kept, oldest first: [0] huge-page ones (MADV_FREE), [1] smaller ones, as
  // they were; and each by its size.
  std::list<Kept> kept_[2];
  std::multimap<std::size_t, std::list<Kept>::iterator> by_size_;
  std::size_t kept_bytes_[2] = {0, 0};
};

MappedBlocks& Mapped() {
  static MappedBlocks* blocks = new MappedBlocks;  // never destroyed: frees may come from static destructors
  return *blocks;
}

// A mapping of `size` bytes handed out: counted in use and known to FreeLarge and FreeBlock.
void* InUse(void* p, std::size_t size) {
  CountMapped(static_cast<std::ptrdiff_t>(size));
  Mapped().Add(p, size);
  return p;
}

// A mapping of `size` bytes given back (no longer known as in use): kept for a later block of its size (from a huge
// page on, its pages the kernel's to take back: MADV_FREE), or unmapped if there is no room.
void KeepOrUnmap(void* p, std::size_t size) noexcept {
  CountMapped(-static_cast<std::ptrdiff_t>(size));
  std::vector<MappedBlocks::Kept> unmap;
  bool kept = false;
  try {
    kept = !(size >= kHugePage && ::madvise(p, size, MADV_FREE) != 0) && Mapped().Keep(p, size, unmap);
  } catch (const std::bad_alloc&) {  // no room to note it: it goes
  }
  if (!kept) ::munmap(p, size);
  for (const MappedBlocks::Kept& old : unmap) ::munmap(old.p, old.size);
}

}  // namespace

void PreferHeapForLarge(std::size_t below) {
  heap_below.store(below < kHugePage ? kHugePage : below, std::memory_order_relaxed);
}

// The mapping starts at a huge-page boundary and covers whole huge pages. Where a mapping starts or ends inside a huge
// page, the kernel maps that part in 4 KiB pages, each a fault of its own and each far dearer than its share of a
// huge page (BENCHMARKS.md, "Machine": the BM_PageFault rows). An unaligned mapping would take such faults at both
// ends of every block.
void* AllocateLarge(std::size_t bytes) {
  if (bytes < heap_below.load(std::memory_order_relaxed)) return ::operator new(bytes == 0 ? 1 : bytes);
  const std::size_t size = MappedSize(bytes);
  if (size < bytes || size + kHugePage < size) throw std::bad_alloc();
  if (void* kept = Mapped().Reuse(size)) return InUse(kept, size);
  void* p = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // One huge page more than needed, then the unaligned head and the rest of the extra page back: what stays is
  // exactly [start, start + size), which FreeLarge unmaps.
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t start = (at + kHugePage - 1) & ~(std::uintptr_t{kHugePage} - 1);
  const std::size_t head = start - at;
  if (head != 0) (void)::munmap(p, head);
  (void)::munmap(reinterpret_cast<void*>(start + size), kHugePage - head);
  // Only a request: without transparent huge pages (or with "never") the memory works the same in 4 KiB pages.
  (void)::madvise(reinterpret_cast<void*>(start), size, MADV_HUGEPAGE);
  return InUse(reinterpret_cast<void*>(start), size);
}

void FreeLarge(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  const std::size_t size = bytes < kHugePage ? 0 : Mapped().Take(p);
  if (size == 0) {
    ::operator delete(p);
    return;
  }
  KeepOrUnmap(p, size);
}

void ReleaseKeptLarge() noexcept {
  for (const auto& kept : Mapped().TakeKept()) {
    for (const MappedBlocks::Kept& k : kept) ::munmap(k.p, k.size);
  }
}

namespace {

// A block below a huge page from kMappedFrom on: whole 4 KiB pages of a mapping of its own, which FreeBlock keeps (as
// FreeLarge keeps huge pages) for the next block of the same size. From malloc, such a block was given back to the
// kernel when freed (above glibc's mmap threshold, or trimmed off the top of the heap) and faulted in again by the
// next save of a small world: about 60 faults a save of 1,000 entries in a Boost archive, as long as the rest of it.
constexpr std::size_t kMappedFrom = std::size_t{64} << 10;

std::size_t PageRounded(std::size_t bytes) { return (bytes + 4095) & ~std::size_t{4095}; }

void* AllocateSmall(std::size_t size) {
  void* p = Mapped().Reuse(size);
  if (p == nullptr) {
    p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
  }
  return InUse(p, size);
}

// A block of at least `bytes` (AllocateBlock), and in `*usable` all it holds.
void* AllocateBlockOf(std::size_t bytes, std::size_t* usable) {
  // A process that warmed its heap for large blocks (PreferHeapForLarge) gets small ones from it too.
  if (bytes < kMappedFrom || heap_below.load(std::memory_order_relaxed) > kHugePage) {
    *usable = bytes;
    return ::operator new(bytes == 0 ? 1 : bytes);
  }
  if (bytes < kHugePage) {
    *usable = PageRounded(bytes);
    return AllocateSmall(*usable);
  }
  *usable = MappedSize(bytes);
  return AllocateLarge(bytes);
}

}  // namespace

void* AllocateBlock(std::size_t bytes) {
  std::size_t usable = 0;
  return AllocateBlockOf(bytes, &usable);
}

void FreeBlock(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes >= kHugePage) return FreeLarge(p, bytes);
  // Whether it is a mapping is asked of the blocks handed out: PreferHeapForLarge may have been called since.
  if (bytes >= kMappedFrom) {
    if (const std::size_t size = Mapped().Take(p); size != 0) return KeepOrUnmap(p, size);
  }
  ::operator delete(p);
}

BigBuffer::BigBuffer(std::size_t bytes) { data_ = AllocateBlockOf(bytes, &size_); }

BigBuffer::BigBuffer(BigBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

BigBuffer& BigBuffer::operator=(BigBuffer&& other) noexcept {
  if (this != &other) {
    Free();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

BigBuffer::~BigBuffer() { Free(); }

void BigBuffer::Free() noexcept {
  FreeBlock(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace epollcr
