#include "big_buffer.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <new>
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

constexpr std::size_t kPage = 4096;

std::size_t MappedSize(std::size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

}  // namespace

void* AllocateLarge(std::size_t bytes) {
  if (bytes < BigBuffer::kHugePage) return ::operator new(bytes == 0 ? 1 : bytes);
  if (MappedSize(bytes) < bytes) throw std::bad_alloc();
  void* p = ::mmap(nullptr, MappedSize(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  (void)::madvise(p, MappedSize(bytes), MADV_HUGEPAGE);  // a request: the 2 MiB-aligned parts get huge pages
  CountMapped(static_cast<std::ptrdiff_t>(MappedSize(bytes)));
  return p;
}

void FreeLarge(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < BigBuffer::kHugePage) {
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
  // Whole huge pages, plus one to align the start to a huge-page boundary.
  const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  if (rounded < bytes || rounded + kHugePage < rounded) throw std::bad_alloc();
  const std::size_t mapped = rounded + kHugePage;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto start = (reinterpret_cast<std::uintptr_t>(p) + kHugePage - 1) & ~(std::uintptr_t{kHugePage} - 1);
  // Only a request: without transparent huge pages (or with "never") the buffer works the same with 4 KiB pages.
  (void)::madvise(reinterpret_cast<void*>(start), rounded, MADV_HUGEPAGE);
  mapping_ = p;
  mapped_ = mapped;
  data_ = reinterpret_cast<void*>(start);
  size_ = rounded;
  CountMapped(static_cast<std::ptrdiff_t>(size_));
}

BigBuffer::BigBuffer(BigBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)) {}

BigBuffer& BigBuffer::operator=(BigBuffer&& other) noexcept {
  if (this != &other) {
    Free();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

BigBuffer::~BigBuffer() { Free(); }

void BigBuffer::Free() noexcept {
  if (mapping_ != nullptr) {
    ::munmap(mapping_, mapped_);
    CountMapped(-static_cast<std::ptrdiff_t>(size_));
  } else if (data_ != nullptr) {
    ::operator delete(data_);
  }
  data_ = mapping_ = nullptr;
  size_ = mapped_ = 0;
}

}  // namespace epollcr
