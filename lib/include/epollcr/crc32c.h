// CRC32C (Castagnoli; reflected; initial value and final xor 0xffffffff), the checksum of epollcr's archive envelope
// and image framing. Crc32c("123456789") == 0xe3069283. Uses the SSE4.2 crc32 instruction when the CPU has it.
#pragma once

#include <cstdint>
#include <string_view>

namespace epollcr {

std::uint32_t Crc32c(std::string_view bytes);

}  // namespace epollcr
