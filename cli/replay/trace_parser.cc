#include "replay/trace_parser.h"

#include <algorithm>
#include <climits>
#include <unordered_map>
#include <vector>

#include "replay/event_names.h"

namespace epollcr::replay {
namespace {

std::vector<std::string_view> SplitWords(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// The parser's view of one name as the file is read top to bottom.
struct NameState {
  bool live = false;  // defined and not closed since
  FileKind kind = FileKind::kEpoll;
  int defined_line = 0;
};

// Usage strings, for arity errors.
struct VerbSyntax {
  std::string_view word;
  Verb verb;
  std::size_t min_args;
  std::size_t max_args;
  std::string_view usage;
};

constexpr VerbSyntax kSyntax[] = {
    {"epoll", Verb::kEpoll, 1, 1, "epoll E"},
    {"pipe", Verb::kPipe, 1, 1, "pipe P"},
    {"eventfd", Verb::kEventFd, 1, 3, "eventfd F [INIT] [semaphore]"},
    {"socketpair", Verb::kSocketPair, 1, 1, "socketpair S"},
    {"dup", Verb::kDup, 2, 2, "dup NAME NEW"},
    {"close", Verb::kClose, 1, 2, "close NAME [rst]"},
    {"add", Verb::kAdd, 3, 4, "add E NAME EVENTS [DATA]"},
    {"mod", Verb::kMod, 3, 4, "mod E NAME EVENTS [DATA]"},
    {"del", Verb::kDel, 2, 2, "del E NAME"},
    {"write", Verb::kWrite, 2, 2, "write NAME N"},
    {"read", Verb::kRead, 1, 2, "read NAME [N]"},
    {"shutdown", Verb::kShutdown, 2, 2, "shutdown NAME rd|wr|rdwr"},
    {"wait", Verb::kWait, 2, 3, "wait E MAX [TIMEOUT_MS]"},
    {"checkpoint", Verb::kCheckpoint, 0, 0, "checkpoint"},
    {"timerfd", Verb::kTimerFd, 1, 1, "timerfd T"},
    {"settime", Verb::kSetTime, 2, 4, "settime T NS [INTERVAL_NS] [abs]"},
    {"signalfd", Verb::kSignalFd, 2, 2, "signalfd S SIG"},
    {"raise", Verb::kRaise, 1, 1, "raise SIG"},
    {"listen", Verb::kListen, 1, 1, "listen L"},
    {"connect", Verb::kConnect, 2, 2, "connect C L"},
    {"accept", Verb::kAccept, 2, 2, "accept A L"},
    {"udp", Verb::kUdp, 1, 1, "udp U"},
    {"fifo", Verb::kFifo, 1, 2, "fifo F [r|w]"},
};

class Parser {
 public:
  explicit Parser(std::string_view file) { trace_.file = std::string(file); }

  Result<Trace> Run(std::string_view text) {
    // At most one operation a line: the operations are placed once, not copied at each growth.
    trace_.ops.reserve(static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
    int line_number = 0;
    std::size_t pos = 0;
    while (pos <= text.size() && error_.ok()) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(pos, end - pos);
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      ParseLine(line_number, line);
      if (end == text.size()) break;
      pos = end + 1;
    }
    if (!error_.ok()) return std::move(error_);
    return std::move(trace_);
  }

 private:
  bool Fail(std::string reason) {
    if (error_.ok()) error_ = Status::Error(EINVAL, trace_.file + ":" + std::to_string(line_) + ": " + reason);
    return false;
  }

  void ParseLine(int line_number, std::string_view line) {
    line_ = line_number;
    std::vector<std::string_view> words = SplitWords(line);
    if (words.empty() || words[0].front() == '#') return;

    const VerbSyntax* syntax = nullptr;
    for (const VerbSyntax& s : kSyntax) {
      if (s.word == words[0]) syntax = &s;
    }
    if (syntax == nullptr) {
      Fail("unknown verb " + Quote(words[0]));
      return;
    }
    std::vector<std::string_view> args(words.begin() + 1, words.end());
    if (args.size() < syntax->min_args || args.size() > syntax->max_args) {
      Fail("wrong number of arguments (" + std::to_string(args.size()) + "); usage: " + std::string(syntax->usage));
      return;
    }
    Op op;
    op.line = line_number;
    op.verb = syntax->verb;
    if (ParseArgs(op, args)) {
      if (MakesHostObjects(op.verb)) trace_.host_objects = true;
      trace_.ops.push_back(std::move(op));
    }
  }

  bool ParseArgs(Op& op, const std::vector<std::string_view>& args) {
    switch (op.verb) {
      case Verb::kEpoll:
        return Define(args[0], FileKind::kEpoll, &op.defines[0]);
      case Verb::kPipe:
        return CheckName(args[0]) && Define(std::string(args[0]) + ".r", FileKind::kPipeRead, &op.defines[0]) &&
               Define(std::string(args[0]) + ".w", FileKind::kPipeWrite, &op.defines[1]);
      case Verb::kSocketPair:
        return CheckName(args[0]) && Define(std::string(args[0]) + ".a", FileKind::kSocket, &op.defines[0]) &&
               Define(std::string(args[0]) + ".b", FileKind::kSocket, &op.defines[1]);
      case Verb::kEventFd:
        return ParseEventFd(op, args);
      case Verb::kDup: {
        if (!Use(args[0], &op.target)) return false;
        return Define(args[1], names_[std::string(args[0])].kind, &op.defines[0]);
      }
      case Verb::kClose:
        if (!Use(args[0], &op.target)) return false;
        op.kind = names_[std::string(args[0])].kind;
        if (args.size() == 2) {
          if (args[1] != "rst") return Fail("unexpected " + Quote(args[1]) + "; usage: close NAME [rst]");
          if (!NeedKind(args[0], FileKind::kTcp, "close NAME rst", "a TCP socket (connect, accept)")) return false;
          op.reset = true;
        }
        names_[std::string(args[0])].live = false;
        return true;
      case Verb::kAdd:
      case Verb::kMod:
        if (!Use(args[0], &op.epoll) || !Use(args[1], &op.target)) return false;
        if (!ParseEventsArg(args[2], &op.events)) return false;
        if (args.size() == 4 && !Unsigned(args[3], UINT64_MAX, "DATA", &op.data)) return false;
        if (op.verb == Verb::kAdd) ++trace_.add_count;
        return true;
      case Verb::kDel:
        return Use(args[0], &op.epoll) && Use(args[1], &op.target);
      case Verb::kWrite: {
        if (!Use(args[0], &op.target)) return false;
        op.kind = names_[std::string(args[0])].kind;
        op.has_number = true;
        // An eventfd (or timerfd) write passes a 64-bit value; any other write sends that many bytes.
        const std::uint64_t max = IsCounterKind(op.kind) ? UINT64_MAX : kMaxIoSize;
        return Unsigned(args[1], max, "N", &op.number);
      }
      case Verb::kRead:
        if (!Use(args[0], &op.target)) return false;
        op.kind = names_[std::string(args[0])].kind;
        op.number = IsCounterKind(op.kind)                ? 8
                    : op.kind == FileKind::kSignalFd ? kSignalInfoSize
                                                     : kDefaultReadSize;
        if (args.size() == 2) {
          op.has_number = true;
          return Unsigned(args[1], kMaxIoSize, "N", &op.number);
        }
        return true;
      case Verb::kShutdown:
        if (!Use(args[0], &op.target)) return false;
        op.kind = names_[std::string(args[0])].kind;
        if (args[1] == "rd") {
          op.how = kShutRd;
        } else if (args[1] == "wr") {
          op.how = kShutWr;
        } else if (args[1] == "rdwr") {
          op.how = kShutRdWr;
        } else {
          return Fail("bad shutdown mode " + Quote(args[1]) + ": expected rd, wr or rdwr");
        }
        return true;
      case Verb::kWait: {
        if (!Use(args[0], &op.epoll)) return false;
        std::int64_t value = 0;
        if (!Signed(args[1], "MAX", &value)) return false;
        op.max = static_cast<int>(value);
        if (args.size() == 3) {
          if (!Signed(args[2], "TIMEOUT_MS", &value)) return false;
          op.timeout_ms = static_cast<int>(value);
        }
        return true;
      }
      case Verb::kCheckpoint:
        return true;
      case Verb::kTimerFd:
        return Define(args[0], FileKind::kTimerFd, &op.defines[0]);
      case Verb::kSetTime:
        return ParseSetTime(op, args);
      case Verb::kSignalFd:
        return Define(args[0], FileKind::kSignalFd, &op.defines[0]) &&
               Unsigned(args[1], kTraceSignals, "SIG", &op.number) && SignalNumber(op.number);
      case Verb::kRaise:
        return Unsigned(args[0], kTraceSignals, "SIG", &op.number) && SignalNumber(op.number);
      case Verb::kListen:
        return Define(args[0], FileKind::kListener, &op.defines[0]);
      case Verb::kConnect:
      case Verb::kAccept: {
        const std::string usage = op.verb == Verb::kConnect ? "connect C L" : "accept A L";
        if (!Use(args[1], &op.target) || !NeedKind(args[1], FileKind::kListener, usage, "a listener (listen)")) {
          return false;
        }
        return Define(args[0], FileKind::kTcp, &op.defines[0]);
      }
      case Verb::kUdp:
        return CheckName(args[0]) && Define(std::string(args[0]) + ".a", FileKind::kUdp, &op.defines[0]) &&
               Define(std::string(args[0]) + ".b", FileKind::kUdp, &op.defines[1]);
      case Verb::kFifo: {
        if (!CheckName(args[0])) return false;
        op.fifo = std::string(args[0]);
        const std::string_view ends = args.size() == 2 ? args[1] : "rw";
        if (ends != "rw" && ends != "r" && ends != "w") {
          return Fail("unexpected " + Quote(ends) + "; usage: fifo F [r|w]");
        }
        if (ends != "w" && !Define(op.fifo + ".r", FileKind::kFifoRead, &op.defines[0])) return false;
        return ends == "r" || Define(op.fifo + ".w", FileKind::kFifoWrite, &op.defines[1]);
      }
    }
    return Fail("internal error: unhandled verb");
  }

  bool ParseSetTime(Op& op, const std::vector<std::string_view>& args) {
    if (!Use(args[0], &op.target) ||
        !NeedKind(args[0], FileKind::kTimerFd, "settime T NS [INTERVAL_NS] [abs]", "a timerfd")) {
      return false;
    }
    op.kind = FileKind::kTimerFd;
    if (!Unsigned(args[1], UINT64_MAX, "NS", &op.number)) return false;
    std::size_t i = 2;
    if (i < args.size() && args[i] != "abs") {
      if (!Unsigned(args[i], UINT64_MAX, "INTERVAL_NS", &op.interval)) return false;
      ++i;
    }
    if (i < args.size()) {
      if (args[i] != "abs") return Fail("unexpected " + Quote(args[i]) + "; usage: settime T NS [INTERVAL_NS] [abs]");
      op.absolute = true;
      ++i;
    }
    if (i < args.size()) return Fail("unexpected " + Quote(args[i]) + "; usage: settime T NS [INTERVAL_NS] [abs]");
    return true;
  }

  bool SignalNumber(std::uint64_t signal) {
    if (signal == 0) return Fail("SIG 0 is not a trace signal: they are 1 to " + std::to_string(kTraceSignals));
    return true;
  }

  // The kernel-only verbs check the kind of the name they act on: its file is a kernel object of that kind in both
  // engines, whatever else the trace did.
  bool NeedKind(std::string_view name, FileKind kind, std::string_view usage, std::string_view what) {
    const FileKind actual = names_[std::string(name)].kind;
    if (actual == kind) return true;
    const std::string_view actual_name = FileKindName(actual);
    const bool vowel = actual_name.find_first_of("aeio") == 0;
    return Fail(std::string(usage) + ": " + Quote(name) + (vowel ? " is an " : " is a ") + std::string(actual_name) +
                ", not " + std::string(what));
  }

  bool ParseEventFd(Op& op, const std::vector<std::string_view>& args) {
    if (!Define(args[0], FileKind::kEventFd, &op.defines[0])) return false;
    std::size_t i = 1;
    if (i < args.size() && args[i] != "semaphore") {
      if (!Unsigned(args[i], kMaxEventFdInit, "INIT", &op.number)) return false;
      ++i;
    }
    if (i < args.size()) {
      if (args[i] != "semaphore") return Fail("unexpected " + Quote(args[i]) + "; usage: eventfd F [INIT] [semaphore]");
      op.semaphore = true;
      ++i;
    }
    if (i < args.size()) return Fail("unexpected " + Quote(args[i]) + "; usage: eventfd F [INIT] [semaphore]");
    return true;
  }

  bool CheckName(std::string_view name) {
    if (!IsValidName(name)) return Fail("bad name " + Quote(name) + ": names match [A-Za-z_][A-Za-z0-9_.]*");
    return true;
  }

  NameId IdOf(const std::string& name) {
    auto [it, inserted] = ids_.try_emplace(name, static_cast<NameId>(trace_.names.size()));
    if (inserted) trace_.names.push_back(name);
    return it->second;
  }

  // A name being created: it must not be live (a closed name may be defined again).
  bool Define(std::string_view name, FileKind kind, NameId* id) {
    if (!CheckName(name)) return false;
    NameState& state = names_[std::string(name)];
    if (state.live) {
      return Fail("name " + Quote(name) + " is already defined (line " + std::to_string(state.defined_line) +
                  ") and not closed");
    }
    state = NameState{true, kind, line_};
    *id = IdOf(std::string(name));
    return true;
  }

  // A name being used: it must have been defined (it may have been closed since: the op then gets fd -1).
  bool Use(std::string_view name, NameId* id) {
    if (!CheckName(name)) return false;
    if (!names_.contains(std::string(name))) return Fail("name " + Quote(name) + " is not defined");
    *id = IdOf(std::string(name));
    return true;
  }

  bool Unsigned(std::string_view token, std::uint64_t max, std::string_view what, std::uint64_t* out) {
    std::optional<std::uint64_t> value = ParseUnsigned(token, max);
    if (!value) {
      if (ParseUnsigned(token, UINT64_MAX)) {
        return Fail(std::string(what) + " " + std::string(token) + " is above " + std::to_string(max));
      }
      return Fail("bad number " + Quote(token) + " for " + std::string(what) +
                  ": expected decimal or 0x hex");
    }
    *out = *value;
    return true;
  }

  bool Signed(std::string_view token, std::string_view what, std::int64_t* out) {
    std::optional<std::int64_t> value = ParseSigned(token, INT_MIN, INT_MAX);
    if (!value) {
      return Fail("bad number " + Quote(token) + " for " + std::string(what) + ": expected an int (decimal or 0x hex)");
    }
    *out = *value;
    return true;
  }

  bool ParseEventsArg(std::string_view token, std::uint32_t* events) {
    std::string reason;
    std::optional<std::uint32_t> value = ParseEvents(token, &reason);
    if (!value) return Fail(reason);
    *events = *value;
    return true;
  }

  Trace trace_;
  Status error_;  // the first problem
  int line_ = 0;
  // Hashed: every worker process of --checkpoint-mode exec parses the whole trace again, and a trace may have
  // thousands of names.
  std::unordered_map<std::string, NameState> names_;
  std::unordered_map<std::string, NameId> ids_;
};

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<Trace> ParseTrace(std::string_view text, std::string_view file) { return Parser(file).Run(text); }

std::optional<std::uint64_t> ParseUnsigned(std::string_view token, std::uint64_t max) {
  unsigned base = 10;
  if (token.size() > 2 && token[0] == '0' && (token[1] == 'x' || token[1] == 'X')) {
    base = 16;
    token.remove_prefix(2);
  }
  if (token.empty()) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : token) {
    int digit = HexDigit(c);
    if (digit < 0 || static_cast<unsigned>(digit) >= base) return std::nullopt;
    if (value > (UINT64_MAX - static_cast<unsigned>(digit)) / base) return std::nullopt;
    value = value * base + static_cast<unsigned>(digit);
  }
  if (value > max) return std::nullopt;
  return value;
}

std::optional<std::int64_t> ParseSigned(std::string_view token, std::int64_t min, std::int64_t max) {
  bool negative = !token.empty() && token[0] == '-';
  if (negative) token.remove_prefix(1);
  std::optional<std::uint64_t> magnitude = ParseUnsigned(token, std::uint64_t{1} << 63);
  if (!magnitude) return std::nullopt;
  // -2^63 is representable; +2^63 is not.
  if (!negative && *magnitude > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
  std::int64_t value = negative ? static_cast<std::int64_t>(0 - *magnitude) : static_cast<std::int64_t>(*magnitude);
  if (value < min || value > max) return std::nullopt;
  return value;
}

bool IsValidName(std::string_view name) {
  auto alpha = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (name.empty() || !alpha(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!alpha(c) && !digit(c) && c != '.') return false;
  }
  return true;
}

std::optional<std::uint32_t> ParseEvents(std::string_view token, std::string* reason) {
  std::uint32_t events = 0;
  std::size_t pos = 0;
  while (true) {
    std::size_t bar = token.find('|', pos);
    std::string_view part = token.substr(pos, bar == std::string_view::npos ? std::string_view::npos : bar - pos);
    if (part.empty()) {
      *reason = "bad EVENTS " + Quote(token) + ": empty part";
      return std::nullopt;
    }
    bool known = false;
    for (auto names : {ReadinessBitNames(), FlagBitNames()}) {
      for (const EventBitName& n : names) {
        if (n.name == part) {
          events |= n.bit;
          known = true;
        }
      }
    }
    if (!known) {
      std::optional<std::uint64_t> number = ParseUnsigned(part, UINT32_MAX);
      if (!number) {
        *reason = "bad EVENTS " + Quote(token) + ": unknown event " + Quote(part) +
                  " (names: in pri out err hup rdnorm rdband wrnorm wrband msg rdhup exclusive wakeup oneshot et, "
                  "or a 32-bit number)";
        return std::nullopt;
      }
      events |= static_cast<std::uint32_t>(*number);
    }
    if (bar == std::string_view::npos) break;
    pos = bar + 1;
  }
  return events;
}

}  // namespace epollcr::replay
