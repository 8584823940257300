#include "epollcr/crc32c.h"

#include <boost/crc.hpp>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace epollcr {

namespace {

std::uint32_t Crc32cPortable(std::string_view bytes) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(bytes.data(), bytes.size());
  return crc.checksum();
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t Crc32cSse42(std::string_view bytes) {
  std::uint64_t crc = 0xffffffff;
  const char* p = bytes.data();
  std::size_t n = bytes.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, sizeof word);
    crc = __builtin_ia32_crc32di(crc, word);
  }
  auto crc32 = static_cast<std::uint32_t>(crc);
  for (; n > 0; ++p, --n) crc32 = __builtin_ia32_crc32qi(crc32, static_cast<unsigned char>(*p));
  return crc32 ^ 0xffffffff;
}
#endif

}  // namespace

std::uint32_t Crc32c(std::string_view bytes) {
#if defined(__x86_64__)
  // One cpuid leaf, asked at the first checksum. Not __builtin_cpu_supports: it links libgcc's __cpu_indicator_init,
  // a constructor that asks the CPU for every feature at every start of a program, and a cpuid instruction traps
  // to the hypervisor in a virtual machine.
  static const bool kHardware = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_SSE4_2) != 0;
  }();
  if (kHardware) return Crc32cSse42(bytes);
#endif
  return Crc32cPortable(bytes);
}

}  // namespace epollcr
