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

enum class Kind { kEpoll, kPipe, kEventFd, kSocket, kDup };

// The static kind of a name (carried through dup), as the parser sees it.
enum class NameKind { kEpoll, kPipeRead, kPipeWrite, kEventFd, kSocket };

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
    if (kind == Kind::kSocket) return {base + ".a", base + ".b"};
    return {base};
  }

  bool Free(Kind kind, const std::string& base) {
    for (const std::string& n : NamesOf(kind, base)) {
      auto it = names_.find(n);
      if (it != names_.end() && it->second.live) return false;
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
        target = NameOf({NameKind::kPipeRead, NameKind::kPipeWrite, NameKind::kEventFd, NameKind::kSocket});
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

  void Write() {
    std::string name = NameOf({NameKind::kPipeWrite, NameKind::kEventFd, NameKind::kSocket});
    if (At(name).kind == NameKind::kEventFd) {
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
    std::string name = NameOf({NameKind::kPipeRead, NameKind::kEventFd, NameKind::kSocket});
    std::string line = "read " + name;
    if (At(name).kind == NameKind::kEventFd) {
      static constexpr std::array<int, 4> kSizes = {4, 7, 8, 16};
      if (rng_.Percent(20)) line += " " + std::to_string(rng_.Pick(kSizes));
    } else if (rng_.Percent(60)) {
      static constexpr std::array<int, 6> kSizes = {0, 1, 10, 4096, 5000, 100000};
      line += " " + std::to_string(rng_.Pick(kSizes));
    }
    Emit(line);
  }

  void Shutdown() {
    std::string name = NameOf({NameKind::kSocket});
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
    const Choice choices[] = {{create, 0}, {4, 1}, {5, 2}, {18, 3}, {8, 4}, {4, 5},
                              {13, 6},     {10, 7}, {3, 8}, {18, 9}};
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
        if (!Create(rng_.Pick(kKinds))) Wait();
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
