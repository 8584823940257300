// The save policies (epollcr/state.h) mean the same on every path.
// - The declarations are the codecs' one input: every field a savable type's VisitState() saves (kSave, kWait)
//   comes back from every Boost format and from the protobuf image with the value it had, and no field it does not
//   save (kNoSave, kZeroValue, kManual) is written or read by either. A field declared kSave without an image
//   mapping, or mapped while not saved, makes the image refuse to capture or build the type (and this test fail);
//   the Boost backend needs no mapping (field columns and plain fields follow the declaration).
// - kZeroValue: a save while a thread blocks in Wait fails, with the same message, in every format.
// - kWait: after_load runs an object's hook after the hooks of the objects it refers to; a poll's nesting-depth
//   check relies on it (the heights of the polls it watches are known only once their after_load ran).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "epollcr/epollcr.h"
#include "world_fixtures.h"
#include "event_poll_internal.h"
#include "pipe_buffer.h"
#include "image/codec.h"
#include "image/fields.h"
#include "socket_pair_state.h"
#include "state/visitors.h"

namespace epollcr {
namespace {

using state::FieldOf;

// ---- every declared field, as text ----------------------------------------------------------------------------------

// Names the objects a wait field refers to the same way in a world and in its restored copy: a file by its fd, shared
// state by the lowest fd of its ends.
class Names {
 public:
  explicit Names(const World& world) {
    for (const auto& [fd, file] : world.fds.Snapshot()) {
      const std::string name = "fd" + std::to_string(fd);
      names_.emplace(file.get(), name);
      if (auto* r = dynamic_cast<PipeReadEnd*>(file.get())) names_.emplace(r->pipe().get(), "pipe of " + name);
      if (auto* w = dynamic_cast<PipeWriteEnd*>(file.get())) names_.emplace(w->pipe().get(), "pipe of " + name);
      if (auto* s = dynamic_cast<UnixSocket*>(file.get())) names_.emplace(s->pair().get(), "pair of " + name);
    }
  }
  std::string Of(const void* object) const {
    auto it = names_.find(object);
    return it == names_.end() ? "?" : it->second;
  }

 private:
  std::map<const void*, std::string> names_;
};

// The saved fields of one object as (field, value text), in declaration order. Every type a saved field has must
// have a Text() here: a field of a new type fails the build of this test until it does.
struct Print {
  const Names* names;
  std::vector<std::pair<std::string, std::string>> fields;

  template <typename T, FieldPolicy P>
  void Field(const char* name, T& value, PolicyTag<P>) {
    if constexpr (P == FieldPolicy::kSave || P == FieldPolicy::kWait) fields.emplace_back(name, Text(value));
  }

  template <typename T>
    requires std::is_arithmetic_v<T>
  std::string Text(const T& v) { return std::to_string(v); }
  std::string Text(const EntryList& v) { return std::to_string(static_cast<int>(v)); }
  std::string Text(File* const& v) { return names->Of(v); }
  template <typename T>
  std::string Text(const std::shared_ptr<T>& v) { return names->Of(v.get()); }
  std::string Text(const std::deque<PipeBuffer::Slot>& slots) {
    std::string out;
    for (const auto& s : slots) {
      out += "[" + std::to_string(s.offset) + " " + std::string(reinterpret_cast<const char*>(s.page.get()) + s.offset, s.len) + "]";
    }
    return out;
  }
  std::string Text(const std::deque<SocketPairState::Segment>& segments) {
    std::string out;
    for (const auto& s : segments) {
      out += "[" + std::to_string(s.offset) + " " + std::to_string(s.truesize) + " " +
             std::string(reinterpret_cast<const char*>(s.data.data()), s.data.size()) + "]";
    }
    return out;
  }
  std::string Text(SocketPairState::End& end) {
    Print inner{names, {}};
    end.VisitState(inner);
    std::string out;
    for (const auto& [f, v] : inner.fields) out += f + "=" + v + ";";
    return out;
  }
};

template <typename Object>
std::vector<std::pair<std::string, std::string>> Fields(Object& object, const Names& names) {
  Print p{&names, {}};
  object.VisitState(p);
  return p.fields;
}

// Every saved field of every object of a world, keyed "type field" -> the sorted values of all objects of the type.
using WorldPrint = std::map<std::string, std::vector<std::string>>;

template <typename Object>
void Add(WorldPrint& out, const char* type, Object& object, const Names& names) {
  for (auto& [field, value] : Fields(object, names)) out[std::string(type) + " " + field].push_back(value);
}

WorldPrint PrintWorld(const World& world) {
  const Names names(world);
  WorldPrint out;
  std::set<const void*> shared;
  for (const auto& [fd, file] : world.fds.Snapshot()) {
    if (auto* e = dynamic_cast<EventFd*>(file.get())) Add(out, "eventfd", *e, names);
    if (auto* r = dynamic_cast<PipeReadEnd*>(file.get())) {
      Add(out, "pipe-read", *r, names);
      if (shared.insert(r->pipe().get()).second) Add(out, "pipe", *r->pipe(), names);
    }
    if (auto* w = dynamic_cast<PipeWriteEnd*>(file.get())) {
      Add(out, "pipe-write", *w, names);
      if (shared.insert(w->pipe().get()).second) Add(out, "pipe", *w->pipe(), names);
    }
    if (auto* s = dynamic_cast<UnixSocket*>(file.get())) {
      Add(out, "unix-stream", *s, names);
      if (shared.insert(s->pair().get()).second) Add(out, "socket-pair", *s->pair(), names);
    }
    if (auto* p = dynamic_cast<EventPoll*>(file.get())) {
      MutexLock lock(p->impl()->mu_);
      for (PollEntry& e : p->impl()->entries_) Add(out, "poll-entry", e, names);
    }
  }
  for (auto& [key, values] : out) std::sort(values.begin(), values.end());
  return out;
}

// The saved fields of a default-made object of each type: a world proves a field round-trips only if some object
// of the type holds another value there.
WorldPrint Defaults() {
  World empty;
  const Names names(empty);
  WorldPrint out;
  auto e = EventFd::Create(0);
  Add(out, "eventfd", *e, names);
  PipeBuffer pipe;
  Add(out, "pipe", pipe, names);
  SocketPairState pair;
  Add(out, "socket-pair", pair, names);
  UnixSocket socket(nullptr, 0);
  Add(out, "unix-stream", socket, names);
  PipeReadEnd r(nullptr);
  Add(out, "pipe-read", r, names);
  PipeWriteEnd w(nullptr);
  Add(out, "pipe-write", w, names);
  PollEntry entry(nullptr, FileIdentifier{}, 0, 0);
  Add(out, "poll-entry", entry, names);
  return out;
}

// ---- a world where every saved field of every type differs from its default somewhere -----------------------------


struct Fixture {
  World world;
  Fixture() {
    auto counter = EventFd::Create(7, /*semaphore=*/true);
    auto [a, b] = NewSocketPair();
    FieldOf<std::int64_t>(FieldOf<SocketPairState::End>(*a->pair(), "end0"), "sndbuf") = 8192;  // before any send
    testing::WriteBytes(*a, 100, 'a');
    testing::WriteBytes(*b, 3000, 'b');
    testing::ReadBytes(*a, 10);
    EXPECT_FALSE(a->Shutdown(SHUT_WR));
    auto [c, d] = NewSocketPair();
    testing::WriteBytes(*c, 50, 'c');  // d is closed with these bytes unread: c is reset
    PipeEnds p1 = NewPipe(), p2 = NewPipe();
    std::shared_ptr<PipeWriteEnd> p3 = NewPipe().write;  // its read end is closed already
    testing::WriteBytes(*p1.write, 5000, 'p');
    testing::ReadBytes(*p1.read, 10);
    testing::WriteBytes(*p2.write, 20, 'q');
    auto poll = EventPoll::Create();
    const std::vector<std::shared_ptr<File>> files{counter, a, b, c, p1.read, p1.write, p2.read, poll, p3};
    int fd = 3;
    for (const auto& f : files) EXPECT_FALSE(world.fds.InstallAt(fd++, f));
    // A ready entry, a waiting one, a disabled one-shot, an edge-triggered one with data.
    EXPECT_FALSE(poll->AddEntry({counter.get(), 3}, EntryFlags::kNone, kEventIn, 11));
    EXPECT_FALSE(poll->AddEntry({a.get(), 4}, EntryFlags::kEdgeTriggered, kEventOut | kEventRdHup, 0xfeedfacecafeULL));
    EXPECT_FALSE(poll->AddEntry({p2.read.get(), 9}, EntryFlags::kOneShot, kEventIn, 33));
    EXPECT_FALSE(poll->AddEntry({b.get(), 5}, EntryFlags::kNone, kEventPri, 44));
    Event events[4];
    Result<int> n = poll->ReadEvents(events, 4);
    EXPECT_TRUE(n.ok() && n.value() >= 1);
    // d and p2's write end close here: their peers see it (reset, no writers).
  }
};

std::string Differences(const WorldPrint& want, const WorldPrint& got) {
  std::string out;
  for (const auto& [key, values] : want) {
    auto it = got.find(key);
    if (it == got.end()) {
      out += key + ": missing\n";
    } else if (it->second != values) {
      out += key + ": differs\n";
    }
  }
  for (const auto& [key, values] : got) {
    if (!want.count(key)) out += key + ": not in the saved world\n";
  }
  return out;
}

TEST(DeclaredFields, TheFixtureHoldsANonDefaultValueInEverySavedField) {
  Fixture f;
  const WorldPrint world = PrintWorld(f.world);
  const WorldPrint defaults = Defaults();
  for (const auto& [key, values] : defaults) {
    auto it = world.find(key);
    ASSERT_NE(it, world.end()) << key << ": no object of the type in the fixture";
    const std::string& default_value = values.front();
    EXPECT_TRUE(std::any_of(it->second.begin(), it->second.end(),
                            [&](const std::string& v) { return v != default_value; }))
        << key << ": every object holds the default value, so a codec that drops the field would pass";
  }
}

TEST(DeclaredFields, EverySavedFieldRoundTripsThroughEveryBoostFormat) {
  Fixture f;
  const WorldPrint want = PrintWorld(f.world);
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    SCOPED_TRACE(ArchiveFormatName(format));
    Result<std::string> bytes = SaveWorld(f.world, format);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    World loaded;
    const Status s = LoadWorld(bytes.value(), &loaded);
    ASSERT_TRUE(s.ok()) << s.message;
    EXPECT_EQ(Differences(want, PrintWorld(loaded)), "");
  }
}

TEST(DeclaredFields, EverySavedFieldRoundTripsThroughTheImage) {
  Fixture f;
  const WorldPrint want = PrintWorld(f.world);
  Result<std::string> bytes = image::SaveImage(f.world);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message;
  World loaded;
  const Status s = image::LoadImage(bytes.value(), &loaded);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(Differences(want, PrintWorld(loaded)), "");
}

// Field columns in an xml archive are elements named KIND.FIELD: exactly the saved fields of each kind, no others.
TEST(DeclaredFields, BoostColumnsAreExactlyTheSavedFields) {
  Fixture f;
  Result<std::string> xml = SaveWorld(f.world, ArchiveFormat::kBoostXml);
  ASSERT_TRUE(xml.ok()) << xml.status().message;
  std::set<std::string> columns;  // start tags <KIND.FIELD>
  for (std::size_t at = xml.value().find('<'); at != std::string::npos; at = xml.value().find('<', at + 1)) {
    const std::size_t end = xml.value().find('>', at);
    if (end == std::string::npos) break;
    const std::string name = xml.value().substr(at + 1, end - at - 1);
    const bool column = name.find('.') != std::string::npos && name.find_first_of(" /=\"") == std::string::npos;
    if (column) columns.insert(name);
  }
  std::set<std::string> saved;
  for (const auto& [key, values] : PrintWorld(f.world)) {
    const std::string kind = key.substr(0, key.find(' '));
    if (kind == "pipe" || kind == "socket-pair") continue;  // shared state: plain fields, not columns
    saved.insert((kind == "poll-entry" ? std::string("entry") : kind) + "." + key.substr(key.find(' ') + 1));
  }
  EXPECT_EQ(columns, saved);
}

// ---- the image mapping check ----------------------------------------------------------------------------------------

TEST(DeclaredFields, EveryTypeBindsToItsImageMessage) {
  auto e = EventFd::Create(0);
  EXPECT_EQ(image::Bound(*e).error, "");
  PipeBuffer pipe;
  EXPECT_EQ(image::Bound(pipe).error, "");
  SocketPairState pair;
  EXPECT_EQ(image::Bound(pair).error, "");
  EXPECT_EQ(image::Bound(FieldOf<SocketPairState::End>(pair, "end0")).error, "");
  UnixSocket socket(nullptr, 0);
  EXPECT_EQ(image::Bound(socket).error, "");
  PipeReadEnd r(nullptr);
  EXPECT_EQ(image::Bound(r).error, "");
  PipeWriteEnd w(nullptr);
  EXPECT_EQ(image::Bound(w).error, "");
  PollEntry entry(nullptr, FileIdentifier{}, 0, 0);
  EXPECT_EQ(image::Bound(entry).error, "");
}

// Types shaped like EventFd, each declaring one thing the mapping of EventFd does not agree with.
template <FieldPolicy CountPolicy, typename Extra>
struct EventFdLike {
  std::uint64_t count = 0;
  bool semaphore = false;
  Extra extra{};
  template <typename V>
  void VisitState(V& v) {
    v.Field("count", count, PolicyTag<CountPolicy>{});
    v.Field("semaphore", semaphore, kSave);
    if constexpr (!std::is_same_v<Extra, std::monostate>) v.Field("extra", extra, kSave);
  }
};
using WithUnmappedField = EventFdLike<FieldPolicy::kSave, int>;
using WithMappedNoSave = EventFdLike<FieldPolicy::kNoSave, std::monostate>;
using WithMappedZeroValue = EventFdLike<FieldPolicy::kZeroValue, std::monostate>;
struct WithOtherType {
  int count = 0;
  bool semaphore = false;
  template <typename V>
  void VisitState(V& v) {
    v.Field("count", count, kSave);
    v.Field("semaphore", semaphore, kSave);
  }
};
struct WithFieldMissing {
  bool semaphore = false;
  template <typename V>
  void VisitState(V& v) {
    v.Field("semaphore", semaphore, kSave);
  }
};

}  // namespace

namespace image {
#define EVENTFD_LIKE(Type)                                                                       \
  template <>                                                                                    \
  struct ImageOf<Type> {                                                                         \
    using Message = v1::EventFdState;                                                            \
    static constexpr const char* kTypeName = #Type;                                              \
    static std::span<const FieldMapping<Message>> Fields() { return ImageOf<EventFd>::Fields(); } \
  };
EVENTFD_LIKE(WithUnmappedField)
EVENTFD_LIKE(WithMappedNoSave)
EVENTFD_LIKE(WithMappedZeroValue)
EVENTFD_LIKE(WithOtherType)
EVENTFD_LIKE(WithFieldMissing)
#undef EVENTFD_LIKE
}  // namespace image

namespace {

TEST(DeclaredFields, ASavedFieldWithoutAnImageFieldIsRefused) {
  WithUnmappedField t;
  EXPECT_EQ(image::Bound(t).error, "WithUnmappedField field extra (save) has no image field");
  v1::EventFdState m;
  state::SaveIds ids;
  try {
    image::CaptureObject(t, m, ids);
    ADD_FAILURE() << "captured a type with an unmapped saved field";
  } catch (const state::LoadError& e) {
    EXPECT_STREQ(e.what(), "image mapping: WithUnmappedField field extra (save) has no image field");
  }
}

TEST(DeclaredFields, AFieldThatIsNotSavedMustNotBeMapped) {
  WithMappedNoSave nosave;
  EXPECT_EQ(image::Bound(nosave).error, "WithMappedNoSave field count is nosave, yet the image maps it");
  WithMappedZeroValue zero;
  EXPECT_EQ(image::Bound(zero).error, "WithMappedZeroValue field count is zerovalue, yet the image maps it");
}

TEST(DeclaredFields, AMappingMustConvertTheDeclaredType) {
  WithOtherType t;
  EXPECT_EQ(image::Bound(t).error, "WithOtherType field count: its image mapping converts another C++ type");
}

TEST(DeclaredFields, AMappingOfAFieldNobodyDeclaresIsRefused) {
  WithFieldMissing t;
  EXPECT_EQ(image::Bound(t).error, "WithFieldMissing maps field count, which it does not declare");
}

// ---- zerovalue ------------------------------------------------------------------------------------------------------

TEST(ZeroValue, ASaveWhileAThreadBlocksInWaitFailsInEveryFormat) {
  World world;
  auto poll = EventPoll::Create();
  auto counter = EventFd::Create(0);
  ASSERT_FALSE(world.fds.InstallAt(3, counter));
  ASSERT_FALSE(world.fds.InstallAt(4, poll));
  ASSERT_FALSE(poll->AddEntry({counter.get(), 3}, EntryFlags::kNone, kEventIn, 1));
  std::thread waiter([&] {
    Event e[1];
    EXPECT_TRUE(poll->Wait(e, 1, -1).ok());
  });
  while (FieldOf<int>(*poll->impl(), "waiters") == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::vector<std::string> messages;
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    Result<std::string> bytes = SaveWorld(world, format);
    EXPECT_FALSE(bytes.ok()) << ArchiveFormatName(format);
    messages.push_back(bytes.status().message);
  }
  Result<std::string> image_bytes = image::SaveImage(world);
  EXPECT_FALSE(image_bytes.ok());
  messages.push_back(image_bytes.status().message);
  Result<v1::Image> captured = image::Capture(world);
  EXPECT_FALSE(captured.ok());
  messages.push_back(captured.status().message);
  const std::uint64_t one = 1;
  ASSERT_TRUE(counter->Write(std::as_bytes(std::span(&one, 1))).ok());  // wakes the waiter
  waiter.join();
  EXPECT_NE(messages[0].find("field waiters must be zero at save time (it is not: 1)"), std::string::npos)
      << messages[0];
  for (const std::string& m : messages) EXPECT_EQ(m, messages[0]);
  EXPECT_TRUE(image::SaveImage(world).ok());  // nobody waits now
}

// ---- wait -----------------------------------------------------------------------------------------------------------

// Polls q[0] -> q[1] -> ... -> q[4] (q[0] watches q[1], ...): a chain of kMaxNests links, the most ADD allows. Poll r
// watches an eventfd; the test points r's entry at q[0] behind the engine's back (no ADD would allow it), so that
// the saved world holds a chain one link too long. A load must refuse it, which it can only if q[0]'s after_load
// ran before r's: r's height is one more than q[0]'s, known once q[0] took its entries.
struct TooDeep {
  World world;
  std::vector<std::shared_ptr<EventPoll>> q;
  std::shared_ptr<EventPoll> r = EventPoll::Create();
  std::shared_ptr<EventFd> counter = EventFd::Create(0);
  PollEntry* moved = nullptr;

  TooDeep() {
    for (int i = 0; i <= kMaxNests; ++i) q.push_back(EventPoll::Create());
    for (int i = 0; i < kMaxNests; ++i) EXPECT_FALSE(q[i]->AddEntry({q[i + 1].get(), 11 + i}, EntryFlags::kNone, kEventIn, 0));
    EXPECT_FALSE(r->AddEntry({counter.get(), 3}, EntryFlags::kNone, kEventIn, 0));
    int fd = 3;
    EXPECT_FALSE(world.fds.InstallAt(fd++, counter));
    EXPECT_FALSE(world.fds.InstallAt(fd++, r));
    for (auto& p : q) EXPECT_FALSE(world.fds.InstallAt(fd++, p));
    moved = &*r->impl()->entries_.begin();
    moved->file = q[0].get();  // saved as a reference to q[0]; the entry stays in the counter's queue
  }
  ~TooDeep() { moved->file = counter.get(); }
};

TEST(WaitOrder, ALoadedChainOfPollsDeeperThanTheLimitIsRefusedByEveryBoostFormat) {
  TooDeep t;
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    SCOPED_TRACE(ArchiveFormatName(format));
    Result<std::string> bytes = SaveWorld(t.world, format);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message;
    World loaded;
    const Status s = LoadWorld(bytes.value(), &loaded);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message.find("polls nested deeper than 4"), std::string::npos) << s.message;
    EXPECT_EQ(loaded.fds.Count(), 0);
  }
}

TEST(WaitOrder, ALoadedChainOfTheLimitLoads) {  // the same world without the moved entry: exactly kMaxNests links
  TooDeep t;
  t.moved->file = t.counter.get();
  Result<std::string> bytes = SaveWorld(t.world, ArchiveFormat::kBoostText);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message;
  World loaded;
  const Status s = LoadWorld(bytes.value(), &loaded);
  EXPECT_TRUE(s.ok()) << s.message;
}

TEST(WaitOrder, TheImageRefusesTheSameChainWhenValidating) {
  TooDeep t;
  Result<std::string> bytes = image::SaveImage(t.world);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message;
  World loaded;
  const Status s = image::LoadImage(bytes.value(), &loaded);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(loaded.fds.Count(), 0);
}

// The save's id table (state::IdMap) against std::unordered_map: objects added from empty through many growths,
// each keeping the first id it was given; every lookup of an added and of a never-added address answers as the
// oracle does, with addresses as an allocator gives them (16 apart) and scattered ones.
TEST(SaveIds, IdMapAnswersAsAHashMapDoes) {
  state::IdMap ids;
  std::unordered_map<const void*, std::uint64_t> oracle;
  std::vector<const void*> objects;
  std::uint64_t scatter = 0x9e3779b97f4a7c15ull;
  for (std::uint64_t i = 0; i < 50000; ++i) {
    scatter = scatter * 6364136223846793005ull + 1442695040888963407ull;
    const std::uintptr_t address = i % 2 == 0 ? 0x7f0000000000 + 16 * i : (scatter >> 8) | 16;
    objects.push_back(reinterpret_cast<const void*>(address));
  }
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const auto [id, added] = ids.try_emplace(objects[i], i + 1);
    const auto [it, oracle_added] = oracle.try_emplace(objects[i], i + 1);
    ASSERT_EQ(added, oracle_added) << i;
    ASSERT_EQ(id, it->second) << i;
    if (i % 3 == 0) {  // a second add keeps the first id
      const auto [again, added_again] = ids.try_emplace(objects[i], 999999999);
      ASSERT_FALSE(added_again);
      ASSERT_EQ(again, it->second);
    }
  }
  EXPECT_EQ(ids.size(), oracle.size());
  for (const void* object : objects) {
    const std::uint64_t* id = ids.find(object);
    ASSERT_NE(id, nullptr);
    EXPECT_EQ(*id, oracle.at(object));
  }
  for (std::uintptr_t i = 0; i < 50000; ++i) {  // addresses never added: between the allocator-like ones, and others
    const void* absent = reinterpret_cast<const void*>(0x7f0000000000 + 16 * i + 8);
    EXPECT_FALSE(ids.contains(absent));
    const void* other = reinterpret_cast<const void*>(0x1000 + 16 * i);
    EXPECT_EQ(ids.contains(other), oracle.count(other) > 0);
  }
  EXPECT_FALSE(ids.contains(nullptr));
  state::SaveIds none;
  EXPECT_THROW(none.Of(objects[0]), state::LoadError);  // an empty table answers too
}

}  // namespace
}  // namespace epollcr
