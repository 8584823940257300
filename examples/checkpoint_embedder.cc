// An embedding program checkpoints its own object graph and epollcr's in one Boost archive.
//
// The program owns an EventPoll, an eventfd and a file type of its own (TickTimer, readable once it has ticked up
// to its deadline), plus plain data of its own. It registers TickTimer by name, archives everything together, loads
// it into a second App, and checks that both carry on identically. Exit status 0 only if they do.
#include <epollcr/boost_world.h>
#include <epollcr/epollcr.h>

#include <boost/serialization/string.hpp>
#include <cstdio>
#include <sstream>
#include <string>

namespace {

using namespace epollcr;

class TickTimer final : public SavableFile {
 public:
  static constexpr std::string_view kKind = "example.tick-timer";
  TickTimer(std::uint64_t now, std::uint64_t deadline) : now_(now), deadline_(deadline) {}

  void Tick() {
    MutexLock op(op_mu_);  // a state change and its wake-up are one step for a snapshot
    bool fired;
    {
      MutexLock lock(mu_);
      fired = ++now_ == deadline_;
    }
    if (fired) Notify(kEventIn);
  }

  EventMask Readiness(EventMask mask) override {
    MutexLock lock(mu_);
    return (now_ >= deadline_ ? kEventIn : 0) & mask;
  }
  std::string_view TypeName() const override { return "tick-timer"; }
  Mutex* MutationLock() const override { return &op_mu_; }
  std::string_view StateKind() const override { return kKind; }
  Result<std::string> SaveState() const override {
    MutexLock lock(mu_);
    return std::to_string(now_) + " " + std::to_string(deadline_);
  }
  static Result<std::shared_ptr<File>> Load(std::string_view state) {
    std::istringstream in{std::string(state)};
    std::uint64_t now = 0, deadline = 0;
    if (!(in >> now >> deadline) || now > deadline + 1000000) return Errno(EINVAL);
    return std::shared_ptr<File>(MakeFile<TickTimer>(now, deadline));
  }

 private:
  mutable Mutex op_mu_ EPOLLCR_ACQUIRED_BEFORE(mu_);  // epollcr's annotated mutex: clang checks the guards
  mutable Mutex mu_;
  std::uint64_t now_ EPOLLCR_GUARDED_BY(mu_);
  std::uint64_t deadline_ EPOLLCR_GUARDED_BY(mu_);
};

struct App {
  std::string name;
  std::uint64_t handled = 0;
  std::shared_ptr<EventPoll> poll;
  std::shared_ptr<TickTimer> timer;
  std::shared_ptr<EventFd> wakeup;

  template <typename Ar>
  void save(Ar& ar, unsigned) const {
    World world;
    world.roots = {{"poll", poll}, {"timer", timer}, {"wakeup", wakeup}};
    ar << BOOST_SERIALIZATION_NVP(name) << BOOST_SERIALIZATION_NVP(handled) << BOOST_SERIALIZATION_NVP(world);
  }
  template <typename Ar>
  void load(Ar& ar, unsigned) {
    World world;
    ar >> BOOST_SERIALIZATION_NVP(name) >> BOOST_SERIALIZATION_NVP(handled) >> BOOST_SERIALIZATION_NVP(world);
    poll = std::dynamic_pointer_cast<EventPoll>(world.roots.at("poll"));
    timer = std::dynamic_pointer_cast<TickTimer>(world.roots.at("timer"));
    wakeup = std::dynamic_pointer_cast<EventFd>(world.roots.at("wakeup"));
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()

  // One turn of the program's event loop; returns what it saw.
  std::string Turn() {
    timer->Tick();
    Event events[4];
    Result<int> n = poll->ReadEvents(events, 4);
    std::string seen;
    for (int i = 0; n.ok() && i < n.value(); ++i) {
      seen += (events[i].Data() == 1 ? "timer " : "wakeup ");
      if (events[i].Data() == 2) (void)wakeup->ReadValue();
      ++handled;
    }
    return seen.empty() ? "-" : seen;
  }
};

template <typename Oar, typename Iar>
bool RoundTrip(const char* format) {
  App a;
  a.name = "demo";
  a.poll = EventPoll::Create();
  a.timer = MakeFile<TickTimer>(0, 3);
  a.wakeup = EventFd::Create();
  if (a.poll->AddEntry({a.timer.get(), 10}, EntryFlags::kOneShot, kEventIn, 1) ||
      a.poll->AddEntry({a.wakeup.get(), 11}, EntryFlags::kEdgeTriggered, kEventIn, 2)) {
    return false;
  }
  (void)a.wakeup->WriteValue(1);
  a.Turn();

  std::stringstream archive;
  {
    Oar out(archive);
    out << boost::serialization::make_nvp("app", static_cast<const App&>(a));
  }
  App b;
  try {
    Iar in(archive);
    in >> boost::serialization::make_nvp("app", b);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: load failed: %s\n", format, e.what());
    return false;
  }

  bool same = a.name == b.name && a.handled == b.handled;
  for (int turn = 0; turn < 4; ++turn) {
    if (turn == 1) {
      (void)a.wakeup->WriteValue(1);
      (void)b.wakeup->WriteValue(1);
    }
    const std::string sa = a.Turn(), sb = b.Turn();
    std::printf("%-12s turn %d: original %-14s restored %s\n", format, turn, sa.c_str(), sb.c_str());
    same = same && sa == sb;
  }
  return same && a.handled == b.handled;
}

}  // namespace

int main() {
  if (RegisterFileType(std::string(TickTimer::kKind), TickTimer::Load)) {
    std::fprintf(stderr, "could not register %s\n", std::string(TickTimer::kKind).c_str());
    return 1;
  }
  const bool ok = RoundTrip<boost::archive::text_oarchive, boost::archive::text_iarchive>("boost-text") &&
                  RoundTrip<boost::archive::xml_oarchive, boost::archive::xml_iarchive>("boost-xml") &&
                  RoundTrip<boost::archive::binary_oarchive, boost::archive::binary_iarchive>("boost-binary");
  std::printf("%s\n", ok ? "restored app behaves identically" : "DIFFERENT");
  return ok ? 0 : 1;
}
