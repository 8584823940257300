#include "big_buffer.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <unordered_set>
#include <utility>

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

// The blocks AllocateLarge mapped (few: each is 2 MiB or more), so that FreeLarge knows them from heap blocks whatever
// PreferHeapForLarge said since.
class MappedBlocks {
 public:
  void Add(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_.insert(p);
  }
  bool Take(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    return blocks_.erase(p) != 0;
  }

 private:
  std::mutex mu_;
  std::unordered_set<void*> blocks_;
};

MappedBlocks& Mapped() {
  static MappedBlocks* blocks = new MappedBlocks;  // never destroyed: frees may come from static destructors
  return *blocks;
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
  CountMapped(static_cast<std::ptrdiff_t>(size));
  Mapped().Add(reinterpret_cast<void*>(start));
  return reinterpret_cast<void*>(start);
}

void FreeLarge(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < kHugePage || !Mapped().Take(p)) {
    ::operator delete(p);
    return;
  }
  ::munmap(p, MappedSize(bytes));
  CountMapped(-static_cast<std::ptrdiff_t>(MappedSize(bytes)));
}

BigBuffer::BigBuffer(std::size_t bytes) {
  if (bytes < kHugePage) {
    data_ = ::operator new(bytes == 0 ? 1 : bytes);
    size_ = bytes;
    return;
  }
  data_ = AllocateLarge(bytes);
  size_ = MappedSize(bytes);
  mapped_ = true;
}

BigBuffer::BigBuffer(BigBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, false)) {}

BigBuffer& BigBuffer::operator=(BigBuffer&& other) noexcept {
  if (this != &other) {
    Free();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, false);
  }
  return *this;
}

BigBuffer::~BigBuffer() { Free(); }

void BigBuffer::Free() noexcept {
  if (mapped_) {
    FreeLarge(data_, size_);
  } else if (data_ != nullptr) {
    ::operator delete(data_);
  }
  data_ = nullptr;
  size_ = 0;
  mapped_ = false;
}

}  // namespace epollcr
