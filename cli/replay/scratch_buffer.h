// ScratchBuffer: the bytes a replay passes to read and write. Move-only; owns one anonymous private mapping.
//
// A mapping, not the heap: its pages cost nothing until an operation touches them. A read with the default size
// (1 MiB) touches only the bytes it gets. A heap buffer of that size is filled on every allocation when
// MALLOC_PERTURB_ is set, as `meson test` does, and that fill was most of the time of the random tests. The content
// is unspecified (docs/trace-format.md): zero where nothing was written yet.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <span>
#include <utility>

namespace epollcr::replay {

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(ScratchBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  ScratchBuffer& operator=(ScratchBuffer&& other) noexcept {
    if (this != &other) {
      Unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { Unmap(); }

  // `size` bytes, valid until the next call; earlier contents are not kept when it grows. Throws std::bad_alloc if
  // the mapping fails, as a heap buffer would.
  std::span<std::byte> Get(std::size_t size) {
    if (size > size_) {
      void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mapped == MAP_FAILED) throw std::bad_alloc();
      Unmap();
      data_ = mapped;
      size_ = size;
    }
    return std::span<std::byte>(static_cast<std::byte*>(data_), size);
  }

 private:
  void Unmap() {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }

  void* data_ = nullptr;  // null while size_ is 0
  std::size_t size_ = 0;
};

}  // namespace epollcr::replay
