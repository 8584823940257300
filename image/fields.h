// The image's side of the state declarations (epollcr/state.h): for every savable type, which field of its image
// message holds each field its VisitState() saves. Capture and build walk the declaration, not a list of their own:
// each field the declaration saves (kSave, or kWait as the referenced object's id) goes through the mapping of the
// same name, and no other field is read or written. A saved field with no mapping, a mapping of another C++ type,
// or a mapping for a field the declaration does not save (kNoSave, kZeroValue, kManual) is an error the first time
// an object of the type is captured or built, naming the type and the field (tests/restore/state_policies_test.cc
// checks every type).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "epollcr/eventfd.h"
#include "epollcr/pipe.h"
#include "epollcr/socket_pair.h"
#include "epollcr/v1/image.pb.h"
#include "event_poll_internal.h"
#include "state/load_objects.h"
#include "state/visitors.h"

namespace epollcr::image {

// What a mapping needs besides the field's value. Capture: object ids, and the object itself (a field whose image
// form depends on another field of it). Build: the objects loaded so far, the position of the object being built
// (the owner of a wait edge), and its row in a columnar message.
struct CaptureContext {
  const state::SaveIds& ids;
  const void* object = nullptr;
};
struct BuildContext {
  state::LoadObjects& objects;
  std::uint32_t owner = 0;
  int row = 0;
};

// One declared field's place in image message Msg: conversions both ways for a field of C++ type T, kept as plain
// function pointers (an indirect call per field and object: capture and build stay within the benchmarks' goals).
template <typename Msg>
struct FieldMapping {
  using Erased = void (*)();
  const char* field;
  const std::type_info* type;
  Erased capture;  // void (*)(const T&, Msg&, const CaptureContext&)
  Erased build;    // void (*)(const Msg&, T&, BuildContext&)
};

template <typename Msg, typename T>
FieldMapping<Msg> Map(const char* field, void (*capture)(const T&, Msg&, const CaptureContext&),
                      void (*build)(const Msg&, T&, BuildContext&)) {
  return {field, &typeid(T), reinterpret_cast<void (*)()>(capture), reinterpret_cast<void (*)()>(build)};
}

// The image message and mappings of each savable type (image/fields.cc).
template <typename Object>
struct ImageOf;
#define EPOLLCR_IMAGE_OF(Object, Msg, kName)                         \
  template <>                                                        \
  struct ImageOf<Object> {                                           \
    using Message = Msg;                                             \
    static constexpr const char* kTypeName = kName;                  \
    static std::span<const FieldMapping<Message>> Fields();          \
  };
EPOLLCR_IMAGE_OF(EventFd, v1::EventFdState, "eventfd")
EPOLLCR_IMAGE_OF(PipeReadEnd, v1::PipeEndState, "pipe-read")
EPOLLCR_IMAGE_OF(PipeWriteEnd, v1::PipeEndState, "pipe-write")
EPOLLCR_IMAGE_OF(UnixSocket, v1::UnixStreamState, "unix-stream")
EPOLLCR_IMAGE_OF(PipeBuffer, v1::PipeState, "pipe")
EPOLLCR_IMAGE_OF(SocketPairState, v1::SocketPairState, "socket-pair")
EPOLLCR_IMAGE_OF(SocketPairState::End, v1::SocketEnd, "socket-end")
EPOLLCR_IMAGE_OF(PollEntry, v1::EventPollState, "poll-entry")
#undef EPOLLCR_IMAGE_OF

// A type's mappings in the order of the fields its declaration saves, or what is wrong with them.
template <typename Msg>
struct BoundFields {
  std::vector<const FieldMapping<Msg>*> saved;
  std::string error;  // empty when every saved field has its mapping and every mapping its saved field
};

template <typename Msg>
struct BindFields {
  std::span<const FieldMapping<Msg>> table;
  const char* type_name;
  BoundFields<Msg> out;
  std::vector<bool> used = std::vector<bool>(table.size(), false);

  template <typename T, FieldPolicy P>
  void Field(const char* name, const T&, PolicyTag<P>) {
    std::size_t i = 0;
    while (i < table.size() && std::strcmp(table[i].field, name) != 0) ++i;
    const bool mapped = i < table.size();
    if (mapped) used[i] = true;
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      if (!mapped) {
        Fail(std::string(" field ") + name + " (" + FieldPolicyName(P) + ") has no image field");
      } else if (*table[i].type != typeid(T)) {
        Fail(std::string(" field ") + name + ": its image mapping converts another C++ type");
      } else {
        out.saved.push_back(&table[i]);
      }
    } else if (mapped) {
      Fail(std::string(" field ") + name + " is " + FieldPolicyName(P) + ", yet the image maps it");
    }
  }
  void Fail(const std::string& what) {
    if (out.error.empty()) out.error = std::string(type_name) + what;
  }
};

// The bound mappings of Object's declaration (the same for every object of the type: bound once).
template <typename Object>
const BoundFields<typename ImageOf<Object>::Message>& Bound(Object& any) {
  using Msg = typename ImageOf<Object>::Message;
  static const BoundFields<Msg> bound = [&] {
    BindFields<Msg> bind{ImageOf<Object>::Fields(), ImageOf<Object>::kTypeName, {}};
    any.VisitState(bind);
    for (std::size_t i = 0; i < bind.table.size(); ++i) {
      if (!bind.used[i]) bind.Fail(std::string(" maps field ") + bind.table[i].field + ", which it does not declare");
    }
    return std::move(bind.out);
  }();
  return bound;
}

template <typename Msg>
struct CaptureFields {
  const BoundFields<Msg>& bound;
  Msg& msg;
  const CaptureContext& context;
  std::size_t next = 0;
  template <typename T, FieldPolicy P>
  void Field(const char*, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      using Fn = void (*)(const T&, Msg&, const CaptureContext&);
      reinterpret_cast<Fn>(bound.saved[next++]->capture)(value, msg, context);
    }
  }
};

template <typename Msg>
struct BuildFields {
  const BoundFields<Msg>& bound;
  const Msg& msg;
  BuildContext& context;
  std::size_t next = 0;
  template <typename T, FieldPolicy P>
  void Field(const char*, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) {
      using Fn = void (*)(const Msg&, T&, BuildContext&);
      reinterpret_cast<Fn>(bound.saved[next++]->build)(msg, value, context);
    }
  }
};

// Every saved field of `object` into `msg` (a columnar message gets one more row). Throws state::LoadError on a
// mapping error.
template <typename Object>
void CaptureObject(Object& object, typename ImageOf<Object>::Message& msg, const state::SaveIds& ids) {
  const auto& bound = Bound(object);
  if (!bound.error.empty()) throw state::LoadError("image mapping: " + bound.error);
  const CaptureContext context{ids, &object};
  CaptureFields<typename ImageOf<Object>::Message> v{bound, msg, context};
  object.VisitState(v);
}

// An object's saved fields as bytes, copied under the locks and captured after them: state/visitors.h (CopySaved).
using state::CopySaved;
using state::SavedBytes;
using state::SavedFieldsIn;

// Captures `count` objects' saved fields copied one after another from `at` (CopySaved) into `msg` (a columnar
// message: a row each) through `scratch`, an object of the type that no one else sees, whose saved fields are
// overwritten by each copy in turn; returns where the copies end. Throws state::LoadError on a mapping error.
template <typename Object>
const std::byte* CaptureCopies(Object& scratch, const std::byte* at, std::size_t count,
                               typename ImageOf<Object>::Message& msg, const state::SaveIds& ids) {
  const auto& bound = Bound(scratch);
  if (!bound.error.empty()) throw state::LoadError("image mapping: " + bound.error);
  const CaptureContext context{ids, &scratch};
  for (std::size_t i = 0; i < count; ++i) {
    SavedFieldsIn copy{at};
    scratch.VisitState(copy);
    at = copy.at;
    CaptureFields<typename ImageOf<Object>::Message> v{bound, msg, context};
    scratch.VisitState(v);
  }
  return at;
}

// Every saved field of `object` from `msg` (row `row` of a columnar message); wait references resolve to objects of
// `objects` and record the wait edge from `owner`. Throws state::LoadError.
template <typename Object>
void BuildObject(const typename ImageOf<Object>::Message& msg, Object& object, state::LoadObjects& objects,
                 std::uint32_t owner, int row = 0) {
  const auto& bound = Bound(object);
  if (!bound.error.empty()) throw state::LoadError("image mapping: " + bound.error);
  BuildContext context{objects, owner, row};
  BuildFields<typename ImageOf<Object>::Message> v{bound, msg, context};
  object.VisitState(v);
}

}  // namespace epollcr::image
