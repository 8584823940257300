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
  }
  return "?";
}

}  // namespace epollcr::replay
