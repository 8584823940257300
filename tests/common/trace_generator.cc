#include "trace_generator.h"

#include <array>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <utility>
#include <vector>

namespace epollcr::replay {
namespace {

// SplitMix64: small, fast and the same everywhere.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform enough in [0, n) for the small n used here.
  std::size_t Below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(Next() % n); }
  bool Percent(int p) { return static_cast<int>(Below(100)) < p; }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }
  template <typename T, std::size_t N>
  const T& Pick(const std::array<T, N>& v) {
    return v[Below(N)];
  }

 private:
  std::uint64_t state_;
};

enum class Kind { kEpoll, kPipe, kEventFd, kSocket, kDup, kTimerFd, kSignalFd, kUdp, kFifo };

// The static kind of a name (carried through dup), as the parser sees it.
enum class NameKind {
  kEpoll,
  kPipeRead,
  kPipeWrite,
  kEventFd,
  kSocket,
  kTimerFd,
  kSignalFd,
  kUdp,
  kFifoRead,
  kFifoWrite,
};

struct Name {
  std::string name;
  bool live = false;
  bool defined = false;
  NameKind kind = NameKind::kEpoll;
};

std::string Hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

class Generator {
 public:
  Generator(std::uint64_t seed, const GeneratorOptions& options) : rng_(seed), options_(options) {
    for (int i = 0; i < 6; ++i) bases_.push_back({Kind::kEpoll, "e" + std::to_string(i)});
    for (int i = 0; i < 3; ++i) bases_.push_back({Kind::kPipe, "p" + std::to_string(i)});
    for (int i = 0; i < 3; ++i) bases_.push_back({Kind::kEventFd, "f" + std::to_string(i)});
    for (int i = 0; i < 2; ++i) bases_.push_back({Kind::kSocket, "s" + std::to_string(i)});
    for (int i = 0; i < 3; ++i) bases_.push_back({Kind::kDup, "d" + std::to_string(i)});
    if (options_.kernel_only_kinds) {
      for (int i = 0; i < 2; ++i) bases_.push_back({Kind::kTimerFd, "t" + std::to_string(i)});
      for (int i = 0; i < 2; ++i) bases_.push_back({Kind::kSignalFd, "g" + std::to_string(i)});
      bases_.push_back({Kind::kUdp, "u0"});
      bases_.push_back({Kind::kFifo, "q0"});
    }
  }

  std::string Run() {
    out_ = "# generated trace, seed " + Hex(seed_for_header_) + "\n";
    // Start with a world worth poking at.
    Create(Kind::kEpoll);
    Create(Kind::kEpoll);
    for (int i = 2; i < options_.ops; ++i) Step();
    return out_;
  }

  void set_seed_for_header(std::uint64_t seed) { seed_for_header_ = seed; }

 private:
  void Emit(const std::string& line) { out_ += line + "\n"; }

  Name& At(const std::string& name) {
    Name& n = names_[name];
    n.name = name;
    return n;
  }

  std::vector<std::string> Defined(bool live_only, bool epoll_only) {
    std::vector<std::string> v;
    for (auto& [key, n] : names_) {
      if (!n.defined || (live_only && !n.live) || (epoll_only && n.kind != NameKind::kEpoll)) continue;
      v.push_back(key);
    }
    return v;
  }

  // A live name of one of `kinds` most of the time; any defined name otherwise.
  std::string NameOf(std::initializer_list<NameKind> kinds) {
    std::vector<std::string> v;
    for (auto& [key, n] : names_) {
      if (!n.defined || !n.live) continue;
      for (NameKind k : kinds) {
        if (n.kind == k) v.push_back(key);
      }
    }
    if (!v.empty() && !rng_.Percent(10)) return rng_.Pick(v);
    return AnyName();
  }

  // A defined name: live most of the time, of any kind.
  std::string AnyName() {
    std::vector<std::string> live = Defined(true, false);
    if (!live.empty() && !rng_.Percent(8)) return rng_.Pick(live);
    return rng_.Pick(Defined(false, false));
  }

  std::string EpollName() {
    std::vector<std::string> live = Defined(true, true);
    if (!live.empty() && !rng_.Percent(6)) return rng_.Pick(live);
    std::vector<std::string> any = Defined(false, true);
    if (!any.empty() && !rng_.Percent(50)) return rng_.Pick(any);
    return AnyName();
  }

  std::vector<std::string> NamesOf(Kind kind, const std::string& base) {
    if (kind == Kind::kPipe) return {base + ".r", base + ".w"};
    if (kind == Kind::kSocket || kind == Kind::kUdp) return {base + ".a", base + ".b"};
    if (kind == Kind::kFifo) return {base + ".r", base + ".w"};
    return {base};
  }

  bool Live(const std::string& name) {
    auto it = names_.find(name);
    return it != names_.end() && it->second.live;
  }

  // Every name the kind makes is free; for a FIFO, one end is enough (`fifo F r`, `fifo F w`).
  bool Free(Kind kind, const std::string& base) {
    const std::vector<std::string> names = NamesOf(kind, base);
    if (kind == Kind::kFifo) return !Live(names[0]) || !Live(names[1]);
    for (const std::string& n : names) {
      if (Live(n)) return false;
    }
    return true;
  }

  bool Create(Kind kind) {
    std::vector<std::string> free;
    for (auto& [k, base] : bases_) {
      if (k == kind && Free(kind, base)) free.push_back(base);
    }
    if (free.empty()) return false;
    const std::string& base = rng_.Pick(free);
    switch (kind) {
      case Kind::kEpoll:
        Emit("epoll " + base);
        break;
      case Kind::kPipe:
        Emit("pipe " + base);
        break;
      case Kind::kSocket:
        Emit("socketpair " + base);
        break;
      case Kind::kEventFd: {
        static constexpr std::array<std::uint64_t, 6> kInits = {0, 0, 1, 2, 0xfffffffe, 0xffffffff};
        std::string line = "eventfd " + base;
        if (rng_.Percent(40)) line += " " + std::to_string(rng_.Pick(kInits));
        if (rng_.Percent(30)) line += " semaphore";
        Emit(line);
        break;
      }
      case Kind::kTimerFd:
        Emit("timerfd " + base);
        break;
      case Kind::kSignalFd:
        Emit("signalfd " + base + " " + std::to_string(1 + rng_.Below(3)));
        break;
      case Kind::kUdp:
        Emit("udp " + base);
        break;
      case Kind::kFifo: {
        // Both ends, or the one that is free, or now and then one end alone (a reader with no writer yet, a writer
        // with no reader: ENXIO).
        const bool read_free = !Live(base + ".r");
        const bool write_free = !Live(base + ".w");
        std::string ends = read_free && write_free ? (rng_.Percent(70) ? "" : rng_.Percent(50) ? " r" : " w")
                           : read_free             ? " r"
                                                   : " w";
        Emit("fifo " + base + ends);
        for (const std::string& n : NamesOf(kind, base)) {
          const bool reader = n.ends_with(".r");
          if (ends == (reader ? " w" : " r")) continue;
          Name& name = At(n);
          name.defined = true;
          name.live = true;
          name.kind = reader ? NameKind::kFifoRead : NameKind::kFifoWrite;
        }
        return true;
      }
      case Kind::kDup: {
        std::string source = AnyName();
        Name src = At(source);
        Emit("dup " + source + " " + base);
        Name& d = At(base);
        d.defined = true;
        d.live = true;
        d.kind = src.kind;
        return true;
      }
    }
    for (const std::string& n : NamesOf(kind, base)) {
      Name& name = At(n);
      name.defined = true;
      name.live = true;
      switch (kind) {
        case Kind::kEpoll: name.kind = NameKind::kEpoll; break;
        case Kind::kPipe: name.kind = n.ends_with(".r") ? NameKind::kPipeRead : NameKind::kPipeWrite; break;
        case Kind::kEventFd: name.kind = NameKind::kEventFd; break;
        case Kind::kTimerFd: name.kind = NameKind::kTimerFd; break;
        case Kind::kSignalFd: name.kind = NameKind::kSignalFd; break;
        case Kind::kUdp: name.kind = NameKind::kUdp; break;
        default: name.kind = NameKind::kSocket; break;
      }
    }
    return true;
  }

  std::string Events() {
    if (rng_.Percent(5)) {
      static constexpr std::array<std::uint64_t, 6> kRaw = {0, 0x1, 0x5, 0x08000001, 0x4000, 0x80000004};
      return Hex(rng_.Pick(kRaw) | (options_.exclusive && rng_.Percent(10) ? 0x10000000 : 0));
    }
    std::vector<std::string> parts;
    if (rng_.Percent(55)) parts.push_back("in");
    if (rng_.Percent(45)) parts.push_back("out");
    static constexpr std::array<const char*, 9> kRare = {"pri",    "err",    "hup", "rdnorm", "rdband",
                                                         "wrnorm", "wrband", "msg", "rdhup"};
    for (const char* rare : kRare) {
      if (rng_.Percent(rare == std::string("rdhup") ? 20 : 6)) parts.push_back(rare);
    }
    if (rng_.Percent(30)) parts.push_back("et");
    if (rng_.Percent(15)) parts.push_back("oneshot");
    if (rng_.Percent(5) && options_.exclusive) parts.push_back("exclusive");
    if (rng_.Percent(3)) parts.push_back("wakeup");
    if (parts.empty()) return "0";
    std::string s;
    for (const std::string& p : parts) s += (s.empty() ? "" : "|") + p;
    return s;
  }

  std::string Data() {
    if (rng_.Percent(60)) return std::to_string(rng_.Below(16));
    return rng_.Percent(50) ? std::to_string(rng_.Next()) : Hex(rng_.Next());
  }

  void Ctl(const std::string& verb) {
    std::string e;
    std::string target;
    if (verb != "add" && !added_.empty() && rng_.Percent(80)) {
      std::tie(e, target) = rng_.Pick(added_);
    } else {
      e = EpollName();
      if (options_.nested_epolls && rng_.Percent(20)) {
        target = EpollName();
      } else {
        target = NameOf({NameKind::kPipeRead, NameKind::kPipeWrite, NameKind::kEventFd, NameKind::kSocket,
                         NameKind::kTimerFd, NameKind::kSignalFd, NameKind::kUdp, NameKind::kFifoRead,
                         NameKind::kFifoWrite});
      }
    }
    if (verb == "add") added_.emplace_back(e, target);
    if (verb == "del") {
      Emit("del " + e + " " + target);
      return;
    }
    std::string line = verb + " " + e + " " + target + " " + Events();
    if (rng_.Percent(70)) line += " " + Data();
    Emit(line);
  }

  // A UDP end the generator may write to: one of a pair (not a dup) whose other end is open. A datagram towards a
  // closed end brings back an ICMP error, which the kernel rate-limits: not deterministic over many traces.
  bool UdpWriteIsSafe(const std::string& name) {
    const Name& n = At(name);
    if (n.kind != NameKind::kUdp || !n.live) return true;
    if (!name.starts_with("u") || !(name.ends_with(".a") || name.ends_with(".b"))) return false;  // a dup
    return Live(name.substr(0, name.size() - 1) + (name.ends_with(".a") ? "b" : "a"));
  }

  void Write() {
    std::string name = NameOf({NameKind::kPipeWrite, NameKind::kEventFd, NameKind::kSocket, NameKind::kUdp,
                               NameKind::kFifoWrite});
    if (options_.kernel_only_kinds && rng_.Percent(3)) name = NameOf({NameKind::kTimerFd, NameKind::kSignalFd});
    if (!UdpWriteIsSafe(name)) {
      Wait();
      return;
    }
    if (At(name).kind == NameKind::kUdp) {
      // Small datagrams, so that the other end never runs out of room; now and then one too long (EMSGSIZE).
      static constexpr std::array<std::uint64_t, 7> kDatagrams = {0, 1, 1, 10, 100, 1000, 70000};
      std::uint64_t size = rng_.Pick(kDatagrams);
      if (size > 1000 && !rng_.Percent(25)) size = 1;
      Emit("write " + name + " " + std::to_string(size));
      return;
    }
    if (At(name).kind == NameKind::kEventFd || At(name).kind == NameKind::kTimerFd) {
      static constexpr std::array<std::uint64_t, 10> kValues = {
          0, 1, 1, 2, 3, 7, 0xfffffffffffffffeULL, 0xffffffffffffffffULL, 0xfffffffffffffffdULL, 0x7fffffffffffffffULL};
      std::uint64_t v = rng_.Pick(kValues);
      Emit("write " + name + " " + (rng_.Percent(50) ? std::to_string(v) : Hex(v)));
      return;
    }
    static constexpr std::array<std::uint64_t, 16> kSizes = {0,    1,    1,    2,    3,    10,    100,   512,
                                                             4095, 4096, 4097, 8192, 9000, 65536, 65537, 70000};
    std::uint64_t size = rng_.Pick(kSizes);
    // Keep the big ones rare: they are slow to copy and fill buffers fast.
    if (size > 9000 && !rng_.Percent(25)) size = 1;
    Emit("write " + name + " " + std::to_string(size));
  }

  void Read() {
    std::string name = NameOf({NameKind::kPipeRead, NameKind::kEventFd, NameKind::kSocket, NameKind::kTimerFd,
                               NameKind::kSignalFd, NameKind::kUdp, NameKind::kFifoRead});
    std::string line = "read " + name;
    if (At(name).kind == NameKind::kEventFd || At(name).kind == NameKind::kTimerFd) {
      static constexpr std::array<int, 4> kSizes = {4, 7, 8, 16};
      if (rng_.Percent(20)) line += " " + std::to_string(rng_.Pick(kSizes));
    } else if (At(name).kind == NameKind::kSignalFd) {
      static constexpr std::array<int, 3> kSizes = {64, 128, 256};
      if (rng_.Percent(30)) line += " " + std::to_string(rng_.Pick(kSizes));
    } else if (rng_.Percent(60)) {
      static constexpr std::array<int, 6> kSizes = {0, 1, 10, 4096, 5000, 100000};
      line += " " + std::to_string(rng_.Pick(kSizes));
    }
    Emit(line);
  }

  void Shutdown() {
    std::string name = NameOf({NameKind::kSocket, NameKind::kUdp});
    static constexpr std::array<const char*, 3> kHow = {"rd", "wr", "rdwr"};
    Emit("shutdown " + name + " " + rng_.Pick(kHow));
  }

  void Wait() {
    static constexpr std::array<int, 10> kMax = {1, 1, 2, 2, 3, 4, 8, 8, 64, 1000};
    int max = rng_.Pick(kMax);
    if (rng_.Percent(2)) max = rng_.Percent(50) ? 0 : -1;
    std::string line = "wait " + EpollName() + " " + std::to_string(max);
    if (rng_.Percent(50)) line += " 0";
    Emit(line);
  }

  // Only times that are deterministic: already passed (it fires at once, and settime waits for it), 0 (disarm), or
  // far off. An interval only longer than the time since boot.
  void SetTime() {
    static constexpr std::array<const char*, 5> kTimes = {"1 abs", "1 abs", "0", "1 1000000000000000000 abs",
                                                          "1000000000000"};
    // The parser takes only a timerfd's name (live or dead).
    std::vector<std::string> timers;
    std::vector<std::string> live;
    for (auto& [key, n] : names_) {
      if (!n.defined || n.kind != NameKind::kTimerFd) continue;
      timers.push_back(key);
      if (n.live) live.push_back(key);
    }
    if (timers.empty()) {
      if (!Create(Kind::kTimerFd)) Wait();
      return;
    }
    Emit("settime " + (!live.empty() && !rng_.Percent(10) ? rng_.Pick(live) : rng_.Pick(timers)) + " " +
         rng_.Pick(kTimes));
  }

  void Close() {
    std::string name = AnyName();
    Emit("close " + name);
    At(name).live = false;
  }

  void Step() {
    if (options_.checkpoint_percent > 0 && rng_.Percent(options_.checkpoint_percent)) {
      Emit("checkpoint");
      return;
    }
    // Weights: creation is frequent while the world is small.
    const int live = static_cast<int>(Defined(true, false).size());
    const int create = live < 4 ? 40 : live < 8 ? 12 : 5;
    struct Choice {
      int weight;
      int id;
    };
    const int kernel_only = options_.kernel_only_kinds ? 3 : 0;
    const Choice choices[] = {{create, 0}, {4, 1}, {5, 2}, {18, 3}, {8, 4}, {4, 5}, {13, 6}, {10, 7}, {3, 8},
                              {18, 9},     {kernel_only, 10},   {kernel_only, 11}};
    int total = 0;
    for (const Choice& c : choices) total += c.weight;
    int r = static_cast<int>(rng_.Below(static_cast<std::size_t>(total)));
    int id = 0;
    for (const Choice& c : choices) {
      if (r < c.weight) {
        id = c.id;
        break;
      }
      r -= c.weight;
    }
    switch (id) {
      case 0: {
        static constexpr std::array<Kind, 6> kKinds = {Kind::kEpoll,   Kind::kEpoll,  Kind::kPipe,
                                                       Kind::kEventFd, Kind::kSocket, Kind::kEventFd};
        static constexpr std::array<Kind, 4> kKernelOnlyKinds = {Kind::kTimerFd, Kind::kSignalFd, Kind::kUdp,
                                                                 Kind::kFifo};
        const Kind kind = options_.kernel_only_kinds && rng_.Percent(40) ? rng_.Pick(kKernelOnlyKinds)
                                                                          : rng_.Pick(kKinds);
        if (!Create(kind)) Wait();
        break;
      }
      case 1:
        if (!Create(Kind::kDup)) Close();
        break;
      case 2: Close(); break;
      case 3: Ctl("add"); break;
      case 4: Ctl("mod"); break;
      case 5: Ctl("del"); break;
      case 6: Write(); break;
      case 7: Read(); break;
      case 8: Shutdown(); break;
      case 10: SetTime(); break;
      case 11: Emit("raise " + std::to_string(1 + rng_.Below(3))); break;
      default: Wait(); break;
    }
  }

  Rng rng_;
  GeneratorOptions options_;
  std::uint64_t seed_for_header_ = 0;
  std::vector<std::pair<Kind, std::string>> bases_;
  std::map<std::string, Name> names_;
  std::vector<std::pair<std::string, std::string>> added_;
  std::string out_;
};

}  // namespace

std::string GenerateTrace(std::uint64_t seed, const GeneratorOptions& options) {
  Generator generator(seed, options);
  generator.set_seed_for_header(seed);
  return generator.Run();
}

}  // namespace epollcr::replay
