// The string fields of an image hold UTF-8, as protobuf's `string` requires (proto3). Protobuf checks it too, but
// refuses such an image by writing to the process's stderr through its log ([libprotobuf ERROR ...]) when it parses
// or serializes one; the library never logs. So epollcr checks every string field first, driven by the schema's
// descriptors (a string field added to image.proto is checked with no change here), and refuses a bad one with its
// location, like every other validation error (docs/image-format.md, "Validation").
#pragma once

#include <google/protobuf/message.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace epollcr::image {

// True if `text` is well-formed UTF-8 (RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF).
bool IsUtf8(std::string_view text);

// What a walk over a wire-format payload found.
struct PayloadStrings {
  // The wire format is malformed (a truncated or overlong field, a bad tag or wire type, unbalanced groups, nesting
  // deeper than protobuf's limit): protobuf would refuse the payload too, but may log about a string it read on the
  // way before it notices (a string longer than its enclosing message, say), so it must not be given the payload.
  bool malformed = false;
  // The location ("header.producer", "roots[2].name", "files[5].embedder.kind") of the first string field that is
  // not UTF-8; empty if there is none.
  std::string non_utf8;

  bool ok() const { return !malformed && non_utf8.empty(); }
};
// Walks a payload holding a message of type `type`, up to the first malformation or bad string.
PayloadStrings CheckPayloadStrings(std::string_view payload, const google::protobuf::Descriptor& type);

// CheckPayloadStrings, one top-level field at a time, for a reader that walks a payload's top level itself (and has
// found it well formed there: tags, varints, lengths; no group): Clean(number, bytes) is true if the length-delimited
// field `number` with these bytes is well formed and every string in it UTF-8 (a scalar field always is). True for
// every field of a payload is CheckPayloadStrings' ok() for it; where one is false, CheckPayloadStrings says what and
// where. Made once per payload (it looks up the schema's tables).
struct FieldTable;
class TopLevelStrings {
 public:
  explicit TopLevelStrings(const google::protobuf::Descriptor& type);
  bool Clean(std::uint32_t number, std::string_view bytes) const;

 private:
  const FieldTable* table_;
};

// The same for a message in memory (before it is serialized, which would log as well).
std::string FindNonUtf8InMessage(const google::protobuf::Message& message);

}  // namespace epollcr::image
