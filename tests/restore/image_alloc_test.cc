// A header that claims a 2^40-byte payload in a 100-byte file fails without any allocation sized by the claim.
// This binary replaces the global operator new to record the largest request, so the check is on what the code
// asks for, not on whether the machine happens to have the memory.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image_test_util.h"
#include "image/file.h"

namespace {
std::atomic<std::size_t> largest_allocation{0};

void* Allocate(std::size_t size) {
  std::size_t seen = largest_allocation.load();
  while (size > seen && !largest_allocation.compare_exchange_weak(seen, size)) {
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return Allocate(size); }
void* operator new[](std::size_t size) { return Allocate(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace epollcr::image {
namespace {

constexpr std::uint64_t kClaim = std::uint64_t{1} << 40;
constexpr std::size_t kSmall = 4096;  // any allocation the code makes for 100 bytes of input is far below this

TEST(ImageAllocTest, TheHookSeesLargeAllocations) {
  largest_allocation = 0;
  std::vector<char> big(1 << 20);
  EXPECT_GE(largest_allocation.load(), std::size_t{1} << 20) << "the replacement operator new is not in use";
}

TEST(ImageAllocTest, UnframeOfAHugeClaimAllocatesNothingForIt) {
  const std::string image = testing::MakeHeader(1, 0, 0, kClaim, 0) + std::string(68, 'x');
  for (std::uint64_t limit : {std::numeric_limits<std::uint64_t>::max(), std::uint64_t{1} << 30}) {
    largest_allocation = 0;
    const Result<std::string_view> result = Unframe(image, ReadLimits{.max_payload = limit});
    EXPECT_FALSE(result.ok());
    EXPECT_LT(largest_allocation.load(), kSmall) << "limit " << limit;
  }
}

TEST(ImageAllocTest, ReadImageFileOfAHugeClaimAllocatesNothingForIt) {
  testing::TempDir dir;
  const std::string path = dir.File("claim.img");
  testing::WriteRaw(path, testing::MakeHeader(1, 0, 0, kClaim, 0) + std::string(68, 'x'));
  for (std::uint64_t limit : {std::numeric_limits<std::uint64_t>::max(), std::uint64_t{1} << 30}) {
    std::string out;
    largest_allocation = 0;
    const Status error = ReadImageFile(path, &out, ReadLimits{.max_payload = limit});
    EXPECT_FALSE(error.ok());
    EXPECT_LT(largest_allocation.load(), kSmall) << "limit " << limit << ": " << error.message;
  }
}

}  // namespace
}  // namespace epollcr::image
