// The string fields of an image hold UTF-8, as protobuf's `string` requires (proto3). Protobuf checks it too, but
// refuses such an image by writing to the process's stderr through its log ([libprotobuf ERROR ...]) when it parses
// or serializes one; the library never logs. So epollcr checks every string field first, driven by the schema's
// descriptors (a string field added to image.proto is checked with no change here), and refuses a bad one with its
// location, like every other validation error (docs/image-format.md, "Validation").
#pragma once

#include <google/protobuf/message.h>

#include <string>
#include <string_view>

namespace epollcr::image {

// True if `text` is well-formed UTF-8 (RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF).
bool IsUtf8(std::string_view text);

// The location ("header.producer", "roots[2].name", "files[5].embedder.kind") of the first string field of a
// message of type `type` in wire-format `payload` that is not UTF-8; empty if there is none. Bytes the parser would
// refuse anyway (malformed wire format) end the search with no location: the parse then fails on them, silently.
std::string FindNonUtf8InPayload(std::string_view payload, const google::protobuf::Descriptor& type);

// The same for a message in memory (before it is serialized, which would log as well).
std::string FindNonUtf8InMessage(const google::protobuf::Message& message);

}  // namespace epollcr::image
