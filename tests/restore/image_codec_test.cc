// The portable image: lossless with the live world and with the Boost backend, JSON both ways, every validation
// rule with a message that says where, every corruption of a framed image refused, nothing left behind on failure.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>

#include "epollcr/epollcr.h"
#include "image/codec.h"
#include "world_fixtures.h"

namespace epollcr::image {
namespace {

using testing::BuildWorld;
using testing::Describe;

std::string EncodeOrDie(const v1::Image& image) {
  Result<std::string> bytes = Encode(image);
  EXPECT_TRUE(bytes.ok()) << bytes.status().message;
  return bytes.value();
}

v1::Image CaptureOrDie(const World& w) {
  Result<v1::Image> image = Capture(w);
  EXPECT_TRUE(image.ok()) << image.status().message;
  return image.value();
}

// A varint as protobuf's wire format writes it, for payloads made by hand.
std::string Varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

TEST(ImageCodecTest, CaptureRestoreKeepsEverything) {
  World a;
  BuildWorld(a);
  v1::Image image = CaptureOrDie(a);
  EXPECT_TRUE(Validate(image).ok());
  World b;
  Status s = Restore(image, &b);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(Describe(b), Describe(a));
  EXPECT_EQ(EncodeOrDie(CaptureOrDie(b)), EncodeOrDie(image));  // deterministic, and nothing lost
}

// SaveImage captures into an arena and encodes in place (SaveImageInto): the same bytes as framing Encode's output of
// Capture's image, the two paths written separately.
TEST(ImageCodecTest, SaveImageIsTheFramedEncodingOfTheCapture) {
  World a;
  BuildWorld(a);
  Result<std::string> saved = SaveImage(a);
  ASSERT_TRUE(saved.ok()) << saved.status().message;
  EXPECT_EQ(saved.value(), Frame(EncodeOrDie(CaptureOrDie(a))));
  // And a world whose ready lists and ranks the cut's own sort has to order: a bigger world, shuffled.
  World b;
  auto poll = EventPoll::Create();
  b.roots["poll"] = poll;
  std::vector<std::shared_ptr<EventFd>> files;
  // Counters of one and of several varint bytes, and semaphores: SaveImage writes eventfd records itself.
  for (int i = 0; i < 300; ++i) {
    const std::uint64_t count = i % 3 == 0 ? 1 : i % 7 == 0 ? (std::uint64_t{1} << 40) + static_cast<std::uint64_t>(i) : 0;
    files.push_back(EventFd::Create(count, i % 4 == 0));
  }
  for (int k = 0; k < 900; ++k) {
    const int i = (k * 7919) % 300;
    const int fd = 1000 - k;
    ASSERT_FALSE(b.fds.InstallAt(fd, files[static_cast<std::size_t>(i)]));
    ASSERT_FALSE(poll->AddEntry({files[static_cast<std::size_t>(i)].get(), fd}, EntryFlags::kNone, kEventIn, k));
  }
  auto other = EventPoll::Create();  // a second poll on some of the same files: ranks above 0
  b.roots["other"] = other;
  ASSERT_FALSE(b.fds.InstallAt(0, other));  // fd 0: a record without its fd field (proto3 leaves zero out)
  for (int i = 0; i < 300; i += 5) {
    // Data of several varint bytes, as a pointer is: SaveImage writes polls' columns itself too.
    const std::uint64_t data = (std::uint64_t{0x7f3a5c} << 24) + 48 * static_cast<std::uint64_t>(i);
    ASSERT_FALSE(other->AddEntry({files[static_cast<std::size_t>(i)].get(), 7}, EntryFlags::kNone, kEventIn, data));
  }
  // One-shot entries, edge-triggered ones and an exclusive one: once harvested, a one-shot entry is disabled, and its
  // events keep EPOLLERR and EPOLLHUP in the image.
  for (int i = 3; i < 300; i += 30) {
    ASSERT_FALSE(other->AddEntry({files[static_cast<std::size_t>(i)].get(), 8}, EntryFlags::kOneShot, kEventIn, i));
    ASSERT_FALSE(other->AddEntry({files[static_cast<std::size_t>(i)].get(), 9}, EntryFlags::kEdgeTriggered,
                                 kEventIn | kEventOut, i));
  }
  ASSERT_FALSE(other->AddEntry({files[1].get(), 10}, EntryFlags::kExclusive, kEventIn, 1));
  auto empty = EventPoll::Create();  // a poll without entries: a record without columns
  b.roots["empty"] = empty;
  Event events[16];
  ASSERT_TRUE(poll->Wait(events, 16, 0).ok());  // the ready list rotated, in part
  ASSERT_TRUE(other->Wait(events, 16, 0).ok());
  saved = SaveImage(b);
  ASSERT_TRUE(saved.ok()) << saved.status().message;
  EXPECT_EQ(saved.value(), Frame(EncodeOrDie(CaptureOrDie(b))));
  World c;
  ASSERT_TRUE(LoadImage(saved.value(), &c).ok());
  EXPECT_EQ(Describe(c), Describe(b));
}

// SaveImage writes host files' records itself too: the same bytes as protobuf's, with the open state and without,
// for a detached host file, an fd whose number needs a multi-byte varint, a position and open flags; and options'
// on_host_file is told of the same fds in the same order by both paths.
TEST(ImageCodecTest, SaveImageWritesHostRecordsAsProtobufDoes) {
  World w;
  auto poll = EventPoll::Create();
  w.roots["poll"] = poll;
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK), 0);
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  char path[] = "/tmp/epollcr-image-host-XXXXXX";
  const int file = mkostemp(path, O_CLOEXEC | O_APPEND);
  ASSERT_GE(file, 0);
  unlink(path);
  ASSERT_EQ(write(file, "0123456789", 10), 10);
  const int high = fcntl(file, F_DUPFD_CLOEXEC, 300);  // an fd of a two-byte varint, at a position of 10
  ASSERT_GE(high, 300);
  std::vector<std::shared_ptr<HostFile>> hosts;
  for (int fd : {pipe_fds[0], pipe_fds[1], pair[0], pair[1], file, high}) {
    Result<std::shared_ptr<HostFile>> h = HostFile::Create(fd);
    ASSERT_TRUE(h.ok()) << h.status().message;
    hosts.push_back(h.value());
  }
  for (std::size_t i = 0; i < hosts.size(); ++i) ASSERT_FALSE(w.fds.InstallAt(static_cast<int>(i) + 3, hosts[i]));
  for (std::size_t i = 0; i < 4; ++i) {
    ASSERT_FALSE(poll->AddEntry({hosts[i].get(), static_cast<int>(i) + 3}, EntryFlags::kNone, kEventIn, i));
  }
  // A detached host file: its fd given back (an interposer's orphan, HostFile::MarkDetached), its entry kept.
  ASSERT_TRUE(hosts[3]->Identify().ok());
  const int given_back = hosts[3]->ReleaseFd();
  hosts[3]->MarkDetached();
  for (bool open_state : {true, false}) {
    SCOPED_TRACE(open_state ? "with the open state" : "open state shared");
    SaveOptions options;
    options.host_open_state = open_state;
    std::vector<int> told_save, told_capture;
    options.on_host_file = [&](int fd, const File&) { told_save.push_back(fd); };
    Result<std::string> saved = SaveImage(w, options);
    ASSERT_TRUE(saved.ok()) << saved.status().message;
    options.on_host_file = [&](int fd, const File&) { told_capture.push_back(fd); };
    Result<v1::Image> image = Capture(w, options);
    ASSERT_TRUE(image.ok()) << image.status().message;
    EXPECT_EQ(saved.value(), Frame(EncodeOrDie(image.value())));
    EXPECT_EQ(told_save, told_capture);
    EXPECT_EQ(told_save.size(), 5u);  // not the detached file
    // The fields the test set up are there: a position and flags only with the open state, the detached file marked.
    int with_offset = 0, detached = 0;
    for (const v1::File& f : image.value().files()) {
      if (!f.has_host()) continue;
      with_offset += f.host().offset() == 10 ? 1 : 0;
      detached += f.host().detached() ? 1 : 0;
      EXPECT_EQ(f.host().open_state_shared(), !open_state && !f.host().detached());
    }
    EXPECT_EQ(with_offset, open_state ? 2 : 0);
    EXPECT_EQ(detached, 1);
    // The poll's host entries are kernel entries: SaveImage writes its kernel fields after the columns it writes.
    int kernel_polls = 0;
    for (const v1::File& f : image.value().files()) {
      if (f.has_eventpoll() && f.eventpoll().has_kernel() && f.eventpoll().kernel_keys_size() > 0) ++kernel_polls;
    }
    EXPECT_EQ(kernel_polls, 1);
  }
  close(given_back);
}

TEST(ImageCodecTest, ProtoToBoostToProtoIsByteIdentical) {
  World a;
  BuildWorld(a);
  const std::string proto = EncodeOrDie(CaptureOrDie(a));
  for (ArchiveFormat format : {ArchiveFormat::kBoostText, ArchiveFormat::kBoostXml, ArchiveFormat::kBoostBinary}) {
    World from_proto;
    Result<v1::Image> decoded = Decode(proto);
    ASSERT_TRUE(decoded.ok());
    ASSERT_TRUE(Restore(decoded.value(), &from_proto).ok());
    Result<std::string> boost = SaveWorld(from_proto, format);
    ASSERT_TRUE(boost.ok());
    World from_boost;
    ASSERT_TRUE(LoadWorld(boost.value(), &from_boost).ok());
    EXPECT_EQ(EncodeOrDie(CaptureOrDie(from_boost)), proto) << ArchiveFormatName(format);
    // And the other way: the Boost archive of the proto-restored world equals the original's.
    Result<std::string> original_boost = SaveWorld(a, format);
    EXPECT_EQ(boost.value(), original_boost.value()) << ArchiveFormatName(format);
  }
}

TEST(ImageCodecTest, JsonRoundTripIsLossless) {
  World a;
  BuildWorld(a);
  v1::Image image = CaptureOrDie(a);
  Result<std::string> json = ToJson(image);
  ASSERT_TRUE(json.ok());
  EXPECT_NE(json.value().find("\"eventpoll\""), std::string::npos);
  Result<v1::Image> back = FromJson(json.value());
  ASSERT_TRUE(back.ok()) << back.status().message;
  EXPECT_EQ(EncodeOrDie(back.value()), EncodeOrDie(image));
  EXPECT_FALSE(FromJson("{\"files\": 7}").ok());
}

TEST(ImageCodecTest, RestoredWorldBehavesLikeTheOriginal) {
  World a, b;
  BuildWorld(a);
  Result<std::string> bytes = SaveImage(a);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(LoadImage(bytes.value(), &b).ok());
  for (World* w : {&a, &b}) {
    const std::byte one[1] = {};
    ASSERT_TRUE(sys::Write(w->fds, 6, one).ok());
    const std::uint64_t two = 2;
    ASSERT_TRUE(sys::Write(w->fds, 7, std::as_bytes(std::span(&two, 1))).ok());
  }
  for (int round = 0; round < 4; ++round) {
    Event ea[8], eb[8];
    const int na = sys::EpollWait(a.fds, 0, ea, 8, 0).value();
    ASSERT_EQ(na, sys::EpollWait(b.fds, 0, eb, 8, 0).value()) << "round " << round;
    for (int i = 0; i < na; ++i) {
      EXPECT_EQ(ea[i].events, eb[i].events);
      EXPECT_EQ(ea[i].Data(), eb[i].Data());
    }
  }
}

// Each rule of docs/image-format.md "Validation", by a small edit of a valid image, with the words of its message.
TEST(ImageCodecTest, ValidationSaysWhere) {
  World a;
  BuildWorld(a);
  const v1::Image good = CaptureOrDie(a);
  int poll_index = -1;
  for (int i = 0; i < good.files_size(); ++i) {
    if (good.files(i).has_eventpoll() && good.files(i).eventpoll().files_size() > 3) poll_index = i;
  }
  ASSERT_GE(poll_index, 0);
  struct Case {
    const char* what;
    std::function<void(v1::Image&)> edit;
    const char* message;
  };
  const std::uint64_t poll_id = good.files(poll_index).id();
  const std::string poll = "poll " + std::to_string(poll_id);
  std::vector<Case> cases = {
      {"no header", [](v1::Image& i) { i.clear_header(); }, "header: missing"},
      {"newer major", [](v1::Image& i) { i.mutable_header()->set_format_major(2); }, "this build reads 1.x"},
      {"repeated id", [](v1::Image& i) { i.mutable_files(1)->set_id(i.files(0).id()); }, "object id repeated"},
      {"fd to nowhere", [](v1::Image& i) { i.mutable_fds(0)->set_file(999); }, "file 999 is not in the image"},
      {"repeated fd", [](v1::Image& i) { i.mutable_fds(1)->set_fd(i.fds(0).fd()); }, "repeated"},
      {"entry to nowhere",
       [&](v1::Image& i) { i.mutable_files(poll_index)->mutable_eventpoll()->set_files(3, 99); },
       ", entry 3: file 99 is not in the image"},
      {"columns", [&](v1::Image& i) { i.mutable_files(poll_index)->mutable_eventpoll()->add_fds(1); }, "columns"},
      {"duplicate entry",
       [&](v1::Image& i) {
         auto* p = i.mutable_files(poll_index)->mutable_eventpoll();
         p->set_files(1, p->files(0));
         p->set_fds(1, p->fds(0));
       },
       "a second entry for the same (file, fd)"},
      {"ready order with a waiting entry",
       [&](v1::Image& i) {
         auto* p = i.mutable_files(poll_index)->mutable_eventpoll();
         for (int k = 0; k < p->lists_size(); ++k) {
           if (p->lists(k) != v1::ENTRY_LIST_READY) {
             p->add_ready_order(static_cast<std::uint32_t>(k));
             break;
           }
         }
       },
       "which is not a ready entry"},
      {"ready entry missing from the order",
       [&](v1::Image& i) { i.mutable_files(poll_index)->mutable_eventpoll()->clear_ready_order(); },
       "not in the ready order"},
      {"disabled but armed",
       [&](v1::Image& i) {
         auto* p = i.mutable_files(poll_index)->mutable_eventpoll();
         for (int k = 0; k < p->lists_size(); ++k) {
           if (p->lists(k) == v1::ENTRY_LIST_WAITING) {
             p->set_lists(k, v1::ENTRY_LIST_DISABLED);
             p->set_events(k, kEventIn | kEpollOneShot);
             break;
           }
         }
       },
       "not a fired one-shot's"},
      {"exclusive with oneshot",
       [&](v1::Image& i) {
         i.mutable_files(poll_index)->mutable_eventpoll()->set_events(0, kEventIn | kEpollExclusive | kEpollOneShot);
       },
       "EPOLLEXCLUSIVE with bits Linux refuses"},
      {"pipe slot outside its page",
       [](v1::Image& i) {
         auto* s = i.mutable_pipes(0)->add_slots();
         s->set_offset(4000);
         s->set_data(std::string(200, 'x'));
       },
       "pipe 8: slot 2: empty or outside its page"},
      {"repeated queue rank",
       [&](v1::Image& i) {
         auto* p = i.mutable_files(poll_index)->mutable_eventpoll();
         for (int k = 1; k < p->files_size(); ++k) {
           if (p->files(k) == p->files(0)) {
             p->set_queue_ranks(k, p->queue_ranks(0));
             return;
           }
         }
         // Every file has one entry: a second one for the last entry's file, after it in (file, fd) order.
         const int last = p->files_size() - 1;
         p->add_files(p->files(last)), p->add_fds(p->fds(last) + 1000), p->add_events(1), p->add_data(0),
             p->add_lists(v1::ENTRY_LIST_WAITING), p->add_queue_ranks(p->queue_ranks(last));
       },
       "is taken by another entry"},
      {"queue rank beyond the file's entries",
       [&](v1::Image& i) {
         auto* p = i.mutable_files(poll_index)->mutable_eventpoll();
         p->set_queue_ranks(0, static_cast<std::uint32_t>(p->files_size()) + 5);
       },
       "is out of range"},
      {"entries out of (file, fd) order",
       [&](v1::Image& i) {
         auto* p = i.mutable_files(poll_index)->mutable_eventpoll();
         p->mutable_files()->SwapElements(0, 1);
         p->mutable_fds()->SwapElements(0, 1);
         p->mutable_events()->SwapElements(0, 1);
         p->mutable_data()->SwapElements(0, 1);
         p->mutable_lists()->SwapElements(0, 1);
         p->mutable_queue_ranks()->SwapElements(0, 1);
         for (std::uint32_t& k : *p->mutable_ready_order()) k = k == 0 ? 1 : k == 1 ? 0 : k;
       },
       ", entry 1: out of (file id, fd) order"},
      {"fds out of order",
       [](v1::Image& i) { i.mutable_fds()->SwapElements(0, 1); },
       "repeated or out of order"},
      {"host file type", [](v1::Image& i) { i.mutable_files(0)->mutable_host()->set_file_type(0x3000); }, "host file type 12288 is not"},
      {"host fd", [](v1::Image& i) { i.mutable_files(0)->mutable_host()->set_fd(-1); }, "host fd -1 is negative"},
      {"detached host file in the fd table", [](v1::Image& i) { i.mutable_files(0)->mutable_host()->set_detached(true); },
       "a detached host file has no fd"},
      {"eventfd counter", [](v1::Image& i) {
         for (auto& f : *i.mutable_files()) {
           if (f.has_eventfd()) f.mutable_eventfd()->set_count(~0ull);
         }
       }, "eventfd counter out of range"},
  };
  for (const Case& c : cases) {
    v1::Image bad = good;
    c.edit(bad);
    Status s = Validate(bad);
    EXPECT_FALSE(s.ok()) << c.what;
    EXPECT_NE(s.message.find(c.message), std::string::npos) << c.what << ": " << s.message;
    World w;
    EXPECT_FALSE(Restore(bad, &w).ok()) << c.what;
    EXPECT_EQ(w.fds.Count(), 0) << c.what;
  }
}

// A poll's kernel keys (KernelEpollState) are each below next_key and each used once, in whatever order the entries
// list them; the message names the entry where a walk in entry order first finds the fault.
TEST(ImageCodecTest, KernelKeysAreCheckedInAnyOrder) {
  World w;
  auto poll = EventPoll::Create();
  w.roots["poll"] = poll;
  std::vector<std::shared_ptr<HostFile>> hosts;
  for (int k = 0; k < 3; ++k) {
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    close(pair[1]);
    Result<std::shared_ptr<HostFile>> h = HostFile::Create(pair[0]);
    ASSERT_TRUE(h.ok()) << h.status().message;
    hosts.push_back(h.value());
    ASSERT_FALSE(w.fds.InstallAt(pair[0], h.value()));
    ASSERT_FALSE(poll->AddEntry({h.value().get(), pair[0]}, EntryFlags::kNone, kEventIn, k));
  }
  const v1::Image good = CaptureOrDie(w);
  int at = -1;
  for (int i = 0; i < good.files_size(); ++i) {
    if (good.files(i).has_eventpoll()) at = i;
  }
  ASSERT_GE(at, 0);
  ASSERT_TRUE(good.files(at).eventpoll().has_kernel());
  const std::uint64_t next = good.files(at).eventpoll().kernel().next_key();
  ASSERT_GE(next, 4u);
  auto with_keys = [&](std::vector<std::uint64_t> keys) {
    v1::Image image = good;
    auto* p = image.mutable_files(at)->mutable_eventpoll();
    for (int i = 0; i < 3; ++i) p->set_kernel_keys(i, keys[static_cast<std::size_t>(i)]);
    return Validate(image);
  };
  EXPECT_TRUE(with_keys({3, 2, 1}).ok());  // unsorted, each once
  EXPECT_TRUE(with_keys({next - 1, 1, 2}).ok());
  struct Bad {
    std::vector<std::uint64_t> keys;
    std::string message;
  };
  for (const Bad& b : std::vector<Bad>{
           {{1, 1, 3}, ", entry 1: kernel key 1 is taken"},
           {{3, 1, 3}, ", entry 2: kernel key 3 is taken"},
           {{2, next, 1}, ", entry 1: kernel key " + std::to_string(next) + " is taken or not below next_key"},
       }) {
    Status s = with_keys(b.keys);
    EXPECT_FALSE(s.ok()) << b.message;
    EXPECT_NE(s.message.find(b.message), std::string::npos) << s.message;
  }
}

TEST(ImageCodecTest, CyclesAndDepthAreRefused) {
  // Two polls watching each other, and a chain of six polls: neither can be built through the API.
  v1::Image cycle;
  cycle.mutable_header()->set_format_major(1);
  for (std::uint64_t id : {1, 2}) {
    v1::File* f = cycle.add_files();
    f->set_id(id);
    v1::EventPollState* p = f->mutable_eventpoll();
    p->add_files(3 - id);
    p->add_fds(static_cast<int>(id));
    p->add_events(kEventIn);
    p->add_data(0);
    p->add_lists(v1::ENTRY_LIST_WAITING);
    p->add_queue_ranks(0);
  }
  Status s = Validate(cycle);
  EXPECT_NE(s.message.find("cycle"), std::string::npos) << s.message;

  v1::Image chain;
  chain.mutable_header()->set_format_major(1);
  for (std::uint64_t id = 1; id <= 6; ++id) {
    v1::File* f = chain.add_files();
    f->set_id(id);
    v1::EventPollState* p = f->mutable_eventpoll();
    if (id < 6) {
      p->add_files(id + 1);
      p->add_fds(static_cast<int>(id));
      p->add_events(kEventIn);
      p->add_data(0);
      p->add_lists(v1::ENTRY_LIST_WAITING);
      p->add_queue_ranks(0);
    }
  }
  s = Validate(chain);
  EXPECT_NE(s.message.find("nested deeper than 4"), std::string::npos) << s.message;
  chain.mutable_files(4)->mutable_eventpoll()->Clear();  // five polls: allowed
  EXPECT_TRUE(Validate(chain).ok());
}

TEST(ImageCodecTest, EveryTruncationAndByteFlipOfAFramedImageIsRefused) {
  World a;
  {
    int ep = sys::EpollCreate1(a.fds, 0).value();
    int efd = sys::EventFd(a.fds, 1, false).value();
    Event e{kEventIn | kEpollEdgeTriggered, {}};
    e.SetData(42);
    ASSERT_FALSE(sys::EpollCtl(a.fds, ep, sys::kEpollCtlAdd, efd, &e));
  }
  Result<std::string> bytes = SaveImage(a);
  ASSERT_TRUE(bytes.ok());
  const long live = File::LiveFiles();
  for (std::size_t len = 0; len < bytes.value().size(); ++len) {
    World w;
    EXPECT_FALSE(LoadImage(std::string_view(bytes.value()).substr(0, len), &w).ok()) << "truncated at " << len;
  }
  for (std::size_t at = 0; at < bytes.value().size(); ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = bytes.value();
      bad[at] = static_cast<char>(bad[at] ^ (1 << bit));
      World w;
      EXPECT_FALSE(LoadImage(bad, &w).ok()) << "flip of bit " << bit << " at " << at;
    }
  }
  EXPECT_EQ(File::LiveFiles(), live);
}

// WithDecodedFds reads the fd table and eventfds' file records by hand (image/codec.h): what it gives, the image and
// the records together, is exactly what protobuf's parse of the same payload gives (protobuf is the oracle here), for
// a saved world and for records no writer makes but protobuf reads: fields in another order or repeated (the last
// counts), a record with a field more or a negative fd (left to protobuf: no records), a field 2 of another wire type
// (an unknown field to protobuf), other fields between the fd records; eventfd records with fields reversed, repeated,
// zero, a semaphore of 2, a count of ten bytes, a field more, among other files (their order is the image's); and a
// string that is not UTF-8 is refused either way, with the same message.
TEST(ImageCodecTest, FdTableAndEventFdsReadApartAreWhatProtobufReads) {
  auto field = [&](int number, int wire_type, const std::string& value) {
    std::string out = Varint((static_cast<std::uint64_t>(number) << 3) | static_cast<std::uint64_t>(wire_type));
    if (wire_type == 2) out += Varint(value.size());
    return out + value;
  };
  auto fd_record = [&](const std::string& fields) { return field(v1::Image::kFdsFieldNumber, 2, fields); };
  auto eventfd_record = [&](const std::string& fields) { return field(v1::Image::kFilesFieldNumber, 2, fields); };
  auto eventfd = [&](const std::string& fields) { return field(v1::File::kEventfdFieldNumber, 2, fields); };
  World world;
  BuildWorld(world);
  const std::string saved = EncodeOrDie(CaptureOrDie(world));
  v1::Root extra_root;
  extra_root.set_name("between");
  extra_root.set_file(1);
  struct Case {
    const char* name;
    std::string payload;
    bool apart;  // whether the fd table is read apart
  };
  const std::vector<Case> cases = {
      {"as saved", saved, true},
      {"file first, fd repeated", saved + fd_record(field(2, 0, Varint(1)) + field(1, 0, Varint(7)) +
                                                    field(1, 0, Varint(900))), true},
      {"a root between fd records", fd_record(field(1, 0, Varint(3))) + field(v1::Image::kRootsFieldNumber, 2,
                                                                             extra_root.SerializeAsString()) + saved,
       true},
      {"a record with an unknown field", saved + fd_record(field(1, 0, Varint(901)) + field(3, 0, Varint(5))), false},
      {"a negative fd", saved + fd_record(field(1, 0, Varint(static_cast<std::uint64_t>(-4)))), false},
      {"field 2 as a varint", saved + field(v1::Image::kFdsFieldNumber, 0, Varint(8)), true},
      {"eventfds as written, among other files",
       eventfd_record(field(1, 0, Varint(91)) + eventfd(field(1, 0, Varint(5)) + field(2, 0, Varint(1)))) + saved +
           eventfd_record(field(1, 0, Varint(92)) + eventfd("")),
       true},
      {"eventfd fields reversed", saved + eventfd_record(eventfd(field(1, 0, Varint(3))) + field(1, 0, Varint(93))),
       true},
      {"eventfd id repeated", saved + eventfd_record(field(1, 0, Varint(94)) + field(1, 0, Varint(95)) + eventfd("")),
       true},
      {"eventfd count and semaphore written as zero",
       saved + eventfd_record(field(1, 0, Varint(96)) + eventfd(field(1, 0, Varint(0)) + field(2, 0, Varint(0)))), true},
      {"eventfd semaphore 2", saved + eventfd_record(field(1, 0, Varint(97)) + eventfd(field(2, 0, Varint(2)))), true},
      {"eventfd count of ten bytes",
       saved + eventfd_record(field(1, 0, Varint(98)) + eventfd(field(1, 0, Varint(~std::uint64_t{0} - 1)))), true},
      {"eventfd semaphore before count",
       saved + eventfd_record(field(1, 0, Varint(99)) + eventfd(field(2, 0, Varint(1)) + field(1, 0, Varint(4)))),
       true},
      {"eventfd record with a field more",
       saved + eventfd_record(field(1, 0, Varint(100)) + eventfd("") + field(15, 0, Varint(1))), true},
      {"eventfd state with a field more",
       saved + eventfd_record(field(1, 0, Varint(101)) + eventfd(field(1, 0, Varint(2)) + field(3, 0, Varint(1)))),
       true},
      {"an eventfd with no id", eventfd_record(eventfd(field(1, 0, Varint(6)))) + saved, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string expected;
    ASSERT_TRUE(WithDecoded(c.payload, [&](const v1::Image& image) {
                  expected = EncodeOrDie(image);
                  return Status{};
                }).ok());
    std::size_t records = 0;
    ASSERT_TRUE(WithDecodedFds(c.payload, [&](const v1::Image& image, FdRecords fds) {
                  records = fds.size();
                  if (!fds.empty()) {
                    EXPECT_EQ(image.fds_size(), 0);
                  }
                  v1::Image joined = image;
                  for (const FdRecord& r : fds) {
                    v1::FdEntry* e = joined.add_fds();
                    e->set_fd(r.fd);
                    e->set_file(r.file);
                  }
                  EXPECT_EQ(EncodeOrDie(joined), expected);
                  return Status{};
                }).ok());
    EXPECT_EQ(records != 0, c.apart);
  }
  // A payload protobuf refuses is refused either way.
  const std::string cut = saved.substr(0, saved.size() - 1);
  EXPECT_FALSE(WithDecoded(cut, [](const v1::Image&) { return Status{}; }).ok());
  EXPECT_FALSE(WithDecodedFds(cut, [](const v1::Image&, FdRecords) { return Status{}; }).ok());
  // A root's name that is not UTF-8, beside fd records and eventfds read apart: refused either way, with the same
  // message and nothing logged (the strings are checked in the walk that finds the records, before protobuf reads
  // any).
  const std::string bad_name = field(v1::Image::kRootsFieldNumber, 2, field(1, 2, "\xc3\x28") + field(2, 0, Varint(1)));
  for (const std::string& payload : {saved + bad_name, bad_name + saved}) {
    Status whole = WithDecoded(payload, [](const v1::Image&) { return Status{}; });
    ::testing::internal::CaptureStderr();
    Status apart = WithDecodedFds(payload, [](const v1::Image&, FdRecords) { return Status{}; });
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // protobuf, given the string, would have logged it
    EXPECT_FALSE(whole.ok());
    EXPECT_EQ(apart.code, whole.code);
    EXPECT_EQ(apart.message, whole.message);
    EXPECT_NE(apart.message.find("roots"), std::string::npos) << apart.message;
  }
  // And a restore through the records is the world (LoadImage reads them apart).
  Result<std::string> framed = SaveImage(world);
  ASSERT_TRUE(framed.ok());
  World restored;
  Status s = LoadImage(framed.value(), &restored);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(Describe(restored), Describe(world));
}

// Claims of huge counts in a small payload fail at once: a length-delimited field can never claim more bytes than
// the payload holds, so nothing is allocated for the claim.
TEST(ImageCodecTest, HugeClaimsInASmallPayloadFailFast) {
  // files (field 6): one File claiming 2^31 bytes; and a File whose poll claims a packed column of 2^31 entries.
  const std::string huge_file = "\x32" + Varint(std::uint64_t{1} << 31) + std::string(16, '\0');
  std::string column = "\x0a" + Varint(std::uint64_t{1} << 31) + std::string(8, '\x01');  // EventPollState.files
  std::string poll = "\x32" + Varint(column.size()) + column;                             // File.eventpoll
  const std::string huge_column = "\x32" + Varint(poll.size()) + poll;
  for (const std::string& payload : {huge_file, huge_column}) {
    Result<v1::Image> image = Decode(payload);
    EXPECT_FALSE(image.ok());
    World w;
    EXPECT_FALSE(LoadImage(Frame(payload), &w).ok());
  }
}

TEST(ImageCodecTest, WriteAndReadAnImageFile) {
  World a, b;
  BuildWorld(a);
  char dir[] = "/tmp/epollcr-image-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/world.img";
  Status s = WriteImage(a, path);
  ASSERT_TRUE(s.ok()) << s.message;
  s = ReadImage(path, &b);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(Describe(b), Describe(a));
  ::unlink(path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace epollcr::image
