// Tests of the replay trace parser: syntax, validation, and the "FILE:LINE: reason" errors.
#include "replay/trace_parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "epollcr/events.h"

namespace epollcr::replay {
namespace {

using ::testing::HasSubstr;

Trace ParseOk(std::string_view text) {
  Result<Trace> result = ParseTrace(text, "t.trace");
  EXPECT_TRUE(result.ok()) << result.status().message;
  return result.value();
}

// A failed parse's message, "t.trace:LINE: reason", taken apart.
struct ParseFailure {
  int line = 0;
  std::string reason;
  Status status;
};

ParseFailure ParseFails(std::string_view text) {
  Result<Trace> result = ParseTrace(text, "t.trace");
  EXPECT_FALSE(result.ok()) << "parsed: " << text;
  ParseFailure failure{0, "", result.status()};
  EXPECT_EQ(failure.status.code, std::errc::invalid_argument) << failure.status.message;
  const std::string& message = failure.status.message;
  const std::string prefix = "t.trace:";
  const std::size_t colon = message.find(": ", prefix.size());
  if (message.rfind(prefix, 0) != 0 || colon == std::string::npos) {
    ADD_FAILURE() << "not \"t.trace:LINE: reason\": " << message;
    return failure;
  }
  failure.line = std::stoi(message.substr(prefix.size(), colon - prefix.size()));
  failure.reason = message.substr(colon + 2);
  return failure;
}

TEST(TraceParserTest, EmptyTraceHasNoOps) {
  EXPECT_TRUE(ParseOk("").ops.empty());
  EXPECT_TRUE(ParseOk("\n\n# only a comment\n   \n\t\n").ops.empty());
}

TEST(TraceParserTest, CommentsAndBlankLinesKeepLineNumbers) {
  Trace trace = ParseOk("# header\n\nepoll e\n   # indented comment\n\t\nwait e 1\n");
  ASSERT_EQ(trace.ops.size(), 2u);
  EXPECT_EQ(trace.ops[0].line, 3);
  EXPECT_EQ(trace.ops[0].verb, Verb::kEpoll);
  EXPECT_EQ(trace.ops[1].line, 6);
  EXPECT_EQ(trace.ops[1].verb, Verb::kWait);
}

TEST(TraceParserTest, CrLfAndTabsAndNoFinalNewline) {
  Trace trace = ParseOk("epoll\te\r\nwait  e\t 2 \r\nwait e 3");
  ASSERT_EQ(trace.ops.size(), 3u);
  EXPECT_EQ(trace.ops[1].max, 2);
  EXPECT_EQ(trace.ops[2].max, 3);
  EXPECT_EQ(trace.ops[2].line, 3);
}

TEST(TraceParserTest, CreationVerbsDefineNames) {
  Trace trace = ParseOk("epoll e\npipe p\neventfd f 5 semaphore\nsocketpair s\ndup p.r r2\n");
  ASSERT_EQ(trace.ops.size(), 5u);
  EXPECT_EQ(trace.names[trace.ops[0].defines[0]], "e");
  EXPECT_EQ(trace.names[trace.ops[1].defines[0]], "p.r");
  EXPECT_EQ(trace.names[trace.ops[1].defines[1]], "p.w");
  EXPECT_EQ(trace.names[trace.ops[2].defines[0]], "f");
  EXPECT_EQ(trace.ops[2].number, 5u);
  EXPECT_TRUE(trace.ops[2].semaphore);
  EXPECT_EQ(trace.names[trace.ops[3].defines[0]], "s.a");
  EXPECT_EQ(trace.names[trace.ops[3].defines[1]], "s.b");
  EXPECT_EQ(trace.names[trace.ops[4].target], "p.r");
  EXPECT_EQ(trace.names[trace.ops[4].defines[0]], "r2");
}

TEST(TraceParserTest, EventFdOptionalArguments) {
  Trace trace = ParseOk("eventfd a\neventfd b 0x10\neventfd c semaphore\neventfd d 4294967295\n");
  EXPECT_EQ(trace.ops[0].number, 0u);
  EXPECT_FALSE(trace.ops[0].semaphore);
  EXPECT_EQ(trace.ops[1].number, 16u);
  EXPECT_TRUE(trace.ops[2].semaphore);
  EXPECT_EQ(trace.ops[2].number, 0u);
  EXPECT_EQ(trace.ops[3].number, 4294967295u);
}

TEST(TraceParserTest, NamesWithDotsAndUnderscores) {
  Trace trace = ParseOk("epoll _e.1.x\npipe my_pipe.v2\nadd _e.1.x my_pipe.v2.r in\n");
  ASSERT_EQ(trace.ops.size(), 3u);
  EXPECT_EQ(trace.names[trace.ops[2].epoll], "_e.1.x");
  EXPECT_EQ(trace.names[trace.ops[2].target], "my_pipe.v2.r");
}

TEST(TraceParserTest, NumbersDecimalAndHex) {
  Trace trace = ParseOk(
      "epoll e\neventfd f\nadd e f in 0xFFFFFFFFFFFFFFFF\nmod e f in 18446744073709551615\nmod e f in 007\n"
      "wait e 0x10 -1\nwait e -5 0x7fffffff\nwrite f 0xfffffffffffffffe\n");
  EXPECT_EQ(trace.ops[2].data, UINT64_MAX);
  EXPECT_EQ(trace.ops[3].data, UINT64_MAX);
  EXPECT_EQ(trace.ops[4].data, 7u);
  EXPECT_EQ(trace.ops[5].max, 16);
  EXPECT_EQ(trace.ops[5].timeout_ms, -1);
  EXPECT_EQ(trace.ops[6].max, -5);
  EXPECT_EQ(trace.ops[6].timeout_ms, 0x7fffffff);
  EXPECT_EQ(trace.ops[7].number, 0xfffffffffffffffeULL);
  EXPECT_EQ(trace.ops[7].kind, FileKind::kEventFd);
}

TEST(TraceParserTest, DefaultsOfOptionalArguments) {
  Trace trace = ParseOk("epoll e\npipe p\nadd e p.r in\nwait e 4\nread p.r\neventfd f\nread f\n");
  EXPECT_EQ(trace.ops[2].data, 0u);
  EXPECT_EQ(trace.ops[3].timeout_ms, 0);
  EXPECT_EQ(trace.ops[4].number, kDefaultReadSize);
  EXPECT_FALSE(trace.ops[4].has_number);
  EXPECT_EQ(trace.ops[6].number, 8u);
}

TEST(TraceParserTest, EventsByNameAndNumber) {
  Trace trace = ParseOk(
      "epoll e\neventfd f\n"
      "add e f in|pri|out|err|hup|rdnorm|rdband|wrnorm|wrband|msg|rdhup\n"
      "mod e f exclusive|wakeup|oneshot|et\n"
      "mod e f 0x08000000|in|5\n"
      "mod e f 0\n");
  EXPECT_EQ(trace.ops[2].events, kEventIn | kEventPri | kEventOut | kEventErr | kEventHup | kEventRdNorm |
                                     kEventRdBand | kEventWrNorm | kEventWrBand | kEventMsg | kEventRdHup);
  EXPECT_EQ(trace.ops[3].events, kEpollExclusive | kEpollWakeup | kEpollOneShot | kEpollEdgeTriggered);
  EXPECT_EQ(trace.ops[4].events, 0x08000000u | kEventIn | 5u);
  EXPECT_EQ(trace.ops[5].events, 0u);
}

TEST(TraceParserTest, StaticKindIsCarriedThroughDup) {
  Trace trace = ParseOk(
      "eventfd f\ndup f g\nwrite g 0xffffffffffffffff\npipe p\ndup p.w w2\nwrite w2 10\nclose g\n"
      "socketpair g\nwrite g.a 3\n");
  EXPECT_EQ(trace.ops[2].kind, FileKind::kEventFd);
  EXPECT_EQ(trace.ops[5].kind, FileKind::kPipeWrite);
  EXPECT_EQ(trace.ops[8].kind, FileKind::kSocket);
}

TEST(TraceParserTest, ClosedNameCanBeUsedAndDefinedAgain) {
  Trace trace = ParseOk("epoll e\nclose e\nwait e 1\nclose e\nepoll e\nwait e 1\n");
  EXPECT_EQ(trace.ops.size(), 6u);
  // One name, one id, whatever it was bound to.
  EXPECT_EQ(trace.ops[0].defines[0], trace.ops[4].defines[0]);
}

TEST(TraceParserTest, DupOfDeadNameMayReuseIt) {
  Trace trace = ParseOk("eventfd a\nclose a\ndup a a\n");
  EXPECT_EQ(trace.ops[2].target, trace.ops[2].defines[0]);
}

TEST(TraceParserTest, AddCountCountsAddLines) {
  EXPECT_EQ(ParseOk("epoll e\neventfd f\nadd e f in\nadd e f in\nmod e f in\ndel e f\n").add_count, 2);
}

TEST(TraceParserTest, CheckpointAndShutdownModes) {
  Trace trace = ParseOk("checkpoint\nsocketpair s\nshutdown s.a rd\nshutdown s.a wr\nshutdown s.b rdwr\n");
  EXPECT_EQ(trace.ops[0].verb, Verb::kCheckpoint);
  EXPECT_EQ(trace.ops[2].how, kShutRd);
  EXPECT_EQ(trace.ops[3].how, kShutWr);
  EXPECT_EQ(trace.ops[4].how, kShutRdWr);
}

struct Malformed {
  const char* text;
  int line;
  const char* reason;  // a part of the reason
};

class MalformedTraceTest : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedTraceTest, FailsWithLineAndReason) {
  const Malformed& m = GetParam();
  ParseFailure error = ParseFails(m.text);
  EXPECT_EQ(error.line, m.line) << m.text;
  EXPECT_THAT(error.reason, HasSubstr(m.reason)) << m.text;
}

INSTANTIATE_TEST_SUITE_P(
    AllForms, MalformedTraceTest,
    ::testing::Values(
        // Unknown verbs (case matters).
        Malformed{"epoll e\nfrobnicate e\n", 2, "unknown verb 'frobnicate'"},
        Malformed{"EPOLL e\n", 1, "unknown verb 'EPOLL'"},
        Malformed{"epoll e # trailing comment\n", 1, "wrong number of arguments"},
        // Wrong arity, every verb.
        Malformed{"epoll\n", 1, "usage: epoll E"},
        Malformed{"epoll a b\n", 1, "usage: epoll E"},
        Malformed{"pipe\n", 1, "usage: pipe P"},
        Malformed{"eventfd\n", 1, "usage: eventfd F"},
        Malformed{"eventfd f 1 semaphore x\n", 1, "usage: eventfd F"},
        Malformed{"socketpair s t\n", 1, "usage: socketpair S"},
        Malformed{"epoll e\ndup e\n", 2, "usage: dup NAME NEW"},
        Malformed{"close\n", 1, "usage: close NAME"},
        Malformed{"epoll e\nadd e e\n", 2, "usage: add E NAME EVENTS [DATA]"},
        Malformed{"epoll e\nadd e e in 1 2\n", 2, "usage: add E NAME EVENTS [DATA]"},
        Malformed{"epoll e\nmod e e\n", 2, "usage: mod E NAME EVENTS [DATA]"},
        Malformed{"epoll e\ndel e\n", 2, "usage: del E NAME"},
        Malformed{"epoll e\ndel e e in\n", 2, "usage: del E NAME"},
        Malformed{"eventfd f\nwrite f\n", 2, "usage: write NAME N"},
        Malformed{"eventfd f\nread f 8 8\n", 2, "usage: read NAME [N]"},
        Malformed{"socketpair s\nshutdown s.a\n", 2, "usage: shutdown NAME"},
        Malformed{"epoll e\nwait e\n", 2, "usage: wait E MAX"},
        Malformed{"epoll e\nwait e 1 0 0\n", 2, "usage: wait E MAX"},
        Malformed{"checkpoint now\n", 1, "usage: checkpoint"},
        // Names.
        Malformed{"epoll 1e\n", 1, "bad name '1e'"},
        Malformed{"epoll e-1\n", 1, "bad name 'e-1'"},
        Malformed{"pipe .p\n", 1, "bad name '.p'"},
        Malformed{"epoll e\nclose e!\n", 2, "bad name 'e!'"},
        // Defining a live name again; using a name never defined.
        Malformed{"epoll e\neventfd e\n", 2, "name 'e' is already defined (line 1)"},
        Malformed{"epoll p.w\npipe p\n", 2, "name 'p.w' is already defined"},
        Malformed{"socketpair s\nepoll s.b\n", 2, "name 's.b' is already defined"},
        Malformed{"eventfd a\neventfd b\ndup a b\n", 3, "name 'b' is already defined (line 2)"},
        Malformed{"eventfd a\ndup a a\n", 2, "name 'a' is already defined"},
        Malformed{"epoll e\nwait x 1\n", 2, "name 'x' is not defined"},
        Malformed{"pipe p\nclose p\n", 2, "name 'p' is not defined"},
        Malformed{"epoll e\nadd e f in\n", 2, "name 'f' is not defined"},
        Malformed{"dup a b\n", 1, "name 'a' is not defined"},
        Malformed{"epoll e\nclose e\nclose e\nepoll e\nepoll e\n", 5, "already defined (line 4)"},
        // Numbers.
        Malformed{"eventfd f 12x\n", 1, "bad number '12x'"},
        Malformed{"eventfd f -1\n", 1, "bad number '-1'"},
        Malformed{"eventfd f 0x\n", 1, "bad number '0x'"},
        Malformed{"eventfd f 4294967296\n", 1, "INIT 4294967296 is above 4294967295"},
        Malformed{"eventfd f 0x100000000\n", 1, "is above 4294967295"},
        Malformed{"epoll e\nadd e e in 18446744073709551616\n", 2, "bad number '18446744073709551616' for DATA"},
        Malformed{"epoll e\nadd e e in -1\n", 2, "bad number '-1' for DATA"},
        Malformed{"epoll e\nwait e 2147483648\n", 2, "bad number '2147483648' for MAX"},
        Malformed{"epoll e\nwait e -2147483649\n", 2, "for MAX"},
        Malformed{"epoll e\nwait e 1 1.5\n", 2, "bad number '1.5' for TIMEOUT_MS"},
        Malformed{"epoll e\nwait e +1\n", 2, "bad number '+1'"},
        Malformed{"pipe p\nwrite p.w 16777217\n", 2, "N 16777217 is above 16777216"},
        Malformed{"pipe p\nread p.r 0x1000001\n", 2, "is above 16777216"},
        Malformed{"eventfd f\nwrite f 18446744073709551616\n", 2, "bad number"},
        Malformed{"eventfd f\nread f 99999999\n", 2, "is above 16777216"},
        // Events.
        Malformed{"epoll e\nadd e e IN\n", 2, "unknown event 'IN'"},
        Malformed{"epoll e\nadd e e in||out\n", 2, "empty part"},
        Malformed{"epoll e\nadd e e in|\n", 2, "empty part"},
        Malformed{"epoll e\nadd e e 0x100000000\n", 2, "unknown event '0x100000000'"},
        Malformed{"epoll e\nmod e e in,out\n", 2, "unknown event 'in,out'"},
        // Other words.
        Malformed{"eventfd f 1 sem\n", 1, "unexpected 'sem'"},
        Malformed{"eventfd f semaphore 1\n", 1, "unexpected '1'"},
        Malformed{"socketpair s\nshutdown s.a both\n", 2, "bad shutdown mode 'both'"}));

// The kernel-only verbs: arity, numbers, words, and the kinds of the names they act on.
INSTANTIATE_TEST_SUITE_P(
    KernelOnlyVerbs, MalformedTraceTest,
    ::testing::Values(
        Malformed{"timerfd\n", 1, "usage: timerfd T"},
        Malformed{"timerfd t u\n", 1, "usage: timerfd T"},
        Malformed{"timerfd t\nsettime t\n", 2, "usage: settime T NS [INTERVAL_NS] [abs]"},
        Malformed{"timerfd t\nsettime t 1 2 abs x\n", 2, "usage: settime T NS [INTERVAL_NS] [abs]"},
        Malformed{"timerfd t\nsettime t 1 2 3\n", 2, "unexpected '3'; usage: settime"},
        Malformed{"timerfd t\nsettime t 1 abs abs\n", 2, "unexpected 'abs'"},
        Malformed{"timerfd t\nsettime t 1 absolute\n", 2, "bad number 'absolute' for INTERVAL_NS"},
        Malformed{"timerfd t\nsettime t -1\n", 2, "bad number '-1' for NS"},
        Malformed{"timerfd t\nsettime t 18446744073709551616\n", 2, "bad number"},
        Malformed{"timerfd t\nsettime t abs\n", 2, "bad number 'abs' for NS"},
        Malformed{"eventfd f\nsettime f 1\n", 2, "settime T NS [INTERVAL_NS] [abs]: 'f' is an eventfd, not a timerfd"},
        Malformed{"settime t 1\n", 1, "name 't' is not defined"},
        Malformed{"signalfd s\n", 1, "usage: signalfd S SIG"},
        Malformed{"signalfd s 1 2\n", 1, "usage: signalfd S SIG"},
        Malformed{"signalfd s 0\n", 1, "SIG 0 is not a trace signal: they are 1 to 8"},
        Malformed{"signalfd s 9\n", 1, "SIG 9 is above 8"},
        Malformed{"signalfd s SIGINT\n", 1, "bad number 'SIGINT' for SIG"},
        Malformed{"raise\n", 1, "usage: raise SIG"},
        Malformed{"raise 1 2\n", 1, "usage: raise SIG"},
        Malformed{"raise 0\n", 1, "SIG 0 is not a trace signal"},
        Malformed{"raise 0x9\n", 1, "is above 8"},
        Malformed{"listen\n", 1, "usage: listen L"},
        Malformed{"listen l 80\n", 1, "usage: listen L"},
        Malformed{"listen l\nconnect c\n", 2, "usage: connect C L"},
        Malformed{"listen l\naccept a l x\n", 2, "usage: accept A L"},
        Malformed{"connect c l\n", 1, "name 'l' is not defined"},
        Malformed{"socketpair s\nconnect c s.a\n", 2, "connect C L: 's.a' is a socket, not a listener"},
        Malformed{"listen l\nconnect c l\naccept a c\n", 3, "accept A L: 'c' is a tcp, not a listener"},
        Malformed{"listen l\nconnect l l\n", 2, "name 'l' is already defined"},
        Malformed{"listen l\nconnect c l\naccept c l\n", 3, "name 'c' is already defined (line 2)"},
        Malformed{"udp\n", 1, "usage: udp U"},
        Malformed{"udp u v\n", 1, "usage: udp U"},
        Malformed{"udp 1u\n", 1, "bad name '1u'"},
        Malformed{"eventfd u.b\nudp u\n", 2, "name 'u.b' is already defined"},
        Malformed{"fifo\n", 1, "usage: fifo F [r|w]"},
        Malformed{"fifo f r w\n", 1, "usage: fifo F [r|w]"},
        Malformed{"fifo f rd\n", 1, "unexpected 'rd'; usage: fifo F [r|w]"},
        Malformed{"fifo f/g\n", 1, "bad name 'f/g'"},
        Malformed{"fifo .f\n", 1, "bad name '.f'"},
        Malformed{"fifo f\nfifo f w\n", 2, "name 'f.w' is already defined (line 1)"},
        Malformed{"fifo f r\nfifo f\n", 2, "name 'f.r' is already defined (line 1)"},
        Malformed{"pipe p\nclose p.r rst\n", 2, "close NAME rst: 'p.r' is a pipe-read, not a TCP socket"},
        Malformed{"udp u\nclose u.a rst\n", 2, "'u.a' is a udp, not a TCP socket"},
        Malformed{"epoll e\nclose e rst\n", 2, "'e' is an epoll, not a TCP socket"},
        Malformed{"listen l\nclose l rst\n", 2, "'l' is a listener, not a TCP socket"},
        Malformed{"listen l\nconnect c l\nclose c reset\n", 3, "unexpected 'reset'; usage: close NAME [rst]"},
        Malformed{"listen l\nconnect c l\nclose c rst now\n", 3, "usage: close NAME [rst]"}));

TEST(TraceParserTest, KernelOnlyVerbs) {
  Trace trace = ParseOk(
      "timerfd t\nsettime t 5\nsettime t 1 abs\nsettime t 0x10 20\nsettime t 1 2 abs\n"
      "signalfd s 8\nraise 1\nlisten l\nconnect c l\naccept a l\nudp u\n"
      "fifo f\nfifo g r\nfifo g w\nclose c rst\ndup a a2\nclose a2 rst\n"
      "read t\nread s\nread u.a\nwrite t 0xffffffffffffffff\nshutdown a wr\n");
  ASSERT_EQ(trace.ops.size(), 22u);
  EXPECT_TRUE(trace.host_objects);
  EXPECT_EQ(trace.ops[0].verb, Verb::kTimerFd);
  EXPECT_EQ(trace.names[trace.ops[0].defines[0]], "t");
  EXPECT_EQ(trace.ops[1].number, 5u);
  EXPECT_EQ(trace.ops[1].interval, 0u);
  EXPECT_FALSE(trace.ops[1].absolute);
  EXPECT_TRUE(trace.ops[2].absolute);
  EXPECT_EQ(trace.ops[3].number, 16u);
  EXPECT_EQ(trace.ops[3].interval, 20u);
  EXPECT_FALSE(trace.ops[3].absolute);
  EXPECT_EQ(trace.ops[4].interval, 2u);
  EXPECT_TRUE(trace.ops[4].absolute);
  EXPECT_EQ(trace.names[trace.ops[4].target], "t");
  EXPECT_EQ(trace.ops[5].number, 8u);
  EXPECT_EQ(trace.ops[6].verb, Verb::kRaise);
  EXPECT_EQ(trace.ops[6].number, 1u);
  EXPECT_EQ(trace.names[trace.ops[8].target], "l");
  EXPECT_EQ(trace.names[trace.ops[8].defines[0]], "c");
  EXPECT_EQ(trace.names[trace.ops[9].defines[0]], "a");
  EXPECT_EQ(trace.names[trace.ops[10].defines[0]], "u.a");
  EXPECT_EQ(trace.names[trace.ops[10].defines[1]], "u.b");
  EXPECT_EQ(trace.ops[11].fifo, "f");
  EXPECT_EQ(trace.names[trace.ops[11].defines[0]], "f.r");
  EXPECT_EQ(trace.names[trace.ops[11].defines[1]], "f.w");
  EXPECT_EQ(trace.names[trace.ops[12].defines[0]], "g.r");
  EXPECT_EQ(trace.ops[12].defines[1], kNoName);
  EXPECT_EQ(trace.ops[13].defines[0], kNoName);
  EXPECT_EQ(trace.names[trace.ops[13].defines[1]], "g.w");
  EXPECT_TRUE(trace.ops[14].reset);
  EXPECT_TRUE(trace.ops[16].reset) << "a dup of a TCP socket is one too";
  EXPECT_EQ(trace.ops[17].number, 8u) << "a timerfd read is a counter read";
  EXPECT_EQ(trace.ops[18].number, kSignalInfoSize);
  EXPECT_EQ(trace.ops[18].kind, FileKind::kSignalFd);
  EXPECT_EQ(trace.ops[19].number, kDefaultReadSize);
  EXPECT_EQ(trace.ops[19].kind, FileKind::kUdp);
  EXPECT_EQ(trace.ops[20].number, UINT64_MAX) << "a timerfd write passes a 64-bit value";
  EXPECT_EQ(trace.ops[21].kind, FileKind::kTcp);
  // Only the verbs that make kernel objects mark a trace.
  EXPECT_FALSE(ParseOk("raise 3\n").host_objects);
  EXPECT_FALSE(ParseOk("epoll e\nsocketpair s\n").host_objects);
  EXPECT_TRUE(ParseOk("udp u\n").host_objects);
}

TEST(TraceParserTest, FirstErrorWins) {
  ParseFailure error = ParseFails("epoll e\nbogus\nalso bogus\n");
  EXPECT_EQ(error.line, 2);
}

TEST(TraceParserTest, FileNameInMessage) {
  Result<Trace> result = ParseTrace("\n\nnope\n", "dir/x.trace");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message, "dir/x.trace:3: unknown verb 'nope'");
}

TEST(NumberSyntaxTest, UnsignedAndSigned) {
  EXPECT_EQ(ParseUnsigned("0", 10), 0u);
  EXPECT_EQ(ParseUnsigned("0x0", 10), 0u);
  EXPECT_EQ(ParseUnsigned("0XaB", 1000), 0xabu);
  EXPECT_EQ(ParseUnsigned("18446744073709551615", UINT64_MAX), UINT64_MAX);
  EXPECT_FALSE(ParseUnsigned("18446744073709551616", UINT64_MAX));
  EXPECT_FALSE(ParseUnsigned("0x10000000000000000", UINT64_MAX));
  EXPECT_FALSE(ParseUnsigned("11", 10));
  EXPECT_FALSE(ParseUnsigned("", 10));
  EXPECT_FALSE(ParseUnsigned("0xg", 100));
  EXPECT_FALSE(ParseUnsigned("1a", 100));
  EXPECT_EQ(ParseSigned("-0x10", -100, 100), -16);
  EXPECT_EQ(ParseSigned("-9223372036854775808", INT64_MIN, INT64_MAX), INT64_MIN);
  EXPECT_FALSE(ParseSigned("9223372036854775808", INT64_MIN, INT64_MAX));
  EXPECT_FALSE(ParseSigned("-", -1, 1));
  EXPECT_FALSE(ParseSigned("--1", -5, 5));
}

TEST(NumberSyntaxTest, Names) {
  EXPECT_TRUE(IsValidName("a"));
  EXPECT_TRUE(IsValidName("_"));
  EXPECT_TRUE(IsValidName("A_b.9.c"));
  EXPECT_TRUE(IsValidName("x."));
  EXPECT_FALSE(IsValidName(""));
  EXPECT_FALSE(IsValidName("9"));
  EXPECT_FALSE(IsValidName(".x"));
  EXPECT_FALSE(IsValidName("a-b"));
  EXPECT_FALSE(IsValidName("a@b"));
}

}  // namespace
}  // namespace epollcr::replay
