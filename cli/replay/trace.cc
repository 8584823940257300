#include "replay/trace.h"

namespace epollcr::replay {

std::string_view VerbName(Verb verb) {
  switch (verb) {
    case Verb::kEpoll: return "epoll";
    case Verb::kPipe: return "pipe";
    case Verb::kEventFd: return "eventfd";
    case Verb::kSocketPair: return "socketpair";
    case Verb::kDup: return "dup";
    case Verb::kClose: return "close";
    case Verb::kAdd: return "add";
    case Verb::kMod: return "mod";
    case Verb::kDel: return "del";
    case Verb::kWrite: return "write";
    case Verb::kRead: return "read";
    case Verb::kShutdown: return "shutdown";
    case Verb::kWait: return "wait";
    case Verb::kCheckpoint: return "checkpoint";
    case Verb::kTimerFd: return "timerfd";
    case Verb::kSetTime: return "settime";
    case Verb::kSignalFd: return "signalfd";
    case Verb::kRaise: return "raise";
    case Verb::kListen: return "listen";
    case Verb::kConnect: return "connect";
    case Verb::kAccept: return "accept";
    case Verb::kUdp: return "udp";
    case Verb::kFifo: return "fifo";
  }
  return "?";
}

std::string_view FileKindName(FileKind kind) {
  switch (kind) {
    case FileKind::kEpoll: return "epoll";
    case FileKind::kPipeRead: return "pipe-read";
    case FileKind::kPipeWrite: return "pipe-write";
    case FileKind::kEventFd: return "eventfd";
    case FileKind::kSocket: return "socket";
    case FileKind::kTimerFd: return "timerfd";
    case FileKind::kSignalFd: return "signalfd";
    case FileKind::kListener: return "listener";
    case FileKind::kTcp: return "tcp";
    case FileKind::kUdp: return "udp";
    case FileKind::kFifoRead: return "fifo-read";
    case FileKind::kFifoWrite: return "fifo-write";
  }
  return "?";
}

bool MakesHostObjects(Verb verb) {
  switch (verb) {
    case Verb::kTimerFd:
    case Verb::kSignalFd:
    case Verb::kListen:
    case Verb::kConnect:
    case Verb::kAccept:
    case Verb::kUdp:
    case Verb::kFifo:
      return true;
    default:
      return false;
  }
}

}  // namespace epollcr::replay
