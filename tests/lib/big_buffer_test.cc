// Memory for large arrays (epollcr/memory.h, lib/src/big_buffer.h): from 2 MiB on, a mapping of whole huge pages at
// a huge-page boundary, counted in MappedBytesInUse, nothing else left mapped, freed mappings kept for reuse up to a
// bound; and, where the kernel grants transparent huge pages, filling it is done in huge pages only (a mapping that
// starts or ends inside a huge page is faulted in 4 KiB at a time there, each fault costing about 40 times a huge
// page's share on the development VM).
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "big_buffer.h"
#include "epollcr/memory.h"

namespace epollcr {
namespace {

constexpr std::size_t kHuge = BigBuffer::kHugePage;

// The mapping of /proc/self/smaps that contains `p`: its bounds, its AnonHugePages and its LazyFree (pages the kernel
// may take back: MADV_FREE) in bytes.
struct Mapping {
  std::uintptr_t start = 0, end = 0;
  std::size_t anon_huge = 0;
  std::size_t lazy_free = 0;
  bool found = false;
};

Mapping MappingOf(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  Mapping m;
  bool in = false;
  while (std::getline(smaps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      if (in) break;
      in = lo <= at && at < hi;
      if (in) m = {lo, hi, 0, 0, true};
    } else if (in && line.rfind("AnonHugePages:", 0) == 0) {
      m.anon_huge = std::stoull(line.substr(14)) * 1024;
    } else if (in && line.rfind("LazyFree:", 0) == 0) {
      m.lazy_free = std::stoull(line.substr(9)) * 1024;
    }
  }
  return m;
}

// The process's mapped address space (VmSize), in bytes; read without allocating, so that malloc cannot move it.
std::size_t MappedAddressSpace() {
  char text[8192];
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  const ssize_t n = fd < 0 ? -1 : ::read(fd, text, sizeof text - 1);
  if (fd >= 0) ::close(fd);
  if (n <= 0) return 0;
  text[n] = '\0';
  const char* line = std::strstr(text, "VmSize:");
  return line == nullptr ? 0 : std::strtoull(line + 7, nullptr, 10) * 1024;
}

bool HugePagesOffered() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return text.find("[always]") != std::string::npos || text.find("[madvise]") != std::string::npos;
}

// The kernel's count of huge-page faults that fell back to 4 KiB pages (no huge page free): out of the test's hands.
std::uint64_t HugeFallbacks() {
  std::ifstream f("/proc/vmstat");
  std::string key;
  std::uint64_t value = 0;
  while (f >> key >> value) {
    if (key == "thp_fault_fallback") return value;
  }
  return 0;
}

TEST(AllocateLargeTest, WholeAlignedHugePagesAndNothingElse) {
  ReleaseKeptLarge();  // what other tests left kept: each size below is then mapped afresh
  for (std::size_t bytes : {kHuge, kHuge + 1, 3 * kHuge - 4096, 4 * kHuge, 4 * kHuge + 12345}) {
    SCOPED_TRACE("bytes " + std::to_string(bytes));
    const std::size_t whole = (bytes + kHuge - 1) / kHuge * kHuge;
    const std::size_t before = MappedBytesInUse();
    const std::uint64_t fallbacks = HugeFallbacks();
    const std::size_t space = MappedAddressSpace();
    void* p = AllocateLarge(bytes);
    EXPECT_EQ(MappedAddressSpace() - space, whole) << "more or less than the buffer's huge pages stayed mapped";
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % kHuge, 0u);
    EXPECT_EQ(MappedBytesInUse() - before, whole);
    std::memset(p, 0x5a, bytes);  // all of it is ours
    const Mapping m = MappingOf(p);
    ASSERT_TRUE(m.found);
    // (The kernel may merge the mapping with a neighbour of the same kind: it covers the buffer, at least.)
    EXPECT_LE(m.start, reinterpret_cast<std::uintptr_t>(p));
    EXPECT_GE(m.end, reinterpret_cast<std::uintptr_t>(p) + whole);
    if (HugePagesOffered() && HugeFallbacks() == fallbacks) {
      EXPECT_GE(m.anon_huge, whole) << "part of the buffer was faulted in 4 KiB pages";
    }
    // Freed, the mapping is kept for the next buffer of its size: no longer in use, its pages the kernel's to take.
    const std::size_t full = MappedAddressSpace();
    FreeLarge(p, bytes);
    EXPECT_EQ(MappedBytesInUse(), before);
    EXPECT_EQ(MappedAddressSpace(), full);
    void* again = AllocateLarge(bytes);
    EXPECT_EQ(again, p) << "a kept mapping of the size asked for is given again";
    EXPECT_EQ(MappedBytesInUse() - before, whole);
    EXPECT_EQ(MappedAddressSpace(), full);
    std::memset(again, 0x33, bytes);
    FreeLarge(again, bytes);
    ReleaseKeptLarge();
    EXPECT_EQ(full - MappedAddressSpace(), whole);
    EXPECT_EQ(MappedBytesInUse(), before);
    EXPECT_FALSE(MappingOf(p).found) << "the buffer is still mapped after ReleaseKeptLarge";
  }
}

// What FreeLarge keeps is bounded (512 MiB), whatever is freed: the rest is unmapped at once, the mappings kept
// longest first. Untouched pages of a mapping cost no memory, so the test's gigabyte of buffers costs address space
// only.
TEST(AllocateLargeTest, FreedMappingsAreKeptUpToABound) {
  ReleaseKeptLarge();
  constexpr std::size_t kBlock = std::size_t{128} << 20;
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(AllocateLarge(kBlock));
  const std::size_t all = MappedAddressSpace();
  for (void* p : blocks) FreeLarge(p, kBlock);
  EXPECT_EQ(all - MappedAddressSpace(), 4 * kBlock) << "four blocks (512 MiB) kept, four unmapped";
  for (int i = 0; i < 8; ++i) EXPECT_EQ(MappingOf(blocks[i]).found, i >= 4) << "the last four freed are kept: " << i;
  // A size no kept mapping has is mapped afresh; freed, it is kept, and the two blocks kept longest are unmapped to
  // make room for it.
  void* other = AllocateLarge(kBlock + kHuge);
  EXPECT_EQ(MappedAddressSpace() - (all - 4 * kBlock), kBlock + kHuge);
  FreeLarge(other, kBlock + kHuge);
  EXPECT_EQ(all - MappedAddressSpace(), 5 * kBlock - kHuge);
  EXPECT_FALSE(MappingOf(blocks[4]).found);
  EXPECT_FALSE(MappingOf(blocks[5]).found);
  // The kept ones are reused before anything new is mapped.
  EXPECT_EQ(AllocateLarge(kBlock + kHuge), other);
  FreeLarge(other, kBlock + kHuge);
  for (int i = 0; i < 2; ++i) {
    void* p = AllocateLarge(kBlock);
    EXPECT_NE(std::find(blocks.begin() + 6, blocks.end(), p), blocks.end());
    FreeLarge(p, kBlock);
  }
  EXPECT_EQ(all - MappedAddressSpace(), 5 * kBlock - kHuge);
  ReleaseKeptLarge();
  EXPECT_EQ(all - MappedAddressSpace(), 8 * kBlock);
}

TEST(AllocateLargeTest, SmallSizesComeFromTheHeap) {
  const std::size_t before = MappedBytesInUse();
  void* p = AllocateLarge(kHuge - 1);
  EXPECT_EQ(MappedBytesInUse(), before);
  std::memset(p, 1, kHuge - 1);
  FreeLarge(p, kHuge - 1);
}

TEST(BigBufferTest, MappedBuffersAreWholeAlignedHugePages) {
  const std::size_t before = MappedBytesInUse();
  {
    BigBuffer buffer(5 * kHuge + 7);
    EXPECT_EQ(buffer.size(), 6 * kHuge);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % kHuge, 0u);
    EXPECT_EQ(MappedBytesInUse() - before, 6 * kHuge);
    BigBuffer moved = std::move(buffer);
    EXPECT_EQ(buffer.data(), nullptr);
    EXPECT_EQ(moved.size(), 6 * kHuge);
    EXPECT_EQ(MappedBytesInUse() - before, 6 * kHuge);
  }
  EXPECT_EQ(MappedBytesInUse(), before);
  BigBuffer small(100);
  EXPECT_EQ(small.size(), 100u);
  EXPECT_EQ(MappedBytesInUse(), before);
}

// A buffer from 64 KiB to below a huge page is a mapping of its own in 4 KiB pages, counted in MappedBytesInUse while
// it is in use; freed, it is kept (not unmapped, not given to malloc) and the next buffer of its size gets it, pages
// already faulted in: a small world's save or restore, run again and again, no longer faults its blocks in each time.
TEST(BigBufferTest, MidSizedBuffersAreMappingsKeptForTheNextOfTheirSize) {
  ReleaseKeptLarge();
  const std::size_t before = MappedBytesInUse();
  constexpr std::size_t kMid = (std::size_t{128} << 10) + 100;  // rounds up to 33 pages
  void* first = nullptr;
  {
    BigBuffer buffer(kMid);
    EXPECT_EQ(buffer.size(), std::size_t{33} * 4096);
    EXPECT_EQ(MappedBytesInUse() - before, buffer.size());
    const Mapping m = MappingOf(buffer.data());
    ASSERT_TRUE(m.found);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % 4096, 0u);
    std::memset(buffer.data(), 1, buffer.size());
    first = buffer.data();
  }
  EXPECT_EQ(MappedBytesInUse(), before);
  EXPECT_TRUE(MappingOf(first).found) << "a freed mid-sized buffer is kept mapped";
  {
    BigBuffer again(kMid);
    EXPECT_EQ(again.data(), first) << "the next buffer of the size reuses the kept one";
  }
  ReleaseKeptLarge();
  EXPECT_FALSE(MappingOf(first).found) << "ReleaseKeptLarge unmaps it";
  BigBuffer below((std::size_t{64} << 10) - 1);  // from the heap
  EXPECT_EQ(MappedBytesInUse(), before);
}

// An arena's blocks (AllocateBlock, FreeBlock: the image's save and decode): below 64 KiB from the heap; from 64 KiB to
// below a huge page a mapping kept as it is when freed, its pages still faulted in and not offered back to the kernel
// (a save of a small world frees two such blocks, and MADV_FREE on each, with its flush of the TLB, was a twentieth of
// the save), up to 16 MiB of them; from a huge page on, as AllocateLarge's.
TEST(AllocateBlockTest, MidSizedBlocksAreKeptAsTheyAreUpToABound) {
  ReleaseKeptLarge();
  const std::size_t before = MappedBytesInUse();
  void* heap = AllocateBlock((std::size_t{64} << 10) - 1);
  EXPECT_EQ(MappedBytesInUse(), before) << "a block below 64 KiB is from the heap";
  FreeBlock(heap, (std::size_t{64} << 10) - 1);

  constexpr std::size_t kMid = (std::size_t{192} << 10) + 1;  // rounds up to 49 pages
  void* first = AllocateBlock(kMid);
  EXPECT_EQ(MappedBytesInUse() - before, std::size_t{49} * 4096);
  std::memset(first, 1, kMid);
  FreeBlock(first, kMid);
  EXPECT_EQ(MappedBytesInUse(), before);
  const Mapping kept = MappingOf(first);
  ASSERT_TRUE(kept.found) << "a freed mid-sized block is kept mapped";
  EXPECT_EQ(kept.lazy_free, 0u) << "a kept mid-sized block is not offered back to the kernel (MADV_FREE)";
  void* again = AllocateBlock(kMid);
  EXPECT_EQ(again, first) << "the next block of the size reuses the kept one";
  EXPECT_EQ(static_cast<unsigned char*>(again)[kMid - 1], 1) << "its pages are the ones written before";
  FreeBlock(again, kMid);

  ReleaseKeptLarge();
  EXPECT_FALSE(MappingOf(first).found) << "ReleaseKeptLarge unmaps the kept blocks";

  // Many at once: up to 16 MiB of them are kept, the rest unmapped; the ones freed last are kept (the sizes a program
  // uses now are the ones it will ask for again).
  constexpr std::size_t kBig = kHuge - 4096;
  std::vector<void*> blocks;
  for (int i = 0; i < 12; ++i) blocks.push_back(AllocateBlock(kBig));
  for (void* b : blocks) FreeBlock(b, kBig);
  const auto kept_now = std::count_if(blocks.begin(), blocks.end(), [](void* b) { return MappingOf(b).found; });
  const std::size_t room = (std::size_t{16} << 20) / kBig;
  EXPECT_EQ(static_cast<std::size_t>(kept_now), room) << "kept beyond (or below) 16 MiB";
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_EQ(MappingOf(blocks[i]).found, i >= blocks.size() - room) << "block " << i << " of " << blocks.size();
  }
  // A block of another size freed now is kept, and the one kept longest goes to make room for it.
  void* other = AllocateBlock(kMid);
  FreeBlock(other, kMid);
  EXPECT_TRUE(MappingOf(other).found) << "the block freed last is kept";
  EXPECT_FALSE(MappingOf(blocks[blocks.size() - room]).found) << "the one kept longest made room for it";
  EXPECT_TRUE(MappingOf(blocks.back()).found);
  ReleaseKeptLarge();
  EXPECT_FALSE(MappingOf(other).found);
  for (void* b : blocks) EXPECT_FALSE(MappingOf(b).found);
  EXPECT_EQ(MappedBytesInUse(), before);
}

}  // namespace
}  // namespace epollcr
