#include "image/utf8.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace epollcr::image {

// What each field number of one message type holds, as far as the walk cares: nothing to look at (numbers, bytes,
// packed columns, unknown fields, messages without strings), a string, or a message that holds strings (with its own
// table). Built once per schema and never changed after: a walk does no lookup but an array index per field.
struct FieldKind {
  enum : std::uint8_t { kSkip, kString, kMessage } kind = kSkip;
  const FieldTable* table = nullptr;  // kMessage: the table of the message type
};
struct FieldTable {
  std::vector<FieldKind> by_number;  // indexed by field number; numbers past the end are kSkip
  bool sparse = false;               // numbers too large for an array (never in epollcr's schema): Walk alone decides
  // The fields a message in memory is checked through (Check): strings (table null) and messages that hold strings.
  std::vector<std::pair<const google::protobuf::FieldDescriptor*, const FieldTable*>> checked;
};

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
    if (p != end && (static_cast<std::uint8_t>(*p) & 0x80) == 0) {  // one byte: most tags, lengths and numbers
      *v = static_cast<std::uint8_t>(*p++);
      return true;
    }
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
inline Next ReadField(WireReader& in, WireField* f) {
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
  std::string at = path;
  if (!at.empty()) at.push_back('.');
  at.append(field.name());
  if (index >= 0) at.append("[").append(std::to_string(index)).append("]");
  return at;
}

// The loop both walks share: reads the fields of one message up to the end of `in`, or up to the end-group tag of
// `group` if it is not 0. A group's fields are handed to on_group(field number) (which walks them, one level deeper);
// a length-delimited field to on_field(field), and a scalar is skipped. False if the wire format is malformed, a
// group is nested deeper than protobuf allows, or a callback says stop.
template <typename OnGroup, typename OnField>
bool ForEachField(WireReader& in, int depth, std::uint32_t group, OnGroup on_group, OnField on_field) {
  while (in.p != in.end) {
    WireField f;
    switch (ReadField(in, &f)) {
      case Next::kMalformed: return false;
      case Next::kGroupEnd: return f.number == group;
      case Next::kField: break;
    }
    if (f.wire_type == 3) {
      if (depth >= kMaxDepth || !on_group(f.number)) return false;
    } else if (f.wire_type == 2 && !on_field(f)) {
      return false;
    }
  }
  return group == 0;
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

// Walks the fields of one message (type null: an unknown group, whose fields are all skipped). False if the walk
// stops: the wire format is malformed (protobuf refuses all of it too), or *found is set.
bool Walk(WireReader& in, const Descriptor* type, const std::string& path, int depth, std::uint32_t group,
          std::unordered_map<const Descriptor*, bool>* memo, std::string* found) {
  std::unordered_map<int, int> seen;  // repeated field number -> occurrences so far (for the location's index)
  const auto on_group = [&](std::uint32_t number) { return Walk(in, nullptr, path, depth + 1, number, memo, found); };
  const auto on_field = [&](const WireField& f) {
    const FieldDescriptor* field = type == nullptr ? nullptr : type->FindFieldByNumber(static_cast<int>(f.number));
    if (field == nullptr) return true;  // an unknown field: kept as bytes, never checked
    const bool is_string = field->type() == FieldDescriptor::TYPE_STRING;
    if (!is_string && (field->type() != FieldDescriptor::TYPE_MESSAGE || !HasStrings(field->message_type(), memo))) {
      return true;  // bytes, a packed column, or a message without strings (as fast as skipping it)
    }
    const int index = field->is_repeated() ? seen[field->number()]++ : -1;
    if (is_string) {
      if (IsUtf8(f.bytes)) return true;
      *found = Location(path, *field, index);
      return false;
    }
    WireReader sub{f.bytes.data(), f.bytes.data() + f.bytes.size()};
    return depth < kMaxDepth &&
           Walk(sub, field->message_type(), Location(path, *field, index), depth + 1, 0, memo, found);
  };
  return ForEachField(in, depth, group, on_group, on_field);
}

// The tables of a schema (FieldKinds::For).
class FieldKinds {
 public:
  explicit FieldKinds(const Descriptor& root) { root_ = Build(&root); }
  const FieldTable* root() const { return root_; }

  // The tables of `type`'s schema, made on first use and kept for the life of the process.
  static const FieldKinds& For(const Descriptor& type) {
    static std::mutex mu;
    static auto* cache = new std::unordered_map<const Descriptor*, std::unique_ptr<FieldKinds>>();  // never freed
    std::lock_guard<std::mutex> lock(mu);
    std::unique_ptr<FieldKinds>& kinds = (*cache)[&type];
    if (!kinds) kinds = std::make_unique<FieldKinds>(type);
    return *kinds;
  }

 private:
  const FieldTable* Build(const Descriptor* type) {
    auto [it, inserted] = tables_.try_emplace(type);
    if (!inserted) return &it->second;  // built, or being built (a type that contains itself)
    FieldTable& table = it->second;     // std::unordered_map never moves its elements
    int max = 0;
    for (int i = 0; i < type->field_count(); ++i) max = std::max(max, type->field(i)->number());
    table.sparse = max > 4096 && type->field_count() > 0;
    if (!table.sparse) table.by_number.resize(static_cast<std::size_t>(max) + 1);
    for (int i = 0; i < type->field_count(); ++i) {
      const FieldDescriptor* f = type->field(i);
      FieldKind kind;
      if (f->type() == FieldDescriptor::TYPE_STRING) {
        kind.kind = FieldKind::kString;
      } else if (f->type() == FieldDescriptor::TYPE_MESSAGE && HasStrings(f->message_type(), &memo_)) {
        kind = {FieldKind::kMessage, Build(f->message_type())};
      } else {
        continue;
      }
      if (!table.sparse) table.by_number[static_cast<std::size_t>(f->number())] = kind;
      table.checked.emplace_back(f, kind.table);
    }
    return &table;
  }

  std::unordered_map<const Descriptor*, FieldTable> tables_;
  std::unordered_map<const Descriptor*, bool> memo_;
  const FieldTable* root_ = nullptr;
};

// Walk's question without its answer: true if Walk would find the payload well formed with every string UTF-8.
// It keeps no path, counts no index and allocates nothing, so a whole image costs about one pass over its bytes;
// only when it says no does Walk go over the payload again to say what and where. `table` null: an unknown group.
bool Clean(WireReader& in, const FieldTable* table, int depth, std::uint32_t group) {
  if (table != nullptr && table->sparse) return false;  // Walk decides
  const auto on_group = [&](std::uint32_t number) { return Clean(in, nullptr, depth + 1, number); };
  const auto on_field = [&](const WireField& f) {
    if (table == nullptr || f.number >= table->by_number.size()) return true;
    const FieldKind& k = table->by_number[f.number];
    if (k.kind == FieldKind::kString) return IsUtf8(f.bytes);
    if (k.kind != FieldKind::kMessage) return true;
    WireReader sub{f.bytes.data(), f.bytes.data() + f.bytes.size()};
    return depth < kMaxDepth && Clean(sub, k.table, depth + 1, 0);
  };
  return ForEachField(in, depth, group, on_group, on_field);
}

// Where Check is: the chain of fields from the root, turned into text only when a bad string is found.
struct CheckFrame {
  const CheckFrame* parent;
  const FieldDescriptor* field;  // null at the root
  int index;
};
std::string PathOf(const CheckFrame* frame) {
  if (frame == nullptr || frame->field == nullptr) return "";
  return Location(PathOf(frame->parent), *frame->field, frame->index);
}

bool Check(const google::protobuf::Message& message, const FieldTable& table, const CheckFrame* at,
           std::string* found) {
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  std::string scratch;
  for (const auto& [field, sub_table] : table.checked) {
    const int n = field->is_repeated() ? reflection.FieldSize(message, field)
                                       : (reflection.HasField(message, field) ? 1 : 0);
    for (int i = 0; i < n; ++i) {
      const CheckFrame here{at, field, field->is_repeated() ? i : -1};
      if (sub_table == nullptr) {
        const std::string& text = field->is_repeated()
                                      ? reflection.GetRepeatedStringReference(message, field, i, &scratch)
                                      : reflection.GetStringReference(message, field, &scratch);
        if (!IsUtf8(text)) {
          *found = PathOf(&here);
          return false;
        }
      } else {
        const google::protobuf::Message& sub = field->is_repeated() ? reflection.GetRepeatedMessage(message, field, i)
                                                                    : reflection.GetMessage(message, field);
        if (!Check(sub, *sub_table, &here, found)) return false;
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
  WireReader clean{payload.data(), payload.data() + payload.size()};
  if (Clean(clean, FieldKinds::For(type).root(), 0, 0)) return {};
  WireReader in{payload.data(), payload.data() + payload.size()};
  std::unordered_map<const Descriptor*, bool> memo;
  PayloadStrings result;
  result.malformed = !Walk(in, &type, "", 0, 0, &memo, &result.non_utf8) && result.non_utf8.empty();
  return result;
}

std::string FindNonUtf8InMessage(const google::protobuf::Message& message) {
  std::string found;
  const CheckFrame root{nullptr, nullptr, -1};
  Check(message, *FieldKinds::For(*message.GetDescriptor()).root(), &root, &found);
  return found;
}

TopLevelStrings::TopLevelStrings(const Descriptor& type) : table_(FieldKinds::For(type).root()) {}

bool TopLevelStrings::Clean(std::uint32_t number, std::string_view bytes) const {
  if (table_->sparse) return false;  // CheckPayloadStrings decides
  if (number >= table_->by_number.size()) return true;
  const FieldKind& k = table_->by_number[number];
  if (k.kind == FieldKind::kString) return IsUtf8(bytes);
  if (k.kind != FieldKind::kMessage) return true;
  WireReader sub{bytes.data(), bytes.data() + bytes.size()};
  return image::Clean(sub, k.table, 1, 0);
}

}  // namespace epollcr::image
