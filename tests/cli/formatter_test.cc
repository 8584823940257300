// Tests of replay's output formatting against hand-written strings.
#include "replay/formatter.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "replay/trace_parser.h"

namespace epollcr::replay {
namespace {

Event MakeEvent(std::uint32_t events, std::uint64_t data) {
  Event e;
  e.events = events;
  e.SetData(data);
  return e;
}

TEST(ErrnoNameTest, SymbolicNames) {
  EXPECT_EQ(ErrnoName(EAGAIN), "EAGAIN");
  EXPECT_EQ(ErrnoName(EWOULDBLOCK), "EAGAIN");
  EXPECT_EQ(ErrnoName(EBADF), "EBADF");
  EXPECT_EQ(ErrnoName(EEXIST), "EEXIST");
  EXPECT_EQ(ErrnoName(ENOENT), "ENOENT");
  EXPECT_EQ(ErrnoName(EINVAL), "EINVAL");
  EXPECT_EQ(ErrnoName(ELOOP), "ELOOP");
  EXPECT_EQ(ErrnoName(EPERM), "EPERM");
  EXPECT_EQ(ErrnoName(EPIPE), "EPIPE");
  EXPECT_EQ(ErrnoName(ENOTSOCK), "ENOTSOCK");
  EXPECT_EQ(ErrnoName(ECONNRESET), "ECONNRESET");
  EXPECT_EQ(ErrnoName(EFAULT), "EFAULT");
  EXPECT_EQ(ErrnoName(EMFILE), "EMFILE");
  EXPECT_EQ(ErrnoName(ENOSPC), "ENOSPC");
  EXPECT_EQ(ErrnoName(ENOMEM), "ENOMEM");
  EXPECT_EQ(ErrnoName(EINTR), "EINTR");
  EXPECT_EQ(ErrnoName(ENOSYS), "ENOSYS");
}

TEST(ErrnoNameTest, UnknownValuesAreNumbered) {
  EXPECT_EQ(ErrnoName(4095), "E4095");
  EXPECT_EQ(ErrnoName(0), "E0");
  EXPECT_EQ(ErrnoName(-3), "E-3");
}

TEST(FormatEventFlagsTest, EmptyMaskIsZero) { EXPECT_EQ(FormatEventFlags(0), "0"); }

TEST(FormatEventFlagsTest, EveryReadinessBitInFixedOrder) {
  EXPECT_EQ(FormatEventFlags(0x1), "in");
  EXPECT_EQ(FormatEventFlags(0x2), "pri");
  EXPECT_EQ(FormatEventFlags(0x4), "out");
  EXPECT_EQ(FormatEventFlags(0x8), "err");
  EXPECT_EQ(FormatEventFlags(0x10), "hup");
  EXPECT_EQ(FormatEventFlags(0x40), "rdnorm");
  EXPECT_EQ(FormatEventFlags(0x80), "rdband");
  EXPECT_EQ(FormatEventFlags(0x100), "wrnorm");
  EXPECT_EQ(FormatEventFlags(0x200), "wrband");
  EXPECT_EQ(FormatEventFlags(0x400), "msg");
  EXPECT_EQ(FormatEventFlags(0x2000), "rdhup");
  EXPECT_EQ(FormatEventFlags(0x27df), "in|pri|out|err|hup|rdnorm|rdband|wrnorm|wrband|msg|rdhup");
  EXPECT_EQ(FormatEventFlags(0x2000 | 0x10 | 0x1), "in|hup|rdhup");
  EXPECT_EQ(FormatEventFlags(0x4 | 0x8 | 0x100), "out|err|wrnorm");
}

TEST(FormatEventFlagsTest, OtherBitsAsOneHexNumber) {
  EXPECT_EQ(FormatEventFlags(0x20), "0x20");
  EXPECT_EQ(FormatEventFlags(0x08000000), "0x8000000");
  EXPECT_EQ(FormatEventFlags(0x1 | 0x20 | 0x4000), "in|0x4020");
  // Registration flags are never reported by epoll; if they ever were, they would show as a number.
  EXPECT_EQ(FormatEventFlags(0x80000000u | 0x40000000u | 0x4), "out|0xc0000000");
  EXPECT_EQ(FormatEventFlags(0xffffffffu), "in|pri|out|err|hup|rdnorm|rdband|wrnorm|wrband|msg|rdhup|0xffffd820");
}

TEST(FormatOutcomeTest, EveryKind) {
  EXPECT_EQ(FormatOutcome(OpOutcome::Ok()), "ok");
  EXPECT_EQ(FormatOutcome(OpOutcome::Number(0)), "ok 0");
  EXPECT_EQ(FormatOutcome(OpOutcome::Number(65536)), "ok 65536");
  EXPECT_EQ(FormatOutcome(OpOutcome::Number(18446744073709551614ULL)), "ok 18446744073709551614");
  EXPECT_EQ(FormatOutcome(OpOutcome::Error(EAGAIN)), "err EAGAIN");
  EXPECT_EQ(FormatOutcome(OpOutcome::Error(999)), "err E999");
  EXPECT_EQ(FormatOutcome(OpOutcome::Events({})), "events 0");
  EXPECT_EQ(FormatOutcome(OpOutcome::Events({MakeEvent(0x1, 7), MakeEvent(0x14, 3)})), "events 2 in@7 out|hup@3");
  EXPECT_EQ(FormatOutcome(OpOutcome::Events({MakeEvent(0, 0), MakeEvent(0x8, 18446744073709551615ULL)})),
            "events 2 0@0 err@18446744073709551615");
}

TEST(FormatLineTest, LineVerbResult) {
  Result<Trace> parsed = ParseTrace(
      "epoll e\neventfd f\n\n\n\n\n\n\n\n\n\n\n\nwait e 4\nread f\nsocketpair s\nwrite s.a 3\ncheckpoint\n", "t");
  ASSERT_TRUE(parsed.ok());
  const std::vector<Op>& ops = parsed.value().ops;
  EXPECT_EQ(FormatLine(ops[0], OpOutcome::Ok()), "1 epoll ok");
  EXPECT_EQ(FormatLine(ops[1], OpOutcome::Error(EMFILE)), "2 eventfd err EMFILE");
  EXPECT_EQ(FormatLine(ops[2], OpOutcome::Events({MakeEvent(0x1, 7), MakeEvent(0x4 | 0x10, 3)})),
            "14 wait events 2 in@7 out|hup@3");
  EXPECT_EQ(FormatLine(ops[3], OpOutcome::Number(5)), "15 read ok 5");
  EXPECT_EQ(FormatLine(ops[4], OpOutcome::Ok()), "16 socketpair ok");
  EXPECT_EQ(FormatLine(ops[5], OpOutcome::Number(3)), "17 write ok 3");
  EXPECT_EQ(FormatLine(ops[6], OpOutcome::Ok()), "18 checkpoint ok");
}

TEST(VerbNameTest, SpelledAsInTraces) {
  EXPECT_EQ(VerbName(Verb::kEpoll), "epoll");
  EXPECT_EQ(VerbName(Verb::kPipe), "pipe");
  EXPECT_EQ(VerbName(Verb::kEventFd), "eventfd");
  EXPECT_EQ(VerbName(Verb::kSocketPair), "socketpair");
  EXPECT_EQ(VerbName(Verb::kDup), "dup");
  EXPECT_EQ(VerbName(Verb::kClose), "close");
  EXPECT_EQ(VerbName(Verb::kAdd), "add");
  EXPECT_EQ(VerbName(Verb::kMod), "mod");
  EXPECT_EQ(VerbName(Verb::kDel), "del");
  EXPECT_EQ(VerbName(Verb::kWrite), "write");
  EXPECT_EQ(VerbName(Verb::kRead), "read");
  EXPECT_EQ(VerbName(Verb::kShutdown), "shutdown");
  EXPECT_EQ(VerbName(Verb::kWait), "wait");
  EXPECT_EQ(VerbName(Verb::kCheckpoint), "checkpoint");
  EXPECT_EQ(VerbName(Verb::kTimerFd), "timerfd");
  EXPECT_EQ(VerbName(Verb::kSetTime), "settime");
  EXPECT_EQ(VerbName(Verb::kSignalFd), "signalfd");
  EXPECT_EQ(VerbName(Verb::kRaise), "raise");
  EXPECT_EQ(VerbName(Verb::kListen), "listen");
  EXPECT_EQ(VerbName(Verb::kConnect), "connect");
  EXPECT_EQ(VerbName(Verb::kAccept), "accept");
  EXPECT_EQ(VerbName(Verb::kUdp), "udp");
  EXPECT_EQ(VerbName(Verb::kFifo), "fifo");
}

}  // namespace
}  // namespace epollcr::replay
