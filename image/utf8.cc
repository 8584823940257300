#include "image/utf8.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace epollcr::image {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

// Protobuf's default recursion limit: a deeper payload is refused (as protobuf refuses it).
constexpr int kMaxDepth = 100;

// A forward reader of wire-format bytes (protobuf's encoding: tags and varints, fixed 32/64-bit values, lengths).
struct WireReader {
  const char* p;
  const char* end;

  bool Varint(std::uint64_t* v) {
    std::uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == end) return false;
      const auto byte = static_cast<std::uint8_t>(*p++);
      result |= std::uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool Skip(std::uint64_t n) {
    if (n > static_cast<std::uint64_t>(end - p)) return false;
    p += n;
    return true;
  }
};

// The next field of a message: its number and wire type; a scalar's value is skipped, a length-delimited field's
// bytes are returned (a group's fields follow it in the input: the caller walks them).
struct WireField {
  std::uint32_t number = 0;
  int wire_type = 0;
  std::string_view bytes;
};
enum class Next { kField, kGroupEnd, kMalformed };
Next ReadField(WireReader& in, WireField* f) {
  std::uint64_t tag = 0;
  if (!in.Varint(&tag) || tag > UINT32_MAX || (tag >> 3) == 0) return Next::kMalformed;
  f->number = static_cast<std::uint32_t>(tag >> 3);
  f->wire_type = static_cast<int>(tag & 7);
  std::uint64_t value = 0;
  switch (f->wire_type) {
    case 0: return in.Varint(&value) ? Next::kField : Next::kMalformed;
    case 1: return in.Skip(8) ? Next::kField : Next::kMalformed;
    case 5: return in.Skip(4) ? Next::kField : Next::kMalformed;
    case 3: return Next::kField;
    case 4: return Next::kGroupEnd;
    case 2:
      if (!in.Varint(&value) || value > static_cast<std::uint64_t>(in.end - in.p)) return Next::kMalformed;
      f->bytes = std::string_view(in.p, value);
      in.p += value;
      return Next::kField;
    default: return Next::kMalformed;
  }
}

std::string Location(const std::string& path, const FieldDescriptor& field, int index) {
  std::string at = path.empty() ? field.name() : path + "." + field.name();
  if (index >= 0) at += "[" + std::to_string(index) + "]";
  return at;
}

// Whether a message of `type` can hold a string field, at any depth. `memo` caches the answers of one search.
bool HasStrings(const Descriptor* type, std::unordered_map<const Descriptor*, bool>* memo) {
  if (auto it = memo->find(type); it != memo->end()) return it->second;
  (*memo)[type] = false;  // a type that contains itself adds nothing while it is being looked at
  bool result = false;
  for (int i = 0; i < type->field_count() && !result; ++i) {
    const FieldDescriptor* f = type->field(i);
    result = f->type() == FieldDescriptor::TYPE_STRING ||
             (f->type() == FieldDescriptor::TYPE_MESSAGE && HasStrings(f->message_type(), memo));
  }
  return (*memo)[type] = result;
}

// Walks the fields of one message (type null: an unknown group, whose fields are all skipped) up to the end of
// `in`, or up to the end-group tag of `group` if it is not 0. False if the walk stops: the wire format is malformed
// (protobuf refuses all of it too), or *found is set.
bool Walk(WireReader& in, const Descriptor* type, const std::string& path, int depth, std::uint32_t group,
          std::unordered_map<const Descriptor*, bool>* memo, std::string* found) {
  std::unordered_map<int, int> seen;  // repeated field number -> occurrences so far (for the location's index)
  while (in.p != in.end) {
    WireField f;
    switch (ReadField(in, &f)) {
      case Next::kMalformed: return false;
      case Next::kGroupEnd: return f.number == group;
      case Next::kField: break;
    }
    if (f.wire_type == 3) {
      if (depth >= kMaxDepth || !Walk(in, nullptr, path, depth + 1, f.number, memo, found)) return false;
      continue;
    }
    if (f.wire_type != 2) continue;
    const FieldDescriptor* field = type == nullptr ? nullptr : type->FindFieldByNumber(static_cast<int>(f.number));
    if (field == nullptr) continue;  // an unknown field: kept as bytes, never checked
    const bool is_string = field->type() == FieldDescriptor::TYPE_STRING;
    if (!is_string && (field->type() != FieldDescriptor::TYPE_MESSAGE || !HasStrings(field->message_type(), memo))) {
      continue;  // bytes, a packed column, or a message without strings (as fast as skipping it)
    }
    const int index = field->is_repeated() ? seen[field->number()]++ : -1;
    if (is_string) {
      if (!IsUtf8(f.bytes)) {
        *found = Location(path, *field, index);
        return false;
      }
      continue;
    }
    WireReader sub{f.bytes.data(), f.bytes.data() + f.bytes.size()};
    if (depth >= kMaxDepth ||
        !Walk(sub, field->message_type(), Location(path, *field, index), depth + 1, 0, memo, found)) {
      return false;
    }
  }
  return group == 0;
}

// What each field number of one message type holds, as far as the walk cares: nothing to look at (numbers, bytes,
// packed columns, unknown fields, messages without strings), a string, or a message that holds strings.
struct FieldKind {
  enum : std::uint8_t { kSkip, kString, kMessage } kind = kSkip;
  const Descriptor* type = nullptr;
};
class FieldKinds {
 public:
  // Indexed by field number; numbers past the end are kSkip.
  const std::vector<FieldKind>& Of(const Descriptor* type) {
    auto [it, inserted] = tables_.try_emplace(type);
    if (inserted) {
      int max = 0;
      for (int i = 0; i < type->field_count(); ++i) max = std::max(max, type->field(i)->number());
      if (max > 4096) max = 0;  // sparse numbers: Walk alone (never in epollcr's schema)
      it->second.resize(static_cast<std::size_t>(max) + 1);
      for (int i = 0; i < type->field_count() && max > 0; ++i) {
        const FieldDescriptor* f = type->field(i);
        FieldKind& k = it->second[static_cast<std::size_t>(f->number())];
        if (f->type() == FieldDescriptor::TYPE_STRING) {
          k.kind = FieldKind::kString;
        } else if (f->type() == FieldDescriptor::TYPE_MESSAGE && HasStrings(f->message_type(), &memo_)) {
          k = {FieldKind::kMessage, f->message_type()};
        }
      }
    }
    return it->second;
  }
  bool Sparse(const Descriptor* type) {
    const std::vector<FieldKind>& table = Of(type);
    return table.size() == 1 && type->field_count() > 0;
  }

 private:
  std::unordered_map<const Descriptor*, std::vector<FieldKind>> tables_;
  std::unordered_map<const Descriptor*, bool> memo_;
};

// Walk's question without its answer: true if Walk would find the payload well formed with every string UTF-8.
// It keeps no path, counts no index and allocates nothing per field, so a whole image costs about one pass over its
// bytes; only when it says no does Walk go over the payload again to say what and where.
bool Clean(WireReader& in, const Descriptor* type, int depth, std::uint32_t group, FieldKinds& kinds) {
  const std::vector<FieldKind>* table = type == nullptr ? nullptr : &kinds.Of(type);
  if (type != nullptr && kinds.Sparse(type)) return false;  // Walk decides
  while (in.p != in.end) {
    WireField f;
    switch (ReadField(in, &f)) {
      case Next::kMalformed: return false;
      case Next::kGroupEnd: return f.number == group;
      case Next::kField: break;
    }
    if (f.wire_type == 3) {
      if (depth >= kMaxDepth || !Clean(in, nullptr, depth + 1, f.number, kinds)) return false;
      continue;
    }
    if (f.wire_type != 2 || table == nullptr || f.number >= table->size()) continue;
    const FieldKind& k = (*table)[f.number];
    if (k.kind == FieldKind::kString && !IsUtf8(f.bytes)) return false;
    if (k.kind == FieldKind::kMessage) {
      WireReader sub{f.bytes.data(), f.bytes.data() + f.bytes.size()};
      if (depth >= kMaxDepth || !Clean(sub, k.type, depth + 1, 0, kinds)) return false;
    }
  }
  return group == 0;
}

bool Check(const google::protobuf::Message& message, const std::string& path,
           std::unordered_map<const Descriptor*, bool>* memo, std::string* found) {
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  const Descriptor& type = *message.GetDescriptor();
  std::string scratch;
  for (int f = 0; f < type.field_count(); ++f) {
    const FieldDescriptor* field = type.field(f);
    const bool is_string = field->type() == FieldDescriptor::TYPE_STRING;
    if (!is_string && (field->type() != FieldDescriptor::TYPE_MESSAGE || !HasStrings(field->message_type(), memo))) {
      continue;
    }
    const int n = field->is_repeated() ? reflection.FieldSize(message, field)
                                       : (reflection.HasField(message, field) ? 1 : 0);
    for (int i = 0; i < n; ++i) {
      const int index = field->is_repeated() ? i : -1;
      if (is_string) {
        const std::string& text = field->is_repeated()
                                      ? reflection.GetRepeatedStringReference(message, field, i, &scratch)
                                      : reflection.GetStringReference(message, field, &scratch);
        if (!IsUtf8(text)) {
          *found = Location(path, *field, index);
          return false;
        }
      } else {
        const google::protobuf::Message& sub = field->is_repeated() ? reflection.GetRepeatedMessage(message, field, i)
                                                                    : reflection.GetMessage(message, field);
        if (!Check(sub, Location(path, *field, index), memo, found)) return false;
      }
    }
  }
  return true;
}

}  // namespace

bool IsUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p != end) {
    const unsigned c = *p++;
    if (c < 0x80) continue;
    int more = 0;
    unsigned min = 0;
    unsigned code = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      more = 1, min = 0x80, code = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      more = 2, min = 0x800, code = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      more = 3, min = 0x10000, code = c & 0x07;
    } else {
      return false;  // a continuation byte first, an overlong two-byte lead (0xc0, 0xc1), or above U+10FFFF
    }
    if (end - p < more) return false;
    for (int i = 0; i < more; ++i) {
      const unsigned next = *p++;
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
  }
  return true;
}

PayloadStrings CheckPayloadStrings(std::string_view payload, const Descriptor& type) {
  FieldKinds kinds;
  WireReader clean{payload.data(), payload.data() + payload.size()};
  if (Clean(clean, &type, 0, 0, kinds)) return {};
  WireReader in{payload.data(), payload.data() + payload.size()};
  std::unordered_map<const Descriptor*, bool> memo;
  PayloadStrings result;
  result.malformed = !Walk(in, &type, "", 0, 0, &memo, &result.non_utf8) && result.non_utf8.empty();
  return result;
}

std::string FindNonUtf8InMessage(const google::protobuf::Message& message) {
  std::unordered_map<const Descriptor*, bool> memo;
  std::string found;
  Check(message, "", &memo, &found);
  return found;
}

}  // namespace epollcr::image
