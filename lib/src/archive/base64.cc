#include "archive/base64.h"

#include <array>
#include <cstdint>

namespace epollcr::archive {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Each character's 6 bits, or kNotBase64 for a character outside the alphabet ('=' included).
constexpr std::uint8_t kNotBase64 = 0xff;
constexpr std::array<std::uint8_t, 256> kValues = [] {
  std::array<std::uint8_t, 256> values{};
  values.fill(kNotBase64);
  for (std::uint8_t i = 0; i < 64; ++i) values[static_cast<unsigned char>(kAlphabet[i])] = i;
  return values;
}();

std::uint32_t Value(char c) { return kValues[static_cast<unsigned char>(c)]; }

}  // namespace

void AppendBase64(std::span<const std::byte> bytes, std::string& out) {
  const std::size_t at = out.size();
  out.resize(at + Base64Length(bytes.size()));
  char* o = out.data() + at;
  const auto* in = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t whole = bytes.size() / 3 * 3;
  for (std::size_t i = 0; i < whole; i += 3, o += 4) {
    const std::uint32_t group = std::uint32_t{in[i]} << 16 | std::uint32_t{in[i + 1]} << 8 | in[i + 2];
    o[0] = kAlphabet[group >> 18];
    o[1] = kAlphabet[(group >> 12) & 63];
    o[2] = kAlphabet[(group >> 6) & 63];
    o[3] = kAlphabet[group & 63];
  }
  switch (bytes.size() - whole) {
    case 1: {
      const std::uint32_t group = std::uint32_t{in[whole]} << 16;
      o[0] = kAlphabet[group >> 18];
      o[1] = kAlphabet[(group >> 12) & 63];
      o[2] = '=';
      o[3] = '=';
      break;
    }
    case 2: {
      const std::uint32_t group = std::uint32_t{in[whole]} << 16 | std::uint32_t{in[whole + 1]} << 8;
      o[0] = kAlphabet[group >> 18];
      o[1] = kAlphabet[(group >> 12) & 63];
      o[2] = kAlphabet[(group >> 6) & 63];
      o[3] = '=';
      break;
    }
    default: break;
  }
}

bool DecodeBase64(std::string_view text, std::span<std::byte> out) {
  if (text.size() != Base64Length(out.size())) return false;
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  const std::size_t whole = out.size() / 3 * 3;
  const char* t = text.data();
  // A character outside the alphabet has the high bit of its value set; or-ing the four values shows it once per
  // group.
  for (std::size_t i = 0; i < whole; i += 3, t += 4) {
    const std::uint32_t a = Value(t[0]), b = Value(t[1]), c = Value(t[2]), d = Value(t[3]);
    if (((a | b | c | d) & 0x80) != 0) return false;
    const std::uint32_t group = a << 18 | b << 12 | c << 6 | d;
    o[i] = static_cast<unsigned char>(group >> 16);
    o[i + 1] = static_cast<unsigned char>(group >> 8);
    o[i + 2] = static_cast<unsigned char>(group);
  }
  switch (out.size() - whole) {
    case 1: {  // "xy==": 12 bits, the last 4 zero
      const std::uint32_t a = Value(t[0]), b = Value(t[1]);
      if (((a | b) & 0x80) != 0 || (b & 0x0f) != 0 || t[2] != '=' || t[3] != '=') return false;
      o[whole] = static_cast<unsigned char>(a << 2 | b >> 4);
      break;
    }
    case 2: {  // "xyz=": 18 bits, the last 2 zero
      const std::uint32_t a = Value(t[0]), b = Value(t[1]), c = Value(t[2]);
      if (((a | b | c) & 0x80) != 0 || (c & 0x03) != 0 || t[3] != '=') return false;
      const std::uint32_t group = a << 18 | b << 12 | c << 6;
      o[whole] = static_cast<unsigned char>(group >> 16);
      o[whole + 1] = static_cast<unsigned char>(group >> 8);
      break;
    }
    default: break;
  }
  return true;
}

}  // namespace epollcr::archive
