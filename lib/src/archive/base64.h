// Base64 (RFC 4648, section 4: the standard alphabet, '=' padding, no line breaks): how text and xml archives hold
// the bytes buffered in pipes and socket pairs (archive/fields.h; docs/state-model.md, "Formats"). Internal to lib/.
//
// Boost's own binary_object path in text and xml archives encodes and decodes one character at a time through
// iterator adaptors; these work on whole groups of three bytes through tables.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace epollcr::archive {

// The length of the encoding of n bytes: 4 characters per group of 3 bytes, the last group padded.
constexpr std::size_t Base64Length(std::size_t n) { return (n + 2) / 3 * 4; }

// Appends the encoding of `bytes` to `out`.
void AppendBase64(std::span<const std::byte> bytes, std::string& out);

// Decodes `text` into `out`, which must be exactly as long as the bytes `text` encodes. Only the canonical encoding
// is taken: the length is Base64Length(out.size()), every character is of the alphabet, '=' pads the last group only,
// and the bits the padding leaves over are zero (so each byte string has one encoding, and save, load, save gives the
// same archive). Returns false otherwise; `out` is then unspecified.
[[nodiscard]] bool DecodeBase64(std::string_view text, std::span<std::byte> out);

}  // namespace epollcr::archive
